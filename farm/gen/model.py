"""The reference model: what a shape must do on a correct kernel, in plain
Python, from the shape and the slots' contents alone.

It follows current upstream (the x86-64 JIT since "bpf, x64: Fix tailcall
hierarchy", 6.10, and the interpreter since its own fix):
- one tail-call counter per run of an entry, shared by every bpf2bpf call
  and every program the run reaches (before 6.10 a subprogram's tail calls
  did not count in its caller's: a hierarchy took more than 33);
- a tail call is refused once 33 were taken (MAX_TAIL_CALL_CNT);
- an attempt on an empty slot falls through and costs nothing: the JIT
  bumps the counter only when the slot is populated (6.1's JIT bumps it
  before it reads the slot, so there an empty slot costs one);
- a taken tail call never returns: in a subprogram, the target's return
  value becomes the subprogram's.
These are what the kernel's selftests assert (prog_tests/tailcalls.c:
tailcall_3, tailcall_bpf2bpf_*, tailcall_bpf2bpf_hierarchy_*). An older
kernel that differs is a finding, which known-issues can mark as known.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from farm.gen.shape import Call, Shape, Tail

TCC_LIMIT = 33          # MAX_TAIL_CALL_CNT
GUARD = 63              # gen.h's depth guard: program runs per entry run
EMPTY = -1              # a slot's state: the index of its candidate, or EMPTY
U32 = 0xFFFFFFFF

# counter layout of a generated shape (gen.h): two fixed words, then runs of
# every program, calls of every subprogram, attempts and falls of every site
G_CANARY, G_GUARD, G_FIXED = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    programs: int
    subs: int
    sites: int
    hooks: int = 0

    def run(self, p: int) -> int:
        return G_FIXED + p

    def call(self, s: int) -> int:
        return G_FIXED + self.programs + s

    def attempt(self, site: int) -> int:
        return G_FIXED + self.programs + self.subs + site

    def fall(self, site: int) -> int:
        return G_FIXED + self.programs + self.subs + self.sites + site

    def hook(self, h: int) -> int:
        return G_FIXED + self.programs + self.subs + 2 * self.sites + h

    @property
    def size(self) -> int:
        return G_FIXED + self.programs + self.subs + 2 * self.sites + self.hooks


def layout(shape: Shape) -> Layout:
    return Layout(len(shape.programs), len(shape.subs), len(shape.sites), len(shape.hooks))


def hook_expects(shape: Shape, lay: Layout, h: int, counters: list[int]) -> int:
    """What hook h must have counted, given the shape's other counters: a
    subprogram's trampoline runs once per call, an entry's once per run
    (BPF_PROG_TEST_RUN calls through it), a target's never (a tail call
    jumps past it)."""
    func = shape.hooks[h].func
    for s, f in enumerate(shape.subs):
        if f.name == func:
            return counters[lay.call(s)]
    p = next(i for i, f in enumerate(shape.programs) if f.name == func)
    return counters[lay.run(p)] if shape.programs[p].kind == "entry" else 0


@dataclass
class Outcome:
    """One run of an entry: every counter, the tail calls taken, the return."""
    counters: list[int]
    tail_calls: int
    retval: int
    runs: int = 1


@dataclass
class _Run:
    shape: Shape
    state: dict[int, int]
    lay: Layout
    counters: list[int] = field(default_factory=list)
    tcc: int = 0
    depth: int = 0
    taken: int = 0

    def program(self, p: int) -> int:
        self.depth += 1
        self.counters[self.lay.run(p)] += 1
        return self.body(self.shape.programs[p])

    def sub(self, s: int) -> int:
        self.counters[self.lay.call(s)] += 1
        return self.body(self.shape.subs[s])

    def body(self, f) -> int:
        acc = f.ret
        for a in f.body:
            if isinstance(a, Call):
                acc = (acc * 3 + self.sub(a.sub)) & U32
                continue
            assert isinstance(a, Tail)
            if self.depth >= GUARD:
                self.counters[G_GUARD] += 1
                continue
            self.counters[self.lay.attempt(a.site)] += 1
            target = self._target(a.site)
            if target is None:
                self.counters[self.lay.fall(a.site)] += 1
                continue
            self.taken += 1
            return self.program(target)  # replaces this frame: its value is ours
        return acc

    def _target(self, site: int) -> int | None:
        if self.tcc >= TCC_LIMIT:
            return None
        slot = self.shape.sites[site].slot
        k = self.state.get(slot, EMPTY)
        if k == EMPTY:
            return None  # upstream: an empty slot is not counted
        self.tcc += 1
        return self.shape.slots[slot].candidates[k]


def run_entry(shape: Shape, entry: int, state: dict[int, int]) -> Outcome:
    """One run of program `entry` with slot i holding candidate state[i]
    (missing or EMPTY: the slot is empty)."""
    lay = layout(shape)
    r = _Run(shape, state, lay, [0] * lay.size)
    retval = r.program(entry)
    for h in range(lay.hooks):
        r.counters[lay.hook(h)] = hook_expects(shape, lay, h, r.counters)
    return Outcome(r.counters, r.taken, retval)


def reachable(shape: Shape, entry: int, allowed: dict[int, set[int]]) -> tuple[set[int], set[int]]:
    """Programs and subprograms a run of `entry` may reach while slot i may
    hold any of allowed[i] (candidate indices or EMPTY) at each attempt:
    what the slots held during a window that writers churned."""
    progs, subs = {entry}, set()
    todo = [shape.programs[entry]]
    while todo:
        f = todo.pop()
        for a in f.body:
            if isinstance(a, Call):
                if a.sub not in subs:
                    subs.add(a.sub)
                    todo.append(shape.subs[a.sub])
                continue
            slot = shape.sites[a.site].slot
            for k in allowed.get(slot, {EMPTY}):
                if k != EMPTY and (p := shape.slots[slot].candidates[k]) not in progs:
                    progs.add(p)
                    todo.append(shape.programs[p])
    return progs, subs
