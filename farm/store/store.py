"""The results database as the rest of farm sees it: add results, read them
back, amend one (what a returning host recovered), mark signatures."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker

from farm.errors import BadInput, InfraError
from farm.store.db import make_engine, migrate
from farm.store.ingest import ingest_results, pack, unpack, utcnow
from farm.store.known import status_for
from farm.store.models import Artifact, Bisection, KnownIssue, Run, Signature

BATCH = 1000
STATUSES = ("open", "fixed", "known")
INGEST_LOCK = 0x6661726D  # "farm"


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.session = sessionmaker(engine, expire_on_commit=False)

    # -- writing -------------------------------------------------------------------

    def add(self, result: dict, submission: str | None = None, artifacts_dir: Path | None = None) -> bool:
        """Store one result unless its run id is in already; True if added."""
        return self.add_many([(result, submission, artifacts_dir)]) == 1

    def add_many(self, items, batch: int = BATCH) -> int:
        """(result, submission, artifacts_dir) triples, a transaction per batch."""
        added, chunk = 0, []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                added += self._add_batch(chunk)
                chunk = []
        return added + (self._add_batch(chunk) if chunk else 0)

    def _add_batch(self, chunk) -> int:
        for attempt in range(3):
            try:
                with self.session.begin() as s:
                    if self.engine.dialect.name == "postgresql":
                        # writers take turns (SQLite's writes do anyway): the
                        # batch's look-ups stay true until it commits
                        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
                    return ingest_results(s, chunk)
            except IntegrityError:
                # Another writer added a host, signature or run id in between:
                # the batch is rolled back whole and looked up afresh.
                if attempt == 2:
                    raise
            except OperationalError as e:
                raise InfraError(f"database: {e.orig}") from None
        return 0

    def update(self, run_id: str, change) -> bool:
        """Rewrite a run's stored result with change(result)."""
        with self.session.begin() as s:
            run = s.get(Run, run_id)
            if run is None or run.result is None:
                return False
            result = unpack(run.result)
            change(result)
            run.result = pack(result)
            return True

    # -- reading -------------------------------------------------------------------

    def results(self, submission: str) -> list[dict]:
        with self.session() as s:
            blobs = s.scalars(select(Run.result).where(Run.submission_id == submission)
                              .order_by(Run.started, Run.run_id))
            return [unpack(b) for b in blobs if b]

    def latest_submission(self) -> str | None:
        from farm.store.models import Submission
        with self.session() as s:
            return s.scalar(select(Submission.id).order_by(Submission.created.desc()).limit(1))

    def result(self, run_id: str) -> dict | None:
        with self.session() as s:
            return unpack(s.scalar(select(Run.result).where(Run.run_id == run_id)))

    def artifact_text(self, run_id: str, name: str) -> str | None:
        import zlib
        with self.session() as s:
            blob = s.scalar(select(Artifact.content).where(Artifact.run_id == run_id, Artifact.name == name))
        return zlib.decompress(blob).decode(errors="replace") if blob else None

    def run_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Run))

    # -- signatures ----------------------------------------------------------------

    def load_known(self, entries) -> int:
        """Replace the known-issues list and mark matching signatures known
        (and unmark ones no pattern matches any more); returns how many
        signatures are known now."""
        with self.session.begin() as s:
            s.execute(delete(KnownIssue))
            for pattern, link, note in entries:
                s.add(KnownIssue(pattern=pattern, link=link, note=note))
            known = 0
            for sig in s.scalars(select(Signature).where(Signature.status != "fixed")):
                status, link, note = status_for(sig.text, entries)
                if status == "known":
                    sig.status, sig.link, sig.note = "known", link, note
                    known += 1
                elif sig.status == "known":
                    sig.status, sig.link, sig.note = "open", None, None
            return known

    def set_status(self, sig_id: int, status: str, note: str | None = None) -> None:
        if status not in STATUSES:
            raise BadInput(f"status must be one of {', '.join(STATUSES)}")
        with self.session.begin() as s:
            sig = s.get(Signature, sig_id)
            if sig is None:
                raise BadInput(f"no signature #{sig_id} (see `farm triage signatures`)")
            sig.status = status
            if note is not None:
                sig.note = note

    # -- bisections ----------------------------------------------------------------

    def add_bisection(self, answer: dict, regression: str | None = None) -> int:
        """Store a `farm bisect` answer (farm.bisect.run.answer); with
        regression, it fills that regression's queued row (claim_bisection).
        Returns the row's id."""
        import json
        boundary = answer.get("boundary") or [None, None]
        ranked = ((answer.get("suspects") or {}).get("ranked") or [])
        values = dict(
            job=answer["job"][:255], signature=(answer.get("signature") or None) and answer["signature"][:512],
            direction=answer["direction"], good=answer["good"]["package"], bad=answer["bad"]["package"],
            boundary_older=boundary[0] and boundary[0]["package"], boundary_newer=boundary[1] and boundary[1]["package"],
            upstream_older=boundary[0] and boundary[0]["upstream"], upstream_newer=boundary[1] and boundary[1]["upstream"],
            confidence=answer.get("confidence"), top_suspect=ranked[0].get("text") if ranked else None,
            suspects=json.dumps(answer["suspects"]) if answer.get("suspects") is not None else None,
            status="named" if answer.get("boundary") else "refused", refused=answer.get("refused"),
            answer=pack(answer))
        with self.session.begin() as s:
            row = s.scalar(select(Bisection).where(Bisection.regression == regression)) if regression else None
            if row is None:
                row = Bisection(regression=regression, created=utcnow(), **values)
                s.add(row)
            else:
                for k, v in values.items():
                    setattr(row, k, v)
            s.flush()
            return row.id

    def claim_bisection(self, regression: str, job: str, signature: str | None, direction: str,
                        good: str, bad: str) -> int | None:
        """Mark a regression as being bisected (status queued): its id, or
        None when that regression was claimed before (never bisected twice)."""
        try:
            with self.session.begin() as s:
                row = Bisection(regression=regression[:512], job=job[:255], signature=signature and signature[:512],
                                direction=direction, good=good, bad=bad, status="queued", created=utcnow())
                s.add(row)
                s.flush()
                return row.id
        except IntegrityError:
            return None

    def start_bisection(self, regression: str) -> bool:
        """True for the one task that may run a claimed (queued) bisection:
        it becomes running; a task delivered again finds it so and stops."""
        with self.session.begin() as s:
            return s.execute(update(Bisection).where(Bisection.regression == regression,
                                                     Bisection.status == "queued")
                             .values(status="running")).rowcount == 1

    def fail_bisection(self, regression: str, why: str) -> None:
        """A claimed bisection whose task broke: failed, with why (still never retried by itself)."""
        with self.session.begin() as s:
            s.execute(update(Bisection).where(Bisection.regression == regression,
                                              Bisection.status.in_(("queued", "running")))
                      .values(status="failed", refused=why))

    def bisections(self, signature: str | None = None, job: str | None = None) -> list[dict]:
        """Stored bisections, newest first: their columns (no answer JSON)."""
        with self.session() as s:
            q = select(Bisection).order_by(Bisection.created.desc(), Bisection.id.desc())
            if signature is not None:
                q = q.where(Bisection.signature == signature)
            if job is not None:
                q = q.where(Bisection.job == job)
            return [{c.name: getattr(r, c.name) for c in Bisection.__table__.columns if c.name != "answer"}
                    for r in s.scalars(q)]

    def bisection_answer(self, bisection_id: int) -> dict | None:
        with self.session() as s:
            return unpack(s.scalar(select(Bisection.answer).where(Bisection.id == bisection_id)))

    # -- retention -----------------------------------------------------------------

    def gc(self, older_than: timedelta, now: datetime | None = None) -> dict:
        """Drop the artifacts and the raw result JSON of runs started before
        the cut-off; runs, findings, signatures and their counts stay."""
        cutoff = (now or utcnow()) - older_than
        with self.session.begin() as s:
            old = select(Run.run_id).where(Run.started < cutoff)
            arts = s.execute(delete(Artifact).where(Artifact.run_id.in_(old))).rowcount
            blobs = s.execute(update(Run).where(Run.started < cutoff, Run.result.is_not(None))
                              .values(result=None)).rowcount
        return {"cutoff": cutoff.isoformat(timespec="seconds"), "artifacts_removed": arts,
                "results_trimmed": blobs}


def open_store(url: str | None = None) -> Store:
    engine = make_engine(url)
    migrate(engine)
    return Store(engine)
