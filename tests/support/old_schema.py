"""Rows as an earlier farm stored them, written straight into a database
migrated to that revision, for the tests that upgrade it to head."""
from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import MetaData, Table, insert

from support.results_lab import JOB


def rows_at_0002(c) -> None:
    """What the 0002 code stored of two runs on one host: a pass and a fail
    with its signature, finding and kernel log (no cell columns yet)."""
    t = {n: Table(n, MetaData(), autoload_with=c)
         for n in ("hosts", "facts", "runs", "signatures", "findings", "artifacts")}

    def add(table: str, **row) -> int:
        # ids from the database, never literal: PostgreSQL's sequences must move on for later ingests
        return c.execute(insert(t[table]).values(**row)).inserted_primary_key[0]
    now = datetime(2026, 1, 1)
    old = dict(vendor="AuthenticAMD", hw_class="amd-zen3")
    host = add("hosts", hostname="old-host", first_seen=now, last_seen=now, **old)
    facts = add("facts", host_id=host, digest="d", family=25, model=1, stepping=1, model_name="", microcode="",
                kernel="6.8.0", spectre_v2="", first_seen=now, last_seen=now, **old)
    for n, outcome in enumerate(("pass", "fail")):
        add("runs", run_id=f"r{n}", job=JOB, host_id=host, facts_id=facts, kernel="6.8.0", verdict=outcome,
            outcome=outcome, started=now + timedelta(minutes=n), duration_s=1.0, updates_per_s=0.0,
            tail_calls_per_s=0.0, **old)
    sig = add("signatures", text="wrong-target in indirect", kind="wrong-target", status="open",
              first_seen=now, last_seen=now, count=1)
    add("findings", run_id="r1", signature_id=sig, kind="wrong-target", summary="", at="", detail="{}")
    add("artifacts", run_id="r1", name="kmsg", path="kmsg", size=3, content=zlib.compress(b"log"))


def rows_at_0003(c, results: list[dict]) -> None:
    """What the 0003 code stored of schema-3 results: the run with its whole
    result packed, the outcome as it computed it (a run whose only trouble
    was an unsupported topology was an "error" then), no unsupported rows."""
    import json
    t = {n: Table(n, MetaData(), autoload_with=c) for n in ("hosts", "facts", "runs")}
    now = datetime(2026, 1, 1)
    old = dict(vendor="GenuineIntel", hw_class="intel-skylake-sp")
    host = c.execute(insert(t["hosts"]).values(hostname="lockdown-host", first_seen=now, last_seen=now, **old)
                     ).inserted_primary_key[0]
    facts = c.execute(insert(t["facts"]).values(
        host_id=host, digest="d", family=6, model=85, stepping=4, model_name="", microcode="", kernel="6.12.0",
        spectre_v2="", first_seen=now, last_seen=now, **old)).inserted_primary_key[0]
    for n, r in enumerate(results):
        outcome = "fail" if r.get("findings") else r["verdict"]
        c.execute(insert(t["runs"]).values(
            run_id=r["run_id"], job=JOB, host_id=host, facts_id=facts, kernel="6.12.0", verdict=r["verdict"],
            outcome=outcome, started=now + timedelta(minutes=n), duration_s=1.0, updates_per_s=0.0,
            tail_calls_per_s=0.0, error=r.get("error"),
            result=zlib.compress(json.dumps(r).encode()), **old))
