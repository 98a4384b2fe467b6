// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * exec.bpf.c: every exec in a guarded cgroup becomes an event with the path
 * handed to execve, the file really executed and the argv. An exec rule can
 * kill the new program here: sched_process_exec fires after the new image is
 * installed but before the task returns to user space, so a SIGKILL sent now
 * is delivered before the program runs a single instruction of its own.
 */
#include "lib/common.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/proc_verdict.h"
#include "lib/exec.h"
#include "lib/stdio_socket.h"
#include "lib/task_marks.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Never read: it makes clang emit BTF for every shared enum and struct, also
 * those no program in this object touches, so guard/kernel/abi.py can be checked
 * against the BTF of the object it is loaded with.
 */
const volatile struct guard_abi_anchor {
	enum guard_event_kind event_kind;
	enum guard_action action;
	enum guard_proto proto;
	enum guard_hook hook;
	enum guard_counter counter;
	enum guard_exec_match exec_match;
	enum guard_exec_flags exec_flags;
	enum guard_cgroup_op cgroup_op;
	enum guard_config_flags config_flags;
	enum guard_egress_families egress_families;
	enum guard_exec_hold exec_hold;
	enum guard_detect_flags detect_flags;
	enum guard_anchor_kind anchor_kind;
	enum guard_sample_kind sample_kind;
	enum guard_payload_flags payload_flags;
	enum guard_unjudged unjudged;
	enum guard_policy_names policy_names;
	enum guard_dns_direction dns_direction;
	enum guard_dns_flags dns_flags;
	enum guard_name_kind name_kind;
	enum guard_escape_how escape_how;
	enum guard_escape_flags escape_flags;
	enum guard_cgroup_flags cgroup_flags;
	struct guard_payload_event payload_event;
	struct guard_dns_event dns_event;
	struct guard_name_key name_key;
	struct guard_name_value name_value;
	struct guard_name_rules_key name_rules_key;
	struct guard_learned_key learned_key;
	struct guard_learned_name learned_name;
	struct guard_learned learned;
	struct guard_stdio_socket_event stdio_socket_event;
	struct guard_flow_verdict flow_verdict;
	struct guard_proc_verdict proc_verdict;
	struct guard_exec_event exec_event;
	struct guard_connect_event connect_event;
	struct guard_socket_event socket_event;
	struct guard_cgroup_event cgroup_event;
	struct guard_cgroup_info cgroup_info;
	struct guard_slot slot;
	struct guard_policy_config policy_config;
	struct guard_config config;
	struct guard_lpm4_key lpm4_key;
	struct guard_host4_key host4_key;
	struct guard_lpm6_key lpm6_key;
	struct guard_rule_span rule_span;
	struct guard_port_rule port_rule;
	struct guard_exec_key exec_key;
	struct guard_exec_verdict exec_verdict;
	struct guard_sendmsg_key sendmsg_key;
	struct guard_escape_event escape_event;
	struct guard_fold_key fold_key;
	struct guard_fold fold;
} guard_abi_anchor;

#define LOAD(x) (*(volatile __u32 *)&(x))
#define STORE(x, v) (*(volatile __u32 *)&(x) = (v))

/*
 * Rebuild the executed file's path from its dentries, crossing mount points,
 * up to the root of the task's mount namespace (so a container sees its own
 * paths). Writes the path into ev->exe and returns the offset of its
 * basename there.
 */
static __always_inline __u32 resolve_exe(struct exec_scratch *s, struct task_struct *task)
{
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct dentry *dentry = BPF_CORE_READ(exe, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(exe, f_path.mnt);
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	__u32 off, size, base_len;

	s->path[GUARD_PATH_MAX - 1] = 0;
	STORE(s->cursor, GUARD_PATH_MAX - 1); /* where the path starts */
	STORE(s->mark, 0);                    /* length of the basename */
	for (int depth = 0; depth < GUARD_PATH_DEPTH; depth++) {
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		const unsigned char *name;
		__u32 len;

		if (!dentry)
			break;
		if (dentry == mnt_root || dentry == parent) {
			/* the root of this mount: continue in the mount above it */
			if (dentry != mnt_root || mnt == mnt_parent)
				break;
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			continue;
		}
		name = BPF_CORE_READ(dentry, d_name.name);
		len = BPF_CORE_READ(dentry, d_name.len) & PATH_MASK;
		off = LOAD(s->cursor) & PATH_MASK;
		if (len + 1 > off) {
			s->ev.flags |= GUARD_EXEC_EXE_TRUNCATED;
			break;
		}
		off -= len;
		bpf_probe_read_kernel(&s->path[off & PATH_MASK], len, name);
		off -= 1;
		s->path[off & PATH_MASK] = '/';
		STORE(s->cursor, off);
		if (!LOAD(s->mark))
			STORE(s->mark, len);
		dentry = parent;
	}

	off = LOAD(s->cursor) & PATH_MASK;
	size = GUARD_PATH_MAX - off;
	bpf_probe_read_kernel(s->ev.exe, size & (2 * GUARD_PATH_MAX - 1) ?: 1,
			      &s->path[off]);
	s->ev.exe_size = size - 1;
	base_len = LOAD(s->mark);
	return (size - 1 - base_len) & PATH_MASK;
}

/* Offset of the basename in a NUL-terminated path of at most len bytes. */
static __always_inline __u32 basename_offset(struct exec_scratch *s, const char *path, __u32 len)
{
	STORE(s->mark, 0);
	for (__u32 i = 0; i < GUARD_PATH_MAX; i++) {
		if (i >= len || !path[i])
			break;
		if (path[i] == '/')
			STORE(s->mark, i + 1);
	}
	return LOAD(s->mark) & PATH_MASK;
}

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define IPPROTO_UDP 17

/*
 * A program that starts with an inet socket on stdin, stdout or stderr: a
 * reverse shell however the socket got there (dup, dup2, dup3, fcntl
 * F_DUPFD, a socket made on a freed low descriptor, dup'ed before its
 * connect, UDP). Reported as a stdio_socket event with oldfd == newfd (found
 * at exec, not at a dup); when the program is a shell, an interpreter or a
 * socket relay (its exec entry holds it for a detection) and the policy
 * says reverseShell: kill, it dies here, before its first instruction.
 * Such a program is also judged by its parent's fds 0-2 (see below).
 */
static __always_inline void stdio_socket_at_exec(struct task_struct *task, __u64 cgroup_id,
						 __u32 policy_id, __u8 hold_flags)
{
	struct guard_policy_config *policy;
	struct file **fds = NULL, *file;
	struct files_struct *files;
	struct sock *sk = NULL;
	struct socket *sock;
	__u32 max = 0, fd = 0;
	__u16 family = 0, state;
	__u8 action, proto;

	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (!policy || !(policy->detect_flags & GUARD_DETECT_STDIO_SOCKET))
		return;
	/*
	 * Its own fds 0-2, then, for a shell or interpreter, its parent's: a
	 * program that put the socket on its own stdio and runs the shell
	 * behind a pty (python's pty.spawn) gives the shell the pty, not the
	 * socket.
	 */
	for (int i = 0; i < 6; i++) {
		struct sock *candidate;
		__u32 at = i < 3 ? i : i - 3;

		if (i == 0 || i == 3) {
			if (i == 3 && !hold_flags)
				break;
			files = i == 0 ? BPF_CORE_READ(task, files)
				       : BPF_CORE_READ(task, real_parent, files);
			max = BPF_CORE_READ(files, fdt, max_fds);
			fds = BPF_CORE_READ(files, fdt, fd);
		}
		if (at >= max || bpf_probe_read_kernel(&file, sizeof(file), &fds[at]) || !file)
			continue;
		if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
			continue;
		sock = BPF_CORE_READ(file, private_data);
		candidate = BPF_CORE_READ(sock, sk);
		family = BPF_CORE_READ(candidate, __sk_common.skc_family);
		if (family != AF_INET && family != AF_INET6)
			continue;
		state = BPF_CORE_READ(candidate, __sk_common.skc_state);
		proto = BPF_CORE_READ(candidate, sk_protocol);
		/* connected: a TCP flow, or a UDP socket with a peer */
		if (proto == IPPROTO_UDP ? !BPF_CORE_READ(candidate, __sk_common.skc_dport)
					 : (state != TCP_ESTABLISHED && state != TCP_SYN_SENT))
			continue;
		sk = candidate;
		fd = at;
		break;
	}
	if (!sk)
		return;
	action = hold_flags ? policy->stdio_socket_action : GUARD_ACTION_LOG;
	if (action == GUARD_ACTION_KILL)
		bpf_send_signal(SIGKILL);
	count_verdict(action);
	emit_stdio_socket(sk, family, fd, fd, cgroup_id, policy_id, action);
}

/*
 * A raw tracepoint, attached by name: unlike a classic tracepoint it needs no
 * tracefs mount, which many hosts (this project's CI included) do not have.
 * Arguments: (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm).
 */
SEC("raw_tp/sched_process_exec")
int guard_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct guard_exec_verdict verdict = { .action = GUARD_ACTION_LOG };
	unsigned long arg_start, arg_end;
	struct guard_cgroup_info *guard;
	struct exec_scratch *s;
	__u32 zero = 0, policy_id, exe_base, file_base, file_len;
	__u64 cgroup_id, guarded_id, argv_size, size;
	long n;

	guard = current_guard_at(&cgroup_id, &guarded_id);
	if (!guard)
		return 0;
	mark_current(guarded_id); /* guarded from now on, wherever it goes (escape.bpf.c) */
	policy_id = active_policy(guard);
	s = bpf_map_lookup_elem(&eg_exec_scratch, &zero);
	if (!s)
		return 0;

	s->ev.flags = 0;
	n = bpf_probe_read_kernel_str(s->ev.filename, sizeof(s->ev.filename),
				      BPF_CORE_READ(bprm, filename));
	file_len = n > 0 ? (n - 1) & PATH_MASK : 0;
	file_base = basename_offset(s, s->ev.filename, file_len);
	exe_base = resolve_exe(s, task);

	judge_exec(s, policy_id, GUARD_EXEC_MATCH_PATH, s->ev.exe, s->ev.exe_size, &verdict);
	if (s->ev.filename[0] == '/')
		judge_exec(s, policy_id, GUARD_EXEC_MATCH_PATH, s->ev.filename, file_len, &verdict);
	judge_exec(s, policy_id, GUARD_EXEC_MATCH_NAME, &s->ev.exe[exe_base],
		   s->ev.exe_size - exe_base, &verdict);
	judge_exec(s, policy_id, GUARD_EXEC_MATCH_NAME, &s->ev.filename[file_base],
		   file_len - file_base, &verdict);
	count_verdict(verdict.action);

	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	argv_size = arg_end - arg_start;
	if (argv_size > GUARD_ARGV_MAX) {
		argv_size = GUARD_ARGV_MAX;
		s->ev.flags |= GUARD_EXEC_ARGV_TRUNCATED;
	}
	if (bpf_probe_read_user(s->ev.argv, argv_size, (void *)arg_start))
		argv_size = 0;
	s->ev.argv_size = argv_size;

	if (verdict.action == GUARD_ACTION_KILL) {
		bpf_send_signal(SIGKILL);
	} else if (must_hold(s, verdict.flags, argv_size)) {
		/*
		 * Stopped before its first instruction, like the kill above:
		 * userspace reads the argv (and the ssh config it names), then
		 * lets it go on, refuses its connects, or kills it.
		 */
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		__u64 now = bpf_ktime_get_boot_ns();

		bpf_send_signal(SIGSTOP);
		bpf_map_update_elem(&eg_held_execs, &tgid, &now, BPF_ANY);
		s->ev.flags |= GUARD_EXEC_HELD;
	}

	size = offsetof(struct guard_exec_event, argv) + argv_size;
	if (size > sizeof(s->ev))
		size = sizeof(s->ev);
	fill_header(&s->ev.hdr, GUARD_EVENT_EXEC, size, cgroup_id, policy_id,
		    verdict.action, verdict.rule_id);
	event_output(&s->ev.hdr, size);
	if (verdict.action != GUARD_ACTION_KILL)
		stdio_socket_at_exec(task, cgroup_id, policy_id, verdict.flags);
	return 0;
}

/*
 * A process a detection refused its connects (eg_proc_verdicts) passes the
 * refusal on to every process it forks: `bash -c 'bash -i >& /dev/tcp/...'`
 * connects from a child. Threads share the entry of their thread group.
 * Arguments: (struct task_struct *parent, struct task_struct *child).
 */
SEC("raw_tp/sched_process_fork")
int guard_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	struct guard_proc_verdict *verdict, inherited = {};
	__u32 parent_tgid, child_tgid;

	/* every fork of the host comes here: nothing more until a verdict exists */
	if (!proc_verdicts_exist())
		return 0;
	parent_tgid = BPF_CORE_READ(parent, tgid);
	child_tgid = BPF_CORE_READ(child, tgid);
	if (child_tgid == parent_tgid)
		return 0; /* a new thread */
	verdict = bpf_map_lookup_elem(&eg_proc_verdicts, &parent_tgid);
	if (!verdict || verdict->start_ns != BPF_CORE_READ(parent, group_leader, start_boottime))
		return 0;
	inherited.action = verdict->action;
	inherited.start_ns = BPF_CORE_READ(child, start_boottime);
	bpf_map_update_elem(&eg_proc_verdicts, &child_tgid, &inherited, BPF_ANY);
	return 0;
}
