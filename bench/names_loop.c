// SPDX-License-Identifier: Apache-2.0
// alternate MODE ARG BLOCK ROUNDS VARIANT...: the variants in turn, BLOCK
// operations each, ROUNDS times (the order reversed every other round), in
// one process that moves itself into a variant's cgroup before its block.
// MODE connect: ARG is the port; a VARIANT is CGROUP_DIR,HOST, HOST resolved
//   (getaddrinfo, AF_INET) once, inside that cgroup, before the first round;
//   an operation is socket() + SO_LINGER 0 + connect() + close(): the close
//   sends a RST and leaves no TIME_WAIT.
// MODE lookup: ARG is a name; a VARIANT is CGROUP_DIR; an operation is
//   getaddrinfo(ARG, AF_INET): one A query through the system resolver.
// Prints a line per round (each variant's median ns over its block, in the
// order given), then "p99" and each variant's p99 over all its operations,
// then "failures N LAST_ERRNO" and each variant's address.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define MAX_VARIANTS 8

struct variant {
	char procs[4096];
	struct sockaddr_in addr;
	long long *all; /* every operation's ns */
	long n;
};

static long failures;
static int last_errno;


static void connect_once(const struct sockaddr_in *addr)
{
	struct linger linger = { .l_onoff = 1, .l_linger = 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0) {
		failures++;
		last_errno = errno;
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr))) {
		failures++;
		last_errno = errno;
	}
	close(fd);
}

static void lookup_once(const char *name)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;

	if (getaddrinfo(name, NULL, &hints, &res)) {
		failures++;
		return;
	}
	freeaddrinfo(res);
}

int main(int argc, char **argv)
{
	int fds[2];
	pid_t child;
	long took_failures;
	static struct variant v[MAX_VARIANTS];
	int connecting, nv;
	long block, rounds;
	long long *took;

	if (argc < 6 || argc - 5 > MAX_VARIANTS)
		return 2;
	connecting = !strcmp(argv[1], "connect");
	block = atol(argv[3]);
	rounds = atol(argv[4]);
	nv = argc - 5;
	took = calloc(block, sizeof(*took));
	if (!took || block < 1 || rounds < 1)
		return 2;
	for (int i = 0; i < nv; i++) {
		char *dir = argv[5 + i], *host = strchr(dir, ',');

		if (host)
			*host++ = '\0';
		snprintf(v[i].procs, sizeof(v[i].procs), "%s/cgroup.procs", dir);
		v[i].all = calloc(block * rounds, sizeof(*v[i].all));
		if (!v[i].all)
			return 1;
		/* resolved in the variant's cgroup (its names are learned there) */
		child = child_in(v[i].procs, fds);
		if (child == 0) {
			if (connecting) {
				struct addrinfo hints = { .ai_family = AF_INET,
							  .ai_socktype = SOCK_STREAM };
				struct addrinfo *res;

				if (!host || getaddrinfo(host, argv[2], &hints, &res)) {
					fprintf(stderr, "cannot resolve %s\n", host ? host : "(no host)");
					_exit(3);
				}
				memcpy(&v[i].addr, res->ai_addr, sizeof(v[i].addr));
				freeaddrinfo(res);
			}
			send_all(fds[1], &v[i].addr, sizeof(v[i].addr));
			_exit(0);
		}
		if (!receive_all(fds[0], &v[i].addr, sizeof(v[i].addr)) | !reap(child, fds[0]))
			return 3;
	}
	failures = 0;
	for (long r = 0; r < rounds; r++) {
		long long median[MAX_VARIANTS];

		for (int k = 0; k < nv; k++) {
			int i = r % 2 ? nv - 1 - k : k;

			/* a child per block, for the reason above */
			child = child_in(v[i].procs, fds);
			if (child == 0) {
				if (!connecting)
					lookup_once(argv[2]); /* the first loads glibc's NSS modules */
				for (long j = 0; j < block; j++) {
					long long t0 = now_ns();

					if (connecting)
						connect_once(&v[i].addr);
					else
						lookup_once(argv[2]);
					took[j] = now_ns() - t0;
				}
				took_failures = failures;
				send_all(fds[1], &took_failures, sizeof(took_failures));
				send_all(fds[1], took, block * sizeof(*took));
				_exit(0);
			}
			if (!receive_all(fds[0], &took_failures, sizeof(took_failures)) |
			    !receive_all(fds[0], took, block * sizeof(*took)) | !reap(child, fds[0]))
				return 1;
			failures += took_failures;
			memcpy(v[i].all + v[i].n, took, block * sizeof(*took));
			v[i].n += block;
			qsort(took, block, sizeof(*took), by_value);
			median[i] = took[block / 2];
		}
		for (int i = 0; i < nv; i++)
			printf("%s%lld", i ? " " : "", median[i]);
		printf("\n");
	}
	printf("p99");
	for (int i = 0; i < nv; i++) {
		qsort(v[i].all, v[i].n, sizeof(*v[i].all), by_value);
		printf(" %lld", v[i].all[v[i].n * 99 / 100]);
	}
	printf("\nfailures %ld %d", failures, last_errno);
	for (int i = 0; i < nv; i++) {
		char text[INET_ADDRSTRLEN] = "-";

		if (connecting)
			inet_ntop(AF_INET, &v[i].addr.sin_addr, text, sizeof(text));
		printf(" %s", text);
	}
	printf("\n");
	return 0;
}
