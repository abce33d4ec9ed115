"""Every topology of the corpus loads through bpftool on this kernel and
does exactly what DESIGN.md's table says, run by run."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from farm.bpf import jit, syscall
from farm.bpf.corpus import (C_CANARY_BAD, C_DEPTH, C_ENTRIES, C_FALL, TCC_LIMIT, TOPOLOGIES,
                             hit_index, target_id)
from farm.bpf.libbpf import Unsupported
from farm.bpf.loader import ensure_bpffs, load_topology, remove_pins
from farm.stress.oracle import judge_window

pytestmark = [pytest.mark.root, pytest.mark.slow]

RUNS = 100


@pytest.fixture
def pinned(no_leaks):
    """Load topologies under a private pin dir on CPU 0; all undone after."""
    ensure_bpffs()
    root = Path(f"/sys/fs/bpf/farm/test-corpus-p{os.getpid()}")
    remove_pins(root)
    root.mkdir(parents=True)
    cpu = min(os.sched_getaffinity(0))
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    loaded = []

    def load(name: str, slots: int = 1, fault: str | None = None):
        try:
            lt = load_topology(TOPOLOGIES[name], slots, fault, root / f"{len(loaded)}-{name}")
        except Unsupported as e:  # a trampoline under lockdown: proven in guests (test_selftests.py)
            remove_pins(root / f"{len(loaded)}-{name}")
            pytest.skip(f"this kernel cannot run {name}: {e}")
        loaded.append(lt)
        return lt
    yield load, cpu
    for lt in loaded:
        lt.close()
    remove_pins(root)
    os.sched_setaffinity(0, old)


def run_window(lt, cpu: int, runs: int = RUNS) -> list[int]:
    ctrs = lt.counters()
    before = ctrs.read_cpu(cpu)
    syscall.TestRun(lt.prog_fds["entry"], runs).run()
    return [a - b for a, b in zip(ctrs.read_cpu(cpu), before)]


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_every_topology_meets_its_exact_expectation(pinned, name):
    load, cpu = pinned
    topo = TOPOLOGIES[name]
    slots = 2 if topo.multi_slot else 1
    lt = load(name, slots)
    pa = lt.prog_array()

    # Slots empty: every run falls through, no target runs.
    d = run_window(lt, cpu)
    assert d[C_ENTRIES] == RUNS
    assert sum(d[hit_index(s, t)] for s in range(slots) for t in range(12)) == 0
    if topo.shape == "hierarchy":
        assert d[C_DEPTH + 0] == RUNS
    else:
        assert sum(d[C_FALL + s] for s in range(slots)) == RUNS

    # Slot s holds its target 1: every run lands there.
    for s in range(slots):
        pa.install(s, dict(lt.targets(s))[target_id(s, 1)])
    d = run_window(lt, cpu)
    assert d[C_CANARY_BAD] == 0
    assert sum(d[C_FALL + s] for s in range(slots)) == 0
    if topo.shape == "single":
        per_slot = RUNS // slots
        for s in range(slots):
            assert d[hit_index(s, target_id(s, 1))] == per_slot
    else:
        # 33 tail calls per run: 34 programs with the entry
        assert d[hit_index(0, target_id(0, 1))] == TCC_LIMIT * RUNS
        assert d[C_DEPTH + TCC_LIMIT] == RUNS
    allowed = {s: {target_id(s, 1)} for s in range(slots)}
    assert judge_window(topo, name, slots, d, allowed).problems == []


def _indirect_jumps(text: str) -> list[str]:
    """Indirect branches in any of the x86 JIT's forms."""
    return [ln for ln in text.splitlines()
            if re.search(r"__x86_indirect_thunk|__x86_indirect_its_thunk|jmp\s+\*%r", ln)]


def test_the_jit_takes_the_direct_path_for_constant_keys_and_the_indirect_one_otherwise(pinned):
    load, _ = pinned
    direct, indirect = load("direct-main"), load("indirect")
    direct.prog_array().install(0, direct.prog_fds["t0_0"])
    ks = jit.Kallsyms()
    d_text = jit.disassemble(jit.read_jit(direct.prog_fds["entry"]), ks)
    i_text = jit.disassemble(jit.read_jit(indirect.prog_fds["entry"]), ks)
    assert _indirect_jumps(i_text), i_text
    assert not _indirect_jumps(d_text), d_text
    # the poked jump of the installed slot names its target program
    tag = jit.read_jit(direct.prog_fds["t0_0"]).tag
    assert f"bpf_prog_{tag}_t0_0" in d_text


def test_one_objdump_for_many_images_gives_what_objdump_gives_each_function_at_its_address(pinned):
    """disassemble_many runs one objdump at vma 0 and moves every address,
    branch target and rip-relative note to the function's kernel address:
    it must read exactly like objdump told that address itself."""
    import subprocess
    load, _ = pinned
    lts = [load(n) for n in ("direct-main", "indirect", "hierarchy", "big-stack")]
    lts[0].prog_array().install(0, lts[0].prog_fds["t0_0"])  # a poked jump to another program
    images = [jit.read_jit(fd) for lt in lts for _, fd in sorted(lt.prog_fds.items())]
    got = jit.disassemble_many(images, None)
    for img, text in zip(images, got):
        want, pos = [], 0
        for i, (addr, length) in enumerate(img.funcs):
            blob = Path(tempfile.mkdtemp()) / "f.bin"
            blob.write_bytes(img.image[pos:pos + length])
            pos += length
            out = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", f"--adjust-vma=0x{addr:x}",
                                  str(blob)], capture_output=True, text=True, check=True).stdout
            shutil.rmtree(blob.parent)
            want.append(f"\n<func{i}> at 0x{addr:x}, {length} bytes:")
            want += [ln for ln in out.splitlines() if re.match(r"^\s*[0-9a-f]+:\s", ln)]
        assert text == "\n".join(want).lstrip("\n") + "\n"
    assert any("call   0xffff" in t for t in got)  # kernel calls moved too, not only local jumps


def test_a_fault_variant_is_compiled_from_the_same_source(pinned):
    load, cpu = pinned
    lt = load("chain-limit-direct", fault="short-chain")
    lt.prog_array().install(0, lt.prog_fds["t0_0"])
    d = run_window(lt, cpu)
    assert d[C_DEPTH + 20] == RUNS  # stops early, as the test-only variant should
