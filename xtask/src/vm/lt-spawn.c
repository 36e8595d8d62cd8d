// SPDX-License-Identifier: MIT OR Apache-2.0
// lt-spawn PROG ARGS...: exec PROG with SIGINT/SIGQUIT reset to their defaults and an empty
// signal mask. The guest's /init (busybox sh, no job control) starts the tracer in the
// background, and POSIX shells start background commands with SIGINT ignored; without this the
// tracer would inherit SIG_IGN for the SIGINT that is meant to stop it.
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	sigset_t none;

	if (argc < 2) {
		fprintf(stderr, "usage: lt-spawn PROG [ARGS...]\n");
		return 2;
	}
	signal(SIGINT, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execvp(argv[1], argv + 1);
	perror(argv[1]);
	return 127;
}
