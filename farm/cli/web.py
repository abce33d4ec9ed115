"""`farm web`: the lab's live pages (farm/web/)."""
from __future__ import annotations

from pathlib import Path


def add_commands(sub) -> None:
    from farm.web.serve import DEFAULT_PORT
    web = sub.add_parser("web", help="the lab's live pages: hosts, queues, submissions, triage, metrics")
    web.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                     help="listen on ADDR (default loopback; beyond loopback it requires a login)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT)
    web.add_argument("--jobs", type=Path, default=Path("jobs"), metavar="DIR",
                     help="the job files the submit form offers (default jobs/)")
    web.set_defaults(handler=_web)


def _web(args) -> int:
    from farm.web.serve import run_web
    return run_web(args.bind, args.port, args.jobs)
