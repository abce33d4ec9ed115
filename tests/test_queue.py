"""The farm with a real redis-server and real worker processes: routing by
hardware, fan-out, host loss, a down collector, scheduled runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from farm.errors import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_PASS
from support import REPO, farm_cmd, wait_for
from support.lab import submitted

# real redis-servers and workers; the workers load BPF programs
pytestmark = [pytest.mark.slow, pytest.mark.root]

TINY = {"duration": "1s", "topologies": ["direct-main"]}


def test_a_job_for_amd_never_runs_on_an_intel_host(lab, job_file, tmp_path):
    lab.collector()
    lab.worker("intel-1", "GenuineIntel")
    lab.worker("amd-1", "AuthenticAMD")
    out = tmp_path / "results.json"
    # a generated shape travels in the job's text like any topology (docs/jobs.md)
    job = job_file(**{**TINY, "topologies": ["direct-main", {"generate": {"seed": 7}}]})
    p = lab.farm("submit", str(job), "--where", "vendor=amd", "--wait", "--json", str(out))
    assert p.returncode == EXIT_PASS, p.stderr + lab.log("worker-amd-1")
    results = json.loads(out.read_text())
    assert [r["host"]["hostname"] for r in results] == ["amd-1"]
    assert results[0]["host"]["vendor"] == "AuthenticAMD"
    assert results[0]["stats"]["tail_calls_verified"] > 0  # it really ran, on this kernel
    assert results[0]["stats"]["per_topology"]["1-gen-7"]["tail_calls_verified"] > 0
    hosts = json.loads(lab.farm("hosts", "--json").stdout)
    assert hosts["intel-1"]["facts"]["vendor"] == "GenuineIntel"
    assert "farm worker amd-1: " + results[0]["run_id"] in lab.log("worker-amd-1")
    assert "farm worker intel-1: " not in lab.log("worker-intel-1")


def test_a_fan_out_to_three_workers_gives_three_results_in_the_collector(lab, job_file):
    lab.collector()
    for h in ("w1", "w2", "w3"):
        lab.worker(h)
    sub = submitted(lab.farm("submit", str(job_file(**TINY)), "--all", "--wait"), EXIT_PASS)
    stored = lab.stored(sub)
    assert sorted(r["host"]["hostname"] for r in stored) == ["w1", "w2", "w3"]
    assert all(r["verdict"] == "pass" for r in stored)
    status = lab.farm("status", sub).stdout
    assert status.count("done") == 3


def test_a_worker_killed_mid_job_is_one_host_lost_and_no_duplicate(lab, job_file, redis_server):
    lab.collector()
    w = lab.worker("victim")
    sub = submitted(lab.farm("submit", str(job_file(duration="60s", topologies=["direct-main"])), "--all"), EXIT_PASS)
    r = redis_server.client()
    run_id = f"{sub}.victim"
    wait_for(lambda: r.hget(f"farm:run:{run_id}", "state") == "running", "the run to start", 120)
    os.kill(w.pid, signal.SIGKILL)
    w.wait()
    wait_for(lambda: lab.stored(sub), "the host-lost result", 60)
    hosts = json.loads(lab.farm("hosts", "--json").stdout)
    assert hosts["victim"]["health"] == "suspect"
    # the host comes back: it attaches what it recovered, runs nothing twice
    lab.worker("victim")
    wait_for(lambda: "recovered" in lab.stored(sub)[0]["findings"][0]["detail"], "the recovery attachment", 60)
    wait_for(lambda: r.llen("host.victim") == 0 and not r.hlen("unacked"), "the orphan to be consumed", 60)
    stored = lab.stored(sub)
    assert len(stored) == 1
    findings = stored[0]["findings"]
    assert [f["kind"] for f in findings] == ["host-lost"]
    assert findings[0]["detail"]["recovered"]["boot_id"]
    assert r.hget(f"farm:run:{run_id}", "state") == "lost"


def test_results_wait_for_a_down_collector_and_survive_a_redis_restart(lab, job_file, redis_server):
    lab.worker("lonely")
    sub = submitted(lab.farm("submit", str(job_file(**TINY)), "--all"), EXIT_PASS)
    r = redis_server.client()
    wait_for(lambda: r.llen("results") >= 1, "the result to wait in Redis", 120)
    assert lab.stored(sub) == []
    lab.collector()
    wait_for(lambda: lab.stored(sub), "the collector to store it", 60)
    redis_server.stop()
    redis_server.start()  # an append-only file on disk, but the store does not rely on it
    redis_server.client().flushall()
    out = lab.farm("results", sub)  # Redis holds nothing now: the database answers
    assert out.returncode == EXIT_PASS and out.stdout.startswith("lonely "), out.stdout + out.stderr
    assert lab.stored(sub)[0]["host"]["hostname"] == "lonely"


def test_beat_fires_a_scheduled_lab_wide_run_once_per_tick(lab, job_file, tmp_path, redis_server):
    lab.collector()
    lab.worker("sched-1")
    job = job_file(name="tiny", **TINY)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(yaml.safe_dump({"schedules": [
        {"name": "often", "job": job.name, "targets": {"all": True}, "every": "3s"}]}))
    lab.start("beat", str(schedules), log="beat")
    r = redis_server.client()
    wait_for(lambda: r.zrange("farm:subs", 0, -1), "a scheduled submission", 60)
    sub = r.zrange("farm:subs", 0, 0)[0]
    assert sub.startswith("sched-often-")
    wait_for(lambda: lab.stored(sub), "the scheduled run's result", 120)
    assert lab.stored(sub)[0]["host"]["hostname"] == "sched-1"
    # a tick fires once, whoever asks again (a restarted beat, say)
    from farm.queue.app import make_app
    from farm.queue.registry import Registry
    from farm.queue.schedules import fire, load_schedules
    entry = load_schedules(schedules)[0]
    reg = Registry(r)
    app = make_app(redis_server.url)
    first = fire(app, reg, entry, 1_000_000.0)
    assert first and fire(app, reg, entry, 1_000_001.0) is None


def test_a_quarantined_host_gets_no_lab_wide_job_until_a_health_check_passes(lab, job_file, redis_server):
    from farm.queue.registry import QUARANTINE_AFTER, Registry
    lab.collector()
    lab.worker("flaky")
    reg = Registry(redis_server.client())
    for _ in range(QUARANTINE_AFTER):
        reg.note_loss("flaky")
    p = lab.farm("submit", str(job_file(**TINY)), "--all")
    assert p.returncode == EXIT_BAD_INPUT and "no healthy host" in p.stderr
    submitted(lab.farm("submit", "jobs/health.yaml", "--hosts", "flaky", "--wait"), EXIT_PASS)
    assert reg.hosts()["flaky"]["health"] == "healthy"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_farm_up_starts_a_lab_and_a_stop_signal_stops_all_of_it(tmp_path, stop):
    """With no broker given and none answering, farm up starts redis-server
    on 127.0.0.1:6379, then a worker, the collector, beat and the web page. Ctrl-C, and
    SIGTERM and SIGHUP as systemd, docker or a closed terminal send them,
    stop every one of them. In a network namespace of the test's own: its
    6379 is free whatever listens on this machine's."""
    from support.lab import LoopbackNetns, descendants, pidfds, still_running
    env = {k: v for k, v in os.environ.items() if k != "FARM_BROKER_URL"}
    env.update(FARM_STATE_DIR=str(tmp_path / "state"), FARM_HEARTBEAT_TTL="4", FARM_DB_URL="")
    log = tmp_path / "up.log"  # a file, not a pipe: orphans holding a pipe would hide farm up's exit
    with LoopbackNetns(stop.name.lower()) as ns, open(log, "wb") as out:
        up = subprocess.Popen(ns.cmd(*farm_cmd("up", "--schedules", "jobs/schedules.yaml")), cwd=REPO, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def hosts_inside():  # the CLI's own default broker: 127.0.0.1:6379 in the namespace
            p = subprocess.run(ns.cmd(*farm_cmd("hosts", "--json")), cwd=REPO, env=env, capture_output=True,
                               text=True)
            return json.loads(p.stdout) if p.returncode == 0 else {}
        wait_for(lambda: any(h["alive"] for h in hosts_inside().values()) or up.poll() is not None,
                 "farm up's worker", 120, 0.5)
        assert up.poll() is None, log.read_text()
        bind = subprocess.run(ns.cmd("redis-cli", "-h", "127.0.0.1", "-p", "6379", "config", "get", "bind"),
                              capture_output=True, text=True).stdout.split()
        assert bind == ["bind", "127.0.0.1"]  # loopback only, unless --bind says else
        kids = descendants(up.pid)
        names = sorted(Path(f"/proc/{k}/comm").read_text().strip() for k in kids)
        assert len(kids) == 5 and "redis-server" in names, names  # redis-server, worker, collector, beat, web
        fds = pidfds(kids)
        up.send_signal(stop)
        assert up.wait(timeout=120) == EXIT_PASS, log.read_text()
        assert still_running(fds, 60) == [], log.read_text()
        assert ns.pids() == []


def test_a_job_any_host_of_a_class_will_do_runs_once_on_one_of_them(lab, job_file):
    lab.collector()
    lab.worker("c1")
    lab.worker("c2")
    hw_class = json.loads(lab.farm("hosts", "--json").stdout)["c1"]["facts"]["hw_class"]
    sub = submitted(lab.farm("submit", str(job_file(**TINY, targets={"hw_class": hw_class, "any": True})),
                             "--wait"), EXIT_PASS)
    stored = lab.stored(sub)
    assert len(stored) == 1 and stored[0]["host"]["hostname"] in ("c1", "c2")


def test_the_collector_writes_the_database_that_triage_reads(lab, job_file):
    """A real worker's result goes through the collector into the database,
    with the worker's JIT listings, and `farm triage` counts it."""
    lab.collector()
    lab.worker("db-amd", "AuthenticAMD")
    sub = submitted(lab.farm("submit", str(job_file(name="dbjob", **TINY)), "--all"), EXIT_PASS)
    stored = wait_for(lambda: lab.stored(sub), "the collector to store it", 120)
    run_id, host = stored[0]["run_id"], stored[0]["host"]
    cells = json.loads(lab.farm("triage", "--json", "--job", "dbjob").stdout)
    cell = host["cell"]  # the cell this machine booted in, as the run proved it
    assert cells == [{"job": "dbjob", "hw_class": host["hw_class"], "kernel": host["kernel"], "cell": cell["name"],
                      "vendor": "AuthenticAMD", "status": "pass", "pass": 1, "fail": 0, "lost": 0, "error": 0,
                      "not-run": 0, "unsupported": [],
                      "indirect_jump": [cell["indirect_jump"]], "return": [cell["return"]]}]
    registered = json.loads(lab.farm("hosts", "--json").stdout)["db-amd"]["facts"]["cell"]
    assert registered == {"name": cell["name"]}  # what a retry of its cell picks hosts by
    listing = lab.store().artifact_text(run_id, "0-direct-main/entry.S")
    assert listing and "bpf_prog_" in listing  # shipped from the worker, diffable in reports
    assert "attachments" not in stored[0]


def test_triage_retries_a_candidate_regression_on_another_host_of_its_class(lab, job_file, tmp_path):
    """skl-a-like host 'retry-a' failed on this kernel where the previous one
    passed; --retry runs the job on 'retry-b' (same class, same kernel), a
    real worker, and its pass turns the candidate into a flake."""
    from datetime import datetime
    from support.results_lab import base, variant
    lab.collector()
    lab.worker("retry-b", "AuthenticAMD")
    facts = json.loads(lab.farm("hosts", "--json").stdout)["retry-b"]["facts"]
    spec = job_file(name="retryjob", **TINY)
    history = []
    for n, (kernel, src) in enumerate((("0.1.0-old", "pass"), (facts["kernel"], "fail-tail-call-count"))):
        r = variant(base(src), "retry-a", kernel, datetime(2026, 9, 1 + n), n, facts=facts)
        r["job"] = "retryjob"
        history.append((r, None, None))
    lab.store().add_many(history)
    before = json.loads(lab.farm("triage", "regressions", "--json").stdout)
    assert [c["state"] for c in before] == ["awaiting-retry"]
    out = lab.farm("triage", "regressions", "--retry", "--jobs-dir", str(spec.parent))
    assert out.returncode == EXIT_PASS and "submitted" in out.stdout and "to retry-b" in out.stdout, \
        out.stdout + out.stderr
    sub = out.stdout.split("submitted ", 1)[1].split()[0]
    wait_for(lambda: lab.stored(sub), "the retry's result", 120)
    after = json.loads(lab.farm("triage", "regressions", "--json").stdout)
    assert [(c["state"], c["retry_hosts"]) for c in after] == [("flaky", ["retry-b"])]


def test_the_collector_retries_a_new_failure_on_another_host_before_calling_it_a_regression(lab, job_file):
    """auto-a fails a job on this kernel where the previous kernel passed: the
    collector sends the same spec to auto-b (same class and kernel) by
    itself, and auto-b failing too makes it a regression."""
    from datetime import datetime
    from support.results_lab import base, variant
    lab.collector()
    lab.worker("auto-a")
    lab.worker("auto-b")
    facts = json.loads(lab.farm("hosts", "--json").stdout)["auto-a"]["facts"]
    old = variant(base("pass"), "auto-a", "0.1.0-old", datetime(2026, 9, 1), 0, facts=facts)
    old["job"] = "shortjob"
    lab.store().add(old)
    faulty = job_file(name="shortjob", duration="1s", writers={"ops": ["replace"]},
                      topologies=[{"name": "chain-limit-direct", "fault": "short-chain"}])
    submitted(lab.farm("submit", str(faulty), "--hosts", "auto-a", "--wait"), EXIT_FINDINGS)

    def states():
        return [(c["state"], c["retry_hosts"]) for c in json.loads(lab.farm("triage", "regressions",
                                                                             "--json").stdout)]
    wait_for(lambda: states() == [("regression", ["auto-b"])], "the retry on auto-b to confirm it", 120, 1)
    assert "retry of shortjob" in lab.log("collector")
