/* freplace: the tc side. entry calls subprog_ext, which farm replaces with
 * the freplace program ext_head of freplace.ext.bpf.c; that one starts a
 * chain among this object's tc targets through the same prog_array (the
 * kernel selftest tailcall_freplace's extension tail-calling, under churn;
 * an extension itself can no longer sit in a prog_array: see the refuse
 * checks). subprog_ext's own body only runs if the replacement is gone, and
 * then the run counts as a fall-through. */
#include "farm.h"

/* Global, not static: only global functions can be replaced. */
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
	if (!begin_run())
		return 1;
	if (subprog_ext(skb) == FARM_FELL)
		count(C_FALL);
	return 0;
}

/* Only the deepest target sees its call fall through: it records. */
#define T(s, k)                                                   \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)          \
	{                                                         \
		__u32 depth = hit(TARGET_ID(s, k));               \
		if (depth < FARM_MAX_DEPTH)                       \
			bpf_tail_call_static(skb, &jmp_table, 0); \
		record_depth(depth);                              \
		return 0;                                         \
	}
#include "targets.h"
