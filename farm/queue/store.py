"""Durable results: JSON lines per submission under the state dir, written
only by the collector, one line per run id whatever arrives twice."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,200}$")


class ResultStore:
    def __init__(self, root: Path):
        self.root = root / "results"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, submission: str) -> Path:
        if not _SAFE.match(submission):
            raise ValueError(f"bad submission id {submission!r}")
        return self.root / f"{submission}.jsonl"

    def results(self, submission: str) -> list[dict]:
        path = self._path(submission)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def add(self, submission: str, result: dict) -> bool:
        """Append unless this run id is already stored; True if written."""
        if any(r["run_id"] == result["run_id"] for r in self.results(submission)):
            return False
        with open(self._path(submission), "a") as f:
            f.write(json.dumps(result) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def update(self, submission: str, run_id: str, change) -> bool:
        """Rewrite the run's line with change(result); atomic replace."""
        rows = self.results(submission)
        hit = False
        for r in rows:
            if r["run_id"] == run_id:
                change(r)
                hit = True
        if hit:
            path = self._path(submission)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, path)
        return hit
