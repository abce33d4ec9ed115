"""host.cell of a result: the mitigation cell a run is in (named from the
request or from /proc/cmdline), the kernel's own vulnerabilities text, and
the paths its JIT listing proves (farm.bpf.mitigation); and, when the run
was asked to reach a cell, the one line saying it did not."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from farm.cells import cell_from_cmdline, cell_miss, check_append, expect_from_args, get_cell, load_cells

CMDLINE = Path("/proc/cmdline")
# what the kernel logs when it does not do what the command line asked (bugs.c)
_KERNEL_REFUSAL = re.compile(r"Switching to AUTO select|switching to|not compiled|doesn't have|"
                             r"not supported|unsupported|ignor", re.I)
_MITIGATION_LOG = re.compile(r"^(Spectre V2|RETBleed|Speculative Return Stack Overflow|ITS|"
                             r"Spectre V2 User|mitigations)\b")


@dataclass(frozen=True)
class CellRequest:
    """What `farm run` was asked to reach: a cell of jobs/cells.yaml, the
    boot arguments the host was booted with for it (`farm lab run
    --append`), or both; neither: a run that only records its cell."""
    name: str | None = None
    booted_with: str = ""

    def check(self) -> "CellRequest":
        """BadInput for an unknown cell or bad boot arguments."""
        if self.name:
            get_cell(self.name)
        return CellRequest(self.name, check_append(self.booted_with, "--booted-with"))

    @property
    def requested(self) -> bool:
        return bool(self.name or self.booted_with)

    def expect(self) -> dict[str, str]:
        """The cell's expectations, then those the well-known boot arguments
        imply (farm.cells.ARG_EXPECT), later ones replacing earlier ones."""
        expect = dict(get_cell(self.name).expect) if self.name else {}
        expect.update(expect_from_args(self.booted_with))
        return expect


def read_cmdline() -> str:
    try:
        return CMDLINE.read_text().strip()
    except OSError:
        return ""


def cell_name(request: CellRequest, cmdline: str) -> str:
    if request.name:
        return request.name
    return cell_from_cmdline(request.booted_with or cmdline, load_cells())


def kernel_refusals() -> list[str]:
    """The kernel's own lines about mitigations it did not apply as asked."""
    from farm.detect.kmsg import read_whole_log
    return [r.text for r in read_whole_log()
            if _MITIGATION_LOG.match(r.text) and _KERNEL_REFUSAL.search(r.text)]


def cell_record(request: CellRequest, vulnerabilities: dict[str, str], paths: dict[str, str]) -> dict:
    cmdline = read_cmdline()
    return {"name": cell_name(request, cmdline), "requested": request.requested, "cmdline": cmdline,
            "vulnerabilities": dict(vulnerabilities), **paths}


def proof_gap(request: CellRequest, cell: dict) -> str | None:
    """None when the run reached what it was asked to (or was asked nothing);
    else one line, with the kernel's own word when it logged one."""
    miss = cell_miss(cell["name"], request.expect(), cell,
                     cell["vulnerabilities"].get("spectre_v2", ""))
    if miss and (said := kernel_refusals()):
        miss += f"; the kernel said: {said[0]!r}" if len(said) == 1 else \
            "; the kernel said: " + " / ".join(repr(s) for s in said[:3])
    return miss


def unread_cell_record(request: CellRequest, cmdline: str, why: str) -> dict:
    """host.cell of a run whose JIT listing was never read (a guest lost
    mid-job): named and requested as asked, its paths unknown, never guessed."""
    return {"name": cell_name(request, cmdline), "requested": request.requested, "cmdline": cmdline,
            "vulnerabilities": {}, "indirect_jump": f"unknown: {why}", "return": f"unknown: {why}"}
