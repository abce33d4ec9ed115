"""The mitigation cell as a triage axis: how a run's cell is shown and
selected. A run stored before cells existed has cell "" (unknown): shown
and selected as "-", never as "default", since nothing says which boot
arguments that host had."""
from __future__ import annotations

from farm.cells import CELL_NAME
from farm.errors import BadInput, shown

UNKNOWN = "-"


def cell_label(stored: str) -> str:
    """What a report shows for a run's stored cell."""
    return stored or UNKNOWN


def stored_cell(label: str) -> str:
    """The stored value a `--cell` names: a cell name, or "-" for unknown."""
    if label == UNKNOWN:
        return ""
    if not CELL_NAME.fullmatch(label):
        raise BadInput(f"--cell: {shown(label)} is not a cell name (see jobs/cells.yaml; '-' for unknown)")
    return label


def joined(names: list[str]) -> str:
    """'lfence', 'lfence and off', 'lfence, off and stuff'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
