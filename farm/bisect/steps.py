"""The bisection's steps in the virtual lab: a package's runs of the job,
on each given CPU model, `runs` times in ONE guest per (package, model)
(the job listed `runs` times in the guest's plan, as `farm lab matrix` runs
several jobs in one boot: a boot is paid once, not once a run). Several
steps asked for at once (the two ends) boot side by side, as many guests
at a time as the matrix allows. Results are stored like `farm lab run`'s
unless told not to; progress goes to stderr, a line per guest and run
(a live bar only on a terminal)."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from farm.bisect.search import StepResult
from farm.guests.matrix import (GuestOutcome, GuestPlan, MatrixJob, MatrixOptions, guest_slots, mem_available_mb,
                                run_matrix)
from farm.guests.qemu import initramfs, resolve_kernel
from farm.guests.vrun import store_results


def step_result(outcomes: list[GuestOutcome]) -> StepResult:
    """Every run of one package's guests as one StepResult: a run without a
    result (the guest not set up, farm run refusing) is an error."""
    res = StepResult([], [], [], [])
    for o in outcomes:
        if o.setup_error:
            res.errors.append(f"{o.plan.cpu_model} guest not set up: {o.setup_error}")
        for j in o.jobs:
            r = j.result
            if r is None:
                res.verdicts.append("error")
                res.signatures.append([])
                if not o.setup_error:
                    res.errors.append(j.note or f"exit {j.exit_code}")
                continue
            res.verdicts.append(r.get("verdict", "error"))
            res.signatures.append([f["signature"] for f in r.get("findings") or ()])
            res.run_ids.append(r.get("run_id", ""))
            if r.get("verdict") == "error":
                res.errors.append(f"{r.get('run_id', '')}: {r.get('error') or 'error'}")
    return res


class LabSteps:
    """run_step / run_many for farm.bisect.search.bisect, in guests."""

    def __init__(self, job: MatrixJob, cpu_models: list[str], cell: str, opts: MatrixOptions, out: Path,
                 display_factory=None, say=None):
        self.job, self.models, self.cell, self.opts, self.out = job, cpu_models, cell, opts, out
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.display_factory = display_factory
        self.batches = 0
        self.boots: list[dict] = []  # each guest: package, model, boot_s, job walls

    def _display(self):
        if self.display_factory:
            return self.display_factory()
        from farm.guests.matrix_view import MatrixDisplay
        return MatrixDisplay(stream=sys.stderr)

    def run_step(self, package: str, runs: int) -> StepResult:
        return self.run_many([(package, runs)])[0]

    def run_many(self, requests: list[tuple[str, int]]) -> list[StepResult]:
        plans = [GuestPlan(model, f"deb:{package}", self.cell, (self.job,) * runs)
                 for package, runs in requests for model in self.models]
        kernels = {}
        for package, _ in requests:
            kernels[f"deb:{package}"] = k = resolve_kernel(f"deb:{package}")
            initramfs(k)  # once here, not by two guests' threads at once
        self.batches += 1
        out = self.out / f"step-{self.batches}"
        out.mkdir(parents=True, exist_ok=True)
        slots = guest_slots(len(os.sched_getaffinity(0)), mem_available_mb(), self.opts.memory_mb, len(plans),
                            self.opts.parallel)
        self.say("step: " + ", ".join(f"{p} x{n}" for p, n in requests)
                 + f" on {', '.join(self.models)} ({len(plans)} guests, {slots} at a time)")
        outcomes = run_matrix(plans, kernels, self.opts, out, self._display(), slots)
        for o in outcomes:
            self.boots.append({"package": o.plan.kernel.removeprefix("deb:"), "cpu_model": o.plan.cpu_model,
                               "boot_s": o.boot_s, "job_walls_s": o.job_walls_s})
        if self.opts.store:
            items = [(j.result, j.artifacts) for o in outcomes for j in o.jobs if j.result is not None]
            if items:
                store_results(items)
        results = []
        for package, _ in requests:
            mine = [o for o in outcomes if o.plan.kernel == f"deb:{package}"]
            res = step_result(mine)
            if not mine:
                res.errors.append("no guest ran")
            self.say(f"  {package}: " + " ".join(
                v if not sigs else f"{v}({', '.join(sigs)})" for v, sigs in zip(res.verdicts, res.signatures)))
            results.append(res)
        return results


def default_out() -> Path:
    return Path("artifacts") / f"bisect-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
