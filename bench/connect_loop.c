// SPDX-License-Identifier: Apache-2.0
// connect_loop IP PORT COUNT: connect() + close() COUNT times, print elapsed ns.
// A compiled loop, so the benchmark measures the kernel path, not Python.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct timespec start, end;
	long count, failures = 0;

	if (argc != 4)
		return 2;
	inet_pton(AF_INET, argv[1], &addr.sin_addr);
	addr.sin_port = htons(atoi(argv[2]));
	count = atol(argv[3]);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
			failures++;
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("%lld %ld\n", (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec),
	       failures);
	return 0;
}
