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
C_DEPTH = C_HIT + MAX_SLOTS * 16
C_NR = C_DEPTH + MAX_DEPTH + 1


def hit_index(slot: int, target_id: int) -> int:
    return C_HIT + slot * 16 + target_id


def target_name(slot: int, k: int) -> str:
    return f"t{slot}_{k}"


def target_id(slot: int, k: int) -> int:
    return slot * TARGETS_PER_SLOT + k


@dataclass(frozen=True)
class Topology:
    name: str
    shape: str          # single: one tail call per run; chain; hierarchy
    call: str           # direct (poked jump) or indirect (retpoline path)
    multi_slot: bool    # may use up to MAX_SLOTS slots
    faults: tuple[str, ...] = ()
    summary: str = ""

    @property
    def source(self) -> Path:
        return PROGS_DIR / f"{self.name}.bpf.c"

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
)}
