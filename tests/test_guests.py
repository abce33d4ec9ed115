"""The virtual lab: QEMU guests (TCG) of an Intel or AMD CPU model booting
Debian's packaged kernel, running the farm from this machine's files."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from support import REPO, farm_cmd

SMALL = {"duration": "2s", "topologies": ["direct-main", "hierarchy"]}
KERNEL_6_12 = "deb:linux-image-6.12.107+deb12-amd64-unsigned"  # its 9pnet needs netfs first; modules .ko.xz
KERNEL_CLOUD = "deb:linux-image-6.1.0-57-cloud-amd64-unsigned"  # no 9p at all: its guests get virtiofs


def lab_run(tmp_path, job, cpu_model, extra_env=None, kernel=None):
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state"), **(extra_env or {})}
    out = tmp_path / "result.json"
    p = subprocess.run(farm_cmd("lab", "run", str(job), "--cpu-model", cpu_model, "--json", str(out),
                                "--artifacts", str(tmp_path / "art"), *(["--kernel", kernel] if kernel else [])),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    return p, (json.loads(out.read_text()) if out.exists() else None)


def no_guest_left(tmp_path) -> bool:
    return (not list((tmp_path / "state" / "vlab" / "runs").iterdir()) and
            subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{tmp_path}"], capture_output=True).returncode == 1)


@pytest.mark.qemu
@pytest.mark.slow
def test_a_kernel_warning_mid_run_is_a_finding_the_engine_reads_from_dev_kmsg(tmp_path, job_file, monkeypatch):
    """A real WARN in the guest's kernel while `farm run` runs there: the
    engine's own /dev/kmsg reader reports it (the guest's run ends normally
    and its result.json is used; the console is never read). The guest runs
    a cloud kernel, which has no 9p: its shares are virtiofs."""
    from support.guest_kmod import WARN_FUNCTION, build_warn_module
    from farm.guests.qemu import resolve_kernel
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path / "state"))
    release = resolve_kernel(KERNEL_CLOUD).release
    module = build_warn_module(release, tmp_path / "kmod")
    job = job_file(duration="2s", topologies=["direct-main"], checks=["oracle", "kmsg"])
    p, r = lab_run(tmp_path, job, "EPYC-Milan", {"FARM_LAB_FAULT": f"insmod:{module}"}, kernel=KERNEL_CLOUD)
    assert r is not None, p.stdout + p.stderr
    assert (p.returncode, r["verdict"]) == (1, "fail"), p.stdout + p.stderr
    assert [(f["kind"], f["signature"]) for f in r["findings"]] == [("kernel-warning", f"WARNING in {WARN_FUNCTION}")]
    assert re.fullmatch(r".*/farm_warn\.c:\d+", r["findings"][0]["detail"]["file"])
    # the engine's run in the guest finished and wrote it: its stats and its kmsg artifact, no host-lost
    assert r["stats"]["tail_calls_verified"] > 0
    assert (r["host"]["hostname"], r["host"]["kernel"]) == ("vm-epyc-milan", release)
    assert "WARNING: CPU:" in (tmp_path / "art" / r["artifacts"]["kmsg"]).read_text()
    assert "virtiofs" in (tmp_path / "art" / "console.log").read_text()
    assert no_guest_left(tmp_path)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("fault, line", [
    ("module-order", r"farm-init: set-up failed: insmod 9p: insmod: can't insert '/modules/9p\.ko': "
                     r"unknown symbol in module, or unknown parameter"),
    ("no-xchg", r"farm-init: set-up failed: no exchange dir /\S+: mount: mounting farmxchg on /root/\S+ failed: .+"),
])
def test_a_guest_that_farm_failed_to_set_up_is_exit_3_with_the_guests_own_line(tmp_path, job_file, fault, line):
    p, r = lab_run(tmp_path, job_file(**SMALL), "Icelake-Server", {"FARM_LAB_FAULT": f"setup:{fault}"})
    assert p.returncode == 3, p.stdout + p.stderr
    [err] = p.stderr.strip().splitlines()
    assert re.search(line, err), err
    assert r is None  # no result, so no finding against the kernel (no host-lost)
    assert re.search(line, (tmp_path / "art" / "console.log").read_text())
    assert no_guest_left(tmp_path)


@pytest.mark.qemu
@pytest.mark.slow
def test_a_guest_kernel_crash_mid_job_is_a_kernel_oops_and_one_host_lost(tmp_path, job_file):
    p, r = lab_run(tmp_path, job_file(**SMALL), "Icelake-Server", {"FARM_LAB_FAULT": "sysrq-crash"})
    assert p.returncode == 1, p.stdout + p.stderr
    kinds = [f["kind"] for f in r["findings"]]
    assert kinds.count("host-lost") == 1
    oops = [f for f in r["findings"] if f["kind"] == "kernel-oops"]
    assert oops and oops[0]["signature"] == "kernel panic: sysrq triggered crash in sysrq_handle_crash"
    assert r["host"]["cpu_model"] == "Icelake-Server"
    # its cell is named from the guest's own cmdline; its paths are unknown, never guessed
    cell = r["host"]["cell"]
    assert (cell["name"], cell["requested"], cell["vulnerabilities"]) == ("default", False, {})
    assert cell["cmdline"].startswith("console=ttyS0") and cell["indirect_jump"].startswith("unknown: ")
    assert no_guest_left(tmp_path)


def test_guest_modules_load_after_what_they_need_and_built_in_ones_are_skipped(tmp_path):
    """Pure logic, on a modules dir laid out like 6.12's (9pnet needs netfs; virtio built in);
    without 9p (as in Debian's cloud kernels) the guest's shares are virtiofs."""
    from farm.errors import InfraError
    from farm.guests.modules import GUEST_MODULES, ModuleTree
    from farm.guests.shares import transport
    deps = {"kernel/fs/9p/9p.ko.xz": ["kernel/net/9p/9pnet.ko.xz", "kernel/fs/netfs/netfs.ko.xz"],
            "kernel/net/9p/9pnet_virtio.ko.xz": ["kernel/net/9p/9pnet.ko.xz"],
            "kernel/net/9p/9pnet.ko.xz": ["kernel/fs/netfs/netfs.ko.xz"],
            "kernel/fs/netfs/netfs.ko.xz": [],
            "kernel/drivers/net/virtio_net.ko.xz": ["kernel/drivers/net/net_failover.ko.xz",
                                                    "kernel/net/core/failover.ko.xz"],
            "kernel/drivers/net/net_failover.ko.xz": ["kernel/net/core/failover.ko.xz"],
            "kernel/net/core/failover.ko.xz": [],
            "kernel/fs/overlayfs/overlay.ko.xz": []}
    for path in deps:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    (tmp_path / "modules.dep").write_text("".join(f"{m}: {' '.join(d)}\n" for m, d in deps.items()))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    assert ModuleTree(tmp_path).load_order(GUEST_MODULES["9p"]) == ["failover", "net_failover", "virtio_net", "netfs", "9pnet",
                                                 "9pnet_virtio", "9p", "overlay"]
    assert transport(ModuleTree(tmp_path).loadable) == "9p"
    (tmp_path / "kernel/fs/netfs/netfs.ko.xz").unlink()
    with pytest.raises(InfraError, match=r"no module netfs, built in or loadable \(needed by 9pnet <- 9pnet_virtio\)"):
        ModuleTree(tmp_path).load_order(GUEST_MODULES["9p"])
    for path in ("kernel/fs/9p/9p.ko.xz", "kernel/net/9p/9pnet_virtio.ko.xz"):  # a cloud kernel's lot
        (tmp_path / path).unlink()
    assert transport(ModuleTree(tmp_path).loadable) == "virtiofs"


def test_kernel_packages_are_told_apart_from_the_rest_and_carry_their_upstream_release():
    from farm.guests.kernels import IMAGE_PACKAGE, parse_show, upstream_of
    assert IMAGE_PACKAGE.fullmatch("linux-image-6.1.0-57-amd64-unsigned")["abi"] == "6.1.0-57"
    assert IMAGE_PACKAGE.fullmatch("linux-image-6.12.107+deb12-cloud-amd64")["flavour"] == "cloud-amd64"
    for not_an_image in ("linux-image-amd64", "linux-image-6.1.0-57-amd64-dbg", "linux-image-6.1.0-57-arm64",
                         "linux-image-amd64-signed-template"):
        assert not IMAGE_PACKAGE.fullmatch(not_an_image), not_an_image
    assert upstream_of("6.1.170-3") == "6.1.170"
    assert upstream_of("6.12.107-1~deb12u1") == "6.12.107"
    assert upstream_of("1:6.1.170-3") == "6.1.170"
    show = "Package: a\nVersion: 6.1.170-3\nArchitecture: amd64\n\nPackage: b\nVersion: 6.12.107-1~deb12u1\n"
    assert parse_show(show) == {"a": "6.1.170-3", "b": "6.12.107-1~deb12u1"}


@pytest.mark.slow
def test_farm_lab_kernels_lists_what_apt_offers_and_what_the_lab_has_unpacked(tmp_path):
    """From the real package archive (apt-cache): the 6.12 image the virtual
    lab boots is listed with its upstream release, and it counts as cached
    exactly when the lab's kernel cache holds it unpacked."""
    state = tmp_path / "state"
    env = {**os.environ, "FARM_STATE_DIR": str(state)}

    def listed() -> dict:
        p = subprocess.run(farm_cmd("lab", "kernels", "--json"), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return {k["package"]: k for k in json.loads(p.stdout)}
    package = KERNEL_6_12.removeprefix("deb:")
    kernels = listed()
    assert kernels[package]["upstream"] == "6.12.107" and kernels[package]["cached"] is False
    assert kernels[package]["flavour"] == "amd64" and kernels[package]["signed"] is False
    assert {k["flavour"] for k in kernels.values()} == {"amd64", "cloud-amd64", "rt-amd64"}
    assert all(k["upstream"].startswith(("6.1.", "6.12.")) for k in kernels.values())
    (state / "vlab" / "kernels" / package).mkdir(parents=True)
    (state / "vlab" / "kernels" / package / "ok").touch()  # what resolve_kernel leaves once unpacked
    assert listed()[package]["cached"] is True
