"""`farm triage seeds`: generated seeds across kernels and cells, from a
real SQLite store of engine results (tests/support/results_lab.py) whose
per-topology stats list generated shapes and whose findings come from the
real judge (test_gen_jobs.wrong_count_finding).

The lab: a job of seeds 1, 2, 3 and 4 with hooks, two hosts per kernel.
    6.9.2, 6.12.107+deb12-amd64   every seed passes but 3, which fails
    6.1.0-57-amd64                2 and 3 fail; 4-hooks is refused (lockdown)
-> only gen-2 differs (3 fails everywhere, 1 passes everywhere, 4-hooks never
   ran on the kernel that said no).
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest

from farm.cli import main
from farm.report.html import index_body, kernel_signatures
from farm.report.seeds import differences, seed_differences, seed_entries
from farm.store import open_store
from support import REPO, farm_cmd
from support.results_lab import T0, base, in_cell, variant
from test_gen_jobs import spec_of, wrong_count_finding

JOB = "generated"
PASSING, FAILING = ("6.12.107+deb12-amd64", "6.9.2"), "6.1.0-57-amd64"
LABELS = ["gen-1", "gen-2", "gen-3", "gen-4-hooks"]
LOCKDOWN = "fentry attach: EPERM (lockdown: confidentiality)"
SPEC = spec_of({"generate": {"seeds": [1, 2, 3]}}, {"generate": {"seed": 4, "hooks": True}})


def result(kernel: str, host: str, n: int, failing: list[int], refused: list[str] = ()) -> dict:
    r = variant(base("pass"), host, kernel, T0 + timedelta(minutes=n), n,
                [wrong_count_finding(s, SPEC)[0].__dict__ for s in failing])
    r["job"], r["run_id"] = JOB, f"{JOB}-{kernel}-{host}-{n}"
    # every shape verified, the refused one too: the kernel's no must win over a counter
    r["stats"]["per_topology"] = {f"{i}-{label}": {"runs": 10, "tail_calls_verified": 100, "windows": 3}
                                  for i, label in enumerate(LABELS)}
    if refused:
        r["schema"] = 3
        r["unsupported"] = [{"topology": f"{LABELS.index(t)}-{t}", "reason": LOCKDOWN} for t in refused]
    return r


def lab() -> list[dict]:
    out, n = [], 0
    for kernel in (FAILING, *PASSING):
        for host in ("zen4-a", "zen4-b"):
            n += 1
            out.append(result(kernel, host, n, [2, 3] if kernel == FAILING else [3],
                              ["gen-4-hooks"] if kernel == FAILING else []))
    return out


@pytest.fixture
def store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/seeds.db"
    monkeypatch.setenv("FARM_DB_URL", url)
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    s = open_store(url)
    # another job without generated shapes: never read by the seeds view
    other = variant(base("pass"), "zen4-a", FAILING, T0, 99, [])
    assert s.add_many([(r, None, None) for r in [*lab(), other]]) == 7
    return s


def test_the_differential_names_exactly_the_seed_that_fails_on_one_kernel_only(store):
    [d] = seed_differences(store)
    assert d.label == "gen-2" and d.axis == "kernel"
    # kernels in natural order (6.9 before 6.12), each with its runs and the finding's kind
    assert d.text() == ("gen-2: passes on 6.9.2 (2 runs), 6.12.107+deb12-amd64 (2 runs), "
                        "fails on 6.1.0-57-amd64 (2 runs: tail-call-count)")
    assert d.fails[0].signatures == ["tail-call-count in gen-2"]


def test_every_seed_has_an_outcome_per_kernel_and_a_refused_one_is_never_a_pass(store):
    entries = seed_entries(store)
    got = {(e.label, e.kernel): (e.outcome, e.passed, e.failed, e.not_run) for e in entries}
    assert len(got) == len(entries) == 12  # 4 seeds x 3 kernels, one class
    for k in PASSING:
        assert got[("gen-1", k)] == got[("gen-2", k)] == got[("gen-4-hooks", k)] == ("pass", 2, 0, 0)
        assert got[("gen-3", k)] == ("fail", 0, 2, 0)
    assert got[("gen-1", FAILING)] == ("pass", 2, 0, 0)
    assert got[("gen-2", FAILING)] == got[("gen-3", FAILING)] == ("fail", 0, 2, 0)
    assert got[("gen-4-hooks", FAILING)] == ("not-run", 0, 0, 2)
    refused = next(e for e in entries if e.label == "gen-4-hooks" and e.kernel == FAILING)
    assert refused.reasons == {LOCKDOWN}
    assert [e.label for e in entries[:3]] == ["gen-1"] * 3 and entries[0].kernel == FAILING  # by seed, kernel


def test_a_seed_that_passes_in_one_cell_and_fails_in_another_on_one_kernel_is_named(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/cells.db")
    runs = [in_cell(result("6.6.7", "zen4-a", 1, []), "default"),
            in_cell(result("6.6.7", "zen4-a", 2, [1]), "lfence")]
    assert s.add_many([(r, None, None) for r in runs]) == 2
    [d] = seed_differences(s)
    assert d.text() == "gen-1 on 6.6.7: passes in cell default (1 run), fails in cell lfence (1 run: tail-call-count)"
    assert seed_differences(s, cell="lfence") == []  # one cell alone has nothing to compare
    assert differences(seed_entries(s, hw_class="no-such-class")) == []


def test_cli_lists_the_differing_seed_and_exits_1(store, capsys):
    assert main(["triage", "seeds"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["gen-2: passes on 6.9.2 (2 runs), 6.12.107+deb12-amd64 (2 runs), "
                   "fails on 6.1.0-57-amd64 (2 runs: tail-call-count)"]
    assert main(["triage", "seeds", "--json"]) == 1
    [d] = json.loads(capsys.readouterr().out)["differences"]
    assert d["seed"] == "gen-2" and [f["name"] for f in d["fails"]] == [FAILING]
    assert [p["name"] for p in d["passes"]] == ["6.9.2", "6.12.107+deb12-amd64"]


def test_cli_all_lists_every_seed_and_filters_narrow(store, capsys):
    assert main(["triage", "seeds", "--all", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["seeds"]
    assert sorted({r["seed"] for r in rows}) == sorted(LABELS) and len(rows) == 12
    assert main(["triage", "seeds", "--all"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13 and [ln.split()[0] for ln in lines[:12]] == [lb for lb in LABELS for _ in range(3)]
    assert lines[9].split()[1] == FAILING and f"not run (2 not run: {LOCKDOWN})" in lines[9], lines[9]
    assert lines[3].split()[1] == FAILING and lines[3].endswith("fail    (2 fail: tail-call-count)"), lines[3]
    assert lines[12].startswith("gen-2: passes on")
    # without the failing kernel nothing differs: exit 0, said in one line
    assert main(["triage", "seeds", "--cell", "-", "--hw-class", "amd-zen4-nowhere"]) == 0
    assert capsys.readouterr().out == "no generated seeds stored for these filters\n"
    assert main(["triage", "seeds", "--job", "tailcall-subprog-stress"]) == 0  # no generated shapes


@pytest.mark.parametrize("argv, error", [
    (["triage", "seeds", "--cell", "no such"], "--cell: 'no such' is not a cell name"),
    (["triage", "matrix", "--all"], "--all: only the seeds view"),
    (["triage", "signatures", "--hw-class", "x"], "--hw-class: only the matrix"),
])
def test_cli_bad_input_is_one_line_and_exit_2(store, capsys, argv, error):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm: {error}") and err.count("\n") == 1, err


def test_the_real_command_exits_2_on_bad_input_without_a_traceback(store):
    p = subprocess.run(farm_cmd("triage", "seeds", "--all", "--signature", "x"), cwd=REPO, env=os.environ.copy(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr


def test_the_html_report_names_the_differing_seed(store):
    sigs, wheres = kernel_signatures(store)
    body = index_body(store, sigs, wheres)
    section = body.split("<h2>Seeds across kernels</h2>")[1].split("<h2>")[0]
    assert "gen-2" in section and "6.1.0-57-amd64" in section and "gen-3" not in section


def test_a_run_with_a_kernel_finding_naming_no_seed_shows_no_seed_passing(tmp_path):
    """An oops (or lockup, taint) in a run of several seeds may be any
    seed's doing: none of them passed in that run, and none differs."""
    s = open_store(f"sqlite:///{tmp_path}/oops.db")
    good = result(PASSING[0], "zen4-a", 1, [])
    oops = result(FAILING, "zen4-a", 2, [2])
    oops["findings"].append({"kind": "kernel-oops", "signature": "BUG: unable to handle page fault",
                             "summary": "BUG: unable to handle page fault", "detail": {}})
    s.add_many([(good, None, None), (oops, None, None)])
    got = {(e.label, e.kernel): e for e in seed_entries(s)}
    assert got[("gen-1", FAILING)].outcome == "not-run"
    assert got[("gen-1", FAILING)].reasons == {"the run's kernel-oops names no seed"}
    assert got[("gen-2", FAILING)].outcome == "fail"  # its own finding still counts
    assert [d.label for d in differences(list(got.values()))] == ["gen-2"]
