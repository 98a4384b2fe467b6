/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * guarded.h: which cgroups are guarded and which policy generation judges
 * them now. A cgroup points at a policy slot, not at a policy, so a reload
 * switches every cgroup of a slot with one write (eg_slots), and a slot can
 * fall back to its fail-closed generation when the agent stops beating.
 * The kernel side only looks up: userspace decides and writes.
 */
#ifndef GUARD_LIB_GUARDED_H
#define GUARD_LIB_GUARDED_H

#include "common.h"
#include "config.h"

/* cgroup id -> struct guard_cgroup_info, for every guarded cgroup */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct guard_cgroup_info);
} eg_guarded SEC(".maps");

/* policy slot -> struct guard_slot: the generation in force */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct guard_slot);
} eg_slots SEC(".maps");

/*
 * The guard entry of a cgroup: its own if guarded, else the deepest guarded
 * ancestor's; none when that deepest entry is exempt (GUARD_CG_EXEMPT). Ancestors are probed only at the levels where some cgroup is
 * guarded (eg_config.guarded_levels), so an unguarded task costs one lookup
 * plus one per occupied level, not one per level. from_skb (a constant at
 * every call) picks the cgroup of the packet's socket instead of the
 * current task's.
 */
static __always_inline struct guard_cgroup_info *guard_lookup_at(struct __sk_buff *skb,
								 int from_skb, __u64 *cgroup_id,
								 __u64 *guarded_id)
{
	struct guard_cgroup_info *info;
	struct guard_config *config;
	__u32 zero = 0, levels;
	__u64 id;

	id = from_skb ? bpf_skb_cgroup_id(skb) : bpf_get_current_cgroup_id();
	*cgroup_id = id;
	if (guarded_id)
		*guarded_id = id;
	info = bpf_map_lookup_elem(&eg_guarded, &id);
	if (info)
		return info->flags & GUARD_CG_EXEMPT ? NULL : info;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!config)
		return NULL;
	levels = config->guarded_levels;
	for (int level = GUARD_CGROUP_LEVELS - 1; level >= 0 && levels; level--) {
		if (!(levels & (1u << level)))
			continue;
		id = from_skb ? bpf_skb_ancestor_cgroup_id(skb, level)
			      : bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		info = bpf_map_lookup_elem(&eg_guarded, &id);
		if (info) {
			if (info->flags & GUARD_CG_EXEMPT)
				return NULL;
			if (guarded_id)
				*guarded_id = id;
			return info;
		}
	}
	return NULL;
}

static __always_inline struct guard_cgroup_info *guard_lookup(struct __sk_buff *skb, int from_skb,
							      __u64 *cgroup_id)
{
	return guard_lookup_at(skb, from_skb, cgroup_id, NULL);
}

/* The guard entry of the current task. */
static __always_inline struct guard_cgroup_info *current_guard(__u64 *cgroup_id)
{
	return guard_lookup_at(NULL, 0, cgroup_id, NULL);
}

/* ... and the id of the guarded cgroup it belongs to (itself or an ancestor). */
static __always_inline struct guard_cgroup_info *current_guard_at(__u64 *cgroup_id,
								  __u64 *guarded_id)
{
	return guard_lookup_at(NULL, 0, cgroup_id, guarded_id);
}

/*
 * The cgroup socket hooks exist twice: per guarded cgroup (sock_addr.bpf.c,
 * sock_create.bpf.c) and at container parents (sentinel.bpf.c, the same
 * code built with GUARD_SENTINEL 1), and a cgroup below a parent runs both.
 * Exactly one of them judges: the sentinel when the deepest entry is the
 * parent's (a container not taken over yet: it has no hooks of its own),
 * the cgroup's own hooks otherwise.
 */
#ifndef GUARD_SENTINEL
#define GUARD_SENTINEL 0
#endif

static __always_inline int judged_here(const struct guard_cgroup_info *guard)
{
	return !!(guard->flags & GUARD_CG_PARENT) == GUARD_SENTINEL;
}

/*
 * The policy generation that judges a guarded cgroup now: the slot's
 * generation, or its fail-closed generation while the agent's heartbeat is
 * older than the configured timeout (no agent is reading events). 0 when the
 * slot has no policy: callers then fail closed.
 */
static __always_inline __u32 active_policy(const struct guard_cgroup_info *guard)
{
	struct guard_config *config;
	struct guard_slot *slot;
	__u32 key = guard->policy_slot, zero = 0;

	slot = bpf_map_lookup_elem(&eg_slots, &key);
	if (!slot)
		return 0;
	if (slot->fail_closed_policy_id) {
		config = bpf_map_lookup_elem(&eg_config, &zero);
		if (config && config->heartbeat_timeout_ms &&
		    bpf_ktime_get_boot_ns() - config->heartbeat_ns >
			    (__u64)config->heartbeat_timeout_ms * 1000000)
			return slot->fail_closed_policy_id;
	}
	return slot->policy_id;
}

#endif /* GUARD_LIB_GUARDED_H */
