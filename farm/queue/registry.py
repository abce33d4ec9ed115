"""The host registry in Redis: facts, heartbeat, lease, the job in hand,
health, and the runs of every submission. It owns every key the farm keeps
in Redis (Celery's queues are Celery's): no other module names one.

Keys (prefix farm:): hosts (set) · host:<h> (hash: facts, queues, health,
losses, registered) · hb:<h> (TTL) · lease:<h> (TTL, SET NX) · running:<h>
(the run in hand) · lost:<run_id> (set once: exactly one host-lost) ·
unrecovered:<h> (list: runs lost with the host, for its return) ·
health-log:<h> (list, newest first, capped: the host's health changes) ·
managed:<h> (TTL: a virtual lab watches the host) · reaper (hash: rounds,
last: the collector's reaper rounds done) · sub:<id> (submission) ·
subs (zset) · run:<run_id> (hash: state, host, sent (the worker's result is
on the results queue), ...) · result:<run_id> (TTL: the stored result, for
`farm submit --wait`) · tick:<schedule>:<slot> (TTL, SET NX: one fan-out a
tick) · retry:<job>:<class>:<kernel>[:<cell>] (TTL, SET NX: one retry a candidate) ·
bisect-policy:<job> (a schedule's bisect_regressions for its job, with the
job's text, renewed every tick; whether a regression was bisected is the
results database's: its bisections row).
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
# How long a key outlives its reason to be: the result cache serves a
# `--wait` that may start late; a tick and a retry mark outlive any replay.
RESULT_CACHE_S = 7 * 24 * 3600
TICK_MARK_S = 8 * 24 * 3600
RETRY_MARK_S = 7 * 24 * 3600
HEALTH_LOG_KEEP = 50   # health changes kept per host, for the web page's history
MANAGED_S = 10         # a virtual lab renews it every half second while up


def key(kind: str, *parts) -> str:
    """The one place a farm key's name is made."""
    return ":".join(("farm", kind, *map(str, parts)))


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
        self._r = client

    def close(self) -> None:
        self._r.close()

    # hosts -------------------------------------------------------------
    def register(self, host: str, facts: dict, queues: list[str]) -> None:
        p = self._r.pipeline()
        p.sadd(key("hosts"), host)
        p.hset(key("host", host), mapping={"facts": json.dumps(facts), "queues": json.dumps(queues),
                                              "registered": time.time()})
        p.hsetnx(key("host", host), "health", "healthy")
        p.execute()

    def heartbeat(self, host: str, worker_id: str) -> None:
        p = self._r.pipeline()
        p.set(key("hb", host), worker_id, ex=HEARTBEAT_TTL_S)
        p.hset(key("host", host), "last_heartbeat", time.time())
        p.execute()

    def forget_heartbeat(self, host: str) -> None:
        self._r.delete(key("hb", host))

    def alive(self, host: str) -> bool:
        return bool(self._r.exists(key("hb", host)))

    def hosts(self) -> dict[str, dict]:
        names = sorted(self._r.smembers(key("hosts")))
        p = self._r.pipeline(transaction=False)  # one round trip for the lab, not three a host
        for name in names:
            p.hgetall(key("host", name))
            p.get(key("running", name))
            p.exists(key("hb", name))
        got = p.execute()
        out = {}
        for i, name in enumerate(names):
            h, running, alive = got[3 * i:3 * i + 3]
            if not h:
                continue
            out[name] = {"facts": json.loads(h.get("facts", "{}")), "queues": json.loads(h.get("queues", "[]")),
                         "health": h.get("health", "healthy"), "alive": bool(alive),
                         "last_heartbeat": float(h["last_heartbeat"]) if "last_heartbeat" in h else None,
                         "losses": json.loads(h.get("losses", "[]")),
                         "running": json.loads(running) if running else None}
        return out

    def leases_and_health_logs(self, names: list[str], log_limit: int = 10) -> dict[str, tuple]:
        """name -> (lease or None, health log newest first), for the web's
        hosts page: one round trip for the lab."""
        p = self._r.pipeline(transaction=False)
        for name in names:
            p.get(key("lease", name))
            p.ttl(key("lease", name))
            p.lrange(key("health-log", name), 0, log_limit - 1)
        got = p.execute()
        out = {}
        for i, name in enumerate(names):
            owner, ttl, log = got[3 * i:3 * i + 3]
            out[name] = ({"owner": owner, "ttl": ttl} if owner else None, [json.loads(v) for v in log])
        return out

    def host_states(self) -> dict[str, dict]:
        """Every host's health, last heartbeat (epoch seconds or None),
        queues and whether its heartbeat is live, in two round trips
        whatever the lab's size: what /metrics reads on every scrape
        (hosts() makes three a host)."""
        names = sorted(self._r.smembers(key("hosts")))
        p = self._r.pipeline(transaction=False)
        for name in names:
            p.hmget(key("host", name), "health", "last_heartbeat", "queues")
            p.exists(key("hb", name))
        replies = p.execute()
        out = {}
        for name, (health, beat, queues), alive in zip(names, replies[::2], replies[1::2]):
            out[name] = {"health": health or "healthy", "alive": bool(alive),
                         "last_heartbeat": float(beat) if beat else None,
                         "queues": json.loads(queues) if queues else []}
        return out

    def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting on each Celery queue: kombu's Redis transport
        keeps a queue as a list of its name (and one list a priority step
        above 0, the name + "\\x06\\x16" + step); a task delivered and not
        yet acked is in kombu's unacked hash instead, not counted."""
        from kombu.transport.redis import PRIORITY_STEPS, Channel
        p = self._r.pipeline(transaction=False)
        for q in queues:
            for step in PRIORITY_STEPS:
                p.llen(f"{q}{Channel.sep}{step}" if step else q)
        lengths = p.execute()
        n = len(PRIORITY_STEPS)
        return {q: sum(lengths[i * n:(i + 1) * n]) for i, q in enumerate(queues)}

    # lease -------------------------------------------------------------
    def acquire_lease(self, host: str, owner: str) -> bool:
        lease = key("lease", host)
        return bool(self._r.set(lease, owner, nx=True, ex=HEARTBEAT_TTL_S)) or self._r.get(lease) == owner

    def renew_lease(self, host: str, owner: str) -> None:
        lease = key("lease", host)
        if self._r.get(lease) == owner:
            self._r.expire(lease, HEARTBEAT_TTL_S)

    def release_lease(self, host: str, owner: str) -> None:
        lease = key("lease", host)
        if self._r.get(lease) == owner:
            self._r.delete(lease)

    # the run in hand ---------------------------------------------------
    def set_running(self, host: str, run: dict) -> None:
        self._r.set(key("running", host), json.dumps(run))
        self.set_run_state(run["run_id"], "running", host=host)

    def running(self, host: str) -> dict | None:
        v = self._r.get(key("running", host))
        return json.loads(v) if v else None

    def clear_running(self, host: str) -> None:
        self._r.delete(key("running", host))

    def mark_lost(self, run_id: str) -> bool:
        """True exactly once per run: whoever gets it records the host-lost."""
        return bool(self._r.set(key("lost", run_id), time.time(), nx=True))

    def is_lost(self, run_id: str) -> bool:
        return bool(self._r.exists(key("lost", run_id)))

    def keep_unrecovered(self, host: str, run: dict) -> None:
        """A run lost with its host, for the host to report on when back."""
        self._r.rpush(key("unrecovered", host), json.dumps(run))

    def next_unrecovered(self, host: str) -> dict | None:
        """The oldest run lost with this host not yet reported on, taken."""
        v = self._r.lpop(key("unrecovered", host))
        return json.loads(v) if v else None

    def mark_sent(self, run_id: str) -> None:
        """The worker handed the run's result to the results queue: a host
        that dies after this (before its task is acked) has lost nothing.
        A field of its own: the collector may have set state done already."""
        self._r.hset(key("run", run_id), "sent", time.time())

    def result_sent(self, run_id: str) -> bool:
        return bool(self._r.hexists(key("run", run_id), "sent"))

    def mark_managed(self, host: str, by: str) -> None:
        """A virtual lab watches this host's console: the collector's reaper
        leaves it alone while the mark is renewed."""
        self._r.set(key("managed", host), by, ex=MANAGED_S)

    def managed(self, host: str) -> bool:
        return bool(self._r.exists(key("managed", host)))

    def reaper_round_done(self) -> None:
        """One more round of the collector's reaper looked at every host:
        what a test (or an operator) waits on to know it has looked."""
        p = self._r.pipeline()
        p.hincrby(key("reaper"), "rounds", 1)
        p.hset(key("reaper"), "last", time.time())
        p.execute()

    def reaper_rounds(self) -> int:
        return int(self._r.hget(key("reaper"), "rounds") or 0)

    # health ------------------------------------------------------------
    def note_loss(self, host: str, now: float | None = None) -> str:
        """A loss or crash: suspect, or quarantined after repeated ones."""
        now = now or time.time()
        host_key = key("host", host)
        losses = [t for t in json.loads(self._r.hget(host_key, "losses") or "[]") if t > now - LOSS_WINDOW_S]
        losses.append(now)
        health = "quarantined" if len(losses) >= QUARANTINE_AFTER else "suspect"
        self._r.hset(host_key, mapping={"losses": json.dumps(losses), "health": health})
        self._log_health(host, health, f"lost or crashed ({len(losses)} in 24 h)", now)
        return health

    def release(self, host: str, why: str = "released by an operator") -> None:
        """Back to healthy (an operator's word, or a passing health-check)."""
        if not self._r.sismember(key("hosts"), host):
            raise KeyError(host)
        self._r.hset(key("host", host), mapping={"health": "healthy", "losses": "[]"})
        self._log_health(host, "healthy", why)

    def quarantine(self, host: str, why: str = "quarantined by an operator") -> None:
        """No lab-wide job for this host until released or a health-check passes."""
        if not self._r.sismember(key("hosts"), host):
            raise KeyError(host)
        self._r.hset(key("host", host), "health", "quarantined")
        self._log_health(host, "quarantined", why)

    def _log_health(self, host: str, health: str, why: str, now: float | None = None) -> None:
        p = self._r.pipeline()
        p.lpush(key("health-log", host), json.dumps({"t": now or time.time(), "health": health, "why": why}))
        p.ltrim(key("health-log", host), 0, HEALTH_LOG_KEEP - 1)
        p.execute()

    def health_log(self, host: str, limit: int = HEALTH_LOG_KEEP) -> list[dict]:
        """The host's health changes, newest first: {t, health, why}."""
        return [json.loads(v) for v in self._r.lrange(key("health-log", host), 0, limit - 1)]

    # submissions -------------------------------------------------------
    def add_submission(self, sub: dict) -> None:
        p = self._r.pipeline()
        p.set(key("sub", sub["id"]), json.dumps(sub))
        p.zadd(key("subs"), {sub["id"]: sub["created"]})
        for run_id, host in sub["runs"].items():
            p.hset(key("run", run_id), mapping={"state": "queued", "host": host, "submission": sub["id"],
                                                "updated": time.time()})
        p.execute()

    def submission(self, sub_id: str) -> dict | None:
        v = self._r.get(key("sub", sub_id))
        return json.loads(v) if v else None

    def submissions(self, limit: int = 20) -> list[str]:
        return self._r.zrevrange(key("subs"), 0, limit - 1)

    def set_run_state(self, run_id: str, state: str, **extra) -> None:
        self._r.hset(key("run", run_id), mapping={"state": state, "updated": time.time(),
                                                  **{k: str(v) for k, v in extra.items()}})

    def run_state(self, run_id: str) -> dict:
        return self._r.hgetall(key("run", run_id))

    def cache_result(self, run_id: str, result: dict) -> None:
        """The result as stored, for `farm submit --wait` to read back."""
        self._r.set(key("result", run_id), json.dumps(result), ex=RESULT_CACHE_S)

    def cached_result(self, run_id: str) -> dict | None:
        v = self._r.get(key("result", run_id))
        return json.loads(v) if v else None

    # once-only marks -----------------------------------------------------
    def claim_tick(self, schedule: str, slot: int, sub_id: str) -> bool:
        """True for the first caller of a schedule's tick: it fans out."""
        return bool(self._r.set(key("tick", schedule, slot), sub_id, nx=True, ex=TICK_MARK_S))

    def set_bisect_policy(self, job: str, policy: dict) -> None:
        """A schedule's bisect_regressions for its job (and the job's text),
        what the collector bisects a confirmed regression of that job with."""
        self._r.set(key("bisect-policy", job), json.dumps(policy), ex=TICK_MARK_S)

    def bisect_policy(self, job: str) -> dict | None:
        raw = self._r.get(key("bisect-policy", job))
        return json.loads(raw) if raw else None

    def claim_retry(self, job: str, hw_class: str, kernel: str, sub_id: str, cell: str = "") -> bool:
        """True for the first retry of a candidate (job, class, kernel, cell);
        a candidate of unknown cell ("") keeps the key it had before cells."""
        parts = (job, hw_class, kernel, *([cell] if cell else []))
        return bool(self._r.set(key("retry", *parts), sub_id, nx=True, ex=RETRY_MARK_S))
