// SPDX-License-Identifier: GPL-2.0
// Drives /dev/lt_plain: LT_PLAIN_AB on obj[0], then LT_PLAIN_BA on obj[1].
// Usage: ./workload [iterations]   (default 3)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kmod/lt_plain.h"

int main(int argc, char **argv)
{
	int iterations = argc > 1 ? atoi(argv[1]) : 3;
	int fd = open("/dev/lt_plain", O_RDWR);

	if (fd < 0) {
		fprintf(stderr, "workload: open /dev/lt_plain: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < iterations; i++) {
		if (ioctl(fd, LT_PLAIN_AB) != 0) {
			fprintf(stderr, "workload: ioctl AB: %s\n", strerror(errno));
			return 1;
		}
		if (ioctl(fd, LT_PLAIN_BA) != 0) {
			fprintf(stderr, "workload: ioctl BA: %s\n", strerror(errno));
			return 1;
		}
	}
	printf("workload: %d x (AB on obj[0], BA on obj[1]) done\n", iterations);
	close(fd);
	return 0;
}
