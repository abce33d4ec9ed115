#!/usr/bin/env python3
"""Web page benchmark: the hosts page and /metrics of `farm web` over a big lab.

200 hosts registered in a real redis-server (facts of 8 hardware classes,
heartbeats, every fourth host running a job, health changes in their
histories) and 100,000 stored results in a temp SQLite database (made and
ingested as bench/store.py makes them, through Store.add_many). A real
`farm web` process serves them; each page is fetched 50 times in a row over
loopback, after one warm-up fetch, and the latencies' p50 and p95 reported.

Target: p95 under 200 ms for each page on this machine.
/metrics comes from farm/web/metrics.py: where that module is not in this
build, it is "skipped (farm.web.metrics not present)".
Last line: one JSON object: hosts, results, requests, hosts_p50_ms,
hosts_p95_ms, metrics_p50_ms, metrics_p95_ms, target_p95_ms.
Run: .venv/bin/python bench/web.py [--hosts 200] [--results 100000] [--requests 50] [--smoke]
(--smoke: 20 hosts, 500 results, 5 requests: does the bench still work, not a measurement)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue module: bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_P95_MS = 200
SKIPPED = "skipped (farm.web.metrics not present)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: gave up waiting for {what}")


def store_bench():
    """bench/store.py's result maker (Lab) and timed ingest, loaded by path."""
    spec = importlib.util.spec_from_file_location("bench_store", REPO / "bench" / "store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def register_hosts(reg, hosts: list[dict], n: int) -> None:
    from farm.queue.routing import queues_for
    for i in range(n):
        base = hosts[i % len(hosts)]
        h = {**base, "hostname": f"{base['hostname']}-{i // len(hosts)}" if i >= len(hosts) else base["hostname"],
             "kernel": "6.18.44", "cell": {"name": "default"}}
        reg.register(h["hostname"], h, queues_for(h))
        reg.heartbeat(h["hostname"], f"{h['hostname']}:1:bench")
        if i % 4 == 0:
            reg.set_running(h["hostname"], {"run_id": f"s-bench.{h['hostname']}", "task_id": "t",
                                            "job": "smoke", "submission": "s-bench",
                                            "started": "2026-01-05T00:00:00.000+00:00"})
        if i % 10 == 0:
            reg.note_loss(h["hostname"])
            reg.release(h["hostname"], "a health-check passed")


def latencies(url: str, count: int) -> list[float]:
    def get() -> float:
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        return (time.perf_counter() - t) * 1000
    get()  # warm-up: the first use opens the database and fills caches
    return [get() for _ in range(count)]


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the bench runs")
    a = ap.parse_args()
    if a.smoke:
        a.hosts, a.results, a.requests = 20, 500, 5
    if min(a.hosts, a.results, a.requests) <= 0:
        ap.error("--hosts, --results and --requests must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-web-"))
    port, web_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "FARM_BROKER_URL": url, "FARM_STATE_DIR": str(tmp / "state"),
           "FARM_DB_URL": f"sqlite:///{tmp / 'farm.db'}"}
    (tmp / "state").mkdir()
    os.environ.update(env)  # the farm modules below read it at import
    procs = [subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp)], stdout=subprocess.DEVNULL)]
    try:
        import redis
        from farm.queue.registry import Registry
        from farm.store import open_store
        r = redis.Redis.from_url(url, decode_responses=True)

        def ping() -> bool:
            try:
                return r.ping()
            except redis.RedisError:
                return False
        wait(ping, "redis")
        sb = store_bench()
        lab = sb.Lab(a.results, 1000)
        register_hosts(Registry(r), lab.hosts, a.hosts)
        store = open_store(env["FARM_DB_URL"])
        t = time.perf_counter()
        sb.ingest(store, lab, a.results, 1000, max(1000, a.results // 5), [])
        print(f"{a.hosts} hosts registered, {store.run_count():,} results stored "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        store.engine.dispose()
        procs.append(subprocess.Popen([sys.executable, "-m", "farm.cli", "web", "--port", str(web_port)],
                                      env=env, cwd=REPO, stdout=open(tmp / "web.log", "wb"),
                                      stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{web_port}"

        def answers() -> bool:
            if procs[-1].poll() is not None:
                raise SystemExit(f"bench: farm web exited: {(tmp / 'web.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(base + "/hosts", timeout=5).read()
                return True
            except OSError:
                return False
        wait(answers, "farm web")
        out = {"hosts": a.hosts, "results": a.results, "requests": a.requests}
        hosts = latencies(base + "/hosts", a.requests)
        out["hosts_p50_ms"], out["hosts_p95_ms"] = round(statistics.median(hosts), 1), round(p95(hosts), 1)
        try:
            metrics = latencies(base + "/metrics", a.requests)
            out["metrics_p50_ms"], out["metrics_p95_ms"] = (round(statistics.median(metrics), 1),
                                                            round(p95(metrics), 1))
        except urllib.error.HTTPError as e:
            if e.code != 501:  # 501: this build has no farm/web/metrics.py
                raise
            out["metrics_p50_ms"] = out["metrics_p95_ms"] = SKIPPED
        out["target_p95_ms"] = TARGET_P95_MS
        for page in ("hosts", "metrics"):
            v = out[f"{page}_p95_ms"]
            verdict = v if isinstance(v, str) else (f"p50 {out[f'{page}_p50_ms']} ms, p95 {v} ms = "
                                                    f"{v / TARGET_P95_MS:.2f}x the {TARGET_P95_MS} ms target")
            print(f"/{page}: {verdict}", flush=True)
        print(json.dumps(out))
        return 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
