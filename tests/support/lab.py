"""A one-machine lab for tests: a real redis-server on a free loopback port
and real `farm worker` / `farm collector` / `farm beat` processes."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from support import REPO, farm_cmd, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path, binds: tuple[str, ...] = ()):
        self.dir, self.port, self.binds = workdir, free_port(), binds
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> "RedisServer":
        server = shutil.which("redis-server")
        assert server, "redis-server missing: scripts/setup installs it"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", *self.binds,
                                      "--protected-mode", "no" if self.binds else "yes",
                                      "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
                                      "--logfile", str(self.dir / "redis.log")])
        wait_for(self.ping, "redis-server to answer", 30)
        return self

    def ping(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def descendants(pid: int) -> list[int]:
    """Every process below pid, children first."""
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return kids + [d for k in kids for d in descendants(k)]


def pidfds(pids: list[int]) -> dict[int, int]:
    """pid -> a pidfd, taken while they live: a pidfd names one process,
    never a later one that reuses its pid, and can be waited on by anyone.
    A process already gone gets none."""
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass  # gone already
    return fds


def still_running(fds: dict[int, int], deadline_s: float) -> list[int]:
    """Wait (on their pidfds, not a clock) until each process has exited or
    the deadline passed; returns the pids that had not. Closes the fds."""
    poller = select.poll()
    left = {fd: pid for pid, fd in fds.items()}
    for fd in left:
        poller.register(fd, select.POLLIN)
    end = time.monotonic() + deadline_s
    while left and (remaining := end - time.monotonic()) > 0:
        for fd, _ in poller.poll(int(remaining * 1000) + 1):
            poller.unregister(fd)
            del left[fd]
    for fd in fds.values():
        os.close(fd)
    return sorted(left.values())


class LoopbackNetns:
    """A network namespace the test makes, with only `lo` up: a 127.0.0.1
    and a port 6379 of its own, free whatever listens on this machine's.
    Leaving it kills what still runs inside and deletes it."""

    def __init__(self, tag: str):
        self.name = f"farmlo{os.getpid() % 100000}{tag}"

    def __enter__(self) -> "LoopbackNetns":
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(self.cmd("ip", "link", "set", "lo", "up"), check=True, capture_output=True)
        return self

    def cmd(self, *args: str) -> list[str]:
        """args run inside the namespace (ip execs them: same pid)."""
        return ["ip", "netns", "exec", self.name, *args]

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def __exit__(self, *_) -> None:
        left = self.pids()
        fds = pidfds(left)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        still_running(fds, 30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Lab:
    """Daemons started for one test, all stopped at its end."""

    def __init__(self, redis_server: RedisServer, state: Path):
        self.redis, self.state = redis_server, state
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "FARM_BROKER_URL": redis_server.url, "FARM_STATE_DIR": str(state), "FARM_DB_URL": "",
                    "FARM_HEARTBEAT_TTL": "4", "FARM_CACHE_DIR": os.environ.get("FARM_CACHE_DIR", "")}
        if not self.env["FARM_CACHE_DIR"]:
            del self.env["FARM_CACHE_DIR"]

    def start(self, *args: str, facts: dict | None = None, log: str = "daemon") -> subprocess.Popen:
        env = dict(self.env)
        if facts:
            env["FARM_FACTS_OVERRIDE"] = json.dumps(facts)
        out = open(self.state / f"{log}.log", "ab")
        p = subprocess.Popen(farm_cmd(*args), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def worker(self, hostname: str, vendor: str = "AuthenticAMD", wait: bool = True) -> subprocess.Popen:
        log = f"worker-{hostname}"
        since = self._log_size(log)
        p = self.start("worker", facts={"hostname": hostname, "vendor": vendor}, log=log)
        if wait:
            self.wait_ready(p, log, since)
        return p

    def collector(self) -> subprocess.Popen:
        since = self._log_size("collector")
        p = self.start("collector", log="collector")
        self.wait_ready(p, "collector", since)
        return p

    def _log_size(self, name: str) -> int:
        path = self.state / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def wait_ready(self, p: subprocess.Popen, log: str, since: int = 0, deadline_s: float = 60) -> None:
        """Until the daemon says it consumes (registered is not yet consuming).
        Only what this process wrote counts: a restarted daemon appends to
        its predecessor's log, which already says ready."""
        path = self.state / f"{log}.log"
        wait_for(lambda: b"ready" in path.read_bytes()[since:] or p.poll() is not None, f"{log} ready",
                 deadline_s)
        assert p.poll() is None, self.log(log)

    def host_up(self, name: str) -> bool:
        return bool(self.redis.client().exists(f"farm:hb:{name}"))

    def farm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(farm_cmd(*args), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def log_bytes(self, name: str) -> bytes:
        """The whole log, to slice at an offset taken before."""
        path = self.state / f"{name}.log"
        return path.read_bytes() if path.exists() else b""

    def log(self, name: str) -> str:
        path = self.state / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def store(self):
        from farm.store import open_store
        return open_store(f"sqlite:///{self.state / 'farm.db'}")

    def stored(self, sub_id: str) -> list[dict]:
        """What the collector wrote to the results database."""
        return self.store().results(sub_id) if (self.state / "farm.db").exists() else []

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def submitted(proc: subprocess.CompletedProcess, exit_code: int) -> str:
    """The submission id `farm submit` printed, once it exited exit_code
    (EXIT_PASS without --wait; with --wait, the verdict's)."""
    assert proc.returncode == exit_code, f"exit {proc.returncode}, not {exit_code}: {proc.stdout}{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


def submit_noop(url: str, count: int, hosts: tuple[str, ...] = ()) -> list[dict]:
    """`count` submissions of a zero-length job (the worker answers at once),
    to every healthy host or to `hosts`, sent from this process."""
    from farm.queue.app import make_app
    from farm.queue.registry import Registry
    from farm.queue.routing import Selection
    from farm.queue.submit import submit
    from farm.spec import load_spec_text
    text = "duration: 1s\ntopologies: [direct-main]\n"
    spec = load_spec_text(text, "noop", "noop", elsewhere=True)
    app, reg = make_app(url), Registry(redis.Redis.from_url(url, decode_responses=True))
    sel = Selection(hosts=tuple(hosts)) if hosts else Selection(all=True)
    try:
        return [submit(app, reg, spec, text, sel, noop=True) for _ in range(count)]
    finally:
        app.close()
        reg.close()
