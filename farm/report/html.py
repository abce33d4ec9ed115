"""The static triage report: index.html with the matrix (job x hw_class x
mitigation cell by kernel), what each kernel could not run and why, the
lab's health,
the regressions, the generated seeds that pass on one kernel and fail on
another, the kernel signatures and throughput plots, and one page
per kernel signature with where it occurs, a kernel-log sample and the JIT
diff against a passing host.

Self-contained files (inline CSS and SVG, no script, nothing fetched) so the
report can be mailed, attached to CI or opened from an artifact store.
Everything that came from the database goes through esc().
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html import escape as esc
from pathlib import Path

from sqlalchemy import case, select

from farm.facts import vendor_short
from farm.report import jitdiff
from farm.report.cell_axis import cell_label
from farm.report.health import Health, health
from farm.report.matrix import OUTCOMES, MatrixEntry, NotRun, kernel_key, matrix, unsupported
from farm.report.regressions import regressions
from farm.report.seeds import Difference, seed_differences
from farm.report.signatures import Where, bisection_text, bisections_of, is_infra, signatures, where
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
    page's /triage/ are both this (links relative: sig-<id>.html)."""
    sig_ids = {s.text: s.id for s in sigs}
    return (f"<h1>farm triage</h1><p class=muted>{store.run_count()} runs</p>"
            f"<h2>Matrix</h2>{_matrix(matrix(store))}"
            f"<h2>Not run</h2>{_not_run(unsupported(store))}"
            f"<h2>Lab health</h2>{_health(health(store), sig_ids)}"
            f"<h2>Regressions</h2>{_regressions(store, sig_ids)}"
            f"<h2>Seeds across kernels</h2>{_seeds(seed_differences(store), sig_ids)}"
            f"<h2>Bisections</h2>{_bisections(store.bisections())}"
            f"<h2>Signatures</h2>{_signatures(sigs, wheres)}"
            f"<h2>Throughput</h2>{_throughput(store)}")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    return (f"<table{f' class={cls}' if cls else ''}><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


# -- index ------------------------------------------------------------------------


def entry_text(entry: MatrixEntry) -> str:
    """'2/2 pass' when every run agreed, else the counts: '1 fail 1 pass'."""
    parts = [(o.replace("-", " "), entry.counts[o]) for o in ("fail", "error", "lost", "not-run", "pass")
             if entry.counts[o]]
    if len(parts) == 1:
        return f"{parts[0][1]}/{entry.runs} {parts[0][0]}"
    return " ".join(f"{n} {o}" for o, n in parts)


def _matrix(entries: list[MatrixEntry]) -> str:
    """A row per job, class and mitigation cell ("-": unknown), a column per kernel."""
    if not entries:
        return "<p>No runs.</p>"
    kernels = sorted({e.kernel for e in entries}, key=kernel_key)
    rows: dict[tuple[str, str, str, str], dict[str, MatrixEntry]] = {}
    for e in entries:
        rows.setdefault((e.job, vendor_short(e.vendor), e.hw_class, e.cell), {})[e.kernel] = e
    out, group = [], None
    for (job, vendor, cls, cell), by_kernel in sorted(rows.items()):
        if (job, vendor) != group:
            group = (job, vendor)
            out.append(f'<tr class=group><th colspan="{len(kernels) + 2}">{esc(job)} · {esc(vendor)}</th></tr>')
        label = next(iter(by_kernel.values())).cell_label
        tds = []
        for k in kernels:
            e = by_kernel.get(k)
            status, text = (e.status, entry_text(e)) if e else ("none", "–")
            title = "no runs"
            if e:  # the counts, the JIT paths the cell reached here, what could not run and why
                title = "; ".join(filter(None, [", ".join(f"{e.counts[o]} {o}" for o in OUTCOMES
                                                          if o != "not-run" or e.counts[o]),
                                                e.paths(), e.not_run_text()]))
            tds.append(f'<td class="entry s-{status}" data-hw-class="{esc(cls)}" data-kernel="{esc(k)}" '
                       f'data-cell="{esc(label)}" title="{esc(title)}">{esc(text)}</td>')
        out.append(f"<tr><th>{esc(cls)}</th><th class=cell-name>{esc(label)}</th>{''.join(tds)}</tr>")
    return ("<table class=matrix><tr><th>job · vendor / class</th><th>cell</th>"
            + "".join(f"<th>{esc(k)}</th>" for k in kernels) + "</tr>" + "".join(out) + "</table>")


def _not_run(found: list[NotRun]) -> str:
    """Per kernel, the topologies (and refuse checks) its runs could not run
    at all, with the kernel's own reason: neither a finding nor the lab's."""
    if not found:
        return "<p>Every topology ran on every kernel.</p>"
    rows = [f'<tr data-kernel="{esc(n.kernel)}"><td>{esc(n.kernel)}</td><td>{esc(n.topology)}</td>'
            f"<td class=reason>{esc(n.reason)}</td><td>{n.runs}</td><td>{esc(', '.join(n.hw_classes))}</td>"
            f"<td>{esc(', '.join(n.jobs))}</td></tr>" for n in found]
    return ("<p class=muted>What these kernels cannot run at all (no trampolines, lockdown, a missing "
            "kfunc), in their own words: not a kernel finding and not the lab's trouble.</p>"
            + _table(["kernel", "topology", "reason", "runs", "classes", "jobs"], rows, "not-run"))


def _health(lab: Health, sig_ids: dict[str, int]) -> str:
    """Lost and errored runs per host: the lab's trouble, not the kernel's
    (the kernel signatures they carried link to their pages)."""
    if not lab.hosts:
        return "<p>No runs.</p>"
    head = (f"<p class=health-summary>{esc(lab.summary())}. These are not kernel findings: "
            "the signature split and the regressions leave them out.</p>")
    classes = [f"<tr><td>{esc(c.hw_class)}</td><td>{c.hosts}</td><td>{c.runs}</td><td>{c.lost}</td>"
               f"<td>{c.errored}</td></tr>" for c in lab.by_class()]
    hosts = []
    for h in lab.hosts:
        problems = "<br>".join(
            f"{p.runs} {esc(p.outcome)}: {esc(p.text)} <span class=muted>(last {_when(p.last)}, "
            f"{esc(p.last_run)}, kernel {esc(', '.join(p.kernels))})</span>"
            + (f"; carried {', '.join(_sig_link(k, sig_ids) for k in p.kernel_findings)}"
               if p.kernel_findings else "")
            for p in h.problems) or "–"
        hosts.append(f'<tr data-host="{esc(h.hostname)}"><td>{esc(h.hw_class)}</td><td>{esc(h.hostname)}</td>'
                     f"<td>{h.runs}</td><td>{h.lost}</td><td>{h.errored}</td><td>{_when(h.last_problem)}</td>"
                     f"<td>{_when(h.last_seen)}</td><td class=problems>{problems}</td></tr>")
    infra = [f"<tr><td>#{s.id}</td><td>{esc(s.kind)}</td><td class=infra-sig>{esc(s.text)}</td>"
             f"<td>{s.count}</td><td>{_when(s.last_seen)}</td></tr>" for s in lab.infra_signatures]
    return (head + _table(["class", "hosts", "runs", "lost", "errored"], classes)
            + _table(["class", "host", "runs", "lost", "errored", "last problem", "last seen", "problems"],
                     hosts, "health")
            + ("<h3>Infrastructure signatures</h3>"
               + _table(["id", "kind", "signature", "count", "last seen"], infra) if infra else ""))


def _sig_link(text: str, sig_ids: dict[str, int]) -> str:
    sid = sig_ids.get(text)
    return f'<a href="sig-{sid}.html">{esc(text)}</a>' if sid else esc(text)


def _regressions(store: Store, sig_ids: dict[str, int]) -> str:
    cands = regressions(store)
    if not cands:
        return "<p>None.</p>"
    rows = [f"<tr><td>{esc(c.job)}</td><td>{esc(c.hw_class)}</td><td>{esc(cell_label(c.cell))}</td>"
            f"<td>{esc(c.previous_kernel)} → {esc(c.kernel)}</td><td>{esc(c.state)}</td>"
            f"<td>{esc(c.first_host)}</td><td>{esc(', '.join(c.retry_hosts)) or '–'}</td>"
            f"<td>{'<br>'.join(_sig_link(t, sig_ids) for t in c.signatures)}</td></tr>" for c in cands]
    return _table(["job", "class", "cell", "kernel", "state", "failed first on", "retried on", "signatures"], rows)


def _seeds(found: list[Difference], sig_ids: dict[str, int]) -> str:
    """Generated seeds that pass on one kernel (or cell) and fail on another:
    what the job-level regressions miss when other seeds fail everywhere."""
    if not found:
        return "<p>None: no generated seed passes on one kernel (or cell) and fails on another.</p>"
    rows = [f'<tr data-seed="{esc(d.label)}"><td>{esc(d.label)}</td><td>{esc(d.axis)}</td>'
            f"<td>{esc(d.within)}</td><td>{'<br>'.join(esc(p.text()) for p in d.passes)}</td>"
            f"<td>{'<br>'.join(esc(f.text()) for f in d.fails)}</td>"
            f"<td>{'<br>'.join(_sig_link(t, sig_ids) for f in d.fails for t in f.signatures)}</td></tr>"
            for d in found]
    return _table(["seed", "differs by", "within", "passes", "fails", "signatures"], rows, "seeds")


def _bisections(found: list[dict]) -> str:
    """Every stored bisection, newest first: running ones and their answers."""
    if not found:
        return "<p>None.</p>"
    rows = [f'<tr data-bisection="{b["id"]}"><td>{b["id"]}</td><td>{esc(b["status"])}</td>'
            f"<td>{esc(b['job'])}</td><td>{esc(b['direction'])}</td><td>{_when(b['created'])}</td>"
            f"<td class=bisect>{esc(bisection_text(b))}</td></tr>" for b in found]
    return _table(["id", "status", "job", "direction", "started", "answer"], rows, "bisections")


def _signatures(sigs: list[Signature], wheres: dict[int, Where]) -> str:
    if not sigs:
        return "<p>None.</p>"
    rows = [f'<tr><td>#{s.id}</td><td>{esc(s.status)}</td><td>{esc(s.kind)}</td>'
            f'<td><a href="sig-{s.id}.html">{esc(s.text)}</a></td><td>{s.count}</td>'
            f"<td>{_when(s.first_seen)}</td><td>{_when(s.last_seen)}</td>"
            f"<td>{esc(wheres[s.id].split())}</td></tr>" for s in sigs]
    return _table(["id", "status", "kind", "signature", "count", "first seen", "last seen", "where"], rows)


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "–"


# -- throughput plots -------------------------------------------------------------


def _throughput(store: Store) -> str:
    series: dict[str, list[tuple[datetime, float]]] = {}
    with store.session() as s:
        for cls, started, rate in s.execute(select(Run.hw_class, Run.started, Run.tail_calls_per_s)
                                            .where(Run.tail_calls_per_s > 0)
                                            .order_by(Run.hw_class, Run.started)):
            series.setdefault(cls, []).append((started, rate))
    if not series:
        return "<p>No measured runs.</p>"
    return "<div class=charts>" + "".join(line_chart(pts, f"{cls}: tail calls/s")
                                         for cls, pts in series.items()) + "</div>"


def line_chart(points: list[tuple[datetime, float]], title: str, w: int = 420, h: int = 180) -> str:
    """An SVG line chart of values over time, y from zero, one dot per run."""
    left, right, top, bottom = 56, 10, 24, 28
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0).total_seconds() or 1.0
    ymax = max(v for _, v in points) * 1.1 or 1.0

    def xy(t: datetime, v: float) -> tuple[float, float]:
        x = left + (w - left - right) * ((t - t0).total_seconds() / span if t1 > t0 else 0.5)
        return round(x, 1), round(h - bottom - (h - top - bottom) * v / ymax, 1)

    coords = [xy(t, v) for t, v in points]
    line = " ".join(f"{x},{y}" for x, y in coords)
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#1f5fbf"/>' for x, y in coords)
    base = h - bottom
    return (f'<svg width="{w}" height="{h}" role="img">'
            f'<title>{esc(title)}</title><rect width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>'
            f'<text x="{left}" y="16" font-size="12">{esc(title)}</text>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#888"/>'
            f'<line x1="{left}" y1="{base}" x2="{w - right}" y2="{base}" stroke="#888"/>'
            f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{_si(ymax)}</text>'
            f'<text x="{left - 4}" y="{base}" font-size="10" text-anchor="end">0</text>'
            f'<text x="{left}" y="{h - 8}" font-size="10">{_when(t0)}</text>'
            f'<text x="{w - right}" y="{h - 8}" font-size="10" text-anchor="end">{_when(t1)}</text>'
            f'<polyline points="{line}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>{dots}</svg>')


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
    """A kernel signature's page body (sig-<id>.html), static and live alike."""
    link = esc(sig.link or "–")
    if sig.link and sig.link.startswith(("https://", "http://")):
        link = f'<a href="{esc(sig.link)}">{link}</a>'  # never a javascript: URL
    facts = [("status", esc(sig.status)), ("link", link), ("note", esc(sig.note or "–")),
             ("kind", esc(sig.kind)), ("first seen", _when(sig.first_seen)),
             ("last seen", _when(sig.last_seen)), ("count", str(sig.count)),
             ("first kernel", esc(w.first_kernel or "–")), ("last kernel", esc(w.last_kernel or "–")),
             ("hosts", str(w.hosts)), ("where", f"<span class=split>{esc(w.split())}</span>")]
    facts += [("bisected", f"<span class=bisect>{esc(bisection_text(b))}</span>") for b in bisections_of(store, sig)]
    return (f'<p><a href="index.html">← triage</a></p><h1>#{sig.id} {esc(sig.text)}</h1>'
            + "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
            + "<h2>Kernel log</h2>" + _kmsg_section(store, sig)
            + "<h2>JIT disassembly</h2>" + _jit_section(jit_pair(store, sig)))


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


def _kmsg_section(store: Store, sig: Signature) -> str:
    sample = kmsg_sample(store, sig)
    if sample is None:
        return "<p>No kernel log kept for this signature's runs.</p>"
    run_id, text = sample
    lines = text.splitlines()
    more = f"\n… {len(lines) - KMSG_LINES} more lines" if len(lines) > KMSG_LINES else ""
    return (f"<p class=muted>from run {esc(run_id)}</p>"
            f"<pre class=kmsg>{esc(chr(10).join(lines[:KMSG_LINES]) + more)}</pre>")


def _jit_section(pair: JitPair | None) -> str:
    if pair is None:
        return ("<p class=nojit>No pair available: no passing run on another host kept a JIT "
                "listing of a program this signature's runs also kept.</p>")
    head = (f"<p>Program <b>{esc(pair.program)}</b>: passing {esc(pair.passing.label())} "
            f"against failing {esc(pair.failing.label())}.</p>")
    if not pair.lines:
        why = "the same jited_sha256" if pair.same_sha else "code that differs only in addresses"
        return head + f"<p class=nojit>Both hosts' JIT emitted {why}: no difference to show.</p>"
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    spans = "".join(f'<span class="{"file" if i < 2 else kinds.get(x[:1], "ctx")}">{esc(x)}\n</span>'
                    for i, x in enumerate(pair.lines))  # the first two: the --- / +++ header
    return head + f"<pre class=jitdiff>{spans}</pre>"


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
