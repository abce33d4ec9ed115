"""Ansible for real through ansible-runner: facts from localhost, and
provisioning of test hosts in network namespaces, each with its own sshd."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from support import REPO, farm_cmd, wait_for
from support.lab import RedisServer
from support.netns import NetnsHost, sh

pytestmark = [pytest.mark.root, pytest.mark.slow]


def farm(env, *args, timeout=900):
    return subprocess.run(farm_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_facts_from_localhost_match_the_workers_own_probe(redis_server, tmp_path):
    from farm.facts import probe
    inv = tmp_path / "local.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "FARM_STATE_DIR": str(tmp_path / "state"),
           "FARM_BROKER_URL": redis_server.url}
    p = farm(env, "lab", "facts", "--inventory", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    mine = probe().host_json()
    stored = json.loads(redis_server.client().hget(f"farm:host:{mine['hostname']}", "facts"))
    for key in ("vendor", "family", "model", "stepping", "microcode", "kernel", "hw_class"):
        assert stored[key] == mine[key], key
    assert not (home / ".ansible").exists()  # everything stayed in the run's data dir


@pytest.fixture
def netns_lab(tmp_path):
    key = tmp_path / "id_farm"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    hosts = [NetnsHost(i, tmp_path, key, with_sshd=(i != 3)) for i in (1, 2, 3)]
    try:
        for h in hosts:
            h.up()
        wait_for(lambda: all(h.listening() for h in hosts[:2]), "the test hosts' sshd", 30)
        redis_server = RedisServer(tmp_path / "redis", binds=tuple(h.root_ip for h in hosts[:2])).start()
        try:
            yield hosts, key, redis_server
        finally:
            redis_server.stop()
    finally:
        for h in hosts:
            h.down()


def write_inventory(path, hosts, key, redis_server, tmp_path) -> None:
    def host_vars(h):
        return {"ansible_host": h.ip, "ansible_user": "root", "ansible_ssh_private_key_file": str(key),
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                # the test hosts share this machine's files: each gets its own
                "farm_root": str(tmp_path / f"root-{h.name}"), "farm_fstab": str(tmp_path / f"fstab-{h.name}"),
                "farm_sysctl_file": str(tmp_path / f"sysctl-{h.name}.conf"), "farm_hostname": h.name,
                "farm_broker_url": f"redis://{h.root_ip}:{redis_server.port}/0"}
    path.write_text(yaml.safe_dump({"all": {"children": {
        "amd": {"hosts": {h.name: host_vars(h) for h in hosts[:2]}},
        "intel": {"hosts": {hosts[2].name: host_vars(hosts[2])}}}}}))


def outcome(stdout: str, host: str) -> dict:
    m = re.search(rf"^{host}: (\w+) \(ok (\d+), changed (\d+), failed (\d+)\)", stdout, re.M)
    assert m, stdout
    return {"state": m.group(1), "changed": int(m.group(3))}


def test_two_netns_hosts_are_provisioned_idempotently_and_a_third_is_unreachable(netns_lab, tmp_path):
    hosts, key, redis_server = netns_lab
    inv = tmp_path / "lab.yml"
    write_inventory(inv, hosts, key, redis_server, tmp_path)
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state"), "FARM_BROKER_URL": redis_server.url,
           "HOME": str(tmp_path)}
    first = farm(env, "lab", "provision", "--inventory", str(inv))
    assert first.returncode == 3, first.stdout + first.stderr  # one host could not be reached
    assert outcome(first.stdout, hosts[2].name)["state"] == "unreachable"
    for h in hosts[:2]:
        assert outcome(first.stdout, h.name) == {"state": "ok", "changed": outcome(first.stdout, h.name)["changed"]}
        assert outcome(first.stdout, h.name)["changed"] > 0
        assert (tmp_path / f"root-{h.name}" / "venv" / "bin" / "farm").exists()
    # the supervised workers came up inside the namespaces and reached the broker
    r = redis_server.client()
    wait_for(lambda: all(r.exists(f"farm:hb:{h.name}") for h in hosts[:2]), "the provisioned workers", 120)
    facts = json.loads(r.hget(f"farm:host:{hosts[0].name}", "facts"))
    assert facts["vendor"] in ("GenuineIntel", "AuthenticAMD")

    limit = ",".join(h.name for h in hosts[:2])
    second = farm(env, "lab", "provision", "--inventory", str(inv), "--limit", limit)
    assert second.returncode == 0, second.stdout + second.stderr
    for h in hosts[:2]:
        assert outcome(second.stdout, h.name) == {"state": "ok", "changed": 0}, second.stdout

    down = farm(env, "lab", "teardown", "--inventory", str(inv), "--limit", limit)
    assert down.returncode == 0, down.stdout + down.stderr
    wait_for(lambda: not any(r.exists(f"farm:hb:{h.name}") for h in hosts[:2]), "the workers to stop", 60)
    assert not (tmp_path / f"root-{hosts[0].name}").exists()


def test_a_bad_inventory_is_refused_before_any_playbook_runs(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  children:\n    intel:\n      hosts: {a: {}}\n    amd:\n      hosts: {a: {}}\n")
    p = subprocess.run([sys.executable, "-m", "farm.cli", "lab", "provision", "--inventory", str(bad)],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "FARM_STATE_DIR": str(tmp_path)})
    assert p.returncode == 2 and "in both the intel and the amd group" in p.stderr
    assert "Traceback" not in p.stderr


def test_collect_crash_fetches_what_the_host_kept(tmp_path):
    import tarfile
    inv = tmp_path / "local.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    env = {**os.environ, "FARM_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    p = farm(env, "lab", "collect-crash", "localhost", "--inventory", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    archive = tmp_path / "state" / "artifacts" / "crash" / "localhost" / "crash.tgz"
    names = tarfile.open(archive).getnames()
    assert "./boot_id.txt" in names and "./kernel.txt" in names
    import glob
    assert not glob.glob("/tmp/farm-crash.*")  # the host keeps nothing of ours
    p = farm(env, "lab", "collect-crash", "nosuchhost", "--inventory", str(inv))
    assert p.returncode == 2 and "not in the inventory" in p.stdout
