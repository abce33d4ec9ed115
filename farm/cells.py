"""Mitigation cells (jobs/cells.yaml): named kernel boot arguments, each
reaching one path of the x86-64 BPF JIT, and what a run must show to prove
its cell was reached."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from farm.config import REPO
from farm.errors import BadInput, shown
from farm.inputs import load_yaml, read_input

CELLS_FILE = REPO / "jobs" / "cells.yaml"
JUMP_PATHS = ("retpoline", "lfence", "plain", "its", "call-depth")
RETURN_PATHS = ("ret", "return-thunk", "srso", "its", "call-depth")
EXPECT_KEYS = {"indirect_jump": JUMP_PATHS, "return": RETURN_PATHS}
CELL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
# one kernel boot argument: key or key=value, no quotes, no shell or QEMU -append breakers
_ARG = re.compile(r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:+/-]*)?")


@dataclass(frozen=True)
class Cell:
    name: str
    append: str = ""
    description: str = ""
    expect: dict[str, str] = field(default_factory=dict)


def check_append(text: str, where: str = "--append") -> str:
    """Boot arguments, one space apart; BadInput for anything that is not
    key or key=value (it goes onto a QEMU -append line and /proc/cmdline)."""
    args = text.split()
    for a in args:
        if not _ARG.fullmatch(a):
            raise BadInput(f"{where}: {shown(a)} is not a boot argument like key=value")
    if any(a.split("=")[0].startswith("farm.") for a in args):
        raise BadInput(f"{where}: farm.* arguments are the lab's own")
    return " ".join(args)


def load_cells(path: Path = CELLS_FILE) -> dict[str, Cell]:
    data = load_yaml(read_input(path, "cells file"), str(path))
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict) or not data["cells"]:
        raise BadInput(f"{path}: expected a mapping `cells:` of name -> {{append, expect, description}}")
    cells = {}
    for name, body in data["cells"].items():
        where = f"{path}: cells.{name}"
        if not isinstance(name, str) or not CELL_NAME.fullmatch(name):
            raise BadInput(f"{path}: cell name {shown(name)}: lowercase letters, digits, '.', '_', '-'")
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"append", "expect", "description"}:
            raise BadInput(f"{where}: only append, expect and description")
        expect = body.get("expect") or {}
        if not isinstance(expect, dict):
            raise BadInput(f"{where}.expect: a mapping like {{indirect_jump: lfence}}")
        for k, v in expect.items():
            if k not in EXPECT_KEYS or v not in EXPECT_KEYS[k]:
                known = "; ".join(f"{key}: {' | '.join(vals)}" for key, vals in EXPECT_KEYS.items())
                raise BadInput(f"{where}.expect: {shown(k)}: {shown(v)} (known: {known})")
        cells[name] = Cell(name, check_append(str(body.get("append") or ""), f"{where}.append"),
                           str(body.get("description") or ""), dict(expect))
    return cells


def get_cell(name: str, path: Path = CELLS_FILE) -> Cell:
    cells = load_cells(path)
    if name not in cells:
        raise BadInput(f"unknown cell {shown(name)} (known in {path.name}: {', '.join(cells)})")
    return cells[name]


def boot_args(cell: str | None, append: str | None) -> tuple[Cell | None, str, str]:
    """--cell and --append as (the cell, the boot arguments to add: the
    cell's own first, then --append's, and --append's own, checked)."""
    c = get_cell(cell) if cell else None
    extra = check_append(append or "")
    return c, " ".join(filter(None, [c.append if c else "", extra])), extra


# -- the cell a run is in, and whether the run proved it --------------------------------

# boot arguments that choose (or drop) CPU mitigations: a cmdline carrying
# none of them runs the kernel's default cell
MITIGATION_ARGS = frozenset({
    "mitigations", "spectre_v2", "spectre_v2_user", "nospectre_v2", "nospectre_v1", "spectre_bhi",
    "retbleed", "spec_rstack_overflow", "indirect_target_selection", "spec_store_bypass_disable",
    "nospec_store_bypass_disable", "ssbd", "pti", "nopti", "mds", "tsx_async_abort", "mmio_stale_data",
    "reg_file_data_sampling", "gather_data_sampling", "srbds", "l1tf", "tsa", "vmscape", "ibrs", "noibrs",
    "retpoline", "noretpoline", "kpti",
})
# what well-known boot arguments make the JIT emit (emit_indirect_jump(),
# emit_return()), for `--append` without a cell; a later argument's
# expectation replaces an earlier one's, as the kernel's own parsing does
ARG_EXPECT: dict[str, dict[str, str]] = {
    "spectre_v2=retpoline,lfence": {"indirect_jump": "lfence"},
    "spectre_v2=retpoline,amd": {"indirect_jump": "lfence"},  # the old name of retpoline,lfence
    "spectre_v2=retpoline,generic": {"indirect_jump": "retpoline"},
    "spectre_v2=retpoline": {"indirect_jump": "retpoline"},
    "spectre_v2=eibrs": {"indirect_jump": "plain"},
    "spectre_v2=off": {"indirect_jump": "plain"},
    "nospectre_v2": {"indirect_jump": "plain"},
    "retbleed=stuff": {"indirect_jump": "call-depth", "return": "call-depth"},
    "mitigations=off": {"indirect_jump": "plain", "return": "ret"},
}
JUMP_WORDS = {"indirect_jump": "indirect tail calls went through", "return": "returns through"}


def expect_from_args(args: str) -> dict[str, str]:
    expect: dict[str, str] = {}
    for a in args.split():
        expect.update(ARG_EXPECT.get(a, {}))
    return expect


def cell_from_cmdline(cmdline: str, cells: dict[str, Cell]) -> str:
    """The cell a kernel booted with this cmdline is in: the cell whose boot
    arguments all appear (most arguments wins), else "default" if no
    argument picks a mitigation, else "custom"."""
    args = set(cmdline.split())
    matches = [c for c in cells.values() if c.append and set(c.append.split()) <= args]
    if matches:
        return max(matches, key=lambda c: len(c.append.split())).name
    if any(a.split("=")[0] in MITIGATION_ARGS and not _kernel_default(a) for a in args):
        return "custom"
    return "default"


def _kernel_default(arg: str) -> bool:
    """mitigations=auto (with options such as nosmt or a hypervisor's
    no_guest_host) and spectre_v2=auto pick what the kernel picks anyway."""
    _, _, value = arg.partition("=")
    return value.split(",")[0] == "auto"


def cell_miss(name: str, expect: dict[str, str], seen: dict[str, str], spectre_v2: str) -> str | None:
    """One line when the run's JIT listing does not prove its cell, else None.
    spectre_v2 is the kernel's text; its first part names its choice."""
    if not expect:
        return None
    chose = f"spectre_v2: {spectre_v2.split(';')[0].strip() or 'unknown'}"
    if expect.get("indirect_jump") and seen.get("indirect_jump") == "none":
        return f"cell {name} not proven: the run made no indirect tail call (add the indirect topology; {chose})"
    wrong = [f"{JUMP_WORDS[k]} {seen.get(k, 'none')}" for k, want in expect.items() if seen.get(k) != want]
    if not wrong:
        return None
    return f"cell {name} not reached: {', '.join(wrong)} (expected {', '.join(expect.values())}; {chose})"
