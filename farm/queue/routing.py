"""Which queues a host serves, and which hosts a submission goes to. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

from farm.facts import vendor_short

RESULTS_QUEUE = "results"   # workers' results, to the collector
CONTROL_QUEUE = "control"   # beat's ticks, to the collector
LAB_QUEUE = "lab"           # farm.bisect tasks: a worker that can boot guests serves it (FARM_EXTRA_QUEUES=lab)
DEFAULT_QUEUE = "farm.default"  # Celery's, for a task sent without one (farm sends none there)
# the queues no host's facts name; a host's own are queues_for() and its extra ones
FARM_QUEUES = (RESULTS_QUEUE, CONTROL_QUEUE, LAB_QUEUE, DEFAULT_QUEUE)


def queues_for(host: dict) -> list[str]:
    """vendor.<v>, class.<hw_class>, host.<hostname> from a host's facts."""
    return [f"vendor.{vendor_short(host['vendor'])}", f"class.{host['hw_class']}",
            f"host.{host['hostname']}"]


@dataclass(frozen=True)
class Selection:
    """What a submission asks for (from the spec's targets and the CLI)."""
    where: tuple[tuple[str, str], ...] = ()  # (fact, value or glob)
    hosts: tuple[str, ...] = ()
    all: bool = False
    any_of_class: str | None = None
    cells: tuple[str, ...] = ()  # mitigation cells a host must be booted in (its registered cell's name)


def parse_where(text: str) -> tuple[tuple[str, str], ...]:
    """'vendor=amd,hw_class=amd-zen*' -> (('vendor', 'amd'), ('hw_class', 'amd-zen*'))."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{part!r} is not fact=value")
        key = key.strip()
        if key not in ("vendor", "hw_class", "model", "family", "kernel", "hostname", "cell"):
            raise ValueError(f"unknown fact {key!r} (use vendor, hw_class, model, family, kernel, hostname, cell)")
        pairs.append((key, value.strip()))
    return tuple(pairs)


def host_cell(host: dict) -> str | None:
    """The mitigation cell a worker registered (farm.queue.daemons.boot_cell)."""
    return (host.get("cell") or {}).get("name")


def _matches(host: dict, fact: str, want: str) -> bool:
    have = host_cell(host) if fact == "cell" else host.get(fact)
    if fact == "vendor":
        return want in (have, vendor_short(have or ""))
    return fnmatch(str(have), want)


def select_hosts(hosts: dict[str, dict], sel: Selection) -> list[str]:
    """Names of the hosts a submission fans out to. hosts maps name to
    {'facts': {...}, 'health': ...}. Quarantined hosts get no lab-wide or
    filtered runs; a host named explicitly still gets its job."""
    if sel.hosts:
        unknown = [h for h in sel.hosts if h not in hosts]
        if unknown:
            raise ValueError(f"unknown host {unknown[0]!r} (known: {', '.join(sorted(hosts)) or 'none'})")
        return list(sel.hosts)
    out = []
    for name, h in sorted(hosts.items()):
        if h.get("health") == "quarantined":
            continue
        if sel.cells and host_cell(h["facts"]) not in sel.cells:
            continue
        if all(_matches(h["facts"], f, v) for f, v in sel.where):
            out.append(name)
    return out
