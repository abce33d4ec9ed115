/* Programs attached through trampolines to the corpus's own programs
 * (farm/bpf/hooks.py loads one per traced program with libbpf, its target
 * set at load time; the SEC() names below are only placeholders). Each
 * counts into the topology's stats map, shared with it, on the runner's
 * CPU: the oracle compares the counts with the calls they trace. */
#include "farm.h"

SEC("fentry/subprog_tail")
int fentry_sub(void *ctx)
{
	count(C_FENTRY);
	return 0;
}

SEC("fexit/subprog_tail")
int fexit_sub(void *ctx)
{
#ifndef FARM_FAULT_SKIP_COUNT /* test-only: an fexit that never counts */
	count(C_FEXIT);
#endif
	return 0;
}

/* On the entry program itself: once per run. */
SEC("fentry/entry")
int fentry_main(void *ctx)
{
	count(C_FENTRY);
	return 0;
}

/* On a tail-call target itself: a tail call jumps past the target's
 * trampoline, so this must never run. */
SEC("fentry/t0_0")
int fentry_tail_target(void *ctx)
{
	count(C_TAIL_TRAMP);
	return 0;
}
