"""The collector: writes every result that arrives on the results queue to
the results database (once per run id), keeps run states and health, and
reaps hosts whose heartbeat stopped mid-job."""
from __future__ import annotations

import json
import threading

from farm.queue.lost import declare_lost
from farm.queue.registry import Registry
from farm.store import Store

CRASH_KINDS = {"kernel-oops", "kernel-bug", "lockup", "host-lost"}
RESULT_CACHE_S = 7 * 24 * 3600
REAP_EVERY_S = 2.0


class Collector:
    def __init__(self, app, registry: Registry, store: Store):
        self.app, self.reg, self.results = app, registry, store

    def store(self, result: dict) -> bool:
        sub = result.get("submission") or "adhoc"
        if not self.results.add(result, submission=sub):
            # This run id is in already: a redelivery, or a host that was
            # declared lost finishing after all. Keep the latter's word.
            if not any(f["kind"] == "host-lost" for f in result["findings"]):
                self.attach(result["run_id"], sub, {"verdict": result["verdict"],
                            "findings": [f["signature"] for f in result["findings"]]}, key="late_result")
            return False
        run_id = result["run_id"]
        lost = any(f["kind"] == "host-lost" for f in result["findings"])
        self.reg.set_run_state(run_id, "lost" if lost else "done", verdict=result["verdict"])
        cached = {k: v for k, v in result.items() if k != "attachments"}  # those live in the database
        self.reg.r.set(f"farm:result:{run_id}", json.dumps(cached), ex=RESULT_CACHE_S)
        host = result.get("host", {}).get("hostname")
        if host and not lost:
            if any(f["kind"] in CRASH_KINDS for f in result["findings"]):
                self.reg.note_loss(host)
            elif result["job"] == "health" and result["verdict"] == "pass":
                self.reg.release(host)  # a passing health-check brings a host back
        return True

    def attach(self, run_id: str, submission: str, recovered: dict, key: str = "recovered") -> bool:
        """What a returning host recovered (or reported late), onto its
        host-lost finding."""
        def add(result):
            for f in result["findings"]:
                if f["kind"] == "host-lost":
                    f["detail"][key] = recovered
            self.reg.r.set(f"farm:result:{run_id}", json.dumps(result), ex=RESULT_CACHE_S)
        return self.results.update(run_id, add)

    def reap(self) -> list[str]:
        """Hosts with a run in hand and no heartbeat: each run lost once."""
        lost = []
        for name, h in self.reg.hosts().items():
            run = h["running"]
            if self.reg.r.exists(f"farm:managed:{name}"):
                continue  # a virtual lab watches this host's console and knows better
            if run and not h["alive"]:
                if declare_lost(self.reg, self.app, name, run, "heartbeat stopped", self.store):
                    lost.append(run["run_id"])
                self.reg.clear_running(name)
        return lost

    def reap_forever(self, stop: threading.Event) -> None:
        while not stop.wait(REAP_EVERY_S):
            try:
                self.reap()
            except Exception as e:  # keep reaping through a broker hiccup
                print(f"farm collector: reaper: {e}", flush=True)

    def tick(self, entry: dict, scheduled_for: float) -> str | None:
        """A scheduled lab-wide run: fans out once per tick, whoever asks twice."""
        from farm.queue.schedules import fire
        return fire(self.app, self.reg, entry, scheduled_for)
