/* freplace: the extension side, loaded with entry's subprog_ext as its
 * target and attached by a link; it shares entry's maps, its prog_array
 * included, and starts the chain among the tc targets: 33 tail calls, the
 * replacement once per run. */
#include "farm.h"

SEC("freplace/subprog_ext")
int ext_head(struct __sk_buff *skb)
{
#ifndef FARM_FAULT_SKIP_COUNT /* test-only: a replacement that never counts */
	count(C_EXT);
#endif
	bpf_tail_call_static(skb, &jmp_table, 0);
	return fell();
}
