"""Trampolines on a loaded topology: every Hook of its Topology becomes one
fentry/fexit program per traced program (its target is fixed at load time),
loaded through libbpf with the topology's stats map shared, attached by a
BPF link and pinned under the topology's pin dir (links/), so the run's
cleanup and the pin guard remove it like any other pin."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from farm.bpf import syscall
from farm.bpf.corpus import PROGS_DIR, Hook
from farm.bpf.libbpf import BpfObject, Unsupported

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
    obj_path = compile_source(HOOKS_SOURCE, 1, lt.fault)
    links_dir = lt.pin_dir / "links"
    links_dir.mkdir(exist_ok=True)
    for hook in lt.topology.hooks:
        for prog in traced_programs(hook, lt.prog_fds):
            function = hook.function or prog
            lt.hooks.append(attach_traced(obj_path, hook.program, f"{hook.kind} on {prog}/{function}",
                                          (lt.prog_fds[prog], function), ("stats", lt.stats_fd),
                                          hook.attach_type, links_dir / f"{hook.program}-{prog}"))


def attach_traced(obj_path, program: str, what: str, target: tuple[int, str], shared: tuple[str, int],
                  attach_type: int, pin: Path) -> Attached:
    """Load `program` of obj_path through libbpf with its target (a loaded
    program's fd and the function in it) and its counters map shared,
    attach it by a link, and pin the link at `pin`."""
    obj = BpfObject(obj_path, program, what)
    try:
        obj.target(*target).share_map(*shared)
        link = syscall.link_create(obj.load(), attach_type, what)
    except BaseException:
        obj.close()
        raise
    attached = Attached(pin.name, obj, link)
    try:
        syscall.obj_pin(link, str(pin))
    except BaseException:
        attached.close()
        raise
    return attached


def attach_hosted(lt) -> None:
    """A hosted topology (Topology.head): load its head from
    <name>.ext.bpf.c with the tc entry (or its subprog) as target and the
    entry's counters shared, and attach it by a pinned link. Its tail-call
    targets are the tc object's own, in the entry's prog_array, which the
    head shares (an extension's chain); or, when the tc object has none
    (a trampoline's prog_array takes only programs of its kind), of the
    head's kind from the same .ext.bpf.c, handed to the engine in place of
    the tc object's, with the head's own prog_array."""
    from farm.bpf.corpus import TARGETS_PER_SLOT, target_name
    from farm.bpf.loader import compile_source
    head = lt.topology.head
    obj_path = compile_source(lt.topology.ext_source, lt.slots, lt.fault)
    targets = tuple(target_name(s, k) for s in range(lt.slots) for k in range(TARGETS_PER_SLOT))
    hosted_targets = targets[0] not in lt.prog_fds
    function = head.function or "entry"
    what = f"{head.kind} on entry/{function}"
    obj = BpfObject(obj_path, head.program, what, more=targets if hosted_targets else ())
    try:
        obj.target(lt.prog_fds["entry"], function)
        scratch_fd = syscall.obj_get(str(lt.pin_dir / "maps" / "scratch"))
        try:
            obj.share_map("stats", lt.stats_fd).share_map("scratch", scratch_fd)
            if not hosted_targets:
                obj.share_map("jmp_table", lt.jmp_table_fd)
            prog_fd = obj.load()  # libbpf keeps its own fd of each shared map
        finally:
            os.close(scratch_fd)
        link = syscall.link_create(prog_fd, head.attach_type, what)
    except BaseException:
        obj.close()
        raise
    lt.hooks.append(Attached(head.program, obj, link))
    links_dir = lt.pin_dir / "links"
    links_dir.mkdir(exist_ok=True)
    syscall.obj_pin(link, str(links_dir / head.program))
    if hosted_targets:
        _check_prog_array_takes(obj, targets[0], head.kind)
        # the engine closes what it holds: its own copies of the object's fds
        for name in targets:
            lt.prog_fds[name] = os.dup(obj.fd(name))
        os.close(lt.jmp_table_fd)
        lt.jmp_table_fd = os.dup(obj.map_fd("jmp_table"))


def _check_prog_array_takes(obj: BpfObject, target: str, kind: str) -> None:
    """Whether this kernel puts a program of this kind into a prog_array at
    all (Debian's 6.1 refuses freplace programs with EINVAL): a kernel that
    cannot is unsupported for the topology, said before the engine starts,
    which would otherwise end the whole run on its first install."""
    pa = syscall.ProgArray(obj.map_fd("jmp_table"), f"{kind} jmp_table")
    try:
        pa.install(0, obj.fd(target))
    except syscall.BpfError as e:
        if e.errno == errno.EINVAL:
            raise Unsupported(f"the kernel refuses {kind} programs in a prog_array: "
                              f"BPF_MAP_UPDATE_ELEM gave EINVAL") from None
        raise
    pa.delete(0)
