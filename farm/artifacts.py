"""A run's artifacts directory: every file a run leaves for a person (the
result, facts, kernel log, JIT images and listings), written so that a
failing disk never costs the result."""
from __future__ import annotations

import errno
import json
from pathlib import Path

from farm.result import Result


def add_error(result: Result, text: str) -> None:
    """Add a reason to the result's error (verdict error, exit 3)."""
    result.error = f"{result.error}; {text}" if result.error else text


class Artifacts:
    """The run's artifacts directory (None: no artifacts). A write that fails
    (disk full, read-only, gone) neither ends the run nor loses its result:
    the partial file is removed, the other writes still try, and finish()
    makes the failure the result's error (verdict error, exit 3)."""

    def __init__(self, root: Path | None, result: Result):
        self.root, self.result = root, result
        self.failed: list[tuple[str, OSError]] = []
        if root:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self.failed.append((".", e))

    def write(self, key: str, rel: str, data: str | bytes) -> bool:
        if not self.root:
            return False
        path = self.root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data)
        except OSError as e:
            self.failed.append((rel, e))
            try:
                path.unlink(missing_ok=True)  # a truncated artifact is worse than none
            except OSError:
                pass
            return False
        self.result.artifacts[key] = rel
        return True

    def error(self) -> str | None:
        if not self.failed:
            return None
        rel, e = self.failed[0]
        name = errno.errorcode.get(e.errno, f"errno {e.errno}")
        more = f" and {len(self.failed) - 1} more" if len(self.failed) > 1 else ""
        return f"artifacts: cannot write {rel}{more} in {self.root}: {e.strerror} ({name})"

    def finish(self) -> None:
        """Settle the verdict and write result.json, which lists itself."""
        if (err := self.error()):
            add_error(self.result, err)
        self.result.settle_verdict()
        if not self.root:
            return
        self.result.artifacts["result"] = "result.json"
        if not self.write("result", "result.json", json.dumps(self.result.to_dict(), indent=2) + "\n"):
            del self.result.artifacts["result"]
            if len(self.failed) == 1:  # the first failure: not in the error yet
                add_error(self.result, self.error())
                self.result.settle_verdict()
