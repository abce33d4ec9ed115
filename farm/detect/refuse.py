"""Refuse checks: shapes the kernel selftests expect the kernel to reject.

Every case builds its shape up to one forbidden step (a program load, a
prog_array update or a link) and tries it:

    refused      the kernel said no, for the expected reason: a pass
    accepted     the kernel took it: an `accepted-unsafe` finding; a case
                 whose acceptance can crash an unfixed kernel then runs the
                 shape once, in a child with a timeout (a hang is a finding)
    unsupported  the shape cannot even be set up here (trampolines refused
                 with EPERM under lockdown, a kfunc this kernel lacks) or the
                 kernel refused for another reason: named in
                 result.unsupported as refuse:<case>, never a pass

The sources are in farm/bpf/progs/refuse/; whatever a case creates
(programs, maps, links pinned under the run's pin dir) goes on every path.
"""
from __future__ import annotations

import errno as errno_mod
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from farm.bpf import syscall
from farm.bpf.corpus import PROGS_DIR
from farm.bpf.libbpf import BpfObject, Unsupported
from farm.bpf.loader import remove_pins
from farm.bpf.toolchain import LoadError
from farm.errors import InfraError
from farm.result import Finding

REFUSE_DIR = PROGS_DIR / "refuse"
UNSAFE_RUN_TIMEOUT_S = 20.0
# test-only: FARM_REFUSE_FAULT=allowed compiles every case with
# -DFARM_REFUSE_FAULT_ALLOWED; a case with such a variant then builds a
# shape every kernel accepts, which must come out as accepted-unsafe
FAULT_ENV = "FARM_REFUSE_FAULT"
FAULTS = ("allowed",)


class Refused(Exception):
    """The forbidden step failed: errno and the verifier's log, if any."""

    def __init__(self, err: int, log: str, text: str):
        super().__init__(text)
        self.errno, self.log, self.text = err, log, text


@dataclass(frozen=True)
class RefuseCase:
    name: str
    selftest: str      # the kernel selftest it mirrors
    refused: str       # what the kernel must refuse
    source: str        # its object in progs/refuse/
    attempt: Callable  # (Scope) -> None: builds the shape, tries the forbidden step
    expect: tuple[str, ...]  # a refusal counts only if its errno name or log holds one of these
    kfuncs: tuple[str, ...] = ()  # kernel functions the shape calls
    crash_risk: str = ""  # why accepting it can crash an unfixed kernel; "" if it cannot
    kernels: str = ""     # which kernels are expected to refuse it (docs)


@dataclass
class Outcome:
    case: str
    status: str   # refused | accepted | unsupported
    reason: str   # the kernel's own words: errno and the verifier's line
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"case": self.case, "status": self.status, "reason": self.reason,
                "findings": [f.signature for f in self.findings]}


class Scope:
    """What one case created, closed and unpinned in reverse on every path."""

    def __init__(self, case: RefuseCase, pin_dir: Path, defines: tuple[str, ...]):
        from farm.bpf.loader import compile_source
        self.case, self.pin_dir = case, pin_dir
        self.obj_path = compile_source(REFUSE_DIR / case.source, defines=defines)
        self._objs: list[BpfObject] = []
        self._fds: list[int] = []
        self.unsafe_run: Callable[[], None] | None = None  # the shape, run once if accepted
        self.accepted = False  # the forbidden step went through

    def load(self, program: str, target: tuple[int, str] | None = None,
             share: dict[str, int] | None = None) -> BpfObject:
        """One program of the case's object, loaded (a setup step: any
        refusal here means the case cannot be set up)."""
        obj = BpfObject(self.obj_path, program, program)  # the outcome names the case
        self._objs.append(obj)
        if target:
            obj.target(*target)
        for name, fd in (share or {}).items():
            obj.share_map(name, fd)
        obj.load()
        return obj

    def link(self, prog_fd: int, attach_type: int, name: str, target: int = 0) -> int:
        """A BPF link, pinned under the case's pin dir (links/), so the run's
        pin guard removes it should farm die before closing it."""
        fd = syscall.link_create(prog_fd, attach_type, f"refuse:{self.case.name}/{name}", target)
        self._fds.append(fd)
        links = self.pin_dir / "links"
        links.mkdir(parents=True, exist_ok=True)
        syscall.obj_pin(fd, str(links / name))
        return fd

    def forbidden(self, what: str, step: Callable[[], object]) -> None:
        """The step the kernel must refuse; its refusal raises Refused."""
        try:
            step()
            self.accepted = True
        except Unsupported:
            raise
        except LoadError as e:
            raise Refused(_errno_in(str(e)), e.log, f"{what}: {e}") from None
        except syscall.BpfError as e:
            raise Refused(e.errno, "", f"{what}: {e}") from None

    def close(self) -> None:
        for fd in reversed(self._fds):  # links first: they hold the programs
            os.close(fd)
        self._fds.clear()
        for obj in reversed(self._objs):
            obj.close()
        self._objs.clear()
        remove_pins(self.pin_dir)


def _errno_in(text: str) -> int:
    m = re.search(r"\b(E[A-Z]+)\b", text)
    return getattr(errno_mod, m.group(1), 0) if m else 0


# ---- the shapes ---------------------------------------------------------

def _run_entry(scope: Scope, entry_fd: int, target_fd: int, jmp_table_fd: int, repeat: int) -> Callable[[], None]:
    """The accepted shape, run: a plain target in the entry's slot 0, then
    BPF_PROG_TEST_RUN of the entry."""
    def run() -> None:
        syscall.ProgArray(jmp_table_fd).install(0, target_fd)
        syscall.TestRun(entry_fd, repeat, scope.case.name).run()
    return run


def _verifier_case(scope: Scope) -> None:
    """tailcall_fail.c: the entry program itself must not load."""
    holder: dict[str, BpfObject] = {}

    def load_entry() -> None:
        holder["entry"] = scope.load("entry")
    scope.forbidden("loading entry", load_entry)
    # accepted: the same object's plain target takes slot 0, and the entry
    # runs twice (the second run finds whatever the first one left held)
    entry = holder["entry"]
    target = scope.load("plain_target", share={"jmp_table": entry.map_fd("jmp_table")})
    scope.unsafe_run = _run_entry(scope, entry.prog_fd, target.prog_fd, entry.map_fd("jmp_table"), 2)


def _across_prog_types(scope: Scope) -> None:
    entry = scope.load("entry")
    table = entry.map_fd("jmp_table")
    # the control of the control: a program of the owner's own type goes in
    syscall.ProgArray(table).install(0, scope.load("same_type").prog_fd)
    other = scope.load("other_type")
    scope.forbidden("an xdp program into a tc program's prog_array",
                    lambda: syscall.ProgArray(table).install(0, other.prog_fd))


EXT_ATTACH = 0  # an EXT (freplace) link: its target was fixed at load


def _freplace_then_prog_array(scope: Scope) -> None:
    entry = scope.load("entry")
    ext = scope.load("ext", target=(entry.prog_fd, "subprog_tc"))
    scope.link(ext.prog_fd, EXT_ATTACH, "ext")
    table = ext.map_fd("jmp_table")
    scope.forbidden("entry, extended by freplace, into the freplace's prog_array",
                    lambda: syscall.ProgArray(table).install(0, entry.prog_fd))
    scope.unsafe_run = lambda: syscall.TestRun(entry.prog_fd, 1, scope.case.name).run()


def _prog_array_then_freplace(scope: Scope) -> None:
    entry = scope.load("entry")
    ext = scope.load("ext", target=(entry.prog_fd, "subprog_tc"))
    table = ext.map_fd("jmp_table")
    syscall.ProgArray(table).install(0, entry.prog_fd)
    scope.forbidden("freplace attached to entry, a prog_array member",
                    lambda: scope.link(ext.prog_fd, EXT_ATTACH, "ext"))
    scope.unsafe_run = lambda: syscall.TestRun(entry.prog_fd, 1, scope.case.name).run()


FENTRY_ATTACH = 24  # BPF_TRACE_FENTRY


def _across_hooks(scope: Scope) -> None:
    a = scope.load("target_a")
    b = scope.load("target_b")
    fa = scope.load("fa", target=(a.prog_fd, "target_a"))
    table = fa.map_fd("jmp_table")
    # the control: a program traced onto the same function goes in (and out)
    same = scope.load("fsame", target=(a.prog_fd, "target_a"))
    syscall.ProgArray(table).install(0, same.prog_fd)
    syscall.ProgArray(table).delete(0)
    # fb either fails to load sharing fa's table, or fails to go into it
    fb = {}

    def load_and_install() -> None:
        fb["obj"] = scope.load("fb", target=(b.prog_fd, "target_b"))
        syscall.ProgArray(table).install(0, fb["obj"].prog_fd)
    scope.forbidden("fentry on an xdp program into the prog_array of fentry on a tc program", load_and_install)


SPIN_RISK = "the lock stays held after the tail call: the next run spins on it forever, a hard lockup"
RCU_RISK = "the RCU read-side section is never closed: RCU stalls, then warnings or a panic"
PREEMPT_RISK = "preemption stays disabled after the run: scheduling while atomic"
FREPLACE_RISK = ("entry -> freplace -> tail call -> entry never ends on a kernel that resets the "
                 "tail-call count in freplace programs: a soft lockup or a kernel stack overflow")
VERIFIER_KERNELS = "every kernel farm knows"

CASES: dict[str, RefuseCase] = {c.name: c for c in (
    RefuseCase("tail-call-under-spin-lock", "tailcall_fail.c reject_tail_call_spin_lock",
               "a tail call while a bpf_spin_lock is held", "spin-lock.bpf.c", _verifier_case,
               ("function calls are not allowed while holding a lock",),
               crash_risk=SPIN_RISK, kernels="every kernel with bpf_spin_lock (5.1 on): 6.1, 6.12, 6.18"),
    RefuseCase("tail-call-in-rcu-read-lock", "tailcall_fail.c reject_tail_call_rcu_lock",
               "a tail call inside bpf_rcu_read_lock()", "rcu-read-lock.bpf.c", _verifier_case,
               ("tail_call cannot be used inside bpf_rcu_read_lock-ed region",),
               kfuncs=("bpf_rcu_read_lock", "bpf_rcu_read_unlock"), crash_risk=RCU_RISK,
               kernels="6.12.107 and 6.18 refuse; kernels without the kfunc (6.1) cannot try it"),
    RefuseCase("tail-call-preempt-disabled", "tailcall_fail.c reject_tail_call_preempt_lock",
               "a tail call after bpf_preempt_disable()", "preempt-disabled.bpf.c", _verifier_case,
               ("tail_call cannot be used inside bpf_preempt_disable-ed region",),
               kfuncs=("bpf_preempt_disable", "bpf_preempt_enable"), crash_risk=PREEMPT_RISK,
               kernels="6.12.107 and 6.18 refuse; kernels without the kfunc (before 6.10) cannot try it"),
    RefuseCase("tail-call-leaks-reference", "tailcall_fail.c reject_tail_call_ref",
               "a tail call holding a socket reference from bpf_sk_lookup_tcp", "leaks-reference.bpf.c",
               _verifier_case, ("tail_call would lead to reference leak",),
               kernels="every kernel with bpf_sk_lookup_tcp (4.20 on): 6.1, 6.12, 6.18"),
    RefuseCase("freplace-target-into-prog-array", "tailcalls.c test_tailcall_freplace",
               "a program extended by freplace going into a prog_array", "freplace.bpf.c",
               _freplace_then_prog_array, ("EBUSY",), crash_risk=FREPLACE_RISK,
               kernels="6.13 on (\"bpf: Prevent tailcall infinite loop caused by freplace\"); "
                       "Debian's 6.1.0-57 and 6.12.107 have the backport"),
    RefuseCase("prog-array-member-extended-by-freplace", "tailcalls.c test_tailcall_freplace",
               "a freplace link to a program that is in a prog_array", "freplace.bpf.c",
               _prog_array_then_freplace, ("EBUSY",), crash_risk=FREPLACE_RISK,
               kernels="6.13 on (the same fix); Debian's 6.1.0-57 and 6.12.107 have the backport"),
    RefuseCase("tail-call-across-hooks", "\"bpf: Prevent tail call between progs attached to different hooks\"",
               "fentry programs of different traced prototypes sharing a prog_array", "hooks.bpf.c",
               _across_hooks, ("EINVAL",),
               kernels="kernels with that fix (6.17 on, and backports: Debian's 6.1.0-57 and 6.12.107)"),
    RefuseCase("tail-call-across-prog-types", "the prog_array owner check (control)",
               "an xdp program into a prog_array owned by a tc program", "prog-types.bpf.c",
               _across_prog_types, ("EINVAL",), kernels=VERIFIER_KERNELS),
)}


def crash_risks() -> list[tuple[str, str]]:
    """(refuse:<case>, why) of every case whose acceptance can crash an unfixed kernel."""
    return [(f"refuse:{c.name}", c.crash_risk) for c in CASES.values() if c.crash_risk]


# ---- trying them --------------------------------------------------------

def _kernel_symbols(names: set[str]) -> set[str]:
    """Which of these functions this kernel has (kfuncs are in kallsyms)."""
    found = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                name = line.rstrip("\n").split(" ", 2)[-1].split("\t")[0]
                if name in names:
                    found.add(name)
    except OSError as e:
        raise InfraError(f"cannot read /proc/kallsyms: {e.strerror}") from None
    return found


def _reason(err: int, log: str, text: str) -> str:
    """The kernel's own words: its errno and the verifier's last line that
    is not its statistics."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith(("processed ", "verification time"))]
    name = errno_mod.errorcode.get(err, str(err)) if err else ""
    return f"{name}: {lines[-1]}" if lines else (text if not name or name in text else f"{name}: {text}")


def _fault_defines() -> tuple[str, ...]:
    fault = os.environ.get(FAULT_ENV, "")
    if not fault:
        return ()
    if fault not in FAULTS:
        raise InfraError(f"{FAULT_ENV}: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
    return (f"-DFARM_REFUSE_FAULT_{fault.upper()}",)


def try_case(case: RefuseCase, pin_dir: Path, have: set[str], defines: tuple[str, ...] = ()) -> Outcome:
    """One case, start to cleanup."""
    missing = [k for k in case.kfuncs if k not in have]
    if missing:
        return Outcome(case.name, "unsupported", f"this kernel has no kfunc {', '.join(missing)}")
    scope = Scope(case, pin_dir, defines)
    try:
        try:
            case.attempt(scope)
        except Refused as r:
            reason = _reason(r.errno, r.log, r.text)
            haystack = f"{errno_mod.errorcode.get(r.errno, '')}\n{r.log}\n{r.text}"
            if any(e in haystack for e in case.expect):
                return Outcome(case.name, "refused", reason)
            return Outcome(case.name, "unsupported", f"refused for another reason than {case.expect[0]!r}: {reason}")
        except (Unsupported, LoadError, syscall.BpfError) as e:
            if scope.accepted:  # only the unsafe run's own setup failed: still accepted
                return _accepted(case, None, f"accepted; its shape could not be run: {e}")
            if isinstance(e, Unsupported):
                return Outcome(case.name, "unsupported", str(e))
            return Outcome(case.name, "unsupported", f"cannot be set up here: {e}")  # a setup step
        return _accepted(case, scope.unsafe_run if case.crash_risk else None, "accepted")
    finally:
        scope.close()


def _accepted(case: RefuseCase, unsafe_run: Callable[[], None] | None, reason: str) -> Outcome:
    findings = [Finding("accepted-unsafe", f"accepted-unsafe: {case.name}",
                        f"the kernel accepted {case.refused} ({case.selftest} expects a refusal)",
                        detail={"case": case.name, "selftest": case.selftest})]
    if unsafe_run:
        findings += _run_unsafe(case, unsafe_run)
    return Outcome(case.name, "accepted", reason, findings)


def _run_unsafe(case: RefuseCase, run: Callable[[], None], timeout_s: float = UNSAFE_RUN_TIMEOUT_S) -> list[Finding]:
    """Run the accepted shape once in a forked child; farm waits at most
    timeout_s. A child that never comes back is a hang finding: a process
    stuck in the kernel cannot be killed or reaped, so it is left behind."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run()
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) == 0:
                return []
            return [Finding("accepted-unsafe", f"accepted-unsafe: {case.name}",
                            f"running the accepted shape failed in its child (exit "
                            f"{os.waitstatus_to_exitcode(status)})", detail={"case": case.name})]
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    done, _ = os.waitpid(pid, os.WNOHANG)
    stuck = "" if done else (f"; process {pid} is stuck in the kernel and cannot be reaped "
                             "(SIGKILL sent; it stays until the kernel lets it go)")
    return [Finding("hang", f"hang: refuse:{case.name}",
                    f"running the accepted shape of {case.name} did not come back within {timeout_s:g}s{stuck}",
                    detail={"case": case.name, "pid": pid, "reaped": bool(done)})]


def try_cases(pin_dir: Path, cases: dict[str, RefuseCase] | None = None) -> list[Outcome]:
    """Every case, in order, each under pin_dir/<case>/ (gone afterwards)."""
    cases = CASES if cases is None else cases
    defines = _fault_defines()
    have = _kernel_symbols({k for c in cases.values() for k in c.kfuncs})
    pin_dir.mkdir(parents=True, exist_ok=True)
    try:
        return [try_case(c, pin_dir / c.name, have, defines) for c in cases.values()]
    finally:
        remove_pins(pin_dir)
