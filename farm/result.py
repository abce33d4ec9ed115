"""Result and Finding records, serialised as the schema-1 JSON that
docs/architecture.md describes."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = 1

FINDING_KINDS = (
    "wrong-target", "missed-tail-call", "tail-call-count", "stack-corruption",
    "kernel-oops", "kernel-bug", "kernel-warning", "lockup", "taint", "hang",
    "host-lost", "load-error",
)
# About the lab, not the kernel under test (a crash that took the host down is its own finding)
INFRA_KINDS = frozenset({"host-lost"})


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

    def settle_verdict(self) -> str:
        """error beats fail beats pass; a run with findings is never a pass."""
        if self.error:
            self.verdict = "error"
        else:
            self.verdict = "fail" if self.findings else "pass"
        return self.verdict

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, **asdict(self)}
        if d["error"] is None:
            del d["error"]
        return d

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        d = dict(d)
        if d.pop("schema", None) != SCHEMA:
            raise ValueError("not a schema-1 farm result")
        d["programs"] = [ProgramInfo(**p) for p in d.get("programs", [])]
        d["stats"] = Stats(**d.get("stats", {}))
        d["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**d)
