"""Hardware facts of one farm host: which CPU, microcode, kernel and mitigations it runs.

The facts decide which queues a host serves, and ten of them travel in every
result JSON as "host" (HostFacts.host_json; docs/architecture.md). hw_class() is deliberately a pure
function of (vendor, family, model[, stepping]) so the Ansible inventory can compute
the same class from its own facts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from farm.errors import BadInput, InfraError

OVERRIDE_ENV = "FARM_FACTS_OVERRIDE"

CPUINFO = Path("/proc/cpuinfo")
VULN_DIR = Path("/sys/devices/system/cpu/vulnerabilities")
SYSCTL_DIR = Path("/proc/sys")
BPF_SYSCTLS = (
    "net.core.bpf_jit_enable",
    "net.core.bpf_jit_harden",
    "net.core.bpf_jit_kallsyms",
    "net.core.bpf_jit_limit",
    "kernel.unprivileged_bpf_disabled",
)

# Flags that change how indirect branches (hence the JIT's tail calls) are mitigated.
FLAGS_OF_INTEREST = frozenset({
    "ibrs", "ibpb", "stibp", "ibrs_enhanced", "ssbd", "md_clear", "amd_ssbd",
    "virt_ssbd", "spec_ctrl_ssbd", "rdpid", "its", "retpoline", "retpoline_amd",
})

HOST_KEYS = (
    "hostname", "vendor", "family", "model", "stepping", "model_name",
    "microcode", "kernel", "spectre_v2", "hw_class",
)


@dataclass
class HostFacts:
    hostname: str
    vendor: str
    family: int
    model: int
    stepping: int
    model_name: str
    microcode: str
    kernel: str
    spectre_v2: str
    hw_class: str
    cpus: int = 0
    vulnerabilities: dict[str, str] = field(default_factory=dict)
    bpf_jit: dict[str, str] = field(default_factory=dict)
    bpftool_version: str = ""
    cpu_flags_of_interest: list[str] = field(default_factory=list)
    cpu_bugs: list[str] = field(default_factory=list)

    def host_json(self) -> dict:
        """The "host" object of a result: exactly the ten HOST_KEYS, in that order."""
        return {k: getattr(self, k) for k in HOST_KEYS}

    def to_dict(self) -> dict:
        """Every fact, JSON-serialisable."""
        return asdict(self)


def _int(text: str) -> int:
    try:
        return int(text, 0) if text.startswith("0x") else int(text)
    except ValueError:
        return 0


def parse_cpuinfo(text: str) -> dict:
    """Parse the first processor block of /proc/cpuinfo text.

    Returns vendor, family, model, stepping (ints), model_name, microcode (verbatim,
    e.g. "0x830107a"), flags and bugs (lists). Absent fields come back as "" / 0 / [],
    so a caller decides what is fatal.
    """
    raw: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if raw:
                break  # end of the first block: all CPUs of a farm host are alike
            continue
        key, sep, value = line.partition(":")
        if sep:
            raw.setdefault(key.strip(), value.strip())
    return {
        "vendor": raw.get("vendor_id", ""),
        "family": _int(raw.get("cpu family", "")),
        "model": _int(raw.get("model", "")),
        "stepping": _int(raw.get("stepping", "")),
        "model_name": raw.get("model name", ""),
        "microcode": raw.get("microcode", ""),
        "flags": raw.get("flags", "").split(),
        "bugs": raw.get("bugs", "").split(),
    }


# Intel family 6 model -> class. Model 0x55 is absent: it needs the stepping (hw_class).
_INTEL_F6 = {
    **dict.fromkeys((0x3c, 0x3f, 0x45, 0x46), "haswell"),
    **dict.fromkeys((0x3d, 0x47, 0x4f, 0x56), "broadwell"),
    **dict.fromkeys((0x4e, 0x5e), "skylake"),
    **dict.fromkeys((0x8e, 0x9e), "kabylake"),  # also Coffee/Whiskey/Amber Lake
    **dict.fromkeys((0xa5, 0xa6), "cometlake"),
    0xa7: "rocketlake",
    **dict.fromkeys((0x6a, 0x6c, 0x7d, 0x7e), "icelake"),
    **dict.fromkeys((0x8c, 0x8d), "tigerlake"),
    **dict.fromkeys((0x97, 0x9a), "alderlake"),
    **dict.fromkeys((0xb7, 0xba, 0xbf), "raptorlake"),
    **dict.fromkeys((0xaa, 0xac), "meteorlake"),
    **dict.fromkeys((0xc5, 0xc6), "arrowlake"),
    0xbd: "lunarlake",
    0x8f: "sapphirerapids",
    0xcf: "emeraldrapids",
    **dict.fromkeys((0xad, 0xae), "graniterapids"),
    0xaf: "sierraforest",
}

# AMD (family, first model, last model) -> class; ranges follow the kernel's
# X86_FEATURE_ZEN* assignment in arch/x86/kernel/cpu/amd.c. Zen+ is listed first
# because it sits inside the Zen 1 ranges.
_AMD_RANGES = (
    (0x17, 0x08, 0x08, "zenplus"),  # Pinnacle Ridge / Colfax
    (0x17, 0x18, 0x18, "zenplus"),  # Picasso
    (0x17, 0x00, 0x2f, "zen1"),     # 0x01 Naples
    (0x17, 0x50, 0x5f, "zen1"),
    (0x17, 0x30, 0x4f, "zen2"),     # 0x31 Rome
    (0x17, 0x60, 0x7f, "zen2"),     # 0x71 Matisse
    (0x17, 0x90, 0x9f, "zen2"),
    (0x17, 0xa0, 0xaf, "zen2"),
    (0x19, 0x00, 0x0f, "zen3"),     # 0x01 Milan
    (0x19, 0x20, 0x5f, "zen3"),     # 0x21 Vermeer, 0x50 Cezanne
    (0x19, 0x10, 0x1f, "zen4"),     # 0x11 Genoa
    (0x19, 0x60, 0xaf, "zen4"),     # 0x61 Raphael, 0xa0 Bergamo
    # Family 0x1a also hosts Zen 6, so only the known Zen 5 ranges are named.
    (0x1a, 0x00, 0x2f, "zen5"),     # 0x02 Turin, 0x11 Turin dense, 0x24 Strix
    (0x1a, 0x40, 0x4f, "zen5"),     # 0x44 Granite Ridge
    (0x1a, 0x60, 0x7f, "zen5"),
)

# The one table of CPUID vendor ids: queue names, hw_class prefixes and reports use it.
VENDOR_SHORT = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "hygon"}


def vendor_short(vendor_id: str | None) -> str:
    """The short vendor name: "intel", "amd" or "hygon" for their CPUID vendor
    ids, any other id lowercased ("centaurhauls"), "unknown" when empty."""
    return VENDOR_SHORT.get(vendor_id or "") or (vendor_id or "").lower() or "unknown"


def hw_class(vendor: str, family: int, model: int, stepping: int | None = None) -> str:
    """Name the microarchitecture class of a CPU, e.g. "intel-icelake", "amd-zen2".

    Pure: needs only what Ansible facts also know. Intel family 6 model 0x55 is shared
    by three generations and only the stepping tells them apart: 0-4 "intel-skylake-sp",
    5-7 "intel-cascadelake", 10 and up "intel-cooperlake"; without a stepping it is
    "intel-skylake-x" (ambiguous on purpose rather than wrong).
    Unknown CPUs fall back to "<prefix>-f<family>-m<model>" in decimal, prefix being
    intel/amd/hygon, or "unknown" for any other vendor.
    """
    prefix = VENDOR_SHORT.get(vendor, "unknown")
    name = None
    if prefix == "intel" and family == 6:
        if model == 0x55:
            if stepping is None:
                name = "skylake-x"
            elif stepping <= 4:
                name = "skylake-sp"
            elif stepping <= 7:
                name = "cascadelake"
            else:
                name = "cooperlake"
        else:
            name = _INTEL_F6.get(model)
    elif prefix == "amd":
        name = next((n for f, lo, hi, n in _AMD_RANGES
                     if f == family and lo <= model <= hi), None)
    return f"{prefix}-{name}" if name else f"{prefix}-f{family}-m{model}"


def _read(path: Path) -> str:
    """Stripped text of a file, or "" if it is absent or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _vulnerabilities() -> dict[str, str]:
    try:
        files = sorted(p for p in VULN_DIR.iterdir() if p.is_file())
    except OSError:
        return {}
    return {p.name: _read(p) for p in files}


def _bpf_sysctls() -> dict[str, str]:
    out = {}
    for name in BPF_SYSCTLS:
        path = SYSCTL_DIR / name.replace(".", "/")
        if path.exists():
            out[name] = _read(path)
    return out


def _bpftool_version(bpftool: str) -> str:
    """bpftool's version ("7.1.0"), or "" if it is missing or will not say."""
    if not shutil.which(bpftool):
        return ""
    for args in (["--json", "version"], ["version"]):
        try:
            proc = subprocess.run([bpftool, *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        if proc.returncode != 0:
            continue
        if args[0] == "--json":
            try:
                return str(json.loads(proc.stdout)["version"])
            except (ValueError, KeyError, TypeError):
                continue
        lines = proc.stdout.splitlines()
        return lines[0].strip() if lines else ""
    return ""


def _cpu_count() -> int:
    try:
        return os.cpu_count() or len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return 0


def _apply_override(facts: HostFacts, text: str) -> HostFacts:
    try:
        changes = json.loads(text)
    except ValueError as e:
        raise BadInput(f"{OVERRIDE_ENV} is not JSON: {e}") from None
    if not isinstance(changes, dict):
        raise BadInput(f"{OVERRIDE_ENV} must be a JSON object")
    known = {f.name for f in dataclasses.fields(HostFacts)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise BadInput(f"{OVERRIDE_ENV} names unknown facts: {', '.join(unknown)}")
    facts = dataclasses.replace(facts, **changes)
    if "hw_class" not in changes:
        facts.hw_class = hw_class(facts.vendor, facts.family, facts.model, facts.stepping)
    return facts


def probe(bpftool: str = "bpftool") -> HostFacts:
    """Read this machine's facts from /proc, /sys, uname and bpftool.

    Optional sources that are missing read as "" (or empty); only an unreadable
    /proc/cpuinfo or one without vendor_id raises InfraError.

    If the environment variable FARM_FACTS_OVERRIDE holds a JSON object, its keys
    replace the probed facts at the end (for tests and for routing a host as another,
    e.g. '{"vendor":"GenuineIntel","hostname":"fake1"}'); hw_class is then recomputed
    from the result unless the override sets hw_class itself. Invalid JSON or an
    unknown key raises BadInput.
    """
    try:
        cpu = parse_cpuinfo(CPUINFO.read_text())
    except OSError as e:
        raise InfraError(f"cannot read {CPUINFO}: {e}") from None
    if not cpu["vendor"]:
        raise InfraError(f"{CPUINFO} has no vendor_id")
    uname = os.uname()
    facts = HostFacts(
        hostname=uname.nodename,
        vendor=cpu["vendor"],
        family=cpu["family"],
        model=cpu["model"],
        stepping=cpu["stepping"],
        model_name=cpu["model_name"],
        microcode=cpu["microcode"],
        kernel=uname.release,
        spectre_v2=_read(VULN_DIR / "spectre_v2"),
        hw_class=hw_class(cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]),
        cpus=_cpu_count(),
        vulnerabilities=_vulnerabilities(),
        bpf_jit=_bpf_sysctls(),
        bpftool_version=_bpftool_version(bpftool),
        cpu_flags_of_interest=sorted(FLAGS_OF_INTEREST.intersection(cpu["flags"])),
        cpu_bugs=cpu["bugs"],
    )
    override = os.environ.get(OVERRIDE_ENV)
    return _apply_override(facts, override) if override else facts
