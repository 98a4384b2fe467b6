// SPDX-License-Identifier: Apache-2.0
// event_gen: events at a known rate for bench/events.py. Compiled, so the
// rate is the kernel's and the agent's to keep up with, not Python's.
//
// event_gen RATE SECONDS PORT
//   connect() of one UDP socket to 127.0.0.1:PORT..PORT+63 in turn, RATE
//   calls a second for SECONDS. A UDP connect sends nothing (it only sets
//   the socket's peer); the guard's connect4 hook judges every call, and the
//   embedded default policy (defaultAction log) reports each as one connect
//   event. (sendto() would not do: a sendmsg destination is reported once
//   per socket and verdict.) Paced against CLOCK_MONOTONIC: calls are made
//   in bursts of what is due, never ahead of time; a process that cannot
//   keep up falls behind, which the output says.
//   Prints "CALLS ELAPSED_NS FAILURES".
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	long long start, elapsed, duration, calls = 0, failures = 0;
	double rate;
	int fd, port;

	if (argc != 4) {
		fprintf(stderr, "usage: %s RATE SECONDS PORT\n", argv[0]);
		return 2;
	}
	rate = atof(argv[1]);
	duration = (long long)(atof(argv[2]) * 1e9);
	port = atoi(argv[3]);
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	start = now_ns();
	while ((elapsed = now_ns() - start) < duration) {
		long long due = (long long)(rate * elapsed / 1e9) + 1;

		if (calls >= due) {
			struct timespec pause = { 0, 200000 };   /* 0.2 ms */

			nanosleep(&pause, NULL);
			continue;
		}
		for (long long n = 0; n < 256 && calls < due; n++, calls++) {
			dst.sin_port = htons(port + (calls & 63));
			if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0)
				failures++;
		}
	}
	printf("%lld %lld %lld\n", calls, now_ns() - start, failures);
	return 0;
}
