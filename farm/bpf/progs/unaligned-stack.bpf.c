/* unaligned-stack: odd stack sizes around bpf2bpf calls and a tail call
 * chain; the counter (kept at an offset from the frame) and the data must
 * both come out right: 33 tail calls, every byte intact. */
#include "farm.h"

#define FILL_BYTES(buf, n, seed)                                  \
	do {                                                      \
		for (int __i = 0; __i < (n); __i++)               \
			(buf)[__i] = (__u8)(CANARY(seed, __i) >> (__i & 7)); \
	} while (0)
#define CHECK_BYTES(buf, n, seed)                                 \
	do {                                                      \
		for (int __i = 0; __i < (n); __i++)               \
			if ((buf)[__i] != (__u8)(CANARY(seed, __i) >> (__i & 7))) { \
				count(C_CANARY_BAD);              \
				break;                            \
			}                                         \
	} while (0)

static __noinline int subprog_tail(struct __sk_buff *skb, __u64 seed)
{
	volatile __u8 odd[7];

	FILL_BYTES(odd, 7, seed);
	bpf_tail_call_static(skb, &jmp_table, 0);
	CHECK_BYTES(odd, 7, seed);
	return fell();
}

SEC("tc")
int entry(struct __sk_buff *skb)
{
	volatile __u8 odd[13];
	struct scratch *sc = begin_run();

	if (!sc)
		return 1;
	FILL_BYTES(odd, 13, sc->seed);
	if (subprog_tail(skb, sc->seed) == FARM_FELL)
		count(C_FALL);
	CHECK_BYTES(odd, 13, seed_now(sc));
	return 0;
}

#define T(s, k)                                                    \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)           \
	{                                                          \
		volatile __u8 odd[21];                             \
		struct scratch *sc = scr();                        \
		__u32 depth;                                       \
		if (!sc)                                           \
			return 1;                                  \
		depth = hit(TARGET_ID(s, k));                      \
		FILL_BYTES(odd, 21, sc->seed);                     \
		if (depth >= FARM_MAX_DEPTH ||                     \
		    subprog_tail(skb, sc->seed) == FARM_FELL)      \
			record_depth(depth);                       \
		CHECK_BYTES(odd, 21, sc->seed);                    \
		return 0;                                          \
	}
#include "targets.h"
