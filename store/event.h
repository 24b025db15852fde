/*
 * event.h - payloads of the mail-model log records: every record type but
 * BODY (store/body.h) and SEAL (the segment footer, store/seg.h).
 *
 * The log engine does not look inside payloads; this module gives each
 * record type a struct and a pure codec: ms_event_encode() appends the
 * payload of a struct ms_event to a buffer, ms_event_decode() checks a
 * payload and fills a struct ms_event.  No I/O, no allocation, no state.
 * docs/format.md ("Record payloads") has the byte layout of every type and
 * the rules below in tables; this header is the short version.
 *
 * All integers are little-endian.  str = u16 length + that many bytes (no
 * terminator on disk).  Ids (user, mailbox) are u64 chosen by the writer,
 * never reused.
 *
 * Rules that both sides enforce (the decoder with MS_ECORRUPT, the encoder
 * with -EINVAL), so whatever decodes encodes back to the same bytes:
 *   - names and keywords: valid UTF-8 (RFC 3629: no overlong forms, no
 *     surrogates, nothing above U+10FFFF), no NUL, CR or LF, not empty, at
 *     most MS_EVENT_MBOX_NAME_MAX bytes for mailbox names (create, rename,
 *     subscribe) and MS_EVENT_USER_NAME_MAX / MS_EVENT_KEYWORD_MAX for user
 *     names and keywords;
 *   - uid != 0, uidvalidity != 0, modseq != 0 (PLACE, FLAGS, EXPUNGE),
 *     new_timeline != 0;
 *   - system flags only in MS_EVENT_FLAG_MASK, special-use only in
 *     MS_EVENT_SU_MASK, subscribed 0 or 1, FLAGS mode 0..2;
 *   - PLACE: virtual size >= physical size (CRLF only adds bytes);
 *   - uid ranges (FLAGS, EXPUNGE): at least one; each 1 <= lo <= hi; sorted
 *     and not overlapping (lo > previous hi; adjacent ranges are allowed);
 *   - RETIRE: at least one dropped record; offsets strictly increasing
 *     and at least MS_EVENT_SEG_HDR_SIZE; type BODY, PLACE or NOOP; the
 *     key all zero unless the type is BODY;
 *   - PURGE: before != 0;
 *   - a payload is at most MS_REC_MAX_PAYLOAD bytes.
 *
 * Variable-length lists (keywords, uid ranges, dropped records) are never
 * copied out: a decoded event points at the list as it lies in the payload
 * ("packed" form), and the accessors below read item i from there.  A
 * writer may instead hand the encoder a plain C array ("list" form); the
 * accessors read either form.  Set at most one of the two.
 */
#ifndef MS_EVENT_H
#define MS_EVENT_H

#include <stdbool.h>

#include "buf.h"
#include "rec.h"

#define MS_EVENT_MBOX_NAME_MAX 1024
#define MS_EVENT_USER_NAME_MAX 255
#define MS_EVENT_KEYWORD_MAX 255
#define MS_EVENT_GUID_SIZE 16
#define MS_EVENT_BODY_KEY_SIZE 32
#define MS_EVENT_STORE_ID_SIZE 16
#define MS_EVENT_SEG_HDR_SIZE 64 /* records start here (seg.h) */
#define MS_EVENT_DROP_SIZE 41    /* one RETIRE item on disk */

/* IMAP system flags (PLACE, FLAGS).  \Recent is never stored. */
enum {
	MS_EVENT_FLAG_SEEN = 1u << 0,
	MS_EVENT_FLAG_ANSWERED = 1u << 1,
	MS_EVENT_FLAG_FLAGGED = 1u << 2,
	MS_EVENT_FLAG_DELETED = 1u << 3,
	MS_EVENT_FLAG_DRAFT = 1u << 4,
	MS_EVENT_FLAG_MASK = 0x1fu,
};

/* RFC 6154 special-use attributes (MBOX_CREATE). */
enum {
	MS_EVENT_SU_ALL = 1u << 0,
	MS_EVENT_SU_ARCHIVE = 1u << 1,
	MS_EVENT_SU_DRAFTS = 1u << 2,
	MS_EVENT_SU_FLAGGED = 1u << 3,
	MS_EVENT_SU_JUNK = 1u << 4,
	MS_EVENT_SU_SENT = 1u << 5,
	MS_EVENT_SU_TRASH = 1u << 6,
	MS_EVENT_SU_MASK = 0x7fu,
};

/* FLAGS: how flags and keywords apply to the messages in the ranges. */
enum ms_event_mode {
	MS_EVENT_MODE_ADD = 0,
	MS_EVENT_MODE_REMOVE = 1,
	MS_EVENT_MODE_REPLACE = 2,
};

/* A byte string that is not NUL-terminated. */
struct ms_event_str {
	const char *s;
	size_t len;
};

struct ms_event_range {
	uint32_t lo, hi;
};

/* n keywords: list[0..n-1], or packed = n × str, packed_len bytes. */
struct ms_event_keywords {
	uint32_t n;
	const struct ms_event_str *list;
	const uint8_t *packed;
	size_t packed_len;
};

/* n uid ranges: list[0..n-1], or packed = n × (u32 lo, u32 hi). */
struct ms_event_ranges {
	uint32_t n;
	const struct ms_event_range *list;
	const uint8_t *packed;
};

/* A record compaction drops: its offset in the segment, its type, and
   for a BODY its dedup key (zero otherwise). */
struct ms_event_drop {
	uint64_t off;
	uint8_t type;
	uint8_t key[MS_EVENT_BODY_KEY_SIZE];
};

/* n dropped records: list[0..n-1], or packed = n × (u64 off, u8 type,
   u8[32] key). */
struct ms_event_drops {
	uint32_t n;
	const struct ms_event_drop *list;
	const uint8_t *packed;
};

struct ms_event_user_create {
	uint64_t user_id;
	struct ms_event_str name;
};

struct ms_event_user_delete {
	uint64_t user_id;
};

struct ms_event_mbox_create {
	uint64_t user_id;
	uint64_t mbox_id;
	uint32_t uidvalidity;
	uint32_t special_use; /* MS_EVENT_SU_* */
	struct ms_event_str name;
};

struct ms_event_mbox_rename {
	uint64_t user_id;
	uint64_t mbox_id;
	struct ms_event_str new_name;
};

struct ms_event_mbox_delete {
	uint64_t user_id;
	uint64_t mbox_id;
};

/*
 * A mailbox's UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ or GUID set (for a
 * migration that keeps them).  0 (an all-zero GUID) leaves a field as it
 * is; uidnext and highestmodseq only ever raise the mailbox's.
 */
struct ms_event_mbox_update {
	uint64_t user_id;
	uint64_t mbox_id;
	uint32_t uidvalidity;	/* 0: unchanged */
	uint32_t uidnext;	/* 0: unchanged; raises only */
	uint64_t highestmodseq;	/* 0: unchanged; raises only */
	uint8_t guid[MS_EVENT_GUID_SIZE]; /* all zero: unchanged */
};

/* By name, as in IMAP: the mailbox need not exist. */
struct ms_event_mbox_subscribe {
	uint64_t user_id;
	uint8_t subscribed; /* 0 or 1 */
	struct ms_event_str name;
};

struct ms_event_place {
	uint64_t user_id;
	uint64_t mbox_id;
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags;        /* MS_EVENT_FLAG_* */
	int64_t received_date; /* unix seconds */
	int64_t save_date;     /* unix seconds */
	uint8_t guid[MS_EVENT_GUID_SIZE];
	uint8_t body_key[MS_EVENT_BODY_KEY_SIZE]; /* dedup key of the BODY */
	uint64_t body_seq; /* seq of that BODY record: a hint, key is truth */
	uint64_t physical_size;
	uint64_t virtual_size; /* with CRLF line ends */
	/* undelete: the expunged uid of this mailbox this placement brings
	   back (it leaves the expunged set); 0 for a new message */
	uint32_t restore_uid;
	struct ms_event_keywords keywords; /* n <= UINT16_MAX */
};

struct ms_event_flags {
	uint64_t user_id;
	uint64_t mbox_id;
	uint64_t modseq;
	uint8_t mode; /* enum ms_event_mode */
	uint32_t flags;
	struct ms_event_keywords keywords; /* n <= UINT16_MAX */
	struct ms_event_ranges ranges;
};

struct ms_event_expunge {
	uint64_t user_id;
	uint64_t mbox_id;
	uint64_t modseq;
	uint64_t time; /* unix seconds: starts the undelete window */
	struct ms_event_ranges ranges;
};

struct ms_event_quota {
	uint64_t user_id;
	uint64_t max_bytes;    /* 0 = unlimited */
	uint64_t max_messages; /* 0 = unlimited */
};

struct ms_event_timeline {
	uint64_t new_timeline;
	uint64_t fork_seq; /* last seq of the old timeline the new one keeps */
	uint8_t store_id[MS_EVENT_STORE_ID_SIZE]; /* the promoted store */
};

/*
 * Compaction of one sealed segment: the listed records become HOLE
 * records (rec.h) in place, everything else stays byte for byte at its
 * offset, and the seal gets the new segment checksum sum.
 */
struct ms_event_retire {
	uint64_t seg;
	uint64_t sum; /* seal checksum of the compacted segment */
	struct ms_event_drops drops;
};

/* Expunged messages whose expunge time is before this leave the
   expunged set for good (the end of the undelete window). */
struct ms_event_purge {
	uint64_t before; /* unix seconds */
};

struct ms_event_checkpoint {
	uint64_t applied_seq;
	uint64_t index_generation;
	uint64_t time; /* unix seconds */
};

struct ms_event_noop {
	const uint8_t *data;
	size_t len;
};

/* type is an enum ms_rec_type; the member of u named after it is set. */
struct ms_event {
	uint8_t type;
	union {
		struct ms_event_user_create user_create;
		struct ms_event_user_delete user_delete;
		struct ms_event_mbox_create mbox_create;
		struct ms_event_mbox_rename mbox_rename;
		struct ms_event_mbox_delete mbox_delete;
		struct ms_event_mbox_subscribe mbox_subscribe;
		struct ms_event_mbox_update mbox_update;
		struct ms_event_place place;
		struct ms_event_flags flags;
		struct ms_event_expunge expunge;
		struct ms_event_quota quota;
		struct ms_event_timeline timeline;
		struct ms_event_retire retire;
		struct ms_event_purge purge;
		struct ms_event_checkpoint checkpoint;
		struct ms_event_noop noop;
	} u;
};

/*
 * Append the payload of ev to out.  Nothing of ev is changed and nothing
 * is kept.  0; -EINVAL if ev breaks a rule above, has an unknown type or
 * BODY/SEAL, or a list with both forms set (or none while n > 0) or a
 * malformed packed list; MS_ETOOBIG if the payload would pass
 * MS_REC_MAX_PAYLOAD or out->max.  On failure out->len is as it was (the
 * buffer may have grown, and its data moved).
 */
int ms_event_encode(const struct ms_event *ev, struct ms_buf *out);

/*
 * Decode and check the payload of a record of the given type.  Every
 * length is checked against the bytes left before use, every count against
 * the bytes it needs, and the payload must end exactly with the last
 * field.  0 with *ev_r filled; MS_ETRUNC if the payload ends before an item
 * does (a count larger than the bytes left included); MS_ECORRUPT if a rule
 * fails, bytes are left over, or the type is unknown, BODY or SEAL.  On
 * failure *ev_r is untouched and *error_r (if error_r is not NULL) says
 * which field failed and at which payload offset (ms_errf text: valid for
 * MS_ERRF_SLOTS more ms_errf calls on this thread).
 *
 * BORROWED: names, NOOP data and packed lists in *ev_r point into payload.
 * They are valid while payload is, and are not NUL-terminated.  Fixed-size
 * fields (GUID, body key, store id) are copied.
 */
int ms_event_decode(uint8_t type, const uint8_t *payload, size_t len,
		    struct ms_event *ev_r, const char **error_r);

/*
 * Item i of the keywords (PLACE, FLAGS), uid ranges (FLAGS, EXPUNGE) or
 * dropped records (RETIRE) of ev, in either form.  0; -EINVAL if ev's type has
 * no such list, i >= n, or a packed list is malformed (never for a decoded
 * event).  Outputs untouched on failure; *kw_r borrows like the event.
 * ms_event_range() and ms_event_drop() take O(1); ms_event_keyword() walks
 * the packed form from the start, O(i): walk all with the iterator.
 */
int ms_event_keyword(const struct ms_event *ev, uint32_t i, const char **kw_r,
		     size_t *len_r);
int ms_event_range(const struct ms_event *ev, uint32_t i, uint32_t *lo_r,
		   uint32_t *hi_r);
int ms_event_drop(const struct ms_event *ev, uint32_t i,
		  struct ms_event_drop *drop_r);

/*
 * Walk the keywords of ev in order:
 *
 *   struct ms_event_kw_iter it;
 *   ms_event_kw_iter_init(&it, ev);
 *   while ((ret = ms_event_kw_next(&it, &kw, &len)) > 0)
 *           ...
 *
 * next returns 1 with the next keyword, 0 at the end (at once for a type
 * without keywords), -EINVAL for a malformed packed list (never for a
 * decoded event).
 */
struct ms_event_kw_iter {
	const struct ms_event_keywords *kws;
	uint32_t i;
	size_t off;
};

void ms_event_kw_iter_init(struct ms_event_kw_iter *it,
			   const struct ms_event *ev);
int ms_event_kw_next(struct ms_event_kw_iter *it, const char **kw_r,
		     size_t *len_r);

/*
 * The rule for names and keywords: 1..max bytes of valid UTF-8 without
 * NUL, CR or LF.  true if s[0..len-1] keeps it.
 */
bool ms_event_name_valid(const char *s, size_t len, size_t max);

#endif
