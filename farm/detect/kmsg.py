"""Follow the kernel log through /dev/kmsg.

/dev/kmsg hands out one record per read(2), one record per printk:

    prio,seq,ts_us,flags[,more...];message text
     KEY=VALUE            (optional dictionary lines, each led by a space)

prio is the syslog value (facility << 3 | level).  Bytes in the message that
are not printable, and every backslash, come escaped as \\xNN, so a printk
with embedded newlines is still one record, its newlines spelled \\x0a.
A reader too slow for the ring buffer gets EPIPE once and then continues at
the oldest record still held.
"""
from __future__ import annotations

import errno
import os
import re
import select
import threading
from dataclasses import dataclass

from farm.errors import InfraError

KMSG_PATH = "/dev/kmsg"
READ_SIZE = 16384          # more than any one record /dev/kmsg hands out (a short buffer is EINVAL)
MARKER_MAX = 976           # under the kernel's limit for one write to /dev/kmsg (1024 in 6.x, 992 before)
FACILITY_KERN = 0          # only the kernel itself logs with facility 0; writers to /dev/kmsg get LOG_USER

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class KmsgRecord:
    seq: int
    ts_us: int       # CLOCK_MONOTONIC microseconds when it was logged
    prio: int        # log level 0 (emerg) .. 7 (debug)
    facility: int    # 0 kernel, 1 user (what writes to /dev/kmsg get), ...
    text: str        # the message, unescaped; may span lines for a multi-line printk


def parse_record(raw: bytes) -> KmsgRecord | None:
    """One raw /dev/kmsg record to a KmsgRecord; None if it is not one.
    The dictionary lines (" SUBSYSTEM=...", " DEVICE=...") are dropped."""
    head, sep, body = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    if len(fields) < 4:
        return None
    try:
        syslog_prio, seq, ts_us = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if syslog_prio < 0 or seq < 0:
        return None
    message = body.split(b"\n", 1)[0]  # what follows the first newline is the dictionary
    message = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), message)
    return KmsgRecord(seq=seq, ts_us=ts_us, prio=syslog_prio & 7, facility=syslog_prio >> 3,
                      text=message.decode("utf-8", errors="replace").rstrip("\n"))


def parse_records(data: bytes | str) -> list[KmsgRecord]:
    """A dump of records as /dev/kmsg gives them, one after another (each
    starting a line, dictionary lines led by a space), to KmsgRecords.
    For saved logs and test fixtures; blank lines are skipped."""
    if isinstance(data, str):
        data = data.encode()
    chunks: list[bytes] = []
    for line in data.split(b"\n"):
        if line.startswith(b" ") and chunks:
            chunks[-1] += b"\n" + line
        elif line.strip():
            chunks.append(line)
    return [r for r in map(parse_record, chunks) if r is not None]


class KmsgFollower:
    """Collect the kernel log records logged after start() until stop().

    A daemon thread polls /dev/kmsg (and a wake-up pipe, so stop() returns
    at once) and reads every record available.  stop() reads what is left
    before it returns, so a marker written just before stop() is seen.

    lost counts records the ring buffer overwrote before they could be read
    (known from the jump in sequence numbers after EPIPE; at least one per
    EPIPE), overruns the EPIPEs themselves, gaps the (first, last) missing seqs.
    error is set if the reader thread died on an unexpected error.
    """

    def __init__(self, path: str = KMSG_PATH, poll_interval: float = 0.1):
        self.path = path
        self.poll_interval = poll_interval
        self.lost = 0
        self.overruns = 0
        self.gaps: list[tuple[int, int]] = []
        self.error: str | None = None
        self._records: list[KmsgRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._wake: tuple[int, int] | None = None
        self._last_seq: int | None = None
        self._overrun_pending = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> "KmsgFollower":
        if self._thread is not None:
            raise RuntimeError("KmsgFollower already started")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise InfraError(f"cannot open {self.path} to follow the kernel log: {e.strerror} "
                             "(needs read access to /dev/kmsg: root, or kernel.dmesg_restrict=0; "
                             "and kernel.printk_devkmsg not off)") from e
        try:
            os.lseek(fd, 0, os.SEEK_END)  # only records logged from now on
        except OSError as e:
            os.close(fd)
            raise InfraError(f"cannot seek to the end of {self.path}: {e.strerror}") from e
        self._fd = fd
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kmsg-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following, after reading every record already logged.  Idempotent."""
        if self._thread is None or self._fd is None:
            return
        self._stop.set()
        try:
            os.write(self._wake[1], b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        if self._thread.is_alive():  # stuck: leave its fds to it, it is a daemon
            self.error = self.error or "kmsg reader thread did not stop"
            return
        os.close(self._fd)
        for fd in self._wake:
            os.close(fd)
        self._fd = None
        self._wake = None

    def __enter__(self) -> "KmsgFollower":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._fd is not None and self._thread.is_alive()

    @property
    def records(self) -> list[KmsgRecord]:
        """The records seen so far, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    # -- reader thread ---------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLPRI)
        poller.register(self._wake[0], select.POLLIN)
        timeout_ms = max(1, int(self.poll_interval * 1000))
        try:
            while not self._stop.is_set():
                poller.poll(timeout_ms)
                self._drain()
            self._drain()  # whatever was logged up to stop()
        except InfraError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - reported through .error, the thread must not die silently
            self.error = f"kmsg reader failed: {e!r}"

    def _drain(self) -> None:
        """Read records until none is left (EAGAIN)."""
        while True:
            try:
                raw = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except BrokenPipeError:  # EPIPE: overwritten before we read it; the next read resyncs
                with self._lock:
                    self.overruns += 1
                    self._overrun_pending = True
                continue
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return
                raise
            if not raw:
                # /dev/kmsg never reads end-of-file: whatever is there instead
                # (/dev/null, a regular file) is not the kernel log. Stop, and
                # say so, rather than spin on poll() and report a clean log.
                raise InfraError(f"{self.path} read end-of-file: it is not the kernel log")
            self._ingest(raw)

    def _ingest(self, raw: bytes) -> None:
        rec = parse_record(raw)
        if rec is None:  # /dev/kmsg hands out nothing else: a record skipped here could be an oops
            raise InfraError(f"{self.path} gave something that is not a kernel log record: {raw[:60]!r}")
        with self._lock:
            if self._last_seq is not None and rec.seq > self._last_seq + 1:
                self.lost += rec.seq - self._last_seq - 1
                self.gaps.append((self._last_seq + 1, rec.seq - 1))
            elif self._overrun_pending and self._last_seq is None:
                self.lost += 1  # how many is unknown: we had not read any yet
            self._overrun_pending = False
            self._last_seq = rec.seq
            self._records.append(rec)


def write_marker(text: str, level: int = 5, path: str = KMSG_PATH) -> None:
    """Log one line from user space through /dev/kmsg (root, or CAP_SYSLOG).

    It arrives as a record of facility 1 (user) with the given level, which
    classify() never takes for a kernel report.  A fresh open per marker keeps
    clear of /dev/kmsg's per-open write rate limit."""
    if not 0 <= level <= 7:
        raise ValueError(f"log level {level} not in 0..7")
    line = text.rstrip("\n")
    data = f"<{level}>{line}\n".encode()
    if len(data) > MARKER_MAX:
        raise ValueError(f"marker of {len(data)} bytes is longer than {MARKER_MAX}")
    try:
        # O_NONBLOCK: /dev/kmsg ignores it, but something else in its place (a
        # FIFO nobody reads) must fail here, not hang the run in its cleanup.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise InfraError(f"cannot open {path} to write a marker: {e.strerror}") from e
    try:
        os.write(fd, data)
    except OSError as e:
        raise InfraError(f"cannot write a marker to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def read_whole_log(path: str = KMSG_PATH) -> list[KmsgRecord]:
    """Every record the ring buffer still holds, boot messages included
    (what the kernel said when it chose its mitigations); [] when the log
    cannot be read: callers use it only to explain, never to judge."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    records = []
    try:
        while True:
            try:
                raw = os.read(fd, READ_SIZE)
            except (BrokenPipeError, InterruptedError):  # EPIPE: overwritten; go on at the oldest held
                continue
            except OSError:  # EAGAIN: nothing more
                break
            if not raw:  # not the kernel log (a regular file or /dev/null in its place)
                break
            if (rec := parse_record(raw)) is not None:
                records.append(rec)
    finally:
        os.close(fd)
    return records
