"""Crash safety: a job that can crash an unfixed kernel runs only where a
crash costs nothing. Its crash-risk items are the topologies marked with
Topology.crash_risk and, with the `refuse` check, the refuse cases marked
with RefuseCase.crash_risk. `farm run` and a queue worker refuse such a job
(bad input, exit 2) unless the job says `crash_ok: true` or the host allows
crashes (farm.config.allow_crashes: a disposable lab host, or a guest of
the virtual lab, which always does)."""
from __future__ import annotations

from farm.bpf.corpus import TOPOLOGIES
from farm.config import allow_crashes
from farm.errors import BadInput

HOW_TO_ALLOW = ("to run it anyway, set crash_ok: true in the job, or allow_crashes: true in the farm config "
                "of a disposable host (guests of the virtual lab always allow it)")


def crash_risks(spec) -> list[tuple[str, str]]:
    """(item, why it can crash an unfixed kernel) for every crash-risk item of the job."""
    items = [(f"topology {t.name}", TOPOLOGIES[t.name].crash_risk)
             for t in spec.topologies if t.name and TOPOLOGIES[t.name].crash_risk]
    if "refuse" in spec.checks:
        from farm.detect.refuse import crash_risks as refuse_risks
        items += refuse_risks()
    return list(dict.fromkeys(items))


def refusal(spec) -> str | None:
    """One line saying why this host must not run the job, or None."""
    items = crash_risks(spec)
    if not items or spec.crash_ok or allow_crashes():
        return None
    named = "; ".join(f"{item} ({why})" for item, why in items)
    return f"refused: job {spec.name} can crash an unfixed kernel: {named}; {HOW_TO_ALLOW}"


def check(spec) -> None:
    """Raise BadInput (exit 2, one line) when this host must not run the job."""
    if why := refusal(spec):
        raise BadInput(why)
