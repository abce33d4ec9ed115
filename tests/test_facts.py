"""A host's hardware facts: what the farm learns about a machine before it trusts it with a queue."""
import json
import os
import shutil
from pathlib import Path

import pytest

from farm import facts
from farm.errors import BadInput, InfraError
from farm.facts import HOST_KEYS, HostFacts, hw_class, parse_cpuinfo, probe

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


# --- Three machines on the bench, known only by their /proc/cpuinfo ---------------

@pytest.mark.parametrize("fixture, expected", [
    ("intel-sapphirerapids.txt", dict(
        vendor="GenuineIntel", family=6, model=0x8f, stepping=8,
        model_name="Intel(R) Xeon(R) Platinum 8480+", microcode="0x2b000590",
        hw_class="intel-sapphirerapids")),
    ("amd-epyc-milan.txt", dict(
        vendor="AuthenticAMD", family=25, model=1, stepping=1,
        model_name="AMD EPYC 7763 64-Core Processor", microcode="0xa0011d1",
        hw_class="amd-zen3")),
    ("amd-epyc-rome.txt", dict(
        vendor="AuthenticAMD", family=23, model=49, stepping=0,
        model_name="AMD EPYC 7502 32-Core Processor", microcode="0x830107a",
        hw_class="amd-zen2")),
])
def test_each_bench_machine_is_recognised_from_its_cpuinfo(fixture, expected):
    cpu = parse_cpuinfo((FIXTURES / fixture).read_text())
    want_class = expected.pop("hw_class")
    assert {k: cpu[k] for k in expected} == expected
    assert "ibpb" in cpu["flags"] and "spectre_v2" in cpu["bugs"]
    assert hw_class(cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]) == want_class


def test_only_the_first_processor_block_is_read():
    # The Rome excerpt's second block has a truncated flags line; it must not leak in.
    cpu = parse_cpuinfo((FIXTURES / "amd-epyc-rome.txt").read_text())
    assert "rdpid" in cpu["flags"] and "sev_es" in cpu["flags"]
    assert cpu["bugs"] == ["sysret_ss_attrs", "spectre_v1", "spectre_v2",
                           "spec_store_bypass", "retbleed", "smt_rsb", "srso", "ibpb_no_ret"]


def test_sapphire_rapids_shows_enhanced_ibrs_among_the_flags_of_interest():
    cpu = parse_cpuinfo((FIXTURES / "intel-sapphirerapids.txt").read_text())
    interesting = sorted(facts.FLAGS_OF_INTEREST.intersection(cpu["flags"]))
    assert interesting == ["ibpb", "ibrs", "ibrs_enhanced", "md_clear", "rdpid", "ssbd", "stibp"]


def test_an_empty_cpuinfo_parses_to_blanks_rather_than_raising():
    cpu = parse_cpuinfo("")
    assert cpu["vendor"] == "" and cpu["family"] == 0 and cpu["flags"] == []


# --- The classification table ------------------------------------------------------

@pytest.mark.parametrize("vendor, family, model, expected", [
    ("GenuineIntel", 6, 0x3f, "intel-haswell"),
    ("GenuineIntel", 6, 0x4f, "intel-broadwell"),
    ("GenuineIntel", 6, 0x5e, "intel-skylake"),
    ("GenuineIntel", 6, 0x9e, "intel-kabylake"),
    ("GenuineIntel", 6, 0x6a, "intel-icelake"),
    ("GenuineIntel", 6, 0x7e, "intel-icelake"),
    ("GenuineIntel", 6, 0x8c, "intel-tigerlake"),
    ("GenuineIntel", 6, 0x97, "intel-alderlake"),
    ("GenuineIntel", 6, 0xb7, "intel-raptorlake"),
    ("GenuineIntel", 6, 0xaa, "intel-meteorlake"),
    ("GenuineIntel", 6, 0xc6, "intel-arrowlake"),
    ("GenuineIntel", 6, 0xbd, "intel-lunarlake"),
    ("GenuineIntel", 6, 0x8f, "intel-sapphirerapids"),
    ("GenuineIntel", 6, 0xcf, "intel-emeraldrapids"),
    ("GenuineIntel", 6, 0xad, "intel-graniterapids"),
    ("GenuineIntel", 6, 0xaf, "intel-sierraforest"),
    ("AuthenticAMD", 0x17, 0x01, "amd-zen1"),
    ("AuthenticAMD", 0x17, 0x08, "amd-zenplus"),
    ("AuthenticAMD", 0x17, 0x18, "amd-zenplus"),
    ("AuthenticAMD", 0x17, 0x31, "amd-zen2"),
    ("AuthenticAMD", 0x17, 0x71, "amd-zen2"),
    ("AuthenticAMD", 0x19, 0x01, "amd-zen3"),
    ("AuthenticAMD", 0x19, 0x21, "amd-zen3"),
    ("AuthenticAMD", 0x19, 0x50, "amd-zen3"),
    ("AuthenticAMD", 0x19, 0x11, "amd-zen4"),
    ("AuthenticAMD", 0x19, 0x61, "amd-zen4"),
    ("AuthenticAMD", 0x19, 0xa0, "amd-zen4"),
    ("AuthenticAMD", 0x1a, 0x02, "amd-zen5"),
    ("AuthenticAMD", 0x1a, 0x11, "amd-zen5"),
    ("AuthenticAMD", 0x1a, 0x44, "amd-zen5"),
])
def test_known_models_get_their_generation_name(vendor, family, model, expected):
    assert hw_class(vendor, family, model) == expected


@pytest.mark.parametrize("vendor, family, model, expected", [
    ("GenuineIntel", 6, 0x01, "intel-f6-m1"),
    ("GenuineIntel", 19, 1, "intel-f19-m1"),        # a new Intel family
    ("AuthenticAMD", 0x15, 0x02, "amd-f21-m2"),     # Bulldozer era: not in the table
    ("AuthenticAMD", 0x1a, 0x50, "amd-f26-m80"),    # family 0x1a beyond the known Zen 5 ranges
    ("HygonGenuine", 0x18, 0x00, "hygon-f24-m0"),
    ("CentaurHauls", 6, 0x0f, "unknown-f6-m15"),
])
def test_unknown_models_fall_back_to_family_and_model_in_decimal(vendor, family, model, expected):
    assert hw_class(vendor, family, model) == expected


@pytest.mark.parametrize("stepping, expected", [
    (0, "intel-skylake-sp"),
    (4, "intel-skylake-sp"),
    (5, "intel-cascadelake"),
    (7, "intel-cascadelake"),
    (11, "intel-cooperlake"),
    (None, "intel-skylake-x"),
])
def test_model_0x55_is_told_apart_by_stepping(stepping, expected):
    # Skylake-SP, Cascade Lake and Cooper Lake all report family 6 model 0x55.
    assert hw_class("GenuineIntel", 6, 0x55, stepping) == expected


def test_stepping_changes_nothing_outside_model_0x55():
    assert hw_class("GenuineIntel", 6, 0x8f, 8) == hw_class("GenuineIntel", 6, 0x8f)
    assert hw_class("AuthenticAMD", 23, 49, 0) == "amd-zen2"


# --- The machine this test runs on --------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(facts.OVERRIDE_ENV, raising=False)


def test_probe_describes_this_machine_consistently(clean_env):
    host = probe()
    assert host.vendor in ("GenuineIntel", "AuthenticAMD")
    assert host.hw_class == hw_class(host.vendor, host.family, host.model, host.stepping)
    assert host.kernel == os.uname().release
    assert host.hostname == os.uname().nodename
    assert host.cpus >= 1
    if Path("/sys/devices/system/cpu/vulnerabilities/spectre_v2").exists():
        assert host.spectre_v2
        assert host.vulnerabilities["spectre_v2"] == host.spectre_v2
    if shutil.which("bpftool"):
        assert host.bpftool_version
    assert set(host.cpu_flags_of_interest) <= facts.FLAGS_OF_INTEREST
    assert set(host.bpf_jit) <= set(facts.BPF_SYSCTLS)


def test_result_json_carries_exactly_the_ten_design_keys(clean_env):
    host = probe()
    assert list(host.host_json()) == list(HOST_KEYS) == [
        "hostname", "vendor", "family", "model", "stepping", "model_name",
        "microcode", "kernel", "spectre_v2", "hw_class"]
    everything = host.to_dict()
    assert everything.items() >= host.host_json().items()
    assert {"cpus", "vulnerabilities", "bpf_jit", "bpftool_version",
            "cpu_flags_of_interest", "cpu_bugs"} <= everything.keys()
    json.dumps(everything)  # must be serialisable as is


def test_a_host_without_bpftool_or_mitigation_files_still_probes(clean_env, monkeypatch, tmp_path):
    monkeypatch.setattr(facts, "VULN_DIR", tmp_path / "no-vulns")
    monkeypatch.setattr(facts, "SYSCTL_DIR", tmp_path / "no-sysctl")
    host = probe(bpftool=str(tmp_path / "no-bpftool"))
    assert host.spectre_v2 == "" and host.vulnerabilities == {}
    assert host.bpf_jit == {} and host.bpftool_version == ""


def test_a_cpuinfo_without_vendor_is_an_infrastructure_failure(clean_env, monkeypatch, tmp_path):
    bogus = tmp_path / "cpuinfo"
    bogus.write_text("processor\t: 0\nmodel name\t: mystery\n")
    monkeypatch.setattr(facts, "CPUINFO", bogus)
    with pytest.raises(InfraError, match="vendor_id"):
        probe()
    monkeypatch.setattr(facts, "CPUINFO", tmp_path / "missing")
    with pytest.raises(InfraError):
        probe()


# --- Routing a host as another ------------------------------------------------------

def test_override_turns_this_host_into_another_vendor(monkeypatch):
    monkeypatch.delenv(facts.OVERRIDE_ENV, raising=False)
    real = probe()
    # Pretend to be whichever vendor this machine is not, so the test bites on both.
    if real.vendor == "AuthenticAMD":
        fake = {"vendor": "GenuineIntel", "family": 6, "model": 0x8f, "stepping": 8,
                "hostname": "fake1"}
        expected_class = "intel-sapphirerapids"
    else:
        fake = {"vendor": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1,
                "hostname": "fake1"}
        expected_class = "amd-zen3"
    monkeypatch.setenv(facts.OVERRIDE_ENV, json.dumps(fake))
    host = probe()
    assert host.vendor == fake["vendor"] and host.hostname == "fake1"
    assert host.hw_class == expected_class != real.hw_class
    assert host.kernel == real.kernel  # untouched facts stay real


def test_override_of_vendor_alone_recomputes_the_class(monkeypatch):
    monkeypatch.delenv(facts.OVERRIDE_ENV, raising=False)
    real = probe()
    other = "GenuineIntel" if real.vendor == "AuthenticAMD" else "AuthenticAMD"
    monkeypatch.setenv(facts.OVERRIDE_ENV, json.dumps({"vendor": other}))
    host = probe()
    assert host.hw_class == hw_class(other, real.family, real.model, real.stepping)
    assert host.hw_class != real.hw_class


def test_an_explicit_hw_class_override_wins(monkeypatch):
    monkeypatch.setenv(facts.OVERRIDE_ENV, '{"vendor": "GenuineIntel", "hw_class": "lab-special"}')
    assert probe().hw_class == "lab-special"


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"vendr": "GenuineIntel"}'])
def test_a_malformed_override_is_refused(monkeypatch, bad):
    monkeypatch.setenv(facts.OVERRIDE_ENV, bad)
    with pytest.raises(BadInput):
        probe()


def test_hostfacts_can_be_built_by_hand():
    h = HostFacts("h", "AuthenticAMD", 23, 49, 0, "AMD EPYC", "0x1", "6.1", "Mitigation", "amd-zen2")
    assert h.to_dict()["vulnerabilities"] == {} and h.host_json()["hw_class"] == "amd-zen2"


@pytest.mark.parametrize("vendor_id, short", [
    ("GenuineIntel", "intel"), ("AuthenticAMD", "amd"), ("HygonGenuine", "hygon"),
    ("CentaurHauls", "centaurhauls"), ("", "unknown"), (None, "unknown"),
])
def test_vendor_short_names(vendor_id, short):
    assert facts.vendor_short(vendor_id) == short


def test_a_hygon_host_is_routed_and_selected_as_hygon():
    """One vendor table for routing, hw_class and reports: a Hygon host
    serves vendor.hygon (it was vendor.hygongenuine)."""
    from farm.queue.routing import Selection, parse_where, queues_for, select_hosts
    host = {"hostname": "h1", "vendor": "HygonGenuine", "hw_class": hw_class("HygonGenuine", 0x18, 0)}
    assert queues_for(host) == ["vendor.hygon", "class.hygon-f24-m0", "host.h1"]
    assert select_hosts({"h1": {"facts": host, "health": "healthy"}},
                        Selection(parse_where("vendor=hygon"))) == ["h1"]
