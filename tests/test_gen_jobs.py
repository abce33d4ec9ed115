"""Generated shapes as job topologies (`generate: {seed, programs}`): the
spec, `farm run` on this kernel (static check, then stress beside a corpus
topology), a program put into a shape's slot behind the engine's back, and
triage naming a seed that passes on one kernel and fails on another."""
from __future__ import annotations

import json
import subprocess
import threading

import pytest
import yaml

from farm.errors import BadInput
from farm.gen.judge import judge_exact
from farm.gen.model import layout, run_entry
from farm.gen.shape import Tail, generate
from farm.spec import load_spec, load_spec_text
from farm.stress.oracle import ProblemRecord, merge_problems
from support import REPO, farm_cmd, run_dirs, run_farm, wait_for


def spec_of(*topologies, **extra):
    return load_spec_text(yaml.safe_dump({"topologies": list(topologies), **extra}), "j.yaml", "j")


# -- the spec -------------------------------------------------------------------------------------


def test_a_generated_topology_is_named_by_its_seed_and_seeds_expand():
    s = spec_of({"generate": {"seed": 7}}, {"generate": {"seeds": "2-4", "programs": 20}},
                {"generate": {"seeds": [9]}}, "direct-main")
    assert [t.label for t in s.topologies] == ["gen-7", "gen-2-p20", "gen-3-p20", "gen-4-p20", "gen-9",
                                               "direct-main"]
    assert s.topologies[0].generate.reproduce() == {"seed": 7, "programs": 12}
    assert s.topologies[-1].generate is None
    hooked = spec_of({"generate": {"seed": 7, "hooks": True}}).topologies[0].generate
    assert hooked.label == "gen-7-hooks" and hooked.reproduce()["hooks"] is True
    assert hooked.shape().hooks and hooked.shape().programs == s.topologies[0].generate.shape().programs


@pytest.mark.parametrize("topology, error", [
    ({"generate": {"seed": -1}}, "topologies[0].generate.seed: Input should be greater than or equal to 0"),
    ({"generate": {"seed": True}}, "topologies[0].generate.seed: Input should be a valid integer"),
    ({"generate": {"seed": "7"}}, "topologies[0].generate.seed: Input should be a valid integer"),
    ({"generate": {"seed": 7, "programs": 3}}, "generate.programs: Input should be greater than or equal to 4"),
    ({"generate": {"seed": 7, "programs": 49}}, "generate.programs: Input should be less than or equal to 48"),
    ({"generate": {"programs": 12}}, "topologies[0].generate.seed: Field required"),
    ({"generate": {"seed": 7, "size": 3}}, "topologies[0].generate.size: unknown key"),
    ({"generate": 7}, "topologies[0].generate: Input should be a valid dictionary"),
    ({"generate": {"seed": 7, "hooks": "yes"}}, "topologies[0].generate.hooks: Input should be a valid boolean"),
    ({"generate": {"seed": 7}, "name": "direct-main"}, "topologies[0]: name cannot go with generate"),
    ({"generate": {"seed": 7}, "slots": 2, "fault": "x"}, "topologies[0]: fault, slots cannot go with generate"),
    ({"generate": {"seed": 7}, "source": "int x;"}, "topologies[0]: source cannot go with generate"),
    ({"slots": 2}, "topologies[0]: a topology needs a name (a corpus topology) or generate: {seed: N}"),
    ({"generate": {"seeds": "9-0"}}, "topologies: generate: seeds '9-0': a range like 0-9 of at most 256"),
    ({"generate": {"seeds": "0-999"}}, "seeds '0-999': a range like 0-9 of at most 256 seeds"),
    ({"generate": {"seeds": [1, "x"]}}, "a range like 0-9 or a list of seeds"),
    ({"generate": {"seeds": "0-2", "seed": 1}}, "topologies: generate: give seed or seeds, not both"),
])
def test_bad_generate_values_are_one_clear_line(topology, error):
    with pytest.raises(BadInput) as e:
        spec_of(topology)
    assert str(e.value).startswith("j.yaml: ") and error in str(e.value), str(e.value)


def test_farm_run_refuses_a_bad_seed_with_exit_2_and_no_traceback(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("topologies: [{generate: {seed: -3}}]\n")
    p = run_farm("run", str(job))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "generate.seed: Input should be greater than or equal to 0" in p.stderr


def test_the_example_job_plans_for_a_lab_matrix():
    """farm lab matrix reads jobs as a submission does (elsewhere: CPUs not checked here)."""
    from farm.guests.matrix import MatrixJob, plan_guests
    path = REPO / "jobs" / "generated.yaml"
    job = MatrixJob(path, load_spec(path, elsewhere=True))
    assert [t.label for t in job.spec.topologies][:4] == ["gen-0", "gen-1", "gen-2", "gen-7-p24"]
    plans = plan_guests([job], ["EPYC-Milan"], ["deb:k1", "deb:k2"], None)
    assert [(p.kernel, [j.spec.name for j in p.jobs]) for p in plans] == [("deb:k1", ["generated"]),
                                                                         ("deb:k2", ["generated"])]


# -- findings and triage ----------------------------------------------------------------------------


def wrong_count_finding(seed: int, job_spec):
    """The finding of a real judge problem (a kernel that took one tail call
    too few per run), through the engine's merge."""
    shape = generate(seed)
    lay, entry = layout(shape), shape.entries[0]
    state = {s: 0 for s in range(len(shape.slots))}
    want = run_entry(shape, entry, state)
    assert want.tail_calls > 0
    delta = [c * 10 for c in want.counters]
    site = next(i for i in range(lay.sites) if want.counters[lay.attempt(i)] > want.counters[lay.fall(i)])
    delta[lay.fall(site)] += 10  # one taken tail call a run fell through instead
    problems = judge_exact(shape, entry, state, 10, delta, label=f"gen-{seed}")
    return merge_problems([ProblemRecord(p, 1, (0.0, 0.0), count=1) for p in problems], job_spec)


def test_a_generated_finding_names_its_seed_size_and_how_to_make_it_again():
    s = spec_of({"generate": {"seed": 7}}, "direct-main")
    [f] = wrong_count_finding(7, s)
    assert f.kind == "tail-call-count" and f.signature == "tail-call-count in gen-7"
    assert f.detail["seed"] == 7 and f.detail["shape"]["programs"] == 12
    assert f.detail["reproduce"] == {"job": "j", "topology": "gen-7", "generate": {"seed": 7, "programs": 12},
                                     "cpu": 1, "repeat": s.repeat}


def test_triage_names_a_seed_that_passes_on_one_kernel_and_fails_on_another(tmp_path):
    """Two stored runs of one generated job on one class: gen-7 passes on the
    older kernel and fails on the newer; the regression names both kernels
    and the seed's signature (a large seed is no address to the normaliser)."""
    from support.results_lab import OLD, NEW, T0, base, variant
    from farm.store import open_store
    seed = 123456789
    s = spec_of({"generate": {"seed": seed}})
    finding = wrong_count_finding(seed, s)[0]
    runs = [variant(base("pass"), "zen4-a", OLD, T0, 1, []),
            variant(base("pass"), "zen4-a", NEW, T0.replace(day=8), 2, [finding.__dict__])]
    for r in runs:
        r["job"] = "generated"
    store = open_store(f"sqlite:///{tmp_path}/cli.db")
    assert store.add_many([(r, None, None) for r in runs]) == 2
    env = {"FARM_DB_URL": f"sqlite:///{tmp_path}/cli.db", "FARM_STATE_DIR": str(tmp_path)}
    p = subprocess.run(farm_cmd("triage", "regressions"), cwd=REPO, env={**__import__("os").environ, **env},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr  # one host, no retry yet: awaiting, not a confirmed regression
    lines = p.stdout.splitlines()
    assert lines[0].split()[0] == "awaiting-retry" and f"{OLD} passed, {NEW} failed on zen4-a" in lines[0], p.stdout
    assert lines[1].strip() == f"tail-call-count in gen-{seed}", p.stdout


# -- on this kernel ---------------------------------------------------------------------------------


def farm_run(job_file, tmp_path, **spec):
    res = tmp_path / "result.json"
    proc = run_farm("run", str(job_file(**spec)), "--json", str(res), "--artifacts", str(tmp_path / "art"))
    return proc, (json.loads(res.read_text()) if res.exists() else None)


@pytest.mark.root
@pytest.mark.slow
def test_two_generated_shapes_and_a_corpus_topology_pass_with_every_shape_verified(job_file, tmp_path, no_leaks):
    proc, r = farm_run(job_file, tmp_path, duration="2s",
                       topologies=[{"generate": {"seeds": [7, 11]}}, "direct-main"])
    assert proc.returncode == 0, proc.stderr + json.dumps(r and r["findings"], indent=1)
    assert r["verdict"] == "pass" and r["findings"] == [] and "unverified" not in r
    per = r["stats"]["per_topology"]
    assert list(per) == ["0-gen-7", "1-gen-11", "2-direct-main"]
    # the static check alone verifies thousands; churned windows add to it
    assert all(t["tail_calls_verified"] > 0 and t["windows"] > 0 for t in per.values()), per
    assert sum(t["tail_calls_verified"] for t in per.values()) == r["stats"]["tail_calls_verified"]
    names = {p["name"] for p in r["programs"]}
    assert {"0-gen-7/e0", "1-gen-11/e0", "2-direct-main/entry"} <= names
    assert any(k.endswith("0-gen-7/e0.xlated.txt") for k in r["artifacts"])  # every entry's dump


@pytest.mark.root
@pytest.mark.slow
def test_an_entry_put_into_a_shapes_slot_behind_the_engines_back_is_a_wrong_target(job_file, tmp_path, no_leaks):
    """A slot every run of gen-4's entry tries first is given the entry
    itself with bpftool, again and again, while the writer only replaces
    slowly: runs that tail-call into a program no slot may hold must be
    reported, with the seed."""
    seed = 4
    shape = generate(seed)
    entry = shape.entries[0]
    first = shape.programs[entry].body[0]
    assert isinstance(first, Tail)  # tried on every run, before anything else
    slot = shape.slots[shape.sites[first.site].slot]
    stop = threading.Event()

    def inject():
        def pinned():
            maps = [m for d in run_dirs() if d.name.startswith("gen-inject-")
                    for m in d.glob(f"*-gen-{seed}/maps/pa{slot.array}")]
            return maps[0] if maps else None
        pa = wait_for(pinned, "the run's pins", 120, 0.01)
        rogue = pa.parent.parent / "progs" / shape.programs[entry].name
        key = [str(b) for b in slot.key.to_bytes(4, "little")]
        while not stop.is_set():
            subprocess.run(["bpftool", "map", "update", "pinned", str(pa), "key", *key,
                            "value", "pinned", str(rogue)], capture_output=True)
            stop.wait(0.05)

    t = threading.Thread(target=inject, daemon=True)
    t.start()
    try:
        proc, r = farm_run(job_file, tmp_path, name="gen-inject", duration="2s",
                           topologies=[{"generate": {"seed": seed}}], writers={"ops": ["replace"], "rate": 5})
    finally:
        stop.set()
        t.join()
    assert proc.returncode == 1, proc.stderr
    assert r["verdict"] == "fail" and "wrong-target" in {f["kind"] for f in r["findings"]}, r["findings"]
    for f in r["findings"]:
        assert f["signature"] == f"{f['kind']} in gen-{seed}"
        assert f["detail"]["seed"] == seed and f["detail"]["shape"]["programs"] == 12
        assert f["detail"]["reproduce"]["generate"] == {"seed": seed, "programs": 12}


def test_a_guests_objects_are_compiled_here_before_it_boots(tmp_path, monkeypatch):
    """farm lab run / matrix compile every object of the job into the cache
    the guest shares (clang under TCG takes minutes): the corpus topology,
    its trampolines, and a generated shape with its hooks."""
    from farm.guests.ahead import compile_ahead
    monkeypatch.setenv("FARM_CACHE_DIR", str(tmp_path))
    compile_ahead([spec_of({"generate": {"seed": 3, "hooks": True}}, "fentry", {"name": "direct-main", "slots": 2})])
    built = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "bpf").glob("*.o"))
    assert built == ["direct-main", "fentry", "gen-3", "gen-3", "hooks"], built
