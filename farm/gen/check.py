"""The static check of a loaded shape: for a few slot states, every entry
runs `repeat` times through BPF_PROG_TEST_RUN with nothing else touching
the slots, and every counter and the return value must equal the model's.
This is where model and kernel are compared count for count; the stress
engine adds the churned windows (farm/gen/judge.py)."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, field

from farm.bpf import syscall
from farm.gen.judge import judge_exact
from farm.gen.load import LoadedShape
from farm.gen.model import EMPTY, run_entry
from farm.gen.shape import Shape
from farm.stress.oracle import Problem

STATES = 4       # slot states per shape: all first candidates, then random ones
REPEAT = 8       # runs of each entry per state
EMPTY_ODDS = 0.25


def states(shape: Shape, count: int = STATES) -> list[dict[int, int]]:
    """The states a shape is checked in, the same on every host: every slot
    with its first candidate, then random candidates with some slots empty."""
    rng = random.Random(f"farm-gen-states:{shape.seed}:{shape.size}")
    out = [{s: 0 for s in range(len(shape.slots))}]
    for _ in range(count - 1):
        out.append({s: EMPTY if rng.random() < EMPTY_ODDS else rng.randrange(len(slot.candidates))
                    for s, slot in enumerate(shape.slots)})
    return out


@dataclass
class StaticReport:
    problems: list[Problem] = field(default_factory=list)
    runs: int = 0
    tail_calls: int = 0     # verified: taken by the kernel and predicted by the model
    checks: int = 0         # (state, entry) pairs compared


@contextmanager
def one_cpu():
    """Pin this thread to one CPU, so the per-CPU counters read are the ones
    the runs bumped; the affinity is restored after."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def check_static(ls: LoadedShape, repeat: int = REPEAT, count: int = STATES,
                 label: str | None = None) -> StaticReport:
    shape = ls.shape
    report = StaticReport()
    counters = ls.counters()
    with one_cpu() as cpu:
        for state in states(shape, count):
            ls.set_state(state)
            for entry in shape.entries:
                run = syscall.TestRun(ls.entry_fd(entry), repeat, f"{shape.name}/{shape.programs[entry].name}")
                before = counters.read_cpu(cpu)
                retval = run.run()
                delta = [a - b for a, b in zip(counters.read_cpu(cpu), before)]
                problems = judge_exact(shape, entry, state, repeat, delta, retval & 0xFFFFFFFF, label)
                report.checks += 1
                report.runs += repeat
                if problems:
                    report.problems.extend(problems)
                else:
                    report.tail_calls += run_entry(shape, entry, state).tail_calls * repeat
    return report
