// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sock_create.bpf.c: raw and packet sockets build their own headers and never
 * pass through connect() or sendmsg() with an address the sock_addr hooks can
 * judge, so a policy may refuse them at creation (the caller gets EPERM).
 * sentinel.bpf.c builds it again for container parents (lib/guarded.h).
 */
#include "lib/common.h"
#include "lib/raw_sockets.h"

#if !GUARD_SENTINEL
char LICENSE[] SEC("license") = "Dual BSD/GPL";
#endif

SEC("cgroup/sock_create")
int guard_sock_create(struct bpf_sock *sk)
{
	struct guard_cgroup_info *guard;
	__u64 cgroup_id;
	__u32 policy_id;
	__u8 action;

	if (sk->type != SOCK_RAW && sk->family != AF_PACKET)
		return 1;
	guard = current_guard(&cgroup_id);
	if (!guard || !judged_here(guard))
		return 1;   /* unguarded, or judged by the other copy (lib/guarded.h) */
	action = raw_socket_action(&cgroup_id, &policy_id, GUARD_ACTION_BLOCK);
	if (action == GUARD_ACTION_ALLOW)
		return 1;
	emit_socket(cgroup_id, policy_id, action, sk->family, sk->type, sk->protocol);
	return action != GUARD_ACTION_BLOCK;
}
