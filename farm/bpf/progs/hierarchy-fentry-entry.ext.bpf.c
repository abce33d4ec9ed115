/* hierarchy-fentry-entry: fentry programs on entry, all loaded with entry
 * as their target; ext_head is attached, the targets only sit in this
 * object's prog_array (tailcall_bpf2bpf_hierarchy_fentry's tail calls
 * inside a trampoline): 33 tail calls, the head once per run. */
#include "farm.h"

static __noinline int subprog_tail(void *ctx)
{
	bpf_tail_call_static(ctx, &jmp_table, 0);
	return fell();
}

SEC("fentry/entry")
int ext_head(void *ctx)
{
	if (!begin_run())
		return 0;
	count(C_FENTRY);
	subprog_tail(ctx);
	subprog_tail(ctx);
	return 0;
}

#define T(s, k)                                            \
	SEC("fentry/entry") int t##s##_##k(void *ctx)     \
	{                                                  \
		__u32 depth = hit(TARGET_ID(s, k));        \
		if (depth < FARM_MAX_DEPTH) {              \
			subprog_tail(ctx);                 \
			subprog_tail(ctx);                 \
		}                                          \
		return 0;                                  \
	}
#include "targets.h"
