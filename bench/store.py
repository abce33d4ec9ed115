#!/usr/bin/env python3
"""Results database benchmark: a lab's backlog into a fresh SQLite file.

100,000 results made from the real engine results in tests/fixtures/results
(pass.json, fail-tail-call-count.json), edited to stand for 200 hosts of 8
hardware classes (both vendors), 3 jobs and 8 kernels rolled out over time.
Failures carry kernel BUG/oops findings (regressions on some classes from
some kernel on, so the regression query has candidates to judge) and
sporadic tail-call-count findings (flakes on two classes). Each result names
its 39 artifacts (the artifacts index) but carries no inlined `attachments`
except every 1000th (--attachments-every 1: every result ships its text
artifacts, as hostrun.py's workers do).

Ingest goes through Store.add_many in batches of 1000 (`farm ingest`'s path;
the collector calls Store.add, a batch of one: --batch 1 measures that);
only those calls are timed, not building the results. Then matrix(store) and
regressions(store) over the whole database, and 5,000 results delivered a
second time (idempotent: nothing added).

Targets: 2,000 results/s ingested, matrix in under 1 s.
Last line: one JSON object: results, ingest_s, results_per_s, matrix_s,
regressions_s, target_results_per_s, target_matrix_s.
Run: .venv/bin/python bench/store.py [--n 20000] [--profile] [--smoke]
(--smoke: 500 results: does the bench still work, not a measurement)
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue module: bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.facts import hw_class  # noqa: E402
from farm.report.matrix import matrix  # noqa: E402
from farm.report.regressions import regressions  # noqa: E402
from farm.store import open_store  # noqa: E402
from farm.store.store import BATCH  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "results"
TARGET_RESULTS_PER_S = 2000
TARGET_MATRIX_S = 1.0

JOBS = ["tailcall-subprog-stress", "tailcall-poke-race", "tailcall-chain-limit"]
KERNELS = ["6.1.0-56-amd64", "6.6.7", "6.8.12", "6.9.2", "6.10.14", "6.12.5", "6.15.3", "6.18.44"]
CPUS = [  # vendor, family, model, stepping, model name
    ("AuthenticAMD", 0x17, 0x31, 0, "AMD EPYC 7702 64-Core Processor"),
    ("AuthenticAMD", 0x19, 0x01, 1, "AMD EPYC 7763 64-Core Processor"),
    ("AuthenticAMD", 0x19, 0x11, 1, "AMD EPYC 9654 96-Core Processor"),
    ("AuthenticAMD", 0x1a, 0x02, 0, "AMD EPYC 9755 128-Core Processor"),
    ("GenuineIntel", 6, 0x55, 4, "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz"),
    ("GenuineIntel", 6, 0x6a, 6, "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"),
    ("GenuineIntel", 6, 0x8f, 8, "Intel(R) Xeon(R) Platinum 8480+"),
    ("GenuineIntel", 6, 0xcf, 2, "Intel(R) Xeon(R) Platinum 8592+"),
]
HOSTS_PER_CLASS = 25
REPLAY = 5000     # results delivered a second time after the backlog
TOPOLOGIES = ["chain-limit-direct", "bpf2bpf-count", "hierarchy", "chain-limit-indirect"]
# (hw_class, first kernel index it breaks on, signature, kind, fail rate)
BROKEN = [
    ("amd-zen4", 1, "kernel BUG in prog_array_map_poke_run", "kernel-bug", 0.4),
    ("amd-zen5", 1, "kernel BUG in prog_array_map_poke_run", "kernel-bug", 0.4),
    ("intel-skylake-sp", 5, "BUG: unable to handle page fault in bpf_prog_*", "kernel-oops", 0.2),
]
# tail-call-count now and then, any kernel, on two classes only: a flake on
# every class would make each previous kernel "failed" and hide every regression
SPORADIC, SPORADIC_CLASSES = 0.02, ("amd-zen2", "intel-icelake")
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


class Lab:
    """Makes result i of n, deterministically."""

    def __init__(self, n: int, attachments_every: int, seed: int = 1):
        self.n, self.every = n, attachments_every
        self.rng = random.Random(seed)
        self.ok = json.loads((FIXTURES / "pass.json").read_text())
        self.short = json.loads((FIXTURES / "fail-tail-call-count.json").read_text())
        self.hosts = []
        for vendor, family, model, stepping, name in CPUS:
            cls = hw_class(vendor, family, model, stepping)
            for k in range(HOSTS_PER_CLASS):
                self.hosts.append({"hostname": f"{cls}-{k:02d}", "vendor": vendor, "family": family,
                                   "model": model, "stepping": stepping, "model_name": name,
                                   "microcode": f"0x{0x1000065 + k % 3:x}",
                                   "spectre_v2": self.ok["host"]["spectre_v2"], "hw_class": cls})
        self.classes = sorted({h["hw_class"] for h in self.hosts})
        self.tcc = self.short["findings"][0]

    def result(self, i: int) -> dict:
        rng = self.rng
        host = self.hosts[rng.randrange(len(self.hosts))]
        kidx = min(len(KERNELS) - 1, i * len(KERNELS) // self.n)   # kernels roll out over time
        # a host lags a kernel behind now and then
        kernel = KERNELS[max(0, kidx - (rng.random() < 0.1))]
        job = JOBS[i % len(JOBS)]
        findings = []
        for cls, since, sig, kind, rate in BROKEN:
            if host["hw_class"] == cls and KERNELS.index(kernel) >= since and rng.random() < rate:
                findings.append(dict(self.tcc, kind=kind, signature=sig,
                                     summary=f"{sig} on CPU {rng.randrange(64)}", detail={"kmsg": sig}))
        if host["hw_class"] in SPORADIC_CLASSES and rng.random() < SPORADIC:
            topo = rng.choice(TOPOLOGIES)
            findings.append(dict(self.tcc, signature=f"tail-call-count in {topo}",
                                 detail=dict(self.tcc["detail"], topology=f"{topo}+short-chain")))
        src = self.short if findings else self.ok
        r = dict(src)   # the big parts (programs, stats, artifacts) shared, as ingest only reads them
        r["run_id"] = f"{job}-{T0:%Y%m%d}-{i:07d}-{rng.getrandbits(24):06x}"
        r["job"] = job
        r["submission"] = f"s-{job}-{kernel}-{i // 300:04d}"
        r["host"] = dict(host, kernel=kernel)
        r["started"] = (T0 + timedelta(seconds=30 * i)).isoformat(timespec="milliseconds")
        r["duration_s"] = round(5 + rng.random(), 3)
        r["findings"] = findings
        r["verdict"] = "fail" if findings else "pass"
        if i % self.every:
            r.pop("attachments", None)
        return r


def ingest(store, lab: Lab, n: int, batch: int, progress_every: int,
           replay: list) -> tuple[int, float]:
    """Builds a batch, then times only add_many on it; keeps the first
    results in `replay` (up to its capacity) for the redelivery check."""
    added, spent, cpu, t_wall = 0, 0.0, 0.0, time.perf_counter()
    keep = REPLAY
    next_report = progress_every
    for start in range(0, n, batch):
        items = [(lab.result(i), None, None) for i in range(start, min(n, start + batch))]
        t, c = time.perf_counter(), time.process_time()
        added += store.add_many(items, batch=batch)
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
        if len(replay) < keep:
            replay.extend(items[:keep - len(replay)])
        done = start + len(items)
        if done >= next_report or done == n:
            next_report += progress_every
            print(f"  {done:>7,} results  ingest {spent:7.2f} s  {done / spent:8,.0f} results/s  "
                  f"(this process's CPU {cpu:.2f} s; wall with building {time.perf_counter() - t_wall:.1f} s)",
                  flush=True)
    return added, spent


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="results to ingest (default 100000)")
    ap.add_argument("--batch", type=int, default=BATCH, help=f"results per add_many batch (default {BATCH})")
    ap.add_argument("--attachments-every", type=int, default=1000,
                    help="keep the inlined attachments on every Nth result (default 1000)")
    ap.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="LINES",
                    help="cProfile the ingest; print the top LINES functions by cumulative and by own time")
    ap.add_argument("--db", type=Path, help="a new SQLite file to create and keep (default: one in a temp dir, removed)")
    ap.add_argument("--smoke", action="store_true", help="500 results: check the bench runs")
    a = ap.parse_args()
    if a.smoke:
        a.n = 500
    if a.n <= 0 or a.batch <= 0 or a.attachments_every <= 0:
        ap.error("--n, --batch and --attachments-every must be positive")
    if a.db and a.db.exists():
        ap.error(f"--db {a.db}: exists; the benchmark starts from an empty database")

    with tempfile.TemporaryDirectory(prefix="farm-bench-store-") as tmp:
        path = a.db or Path(tmp) / "farm.db"
        store = open_store(f"sqlite:///{path}")
        lab = Lab(a.n, a.attachments_every)
        print(f"ingesting {a.n:,} results ({len(lab.hosts)} hosts, {len(lab.classes)} classes, "
              f"{len(JOBS)} jobs, {len(KERNELS)} kernels) into {path}, batches of {a.batch}", flush=True)
        prof = cProfile.Profile() if a.profile else None
        if prof:
            prof.enable()
        replay: list = []
        added, ingest_s = ingest(store, lab, a.n, a.batch, max(a.batch, a.n // 10), replay)
        if prof:
            prof.disable()
        assert added == a.n, f"added {added} of {a.n}"
        assert store.run_count() == a.n
        rate = added / ingest_s
        print(f"ingest: {added:,} results in {ingest_s:.2f} s = {rate:,.0f} results/s "
              f"({rate / TARGET_RESULTS_PER_S:.2f}x the {TARGET_RESULTS_PER_S:,}/s target)", flush=True)

        # redelivered results add nothing (and finding that out is cheap)
        again, replay_s = timed(store.add_many, replay, a.batch)
        assert again == 0 and store.run_count() == a.n, f"redelivery added {again}"
        print(f"redelivered: {len(replay):,} results again, 0 added, in {replay_s:.2f} s "
              f"({len(replay) / replay_s:,.0f} results/s)", flush=True)

        cells, matrix_s = timed(matrix, store)
        matrix(store)  # warm
        _, matrix_warm_s = timed(matrix, store)
        print(f"matrix: {len(cells)} cells in {matrix_s:.3f} s (again {matrix_warm_s:.3f} s) "
              f"({TARGET_MATRIX_S / matrix_s:.1f}x under the {TARGET_MATRIX_S:g} s target)"
              if matrix_s < TARGET_MATRIX_S else
              f"matrix: {len(cells)} cells in {matrix_s:.3f} s: OVER the {TARGET_MATRIX_S:g} s target", flush=True)
        cands, regressions_s = timed(regressions, store)
        states = {}
        for c in cands:
            states[c.state] = states.get(c.state, 0) + 1
        print(f"regressions: {len(cands)} candidates {states} in {regressions_s:.3f} s", flush=True)
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
        print(f"database: {size / 2**20:.0f} MiB ({size / a.n / 1024:.1f} KiB a result)", flush=True)
        store.engine.dispose()

        if prof:
            print(f"\nprofile of the ingest (top {a.profile} by cumulative time):", flush=True)
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(a.profile)
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(a.profile)

    print(json.dumps({"results": added, "ingest_s": round(ingest_s, 3), "results_per_s": round(rate, 1),
                      "matrix_s": round(matrix_s, 4), "regressions_s": round(regressions_s, 4),
                      "target_results_per_s": TARGET_RESULTS_PER_S, "target_matrix_s": TARGET_MATRIX_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
