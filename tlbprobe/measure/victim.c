/*
 * tlbprobe's victim: a steady user-space loop pinned to one CPU that counts work units
 * in fixed time slices, so that what an IPI takes from an application on that CPU shows
 * as fewer units in a slice and as a long gap between two units.
 *
 * usage: victim CPU SLICE_NS GAP_NS OUTFILE
 * Prints "ready" once pinned and calibrated, then appends one record per slice to
 * OUTFILE until SIGTERM or SIGINT: six native int64s: slice start and end
 * (CLOCK_MONOTONIC ns, the clock Python's time.monotonic() reads), work units
 * completed, the longest time between two consecutive units (ns), how many gaps were
 * longer than the unit's own time plus GAP_NS (interruptions: an IPI, a timer tick),
 * and the time those gaps took beyond the unit's own time (ns: what the interruptions
 * took from the loop). A record is written (and flushed) per slice, so the driver can
 * read the slices of a phase as soon as it ends. The unit's own time is the shortest
 * of 20000 units measured at start.
 *
 * A unit is UNIT steps of a linear congruential generator on a volatile: no memory
 * traffic beyond one cache line, no system call, the same time every time, so the
 * loop's own rate is steady and any drop is time the CPU spent elsewhere.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UNIT 64

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static inline int64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	cpu_set_t set;
	FILE *out;
	volatile uint64_t x = 1;
	int64_t start, last, max_gap = 0, units = 0, slice, over_ns, gaps = 0, excess = 0, unit_ns;
	int cpu, i;

	if (argc != 5) {
		fprintf(stderr, "usage: victim CPU SLICE_NS GAP_NS OUTFILE\n");
		return 2;
	}
	cpu = atoi(argv[1]);
	slice = atoll(argv[2]);
	over_ns = atoll(argv[3]);
	if (slice <= 0) {
		fprintf(stderr, "victim: SLICE_NS must be positive\n");
		return 2;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("victim: sched_setaffinity");
		return 1;
	}
	out = fopen(argv[4], "ab");
	if (!out) {
		perror(argv[4]);
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	unit_ns = INT64_MAX;
	last = now_ns();
	for (i = 0; i < 20000; i++) {
		int64_t now;
		int j;

		for (j = 0; j < UNIT; j++)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		now = now_ns();
		if (now - last < unit_ns)
			unit_ns = now - last;
		last = now;
	}
	printf("ready %lld\n", (long long)unit_ns);
	fflush(stdout);

	start = last = now_ns();
	while (!stop) {
		int64_t now, gap;

		for (i = 0; i < UNIT; i++)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		now = now_ns();
		gap = now - last;
		if (gap > max_gap)
			max_gap = gap;
		if (gap > unit_ns + over_ns) {
			gaps++;
			excess += gap - unit_ns;
		}
		last = now;
		units++;
		if (now - start >= slice) {
			int64_t rec[6] = { start, now, units, max_gap, gaps, excess };

			fwrite(rec, sizeof(rec), 1, out);
			fflush(out);
			start = now;
			units = 0;
			max_gap = 0;
			gaps = 0;
			excess = 0;
		}
	}
	fclose(out);
	return 0;
}
