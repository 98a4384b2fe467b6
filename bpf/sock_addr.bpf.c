// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sock_addr.bpf.c: egress verdicts at connect() and at sendmsg() with an
 * address (UDP sendto without connect). The rules and their lookup are in
 * lib/egress.h; a detection's refusal of the whole process overrides them.
 * Returning 0 makes the system call fail with EPERM.
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/proc_verdict.h"
#include "lib/egress.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* (socket cookie, destination, verdict) -> 1: sendmsg reports each once */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_sendmsg_key);
	__type(value, __u8);
} eg_sendmsg_seen SEC(".maps");

static __always_inline void emit_connect(const struct destination *dst, __u8 hook,
					 __u64 cgroup_id, __u32 policy_id,
					 __u8 action, __u16 rule_id)
{
	struct guard_connect_event *ev;

	ev = event_reserve(sizeof(*ev));
	if (!ev)
		return;
	fill_header(&ev->hdr, GUARD_EVENT_CONNECT, sizeof(*ev), cgroup_id,
		    policy_id, action, rule_id);
	ev->family = dst->family;
	ev->proto = dst->proto;
	ev->hook = hook;
	ev->_pad0 = 0;
	ev->port = dst->port;
	ev->_pad1 = 0;
	__builtin_memcpy(ev->addr, dst->addr, 16);
	event_submit(ev);
}

/* A sendmsg reports a destination once per socket and verdict, not per datagram. */
static __always_inline int first_sendmsg(struct bpf_sock_addr *ctx,
					 const struct destination *dst, __u8 action)
{
	struct guard_sendmsg_key key = {};
	__u8 one = 1;

	key.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(key.addr, dst->addr, 16);
	key.port = dst->port;
	key.action = action;
	return bpf_map_update_elem(&eg_sendmsg_seen, &key, &one, BPF_NOEXIST) == 0;
}

static __always_inline int judge(struct bpf_sock_addr *ctx, struct destination *dst,
				 __u8 hook)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	struct guard_rule_span *span;
	__u16 rule_id = GUARD_RULE_NONE;
	__u64 cgroup_id;
	__u32 policy_id;
	__u8 action;

	guard = current_guard(&cgroup_id);
	if (!guard)
		return 1;
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	/*
	 * The kernel gives a socket its cookie when first asked: ask now, so the
	 * socket can be named later (a reverse shell's socket on stdio is reset
	 * by its cookie) even if nothing else ever asks.
	 */
	bpf_get_socket_cookie(ctx);
	/* A guarded cgroup whose policy is missing fails closed. */
	action = policy ? policy->default_action : GUARD_ACTION_BLOCK;

	dst->proto = ctx->protocol == GUARD_PROTO_UDP ? GUARD_PROTO_UDP : GUARD_PROTO_TCP;
	span = lookup_prefix(policy_id, dst);
	if (span)
		scan_rules(span, dst, &action, &rule_id);
	/* a process a detection judged at exec (ssh -R, a reverse shell) */
	if (process_blocked()) {
		action = GUARD_ACTION_BLOCK;
		rule_id = GUARD_RULE_DETECTION;
	}

	count_verdict(action);
	if (action != GUARD_ACTION_ALLOW) {
		int is_sendmsg = hook == GUARD_HOOK_SENDMSG4 || hook == GUARD_HOOK_SENDMSG6;

		if (!is_sendmsg || first_sendmsg(ctx, dst, action))
			emit_connect(dst, hook, cgroup_id, policy_id, action, rule_id);
	}
	return action == GUARD_ACTION_BLOCK ? 0 : 1;
}

static __always_inline int judge4(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct destination dst = { .family = 4 };

	dst.addr[0] = ctx->user_ip4;
	dst.port = bpf_ntohs(ctx->user_port);
	return judge(ctx, &dst, hook);
}

static __always_inline int judge6(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct destination dst = { .family = 6 };

	dst.addr[0] = ctx->user_ip6[0];
	dst.addr[1] = ctx->user_ip6[1];
	dst.addr[2] = ctx->user_ip6[2];
	dst.addr[3] = ctx->user_ip6[3];
	dst.port = bpf_ntohs(ctx->user_port);
	/* ::ffff:a.b.c.d reaches an IPv4 host, so IPv4 rules judge it. */
	if (dst.addr[0] == 0 && dst.addr[1] == 0 && dst.addr[2] == bpf_htonl(0xffff)) {
		dst.family = 4;
		dst.addr[0] = dst.addr[3];
		dst.addr[1] = dst.addr[2] = dst.addr[3] = 0;
	}
	return judge(ctx, &dst, hook);
}

SEC("cgroup/connect4")
int guard_connect4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, GUARD_HOOK_CONNECT4);
}

SEC("cgroup/connect6")
int guard_connect6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, GUARD_HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int guard_sendmsg4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, GUARD_HOOK_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int guard_sendmsg6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, GUARD_HOOK_SENDMSG6);
}
