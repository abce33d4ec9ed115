"""Celery tasks: a few lines each around plain functions."""
from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from farm.errors import InfraError
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


# The database down (PostgreSQL restarting, say) must not cost a result: the
# message goes back on the queue and is tried again until it is stored.
_DB_DOWN = dict(autoretry_for=(InfraError, SQLAlchemyError), retry_backoff=True, retry_backoff_max=60,
                max_retries=None)


@app.task(name="farm.store", **_DB_DOWN)
def store(result: dict) -> bool:
    return COLLECTOR.store(result)


@app.task(name="farm.attach", **_DB_DOWN)
def attach(run_id: str, submission: str, recovered: dict) -> bool:
    return COLLECTOR.attach(run_id, submission, recovered)


@app.task(name="farm.tick")
def tick(entry: dict, scheduled_for: float) -> str | None:
    return COLLECTOR.tick(entry, scheduled_for)
