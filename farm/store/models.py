"""The results database: what ran where, what broke, and since when.

Runs carry their host's vendor, hw_class and kernel as they were at the time
(copied from the facts snapshot) so the triage matrix groups one table, and a
host's later microcode or kernel update never rewrites its history. Likewise
the mitigation cell the run was booted in (host.cell of the result).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    vendor: Mapped[str] = mapped_column(String(32))
    hw_class: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class FactsSnapshot(Base):
    """One row per distinct set of facts a host reported: a new microcode
    or kernel adds a row, the same facts again only move last_seen."""
    __tablename__ = "facts"
    __table_args__ = (UniqueConstraint("host_id", "digest"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    vendor: Mapped[str] = mapped_column(String(32))
    family: Mapped[int | None]
    model: Mapped[int | None]
    stepping: Mapped[int | None]
    model_name: Mapped[str] = mapped_column(String(255), default="")
    microcode: Mapped[str] = mapped_column(String(64), default="")
    kernel: Mapped[str] = mapped_column(String(255))
    spectre_v2: Mapped[str] = mapped_column(Text, default="")
    hw_class: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    job: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    # a regression series: one job on one class in one mitigation cell, by kernel
    # ix_runs_verdict and ix_runs_class_started: /metrics' counts and rates (migration 0007)
    __table_args__ = (Index("ix_runs_series", "job", "hw_class", "kernel", "cell"),
                      Index("ix_runs_verdict", "verdict"), Index("ix_runs_class_started", "hw_class", "started"))
    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    submission_id: Mapped[str | None] = mapped_column(ForeignKey("submissions.id"), index=True)
    job: Mapped[str] = mapped_column(String(255))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    facts_id: Mapped[int] = mapped_column(ForeignKey("facts.id"))
    vendor: Mapped[str] = mapped_column(String(32))
    hw_class: Mapped[str] = mapped_column(String(64))
    kernel: Mapped[str] = mapped_column(String(255))
    # the mitigation cell's name (jobs/cells.yaml, or "custom"); "" = unknown,
    # a result from before cells existed
    cell: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # the JIT paths the run proved it reached: indirect jump and return ("" = unknown)
    indirect_jump: Mapped[str] = mapped_column(String(32), default="", server_default="")
    return_path: Mapped[str] = mapped_column(String(32), default="", server_default="")
    verdict: Mapped[str] = mapped_column(String(16))
    # pass | fail | lost | error | not-run (its only trouble: topologies this
    # kernel cannot run at all, see Unsupported)
    outcome: Mapped[str] = mapped_column(String(16))
    started: Mapped[datetime] = mapped_column(index=True)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    updates_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    tail_calls_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    # the whole result JSON, zlib-compressed; `farm gc` drops it from old runs
    result: Mapped[bytes | None] = mapped_column(LargeBinary)


class Unsupported(Base):
    """What a run's kernel could not run at all, for a reason that is not
    the bug under test (result schema 3's `unsupported`): a topology
    ("<index>-<name>") or a refuse check ("refuse:<case>"), with the
    kernel's own reason. Runs stored before schema 3 have none."""
    __tablename__ = "unsupported"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    topology: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)


class Signature(Base):
    __tablename__ = "signatures"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(512), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | fixed | known
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=0)
    link: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class Finding(Base):
    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # ix_findings_kind: /metrics (0007)
    summary: Mapped[str] = mapped_column(Text, default="")
    cpu: Mapped[int | None]
    at: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON


class Artifact(Base):
    """The artifacts the farm keeps: a run's small text artifacts (JIT
    listings, the kernel log) with their content, so a report can diff two
    hosts' listings wherever they ran. Every artifact's place on its host is
    in the run's stored result (`artifacts`)."""
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    name: Mapped[str] = mapped_column(String(512))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None]
    content: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib


class KnownIssue(Base):
    """A known-issues entry: signatures matching the glob are `known`."""
    __tablename__ = "known_issues"
    id: Mapped[int] = mapped_column(primary_key=True)
    pattern: Mapped[str] = mapped_column(String(512), unique=True)
    link: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class ReportOutbox(Base):
    """A report to deliver (farm/notify): one row per (report id, channel).
    `report_id` is the report's dedup id (stable, from the signature's text
    or the regression's job, class, cell and kernel): the unique pair makes
    a report once per channel, whoever enqueues it twice. A row is `sent`
    only after the receiver accepted it; `suppressed` when its signature was
    marked known before it went out."""
    __tablename__ = "report_outbox"
    __table_args__ = (UniqueConstraint("report_id", "channel"),
                      Index("ix_report_outbox_due", "state", "next_try"))
    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))              # smtp | webhook
    subject: Mapped[str] = mapped_column(String(16))              # signature | regression
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)                       # the plain-text e-mail body
    document: Mapped[str] = mapped_column(Text)                   # the JSON document (webhook)
    state: Mapped[str] = mapped_column(String(16))                # pending | sent | suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_try: Mapped[datetime]
    lease_until: Mapped[datetime | None]                          # a sender holds it until then
    created: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class Bisection(Base):
    """A `farm bisect` answer: the packaged kernel where a job's failure
    (its signature) was introduced or fixed, between the good and bad
    packages, with the boundary's two packages (older first), the
    confidence, the suspects and the whole answer JSON (zlib). A row whose
    regression is set answers that regression (the collector's schedule
    option): unique, so a regression is bisected once; status queued until
    its task stores the answer."""
    __tablename__ = "bisections"
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(255), index=True)
    signature: Mapped[str | None] = mapped_column(String(512), index=True)
    direction: Mapped[str] = mapped_column(String(16))  # introduced | fixed
    good: Mapped[str] = mapped_column(String(255))
    bad: Mapped[str] = mapped_column(String(255))
    boundary_older: Mapped[str | None] = mapped_column(String(255))
    boundary_newer: Mapped[str | None] = mapped_column(String(255))
    upstream_older: Mapped[str | None] = mapped_column(String(64))
    upstream_newer: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    top_suspect: Mapped[str | None] = mapped_column(Text)
    suspects: Mapped[str | None] = mapped_column(Text)  # JSON: {"ranked": [...], "all": [...]}
    status: Mapped[str] = mapped_column(String(16))  # queued | running | named | refused | failed
    refused: Mapped[str | None] = mapped_column(Text)  # why no boundary (refused/failed)
    regression: Mapped[str | None] = mapped_column(String(512), unique=True)
    created: Mapped[datetime]
    answer: Mapped[bytes | None] = mapped_column(LargeBinary)
