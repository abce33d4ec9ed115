"""The static triage report: index.html with the matrix (job x hw_class x
mitigation cell by kernel), what each kernel could not run and why, the
lab's health,
the regressions, the generated seeds that pass on one kernel and fail on
another, the kernel signatures and throughput plots, and one page
per kernel signature with where it occurs, a kernel-log sample and the JIT
diff against a passing host.

Self-contained files (inline CSS and SVG, no script, nothing fetched) so the
report can be mailed, attached to CI or opened from an artifact store.
The markup is Jinja templates (farm/report/templates/, autoescaped), shared
with the live /triage/ pages of farm web; the queries stay here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html import escape as esc
from pathlib import Path

from sqlalchemy import case, select

from farm.facts import vendor_short
from farm.report import jitdiff, templates
from farm.report.cell_axis import cell_label
from farm.report.health import health
from farm.report.matrix import OUTCOMES, MatrixEntry, kernel_key, matrix, unsupported
from farm.report.regressions import regressions
from farm.report.seeds import seed_differences
from farm.report.signatures import Where, bisections_of, is_infra, signatures, where
from farm.store import Store
from farm.store.models import Artifact, Finding, Host, Run, Signature

# Exact, distinctive colours: the screenshot test looks for these pixels.
COLOURS = {"pass": (46, 204, 64), "fail": (224, 36, 43), "flaky": (255, 140, 0),
           "lost": (158, 158, 158), "error": (142, 68, 173), "not-run": (0, 188, 212),
           "none": (255, 255, 255)}
KMSG_LINES = 80
CANDIDATE_RUNS = 5   # failing runs, and passing partners for each, tried for a JIT pair

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}
tr.group th{background:#eee}
td.entry{min-width:110px;height:34px;text-align:center;vertical-align:middle;font-weight:600}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;line-height:1.3}
pre span{display:block}
pre .add{background:#dff5e3}
pre .del{background:#fbe4e4}
pre .hunk{color:#0550ae}
pre .file{font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1em}
.muted{color:#666}
""" + "".join(f".s-{k}{{background:rgb{v}}}\n" for k, v in COLOURS.items())


def render(store: Store, out_dir: Path) -> Path:
    """Write index.html and sig-<id>.html into out_dir; the index's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sigs, wheres = kernel_signatures(store)
    index = out_dir / "index.html"
    index.write_text(_page("farm triage", index_body(store, sigs, wheres)))
    for sig in sigs:
        (out_dir / f"sig-{sig.id}.html").write_text(_page(f"#{sig.id} {sig.text}",
                                                          signature_body(store, sig, wheres[sig.id])))
    return index


def kernel_signatures(store: Store) -> tuple[list[Signature], dict[int, Where]]:
    """The kernel signatures (infra ones are lab health) and where each occurs."""
    sigs = [s for s in signatures(store) if not is_infra(s)]
    return sigs, {s.id: where(store, s) for s in sigs}


def index_body(store: Store, sigs: list[Signature], wheres: dict[int, Where]) -> str:
    """The triage index's body: the static report's index.html and the web
    page's /triage/ are both this (links relative: sig-<id>.html). The
    queries are here, the markup in templates/index_body.html."""
    return templates.render("index_body.html", run_count=store.run_count(), matrix=_matrix(matrix(store)),
                            not_run=unsupported(store), lab=health(store),
                            sig_ids={s.text: s.id for s in sigs}, regressions=regressions(store),
                            seeds=seed_differences(store), bisections=store.bisections(),
                            sigs=sigs, wheres=wheres, charts=_throughput(store))


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


# -- index ------------------------------------------------------------------------


def entry_text(entry: MatrixEntry) -> str:
    """'2/2 pass' when every run agreed, else the counts: '1 fail 1 pass'."""
    parts = [(o.replace("-", " "), entry.counts[o]) for o in ("fail", "error", "lost", "not-run", "pass")
             if entry.counts[o]]
    if len(parts) == 1:
        return f"{parts[0][1]}/{entry.runs} {parts[0][0]}"
    return " ".join(f"{n} {o}" for o, n in parts)


@dataclass
class MatrixCell:
    kernel: str
    status: str
    text: str
    title: str


@dataclass
class MatrixRow:
    group: tuple[str, str] | None   # (job, vendor) on the first row of a group, for its header row
    hw_class: str
    label: str
    entries: list[MatrixCell]


@dataclass
class Matrix:
    kernels: list[str]
    rows: list[MatrixRow]


def _matrix(entries: list[MatrixEntry]) -> Matrix:
    """A row per job, class and mitigation cell ("-": unknown), a column per kernel."""
    kernels = sorted({e.kernel for e in entries}, key=kernel_key)
    by_row: dict[tuple[str, str, str, str], dict[str, MatrixEntry]] = {}
    for e in entries:
        by_row.setdefault((e.job, vendor_short(e.vendor), e.hw_class, e.cell), {})[e.kernel] = e
    rows, group = [], None
    for (job, vendor, cls, _), by_kernel in sorted(by_row.items()):
        first = (job, vendor) != group
        group = (job, vendor)
        cells = []
        for k in kernels:
            e = by_kernel.get(k)
            if e is None:
                cells.append(MatrixCell(k, "none", "–", "no runs"))
                continue
            # the counts, the JIT paths the cell reached here, what could not run and why
            title = "; ".join(filter(None, [", ".join(f"{e.counts[o]} {o}" for o in OUTCOMES
                                                      if o != "not-run" or e.counts[o]),
                                            e.paths(), e.not_run_text()]))
            cells.append(MatrixCell(k, e.status, entry_text(e), title))
        rows.append(MatrixRow(group if first else None, cls, next(iter(by_kernel.values())).cell_label, cells))
    return Matrix(kernels, rows)


# -- throughput plots -------------------------------------------------------------


def _throughput(store: Store) -> list[dict]:
    series: dict[str, list[tuple[datetime, float]]] = {}
    with store.session() as s:
        for cls, started, rate in s.execute(select(Run.hw_class, Run.started, Run.tail_calls_per_s)
                                            .where(Run.tail_calls_per_s > 0)
                                            .order_by(Run.hw_class, Run.started)):
            series.setdefault(cls, []).append((started, rate))
    return [chart_points(pts, f"{cls}: tail calls/s") for cls, pts in series.items()]


def chart_points(points: list[tuple[datetime, float]], title: str, w: int = 420, h: int = 180) -> dict:
    """What templates/_chart.html draws: values over time, y from zero, one dot per run."""
    left, right, top, bottom = 56, 10, 24, 28
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0).total_seconds() or 1.0
    ymax = max(v for _, v in points) * 1.1 or 1.0

    def xy(t: datetime, v: float) -> tuple[float, float]:
        x = left + (w - left - right) * ((t - t0).total_seconds() / span if t1 > t0 else 0.5)
        return round(x, 1), round(h - bottom - (h - top - bottom) * v / ymax, 1)

    return dict(title=title, w=w, h=h, left=left, right=right, top=top, base=h - bottom,
                coords=[xy(t, v) for t, v in points], ymax=_si(ymax), t0=t0, t1=t1)


def line_chart(points: list[tuple[datetime, float]], title: str, w: int = 420, h: int = 180) -> str:
    """The SVG line chart alone (the index draws it inside its own template)."""
    return templates.env().get_template("_chart.html").module.line_chart(chart_points(points, title, w, h))


def _si(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


# -- signature pages --------------------------------------------------------------


@dataclass
class RunRef:
    run_id: str
    hostname: str
    hw_class: str
    kernel: str
    cell: str = ""

    def label(self) -> str:
        # the cell too: a pair across cells diffs the mitigations' code as well
        return f"{self.hostname} ({self.hw_class}, {self.kernel}, cell {cell_label(self.cell)}) {self.run_id}"


@dataclass
class JitPair:
    program: str
    passing: RunRef
    failing: RunRef
    lines: list[str]      # the unified diff; [] when the code agrees
    same_sha: bool


def signature_body(store: Store, sig: Signature, w: Where) -> str:
    """A kernel signature's page body (sig-<id>.html), static and live alike;
    the markup is templates/signature_body.html."""
    pair = jit_pair(store, sig)
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    # the first two diff lines: the --- / +++ header
    diff_lines = [("file" if i < 2 else kinds.get(x[:1], "ctx"), x) for i, x in enumerate(pair.lines if pair else [])]
    return templates.render("signature_body.html", sig=sig, w=w, bisections=bisections_of(store, sig),
                            # an http(s) link only: never a javascript: URL
                            link_ok=bool(sig.link and sig.link.startswith(("https://", "http://"))),
                            kmsg=_kmsg(store, sig), pair=pair, diff_lines=diff_lines)


def kmsg_sample(store: Store, sig: Signature) -> tuple[str, str] | None:
    """(run_id, text): a finding's own kernel-log report, else the kernel
    log its run kept."""
    with store.session() as s:
        rows = s.execute(select(Finding.run_id, Finding.detail).where(Finding.signature_id == sig.id)
                         .order_by(Finding.id.desc()).limit(50)).all()
    for run_id, detail in rows:
        d = json.loads(detail or "{}")
        if isinstance(d, dict) and d.get("report"):
            return run_id, str(d["report"])
    for run_id, _ in rows:
        text = store.artifact_text(run_id, "kmsg")
        if text:
            return run_id, text
    return None


def _kmsg(store: Store, sig: Signature) -> dict | None:
    """The sample cut to KMSG_LINES, saying how many lines it left out."""
    sample = kmsg_sample(store, sig)
    if sample is None:
        return None
    run_id, text = sample
    lines = text.splitlines()
    more = f"\n… {len(lines) - KMSG_LINES} more lines" if len(lines) > KMSG_LINES else ""
    return {"run_id": run_id, "text": "\n".join(lines[:KMSG_LINES]) + more}


def jit_pair(store: Store, sig: Signature) -> JitPair | None:
    """A failing run with this signature and a passing run of its job on
    another host (same class and kernel first), and a program both kept a
    listing of, differing jited_sha256 and a non-empty diff first."""
    runs = select(Run.run_id, Host.hostname, Run.hw_class, Run.kernel, Run.cell, Run.job, Run.host_id) \
        .join(Host, Host.id == Run.host_id)
    with store.session() as s:
        failing = s.execute(runs.where(Run.run_id.in_(select(Finding.run_id)
                                                      .where(Finding.signature_id == sig.id)),
                                       Run.outcome != "pass")
                            .order_by(Run.started.desc()).limit(CANDIDATE_RUNS)).all()
        partners = {f.run_id: s.execute(
            runs.where(Run.job == f.job, Run.outcome == "pass", Run.host_id != f.host_id)
            .order_by(case((Run.hw_class == f.hw_class, 0), else_=1),
                      case((Run.kernel == f.kernel, 0), else_=1), Run.started.desc())
            .limit(CANDIDATE_RUNS)).all() for f in failing}
    listings: dict[str, dict[str, str | None]] = {}
    fallback = None
    for f in failing:
        for p in partners[f.run_id]:
            a, b = _listed(store, p.run_id, listings), _listed(store, f.run_id, listings)
            for name in sorted(set(a) & set(b), key=lambda n: (a[n] == b[n], n)):
                same = a[name] is not None and a[name] == b[name]  # same bytes: nothing to diff
                lines = [] if same else jitdiff.diff(store.artifact_text(p.run_id, f"{name}.S") or "",
                                                     store.artifact_text(f.run_id, f"{name}.S") or "",
                                                     f"{p.hostname} {name}", f"{f.hostname} {name}")
                pair = JitPair(name, _ref(p), _ref(f), lines, same)
                if lines:
                    return pair
                fallback = fallback or pair
    return fallback


def _ref(row) -> RunRef:
    return RunRef(row.run_id, row.hostname, row.hw_class, row.kernel, row.cell)


def _listed(store: Store, run_id: str, cache: dict) -> dict[str, str | None]:
    """Program name -> jited_sha256 for the programs whose listing the run kept."""
    if run_id not in cache:
        with store.session() as s:
            kept = set(s.scalars(select(Artifact.name).where(Artifact.run_id == run_id,
                                                              Artifact.content.is_not(None))))
        progs = (store.result(run_id) or {}).get("programs") or []
        cache[run_id] = {p["name"]: p.get("jited_sha256") for p in progs
                         if isinstance(p, dict) and f"{p.get('name')}.S" in kept}
    return cache[run_id]
