"""`farm fuzz --cpu-model M [--kernel deb:PKG] [--cell C]`: the same fuzz
loop in a fresh virtual-lab guest, the way `farm lab run` runs a job
(farm.guests.vrun): the guest runs this checkout's `farm fuzz` on its own
kernel, writes its JSON and reproducers into the shared exchange dir, and
powers off; both are copied back here. The guest is booted with the cell's
boot arguments; the fuzz report names the cell but does not prove it (farm
run's JIT-listing proof is for jobs)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from farm.config import state_dir
from farm.errors import FarmError, InfraError

GUEST_SECONDS_PER_SEED = 20     # clang and the verifier under TCG, with room
# a finding's shrink: some 20 loads of ever smaller shapes under TCG; one is
# allowed for a run (a kernel that fails every seed is seen on the first), one
# a seed with --inject (every seed fails)
SHRINK_ALLOWANCE_S = 400
DEFAULT_KERNEL = "deb:linux-image-amd64"


def guest_command(opts, xchg: Path) -> str:
    """The guest's own `farm fuzz`, its JSON and exports in the exchange dir."""
    args = ["fuzz", "--seeds", f"{opts.seeds.start}-{opts.seeds.stop - 1}", "--programs", str(opts.programs),
            "--json", str(xchg / "fuzz.json")]
    if opts.hooks:
        args.append("--hooks")
    if opts.budget_s is not None:
        args += ["--budget", f"{opts.budget_s:g}s"]
    if opts.export_dir is not None:
        args += ["--export", str(xchg / "export")]
    if opts.inject:
        args += ["--inject", opts.inject]
    return f"{shlex.quote(sys.executable)} -m farm.cli {' '.join(map(shlex.quote, args))}"


def allowance_s(opts) -> float:
    from farm.guests.vrun import BOOT_ALLOWANCE_S
    work = opts.budget_s if opts.budget_s is not None else GUEST_SECONDS_PER_SEED * len(opts.seeds)
    shrinks = len(opts.seeds) if opts.inject else 1
    return BOOT_ALLOWANCE_S + work + SHRINK_ALLOWANCE_S * shrinks


AHEAD_SEEDS = 1000  # seeds compiled here before the guest boots, at most


def compile_seeds_ahead(opts, say) -> None:
    """The seeds' objects, into the build cache the guest shares: clang under
    TCG takes many seconds a shape (a shrink's smaller shapes it still
    compiles itself)."""
    from concurrent.futures import ThreadPoolExecutor

    from farm.gen.emit import hooks_source
    from farm.gen.load import compile_shape
    from farm.gen.shape import generate
    seeds = list(opts.seeds)[:AHEAD_SEEDS]
    say(f"compiling {len(seeds)} shapes for the guest")

    def one(seed: int) -> None:
        shape = generate(seed, opts.programs, opts.hooks)
        try:
            compile_shape(shape)
            if shape.hooks:
                compile_shape(shape, hooks_source(shape))
        except FarmError:
            pass  # the guest reports it, as the same load-error finding
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(one, seeds))


def lab_fuzz(args, opts, say=print) -> int:
    from farm.cells import boot_args
    from farm.cli.fuzz import summary, write_json
    from farm.guests.qemu import resolve_kernel, run_in_guest
    from farm.guests.vrun import guest_hostname, guest_prologue, keep_guest_logs
    from farm.host_run import new_run_id
    cell, append, _ = boot_args(args.cell, None)
    kernel = resolve_kernel(args.kernel or DEFAULT_KERNEL)
    run_id = new_run_id("fuzz")
    xchg = state_dir() / "vlab" / "runs" / run_id
    logs = (args.export or Path("artifacts")) / f"{run_id}-{args.cpu_model}"
    try:
        xchg.mkdir(parents=True)
        script = guest_prologue(xchg) + "exec " + guest_command(opts, xchg) + "\n"
        compile_seeds_ahead(opts, say)
        say(f"booting {args.cpu_model} with {kernel.release}{' (' + append + ')' if append else ''} "
            f"for farm fuzz, seeds {opts.seeds.start}-{opts.seeds.stop - 1}")
        run = run_in_guest(script, xchg, args.cpu_model, kernel, timeout_s=allowance_s(opts),
                           hostname=guest_hostname(args.cpu_model), append=append)
        keep_guest_logs(run, logs)
        if run.exit_code is None or not (xchg / "fuzz.json").exists():
            if run.exit_code is not None:  # the guest's farm fuzz refused: its own line says why
                say(run.log.strip()[-2000:])
                return run.exit_code
            why = run.setup_error or ("still running after its allowance; killed" if run.timed_out
                                      else "lost before it wrote its report")
            raise InfraError(f"{args.cpu_model} guest ({kernel.release}): {why}; console in {logs / 'console.log'}")
        doc = json.loads((xchg / "fuzz.json").read_text())
        doc["guest"] = {"cpu_model": args.cpu_model, "kernel": kernel.release, "cell": cell.name if cell else None,
                        "append": append, "logs": str(logs)}
        if opts.export_dir is not None and (xchg / "export").is_dir():
            shutil.copytree(xchg / "export", opts.export_dir, dirs_exist_ok=True)
            for f in doc["findings"]:  # the guest's paths were the exchange dir's
                if f.get("reproducer"):
                    f["reproducer"] = str(opts.export_dir / Path(f["reproducer"]).name)
        write_json(args.json, doc)
        say("\n".join(summary(doc)))
        return run.exit_code
    finally:
        shutil.rmtree(xchg, ignore_errors=True)

