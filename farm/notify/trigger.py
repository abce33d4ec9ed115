"""What a stored result brings to report: each kernel signature it carries
that has no report yet and is not `known`, and each regression it confirms
(farm.report.regressions: state `regression`, on the result's own job,
class, cell and kernel). Composed and queued in the outbox once per
channel; a signature or regression reported before is never composed again."""
from __future__ import annotations

from sqlalchemy import select

from farm.notify import compose, outbox
from farm.result import INFRA_KINDS
from farm.store import Store
from farm.store.ingest import cell_columns, signature_key
from farm.store.models import Signature


def reports_for_result(store: Store, result: dict, channels, upstream=compose.apt_upstream) -> list[str]:
    """Queue the reports this (stored) result brings; their report ids."""
    channels = tuple(channels)
    if not channels:
        return []
    queued = []
    keys = sorted({signature_key(f.get("signature", "")) for f in result.get("findings", ())
                   if f.get("kind") not in INFRA_KINDS})
    if keys:
        with store.session() as s:
            sigs = list(s.scalars(select(Signature).where(Signature.text.in_(keys))))
        for sig in sigs:
            if sig.status == "known" or sig.kind in INFRA_KINDS:
                continue
            rid = compose.signature_report_id(sig.text)
            if set(channels) <= outbox.queued(store, rid):
                continue
            report = compose.signature_report(store, sig, upstream)
            if report and outbox.enqueue(store, report, channels):
                queued.append(rid)
    if result.get("verdict") == "fail" and keys:
        queued += _regressions(store, result, channels, upstream)
    return queued


def _regressions(store: Store, result: dict, channels, upstream) -> list[str]:
    from farm.report.regressions import regressions
    host = result.get("host") or {}
    cell = cell_columns(host)["cell"]
    out = []
    for cand in regressions(store, result.get("job"), host.get("hw_class"), cell):
        if cand.state != "regression" or cand.kernel != host.get("kernel"):
            continue
        rid = compose.regression_report_id(cand.job, cand.hw_class, cand.cell, cand.kernel)
        if set(channels) <= outbox.queued(store, rid):
            continue
        with store.session() as s:
            statuses = set(s.scalars(select(Signature.status).where(Signature.text.in_(cand.signatures))))
        if statuses and statuses <= {"known"}:
            continue  # every signature it fails with is a known issue
        report = compose.regression_report(store, cand, upstream)
        if report and outbox.enqueue(store, report, channels):
            out.append(rid)
    return out
