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
 * the program call and three compares of the syscall number. The same
 * program watches dup2/dup3 for reverse shells (stdio_socket below).
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/raw_sockets.h"
#include "lib/stdio_socket.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#if defined(__TARGET_ARCH_x86)
#define NR_SOCKET 41
#define NR_DUP2 33
#define NR_DUP3 292
#elif defined(__TARGET_ARCH_arm64)
#define NR_SOCKET 198
/*
 * arm64 has dup3 only. Not -1 for "none": sys_enter reports a user's
 * syscall(-1) (and a call a tracer skipped) with nr -1, which must not be
 * taken for a dup2.
 */
#define NR_DUP3 24
#define NR_DUP2 NR_DUP3
#else
#error "socket() syscall number unknown for this architecture"
#endif

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2

/*
 * dup2/dup3 of a connected inet socket onto stdin, stdout or stderr: the
 * shape of every reverse shell, whatever its argv. Reported (the classifier
 * names it); killed here and now when the policy says reverseShell: kill,
 * before the duplicated descriptor exists.
 */
static __always_inline int stdio_socket(struct pt_regs *regs)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	__u32 oldfd = PT_REGS_PARM1_CORE_SYSCALL(regs);
	__u32 newfd = PT_REGS_PARM2_CORE_SYSCALL(regs);
	struct file **fds, *file;
	struct socket *sock;
	struct sock *sk;
	__u32 policy_id;
	__u64 cgroup_id;
	__u16 family, state;

	if (newfd > 2 || oldfd == newfd)
		return 0;
	guard = current_guard(&cgroup_id);
	if (!guard)
		return 0;
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (!policy || !(policy->detect_flags & GUARD_DETECT_STDIO_SOCKET))
		return 0;
	if (oldfd >= BPF_CORE_READ(task, files, fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[oldfd]) || !file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if ((family != AF_INET && family != AF_INET6) ||
	    (state != TCP_ESTABLISHED && state != TCP_SYN_SENT))
		return 0;

	if (policy->stdio_socket_action == GUARD_ACTION_KILL)
		bpf_send_signal(SIGKILL);
	count_verdict(policy->stdio_socket_action);
	emit_stdio_socket(sk, family, oldfd, newfd, cgroup_id, policy_id,
			  policy->stdio_socket_action);
	return 0;
}

SEC("raw_tp/sys_enter")
int guard_socket_syscall(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs;
	__u32 policy_id, family;
	__u64 cgroup_id;
	long nr = ctx->args[1];
	__u8 action;

	if (nr == NR_DUP2 || nr == NR_DUP3)
		return stdio_socket((struct pt_regs *)ctx->args[0]);
	if (nr != NR_SOCKET)
		return 0;
	regs = (struct pt_regs *)ctx->args[0];
	family = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (family != AF_PACKET)
		return 0;
	action = raw_socket_action(&cgroup_id, &policy_id, GUARD_ACTION_KILL);
	if (action == GUARD_ACTION_ALLOW)
		return 0;
	if (action == GUARD_ACTION_KILL)
		bpf_send_signal(SIGKILL);
	emit_socket(cgroup_id, policy_id, action, family,
		    PT_REGS_PARM2_CORE_SYSCALL(regs), PT_REGS_PARM3_CORE_SYSCALL(regs));
	return 0;
}
