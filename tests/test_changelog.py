"""What changed between two packaged kernels (farm/bisect/changelog.py):
the changelog parser, the span between two packages, the ranking and the
config diff on small inline texts; then the real packages (slow: each is
~100 MB to fetch the first time, shared with the lab's kernel cache)."""
from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from farm.bisect import changelog as cl

# a changelog in Debian's shape: newest stanza first, upstream titles under
# "New upstream stable update:", Debian's own items, a nested backport list
NEWER = """\
linux (6.1.192-3) bookworm-security; urgency=high

  * nfsd: preflight SEQUENCE replies before accepting a slot (CVE-2026-99362)

 -- Salvatore Bonaccorso <carnil@debian.org>  Thu, 26 Nov 2026 18:12:56 +0100

linux (6.1.192-1) bookworm-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.191
    - drm/amdgpu: fix a leak in the ring test
    - bpf, x64: Fix tail call count offset when the program has a trampoline
    - mm/vmscan: report RCU-tasks quiescent states in shrink_lruvec()
      (CVE-2026-89753)
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.192
    - [x86] bugs: Add a retbleed mitigation for the BPF JIT
    - [arm64] bpf: Fix the arm64 JIT's tail call counter
    - net: hns3: fix a tail of the ring

  [ Salvatore Bonaccorso ]
  * [amd64] Mitigate Indirect Target Selection (CVE-2024-28956):
    - x86/its: Add support for ITS-safe return thunk
  * HID: sony: fix UAF of ghl_poke_timer

 -- Salvatore Bonaccorso <carnil@debian.org>  Sat, 14 Nov 2026 11:29:58 +0100

linux (6.1.190-1) bookworm-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.188
    - bpf: Prevent tailcall infinite loop caused by freplace

 -- Salvatore Bonaccorso <carnil@debian.org>  Mon, 02 Nov 2026 10:00:00 +0100
"""

OLDER = NEWER[NEWER.index("linux (6.1.190-1)"):]


def texts(entries):
    return [e.text if isinstance(e, cl.Entry) else e["text"] for e in entries]


# -- versions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,want", [
    ("6.1.192-3", "6.1.192-2", 1),
    ("6.1.170-1", "6.1.99-1", 1),            # numerically, not as text
    ("6.12.107-1~deb12u1", "6.12.107-1", -1),  # ~ sorts before the end
    ("6.12.95-1~bpo12+1", "6.12.95-1", -1),
    ("6.2~rc3-1~exp1", "6.1.192-3", 1),
    ("6.1~rc8-1~exp1", "6.1.1-1", -1),
    ("6.1.192+3", "6.1.192-3", 1),
    ("1:6.0-1", "6.12-1", 1),                 # the epoch first
    ("6.1.192-3", "6.1.192-3", 0),
])
def test_debian_versions_sort_like_dpkg(a, b, want):
    got = cl.version_compare(a, b)
    assert (got > 0) - (got < 0) == want
    if shutil.which("dpkg"):  # the reference: dpkg itself
        op = {1: "gt", -1: "lt", 0: "eq"}[want]
        assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


# -- the parser -----------------------------------------------------------------------------------

def test_every_item_is_an_entry_of_its_stanza_and_the_structure_is_not():
    stanzas = cl.parse_changelog(NEWER)
    assert [(s.source, s.version) for s in stanzas] == [
        ("linux", "6.1.192-3"), ("linux", "6.1.192-1"), ("linux", "6.1.190-1")]
    mid = stanzas[1].entries
    assert texts(mid) == [
        "drm/amdgpu: fix a leak in the ring test",
        "bpf, x64: Fix tail call count offset when the program has a trampoline",
        # the continuation line joins its item
        "mm/vmscan: report RCU-tasks quiescent states in shrink_lruvec() (CVE-2026-89753)",
        "[x86] bugs: Add a retbleed mitigation for the BPF JIT",
        "[arm64] bpf: Fix the arm64 JIT's tail call counter",
        "net: hns3: fix a tail of the ring",
        "[amd64] Mitigate Indirect Target Selection (CVE-2024-28956):",
        "x86/its: Add support for ITS-safe return thunk",
        "HID: sony: fix UAF of ghl_poke_timer",
    ]  # no "New upstream stable update:", no URL, no "[ Name ]"
    assert {(e.version, e.upstream) for e in mid} == {("6.1.192-1", "6.1.192")}


def test_a_signed_stanza_stands_for_the_linux_version_it_signs():
    signed = NEWER.replace("linux (6.1.192-3) bookworm-security; urgency=high\n",
                           "linux-signed-amd64 (6.1.192+3) bookworm-security; urgency=high\n\n"
                           "  * Sign kernel from linux 6.1.192-3\n", 1)
    top = cl.parse_changelog(signed)[0]
    assert (top.source, top.version) == ("linux-signed-amd64", "6.1.192-3")
    assert texts(top.entries) == ["nfsd: preflight SEQUENCE replies before accepting a slot (CVE-2026-99362)"]
    assert top.entries[0].version == "6.1.192-3"


# -- between ----------------------------------------------------------------------------------------

def test_between_is_the_newer_stanzas_above_the_older_version():
    span = cl.between(cl.parse_changelog(OLDER), cl.parse_changelog(NEWER))
    assert span.same_line
    assert {e.version for e in span.entries} == {"6.1.192-3", "6.1.192-1"}
    assert "bpf: Prevent tailcall infinite loop caused by freplace" not in texts(span.entries)
    assert texts(span.entries)[0].startswith("nfsd:")  # changelog order: newest first
    # the same package twice: nothing between
    assert cl.between(cl.parse_changelog(NEWER), cl.parse_changelog(NEWER)).entries == []


def test_a_stanza_the_older_lists_itself_is_not_between_even_when_it_sorts_above():
    older = ("linux-6.12 (6.12.101-1~deb12u1) bookworm-security; urgency=high\n\n  * Rebuild for bookworm\n\n"
             " -- X <x@example.org>  Mon, 01 Sep 2026 00:00:00 +0000\n\n"
             "linux (6.12.101-1) trixie-security; urgency=high\n\n  * bpf: old fix\n\n"
             " -- X <x@example.org>  Mon, 01 Sep 2026 00:00:00 +0000\n")
    newer = ("linux (6.12.107-1) trixie-security; urgency=high\n\n  * bpf: new fix\n\n"
             " -- X <x@example.org>  Mon, 08 Sep 2026 00:00:00 +0000\n\n") + older
    span = cl.between(cl.parse_changelog(older), cl.parse_changelog(newer))
    assert texts(span.entries) == ["bpf: new fix"]  # not 6.12.101-1's, though it sorts above 6.12.101-1~deb12u1


def test_across_lines_the_fixes_both_took_are_dropped_and_the_rest_kept():
    older = ("linux (6.1.192-3) bookworm-security; urgency=high\n\n  * New upstream stable update:\n"
             "    - bpf: Prevent tailcall infinite loop caused by freplace (CVE-2024-47794)\n"
             "    - [x86] bugs: shared fix\n\n -- X <x@example.org>  Mon, 01 Sep 2026 00:00:00 +0000\n")
    newer = ("linux (6.12.5-1) unstable; urgency=medium\n\n  * New upstream stable update:\n"
             "    - bpf: Prevent tailcall infinite loop caused by freplace\n"
             "    - x86/bugs: not the same title\n    - [amd64] bugs: shared fix\n"
             "    - bpf, x64: only in 6.12\n\n -- X <x@example.org>  Mon, 01 Sep 2026 00:00:00 +0000\n\n"
             "linux (6.1.27-1) unstable; urgency=medium\n\n  * bpf: below the older's version\n\n"
             " -- X <x@example.org>  Mon, 01 May 2023 00:00:00 +0000\n")
    span = cl.between(cl.parse_changelog(older), cl.parse_changelog(newer))
    assert not span.same_line
    assert texts(span.entries) == ["x86/bugs: not the same title", "bpf, x64: only in 6.12"]
    assert span.dropped_shared == 2


# -- ranking ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,why", [
    ("bpf, x64: Fix tail call count offset", "tail call"),
    ("bpf, x86: Fix PROBE_MEM runtime load check", "x86 jit"),
    ("[x86] bpf, x86: Fix trampoline stack size for 128-bit arguments", "x86 jit"),
    ("bpf: Reject attaching fexit/fmod_ret to __noreturn functions", "trampoline"),
    ("[x86] bugs: Add a retbleed mitigation", "mitigation"),
    ("x86/its: Add support for ITS-safe return thunk", "mitigation"),
    ("bpf: Fix kmemleak warning for percpu hashmap", "bpf"),
    ("ext4: fix NULL folio dereference in mballoc", "other"),
    ("drm/amdgpu: fix a leak in the ring test", "driver (drm/amdgpu)"),
    ("net: hns3: fix a tail of the ring", "driver (net: hns3)"),
    ("[arm64] bpf: Fix the arm64 JIT's tail call counter", "not built for amd64 ([arm64])"),
    ("bpf, arm64: Force 8-byte alignment for JIT buffer", "another architecture"),
    ("perf test bpf: Address error about non-null argument", "userspace tools"),
])
def test_each_entry_says_why_it_ranks(text, why):
    assert cl.score_entry(text)[1].startswith(why)


def test_words_that_only_look_like_suspects_do_not_rank():
    assert cl.score_entry("gpio: exar: initialize the ID before registering its cleanup")[1] == "driver (gpio)"
    assert cl.score_entry("efi: Don't map the entire mokvar table to determine its size")[1] == "other"
    assert cl.score_entry("ceph: don't allow access to MDS-private inodes")[1] == "other"
    # a poke outside BPF is a driver's timer, not a tail-call poke descriptor
    assert cl.score_entry("HID: sony: fix UAF of ghl_poke_timer")[0] == 1
    # a spectre fix in a driver is still a driver's
    assert cl.score_entry("media: av7110: fix a spectre vulnerability")[0] < cl.score_entry("ext4: x")[0]


def test_the_jit_outranks_mitigations_outrank_bpf_outranks_other_outranks_drivers():
    order = ["bpf, x64: Fix tail call count offset",
             "bpf, x86: Fix PROBE_MEM runtime load check",
             "[x86] bugs: Add a retbleed mitigation",
             "bpf: Fix kmemleak warning for percpu hashmap",
             "ext4: fix NULL folio dereference in mballoc",
             "drm/amdgpu: fix a leak in the ring test",
             "[arm64] bpf: Fix the arm64 JIT's tail call counter"]
    scores = [cl.score_entry(t)[0] for t in order]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores), scores


def test_rt_entries_count_only_for_the_rt_flavour():
    assert cl.score_entry("[rt] Update to 6.1.176-rt64:")[0] == 0
    assert cl.score_entry("[rt] Update to 6.1.176-rt64:", cl.AMD64_TAGS | {"rt"})[0] > 0


def test_rank_is_best_first_keeps_every_entry_and_ties_keep_changelog_order():
    entries = cl.between(cl.parse_changelog(OLDER), cl.parse_changelog(NEWER)).entries
    ranked = cl.rank(entries)
    assert sorted(texts(ranked)) == sorted(texts(entries))
    assert texts(ranked)[:2] == ["bpf, x64: Fix tail call count offset when the program has a trampoline",
                                 "[x86] bugs: Add a retbleed mitigation for the BPF JIT"]
    assert texts(ranked)[-1] == "[arm64] bpf: Fix the arm64 JIT's tail call counter"
    assert [d["score"] for d in ranked] == sorted((d["score"] for d in ranked), reverse=True)
    assert all(set(d) == {"text", "version", "upstream", "score", "why"} and d["why"] for d in ranked)
    # ties: the two "other" entries in the order the changelog lists them
    others = [d["text"] for d in ranked if d["why"] == "other"]
    assert others == [t for t in texts(entries) if t in others] and len(others) == 2


# -- configs ---------------------------------------------------------------------------------------

OLD_CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_BPF=y
CONFIG_BPF_JIT=y
# CONFIG_BPF_JIT_ALWAYS_ON is not set
CONFIG_RETPOLINE=y
CONFIG_CPU_SRSO=y
# CONFIG_X86_KERNEL_IBT is not set
# CONFIG_BPFILTER is not set
CONFIG_FUNCTION_PADDING_BYTES=4
CONFIG_EXT4_FS=y
CONFIG_LOCALVERSION="-old"
"""
NEW_CONFIG = """\
CONFIG_BPF=y
CONFIG_BPF_JIT=y
CONFIG_BPF_JIT_ALWAYS_ON=y
CONFIG_MITIGATION_RETPOLINE=y
CONFIG_X86_KERNEL_IBT=y
CONFIG_FUNCTION_PADDING_BYTES=16
CONFIG_EXT4_FS=m
CONFIG_LOCALVERSION="-new"
CONFIG_CRYPTO_JITTERENTROPY=y
CONFIG_BT_HCIBTUSB=m
"""


def test_config_values_and_not_set_is_none():
    opts = cl.parse_config(OLD_CONFIG)
    assert opts["CONFIG_BPF"] == "y" and opts["CONFIG_BPF_JIT_ALWAYS_ON"] is None
    assert opts["CONFIG_LOCALVERSION"] == '"-old"' and opts["CONFIG_FUNCTION_PADDING_BYTES"] == "4"


def test_config_diff_is_the_bpf_jit_and_mitigation_options_set_differently():
    diff = cl.diff_configs(cl.parse_config(OLD_CONFIG), cl.parse_config(NEW_CONFIG))
    assert diff == {
        "CONFIG_BPF_JIT_ALWAYS_ON": {"older": None, "newer": "y"},
        "CONFIG_CPU_SRSO": {"older": "y", "newer": None},
        "CONFIG_FUNCTION_PADDING_BYTES": {"older": "4", "newer": "16"},
        "CONFIG_MITIGATION_RETPOLINE": {"older": None, "newer": "y"},
        "CONFIG_RETPOLINE": {"older": "y", "newer": None},
        "CONFIG_X86_KERNEL_IBT": {"older": None, "newer": "y"},
    }  # not ext4, LOCALVERSION, the JITTERENTROPY RNG or bluetooth's HCIBTUSB; BPFILTER: not set == absent


# -- errors ----------------------------------------------------------------------------------------

def test_older_given_second_is_bad_input(monkeypatch):
    texts_by_package = {"linux-image-old": OLDER, "linux-image-new": NEWER}
    monkeypatch.setattr(cl, "changelog_text", lambda package: texts_by_package[package])
    from farm.errors import BadInput
    with pytest.raises(BadInput, match="give the older package first"):
        cl.suspects_between("linux-image-new", "linux-image-old")
    got = cl.suspects_between("linux-image-old", "linux-image-new")
    assert set(got) == {"ranked", "all"} and len(got["all"]) == len(got["ranked"]) == 10
    assert all(set(e) == {"text", "version", "upstream"} for e in got["all"])


def test_a_doc_dir_linking_to_another_package_is_followed(monkeypatch, tmp_path):
    """usr/share/doc/<package> a symlink to another image package's doc dir:
    that package is fetched and its changelog read; a dangling one is an InfraError."""
    from farm.errors import InfraError

    def entry(name, link_to=None, text=None):
        doc = tmp_path / name / "x" / "usr" / "share" / "doc"
        doc.mkdir(parents=True)
        if link_to:
            (doc / name).symlink_to(link_to)
        if text:
            (doc / name).mkdir()
            with gzip.open(doc / name / "changelog.Debian.gz", "wt") as f:
                f.write(text)
        return tmp_path / name

    entries = {"linux-image-a-dbg": entry("linux-image-a-dbg", link_to="linux-image-a"),
               "linux-image-a": entry("linux-image-a", text=NEWER),
               "linux-image-b-dbg": entry("linux-image-b-dbg", link_to="linux-image-b"),
               "linux-image-b": entry("linux-image-b")}
    fetched = []
    monkeypatch.setattr(cl, "_unpacked", lambda p: fetched.append(p) or entries[p])
    assert cl.changelog_text("linux-image-a-dbg") == NEWER
    assert fetched == ["linux-image-a-dbg", "linux-image-a"]
    with pytest.raises(InfraError, match="linux-image-b-dbg: usr/share/doc/linux-image-b-dbg points at "
                                         "linux-image-b's doc dir, which has no changelog"):
        cl.changelog_text("linux-image-b-dbg")


# -- the real packages -----------------------------------------------------------------------------

OLD_61, NEW_61, NEW_612 = ("linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-57-amd64-unsigned",
                           "linux-image-6.12.107+deb12-amd64-unsigned")


@pytest.mark.slow
def test_real_adjacent_61_packages():
    newer = cl.parse_changelog(cl.changelog_text(NEW_61))
    older_version = cl.parse_changelog(cl.changelog_text(OLD_61))[0].version
    got = cl.suspects_between(OLD_61, NEW_61)
    assert got["all"], "6.1.0-57 lists nothing since 6.1.0-56"
    above = {(e.text, e.version) for s in newer if cl.version_compare(s.version, older_version) > 0
             for e in s.entries}
    listed = {(e.text, e.version) for s in newer for e in s.entries}
    for e in got["all"]:
        assert (e["text"], e["version"]) in listed, e
        assert cl.version_compare(e["version"], older_version) > 0, e  # none at or below 6.1.0-56's
    assert {(e["text"], e["version"]) for e in got["all"]} == above
    assert sorted(texts(got["ranked"])) == sorted(texts(got["all"]))


@pytest.mark.slow
def test_real_61_to_612():
    got = cl.suspects_between(NEW_61, NEW_612)
    newer = {e.text for s in cl.parse_changelog(cl.changelog_text(NEW_612)) for e in s.entries}
    older = {cl.fix_key(e.text) for s in cl.parse_changelog(cl.changelog_text(NEW_61)) for e in s.entries}
    assert got["all"] and all(e["text"] in newer for e in got["all"])
    assert not any(cl.fix_key(e["text"]) in older for e in got["all"])  # the fixes both lines took are not news
    assert all(cl.version_compare(e["version"], "6.1.192-3") > 0 for e in got["all"])
    top = got["ranked"][0]
    assert top["score"] >= 85 and any(w in top["why"] for w in ("tail call", "x86 jit", "trampoline", "mitigation"))

    diff = cl.config_diff(NEW_61, NEW_612)
    assert diff and all(cl.CONFIG_OPTIONS.fullmatch(k) for k in diff)
    assert diff["CONFIG_X86_KERNEL_IBT"] == {"older": None, "newer": "y"}  # 6.1: "is not set"
    assert all(v["older"] != v["newer"] for v in diff.values())
