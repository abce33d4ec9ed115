/* hierarchy: every program calls a tail-calling subprog twice. The limit is
 * shared by the whole hierarchy: 33 tail calls, 34 programs run in total
 * (the kernel selftest tailcall_bpf2bpf_hierarchy_1). */
#include "farm.h"

DEFINE_SUBPROG_TAIL

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

#define T(s, k) HIERARCHY_TARGET(s, k)
#include "targets.h"
