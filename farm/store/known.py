"""Known issues: a YAML list of signature globs with a link and a note.

    - signature: "BUG: unable to handle page fault in bpf_prog_*"
      link: https://lore.kernel.org/...
      note: fixed by "bpf, x64: ..." in 6.9
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from farm.errors import BadInput
from farm.inputs import load_yaml, read_input


def load_known(path: Path) -> list[tuple[str, str | None, str | None]]:
    data = load_yaml(read_input(path, "known-issues file"), str(path))
    if data is None:
        return []
    if not isinstance(data, list):
        raise BadInput(f"{path}: a known-issues file is a YAML list of {{signature, link, note}}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("signature"), str) or not item["signature"].strip():
            raise BadInput(f"{path}: entry {i}: needs a `signature:` string")
        extra = set(item) - {"signature", "link", "note"}
        if extra:
            raise BadInput(f"{path}: entry {i}: unknown key {sorted(extra)[0]!r}")
        link, note = item.get("link"), item.get("note")
        out.append((item["signature"].strip()[:512], None if link is None else str(link),
                    None if note is None else str(note)))
    return out


def status_for(text: str, known) -> tuple[str, str | None, str | None]:
    """`known` with its link and note if a pattern matches, else `open`."""
    for pattern, link, note in known:
        if text == pattern or fnmatch.fnmatchcase(text, pattern):
            return "known", link, note
    return "open", None, None
