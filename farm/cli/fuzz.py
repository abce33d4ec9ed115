"""`farm fuzz`: generated tail-call shapes, seed after seed, each checked
count for count against the reference model; failing seeds are shrunk and
exported as reproducers (farm.gen.fuzz, docs/fuzz.md). On this host, or in
a fresh guest of the virtual lab with --cpu-model (farm.gen.fuzzlab)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from farm.errors import BadInput, FarmError

DEFAULT_SEEDS = "0-99"


def add_commands(sub) -> None:
    f = sub.add_parser("fuzz", help="generated tail-call shapes against the reference model, shrunk on failure")
    f.add_argument("--seeds", default=DEFAULT_SEEDS, metavar="A-B", help=f"seeds to run (default {DEFAULT_SEEDS})")
    f.add_argument("--programs", type=int, default=12, metavar="N", help="programs per shape (default 12)")
    f.add_argument("--hooks", action="store_true",
                   help="fentry/fexit trampolines on the shapes (a kernel under lockdown refuses them)")
    f.add_argument("--budget", metavar="DURATION", help="stop starting seeds after this long (e.g. 10m)")
    f.add_argument("--json", type=Path, metavar="PATH", help="write the report JSON here")
    f.add_argument("--export", type=Path, metavar="DIR", help="write a reproducer of each finding into DIR/<seed>/")
    f.add_argument("--cpu-model", metavar="M", help="run in a fresh virtual-lab guest of this QEMU CPU model")
    f.add_argument("--kernel", metavar="deb:PKG", help="the guest's kernel (with --cpu-model)")
    f.add_argument("--cell", metavar="NAME", help="the guest's mitigation cell (with --cpu-model)")
    # test-only: make the kernel differ from the model on purpose (docs/fuzz.md)
    f.add_argument("--inject", choices=("wrong-slot",), help=argparse.SUPPRESS)
    f.set_defaults(handler=_fuzz)


def options(args):
    """The arguments as FuzzOptions, every bad one refused in one line."""
    from farm.gen.fuzz import FuzzOptions, check_programs, parse_seeds
    from farm.spec import parse_duration
    budget = None
    if args.budget is not None:
        try:
            budget = parse_duration(args.budget)
        except ValueError as e:
            raise BadInput(f"--budget: {e}") from None
    for flag, path in (("--json", args.json), ("--export", args.export)):
        if path is not None and flag == "--json" and path.is_dir():
            raise BadInput(f"--json: {path} is a directory")
        if path is not None and flag == "--export" and path.exists() and not path.is_dir():
            raise BadInput(f"--export: {path} exists and is not a directory")
    if (args.kernel or args.cell) and not args.cpu_model:
        raise BadInput("--kernel and --cell choose a guest: give --cpu-model too")
    return FuzzOptions(seeds=parse_seeds(args.seeds), programs=check_programs(args.programs), hooks=args.hooks,
                       budget_s=budget,
                       export_dir=args.export, inject=args.inject)


class Progress:
    """A live line per seed on a terminal; on a log, a line per finding only."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.live = stream, stream.isatty()
        self._open = False

    def seed(self, d) -> None:
        if self.live:
            self.stream.write(f"\rseed {d.seed} ({d.index}/{d.total})  graphs {d.graphs}  "
                              f"tail calls {d.tail_calls:,}  findings {d.findings}  {d.elapsed:.1f}s".ljust(78))
            self.stream.flush()
            self._open = True

    def stage(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(f"· {text}\n")
        self.stream.flush()

    def end(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False


def summary(doc: dict) -> list[str]:
    lines = [f"fuzz: {doc['graphs']} graphs, {doc['programs']} programs, {doc['tail_calls_verified']:,} tail calls "
             f"verified, {len(doc['findings'])} findings in {doc['seconds']:.1f}s "
             f"({doc['shapes_per_minute']:g} shapes/min)" + (", stopped by --budget" if doc["stopped_by_budget"] else "")]
    for f in doc["findings"]:
        shrunk = f.get("shrunk")
        size = (f" shrunk to {shrunk['programs']} programs, {shrunk['tail_call_sites']} sites"
                if shrunk else "")
        lines.append(f"  seed {f['seed']}: {f['kind']}{size}"
                     + (f" -> {f['reproducer']}" if f.get("reproducer") else "") + f": {f['summary']}")
    for e in doc["errors"]:
        lines.append(f"  seed {e['seed']}: not checked: {e['error']}")
    if doc.get("error"):
        lines.append(f"  error: {doc['error']}")
    return lines


def write_json(path: Path | None, doc: dict) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as e:
        raise FarmError(f"--json: cannot write {path}: {e.strerror}") from None


def _fuzz(args) -> int:
    opts = options(args)
    if args.cpu_model:
        from farm.gen.fuzzlab import lab_fuzz
        return lab_fuzz(args, opts)
    if os.geteuid() != 0:
        raise FarmError("farm fuzz needs root (CAP_BPF and CAP_SYS_ADMIN) to load and run BPF programs")
    from farm.gen.fuzz import run_fuzz
    progress = Progress()
    try:
        code, doc = run_fuzz(opts, on_seed=progress.seed, on_stage=progress.stage)
    finally:
        progress.end()
    write_json(args.json, doc)
    print("\n".join(summary(doc)), flush=True)
    return code
