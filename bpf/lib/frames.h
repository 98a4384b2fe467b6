/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * frames.h: where a flow's first message really is, for flow.bpf.c (its only
 * includer), so filler and framing do not hide it:
 *
 *   - blank bytes and empty lines before it are no message (a segment that
 *     is nothing else passes, and the next one is the first payload), and the
 *     sample starts after them, however long they are (a segment's first
 *     64 KiB are searched);
 *   - a WebSocket's first frames are unmasked, control frames skipped, and
 *     the sample is the message they carry;
 *   - a message cut short by its segment (a JSON object not closed, an HTTP
 *     head not ended, a few bytes of either) is told apart from a whole one,
 *     so flow.bpf.c can gather it (the kernel drops the segment; TCP keeps it
 *     unsent and appends the sender's next bytes to it) until it can judge.
 *
 * No maps of its own: flow.bpf.c owns the scratch these work in. Loop
 * positions come from the bpf_loop index and whatever is carried from step to
 * step lives in that scratch map, never on the stack, so the verifier's walk
 * of each callback ends (see dns.bpf.c).
 */
#ifndef GUARD_LIB_FRAMES_H
#define GUARD_LIB_FRAMES_H

#include "common.h"

#define BLANK_CHUNK 64
#define BLANK_CHUNKS 1024   /* 64 KiB: the largest segment loopback sends */
#define WS_FRAMES_MAX 4     /* frames of one segment read (control frames count) */
#define WS_HEADER_MAX 16    /* 2 + 8 (length) + 4 (mask), rounded up to a power of two */
#define ASSEMBLY_MAX (2 * GUARD_SAMPLE_MAX)

enum view_status {
	VIEW_FILLER = 0,  /* nothing but blanks (or control frames): no message yet */
	VIEW_MESSAGE = 1, /* the sample holds the message's first bytes */
	VIEW_CUT = 2,     /* a frame goes on in a later segment */
};

/* What one pass over a sample found (facts_step); lives in the scratch map. */
struct sample_facts {
	__u32 newline;   /* index + 1 of the first '\n' after byte 0; 0: none */
	__u32 closed;    /* index + 1 where the JSON value at byte 0 closes; 0: not in the sample */
	__u32 head_end;  /* index + 1 of the "\r\n\r\n" that ends an HTTP head; 0: none */
	__u32 depth;     /* carried: JSON nesting */
	__u32 window;    /* carried: the last 4 bytes, the newest lowest */
	__u32 lower;     /* carried: the same, letters in lower case */
	__u8 in_string;  /* carried */
	__u8 escaped;    /* carried */
	__u8 websocket;  /* the head says "websocket" (an Upgrade) */
	__u8 waits;      /* the head says "Expect:" or a zero length: no body follows at once */
};

/* The per-CPU scratch of the first-payload view: too large for the stack. */
struct frame_scratch {
	__u8 buf[ASSEMBLY_MAX];      /* unmasked frame payloads, then the sample's source */
	__u32 fr_start[WS_FRAMES_MAX]; /* each data frame's bytes in buf, and its mask key */
	__u32 fr_end[WS_FRAMES_MAX];
	__u32 fr_key[WS_FRAMES_MAX];
	__u32 off;                   /* next frame's offset in the packet */
	__u32 size;                  /* bytes in buf */
	__u32 lead;                  /* blank bytes before the message in buf */
	__u8 status;                 /* enum view_status of the frames read */
	__u8 _pad[3];
	struct sample_facts facts;
};

static __always_inline int is_blank(__u8 c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* -- the first non-blank byte of a packet's payload ------------------------- */

struct blank_walk {
	struct __sk_buff *skb;
	__u32 off;   /* where the payload starts */
	__u32 end;   /* where it ends */
	__u32 found; /* offset of the first non-blank byte; end if none */
};

static long blank_step(__u32 i, struct blank_walk *w)
{
	__u8 chunk[BLANK_CHUNK];
	__u32 at = w->off + i * BLANK_CHUNK, n;

	if (at >= w->end)
		return 1;
	n = w->end - at;
	if (n > BLANK_CHUNK)
		n = BLANK_CHUNK;
	n -= 1;
	barrier_var(n);
	n &= BLANK_CHUNK - 1;
	n += 1;
	/* past the payload's end the chunk stays blank: one test per byte, no length */
	__builtin_memset(chunk, ' ', sizeof(chunk));
	if (bpf_skb_load_bytes(w->skb, at, chunk, n))
		return 1;
#pragma unroll
	for (__u32 j = 0; j < BLANK_CHUNK; j++) {
		if (!is_blank(chunk[j])) {
			w->found = at + j;
			return 1;
		}
	}
	return 0;
}

/* Offset of the first byte of [off, end) that is not blank; end if none. */
static __always_inline __u32 skip_blanks(struct __sk_buff *skb, __u32 off, __u32 end)
{
	struct blank_walk w = { .skb = skb, .off = off, .end = end, .found = end };
	__u8 first;

	if (off >= end || bpf_skb_load_bytes(skb, off, &first, 1))
		return end;
	if (!is_blank(first))
		return off; /* the common case: no loop */
	bpf_loop(BLANK_CHUNKS, blank_step, &w, 0);
	return w.found;
}

/* -- WebSocket frames (RFC 6455 5.2) ---------------------------------------- */

struct ws_walk {
	struct __sk_buff *skb;
	struct frame_scratch *fs;
	__u32 end;
};

/* One frame: its payload (as far as this packet and the sample go) into buf. */
static long ws_frame_step(__u32 i, struct ws_walk *w)
{
	struct frame_scratch *fs = w->fs;
	__u8 h[WS_HEADER_MAX] = {};
	__u32 off = fs->off, n, len, hl = 2, key = 0, data, take, dst, k = i & (WS_FRAMES_MAX - 1);

	if (off >= w->end)
		return 1; /* the frames read so far end with the packet */
	n = w->end - off;
	if (n > WS_HEADER_MAX)
		n = WS_HEADER_MAX;
	n -= 1;
	barrier_var(n);
	n &= WS_HEADER_MAX - 1;
	n += 1;
	if (n < 2 || bpf_skb_load_bytes(w->skb, off, h, n)) {
		fs->status = VIEW_CUT;
		return 1;
	}
	len = h[1] & 0x7f;
	if (len == 126) {
		hl = 4;
		len = (__u32)h[2] << 8 | h[3];
	} else if (len == 127) {
		hl = 10;
		len = (h[2] | h[3] | h[4] | h[5]) ? 0xffffffff :
		      (__u32)h[6] << 24 | (__u32)h[7] << 16 | (__u32)h[8] << 8 | h[9];
	}
	if (h[1] & 0x80) {
		/* a client's frames are masked; the key follows the length */
		if (hl == 2)
			key = h[2] | (__u32)h[3] << 8 | (__u32)h[4] << 16 | (__u32)h[5] << 24;
		else if (hl == 4)
			key = h[4] | (__u32)h[5] << 8 | (__u32)h[6] << 16 | (__u32)h[7] << 24;
		else
			key = h[10] | (__u32)h[11] << 8 | (__u32)h[12] << 16 | (__u32)h[13] << 24;
		hl += 4;
	}
	if (n < hl) {
		fs->status = VIEW_CUT; /* the header itself goes on in the next segment */
		return 1;
	}
	data = off + hl;
	take = w->end - data;
	if (h[0] & 0x08) {
		/* ping, pong, close: no message, the next frame may carry one */
		if (len > take) {
			fs->status = VIEW_CUT;
			return 1;
		}
		fs->off = data + len;
		return 0;
	}
	if (take > len)
		take = len;
	if (fs->size >= GUARD_SAMPLE_MAX) {
		fs->status = VIEW_MESSAGE;
		return 1;
	}
	if (take > GUARD_SAMPLE_MAX - fs->size)
		take = GUARD_SAMPLE_MAX - fs->size;
	if (take) {
		dst = fs->size & (GUARD_SAMPLE_MAX - 1);
		take -= 1;
		barrier_var(take);
		take &= GUARD_SAMPLE_MAX - 1;
		take += 1;
		if (bpf_skb_load_bytes(w->skb, data, fs->buf + dst, take)) {
			fs->status = VIEW_CUT;
			return 1;
		}
		fs->fr_start[k] = dst;
		fs->fr_end[k] = dst + take;
		fs->fr_key[k] = key;
		fs->size = dst + take;
	}
	if (data + len > w->end) {
		/* the frame goes on: whole enough once the sample is full */
		fs->status = fs->size >= GUARD_SAMPLE_MAX ? VIEW_MESSAGE : VIEW_CUT;
		return 1;
	}
	fs->off = data + len;
	if (h[0] & 0x80) {
		fs->status = VIEW_MESSAGE; /* FIN: the message is whole */
		return 1;
	}
	return 0;
}

struct unmask_walk {
	struct frame_scratch *fs;
};

/* buf[i] ^= its frame's key byte; the key turns with the byte's place in its frame. */
static long unmask_step(__u32 i, struct unmask_walk *w)
{
	struct frame_scratch *fs = w->fs;
	__u32 at = i & (GUARD_SAMPLE_MAX - 1), key = 0, j = 0;

	if (i >= fs->size)
		return 1;
	for (int k = 0; k < WS_FRAMES_MAX; k++) {
		if (at >= fs->fr_start[k] && at < fs->fr_end[k]) {
			key = fs->fr_key[k];
			j = at - fs->fr_start[k];
		}
	}
	fs->buf[at] ^= (key >> ((j & 3) * 8)) & 0xff;
	return 0;
}

static long lead_step(__u32 i, struct unmask_walk *w)
{
	struct frame_scratch *fs = w->fs;

	if (i >= fs->size || !is_blank(fs->buf[i & (GUARD_SAMPLE_MAX - 1)]))
		return 1;
	fs->lead = i + 1;
	return 0;
}

/*
 * The message in the WebSocket frames at [off, end) of the packet, unmasked
 * into fs->buf from fs->lead (blanks before it skipped); fs->status says
 * whether there is one.
 */
static __always_inline void ws_message(struct __sk_buff *skb, struct frame_scratch *fs,
				       __u32 off, __u32 end)
{
	struct ws_walk w = { .skb = skb, .fs = fs, .end = end };
	struct unmask_walk u = { .fs = fs };

	for (int k = 0; k < WS_FRAMES_MAX; k++) {
		fs->fr_start[k] = 0;
		fs->fr_end[k] = 0;
		fs->fr_key[k] = 0;
	}
	fs->off = off;
	fs->size = 0;
	fs->lead = 0;
	fs->status = VIEW_CUT; /* more frames than we read, none final: not whole */
	bpf_loop(WS_FRAMES_MAX, ws_frame_step, &w, 0);
	if (!fs->size) {
		if (fs->status == VIEW_MESSAGE || fs->off >= end)
			fs->status = VIEW_FILLER; /* empty or control frames only */
		return;
	}
	bpf_loop(GUARD_SAMPLE_MAX, unmask_step, &u, 0);
	bpf_loop(GUARD_SAMPLE_MAX, lead_step, &u, 0);
	if (fs->lead >= fs->size && fs->status == VIEW_MESSAGE)
		fs->status = VIEW_FILLER; /* a whole message of blanks */
}

/* -- facts about a sample: is the message in it whole? ---------------------- */

struct facts_walk {
	const __u8 *buf;
	struct sample_facts *f;
	__u32 size;
	__u8 json;
};

#define WORD(a, b, c, d) ((__u32)(a) << 24 | (__u32)(b) << 16 | (__u32)(c) << 8 | (d))

static long facts_step(__u32 i, struct facts_walk *w)
{
	struct sample_facts *f = w->f;
	__u32 at = i;
	__u8 c;

	if (i >= w->size)
		return 1;
	barrier_var(at);
	at &= GUARD_SAMPLE_MAX - 1;
	c = w->buf[at];
	if (w->json) {
		if (c == '\n' && i > 0) {
			f->newline = i + 1; /* a line is what a line-based pool reads */
			return 1;
		}
		if (f->escaped) {
			f->escaped = 0;
		} else if (f->in_string) {
			if (c == '\\')
				f->escaped = 1;
			else if (c == '"')
				f->in_string = 0;
		} else if (c == '"') {
			f->in_string = 1;
		} else if (c == '{' || c == '[') {
			f->depth += 1;
		} else if ((c == '}' || c == ']') && f->depth) {
			f->depth -= 1;
			if (!f->depth) {
				f->closed = i + 1;
				return 1;
			}
		}
		return 0;
	}
	f->window = f->window << 8 | c;
	f->lower = f->lower << 8 | (c >= 'A' && c <= 'Z' ? c | 0x20 : c);
	if (f->window == WORD('\r', '\n', '\r', '\n')) {
		f->head_end = i + 1;
		return 1;
	}
	if (f->lower == WORD('e', 'b', 's', 'o'))
		f->websocket = 1;
	if (f->lower == WORD('x', 'p', 'e', 'c') || f->lower == WORD(':', ' ', '0', '\r') ||
	    f->lower == WORD('h', ':', '0', '\r'))
		f->waits = 1;
	return 0;
}

/* One pass over the sample: where its JSON value closes, or its HTTP head ends. */
static __always_inline void sample_facts(const __u8 *buf, __u32 size, struct sample_facts *f,
					 int json)
{
	struct facts_walk w = { .buf = buf, .f = f, .size = size, .json = json };

	__builtin_memset(f, 0, sizeof(*f));
	bpf_loop(GUARD_SAMPLE_MAX, facts_step, &w, 0);
}

/* -- the sample's shape: judge it now, or gather more of it? ---------------- */

/*
 * Stratum V2 SetupConnection in plaintext: extension type 0, message type 0
 * (SetupConnection), a 24-bit length, then protocol 0 (mining) and
 * min_version 2 as a little-endian u16.
 */
static __always_inline int sv2_setup_connection(const struct guard_payload_event *ev)
{
	return ev->sample_size >= 9 && ev->sample[0] == 0 && ev->sample[1] == 0 &&
	       ev->sample[2] == 0 && ev->sample[6] == 0 && ev->sample[7] == 2 &&
	       ev->sample[8] == 0;
}

/* The shapes of the JSON and HTTP mining dialects: a JSON line or a POST. */
static __always_inline int json_or_post(const struct guard_payload_event *ev)
{
	return ev->sample[0] == '{' ||
	       (ev->sample_size >= 4 && ev->sample[0] == 'P' && ev->sample[1] == 'O' &&
		ev->sample[2] == 'S' && ev->sample[3] == 'T');
}

/* Where view_payload looks (off, end, framing) and what it found. */
struct view {
	__u32 off;     /* the packet's bytes [off, end) */
	__u32 end;
	__u32 start;   /* where the message starts in the packet */
	__u8 framing;  /* enum flow_framing */
	__u8 status;   /* enum view_status */
	__u8 skipped;  /* blanks or frame headers came before it */
	__u8 full;     /* the message goes on past what the sample holds */
};

enum sample_shape {
	SHAPE_OTHER = 0,
	SHAPE_PREFIX = 1, /* too few bytes to tell: starts of "POST " or "GET /", SV2 */
	SHAPE_JSON = 2,
	SHAPE_POST = 3,
	SHAPE_GET = 4,
};

static __always_inline int starts_with(const struct guard_payload_event *ev, const char *word,
				       __u32 size)
{
	for (__u32 i = 0; i < 5; i++)
		if (i < size && i < ev->sample_size && ev->sample[i] != word[i])
			return 0;
	return 1;
}

/* The sample's shape, and (fs->facts) whether its JSON value or HTTP head is whole. */
static __always_inline int sample_shape(const struct guard_payload_event *ev,
					struct frame_scratch *fs)
{
	__u32 n = ev->sample_size;

	if (ev->sample[0] == '{') {
		sample_facts(ev->sample, n, &fs->facts, 1);
		return SHAPE_JSON;
	}
	if (ev->sample[0] == 0)
		return n < 9 ? SHAPE_PREFIX : SHAPE_OTHER;
	if (n < 5 && (starts_with(ev, "POST ", 5) || starts_with(ev, "GET /", 5)))
		return SHAPE_PREFIX;
	/* origin form, or absolute form to a proxy ("GET http://...") */
	if (n >= 5 && (starts_with(ev, "POST ", 5) || starts_with(ev, "GET /", 5) ||
		       starts_with(ev, "GET h", 5))) {
		sample_facts(ev->sample, n, &fs->facts, 0);
		return ev->sample[0] == 'P' ? SHAPE_POST : SHAPE_GET;
	}
	return SHAPE_OTHER;
}

/*
 * A message too short to judge: more of it is gathered before it is. A JSON
 * value neither closed nor ended by a newline, an HTTP head not ended (a
 * POST's body not begun, unless it says it waits: Expect, a zero length), a
 * frame that goes on; never once the sample is full.
 */
static __always_inline int unfinished(const struct guard_payload_event *ev, const struct view *v,
				      int shape, const struct sample_facts *f)
{
	__u32 n = ev->sample_size;
	__u8 status = v->status;

	if (n >= GUARD_SAMPLE_MAX || v->full)
		return 0;
	if (status == VIEW_CUT || shape == SHAPE_PREFIX)
		return 1;
	if (shape == SHAPE_JSON)
		return !f->newline && !f->closed;
	if (shape == SHAPE_POST)
		return !f->head_end || (f->head_end >= n && !f->waits);
	if (shape == SHAPE_GET)
		return !f->head_end;
	return 0;
}

#endif /* GUARD_LIB_FRAMES_H */
