"""`farm fuzz` on this host: seed after seed, a generated shape is compiled,
loaded and checked count for count against the model (check.py); a failing
seed is shrunk (shrink.py) while its failing run still fails the same way,
and exported as a reproducer that runs without farm (export.py).

Compiling is most of a seed's cost (two clang runs: the include check and
the build), so the next seeds compile in threads while this one runs; the
kernel work stays on this thread, pinned to one CPU while it counts.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from farm.bpf import syscall
from farm.bpf.loader import ensure_bpffs, remove_pins
from farm.bpf.pins import PinGuard, run_pin_dir, sweep_stale
from farm.bpf.toolchain import LoadError, require_tool
from farm.errors import EXIT_FINDINGS, EXIT_INFRA, EXIT_PASS, BadInput, FarmError, InfraError
from farm.gen import export
from farm.gen.check import REPEAT, StaticReport, check_static, one_cpu, states
from farm.gen.judge import judge_exact
from farm.gen.load import LoadedShape, compile_shape, load_shape
from farm.gen.model import EMPTY, layout, run_entry
from farm.gen.shape import MAX_PROGRAMS, MIN_PROGRAMS, Shape, generate
from farm.gen.shrink import MAX_TRIES, Case, shrink, size
from farm.stress.oracle import Problem

INJECTIONS = ("wrong-slot",)    # test-only faults (--inject)
MAX_SEEDS = 1_000_000
SCHEMA = 1


@dataclass
class FuzzOptions:
    seeds: range
    programs: int = 12
    hooks: bool = False             # fentry/fexit on the shapes (not under lockdown)
    budget_s: float | None = None
    export_dir: Path | None = None
    inject: str | None = None
    shrink_tries: int = MAX_TRIES
    repeat: int = REPEAT
    workers: int = 0                # compile threads; 0: one per CPU this process may use


@dataclass
class SeedDone:
    """What the progress line shows after each seed."""
    seed: int
    index: int                      # seeds done, this one included
    total: int
    graphs: int
    tail_calls: int
    findings: int
    elapsed: float


@dataclass
class _Tally:
    graphs: int = 0
    programs: int = 0
    tail_calls: int = 0
    runs: int = 0
    checks: int = 0
    findings: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


def parse_seeds(text: str) -> range:
    """'A-B' (both included) or 'A'."""
    m = re.fullmatch(r"\s*(\d{1,7})\s*(?:-\s*(\d{1,7})\s*)?", text or "")
    if not m:
        raise BadInput(f"--seeds: {text!r} is not a seed range (use e.g. 0-99 or 7)")
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    if last < first:
        raise BadInput(f"--seeds: {text!r} ends before it starts")
    if last - first + 1 > MAX_SEEDS:
        raise BadInput(f"--seeds: {text!r} is more than {MAX_SEEDS} seeds")
    return range(first, last + 1)


def check_programs(n: int) -> int:
    if not MIN_PROGRAMS <= n <= MAX_PROGRAMS:
        raise BadInput(f"--programs: {n} is out of range ({MIN_PROGRAMS}..{MAX_PROGRAMS})")
    return n


# --- the test fault: a program in a slot that is none of its candidates ---

def wrong_slot(shape: Shape) -> tuple[int, int] | None:
    """(slot, program) for --inject wrong-slot: a slot the first entry's run
    takes a tail call through in the first checked state, and a target
    that is not among its candidates; None if the shape has no such pair."""
    state, lay = states(shape)[0], layout(shape)
    for entry in shape.entries:
        out = run_entry(shape, entry, state)
        for site in range(len(shape.sites)):
            if out.counters[lay.attempt(site)] > out.counters[lay.fall(site)]:
                slot = shape.sites[site].slot
                others = [p for p, f in enumerate(shape.programs)
                          if f.kind == "target" and p not in shape.slots[slot].candidates]
                if others:
                    return slot, others[0]
    return None


def apply_inject(ls: LoadedShape, inject: tuple[int, int] | None) -> None:
    if inject:
        pa, key = ls.prog_array(inject[0])
        pa.install(key, ls.prog_fds[ls.shape.programs[inject[1]].name])


class _Injected:
    """The loaded shape as check_static sees it, with the wrong program put
    into its slot whenever the first state is set: behind the model's back."""

    def __init__(self, ls: LoadedShape, inject: tuple[int, int], state: dict[int, int]):
        self._ls, self._inject, self._state = ls, inject, state

    def __getattr__(self, name):
        return getattr(self._ls, name)

    def set_state(self, state: dict[int, int]) -> None:
        self._ls.set_state(state)
        if state == self._state:
            apply_inject(self._ls, self._inject)


# --- one case: the failing run, again ---

@dataclass
class CaseRun:
    problems: list[Problem]
    delta: list[int]        # counters over `repeat` runs
    retval: int


def run_case(ls: LoadedShape, case: Case, repeat: int) -> CaseRun:
    """`repeat` runs of the case's entry with its slots (and its injection) set."""
    shape = ls.shape
    ls.set_state(case.state_dict)
    apply_inject(ls, case.inject)
    counters = ls.counters()
    with one_cpu() as cpu:
        run = syscall.TestRun(ls.entry_fd(case.entry), repeat, f"{shape.name}/{shape.programs[case.entry].name}")
        before = counters.read_cpu(cpu)
        retval = run.run() & 0xFFFFFFFF
        delta = [a - b for a, b in zip(counters.read_cpu(cpu), before)]
    return CaseRun(judge_exact(shape, case.entry, case.state_dict, repeat, delta, retval), delta, retval)


def failing_case(shape: Shape, problem: Problem, inject: tuple[int, int] | None) -> Case:
    """The (entry, state) a check_static problem names, as a Case."""
    d = problem.detail
    entry = next(i for i, p in enumerate(shape.programs) if p.name == d["entry"])
    state = tuple(EMPTY if x == "-" else int(x) for x in d["state"].split(",") if x)
    first = states(shape)[0]
    return Case(shape, entry, state, inject if dict(enumerate(state)) == first else None)


# --- the loop ---

class Fuzzer:
    def __init__(self, opts: FuzzOptions, pin_root: Path, on_seed: Callable[[SeedDone], None] | None = None,
                 on_stage: Callable[[str], None] | None = None):
        self.opts, self.pin_root = opts, pin_root
        self.on_seed, self.on_stage = on_seed or (lambda _: None), on_stage or (lambda _: None)
        self.tally = _Tally()
        self._n = 0  # pin dirs made, so no two loads share one

    def _pins(self, what: str) -> Path:
        self._n += 1
        return self.pin_root / f"{what}-{self._n}"

    def _load(self, shape: Shape, obj: Path | None = None) -> LoadedShape:
        pins = self._pins(f"s{shape.seed}")
        try:
            return load_shape(shape, pins, obj)
        except BaseException:
            remove_pins(pins)
            raise

    def _unload(self, ls: LoadedShape) -> None:
        ls.close()
        remove_pins(ls.pin_dir)

    def seed(self, seed: int, obj: Path | LoadError) -> None:
        opts, t = self.opts, self.tally
        shape = generate(seed, opts.programs, opts.hooks)
        inject = wrong_slot(shape) if opts.inject == "wrong-slot" else None
        try:
            if isinstance(obj, LoadError):
                raise obj
            ls = self._load(shape, obj)
        except LoadError as e:  # the generator's promise is a shape the verifier takes
            t.findings.append({"seed": seed, "kind": "load-error", "signature": f"load-error: {shape.name}",
                               "summary": str(e), "original": shape.describe(), "shrunk": None,
                               "log": e.log[-2000:]})
            return
        try:
            checked = _Injected(ls, inject, states(shape)[0]) if inject else ls
            report: StaticReport = check_static(checked, opts.repeat)
        finally:
            self._unload(ls)
        t.graphs += 1
        t.programs += len(shape.programs)
        t.tail_calls += report.tail_calls
        t.runs += report.runs
        t.checks += report.checks
        if report.problems:
            t.findings.append(self._finding(shape, report.problems[0], inject))

    def _finding(self, shape: Shape, problem: Problem, inject) -> dict:
        """Shrink the first failing run and export it."""
        case = failing_case(shape, problem, inject)
        kind = problem.kind
        self.on_stage(f"seed {shape.seed}: {problem.summary}; shrinking")

        def reproduces(c: Case) -> bool:
            try:
                ls = self._load(c.shape)
            except LoadError:
                return False  # the verifier refused the smaller shape: not the same failure
            try:
                got = run_case(ls, c, self.opts.repeat)
            finally:
                self._unload(ls)
            return bool(got.problems) and got.problems[0].kind == kind

        base = {"seed": shape.seed, "kind": kind, "signature": f"{kind}: {shape.name}", "summary": problem.summary,
                "entry": shape.programs[case.entry].name, "state": problem.detail.get("state"),
                "injected": injected_detail(inject, shape), "original": shape.describe(), "original_size": size(case),
                "shrunk": None, "reproducer": None}
        try:
            small = shrink(case, reproduces, self.opts.shrink_tries)
            ls = self._load(small.case.shape)
            try:
                final = run_case(ls, small.case, self.opts.repeat)
            finally:
                self._unload(ls)
        except InfraError as e:  # the finding stands; only its shrink or export is lost
            return {**base, "shrink_error": str(e)}
        out = {**base, "shrunk": {**small.case.shape.describe(), "size": size(small.case)},
               "shrink": {"tries": small.tries, "steps": small.steps, "exhausted": small.exhausted},
               "reproduces_after_shrink": bool(final.problems) and final.problems[0].kind == kind}
        if self.opts.export_dir:
            shown = final.problems[0] if final.problems else problem  # the shrunk run's own words
            out["reproducer"] = str(export.write(self.opts.export_dir, small.case, final, self.opts.repeat,
                                                 shape, shown))
        return out

    def run(self, seeds: range) -> bool:
        """Every seed, or until the budget is spent; True if the budget stopped it."""
        t0 = time.monotonic()
        workers = self.opts.workers or max(1, min(4, len(os.sched_getaffinity(0))))
        ahead: dict[int, Future] = {}
        it = iter(seeds)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            def fill():
                while len(ahead) < 2 * workers and (s := next(it, None)) is not None:
                    ahead[s] = pool.submit(_compile, generate(s, self.opts.programs, self.opts.hooks))
            try:
                for i, seed in enumerate(seeds):
                    if self.opts.budget_s is not None and time.monotonic() - t0 >= self.opts.budget_s:
                        return True
                    fill()
                    obj = ahead.pop(seed).result()
                    try:
                        self.seed(seed, obj)
                    except InfraError as e:  # this seed is unchecked; the next may load
                        self.tally.errors.append({"seed": seed, "error": str(e)})
                    self.on_seed(SeedDone(seed, i + 1, len(seeds), self.tally.graphs, self.tally.tail_calls,
                                          len(self.tally.findings), time.monotonic() - t0))
            finally:
                for f in ahead.values():
                    f.cancel()
        return False


def injected_detail(inject, shape: Shape) -> dict | None:
    if not inject:
        return None
    slot = shape.slots[inject[0]]
    return {"fault": "wrong-slot", "slot": inject[0], "program": shape.programs[inject[1]].name,
            "candidates": [shape.programs[p].name for p in slot.candidates]}


def _compile(shape: Shape) -> Path | LoadError:
    try:
        return compile_shape(shape)
    except LoadError as e:  # its seed's finding, reported in order
        return e


def run_fuzz(opts: FuzzOptions, on_seed=None, on_stage=None) -> tuple[int, dict]:
    """The whole command on this host: (exit code, the JSON document)."""
    from farm.facts import probe
    from farm.host_run import new_run_id
    require_tool("clang")
    require_tool("bpftool")
    ensure_bpffs()
    sweep_stale()
    run_id = new_run_id("fuzz")
    pin_root = run_pin_dir(run_id)
    guard = PinGuard(pin_root)  # before any BPF fd exists: it must hold none
    t0 = time.monotonic()
    fz = Fuzzer(opts, pin_root, on_seed, on_stage)
    error = None
    try:
        try:
            pin_root.mkdir(parents=True)
        except OSError as e:
            raise InfraError(f"cannot create {pin_root}: {e.strerror}") from None
        stopped = fz.run(opts.seeds)
    except FarmError as e:
        error, stopped = str(e), False
    except Exception as e:  # our bug: still a report, with what was checked before it
        error, stopped = f"farm bug: {type(e).__name__}: {e}", False
    finally:
        remove_pins(pin_root)
        guard.release()
    t = fz.tally
    seconds = time.monotonic() - t0
    doc = {"schema": SCHEMA, "run_id": run_id, "host": probe().host_json(),
           "seeds": {"first": opts.seeds.start, "last": opts.seeds.stop - 1}, "programs_per_shape": opts.programs,
           "inject": opts.inject, "graphs": t.graphs, "programs": t.programs, "tail_calls_verified": t.tail_calls,
           "runs": t.runs, "checks": t.checks, "seconds": round(seconds, 3),
           "shapes_per_minute": round(t.graphs * 60 / seconds, 1) if seconds > 0 else 0.0,
           "stopped_by_budget": stopped, "findings": t.findings, "errors": t.errors, "error": error}
    return exit_code(doc), doc


def exit_code(doc: dict) -> int:
    if doc["findings"]:
        return EXIT_FINDINGS
    if doc["error"] or doc["errors"] or doc["graphs"] == 0 or doc["tail_calls_verified"] == 0:
        return EXIT_INFRA
    return EXIT_PASS
