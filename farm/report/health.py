"""Lab health: what went wrong with the lab rather than with the kernel under
test. Per host (and summed per hw_class): runs lost (the host went away
mid-job), runs that errored (farm's own failure, a guest that did not set
up, a tool missing) with their error text, and when the host was last seen;
and the infrastructure signatures (farm.result.INFRA_KINDS).

None of it is a kernel finding: the signature split and the regressions
leave these runs out. A kernel finding a lost or errored run carried (the
crash that took its host down) is listed next to the problem, and stays a
kernel signature of its own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.models import Finding, Host, Run, Signature

PROBLEM_OUTCOMES = ("lost", "error")
NO_ERROR_TEXT = "(no error text)"


@dataclass
class Problem:
    """Runs of one host that went wrong the same way."""
    outcome: str                  # lost | error
    text: str                     # the error, or the host-lost finding's summary
    runs: int = 0
    last: datetime | None = None  # when the last such run started
    last_run: str = ""
    kernels: list[str] = field(default_factory=list)
    kernel_findings: list[str] = field(default_factory=list)  # signatures they carried


@dataclass
class HostHealth:
    hostname: str
    vendor: str
    hw_class: str
    last_seen: datetime
    runs: int = 0
    lost: int = 0
    errored: int = 0
    last_problem: datetime | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.errored)


@dataclass
class ClassHealth:
    hw_class: str
    hosts: int = 0
    runs: int = 0
    lost: int = 0
    errored: int = 0
    hosts_with_problems: int = 0


@dataclass
class InfraSignature:
    id: int
    text: str
    kind: str
    count: int
    last_seen: datetime


@dataclass
class Health:
    hosts: list[HostHealth]
    infra_signatures: list[InfraSignature]

    @property
    def lost(self) -> int:
        return sum(h.lost for h in self.hosts)

    @property
    def errored(self) -> int:
        return sum(h.errored for h in self.hosts)

    def by_class(self) -> list[ClassHealth]:
        out: dict[str, ClassHealth] = {}
        for h in self.hosts:
            c = out.setdefault(h.hw_class, ClassHealth(h.hw_class))
            c.hosts += 1
            c.runs, c.lost, c.errored = c.runs + h.runs, c.lost + h.lost, c.errored + h.errored
            c.hosts_with_problems += not h.ok
        return sorted(out.values(), key=lambda c: c.hw_class)

    def summary(self) -> str:
        """'lab health: 1 lost and 0 errored runs on 1 of 7 hosts'."""
        bad = sum(not h.ok for h in self.hosts)
        return (f"lab health: {self.lost} lost and {self.errored} errored runs on {bad} of "
                f"{len(self.hosts)} hosts")

    def to_dict(self) -> dict:
        return {"lost": self.lost, "errored": self.errored,
                "classes": [asdict(c) for c in self.by_class()],
                "hosts": [_jsonable(asdict(h)) for h in self.hosts],
                "infra_signatures": [_jsonable(asdict(s)) for s in self.infra_signatures]}


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_jsonable(v) for v in d]
    return d.isoformat(timespec="seconds") if isinstance(d, datetime) else d


def health(store: Store, job: str | None = None) -> Health:
    """Every host that ran (job's runs only, if given), by hw_class and hostname."""
    counts = (select(Host.hostname, Host.vendor, Host.hw_class, Host.last_seen, Run.outcome, func.count())
              .join(Run, Run.host_id == Host.id)
              .group_by(Host.hostname, Host.vendor, Host.hw_class, Host.last_seen, Run.outcome))
    bad = (select(Run.run_id, Host.hostname, Run.outcome, Run.error, Run.started, Run.kernel)
           .join(Host, Host.id == Run.host_id).where(Run.outcome.in_(PROBLEM_OUTCOMES))
           .order_by(Run.started, Run.run_id))
    if job:
        counts, bad = counts.where(Run.job == job), bad.where(Run.job == job)
    with store.session() as s:
        hosts: dict[str, HostHealth] = {}
        for name, vendor, cls, seen, outcome, n in s.execute(counts):
            h = hosts.setdefault(name, HostHealth(name, vendor, cls, seen))
            h.runs += n
            h.lost += n if outcome == "lost" else 0
            h.errored += n if outcome == "error" else 0
        runs = s.execute(bad).all()
        found: dict[str, list[tuple[str, str, str]]] = {}
        for run_id, kind, summary, text in s.execute(
                select(Finding.run_id, Finding.kind, Finding.summary, Signature.text)
                .join(Signature, Signature.id == Finding.signature_id)
                .where(Finding.run_id.in_(bad.with_only_columns(Run.run_id).order_by(None)))
                .order_by(Finding.id)):
            found.setdefault(run_id, []).append((kind, summary, text))
        infra = [InfraSignature(sig.id, sig.text, sig.kind, sig.count, sig.last_seen) for sig in s.scalars(
            select(Signature).where(Signature.kind.in_(INFRA_KINDS)).order_by(Signature.last_seen.desc()))]
    for r in runs:
        _add_problem(hosts[r.hostname], r, found.get(r.run_id, []))
    return Health(sorted(hosts.values(), key=lambda h: (h.hw_class, h.hostname)), infra)


def _add_problem(h: HostHealth, run, findings: list[tuple[str, str, str]]) -> None:
    """One lost or errored run onto its host's problem of the same text."""
    infra = [summary for kind, summary, _ in findings if kind in INFRA_KINDS]
    if run.outcome == "lost":
        text = infra[0] if infra else "host lost"
    else:
        text = run.error or NO_ERROR_TEXT
    p = next((p for p in h.problems if (p.outcome, p.text) == (run.outcome, text)), None)
    if p is None:
        p = Problem(run.outcome, text)
        h.problems.append(p)
    p.runs += 1
    p.last, p.last_run = run.started, run.run_id  # runs come oldest first
    if run.kernel not in p.kernels:
        p.kernels.append(run.kernel)
    for kind, _, sig in findings:
        if kind not in INFRA_KINDS and sig not in p.kernel_findings:
            p.kernel_findings.append(sig)
    h.last_problem = run.started
