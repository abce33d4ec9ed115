#!/usr/bin/env python3
"""Engine benchmark, all measured in this run on the same CPU:

- prog_array updates/s of the engine's writer (SlotWriter, with its
  generation log) vs a C libbpf loop this script compiles, vs one bpftool
  process per update; for a direct (poked) slot and an indirect one, with
  replace-only churn (a delete waits for an RCU grace period in the kernel,
  which would hide the loops' own cost).
- verified tail calls/s of the engine's runner (WindowRunner: counters read
  and every window judged) vs raw BPF_PROG_TEST_RUN of the same program with
  the same repeat: for direct-main (one tail call a run) and for the fentry
  topology (33 a run, every call of subprog_tail traced by an fentry, whose
  count the oracle checks too). A kernel that cannot load trampolines (this
  host's, under lockdown) gives "fentry": {"unsupported": its reason};
  --in-guest runs the whole bench in a virtual-lab guest whose kernel can.

Last line: one JSON object: cpu, seconds, repeat; direct-main and indirect
(each engine_updates_per_s, c_updates_per_s, bpftool_updates_per_s);
update_ratio_vs_c, update_ratio_vs_c_indirect, update_ratio_vs_bpftool,
verified_tail_calls_per_s, raw_tail_calls_per_s, verified_ratio_vs_raw;
fentry (verified_tail_calls_per_s, raw_tail_calls_per_s, verified_ratio_vs_raw,
or unsupported); with --in-guest, guest (kernel, cpu_model).
Run as root: .venv/bin/python bench/engine.py [--smoke] [--in-guest deb:PACKAGE
[--cpu-model M]]  (--smoke: 0.2 s per measurement, repeat 100: does the bench
still work, not a measurement)
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
from farm.bpf.corpus import TCC_LIMIT, TOPOLOGIES, target_id  # noqa: E402
from farm.bpf.libbpf import Unsupported  # noqa: E402
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


def verified_vs_raw(lt, cpu: int, repeat: int, seconds: float, per_run: int = 1) -> tuple[float, float]:
    """per_run: tail calls in one run of the entry with the slot held full."""
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
        n += repeat * per_run
    logs.close()
    return verified, n / (time.monotonic() - t)


def fentry_bench(root: Path, loaded: list, a) -> dict:
    """The fentry topology's verified tail calls/s against raw runs of it."""
    try:
        lt = load_topology(TOPOLOGIES["fentry"], 1, None, root / "fentry")
    except Unsupported as e:
        remove_pins(root / "fentry")
        print(f"fentry: unsupported here: {e}", file=sys.stderr)
        return {"unsupported": str(e)}
    loaded.append(lt)
    verified, raw = verified_vs_raw(lt, a.cpu, a.repeat, a.seconds, per_run=TCC_LIMIT)
    print(f"fentry tail calls/s on CPU {a.cpu}: verified {verified:,.0f}  raw {raw:,.0f}  -> "
          f"{verified / raw:.2f}x", file=sys.stderr)
    return {"verified_tail_calls_per_s": round(verified), "raw_tail_calls_per_s": round(raw),
            "verified_ratio_vs_raw": round(verified / raw, 3)}


def in_guest(kernel: str, cpu_model: str, argv: list[str]) -> int:
    """This bench, run in a fresh virtual-lab guest; its last line gains
    "guest". Its own progress lines come back on stderr."""
    from farm.guests.qemu import resolve_kernel, run_in_guest
    from farm.guests.vrun import guest_prologue
    k = resolve_kernel(kernel)
    with tempfile.TemporaryDirectory(prefix="farm-bench-guest-") as tmp:
        xchg = Path(tmp)
        out = xchg / "bench.out"
        script = (guest_prologue(xchg) + f"{sys.executable} {Path(__file__).resolve()} {' '.join(argv)} "
                  f">{out} 2>{xchg / 'bench.err'}\n")
        print(f"booting {cpu_model} with {k.release} for the bench", file=sys.stderr)
        run = run_in_guest(script, xchg, cpu_model, k, timeout_s=1200, hostname="vm-bench")
        err = (xchg / "bench.err").read_text() if (xchg / "bench.err").exists() else ""
        sys.stderr.write(err)
        lines = out.read_text().splitlines() if out.exists() else []
        if run.exit_code != 0 or not lines:
            print(f"the bench failed in the guest (exit {run.exit_code}): "
                  f"{(run.setup_error or err.strip().splitlines()[-1:] or ['no output'])[-1]}", file=sys.stderr)
            return 3
    result = json.loads(lines[-1])
    result["guest"] = {"kernel": k.release, "cpu_model": cpu_model}
    print(json.dumps(result))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--repeat", type=int, default=20000)
    ap.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the bench runs")
    ap.add_argument("--in-guest", metavar="KERNEL", help="run in a guest booting this kernel (deb:PACKAGE)")
    ap.add_argument("--cpu-model", default="EPYC-Milan", help="the guest's CPU model (with --in-guest)")
    a = ap.parse_args()
    if a.in_guest:
        argv = [f"--seconds={a.seconds}", f"--repeat={a.repeat}", "--cpu=0"] + (["--smoke"] if a.smoke else [])
        return in_guest(a.in_guest, a.cpu_model, argv)
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
            out["fentry"] = fentry_bench(root, loaded, a)
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
