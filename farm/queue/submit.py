"""Fan-out of a job to the hosts that match, and following it to the end."""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from farm.errors import EXIT_PASS, VERDICT_EXIT, BadInput
from farm.queue.registry import Registry
from farm.queue.routing import Selection, select_hosts
from farm.spec import JobSpec


def new_submission_id(prefix: str = "s") -> str:
    return f"{prefix}{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def selection_for(spec: JobSpec, where=(), hosts=(), all_hosts=False) -> Selection:
    """The CLI's choice if it made one, else the spec's targets."""
    if where or hosts or all_hosts:
        return Selection(tuple(where), tuple(hosts), all_hosts)
    t = spec.targets
    if t.any:
        if t.cells:  # the class's queue is served by its hosts of every cell
            raise BadInput("targets: any: true goes to a class's queue and cannot also pick cells")
        return Selection(any_of_class=t.hw_class)
    pairs = [(k, str(v)) for k, v in (("vendor", t.vendor), ("hw_class", t.hw_class), ("model", t.model)) if v]
    return Selection(tuple(pairs), tuple(t.hosts or ()), t.all, cells=tuple(t.cells or ()))


def submit(app, reg: Registry, spec: JobSpec, spec_text: str, sel: Selection,
           overrides: dict | None = None, sub_id: str | None = None, noop: bool = False) -> dict:
    """Queue one task per matching healthy host (or one for the class);
    returns the submission record."""
    sub_id = sub_id or new_submission_id()
    if sel.any_of_class:
        targets = {f"{sub_id}.any-{sel.any_of_class}": ("any:" + sel.any_of_class, f"class.{sel.any_of_class}")}
    else:
        try:
            names = select_hosts(reg.hosts(), sel)
        except ValueError as e:
            raise BadInput(str(e)) from None
        if not names:
            raise BadInput("no healthy host matches this submission (see `farm hosts`)")
        targets = {f"{sub_id}.{h}": (h, f"host.{h}") for h in names}
    # the spec goes along so a retry (farm/report/retry.py) can send it again
    sub = {"id": sub_id, "job": spec.name, "created": time.time(), "spec": spec_text,
           "overrides": overrides or {},
           "runs": {run_id: host for run_id, (host, _) in targets.items()}}
    reg.add_submission(sub)
    for run_id, (host, queue) in targets.items():
        payload = {"submission": sub_id, "run_id": run_id, "job": spec.name, "spec": spec_text,
                   "overrides": overrides or {}, "noop": noop}
        app.send_task("farm.run", args=[payload], queue=queue)
    return sub


def run_states(reg: Registry, sub: dict) -> dict[str, dict]:
    return {run_id: {"host": host, **reg.run_state(run_id)} for run_id, host in sub["runs"].items()}


def cached_results(reg: Registry, sub: dict) -> list[dict]:
    return [r for r in map(reg.cached_result, sub["runs"]) if r]


def worst_exit(results: list[dict], expected: int) -> int:
    """The worst verdict's exit code; a missing result counts as an error."""
    verdicts = {r["verdict"] for r in results} | ({"error"} if len(results) < expected else set())
    return max((VERDICT_EXIT[v] for v in verdicts), default=EXIT_PASS)
