"""farm bisect: the search with a scripted oracle (pure, fast), the packages
between two ends, the answer and its exit codes with a faked lab, and one
real bisection over Debian's packaged kernels in guests."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from farm.bisect.search import MAX_RUNS, StepResult, bisect, detect_chance, runs_needed
from support import REPO, farm_cmd

SIG = "tail-call-count in hierarchy"
PKGS = [f"k{i}" for i in range(8)]  # older first


class Oracle:
    """Scripted lab: package -> a function (call number) -> one run's (verdict, signatures)."""

    def __init__(self, script: dict):
        self.script = script
        self.calls: list[tuple[str, int]] = []
        self.n: dict[str, int] = {}

    def __call__(self, package: str, runs: int) -> StepResult:
        self.calls.append((package, runs))
        res = StepResult([], [], [], [])
        for _ in range(runs):
            i = self.n.get(package, 0)
            self.n[package] = i + 1
            verdict, sigs = self.script[package](i)
            res.verdicts.append(verdict)
            res.signatures.append(list(sigs))
            if verdict == "error":
                res.errors.append("guest not set up")
        return res


def bad(_i):
    return ("fail", [SIG])


def good(_i):
    return ("pass", [])


def every(n):
    """Fails with the target in run 0, n, 2n, ..."""
    return lambda i: ("fail", [SIG]) if i % n == 0 else ("pass", [])


def introduced_at(first_bad: int, **over):
    return {p: over.get(p, bad if i >= first_bad else good) for i, p in enumerate(PKGS)}


def test_introduced_finds_the_first_bad_package_in_few_steps():
    o = Oracle(introduced_at(5))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    assert b.direction == "introduced"
    assert b.boundary == ("k4", "k5") and b.culprit == "k5"
    assert b.signature == SIG and b.rate == 1.0 and b.repeat == 2
    assert b.confidence == 1.0
    assert o.calls[:2] == [("k7", 2), ("k0", 2)]  # the bad end first, both ends in one batch
    assert len(o.calls) == 2 + 3  # log2(6 between) rounded up
    assert {s.package: s.classification for s in b.steps} == {"k7": "bad", "k0": "good", "k3": "good",
                                                              "k5": "bad", "k4": "good"}


def test_fixed_when_the_good_end_is_the_newer():
    script = {p: (bad if i < 3 else good) for i, p in enumerate(PKGS)}  # k3 fixed it
    b = bisect(PKGS, "k7", "k0", Oracle(script), repeat=2)
    assert b.direction == "fixed"
    assert b.boundary == ("k2", "k3")  # older first: the last bad, then the fix
    assert b.culprit == "k3"


def test_a_flaky_failure_sets_the_repetition_count_and_a_lone_hit_is_no_bad_step():
    """The bad end fails in a third of its runs: 8 runs a step (0.67^8 < 0.05).
    A step with one hit where a bad one would show about 2.7 is still bad (one
    expected hit is enough below 4); with a rate of a half and 10 runs a lone
    hit is inconclusive."""
    assert runs_needed(1 / 3, 3) == 8
    assert runs_needed(1.0, 3) == 3
    assert runs_needed(0.5, 3) == 5
    assert runs_needed(0.01, 3) == MAX_RUNS
    o = Oracle(introduced_at(4, **{p: every(3) for p in ("k4", "k5", "k6", "k7")}))
    b = bisect(PKGS, "k0", "k7", o, repeat=6)
    assert b.rate == pytest.approx(2 / 6, abs=1e-3) and b.repeat == 8
    assert b.boundary == ("k3", "k4")
    assert all(s.runs == 8 for s in b.steps if s.package not in ("k7",))  # the good end topped up to 8
    assert ("k0", 2) in o.calls  # ... by 2 more runs
    # confidence: every good step would have shown a 1/3 failure in 8 runs with 1 - (2/3)^8
    goods = [s for s in b.steps if s.classification == "good"]
    assert b.confidence == pytest.approx(detect_chance(1 / 3, 8) ** len(goods), abs=1e-4)
    assert 0.5 < b.confidence < 0.97


def test_a_lone_hit_where_several_are_expected_is_skipped_never_bad():
    # rate 1/2, 10 runs a step: 5 hits expected; k3 shows the target once -> skip, go around it
    lone = lambda i: ("fail", [SIG]) if i == 4 else ("pass", [])  # noqa: E731
    o = Oracle(introduced_at(5, **{p: every(2) for p in ("k5", "k6", "k7")}, k3=lone))
    b = bisect(PKGS, "k0", "k7", o, repeat=10)
    k3 = next(s for s in b.steps if s.package == "k3")
    assert k3.classification == "skip" and k3.reason.startswith("inconclusive:")
    assert b.boundary == ("k4", "k5")


def test_the_bad_end_reproducing_once_in_many_runs_is_recalibrated_then_refused():
    once = lambda i: ("fail", [SIG]) if i == 1 else ("pass", [])  # noqa: E731
    o = Oracle(introduced_at(5, k7=once))
    b = bisect(PKGS, "k0", "k7", o, repeat=4)
    assert b.boundary is None and b.confidence is None
    assert "does not reproduce" in b.refused and "1 of 8 runs" in b.refused
    assert "one failure in many runs is not bad" in b.refused
    assert o.calls == [("k7", 4), ("k0", 4), ("k7", 4)]  # calibrated again, then nothing more


def test_a_bad_end_that_passes_is_refused():
    o = Oracle({p: good for p in PKGS})
    b = bisect(PKGS, "k0", "k7", o, repeat=3)
    assert b.boundary is None
    assert b.refused == "the bad end k7 does not reproduce: no failure in 3 runs"
    assert len(o.calls) == 2


def test_a_good_end_that_fails_too_is_refused():
    o = Oracle({p: bad for p in PKGS})
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    assert b.boundary is None and b.refused.startswith("the good end k0 fails too")
    assert [s.classification for s in b.steps] == ["bad", "bad"]


def test_a_good_end_with_an_infra_error_cannot_be_judged():
    o = Oracle(introduced_at(4, k0=lambda i: ("error", []) if i == 0 else ("pass", [])))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    assert b.boundary is None and b.refused.startswith("the good end k0 cannot be judged: infrastructure error")


def test_a_different_failure_or_an_infra_error_is_skipped_and_gone_around():
    other = lambda i: ("fail", ["wrong-target in chain"])  # noqa: E731
    infra = lambda i: ("error", [])  # noqa: E731
    o = Oracle(introduced_at(5, k3=other, k4=infra))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    by = {s.package: s for s in b.steps}
    assert by["k3"].classification == "skip" and by["k3"].reason == "a different failure: wrong-target in chain"
    assert by["k4"].classification == "skip" and by["k4"].reason.startswith("infrastructure error in 2 of 2 runs")
    # k3 (the midpoint) skipped: its neighbour k4 is tried, skipped too; then k2, k5, ...
    assert b.boundary is None or b.boundary == ("k4", "k5")
    assert b.boundary is None  # k4 is the last good and cannot be judged
    assert "every package between k2 and k5 was skipped (k3, k4)" in b.refused


def test_a_lost_guest_is_an_infrastructure_error_never_a_different_failure():
    lost = lambda i: ("fail", ["kernel-oops: general protection fault in foo", "host-lost"])  # noqa: E731
    o = Oracle(introduced_at(6, k3=lost))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    k3 = next(s for s in b.steps if s.package == "k3")
    assert k3.classification == "skip" and k3.reason.startswith("infrastructure error in 2 of 2 runs")
    assert b.boundary == ("k5", "k6")


def test_skipping_goes_around_to_a_neighbour_and_still_names_the_boundary():
    o = Oracle(introduced_at(6, k3=lambda i: ("fail", ["kernel-warning: x"])))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    assert b.boundary == ("k5", "k6")
    assert [s.package for s in b.steps][:3] == ["k7", "k0", "k3"]
    assert b.steps[3].package == "k4"  # the midpoint's nearest untried neighbour (lower on a tie)


def test_a_failure_of_the_target_alongside_another_is_still_bad_and_host_lost_is_never_a_target():
    both = lambda i: ("fail", ["host-lost", SIG, "kernel-warning: y"])  # noqa: E731
    o = Oracle(introduced_at(2, **{p: both for p in PKGS[2:]}))
    b = bisect(PKGS, "k0", "k7", o, repeat=2)
    assert b.signature == SIG
    assert b.boundary == ("k1", "k2")


def test_the_good_and_bad_ends_must_be_two_packages_of_the_list():
    with pytest.raises(ValueError):
        bisect(PKGS, "k1", "k1", Oracle({}), 2)
    with pytest.raises(ValueError):
        bisect(PKGS, "k1", "nope", Oracle({}), 2)


# -- the packages between the ends ----------------------------------------------------------


def kp(name, version, cached=False):
    from farm.guests.kernels import IMAGE_PACKAGE, KernelPackage, upstream_of
    m = IMAGE_PACKAGE.fullmatch(name)
    return KernelPackage(name, m["abi"], m["flavour"], not m["unsigned"], version, upstream_of(version), cached, None)


ARCHIVE = [kp("linux-image-6.12.107+deb12-amd64-unsigned", "6.12.107-1~deb12u1"),
           kp("linux-image-6.1.0-57-amd64-unsigned", "6.1.192-3"),
           kp("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2"),
           kp("linux-image-6.1.0-47-amd64-unsigned", "6.1.170-3"),
           kp("linux-image-6.1.0-9-amd64-unsigned", "6.1.27-1"),
           kp("linux-image-6.12.100+deb12-amd64", "6.12.100-1~deb12u1"),
           kp("linux-image-6.1.0-57-cloud-amd64-unsigned", "6.1.192-3"),
           kp("linux-image-6.12.111+deb12-amd64-unsigned", "6.12.111-1~deb12u1")]


def test_the_packages_between_are_one_flavour_and_signedness_in_debian_version_order():
    """dpkg's order: 6.1.27 before 6.1.170 (no string order), -2 before -3,
    6.1 before 6.12; signed and cloud packages left out."""
    from farm.bisect.kernels import packages_between
    got = packages_between("linux-image-6.1.0-9-amd64-unsigned", "linux-image-6.12.111+deb12-amd64-unsigned",
                           ARCHIVE)
    assert [k.package for k in got] == [
        "linux-image-6.1.0-9-amd64-unsigned", "linux-image-6.1.0-47-amd64-unsigned",
        "linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-57-amd64-unsigned",
        "linux-image-6.12.107+deb12-amd64-unsigned", "linux-image-6.12.111+deb12-amd64-unsigned"]
    # the newer end given as good: the same range, still older first
    back = packages_between("linux-image-6.12.107+deb12-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned",
                            ARCHIVE)
    assert [k.upstream for k in back] == ["6.1.192", "6.1.192", "6.12.107"]


@pytest.mark.parametrize("good, bad, says", [
    ("linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.1.0-57-amd64-unsigned", "the same package"),
    ("linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.12.100+deb12-amd64", "one flavour"),
    ("linux-image-6.1.0-57-cloud-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned", "one flavour"),
    ("linux-image-6.1.0-99-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned", "no kernel image package"),
])
def test_bad_ends_are_bad_input(good, bad, says):
    from farm.bisect.kernels import packages_between
    from farm.errors import BadInput
    with pytest.raises(BadInput, match=says):
        packages_between(good, bad, ARCHIVE)


def test_dpkg_compares_debian_versions():
    from farm.bisect.kernels import compare_versions
    assert compare_versions("6.1.27-1", "6.1.170-3") == -1
    assert compare_versions("6.12.107-1~deb12u1", "6.12.107-1") == -1
    assert compare_versions("6.1.192-3", "6.1.192-2") == 1
    assert compare_versions("1:6.1-1", "1:6.1-1") == 0


@pytest.mark.parametrize("args, says", [
    (["--good", "linux-image-6.1.0-57-amd64", "--bad", "deb:linux-image-6.1.0-56-amd64"], "--good: "),
    (["--good", "deb:linux-image-6.1.0-57-amd64", "--bad", "deb:linux-image-6.1.0-57-amd64"], "the same package"),
    (["--good", "deb:linux-image-6.1.0-57-amd64", "--bad", "deb:linux-image-6.1.0-56-amd64", "--repeat", "0"],
     "--repeat: 0"),
])
def test_bad_bisect_input_is_one_line_and_exit_2(tmp_path, args, says):
    j = tmp_path / "j.yaml"
    j.write_text("duration: 1s\ntopologies: [hierarchy]\n")
    p = subprocess.run(farm_cmd("bisect", str(j), *args), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and says in p.stderr


# -- the answer, with a faked lab -----------------------------------------------------------


class FakeSteps:
    def __init__(self, oracle):
        self.oracle, self.boots = oracle, []

    def run_step(self, p, n):
        return self.oracle(p, n)

    def run_many(self, reqs):
        return [self.oracle(p, n) for p, n in reqs]


def _request(tmp_path, good, bad, **kw):
    from farm.bisect.run import BisectRequest
    j = tmp_path / "hier.yaml"
    j.write_text("duration: 1s\ntopologies: [hierarchy]\n")
    return BisectRequest(j, f"deb:{good}", f"deb:{bad}", ["EPYC-Milan"], "default", 2, tmp_path / "b.json", **kw)


def test_a_refused_bisection_exits_3_says_why_and_asks_for_no_suspects(tmp_path, monkeypatch):
    """No boundary: no changelog call (the suspects stay None), exit 3, the
    JSON and the stored row say why."""
    from farm.bisect import changelog
    from farm.bisect.run import run_bisect
    from farm.store import open_store
    monkeypatch.setenv("FARM_DB_URL", f"sqlite:///{tmp_path / 'f.db'}")
    chain = [k.package for k in ARCHIVE if k.package.endswith("-amd64-unsigned") and "cloud" not in k.package]
    oracle = Oracle({p: good for p in chain})
    monkeypatch.setattr(changelog, "suspects_between", lambda *a: pytest.fail("no boundary, no suspects"))
    lines = []
    code, a = run_bisect(_request(tmp_path, "linux-image-6.1.0-47-amd64-unsigned",
                                  "linux-image-6.1.0-57-amd64-unsigned", store=True),
                         say=lines.append, progress=lambda _: None, steps_factory=lambda: FakeSteps(oracle),
                         available=ARCHIVE)
    assert code == 3 and a["boundary"] is None and a["suspects"] is None
    assert "does not reproduce" in a["refused"]
    assert any(line.startswith("no boundary: the bad end") for line in lines)
    assert json.loads((tmp_path / "b.json").read_text())["refused"] == a["refused"]
    [row] = open_store().bisections()
    assert row["status"] == "refused" and row["boundary_newer"] is None


def test_a_named_boundary_exits_0_with_upstream_versions_and_the_changelogs_answer(tmp_path, monkeypatch):
    """The answer calls the changelog interface with the boundary, older
    first (faked here: the real one is another module's)."""
    from farm.bisect import changelog
    from farm.bisect.run import run_bisect
    older, newer = "linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.12.107+deb12-amd64-unsigned"
    chain = ["linux-image-6.1.0-47-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned", older, newer,
             "linux-image-6.12.111+deb12-amd64-unsigned"]
    asked = []
    entry = {"text": "bpf, x86: fix tail call count", "version": "6.12.107-1", "upstream": "6.12.107",
             "score": 9, "why": "tail call"}
    monkeypatch.setattr(changelog, "suspects_between",
                        lambda a, b: asked.append((a, b)) or {"ranked": [entry], "all": [entry]})
    monkeypatch.setattr(changelog, "config_diff", lambda a, b: {"CONFIG_X": {"older": None, "newer": "y"}})
    oracle = Oracle({p: (bad if i < 3 else good) for i, p in enumerate(chain)})
    lines = []
    code, a = run_bisect(_request(tmp_path, chain[-1], chain[0], store=False), say=lines.append,
                         progress=lambda _: None, steps_factory=lambda: FakeSteps(oracle), available=ARCHIVE)
    assert code == 0 and asked == [(older, newer)]
    assert a["direction"] == "fixed"
    assert a["boundary"] == [{"package": older, "upstream": "6.1.192", "version": "6.1.192-3"},
                             {"package": newer, "upstream": "6.12.107", "version": "6.12.107-1~deb12u1"}]
    assert all({"package", "upstream", "runs", "verdicts", "signatures"} <= set(s) for s in a["steps"])
    assert a["confidence"] == 1.0 and a["suspects"]["ranked"] == [entry]
    assert a["config_diff"] == {"CONFIG_X": {"older": None, "newer": "y"}}
    assert f"fixed in {newer} (6.12.107)" in lines
    assert any("bpf, x86: fix tail call count" in line for line in lines)


# -- one real bisection over Debian's packaged kernels --------------------------------------


def _changelog_text(package: str) -> str:
    from farm.guests.kcache import kernels_dir
    [cl] = (kernels_dir() / package / "x").glob("usr/share/doc/*/changelog.Debian.gz")
    return gzip.open(cl, "rt", errors="replace").read()


@pytest.mark.qemu
@pytest.mark.slow
def test_a_real_bisection_finds_where_debian_fixed_the_hierarchy_overrun(tmp_path):
    """Debian's 6.1.0-57 runs 63 tail calls in the hierarchy topology
    (tail-call-count in hierarchy); 6.12.107, the next amd64-unsigned
    package, passes. Two guests, one per package, booted side by side, two
    runs each: the answer is "fixed" at 6.12.107, and every suspect is a
    line of 6.12.107's own changelog."""
    older, newer = "linux-image-6.1.0-57-amd64-unsigned", "linux-image-6.12.107+deb12-amd64-unsigned"
    job = tmp_path / "hier.yaml"
    job.write_text("duration: 1s\ntopologies: [hierarchy]\n")
    out = tmp_path / "bisect.json"
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path / 'farm.db'}"}
    p = subprocess.run(farm_cmd("bisect", str(job), "--bad", f"deb:{older}", "--good", f"deb:{newer}",
                                "--cpu-model", "EPYC-Milan", "--repeat", "2", "--json", str(out),
                                "--artifacts", str(tmp_path / "art")),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    a = json.loads(out.read_text())
    assert a["direction"] == "fixed"
    assert [(b["package"], b["upstream"]) for b in a["boundary"]] == [(older, "6.1.192"), (newer, "6.12.107")]
    assert a["signature"] == SIG and a["rate"] == 1.0
    assert [(s["package"], s["classification"], s["runs"]) for s in a["steps"]] == [(older, "bad", 2),
                                                                                    (newer, "good", 2)]
    assert a["steps"][0]["signatures"] == [[SIG], [SIG]] and a["steps"][1]["verdicts"] == ["pass", "pass"]
    assert a["confidence"] == 1.0
    assert len(a["guests"]) == 2  # one guest per package, no more
    # the suspects come from the real changelog of the newer package
    text = " ".join(_changelog_text(newer).split())  # an entry may wrap over lines there
    assert a["suspects"]["all"], "no changelog entries between the two packages"
    for e in a["suspects"]["all"] + a["suspects"]["ranked"]:
        assert " ".join(e["text"].split()) in text, e
    assert {"score", "why"} <= set(a["suspects"]["ranked"][0]) if a["suspects"]["ranked"] else True
    assert f"fixed in {newer} (6.12.107)" in p.stdout
    # stored, and triage says so
    t = subprocess.run(farm_cmd("triage", "--signature", SIG), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert f"fixed in {newer} (6.12.107)" in t.stdout, t.stdout + t.stderr
