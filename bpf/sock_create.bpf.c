// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sock_create.bpf.c: raw and packet sockets build their own headers and never
 * pass through connect() or sendmsg() with an address the sock_addr hooks can
 * judge, so a policy may refuse them at creation (the caller gets EPERM).
 */
#include "guard.bpf.h"

SEC("cgroup/sock_create")
int guard_sock_create(struct bpf_sock *sk)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	struct guard_socket_event *ev;
	__u64 cgroup_id;
	__u32 policy_id;

	if (sk->type != SOCK_RAW && sk->family != AF_PACKET)
		return 1;
	guard = current_guard(&cgroup_id);
	if (!guard)
		return 1;
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (policy && !policy->deny_raw_sockets) {
		count_verdict(GUARD_ACTION_ALLOW);
		return 1;
	}

	count_verdict(GUARD_ACTION_BLOCK);
	ev = event_reserve(sizeof(*ev));
	if (ev) {
		fill_header(&ev->hdr, GUARD_EVENT_SOCKET, sizeof(*ev), cgroup_id,
			    policy_id, GUARD_ACTION_BLOCK, GUARD_RULE_NONE);
		ev->family = sk->family;
		ev->type = sk->type;
		ev->protocol = sk->protocol;
		ev->_pad0 = 0;
		event_submit(ev);
	}
	return 0;
}
