/* Generated shapes (farm/gen/): their counters, the per-CPU state of a run,
 * and the helpers every generated function uses. The generated source
 * defines GEN_NR (its number of counters) before including this; the layout
 * is farm/gen/model.py's Layout (keep the two in step). */
#ifndef GEN_H
#define GEN_H
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Program runs per run of an entry, far past the 34 a correct kernel allows:
 * a kernel whose tail-call counter is broken must still see every run end. */
#define GEN_GUARD 63
#define G_CANARY 0
#define G_GUARD 1

struct gen_counters {
	__u64 c[GEN_NR];
};

struct gen_scratch {
	__u32 depth;                   /* programs run so far in this entry's run */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_counters);
} gstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_scratch);
} gscratch SEC(".maps");

static __always_inline struct gen_scratch *gen_scr(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&gscratch, &zero);
}

static __always_inline void gcount(__u32 idx)
{
	__u32 zero = 0;
	struct gen_counters *c = bpf_map_lookup_elem(&gstats, &zero);

	/* hide idx's range from clang, so the bounds check stays for the verifier */
	asm volatile("" : "+r"(idx));
	if (c && idx < GEN_NR)
		c->c[idx]++;
}

/* Opaque to clang: a subprogram's return value must not be folded into its
 * callers, since a taken tail call returns the target's value instead. */
static __always_inline __u32 gen_opaque(__u32 v)
{
	asm volatile("" : "+r"(v));
	return v;
}

/* Start of an entry's run: the depth guard starts over. */
static __always_inline void gen_begin(void)
{
	struct gen_scratch *sc = gen_scr();

	if (sc)
		sc->depth = 0;
}

/* Every program counts its run, and one more program of this entry's run. */
static __always_inline void gen_enter(__u32 idx)
{
	struct gen_scratch *sc = gen_scr();

	if (sc)
		sc->depth++;
	gcount(idx);
}

/* May this run still try a tail call? Not past the guard. */
static __always_inline int gen_may_tail(void)
{
	struct gen_scratch *sc = gen_scr();

	if (!sc)
		return 0;
	if (sc->depth >= GEN_GUARD) {
		gcount(G_GUARD);
		return 0;
	}
	return 1;
}

/* The key of an indirect site: read from writable data the verifier cannot
 * know, so the JIT emits the indirect (retpoline) path. */
#define GEN_KEY(arr) (*(volatile __u32 *)&(arr))

#define GEN_CANARY(seed, i) ((seed) ^ (0x9e3779b9U * ((i) + 1)))

char __license[] SEC("license") = "GPL";
#endif
