// SPDX-License-Identifier: GPL-2.0
// Drives /dev/lt_sem through every case of kmod/lt_sem.c; exits nonzero if a case did not
// behave as the scenario expects (e.g. the interruptible lock was not interrupted).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kmod/lt_sem.h"

static int open_dev(void)
{
	int fd = open("/dev/lt_sem", O_RDWR);

	if (fd < 0) {
		fprintf(stderr, "workload: open /dev/lt_sem: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}

static void must(int fd, unsigned long cmd, const char *what)
{
	if (ioctl(fd, cmd) != 0) {
		fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
		exit(1);
	}
}

static void on_signal(int sig)
{
	(void)sig;
}

int main(void)
{
	int fd = open_dev();
	int status;

	must(fd, LT_SEM_TRY_OK, "trylock success case");
	must(fd, LT_SEM_TRY_FAIL, "trylock failure case");
	must(fd, LT_SEM_OUT_OF_ORDER, "out-of-order unlock case");
	must(fd, LT_SEM_RWSEM, "rwsem case");

	pid_t holder = fork();
	if (holder == 0) {
		must(open_dev(), LT_SEM_HOLD_INTR, "holding intr");
		_exit(0);
	}
	for (int i = 0; ioctl(fd, LT_SEM_INTR_HELD) != 1; i++) {
		if (i > 600) {
			fprintf(stderr, "workload: holder never took intr\n");
			return 1;
		}
		usleep(100000);
	}
	pid_t waiter = fork();
	if (waiter == 0) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal; /* no SA_RESTART: the ioctl returns EINTR */
		sigaction(SIGUSR1, &sa, NULL);
		int r = ioctl(open_dev(), LT_SEM_INTR_FAIL);
		if (r == -1 && errno == EINTR) {
			printf("workload: mutex_lock_interruptible interrupted as expected\n");
			fflush(stdout);
			_exit(0);
		}
		fprintf(stderr, "workload: interruptible case returned %d (%s)\n", r, strerror(errno));
		_exit(1);
	}
	/* Let the waiter block in mutex_lock_interruptible (TCG is slow), then signal it. */
	sleep(3);
	kill(waiter, SIGUSR1);
	waitpid(waiter, &status, 0);
	int waiter_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	must(fd, LT_SEM_RELEASE_INTR, "releasing intr");
	waitpid(holder, &status, 0);
	if (!waiter_ok)
		return 1;
	printf("workload: all semantics cases done\n");
	return 0;
}
