"""Where a run's pins live, and the guarantees that they go away.

Every run pins under /sys/fs/bpf/farm/<run_id>-p<pid>/. A guard process, forked
before any BPF object is opened, removes that directory when the run's
process goes away for any reason (even SIGKILL); runs whose owner died
before a guard could act are swept by the next run.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from farm.bpf.loader import FARM_PIN_ROOT, remove_pins
from farm.config import pid_alive

_OWNER = re.compile(r"-p(\d+)$")


def run_pin_dir(run_id: str) -> Path:
    """The run's directory, named after its owner so a later run can tell
    whether that owner is still alive."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", run_id)  # bpffs refuses names with dots
    return FARM_PIN_ROOT / f"{safe}-p{os.getpid()}"


def sweep_stale() -> list[Path]:
    """Remove run directories whose owning process no longer exists."""
    removed = []
    if not FARM_PIN_ROOT.is_dir():
        return removed
    for d in FARM_PIN_ROOT.iterdir():
        m = _OWNER.search(d.name)
        if m and not pid_alive(int(m.group(1))):
            remove_pins(d)
            removed.append(d)
    return removed


class PinGuard:
    """A watcher process that unpins `path` once our end of a pipe closes."""

    def __init__(self, path: Path):
        self.path = path
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the guard: its own session, so terminal Ctrl-C passes it by
            try:
                os.setsid()
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                os.closerange(3, r)
                os.closerange(r + 1, 1 << 16)
                while os.read(r, 1):
                    pass
                remove_pins(path)
            finally:
                os._exit(0)
        os.close(r)
        self.pid, self._w = pid, w

    def release(self) -> None:
        """The run cleaned up itself: let the guard check and go."""
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
            os.waitpid(self.pid, 0)
