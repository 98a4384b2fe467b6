// SPDX-License-Identifier: Apache-2.0
// connect_loop: the connect+close loops of bench/run.py. Compiled, so the
// benchmark measures the kernel path, not Python.
//
// connect_loop IP PORT COUNT [CGROUP_DIR]
//   The loop bench/run.py ran until issue 16: COUNT connect() + close() in a
//   row, a plain close (FIN: one side of each connection sits in TIME_WAIT
//   for 60 s, so a few tens of thousands exhaust the ephemeral ports).
//   Moves itself into CGROUP_DIR first if given. Prints "ELAPSED_NS FAILURES".
//
// connect_loop -a IP PORT BLOCK ROUNDS GAP_MS CGROUP_DIR...
//   Alternating: ROUNDS times, every CGROUP_DIR in turn (the order reversed
//   every other round), one process that forks a child per block; the child
//   moves itself into the cgroup (a socket belongs to the cgroup its creator
//   was in; a process that left a guarded cgroup again would be an escape
//   the guard stops) and makes BLOCK connections there, each socket() + SO_LINGER {1,0} +
//   connect() + close(): the close sends a RST and leaves no TIME_WAIT, so
//   the ports never run out however long it runs. After each block it
//   sleeps GAP_MS, untimed, so work a block left behind (the agent writing
//   its events) is done before the next variant's block starts.
//   Prints a line per round: each variant's "MEAN_NS MEDIAN_NS" per
//   connection over its block, in the order given; then
//   "failures N LAST_ERRNO SLOWEST_NS".
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define MAX_VARIANTS 8

static long failures;
static int last_errno;

static void connect_once(const struct sockaddr_in *addr, int linger0)
{
	struct linger linger = { .l_onoff = 1, .l_linger = 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0) {
		failures++;
		last_errno = errno;
		return;
	}
	if (linger0)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr))) {
		failures++;
		last_errno = errno;
	}
	close(fd);
}

static int old_loop(struct sockaddr_in *addr, long count)
{
	long long start = now_ns();

	for (long i = 0; i < count; i++)
		connect_once(addr, 0);
	printf("%lld %ld\n", now_ns() - start, failures);
	return 0;
}

int main(int argc, char **argv)
{
	static char procs[MAX_VARIANTS][4096];
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct timespec gap;
	long long *took, slowest = 0;
	long block, rounds, gap_ms;
	int nv;

	if ((argc == 4 || argc == 5) && argv[1][0] != '-') {
		if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
			return 2;
		if (argc == 5) {
			snprintf(procs[0], sizeof(procs[0]), "%s/cgroup.procs", argv[4]);
			join(procs[0]);
		}
		addr.sin_port = htons(atoi(argv[2]));
		return old_loop(&addr, atol(argv[3]));
	}
	if (argc < 8 || strcmp(argv[1], "-a") || argc - 7 > MAX_VARIANTS)
		return 2;
	if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1)
		return 2;
	addr.sin_port = htons(atoi(argv[3]));
	block = atol(argv[4]);
	rounds = atol(argv[5]);
	gap_ms = atol(argv[6]);
	nv = argc - 7;
	if (block < 1 || rounds < 1 || gap_ms < 0)
		return 2;
	gap.tv_sec = gap_ms / 1000;
	gap.tv_nsec = (gap_ms % 1000) * 1000000L;
	took = calloc(block, sizeof(*took));
	if (!took)
		return 1;
	for (int i = 0; i < nv; i++)
		snprintf(procs[i], sizeof(procs[i]), "%s/cgroup.procs", argv[7 + i]);
	for (long r = 0; r < rounds; r++) {
		long long mean[MAX_VARIANTS], median[MAX_VARIANTS];

		for (int k = 0; k < nv; k++) {
			int i = r % 2 ? nv - 1 - k : k;
			long long sum = 0;

			long long out[5];	/* mean, median, slowest, failures, last errno */
			int fds[2];
			pid_t child = child_in(procs[i], fds);

			if (child == 0) {
				for (long j = 0; j < block; j++) {
					long long t0 = now_ns();

					connect_once(&addr, 1);
					took[j] = now_ns() - t0;
					sum += took[j];
				}
				qsort(took, block, sizeof(*took), by_value);
				out[0] = sum / block;
				out[1] = took[block / 2];
				out[2] = took[block - 1];
				out[3] = failures;
				out[4] = last_errno;
				send_all(fds[1], out, sizeof(out));
				_exit(0);
			}
			if (!receive_all(fds[0], out, sizeof(out)) | !reap(child, fds[0])) {
				fprintf(stderr, "block in %s: the child failed\n", procs[i]);
				return 1;
			}
			mean[i] = out[0];
			median[i] = out[1];
			if (out[2] > slowest)
				slowest = out[2];
			failures += out[3];
			if (out[3])
				last_errno = (int)out[4];
			nanosleep(&gap, NULL);
		}
		for (int i = 0; i < nv; i++)
			printf("%s%lld %lld", i ? " " : "", mean[i], median[i]);
		printf("\n");
	}
	printf("failures %ld %d %lld\n", failures, last_errno, slowest);
	return 0;
}
