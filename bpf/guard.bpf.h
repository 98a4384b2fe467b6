/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * guard.bpf.h: kernel-only maps and helpers shared by every egress-guard
 * program. Each object includes this file; userspace loads the first object,
 * then hands the same map fds to the others (bpf_map__reuse_fd), so there is
 * one instance of each map however many objects are loaded.
 *
 * The kernel side only looks up and emits: which cgroup is guarded, which
 * rule applies and what an exec is called are all decided by userspace, which
 * writes the answers into these maps (guard/maps.py is the only writer).
 */
#ifndef GUARD_BPF_H
#define GUARD_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "guard_abi.h"

/* Socket constants that vmlinux.h cannot carry (they are macros, not types). */
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SIGKILL 9
#define SIGSTOP 19

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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

/* policy id -> struct guard_policy_config */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct guard_policy_config);
} eg_policies SEC(".maps");

/* 0 -> struct guard_config */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} eg_config SEC(".maps");

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

/* (policy id, name or path of an executable) -> struct guard_exec_verdict */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_exec_key);
	__type(value, struct guard_exec_verdict);
} eg_exec_rules SEC(".maps");

/* socket cookie -> struct guard_flow_verdict: userspace's answer to a sample */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct guard_flow_verdict);
} eg_flow_verdicts SEC(".maps");

/* tgid -> struct guard_proc_verdict: processes whose connects a detection refuses */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct guard_proc_verdict);
} eg_proc_verdicts SEC(".maps");

/*
 * tgid -> CLOCK_BOOTTIME when the kernel stopped it at exec: the agent
 * deletes the entry when it has judged the program, and judges from /proc
 * (then resumes) whatever stays here longer than the hold timeout, e.g.
 * because its exec event was lost in a full ring.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} eg_held_execs SEC(".maps");

/* 4 bytes (little-endian u32 of a window) -> enum guard_anchor_kind bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} eg_anchors SEC(".maps");

/* enum guard_counter -> count, per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GUARD_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} eg_counters SEC(".maps");

/* every event, variable size; userspace sets the size before load */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} eg_events SEC(".maps");

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&eg_counters, &counter);

	if (value)
		*value += 1;
}

static __always_inline void count_verdict(__u8 action)
{
	count(GUARD_CTR_VERDICT_ALLOW + (action & 3));
}

/*
 * The guard entry of a cgroup: its own if guarded, else the deepest guarded
 * ancestor's. Ancestors are probed only at the levels where some cgroup is
 * guarded (eg_config.guarded_levels), so an unguarded task costs one lookup
 * plus one per occupied level, not one per level. from_skb (a constant at
 * every call) picks the cgroup of the packet's socket instead of the
 * current task's.
 */
static __always_inline struct guard_cgroup_info *guard_lookup(struct __sk_buff *skb, int from_skb,
							      __u64 *cgroup_id)
{
	struct guard_cgroup_info *info;
	struct guard_config *config;
	__u32 zero = 0, levels;
	__u64 id;

	id = from_skb ? bpf_skb_cgroup_id(skb) : bpf_get_current_cgroup_id();
	*cgroup_id = id;
	info = bpf_map_lookup_elem(&eg_guarded, &id);
	if (info)
		return info;

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
		if (info)
			return info;
	}
	return NULL;
}

/* The guard entry of the current task. */
static __always_inline struct guard_cgroup_info *current_guard(__u64 *cgroup_id)
{
	return guard_lookup(NULL, 0, cgroup_id);
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

static __always_inline void fill_header(struct guard_event_header *hdr, __u32 kind,
					__u32 size, __u64 cgroup_id, __u32 policy_id,
					__u8 action, __u16 rule_id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	hdr->kind = kind;
	hdr->size = size;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = cgroup_id;
	hdr->pid = bpf_get_current_pid_tgid() >> 32;
	hdr->ppid = BPF_CORE_READ(task, real_parent, tgid);
	hdr->uid = (__u32)bpf_get_current_uid_gid();
	hdr->policy_id = policy_id;
	bpf_get_current_comm(hdr->comm, sizeof(hdr->comm));
	hdr->action = action;
	hdr->_pad0 = 0;
	hdr->rule_id = rule_id;
	hdr->_pad1 = 0;
	hdr->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
}

/*
 * Holding (a flow's first payload, a program at exec) waits for the agent, so
 * it is only done while one is alive: its heartbeat is younger than the hold
 * timeout. Without an agent nothing is held and nothing hangs.
 */
static __always_inline int agent_alive(const struct guard_config *config)
{
	return config && config->hold_timeout_ms &&
	       bpf_ktime_get_boot_ns() - config->heartbeat_ns <
		       (__u64)config->hold_timeout_ms * 1000000;
}

/* Whether a detection has refused the current process its connects. */
static __always_inline int process_blocked(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct guard_proc_verdict *verdict;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	verdict = bpf_map_lookup_elem(&eg_proc_verdicts, &tgid);
	return verdict && verdict->action == GUARD_ACTION_BLOCK &&
	       verdict->start_ns == BPF_CORE_READ(task, group_leader, start_boottime);
}

/*
 * Scan up to `size` bytes of buf (a map value of at least GUARD_SAMPLE_MAX
 * bytes) for a 4-byte anchor of the given kind. The window is the
 * little-endian u32 of bytes [i-3, i].
 */
struct anchor_scan {
	const __u8 *buf;
	__u32 size;
	__u32 window;
	__u8 kind;
	__u8 found;
};

static long anchor_step(__u32 i, struct anchor_scan *scan)
{
	__u32 at = i;
	__u8 *kind;

	if (i >= scan->size)
		return 1;
	/* the mask is what the verifier checks; keep clang from dropping it */
	barrier_var(at);
	at &= GUARD_SAMPLE_MAX - 1;
	scan->window = (scan->window >> 8) | ((__u32)scan->buf[at] << 24);
	if (i < 3)
		return 0;
	kind = bpf_map_lookup_elem(&eg_anchors, &scan->window);
	if (kind && (*kind & scan->kind)) {
		scan->found = 1;
		return 1;
	}
	return 0;
}

static __always_inline int has_anchor(const __u8 *buf, __u32 size, __u8 kind)
{
	struct anchor_scan scan = { .buf = buf, .size = size, .kind = kind };

	bpf_loop(GUARD_SAMPLE_MAX, anchor_step, &scan, 0);
	return scan.found;
}

/*
 * Fixed-size events are reserved in the ring and submitted in place; a full
 * ring is counted in GUARD_CTR_EVENTS_LOST, never silent.
 */
static __always_inline void *event_reserve(__u32 size)
{
	void *ev = bpf_ringbuf_reserve(&eg_events, size, 0);

	if (!ev)
		count(GUARD_CTR_EVENTS_LOST);
	return ev;
}

static __always_inline void event_submit(void *ev)
{
	bpf_ringbuf_submit(ev, 0);
	count(GUARD_CTR_EVENTS_SENT);
}

/* Variable-size events are built in scratch memory and copied out. */
static __always_inline void event_output(void *ev, __u64 size)
{
	if (bpf_ringbuf_output(&eg_events, ev, size, 0))
		count(GUARD_CTR_EVENTS_LOST);
	else
		count(GUARD_CTR_EVENTS_SENT);
}

/*
 * Raw and packet sockets (sock_create.bpf.c, socket_syscall.bpf.c): whether
 * the current task's policy refuses them. A guarded cgroup whose policy is
 * missing fails closed.
 */
static __always_inline int raw_sockets_denied(__u64 *cgroup_id, __u32 *policy_id)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard = current_guard(cgroup_id);

	if (!guard)
		return 0;
	*policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, policy_id);
	if (policy && !policy->deny_raw_sockets) {
		count_verdict(GUARD_ACTION_ALLOW);
		return 0;
	}
	return 1;
}

static __always_inline void emit_socket(__u64 cgroup_id, __u32 policy_id, __u8 action,
					__u32 family, __u32 type, __u32 protocol)
{
	struct guard_socket_event *ev;

	count_verdict(action);
	ev = event_reserve(sizeof(*ev));
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

#endif /* GUARD_BPF_H */
