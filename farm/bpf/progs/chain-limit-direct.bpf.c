/* chain-limit-direct: every target tail-calls its own slot again with a
 * constant key until the kernel's limit stops it: 33 tail calls. */
#include "farm.h"

#ifdef FARM_FAULT_SHORT_CHAIN
#define CHAIN_STOP 20 /* test-only: a chain that stops early */
#else
#define CHAIN_STOP FARM_MAX_DEPTH
#endif

SEC("tc")
int entry(struct __sk_buff *skb)
{
	if (!begin_run())
		return 1;
	bpf_tail_call_static(skb, &jmp_table, 0);
	count(C_FALL);
	return 0;
}

#define T(s, k) CHAIN_TARGET(s, k, CHAIN_STOP)
#include "targets.h"
