// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * socket_syscall.bpf.c: packet sockets for hosts without BPF-LSM.
 *
 * The cgroup sock_create hook only runs for inet sockets (inet_create and
 * inet6_create call it; packet_create does not), so it can refuse SOCK_RAW
 * but never sees AF_PACKET, which writes whole frames past every connect
 * hook. Without BPF-LSM nothing can make socket(AF_PACKET, ...) fail, so a
 * guarded process that asks for one is killed on entry to socket(): the
 * SIGKILL is delivered before the call returns to user space, so the socket
 * is never used.
 *
 * sys_enter fires for every system call on the host; an unguarded one costs
 * the program call and one compare of the syscall number.
 */
#include "guard.bpf.h"
#include <bpf/bpf_tracing.h>

#if defined(__TARGET_ARCH_x86)
#define NR_SOCKET 41
#elif defined(__TARGET_ARCH_arm64)
#define NR_SOCKET 198
#else
#error "socket() syscall number unknown for this architecture"
#endif

SEC("raw_tp/sys_enter")
int guard_socket_syscall(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs;
	__u32 policy_id, family;
	__u64 cgroup_id;

	if (ctx->args[1] != NR_SOCKET)
		return 0;
	regs = (struct pt_regs *)ctx->args[0];
	family = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (family != AF_PACKET)
		return 0;
	if (!raw_sockets_denied(&cgroup_id, &policy_id))
		return 0;
	bpf_send_signal(SIGKILL);
	emit_socket(cgroup_id, policy_id, GUARD_ACTION_KILL, family,
		    PT_REGS_PARM2_CORE_SYSCALL(regs), PT_REGS_PARM3_CORE_SYSCALL(regs));
	return 0;
}
