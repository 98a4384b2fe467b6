/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * learned.h: the addresses each guarded workload learned from trusted DNS
 * answers (names.h, dns.bpf.c), for sock_addr.bpf.c's verdicts and
 * flow.bpf.c's check that a flow to one names a host the policy allows.
 */
#ifndef GUARD_LIB_LEARNED_H
#define GUARD_LIB_LEARNED_H

#include "common.h"

/*
 * One guarded cgroup's learned addresses: struct guard_learned_key (netns,
 * address) -> struct guard_learned (names). Sizes, not types: BTF would
 * carry the types only as forward declarations behind the outer map.
 */
struct learned_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GUARD_DNS_LEARNED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct guard_learned_key));
	__uint(value_size, sizeof(struct guard_learned));
};

/* guarded cgroup id -> its learned_table (userspace makes one per guarded cgroup) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__array(values, struct learned_table);
} eg_dns_learned SEC(".maps");

/* Whether the workload learned dst (in this network namespace) from an answer
 * for some name, and that name has not expired. */
static __always_inline int learned_address(__u64 guarded_id, __u64 netns, __u8 family,
					   const __u32 *addr)
{
	struct guard_learned_key key = {};
	struct guard_learned *learned;
	__u64 now = bpf_ktime_get_boot_ns();
	void *table;

	table = bpf_map_lookup_elem(&eg_dns_learned, &guarded_id);
	if (!table)
		return 0;
	key.netns = netns;
	key.family = family;
	__builtin_memcpy(key.addr, addr, 16);
	learned = bpf_map_lookup_elem(table, &key);
	if (!learned)
		return 0;
	return (learned->names[0].name_id && learned->names[0].expires_ns > now) ||
	       (learned->names[1].name_id && learned->names[1].expires_ns > now) ||
	       (learned->names[2].name_id && learned->names[2].expires_ns > now) ||
	       (learned->names[3].name_id && learned->names[3].expires_ns > now);
}

#endif /* GUARD_LIB_LEARNED_H */
