"""Celery tasks: a few lines each around plain functions."""
from __future__ import annotations

from farm.queue.app import app
from farm.queue.routing import RESULTS_QUEUE

# Set by `farm worker` / `farm collector` in their own process before the
# Celery worker starts.
HOST = None       # hostrun.HostContext
COLLECTOR = None  # collector.Collector


def send_result(result: dict) -> None:
    app.send_task("farm.store", args=[result], queue=RESULTS_QUEUE)


@app.task(name="farm.run", bind=True)
def run(self, payload: dict) -> str:
    from farm.queue.hostrun import run_here
    outcome = run_here(HOST, payload, self.request.id, send_result)
    print(f"farm worker {HOST.host}: {outcome}", flush=True)
    return outcome


@app.task(name="farm.store")
def store(result: dict) -> bool:
    return COLLECTOR.store(result)


@app.task(name="farm.attach")
def attach(run_id: str, submission: str, recovered: dict) -> bool:
    return COLLECTOR.attach(run_id, submission, recovered)


@app.task(name="farm.tick")
def tick(entry: dict, scheduled_for: float) -> str | None:
    return COLLECTOR.tick(entry, scheduled_for)
