"""The BPF C of a shape: one tc program per program, one static noinline
function per subprogram, the prog_arrays, and the counters of gen.h.

Each function starts from its constant, folds in every subprogram's return
value (acc = acc * 3 + value), and returns acc unless a tail call replaced
it. Its canaries (if it has a frame) are checked after every call and
before it returns: a callee or a tail call that broke the caller's stack
shows as G_CANARY.
"""
from __future__ import annotations

from farm.gen.model import Layout, layout
from farm.gen.shape import Call, Func, Shape

HEADER = "gen.h"


def array_name(a: int) -> str:
    return f"pa{a}"


def source(shape: Shape) -> str:
    lay = layout(shape)
    out = [f"/* farm generated shape: seed {shape.seed}, {len(shape.programs)} programs"
           f"{', ' + shape.note if shape.note else ''}.",
           " * Expected counts come from farm/gen/model.py. */",
           f"#define GEN_NR {lay.size}", f'#include "{HEADER}"', ""]
    for a, size in enumerate(shape.arrays):
        out += ["struct {", "\t__uint(type, BPF_MAP_TYPE_PROG_ARRAY);", f"\t__uint(max_entries, {size});",
                "\t__uint(key_size, sizeof(__u32));", "\t__uint(value_size, sizeof(__u32));",
                f"}} {array_name(a)} SEC(\".maps\");", ""]
    indirect = [i for i, s in enumerate(shape.sites) if not s.direct]
    if indirect:
        # writable data: the verifier cannot know these keys
        keys = ", ".join(str(shape.slots[shape.sites[i].slot].key) if not shape.sites[i].direct else "0"
                         for i in range(len(shape.sites)))
        out += [f"__u32 gen_keys[{len(shape.sites)}] = {{ {keys} }};", ""]
    # level 2 first: a function is defined before its callers
    for s in sorted(range(len(shape.subs)), key=lambda s: -shape.subs[s].level):
        out += _function(shape, lay, shape.subs[s], lay.call(s), sub=True)
    for p, prog in enumerate(shape.programs):
        out += _function(shape, lay, prog, lay.run(p), sub=False)
    return "\n".join(out) + "\n"


def hook_program(h: int) -> str:
    return f"h{h}"


def hooks_source(shape: Shape) -> str:
    """The trampolines' object: one program per hook, each counting into
    the shape's gstats (shared at load); its target is set at load time."""
    lay = layout(shape)
    out = [f"/* farm generated shape: seed {shape.seed}, its trampolines. */",
           f"#define GEN_NR {lay.size}", f'#include "{HEADER}"', ""]
    for h, hook in enumerate(shape.hooks):
        out += [f'SEC("{hook.kind}/{hook.func}")', f"int {hook_program(h)}(void *ctx)", "{",
                f"\tgcount({lay.hook(h)});", "\treturn 0;", "}", ""]
    return "\n".join(out)


def _function(shape: Shape, lay: Layout, f: Func, counter: int, sub: bool) -> list[str]:
    head = (f"static __noinline int {f.name}(struct __sk_buff *skb)" if sub
            else f'SEC("tc")\nint {f.name}(struct __sk_buff *skb)')
    lines = [head, "{"]
    if f.frame:
        lines += [f"\tvolatile __u32 buf[{f.frame}];", "\t__u32 seed = bpf_get_prandom_u32();"]
    lines.append(f"\t__u32 acc = {f.ret};")
    lines.append("")
    if f.kind == "entry":
        lines.append("\tgen_begin();")
    lines.append(f"\t{'gcount' if sub else 'gen_enter'}({counter});")
    lines += [f"\tbuf[{i}] = GEN_CANARY(seed, {i});" for i in range(f.frame)]
    for a in f.body:
        if isinstance(a, Call):
            lines.append(f"\tacc = acc * 3 + (__u32){shape.subs[a.sub].name}(skb);")
        else:
            site = shape.sites[a.site]
            slot = shape.slots[site.slot]
            arr = array_name(slot.array)
            call = (f"bpf_tail_call_static(skb, &{arr}, {slot.key});" if site.direct
                    else f"bpf_tail_call(skb, &{arr}, GEN_KEY(gen_keys[{a.site}]));")
            lines += ["\tif (gen_may_tail()) {", f"\t\tgcount({lay.attempt(a.site)});", f"\t\t{call}",
                      f"\t\tgcount({lay.fall(a.site)});", "\t}"]
        lines += _check(f)
    if not f.body:
        lines += _check(f)
    lines += ["\treturn gen_opaque(acc);", "}", ""]
    return lines


def _check(f: Func) -> list[str]:
    if not f.frame:
        return []
    cond = " || ".join(f"buf[{i}] != GEN_CANARY(seed, {i})" for i in range(f.frame))
    return [f"\tif ({cond})", "\t\tgcount(G_CANARY);"]
