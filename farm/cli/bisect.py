"""`farm bisect JOB --good deb:K --bad deb:K`: the packaged kernel where a
failure was introduced or fixed (farm.bisect)."""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CPU_MODEL = "EPYC-Milan"


def add_commands(sub) -> None:
    b = sub.add_parser("bisect", help="which packaged kernel introduced (or fixed) a job's failure, in guests")
    b.add_argument("job")
    b.add_argument("--good", required=True, metavar="deb:PACKAGE", help="a kernel the job passes on")
    b.add_argument("--bad", required=True, metavar="deb:PACKAGE", help="a kernel the job fails on")
    b.add_argument("--cpu-model", action="append", metavar="M",
                   help=f"a QEMU CPU model each step runs on (repeatable; default {DEFAULT_CPU_MODEL})")
    b.add_argument("--cell", default="default", help="the mitigation cell (jobs/cells.yaml)")
    b.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="runs of the bad end that calibrate the failure's rate (default 3)")
    b.add_argument("--signature", help="the failure to follow (default: the bad end's most frequent)")
    b.add_argument("--json", type=Path, metavar="PATH")
    b.add_argument("--artifacts", type=Path, metavar="DIR")
    b.add_argument("--no-store", action="store_true", help="keep runs and the bisection out of the database")
    b.set_defaults(handler=_bisect)


def _bisect(args) -> int:
    from farm.bisect.run import BisectRequest, run_bisect
    req = BisectRequest(Path(args.job), args.good, args.bad, args.cpu_model or [DEFAULT_CPU_MODEL], args.cell,
                        args.repeat, args.json, not args.no_store, args.signature, args.artifacts)
    code, answer = run_bisect(req, say=lambda line: print(line, flush=True))
    if answer["boundary"] is None:
        print(f"farm: no boundary named: {answer['refused']}", file=sys.stderr)
    return code
