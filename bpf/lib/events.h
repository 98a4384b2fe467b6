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
	/* a trusted pointer: its fields are plain loads, not probe reads */
	struct task_struct *task = bpf_get_current_task_btf();

	hdr->kind = kind;
	hdr->size = size;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = cgroup_id;
	hdr->pid = bpf_get_current_pid_tgid() >> 32;
	hdr->ppid = task->real_parent->tgid;
	hdr->uid = (__u32)bpf_get_current_uid_gid();
	hdr->policy_id = policy_id;
	bpf_get_current_comm(hdr->comm, sizeof(hdr->comm));
	hdr->action = action;
	hdr->_pad0 = 0;
	hdr->rule_id = rule_id;
	hdr->_pad1 = 0;
	hdr->start_ns = task->group_leader->start_boottime;
}

/* leaf cgroup id -> its shed and lost records (guard_workload_loss) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GUARD_WORKLOAD_LOSS_MAX);
	__type(key, __u64);
	__type(value, struct guard_workload_loss);
} eg_workload_loss SEC(".maps");

static __always_inline struct guard_workload_loss *workload_loss(__u64 cgroup_id)
{
	struct guard_workload_loss *w, fresh = {};

	w = bpf_map_lookup_elem(&eg_workload_loss, &cgroup_id);
	if (w)
		return w;
	bpf_map_update_elem(&eg_workload_loss, &cgroup_id, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&eg_workload_loss, &cgroup_id);
}

/*
 * Whether a record may take its place in the ring. Below half full, always:
 * nothing is looked up. Above, one workload (leaf cgroup) gets 1/
 * GUARD_FAIR_SHARE of the ring's bytes per GUARD_FAIR_WINDOW_MS and the rest
 * of its records are shed and counted against it, so a noisy sandbox (a connect or
 * exec storm) cannot take the room of the others' records before the agent
 * catches up. Never shed: the kernel's enforcement (block, kill and their
 * audit twins) and discovery (a new cgroup to guard).
 */
static __always_inline int event_admit(__u32 kind, __u64 cgroup_id, __u8 action, __u32 bytes)
{
	__u64 avail = bpf_ringbuf_query(&eg_events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&eg_events, BPF_RB_RING_SIZE);
	struct guard_workload_loss *w;
	__u64 now;

	if (avail < size / 2 || kind == GUARD_EVENT_CGROUP ||
	    (action & 3) >= GUARD_ACTION_BLOCK || action > 3)
		return 1;
	w = workload_loss(cgroup_id);
	if (!w)
		return 1;
	now = bpf_ktime_get_boot_ns();
	if (now - w->window_ns > (__u64)GUARD_FAIR_WINDOW_MS * 1000000) {
		w->window_ns = now;
		w->in_window = 0;
	}
	if (w->in_window + bytes <= size / GUARD_FAIR_SHARE) {
		w->in_window += bytes;
		return 1;
	}
	__sync_fetch_and_add(&w->shed, 1);
	count(GUARD_CTR_EVENTS_SHED);
	return 0;
}

/* A record that found the ring full, counted against its workload too. */
static __always_inline void event_lost(__u64 cgroup_id)
{
	struct guard_workload_loss *w;

	count(GUARD_CTR_EVENTS_LOST);
	w = workload_loss(cgroup_id);
	if (w)
		__sync_fetch_and_add(&w->lost, 1);
}

/*
 * Fixed-size events are reserved in the ring and submitted in place, once
 * event_admit let them in (asked before the reserve: a record discarded
 * later would hold its room until the reader passed it); a full ring is
 * counted in GUARD_CTR_EVENTS_LOST and against the workload, never silent.
 */
static __always_inline void *event_reserve(__u32 size, __u32 kind, __u64 cgroup_id, __u8 action)
{
	void *ev;

	if (!event_admit(kind, cgroup_id, action, size))
		return NULL;
	ev = bpf_ringbuf_reserve(&eg_events, size, 0);
	if (!ev)
		event_lost(cgroup_id);
	return ev;
}

static __always_inline void event_submit(void *ev)
{
	bpf_ringbuf_submit(ev, 0);
	count(GUARD_CTR_EVENTS_SENT);
}

/* Variable-size events are built in scratch memory and copied out. */
static __always_inline int event_output(struct guard_event_header *hdr, __u64 size)
{
	if (!event_admit(hdr->kind, hdr->cgroup_id, hdr->action, size))
		return 0;
	if (bpf_ringbuf_output(&eg_events, hdr, size, 0)) {
		event_lost(hdr->cgroup_id);
		return 0;
	}
	count(GUARD_CTR_EVENTS_SENT);
	return 1;
}

#endif /* GUARD_LIB_EVENTS_H */
