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
