"""The triage matrix: job x hw_class x kernel x mitigation cell, with run
counts by outcome. Each entry is one (job, class, kernel, cell); "cell"
alone means the mitigation cell (jobs/cells.yaml), never a matrix entry."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select

from farm.report.cell_axis import cell_label
from farm.store import Store
from farm.store.models import Run

OUTCOMES = ("pass", "fail", "lost", "error")


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

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    @property
    def cell_label(self) -> str:
        return cell_label(self.cell)

    @property
    def status(self) -> str:
        """flaky: the same job, class, kernel and cell both passed and failed."""
        c = self.counts
        if c["fail"] and c["pass"]:
            return "flaky"
        for s in ("fail", "lost", "error", "pass"):
            if c[s]:
                return s
        return "none"

    def paths(self) -> str:
        """'indirect jump lfence, return srso', or '' when no run said."""
        parts = [f"{what} {'/'.join(sorted(seen))}" for what, seen in
                 (("indirect jump", self.indirect_jumps), ("return", self.returns)) if seen]
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"job": self.job, "hw_class": self.hw_class, "kernel": self.kernel, "cell": self.cell_label,
                "vendor": self.vendor, "status": self.status, **self.counts,
                "indirect_jump": sorted(self.indirect_jumps), "return": sorted(self.returns)}


def entry_key(e: MatrixEntry) -> tuple:
    return e.job, e.hw_class, kernel_key(e.kernel), e.cell


def matrix(store: Store, job: str | None = None, hw_class: str | None = None,
           cell: str | None = None) -> list[MatrixEntry]:
    """Every (job, hw_class, kernel, cell) that ran, sorted by job, class,
    kernel and cell. cell filters by the stored value ("" = unknown)."""
    q = (select(Run.job, Run.hw_class, Run.kernel, Run.cell, Run.vendor, Run.outcome,
                Run.indirect_jump, Run.return_path, func.count())
         .group_by(Run.job, Run.hw_class, Run.kernel, Run.cell, Run.vendor, Run.outcome,
                   Run.indirect_jump, Run.return_path))
    if job:
        q = q.where(Run.job == job)
    if hw_class:
        q = q.where(Run.hw_class == hw_class)
    if cell is not None:
        q = q.where(Run.cell == cell)
    entries: dict[tuple, MatrixEntry] = {}
    with store.session() as s:
        for j, cls, kernel, c, vendor, outcome, jump, ret, n in s.execute(q):
            e = entries.setdefault((j, cls, kernel, c), MatrixEntry(j, cls, kernel, c, vendor))
            e.counts[outcome if outcome in OUTCOMES else "error"] += n
            e.indirect_jumps.update([jump] if jump else [])
            e.returns.update([ret] if ret else [])
    return sorted(entries.values(), key=entry_key)
