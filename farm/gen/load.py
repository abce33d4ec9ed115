"""A generated shape compiled (through the custom-source checks, into the
build cache) and loaded through bpftool, pinned like a corpus topology,
with open fds to its programs, prog_arrays and counters."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from farm.bpf import syscall
from farm.bpf.corpus import PROGS_DIR
from farm.bpf.custom import OUR_HEADERS, custom_object
from farm.bpf.hooks import attach_traced
from farm.bpf.loader import _bpftool_loadall, bpf_cache_dir
from farm.bpf.toolchain import BPF_CFLAGS, cached_build, clang_version, content_key, require_tool
from farm.gen import emit
from farm.gen.model import EMPTY, layout
from farm.gen.shape import Shape, traced_programs


@dataclass
class LoadedShape:
    shape: Shape
    pin_dir: Path
    prog_fds: dict[str, int] = field(default_factory=dict)
    array_fds: list[int] = field(default_factory=list)
    stats_fd: int = -1
    hooks: list = field(default_factory=list)  # farm.bpf.hooks.Attached, closed first

    @property
    def label(self) -> str:
        return self.shape.name

    def prog_array(self, slot: int) -> tuple[syscall.ProgArray, int]:
        """The prog_array holding this slot, and the slot's key in it."""
        s = self.shape.slots[slot]
        return syscall.ProgArray(self.array_fds[s.array], f"{self.label}/{emit.array_name(s.array)}"), s.key

    def candidate_fd(self, slot: int, k: int) -> int:
        return self.prog_fds[self.shape.programs[self.shape.slots[slot].candidates[k]].name]

    def set_slot(self, slot: int, k: int) -> None:
        pa, key = self.prog_array(slot)
        if k == EMPTY:
            pa.delete(key)
        else:
            pa.install(key, self.candidate_fd(slot, k))

    def set_state(self, state: dict[int, int]) -> None:
        for slot in range(len(self.shape.slots)):
            self.set_slot(slot, state.get(slot, EMPTY))

    def entry_fd(self, entry: int) -> int:
        return self.prog_fds[self.shape.programs[entry].name]

    def counters(self) -> syscall.PerCpuCounters:
        return syscall.PerCpuCounters(self.stats_fd, layout(self.shape).size)

    def close(self) -> None:
        for h in self.hooks:  # links first: they hold the programs they attach to
            h.close()
        self.hooks.clear()
        for fd in (*self.prog_fds.values(), *self.array_fds, self.stats_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fds.clear()
        self.array_fds.clear()
        self.stats_fd = -1


def compile_shape(shape: Shape, text: str | None = None) -> Path:
    """The shape's object (or the object of `text`, its trampolines'):
    compiled with the custom-source checks and limits, then kept in the
    build cache by content (farm's own source, never a job's), so a guest
    sharing this host's cache need not run clang under TCG, and a seed
    checked again costs no compile."""
    text = text or emit.source(shape)
    headers = [(PROGS_DIR / h).read_bytes() for h in OUR_HEADERS]
    key = content_key(text, *headers, " ".join(BPF_CFLAGS), clang_version(require_tool("clang")))
    out = bpf_cache_dir() / f"{shape.name}-{key}.o"

    def build(tmp: Path) -> None:
        with custom_object(shape.name, text, list(BPF_CFLAGS)) as obj:
            shutil.copyfile(obj, tmp)
    return cached_build(out, build, "compiled BPF objects")


def load_shape(shape: Shape, pin_dir: Path, obj: Path | None = None) -> LoadedShape:
    """Load the shape's object (obj: its compile_shape, when made ahead,
    as farm fuzz does for the next seeds) through bpftool under pin_dir,
    and open what the checks touch."""
    bpftool = require_tool("bpftool")
    _bpftool_loadall(bpftool, shape.name, obj or compile_shape(shape), pin_dir)
    ls = LoadedShape(shape, pin_dir)
    try:
        for prog in shape.programs:
            ls.prog_fds[prog.name] = syscall.obj_get(str(pin_dir / "progs" / prog.name))
        for a in range(len(shape.arrays)):
            ls.array_fds.append(syscall.obj_get(str(pin_dir / "maps" / emit.array_name(a))))
        ls.stats_fd = syscall.obj_get(str(pin_dir / "maps" / "gstats"))
        if shape.hooks:
            attach_hooks(ls)
    except Exception:
        ls.close()
        raise
    return ls


def attach_hooks(ls: LoadedShape) -> None:
    """Every hook of the shape, on every program holding its function,
    loaded through libbpf with gstats shared and attached by a link pinned
    under links/. A kernel that cannot load trampolines (lockdown) raises
    Unsupported: the shape is then named unsupported, never judged."""
    obj_path = compile_shape(ls.shape, emit.hooks_source(ls.shape))
    links = ls.pin_dir / "links"
    links.mkdir(exist_ok=True)
    for h, hook in enumerate(ls.shape.hooks):
        for prog in traced_programs(ls.shape, hook):
            ls.hooks.append(attach_traced(obj_path, emit.hook_program(h), f"{hook.kind} on {prog}/{hook.func}",
                                          (ls.prog_fds[prog], hook.func), ("gstats", ls.stats_fd),
                                          hook.attach_type, links / f"{emit.hook_program(h)}-{prog}"))
