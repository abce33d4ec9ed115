/* direct-main: the entry tail-calls slot k with a constant key. */
#include "farm.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	tail_call_direct(skb, sc->slot);
	count(C_FALL + (sc->slot & (FARM_MAX_SLOTS - 1)));
	return 0;
}

#define T SIMPLE_TARGET
#include "targets.h"
