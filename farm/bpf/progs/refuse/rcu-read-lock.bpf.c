/* tail-call-in-rcu-read-lock (tailcall_fail.c reject_tail_call_rcu_lock):
 * the target would run inside a read-side section it never closes. */
#include "refuse.h"

extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

SEC("tc")
int entry(struct __sk_buff *skb)
{
	bpf_rcu_read_lock();
	bpf_tail_call_static(skb, &jmp_table, 0);
	bpf_rcu_read_unlock();
	return TC_ACT_OK;
}

/* accepted, the shape runs with this in slot 0 */
PLAIN_TC(plain_target)
