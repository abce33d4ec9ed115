"""A generated shape compiled (through the custom-source checks) and loaded
through bpftool, pinned like a corpus topology, with open fds to its
programs, prog_arrays and counters."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from farm.bpf import syscall
from farm.bpf.custom import custom_object
from farm.bpf.loader import _bpftool_loadall
from farm.bpf.toolchain import BPF_CFLAGS, require_tool
from farm.gen import emit
from farm.gen.model import EMPTY, layout
from farm.gen.shape import Shape


@dataclass
class LoadedShape:
    shape: Shape
    pin_dir: Path
    prog_fds: dict[str, int] = field(default_factory=dict)
    array_fds: list[int] = field(default_factory=list)
    stats_fd: int = -1

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
        for fd in (*self.prog_fds.values(), *self.array_fds, self.stats_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fds.clear()
        self.array_fds.clear()
        self.stats_fd = -1


def compile_shape(shape: Shape) -> bytes:
    """The shape's object, compiled with the custom-source checks and limits
    (farm fuzz compiles the next seeds while this one runs)."""
    with custom_object(shape.name, emit.source(shape), list(BPF_CFLAGS)) as obj:
        return obj.read_bytes()


def load_shape(shape: Shape, pin_dir: Path, obj: Path | None = None) -> LoadedShape:
    """Compile the shape's C (unless obj is its compile_shape object), load
    it through bpftool under pin_dir, and open what the checks touch."""
    bpftool = require_tool("bpftool")
    if obj is not None:
        _bpftool_loadall(bpftool, shape.name, obj, pin_dir)
    else:
        with custom_object(shape.name, emit.source(shape), list(BPF_CFLAGS)) as built:
            _bpftool_loadall(bpftool, shape.name, built, pin_dir)
    ls = LoadedShape(shape, pin_dir)
    try:
        for prog in shape.programs:
            ls.prog_fds[prog.name] = syscall.obj_get(str(pin_dir / "progs" / prog.name))
        for a in range(len(shape.arrays)):
            ls.array_fds.append(syscall.obj_get(str(pin_dir / "maps" / emit.array_name(a))))
        ls.stats_fd = syscall.obj_get(str(pin_dir / "maps" / "gstats"))
    except Exception:
        ls.close()
        raise
    return ls
