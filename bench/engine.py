#!/usr/bin/env python3
"""Engine benchmark, all measured in this run on the same CPU:

- prog_array updates/s of the engine's writer (SlotWriter, with its
  generation log) vs a C libbpf loop this script compiles, vs one bpftool
  process per update; for a direct (poked) slot and an indirect one, with
  replace-only churn (a delete waits for an RCU grace period in the kernel,
  which would hide the loops' own cost).
- verified tail calls/s of the engine's runner (WindowRunner: counters read
  and every window judged) vs raw BPF_PROG_TEST_RUN of the same program with
  the same repeat.

Last line: one JSON object: cpu, seconds, repeat; direct-main and indirect
(each engine_updates_per_s, c_updates_per_s, bpftool_updates_per_s);
update_ratio_vs_c, update_ratio_vs_c_indirect, update_ratio_vs_bpftool,
verified_tail_calls_per_s, raw_tail_calls_per_s, verified_ratio_vs_raw.
Run as root: .venv/bin/python bench/engine.py [--smoke]  (--smoke: 0.2 s per
measurement, repeat 100: does the bench still work, not a measurement)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue module: bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.bpf import syscall  # noqa: E402
from farm.bpf.corpus import TOPOLOGIES, target_id  # noqa: E402
from farm.bpf.loader import ensure_bpffs, load_topology, remove_pins  # noqa: E402
from farm.bpf.pins import PinGuard, run_pin_dir  # noqa: E402
from farm.stress.engine import SlotWriter, WindowRunner  # noqa: E402
from farm.stress.genlog import GenLogs  # noqa: E402

HERE = Path(__file__).resolve().parent


def build_c_loop(tmp: Path) -> Path:
    exe = tmp / "update_loop"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "update_loop.c"), "-lbpf"], check=True)
    return exe


def engine_updates(lt, seconds: float) -> float:
    logs = GenLogs([(0, 0)])
    lt.prog_array().install(0, lt.targets(0)[0][1])
    logs[(0, 0)].record(target_id(0, 0))
    w = SlotWriter([(0, 0)], [lt], logs, ("replace",))
    t = time.monotonic()
    n = w.run(time.monotonic_ns() + int(seconds * 1e9))
    rate = n / (time.monotonic() - t)
    logs.close()
    return rate


def c_updates(exe: Path, lt, seconds: float) -> float:
    progs = [str(lt.pin_dir / "progs" / f"t0_{k}") for k in (1, 2, 0)]
    out = subprocess.run([str(exe), str(lt.pin_dir / "maps" / "jmp_table"), str(seconds), "r", *progs],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) / float(out[1])


def bpftool_updates(lt, seconds: float) -> float:
    n, t, end = 0, time.monotonic(), time.monotonic() + seconds
    while time.monotonic() < end:
        subprocess.run(["bpftool", "map", "update", "pinned", str(lt.pin_dir / "maps" / "jmp_table"),
                        "key", "0", "0", "0", "0", "value", "pinned",
                        str(lt.pin_dir / "progs" / f"t0_{n % 3}")], check=True)
        n += 1
    return n / (time.monotonic() - t)


def verified_vs_raw(lt, cpu: int, repeat: int, seconds: float) -> tuple[float, float]:
    logs = GenLogs([(0, 0)])
    tid, fd = lt.targets(0)[0]
    lt.prog_array().install(0, fd)
    logs[(0, 0)].record(tid)
    runner = WindowRunner(cpu, [lt], logs, repeat, time.monotonic_ns())
    t, end = time.monotonic(), time.monotonic() + seconds
    while time.monotonic() < end:
        runner.round()
    verified = runner.verified / (time.monotonic() - t)
    assert not runner.records, "the bench's own runs produced findings"
    raw = syscall.TestRun(lt.prog_fds["entry"], repeat)
    n, t, end = 0, time.monotonic(), time.monotonic() + seconds
    while time.monotonic() < end:
        raw.run()
        n += repeat  # one tail call per run in direct-main
    logs.close()
    return verified, n / (time.monotonic() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--repeat", type=int, default=20000)
    ap.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the bench runs")
    a = ap.parse_args()
    if a.smoke:
        a.seconds, a.repeat = 0.2, 100
    if os.geteuid() != 0:
        print("bench/engine.py needs root", file=sys.stderr)
        return 3
    os.sched_setaffinity(0, {a.cpu})
    ensure_bpffs()
    root = run_pin_dir("bench")
    guard = PinGuard(root)
    loaded = []
    out: dict = {"cpu": a.cpu, "seconds": a.seconds, "repeat": a.repeat}
    try:
        root.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
            exe = build_c_loop(Path(tmp))
            for name in ("direct-main", "indirect"):
                lt = load_topology(TOPOLOGIES[name], 1, None, root / name)
                loaded.append(lt)
                eng, c = engine_updates(lt, a.seconds), c_updates(exe, lt, a.seconds)
                tool = bpftool_updates(lt, min(a.seconds, 2.0))
                out[name] = {"engine_updates_per_s": round(eng), "c_updates_per_s": round(c),
                             "bpftool_updates_per_s": round(tool, 1)}
                print(f"{name:12} updates/s: engine {eng:,.0f}  C libbpf {c:,.0f}  "
                      f"bpftool/update {tool:,.1f}  -> {eng / c:.2f}x C, {eng / tool:,.0f}x bpftool",
                      file=sys.stderr)
            verified, raw = verified_vs_raw(loaded[0], a.cpu, a.repeat, a.seconds)
            print(f"tail calls/s on CPU {a.cpu}: verified {verified:,.0f}  raw {raw:,.0f}  -> "
                  f"{verified / raw:.2f}x", file=sys.stderr)
    finally:
        for lt in loaded:
            lt.close()
        remove_pins(root)
        guard.release()
    d = out["direct-main"]
    out.update(update_ratio_vs_c=round(d["engine_updates_per_s"] / d["c_updates_per_s"], 3),
               update_ratio_vs_c_indirect=round(out["indirect"]["engine_updates_per_s"]
                                                / out["indirect"]["c_updates_per_s"], 3),
               update_ratio_vs_bpftool=round(d["engine_updates_per_s"] / d["bpftool_updates_per_s"], 1),
               verified_tail_calls_per_s=round(verified), raw_tail_calls_per_s=round(raw),
               verified_ratio_vs_raw=round(verified / raw, 3))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
