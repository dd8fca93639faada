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
 *  - when it owns a writer slot, loads and stores its own 8-byte word in the first
 *    page of every 2 MiB chunk of the range, checking that the word still holds what
 *    it stored last time. This is the hardware walker: the CPU's TLB. A flush that
 *    missed this CPU leaves it writing into a small page that the collapse has
 *    already copied and freed; the write is lost and the check sees the older value.
 *
 * Slot s of a chunk is the word at byte offset s * 64 (one cache line each), s < 64:
 * race.py leaves those words out of its pattern check. A lost write is counted when
 * the thread reads its word back (during the run) and once more for every word that
 * does not hold the final value when the walkers stop.
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
#include <unistd.h>

#define CHUNK (2UL << 20)
#define WALK_BYTES (4UL * 4096)
#define MAX_SLOTS 64
#define SLOT_WORDS 8 /* a slot is one 64-byte line: words s * 8 */

struct walker {
	struct walkers *set;
	pthread_t tid;
	int cpu, index, slot; /* slot < 0: no writes */
	uint64_t calls, during, errors, lost, writes;
	uint64_t *expect; /* per chunk: the value this thread stored last */
};

struct walkers {
	uintptr_t base;
	size_t size;
	volatile int stop, window;
	int n;
	struct walker w[];
};

/* What the caller reads back after walkers_stop(). */
struct walker_totals {
	uint64_t calls, during, errors, lost, writes, writers;
};

static volatile uint64_t *slot_word(struct walkers *set, size_t chunk, int slot)
{
	return (volatile uint64_t *)(set->base + chunk * CHUNK) + (size_t)slot * SLOT_WORDS;
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

static void write_pass(struct walker *me, size_t chunks)
{
	for (size_t c = 0; c < chunks; c++) {
		volatile uint64_t *p = slot_word(me->set, c, me->slot);
		uint64_t v = *p;

		if (v != me->expect[c])
			me->lost++;
		me->expect[c] = v + 1;
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
		if (me->slot >= 0)
			write_pass(me, chunks);
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
	for (int i = 0; i < n; i++) {
		struct walker *me = &set->w[i];
		me->set = set;
		me->cpu = cpus[i];
		me->index = i;
		me->slot = (write && chunks && i < MAX_SLOTS) ? i : -1;
		if (me->slot >= 0) {
			me->expect = calloc(chunks, sizeof(uint64_t));
			if (!me->expect)
				me->slot = -1;
			for (size_t c = 0; me->expect && c < chunks; c++)
				me->expect[c] = *slot_word(set, c, me->slot);
		}
		if (pthread_create(&me->tid, NULL, walk, me) != 0)
			break;
		set->n = i + 1;
	}
	return set;
}

void walkers_window(struct walkers *set, int on)
{
	set->window = on;
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
				if (*slot_word(set, c, me->slot) != me->expect[c])
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
