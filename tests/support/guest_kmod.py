"""A kernel module of the tests' own for a guest kernel: it WARNs as it
loads, as lkdtm's WARNING test does (Debian builds no lkdtm). It loads
successfully: busybox insmod retries a module whose init failed (finit_module,
then init_module), which would WARN twice. Built against that kernel's
headers, fetched with apt."""
from __future__ import annotations

import subprocess
from pathlib import Path

WARN_MODULE = "farm_warn"
WARN_FUNCTION = f"{WARN_MODULE}_init"
SOURCE = f"""#include <linux/module.h>
#include <linux/bug.h>

static int __init {WARN_FUNCTION}(void)
{{
\tWARN(1, "{WARN_MODULE}: a deliberate warning from the farm's tests");
\treturn 0;
}}
module_init({WARN_FUNCTION});
MODULE_LICENSE("GPL");
"""


def _header_packages(release: str) -> list[str]:
    """linux-headers-RELEASE and what it needs to build a module: the common headers and kbuild."""
    package = f"linux-headers-{release}"
    deps = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True, check=True).stdout
    needed = {ln.split(":", 1)[1].strip() for ln in deps.splitlines() if ln.strip().startswith("Depends:")}
    return [package] + sorted(d for d in needed if d.startswith(("linux-headers-", "linux-kbuild-")))


def build_warn_module(release: str, workdir: Path) -> Path:
    """farm_warn.ko for kernel `release`, built in workdir."""
    root = workdir / "headers"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "-q", *_header_packages(release)], cwd=root, check=True,
                   capture_output=True)
    for deb in root.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    build = root / "usr" / "src" / f"linux-headers-{release}"
    # the packages' Makefile includes the common headers by their installed, absolute path
    makefile = build / "Makefile"
    makefile.write_text(makefile.read_text().replace("/usr/src/", f"{root}/usr/src/"))
    src = workdir / WARN_MODULE
    src.mkdir(exist_ok=True)
    (src / f"{WARN_MODULE}.c").write_text(SOURCE)
    (src / "Makefile").write_text(f"obj-m := {WARN_MODULE}.o\n")
    # no BTF for it: that needs pahole, and nothing here reads a test module's BTF
    p = subprocess.run(["make", "-C", str(build), f"M={src}", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return src / f"{WARN_MODULE}.ko"
