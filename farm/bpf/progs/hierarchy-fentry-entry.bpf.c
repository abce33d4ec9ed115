/* hierarchy-fentry-entry: the tc side (the selftest's tc_dummy). Its fentry,
 * ext_head of hierarchy-fentry-entry.ext.bpf.c, runs before this body: it
 * starts the run and the hierarchy; the body records how deep it went and
 * that it ran (once per run, as the fentry must). */
#include "farm.h"

SEC("tc")
int entry(struct __sk_buff *skb)
{
	struct scratch *sc = scr();

	count(C_BODY);
	if (sc)
		record_depth(sc->depth);
	return 0;
}
