// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * destroy.bpf.c: reset the TCP sockets of blocked flows. A cgroup_skb program
 * can drop a flow's packets but not end its socket; a TCP iterator can, with
 * the bpf_sock_destroy kfunc (Linux 6.5): the local end gets ECONNABORTED,
 * the remote end a RST. Userspace writes the cookies, then runs the iterator
 * (in the network namespace of the sockets: iterators walk their creator's).
 */
#include "lib/common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* socket cookie -> 1: sockets to reset on the next iteration */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} eg_destroy SEC(".maps");

SEC("iter/tcp")
int guard_destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;
	__u64 cookie;

	if (!sk)
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	if (!bpf_map_lookup_elem(&eg_destroy, &cookie))
		return 0;
	bpf_sock_destroy(sk);
	bpf_map_delete_elem(&eg_destroy, &cookie);
	return 0;
}
