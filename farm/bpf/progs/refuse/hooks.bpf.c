/* tail-call-across-hooks ("bpf: Prevent tail call between progs attached
 * to different hooks"): fentry programs traced onto functions of different
 * prototypes must not share a prog_array, or the callee would read the
 * caller's arguments as its own. `fa` traces a tc program and owns the
 * jmp_table; `fb` traces an xdp program: a fixed kernel refuses fb there. */
#include "refuse.h"

SEC("tc")
int target_a(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("xdp")
int target_b(struct xdp_md *xdp)
{
	return XDP_PASS;
}

/* The SEC() names are placeholders: targets are set at load time. */
SEC("fentry/target_a")
int fa(void *ctx)
{
	bpf_tail_call_static(ctx, &jmp_table, 0);
	return 0;
}

SEC("fentry/target_b")
int fb(void *ctx)
{
	return 0;
}

/* The control: fentry on target_a itself, the owner's own prototype, must
 * go in; otherwise a refusal of fb would say nothing about hooks. */
SEC("fentry/target_a")
int fsame(void *ctx)
{
	return 0;
}
