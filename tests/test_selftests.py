"""Parity with the kernel's tail-call selftests: the trampoline (fentry,
fexit) and freplace topologies and jobs/selftests.yaml, on this host (whose
kernel may refuse trampolines) and in guests of Debian's 6.12 and 6.1."""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from farm.bpf.corpus import TOPOLOGIES
from support import REPO, farm_cmd, run_farm

SELFTESTS = REPO / "jobs" / "selftests.yaml"
TRAMPOLINE = {name for name, t in TOPOLOGIES.items() if t.needs_trampolines}
# the refuse checks whose shapes need trampolines or freplace programs
TRAMPOLINE_CASES = {"freplace-target-into-prog-array", "prog-array-member-extended-by-freplace",
                    "tail-call-across-hooks"}
# the refuse checks that call kfuncs Debian's 6.1 does not have
KFUNC_CASES_6_1 = {"tail-call-in-rcu-read-lock", "tail-call-preempt-disabled"}
# the topologies whose hierarchy counts the tail-call limit per subprog call
# before "bpf, x64: Fix tailcall hierarchy" (v6.10): Debian's 6.1 runs 63
HIERARCHIES = {name for name, t in TOPOLOGIES.items() if t.shape == "hierarchy"}
KERNEL_6_12 = "deb:linux-image-6.12.107+deb12-amd64-unsigned"
KERNEL_6_1 = "deb:linux-image-6.1.0-57-amd64-unsigned"
# test-only variants: an fexit that never counts, a freplace that never counts
FAULTS = {"name": "trampoline-faults", "duration": "2s",
          "topologies": [{"name": "fexit", "fault": "skip-count"}, {"name": "freplace", "fault": "skip-count"}]}
# generated shapes with fentry/fexit, and no hand-written hierarchy among them
# a seed whose shape 6.1 runs past the limit, in the size farm fuzz shrinks fastest under TCG
FUZZ_SEED, FUZZ_PROGRAMS = 1, 6
GENERATED = {"name": "generated-hooks", "duration": "2s",
             "topologies": [{"generate": {"seeds": "1-2", "programs": 6, "hooks": True}}]}


def test_selftests_yaml_runs_every_topology_of_the_corpus():
    spec = yaml.safe_load(SELFTESTS.read_text())
    names = [t if isinstance(t, str) else t["name"] for t in spec["topologies"]]
    assert sorted(names) == sorted(TOPOLOGIES)


def test_every_trampoline_topology_names_its_selftest():
    assert TRAMPOLINE >= {"fentry", "fexit", "fentry-fexit", "fentry-entry", "hierarchy-fentry", "hierarchy-fexit",
                          "hierarchy-fentry-fexit", "hierarchy-fentry-entry", "freplace", "hierarchy-freplace"}
    assert all(TOPOLOGIES[n].selftest.startswith("tailcall_") for n in TRAMPOLINE)


@pytest.mark.root
@pytest.mark.slow
def test_on_this_host_every_topology_its_kernel_refuses_is_unsupported_with_its_reason(tmp_path, monkeypatch):
    """This host's kernel (lockdown) refuses trampolines at load: the run is
    exit 3 naming each such topology and refuse check with the kernel's
    errno; the others still ran and verified, and the refuse checks this
    kernel can try were refused; nothing unsupported is a finding. (The
    job's refuse checks are crash-risk: this host refuses every one it can
    try, as tests/test_refuse.py shows, so crashes are allowed here.)"""
    monkeypatch.setenv("FARM_ALLOW_CRASHES", "1")
    out = tmp_path / "r.json"
    p = run_farm("run", str(SELFTESTS), "--duration", "1s", "--json", str(out), timeout=600)
    r = json.loads(out.read_text())
    unsupported = {u["topology"].split("-", 1)[1]: u["reason"] for u in r["unsupported"]
                   if not u["topology"].startswith("refuse:")}
    refused_cases = {u["topology"] for u in r["unsupported"] if u["topology"].startswith("refuse:")}
    if not unsupported:  # a kernel that loads trampolines: everything must pass
        assert p.returncode == 0 and r["verdict"] == "pass", p.stdout[-3000:]
        return
    assert set(unsupported) == TRAMPOLINE, sorted(unsupported)
    assert all("the kernel cannot load it: EPERM" in why for why in unsupported.values()), unsupported
    assert refused_cases == {f"refuse:{c}" for c in TRAMPOLINE_CASES}, refused_cases
    assert p.returncode == 3 and r["verdict"] == "error" and r["findings"] == [], p.stdout[-3000:]
    assert r["error"].startswith("unsupported here: ") and all(f"-{n} (" in r["error"] for n in TRAMPOLINE)
    ran = {k.split("-", 1)[1]: t for k, t in r["stats"]["per_topology"].items()}
    assert all(ran[n]["tail_calls_verified"] > 0 for n in set(TOPOLOGIES) - TRAMPOLINE)


def guest_script(xchg, faults_yaml, generated_yaml) -> str:
    """One guest, every check: selftests.yaml, the faulty variants,
    generated shapes with trampolines, then a run killed mid-stress, with
    the links and programs left listed."""
    from farm.guests.vrun import guest_prologue
    py = shlex.quote(sys.executable)
    x = shlex.quote(str(xchg))
    return guest_prologue(xchg) + f"""
{py} -m farm.cli run {shlex.quote(str(SELFTESTS))} --duration 3s --no-artifacts --json {x}/selftests.json >{x}/selftests.out 2>&1
echo $? > {x}/selftests.rc
{py} -m farm.cli run {shlex.quote(str(faults_yaml))} --no-artifacts --json {x}/faults.json >{x}/faults.out 2>&1
echo $? > {x}/faults.rc
{py} -m farm.cli run {shlex.quote(str(generated_yaml))} --no-artifacts --json {x}/generated.json >{x}/generated.out 2>&1
{py} -m farm.cli fuzz --seeds {FUZZ_SEED}-{FUZZ_SEED} --programs {FUZZ_PROGRAMS} --export {x}/export --json {x}/fuzz.json >{x}/fuzz.out 2>&1
echo $? > {x}/fuzz.rc
# the exported reproducer, built and run on its own: no farm on python's path
if [ -d {x}/export/{FUZZ_SEED} ]; then
  (cd {x}/export/{FUZZ_SEED} && make >{x}/repro.out 2>&1 && cd / && python3 -I {x}/export/{FUZZ_SEED}/run.py >>{x}/repro.out 2>&1; echo $? > {x}/repro.rc)
fi
# a run killed (SIGKILL) once its links are pinned leaves none behind
{py} -m farm.cli run {shlex.quote(str(faults_yaml))} --duration 120s >/dev/null 2>&1 &
pid=$!
n=0; while [ -z "$(ls -d /sys/fs/bpf/farm/*/*/links/* 2>/dev/null)" ] && [ $n -lt 1500 ]; do sleep 0.2; n=$((n+1)); done
bpftool -j link list > {x}/links_during.json
kill -9 $pid
n=0; while [ -n "$(ls /sys/fs/bpf/farm 2>/dev/null)" ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done
n=0; while [ "$(bpftool -j link list)" != "[]" ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n+1)); done
bpftool -j link list > {x}/links_after.json
ls -A /sys/fs/bpf/farm > {x}/pins_after.txt 2>&1
"""


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    """Both kernels' guests at once (one each, reused for every check)."""
    from farm.guests.qemu import resolve_kernel, run_in_guest
    base = tmp_path_factory.mktemp("selftests")
    faults_yaml = base / "trampoline-faults.yaml"
    faults_yaml.write_text(yaml.safe_dump(FAULTS))
    generated_yaml = base / "generated-hooks.yaml"
    generated_yaml.write_text(yaml.safe_dump(GENERATED))
    # compiled here first (the guests share this host's cache): clang under TCG takes minutes
    for job in (SELFTESTS, faults_yaml, generated_yaml):
        subprocess.run(farm_cmd("run", str(job), "--duration", "0.2s"), cwd=REPO, capture_output=True, timeout=600,
                       env={**os.environ, "FARM_ALLOW_CRASHES": "1"})
    subprocess.run(farm_cmd("fuzz", "--seeds", f"{FUZZ_SEED}-{FUZZ_SEED}", "--programs", str(FUZZ_PROGRAMS)),
                   cwd=REPO, capture_output=True, timeout=600)
    out, errors = {}, []

    def one(label, kernel):
        try:
            xchg = base / label
            run = run_in_guest(guest_script(xchg, faults_yaml, generated_yaml), xchg, "EPYC-Milan", resolve_kernel(kernel),
                               timeout_s=2400, hostname=f"vm-{label}")
            out[label] = (xchg, run)
        except Exception as e:  # reported by the test, not lost in a thread
            errors.append(f"{label}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=a) for a in (("k612", KERNEL_6_12), ("k61", KERNEL_6_1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def _read(xchg, name):
    path = xchg / name
    assert path.exists(), f"{name} missing; console tail: {(xchg / 'console.log').read_text()[-3000:]}"
    return path.read_text()


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_12_every_trampoline_topology_passes_with_exact_counts_under_churn(guests):
    """Also Debian's 6.12 booting at all (its 9pnet needs netfs first, its
    modules are .ko.xz) and the result being the guest's, not this host's.
    Every smoke topology is in selftests.yaml too."""
    from farm.guests.qemu import resolve_kernel
    xchg, run = guests["k612"]
    r = json.loads(_read(xchg, "selftests.json"))
    assert r["host"]["kernel"] == resolve_kernel(KERNEL_6_12).release and r["unsupported"] == []
    assert (r["host"]["vendor"], r["host"]["model_name"]) == ("AuthenticAMD", "AMD EPYC-Milan Processor")
    assert r["host"]["hostname"] == "vm-k612" != socket.gethostname()
    assert "9pnet: Installing 9P2000 support" in _read(xchg, "console.log")
    assert (r["verdict"], r["findings"]) == ("pass", []), _read(xchg, "selftests.out")[-4000:]
    ran = {k.split("-", 1)[1]: t for k, t in r["stats"]["per_topology"].items()}
    assert all(ran[n]["tail_calls_verified"] > 0 and ran[n]["windows_unjudged"] == 0 for n in TOPOLOGIES)
    assert r["stats"]["updates"] > 0  # the slots churned meanwhile
    assert _read(xchg, "selftests.rc").strip() == "0"


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_1_the_hierarchies_overrun_the_limit_and_two_refuse_checks_lack_kfuncs(guests):
    """6.1.0-57 lacks "bpf, x64: Fix tailcall hierarchy": every hierarchy,
    with trampolines and freplace too, runs past 33 tail calls (to farm's
    bound, 63); everything else passes with exact counts; the refuse checks
    needing bpf_rcu_read_lock or bpf_preempt_disable cannot be tried."""
    xchg, run = guests["k61"]
    r = json.loads(_read(xchg, "selftests.json"))
    assert r["host"]["kernel"].startswith("6.1.") and r["verdict"] == "fail"
    found = {(f["kind"], f["detail"].get("topology")) for f in r["findings"]}
    assert found == {("tail-call-count", n) for n in HIERARCHIES}, sorted(found)
    assert all(63 in map(int, f["detail"]["observed"]) for f in r["findings"]), r["findings"]
    assert {u["topology"] for u in r["unsupported"]} == {f"refuse:{c}" for c in KFUNC_CASES_6_1}
    ran = {k.split("-", 1)[1]: t for k, t in r["stats"]["per_topology"].items()}
    assert all(ran[n]["tail_calls_verified"] > 0 for n in TOPOLOGIES)


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_12_generated_shapes_with_trampolines_match_the_model(guests):
    """Seeds 1-2 with fentry/fexit on their subprograms and programs: every
    count the model predicts, exactly (static check) and under churn."""
    xchg, run = guests["k612"]
    r = json.loads(_read(xchg, "generated.json"))
    assert (r["verdict"], r["findings"], r["unsupported"]) == ("pass", [], []), _read(xchg, "generated.out")[-4000:]
    ran = {k.split("-", 1)[1]: t for k, t in r["stats"]["per_topology"].items()}
    assert sorted(ran) == ["gen-1-p6-hooks", "gen-2-p6-hooks"]
    assert all(t["tail_calls_verified"] > 0 for t in ran.values()), ran


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_1_generated_shapes_find_the_hierarchy_bug_without_the_hierarchy_topology(guests):
    """No hand-written hierarchy in the job: the generated shapes alone show
    6.1's unshared tail-call counter (runs past 33 to farm's guard), each
    finding naming its seed; their trampolines count exactly."""
    xchg, run = guests["k61"]
    r = json.loads(_read(xchg, "generated.json"))
    assert r["verdict"] == "fail" and r["unsupported"] == [], _read(xchg, "generated.out")[-4000:]
    kinds = {f["kind"] for f in r["findings"]}
    assert kinds == {"tail-call-count"}, r["findings"]
    over = [f for f in r["findings"] if f["detail"].get("observed", 0) > 33]
    assert over and all(f["detail"]["seed"] in (1, 2) for f in over), r["findings"]


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_1_farm_fuzz_shrinks_the_hierarchy_bug_to_the_selftests_shape(guests):
    """farm fuzz finds 6.1's unshared counter in a generated shape, shrinks
    it to the shape of tailcall_bpf2bpf_hierarchy (an entry and a target,
    each calling one tail-calling subprogram), and the exported reproducer,
    built and run without farm, shows the difference."""
    xchg, run = guests["k61"]
    doc = json.loads(_read(xchg, "fuzz.json"))
    assert _read(xchg, "fuzz.rc").strip() == "1", _read(xchg, "fuzz.out")[-3000:]
    [f] = doc["findings"]
    assert (f["kind"], f["seed"], f["reproduces_after_shrink"]) == ("tail-call-count", FUZZ_SEED, True), f
    shrunk = f["shrunk"]
    assert shrunk["programs"] <= 2 and shrunk["subprograms"] == 1 and shrunk["tail_call_sites"] == 1, shrunk
    assert shrunk["size"] < f["original_size"]
    repro = _read(xchg, "repro.out")
    assert _read(xchg, "repro.rc").strip() == "1" and "DIFFERS" in repro, repro[-3000:]


@pytest.mark.qemu
@pytest.mark.slow
def test_in_debians_6_12_farm_fuzz_agrees_with_the_model(guests):
    xchg, run = guests["k612"]
    doc = json.loads(_read(xchg, "fuzz.json"))
    assert (_read(xchg, "fuzz.rc").strip(), doc["findings"], doc["graphs"]) == ("0", [], 1), _read(xchg, "fuzz.out")
    assert doc["tail_calls_verified"] > 0


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["k612", "k61"])
def test_a_trampoline_that_skips_its_count_is_a_finding(guests, kernel):
    xchg, run = guests[kernel]
    r = json.loads(_read(xchg, "faults.json"))
    found = {(f["kind"], f["detail"]["topology"], f["detail"].get("hook")) for f in r["findings"]}
    assert ("trampoline-count", "fexit+skip-count", "fexit_sub") in found, r["findings"]
    if kernel == "k612":
        assert ("trampoline-count", "freplace+skip-count", "ext_head") in found, r["findings"]
    assert _read(xchg, "faults.rc").strip() == "1"


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["k612", "k61"])
def test_a_run_killed_mid_stress_leaves_no_link_or_pin_behind(guests, kernel):
    xchg, run = guests[kernel]
    during = json.loads(_read(xchg, "links_during.json"))
    assert any(link.get("type") in ("tracing", "extension") for link in during), during  # the test saw links
    assert json.loads(_read(xchg, "links_after.json")) == []
    assert _read(xchg, "pins_after.txt").strip() == ""
