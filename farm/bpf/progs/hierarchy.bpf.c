/* hierarchy: every program calls a tail-calling subprog twice. The limit is
 * shared by the whole hierarchy: 33 tail calls, 34 programs run in total
 * (the kernel selftest tailcall_bpf2bpf_hierarchy_1). */
#include "farm.h"

static __noinline int subprog_tail(struct __sk_buff *skb)
{
	traced_call();
	bpf_tail_call_static(skb, &jmp_table, 0);
	return fell();
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	subprog_tail(skb);
	subprog_tail(skb);
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
