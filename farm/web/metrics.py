"""/metrics: the lab in Prometheus text format, read fresh on every scrape.

Nothing is kept in this process between scrapes: each call builds its own
CollectorRegistry whose one collector asks the results database and the
broker's registry for the state of now. So several web processes agree,
and a restarted one loses nothing: the counters are the database's own
totals (runs and findings are never deleted, `farm gc` keeps them), so they
only move up.

Every query is an aggregate over an index (migration 0007) or a read of a
handful of rows: a scrape of a lab of hundreds of hosts and a history of
a hundred thousand runs stays cheap (bench/ measures it). docs/metrics.md
says what each family means.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, or_, select

from farm.queue.routing import FARM_QUEUES
from farm.store.models import Bisection, Finding, Host, Run

CONTENT_TYPE: str = CONTENT_TYPE_LATEST

HEALTHS = ("healthy", "suspect", "quarantined")   # farm.queue.registry's, always shown
VERDICTS = ("pass", "fail", "error")               # a result's verdict (farm.result)
BISECTION_STATES = ("queued", "running", "named", "refused", "failed")
RATE_RUNS = 20  # the newest measured runs of a class that its tail-call rate averages


def exposition(store, registry) -> bytes:
    """The text a GET /metrics answers with (media type CONTENT_TYPE).
    store: farm's results Store; registry: farm.queue.registry.Registry,
    or None where there is no broker (then farm_broker_up is 0 and the
    host and queue families are absent)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FarmCollector(store, registry))
    return generate_latest(reg)


class FarmCollector:
    """A prometheus_client custom collector: collect() yields the families."""

    def __init__(self, store, registry, now=time.time):
        self.store, self.registry, self.now = store, registry, now

    def collect(self):
        yield from self._broker()
        yield from self._store()

    # -- the broker: hosts, heartbeats, queues --------------------------------------

    def _broker(self):
        up = GaugeMetricFamily("farm_broker_up", "1 when the broker (Redis) answered this scrape, else 0; "
                               "the host and queue families are absent while it is 0")
        try:
            families = self._broker_families() if self.registry is not None else []
        except redis.RedisError:  # refused, timed out, NOAUTH: the scrape still answers
            families = []
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _broker_families(self) -> list:
        states = self.registry.host_states()
        queues = sorted({q for h in states.values() for q in h["queues"]} | set(FARM_QUEUES))
        depths = self.registry.queue_depths(queues)
        now = self.now()

        hosts = GaugeMetricFamily("farm_hosts", "Registered hosts by health (healthy, suspect after a loss "
                                  "or crash, quarantined after repeated ones)", labels=["health"])
        counts = dict.fromkeys(HEALTHS, 0)
        for h in states.values():
            counts[h["health"]] = counts.get(h["health"], 0) + 1
        for health, n in sorted(counts.items()):
            hosts.add_metric([health], n)

        up = GaugeMetricFamily("farm_host_up", "1 while the host's worker heartbeat is live (it lapses after "
                               "FARM_HEARTBEAT_TTL seconds of silence), else 0", labels=["host"])
        age = GaugeMetricFamily("farm_host_heartbeat_age_seconds", "Seconds since the host's worker last "
                                "beat (absent for a host that never did)", labels=["host"])
        for name, h in states.items():
            up.add_metric([name], 1 if h["alive"] else 0)
            if h["last_heartbeat"] is not None:
                age.add_metric([name], max(0.0, now - h["last_heartbeat"]))

        depth = GaugeMetricFamily("farm_queue_depth", "Tasks waiting on a queue (not yet delivered to a "
                                  "worker): every queue a registered host serves, and results, control, "
                                  "lab and farm.default", labels=["queue"])
        for q in queues:
            depth.add_metric([q], depths[q])
        return [hosts, up, age, depth]

    # -- the results database ---------------------------------------------------------

    def _store(self):
        with self.store.session() as s:
            verdicts = dict(s.execute(select(Run.verdict, func.count()).group_by(Run.verdict)).all())
            kinds = dict(s.execute(select(Finding.kind, func.count()).group_by(Finding.kind)).all())
            bisections = dict(s.execute(select(Bisection.status, func.count()).group_by(Bisection.status)).all())
            rates = {cls: self._tail_call_rate(s, cls)
                     for cls in s.scalars(select(Host.hw_class).distinct().order_by(Host.hw_class))}

        runs = CounterMetricFamily("farm_runs", "Runs stored in the results database, by verdict "
                                   "(pass, fail, error)", labels=["verdict"])
        for verdict, n in sorted({**dict.fromkeys(VERDICTS, 0), **verdicts}.items()):
            runs.add_metric([verdict], n)
        yield runs

        findings = CounterMetricFamily("farm_findings", "Findings stored in the results database, by kind "
                                       "(the detector's: kernel-bug, tail-call-count, host-lost, ...)",
                                       labels=["kind"])
        for kind, n in sorted(kinds.items()):
            findings.add_metric([kind], n)
        yield findings

        rate = GaugeMetricFamily(
            "farm_tail_calls_verified_per_second",
            f"Verified tail calls per second of one host's run, per hw_class: the mean of the per-run rates "
            f"(a run's verified tail calls over its stress time) of the class's newest {RATE_RUNS} runs whose "
            f"stress ran, each weighted by its duration", labels=["hw_class"])
        newest = GaugeMetricFamily(
            "farm_tail_calls_verified_newest_run_timestamp_seconds",
            "When the newest run in farm_tail_calls_verified_per_second started (Unix time): how old the "
            "rate is", labels=["hw_class"])
        for cls, (value, started) in sorted((c, r) for c, r in rates.items() if r):
            rate.add_metric([cls], value)
            newest.add_metric([cls], started.replace(tzinfo=timezone.utc).timestamp())
        yield rate
        yield newest

        bis = GaugeMetricFamily("farm_bisections", "Bisections in the results database by status (queued and "
                                "running ones are under way)", labels=["status"])
        for status, n in sorted({**dict.fromkeys(BISECTION_STATES, 0), **bisections}.items()):
            bis.add_metric([status], n)
        yield bis

    @staticmethod
    def _tail_call_rate(s, hw_class: str) -> tuple[float, datetime] | None:
        """(rate, when the newest of them started) over the class's newest
        RATE_RUNS runs whose stress ran (it made map updates or verified
        tail calls: a noop, a lost host's run or one that broke before its
        stress measured nothing and is left out; a run that stressed and
        verified none counts, at 0). None when the class has no such run.
        Read through ix_runs_class_started: at most RATE_RUNS rows."""
        newest = (select(Run.tail_calls_per_s, Run.duration_s, Run.started)
                  .where(Run.hw_class == hw_class, or_(Run.updates_per_s > 0, Run.tail_calls_per_s > 0))
                  .order_by(Run.started.desc()).limit(RATE_RUNS).subquery())
        weighted, seconds, mean, n, last = s.execute(select(
            func.sum(newest.c.tail_calls_per_s * newest.c.duration_s), func.sum(newest.c.duration_s),
            func.avg(newest.c.tail_calls_per_s), func.count(), func.max(newest.c.started))).one()
        if not n:
            return None
        if isinstance(last, str):  # SQLite hands max() of a DATETIME column back as text
            last = datetime.fromisoformat(last)
        return (weighted / seconds if seconds else mean), last
