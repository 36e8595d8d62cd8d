// SPDX-License-Identifier: GPL-2.0
// Drives /dev/lt_guard through every case of kmod/lt_guard.c: the four ABBA pairs, then the
// notifier, the NOFS and NOIO allocations under their locks, and an munmap that runs the
// notifier's callback. Exits nonzero if a case failed or the callback never ran.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod/lt_guard.h"

static int fd;

static void must(unsigned long cmd, const char *what)
{
	if (ioctl(fd, cmd) != 0) {
		fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
		exit(1);
	}
}

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len = 16 * page;
	char *p;
	int callbacks;

	fd = open("/dev/lt_guard", O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "workload: open /dev/lt_guard: %s\n", strerror(errno));
		return 1;
	}
	must(LT_GUARD_INSTANCE_AB, "instance guard, a then b");
	must(LT_GUARD_INSTANCE_BA, "instance guard, b then a");
	must(LT_GUARD_READ_AB, "read guard, a then b");
	must(LT_GUARD_READ_BA, "read guard, b then a");
	must(LT_GUARD_MUTEX_AB, "mutex guard, a then b");
	must(LT_GUARD_MUTEX_BA, "mutex guard, b then a");
	must(LT_GUARD_WSEM_AB, "write guard, a then b");
	must(LT_GUARD_WSEM_BA, "write guard, b then a");

	must(LT_GUARD_REGISTER, "register the notifier");
	must(LT_GUARD_NOFS_ALLOC, "GFP_NOFS allocation under nofs_lock");
	must(LT_GUARD_NOIO_ALLOC, "allocation in a noio scope under noio_lock");
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "workload: mmap: %s\n", strerror(errno));
		return 1;
	}
	for (size_t off = 0; off < len; off += page)
		p[off] = 1;
	if (munmap(p, len) != 0) {
		fprintf(stderr, "workload: munmap: %s\n", strerror(errno));
		return 1;
	}
	callbacks = ioctl(fd, LT_GUARD_CALLBACKS);
	printf("workload: notifier callbacks: %d\n", callbacks);
	if (callbacks < 1) {
		fprintf(stderr, "workload: the notifier never ran\n");
		return 1;
	}
	close(fd);
	return 0;
}
