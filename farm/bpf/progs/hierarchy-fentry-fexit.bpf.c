/* hierarchy-fentry-fexit: the programs of hierarchy, counting the calls of subprog_tail,
 * with trampolines attached by the loader (corpus.py: Topology.hooks). */
#define FARM_TRACED 1
#include "hierarchy.bpf.c"
