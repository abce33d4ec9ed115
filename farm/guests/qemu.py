"""Virtual hosts: QEMU guests (TCG) with an emulated Intel or AMD CPU model,
booting a packaged kernel with a busybox initramfs.

The guest sees this machine's root read-only over virtio-9p (virtiofs for a
kernel without 9p), made writable with overlayfs on tmpfs, so it runs this
machine's Python, venv, bpftool and clang. A second share, read-write, is the
run's exchange dir: mounted in
the guest at the same path as here, it carries the command in and the
results out. User-mode networking: the guest reaches this machine's loopback
services at 10.0.2.2, and nothing else of this machine.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from farm.config import state_dir
from farm.detect.kmsg import KmsgRecord
from farm.errors import BadInput, InfraError
from farm.guests.debs import Kernel, kernel_from_deb
from farm.guests.kcache import cached_size
from farm.guests.modules import GUEST_MODULES, ModuleTree, read_module
from farm.guests.shares import Shares, guest_mounts, transport

DEFAULT_KERNEL = "deb:linux-image-amd64"
CPU_MODELS = {"intel": "Icelake-Server", "amd": "EPYC-Milan"}
# One host thread for all vCPUs: QEMU 7.2's multi-threaded TCG can run a stale
# translation of code the guest is patching (text_poke's int3), and the guest
# then dies of a spurious "Oops: int3" (seen booting 6.12): never a finding.
TCG = "tcg,thread=single"
# What the guest's init prints when farm's own set-up of the guest failed:
# the host tells it from a kernel crash by this line (exit 3, never a finding).
SETUP_FAILED = "farm-init: set-up failed:"
# Test-only: break the guest's set-up on purpose, to see it reported as such.
SETUP_FAULTS = ("module-order", "no-xchg")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
fail() { echo "@SETUP_FAILED@ $*"; sync; reboot -f; }
mkdir -p /proc /sys /dev /host /rw /root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
xchg=$(sed -n 's/.*farm.xchg=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$xchg" ] || fail "no farm.xchg= on the kernel command line"
for m in $(cat /modules.order); do out=$(insmod /modules/$m.ko 2>&1) || fail "insmod $m: $out"; done
out=$(@MOUNT_ROOT@ 2>&1) || fail "no root share: $out"
mount -t tmpfs -o size=75% tmpfs /rw; mkdir -p /rw/upper /rw/work
out=$(mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /root 2>&1) || fail "overlay root: $out"
hn=$(sed -n 's/.*farm.hostname=\([^ ]*\).*/\1/p' /proc/cmdline); [ -n "$hn" ] && hostname "$hn"
ip link set lo up; ip link set eth0 up 2>/dev/null
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null; ip route add default via 10.0.2.2 2>/dev/null
for d in proc sys dev; do mount --move /$d /root/$d; done
# /tmp stays the overlay's: a checkout or venv under /tmp must be seen too
mount -t bpf bpf /root/sys/fs/bpf; mount -t tmpfs tmpfs /root/run
mkdir -p /root/dev/shm; mount -t tmpfs tmpfs /root/dev/shm  # multiprocessing's semaphores
# the exchange dir last, at its path on the host
mkdir -p /root$xchg
out=$(@MOUNT_XCHG@ 2>&1) || fail "no exchange dir $xchg: $out"
[ -f /root$xchg/run.sh ] || fail "the exchange dir $xchg holds no run.sh"
echo "farm-init: running $xchg/run.sh"
chroot /root /bin/sh $xchg/run.sh > /root$xchg/run.log 2>&1
echo $? > /root$xchg/exit
sync
echo "farm-init: done"
reboot -f
""".replace("@SETUP_FAILED@", SETUP_FAILED)


def init_script(share_kind: str) -> str:
    """The guest's /init, mounting its shares over 9p or virtiofs."""
    mount_root, mount_xchg = guest_mounts(share_kind)
    return INIT.replace("@MOUNT_ROOT@", mount_root).replace("@MOUNT_XCHG@", mount_xchg)


def _cache() -> Path:
    d = state_dir() / "vlab"
    d.mkdir(parents=True, exist_ok=True)
    return d


def resolve_kernel(spec: str = DEFAULT_KERNEL, modules: str | None = None) -> Kernel:
    """deb:PACKAGE (fetched with apt-get download, unpacked once into the
    kernel cache, marked in use by this process) or a bzImage path with its
    modules dir."""
    if spec.startswith("deb:"):
        return kernel_from_deb(spec[4:])
    image = Path(spec)
    if not image.is_file():
        raise BadInput(f"--kernel: {spec} is neither deb:PACKAGE nor a kernel image")
    if not modules or not Path(modules).is_dir():
        raise BadInput("--kernel PATH needs --modules DIR (the lib/modules/<release> of that kernel)")
    return Kernel(image, Path(modules), Path(modules).name)


def kernel_cached(package: str) -> bool:
    """Whether the image package is downloaded and unpacked in the lab's cache."""
    return cached_size(package) is not None


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); directories have no data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
    return out.getvalue()


def share_kind(kernel: Kernel) -> str:
    """How this kernel's guest gets its shares: "9p", else "virtiofs"."""
    return transport(ModuleTree(kernel.modules).loadable)


def initramfs(kernel: Kernel, setup_fault: str | None = None) -> Path:
    """busybox, the modules the guest needs (virtio, 9p or virtiofs,
    overlay and what they depend on, in dependency order) and our init.
    Built once per content (see _initramfs_key) and shared by every run and
    guest: with the kernel's cache entry (evicted with it), else in
    <state>/vlab/initramfs/."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise InfraError("busybox not found (apt-get install busybox-static)")
    tree = ModuleTree(kernel.modules)
    kind = transport(tree.loadable)
    order = tree.load_order(GUEST_MODULES[kind])
    if setup_fault == "module-order":
        order.reverse()  # each module before what it needs: insmod fails on an unknown symbol
    init = init_script(kind)
    where = kernel.cache_entry or _cache() / "initramfs"
    out = where / f"initramfs-{kernel.release}-{_initramfs_key(kernel, init, order, tree, busybox)}.cpio.gz"
    if out.exists():
        return out
    entries = [(d, 0o40755, b"") for d in ("bin", "modules", "proc", "sys", "dev", "host", "rw", "root")]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("init", 0o100755, init.encode()))
    entries += [(f"modules/{m}.ko", 0o100644, read_module(tree.files[m])) for m in order]
    entries.append(("modules.order", 0o100644, ("\n".join(order) + "\n").encode()))
    where.mkdir(parents=True, exist_ok=True)
    # a temp file of our own, renamed into place: guests building it at once each write a whole one
    fd, tmp = tempfile.mkstemp(dir=where, prefix=".initramfs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(_cpio_newc(entries), 6))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep it from QEMU run by another user
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _initramfs_key(kernel: Kernel, init: str, order: list[str], tree: ModuleTree, busybox: Path) -> str:
    """A stable digest (Python's str hash changes from process to process) of
    everything in the image: the init script (share kind), the module order
    (set-up faults reverse it), each module's bytes and busybox's."""
    h = hashlib.sha256(f"{kernel.release}\0{init}\0{' '.join(order)}\0".encode())
    for m in order:
        h.update(hashlib.sha256(tree.files[m].read_bytes()).digest())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    return h.hexdigest()[:16]


@dataclass
class GuestRun:
    exit_code: int | None  # the command's, or None when the guest died first
    console: str
    log: str
    timed_out: bool

    @property
    def setup_error(self) -> str | None:
        """The guest init's own line when farm's set-up of the guest failed."""
        return setup_failure(self.console) if self.exit_code is None else None


def setup_failure(console: str) -> str | None:
    """The set-up failure line the guest's init printed on its console, if any."""
    for line in console.splitlines():
        at = line.find(SETUP_FAILED)
        if at >= 0:
            return line[at:].strip()
    return None


def guest_shares(kernel: Kernel, xchg: Path, memory_mb: int, setup_fault: str | None = None) -> Shares:
    """The shares of one boot of a guest of this kernel (start them, then stop them after QEMU)."""
    if setup_fault is not None and setup_fault not in SETUP_FAULTS:
        raise ValueError(f"unknown set-up fault {setup_fault!r}")
    return Shares(share_kind(kernel), xchg, memory_mb, with_xchg=setup_fault != "no-xchg")


def qemu_command(xchg: Path, cpu_model: str, kernel: Kernel, smp: int, memory_mb: int, hostname: str,
                 console_path: Path, share_args: list[str], ssh_port: int | None = None,
                 setup_fault: str | None = None, append: str = "") -> list[str]:
    """The qemu-system-x86_64 command line of one guest (TCG), with its
    shares' arguments (Shares.start()); append: more kernel boot arguments
    (a mitigation cell's, checked by farm.cells); setup_fault (tests only,
    one of SETUP_FAULTS) breaks the guest's set-up on purpose."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise InfraError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    netdev = "user,id=n0" + (f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22" if ssh_port else "")
    return [qemu, "-accel", TCG, "-cpu", cpu_model, "-smp", str(smp), "-m", str(memory_mb),
            "-kernel", str(kernel.image), "-initrd", str(initramfs(kernel, setup_fault)),
            "-append", f"console=ttyS0 panic=-1 oops=panic farm.xchg={xchg} farm.hostname={hostname}"
                       + (f" {append}" if append else ""),
            *share_args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
            "-display", "none", "-no-reboot", "-serial", f"file:{console_path}", "-monitor", "none"]


def run_in_guest(script: str, xchg: Path, cpu_model: str, kernel: Kernel, smp: int = 2,
                 memory_mb: int = 2048, timeout_s: float = 600, console_path: Path | None = None,
                 hostname: str = "farm-guest", setup_fault: str | None = None, append: str = "") -> GuestRun:
    """Boot a guest, run `script` (sh) in it, power off; xchg is shared rw."""
    xchg.mkdir(parents=True, exist_ok=True)
    (xchg / "run.sh").write_text(script)
    (xchg / "exit").unlink(missing_ok=True)
    console_path = console_path or xchg / "console.log"
    shares = guest_shares(kernel, xchg, memory_mb, setup_fault)
    timed_out = False
    try:
        cmd = qemu_command(xchg, cpu_model, kernel, smp, memory_mb, hostname, console_path, shares.start(),
                           setup_fault=setup_fault, append=append)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        shares.stop()
    exit_file = xchg / "exit"
    code = int(exit_file.read_text().strip()) if exit_file.exists() else None
    log = (xchg / "run.log").read_text(errors="replace") if (xchg / "run.log").exists() else ""
    return GuestRun(code, console_path.read_text(errors="replace") if console_path.exists() else "", log,
                    timed_out)


_CONSOLE = re.compile(r"^\[\s*(\d+)\.(\d+)\]\s?(.*)$")


def console_records(console: str) -> list[KmsgRecord]:
    """Kernel lines of a serial console as records the crash classifier reads."""
    out = []
    for i, line in enumerate(console.splitlines()):
        m = _CONSOLE.match(line.rstrip("\r"))
        if m:
            out.append(KmsgRecord(seq=i, ts_us=int(m.group(1)) * 10**6 + int(m.group(2)[:6].ljust(6, "0")),
                                  prio=4, facility=0, text=m.group(3)))
    return out

