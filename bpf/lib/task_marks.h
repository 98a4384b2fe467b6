/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * task_marks.h: which processes are guarded, remembered on the process
 * itself. A cgroup migration is reported only after it happened (the
 * cgroup_attach_task tracepoint fires once the task's css_set is the
 * destination's), so the cgroup a process left is not there to ask any
 * more: the mark says which guarded cgroup it belonged to, and
 * escape.bpf.c judges the move against it. Marks live in task-local
 * storage on the thread-group leader (a thread is judged by its leader's
 * mark), so they go with the process and cost nothing for unguarded ones.
 * Set where a process enters: exec in a guarded cgroup (exec.bpf.c), fork
 * of a marked process, a migration into a guarded cgroup, and the agent's
 * adoption of processes already running (escape.bpf.c, an iterator).
 */
#ifndef GUARD_LIB_TASK_MARKS_H
#define GUARD_LIB_TASK_MARKS_H

#include "common.h"
#include "guarded.h"

struct task_mark {
	__u64 guarded_id; /* the guarded cgroup the process belongs to (itself or an ancestor) */
};

/* thread-group leader (task storage) -> struct task_mark: guarded processes only */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_mark);
} eg_task_marks SEC(".maps");

/*
 * Mark the current process as guarded by guarded_id, unless it is marked
 * already by a cgroup still guarded (the mark it entered with stands).
 * Called after exec, where the current task is its thread group's leader.
 */
static __always_inline void mark_current(__u64 guarded_id)
{
	struct task_mark init = { .guarded_id = guarded_id }, *mark;

	mark = bpf_task_storage_get(&eg_task_marks, bpf_get_current_task_btf(), &init,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (mark && mark->guarded_id != guarded_id &&
	    !bpf_map_lookup_elem(&eg_guarded, &mark->guarded_id))
		mark->guarded_id = guarded_id; /* its old cgroup is no longer guarded */
}

#endif /* GUARD_LIB_TASK_MARKS_H */
