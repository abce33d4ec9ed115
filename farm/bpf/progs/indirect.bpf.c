/* indirect: the key comes from map memory, so the JIT emits the indirect
 * tail call (retpoline / lfence / ITS thunk, by CPU). */
#include "farm.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	tail_call_indirect(skb, sc);
	count(C_FALL + (sc->slot & (FARM_MAX_SLOTS - 1)));
	return 0;
}

#define T SIMPLE_TARGET
#include "targets.h"
