/*
 * rec.c - record header encode/decode and checksum; payload cursors.
 * The layout is in rec.h and docs/format.md.  Pure: no I/O, no globals,
 * safe on any input (fuzzed by tests/fuzz/fuzz_rec.c).
 */
#include <stdio.h>
/* xxHash's own header-only form: the record checksum is the only use of
   xxHash in the Dovecot plugin, which then needs no libxxhash.so at run
   time: one shared object less for every imap, pop3 and lmtp process to
   map and relocate when it loads the plugin (docs/dovecot-plugin.md,
   "LOGIN, in instructions") */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "buf.h"
#include "rec.h"

static const char *const type_names[] = {
	[MS_REC_BODY] = "body",
	[MS_REC_PLACE] = "place",
	[MS_REC_FLAGS] = "flags",
	[MS_REC_EXPUNGE] = "expunge",
	[MS_REC_MBOX_CREATE] = "mbox-create",
	[MS_REC_MBOX_RENAME] = "mbox-rename",
	[MS_REC_MBOX_DELETE] = "mbox-delete",
	[MS_REC_MBOX_SUBSCRIBE] = "mbox-subscribe",
	[MS_REC_USER_CREATE] = "user-create",
	[MS_REC_USER_DELETE] = "user-delete",
	[MS_REC_QUOTA] = "quota",
	[MS_REC_TIMELINE] = "timeline",
	[MS_REC_RETIRE] = "retire",
	[MS_REC_CHECKPOINT] = "checkpoint",
	[MS_REC_SEAL] = "seal",
	[MS_REC_NOOP] = "noop",
	[MS_REC_PURGE] = "purge",
	[MS_REC_HOLE] = "hole",
	[MS_REC_MBOX_UPDATE] = "mbox-update",
};

const char *ms_rec_type_name(unsigned type)
{
	if (type == 0 || type > MS_REC_TYPE_MAX)
		return "unknown";
	return type_names[type];
}

static uint64_t rec_sum(const uint8_t hdr[MS_REC_HDR_SIZE], const void *payload,
			uint32_t len)
{
	if (hdr[0] == MS_REC_HOLE)
		return XXH3_64bits_withSeed(hdr, 24, 0);
	uint64_t psum = XXH3_64bits(len ? payload : "", len);
	return XXH3_64bits_withSeed(hdr, 24, psum);
}

void ms_rec_encode_hdr(uint8_t out[MS_REC_HDR_SIZE], uint8_t type,
		       uint8_t flags, uint32_t len, uint64_t seq,
		       uint64_t timeline, const void *payload)
{
	out[0] = type;
	out[1] = flags;
	ms_put16(out + 2, 0);
	ms_put32(out + 4, len);
	ms_put64(out + 8, seq);
	ms_put64(out + 16, timeline);
	ms_put64(out + 24, rec_sum(out, payload, len));
}

int ms_rec_check_hdr(const uint8_t hdr[MS_REC_HDR_SIZE],
		     struct ms_rec_hdr *hdr_r, const char **error_r)
{
	uint8_t type = hdr[0], flags = hdr[1];
	uint32_t len = ms_get32(hdr + 4);

	if (type == 0 || type > MS_REC_TYPE_MAX) {
		*error_r = ms_errf("unknown record type %u", type);
		return MS_ECORRUPT;
	}
	uint8_t allowed =
		MS_REC_F_BATCH |
		(type == MS_REC_BODY ? (MS_REC_F_LZ4 | MS_REC_F_SEALED) : 0);
	if ((flags & ~allowed) != 0) {
		*error_r = ms_errf("flags 0x%02x not allowed for %s record",
				   flags, ms_rec_type_name(type));
		return MS_ECORRUPT;
	}
	if (ms_get16(hdr + 2) != 0) {
		*error_r = "reserved header field is not zero";
		return MS_ECORRUPT;
	}
	if (len > MS_REC_MAX_PAYLOAD) {
		*error_r = ms_errf("record length %u over the limit %u", len,
				   MS_REC_MAX_PAYLOAD);
		return MS_ECORRUPT;
	}
	hdr_r->type = type;
	hdr_r->flags = flags;
	hdr_r->len = len;
	hdr_r->seq = ms_get64(hdr + 8);
	hdr_r->timeline = ms_get64(hdr + 16);
	hdr_r->sum = ms_get64(hdr + 24);
	return 0;
}

int ms_rec_check_sum(const uint8_t hdr[MS_REC_HDR_SIZE], const void *payload,
		     uint32_t len, const char **error_r)
{
	if (rec_sum(hdr, payload, len) != ms_get64(hdr + 24)) {
		*error_r = "record checksum mismatch";
		return MS_ECORRUPT;
	}
	return 0;
}

int ms_rec_decode(const uint8_t *buf, size_t avail, struct ms_rec_hdr *hdr_r,
		  const char **error_r)
{
	struct ms_rec_hdr h;
	int ret;

	if (avail < MS_REC_HDR_SIZE) {
		*error_r = "record header truncated";
		return MS_ETRUNC;
	}
	if ((ret = ms_rec_check_hdr(buf, &h, error_r)) < 0)
		return ret;
	if (h.type != MS_REC_HOLE && avail - MS_REC_HDR_SIZE < h.len) {
		*error_r = ms_errf("record payload truncated (%zu of %u bytes)",
				   avail - MS_REC_HDR_SIZE, h.len);
		return MS_ETRUNC;
	}
	if ((ret = ms_rec_check_sum(buf, buf + MS_REC_HDR_SIZE, h.len,
				    error_r)) < 0)
		return ret;
	*hdr_r = h;
	return 0;
}

/* ---- cursors ---- */

static const uint8_t *rd_take(struct ms_rd *rd, size_t n)
{
	if (rd->err != 0)
		return NULL;
	if (n > rd->left) {
		rd->err = MS_ETRUNC;
		return NULL;
	}
	const uint8_t *p = rd->p;
	if (n > 0) {
		rd->p += n;
		rd->left -= n;
	}
	return p;
}

uint8_t ms_rd_u8(struct ms_rd *rd)
{
	const uint8_t *p = rd_take(rd, 1);
	return p ? p[0] : 0;
}

uint16_t ms_rd_u16(struct ms_rd *rd)
{
	const uint8_t *p = rd_take(rd, 2);
	return p ? ms_get16(p) : 0;
}

uint32_t ms_rd_u32(struct ms_rd *rd)
{
	const uint8_t *p = rd_take(rd, 4);
	return p ? ms_get32(p) : 0;
}

uint64_t ms_rd_u64(struct ms_rd *rd)
{
	const uint8_t *p = rd_take(rd, 8);
	return p ? ms_get64(p) : 0;
}

const uint8_t *ms_rd_bytes(struct ms_rd *rd, size_t n)
{
	return rd_take(rd, n);
}

const uint8_t *ms_rd_str(struct ms_rd *rd, uint16_t *len_r)
{
	uint16_t n = ms_rd_u16(rd);
	const uint8_t *p = rd_take(rd, n);
	if (p == NULL)
		return NULL;
	if (memchr(p, '\0', n) != NULL) {
		rd->err = MS_ECORRUPT;
		return NULL;
	}
	*len_r = n;
	return p;
}

int ms_rd_end(const struct ms_rd *rd)
{
	if (rd->err != 0)
		return rd->err;
	return rd->left == 0 ? 0 : MS_ECORRUPT;
}

int ms_wr_u8(struct ms_buf *b, uint8_t v)
{
	return ms_buf_append(b, &v, 1);
}

int ms_wr_u16(struct ms_buf *b, uint16_t v)
{
	uint8_t t[2];
	ms_put16(t, v);
	return ms_buf_append(b, t, sizeof(t));
}

int ms_wr_u32(struct ms_buf *b, uint32_t v)
{
	uint8_t t[4];
	ms_put32(t, v);
	return ms_buf_append(b, t, sizeof(t));
}

int ms_wr_u64(struct ms_buf *b, uint64_t v)
{
	uint8_t t[8];
	ms_put64(t, v);
	return ms_buf_append(b, t, sizeof(t));
}

int ms_wr_bytes(struct ms_buf *b, const void *p, size_t n)
{
	return ms_buf_append(b, p, n);
}

int ms_wr_str(struct ms_buf *b, const char *s, size_t n)
{
	int ret;
	if (n > UINT16_MAX)
		return MS_ETOOBIG;
	if (memchr(s, '\0', n) != NULL)
		return MS_ECORRUPT;
	/* all or nothing: room for length and bytes first */
	if ((ret = ms_buf_reserve(b, 2 + n)) < 0)
		return ret;
	ms_wr_u16(b, (uint16_t)n);
	return ms_buf_append(b, s, n);
}

/* ---- checked decoder ---- */

void ms_dec_init(struct ms_dec *d, const void *p, size_t len, const char *what,
		 const char *what2, const char *noun)
{
	ms_rd_init(&d->rd, p, len);
	d->len = len;
	/* formatted only for an error: this runs for every frame and
	   record decoded, and once for every reply encoded (its check) */
	d->what1 = what;
	d->what2 = what2;
	d->noun = noun;
	d->ret = 0;
	d->error = NULL;
}

const char *ms_dec_what(struct ms_dec *d)
{
	snprintf(d->what, sizeof(d->what), "%s%s%s", d->what1,
		 d->what2 ? " " : "", d->what2 ? d->what2 : "");
	return d->what;
}

size_t ms_dec_off(const struct ms_dec *d)
{
	return d->len - d->rd.left;
}

void ms_dec_fail(struct ms_dec *d, int ret, const char *error)
{
	if (d->ret != 0)
		return;
	d->ret = ret;
	d->error = error;
	d->rd.err = ret;
}

int ms_dec_ok(struct ms_dec *d, const char *field, size_t off)
{
	if (d->ret != 0)
		return 0;
	if (d->rd.err == 0)
		return 1;
	ms_dec_fail(d, d->rd.err,
		    ms_errf("%s: %s ends in %s (offset %zu of %zu)",
			    ms_dec_what(d), d->noun, field, off, d->len));
	return 0;
}

void ms_dec_bad(struct ms_dec *d, const char *field, size_t off,
		const char *why)
{
	ms_dec_fail(d, MS_ECORRUPT,
		    ms_errf("%s: bad %s at offset %zu: %s", ms_dec_what(d),
			    field, off, why));
}

#define DEC_GET(name, type, rdfn)                        \
	type name(struct ms_dec *d, const char *field)   \
	{                                                \
		size_t off = ms_dec_off(d);              \
		type v = rdfn(&d->rd);                   \
		return ms_dec_ok(d, field, off) ? v : 0; \
	}

DEC_GET(ms_dec_u8, uint8_t, ms_rd_u8)
DEC_GET(ms_dec_u16, uint16_t, ms_rd_u16)
DEC_GET(ms_dec_u32, uint32_t, ms_rd_u32)
DEC_GET(ms_dec_u64, uint64_t, ms_rd_u64)

uint32_t ms_dec_u32_nz(struct ms_dec *d, const char *field)
{
	size_t off = ms_dec_off(d);
	uint32_t v = ms_dec_u32(d, field);
	if (d->ret == 0 && v == 0)
		ms_dec_bad(d, field, off, "0");
	return v;
}

uint64_t ms_dec_u64_nz(struct ms_dec *d, const char *field)
{
	size_t off = ms_dec_off(d);
	uint64_t v = ms_dec_u64(d, field);
	if (d->ret == 0 && v == 0)
		ms_dec_bad(d, field, off, "0");
	return v;
}

uint32_t ms_dec_u32_mask(struct ms_dec *d, const char *field, uint32_t mask)
{
	size_t off = ms_dec_off(d);
	uint32_t v = ms_dec_u32(d, field);
	if (d->ret == 0 && (v & ~mask) != 0)
		ms_dec_bad(d, field, off,
			   ms_errf("unknown bits 0x%x", (unsigned)(v & ~mask)));
	return v;
}

const uint8_t *ms_dec_uid_ranges(struct ms_dec *d, uint32_t n)
{
	size_t off = ms_dec_off(d);
	const uint8_t *p = ms_rd_bytes(&d->rd, (size_t)n * 8);
	uint32_t prev_hi = 0;

	if (!ms_dec_ok(d, "uid ranges", off))
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t lo = ms_get32(p + (size_t)i * 8);
		uint32_t hi = ms_get32(p + (size_t)i * 8 + 4);
		size_t at = off + (size_t)i * 8;

		if (lo == 0) {
			ms_dec_bad(d, "uid range", at, ms_errf("%u: lo 0", i));
			return NULL;
		}
		if (lo > hi) {
			ms_dec_bad(d, "uid range", at,
				   ms_errf("%u: lo %u > hi %u", i, lo, hi));
			return NULL;
		}
		if (i > 0 && lo <= prev_hi) {
			ms_dec_bad(d, "uid range", at,
				   ms_errf("%u: lo %u not above the previous "
					   "hi %u (unsorted or overlapping)",
					   i, lo, prev_hi));
			return NULL;
		}
		prev_hi = hi;
	}
	return p;
}
