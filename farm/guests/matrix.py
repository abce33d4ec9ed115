"""`farm lab matrix`: jobs x CPU models x kernels x mitigation cells in
guests. One guest per (model, kernel, cell) runs every job of that cell one
after another (a boot is paid once, not once a job), as many guests at once
as this machine's CPUs and memory allow (a TCG guest keeps one host CPU
busy). Results go to the results database and triage shows the matrix."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from farm.cellproof import CellRequest
from farm.cells import get_cell
from farm.config import state_dir
from farm.errors import EXIT_INFRA, VERDICT_EXIT, BadInput, InfraError, shown
from farm.guests.ahead import compile_ahead
from farm.guests.qemu import Kernel, initramfs, resolve_kernel, run_in_guest
from farm.guests.vrun import (allowance_s, farm_run_command, guest_hostname, guest_job_file, guest_prologue,
                              keep_guest_logs, lost_cell_record, lost_guest_result, store_results)
from farm.host_run import new_run_id
from farm.spec import JobSpec, load_spec

QEMU_OVERHEAD_MB = 256  # QEMU's own memory on top of the guest's RAM
READY_MARK = "farm-init: running"  # the guest's init, about to run run.sh
CPU_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class MatrixJob:
    path: Path
    spec: JobSpec


@dataclass(frozen=True)
class GuestPlan:
    """One guest: a CPU model, a kernel and a cell, and the jobs it runs in turn."""
    cpu_model: str
    kernel: str  # deb:PACKAGE
    cell: str
    jobs: tuple[MatrixJob, ...]

    @property
    def label(self) -> str:
        return f"{self.cpu_model} {self.kernel.removeprefix('deb:')} {self.cell}"


@dataclass
class MatrixOptions:
    duration: str | None = None
    parallel: int | None = None
    smp: int = 2
    memory_mb: int = 2048
    json_path: Path | None = None
    artifacts: Path | None = None
    store: bool = True


@dataclass
class JobOutcome:
    job: str
    exit_code: int
    result: dict | None  # None: the guest was never set up, or farm run refused the job
    artifacts: Path
    note: str = ""  # why there is no result


@dataclass
class GuestOutcome:
    plan: GuestPlan
    release: str
    dir: Path  # console.log, guest-run.log and one dir per job
    boot_s: float | None = None  # QEMU started -> the init runs run.sh
    job_walls_s: list[float] = field(default_factory=list)  # each finished job, in the guest, end to end
    jobs: list[JobOutcome] = field(default_factory=list)
    lost: bool = False
    setup_error: str | None = None

    def summary(self) -> dict:
        return {"cpu_model": self.plan.cpu_model, "kernel": self.release, "package": self.plan.kernel,
                "cell": self.plan.cell, "boot_s": self.boot_s, "job_walls_s": self.job_walls_s,
                "jobs": [j.job for j in self.jobs], "exit_codes": [j.exit_code for j in self.jobs],
                "lost": self.lost, "setup_error": self.setup_error}


# -- pure logic: what to run, and how many guests at once ------------------------------------


def split_list(text: str | None, flag: str) -> list[str]:
    """'a,b, a' -> ['a', 'b']; an empty list is bad input."""
    items = list(dict.fromkeys(x.strip() for x in (text or "").split(",") if x.strip()))
    if not items:
        raise BadInput(f"{flag}: nothing given (a comma-separated list)")
    return items


def check_kernels(kernels: list[str]) -> list[str]:
    for k in kernels:
        if not k.startswith("deb:") or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", k[4:]):
            raise BadInput(f"--kernels: {shown(k)} is not deb:PACKAGE (e.g. deb:linux-image-amd64; "
                           f"see farm lab kernels)")
    return kernels


def plan_guests(jobs: list[MatrixJob], cpu_models: list[str], kernels: list[str],
                cells: list[str] | None) -> list[GuestPlan]:
    """The cross product as guests: every job in every cell it runs in (cells,
    else its own targets.cells, else default), each (model, kernel, cell)
    one guest running its jobs in the order given."""
    per_cell: dict[str, list[MatrixJob]] = {}
    for job in jobs:
        for cell in cells or job.spec.targets.cells or ("default",):
            per_cell.setdefault(cell, []).append(job)
    plans = [GuestPlan(m, k, c, tuple(js)) for m in cpu_models for k in kernels for c, js in per_cell.items()]
    if not plans:
        raise BadInput("lab matrix: the cross product is empty (no job, CPU model, kernel or cell)")
    return plans


def guest_slots(cpus: int, mem_available_mb: int, memory_mb: int, guests: int, parallel: int | None = None) -> int:
    """Guests at once: one per host CPU (a TCG guest keeps one busy), as many
    as the available memory holds, never more than there are; --parallel wins."""
    if parallel is not None:
        if parallel < 1:
            raise BadInput(f"--parallel: {parallel} (at least 1)")
        return min(parallel, guests)
    by_memory = mem_available_mb // (memory_mb + QEMU_OVERHEAD_MB)
    return max(1, min(cpus, by_memory, guests))


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def worst_exit_code(codes) -> int:
    """3 (infra, error) beats 2 beats 1 (findings) beats 0; codes as farm.errors."""
    return max(codes, default=EXIT_INFRA)


# -- one guest ------------------------------------------------------------------------------


def guest_script(plan: GuestPlan, xchg: Path, duration: str | None) -> str:
    """run.sh: each job's `farm run` in turn, each into its own dir with a
    `started` mark before and its exit code after (the host counts progress
    by them, and tells the job that was running from those never started)."""
    lines = [guest_prologue(xchg)]
    for i, _ in enumerate(plan.jobs):
        d = xchg / "jobs" / str(i)
        q = shlex.quote(str(d))
        job_yaml = d / f"{plan.jobs[i].spec.name}.yaml"
        # --cell: each run proves from its own JIT listing that the guest reached the cell, else exit 3
        run = farm_run_command(job_yaml, d, duration, ["--cell", plan.cell])
        lines.append(f": > {q}/started\n{run} > {q}/run.log 2>&1\n"
                     f"echo $? > {q}/exit\n")
    return "".join(lines)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class GuestWatch:
    """What the progress display reads of a running guest: booted, jobs done, failures."""

    def __init__(self, xchg: Path, jobs: int):
        self.xchg, self.jobs = xchg, jobs
        self.booted = False
        self.done: dict[int, int] = {}  # job index -> exit code

    def settle(self, outcome: "GuestOutcome") -> None:
        self.booted = self.booted or outcome.boot_s is not None
        self.done = {i: j.exit_code for i, j in enumerate(outcome.jobs)}

    def poll(self) -> None:
        if not self.booted:
            console = self.xchg / "console.log"
            try:
                self.booted = READY_MARK in console.read_text(errors="replace")
            except OSError:
                pass
        for i in range(self.jobs):
            if i not in self.done:
                try:
                    self.done[i] = int((self.xchg / "jobs" / str(i) / "exit").read_text().strip())
                except (OSError, ValueError):
                    pass


def run_guest(plan: GuestPlan, kernel: Kernel, xchg: Path, out: Path, opts: MatrixOptions,
              on_start=None) -> GuestOutcome:
    """Boot the plan's guest, run its jobs, power off; every job's result
    (or a lost one built from the console) and artifacts under out."""
    cell = get_cell(plan.cell)
    specs = [j.spec for j in plan.jobs]
    outcome = GuestOutcome(plan, kernel.release, out)
    for i, job in enumerate(plan.jobs):
        (xchg / "jobs" / str(i)).mkdir(parents=True)
        guest_job_file(job.path, job.spec, xchg / "jobs" / str(i))
    allowed = allowance_s(specs)
    launched = time.time()
    run = run_in_guest(guest_script(plan, xchg, opts.duration), xchg, plan.cpu_model, kernel, smp=opts.smp,
                       memory_mb=opts.memory_mb, timeout_s=allowed, hostname=guest_hostname(plan.cpu_model),
                       append=cell.append, on_start=on_start)
    keep_guest_logs(run, out)
    if (first := _mtime(xchg / "jobs" / "0" / "started")) is not None:
        outcome.boot_s = round(first - launched, 2)
    outcome.setup_error = run.setup_error
    outcome.lost = run.exit_code is None and not run.setup_error
    host_facts, running = None, None
    for i, job in enumerate(plan.jobs):
        d, art = xchg / "jobs" / str(i), out / f"{i}-{job.spec.name}"
        art.mkdir(parents=True, exist_ok=True)
        if (d / "run.log").exists():
            shutil.copy(d / "run.log", art / "guest-run.log")
        if (d / "artifacts").is_dir():
            shutil.copytree(d / "artifacts", art, dirs_exist_ok=True)
        started, ended = _mtime(d / "started"), _mtime(d / "exit")
        if started is not None and ended is not None:
            outcome.job_walls_s.append(round(ended - started, 2))
        if started is not None and ended is None:
            running = job.spec.name  # the one the guest died in
        outcome.jobs.append(_job_outcome(plan, kernel, run, d, art, job, allowed, host_facts, running))
        if (d / "result.json").exists():  # the guest's own facts, for the jobs it lost after this one
            host_facts = dict(outcome.jobs[-1].result["host"])
    return outcome


def _job_outcome(plan, kernel, run, d: Path, art: Path, job: MatrixJob, allowed: float, host_facts,
                 running) -> JobOutcome:
    name = job.spec.name
    art.mkdir(parents=True, exist_ok=True)
    if (d / "exit").exists():
        try:
            code = int((d / "exit").read_text().strip())
        except ValueError:  # cut short as the guest went down
            code = EXIT_INFRA
        if (d / "result.json").exists():
            result = json.loads((d / "result.json").read_text())
            (art / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            return JobOutcome(name, code, result, art)
        log = (d / "run.log").read_text(errors="replace").strip() if (d / "run.log").exists() else ""
        return JobOutcome(name, code or EXIT_INFRA, None, art, f"farm run refused it: {log[-500:]}")
    if run.setup_error:  # farm's own guest never got to the job: nothing to say about the kernel
        return JobOutcome(name, EXIT_INFRA, None, art, f"guest not set up: {run.setup_error}")
    # the guest died or hung first: the running job gets the console's crash, the rest a host-lost
    cell = lost_cell_record(CellRequest(plan.cell), run.console, get_cell(plan.cell).append)
    result = lost_guest_result(new_run_id(name), name, plan.cpu_model, kernel, run, allowed, cell,
                               was_running=(d / "started").exists(), host=host_facts, running_job=running)
    result.write(art / "result.json")
    (art / "console.log").write_text(run.console)  # the result's `console` artifact, beside it
    return JobOutcome(name, VERDICT_EXIT[result.verdict], result.to_dict(), art)


# -- the whole matrix -----------------------------------------------------------------------


def qemu_cpu_models() -> set[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise InfraError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    out = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True).stdout
    return {ln.split()[1] for ln in out.splitlines() if ln.startswith("x86 ") and len(ln.split()) > 1}


def check_cpu_models(models: list[str]) -> list[str]:
    known = qemu_cpu_models()
    for m in models:
        if not CPU_MODEL.fullmatch(m) or m not in known:
            raise BadInput(f"--cpu-models: unknown QEMU CPU model {shown(m)} (e.g. EPYC-Milan, Icelake-Server; "
                           f"qemu-system-x86_64 -cpu help lists them)")
    return models


def load_jobs(paths: list[str], duration: str | None) -> list[MatrixJob]:
    override = {"duration": duration} if duration else None
    return [MatrixJob(Path(p), load_spec(p, override, elsewhere=True)) for p in paths]


def run_matrix(plans: list[GuestPlan], kernels: dict[str, Kernel], opts: MatrixOptions, out: Path,
               display, slots: int) -> list[GuestOutcome]:
    """Every plan's guest, `slots` at a time; display sees progress and each guest's outcome."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    root = state_dir() / "vlab" / "runs" / f"matrix-{stamp}-{os.getpid()}"
    xchgs = [root / str(i) for i in range(len(plans))]
    watches = [GuestWatch(x, len(p.jobs)) for x, p in zip(xchgs, plans)]
    display.start(plans, slots)
    outcomes: list[GuestOutcome | None] = [None] * len(plans)
    lock = threading.Lock()
    qemus: list = []  # every guest's QEMU, so Ctrl-C can stop them (they run in their own sessions)
    stopping = threading.Event()

    def started(proc) -> None:
        with lock:
            qemus.append(proc)
        if stopping.is_set():  # booted just as Ctrl-C came
            proc.kill()

    def one(i: int) -> None:
        plan = plans[i]
        dest = out / f"{plan.cpu_model}_{kernels[plan.kernel].release}_{plan.cell}"
        try:
            if stopping.is_set():
                return
            outcome = run_guest(plan, kernels[plan.kernel], xchgs[i], dest, opts, on_start=started)
        finally:
            shutil.rmtree(xchgs[i], ignore_errors=True)
        with lock:
            outcomes[i] = outcome

    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="guest")
    try:
        futures = [pool.submit(one, i) for i in range(len(plans))]
        reported = set()
        while True:
            with lock:
                finished = [(i, o) for i, o in enumerate(outcomes) if o is not None and i not in reported]
            for i, o in finished:
                watches[i].settle(o)  # its exchange dir is gone: the outcome says what it did
            for i, w in enumerate(watches):
                if i not in reported:
                    w.poll()
            display.update(watches)
            for i, o in finished:
                reported.add(i)
                display.guest_done(o)
            if all(f.done() for f in futures):
                break
            time.sleep(0.5)
        for f in futures:
            f.result()  # a thread's own exception (farm's bug, a missing tool) surfaces here
    except BaseException:  # Ctrl-C or a guest thread's error: no guest outlives the command
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for proc in qemus:
                if proc.poll() is None:
                    proc.kill()
        raise
    finally:
        pool.shutdown(wait=True)
        display.stop()
        shutil.rmtree(root, ignore_errors=True)
    return [o for o in outcomes if o is not None]


def run_matrix_command(job_paths: list[str], cpu_models: str, kernels: str, cells: str | None,
                       opts: MatrixOptions, display=None) -> int:
    from farm.guests.matrix_view import MatrixDisplay, print_summary
    jobs = load_jobs(job_paths, opts.duration)
    models = check_cpu_models(split_list(cpu_models, "--cpu-models"))
    kernel_specs = check_kernels(split_list(kernels, "--kernels"))
    cell_names = None
    if cells is not None:
        cell_names = [get_cell(c).name for c in split_list(cells, "--cells")]  # unknown: bad input
    plans = plan_guests(jobs, models, kernel_specs, cell_names)
    if opts.json_path and opts.json_path.is_dir():
        raise BadInput(f"--json: {opts.json_path} is a directory")
    if opts.artifacts and opts.artifacts.exists() and not opts.artifacts.is_dir():
        raise BadInput(f"--artifacts: {opts.artifacts} is not a directory")
    if opts.smp < 1 or opts.memory_mb < 256:
        raise BadInput(f"--smp {opts.smp} / --memory {opts.memory_mb}: at least 1 CPU and 256 MB a guest")
    slots = guest_slots(len(os.sched_getaffinity(0)), mem_available_mb(), opts.memory_mb, len(plans), opts.parallel)
    resolved = {k: resolve_kernel(k) for k in kernel_specs}  # downloads, before any guest boots
    for k in resolved.values():
        initramfs(k)  # built once here, not by several guests' threads at once
    compile_ahead([j.spec for j in jobs])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = opts.artifacts or Path("artifacts") / f"matrix-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    display = display or MatrixDisplay()
    outcomes = run_matrix(plans, resolved, opts, out, display, slots)
    runs = [j for o in outcomes for j in o.jobs]
    (out / "guests.json").write_text(json.dumps([o.summary() for o in outcomes], indent=2) + "\n")
    results = [j.result for j in runs if j.result is not None]
    if opts.json_path:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(outcomes, out)
    if opts.store and results:
        added = store_results([(j.result, j.artifacts) for j in runs if j.result is not None])
        print(f"stored {added} results in the results database")
        from farm.cli import main as farm_main
        farm_main(["triage"])
    return worst_exit_code(j.exit_code for j in runs)
