"""The oracle: judges one runner window from counter deltas and the slots'
allowed sets. Pure: the same inputs always give the same findings.

A window is one BPF_PROG_TEST_RUN with a large repeat on one CPU, between
monotonic times t0 and t1. Every target counts its executions per (slot it
was reached through, target id); entries, fall-throughs, chain depths and
canary failures are counted too (progs/farm.h).
"""
from __future__ import annotations

from dataclasses import dataclass

from farm.bpf.corpus import (C_BODY, C_CANARY_BAD, C_DEPTH, C_ENTRIES, C_FALL, C_SUBCALL, EMPTY, MAX_DEPTH,
                             TARGETS_PER_SLOT, Topology, hit_index, target_id)
from farm.result import Finding
from farm.spec import JobSpec


@dataclass
class Problem:
    """One thing a window got wrong; the engine turns it into a Finding."""
    kind: str
    topology: str
    slot: int | None
    summary: str
    detail: dict

    def key(self) -> tuple:
        """What makes two problems the same one: merged over windows and CPUs."""
        return (self.kind, self.topology, self.slot, str(self.detail.get("observed_target")))


@dataclass
class ProblemRecord:
    """A problem seen in one or more windows of one runner."""
    first: Problem
    cpu: int
    window: tuple[float, float]  # seconds since stress start
    windows: int = 1
    count: int = 0


@dataclass
class Verdict:
    problems: list[Problem]
    tail_calls: int  # tail calls executed in the window, every one judged
    runs: int        # entry executions


def _fmt(values) -> list:
    """Target ids in order, "empty" last."""
    return sorted(v for v in values if v != EMPTY) + (["empty"] if EMPTY in values else [])


def judge_window(topo: Topology, label: str, slots: int, delta: list[int],
                 allowed: dict[int, set[int]]) -> Verdict:
    """allowed[slot] is every target id (or EMPTY) the slot held in the window."""
    problems: list[Problem] = []

    def problem(kind, slot, summary, **detail):
        problems.append(Problem(kind, label, slot, summary,
                                {"topology": label, "slot": slot, **detail}))

    n_ids = slots * TARGETS_PER_SLOT
    hits_total = 0
    for slot in range(slots):
        ok = allowed[slot]
        for tid in range(n_ids):
            n = delta[hit_index(slot, tid)]
            if not n:
                continue
            hits_total += n
            if tid not in ok:
                owner = tid // TARGETS_PER_SLOT
                where = "never in this slot" if owner == slot else f"belongs to slot {owner}"
                problem("wrong-target", slot,
                        f"{label}: slot {slot} ran target {tid} ({where}) {n} times",
                        observed_target=tid, count=n, allowed=_fmt(ok))
        falls = delta[C_FALL + slot]
        if falls and EMPTY not in ok and topo.shape != "hierarchy":
            problem("missed-tail-call", slot,
                    f"{label}: {falls} fall-throughs from slot {slot}, which was never empty",
                    count=falls, allowed=_fmt(ok))

    entries = delta[C_ENTRIES]
    depth_hist = {d: delta[C_DEPTH + d] for d in range(MAX_DEPTH + 1) if delta[C_DEPTH + d]}
    if topo.shape == "single":
        accounted = hits_total + sum(delta[C_FALL + s] for s in range(slots))
    else:
        expected = topo.expected_depth
        bad = {d: n for d, n in depth_hist.items()
               if d > expected or (d < expected and EMPTY not in allowed[0])}
        if bad:
            problem("tail-call-count", 0,
                    f"{label}: runs made {_hist_text(bad)} tail calls, expected exactly {expected}",
                    expected=expected, observed=bad, allowed=_fmt(allowed[0]))
        chain_calls = sum(d * n for d, n in depth_hist.items())
        if chain_calls != hits_total:
            problem("tail-call-count", 0,
                    f"{label}: {hits_total} target runs but chains report {chain_calls}",
                    target_runs=hits_total, chain_calls=chain_calls)
        if topo.shape == "hierarchy":
            accounted = sum(depth_hist.values())
        else:
            accounted = delta[C_FALL] + sum(n for d, n in depth_hist.items() if d >= 1)
    if accounted != entries:
        problem("wrong-target", None,
                f"{label}: {entries - accounted} of {entries} runs went to a program "
                f"outside the corpus", entries=entries, accounted=accounted,
                observed_target="outside corpus",
                allowed={s: _fmt(allowed[s]) for s in range(slots)})
    if delta[C_CANARY_BAD]:
        problem("stack-corruption", None,
                f"{label}: {delta[C_CANARY_BAD]} runs found their stack canaries changed",
                count=delta[C_CANARY_BAD])
    _judge_hooks(topo, label, delta, entries, problem)
    return Verdict(problems, hits_total, entries)


def _judge_hooks(topo: Topology, label: str, delta: list[int], entries: int, problem) -> None:
    """Every trampoline ran exactly as often as what it traces, on this CPU
    in this window, whatever the writers did to the slots meanwhile."""
    calls = delta[C_SUBCALL]
    hooks = topo.judged_hooks
    if any(h.expect == "calls" for h in hooks) and calls < entries:
        # every run calls the traced subprog at least once: fewer calls
        # would make the hooks' counts vacuous
        problem("trampoline-count", None,
                f"{label}: subprog_tail counted {calls} calls in {entries} runs (at least one per run)",
                observed_target="subprog_tail", expected=entries, observed=calls)
    for hook in hooks:
        expected = {"calls": calls, "entries": entries, "bodies": delta[C_BODY], "none": 0}[hook.expect]
        observed = delta[hook.counter]
        if observed != expected:
            what = {"calls": "calls of subprog_tail", "entries": "runs", "bodies": "runs of the entry",
                    "none": "(tail calls bypass it)"}[hook.expect]
            problem("trampoline-count", None,
                    f"{label}: {hook.describe} ran {observed} times, expected {expected} {what}",
                    observed_target=hook.program, hook=hook.program, expected=expected, observed=observed)


def _hist_text(hist: dict[int, int]) -> str:
    return ", ".join(f"{d} ({n}x)" for d, n in sorted(hist.items()))


def slot_universe(slot: int) -> set[int]:
    """Everything a slot may ever legitimately hold."""
    return {target_id(slot, k) for k in range(TARGETS_PER_SLOT)} | {EMPTY}


def merge_problems(records: list[ProblemRecord], spec: JobSpec) -> list[Finding]:
    """One finding per (kind, topology, slot, observed), merged over CPUs."""
    merged: dict[tuple, tuple[ProblemRecord, list[int], int, int]] = {}
    for r in records:
        p = r.first
        key = p.key()
        if key in merged:
            first, cpus, windows, count = merged[key]
            merged[key] = (first, cpus + [r.cpu], windows + r.windows, count + r.count)
        else:
            merged[key] = (r, [r.cpu], r.windows, r.count)
    findings = []
    for (kind, label, slot, _), (r, cpus, windows, count) in merged.items():
        topo = label.split("+")[0]
        same = [t for t in spec.topologies if t.label == topo]
        reproduce = {"job": spec.name, "topology": topo}
        if same and same[0].generate:  # a generated shape: its seed and size make it again
            reproduce["generate"] = same[0].generate.reproduce()
        else:
            reproduce |= {"fault": next((t.fault for t in same if t.fault), None),
                          "slots": same[0].slots if same else None}
        findings.append(Finding(
            kind, f"{kind} in {topo}", r.first.summary, cpu=r.cpu,
            detail={**r.first.detail, "window_s": [round(x, 6) for x in r.window],
                    "cpus": sorted(set(cpus)), "windows": windows, "occurrences": count,
                    "reproduce": {**reproduce, "cpu": r.cpu, "repeat": spec.repeat}}))
    return findings
