"""The virtual lab: QEMU guests (TCG) of an Intel or AMD CPU model booting
Debian's packaged kernel, running the farm from this machine's files."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from support import REPO, farm_cmd

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

SMALL = {"duration": "2s", "topologies": ["direct-main", "hierarchy"]}


def lab_run(tmp_path, job_file, cpu_model, extra_env=None):
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state"), **(extra_env or {})}
    out = tmp_path / "result.json"
    p = subprocess.run(farm_cmd("lab", "run", str(job_file(**SMALL)), "--cpu-model", cpu_model,
                                "--json", str(out), "--artifacts", str(tmp_path / "art")),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    return p, (json.loads(out.read_text()) if out.exists() else None)


def guest_kernel_release() -> str:
    from farm.guests.qemu import resolve_kernel
    return resolve_kernel().release


@pytest.mark.parametrize("cpu_model, vendor", [("EPYC-Milan", "AuthenticAMD")])
def test_a_job_in_a_guest_reports_the_guests_cpu_and_kernel(tmp_path, job_file, cpu_model, vendor):
    p, r = lab_run(tmp_path, job_file, cpu_model)
    assert r is not None, p.stdout + p.stderr
    assert p.returncode == {"pass": 0, "fail": 1, "error": 3}[r["verdict"]]
    assert r["host"]["vendor"] == vendor
    assert r["host"]["kernel"] == guest_kernel_release() != os.uname().release
    assert r["host"]["hostname"] == f"vm-{cpu_model.lower()}"
    assert r["stats"]["tail_calls_verified"] > 0
    assert (tmp_path / "art" / "console.log").read_text()
    assert not list((tmp_path / "state" / "vlab" / "runs").iterdir())  # the exchange dir is gone


def test_a_guest_kernel_crash_mid_job_is_a_kernel_oops_and_one_host_lost(tmp_path, job_file):
    p, r = lab_run(tmp_path, job_file, "Icelake-Server", {"FARM_LAB_FAULT": "sysrq-crash"})
    assert p.returncode == 1, p.stdout + p.stderr
    kinds = [f["kind"] for f in r["findings"]]
    assert kinds.count("host-lost") == 1
    oops = [f for f in r["findings"] if f["kind"] == "kernel-oops"]
    assert oops and oops[0]["signature"] == "kernel panic: sysrq triggered crash in sysrq_handle_crash"
    assert r["host"]["cpu_model"] == "Icelake-Server"
    assert subprocess.run(["pgrep", "-f", "qemu-system-x86_64.*farm.xchg"], capture_output=True).returncode == 1


def test_the_initramfs_is_built_once_per_kernel_whatever_the_process(tmp_path):
    import sys
    code = "from farm.guests.qemu import resolve_kernel, initramfs; print(initramfs(resolve_kernel()))"
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state")}
    paths = {subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True).stdout.strip() for _ in range(2)}
    assert len(paths) == 1
    assert len(list((tmp_path / "state" / "vlab").glob("initramfs-*"))) == 1
