"""Refuse checks (farm/detect/refuse.py) on the real kernel: shapes the
selftests expect the kernel to reject are refused for the expected reason,
a shape it allows is an accepted-unsafe finding, what cannot be set up here
is unsupported with the kernel's reason; nothing any case creates is left.
And the crash gate: a job that can crash an unfixed kernel runs only where
allowed."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from support import loaded_corpus_programs, run_farm, wait_for
from farm.detect import refuse

VERIFIER_CASES = {"tail-call-under-spin-lock": "function calls are not allowed while holding a lock",
                  "tail-call-in-rcu-read-lock": "tail_call cannot be used inside bpf_rcu_read_lock-ed region",
                  "tail-call-preempt-disabled": "tail_call cannot be used inside bpf_preempt_disable-ed region",
                  "tail-call-leaks-reference": "tail_call would lead to reference leak"}
TRAMPOLINE_CASES = ("freplace-target-into-prog-array", "prog-array-member-extended-by-freplace",
                    "tail-call-across-hooks")
REFUSE_JOB = {"duration": "1s", "topologies": ["direct-main"], "writers": {"ops": ["replace"]},
              "checks": ["oracle", "kmsg", "taint", "refuse"]}


def lockdown() -> bool:
    """Whether this kernel refuses trampolines with EPERM (lockdown): asked
    of the kernel directly, with the corpus's own fentry on the refuse
    control's tc program, independently of farm.detect.refuse."""
    from farm.bpf.hooks import HOOKS_SOURCE
    from farm.bpf.libbpf import BpfObject, Unsupported
    from farm.bpf.loader import compile_source
    target = BpfObject(compile_source(refuse.REFUSE_DIR / "prog-types.bpf.c"), "same_type", "probe target")
    hook = BpfObject(compile_source(HOOKS_SOURCE), "fentry_main", "probe fentry")
    try:
        target.load()
        hook.target(target.prog_fd, "same_type").load()
        return False
    except Unsupported as e:
        return "EPERM" in str(e)
    finally:
        hook.close()
        target.close()


@pytest.fixture
def pin_dir():
    from farm.bpf.loader import FARM_PIN_ROOT, ensure_bpffs
    ensure_bpffs()
    d = FARM_PIN_ROOT / f"test-refuse-p{os.getpid()}"
    yield d
    assert not d.exists(), f"left pinned: {list(d.rglob('*'))}"


@pytest.fixture
def no_programs_left():
    from farm.bpf import syscall
    top = max(syscall.loaded_prog_ids(), default=0)
    yield
    wait_for(lambda: not loaded_corpus_programs(top), "refuse programs to be freed", 30)


def by_case(outcomes) -> dict:
    return {o.case: o for o in outcomes}


@pytest.mark.root
def test_every_case_is_tried_and_this_kernel_refuses_the_verifier_cases(pin_dir, no_programs_left, monkeypatch):
    monkeypatch.delenv(refuse.FAULT_ENV, raising=False)
    out = by_case(refuse.try_cases(pin_dir))
    assert list(out) == list(refuse.CASES)
    for case, message in VERIFIER_CASES.items():
        if out[case].status == "unsupported" and "has no kfunc" in out[case].reason:
            continue  # an older kernel: the kfunc is missing, and the outcome says so
        assert (out[case].status, out[case].reason) == ("refused", f"EINVAL: {message}"), out[case]
    ctl = out["tail-call-across-prog-types"]
    assert ctl.status == "refused" and "EINVAL" in ctl.reason and ctl.findings == []
    if lockdown():
        for case in TRAMPOLINE_CASES:
            assert out[case].status == "unsupported", out[case]
            assert "EPERM (Operation not permitted)" in out[case].reason, out[case]
    assert not any(o.findings for o in out.values())


@pytest.mark.root
def test_a_refuse_case_the_kernel_allows_is_an_accepted_unsafe_finding(pin_dir, no_programs_left, monkeypatch):
    """The fault variant releases the lock before the tail call: every kernel
    loads it, so the check must report it; it is a crash-risk case, so its
    shape then runs once in a child, which comes back (no hang)."""
    monkeypatch.setenv(refuse.FAULT_ENV, "allowed")
    case = refuse.CASES["tail-call-under-spin-lock"]
    [o] = refuse.try_cases(pin_dir, {case.name: case})
    assert o.status == "accepted"
    assert [(f.kind, f.signature) for f in o.findings] == \
        [("accepted-unsafe", "accepted-unsafe: tail-call-under-spin-lock")]


@pytest.mark.root
def test_a_refusal_for_another_reason_is_unsupported_not_a_pass(pin_dir, no_programs_left):
    case = dataclasses.replace(refuse.CASES["tail-call-leaks-reference"], expect=("a message no kernel prints",))
    [o] = refuse.try_cases(pin_dir, {case.name: case})
    assert o.status == "unsupported" and o.findings == []
    assert o.reason == ("refused for another reason than 'a message no kernel prints': "
                        "EINVAL: tail_call would lead to reference leak")


def test_a_case_needing_a_kfunc_this_kernel_lacks_is_unsupported(tmp_path):
    case = dataclasses.replace(refuse.CASES["tail-call-in-rcu-read-lock"], kfuncs=("farm_no_such_kfunc",))
    o = refuse.try_case(case, tmp_path / "x", have=set())
    assert (o.status, o.reason) == ("unsupported", "this kernel has no kfunc farm_no_such_kfunc")


def test_an_unsafe_run_that_never_comes_back_is_a_hang_and_farm_goes_on():
    case = refuse.CASES["tail-call-under-spin-lock"]
    t0 = time.monotonic()
    [f] = refuse._run_unsafe(case, lambda: time.sleep(60), timeout_s=1)
    assert time.monotonic() - t0 < 10
    assert (f.kind, f.signature) == ("hang", "hang: refuse:tail-call-under-spin-lock")
    assert f.detail["reaped"] is True  # a sleeping child dies; one stuck in the kernel would not


def test_a_crash_risk_case_says_why():
    risky = dict(refuse.crash_risks())
    assert set(risky) == {"refuse:tail-call-under-spin-lock", "refuse:tail-call-in-rcu-read-lock",
                          "refuse:tail-call-preempt-disabled", "refuse:freplace-target-into-prog-array",
                          "refuse:prog-array-member-extended-by-freplace"}
    assert all(why for why in risky.values())


# ---- farm run --------------------------------------------------------------

def run_job(job_file, tmp_path, **spec):
    res = tmp_path / "r.json"
    proc = run_farm("run", str(job_file(name="refuse", **spec)), "--json", str(res),
                    "--artifacts", str(tmp_path / "art"))
    return proc, (json.loads(res.read_text()) if res.exists() else None)


@pytest.mark.root
@pytest.mark.slow
def test_farm_run_with_the_refuse_check_names_what_this_kernel_cannot_try(job_file, tmp_path, no_leaks, monkeypatch):
    monkeypatch.delenv(refuse.FAULT_ENV, raising=False)
    proc, r = run_job(job_file, tmp_path, **REFUSE_JOB, crash_ok=True)
    outcomes = {o["case"]: o for o in json.loads((tmp_path / "art" / "refuse.json").read_text())}
    assert list(outcomes) == list(refuse.CASES)
    assert all(outcomes[c]["status"] == "refused" for c in VERIFIER_CASES)
    assert r["findings"] == [] and r["stats"]["tail_calls_verified"] > 0
    if not lockdown():
        pytest.skip("this kernel can load trampolines: the EPERM path is not reachable here")
    assert proc.returncode == 3, proc.stderr
    assert [u["topology"] for u in r["unsupported"]] == [f"refuse:{c}" for c in TRAMPOLINE_CASES]
    assert all("EPERM" in u["reason"] for u in r["unsupported"])
    assert r["verdict"] == "error" and "unsupported here: refuse:freplace-target-into-prog-array" in r["error"]


@pytest.mark.root
@pytest.mark.slow
def test_farm_run_reports_an_accepted_case_as_a_finding(job_file, tmp_path, no_leaks, monkeypatch):
    monkeypatch.setenv(refuse.FAULT_ENV, "allowed")
    proc, r = run_job(job_file, tmp_path, **REFUSE_JOB, crash_ok=True)
    assert proc.returncode == 1, proc.stderr
    assert [f["signature"] for f in r["findings"]] == ["accepted-unsafe: tail-call-under-spin-lock"]
    assert r["verdict"] == "fail"


# ---- the crash gate ----------------------------------------------------------

GATE_LINE = ("farm: refused: job refuse can crash an unfixed kernel: "
             "refuse:tail-call-under-spin-lock (the lock stays held after the tail call: the next run "
             "spins on it forever, a hard lockup); ")
HOW = ("; to run it anyway, set crash_ok: true in the job, or allow_crashes: true in the farm config "
       "of a disposable host (guests of the virtual lab always allow it)\n")


@pytest.fixture
def plain_host(monkeypatch, tmp_path):
    """A host whose farm config says nothing about crashes."""
    monkeypatch.delenv("FARM_ALLOW_CRASHES", raising=False)
    monkeypatch.setenv("FARM_CONFIG", str(tmp_path / "config.yaml"))
    return tmp_path / "config.yaml"


def test_farm_run_on_a_plain_host_refuses_a_crash_risk_job_in_one_line(job_file, tmp_path, plain_host):
    proc, r = run_job(job_file, tmp_path, **REFUSE_JOB)
    assert proc.returncode == 2 and r is None
    assert proc.stderr.startswith(GATE_LINE) and proc.stderr.endswith(HOW), proc.stderr
    assert proc.stderr.count("\n") == 1
    for item, why in refuse.crash_risks():
        assert f"{item} ({why})" in proc.stderr


def test_the_gate_opens_for_crash_ok_the_config_key_and_guests(job_file, plain_host, monkeypatch):
    from farm import crashgate
    from farm.errors import BadInput
    from farm.spec import load_spec
    spec = load_spec(job_file(name="refuse", **REFUSE_JOB))
    assert crashgate.refusal(spec).startswith("refused: job refuse can crash")
    assert crashgate.refusal(load_spec(job_file(name="refuse", **REFUSE_JOB, crash_ok=True))) is None
    plain_host.write_text("allow_crashes: true\n")
    assert crashgate.refusal(spec) is None
    plain_host.write_text("allow_crashes: yes please\n")
    with pytest.raises(BadInput, match="allow_crashes in the farm config is true or false"):
        crashgate.refusal(spec)
    plain_host.write_text("allow_crashes: false\n")
    monkeypatch.setenv("FARM_ALLOW_CRASHES", "1")  # what every guest of the virtual lab has
    assert crashgate.refusal(spec) is None
    # a job without crash-risk items is never refused
    monkeypatch.delenv("FARM_ALLOW_CRASHES")
    assert crashgate.refusal(load_spec(job_file(name="plain", topologies=["direct-main"]))) is None


def test_a_crash_risk_topology_is_gated_too(job_file, plain_host, monkeypatch):
    from farm import crashgate
    from farm.bpf import corpus
    from farm.spec import load_spec
    risky = dataclasses.replace(corpus.TOPOLOGIES["hierarchy"], crash_risk="it loops forever unfixed")
    monkeypatch.setitem(corpus.TOPOLOGIES, "hierarchy", risky)
    why = crashgate.refusal(load_spec(job_file(name="topo", topologies=["direct-main", "hierarchy"])))
    assert why.startswith("refused: job topo can crash an unfixed kernel: "
                          "topology hierarchy (it loops forever unfixed); to run it anyway")


def test_guests_of_the_virtual_lab_always_allow_crashes(tmp_path):
    from farm.guests.vrun import guest_prologue
    assert "FARM_ALLOW_CRASHES=1" in guest_prologue(tmp_path)


@pytest.mark.root
@pytest.mark.slow
def test_a_worker_refuses_a_crash_risk_job_unless_its_host_allows_crashes(lab, job_file):
    lab.collector()
    lab.worker("plain")
    job = job_file(name="risky", **REFUSE_JOB)
    refused = lab.farm("submit", str(job), "--hosts", "plain", "--wait")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    [r] = lab.stored(refused.stdout.split()[0])
    assert r["verdict"] == "error" and r["error"].startswith("refused: job risky can crash an unfixed kernel")
    assert r["stats"]["runs"] == 0  # nothing was loaded
    (lab.state / "config.yaml").write_text("allow_crashes: true\n")
    allowed = lab.farm("submit", str(job), "--hosts", "plain", "--wait")
    [r] = lab.stored(allowed.stdout.split()[0])
    assert r["stats"]["tail_calls_verified"] > 0, allowed.stdout + allowed.stderr + lab.log("worker-plain")
    assert "refused: job" not in (r.get("error") or "")


# ---- cleanup of links ----------------------------------------------------------
# Trampoline links cannot be made on a locked-down host, so the cleanup of a
# case's links is shown with a link this kernel does make: a tc program on a
# veth interface (tcx, 6.6 on) that exists only for the test.

BPF_TCX_INGRESS = 46


@pytest.fixture
def dummy_ifindex():
    import subprocess
    name = f"farmrf{os.getpid() % 100000}"  # a veth pair: no dummy driver in every kernel
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    try:
        yield int(Path(f"/sys/class/net/{name}/ifindex").read_text())
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


def links_of(prog_name: str) -> list[int]:
    import subprocess
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    from farm.bpf import syscall
    ids = []
    for link in json.loads(out or "[]"):
        fd = syscall.prog_fd_by_id(link["prog_id"])
        try:
            if syscall.prog_info(fd)[0].name.decode() == prog_name:
                ids.append(link["id"])
        finally:
            os.close(fd)
    return ids


@pytest.mark.root
@pytest.mark.parametrize("ending", ["refused", "farm-error"])
def test_a_case_s_pinned_links_are_gone_after_it_on_every_path(pin_dir, no_programs_left, dummy_ifindex, ending):
    seen = {}

    def attempt(scope):
        prog = scope.load("same_type")
        scope.link(prog.prog_fd, BPF_TCX_INGRESS, "tcx", target=dummy_ifindex)
        seen["pins"] = sorted(p.name for p in (scope.pin_dir / "links").iterdir())
        seen["links"] = links_of("same_type")
        if ending == "farm-error":
            raise RuntimeError("farm broke mid-case")
        scope.forbidden("the control", lambda: syscall_install(scope))

    def syscall_install(scope):
        from farm.bpf import syscall
        entry = scope.load("entry")
        syscall.ProgArray(entry.map_fd("jmp_table")).install(0, scope.load("other_type").prog_fd)

    case = dataclasses.replace(refuse.CASES["tail-call-across-prog-types"], name="test-links", attempt=attempt)
    if ending == "farm-error":
        with pytest.raises(RuntimeError):
            refuse.try_cases(pin_dir, {case.name: case})
    else:
        [o] = refuse.try_cases(pin_dir, {case.name: case})
        assert o.status == "refused"
    assert seen["pins"] == ["tcx"] and len(seen["links"]) == 1  # the link was really there
    assert links_of("same_type") == []
    assert not pin_dir.exists()
