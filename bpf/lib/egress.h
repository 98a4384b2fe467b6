/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * egress.h: a policy's egress rules and their lookup, for sock_addr.bpf.c
 * (its only includer: no other object carries these tables). A verdict is
 * one exact /32 lookup, else one longest-prefix lookup, of (policy id,
 * destination), followed by a bounded scan of that prefix's port rules,
 * which userspace stored in precedence order.
 */
#ifndef GUARD_LIB_EGRESS_H
#define GUARD_LIB_EGRESS_H

#include "common.h"

/* (policy id, IPv4 prefix shorter than /32) -> span of eg_port_rules */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm4_key);
	__type(value, struct guard_rule_span);
} eg_cidr4 SEC(".maps");

/*
 * (policy id, IPv4 host) -> span of eg_port_rules: the /32s, which never go
 * into eg_cidr4 (a lookup tries this first; see struct guard_host4_key).
 * Preallocated: a reload's writes then take no allocation.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct guard_host4_key);
	__type(value, struct guard_rule_span);
} eg_host4 SEC(".maps");

/* (policy id, IPv6 prefix) -> span of eg_port_rules */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm6_key);
	__type(value, struct guard_rule_span);
} eg_cidr6 SEC(".maps");

/*
 * slot -> struct guard_port_rule; spans of it are the ordered rules of a prefix.
 * Mappable: userspace copies a new generation's rules into slots no prefix
 * points at yet, instead of one update per slot through bpf() (10,000 rules:
 * a memcpy instead of milliseconds of a reload's critical path).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct guard_port_rule);
} eg_port_rules SEC(".maps");

/* (policy id, name id) -> span of eg_port_rules, in precedence order: the
 * rules of a host target's name (names.h) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_name_rules_key);
	__type(value, struct guard_rule_span);
} eg_dns_rules SEC(".maps");

struct destination {
	__u8 family; /* 4 or 6, after unmapping ::ffff:a.b.c.d */
	__u8 proto;
	__u16 port;
	__u32 addr[4]; /* network byte order */
};

static __always_inline int scan_rules(const struct guard_rule_span *span,
				      const struct destination *dst,
				      __u8 *action, __u16 *rule_id)
{
	__u32 count = span->count;

	for (__u32 i = 0; i < GUARD_RULES_PER_PREFIX; i++) {
		struct guard_port_rule *rule;
		__u32 slot = span->first + i;

		if (i >= count)
			break;
		rule = bpf_map_lookup_elem(&eg_port_rules, &slot);
		if (!rule)
			break;
		if (rule->proto != GUARD_PROTO_ANY && rule->proto != dst->proto)
			continue;
		if (dst->port < rule->port_lo || dst->port > rule->port_hi)
			continue;
		*action = rule->action;
		*rule_id = rule->rule_id;
		return 1;
	}
	return 0;
}

static __always_inline struct guard_rule_span *lookup_prefix(__u32 policy_id,
							     const struct destination *dst)
{
	if (dst->family == 4) {
		struct guard_host4_key host = { .policy_id = policy_id };
		struct guard_lpm4_key key = {
			.prefixlen = 32 + 32,
			.policy_id = policy_id,
		};
		struct guard_rule_span *span;

		__builtin_memcpy(host.addr, &dst->addr[0], 4);
		span = bpf_map_lookup_elem(&eg_host4, &host);
		if (span)
			return span;
		__builtin_memcpy(key.addr, &dst->addr[0], 4);
		return bpf_map_lookup_elem(&eg_cidr4, &key);
	} else {
		struct guard_lpm6_key key = {
			.prefixlen = 32 + 128,
			.policy_id = policy_id,
		};
		__builtin_memcpy(key.addr, dst->addr, 16);
		return bpf_map_lookup_elem(&eg_cidr6, &key);
	}
}

#endif /* GUARD_LIB_EGRESS_H */
