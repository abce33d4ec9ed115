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


def boot_args(cell: str | None, append: str | None) -> tuple[Cell | None, str]:
    """--cell and --append as (the cell, the boot arguments to add): the
    cell's own arguments first, then --append's."""
    c = get_cell(cell) if cell else None
    extra = check_append(append or "")
    return c, " ".join(filter(None, [c.append if c else "", extra]))
