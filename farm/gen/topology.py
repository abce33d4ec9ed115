"""A generated shape as a job's topology: loaded like a corpus topology,
checked statically, then driven by the stress engine through the same
small interface as a LoadedTopology (farm.bpf.loader.Stressed).

The engine's writers churn every slot through its three candidates (the
values its generation log records are candidate indices 0..2, or EMPTY);
its runners run every entry in turn. A window in which no writer touched
any slot is judged exactly (every counter against the model, and the
return value); any other window is judged churned (farm/gen/judge.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm.bpf import syscall
from farm.gen.check import StaticReport, check_static
from farm.gen.judge import judge_churned, judge_exact
from farm.gen.load import LoadedShape, load_shape
from farm.gen.model import layout
from farm.gen.shape import Shape
from farm.spec import GenerateSpec
from farm.stress.oracle import Verdict

EINTR_RETVAL = -1  # syscall.TestRun.run() of an interrupted window: neither its runs nor its return are known


@dataclass
class ShapeTopology:
    ls: LoadedShape
    label: str          # the job's name for it (GenerateSpec.label): gen-<seed>[-p<programs>]

    @property
    def shape(self) -> Shape:
        return self.ls.shape

    @property
    def pin_dir(self) -> Path:
        return self.ls.pin_dir

    @property
    def prog_fds(self) -> dict[str, int]:
        return self.ls.prog_fds

    @property
    def slots(self) -> int:
        return len(self.shape.slots)

    @property
    def indirect(self) -> bool:
        return any(not s.direct for s in self.shape.sites)

    def entries(self) -> list[tuple[int, str, int]]:
        return [(e, self.shape.programs[e].name, self.ls.entry_fd(e)) for e in self.shape.entries]

    def slot_array(self, slot: int) -> tuple[syscall.ProgArray, int]:
        return self.ls.prog_array(slot)

    def targets(self, slot: int) -> list[tuple[int, int]]:
        return [(k, self.ls.candidate_fd(slot, k)) for k in range(len(self.shape.slots[slot].candidates))]

    def universe(self, slot: int) -> int:
        return len(self.shape.slots[slot].candidates) + 1

    def counters(self) -> syscall.PerCpuCounters:
        return self.ls.counters()

    def judge(self, entry: int, delta: list[int], allowed: dict[int, set[int]], runs: int,
              retval: int) -> Verdict:
        lay = layout(self.shape)
        if retval != EINTR_RETVAL and all(len(v) == 1 for v in allowed.values()):
            state = {s: next(iter(v)) for s, v in allowed.items()}
            problems = judge_exact(self.shape, entry, state, runs, delta, retval & 0xFFFFFFFF, self.label)
        else:  # churned, or interrupted after an unknown number of runs
            problems = judge_churned(self.shape, entry, allowed, delta, self.label)
            runs = delta[lay.run(entry)]
        # tail calls taken (attempts that did not fall through); verified only when judged right
        taken = sum(delta[lay.attempt(i)] - delta[lay.fall(i)] for i in range(lay.sites))
        return Verdict(problems, 0 if problems else taken, runs)

    def check_static(self) -> StaticReport:
        return check_static(self.ls, label=self.label)

    def close(self) -> None:
        self.ls.close()


def load_generated(gen: GenerateSpec, pin_dir: Path) -> ShapeTopology:
    """Generate the shape of the job's seed and size and load it (LoadError,
    Unsupported and InfraError as load_shape raises them)."""
    return ShapeTopology(load_shape(gen.shape(), pin_dir), gen.label)
