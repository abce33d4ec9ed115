"""`farm lab up`: a lab of QEMU guests, each running a real `farm worker`
against this machine's broker (reached at 10.0.2.2 from the guest), with an
sshd on a port forwarded from 127.0.0.1 for Ansible. A guest whose kernel
dies is seen on its serial console: its run is declared lost with the crash
report attached, and the guest is booted again to rejoin the lab."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from farm.bpf.toolchain import cache_root
from farm.config import ALLOW_CRASHES_ENV, REPO, broker_url, state_dir
from farm.detect.signature import classify
from farm.errors import BadInput, InfraError
from farm.guests.vrun import parse_fault
from farm.result import Finding
from farm.guests.qemu import (CPU_MODELS, console_records, guest_shares, qemu_command, resolve_kernel,
                              setup_failure)
from farm.guests.shares import Shares

DEFAULT_HOSTS = (f"vm-intel:{CPU_MODELS['intel']}", f"vm-amd:{CPU_MODELS['amd']}")
SSHD = "/usr/sbin/sshd"


def lab_dir() -> Path:
    return state_dir() / "vlab" / "lab"


@dataclass
class Guest:
    name: str
    cpu_model: str
    ssh_port: int
    pid: int = 0
    boots: int = 0
    seen_up: bool = False  # its worker heartbeated since this boot


def parse_hosts(items: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in items or DEFAULT_HOSTS:
        name, sep, model = item.partition(":")
        if not sep or not name or not model or not all(c.isalnum() or c == "-" for c in name):
            raise BadInput(f"--host {item!r}: use NAME:CPU_MODEL, e.g. vm-amd:EPYC-Milan")
        out.append((name, model))
    if len({n for n, _ in out}) != len(out):
        raise BadInput("--host: every guest needs its own name")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broker_for_guest(url: str) -> str:
    """The host's loopback broker, as the guest reaches it."""
    for local in ("127.0.0.1", "localhost"):
        if f"@{local}:" in url or f"//{local}:" in url:
            return url.replace(local, "10.0.2.2", 1)
    raise BadInput(f"the virtual lab's guests reach only this machine's loopback; broker is {url}")


class VirtualLab:
    def __init__(self, hosts: list[tuple[str, str]], kernel_spec: str, smp: int, memory_mb: int, say=print,
                 modules: str | None = None, append: str = ""):
        self.kernel = resolve_kernel(kernel_spec, modules)
        self.append = append  # every guest's extra boot arguments (a mitigation cell's)
        self.smp, self.memory, self.say = smp, memory_mb, say
        self.dir = lab_dir()
        self.guests = [Guest(n, m, _free_port()) for n, m in hosts]
        self.procs: dict[str, subprocess.Popen] = {}
        self.shares: dict[str, Shares] = {}  # each guest's, stopped once its QEMU has exited
        self.broker = _broker_for_guest(broker_url())
        self.setup_fault = parse_fault(os.environ.get("FARM_LAB_FAULT", ""))[1]  # tests only

    # keys and inventory ------------------------------------------------
    def _keys(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "id_farm"):
            if not (self.dir / key).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / key)],
                               check=True)

    def write_inventory(self, path: Path) -> None:
        hosts = {g.name: {"ansible_host": "127.0.0.1", "ansible_port": g.ssh_port, "ansible_user": "root",
                          "ansible_ssh_private_key_file": str(self.dir / "id_farm"),
                          "ansible_python_interpreter": "/usr/bin/python3",
                          "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                          "farm_notes": f"QEMU {g.cpu_model}, kernel {self.kernel.release}"}
                 for g in self.guests}
        groups = {"intel": {}, "amd": {}}
        for g in self.guests:
            vendor = "intel" if any(w in g.cpu_model.lower() for w in ("intel", "lake", "well", "bridge",
                                                                         "rapids", "nehalem", "westmere")) else "amd"
            groups[vendor][g.name] = hosts[g.name]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by `farm lab up`: the virtual lab's guests\n" + yaml.safe_dump(
            {"all": {"children": {k: {"hosts": v} for k, v in groups.items() if v}}}, sort_keys=False))

    # guests ------------------------------------------------------------
    def _sshd_files(self, xchg: Path) -> None:
        """The guest sees only its exchange dir of ours: its sshd's files go there."""
        for key in ("host_key", "id_farm.pub"):
            shutil.copy(self.dir / key, xchg / key)
        (xchg / "host_key").chmod(0o600)
        (xchg / "sshd_config").write_text(
            f"Port 22\nHostKey {xchg}/host_key\nAuthorizedKeysFile {xchg}/id_farm.pub\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\n")

    def _script(self, g: Guest, xchg: Path) -> str:
        env = {"FARM_BROKER_URL": self.broker, "FARM_STATE_DIR": f"{xchg}/state",
               "FARM_CACHE_DIR": str(cache_root()), "FARM_HEARTBEAT_TTL": os.environ.get("FARM_HEARTBEAT_TTL", "15"),
               "FARM_FACTS_OVERRIDE": json.dumps({"hostname": g.name}),
               ALLOW_CRASHES_ENV: "1"}  # a guest's crash is seen on its console and costs nothing
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return (f"mkdir -p /run/sshd; {SSHD} -f {xchg}/sshd_config -E {xchg}/sshd.log\n"
                f"cd {shlex.quote(str(REPO))}\nexport {exports}\n"
                f"exec {shlex.quote(sys.executable)} -m farm.cli worker > {xchg}/worker.log 2>&1\n")

    def boot(self, g: Guest) -> None:
        xchg = self.dir / g.name
        xchg.mkdir(parents=True, exist_ok=True)
        self._sshd_files(xchg)
        (xchg / "run.sh").write_text(self._script(g, xchg))
        (xchg / "exit").unlink(missing_ok=True)
        g.boots += 1
        g.seen_up = False
        console = xchg / f"console-{g.boots}.log"
        shares = self.shares[g.name] = guest_shares(self.kernel, xchg, self.memory, self.setup_fault)
        cmd = qemu_command(xchg, g.cpu_model, self.kernel, self.smp, self.memory, g.name, console, shares.start(),
                           g.ssh_port, self.setup_fault, self.append)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs[g.name], g.pid = p, p.pid
        self.say(f"{g.name}: booting {g.cpu_model} ({self.kernel.release}"
                 f"{', ' + self.append if self.append else ''}), ssh on 127.0.0.1:{g.ssh_port}")
        self._save()

    def _save(self) -> None:
        (self.dir / "lab.json").write_text(json.dumps(
            {"pid": os.getpid(), "kernel": self.kernel.release, "guests": [asdict(g) for g in self.guests]},
            indent=2))

    def up(self, inventory: Path) -> None:
        self._keys()
        for g in self.guests:
            self.boot(g)
        self.write_inventory(inventory)
        self.say(f"inventory: {inventory}")

    def check(self, on_crash, heartbeating) -> None:
        """A guest that exited: its console's reports go to on_crash, then it
        boots again. A guest whose worker stopped heartbeating while qemu
        still runs is hung: the watchdog kills it, reports a hang, reboots.
        A guest whose init says farm's set-up of it failed: InfraError."""
        for g in self.guests:
            p = self.procs.get(g.name)
            if p is None:
                continue
            hung = False
            if p.poll() is None:
                if heartbeating(g.name):
                    g.seen_up = True
                    continue
                if not g.seen_up:
                    continue  # still booting
                hung = True
                p.kill()
                p.wait()
            self.shares.pop(g.name).stop()
            console_path = self.dir / g.name / f"console-{g.boots}.log"
            console = console_path.read_text(errors="replace")
            if not hung and (why := setup_failure(console)):  # farm's fault, not the kernel's: no reboot loop
                raise InfraError(f"{g.name} ({g.cpu_model}, {self.kernel.release}) not set up: {why}; "
                                 f"console in {console_path}")
            crash = classify(console_records(console))
            if hung:
                crash.append(Finding("hang", "hang: guest", f"{g.name} ({g.cpu_model}) stopped answering; "
                                     "the lab's watchdog killed it", detail={"console": str(console)[-4000:]}))
            self.say(f"{g.name}: guest went down" + (f": {crash[0].signature}" if crash else ""))
            on_crash(g, crash)
            self.boot(g)

    def down(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for shares in self.shares.values():
            shares.stop()
        self.shares.clear()
        (self.dir / "lab.json").unlink(missing_ok=True)


def run_lab_up(hosts: list[str] | None, kernel_spec: str, smp: int, memory_mb: int, inventory: Path,
               say=print, modules: str | None = None, append: str = "") -> int:
    from farm.queue.app import app
    from farm.queue.lost import declare_lost
    from farm.queue.registry import Registry, connect
    from farm.queue.tasks import send_result

    old = _lab_record()
    if old:
        try:
            os.kill(old["pid"], 0)
            raise BadInput(f"a virtual lab is already up (pid {old['pid']}); `farm lab down` first")
        except ProcessLookupError:
            pass
    reg = Registry(connect(broker_url()))
    lab = VirtualLab(parse_hosts(hosts), kernel_spec, smp, memory_mb, say, modules, append)

    def on_crash(g: Guest, crash) -> None:
        run = reg.running(g.name)
        if run:
            why = "guest hung" if any(f.kind == "hang" for f in crash) else \
                "guest kernel died" if crash else "guest exited"
            declare_lost(reg, app, g.name, run, why, send_result, crash)
            reg.clear_running(g.name)
        elif crash:
            reg.note_loss(g.name)
        reg.forget_heartbeat(g.name)

    stop = {"now": False}

    def on_term(*_):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_term)
    try:
        lab.up(inventory)
        say("farm lab up: Ctrl-C or `farm lab down` stops the guests")
        while not stop["now"]:
            for g in lab.guests:  # the collector's reaper leaves these hosts to us
                reg.mark_managed(g.name, "vlab")
            lab.check(on_crash, reg.alive)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lab.down()
        say("farm lab: guests stopped")
    return 0


def _lab_record() -> dict | None:
    """What the running lab wrote about itself (lab.json), or None."""
    path = lab_dir() / "lab.json"
    return json.loads(path.read_text()) if path.exists() else None


def lab_status(say=print) -> int:
    lab = _lab_record()
    if lab is None:
        say("no virtual lab is up")
        return 0
    say(f"virtual lab (pid {lab['pid']}), kernel {lab['kernel']}")
    for g in lab["guests"]:
        alive = os.path.exists(f"/proc/{g['pid']}")
        say(f"  {g['name']:16} {g['cpu_model']:18} ssh 127.0.0.1:{g['ssh_port']:<6} "
            f"{'running' if alive else 'down'} (boots {g['boots']})")
    return 0


def lab_down(say=print) -> int:
    path = lab_dir() / "lab.json"
    lab = _lab_record()
    if lab is None:
        say("no virtual lab is up")
        return 0
    try:
        os.kill(lab["pid"], signal.SIGTERM)
    except ProcessLookupError:  # its owner is gone: stop the guests ourselves
        for g in lab["guests"]:
            try:
                os.kill(g["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        path.unlink(missing_ok=True)
    deadline = time.monotonic() + 60
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if path.exists():
        raise InfraError("the virtual lab did not stop within 60 s")
    say("virtual lab down")
    return 0
