"""The report outbox in the results database (table `report_outbox`): one
row per (report id, channel), so a report is queued once per channel
however often it is enqueued; pending until the receiver accepted it,
then sent.

A sender claims a row before delivering it (a lease: `lease_until`, and
one attempt more), so two senders (the collector's thread and `farm report
send`) never deliver the same row at once. A sender that dies between the
receiver's acceptance and marking the row sent leaves the row pending: it
is delivered again once the lease ends. That is the one case of a report
arriving twice, and receivers dedupe it by the report id (the e-mail's
Message-ID, the webhook's Idempotency-Key / X-Farm-Report-Id)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from farm.notify.compose import Report
from farm.store import Store
from farm.store.ingest import utcnow
from farm.store.models import ReportOutbox

LEASE_S = 300.0      # longer than any delivery's timeout
ERROR_CHARS = 500
CLAIM_LIMIT = 50     # rows a sender takes at once


@dataclass(frozen=True)
class Row:
    id: int
    report_id: str
    channel: str
    subject: str
    signature_id: int | None
    title: str
    body: str
    document: dict
    state: str
    attempts: int
    last_error: str | None
    next_try: datetime
    created: datetime
    sent_at: datetime | None

    def to_dict(self) -> dict:
        return {"id": self.id, "report_id": self.report_id, "channel": self.channel, "subject": self.subject,
                "title": self.title, "state": self.state, "attempts": self.attempts, "last_error": self.last_error,
                "next_try": self.next_try.isoformat(timespec="seconds"),
                "created": self.created.isoformat(timespec="seconds"),
                "sent_at": self.sent_at.isoformat(timespec="seconds") if self.sent_at else None}


def _row(r: ReportOutbox) -> Row:
    return Row(r.id, r.report_id, r.channel, r.subject, r.signature_id, r.title, r.body, json.loads(r.document),
               r.state, r.attempts, r.last_error, r.next_try, r.created, r.sent_at)


def queued(store: Store, report_id: str) -> set[str]:
    """The channels a report id has a row for already."""
    with store.session() as s:
        return set(s.scalars(select(ReportOutbox.channel).where(ReportOutbox.report_id == report_id)))


def enqueue(store: Store, report: Report, channels, now: datetime | None = None) -> int:
    """A pending row per channel the report has none for; how many added."""
    now = now or utcnow()
    added = 0
    for channel in channels:
        try:
            with store.session.begin() as s:
                if s.scalar(select(ReportOutbox.id).where(ReportOutbox.report_id == report.id,
                                                          ReportOutbox.channel == channel)) is not None:
                    continue
                s.add(ReportOutbox(report_id=report.id, channel=channel, subject=report.subject,
                                   signature_id=report.signature_id, title=report.title, body=report.text,
                                   document=json.dumps(report.document, default=str), state="pending",
                                   attempts=0, next_try=now, created=now))
            added += 1
        except IntegrityError:
            continue  # another writer queued it in between: once is what we want
    return added


def claim(store: Store, now: datetime | None = None, force: bool = False, limit: int = CLAIM_LIMIT,
          lease_s: float = LEASE_S) -> list[Row]:
    """Pending rows that are due (any pending row with force) and that no
    other sender holds: each leased to us, its attempts counted."""
    now = now or utcnow()
    free = or_(ReportOutbox.lease_until.is_(None), ReportOutbox.lease_until <= now)
    cond = [ReportOutbox.state == "pending", free] + ([] if force else [ReportOutbox.next_try <= now])
    out = []
    with store.session() as s:
        ids = list(s.scalars(select(ReportOutbox.id).where(*cond).order_by(ReportOutbox.next_try, ReportOutbox.id)
                             .limit(limit)))
    for rid in ids:
        with store.session.begin() as s:
            got = s.execute(update(ReportOutbox).where(ReportOutbox.id == rid, *cond)
                            .values(lease_until=now + timedelta(seconds=lease_s),
                                    attempts=ReportOutbox.attempts + 1)).rowcount
            if got == 1:
                out.append(_row(s.get(ReportOutbox, rid)))
    return out


def mark_sent(store: Store, row_id: int, now: datetime | None = None, note: str | None = None) -> None:
    with store.session.begin() as s:
        s.execute(update(ReportOutbox).where(ReportOutbox.id == row_id)
                  .values(state="sent", sent_at=now or utcnow(), lease_until=None, last_error=note))


def mark_failed(store: Store, row_id: int, error: str, first_s: float, max_s: float,
                now: datetime | None = None) -> datetime:
    """Pending again, next try after an exponential backoff
    (first_s, 2 first_s, 4 first_s, ... up to max_s); returns it."""
    now = now or utcnow()
    with store.session.begin() as s:
        row = s.get(ReportOutbox, row_id)
        delay = min(max_s, first_s * 2 ** max(0, row.attempts - 1))
        row.next_try = now + timedelta(seconds=delay)
        row.lease_until = None
        row.last_error = error[:ERROR_CHARS]
        return row.next_try


def mark_suppressed(store: Store, row_id: int, why: str) -> None:
    with store.session.begin() as s:
        s.execute(update(ReportOutbox).where(ReportOutbox.id == row_id)
                  .values(state="suppressed", lease_until=None, last_error=why))


def rows(store: Store, state: str | None = None) -> list[Row]:
    """The outbox, newest first (one state only when given)."""
    q = select(ReportOutbox).order_by(ReportOutbox.created.desc(), ReportOutbox.id.desc())
    if state:
        q = q.where(ReportOutbox.state == state)
    with store.session() as s:
        return [_row(r) for r in s.scalars(q)]
