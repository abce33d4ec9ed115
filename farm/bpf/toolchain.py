"""The tools farm builds with and their one cache: finding clang and
bpftool, the flags every BPF object is compiled with, and a build cache
keyed by the content hash of everything that goes into a build."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Callable

from farm.errors import InfraError

# every BPF object: the corpus's and a job's own source
BPF_CFLAGS = ["-O2", "-g", "-target", "bpf"]
_APT_PACKAGE = {"bpftool": "bpftool", "clang": "clang llvm"}


class LoadError(InfraError):
    """The kernel or a tool refused a program: becomes a load-error finding."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def cache_root() -> Path:
    """FARM_CACHE_DIR, else ~/.cache/farm: compiled objects, the writer loop,
    and what guests share with this host."""
    base = os.environ.get("FARM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "farm")
    return Path(base)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise InfraError(f"{name} not found on PATH (install it: apt-get install {_APT_PACKAGE.get(name, name)})")
    return path


def slot_defines(slots: int, fault: str | None = None) -> list[str]:
    """The corpus's compile-time knobs: how many slots, which injected fault."""
    defines = [f"-DFARM_SLOTS={slots}"]
    if fault:
        defines.append("-DFARM_FAULT_" + fault.upper().replace("-", "_"))
    return defines


@lru_cache(maxsize=4)
def clang_version(clang: str) -> str:
    return subprocess.run([clang, "--version"], capture_output=True, text=True).stdout


def content_key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:16]


def cached_build(out: Path, build: Callable[[Path], None], what: str) -> Path:
    """`out` (a cache path named by content_key), built once: build(tmp)
    writes tmp, which then replaces out atomically, so concurrent runs
    never see half a file. A build that raises leaves nothing behind."""
    if out.exists():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InfraError(f"cannot create the cache of {what} {out.parent}: {e.strerror}") from None
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        build(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out
