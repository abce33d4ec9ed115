"""What tests share: the real `farm` command, waiting on events (never on
time), the corpus's pins and programs, and process helpers. The fixtures
that start services are in tests/conftest.py; the services themselves in
support/lab.py (redis, workers), support/pg.py (PostgreSQL) and
support/netns.py (network-namespace hosts)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from farm.config import REPO  # the checkout under test

PIN_ROOT = Path("/sys/fs/bpf/farm")
CORPUS_NAMES = {"entry"} | {f"t{s}_{k}" for s in range(4) for k in range(3)}
# the refuse cases' own programs (farm/bpf/progs/refuse/)
CORPUS_NAMES |= {"plain_target", "same_type", "other_type", "ext", "fa", "fb", "fsame", "target_a", "target_b"}


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


def run_dirs() -> list[Path]:
    return sorted(PIN_ROOT.iterdir()) if PIN_ROOT.is_dir() else []


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
