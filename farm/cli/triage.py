"""The results database from the command line: ingest, triage, report, gc."""
from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path

from farm.errors import EXIT_FINDINGS, EXIT_PASS, BadInput
from farm.result import READABLE_SCHEMAS

_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
STATUS_STYLE = {"pass": "green", "fail": "red", "flaky": "yellow", "lost": "magenta", "error": "blue",
                "not-run": "cyan"}


def add_commands(sub) -> None:
    ing = sub.add_parser("ingest", help="add result JSON files (from farm run --json) to the database")
    ing.add_argument("files", nargs="+", type=Path)
    ing.add_argument("--artifacts", type=Path, metavar="DIR",
                     help="the run's artifacts dir (default: the result file's dir if it holds them)")
    ing.set_defaults(handler=_ingest)
    tr = sub.add_parser("triage", help="job x hw_class x kernel x cell matrix, signatures, regressions, "
                                       "generated seeds across kernels, lab health")
    tr.add_argument("view", nargs="?", default="matrix",
                    choices=("matrix", "regressions", "signatures", "seeds", "health"))
    tr.add_argument("--signature", metavar="S", help="where a signature occurs (#id, text or a fragment)")
    tr.add_argument("--job")
    tr.add_argument("--cell", metavar="NAME",
                    help="matrix, regressions and seeds: only runs of this mitigation cell "
                         "('-': unknown, before cells)")
    tr.add_argument("--hw-class", metavar="C", help="matrix, regressions and seeds: only runs of this class")
    tr.add_argument("--all", action="store_true",
                    help="seeds: every seed's outcome per kernel, not only the seeds that differ")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--known", type=Path, metavar="FILE", help="signatures: load a known-issues YAML first")
    tr.add_argument("--mark", metavar="ID=STATUS", help="signatures: set a status (open, fixed, known)")
    tr.add_argument("--retry", action="store_true",
                    help="regressions: submit each awaiting candidate to another host of its class")
    tr.add_argument("--jobs-dir", type=Path, default=Path("jobs"), help="with --retry: where job specs are")
    tr.set_defaults(handler=_triage)
    rp = sub.add_parser("report", help="HTML pages and/or JUnit XML from the database; "
                                       "`report send` / `report outbox`: reports of new signatures and regressions")
    rp.add_argument("action", nargs="?", choices=("send", "outbox"),
                    help="send: deliver the report outbox (loops; --once: one pass); "
                         "outbox: list the reports, pending and sent")
    rp.add_argument("--once", action="store_true", help="send: one attempt at every pending report, then exit")
    rp.add_argument("--state", choices=("pending", "sent", "suppressed"), help="outbox: only this state")
    rp.add_argument("--json", action="store_true", help="outbox: as JSON")
    rp.add_argument("--html", type=Path, metavar="DIR")
    rp.add_argument("--junit", type=Path, metavar="FILE")
    rp.add_argument("--submission", help="JUnit: only this submission's runs")
    rp.add_argument("--job", help="JUnit: only this job's runs")
    rp.set_defaults(handler=_report)
    gc = sub.add_parser("gc", help="drop old artifacts (signatures and counts kept) and trim the lab's kernel cache")
    gc.add_argument("--older-than", default="90d", metavar="AGE",
                    help="e.g. 90d, 12w (default 90d): older runs' artifacts, kernels unused for longer")
    gc.set_defaults(handler=_gc)


def _store():
    from farm.store import open_store
    return open_store()


def parse_age(text: str) -> timedelta:
    m = _AGE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise BadInput(f"--older-than: {text!r} is not an age (use e.g. 90d, 12w, 48h)")
    return timedelta(seconds=int(m.group(1)) * _AGE_UNITS[m.group(2)])


def _read_results(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not JSON ({e})") from None
    items = data if isinstance(data, list) else [data]
    for i, r in enumerate(items):
        if not isinstance(r, dict) or r.get("schema") not in READABLE_SCHEMAS \
                or not isinstance(r.get("run_id"), str) or not isinstance(r.get("host"), dict):
            raise BadInput(f"{path}: item {i} is not a farm result of schema "
                           f"{' or '.join(map(str, READABLE_SCHEMAS))}")
    return items


def _ingest(args) -> int:
    items = []
    for path in args.files:
        art = args.artifacts or (path.parent if (path.parent / "facts.json").exists() else None)
        items += [(r, r.get("submission"), art) for r in _read_results(path)]
    added = _store().add_many(items)
    print(f"farm ingest: {added} new of {len(items)} results ({len(items) - added} already stored)")
    return EXIT_PASS


_PER_RUN_VIEWS = ("matrix", "regressions", "seeds")


def _cell_filter(args) -> str | None:
    """--cell as the stored value ("" for '-', unknown), None when not given."""
    from farm.report.cell_axis import stored_cell
    # said, rather than ignored: a filter that does nothing would mislead
    if args.all and (args.signature or args.view != "seeds"):
        raise BadInput("--all: only the seeds view has more rows to show")
    if args.hw_class is not None and (args.signature or args.view not in _PER_RUN_VIEWS):
        raise BadInput("--hw-class: only the matrix, the regressions and the seeds are per class")
    if args.cell is None:
        return None
    if args.signature or args.view not in _PER_RUN_VIEWS:
        raise BadInput("--cell: only the matrix, the regressions and the seeds are per cell")
    return stored_cell(args.cell)


def _triage(args) -> int:
    cell = _cell_filter(args)  # a bad name is exit 2 before the database opens
    store = _store()
    if args.signature:
        return _signature(store, args)
    if args.view == "regressions":
        return _regressions(store, args, cell)
    if args.view == "seeds":
        return _seeds(store, args, cell)
    if args.view == "signatures":
        return _signatures(store, args)
    if args.view == "health":
        return _health(store, args)
    from farm.report.matrix import matrix, unsupported
    entries = matrix(store, args.job, args.hw_class, cell=cell)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return EXIT_PASS
    if not entries:
        print("no runs stored yet" if cell is None else f"no runs in cell {args.cell}")
        return EXIT_PASS
    from rich.console import Console
    from rich.table import Table
    t = Table(title="job x hw_class x kernel x cell")
    # not-run runs have no column of their own (80 columns fit as they are):
    # the status says "not run", the list below the table how many and why
    counted = ("pass", "fail", "lost", "error")
    for col in ("job", "hw_class", "kernel", "cell", "status", *counted):
        t.add_column(col, justify="right" if col in counted else "left", no_wrap=col == "status")
    for e in entries:
        style, shown = STATUS_STYLE.get(e.status, ""), e.status.replace("-", " ")
        t.add_row(e.job, e.hw_class, e.kernel, e.cell_label, f"[{style}]{shown}[/]" if style else shown,
                  *(str(e.counts[k]) for k in counted))
    console = Console()
    console.print(t)
    _not_run(console, unsupported(store, args.job, args.hw_class, cell=cell))
    from farm.report.health import health
    lab = health(store, args.job)
    if lab.lost or lab.errored:
        print(f"{lab.summary()} (not kernel findings; see `farm triage health`)")
    return EXIT_PASS


def _not_run(console, found) -> None:
    """Per kernel, what its runs could not run at all and the kernel's own
    reason, each line wrapped to the terminal."""
    import textwrap
    if not found:
        return
    print("not run (the kernel cannot run it: no kernel finding, no lab trouble):")
    kernel = None
    for n in found:
        if n.kernel != kernel:
            kernel = n.kernel
            print(f"  kernel {kernel}:")
        text = (f"{n.topology} ({n.runs} run{'s' if n.runs != 1 else ''} on {', '.join(n.hw_classes)}): "
                f"{n.reason}")
        print(textwrap.fill(text, width=max(console.width, 40), initial_indent="    ",
                            subsequent_indent="      ", break_on_hyphens=False))


def _health(store, args) -> int:
    from farm.report.health import health
    lab = health(store, args.job)
    if args.json:
        print(json.dumps(lab.to_dict(), indent=2))
        return EXIT_PASS
    if not lab.hosts:
        print("no runs stored yet")
        return EXIT_PASS
    from rich.console import Console
    from rich.table import Table
    t = Table(title=lab.summary())  # each problem's last time follows, one line each: 80 columns fit
    for col in ("hw_class", "host", "runs", "lost", "errored", "last seen"):
        t.add_column(col, justify="right" if col in ("runs", "lost", "errored") else "left", no_wrap=True)
    for h in lab.hosts:
        t.add_row(h.hw_class, h.hostname, str(h.runs), _count(h.lost, "lost"), _count(h.errored, "error"),
                  _when(h.last_seen))
    console = Console()
    console.print(t)
    for h in lab.hosts:
        for p in h.problems:
            crash = f"; carried {', '.join(p.kernel_findings)}" if p.kernel_findings else ""
            console.print(f"{h.hostname}: {p.runs} {p.outcome} (last {_when(p.last)}, {p.last_run}, "
                          f"kernel {', '.join(p.kernels)}): {p.text}{crash}", markup=False, highlight=False)
    for sig in lab.infra_signatures:
        print(f"infrastructure signature #{sig.id} {sig.text}: {sig.count} findings, last {_when(sig.last_seen)}")
    return EXIT_PASS


def _count(n: int, outcome: str) -> str:
    style = STATUS_STYLE[outcome]
    return f"[{style}]{n}[/]" if n else "0"


def _when(t) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "–"


def _sig_json(s) -> dict:
    return {"id": s.id, "signature": s.text, "kind": s.kind, "status": s.status, "count": s.count,
            "first_seen": s.first_seen.isoformat(), "last_seen": s.last_seen.isoformat(),
            "link": s.link, "note": s.note}


def _signature(store, args) -> int:
    from farm.report.signatures import bisection_text, bisections_of, find_signature, where
    w = where(store, find_signature(store, args.signature))
    sig = w.signature
    bisected = bisections_of(store, sig)
    if args.json:
        print(json.dumps({**_sig_json(sig), "first_kernel": w.first_kernel, "last_kernel": w.last_kernel,
                          "hosts": w.hosts, "infra": w.infra, "split": w.split(),
                          "classes": [c.__dict__ for c in w.classes],
                          "cells": [{"cell": c.label, "hits": c.hits, "runs": c.runs} for c in w.cells],
                          "only_cells": [c.label for c in w.only_cells],
                          "bisections": [{**b, "created": b["created"].isoformat(), "text": bisection_text(b)}
                                         for b in bisected]},
                         indent=2))
        return EXIT_PASS
    print(f"#{sig.id} {sig.text}  [{sig.status}]" + (f"  {sig.link}" if sig.link else ""))
    print(f"  {w.split()}")
    print(f"  {sig.count} findings on {w.hosts} hosts; first seen {sig.first_seen:%Y-%m-%d %H:%M} "
          f"on {w.first_kernel}, last {sig.last_seen:%Y-%m-%d %H:%M} on {w.last_kernel}")
    if sig.note:
        print(f"  note: {sig.note}")
    for b in bisected:
        print(f"  {bisection_text(b)}")
    return EXIT_PASS


def _signatures(store, args) -> int:
    from farm.report.signatures import is_infra, signatures
    if args.known:
        from farm.store.known import load_known
        n = store.load_known(load_known(args.known))
        print(f"known issues loaded from {args.known}: {n} signatures marked known")
    if args.mark:
        ref, _, status = args.mark.partition("=")
        if not ref.lstrip("#").isdigit() or not status:
            raise BadInput("--mark: use ID=STATUS, e.g. 3=fixed")
        store.set_status(int(ref.lstrip("#")), status)
    every = signatures(store)
    sigs = [s for s in every if not is_infra(s)]  # a lost host is lab health, not a kernel signature
    if args.json:
        print(json.dumps([_sig_json(s) for s in sigs], indent=2))
        return EXIT_PASS
    for s in sigs:
        print(f"#{s.id:<4} {s.status:6} {s.count:6}  {s.last_seen:%Y-%m-%d}  {s.text}")
    infra = [s.text for s in every if is_infra(s)]
    if infra:
        print(f"(and {len(infra)} infrastructure signatures, {', '.join(infra)}: see `farm triage health`)")
    return EXIT_PASS


def _regressions(store, args, cell: str | None) -> int:
    from farm.report.cell_axis import cell_label
    from farm.report.regressions import regressions
    found = regressions(store, args.job, args.hw_class, cell=cell)
    if args.retry:
        from farm.queue.retry import retry_awaiting
        for line in retry_awaiting(found, args.jobs_dir):
            print(line, file=sys.stderr if args.json else sys.stdout)  # --json: stdout is JSON only
    if args.json:
        print(json.dumps([c.to_dict() for c in found], indent=2))
    else:
        if not found:
            print("no regressions: no class fails a job, in a cell, that its previous kernel passed there")
        for c in found:
            retry = f"retried on {', '.join(c.retry_hosts)}" if c.retry_hosts else "no retry yet"
            print(f"{c.state:15} {c.job} on {c.hw_class} in cell {cell_label(c.cell)}: {c.previous_kernel} "
                  f"passed, {c.kernel} failed on {c.first_host}; {retry}")
            for s in c.signatures:
                print(f"{'':15}   {s}")
    return EXIT_FINDINGS if any(c.state == "regression" for c in found) else EXIT_PASS


def _seeds(store, args, cell: str | None) -> int:
    """Generated seeds that pass on one kernel (or cell) and fail on another;
    --all: every seed per kernel, cell and class. Exit 1 when a seed differs."""
    from farm.report.seeds import differences, seed_entries
    entries = seed_entries(store, args.job, args.hw_class, cell)
    found = differences(entries)
    code = EXIT_FINDINGS if found else EXIT_PASS
    if args.json:
        out = {"differences": [d.to_dict() for d in found]}
        if args.all:
            out["seeds"] = [e.to_dict() for e in entries]
        print(json.dumps(out, indent=2))
        return code
    if not entries:
        print("no generated seeds stored" + (" for these filters" if args.job or args.hw_class or cell is not None
                                             else ""))
        return code
    if args.all:
        _seed_rows(entries)
    if not found:
        print(f"no differences: no seed of {len({e.label for e in entries})} passes on one kernel "
              "(or cell) and fails on another")
    for d in found:
        print(d.text())
    return code


def _seed_rows(entries) -> None:
    """One plain line per seed, kernel, cell and class, columns as wide as
    their longest value (a table of kernel names does not fit 80 columns)."""
    from farm.report.cell_axis import cell_label
    cols = [(e.label, e.kernel, cell_label(e.cell), e.hw_class) for e in entries]
    widths = [max(len(c[i]) for c in cols) for i in range(4)]
    for e, c in zip(entries, cols):
        counts = " ".join(f"{n} {o}" for o, n in (("fail", e.failed), ("pass", e.passed), ("not run", e.not_run)) if n)
        why = ", ".join(sorted(e.kinds)) if e.failed else "; ".join(sorted(e.reasons))
        print("  ".join(v.ljust(w) for v, w in zip(c, widths))
              + f"  {e.outcome.replace('-', ' '):7} ({counts}{': ' + why if why else ''})")


def _report(args) -> int:
    if args.action == "send":
        return _report_send(args)
    if args.action == "outbox":
        return _report_outbox(args)
    if args.once or args.state or args.json:
        raise BadInput("report: --once goes with `report send`, --state and --json with `report outbox`")
    if not args.html and not args.junit:
        raise BadInput("report: give --html DIR and/or --junit FILE")
    store = _store()
    if args.html:
        from farm.report.html import render
        print(f"farm report: {render(store, args.html)}")
    if args.junit:
        from farm.report.junit import write_junit
        write_junit(store, args.junit, submission=args.submission, job=args.job)
        print(f"farm report: {args.junit}")
    return EXIT_PASS


def _report_send(args) -> int:
    """Deliver the outbox: one pass (--once: every pending report once,
    backoff or not; exit 3 when some delivery failed) or a loop until
    interrupted (what the collector's thread does)."""
    import threading
    from farm.errors import EXIT_INFRA
    from farm.notify.sender import drain, send_forever
    from farm.notify.settings import configured, delivery
    if args.state or args.json or args.html or args.junit:
        raise BadInput("report send: takes --once only")
    d = configured(delivery())  # bad or missing config: exit 2 before the database opens
    store = _store()
    say = lambda line: print(f"farm report: {line}", flush=True)  # noqa: E731
    if args.once:
        done = drain(store, d, force=True, say=say)
        print(f"farm report: {done['sent']} sent, {done['failed']} failed (kept, retried later), "
              f"{done['suppressed']} suppressed (signature known)")
        return EXIT_INFRA if done["failed"] else EXIT_PASS
    stop = threading.Event()
    try:
        send_forever(store, d, stop, say=say)
    except KeyboardInterrupt:
        stop.set()
    return EXIT_PASS


def _report_outbox(args) -> int:
    from farm.notify.outbox import rows
    if args.once or args.html or args.junit:
        raise BadInput("report outbox: takes --state and --json only")
    found = rows(_store(), args.state)
    if args.json:
        print(json.dumps([r.to_dict() for r in found], indent=2))
        return EXIT_PASS
    if not found:
        print("the report outbox is empty" + (f" ({args.state})" if args.state else ""))
        return EXIT_PASS
    for r in found:
        when = f"sent {r.sent_at:%Y-%m-%d %H:%M}" if r.state == "sent" else \
            f"next try {r.next_try:%Y-%m-%d %H:%M:%S}" if r.state == "pending" else r.state
        print(f"{r.report_id}  {r.channel:7} {r.state:10} {r.attempts} tries  {when}  {r.title}")
        if r.last_error:
            print(f"{'':24}last: {r.last_error}")
    return EXIT_PASS


def _gc(args) -> int:
    from farm.config import kernel_cache_max
    age = parse_age(args.older_than)
    cap = kernel_cache_max()  # a bad cap is refused before anything is removed
    done = _store().gc(age)
    print(f"farm gc: runs started before {done['cutoff']}: {done['artifacts_removed']} artifacts removed, "
          f"{done['results_trimmed']} raw results trimmed; signatures and counts kept")
    _gc_kernels(cap, age.total_seconds())
    return EXIT_PASS


def _gc_kernels(cap: int, unused_for_s: float) -> None:
    from farm.guests import kcache
    removed, kept = kcache.gc(cap, unused_for_s)
    print(f"farm gc: kernel cache {kcache.kernels_dir()} (cap {kcache.human(cap)}): "
          f"removed {len(removed)} ({kcache.human(sum(d.bytes for d in removed))}), "
          f"kept {len(kept)} ({kcache.human(sum(d.bytes for d in kept))})")
    for verb, decisions in (("removed", removed), ("kept", kept)):
        for d in decisions:
            print(f"  {verb:7} {d.name:48} {kcache.human(d.bytes):>10}  {d.why}")
