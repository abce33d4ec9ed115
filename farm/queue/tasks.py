"""Celery tasks: a few lines each around plain functions."""
from __future__ import annotations

import time

import redis
from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from farm.errors import InfraError
from farm.queue.app import app
from farm.queue.routing import RESULTS_QUEUE

# Set by `farm worker` / `farm collector` in their own process before the
# Celery worker starts.
HOST = None       # hostrun.HostContext
COLLECTOR = None  # collector.Collector


# What a broker that is down (restarting, say) raises at a publish, once
# kombu's own few quick retries are spent.
_BROKER_DOWN = (OperationalError, redis.ConnectionError, redis.TimeoutError, ConnectionError)


def send_result(result: dict, retry_every_s: float = 1.0) -> None:
    """Onto the results queue. A broker that is down must not cost the
    result (the task would fail, its ack with it, and the run be a silent
    gap): it waits here, in memory, until the broker answers again."""
    said = False
    while True:
        try:
            app.send_task("farm.store", args=[result], queue=RESULTS_QUEUE)
            return
        except _BROKER_DOWN as e:
            if not said:
                print(f"farm: result of {result.get('run_id')} waits for the broker: {e}", flush=True)
                said = True
            time.sleep(retry_every_s)


@app.task(name="farm.run", bind=True)
def run(self, payload: dict) -> str:
    from farm.queue.worker_run import run_here
    outcome = run_here(HOST, payload, self.request.id, send_result)
    print(f"farm worker {HOST.host}: {outcome}", flush=True)
    return outcome


# The database down (PostgreSQL restarting, say) must not cost a result: the
# message goes back on the queue and is tried again until it is stored.
_DB_DOWN = dict(autoretry_for=(InfraError, SQLAlchemyError), retry_backoff=True, retry_backoff_max=60,
                max_retries=None)


@app.task(name="farm.store", bind=True, **_DB_DOWN)
def store(self, result: dict) -> bool:
    try:
        return COLLECTOR.store(result)
    except _DB_DOWN["autoretry_for"] as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"farm collector: result of {result.get('run_id')} waits for the database "
              f"(try {self.request.retries + 1}): {first}", flush=True)
        raise


@app.task(name="farm.attach", **_DB_DOWN)
def attach(run_id: str, submission: str, recovered: dict) -> bool:
    return COLLECTOR.attach(run_id, submission, recovered)


@app.task(name="farm.tick")
def tick(entry: dict, scheduled_for: float) -> str | None:
    return COLLECTOR.tick(entry, scheduled_for)


@app.task(name="farm.bisect")
def bisect(payload: dict) -> str:
    """A confirmed regression's bisection in guests, on a worker serving the lab queue."""
    from farm.bisect.scheduled import run_scheduled
    said = run_scheduled(payload)
    print(f"farm worker: bisect {said}", flush=True)
    return said
