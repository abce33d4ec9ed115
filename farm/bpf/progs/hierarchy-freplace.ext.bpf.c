/* hierarchy-freplace: the extension side. It calls a tail-calling subprog
 * twice into the tc targets through entry's own prog_array (shared); the
 * limit is shared by the whole hierarchy: 33 tail calls
 * (tailcall_bpf2bpf_hierarchy_1's count, started inside freplace). */
#include "farm.h"

static __noinline int subprog_tail(struct __sk_buff *skb)
{
	bpf_tail_call_static(skb, &jmp_table, 0);
	return fell();
}

SEC("freplace/subprog_ext")
int ext_head(struct __sk_buff *skb)
{
	count(C_EXT);
	subprog_tail(skb);
	subprog_tail(skb);
	return 0;
}
