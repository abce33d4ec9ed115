"""Generation logs: what each prog_array slot held, and when.

One ring per slot in shared memory, written by the slot's only writer and read
by every runner right after its window. An entry k says "from ts_before(k) the
slot may hold value(k)"; it may hold it until ts_after(k+1), the end of the
next update's syscall. An update still in its syscall is published first with
ts_after = PENDING, so a runner never misses a value the kernel already sees.
"""
from __future__ import annotations

import ctypes
import mmap
import time

from farm.bpf.corpus import EMPTY

PENDING = (1 << 63) - 1
ENTRY = 3  # int64 words: ts_before, ts_after, value


class SlotLog:
    """A view of one ring inside a shared buffer (words of int64)."""

    def __init__(self, words: memoryview, offset: int, capacity: int, address: int):
        self.q, self.head, self.base, self.cap = words, offset, offset + 1, capacity
        self.head_addr = address + 8 * self.head  # for the writer's C loop
        self.base_addr = address + 8 * self.base

    @staticmethod
    def words_needed(capacity: int) -> int:
        return 1 + capacity * ENTRY

    # writer side ------------------------------------------------------
    def begin(self, value: int) -> int:
        """Publish an update about to be made; returns its handle for end()."""
        q = self.q
        k = q[self.head]
        e = self.base + (k % self.cap) * ENTRY
        q[e + 1] = PENDING
        q[e + 2] = value
        q[e] = time.monotonic_ns()
        q[self.head] = k + 1
        return e

    def end(self, handle: int) -> None:
        self.q[handle + 1] = time.monotonic_ns()

    def record(self, value: int) -> None:
        """An update made while no runner runs (the initial fill)."""
        self.end(self.begin(value))

    # reader side ------------------------------------------------------
    def allowed(self, t0: int, t1: int, universe: int) -> set[int] | None:
        """Every value the slot held at any moment of [t0, t1], or None if the
        ring no longer reaches back to t0 (the window is then not judged).
        Stops early once all `universe` possible values are in the set."""
        q, cap = self.q, self.cap
        count = q[self.head]
        seen: set[int] = set()
        next_after = PENDING  # end of the validity of entry k
        k = count - 1
        while k >= 0 and next_after >= t0 and len(seen) < universe:
            if k < count - cap + 1:  # one entry of slack for the writer
                return None
            e = self.base + (k % cap) * ENTRY
            before, after, value = q[e], q[e + 1], q[e + 2]
            if before <= t1:
                seen.add(value)
            next_after = after
            k -= 1
        if k < 0 and next_after >= t0:
            seen.add(EMPTY)  # before the first install the slot was empty
        if k + 1 < q[self.head] - cap + 1:  # overwritten while we read it
            return None
        return seen


class GenLogs:
    """All slot rings of a run, in one anonymous shared mapping made before
    the writers and runners fork."""

    def __init__(self, keys: list[tuple[int, int]], capacity: int = 1 << 16):
        self.capacity = capacity
        per = SlotLog.words_needed(capacity)
        self._mm = mmap.mmap(-1, max(1, len(keys)) * per * 8)
        self._words = memoryview(self._mm).cast("q")
        self._anchor = ctypes.c_char.from_buffer(self._mm)
        address = ctypes.addressof(self._anchor)
        self.logs = {key: SlotLog(self._words, i * per, capacity, address) for i, key in enumerate(keys)}

    def __getitem__(self, key: tuple[int, int]) -> SlotLog:
        return self.logs[key]

    def close(self) -> None:
        self.logs.clear()
        del self._anchor
        self._words.release()
        self._mm.close()
