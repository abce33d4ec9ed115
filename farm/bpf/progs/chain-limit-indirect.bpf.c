/* chain-limit-indirect: as chain-limit-direct, through the indirect path. */
#include "farm.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	tail_call_indirect(skb, sc);
	count(C_FALL);
	return 0;
}

#define T(s, k)                                             \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)    \
	{                                                   \
		struct scratch *sc = scr();                 \
		__u32 depth = hit(TARGET_ID(s, k));         \
		if (sc && depth < FARM_MAX_DEPTH)           \
			tail_call_indirect(skb, sc);        \
		record_depth(depth);                        \
		return 0;                                   \
	}
#include "targets.h"
