/* The writer's hot loop: one bpf() per update, each logged in its slot's
 * generation log (layout of farm/stress/genlog.py) before and after the
 * syscall. Compiled on the host by farm/stress/native.py, called via ctypes. */
#include <errno.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PENDING INT64_MAX
#define BPF_MAP_DELETE_ELEM 3

struct farm_step {
	volatile int64_t *head;  /* the ring's update count */
	volatile int64_t *base;  /* its first entry: ts_before, ts_after, value */
	int64_t cap;
	int64_t value;
	void *attr;
	int32_t cmd;
	int32_t size;
};

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Runs the steps round and round until the deadline or *stop; returns the
 * number of updates made, or -1 with *err and *err_step set. */
long farm_churn(const struct farm_step *steps, long n, int64_t deadline_ns, int64_t interval_ns,
		volatile int64_t *stop, volatile int64_t *progress, int *err, long *err_step)
{
	int64_t next_at = now_ns();
	long done = 0;

	for (;;) {
		for (long i = 0; i < n; i++) {
			const struct farm_step *s = &steps[i];
			int64_t k = *s->head;
			volatile int64_t *e = s->base + (k % s->cap) * 3;

			e[1] = PENDING;
			e[2] = s->value;
			e[0] = now_ns();
			__atomic_store_n(s->head, k + 1, __ATOMIC_RELEASE);
			long ret = syscall(SYS_bpf, s->cmd, s->attr, s->size);
			e[1] = now_ns();
			if (ret < 0 && !(s->cmd == BPF_MAP_DELETE_ELEM && errno == ENOENT)) {
				*err = errno;
				*err_step = i;
				return -1;
			}
			*progress = ++done;
			if (interval_ns) {
				next_at += interval_ns;
				int64_t pause = next_at - now_ns();
				if (pause > 0) {
					struct timespec ts = { pause / 1000000000LL, pause % 1000000000LL };
					nanosleep(&ts, 0);
				}
			}
		}
		if (*stop || now_ns() >= deadline_ns)
			return done;
	}
}
