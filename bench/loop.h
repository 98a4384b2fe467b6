// SPDX-License-Identifier: Apache-2.0
// loop.h: what the benchmarks' compiled loops share: a monotonic clock,
// a sort order, and moving into a cgroup in a child of their own (a process
// that left a guarded cgroup would be an escape the guard stops, so the
// loop's own process never moves; each block runs in a child that joined
// the variant's cgroup and reports back through a pipe).
#ifndef EGBENCH_LOOP_H
#define EGBENCH_LOOP_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline int by_value(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static inline void join(const char *procs)
{
	int fd = open(procs, O_WRONLY);

	if (fd < 0 || write(fd, "0", 1) != 1) {
		perror(procs);
		exit(3);
	}
	close(fd);
}

/*
 * A child that has joined the cgroup of procs, with a pipe to its parent:
 * returns 0 in the child (write to fds[1]), its pid in the parent. The
 * parent never moves: a process that left a guarded cgroup would be an
 * escape the guard stops.
 */
static inline pid_t child_in(const char *procs, int fds[2])
{
	pid_t child;

	if (pipe(fds))
		exit(1);
	child = fork();
	if (child < 0)
		exit(1);
	if (child == 0) {
		close(fds[0]);
		join(procs);
		return 0;
	}
	close(fds[1]);
	return child;
}

/* In the child: write all of buf to fd. */
static inline void send_all(int fd, const void *buf, long len)
{
	for (long off = 0; off < len;) {
		long n = write(fd, (const char *)buf + off, len - off);

		if (n <= 0)
			_exit(1);
		off += n;
	}
}

/* In the parent: read all of buf from the child; 0 when it could not. */
static inline int receive_all(int fd, void *buf, long len)
{
	for (long off = 0; off < len;) {
		long n = read(fd, (char *)buf + off, len - off);

		if (n <= 0)
			return 0;
		off += n;
	}
	return 1;
}

/* In the parent: close the pipe and reap the child; 0 when it failed. */
static inline int reap(pid_t child, int fd)
{
	int status;

	close(fd);
	return waitpid(child, &status, 0) == child && WIFEXITED(status) && !WEXITSTATUS(status);
}

#endif /* EGBENCH_LOOP_H */
