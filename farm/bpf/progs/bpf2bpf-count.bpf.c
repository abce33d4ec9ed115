/* bpf2bpf-count: a bpf2bpf call, then a tail call chain; the counter must
 * travel through every subprogram frame: 33 tail calls in all. */
#include "farm.h"

DEFINE_SUBPROG_TAIL

SEC("tc")
int entry(struct __sk_buff *skb)
{
	if (!begin_run())
		return 1;
	if (subprog_tail(skb) == FARM_FELL)
		count(C_FALL);
	return 0;
}

/* Only the deepest target sees its own call fall through: it records. */
#define T(s, k)                                                   \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)          \
	{                                                         \
		__u32 depth = hit(TARGET_ID(s, k));               \
		if (depth >= FARM_MAX_DEPTH ||                    \
		    subprog_tail(skb) == FARM_FELL)               \
			record_depth(depth);                      \
		return 0;                                         \
	}
#include "targets.h"
