"""The sender: delivers the outbox's due rows and retries failures with
backoff. `drain` is one pass; `send_forever` the loop the collector runs
in a thread (and `farm report send` in the foreground)."""
from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import select

from farm.notify import outbox, smtp, webhook
from farm.notify.settings import Delivery
from farm.notify.smtp import DeliveryError
from farm.store import Store
from farm.store.ingest import utcnow
from farm.store.models import Signature

POLL_S = 5.0


def deliver(d: Delivery, row) -> str | None:
    """One row through its channel; raises DeliveryError."""
    if row.channel == "smtp" and d.smtp is not None:
        return smtp.send(d.smtp, row)
    if row.channel == "webhook" and d.webhook is not None:
        webhook.send(d.webhook, row)
        return None
    raise DeliveryError(f"channel {row.channel} is not configured any more (reports.{row.channel})")


def _known(store: Store, signature_id: int | None) -> bool:
    if signature_id is None:
        return False
    with store.session() as s:
        return s.scalar(select(Signature.status).where(Signature.id == signature_id)) == "known"


def drain(store: Store, d: Delivery, now: datetime | None = None, force: bool = False, say=None) -> dict:
    """Deliver every pending row that is due (every pending one with
    force); {"sent", "failed", "suppressed"} counts. A row whose signature
    was marked known meanwhile is suppressed, not sent."""
    done = {"sent": 0, "failed": 0, "suppressed": 0}
    while True:
        claimed = outbox.claim(store, now or utcnow(), force=force)
        for row in claimed:
            if _known(store, row.signature_id):
                outbox.mark_suppressed(store, row.id, "signature marked known before delivery")
                done["suppressed"] += 1
                continue
            try:
                note = deliver(d, row)
            except DeliveryError as e:
                when = outbox.mark_failed(store, row.id, str(e), d.retry_first_s, d.retry_max_s, now or utcnow())
                done["failed"] += 1
                if say:
                    say(f"report {row.report_id} via {row.channel}: attempt {row.attempts} failed ({e}); "
                        f"next try {when:%Y-%m-%d %H:%M:%S}")
                continue
            outbox.mark_sent(store, row.id, now or utcnow(), note)
            done["sent"] += 1
            if say:
                say(f"report {row.report_id} via {row.channel}: sent ({row.title})")
        if len(claimed) < outbox.CLAIM_LIMIT or force:
            return done  # each row tried once a pass; force: a failed one is not claimed again


def send_forever(store: Store, d: Delivery, stop: threading.Event, wake: threading.Event | None = None,
                 poll_s: float = POLL_S, say=print) -> None:
    """Drain until stop is set; wake (set by whoever enqueued) ends a wait early.
    A database or any other error is said and the loop goes on."""
    while not stop.is_set():
        try:
            drain(store, d, say=say)
        except Exception as e:  # noqa: BLE001 (the sender outlives a database hiccup)
            say(f"farm reports: sender: {type(e).__name__}: {e}")
        if wake is not None:
            wake.wait(poll_s)
            wake.clear()
        else:
            stop.wait(poll_s)
