"""A random tail-call shape from a seed: entry and target programs,
subprograms, prog_arrays with slots, and what each function does in order.

Pure and deterministic: the same (seed, programs) gives the same shape on
every host (random.Random seeded with a string hashes it with SHA-512).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

CANDIDATES = 3          # programs a slot may hold (the engine's TARGETS_PER_SLOT)
MAX_PROGRAMS = 48
MIN_PROGRAMS = 4        # one entry and a slot's three candidates
MAX_ACTIONS = 4         # calls and tail calls per function
# frames in u32 words: odd sizes, deepest frames smallest, so that every
# caller chain stays far below the verifier's 256 bytes for tail-calling
# subprograms (each frame is rounded up to 32 bytes there)
PROG_FRAMES = (0, 1, 3, 5, 7)
SUB_FRAMES = {1: (0, 1, 3, 5), 2: (0, 1, 3)}


@dataclass(frozen=True)
class Call:
    sub: int            # index into Shape.subs


@dataclass(frozen=True)
class Tail:
    site: int           # index into Shape.sites


@dataclass(frozen=True)
class Site:
    slot: int           # index into Shape.slots
    direct: bool        # constant key (poked jump) or key from memory (indirect)


@dataclass(frozen=True)
class Slot:
    array: int          # index into Shape.arrays
    key: int
    candidates: tuple[int, ...]  # program indices, never an entry


@dataclass(frozen=True)
class Func:
    name: str
    kind: str           # entry | target | sub
    ret: int            # the constant its return value starts from
    frame: int          # u32 canary words on its stack (0: none)
    body: tuple = ()    # Call and Tail, in order
    level: int = 0      # subs: 1 called by programs, 2 called by level-1 subs


@dataclass(frozen=True)
class Shape:
    seed: int
    size: int                       # the programs asked for
    programs: tuple[Func, ...]      # entries first
    subs: tuple[Func, ...]
    arrays: tuple[int, ...]         # max_entries of each prog_array
    slots: tuple[Slot, ...]
    sites: tuple[Site, ...]
    note: str = field(default="", compare=False)  # what a shrink left

    @property
    def name(self) -> str:
        return f"gen-{self.seed}"

    @property
    def entries(self) -> list[int]:
        return [i for i, p in enumerate(self.programs) if p.kind == "entry"]

    def describe(self) -> dict:
        """Its size, as findings and fuzz reports give it."""
        calls = sum(isinstance(a, Call) for f in (*self.programs, *self.subs) for a in f.body)
        return {"seed": self.seed, "programs": len(self.programs), "subprograms": len(self.subs),
                "prog_arrays": len(self.arrays), "slots": len(self.slots),
                "tail_call_sites": len(self.sites), "bpf2bpf_calls": calls,
                "stack_words": sum(f.frame for f in (*self.programs, *self.subs))}


def generate(seed: int, programs: int = 12) -> Shape:
    """The shape of (seed, programs): programs counts entry and target programs."""
    if not MIN_PROGRAMS <= programs <= MAX_PROGRAMS:
        raise ValueError(f"programs must be {MIN_PROGRAMS}..{MAX_PROGRAMS}")
    rng = random.Random(f"farm-gen:{seed}:{programs}")
    n_entries = 1 + rng.randrange(min(3, programs - CANDIDATES))
    targets = list(range(n_entries, programs))
    arrays = tuple(rng.randint(1, 4) for _ in range(rng.choice((1, 1, 2, 3))))
    slots = tuple(Slot(a, k, tuple(rng.sample(targets, CANDIDATES)))
                  for a, size in enumerate(arrays) for k in range(size))
    n_subs = rng.randint(1, max(1, programs // 3))
    levels = [1 if i < (n_subs + 1) // 2 else 2 for i in range(n_subs)]
    sites: list[Site] = []

    def tail() -> Tail:
        sites.append(Site(rng.randrange(len(slots)), rng.random() < 0.6))
        return Tail(len(sites) - 1)

    def body(callees: list[int], tail_weight: float, least: int = 1) -> tuple:
        out = []
        for _ in range(rng.randint(least, MAX_ACTIONS)):
            if callees and rng.random() > tail_weight:
                out.append(Call(rng.choice(callees)))
            else:
                out.append(tail())
        return tuple(out)

    level1 = [i for i, lv in enumerate(levels) if lv == 1]
    level2 = [i for i, lv in enumerate(levels) if lv == 2]
    progs = []
    for i in range(programs):
        kind = "entry" if i < n_entries else "target"
        name = f"e{i}" if kind == "entry" else f"p{i}"
        progs.append(Func(name, kind, rng.randrange(1, 1 << 16), rng.choice(PROG_FRAMES),
                          body(level1, 0.5, least=int(kind == "entry"))))  # a leaf ends a chain
    subs = []
    for i, lv in enumerate(levels):
        subs.append(Func(f"s{i}", "sub", rng.randrange(1, 1 << 16), rng.choice(SUB_FRAMES[lv]),
                         body(level2 if lv == 1 else [], 0.6), level=lv))
    return prune(Shape(seed, programs, tuple(progs), tuple(subs), arrays, slots, tuple(sites)))


def prune(shape: Shape) -> Shape:
    """Drop subprograms nobody calls (clang would drop them anyway) and
    renumber calls; sites and slots stay as they are."""
    # calls nest two deep (programs -> level 1 -> level 2)
    reach = {a.sub for f in shape.programs for a in f.body if isinstance(a, Call)}
    reach |= {a.sub for i in list(reach) for a in shape.subs[i].body if isinstance(a, Call)}
    used = sorted(reach)
    renum = {old: new for new, old in enumerate(used)}

    def fix(f: Func) -> Func:
        return replace(f, body=tuple(Call(renum[a.sub]) if isinstance(a, Call) else a for a in f.body))
    subs = tuple(replace(fix(shape.subs[old]), name=f"s{new}") for new, old in enumerate(used))
    return replace(shape, programs=tuple(fix(p) for p in shape.programs), subs=subs)
