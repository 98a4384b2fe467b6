// SPDX-License-Identifier: Apache-2.0
// exec_loop PROGRAM COUNT: fork + exec PROGRAM + wait, COUNT times; print elapsed ns.
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec start, end;
	long count, failures = 0;

	if (argc != 3)
		return 2;
	count = atol(argv[2]);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		int status;
		pid_t pid = fork();

		if (pid == 0) {
			execl(argv[1], argv[1], (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			failures++;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("%lld %ld\n", (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec),
	       failures);
	return 0;
}
