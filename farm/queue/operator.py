"""What an operator does to the lab, one function each for `farm submit` /
`farm hosts` and the web page alike: the same checks, the same errors
(BadInput, exit 2 on the command line, a 400 page on the web)."""
from __future__ import annotations

from pathlib import Path

from farm.errors import BadInput
from farm.queue.registry import Registry

HEALTH_ACTIONS = ("release", "quarantine")


def submit_job_file(app, reg: Registry, job: str | Path, where: str = "", hosts: str = "",
                    all_hosts: bool = False, duration: str | None = None) -> dict:
    """Validate a job file and its targets and queue it: the submission
    record. where: "vendor=amd,hw_class=amd-zen*"; hosts: "a,b"."""
    from farm.cli.run import duration_override
    from farm.queue.routing import parse_where
    from farm.queue.submit import selection_for, submit
    from farm.spec import load_spec
    from farm.inputs import read_input

    overrides = duration_override(duration or None)
    spec = load_spec(job, overrides, elsewhere=True)
    try:
        pairs = parse_where(where)
    except ValueError as e:
        raise BadInput(f"--where: {e}") from None
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    sel = selection_for(spec, pairs, names, all_hosts)
    return submit(app, reg, spec, read_input(Path(job), "job file"), sel, overrides)


def change_health(reg: Registry, host: str, action: str) -> str:
    """Release (healthy) or quarantine a registered host; its new health."""
    if action not in HEALTH_ACTIONS:
        raise BadInput(f"no such health action {action!r} (release or quarantine)")
    try:
        if action == "release":
            reg.release(host)
            return "healthy"
        reg.quarantine(host)
        return "quarantined"
    except KeyError:
        raise BadInput(f"unknown host {host!r}") from None
