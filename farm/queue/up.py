"""`farm up`: a one-machine lab in the foreground: redis-server on loopback
(when FARM_BROKER_URL is unset and nothing answers), a worker, the collector
and beat; Ctrl-C stops them all."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from farm.config import DEFAULT_BROKER, state_dir
from farm.errors import InfraError


def _redis_answers(url: str) -> bool:
    import redis
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def run_up(schedules: str) -> int:
    procs: list[subprocess.Popen] = []
    redis_proc = None
    env = dict(os.environ)
    if "FARM_BROKER_URL" not in os.environ and not _redis_answers(DEFAULT_BROKER):
        server = shutil.which("redis-server")
        if not server:
            raise InfraError("redis-server not found (apt-get install redis-server)")
        data = state_dir() / "redis"
        data.mkdir(exist_ok=True)
        # own sessions: the terminal's Ctrl-C reaches `farm up` only, which
        # then stops the daemons first and the broker last
        redis_proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", "6379", "--dir", str(data),
                                       "--save", "60 1", "--appendonly", "yes"], start_new_session=True)
        for _ in range(100):
            if _redis_answers(DEFAULT_BROKER):
                break
            time.sleep(0.05)
        else:
            raise InfraError("redis-server did not start")
    farm = [sys.executable, "-m", "farm.cli"]
    for cmd in (["worker"], ["collector"], ["beat", schedules]):
        procs.append(subprocess.Popen(farm + cmd, env=env, start_new_session=True))
    print("farm up: redis, worker, collector, beat running; Ctrl-C stops them", flush=True)
    try:
        while all(p.poll() is None for p in procs + [redis_proc] if p):
            time.sleep(0.5)
        return 3  # one of them died
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(procs)
        if redis_proc:
            _stop([redis_proc])


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
