"""A virtual lab of one Intel and one AMD guest, each a real farm worker:
jobs routed by vendor come back with the guests' facts; a guest kernel
crash mid-job is a kernel-oops plus exactly one host-lost, and the guest
rejoins."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from support import wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

# not hierarchy: on Debian's 6.1 (the guests' default kernel) it makes 63 tail calls, a finding (docs/virtual.md)
SMALL = {"duration": "2s", "topologies": ["direct-main"]}


@pytest.fixture
def vlab(lab, tmp_path):
    lab.collector()
    inventory = tmp_path / "virtual.yml"
    up = lab.start("lab", "up", "--host", "vm-intel:Icelake-Server", "--host", "vm-amd:EPYC-Milan",
                   "--inventory-out", str(inventory), log="lab-up")
    r = lab.redis.client()
    wait_for(lambda: all(r.exists(f"farm:hb:{h}") for h in ("vm-intel", "vm-amd")) or up.poll() is not None,
             "both guests' workers", 600, 0.5)
    assert up.poll() is None, lab.log("lab-up")
    yield lab, up, inventory
    if up.poll() is None:
        p = lab.farm("lab", "down")
        assert p.returncode == 0, p.stderr
        up.wait(timeout=120)
    assert subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{lab.state}"], capture_output=True).returncode == 1


@pytest.mark.qemu
@pytest.mark.slow
def test_jobs_routed_by_vendor_come_back_with_the_guests_facts(vlab, job_file, tmp_path):
    from farm.guests.qemu import resolve_kernel
    lab, _, inventory = vlab
    release = resolve_kernel().release
    for vendor, host, want in (("amd", "vm-amd", "AuthenticAMD"), ("intel", "vm-intel", "GenuineIntel")):
        out = tmp_path / f"{vendor}.json"
        p = lab.farm("submit", str(job_file(name=f"small-{vendor}", **SMALL)), "--where", f"vendor={vendor}",
                     "--wait", "--json", str(out), timeout=900)
        assert p.returncode == 0, p.stderr + lab.log("lab-up")
        [r] = json.loads(out.read_text())
        assert (r["verdict"], r["findings"]) == ("pass", [])
        assert (r["host"]["hostname"], r["host"]["vendor"], r["host"]["kernel"]) == (host, want, release)
        assert r["stats"]["tail_calls_verified"] > 0
    # the written inventory works for Ansible: facts read inside the guests over ssh
    p = lab.farm("lab", "facts", "--inventory", str(inventory), timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = json.loads(lab.farm("hosts", "--json").stdout)
    assert hosts["vm-amd"]["facts"]["vendor"] == "AuthenticAMD"
    assert hosts["vm-intel"]["facts"]["vendor"] == "GenuineIntel"
    assert hosts["vm-amd"]["facts"]["kernel"] == release


@pytest.mark.qemu
@pytest.mark.slow
def test_a_guest_kernel_crash_mid_job_is_reported_and_the_guest_rejoins(vlab, job_file):
    lab, _, _ = vlab
    r = lab.redis.client()
    sub = lab.farm("submit", str(job_file(duration="120s", topologies=["direct-main"])),
                   "--hosts", "vm-amd").stdout.strip()
    run_id = f"{sub}.vm-amd"
    wait_for(lambda: r.hget(f"farm:run:{run_id}", "state") == "running", "the job to start", 600, 0.5)
    lab_json = json.loads((lab.state / "vlab" / "lab" / "lab.json").read_text())
    port = next(g["ssh_port"] for g in lab_json["guests"] if g["name"] == "vm-amd")
    key = lab.state / "vlab" / "lab" / "id_farm"
    # the guest's own sshd, through the forwarded port: crash its kernel
    subprocess.run(["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60", "root@127.0.0.1",
                    "echo c > /proc/sysrq-trigger"], capture_output=True, timeout=120)
    wait_for(lambda: lab.stored(sub), "the lost run's result", 300, 0.5)
    [res] = lab.stored(sub)
    kinds = [f["kind"] for f in res["findings"]]
    assert kinds.count("host-lost") == 1 and "kernel-oops" in kinds, res["findings"]
    oops = next(f for f in res["findings"] if f["kind"] == "kernel-oops")
    assert oops["signature"] == "kernel panic: sysrq triggered crash in sysrq_handle_crash"
    lost = next(f for f in res["findings"] if f["kind"] == "host-lost")
    assert lost["detail"]["crash"] == [oops["signature"]]
    # the guest boots again and its worker rejoins
    wait_for(lambda: r.exists("farm:hb:vm-amd") and json.loads(
        (lab.state / "vlab" / "lab" / "lab.json").read_text())["guests"][1]["boots"] == 2,
        "vm-amd to rejoin", 600, 0.5)


@pytest.mark.qemu
@pytest.mark.slow
def test_a_hung_guest_is_killed_by_the_watchdog_reported_as_hang_and_rebooted(vlab, job_file):
    lab, _, _ = vlab
    r = lab.redis.client()
    sub = lab.farm("submit", str(job_file(duration="120s", topologies=["direct-main"])),
                   "--hosts", "vm-intel").stdout.strip()
    wait_for(lambda: r.hget(f"farm:run:{sub}.vm-intel", "state") == "running", "the job to start", 600, 0.5)
    lab_json = json.loads((lab.state / "vlab" / "lab" / "lab.json").read_text())
    qemu = next(g["pid"] for g in lab_json["guests"] if g["name"] == "vm-intel")
    os.kill(qemu, signal.SIGSTOP)  # the whole machine stops answering
    wait_for(lambda: lab.stored(sub), "the hung run's result", 300, 0.5)
    [res] = lab.stored(sub)
    kinds = [f["kind"] for f in res["findings"]]
    assert kinds.count("host-lost") == 1 and "hang" in kinds, res["findings"]
    wait_for(lambda: r.exists("farm:hb:vm-intel") and json.loads(
        (lab.state / "vlab" / "lab" / "lab.json").read_text())["guests"][0]["boots"] == 2,
        "vm-intel to rejoin", 600, 0.5)


@pytest.mark.qemu
@pytest.mark.slow
def test_a_lab_guest_that_farm_failed_to_set_up_stops_the_lab_with_exit_3_and_the_guests_line(lab):
    lab.env["FARM_LAB_FAULT"] = "setup:module-order"
    p = lab.farm("lab", "up", "--host", "vm-amd:EPYC-Milan", "--inventory-out", str(lab.state / "inv.yml"),
                 timeout=600)
    assert p.returncode == 3, p.stdout + p.stderr
    [err] = p.stderr.strip().splitlines()
    assert re.search(r"vm-amd \(EPYC-Milan, \S+\) not set up: farm-init: set-up failed: insmod 9p: insmod: "
                     r"can't insert '/modules/9p\.ko': unknown symbol in module", err), err
    assert json.loads(lab.farm("hosts", "--json").stdout) == {}  # no host registered, none declared lost
    assert subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{lab.state}"], capture_output=True).returncode == 1
