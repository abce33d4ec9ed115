"""The triage matrix: job x hw_class x kernel, with run counts by outcome."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select

from farm.store import Store
from farm.store.models import Run

OUTCOMES = ("pass", "fail", "lost", "error")


def kernel_key(kernel: str) -> tuple:
    """Natural order of kernel releases: 6.1.0-56-amd64 < 6.9.2 < 6.18.44."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", kernel) if p)


@dataclass
class Cell:
    job: str
    hw_class: str
    kernel: str
    vendor: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        """flaky: the same job, class and kernel both passed and failed."""
        c = self.counts
        if c["fail"] and c["pass"]:
            return "flaky"
        for s in ("fail", "lost", "error", "pass"):
            if c[s]:
                return s
        return "none"

    def to_dict(self) -> dict:
        return {"job": self.job, "hw_class": self.hw_class, "kernel": self.kernel, "vendor": self.vendor,
                "status": self.status, **self.counts}


def matrix(store: Store, job: str | None = None, hw_class: str | None = None) -> list[Cell]:
    """Every (job, hw_class, kernel) that ran, sorted by job, class and kernel."""
    q = (select(Run.job, Run.hw_class, Run.kernel, Run.vendor, Run.outcome, func.count())
         .group_by(Run.job, Run.hw_class, Run.kernel, Run.vendor, Run.outcome))
    if job:
        q = q.where(Run.job == job)
    if hw_class:
        q = q.where(Run.hw_class == hw_class)
    cells: dict[tuple, Cell] = {}
    with store.session() as s:
        for j, cls, kernel, vendor, outcome, n in s.execute(q):
            cell = cells.setdefault((j, cls, kernel), Cell(j, cls, kernel, vendor))
            cell.counts[outcome if outcome in OUTCOMES else "error"] += n
    return sorted(cells.values(), key=lambda c: (c.job, c.hw_class, kernel_key(c.kernel)))
