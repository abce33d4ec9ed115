"""Nothing a run pins or loads survives it: not after a normal end, not after
Ctrl-C, not after a stress process or the run itself is SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from support import REPO, children_of, farm_cmd, run_dirs, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def stress_processes(pid: int) -> list[int]:
    """Writers and runners: the children in the run's own session (the pin
    guard has a session of its own)."""
    sid = os.getsid(pid)
    out = []
    for c in children_of(pid):
        try:
            if os.getsid(c) == sid:
                out.append(c)
        except ProcessLookupError:
            pass
    return out


def start_run(job_file, tmp_path, duration="60s"):
    job = job_file(duration=duration, topologies=["direct-subprog", "indirect", "hierarchy"])
    res = tmp_path / "result.json"
    proc = subprocess.Popen(farm_cmd("run", str(job), "--json", str(res), "--artifacts", str(tmp_path / "art")),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: runs_so_far(proc.pid) > 0 or proc.poll() is not None, "the first runs", 120)
    assert proc.poll() is None, proc.communicate()
    return proc, res


def runs_so_far(pid: int) -> int:
    """Entry runs counted so far in the run's pinned stats maps, all CPUs."""
    from farm.bpf import syscall
    from farm.bpf.corpus import C_ENTRIES, C_NR
    total = 0
    for d in run_dirs():
        if not d.name.endswith(f"-p{pid}"):
            continue
        for stats in d.glob("*/maps/stats"):
            try:
                fd = syscall.obj_get(str(stats))
            except (syscall.BpfError, FileNotFoundError):
                continue
            try:
                ctrs = syscall.PerCpuCounters(fd, C_NR)
                total += sum(ctrs.read_cpu(c)[C_ENTRIES] for c in range(ctrs.ncpus))
            finally:
                os.close(fd)
    return total


def test_ctrl_c_stops_the_run_and_unpins_everything(job_file, tmp_path, no_leaks):
    proc, res = start_run(job_file, tmp_path)
    assert any(d.name.startswith("t-") for d in run_dirs())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    r = json.loads(res.read_text())
    assert r["verdict"] == "error" and "interrupted" in r["error"]
    assert r["stats"]["tail_calls_verified"] > 0


def test_a_killed_stress_process_ends_the_run_as_an_error_and_unpins_everything(job_file, tmp_path, no_leaks):
    proc, res = start_run(job_file, tmp_path)
    victim = stress_processes(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    r = json.loads(res.read_text())
    assert r["verdict"] == "error"
    assert f"(pid {victim}) died: signal 9" in r["error"]


def test_a_sigkilled_run_is_cleaned_up_by_its_guard(job_file, tmp_path, no_leaks):
    proc, _ = start_run(job_file, tmp_path)
    mine = [d for d in run_dirs() if d.name.endswith(f"-p{proc.pid}")]
    assert mine
    workers = stress_processes(proc.pid)
    proc.kill()
    proc.communicate()
    wait_for(lambda: not any(d.exists() for d in mine), "the guard to unpin the run", 60)
    # the stress processes die with their parent (PR_SET_PDEATHSIG)
    wait_for(lambda: not any(Path(f"/proc/{w}").exists() and
                             Path(f"/proc/{w}/stat").read_text().split()[2] != "Z" for w in workers),
             "the stress processes to die", 60)
