"""Retry before regression: send an awaiting candidate's job to another
healthy, live host of the same class running the same kernel, so the next
triage can tell a regression from a flake. The collector does it by itself
when a failing result makes a candidate (once per candidate);
`farm triage regressions --retry` does it on demand."""
from __future__ import annotations

from pathlib import Path

from farm.config import broker_url
from farm.report.regressions import Candidate, regressions


def other_hosts(hosts: dict, c: Candidate) -> list[str]:
    return sorted(name for name, h in hosts.items()
                  if name != c.first_host and h["alive"] and h["health"] == "healthy"
                  and h["facts"].get("hw_class") == c.hw_class and h["facts"].get("kernel") == c.kernel)


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
            yield f"retry {c.job} on {c.hw_class}: no spec {spec_path} to submit"
            continue
        others = other_hosts(hosts, c)
        if not others:
            yield f"retry {c.job} on {c.hw_class}: no other live healthy host with kernel {c.kernel}"
            continue
        sub = _send(app, reg, c, spec_path.read_text(), {}, others[0])
        yield f"retry {c.job} on {c.hw_class} {c.kernel}: submitted {sub} to {others[0]}"


def auto_retry(app, reg, store, result: dict) -> str | None:
    """After a failing result: if its job, class and kernel became a
    candidate awaiting retry, send the same spec to another host once."""
    h = result.get("host") or {}
    if not h.get("hw_class"):
        return None
    # only this result's class: the collector does this for every failure
    found = next((c for c in regressions(store, result.get("job"), h.get("hw_class"))
                  if c.state == "awaiting-retry" and c.kernel == h.get("kernel")), None)
    sub = reg.submission(result.get("submission") or "")
    if found is None or not sub or "spec" not in sub:
        return None
    others = other_hosts(reg.hosts(), found)
    if not others or not reg.claim_retry(found.job, found.hw_class, found.kernel, sub["id"]):
        return None
    new = _send(app, reg, found, sub["spec"], sub.get("overrides") or {}, others[0])
    return f"retry of {found.job} on {found.hw_class} {found.kernel}: {new} to {others[0]}"
