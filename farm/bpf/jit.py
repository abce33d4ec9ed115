"""The JIT image of a loaded program, disassembled and symbolised.

Debian's bpftool has no libbfd (`prog dump jited` fails), so the raw image
comes from BPF_OBJ_GET_INFO_BY_FD and objdump disassembles it at the address
the kernel put it, so that call and jump targets resolve against /proc/kallsyms
(__x86_indirect_thunk_*, the other programs' bpf_prog_<tag>_<name>, ...).
"""
from __future__ import annotations

import bisect
import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from farm.bpf import syscall

_ADDR = re.compile(r"0x(ffff[0-9a-f]{12})\b")


@dataclass
class JitImage:
    prog_id: int
    tag: str
    image: bytes
    funcs: list[tuple[int, int]]  # (kernel address, length) of main then subprogs

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image).hexdigest()


def read_jit(prog_fd: int) -> JitImage:
    info, image, addrs, lens = syscall.prog_info(prog_fd)
    if not lens:  # a program without subprogs may report no lengths
        lens = [len(image)]
    return JitImage(info.id, bytes(info.tag).hex(), image, list(zip(addrs or [0], lens)))


class Kallsyms:
    """Address -> symbol, from /proc/kallsyms (root sees real addresses)."""

    def __init__(self, path: str = "/proc/kallsyms"):
        pairs = []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    addr = int(parts[0], 16)
                    if addr:
                        pairs.append((addr, parts[2]))
        pairs.sort()
        self.addrs = [a for a, _ in pairs]
        self.names = [n for _, n in pairs]

    def lookup(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or not self.addrs:
            return None
        off = addr - self.addrs[i]
        if off > 1 << 20:  # too far to be inside that symbol
            return None
        return self.names[i] + (f"+0x{off:x}" if off else "")


def disassemble(jit: JitImage, kallsyms: Kallsyms | None) -> str:
    """objdump of every function of the image, targets named after kallsyms."""
    objdump = shutil.which("objdump")
    if not objdump:
        return "objdump not found (apt-get install binutils)\n"
    out, pos = [], 0
    with tempfile.TemporaryDirectory(prefix="farm-jit-") as tmp:
        for i, (addr, length) in enumerate(jit.funcs):
            chunk = jit.image[pos:pos + length]
            pos += length
            blob = Path(tmp) / f"f{i}.bin"
            blob.write_bytes(chunk)
            name = kallsyms.lookup(addr) if kallsyms and addr else None
            out.append(f"\n<{name or f'func{i}'}> at 0x{addr:x}, {length} bytes:")
            proc = subprocess.run([objdump, "-D", "-b", "binary", "-m", "i386:x86-64",
                                   f"--adjust-vma=0x{addr:x}", str(blob)],
                                  capture_output=True, text=True)
            lines = proc.stdout.splitlines()
            body = [ln for ln in lines if re.match(r"^\s*[0-9a-f]+:\s", ln)]
            out.extend(_symbolise(ln, kallsyms) for ln in body)
    return "\n".join(out).lstrip("\n") + "\n"


def _symbolise(line: str, kallsyms: Kallsyms | None) -> str:
    if not kallsyms:
        return line
    names = []
    for m in _ADDR.finditer(line.split("\t", 2)[-1]):
        sym = kallsyms.lookup(int(m.group(1), 16))
        if sym:
            names.append(sym)
    return line + (f"\t<{', '.join(names)}>" if names else "")


def dump_xlated(prog_id: int) -> str:
    """bpftool's view of the verifier's output (this works without libbfd)."""
    bpftool = shutil.which("bpftool")
    if not bpftool:
        return "bpftool not found\n"
    proc = subprocess.run([bpftool, "prog", "dump", "xlated", "id", str(prog_id)],
                          capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else f"bpftool failed: {proc.stderr}"
