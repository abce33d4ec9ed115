"""A lab's history made from real engine results (tests/fixtures/results,
written by `farm run` on this farm's own machines), edited to stand for
several hosts, classes and kernels.

    kernel 6.1.0-56-amd64: every host passes.
    kernel 6.6.7:
      amd-zen4       zen4-a fails with the arraymap kernel BUG, zen4-b (the
                     retry) fails the same way            -> regression
      amd-zen2       zen2-a fails tail-call-count, zen2-b passes -> flaky
      intel-icelake  both pass; icx-a is also lost once (a host-lost finding:
                     the lab's trouble, not the kernel's)
      intel-skylake  skl-a fails (a page fault), no other host yet      -> awaiting retry

None of those results has a mitigation cell (they predate cells). The cell
lab (cell_history) is the same job in two cells, default and lfence, on
amd-zen4 and intel-icelake: everything passes on the old kernel, and on the
new one every lfence run fails with the arraymap kernel BUG while every
default run passes -> a regression of the lfence cell only, on both vendors.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from farm.detect.kmsg import parse_records
from farm.detect.signature import classify
from farm.facts import hw_class
from farm.queue.lost import lost_result
from farm.result import Finding

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
JOB = "tailcall-subprog-stress"
OLD, NEW = "6.1.0-56-amd64", "6.6.7"
T0 = datetime(2026, 9, 1, tzinfo=timezone.utc)

CPUS = {  # vendor, family, model, stepping, name
    "zen4": ("AuthenticAMD", 25, 17, 1, "AMD EPYC 9654 96-Core Processor"),
    "zen2": ("AuthenticAMD", 23, 49, 0, "AMD EPYC 7702 64-Core Processor"),
    "icx": ("GenuineIntel", 6, 106, 6, "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"),
    "skl": ("GenuineIntel", 6, 85, 4, "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz"),
}
HOSTS = ["zen4-a", "zen4-b", "zen2-a", "zen2-b", "icx-a", "icx-b", "skl-a"]


def base(name: str) -> dict:
    return json.loads((FIXTURES / "results" / f"{name}.json").read_text())


def host_facts(hostname: str, kernel: str) -> dict:
    vendor, family, model, stepping, model_name = CPUS[hostname.split("-")[0]]
    return {"hostname": hostname, "vendor": vendor, "family": family, "model": model,
            "stepping": stepping, "model_name": model_name, "microcode": "0x1000065",
            "kernel": kernel, "spectre_v2": "Mitigation: Retpolines",
            "hw_class": hw_class(vendor, family, model, stepping)}


def kernel_finding(fixture: str = "kernel-bug-arraymap") -> dict:
    """The real classifier's finding for a kernel-log fixture."""
    records = parse_records((FIXTURES / "kmsg" / f"{fixture}.kmsg").read_text())
    finding = classify(records)[0]
    return {"kind": finding.kind, "signature": finding.signature, "summary": finding.summary,
            "cpu": finding.cpu, "at": finding.at, "detail": finding.detail}


def variant(src: dict, hostname: str, kernel: str, at: datetime, n: int, findings=None,
            facts: dict | None = None) -> dict:
    r = copy.deepcopy(src)
    r["run_id"] = f"{JOB}-{kernel}-{hostname}-{n}"
    r["job"] = JOB
    r["submission"] = f"s-{kernel}-{n}"
    r["host"] = {**facts, "hostname": hostname, "kernel": kernel} if facts else host_facts(hostname, kernel)
    r["started"] = at.isoformat(timespec="milliseconds")
    if findings is not None:
        r["findings"] = findings
        r["verdict"] = "fail" if findings else "pass"
    return r


def history() -> list[dict]:
    ok, short = base("pass"), base("fail-tail-call-count")
    out, n = [], 0
    at = T0
    for h in HOSTS:                       # the old kernel: all pass
        n += 1
        out.append(variant(ok, h, OLD, at + timedelta(minutes=n), n))
    at = T0 + timedelta(days=7)
    plan = [("zen4-a", [kernel_finding()]), ("zen4-b", [kernel_finding()]),
            ("zen2-a", None), ("zen2-b", []), ("icx-a", []), ("icx-b", []),
            ("skl-a", [kernel_finding("pagefault-bpf-prog")])]
    for h, findings in plan:
        n += 1
        src = short if findings is None else ok
        out.append(variant(src, h, NEW, at + timedelta(minutes=n), n, findings))
    n += 1
    out.append(lost("icx-a", NEW, at + timedelta(minutes=n), n))
    return out


def lost(hostname: str, kernel: str, at: datetime, n: int, why: str = "heartbeat stopped",
         crash: list[dict] = ()) -> dict:
    """The collector's host-lost result, after the kernel findings of the
    crash that took the host down (a guest's console, say)."""
    return lost_result({"run_id": f"{JOB}-{kernel}-{hostname}-{n}", "job": JOB, "submission": f"s-{kernel}-{n}",
                        "started": at.isoformat()},
                       host_facts(hostname, kernel), why, [Finding(**f) for f in crash])


def errored(hostname: str, kernel: str, at: datetime, n: int, error: str, findings: list[dict] = ()) -> dict:
    """A run that ended in farm's own failure (verdict error, what broke in
    `error`), keeping the findings it had made by then, as the engine does."""
    r = variant(base("pass"), hostname, kernel, at, n, list(findings))
    r["error"] = error
    r["verdict"] = "error"
    return r


# host.cell as a farm with mitigation cells writes it (jobs/cells.yaml), still schema 1
CELLS = {
    "default": {"cmdline": "", "indirect_jump": "retpoline", "return": "return-thunk",
                "vulnerabilities": {"spectre_v2": "Mitigation: Retpolines"}},
    "lfence": {"cmdline": "spectre_v2=retpoline,lfence", "indirect_jump": "lfence", "return": "srso",
               "vulnerabilities": {"spectre_v2": "Mitigation: LFENCE"}},
}
CELL_HOSTS = ["zen4-a", "zen4-b", "icx-a", "icx-b"]


def in_cell(result: dict, name: str) -> dict:
    """The result as run in mitigation cell `name` (a run id of its own)."""
    r = copy.deepcopy(result)
    cell = CELLS[name]
    r["run_id"] = f"{r['run_id']}-{name}"
    r["host"]["cell"] = {"name": name, "requested": name != "default", **copy.deepcopy(cell)}
    r["host"]["spectre_v2"] = cell["vulnerabilities"]["spectre_v2"]
    return r


def cell_history() -> list[dict]:
    ok, out, n = base("pass"), [], 0
    for kernel, at in ((OLD, T0), (NEW, T0 + timedelta(days=7))):
        for h in CELL_HOSTS:
            for name in CELLS:
                n += 1
                fails = kernel == NEW and name == "lfence"
                r = variant(ok, h, kernel, at + timedelta(minutes=n), n, [kernel_finding()] if fails else [])
                out.append(in_cell(r, name))
    return out


# what a kernel that cannot load trampolines (lockdown's EPERM) says of one
EPERM = "fentry on entry/subprog_tail: the kernel cannot load it: EPERM (Operation not permitted)"


def unsupported_run(hostname: str, kernel: str, at: datetime, n: int, unsupported: list[dict],
                    findings: list[dict] = (), error: str | None = None, unjudged: bool = False) -> dict:
    """A schema-3 result of the job plus the topologies in `unsupported`,
    settled by farm.result.Result itself: the pass fixture's topology ran
    (unless `unjudged`: then it verified nothing), each unsupported one
    never loaded; `error` is farm's own failure besides."""
    from farm.result import Result, TopologyStats
    src = variant(base("pass"), hostname, kernel, at, n, [dict(f) for f in findings])
    r = Result.from_dict({k: v for k, v in src.items() if k not in ("verdict",)})
    ran = TopologyStats(runs=r.stats.runs, tail_calls_verified=0 if unjudged else r.stats.tail_calls_verified,
                        windows=r.stats.windows)
    r.stats.per_topology = {"0-chain-limit-direct": ran, **{u["topology"]: TopologyStats() for u in unsupported}}
    r.unsupported = [dict(u) for u in unsupported]
    r.error = error
    r.settle_verdict()
    return {**r.to_dict(), "submission": src["submission"]}
