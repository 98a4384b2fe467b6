// SPDX-License-Identifier: Apache-2.0
// accept_loop PORT [any]: listen on 127.0.0.1:PORT (with "any": on every
// address), accept and close forever; prints "listening" once bound. The
// benchmark ends it by pid.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int one = 1, fd;

	if (argc != 2 && (argc != 3 || strcmp(argv[2], "any")))
		return 2;
	addr.sin_port = htons(atoi(argv[1]));
	addr.sin_addr.s_addr = htonl(argc == 3 ? INADDR_ANY : INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 4096))
		return 1;
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		int conn = accept(fd, NULL, NULL);

		if (conn >= 0)
			close(conn);
	}
}
