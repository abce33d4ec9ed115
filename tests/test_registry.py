"""Routing rules (pure) and the registry's lease and health (real Redis)."""
import pytest

from farm.queue.lost import lost_result
from farm.queue.registry import QUARANTINE_AFTER, Registry
from farm.queue.routing import Selection, parse_where, queues_for, select_hosts
from farm.queue.submit import worst_exit

INTEL = {"hostname": "i1", "vendor": "GenuineIntel", "hw_class": "intel-icelake", "model": 106}
AMD = {"hostname": "a1", "vendor": "AuthenticAMD", "hw_class": "amd-zen4", "model": 17}


def test_a_host_serves_its_vendor_class_and_own_queue():
    assert queues_for(AMD) == ["vendor.amd", "class.amd-zen4", "host.a1"]
    assert queues_for(INTEL)[0] == "vendor.intel"


def test_selection_by_facts_skips_quarantined_hosts_but_not_named_ones():
    hosts = {"i1": {"facts": INTEL, "health": "healthy"}, "a1": {"facts": AMD, "health": "quarantined"},
             "a2": {"facts": {**AMD, "hostname": "a2"}, "health": "suspect"}}
    assert select_hosts(hosts, Selection(parse_where("vendor=amd"))) == ["a2"]
    assert select_hosts(hosts, Selection(parse_where("hw_class=intel-*"))) == ["i1"]
    assert select_hosts(hosts, Selection(all=True)) == ["a2", "i1"]
    assert select_hosts(hosts, Selection(hosts=("a1",))) == ["a1"]
    with pytest.raises(ValueError, match="unknown host"):
        select_hosts(hosts, Selection(hosts=("zz",)))
    with pytest.raises(ValueError, match="unknown fact"):
        parse_where("colour=red")


def test_a_jobs_targets_cells_pick_hosts_by_the_cell_their_worker_registered(job_file):
    from farm.errors import BadInput
    from farm.queue.submit import selection_for
    from farm.spec import load_spec
    hosts = {"i1": {"facts": {**INTEL, "cell": {"name": "lfence"}}, "health": "healthy"},
             "a1": {"facts": {**AMD, "cell": {"name": "default"}}, "health": "healthy"},
             "a2": {"facts": {**AMD, "hostname": "a2"}, "health": "healthy"}}  # an older worker: no cell
    spec = load_spec(job_file(topologies=["indirect"], targets={"cells": ["lfence", "off"]}))
    assert select_hosts(hosts, selection_for(spec)) == ["i1"]
    spec = load_spec(job_file(topologies=["indirect"], targets={"cells": ["default"], "vendor": "amd"}))
    assert select_hosts(hosts, selection_for(spec)) == ["a1"]
    assert select_hosts(hosts, selection_for(load_spec(job_file(topologies=["indirect"])))) == ["a1", "a2", "i1"]
    assert select_hosts(hosts, Selection(parse_where("cell=l*"))) == ["i1"]
    with pytest.raises(BadInput, match="cannot also pick cells"):
        selection_for(load_spec(job_file(topologies=["indirect"],
                                         targets={"cells": ["lfence"], "any": True, "hw_class": "amd-zen4"})))


def test_a_lost_run_is_a_failing_result_with_one_host_lost_finding():
    r = lost_result({"run_id": "s1.a1", "job": "smoke", "submission": "s1"}, AMD, "heartbeat stopped")
    assert r["verdict"] == "fail" and [f["kind"] for f in r["findings"]] == ["host-lost"]
    assert worst_exit([r], 1) == 1 and worst_exit([], 1) == 3


def test_one_lease_per_host_and_health_after_repeated_losses(redis_server):
    reg = Registry(redis_server.client())
    reg.register("a1", AMD, queues_for(AMD))
    assert reg.acquire_lease("a1", "w1")
    assert not reg.acquire_lease("a1", "w2")
    reg.release_lease("a1", "w2")  # not the owner: no effect
    assert not reg.acquire_lease("a1", "w2")
    reg.release_lease("a1", "w1")
    assert reg.acquire_lease("a1", "w2")
    assert reg.mark_lost("run-x") and not reg.mark_lost("run-x")
    healths = [reg.note_loss("a1") for _ in range(QUARANTINE_AFTER)]
    assert healths[0] == "suspect" and healths[-1] == "quarantined"
    reg.release("a1")
    assert reg.hosts()["a1"]["health"] == "healthy"


def test_a_late_result_of_a_lost_run_is_attached_not_counted(redis_server, tmp_path):
    from farm.queue.collector import Collector
    from farm.store import open_store
    c = Collector(None, Registry(redis_server.client()), open_store(f"sqlite:///{tmp_path}/farm.db"))
    lost = {**lost_result({"run_id": "s1.a1", "job": "smoke", "submission": "s1"}, AMD, "heartbeat stopped"),
            "submission": "s1"}
    assert c.store(lost)
    late = {**lost, "verdict": "pass", "findings": []}
    assert not c.store(late)
    stored = c.results.results("s1")
    assert len(stored) == 1
    assert stored[0]["findings"][0]["detail"]["late_result"] == {"verdict": "pass", "findings": []}


def test_once_only_marks_unrecovered_runs_and_the_result_cache(redis_server):
    reg = Registry(redis_server.client())
    assert reg.claim_tick("nightly", 7, "s1") and not reg.claim_tick("nightly", 7, "s2")
    assert reg.claim_tick("nightly", 8, "s3")
    assert reg.claim_retry("j", "amd-zen4", "6.18", "s1") and not reg.claim_retry("j", "amd-zen4", "6.18", "s2")
    # a candidate of the lfence cell is another candidate, retried once too; unknown cell ("") is the plain key
    assert reg.claim_retry("j", "amd-zen4", "6.18", "s4", "lfence")
    assert not reg.claim_retry("j", "amd-zen4", "6.18", "s5", "lfence")
    assert not reg.claim_retry("j", "amd-zen4", "6.18", "s6", "")
    reg.keep_unrecovered("a1", {"run_id": "r1"})
    reg.keep_unrecovered("a1", {"run_id": "r2"})
    assert [reg.next_unrecovered("a1"), reg.next_unrecovered("a1"), reg.next_unrecovered("a1")] == [
        {"run_id": "r1"}, {"run_id": "r2"}, None]
    assert reg.cached_result("r1") is None
    reg.cache_result("r1", {"run_id": "r1", "verdict": "pass"})
    assert reg.cached_result("r1") == {"run_id": "r1", "verdict": "pass"}
    assert not reg.managed("g1")
    reg.mark_managed("g1", "vlab")
    assert reg.managed("g1")
    # every key has a TTL where the registry promises one
    ttls = {k: redis_server.client().ttl(k) for k in redis_server.client().keys("farm:*")}
    assert all(t > 0 for k, t in ttls.items() if k.split(":")[1] in ("tick", "retry", "result", "managed")), ttls


def test_no_farm_module_but_the_registry_names_a_redis_key():
    """The registry owns the farm's keys: a key built elsewhere would
    escape its TTLs and its documentation."""
    import re
    from pathlib import Path
    import farm
    raw = re.compile(r"""["']farm:[a-z]|\breg(istry)?\.r\b|\.r\.(get|set|hset|exists|rpush|lpop)\(""")
    root = Path(farm.__file__).parent
    found = [f"{p.relative_to(root)}:{n}: {line.strip()}" for p in root.rglob("*.py")
             if p.name != "registry.py" for n, line in enumerate(p.read_text().splitlines(), 1)
             if raw.search(line)]
    assert found == []
