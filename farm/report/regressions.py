"""Regressions: a (hw_class, kernel, cell) that fails a job where the
previous kernel on the same class, in the same mitigation cell, passed it.
Each cell is its own series: a kernel that fails only with lfence is a
regression of the lfence cell, and the default cell's passing runs neither
hide it nor make it. Runs of unknown cell (stored before cells existed) are
a series of their own too: nothing says which cell they were.

Retry before regression: one failing host is not enough. The candidate is
declared a regression only once a run on another host of the same class and
kernel fails too; if that retry passes the candidate is flaky; until a retry
exists it waits (and `farm triage regressions --retry` asks for one).

Only failed runs make a candidate: a lost or errored run is the lab's
trouble (lab health), never a kernel's; nor is a lost host a signature of one.
A kernel whose runs were all not-run (it could not run some topology at
all: no trampolines, lockdown) is no step of the series: the kernels
either side of it are compared, as if it had not been tried.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from farm.report.cell_axis import cell_label
from farm.report.matrix import kernel_key, matrix
from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.models import Finding, Host, Run, Signature


@dataclass
class Candidate:
    job: str
    hw_class: str
    kernel: str
    previous_kernel: str
    state: str                    # regression | flaky | awaiting-retry
    first_host: str               # where it failed first
    retry_hosts: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    cell: str = ""                # the stored mitigation cell; "" = unknown

    def to_dict(self) -> dict:
        return {**self.__dict__, "cell": cell_label(self.cell)}


def regressions(store: Store, job: str | None = None, hw_class: str | None = None,
                cell: str | None = None) -> list[Candidate]:
    """Candidates of every (job, class, cell) series; cell filters by the
    stored value ("" = unknown)."""
    by_series: dict[tuple[str, str, str], list] = {}
    for entry in matrix(store, job, hw_class, cell):
        by_series.setdefault((entry.job, entry.hw_class, entry.cell), []).append(entry)
    out = []
    for (j, cls, c), entries in sorted(by_series.items()):
        entries = [e for e in entries if e.runs > e.counts["not-run"]]
        entries.sort(key=lambda e: kernel_key(e.kernel))
        for prev, cur in zip(entries, entries[1:]):
            if cur.counts["fail"] and prev.counts["pass"] and not prev.counts["fail"]:
                out.append(_judge(store, j, cls, c, cur.kernel, prev.kernel))
    return out


def _judge(store: Store, job: str, cls: str, cell: str, kernel: str, previous: str) -> Candidate:
    series = (Run.job == job, Run.hw_class == cls, Run.kernel == kernel, Run.cell == cell)
    with store.session() as s:
        runs = s.execute(select(Run.run_id, Host.hostname, Run.outcome)
                         .join(Host, Host.id == Run.host_id)
                         .where(*series, Run.outcome.in_(("pass", "fail")))
                         .order_by(Run.started, Run.run_id)).all()
        first = next(r for r in runs if r.outcome == "fail")
        sigs = sorted(set(s.scalars(
            select(Signature.text).join(Finding, Finding.signature_id == Signature.id)
            .join(Run, Run.run_id == Finding.run_id)
            .where(*series, Finding.kind.not_in(INFRA_KINDS)))))
    retries = [r for r in runs if r.hostname != first.hostname]
    if not retries:
        state = "awaiting-retry"
    elif any(r.outcome == "fail" for r in retries):
        state = "regression"
    else:
        state = "flaky"
    return Candidate(job, cls, kernel, previous, state, first.hostname,
                     sorted({r.hostname for r in retries}), sigs, cell)
