/* tail-call-across-prog-types (always refused): a prog_array first used by
 * a tc program takes no xdp program, whose context is another type. */
#include "refuse.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	bpf_tail_call_static(skb, &jmp_table, 0);
	return TC_ACT_OK;
}

PLAIN_TC(same_type)

SEC("xdp")
int other_type(struct xdp_md *xdp)
{
	return XDP_PASS;
}
