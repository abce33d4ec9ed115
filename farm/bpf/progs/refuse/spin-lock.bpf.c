/* tail-call-under-spin-lock (tailcall_fail.c reject_tail_call_spin_lock):
 * a tail call would leave the lock held forever. */
#include "refuse.h"

struct locked {
	struct bpf_spin_lock lock;
	int value;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locked);
} locks SEC(".maps");

SEC("tc")
int entry(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct locked *l = bpf_map_lookup_elem(&locks, &zero);

	if (!l)
		return TC_ACT_OK;
	bpf_spin_lock(&l->lock);
#ifndef FARM_REFUSE_FAULT_ALLOWED
	bpf_tail_call_static(skb, &jmp_table, 0);
	bpf_spin_unlock(&l->lock);
#else
	/* test-only: the lock is released first, a shape every kernel allows */
	bpf_spin_unlock(&l->lock);
	bpf_tail_call_static(skb, &jmp_table, 0);
#endif
	return TC_ACT_OK;
}

/* accepted, the shape runs with this in slot 0 */
PLAIN_TC(plain_target)
