// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * cgroup_watch.bpf.c: container discovery. Every container runtime makes a
 * cgroup v2 directory for a container before it starts the container's
 * processes; reporting the mkdir lets the agent attach to the new cgroup
 * within milliseconds, usually before the container's first exec. rmdir lets
 * it free what it kept for the cgroup. Off unless the agent asks
 * (GUARD_CONFIG_WATCH_CGROUPS); cgroups are made rarely, so it costs nothing.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* cgroup v1 hierarchies of a hybrid host have ids from 1; v2 is 0 */
#define CGROUP2_HIERARCHY 0

static __always_inline int report(struct cgroup *cgrp, const char *path, __u32 op)
{
	struct guard_cgroup_event *ev;
	struct guard_config *config;
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!config || !(config->flags & GUARD_CONFIG_WATCH_CGROUPS))
		return 0;
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != CGROUP2_HIERARCHY)
		return 0;
	ev = event_reserve(sizeof(*ev), GUARD_EVENT_CGROUP, 0, GUARD_ACTION_LOG);
	if (!ev)
		return 0;
	fill_header(&ev->hdr, GUARD_EVENT_CGROUP, sizeof(*ev), BPF_CORE_READ(cgrp, kn, id), 0,
		    GUARD_ACTION_LOG, GUARD_RULE_NONE);
	ev->op = op;
	ev->level = BPF_CORE_READ(cgrp, level);
	if (bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), path) < 0)
		ev->path[0] = 0;
	event_submit(ev);
	return 0;
}

/* Arguments of both: (struct cgroup *cgrp, const char *path). */
SEC("raw_tp/cgroup_mkdir")
int guard_cgroup_mkdir(struct bpf_raw_tracepoint_args *ctx)
{
	return report((struct cgroup *)ctx->args[0], (const char *)ctx->args[1],
		      GUARD_CGROUP_MKDIR);
}

SEC("raw_tp/cgroup_rmdir")
int guard_cgroup_rmdir(struct bpf_raw_tracepoint_args *ctx)
{
	return report((struct cgroup *)ctx->args[0], (const char *)ctx->args[1],
		      GUARD_CGROUP_RMDIR);
}
