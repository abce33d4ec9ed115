/* freplace: the tc side. entry calls subprog_ext, which farm replaces with
 * the freplace program ext_head of freplace.ext.bpf.c; that one starts a
 * chain among this object's tc targets through the same prog_array (the
 * kernel selftest tailcall_freplace's extension tail-calling, under churn;
 * an extension itself can no longer sit in a prog_array: see the refuse
 * checks). subprog_ext's own body only runs if the replacement is gone, and
 * then the run counts as a fall-through. */
#include "farm.h"

DEFINE_SUBPROG_EXT

SEC("tc")
int entry(struct __sk_buff *skb)
{
	if (!begin_run())
		return 1;
	if (subprog_ext(skb) == FARM_FELL)
		count(C_FALL);
	return 0;
}

#define T(s, k) CHAIN_TARGET(s, k, FARM_MAX_DEPTH)
#include "targets.h"
