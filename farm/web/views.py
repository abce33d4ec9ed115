"""What each page shows, as plain data for its template: read through the
same functions the command line uses (Registry.hosts as `farm hosts`,
run_states and cached_results as `farm status` and `farm submit --wait`)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from farm.errors import VERDICT_EXIT, BadInput, FarmError
from farm.facts import vendor_short
from farm.queue.registry import Registry
from farm.queue.routing import FARM_QUEUES
from farm.queue.submit import cached_results, run_states, worst_exit

# as a worker's run ids are: a submission id is one Redis key's tail and no more
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,200}")
SETTLED = ("done", "lost")


@dataclass
class HostRow:
    name: str
    vendor: str
    hw_class: str
    kernel: str
    cell: str
    health: str
    alive: bool
    heartbeat_age: float | None
    lease: dict | None
    running: dict | None
    elapsed: float | None
    history: list[dict] = field(default_factory=list)


def _age(started: str | None, now: float) -> float | None:
    try:
        return max(0.0, now - datetime.fromisoformat(started).timestamp()) if started else None
    except ValueError:
        return None


def hosts(reg: Registry) -> list[HostRow]:
    now = time.time()
    found = reg.hosts()
    extras = reg.leases_and_health_logs(list(found))
    rows = []
    for name, h in found.items():
        f, (lease, history) = h["facts"], extras[name]
        running = h["running"]
        rows.append(HostRow(
            name, vendor_short(f.get("vendor", "")) if f.get("vendor") else "", f.get("hw_class", ""),
            f.get("kernel", ""), (f.get("cell") or {}).get("name", ""), h["health"], h["alive"],
            now - h["last_heartbeat"] if h["last_heartbeat"] else None, lease, running,
            _age(running.get("started"), now) if running else None, history))
    return rows


def host_names(reg: Registry) -> set[str]:
    return set(reg.hosts())


@dataclass
class QueueRow:
    name: str
    kind: str        # vendor | class | host | results | control
    depth: int
    hosts: int       # hosts that serve it


@dataclass
class SubmissionRow:
    id: str
    job: str
    created: float
    states: dict[str, int]   # queued / running / done / lost -> runs

    @property
    def settled(self) -> bool:
        return set(self.states) <= set(SETTLED)


def queues(reg: Registry) -> list[QueueRow]:
    """Every queue a host serves and the farm's own, with what waits on
    each: the same count /metrics reports (Registry.queue_depths)."""
    served: dict[str, int] = {}
    for h in reg.hosts().values():
        for q in h["queues"]:
            served[q] = served.get(q, 0) + 1
    names = sorted(served) + [q for q in FARM_QUEUES if q not in served]
    depth = reg.queue_depths(names)
    return [QueueRow(n, n.split(".", 1)[0] if "." in n else n, depth[n], served.get(n, 0)) for n in names]


def submissions(reg: Registry, limit: int = 20) -> list[SubmissionRow]:
    rows = []
    for sub_id in reg.submissions(limit):
        sub = reg.submission(sub_id)
        if not sub:
            continue
        states: dict[str, int] = {}
        for st in run_states(reg, sub).values():
            states[st.get("state", "?")] = states.get(st.get("state", "?"), 0) + 1
        rows.append(SubmissionRow(sub_id, sub["job"], sub["created"], states))
    return rows


@dataclass
class Progress:
    """One submission: each run's state, then its results and findings."""
    sub: dict
    runs: list[dict]         # host, state, verdict, elapsed
    results: list[dict]
    done: bool
    verdict: str | None      # the worst verdict once done


def check_submission_id(sub_id: str) -> str:
    if not _SUBMISSION_ID.fullmatch(sub_id) or ".." in sub_id:
        raise BadInput(f"no submission {sub_id!r}")
    return sub_id


def progress(reg: Registry, sub_id: str) -> Progress:
    """As `farm status ID` and `farm submit --wait` follow it; BadInput
    for a submission the lab does not know."""
    sub = reg.submission(check_submission_id(sub_id))
    if not sub:
        raise BadInput(f"no submission {sub_id!r}")
    now = time.time()
    runs = []
    for run_id, st in run_states(reg, sub).items():
        updated = float(st["updated"]) if st.get("updated") else None
        runs.append({"run_id": run_id, "host": st["host"], "state": st.get("state", "?"),
                     "verdict": st.get("verdict", ""), "since": now - updated if updated else None})
    done = all(r["state"] in SETTLED for r in runs)
    results = cached_results(reg, sub) if done else []
    verdict = {code: v for v, code in VERDICT_EXIT.items()}[worst_exit(results, len(sub["runs"]))] if done else None
    return Progress(sub, runs, results, done, verdict)


def job_files(jobs_dir: Path) -> dict[str, Path]:
    """The job files a browser may submit: the .yaml files in jobs/ that
    read as a job (schedules and cell tables do not), by file name."""
    from farm.spec import load_spec
    out = {}
    for path in sorted(jobs_dir.glob("*.yaml")):
        try:
            load_spec(path, elsewhere=True)
        except FarmError:
            continue
        out[path.name] = path
    return out
