"""Generated seeds across kernels and cells: each `gen-<seed>` topology's
outcome per (kernel, cell, hw_class), and the differential, every seed that
passes on one kernel and fails on another (or, on one kernel, passes in
one mitigation cell and fails in another).

The job-level regression rule (regressions.py) cannot say this: a job
whose other seeds fail on both kernels never passes anywhere, so a seed
that fails only on the newer kernel is lost in it.

A seed's outcome in one run:
  fail     a kernel finding (not the lab's) whose detail names the seed
  not-run  the kernel could not run it (`unsupported`), nothing of it was
           verified, or its run ended in error or had a kernel finding
           that names no seed (an oops, a lockup, taint: any seed may
           have caused it): neither a pass nor a difference
  pass     tail calls of it verified and no finding of it
A run whose stored result `farm gc` dropped still counts its findings
(they are rows of their own) but can show no pass.

Kernels are compared within one cell and cells within one kernel, so a
difference names the one thing that changed; classes are pooled (narrow
with hw_class).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sqlalchemy import select

from farm.report.cell_axis import cell_label
from farm.report.matrix import filtered_runs, kernel_key, topology_name
from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.ingest import unpack
from farm.store.models import Finding, Run, Signature, Unsupported

GEN_LABEL = re.compile(r"^gen-(\d+)(?:-p\d+)?(?:-hooks)?$")
PROBE_RUNS = 5  # a job's newest stored results that say whether it has generated topologies


@dataclass
class SeedEntry:
    """One seed on one (kernel, cell, hw_class): its runs by outcome."""
    label: str
    kernel: str
    cell: str                      # stored; "" = unknown
    hw_class: str
    passed: int = 0
    failed: int = 0
    not_run: int = 0
    kinds: set[str] = field(default_factory=set)
    signatures: set[str] = field(default_factory=set)
    reasons: set[str] = field(default_factory=set)   # why the kernel could not run it
    jobs: set[str] = field(default_factory=set)

    @property
    def outcome(self) -> str:
        """fail beats pass (a finding is a finding, whatever other runs did)."""
        return "fail" if self.failed else "pass" if self.passed else "not-run"

    def to_dict(self) -> dict:
        return {"seed": self.label, "kernel": self.kernel, "cell": cell_label(self.cell), "hw_class": self.hw_class,
                "outcome": self.outcome, "pass": self.passed, "fail": self.failed, "not-run": self.not_run,
                "kinds": sorted(self.kinds), "signatures": sorted(self.signatures),
                "not_run_reasons": sorted(self.reasons), "jobs": sorted(self.jobs)}


@dataclass
class Side:
    """A kernel (or cell) on one side of a difference, its classes pooled."""
    name: str
    runs: int                      # runs of that outcome there
    kinds: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    passed: int = 0                # a failing side's passing runs too (flaky there)

    def text(self) -> str:
        s = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.kinds:
            s += f": {', '.join(self.kinds)}"
        if self.passed:
            s += f"; {self.passed} passed"
        return f"{self.name} ({s})"


@dataclass
class Difference:
    label: str
    axis: str                      # kernel | cell: what differs
    within: str                    # the cell (axis kernel) or kernel (axis cell) held fixed
    passes: list[Side]
    fails: list[Side]
    many_cells: bool = False       # the seed ran in several cells: say which one

    def text(self) -> str:
        if self.axis == "kernel":
            where = f" in cell {self.within}" if self.many_cells else ""
            on = "on"
        else:
            where, on = f" on {self.within}", "in cell"
        return (f"{self.label}{where}: passes {on} {', '.join(s.text() for s in self.passes)}, "
                f"fails {on} {', '.join(s.text() for s in self.fails)}")

    def to_dict(self) -> dict:
        fixed = "cell" if self.axis == "kernel" else "kernel"
        return {"seed": self.label, "axis": self.axis, fixed: self.within,
                "passes": [s.__dict__ for s in self.passes], "fails": [s.__dict__ for s in self.fails],
                "text": self.text()}


def seed_key(label: str) -> tuple:
    m = GEN_LABEL.match(label)
    return (int(m.group(1)) if m else -1, label)


def entry_key(e: SeedEntry) -> tuple:
    return seed_key(e.label), kernel_key(e.kernel), e.cell, e.hw_class


def generated_jobs(store: Store, job: str | None = None) -> list[str]:
    """The jobs whose newest stored results list a generated topology: only
    their runs are unpacked (the rest of the store is never read)."""
    out = []
    with store.session() as s:
        jobs = s.scalars(filtered_runs(select(Run.job).distinct(), job, None, None)).all()
        for j in sorted(jobs):
            blobs = s.scalars(select(Run.result).where(Run.job == j, Run.result.is_not(None))
                              .order_by(Run.started.desc()).limit(PROBE_RUNS))
            if any(GEN_LABEL.match(topology_name(k)) for b in blobs
                   for k in ((unpack(b) or {}).get("stats") or {}).get("per_topology") or ()):
                out.append(j)
    return out


def seed_entries(store: Store, job: str | None = None, hw_class: str | None = None,
                 cell: str | None = None) -> list[SeedEntry]:
    """Every generated seed's outcome per (kernel, cell, hw_class), sorted by
    seed, kernel (natural order), cell and class."""
    jobs = generated_jobs(store, job)
    if not jobs:
        return []
    # per run: label -> outcome, then counted into the entries
    per_run: dict[str, dict[str, str]] = {}
    meta: dict[str, tuple] = {}
    found: dict[tuple[str, str], tuple[set, set]] = {}   # (run, label) -> kinds, signatures
    reasons: dict[tuple[str, str], set] = {}
    where = (Run.job.in_(jobs),)
    with store.session() as s:
        # a run that ended in error, or whose kernel finding names no seed (an
        # oops, a lockup, taint), shows no seed passing: any of them may be the cause
        unsure: dict[str, str] = {}
        for run_id, j, cls, kernel, c, verdict, blob in s.execute(filtered_runs(
                select(Run.run_id, Run.job, Run.hw_class, Run.kernel, Run.cell, Run.verdict, Run.result)
                .where(*where), None, hw_class, cell)):
            meta[run_id] = (j, cls, kernel, c)
            if verdict == "error":
                unsure[run_id] = "the run ended in error"
            stats = ((unpack(blob) if blob else None) or {}).get("stats") or {}
            per_run[run_id] = {topology_name(k): ("pass" if (t or {}).get("tail_calls_verified", 0) > 0 else "not-run")
                               for k, t in (stats.get("per_topology") or {}).items()
                               if GEN_LABEL.match(topology_name(k))}
        for run_id, topo, why in s.execute(filtered_runs(
                select(Unsupported.run_id, Unsupported.topology, Unsupported.reason)
                .join(Run, Run.run_id == Unsupported.run_id).where(*where), None, hw_class, cell)):
            label = topology_name(topo)
            if GEN_LABEL.match(label):
                # the kernel said no, whatever a counter says: never a pass
                per_run[run_id][label] = "not-run"
                reasons.setdefault((run_id, label), set()).add(why)
        for run_id, kind, detail, sig in s.execute(filtered_runs(
                select(Finding.run_id, Finding.kind, Finding.detail, Signature.text)
                .join(Run, Run.run_id == Finding.run_id).join(Signature, Signature.id == Finding.signature_id)
                .where(*where, Finding.kind.not_in(INFRA_KINDS)), None, hw_class, cell)):
            label = _finding_label(detail)
            if not label:
                unsure.setdefault(run_id, f"the run's {kind} names no seed")
            if label:
                per_run[run_id][label] = "fail"
                kinds, sigs = found.setdefault((run_id, label), (set(), set()))
                kinds.add(kind)
                sigs.add(sig)
    entries: dict[tuple, SeedEntry] = {}
    for run_id, labels in per_run.items():
        j, cls, kernel, c = meta[run_id]
        for label, outcome in labels.items():
            e = entries.setdefault((label, kernel, c, cls), SeedEntry(label, kernel, c, cls))
            e.jobs.add(j)
            if outcome == "fail":
                e.failed += 1
                kinds, sigs = found[(run_id, label)]
                e.kinds |= kinds
                e.signatures |= sigs
            elif outcome == "pass" and run_id not in unsure:
                e.passed += 1
            else:
                if outcome == "pass":
                    reasons.setdefault((run_id, label), set()).add(unsure[run_id])
                e.not_run += 1
                e.reasons |= reasons.get((run_id, label), set())
    return sorted(entries.values(), key=entry_key)


def _finding_label(detail: str) -> str | None:
    try:
        d = json.loads(detail or "{}")
    except json.JSONDecodeError:
        return None
    label = d.get("topology") if isinstance(d, dict) else None
    return label if isinstance(label, str) and GEN_LABEL.match(label) else None


def differences(entries: list[SeedEntry]) -> list[Difference]:
    """Each seed that passes on one kernel and fails on another in the same
    cell, or passes in one cell and fails in another on the same kernel."""
    by_label: dict[str, list[SeedEntry]] = {}
    for e in entries:
        by_label.setdefault(e.label, []).append(e)
    out = []
    for label in sorted(by_label, key=seed_key):
        es = by_label[label]
        many_cells = len({e.cell for e in es}) > 1
        for fixed in sorted({e.cell for e in es}):
            d = _differ(label, "kernel", cell_label(fixed), [e for e in es if e.cell == fixed],
                        lambda e: e.kernel, kernel_key)
            if d:
                d.many_cells = many_cells
                out.append(d)
        for fixed in sorted({e.kernel for e in es}, key=kernel_key):
            d = _differ(label, "cell", fixed, [e for e in es if e.kernel == fixed],
                        lambda e: cell_label(e.cell), lambda name: name)
            if d:
                out.append(d)
    return out


def _differ(label: str, axis: str, within: str, es: list[SeedEntry], value, order) -> Difference | None:
    pooled: dict[str, SeedEntry] = {}
    for e in es:  # classes pooled per kernel (or cell)
        p = pooled.setdefault(value(e), SeedEntry(label, e.kernel, e.cell, ""))
        p.passed += e.passed
        p.failed += e.failed
        p.kinds |= e.kinds
        p.signatures |= e.signatures
    names = sorted(pooled, key=order)
    passes = [Side(n, pooled[n].passed) for n in names if pooled[n].outcome == "pass"]
    fails = [Side(n, pooled[n].failed, sorted(pooled[n].kinds), sorted(pooled[n].signatures), pooled[n].passed)
             for n in names if pooled[n].outcome == "fail"]
    return Difference(label, axis, within, passes, fails) if passes and fails else None


def seed_differences(store: Store, job: str | None = None, hw_class: str | None = None,
                     cell: str | None = None) -> list[Difference]:
    return differences(seed_entries(store, job, hw_class, cell))
