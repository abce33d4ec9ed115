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
    return disassemble_many([jit], kallsyms)[0]


# a relative branch's target (objdump prints it absolute, from the vma) and a
# rip-relative operand's address (in objdump's "# 0x..." comment)
_BRANCH = re.compile(r"^((?:bnd |notrack )?(?:call|jmp|j[a-z]{1,3}|loop[a-z]*|jrcxz|jecxz|xbegin)\s+)0x([0-9a-f]+)$")
_RIP_NOTE = re.compile(r"(#\s+)0x([0-9a-f]+)")
_LINE = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
_MASK = (1 << 64) - 1


def disassemble_many(images: list[JitImage], kallsyms: Kallsyms | None) -> list[str]:
    """disassemble() of every image in one objdump process (a process per
    function took minutes for a large job under TCG): every function at
    vma 0, its addresses and relative targets moved to where the kernel
    put it afterwards. Gives what disassemble() gives, image by image."""
    objdump = shutil.which("objdump")
    if not objdump:
        return ["objdump not found (apt-get install binutils)\n"] * len(images)
    funcs = []  # (image index, function index, address, blob)
    with tempfile.TemporaryDirectory(prefix="farm-jit-") as tmp:
        for ii, img in enumerate(images):
            pos = 0
            for fi, (addr, length) in enumerate(img.funcs):
                blob = Path(tmp) / f"{ii}-{fi}.bin"
                blob.write_bytes(img.image[pos:pos + length])
                pos += length
                funcs.append((ii, fi, addr, length, blob))
        bodies: dict[str, list[str]] = {}
        for chunk in range(0, len(funcs), 200):  # keep the command line short
            batch = funcs[chunk:chunk + 200]
            proc = subprocess.run([objdump, "-D", "-b", "binary", "-m", "i386:x86-64",
                                   *(str(f[4]) for f in batch)], capture_output=True, text=True)
            current = None
            for ln in proc.stdout.splitlines():
                if ln.endswith(":     file format binary"):
                    current = bodies.setdefault(ln.split(":", 1)[0], [])
                elif current is not None and _LINE.match(ln):
                    current.append(ln)
    out: list[list[str]] = [[] for _ in images]
    for ii, fi, addr, length, blob in funcs:
        name = kallsyms.lookup(addr) if kallsyms and addr else None
        out[ii].append(f"\n<{name or f'func{fi}'}> at 0x{addr:x}, {length} bytes:")
        out[ii].extend(_symbolise(_moved(ln, addr), kallsyms) for ln in bodies.get(str(blob), []))
    return ["\n".join(lines).lstrip("\n") + "\n" for lines in out]


def _moved(line: str, base: int) -> str:
    """An objdump line of a function disassembled at vma 0, as if at base."""
    off, rest = _LINE.match(line).groups()
    parts = rest.split("\t")
    if len(parts) >= 2:
        insn = parts[-1]
        m = _BRANCH.match(insn)
        if m:
            insn = f"{m.group(1)}0x{(int(m.group(2), 16) + base) & _MASK:x}"
        else:
            insn = _RIP_NOTE.sub(lambda n: f"{n.group(1)}0x{(int(n.group(2), 16) + base) & _MASK:x}", insn)
        parts[-1] = insn
    return f"{(int(off, 16) + base) & _MASK:x}:\t" + "\t".join(parts)


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
