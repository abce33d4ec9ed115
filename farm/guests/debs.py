"""Debian kernel packages for guests: fetched with `apt-get download`,
unpacked with `dpkg-deb -x`, trimmed to what a guest needs and landed in the
kernel cache (farm.guests.kcache) once for every run on this machine."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from farm.config import kernel_cache_max
from farm.errors import BadInput, InfraError
from farm.guests import kcache
from farm.guests.modules import GUEST_MODULES, ModuleTree

# every module either share kind needs: a trimmed package keeps these and what they depend on
GUEST_WANTED = tuple(sorted({m for mods in GUEST_MODULES.values() for m in mods}))
TRIM = ",".join(GUEST_WANTED)  # an entry's ok says which set it was trimmed for
_MODULE_FILE = re.compile(r".*\.ko(\.xz|\.gz|\.zst)?")


@dataclass
class Kernel:
    image: Path
    modules: Path  # the lib/modules/<release> dir
    release: str
    cache_entry: Path | None = None  # its kernel cache entry (for a deb: kernel): its initramfs images go there


def kernel_from_deb(package: str) -> Kernel:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", package):
        raise BadInput(f"--kernel: bad package name {package!r}")
    cap = kernel_cache_max()  # a bad FARM_KERNEL_CACHE_MAX is refused before anything is fetched
    # a metapackage (linux-image-amd64) points at the real image package
    deps = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True)
    real = next((ln.split(":", 1)[1].strip() for ln in deps.stdout.splitlines()
                 if ln.strip().startswith("Depends:") and "linux-image-" in ln), package)
    entry = kcache.kernels_dir() / real
    if not kcache.use(entry, TRIM):
        unpacked = kcache.new_unpack_dir(real)
        try:
            _fetch(real, unpacked)
            kcache.land(unpacked, entry, TRIM)
        except BaseException:
            shutil.rmtree(unpacked, ignore_errors=True)
            raise
        kcache.evict(cap)  # this one is in use by us now: it stays
    return _kernel_in(entry / "x", real, entry)


def _fetch(package: str, into: Path) -> None:
    p = subprocess.run(["apt-get", "download", "-q", package], cwd=into, capture_output=True, text=True)
    debs = list(into.glob("*.deb"))
    if p.returncode != 0 or not debs:
        raise InfraError(f"apt-get download {package} failed: {p.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(into / "x")], check=True)
    debs[0].unlink()
    kernel = _kernel_in(into / "x", package, None)
    trim(kernel.modules)
    (into / "ok").write_text(TRIM + "\n")


def _kernel_in(x: Path, package: str, entry: Path | None) -> Kernel:
    images = sorted((x / "boot").glob("vmlinuz-*"))
    if not images:
        raise InfraError(f"{package} holds no vmlinuz")
    release = images[0].name[len("vmlinuz-"):]
    # older packages ship /lib/modules, merged-/usr ones /usr/lib/modules
    modules = next((d for d in (x / "lib" / "modules" / release, x / "usr" / "lib" / "modules" / release)
                    if d.is_dir()), None)
    if modules is None:
        raise InfraError(f"{package} holds no lib/modules/{release}")
    return Kernel(images[0], modules, release, entry)


def trim(modules: Path) -> None:
    """Drop the module files no guest loads: all but the guest's modules and
    what they depend on (6.1's 4023 modules take ~390 of the package's 400 MB).
    The modules.* lists, vmlinuz, config and changelog stay, so the module
    order and the share kind come out as from the whole package."""
    tree = ModuleTree(modules)
    keep = {tree.files[n] for n in tree.closure(GUEST_WANTED)}
    for dirpath, _, filenames in os.walk(modules, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            if _MODULE_FILE.fullmatch(name) and path not in keep:
                path.unlink()
        if dirpath != str(modules) and not os.listdir(dirpath):
            os.rmdir(dirpath)
