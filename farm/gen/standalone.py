#!/usr/bin/env python3
"""Run one exported tail-call reproducer on this kernel, without farm.

farm fuzz copies this file as run.py next to shape.bpf.c, gen.h and
expected.json. It compiles shape.bpf.c with clang (unless shape.o is newer),
loads it with bpftool under /sys/fs/bpf, fills every prog_array slot as
expected.json says, runs the entry with BPF_PROG_TEST_RUN and compares
every counter and the return value with what the reference model expects.

Exit 0: the kernel did what the model says; 1: it did not (the difference
is printed); 2: it could not run here. Needs root, python3 (standard library
only: the bpf() syscall through ctypes), clang, bpftool and libbpf's headers
(bpf/bpf_helpers.h). It must never import farm: it is shipped on its own.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, PROG_TEST_RUN, OBJ_GET = 1, 2, 3, 10, 7
BPFFS = "/sys/fs/bpf"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_uint)


class Fail(Exception):
    """Could not run the reproducer here (exit 2)."""


class ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


def bpf(cmd: int, attr, what: str, ok_errno: int = 0) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.addressof(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err == ok_errno:
            return ret
        raise Fail(f"bpf() on {what}: {os.strerror(err)}")
    return ret


def obj_get(path: str) -> int:
    raw = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(OBJ_GET, ObjAttr(pathname=ctypes.addressof(raw)), path)


def set_slot(map_fd: int, key: int, prog_fd: int | None, what: str) -> None:
    k, v = ctypes.c_uint32(key), ctypes.c_uint32(prog_fd or 0)
    attr = ElemAttr(map_fd=map_fd, key=ctypes.addressof(k), value=ctypes.addressof(v))
    if prog_fd is None:
        bpf(MAP_DELETE_ELEM, attr, what, ok_errno=2)  # ENOENT: already empty
    else:
        bpf(MAP_UPDATE_ELEM, attr, what)


def possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        return max(int(part.split("-")[-1]) for part in f.read().strip().split(",")) + 1


def read_counters(map_fd: int, n: int, cpu: int) -> list[int]:
    """Key 0 of the per-CPU counter array, this CPU's copy."""
    buf = (ctypes.c_uint64 * (n * possible_cpus()))()
    key = ctypes.c_uint32(0)
    bpf(MAP_LOOKUP_ELEM, ElemAttr(map_fd=map_fd, key=ctypes.addressof(key), value=ctypes.addressof(buf)), "counters")
    return list(buf[cpu * n:(cpu + 1) * n])


def test_run(prog_fd: int, repeat: int) -> int:
    pkt = ctypes.create_string_buffer(64)  # an all-zero frame longer than an Ethernet header
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=64, data_in=ctypes.addressof(pkt), repeat=repeat)
    bpf(PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return attr.retval


def run(cmd: list[str], what: str) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise Fail(f"cannot run {cmd[0]} ({what}): {e.strerror}") from None
    if p.returncode != 0:
        raise Fail(f"{what} failed: {' '.join(cmd)}\n{p.stderr.strip()}")


def compile_object(exp: dict) -> str:
    src, obj = os.path.join(HERE, "shape.bpf.c"), os.path.join(HERE, "shape.o")
    if os.path.exists(obj) and os.path.getmtime(obj) >= os.path.getmtime(src):
        return obj
    multiarch = f"/usr/include/{os.uname().machine}-linux-gnu"  # asm/types.h on Debian and Ubuntu
    run(["clang", *exp["cflags"], "-I", HERE, *(["-idirafter", multiarch] if os.path.isdir(multiarch) else []),
         "-c", src, "-o", obj], "compiling shape.bpf.c")
    return obj


def main() -> int:
    with open(os.path.join(HERE, "expected.json")) as f:
        exp = json.load(f)
    if os.geteuid() != 0:
        raise Fail("run as root: loading BPF programs needs CAP_BPF and CAP_SYS_ADMIN")
    obj = compile_object(exp)
    with open("/proc/mounts") as f:
        if not any(line.split()[1:3] == [BPFFS, "bpf"] for line in f):
            raise Fail(f"no bpffs at {BPFFS} (mount -t bpf bpf {BPFFS})")
    pins = os.path.join(BPFFS, f"farm-repro-{exp['seed']}-{os.getpid()}")
    os.mkdir(pins)
    fds = []
    try:
        run(["bpftool", "prog", "loadall", obj, f"{pins}/progs", "type", "tc", "pinmaps", f"{pins}/maps"],
            "loading shape.o with bpftool")
        arrays: dict[str, int] = {}
        for s in exp["slots"]:
            if s["array"] not in arrays:
                arrays[s["array"]] = obj_get(f"{pins}/maps/{s['array']}")
                fds.append(arrays[s["array"]])
            prog = obj_get(f"{pins}/progs/{s['holds']}") if s["holds"] else None
            if prog is not None:
                fds.append(prog)
            set_slot(arrays[s["array"]], s["key"], prog, f"{s['array']}[{s['key']}]")
        stats = obj_get(f"{pins}/maps/{exp['counters']['map']}")
        entry = obj_get(f"{pins}/progs/{exp['entry']}")
        fds += [stats, entry]
        return compare(exp, *measure(exp, stats, entry))
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(pins, ignore_errors=True)


def measure(exp: dict, stats: int, entry: int) -> tuple[list[int], int]:
    """The counters' growth over `repeat` runs, on one CPU (they are per CPU)."""
    names = exp["counters"]["names"]
    before_aff = os.sched_getaffinity(0)
    cpu = min(before_aff)
    os.sched_setaffinity(0, {cpu})
    try:
        before = read_counters(stats, len(names), cpu)
        retval = test_run(entry, exp["repeat"])
        after = read_counters(stats, len(names), cpu)
    finally:
        os.sched_setaffinity(0, before_aff)
    return [a - b for a, b in zip(after, before)], retval


def compare(exp: dict, delta: list[int], retval: int) -> int:
    names, repeat = exp["counters"]["names"], exp["repeat"]
    want = [c * repeat for c in exp["expected_per_run"]]
    taken = sum(delta[i] - delta[j] for i, j in exp["counters"]["taken_pairs"])
    print(f"{exp['entry']} run {repeat} times on {os.uname().release} (seed {exp['seed']})")
    for s in exp["slots"]:
        if s.get("injected"):
            print(f"  {s['array']}[{s['key']}] holds {s['holds']} on purpose: the model thinks it holds "
                  f"{s['model_holds'] or 'nothing'} (an injected fault)")
    differ = [i for i in range(len(names)) if delta[i] != want[i]]
    print(f"  {'counter':34} {'expected':>10} {'observed':>10}")
    for i in range(len(names)):
        if i in differ or delta[i] or want[i]:
            print(f"  {names[i]:34} {want[i]:>10} {delta[i]:>10}{'   <-- differs' if i in differ else ''}")
    print(f"  tail calls per run: expected {exp['tail_calls_per_run']}, observed {taken / repeat:g}")
    print(f"  return value: expected {exp['retval']:#x}, observed {retval:#x}")
    if differ or retval != exp["retval"]:
        print(f"DIFFERS: {len(differ)} counters" + (" and the return value" if retval != exp["retval"] else ""))
        return 1
    print("AS EXPECTED: every counter and the return value match the model")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"run.py: {e}", file=sys.stderr)
        sys.exit(2)
