"""/metrics (farm/web/metrics.py), read back with prometheus_client's own
parser: on a results database made of real engine results (fast), and in a
lab of a real redis-server, collector and worker whose real run moves the
counters (slow). Flower against the same lab is tests/test_flower.py."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from prometheus_client.parser import text_string_to_metric_families

from farm.queue.registry import Registry
from farm.store import open_store
from farm.web.metrics import CONTENT_TYPE, RATE_RUNS, exposition
from support.lab import free_port
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


def test_a_broker_that_does_not_answer_leaves_the_store_families(store):
    # nothing listens there; no retries: the refusal is the answer
    dead = Registry(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0)))
    m = scrape(store, dead)
    assert m["farm_broker_up"] == {(): 0.0}
    assert "farm_hosts" not in m
    assert m["farm_runs_total"][(("verdict", "pass"),)] > 0
