"""`farm up`: a one-machine lab in the foreground: redis-server (when
FARM_BROKER_URL is unset and nothing answers, or when --bind/--port ask for
one), a worker, the collector, beat and `farm web` (unless --no-web). Ctrl-C, SIGTERM (systemd, docker,
`kill`) and SIGHUP (the terminal gone) stop them all: the daemons run in
sessions of their own, so nothing but `farm up` itself would stop them.

Redis listens on loopback unless told otherwise. Beyond loopback it always
requires a password: generated once, kept in <state>/redis.password with mode
0600, never on a command line (redis-server reads it from its own 0600
config file; the daemons get it in their environment).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from farm.config import DEFAULT_BROKER, state_dir
from farm.errors import EXIT_INFRA, EXIT_PASS, BadInput, InfraError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(BaseException):
    """SIGTERM or SIGHUP: stop the lab as Ctrl-C does (a BaseException, like
    KeyboardInterrupt, so no `except Exception` on the way swallows it)."""


def _raise_stopped(signum, _frame):
    raise _Stopped(signal.Signals(signum).name)


def _redis_answers(url: str) -> bool:
    import redis
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.AuthenticationError:
        return True  # something is there, and it wants a password
    except redis.RedisError:
        return False


def is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        raise BadInput(f"--bind: {addr!r} is not an IP address") from None


def _write_private(path: Path, text: str) -> None:
    """Create or replace a file that only root may read (0600 from birth)."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def broker_password(state: Path) -> str:
    return generated_password(state / "redis.password")


def generated_password(path: Path) -> str:
    """The password kept in path (0600), generated there the first time."""
    if path.exists():
        os.chmod(path, 0o600)  # whatever happened to it since, it is secret again
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    _write_private(path, password + "\n")
    return password


def start_redis(bind: str, port: int) -> tuple[subprocess.Popen, str]:
    """redis-server on bind:port with its data in the state dir; returns the
    process and the broker URL the farm's daemons use."""
    if not 0 < port < 65536:
        raise BadInput(f"--port: {port} is not a TCP port")
    server = shutil.which("redis-server")
    if not server:
        raise InfraError("redis-server not found (apt-get install redis-server)")
    state = state_dir()
    data = state / "redis"
    data.mkdir(exist_ok=True)
    conf = [f"bind {bind}", f"port {port}", f"dir {data}", "save 60 1", "appendonly yes", "protected-mode yes"]
    auth = ""
    if not is_loopback(bind):
        password = broker_password(state)
        conf.append(f"requirepass {password}")
        auth = f":{quote(password, safe='')}@"
    conf_path = data / "redis.conf"
    _write_private(conf_path, "\n".join(conf) + "\n")
    url = f"redis://{auth}{bind}:{port}/0"
    if _redis_answers(url):
        raise InfraError(f"something already answers on {bind}:{port}")
    # own session: the terminal's Ctrl-C reaches `farm up` only, which then
    # stops the daemons first and the broker last
    proc = subprocess.Popen([server, str(conf_path)], start_new_session=True)
    try:
        for _ in range(200):
            if _redis_answers(url):
                return proc, url
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    except BaseException:  # stopped while it starts: it must not outlive us
        _stop([proc])
        raise
    _stop([proc])
    raise InfraError(f"redis-server did not start on {bind}:{port}")


def run_up(schedules: str, bind: str | None = None, port: int | None = None,
           web: tuple[str, int] | None = ("127.0.0.1", 8080)) -> int:
    """web: where `farm web` listens (None: no web page)."""
    from farm.queue.schedules import load_schedules
    load_schedules(schedules)  # a bad file is bad input before anything starts
    if web:
        is_loopback(web[0])  # a bad --web-bind too
    procs: list[subprocess.Popen] = []
    redis_proc = None
    env = dict(os.environ)
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    try:
        if bind or port:
            redis_proc, env["FARM_BROKER_URL"] = start_redis(bind or "127.0.0.1", port or 6379)
        elif "FARM_BROKER_URL" not in os.environ and not _redis_answers(DEFAULT_BROKER):
            redis_proc, env["FARM_BROKER_URL"] = start_redis("127.0.0.1", 6379)
        farm = [sys.executable, "-m", "farm.cli"]
        daemons = [["worker"], ["collector"], ["beat", schedules]]
        if web:
            daemons.append(["web", "--bind", web[0], "--port", str(web[1])])
        for cmd in daemons:
            procs.append(subprocess.Popen(farm + cmd, env=env, start_new_session=True))
        where = f" on {bind}:{port or 6379}" if bind and not is_loopback(bind) else ""
        print(f"farm up: redis{where}, worker, collector, beat{', web' if web else ''} running; "
              "Ctrl-C stops them", flush=True)
        if web:
            from farm.web.serve import address
            print(f"farm up: the lab's page is at {address(*web)}", flush=True)
        if where:
            print(f"farm up: workers elsewhere need broker_url redis://:PASSWORD@{bind}:{port or 6379}/0, "
                  f"the password is in {state_dir() / 'redis.password'}", flush=True)
        while all(p.poll() is None for p in procs + [redis_proc] if p):
            time.sleep(0.5)
        return EXIT_INFRA  # one of them died
    except (KeyboardInterrupt, _Stopped):
        return EXIT_PASS
    finally:
        # a second signal must not cut the stopping short and orphan the rest
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        _stop(procs)
        if redis_proc:
            _stop([redis_proc])
        for s, handler in before.items():
            signal.signal(s, handler)


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
