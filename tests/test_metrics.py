"""/metrics (farm/web/metrics.py), read back with prometheus_client's own
parser: on a results database made of real engine results (fast), and in a
lab of a real redis-server, collector and worker whose real run moves the
counters (slow). A real `celery flower` watches that lab: its API lists the
farm's workers and the run's task, which only the workers' Celery events
tell it (slow)."""
from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from farm.queue.registry import Registry
from farm.store import open_store
from farm.web.metrics import CONTENT_TYPE, RATE_RUNS, exposition
from farm.errors import EXIT_PASS
from support import REPO, wait_for
from support.lab import Lab, RedisServer, free_port, submitted
from support.results_lab import T0, base, history, variant


def scrape(store, registry=None) -> dict:
    """{family name: {labels as a sorted tuple: value}} from the exposition
    text, through prometheus_client's parser (which refuses a malformed one)."""
    out = {}
    for family in text_string_to_metric_families(exposition(store, registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def measured_rate(results: list[dict]) -> float:
    """What the HELP text promises, worked out from the results themselves:
    the duration-weighted mean rate of the newest RATE_RUNS whose stress ran."""
    ran = [r for r in results if r["stats"]["updates_per_s"] > 0 or r["stats"]["tail_calls_per_s"] > 0]
    newest = sorted(ran, key=lambda r: r["started"], reverse=True)[:RATE_RUNS]
    return sum(r["stats"]["tail_calls_per_s"] * r["duration_s"] for r in newest) / sum(r["duration_s"] for r in newest)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/farm.db")
    assert s.add_many([(r, None, None) for r in history()]) == len(history())
    return s


def test_the_store_families_count_runs_findings_and_rates_per_class(store):
    assert CONTENT_TYPE.startswith("text/plain; version=")  # the text format, not OpenMetrics
    m = scrape(store)
    results = history()
    runs = {v: sum(r["verdict"] == v for r in results) for v in ("pass", "fail", "error")}
    assert m["farm_runs_total"] == {(("verdict", v),): float(n) for v, n in runs.items()}
    kinds = sorted({f["kind"] for r in results for f in r["findings"]})
    assert kinds and m["farm_findings_total"] == {
        (("kind", k),): float(sum(f["kind"] == k for r in results for f in r["findings"])) for k in kinds}
    classes = sorted({r["host"]["hw_class"] for r in results})
    rates = m["farm_tail_calls_verified_per_second"]
    assert list(rates) == [(("hw_class", c),) for c in classes]
    for c in classes:
        of_class = [r for r in results if r["host"]["hw_class"] == c]
        assert rates[(("hw_class", c),)] == pytest.approx(measured_rate(of_class))
        newest = max(r["started"] for r in of_class if r["stats"]["tail_calls_per_s"] > 0)
        assert m["farm_tail_calls_verified_newest_run_timestamp_seconds"][(("hw_class", c),)] == \
            pytest.approx(datetime.fromisoformat(newest).timestamp())
    assert m["farm_bisections"][(("status", "running"),)] == 0
    assert m["farm_broker_up"] == {(): 0.0}  # no broker given: no host or queue family
    assert "farm_hosts" not in m and "farm_queue_depth" not in m


def test_counters_only_move_up_as_results_arrive(store):
    before = scrape(store)
    failing = variant(base("fail-tail-call-count"), "zen2-a", "6.7.0", T0 + timedelta(days=30), 900)
    assert store.add(failing)
    assert not store.add(failing)  # the same result again adds nothing, and counts nothing
    after = scrape(store)
    for family in ("farm_runs_total", "farm_findings_total"):
        assert set(before[family]) <= set(after[family])
        assert all(after[family][k] >= v for k, v in before[family].items()), family
    assert after["farm_runs_total"][(("verdict", "fail"),)] == before["farm_runs_total"][(("verdict", "fail"),)] + 1
    tcc = (("kind", "tail-call-count"),)
    assert after["farm_findings_total"][tcc] == before["farm_findings_total"][tcc] + len(failing["findings"])


def test_the_rate_is_the_newest_runs_whose_stress_ran(tmp_path):
    """Old fast runs age out after RATE_RUNS newer ones; a noop (nothing
    ran) is left out; a run that stressed and verified nothing counts, at 0."""
    store = open_store(f"sqlite:///{tmp_path}/rate.db")
    ok = base("pass")
    old = [variant(ok, "zen4-a", "6.6.7", T0 + timedelta(minutes=i), i) for i in range(5)]
    for r in old:
        r["stats"]["tail_calls_per_s"] = 1e12
    new = [variant(ok, "zen4-b", "6.6.7", T0 + timedelta(hours=1, minutes=i), 100 + i) for i in range(RATE_RUNS - 1)]
    starved = copy.deepcopy(new[0])
    starved.update(run_id="starved", started=(T0 + timedelta(hours=2)).isoformat())
    starved["stats"]["tail_calls_per_s"] = 0.0   # the stress ran (updates) and verified nothing
    noop = copy.deepcopy(new[0])
    noop.update(run_id="noop", started=(T0 + timedelta(hours=3)).isoformat())
    noop["stats"].update(tail_calls_per_s=0.0, updates_per_s=0.0)
    store.add_many([(r, None, None) for r in old + new + [starved, noop]])
    rate = scrape(store)["farm_tail_calls_verified_per_second"][(("hw_class", new[0]["host"]["hw_class"]),)]
    assert rate == pytest.approx(measured_rate(new + [starved]))
    assert rate < ok["stats"]["tail_calls_per_s"]  # the starved run pulled it down; the old ones aged out


def test_a_scrape_never_reads_the_runs_or_findings_tables_whole(store):
    """Cheap at any size, without timing anything: SQLite's own plan for
    every query a scrape makes reads runs and findings through an index
    (migration 0007): a covering index for the counts, a search for the
    rates. Only the small hosts and bisections tables are scanned."""
    statements = []

    def keep(_conn, _cursor, statement, params, _context, _many):
        statements.append((statement, params))
    event.listen(store.engine, "before_cursor_execute", keep)
    try:
        exposition(store, None)
    finally:
        event.remove(store.engine, "before_cursor_execute", keep)
    assert sum(" runs" in s for s, _ in statements) >= 2 and any(" findings" in s for s, _ in statements)
    with store.engine.connect() as conn:
        for statement, params in statements:
            steps = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            whole = [s for s in steps if s.startswith(("SCAN runs", "SCAN findings")) and "COVERING INDEX" not in s]
            assert not whole, (statement, steps)


def test_a_broker_that_does_not_answer_leaves_the_store_families(store):
    # nothing listens there; no retries: the refusal is the answer
    dead = Registry(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0)))
    m = scrape(store, dead)
    assert m["farm_broker_up"] == {(): 0.0}
    assert "farm_hosts" not in m
    assert m["farm_runs_total"][(("verdict", "pass"),)] > 0


# -- a live lab: real redis-server, collector, worker and Flower; one real run ---------

HOST = "metrics-amd"
TINY = {"duration": "1s", "topologies": ["direct-main"]}
FLOWER_AUTH = "ops:not-a-real-secret"


class Flower:
    """`celery -A farm.queue.app flower` as docs/metrics.md says to run it:
    on loopback, behind basic auth (from the environment, off the command
    line), read-only."""

    def __init__(self, env: dict, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "flower.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "farm.queue.app", "flower", "--address=127.0.0.1",
             f"--port={self.port}", "--read_only"],
            cwd=workdir, env={**env, "FLOWER_BASIC_AUTH": FLOWER_AUTH, "PYTHONPATH": str(REPO)},
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.status("/healthcheck") == 200 or self.proc.poll() is not None, "flower to answer", 60)
        assert self.proc.poll() is None, self.log.read_text()

    def request(self, path: str, method: str = "GET", auth: bool = True):
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(FLOWER_AUTH.encode()).decode())
        return urllib.request.urlopen(req, timeout=30)

    def status(self, path: str, **kw) -> int:
        try:
            with self.request(path, **kw) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def get(self, path: str):
        with self.request(path) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The lab with Flower watching it, scraped before and after one real
    run of a tiny job on a real worker (BPF: root)."""
    tmp = tmp_path_factory.mktemp("live")
    server = RedisServer(tmp / "redis").start()
    (tmp / "state").mkdir()
    lab = Lab(server, tmp / "state")
    flower = None
    try:
        lab.collector()
        lab.worker(HOST)
        flower = Flower(lab.env, tmp)
        registry = Registry(redis.Redis.from_url(server.url, decode_responses=True))
        before = scrape(lab.store(), registry)
        spec = tmp / "tiny.yaml"
        spec.write_text(json.dumps(TINY))
        sub = submitted(lab.farm("submit", str(spec), "--all", "--wait"), EXIT_PASS)
        stored = wait_for(lambda: lab.stored(sub), "the collector to store the run", 120)
        yield {"lab": lab, "flower": flower, "registry": registry, "before": before, "result": stored[0]}
        registry.close()
    finally:
        if flower:
            flower.stop()
        lab.stop_all()
        server.stop()


@pytest.mark.slow
@pytest.mark.root
def test_a_real_run_moves_the_counters_and_the_lab_shows_in_the_gauges(live):
    lab, registry, before, result = live["lab"], live["registry"], live["before"], live["result"]
    # a host that registered and never beat, with a task waiting on its queue
    registry.register("ghost", {"hostname": "ghost", "vendor": "AuthenticAMD", "hw_class": "amd-ghost"},
                      ["host.ghost"])
    from farm.queue.app import make_app
    app = make_app(lab.redis.url)
    try:
        app.send_task("farm.run", args=[{"run_id": "waits-forever"}], queue="host.ghost")
    finally:
        app.close()
    after = scrape(lab.store(), registry)

    verdict = (("verdict", result["verdict"]),)
    assert result["verdict"] == "pass"
    assert after["farm_runs_total"][verdict] == before["farm_runs_total"][verdict] + 1
    cls = (("hw_class", result["host"]["hw_class"]),)
    assert cls not in before.get("farm_tail_calls_verified_per_second", {})
    assert after["farm_tail_calls_verified_per_second"][cls] == pytest.approx(
        result["stats"]["tail_calls_per_s"])  # one run: its own rate

    assert after["farm_broker_up"] == {(): 1.0}
    assert after["farm_hosts"][(("health", "healthy"),)] == 2
    assert after["farm_host_up"] == {(("host", HOST),): 1.0, (("host", "ghost"),): 0.0}
    ages = after["farm_host_heartbeat_age_seconds"]
    assert list(ages) == [(("host", HOST),)]  # the ghost never beat: no age
    assert 0 <= ages[(("host", HOST),)] <= int(lab.env["FARM_HEARTBEAT_TTL"])  # it is alive: beat within its TTL
    depth = after["farm_queue_depth"]
    assert depth[(("queue", "host.ghost"),)] == 1
    assert depth[(("queue", f"host.{HOST}"),)] == 0 and depth[(("queue", "results"),)] == 0


@pytest.mark.slow
@pytest.mark.root
def test_flower_lists_the_farms_workers_and_the_tasks_they_ran(live):
    flower, result = live["flower"], live["result"]
    worker, collector = f"farm@{HOST}", f"farm-collector@{os.uname().nodename}"
    assert flower.status("/api/workers", auth=False) == 401  # basic auth guards the API
    # inspected over the broker's remote control (refresh=1), until both answer
    workers = wait_for(lambda: (w := flower.get("/api/workers?refresh=1")) and {worker, collector} <= set(w) and w,
                       "flower to list the farm's workers", 60)
    assert f"host.{HOST}" in {q["name"] for q in workers[worker]["active_queues"]}
    # online by the worker's heartbeat events
    wait_for(lambda: flower.get("/api/workers?status=1").get(worker) is True, "the worker online in flower", 60)
    # the run's farm.run task, known only from the workers' task events
    tasks = flower.get("/api/tasks?taskname=farm.run")
    ran = [t for t in tasks.values() if result["run_id"] in (t.get("args") or "")]
    assert [(t["state"], t["worker"]) for t in ran] == [("SUCCESS", worker)]
    # read-only: Flower cannot shut a farm worker down
    assert flower.status(f"/api/worker/shutdown/{worker}", method="POST") == 403
    assert live["lab"].host_up(HOST)
