/*
 * tlbprobe's GUP-fast benchmark: threads of one process pinning pages of one buffer
 * through the lock-less page-table walk, timed per thread.
 *
 * usage: gupbench PATH BACKING PAGES_PER_CALL CALLS CPU[,CPU...] [FILE]
 *   PATH     gup_test  ioctl(PIN_FAST_BENCHMARK) on /sys/kernel/debug/gup_test
 *                      (mm/gup_test.c, CONFIG_GUP_TEST): pin_user_pages_fast() in the
 *                      kernel's own loop, timed by the kernel (get_delta_usec)
 *            vmsplice  vmsplice() of the pages into a pipe (fs/splice.c ->
 *                      iov_iter_get_pages2() -> get_user_pages_fast(), at most 16
 *                      pages a call), then splice() of the pipe to /dev/null, which
 *                      drops the references without copying: every kernel has it
 *            odirect   pread() of FILE opened O_DIRECT into the pages
 *                      (iov_iter_extract_pages() -> pin_user_pages_fast()): includes
 *                      the read itself
 *   BACKING  4k (MADV_NOHUGEPAGE) or 2m (MADV_HUGEPAGE, each thread's 2 MiB window
 *            one huge page when THP allows)
 *   One thread per CPU in the list, pinned there; each works on a window of its own
 *   (2 MiB, 2 MiB-aligned) of the shared buffer, PAGES_PER_CALL 4 KiB pages per call,
 *   cycling through it, until it has made CALLS calls.
 * Output, one line per thread: "thread I cpu C calls N pages P ns T", T the time spent
 * (gup_test: the kernel's get time; others: wall time of the calls), then "huge H" with
 * H the buffer's AnonHugePages in kB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define WINDOW (2UL << 20)

/* mm/gup_test.h, as the kernel defines it (6.12) */
struct gup_test {
	uint64_t get_delta_usec;
	uint64_t put_delta_usec;
	uint64_t addr;
	uint64_t size;
	uint32_t nr_pages_per_call;
	uint32_t gup_flags;
	uint32_t test_flags;
	uint32_t which_pages[8];
};
#define PIN_FAST_BENCHMARK _IOWR('g', 2, struct gup_test)
#define GUP_FOLL_WRITE 0x1

struct worker {
	pthread_t tid;
	int idx, cpu;
	char *window;
	long calls, pages;
	int64_t ns;
	int err;
};

static const char *path;
static long per_call, calls_wanted;
static int gup_fd = -1, file_fd = -1;

static int64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	cpu_set_t set;
	long slots = WINDOW / (per_call * PAGE), slot = 0;
	int64_t t0;

	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set)) {
		w->err = errno;
		return NULL;
	}
	if (!strcmp(path, "gup_test")) {
		while (w->calls < calls_wanted) {
			struct gup_test g;

			memset(&g, 0, sizeof(g));
			g.addr = (uint64_t)(uintptr_t)w->window;
			g.size = (calls_wanted - w->calls < slots ? calls_wanted - w->calls : slots) * per_call * PAGE;
			g.nr_pages_per_call = per_call;
			g.gup_flags = GUP_FOLL_WRITE;
			if (ioctl(gup_fd, PIN_FAST_BENCHMARK, &g)) {
				w->err = errno;
				return NULL;
			}
			w->calls += g.size / (per_call * PAGE);
			w->pages += g.size / PAGE;
			w->ns += (int64_t)g.get_delta_usec * 1000;
		}
		return NULL;
	}
	if (!strcmp(path, "vmsplice")) {
		int p[2], devnull = open("/dev/null", O_WRONLY);

		if (devnull < 0 || pipe(p)) {
			w->err = errno;
			return NULL;
		}
		fcntl(p[1], F_SETPIPE_SZ, (int)(per_call * PAGE * 2));
		t0 = now_ns();
		while (w->calls < calls_wanted) {
			struct iovec iov = { w->window + slot * per_call * PAGE, per_call * PAGE };
			ssize_t n = vmsplice(p[1], &iov, 1, 0), left;

			if (n < 0) {
				w->err = errno;
				break;
			}
			for (left = n; left > 0;) {
				ssize_t m = splice(p[0], NULL, devnull, NULL, left, 0);

				if (m <= 0) {
					w->err = m < 0 ? errno : EIO;
					break;
				}
				left -= m;
			}
			w->calls++;
			w->pages += n / PAGE;
			slot = (slot + 1) % slots;
		}
		w->ns = now_ns() - t0;
		close(p[0]);
		close(p[1]);
		close(devnull);
		return NULL;
	}
	t0 = now_ns(); /* odirect */
	while (w->calls < calls_wanted) {
		ssize_t n = pread(file_fd, w->window + slot * per_call * PAGE, per_call * PAGE,
				  (off_t)(slot * per_call * PAGE));

		if (n < 0) {
			w->err = errno;
			break;
		}
		w->calls++;
		w->pages += n / PAGE;
		slot = (slot + 1) % slots;
	}
	w->ns = now_ns() - t0;
	return NULL;
}

static long huge_kb(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	unsigned long lo, hi, start = (unsigned long)buf;
	long kb = 0;
	int inside = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			inside = lo >= start && lo < start + len;
		else if (inside && !strncmp(line, "AnonHugePages:", 14))
			kb += atol(line + 14);
	}
	fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	struct worker *w;
	int n = 0, i, cpus[1024];
	char *list, *tok, *raw, *buf;
	size_t len;

	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: gupbench gup_test|vmsplice|odirect 4k|2m PAGES_PER_CALL CALLS CPU[,CPU...] [FILE]\n");
		return 2;
	}
	path = argv[1];
	per_call = atol(argv[3]);
	calls_wanted = atol(argv[4]);
	if (per_call < 1 || per_call > 512 || calls_wanted < 1) {
		fprintf(stderr, "gupbench: PAGES_PER_CALL must be 1..512, CALLS positive\n");
		return 2;
	}
	if (!strcmp(path, "vmsplice") && per_call > 16) {
		fprintf(stderr, "gupbench: vmsplice takes at most 16 pages a call\n");
		return 2;
	}
	list = strdup(argv[5]);
	for (tok = strtok(list, ","); tok && n < 1024; tok = strtok(NULL, ","))
		cpus[n++] = atoi(tok);
	if (!strcmp(path, "gup_test")) {
		gup_fd = open("/sys/kernel/debug/gup_test", O_RDWR);
		if (gup_fd < 0) {
			perror("gupbench: /sys/kernel/debug/gup_test");
			return 3;
		}
	} else if (!strcmp(path, "odirect")) {
		if (argc != 7) {
			fprintf(stderr, "gupbench: odirect needs FILE\n");
			return 2;
		}
		file_fd = open(argv[6], O_RDONLY | O_DIRECT);
		if (file_fd < 0) {
			perror(argv[6]);
			return 3;
		}
	} else if (strcmp(path, "vmsplice")) {
		fprintf(stderr, "gupbench: unknown path %s\n", path);
		return 2;
	}
	len = n * WINDOW;
	raw = mmap(NULL, len + WINDOW, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("gupbench: mmap");
		return 1;
	}
	buf = (char *)(((uintptr_t)raw + WINDOW - 1) & ~(WINDOW - 1));
	madvise(buf, len, strcmp(argv[2], "2m") ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
	memset(buf, 0x5a, len);
	w = calloc(n, sizeof(*w));
	for (i = 0; i < n; i++) {
		w[i].idx = i;
		w[i].cpu = cpus[i];
		w[i].window = buf + i * WINDOW;
		if (pthread_create(&w[i].tid, NULL, run, &w[i])) {
			perror("gupbench: pthread_create");
			return 1;
		}
	}
	for (i = 0; i < n; i++)
		pthread_join(w[i].tid, NULL);
	for (i = 0; i < n; i++) {
		if (w[i].err) {
			fprintf(stderr, "gupbench: thread %d: %s\n", i, strerror(w[i].err));
			return 4;
		}
		printf("thread %d cpu %d calls %ld pages %ld ns %lld\n", i, w[i].cpu, w[i].calls, w[i].pages,
		       (long long)w[i].ns);
	}
	printf("huge %ld\n", huge_kb(buf, len));
	return 0;
}
