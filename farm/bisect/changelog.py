"""What changed between two packaged kernels: the upstream commit titles
the newer package's changelog.Debian.gz lists since the older one, ranked
by how likely each touches the failing code, and the BPF, JIT and
mitigation options their /boot/config-* files set differently.

(Interface fixed first so the bisection and this module can be built side
by side; the bodies come with the issue's changelog work.)"""
from __future__ import annotations


def suspects_between(older: str, newer: str) -> dict:
    """older, newer: kernel image package names (linux-image-...), older by
    package version first. Returns {"ranked": [entry...], "all": [entry...]}
    where an entry is {"text": the changelog line (an upstream commit title),
    "version": the Debian package version whose stanza lists it, "upstream":
    that version's upstream release, "score": int, "why": what made it rank
    (e.g. "bpf", "x86 jit", "tail call", "mitigation")} ("score"/"why" only
    in "ranked", best first); "all" keeps every entry in changelog order."""
    raise NotImplementedError


def config_diff(older: str, newer: str) -> dict[str, dict]:
    """{"CONFIG_...": {"older": value or None, "newer": value or None}} for
    every BPF, JIT and mitigation option whose value differs between the
    two packages' /boot/config-* files."""
    raise NotImplementedError
