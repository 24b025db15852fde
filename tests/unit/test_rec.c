/*
 * test_rec.c - log records (store/rec.c): tables of valid and invalid
 * headers, each case named by its index; encode/decode round trips for
 * every type and payload length 0, 1, 1000; the order of the header checks
 * (a bad length is corrupt, not truncated, and no payload byte is touched);
 * every single-bit flip of a 40-byte record; every truncation; type names;
 * HOLE records (a header whose payload is not part of the record); and the
 * bounds-checked payload cursors (ms_rd_*, ms_wr_*).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include "buf.h"
#include "msg.h"
#include "mstest.h"
#include "mstest_cmocka.h"
#include "rec.h"

/* ---- helpers ---- */


/*
 * The header exactly as rec.h describes it, written field by field with
 * its own checksum, so that encode is checked against the text and not
 * against itself.  payload == NULL leaves the sum 0 (for headers that are
 * rejected before the sum is looked at).  A HOLE's sum covers the header
 * only (seed 0), so it is always set and payload is not read.
 */
static void raw_hdr(uint8_t out[MS_REC_HDR_SIZE], uint8_t type, uint8_t flags,
		    uint16_t reserved, uint32_t len, uint64_t seq,
		    uint64_t timeline, const uint8_t *payload)
{
	out[0] = type;
	out[1] = flags;
	out[2] = (uint8_t)reserved;
	out[3] = (uint8_t)(reserved >> 8);
	for (int i = 0; i < 4; i++)
		out[4 + i] = (uint8_t)(len >> (8 * i));
	for (int i = 0; i < 8; i++) {
		out[8 + i] = (uint8_t)(seq >> (8 * i));
		out[16 + i] = (uint8_t)(timeline >> (8 * i));
	}
	uint64_t sum = 0;
	if (type == MS_REC_HOLE)
		sum = XXH3_64bits_withSeed(out, 24, 0);
	else if (payload != NULL)
		sum = XXH3_64bits_withSeed(out, 24,
					   XXH3_64bits(payload, len));
	for (int i = 0; i < 8; i++)
		out[24 + i] = (uint8_t)(sum >> (8 * i));
}

/* A record (header + payload) in a buffer of exactly its size. */
static uint8_t *make_rec(uint8_t type, uint8_t flags, uint32_t len,
			 uint64_t seq, uint64_t timeline, uint64_t key,
			 size_t *size_r)
{
	size_t size = MS_REC_HDR_SIZE + (size_t)len;
	uint8_t *rec = malloc(size);
	assert_non_null(rec);
	mst_fill(rec + MS_REC_HDR_SIZE, len, key);
	ms_rec_encode_hdr(rec, type, flags, len, seq, timeline,
			  rec + MS_REC_HDR_SIZE);
	*size_r = size;
	return rec;
}

/* ms_rec_decode over a copy of exactly n bytes (so ASan sees overreads) */
static int decode_exact(const uint8_t *rec, size_t n, struct ms_rec_hdr *h,
			const char **err)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n > 0)
		memcpy(copy, rec, n);
	*err = NULL;
	int ret = ms_rec_decode(copy, n, h, err);
	free(copy);
	return ret;
}

static const struct ms_rec_hdr sentinel_hdr = {
	.type = 0xEE,
	.flags = 0xEE,
	.len = 0xEEEEEEEE,
	.seq = 0xEEEEEEEEEEEEEEEEULL,
	.timeline = 0xEEEEEEEEEEEEEEEEULL,
	.sum = 0xEEEEEEEEEEEEEEEEULL,
};

static int hdr_is_sentinel(const struct ms_rec_hdr *h)
{
	return h->type == sentinel_hdr.type && h->flags == sentinel_hdr.flags &&
	       h->len == sentinel_hdr.len && h->seq == sentinel_hdr.seq &&
	       h->timeline == sentinel_hdr.timeline &&
	       h->sum == sentinel_hdr.sum;
}

/* ---- valid records ---- */

static const struct valid_rec {
	uint8_t type;
	uint8_t flags;
} valid_recs[] = {
	{ MS_REC_BODY, 0 },
	{ MS_REC_BODY, MS_REC_F_LZ4 },
	{ MS_REC_BODY, MS_REC_F_SEALED },
	{ MS_REC_BODY, MS_REC_F_LZ4 | MS_REC_F_SEALED },
	{ MS_REC_BODY, MS_REC_F_BATCH },
	{ MS_REC_BODY, MS_REC_F_BATCH | MS_REC_F_LZ4 | MS_REC_F_SEALED },
	{ MS_REC_PLACE, 0 },
	{ MS_REC_PLACE, MS_REC_F_BATCH },
	{ MS_REC_FLAGS, 0 },
	{ MS_REC_EXPUNGE, 0 },
	{ MS_REC_MBOX_CREATE, 0 },
	{ MS_REC_MBOX_RENAME, 0 },
	{ MS_REC_MBOX_DELETE, 0 },
	{ MS_REC_MBOX_SUBSCRIBE, 0 },
	{ MS_REC_USER_CREATE, 0 },
	{ MS_REC_USER_DELETE, 0 },
	{ MS_REC_QUOTA, 0 },
	{ MS_REC_TIMELINE, 0 },
	{ MS_REC_RETIRE, 0 },
	{ MS_REC_CHECKPOINT, 0 },
	{ MS_REC_SEAL, 0 },
	{ MS_REC_SEAL, MS_REC_F_BATCH },
	{ MS_REC_NOOP, 0 },
	{ MS_REC_NOOP, MS_REC_F_BATCH },
	{ MS_REC_PURGE, 0 },
	{ MS_REC_PURGE, MS_REC_F_BATCH },
	{ MS_REC_HOLE, 0 },
	{ MS_REC_HOLE, MS_REC_F_BATCH },
	{ MS_REC_MBOX_UPDATE, 0 },
	{ MS_REC_MBOX_UPDATE, MS_REC_F_BATCH },
};

static const uint32_t valid_lens[] = { 0, 1, 1000 };

/* seq / timeline pairs, extremes included */
static const uint64_t valid_seqs[][2] = {
	{ 1, 1 },
	{ 0, 0 },
	{ 0x0102030405060708ULL, 0x1112131415161718ULL },
	{ UINT64_MAX, UINT64_MAX },
};

static void test_rec_valid_roundtrip(void **state)
{
	(void)state;
	/* the table covers every type */
	unsigned seen = 0;
	for (size_t i = 0; i < MS_ARRAY_SIZE(valid_recs); i++)
		seen |= 1u << valid_recs[i].type;
	assert_int_equal(seen, ((1u << (MS_REC_TYPE_MAX + 1)) - 2));

	for (size_t i = 0; i < MS_ARRAY_SIZE(valid_recs); i++) {
		const struct valid_rec *v = &valid_recs[i];
		for (size_t j = 0; j < MS_ARRAY_SIZE(valid_lens); j++) {
			for (size_t k = 0; k < MS_ARRAY_SIZE(valid_seqs); k++) {
				uint32_t len = valid_lens[j];
				uint64_t seq = valid_seqs[k][0];
				uint64_t tl = valid_seqs[k][1];
				size_t size;
				uint8_t *rec = make_rec(v->type, v->flags, len,
							seq, tl, i * 100 + j,
							&size);
				uint8_t want[MS_REC_HDR_SIZE];
				raw_hdr(want, v->type, v->flags, 0, len, seq,
					tl, rec + MS_REC_HDR_SIZE);
				if (memcmp(rec, want, MS_REC_HDR_SIZE) != 0)
					fail_msg("valid[%zu] len %u seq[%zu]: "
						 "encoded header differs from "
						 "the layout in rec.h",
						 i, len, k);

				struct ms_rec_hdr h = sentinel_hdr;
				const char *err;
				CHECK_RET(decode_exact(rec, size, &h, &err), 0,
					  "valid[%zu] len %u seq[%zu]", i, len,
					  k);
				if (h.type != v->type || h.flags != v->flags ||
				    h.len != len || h.seq != seq ||
				    h.timeline != tl ||
				    h.sum != ms_get64(want + 24))
					fail_msg("valid[%zu] len %u seq[%zu]: "
						 "decoded fields differ",
						 i, len, k);

				/* trailing bytes after the record are not
				   part of it */
				uint8_t *more = malloc(size + 7);
				assert_non_null(more);
				memcpy(more, rec, size);
				memset(more + size, 0xA5, 7);
				h = sentinel_hdr;
				CHECK_RET(ms_rec_decode(more, size + 7, &h,
							&err),
					  0, "valid[%zu] len %u + 7 bytes", i,
					  len);
				assert_int_equal(h.len, len);
				free(more);

				/* the two halves of decode, separately */
				h = sentinel_hdr;
				CHECK_RET(ms_rec_check_hdr(rec, &h, &err), 0,
					  "valid[%zu] check_hdr", i);
				assert_int_equal(h.len, len);
				CHECK_RET(ms_rec_check_sum(rec,
							   rec + MS_REC_HDR_SIZE,
							   len, &err),
					  0, "valid[%zu] check_sum", i);
				free(rec);
			}
		}
	}
}

/* The largest payload allowed is allowed (and one more is not, below). */
static void test_rec_max_payload(void **state)
{
	(void)state;
	size_t size = MS_REC_HDR_SIZE + (size_t)MS_REC_MAX_PAYLOAD;
	uint8_t *rec = calloc(1, size);
	assert_non_null(rec);
	rec[MS_REC_HDR_SIZE + 12345] = 7;
	ms_rec_encode_hdr(rec, MS_REC_BODY, MS_REC_F_LZ4, MS_REC_MAX_PAYLOAD,
			  42, 3, rec + MS_REC_HDR_SIZE);
	struct ms_rec_hdr h = sentinel_hdr;
	const char *err = NULL;
	CHECK_RET(ms_rec_decode(rec, size, &h, &err), 0, "max payload");
	assert_int_equal(h.len, MS_REC_MAX_PAYLOAD);
	CHECK_RET(ms_rec_decode(rec, size - 1, &h, &err), MS_ETRUNC,
		  "max payload less one byte");
	rec[MS_REC_HDR_SIZE + 12345] = 8;
	CHECK_RET(ms_rec_decode(rec, size, &h, &err), MS_ECORRUPT,
		  "max payload, one byte changed");
	free(rec);
}

/* ---- invalid headers ---- */

static const struct bad_hdr {
	uint8_t type;
	uint8_t flags;
	uint16_t reserved;
	uint32_t len;
	const char *why; /* a word of the expected error text */
} bad_hdrs[] = {
	/* 0 */ { 0, 0, 0, 0, "type" },
	/* 1 */ { MS_REC_TYPE_MAX + 1, 0, 0, 0, "type" },
	/* 2 */ { 255, 0, 0, 0, "type" },
	/* 3 */ { MS_REC_BODY, 0x04, 0, 0, "flags" },
	/* 4 */ { MS_REC_BODY, 0x40, 0, 0, "flags" },
	/* 5 */ { MS_REC_BODY, MS_REC_F_LZ4 | MS_REC_F_SEALED | 0x04, 0, 0,
		  "flags" },
	/* 6 */ { MS_REC_PLACE, MS_REC_F_LZ4, 0, 0, "flags" },
	/* 7 */ { MS_REC_SEAL, MS_REC_F_SEALED, 0, 0, "flags" },
	/* 8 */ { MS_REC_NOOP, 0xFF, 0, 0, "flags" },
	/* 9 */ { MS_REC_PLACE, MS_REC_F_BATCH | MS_REC_F_LZ4, 0, 0, "flags" },
	/* 10 */ { MS_REC_CHECKPOINT, 0x40, 0, 0, "flags" },
	/* 11 */ { MS_REC_NOOP, 0, 1, 0, "reserved" },
	/* 12 */ { MS_REC_NOOP, 0, 0x100, 0, "reserved" },
	/* 13 */ { MS_REC_BODY, 0, 0xFFFF, 1, "reserved" },
	/* 14 */ { MS_REC_NOOP, 0, 0, MS_REC_MAX_PAYLOAD + 1, "length" },
	/* 15 */ { MS_REC_BODY, MS_REC_F_LZ4, 0, 0xFFFFFFFF, "length" },
	/* 16 */ { MS_REC_NOOP, 0, 0, 0x80000000, "length" },
	/* the checks run in order: the first failing one is reported */
	/* 17 */ { 0, 0xFF, 0xFFFF, 0xFFFFFFFF, "type" },
	/* 18 */ { MS_REC_PLACE, 1, 0xFFFF, 0xFFFFFFFF, "flags" },
	/* 19 */ { MS_REC_PLACE, 0, 0xFFFF, 0xFFFFFFFF, "reserved" },
	/* HOLE: BATCH only; the rest of the header as for any type */
	/* 20 */ { MS_REC_HOLE, MS_REC_F_LZ4, 0, 0, "flags" },
	/* 21 */ { MS_REC_HOLE, MS_REC_F_SEALED, 0, 16, "flags" },
	/* 22 */ { MS_REC_HOLE, MS_REC_F_BATCH | MS_REC_F_LZ4, 0, 4096,
		   "flags" },
	/* 23 */ { MS_REC_HOLE, 0x40, 0, 4096, "flags" },
	/* 24 */ { MS_REC_HOLE, 0, 1, 4096, "reserved" },
	/* 25 */ { MS_REC_HOLE, 0, 0, MS_REC_MAX_PAYLOAD + 1, "length" },
	/* 26 */ { MS_REC_PURGE, MS_REC_F_LZ4, 0, 8, "flags" },
};

static void test_rec_invalid_hdr(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_hdrs); i++) {
		const struct bad_hdr *b = &bad_hdrs[i];
		/* a payload long enough when len is small, and the sum right,
		   so that the header field is the only thing wrong */
		uint8_t payload[16] = { 1, 2, 3 };
		size_t plen = b->len <= sizeof(payload) ? b->len : 0;
		uint8_t rec[MS_REC_HDR_SIZE + sizeof(payload)];
		raw_hdr(rec, b->type, b->flags, b->reserved, b->len, 9, 1,
			b->len <= sizeof(payload) ? payload : NULL);
		memcpy(rec + MS_REC_HDR_SIZE, payload, plen);

		struct ms_rec_hdr h = sentinel_hdr;
		const char *err = NULL;
		CHECK_RET(decode_exact(rec, MS_REC_HDR_SIZE + plen, &h, &err),
			  MS_ECORRUPT, "bad_hdrs[%zu]", i);
		if (err == NULL || strstr(err, b->why) == NULL)
			fail_msg("bad_hdrs[%zu]: error \"%s\" does not say "
				 "\"%s\"",
				 i, err ? err : "(null)", b->why);
		if (!hdr_is_sentinel(&h))
			fail_msg("bad_hdrs[%zu]: output changed on failure", i);
		err = NULL;
		CHECK_RET(ms_rec_check_hdr(rec, &h, &err), MS_ECORRUPT,
			  "bad_hdrs[%zu] check_hdr", i);
		if (err == NULL)
			fail_msg("bad_hdrs[%zu]: no error text", i);
	}
}

/*
 * Every type x every flags byte: valid exactly when the type is known and
 * the flags are BATCH (any type) and LZ4/SEALED (BODY only), or none.
 */
static void test_rec_type_flags_matrix(void **state)
{
	(void)state;
	uint8_t rec[MS_REC_HDR_SIZE + 1] = { 0 };
	rec[MS_REC_HDR_SIZE] = 'x';
	for (unsigned t = 0; t < 256; t++) {
		for (unsigned f = 0; f < 256; f++) {
			int known = t >= 1 && t <= MS_REC_TYPE_MAX;
			unsigned allowed =
				MS_REC_F_BATCH |
				(t == MS_REC_BODY
					 ? (MS_REC_F_LZ4 | MS_REC_F_SEALED)
					 : 0);
			int want = known && (f & ~allowed) == 0 ? 0
								 : MS_ECORRUPT;
			raw_hdr(rec, (uint8_t)t, (uint8_t)f, 0, 1, 5, 1,
				rec + MS_REC_HDR_SIZE);
			struct ms_rec_hdr h;
			const char *err = NULL;
			int ret = ms_rec_decode(rec, sizeof(rec), &h, &err);
			if (ret != want)
				fail_msg("type %u flags 0x%02x: got %d (%s), "
					 "want %d",
					 t, f, ret, ms_strerror(ret), want);
			if (ret < 0 && err == NULL)
				fail_msg("type %u flags 0x%02x: no error text",
					 t, f);
		}
	}
}

/*
 * A length over the limit is MS_ECORRUPT whatever follows, and is found
 * from the header alone: the "payload" here is address space that faults
 * when touched, as large as the header claims.
 */
static void test_rec_bad_len_untouched(void **state)
{
	(void)state;
	static const uint32_t lens[] = { MS_REC_MAX_PAYLOAD + 1, 0xFFFFFFFF };
	long pg = sysconf(_SC_PAGESIZE);
	assert_true(pg > 0);

	for (size_t i = 0; i < MS_ARRAY_SIZE(lens); i++) {
		size_t span = MS_REC_HDR_SIZE + (size_t)lens[i];
		size_t map = (span + (size_t)pg - 1) / (size_t)pg * (size_t)pg +
			     (size_t)pg;
		uint8_t *m = mmap(NULL, map, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				  -1, 0);
		if (m == MAP_FAILED)
			fail_msg("lens[%zu]: mmap of %zu bytes failed", i, map);
		/* the header ends the first page; the rest faults */
		uint8_t *hdr = m + (size_t)pg - MS_REC_HDR_SIZE;
		assert_int_equal(mprotect(m, (size_t)pg,
					  PROT_READ | PROT_WRITE),
				 0);
		raw_hdr(hdr, MS_REC_NOOP, 0, 0, lens[i], 1, 1, NULL);
		size_t avail = map - ((size_t)pg - MS_REC_HDR_SIZE);
		if (avail > span)
			avail = span;

		struct ms_rec_hdr h = sentinel_hdr;
		const char *err = NULL;
		CHECK_RET(ms_rec_decode(hdr, avail, &h, &err), MS_ECORRUPT,
			  "lens[%zu] = %u, all of it there", i, lens[i]);
		CHECK_RET(ms_rec_decode(hdr, MS_REC_HDR_SIZE, &h, &err),
			  MS_ECORRUPT, "lens[%zu] = %u, header only", i,
			  lens[i]);
		CHECK_RET(ms_rec_decode(hdr, MS_REC_HDR_SIZE + 100, &h, &err),
			  MS_ECORRUPT, "lens[%zu] = %u, 100 bytes", i,
			  lens[i]);
		assert_true(hdr_is_sentinel(&h));
		munmap(m, map);
	}

	/* the limit itself is a length, so a short input is truncated */
	uint8_t hdr[MS_REC_HDR_SIZE];
	raw_hdr(hdr, MS_REC_NOOP, 0, 0, MS_REC_MAX_PAYLOAD, 1, 1, NULL);
	struct ms_rec_hdr h;
	const char *err;
	CHECK_RET(decode_exact(hdr, sizeof(hdr), &h, &err), MS_ETRUNC,
		  "len = MS_REC_MAX_PAYLOAD, header only");
}

/* ---- corruption: every single-bit flip of a 40-byte record ---- */

/* What a flip of bit b of the NOOP record below must give (avail 40). */
static int flip_expect(unsigned b, uint32_t len)
{
	unsigned byte = b / 8;
	if (byte >= 4 && byte < 8) {
		uint32_t l = len ^ ((uint32_t)1 << (b - 32));
		if (l > MS_REC_MAX_PAYLOAD)
			return MS_ECORRUPT;	/* over the limit */
		if (l > len)
			return MS_ETRUNC;	/* claims more than is there */
		return MS_ECORRUPT;		/* shorter: sum mismatch */
	}
	/* type (NOOP ^ bit is unknown, or PURGE (17) or HOLE (18), whose
	   sums differ), flags (a bit other than BATCH is not allowed; BATCH
	   itself fails the sum), reserved, seq, timeline, sum, payload */
	return MS_ECORRUPT;
}

static void test_rec_bitflips(void **state)
{
	(void)state;
	static const struct {
		uint8_t type, flags;
	} flip_recs[] = {
		{ MS_REC_NOOP, 0 },
		{ MS_REC_BODY, MS_REC_F_LZ4 },
		{ MS_REC_PLACE, 0 },
	};
	for (size_t r = 0; r < MS_ARRAY_SIZE(flip_recs); r++) {
		size_t size;
		uint8_t *rec = make_rec(flip_recs[r].type, flip_recs[r].flags,
					8, 1000, 2, 77, &size);
		assert_int_equal(size, 40);
		struct ms_rec_hdr h;
		const char *err;
		CHECK_RET(decode_exact(rec, size, &h, &err), 0,
			  "flip_recs[%zu] unflipped", r);
		for (unsigned b = 0; b < 8 * 40; b++) {
			rec[b / 8] ^= (uint8_t)(1u << (b % 8));
			h = sentinel_hdr;
			int ret = decode_exact(rec, size, &h, &err);
			if (r == 0)
				CHECK_RET(ret, flip_expect(b, 8),
					  "flip_recs[%zu] bit %u (byte %u)", r,
					  b, b / 8);
			else if (ret != MS_ECORRUPT && ret != MS_ETRUNC)
				fail_msg("flip_recs[%zu] bit %u (byte %u): "
					 "not detected (%d)",
					 r, b, b / 8, ret);
			if (err == NULL)
				fail_msg("flip_recs[%zu] bit %u: no error text",
					 r, b);
			if (!hdr_is_sentinel(&h))
				fail_msg("flip_recs[%zu] bit %u: output "
					 "changed on failure",
					 r, b);
			/* with the bytes a longer length asks for, every
			   flip is a checksum failure or a header check */
			uint8_t big[40 + 4096];
			memcpy(big, rec, 40);
			memset(big + 40, 0, sizeof(big) - 40);
			ret = ms_rec_decode(big, sizeof(big), &h, &err);
			if (ret != MS_ECORRUPT &&
			    !(ret == MS_ETRUNC && b / 8 >= 4 && b / 8 < 8))
				fail_msg("flip_recs[%zu] bit %u with 4096 "
					 "more bytes: got %d",
					 r, b, ret);
			rec[b / 8] ^= (uint8_t)(1u << (b % 8));
		}
		free(rec);
	}
}

/* ---- truncation ---- */

static const struct trunc_case {
	uint8_t type;
	uint8_t flags;
	uint16_t reserved;
	uint32_t len;
	int hdr_valid; /* 0: the header fails ms_rec_check_hdr */
} trunc_cases[] = {
	/* 0 */ { MS_REC_NOOP, 0, 0, 0, 1 },
	/* 1 */ { MS_REC_PLACE, 0, 0, 1, 1 },
	/* 2 */ { MS_REC_BODY, MS_REC_F_SEALED, 0, 1000, 1 },
	/* 3 */ { 0, 0, 0, 1000, 0 },			   /* bad type */
	/* 4 */ { MS_REC_SEAL, MS_REC_F_LZ4, 0, 40, 0 },  /* bad flags */
	/* 5 */ { MS_REC_NOOP, 0, 2, 10, 0 },		   /* reserved */
	/* 6 */ { MS_REC_NOOP, 0, 0, 0xFFFFFFFF, 0 },	   /* length */
};

/*
 * Every prefix of a record is MS_ETRUNC while the 32 header bytes are
 * not all there (the header is not looked at then, valid or not).  From
 * 32 bytes on, a header that fails its checks is MS_ECORRUPT, and a good
 * header with part of its payload is MS_ETRUNC.
 */
static void test_rec_truncated(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(trunc_cases); i++) {
		const struct trunc_case *c = &trunc_cases[i];
		size_t plen = c->len <= 1000 ? c->len : 100;
		size_t size = MS_REC_HDR_SIZE + plen;
		uint8_t *rec = malloc(size);
		assert_non_null(rec);
		mst_fill(rec + MS_REC_HDR_SIZE, plen, i);
		raw_hdr(rec, c->type, c->flags, c->reserved, c->len, 3, 1,
			c->len <= 1000 ? rec + MS_REC_HDR_SIZE : NULL);

		struct ms_rec_hdr h;
		const char *err;
		if (c->len <= 1000)
			CHECK_RET(decode_exact(rec, size, &h, &err),
				  c->hdr_valid ? 0 : MS_ECORRUPT,
				  "trunc_cases[%zu] whole", i);
		for (size_t n = 0; n < size; n++) {
			int want = n < MS_REC_HDR_SIZE ? MS_ETRUNC
				   : c->hdr_valid	 ? MS_ETRUNC
							 : MS_ECORRUPT;
			h = sentinel_hdr;
			CHECK_RET(decode_exact(rec, n, &h, &err), want,
				  "trunc_cases[%zu] cut at %zu of %zu", i, n,
				  size);
			if (err == NULL)
				fail_msg("trunc_cases[%zu] cut at %zu: no "
					 "error text",
					 i, n);
			if (!hdr_is_sentinel(&h))
				fail_msg("trunc_cases[%zu] cut at %zu: output "
					 "changed",
					 i, n);
		}
		free(rec);
	}
}

/* ---- HOLE records ---- */

/*
 * A HOLE (rec.h): the header of a record compaction dropped.  Its sum is
 * XXH3_64bits_withSeed(header bytes 0..23, 24, 0); its len payload bytes
 * are not part of it (a hole in the file), so decode needs the 32 header
 * bytes only and never reads past them.
 */
static void test_rec_hole(void **state)
{
	(void)state;
	static const uint32_t lens[] = { 0, 1, 4096, 1000000,
					 MS_REC_MAX_PAYLOAD };
	for (size_t i = 0; i < MS_ARRAY_SIZE(lens); i++) {
		uint32_t len = lens[i];
		uint8_t hdr[MS_REC_HDR_SIZE], want[MS_REC_HDR_SIZE];
		uint8_t junk[64];
		struct ms_rec_hdr h;
		const char *err;

		/* encode: payload not read (NULL), nor part of the sum */
		ms_rec_encode_hdr(hdr, MS_REC_HOLE, MS_REC_F_BATCH, len,
				  0x0102030405060708ULL, 3, NULL);
		raw_hdr(want, MS_REC_HOLE, MS_REC_F_BATCH, 0, len,
			0x0102030405060708ULL, 3, NULL);
		if (memcmp(hdr, want, sizeof(hdr)) != 0)
			fail_msg("hole len %u: header differs from rec.h", len);
		assert_int_equal(ms_get64(hdr + 24),
				 XXH3_64bits_withSeed(hdr, 24, 0));
		memset(junk, 0x5A, sizeof(junk));
		ms_rec_encode_hdr(want, MS_REC_HOLE, MS_REC_F_BATCH, len,
				  0x0102030405060708ULL, 3, junk);
		assert_memory_equal(hdr, want, sizeof(hdr));

		/* decode with the header alone (an exact copy: ASan would
		   see a read past it) */
		h = sentinel_hdr;
		CHECK_RET(decode_exact(hdr, sizeof(hdr), &h, &err), 0,
			  "hole len %u, header only", len);
		if (h.type != MS_REC_HOLE || h.flags != MS_REC_F_BATCH ||
		    h.len != len || h.seq != 0x0102030405060708ULL ||
		    h.timeline != 3 || h.sum != ms_get64(hdr + 24))
			fail_msg("hole len %u: decoded fields differ", len);
		/* cut inside the header: truncated, as for any record */
		for (size_t n = 0; n < MS_REC_HDR_SIZE; n++)
			CHECK_RET(decode_exact(hdr, n, &h, &err), MS_ETRUNC,
				  "hole len %u, cut at %zu", len, n);
		/* part of the payload there, whatever it holds */
		if (len >= sizeof(junk)) {
			uint8_t rec[MS_REC_HDR_SIZE + sizeof(junk)];
			memcpy(rec, hdr, MS_REC_HDR_SIZE);
			memset(rec + MS_REC_HDR_SIZE, 0xFF, sizeof(junk));
			CHECK_RET(decode_exact(rec, sizeof(rec), &h, &err), 0,
				  "hole len %u, 64 bytes of junk after", len);
			assert_int_equal(h.len, len);
		}
		CHECK_RET(ms_rec_check_sum(hdr, NULL, 0, &err), 0,
			  "hole len %u, check_sum without payload", len);
		CHECK_RET(ms_rec_check_sum(hdr, junk, sizeof(junk), &err), 0,
			  "hole len %u, check_sum with junk", len);

		/* every byte of the header flipped: refused.  A flip of the
		   type to another known type may ask for the payload
		   (truncated); everything else is corrupt. */
		for (size_t b = 0; b < MS_REC_HDR_SIZE; b++) {
			uint8_t bad[MS_REC_HDR_SIZE];
			memcpy(bad, hdr, sizeof(bad));
			bad[b] ^= 0xFF;
			h = sentinel_hdr;
			err = NULL;
			int ret = decode_exact(bad, sizeof(bad), &h, &err);
			if (ret != MS_ECORRUPT &&
			    !(ret == MS_ETRUNC && b == 0))
				fail_msg("hole len %u, byte %zu flipped: %d",
					 len, b, ret);
			if (err == NULL || !hdr_is_sentinel(&h))
				fail_msg("hole len %u, byte %zu: no error "
					 "text or output changed",
					 len, b);
			/* and every single bit of it */
			for (unsigned bit = 0; bit < 8; bit++) {
				memcpy(bad, hdr, sizeof(bad));
				bad[b] ^= (uint8_t)(1u << bit);
				ret = decode_exact(bad, sizeof(bad), &h, &err);
				if (ret != MS_ECORRUPT &&
				    !(ret == MS_ETRUNC && b == 0))
					fail_msg("hole len %u, bit %u of byte "
						 "%zu: %d",
						 len, bit, b, ret);
			}
		}

		/* flags: BATCH or none, nothing else */
		for (unsigned f = 0; f < 256; f++) {
			uint8_t fh[MS_REC_HDR_SIZE];
			raw_hdr(fh, MS_REC_HOLE, (uint8_t)f, 0, len, 9, 1,
				NULL);
			err = NULL;
			int ret = decode_exact(fh, sizeof(fh), &h, &err);
			int ok = f == 0 || f == MS_REC_F_BATCH;
			if (ret != (ok ? 0 : MS_ECORRUPT))
				fail_msg("hole flags 0x%02x: %d", f, ret);
			if (!ok && strstr(err, "flags") == NULL)
				fail_msg("hole flags 0x%02x: error \"%s\"", f,
					 err);
		}
	}

	/* a record turned into a HOLE by its type byte alone keeps the sum
	   of a payload: refused; and the other way round */
	size_t size;
	uint8_t *rec = make_rec(MS_REC_NOOP, 0, 100, 7, 1, 42, &size);
	struct ms_rec_hdr h;
	const char *err;
	rec[0] = MS_REC_HOLE;
	CHECK_RET(decode_exact(rec, size, &h, &err), MS_ECORRUPT,
		  "NOOP with its type set to HOLE");
	CHECK_RET(decode_exact(rec, MS_REC_HDR_SIZE, &h, &err), MS_ECORRUPT,
		  "NOOP with its type set to HOLE, header only");
	ms_rec_encode_hdr(rec, MS_REC_HOLE, 0, 100, 7, 1, NULL);
	CHECK_RET(decode_exact(rec, size, &h, &err), 0, "the HOLE of it");
	rec[0] = MS_REC_NOOP;
	CHECK_RET(decode_exact(rec, size, &h, &err), MS_ECORRUPT,
		  "HOLE with its type set to NOOP");
	memset(rec + MS_REC_HDR_SIZE, 0, 100);
	CHECK_RET(decode_exact(rec, size, &h, &err), MS_ECORRUPT,
		  "HOLE with its type set to NOOP, zero payload");
	free(rec);
}

/* ---- type names ---- */

static const struct {
	unsigned type;
	const char *name;
} type_names[] = {
	/* 0 */ { 0, "unknown" },
	/* 1 */ { MS_REC_BODY, "body" },
	/* 2 */ { MS_REC_PLACE, "place" },
	/* 3 */ { MS_REC_FLAGS, "flags" },
	/* 4 */ { MS_REC_EXPUNGE, "expunge" },
	/* 5 */ { MS_REC_MBOX_CREATE, "mbox-create" },
	/* 6 */ { MS_REC_MBOX_RENAME, "mbox-rename" },
	/* 7 */ { MS_REC_MBOX_DELETE, "mbox-delete" },
	/* 8 */ { MS_REC_MBOX_SUBSCRIBE, "mbox-subscribe" },
	/* 9 */ { MS_REC_USER_CREATE, "user-create" },
	/* 10 */ { MS_REC_USER_DELETE, "user-delete" },
	/* 11 */ { MS_REC_QUOTA, "quota" },
	/* 12 */ { MS_REC_TIMELINE, "timeline" },
	/* 13 */ { MS_REC_RETIRE, "retire" },
	/* 14 */ { MS_REC_CHECKPOINT, "checkpoint" },
	/* 15 */ { MS_REC_SEAL, "seal" },
	/* 16 */ { MS_REC_NOOP, "noop" },
	/* 17 */ { MS_REC_PURGE, "purge" },
	/* 18 */ { MS_REC_HOLE, "hole" },
	/* 19 */ { MS_REC_MBOX_UPDATE, "mbox-update" },
	/* 20 */ { MS_REC_TYPE_MAX + 1, "unknown" },
	/* 21 */ { 20, "unknown" },
	/* 22 */ { 255, "unknown" },
	/* 23 */ { 256, "unknown" },
	/* 24 */ { 0xFFFFFFFFu, "unknown" },
};

static void test_rec_type_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(type_names); i++) {
		const char *got = ms_rec_type_name(type_names[i].type);
		if (got == NULL || strcmp(got, type_names[i].name) != 0)
			fail_msg("type_names[%zu]: type %u is \"%s\", want "
				 "\"%s\"",
				 i, type_names[i].type, got ? got : "(null)",
				 type_names[i].name);
	}
	/* every known type has its own name */
	for (unsigned a = 1; a <= MS_REC_TYPE_MAX; a++)
		for (unsigned b = a + 1; b <= MS_REC_TYPE_MAX; b++)
			if (strcmp(ms_rec_type_name(a), ms_rec_type_name(b)) ==
			    0)
				fail_msg("types %u and %u share a name", a, b);
}

/* ---- cursors ---- */

/*
 * A cursor program: one letter per get, run over the bytes in order.
 *   b u8, w u16, d u32, q u64, s str, 0-9 that many raw bytes.
 * fails is the index of the first get that must fail (-1: none); want is
 * what ms_rd_end must say.
 */
struct rd_case {
	const char *ops;
	const char *bytes;
	size_t len;
	int fails;
	int want;
};

#define B(s) s, sizeof(s) - 1

static const struct rd_case rd_cases[] = {
	/* valid */
	/* 0 */ { "", B(""), -1, 0 },
	/* 1 */ { "b", B("\x7f"), -1, 0 },
	/* 2 */ { "w", B("\x01\x02"), -1, 0 },
	/* 3 */ { "d", B("\x01\x02\x03\x04"), -1, 0 },
	/* 4 */ { "q", B("\x01\x02\x03\x04\x05\x06\x07\x08"), -1, 0 },
	/* 5 */ { "s", B("\x03\x00" "abc"), -1, 0 },
	/* 6 */ { "s", B("\x00\x00"), -1, 0 },
	/* 7 */ { "bwdq", B("\x01" "\x02\x00" "\x03\x00\x00\x00"
			    "\x04\x00\x00\x00\x00\x00\x00\x00"), -1, 0 },
	/* 8 */ { "ss", B("\x01\x00" "a" "\x02\x00" "bc"), -1, 0 },
	/* 9 */ { "3b", B("xyz\xff"), -1, 0 },
	/* 10 */ { "0", B(""), -1, 0 },
	/* invalid: too short */
	/* 11 */ { "b", B(""), 0, MS_ETRUNC },
	/* 12 */ { "w", B("\x01"), 0, MS_ETRUNC },
	/* 13 */ { "d", B("\x01\x02\x03"), 0, MS_ETRUNC },
	/* 14 */ { "q", B("\x01\x02\x03\x04\x05\x06\x07"), 0, MS_ETRUNC },
	/* 15 */ { "s", B("\x04\x00" "abc"), 0, MS_ETRUNC },
	/* 16 */ { "s", B("\x01"), 0, MS_ETRUNC },
	/* 17 */ { "s", B(""), 0, MS_ETRUNC },
	/* 18 */ { "s", B("\xff\xff" "abc"), 0, MS_ETRUNC },
	/* 19 */ { "4", B("abc"), 0, MS_ETRUNC },
	/* sticky: once failed, a get that would fit fails too */
	/* 20 */ { "wb", B("\x01"), 0, MS_ETRUNC },
	/* 21 */ { "qbbb", B("\x01\x02\x03"), 0, MS_ETRUNC },
	/* 22 */ { "bdbb", B("\x01\x02\x03\x04"), 1, MS_ETRUNC },
	/* 23 */ { "s0b", B("\x05\x00" "ab"), 0, MS_ETRUNC },
	/* invalid: NUL inside a string */
	/* 24 */ { "s", B("\x03\x00" "a\0c"), 0, MS_ECORRUPT },
	/* 25 */ { "s", B("\x01\x00" "\0"), 0, MS_ECORRUPT },
	/* 26 */ { "sb", B("\x02\x00" "a\0" "z"), 0, MS_ECORRUPT },
	/* 27 */ { "bsb", B("\x01" "\x01\x00" "\0" "z"), 1, MS_ECORRUPT },
	/* invalid: bytes left over */
	/* 28 */ { "", B("x"), -1, MS_ECORRUPT },
	/* 29 */ { "b", B("\x01\x02"), -1, MS_ECORRUPT },
	/* 30 */ { "w", B("\x01\x02\x03"), -1, MS_ECORRUPT },
	/* 31 */ { "s", B("\x01\x00" "ab"), -1, MS_ECORRUPT },
	/* 32 */ { "d", B("\x01\x02\x03\x04\x05\x06\x07\x08"), -1,
		   MS_ECORRUPT },
};

static void test_rd_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(rd_cases); i++) {
		const struct rd_case *c = &rd_cases[i];
		/* exactly len bytes, so ASan sees a read past the end */
		uint8_t *buf = malloc(c->len ? c->len : 1);
		assert_non_null(buf);
		memcpy(buf, c->bytes, c->len);
		struct ms_rd rd;
		ms_rd_init(&rd, buf, c->len);
		size_t at = 0; /* bytes taken so far, by our own count */

		for (int k = 0; c->ops[k] != '\0'; k++) {
			const uint8_t *p0 = rd.p;
			size_t left0 = rd.left;
			int ok;
			size_t took;
			uint64_t v = 0, want_v = 0;
			switch (c->ops[k]) {
			case 'b':
				v = ms_rd_u8(&rd);
				took = 1;
				break;
			case 'w':
				v = ms_rd_u16(&rd);
				took = 2;
				break;
			case 'd':
				v = ms_rd_u32(&rd);
				took = 4;
				break;
			case 'q':
				v = ms_rd_u64(&rd);
				took = 8;
				break;
			case 's': {
				uint16_t n = 0xBEEF;
				const uint8_t *s = ms_rd_str(&rd, &n);
				ok = s != NULL;
				took = ok ? 2 + (size_t)n : 0;
				if (ok && (s != buf + at + 2 ||
					   memchr(s, '\0', n) != NULL))
					fail_msg("rd_cases[%zu] op %d: bad "
						 "string",
						 i, k);
				goto check;
			}
			default: {
				size_t n = (size_t)(c->ops[k] - '0');
				const uint8_t *s = ms_rd_bytes(&rd, n);
				ok = s != NULL;
				took = n;
				if (ok && s != buf + at)
					fail_msg("rd_cases[%zu] op %d: bad "
						 "pointer",
						 i, k);
				goto check;
			}
			}
			/* integers: little-endian from our own count */
			ok = rd.err == 0;
			if (ok)
				for (size_t j = 0; j < took; j++)
					want_v |= (uint64_t)buf[at + j]
						  << (8 * j);
			if (v != want_v)
				fail_msg("rd_cases[%zu] op %d: value 0x%llx, "
					 "want 0x%llx",
					 i, k, (unsigned long long)v,
					 (unsigned long long)want_v);
check:
			if (ok != (c->fails < 0 || k < c->fails))
				fail_msg("rd_cases[%zu] op %d ('%c'): %s, "
					 "want %s",
					 i, k, c->ops[k],
					 ok ? "succeeded" : "failed",
					 ok ? "failure" : "success");
			if (ok) {
				at += took;
				if (rd.left != left0 - took)
					fail_msg("rd_cases[%zu] op %d: left "
						 "%zu, want %zu",
						 i, k, rd.left, left0 - took);
			} else if (k > c->fails &&
				   (rd.p != p0 || rd.left != left0))
				fail_msg("rd_cases[%zu] op %d: cursor moved "
					 "after its first failure",
					 i, k);
		}
		CHECK_RET(ms_rd_end(&rd), c->want, "rd_cases[%zu] end", i);
		/* ms_rd_end does not change the cursor: same answer again */
		CHECK_RET(ms_rd_end(&rd), c->want, "rd_cases[%zu] end again",
			  i);
		free(buf);
	}
}

/* Writers and readers agree, byte layout included. */
static void test_wr_rd_roundtrip(void **state)
{
	(void)state;
	struct ms_buf b;
	ms_buf_init(&b, 0);
	char big[65535];
	memset(big, 'm', sizeof(big));

	assert_int_equal(ms_wr_u8(&b, 0xAB), 0);
	assert_int_equal(ms_wr_u16(&b, 0x0102), 0);
	assert_int_equal(ms_wr_u32(&b, 0x01020304), 0);
	assert_int_equal(ms_wr_u64(&b, 0x0102030405060708ULL), 0);
	assert_int_equal(ms_wr_str(&b, "INBOX", 5), 0);
	assert_int_equal(ms_wr_str(&b, "", 0), 0);
	assert_int_equal(ms_wr_bytes(&b, "\0\1\2", 3), 0);
	assert_int_equal(ms_wr_bytes(&b, NULL, 0), 0);
	assert_int_equal(ms_wr_str(&b, big, sizeof(big)), 0);
	assert_int_equal(ms_wr_u64(&b, UINT64_MAX), 0);

	static const uint8_t head[] = {
		0xAB, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01, 0x08, 0x07,
		0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x05, 0x00, 'I',
		'N',  'B',  'O',  'X',	0x00, 0x00, 0x00, 0x01, 0x02,
		0xFF, 0xFF,
	};
	assert_int_equal(b.len, sizeof(head) + sizeof(big) + 8);
	assert_memory_equal(b.data, head, sizeof(head));

	struct ms_rd rd;
	uint16_t n;
	const uint8_t *s;
	ms_rd_init(&rd, b.data, b.len);
	assert_int_equal(ms_rd_u8(&rd), 0xAB);
	assert_int_equal(ms_rd_u16(&rd), 0x0102);
	assert_int_equal(ms_rd_u32(&rd), 0x01020304);
	assert_true(ms_rd_u64(&rd) == 0x0102030405060708ULL);
	s = ms_rd_str(&rd, &n);
	assert_non_null(s);
	assert_int_equal(n, 5);
	assert_memory_equal(s, "INBOX", 5);
	s = ms_rd_str(&rd, &n);
	assert_non_null(s);
	assert_int_equal(n, 0);
	s = ms_rd_bytes(&rd, 3);
	assert_non_null(s);
	assert_memory_equal(s, "\0\1\2", 3);
	s = ms_rd_str(&rd, &n);
	assert_non_null(s);
	assert_int_equal(n, 65535);
	assert_memory_equal(s, big, sizeof(big));
	assert_true(ms_rd_u64(&rd) == UINT64_MAX);
	assert_int_equal(ms_rd_end(&rd), 0);
	/* past the end: fails, returns 0, and sticks */
	assert_int_equal(ms_rd_u8(&rd), 0);
	assert_int_equal(ms_rd_end(&rd), MS_ETRUNC);
	assert_null(ms_rd_bytes(&rd, 0));
	assert_int_equal(ms_rd_end(&rd), MS_ETRUNC);
	ms_buf_free(&b);
}

/* ms_wr_str refuses what ms_rd_str could not read back. */
static const struct wr_str_case {
	size_t len;
	size_t nul_at; /* SIZE_MAX: no NUL */
	int want;
} wr_str_cases[] = {
	/* 0 */ { 0, SIZE_MAX, 0 },
	/* 1 */ { 1, SIZE_MAX, 0 },
	/* 2 */ { 65535, SIZE_MAX, 0 },
	/* 3 */ { 65536, SIZE_MAX, MS_ETOOBIG },
	/* 4 */ { 100000, SIZE_MAX, MS_ETOOBIG },
	/* 5 */ { 1, 0, MS_ECORRUPT },
	/* 6 */ { 10, 9, MS_ECORRUPT },
	/* 7 */ { 65535, 30000, MS_ECORRUPT },
	/* 8 */ { 65536, 0, MS_ETOOBIG }, /* too big wins */
};

static void test_wr_str(void **state)
{
	(void)state;
	char *s = malloc(100000);
	assert_non_null(s);
	for (size_t i = 0; i < MS_ARRAY_SIZE(wr_str_cases); i++) {
		const struct wr_str_case *c = &wr_str_cases[i];
		memset(s, 'q', c->len);
		if (c->nul_at != SIZE_MAX)
			s[c->nul_at] = '\0';
		struct ms_buf b;
		ms_buf_init(&b, 0);
		assert_int_equal(ms_wr_u8(&b, 1), 0);
		CHECK_RET(ms_wr_str(&b, s, c->len), c->want,
			  "wr_str_cases[%zu]", i);
		if (c->want < 0) {
			if (b.len != 1)
				fail_msg("wr_str_cases[%zu]: buffer changed on "
					 "failure",
					 i);
		} else {
			struct ms_rd rd;
			uint16_t n;
			ms_rd_init(&rd, b.data, b.len);
			assert_int_equal(ms_rd_u8(&rd), 1);
			const uint8_t *p = ms_rd_str(&rd, &n);
			if (p == NULL || n != c->len ||
			    memcmp(p, s, c->len) != 0 || ms_rd_end(&rd) != 0)
				fail_msg("wr_str_cases[%zu]: no round trip", i);
		}
		ms_buf_free(&b);
	}
	free(s);
}

/* Writers on a full buffer: MS_ETOOBIG, buffer as it was. */
static void test_wr_bounded(void **state)
{
	(void)state;
	struct ms_buf b;
	ms_buf_init(&b, 8);
	assert_int_equal(ms_wr_u32(&b, 1), 0);
	assert_int_equal(ms_wr_u16(&b, 2), 0);
	assert_int_equal(ms_wr_u8(&b, 3), 0);
	assert_int_equal(ms_wr_u16(&b, 4), MS_ETOOBIG);
	assert_int_equal(ms_wr_u32(&b, 4), MS_ETOOBIG);
	assert_int_equal(ms_wr_u64(&b, 4), MS_ETOOBIG);
	assert_int_equal(ms_wr_bytes(&b, "ab", 2), MS_ETOOBIG);
	assert_int_equal(b.len, 7);
	assert_int_equal(ms_wr_u8(&b, 5), 0);
	assert_int_equal(ms_wr_u8(&b, 6), MS_ETOOBIG);
	assert_int_equal(b.len, 8);
	static const uint8_t want[] = { 1, 0, 0, 0, 2, 0, 3, 5 };
	assert_memory_equal(b.data, want, sizeof(want));
	ms_buf_free(&b);
}

int main(void)
{
	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rec_valid_roundtrip),
		cmocka_unit_test(test_rec_max_payload),
		cmocka_unit_test(test_rec_invalid_hdr),
		cmocka_unit_test(test_rec_type_flags_matrix),
		cmocka_unit_test(test_rec_bad_len_untouched),
		cmocka_unit_test(test_rec_bitflips),
		cmocka_unit_test(test_rec_truncated),
		cmocka_unit_test(test_rec_hole),
		cmocka_unit_test(test_rec_type_names),
		cmocka_unit_test(test_rd_cases),
		cmocka_unit_test(test_wr_rd_roundtrip),
		cmocka_unit_test(test_wr_str),
		cmocka_unit_test(test_wr_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
