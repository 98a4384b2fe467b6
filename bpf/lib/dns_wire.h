/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * dns_wire.h: a DNS message as dns.bpf.c (its only includer) reads it: the
 * packet it comes in (UDP, or TCP after a 2-byte length), the per-CPU
 * scratch it is copied into, its question's name read as text and matched
 * against the policy's names (eg_dns_names), and the keys under which
 * dns.bpf.c remembers a question (eg_dns_fold, eg_dns_allowed).
 */
#ifndef GUARD_LIB_DNS_WIRE_H
#define GUARD_LIB_DNS_WIRE_H

#include "common.h"
#include "config.h"
#include "events.h"
#include "packet.h"

#define LOOPBACK_IFINDEX 1 /* lo is ifindex 1 in every network namespace */
#define DNS_HEADER 12
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define NAME_LABELS_MAX 128
/*
 * Offsets and counts the bpf_loop callbacks carry from step to step are
 * masked to a range they never leave anyway (a message is at most 512
 * bytes): the verifier then sees the same range at every step and its walk
 * of a callback ends.
 */
#define WALK_MASK 4095 /* message offsets (PARSE_MAX 2048) */
#define NAME_MASK 511  /* name lengths and positions (GUARD_DNS_NAME_MAX 256) */

/* (policy id, kind, name) -> name id and what a query for it gets */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_name_key);
	__type(value, struct guard_name_value);
} eg_dns_names SEC(".maps");

/* Bytes of a message read for its records (the event carries the first
 * GUARD_DNS_MSG_MAX): a TCP answer of 40 addresses is 668 bytes. */
#define PARSE_MAX 2048


/*
 * An answer's fold key: the workload, its network namespace and the
 * question (its type, and its name as the message spells it: length bytes,
 * letter case and all, at most FOLD_NAME_MAX + 2 bytes). An answer that
 * taught the kernel nothing new (every address already learned for this
 * name) and repeats one sent within the fold window is counted, not sent: a
 * getaddrinfo loop costs an event a window, and the agent's names stay as
 * fresh as the window (lib/fold.h). A longer name is never folded (every
 * answer for it is sent): the key, which the map hashes whole on every
 * answer, stays about a quarter of a name's 256 bytes.
 *
 * The entry also keeps what match_name found for that question under the
 * policy generation then in force: the next answer to the same bytes under
 * the same generation skips reading and matching the name again (the
 * same bytes under the same names give the same match).
 */
#define FOLD_NAME_MAX 64
#define FOLD_WIRE_MAX (FOLD_NAME_MAX + 2) /* the text's length bytes: one more, and the root's 0 */

struct answer_fold_key {
	__u64 cgroup_id;
	__u64 netns;
	__u16 qtype;
	__u8 _pad[6];
	__u8 name[FOLD_WIRE_MAX + 6]; /* zero past the name */
};

struct answer_fold {
	__u64 start_ns;  /* the window's start: when such an answer was last sent */
	__u64 name_id;   /* match_name's answer for this question under policy_id */
	__u32 policy_id;
	__u32 _pad;
};


/*
 * A query a policy generation allowed, by its bytes past the id (the
 * header's flags and counts, the question, any EDNS record: all a verdict
 * reads), at most QUERY_BYTES of them: the same bytes under the same
 * generation are allowed again without reading the name (a getaddrinfo
 * loop asks the same question with a new id each time). Refused and logged
 * queries are judged every time: each is an event.
 */
#define QUERY_BYTES 128

struct query_key {
	__u32 policy_id;
	__u16 len;
	__u16 _pad;
	__u8 bytes[QUERY_BYTES]; /* zero past len */
};


struct dns_scratch {
	struct guard_dns_event ev;
	struct guard_name_key key;
	struct answer_fold_key fold;
	struct answer_fold folded;  /* the fold entry found for this answer, or zeros */
	struct query_key query;
	__u64 name_id;   /* the answer's question's, from answer_question */
	__u64 keyed;     /* the answer's question has a fold key (answer_fold_entry) */
	__u64 fresh;     /* the answer taught something new: an address, or a name on one */
	__u8 msg[PARSE_MAX];
};

/* 0 -> per-CPU scratch: the event and the name key are too large for the stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_scratch);
} eg_dns_scratch SEC(".maps");

struct dns_packet {
	__u32 msg_off;     /* where the DNS message starts in the skb */
	__u32 msg_size;    /* bytes of it in this packet */
	__u32 stream_off;  /* TCP: where the first message's 2-byte length starts */
	__u32 _pad;
	__u16 remote_port; /* host byte order */
	__u8 family;
	__u8 proto;
	__u32 remote_addr[4];
	__u8 urgent;       /* TCP URG (packet.h) */
	__u8 _pad1[3];
};

/* A port some policy's resolvers use (0xffff: more than fit, any port). */
static __always_inline int resolver_port(const struct guard_config *config, __u16 port)
{
	int found = 0;

	for (int i = 0; i < GUARD_DNS_PORTS; i++)
		if (config->dns_ports[i] == 0xffff ||
		    (config->dns_ports[i] && config->dns_ports[i] == port))
			found = 1;
	return found;
}

/*
 * A segment of a TCP socket whose far end is no resolver port: not DNS,
 * known without reading the packet (every segment of a TCP socket goes to
 * or comes from its far end's port, skb->remote_port). A UDP datagram is
 * always read: sendto() sends a connected socket's datagram anywhere.
 */
__noinline int other_tcp(struct __sk_buff *skb)
{
	struct guard_config *config;
	struct bpf_sock *sk;
	__u32 zero = 0;

	if (!skb)
		return 0;
	sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!sk || !config || sk->protocol != IPPROTO_TCP)
		return 0;
	return !resolver_port(config, bpf_ntohl(skb->remote_port));
}

/*
 * A UDP datagram or a TCP segment with payload to or from a port of a
 * resolver, the packet read by lib/packet.h (IPv6 extension headers
 * included). A datagram is its message (msg_off, msg_size); a segment's
 * messages, each after its 2-byte length from stream_off on, are walked by
 * the caller (guard_dns_query, guard_dns_answer). 0: not one.
 */
static __always_inline int parse_dns_packet(struct __sk_buff *skb, struct dns_packet *dns,
					    int egress, const struct guard_config *config)
{
	struct packet pkt = {};

	if (!parse_packet(skb, &pkt, egress) || !resolver_port(config, pkt.remote_port))
		return 0;
	if (pkt.proto == GUARD_PROTO_TCP && pkt.payload_size == 0)
		return 0; /* no payload: handshakes and acks */
	dns->family = pkt.family;
	dns->proto = pkt.proto;
	dns->urgent = pkt.urgent;
	dns->remote_port = pkt.remote_port;
	__builtin_memcpy(dns->remote_addr, pkt.remote_addr, 16);
	dns->stream_off = pkt.payload_off;
	dns->msg_off = pkt.payload_off;
	dns->msg_size = pkt.payload_size;
	return 1;
}

/* The message into the scratch; its size as read, 0 if none. The event
 * gets its copy only when it is sent (emit). */
static __always_inline __u32 load_message(struct __sk_buff *skb, const struct dns_packet *pkt,
					  struct dns_scratch *s)
{
	__u32 size = pkt->msg_size;

	if (size < DNS_HEADER)
		return 0;
	if (size > PARSE_MAX)
		size = PARSE_MAX;
	size -= 1;
	barrier_var(size);
	size &= PARSE_MAX - 1;
	size += 1;
	if (bpf_skb_load_bytes(skb, pkt->msg_off, s->msg, size))
		return 0;
	return size;
}

static __always_inline __u8 msg_byte(const struct dns_scratch *s, __u32 off)
{
	return s->msg[off & (PARSE_MAX - 1)];
}

static __always_inline __u16 msg_u16(const struct dns_scratch *s, __u32 off)
{
	return (__u16)msg_byte(s, off) << 8 | msg_byte(s, off + 1);
}

/*
 * The bpf_loop contexts of the name walks: the verifier checks a callback
 * until its states repeat, where it would walk a plain loop of 256 steps
 * state by state. Positions come from the step index, never from a counter
 * carried from step to step, so the states repeat at once.
 *
 * A question's name in the message, "\3www\6google\3com\0", is its text
 * "www.google.com" shifted by one: text[j] is message[12 + 1 + j], with the
 * length bytes after the first read as dots; the text is 2 bytes shorter.
 */
struct name_walk {
	__u32 size;      /* bytes of message */
	__u32 remaining; /* bytes left in the current label */
	__u32 end;       /* offset past the name's final 0 */
	__u32 start;     /* where the text begins in key.name */
	__u32 bad;
	__u32 at;        /* measure_step: the next label's length byte */
};

/* One label of the question's name: a step a label, not a byte. */
static long measure_step(__u64 i, void *data)
{
	struct name_walk *w = data;
	struct dns_scratch *s;
	__u32 zero = 0, off = w->at & WALK_MASK;
	__u8 c;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || off >= w->size || off >= DNS_HEADER + GUARD_DNS_NAME_MAX) {
		w->bad = 1;
		return 1;
	}
	c = msg_byte(s, off);
	if (c == 0) {
		w->end = off + 1;
		return 1;
	}
	if (c > 63) {
		w->bad = 1;
		return 1;
	}
	w->at = off + c + 1;
	return 0;
}

static long copy_step(__u64 i, void *data)
{
	struct name_walk *w = data;
	struct dns_scratch *s;
	__u32 zero = 0, j = (__u32)i & NAME_MASK, off = DNS_HEADER + 1 + j;
	__u8 c;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || off + 1 >= w->end)
		return 1;
	c = msg_byte(s, off);
	if (!w->remaining) {
		/* a length byte: the first was skipped (j starts after it) */
		w->remaining = c & 63;
		s->key.name[(w->start + j) & (GUARD_DNS_NAME_MAX - 1)] = '.';
		return 0;
	}
	w->remaining = (w->remaining - 1) & 63;
	if (c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
		w->bad = 1;
		return 1;
	}
	s->key.name[(w->start + j) & (GUARD_DNS_NAME_MAX - 1)] = c;
	return 0;
}

/*
 * Where the question's name ends (the offset past its final 0), by its
 * labels alone; 0: no name that ends inside the message (compression in a
 * question) or one too long.
 */
static __always_inline __u32 question_end(__u32 size)
{
	struct name_walk w = { .size = size, .at = DNS_HEADER };

	bpf_loop(NAME_LABELS_MAX, measure_step, &w, 0);
	if (w.bad || w.end < DNS_HEADER + 3 || w.end - DNS_HEADER - 2 >= GUARD_DNS_NAME_MAX)
		return 0;
	return w.end;
}

/*
 * The question's name (ending at end, from question_end), as text, into
 * key.name (lower case, right-aligned). Returns its length; 0: a label
 * with a byte no host name has.
 */
static __always_inline __u32 read_question(struct dns_scratch *s, __u32 end)
{
	struct name_walk w = { .end = end };
	__u32 len = end - DNS_HEADER - 2;

	__builtin_memset(s->key.name, 0, GUARD_DNS_NAME_MAX);
	w.start = GUARD_DNS_NAME_MAX - len;
	w.remaining = msg_byte(s, DNS_HEADER) & 63;
	asm volatile("" ::: "memory");
	bpf_loop(GUARD_DNS_NAME_MAX, copy_step, &w, 0);
	return w.bad ? 0 : len;
}

struct parent_walk {
	__u32 policy_id;
	__u32 start;     /* where the name begins in key.name */
	struct guard_name_value *found;
};

/* Blank one character of key.name; at a dot, look up what is left as "*." */
static long parent_step(__u64 i, void *data)
{
	struct parent_walk *w = data;
	struct dns_scratch *s;
	__u32 zero = 0, pos = w->start + (__u32)i;
	char c;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || pos >= GUARD_DNS_NAME_MAX)
		return 1;
	c = s->key.name[pos & (GUARD_DNS_NAME_MAX - 1)];
	s->key.name[pos & (GUARD_DNS_NAME_MAX - 1)] = 0;
	if (c != '.')
		return 0;
	w->found = bpf_map_lookup_elem(&eg_dns_names, &s->key);
	return w->found ? 1 : 0;
}

/* The policy's entry for the name in key.name: the name, else its nearest
 * "*." parent. Overwrites key.name. */
static __always_inline struct guard_name_value *match_name(struct dns_scratch *s,
							   __u32 policy_id, __u32 len)
{
	struct guard_name_key *key = &s->key;
	struct parent_walk w = { .policy_id = policy_id };
	struct guard_name_value *value;

	key->policy_id = policy_id;
	key->kind = GUARD_NAME_EXACT;
	key->_pad0[0] = key->_pad0[1] = key->_pad0[2] = 0;
	value = bpf_map_lookup_elem(&eg_dns_names, key);
	if (value)
		return value;
	key->kind = GUARD_NAME_BELOW;
	w.start = GUARD_DNS_NAME_MAX - len;
	bpf_loop(GUARD_DNS_NAME_MAX, parent_step, &w, 0);
	return w.found;
}


#endif /* GUARD_LIB_DNS_WIRE_H */
