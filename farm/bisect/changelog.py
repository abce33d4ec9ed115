"""What changed between two packaged kernels: the upstream commit titles
the newer package's changelog.Debian.gz lists since the older one, ranked
by how likely each touches the failing code, and the BPF, JIT and
mitigation options their /boot/config-* files set differently.

The packages come from the lab's kernel cache (farm.guests.debs
kernel_from_deb: fetched and unpacked once, shared with the bisection's
guests). Everything past fetching is pure: parse_changelog, between,
score_entry, rank, parse_config and diff_configs work on text."""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import BadInput, InfraError
from farm.guests.kernels import upstream_of


# -- Debian versions (dpkg's ordering; python3-apt is not in the venv) --------------------------

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: non-digit runs by _order, digit runs numerically."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def version_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version a sorts before, with or after b
    (`dpkg --compare-versions` semantics: epochs, ~ before anything)."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# -- the changelog ------------------------------------------------------------------------------

@dataclass
class Entry:
    text: str        # the changelog item, its continuation lines joined: usually an upstream commit title
    version: str     # the Debian version of the stanza listing it (a signed stanza: the linux version it signs)
    upstream: str    # that version's upstream release

    def to_dict(self) -> dict:
        return {"text": self.text, "version": self.version, "upstream": self.upstream}


@dataclass
class Stanza:
    source: str      # linux, linux-6.12, linux-signed-amd64
    version: str     # for a signed stanza: the linux version it signs (its items follow that version's)
    dist: str
    entries: list[Entry] = field(default_factory=list)


_HEADER = re.compile(r"(?P<source>[a-z0-9][a-z0-9.+-]*) \((?P<version>[^() ]+)\) (?P<dist>[^;]+);")
_ITEM = re.compile(r"(?P<indent> +)(?P<bullet>[*+-]) (?P<text>\S.*)")
_SIGNS = re.compile(r"Sign kernel from linux (?P<version>\S+)")
# structure, not a change: the items under it are
_UPSTREAM_HEADER = re.compile(r"New upstream (stable update|release)", re.I)


def parse_changelog(text: str) -> list[Stanza]:
    """Debian changelog text -> its stanzas in file order (newest first),
    each with its items in order. Every `*`, `-` and `+` item is an entry
    (a nested item too: Debian lists backported commits under a `*` line),
    except the `* New upstream stable update:` / `release` headers and the
    kernel.org URLs under them; maintainer lines (`[ Name ]`) are skipped.
    A linux-signed-* stanza ("Sign kernel from linux 6.1.192-3") stands for
    the linux version it signs, its other items belong to that version."""
    stanzas: list[Stanza] = []
    cur: Stanza | None = None
    item: list | None = None  # [indent, text] of the item being read (continuation lines join it)

    def flush():
        nonlocal item
        if item is not None and cur is not None:
            body = " ".join(item[1].split())
            signs = _SIGNS.fullmatch(body)
            if signs and cur.source.startswith("linux-signed"):
                cur.version = signs["version"]
            elif not _UPSTREAM_HEADER.match(body):
                cur.entries.append(Entry(body, cur.version, upstream_of(cur.version)))
        item = None

    for line in text.splitlines():
        line = line.rstrip()
        if (m := _HEADER.match(line)) is not None:
            flush()
            cur = Stanza(m["source"], m["version"], m["dist"].strip())
            stanzas.append(cur)
        elif line.startswith(" -- ") or line.startswith("#") or not line.strip():
            flush()
        elif cur is None:
            continue
        elif (m := _ITEM.fullmatch(line)) is not None:
            flush()
            item = [len(m["indent"]), m["text"]]
        elif re.fullmatch(r" +\[ .* \]", line) or re.fullmatch(r" +https?://\S+", line):
            flush()
        elif item is not None and len(line) - len(line.lstrip()) > item[0]:
            item[1] += " " + line.strip()
        else:
            flush()  # text we do not know how to read: never glued onto an entry
    flush()
    # the signed stanza's items were read before its "Sign kernel from" line could name the version
    for s in stanzas:
        for e in s.entries:
            e.version, e.upstream = s.version, upstream_of(s.version)
    return stanzas


_NOTE = re.compile(r"\s*\((CVE-|Closes:|regression|bug|thanks)[^()]*\)\s*$", re.I)


def fix_key(text: str) -> str:
    """What identifies a fix across two changelogs: the title without Debian's
    arch tag and trailing "(CVE-...)", "(Closes: ...)", "(regression in ...)"
    notes (one line names the CVE, the other was written before it had one)."""
    text = _ARCH_TAG.sub("", text)
    while (m := _NOTE.search(text)) is not None:
        text = text[:m.start()]
    return " ".join(text.lower().split())


@dataclass
class Span:
    """What `between` found: the entries and how it found them."""
    entries: list[Entry]
    same_line: bool          # the newer changelog lists the older's version: it continues the older's history
    dropped_shared: int = 0  # across lines: entries not kept since the older's changelog lists them too


def between(older: list[Stanza], newer: list[Stanza]) -> Span:
    """The entries of the newer changelog's stanzas whose version is greater
    than the older package's (its changelog's first stanza) and which the
    older changelog does not list itself (a bookworm backport 6.12.101-1~deb12u1
    carries the trixie stanza 6.12.101-1, which sorts above it), in changelog order.

    Across upstream lines (6.1.0-57 -> 6.12.107) the newer changelog does
    not list the older's version: Debian's 6.12 history forks from 6.1's
    in unstable (it goes back through 6.2..6.11 to 6.1.27), while bookworm's
    6.1.28..6.1.192 stable updates are in no stanza of it. Then the span is
    every 6.12 stanza above 6.1.192: Debian's own changes for 6.2..6.12
    (a "New upstream release" lists no upstream commits, so mainline's
    work is not in it) and the 6.12.y stable updates, less each entry whose
    text the older changelog lists too (the same fix, taken by both lines;
    counted in dropped_shared; compared by fix_key). Within one line nothing is dropped by text:
    a fix reverted in the older and taken again in the newer is a change."""
    if not older:
        raise InfraError("the older package's changelog has no stanzas")
    base = older[0].version
    known = {s.version for s in older}
    same_line = base in {s.version for s in newer}
    kept = [e for s in newer if version_compare(s.version, base) > 0 and s.version not in known
            for e in s.entries]
    if same_line:
        return Span(kept, True)
    shared = {fix_key(e.text) for s in older for e in s.entries}
    out = [e for e in kept if fix_key(e.text) not in shared]
    return Span(out, False, len(kept) - len(out))


# -- ranking ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    why: str
    score: int
    pattern: re.Pattern
    needs: re.Pattern | None = None  # matches only where this matches too (e.g. bpf context)


def _r(p: str, flags=re.I) -> re.Pattern:
    return re.compile(p, flags)


_BPF_CONTEXT = _r(r"\bbpf|\bebpf\b|\bjit\b|ftrace")
# what a change touches, most likely to break JITed tail calls first; an entry scores its best rule
# plus BONUS for each further (different) reason
RULES: tuple[Rule, ...] = (
    Rule("tail call", 100, _r(r"tail[ _-]?calls?\b|\btailcall|prog_array|\bpoke_tab|\bpoke[ _]desc")),
    Rule("tail call", 100, _r(r"\bpoke\b"), _BPF_CONTEXT),
    Rule("x86 jit", 95, _r(r"\bbpf,\s*x(86|64)\b|\bx86(/|,\s*)bpf\b|\bx86/net\b|arch/x86/net|bpf_jit_comp"
                           r"|\bx64\b.*\bjit\b|\bjit\b.*\bx(64|86)\b")),
    Rule("trampoline", 90, _r(r"\bfentry\b|\bfexit\b|\bfreplace\b|\bfmod_ret\b")),
    Rule("trampoline", 90, _r(r"trampoline"), _BPF_CONTEXT),
    Rule("mitigation", 85, _r(r"retpoline|spectre|retbleed|\bsrso\b|\bunret\b|rethunk|return[ _-]thunk"
                              r"|x86/bugs|x86/speculation|x86/its\b|x86/ibt\b|fineibt|call[ _-]depth"
                              r"|indirect target selection|branch history|call_nospec|indirect[ _-]thunk"
                              r"|\bk?cfi\b|inception|transient scheduler|page[ _-]table[ _-]isolation"
                              r"|speculative execution|speculation|nospec")),
    # the acronyms in upper case only: "its", "mds" (ceph's) are words too
    Rule("mitigation", 85, _r(r"\b(IBT|IBRS|IBPB|STIBP|BHI|SRBDS|MMIO_STALE_DATA)\b", 0)),
    # and these only near x86 or mitigation words: ceph has an MDS, the GIC an ITS
    Rule("mitigation", 85, _r(r"\b(ITS|MDS|TAA|SSB|GDS|TSA|PTI)\b", 0),
         _r(r"x86|mitigat|speculat|microcode|vulnerab|\bcpu")),
    Rule("bpf", 60, _r(r"\bbpf|\bebpf\b|\bbtf\b|verifier|kfunc|\bxdp\b|sockmap|skmsg")),
    Rule("x86 text patching", 45, _r(r"text_poke|x86/alternative|static_call|x86/ftrace|\bkprobes?\b")),
    Rule("ftrace", 35, _r(r"\bftrace\b|\bfprobe\b")),
    Rule("x86", 20, _r(r"(^|\s)x86/")),
)
BONUS = 5
OTHER = ("other", 10)
# a driver's fix: its first "subsystem:" part (drm/..., ASoC, usb ...); "net: <driver>:" as well
DRIVER = _r(r"(drm|drivers?|usb|asoc|alsa|hid|media|wifi|bluetooth|input|iio|i2c|spi|gpio|pinctrl"
            r"|mmc|scsi|ata|libata|nvme|nvmet|pci|thermal|hwmon|platform/\S+|firmware|clk|phy|regulator"
            r"|leds|tty|serial|staging|fbdev|mtd|rdma|ib/\S+|infiniband|dt-bindings|dmaengine|soundwire"
            r"|power|mfd|rtc|watchdog|edac|irqchip|ethernet|ice|i40e|iavf|igb|igc|ixgbe"
            r"|e1000e?|bnxt(_en)?|mlx[45]\S*|net/mlx\S+|octeontx2\S*|ibmvnic|virtio\S*|vhost\S*|xen\S*"
            r"|can|ath\d*\S*|iwlwifi|mt76\S*|rtw\S*|brcmfmac|cxl|dm|md|block/\S+|nbd|loop|zram|ubi"
            r"|sound|nfc|ptp|mailbox|remoteproc|soc|interconnect|iommu|vfio|accel/\S+|habanalabs"
            r"|comedi|most|greybus|thunderbolt|cdx|hte|counter|misc|char|parport|ntb|w1|fsi|i3c)"
            r"([/-][^:\s]*)?:\s", re.I)
_NET_DRIVER = _r(r"net: (?!(core|ipv4|ipv6|sched|bridge|tcp|udp|sock|skb|netlink|ethtool|page_pool|xdp"
                 r"|dst|neigh|route|fib|gro|gso|tls|mptcp|packet|unix|devmem|napi|rps|dev|netfilter"
                 r"|ip_tunnel|vxlan|geneve|bonding|team|macvlan|ipvlan|tun|veth)\b)[\w-]+: ")
# Debian's arch tag: "[arm64] ...", "[arm64,armhf] ..."; "[x86] foo:" is upstream's "x86/foo:"
_ARCH_TAG = re.compile(r"^\[(?P<archs>[^\]]+)\]\s*")
AMD64_TAGS = {"x86", "amd64", "i386", "x86_64"}
_OTHER_ARCH_JIT = _r(r"\bbpf,\s*(arm64|arm|riscv|s390x?|powerpc|ppc\d*|mips\d*|sparc\d*|loongarch|x32|arc|parisc)\b"
                     r"|^(arm64|arm|riscv|s390|powerpc|mips|sparc|loongarch|parisc|m68k|alpha|csky|openrisc"
                     r"|xtensa|sh|arc|microblaze|nios2|hexagon|um)\d*[/:]")


# userspace: "perf test: ...", "perf ftrace: ..." (the kernel's perf events are "perf:", "perf/core:")
_TOOLS = _r(r"(tools/|selftests?\b|bpftool|libbpf|samples/|perf \w[\w -]*:)")


def score_entry(text: str, tags: set[str] = frozenset(AMD64_TAGS)) -> tuple[int, str]:
    """(score, why) of one changelog line: higher is likelier to touch JITed
    tail calls on x86-64. tags: the Debian arch tags whose entries are built
    into the kernels compared (amd64's; add "rt" for the -rt flavour).

    Scores: the best RULES match plus BONUS per further reason ("bpf, x86:
    Fix trampoline stack size" is x86 jit, trampoline and bpf); no match:
    10 ("other"); userspace tools (perf test, bpftool, selftests): 2; a
    driver's fix: 1, or its best rule's score / 10 when a rule matches too
    ("media: av7110: fix a spectre vulnerability" is a driver's array
    index, not the kernel's mitigation); another architecture's entry
    ("[arm64] ...", "bpf, arm64: ..."): 0."""
    subject = re.sub(r'^Revert\s+"', "", text)
    tagged = False
    if (m := _ARCH_TAG.match(subject)) is not None:
        archs = {a.strip().rstrip("*") for a in m["archs"].split(",")}
        if not archs & set(tags):
            return 0, f"not built for amd64 ([{m['archs']}])"
        tagged = bool(archs & AMD64_TAGS)
        subject = subject[m.end():]
    if _OTHER_ARCH_JIT.search(subject):
        return 0, "another architecture"
    if _TOOLS.match(subject):
        return 2, "userspace tools"
    # Debian writes upstream's "x86/bugs: ..." as "[x86] bugs: ...": the rules see both
    seen = f"{subject} x86/{subject}" if tagged and not subject.lower().startswith("x86") else subject
    hits: list[tuple[int, str]] = []
    for rule in RULES:
        if rule.why not in (w for _, w in hits) and rule.pattern.search(seen) \
                and (rule.needs is None or rule.needs.search(seen)):
            hits.append((rule.score, rule.why))
    hits.sort(key=lambda h: -h[0])
    driver = DRIVER.match(subject) or _NET_DRIVER.match(subject)
    if driver:
        name = subject[:driver.end()].strip().rstrip(":")
        real = [w for _, w in hits if w != "x86"]
        if not real:
            return 1, f"driver ({name})"
        return max(1, hits[0][0] // 10), f"driver ({name}): {', '.join(real)}"
    if not hits:
        return OTHER[1], OTHER[0]
    further = sum(1 for score, _ in hits[1:] if score > RULES[-1].score)  # "x86" alone adds nothing
    return hits[0][0] + BONUS * further, ", ".join(w for _, w in hits)


def rank(entries: list[Entry], tags: set[str] = frozenset(AMD64_TAGS)) -> list[dict]:
    """Every entry with its score and why, best first (ties keep changelog order)."""
    scored = [{**e.to_dict(), "score": s, "why": w} for e in entries for s, w in [score_entry(e.text, tags)]]
    return sorted(scored, key=lambda d: -d["score"])


# -- configs ------------------------------------------------------------------------------------

# the options compared: BPF and its JIT, BTF, ftrace (fentry/fexit ride on it), the mitigations
CONFIG_OPTIONS = re.compile(
    r"CONFIG_(\w*BPF\w*|(\w+_)?BTF(_\w+)?|FUNCTION_TRACER|DYNAMIC_FTRACE\w*|HAVE_DYNAMIC_FTRACE\w*"
    r"|MITIGATION_\w+|RETPOLINE|RETHUNK|CPU_(SRSO|UNRET_ENTRY|IBPB_ENTRY|IBRS_ENTRY|MITIGATIONS)"
    r"|CALL_DEPTH_TRACKING|CALL_THUNKS\w*|HAVE_CALL_THUNKS|CALL_PADDING|FUNCTION_PADDING_\w+"
    r"|SPECULATION_MITIGATIONS|PAGE_TABLE_ISOLATION|X86_KERNEL_IBT|FINEIBT|CFI_CLANG\w*|SLS"
    r"|GDS_FORCE_MITIGATION|X86_USER_SHADOW_STACK)")
_SET = re.compile(r"(CONFIG_\w+)=(.*)")
_UNSET = re.compile(r"# (CONFIG_\w+) is not set")


def parse_config(text: str) -> dict[str, str | None]:
    """A kernel .config: option -> its value ("y", "m", "16", a quoted
    string as written), None for `# CONFIG_X is not set`."""
    opts: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if (m := _SET.fullmatch(line)) is not None:
            opts[m[1]] = m[2]
        elif (m := _UNSET.fullmatch(line)) is not None:
            opts[m[1]] = None
    return opts


def diff_configs(older: dict[str, str | None], newer: dict[str, str | None]) -> dict[str, dict]:
    """The BPF, JIT and mitigation options set differently, by name; an
    option a config does not mention is unset (None), like "is not set"."""
    names = sorted(n for n in older.keys() | newer.keys() if CONFIG_OPTIONS.fullmatch(n))
    return {n: {"older": older.get(n), "newer": newer.get(n)} for n in names if older.get(n) != newer.get(n)}


# -- the packages -------------------------------------------------------------------------------

def _unpacked(package: str) -> Path:
    from farm.guests.debs import kernel_from_deb
    kernel = kernel_from_deb(package)
    if kernel.cache_entry is None:
        raise InfraError(f"{package}: not in the kernel cache")
    return kernel.cache_entry


_DOC_NAMES = ("changelog.Debian.gz", "changelog.gz")


def changelog_text(package: str, _followed: tuple[str, ...] = ()) -> str:
    """The package's changelog (usr/share/doc/<package>/changelog.Debian.gz,
    or changelog.gz as the signed packages name it). When the doc dir or
    the file is a symlink into another package's doc dir, that package is
    fetched (into the kernel cache as well) and its changelog read."""
    entry = _unpacked(package)
    x = entry / "x"
    doc = x / "usr" / "share" / "doc" / entry.name
    for name in _DOC_NAMES:
        path = doc / name
        resolved = path.resolve()
        if resolved.is_file() and resolved.is_relative_to(x.resolve()):
            try:
                with gzip.open(resolved, "rt", encoding="utf-8", errors="replace") as f:
                    return f.read()
            except (OSError, EOFError) as e:
                raise InfraError(f"{package}: cannot read {path.relative_to(x)}: {e}") from None
    where = f"usr/share/doc/{entry.name}"
    other = _doc_link_target(doc)
    if other and other not in _followed + (entry.name,) and len(_followed) < 3:
        try:
            return changelog_text(other, _followed + (entry.name,))
        except InfraError as e:
            raise InfraError(f"{package}: {where} points at {other}'s doc dir, which has no changelog "
                             f"farm can read ({e})") from None
    raise InfraError(f"{package}: no changelog.Debian.gz under {where}")


def _doc_link_target(doc: Path) -> str | None:
    """The package whose doc dir `doc` (or its changelog) links to, if any."""
    for link in (doc, *(doc / n for n in _DOC_NAMES)):
        if link.is_symlink():
            target = Path(str(link.readlink()))
            parts = [p for p in target.parts if p not in ("..", ".", "/")]
            names = [p for p in parts if re.fullmatch(r"linux-image-[a-z0-9.+-]+", p)]
            if names:
                return names[-1]
    return None


def _config_text(package: str) -> str:
    x = _unpacked(package) / "x"
    configs = sorted((x / "boot").glob("config-*"))
    if not configs:
        raise InfraError(f"{package} holds no /boot/config-*")
    return configs[0].read_text(errors="replace")


def _tags(*packages: str) -> set[str]:
    return set(AMD64_TAGS) | ({"rt"} if any("-rt-" in p for p in packages) else set())


def suspects_between(older: str, newer: str) -> dict:
    """older, newer: kernel image package names (linux-image-...), older by
    package version first. Returns {"ranked": [entry...], "all": [entry...]}
    where an entry is {"text": the changelog line (an upstream commit title),
    "version": the Debian package version whose stanza lists it, "upstream":
    that version's upstream release, "score": int, "why": what made it rank
    (e.g. "bpf", "x86 jit", "tail call", "mitigation")} ("score"/"why" only
    in "ranked", best first); "all" keeps every entry in changelog order.

    The entries are those of the newer changelog's stanzas above the older
    package's version (its changelog's first stanza) that the older's
    changelog does not list (see `between`). "ranked" holds every entry of
    "all" (another architecture's at score 0, a driver's at 1).

    Different upstream lines (6.1.0-57 -> 6.12.107): the 6.12 changelog
    forks from 6.1's history in unstable before bookworm's 6.1.28..6.1.192,
    so it cannot say what 6.12 lacks of those; what comes back is every 6.12
    stanza above the older's version (Debian's changes for 6.2..6.12 and
    the 6.12.y stable updates) less the entries whose text the older
    changelog lists too (fixes both lines took). Mainline's own 6.2..6.12
    work is in no changelog: across lines the list is a lead, not the diff.

    BadInput when older's version is above newer's; InfraError (from the
    kernel cache, or naming the file) when a package or its changelog
    cannot be had."""
    old_stanzas, new_stanzas = parse_changelog(changelog_text(older)), parse_changelog(changelog_text(newer))
    for name, stanzas in ((older, old_stanzas), (newer, new_stanzas)):
        if not stanzas:
            raise InfraError(f"{name}: its changelog has no stanza farm can read")
    if version_compare(old_stanzas[0].version, new_stanzas[0].version) > 0:
        raise BadInput(f"suspects: {older} ({old_stanzas[0].version}) is newer than "
                       f"{newer} ({new_stanzas[0].version}): give the older package first")
    span = between(old_stanzas, new_stanzas)
    return {"ranked": rank(span.entries, _tags(older, newer)), "all": [e.to_dict() for e in span.entries]}


def config_diff(older: str, newer: str) -> dict[str, dict]:
    """{"CONFIG_...": {"older": value or None, "newer": value or None}} for
    every BPF, JIT and mitigation option whose value differs between the
    two packages' /boot/config-* files.

    Values as the config writes them ("y", "m", "16", '"string"'); an
    option that is "not set" or absent is None in both. The options:
    CONFIG_OPTIONS (every *BPF*, BTF, FUNCTION_TRACER, DYNAMIC_FTRACE*,
    MITIGATION_*, RETPOLINE, RETHUNK, CPU_SRSO and the other CPU_*_ENTRY,
    CALL_DEPTH_TRACKING, CALL_THUNKS*, CALL_PADDING, FUNCTION_PADDING_*,
    SPECULATION_MITIGATIONS, PAGE_TABLE_ISOLATION, X86_KERNEL_IBT, SLS ...)."""
    return diff_configs(parse_config(_config_text(older)), parse_config(_config_text(newer)))
