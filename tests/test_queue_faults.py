"""Faults in the farm's distributed shape, with real processes: the broker
restarted mid-run, the collector and workers SIGKILLed at the awkward
moments, a task whose run id is a path. Each run ends in exactly one record
(the real result, or a recorded error / host-lost), never a silent gap and
never two.

(A down collector and a worker killed as soon as its run starts, found lost
by the reaper, are in test_queue.py.)
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import yaml

from farm.errors import EXIT_PASS
from farm.queue.registry import Registry
from farm.queue.worker_run import NOOP_ERROR
from support import children_of, wait_for
from support.lab import submit_noop, submitted

# real redis-servers and workers; the workers load BPF programs
pytestmark = [pytest.mark.slow, pytest.mark.root]
TINY = {"duration": "1s", "topologies": ["direct-main"]}



def unacked(r) -> list[tuple[str, str]]:
    """(task, queue) of every message delivered and not acknowledged yet."""
    out = []
    for raw in r.hvals("unacked"):
        message, _exchange, queue = json.loads(raw)
        out.append((message["headers"].get("task"), queue))
    return out


def settled(r, run_ids, queues=()) -> bool:
    """Every run has its final state; no message is left in a consumer's
    hands, on the results queue or on `queues`."""
    states = [r.hget(f"farm:run:{run_id}", "state") for run_id in run_ids]
    return (all(s in ("done", "lost") for s in states) and not r.hlen("unacked") and not r.llen("results")
            and not any(r.llen(q) for q in queues))


def admin(redis_server) -> redis.Redis:
    """A client of our own that a narrowed `default` user (the farm's) does
    not narrow."""
    redis_server.client().execute_command("ACL", "SETUSER", "farmtest", "on", ">farmtest", "~*", "&*", "+@all")
    return redis.Redis.from_url(f"redis://farmtest:farmtest@127.0.0.1:{redis_server.port}/0",
                                decode_responses=True)


# -- the broker restarted ------------------------------------------------------------------

@pytest.mark.parametrize("across_result", [False, True], ids=["while-the-job-runs", "across-the-result"])
def test_a_redis_restart_mid_run_loses_nothing_and_stores_once(lab, job_file, redis_server, across_result):
    """The same redis-server (its append-only file) stopped and started while
    a worker runs a ~3 s job: for a moment during the job, or for longer
    than the heartbeat TTL, over the moment the worker sends its result."""
    lab.collector()
    w = lab.worker("steady")
    sub = submitted(lab.farm("submit", str(job_file(duration="3s", topologies=["direct-main"])), "--all"), EXIT_PASS)
    r = redis_server.client()
    run_id = f"{sub}.steady"
    wait_for(lambda: r.hget(f"farm:run:{run_id}", "state") == "running", "the run to start", 120)
    if across_result:
        # the heartbeat renewed no more (SET refused), so its expiry is final
        refused_since = len(lab.log_bytes("worker-steady"))
        r.execute_command("ACL", "SETUSER", "default", "-set")
        wait_for(lambda: b"no permissions to run the 'set' command" in lab.log_bytes("worker-steady")[refused_since:],
                 "a refused heartbeat", 30)
        hb_expires_ms = int(r.execute_command("PEXPIRETIME", "farm:hb:steady"))
        assert hb_expires_ms > 0
    since = len(lab.log_bytes("worker-steady"))
    redis_server.stop()  # SIGTERM: redis flushes its append-only file, as a restart does (and forgets ACLs)
    # the worker has seen the broker gone
    wait_for(lambda: b"farm worker: heartbeat: " in lab.log_bytes("worker-steady")[since:], "the worker to miss it",
             30)
    if across_result:
        # the worker holds its result until the broker answers again
        wait_for(lambda: f"result of {run_id} waits for the broker" in lab.log("worker-steady"),
                 "the worker to hold its result", 120)
        # and its heartbeat key has expired meanwhile: the collector's reaper
        # must not take the broker's absence for the host's
        wait_for(lambda: time.time() * 1000 > hb_expires_ms, "the heartbeat key's expiry", 30)
    redis_server.start()
    r = redis_server.client()
    wait_for(lambda: lab.stored(sub), "the result after the restart", 120)
    wait_for(lambda: settled(r, [run_id], ["host.steady"]), "the run to settle", 60)
    stored = lab.stored(sub)
    assert len(stored) == 1, stored
    assert stored[0]["run_id"] == run_id and stored[0]["verdict"] == "pass", stored[0]
    assert r.hget(f"farm:run:{run_id}", "state") == "done"
    assert not r.exists(f"farm:lost:{run_id}")
    assert r.hget("farm:host:steady", "health") == "healthy"
    assert w.poll() is None, lab.log("worker-steady")
    # worker and collector reconnected: the next job goes through as if nothing happened
    p = lab.farm("submit", str(job_file(name="again", **TINY)), "--all", "--wait")
    assert p.returncode == EXIT_PASS, p.stdout + p.stderr + lab.log("worker-steady") + lab.log("collector")
    assert len(lab.stored(submitted(p, EXIT_PASS))) == 1


# -- the collector killed ------------------------------------------------------------------

def test_a_collector_killed_while_results_arrive_stores_every_result_once(lab, redis_server):
    """120 results wait on the results queue; the collector is SIGKILLed
    while it drains them (one in its hands, as it nearly always has), then
    started again: every run is stored once and its state is set."""
    hosts = ("k1", "k2", "k3")
    for h in hosts:
        lab.worker(h)
    subs = submit_noop(redis_server.url, 40)
    run_ids = [run_id for s in subs for run_id in s["runs"]]
    assert len(run_ids) == 120
    r = redis_server.client()
    wait_for(lambda: r.llen("results") == len(run_ids), "every result to wait for a collector", 120)
    c = lab.collector()
    wait_for(lambda: r.llen("results") <= len(run_ids) - 20 and ("farm.store", "results") in unacked(r),
             "the collector to be storing", 120, step=0.001)
    os.kill(c.pid, signal.SIGKILL)
    c.wait()
    in_hand = unacked(r).count(("farm.store", "results"))
    store = lab.store()
    stored_at_kill = store.run_count()
    assert stored_at_kill < len(run_ids)
    lab.collector()
    try:
        wait_for(lambda: settled(r, run_ids), "every run to be stored", 120)
    finally:
        print(f"held at the kill: {in_hand}, stored then: {stored_at_kill}, now: {store.run_count()}, "
              f"unacked now: {unacked(r)}")
    assert store.run_count() == len(run_ids)
    for s in subs:
        stored = lab.stored(s["id"])
        assert sorted(x["run_id"] for x in stored) == sorted(s["runs"])
        assert all(x["verdict"] == "error" and x["error"] == NOOP_ERROR for x in stored)  # noops: nothing verified
    assert {r.hget(f"farm:run:{run_id}", "state") for run_id in run_ids} == {"done"}


# -- a worker killed -----------------------------------------------------------------------

def test_a_worker_killed_before_load_and_back_at_once_records_one_host_lost(lab, job_file, redis_server):
    """SIGKILL as soon as the run is in hand (the corpus not compiled yet),
    and the host back at once, about when its heartbeat expires: whoever
    notices first (the host itself, or the collector's reaper) records the
    loss, once; the host attaches what it recovered and skips its orphan."""
    lab.collector()
    w = lab.worker("early")
    sub = submitted(lab.farm("submit", str(job_file(duration="30s", topologies=["direct-main"])), "--all"), EXIT_PASS)
    r = redis_server.client()
    run_id = f"{sub}.early"
    wait_for(lambda: r.exists("farm:running:early"), "the run in hand", 120, step=0.001)
    os.kill(w.pid, signal.SIGKILL)
    w.wait()
    lab.worker("early")
    wait_for(lambda: settled(r, [run_id], ["host.early"]), "the run to settle", 60)
    wait_for(lambda: "recovered" in lab.stored(sub)[0]["findings"][-1]["detail"], "the recovery", 60)
    stored = lab.stored(sub)
    assert len(stored) == 1 and stored[0]["run_id"] == run_id
    assert [f["kind"] for f in stored[0]["findings"]] == ["host-lost"]
    summary = stored[0]["findings"][0]["summary"]
    assert "worker restarted mid-job" in summary or "heartbeat stopped" in summary, summary
    assert r.hget(f"farm:run:{run_id}", "state") == "lost"
    assert r.hget("farm:host:early", "health") == "suspect"
    assert f"farm worker early: {run_id}: skipped" in lab.log("worker-early")


def _forks(pid: int) -> set[int]:
    """Children of pid that are forks of it (same name): its pin guard, and
    during the stress its writers and runners. clang and bpftool have names
    of their own once exec'd."""
    comm = Path(f"/proc/{pid}/comm").read_text()
    forks = set()
    for c in children_of(pid):
        try:
            if Path(f"/proc/{c}/comm").read_text() == comm:
                forks.add(c)
        except FileNotFoundError:
            pass
    return forks


def stressing(pid: int):
    """A predicate: the worker has the same two or more forks at two polls
    (a compiler forked and not yet exec'd lives for far less than a poll)."""
    seen = {"last": set()}

    def check() -> bool:
        now, last = _forks(pid), seen["last"]
        seen["last"] = now
        return len(now) >= 2 and now == last
    return check


def test_a_worker_killed_during_stress_is_one_host_lost_and_leaves_nothing(lab, job_file, redis_server,
                                                                           no_leaks):
    """SIGKILL while writers and runners churn: the reaper records the loss
    once, the stress children and the run's pins go with the worker, and
    the host, back, skips its orphaned task."""
    lab.collector()
    w = lab.worker("busy")
    sub = submitted(lab.farm("submit", str(job_file(duration="60s", topologies=["direct-main"])), "--all"), EXIT_PASS)
    r = redis_server.client()
    run_id = f"{sub}.busy"
    wait_for(stressing(w.pid), "the stress to start", 120, step=0.2)
    stress = children_of(w.pid)
    os.kill(w.pid, signal.SIGKILL)
    w.wait()
    wait_for(lambda: lab.stored(sub), "the host-lost result", 60)
    wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in stress), "the stress children to die", 30)
    lab.worker("busy")
    wait_for(lambda: settled(r, [run_id], ["host.busy"]), "the orphan to be consumed", 60)
    stored = lab.stored(sub)
    assert len(stored) == 1
    assert [f["kind"] for f in stored[0]["findings"]] == ["host-lost"]
    assert "heartbeat stopped" in stored[0]["findings"][0]["summary"]
    assert r.hget(f"farm:run:{run_id}", "state") == "lost"


@pytest.mark.parametrize("denied", [("del", "zrem", "hdel"), ("zrem", "hdel")],
                         ids=["before-its-run-is-cleared", "before-the-ack"])
def test_a_worker_killed_after_sending_its_result_is_not_lost(lab, job_file, redis_server, denied):
    """The result is on the results queue, the task not acknowledged, when
    the worker dies. Redis ACLs freeze the worker right there: its `default`
    user may no longer DEL (clear the run in hand) or ZREM/HDEL (kombu's
    ack). The run is the real result, once: not a second, host-lost record,
    and the host stays healthy; the orphaned task is reaped or skipped."""
    lab.worker("late")
    sub = submitted(lab.farm("submit", str(job_file(duration="2s", topologies=["direct-main"])), "--all"), EXIT_PASS)
    r = admin(redis_server)
    run_id = f"{sub}.late"
    wait_for(lambda: r.hget(f"farm:run:{run_id}", "state") == "running", "the run to start", 120)
    r.execute_command("ACL", "SETUSER", "default", *(f"-{c}" for c in denied))
    w = lab.procs[-1]
    try:
        wait_for(lambda: r.llen("results") == 1, "the result on the results queue", 120)
        # whatever the worker tries next is refused: give it the time to try
        wait_for(lambda: "NOPERM" in lab.log("worker-late") or w.poll() is not None, "the worker to stall", 30)
        if w.poll() is None:
            os.kill(w.pid, signal.SIGKILL)
        w.wait()
    finally:
        r.execute_command("ACL", "SETUSER", "default", "+@all")
    assert ("farm.run", "host.late") in unacked(r)
    assert bool(r.exists("farm:running:late")) == ("del" in denied)
    lab.collector()
    wait_for(lambda: not r.exists("farm:hb:late"), "the heartbeat to expire", 30)
    wait_for(lambda: lab.stored(sub), "the result", 60)
    # two reaper rounds ended since: the second began with the heartbeat gone,
    # so the reaper has looked at this host and not taken it for lost
    reg = Registry(r)
    rounds = reg.reaper_rounds()
    wait_for(lambda: reg.reaper_rounds() >= rounds + 2, "the reaper to look", 60)
    assert not r.exists(f"farm:lost:{run_id}")
    lab.worker("late")
    wait_for(lambda: settled(r, [run_id], ["host.late"]), "the orphaned task to be reaped or skipped", 60)
    stored = lab.stored(sub)
    assert len(stored) == 1 and stored[0]["verdict"] == "pass", stored
    assert not any(f["kind"] == "host-lost" for f in stored[0]["findings"])
    assert r.hget(f"farm:run:{run_id}", "state") == "done"
    assert not r.exists(f"farm:lost:{run_id}")
    assert r.hget("farm:host:late", "health") == "healthy"
    # never run twice (with DEL refused, the first one failed before its log line)
    log = (lab.state / "worker-late.log").read_text()
    assert log.count(f"farm worker late: {run_id}: pass") == (0 if "del" in denied else 1), log


# -- a task that names a path --------------------------------------------------------------

def test_a_run_id_that_is_a_path_is_refused_with_an_error_result(lab, job_file, redis_server, tmp_path):
    """A task sent straight to a host's queue (not through `farm submit`)
    whose run id would take the artifacts out of <state>/artifacts/."""
    from farm.queue.app import make_app
    lab.collector()
    lab.worker("careful")
    app = make_app(redis_server.url)
    bad = ["../../escaped", "a/b", "..", str(tmp_path / "absolute"), ".hidden", "x\ny", ""]
    try:
        for run_id in bad:
            app.send_task("farm.run", queue="host.careful", args=[{
                "submission": "evil", "run_id": run_id, "job": "tiny", "spec": yaml.safe_dump(TINY),
                "overrides": {}, "noop": False}])
    finally:
        app.close()
    wait_for(lambda: len(lab.stored("evil")) == len(bad), "a result for each", 120)
    stored = lab.stored("evil")
    assert sorted(x["run_id"] for x in stored) == sorted(bad)
    for x in stored:
        assert x["verdict"] == "error" and "run id" in x["error"], x
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "absolute").exists()
    assert not (lab.state / "facts.json").exists()
    art = lab.state / "artifacts"
    assert not art.exists() or not any(art.iterdir()), list(art.rglob("*"))
    # and the worker still runs a good one
    submitted(lab.farm("submit", str(job_file(**TINY)), "--all", "--wait"), EXIT_PASS)
