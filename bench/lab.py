#!/usr/bin/env python3
"""Virtual lab benchmark, in one run on this machine (TCG, no KVM):

- guest boot -> farm worker ready (its first heartbeat in the registry);
- the smoke job's wall time (same --duration) on this host vs in a guest.

Last line: one JSON object. Run as root: .venv/bin/python bench/lab.py
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib's queue module: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import os
import shutil
import socket
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
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
    duration = sys.argv[1] if len(sys.argv) > 1 else "3s"
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-lab-"))
    port = free_port()
    env = {**os.environ, "FARM_STATE_DIR": str(tmp / "state"), "FARM_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    procs = [subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp)], stdout=subprocess.DEVNULL)]
    try:
        r = redis.Redis.from_url(env["FARM_BROKER_URL"])
        # boot -> worker ready
        t0 = time.monotonic()
        procs.append(subprocess.Popen(FARM + ["lab", "up", "--host", "bench-amd:EPYC-Milan",
                                              "--inventory-out", str(tmp / "virtual.yml")],
                                      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not _exists(r, "farm:hb:bench-amd"):
            if procs[-1].poll() is not None or time.monotonic() - t0 > 900:
                raise SystemExit("bench: the guest's worker never came up")
            time.sleep(0.1)
        boot = time.monotonic() - t0
        subprocess.run(FARM + ["lab", "down"], cwd=REPO, env=env, capture_output=True)
        procs[-1].wait(timeout=120)
        # the smoke job, host vs guest
        host = timed(FARM + ["run", "jobs/smoke.yaml", "--duration", duration, "--artifacts", str(tmp / "h")], env)
        guest = timed(FARM + ["lab", "run", "jobs/smoke.yaml", "--cpu-model", "EPYC-Milan",
                              "--duration", duration, "--artifacts", str(tmp / "g")], env)
        print(f"guest boot -> worker ready {boot:.1f} s; smoke ({duration}) on the host {host:.1f} s, "
              f"in a guest {guest:.1f} s ({guest / host:.1f}x)", file=sys.stderr)
        print(json.dumps({"boot_to_worker_ready_s": round(boot, 2), "smoke_host_s": round(host, 2),
                          "smoke_guest_s": round(guest, 2), "guest_vs_host": round(guest / host, 2),
                          "duration": duration}))
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _exists(r, key) -> bool:
    import redis
    try:
        return bool(r.exists(key))
    except redis.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
