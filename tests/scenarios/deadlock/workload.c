// SPDX-License-Identifier: GPL-2.0
// Drives /dev/lt_deadlock into a real deadlock: two threads call the two opposite-order
// ioctls at once, a third calls the ledger-only ioctl after they are stuck. Never returns
// (its threads are stuck in the kernel for good); run it in the background.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kmod/lt_deadlock.h"

static int fd;

static void *call(void *cmd)
{
	ioctl(fd, (unsigned long)cmd);
	return NULL;
}

int main(void)
{
	pthread_t threads[3];

	fd = open("/dev/lt_deadlock", O_RDWR);
	if (fd < 0) {
		perror("workload: open /dev/lt_deadlock");
		return 1;
	}
	pthread_create(&threads[0], NULL, call, (void *)(unsigned long)LT_DEADLOCK_LEDGER_THEN_AUDIT);
	pthread_create(&threads[1], NULL, call, (void *)(unsigned long)LT_DEADLOCK_AUDIT_THEN_LEDGER);
	sleep(2);
	pthread_create(&threads[2], NULL, call, (void *)(unsigned long)LT_DEADLOCK_LEDGER);
	printf("workload: three threads started; two should now be deadlocked\n");
	fflush(stdout);
	pthread_join(threads[0], NULL);
	return 0;
}
