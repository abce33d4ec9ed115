"""`farm run` (one job on this host, no broker) and `farm facts`."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from farm.errors import VERDICT_EXIT, EXIT_PASS, BadInput, FarmError


def add_commands(sub) -> None:
    run = sub.add_parser("run", help="run a job on this host, no broker")
    run.add_argument("job", help="job spec (YAML), e.g. jobs/smoke.yaml")
    run.add_argument("--duration", help="override the spec's duration (e.g. 30s, 5m)")
    run.add_argument("--cpus", help="override the spec's CPUs (e.g. 0-3,6 or all)")
    run.add_argument("--json", type=Path, metavar="PATH", help="write the result JSON here")
    run.add_argument("--artifacts", type=Path, metavar="DIR",
                     help="artifacts dir (default: artifacts/<run_id>)")
    run.add_argument("--no-artifacts", action="store_true",
                     help="write no artifacts: only the JIT listings a cell's proof reads are disassembled "
                          "(every program's listing takes minutes in a TCG guest)")
    run.add_argument("--cell", metavar="NAME",
                     help="a mitigation cell of jobs/cells.yaml this run must prove it reached (else exit 3)")
    run.add_argument("--booted-with", metavar="ARGS", default="",
                     help="the boot arguments this host was booted with to reach a cell (farm lab run "
                          "--append passes them); what well-known ones imply must show, else exit 3")
    run.set_defaults(handler=_run)
    sub.add_parser("facts", help="print this host's facts as JSON").set_defaults(handler=_facts)


def duration_override(text: str | None) -> dict:
    """--duration as a spec override, checked here so the error names the flag."""
    from farm.spec import parse_duration
    if text is None:
        return {}
    try:
        parse_duration(text)
    except ValueError as e:
        raise BadInput(f"--duration: {e}") from None
    return {"duration": text}


def _facts(args) -> int:
    from farm.facts import probe
    print(json.dumps(probe().to_dict(), indent=2))
    return EXIT_PASS


def _run(args) -> int:
    from farm import crashgate, host_run
    from farm.console import Console
    from farm.cellproof import CellRequest
    from farm.spec import load_spec

    overrides = duration_override(args.duration)
    if args.cpus is not None:
        overrides["cpus"] = args.cpus
    spec = load_spec(args.job, overrides)
    crashgate.check(spec)  # a job that can crash an unfixed kernel runs only where allowed
    cell = CellRequest(args.cell, args.booted_with).check()
    if args.json and args.json.exists() and args.json.is_dir():
        raise BadInput(f"--json: {args.json} is a directory")
    if os.geteuid() != 0:
        raise FarmError("farm run needs root (CAP_BPF and CAP_SYS_ADMIN) to load and run BPF programs")
    console = Console(sys.stderr)
    run_id = host_run.new_run_id(spec.name)
    if args.no_artifacts and args.artifacts:
        raise BadInput("--artifacts and --no-artifacts do not go together")
    art = None if args.no_artifacts else args.artifacts or Path("artifacts") / run_id
    console.start(spec)
    result = host_run.run_job(spec, host_run.RunOptions(
        artifacts=art, run_id=run_id, on_progress=console.progress, on_stage=console.stage, cell=cell))
    console.finish(result, art)
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            result.write(args.json)
        except OSError as e:  # the run is over; say where its result still is
            raise FarmError(f"--json: cannot write {args.json}: {e.strerror}; "
                            f"the result is in {art / 'result.json'} if that was writable") from None
    return VERDICT_EXIT[result.verdict]
