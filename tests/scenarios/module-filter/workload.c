// SPDX-License-Identifier: GPL-2.0
// Registers lt_mmu's notifier on this mm, munmaps a touched mapping (the notifier takes
// &svmm->mutex), allocates under &svmm->mutex, unregisters.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod/lt_mmu.h"

static int must(int fd, unsigned long cmd, const char *what)
{
	if (ioctl(fd, cmd) != 0) {
		fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
		return 1;
	}
	return 0;
}

int main(void)
{
	int fd = open("/dev/lt_mmu", O_RDWR);

	if (fd < 0) {
		fprintf(stderr, "workload: open /dev/lt_mmu: %s\n", strerror(errno));
		return 1;
	}
	if (must(fd, LT_MMU_REGISTER, "register"))
		return 1;
	for (int i = 0; i < 3; i++) {
		size_t len = 64 * 1024;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("workload: mmap");
			return 1;
		}
		memset(p, 1, len);
		munmap(p, len);
	}
	if (must(fd, LT_MMU_ALLOC, "alloc under svmm->mutex") || must(fd, LT_MMU_UNREGISTER, "unregister"))
		return 1;
	printf("workload: registered, unmapped 3 times, allocated under the lock, unregistered\n");
	return 0;
}
