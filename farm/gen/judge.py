"""Judging a generated shape's counters against the model. Pure.

Two kinds of evidence:
- exact: the slots held one state for the whole window (the static check,
  or a window no writer touched): every counter must equal the model's
  per-run counts times the runs, and the return value must match;
- churned: slot i held any of allowed[i] during the window, so each
  attempt may have seen any of them. Then no program outside the model's
  reachable set may run, every taken tail call must have started exactly
  one program of the shape, and no run may take more than 33.
"""
from __future__ import annotations

from farm.gen.model import (EMPTY, G_CANARY, G_GUARD, TCC_LIMIT, Layout, Outcome, hook_expects, layout,
                            reachable, run_entry)
from farm.gen.shape import Shape
from farm.stress.oracle import Problem


def _taken(lay: Layout, delta: list[int]) -> int:
    return sum(delta[lay.attempt(i)] - delta[lay.fall(i)] for i in range(lay.sites))


def _target_runs(shape: Shape, lay: Layout, delta: list[int]) -> int:
    return sum(delta[lay.run(p)] for p, f in enumerate(shape.programs) if f.kind != "entry")


def _collector(label: str, base: dict):
    """The problems of one window, and how to add one (with the window's
    common detail: seed, entry, runs, shape)."""
    problems: list[Problem] = []

    def problem(kind, summary, **detail):
        problems.append(Problem(kind, label, None, f"{label}: {summary}", {**base, **detail}))
    return problems, problem


def _judge_canaries(delta: list[int], runs: int, ename: str, problem) -> None:
    if delta[G_CANARY]:
        problem("stack-corruption", f"{delta[G_CANARY]} canary checks failed in {runs} runs of {ename}",
                count=delta[G_CANARY])


def _state_text(state: dict[int, int]) -> str:
    return ",".join("-" if state.get(s, EMPTY) == EMPTY else str(state[s]) for s in sorted(state))


def judge_exact(shape: Shape, entry: int, state: dict[int, int], runs: int, delta: list[int],
                retval: int | None = None, label: str | None = None) -> list[Problem]:
    """`runs` runs of `entry` with the slots in `state` the whole time."""
    label = label or shape.name
    lay = layout(shape)
    want: Outcome = run_entry(shape, entry, state)
    expected = [c * runs for c in want.counters]
    ename = shape.programs[entry].name
    base = {"topology": label, "seed": shape.seed, "entry": ename, "state": _state_text(state),
            "runs": runs, "shape": shape.describe()}
    problems, problem = _collector(label, base)
    _judge_canaries(delta, runs, ename, problem)
    taken = _taken(lay, delta)
    if taken != want.tail_calls * runs or delta[G_GUARD]:
        per_run = taken / runs if runs else 0
        problem("tail-call-count",
                f"{ename} took {per_run:g} tail calls per run, the model says {want.tail_calls}"
                + (f"; the depth guard stopped {delta[G_GUARD]} attempts" if delta[G_GUARD] else ""),
                observed_target=f"{ename}:{_state_text(state)}", expected=want.tail_calls, observed=per_run,
                guard=delta[G_GUARD])
    wrong = {f.name: (delta[lay.run(p)], expected[lay.run(p)]) for p, f in enumerate(shape.programs)
             if delta[lay.run(p)] != expected[lay.run(p)]}
    if wrong and not problems:
        extra = sorted(n for n, (got, exp) in wrong.items() if got > exp)
        problem("wrong-target", "programs ran other than the model says: "
                + ", ".join(f"{n} {got} (expected {exp})" for n, (got, exp) in sorted(wrong.items())[:6]),
                observed_target=",".join(extra) or "fewer runs", programs=wrong)
    _judge_hooks(shape, lay, delta, problem)
    others = [i for i in range(lay.size) if delta[i] != expected[i]]
    if others and not problems:
        problem("tail-call-count", f"{len(others)} attempt, fall or call counters differ from the model",
                observed_target=f"{ename}:{_state_text(state)}", counters={i: (delta[i], expected[i]) for i in others[:16]})
    if retval is not None and retval != want.retval and not problems:
        problem("wrong-return", f"{ename} returned {retval:#x}, the model says {want.retval:#x}",
                observed_target=f"{retval:#x}", expected=want.retval, observed=retval)
    return problems


def judge_churned(shape: Shape, entry: int, allowed: dict[int, set[int]], delta: list[int],
                  label: str | None = None) -> list[Problem]:
    """A window of `entry` while slot i held any of allowed[i]."""
    label = label or shape.name
    lay = layout(shape)
    ename = shape.programs[entry].name
    runs = delta[lay.run(entry)]
    base = {"topology": label, "seed": shape.seed, "entry": ename, "runs": runs, "shape": shape.describe(),
            "allowed": {s: sorted(v) for s, v in allowed.items()}}
    problems, problem = _collector(label, base)
    _judge_canaries(delta, runs, ename, problem)
    progs, subs = reachable(shape, entry, allowed)
    stray = [f.name for p, f in enumerate(shape.programs) if delta[lay.run(p)] and p not in progs]
    stray += [f.name for s, f in enumerate(shape.subs) if delta[lay.call(s)] and s not in subs]
    if stray:
        problem("wrong-target", f"{', '.join(stray)} ran, which no slot the writers filled could reach from {ename}",
                observed_target=",".join(stray))
    taken, started = _taken(lay, delta), _target_runs(shape, lay, delta)
    if taken != started:
        problem("wrong-target", f"{taken} tail calls were taken but {started} programs of the shape started",
                observed_target="outside the shape", taken=taken, started=started)
    if taken > TCC_LIMIT * runs or delta[G_GUARD]:
        problem("tail-call-count", f"{taken} tail calls in {runs} runs of {ename}: more than {TCC_LIMIT} per run"
                + (f"; the depth guard stopped {delta[G_GUARD]} attempts" if delta[G_GUARD] else ""),
                observed_target=f"{ename}:limit", taken=taken, guard=delta[G_GUARD])
    _judge_hooks(shape, lay, delta, problem)
    return problems


def _judge_hooks(shape: Shape, lay: Layout, delta: list[int], problem) -> None:
    """Every trampoline ran exactly as often as what it traces, in this
    window on this CPU, whatever the slots held meanwhile."""
    for h, hook in enumerate(shape.hooks):
        want, got = hook_expects(shape, lay, h, delta), delta[lay.hook(h)]
        if got != want:
            problem("trampoline-count", f"{hook.kind} on {hook.func} ran {got} times, expected {want}",
                    observed_target=f"{hook.kind}:{hook.func}", hook=hook.func, expected=want, observed=got)
