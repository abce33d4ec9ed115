"""The verdict rule (Result.settle_verdict): a pass needs every topology's
tail calls verified and no window unjudged; anything less is an error that
says what was not verified, unless a finding makes it a fail. Pure logic."""
from __future__ import annotations

import json
from pathlib import Path

from farm.result import Finding, Result, Stats, TopologyStats, coverage_gap
from farm.stress.engine import StressOutcome, _collect

FIXTURES = Path(__file__).parent / "fixtures" / "results"


def result(per_topology: dict[str, TopologyStats], unjudged: int = 0, **kw) -> Result:
    windows = sum(t.windows for t in per_topology.values())
    stats = Stats(runs=sum(t.runs for t in per_topology.values()),
                  tail_calls_verified=sum(t.tail_calls_verified for t in per_topology.values()),
                  windows=windows, windows_unjudged=unjudged, per_topology=per_topology)
    return Result(run_id="r", job="j", host={}, started="now", stats=stats, **kw)


def verified(windows: int = 4) -> TopologyStats:
    return TopologyStats(runs=1000 * windows, tail_calls_verified=500 * windows, windows=windows)


def test_every_topology_verified_and_every_window_judged_is_a_pass():
    r = result({"0-direct-main": verified(), "1-indirect": verified()})
    assert r.settle_verdict() == "pass"
    assert r.error is None and r.unverified is None
    assert "error" not in r.to_dict() and "unverified" not in r.to_dict()


def test_a_topology_without_verified_tail_calls_is_an_error_naming_it():
    r = result({"0-direct-main": verified(), "1-indirect": TopologyStats(runs=800, windows=4)})
    assert r.settle_verdict() == "error"
    assert r.error == "not verified: no verified tail calls in 1-indirect (4 windows)"
    assert r.unverified == r.error


def test_a_loaded_topology_that_never_got_a_window_is_an_error_naming_it():
    r = result({"0-direct-main": TopologyStats(), "1-hierarchy": TopologyStats()})
    assert r.settle_verdict() == "error"
    assert r.error == ("not verified: no verified tail calls in 0-direct-main (0 windows), "
                       "1-hierarchy (0 windows)")


def test_unjudged_windows_are_an_error_even_when_every_topology_verified_some():
    r = result({"0-direct-main": verified(4), "1-indirect": verified(4)}, unjudged=2)
    assert r.settle_verdict() == "error"
    assert r.error == ("not verified: 2 of 8 windows unjudged "
                       "(the generation log no longer reached back)")


def test_a_topology_whose_every_window_was_unjudged_is_named_with_its_count():
    bare = TopologyStats(windows=3, windows_unjudged=3)
    r = result({"0-direct-main": verified(), "1-indirect": bare}, unjudged=3)
    assert r.settle_verdict() == "error"
    assert r.error == ("not verified: no verified tail calls in 1-indirect (3 windows, 3 unjudged); "
                       "3 of 7 windows unjudged (the generation log no longer reached back)")


def test_a_result_with_no_topology_at_all_is_never_a_pass():
    """A worker's noop answer, or any Result nobody filled in."""
    r = Result(run_id="r", job="j", host={}, started="now")
    assert r.settle_verdict() == "error"
    assert r.error == "nothing was verified: no topology ran"


def test_a_finding_is_a_fail_even_when_coverage_was_short_and_the_gap_is_kept():
    """A load-error of one topology, the other one never got a window."""
    load_error = Finding("load-error", "load-error: indirect", "the kernel refused indirect")
    r = result({"0-direct-main": TopologyStats(), "1-indirect": TopologyStats()}, findings=[load_error])
    assert r.settle_verdict() == "fail"
    assert r.error is None
    assert r.unverified == ("not verified: no verified tail calls in 0-direct-main (0 windows), "
                            "1-indirect (0 windows)")
    assert r.to_dict()["unverified"] == r.unverified and "error" not in r.to_dict()


def test_an_infrastructure_error_keeps_its_own_text_and_the_gap_goes_to_unverified():
    r = result({"0-direct-main": TopologyStats()}, error="bpftool not found on PATH")
    assert r.settle_verdict() == "error"
    assert r.error == "bpftool not found on PATH"
    assert r.unverified == "not verified: no verified tail calls in 0-direct-main (0 windows)"


def test_settling_twice_changes_nothing():
    r = result({"0-direct-main": TopologyStats(windows=2)}, unjudged=1)
    first = (r.settle_verdict(), r.error, r.unverified)
    assert (r.settle_verdict(), r.error, r.unverified) == first


def test_coverage_gap_is_none_only_for_full_coverage():
    assert coverage_gap(Stats(per_topology={"0-direct-main": verified()})) is None
    assert coverage_gap(Stats()) == "nothing was verified: no topology ran"


def test_an_old_result_without_per_topology_stats_still_reads():
    old = json.loads((FIXTURES / "pass.json").read_text())
    assert "per_topology" not in old["stats"] and "unverified" not in old
    r = Result.from_dict(old)
    assert r.verdict == "pass" and r.stats.per_topology == {} and r.unverified is None
    assert r.stats.tail_calls_verified == old["stats"]["tail_calls_verified"]


def test_per_topology_stats_survive_the_json_round_trip():
    r = result({"0-direct-main": verified(3)}, findings=[])
    r.settle_verdict()
    back = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.stats.per_topology == {"0-direct-main": verified(3)}
    assert back.to_dict() == r.to_dict()


def test_the_engine_sums_each_topologys_tallies_over_runners():
    outcome = StressOutcome(started_ns=0, duration_s=1.0, per_topology={"0-a": TopologyStats(), "1-b": TopologyStats()})
    _collect(("runner", 2, 2, [], {"0-a": TopologyStats(10, 5, 1, 0), "1-b": TopologyStats(10, 0, 1, 1)}), outcome)
    _collect(("runner", 3, 2, [], {"0-a": TopologyStats(20, 7, 1, 0), "1-b": TopologyStats(10, 3, 1, 0)}), outcome)
    assert outcome.windows == 4
    assert outcome.per_topology == {"0-a": TopologyStats(30, 12, 2, 0), "1-b": TopologyStats(20, 3, 2, 1)}
