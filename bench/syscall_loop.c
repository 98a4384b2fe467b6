// SPDX-License-Identifier: Apache-2.0
// syscall_loop COUNT: getppid() COUNT times through syscall(2) (no libc
// caching), timed in blocks of 1000. Prints "MEDIAN MEAN": the median
// block's and the mean ns per call. The cheapest system call there is, so
// what every system call pays on top (a tracing hook) shows in full.
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define BLOCK 1000

int main(int argc, char **argv)
{
	long long *took, sum = 0;
	long blocks;

	if (argc != 2)
		return 2;
	blocks = atol(argv[1]) / BLOCK;
	if (blocks < 1)
		blocks = 1;
	took = calloc(blocks, sizeof(*took));
	if (!took)
		return 1;
	for (long b = 0; b < blocks; b++) {
		long long t0 = now_ns();

		for (int i = 0; i < BLOCK; i++)
			syscall(SYS_getppid);
		took[b] = now_ns() - t0;
		sum += took[b];
	}
	qsort(took, blocks, sizeof(*took), by_value);
	printf("%.1f %.1f\n", (double)took[blocks / 2] / BLOCK, (double)sum / (blocks * BLOCK));
	return 0;
}
