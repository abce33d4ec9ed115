"""Shared fixtures: run the real `farm` command, write job files, and check
that nothing a run created is left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIN_ROOT = Path("/sys/fs/bpf/farm")
CORPUS_NAMES = {"entry"} | {f"t{s}_{k}" for s in range(4) for k in range(3)}


def farm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "farm.cli", *args]


def run_farm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(farm_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def loaded_corpus_programs(newer_than: int = 0) -> list[tuple[int, str]]:
    """(id, name) of loaded programs named like the corpus, above an id."""
    from farm.bpf import syscall
    found = []
    for pid in syscall.loaded_prog_ids():
        if pid <= newer_than:
            continue
        try:
            fd = syscall.prog_fd_by_id(pid)
        except syscall.BpfError:
            continue  # freed meanwhile
        try:
            info = syscall.prog_info(fd)[0]
        finally:
            os.close(fd)
        name = info.name.decode()
        if name in CORPUS_NAMES:
            found.append((pid, name))
    return found


def wait_for(predicate, what: str, deadline_s: float = 60, step: float = 0.05):
    """Poll until predicate() is truthy; a deadline, not a timing assertion."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"gave up waiting for {what}")


# -- the whole suite leaves nothing behind (tests/leaks.py) --------------------------------

_SUITE_START = None


def pytest_sessionstart(session):
    global _SUITE_START
    from leaks import snapshot
    _SUITE_START = snapshot()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything a test made is still there at the end:
    programs are freed by RCU, daemons take a moment to exit: wait first."""
    from leaks import leaks
    if _SUITE_START is None or getattr(session.config, "workerinput", None) is not None:
        return
    if os.environ.get("FARM_LEAK_CHECK") == "off":  # several suites at once see each other's daemons
        return
    end = time.monotonic() + float(os.environ.get("FARM_LEAK_GRACE_S", "30"))
    while (left := leaks(_SUITE_START)) and time.monotonic() < end:
        time.sleep(0.5)
    if not left:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr else print
    write(f"LEAK CHECK FAILED: the suite left {len(left)} things behind:")
    for line in left:
        write(f"  {line}")
    session.exitstatus = 1


def run_dirs() -> list[Path]:
    return sorted(PIN_ROOT.iterdir()) if PIN_ROOT.is_dir() else []


@pytest.fixture
def job_file(tmp_path):
    """Write a job spec; returns its path."""
    def write(name: str = "t", **spec) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path
    return write


@pytest.fixture
def no_leaks():
    """After the test: no run directory under /sys/fs/bpf/farm and no corpus
    program of this test still loaded."""
    from farm.bpf import syscall
    before_ids = syscall.loaded_prog_ids()
    top = max(before_ids, default=0)
    dirs_before = set(run_dirs())
    yield
    # programs are freed by RCU after their last reference: allow them a moment
    wait_for(lambda: not loaded_corpus_programs(top), "corpus programs to be freed", 30)
    assert set(run_dirs()) <= dirs_before, f"left pinned: {set(run_dirs()) - dirs_before}"


@pytest.fixture
def redis_server(tmp_path):
    from lab import RedisServer
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def lab(redis_server, tmp_path):
    from lab import Lab
    state = tmp_path / "state"
    state.mkdir()
    the_lab = Lab(redis_server, state)
    yield the_lab
    the_lab.stop_all()
