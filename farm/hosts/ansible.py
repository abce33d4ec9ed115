"""Playbooks through ansible-runner's Python API.

Each run gets a private data dir under <state>/ansible/; Ansible's local
and remote temp dirs and its home are set explicitly so nothing lands in
~/.ansible; the venv's bin goes first on PATH (ansible-runner looks for
ansible-playbook there). One progress line per host and task; a summary per
host that tells unreachable from failed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from farm.config import PLAYBOOKS, state_dir
from farm.errors import TOOL_OUTPUT_CHARS, InfraError



@dataclass
class HostOutcome:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: bool = False
    failures: list[str] = field(default_factory=list)  # "task: message"


@dataclass
class PlaybookRun:
    playbook: str
    status: str
    data_dir: Path
    hosts: dict[str, HostOutcome] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)  # host -> what a "farm facts" task printed

    @property
    def unreachable(self) -> list[str]:
        return sorted(h for h, o in self.hosts.items() if o.unreachable)

    @property
    def failed(self) -> list[str]:
        return sorted(h for h, o in self.hosts.items() if o.failed and not o.unreachable)

    def summary(self) -> list[str]:
        lines = []
        for h, o in sorted(self.hosts.items()):
            state = "unreachable" if o.unreachable else "failed" if o.failed else "ok"
            lines.append(f"{h}: {state} (ok {o.ok}, changed {o.changed}, failed {o.failed})"
                         + "".join(f"\n    {f}" for f in o.failures[:5]))
        return lines


def _control_dir(ident: str) -> str:
    return f"/tmp/farm-cp-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def _env(data_dir: Path, ident: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_HOME": str(data_dir / "home"),
        "ANSIBLE_LOCAL_TEMP": str(data_dir / "tmp"),
        # one fixed dir on the hosts: Ansible empties it after each task
        "ANSIBLE_REMOTE_TEMP": "/tmp/.farm-ansible",
        # ssh's control socket path must stay under 108 bytes: not in data_dir
        "ANSIBLE_SSH_CONTROL_PATH_DIR": _control_dir(ident),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }


def run_playbook(name: str, inventory: Path, limit: str | None = None, extravars: dict | None = None,
                 progress=print) -> PlaybookRun:
    """Run playbooks/<name> against the inventory; never raises for a host
    that failed (see the PlaybookRun), only when Ansible could not run."""
    import ansible_runner

    playbook = PLAYBOOKS / name
    if not playbook.is_file():
        raise InfraError(f"no playbook {playbook}")
    ident = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f") + f"-{playbook.stem}"
    data_dir = state_dir() / "ansible" / ident
    (data_dir / "tmp").mkdir(parents=True)
    run = PlaybookRun(name, "unknown", data_dir)

    def on_event(ev: dict) -> bool:
        kind, data = ev.get("event", ""), ev.get("event_data", {})
        host, task = data.get("host"), data.get("task", "")
        if kind.startswith("runner_on_") and host:
            o = run.hosts.setdefault(host, HostOutcome())
            res = data.get("res", {})
            if kind == "runner_on_ok":
                word = "changed" if res.get("changed") else "ok"
                if task == "farm facts" and "farm_raw_out.stdout" in res:
                    run.printed[host] = res["farm_raw_out.stdout"]
            elif kind == "runner_on_unreachable":
                word, o.unreachable = "unreachable", True
                o.failures.append(f"{task}: {res.get('msg', '')}".strip())
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                word = "failed"
                o.failures.append(f"{task}: {res.get('msg') or res.get('stderr', '')}".strip()[:TOOL_OUTPUT_CHARS])
            elif kind == "runner_on_skipped":
                word = "skipped"
            else:
                return True
            progress(f"{host}: {task}: {word}")
        elif kind == "playbook_on_stats":
            for h in set(data.get("processed", {})) | set(data.get("dark", {})):
                o = run.hosts.setdefault(h, HostOutcome())
                o.ok, o.changed = data.get("ok", {}).get(h, 0), data.get("changed", {}).get(h, 0)
                o.failed = data.get("failures", {}).get(h, 0) + data.get("dark", {}).get(h, 0)
                o.unreachable = o.unreachable or h in data.get("dark", {})
        return True

    if not shutil.which("ansible-playbook", path=_env(data_dir, ident)["PATH"]):
        raise InfraError("ansible-playbook not found (scripts/setup installs ansible-core into .venv)")
    try:
        r = ansible_runner.run(private_data_dir=str(data_dir), playbook=str(playbook), inventory=str(inventory),
                               limit=limit, extravars=extravars or {}, envvars=_env(data_dir, ident),
                               event_handler=on_event, quiet=True, ident="run")
    finally:
        shutil.rmtree(_control_dir(ident), ignore_errors=True)
    run.status = r.status
    if r.status not in ("successful", "failed") and not run.hosts:
        raise InfraError(f"ansible-playbook {name}: {r.status} (see {data_dir})")
    return run
