/*
 * race_walkers.c: the lock-less walkers of tlbprobe's --race (workloads/race.py),
 * compiled at run time as a shared library and loaded into the process whose page
 * tables are being collapsed or unshared, so that its threads walk that mm.
 *
 * Each walker is a thread pinned to one CPU. In a loop until stopped it
 *
 *  - pins four pages of the range with GUP-fast and drops them at once: vmsplice()
 *    into a pipe (iov_iter_get_pages -> get_user_pages_fast), splice() to /dev/null.
 *    This is the software walker the table sync exists for;
 *
 *  - when it owns a writer slot, loads and stores its own 8-byte word in each of the
 *    first WINDOW_PAGES pages of one 2 MiB chunk of the range, checking that each word
 *    still holds what it stored last time, and moves on to the next chunk every
 *    DWELL_NS. This is the hardware walker: the CPU's TLB. A flush that missed this
 *    CPU leaves it writing into small pages that the collapse has already copied and
 *    freed; the writes are lost and a later check sees the older value.
 *
 * Why a window that dwells: a TLB keeps few entries per set, and pages 2 MiB apart all
 * fall in one set (QEMU's software TLB is direct-mapped), so a thread that stored to
 * one page of every chunk would evict its own entries before they could go stale. 16
 * consecutive pages fit any TLB; dwelling 50 ms on a chunk, slower than the collapse
 * sweeps the range, makes the collapse front pass each writer while it stores there.
 * The writers start spread over the range.
 *
 * Slot s is the word at byte offset s * 64 of each window page (one cache line each),
 * s < 64: race.py leaves those words out of its pattern check. A lost write is counted
 * when the thread reads its word back and once more for every word that does not hold
 * the final value when the walkers stop.
 *
 * Why C: a Python walker holds the GIL between calls, so walkers would take turns
 * instead of running together, and its stores would be a few per millisecond.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (2UL << 20)
#define WALK_BYTES (4UL * 4096)
#define MAX_SLOTS 64
#define SLOT_WORDS 8 /* a slot is one 64-byte line: words s * 8 */
#define WINDOW_PAGES 16
#define DWELL_NS 50000000L

struct walker {
	struct walkers *set;
	pthread_t tid;
	int cpu, index, slot; /* slot < 0: no writes */
	uint64_t calls, during, errors, lost, writes;
	uint64_t *expect; /* per chunk and window page: the value this thread stored last */
};

struct walkers {
	uintptr_t base;
	size_t size;
	volatile int stop, window;
	int n, planned; /* threads started, threads asked for */
	struct walker w[];
};

/* What the caller reads back after walkers_stop(). */
struct walker_totals {
	uint64_t calls, during, errors, lost, writes, writers;
};

static volatile uint64_t *slot_word(struct walkers *set, size_t chunk, int page, int slot)
{
	return (volatile uint64_t *)(set->base + chunk * CHUNK + (size_t)page * 4096) + (size_t)slot * SLOT_WORDS;
}

static long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void pin_once(struct walker *me, int pw, int pr, int devnull, size_t page)
{
	struct walkers *set = me->set;
	struct iovec iov = { (void *)(set->base + page * WALK_BYTES), WALK_BYTES };
	ssize_t n = vmsplice(pw, &iov, 1, 0);

	if (n < 0) {
		me->errors++;
	} else {
		while (n > 0) {
			ssize_t m = splice(pr, NULL, devnull, NULL, (size_t)n, 0);
			if (m <= 0) {
				me->errors++;
				break;
			}
			n -= m;
		}
	}
	me->calls++;
	if (set->window)
		me->during++;
}

static void write_pass(struct walker *me, size_t c)
{
	for (int pg = 0; pg < WINDOW_PAGES; pg++) {
		volatile uint64_t *p = slot_word(me->set, c, pg, me->slot);
		uint64_t *e = &me->expect[c * WINDOW_PAGES + pg];
		uint64_t v = *p;

		if (v != *e)
			me->lost++;
		*e = v + 1;
		*p = v + 1;
		me->writes++;
	}
}

static void *walk(void *arg)
{
	struct walker *me = arg;
	struct walkers *set = me->set;
	size_t pages = set->size / WALK_BYTES, chunks = set->size / CHUNK;
	size_t k = pages ? ((size_t)me->index * 7919) % pages : 0;
	size_t c = chunks ? (size_t)me->index * chunks / (size_t)set->planned : 0;
	long since = now_ns();
	int pipefd[2], devnull;
	cpu_set_t cs;

	CPU_ZERO(&cs);
	CPU_SET(me->cpu, &cs);
	sched_setaffinity(0, sizeof(cs), &cs); /* an offline CPU: walk wherever we are */
	if (pipe(pipefd) < 0)
		return NULL;
	devnull = open("/dev/null", O_WRONLY);
	while (!set->stop && pages) {
		pin_once(me, pipefd[1], pipefd[0], devnull, k);
		k = (k + 1) % pages;
		if (me->slot >= 0) {
			write_pass(me, c);
			if (now_ns() - since >= DWELL_NS) {
				c = (c + 1) % chunks;
				since = now_ns();
			}
		}
	}
	close(pipefd[0]);
	close(pipefd[1]);
	if (devnull >= 0)
		close(devnull);
	return NULL;
}

/*
 * Start one walker per CPU in cpus[0..n). Walker i writes in slot i when write is
 * non-zero and that slot exists. Returns NULL when out of memory.
 */
struct walkers *walkers_start(uintptr_t base, size_t size, const int *cpus, int n, int write)
{
	struct walkers *set = calloc(1, sizeof(*set) + (size_t)n * sizeof(struct walker));
	size_t chunks = size / CHUNK;

	if (!set)
		return NULL;
	set->base = base;
	set->size = size;
	set->planned = n;
	for (int i = 0; i < n; i++) {
		struct walker *me = &set->w[i];
		me->set = set;
		me->cpu = cpus[i];
		me->index = i;
		me->slot = (write && chunks && i < MAX_SLOTS) ? i : -1;
		if (me->slot >= 0) {
			me->expect = calloc(chunks * WINDOW_PAGES, sizeof(uint64_t));
			if (!me->expect)
				me->slot = -1;
			for (size_t c = 0; me->expect && c < chunks; c++)
				for (int pg = 0; pg < WINDOW_PAGES; pg++)
					me->expect[c * WINDOW_PAGES + pg] = *slot_word(set, c, pg, me->slot);
		}
		if (pthread_create(&me->tid, NULL, walk, me) != 0) {
			free(me->expect);
			break;
		}
		set->n = i + 1;
	}
	return set;
}

void walkers_window(struct walkers *set, int on)
{
	set->window = on;
}

/* GUP-fast calls so far, all walkers (read while they run: a moment's figure). */
uint64_t walkers_calls(struct walkers *set)
{
	uint64_t n = 0;

	for (int i = 0; i < set->n; i++)
		n += *(volatile uint64_t *)&set->w[i].calls;
	return n;
}

/* Stop and join the walkers, check every writer's words a last time, free the set. */
void walkers_stop(struct walkers *set, struct walker_totals *t)
{
	size_t chunks = set->size / CHUNK;

	memset(t, 0, sizeof(*t));
	set->stop = 1;
	for (int i = 0; i < set->n; i++)
		pthread_join(set->w[i].tid, NULL);
	for (int i = 0; i < set->n; i++) {
		struct walker *me = &set->w[i];

		if (me->slot >= 0) {
			for (size_t c = 0; c < chunks; c++)
				for (int pg = 0; pg < WINDOW_PAGES; pg++)
					if (*slot_word(set, c, pg, me->slot) != me->expect[c * WINDOW_PAGES + pg])
						me->lost++;
			t->writers++;
		}
		t->calls += me->calls;
		t->during += me->during;
		t->errors += me->errors;
		t->lost += me->lost;
		t->writes += me->writes;
		free(me->expect);
	}
	free(set);
}
