"""The `farm` command: one module per command family, each adding its own
subcommands and handlers.

    run     farm run, farm facts                         (this host, no broker)
    queue   farm worker|collector|beat|up|submit|status|results|hosts  (Celery)
    lab     farm lab ...        (Ansible hosts and QEMU guests)
    triage  farm ingest|triage|report|gc                  (the results database)
    bisect  farm bisect         (packaged kernels: where a failure came or went)
    web     farm web            (the lab's live pages)
    fuzz    farm fuzz           (generated tail-call shapes against the model, shrunk, exported)

Exit codes for every command (farm.errors): 0 pass, 1 findings, 2 bad
input, 3 infrastructure error.
"""
from __future__ import annotations

import argparse
import sys

from farm.errors import EXIT_BAD_INPUT, EXIT_INFRA, FarmError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"farm: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from farm.cli import bisect, fuzz, lab, queue, run, triage, web
    p = Parser(prog="farm", description="BPF tail-call test farm")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for family in (run, queue, triage, lab, bisect, web, fuzz):
        family.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except FarmError as e:
        print(f"farm: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a run handles Ctrl-C itself; elsewhere: stop quietly
        print("farm: interrupted", file=sys.stderr)
        return EXIT_INFRA
