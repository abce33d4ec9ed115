"""The suite's own leak check (conftest.pytest_sessionfinish) sees what a
test would leave behind: it is shown each kind of leak here, then it is
cleaned up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import REPO, wait_for
from support.leaks import PIN_ROOT, leaks, snapshot

pytestmark = [pytest.mark.slow]


def test_the_leak_check_reports_a_pin_a_process_and_a_temp_dir():
    before = snapshot()
    PIN_ROOT.mkdir(parents=True, exist_ok=True)
    pin = PIN_ROOT / "leak-check-test"
    pin.mkdir()
    # a process whose command line looks like a stray broker
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "redis-server"])
    tmp = tempfile.mkdtemp(prefix="farm-leakcheck-")
    try:
        # until the child has exec'd, /proc shows pytest's own command line
        wait_for(lambda: b"redis-server" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), "the exec", 30)
        found = "\n".join(leaks(before))
        assert f"pinned: {pin}" in found
        assert f"process {proc.pid}: " in found and "redis-server" in found
        assert f"temp dir: {tmp}" in found
    finally:
        proc.kill()
        proc.wait()
        pin.rmdir()
        os.rmdir(tmp)
    assert not any("leak-check" in ln or str(proc.pid) in ln for ln in leaks(before))


@pytest.mark.skipif(os.environ.get("FARM_LEAK_DEMO") != "1", reason="run only by the test below")
def test_leaves_a_process_behind(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "redis-server"],
                            start_new_session=True)
    (Path(os.environ["FARM_LEAK_PIDFILE"])).write_text(str(proc.pid))


def test_a_suite_that_leaves_something_behind_fails(tmp_path):
    pidfile = tmp_path / "pid"
    env = {**os.environ, "FARM_LEAK_DEMO": "1", "FARM_LEAK_PIDFILE": str(pidfile), "FARM_LEAK_GRACE_S": "2",
           "FARM_LEAK_CHECK": "on"}  # the check under test, whatever this suite was told
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_leaves_a_process_behind"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 1 and "LEAK CHECK FAILED" in p.stdout and "redis-server" in p.stdout, p.stdout
        assert "1 passed" in p.stdout  # the test itself passed: the leak check failed the run
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
