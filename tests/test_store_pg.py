"""The results database on a real PostgreSQL server (FARM_DB_URL's case):
the lab history from real engine results goes in through the same ingest as
on SQLite, and the triage queries read back the same answers."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from farm.report.matrix import matrix
from farm.report.regressions import regressions
from farm.report.signatures import find_signature, signatures, where
from farm.store import open_store
from farm.store.db import current_revision
from farm.store.models import FactsSnapshot, Finding, Host, Run, Signature
from support.results_lab import JOB, NEW, OLD, history

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ARRAYMAP_BUG = "kernel BUG in prog_array_map_poke_run"
PAGE_FAULT = "BUG: unable to handle page fault in bpf_prog_*"
SHORT_CHAIN = "tail-call-count in chain-limit-direct"


def ingest(store, results) -> int:
    return store.add_many([(r, None, None) for r in results])


def test_ingest_is_postgresql_and_idempotent(postgres_server):
    store = open_store(postgres_server.url)
    assert store.engine.dialect.name == "postgresql"
    runs = history()
    assert ingest(store, runs) == len(runs) == 15
    assert ingest(store, runs) == 0                 # redelivered: nothing twice
    assert store.add(runs[3]) is False
    assert store.run_count() == 15
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Host)) == 7
        # one facts snapshot per host and kernel
        assert s.scalar(select(func.count()).select_from(FactsSnapshot)) == 14
        assert s.scalar(select(func.count()).select_from(Finding)) == 5
        started = s.scalar(select(Run.started).where(Run.run_id == runs[0]["run_id"]))
    # timestamps come back as naive UTC, as on SQLite
    assert started == datetime(2026, 9, 1, 0, 1)
    # the whole result round-trips (minus what was inlined as artifacts)
    back = store.result(runs[8]["run_id"])
    assert back["findings"] == runs[8]["findings"] and "attachments" not in back
    assert [r["run_id"] for r in store.results(runs[0]["submission"])] == [runs[0]["run_id"]]


def test_matrix_cells(postgres_server):
    store = open_store(postgres_server.url)
    ingest(store, history())
    cells = {(c.hw_class, c.kernel): c for c in matrix(store)}
    assert {c.job for c in cells.values()} == {JOB}
    expected = {
        ("amd-zen2", OLD): ("pass", 2, 0, 0), ("amd-zen2", NEW): ("flaky", 1, 1, 0),
        ("amd-zen4", OLD): ("pass", 2, 0, 0), ("amd-zen4", NEW): ("fail", 0, 2, 0),
        ("intel-icelake", OLD): ("pass", 2, 0, 0), ("intel-icelake", NEW): ("lost", 2, 0, 1),
        ("intel-skylake-sp", OLD): ("pass", 1, 0, 0), ("intel-skylake-sp", NEW): ("fail", 0, 1, 0),
    }
    got = {key: (c.status, c.counts["pass"], c.counts["fail"], c.counts["lost"])
           for key, c in cells.items()}
    assert got == expected
    assert all(c.counts["error"] == 0 for c in cells.values())
    # natural kernel order within a class: 6.1.0-56-amd64 before 6.6.7
    order = [(c.hw_class, c.kernel) for c in matrix(store)]
    assert order == sorted(expected, key=lambda k: (k[0], k[1] != OLD))
    assert cells[("amd-zen4", NEW)].vendor == "AuthenticAMD"
    assert matrix(store, job="no-such-job") == []


def test_signatures_dedup_across_hosts(postgres_server):
    store = open_store(postgres_server.url)
    ingest(store, history())
    sigs = {s.text: s for s in signatures(store)}
    assert set(sigs) == {ARRAYMAP_BUG, PAGE_FAULT, SHORT_CHAIN, "host-lost"}
    bug = sigs[ARRAYMAP_BUG]
    assert (bug.kind, bug.count, bug.status) == ("kernel-bug", 2, "open")
    w = where(store, bug)
    assert w.hosts == 2                              # zen4-a and zen4-b, one signature
    assert (w.first_kernel, w.last_kernel) == (NEW, NEW)
    assert w.vendors_hit == ["amd"]
    assert w.split() == "AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/6 on intel-*"
    assert where(store, sigs[PAGE_FAULT]).split() == \
        "Intel only: 1/2 runs on intel-skylake-sp, 0/8 on amd-*, 0/4 on intel-icelake"
    assert sigs[SHORT_CHAIN].count == 1 and sigs[PAGE_FAULT].count == 1
    # ingesting again counts nothing twice
    ingest(store, history())
    assert {s.text: s.count for s in signatures(store)}[ARRAYMAP_BUG] == 2
    assert find_signature(store, "prog_array_map_poke").id == bug.id
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Signature)) == 4


def test_regressions_states(postgres_server):
    store = open_store(postgres_server.url)
    ingest(store, history())
    got = {c.hw_class: c for c in regressions(store)}
    assert {cls: c.state for cls, c in got.items()} == {
        "amd-zen4": "regression", "amd-zen2": "flaky", "intel-skylake-sp": "awaiting-retry"}
    zen4 = got["amd-zen4"]
    assert (zen4.kernel, zen4.previous_kernel, zen4.first_host, zen4.retry_hosts, zen4.signatures) == \
        (NEW, OLD, "zen4-a", ["zen4-b"], [ARRAYMAP_BUG])
    assert (got["amd-zen2"].first_host, got["amd-zen2"].retry_hosts) == ("zen2-a", ["zen2-b"])
    assert got["intel-skylake-sp"].retry_hosts == [] and got["intel-skylake-sp"].signatures == [PAGE_FAULT]
    # intel-icelake lost a host but passed: not a candidate
    assert "intel-icelake" not in got


def test_reopening_a_migrated_database_keeps_the_data(postgres_server):
    store = open_store(postgres_server.url)
    runs = history()
    ingest(store, runs[:10])
    head = current_revision(store.engine)
    assert head is not None
    with postgres_server.connect() as conn:
        tables = {r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = 'public'")}
    assert {"alembic_version", "hosts", "facts", "runs", "findings", "signatures",
            "submissions", "artifacts", "known_issues"} <= tables
    store.engine.dispose()

    again = open_store(postgres_server.url)       # migrate() on an up-to-date schema
    assert current_revision(again.engine) == head
    assert again.run_count() == 10
    with postgres_server.connect() as conn:
        assert conn.execute("select count(*) from alembic_version").fetchone()[0] == 1
    # and it carries on where it left off
    assert ingest(again, runs) == 5
    assert again.run_count() == 15
    assert {c.state for c in regressions(again)} == {"regression", "flaky", "awaiting-retry"}
    again.engine.dispose()


def test_known_issues_a_fixed_signature_reopens_and_gc(postgres_server, tmp_path):
    from farm.store.known import load_known
    from support.results_lab import base, variant
    store = open_store(postgres_server.url)
    ingest(store, history())
    known = tmp_path / "known.yaml"
    known.write_text('- signature: "kernel BUG in prog_array_map_poke_*"\n'
                     '  link: https://bugs.example/1\n  note: poke race, fix queued\n')
    assert store.load_known(load_known(known)) == 1
    sig = find_signature(store, "prog_array_map_poke_run")
    assert (sig.status, sig.link) == ("known", "https://bugs.example/1")
    tcc = find_signature(store, "tail-call-count")
    store.set_status(tcc.id, "fixed")
    assert store.add(variant(base("fail-tail-call-count"), "zen2-b", NEW, datetime(2026, 10, 2), 102))
    again = find_signature(store, "tail-call-count")
    assert (again.status, again.count) == ("open", 2) and again.note.startswith("reopened 2026-10-02")
    assert again.last_seen.date() == datetime(2026, 10, 2).date()

    before = {(c.hw_class, c.kernel): c.counts for c in matrix(store)}
    done = store.gc(timedelta(days=3), now=datetime(2026, 9, 8))   # the old kernel's runs only
    assert done["results_trimmed"] == 7 and done["artifacts_removed"] > 0
    assert {(c.hw_class, c.kernel): c.counts for c in matrix(store)} == before
    assert store.result(history()[0]["run_id"]) is None and store.result(history()[-2]["run_id"])
    assert store.artifact_text(history()[8]["run_id"], "kmsg")


def test_two_collectors_at_once_count_each_run_once(postgres_server):
    """Two writers ingesting the same backlog concurrently (two collectors,
    or a collector and `farm ingest`): the loser of each race rolls back its
    batch and retries it, so nothing is added or counted twice."""
    runs = history()
    stores = [open_store(postgres_server.url) for _ in range(2)]
    start = threading.Barrier(2)
    added, errors = [0, 0], []

    def work(i: int) -> None:
        try:
            start.wait()
            for r in runs if i == 0 else reversed(runs):   # meet in the middle
                added[i] += stores[i].add(r)
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(added) == len(runs) and stores[0].run_count() == len(runs)
    with stores[0].session() as s:
        assert s.scalar(select(func.count()).select_from(Host)) == 7
        assert s.scalar(select(func.count()).select_from(Signature)) == 4
        assert s.scalar(select(Signature.count).where(Signature.text == ARRAYMAP_BUG)) == 2
    assert {c.hw_class: c.state for c in regressions(stores[0])}["amd-zen4"] == "regression"
    for s in stores:
        s.engine.dispose()


def test_a_collector_and_farm_ingest_at_once(postgres_server):
    """The collector adds results one at a time while `farm ingest` adds a
    backlog in one batch: both finish, every run counted once."""
    runs = history()
    for round_ in range(5):
        url = postgres_server.create_database(f"race{round_}")
        stores = [open_store(url) for _ in range(2)]
        start = threading.Barrier(2)
        added, errors = [0, 0], []

        def work(i: int) -> None:
            order = runs if i == 0 else list(reversed(runs))
            try:
                start.wait()
                added[i] = stores[i].add_many([(r, None, None) for r in order], batch=(1, 1000)[i])
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        try:
            assert not errors, f"round {round_}: {errors}"
            assert sum(added) == len(runs) == stores[0].run_count()
            assert {s.text: s.count for s in signatures(stores[0])}[ARRAYMAP_BUG] == 2
        finally:
            for s in stores:
                s.engine.dispose()


def test_a_database_that_refuses_connections_costs_the_collector_no_result(postgres_server, lab, job_file):
    """The collector writes PostgreSQL; while the database refuses every
    connection the farm.store task retries, and the result lands once the
    database is back."""
    from support import wait_for
    lab.env["FARM_DB_URL"] = postgres_server.url
    lab.collector()
    lab.worker("pg-w")
    with postgres_server.connect("postgres") as admin:
        admin.execute("ALTER DATABASE farm ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'farm'")
        sub = lab.farm("submit", str(job_file(duration="1s", topologies=["direct-main"])), "--all").stdout.split()[-1]
        wait_for(lambda: "waits for the database (try 2)" in lab.log("collector"),
                 "the collector to meet the closed database twice", 120)
        admin.execute("ALTER DATABASE farm ALLOW_CONNECTIONS true")
    store = open_store(postgres_server.url)
    stored = wait_for(lambda: store.results(sub), "the retried result in PostgreSQL", 120)
    assert len(stored) == 1 and stored[0]["host"]["hostname"] == "pg-w"
    store.engine.dispose()


def test_an_upgrade_from_before_cells_and_the_cell_axis(postgres_server):
    """A database at 0002 (before cells) with old rows, upgraded on open:
    the old runs are of unknown cell; then the cell lab goes in and the
    matrix, the signature's cell split and the per-cell regressions read
    back as on SQLite."""
    from farm.store.db import make_engine, migrate
    from support.old_schema import rows_at_0002
    from support.results_lab import cell_history
    engine = make_engine(postgres_server.url)
    migrate(engine, "0002")
    with engine.begin() as c:
        rows_at_0002(c)
    engine.dispose()
    store = open_store(postgres_server.url)
    with store.session() as s:
        assert s.execute(select(Run.run_id, Run.cell).order_by(Run.run_id)).all() == [("r0", ""), ("r1", "")]
    assert ingest(store, cell_history()) == 16
    m = {(e.hw_class, e.kernel, e.cell_label): e.status for e in matrix(store)}
    assert m[("amd-zen3", "6.8.0", "-")] == "flaky"
    assert m[("amd-zen4", NEW, "lfence")] == "fail" and m[("amd-zen4", NEW, "default")] == "pass"
    assert where(store, find_signature(store, ARRAYMAP_BUG)).split().startswith(
        "fails only with lfence (4/4 runs; 0/4 with default), on both vendors: ")
    assert {(c.hw_class, c.cell): c.state for c in regressions(store)} == {
        ("amd-zen4", "lfence"): "regression", ("intel-icelake", "lfence"): "regression"}
    store.engine.dispose()


def test_an_upgrade_from_0003_and_not_run_runs(postgres_server):
    """A database at 0003 holding schema-3 results (the clean unsupported
    one stored as an error), upgraded on open: it becomes not-run with its
    list kept; then the not-run lab goes in and the matrix, the per-kernel
    list, the lab health and the regressions read back as on SQLite."""
    from farm.report.health import health
    from farm.report.matrix import unsupported
    from farm.store.db import make_engine, migrate
    from farm.store.models import Unsupported
    from support.old_schema import rows_at_0003
    from support.results_lab import EPERM, T0, unsupported_run
    from test_unsupported import FENTRY, MID, not_run_lab
    engine = make_engine(postgres_server.url)
    migrate(engine, "0003")
    old = [unsupported_run("skl-a", "6.12.0", T0, 1, FENTRY),
           unsupported_run("skl-a", "6.12.0", T0, 2, FENTRY, error="bpftool not found in PATH")]
    with engine.begin() as c:
        rows_at_0003(c, old)
    engine.dispose()
    store = open_store(postgres_server.url)
    with store.session() as s:
        assert [r[0] for r in s.execute(select(Run.outcome).order_by(Run.started))] == ["not-run", "error"]
        assert s.scalar(select(func.count()).select_from(Unsupported)) == 2
    assert ingest(store, not_run_lab()) == 19
    m = {(e.hw_class, e.kernel): e for e in matrix(store)}
    assert (m[("amd-zen4", MID)].status, m[("amd-zen4", MID)].counts["not-run"]) == ("not-run", 2)
    assert m[("intel-skylake-sp", "6.12.0")].status == "error"
    assert [(n.kernel, n.topology, n.runs) for n in unsupported(store)] == [
        (MID, "fentry", 2), (MID, "hierarchy-fexit", 1), (NEW, "fentry", 2), ("6.12.0", "fentry", 2)]
    assert unsupported(store)[0].reason == EPERM
    assert (health(store).lost, health(store).errored) == (1, 2)
    zen4 = next(c for c in regressions(store) if c.hw_class == "amd-zen4")
    assert (zen4.state, zen4.previous_kernel) == ("regression", OLD)
    store.engine.dispose()
