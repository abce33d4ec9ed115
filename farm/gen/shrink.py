"""Shrinking a failing shape: the smallest program set that still fails the
same way, found greedily. Pure: whether a candidate "still reproduces" is
the caller's callback (farm fuzz loads it and runs the failing entry in the
failing state through the kernel; tests may pass a plain function).

A Case is a shape plus the one run that failed: its entry, every slot's
state, and an optional injected slot (a program installed behind the
model's back: the test fault of `farm fuzz --inject`). Every step removes
or simplifies something, renumbering programs, subprograms, sites, slots
and prog_arrays so the result is again a shape emit, load and the model
take as is. Names stay: e3 and p7 of the shrunk shape are e3 and p7 of the
original, so a reproducer can be read against the seed's full shape.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

from farm.gen.model import EMPTY, reachable
from farm.gen.shape import Call, Func, Shape, Site, Tail

MAX_TRIES = 300     # candidates run through the callback, at most


@dataclass(frozen=True)
class Case:
    shape: Shape
    entry: int                          # index of the failing entry
    state: tuple[int, ...]              # per slot: its candidate index, or EMPTY
    inject: tuple[int, int] | None = None  # (slot, program) installed though no candidate

    @property
    def state_dict(self) -> dict[int, int]:
        return dict(enumerate(self.state))


@dataclass
class Shrunk:
    case: Case
    tries: int          # candidates the callback ran
    steps: int          # candidates that still reproduced (each one smaller)
    exhausted: bool     # stopped by MAX_TRIES or the caller, not at a fixed point


def shrink(case: Case, reproduces: Callable[[Case], bool], max_tries: int = MAX_TRIES,
           stop: Callable[[], bool] = lambda: False) -> Shrunk:
    """Greedy: pass after pass over every kind of step, keeping each
    candidate the callback says still fails the same way, until a whole
    pass keeps nothing."""
    cur = compact(case)
    seen = {cur}
    tries = steps = 0

    def get() -> Case:
        return cur

    while True:
        progress = False
        for step in _STEPS:
            for cand in step(get):
                if tries >= max_tries or stop():
                    return Shrunk(cur, tries, steps, True)
                if cand is None:
                    continue
                cand = compact(cand)
                if cand in seen:
                    continue
                seen.add(cand)
                tries += 1
                if reproduces(cand):
                    cur, steps, progress = cand, steps + 1, True
        if not progress:
            return Shrunk(cur, tries, steps, False)


# --- the steps: each yields candidates lazily from the case current then ---

def _unreached(get) -> Iterator[Case | None]:
    """Every program the failing run cannot reach, at once (and every other entry)."""
    c = get()
    allowed = {s: {k} for s, k in enumerate(c.state)}
    keep, _ = reachable(c.shape, c.entry, allowed)
    if c.inject:
        keep |= reachable(c.shape, c.inject[1], allowed)[0]
    drop = set(range(len(c.shape.programs))) - keep
    yield drop_programs(c, drop) if drop else None


def _programs(get) -> Iterator[Case | None]:
    for name in reversed([p.name for p in get().shape.programs]):
        c = get()
        yield drop_programs(c, {i}) if (i := _index(c.shape.programs, name)) is not None else None


def _subs(get) -> Iterator[Case | None]:
    for name in reversed([s.name for s in get().shape.subs]):
        c = get()
        if (i := _index(c.shape.subs, name)) is not None:
            yield _map_bodies(c, lambda f: tuple(a for a in f.body if a != Call(i)))


def _slots(get) -> Iterator[Case | None]:
    for slot in reversed(range(len(get().shape.slots))):
        c = get()
        if slot < len(c.shape.slots):
            yield _map_bodies(c, lambda f: tuple(a for a in f.body if not (
                isinstance(a, Tail) and c.shape.sites[a.site].slot == slot)))


def _actions(get) -> Iterator[Case | None]:
    for name in [f.name for f in (*get().shape.subs, *get().shape.programs)][::-1]:
        for j in reversed(range(len(_func(get().shape, name).body))):
            c = get()
            f = _func(c.shape, name)
            if f is not None and j < len(f.body):
                yield _map_bodies(c, lambda g: g.body[:j] + g.body[j + 1:] if g.name == name else g.body)


def _frames(get) -> Iterator[Case | None]:
    c = get()
    yield _map_funcs(c, lambda f: replace(f, frame=0))
    for name in [f.name for f in (*c.shape.programs, *c.shape.subs) if f.frame]:
        yield _map_funcs(get(), lambda f: replace(f, frame=0) if f.name == name else f)


def _direct(get) -> Iterator[Case | None]:
    c = get()
    yield replace(c, shape=replace(c.shape, sites=tuple(replace(s, direct=True) for s in c.shape.sites)))
    for i in [i for i, s in enumerate(c.shape.sites) if not s.direct]:
        c = get()
        if i < len(c.shape.sites):
            sites = tuple(replace(s, direct=True) if j == i else s for j, s in enumerate(c.shape.sites))
            yield replace(c, shape=replace(c.shape, sites=sites))


def _tight_arrays(get) -> Iterator[Case | None]:
    """Keys 0.. in each prog_array, in their order, and no larger arrays than that."""
    c = get()
    keys = {a: sorted({s.key for s in c.shape.slots if s.array == a}) for a in range(len(c.shape.arrays))}
    slots = tuple(replace(s, key=keys[s.array].index(s.key)) for s in c.shape.slots)
    arrays = tuple(max(1, len(keys[a])) for a in range(len(c.shape.arrays)))
    yield replace(c, shape=replace(c.shape, slots=slots, arrays=arrays))


def _hooks(get) -> Iterator[Case | None]:
    for hook in reversed(get().shape.hooks):
        c = get()
        yield replace(c, shape=replace(c.shape, hooks=tuple(h for h in c.shape.hooks if h != hook)))


_STEPS = (_unreached, _programs, _subs, _slots, _actions, _hooks, _frames, _direct, _tight_arrays)


# --- edits ---

def _index(funcs, name: str) -> int | None:
    return next((i for i, f in enumerate(funcs) if f.name == name), None)


def _func(shape: Shape, name: str) -> Func | None:
    return next((f for f in (*shape.programs, *shape.subs) if f.name == name), None)


def _map_funcs(c: Case, fn: Callable[[Func], Func]) -> Case:
    s = c.shape
    return replace(c, shape=replace(s, programs=tuple(map(fn, s.programs)), subs=tuple(map(fn, s.subs))))


def _map_bodies(c: Case, fn: Callable[[Func], tuple]) -> Case:
    return _map_funcs(c, lambda f: replace(f, body=fn(f)))


def drop_programs(c: Case, drop: set[int]) -> Case | None:
    """Without these programs: slots lose them as candidates (a slot whose
    state held one is empty now); the failing entry and an injected
    program stay, and so at least one entry."""
    if c.entry in drop or (c.inject and c.inject[1] in drop):
        return None
    s = c.shape
    keep = [i for i in range(len(s.programs)) if i not in drop]
    new = {old: n for n, old in enumerate(keep)}
    slots, state = [], []
    for slot, k in zip(s.slots, c.state):
        cands = tuple(p for p in slot.candidates if p not in drop)
        slots.append(replace(slot, candidates=tuple(new[p] for p in cands)))
        held = EMPTY if k == EMPTY else slot.candidates[k]
        state.append(EMPTY if held == EMPTY or held in drop else cands.index(held))
    shape = replace(s, programs=tuple(s.programs[i] for i in keep), slots=tuple(slots))
    inject = (c.inject[0], new[c.inject[1]]) if c.inject else None
    return Case(shape, new[c.entry], tuple(state), inject)


def compact(c: Case) -> Case:
    """Drop what nothing refers to any more, renumbering the rest: subprograms
    no program calls, sites no function has, slots no site uses, prog_arrays
    no slot is in. The run stays the same run."""
    s = c.shape
    subs: list[int] = []
    todo = [a.sub for f in s.programs for a in f.body if isinstance(a, Call)]
    while todo:
        i = todo.pop(0)
        if i not in subs:
            subs.append(i)
            todo += [a.sub for a in s.subs[i].body if isinstance(a, Call)]
    subs.sort()
    sub_map = {old: n for n, old in enumerate(subs)}
    funcs = [*s.programs, *(s.subs[i] for i in subs)]
    sites = sorted({a.site for f in funcs for a in f.body if isinstance(a, Tail)})
    site_map = {old: n for n, old in enumerate(sites)}
    slots = sorted({s.sites[i].slot for i in sites})
    slot_map = {old: n for n, old in enumerate(slots)}
    arrays = sorted({s.slots[i].array for i in slots})
    array_map = {old: n for n, old in enumerate(arrays)}

    def body(f: Func) -> Func:
        return replace(f, body=tuple(Call(sub_map[a.sub]) if isinstance(a, Call) else Tail(site_map[a.site])
                                     for a in f.body))
    names = {f.name for f in funcs}
    shape = replace(
        s, programs=tuple(body(f) for f in s.programs), subs=tuple(body(s.subs[i]) for i in subs),
        hooks=tuple(h for h in s.hooks if h.func in names),
        arrays=tuple(s.arrays[a] for a in arrays),
        slots=tuple(replace(s.slots[i], array=array_map[s.slots[i].array]) for i in slots),
        sites=tuple(Site(slot_map[s.sites[i].slot], s.sites[i].direct) for i in sites))
    inject = (slot_map[c.inject[0]], c.inject[1]) if c.inject and c.inject[0] in slot_map else None
    return Case(shape, c.entry, tuple(c.state[i] for i in slots), inject)


def size(c: Case) -> int:
    """One number for "smaller": programs, subprograms, actions, slots, stack."""
    s = c.shape
    funcs = (*s.programs, *s.subs)
    return (len(s.programs) + len(s.subs) + len(s.slots) + len(s.arrays) + len(s.hooks)
            + sum(len(f.body) for f in funcs) + sum(f.frame for f in funcs) + sum(not x.direct for x in s.sites))
