"""What a worker does with one task: the engine's run_job, with the host's
lease held and the run visible in the registry."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from farm import crashgate
from farm.config import allow_custom_programs
from farm.errors import BadInput, FarmError
from farm.host_run import RunOptions, run_job
from farm.queue.registry import Registry
from farm.result import Result, now_iso
from farm.spec import load_spec_text
from farm.store.ingest import encode_attachments, text_attachments

ATTACH_CAP = 1 << 20  # compressed bytes of text artifacts per result
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,200}")


def safe_run_id(run_id) -> bool:
    """A run id usable as one path component (and a bpffs name's stem)."""
    return isinstance(run_id, str) and bool(_SAFE_RUN_ID.fullmatch(run_id)) and ".." not in run_id


class _Noop(Exception):
    """A zero-length job: the worker answers at once, without running it."""


# a noop's verdict: it ran nothing, so it verified nothing and is never a pass
NOOP_ERROR = "not run: a noop job (queue test), the worker answered without running it"


@dataclass
class HostContext:
    host: str
    facts: dict
    registry: Registry
    worker_id: str
    state: Path


def run_here(ctx: HostContext, payload: dict, task_id: str, send_result) -> str:
    """Run the payload's job unless its run was already settled; hand the
    result to send_result(dict). Returns what happened, for the log."""
    run_id, reg = payload.get("run_id"), ctx.registry
    if not safe_run_id(run_id):
        # It names the artifacts directory: "../x" or "a/b" would write
        # outside <state>/artifacts/. farm submit never makes such an id.
        send_result(_error_result(ctx, payload, f"refused: run id {run_id!r} is not a safe name "
                                                f"(letters, digits, _.:@-, at most 201, no '..')"))
        return f"{run_id!r}: refused, unsafe run id"
    if reg.is_lost(run_id):
        return f"{run_id}: skipped, its host was lost running it before"
    state = reg.run_state(run_id)
    if state.get("state") == "done" or "sent" in state:
        return f"{run_id}: skipped, already done"
    if not reg.acquire_lease(ctx.host, ctx.worker_id):
        result = _error_result(ctx, payload, "host lease held by another worker")
        send_result(result)
        return f"{run_id}: refused, lease busy"
    try:
        reg.set_running(ctx.host, {"run_id": run_id, "task_id": task_id, "job": payload["job"],
                                   "submission": payload["submission"], "started": now_iso()})
        try:
            if payload.get("noop"):  # bench/queue.py: measure the queue, not the engine
                raise _Noop
            spec = load_spec_text(payload["spec"], payload["job"], payload["job"], payload.get("overrides"))
            custom = [t.name for t in spec.topologies if t.source is not None]
            if custom and not allow_custom_programs():
                raise BadInput(f"refused: the job brings its own BPF source for {', '.join(custom)} and this "
                               f"host does not run custom programs (allow_custom_programs: true in its config)")
            crashgate.check(spec)  # not on a host that must survive: an error result saying why
            art = ctx.state / "artifacts" / run_id
            result = run_job(spec, RunOptions(run_id=run_id, artifacts=art)).to_dict()
            # The artifacts stay on this host; the small text ones travel with
            # the result so triage can diff two hosts' JIT listings.
            result["attachments"] = encode_attachments(text_attachments(result, art), ATTACH_CAP)
        except _Noop:
            r = Result(run_id=run_id, job=payload["job"], host=ctx.facts, started=now_iso(), error=NOOP_ERROR)
            r.settle_verdict()
            result = r.to_dict()
        except FarmError as e:
            result = _error_result(ctx, payload, str(e))
        except Exception as e:  # our bug: still a result, never a silent gap
            result = _error_result(ctx, payload, f"farm bug: {type(e).__name__}: {e}")
        result["submission"] = payload["submission"]
        send_result(result)
        reg.mark_sent(run_id)  # from here on a death of this host loses nothing
        return f"{run_id}: {result['verdict']}"
    finally:
        reg.clear_running(ctx.host)
        reg.release_lease(ctx.host, ctx.worker_id)


def _error_result(ctx: HostContext, payload: dict, why: str) -> dict:
    r = Result(run_id=str(payload.get("run_id")), job=payload["job"], host=ctx.facts, started=now_iso(), error=why)
    r.settle_verdict()
    return {**r.to_dict(), "submission": payload["submission"]}
