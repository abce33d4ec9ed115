"""Bisecting confirmed regressions by themselves (a schedule's
bisect_regressions, jobs/schedules.yaml): the collector, after a failing
result, finds the confirmed regressions of that job, claims each once in
the results database (its bisections row, keyed by the regression) and
sends a farm.bisect task to the lab queue; a worker serving that queue
(FARM_EXTRA_QUEUES=lab) runs the bisection in guests and fills the row.
Plain functions: farm/queue/collector.py and farm/queue/tasks.py only call
them."""
from __future__ import annotations

import tempfile
from pathlib import Path

from farm.queue.routing import LAB_QUEUE
from farm.report.cell_axis import cell_label
from farm.report.regressions import Candidate, regressions
from farm.result import INFRA_KINDS


def regression_key(c: Candidate) -> str:
    """One bisection a regression: its job, cell and the two kernels (the
    same kernel step regressing on two classes is one bisection: the guests
    do not depend on the class)."""
    return f"{c.job}|{c.cell}|{c.previous_kernel}|{c.kernel}"


def start_bisections(app, reg, store, result: dict) -> list[str]:
    """After a failing result: each confirmed regression of its job (on its
    class, in its cell) that its job's schedule wants bisected and that was
    never claimed: claimed, and a farm.bisect task sent. Never waits for one."""
    policy = reg.bisect_policy(result.get("job", ""))
    h = result.get("host") or {}
    if policy is None or not h.get("hw_class"):
        return []
    from farm.store.ingest import cell_columns
    sent = []
    for c in regressions(store, result["job"], h["hw_class"], cell_columns(h)["cell"]):
        if c.state != "regression":
            continue
        key = regression_key(c)
        sigs = [s for s in c.signatures if s not in INFRA_KINDS]
        signature = sigs[0] if len(sigs) == 1 else None
        if store.claim_bisection(key, c.job, signature, "introduced", policy.get("good") or c.previous_kernel,
                                 c.kernel) is None:
            continue  # bisected (or being bisected) already
        payload = {"regression": key, "job": c.job, "spec": policy["spec"], "previous_kernel": c.previous_kernel,
                   "kernel": c.kernel, "good": policy.get("good"), "cpu_models": policy["cpu_models"],
                   "repeat": policy["repeat"], "cell": policy.get("cell") or (c.cell or "default"),
                   "signature": signature}
        app.send_task("farm.bisect", args=[payload], queue=LAB_QUEUE)
        sent.append(f"bisecting {c.job} {c.previous_kernel} -> {c.kernel} (cell {cell_label(c.cell)}) as {key}")
    return sent


def package_for_release(release: str, available) -> str | None:
    """A kernel release (6.1.0-57-amd64) as its image package, unsigned first."""
    names = {k.package for k in available}
    for name in (f"linux-image-{release}-unsigned", f"linux-image-{release}"):
        if name in names:
            return name
    return None


def run_scheduled(payload: dict, store=None, available=None, runner=None) -> str:
    """The farm.bisect task's body: the regression's bisection, stored into
    its claimed row; a bisection that cannot start or breaks is marked
    failed with why (never tried again by itself)."""
    from farm.bisect.run import BisectRequest, run_bisect
    from farm.errors import FarmError
    from farm.store import open_store
    store = store or open_store()
    key = payload["regression"]
    if not store.start_bisection(key):  # delivered again, or never claimed: not run twice
        return f"{key}: not queued (started before, or never claimed): nothing to do"
    try:
        if available is None:
            from farm.guests.kcache import cached_size
            from farm.guests.kernels import available_kernels
            available = available_kernels(cached_size)
        bad = package_for_release(payload["kernel"], available)
        good = payload.get("good") or (
            (p := package_for_release(payload["previous_kernel"], available)) and f"deb:{p}")
        if bad is None or good is None:
            missing = payload["kernel"] if bad is None else payload["previous_kernel"]
            raise FarmError(f"no kernel image package in the archive for {missing}")
        with tempfile.TemporaryDirectory(prefix="farm-bisect-") as d:
            job = Path(d) / f"{payload['job']}.yaml"
            job.write_text(payload["spec"])
            req = BisectRequest(job, good, f"deb:{bad}", payload["cpu_models"], payload["cell"],
                                payload["repeat"], None, True, payload.get("signature"), regression=key)
            code, answer = (runner or run_bisect)(req, say=lambda line: print(f"farm bisect: {line}", flush=True))
        return f"{key}: " + (f"{answer['direction']} in {answer['boundary'][1]['package']}" if answer["boundary"]
                             else f"no boundary: {answer['refused']}")
    except Exception as e:  # noqa: BLE001 (the row says why; the task never retries a guest bisection)
        why = f"{type(e).__name__}: {e}" if not isinstance(e, FarmError) else str(e)
        store.fail_bisection(key, why)
        return f"{key}: failed: {why}"
