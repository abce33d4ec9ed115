"""`farm lab run`: one job in one fresh guest, no broker; the result and
artifacts come out, the guest goes away, the job's exit code is ours."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from farm.bpf.toolchain import cache_root
from farm.cellproof import CellRequest, unread_cell_record
from farm.cells import boot_args
from farm.config import ALLOW_CRASHES_ENV, REPO, state_dir
from farm.detect.signature import classify
from farm.errors import EXIT_FINDINGS, EXIT_INFRA, BadInput, InfraError
from farm.host_run import new_run_id
from farm.guests.ahead import compile_ahead
from farm.guests.qemu import SETUP_FAULTS, GuestRun, Kernel, console_records, resolve_kernel, run_in_guest
from farm.result import Finding, Result, now_iso
from farm.spec import load_spec

BOOT_ALLOWANCE_S = 300  # boot and Python start-up under TCG
# loading, verifying and dumping one topology under TCG: the smoke job's nine
# took over 5 minutes on a 2-CPU host shared with other work
TOPOLOGY_ALLOWANCE_S = 120
GUEST_SUMMARY_CHARS = 4000  # the guest's `farm run` summary table, findings and error included
# Test-only fault injection (FARM_LAB_FAULT), once the job has pinned its
# programs (the run, and its kernel-log reader, are under way):
#   sysrq-crash        crashes the guest's kernel;
#   insmod:/PATH.ko    loads that module into the guest's kernel (a test's own, e.g. one that WARNs);
#   setup:FAULT        breaks the guest's own set-up instead (qemu.SETUP_FAULTS; `farm lab up` too).
_ONCE_PINNED = "(while [ -z \"$(ls /sys/fs/bpf/farm 2>/dev/null)\" ]; do sleep 0.2; done; "
FAULTS = {"sysrq-crash": _ONCE_PINNED + "sleep 1; echo c > /proc/sysrq-trigger) &\n",
          "insmod": _ONCE_PINNED + "/bin/busybox insmod {module}) &\n"}


def parse_fault(value: str) -> tuple[str, str | None]:
    """FARM_LAB_FAULT as (the script run beside the job, the set-up fault)."""
    name, _, arg = value.partition(":")
    if not value:
        return "", None
    if name == "setup" and arg in SETUP_FAULTS:
        return "", arg
    if name == "sysrq-crash" and not arg:
        return FAULTS[name], None
    if name == "insmod" and arg.startswith("/"):
        return FAULTS[name].format(module=shlex.quote(arg)), None
    raise BadInput(f"FARM_LAB_FAULT: unknown fault {value!r} (known: sysrq-crash, insmod:/PATH.ko, "
                   f"{', '.join('setup:' + f for f in SETUP_FAULTS)})")


def guest_hostname(cpu_model: str) -> str:
    return f"vm-{cpu_model.lower()}"


def guest_prologue(xchg: Path) -> str:
    """run.sh's first lines: the checkout, where the guest's farm keeps
    its state (the exchange dir) and finds the host's compiled corpus, and
    that a guest may run what can crash its kernel (its console reports it)."""
    return (f"cd {shlex.quote(str(REPO))}\n"
            f"export FARM_STATE_DIR={shlex.quote(str(xchg))}/state "
            f"FARM_CACHE_DIR={shlex.quote(str(cache_root()))} {ALLOW_CRASHES_ENV}=1\n")


def guest_job_file(job: Path, spec, dest: Path) -> Path:
    """The job's copy for the guest, named after the job: a spec without
    `name:` takes its file's name, so the guest's run keeps the job's name."""
    copy = dest / f"{spec.name}.yaml"
    shutil.copy(job, copy)
    return copy


def farm_run_command(job_yaml: Path, out_dir: Path, duration: str | None, cell_args: list[str]) -> str:
    """The guest's `farm run` of one job, its result.json and artifacts/ in out_dir;
    cell_args (--cell NAME, --booted-with ARGS) make it prove the cell it was booted for."""
    args = ["run", str(job_yaml), "--json", str(out_dir / "result.json"), "--artifacts", str(out_dir / "artifacts")]
    args += (["--duration", duration] if duration else []) + cell_args
    return f"{shlex.quote(sys.executable)} -m farm.cli {' '.join(map(shlex.quote, args))}"


def allowance_s(specs) -> float:
    """How long a guest running these jobs one after another may take before it counts as hung."""
    return BOOT_ALLOWANCE_S + sum(s.duration + TOPOLOGY_ALLOWANCE_S * len(s.topologies) for s in specs)


def keep_guest_logs(run: GuestRun, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "console.log").write_text(run.console)
    (dest / "guest-run.log").write_text(run.log)


def lost_cell_record(request: CellRequest, console: str, boot_append: str) -> dict:
    """host.cell of a lost guest's run: named from the command line its console shows, its paths unknown."""
    booted = re.search(r"^.*Kernel command line: (.*)$", console, re.M)
    return unread_cell_record(request, booted.group(1).strip() if booted else boot_append,
                              "the guest was lost before its JIT listing was read")


def lost_guest_result(run_id: str, job: str, cpu_model: str, kernel: Kernel, run: GuestRun, allowed_s: float,
                      cell: dict, was_running: bool = True, host: dict | None = None,
                      running_job: str | None = None) -> Result:
    """The result of a job whose guest died or hung before the job ended:
    the console's crash reports (if the job was the one running), a hang if
    the guest was killed, and one host-lost. host: facts an earlier job of
    the same guest reported, so the run lands in its class in triage."""
    facts = {**(host or {}), "hostname": guest_hostname(cpu_model), "cpu_model": cpu_model, "kernel": kernel.release,
             "cell": cell}
    result = Result(run_id=run_id, job=job, started=now_iso(), host=facts)
    if was_running:
        result.findings = classify(console_records(run.console))
        if run.timed_out:
            result.findings.append(Finding("hang", "hang: guest", f"{cpu_model} guest still running "
                                           f"{allowed_s:.0f}s after boot; killed"))
        summary = f"{cpu_model} guest lost during {job}"
    else:
        summary = f"{cpu_model} guest lost during {running_job or 'an earlier job'}, before {job} started"
    result.findings.append(Finding("host-lost", "host-lost", summary,
                                   detail={"console": "console.log",
                                           "crash": [f.signature for f in result.findings]}))
    result.settle_verdict()
    result.artifacts["console"] = "console.log"
    return result


def store_results(items: list[tuple[dict, Path]]) -> int:
    """(result, artifacts dir) pairs into the results database, so triage
    sees the virtual lab; how many were new."""
    from farm.store import open_store
    return open_store().add_many([(r, None, art) for r, art in items])


def lab_run(job: Path, cpu_model: str, kernel_spec: str, json_path: Path | None, artifacts: Path | None,
            duration: str | None = None, smp: int = 2, memory_mb: int = 2048, say=print,
            modules: str | None = None, cell: str | None = None, append: str | None = None,
            store: bool = True) -> int:
    spec = load_spec(job, {"duration": duration} if duration else None, elsewhere=True)
    the_cell, boot_append, extra = boot_args(cell, append)  # extra: --append's own, beyond the cell's
    kernel = resolve_kernel(kernel_spec, modules)
    run_id = new_run_id(spec.name)
    xchg = state_dir() / "vlab" / "runs" / run_id
    artifacts = artifacts or Path("artifacts") / f"{run_id}-{cpu_model}"
    try:
        xchg.mkdir(parents=True)
        job_copy = guest_job_file(job, spec, xchg)
        # the guest's run proves the cell it was booted for (or what --append implies), else exit 3
        cell_args = (["--cell", the_cell.name] if the_cell else []) + (["--booted-with", extra] if extra else [])
        fault_script, setup_fault = parse_fault(os.environ.get("FARM_LAB_FAULT", ""))
        script = (fault_script + guest_prologue(xchg)
                  + "exec " + farm_run_command(job_copy, xchg, duration, cell_args) + "\n")
        compile_ahead([spec])
        say(f"booting {cpu_model} with {kernel.release}{' (' + boot_append + ')' if boot_append else ''} "
            f"for {spec.name} ({spec.duration:g}s)")
        allowed_s = allowance_s([spec])
        run = run_in_guest(script, xchg, cpu_model, kernel, smp=smp, memory_mb=memory_mb,
                           timeout_s=allowed_s, hostname=guest_hostname(cpu_model),
                           setup_fault=setup_fault, append=boot_append)
        keep_guest_logs(run, artifacts)
        if (xchg / "artifacts").is_dir():
            shutil.copytree(xchg / "artifacts", artifacts, dirs_exist_ok=True)
        if run.exit_code is not None and (xchg / "result.json").exists():
            if json_path:
                shutil.copy(xchg / "result.json", json_path)
            if store:
                store_results([(json.loads((xchg / "result.json").read_text()), artifacts)])
            say(run.log.strip()[-GUEST_SUMMARY_CHARS:] or f"exit {run.exit_code}")  # the guest's summary, its error row too
            say(f"artifacts here: {artifacts}")  # the summary's own path was the guest's, gone with it
            return run.exit_code
        if run.exit_code is not None:  # farm run itself refused (bad spec for this guest, ...)
            say(run.log.strip()[-GUEST_SUMMARY_CHARS:])
            return run.exit_code
        if run.setup_error:  # farm's own guest never got to the job: nothing to say about the kernel
            raise InfraError(f"{cpu_model} guest ({kernel.release}) not set up: {run.setup_error}; "
                             f"console in {artifacts / 'console.log'}")
        # the guest died or hung before the job ended: the console tells why
        result = lost_guest_result(run_id, spec.name, cpu_model, kernel, run, allowed_s,
                                   cell=lost_cell_record(CellRequest(cell, extra), run.console, boot_append))
        result.write(artifacts / "result.json")
        if json_path:
            result.write(json_path)
        if store:
            store_results([(result.to_dict(), artifacts)])
        for f in result.findings:
            say(f"{f.kind}: {f.signature}")
        return EXIT_FINDINGS if result.findings else EXIT_INFRA
    finally:
        shutil.rmtree(xchg, ignore_errors=True)
