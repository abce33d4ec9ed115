/* hierarchy-freplace: the tc side. entry calls subprog_ext, replaced by
 * ext_head of hierarchy-freplace.ext.bpf.c, which starts the hierarchy
 * among this object's tc targets (every one calls a tail-calling subprog
 * twice); entry records the depth the hierarchy reached. */
#include "farm.h"

DEFINE_SUBPROG_TAIL

DEFINE_SUBPROG_EXT

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	subprog_ext(skb);
	record_depth(sc->depth);
	return 0;
}

#define T(s, k) HIERARCHY_TARGET(s, k)
#include "targets.h"
