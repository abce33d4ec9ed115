"""`farm lab matrix`: jobs x CPU models x kernels x cells in guests, one guest
per (model, kernel, cell) running all its jobs. Pure logic first (fast),
then one real matrix in guests."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from farm.bpf.mitigation import classify
from support import REPO, farm_cmd


def job(path: Path, name: str, cells=None):
    from farm.guests.matrix import MatrixJob
    from farm.spec import load_spec
    path.write_text("duration: 1s\ntopologies: [direct-main]\n"
                    + (f"targets: {{cells: {json.dumps(cells)}}}\n" if cells is not None else ""))
    return MatrixJob(path, load_spec(path, elsewhere=True))


# -- pure logic -------------------------------------------------------------------------------


def test_guests_at_once_follow_cpus_then_memory_then_how_many_there_are():
    from farm.guests.matrix import QEMU_OVERHEAD_MB, guest_slots
    per_guest = 2048 + QEMU_OVERHEAD_MB
    assert guest_slots(cpus=8, mem_available_mb=100 * per_guest, memory_mb=2048, guests=12) == 8
    assert guest_slots(cpus=8, mem_available_mb=3 * per_guest + 10, memory_mb=2048, guests=12) == 3
    assert guest_slots(cpus=8, mem_available_mb=100 * per_guest, memory_mb=2048, guests=2) == 2
    assert guest_slots(cpus=2, mem_available_mb=100, memory_mb=2048, guests=5) == 1  # still one, as lab run would
    assert guest_slots(cpus=2, mem_available_mb=100, memory_mb=2048, guests=12, parallel=5) == 5
    assert guest_slots(cpus=2, mem_available_mb=100, memory_mb=2048, guests=3, parallel=5) == 3


def test_parallel_below_one_is_bad_input():
    from farm.errors import BadInput
    from farm.guests.matrix import guest_slots
    with pytest.raises(BadInput, match=r"--parallel: 0 \(at least 1\)"):
        guest_slots(cpus=2, mem_available_mb=10**6, memory_mb=2048, guests=3, parallel=0)


def test_the_cross_product_is_one_guest_per_model_kernel_and_cell_each_running_all_its_jobs(tmp_path):
    from farm.guests.matrix import plan_guests
    a, b = job(tmp_path / "a.yaml", "a"), job(tmp_path / "b.yaml", "b")
    plans = plan_guests([a, b], ["EPYC-Milan", "Icelake-Server"], ["deb:k1", "deb:k2"], ["default", "off", "lfence"])
    assert len(plans) == 12
    assert {(p.cpu_model, p.kernel, p.cell) for p in plans} == {
        (m, k, c) for m in ("EPYC-Milan", "Icelake-Server") for k in ("deb:k1", "deb:k2")
        for c in ("default", "off", "lfence")}
    assert all([j.spec.name for j in p.jobs] == ["a", "b"] for p in plans)  # in the order given


def test_without_cells_each_job_runs_in_its_own_targets_cells_else_default(tmp_path):
    from farm.guests.matrix import plan_guests
    a = job(tmp_path / "a.yaml", "a", cells=["off", "lfence"])
    b = job(tmp_path / "b.yaml", "b")
    c = job(tmp_path / "c.yaml", "c", cells=["off"])
    plans = plan_guests([a, b, c], ["EPYC-Milan"], ["deb:k"], None)
    assert {p.cell: [j.spec.name for j in p.jobs] for p in plans} == {"off": ["a", "c"], "lfence": ["a"],
                                                                      "default": ["b"]}


def test_an_empty_cross_product_or_list_is_bad_input(tmp_path):
    from farm.errors import BadInput
    from farm.guests.matrix import check_kernels, plan_guests, split_list
    with pytest.raises(BadInput, match="cross product is empty"):
        plan_guests([job(tmp_path / "a.yaml", "a")], [], ["deb:k"], None)
    with pytest.raises(BadInput, match=r"--cells: nothing given"):
        split_list(" , ", "--cells")
    assert split_list("off, default,off", "--cells") == ["off", "default"]
    with pytest.raises(BadInput, match=r"--kernels: '/boot/vmlinuz' is not deb:PACKAGE"):
        check_kernels(["/boot/vmlinuz"])
    with pytest.raises(BadInput, match=r"is not deb:PACKAGE"):
        check_kernels(["deb:Linux;rm"])


def test_the_worst_run_decides_the_exit_code():
    from farm.guests.matrix import worst_exit_code as worst_exit
    assert worst_exit([0, 0]) == 0
    assert worst_exit([0, 1, 0]) == 1
    assert worst_exit([1, 3, 0]) == 3
    assert worst_exit([]) == 3  # nothing ran: never a pass


@pytest.mark.parametrize("cells, error", [
    ('[default, nope]', r"targets\.cells: unknown cell 'nope' \(known in cells\.yaml: default, .*off"),
    ("off", r"targets\.cells: False: a list of cell names .*quote off"),
    ("[off]", r"targets\.cells: \[False\]: a list of cell names"),
    ("[]", r"targets\.cells: a non-empty list of cell names"),
])
def test_a_jobs_targets_cells_are_checked_against_cells_yaml(tmp_path, cells, error):
    from farm.errors import BadInput
    from farm.spec import load_spec
    path = tmp_path / "j.yaml"
    path.write_text(f"topologies: [direct-main]\ntargets: {{cells: {cells}}}\n")
    with pytest.raises(BadInput, match=error):
        load_spec(path)


def test_targets_cells_keep_their_order_once_each(tmp_path):
    assert job(tmp_path / "j.yaml", "j", cells=["off", "default", "off"]).spec.targets.cells == ("off", "default")


def test_the_guest_script_marks_each_job_started_and_its_exit_in_its_own_dir(tmp_path):
    from farm.guests.matrix import GuestPlan, guest_script
    plan = GuestPlan("EPYC-Milan", "deb:k", "off", (job(tmp_path / "a.yaml", "a"), job(tmp_path / "b.yaml", "b")))
    script = guest_script(plan, Path("/x"), "2s")
    assert script.index(": > /x/jobs/0/started") < script.index("/x/jobs/0/a.yaml") < \
        script.index("echo $? > /x/jobs/0/exit") < script.index(": > /x/jobs/1/started") < \
        script.index("/x/jobs/1/b.yaml")
    assert script.count("--duration 2s") == 2
    assert script.count("--cell off") == 2  # each run proves its cell from its own JIT listing
    assert "exec " not in script  # one job's end is not the guest's


def test_a_guest_lost_mid_matrix_blames_its_crash_on_the_running_job_only(tmp_path):
    """The first job finished, the second was running when the kernel
    panicked, the third never started: the second carries the console's
    crash and a host-lost, the third a host-lost only, both with the facts
    the first job's run reported."""
    from farm.guests.matrix import GuestPlan, _job_outcome
    from farm.guests.qemu import GuestRun, Kernel
    jobs = tuple(job(tmp_path / f"{n}.yaml", n) for n in ("a", "b", "c"))
    plan = GuestPlan("EPYC-Milan", "deb:k", "default", jobs)
    kernel = Kernel(Path("/k"), Path("/m"), "6.1.0-57-amd64")
    console = ("[   12.000000] Kernel panic - not syncing: sysrq triggered crash\n"
               "[   12.000100] CPU: 1 PID: 1 Comm: sh Not tainted 6.1.0-57-amd64\n"
               "[   12.000200] RIP: 0010:sysrq_handle_crash+0x16/0x20\n")
    run = GuestRun(None, console, "", timed_out=False)
    facts = {"hostname": "vm-epyc-milan", "vendor": "AuthenticAMD", "hw_class": "amd-zen3", "kernel": "6.1.0-57-amd64"}
    running, never = tmp_path / "x1", tmp_path / "x2"
    running.mkdir()
    never.mkdir()
    (running / "started").touch()
    b = _job_outcome(plan, kernel, run, running, tmp_path / "art-b", jobs[1], 400, facts, "b")
    c = _job_outcome(plan, kernel, run, never, tmp_path / "art-c", jobs[2], 400, facts, "b")
    assert [f["kind"] for f in b.result["findings"]][-1] == "host-lost"
    assert "kernel-oops" in [f["kind"] for f in b.result["findings"]]
    assert [f["kind"] for f in c.result["findings"]] == ["host-lost"]
    assert c.result["findings"][0]["summary"] == "EPYC-Milan guest lost during b, before c started"
    assert (b.exit_code, c.exit_code) == (1, 1)
    assert b.result["host"]["hw_class"] == c.result["host"]["hw_class"] == "amd-zen3"
    # named as asked, its paths unknown: the guest went before its JIT listing was read
    assert b.result["host"]["cell"]["name"] == c.result["host"]["cell"]["name"] == "default"
    assert b.result["host"]["cell"]["indirect_jump"].startswith("unknown: ")
    assert json.loads((tmp_path / "art-c" / "result.json").read_text())["run_id"] == c.result["run_id"]
    assert "sysrq_handle_crash" in (tmp_path / "art-b" / b.result["artifacts"]["console"]).read_text()


def test_bad_matrix_input_is_one_line_and_exit_2(tmp_path):
    j = tmp_path / "a.yaml"
    j.write_text("duration: 1s\ntopologies: [direct-main]\n")
    for args, line in ((["--cells", "nope"], r"farm: unknown cell 'nope'"),
                       (["--kernels", "foo"], r"farm: --kernels: 'foo' is not deb:PACKAGE"),
                       (["--cpu-models", "Pentium-9000"], r"farm: --cpu-models: unknown QEMU CPU model"),
                       (["--cpu-models", ","], r"farm: --cpu-models: nothing given"),
                       (["--kernels", "deb:linux-image-no-such-9.9"],
                        r"farm: kernel deb:linux-image-no-such-9\.9: no such package in the archive"),
                       (["--memory", "10"], r"farm: --smp 2 / --memory 10: at least 1 CPU and 256 MB"),
                       (["--parallel", "0"], r"farm: --parallel: 0 \(at least 1\)")):
        p = subprocess.run(farm_cmd("lab", "matrix", str(j), *args), cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "FARM_STATE_DIR": str(tmp_path / "state")}, timeout=60)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert re.fullmatch(line + r".*\n", p.stderr), p.stderr
    # refused before anything was fetched or booted
    kernels = tmp_path / "state" / "vlab" / "kernels"
    assert not kernels.exists() or not [k for k in kernels.iterdir() if k.name.startswith("linux-image")]


# -- one real matrix --------------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.slow
def test_a_matrix_boots_one_guest_per_cell_runs_both_jobs_in_it_and_stores_every_run(tmp_path):
    """EPYC-Milan, the default kernel, cells default, lfence and off, two
    tiny jobs: three boots (one a cell, counted from the consoles), six
    results, all in the results database, each with its cell; each cell's
    runs record their own indirect jump, and the saved JIT listings confirm
    it; triage shows every cell."""
    state = tmp_path / "state"
    env = {**os.environ, "FARM_STATE_DIR": str(state)}
    jobs = []
    for name in ("alpha", "beta"):
        jobs.append(tmp_path / f"{name}.yaml")
        # indirect: the off cell is proven by an indirect tail call (plain jmp) in the run's JIT listing
        jobs[-1].write_text("duration: 1s\ntopologies: [indirect]\n")
    out, art = tmp_path / "all.json", tmp_path / "art"
    p = subprocess.run(farm_cmd("lab", "matrix", *map(str, jobs), "--cpu-models", "EPYC-Milan", "--cells",
                                "default,lfence,off", "--json", str(out), "--artifacts", str(art)),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sorted(r["job"] for r in results) == ["alpha"] * 3 + ["beta"] * 3
    assert all(r["verdict"] == "pass" for r in results), [r.get("error") for r in results]
    # each run proved its own cell from its JIT listing (farm run --cell in the guest)
    assert sorted((r["host"]["cell"]["name"], r["job"]) for r in results) == \
        [(c, j) for c in ("default", "lfence", "off") for j in ("alpha", "beta")]
    assert all(r["host"]["cell"]["requested"] for r in results)
    # on one kernel, three cells, three different indirect jumps
    assert {(r["host"]["cell"]["name"], r["host"]["cell"]["indirect_jump"]) for r in results} == \
        {("default", "retpoline"), ("lfence", "lfence"), ("off", "plain")}
    assert {r["host"]["cell"]["return"] for r in results if r["host"]["cell"]["name"] == "off"} == {"ret"}
    for r in results:  # the saved listings say the same as the result
        cell, run_dir = r["host"]["cell"], next(art.glob(f"*_{r['host']['cell']['name']}"))
        run_art = run_dir / ("0-alpha" if r["job"] == "alpha" else "1-beta")
        listings = [(run_art / rel).read_text() for key, rel in r["artifacts"].items() if key.endswith(".S")]
        assert classify(listings) == {k: cell[k] for k in ("indirect_jump", "return")}, (r["job"], cell)
        assert cell["cmdline"].startswith("console=ttyS0") and \
            cell["vulnerabilities"]["spectre_v2"] == r["host"]["spectre_v2"]
    # one boot per cell: two consoles, each one kernel booting once and running both jobs
    consoles = sorted(art.glob("*/console.log"))
    assert [c.parent.name.rsplit("_", 1)[1] for c in consoles] == ["default", "lfence", "off"]
    for c in consoles:
        text = c.read_text()
        assert text.count("Linux version ") == 1 and text.count("farm-init: running") == 1, c
        assert sorted(d.name for d in c.parent.iterdir() if d.is_dir()) == ["0-alpha", "1-beta"]
        assert all((d / "result.json").exists() for d in c.parent.iterdir() if d.is_dir())
    assert "mitigations=off" in consoles[2].read_text() and "mitigations=off" not in consoles[0].read_text()
    assert "spectre_v2=retpoline,lfence" in consoles[1].read_text()
    guests = json.loads((art / "guests.json").read_text())
    assert [(g["cell"], g["jobs"], len(g["job_walls_s"])) for g in guests] == \
        [(c, ["alpha", "beta"], 2) for c in ("default", "lfence", "off")]
    # the results database holds all four, each in its cell
    from sqlalchemy import select
    from farm.store import open_store
    from farm.store.models import Run
    store = open_store(f"sqlite:///{state / 'farm.db'}")
    with store.session() as s:
        stored = sorted(s.execute(select(Run.job, Run.cell)).all())
    assert stored == [(j, c) for j in ("alpha", "beta") for c in ("default", "lfence", "off")]
    # and triage shows both cells: the matrix's own output, and farm triage afterwards
    assert re.search(r"job x hw_class x kernel x cell", p.stdout), p.stdout[-2000:]
    t = subprocess.run(farm_cmd("triage", "--json"), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert t.returncode == 0, t.stderr
    assert sorted((e["job"], e["cell"], e["status"], e["pass"]) for e in json.loads(t.stdout)) == [
        (j, c, "pass", 1) for j in ("alpha", "beta") for c in ("default", "lfence", "off")]
    assert {e["indirect_jump"][0] for e in json.loads(t.stdout) if e["cell"] == "off"} == {"plain"}
    # nothing left: no guest, no exchange dir
    assert not list((state / "vlab" / "runs").iterdir())
    assert subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{state}"], capture_output=True).returncode == 1


@pytest.mark.parametrize("store", [True, False])
def test_farm_lab_run_stores_its_result_unless_told_not_to_and_keeps_the_jobs_name(tmp_path, monkeypatch, store):
    """The guest is faked (its run writes a real engine result): what is
    checked is lab run's side, the job copy it hands the guest (named after
    the job, so a spec without `name:` keeps its name) and the database."""
    from farm.guests import vrun
    from farm.guests.qemu import GuestRun, Kernel
    from farm.store import open_store
    from support import REPO as repo
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FARM_DB_URL", raising=False)
    fixture = json.loads((repo / "tests" / "fixtures" / "results" / "pass.json").read_text())
    seen = {}

    def fake_guest(script, xchg, *args, **kw):
        seen["script"] = script
        (xchg / "result.json").write_text(json.dumps({**fixture, "job": "mine", "run_id": "mine-1"}))
        return GuestRun(0, "console", "summary", False)
    monkeypatch.setattr(vrun, "run_in_guest", fake_guest)
    monkeypatch.setattr(vrun, "resolve_kernel", lambda *a: Kernel(Path("/k"), Path("/m"), "6.1.0-57-amd64"))
    job_path = tmp_path / "mine.yaml"
    job_path.write_text("duration: 1s\ntopologies: [direct-main]\n")
    code = vrun.lab_run(job_path, "EPYC-Milan", "deb:linux-image-amd64", None, tmp_path / "art", say=lambda _: None,
                        store=store)
    assert code == 0
    assert re.search(r"farm\.cli run \S+/mine\.yaml ", seen["script"]), seen["script"]
    db = open_store(f"sqlite:///{tmp_path / 'state' / 'farm.db'}")
    assert db.run_count() == (1 if store else 0)
    if store:
        assert db.result("mine-1")["job"] == "mine"
    assert not list((tmp_path / "state" / "vlab" / "runs").iterdir())  # the exchange dir is gone


def test_progress_off_a_terminal_is_one_plain_line_per_event(tmp_path):
    """A CI log gets lines, not a bar: each guest booted and each job done
    once, however often the watches are polled."""
    import io
    from farm.guests.matrix import GuestPlan, GuestWatch
    from farm.guests.matrix_view import MatrixDisplay
    plan = GuestPlan("EPYC-Milan", "deb:linux-image-amd64", "off",
                     (job(tmp_path / "a.yaml", "a"), job(tmp_path / "b.yaml", "b")))
    xchg = tmp_path / "x"
    (xchg / "jobs" / "0").mkdir(parents=True)
    watch = GuestWatch(xchg, 2)
    out = io.StringIO()
    display = MatrixDisplay(out)
    display.start([plan], 1)
    watch.poll()
    display.update([watch])
    (xchg / "console.log").write_text("[    1.0] Linux version 6.1\nfarm-init: running /x/run.sh\n")
    (xchg / "jobs" / "0" / "exit").write_text("1\n")
    for _ in range(3):
        watch.poll()
        display.update([watch])
    display.stop()
    assert out.getvalue().splitlines() == [
        "lab matrix: 2 runs in 1 guests, 1 at a time",
        "booted  EPYC-Milan linux-image-amd64 off",
        "done    EPYC-Milan linux-image-amd64 off a: exit 1"]
