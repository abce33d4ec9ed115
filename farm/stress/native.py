"""The writer's hot loop in C (churn_loop.c): built for this host with clang
on first use, cached by content hash, called through ctypes."""
from __future__ import annotations

import ctypes
import subprocess
from functools import lru_cache
from pathlib import Path

from farm.bpf.toolchain import cache_root, cached_build, content_key, require_tool
from farm.errors import TOOL_OUTPUT_CHARS, InfraError

SOURCE = Path(__file__).with_name("churn_loop.c")


class FarmStep(ctypes.Structure):
    _fields_ = [("head", ctypes.c_void_p), ("base", ctypes.c_void_p), ("cap", ctypes.c_int64),
                ("value", ctypes.c_int64), ("attr", ctypes.c_void_p), ("cmd", ctypes.c_int32),
                ("size", ctypes.c_int32)]


@lru_cache(maxsize=1)
def churn_lib() -> ctypes.CDLL:
    clang = require_tool("clang")
    src = SOURCE.read_bytes()
    out = cache_root() / "native" / f"churn-{content_key(src)}.so"

    def build(tmp: Path) -> None:
        proc = subprocess.run([clang, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise InfraError(f"cannot build the writer loop: {proc.stderr.strip()[:TOOL_OUTPUT_CHARS]}")
    cached_build(out, build, "the writer loop")
    lib = ctypes.CDLL(str(out))
    lib.farm_churn.restype = ctypes.c_long
    lib.farm_churn.argtypes = (ctypes.POINTER(FarmStep), ctypes.c_long, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                               ctypes.POINTER(ctypes.c_long))
    return lib
