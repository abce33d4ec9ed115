"""The long-running processes: `farm worker` and `farm collector`."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import uuid

from farm.config import broker_url, state_dir
from farm.errors import EXIT_PASS
from farm.facts import probe
from farm.queue import tasks
from farm.queue.app import app
from farm.queue.collector import Collector
from farm.queue.worker_run import HostContext
from farm.queue.lost import declare_lost, sweep_unacked
from farm.queue.registry import HEARTBEAT_EVERY_S, Registry, connect
from farm.queue.routing import CONTROL_QUEUE, RESULTS_QUEUE, queues_for
from farm.store import open_store


def _announce_ready(what: str) -> None:
    """One line once Celery consumes: scripts and tests wait for it."""
    from celery.signals import worker_ready
    worker_ready.connect(lambda **_: print(f"{what} ready", flush=True), weak=False)


def _heartbeat(reg: Registry, host: str, worker_id: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_EVERY_S):
        try:
            reg.heartbeat(host, worker_id)
            reg.renew_lease(host, worker_id)
        except Exception as e:  # a broker hiccup must not kill the worker
            print(f"farm worker: heartbeat: {e}", flush=True)


def recover_previous() -> dict:
    """What a host can recover of the boot that was lost: pstore files and
    the previous boot's kernel log, where this machine keeps them."""
    found: dict = {"boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(), "pstore": {}}
    for path in sorted(glob.glob("/sys/fs/pstore/*"))[:20]:
        try:
            found["pstore"][os.path.basename(path)] = open(path, errors="replace").read()[-20000:]
        except OSError:
            pass
    found["journal_previous_boot"] = None
    if shutil.which("journalctl"):
        p = subprocess.run(["journalctl", "-k", "-b", "-1", "--no-pager", "-q"], capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip():
            found["journal_previous_boot"] = p.stdout[-50000:]
    return found


def boot_cell() -> dict:
    """The mitigation cell this host was booted in, named from /proc/cmdline
    as its runs' host.cell will name it; {} when jobs/cells.yaml cannot say.
    Registered with the facts so a candidate regression's retry goes to a
    host of its cell (farm/queue/retry.py)."""
    from farm.cellproof import CellRequest, cell_name, read_cmdline
    from farm.errors import FarmError
    try:
        return {"name": cell_name(CellRequest(), read_cmdline())}
    except FarmError:
        return {}


def run_worker(loglevel: str = "WARNING") -> int:
    facts = probe()
    host_json = {**facts.host_json(), "cell": boot_cell()}
    host, queues = facts.hostname, queues_for(host_json)
    # extra queues from the inventory (farm_queues), through provision.yml
    queues += [q for q in os.environ.get("FARM_EXTRA_QUEUES", "").split(",") if q and q not in queues]
    reg = Registry(connect(broker_url()))
    worker_id = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    reg.register(host, host_json, queues)
    reg.heartbeat(host, worker_id)
    # A run in hand from our previous life was lost with us (if the reaper
    # has not said so yet, say it now); attach what this boot can recover.
    prev = reg.running(host)
    if prev:
        declare_lost(reg, app, host, prev, "worker restarted mid-job", tasks.send_result)
        reg.clear_running(host)
    while (run := reg.next_unrecovered(host)):
        app.send_task("farm.attach", args=[run["run_id"], run["submission"], recover_previous()],
                      queue=RESULTS_QUEUE)
    tasks.HOST = HostContext(host, host_json, reg, worker_id, state_dir())
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(reg, host, worker_id, stop), daemon=True).start()
    print(f"farm worker {host} ({host_json['vendor']} {host_json['hw_class']}): queues {', '.join(queues)}",
          flush=True)
    _announce_ready(f"farm worker {host}")
    # Celery's own heartbeat events (every 2 s) are how Flower shows a worker
    # online; a solo pool sends none while a job runs, so Flower shows a busy
    # host offline. The farm's liveness is the registry's heartbeat above (a
    # thread of its own: it beats through a job).
    try:
        app.Worker(hostname=f"farm@{host}", queues=queues, pool="solo", concurrency=1, loglevel=loglevel,
                   without_mingle=True, without_gossip=True).start()
    finally:
        stop.set()
        reg.forget_heartbeat(host)
    return EXIT_PASS


def run_collector(loglevel: str = "WARNING") -> int:
    from farm.notify.sender import send_forever
    from farm.notify.settings import delivery
    reports = delivery()  # a bad `reports:` config is exit 2 before anything starts
    reg = Registry(connect(broker_url()))
    db = open_store()
    wake = threading.Event()
    collector = Collector(app, reg, db, reports.channels, wake)
    tasks.COLLECTOR = collector
    # A collector killed (SIGKILL, power) with a result in its hands left it
    # unacked, where kombu would leave it for visibility_timeout (8 days):
    # put it back now. Storing is once per run id, so one that did reach the
    # database (or a live second collector's) is harmless when it comes again.
    back = sweep_unacked(app, lambda _m, queue: "restore" if queue in (RESULTS_QUEUE, CONTROL_QUEUE) else None)
    if back:
        print(f"farm collector: {back} message(s) a previous collector left unacked put back", flush=True)
    stop = threading.Event()
    threading.Thread(target=collector.reap_forever, args=(stop,), daemon=True).start()
    if reports.channels:  # the sender: delivers the report outbox beside the collector
        threading.Thread(target=send_forever, args=(db, reports, stop, wake), daemon=True).start()
        print(f"farm collector: reports go by {' and '.join(reports.channels)}", flush=True)
    print(f"farm collector: writing to {db.engine.url.render_as_string(hide_password=True)}", flush=True)
    _announce_ready("farm collector")
    try:
        app.Worker(hostname=f"farm-collector@{os.uname().nodename}", queues=[RESULTS_QUEUE, CONTROL_QUEUE],
                   pool="solo", concurrency=1, loglevel=loglevel, without_mingle=True,
                   without_gossip=True).start()
    finally:
        stop.set()
        wake.set()
    return EXIT_PASS
