"""Compiling a job's objects on this host before a guest boots: the guest
shares this host's build cache (vrun.guest_prologue), and clang under TCG
takes minutes for what takes seconds here."""
from __future__ import annotations

from farm.errors import FarmError


def compile_ahead(specs) -> None:
    """Every object the jobs' topologies will load, into the build cache.
    What does not compile here is left for the guest to report, as the
    same load-error finding; a job's own source is never cached."""
    from farm.bpf.corpus import TOPOLOGIES
    from farm.bpf.hooks import HOOKS_SOURCE
    from farm.bpf.loader import compile_source, compile_topology
    from farm.gen.emit import hooks_source
    from farm.gen.load import compile_shape
    for spec in specs:
        for t in spec.topologies:
            try:
                if t.generate:
                    shape = t.generate.shape()
                    compile_shape(shape)
                    if shape.hooks:
                        compile_shape(shape, hooks_source(shape))
                elif t.source is None:
                    topo = TOPOLOGIES[t.name]
                    compile_topology(topo, t.slots, t.fault)
                    if topo.hooks:
                        compile_source(HOOKS_SOURCE, 1, t.fault)
                    if topo.head:
                        compile_source(topo.ext_source, t.slots, t.fault)
            except FarmError:
                continue
