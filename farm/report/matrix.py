"""The triage matrix: job x hw_class x kernel x mitigation cell, with run
counts by outcome. Each entry is one (job, class, kernel, cell); "cell"
alone means the mitigation cell (jobs/cells.yaml), never a matrix entry.

A run whose only trouble was what its kernel cannot run at all (result
schema 3's `unsupported`: no trampolines, lockdown's EPERM, a missing
kfunc) is "not-run", with the kernel's reason: neither a pass, nor a
kernel finding, nor the lab's trouble. unsupported() says, per kernel,
which topologies were not run and why."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select

from farm.report.cell_axis import cell_label
from farm.store import Store
from farm.store.models import Run, Unsupported

OUTCOMES = ("pass", "fail", "lost", "error", "not-run")
_INDEX = re.compile(r"^\d+-")


def kernel_key(kernel: str) -> tuple:
    """Natural order of kernel releases: 6.1.0-56-amd64 < 6.9.2 < 6.18.44."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", kernel) if p)


@dataclass
class MatrixEntry:
    job: str
    hw_class: str
    kernel: str
    cell: str = ""                # the stored mitigation cell; "" = unknown (shown "-")
    vendor: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    # the JIT paths the entry's runs reached (what the cell really meant on this class and kernel)
    indirect_jumps: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    # what the entry's runs could not run at all: (topology, reason) -> runs
    unsupported: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    @property
    def cell_label(self) -> str:
        return cell_label(self.cell)

    @property
    def status(self) -> str:
        """flaky: the same job, class, kernel and cell both passed and failed;
        not-run: a run could not run some topology here (and nothing worse
        happened), like an error hides a pass."""
        c = self.counts
        if c["fail"] and c["pass"]:
            return "flaky"
        for s in ("fail", "lost", "error", "not-run", "pass"):
            if c[s]:
                return s
        return "none"

    def paths(self) -> str:
        """'indirect jump lfence, return srso', or '' when no run said."""
        parts = [f"{what} {'/'.join(sorted(seen))}" for what, seen in
                 (("indirect jump", self.indirect_jumps), ("return", self.returns)) if seen]
        return ", ".join(parts)

    def not_run_text(self) -> str:
        """'not run: 1-fentry (the kernel's reason); ...', or '' when every
        topology of its runs could run."""
        if not self.unsupported:
            return ""
        return "not run: " + "; ".join(f"{t} ({why})" for t, why in sorted(self.unsupported))

    def to_dict(self) -> dict:
        return {"job": self.job, "hw_class": self.hw_class, "kernel": self.kernel, "cell": self.cell_label,
                "vendor": self.vendor, "status": self.status, **self.counts,
                "indirect_jump": sorted(self.indirect_jumps), "return": sorted(self.returns),
                "unsupported": [{"topology": t, "reason": why, "runs": n}
                                for (t, why), n in sorted(self.unsupported.items())]}


def entry_key(e: MatrixEntry) -> tuple:
    return e.job, e.hw_class, kernel_key(e.kernel), e.cell


def matrix(store: Store, job: str | None = None, hw_class: str | None = None,
           cell: str | None = None) -> list[MatrixEntry]:
    """Every (job, hw_class, kernel, cell) that ran, sorted by job, class,
    kernel and cell. cell filters by the stored value ("" = unknown)."""
    q = filtered_runs(select(Run.job, Run.hw_class, Run.kernel, Run.cell, Run.vendor, Run.outcome,
                         Run.indirect_jump, Run.return_path, func.count())
                  .group_by(Run.job, Run.hw_class, Run.kernel, Run.cell, Run.vendor, Run.outcome,
                            Run.indirect_jump, Run.return_path), job, hw_class, cell)
    entries: dict[tuple, MatrixEntry] = {}
    with store.session() as s:
        for j, cls, kernel, c, vendor, outcome, jump, ret, n in s.execute(q):
            e = entries.setdefault((j, cls, kernel, c), MatrixEntry(j, cls, kernel, c, vendor))
            e.counts[outcome if outcome in OUTCOMES else "error"] += n
            e.indirect_jumps.update([jump] if jump else [])
            e.returns.update([ret] if ret else [])
        for j, cls, kernel, c, topo, why, n in s.execute(filtered_runs(
                select(Run.job, Run.hw_class, Run.kernel, Run.cell, Unsupported.topology, Unsupported.reason,
                       func.count(func.distinct(Run.run_id)))
                .join(Unsupported, Unsupported.run_id == Run.run_id)
                .group_by(Run.job, Run.hw_class, Run.kernel, Run.cell, Unsupported.topology, Unsupported.reason),
                job, hw_class, cell)):
            e = entries.get((j, cls, kernel, c))
            if e is not None:
                e.unsupported[(topo, why)] = n
    return sorted(entries.values(), key=entry_key)


def filtered_runs(q, job: str | None, hw_class: str | None, cell: str | None):
    """The query kept to the runs of a job, class and stored cell (each when given)."""
    if job:
        q = q.where(Run.job == job)
    if hw_class:
        q = q.where(Run.hw_class == hw_class)
    if cell is not None:
        q = q.where(Run.cell == cell)
    return q


def topology_name(key: str) -> str:
    """'1-fentry' -> 'fentry' (the index is the job's own); a refuse check
    ('refuse:<case>') as it is."""
    return _INDEX.sub("", key)


@dataclass
class NotRun:
    """One topology (or refuse check) a kernel could not run, for one reason."""
    kernel: str
    topology: str                  # its name, without the job's index
    reason: str                    # the kernel's own
    runs: int = 0
    hw_classes: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def unsupported(store: Store, job: str | None = None, hw_class: str | None = None,
                cell: str | None = None) -> list[NotRun]:
    """Per kernel (natural order), which topologies its runs could not run
    and why, with the classes and jobs that met it."""
    q = filtered_runs(select(Run.kernel, Unsupported.topology, Unsupported.reason, Run.hw_class, Run.job, Run.run_id)
                  .join(Unsupported, Unsupported.run_id == Run.run_id), job, hw_class, cell)
    out: dict[tuple[str, str, str], NotRun] = {}
    runs: dict[tuple[str, str, str], set[str]] = {}
    with store.session() as s:
        for kernel, topo, why, cls, j, run_id in s.execute(q):
            key = (kernel, topology_name(topo), why)
            n = out.setdefault(key, NotRun(*key))
            runs.setdefault(key, set()).add(run_id)
            n.runs = len(runs[key])
            if cls not in n.hw_classes:
                n.hw_classes.append(cls)
            if j not in n.jobs:
                n.jobs.append(j)
    for n in out.values():
        n.hw_classes.sort()
        n.jobs.sort()
    return sorted(out.values(), key=lambda n: (kernel_key(n.kernel), n.topology, n.reason))
