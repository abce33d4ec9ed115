"""Test hosts in network namespaces made here: a veth pair each (addresses in
10.231.0.0/16 on this machine only) and, for reachable ones, an sshd of their
own with host and client keys generated for the test."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check)


class NetnsHost:
    def __init__(self, index: int, workdir: Path, client_key: Path, with_sshd: bool = True):
        tag = f"{os.getpid() % 10000}{index}"
        self.name, self.index = f"farmt{tag}", index
        self.ns, self.veth = f"farmt{tag}", f"fv{tag}"
        self.root_ip, self.ip = f"10.231.{index}.1", f"10.231.{index}.2"
        self.dir = workdir / self.name
        self.client_key, self.with_sshd = client_key, with_sshd
        self.sshd: subprocess.Popen | None = None

    def up(self) -> "NetnsHost":
        self.dir.mkdir(parents=True)
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth + "a", "type", "veth", "peer", "name", self.veth + "b")
        sh("ip", "link", "set", self.veth + "b", "netns", self.ns)
        sh("ip", "addr", "add", f"{self.root_ip}/24", "dev", self.veth + "a")
        sh("ip", "link", "set", self.veth + "a", "up")
        for cmd in (["ip", "addr", "add", f"{self.ip}/24", "dev", self.veth + "b"],
                    ["ip", "link", "set", self.veth + "b", "up"], ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", self.ns, *cmd)
        if self.with_sshd:
            self._start_sshd()
        return self

    def _start_sshd(self) -> None:
        host_key = self.dir / "host_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        auth = self.dir / "authorized_keys"
        shutil.copy(f"{self.client_key}.pub", auth)
        cfg = self.dir / "sshd_config"
        cfg.write_text(f"""ListenAddress {self.ip}
Port 22
HostKey {host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {auth}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation dir
        self.sshd = subprocess.Popen(["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(cfg)],
                                     stdout=open(self.dir / "sshd.log", "w"), stderr=subprocess.STDOUT)

    def listening(self) -> bool:
        p = sh("ip", "netns", "exec", self.ns, "ss", "-ltn", check=False)
        return f"{self.ip}:22" in p.stdout

    def down(self) -> None:
        if self.sshd and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(timeout=30)
        # processes a test started inside the namespace (a worker) go too
        for pid in sh("ip", "netns", "pids", self.ns, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "link", "del", self.veth + "a", check=False)
