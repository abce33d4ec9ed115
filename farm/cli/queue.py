"""The farm's distributed commands (Celery over Redis): worker, collector,
beat, up, submit, status, results, hosts."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from farm.config import broker_url, state_dir
from farm.errors import EXIT_PASS, BadInput


def registry():
    from farm.queue.registry import Registry, connect
    return Registry(connect(broker_url()))


def add_commands(sub) -> None:
    sub.add_parser("worker", help="serve this host's queues (vendor, class, host)").set_defaults(handler=_worker)
    sub.add_parser("collector", help="write results from the results queue; reap lost hosts").set_defaults(
        handler=_collector)
    beat = sub.add_parser("beat", help="fire the scheduled lab-wide runs")
    beat.add_argument("schedules", nargs="?", default="jobs/schedules.yaml")
    beat.set_defaults(handler=_beat)
    up = sub.add_parser("up", help="a one-machine lab: redis, worker, collector, beat and the web page")
    up.add_argument("--schedules", default="jobs/schedules.yaml")
    up.add_argument("--bind", metavar="ADDR", help="start redis-server on ADDR (default loopback; "
                    "beyond loopback it requires a generated password)")
    up.add_argument("--port", type=int, help="start redis-server on this port (default 6379)")
    up.add_argument("--web-bind", default="127.0.0.1", metavar="ADDR",
                    help="farm web listens here (default loopback; beyond it, a login)")
    up.add_argument("--web-port", type=int, default=8080, help="farm web's port (default 8080)")
    up.add_argument("--no-web", action="store_true", help="no web page")
    up.set_defaults(handler=_up)

    sm = sub.add_parser("submit", help="queue a job on the lab's matching hosts")
    sm.add_argument("job")
    sm.add_argument("--where", default="", help="facts, e.g. vendor=amd,hw_class=amd-zen*")
    sm.add_argument("--hosts", default="", help="host names, comma separated")
    sm.add_argument("--all", action="store_true", help="every healthy host")
    sm.add_argument("--duration", help="override the spec's duration")
    sm.add_argument("--wait", action="store_true", help="follow the runs; exit with the verdict")
    sm.add_argument("--json", type=Path, metavar="PATH", help="with --wait: every host's result, as a list")
    sm.add_argument("--timeout", type=float, default=0, help="with --wait: give up after S seconds")
    sm.set_defaults(handler=_submit)
    st = sub.add_parser("status", help="submissions and the state of their runs")
    st.add_argument("id", nargs="?")
    st.set_defaults(handler=_status)
    rs = sub.add_parser("results", help="a submission's results")
    rs.add_argument("id", nargs="?")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(handler=_results)
    hs = sub.add_parser("hosts", help="the lab's hosts: facts, health, heartbeat, job")
    hs.add_argument("--release", metavar="HOST", help="mark HOST healthy again")
    hs.add_argument("--quarantine", metavar="HOST", help="keep lab-wide jobs off HOST until released")
    hs.add_argument("--json", action="store_true")
    hs.set_defaults(handler=_hosts)


def _worker(args) -> int:
    from farm.queue.daemons import run_worker
    return run_worker()


def _collector(args) -> int:
    from farm.queue.daemons import run_collector
    return run_collector()


def _beat(args) -> int:
    from farm.queue.schedules import run_beat
    return run_beat(args.schedules, state_dir())


def _up(args) -> int:
    from farm.queue.up import run_up
    return run_up(args.schedules, args.bind, args.port, None if args.no_web else (args.web_bind, args.web_port))


def _submit(args) -> int:
    from farm.queue.app import app
    from farm.queue.operator import submit_job_file
    reg = registry()
    sub = submit_job_file(app, reg, args.job, args.where, args.hosts, args.all, args.duration)
    print(sub["id"])
    if not args.wait:
        return EXIT_PASS
    return _wait(reg, sub, args)


def _wait(reg, sub, args) -> int:
    from farm.queue.submit import cached_results, run_states, worst_exit
    live = sys.stderr.isatty()
    end = time.monotonic() + args.timeout if args.timeout else None
    shown = {}
    while True:
        states = run_states(reg, sub)
        for run_id, st in states.items():
            text = f"{st['host']}: {st.get('state', '?')}" + (f" ({st['verdict']})" if st.get("verdict") else "")
            if shown.get(run_id) != text:
                shown[run_id] = text
                print(text, file=sys.stderr, flush=True)
        if all(st.get("state") in ("done", "lost") for st in states.values()):
            break
        if end and time.monotonic() > end:
            print(f"farm: gave up waiting after {args.timeout:g}s", file=sys.stderr)
            break
        time.sleep(0.2 if live else 0.1)
    results = cached_results(reg, sub)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return worst_exit(results, len(sub["runs"]))


def _status(args) -> int:
    from farm.queue.submit import run_states
    reg = registry()
    ids = [args.id] if args.id else reg.submissions()
    for sub_id in ids:
        sub = reg.submission(sub_id)
        if not sub:
            raise BadInput(f"no submission {sub_id!r}")
        when = datetime.fromtimestamp(sub["created"]).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{sub_id}  {sub['job']}  {when}")
        for run_id, st in run_states(reg, sub).items():
            print(f"  {st['host']:24} {st.get('state', '?'):8} {st.get('verdict', '')}")
    return EXIT_PASS


def _results(args) -> int:
    """From the results database: no broker needed."""
    from farm.store import open_store
    store = open_store()
    sub_id = args.id or store.latest_submission()
    if not sub_id:
        raise BadInput("no submissions stored yet")
    results = store.results(sub_id)
    if not results:
        raise BadInput(f"no results stored for submission {sub_id!r} (see `farm status`)")
    if args.json:
        print(json.dumps(results, indent=2))
        return EXIT_PASS
    for r in results:
        h = r["host"]
        print(f"{h.get('hostname', '?'):24} {h.get('vendor', ''):13} {h.get('hw_class', ''):22} "
              f"{r['verdict']:6} {len(r['findings'])} findings")
        for f in r["findings"][:10]:
            print(f"    {f['kind']}: {f['signature']}")
    return EXIT_PASS


def _hosts(args) -> int:
    reg = registry()
    if args.release or args.quarantine:
        from farm.queue.operator import change_health
        host, action = (args.release, "release") if args.release else (args.quarantine, "quarantine")
        print(f"{host}: {change_health(reg, host, action)}")
        return EXIT_PASS
    hosts = reg.hosts()
    if args.json:
        print(json.dumps(hosts, indent=2))
        return EXIT_PASS
    now = time.time()
    for name, h in hosts.items():
        f = h["facts"]
        beat = f"{now - h['last_heartbeat']:.0f}s ago" if h["last_heartbeat"] else "never"
        job = h["running"]["run_id"] if h["running"] else "-"
        print(f"{name:24} {f.get('vendor', ''):13} {f.get('hw_class', ''):22} {f.get('kernel', ''):20} "
              f"{h['health']:12} {'up' if h['alive'] else 'down':5} heartbeat {beat:10} job {job}")
    return EXIT_PASS
