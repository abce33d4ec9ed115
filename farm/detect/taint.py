"""The kernel taint mask (/proc/sys/kernel/tainted) and what a run added to it.

Bits and letters as in the kernel's taint_flags[] (kernel/panic.c) and
Documentation/admin-guide/tainted-kernels.rst.
"""
from __future__ import annotations

from pathlib import Path

from farm.errors import InfraError
from farm.result import Finding

TAINTED_PATH = Path("/proc/sys/kernel/tainted")

# bit: (letter, name) -- name as the kernel's verbose "Tainted: [W]=WARN" line spells it
TAINT_FLAGS: dict[int, tuple[str, str]] = {
    0: ("P", "PROPRIETARY_MODULE"),
    1: ("F", "FORCED_MODULE"),
    2: ("S", "CPU_OUT_OF_SPEC"),
    3: ("R", "FORCED_RMMOD"),
    4: ("M", "MACHINE_CHECK"),
    5: ("B", "BAD_PAGE"),
    6: ("U", "USER"),
    7: ("D", "DIE"),
    8: ("A", "OVERRIDDEN_ACPI_TABLE"),
    9: ("W", "WARN"),
    10: ("C", "CRAP"),
    11: ("I", "FIRMWARE_WORKAROUND"),
    12: ("O", "OOT_MODULE"),
    13: ("E", "UNSIGNED_MODULE"),
    14: ("L", "SOFTLOCKUP"),
    15: ("K", "LIVEPATCH"),
    16: ("X", "AUX"),
    17: ("T", "RANDSTRUCT"),
    18: ("N", "TEST"),
    19: ("J", "FWCTL"),
}


def read_taint(path: Path = TAINTED_PATH) -> int:
    """The current taint mask."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError) as e:
        raise InfraError(f"cannot read the kernel taint mask from {path}: {e}") from e


def _bits(mask: int) -> list[int]:
    return [b for b in range(mask.bit_length()) if mask >> b & 1]


def _letter(bit: int) -> str:
    return TAINT_FLAGS[bit][0] if bit in TAINT_FLAGS else f"#{bit}"


def _name(bit: int) -> str:
    return TAINT_FLAGS[bit][1] if bit in TAINT_FLAGS else f"BIT_{bit}"


def taint_letters(mask: int) -> str:
    """The letters of the set bits in bit order, e.g. 0x280 -> "DW" (bits the
    kernel has no letter for here show as "#<bit>")."""
    if mask < 0:
        raise ValueError("negative taint mask")
    return "".join(_letter(b) for b in _bits(mask))


def taint_flag_names(mask: int) -> list[str]:
    return [_name(b) for b in _bits(mask)]


def taint_finding(before: int, after: int) -> Finding | None:
    """A taint Finding for the bits set in after but not in before; None when
    there are none (bits the kernel cleared are not a finding)."""
    new = after & ~before
    if not new:
        return None
    letters = sorted(_letter(b) for b in _bits(new))
    names = taint_flag_names(new)
    return Finding(
        kind="taint",
        signature="taint: " + " ".join(letters),
        summary=f"kernel newly tainted: {', '.join(f'[{_letter(b)}]={_name(b)}' for b in _bits(new))}",
        detail={"before": before, "after": after, "new": new,
                "before_letters": taint_letters(before), "after_letters": taint_letters(after),
                "new_flags": names},
    )
