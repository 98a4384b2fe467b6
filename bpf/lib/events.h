/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * events.h: what the kernel tells userspace. Every record goes through one
 * ring buffer and begins with the common header filled here; every verdict
 * and every lost record is counted, so a full ring is visible, never silent.
 * Included by every program that reports (all but destroy.bpf.c).
 */
#ifndef GUARD_LIB_EVENTS_H
#define GUARD_LIB_EVENTS_H

#include "common.h"

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

#endif /* GUARD_LIB_EVENTS_H */
