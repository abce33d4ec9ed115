"""Retry before regression: send an awaiting candidate's job to another
healthy, live host of the same class running the same kernel in the same
mitigation cell (a candidate is one cell's: a retry in another cell lands in
another series and would never decide it), so the next triage can tell a
regression from a flake. The collector does it by itself
when a failing result makes a candidate (once per candidate);
`farm triage regressions --retry` does it on demand."""
from __future__ import annotations

from pathlib import Path

from farm.config import broker_url
from farm.report.cell_axis import cell_label
from farm.report.regressions import Candidate, regressions
from farm.store.ingest import cell_columns


def other_hosts(hosts: dict, c: Candidate) -> list[str]:
    """Live, healthy hosts of the candidate's class and kernel: those
    registered in its cell first (a worker registers the cell it booted in,
    farm/queue/daemons.py), then those that registered none (an older
    worker: its cell is unknown, the retry may still land in the right one);
    never one registered in another cell, whose result could not decide."""
    def cell_of(name: str) -> str:
        return cell_columns(hosts[name]["facts"])["cell"]
    fit = [name for name, h in hosts.items()
           if name != c.first_host and h["alive"] and h["health"] == "healthy"
           and h["facts"].get("hw_class") == c.hw_class and h["facts"].get("kernel") == c.kernel
           and cell_of(name) in (c.cell, "")]
    return sorted(fit, key=lambda name: (cell_of(name) != c.cell, name))


def _what(c: Candidate) -> str:
    return f"{c.job} on {c.hw_class} (cell {cell_label(c.cell)})"


def _send(app, reg, c: Candidate, spec_text: str, overrides: dict, host: str) -> str:
    from farm.queue.routing import Selection
    from farm.queue.submit import submit
    from farm.spec import load_spec_text
    spec = load_spec_text(spec_text, c.job, c.job, overrides, elsewhere=True)
    return submit(app, reg, spec, spec_text, Selection(hosts=(host,)), overrides)["id"]


def retry_awaiting(found: list[Candidate], jobs_dir: Path):
    """Yield one line per awaiting candidate saying what was submitted, or why not."""
    from farm.queue.app import app
    from farm.queue.registry import Registry, connect

    waiting = [c for c in found if c.state == "awaiting-retry"]
    if not waiting:
        return
    reg = Registry(connect(broker_url()))
    hosts = reg.hosts()
    for c in waiting:
        spec_path = jobs_dir / f"{c.job}.yaml"
        if not spec_path.is_file():
            yield f"retry {_what(c)}: no spec {spec_path} to submit"
            continue
        others = other_hosts(hosts, c)
        if not others:
            yield f"retry {_what(c)}: no other live healthy host with kernel {c.kernel} in that cell"
            continue
        sub = _send(app, reg, c, spec_path.read_text(), {}, others[0])
        yield f"retry {_what(c)} {c.kernel}: submitted {sub} to {others[0]}"


def auto_retry(app, reg, store, result: dict) -> str | None:
    """After a failing result: if its job, class, kernel and cell became a
    candidate awaiting retry, send the same spec to another host once."""
    h = result.get("host") or {}
    if not h.get("hw_class"):
        return None
    # only this result's class and cell: the collector does this for every failure
    found = next((c for c in regressions(store, result.get("job"), h.get("hw_class"), cell_columns(h)["cell"])
                  if c.state == "awaiting-retry" and c.kernel == h.get("kernel")), None)
    sub = reg.submission(result.get("submission") or "")
    if found is None or not sub or "spec" not in sub:
        return None
    others = other_hosts(reg.hosts(), found)
    if not others or not reg.claim_retry(found.job, found.hw_class, found.kernel, sub["id"], found.cell):
        return None
    new = _send(app, reg, found, sub["spec"], sub.get("overrides") or {}, others[0])
    return f"retry of {_what(found)} {found.kernel}: {new} to {others[0]}"
