/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * guard_abi.h: every struct, enum and limit that crosses the kernel/user
 * boundary. Python mirrors this file in guard/kernel/abi.py and tests/unit/test_abi.py
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
/* Bytes of a flow's payload carried in a sample event and scanned for hold anchors. */
#define GUARD_SAMPLE_MAX 512
/* Bytes of argv scanned for hold anchors (reverse-shell one-liners are short). */
#define GUARD_ARGV_SCAN 512
/* rule_id of a verdict that a detection, not an egress rule, decided. */
#define GUARD_RULE_DETECTION 0xffff
/* Bytes of a DNS message carried in a dns event (a UDP message without EDNS fits). */
#define GUARD_DNS_MSG_MAX 512
/* Bytes of a name key: a DNS name as text, lower case, right-aligned, NUL on the left. */
#define GUARD_DNS_NAME_MAX 256
/* Names one learned address answers to at once (CDNs share addresses). */
#define GUARD_DNS_NAMES_PER_ADDR 4
/* Learned addresses per guarded cgroup (and network namespace). */
#define GUARD_DNS_LEARNED_MAX 16384
/* Answer records read per DNS message; the rest are not learned. */
#define GUARD_DNS_ANSWERS_MAX 64
/* Distinct resolver ports per policy (guarded processes may not bind them). */
#define GUARD_DNS_PORTS 4
/* Fair shedding (events.h): while the ring is at least half full a workload
 * (leaf cgroup) gets 1/GUARD_FAIR_SHARE of the ring's bytes per
 * GUARD_FAIR_WINDOW_MS (eight noisy workloads at their share fill the other half) */
#define GUARD_FAIR_SHARE 16
#define GUARD_FAIR_WINDOW_MS 100
/* workloads whose shed and lost records are counted (eg_workload_loss, LRU) */
#define GUARD_WORKLOAD_LOSS_MAX 4096

enum guard_event_kind {
	GUARD_EVENT_EXEC = 1,
	GUARD_EVENT_CONNECT = 2,
	GUARD_EVENT_SOCKET = 3,
	GUARD_EVENT_CGROUP = 4,
	GUARD_EVENT_PAYLOAD = 5,      /* first bytes of a flow, for the classifiers */
	GUARD_EVENT_STDIO_SOCKET = 6, /* an inet socket dup'ed onto fd 0, 1 or 2 */
	GUARD_EVENT_DNS = 7,          /* a DNS query or answer of a policy that allows by name */
	GUARD_EVENT_ESCAPE = 8,       /* a guarded process moved out of its guarded cgroup */
};

enum guard_cgroup_op {
	GUARD_CGROUP_MKDIR = 1,
	GUARD_CGROUP_RMDIR = 2,
};

enum guard_config_flags {
	GUARD_CONFIG_WATCH_CGROUPS = 1, /* report cgroup v2 mkdir/rmdir (container discovery) */
	GUARD_CONFIG_PROC_VERDICTS = 2, /* eg_proc_verdicts has had an entry: connects and forks
					 * look theirs up (set before the first is written) */
};

/* guard_policy_config.egress_families: which families a policy has egress rules for */
enum guard_egress_families {
	GUARD_EGRESS_IPV4 = 1,
	GUARD_EGRESS_IPV6 = 2,
};

enum guard_action {
	GUARD_ACTION_ALLOW = 0,
	GUARD_ACTION_LOG = 1,
	GUARD_ACTION_BLOCK = 2,
	GUARD_ACTION_KILL = 3,
	/*
	 * Audit mode (spec.mode: audit): let through and reported; the rest of
	 * the value says what enforce mode would have done. The low two bits
	 * are LOG (the verdict counters count them as log), and they rank above
	 * LOG in the same order as BLOCK and KILL, so precedence holds.
	 */
	GUARD_ACTION_WOULD_BLOCK = 5,
	GUARD_ACTION_WOULD_KILL = 9,
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
	GUARD_HOOK_BIND4 = 5,    /* bind() to a resolver's port, refused under names */
	GUARD_HOOK_BIND6 = 6,
};

/* Index into the per-CPU counter array eg_counters. */
enum guard_counter {
	GUARD_CTR_EVENTS_SENT = 0,
	GUARD_CTR_EVENTS_LOST = 1,
	GUARD_CTR_VERDICT_ALLOW = 2,
	GUARD_CTR_VERDICT_LOG = 3,
	GUARD_CTR_VERDICT_BLOCK = 4,
	GUARD_CTR_VERDICT_KILL = 5,
	GUARD_CTR_FLOWS_SAMPLED = 6,  /* first payloads sent to userspace */
	GUARD_CTR_FLOWS_HELD = 7,     /* ... of which held back until a verdict */
	GUARD_CTR_HOLD_TIMEOUTS = 8,  /* held flows or processes let go without a verdict */
	GUARD_CTR_FLOW_DROPS = 9,     /* packets dropped: held or blocked flows */
	GUARD_CTR_DNS_LEARNED = 10,   /* addresses learned from trusted answers */
	GUARD_CTR_DNS_REFUSED = 11,   /* queries refused at the send */
	GUARD_CTR_DNS_UNTRUSTED = 12, /* answers not believed (source, path or parse) */
	GUARD_CTR_EVENTS_SHED = 13,   /* records a workload over its fair share did not get in */
	GUARD_CTR_DNS_FOLDED = 14,    /* answers that taught nothing new, repeated within the fold window */
	GUARD_CTR_UDP_FOLDED = 15,    /* DNS datagrams not sampled: the same bytes within the window */
	GUARD_CTR_MAX = 16,
};

enum guard_exec_match {
	GUARD_EXEC_MATCH_NAME = 1, /* basename of the executable */
	GUARD_EXEC_MATCH_PATH = 2, /* absolute path of the executable */
};

enum guard_exec_flags {
	GUARD_EXEC_ARGV_TRUNCATED = 1,
	GUARD_EXEC_EXE_TRUNCATED = 2,
	GUARD_EXEC_HELD = 4, /* stopped (SIGSTOP) until userspace judged the argv */
};

/* guard_exec_verdict.flags: programs stopped at exec until userspace has judged them. */
enum guard_exec_hold {
	GUARD_HOLD_ALWAYS = 1,    /* e.g. ssh, tunnel tools, netcat */
	GUARD_HOLD_IF_ANCHOR = 2, /* e.g. shells: only when argv holds an argv anchor */
};

/* What a policy asks the kernel to watch (guard_policy_config.detect_flags). */
enum guard_detect_flags {
	GUARD_DETECT_PAYLOAD = 1,      /* sample the first payload of TCP flows, new UDP destinations */
	GUARD_DETECT_HOLD = 2,         /* hold back first payloads that carry a payload anchor */
	GUARD_DETECT_DNS = 4,          /* sample DNS answers (queries come with PAYLOAD) */
	GUARD_DETECT_STDIO_SOCKET = 8, /* report inet sockets dup'ed onto fd 0-2 */
	GUARD_DETECT_HOLD_TUNNEL = 16, /* hold a tunnel's open, and the sandbox's first payload
					* on a flow whose server spoke first (tunnelTool enforcing) */
};

/* eg_anchors value bits: where a 4-byte anchor counts. */
enum guard_anchor_kind {
	GUARD_ANCHOR_PAYLOAD = 1, /* in a first payload: hold it until a verdict */
	GUARD_ANCHOR_ARGV = 2,    /* in argv of a GUARD_HOLD_IF_ANCHOR program: stop it */
	GUARD_ANCHOR_ARGV_PAIR = 4, /* 2 bytes (key: the window with its first two bytes 0),
				     * in argv as ARGV: a shell quote that cuts words apart */
};

/* guard_payload_event.sample_kind */
enum guard_sample_kind {
	GUARD_SAMPLE_FIRST = 1,      /* first application payload of a TCP flow */
	GUARD_SAMPLE_PROXY = 2,      /* a SOCKS4/5 request or HTTP CONNECT before it */
	GUARD_SAMPLE_UDP = 3,        /* first datagram to a new UDP destination */
	GUARD_SAMPLE_DNS_ANSWER = 4, /* a datagram from port 53 */
	GUARD_SAMPLE_INBOUND = 5,    /* the server's first reply on a flow that was let through */
	GUARD_SAMPLE_SERVER_FIRST = 6, /* the server's first bytes on a flow the sandbox opened and
					* has sent nothing on yet */
};

enum guard_payload_flags {
	GUARD_PAYLOAD_HELD = 1,      /* dropped until userspace answers in eg_flow_verdicts */
	GUARD_PAYLOAD_TRUNCATED = 2, /* the payload was longer than the sample */
	GUARD_PAYLOAD_SOCKS5 = 4,    /* the flow began with a SOCKS5 handshake */
	GUARD_PAYLOAD_HTTP_CONNECT = 8, /* the flow began with an HTTP CONNECT */
	GUARD_PAYLOAD_SOCKS4 = 16,   /* the flow began with a SOCKS4 or SOCKS4a request */
	GUARD_PAYLOAD_NAMED = 32,    /* to an address learned from a name: held until the
				      * payload's own host name (SNI, Host) is judged */
	GUARD_PAYLOAD_WEBSOCKET = 64, /* the sample is the message in a WebSocket's first
				       * frames (unmasked), after an upgrade */
	GUARD_PAYLOAD_UNJUDGED = 128, /* refused unjudged, guard_payload_event.unjudged says why */
};

/* guard_payload_event.unjudged: why a first payload was refused unjudged. */
enum guard_unjudged {
	GUARD_UNJUDGED_WS_FILLER = 1, /* more WebSocket frames of filler than the kernel reads
				       * came before any message */
	GUARD_UNJUDGED_URGENT = 2,    /* urgent data (MSG_OOB): the server does not read the
				       * urgent byte in the stream the kernel sees */
};

/* guard_policy_config.names: how the policy allows by name. */
enum guard_policy_names {
	GUARD_NAMES_ON = 1, /* host targets: learn answers, filter queries, judge learned addresses */
};

/* guard_dns_event.direction */
enum guard_dns_direction {
	GUARD_DNS_QUERY = 1,
	GUARD_DNS_ANSWER = 2,
};

/* guard_dns_event.flags */
enum guard_dns_flags {
	GUARD_DNS_LEARNED = 1,    /* addresses of this answer were learned */
	GUARD_DNS_UNTRUSTED = 2,  /* from a source the policy does not trust as its resolver */
	GUARD_DNS_LOOPED = 4,     /* a non-loopback resolver's address, arrived over loopback */
	GUARD_DNS_UNPARSED = 8,   /* not a one-question DNS message the kernel could read */
	GUARD_DNS_NO_RULE = 16,   /* the name matches no name rule */
	GUARD_DNS_FULL = 32,      /* the learned-address table had no room for some address */
	GUARD_DNS_CUT = 64,       /* the message was longer than the event carries */
	GUARD_DNS_NO_TABLE = 128, /* the guarded cgroup has no learned-address table */
};

/* guard_name_key.kind */
enum guard_name_kind {
	GUARD_NAME_EXACT = 1, /* the name itself */
	GUARD_NAME_BELOW = 2, /* any name strictly below it ("*.name") */
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
	__u64 start_ns;  /* start time (CLOCK_BOOTTIME) of the thread group: pid + start_ns name one process */
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
	__u32 repeats;   /* connects folded into a window no agent flushed (lib/fold.h); 0 */
	__u32 _pad2;
	__u64 fold_ns;   /* CLOCK_BOOTTIME start of the fold window this connect opened; 0: none */
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

/*
 * A sample of a flow's payload. hdr.pid is the task that was running when the
 * packet left (the sender, for a first payload). Userspace answers every
 * sample of a TCP flow with an eg_flow_verdicts entry for cookie.
 */
struct guard_payload_event {
	struct guard_event_header hdr;
	__u64 cookie;        /* socket cookie */
	__u8 family;         /* 4 or 6 */
	__u8 proto;          /* enum guard_proto */
	__u8 sample_kind;    /* enum guard_sample_kind */
	__u8 flags;          /* enum guard_payload_flags */
	__u16 port;          /* remote port, host byte order */
	__u16 sample_size;   /* bytes of sample used */
	__u32 payload_size;  /* bytes of payload in the packet */
	__u32 unjudged;      /* enum guard_unjudged with GUARD_PAYLOAD_UNJUDGED, else 0 */
	__u8 addr[16];       /* remote address; IPv4 in the first 4 bytes */
	__u8 sample[GUARD_SAMPLE_MAX];
};

/* An inet socket became a task's stdin, stdout or stderr (dup2/dup3). */
struct guard_stdio_socket_event {
	struct guard_event_header hdr;
	__u64 cookie;  /* socket cookie, 0 when the kernel never assigned one */
	__u32 oldfd;
	__u32 newfd;   /* 0, 1 or 2 */
	__u8 family;
	__u8 proto;
	__u16 port;    /* remote port, host byte order */
	__u32 _pad0;
	__u8 addr[16];
};

/*
 * A DNS query refused or logged at the send, or an answer received, by a
 * process of a policy that allows by name. hdr.action: for a query what the
 * policy did; for an answer ALLOW when its addresses were learned, else LOG.
 * Userspace reads name, type, records and TTLs from message.
 */
struct guard_dns_event {
	struct guard_event_header hdr;
	__u64 cookie;        /* socket cookie */
	__u64 name_id;       /* the name rule the question matched; 0: none */
	__u64 netns;         /* network namespace cookie of the socket; 0: unknown */
	__u8 family;         /* 4 or 6: the resolver's */
	__u8 proto;          /* enum guard_proto */
	__u8 direction;      /* enum guard_dns_direction */
	__u8 flags;          /* enum guard_dns_flags */
	__u16 port;          /* resolver port, host byte order */
	__u16 message_size;  /* bytes of message used */
	__u32 ttl;           /* answer: seconds the learned addresses got (clamped) */
	__u16 learned;       /* answer: addresses learned */
	__u16 _pad0;
	__u8 addr[16];       /* resolver address; IPv4 in the first 4 bytes */
	__u8 message[GUARD_DNS_MSG_MAX]; /* the DNS message (TCP: after the length) */
};

/* eg_flow_verdicts value: userspace's answer to a flow's sample. */
struct guard_flow_verdict {
	__u8 action;  /* ALLOW: stop watching the flow; BLOCK: drop all of it */
	__u8 _pad0[7];
};

/* eg_proc_verdicts value: a process judged by its exec (tgid key). */
struct guard_proc_verdict {
	__u64 start_ns; /* task start time (boottime), so a reused pid does not match */
	__u8 action;    /* BLOCK: its connects and sendmsgs fail with EPERM */
	__u8 _pad0[7];
};

/*
 * eg_guarded entry kinds (guard_cgroup_info.flags). A container parent
 * (run --container-parent) is where a runtime makes its containers'
 * cgroups: sentinel.bpf.c is attached there, and it judges only the cgroups
 * whose deepest entry is the parent's (a container no agent has taken over
 * yet, also while no agent runs); the per-cgroup sock_addr programs leave
 * those to it. An exempt cgroup is one below a parent that is not guarded:
 * the agent's own, or a container no policy selects. Lookups treat it as no
 * entry at all, and it ends the walk up (guarded.h).
 */
enum guard_cgroup_flags {
	GUARD_CG_PARENT = 1,
	GUARD_CG_EXEMPT = 2,
};

/* eg_guarded value: which policy slot a guarded cgroup is judged by. */
struct guard_cgroup_info {
	__u32 policy_slot;
	__u32 flags;    /* enum guard_cgroup_flags */
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
	__u8 stdio_socket_action; /* KILL: the kernel kills at the dup itself */
	__u8 names;           /* enum guard_policy_names */
	__u32 detect_flags;   /* enum guard_detect_flags */
	__u32 dns_ttl_min;    /* learned addresses live at least this long, seconds */
	__u32 dns_ttl_max;    /* ... and at most this long */
	__u16 dns_ports[GUARD_DNS_PORTS]; /* resolver ports (0: unused): no guarded bind() */
	__u16 resolver_rule_id; /* the rule_id connects to a trusted resolver get */
	__u8 audit;           /* 1: spec.mode audit: what no table decides (raw sockets,
			       * resolver-port binds, named first payloads) is reported,
			       * never refused or held */
	__u8 egress_families; /* enum guard_egress_families: the others skip the rule lookups */
};

/* eg_config value (single entry): host-wide knobs. */
struct guard_config {
	__u32 guarded_levels;       /* bit n set: some guarded cgroup sits at level n */
	__u32 heartbeat_timeout_ms; /* fail-closed after this long without a heartbeat; 0: never */
	__u64 heartbeat_ns;         /* CLOCK_BOOTTIME of the agent's last heartbeat */
	__u32 flags;                /* enum guard_config_flags */
	__u32 hold_timeout_ms;      /* held flows and processes go on after this; 0: hold nothing */
	__u16 dns_ports[GUARD_DNS_PORTS]; /* every policy's resolver ports; all 0: no names anywhere */
	__u32 fold_window_ms;       /* logged connects repeated within it are counted, not sent
				     * (lib/fold.h); 0: every connect is an event */
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

/*
 * eg_host4 key: an IPv4 host (a /32) of one policy generation. Hosts are most
 * of a large policy's prefixes, and a hash map takes them in half the time an
 * LPM trie does; a /32 is the longest prefix there is, so a hit here is what
 * the trie would have answered.
 */
struct guard_host4_key {
	__u32 policy_id;
	__u8 addr[4];
};

/* eg_host4, eg_cidr4 and eg_cidr6 value: the rules for this prefix, in
 * precedence order, in eg_port_rules. */
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
	__u8 flags;  /* enum guard_exec_hold */
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

/*
 * eg_connect_fold key: one process's logged connects to one destination under
 * one verdict (lib/fold.h). Built from the connect event that opened the
 * window, so userspace can find the entry: hdr.cgroup_id, hdr.pid,
 * hdr.policy_id, addr, port, family, proto, hook, hdr.action, hdr.rule_id.
 */
struct guard_fold_key {
	__u64 cgroup_id; /* the cgroup the events report (hdr.cgroup_id) */
	__u32 tgid;
	__u32 policy_id;
	__u8 addr[16];   /* IPv4 in the first 4 bytes, the rest 0 */
	__u16 port;      /* host byte order */
	__u8 family;     /* 4 or 6 */
	__u8 proto;      /* enum guard_proto */
	__u8 hook;       /* enum guard_hook: connect4 or connect6 */
	__u8 action;     /* enum guard_action: LOG */
	__u16 rule_id;
};

/* eg_connect_fold value: a fold window and the connects counted in it. */
struct guard_fold {
	__u64 start_ns;  /* CLOCK_BOOTTIME of the connect that opened it (and was sent) */
	__u32 count;     /* connects after that one, counted instead of sent */
	__u32 _pad0;
};

/* eg_dns_names key: a name of a policy's host targets. */
struct guard_name_key {
	__u32 policy_id;
	__u8 kind;       /* enum guard_name_kind */
	__u8 _pad0[3];
	char name[GUARD_DNS_NAME_MAX]; /* lower case, right-aligned, NUL-padded on the left */
};

/* eg_dns_names value */
struct guard_name_value {
	__u64 name_id;   /* stable across generations: a learned address keeps it */
	__u8 query_action; /* what a query for this name gets (enum guard_action) */
	__u8 _pad0[7];
};

/* eg_dns_rules key: the port rules of a name (value: struct guard_rule_span). */
struct guard_name_rules_key {
	__u32 policy_id;
	__u32 _pad0;
	__u64 name_id;
};

/* Key of a guarded cgroup's learned-address table (inner map of eg_dns_learned). */
struct guard_learned_key {
	__u64 netns;     /* network namespace cookie the answer arrived in */
	__u8 addr[16];   /* IPv4 in the first 4 bytes */
	__u8 family;     /* 4 or 6 */
	__u8 _pad0[7];
};

struct guard_learned_name {
	__u64 name_id;
	__u64 expires_ns; /* CLOCK_BOOTTIME */
};

struct guard_learned {
	struct guard_learned_name names[GUARD_DNS_NAMES_PER_ADDR];
};

/* guard_escape_event.how: the way a guarded process left its guarded cgroup. */
enum guard_escape_how {
	GUARD_ESCAPE_PROCS = 1,   /* its pid written into another cgroup's cgroup.procs */
	GUARD_ESCAPE_THREADS = 2, /* one of its threads written into another cgroup.threads */
	GUARD_ESCAPE_CLONE = 3,   /* a child cloned into another cgroup (clone3 CLONE_INTO_CGROUP) */
};

/* guard_escape_event.flags */
enum guard_escape_flags {
	GUARD_ESCAPE_DST_GUARDED = 1, /* the destination is guarded, by another policy slot */
	GUARD_ESCAPE_UNSIGNALLED = 2, /* the kernel could not signal it: userspace kills it */
};

/*
 * A guarded process (hdr.pid, hdr.comm, hdr.start_ns) was moved out of its
 * guarded cgroup (hdr.cgroup_id: the guarded cgroup it belonged to) into a
 * cgroup neither inside it nor guarded by the same policy slot. hdr.action:
 * KILL (the kernel sent SIGKILL at the move, before it runs again) or
 * WOULD_KILL (audit mode). The mover is who wrote the pid (or cloned).
 */
struct guard_escape_event {
	struct guard_event_header hdr;
	__u64 dst_cgroup_id; /* where it went (cgroup v2 id) */
	__u32 how;           /* enum guard_escape_how */
	__u32 flags;         /* enum guard_escape_flags */
	__u32 tid;           /* the thread moved (THREADS), the child (CLONE), else hdr.pid */
	__u32 mover_pid;     /* thread-group id of the writer (or of the cloning parent) */
	char mover_comm[GUARD_COMM_LEN];
	char dst_path[GUARD_PATH_MAX]; /* below the cgroup2 mount, "/a/b"; CLONE: empty */
};

/* eg_workload_loss value: one workload's share of the ring under pressure */
struct guard_workload_loss {
	__u64 window_ns; /* CLOCK_BOOTTIME start of its current window */
	__u32 in_window; /* bytes of records it queued in that window */
	__u32 _pad0;
	__u64 shed;      /* records refused: over its share while the ring was half full */
	__u64 lost;      /* records that found the ring full */
};

#endif /* GUARD_ABI_H */
