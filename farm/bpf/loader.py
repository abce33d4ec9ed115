"""Compile the corpus with clang (cached by content hash) and load it through
bpftool, pinned under /sys/fs/bpf/farm/<run_id>/."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from farm.bpf import syscall
from farm.bpf.corpus import (C_NR, PROGS_DIR, TARGETS_PER_SLOT, Topology,
                             target_id, target_name)
from farm.bpf.custom import custom_object
from farm.bpf.hooks import attach_hooks, attach_hosted
from farm.bpf.toolchain import (BPF_CFLAGS, LoadError, cache_root, cached_build, clang_version,
                                 content_key, require_tool, slot_defines)
from farm.errors import InfraError
from farm.stress.oracle import judge_window

BPFFS = Path("/sys/fs/bpf")
FARM_PIN_ROOT = BPFFS / "farm"
BPF_FS_TYPE = "bpf"


def bpf_cache_dir() -> Path:
    return cache_root() / "bpf"


def compile_topology(topo: Topology, slots: int, fault: str | None = None) -> Path:
    """The object file for this topology variant, compiled once per content."""
    return compile_source(topo.source, slots, fault)


def compile_source(source: Path, slots: int = 1, fault: str | None = None,
                   defines: tuple[str, ...] = ()) -> Path:
    """A corpus source compiled once per content: the key covers every file
    of the corpus, since sources include each other (fentry.bpf.c is
    bpf2bpf-count.bpf.c, traced)."""
    clang = require_tool("clang")
    flags = [*BPF_CFLAGS, "-I", str(PROGS_DIR), "-I", "/usr/include/x86_64-linux-gnu", *slot_defines(slots, fault),
             *defines]
    # a source in a subdirectory (progs/refuse/) includes its neighbours too
    files = sorted({*PROGS_DIR.glob("*.[ch]"), *source.parent.glob("*.[ch]")})
    key = content_key(source.name, *(p.read_bytes() for p in files),
                      " ".join(flags), clang_version(clang))
    name = source.name.removesuffix(".bpf.c")
    out = bpf_cache_dir() / f"{name}-{key}.o"

    def build(tmp: Path) -> None:
        proc = subprocess.run([clang, *flags, "-c", str(source), "-o", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return
        # A program that does not compile is a load-error finding; a cache
        # clang cannot write to (disk full, read-only) is the lab's fault.
        # Compiling again to /dev/null tells the two apart.
        if subprocess.run([clang, *flags, "-c", str(source), "-o", os.devnull],
                          capture_output=True).returncode == 0:
            why = next((ln.strip() for ln in proc.stderr.splitlines() if "error" in ln[:80].lower()
                        and not ln.lstrip().startswith("#")), _last_error_line(proc.stderr))
            raise InfraError(f"cannot write the compiled {name} to the cache {out.parent}: {why}")
        raise LoadError(f"clang failed on {source.name}", proc.stderr)
    return cached_build(out, build, "compiled BPF objects")


def bpffs_mounted(path: Path = BPFFS) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(path) and right.split()[0] == BPF_FS_TYPE:
            return True
    return False


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf only if nothing is mounted there: mounting
    again would hide every pin made before."""
    if bpffs_mounted():
        return
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if left.split()[4] == str(BPFFS):
            raise InfraError(f"{BPFFS} holds a {right.split()[0]} mount, not bpffs; refusing to mount "
                             f"over it (unmount it, or mount bpffs there: mount -t bpf bpf {BPFFS})")
    try:
        proc = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True)
    except OSError as e:  # no mount(8): still an infrastructure error, not a farm bug
        raise InfraError(f"bpffs is not mounted at {BPFFS} and mount(8) cannot run: {e.strerror}") from None
    if proc.returncode != 0:
        # mount(8)'s first line says why; the rest is its "see dmesg(1)" advice
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        raise InfraError(f"bpffs is not mounted at {BPFFS} and mounting it failed: {why}")


class Stressed(Protocol):
    """What the stress engine and host_run drive: a loaded corpus topology
    (LoadedTopology) or a generated shape (farm.gen.topology.ShapeTopology).
    A slot's values are what its generation log records: a target id of
    the corpus, or a shape's candidate index; EMPTY for an empty slot."""
    label: str
    pin_dir: Path
    prog_fds: dict[str, int]
    slots: int          # how many slots the writers churn
    indirect: bool      # has indirect tail calls (its listings prove the cell)

    def entries(self) -> list[tuple[int, str, int]]: ...        # (entry, name, fd) a runner runs
    def slot_array(self, slot: int) -> tuple[syscall.ProgArray, int]: ...  # the slot's map and key
    def targets(self, slot: int) -> list[tuple[int, int]]: ...  # (value, fd) the slot may hold
    def universe(self, slot: int) -> int: ...                   # values a slot may hold, EMPTY too
    def counters(self) -> syscall.PerCpuCounters: ...
    def judge(self, entry: int, delta: list[int], allowed: dict[int, set[int]], runs: int, retval: int): ...
    def close(self) -> None: ...


@dataclass
class LoadedTopology:
    """One topology variant loaded and pinned, with open fds to what the
    engine touches."""
    topology: Topology
    slots: int
    fault: str | None
    pin_dir: Path
    obj: Path
    prog_fds: dict[str, int] = field(default_factory=dict)
    jmp_table_fd: int = -1
    stats_fd: int = -1
    hooks: list = field(default_factory=list)  # farm.bpf.hooks.Attached: closed with the rest

    @property
    def label(self) -> str:
        return self.topology.name + (f"+{self.fault}" if self.fault else "")

    def targets(self, slot: int) -> list[tuple[int, int]]:
        """(target id, prog fd) of every program that belongs in this slot."""
        return [(target_id(slot, k), self.prog_fds[target_name(slot, k)])
                for k in range(TARGETS_PER_SLOT)]

    def prog_array(self) -> syscall.ProgArray:
        return syscall.ProgArray(self.jmp_table_fd, f"{self.label}/jmp_table")

    # the engine's view (Stressed): one entry, slot i is key i of jmp_table
    @property
    def indirect(self) -> bool:
        return self.topology.call == "indirect"

    def entries(self) -> list[tuple[int, str, int]]:
        return [(0, "entry", self.prog_fds["entry"])]

    def slot_array(self, slot: int) -> tuple[syscall.ProgArray, int]:
        return self.prog_array(), slot

    def universe(self, slot: int) -> int:
        return TARGETS_PER_SLOT + 1

    def judge(self, entry: int, delta: list[int], allowed: dict[int, set[int]], runs: int, retval: int):
        """The oracle's verdict on one window: it counts the runs itself, and
        the return value says nothing here."""
        return judge_window(self.topology, self.label, self.slots, delta, allowed)

    def counters(self) -> syscall.PerCpuCounters:
        return syscall.PerCpuCounters(self.stats_fd, C_NR)

    def close(self) -> None:
        for h in self.hooks:  # links first: they hold the programs they attach to
            h.close()
        self.hooks.clear()
        for fd in (*self.prog_fds.values(), self.jmp_table_fd, self.stats_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fds.clear()
        self.jmp_table_fd = self.stats_fd = -1


def load_topology(topo: Topology, slots: int, fault: str | None, pin_dir: Path,
                  source: str | None = None) -> LoadedTopology:
    """Load every program of the variant (or of a job's own source for it)
    through bpftool and open them."""
    bpftool = require_tool("bpftool")
    if source is None:
        obj = compile_topology(topo, slots, fault)
        _bpftool_loadall(bpftool, topo.name, obj, pin_dir)
    else:
        with custom_object(topo.name, source, [*BPF_CFLAGS, *slot_defines(slots)]) as obj:
            _bpftool_loadall(bpftool, topo.name, obj, pin_dir)
    lt = LoadedTopology(topo, slots, fault, pin_dir, obj)
    try:
        for pin in sorted((pin_dir / "progs").iterdir()):
            if source is not None and not _expected_program(pin.name, slots):
                # its name becomes a file name in the artifacts: only the corpus's
                raise LoadError(f"custom source for {topo.name} defines an unexpected program "
                                f"{pin.name[:64]!r} (expected entry and t<slot>_<k>)")
            lt.prog_fds[pin.name] = syscall.obj_get(str(pin))
        if source is not None:
            missing = [n for n in ("entry", *(target_name(s, k) for s in range(slots)
                                              for k in range(TARGETS_PER_SLOT))) if n not in lt.prog_fds]
            if missing:
                raise LoadError(f"custom source for {topo.name} lacks {', '.join(missing)}")
        lt.jmp_table_fd = syscall.obj_get(str(pin_dir / "maps" / "jmp_table"))
        lt.stats_fd = syscall.obj_get(str(pin_dir / "maps" / "stats"))
        if topo.head:
            attach_hosted(lt)
        if topo.hooks:
            attach_hooks(lt)
    except Exception:
        lt.close()
        raise
    return lt


def _bpftool_loadall(bpftool: str, name: str, obj: Path, pin_dir: Path) -> None:
    # bpftool tries to mount bpffs itself when the parent is missing: never let it.
    pin_dir.mkdir(parents=True, exist_ok=False)
    cmd = [bpftool, "prog", "loadall", str(obj), str(pin_dir / "progs"), "type", "tc",
           "pinmaps", str(pin_dir / "maps")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LoadError(f"bpftool could not load {name}: {_last_error_line(proc.stderr)}", proc.stderr)


def _expected_program(name: str, slots: int) -> bool:
    return name == "entry" or name in {target_name(s, k) for s in range(slots) for k in range(TARGETS_PER_SLOT)}


def _last_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines()
             if ln.strip() and "libbpf strict mode" not in ln and "--legacy" not in ln]
    for ln in reversed(lines):
        if "rror" in ln or "failed" in ln or "invalid" in ln.lower():
            return ln.strip()
    return lines[-1].strip() if lines else "unknown error"


def remove_pins(path: Path) -> None:
    """Unpin everything below path (bpffs: unlink and rmdir, no recursion flags)."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
