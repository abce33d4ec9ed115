"""One report for a signature or a confirmed regression, in the shape
kernel developers know from syzbot and 0-day mails: a title, where it
happens, the evidence, first bad and last good when a bisection found
them, the command that reproduces it, and the dedup id. Both a plain-text
e-mail body and a JSON document (the webhook's) are made from one dict.

Reads the store only (signatures, findings, runs, facts, kept artifacts)
and, for the upstream version of a Debian kernel package, apt-cache (a
resolver a caller may replace)."""
from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass

from sqlalchemy import select

from farm.report.cell_axis import cell_label
from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.models import FactsSnapshot, Finding, Host, Run, Signature

SCHEMA = 1
CRASH_KINDS = {"kernel-oops", "kernel-bug", "kernel-warning", "lockup", "taint", "hang"}
OOPS_LINES = 40        # of the kernel's report, in the mail
JIT_DIFF_LINES = 80    # of the listing diff, in the mail (the JSON keeps all of it)
BISECT_LOG_LINES = 40
# a Debian kernel release: 6.1.0-57-amd64, 6.12.48+deb13-cloud-amd64
DEBIAN_RELEASE = re.compile(r"\d+\.\d+\.\d+(?:-\d+)?(?:\+deb\d+)?-(?:amd64|cloud-amd64|rt-amd64)")


@dataclass(frozen=True)
class Report:
    id: str                   # the dedup id: stable, from what the report is about
    subject: str              # signature | regression
    title: str
    text: str                 # the plain-text e-mail body
    document: dict            # the JSON document
    signature_id: int | None  # for the known check at delivery time


def dedup_id(*parts: str) -> str:
    """'farm-' and 16 hex digits of sha256 over the parts: the same
    signature text (or regression) gives the same id on every farm."""
    return "farm-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def signature_report_id(text: str) -> str:
    return dedup_id("signature", text)


def regression_report_id(job: str, hw_class: str, cell: str, kernel: str) -> str:
    return dedup_id("regression", job, hw_class, cell, kernel)


@functools.lru_cache(maxsize=256)
def apt_upstream(package: str) -> str | None:
    """The upstream release a Debian kernel package carries (apt-cache's
    candidate version, 6.1.192-1 -> 6.1.192); None when apt cannot say."""
    from farm.guests.kernels import parse_show, upstream_of
    try:
        out = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = parse_show(out).get(package)
    return upstream_of(version) if version else None


def kernel_package(release: str) -> str | None:
    """linux-image-<release> when the release is a Debian one, else None."""
    return f"linux-image-{release}" if DEBIAN_RELEASE.fullmatch(release or "") else None


# -- the bisection (its table comes with the bisection branch) ----------------------

def latest_bisection(store: Store, signature: str) -> dict | None:
    """The newest bisection of this signature that named a boundary: farm
    bisect's answer (docs/bisect.md: direction, boundary older first, each
    {package, upstream, version}, confidence, suspects {ranked, all}, log),
    or None."""
    for row in store.bisections(signature=signature):
        if row["status"] == "named":
            answer = store.bisection_answer(row["id"])
            if answer and answer.get("boundary"):
                return answer
    return None


# -- reading the store -----------------------------------------------------------

def _sample(store: Store, sig: Signature, *where) -> dict | None:
    """The newest finding of sig (among runs matching `where`) with its run
    and the host's facts then."""
    with store.session() as s:
        row = s.execute(
            select(Finding.kind, Finding.summary, Finding.detail, Finding.cpu, Run.run_id, Run.job,
                   Run.hw_class, Run.vendor, Run.kernel, Run.cell, Run.indirect_jump, Run.return_path,
                   Run.started, Host.hostname, FactsSnapshot.model_name, FactsSnapshot.family,
                   FactsSnapshot.model, FactsSnapshot.stepping, FactsSnapshot.microcode,
                   FactsSnapshot.spectre_v2)
            .join(Run, Run.run_id == Finding.run_id).join(Host, Host.id == Run.host_id)
            .join(FactsSnapshot, FactsSnapshot.id == Run.facts_id)
            .where(Finding.signature_id == sig.id, *where)
            .order_by(Run.started.desc(), Finding.id.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    try:
        out["detail"] = json.loads(out["detail"] or "{}")
    except ValueError:
        out["detail"] = {}
    if not isinstance(out["detail"], dict):
        out["detail"] = {}
    return out


def _where(sample: dict, upstream) -> dict:
    release = sample["kernel"]
    package = kernel_package(release)
    up = upstream(package) if package else None
    fms = "/".join("?" if sample[k] is None else str(sample[k]) for k in ("family", "model", "stepping"))
    cell = {"name": cell_label(sample["cell"]), "indirect_jump": sample["indirect_jump"] or None,
            "return": sample["return_path"] or None}
    return {"vendor": sample["vendor"], "hw_class": sample["hw_class"], "model_name": sample["model_name"],
            "family_model_stepping": fms, "microcode": sample["microcode"] or None, "host": sample["hostname"],
            "kernel": release, "package": package, "upstream": up, "spectre_v2": sample["spectre_v2"] or None,
            "cell": cell}


def _guest_cpu_model(hostname: str) -> str | None:
    """The QEMU CPU model of a virtual-lab guest (hostname vm-<model>)."""
    from farm.guests.qemu import CPU_MODELS
    if not hostname.startswith("vm-"):
        return None
    name = hostname[3:]
    return next((m for m in CPU_MODELS.values() if m.lower() == name), name)


def reproduce(sample: dict) -> dict:
    """The command that reproduces the finding: `farm lab run` in a guest
    of the same CPU model and packaged kernel when it came from the
    virtual lab (or the kernel is a Debian package), else `farm run` on a
    host of the same class and kernel; with the finding's own `reproduce`
    block (topology, fault, slots, CPU, repeat) when it has one."""
    block = sample["detail"].get("reproduce") if isinstance(sample["detail"].get("reproduce"), dict) else {}
    job = str(block.get("job") or sample["job"])
    job_file = f"jobs/{job}.yaml"
    cell = sample["cell"]
    cpu_model = _guest_cpu_model(sample["hostname"])
    package = kernel_package(sample["kernel"])
    if cpu_model and package:
        argv = ["farm", "lab", "run", job_file, "--cpu-model", cpu_model, "--kernel", f"deb:{package}"]
        if cell and cell not in ("default", "custom"):
            argv += ["--cell", cell]
        where = f"a guest of QEMU CPU model {cpu_model} booting {package}"
    else:
        argv = ["farm", "run", job_file]
        if cell and cell not in ("default", "custom"):
            argv += ["--cell", cell]
        where = f"a host of class {sample['hw_class']} running {sample['kernel']}"
        if package:
            where += f" (or: farm lab run {job_file} --cpu-model <a {sample['vendor']} QEMU model> " \
                     f"--kernel deb:{package})"
    focus = {k: block[k] for k in ("topology", "fault", "slots", "cpu", "repeat") if block.get(k) is not None}
    return {"command": " ".join(argv), "argv": argv, "where": where, "job": job, **focus}


def _evidence(store: Store, sig: Signature, sample: dict) -> dict:
    d = sample["detail"]
    ev: dict = {"kind": sample["kind"], "summary": sample["summary"], "run": sample["run_id"]}
    for k in ("expected", "observed", "allowed", "hook", "observed_target", "occurrences", "windows", "cpus"):
        if k in d:
            ev[k] = d[k]
    if sample["kind"] in CRASH_KINDS:
        from farm.report.html import kmsg_sample
        found = kmsg_sample(store, sig)
        if found:
            ev["oops"] = {"run": found[0], "lines": found[1].splitlines()[:200]}
    from farm.report.html import jit_pair
    pair = jit_pair(store, sig)
    if pair is None or not pair.lines:
        pair = _same_host_pair(store, sig, sample) or pair
    if pair is not None:
        ev["jit_diff"] = {"program": pair.program, "passing": _run_ref(pair.passing),
                          "failing": _run_ref(pair.failing), "same_code": not pair.lines, "lines": pair.lines}
    return ev


def _same_host_pair(store: Store, sig: Signature, sample: dict):
    """A JIT pair on the failing run's own host booted with another kernel
    (a virtual-lab guest of one CPU model is one host name whatever it
    boots): the HTML report pairs other hosts only; a maintainer wants
    the kernel that passed on the same CPU just as much."""
    from farm.report import jitdiff
    from farm.report.html import JitPair, RunRef, _listed
    runs = select(Run.run_id, Host.hostname, Run.hw_class, Run.kernel, Run.cell).join(Host, Host.id == Run.host_id)
    with store.session() as s:
        failing = s.execute(runs.where(Run.run_id == sample["run_id"])).first()
        passing = s.execute(runs.where(Host.hostname == sample["hostname"], Run.job == sample["job"],
                                       Run.outcome == "pass", Run.kernel != sample["kernel"])
                            .order_by(Run.started.desc()).limit(5)).all()
    cache: dict = {}
    for p in passing:
        a, b = _listed(store, p.run_id, cache), _listed(store, failing.run_id, cache)
        for name in sorted(set(a) & set(b), key=lambda n: (a[n] == b[n], n)):
            if a[name] is not None and a[name] == b[name]:
                continue
            lines = jitdiff.diff(store.artifact_text(p.run_id, f"{name}.S") or "",
                                 store.artifact_text(failing.run_id, f"{name}.S") or "",
                                 f"{p.hostname} {p.kernel} {name}", f"{failing.hostname} {failing.kernel} {name}")
            if lines:
                return JitPair(name, RunRef(*p), RunRef(*failing), lines, False)
    return None


def _run_ref(ref) -> dict:
    return {"run": ref.run_id, "host": ref.hostname, "hw_class": ref.hw_class, "kernel": ref.kernel,
            "cell": cell_label(ref.cell)}


# -- the reports -----------------------------------------------------------------

def signature_report(store: Store, sig: Signature, upstream=apt_upstream) -> Report | None:
    """The report of one kernel signature; None for an infrastructure one
    (a lost host is lab health) or one without a stored finding."""
    from farm.report.signatures import where
    if sig.kind in INFRA_KINDS:
        return None
    sample = _sample(store, sig)
    if sample is None:
        return None
    w = where(store, sig)
    rid = signature_report_id(sig.text)
    loc = _where(sample, upstream)
    doc = {
        "schema": SCHEMA, "id": rid, "subject": "signature",
        "title": f"farm: {sig.text} on {sample['hw_class']} / {sample['kernel']}",
        "signature": {"id": sig.id, "text": sig.text, "kind": sig.kind, "status": sig.status,
                      "count": sig.count, "hosts": w.hosts, "first_seen": sig.first_seen.isoformat(),
                      "last_seen": sig.last_seen.isoformat(), "first_kernel": w.first_kernel,
                      "last_kernel": w.last_kernel, "split": w.split()},
        "where": loc,
        "evidence": _evidence(store, sig, sample),
        "bisection": latest_bisection(store, sig.text),
        "reproduce": reproduce(sample),
    }
    return Report(rid, "signature", doc["title"], render_text(doc), doc, sig.id)


def regression_report(store: Store, cand, upstream=apt_upstream) -> Report | None:
    """The report of a confirmed regression (farm.report.regressions.Candidate
    in state `regression`), its evidence that of its first kernel signature."""
    with store.session() as s:
        sigs = list(s.scalars(select(Signature).where(Signature.text.in_(cand.signatures))
                              .order_by(Signature.id)))
    sigs = [x for x in sigs if x.kind not in INFRA_KINDS]
    if not sigs:
        return None
    main = sigs[0]
    sample = _sample(store, main, Run.job == cand.job, Run.hw_class == cand.hw_class,
                     Run.kernel == cand.kernel, Run.cell == cand.cell) or _sample(store, main)
    if sample is None:
        return None
    rid = regression_report_id(cand.job, cand.hw_class, cand.cell, cand.kernel)
    in_cell = f" in cell {cand.cell}" if cand.cell else ""
    doc = {
        "schema": SCHEMA, "id": rid, "subject": "regression",
        "title": f"farm: regression {cand.job} on {cand.hw_class}{in_cell} / {cand.kernel} "
                 f"({cand.previous_kernel} passed)",
        "regression": {"job": cand.job, "hw_class": cand.hw_class, "cell": cell_label(cand.cell),
                       "kernel": cand.kernel, "previous_kernel": cand.previous_kernel,
                       "first_host": cand.first_host, "retry_hosts": list(cand.retry_hosts),
                       "signatures": [x.text for x in sigs]},
        "signature": {"id": main.id, "text": main.text, "kind": main.kind, "status": main.status},
        "where": _where(sample, upstream),
        "evidence": _evidence(store, main, sample),
        "bisection": latest_bisection(store, main.text),
        "reproduce": reproduce(sample),
    }
    return Report(rid, "regression", doc["title"], render_text(doc), doc, main.id)


# -- the plain text --------------------------------------------------------------

def _fmt(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items())
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def render_text(doc: dict) -> str:
    """The e-mail body: plain text, lines under 100 columns but for quoted
    kernel and JIT lines, sections in a fixed order."""
    out: list[str] = []
    add = out.append
    if doc["subject"] == "regression":
        r = doc["regression"]
        add(f"farm found a regression: {r['job']} fails on {r['hw_class']} with {r['kernel']}, "
            f"where {r['previous_kernel']} passed (cell {r['cell']}).")
        add(f"It failed on {r['first_host']} and again on "
            f"{', '.join(r['retry_hosts']) or 'no other host'} (retry before regression).")
        add("")
        add("Signatures:")
        out.extend(f"  {x}" for x in r["signatures"])
    else:
        sig = doc["signature"]
        add(f"farm found a new signature: {sig['text']}")
        add(f"  kind {sig['kind']}; {sig['count']} finding(s) on {sig['hosts']} host(s); "
            f"first seen {sig['first_seen'][:16]} on {sig['first_kernel']}, last {sig['last_seen'][:16]} "
            f"on {sig['last_kernel']}")
        add(f"  {sig['split']}")
    w = doc["where"]
    cell = w["cell"]
    add("")
    add("Where:")
    add(f"  CPU:        {w['vendor']} {w['model_name']} (family/model/stepping {w['family_model_stepping']}), "
        f"class {w['hw_class']}")
    add(f"  microcode:  {w['microcode'] or '-'}")
    add(f"  kernel:     {w['kernel']}" + (f" (package {w['package']}" + (f", upstream {w['upstream']}"
                                                                          if w["upstream"] else "") + ")"
                                           if w["package"] else ""))
    add(f"  cell:       {cell['name']}" + (f" (indirect jump {cell['indirect_jump'] or '-'}, "
                                           f"return {cell['return'] or '-'})" if cell["name"] != "-" else
                                           " (unknown: run before cells existed)"))
    if w["spectre_v2"]:
        add(f"  spectre_v2: {w['spectre_v2']}")
    add(f"  host:       {w['host']}")
    ev = doc["evidence"]
    add("")
    add("Evidence:")
    add(f"  {ev['kind']}: {ev['summary']}")
    add(f"  run {ev['run']}")
    for k in ("expected", "observed", "allowed", "hook", "observed_target", "occurrences", "windows", "cpus"):
        if k in ev:
            add(f"  {(k + ':').ljust(11)} {_fmt(ev[k])}")
    if "oops" in ev:
        lines = ev["oops"]["lines"]
        add("")
        add(f"Kernel log (run {ev['oops']['run']}):")
        out.extend(f"  {x}" for x in lines[:OOPS_LINES])
        if len(lines) > OOPS_LINES:
            add(f"  ... {len(lines) - OOPS_LINES} more lines")
    jd = ev.get("jit_diff")
    if jd:
        add("")
        add(f"JIT listing of {jd['program']}: passing {jd['passing']['host']} ({jd['passing']['hw_class']}, "
            f"{jd['passing']['kernel']}, cell {jd['passing']['cell']}) against failing {jd['failing']['host']} "
            f"({jd['failing']['hw_class']}, {jd['failing']['kernel']}, cell {jd['failing']['cell']}):")
        if jd["same_code"]:
            add("  the same code on both (no difference in the emitted instructions)")
        out.extend(f"  {x}" for x in jd["lines"][:JIT_DIFF_LINES])
        if len(jd["lines"]) > JIT_DIFF_LINES:
            add(f"  ... {len(jd['lines']) - JIT_DIFF_LINES} more lines")
    b = doc.get("bisection")
    add("")
    if b:
        older, newer = b["boundary"]
        before, after = ("last good", "first bad") if b["direction"] == "introduced" else ("last bad", "first good")
        add(f"Bisection ({b['direction']} in {newer.get('package')}, confidence {b.get('confidence', '?')}):")
        add(f"  {before + ':':11} {older.get('package')} (upstream {older.get('upstream')})")
        add(f"  {after + ':':11} {newer.get('package')} (upstream {newer.get('upstream')})")
        ranked = ((b.get("suspects") or {}).get("ranked") or []) if isinstance(b.get("suspects"), dict) else []
        if ranked:
            add("  suspects:")
            out.extend(f"    {x.get('text')}" for x in ranked[:10] if isinstance(x, dict))
        log = b.get("log")
        lines = log.splitlines() if isinstance(log, str) else [str(x) for x in log or ()]
        if lines:
            add("  log:")
            out.extend(f"    {x}" for x in lines[:BISECT_LOG_LINES])
    else:
        add("Bisection: none yet (farm bisect JOB --good deb:PKG --bad deb:PKG)")
    rep = doc["reproduce"]
    add("")
    add("Reproduce:")
    add(f"  {rep['command']}")
    add(f"  on {rep['where']}")
    focus = [f"{k} {rep[k]}" for k in ("topology", "fault", "slots", "cpu", "repeat") if k in rep]
    if focus:
        add(f"  the finding: {', '.join(focus)}")
    add("")
    add(f"Dedup id: {doc['id']}")
    add("Reply or file with this id: farm reports it once; the same id is the same report.")
    return "\n".join(out) + "\n"
