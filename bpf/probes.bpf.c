// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * probes.bpf.c: one tiny program per mechanism egress-guard can use. The
 * doctor loads (and where loading alone proves nothing, attaches) each one on
 * its own, so a host reports exactly what works there. None of them acts:
 * every program returns "allow" or "no-op".
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ring SEC(".maps");

SEC("cgroup/connect4")
int probe_sock_addr(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup_skb/egress")
int probe_cgroup_skb(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup/sock_create")
int probe_sock_create(struct bpf_sock *sk)
{
	return 1;
}

SEC("tp/sched/sched_process_exec")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_process_exec")
int probe_raw_tracepoint(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_process_exec")
int probe_ringbuf(void *ctx)
{
	__u64 zero = 0;

	/* never true: the program proves the helper loads, it sends nothing */
	if (bpf_get_current_pid_tgid() == (__u64)-1)
		bpf_ringbuf_output(&probe_ring, &zero, sizeof(zero), 0);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int probe_send_signal(void *ctx)
{
	if (bpf_get_current_pid_tgid() == (__u64)-1)
		bpf_send_signal(9);
	return 0;
}

extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

/* Resetting a blocked flow's socket: a TCP iterator with bpf_sock_destroy (6.5). */
SEC("iter/tcp")
int probe_sock_destroy(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;

	if (sk && bpf_get_current_pid_tgid() == (__u64)-1)
		bpf_sock_destroy(sk);
	return 0;
}

/* Payload sampling keeps per-flow state in socket-local storage. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} probe_sk_storage SEC(".maps");

SEC("cgroup_skb/egress")
int probe_sk_storage_get(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	__u64 *state;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	state = bpf_sk_storage_get(&probe_sk_storage, sk, 0, 0);
	return state ? 1 : 1;
}

SEC("lsm/socket_connect")
int BPF_PROG(probe_lsm, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return 0;
}

SEC("fentry/security_socket_connect")
int BPF_PROG(probe_fentry, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return 0;
}

SEC("kprobe/security_socket_connect")
int probe_kprobe(struct pt_regs *ctx)
{
	return 0;
}
