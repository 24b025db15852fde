/*
 * rec.h - log records: the 32-byte header, its XXH3-64 checksum, and the
 * bounds-checked cursor used by every payload codec.  Pure: no I/O.
 *
 * Record layout (all little-endian; docs/format.md has the full text):
 *
 *   0   u8   type       enum ms_rec_type, never 0
 *   1   u8   flags      MS_REC_F_BATCH on any type; LZ4/SEALED on BODY
 *   2   u16  reserved   must be 0
 *   4   u32  len        payload bytes that follow the header
 *   8   u64  seq        log sequence number: +1 per record, whole store
 *   16  u64  timeline   timeline the record was written on (>= 1)
 *   24  u64  sum        XXH3_64bits_withSeed(bytes 0..23, 24,
 *                                            XXH3_64bits(payload, len))
 *   32  payload[len]
 *
 * A HOLE record (written by compaction in place of a record it dropped)
 * keeps the dropped record's seq, timeline, length and BATCH flag, but
 * its payload bytes are not part of it: they are a hole in the file
 * (never written, so they read as zeros; the segment's seal checksum
 * counts them as zeros).  Its sum is XXH3_64bits_withSeed(bytes 0..23,
 * 24, 0), and decoders need only its header.
 *
 * A record is valid only if all of these hold, checked in this order:
 * the 32 header bytes are there; type is known; flags are allowed for the
 * type; reserved is 0; len <= MS_REC_MAX_PAYLOAD; the len payload bytes are
 * there; sum matches.  Nothing of a record is used before that.
 */
#ifndef MS_REC_H
#define MS_REC_H

#include "ms.h"

#define MS_REC_HDR_SIZE 32
#define MS_REC_MAX_PAYLOAD ((uint32_t)256 << 20)

enum ms_rec_type {
	MS_REC_BODY = 1,    /* message body (single instance) */
	MS_REC_PLACE = 2,   /* message placement: user, mailbox, uid → body */
	MS_REC_FLAGS = 3,   /* flag / keyword change */
	MS_REC_EXPUNGE = 4, /* expunge of placements */
	MS_REC_MBOX_CREATE = 5,
	MS_REC_MBOX_RENAME = 6,
	MS_REC_MBOX_DELETE = 7,
	MS_REC_MBOX_SUBSCRIBE = 8,
	MS_REC_USER_CREATE = 9,
	MS_REC_USER_DELETE = 10,
	MS_REC_QUOTA = 11,      /* quota settings */
	MS_REC_TIMELINE = 12,   /* timeline change (promotion) */
	MS_REC_RETIRE = 13,     /* segment retirement (compaction) */
	MS_REC_CHECKPOINT = 14, /* checkpoint */
	MS_REC_SEAL = 15,       /* segment footer: last record of a segment */
	MS_REC_NOOP = 16,       /* filler / test record, no meaning */
	MS_REC_PURGE = 17,      /* end of the undelete window */
	MS_REC_HOLE = 18,       /* a record compaction dropped */
	MS_REC_MBOX_UPDATE = 19, /* UIDVALIDITY, UIDNEXT, modseq, GUID set */
	MS_REC_TYPE_MAX = MS_REC_MBOX_UPDATE,
};

/* BODY record flags */
#define MS_REC_F_LZ4 0x01    /* payload data is an LZ4 block */
#define MS_REC_F_SEALED 0x02 /* payload data is XChaCha20-Poly1305 sealed */
/*
 * Any type: this record is the first of a flush batch.  Batches are
 * flushed one after the other, so when it was written every byte before
 * it in its segment was already durable.  Recovery uses it to tell a torn
 * tail (cut it) from damage to acknowledged records (never cut those).
 */
#define MS_REC_F_BATCH 0x80

struct ms_rec_hdr {
	uint8_t type;
	uint8_t flags;
	uint32_t len;
	uint64_t seq;
	uint64_t timeline;
	uint64_t sum;
};

/* Name of a record type ("body", "place", ...), "unknown" if not known. */
const char *ms_rec_type_name(unsigned type);

/* Fill out[0..31] with the header for this payload, checksum included. */
void ms_rec_encode_hdr(uint8_t out[MS_REC_HDR_SIZE], uint8_t type,
		       uint8_t flags, uint32_t len, uint64_t seq,
		       uint64_t timeline, const void *payload);

/*
 * Check the header fields that need no payload (type, flags, reserved,
 * len bound).  0, or MS_ECORRUPT with *error_r saying which check failed.
 */
int ms_rec_check_hdr(const uint8_t hdr[MS_REC_HDR_SIZE],
		     struct ms_rec_hdr *hdr_r, const char **error_r);

/* Check the checksum of a header already passed ms_rec_check_hdr(). */
int ms_rec_check_sum(const uint8_t hdr[MS_REC_HDR_SIZE], const void *payload,
		     uint32_t len, const char **error_r);

/*
 * Decode the record that starts at buf, with avail bytes after it.
 * 0 with *hdr_r filled: the record is valid and takes
 * MS_REC_HDR_SIZE + hdr_r->len bytes.  MS_ETRUNC: fewer bytes than the
 * record needs.  MS_ECORRUPT: a check failed (*error_r says which).
 */
int ms_rec_decode(const uint8_t *buf, size_t avail, struct ms_rec_hdr *hdr_r,
		  const char **error_r);

/*
 * Bounds-checked payload cursors.  Every get checks the bytes left first;
 * after the first failure the cursor is in error and every later get fails
 * too (so a codec checks once, at the end, with ms_rd_end).
 */
struct ms_rd {
	const uint8_t *p;
	size_t left;
	int err;
};

static inline void ms_rd_init(struct ms_rd *rd, const void *p, size_t len)
{
	rd->p = p;
	rd->left = len;
	rd->err = 0;
}

uint8_t ms_rd_u8(struct ms_rd *rd);
uint16_t ms_rd_u16(struct ms_rd *rd);
uint32_t ms_rd_u32(struct ms_rd *rd);
uint64_t ms_rd_u64(struct ms_rd *rd);
/* n raw bytes; returns a pointer into the input, NULL on failure. */
const uint8_t *ms_rd_bytes(struct ms_rd *rd, size_t n);
/* u16 length + bytes (no NUL in the data, no terminator on disk). */
const uint8_t *ms_rd_str(struct ms_rd *rd, uint16_t *len_r);
/* 0 if no get failed and no byte is left over; else MS_ECORRUPT/ETRUNC. */
int ms_rd_end(const struct ms_rd *rd);

/*
 * A checked decoder on top of a cursor, for the payload and frame codecs
 * (event.c, proto.c): the first failure wins and stops the cursor, and
 * its text names what was decoded, the field and the offset.
 */
struct ms_dec {
	struct ms_rd rd;
	size_t len;       /* the whole input, for offsets */
	/* "place", "append request": for messages, joined by ms_dec_what
	   only when one is written */
	const char *what1, *what2;
	char what[64];
	const char *noun; /* "payload", "body" */
	int ret;          /* first failure, 0 if none */
	const char *error;
};

/* what2 (may be NULL) is appended to what with a space. */
void ms_dec_init(struct ms_dec *d, const void *p, size_t len, const char *what,
		 const char *what2, const char *noun);
size_t ms_dec_off(const struct ms_dec *d);
/* what the decoder reads, for an error message */
const char *ms_dec_what(struct ms_dec *d);
/* Record the first failure and stop the cursor. */
void ms_dec_fail(struct ms_dec *d, int ret, const char *error);
/* After a read at off: 1 if it worked, else record where input ran out. */
int ms_dec_ok(struct ms_dec *d, const char *field, size_t off);
/* A rule broken by field at off (MS_ECORRUPT). */
void ms_dec_bad(struct ms_dec *d, const char *field, size_t off,
		const char *why);
uint8_t ms_dec_u8(struct ms_dec *d, const char *field);
uint16_t ms_dec_u16(struct ms_dec *d, const char *field);
uint32_t ms_dec_u32(struct ms_dec *d, const char *field);
uint64_t ms_dec_u64(struct ms_dec *d, const char *field);
/* The same, refusing 0 (uids, uidvalidity, modseqs) ... */
uint32_t ms_dec_u32_nz(struct ms_dec *d, const char *field);
uint64_t ms_dec_u64_nz(struct ms_dec *d, const char *field);
/* ... or bits outside mask (flags, special-use). */
uint32_t ms_dec_u32_mask(struct ms_dec *d, const char *field, uint32_t mask);
/*
 * n uid ranges, n x (u32 lo, u32 hi): each 1 <= lo <= hi, sorted and not
 * overlapping (the event and protocol codecs share this layout).  The
 * packed bytes, or NULL after recording the failure.
 */
const uint8_t *ms_dec_uid_ranges(struct ms_dec *d, uint32_t n);

struct ms_buf;
/* Writers append to a buffer; they return 0 or MS_ETOOBIG. */
int ms_wr_u8(struct ms_buf *b, uint8_t v);
int ms_wr_u16(struct ms_buf *b, uint16_t v);
int ms_wr_u32(struct ms_buf *b, uint32_t v);
int ms_wr_u64(struct ms_buf *b, uint64_t v);
int ms_wr_bytes(struct ms_buf *b, const void *p, size_t n);
/* A string of at most 65535 bytes with no NUL; else MS_ETOOBIG/ECORRUPT. */
int ms_wr_str(struct ms_buf *b, const char *s, size_t n);

#endif
