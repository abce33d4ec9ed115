#!/usr/bin/env python3
"""Queue benchmark with a real redis-server and real workers, zero-length
jobs (the worker answers at once), so the queue is what is measured:

- submit -> running latency (p50, p95) on an idle local worker;
- a 1,000-task fan-out to four workers until the collector stored all (the
  results database holds every run).

Last line: one JSON object with p50_ms, p95_ms (over latency_samples),
fanout_tasks, workers, fanout_s.
Run: .venv/bin/python bench/queue.py [--smoke]  (--smoke: 3 samples, 8 tasks
to 2 workers: does the bench still work, not a measurement)
"""
from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the stdlib's queue module: take bench/ off the path.
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the bench runs")
    a = ap.parse_args()
    samples, workers, fanout_subs = (3, 2, 4) if a.smoke else (50, 4, 250)
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-queue-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    # a database of its own, whatever FARM_DB_URL says: the bench counts what is in it
    env = {**os.environ, "FARM_BROKER_URL": url, "FARM_STATE_DIR": str(tmp / "state"),
           "FARM_DB_URL": f"sqlite:///{tmp / 'farm.db'}"}
    os.environ.update(env)  # the farm modules below read it at import
    procs = [subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp)], stdout=subprocess.DEVNULL)]
    try:
        import redis
        r = redis.Redis.from_url(url, decode_responses=True)
        wait(lambda: _ping(r), "redis")
        from farm.queue.app import app
        from farm.queue.registry import Registry
        from farm.store import open_store
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

        logs = [start(["collector"])] + [start(["worker"], {"hostname": f"bench-{i}"}) for i in range(workers)]
        wait(lambda: all(b"ready" in p.read_bytes() for p in logs), "collector and workers", 120)
        store = open_store(env["FARM_DB_URL"])

        # latency: one idle worker, one task at a time
        lat = []
        for _ in range(samples):
            t0 = time.time()
            sub = submit(app, reg, spec, text, Selection(hosts=("bench-0",)), noop=True)
            run_id = next(iter(sub["runs"]))
            wait(lambda: reg.run_state(run_id).get("state") in ("running", "done"), "running")
            started = float(reg.run_state(run_id).get("updated") or time.time())
            lat.append((min(started, time.time()) - t0) * 1000)
            wait(lambda: reg.run_state(run_id).get("state") == "done", "done")
        lat.sort()
        p50, p95 = statistics.median(lat), lat[max(0, int(len(lat) * 0.95) - 1)]

        # fan-out: every submission to every worker, until the database holds them all
        before = store.run_count()
        t0 = time.monotonic()
        subs = [submit(app, reg, spec, text, Selection(all=True), noop=True) for _ in range(fanout_subs)]
        tasks = sum(len(s["runs"]) for s in subs)
        assert tasks == fanout_subs * workers
        wait(lambda: store.run_count() - before >= tasks, f"{tasks:,} results in the database", 300)
        fanout = time.monotonic() - t0
        print(f"submit->running p50 {p50:.1f} ms, p95 {p95:.1f} ms; {tasks:,}-task fan-out to {workers} workers "
              f"collected in {fanout:.2f} s", file=sys.stderr)
        print(json.dumps({"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "latency_samples": samples,
                          "fanout_tasks": tasks, "workers": workers, "fanout_s": round(fanout, 3)}))
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
