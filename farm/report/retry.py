"""Retry before regression: send each awaiting candidate's job to another
healthy, live host of the same class (and kernel), so the next triage can
tell a regression from a flake."""
from __future__ import annotations

from pathlib import Path

from farm.config import broker_url
from farm.report.regressions import Candidate


def retry_awaiting(found: list[Candidate], jobs_dir: Path):
    """Yield one line per candidate saying what was submitted, or why not."""
    from farm.queue.app import app
    from farm.queue.registry import Registry, connect
    from farm.queue.routing import Selection
    from farm.queue.submit import submit
    from farm.spec import load_spec

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
        others = sorted(name for name, h in hosts.items()
                        if name != c.first_host and h["alive"] and h["health"] == "healthy"
                        and h["facts"].get("hw_class") == c.hw_class and h["facts"].get("kernel") == c.kernel)
        if not others:
            yield f"retry {c.job} on {c.hw_class}: no other live healthy host with kernel {c.kernel}"
            continue
        spec = load_spec(str(spec_path), elsewhere=True)
        sub = submit(app, reg, spec, spec_path.read_text(), Selection(hosts=(others[0],)))
        yield f"retry {c.job} on {c.hw_class} {c.kernel}: submitted {sub['id']} to {others[0]}"
