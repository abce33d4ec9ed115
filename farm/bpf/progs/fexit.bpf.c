/* fexit: the programs of bpf2bpf-count, counting the calls of subprog_tail,
 * with trampolines attached by the loader (corpus.py: Topology.hooks). */
#define FARM_TRACED 1
#include "bpf2bpf-count.bpf.c"
