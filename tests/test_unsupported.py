"""Topologies a kernel cannot run at all (result schema 3's `unsupported`:
no trampolines, lockdown's EPERM) in the results database and triage: a run
whose only trouble that was is "not run", with the kernel's reason, in the
matrix, the CLI, --json, the HTML and JUnit; never lab trouble, never a
kernel signature, never a step of a regression series. Real SQLite
databases; results settled by farm.result.Result itself."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from farm.cli import main
from farm.report import html
from farm.report.health import health
from farm.report.junit import write_junit
from farm.report.matrix import matrix, unsupported
from farm.report.regressions import regressions
from farm.report.signatures import find_signature, signatures, where
from farm.store import open_store
from farm.store.db import make_engine, migrate
from farm.store.models import Run, Unsupported
from support.old_schema import rows_at_0003
from support.results_lab import EPERM, NEW, OLD, T0, base, history, kernel_finding, unsupported_run, variant

MID = "6.4.0"   # between OLD and NEW: a kernel booted with lockdown on, say
FENTRY = [{"topology": "1-fentry", "reason": EPERM}]
NO_TRAMP = "hierarchy-fexit: the kernel cannot load it: ENOTSUPP (no BPF trampolines on this architecture)"
AT = T0 + timedelta(days=3)


def not_run_lab() -> list[dict]:
    """history() plus: on MID, both amd-zen4 hosts could not run 1-fentry
    (and nothing else went wrong); skl-a on NEW could not either and lost
    bpftool besides (an error); zen2-b on NEW could not and crashed (a fail)."""
    return [*history(),
            unsupported_run("zen4-a", MID, AT, 101, FENTRY),
            unsupported_run("zen4-b", MID, AT + timedelta(minutes=1), 102,
                            FENTRY + [{"topology": "2-hierarchy-fexit", "reason": NO_TRAMP}]),
            unsupported_run("skl-a", NEW, AT + timedelta(days=5), 103, FENTRY, error="bpftool not found in PATH"),
            unsupported_run("zen2-b", NEW, AT + timedelta(days=5, minutes=1), 104, FENTRY,
                            findings=[kernel_finding("pagefault-bpf-prog")])]


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    assert s.add_many([(r, None, None) for r in not_run_lab()]) == len(not_run_lab())
    return s


def entries(s) -> dict:
    return {(e.hw_class, e.kernel): e for e in matrix(s)}


# -- the store ----------------------------------------------------------------------------

def test_the_results_are_what_settle_verdict_makes_of_them():
    lab = not_run_lab()[-4:]
    assert [r["verdict"] for r in lab] == ["error", "error", "error", "fail"]
    assert lab[0]["error"] == f"unsupported here: 1-fentry ({EPERM})"
    assert lab[2]["error"] == "bpftool not found in PATH"
    assert lab[3]["unverified"].startswith("unsupported here: 1-fentry")


def test_ingest_keeps_every_runs_unsupported_list_and_only_the_clean_ones_are_not_run(store):
    with store.session() as s:
        outcomes = dict(s.execute(select(Run.run_id, Run.outcome).where(Run.kernel.in_((MID, NEW)))).all())
        kept = sorted(tuple(r) for r in s.execute(select(Unsupported.run_id, Unsupported.topology,
                                                         Unsupported.reason)))
    ids = [r["run_id"] for r in not_run_lab()[-4:]]
    assert [outcomes[i] for i in ids] == ["not-run", "not-run", "error", "fail"]
    assert kept == sorted([(ids[0], "1-fentry", EPERM), (ids[1], "1-fentry", EPERM),
                           (ids[1], "2-hierarchy-fexit", NO_TRAMP), (ids[2], "1-fentry", EPERM),
                           (ids[3], "1-fentry", EPERM)])
    # a result of schema 1 or 2 has none, and is what it was
    assert sum(o == "not-run" for o in outcomes.values()) == 2


@pytest.mark.parametrize("change, outcome", [
    (lambda r: r.update(error="unsupported here: 1-fentry (another reason)"), "error"),  # not its own list
    (lambda r: r.update(unsupported=[]), "error"),
    (lambda r: r.update(unsupported="not a list"), "error"),
    (lambda r: r.update(unsupported=[{"topology": 7}]), "error"),
    (lambda r: r.update(verdict="pass", error=None), "pass"),
])
def test_only_the_exact_unsupported_error_is_not_run(tmp_path, change, outcome):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    r = unsupported_run("zen4-a", MID, AT, 1, FENTRY)
    change(r)
    assert s.add(r)
    with s.session() as ss:
        assert ss.scalar(select(Run.outcome)) == outcome


def test_an_upgrade_from_0003_reads_unsupported_back_from_the_kept_results(tmp_path):
    """A database at 0003 that already took schema-3 results (stored as
    errors): the upgrade makes the clean one not-run, keeps every run's
    list, and leaves a run of schema 1 alone; the downgrade undoes it."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate(engine, "0003")
    old = [variant(base("pass"), "skl-a", NEW, T0, 1),
           unsupported_run("skl-a", NEW, AT, 2, FENTRY),
           unsupported_run("skl-a", NEW, AT, 3, FENTRY, findings=[kernel_finding()]),
           unsupported_run("skl-a", NEW, AT, 4, FENTRY, error="bpftool not found in PATH")]
    with engine.begin() as c:
        rows_at_0003(c, old)
    s = open_store(url)
    with s.session() as ss:
        got = [tuple(r) for r in ss.execute(select(Run.run_id, Run.outcome).order_by(Run.started))]
        kept = sorted(ss.scalars(select(Unsupported.run_id)))
    assert [o for _, o in got] == ["pass", "not-run", "fail", "error"]
    assert kept == sorted(r["run_id"] for r in old[1:])
    assert entries(s)[("intel-skylake-sp", "6.12.0")].unsupported == {("1-fentry", EPERM): 3}
    s.engine.dispose()
    from alembic import command
    from farm.store.db import _alembic_config
    with engine.begin() as c:   # and back: the table goes, the not-run run is the error it was
        command.downgrade(_alembic_config(c), "0003")
    with engine.connect() as c:
        assert "unsupported" not in inspect(c).get_table_names()
        assert [r[0] for r in c.execute(select(Run.outcome).order_by(Run.started))] == [
            "pass", "error", "fail", "error"]


# -- triage ---------------------------------------------------------------------------------

def test_the_matrix_shows_a_not_run_entry_with_the_kernels_reason(store):
    m = entries(store)
    e = m[("amd-zen4", MID)]
    assert (e.status, e.counts["not-run"], e.runs) == ("not-run", 2, 2)
    assert e.unsupported == {("1-fentry", EPERM): 2, ("2-hierarchy-fexit", NO_TRAMP): 1}
    assert e.not_run_text() == f"not run: 1-fentry ({EPERM}); 2-hierarchy-fexit ({NO_TRAMP})"
    d = e.to_dict()
    assert (d["status"], d["not-run"], d["error"]) == ("not-run", 2, 0)
    assert d["unsupported"][0] == {"topology": "1-fentry", "reason": EPERM, "runs": 2}
    # with other trouble it stays what it was
    assert m[("intel-skylake-sp", NEW)].status == "fail"   # skl-a's page fault, and its error
    assert m[("intel-skylake-sp", NEW)].counts["error"] == 1
    assert m[("amd-zen2", NEW)].counts["fail"] == 2
    # every entry without an unsupported topology reads as before
    assert m[("amd-zen4", NEW)].status == "fail" and m[("amd-zen4", NEW)].unsupported == {}
    assert all(e.counts["not-run"] == 0 for k, e in m.items() if k[1] != MID)


def test_not_run_beats_pass_as_an_error_does():
    from farm.report.matrix import MatrixEntry
    e = MatrixEntry("j", "c", "k")
    e.counts.update({"pass": 3, "not-run": 1})
    assert e.status == "not-run"
    e.counts["error"] = 1
    assert e.status == "error"


def test_per_kernel_what_was_not_run_and_why(store):
    assert [(n.kernel, n.topology, n.reason, n.runs, n.hw_classes) for n in unsupported(store)] == [
        (MID, "fentry", EPERM, 2, ["amd-zen4"]),
        (MID, "hierarchy-fexit", NO_TRAMP, 1, ["amd-zen4"]),
        (NEW, "fentry", EPERM, 2, ["amd-zen2", "intel-skylake-sp"])]
    assert unsupported(store, job="another-job") == []


def test_not_run_is_not_lab_trouble(store):
    lab = health(store)
    assert (lab.lost, lab.errored) == (1, 1)   # history's lost run, and skl-a's bpftool
    zen4 = {h.hostname: h for h in lab.hosts}["zen4-a"]
    assert zen4.ok and zen4.problems == [] and zen4.runs == 3
    assert [p.text for h in lab.hosts for p in h.problems if p.outcome == "error"] == [
        "bpftool not found in PATH"]


def test_not_run_is_no_kernel_signature_and_no_clean_run_in_a_split(store):
    assert {s.text for s in signatures(store)} == {
        kernel_finding()["signature"], kernel_finding("pagefault-bpf-prog")["signature"],
        "tail-call-count in chain-limit-direct", "host-lost"}
    # zen4's two not-run runs are not counted as clean amd-zen4 runs
    assert where(store, find_signature(store, "prog_array_map_poke_run")).split() == \
        "AMD only: 2/4 runs on amd-zen4, 0/5 on amd-zen2, 0/6 on intel-*"   # zen2-b's fail counts


def test_a_kernel_that_could_not_run_is_no_step_of_a_regression_series(store):
    """amd-zen4: OLD passed, MID was not run, NEW fails on both hosts: a
    regression from OLD, not hidden by MID."""
    zen4 = next(c for c in regressions(store) if c.hw_class == "amd-zen4")
    assert (zen4.state, zen4.previous_kernel, zen4.kernel) == ("regression", OLD, NEW)


# -- the reports ----------------------------------------------------------------------------

def test_junit_skips_a_not_run_run_with_the_kernels_reason(store, tmp_path):
    root = ET.parse(write_junit(store, tmp_path / "j.xml")).getroot()
    cases = {c.get("name").split()[-1]: c for c in root.iter("testcase")}
    ids = [r["run_id"] for r in not_run_lab()[-4:]]
    skipped = [cases[i].find("skipped") for i in ids]
    assert skipped[0].get("message") == f"unsupported here: 1-fentry ({EPERM})"
    assert skipped[1].get("message").startswith("unsupported here: 1-fentry") and NO_TRAMP in skipped[1].get("message")
    assert skipped[2:] == [None, None] and list(cases[ids[0]]) == [skipped[0]]
    assert cases[ids[2]].find("error").get("message") == "bpftool not found in PATH"
    assert cases[ids[3]].find("failure") is not None
    assert (root.get("tests"), root.get("skipped"), root.get("errors")) == ("19", "2", "2")
    assert root.find("testsuite").get("skipped") == "2"


def test_the_html_shows_not_run_entries_and_what_each_kernel_could_not_run(store, tmp_path):
    text = html.render(store, tmp_path / "html").read_text()
    cell = next(part for part in text.split("<td ") if f'data-kernel="{MID}"' in part
                and 'data-hw-class="amd-zen4"' in part)
    assert 'class="entry s-not-run"' in cell and ">2/2 not run</td>" in cell
    assert "2 not-run" in cell and f"not run: 1-fentry ({EPERM})" in cell.replace("&#39;", "'")   # Jinja escapes ' as &#39;
    assert f".s-not-run{{background:rgb{html.COLOURS['not-run']}}}" in text
    assert len(set(html.COLOURS.values())) == len(html.COLOURS)   # a colour of its own
    section = text.split("<h2>Not run</h2>")[1].split("<h2>")[0]
    rows = [r for r in section.split("<tr ")[1:]]
    assert len(rows) == 3 and f'data-kernel="{MID}"' in rows[0] and "hierarchy-fexit" in rows[1]
    assert "<td class=reason>" + EPERM.replace("(", "(") in rows[2]
    # and no entry of history's reads differently
    assert 'title="2 pass, 0 fail, 0 lost, 0 error"' in text


def test_the_html_says_when_everything_ran(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    s.add_many([(r, None, None) for r in history()])
    text = html.render(s, tmp_path / "html").read_text()
    assert "<h2>Not run</h2><p>Every topology ran on every kernel.</p>" in text and "s-not-run\"" not in text


# -- the command line -----------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FARM_DB_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")

    def run(*args) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().out
    return run


def test_farm_triage_shows_not_run_and_the_reasons_per_kernel_in_80_columns(cli, tmp_path):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(not_run_lab()))
    assert cli("ingest", str(path))[0] == 0
    code, out = cli("triage")
    lines = out.splitlines()
    assert code == 0 and lines[-1].startswith("lab health: ")   # a line as long as it was before
    assert [line for line in lines[:-1] if len(line) > 80] == [], out
    assert lines[2].split("┃")[1:-1] == [" job      ", " hw_class ", " kernel   ", " cell ", " status  ",
                                         " pass ", " fail ", " lost ", " error "], out
    assert [c.strip() for c in next(line for line in lines if f" {MID} " in line).split("│")[3:-1]] == [
        MID, "-", "not run", "0", "0", "0", "0"], out
    tail = out.split("not run (the kernel cannot run it: no kernel finding, no lab trouble):\n")[1]
    assert tail.splitlines()[0] == f"  kernel {MID}:"
    assert " ".join(tail.split()).startswith(
        f"kernel {MID}: fentry (2 runs on amd-zen4): {EPERM} hierarchy-fexit (1 run on amd-zen4): {NO_TRAMP} "
        f"kernel {NEW}: fentry (2 runs on amd-zen2, intel-skylake-sp): {EPERM} lab health:"), tail
    m = json.loads(cli("triage", "--json")[1])
    mid = next(e for e in m if e["kernel"] == MID)
    assert (mid["status"], mid["not-run"]) == ("not-run", 2)
    assert mid["unsupported"] == [{"topology": "1-fentry", "reason": EPERM, "runs": 2},
                                  {"topology": "2-hierarchy-fexit", "reason": NO_TRAMP, "runs": 1}]


def test_farm_triage_without_not_run_runs_keeps_its_columns(cli, tmp_path):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(history()))
    cli("ingest", str(path))
    out = cli("triage")[1]
    assert "not run" not in out and out.splitlines()[2].split("┃")[-2].strip() == "error", out
    assert "│ tailcal… │ amd-zen2 │ 6.1.0-56… │ -    │ pass   │    2 │    0 │    0 │     0 │" in out, out
