"""Results into the database: hosts and their facts history, the run, its
findings under deduplicated signatures, and its artifacts index.

Ingesting is idempotent by run id (a redelivered result, or the same JSON
file ingested twice, adds nothing) and batched: one transaction per batch,
rows inserted with executemany, so a lab's backlog goes in at thousands of
results a second.
"""
from __future__ import annotations

import base64
import hashlib
import json
import zlib
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from farm.detect.signature import normalise_line
from farm.store.known import status_for
from farm.store.models import (Artifact, FactsSnapshot, Finding, Host, KnownIssue, Run,
                               Signature, Submission, Unsupported)

FACT_FIELDS = ("vendor", "family", "model", "stepping", "model_name", "microcode",
               "kernel", "spectre_v2", "hw_class")
TEXT_ARTIFACT_CAP = 256 * 1024   # a larger listing or log stays on its host only
SIGNATURE_LEN = 512
CELL_LEN = 32   # the runs' cell columns; longer text is not a cell name anyway
TOPOLOGY_LEN = 255  # the unsupported table's topology column
NOT_RUN = "not-run"


def kept_artifact(name: str) -> bool:
    """What the farm keeps of a run's artifacts: JIT listings and the kernel log."""
    return name.endswith(".S") or name == "kmsg"


def pack(obj) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 6)


def unpack(blob: bytes | None):
    return json.loads(zlib.decompress(blob)) if blob else None


def parse_time(text: str | None) -> datetime:
    """ISO-8601 to naive UTC (what both SQLite and PostgreSQL columns hold)."""
    try:
        t = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return utcnow()
    if t.tzinfo:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def signature_key(text: str) -> str:
    """The finding's signature once more through the kernel-log normaliser,
    so results from older workers or hand-edited files dedupe too."""
    key = normalise_line(text or "") or (text or "").strip() or "(no signature)"
    return key[:SIGNATURE_LEN]


def unsupported_entries(result: dict) -> list[tuple[str, str]]:
    """(topology, reason) of what the run's kernel could not run at all
    (result schema 3); [] for older results, malformed entries left out."""
    out = []
    for u in result.get("unsupported") or ():
        if isinstance(u, dict) and isinstance(u.get("topology"), str) and u["topology"]:
            out.append((u["topology"][:TOPOLOGY_LEN], str(u.get("reason") or "")))
    return out


def not_run(result: dict) -> bool:
    """The run's only trouble was what its kernel cannot run at all: an
    error whose text is exactly Result.settle_verdict's "unsupported here:
    ..." (no findings, no other gap, no error of farm's or the lab's)."""
    entries = unsupported_entries(result)
    said = "unsupported here: " + "; ".join(f"{t} ({r})" for t, r in entries)
    return bool(entries) and result.get("verdict") == "error" and not result.get("findings") \
        and result.get("error") == said


def outcome(result: dict) -> str:
    if any(f.get("kind") == "host-lost" for f in result.get("findings", ())):
        return "lost"
    if not_run(result):
        return NOT_RUN
    v = result.get("verdict")
    return v if v in ("pass", "fail", "error") else "error"


def cell_columns(host: dict) -> dict[str, str]:
    """The run's mitigation cell from host.cell: its name and the JIT paths
    it reached. A result without one (from before cells existed) is ""
    everywhere: unknown, which triage shows as "-" and never as "default"."""
    cell = host.get("cell")
    if not isinstance(cell, dict):
        cell = {}

    def text(key: str) -> str:
        v = cell.get(key)
        if not isinstance(v, str):
            return ""
        # a path longer than the column ("unknown: the guest was lost ...", a long
        # "mixed: a, b, c") keeps its kind; the whole text stays in the stored result
        return v if len(v) <= CELL_LEN else v.split(":")[0][:CELL_LEN]
    return {"cell": text("name"), "indirect_jump": text("indirect_jump"), "return_path": text("return")}


def facts_digest(host: dict) -> str:
    return hashlib.sha256(json.dumps({k: host.get(k) for k in FACT_FIELDS},
                                     sort_keys=True).encode()).hexdigest()


def encode_attachments(blobs: dict[str, bytes], cap: int) -> dict[str, str]:
    """What a worker ships inside its result: base64 of the zlib blobs,
    kernel log first, up to cap bytes in all."""
    out, total = {}, 0
    for name in sorted(blobs, key=lambda n: (n != "kmsg", n)):
        total += len(blobs[name])
        if total > cap:
            break
        out[name] = base64.b64encode(blobs[name]).decode()
    return out


def text_attachments(result: dict, artifacts_dir: Path | None) -> dict[str, bytes]:
    """Small text artifacts as zlib blobs: shipped in the result by a worker
    (`attachments`), or read from the artifacts dir of a local run."""
    out = {}
    for name, b64 in (result.get("attachments") or {}).items():
        try:
            out[name] = base64.b64decode(b64)
        except ValueError:
            continue
    if artifacts_dir is not None:
        root = artifacts_dir.resolve()
        for name, rel in result.get("artifacts", {}).items():
            if name in out or not kept_artifact(name):
                continue
            path = (root / rel).resolve()
            if root not in path.parents or not path.is_file() or path.stat().st_size > TEXT_ARTIFACT_CAP:
                continue  # never read outside the run's own artifacts dir
            out[name] = zlib.compress(path.read_bytes(), 6)
    return out


class Ingest:
    """One batch: caches what it looked up so a batch of a thousand results
    touches each host, facts snapshot and signature once."""

    def __init__(self, session: Session):
        self.s = session
        self.hosts: dict[str, int] = {}
        self.facts: dict[tuple[int, str], int] = {}
        self.sigs: dict[str, int] = {}
        # what a batch saw, written once at its end (not an UPDATE per result)
        self.host_seen: dict[int, tuple[datetime, str, str]] = {}
        self.facts_seen: dict[int, tuple[datetime, datetime]] = {}
        self.known = [(k.pattern, k.link, k.note) for k in session.scalars(select(KnownIssue))]

    def prefetch(self, results: list[dict]) -> None:
        """The batch's known hosts, their facts snapshots and its signatures
        in three queries, instead of one a host, snapshot and signature."""
        names = list({(r.get("host") or {}).get("hostname") or "unknown" for r in results})
        for i in range(0, len(names), 500):
            self.hosts.update(self.s.execute(select(Host.hostname, Host.id)
                                             .where(Host.hostname.in_(names[i:i + 500]))).all())
        hids = list(self.hosts.values())
        for i in range(0, len(hids), 500):
            for hid, digest, fid in self.s.execute(
                    select(FactsSnapshot.host_id, FactsSnapshot.digest, FactsSnapshot.id)
                    .where(FactsSnapshot.host_id.in_(hids[i:i + 500]))):
                self.facts[(hid, digest)] = fid
        keys = list({signature_key(f.get("signature", "")) for r in results for f in r.get("findings", ())})
        for i in range(0, len(keys), 500):
            for sid, text in self.s.execute(select(Signature.id, Signature.text)
                                            .where(Signature.text.in_(keys[i:i + 500]),
                                                   Signature.status != "fixed")):
                self.sigs[text] = sid   # a fixed one goes the long way: it reopens

    def host_id(self, h: dict, seen: datetime) -> int:
        name = h.get("hostname") or "unknown"
        if name not in self.hosts:
            row = self.s.scalar(select(Host).where(Host.hostname == name))
            if row is None:
                row = Host(hostname=name, vendor=h.get("vendor", ""), hw_class=h.get("hw_class", ""),
                           first_seen=seen, last_seen=seen)
                self.s.add(row)
                self.s.flush()
            self.hosts[name] = row.id
        hid = self.hosts[name]
        prev = self.host_seen.get(hid)
        if prev is None or seen > prev[0]:
            self.host_seen[hid] = (seen, h.get("vendor", ""), h.get("hw_class", ""))
        return hid

    def facts_id(self, host_id: int, h: dict, seen: datetime) -> int:
        digest = facts_digest(h)
        key = (host_id, digest)
        if key not in self.facts:
            row = self.s.scalar(select(FactsSnapshot).where(FactsSnapshot.host_id == host_id,
                                                            FactsSnapshot.digest == digest))
            if row is None:
                row = FactsSnapshot(host_id=host_id, digest=digest, first_seen=seen, last_seen=seen,
                                    **{k: _fact(h, k) for k in FACT_FIELDS})
                self.s.add(row)
                self.s.flush()
            self.facts[key] = row.id
        fid = self.facts[key]
        first, last = self.facts_seen.get(fid, (seen, seen))
        self.facts_seen[fid] = (min(first, seen), max(last, seen))
        return fid

    def flush_seen(self) -> None:
        """The batch's last_seen/first_seen moves: one executemany a table."""
        hosts, facts = Host.__table__, FactsSnapshot.__table__
        if self.host_seen:
            self.s.execute(update(hosts).where(hosts.c.id == bindparam("b_id"),
                                               hosts.c.last_seen < bindparam("b_seen"))
                           .values(last_seen=bindparam("b_seen"), vendor=bindparam("b_vendor"),
                                   hw_class=bindparam("b_class")),
                           [dict(b_id=i, b_seen=t, b_vendor=v, b_class=c)
                            for i, (t, v, c) in self.host_seen.items()])
        if self.facts_seen:
            rows = [dict(b_id=i, b_first=f, b_last=l) for i, (f, l) in self.facts_seen.items()]
            self.s.execute(update(facts).where(facts.c.id == bindparam("b_id"),
                                               facts.c.last_seen < bindparam("b_last"))
                           .values(last_seen=bindparam("b_last")), rows)
            self.s.execute(update(facts).where(facts.c.id == bindparam("b_id"),
                                               facts.c.first_seen > bindparam("b_first"))
                           .values(first_seen=bindparam("b_first")), rows)

    def signature_id(self, text: str, kind: str, seen: datetime) -> int:
        key = signature_key(text)
        if key not in self.sigs:
            row = self.s.scalar(select(Signature).where(Signature.text == key))
            if row is None:
                status, link, note = status_for(key, self.known)
                row = Signature(text=key, kind=kind, status=status, link=link, note=note,
                                first_seen=seen, last_seen=seen, count=0)
                self.s.add(row)
                self.s.flush()
            elif row.status == "fixed":
                # seen again after it was marked fixed: it is back
                row.status = "open"
                row.note = f"reopened {seen:%Y-%m-%d}" + (f"; {row.note}" if row.note else "")
            self.sigs[key] = row.id
        return self.sigs[key]


def _fact(h: dict, k: str):
    v = h.get(k)
    if k in ("family", "model", "stepping"):
        return v if isinstance(v, int) else None
    return "" if v is None else str(v)


def ingest_results(session: Session, items: list[tuple[dict, str | None, Path | None]]) -> int:
    """Add each (result, submission, artifacts_dir) whose run id is new;
    returns how many were added. The caller commits."""
    ids = [r["run_id"] for r, _, _ in items]
    have = set()
    for i in range(0, len(ids), 500):
        have.update(session.scalars(select(Run.run_id).where(Run.run_id.in_(ids[i:i + 500]))))
    ing = Ingest(session)
    ing.prefetch([r for r, _, _ in items if r["run_id"] not in have])
    runs, findings, artifacts, unsupported, sig_counts = [], [], [], [], {}
    subs: dict[str, tuple[str, datetime]] = {}
    for result, submission, art_dir in items:
        run_id = result["run_id"]
        if run_id in have:
            continue
        have.add(run_id)
        h = result.get("host") or {}
        started = parse_time(result.get("started"))
        hid = ing.host_id(h, started)
        fid = ing.facts_id(hid, h, started)
        sub = submission or result.get("submission")
        if sub:
            subs.setdefault(sub, (result.get("job", ""), started))
        stats = result.get("stats") or {}
        runs.append(dict(run_id=run_id, submission_id=sub, job=result.get("job", ""), host_id=hid,
                         facts_id=fid, vendor=h.get("vendor", ""), hw_class=h.get("hw_class", ""),
                         kernel=h.get("kernel", ""), **cell_columns(h), verdict=result.get("verdict", "error"),
                         outcome=outcome(result), started=started,
                         duration_s=float(result.get("duration_s") or 0.0),
                         updates_per_s=float(stats.get("updates_per_s") or 0.0),
                         tail_calls_per_s=float(stats.get("tail_calls_per_s") or 0.0),
                         error=result.get("error"),
                         result=pack({k: v for k, v in result.items() if k != "attachments"})))
        for f in result.get("findings", ()):
            sid = ing.signature_id(f.get("signature", ""), f.get("kind", ""), started)
            first, last, n = sig_counts.get(sid, (started, started, 0))
            sig_counts[sid] = (min(first, started), max(last, started), n + 1)
            findings.append(dict(run_id=run_id, signature_id=sid, kind=f.get("kind", ""),
                                 summary=f.get("summary", ""), cpu=f.get("cpu") if isinstance(f.get("cpu"), int) else None,
                                 at=str(f.get("at", "")), detail=json.dumps(f.get("detail", {}))))
        unsupported += [dict(run_id=run_id, topology=t, reason=why) for t, why in unsupported_entries(result)]
        # The index holds what the farm keeps: the small text artifacts with
        # their content. Where every other artifact lies on its host is in
        # the stored result's `artifacts` map.
        for name, blob in text_attachments(result, art_dir).items():
            artifacts.append(dict(run_id=run_id, name=name, path=str(result.get("artifacts", {}).get(name, name)),
                                  content=blob, size=len(zlib.decompress(blob))))
    if not runs:
        return 0
    ing.flush_seen()
    _add_submissions(session, subs)
    # Core inserts of the tables: executemany, without the ORM's per-row work
    session.execute(insert(Run.__table__), runs)
    if findings:
        session.execute(insert(Finding.__table__), findings)
    if artifacts:
        session.execute(insert(Artifact.__table__), artifacts)
    if unsupported:
        session.execute(insert(Unsupported.__table__), unsupported)
    if sig_counts:
        sigs = Signature.__table__
        rows = [dict(b_id=sid, b_first=first, b_last=last, b_n=n)
                for sid, (first, last, n) in sig_counts.items()]
        session.execute(update(sigs).where(sigs.c.id == bindparam("b_id"))
                        .values(count=sigs.c.count + bindparam("b_n")), rows)
        session.execute(update(sigs).where(sigs.c.id == bindparam("b_id"), sigs.c.last_seen < bindparam("b_last"))
                        .values(last_seen=bindparam("b_last")), rows)
        session.execute(update(sigs).where(sigs.c.id == bindparam("b_id"), sigs.c.first_seen > bindparam("b_first"))
                        .values(first_seen=bindparam("b_first")), rows)
    return len(runs)


def _add_submissions(session: Session, subs: dict[str, tuple[str, datetime]]) -> None:
    if not subs:
        return
    have = set(session.scalars(select(Submission.id).where(Submission.id.in_(list(subs)))))
    new = [dict(id=k, job=job, created=t) for k, (job, t) in subs.items() if k not in have]
    if new:
        session.execute(insert(Submission), new)
