"""One job on this host, start to finish: the plain function under `farm run`
and under a worker's task (farm.queue.worker_run).

    load (bpftool) -> stress (writers, runners, oracle) -> kernel log and
    taint -> Result, with artifacts
"""
from __future__ import annotations

import json
import os
import secrets
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from farm import cellproof, facts as facts_mod
from farm.bpf import jit, mitigation
from farm.bpf.corpus import TOPOLOGIES
from farm.bpf.libbpf import Unsupported
from farm.bpf.loader import Stressed, ensure_bpffs, load_topology, remove_pins
from farm.bpf.toolchain import LoadError, require_tool
from farm.bpf.pins import PinGuard, run_pin_dir, sweep_stale
from farm.detect import refuse
from farm.detect.kmsg import KmsgFollower, write_marker
from farm.detect.signature import classify
from farm.detect.taint import read_taint, taint_finding
from farm.errors import FarmError, InfraError
from farm.artifacts import Artifacts, add_error
from farm.result import LOG_TAIL_CHARS, Finding, ProgramInfo, Result, Stats, TopologyStats, now_iso
from farm.spec import JobSpec
from farm.stress.engine import StressOutcome, run_stress
from farm.gen.check import StaticReport
from farm.gen.topology import ShapeTopology, load_generated
from farm.stress.oracle import ProblemRecord, merge_problems


@dataclass
class RunOptions:
    artifacts: Path | None = None
    run_id: str | None = None        # default: a new one
    on_progress: object = None       # called with engine.Progress
    on_stage: object = None          # called with a short text per stage
    cell: cellproof.CellRequest = cellproof.CellRequest()  # the mitigation cell to prove, if any


def new_run_id(job: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{job}-{stamp}-{secrets.token_hex(3)}"


def topology_key(index: int, name: str) -> str:
    """How the job's index-th topology is named in pins, artifacts and stats."""
    return f"{index}-{name}"


def run_job(spec: JobSpec, opts: RunOptions) -> Result:
    """Run the job; always returns a Result (verdict error when the lab
    broke or something was left unverified, see Result.settle_verdict) and
    writes its artifacts. Bad input never gets this far."""
    stage = opts.on_stage or (lambda text: None)
    run_id = opts.run_id or new_run_id(spec.name)
    host = facts_mod.probe()
    result = Result(run_id=run_id, job=spec.name, host=host.host_json(), started=now_iso())
    # every topology of the job counts, also one that never loads or runs
    result.stats.per_topology = {topology_key(i, t.label): TopologyStats() for i, t in enumerate(spec.topologies)}
    arts = Artifacts(opts.artifacts, result)
    arts.write("facts", "facts.json", json.dumps(host.to_dict(), indent=2) + "\n")
    duration = spec.duration
    t_start = time.monotonic()
    follower = None
    end_marker = f"farm: run {run_id} end"
    listings: list[str] = []  # the JIT listings that prove the run's cell
    try:
        require_tool("clang")
        require_tool("bpftool")
        ensure_bpffs()
        sweep_stale()
        if "kmsg" in spec.checks:
            # Only a started follower is stopped (and marked) below: one that
            # could not open /dev/kmsg has nothing to stop.
            follower = KmsgFollower().start()
            write_marker(f"farm: run {run_id} start")
        taint_before = read_taint()
        stage("loading the corpus through bpftool")
        outcome = _load_and_stress(spec, run_id, duration, result, opts, stage, arts, listings)
        if outcome:
            _add_outcome(result, spec, outcome)
        if "taint" in spec.checks and (f := taint_finding(taint_before, read_taint())):
            result.findings.append(f)
    except FarmError as e:
        result.error = str(e)
    except Exception as e:  # our bug: still a result, with the traceback kept
        result.error = f"farm bug: {type(e).__name__}: {e}"
        arts.write("error", "error.txt", traceback.format_exc())
    finally:
        if follower:
            kmsg_error = None
            try:
                write_marker(end_marker)
            except FarmError as e:  # must not escape: the result would be lost with it
                kmsg_error = str(e)
            follower.stop()  # reads what is left first, our end marker included
            records = follower.records
            result.stats.kmsg_records_lost = follower.lost
            kmsg_error = follower.error or kmsg_error
            if not kmsg_error and not any(r.text == end_marker for r in records):
                # The round trip proves the log was really followed: a /dev/kmsg
                # that reads nothing (e.g. /dev/null in its place) is no kmsg check.
                kmsg_error = (f"our end marker never came back through {follower.path}: "
                              "the kernel log was not followed, the kmsg check did not run")
            if kmsg_error:
                add_error(result, f"kernel log: {kmsg_error}")
            result.findings.extend(classify(records))
            arts.write("kmsg", "kmsg.txt", "".join(f"[{r.ts_us / 1e6:12.6f}] {r.text}\n" for r in records))
    _record_cell(result, opts.cell, host.vulnerabilities, listings)
    result.duration_s = round(time.monotonic() - t_start, 3)
    arts.finish()
    return result


def _load_and_stress(spec, run_id, duration, result, opts, stage, arts, listings) -> StressOutcome | None:
    pin_root = run_pin_dir(run_id)
    guard = PinGuard(pin_root)  # before any BPF fd exists: it must hold none
    loaded: list[Stressed] = []
    try:
        try:
            pin_root.mkdir(parents=True)
        except OSError as e:
            raise InfraError(f"cannot create {pin_root}: {e.strerror}") from None
        for i, t in enumerate(spec.topologies):
            if len(spec.topologies) > 1:
                stage(f"loading {i + 1}/{len(spec.topologies)}: {t.label}")
            key = topology_key(i, t.label)
            try:
                if t.generate:
                    loaded.append(load_generated(t.generate, pin_root / key))
                else:
                    loaded.append(load_topology(TOPOLOGIES[t.name], t.slots, t.fault, pin_root / key,
                                                source=t.source))
            except Unsupported as e:  # never a finding, never a pass: named in the result
                result.unsupported.append({"topology": key, "reason": str(e)})
                remove_pins(pin_root / key)
            except LoadError as e:
                result.findings.append(_load_error(t, e))
        outcome = None
        if loaded:
            static = _check_shapes(loaded, stage)
            stage(f"stressing {len(loaded)} topologies for {duration:g}s")
            outcome = run_stress(spec, loaded, duration, on_progress=opts.on_progress)
            outcome.static = static
            stage("collecting JIT images")
            suspect = {r.first.topology for r in outcome.problems}
            suspect |= {p.topology for rep in static.values() for p in rep.problems}
            _describe_programs(loaded, result, arts, listings, suspect)
        if "refuse" in spec.checks:
            # before the kernel log is stopped: what the shapes cause is read
            stage(f"trying {len(refuse.CASES)} refuse cases")
            _add_refusals(result, refuse.try_cases(pin_root / "refuse"), arts)
        stage("unloading")
        return outcome
    finally:
        for lt in loaded:
            lt.close()
        remove_pins(pin_root)
        guard.release()


def _load_error(t, e: LoadError) -> Finding:
    if t.generate:  # the seed and size make the shape again
        detail = {"topology": t.label, "generate": t.generate.reproduce(),
                  "shape": t.generate.shape().describe()}
    else:
        detail = {"topology": t.name, "slots": t.slots, "fault": t.fault}
    return Finding("load-error", f"load-error: {t.label}", str(e),
                   detail={**detail, "log": e.log[-LOG_TAIL_CHARS:]})


def _check_shapes(loaded: list[Stressed], stage) -> dict[str, StaticReport]:
    """The static check of every generated shape, before the stress: every
    entry run with the slots held still, every counter against the model
    (farm/gen/check.py). By topology key."""
    shapes = [lt for lt in loaded if isinstance(lt, ShapeTopology)]
    if shapes:
        stage(f"checking {len(shapes)} generated shapes against the model")
    return {st.pin_dir.name: st.check_static() for st in shapes}


def _add_refusals(result: Result, outcomes: list[refuse.Outcome], arts: Artifacts) -> None:
    """Accepted cases are findings; cases this kernel cannot try are named
    as refuse:<case> among the unsupported; refusals pass (refuse.json
    keeps every outcome with the kernel's reason)."""
    for o in outcomes:
        result.findings.extend(o.findings)
        if o.status == "unsupported":
            result.unsupported.append({"topology": f"refuse:{o.case}", "reason": o.reason})
    arts.write("refuse", "refuse.json", json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n")


def _add_outcome(result: Result, spec: JobSpec, o: StressOutcome) -> None:
    per_topology = result.stats.per_topology
    for key, t in o.per_topology.items():
        per_topology[key] = t
    result.stats = Stats(cpus=sorted(set(spec.writer_cpus) | set(spec.runner_cpus)),
                         updates=o.updates, runs=o.runs, tail_calls_verified=o.verified,
                         updates_per_s=round(o.updates / o.duration_s, 1) if o.duration_s else 0.0,
                         tail_calls_per_s=round(o.verified / o.duration_s, 1) if o.duration_s else 0.0,
                         windows=o.windows, windows_unjudged=o.unjudged, per_topology=per_topology)
    records = list(o.problems)
    # the static check's runs and tail calls count as verified too (the
    # rates stay the stress's own); its problems become findings like the
    # runners' (on the CPU check_static pins this process to; no stress window)
    cpu = min(os.sched_getaffinity(0))
    for key, rep in o.static.items():
        result.stats.runs += rep.runs
        result.stats.tail_calls_verified += rep.tail_calls
        per_topology[key].runs += rep.runs
        per_topology[key].tail_calls_verified += rep.tail_calls
        records += [ProblemRecord(replace(p, detail={**p.detail, "check": "static"}), cpu, (0.0, 0.0),
                                  count=p.detail.get("count", 1)) for p in rep.problems]
    result.findings.extend(merge_problems(records, spec))
    for text in o.hung:
        result.findings.append(Finding("hang", "hang: stress process", text))
    if o.child_failures:
        result.error = "; ".join(o.child_failures)
    elif o.interrupted:
        result.error = f"interrupted after {o.duration_s:.1f}s"


def _record_cell(result: Result, request: cellproof.CellRequest, vulnerabilities: dict, listings: list[str]) -> None:
    """host.cell, and the cell miss that keeps a run from passing."""
    try:
        result.host["cell"] = cellproof.cell_record(request, vulnerabilities, mitigation.classify(listings))
        result.cell_miss = cellproof.proof_gap(request, result.host["cell"])
    except FarmError as e:  # jobs/cells.yaml broken under a running farm
        add_error(result, f"cell: {e}")
    except Exception as e:  # our bug: the run's result must survive it
        add_error(result, f"farm bug: cell: {type(e).__name__}: {e}")


def _proof_programs(loaded: list[Stressed]) -> set[tuple[str, str]]:
    """The programs whose listings prove the cell: every program of a
    topology with indirect tail calls (which of them jump is only known from
    the listing), or else one program for the return path."""
    picked = {(lt.pin_dir.name, name) for lt in loaded if lt.indirect for name in lt.prog_fds}
    if not picked and loaded and loaded[0].prog_fds:
        picked = {(loaded[0].pin_dir.name, min(loaded[0].prog_fds))}
    return picked


def _describe_programs(loaded: list[Stressed], result: Result, arts: Artifacts, listings: list[str],
                       suspect: set[str] = frozenset()) -> None:
    """ProgramInfo of every program, and its JIT image and disassembly as
    artifacts, with the xlated dump of each topology's entry and of every
    program of a topology with problems (`suspect`: their labels): bpftool
    takes a quarter of a second a dump here, seconds under TCG, and a job
    has a hundred programs. The listings the cell's proof reads go into
    `listings` (all of them with artifacts, else only _proof_programs(),
    disassembled in a temp dir: objdump is slow under TCG). Read after the
    stress: the image then shows the slots' final poke state."""
    proof = _proof_programs(loaded)
    kallsyms = jit.Kallsyms()
    wanted = []  # (topology, program name, image) to disassemble
    entries = {lt.pin_dir.name: {name for _, name, _ in lt.entries()} for lt in loaded}
    for lt in loaded:
        for name, fd in sorted(lt.prog_fds.items()):
            img = jit.read_jit(fd)
            full = f"{lt.pin_dir.name}/{name}"
            result.programs.append(ProgramInfo(full, img.prog_id, img.tag, len(img.image), img.sha256))
            if arts.root or (lt.pin_dir.name, name) in proof:
                wanted.append((lt, name, img))
    for (lt, name, img), listing in zip(wanted, jit.disassemble_many([w[2] for w in wanted], kallsyms)):
        listings.append(listing)
        if arts.root:
            full, d = f"{lt.pin_dir.name}/{name}", f"jit/{lt.pin_dir.name}"
            arts.write(f"{full}.bin", f"{d}/{name}.bin", img.image)
            arts.write(f"{full}.S", f"{d}/{name}.S", listing)
            if name in entries[lt.pin_dir.name] or lt.label in suspect:
                arts.write(f"{full}.xlated.txt", f"{d}/{name}.xlated.txt", jit.dump_xlated(img.prog_id))
