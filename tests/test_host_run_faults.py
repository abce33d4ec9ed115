"""Faults of the lab, not of the kernel under test: a full artifacts disk, no
bpffs, no bpftool or clang, an unreadable kernel log. Each one is injected
into a real `farm run` and must end in exit 3 with a written --json result
(verdict "error", an error that names the fault), no traceback and nothing
left behind: never a silent gap, never a pass with a check skipped.

The mount tricks run in a private mount namespace (unshare -m), so the
host's /sys/fs/bpf and /dev/kmsg are never touched."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, farm_cmd, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="farm run and mounts need root")]

TOPO = [{"name": "direct-main", "slots": 2}]
# a write-only sysfs attribute: open(O_RDONLY) fails with EACCES even for root
WRITE_ONLY_SYSFS = Path("/sys/bus/platform/drivers_probe")


def farm_run(job: Path, tmp_path: Path, *, prefix: list[str] = (), env: dict | None = None,
             cmd: list[str] | None = None, art: Path | None = None, timeout: float = 120):
    """`farm run JOB --json --artifacts` (optionally behind a prefix such as
    an unshare shell); returns the process and the --json result or None."""
    res = tmp_path / "result.json"
    args = ["run", str(job), "--json", str(res), "--artifacts", str(art or tmp_path / "art")]
    proc = subprocess.run([*prefix, *(cmd or farm_cmd()), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})
    return proc, (json.loads(res.read_text()) if res.exists() else None)


def in_private_mount_ns(script: str) -> list[str]:
    """A prefix: run `script` (sh, mounts private to it), then the command
    given as its arguments. The setup must succeed (exit 90 otherwise)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "farm-fault"]


def assert_recorded_error(proc, result, *phrases: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert result is not None, "no --json result was written"
    assert result["schema"] == 3 and result["verdict"] == "error", result
    for p in phrases:
        assert p in result["error"], result["error"]


def no_farm_process_left(job: Path) -> None:
    def mine():
        found = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and str(job).encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
        return found
    wait_for(lambda: not mine(), f"the processes of {job} to end", 10)


def spec(job_file, name: str, **extra) -> Path:
    return job_file(name=name, duration="1s", topologies=TOPO, **extra)


# -- artifacts ------------------------------------------------------------------------------

def test_a_full_artifacts_disk_is_an_error_and_the_result_survives(job_file, tmp_path, no_leaks):
    art = tmp_path / "art"
    art.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "farm-fault", str(art)], check=True)
    job = spec(job_file, "art-full")
    try:
        proc, r = farm_run(job, tmp_path, art=art)
        listed = {rel: (art / rel).is_file() for rel in r["artifacts"].values()} if r else {}
    finally:
        if subprocess.run(["umount", str(art)]).returncode != 0:
            subprocess.run(["umount", "-l", str(art)])
    assert_recorded_error(proc, r, "artifacts: cannot write", "No space left on device", "ENOSPC", str(art))
    # the run itself was not lost: the stress ran and its numbers are kept
    assert r["stats"]["runs"] > 0 and r["stats"]["tail_calls_verified"] > 0
    assert len(r["programs"]) == 7 and r["findings"] == []
    # what the result lists as an artifact is there; what did not fit is not listed
    assert listed and all(listed.values()), listed
    assert "result" not in r["artifacts"] or listed["result.json"]
    no_farm_process_left(job)


def test_an_artifacts_dir_that_cannot_be_made_is_an_error(job_file, tmp_path, no_leaks):
    (tmp_path / "file").write_text("not a directory\n")
    job = spec(job_file, "art-bad")
    proc, r = farm_run(job, tmp_path, art=tmp_path / "file" / "art")
    assert_recorded_error(proc, r, "artifacts: cannot write", "ENOTDIR")
    assert r["artifacts"] == {}
    no_farm_process_left(job)


# -- bpffs ----------------------------------------------------------------------------------

def test_an_unmounted_bpffs_is_mounted_by_farm_and_the_run_passes(job_file, tmp_path, no_leaks):
    """What bpftool does too: a kernel developer expects the run to work on a
    host that has bpffs but not mounted. Only in this namespace, here."""
    job = spec(job_file, "no-bpffs")
    prefix = in_private_mount_ns(
        "umount /sys/fs/bpf || exit 90; "
        "grep -q ' /sys/fs/bpf ' /proc/self/mountinfo && exit 91; "
        '"$@"; rc=$?; '
        "grep -q ' /sys/fs/bpf .* - bpf ' /proc/self/mountinfo && echo FARM-MOUNTED-BPFFS; exit $rc")
    proc, r = farm_run(job, tmp_path, prefix=prefix)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert r["verdict"] == "pass" and r["stats"]["tail_calls_verified"] > 0
    assert "FARM-MOUNTED-BPFFS" in proc.stdout
    no_farm_process_left(job)


@pytest.mark.parametrize("setup, phrases", [
    # something else sits on /sys/fs/bpf: mounting over it would hide it
    ("umount /sys/fs/bpf && mount -t tmpfs -o ro,size=4k farm-fault /sys/fs/bpf",
     ["/sys/fs/bpf holds a tmpfs mount, not bpffs"]),
    # no mount point at all: /sys/fs is an empty read-only tmpfs
    ("umount /sys/fs/bpf && mount -t tmpfs -o ro,size=4k farm-fault /sys/fs",
     ["bpffs is not mounted at /sys/fs/bpf and mounting it failed", "does not exist"]),
], ids=["ro-tmpfs-in-its-place", "no-mount-point"])
def test_a_bpffs_that_cannot_be_mounted_is_an_infra_error(job_file, tmp_path, no_leaks, setup, phrases):
    job = spec(job_file, "bpffs-blocked")
    proc, r = farm_run(job, tmp_path, prefix=in_private_mount_ns(f'{setup} || exit 90; exec "$@"'))
    assert proc.returncode != 90, proc.stderr
    assert_recorded_error(proc, r, *phrases)
    assert r["findings"] == [] and r["programs"] == []
    assert "\n" not in r["error"]  # one clear line, not mount(8)'s whole speech
    no_farm_process_left(job)


# -- tools ----------------------------------------------------------------------------------

def path_without(tool: str, bin_dir: Path) -> str:
    """A PATH of one dir holding every command of ours but `tool`."""
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            link = bin_dir / entry.name
            if entry.name != tool and not link.exists() and not link.is_symlink():
                link.symlink_to(entry.path)
    assert shutil.which(tool, path=str(bin_dir)) is None
    return str(bin_dir)


@pytest.mark.parametrize("tool", ["bpftool", "clang"])
def test_a_missing_tool_is_an_infra_error_not_a_load_error(job_file, tmp_path, no_leaks, tool):
    """Not a load-error finding (that is a program the kernel or bpftool
    refused): the host cannot run the job at all. An empty compile cache
    makes sure a run cannot get by on objects built before."""
    cache = tmp_path / "cache"
    cache.mkdir()
    job = spec(job_file, f"no-{tool}")
    proc, r = farm_run(job, tmp_path, env={"PATH": path_without(tool, tmp_path / "bin"),
                                           "FARM_CACHE_DIR": str(cache)})
    assert_recorded_error(proc, r, f"{tool} not found on PATH", "install it")
    assert r["findings"] == [] and r["programs"] == []
    no_farm_process_left(job)


def test_a_full_compile_cache_is_an_infra_error_not_a_load_error(job_file, tmp_path, no_leaks):
    """clang cannot write the object: the lab's disk, not the program."""
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "farm-fault", str(cache)], check=True)
    job = spec(job_file, "cache-full")
    try:
        proc, r = farm_run(job, tmp_path, env={"FARM_CACHE_DIR": str(cache)})
    finally:
        if subprocess.run(["umount", str(cache)]).returncode != 0:
            subprocess.run(["umount", "-l", str(cache)])
    assert_recorded_error(proc, r, "cannot write the compiled direct-main to the cache", "No space left on device")
    assert r["findings"] == []
    no_farm_process_left(job)


def test_a_program_that_does_not_compile_is_still_a_load_error(job_file, tmp_path, no_leaks):
    """The other side of the two tests above: a clang that works but refuses
    the program (here: a wrapper that breaks every BPF compile) is a
    load-error finding of the run, exit 1, as before."""
    real = shutil.which("clang")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "clang"
    wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *'-target bpf'*) exec {real} \"$@\" -DFARM_SLOTS=junk ;; esac\n"
                       f'exec {real} "$@"\n')
    wrapper.chmod(0o755)
    cache = tmp_path / "cache"
    cache.mkdir()
    job = spec(job_file, "compile-error")
    proc, r = farm_run(job, tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FARM_CACHE_DIR": str(cache)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert r["verdict"] == "fail" and [f["kind"] for f in r["findings"]] == ["load-error"]
    assert r["findings"][0]["summary"] == "clang failed on direct-main.bpf.c"
    # a finding beats the gap it leaves (nothing of direct-main ran), which is kept
    assert "error" not in r
    assert r["unverified"] == "not verified: no verified tail calls in 0-direct-main (0 windows)"
    no_farm_process_left(job)


# -- the kernel log -------------------------------------------------------------------------

KMSG_FAULTS = {
    # what a user without read access gets (dmesg_restrict): open fails
    "unreadable": ("mount --bind {ro} /dev/kmsg", ["cannot open /dev/kmsg", "Permission denied"]),
    # opens and reads, but nothing: a clean log that is no log at all
    "dev-null": ("mount --bind /dev/null /dev/kmsg", ["kernel log:", "end-of-file", "not the kernel log"]),
    # never the end: reads zeros forever
    "dev-zero": ("mount --bind /dev/zero /dev/kmsg", ["kernel log:", "not a kernel log record"]),
    # a FIFO: cannot seek; the end marker must not block on it either
    "fifo": ("mkfifo {tmp}/kmsg-fifo && mount --bind {tmp}/kmsg-fifo /dev/kmsg", ["/dev/kmsg", "Illegal seek"]),
}


@pytest.mark.parametrize("fault", KMSG_FAULTS)
def test_a_kernel_log_that_cannot_be_followed_is_an_infra_error(job_file, tmp_path, no_leaks, fault):
    if fault == "unreadable" and not WRITE_ONLY_SYSFS.exists():
        pytest.skip(f"no {WRITE_ONLY_SYSFS} to stand for an unreadable /dev/kmsg")
    setup, phrases = KMSG_FAULTS[fault]
    setup = setup.format(ro=WRITE_ONLY_SYSFS, tmp=tmp_path)
    job = spec(job_file, f"kmsg-{fault}")
    proc, r = farm_run(job, tmp_path, prefix=in_private_mount_ns(f'{setup} || exit 90; exec "$@"'), timeout=90)
    assert proc.returncode != 90, proc.stderr
    assert_recorded_error(proc, r, *phrases)
    no_farm_process_left(job)


def test_a_job_without_the_kmsg_check_does_not_need_the_kernel_log(job_file, tmp_path, no_leaks):
    """The errors above are about the kmsg check, not about /dev/kmsg as such."""
    job = spec(job_file, "kmsg-unchecked", checks=["oracle", "taint"])
    proc, r = farm_run(job, tmp_path, prefix=in_private_mount_ns('mount --bind /dev/null /dev/kmsg || exit 90; exec "$@"'))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert r["verdict"] == "pass" and "kmsg" not in r["artifacts"]
    no_farm_process_left(job)


def test_a_kernel_log_that_loses_our_marker_is_an_infra_error(job_file, tmp_path, no_leaks):
    """/dev/kmsg reads fine but our own end marker never comes back (here:
    markers are dropped): nothing proves the log was followed to the end."""
    job = spec(job_file, "kmsg-no-marker")
    drop_markers = ("import sys, farm.host_run; farm.host_run.write_marker = lambda *a, **k: None; "
                    "from farm.cli import main; sys.exit(main(sys.argv[1:]))")
    proc, r = farm_run(job, tmp_path, cmd=[sys.executable, "-c", drop_markers])
    assert_recorded_error(proc, r, "kernel log: our end marker never came back", "the kmsg check did not run")
    no_farm_process_left(job)
