#!/usr/bin/env python3
"""Fuzz benchmark, measured in this run on this host:

- generated shapes per minute: farm fuzz's own loop (compile, load, check
  against the model, unload) over consecutive seeds, in an empty build
  cache of its own (a seed checked again costs no compile: that rate is
  printed too);
- verified tail calls/s of one generated shape under the static check
  (every counter read and judged against the model, for every state and
  entry) vs raw BPF_PROG_TEST_RUN of the same entries in the same states
  with the same repeat (no counter reads, no judging). Target: at least
  0.5x, as for the corpus (bench/engine.py).

Last line: one JSON object: seeds, shapes_per_minute, fuzz_seconds,
shapes_per_minute_cached, shape
(its describe()), repeat, verified_tail_calls_per_s, raw_tail_calls_per_s,
verified_ratio_vs_raw, target_ratio.
Run as root: .venv/bin/python bench/fuzz.py [--smoke]  (--smoke: 3 seeds and
repeat 50: does the bench still work, not a measurement)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue module: bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.bpf import syscall  # noqa: E402
from farm.bpf.loader import ensure_bpffs, remove_pins  # noqa: E402
from farm.bpf.pins import PinGuard, run_pin_dir  # noqa: E402
from farm.gen.check import check_static, one_cpu, states  # noqa: E402
from farm.gen.fuzz import Fuzzer, FuzzOptions  # noqa: E402
from farm.gen.load import load_shape  # noqa: E402
from farm.gen.model import run_entry  # noqa: E402
from farm.gen.shape import generate  # noqa: E402

TARGET_RATIO = 0.5
SHAPE_SEED = 9      # many tail calls a run: the check's per-run work is what is measured


def shapes_per_minute(seeds: int, pins: Path) -> tuple[float, float]:
    fz = Fuzzer(FuzzOptions(seeds=range(seeds)), pins)
    t = time.monotonic()
    fz.run(range(seeds))
    dt = time.monotonic() - t
    assert fz.tally.graphs == seeds and not fz.tally.findings, (fz.tally.findings, fz.tally.errors)
    return fz.tally.graphs * 60 / dt, dt


def tail_call_rates(ls, repeat: int) -> tuple[float, float]:
    """(verified/s under check_static, raw/s of the same test runs)."""
    shape = ls.shape
    t = time.monotonic()
    report = check_static(ls, repeat)
    verified = report.tail_calls / (time.monotonic() - t)
    assert not report.problems, report.problems
    runs = []
    for state in states(shape):
        for entry in shape.entries:
            runs.append((state, syscall.TestRun(ls.entry_fd(entry), repeat), run_entry(shape, entry, state).tail_calls))
    taken = 0
    with one_cpu():
        t = time.monotonic()
        for state, run, per_run in runs:
            ls.set_state(state)  # the check sets them too
            run.run()
            taken += per_run * repeat
        raw = taken / (time.monotonic() - t)
    return verified, raw


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/fuzz.py: run as root", file=sys.stderr)
        return 2
    seeds, repeat = (3, 50) if args.smoke else (30, 5000)
    ensure_bpffs()
    pins = run_pin_dir("bench-fuzz")
    guard = PinGuard(pins)
    try:
        pins.mkdir(parents=True)
        cold = tempfile.mkdtemp(prefix="farm-bench-fuzz-")
        before = os.environ.get("FARM_CACHE_DIR")
        os.environ["FARM_CACHE_DIR"] = cold  # every shape compiled, as for new seeds
        try:
            per_min, fuzz_s = shapes_per_minute(seeds, pins / "loop")
            warm_per_min, _ = shapes_per_minute(seeds, pins / "again")
        finally:
            os.environ.pop("FARM_CACHE_DIR") if before is None else os.environ.update(FARM_CACHE_DIR=before)
            shutil.rmtree(cold, ignore_errors=True)
        shape = generate(SHAPE_SEED)
        ls = load_shape(shape, pins / "shape")
        try:
            verified, raw = tail_call_rates(ls, repeat)
        finally:
            ls.close()
    finally:
        remove_pins(pins)
        guard.release()
    ratio = verified / raw
    print(f"{seeds} shapes in {fuzz_s:.1f}s: {per_min:.1f} shapes/min compiled afresh, "
          f"{warm_per_min:.1f} shapes/min checked again (compiled objects cached)")
    print(f"{shape.name}: verified {verified:,.0f} tail calls/s, raw {raw:,.0f}/s: {ratio:.2f}x "
          f"(target {TARGET_RATIO}x{'' if ratio >= TARGET_RATIO else ', MISSED'})")
    print(json.dumps({"seeds": seeds, "shapes_per_minute": round(per_min, 1), "fuzz_seconds": round(fuzz_s, 2),
                      "shapes_per_minute_cached": round(warm_per_min, 1),
                      "shape": shape.describe(), "repeat": repeat, "verified_tail_calls_per_s": round(verified),
                      "raw_tail_calls_per_s": round(raw), "verified_ratio_vs_raw": round(ratio, 3),
                      "target_ratio": TARGET_RATIO}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
