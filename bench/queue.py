#!/usr/bin/env python3
"""Queue benchmark with a real redis-server and real workers, zero-length
jobs (the worker answers at once), so the queue is what is measured:

- submit -> running latency (p50, p95) on an idle local worker;
- a 1,000-task fan-out to four workers until the collector stored all.

Last line: one JSON object with p50_ms, p95_ms, fanout_1000_s.
Run: .venv/bin/python bench/queue.py
"""
from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the stdlib's queue module: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, what, deadline=60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.005)
    raise SystemExit(f"bench: gave up waiting for {what}")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-queue-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "FARM_BROKER_URL": url, "FARM_STATE_DIR": str(tmp / "state")}
    os.environ.update(env)  # the farm modules below read it at import
    procs = [subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp)], stdout=subprocess.DEVNULL)]
    try:
        import redis
        r = redis.Redis.from_url(url, decode_responses=True)
        wait(lambda: _ping(r), "redis")
        from farm.queue.app import app
        from farm.queue.registry import Registry
        from farm.queue.routing import Selection
        from farm.queue.submit import submit
        from farm.spec import load_spec_text
        reg = Registry(r)
        text = "duration: 1s\ntopologies: [direct-main]\n"
        spec = load_spec_text(text, "bench", "bench", elsewhere=True)
        farm = [sys.executable, "-m", "farm.cli"]

        def start(args, facts=None):
            e = dict(env)
            if facts:
                e["FARM_FACTS_OVERRIDE"] = json.dumps(facts)
            log = open(tmp / f"{args[0]}-{len(procs)}.log", "wb")
            procs.append(subprocess.Popen(farm + args, env=e, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            return tmp / f"{args[0]}-{len(procs) - 1}.log"

        logs = [start(["collector"])] + [start(["worker"], {"hostname": f"bench-{i}"}) for i in range(4)]
        wait(lambda: all(b"ready" in p.read_bytes() for p in logs), "collector and workers", 120)

        # latency: one idle worker, one task at a time
        lat = []
        for _ in range(50):
            t0 = time.time()
            sub = submit(app, reg, spec, text, Selection(hosts=("bench-0",)), noop=True)
            run_id = next(iter(sub["runs"]))
            wait(lambda: r.hget(f"farm:run:{run_id}", "state") in ("running", "done"), "running")
            started = float(r.hget(f"farm:run:{run_id}", "updated") or time.time())
            lat.append((min(started, time.time()) - t0) * 1000)
            wait(lambda: r.hget(f"farm:run:{run_id}", "state") == "done", "done")
        lat.sort()
        p50, p95 = statistics.median(lat), lat[int(len(lat) * 0.95) - 1]

        # fan-out: 250 submissions x 4 hosts
        t0 = time.monotonic()
        subs = [submit(app, reg, spec, text, Selection(all=True), noop=True) for _ in range(250)]
        runs = [run_id for s in subs for run_id in s["runs"]]
        assert len(runs) == 1000
        results = tmp / "state" / "results"
        wait(lambda: sum(len(p.read_text().splitlines()) for p in results.glob("*.jsonl"))
             >= 1000 + len(lat), "1,000 results", 300)
        fanout = time.monotonic() - t0
        print(f"submit->running p50 {p50:.1f} ms, p95 {p95:.1f} ms; 1,000-task fan-out to 4 workers "
              f"collected in {fanout:.2f} s", file=sys.stderr)
        print(json.dumps({"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "fanout_1000_s": round(fanout, 3)}))
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _ping(r) -> bool:
    import redis
    try:
        return r.ping()
    except redis.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
