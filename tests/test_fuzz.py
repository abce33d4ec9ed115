"""farm fuzz: generated shapes against the model on this kernel; a failing
seed shrunk and exported as a reproducer that runs without farm
(docs/fuzz.md). The shrinker's own search is pure and tested with a plain
callback; everything else runs the real `farm fuzz` on the real kernel."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, run_farm

from farm.gen import emit
from farm.gen.check import states
from farm.gen.model import EMPTY, layout, run_entry
from farm.gen.shape import generate
from farm.gen.shrink import Case, compact, drop_programs, shrink, size


def _valid(c: Case) -> None:
    """What emit, load and the model need of a shape: every index in range."""
    s = c.shape
    assert len(c.state) == len(s.slots) and 0 <= c.entry < len(s.programs)
    assert s.programs[c.entry].kind == "entry"
    for slot, k in zip(s.slots, c.state):
        assert slot.array < len(s.arrays) and slot.key < s.arrays[slot.array]
        assert all(0 <= p < len(s.programs) and s.programs[p].kind == "target" for p in slot.candidates)
        assert k == EMPTY or 0 <= k < len(slot.candidates)
    assert all(site.slot < len(s.slots) for site in s.sites)
    emit.source(s)
    run_entry(s, c.entry, c.state_dict)


def test_the_shrinker_keeps_what_the_callback_needs_and_drops_the_rest():
    """A stand-in failure: "the run reaches program X". The shrunk case still
    does (the callback said so at every step), is valid, and much smaller."""
    shape = generate(3)
    state = tuple(states(shape)[0].values())
    out = run_entry(shape, 0, dict(enumerate(state)))
    lay = layout(shape)
    reached = [p for p in range(len(shape.programs)) if p != 0 and out.counters[lay.run(p)]]
    target = shape.programs[reached[-1]].name
    calls = []

    def reproduces(c: Case) -> bool:
        _valid(c)
        calls.append(c)
        run = run_entry(c.shape, c.entry, c.state_dict)
        i = next((p for p, f in enumerate(c.shape.programs) if f.name == target), None)
        return i is not None and run.counters[layout(c.shape).run(i)] > 0

    case = Case(shape, 0, state)
    small = shrink(case, reproduces)
    assert len(calls) == small.tries  # each candidate once
    assert reproduces(small.case) and not small.exhausted
    assert small.steps > 0 and size(small.case) < size(case) // 3, (size(case), size(small.case))
    names = [p.name for p in small.case.shape.programs]
    assert target in names and names[0] == shape.programs[0].name  # names are the original's
    assert not small.case.shape.subs and all(f.frame == 0 for f in small.case.shape.programs)


def test_the_shrinker_stops_at_its_limit_and_never_offers_the_same_case_twice():
    seen = []
    small = shrink(Case(generate(5), 0, tuple(states(generate(5))[0].values())),
                   lambda c: seen.append(c) or False, max_tries=7)
    assert small.exhausted and small.tries == 7 and small.steps == 0 and len(set(seen)) == 7


def test_dropping_a_program_empties_the_slots_that_held_it_and_renumbers_the_rest():
    shape = generate(7)
    state = tuple(states(shape)[0].values())
    held = shape.slots[0].candidates[state[0]]
    c = drop_programs(Case(shape, 0, state), {held})
    _valid(c)
    assert c.state[0] == EMPTY and len(c.shape.programs) == len(shape.programs) - 1
    # the failing entry stays: a candidate without it is no candidate
    assert drop_programs(Case(shape, 0, state), {0}) is None
    # a compacted case drops what nothing refers to, and is already compact
    assert compact(c) == compact(compact(c))


@pytest.mark.parametrize("args, message", [
    (["--seeds", "9-3"], "--seeds: '9-3' ends before it starts"),
    (["--seeds", "x"], "--seeds: 'x' is not a seed range (use e.g. 0-99 or 7)"),
    (["--programs", "2"], "--programs: 2 is out of range (4..48)"),
    (["--budget", "soon"], "--budget: 'soon' is not a duration (use e.g. 10s, 5m, 1h)"),
    (["--kernel", "deb:linux-image-amd64"], "--kernel and --cell choose a guest: give --cpu-model too"),
    (["--inject", "nothing"], None),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    from farm.cli import main
    try:
        code = main(["fuzz", *args])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    if message:
        assert lines[0] == f"farm: {message}"


def _standalone_env() -> dict:
    """A plain python3 that cannot import farm: no PYTHONPATH, no venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


@pytest.mark.slow
@pytest.mark.root
def test_an_injected_wrong_slot_is_reported_shrunk_and_exported_as_a_reproducer_that_runs_without_farm(
        tmp_path, no_leaks):
    out, export = tmp_path / "fuzz.json", tmp_path / "repro"
    p = run_farm("fuzz", "--seeds", "1", "--inject", "wrong-slot", "--export", str(export), "--json", str(out),
                 timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    assert doc["graphs"] == 1 and doc["inject"] == "wrong-slot"
    assert [f["seed"] for f in doc["findings"]] == [1]
    f = doc["findings"][0]
    assert f["kind"] == "wrong-target" and f["injected"]["program"] not in f["injected"]["candidates"]
    assert f["shrunk"]["programs"] < f["original"]["programs"] and f["shrunk"]["size"] < f["original_size"]
    assert f["reproduces_after_shrink"] and f["reproducer"] == str(export / "1")
    assert f"seed 1: wrong-target shrunk to {f['shrunk']['programs']} programs" in p.stdout

    # the reproducer: its own files, no farm on the path, run from elsewhere
    repro = export / "1"
    assert {x.name for x in repro.iterdir()} == {"shape.bpf.c", "gen.h", "run.py", "Makefile", "expected.json",
                                                 "README.md"}
    assert not re.search(r"^\s*(from|import)\s+farm\b", (repro / "run.py").read_text(), re.M)
    make = subprocess.run(["make", "-C", str(repro)], capture_output=True, text=True, env=_standalone_env())
    assert make.returncode == 0 and (repro / "shape.o").exists(), make.stdout + make.stderr
    python3 = "/usr/bin/python3"
    probe = subprocess.run([python3, "-I", "-c", "import farm"], capture_output=True, env=_standalone_env(),
                           cwd=tmp_path)
    assert probe.returncode != 0  # farm really is out of its reach
    run = subprocess.run([python3, "-I", str(repro / "run.py")], capture_output=True, text=True,
                         env=_standalone_env(), cwd=tmp_path, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "DIFFERS" in run.stdout and "<-- differs" in run.stdout and "an injected fault" in run.stdout
    exp = json.loads((repro / "expected.json").read_text())
    injected = [s for s in exp["slots"] if s["injected"]]
    assert len(injected) == 1 and injected[0]["holds"] == f["injected"]["program"]
    readme = (repro / "README.md").read_text()
    assert "injected fault" in readme and "MAX_TAIL_CALL_CNT" in readme and "sudo python3 run.py" in readme

    # without the injected program the same reproducer agrees with the model: it can pass
    injected[0]["holds"] = injected[0]["model_holds"]
    (repro / "expected.json").write_text(json.dumps(exp))
    agree = subprocess.run([python3, "-I", str(repro / "run.py")], capture_output=True, text=True,
                           env=_standalone_env(), cwd=tmp_path, timeout=120)
    assert agree.returncode == 0 and "AS EXPECTED" in agree.stdout, agree.stdout + agree.stderr
    assert not list(Path("/sys/fs/bpf").glob("farm-repro-*"))


@pytest.mark.slow
@pytest.mark.root
def test_two_hundred_seeds_agree_with_the_model_on_every_count(tmp_path, no_leaks):
    out = tmp_path / "fuzz.json"
    p = run_farm("fuzz", "--seeds", "0-199", "--json", str(out), timeout=1200)
    doc = json.loads(out.read_text())
    assert (doc["findings"], doc["errors"], doc["error"]) == ([], [], None), p.stdout + p.stderr
    assert p.returncode == 0 and doc["graphs"] == 200 and doc["programs"] == 200 * 12
    assert doc["tail_calls_verified"] > 0 and doc["checks"] >= 200 * 4


@pytest.mark.slow
@pytest.mark.root
def test_the_budget_stops_starting_seeds(tmp_path, no_leaks):
    out = tmp_path / "fuzz.json"
    p = run_farm("fuzz", "--seeds", "0-9999", "--budget", "1s", "--json", str(out), timeout=300)
    doc = json.loads(out.read_text())
    assert p.returncode == 0, p.stdout + p.stderr
    assert doc["stopped_by_budget"] and 1 <= doc["graphs"] < 10000 and "stopped by --budget" in p.stdout


def test_the_reproducer_loader_imports_only_the_standard_library():
    src = (REPO / "farm" / "gen" / "standalone.py").read_text()
    mods = set(re.findall(r"^(?:from|import)\s+([\w.]+)", src, re.M))
    assert mods <= {"__future__", "ctypes", "json", "os", "shutil", "subprocess", "sys"}, mods
    assert all(m in sys.stdlib_module_names or m == "__future__" for m in mods)
