/*
 * proto.h - the mstore protocol: binary, length-prefixed, pipelined
 * frames over a unix socket between mstored and its clients (LMTP
 * receiver, Dovecot plugin, tools).  Pure codec: bytes in, structs out,
 * structs in, bytes out; no I/O, no globals, safe on any input (fuzzed by
 * tests/fuzz/fuzz_proto.c).  docs/protocol.md is the reference, with the
 * byte layout of every body in tables; this header is its C form.
 *
 * Frame (all integers little-endian):
 *
 *   0   u32  len     bytes after this field (8 + body); 8 <= len, and
 *                    4 + len <= the receiver's max frame size
 *   4   u16  op      enum ms_op; a reply has MS_OP_REPLY (0x8000) set
 *   6   u16  flags   0 (reserved)
 *   8   u32  id      chosen by the client, echoed in the reply
 *   12  body[len - 8]
 *
 * A client may send many requests without waiting (pipelining); each reply
 * carries its request's op | MS_OP_REPLY and id, and replies may come in
 * any order.  Every reply body starts with an i32 status: 0, followed by
 * the op's reply fields; or a negative MS_E* / -errno code, followed by a
 * str with the reason and nothing else.
 *
 * Body fields: u8/u16/u32/u64 little-endian, i32/i64 two's complement,
 * str = u16 length + bytes (no terminator), blob = u32 length + bytes.
 * A body must be consumed exactly: bytes left over make it invalid.
 *
 * Rules that both sides enforce (decoders with MS_ECORRUPT / MS_ETOOBIG,
 * encoders with -EINVAL / MS_ETOOBIG), so whatever decodes encodes back to
 * the same bytes:
 *   - names: the rule of ms_event_name_valid() (1..max bytes of UTF-8, no
 *     NUL, CR, LF): mailbox names <= MS_EVENT_MBOX_NAME_MAX, user names <=
 *     MS_EVENT_USER_NAME_MAX, keywords <= MS_EVENT_KEYWORD_MAX, counter
 *     keys and the server name <= MS_PROTO_NAME_MAX.  A user field that may
 *     be empty ("the session's user") says so below;
 *   - reasons: 0..MS_PROTO_MAX_REASON bytes of UTF-8 without NUL, CR, LF;
 *   - uid, uidvalidity, uidnext, message modseq != 0; system flags only in
 *     MS_EVENT_FLAG_MASK; special-use only in MS_EVENT_SU_MASK; booleans 0
 *     or 1; STORE mode 0..2; unseen <= messages; virtual >= physical size;
 *   - uid sets: n ranges (at least 1 in a request, 0 allowed in a reply),
 *     at most MS_PROTO_MAX_RANGES, each 1 <= lo <= hi, sorted and not
 *     overlapping (lo > previous hi);
 *   - APPEND carries no placement uid or guid (APPEND_UID does: uid 0
 *     and an all-zero guid mean "the store picks");
 *   - keyword lists: at most MS_PROTO_MAX_KEYWORDS; APPEND: 1..
 *     MS_PROTO_MAX_PLACEMENTS placements (the body may be empty),
 *     received 0 ("now") .. MS_PROTO_TIME_MAX; STATUS: at most
 *     MS_PROTO_MAX_COUNTERS counters; FETCH_BODY: offset <= INT64_MAX,
 *     total <= INT64_MAX, chunk <= total; WAIT: timeout <=
 *     MS_PROTO_MAX_WAIT_MS (REPL_WAIT too); REPL_ACK: state <=
 *     MS_REPL_STATE_MAX; HELLO: version >= 1, role 0 or 1, a user name
 *     for the user role and none for the admin role;
 *   - a reply status is 0 or negative.
 *
 * Lists (keywords, uid ranges, placements and the items of list replies)
 * are never copied out on decode: a decoded struct points at the list as
 * it lies in the frame ("packed" form) and the iterators below read it
 * item by item.  An encoder may instead be handed a plain C array ("list"
 * form); the iterators read either form.  Set at most one of the two
 * (neither for an empty list).
 *
 * BORROWED: every pointer in a decoded struct (names, reasons, blobs,
 * packed lists) points into the body that was decoded: valid while that
 * buffer is and not moved (an ms_buf that grows may move its data), and
 * not NUL-terminated.  Fixed-size fields (GUID) are copied.
 */
#ifndef MS_PROTO_H
#define MS_PROTO_H

#include "buf.h"
#include "event.h"
#include "rec.h"

#define MS_PROTO_VERSION 10
#define MS_PROTO_HDR_SIZE 12
/* Whole frame (len field included); a receiver's max is configured
   between MS_PROTO_HDR_SIZE and MS_PROTO_MAX_FRAME_LIMIT. */
#define MS_PROTO_MAX_FRAME_DEFAULT ((uint32_t)64 << 20)
#define MS_PROTO_MAX_FRAME_LIMIT ((uint32_t)256 << 20)
#define MS_OP_REPLY 0x8000

#define MS_PROTO_MAX_PLACEMENTS 1000
#define MS_PROTO_MAX_RANGES 100000
#define MS_PROTO_MAX_KEYWORDS 1000
#define MS_PROTO_MAX_COUNTERS 1024
/* LMTP_STATS: reply codes per request */
#define MS_PROTO_MAX_LMTP_CODES 32
#define MS_PROTO_MAX_REASON 1024
#define MS_PROTO_NAME_MAX 255
#define MS_PROTO_MAX_WAIT_MS 3600000u /* one hour */
/* 9999-12-31T23:59:59Z, the last second IMAP can write */
#define MS_PROTO_TIME_MAX INT64_C(253402300799)

enum ms_op {
	MS_OP_HELLO = 1,
	MS_OP_STATUS = 2,
	MS_OP_USER_CREATE = 10,
	MS_OP_USER_DELETE = 11,
	MS_OP_USER_LIST = 12,
	MS_OP_MBOX_LIST = 20,
	MS_OP_MBOX_CREATE = 21,
	MS_OP_MBOX_RENAME = 22,
	MS_OP_MBOX_DELETE = 23,
	MS_OP_MBOX_SUBSCRIBE = 24,
	MS_OP_MBOX_STATUS = 25,
	MS_OP_MBOX_SUBS = 26,	/* the user's subscribed names (version 8) */
	MS_OP_APPEND = 30,
	MS_OP_FETCH_META = 31,
	MS_OP_FETCH_BODY = 32,
	MS_OP_CHANGES = 33,
	MS_OP_STORE = 34,
	MS_OP_EXPUNGE = 35,
	MS_OP_COPY = 36,
	MS_OP_MOVE = 37,
	MS_OP_UNDELETE = 38,
	MS_OP_QUOTA_GET = 40,
	MS_OP_QUOTA_SET = 41,
	MS_OP_WAIT = 42,
	MS_OP_COMPACT = 43,
	MS_OP_USER_WATCH = 44,	/* the user's change count, as it moves */
	/* replication (udsync, docs/replication.md): 50..59 */
	MS_OP_REPL_WAIT = 50,
	MS_OP_REPL_ACK = 51,
	MS_OP_PROMOTE = 52,	/* standby → read-write, new timeline */
	MS_OP_FORK_INFO = 53,	/* failback: where this log forked */
	/* migration keeping UIDs (doveadm backup): */
	MS_OP_MBOX_UPDATE = 55, /* UIDVALIDITY, UIDNEXT, modseq, GUID */
	MS_OP_APPEND_UID = 56,	/* APPEND at a UID, with a GUID, given */
	/* mstore-lmtpd's counters (docs/protocol.md): 54 */
	MS_OP_LMTP_STATS = 54,	/* its LMTP replies by code */
};

/* What udsync send says about its link to the DR site (REPL_ACK). */
enum ms_repl_state {
	MS_REPL_DISCONNECTED = 0,
	MS_REPL_CATCHING_UP = 1,
	MS_REPL_STREAMING = 2,
	MS_REPL_STATE_MAX = MS_REPL_STREAMING
};

enum ms_role {
	MS_ROLE_USER = 0,
	MS_ROLE_ADMIN = 1
};

/*
 * Name of an op ("hello", "mbox-create", ...; the MS_OP_REPLY bit is
 * ignored), "unknown" if it is not one.  true from ms_op_known() if op
 * (without MS_OP_REPLY) is one of enum ms_op.
 */
const char *ms_op_name(uint16_t op);
bool ms_op_known(uint16_t op);

/* ---- frames ---- */

struct ms_proto_hdr {
	uint32_t len; /* bytes after the len field: 8 + body_len */
	uint16_t op;
	uint16_t flags; /* always 0 in a frame that passed */
	uint32_t id;
	const uint8_t *body; /* buf + MS_PROTO_HDR_SIZE; borrowed */
	uint32_t body_len;   /* the frame takes HDR_SIZE + body_len bytes */
};

/*
 * Check the frame at the start of buf (avail bytes; more frames may
 * follow).  max is the largest whole frame accepted (0: the default;
 * above MS_PROTO_MAX_FRAME_LIMIT: the limit).  Returns:
 *   0            a whole frame is there: *hdr_r filled;
 *   MS_ETRUNC    more bytes are needed: *need_r (if not NULL) = the size
 *                of the whole frame when its len field is there, else
 *                MS_PROTO_HDR_SIZE;
 *   MS_ECORRUPT  len < 8 or flags != 0: close the connection;
 *   MS_ETOOBIG   the frame is over max: close the connection.
 * Checks are made as soon as their bytes are there, so a bad len is
 * refused after 4 bytes.  The op is not checked: an unknown op is the
 * body decoder's business (-EOPNOTSUPP), answered with an error reply.
 * On failure *hdr_r is untouched and *error_r (if not NULL) says why.
 */
int ms_proto_frame(const uint8_t *buf, size_t avail, uint32_t max,
		   struct ms_proto_hdr *hdr_r, size_t *need_r,
		   const char **error_r);

/*
 * Build a frame by hand: ms_proto_begin appends a header (len still 0) to
 * out, which may already hold other frames, and gives its offset;
 * append the body (ms_wr_*); ms_proto_end(out, that offset) sets len.
 * 0 or MS_ETOOBIG (out->max reached; from ms_proto_end: the frame passes
 * MS_PROTO_MAX_FRAME_LIMIT, and out->len is set back to start).  The body
 * is not checked: prefer the encoders below.
 */
int ms_proto_begin(struct ms_buf *out, uint16_t op, uint32_t id,
		   size_t *start_r);
int ms_proto_end(struct ms_buf *out, size_t start);

/*
 * Append a whole error reply: op | MS_OP_REPLY, id, status (< 0, else
 * -EINVAL and nothing appended), reason (NULL = empty).  The reason is
 * made to fit the rule: cut to MS_PROTO_MAX_REASON bytes at a character
 * boundary, and every byte that is not valid UTF-8 or is NUL, CR or LF
 * replaced by '?'.  0 or MS_ETOOBIG (out->max); out->len unchanged on
 * failure.
 */
int ms_proto_error(struct ms_buf *out, uint16_t op, uint32_t id, int status,
		   const char *reason);

/* ---- building blocks ---- */

/* A byte string, not NUL-terminated. */
struct ms_pstr {
	const char *s;
	size_t len;
};

#define MS_PSTR(lit) ((struct ms_pstr){(lit), sizeof(lit) - 1})

static inline struct ms_pstr ms_pstr_c(const char *s)
{
	return (struct ms_pstr){s, s != NULL ? strlen(s) : 0};
}

/* Keywords: u16 n, then n × str.  list[0..n-1] or packed (packed_len). */
struct ms_keywords {
	uint32_t n;
	const struct ms_pstr *list;
	const uint8_t *packed;
	size_t packed_len;
};

/* Names (MBOX_SUBS): u32 n, then n × str.  list or packed. */
struct ms_names {
	uint32_t n;
	const struct ms_pstr *list;
	const uint8_t *packed;
	size_t packed_len;
};

struct ms_uid_range {
	uint32_t lo, hi;
};

/* uid set: u32 n, then n × (u32 lo, u32 hi).  list or packed (8n bytes). */
struct ms_uid_set {
	uint32_t n;
	const struct ms_uid_range *list;
	const uint8_t *packed;
};

/* Range i of a uid set, O(1).  0; -EINVAL if i >= n or no/both forms. */
int ms_uid_set_range(const struct ms_uid_set *set, uint32_t i, uint32_t *lo_r,
		     uint32_t *hi_r);

/* ---- list items ---- */

struct ms_placement {        /* APPEND, APPEND_UID request */
	struct ms_pstr user; /* empty = the session's user */
	struct ms_pstr mailbox;
	uint32_t flags;   /* MS_EVENT_FLAG_* */
	int64_t received; /* unix seconds; 0 = now */
	struct ms_keywords keywords;
	/* APPEND_UID only (0 to encode an APPEND): the UID wanted (0: the
	   store picks) and the message GUID (all zero: the store makes
	   one) */
	uint32_t uid;
	uint8_t guid[MS_EVENT_GUID_SIZE];
};

struct ms_counter { /* STATUS reply */
	struct ms_pstr key;
	uint64_t value;
};

struct ms_user_info { /* USER_LIST reply */
	uint64_t user_id;
	struct ms_pstr name;
};

struct ms_mbox_info { /* MBOX_LIST, MBOX_CREATE, MBOX_STATUS replies */
	uint64_t mbox_id;
	struct ms_pstr name;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t messages;
	uint32_t unseen;
	uint64_t bytes;
	uint32_t special_use; /* MS_EVENT_SU_* */
	uint8_t subscribed;
};

/* APPEND reply: one per placement.  status < 0: only reason is set. */
struct ms_append_result {
	int32_t status;
	struct ms_pstr reason;
	uint64_t mbox_id;
	uint32_t uidvalidity;
	uint32_t uid;
	uint64_t modseq;
};

struct ms_msg_meta { /* FETCH_META reply */
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags;
	struct ms_keywords keywords;
	int64_t received; /* unix seconds */
	int64_t saved;    /* unix seconds */
	uint8_t guid[MS_EVENT_GUID_SIZE];
	uint64_t physical_size;
	uint64_t virtual_size;
};

struct ms_msg_change { /* CHANGES reply */
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags;
	struct ms_keywords keywords;
};

struct ms_uid_pair { /* COPY, MOVE replies */
	uint32_t src_uid;
	uint32_t dst_uid;
};

struct ms_mbox_chg { /* USER_WATCH replies (version 7) */
	uint64_t mbox_id;
	uint64_t changes;	/* the mailbox's change count, != 0 */
};

/* Lists of items: list[0..n-1], or packed (packed_len bytes, n items). */
#define MS_PROTO_LIST_MEMBERS(item) \
	uint32_t n;                 \
	const struct item *list;    \
	const uint8_t *packed;      \
	size_t packed_len

struct ms_placements {
	MS_PROTO_LIST_MEMBERS(ms_placement);
	/* the packed form is APPEND_UID's (uid and guid in each item); set
	   by the decoder, read by the iterator */
	uint8_t with_uid;
};
struct ms_counters {
	MS_PROTO_LIST_MEMBERS(ms_counter);
};
struct ms_user_infos {
	MS_PROTO_LIST_MEMBERS(ms_user_info);
};
struct ms_mbox_infos {
	MS_PROTO_LIST_MEMBERS(ms_mbox_info);
};
struct ms_append_results {
	MS_PROTO_LIST_MEMBERS(ms_append_result);
};
struct ms_msg_metas {
	MS_PROTO_LIST_MEMBERS(ms_msg_meta);
};
struct ms_msg_changes {
	MS_PROTO_LIST_MEMBERS(ms_msg_change);
};
struct ms_uid_pairs {
	MS_PROTO_LIST_MEMBERS(ms_uid_pair);
};
struct ms_mbox_chgs {
	MS_PROTO_LIST_MEMBERS(ms_mbox_chg);
};

/* ---- requests ---- */

struct ms_req_hello {        /* HELLO */
	uint16_t version;    /* the highest the client speaks */
	uint8_t role;        /* enum ms_role */
	struct ms_pstr user; /* user role: the user; admin role: empty */
};

struct ms_req_user { /* USER_CREATE, USER_DELETE */
	struct ms_pstr name;
};

/* MBOX_CREATE (name, special_use), MBOX_RENAME (name → new_name),
   MBOX_DELETE (name), MBOX_SUBSCRIBE (name, subscribe), MBOX_STATUS (name).
   Fields an op does not carry must be 0 / empty to encode. */
struct ms_req_mbox {
	struct ms_pstr name;
	struct ms_pstr new_name;
	uint32_t special_use;
	uint8_t subscribe;
	/* MBOX_DELETE (version 9): MS_MBOX_DELETE_* bits; 0 is not sent */
	uint8_t delete_flags;
};

/* MBOX_DELETE: only a mailbox that holds no message and has none on its
   way in (-ENOTEMPTY otherwise) */
#define MS_MBOX_DELETE_EMPTY 1u
#define MS_MBOX_DELETE_MASK MS_MBOX_DELETE_EMPTY

struct ms_req_append {       /* APPEND, APPEND_UID */
	const uint8_t *body; /* may be empty (body_len 0) */
	uint32_t body_len;
	struct ms_placements placements;
};

/* MBOX_UPDATE: what to change in mailbox name; 0 (an all-zero GUID)
   leaves a field as it is.  uidnext and highestmodseq only raise. */
struct ms_req_mbox_update {
	struct ms_pstr name;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint8_t guid[MS_EVENT_GUID_SIZE];
};

/* FETCH_META, EXPUNGE (mailbox, uids); COPY, MOVE (+ dst; empty for the
   others). */
struct ms_req_uids {
	struct ms_pstr mailbox;
	struct ms_uid_set uids;
	struct ms_pstr dst;
};

struct ms_req_store { /* STORE */
	struct ms_pstr mailbox;
	struct ms_uid_set uids;
	uint8_t mode; /* enum ms_event_mode */
	uint32_t flags;
	struct ms_keywords keywords;
	uint64_t unchangedsince; /* 0 = no test */
};

struct ms_req_fetch_body { /* FETCH_BODY */
	struct ms_pstr mailbox;
	uint32_t uid;
	uint64_t offset;
	uint32_t max_len; /* 0 = the server's default chunk size */
};

/* USER_LIST: paged (version 4), the users whose id is above after_id in
   id order, at most max (!= 0) and what fits one reply, the list being
   over at an empty page; unpaged (an empty request), every user.
   MBOX_LIST: paged (version 5), the mailboxes after after_name (empty:
   from the first) in the server's order, at most max (but never part of
   a group of names of one hash) and what fits one reply, over at an
   empty page; unpaged, every mailbox of the user. */
struct ms_req_list {
	uint8_t paged;
	uint64_t after_id;		/* USER_LIST */
	struct ms_pstr after_name;	/* MBOX_LIST */
	uint32_t max;
};

struct ms_req_changes { /* CHANGES */
	struct ms_pstr mailbox;
	uint64_t since_modseq;
};

/* QUOTA_GET (user), QUOTA_SET (user, limits; 0 = unlimited).  user empty
   = the session's user.  QUOTA_GET: limits must be 0 to encode. */
struct ms_req_quota {
	struct ms_pstr user;
	uint64_t max_bytes;
	uint64_t max_messages;
};

struct ms_req_wait { /* WAIT */
	struct ms_pstr mailbox;
	uint64_t known_modseq;
	uint32_t timeout_ms;
};


/* UNDELETE: bring back the messages of mailbox expunged at or after
   since (unix seconds; 0 = the whole undelete window) as new uids.  user
   empty = the session's user; the admin role names one. */
struct ms_req_undelete {
	struct ms_pstr user;
	struct ms_pstr mailbox;
	int64_t since;
};

/* COMPACT (admin): purge what left the undelete window, then compact
   the sealed segments whose live share is under threshold (per mille;
   0 = the configured one).  purge_only: do not compact. */
struct ms_req_compact {
	uint32_t threshold;
	uint8_t purge_only;
};

/* REPL_WAIT (admin): answer once the durable end of the log is past
   (seg, off), or after timeout_ms (0: at once) with where it is. */
struct ms_req_repl_wait {
	uint64_t seg, off;
	uint32_t timeout_ms;
};

/* REPL_ACK (admin): the DR site has made the log durable up to (seg,
   off), the record before that being seq; state: enum ms_repl_state. */
struct ms_req_repl_ack {
	uint64_t seg, off, seq;
	uint8_t state;
};

/* FORK_INFO (admin): the fork of this log from timeline (the old
   primary's), for failback.  timeline != 0. */
struct ms_req_fork_info {
	uint64_t timeline;
};
/* LMTP_STATS (admin): the replies an mstore-lmtpd sent since it started,
   by code (200..599, strictly ascending, counts never 0); instance: its
   own id (not 0), the same across its reconnects, so that mstored
   replaces what it had from it rather than adding. */
struct ms_lmtp_count {
	uint16_t code;
	uint64_t count;
};
struct ms_req_lmtp_stats {
	uint64_t instance;
	uint16_t n;
	struct ms_lmtp_count codes[MS_PROTO_MAX_LMTP_CODES];
};

/* STATUS, USER_LIST, MBOX_LIST: empty body, no member. */
struct ms_req {
	uint16_t op; /* enum ms_op, without MS_OP_REPLY */
	union {
		struct ms_req_hello hello;
		struct ms_req_user user;
		struct ms_req_mbox mbox;
		struct ms_req_mbox_update mbox_update;
		struct ms_req_append append;
		struct ms_req_uids uids;
		struct ms_req_store store;
		struct ms_req_fetch_body fetch_body;
		struct ms_req_changes changes;
		struct ms_req_quota quota;
		struct ms_req_wait wait;
		struct ms_req_undelete undelete;
		struct ms_req_compact compact;
		struct ms_req_repl_wait repl_wait;
		struct ms_req_repl_ack repl_ack;
		struct ms_req_fork_info fork_info;
		struct ms_req_list list;
		struct ms_req_lmtp_stats lmtp_stats;
	} u;
};

/* ---- replies ---- */

/* HELLO reply flags (version >= 2) */
#define MS_HELLO_STANDBY 0x1u /* a standby: reads only (the DR site) */

struct ms_rep_hello {
	uint16_t version; /* the one the server will speak */
	uint64_t user_id; /* 0 for the admin role */
	struct ms_pstr server;
	uint32_t flags;	  /* MS_HELLO_*; on the wire from version 2 */
	/* on the wire from version 6: the server's change epoch (new at
	   every start) and the user's change count (USER_WATCH) */
	uint64_t changes_epoch;
	uint64_t changes;
};

struct ms_rep_changes {
	uint64_t highestmodseq;
	uint32_t uidvalidity;
	struct ms_msg_changes changes;
	struct ms_uid_set expunged;
};

struct ms_rep_mbox_update { /* MBOX_UPDATE: the state after it */
	struct ms_mbox_info mbox;
	uint8_t guid[MS_EVENT_GUID_SIZE]; /* all zero: none was set */
};

struct ms_rep_modseq_uids { /* STORE: failed; EXPUNGE: expunged */
	uint64_t modseq;
	struct ms_uid_set uids;
	/* from version 3 (on the wire when have_prev): the mailbox's id
	   and its highestmodseq just before this request */
	int have_prev;
	uint64_t mbox_id;
	uint64_t prev_modseq;
	/* from version 7 (on the wire when have_chg, which needs
	   have_prev): the mailbox's change count (USER_WATCH) just before
	   this request's change and the one it gave; changes 0: the server
	   cannot tell */
	int have_chg;
	uint64_t prev_changes;
	uint64_t changes;
};

struct ms_rep_copy { /* COPY, MOVE */
	uint32_t uidvalidity;
	struct ms_uid_pairs pairs;
};

/* USER_WATCH: the user's change count; from version 7 (have_mboxes)
   the change counts of its mailboxes too: every one of them (full), or
   those that changed since the watch's previous reply */
struct ms_rep_user_watch {
	uint64_t changes;
	uint8_t have_mboxes;
	uint8_t full;
	struct ms_mbox_chgs mboxes;
};

struct ms_rep_fetch_body {
	uint64_t total;
	const uint8_t *chunk;
	uint32_t chunk_len;
};

struct ms_rep_quota { /* QUOTA_GET */
	uint64_t max_bytes;
	uint64_t max_messages;
	uint64_t used_bytes;
	uint64_t used_messages;
	/* from version 5 (on the wire when have_mailboxes): the user's
	   mailboxes and the store's max_mailboxes (0: no limit) */
	int have_mailboxes;
	uint64_t mailboxes;
	uint64_t max_mailboxes;
};

/* REPL_WAIT, REPL_ACK: the durable end of the primary's log. */
struct ms_rep_repl {
	uint64_t seg, off; /* end of the durable log */
	uint64_t seq;      /* seq of the last durable record (0: none) */
	uint64_t timeline;
};

/* FORK_INFO: the TIMELINE record that raised this log above the asked
   timeline (docs/replication.md, "Failback"): it starts at (seg, off),
   names fork_seq (the last record shared) and the store id; chain and
   tail_sum as ms_log_fork_hash() computes them up to (seg, off);
   cur_timeline: this log's timeline now. */
struct ms_rep_fork_info {
	uint64_t fork_seq;
	uint64_t seg, off; /* off >= 64 */
	uint64_t timeline; /* > the asked one */
	uint64_t cur_timeline;
	uint8_t store_id[16];
	uint8_t chain[32];
	uint64_t tail_sum;
	uint8_t tail_holes; /* 0 or 1 */
};

/*
 * A reply.  status < 0: only reason is set (the union is not used).
 * status 0: the member named for op is; MBOX_RENAME, MBOX_DELETE,
 * MBOX_SUBSCRIBE and QUOTA_SET have none.
 */
struct ms_reply {
	uint16_t op; /* enum ms_op, without MS_OP_REPLY */
	int32_t status;
	struct ms_pstr reason;
	union {
		struct ms_rep_hello hello;           /* HELLO */
		struct ms_counters counters;         /* STATUS, COMPACT */
		uint64_t user_id;                    /* USER_CREATE/DELETE */
		struct ms_user_infos users;          /* USER_LIST */
		struct ms_mbox_infos mboxes;         /* MBOX_LIST */
		struct ms_names subs;                /* MBOX_SUBS */
		struct ms_mbox_info mbox;            /* MBOX_CREATE/STATUS */
		struct ms_rep_mbox_update mbox_update; /* MBOX_UPDATE */
		struct ms_append_results append;     /* APPEND, APPEND_UID */
		struct ms_msg_metas metas;           /* FETCH_META */
		struct ms_rep_fetch_body fetch_body; /* FETCH_BODY */
		struct ms_rep_changes changes;       /* CHANGES */
		struct ms_rep_modseq_uids store;     /* STORE */
		struct ms_rep_modseq_uids expunge;   /* EXPUNGE */
		struct ms_rep_copy copy;             /* COPY, MOVE, UNDELETE */
		struct ms_rep_quota quota;           /* QUOTA_GET */
		uint64_t highestmodseq;              /* WAIT */
		struct ms_rep_user_watch watch;      /* USER_WATCH */
		struct ms_rep_repl repl;   /* REPL_WAIT, REPL_ACK, PROMOTE */
		struct ms_rep_fork_info fork_info; /* FORK_INFO */
	} u;
};

/* ---- codecs ---- */

/*
 * Decode and check a request body (hdr.body, hdr.body_len of a frame) for
 * op.  0 with *req_r filled.  On failure *req_r is untouched and *error_r
 * (if not NULL) names the field and its body offset (ms_errf text, valid
 * for MS_ERRF_SLOTS more ms_errf calls on this thread):
 *   -EOPNOTSUPP  op is not a request op (unknown, or MS_OP_REPLY set);
 *   MS_ETRUNC    the body ends before an item does (or a count needs
 *                more bytes than are left);
 *   MS_ECORRUPT  a rule is broken or bytes are left over;
 *   MS_ETOOBIG   a count is over its MS_PROTO_MAX_* limit.
 * The daemon answers the last three with status -EINVAL (MS_ETOOBIG:
 * MS_ETOOBIG), the first with -EOPNOTSUPP.
 */
int ms_req_decode(uint16_t op, const uint8_t *body, size_t len,
		  struct ms_req *req_r, const char **error_r);

/*
 * Decode a reply body for op (MS_OP_REPLY may be set or not).  An error
 * reply (status < 0) decodes for any op, even an unknown one.  Returns
 * and error_r as ms_req_decode(); 0 means the body is well formed: the
 * op's own outcome is rep_r->status.
 */
int ms_reply_decode(uint16_t op, const uint8_t *body, size_t len,
		    struct ms_reply *rep_r, const char **error_r);

/*
 * Append a whole frame for req (op req->op) or rep (op rep->op |
 * MS_OP_REPLY) with this id to out; nothing of the struct is kept.  The
 * frame is checked by the decoder before it is accepted, so whatever
 * encodes decodes.  0; -EOPNOTSUPP for an unknown op (an error reply,
 * status < 0, encodes for any op); -EINVAL if a rule is broken or a list
 * has both forms or none while n > 0; MS_ETOOBIG if a count is over its
 * limit, the frame over MS_PROTO_MAX_FRAME_LIMIT or out->max.  On failure
 * out->len is as it was (the buffer may have grown, its data moved) and
 * *error_r (if not NULL) says why.
 */
int ms_req_encode(struct ms_buf *out, uint32_t id, const struct ms_req *req,
		  const char **error_r);
int ms_reply_encode(struct ms_buf *out, uint32_t id, const struct ms_reply *rep,
		    const char **error_r);
/*
 * The bytes one item of a reply's list takes, encoded: a USER_LIST user
 * or an MBOX_LIST mailbox with a name of name_len bytes, a FETCH_META
 * message or a CHANGES change whose keywords take keywords_len bytes in
 * packed form (each a str: 2 + its length).  For a server that keeps a
 * reply under a limit before it encodes it.
 */
uint64_t ms_proto_user_size(size_t name_len);
uint64_t ms_proto_mbox_size(size_t name_len);
uint64_t ms_proto_meta_size(size_t keywords_len);
uint64_t ms_proto_change_size(size_t keywords_len);
/*
 * A message's size with every line ending in CRLF, as IMAP's
 * RFC822.SIZE counts it (FETCH_META's virtual_size): len, plus one for
 * each LF that has no CR right before it.  mstored computes it at
 * APPEND; the Dovecot plugin for the mail it has just saved.
 */
uint64_t ms_crlf_size(const void *p, size_t len);
/*
 * The start of a FETCH_BODY reply (status 0) whose chunk of chunk_len
 * bytes the caller sends right after it, from wherever the bytes are (a
 * file, with sendfile): the frame header, counting the chunk, the total
 * and the chunk's length; the same bytes as ms_reply_encode() would
 * write before the chunk.  0; -EINVAL if chunk_len > total or total >
 * 2^63 - 1; MS_ETOOBIG if the frame would be over
 * MS_PROTO_MAX_FRAME_LIMIT or the head over out->max (out->len as it
 * was).
 */
int ms_reply_fetch_body_head(struct ms_buf *out, uint32_t id,
			     uint64_t total, uint32_t chunk_len);

/* ---- iterators ---- */

/*
 * Walk a list in either form, item by item:
 *
 *   struct ms_proto_iter it;
 *   struct ms_mbox_info info;
 *   ms_proto_iter_mboxes(&it, &rep.u.mboxes);
 *   while ((ret = ms_proto_next_mbox(&it, &info)) > 0)
 *           ...
 *
 * next returns 1 with the next item, 0 at the end, -EINVAL if the packed
 * list is malformed (never for a decoded struct) or the iterator was set
 * up for another kind of list.  Items borrow like the list they come
 * from; a packed item's keywords are packed too.
 */
struct ms_proto_iter {
	int kind; /* private */
	uint32_t n, i;
	const void *list;
	const uint8_t *p;
	size_t left;
};

void ms_proto_iter_keywords(struct ms_proto_iter *it,
			    const struct ms_keywords *l);
void ms_proto_iter_placements(struct ms_proto_iter *it,
			      const struct ms_placements *l);
void ms_proto_iter_counters(struct ms_proto_iter *it,
			    const struct ms_counters *l);
void ms_proto_iter_users(struct ms_proto_iter *it,
			 const struct ms_user_infos *l);
void ms_proto_iter_mboxes(struct ms_proto_iter *it,
			  const struct ms_mbox_infos *l);
void ms_proto_iter_results(struct ms_proto_iter *it,
			   const struct ms_append_results *l);
void ms_proto_iter_metas(struct ms_proto_iter *it,
			 const struct ms_msg_metas *l);
void ms_proto_iter_changes(struct ms_proto_iter *it,
			   const struct ms_msg_changes *l);
void ms_proto_iter_pairs(struct ms_proto_iter *it,
			 const struct ms_uid_pairs *l);
void ms_proto_iter_mbox_chgs(struct ms_proto_iter *it,
			     const struct ms_mbox_chgs *l);
void ms_proto_iter_names(struct ms_proto_iter *it, const struct ms_names *l);

int ms_proto_next_keyword(struct ms_proto_iter *it, struct ms_pstr *kw_r);
int ms_proto_next_placement(struct ms_proto_iter *it, struct ms_placement *p_r);
int ms_proto_next_counter(struct ms_proto_iter *it, struct ms_counter *c_r);
int ms_proto_next_user(struct ms_proto_iter *it, struct ms_user_info *u_r);
int ms_proto_next_mbox(struct ms_proto_iter *it, struct ms_mbox_info *m_r);
int ms_proto_next_result(struct ms_proto_iter *it,
			 struct ms_append_result *r_r);
int ms_proto_next_meta(struct ms_proto_iter *it, struct ms_msg_meta *m_r);
int ms_proto_next_change(struct ms_proto_iter *it, struct ms_msg_change *c_r);
int ms_proto_next_pair(struct ms_proto_iter *it, struct ms_uid_pair *p_r);
int ms_proto_next_mbox_chg(struct ms_proto_iter *it, struct ms_mbox_chg *c_r);
int ms_proto_next_name(struct ms_proto_iter *it, struct ms_pstr *name_r);

#endif
