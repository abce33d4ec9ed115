"""Shared fixtures (job files, a real redis-server, a one-machine lab) and the
suite-wide check that nothing a run created is left behind. Helpers that
tests import live in tests/support/."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from support import loaded_corpus_programs, run_dirs, wait_for

pytest_plugins = ["support.pg"]  # the postgres_server fixture


# -- the whole suite leaves nothing behind (support/leaks.py) --------------------------------

_SUITE_START = None


def pytest_sessionstart(session):
    global _SUITE_START
    from support.leaks import snapshot
    _SUITE_START = snapshot()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything a test made is still there at the end:
    programs are freed by RCU, daemons take a moment to exit: wait first."""
    from support.leaks import leaks
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
def outside_host(tmp_path):
    """A network namespace with a veth to this host: an address beyond
    loopback to bind to (its root_ip), and a client on the other side of it."""
    from support.netns import NetnsHost
    host = NetnsHost(7, tmp_path, tmp_path / "no-client-key", with_sshd=False).up()  # no sshd: no key
    try:
        yield host
    finally:
        host.down()


@pytest.fixture
def redis_server(tmp_path):
    from support.lab import RedisServer
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def lab(redis_server, tmp_path):
    from support.lab import Lab
    state = tmp_path / "state"
    state.mkdir()
    the_lab = Lab(redis_server, state)
    yield the_lab
    the_lab.stop_all()
