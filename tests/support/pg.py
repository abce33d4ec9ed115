"""A real PostgreSQL server for tests: Debian's postgresql package
(/usr/lib/postgresql/<major>/bin), a fresh cluster in a temp dir, listening
on a free 127.0.0.1 port only (its unix socket in that dir), trust auth, one
database `farm`. Run as the `postgres` system user when we are root, since
the postmaster refuses to run as root.

    # the postgres_server fixture: tests/conftest.py loads this module as a plugin

    def test_x(postgres_server):
        store = open_store(postgres_server.url)

No server outlives its test: stop() stops it (pg_ctl stop -m fast, then the
postmaster's process group by signal if that did not do), the fixture stops
it whether the test passed or not, an atexit hook stops any left when the
interpreter exits, and the postmaster gets SIGINT (fast shutdown) if the
process that started it dies without any of that running (kill -9).
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SYSTEM_USER = "postgres"
DATABASE = "farm"
DIR_PREFIX = "farm-pg-"
OWNER = "owner.pid"   # the test process that made the dir


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin with initdb, pg_ctl and postgres."""
    def major(path: str) -> tuple:
        m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/bin$", path)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, 0)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class PostgresServer:
    """start() initialises a cluster and starts its postmaster; stop() stops
    it and removes the dir. Usable as a context manager."""

    _running: set["PostgresServer"] = set()

    def __init__(self, bin_dir: Path | None = None, database: str = DATABASE):
        self.bin = bin_dir or pg_bin_dir()
        if self.bin is None:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                                    "(Debian's postgresql package; scripts/setup installs it)")
        self.database = database
        self.dir: Path | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- paths and commands --------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the test database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SYSTEM_USER}@127.0.0.1:{self.port}/{database}"

    def _as_user(self, *argv, pdeathsig: str | None = None) -> list[str]:
        """argv run as the postgres system user (when we are root): setpriv
        execs in place, so the Popen pid is the program's own."""
        if os.geteuid() != 0:
            return [str(a) for a in argv]
        pre = ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups"]
        if pdeathsig:
            pre.append(f"--pdeathsig={pdeathsig}")
        return [*pre, "--", *map(str, argv)]

    def _run(self, *argv, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run(self._as_user(*argv), cwd=self.dir, capture_output=True, text=True,
                           timeout=timeout, env=self._env())
        if p.returncode:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", HOME=str(self.dir))
        return env

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "PostgresServer":
        _sweep_stale()
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        (self.dir / OWNER).write_text(str(os.getpid()))
        PostgresServer._running.add(self)
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, SYSTEM_USER, SYSTEM_USER)
            self._run(self.bin / "initdb", "-D", self.data, "-U", SYSTEM_USER, "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
            for attempt in range(5):  # the free port may be taken before the postmaster binds it
                self.port = free_port()
                if self._start_postmaster(timeout):
                    break
                if attempt == 4:
                    raise RuntimeError(f"postgres did not start:\n{self.log()}")
            self._create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_postmaster(self, timeout: float) -> bool:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self._as_user(self.bin / "postgres", "-D", self.data, "-p", self.port,
                          "-c", "listen_addresses=127.0.0.1",
                          "-c", f"unix_socket_directories={self.dir}",
                          # a throwaway cluster: durability buys nothing
                          "-c", "fsync=off", "-c", "synchronous_commit=off",
                          "-c", "full_page_writes=off",
                          pdeathsig="SIGINT"),
            cwd=self.dir, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self._log.close()
                if "could not bind" in self.log() or "Address already in use" in self.log():
                    return False
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return True
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not answer on 127.0.0.1:{self.port} in {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        import psycopg
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=SYSTEM_USER,
                                 dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def connect(self, database: str | None = None):
        """A psycopg connection (autocommit) for a test's own SQL."""
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SYSTEM_USER,
                               dbname=database or self.database, autocommit=True)

    def _create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SYSTEM_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """Another empty database in this cluster; returns its URL."""
        self._create_database(name)
        return self.url_for(name)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Fast shutdown, then make sure: nothing of this cluster keeps running."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                pids = self._cluster_pids()
                try:
                    self._run(self.bin / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "30",
                              timeout=60)
                except (RuntimeError, subprocess.TimeoutExpired, OSError):
                    pass
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pids = self._cluster_pids() | pids
                    self._signal(self.proc.pid, signal.SIGQUIT)  # immediate shutdown
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self._signal(self.proc.pid, signal.SIGKILL)
                        self.proc.wait(timeout=10)
                self._reap(pids)
        finally:
            if self._log and not self._log.closed:
                self._log.close()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            PostgresServer._running.discard(self)

    def _cluster_pids(self) -> set[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        if self.proc is None:
            return set()
        return {self.proc.pid, *_children(self.proc.pid)}

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # started in its own session: the group is the cluster
        except ProcessLookupError:
            pass

    @staticmethod
    def _reap(pids: set[int], deadline_s: float = 10) -> None:
        """Backends leave when their postmaster does; kill any that did not."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            alive = {p for p in pids if Path(f"/proc/{p}").exists()
                     and "zombie" not in _proc_state(p)}
            if not alive:
                return
            time.sleep(0.05)
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except (OSError, TypeError):
            return ""

    def __enter__(self) -> "PostgresServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        pass
    return "zombie"  # gone


def _sweep_stale() -> None:
    """Remove the dirs of clusters whose test process was killed outright
    (its postmaster went with it, by the parent-death signal)."""
    for d in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((d / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        try:
            pid = int((d / "data" / "postmaster.pid").read_text().split()[0])
            if Path(f"/proc/{pid}").exists():
                continue  # still running (somebody else's): leave it
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(d, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for server in list(PostgresServer._running):
        server.stop()


@pytest.fixture
def postgres_server():
    """A fresh PostgreSQL cluster with an empty `farm` database for one test;
    .url is its SQLAlchemy URL. Stopped and removed after the test."""
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(install Debian's postgresql package: scripts/setup does)")
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root needs setpriv (util-linux) to start postgres as its own user")
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pytest.skip(f"running as root needs the {SYSTEM_USER!r} system user (the postgresql package adds it)")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
