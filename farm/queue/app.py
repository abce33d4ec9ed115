"""The Celery app: JSON only, one job at a time, late acks.

Kombu's Redis transport redelivers an unacked task only after
visibility_timeout; ours is above the longest job (7 days: the spec's limit),
so a long job is never run twice. A task orphaned by a dead host comes back
within a minute by the farm's own doing instead: the collector's reaper sees
the host's heartbeat expire (HEARTBEAT_TTL_S) and puts the task back on its
queue (kombu's restore_by_tag), where the run id, already marked lost, keeps
it from running twice. unacked_restore_limit stays at kombu's default.
"""
from __future__ import annotations

from celery import Celery

from farm.config import broker_url
from farm.queue.routing import DEFAULT_QUEUE
from farm.spec import MAX_DURATION_S

VISIBILITY_TIMEOUT_S = int(MAX_DURATION_S + 24 * 3600)


def make_app(url: str | None = None) -> Celery:
    app = Celery("farm", broker=url or broker_url())
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        event_serializer="json", result_accept_content=["json"],
        task_ignore_result=True,  # results travel on the results queue, not a backend
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=True, task_default_queue=DEFAULT_QUEUE,
        # Celery's monitoring events (task-sent/-received/-started/-succeeded,
        # worker-online/-heartbeat), for `celery flower` (docs/metrics.md): on
        # Redis an event is one PUBLISH to the celeryev channel, which costs
        # nothing while no monitor subscribes.
        worker_hijack_root_logger=False, worker_send_task_events=True, task_send_sent_event=True,
        beat_max_loop_interval=5,
    )
    return app


app = make_app()
