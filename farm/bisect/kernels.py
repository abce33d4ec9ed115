"""The packaged kernels a bisection steps through: every kernel image
package of the good and bad ends' flavour and signedness between them
(both included), ordered by Debian package version, older first. The list
of packages is farm.guests.kernels' (what `farm lab kernels` prints)."""
from __future__ import annotations

import functools
import subprocess

from farm.errors import BadInput, InfraError, shown
from farm.guests.kernels import IMAGE_PACKAGE, KernelPackage


def package_of(spec: str, flag: str) -> str:
    """deb:PACKAGE -> PACKAGE (bad input otherwise)."""
    if not spec.startswith("deb:") or not IMAGE_PACKAGE.fullmatch(spec[4:]):
        raise BadInput(f"{flag}: {shown(spec)} is not deb:linux-image-<abi>-<flavour>[-unsigned] "
                       f"(farm lab kernels lists them)")
    return spec[4:]


def compare_versions(a: str, b: str) -> int:
    """Debian version order (dpkg --compare-versions): -1, 0 or 1."""
    if a == b:
        return 0
    try:
        p = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"dpkg --compare-versions failed: {e}") from None
    if p.returncode not in (0, 1):
        raise InfraError(f"dpkg --compare-versions {a} lt {b}: {p.stderr.decode(errors='replace').strip()}")
    if p.returncode == 0:
        return -1
    p = subprocess.run(["dpkg", "--compare-versions", a, "eq", b], capture_output=True, timeout=30)
    return 0 if p.returncode == 0 else 1


def packages_between(good: str, bad: str, available: list[KernelPackage],
                     compare=compare_versions) -> list[KernelPackage]:
    """The packages from one end to the other, older first (bad input:
    unknown package, good == bad, different flavours or signedness)."""
    if good == bad:
        raise BadInput(f"--good and --bad are the same package ({good})")
    by_name = {k.package: k for k in available}
    for flag, name in (("--good", good), ("--bad", bad)):
        if name not in by_name:
            raise BadInput(f"{flag}: no kernel image package {name} in the archive (farm lab kernels lists them)")
    g, b = by_name[good], by_name[bad]
    if (g.flavour, g.signed) != (b.flavour, b.signed):
        def kind(k):
            return f"{k.flavour}{'' if k.signed else '-unsigned'}"
        raise BadInput(f"--good is {kind(g)} and --bad {kind(b)}: bisect between packages of one flavour")
    same = [k for k in available if (k.flavour, k.signed) == (g.flavour, g.signed)]
    ordered = sorted(same, key=functools.cmp_to_key(lambda x, y: compare(x.version, y.version)))
    lo, hi = sorted((ordered.index(g), ordered.index(b)))
    return ordered[lo:hi + 1]
