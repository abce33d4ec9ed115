"""HostFacts from what playbooks/facts.yml printed on a host, through the
same parsing and hw_class rule as the worker's own probe (farm/facts.py)."""
from __future__ import annotations

import re

from farm.facts import FLAGS_OF_INTEREST, HostFacts, hw_class, parse_cpuinfo

KCONFIG = re.compile(r"^CONFIG_(BPF\w*|HAVE_EBPF_JIT|\w*RETPOLINE\w*|\w*MITIGATION\w*|PAGE_TABLE_ISOLATION|"
                     r"\w*SPECTRE\w*|CALL_DEPTH_TRACKING|\w*RETHUNK\w*|\w*IBT\w*|CPU_SRSO|\w*ITS\w*)=(.*)$")


def split_sections(text: str) -> dict[str, str]:
    sections, name, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("==") and " " not in line:
            if name:
                sections[name] = "\n".join(lines)
            name, lines = line[2:], []
        else:
            lines.append(line)
    if name:
        sections[name] = "\n".join(lines)
    return sections


def facts_from_raw(text: str) -> tuple[HostFacts, dict]:
    """(HostFacts, extras: cmdline and the BPF/mitigation kernel config)."""
    s = split_sections(text)
    cpu = parse_cpuinfo(s.get("cpuinfo", ""))
    vulns = {}
    for line in s.get("vulnerabilities", "").splitlines():
        path, _, value = line.partition(":")
        vulns[path.rsplit("/", 1)[-1]] = value.strip()
    sysctl = dict(line.split("=", 1) for line in s.get("sysctl", "").splitlines() if "=" in line)
    kconfig = {m.group(1): m.group(2) for line in s.get("kconfig", "").splitlines() if (m := KCONFIG.match(line))}
    facts = HostFacts(
        hostname=s.get("hostname", "").strip(), vendor=cpu["vendor"], family=cpu["family"],
        model=cpu["model"], stepping=cpu["stepping"], model_name=cpu["model_name"],
        microcode=cpu["microcode"], kernel=s.get("kernel", "").strip(),
        spectre_v2=vulns.get("spectre_v2", ""),
        hw_class=hw_class(cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]),
        vulnerabilities=vulns, bpf_jit=sysctl, bpftool_version=s.get("bpftool", "").strip(),
        cpu_flags_of_interest=sorted(set(cpu["flags"]) & set(FLAGS_OF_INTEREST)), cpu_bugs=sorted(cpu["bugs"]))
    return facts, {"cmdline": s.get("cmdline", "").strip(), "kernel_config": kconfig}
