// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sock_addr.bpf.c: egress verdicts at connect() and at sendmsg() with an
 * address (UDP sendto without connect). The rules and their lookup are in
 * lib/egress.h; a detection's refusal of the whole process overrides them.
 * Returning 0 makes the system call fail with EPERM.
 *
 * Under a policy that allows by name (lib/names.h), an address the workload
 * learned from a trusted answer is judged by its names' port rules too: the
 * most permissive of its names (the address is one of each), then the
 * stricter of that and a CIDR rule that matches. Trusted resolvers are
 * reachable on their ports, and no guarded process may bind() a resolver
 * port: nothing of the workload can send from one.
 *
 * sentinel.bpf.c builds this file again with GUARD_SENTINEL 1, for the
 * container parents (lib/guarded.h judged_here says which of the two judges).
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/proc_verdict.h"
#include "lib/egress.h"
#include "lib/names.h"
#include "lib/fold.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* (socket cookie, destination, verdict) -> 1: sendmsg reports each once */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_sendmsg_key);
	__type(value, __u8);
} eg_sendmsg_seen SEC(".maps");

/* fold: the window this connect opens once sent (lib/fold.h), or NULL;
 * repeats: the count of the stale window it replaces */
static __always_inline void emit_connect(const struct destination *dst, __u8 hook,
					 __u64 cgroup_id, __u32 policy_id,
					 __u8 action, __u16 rule_id,
					 const struct guard_fold_key *fold, __u32 repeats)
{
	struct guard_connect_event *ev;

	ev = event_reserve(sizeof(*ev), GUARD_EVENT_CONNECT, cgroup_id, action);
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
	ev->repeats = repeats;
	ev->_pad2 = 0;
	ev->fold_ns = fold ? fold_open(fold) : 0;
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

struct names_walk {
	struct guard_learned names;
	__u64 now;
	__u32 policy_id;
	__u32 first;     /* the current name's span of eg_port_rules */
	__u16 port;
	__u8 proto;
	__u8 found;      /* some name's rule matched */
	__u8 action;     /* the most permissive of them */
	__u8 matched;    /* the current name's scan found its rule */
	__u16 rule_id;
};

/* One port rule of the current name: the first that matches decides for it. */
static long name_rule_step(__u64 i, void *data)
{
	struct names_walk *w = data;
	struct guard_port_rule *rule;
	__u32 slot = w->first + (__u32)i;

	rule = bpf_map_lookup_elem(&eg_port_rules, &slot);
	if (!rule)
		return 1;
	if (rule->proto != GUARD_PROTO_ANY && rule->proto != w->proto)
		return 0;
	if (w->port < rule->port_lo || w->port > rule->port_hi)
		return 0;
	if (!w->found || rule->action < w->action) {
		w->action = rule->action & 3;
		w->rule_id = rule->rule_id;
	}
	w->found = 1;
	return 1;
}

/* One name of a learned address: its port rules under the generation in force. */
static long name_step(__u64 i, void *data)
{
	struct names_walk *w = data;
	struct guard_name_rules_key rules = { .policy_id = w->policy_id };
	struct guard_learned_name *name = &w->names.names[i & (GUARD_DNS_NAMES_PER_ADDR - 1)];
	struct guard_rule_span *span;
	__u32 count;

	if (!name->name_id || name->expires_ns <= w->now)
		return 0;
	rules.name_id = name->name_id;
	span = bpf_map_lookup_elem(&eg_dns_rules, &rules);
	if (!span)
		return 0;
	w->first = span->first;
	count = span->count;
	if (count > GUARD_RULES_PER_PREFIX)
		count = GUARD_RULES_PER_PREFIX;
	bpf_loop(count, name_rule_step, w, 0);
	return 0;
}

/* The most permissive verdict of the names this workload learned dst from
 * (in this network namespace). */
static __always_inline int judge_names(struct bpf_sock_addr *ctx, __u64 guarded_id,
				       __u32 policy_id, const struct destination *dst,
				       __u8 *action, __u16 *rule_id)
{
	struct guard_learned_key key = {};
	struct guard_learned *learned;
	struct names_walk w = {};
	void *table;

	table = bpf_map_lookup_elem(&eg_dns_learned, &guarded_id);
	if (!table)
		return 0;
	key.netns = bpf_get_netns_cookie(ctx);
	key.family = dst->family;
	__builtin_memcpy(key.addr, dst->addr, 16);
	learned = bpf_map_lookup_elem(table, &key);
	if (!learned)
		return 0;
	__builtin_memcpy(&w.names, learned, sizeof(w.names));
	w.port = dst->port;
	w.proto = dst->proto;
	w.now = bpf_ktime_get_boot_ns();
	w.policy_id = policy_id;
	/* the callback reads w: no store to it may be dropped or moved past the call */
	asm volatile("" ::: "memory");
	bpf_loop(GUARD_DNS_NAMES_PER_ADDR, name_step, &w, 0);
	if (!w.found)
		return 0;
	*action = w.action;
	*rule_id = w.rule_id;
	return 1;
}

/* Allow by name: the verdict after the CIDR rules (matched: one of them decided). */
static __always_inline void judge_by_name(struct bpf_sock_addr *ctx,
					  const struct guard_policy_config *policy,
					  __u64 guarded_id, __u32 policy_id,
					  const struct destination *dst, int matched,
					  __u8 *action, __u16 *rule_id)
{
	__u16 name_rule = GUARD_RULE_NONE;
	__u8 name_action = GUARD_ACTION_BLOCK;

	if (judge_names(ctx, guarded_id, policy_id, dst, &name_action, &name_rule)) {
		if (!matched || name_action > *action) {
			*action = name_action;
			*rule_id = name_rule;
		}
		return;
	}
	if (!matched && trusted_resolver(policy_id, policy, dst->family, dst->addr, dst->port)) {
		*action = GUARD_ACTION_ALLOW;
		*rule_id = policy->resolver_rule_id;
	}
}

static __always_inline int judge(struct bpf_sock_addr *ctx, struct destination *dst,
				 __u8 hook)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	struct guard_rule_span *span;
	__u16 rule_id = GUARD_RULE_NONE;
	__u64 cgroup_id, guarded_id;
	__u32 policy_id;
	__u8 action;
	int matched = 0;

	guard = current_guard_at(&cgroup_id, &guarded_id);
	if (!guard || !judged_here(guard))
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
	/* a policy without rules of this family looks none up (the default's) */
	if (policy && (policy->egress_families &
		       (dst->family == 4 ? GUARD_EGRESS_IPV4 : GUARD_EGRESS_IPV6))) {
		span = lookup_prefix(policy_id, dst);
		if (span)
			matched = scan_rules(span, dst, &action, &rule_id);
	}
	if (policy && (policy->names & GUARD_NAMES_ON))
		judge_by_name(ctx, policy, guarded_id, policy_id, dst, matched, &action, &rule_id);
	/* a process a detection judged at exec (ssh -R, a reverse shell) */
	if (process_blocked()) {
		action = GUARD_ACTION_BLOCK;
		rule_id = GUARD_RULE_DETECTION;
	}

	count_verdict(action);
	if (action == GUARD_ACTION_LOG &&
	    (hook == GUARD_HOOK_CONNECT4 || hook == GUARD_HOOK_CONNECT6)) {
		/* a storm of one process to one destination: one event per window */
		struct guard_fold_key key = {};
		__u32 repeats = 0;

		switch (fold_connect(&key, cgroup_id, policy_id, rule_id, hook, dst->addr,
				     dst->port, dst->family, dst->proto, &repeats)) {
		case FOLD_COUNTED:
			return 1;
		case FOLD_OPEN:
			emit_connect(dst, hook, cgroup_id, policy_id, action, rule_id, &key,
				     repeats);
			return 1;
		}
	}
	if (action != GUARD_ACTION_ALLOW) {
		int is_sendmsg = hook == GUARD_HOOK_SENDMSG4 || hook == GUARD_HOOK_SENDMSG6;

		if (!is_sendmsg || first_sendmsg(ctx, dst, action))
			emit_connect(dst, hook, cgroup_id, policy_id, action, rule_id, NULL, 0);
	}
	return action == GUARD_ACTION_BLOCK ? 0 : 1;
}

/*
 * The unspecified address is where the kernel sends a connect to it:
 * loopback (0.0.0.0 -> 127.0.0.1, :: -> ::1). Rules compare addresses, so
 * it is judged as that address.
 */
static __always_inline int judge4(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct destination dst = { .family = 4 };

	dst.addr[0] = ctx->user_ip4 ? ctx->user_ip4 : bpf_htonl(0x7f000001);
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
		dst.addr[0] = dst.addr[3] ? dst.addr[3] : bpf_htonl(0x7f000001);
		dst.addr[1] = dst.addr[2] = dst.addr[3] = 0;
	} else if (!(dst.addr[0] | dst.addr[1] | dst.addr[2] | dst.addr[3])) {
		dst.addr[3] = bpf_htonl(1); /* :: is ::1 */
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

/*
 * bind(): under a policy that allows by name no guarded process takes a
 * resolver's port, on any address (IP_PKTINFO and IP_FREEBIND would let a
 * socket bound anywhere send from a resolver's address): an answer from a
 * resolver port was sent by something outside the workload.
 */
static __always_inline int judge_bind(struct bpf_sock_addr *ctx, struct destination *dst,
				      __u8 hook)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	__u64 cgroup_id;
	__u32 policy_id;
	int taken = 0;
	__u8 action;

	guard = current_guard(&cgroup_id);
	if (!guard || !judged_here(guard))
		return 1;
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (!policy || !(policy->names & GUARD_NAMES_ON) || dst->port == 0)
		return 1;
	for (int i = 0; i < GUARD_DNS_PORTS; i++)
		if (policy->dns_ports[i] && policy->dns_ports[i] == dst->port)
			taken = 1;
	if (!taken)
		return 1;
	dst->proto = ctx->protocol == GUARD_PROTO_UDP ? GUARD_PROTO_UDP : GUARD_PROTO_TCP;
	action = policy->audit ? GUARD_ACTION_WOULD_BLOCK : GUARD_ACTION_BLOCK;
	count_verdict(action);
	emit_connect(dst, hook, cgroup_id, policy_id, action, policy->resolver_rule_id, NULL, 0);
	return action != GUARD_ACTION_BLOCK;
}

SEC("cgroup/bind4")
int guard_bind4(struct bpf_sock_addr *ctx)
{
	struct destination dst = { .family = 4 };

	dst.addr[0] = ctx->user_ip4;
	dst.port = bpf_ntohs(ctx->user_port);
	return judge_bind(ctx, &dst, GUARD_HOOK_BIND4);
}

SEC("cgroup/bind6")
int guard_bind6(struct bpf_sock_addr *ctx)
{
	struct destination dst = { .family = 6 };

	dst.addr[0] = ctx->user_ip6[0];
	dst.addr[1] = ctx->user_ip6[1];
	dst.addr[2] = ctx->user_ip6[2];
	dst.addr[3] = ctx->user_ip6[3];
	dst.port = bpf_ntohs(ctx->user_port);
	return judge_bind(ctx, &dst, GUARD_HOOK_BIND6);
}
