"""The amd64 kernel images Debian's archive offers (what `--kernel
deb:PACKAGE` can boot), with the upstream version each carries and whether
the lab has it unpacked already (and in how many bytes). `farm lab kernels` prints them."""
from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass

from farm.errors import InfraError

# linux-image-<abi>-<flavour>[-unsigned]: 6.1.0-57-amd64, 6.12.107+deb12-cloud-amd64-unsigned
IMAGE_PACKAGE = re.compile(r"linux-image-(?P<abi>\d+\.\d+\.\d+(?:-\d+)?(?:\+deb\d+)?)-"
                           r"(?P<flavour>amd64|cloud-amd64|rt-amd64)(?P<unsigned>-unsigned)?")


@dataclass(frozen=True)
class KernelPackage:
    package: str
    abi: str        # the kernel's ABI name: 6.1.0-57, 6.12.107+deb12
    flavour: str    # amd64, cloud-amd64, rt-amd64
    signed: bool
    version: str    # the package's: 6.1.192-1
    upstream: str   # the kernel.org release it carries: 6.1.192
    cached: bool
    cached_bytes: int | None  # what it takes in the lab's kernel cache

    def to_dict(self) -> dict:
        return asdict(self)


def upstream_of(version: str) -> str:
    """6.1.170-3 -> 6.1.170; 6.12.107-1~deb12u1 -> 6.12.107 (epochs dropped)."""
    return version.split(":", 1)[-1].split("-", 1)[0]


def parse_show(text: str) -> dict[str, str]:
    """package -> version from `apt-cache show` stanzas."""
    versions, package = {}, None
    for line in text.splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1].strip()
        elif line.startswith("Version: ") and package:
            versions.setdefault(package, line.split(": ", 1)[1].strip())
    return versions


def _apt(*args: str) -> str:
    try:
        return subprocess.run(["apt-cache", *args], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"apt-cache {args[0]} failed: {e}") from None


def available_kernels(cached_size) -> list[KernelPackage]:
    """Every amd64 kernel image package with a candidate version, oldest
    first; cached_size(package) is its bytes in the lab's cache, None when not there."""
    names = [n for n in _apt("pkgnames", "linux-image-").split() if IMAGE_PACKAGE.fullmatch(n)]
    if not names:
        raise InfraError("apt-cache knows no linux-image packages: run apt-get update")
    versions = parse_show(_apt("show", "--no-all-versions", *names))
    found = []
    for name, version in versions.items():
        m = IMAGE_PACKAGE.fullmatch(name)
        if not m:
            continue
        size = cached_size(name)
        found.append(KernelPackage(name, m["abi"], m["flavour"], not m["unsigned"], version,
                                   upstream_of(version), size is not None, size))
    return sorted(found, key=lambda k: (_release_key(k.upstream), k.abi, k.flavour, k.signed))


def _release_key(upstream: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+~]", upstream))
