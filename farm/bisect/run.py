"""`farm bisect` as a plain function: the packages between the two ends,
the search over them in guests, the answer (JSON and a summary), the
bisection stored. The command line (farm/cli/bisect.py) and the queue's
bisect task both call run_bisect."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from farm.bisect import changelog
from farm.bisect.kernels import package_of, packages_between
from farm.bisect.search import MAX_RUNS, Bisection, bisect
from farm.errors import EXIT_INFRA, EXIT_PASS, BadInput
from farm.guests.kernels import KernelPackage

TOP_SUSPECTS = 5


@dataclass
class BisectRequest:
    job: Path
    good: str  # deb:PACKAGE
    bad: str
    cpu_models: list[str] = field(default_factory=lambda: ["EPYC-Milan"])
    cell: str = "default"
    repeat: int = 3
    json_path: Path | None = None
    store: bool = True
    signature: str | None = None  # the target, when the caller knows it (a regression's)
    artifacts: Path | None = None
    regression: str | None = None  # the regression key this bisection answers (the schedule's)


def answer(b: Bisection, kernels: dict[str, KernelPackage], req: BisectRequest, job_name: str,
           guests: list[dict]) -> dict:
    """The JSON: the search's record with each package's upstream version,
    and the suspects and config diff between the boundary's two packages."""
    def pkg(name: str) -> dict:
        k = kernels[name]
        return {"package": name, "upstream": k.upstream, "version": k.version}

    out = {"job": job_name, "cpu_models": req.cpu_models, "cell": req.cell, "direction": b.direction,
           "good": pkg(b.good), "bad": pkg(b.bad), "signature": b.signature, "rate": b.rate,
           "runs_per_step": b.repeat, "boundary": [pkg(p) for p in b.boundary] if b.boundary else None,
           "refused": b.refused,
           "steps": [{**s.to_dict(), "upstream": kernels[s.package].upstream} for s in b.steps],
           "confidence": b.confidence, "suspects": None, "config_diff": None, "log": b.log, "guests": guests}
    if b.boundary:
        older, newer = b.boundary
        out["suspects"] = changelog.suspects_between(older, newer)
        out["config_diff"] = changelog.config_diff(older, newer)
    return out


def summary_lines(a: dict) -> list[str]:
    def named(p: dict) -> str:
        return f"{p['package']} ({p['upstream']})"

    lines = [f"bisect {a['job']}: {a['signature'] or 'no failure'} between good {named(a['good'])} "
             f"and bad {named(a['bad'])} on {', '.join(a['cpu_models'])}, cell {a['cell']}"]
    if a["boundary"]:
        older, newer = a["boundary"]
        lines.append(f"{a['direction']} in {named(newer)}")
        lines.append(f"boundary: {named(older)} -> {named(newer)} "
                     f"({'good -> bad' if a['direction'] == 'introduced' else 'bad -> good'})")
    else:
        lines.append(f"no boundary: {a['refused']}")
    if a["rate"] is not None:
        lines.append(f"the bad end showed it in {a['rate']:.0%} of its runs; {a['runs_per_step']} runs a step")
    lines.append(f"{'package':46} {'upstream':9} {'runs':>4}  {'verdict':7} runs")
    for s in a["steps"]:
        runs = " ".join(v if not sig else f"{v}:{'+'.join(sig)}" for v, sig in zip(s["verdicts"], s["signatures"]))
        lines.append(f"{s['package']:46} {s['upstream']:9} {s['runs']:>4}  {s['classification']:7} {runs}")
    for g in a.get("guests") or ():
        lines.append(f"guest {g['cpu_model']} {g['package']}: boot {g['boot_s']}s, runs "
                     + ", ".join(f"{w:g}s" for w in g["job_walls_s"]))
    if a["confidence"] is not None:
        lines.append(f"confidence {a['confidence']:.4f} (every step called good would have shown the failure "
                     f"at the calibrated rate)")
    if a["suspects"] is not None:
        ranked = a["suspects"].get("ranked") or []
        lines.append(f"suspects: {len(ranked)} ranked of {len(a['suspects'].get('all') or [])} changelog entries")
        for e in ranked[:TOP_SUSPECTS]:
            lines.append(f"  [{e.get('score')}] {e.get('text')} ({e.get('upstream')}; {e.get('why')})")
    if a["config_diff"] is not None:
        lines.append(f"config: {len(a['config_diff'])} BPF/JIT/mitigation options differ")
        for name, v in sorted(a["config_diff"].items())[:10]:
            lines.append(f"  {name}: {v.get('older')} -> {v.get('newer')}")
    return lines


def run_bisect(req: BisectRequest, say=print, progress=None, steps_factory=None,
               available=None) -> tuple[int, dict]:
    """The bisection end to end: (exit code, the answer)."""
    from farm.cells import get_cell
    from farm.guests.matrix import MatrixJob, MatrixOptions, check_cpu_models
    from farm.spec import load_spec
    good, bad = package_of(req.good, "--good"), package_of(req.bad, "--bad")
    if good == bad:  # before asking apt for the archive's list
        raise BadInput(f"--good and --bad are the same package ({good})")
    if not 1 <= req.repeat <= MAX_RUNS:
        raise BadInput(f"--repeat: {req.repeat} (1 to {MAX_RUNS})")
    if req.json_path and req.json_path.is_dir():
        raise BadInput(f"--json: {req.json_path} is a directory")
    spec = load_spec(req.job, None, elsewhere=True)
    cell = get_cell(req.cell).name
    if available is None:
        from farm.guests.kcache import cached_size
        from farm.guests.kernels import available_kernels
        available = available_kernels(cached_size)
    chain = packages_between(good, bad, available)
    kernels = {k.package: k for k in chain}
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if steps_factory is None:
        from farm.bisect.steps import LabSteps, default_out
        models = check_cpu_models(req.cpu_models)
        steps = LabSteps(MatrixJob(req.job, spec), models, cell, MatrixOptions(store=req.store),
                         req.artifacts or default_out(), say=progress)
    else:
        steps = steps_factory()
    progress(f"bisect {spec.name}: {len(chain)} packages from {chain[0].package} to {chain[-1].package}")
    b = bisect([k.package for k in chain], good, bad, steps.run_step, req.repeat, signature=req.signature,
               run_many=steps.run_many, say=progress)
    a = answer(b, kernels, req, spec.name, getattr(steps, "boots", []))
    if req.json_path:
        req.json_path.parent.mkdir(parents=True, exist_ok=True)
        req.json_path.write_text(json.dumps(a, indent=2) + "\n")
    if req.store:
        from farm.store import open_store
        a["bisection_id"] = open_store().add_bisection(a, regression=req.regression)
    for line in summary_lines(a):
        say(line)
    return (EXIT_PASS if b.boundary else EXIT_INFRA), a
