"""The op sequence a writer drives one slot through: install (empty -> f),
replace (f -> f') and delete (f -> empty), cycling over the slot's targets."""
from __future__ import annotations

from farm.bpf.corpus import EMPTY, TARGETS_PER_SLOT


def op_cycle(ops, start_k: int = 0) -> list[tuple[str, int]]:
    """The periodic sequence of (op, target k or EMPTY) that starts from a
    slot holding target start_k. ops is a list of op names, or a mapping of
    op name to weight: {replace: 8, delete: 1} replaces 8 times per delete.
    Pure, so it can be tested and benchmarked."""
    weights = ops if isinstance(ops, dict) else dict.fromkeys(ops, 1)
    occupied_ops = [o for o in ("replace", "delete") for _ in range(weights.get(o, 0))]
    seq: list[tuple[str, int]] = []
    seen: dict[tuple, int] = {}
    cur, phase, next_k = start_k, 0, (start_k + 1) % TARGETS_PER_SLOT
    while True:
        state = (cur, phase, next_k)
        if state in seen:
            return seq[seen[state]:]
        seen[state] = len(seq)
        if cur == EMPTY:
            seq.append(("install", next_k))
            cur, next_k = next_k, (next_k + 1) % TARGETS_PER_SLOT
        elif not occupied_ops:
            return []  # install alone: the initial fill is all there is
        else:
            op = occupied_ops[phase % len(occupied_ops)]
            phase = (phase + 1) % len(occupied_ops)
            if op == "replace":
                seq.append(("replace", next_k))
                cur, next_k = next_k, (next_k + 1) % TARGETS_PER_SLOT
            else:
                seq.append(("delete", EMPTY))
                cur = EMPTY
