"""The bisection itself, as pure logic: no guests, no files, no clock.

Given the packages in order (older first), which of them is the good end
and which the bad end, and a step oracle run_step(package, runs) ->
StepResult, find the two adjacent packages where the verdict changes.

The rules, in the order they apply:

1. Calibrate on the bad end first: run it `repeat` times (and the good end
   as many times, in the same batch, so both ends can boot at once). The
   target signature is the bad end's failure signature (the one most of its
   runs show, or the one given); its rate p is the share of the bad end's
   runs that show it.

2. One failure in many runs is not "bad" (syzbot's lesson: bisecting a crash
   that a kernel shows once in ten runs, or that another bug can mimic,
   blames the wrong commit). The bad end must show the target in at least
   two runs (or in its only run); with exactly one hit in several runs its
   calibration is run once more, and if it still has one hit the bisection
   is refused: the failure reproduces too rarely to tell good from bad.
   The same holds for every step: when a truly bad step would be expected
   to show the target several times (p x runs >= 4), a single hit is
   inconclusive (`skip`), never `bad`.

3. The repetition count k of every later step comes from p: the smallest k
   (at least `repeat`, at most `max_runs`) with (1 - p)^k <= alpha, i.e. a
   bad step at the calibrated rate shows the target at least once with
   probability 1 - alpha (95% by default). A failure seen in every run (p =
   1) needs no more than `repeat`; one seen in a third of the runs needs 8.
   A step shorter than k (the good end, run before k was known) is topped
   up to k.

4. A step is `bad` only with the target signature. A different failure or
   an infrastructure error (a run whose verdict is error, a guest that was
   lost or not set up) makes it `skip`: the search goes around it and tries
   the nearest untried neighbour of the midpoint, as git bisect skip does.
   A step is `good` when every one of its runs passed.

5. No boundary is named when the bad end does not reproduce, when the good
   end shows the target too (or cannot be judged), or when every package
   between the last good and the first bad step had to be skipped (then the
   range is said instead).

6. Confidence: the probability that every step called good really is good,
   judged at the calibrated rate: the product over the good steps on the
   path of 1 - (1 - p)^runs (the chance a bad step would have shown the
   failure at least once in that many runs). Bad steps showed the target
   itself and add no doubt. The rate is the point estimate from the
   calibration runs, so a short calibration of a flaky failure overstates
   it; more --repeat narrows that.

Direction: the good end older than the bad end means the failure was
`introduced` at the boundary's newer package; the good end newer means it
was `fixed` there.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

ALPHA = 0.05  # the chance a bad step at the calibrated rate shows nothing, that we accept
MAX_RUNS = 20  # a step's runs at most, however rare the failure
MIN_HITS = 2  # the bad end must show the target this often (or in its only run)
LONE_HIT_EXPECTED = 4  # a step whose expected hits are this many or more needs two to be bad
INFRA_SIGNATURES = frozenset({"host-lost"})  # never a target: the lab's, not the kernel's


@dataclass
class StepResult:
    """What one package did in the lab: one entry per run, in step with each other."""
    verdicts: list[str]  # pass | fail | error
    signatures: list[list[str]]  # each run's finding signatures
    errors: list[str] = field(default_factory=list)  # infrastructure trouble, run or step (guest not set up)
    run_ids: list[str] = field(default_factory=list)

    def __add__(self, other: "StepResult") -> "StepResult":
        return StepResult(self.verdicts + other.verdicts, self.signatures + other.signatures,
                          self.errors + other.errors, self.run_ids + other.run_ids)


@dataclass
class Step:
    package: str
    runs: int
    verdicts: list[str]
    signatures: list[list[str]]
    classification: str  # good | bad | skip
    reason: str
    hits: int = 0
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"package": self.package, "runs": self.runs, "verdicts": self.verdicts,
                "signatures": self.signatures, "classification": self.classification,
                "reason": self.reason, "hits": self.hits, "errors": self.errors, "run_ids": self.run_ids}


@dataclass
class Bisection:
    direction: str  # introduced | fixed
    good: str
    bad: str
    signature: str | None = None  # the target: the bad end's failure signature
    rate: float | None = None  # how often the bad end showed it
    repeat: int = 0  # runs per later step (k)
    boundary: tuple[str, str] | None = None  # older first
    steps: list[Step] = field(default_factory=list)
    confidence: float | None = None
    refused: str | None = None  # why no boundary was named
    log: list[str] = field(default_factory=list)

    @property
    def culprit(self) -> str | None:
        """The package that introduced (the boundary's newer) or fixed it (also the newer)."""
        return self.boundary[1] if self.boundary else None

    def to_dict(self) -> dict:
        return {"direction": self.direction, "good": self.good, "bad": self.bad, "signature": self.signature,
                "rate": self.rate, "repeat": self.repeat, "boundary": list(self.boundary) if self.boundary else None,
                "steps": [s.to_dict() for s in self.steps], "confidence": self.confidence,
                "refused": self.refused, "log": self.log}


def runs_needed(rate: float, floor: int, alpha: float = ALPHA, cap: int = MAX_RUNS) -> int:
    """The smallest k >= floor (<= cap) with (1 - rate)^k <= alpha."""
    if rate >= 1:
        return max(1, floor)
    if rate <= 0:
        return cap
    k = math.ceil(math.log(alpha) / math.log(1 - rate) - 1e-9)
    return max(floor, min(cap, k))


def detect_chance(rate: float, runs: int) -> float:
    """The chance a step failing at `rate` shows it at least once in `runs`."""
    return 1 - (1 - rate) ** runs


def target_signature(result: StepResult) -> str | None:
    """The signature most of the runs show (first seen on a tie), infrastructure's aside."""
    counts: Counter[str] = Counter()
    for sigs in result.signatures:
        counts.update({s for s in sigs if s not in INFRA_SIGNATURES})
    if not counts:
        return None
    best = max(counts.values())
    return next(s for sigs in result.signatures for s in sigs if counts.get(s) == best)


def hits_of(result: StepResult, signature: str) -> int:
    return sum(1 for sigs in result.signatures if signature in sigs)


def classify(package: str, result: StepResult, signature: str, rate: float) -> Step:
    runs = len(result.verdicts)
    hits = hits_of(result, signature)
    step = Step(package, runs, list(result.verdicts), [list(s) for s in result.signatures], "skip", "",
                hits, list(result.errors), list(result.run_ids))
    expected = rate * runs
    need = 2 if expected >= LONE_HIT_EXPECTED else 1
    if hits >= need:
        step.classification, step.reason = "bad", f"{signature} in {hits} of {runs} runs"
    elif hits:
        step.reason = (f"inconclusive: {signature} in only {hits} of {runs} runs where a bad package "
                       f"would show it about {expected:.1f} times")
    elif runs == 0:
        step.reason = "no run finished: " + ("; ".join(result.errors) or "nothing came back")
    elif "error" in result.verdicts or result.errors or any(INFRA_SIGNATURES & set(s) for s in result.signatures):
        n = sum(1 for v, s in zip(result.verdicts, result.signatures) if v == "error" or INFRA_SIGNATURES & set(s))
        step.reason = (f"infrastructure error in {n} of {runs} runs" if n else "infrastructure error") + \
            (f": {result.errors[0]}" if result.errors else "")
    elif any(v != "pass" for v in result.verdicts):
        other = sorted({s for sigs in result.signatures for s in sigs})
        step.reason = f"a different failure: {', '.join(other) or 'a failing run without findings'}"
    else:
        step.classification, step.reason = "good", f"{runs} runs passed"
    return step


def _neighbours(lo: int, hi: int, tried: set[int]) -> list[int]:
    """The untried indices strictly between lo and hi, nearest the midpoint first (lower first on a tie)."""
    mid = (lo + hi) / 2
    return sorted((i for i in range(lo + 1, hi) if i not in tried), key=lambda i: (abs(i - mid), i))


def bisect(packages: Sequence[str], good: str, bad: str, run_step: Callable[[str, int], StepResult],
           repeat: int = 3, *, signature: str | None = None, alpha: float = ALPHA, max_runs: int = MAX_RUNS,
           run_many: Callable[[list[tuple[str, int]]], list[StepResult]] | None = None,
           say: Callable[[str], None] | None = None) -> Bisection:
    """Bisect `packages` (older first) between good and bad with run_step.
    run_many runs several (package, runs) requests at once (both ends:
    their guests can boot side by side); default: one run_step after another."""
    if good not in packages or bad not in packages or good == bad:
        raise ValueError("good and bad must be two different packages of the list")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    run_many = run_many or (lambda reqs: [run_step(p, n) for p, n in reqs])
    gi, bi = packages.index(good), packages.index(bad)
    out = Bisection("introduced" if gi < bi else "fixed", good, bad)

    def note(line: str) -> None:
        out.log.append(line)
        if say:
            say(line)

    # 1. both ends: the bad end calibrates, the good end is checked
    note(f"calibrating: {repeat} runs of the bad end {bad}, {repeat} of the good end {good}")
    bad_res, good_res = run_many([(bad, repeat), (good, repeat)])
    target = signature or target_signature(bad_res)
    if target is None:
        out.refused = (f"the bad end {bad} does not reproduce: no failure in {len(bad_res.verdicts)} runs"
                       + (f" ({'; '.join(bad_res.errors)})" if bad_res.errors else ""))
        note(out.refused)
        out.steps = [classify(bad, bad_res, "", 0.0), classify(good, good_res, "", 0.0)]
        return out
    out.signature = target
    hits, runs = hits_of(bad_res, target), len(bad_res.verdicts)
    if hits == 1 and runs > 1:
        note(f"the bad end showed {target} once in {runs} runs: calibrating again")
        bad_res = bad_res + run_step(bad, repeat)
        hits, runs = hits_of(bad_res, target), len(bad_res.verdicts)
    if runs:
        out.rate = round(hits / runs, 4)
    if hits == 0 or (hits < MIN_HITS and runs > 1):
        out.refused = (f"the bad end {bad} does not reproduce {target}: {hits} of {runs} runs"
                       + (" (one failure in many runs is not bad)" if hits else ""))
        note(out.refused)
        out.steps = [classify(bad, bad_res, target, hits / runs if runs else 0.0),
                     classify(good, good_res, target, 0.0)]
        return out
    rate = hits / runs
    k = runs_needed(rate, repeat, alpha, max_runs)
    out.repeat = k
    note(f"target {target}: {hits} of {runs} runs of {bad} (rate {rate:.2f}); {k} runs a step")
    bad_step = classify(bad, bad_res, target, rate)
    bad_step.classification, bad_step.reason = "bad", f"the bad end: {target} in {hits} of {runs} runs"
    if len(good_res.verdicts) < k and not hits_of(good_res, target):
        good_res = good_res + run_step(good, k - len(good_res.verdicts))
    good_step = classify(good, good_res, target, rate)
    out.steps = [bad_step, good_step]
    note(f"{good}: {good_step.classification} ({good_step.reason})")
    if good_step.classification != "good":
        out.refused = (f"the good end {good} fails too: {good_step.reason}" if good_step.classification == "bad"
                       else f"the good end {good} cannot be judged: {good_step.reason}")
        note(out.refused)
        return out

    # 2. the search between them
    known_good, known_bad, tried = gi, bi, {gi, bi}
    while abs(known_bad - known_good) > 1:
        lo, hi = sorted((known_good, known_bad))
        candidates = _neighbours(lo, hi, tried)
        if not candidates:
            skipped = [packages[i] for i in range(lo + 1, hi)]
            out.refused = (f"every package between {packages[lo]} and {packages[hi]} was skipped "
                           f"({', '.join(skipped)}): the change is somewhere in that range")
            note(out.refused)
            break
        i = candidates[0]
        tried.add(i)
        step = classify(packages[i], run_step(packages[i], k), target, rate)
        out.steps.append(step)
        note(f"{packages[i]}: {step.classification} ({step.reason})")
        if step.classification == "bad":
            known_bad = i
        elif step.classification == "good":
            known_good = i
    else:
        lo, hi = sorted((known_good, known_bad))
        out.boundary = (packages[lo], packages[hi])
    if out.boundary:
        conf = 1.0
        for s in out.steps:
            if s.classification == "good":
                conf *= detect_chance(rate, s.runs)
        out.confidence = round(conf, 4)
        verb = "introduced" if out.direction == "introduced" else "fixed"
        note(f"{verb} in {out.boundary[1]} (last {'good' if verb == 'introduced' else 'bad'}: "
             f"{out.boundary[0]}); confidence {out.confidence:.4f}")
    return out
