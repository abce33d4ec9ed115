"""The oracle's judgement of one window, from counter deltas and allowed
sets: pure logic, no kernel needed."""
import time

from farm.bpf.corpus import (C_CANARY_BAD, C_DEPTH, C_ENTRIES, C_FALL, C_NR, EMPTY, TOPOLOGIES,
                             hit_index, target_id)
from farm.stress.churn import op_cycle
from farm.stress.genlog import GenLogs
from farm.stress.oracle import judge_window, slot_universe

SINGLE = TOPOLOGIES["direct-main"]
CHAIN = TOPOLOGIES["chain-limit-direct"]
HIER = TOPOLOGIES["hierarchy"]


def delta(**counts) -> list[int]:
    d = [0] * C_NR
    for idx, n in counts.get("at", {}).items():
        d[idx] += n
    return d


def kinds(v):
    return sorted(p.kind for p in v.problems)


def test_a_clean_window_of_single_tail_calls_passes():
    d = delta(at={C_ENTRIES: 100, hit_index(0, 0): 60, C_FALL + 0: 40})
    v = judge_window(SINGLE, "direct-main", 1, d, {0: {0, EMPTY}})
    assert kinds(v) == [] and v.tail_calls == 60 and v.runs == 100


def test_a_target_never_installed_in_the_slot_is_a_wrong_target():
    d = delta(at={C_ENTRIES: 10, hit_index(0, 1): 10})
    v = judge_window(SINGLE, "direct-main", 1, d, {0: {0}})
    assert kinds(v) == ["wrong-target"]
    assert v.problems[0].detail["observed_target"] == 1
    assert v.problems[0].detail["allowed"] == [0]


def test_a_call_landing_in_another_slots_program_is_a_wrong_target_even_if_installed_there():
    other = target_id(1, 0)
    d = delta(at={C_ENTRIES: 5, hit_index(0, other): 5})
    v = judge_window(SINGLE, "direct-main", 2, d, {0: {0, 1, 2, EMPTY}, 1: {other}})
    assert kinds(v) == ["wrong-target"] and "belongs to slot 1" in v.problems[0].summary


def test_falling_through_a_slot_that_was_never_empty_is_a_missed_tail_call():
    d = delta(at={C_ENTRIES: 3, C_FALL: 3})
    assert kinds(judge_window(SINGLE, "x", 1, d, {0: {0}})) == ["missed-tail-call"]
    assert kinds(judge_window(SINGLE, "x", 1, d, {0: {0, EMPTY}})) == []


def test_runs_that_no_corpus_program_accounts_for_went_outside_the_corpus():
    d = delta(at={C_ENTRIES: 10, hit_index(0, 0): 7})
    v = judge_window(SINGLE, "x", 1, d, {0: {0}})
    assert kinds(v) == ["wrong-target"]
    assert v.problems[0].detail["observed_target"] == "outside corpus"


def test_a_chain_of_exactly_33_passes_and_any_other_length_does_not():
    ok = delta(at={C_ENTRIES: 2, hit_index(0, 0): 66, C_DEPTH + 33: 2})
    assert kinds(judge_window(CHAIN, "c", 1, ok, {0: {0}})) == []
    long = delta(at={C_ENTRIES: 1, hit_index(0, 0): 34, C_DEPTH + 34: 1})
    assert kinds(judge_window(CHAIN, "c", 1, long, {0: {0}})) == ["tail-call-count"]
    short = delta(at={C_ENTRIES: 1, hit_index(0, 0): 20, C_DEPTH + 20: 1})
    assert kinds(judge_window(CHAIN, "c", 1, short, {0: {0}})) == ["tail-call-count"]
    # ... unless the slot was emptied during the window
    assert kinds(judge_window(CHAIN, "c", 1, short, {0: {0, EMPTY}})) == []


def test_a_hierarchy_must_total_33_tail_calls():
    ok = delta(at={C_ENTRIES: 1, hit_index(0, 2): 33, C_DEPTH + 33: 1})
    assert kinds(judge_window(HIER, "h", 1, ok, {0: {2}})) == []
    lost_counter = delta(at={C_ENTRIES: 1, hit_index(0, 2): 63, C_DEPTH + 63: 1})
    assert kinds(judge_window(HIER, "h", 1, lost_counter, {0: {2}})) == ["tail-call-count"]


def test_a_changed_canary_is_stack_corruption():
    d = delta(at={C_ENTRIES: 1, hit_index(0, 0): 1, C_CANARY_BAD: 1})
    assert kinds(judge_window(SINGLE, "x", 1, d, {0: {0}})) == ["stack-corruption"]


def test_the_allowed_set_is_every_value_the_slot_held_during_the_window():
    logs = GenLogs([(0, 0)], capacity=16)
    log = logs[(0, 0)]
    log.record(0)
    t0 = time.monotonic_ns()
    log.record(1)
    log.record(EMPTY)
    t1 = time.monotonic_ns()
    log.record(2)
    assert log.allowed(t0, t1, 4) == {0, 1, EMPTY}
    now = time.monotonic_ns()
    assert log.allowed(now, now, 4) == {2}
    logs.close()


def test_an_update_still_in_its_syscall_is_already_allowed():
    logs = GenLogs([(0, 0)], capacity=16)
    log = logs[(0, 0)]
    log.record(0)
    log.begin(1)  # the kernel may already see it
    now = time.monotonic_ns()
    assert log.allowed(now, now, 4) == {0, 1}
    logs.close()


def test_a_window_older_than_the_ring_is_not_judged():
    logs = GenLogs([(0, 0)], capacity=4)
    log = logs[(0, 0)]
    t0 = time.monotonic_ns()
    log.record(0)
    t1 = time.monotonic_ns()
    for v in (1, 2, 1, 2, 1, 2):
        log.record(v)
    assert log.allowed(t0, t1, 4) is None
    logs.close()


def test_writers_cycle_every_target_through_install_replace_and_delete():
    cycle = op_cycle(("install", "replace", "delete"))
    assert {op for op, _ in cycle} == {"install", "replace", "delete"}
    assert {k for _, k in cycle if k != EMPTY} == {0, 1, 2}
    assert [op for op, _ in op_cycle(("replace",))] == ["replace"] * 3
    assert slot_universe(1) == {3, 4, 5, EMPTY}


def test_a_writer_keeps_each_delete_with_the_install_after_it():
    """A slot is empty only for its own delete: the sweep over slots never
    deletes them all before installing any (see delete_segments)."""
    from farm.stress.engine import delete_segments
    for ops in (("install", "replace", "delete"), ("install", "delete"), {"replace": 8, "delete": 1}, ("replace",)):
        cycle = op_cycle(ops)
        segments = delete_segments(cycle)
        assert sorted(i for seg in segments for i in seg) == list(range(len(cycle)))
        for seg in segments:
            ops_in = [cycle[i][0] for i in seg]
            # deletes lead, one non-delete (the install that refills) closes
            assert ops_in[-1] != "delete" and all(op == "delete" for op in ops_in[:-1]), ops_in
        assert any(cycle[seg[0]][0] == "delete" for seg in segments) == ("delete" in str(ops))
