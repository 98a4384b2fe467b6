// SPDX-License-Identifier: Apache-2.0
// resolve_loop NAME...: getaddrinfo(NAME, AF_INET) of each name once;
// prints the number that failed.
#include <netdb.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
	int failures = 0;

	for (int i = 1; i < argc; i++) {
		if (getaddrinfo(argv[i], NULL, &hints, &res))
			failures++;
		else
			freeaddrinfo(res);
	}
	printf("%d\n", failures);
	return 0;
}
