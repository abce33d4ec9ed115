/* Baseline for bench/engine.py: prog_array updates from a C libbpf loop.
 * usage: update_loop MAP_PIN SECONDS OPS PROG_PIN... ; OPS is a string of
 * r (replace/install with the next program) and d (delete), cycled. */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int map, fds[16], n = 0, key = 0;
	long count = 0;
	double end, start;
	const char *ops;
	size_t op = 0, prog = 0;

	if (argc < 5)
		return 2;
	map = bpf_obj_get(argv[1]);
	ops = argv[3];
	for (int i = 4; i < argc && n < 16; i++)
		fds[n++] = bpf_obj_get(argv[i]);
	if (map < 0 || n == 0)
		return 3;
	start = now();
	end = start + atof(argv[2]);
	while (now() < end) {
		for (int i = 0; i < 64; i++) {
			if (ops[op] == 'd') {
				bpf_map_delete_elem(map, &key);
			} else {
				if (bpf_map_update_elem(map, &key, &fds[prog], BPF_ANY))
					return 4;
				prog = (prog + 1) % n;
			}
			op = (op + 1) % strlen(ops);
			count++;
		}
	}
	printf("%ld %f\n", count, now() - start);
	return 0;
}
