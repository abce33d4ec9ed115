"""The virtual lab's kernel cache: Debian kernel packages unpacked once and
shared by every run on this machine, with their initramfs images, under a
size cap (farm.config.kernel_cache_max).

    <state>/vlab/kernels/
      .lock                        the cache's own lock: landing, marking in use, evicting
      .unpack-<package>-<pid>-*    a package being unpacked, renamed into place when done
      .trash-*                     an evicted entry being removed
      <package>/ok                 complete; its text: the guest modules it was trimmed for
      <package>/used               touched on every resolve: the least recently used goes first
      <package>/in-use.lock        share-locked by each process using the kernel, while it lives
      <package>/x/                 the unpacked package
      <package>/initramfs-*.cpio.gz  its initramfs images, evicted with it

A shared flock on in-use.lock dies with its process (even a killed one), so
no stale pid can pin a kernel forever; eviction takes it exclusively without
waiting and keeps whatever it cannot get.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from farm.config import pid_alive, state_dir
from farm.errors import InfraError

IN_USE = "in-use.lock"
# an incomplete entry an older farm left (it unpacked in place): surely dead after this long
STALE_PARTIAL_S = 3600
_held: dict[str, int] = {}  # entry path -> the fd of our shared lock on it, kept while this process lives


def kernels_dir() -> Path:
    d = state_dir() / "vlab" / "kernels"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _cache_lock():
    """The whole cache's lock: held briefly, never while downloading or unpacking."""
    fd = os.open(kernels_dir() / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_complete(entry: Path, trim: str) -> bool:
    """Unpacked whole (an empty ok, as older farms left it) or trimmed for this module set."""
    try:
        text = (entry / "ok").read_text().strip()
    except OSError:
        return False
    return text in ("", trim)


def _hold(entry: Path) -> None:
    """Share-lock the entry for as long as this process lives. Never waits:
    eviction locks an entry exclusively only under the cache lock, which we hold."""
    if str(entry) not in _held:
        fd = os.open(entry / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held[str(entry)] = fd


def _take_if_unused(entry: Path) -> int | None:
    """An exclusive lock on the entry if no process uses it (its fd), else None."""
    fd = os.open(entry / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def use(entry: Path, trim: str) -> bool:
    """Mark a complete entry used now and in use by this process; False if it is not complete."""
    with _cache_lock():
        if not is_complete(entry, trim):
            return False
        _hold(entry)
        (entry / "used").touch()
    return True


def new_unpack_dir(package: str) -> Path:
    d = kernels_dir() / f".unpack-{package}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


def land(unpacked: Path, entry: Path, trim: str) -> None:
    """Move a finished unpack (with its ok) into place in one rename and mark
    it in use; when another run landed the same package first, keep theirs."""
    with _cache_lock():
        if not is_complete(entry, trim):
            if entry.exists():  # trimmed for another module set, or an older farm's broken unpack
                fd = _take_if_unused(entry)
                if fd is None:
                    raise InfraError(f"kernel cache: {entry.name} is cached for other guest modules and in use "
                                     "by another run; retry once that run ends")
                try:
                    _to_trash(entry)
                finally:
                    os.close(fd)
            os.rename(unpacked, entry)
        _hold(entry)
        (entry / "used").touch()
    shutil.rmtree(unpacked, ignore_errors=True)  # only there when another run's landed first
    _empty_trash()


def disk_usage(path: Path) -> int:
    """Bytes on disk (as du counts them) of a file or a tree."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass  # removed meanwhile
    return total


@dataclass
class Entry:
    package: str
    path: Path
    bytes: int
    used: float  # when a run last resolved it (epoch seconds)


def entries() -> list[Entry]:
    """The complete entries, least recently used first."""
    found = []
    for d in kernels_dir().iterdir():
        if d.name.startswith(".") or not (d / "ok").exists():
            continue
        stamp = d / "used" if (d / "used").exists() else d / "ok"  # an older farm's entry has no stamp
        try:
            found.append(Entry(d.name, d, disk_usage(d), stamp.stat().st_mtime))
        except FileNotFoundError:
            continue  # evicted meanwhile
    return sorted(found, key=lambda e: (e.used, e.package))


def cached_size(package: str) -> int | None:
    """Bytes the cache holds of the package, None when not cached."""
    entry = kernels_dir() / package
    return disk_usage(entry) if (entry / "ok").exists() else None


@dataclass
class Decision:
    name: str  # a package, or a loose initramfs file
    bytes: int
    why: str


def evict(cap: int | None, unused_for_s: float | None = None, now: float | None = None
          ) -> tuple[list[Decision], list[Decision]]:
    """Remove, least recently used first, entries unused for longer than
    unused_for_s and then as many as it takes to bring the cache under cap
    bytes; an entry a live process uses is kept whatever its age or size.
    Returns (removed, kept)."""
    now = time.time() if now is None else now
    removed, kept = [], []
    with _cache_lock():
        listed = entries()
        total = sum(e.bytes for e in listed)
        for e in listed:
            if unused_for_s is not None and e.used < now - unused_for_s:
                why = f"unused since {_day(e.used)}"
            elif cap is not None and total > cap:
                why = "over the cap"
            else:
                kept.append(Decision(e.package, e.bytes, "within the cap"))
                continue
            fd = _take_if_unused(e.path)
            if fd is None:
                kept.append(Decision(e.package, e.bytes, f"in use ({why})"))
                continue
            try:
                _to_trash(e.path)
            finally:
                os.close(fd)
            total -= e.bytes
            removed.append(Decision(e.package, e.bytes, why))
        _trash_leftovers(now)
    _empty_trash()
    return removed, kept


def gc(cap: int, unused_for_s: float, now: float | None = None) -> tuple[list[Decision], list[Decision]]:
    """`farm gc`: evict() with both limits, and loose initramfs images (of
    --kernel PATH kernels, or left by an older farm in <state>/vlab/) not
    written for as long: QEMU reads one only as it starts a guest."""
    now = time.time() if now is None else now
    removed, kept = evict(cap, unused_for_s, now)
    vlab = kernels_dir().parent
    for path in sorted([*vlab.glob("initramfs-*.cpio.gz"), *vlab.glob("initramfs/initramfs-*.cpio.gz")]):
        try:
            st = path.stat()
            if st.st_mtime < now - unused_for_s:
                path.unlink()
                removed.append(Decision(path.name, st.st_blocks * 512, f"loose initramfs, built {_day(st.st_mtime)}"))
        except FileNotFoundError:
            pass
    return removed, kept


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def human(n: int) -> str:
    """Bytes as du -h would say them, binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _to_trash(entry: Path) -> None:
    os.rename(entry, kernels_dir() / f".trash-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _empty_trash() -> None:
    for d in kernels_dir().glob(".trash-*"):
        shutil.rmtree(d, ignore_errors=True)  # another process may be removing it too


def _trash_leftovers(now: float) -> None:
    """Unpacks whose process died, and incomplete entries an older farm left."""
    for d in kernels_dir().iterdir():
        m = re.fullmatch(r"\.unpack-.+-(\d+)-[0-9a-f]{8}", d.name)
        try:
            if m and not pid_alive(int(m.group(1))):
                _to_trash(d)
            elif not d.name.startswith(".") and d.is_dir() and not (d / "ok").exists() \
                    and d.stat().st_mtime < now - STALE_PARTIAL_S:
                _to_trash(d)
        except FileNotFoundError:
            pass  # its owner finished or removed it meanwhile


