/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * guard_abi.h: every struct, enum and limit that crosses the kernel/user
 * boundary. Python mirrors this file in guard/abi.py and tests/unit/test_abi.py
 * checks that mirror against the BTF of the compiled objects, so change both
 * together. Rules: fixed-width types, explicit padding, enum values never reused.
 */
#ifndef GUARD_ABI_H
#define GUARD_ABI_H

#define GUARD_COMM_LEN 16
/* Bytes of an executable path carried in events and exec-match keys. */
#define GUARD_PATH_MAX 256
/* Bytes of argv (NUL-separated) carried in an exec event. */
#define GUARD_ARGV_MAX 4096
/* Dentries walked to rebuild an executable's path. */
#define GUARD_PATH_DEPTH 32
/* Rules the kernel scans for one CIDR match; the policy compiler refuses more. */
#define GUARD_RULES_PER_PREFIX 64
/* Cgroup levels probed when the leaf cgroup is not itself guarded. */
#define GUARD_CGROUP_LEVELS 32
/* Rule id 0 means "no rule decided, the policy default did". */
#define GUARD_RULE_NONE 0
/* Policy slots: policies in force at once (one per selector, later). */
#define GUARD_POLICY_SLOTS 256

enum guard_event_kind {
	GUARD_EVENT_EXEC = 1,
	GUARD_EVENT_CONNECT = 2,
	GUARD_EVENT_SOCKET = 3,
	GUARD_EVENT_CGROUP = 4,
};

enum guard_cgroup_op {
	GUARD_CGROUP_MKDIR = 1,
	GUARD_CGROUP_RMDIR = 2,
};

enum guard_config_flags {
	GUARD_CONFIG_WATCH_CGROUPS = 1, /* report cgroup v2 mkdir/rmdir (container discovery) */
};

enum guard_action {
	GUARD_ACTION_ALLOW = 0,
	GUARD_ACTION_LOG = 1,
	GUARD_ACTION_BLOCK = 2,
	GUARD_ACTION_KILL = 3,
};

/* IANA protocol numbers, so the kernel can compare them with sk->protocol. */
enum guard_proto {
	GUARD_PROTO_ANY = 0,
	GUARD_PROTO_TCP = 6,
	GUARD_PROTO_UDP = 17,
};

enum guard_hook {
	GUARD_HOOK_CONNECT4 = 1,
	GUARD_HOOK_CONNECT6 = 2,
	GUARD_HOOK_SENDMSG4 = 3,
	GUARD_HOOK_SENDMSG6 = 4,
};

/* Index into the per-CPU counter array eg_counters. */
enum guard_counter {
	GUARD_CTR_EVENTS_SENT = 0,
	GUARD_CTR_EVENTS_LOST = 1,
	GUARD_CTR_VERDICT_ALLOW = 2,
	GUARD_CTR_VERDICT_LOG = 3,
	GUARD_CTR_VERDICT_BLOCK = 4,
	GUARD_CTR_VERDICT_KILL = 5,
	GUARD_CTR_MAX = 6,
};

enum guard_exec_match {
	GUARD_EXEC_MATCH_NAME = 1, /* basename of the executable */
	GUARD_EXEC_MATCH_PATH = 2, /* absolute path of the executable */
};

enum guard_exec_flags {
	GUARD_EXEC_ARGV_TRUNCATED = 1,
	GUARD_EXEC_EXE_TRUNCATED = 2,
};

/* Every event begins with this header. */
struct guard_event_header {
	__u32 kind;      /* enum guard_event_kind */
	__u32 size;      /* bytes in the whole record, header included */
	__u64 ktime_ns;  /* CLOCK_BOOTTIME */
	__u64 cgroup_id; /* leaf cgroup v2 id of the task */
	__u32 pid;       /* thread-group id */
	__u32 ppid;
	__u32 uid;
	__u32 policy_id; /* policy generation that judged the event */
	char comm[GUARD_COMM_LEN];
	__u8 action;     /* enum guard_action */
	__u8 _pad0;
	__u16 rule_id;   /* GUARD_RULE_NONE or the deciding rule */
	__u32 _pad1;
};

/* Sent after sched_process_exec; argv is cut to argv_size bytes on the wire. */
struct guard_exec_event {
	struct guard_event_header hdr;
	__u32 flags;      /* enum guard_exec_flags */
	__u16 exe_size;   /* bytes of exe used, NUL excluded */
	__u16 argv_size;  /* bytes of argv used */
	char filename[GUARD_PATH_MAX]; /* the path handed to execve */
	char exe[GUARD_PATH_MAX];      /* the file really executed (symlinks resolved) */
	char argv[GUARD_ARGV_MAX];     /* NUL-separated arguments */
};

struct guard_connect_event {
	struct guard_event_header hdr;
	__u8 family;  /* 4 or 6: the family the address was judged as */
	__u8 proto;   /* enum guard_proto */
	__u8 hook;    /* enum guard_hook */
	__u8 _pad0;
	__u16 port;   /* host byte order */
	__u16 _pad1;
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

struct guard_socket_event {
	struct guard_event_header hdr;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 _pad0;
};

/* A cgroup v2 directory appeared or went; hdr.cgroup_id is that cgroup's id. */
struct guard_cgroup_event {
	struct guard_event_header hdr;
	__u32 op;     /* enum guard_cgroup_op */
	__u32 level;  /* 0 is the root cgroup */
	char path[GUARD_PATH_MAX]; /* below the cgroup2 mount, "/a/b" */
};

/* eg_guarded value: which policy slot a guarded cgroup is judged by. */
struct guard_cgroup_info {
	__u32 policy_slot;
	__u32 flags;
};

/*
 * eg_slots value: the policy generation in force for a slot. Every cgroup of
 * a slot switches to a new generation with one update of this entry, so the
 * kernel sees the whole old policy or the whole new one, never a mix.
 */
struct guard_slot {
	__u32 policy_id;             /* generation in force; 0: none (fail closed) */
	__u32 fail_closed_policy_id; /* used while the agent's heartbeat is stale; 0: off */
};

/* eg_policies value: the parts of a policy that are not rules. */
struct guard_policy_config {
	__u8 default_action;  /* enum guard_action for egress no rule matches */
	__u8 deny_raw_sockets;
	__u8 _pad0[2];
	__u32 _pad1;
};

/* eg_config value (single entry): host-wide knobs. */
struct guard_config {
	__u32 guarded_levels;       /* bit n set: some guarded cgroup sits at level n */
	__u32 heartbeat_timeout_ms; /* fail-closed after this long without a heartbeat; 0: never */
	__u64 heartbeat_ns;         /* CLOCK_BOOTTIME of the agent's last heartbeat */
	__u32 flags;                /* enum guard_config_flags */
	__u32 _pad0;
};

/*
 * LPM keys. prefixlen counts the 32 bits of policy_id too, so one trie holds
 * every policy generation and a lookup never crosses into another one.
 */
struct guard_lpm4_key {
	__u32 prefixlen;
	__u32 policy_id; /* always matched whole, so its byte order never matters */
	__u8 addr[4];
};

struct guard_lpm6_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 addr[16];
};

/* LPM value: the rules for this prefix, in precedence order, in eg_port_rules. */
struct guard_rule_span {
	__u32 first;
	__u32 count;
};

struct guard_port_rule {
	__u16 port_lo; /* inclusive, host byte order */
	__u16 port_hi;
	__u8 proto;    /* enum guard_proto */
	__u8 action;   /* enum guard_action */
	__u16 rule_id;
};

struct guard_exec_key {
	__u32 policy_id;
	__u32 match; /* enum guard_exec_match */
	char str[GUARD_PATH_MAX]; /* NUL-padded */
};

struct guard_exec_verdict {
	__u8 action; /* GUARD_ACTION_LOG or GUARD_ACTION_KILL */
	__u8 _pad0;
	__u16 rule_id;
};

/* eg_sendmsg_seen key: one event per (socket, destination, verdict). */
struct guard_sendmsg_key {
	__u64 cookie;
	__u8 addr[16];
	__u16 port;
	__u8 action;
	__u8 _pad0[5];
};

#endif /* GUARD_ABI_H */
