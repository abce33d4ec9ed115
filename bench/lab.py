#!/usr/bin/env python3
"""Virtual lab benchmark, in one run on this machine (TCG, no KVM):

- guest boot -> farm worker ready (its first heartbeat in the registry);
- the smoke job's wall time (same --duration) on this host vs in a guest
  (`farm lab run`: a fresh guest, its boot included);
- `farm lab matrix`: 2 CPU models x 2 kernels x 3 cells, two 2 s jobs per
  guest (so each guest is reused once), against the same runs one at a time
  with a boot each (`farm lab run`). The serial sum is estimated: one
  `farm lab run` per CPU model and kernel is timed and their mean stands
  for every run (the full serial sum would take 20-40 minutes more here). It reports guest boot -> ready
  (the init about to run the jobs), the first job's wall time in a fresh
  guest and the overhead of each later job in a reused guest (its wall
  time in the guest less its duration).

Last line: one JSON object: boot_to_worker_ready_s, smoke_host_s,
smoke_guest_s, guest_vs_host, duration, guest_run (how the guest ran it),
and matrix_s, serial_s, speedup, serial_basis, matrix_runs, matrix_guests,
boot_to_ready_s, first_job_s, reused_job_overhead_s.
Run as root: .venv/bin/python bench/lab.py [DURATION] [--smoke] [--matrix-only]
  [--cpu-models A,B] [--kernels deb:K1,deb:K2] [--cells c1,c2]  (a smaller matrix)
--matrix-only: the matrix part alone (its keys only).

--smoke runs a 1 s one-topology job on the host and on one lab guest's
worker (through the queue, booted already); its matrix is one more guest
(EPYC-Milan, the default kernel and cell) running that job twice, and its
serial sum is estimated from that guest's own boot and first job, with no
extra guest: does the bench still work, not a measurement.
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib's queue module: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FARM = [sys.executable, "-m", "farm.cli"]
MATRIX_CPU_MODELS = "Icelake-Server,EPYC-Milan"
MATRIX_KERNELS = "deb:linux-image-amd64,deb:linux-image-6.12.107+deb12-amd64-unsigned"
MATRIX_CELLS = "default,off,lfence"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env, ok=(0, 1)) -> float:
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode not in ok:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {p.returncode}: {p.stderr[-800:]}")
    return time.monotonic() - t


def matrix_bench(tmp: Path, env: dict, smoke: bool, models: str, kernels: str, cells: str) -> dict:
    """farm lab matrix over two jobs per guest, against the same runs one at a time."""
    duration = 1 if smoke else 2
    jobs = []
    for name in ("bench-a", "bench-b"):  # two jobs: each guest is reused once
        jobs.append(tmp / f"{name}.yaml")
        # indirect: cells with an expectation (off, lfence) are proven by an indirect tail call
        jobs[-1].write_text(f"duration: {duration}s\ntopologies: [indirect]\n")
    art = tmp / "matrix"
    matrix_s = timed(FARM + ["lab", "matrix", *map(str, jobs), "--cpu-models", models, "--kernels", kernels,
                             "--cells", cells, "--artifacts", str(art), "--no-store"], env,
                     ok=(0, 1, 3))  # 3: a cell a kernel or CPU model cannot reach; the guests' times still count
    guests = json.loads((art / "guests.json").read_text())
    runs = sum(len(g["jobs"]) for g in guests)
    boot = statistics.mean(g["boot_s"] for g in guests if g["boot_s"] is not None)
    first = statistics.mean(g["job_walls_s"][0] for g in guests if g["job_walls_s"])
    later = [w - duration for g in guests for w in g["job_walls_s"][1:]]
    if smoke:
        per_run = boot + first
        basis = f"estimated: the matrix guests' own boot + first job ({per_run:.1f} s) x {runs} runs"
    else:  # a fresh guest per run, as farm lab run does: one per CPU model and kernel (they differ), timed
        pairs = [(m, k) for m in models.split(",") for k in kernels.split(",")]
        single = [timed(FARM + ["lab", "run", str(jobs[0]), "--cpu-model", m, "--kernel", k, "--no-store",
                                "--artifacts", str(tmp / f"single-{i}")], env)
                  for i, (m, k) in enumerate(pairs)]
        per_run = statistics.mean(single)
        basis = (f"estimated: mean of {len(single)} timed farm lab runs (one per CPU model and kernel, cell "
                 f"default, {per_run:.1f} s) x {runs} runs")
    serial = per_run * runs
    return {"matrix_s": round(matrix_s, 1), "serial_s": round(serial, 1), "speedup": round(serial / matrix_s, 2),
            "serial_basis": basis, "matrix_runs": runs, "matrix_guests": len(guests),
            "boot_to_ready_s": round(boot, 1), "first_job_s": round(first, 1),
            "reused_job_overhead_s": round(statistics.mean(later), 1) if later else None}


def main() -> int:
    import redis
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("duration", nargs="?", default="3s", help="the smoke job's --duration (default 3s)")
    ap.add_argument("--smoke", action="store_true", help="small guests' jobs: check the bench runs")
    ap.add_argument("--matrix-only", action="store_true", help="the lab matrix part alone")
    ap.add_argument("--cpu-models", default=MATRIX_CPU_MODELS)
    ap.add_argument("--kernels", default=MATRIX_KERNELS)
    ap.add_argument("--cells", default=MATRIX_CELLS)
    a = ap.parse_args()
    duration = "1s" if a.smoke else a.duration
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-lab-"))
    port = free_port()
    env = {**os.environ, "FARM_STATE_DIR": str(tmp / "state"), "FARM_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "FARM_DB_URL": f"sqlite:///{tmp / 'farm.db'}"}
    if a.smoke:
        a.cpu_models, a.kernels, a.cells = "EPYC-Milan", "deb:linux-image-amd64", "default"
    if a.matrix_only:
        try:
            m = matrix_bench(tmp, env, a.smoke, a.cpu_models, a.kernels, a.cells)
            _say_matrix(m)
            print(json.dumps(m))
            return 0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    job = REPO / "jobs" / "smoke.yaml"
    if a.smoke:
        job = tmp / "smoke.yaml"
        job.write_text("duration: 1s\ntopologies: [direct-main]\n")
    procs = [subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp)], stdout=subprocess.DEVNULL)]
    lab_up = None
    try:
        from farm.queue.registry import Registry
        reg = Registry(redis.Redis.from_url(env["FARM_BROKER_URL"], decode_responses=True))
        # boot -> worker ready
        t0 = time.monotonic()
        lab_up = subprocess.Popen(FARM + ["lab", "up", "--host", "bench-amd:EPYC-Milan",
                                          "--inventory-out", str(tmp / "virtual.yml")],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(lab_up)
        while not _alive(reg, "bench-amd"):
            if lab_up.poll() is not None or time.monotonic() - t0 > 900:
                raise SystemExit("bench: the guest's worker never came up")
            time.sleep(0.1)
        boot = time.monotonic() - t0
        host = timed(FARM + ["run", str(job), "--duration", duration, "--artifacts", str(tmp / "h")], env)
        if a.smoke:  # the guest booted already runs it, as a lab job
            procs.append(subprocess.Popen(FARM + ["collector"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            guest_run = "worker in the booted guest"
            guest = timed(FARM + ["submit", str(job), "--hosts", "bench-amd", "--duration", duration, "--wait",
                                  "--timeout", "900"], env)
        else:
            subprocess.run(FARM + ["lab", "down"], cwd=REPO, env=env, capture_output=True)
            lab_up.wait(timeout=120)
            guest_run = "farm lab run"
            guest = timed(FARM + ["lab", "run", str(job), "--cpu-model", "EPYC-Milan",
                                  "--duration", duration, "--artifacts", str(tmp / "g")], env)
        print(f"guest boot -> worker ready {boot:.1f} s; smoke ({duration}) on the host {host:.1f} s, "
              f"in a guest {guest:.1f} s ({guest / host:.1f}x, {guest_run})", file=sys.stderr)
        if lab_up.poll() is None:  # the matrix's guests get the CPUs to themselves
            subprocess.run(FARM + ["lab", "down"], cwd=REPO, env=env, capture_output=True)
            lab_up.wait(timeout=120)
        m = matrix_bench(tmp, env, a.smoke, a.cpu_models, a.kernels, a.cells)
        _say_matrix(m)
        print(json.dumps({"boot_to_worker_ready_s": round(boot, 2), "smoke_host_s": round(host, 2),
                          "smoke_guest_s": round(guest, 2), "guest_vs_host": round(guest / host, 2),
                          "duration": duration, "guest_run": guest_run, **m}))
        return 0
    finally:
        if lab_up and lab_up.poll() is None:  # `lab down` stops its guests the way they should be
            subprocess.run(FARM + ["lab", "down"], cwd=REPO, env=env, capture_output=True)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)




def _say_matrix(m: dict) -> None:
    print(f"lab matrix: {m['matrix_runs']} runs in {m['matrix_guests']} guests {m['matrix_s']:.0f} s; one at a "
          f"time with a boot each {m['serial_s']:.0f} s ({m['serial_basis']}); speedup {m['speedup']:.2f}x; "
          f"boot -> ready {m['boot_to_ready_s']:.1f} s, first job in a fresh guest {m['first_job_s']:.1f} s, "
          f"each later job in a reused guest {m['reused_job_overhead_s']} s over its duration", file=sys.stderr)


def _alive(reg, host: str) -> bool:
    import redis
    try:
        return reg.alive(host)
    except redis.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
