"""Regressions: a (hw_class, kernel) that fails a job where the previous
kernel on the same class passed it.

Retry before regression: one failing host is not enough. The candidate is
declared a regression only once a run on another host of the same class and
kernel fails too; if that retry passes the candidate is flaky; until a retry
exists it waits (and `farm triage regressions --retry` asks for one).

Only failed runs make a candidate: a lost or errored run is the lab's
trouble (lab health), never a kernel's; nor is a lost host a signature of one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def regressions(store: Store, job: str | None = None, hw_class: str | None = None) -> list[Candidate]:
    by_series: dict[tuple[str, str], list] = {}
    for cell in matrix(store, job, hw_class):
        by_series.setdefault((cell.job, cell.hw_class), []).append(cell)
    out = []
    for (j, cls), cells in sorted(by_series.items()):
        cells.sort(key=lambda c: kernel_key(c.kernel))
        for prev, cur in zip(cells, cells[1:]):
            if cur.counts["fail"] and prev.counts["pass"] and not prev.counts["fail"]:
                out.append(_judge(store, j, cls, cur.kernel, prev.kernel))
    return out


def _judge(store: Store, job: str, cls: str, kernel: str, previous: str) -> Candidate:
    with store.session() as s:
        runs = s.execute(select(Run.run_id, Host.hostname, Run.outcome)
                         .join(Host, Host.id == Run.host_id)
                         .where(Run.job == job, Run.hw_class == cls, Run.kernel == kernel,
                                Run.outcome.in_(("pass", "fail")))
                         .order_by(Run.started, Run.run_id)).all()
        first = next(r for r in runs if r.outcome == "fail")
        sigs = sorted(set(s.scalars(
            select(Signature.text).join(Finding, Finding.signature_id == Signature.id)
            .join(Run, Run.run_id == Finding.run_id)
            .where(Run.job == job, Run.hw_class == cls, Run.kernel == kernel,
                   Finding.kind.not_in(INFRA_KINDS)))))
    retries = [r for r in runs if r.hostname != first.hostname]
    if not retries:
        state = "awaiting-retry"
    elif any(r.outcome == "fail" for r in retries):
        state = "regression"
    else:
        state = "flaky"
    return Candidate(job, cls, kernel, previous, state, first.hostname,
                     sorted({r.hostname for r in retries}), sigs)
