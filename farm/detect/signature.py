"""Kernel reports in the log to Findings with stable, syzbot-style titles.

A report starts at a header line (BUG:, kernel BUG at, WARNING:, a die line
such as "Oops: general protection fault ...: 0000 [#1]", a watchdog or RCU
stall line, a KASAN/KFENCE/UBSAN report) and takes the lines that follow up
to its "---[ end trace" line (the closing "=====" rule of a sanitizer
report), the next header, or REPORT_CAP lines.  The die line that an x86
oops prints a few lines after "BUG: unable to handle page fault ..." or
"kernel BUG at ...!" belongs to that report, not to a new one.

The signature is the kind of crash and the function it happened in, with
everything that differs between two hosts or two runs taken out: addresses,
+0xOFF/0xLEN offsets, pids, CPU numbers, timestamps, die counters, the tags
of JIT-ed programs (bpf_prog_<tag>_<name> -> bpf_prog_*), compiler suffixes
(.cold, .isra.0, .constprop.0, ...), taint.  So the same crash found on two
hosts, on different CPUs, carries the same signature.

Only records of the kernel itself (facility 0) are considered: anything user
space writes to /dev/kmsg, such as farm's own markers, arrives as LOG_USER
and can never be taken for a kernel report.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from farm.detect.kmsg import FACILITY_KERN, KmsgRecord
from farm.result import Finding

REPORT_CAP = 200   # lines kept per report
DIE_WINDOW = 12    # how far after its header an oops' die line may come

# -- normalisation --------------------------------------------------------------------

_BPF_PROG = re.compile(r"\bbpf_prog_[0-9a-f]{16}(?:_\w+)?")
_BPF_TRAMPOLINE = re.compile(r"\bbpf_trampoline_\d+")
_OFFSET = re.compile(r"\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?")
_MODULE = re.compile(r"\s+\[[\w-]+\]$")
# what GCC and LLVM append to a function they cloned or split: "foo.isra.0"
_SUFFIX = r"\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias|specialized|clone)(?:\.\d+)*"
_COMPILER_SUFFIX = re.compile(_SUFFIX + r"$|\.\d+$")
_TIMESTAMP = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")


def normalise_function(name: str) -> str:
    """A symbol from a RIP line, a WARNING or a stack frame, stripped to what
    is the same on every host: "? bpf_prog_1a2b3c4d5e6f7a8b_entry+0x4d/0x80"
    -> "bpf_prog_*", "__foo.isra.0+0x1/0x2 [mod]" -> "__foo"."""
    name = name.strip()
    if name.startswith("?"):
        name = name[1:].strip()
    name = _MODULE.sub("", name)
    name = _OFFSET.sub("", name).strip()
    name = _BPF_PROG.sub("bpf_prog_*", name)
    name = _BPF_TRAMPOLINE.sub("bpf_trampoline_*", name)
    while True:
        shorter = _COMPILER_SUFFIX.sub("", name)
        if shorter == name:
            return name
        name = shorter


_LINE_SUBS: list[tuple[re.Pattern, str]] = [
    (_BPF_PROG, "bpf_prog_*"),
    (_BPF_TRAMPOLINE, "bpf_trampoline_*"),
    (_OFFSET, ""),
    (re.compile(r"\b(\w+)(?:" + _SUFFIX + r")+\b"), r"\1"),
    (re.compile(r"\s*\[#\d+\]"), ""),
    (re.compile(r"\b(?:Not tainted|Tainted: [A-Z ]*[A-Z])(?=\s|$)"), ""),
    (re.compile(r"\b(CPU|PID|UID|TGID)(:\s*)\d+"), r"\1\2N"),
    (re.compile(r"\b(CPU|cpu)(#|\s)\d+\b"), r"\1\2N"),
    (re.compile(r"\b(CPUs?|cpus?) (\d+(?:[-,]\d+)*)\b"), r"\1 N"),
    (re.compile(r"\b(pid|tgid|cpu)=\d+"), r"\1=N"),
    (re.compile(r"(\[[^\]\s:]+):\d+\]"), r"\1:N]"),            # [comm:pid]
    (re.compile(r"\b(task \S+|CPU#N: \S+)/\d+\b"), r"\1/N"),    # comm/pid
    (re.compile(r"\b\d+s!"), "Ns!"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "ADDR"),
    # not a generated shape's seed (gen-<seed>, farm/gen/): each seed is its own signature
    (re.compile(r"(?<!\bgen-)\b[0-9a-f]{8,16}\b"), "ADDR"),
]


def normalise_line(text: str) -> str:
    """One log line with what differs between hosts and runs taken out:
    timestamps, die counters, taint, CPU numbers, pids, addresses, offsets,
    JIT-ed program tags, compiler suffixes.  A "Tainted: ..." line becomes ""."""
    text = _TIMESTAMP.sub("", text).strip()
    if text.startswith("Tainted:"):
        return ""
    for pattern, repl in _LINE_SUBS:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


# -- headers ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Header:
    rule: str
    kind: str
    match: re.Match
    awaits_die: bool = False    # an x86 die line follows and belongs to it
    sanitizer: bool = False     # framed by "=====" rules


_DIE = re.compile(r"^(?:Oops: |Internal error: )?(?P<body>.*?)\s*(?<![0-9a-f])[0-9a-f]{4,16} \[#\d+\]")
_RULES: list[tuple[str, str, re.Pattern, dict]] = [
    ("kasan", "kernel-bug",
     re.compile(r"^BUG: KASAN: (?P<what>.+?) in (?P<func>\S+)(?:\s+\[[\w-]+\])?\s*$"), {"sanitizer": True}),
    ("kfence", "kernel-bug",
     re.compile(r"^BUG: KFENCE: (?P<what>.+?) in (?P<func>\S+)(?:\s+\[[\w-]+\])?\s*$"), {"sanitizer": True}),
    ("ubsan", "kernel-bug", re.compile(r"^UBSAN: (?P<what>[\w-]+) in (?P<file>\S+)"), {"sanitizer": True}),
    ("soft-lockup", "lockup", re.compile(r"\bBUG: soft lockup - CPU#(?P<cpu>\d+) stuck"), {}),
    ("hard-lockup", "lockup", re.compile(r"\bWatchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"), {}),
    ("rcu-stall", "lockup", re.compile(
        r"^(?:rcu: )?INFO: rcu_\w+ (?:self-detected stall|detected (?:expedited )?stalls?)\b"), {}),
    ("hung-task", "lockup", re.compile(r"^INFO: task \S+ blocked for more than \d+ seconds"), {}),
    ("workqueue-lockup", "lockup", re.compile(r"^BUG: workqueue lockup\b"), {}),
    ("page-fault", "kernel-oops",
     re.compile(r"^BUG: unable to handle page fault for address"), {"awaits_die": True}),
    ("paging-request", "kernel-oops", re.compile(
        r"^BUG: unable to handle kernel (?P<what>paging request|NULL pointer dereference)\b"), {"awaits_die": True}),
    ("null-deref", "kernel-oops",
     re.compile(r"^BUG: kernel NULL pointer dereference\b"), {"awaits_die": True}),
    ("stack-guard", "kernel-oops",
     re.compile(r"^BUG: (?:TASK )?stack guard page was hit\b"), {"awaits_die": True}),
    ("kernel-bug", "kernel-bug",
     re.compile(r"^kernel BUG at (?P<file>\S+?:\d+)!"), {"awaits_die": True}),
    ("kernel-bug-nofile", "kernel-bug",
     re.compile(r"^Kernel BUG at (?P<func>\S+) \[verbose debug info unavailable\]"), {"awaits_die": True}),
    ("warning", "kernel-warning", re.compile(
        r"^WARNING: CPU: (?P<cpu>\d+) PID: \d+ at (?:(?P<file>\S+:\d+) )?(?P<func>\S+)"), {}),
    ("warning", "kernel-warning", re.compile(
        r"^WARNING: (?:(?P<file>\S+:\d+) )?at (?P<func>\S+?),? CPU#(?P<cpu>\d+)"), {}),
    ("warning-text", "kernel-warning", re.compile(r"^WARNING: (?P<what>.+)$"), {}),
    ("bug", "kernel-bug", re.compile(r"^BUG: (?P<what>.+)$"), {}),
    ("die", "kernel-oops", _DIE, {}),
    ("panic", "kernel-oops", re.compile(r"^Kernel panic - not syncing: (?P<what>.+?)\s*\]?\s*$"), {}),
]


def _match_header(line: str) -> _Header | None:
    for rule, kind, pattern, flags in _RULES:
        m = pattern.search(line)
        if m:
            return _Header(rule, kind, m, **flags)
    return None


# -- reports ------------------------------------------------------------------------------

@dataclass
class _Report:
    header: _Header
    seq: int
    lines: list[str] = field(default_factory=list)
    closed: bool = False
    die_seen: bool = False
    truncated: bool = False

    def add(self, line: str) -> None:
        if len(self.lines) < REPORT_CAP:
            self.lines.append(line)
        else:
            self.truncated = True


def _is_end(line: str, report: _Report) -> bool:
    if line.startswith("---[ end trace") or line.startswith("---[ end Kernel panic"):
        return True
    return report.header.sanitizer and len(report.lines) > 1 and set(line) == {"="} and len(line) >= 20


def _group(records: list[KmsgRecord], kernel_only: bool) -> list[_Report]:
    reports: list[_Report] = []
    cur: _Report | None = None
    for rec in records:
        if kernel_only and rec.facility != FACILITY_KERN:
            continue
        for raw_line in rec.text.split("\n"):
            line = _TIMESTAMP.sub("", raw_line).rstrip()
            stripped = line.strip()
            header = _match_header(stripped) if stripped else None
            if (header and header.rule == "die" and cur and not cur.closed and cur.header.awaits_die
                    and not cur.die_seen and len(cur.lines) <= DIE_WINDOW):
                cur.add(line)       # the die line of the oops already open
                cur.die_seen = True
                continue
            if header:
                if cur:
                    cur.closed = True
                cur = _Report(header, rec.seq, [line])
                reports.append(cur)
                continue
            if cur is None or cur.closed:
                continue
            cur.add(line)
            if _is_end(stripped, cur):
                cur.closed = True
    return reports


_RIP = re.compile(r"\bRIP: (?P<cs>[0-9a-f]{4}):(?P<rest>.*)$")
_FRAME = re.compile(r"^\s*(?P<unreliable>\?\s+)?(?P<func>[A-Za-z_.$][\w.$]*\+0x[0-9a-f]+/0x[0-9a-f]+)")
_SKIP_FRAME = re.compile(
    r"^(?:dump_stack\w*|show_stack|show_regs|print_report|print_address_description\w*|kasan_\w+|__kasan_\w+"
    r"|kfence_\w+|ubsan_\w+|__ubsan_handle_\w+|__warn|warn_slowpath\w*|report_bug|handle_bug|die|__die\w*"
    r"|oops_\w+|page_fault_oops|do_user_addr_fault|exc_\w+|asm_exc_\w+|asm_sysvec_\w+|sysvec_\w+"
    r"|do_error_trap|do_trap|panic|__schedule|schedule\w*|io_schedule\w*|__wait_for_common|wait_for_\w+"
    r"|__mutex_lock\w*|mutex_lock\w*|rwsem_down_\w+|__down\w*|nmi_\w+|watchdog_\w+|__hrtimer_run_queues"
    r"|hrtimer_interrupt|__sysvec_\w+|irq_exit\w*|__irq_exit\w*|rcu_\w+|lockdep_\w+|__lock_acquire|lock_acquire"
    r"|print_\w+|check_noncircular|check_prev_add|validate_chain)$")


def _rip(lines: list[str]) -> str | None:
    """The RIP of the kernel context the report is about: its first
    kernel-mode (CS 0010) RIP line, as printed."""
    for line in lines:
        m = _RIP.search(line)
        if m and m.group("cs") == "0010":
            return f"{m.group('cs')}:{m.group('rest').strip()}"
    return None


def _symbol(text: str | None) -> str | None:
    """A normalised function name out of "func+0x1/0x2 [mod]", "[<addr>] func+0x1/0x2"
    or a RIP text; None for a bare address (nothing symbolic to go by)."""
    if not text:
        return None
    text = re.sub(r"^[0-9a-f]{4}:", "", text.strip())
    text = re.sub(r"\[<[0-9a-f]+>\]\s*", "", text).strip()
    if not text:
        return None
    token = text.split()[0]
    if token.startswith("0x") or re.fullmatch(r"[0-9a-f]+", token):
        return None
    name = normalise_function(token)
    return name or None


def _first_frame(lines: list[str]) -> str | None:
    """The first reliable, interesting frame of the first call trace."""
    in_trace = False
    for line in lines:
        if "Call Trace:" in line:
            in_trace = True
            continue
        if not in_trace:
            continue
        if line.strip() == "</TASK>" or not line.strip():
            break
        m = _FRAME.match(line)
        if not m or m.group("unreliable"):
            continue  # <IRQ>, </IRQ>, "? frame" the unwinder is unsure of
        name = normalise_function(m.group("func"))
        if not _SKIP_FRAME.match(name):
            return name
    return None


def _func(lines: list[str], header_func: str | None = None, prefer: str = "rip") -> str | None:
    candidates = {
        "header": lambda: _symbol(header_func),
        "rip": lambda: _symbol(_rip(lines)),
        "frame": lambda: _first_frame(lines),
    }
    order = {"header": ("header", "rip", "frame"), "rip": ("rip", "frame", "header"),
             "frame": ("frame", "rip", "header")}[prefer]
    for source in order:
        name = candidates[source]()
        if name:
            return name
    return None


def _cpu(header: _Header, lines: list[str]) -> int | None:
    cpu = header.match.groupdict().get("cpu")
    if cpu is not None:
        return int(cpu)
    for line in lines:
        m = re.search(r"\bCPU: (\d+)\b", line)
        if m:
            return int(m.group(1))
    return None


def _in(title: str, func: str | None) -> str:
    return f"{title} in {func}" if func else title


def _clean_bug_text(what: str) -> str:
    """"scheduling while atomic: farm/1/0x2" -> "scheduling while atomic" and the like."""
    what = re.split(r": |, | at \S+:\d+| at (?:0x)?[0-9a-f]{8,}| in process\b| \w+:\S", what, maxsplit=1)[0]
    what = re.sub(r"\s*\[[^\]]*\]", "", what)
    return normalise_line(what)


def _title(header: _Header, lines: list[str]) -> str | None:
    """The signature of a report; None when it is no report after all."""
    g = header.match.groupdict()
    rule = header.rule
    if rule in ("kasan", "kfence"):
        func = _func(lines, g["func"], prefer="header")
        what = normalise_line(g["what"])
        if rule == "kasan":
            access = next((m.group(1) for line in lines[1:6]
                           if (m := re.match(r"\s*(Read|Write) of size \d+", line))), None)
            return _in(f"KASAN: {what}" + (f" {access}" if access else ""), func)
        return _in(f"KFENCE: {what}", func)
    if rule == "ubsan":
        return _in(f"UBSAN: {g['what']}", _func(lines, prefer="frame"))
    if rule == "soft-lockup":
        return _in("BUG: soft lockup", _func(lines))
    if rule == "hard-lockup":
        return "hard LOCKUP"
    if rule == "rcu-stall":
        return _in("INFO: rcu detected stall", _func(lines))
    if rule == "hung-task":
        return _in("INFO: task hung", _func(lines, prefer="frame"))
    if rule == "workqueue-lockup":
        return "BUG: workqueue lockup"
    if rule == "panic":
        return _in(f"kernel panic: {normalise_line(g['what'])}", _func(lines, prefer="frame"))
    if rule == "page-fault":
        return _in("BUG: unable to handle page fault", _func(lines))
    if rule == "paging-request":
        return _in(f"BUG: unable to handle kernel {g['what']}", _func(lines))
    if rule == "null-deref":
        return _in("BUG: kernel NULL pointer dereference", _func(lines))
    if rule == "stack-guard":
        return _in("BUG: stack guard page was hit", _func(lines))
    if rule in ("kernel-bug", "kernel-bug-nofile"):
        return _in("kernel BUG", _func(lines, g.get("func")))
    if rule == "warning":
        return _in("WARNING", _func(lines, g["func"], prefer="header"))
    if rule == "warning-text":
        # lockdep and friends: only a report if a stack comes with it
        if not any("Call Trace:" in line or _RIP.search(line) for line in lines):
            return None
        return f"WARNING: {_clean_bug_text(g['what'])}"
    if rule == "bug":
        return _in(f"BUG: {_clean_bug_text(g['what'])}", _func(lines))
    if rule == "die":
        body = g["body"].rstrip(": ").split(",")[0].strip()
        what = normalise_line(body) or "Oops"
        return _in(what, _func(lines))
    return None


def classify(records: list[KmsgRecord], kernel_only: bool = True) -> list[Finding]:
    """One Finding per kernel report among the records, in log order.
    kernel_only=False also reads records user space wrote (not for runs)."""
    findings = []
    for report in _group(records, kernel_only):
        title = _title(report.header, report.lines)
        if title is None:
            continue
        g = report.header.match.groupdict()
        detail = {"report": "\n".join(report.lines), "seq": report.seq, "rip": _rip(report.lines)}
        if g.get("file"):
            detail["file"] = g["file"]
        if report.truncated:
            detail["truncated"] = True
        if report.header.rule == "panic" and findings:
            continue  # the panic that ends an oops already reported ("Fatal exception")
        findings.append(Finding(kind=report.header.kind, signature=title, summary=report.lines[0].strip(),
                                cpu=_cpu(report.header, report.lines), detail=detail))
    return findings
