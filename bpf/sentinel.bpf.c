// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sentinel.bpf.c: the socket hooks of a container parent (run
 * --container-parent), where a runtime makes its containers' cgroups. A
 * cgroup made there inherits these programs the moment it exists, so a
 * container is judged from its first connect, bind, sendmsg or raw socket:
 * before the agent has found it, and while no agent runs at all (a restart,
 * an upgrade; with --pin they stay attached). They judge only cgroups whose
 * deepest eg_guarded entry is the parent's; once the agent takes a container
 * over (its own entry and hooks) or exempts it, they return at the first
 * lookup (lib/guarded.h judged_here).
 */
#define GUARD_SENTINEL 1
#include "sock_addr.bpf.c"
#include "sock_create.bpf.c"
