"""The host registry in Redis: facts, heartbeat, lease, the job in hand,
health, and the runs of every submission.

Keys (prefix farm:): hosts (set) · host:<h> (hash: facts, queues, health,
losses, registered) · hb:<h> (TTL) · lease:<h> (TTL, SET NX) · running:<h>
(the run in hand) · lost:<run_id> (set once: exactly one host-lost) ·
sub:<id> (submission) · subs (zset) · run:<run_id> (hash: state, host, sent
(the worker's result is on the results queue), ...).
"""
from __future__ import annotations

import json
import os
import time

import redis

from farm.errors import InfraError

# A host silent this long is lost; FARM_HEARTBEAT_TTL shortens it for tests.
HEARTBEAT_TTL_S = int(os.environ.get("FARM_HEARTBEAT_TTL", "15"))
HEARTBEAT_EVERY_S = max(1, HEARTBEAT_TTL_S // 5)
LOSS_WINDOW_S = 24 * 3600
QUARANTINE_AFTER = 3   # losses or crashes within the window


def connect(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                  socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as e:
        raise InfraError(f"broker {url} does not answer: {e}") from None
    return client


class Registry:
    def __init__(self, client: redis.Redis):
        self.r = client

    # hosts -------------------------------------------------------------
    def register(self, host: str, facts: dict, queues: list[str]) -> None:
        p = self.r.pipeline()
        p.sadd("farm:hosts", host)
        p.hset(f"farm:host:{host}", mapping={"facts": json.dumps(facts), "queues": json.dumps(queues),
                                              "registered": time.time()})
        p.hsetnx(f"farm:host:{host}", "health", "healthy")
        p.execute()

    def heartbeat(self, host: str, worker_id: str) -> None:
        p = self.r.pipeline()
        p.set(f"farm:hb:{host}", worker_id, ex=HEARTBEAT_TTL_S)
        p.hset(f"farm:host:{host}", "last_heartbeat", time.time())
        p.execute()

    def forget_heartbeat(self, host: str) -> None:
        self.r.delete(f"farm:hb:{host}")

    def alive(self, host: str) -> bool:
        return bool(self.r.exists(f"farm:hb:{host}"))

    def hosts(self) -> dict[str, dict]:
        out = {}
        for name in sorted(self.r.smembers("farm:hosts")):
            h = self.r.hgetall(f"farm:host:{name}")
            if not h:
                continue
            running = self.r.get(f"farm:running:{name}")
            out[name] = {"facts": json.loads(h.get("facts", "{}")), "queues": json.loads(h.get("queues", "[]")),
                         "health": h.get("health", "healthy"), "alive": self.alive(name),
                         "last_heartbeat": float(h["last_heartbeat"]) if "last_heartbeat" in h else None,
                         "losses": json.loads(h.get("losses", "[]")),
                         "running": json.loads(running) if running else None}
        return out

    # lease -------------------------------------------------------------
    def acquire_lease(self, host: str, owner: str) -> bool:
        key = f"farm:lease:{host}"
        return bool(self.r.set(key, owner, nx=True, ex=HEARTBEAT_TTL_S)) or self.r.get(key) == owner

    def renew_lease(self, host: str, owner: str) -> None:
        key = f"farm:lease:{host}"
        if self.r.get(key) == owner:
            self.r.expire(key, HEARTBEAT_TTL_S)

    def release_lease(self, host: str, owner: str) -> None:
        key = f"farm:lease:{host}"
        if self.r.get(key) == owner:
            self.r.delete(key)

    # the run in hand ---------------------------------------------------
    def set_running(self, host: str, run: dict) -> None:
        self.r.set(f"farm:running:{host}", json.dumps(run))
        self.set_run_state(run["run_id"], "running", host=host)

    def running(self, host: str) -> dict | None:
        v = self.r.get(f"farm:running:{host}")
        return json.loads(v) if v else None

    def clear_running(self, host: str) -> None:
        self.r.delete(f"farm:running:{host}")

    def mark_lost(self, run_id: str) -> bool:
        """True exactly once per run: whoever gets it records the host-lost."""
        return bool(self.r.set(f"farm:lost:{run_id}", time.time(), nx=True))

    def is_lost(self, run_id: str) -> bool:
        return bool(self.r.exists(f"farm:lost:{run_id}"))

    def mark_sent(self, run_id: str) -> None:
        """The worker handed the run's result to the results queue: a host
        that dies after this (before its task is acked) has lost nothing.
        A field of its own: the collector may have set state done already."""
        self.r.hset(f"farm:run:{run_id}", "sent", time.time())

    def result_sent(self, run_id: str) -> bool:
        return bool(self.r.hexists(f"farm:run:{run_id}", "sent"))

    # health ------------------------------------------------------------
    def note_loss(self, host: str, now: float | None = None) -> str:
        """A loss or crash: suspect, or quarantined after repeated ones."""
        now = now or time.time()
        key = f"farm:host:{host}"
        losses = [t for t in json.loads(self.r.hget(key, "losses") or "[]") if t > now - LOSS_WINDOW_S]
        losses.append(now)
        health = "quarantined" if len(losses) >= QUARANTINE_AFTER else "suspect"
        self.r.hset(key, mapping={"losses": json.dumps(losses), "health": health})
        return health

    def release(self, host: str) -> None:
        """Back to healthy (an operator's word, or a passing health-check)."""
        if not self.r.sismember("farm:hosts", host):
            raise KeyError(host)
        self.r.hset(f"farm:host:{host}", mapping={"health": "healthy", "losses": "[]"})

    # submissions -------------------------------------------------------
    def add_submission(self, sub: dict) -> None:
        p = self.r.pipeline()
        p.set(f"farm:sub:{sub['id']}", json.dumps(sub))
        p.zadd("farm:subs", {sub["id"]: sub["created"]})
        for run_id, host in sub["runs"].items():
            p.hset(f"farm:run:{run_id}", mapping={"state": "queued", "host": host, "submission": sub["id"],
                                                  "updated": time.time()})
        p.execute()

    def submission(self, sub_id: str) -> dict | None:
        v = self.r.get(f"farm:sub:{sub_id}")
        return json.loads(v) if v else None

    def submissions(self, limit: int = 20) -> list[str]:
        return self.r.zrevrange("farm:subs", 0, limit - 1)

    def set_run_state(self, run_id: str, state: str, **extra) -> None:
        self.r.hset(f"farm:run:{run_id}", mapping={"state": state, "updated": time.time(),
                                                   **{k: str(v) for k, v in extra.items()}})

    def run_state(self, run_id: str) -> dict:
        return self.r.hgetall(f"farm:run:{run_id}")
