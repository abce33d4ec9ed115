"""Where a signature occurs: by vendor and hw_class, against every run of the
jobs it was seen in, and the first and last kernel it was seen on.

Only kernel signatures get a split. An infrastructure one (a lost host, see
farm.result.INFRA_KINDS) says nothing about the kernel and is lab health's
business; and a run that was lost or errored counts in a split only when it
carries the signature itself (a crash that took the host down), never as a
clean run.

When the failures follow the mitigation cell (every run carrying the
signature was in some cells, while the same classes and kernels passed in
others) the split names the cell first: "fails only with lfence (2/2 runs;
0/2 with default), on both vendors: ..."."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, distinct, func, or_, select

from farm.errors import BadInput
from farm.facts import vendor_short
from farm.report.cell_axis import cell_label, joined
from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.models import Finding, Run, Signature


@dataclass
class ClassCount:
    hw_class: str
    vendor: str
    hits: int
    runs: int


@dataclass
class CellCount:
    """Runs of one mitigation cell on the classes and kernels where the
    signature occurred (so a cell that never ran there cannot look clean)."""
    cell: str      # stored; "" = unknown
    hits: int
    runs: int

    @property
    def label(self) -> str:
        return cell_label(self.cell)


@dataclass
class Where:
    signature: Signature
    classes: list[ClassCount]
    first_kernel: str | None
    last_kernel: str | None
    hosts: int
    cells: list[CellCount] = field(default_factory=list)

    @property
    def infra(self) -> bool:
        return is_infra(self.signature)

    @property
    def vendors_hit(self) -> list[str]:
        return sorted({vendor_short(c.vendor) for c in self.classes if c.hits})

    @property
    def only_cells(self) -> list[CellCount]:
        """The cells the failures follow: every hit in a known cell, and
        passing runs of the same classes and kernels in another known cell.
        [] when they do not (a hit of unknown cell could be any cell)."""
        hit = [c for c in self.cells if c.hits]
        if not hit or any(not c.cell for c in hit):
            return []
        return hit if any(c.cell and not c.hits for c in self.cells) else []

    def cell_split(self) -> str:
        """'fails only with lfence (2/2 runs; 0/2 with default)', or ''."""
        only = self.only_cells
        if not only:
            return ""
        hits, runs = sum(c.hits for c in only), sum(c.runs for c in only)
        clean = [f"0/{c.runs} with {c.label}" for c in self.cells if not c.hits]
        return f"fails only with {joined([c.label for c in only])} ({hits}/{runs} runs; {', '.join(clean)})"

    def split(self) -> str:
        """'AMD only: 12/12 runs on amd-zen4, 0/40 on intel-*', after the
        cell the failures follow if they do."""
        if self.infra:
            return f"not a kernel signature: {self.signature.kind} is lab health (farm triage health)"
        hit = [c for c in self.classes if c.hits]
        vendors = self.vendors_hit
        label = f"{vendors[0].upper() if vendors[0] == 'amd' else vendors[0].capitalize()} only" \
            if len(vendors) == 1 else "both vendors" if vendors else "no runs"
        by_cell = self.cell_split()
        if by_cell:  # "fails only with lfence (...), on both vendors: ..."
            label = f"{by_cell}, {'on ' if label == 'both vendors' else ''}{label}"
        parts = [f"{c.hits}/{c.runs} runs on {c.hw_class}" for c in hit]
        clean: dict[str, int] = {}
        for c in self.classes:
            if not c.hits:
                clean[vendor_short(c.vendor)] = clean.get(vendor_short(c.vendor), 0) + c.runs
        for v, n in sorted(clean.items()):
            if v in vendors:  # a clean class of a vendor that also fails: name it
                parts += [f"0/{c.runs} on {c.hw_class}" for c in self.classes
                          if not c.hits and vendor_short(c.vendor) == v]
            else:
                parts.append(f"0/{n} on {v}-*")
        return f"{label}: " + ", ".join(parts)


def is_infra(sig: Signature) -> bool:
    """A finding about the lab (a lost host), not about the kernel under test."""
    return sig.kind in INFRA_KINDS


def find_signature(store: Store, ref: str) -> Signature:
    """By #id, exact text, or a fragment that names one signature only."""
    with store.session() as s:
        if ref.lstrip("#").isdigit():
            sig = s.get(Signature, int(ref.lstrip("#")))
            if sig:
                return sig
        sig = s.scalar(select(Signature).where(Signature.text == ref))
        if sig:
            return sig
        like = list(s.scalars(select(Signature).where(Signature.text.contains(ref, autoescape=True)).limit(6)))
    if len(like) == 1:
        return like[0]
    if not like:
        raise BadInput(f"no signature matches {ref!r} (see `farm triage signatures`)")
    raise BadInput(f"{ref!r} matches several signatures: " + "; ".join(f"#{x.id} {x.text}" for x in like[:5]))


def where(store: Store, sig: Signature) -> Where:
    """Where sig occurs; an infrastructure signature gets no classes."""
    with store.session() as s:
        runs_with = select(Finding.run_id).where(Finding.signature_id == sig.id)
        jobs = select(Run.job).where(Run.run_id.in_(runs_with)).distinct()
        hits = dict(((c, v), n) for c, v, n in s.execute(
            select(Run.hw_class, Run.vendor, func.count(distinct(Run.run_id)))
            .where(Run.run_id.in_(runs_with)).group_by(Run.hw_class, Run.vendor)))
        counted = or_(Run.outcome.in_(("pass", "fail")), Run.run_id.in_(runs_with))
        totals = [] if is_infra(sig) else s.execute(
            select(Run.hw_class, Run.vendor, func.count()).where(Run.job.in_(jobs), counted)
            .group_by(Run.hw_class, Run.vendor)).all()
        ordered = select(Run.kernel).where(Run.run_id.in_(runs_with))
        first = s.scalar(ordered.order_by(Run.started.asc()).limit(1))
        last = s.scalar(ordered.order_by(Run.started.desc()).limit(1))
        hosts = s.scalar(select(func.count(distinct(Run.host_id))).where(Run.run_id.in_(runs_with)))
        cells = [] if is_infra(sig) else _cells(s, runs_with, jobs, counted)
    classes = [ClassCount(c, v, hits.get((c, v), 0), n) for c, v, n in totals]
    classes.sort(key=lambda c: (-c.hits, vendor_short(c.vendor), c.hw_class))
    return Where(sig, classes, first, last, hosts or 0, cells)


def _cells(s, runs_with, jobs, counted) -> list[CellCount]:
    """Hits and counted runs per cell, over the (class, kernel) pairs the
    signature occurred on: most hits first, then by name."""
    where_hit = {tuple(r) for r in s.execute(select(Run.hw_class, Run.kernel)
                                             .where(Run.run_id.in_(runs_with)).distinct())}
    is_hit = case((Run.run_id.in_(runs_with), 1), else_=0)
    hits: dict[str, int] = {}
    runs: dict[str, int] = {}
    for cls, kernel, cell, n, n_hit in s.execute(
            select(Run.hw_class, Run.kernel, Run.cell, func.count(), func.sum(is_hit))
            .where(Run.job.in_(jobs), counted).group_by(Run.hw_class, Run.kernel, Run.cell)):
        if (cls, kernel) in where_hit:
            runs[cell] = runs.get(cell, 0) + n
            hits[cell] = hits.get(cell, 0) + int(n_hit or 0)
    out = [CellCount(c, hits[c], n) for c, n in runs.items()]
    return sorted(out, key=lambda c: (-c.hits, c.cell))


def signatures(store: Store) -> list[Signature]:
    with store.session() as s:
        return list(s.scalars(select(Signature).order_by(Signature.last_seen.desc())))


def bisection_text(b: dict) -> str:
    """One stored bisection as triage says it: "introduced in P (U)",
    "fixed in P (U) (suspect: S)", or why there is none."""
    if b["status"] == "named":
        return (f"{b['direction']} in {b['boundary_newer']} ({b['upstream_newer']})"
                + (f" (suspect: {b['top_suspect']})" if b.get("top_suspect") else "")
                + f" [{b['job']}, good {b['good']}, bad {b['bad']}"
                + (f", confidence {b['confidence']:.2f}" if b.get("confidence") is not None else "") + "]")
    if b["status"] in ("queued", "running"):
        return f"being bisected [{b['job']}, good {b['good']}, bad {b['bad']}]"
    return f"bisection {b['status']}: {b.get('refused') or 'no boundary'} [{b['job']}]"


def bisections_of(store: Store, sig: Signature) -> list[dict]:
    """The stored bisections that followed this signature, newest first."""
    return store.bisections(signature=sig.text)
