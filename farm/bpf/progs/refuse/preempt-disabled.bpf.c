/* tail-call-preempt-disabled (tailcall_fail.c reject_tail_call_preempt_lock):
 * the target would run with preemption left disabled. */
#include "refuse.h"

extern void bpf_preempt_disable(void) __ksym;
extern void bpf_preempt_enable(void) __ksym;

SEC("tc")
int entry(struct __sk_buff *skb)
{
	bpf_preempt_disable();
	bpf_tail_call_static(skb, &jmp_table, 0);
	bpf_preempt_enable();
	return TC_ACT_OK;
}

/* accepted, the shape runs with this in slot 0 */
PLAIN_TC(plain_target)
