/* tail-call-leaks-reference (tailcall_fail.c reject_tail_call_ref): a
 * socket reference taken by bpf_sk_lookup_tcp would never be released
 * once the program is left by a tail call. */
#include "refuse.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	sk = bpf_sk_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		bpf_tail_call_static(skb, &jmp_table, 0);
		bpf_sk_release(sk);
	}
	return TC_ACT_OK;
}

/* accepted, the shape runs with this in slot 0 */
PLAIN_TC(plain_target)
