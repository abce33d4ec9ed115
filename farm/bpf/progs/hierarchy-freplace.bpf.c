/* hierarchy-freplace: the tc side. entry calls subprog_ext, replaced by
 * ext_head of hierarchy-freplace.ext.bpf.c, which starts the hierarchy
 * among this object's tc targets (every one calls a tail-calling subprog
 * twice); entry records the depth the hierarchy reached. */
#include "farm.h"

static __noinline int subprog_tail(struct __sk_buff *skb)
{
	bpf_tail_call_static(skb, &jmp_table, 0);
	return fell();
}

__noinline int subprog_ext(struct __sk_buff *skb)
{
	/* Never taken, but it tells the verifier this function may change
	 * packet data, as its replacement does (a tail call may): newer
	 * kernels refuse an extension that changes more than its target. */
	if (skb->len == 0xffffffff)
		bpf_skb_change_proto(skb, 0, 0);
	return fell();
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	subprog_ext(skb);
	record_depth(sc->depth);
	return 0;
}

#define T(s, k)                                          \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb) \
	{                                                \
		__u32 depth = hit(TARGET_ID(s, k));      \
		if (depth < FARM_MAX_DEPTH) {            \
			subprog_tail(skb);               \
			subprog_tail(skb);               \
		}                                        \
		return 0;                                \
	}
#include "targets.h"
