"""Trampolines on a loaded topology: every Hook of its Topology becomes one
fentry/fexit program per traced program (its target is fixed at load time),
loaded through libbpf with the topology's stats map shared, attached by a
BPF link and pinned under the topology's pin dir (links/), so the run's
cleanup and the pin guard remove it like any other pin."""
from __future__ import annotations

import os
from dataclasses import dataclass

from farm.bpf import syscall
from farm.bpf.corpus import PROGS_DIR, Hook
from farm.bpf.libbpf import BpfObject

HOOKS_SOURCE = PROGS_DIR / "hooks.bpf.c"


@dataclass
class Attached:
    """One attached program: its libbpf object (which owns the program fd)
    and the link fd that attaches it."""
    name: str
    obj: BpfObject
    link_fd: int

    def close(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        self.obj.close()


def traced_programs(hook: Hook, prog_names) -> list[str]:
    """The topology's programs this hook attaches to, in a stable order."""
    names = sorted(prog_names)
    if hook.on == "entry":
        return ["entry"]
    if hook.on == "targets":
        return [n for n in names if n != "entry"]
    return names


def attach_hooks(lt) -> None:
    """Attach every hook of lt's topology to lt's programs (lt: a
    farm.bpf.loader.LoadedTopology). Raises Unsupported when this kernel
    cannot load trampolines at all, LoadError when it refuses one program;
    what was attached so far is in lt.hooks, for lt.close()."""
    from farm.bpf.loader import compile_source
    obj_path = compile_source(HOOKS_SOURCE)
    links_dir = lt.pin_dir / "links"
    links_dir.mkdir(exist_ok=True)
    for hook in lt.topology.hooks:
        for prog in traced_programs(hook, lt.prog_fds):
            function = hook.function or prog
            name = f"{hook.program}-{prog}"
            what = f"{hook.kind} on {prog}/{function}"
            obj = BpfObject(obj_path, hook.program, what)
            try:
                obj.target(lt.prog_fds[prog], function).share_map("stats", lt.stats_fd)
                link = syscall.link_create(obj.load(), hook.attach_type, what)
            except BaseException:
                obj.close()
                raise
            lt.hooks.append(Attached(name, obj, link))
            syscall.obj_pin(link, str(links_dir / name))
