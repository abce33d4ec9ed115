"""The tail-call program corpus: what each topology is and what it must do.

Mirrors the counter layout of progs/farm.h (keep the two in step).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROGS_DIR = Path(__file__).parent / "progs"

MAX_SLOTS = 4
TARGETS_PER_SLOT = 3
TCC_LIMIT = 33  # MAX_TAIL_CALL_CNT
MAX_DEPTH = 63  # the corpus's own bound on chains
EMPTY = -1      # "the slot held no program"

C_ENTRIES, C_CANARY_BAD, C_FALL, C_HIT = 0, 1, 8, 16
# counted by trampoline topologies: calls of the traced subprog (by the
# subprog itself), fentry and fexit runs, runs of an fentry on a tail-call
# target's own entry (tail calls must bypass it), freplace runs
C_SUBCALL, C_FENTRY, C_FEXIT, C_TAIL_TRAMP, C_EXT, C_BODY = 2, 3, 4, 5, 6, 7
C_DEPTH = C_HIT + MAX_SLOTS * 16
C_NR = C_DEPTH + MAX_DEPTH + 1


def hit_index(slot: int, target_id: int) -> int:
    return C_HIT + slot * 16 + target_id


def target_name(slot: int, k: int) -> str:
    return f"t{slot}_{k}"


def target_id(slot: int, k: int) -> int:
    return slot * TARGETS_PER_SLOT + k


@dataclass(frozen=True)
class Hook:
    """A program attached through a trampoline to the topology's own
    programs, and the exact count the oracle expects of it in every window."""
    kind: str        # fentry | fexit | freplace
    program: str     # its program in progs/hooks.bpf.c (a head: in the topology's .ext.bpf.c)
    on: str          # whose function it traces: "all" programs, "entry" or the "targets"
    function: str    # the traced function: a subprog's name, or "" for the program itself
    counter: int     # the stats counter it bumps
    # its count equals the traced subprog's "calls", the "entries" (runs),
    # the runs of the entry's own "bodies", or "none"
    expect: str

    @property
    def attach_type(self) -> int:
        # BPF_TRACE_FENTRY, BPF_TRACE_FEXIT; an extension's link takes none
        return {"fentry": 24, "fexit": 25, "freplace": 0}[self.kind]

    @property
    def describe(self) -> str:
        if self.kind == "freplace":
            return f"freplace of {self.function}"
        where = f"{self.function} of {'every program' if self.on == 'all' else self.on}" if self.function \
            else f"the {'entry' if self.on == 'entry' else 'tail-call targets'} itself"
        return f"{self.kind} on {where}"


FENTRY_SUB = Hook("fentry", "fentry_sub", "all", "subprog_tail", C_FENTRY, "calls")
FEXIT_SUB = Hook("fexit", "fexit_sub", "all", "subprog_tail", C_FEXIT, "calls")
FENTRY_ENTRY = Hook("fentry", "fentry_main", "entry", "", C_FENTRY, "entries")
FENTRY_TARGETS = Hook("fentry", "fentry_tail_target", "targets", "", C_TAIL_TRAMP, "none")
# Heads of hosted topologies: the program that replaces (freplace) or traces
# (fentry) the tc entry and starts the chain (farm.bpf.hooks.attach_hosted).
FREPLACE_HEAD = Hook("freplace", "ext_head", "entry", "subprog_ext", C_EXT, "entries")
FENTRY_HEAD = Hook("fentry", "ext_head", "entry", "", C_FENTRY, "bodies")


@dataclass(frozen=True)
class Topology:
    name: str
    shape: str          # single: one tail call per run; chain; hierarchy
    call: str           # direct (poked jump) or indirect (retpoline path)
    multi_slot: bool    # may use up to MAX_SLOTS slots
    faults: tuple[str, ...] = ()
    summary: str = ""
    hooks: tuple[Hook, ...] = ()
    selftest: str = ""  # the kernel selftest (prog_tests/tailcalls.c) it stands for
    # a hosted topology: its head (freplace or fentry on the tc entry) comes
    # from <name>.ext.bpf.c, and its targets too when the tc object has none
    head: Hook | None = None
    # why running it can crash an unfixed kernel ("" if it cannot): such a
    # topology runs only where crashes are allowed (farm/crashgate.py)
    crash_risk: str = ""

    @property
    def source(self) -> Path:
        return PROGS_DIR / f"{self.name}.bpf.c"

    @property
    def ext_source(self) -> Path:
        return PROGS_DIR / f"{self.name}.ext.bpf.c"

    @property
    def judged_hooks(self) -> tuple[Hook, ...]:
        return self.hooks + ((self.head,) if self.head else ())

    @property
    def needs_trampolines(self) -> bool:
        return bool(self.judged_hooks)

    @property
    def expected_depth(self) -> int | None:
        """Tail calls per run when the slot is never empty."""
        return None if self.shape == "single" else TCC_LIMIT


TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (
    Topology("direct-main", "single", "direct", True,
             summary="entry tail-calls slot k with a constant key"),
    Topology("direct-subprog", "single", "direct", True,
             summary="entry -> subprog -> constant-key tail call; caller's stack intact"),
    Topology("indirect", "single", "indirect", True,
             summary="key from map memory: the indirect (retpoline) path"),
    Topology("chain-limit-direct", "chain", "direct", False, faults=("short-chain",),
             summary="target tail-calls itself: exactly 33 tail calls"),
    Topology("chain-limit-indirect", "chain", "indirect", False,
             summary="as chain-limit-direct through the indirect path"),
    Topology("bpf2bpf-count", "chain", "direct", False,
             summary="bpf2bpf call, then a tail call chain: 33"),
    Topology("hierarchy", "hierarchy", "direct", False,
             summary="entry calls a tail-calling subprog twice: 33 tail calls, 34 runs"),
    Topology("big-stack", "single", "direct", False, faults=("break-canary",),
             summary="256-byte frames with canaries around a tail call from a subprog"),
    Topology("unaligned-stack", "chain", "direct", False,
             summary="odd stack sizes around bpf2bpf calls and a chain: 33, data intact"),
    # Trampolines on the tail-calling subprog must neither reset nor leak the
    # tail-call counter ("bpf, x64: Fix tailcall infinite loop", 6.6; "Fix
    # tailcall hierarchy", 6.10): still exactly 33 tail calls, and every
    # fentry/fexit runs once per call of the traced function.
    Topology("fentry", "chain", "direct", False, hooks=(FENTRY_SUB,),
             selftest="tailcall_bpf2bpf_fentry",
             summary="bpf2bpf-count with fentry on subprog_tail: 33, fentry once per call"),
    Topology("fexit", "chain", "direct", False, hooks=(FEXIT_SUB,), faults=("skip-count",),
             selftest="tailcall_bpf2bpf_fexit",
             summary="bpf2bpf-count with fexit on subprog_tail: 33, fexit once per call"),
    Topology("fentry-fexit", "chain", "direct", False, hooks=(FENTRY_SUB, FEXIT_SUB),
             selftest="tailcall_bpf2bpf_fentry_fexit",
             summary="bpf2bpf-count with fentry and fexit on subprog_tail"),
    Topology("fentry-entry", "chain", "direct", False, hooks=(FENTRY_ENTRY, FENTRY_TARGETS),
             selftest="tailcall_bpf2bpf_fentry_entry",
             summary="fentry on the entry (once per run) and on every target (never: tail calls bypass it)"),
    Topology("hierarchy-fentry", "hierarchy", "direct", False, hooks=(FENTRY_SUB,),
             selftest="tailcall_bpf2bpf_hierarchy_fentry",
             summary="hierarchy with fentry on subprog_tail: 33 tail calls, fentry twice per program run"),
    Topology("hierarchy-fexit", "hierarchy", "direct", False, hooks=(FEXIT_SUB,),
             selftest="tailcall_bpf2bpf_hierarchy_fexit",
             summary="hierarchy with fexit on subprog_tail"),
    Topology("hierarchy-fentry-fexit", "hierarchy", "direct", False, hooks=(FENTRY_SUB, FEXIT_SUB),
             selftest="tailcall_bpf2bpf_hierarchy_fentry_fexit",
             summary="hierarchy with fentry and fexit on subprog_tail"),
    # Tail calls inside programs that are themselves trampolines or
    # extensions: their prog_arrays hold programs of their own kind.
    Topology("hierarchy-fentry-entry", "hierarchy", "direct", False, head=FENTRY_HEAD,
             selftest="tailcall_bpf2bpf_hierarchy_fentry_entry",
             summary="an fentry on the entry runs the hierarchy among fentry programs: 33, fentry once per run"),
    Topology("freplace", "chain", "direct", False, head=FREPLACE_HEAD, faults=("skip-count",),
             selftest="tailcall_freplace",
             summary="entry's subprog replaced by freplace, which starts a chain of tc targets: 33"),
    Topology("hierarchy-freplace", "hierarchy", "direct", False, head=FREPLACE_HEAD,
             selftest="tailcall_bpf2bpf_hierarchy_freplace",
             summary="the freplace of entry's subprog starts the hierarchy among tc targets: 33"),
)}
