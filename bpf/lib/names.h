/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * names.h: allow by name, what dns.bpf.c and sock_addr.bpf.c share. A
 * policy's host targets are names (eg_dns_names, dns.bpf.c's) with port rules
 * (eg_dns_rules in egress.h, spans of eg_port_rules); its trusted resolvers
 * are prefixes (eg_dns_res4, eg_dns_res6, here); what a workload learned is
 * in learned.h. dns.bpf.c reads each
 * answer a trusted resolver sends a guarded socket before the socket sees it
 * and writes the addresses of an allowed name into that cgroup's own table
 * (eg_dns_learned: one inner map per guarded cgroup, made by userspace, so
 * one workload's answers neither open nor evict anything of another's);
 * sock_addr.bpf.c judges a connect to a learned address by its names' rules.
 * A learned address holds name ids, not rules: after a reload the new
 * generation's rules for the same name judge it, and a name the new policy
 * no longer has opens nothing.
 */
#ifndef GUARD_LIB_NAMES_H
#define GUARD_LIB_NAMES_H

#include "common.h"
#include "learned.h"

/* (policy id, IPv4 prefix) -> 1: a resolver the policy trusts */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm4_key);
	__type(value, __u8);
} eg_dns_res4 SEC(".maps");

/* (policy id, IPv6 prefix) -> 1 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm6_key);
	__type(value, __u8);
} eg_dns_res6 SEC(".maps");

static __always_inline int is_loopback(__u8 family, const __u32 *addr)
{
	if (family == 4)
		return (bpf_ntohl(addr[0]) >> 24) == 127;
	return addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == bpf_htonl(1);
}

/* Is (family, addr, port) a resolver the policy trusts? */
static __always_inline int trusted_resolver(__u32 policy_id,
					    const struct guard_policy_config *policy,
					    __u8 family, const __u32 *addr, __u16 port)
{
	int port_ok = 0;

	for (int i = 0; i < GUARD_DNS_PORTS; i++)
		if (policy->dns_ports[i] && policy->dns_ports[i] == port)
			port_ok = 1;
	if (!port_ok)
		return 0;
	if (family == 4) {
		struct guard_lpm4_key key = { .prefixlen = 32 + 32, .policy_id = policy_id };

		__builtin_memcpy(key.addr, addr, 4);
		return bpf_map_lookup_elem(&eg_dns_res4, &key) != NULL;
	} else {
		struct guard_lpm6_key key = { .prefixlen = 32 + 128, .policy_id = policy_id };

		__builtin_memcpy(key.addr, addr, 16);
		return bpf_map_lookup_elem(&eg_dns_res6, &key) != NULL;
	}
}

#endif /* GUARD_LIB_NAMES_H */
