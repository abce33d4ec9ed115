"""The writer's hot loop in C (churn_loop.c): built for this host with clang
on first use, cached by content hash, called through ctypes."""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from farm.bpf.loader import cache_dir, require_tool
from farm.errors import InfraError

SOURCE = Path(__file__).with_name("churn_loop.c")


class FarmStep(ctypes.Structure):
    _fields_ = [("head", ctypes.c_void_p), ("base", ctypes.c_void_p), ("cap", ctypes.c_int64),
                ("value", ctypes.c_int64), ("attr", ctypes.c_void_p), ("cmd", ctypes.c_int32),
                ("size", ctypes.c_int32)]


@lru_cache(maxsize=1)
def churn_lib() -> ctypes.CDLL:
    clang = require_tool("clang")
    src = SOURCE.read_bytes()
    out = cache_dir().parent / "native" / f"churn-{hashlib.sha256(src).hexdigest()[:16]}.so"
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InfraError(f"cannot create the writer loop's cache dir {out.parent}: {e.strerror}") from None
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([clang, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise InfraError(f"cannot build the writer loop: {proc.stderr.strip()[:500]}")
        tmp.replace(out)
    lib = ctypes.CDLL(str(out))
    lib.farm_churn.restype = ctypes.c_long
    lib.farm_churn.argtypes = (ctypes.POINTER(FarmStep), ctypes.c_long, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                               ctypes.POINTER(ctypes.c_long))
    return lib
