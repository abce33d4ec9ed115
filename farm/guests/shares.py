"""How a guest sees this machine's `/` (read-only) and its exchange dir
(read-write): virtio-9p where the kernel has it, else virtiofs (Debian's
cloud kernels build no 9p).

9p is served by QEMU itself. virtiofs needs one virtiofsd per share, started
before QEMU and stopped after it; QEMU 7.2's virtiofsd has no read-only mode,
so the root share is a read-only bind of `/` in a mount namespace of its own.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from farm.errors import InfraError

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
ROOT_TAG, XCHG_TAG = "hostroot", "farmxchg"
SOCKET_WAIT_S = 10  # virtiofsd creates its socket at once; a slow start on a busy host


def transport(loadable) -> str:
    """"9p" when the kernel can load 9p over virtio, else "virtiofs"."""
    return "9p" if loadable("9pnet_virtio") and loadable("9p") else "virtiofs"


def guest_mounts(kind: str) -> tuple[str, str]:
    """The init's mount commands for the root share (at /host) and the exchange dir (at /root$xchg)."""
    if kind == "9p":
        opts = "trans=virtio,version=9p2000.L,msize=262144"
        return (f"mount -t 9p -o {opts},ro {ROOT_TAG} /host", f"mount -t 9p -o {opts} {XCHG_TAG} /root$xchg")
    return f"mount -t virtiofs -o ro {ROOT_TAG} /host", f"mount -t virtiofs {XCHG_TAG} /root$xchg"


class Shares:
    """The shares of one guest boot: start() gives QEMU's arguments, stop() ends what it started."""

    def __init__(self, kind: str, xchg: Path, memory_mb: int, with_xchg: bool = True):
        self.kind, self.xchg, self.memory_mb, self.with_xchg = kind, xchg, memory_mb, with_xchg
        self.procs: list[subprocess.Popen] = []
        self.dir: Path | None = None  # virtiofsd's sockets and views: short, a socket path has 108 bytes

    def start(self) -> list[str]:
        if self.kind == "9p":
            args = ["-virtfs", f"local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"]
            if self.with_xchg:
                args += ["-virtfs", f"local,path={self.xchg},mount_tag={XCHG_TAG},security_model=none,multidevs=remap"]
            return args
        if not Path(VIRTIOFSD).exists() or not shutil.which("unshare"):
            raise InfraError(f"this kernel has no 9p, and virtiofs needs {VIRTIOFSD} (apt-get install qemu-system-x86) "
                             "and unshare")
        # vhost-user: the guest's RAM must be shareable with virtiofsd
        args = ["-object", f"memory-backend-memfd,id=mem,size={self.memory_mb}M,share=on", "-numa", "node,memdev=mem"]
        shares = [(ROOT_TAG, Path("/"), True)] + ([(XCHG_TAG, self.xchg, False)] if self.with_xchg else [])
        self.dir = Path(tempfile.mkdtemp(prefix="farm-vfs-"))
        try:
            for n, (tag, source, read_only) in enumerate(shares):
                sock = self._serve(tag, source, read_only)
                args += ["-chardev", f"socket,id=fs{n},path={sock}", "-device",
                         f"vhost-user-fs-pci,chardev=fs{n},tag={tag}"]
        except BaseException:
            self.stop()
            raise
        return args

    def _serve(self, tag: str, source: Path, read_only: bool) -> Path:
        """One virtiofsd serving source (a bind of it, read-only if asked) on a socket in self.dir."""
        where = self.dir / tag
        view, sock, log = where / "view", where / "sock", where / "log"
        view.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        q = shlex.quote
        # the bind exists only in virtiofsd's own mount namespace: here, view stays an empty dir
        script = (f"mount --bind {q(str(source))} {q(str(view))} && "
                  + (f"mount -o remount,bind,ro {q(str(view))} && " if read_only else "")
                  + f"exec {VIRTIOFSD} --socket-path={q(str(sock))} -o source={q(str(view))} -o cache=none "
                  "-o sandbox=chroot")
        with open(log, "wb") as out:
            p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                 stdout=out, stderr=out, start_new_session=True)
        self.procs.append(p)
        deadline = time.monotonic() + SOCKET_WAIT_S
        while not sock.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise InfraError(f"virtiofsd for {source} did not start: "
                                 f"{log.read_text(errors='replace').strip()[-300:] or 'no socket'}")
            time.sleep(0.05)
        return sock

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if self.dir is None:
            return
        for tag in (ROOT_TAG, XCHG_TAG):  # file by file, never rmtree: view held a bind of /
            for name in ("sock", "log"):
                (self.dir / tag / name).unlink(missing_ok=True)
            for d in (self.dir / tag / "view", self.dir / tag):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
        self.dir.rmdir()
        self.dir = None
