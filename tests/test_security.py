"""Nobody gets in: JSON only on every queue (a real worker refuses a pickle),
safe YAML, no shell with spec values, and a broker that listens beyond
loopback only with a password."""
from __future__ import annotations

import ast
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import redis

from support import REPO, farm_cmd, wait_for
from support.netns import sh
from support import children_of

FARM_SOURCES = sorted((REPO / "farm").rglob("*.py"))


def _calls(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(func) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


@pytest.mark.parametrize("path", FARM_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_pickle_no_shell_no_unsafe_yaml(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in ("pickle", "dill", "marshal", "shelve") for n in names), path
    for call in _calls(tree):
        name = _name(call.func)
        for kw in call.keywords:
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, f"{path}:{call.lineno}"
        assert name not in ("os.system", "os.popen", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"), \
            f"{path}:{call.lineno}: {name}"
        if name == "yaml.load":  # only with farm's own SafeLoader subclass
            loader = next((kw.value for kw in call.keywords if kw.arg == "Loader"), None)
            assert isinstance(loader, ast.Name) and loader.id == "_UniqueKeys", f"{path}:{call.lineno}"


def test_the_unique_keys_loader_is_a_safe_loader():
    import yaml

    from farm.hosts.inventory import _UniqueKeys
    assert issubclass(_UniqueKeys, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=_UniqueKeys)


def test_every_serializer_of_the_celery_app_is_json():
    from farm.queue.app import app
    c = app.conf
    assert (c.task_serializer, c.result_serializer, c.event_serializer) == ("json",) * 3
    assert list(c.accept_content) == ["json"] and list(c.result_accept_content) == ["json"]


@pytest.mark.root
@pytest.mark.slow
def test_a_real_worker_refuses_a_pickled_task(lab, tmp_path):
    """A pickle that would create a file if loaded reaches the worker's queue:
    the file never appears and the worker goes on serving JSON tasks."""
    import pickle  # only here, to make the hostile message

    from kombu import Connection

    lab.collector()
    lab.worker("sec-1")
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = pickle.dumps(((Hostile(),), {}, {}))
    with Connection(lab.redis.url) as conn:
        conn.Producer().publish(body, routing_key="host.sec-1", content_type="application/x-python-serialize",
                                content_encoding="binary", headers={"task": "farm.run", "id": "hostile-1"})
    wait_for(lambda: "ContentDisallowed" in lab.log("worker-sec-1") or "Refusing to deserialize"
             in lab.log("worker-sec-1"), "the worker to refuse the pickle", 60)
    assert not marker.exists()
    ok = lab.farm("submit", "jobs/health.yaml", "--hosts", "sec-1", "--wait", "--duration", "1s")
    assert ok.returncode == 0, ok.stderr + lab.log("worker-sec-1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.root
@pytest.mark.slow
def test_farm_up_beyond_loopback_requires_a_generated_password(outside_host, tmp_path):
    state, port = tmp_path / "state", _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_BROKER_URL", "FARM_DB_URL")}
    env.update(FARM_STATE_DIR=str(state), FARM_HEARTBEAT_TTL="4")
    up = subprocess.Popen(farm_cmd("up", "--bind", outside_host.root_ip, "--port", str(port)), cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        pw_file = wait_for(lambda: (state / "redis.password").exists() and state / "redis.password"
                           or up.poll() is not None, "the password file", 60)
        assert up.poll() is None, up.communicate()[0]
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "redis" / "redis.conf").stat().st_mode) == 0o600
        password = pw_file.read_text().strip()
        assert len(password) >= 32
        with pytest.raises(redis.AuthenticationError):  # no password: refused
            redis.Redis(host=outside_host.root_ip, port=port, socket_connect_timeout=2).ping()
        # from the other side of the veth, the same
        probe = sh("ip", "netns", "exec", outside_host.ns, "redis-cli", "-h", outside_host.root_ip,
                   "-p", str(port), "ping", check=False)
        assert "NOAUTH" in probe.stdout + probe.stderr
        with pytest.raises(redis.ConnectionError):  # and not on loopback at all
            redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2).ping()
        client = redis.Redis(host=outside_host.root_ip, port=port, password=password, decode_responses=True)
        wait_for(lambda: any(client.exists(f"farm:hb:{h}") for h in client.smembers("farm:hosts"))
                 or up.poll() is not None, "farm up's worker, with the password", 120)
        assert up.poll() is None, up.communicate()[0]
        for pid in children_of(up.pid):  # the password is on no command line
            assert password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=120)
    assert up.returncode == 0, out
    assert "the password is in" in out and password not in out


def test_farm_up_refuses_a_bad_bind_address(tmp_path):
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path)}
    p = subprocess.run(farm_cmd("up", "--bind", "not-an-address"), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "--bind: 'not-an-address' is not an IP address" in p.stderr
