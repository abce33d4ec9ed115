/* direct-subprog (the seed's case): entry -> subprog -> constant-key tail
 * call. The caller's stack must be intact when the subprog returns. */
#include "farm.h"

static __noinline int subprog_tail(struct __sk_buff *skb, __u32 slot)
{
	tail_call_direct(skb, slot);
	count(C_FALL + (slot & (FARM_MAX_SLOTS - 1)));
	return fell();
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	volatile __u64 canary[8];
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	FILL_CANARIES(canary, 8, sc->seed);
	subprog_tail(skb, sc->slot);
	CHECK_CANARIES(canary, 8, seed_now(sc));
	return 0;
}

#define T SIMPLE_TARGET
#include "targets.h"
