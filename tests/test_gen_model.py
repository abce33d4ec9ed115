"""The reference model of generated shapes, on hand-built graphs whose
counts follow on paper, and the generator's determinism. No kernel here:
tests/test_gen_kernel.py compares model and kernel."""
from __future__ import annotations

from dataclasses import replace

import pytest

from farm.gen import emit
from farm.gen.judge import judge_churned, judge_exact
from farm.gen.model import (EMPTY, G_CANARY, TCC_LIMIT, U32, layout, reachable, run_entry)
from farm.gen.shape import Call, Func, Hook, Shape, Site, Slot, Tail, generate, traced_programs


def shape(programs, subs=(), slots=(), sites=(), arrays=(4,)) -> Shape:
    return Shape(1, len(programs), tuple(programs), tuple(subs), arrays, tuple(slots), tuple(sites))


def entry(body, ret=1, frame=0):
    return Func("e0", "entry", ret, frame, tuple(body))


def target(i, body=(), ret=None):
    return Func(f"p{i}", "target", ret if ret is not None else 100 + i, 0, tuple(body))


def runs(s: Shape, out, name: str) -> int:
    return out.counters[layout(s).run(next(i for i, p in enumerate(s.programs) if p.name == name))]


def test_a_self_loop_stops_at_the_limit():
    # e0 -> slot 0 (p1); p1 -> slot 0 again: p1 runs 33 times, its 33rd attempt is refused
    s = shape([entry([Tail(0)]), target(1, [Tail(1)])], slots=[Slot(0, 0, (1,))],
              sites=[Site(0, True), Site(0, False)])
    out = run_entry(s, 0, {0: 0})
    lay = layout(s)
    assert out.tail_calls == TCC_LIMIT == 33
    assert runs(s, out, "p1") == 33
    assert out.counters[lay.attempt(1)] == 33 and out.counters[lay.fall(1)] == 1
    assert out.counters[lay.fall(0)] == 0
    assert out.retval == 101  # the last p1 fell through; every tail call returns its target's value


def test_a_two_program_cycle_alternates_to_the_limit():
    s = shape([entry([Tail(0)]), target(1, [Tail(1)]), target(2, [Tail(2)])],
              slots=[Slot(0, 0, (1,)), Slot(0, 1, (2,))],
              sites=[Site(0, True), Site(1, True), Site(0, True)])
    out = run_entry(s, 0, {0: 0, 1: 0})
    assert out.tail_calls == 33
    assert (runs(s, out, "p1"), runs(s, out, "p2")) == (17, 16)


def test_a_hierarchy_shares_one_counter():
    # tailcall_bpf2bpf_hierarchy_1: entry calls a tail-calling subprog twice, and so
    # does every target: 33 tail calls and 34 program runs in all, not 33 per call
    sub = Func("s0", "sub", 7, 0, (Tail(0),), level=1)
    s = shape([entry([Call(0), Call(0)]), target(1, [Call(0), Call(0)])], subs=[sub],
              slots=[Slot(0, 0, (1,))], sites=[Site(0, True)])
    out = run_entry(s, 0, {0: 0})
    lay = layout(s)
    assert out.tail_calls == 33
    assert runs(s, out, "e0") + runs(s, out, "p1") == 34
    assert out.counters[lay.call(0)] == 2 * 34  # every program run calls it twice
    assert out.counters[lay.attempt(0)] - out.counters[lay.fall(0)] == 33


def test_an_empty_slot_falls_through_and_costs_nothing():
    # p1 first tries an empty slot, then loops on slot 0: the empty attempts
    # do not count (upstream), so p1 still runs 33 times
    s = shape([entry([Tail(0)]), target(1, [Tail(1), Tail(0)])],
              slots=[Slot(0, 0, (1,)), Slot(0, 1, (1,))], sites=[Site(0, True), Site(1, False)])
    out = run_entry(s, 0, {0: 0, 1: EMPTY})
    lay = layout(s)
    assert out.tail_calls == 33 and runs(s, out, "p1") == 33
    assert out.counters[lay.attempt(1)] == out.counters[lay.fall(1)] == 33


def test_return_values_follow_tail_calls_out_of_subprograms():
    # e0 (5) calls s0, whose tail call lands in p1 (11): s0's value is p1's
    sub = Func("s0", "sub", 7, 0, (Tail(0),), level=1)
    s = shape([entry([Call(0)], ret=5), target(1, ret=11)], subs=[sub],
              slots=[Slot(0, 0, (1,))], sites=[Site(0, True)])
    assert run_entry(s, 0, {0: 0}).retval == 5 * 3 + 11
    assert run_entry(s, 0, {0: EMPTY}).retval == 5 * 3 + 7  # fell through: s0 returns its own
    big = replace(s, programs=(entry([Call(0)] * 4, ret=U32),) + s.programs[1:])
    assert 0 <= run_entry(big, 0, {0: 0}).retval <= U32  # u32 arithmetic, as the C


def test_reachable_under_churn_follows_every_allowed_value():
    s = shape([entry([Tail(0)]), target(1), target(2, [Tail(1)]), target(3)],
              slots=[Slot(0, 0, (1, 2)), Slot(0, 1, (3,))], sites=[Site(0, True), Site(1, True)])
    assert reachable(s, 0, {0: {0}, 1: {0}})[0] == {0, 1}
    assert reachable(s, 0, {0: {0, 1}, 1: {0}})[0] == {0, 1, 2, 3}
    assert reachable(s, 0, {0: {1}, 1: {EMPTY}})[0] == {0, 2}


def _loop() -> Shape:
    return shape([entry([Tail(0)]), target(1, [Tail(1)]), target(2)], slots=[Slot(0, 0, (1, 2))],
                 sites=[Site(0, True), Site(0, True)])


def test_judge_exact_names_what_differs():
    s = _loop()
    want = run_entry(s, 0, {0: 0})
    assert judge_exact(s, 0, {0: 0}, 10, [c * 10 for c in want.counters], want.retval) == []
    lay = layout(s)
    more = [c * 10 for c in want.counters]
    more[lay.run(1)] += 10      # one more tail call per run: a kernel that allows 34
    more[lay.attempt(1)] += 10
    [p] = judge_exact(s, 0, {0: 0}, 10, more, want.retval)
    assert p.kind == "tail-call-count" and p.detail["seed"] == 1 and p.detail["observed"] == 34
    bad = [c * 10 for c in want.counters]
    bad[G_CANARY] = 3
    assert [p.kind for p in judge_exact(s, 0, {0: 0}, 10, bad)] == ["stack-corruption"]
    assert [p.kind for p in judge_exact(s, 0, {0: 0}, 10, [c * 10 for c in want.counters], 5)] == ["wrong-return"]


def test_judge_churned_catches_a_program_no_slot_held():
    s = _loop()
    lay = layout(s)
    delta = [0] * lay.size
    delta[lay.run(0)] = 4
    delta[lay.attempt(0)] = 4
    delta[lay.run(2)] = 4       # p2 is a candidate, but the slot only ever held p1
    assert [p.kind for p in judge_churned(s, 0, {0: {0}}, delta)] == ["wrong-target"]
    assert judge_churned(s, 0, {0: {0, 1}}, delta) == []
    delta[lay.run(2)] = 3       # a taken tail call that started no program of the shape
    assert [p.detail["observed_target"] for p in judge_churned(s, 0, {0: {0, 1}}, delta)] == ["outside the shape"]


@pytest.mark.parametrize("seed", [0, 7, 123456789])
def test_a_seed_makes_the_same_shape_and_source_every_time(seed):
    assert generate(seed) == generate(seed)
    assert emit.source(generate(seed, 20)) == emit.source(generate(seed, 20))
    assert generate(seed) != generate(seed + 1)


def test_generated_shapes_mix_what_the_issue_asks_for():
    shapes = [generate(seed) for seed in range(100)]
    assert all(1 <= len(s.entries) <= 3 for s in shapes)
    assert any(len(s.arrays) > 1 for s in shapes)
    assert any(not site.direct for s in shapes for site in s.sites)
    assert any(site.direct for s in shapes for site in s.sites)
    assert any(f.frame % 2 for s in shapes for f in s.subs)  # odd frame sizes in subprograms
    # a subprogram called from more than one caller, and more than once by one
    callers = [[f.name for f in (*s.programs, *s.subs) if Call(i) in f.body] for s in shapes
               for i in range(len(s.subs))]
    assert any(len(set(c)) > 1 for c in callers)
    assert any(f.body.count(a) > 1 for s in shapes for f in s.programs for a in f.body if isinstance(a, Call))
    # tail calls from subprograms (hierarchies) and runs that reach the limit
    assert any(isinstance(a, Tail) for s in shapes for f in s.subs for a in f.body)
    assert any(run_entry(s, e, {i: 0 for i in range(len(s.slots))}).tail_calls == TCC_LIMIT
               for s in shapes[:10] for e in s.entries)


def test_programs_out_of_range_is_refused():
    with pytest.raises(ValueError, match="4..48"):
        generate(1, 3)


def test_hooks_count_what_they_trace_and_keep_the_seeds_programs():
    plain, hooked = generate(11), generate(11, hooks=True)
    assert hooked.programs == plain.programs and hooked.slots == plain.slots and hooked.hooks
    sub = Func("s0", "sub", 7, 0, (Tail(0),), level=1)
    s = replace(shape([entry([Call(0), Call(0)]), target(1, [Call(0)])], subs=[sub],
                      slots=[Slot(0, 0, (1,))], sites=[Site(0, True)]),
                hooks=(Hook("fexit", "s0"), Hook("fentry", "e0"), Hook("fentry", "p1")))
    lay = layout(s)
    out = run_entry(s, 0, {0: 0})
    calls = out.counters[lay.call(0)]
    assert [out.counters[lay.hook(h)] for h in range(3)] == [calls, 1, 0]
    assert traced_programs(s, s.hooks[0]) == ["e0", "p1"]  # every program holding a copy of s0
    delta = [c * 5 for c in out.counters]
    assert judge_churned(s, 0, {0: {0}}, delta) == []
    delta[lay.hook(2)] = 1  # an fentry on a tail-call target ran: a tail call went through its trampoline
    [p] = judge_churned(s, 0, {0: {0}}, delta)
    assert (p.kind, p.detail["hook"]) == ("trampoline-count", "p1")
