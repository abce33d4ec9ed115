/* Shared by the refuse cases (farm/detect/refuse.py): each case is one
 * small object whose program the kernel must refuse. One object per case,
 * so a kfunc one kernel lacks only fails the case that calls it. */
#ifndef FARM_REFUSE_H
#define FARM_REFUSE_H
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

/* What every tail-call target of these cases does: nothing, visibly. */
#define PLAIN_TC(name)                                  \
	SEC("tc") int name(struct __sk_buff *skb)       \
	{                                               \
		return TC_ACT_OK;                       \
	}

char __license[] SEC("license") = "GPL";
#endif
