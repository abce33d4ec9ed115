"""Two hosts' JIT listings of one program, made comparable and diffed.

A listing as the engine writes it (objdump style):

    <bpf_prog_9984b8ce313a37d8_t0_0> at 0xffffffffc0000958, 450 bytes:
    ffffffffc0000958:\t0f 1f 44 00 00       \tnopl   0x0(%rax,%rax,1)
    ffffffffc000096f:\t77 06                \tja     0xffffffffc0000977\t<bpf_prog_9984b8ce313a37d8_t0_0+0x1f>

Where the image landed, map and kernel pointers baked in as immediates and
the program tag all differ between hosts for identical code; only what is
left after normalising them is a real difference in the emitted code.
"""
from __future__ import annotations

import difflib
import re

HEADER = re.compile(r"^<(bpf_prog_[0-9a-f]{16}_[^>]*)> at 0x([0-9a-f]+), (\d+) bytes:")
INSN = re.compile(r"^\s*([0-9a-f]+):\t[0-9a-f]{2}(?: [0-9a-f]{2})*\s*(?:\t(.*))?$")
HEX = re.compile(r"0x[0-9a-f]+")
TAG = re.compile(r"bpf_prog_[0-9a-f]{16}")
SELF_SYMBOL = re.compile(r"\s*<bpf_prog_\*_[^>+]*\+0x[0-9a-f]+>")
OFFSET = re.compile(r"^\+0x[0-9a-f]+:\t")
# Kernel virtual addresses (direct map, vmalloc, text, modules); above the
# top are small negative immediates like $0xfffffffffffffff4, which are code.
KERNEL_LO, KERNEL_HI = 0xffff800000000000, 0xffffffffff000000


def normalise(text: str) -> list[str]:
    """The listing as "+0xOFF:\\tinstruction" lines: addresses in the program
    become offsets from its start, other kernel addresses ADDR, tags
    bpf_prog_*; the raw-bytes column and byte-only continuation lines go."""
    out, start, end = [], 0, 0
    for line in text.splitlines():
        head = HEADER.match(line)
        if head:  # several in one listing when the program has subprograms
            start = int(head.group(2), 16)
            end = start + int(head.group(3))
            out.append(f"<{TAG.sub('bpf_prog_*', head.group(1))}> {head.group(3)} bytes")
            continue
        insn = INSN.match(line)
        if insn is None:
            if line.strip():
                out.append(TAG.sub("bpf_prog_*", line.strip()))
            continue
        if not insn.group(2):
            continue
        addr = int(insn.group(1), 16)
        out.append(f"+0x{addr - start:x}:\t{_operands(insn.group(2), start, end)}")
    return out


def _operands(insn: str, start: int, end: int) -> str:
    def address(m: re.Match) -> str:
        v = int(m.group(0), 16)
        if start <= v < end:
            return f"+0x{v - start:x}"
        return "ADDR" if KERNEL_LO <= v < KERNEL_HI else m.group(0)
    insn = TAG.sub("bpf_prog_*", HEX.sub(address, " ".join(insn.split())))
    return SELF_SYMBOL.sub("", insn)  # "<bpf_prog_*_t0_0+0x1f>" repeats the offset


def diff(passing_text: str, failing_text: str, passing: str = "passing", failing: str = "failing",
         context: int = 3) -> list[str]:
    """Unified diff of the two normalised listings; [] if they agree.

    Lines are matched on the instruction alone: one inserted instruction
    shifts every later offset, and matching on the offset too would turn the
    rest of the program into one changed block."""
    a, b = normalise(passing_text), normalise(failing_text)
    ka, kb = [OFFSET.sub("", x) for x in a], [OFFSET.sub("", x) for x in b]
    out = []
    for group in difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_grouped_opcodes(context):
        if not out:
            out += [f"--- {passing}", f"+++ {failing}"]
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + x for x in b[b1:b2]]
                continue
            out += ["-" + x for x in a[a1:a2]]
            out += ["+" + x for x in b[b1:b2]]
    return out


def _range(lo: int, hi: int) -> str:
    """A hunk's range the way diff(1) writes it (1-based; empty: before lo)."""
    n = hi - lo
    return f"{lo + 1}" if n == 1 else f"{lo if n == 0 else lo + 1},{n}"
