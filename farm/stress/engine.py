"""The stress engine: writer and runner processes pinned to CPUs.

Writers churn prog_array slots (each slot has exactly one writer, which logs
every update in the slot's generation log); runners call BPF_PROG_TEST_RUN
with a large repeat and judge every window with the oracle. The parent only
supervises: progress, deadline, Ctrl-C, and children that die.
"""
from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import queue
import random
import signal
import time
from dataclasses import dataclass, field

from farm.bpf import syscall as sc
from farm.bpf.corpus import EMPTY
from farm.bpf.loader import Stressed
from farm.result import TopologyStats
from farm.spec import JobSpec
from farm.stress.churn import op_cycle
from farm.stress.genlog import GenLogs
from farm.stress.native import FarmStep, churn_lib
from farm.stress.oracle import Problem, ProblemRecord

_ctx = mp.get_context("fork")
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1

# words per child: updates, runs, tail calls verified, problems, windows unjudged, ready
W_UPDATES, W_RUNS, W_VERIFIED, W_PROBLEMS, W_UNJUDGED, W_READY, W_PER_CHILD = 0, 1, 2, 3, 4, 5, 6
READY_TIMEOUT_S = 120.0  # for every child to be forked and set up (a TCG guest is slow)
MAX_PROBLEM_KEYS = 64  # distinct problems a runner reports in detail
# A window aims at this long: the job's repeat is its ceiling. Under TCG a run
# of a trampoline hierarchy takes milliseconds, and 20000 of them in one
# BPF_PROG_TEST_RUN would hold the CPU (and every writer's delete, which
# waits for it) for minutes: past the deadline and the hang check.
WINDOW_TARGET_S = 0.25
FIRST_REPEAT = 256  # each topology's first window, before its pace is known
HANG_GRACE_S = 30.0  # a child still running this long after the deadline is hung


@dataclass
class Progress:
    elapsed: float
    updates: int
    runs: int
    verified: int
    problems: int
    unjudged: int


@dataclass
class StressOutcome:
    started_ns: int
    duration_s: float
    updates: int = 0
    runs: int = 0
    verified: int = 0
    windows: int = 0
    unjudged: int = 0
    problems: list[ProblemRecord] = field(default_factory=list)
    # by topology key (its pin dir's name), summed over runners; every loaded
    # topology has one, even if no runner got a window of it
    per_topology: dict[str, TopologyStats] = field(default_factory=dict)
    child_failures: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    interrupted: bool = False
    # by topology key: the static checks of generated shapes that host_run
    # made before the stress (farm.gen.check.StaticReport)
    static: dict = field(default_factory=dict)


def _child_setup(cpu: int) -> None:
    """Die with the parent, leave Ctrl-C to it, run on exactly one CPU."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.sched_setaffinity(0, {cpu})


class _Shared:
    """Shared words: a stop flag, the start time (0 until every child is
    ready), then W_PER_CHILD words per child."""

    def __init__(self, children: int):
        self._mm = mmap.mmap(-1, 8 * (2 + W_PER_CHILD * children))
        self.q = memoryview(self._mm).cast("q")
        self._anchor = ctypes.c_char.from_buffer(self._mm)

    def address(self, word: int) -> int:
        return ctypes.addressof(self._anchor) + 8 * word

    def stop(self) -> None:
        self.q[0] = 1

    def stopped(self) -> bool:
        return self.q[0] != 0

    def base(self, child: int) -> int:
        return 2 + child * W_PER_CHILD

    def ready_and_wait(self, child: int) -> int:
        """A child says it is set up, then waits for the common start: the
        duration is stress time, not fork and set-up time. Returns the start
        (monotonic ns), or 0 when the run was stopped first."""
        self.q[self.base(child) + W_READY] = 1
        while not self.q[1] and not self.stopped():
            time.sleep(0.0005)
        return self.q[1]

    def all_ready(self, children: int) -> bool:
        return all(self.q[self.base(c) + W_READY] for c in range(children))

    def go(self) -> int:
        start = time.monotonic_ns()
        self.q[1] = start
        return start

    def total(self, word: int, children: int) -> int:
        return sum(self.q[self.base(c) + word] for c in range(children))


def delete_segments(cycle: list[tuple[str, int]]) -> list[list[int]]:
    """The cycle's step indices cut into segments, each ending with its first
    non-delete op: a delete stays with the install after it. Deleting a
    direct slot waits out an RCU grace period, which ends only when the
    runner's current window does; a round-robin sweep of every slot's delete
    before any install would keep the first slots empty for most of a cycle,
    in step with the runner's windows, and starve their topologies of
    verified tail calls. Kept together, a slot is empty for its own delete only."""
    segments, cur = [], []
    for i, (op, _) in enumerate(cycle):
        cur.append(i)
        if op != "delete":
            segments.append(cur)
            cur = []
    return segments + ([cur] if cur else [])


class SlotWriter:
    """Drives its slots through their op cycle, logging every update. The
    loop itself is C (churn_loop.c): one bpf() per update and nothing else."""

    def __init__(self, owned: list[tuple[int, int]], loaded: list[Stressed],
                 logs: GenLogs, ops: tuple[str, ...]):
        cycle = op_cycle(ops)
        per_slot = []
        self._arrays = []  # the steps point into these: keep them alive
        for ti, slot in owned:
            pa, key = loaded[ti].slot_array(slot)
            self._arrays.append(pa)
            targets = loaded[ti].targets(slot)
            log = logs[(ti, slot)]
            steps = []
            for op, k in cycle:
                if op == "delete":
                    attr, cmd, value = pa.delete_attr(key), sc.BPF_MAP_DELETE_ELEM, EMPTY
                else:
                    value, fd = targets[k]
                    attr, cmd = pa.update_attr(key, fd), sc.BPF_MAP_UPDATE_ELEM
                steps.append(FarmStep(log.head_addr, log.base_addr, log.cap, value,
                                      ctypes.addressof(attr), cmd, ctypes.sizeof(attr)))
            per_slot.append(steps)
        # Round-robin over slots, so one map's slots change in turn, a delete
        # kept with the install after it (see delete_segments).
        order = [steps[i] for seg in delete_segments(cycle) for steps in per_slot for i in seg]
        self.steps = (FarmStep * len(order))(*order)
        self.updates = 0

    def run(self, deadline_ns: int, rate: float = 0, stop_addr: int | None = None,
            progress_addr: int | None = None) -> int:
        """Churn until the deadline or a non-zero word at stop_addr; rate in
        updates/s (0: full speed). Progress is stored at progress_addr."""
        if not len(self.steps):
            return 0
        own = (ctypes.c_int64 * 2)()
        err, err_step = ctypes.c_int(0), ctypes.c_long(0)
        n = churn_lib().farm_churn(self.steps, len(self.steps), deadline_ns,
                                   int(1e9 / rate) if rate else 0,
                                   stop_addr or ctypes.addressof(own),
                                   progress_addr or ctypes.addressof(own) + 8,
                                   ctypes.byref(err), ctypes.byref(err_step))
        if n < 0:
            step = self.steps[err_step.value]
            raise sc.BpfError(step.cmd, err.value, "prog_array slot")
        self.updates = n
        return n


class WindowRunner:
    """Runs every entry of every topology in turn on one CPU, one window
    each, and judges every window with the topology's judge."""

    def __init__(self, cpu: int, loaded: list[Stressed], logs: GenLogs, repeat: int,
                 start_ns: int, use_oracle: bool = True):
        self.cpu, self.start_ns, self.use_oracle = cpu, start_ns, use_oracle
        self.max_repeat = repeat
        self.work = []
        for ti, lt in enumerate(loaded):
            ctrs = lt.counters()
            # one snapshot per counters map, shared by the map's entries: the
            # delta of a window is since the map's last read on this CPU,
            # whichever of its entries ran then
            snap = [ctrs.read_cpu(cpu)]
            slots = [(s, logs[(ti, s)], lt.universe(s)) for s in range(lt.slots)]
            tally = TopologyStats()
            for entry, name, fd in lt.entries():
                tr = sc.TestRun(fd, min(repeat, FIRST_REPEAT), f"{lt.label}/{name}")
                self.work.append([lt, ctrs, tr, slots, snap, tally, entry])
        self.order = list(self.work)
        self._rng = random.Random(cpu ^ time.monotonic_ns())
        self.records: dict[tuple, ProblemRecord] = {}
        self.runs = self.verified = self.windows = self.unjudged = self.problems = 0

    def round(self) -> None:
        """One window of every entry, in a new random order each round: a
        writer whose delete is held up until the current window ends (the
        kernel waits for the runner's CPU) would otherwise fall into step
        with a fixed order and empty the same topology's slot in every one of
        its windows, leaving that topology unverified."""
        cpu = self.cpu
        self._rng.shuffle(self.order)
        for w in self.order:
            lt, ctrs, tr, slots, snap, tally, entry = w
            repeat = tr.repeat  # _pace sets the next window's
            t0 = time.monotonic_ns()
            retval = tr.run()
            t1 = time.monotonic_ns()
            self._pace(tr, (t1 - t0) / 1e9)
            cur = ctrs.read_cpu(cpu)
            delta = [a - b for a, b in zip(cur, snap[0])]
            snap[0] = cur
            self.windows += 1
            tally.windows += 1
            allowed = {s: log.allowed(t0, t1, n) for s, log, n in slots}
            if any(v is None for v in allowed.values()):
                self.unjudged += 1  # the log no longer reaches back: judge nothing
                tally.windows_unjudged += 1
                continue
            v = lt.judge(entry, delta, allowed, repeat, retval)
            self.runs += v.runs
            self.verified += v.tail_calls
            tally.runs += v.runs
            tally.tail_calls_verified += v.tail_calls
            if self.use_oracle:
                for p in v.problems:
                    self._note(p, t0, t1)

    def _pace(self, tr: sc.TestRun, took_s: float) -> None:
        """Next window's repeat: doubled while windows are short, up to the
        job's repeat; halved while they are long (slow CPU, TCG)."""
        if took_s < WINDOW_TARGET_S / 2 and tr.repeat < self.max_repeat:
            tr.set_repeat(min(self.max_repeat, tr.repeat * 2))
        elif took_s > WINDOW_TARGET_S * 2 and tr.repeat > 1:
            tr.set_repeat(max(1, tr.repeat // 2))

    def per_topology(self) -> dict[str, TopologyStats]:
        """This runner's tallies by topology key (the topology's pin dir name)."""
        return {w[0].pin_dir.name: w[5] for w in self.work}

    def _note(self, p: Problem, t0: int, t1: int) -> None:
        self.problems += 1
        count = p.detail.get("count", 1)
        key = p.key()
        rec = self.records.get(key)
        if rec:
            rec.windows += 1
            rec.count += count
        elif len(self.records) < MAX_PROBLEM_KEYS:
            self.records[key] = ProblemRecord(
                p, self.cpu, ((t0 - self.start_ns) / 1e9, (t1 - self.start_ns) / 1e9), count=count)


def _writer(child: int, cpu: int, owned: list[tuple[int, int]], loaded: list[Stressed],
            logs: GenLogs, spec: JobSpec, duration_ns: int, shared: _Shared) -> None:
    _child_setup(cpu)
    writer = SlotWriter(owned, loaded, logs, spec.writers.ops)
    start_ns = shared.ready_and_wait(child)
    if start_ns:
        writer.run(start_ns + duration_ns, spec.writers.rate, shared.address(0),
                   shared.address(shared.base(child) + W_UPDATES))


def _runner(child: int, cpu: int, loaded: list[Stressed], logs: GenLogs, spec: JobSpec,
            duration_ns: int, shared: _Shared, out: mp.Queue) -> None:
    _child_setup(cpu)
    q, base = shared.q, shared.base(child)
    r = WindowRunner(cpu, loaded, logs, spec.repeat, 0, "oracle" in spec.checks)
    r.start_ns = start_ns = shared.ready_and_wait(child)
    deadline_ns = start_ns + duration_ns
    while start_ns and not shared.stopped() and time.monotonic_ns() < deadline_ns:
        r.round()
        q[base + W_RUNS], q[base + W_VERIFIED] = r.runs, r.verified
        q[base + W_PROBLEMS], q[base + W_UNJUDGED] = r.problems, r.unjudged
    out.put(("runner", child, r.windows, list(r.records.values()), r.per_topology()))


def run_stress(spec: JobSpec, loaded: list[Stressed], duration_s: float,
               on_progress=None, tick_s: float = 0.25) -> StressOutcome:
    """Churn and run every loaded topology for duration_s on the spec's CPUs."""
    keys = [(ti, s) for ti, lt in enumerate(loaded) for s in range(lt.slots)]
    logs = GenLogs(keys)
    for ti, s in keys:  # every slot starts filled, before any runner starts
        value, fd = loaded[ti].targets(s)[0]
        pa, key = loaded[ti].slot_array(s)
        pa.install(key, fd)
        logs[(ti, s)].record(value)

    writer_cpus, runner_cpus = spec.writer_cpus, spec.runner_cpus
    owners: dict[int, list] = {w: [] for w in range(len(writer_cpus))}
    for i, key in enumerate(keys):
        owners[i % len(writer_cpus)].append(key)
    n_children = len(writer_cpus) + len(runner_cpus)
    shared = _Shared(n_children)
    out: mp.Queue = _ctx.Queue()
    duration_ns = int(duration_s * 1e9)
    procs: list[tuple[str, int, mp.Process]] = []
    start_ns = time.monotonic_ns()  # until every child is ready
    outcome = StressOutcome(started_ns=start_ns, duration_s=0.0,
                            per_topology={lt.pin_dir.name: TopologyStats() for lt in loaded})
    try:
        for w, cpu in enumerate(writer_cpus):
            p = _ctx.Process(target=_writer, name=f"farm-writer-{cpu}", daemon=True,
                             args=(w, cpu, owners[w], loaded, logs, spec, duration_ns, shared))
            procs.append(("writer", cpu, p))
        for r, cpu in enumerate(runner_cpus):
            child = len(writer_cpus) + r
            p = _ctx.Process(target=_runner, name=f"farm-runner-{cpu}", daemon=True,
                             args=(child, cpu, loaded, logs, spec, duration_ns, shared, out))
            procs.append(("runner", cpu, p))
        for _, _, p in procs:
            p.start()
        if _wait_ready(procs, shared, outcome, n_children):
            outcome.started_ns = start_ns = shared.go()
        else:
            shared.stop()
        _supervise(procs, shared, out, outcome, start_ns + duration_ns, on_progress, tick_s, n_children, start_ns)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        shared.stop()
        for _, _, p in procs:
            if p.pid is not None:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
        logs.close()
    outcome.duration_s = (time.monotonic_ns() - start_ns) / 1e9
    outcome.updates = shared.total(W_UPDATES, n_children)
    return outcome


def _wait_ready(procs, shared: _Shared, outcome: StressOutcome, n_children: int) -> bool:
    """Every child forked and set up; False (with the reason in the outcome)
    when one died or never got ready."""
    end = time.monotonic() + READY_TIMEOUT_S
    while not shared.all_ready(n_children):
        if any(p.exitcode is not None for _, _, p in procs):
            return False  # _supervise reports which died, and how
        if time.monotonic() > end:
            late = [f"{kind} on CPU {cpu}" for c, (kind, cpu, _) in enumerate(procs)
                    if not shared.q[shared.base(c) + W_READY]]
            outcome.child_failures.append(f"{', '.join(late)} not set up {READY_TIMEOUT_S:.0f}s after the fork")
            return False
        time.sleep(0.001)
    return True


def _supervise(procs, shared, out, outcome, deadline_ns, on_progress, tick_s, n_children, start_ns):
    """Wait for every child, reading results as they come (a child's exit
    waits for its queue to drain), stopping all when one dies."""
    failed: set[int] = set()
    grace_ns = deadline_ns + int(HANG_GRACE_S * 1e9)
    while any(p.exitcode is None for _, _, p in procs):
        try:
            try:
                _collect(out.get(timeout=tick_s), outcome)
            except queue.Empty:
                pass
            for kind, cpu, p in procs:
                if p.exitcode not in (None, 0) and p.pid not in failed:
                    failed.add(p.pid)
                    how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit {p.exitcode}"
                    outcome.child_failures.append(f"{kind} on CPU {cpu} (pid {p.pid}) died: {how}")
                    shared.stop()  # a dead writer freezes its slots: end the run honestly
            if time.monotonic_ns() > grace_ns:
                for kind, cpu, p in procs:
                    if p.exitcode is None:
                        outcome.hung.append(f"{kind} on CPU {cpu} (pid {p.pid}) still running "
                                            f"{HANG_GRACE_S:.0f}s past the deadline")
                        p.kill()
                grace_ns = 1 << 62
            if on_progress:
                on_progress(Progress((time.monotonic_ns() - start_ns) / 1e9,
                                     *(shared.total(w, n_children) for w in
                                       (W_UPDATES, W_RUNS, W_VERIFIED, W_PROBLEMS, W_UNJUDGED))))
        except KeyboardInterrupt:
            outcome.interrupted = True
            shared.stop()
    while True:
        try:
            _collect(out.get(timeout=0.2), outcome)
        except queue.Empty:
            break
    outcome.runs = shared.total(W_RUNS, n_children)
    outcome.verified = shared.total(W_VERIFIED, n_children)
    outcome.unjudged = shared.total(W_UNJUDGED, n_children)


def _collect(msg, outcome: StressOutcome) -> None:
    _, _, windows, records, per_topology = msg
    outcome.windows += windows
    outcome.problems.extend(records)
    for key, tally in per_topology.items():
        outcome.per_topology.setdefault(key, TopologyStats()).add(tally)
