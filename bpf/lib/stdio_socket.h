/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * stdio_socket.h: the event for an inet socket on a process's stdin, stdout
 * or stderr, found at a dup2/dup3 (socket_syscall.bpf.c) or at exec
 * (exec.bpf.c, oldfd == newfd). No map of its own.
 */
#ifndef GUARD_LIB_STDIO_SOCKET_H
#define GUARD_LIB_STDIO_SOCKET_H

#include "common.h"
#include "events.h"

static __always_inline void emit_stdio_socket(struct sock *sk, __u16 family, __u32 oldfd,
					      __u32 newfd, __u64 cgroup_id, __u32 policy_id,
					      __u8 action)
{
	struct guard_stdio_socket_event *ev;

	ev = event_reserve(sizeof(*ev), GUARD_EVENT_STDIO_SOCKET, cgroup_id, action);
	if (!ev)
		return;
	fill_header(&ev->hdr, GUARD_EVENT_STDIO_SOCKET, sizeof(*ev), cgroup_id, policy_id,
		    action, GUARD_RULE_DETECTION);
	ev->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	ev->oldfd = oldfd;
	ev->newfd = newfd;
	ev->family = family == AF_INET ? 4 : 6;
	ev->proto = BPF_CORE_READ(sk, sk_protocol);
	ev->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	ev->_pad0 = 0;
	__builtin_memset(ev->addr, 0, sizeof(ev->addr));
	if (family == AF_INET)
		bpf_core_read(ev->addr, 4, &sk->__sk_common.skc_daddr);
	else
		bpf_core_read(ev->addr, 16, &sk->__sk_common.skc_v6_daddr);
	event_submit(ev);
}

#endif /* GUARD_LIB_STDIO_SOCKET_H */
