/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * raw_sockets.h: the raw/packet socket verdict, shared by the two hooks that
 * see socket creation: sock_create.bpf.c (inet SOCK_RAW, refused with EPERM)
 * and socket_syscall.bpf.c (AF_PACKET on hosts without BPF-LSM, killed).
 * No map of its own: it reads the guarded-cgroup and policy maps.
 */
#ifndef GUARD_LIB_RAW_SOCKETS_H
#define GUARD_LIB_RAW_SOCKETS_H

#include "common.h"
#include "events.h"
#include "guarded.h"
#include "policy.h"

/*
 * What the current task's policy does with a raw or packet socket the caller
 * refuses with `refuse` (BLOCK or KILL): ALLOW when the policy allows them,
 * `refuse`, or under audit the WOULD_ action (reported, let through). A
 * guarded cgroup whose policy is missing fails closed.
 */
static __always_inline __u8 raw_socket_action(__u64 *cgroup_id, __u32 *policy_id, __u8 refuse)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard = current_guard(cgroup_id);

	if (!guard)
		return GUARD_ACTION_ALLOW;
	*policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, policy_id);
	if (policy && !policy->deny_raw_sockets) {
		count_verdict(GUARD_ACTION_ALLOW);
		return GUARD_ACTION_ALLOW;
	}
	if (policy && policy->audit)
		return refuse == GUARD_ACTION_KILL ? GUARD_ACTION_WOULD_KILL
						   : GUARD_ACTION_WOULD_BLOCK;
	return refuse;
}

static __always_inline void emit_socket(__u64 cgroup_id, __u32 policy_id, __u8 action,
					__u32 family, __u32 type, __u32 protocol)
{
	struct guard_socket_event *ev;

	count_verdict(action);
	ev = event_reserve(sizeof(*ev), GUARD_EVENT_SOCKET, cgroup_id, action);
	if (!ev)
		return;
	fill_header(&ev->hdr, GUARD_EVENT_SOCKET, sizeof(*ev), cgroup_id, policy_id, action,
		    GUARD_RULE_NONE);
	ev->family = family;
	ev->type = type;
	ev->protocol = protocol;
	ev->_pad0 = 0;
	event_submit(ev);
}

#endif /* GUARD_LIB_RAW_SOCKETS_H */
