"""Runs as JUnit XML, so a CI system shows a submission's (or a job's) runs
as tests: one testsuite per job, one testcase per run, its classname
job.hw_class.cell so CI groups runs by class and mitigation cell ("-": the
run predates cells and its cell is unknown). A not-run run (its kernel could
not run some topology at all, and nothing else went wrong) is <skipped>
with the kernel's reason, neither a failure nor an error."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from sqlalchemy import select

from farm.report.cell_axis import cell_label
from farm.store import Store
from farm.store.models import Finding, Host, Run, Signature


def write_junit(store: Store, path: Path, submission: str | None = None, job: str | None = None) -> Path:
    """Write the runs of a submission and/or job (all runs if neither)."""
    q = (select(Run.run_id, Run.job, Run.hw_class, Run.kernel, Run.cell, Run.outcome, Run.duration_s,
                Run.error, Host.hostname)
         .join(Host, Host.id == Run.host_id).order_by(Run.job, Run.started, Run.run_id))
    if submission:
        q = q.where(Run.submission_id == submission)
    if job:
        q = q.where(Run.job == job)
    with store.session() as s:
        runs = s.execute(q).all()
        found: dict[str, list[tuple[str, str]]] = {}
        for run_id, text, summary in s.execute(
                select(Finding.run_id, Signature.text, Finding.summary)
                .join(Signature, Signature.id == Finding.signature_id)
                .where(Finding.run_id.in_(q.with_only_columns(Run.run_id).order_by(None)))
                .order_by(Finding.id)):
            found.setdefault(run_id, []).append((text, summary))
    root = ET.Element("testsuites")
    suites: dict[str, ET.Element] = {}
    for r in runs:
        suite = suites.get(r.job)
        if suite is None:
            suite = suites[r.job] = ET.SubElement(root, "testsuite", name=r.job)
        cell = cell_label(r.cell)
        case = ET.SubElement(suite, "testcase", classname=f"{r.job}.{r.hw_class}.{cell}",
                             name=f"{r.hostname} {r.kernel} {cell} {r.run_id}", time=f"{r.duration_s:.3f}")
        _outcome(case, r, found.get(r.run_id, []))
    for suite in [*suites.values(), root]:
        _count(suite)
    path = Path(path)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _outcome(case: ET.Element, run, findings: list[tuple[str, str]]) -> None:
    sigs = "; ".join(dict.fromkeys(t for t, _ in findings))  # each signature once, in order
    details = "\n".join(summary for _, summary in findings) or run.error
    if run.outcome == "fail":
        ET.SubElement(case, "failure", message=sigs or "fail", type="fail").text = details
    elif run.outcome == "lost":
        # the run never finished: its test errored, it did not fail
        ET.SubElement(case, "error", message=sigs or "host lost", type="lost").text = details
    elif run.outcome == "not-run":
        ET.SubElement(case, "skipped", message=run.error or "not run")
    elif run.outcome != "pass":
        ET.SubElement(case, "error", message=run.error or sigs or run.outcome, type="error").text = details


def _count(el: ET.Element) -> None:
    """tests/failures/errors/skipped/time of a testsuite (or of all, for the root)."""
    cases = list(el.iter("testcase"))
    el.set("tests", str(len(cases)))
    el.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    el.set("errors", str(sum(c.find("error") is not None for c in cases)))
    el.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    el.set("time", f"{sum(float(c.get('time')) for c in cases):.3f}")
