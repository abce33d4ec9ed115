"""The collector: writes every result that arrives on the results queue to
the results database (once per run id), keeps run states and health, reaps
hosts whose heartbeat stopped mid-job, and queues a report (farm/notify)
for each new kernel signature and each regression a result confirms."""
from __future__ import annotations

import threading
import time

from farm.queue.lost import declare_lost, sweep_unacked, task_payload
from farm.queue.registry import HEARTBEAT_TTL_S, Registry
from farm.store import Store

CRASH_KINDS = {"kernel-oops", "kernel-bug", "lockup", "host-lost"}
REAP_EVERY_S = 2.0


def _lost(result: dict) -> bool:
    return any(f["kind"] == "host-lost" for f in result["findings"])


class Collector:
    def __init__(self, app, registry: Registry, store: Store, report_channels=(), report_wake=None):
        self.app, self.reg, self.results = app, registry, store
        # where reports go (farm.notify.settings.Delivery.channels); () = none
        self.report_channels = tuple(report_channels)
        self.report_wake = report_wake  # a threading.Event the sender waits on

    def store(self, result: dict) -> bool:
        sub = result.get("submission") or "adhoc"
        if not self.results.add(result, submission=sub):
            # This run id is in already: a redelivery, or a host that was
            # declared lost finishing after all. Keep the latter's word.
            stored = self.results.result(result["run_id"])
            if stored and _lost(stored) and not _lost(result):
                self.attach(result["run_id"], sub, {"verdict": result["verdict"],
                            "findings": [f["signature"] for f in result["findings"]]}, key="late_result")
            elif stored:
                # A collector killed between its commit and its ack stored
                # this one but never said so in the registry: say it now.
                self._settle(stored)
                self._report(stored)  # nor, perhaps, queued its reports (once per id: safe)
            return False
        self._settle(result)
        lost = _lost(result)
        host = result.get("host", {}).get("hostname")
        if host and not lost:
            if any(f["kind"] in CRASH_KINDS for f in result["findings"]):
                self.reg.note_loss(host)
            elif result["job"] == "health" and result["verdict"] == "pass":
                self.reg.release(host, "a health-check passed")  # brings a host back
        if result["verdict"] == "fail" and not lost and self.app is not None:
            self._retry(result)
            self._bisect(result)
        self._report(result)
        return True

    def _report(self, result: dict) -> None:
        """Queue the reports the stored result brings (new signatures, a
        confirmed regression); the sender delivers them. The result is
        stored whatever happens here."""
        if not self.report_channels or not result.get("findings"):
            return
        from farm.notify.trigger import reports_for_result
        try:
            queued = reports_for_result(self.results, result, self.report_channels)
        except Exception as e:  # noqa: BLE001 (a report is a courtesy, never a lost result)
            print(f"farm collector: no report for {result.get('run_id')}: {type(e).__name__}: {e}", flush=True)
            return
        if queued:
            print(f"farm collector: {result['run_id']}: report(s) {', '.join(queued)} queued", flush=True)
            if self.report_wake is not None:
                self.report_wake.set()

    def _bisect(self, result: dict) -> None:
        """A confirmed regression of a job whose schedule says
        bisect_regressions: a farm.bisect task on the lab queue, once per
        regression (farm.bisect.scheduled); never waits for it."""
        from farm.bisect.scheduled import start_bisections
        try:
            said = start_bisections(self.app, self.reg, self.results, result)
        except Exception as e:  # noqa: BLE001 (a bisection is a courtesy, never a lost result)
            said = [f"no bisection after {result['run_id']}: {type(e).__name__}: {e}"]
        for line in said:
            print(f"farm collector: {line}", flush=True)

    def _retry(self, result: dict) -> None:
        """Retry before regression, by itself; the result is stored whatever
        happens here."""
        from farm.queue.retry import auto_retry
        try:
            said = auto_retry(self.app, self.reg, self.results, result)
        except Exception as e:  # noqa: BLE001 (a retry is a courtesy, never a lost result)
            said = f"no retry for {result['run_id']}: {type(e).__name__}: {e}"
        if said:
            print(f"farm collector: {said}", flush=True)

    def _settle(self, result: dict) -> None:
        """The run's state and cached result, from what the database holds."""
        run_id = result["run_id"]
        # the result first: whoever sees the run done (`farm submit --wait`) finds it there
        self.reg.cache_result(run_id, {k: v for k, v in result.items() if k != "attachments"})  # those: the db
        self.reg.set_run_state(run_id, "lost" if _lost(result) else "done", verdict=result["verdict"])

    def attach(self, run_id: str, submission: str, recovered: dict, key: str = "recovered") -> bool:
        """What a returning host recovered (or reported late), onto its
        host-lost finding."""
        def add(result):
            for f in result["findings"]:
                if f["kind"] == "host-lost":
                    f["detail"][key] = recovered
            self.reg.cache_result(run_id, result)
        return self.results.update(run_id, add)

    def reap(self) -> list[str]:
        """Hosts with a run in hand and no heartbeat: each run lost once."""
        lost = []
        self.drop_settled_orphans()
        for name, h in self.reg.hosts().items():
            run = h["running"]
            if self.reg.managed(name):
                continue  # a virtual lab watches this host's console and knows better
            if run and not h["alive"]:
                if declare_lost(self.reg, self.app, name, run, "heartbeat stopped", self.store):
                    lost.append(run["run_id"])
                self.reg.clear_running(name)
        self.reg.reaper_round_done()
        return lost

    def drop_settled_orphans(self) -> int:
        """farm.run messages left unacked by a worker that died after its
        result was sent (and its run cleared): nothing waits for them, and
        kombu alone would hand them back only after visibility_timeout."""
        def pick(message, _queue):
            if message.get("headers", {}).get("task") != "farm.run":
                return None
            run_id = (task_payload(message) or {}).get("run_id")
            state = self.reg.run_state(run_id) if isinstance(run_id, str) else {}
            return "drop" if state.get("state") == "done" or "sent" in state else None
        return sweep_unacked(self.app, pick)

    def reap_forever(self, stop: threading.Event) -> None:
        # Heartbeats cannot be renewed while the broker is away, and keys
        # whose TTL ran out meanwhile are gone when it is back: a host is
        # judged on its heartbeat only once it has had a full TTL to renew
        # it (after start, and after any broker error).
        quiet_until = time.monotonic() + HEARTBEAT_TTL_S
        while not stop.wait(REAP_EVERY_S):
            if time.monotonic() < quiet_until:
                continue
            try:
                self.reap()
            except Exception as e:  # keep reaping through a broker hiccup
                print(f"farm collector: reaper: {e}", flush=True)
                quiet_until = time.monotonic() + HEARTBEAT_TTL_S

    def tick(self, entry: dict, scheduled_for: float) -> str | None:
        """A scheduled lab-wide run: fans out once per tick, whoever asks twice."""
        from farm.queue.schedules import fire
        return fire(self.app, self.reg, entry, scheduled_for)
