"""The results database on SQLite: ingest of real engine results (edited to
stand for a lab of hosts and kernels), the triage matrix, signature dedup and
the vendor split, the regression rule with retry-before-regression, known
issues, retention, and migrations that keep a lab's history."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

import pytest
from sqlalchemy import MetaData, Table, insert, inspect, select

from support import REPO, farm_cmd
from support.results_lab import JOB, NEW, OLD, base, history, kernel_finding, variant
from farm.report.matrix import matrix
from farm.report.regressions import regressions
from farm.report.signatures import find_signature, where
from farm.store import open_store
from farm.store.db import make_engine, migrate
from farm.store.models import Artifact, FactsSnapshot, Signature


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    assert s.add_many([(r, None, None) for r in history()]) == len(history())
    return s


def cells(s) -> dict:
    return {(c.hw_class, c.kernel): c for c in matrix(s)}


def states(s) -> dict:
    return {c.hw_class: c.state for c in regressions(s)}


def test_the_matrix_counts_every_job_class_and_kernel(store):
    m = cells(store)
    assert {k: c.status for k, c in m.items()} == {
        ("amd-zen2", OLD): "pass", ("amd-zen2", NEW): "flaky",
        ("amd-zen4", OLD): "pass", ("amd-zen4", NEW): "fail",
        ("intel-icelake", OLD): "pass", ("intel-icelake", NEW): "lost",
        ("intel-skylake-sp", OLD): "pass", ("intel-skylake-sp", NEW): "fail"}
    assert m[("intel-icelake", NEW)].counts == {"pass": 2, "fail": 0, "lost": 1, "error": 0}
    assert m[("amd-zen4", NEW)].counts["fail"] == 2


def test_ingest_is_idempotent_and_signatures_dedupe_across_hosts(store):
    assert store.add_many([(r, None, None) for r in history()]) == 0
    assert store.run_count() == len(history())
    sig = find_signature(store, "prog_array_map_poke_run")
    assert sig.text == kernel_finding()["signature"] and sig.count == 2 and sig.status == "open"
    w = where(store, sig)
    assert w.hosts == 2 and w.first_kernel == NEW and w.last_kernel == NEW
    with store.session() as s:  # zen4-a's kernel upgrade is a second facts snapshot
        kernels = s.scalars(select(FactsSnapshot.kernel).order_by(FactsSnapshot.first_seen)
                            .where(FactsSnapshot.host_id == 1)).all()
    assert kernels == [OLD, NEW]


def test_a_signature_from_another_host_with_other_addresses_joins_the_same_one(store):
    f = kernel_finding()
    f["signature"] = f["signature"].replace("prog_array_map_poke_run", "prog_array_map_poke_run+0x1a/0x40")
    store.add(variant(base("pass"), "zen4-b", NEW, datetime(2026, 10, 1), 99, [f]))
    assert find_signature(store, "prog_array_map_poke_run").count == 3


def test_the_vendor_split_says_amd_only(store):
    w = where(store, find_signature(store, "prog_array_map_poke_run"))
    assert w.split() == "AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/7 on intel-*"
    w = where(store, find_signature(store, "page fault"))
    assert w.split().startswith("Intel only: 1/2 runs on intel-skylake-sp")


def test_a_regression_is_declared_only_after_a_retry_on_another_host_confirms_it(store):
    assert states(store) == {"amd-zen4": "regression", "amd-zen2": "flaky",
                             "intel-skylake-sp": "awaiting-retry"}
    skl = next(c for c in regressions(store) if c.hw_class == "intel-skylake-sp")
    assert skl.first_host == "skl-a" and skl.retry_hosts == [] and skl.previous_kernel == OLD


@pytest.mark.parametrize("retry_findings, expected", [([], "flaky"), ("fail", "regression")])
def test_the_retry_decides_between_regression_and_flaky(store, retry_findings, expected):
    findings = [kernel_finding("pagefault-bpf-prog")] if retry_findings == "fail" else []
    # skl-b is another host of skl-a's class (intel-skylake-sp) on the new kernel
    retry = variant(base("pass"), "skl-b", NEW, datetime(2026, 9, 9), 100, findings)
    assert retry["host"]["hw_class"] == "intel-skylake-sp"
    store.add(retry)
    assert states(store)["intel-skylake-sp"] == expected


def test_a_second_failure_on_the_same_host_is_no_retry(store):
    store.add(variant(base("pass"), "skl-a", NEW, datetime(2026, 9, 9), 100, [kernel_finding("pagefault-bpf-prog")]))
    assert states(store)["intel-skylake-sp"] == "awaiting-retry"


def test_a_class_that_failed_on_the_previous_kernel_too_is_no_regression(store):
    store.add(variant(base("fail-tail-call-count"), "zen4-a", OLD, datetime(2026, 9, 1, 12), 101))
    assert "amd-zen4" not in states(store)


def test_known_issues_mark_signatures_and_a_fixed_one_reopens(store, tmp_path):
    from farm.store.known import load_known
    known = tmp_path / "known.yaml"
    known.write_text('- signature: "kernel BUG in prog_array_map_poke_*"\n'
                     '  link: https://bugs.example/1\n  note: poke race, fix queued\n')
    assert store.load_known(load_known(known)) == 1
    sig = find_signature(store, "prog_array_map_poke_run")
    assert (sig.status, sig.link, sig.note) == ("known", "https://bugs.example/1", "poke race, fix queued")
    tcc = find_signature(store, "tail-call-count")
    store.set_status(tcc.id, "fixed")
    store.add(variant(base("fail-tail-call-count"), "zen2-b", NEW, datetime(2026, 10, 2), 102))
    again = find_signature(store, "tail-call-count")
    assert again.status == "open" and again.note.startswith("reopened 2026-10-02") and again.count == 2


def test_gc_drops_old_artifacts_and_raw_results_but_keeps_counts(store):
    with store.session() as s:
        assert s.scalar(select(Artifact.content).where(Artifact.name == "0-chain-limit-direct/t0_0.S").limit(1))
    before = {k: c.counts for k, c in cells(store).items()}
    done = store.gc(timedelta(days=3), now=datetime(2026, 9, 8))  # the old kernel's runs only
    assert done["results_trimmed"] == 7 and done["artifacts_removed"] > 0
    assert {k: c.counts for k, c in cells(store).items()} == before
    assert find_signature(store, "prog_array_map_poke_run").count == 2
    with store.session() as s:
        kept = s.scalars(select(Artifact.run_id)).all()
    assert kept and all(NEW in run_id for run_id in kept)
    assert store.result(history()[0]["run_id"]) is None and store.result(history()[-2]["run_id"])


def test_an_upgrade_from_the_first_schema_keeps_the_history(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate(engine, "0001")  # a lab that ran the first release
    old = MetaData()
    with engine.begin() as c:
        t = {n: Table(n, old, autoload_with=c) for n in ("hosts", "facts", "runs", "signatures", "findings")}
        assert "artifacts" not in inspect(c).get_table_names()
        now = datetime(2026, 1, 1)
        c.execute(insert(t["hosts"]).values(id=1, hostname="old-host", vendor="AuthenticAMD",
                                            hw_class="amd-zen3", first_seen=now, last_seen=now))
        c.execute(insert(t["facts"]).values(id=1, host_id=1, digest="d", vendor="AuthenticAMD", family=25,
                                            model=1, stepping=1, model_name="", microcode="", kernel="6.8.0",
                                            spectre_v2="", hw_class="amd-zen3", first_seen=now, last_seen=now))
        c.execute(insert(t["runs"]).values(run_id="r1", job=JOB, host_id=1, facts_id=1, vendor="AuthenticAMD",
                                           hw_class="amd-zen3", kernel="6.8.0", verdict="fail", outcome="fail",
                                           started=now, duration_s=1.0, updates_per_s=0.0, tail_calls_per_s=0.0))
        c.execute(insert(t["signatures"]).values(id=1, text="wrong-target in indirect", kind="wrong-target",
                                                 status="open", first_seen=now, last_seen=now, count=1))
        c.execute(insert(t["findings"]).values(run_id="r1", signature_id=1, kind="wrong-target", summary="",
                                               at="", detail="{}"))
    s = open_store(url)  # what an upgraded collector does on start
    assert cells(s)[("amd-zen3", "6.8.0")].counts["fail"] == 1
    sig = find_signature(s, "wrong-target in indirect")
    assert sig.count == 1 and sig.link is None  # the new column, empty on old rows
    s.add(variant(base("pass"), "zen2-a", NEW, datetime(2026, 9, 1), 1))  # and it takes new results
    with s.session() as ss:
        assert ss.scalar(select(Signature.id).where(Signature.text == "wrong-target in indirect")) == 1


# -- the commands -------------------------------------------------------------------------

def farm(tmp_path, *args):
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/cli.db", "FARM_STATE_DIR": str(tmp_path)}
    return subprocess.run(farm_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_farm_ingest_and_triage_from_the_command_line(tmp_path):
    files = []
    for i, r in enumerate(history()):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        files.append(str(p))
    out = farm(tmp_path, "ingest", *files)
    assert out.returncode == 0 and f"{len(files)} new of {len(files)}" in out.stdout, out.stderr
    assert "0 new" in farm(tmp_path, "ingest", *files).stdout
    m = json.loads(farm(tmp_path, "triage", "--json").stdout)
    assert {(c["hw_class"], c["kernel"]): c["status"] for c in m}[("amd-zen2", NEW)] == "flaky"
    sig = farm(tmp_path, "triage", "--signature", "poke_run")
    assert "AMD only: 2/4 runs on amd-zen4" in sig.stdout and f"on {NEW}" in sig.stdout, sig.stderr
    reg = farm(tmp_path, "triage", "regressions")
    assert reg.returncode == 1  # a confirmed regression is a finding
    assert "regression" in reg.stdout and "awaiting-retry" in reg.stdout
    sigs = json.loads(farm(tmp_path, "triage", "signatures", "--json").stdout)
    tcc = next(s for s in sigs if s["signature"].startswith("tail-call-count"))
    assert farm(tmp_path, "triage", "signatures", "--mark", f"{tcc['id']}=fixed").returncode == 0
    assert next(s for s in json.loads(farm(tmp_path, "triage", "signatures", "--json").stdout)
                if s["id"] == tcc["id"])["status"] == "fixed"
    gc = farm(tmp_path, "gc", "--older-than", "90d")
    assert gc.returncode == 0 and "signatures and counts kept" in gc.stdout


@pytest.mark.parametrize("args, says", [
    (("gc", "--older-than", "soon"), "--older-than: 'soon' is not an age"),
    (("ingest", "missing.json"), "missing.json: No such file"),
    (("triage", "--signature", "no such thing"), "no signature matches"),
    (("triage", "signatures", "--mark", "x"), "--mark: use ID=STATUS"),
    (("report",), "give --html DIR and/or --junit FILE"),
])
def test_bad_triage_input_is_one_line_and_exit_2(tmp_path, args, says):
    out = farm(tmp_path, *args)
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_a_file_that_is_not_a_result_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 2}))
    out = farm(tmp_path, "ingest", str(bad))
    assert out.returncode == 2 and "not a schema-1 farm result" in out.stderr
