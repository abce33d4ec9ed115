"""The finding kinds that came with the trampoline topologies and the
refuse checks, as kernel signatures like any other: "trampoline-count in
<topology>" (farm.stress.oracle.merge_problems) and "accepted-unsafe:
<case>" (the kernel accepted what its selftests say it must refuse). Each
passes the signature normaliser unchanged, goes through the vendor split,
retry-before-regression and the triage signature list under that exact
text. Real SQLite databases."""
from __future__ import annotations

import json

import pytest

from farm.bpf.corpus import C_DEPTH, C_ENTRIES, C_FENTRY, C_NR, C_SUBCALL, TOPOLOGIES, hit_index
from farm.cli import main
from farm.report.regressions import regressions
from farm.report.signatures import find_signature, signatures, where
from farm.result import FINDING_KINDS, Finding
from farm.spec import JobSpec
from farm.store import open_store
from farm.store.ingest import signature_key
from farm.stress.oracle import ProblemRecord, judge_window, merge_problems
from support.results_lab import JOB, NEW, history


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FARM_DB_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")

    def run(*args) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().out
    return run


# -- the new finding kinds as kernel signatures ------------------------------------------------

def trampoline_finding() -> dict:
    """The real oracle's finding for a window of the fentry topology whose
    fentry ran once per run instead of once per call of subprog_tail."""
    topo = TOPOLOGIES["fentry"]
    d = [0] * C_NR
    d[C_ENTRIES], d[C_SUBCALL], d[C_FENTRY] = 10, 20, 10
    d[hit_index(0, 0)] = 330
    d[C_DEPTH + 33] = 10
    v = judge_window(topo, "fentry", 1, d, {0: {0}})
    assert [p.kind for p in v.problems] == ["trampoline-count"]
    spec = JobSpec(name=JOB, cpus=[0], topologies=[{"name": "fentry"}])
    f = merge_problems([ProblemRecord(v.problems[0], 0, (0.0, 0.1), count=1)], spec)[0]
    return {"kind": f.kind, "signature": f.signature, "summary": f.summary, "cpu": f.cpu, "at": f.at,
            "detail": f.detail}


def accepted_unsafe(case: str = "freplace-in-prog-array") -> dict:
    f = Finding("accepted-unsafe", f"accepted-unsafe: {case}",
                f"the kernel accepted {case}, which its selftests say it must refuse")
    return f.__dict__


def test_the_new_kinds_are_finding_kinds():
    assert {"trampoline-count", "accepted-unsafe"} <= set(FINDING_KINDS)


@pytest.mark.parametrize("text", [f"trampoline-count in {name}" for name in TOPOLOGIES] + [
    f"accepted-unsafe: {case}" for case in ("freplace-in-prog-array", "tailcall_bpf2bpf_freplace",
                                             "fentry-on-tail-call-target", "tailcall_freplace")])
def test_the_new_signatures_are_stable_through_the_normaliser(text):
    assert signature_key(text) == text


@pytest.mark.parametrize("finding, signature", [
    (trampoline_finding, "trampoline-count in fentry"),
    (accepted_unsafe, "accepted-unsafe: freplace-in-prog-array"),
])
def test_a_stored_run_with_a_new_kind_is_a_kernel_signature_with_a_split_and_a_regression(
        tmp_path, finding, signature):
    """Stored in place of history's amd-zen4 kernel BUG: the same vendor
    split, the same regression after a retry on the other host."""
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    lab = history()
    for r in lab:
        if r["host"]["kernel"] == NEW and r["host"]["hostname"].startswith("zen4"):
            r["findings"] = [finding()]
    assert s.add_many([(r, None, None) for r in lab]) == len(lab)
    sig = find_signature(s, signature)
    assert (sig.text, sig.kind, sig.count) == (signature, signature.split(" ")[0].rstrip(":"), 2)
    assert signature in {x.text for x in signatures(s)}
    assert where(s, sig).split() == "AMD only: 2/4 runs on amd-zen4, 0/4 on amd-zen2, 0/6 on intel-*"
    zen4 = next(c for c in regressions(s) if c.hw_class == "amd-zen4")
    assert (zen4.state, zen4.signatures) == ("regression", [signature])
    # a retry that passes makes it flaky, as for any kernel finding
    s2 = open_store(f"sqlite:///{tmp_path}/flaky.db")
    for r in lab:
        if r["host"]["kernel"] == NEW and r["host"]["hostname"] == "zen4-b":
            r["findings"], r["verdict"] = [], "pass"
    s2.add_many([(r, None, None) for r in lab])
    assert next(c for c in regressions(s2) if c.hw_class == "amd-zen4").state == "flaky"


def test_the_triage_signature_list_names_the_new_kinds_exactly(cli, tmp_path):
    lab = history()
    lab[7]["findings"] = [trampoline_finding()]                 # zen4-a on NEW
    lab[8]["findings"] = [accepted_unsafe()]                    # zen4-b on NEW
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(lab))
    cli("ingest", str(path))
    sigs = json.loads(cli("triage", "signatures", "--json")[1])
    got = {s["signature"]: s["kind"] for s in sigs}
    assert got["trampoline-count in fentry"] == "trampoline-count"
    assert got["accepted-unsafe: freplace-in-prog-array"] == "accepted-unsafe"
    text = cli("triage", "signatures")[1]
    assert any(line.endswith("  trampoline-count in fentry") for line in text.splitlines()), text
    assert any(line.endswith("  accepted-unsafe: freplace-in-prog-array") for line in text.splitlines()), text
