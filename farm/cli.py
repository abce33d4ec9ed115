"""The `farm` command. Exit codes for every command: 0 pass, 1 findings,
2 bad input, 3 infrastructure error."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from farm.errors import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_INFRA, EXIT_PASS, BadInput, FarmError

VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FINDINGS, "error": EXIT_INFRA}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"farm: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="farm", description="BPF tail-call test farm")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a job on this host, no broker")
    run.add_argument("job", help="job spec (YAML), e.g. jobs/smoke.yaml")
    run.add_argument("--duration", help="override the spec's duration (e.g. 30s, 5m)")
    run.add_argument("--cpus", help="override the spec's CPUs (e.g. 0-3,6 or all)")
    run.add_argument("--json", type=Path, metavar="PATH", help="write the result JSON here")
    run.add_argument("--artifacts", type=Path, metavar="DIR",
                     help="artifacts dir (default: artifacts/<run_id>)")
    sub.add_parser("facts", help="print this host's facts as JSON")

    sub.add_parser("worker", help="serve this host's queues (vendor, class, host)")
    sub.add_parser("collector", help="write results from the results queue; reap lost hosts")
    beat = sub.add_parser("beat", help="fire the scheduled lab-wide runs")
    beat.add_argument("schedules", nargs="?", default="jobs/schedules.yaml")
    up = sub.add_parser("up", help="a one-machine lab: redis, worker, collector and beat")
    up.add_argument("--schedules", default="jobs/schedules.yaml")
    up.add_argument("--bind", metavar="ADDR", help="start redis-server on ADDR (default loopback; "
                    "beyond loopback it requires a generated password)")
    up.add_argument("--port", type=int, help="start redis-server on this port (default 6379)")

    sm = sub.add_parser("submit", help="queue a job on the lab's matching hosts")
    sm.add_argument("job")
    sm.add_argument("--where", default="", help="facts, e.g. vendor=amd,hw_class=amd-zen*")
    sm.add_argument("--hosts", default="", help="host names, comma separated")
    sm.add_argument("--all", action="store_true", help="every healthy host")
    sm.add_argument("--duration", help="override the spec's duration")
    sm.add_argument("--wait", action="store_true", help="follow the runs; exit with the verdict")
    sm.add_argument("--json", type=Path, metavar="PATH", help="with --wait: every host's result, as a list")
    sm.add_argument("--timeout", type=float, default=0, help="with --wait: give up after S seconds")
    st = sub.add_parser("status", help="submissions and the state of their runs")
    st.add_argument("id", nargs="?")
    rs = sub.add_parser("results", help="a submission's results")
    rs.add_argument("id", nargs="?")
    rs.add_argument("--json", action="store_true")
    hs = sub.add_parser("hosts", help="the lab's hosts: facts, health, heartbeat, job")
    hs.add_argument("--release", metavar="HOST", help="mark HOST healthy again")
    hs.add_argument("--json", action="store_true")

    from farm import triage_cli
    triage_cli.add_commands(sub)

    lab = sub.add_parser("lab", help="the lab's hosts through Ansible")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, parser_class=_Parser)
    ci = lab_sub.add_parser("check-inventory", help="validate an inventory")
    ci.add_argument("inventory", nargs="?", type=Path)
    for name, text in (("provision", "provision hosts (playbooks/provision.yml)"),
                       ("facts", "collect facts into the host registry"),
                       ("teardown", "undo provision")):
        sp = lab_sub.add_parser(name, help=text)
        sp.add_argument("--inventory", type=Path)
        sp.add_argument("--limit", help="a host or group")
    lu = lab_sub.add_parser("up", help="a virtual lab: QEMU guests each running a farm worker")
    lu.add_argument("--host", action="append", metavar="NAME:CPU_MODEL",
                    help="a guest (repeatable); default vm-intel:Icelake-Server and vm-amd:EPYC-Milan")
    lu.add_argument("--kernel", default="deb:linux-image-amd64", help="deb:PACKAGE or a bzImage path")
    lu.add_argument("--modules", help="with --kernel PATH: that kernel's lib/modules/<release> dir")
    lu.add_argument("--smp", type=int, default=2)
    lu.add_argument("--memory", type=int, default=2048, help="MB")
    lu.add_argument("--inventory-out", type=Path, default=Path("inventory/virtual.yml"))
    lab_sub.add_parser("status", help="the virtual lab's guests")
    lab_sub.add_parser("down", help="stop the virtual lab")
    lr = lab_sub.add_parser("run", help="run a job in a fresh QEMU guest of a CPU model")
    lr.add_argument("job")
    lr.add_argument("--cpu-model", required=True, help="a QEMU CPU model, e.g. EPYC-Milan, Icelake-Server")
    lr.add_argument("--kernel", default="deb:linux-image-amd64", help="deb:PACKAGE or a bzImage path")
    lr.add_argument("--modules", help="with --kernel PATH: that kernel's lib/modules/<release> dir")
    lr.add_argument("--duration")
    lr.add_argument("--smp", type=int, default=2)
    lr.add_argument("--memory", type=int, default=2048, help="MB")
    lr.add_argument("--json", type=Path, metavar="PATH")
    lr.add_argument("--artifacts", type=Path, metavar="DIR")
    cc = lab_sub.add_parser("collect-crash", help="fetch pstore and the previous boot's log")
    cc.add_argument("host")
    cc.add_argument("--inventory", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "facts":
            return _cmd_facts()
        from farm import lab_cli, triage_cli
        handled = triage_cli.dispatch(args)
        return lab_cli.dispatch(args) if handled is None else handled
    except FarmError as e:
        print(f"farm: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a run handles Ctrl-C itself; elsewhere: stop quietly
        print("farm: interrupted", file=sys.stderr)
        return EXIT_INFRA


def _cmd_facts() -> int:
    import json

    from farm.facts import probe
    print(json.dumps(probe().to_dict(), indent=2))
    return EXIT_PASS


def _cmd_run(args) -> int:
    from farm import job as job_mod
    from farm.console import Console
    from farm.spec import load_spec, parse_duration

    overrides = {}
    if args.duration is not None:
        try:
            parse_duration(args.duration)
        except ValueError as e:
            raise BadInput(f"--duration: {e}") from None
        overrides["duration"] = args.duration
    if args.cpus is not None:
        overrides["cpus"] = args.cpus
    spec = load_spec(args.job, overrides)
    if args.json and args.json.exists() and args.json.is_dir():
        raise BadInput(f"--json: {args.json} is a directory")
    if os.geteuid() != 0:
        raise FarmError("farm run needs root (CAP_BPF and CAP_SYS_ADMIN) to load and run BPF programs")
    console = Console(sys.stderr)
    run_id = job_mod.new_run_id(spec.name)
    art = args.artifacts or Path("artifacts") / run_id
    console.start(spec)
    result = job_mod.run_job(spec, job_mod.RunOptions(
        artifacts=art, run_id=run_id, on_progress=console.progress, on_stage=console.stage))
    console.finish(result, art)
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            result.write(args.json)
        except OSError as e:  # the run is over; say where its result still is
            raise FarmError(f"--json: cannot write {args.json}: {e.strerror}; "
                            f"the result is in {art / 'result.json'} if that was writable") from None
    return VERDICT_EXIT[result.verdict]


if __name__ == "__main__":
    sys.exit(main())
