#!/usr/bin/env python3
"""Virtual lab benchmark, in one run on this machine (TCG, no KVM):

- guest boot -> farm worker ready (its first heartbeat in the registry);
- the smoke job's wall time (same --duration) on this host vs in a guest
  (`farm lab run`: a fresh guest, its boot included).

Last line: one JSON object: boot_to_worker_ready_s, smoke_host_s,
smoke_guest_s, guest_vs_host, duration, guest_run (how the guest ran it).
Run as root: .venv/bin/python bench/lab.py [DURATION] [--smoke]

--smoke boots one guest only, and runs a 1 s one-topology job on the host and
on that guest's worker (through the queue, booted already): does the bench
still work, not a measurement.
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
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FARM = [sys.executable, "-m", "farm.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env) -> float:
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(cmd)} exited {p.returncode}: {p.stderr[-800:]}")
    return time.monotonic() - t


def main() -> int:
    import redis
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("duration", nargs="?", default="3s", help="the smoke job's --duration (default 3s)")
    ap.add_argument("--smoke", action="store_true", help="one guest, a 1 s job: check the bench runs")
    a = ap.parse_args()
    duration = "1s" if a.smoke else a.duration
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-lab-"))
    port = free_port()
    env = {**os.environ, "FARM_STATE_DIR": str(tmp / "state"), "FARM_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "FARM_DB_URL": f"sqlite:///{tmp / 'farm.db'}"}
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
        print(json.dumps({"boot_to_worker_ready_s": round(boot, 2), "smoke_host_s": round(host, 2),
                          "smoke_guest_s": round(guest, 2), "guest_vs_host": round(guest / host, 2),
                          "duration": duration, "guest_run": guest_run}))
        return 0
    finally:
        if lab_up and lab_up.poll() is None:  # `lab down` stops its guests the way they should be
            subprocess.run(FARM + ["lab", "down"], cwd=REPO, env=env, capture_output=True)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(reg, host: str) -> bool:
    import redis
    try:
        return reg.alive(host)
    except redis.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
