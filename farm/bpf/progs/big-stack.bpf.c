/* big-stack: large frames around a tail call from a subprog, each filled
 * with canaries that must be intact after every return. */
#include "farm.h"

static __noinline int subprog_tail(struct __sk_buff *skb, __u64 seed)
{
	volatile __u64 canary[12];

	FILL_CANARIES(canary, 12, seed);
	bpf_tail_call_static(skb, &jmp_table, 0);
	count(C_FALL);
	CHECK_CANARIES(canary, 12, seed);
	return fell();
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	volatile __u64 canary[16];
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	FILL_CANARIES(canary, 16, sc->seed);
	subprog_tail(skb, sc->seed);
	CHECK_CANARIES(canary, 16, seed_now(sc));
	return 0;
}

/* A target with a full 256-byte frame of its own. */
#define T(s, k)                                                    \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)           \
	{                                                          \
		volatile __u64 canary[32];                         \
		struct scratch *sc = scr();                        \
		if (!sc)                                           \
			return 1;                                  \
		hit(TARGET_ID(s, k));                              \
		FILL_CANARIES(canary, 32, sc->seed);               \
		CHECK_CANARIES(canary, 32, sc->seed);              \
		BREAK_CANARY(sc);                                  \
		return 0;                                          \
	}
#ifdef FARM_FAULT_BREAK_CANARY
/* test-only: the caller's expected canaries no longer match its stack */
#define BREAK_CANARY(sc) ((sc)->seed ^= 1)
#else
#define BREAK_CANARY(sc) ((void)0)
#endif
#include "targets.h"
