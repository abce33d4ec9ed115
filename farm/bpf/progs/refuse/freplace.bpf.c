/* freplace-target-into-prog-array and prog-array-member-extended-by-freplace
 * (tailcalls.c test_tailcall_freplace, "bpf: Prevent tailcall infinite loop
 * caused by freplace"): `ext` replaces entry's subprog and tail-calls
 * through its own jmp_table. With entry in that table, entry -> subprog
 * (ext) -> entry -> ... loops: an unfixed kernel resets the tail-call count
 * in ext, so the loop never ends. A fixed kernel refuses to have one
 * program both extended and in a prog_array, in either order. */
#include "refuse.h"

__attribute__((noinline)) int subprog_tc(struct __sk_buff *skb)
{
	/* opaque to clang, so the call and the subprog stay */
	int r = TC_ACT_OK;

	asm volatile("" : "+r"(r));
	/* An extension may change packet data (a tail call does) only where
	 * the original may too: this call (protocol 0 fails, changing nothing)
	 * tells the verifier so. */
	bpf_skb_change_proto(skb, 0, 0);
	return r;
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	return subprog_tc(skb);
}

/* The SEC() name is a placeholder: the target is set at load time. */
SEC("freplace/subprog_tc")
int ext(struct __sk_buff *skb)
{
	bpf_tail_call_static(skb, &jmp_table, 0);
	return TC_ACT_OK;
}
