"""The results database on SQLite: ingest of real engine results (edited to
stand for a lab of hosts and kernels), the triage matrix, signature dedup and
the vendor split, the regression rule with retry-before-regression, known
issues, retention, and migrations that keep a lab's history."""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import MetaData, Table, insert, inspect, select

from support import REPO, farm_cmd
from support.old_schema import rows_at_0002
from support.results_lab import (JOB, NEW, OLD, base, cell_history, errored, history, host_facts, in_cell,
                                 kernel_finding, lost, variant)
from farm.report.health import health
from farm.report.matrix import matrix
from farm.report.regressions import regressions
from farm.report.signatures import find_signature, where
from farm.store import open_store
from farm.store.db import make_engine, migrate
from farm.store.models import Artifact, FactsSnapshot, Run, Signature


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
    assert m[("intel-icelake", NEW)].counts == {"pass": 2, "fail": 0, "lost": 1, "error": 0, "not-run": 0}
    assert m[("amd-zen4", NEW)].counts == {"pass": 0, "fail": 2, "lost": 0, "error": 0, "not-run": 0}


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
    # intel-*: six runs that passed or failed; icx-a's lost run is no clean run
    w = where(store, find_signature(store, "prog_array_map_poke_run"))
    assert w.split() == "AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/6 on intel-*"
    w = where(store, find_signature(store, "page fault"))
    assert w.split() == "Intel only: 1/2 runs on intel-skylake-sp, 0/8 on amd-*, 0/4 on intel-icelake"


# -- the mitigation cell as an axis (support/results_lab.py: cell_history) ----------------

LATER = datetime(2026, 9, 20)
T_OLD = datetime(2026, 9, 1, 12)   # on the old kernel, after the history's runs on it
K3 = "6.7.0"


@pytest.fixture
def cell_store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/cells.db")
    s.add_many([(r, None, None) for r in cell_history()])
    return s


def test_the_matrix_has_an_entry_per_cell(cell_store):
    m = {(e.hw_class, e.kernel, e.cell_label): e for e in matrix(cell_store)}
    assert {k: (e.status, e.runs) for k, e in m.items()} == {
        (cls, k, cell): ("fail" if (k, cell) == (NEW, "lfence") else "pass", 2)
        for cls in ("amd-zen4", "intel-icelake") for k in (OLD, NEW) for cell in ("default", "lfence")}
    lfence = m[("amd-zen4", NEW, "lfence")]
    assert lfence.paths() == "indirect jump lfence, return srso"
    assert lfence.to_dict()["cell"] == "lfence" and lfence.to_dict()["indirect_jump"] == ["lfence"]
    assert {e.cell for e in matrix(cell_store, cell="lfence")} == {"lfence"}
    assert matrix(cell_store, cell="") == []  # every run here names its cell


def test_runs_from_before_cells_are_of_unknown_cell_never_default(store):
    entries = matrix(store)
    assert {(e.cell, e.cell_label, e.to_dict()["cell"]) for e in entries} == {("", "-", "-")}
    assert entries[0].paths() == "" and entries[0].to_dict()["indirect_jump"] == []
    assert matrix(store, cell="") == entries and matrix(store, cell="default") == []
    assert {c.to_dict()["cell"] for c in regressions(store)} == {"-"}


def test_the_split_names_the_cell_the_failures_follow(cell_store):
    w = where(cell_store, find_signature(cell_store, "prog_array_map_poke_run"))
    assert [c.label for c in w.only_cells] == ["lfence"]
    assert w.split() == ("fails only with lfence (4/4 runs; 0/4 with default), on both vendors: "
                         "2/8 runs on amd-zen4, 2/8 runs on intel-icelake")


def test_a_split_names_no_cell_the_failures_do_not_follow(cell_store):
    # a default run fails with it too: the BUG is not the lfence cell's
    cell_store.add(in_cell(variant(base("pass"), "icx-a", NEW, LATER, 300, [kernel_finding()]), "default"))
    w = where(cell_store, find_signature(cell_store, "prog_array_map_poke_run"))
    assert w.only_cells == [] and w.split() == "both vendors: 3/9 runs on intel-icelake, 2/8 runs on amd-zen4"
    # and a hit of unknown cell (a result from before cells) could have been any cell
    cell_store.add_many([(r, None, None) for r in history()])
    w = where(cell_store, find_signature(cell_store, "tail-call-count"))
    assert w.only_cells == [] and "fails only" not in w.split()


def test_the_split_names_no_cell_where_no_other_cell_ran(cell_store):
    """Only lfence ran on amd-zen2: a zen2 failure there proves nothing about the cell."""
    cell_store.add(in_cell(variant(base("fail-tail-call-count"), "zen2-a", NEW, LATER, 301), "lfence"))
    assert where(cell_store, find_signature(cell_store, "tail-call-count")).split() == \
        "AMD only: 1/1 runs on amd-zen2, 0/8 on amd-zen4, 0/8 on intel-*"


def test_regressions_are_per_cell(cell_store):
    found = {(c.hw_class, c.cell): c for c in regressions(cell_store)}
    assert {k: c.state for k, c in found.items()} == {("amd-zen4", "lfence"): "regression",
                                                     ("intel-icelake", "lfence"): "regression"}
    assert found[("amd-zen4", "lfence")].to_dict()["cell"] == "lfence"
    assert [c.hw_class for c in regressions(cell_store, cell="default")] == []


def test_a_cell_that_failed_before_hides_no_other_cells_regression(cell_store):
    """lfence already failed on the old kernel on zen4, and now default
    fails on the new one on both zen4 hosts: over both cells at once the old
    kernel 'failed' too and there would be no candidate at all."""
    cell_store.add(in_cell(variant(base("fail-tail-call-count"), "zen4-a", OLD, T_OLD, 302), "lfence"))
    for n, h in enumerate(("zen4-a", "zen4-b")):
        cell_store.add(in_cell(variant(base("fail-tail-call-count"), h, NEW, LATER, 303 + n), "default"))
    found = {(c.hw_class, c.cell): c.state for c in regressions(cell_store)}
    assert found == {("amd-zen4", "default"): "regression", ("intel-icelake", "lfence"): "regression"}


def test_a_retry_goes_to_a_host_in_the_candidates_cell(cell_store):
    from farm.queue.retry import other_hosts
    cand = next(c for c in regressions(cell_store) if c.hw_class == "amd-zen4")
    assert (cand.cell, cand.first_host) == ("lfence", "zen4-a")

    def host(name: str, cell: str | None) -> dict:
        """A worker's registry entry: its facts are its results' host object."""
        facts = host_facts(name, NEW)
        return {"alive": True, "health": "healthy", "facts": {**facts, "cell": {"name": cell}} if cell else facts}
    hosts = {"zen4-a": host("zen4-a", "lfence"), "zen4-c": host("zen4-c", "default"),
             "zen4-d": host("zen4-d", "lfence"), "zen4-e": host("zen4-e", None)}
    # its cell first, then a host of unknown cell (an older worker); never zen4-c, in default
    assert other_hosts(hosts, cand) == ["zen4-d", "zen4-e"]
    cand.cell = ""  # a candidate of unknown cell: only a host that names none
    assert other_hosts(hosts, cand) == ["zen4-e"]


# -- infrastructure: lost and errored runs are lab health, never kernel findings --------



def test_a_lost_host_is_no_kernel_signature(store):
    """The history's icx-a lost run made a host-lost signature: it gets no
    vendor split (it read 'Intel only: 1/5 runs on intel-icelake, 0/8 on amd-*, ...')."""
    sig = find_signature(store, "host-lost")
    w = where(store, sig)
    assert w.split() == "not a kernel signature: host-lost is lab health (farm triage health)"
    assert w.infra and w.classes == [] and w.vendors_hit == []
    assert (w.hosts, w.first_kernel, sig.count) == (1, NEW, 1)


def test_a_lost_run_counts_in_a_split_only_by_the_crash_it_carried(store):
    """icx-b lost with the arraymap BUG on its console: the BUG is a kernel
    signature and that run is one of its hits; icx-a's plain loss is no run."""
    store.add(lost("icx-b", NEW, LATER, 200, "guest kernel died", crash=[kernel_finding()]))
    w = where(store, find_signature(store, "prog_array_map_poke_run"))
    assert w.split() == ("both vendors: 2/4 runs on amd-zen4, 1/5 runs on intel-icelake, "
                         "0/4 on amd-zen2, 0/2 on intel-skylake-sp")
    assert find_signature(store, "host-lost").count == 2
    assert where(store, find_signature(store, "host-lost")).classes == []


def test_lost_and_errored_runs_never_make_a_regression(store):
    # a lost run in a candidate's cell: neither its retry nor its signature
    store.add(lost("skl-b", NEW, LATER, 201))
    # a kernel on which icelake was only lost (with a crash) or errored (with a finding)
    store.add(lost("icx-a", K3, LATER, 202, "guest kernel died", crash=[kernel_finding()]))
    store.add(errored("icx-b", K3, LATER + timedelta(minutes=1), 203, "stress runner 4 died: signal 9",
                      [kernel_finding("pagefault-bpf-prog")]))
    assert cells(store)[("intel-icelake", K3)].counts == {"pass": 0, "fail": 0, "lost": 1, "error": 1, "not-run": 0}
    found = {c.hw_class: c for c in regressions(store)}
    assert {k: c.state for k, c in found.items()} == {"amd-zen4": "regression", "amd-zen2": "flaky",
                                                     "intel-skylake-sp": "awaiting-retry"}
    skl = found["intel-skylake-sp"]
    assert skl.retry_hosts == [] and skl.signatures == ["BUG: unable to handle page fault in bpf_prog_*"]


def test_lab_health_lists_lost_and_errored_runs_per_host(store):
    store.add(errored("skl-a", NEW, LATER, 204, "bpftool not found in PATH"))
    store.add(errored("skl-a", K3, LATER + timedelta(hours=1), 205, "bpftool not found in PATH"))
    store.add(lost("zen2-b", NEW, LATER + timedelta(hours=2), 206, "guest kernel died", crash=[kernel_finding()]))
    lab = health(store)
    assert [h.hostname for h in lab.hosts] == ["zen2-a", "zen2-b", "zen4-a", "zen4-b", "icx-a", "icx-b", "skl-a"]
    by = {h.hostname: h for h in lab.hosts}
    assert {n: (h.runs, h.lost, h.errored) for n, h in by.items() if not h.ok} == {
        "icx-a": (3, 1, 0), "skl-a": (4, 0, 2), "zen2-b": (3, 1, 0)}
    [icx] = by["icx-a"].problems
    assert (icx.outcome, icx.text, icx.runs, icx.kernels, icx.kernel_findings) == (
        "lost", f"icx-a lost during {JOB}: heartbeat stopped", 1, [NEW], [])
    assert icx.last == datetime(2026, 9, 8, 0, 15) and icx.last_run == history()[-1]["run_id"]
    [skl] = by["skl-a"].problems
    assert (skl.outcome, skl.text, skl.runs, skl.kernels) == ("error", "bpftool not found in PATH", 2, [NEW, K3])
    assert skl.last == by["skl-a"].last_problem == by["skl-a"].last_seen == LATER + timedelta(hours=1)
    [zen2] = by["zen2-b"].problems
    assert zen2.kernel_findings == ["kernel BUG in prog_array_map_poke_run"]  # the crash stays a kernel finding
    assert [(s.text, s.kind, s.count) for s in lab.infra_signatures] == [("host-lost", "host-lost", 2)]
    assert [(c.hw_class, c.hosts, c.runs, c.lost, c.errored, c.hosts_with_problems) for c in lab.by_class()] == [
        ("amd-zen2", 2, 5, 1, 0, 1), ("amd-zen4", 2, 4, 0, 0, 0),
        ("intel-icelake", 2, 5, 1, 0, 1), ("intel-skylake-sp", 1, 4, 0, 2, 1)]
    assert lab.summary() == "lab health: 2 lost and 2 errored runs on 3 of 7 hosts"
    assert [h.hostname for h in health(store, job="no-such-job").hosts] == []


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
    assert (again.status, again.note, again.count) == ("open", "reopened 2026-10-02", 2)


def test_gc_drops_old_artifacts_and_raw_results_but_keeps_counts(store):
    with store.session() as s:
        assert s.scalar(select(Artifact.content).where(Artifact.name == "0-chain-limit-direct/t0_0.S").limit(1))
    before = {k: c.counts for k, c in cells(store).items()}
    done = store.gc(timedelta(days=3), now=datetime(2026, 9, 8))  # the old kernel's runs only
    per_run = len(base("pass")["attachments"])  # a JIT listing or two and the kernel log
    assert per_run == 3
    assert (done["results_trimmed"], done["artifacts_removed"]) == (7, 7 * per_run)
    assert {k: c.counts for k, c in cells(store).items()} == before
    assert find_signature(store, "prog_array_map_poke_run").count == 2
    with store.session() as s:
        kept = Counter(s.scalars(select(Artifact.run_id)).all())
    new_runs = [r for r in history() if r["host"]["kernel"] == NEW]
    assert kept == {r["run_id"]: per_run for r in new_runs if r.get("attachments")}
    assert len(kept) == 7  # the lost run kept none
    assert store.result(history()[0]["run_id"]) is None
    skl = history()[-2]  # a new-kernel run keeps its whole result, less what went into artifacts
    kept_result = store.result(skl["run_id"])
    assert set(kept_result) == set(skl) - {"attachments"} and kept_result["programs"] == skl["programs"]


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


def test_an_upgrade_from_before_cells_keeps_every_run_with_an_unknown_cell(tmp_path):
    """A database at 0002, the last revision without cells: after the
    upgrade every run, finding and artifact is still there, each run of
    cell "" (unknown: nothing says it was "default"), and new results
    carry the cell their host.cell names."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate(engine, "0002")
    with engine.begin() as c:
        assert "cell" not in {col["name"] for col in inspect(c).get_columns("runs")}
        rows_at_0002(c)
    s = open_store(url)
    with s.session() as ss:
        runs = ss.execute(select(Run.run_id, Run.outcome, Run.cell, Run.indirect_jump, Run.return_path)
                          .order_by(Run.run_id)).all()
        indexes = {i["name"]: i["column_names"] for i in inspect(ss.connection()).get_indexes("runs")}
    assert [tuple(r) for r in runs] == [("r0", "pass", "", "", ""), ("r1", "fail", "", "", "")]
    assert indexes["ix_runs_series"] == ["job", "hw_class", "kernel", "cell"] and "ix_runs_cell" not in indexes
    assert find_signature(s, "wrong-target in indirect").count == 1
    assert s.artifact_text("r1", "kmsg") == "log"
    lfence = in_cell(variant(base("pass"), "zen2-a", NEW, datetime(2026, 9, 1), 1), "lfence")
    assert s.add(lfence)
    with s.session() as ss:
        new = ss.execute(select(Run.cell, Run.indirect_jump, Run.return_path)
                         .where(Run.run_id == lfence["run_id"])).one()
    assert tuple(new) == ("lfence", "lfence", "srso")


@pytest.mark.parametrize("cell, stored", [
    ("not a mapping", ("", "", "")),
    ({"name": 7, "indirect_jump": None}, ("", "", "")),
    ({"name": "x" * 40, "indirect_jump": "lfence"}, ("x" * 32, "lfence", "")),
    # a guest lost mid-job: its paths were never read (farm/cellproof.py)
    ({"name": "lfence", "indirect_jump": "unknown: the guest was lost before its JIT listing was read",
      "return": "mixed: ret, return-thunk"}, ("lfence", "unknown", "mixed: ret, return-thunk")),
])
def test_a_malformed_or_long_cell_is_stored_as_unknown_or_cut_to_the_column(tmp_path, cell, stored):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    r = variant(base("pass"), "zen2-a", NEW, datetime(2026, 9, 1), 1)
    r["host"]["cell"] = cell
    assert s.add(r)
    with s.session() as ss:
        got = ss.execute(select(Run.cell, Run.indirect_jump, Run.return_path)).one()
    assert tuple(got) == stored


# -- the commands -------------------------------------------------------------------------

def farm(tmp_path, *args):
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/cli.db", "FARM_STATE_DIR": str(tmp_path)}
    return subprocess.run(farm_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a dozen farm processes
def test_farm_ingest_and_triage_from_the_command_line(tmp_path):
    files = []
    for i, r in enumerate(history()):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        files.append(str(p))
    out = farm(tmp_path, "ingest", *files)
    n = len(files)
    assert out.returncode == 0 and out.stdout == f"farm ingest: {n} new of {n} results (0 already stored)\n", \
        out.stderr
    assert farm(tmp_path, "ingest", *files).stdout == f"farm ingest: 0 new of {n} results ({n} already stored)\n"
    m = json.loads(farm(tmp_path, "triage", "--json").stdout)
    assert {(c["hw_class"], c["kernel"]): c["status"] for c in m} == {
        (c.hw_class, c.kernel): c.status for c in matrix(open_store(f"sqlite:///{tmp_path}/cli.db"))}
    assert {(c["hw_class"], c["kernel"]): c["status"] for c in m}[("amd-zen2", NEW)] == "flaky"
    sig = farm(tmp_path, "triage", "--signature", "poke_run")
    lines = sig.stdout.splitlines()
    assert lines[1] == "  AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/6 on intel-*", sig.stdout
    assert lines[2].startswith("  2 findings on 2 hosts;") and lines[2].endswith(f"on {NEW}"), sig.stdout
    reg = farm(tmp_path, "triage", "regressions")
    assert reg.returncode == 1  # a confirmed regression is a finding
    states = [line.split()[:7:3] for line in reg.stdout.splitlines() if not line.startswith(" ")]
    assert states == [["flaky", "amd-zen2", "-:"], ["regression", "amd-zen4", "-:"],
                      ["awaiting-retry", "intel-skylake-sp", "-:"]], reg.stdout
    sigs = json.loads(farm(tmp_path, "triage", "signatures", "--json").stdout)
    tcc = next(s for s in sigs if s["signature"].startswith("tail-call-count"))
    assert farm(tmp_path, "triage", "signatures", "--mark", f"{tcc['id']}=fixed").returncode == 0
    assert next(s for s in json.loads(farm(tmp_path, "triage", "signatures", "--json").stdout)
                if s["id"] == tcc["id"])["status"] == "fixed"
    gc = farm(tmp_path, "gc", "--older-than", "90d")
    assert gc.returncode == 0 and "signatures and counts kept" in gc.stdout


@pytest.mark.slow  # a dozen farm processes
def test_the_cell_axis_from_the_command_line(tmp_path):
    """Results with host.cell (schema 1) through `farm ingest`, then the
    matrix, its --cell filter, the regressions and a signature by cell."""
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(cell_history()))
    assert farm(tmp_path, "ingest", str(path)).returncode == 0
    m = json.loads(farm(tmp_path, "triage", "--json").stdout)
    assert {(e["hw_class"], e["kernel"], e["cell"]): e["status"] for e in m if e["kernel"] == NEW} == {
        ("amd-zen4", NEW, "default"): "pass", ("amd-zen4", NEW, "lfence"): "fail",
        ("intel-icelake", NEW, "default"): "pass", ("intel-icelake", NEW, "lfence"): "fail"}
    only = json.loads(farm(tmp_path, "triage", "--cell", "lfence", "--json").stdout)
    assert {e["cell"] for e in only} == {"lfence"} and len(only) == 4
    table = farm(tmp_path, "triage", "--cell", "lfence").stdout
    assert "x cell" in table and any(line.split("│")[4].strip() == "lfence" and "fail" in line
                                     for line in table.splitlines() if line.count("│") > 5), table
    assert farm(tmp_path, "triage", "--cell", "-").stdout == "no runs in cell -\n"
    reg = farm(tmp_path, "triage", "regressions")
    assert reg.returncode == 1 and [line.split()[:7] for line in reg.stdout.splitlines()
                                    if not line.startswith(" ")] == [
        ["regression", JOB, "on", cls, "in", "cell", "lfence:"] for cls in ("amd-zen4", "intel-icelake")], reg.stdout
    clean = farm(tmp_path, "triage", "regressions", "--cell", "default")
    assert clean.returncode == 0 and clean.stdout.startswith("no regressions"), clean.stdout
    sig = json.loads(farm(tmp_path, "triage", "--signature", "poke_run", "--json").stdout)
    assert sig["only_cells"] == ["lfence"] and sig["split"].startswith("fails only with lfence (4/4 runs; ")
    assert sig["cells"] == [{"cell": "lfence", "hits": 4, "runs": 4}, {"cell": "default", "hits": 0, "runs": 4}]


@pytest.mark.slow
def test_lab_health_from_the_command_line(tmp_path):
    results = [*history(), errored("skl-a", NEW, LATER, 300, "bpftool not found in PATH")]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert farm(tmp_path, "ingest", str(path)).returncode == 0
    m = farm(tmp_path, "triage")
    assert m.stdout.splitlines()[-1] == ("lab health: 1 lost and 1 errored runs on 2 of 7 hosts "
                                         "(not kernel findings; see `farm triage health`)"), m.stdout
    lab = json.loads(farm(tmp_path, "triage", "health", "--json").stdout)
    assert (lab["lost"], lab["errored"]) == (1, 1)
    bad = {h["hostname"]: h for h in lab["hosts"] if h["lost"] or h["errored"]}
    assert sorted(bad) == ["icx-a", "skl-a"]
    assert [(p["outcome"], p["text"], p["runs"]) for p in bad["skl-a"]["problems"]] == [
        ("error", "bpftool not found in PATH", 1)]
    assert bad["skl-a"]["last_seen"] == "2026-09-20T00:00:00"
    assert [s["text"] for s in lab["infra_signatures"]] == ["host-lost"]
    raw = farm(tmp_path, "triage", "health").stdout
    assert "│ intel-skylake-sp │ skl-a  │    3 │    0 │       1 │ 2026-09-20 00:00 │" in raw.splitlines(), raw
    text = " ".join(raw.split())  # the problem lines as rich wrapped them, unwrapped
    assert f"icx-a: 1 lost (last 2026-09-08 00:15, {history()[-1]['run_id']}, kernel {NEW}): " \
           f"icx-a lost during {JOB}: heartbeat stopped skl-a: 1 error (last 2026-09-20 00:00, " \
           f"{JOB}-{NEW}-skl-a-300, kernel {NEW}): bpftool not found in PATH " \
           f"infrastructure signature #{lab['infra_signatures'][0]['id']} host-lost: 1 findings, " \
           "last 2026-09-08 00:15" in text, text
    sigs = json.loads(farm(tmp_path, "triage", "signatures", "--json").stdout)
    assert sorted(s["kind"] for s in sigs) == ["kernel-bug", "kernel-oops", "tail-call-count"]
    one = json.loads(farm(tmp_path, "triage", "--signature", "host-lost", "--json").stdout)
    assert (one["infra"], one["classes"], one["split"]) == (
        True, [], "not a kernel signature: host-lost is lab health (farm triage health)")


@pytest.mark.parametrize("args, says", [
    (("gc", "--older-than", "soon"), "--older-than: 'soon' is not an age"),
    (("ingest", "missing.json"), "missing.json: No such file"),
    (("triage", "--signature", "no such thing"), "no signature matches"),
    (("triage", "signatures", "--mark", "x"), "--mark: use ID=STATUS"),
    (("triage", "--cell", "Not A Cell"), "--cell: 'Not A Cell' is not a cell name"),
    (("triage", "health", "--cell", "lfence"), "--cell: only the matrix, the regressions and the seeds are per cell"),
    (("report",), "give --html DIR and/or --junit FILE"),
])
def test_bad_triage_input_is_one_line_and_exit_2(tmp_path, args, says):
    out = farm(tmp_path, *args)
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_a_file_that_is_not_a_result_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 4}))
    out = farm(tmp_path, "ingest", str(bad))
    assert out.returncode == 2 and out.stderr == f"farm: {bad}: item 0 is not a farm result of schema 1 or 2 or 3\n", \
        out.stderr
