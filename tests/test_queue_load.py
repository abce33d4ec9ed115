"""Load: 20 `farm worker` processes (20 hosts, through facts overrides) and
one collector on a real redis-server; 2,000 zero-length jobs (the worker
answers at once, so the queue is what is loaded) fanned out over them:
every run collected exactly once, none missing, every run state set. Each
is an error result, never a pass: a noop runs nothing, so verifies nothing."""
from __future__ import annotations

from collections import Counter

import pytest

from farm.queue.worker_run import NOOP_ERROR
from support import wait_for
from support.lab import submit_noop

# real redis-servers and workers; the workers load BPF programs
pytestmark = [pytest.mark.slow, pytest.mark.root]

HOSTS = [f"load-{i:02d}" for i in range(20)]
SUBMISSIONS = 100  # x 20 hosts = 2,000 runs


def test_2000_zero_length_jobs_over_20_workers_are_each_collected_once(lab, redis_server):
    # The production heartbeat TTL (15 s), not the tests' 4 s: twenty Python
    # daemons starting at once on this 2-CPU machine can starve a heartbeat
    # thread for seconds, and this test is about the queue, not host loss.
    lab.env["FARM_HEARTBEAT_TTL"] = "15"
    collector = lab.collector()
    workers = {h: lab.worker(h, "GenuineIntel" if i % 2 else "AuthenticAMD", wait=False)
               for i, h in enumerate(HOSTS)}
    for h, p in workers.items():  # all starting together: deadlines, not timings
        lab.wait_ready(p, f"worker-{h}", deadline_s=300)
    r = redis_server.client()
    assert sorted(r.smembers("farm:hosts")) == HOSTS

    subs = submit_noop(redis_server.url, SUBMISSIONS)
    run_ids = [run_id for s in subs for run_id in s["runs"]]
    assert len(run_ids) == len(set(run_ids)) == 2000
    store = lab.store()

    def states() -> Counter:
        p = r.pipeline(transaction=False)
        for run_id in run_ids:
            p.hget(f"farm:run:{run_id}", "state")
        return Counter(p.execute())

    def settled() -> bool:
        return (store.run_count() == len(run_ids) and states() == Counter({"done": len(run_ids)})
                and not r.llen("results") and not r.hlen("unacked")
                and not any(r.llen(f"host.{h}") for h in HOSTS))
    try:
        wait_for(settled, "every run collected", 600, step=0.5)
    finally:
        print(f"stored {store.run_count()}, states {dict(states())}, results queue {r.llen('results')}, "
              f"unacked {r.hlen('unacked')}")
    assert store.run_count() == len(run_ids)  # nothing more either: no run stored twice
    per_host = Counter()
    for s in subs:
        stored = lab.stored(s["id"])
        assert sorted(x["run_id"] for x in stored) == sorted(s["runs"]), s["id"]
        # a noop runs nothing, so it verifies nothing: never a pass
        assert all(x["verdict"] == "error" and x["error"] == NOOP_ERROR for x in stored)
        per_host.update(x["host"]["hostname"] for x in stored)
    assert per_host == Counter({h: SUBMISSIONS for h in HOSTS})
    assert collector.poll() is None and all(p.poll() is None for p in workers.values())
    hosts = lab.farm("hosts", "--json")
    assert hosts.returncode == 0 and "suspect" not in hosts.stdout, hosts.stdout  # nobody taken for lost
    lab.stop_all()
    assert all(p.returncode is not None for p in lab.procs)
