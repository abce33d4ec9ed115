"""Mitigation cells, proven: the JIT listing says which path the kernel
emitted for indirect tail calls and returns (host.cell of every result), and
a run asked to reach a cell it did not reach is an error (exit 3)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from support import REPO, farm_cmd, run_farm

from farm.bpf.mitigation import classify, classify_listing
from farm.cells import cell_from_cmdline, cell_miss, expect_from_args, load_cells
from farm.result import Finding, Result, Stats, TopologyStats

FIXTURES = Path(__file__).parent / "fixtures"

# Real listing lines (farm/bpf/jit.disassemble), copied from runs' jit/*.S artifacts.
# This host, 6.18 on AMD EPYC (spectre_v2: Mitigation: Retpolines; SRSO: Safe RET):
HOST_6_18 = """\
ffffffffc0025cea:\t48 8b 49 48          \tmov    0x48(%rcx),%rcx
ffffffffc0025cee:\t48 83 c1 0c          \tadd    $0xc,%rcx
ffffffffc0025cf2:\te9 a9 c4 1d c2       \tjmp    0xffffffff822021a0\t<__x86_indirect_thunk_rcx>
ffffffffc0025cf7:\t41 8b 5d 00          \tmov    0x0(%r13),%ebx
ffffffffc0025d34:\teb 02                \tjmp    0xffffffffc0025d38\t<bpf_prog_efb29d3f655f352b_entry+0x1a0>
ffffffffc0025d73:\tc9                   \tleave
ffffffffc0025d74:\te9 92 e3 0d c1       \tjmp    0xffffffff8110410b\t<srso_alias_return_thunk>
"""
# a direct tail call, poked: a jump into the target program, no indirect branch
HOST_DIRECT = """\
ffffffffc002628f:\t0f 1f 44 00 00       \tnopl   0x0(%rax,%rax,1)
ffffffffc00262a8:\te9 b3 00 00 00       \tjmp    0xffffffffc0026360\t<bpf_prog_408beeb4c9c44aae_t0_0+0xc>
ffffffffc0025d74:\te9 92 e3 0d c1       \tjmp    0xffffffff8110410b\t<srso_alias_return_thunk>
"""
# Debian's 6.1.0-57 in an EPYC-Milan guest booted with spectre_v2=retpoline,lfence
GUEST_LFENCE = """\
ffffffffc003e75a:\t48 8b 49 30          \tmov    0x30(%rcx),%rcx
ffffffffc003e75e:\t48 83 c1 0b          \tadd    $0xb,%rcx
ffffffffc003e762:\t0f ae e8             \tlfence
ffffffffc003e765:\tff e1                \tjmp    *%rcx
ffffffffc003e7c7:\tc9                   \tleave
ffffffffc003e7c8:\te9 b3 2f bc e3       \tjmp    0xffffffffa3c01780\t<srso_alias_return_thunk>
"""
# ... and booted with mitigations=off
GUEST_OFF = """\
ffffffffc039776e:\t48 83 c1 0b          \tadd    $0xb,%rcx
ffffffffc0397772:\tff e1                \tjmp    *%rcx
ffffffffc0397774:\tcc                   \tint3
ffffffffc03977d5:\tc9                   \tleave
ffffffffc03977d6:\tc3                   \tret
ffffffffc03977d7:\tcc                   \tint3
"""

# Debian's 6.12.107 in a Skylake-Server guest booted with spectre_v2=retpoline retbleed=stuff
GUEST_STUFF = """\
ffffffffc035d88e:\t48 8b 49 30          \tmov    0x30(%rcx),%rcx
ffffffffc035d892:\t48 83 c1 10          \tadd    $0x10,%rcx
ffffffffc035d896:\te9 85 a1 18 f9       \tjmp    0xffffffffb94e7a20\t<__x86_indirect_jump_thunk_rcx>
ffffffffc035d918:\te9 f3 a3 18 f9       \tjmp    0xffffffffb94e7d10\t<call_depth_return_thunk>
"""
# ... and Debian's 6.1.0-57 there, which ignores retbleed=stuff: ITS return thunks
GUEST_6_1_SKYLAKE = """\
ffffffffc0185762:\te9 39 be 27 f5       \tjmp    0xffffffffb54015a0\t<__x86_indirect_thunk_rcx>
ffffffffc01857c8:\te9 53 c5 27 f5       \tjmp    0xffffffffb5401d20\t<its_return_thunk>
"""


def test_each_real_listing_is_classified_as_the_path_the_kernel_chose():
    assert classify([GUEST_STUFF]) == {"indirect_jump": "call-depth", "return": "call-depth"}
    assert classify([GUEST_6_1_SKYLAKE]) == {"indirect_jump": "retpoline", "return": "its"}
    assert classify([HOST_6_18]) == {"indirect_jump": "retpoline", "return": "srso"}
    assert classify([GUEST_LFENCE]) == {"indirect_jump": "lfence", "return": "srso"}
    assert classify([GUEST_OFF]) == {"indirect_jump": "plain", "return": "ret"}
    assert classify([HOST_DIRECT]) == {"indirect_jump": "none", "return": "srso"}
    assert classify([]) == {"indirect_jump": "none", "return": "none"}


@pytest.mark.parametrize("thunk, path", [
    ("__x86_indirect_its_thunk_rcx", "its"), ("__x86_indirect_jump_thunk_rcx", "call-depth"),
    ("__x86_indirect_thunk_array+0x20", "retpoline")])
def test_every_indirect_thunk_of_emit_indirect_jump_is_named(thunk, path):
    line = f"ffffffffc0025cf2:\te9 a9 c4 1d c2       \tjmp    0xffffffff822021a0\t<{thunk}>\n"
    assert classify([line + GUEST_OFF.splitlines(True)[-2]])["indirect_jump"] == path


@pytest.mark.parametrize("thunk, path", [
    ("__x86_return_thunk", "return-thunk"), ("retbleed_return_thunk", "return-thunk"),
    ("srso_return_thunk", "srso"), ("its_return_thunk", "its"), ("call_depth_return_thunk", "call-depth")])
def test_every_return_thunk_of_emit_return_is_named(thunk, path):
    line = f"ffffffffc0025d74:\te9 92 e3 0d c1       \tjmp    0xffffffff8110410b\t<{thunk}>\n"
    assert classify([line])["return"] == path


def test_disagreeing_programs_and_unknown_instructions_are_said_not_guessed():
    assert classify([HOST_6_18, GUEST_OFF]) == {"indirect_jump": "mixed: plain, retpoline",
                                                "return": "mixed: ret, srso"}
    odd_return = "ffffffffc0025d74:\te9 92 e3 0d c1       \tjmp    0xffffffff8110410b\t<some_new_thunk>\n"
    assert classify([odd_return])["return"] == "unknown: jmp 0xffffffff8110410b <some_new_thunk>"
    # an indirect jump through another register is no tail call: reported, never counted as one
    stray = "ffffffffc0025cf2:\tff e0                \tjmp    *%rax\n"
    assert classify_listing(stray)["indirect_jump"] == []
    assert classify([GUEST_OFF, stray])["indirect_jump"] == \
        "unknown: jmp *%rax (an indirect jump that is no tail call)"
    assert classify(["objdump not found (apt-get install binutils)\n"])["return"] == \
        "unknown: no return in the listings"


def test_a_cmdline_is_named_after_the_cell_it_carries_else_default_or_custom():
    cells = load_cells()
    assert cell_from_cmdline("console=ttyS0 spectre_v2=retpoline,lfence quiet", cells) == "lfence"
    assert cell_from_cmdline("spectre_v2=retpoline retbleed=stuff", cells) == "stuff"  # most arguments wins
    assert cell_from_cmdline("console=ttyS0 panic=-1 farm.xchg=/x", cells) == "default"
    # the kernel's own default, spelled out (a cloud VM's cmdline), picks nothing
    assert cell_from_cmdline("mitigations=auto,no_guest_host,no_guest_guest quiet", cells) == "default"
    assert cell_from_cmdline("mitigations=auto,nosmt spectre_v2=auto", cells) == "default"
    assert cell_from_cmdline("mitigations=auto spectre_v2=ibrs", cells) == "custom"
    assert cell_from_cmdline("nospectre_v2", cells) == "custom"


def test_well_known_boot_arguments_imply_what_the_listing_must_show():
    assert expect_from_args("spectre_v2=retpoline,lfence") == {"indirect_jump": "lfence"}
    assert expect_from_args("spectre_v2=retpoline") == {"indirect_jump": "retpoline"}
    assert expect_from_args("spectre_v2=eibrs") == {"indirect_jump": "plain"}
    assert expect_from_args("mitigations=off") == {"indirect_jump": "plain", "return": "ret"}
    assert expect_from_args("quiet spectre_v2=retpoline spectre_v2=retpoline,lfence") == {"indirect_jump": "lfence"}
    assert expect_from_args("quiet") == {}


def test_a_cell_miss_is_one_line_naming_what_the_kernel_did_instead():
    seen = {"indirect_jump": "retpoline", "return": "srso"}
    v2 = "Mitigation: Retpolines; STIBP: disabled; RSB filling"
    assert cell_miss("lfence", {"indirect_jump": "lfence"}, seen, v2) == (
        "cell lfence not reached: indirect tail calls went through retpoline "
        "(expected lfence; spectre_v2: Mitigation: Retpolines)")
    assert cell_miss("off", {"indirect_jump": "plain", "return": "ret"}, seen, v2).startswith(
        "cell off not reached: indirect tail calls went through retpoline, returns through srso")
    assert cell_miss("retpoline", {"indirect_jump": "retpoline"}, seen, v2) is None
    assert cell_miss("default", {}, seen, v2) is None
    assert cell_miss("lfence", {"indirect_jump": "lfence"}, {"indirect_jump": "none", "return": "srso"}, v2) \
        .startswith("cell lfence not proven: the run made no indirect tail call")


def _result(findings=()) -> Result:
    r = Result(run_id="r", job="j", host={}, started="now", findings=list(findings),
               stats=Stats(per_topology={"0-indirect": TopologyStats(runs=1, tail_calls_verified=1, windows=1)}))
    r.cell_miss = "cell off not reached: indirect tail calls went through retpoline"
    return r


def test_a_missed_cell_never_passes_but_a_finding_in_it_is_still_a_fail():
    r = _result()
    assert (r.settle_verdict(), r.error) == ("error", r.cell_miss)
    crash = Finding("kernel-oops", "kernel BUG in x", "oops")
    r = _result([crash])
    assert (r.settle_verdict(), r.error, r.unverified) == ("fail", None, r.cell_miss)
    assert r.settle_verdict() == "fail"  # settling again changes nothing


def test_a_schema_1_result_without_a_cell_still_loads_and_schema_3_round_trips():
    old = json.loads((FIXTURES / "results" / "pass.json").read_text())
    assert old["schema"] == 1 and "cell" not in old["host"]
    assert Result.from_dict(old).verdict == "pass"
    r = _result()
    r.host = {"cell": {"name": "off", "indirect_jump": "retpoline"}}
    r.settle_verdict()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["schema"] == 3 and Result.from_dict(d).to_dict() == d
    with pytest.raises(ValueError):
        Result.from_dict({**d, "schema": 4})


def test_farm_run_refuses_an_unknown_cell_in_one_line(job_file):
    p = run_farm("run", str(job_file(duration="1s", topologies=["indirect"])), "--cell", "nope")
    assert p.returncode == 2 and p.stderr.startswith("farm: unknown cell 'nope' (known in cells.yaml: default,")
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1


# -- this host ---------------------------------------------------------------------------

VULN = Path("/sys/devices/system/cpu/vulnerabilities")


def _jump_for(spectre_v2: str, its: str) -> str:
    """What the JIT must emit for indirect jumps, from the kernel's own text."""
    if "Aligned branch/return thunks" in its:
        return "its"
    if "LFENCE" in spectre_v2:
        return "lfence"
    if "Retpolines" in spectre_v2:
        return "retpoline"
    return "plain"  # eIBRS, IBRS, Vulnerable


def _listing_paths(result: dict, art: Path) -> dict:
    """The paths the saved JIT listings show, read again from the artifacts."""
    return classify([(art / rel).read_text() for key, rel in result["artifacts"].items() if key.endswith(".S")])


@pytest.mark.root
@pytest.mark.slow
def test_a_host_run_records_its_real_cell_proven_from_its_listing(job_file, tmp_path, no_leaks):
    out, art = tmp_path / "r.json", tmp_path / "art"
    p = run_farm("run", str(job_file(duration="1s", topologies=["indirect"])), "--json", str(out),
                 "--artifacts", str(art))
    r = json.loads(out.read_text())
    assert p.returncode == 0, p.stderr
    cell = r["host"]["cell"]
    assert cell["cmdline"] == Path("/proc/cmdline").read_text().strip()
    assert cell["vulnerabilities"] == {f.name: f.read_text().strip() for f in VULN.iterdir()}
    assert cell["requested"] is False
    vulns = cell["vulnerabilities"]
    assert cell["indirect_jump"] == _jump_for(vulns["spectre_v2"], vulns.get("indirect_target_selection", ""))
    srso = "Safe RET" in vulns.get("spec_rstack_overflow", "")
    assert (cell["return"] == "srso") == srso, (cell["return"], vulns)
    assert {k: cell[k] for k in ("indirect_jump", "return")} == _listing_paths(r, art)
    assert re.search(rf"cell\s+│ {cell['name']} · jump {cell['indirect_jump']} · ret {cell['return']}", p.stderr)


@pytest.mark.root
@pytest.mark.slow
def test_the_cell_is_proven_without_an_artifacts_dir_too(job_file, no_leaks):
    from farm.cellproof import CellRequest
    from farm.host_run import RunOptions, run_job
    from farm.spec import load_spec
    spec = load_spec(job_file(duration="1s", topologies=["direct-main", "indirect"]))
    r = run_job(spec, RunOptions(artifacts=None, cell=CellRequest("retpoline")))
    cell = r.host["cell"]
    assert (cell["name"], cell["requested"]) == ("retpoline", True) and r.artifacts == {}
    assert cell["indirect_jump"] in ("retpoline", "lfence", "plain", "its", "call-depth"), cell
    assert cell["return"] in ("ret", "return-thunk", "srso", "its", "call-depth"), cell
    assert (r.verdict == "pass") == (cell["indirect_jump"] == "retpoline"), (r.verdict, r.error)


@pytest.mark.root
@pytest.mark.slow
def test_farm_run_cell_off_on_a_mitigated_host_exits_3_naming_what_the_kernel_chose(job_file, tmp_path, no_leaks):
    cmdline = Path("/proc/cmdline").read_text().split()
    if "mitigations=off" in cmdline:
        pytest.skip("this host is booted with mitigations=off: cell off is reached here")
    out = tmp_path / "r.json"
    p = run_farm("run", str(job_file(duration="1s", topologies=["indirect"])), "--cell", "off",
                 "--json", str(out), "--artifacts", str(tmp_path / "art"))
    r = json.loads(out.read_text())
    jump = r["host"]["cell"]["indirect_jump"]
    assert jump != "plain"
    assert (p.returncode, r["verdict"], r["findings"]) == (3, "error", []), p.stderr
    assert r["error"].startswith(f"cell off not reached: indirect tail calls went through {jump}"), r["error"]
    assert f"spectre_v2: {r['host']['spectre_v2'].split(';')[0]}" in r["error"]
    assert r["host"]["cell"]["requested"] is True and "not reached" in p.stderr


# -- guests: the cells really reached under TCG ---------------------------------------------

GUEST_JOB = {"duration": "1s", "topologies": ["indirect"]}


def _lab_run_cmd(tmp: Path, job: Path, *args: str) -> tuple[list[str], Path, Path]:
    out, art = tmp / "result.json", tmp / "art"
    return farm_cmd("lab", "run", str(job), "--cpu-model", "EPYC-Milan", "--json", str(out),
                    "--artifacts", str(art), *args), out, art


def _ready_kernel(tmp_path, monkeypatch) -> dict:
    """Unpack the default kernel and build its initramfs once, before guests
    that share the state dir start at the same time."""
    from farm.guests.qemu import DEFAULT_KERNEL, initramfs, resolve_kernel
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path / "state"))
    initramfs(resolve_kernel(DEFAULT_KERNEL))
    return {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state")}


# default, lfence and off, each proven from its own listing: tests/test_matrix.py's real
# matrix runs them (one guest a cell, the guests at once), which saves CI three boots.


@pytest.mark.qemu
@pytest.mark.slow
def test_an_eibrs_guest_without_eibrs_exits_3_naming_the_retpoline_it_fell_back_to(tmp_path, job_file, monkeypatch):
    env = _ready_kernel(tmp_path, monkeypatch)
    cmd, out, art = _lab_run_cmd(tmp_path, job_file(**GUEST_JOB), "--cell", "eibrs")
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    r = json.loads(out.read_text())
    assert (p.returncode, r["verdict"], r["findings"]) == (3, "error", []), p.stdout + p.stderr
    assert r["error"].startswith("cell eibrs not reached: indirect tail calls went through retpoline"), r["error"]
    assert "Switching to AUTO select" in r["error"]  # the kernel's own word, from its log
    assert r["host"]["cell"]["indirect_jump"] == _listing_paths(r, art)["indirect_jump"] == "retpoline"
    assert "not reached" in p.stdout  # the guest's summary, shown by farm lab run
