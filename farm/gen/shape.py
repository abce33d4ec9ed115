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
class Hook:
    """A trampoline on a function of the shape, counting its own runs."""
    kind: str           # fentry | fexit
    func: str           # the traced function: a subprogram's or a program's name

    @property
    def attach_type(self) -> int:
        return {"fentry": 24, "fexit": 25}[self.kind]  # BPF_TRACE_FENTRY, BPF_TRACE_FEXIT


@dataclass(frozen=True)
class Shape:
    seed: int
    size: int                       # the programs asked for
    programs: tuple[Func, ...]      # entries first
    subs: tuple[Func, ...]
    arrays: tuple[int, ...]         # max_entries of each prog_array
    slots: tuple[Slot, ...]
    sites: tuple[Site, ...]
    hooks: tuple[Hook, ...] = ()    # fentry/fexit, if asked for (guests: not under lockdown)
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
                "tail_call_sites": len(self.sites), "bpf2bpf_calls": calls, "hooks": len(self.hooks),
                "stack_words": sum(f.frame for f in (*self.programs, *self.subs))}


def traced_programs(shape: Shape, hook: Hook) -> list[str]:
    """The programs holding a copy of the hooked function: a subprogram is
    part of every program that calls it, directly or through a level-1
    subprogram, and a trampoline attaches to one program's copy."""
    subs = {f.name: i for i, f in enumerate(shape.subs)}
    if hook.func not in subs:
        return [hook.func]
    target = subs[hook.func]

    def calls(f: Func) -> bool:
        return any(isinstance(a, Call) and (a.sub == target or calls(shape.subs[a.sub])) for a in f.body)
    return [p.name for p in shape.programs if calls(p)]


def generate(seed: int, programs: int = 12, hooks: bool = False) -> Shape:
    """The shape of (seed, programs): programs counts entry and target
    programs. hooks adds fentry/fexit trampolines to the same shape."""
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
    shape = prune(Shape(seed, programs, tuple(progs), tuple(subs), arrays, slots, tuple(sites)))
    return add_hooks(shape) if hooks else shape


def add_hooks(shape: Shape) -> Shape:
    """fentry and fexit on some subprograms (each must run once per call,
    whatever tail calls the subprogram makes), fentry on an entry (once per
    run) and on a target (never: a tail call jumps past its trampoline),
    as the kernel's tailcall_bpf2bpf_fentry* selftests assert. From a
    random stream of their own, so the programs stay those of the seed."""
    rng = random.Random(f"farm-gen-hooks:{shape.seed}:{shape.size}")
    chosen = [Hook(rng.choice(("fentry", "fexit")), s.name) for s in shape.subs if rng.random() < 0.5]
    chosen.append(Hook("fentry", shape.programs[rng.choice(shape.entries)].name))
    targets = [p.name for p in shape.programs if p.kind == "target"]
    if targets and rng.random() < 0.5:
        chosen.append(Hook("fentry", rng.choice(targets)))
    return replace(shape, hooks=tuple(chosen))

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
    names = {shape.subs[old].name: f"s{new}" for new, old in enumerate(used)}
    hooks = tuple(replace(h, func=names[h.func]) if h.func in names else h for h in shape.hooks
                  if h.func in names or any(p.name == h.func for p in shape.programs))
    return replace(shape, programs=tuple(fix(p) for p in shape.programs), subs=subs, hooks=hooks)
