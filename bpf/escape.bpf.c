// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * escape.bpf.c: a guarded process stays guarded. The cgroup hooks judge
 * whatever runs in a guarded cgroup, so a root process that writes its pid
 * into another cgroup's cgroup.procs (or a thread's id into cgroup.threads,
 * or clones a child into another cgroup with clone3 CLONE_INTO_CGROUP) would
 * be unguarded from then on. Each guarded process carries a mark naming its
 * guarded cgroup (lib/task_marks.h); a move of a marked process is allowed
 * into that cgroup's subtree (nested containers, systemd delegation) and
 * into another cgroup guarded by the same policy slot; anything else is an
 * escape: the kernel kills the process at the move (SIGKILL before it runs
 * again; audit mode only reports) and says so in an escape event.
 *
 * BTF tracepoints (tp_btf): their task arguments are trusted pointers, which
 * task storage and bpf_send_signal_task (6.13) need; raw_tp arguments are
 * not. Both hooks are cheap when nothing is guarded: cgroup_attach_task
 * fires only on a migration, and a fork costs one task-storage lookup (plus
 * a pointer compare: a child put into another cgroup than its parent's).
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/task_marks.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern int bpf_send_signal_task(struct task_struct *task, int sig, enum pid_type type,
				__u64 value) __ksym __weak;

/* cgroup v1 hierarchies of a hybrid host have ids from 1; v2 is 0 */
#define CGROUP2_HIERARCHY 0
#define PF_KTHREAD 0x00200000

/* What a cgroup is, seen from a marked process. */
struct cgroup_view {
	__u64 id;                          /* the cgroup's own id */
	__u64 guard_id;                    /* its guarded cgroup (itself or an ancestor); 0: none */
	struct guard_cgroup_info *guard;   /* ... and that cgroup's entry */
	int under;                         /* the mark's guarded cgroup is itself or an ancestor */
};

/*
 * Walk from a cgroup up to the root: its guarded cgroup (the deepest
 * guarded one on the way, looked up only at levels where something is
 * guarded, as guarded.h does) and whether mark_id is on the way. At most
 * GUARD_CGROUP_LEVELS + 1 steps; only on a migration, a fork into another
 * cgroup, or the adoption iterator.
 */
static __always_inline void view_cgroup(struct cgroup *cgrp, __u64 mark_id, struct cgroup_view *v)
{
	struct guard_config *config;
	__u32 zero = 0, levels = 0;
	int found = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (config)
		levels = config->guarded_levels;
	v->id = BPF_CORE_READ(cgrp, kn, id);
	v->guard_id = 0;
	v->guard = NULL;
	v->under = 0;
	for (int i = 0; i <= GUARD_CGROUP_LEVELS; i++) {
		struct cgroup_subsys_state *parent;
		struct guard_cgroup_info *info;
		__u64 id;
		int level;

		if (!cgrp)
			break;
		id = BPF_CORE_READ(cgrp, kn, id);
		level = BPF_CORE_READ(cgrp, level);
		if (mark_id && id == mark_id)
			v->under = 1;
		if (!found && (i == 0 || (level >= 0 && level < GUARD_CGROUP_LEVELS &&
					  (levels & (1u << level))))) {
			info = bpf_map_lookup_elem(&eg_guarded, &id);
			/* the deepest entry decides: an exempt one is no guard */
			if (info) {
				found = 1;
				if (!(info->flags & GUARD_CG_EXEMPT)) {
					v->guard = info;
					v->guard_id = id;
				}
			}
		}
		if (found && (v->under || !mark_id))
			break;
		parent = BPF_CORE_READ(cgrp, self.parent);
		if (!parent)
			break;
		cgrp = (struct cgroup *)((void *)parent - bpf_core_field_offset(struct cgroup, self));
	}
}

/* The policy slot of a guarded cgroup, or -1 when it is not (any more) guarded. */
static __always_inline long slot_of(__u64 guarded_id)
{
	struct guard_cgroup_info *info = bpf_map_lookup_elem(&eg_guarded, &guarded_id);

	return info ? (long)info->policy_slot : -1;
}

/*
 * A move within the mark's subtree stays guarded, except below a container
 * parent: there the subtree holds every container of the runtime, and a
 * move into one the agent took over stays allowed only for the same policy
 * slot (checked next); into an exempt one it is an escape.
 */
static __always_inline int stays_under(__u64 mark_id, const struct cgroup_view *dst)
{
	struct guard_cgroup_info *info;

	if (!dst->under)
		return 0;
	info = bpf_map_lookup_elem(&eg_guarded, &mark_id);
	return !info || !(info->flags & GUARD_CG_PARENT) || dst->guard_id == mark_id;
}

/* A mark naming a container parent gives way to the cgroup the agent took over. */
static __always_inline int parent_mark(__u64 mark_id)
{
	struct guard_cgroup_info *info = bpf_map_lookup_elem(&eg_guarded, &mark_id);

	return info && (info->flags & GUARD_CG_PARENT);
}

/*
 * An escape: kill the process (unless its policy audits) and report it.
 * victim is trusted (a tracepoint argument); hdr describes it, not the
 * mover (the current task).
 */
static __always_inline void escaped(struct task_struct *victim, __u64 guarded_id,
				    const struct cgroup_view *dst, const char *path, __u32 how)
{
	struct guard_cgroup_info *info = bpf_map_lookup_elem(&eg_guarded, &guarded_id);
	struct task_struct *leader = BPF_CORE_READ(victim, group_leader);
	struct task_struct *mover = (struct task_struct *)bpf_get_current_task();
	struct guard_policy_config *policy = NULL;
	struct guard_escape_event *ev;
	__u32 policy_id = 0, flags = 0;
	__u8 action = GUARD_ACTION_KILL;

	if (info) {
		policy_id = active_policy(info);
		policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	}
	if (policy && policy->audit)
		action = GUARD_ACTION_WOULD_KILL;
	if (dst->guard)
		flags |= GUARD_ESCAPE_DST_GUARDED;
	if (action == GUARD_ACTION_KILL &&
	    (!bpf_send_signal_task || /* a kernel before 6.13 */
	     bpf_send_signal_task(victim, SIGKILL, PIDTYPE_TGID, 0)))
		flags |= GUARD_ESCAPE_UNSIGNALLED;
	count_verdict(action);

	ev = event_reserve(sizeof(*ev), GUARD_EVENT_ESCAPE, guarded_id, action);
	if (!ev)
		return;
	ev->hdr.kind = GUARD_EVENT_ESCAPE;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	ev->hdr.cgroup_id = guarded_id;
	ev->hdr.pid = BPF_CORE_READ(victim, tgid);
	ev->hdr.ppid = BPF_CORE_READ(leader, real_parent, tgid);
	ev->hdr.uid = BPF_CORE_READ(victim, cred, uid.val);
	ev->hdr.policy_id = policy_id;
	BPF_CORE_READ_STR_INTO(&ev->hdr.comm, leader, comm);
	ev->hdr.action = action;
	ev->hdr._pad0 = 0;
	ev->hdr.rule_id = GUARD_RULE_NONE;
	ev->hdr._pad1 = 0;
	ev->hdr.start_ns = BPF_CORE_READ(leader, start_boottime);
	ev->dst_cgroup_id = dst->id;
	ev->how = how;
	ev->flags = flags;
	ev->tid = BPF_CORE_READ(victim, pid);
	ev->mover_pid = bpf_get_current_pid_tgid() >> 32;
	BPF_CORE_READ_STR_INTO(&ev->mover_comm, mover, group_leader, comm);
	ev->dst_path[0] = 0;
	if (path && bpf_probe_read_kernel_str(ev->dst_path, sizeof(ev->dst_path), path) < 0)
		ev->dst_path[0] = 0;
	event_submit(ev);
}

/*
 * A process (or one thread, threadgroup false: cgroup.threads) was moved
 * into dst_cgrp. Arguments: (struct cgroup *dst_cgrp, const char *path,
 * struct task_struct *task, bool threadgroup); task is the thread-group
 * leader when threadgroup. Fires after the move, once per write.
 */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(guard_cgroup_attach, struct cgroup *dst_cgrp, const char *path,
	     struct task_struct *task, bool threadgroup)
{
	struct task_mark init = {}, *mark;
	struct cgroup_view dst;
	long slot;

	if (BPF_CORE_READ(dst_cgrp, root, hierarchy_id) != CGROUP2_HIERARCHY)
		return 0; /* a cgroup v1 hierarchy: the hooks live on v2 only */
	mark = bpf_task_storage_get(&eg_task_marks, task->group_leader, 0, 0);
	if (mark && slot_of(mark->guarded_id) < 0)
		mark = NULL; /* its cgroup is no longer guarded: so neither is it */
	view_cgroup(dst_cgrp, mark ? mark->guarded_id : 0, &dst);
	if (!mark) {
		/* entering a guarded cgroup (podman exec, a runtime's join): marked */
		if (dst.guard) {
			init.guarded_id = dst.guard_id;
			mark = bpf_task_storage_get(&eg_task_marks, task->group_leader, &init,
						    BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (mark)
				mark->guarded_id = dst.guard_id;
		}
		return 0;
	}
	if (stays_under(mark->guarded_id, &dst))
		return 0; /* inside its guarded cgroup: a child cgroup stays guarded */
	slot = slot_of(mark->guarded_id);
	if (dst.guard && dst.guard->policy_slot == slot) {
		mark->guarded_id = dst.guard_id; /* judged by the same policy there */
		return 0;
	}
	escaped(task, mark->guarded_id, &dst, path,
		threadgroup ? GUARD_ESCAPE_PROCS : GUARD_ESCAPE_THREADS);
	return 0;
}

/*
 * A fork: a child of a marked process inherits the mark, and one put into
 * another cgroup than its parent's (clone3 CLONE_INTO_CGROUP) is judged
 * like a move. The child has not run yet: cgroup_post_fork placed it before
 * this tracepoint, and wake_up_new_task comes after it. An unmarked parent
 * cloning a child into a guarded cgroup (a runtime starting a container's
 * first process) gets the child marked. Arguments: (struct task_struct
 * *parent, struct task_struct *child).
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(guard_fork_mark, struct task_struct *parent, struct task_struct *child)
{
	struct task_mark init = {}, *mark;
	struct cgroup_view dst;
	int thread = child->tgid == parent->tgid;
	long slot;

	mark = bpf_task_storage_get(&eg_task_marks, parent->group_leader, 0, 0);
	if (BPF_CORE_READ(child, cgroups) == BPF_CORE_READ(parent, cgroups)) {
		/* the usual fork: its parent's cgroups */
		if (mark && !thread) {
			init.guarded_id = mark->guarded_id;
			bpf_task_storage_get(&eg_task_marks, child, &init,
					     BPF_LOCAL_STORAGE_GET_F_CREATE);
		}
		return 0;
	}
	if (mark && slot_of(mark->guarded_id) < 0)
		mark = NULL;
	view_cgroup(BPF_CORE_READ(child, cgroups, dfl_cgrp), mark ? mark->guarded_id : 0, &dst);
	if (!mark) {
		if (dst.guard && !thread) {
			init.guarded_id = dst.guard_id;
			bpf_task_storage_get(&eg_task_marks, child, &init,
					     BPF_LOCAL_STORAGE_GET_F_CREATE);
		}
		return 0;
	}
	slot = slot_of(mark->guarded_id);
	if (stays_under(mark->guarded_id, &dst) || (dst.guard && dst.guard->policy_slot == slot)) {
		init.guarded_id = stays_under(mark->guarded_id, &dst) ? mark->guarded_id : dst.guard_id;
		if (!thread)
			bpf_task_storage_get(&eg_task_marks, child, &init,
					     BPF_LOCAL_STORAGE_GET_F_CREATE);
		return 0;
	}
	escaped(child, mark->guarded_id, &dst, NULL, GUARD_ESCAPE_CLONE);
	return 0;
}

/*
 * Adoption: the agent runs this iterator once it has guarded cgroups that
 * may hold processes already (at start, a cgroup selected later), so those
 * are marked too. Processes only (thread-group leaders), no kernel threads;
 * a mark of a cgroup still guarded stands, unless it names a container
 * parent and the process's cgroup has an entry of its own now.
 */
SEC("iter/task")
int guard_mark_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct task_mark init = {}, *mark;
	struct cgroup_view v;

	if (!task || task->pid != task->tgid || (task->flags & PF_KTHREAD))
		return 0;
	view_cgroup(BPF_CORE_READ(task, cgroups, dfl_cgrp), 0, &v);
	if (!v.guard)
		return 0;
	init.guarded_id = v.guard_id;
	mark = bpf_task_storage_get(&eg_task_marks, task, &init, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (mark && mark->guarded_id != v.guard_id &&
	    (slot_of(mark->guarded_id) < 0 || parent_mark(mark->guarded_id)))
		mark->guarded_id = v.guard_id;
	return 0;
}
