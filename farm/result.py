"""Result and Finding records, serialised as the schema-3 JSON that
docs/architecture.md describes (schema 2: the same without `unsupported`;
schema 1: also without host.cell and cell_miss; both still read)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = 3
READABLE_SCHEMAS = (1, 2, 3)  # what from_dict, `farm ingest` and the store read

# how much of a log (the verifier's, bpftool's, a guest console's) a finding's detail keeps
LOG_TAIL_CHARS = 8000

FINDING_KINDS = (
    "wrong-target", "missed-tail-call", "tail-call-count", "stack-corruption",
    "kernel-oops", "kernel-bug", "kernel-warning", "lockup", "taint", "hang",
    "host-lost", "load-error", "trampoline-count", "accepted-unsafe", "wrong-return",
)
# About the lab, not the kernel under test (a crash that took the host down is its own finding)
INFRA_KINDS = frozenset({"host-lost"})


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Finding:
    kind: str
    signature: str
    summary: str
    cpu: int | None = None
    at: str = field(default_factory=now_iso)
    detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")


@dataclass
class ProgramInfo:
    name: str
    prog_id: int
    tag: str
    jited_len: int
    jited_sha256: str


@dataclass
class TopologyStats:
    """What the runners verified of one topology of the job."""
    runs: int = 0
    tail_calls_verified: int = 0
    windows: int = 0
    windows_unjudged: int = 0

    def add(self, other: "TopologyStats") -> None:
        """Sum another runner's tally of the same topology into this one."""
        self.runs += other.runs
        self.tail_calls_verified += other.tail_calls_verified
        self.windows += other.windows
        self.windows_unjudged += other.windows_unjudged


@dataclass
class Stats:
    cpus: list[int] = field(default_factory=list)
    updates: int = 0
    runs: int = 0
    tail_calls_verified: int = 0
    updates_per_s: float = 0.0
    tail_calls_per_s: float = 0.0
    windows: int = 0           # BPF_PROG_TEST_RUN windows judged or not
    windows_unjudged: int = 0  # the generation log no longer reached back
    kmsg_records_lost: int = 0  # overwritten before the follower read them
    # "<index>-<topology>" (as its pin dir and JIT artifacts are named) for
    # every topology of the job, loaded or not; absent in older results
    per_topology: dict[str, TopologyStats] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        d = {k: v for k, v in d.items() if k in _field_names(cls)}
        d["per_topology"] = {k: TopologyStats(**v) for k, v in d.get("per_topology", {}).items()}
        return cls(**d)


def coverage_gap(stats: Stats, unsupported: list[dict] = ()) -> str | None:
    """What a run left unverified, in one line; None when every topology had
    tail calls verified and no window went unjudged (the only way to a pass).
    Topologies this kernel cannot run at all are named with its reason."""
    head = ["unsupported here: " + "; ".join(f"{u['topology']} ({u['reason']})" for u in unsupported)] \
        if unsupported else []
    skip = {u["topology"] for u in unsupported}
    if not stats.per_topology:
        return "; ".join(head + ["nothing was verified: no topology ran"])
    gaps = []
    bare = [f"{k} ({t.windows} windows{f', {t.windows_unjudged} unjudged' if t.windows_unjudged else ''})"
            for k, t in stats.per_topology.items() if t.tail_calls_verified == 0 and k not in skip]
    if bare:
        gaps.append(f"no verified tail calls in {', '.join(bare)}")
    if stats.windows_unjudged:
        gaps.append(f"{stats.windows_unjudged} of {stats.windows} windows unjudged "
                    "(the generation log no longer reached back)")
    return "; ".join(head + (["not verified: " + "; ".join(gaps)] if gaps else [])) or None


@dataclass
class Result:
    run_id: str
    job: str
    host: dict
    started: str
    verdict: str = "pass"
    duration_s: float = 0.0
    programs: list[ProgramInfo] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    findings: list[Finding] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why verdict is "error"; absent otherwise
    unverified: str | None = None  # coverage_gap() of a run that did not pass; absent otherwise
    # why the run does not prove the mitigation cell it was asked to reach
    # (farm.cellproof.proof_gap); absent otherwise
    cell_miss: str | None = None
    # topologies this host's kernel cannot run at all, for a reason that is
    # not the bug under test: [{"topology": "<index>-<name>", "reason": ...}]
    unsupported: list[dict] = field(default_factory=list)

    def settle_verdict(self) -> str:
        """error beats fail beats pass, and a pass needs evidence: a run with
        findings is a fail even if its coverage was short (every finding is
        evidence against the kernel); a run without findings whose coverage
        was short is an error, its error saying what was not verified.
        A missed cell counts the same way: the run did not test what it was
        asked to, so without findings it is an error (exit 3), never a pass;
        but a crash in the wrong cell is still a crash, so findings keep the
        fail (exit 1) and the miss rides in `unverified`.
        Settling again gives the same verdict and text."""
        gap = "; ".join(filter(None, [self.cell_miss, coverage_gap(self.stats, self.unsupported)])) or None
        if gap and not self.error and not self.findings:
            self.error = gap  # nothing broke, but nothing proves a pass either
        self.unverified = gap
        if self.error:
            self.verdict = "error"
        else:
            self.verdict = "fail" if self.findings else "pass"
        return self.verdict

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, **asdict(self)}
        for optional in ("error", "unverified", "cell_miss"):
            if d[optional] is None:
                del d[optional]
        return d

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        """Read a schema-2 or schema-1 result, older ones too (fields added
        since take their defaults; a schema-1 host has no cell); what rides
        along (a worker's attachments and submission) is left out."""
        if d.get("schema") not in READABLE_SCHEMAS:
            raise ValueError(f"not a farm result of schema {' or '.join(map(str, READABLE_SCHEMAS))}")
        d = {k: v for k, v in d.items() if k in _field_names(cls)}
        d["programs"] = [ProgramInfo(**p) for p in d.get("programs", [])]
        d["stats"] = Stats.from_dict(d.get("stats", {}))
        d["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**d)
