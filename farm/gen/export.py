"""A failing shape as a reproducer anyone can run without farm, in the
shape of a kernel selftest: DIR/<seed>/ holds shape.bpf.c and gen.h (they
compile on their own with clang), run.py (standard-library Python: bpftool
loads, the bpf() syscall does the rest; farm/gen/standalone.py), a
Makefile, expected.json (the model's counts, the counter names, what every
slot holds) and README.md (the shape, what the model expects and why, what
this kernel did)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from farm.bpf.corpus import PROGS_DIR
from farm.bpf.toolchain import BPF_CFLAGS
from farm.errors import InfraError
from farm.gen import emit, model
from farm.gen.model import EMPTY, layout, run_entry
from farm.gen.shape import Call, Shape, Tail
from farm.gen.shrink import Case

LOADER = Path(__file__).with_name("standalone.py")
MAKEFILE = """\
# make: compile shape.o;  sudo make run: load it, run the entry, compare (needs clang, bpftool, libbpf headers)
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
shape.o: shape.bpf.c gen.h
\tclang {cflags} -I. -idirafter $(ARCH_INC) -c shape.bpf.c -o shape.o
run: shape.o
\tpython3 run.py
clean:
\trm -f shape.o
.PHONY: run clean
"""


def counter_names(shape: Shape) -> list[str]:
    """gen.h's counters by name, in model.Layout's order."""
    lay = layout(shape)
    names = [""] * lay.size
    names[model.G_CANARY], names[model.G_GUARD] = "canary-failed", "depth-guard-stopped"
    for p, f in enumerate(shape.programs):
        names[lay.run(p)] = f"runs:{f.name}"
    for s, f in enumerate(shape.subs):
        names[lay.call(s)] = f"calls:{f.name}"
    owner = {a.site: f.name for f in (*shape.programs, *shape.subs) for a in f.body if isinstance(a, Tail)}
    for i, site in enumerate(shape.sites):
        slot = shape.slots[site.slot]
        where = f"{owner.get(i, '?')}->{emit.array_name(slot.array)}[{slot.key}]"
        names[lay.attempt(i)], names[lay.fall(i)] = f"attempts:{where}#{i}", f"falls:{where}#{i}"
    return names


def slots_held(case: Case) -> list[dict]:
    """What run.py installs in every slot: the state's candidate, or the
    injected program where the fault goes."""
    s = case.shape
    out = []
    for i, slot in enumerate(s.slots):
        k = case.state[i]
        model_holds = None if k == EMPTY else s.programs[slot.candidates[k]].name
        injected = bool(case.inject and case.inject[0] == i)
        holds = s.programs[case.inject[1]].name if injected else model_holds
        out.append({"array": emit.array_name(slot.array), "key": slot.key, "holds": holds,
                    "model_holds": model_holds, "injected": injected,
                    "candidates": [s.programs[p].name for p in slot.candidates]})
    return out


def expected(case: Case, repeat: int, seed: int, signature: str, observed) -> dict:
    s = case.shape
    want = run_entry(s, case.entry, case.state_dict)
    lay = layout(s)
    return {"seed": seed, "signature": signature, "entry": s.programs[case.entry].name, "repeat": repeat,
            "cflags": list(BPF_CFLAGS),
            "slots": slots_held(case),
            "counters": {"map": "gstats", "names": counter_names(s),
                         "taken_pairs": [[lay.attempt(i), lay.fall(i)] for i in range(lay.sites)]},
            "expected_per_run": want.counters, "tail_calls_per_run": want.tail_calls, "retval": want.retval,
            "observed_by_farm": {"counters": observed.delta, "retval": observed.retval, "runs": repeat}}


def describe_functions(shape: Shape) -> list[str]:
    lines = []
    for f in (*shape.programs, *shape.subs):
        acts = []
        for a in f.body:
            if isinstance(a, Call):
                acts.append(f"call {shape.subs[a.sub].name}")
            else:
                site = shape.sites[a.site]
                slot = shape.slots[site.slot]
                acts.append(f"tail call {emit.array_name(slot.array)}[{slot.key}] "
                            f"({'constant key' if site.direct else 'key from memory'})")
        frame = f", {f.frame} stack words" if f.frame else ""
        lines.append(f"- `{f.name}` ({f.kind}{frame}): {', '.join(acts) or 'returns'}")
    return lines


def readme(exp: dict, case: Case, original: Shape, problem, kernel: str) -> str:
    s = case.shape
    names = exp["counters"]["names"]
    got, per_run = exp["observed_by_farm"]["counters"], exp["expected_per_run"]
    diffs = [f"| {names[i]} | {per_run[i] * exp['repeat']} | {got[i]} |" for i in range(len(names))
             if got[i] != per_run[i] * exp["repeat"]]
    slots = []
    for sl in exp["slots"]:
        held = sl["holds"] or "nothing"
        note = (f" **(injected: the model thinks it holds {sl['model_holds'] or 'nothing'}; "
                f"{sl['holds']} is none of its candidates {', '.join(sl['candidates'])})**" if sl["injected"] else "")
        slots.append(f"- `{sl['array']}[{sl['key']}]` holds {held}{note}")
    injected = any(sl["injected"] for sl in exp["slots"])
    d = s.describe()
    return "\n".join([
        f"# farm fuzz reproducer: seed {exp['seed']}", "",
        f"`{exp['signature']}`: {problem.summary}", "",
        f"Generated by `farm fuzz` (seed {exp['seed']}, {len(original.programs)} programs) and shrunk to "
        f"{d['programs']} programs, {d['subprograms']} subprograms, {d['slots']} slots, "
        f"{d['tail_call_sites']} tail-call sites, {d['bpf2bpf_calls']} bpf2bpf calls. "
        "Names are the original shape's.", "",
        *(["**This difference is an injected fault** (`farm fuzz --inject wrong-slot`, a test of farm "
           "itself): run.py installs a program into a slot that the model does not expect there, as the "
           "fuzz run did, so the kernel is right and the counts must differ. It shows the reproducer "
           "works end to end.", ""] if injected else []),
        "## The shape", "",
        f"Entry `{exp['entry']}` is run {exp['repeat']} times with BPF_PROG_TEST_RUN. Every function "
        "counts its runs (programs) or calls (subprograms), and every tail-call site counts its attempts "
        "and its falls through (an attempt that did not jump). Functions:", "",
        *describe_functions(s), "", "The slots while it runs:", "", *slots, "",
        "## What the model expects, and why", "",
        "The reference model (farm/gen/model.py) follows upstream's tail-call semantics:", "",
        (model.__doc__ or "").strip(), "",
        f"So one run of `{exp['entry']}` takes {exp['tail_calls_per_run']} tail calls and returns "
        f"{exp['retval']:#x}; expected.json has every counter per run (`expected_per_run`, named by "
        "`counters.names`).", "",
        f"## What this kernel did ({kernel})", "",
        "| counter | expected | observed |", "| --- | --- | --- |", *diffs, "",
        f"Return value: expected {exp['retval']:#x}, observed {exp['observed_by_farm']['retval']:#x}.", "",
        "## Run it (root; clang, bpftool and libbpf's headers, no farm)", "",
        "```", "make            # clang " + " ".join(exp["cflags"]) + " -I. -c shape.bpf.c -o shape.o",
        "sudo make run    # or: sudo python3 run.py", "```", "",
        "run.py compiles shape.bpf.c if shape.o is missing, loads it with `bpftool prog loadall` under "
        "/sys/fs/bpf/farm-repro-*, fills the slots as above, runs the entry, prints expected against "
        "observed counters and removes its pins. Exit 0: as the model says; 1: it differs; 2: it could "
        "not run here.", ""])


def write(root: Path, case: Case, observed, repeat: int, original: Shape, problem) -> Path:
    """DIR/<seed>/: the reproducer of one finding."""
    import platform
    out = root / str(original.seed)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shape.bpf.c").write_text(emit.source(case.shape))
        shutil.copy(PROGS_DIR / emit.HEADER, out / emit.HEADER)
        shutil.copy(LOADER, out / "run.py")
        (out / "run.py").chmod(0o755)
        (out / "Makefile").write_text(MAKEFILE.format(cflags=" ".join(BPF_CFLAGS)))
        exp = expected(case, repeat, original.seed, f"{problem.kind}: {original.name}", observed)
        (out / "expected.json").write_text(json.dumps(exp, indent=2) + "\n")
        (out / "README.md").write_text(readme(exp, case, original, problem, platform.release()))
    except OSError as e:
        raise InfraError(f"--export: cannot write {out}: {e.strerror}") from None
    return out
