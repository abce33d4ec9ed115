"""The farm's distributed commands: worker, collector, beat, up, submit,
status, results, hosts."""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from farm.config import broker_url, state_dir
from farm.errors import EXIT_BAD_INPUT, EXIT_PASS, BadInput


def _registry():
    from farm.queue.registry import Registry, connect
    return Registry(connect(broker_url()))


def dispatch(args) -> int:
    cmd = args.command
    if cmd == "worker":
        from farm.queue.daemons import run_worker
        return run_worker()
    if cmd == "collector":
        from farm.queue.daemons import run_collector
        return run_collector()
    if cmd == "beat":
        from farm.queue.schedules import run_beat
        return run_beat(args.schedules, state_dir())
    if cmd == "up":
        from farm.queue.up import run_up
        return run_up(args.schedules, args.bind, args.port)
    if cmd == "submit":
        return _submit(args)
    if cmd == "status":
        return _status(args)
    if cmd == "results":
        return _results(args)
    if cmd == "hosts":
        return _hosts(args)
    if cmd == "lab":
        return _lab(args)
    return EXIT_BAD_INPUT


def _inventory(path) -> Path:
    return Path(path or os.environ.get("FARM_INVENTORY") or "inventory/lab.yml")


def _lab(args) -> int:
    from farm.lab import provision as lab
    from farm.lab.inventory import check_inventory
    sub = args.lab_command

    def say(line: str) -> None:
        print(line, flush=True)
    if sub == "check-inventory":
        hosts = check_inventory(_inventory(args.inventory))
        for host, vendor in sorted(hosts.items()):
            say(f"{host:24} {vendor or '(no vendor group)'}")
        return EXIT_PASS
    if sub == "provision":
        return lab.provision(_inventory(args.inventory), args.limit, say)[0]
    if sub == "teardown":
        return lab.teardown(_inventory(args.inventory), args.limit, say)[0]
    if sub == "facts":
        code, found = lab.collect_facts(_inventory(args.inventory), args.limit, _registry(), say)
        for host, f in sorted(found.items()):
            say(f"{host:24} {f['vendor']:13} {f['hw_class']:22} {f['kernel']:20} ucode {f['microcode']}")
        return code
    if sub == "up":
        from farm.lab.vlab import run_lab_up
        return run_lab_up(args.host, args.kernel, args.smp, args.memory, args.inventory_out, say, args.modules)
    if sub == "status":
        from farm.lab.vlab import lab_status
        return lab_status(say)
    if sub == "down":
        from farm.lab.vlab import lab_down
        return lab_down(say)
    if sub == "run":
        from farm.lab.vrun import lab_run
        return lab_run(Path(args.job), args.cpu_model, args.kernel, args.json, args.artifacts,
                       args.duration, args.smp, args.memory, say, args.modules)
    if sub == "collect-crash":
        code, path = lab.collect_crash(_inventory(args.inventory), args.host, say)
        if code == EXIT_PASS:
            say(str(path))
        return code
    return EXIT_BAD_INPUT


def _submit(args) -> int:
    from farm.queue.app import app
    from farm.queue.routing import parse_where
    from farm.queue.submit import selection_for, submit
    from farm.spec import load_spec, parse_duration

    overrides = {}
    if args.duration:
        try:
            parse_duration(args.duration)
        except ValueError as e:
            raise BadInput(f"--duration: {e}") from None
        overrides["duration"] = args.duration
    spec = load_spec(args.job, overrides, elsewhere=True)
    try:
        where = parse_where(args.where)
    except ValueError as e:
        raise BadInput(f"--where: {e}") from None
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    sel = selection_for(spec, where, hosts, args.all)
    reg = _registry()
    with open(args.job) as f:
        sub = submit(app, reg, spec, f.read(), sel, overrides)
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
    reg = _registry()
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
    reg = _registry()
    if args.release:
        try:
            reg.release(args.release)
        except KeyError:
            raise BadInput(f"unknown host {args.release!r}") from None
        print(f"{args.release}: healthy")
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
