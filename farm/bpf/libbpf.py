"""Programs bpftool cannot load: fentry/fexit and freplace programs whose
target is another BPF program. bpftool's `prog load` has no way to name an
attach target, so these go through libbpf (the library bpftool itself is
built on), called over ctypes: open the object, set the target, share the
topology's maps, load. The attachment itself (a BPF link) is made by farm's
own syscall layer (farm.bpf.syscall.link_create) and pinned like the rest.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
from functools import lru_cache
from pathlib import Path

from farm.bpf.toolchain import LoadError
from farm.errors import InfraError

LOG_BYTES = 1 << 20  # the verifier's log of one refused program
# errnos that say "this kernel cannot do trampolines here", not "this
# program is wrong": EPERM under lockdown, no BTF or JIT support for them
UNSUPPORTED_ERRNOS = {errno_mod.EPERM: "EPERM", errno_mod.EOPNOTSUPP: "EOPNOTSUPP",
                      524: "ENOTSUPP", errno_mod.ENOSYS: "ENOSYS"}


class Unsupported(InfraError):
    """The kernel cannot run this at all, for a reason that is not the bug
    under test (lockdown, no trampolines, no BTF): never a pass, never a
    finding; the run names it and exits 3."""


_P = ctypes.c_void_p


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise InfraError(f"libbpf is not installed ({e}); install it: apt-get install libbpf1") from None
    for fn, res, args in (
            ("bpf_object__open_file", _P, (ctypes.c_char_p, _P)),
            ("bpf_object__find_program_by_name", _P, (_P, ctypes.c_char_p)),
            ("bpf_object__next_program", _P, (_P, _P)),
            ("bpf_object__find_map_by_name", _P, (_P, ctypes.c_char_p)),
            ("bpf_object__load", ctypes.c_int, (_P,)),
            ("bpf_object__close", None, (_P,)),
            ("bpf_program__name", ctypes.c_char_p, (_P,)),
            ("bpf_program__set_autoload", ctypes.c_int, (_P, ctypes.c_bool)),
            ("bpf_program__set_attach_target", ctypes.c_int, (_P, ctypes.c_int, ctypes.c_char_p)),
            ("bpf_program__set_log_buf", ctypes.c_int, (_P, ctypes.c_char_p, ctypes.c_size_t)),
            ("bpf_program__fd", ctypes.c_int, (_P,)),
            ("bpf_map__reuse_fd", ctypes.c_int, (_P, ctypes.c_int)),
            ("bpf_map__fd", ctypes.c_int, (_P,)),
            ("libbpf_set_print", _P, (_P,))):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    lib.libbpf_set_print(None)  # its messages would go to our stderr; errors come back as errnos and logs
    return lib


def _errno_name(err: int) -> str:
    return UNSUPPORTED_ERRNOS.get(err) or errno_mod.errorcode.get(err, str(err))


class BpfObject:
    """One libbpf object holding `program` (and `more` programs) of a
    multi-program file (the others are not loaded), optionally attached to
    a function of another loaded program and sharing maps with it."""

    def __init__(self, path: Path, program: str, what: str, more: tuple[str, ...] = ()):
        self.what, self.program = what, program
        lib = _lib()
        self._obj = lib.bpf_object__open_file(os.fsencode(str(path)), None)
        if not self._obj:
            raise InfraError(f"libbpf could not open {path.name}: {_errno_name(ctypes.get_errno())}")
        self._progs = {}
        for name in (program, *more):
            self._progs[name] = lib.bpf_object__find_program_by_name(self._obj, name.encode())
            if not self._progs[name]:
                self.close()
                raise InfraError(f"{path.name} has no program {name!r}")
        p = None
        while p := lib.bpf_object__next_program(self._obj, p):
            if p not in self._progs.values():
                lib.bpf_program__set_autoload(p, False)
        # one log per program, written only when its load fails: libbpf then
        # loads it again with the verifier's log on
        self._logs = {}
        for name, p in self._progs.items():
            self._logs[name] = ctypes.create_string_buffer(LOG_BYTES)
            lib.bpf_program__set_log_buf(p, self._logs[name], LOG_BYTES)

    def target(self, prog_fd: int, function: str) -> "BpfObject":
        """Attach (at load time) every program of this object to `function`
        of the program behind prog_fd: its main function by the program's
        name, or one of its subprogs."""
        for p in self._progs.values():
            if _lib().bpf_program__set_attach_target(p, prog_fd, function.encode()):
                err = ctypes.get_errno()
                raise self._refused(err, f"no attach target {function!r} in that program")
        return self

    def fd(self, name: str) -> int:
        """The fd of a loaded program of this object (owned by it)."""
        return _lib().bpf_program__fd(self._progs[name])

    def share_map(self, name: str, fd: int) -> "BpfObject":
        m = _lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise InfraError(f"{self.what}: no map {name!r} to share")
        if _lib().bpf_map__reuse_fd(m, fd):
            raise InfraError(f"{self.what}: cannot share map {name}: {_errno_name(ctypes.get_errno())}")
        return self

    def load(self) -> int:
        """Load (BPF_PROG_LOAD through libbpf); the program's fd, owned by
        this object. A kernel that cannot run trampolines at all raises
        Unsupported with its errno; any other refusal is a LoadError with
        the verifier's log."""
        if _lib().bpf_object__load(self._obj):
            raise self._refused(ctypes.get_errno(), "the kernel refused it")
        return self.prog_fd

    @property
    def prog_fd(self) -> int:
        """The main program's fd (owned by this object), -1 before load."""
        return self.fd(self.program)

    def map_fd(self, name: str) -> int:
        m = _lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise InfraError(f"{self.what}: no map {name!r}")
        return _lib().bpf_map__fd(m)

    def verifier_log(self) -> str:
        return "\n".join(b.value.decode(errors="replace") for b in self._logs.values() if b.value)

    def _refused(self, err: int, why: str) -> InfraError:
        name = _errno_name(err)
        if err in UNSUPPORTED_ERRNOS:
            return Unsupported(f"{self.what}: the kernel cannot load it: {name} ({os.strerror(err)})")
        log = self.verifier_log()
        # the verifier's reason, not the statistics it prints after it
        last = next((ln for ln in reversed(log.splitlines())
                     if ln.strip() and not ln.startswith(("processed ", "verification time"))), "")
        return LoadError(f"{self.what}: {why}: {name}" + (f": {last.strip()}" if last else ""), log)

    def close(self) -> None:
        if self._obj:
            _lib().bpf_object__close(self._obj)
            self._obj = None
