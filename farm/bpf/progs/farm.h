/* Shared by every topology of the corpus: the maps the oracle reads and the
 * counter layout that farm/bpf/corpus.py mirrors (keep the two in step). */
#ifndef FARM_H
#define FARM_H
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef FARM_SLOTS
#define FARM_SLOTS 1
#endif
#define FARM_MAX_SLOTS 4
#define FARM_TARGETS_PER_SLOT 3
#define FARM_TCC_LIMIT 33
/* Our own bound on chains, far past the kernel's limit: a kernel whose counter
 * is broken must still see every program terminate. */
#define FARM_MAX_DEPTH 63
#define FARM_FELL 0x7fe11

/* What a tail-calling subprog returns when its call fell through. Opaque to
 * clang: otherwise it folds the constant into every caller, though a taken
 * tail call returns the target's value instead. */
static __always_inline int fell(void)
{
	int r = FARM_FELL;

	asm volatile("" : "+r"(r));
	return r;
}

/* Counter layout (u64 indices in one per-CPU value). */
#define C_ENTRIES 0
#define C_CANARY_BAD 1
#define C_SUBCALL 2                    /* calls of a traced subprog */
#define C_FENTRY 3
#define C_FEXIT 4
#define C_TAIL_TRAMP 5                 /* an fentry on a tail-call target ran */
#define C_EXT 6                        /* a freplace program ran */
#define C_BODY 7                       /* an fentry-traced entry's own body ran */
#define C_FALL 8                       /* + slot */
#define C_HIT 16                       /* + slot * 16 + target id */
#define C_DEPTH (C_HIT + FARM_MAX_SLOTS * 16) /* + depth, 0..FARM_MAX_DEPTH */
#define C_NR (C_DEPTH + FARM_MAX_DEPTH + 1)

struct counters {
	__u64 c[C_NR];
};

/* Per-CPU state of the run in progress: one runner per CPU, so nothing else
 * touches it while a BPF_PROG_TEST_RUN executes. */
struct scratch {
	__u32 slot;
	__u32 depth;
	__u64 seed;
	__u64 runs;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, FARM_SLOTS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

static __always_inline struct counters *ctrs(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline struct scratch *scr(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void count(__u32 idx)
{
	struct counters *c = ctrs();

	/* Hide idx's range from clang so the bounds check it would drop stays
	 * for the verifier. */
	asm volatile("" : "+r"(idx));
	if (c && idx < C_NR)
		c->c[idx]++;
}

/* A target records that it ran, and through which slot it was reached. */
static __always_inline __u32 hit(__u32 id)
{
	struct scratch *sc = scr();
	__u32 depth = 0;

	if (sc) {
		depth = ++sc->depth;
		count(C_HIT + (sc->slot & (FARM_MAX_SLOTS - 1)) * 16 + id);
	}
	return depth;
}

/* In a traced topology (FARM_TRACED), the tail-calling subprog counts its
 * own calls: what every fentry and fexit on it must match exactly. */
static __always_inline void traced_call(void)
{
#ifdef FARM_TRACED
	count(C_SUBCALL);
#endif
}

static __always_inline void record_depth(__u32 depth)
{
	count(C_DEPTH + (depth > FARM_MAX_DEPTH ? FARM_MAX_DEPTH : depth));
}

/* Start of every run of an entry program: count it, reset the chain state,
 * pick this run's slot round-robin and a fresh canary seed. */
static __always_inline struct scratch *begin_run(void)
{
	struct scratch *sc = scr();

	if (!sc)
		return 0;
	count(C_ENTRIES);
	sc->depth = 0;
	sc->slot = sc->runs % FARM_SLOTS;
	sc->runs++;
	sc->seed = (sc->runs * 0x9e3779b97f4a7c15ULL) | 1;
	return sc;
}

/* Re-read through a volatile pointer: the seed must come from the map after
 * the call, so a target that changed it is seen. */
static __always_inline __u64 seed_now(struct scratch *sc)
{
	return *(volatile __u64 *)&sc->seed;
}

/* Tail call into one of the slots with a constant key per call site, so the
 * JIT emits a direct (poked) jump for each. */
static __always_inline void tail_call_direct(void *ctx, __u32 slot)
{
	switch (slot) {
	case 0:
		bpf_tail_call_static(ctx, &jmp_table, 0);
		break;
#if FARM_SLOTS > 1
	case 1:
		bpf_tail_call_static(ctx, &jmp_table, 1);
		break;
#endif
#if FARM_SLOTS > 2
	case 2:
		bpf_tail_call_static(ctx, &jmp_table, 2);
		break;
#endif
#if FARM_SLOTS > 3
	case 3:
		bpf_tail_call_static(ctx, &jmp_table, 3);
		break;
#endif
	}
}

/* The key comes from map memory the verifier cannot know: an indirect call. */
static __always_inline void tail_call_indirect(void *ctx, struct scratch *sc)
{
	__u32 key = *(volatile __u32 *)&sc->slot;

	bpf_tail_call(ctx, &jmp_table, key);
}

#define CANARY(seed, i) ((seed) ^ (0x5a5a5a5a00000000ULL + (i)))

#define FILL_CANARIES(buf, n, seed)                                   \
	do {                                                          \
		for (int __i = 0; __i < (n); __i++)                   \
			(buf)[__i] = CANARY(seed, __i);               \
	} while (0)

#define CHECK_CANARIES(buf, n, seed)                                  \
	do {                                                          \
		for (int __i = 0; __i < (n); __i++)                   \
			if ((buf)[__i] != CANARY(seed, __i)) {        \
				count(C_CANARY_BAD);                  \
				break;                                \
			}                                             \
	} while (0)

/* Targets are t<slot>_<k>; id = slot * FARM_TARGETS_PER_SLOT + k. */
#define TARGET_ID(s, k) ((s) * FARM_TARGETS_PER_SLOT + (k))

/* A target that only records that it ran. */
#define SIMPLE_TARGET(s, k)                              \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb) \
	{                                                \
		hit(TARGET_ID(s, k));                    \
		return 0;                                \
	}

/* The tail-calling subprog of bpf2bpf-count and the hierarchies: one
 * constant-key tail call through slot 0; FARM_FELL when it fell through. */
#define DEFINE_SUBPROG_TAIL                                        \
	static __noinline int subprog_tail(struct __sk_buff *skb) \
	{                                                          \
		traced_call();                                     \
		bpf_tail_call_static(skb, &jmp_table, 0);          \
		return fell();                                     \
	}

/* The subprog of entry that freplace topologies replace. Global, not
 * static: only global functions can be replaced. The branch is never
 * taken, but it tells the verifier this function may change packet data,
 * as its replacement does (a tail call may): newer kernels refuse an
 * extension that changes more than its target. */
#define DEFINE_SUBPROG_EXT                                    \
	__noinline int subprog_ext(struct __sk_buff *skb)     \
	{                                                     \
		if (skb->len == 0xffffffff)                   \
			bpf_skb_change_proto(skb, 0, 0);      \
		return fell();                                \
	}

/* A hierarchy's target: calls the tail-calling subprog twice. */
#define HIERARCHY_TARGET(s, k)                           \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb) \
	{                                                \
		__u32 depth = hit(TARGET_ID(s, k));      \
		if (depth < FARM_MAX_DEPTH) {            \
			subprog_tail(skb);               \
			subprog_tail(skb);               \
		}                                        \
		return 0;                                \
	}

/* A chain's target: tail-calls slot 0 again below `stop`; only the deepest
 * sees its call fall through, and records the depth. */
#define CHAIN_TARGET(s, k, stop)                                  \
	SEC("tc") int t##s##_##k(struct __sk_buff *skb)          \
	{                                                         \
		__u32 depth = hit(TARGET_ID(s, k));               \
		if (depth < (stop))                               \
			bpf_tail_call_static(skb, &jmp_table, 0); \
		record_depth(depth);                              \
		return 0;                                         \
	}

char __license[] SEC("license") = "GPL";
#endif
