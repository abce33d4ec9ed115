"""Which mitigation paths the x86-64 BPF JIT really emitted, read from a
run's symbolised JIT listings (farm.bpf.jit.disassemble).

The kernel picks them in emit_indirect_jump() (the indirect tail call) and
emit_return():

    indirect_jump  retpoline   jmp <__x86_indirect_thunk_rcx>
                   lfence      lfence; jmp *%rcx
                   plain       jmp *%rcx (maybe int3 after it)
                   its         jmp <__x86_indirect_its_thunk_rcx>
                   call-depth  jmp <__x86_indirect_jump_thunk_rcx>
                   none        the listings hold no indirect tail call
    return         ret         ret (maybe int3 after it)
                   return-thunk, srso, its, call-depth: jmp <the thunk>

Only indirect branches through %rcx are tail calls: the JIT loads the next
program's address into rcx (emit_bpf_tail_call_indirect) and emits no other
indirect jump in a program; one through another register is reported, not
taken for a tail call. Programs that disagree give "mixed: a, b"; an
instruction we do not know gives "unknown: <insn>", never a guess.
"""
from __future__ import annotations

import re

NONE = "none"
# the symbol objdump's jump target resolved to (jit._symbolise appends "\t<sym>")
_SYMBOL = re.compile(r"\t<([^>]+)>\s*$")
# "ffffffffc0025cf2:\te9 a9 c4 1d c2       \tjmp    0xffffffff822021a0"
_INSN = re.compile(r"^\s*[0-9a-f]+:\t[0-9a-f ]+\t(?P<insn>[^\t]+)")

INDIRECT_THUNKS = (  # longest prefix first: all three start alike
    ("__x86_indirect_its_thunk_", "its"),
    ("__x86_indirect_jump_thunk_", "call-depth"),
    ("__x86_indirect_thunk_", "retpoline"),
)
RETURN_THUNKS = {
    "__x86_return_thunk": "return-thunk",
    "retbleed_return_thunk": "return-thunk",
    "zen_untrain_ret": "return-thunk",
    "retbleed_untrain_ret": "return-thunk",
    "srso_return_thunk": "srso",
    "srso_alias_return_thunk": "srso",
    "srso_safe_ret": "srso",
    "srso_alias_safe_ret": "srso",
    "srso_untrain_ret": "srso",
    "srso_alias_untrain_ret": "srso",
    "its_return_thunk": "its",
    "call_depth_return_thunk": "call-depth",
}


def _parse(line: str) -> tuple[str, str | None] | None:
    """(instruction text, target symbol without +offset) of a listing line."""
    m = _INSN.match(line)
    if not m:
        return None
    s = _SYMBOL.search(line)
    return " ".join(m.group("insn").split()), (s.group(1).split("+")[0] if s else None)


def _indirect_thunk(sym: str | None) -> tuple[str, str] | None:
    """(path, register) of a jump to an indirect-branch thunk."""
    for prefix, path in INDIRECT_THUNKS:
        if sym and sym.startswith(prefix):
            return path, sym[len(prefix):]
    return None


def classify_listing(listing: str) -> dict[str, list[str]]:
    """Every indirect tail call, return and stray indirect jump of one
    program's listing: {"indirect_jump": [...], "return": [...], "other": [...]}."""
    seen: dict[str, list[str]] = {"indirect_jump": [], "return": [], "other": []}
    prev = ""
    for line in listing.splitlines():
        parsed = _parse(line)
        if not parsed:
            continue
        insn, sym = parsed
        op, _, operand = insn.partition(" ")
        if op in ("ret", "retq"):
            seen["return"].append("ret")
        elif op in ("jmp", "jmpq") and operand.startswith("*"):
            if operand.split(" ")[0] != "*%rcx":
                seen["other"].append(insn)
            else:
                seen["indirect_jump"].append("lfence" if prev == "lfence" else "plain")
        elif op in ("jmp", "jmpq") and (thunk := _indirect_thunk(sym)):
            path, reg = thunk
            (seen["indirect_jump"] if reg in ("rcx", "array") else seen["other"]).append(
                path if reg in ("rcx", "array") else insn + f" <{sym}>")
        elif op in ("jmp", "jmpq") and sym in RETURN_THUNKS:
            seen["return"].append(RETURN_THUNKS[sym])
        elif op in ("jmp", "jmpq") and sym and not sym.startswith("bpf_prog_"):
            # out of the program, not to another program, not a thunk we know
            seen["return"].append(f"unknown: {insn} <{sym}>")
        prev = op
    return seen


def _one(paths: list[str], empty: str) -> str:
    distinct = sorted(set(paths))
    if not distinct:
        return empty
    unknown = [p for p in distinct if p.startswith("unknown: ")]
    if unknown:
        return unknown[0]
    return distinct[0] if len(distinct) == 1 else "mixed: " + ", ".join(distinct)


def classify(listings: list[str]) -> dict[str, str]:
    """The run's {"indirect_jump", "return"} from its programs' listings;
    a stray indirect jump through another register makes indirect_jump
    "unknown: <insn>" rather than be silently ignored."""
    jumps, returns, other = [], [], []
    for listing in listings:
        seen = classify_listing(listing)
        jumps += seen["indirect_jump"]
        returns += seen["return"]
        other += seen["other"]
    jump = _one(jumps, NONE)
    if other and not jump.startswith("unknown: "):
        jump = f"unknown: {other[0]} (an indirect jump that is no tail call)"
    return {"indirect_jump": jump,
            "return": _one(returns, "unknown: no return in the listings" if listings else NONE)}
