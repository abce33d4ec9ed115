"""Programs a job brings itself (a topology's `source:`): checked, then
compiled in a throw-away dir with resource limits, never into the cache.

A custom source stands in for a corpus topology: it includes farm.h (and
targets.h) and defines the same programs and maps, so the oracle judges it
like the corpus. It may include only those and the two BPF headers; inline
assembly and .incbin are refused, so compiling it cannot read the worker's
files into the object or its error messages. A generated shape (farm/gen/)
includes gen.h and goes through the same checks.
"""
from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from farm.bpf.corpus import PROGS_DIR
from farm.bpf.toolchain import LoadError, require_tool
from farm.errors import InfraError

MAX_SOURCE_BYTES = 256 * 1024
ALLOWED_INCLUDES = ("farm.h", "targets.h", "gen.h", "linux/bpf.h", "bpf/bpf_helpers.h")
OUR_HEADERS = ("farm.h", "targets.h", "gen.h")  # copied next to the source
COMPILE_TIMEOUT_S = 120
LIMITS = {  # per clang process
    resource.RLIMIT_CPU: 60,                  # seconds of CPU
    resource.RLIMIT_AS: 2 << 30,              # bytes of address space
    resource.RLIMIT_FSIZE: 64 << 20,          # bytes in any file it writes
    resource.RLIMIT_NOFILE: 256,
    resource.RLIMIT_CORE: 0,
}
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*([<\"])([^>\"\n]*)[>\"]", re.M)
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(include_next|import|embed|pragma)\b", re.M)
_FORBIDDEN = re.compile(r"\b(?:asm|__asm__|__asm)\b|\.incbin|__has_include|\\\n|%:|\?\?=")
# what the preprocessor may open: the two headers, the source, the BPF uapi
SYSTEM_HEADER_DIRS = ("/usr/include/linux/", "/usr/include/asm-generic/", "/usr/include/bpf/",
                      "/usr/include/x86_64-linux-gnu/asm/")
PROGRAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def source_problem(text: str) -> str | None:
    """Why this source may not be compiled here, or None."""
    if len(text.encode()) > MAX_SOURCE_BYTES:
        return f"larger than {MAX_SOURCE_BYTES // 1024} KiB"
    if "\0" in text:
        return "contains a NUL byte"
    for m in _INCLUDE.finditer(text):
        if m.group(2) not in ALLOWED_INCLUDES:
            return f"#include {m.group(2)!r} is not allowed (allowed: {', '.join(ALLOWED_INCLUDES)})"
    if m := _DIRECTIVE.search(text):
        return f"#{m.group(1)} is not allowed"
    if m := _FORBIDDEN.search(text):
        return f"{m.group(0).strip() or 'a line continuation'!r} is not allowed"
    if not _INCLUDE.search(text):
        return 'it must #include "farm.h" (see farm/bpf/progs/)'
    return None


def _limit() -> None:  # runs in the clang child before exec
    for res, value in LIMITS.items():
        resource.setrlimit(res, (value, value))


def _opened_outside(cmd: list[str], tmp: Path, src: Path) -> bool:
    """Ask the preprocessor which files the source opens (clang -M): a macro
    or a comment can hide an #include from any text check, not from this."""
    dep = subprocess.run([*cmd[:cmd.index("-c")], "-M", str(src)], capture_output=True, text=True,
                         cwd=tmp, preexec_fn=_limit, timeout=COMPILE_TIMEOUT_S)
    if dep.returncode != 0:
        return True  # an include that cannot be opened is refused the same way
    files = dep.stdout.replace("\\\n", " ").split(":", 1)[-1].split()
    ours = {str(tmp / h) for h in OUR_HEADERS} | {str(src)}
    return any(str(Path(f).resolve()) not in ours and not str(Path(f).resolve()).startswith(SYSTEM_HEADER_DIRS)
               for f in files)


@contextmanager
def custom_object(name: str, source: str, flags: list[str]):
    """Compile `source` in a temp dir; yields the object's path, then removes
    the dir. Raises LoadError (a finding) when it does not compile."""
    clang = require_tool("clang")
    problem = source_problem(source)
    if problem:
        raise LoadError(f"custom source for {name} refused: {problem}")
    with tempfile.TemporaryDirectory(prefix="farm-custom-") as tmp:
        d = Path(tmp)
        for h in OUR_HEADERS:
            shutil.copy(PROGS_DIR / h, d / h)
        src, obj = d / f"{name}.bpf.c", d / f"{name}.o"
        src.write_text(source)
        # -nostdinc: only the temp dir and the system's BPF headers are visible
        cmd = [clang, "-nostdinc", "-I", str(d), "-isystem", "/usr/include", "-isystem",
               "/usr/include/x86_64-linux-gnu", *flags, "-c", str(src), "-o", str(obj)]
        outside = _opened_outside(cmd, d, src)
        if outside:
            # whatever that file holds stays out of messages and artifacts
            raise LoadError(f"custom source for {name} refused: it includes a file outside the BPF headers")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=d, preexec_fn=_limit,
                                  timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LoadError(f"custom source for {name}: clang ran over {COMPILE_TIMEOUT_S}s") from None
        except OSError as e:
            raise InfraError(f"cannot run clang: {e.strerror}") from None
        if proc.returncode != 0:
            raise LoadError(f"clang failed on the custom source for {name}", proc.stderr.replace(tmp, "<src>"))
        yield obj
