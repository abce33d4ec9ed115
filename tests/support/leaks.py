"""What the whole suite must leave behind: nothing. A snapshot at its start,
compared at its end: bpffs pins under /sys/fs/bpf/farm, corpus programs
still loaded, the daemons and servers tests start, network namespaces and
veths, and temp dirs of farm's own."""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PIN_ROOT = Path("/sys/fs/bpf/farm")
# command lines of what tests start: farm's daemons, brokers, databases, guests, sshds
WATCHED = ("farm.cli", "bin/farm ", "redis-server", "qemu-system", "postgres", "sshd -D", "chromium", "celery")
TEMP_PREFIXES = ("farm-", "farm_")


@dataclass
class Snapshot:
    top_prog_id: int = 0
    procs: set[int] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    temps: set[str] = field(default_factory=set)


def _own_lineage() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def watched_procs() -> dict[int, str]:
    out, mine = {}, _own_lineage()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(w in cmd for w in WATCHED):
            out[int(d.name)] = cmd
    return out


def _lines(*cmd: str) -> set[str]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    return {ln.split()[0].split("@")[0] for ln in p.stdout.splitlines() if ln.strip()}


def _farm_netns() -> set[str]:
    return {n for n in _lines("ip", "netns", "list") if n.startswith("farm")}


def _farm_links() -> set[str]:
    return {n for n in _lines("ip", "-br", "link") if n.startswith(("fv", "farm"))}


def _temps() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(TEMP_PREFIXES)}


def snapshot() -> Snapshot:
    from farm.bpf import syscall
    return Snapshot(max(syscall.loaded_prog_ids(), default=0), set(watched_procs()), _farm_netns(),
                    _farm_links(), _temps())


def leaks(before: Snapshot) -> list[str]:
    """One line per thing left behind since `before`."""
    from support import loaded_corpus_programs
    found = []
    if PIN_ROOT.is_dir():
        found += [f"pinned: {p}" for p in sorted(PIN_ROOT.iterdir())]
    found += [f"program still loaded: id {pid} {name}" for pid, name in loaded_corpus_programs(before.top_prog_id)]
    found += [f"process {pid}: {cmd[:160]}" for pid, cmd in sorted(watched_procs().items())
              if pid not in before.procs]
    found += [f"network namespace: {n}" for n in sorted(_farm_netns() - before.netns)]
    found += [f"link: {n}" for n in sorted(_farm_links() - before.links)]
    found += [f"temp dir: {tempfile.gettempdir()}/{n}" for n in sorted(_temps() - before.temps)]
    return found
