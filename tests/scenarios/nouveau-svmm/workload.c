// SPDX-License-Identifier: GPL-2.0
// Drives the nouveau_svmm model module like an SVM client of nouveau:
//   NOUVEAU_SVMM_INIT   mmu_notifier on this process's mm     (fs_reclaim -> mmu_notifier_invalidate_range_start)
//   NOUVEAU_VMM_GET xN  GPU VA allocation under vmm->mutex    (&vmm->mutex -> fs_reclaim, unless fixed)
//   mmap/touch/munmap   the notifier takes svmm->mutex, then vmm->mutex
//                       (mmu_notifier_invalidate_range_start -> &svmm->mutex -> &vmm->mutex)
//   NOUVEAU_VMM_PUT     half of the VA back; close() gives back the rest and unregisters.
// A child process then does INIT, GET, mmap/touch/munmap and exits with the device still open
// (the module's release runs after the child's mm was torn down).
// Nothing deadlocks; it only makes every edge of the cycle happen once.
// Usage: ./workload [device] [gets]   (defaults: /dev/nouveau_svmm, 4)
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kmod/nouveau_svmm.h"

#define MAX_GETS 64
#define MAP_PAGES 16

static const char *dev;

static int xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	if (ioctl(fd, req, arg) != 0) {
		fprintf(stderr, "workload: %s: ioctl %s: %s\n", dev, what, strerror(errno));
		return -1;
	}
	return 0;
}

static int stats(int fd, struct nouveau_svmm_stats *s, const char *when)
{
	if (xioctl(fd, NOUVEAU_SVMM_STATS, s, "NOUVEAU_SVMM_STATS"))
		return -1;
	printf("workload: stats %s: invalidate_range_start=%" PRIu64 " pfnclr=%" PRIu64
	       " vmm_get=%" PRIu64 " vmm_put=%" PRIu64 " vma_alloc_locked=%" PRIu64
	       " vma_alloc_unlocked=%" PRIu64 "\n",
	       when, (uint64_t)s->invalidate_range_start, (uint64_t)s->pfnclr,
	       (uint64_t)s->vmm_get, (uint64_t)s->vmm_put, (uint64_t)s->vma_alloc_locked,
	       (uint64_t)s->vma_alloc_unlocked);
	return 0;
}

static int map_touch_unmap(size_t len, long page)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "workload: mmap: %s\n", strerror(errno));
		return -1;
	}
	for (size_t off = 0; off < len; off += page)
		p[off] = (char)off;
	if (munmap(p, len) != 0) {
		fprintf(stderr, "workload: munmap: %s\n", strerror(errno));
		return -1;
	}
	printf("workload: pid %d: mmap+touch+munmap of %zu bytes at %p done\n", (int)getpid(), len,
	       (void *)p);
	return 0;
}

/* A client that exits without closing the device: release runs after exit_mm(). */
static int child_exits_open(size_t len, long page)
{
	struct nouveau_svmm_vmm_get vma = { .size = 0x10000 };
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "workload: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int fd = open(dev, O_RDWR);

		if (fd < 0) {
			fprintf(stderr, "workload: child: open %s: %s\n", dev, strerror(errno));
			_exit(1);
		}
		/*
		 * Written here, before the notifier is registered: `vma` was written by the parent
		 * before fork, so its page is copy-on-write, and the GET's copy_to_user would
		 * otherwise break the COW under the notifier (an invalidation through a page fault
		 * in the ioctl) whenever ASLR put `vma` on a stack page the child had not yet
		 * written — a second path to &svmm->mutex, taken or not by chance.
		 */
		*(volatile uint64_t *)&vma.size = 0x10000;
		if (xioctl(fd, NOUVEAU_SVMM_INIT, NULL, "NOUVEAU_SVMM_INIT") ||
		    xioctl(fd, NOUVEAU_VMM_GET, &vma, "NOUVEAU_VMM_GET") ||
		    map_touch_unmap(len, page))
			_exit(1);
		printf("workload: child pid %d: INIT, GET -> 0x%" PRIx64 ", exiting with %s open\n",
		       (int)getpid(), (uint64_t)vma.addr, dev);
		fflush(stdout);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "workload: child %d failed (status 0x%x)\n", (int)pid, status);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct nouveau_svmm_vmm_get vma[MAX_GETS];
	struct nouveau_svmm_stats before, after;
	long page = sysconf(_SC_PAGESIZE);
	size_t len = MAP_PAGES * page;
	int gets, fd, i;

	dev = argc > 1 ? argv[1] : "/dev/nouveau_svmm";
	gets = argc > 2 ? atoi(argv[2]) : 4;
	if (gets < 1 || gets > MAX_GETS) {
		fprintf(stderr, "workload: gets must be 1..%d\n", MAX_GETS);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "workload: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (stats(fd, &before, "before"))
		return 1;

	if (xioctl(fd, NOUVEAU_SVMM_INIT, NULL, "NOUVEAU_SVMM_INIT"))
		return 1;
	printf("workload: NOUVEAU_SVMM_INIT: mmu_notifier registered on pid %d's mm\n",
	       (int)getpid());

	for (i = 0; i < gets; i++) {
		vma[i].size = 0x10000ULL << (i % 4);	/* 64 KiB .. 512 KiB */
		vma[i].addr = 0;
		if (xioctl(fd, NOUVEAU_VMM_GET, &vma[i], "NOUVEAU_VMM_GET"))
			return 1;
		printf("workload: NOUVEAU_VMM_GET size 0x%" PRIx64 " -> addr 0x%" PRIx64 "\n",
		       (uint64_t)vma[i].size, (uint64_t)vma[i].addr);
	}

	if (map_touch_unmap(len, page))
		return 1;

	for (i = 0; i < gets; i += 2) {
		if (xioctl(fd, NOUVEAU_VMM_PUT, &vma[i], "NOUVEAU_VMM_PUT"))
			return 1;
		printf("workload: NOUVEAU_VMM_PUT addr 0x%" PRIx64 "\n", (uint64_t)vma[i].addr);
	}

	close(fd);

	if (child_exits_open(len, page))
		return 1;

	fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0 || stats(fd, &after, "after")) {
		fprintf(stderr, "workload: reopen %s: %s\n", dev, strerror(errno));
		return 1;
	}
	close(fd);

	if (after.invalidate_range_start == before.invalidate_range_start ||
	    after.pfnclr == before.pfnclr) {
		fprintf(stderr, "workload: the mmu_notifier did not run on munmap\n");
		return 1;
	}
	if (after.vmm_get - before.vmm_get != (uint64_t)gets + 1) {
		fprintf(stderr, "workload: expected %d NOUVEAU_VMM_GET\n", gets + 1);
		return 1;
	}
	printf("workload: done: %" PRIu64 " notifier call(s) took svmm->mutex then vmm->mutex; "
	       "%" PRIu64 " vma allocation(s) under vmm->mutex, %" PRIu64 " before it\n",
	       (uint64_t)(after.invalidate_range_start - before.invalidate_range_start),
	       (uint64_t)(after.vma_alloc_locked - before.vma_alloc_locked),
	       (uint64_t)(after.vma_alloc_unlocked - before.vma_alloc_unlocked));
	return 0;
}
