/*
 * fuzz_rec.c - libFuzzer target for the pure record and segment codecs
 * (store/rec.c, store/seg.c), the input taken as a segment file image in
 * memory:
 *
 *   - ms_seg_hdr_decode() on its start;
 *   - ms_rec_decode() record after record from offset 64 (from 0 if the
 *     input is shorter), up to the first error; a SEAL record's payload
 *     through ms_seg_seal_decode(); every payload through the ms_rd_*
 *     cursor, in a pattern of gets chosen by the payload bytes (not a
 *     HOLE's: its payload is not part of it and need not be there);
 *   - ms_meta_decode() on the first 80 bytes (or all, if fewer).
 *
 * Mutations seldom keep an XXH3 sum right, so the segment header and the
 * meta file are also decoded from a copy with the sum recomputed, and a
 * record whose only fault is its sum still has its payload run through
 * the payload codecs (then the walk stops).
 *
 * Besides not crashing, what decodes must be what was there: a decoded
 * header, seal or meta file encodes back to the same bytes, and the cursor
 * keeps its promises (bounds, sticky errors, ms_rd_end).  A broken promise
 * aborts.  Seeds: tests/fuzz/corpus/rec/.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Istore \
 *         store/buf.c store/msg.c store/rec.c store/seg.c \
 *         tests/fuzz/fuzz_rec.c -lxxhash -o fuzz_rec
 *   ./fuzz_rec -max_total_time=60 tests/fuzz/corpus/rec
 */
#include <stdio.h>
#include <stdlib.h>

#include <xxhash.h>

#include "fuzz.h"
#include "seg.h"

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_rec: %s:%d: %s\n", __FILE__, \
				__LINE__, #cond);                          \
			abort();                                           \
		}                                                          \
	} while (0)

/* Gets on one cursor, one per op byte; checks each against the rules. */
static void exercise_cursor(const uint8_t *p, size_t len)
{
	struct ms_rd rd;
	/* the op stream is the payload itself, read from its end backwards
	   so that ops and data differ; at most 2 * len + 4 gets */
	size_t nops = 2 * len + 4;

	ms_rd_init(&rd, p, len);
	for (size_t i = 0; i < nops; i++) {
		uint8_t op = len > 0 ? p[len - 1 - (i % len)] : (uint8_t)i;
		const uint8_t *p0 = rd.p;
		size_t left0 = rd.left;
		int err0 = rd.err;
		size_t want = 0; /* bytes the get takes if it succeeds */
		int ok;

		switch (op % 6) {
		case 0:
		case 1:
		case 2:
		case 3: {
			uint64_t v, le = 0;
			want = (size_t)1 << (op % 6);
			if (want == 1)
				v = ms_rd_u8(&rd);
			else if (want == 2)
				v = ms_rd_u16(&rd);
			else if (want == 4)
				v = ms_rd_u32(&rd);
			else
				v = ms_rd_u64(&rd);
			ok = rd.err == 0;
			if (ok)
				for (size_t k = 0; k < want; k++)
					le |= (uint64_t)p0[k] << (8 * k);
			CHECK(v == le); /* little-endian, or 0 on failure */
			break;
		}
		case 4: {
			uint16_t n = 0;
			const uint8_t *s = ms_rd_str(&rd, &n);
			ok = s != NULL;
			if (ok) {
				want = 2 + (size_t)n;
				CHECK(s == p0 + 2);
				CHECK(memchr(s, '\0', n) == NULL);
			}
			break;
		}
		default: {
			size_t n = op >> 3;
			const uint8_t *s = ms_rd_bytes(&rd, n);
			ok = s != NULL;
			want = n;
			if (ok)
				CHECK(s == p0);
			break;
		}
		}
		if (err0 != 0) {
			/* sticky: nothing moves, the error stays */
			CHECK(!ok);
			CHECK(rd.err == err0 && rd.p == p0 && rd.left == left0);
		} else if (ok) {
			CHECK(rd.err == 0);
			CHECK(want <= left0);
			CHECK(rd.p == p0 + want && rd.left == left0 - want);
		} else {
			CHECK(rd.err == MS_ETRUNC || rd.err == MS_ECORRUPT);
			/* integers and raw bytes fail only when they do not
			   fit; only a string can be corrupt (a NUL in it) */
			if (op % 6 != 4)
				CHECK(rd.err == MS_ETRUNC && want > left0);
		}
		CHECK(rd.p + rd.left == p + len);
		if (rd.err != 0 && i + 1 < nops && (op & 0x40) == 0)
			break; /* usually stop at the error, sometimes go on */
	}
	int end = ms_rd_end(&rd);
	if (rd.err != 0)
		CHECK(end == rd.err);
	else
		CHECK(end == (rd.left == 0 ? 0 : MS_ECORRUPT));
}

/*
 * The segment header as it is, then with its checksum made right, so that
 * mutations reach the version and size checks behind the checksum.
 */
static void check_seg_hdr(const uint8_t *data, size_t size)
{
	struct ms_seg_hdr h;
	const char *error = NULL;
	int ret = ms_seg_hdr_decode(data, size, &h, &error);

	if (ret < 0) {
		CHECK(error != NULL);
		CHECK(ret == MS_ETRUNC || ret == MS_EMAGIC ||
		      ret == MS_EVERSION || ret == MS_ECORRUPT);
		CHECK((ret == MS_ETRUNC) == (size < MS_SEG_HDR_SIZE));
	} else {
		uint8_t again[MS_SEG_HDR_SIZE];
		ms_seg_hdr_encode(&h, again);
		CHECK(memcmp(again, data, MS_SEG_HDR_SIZE) == 0);
	}
	if (size < MS_SEG_HDR_SIZE)
		return;

	uint8_t fixed[MS_SEG_HDR_SIZE];
	memcpy(fixed, data, sizeof(fixed));
	ms_put64(fixed + 56, XXH3_64bits(fixed, 56));
	error = NULL;
	ret = ms_seg_hdr_decode(fixed, sizeof(fixed), &h, &error);
	if (ret < 0) {
		CHECK(error != NULL);
		CHECK(ret == MS_EMAGIC || ret == MS_EVERSION ||
		      ret == MS_ECORRUPT);
		if (ret == MS_ECORRUPT) /* only the size is left to fail */
			CHECK(ms_get32(fixed + 12) != MS_SEG_HDR_SIZE);
	} else {
		uint8_t again[MS_SEG_HDR_SIZE];
		ms_seg_hdr_encode(&h, again);
		CHECK(memcmp(again, fixed, MS_SEG_HDR_SIZE) == 0);
	}
}

static void check_seal(const uint8_t *payload, size_t len)
{
	struct ms_seg_seal s;
	const char *error = NULL;

	if (ms_seg_seal_decode(payload, len, &s, &error) < 0) {
		CHECK(error != NULL);
		return;
	}
	uint8_t again[MS_SEG_SEAL_PAYLOAD];
	CHECK(len == MS_SEG_SEAL_PAYLOAD);
	ms_seg_seal_encode(&s, again);
	CHECK(memcmp(again, payload, MS_SEG_SEAL_PAYLOAD) == 0);
	/* seg.h: count records (32 bytes each at least) after the header,
	   first..last consecutive, all before the seal */
	CHECK(s.first_seq != 0);
	CHECK(s.last_seq + 1 >= s.first_seq);
	CHECK(s.last_seq + 1 - s.first_seq == s.count);
	CHECK(s.seal_off >= MS_SEG_HDR_SIZE);
	CHECK((s.seal_off - MS_SEG_HDR_SIZE) / MS_REC_HDR_SIZE >= s.count);
}

/* The payload codecs: the seal for a SEAL record, the cursor for all. */
static void check_payload(uint8_t type, const uint8_t *payload, size_t len)
{
	if (type == MS_REC_SEAL)
		check_seal(payload, len);
	exercise_cursor(payload, len);
}

static void walk_records(const uint8_t *data, size_t size)
{
	size_t off = size >= MS_SEG_HDR_SIZE ? MS_SEG_HDR_SIZE : 0;

	while (off < size) {
		struct ms_rec_hdr h;
		const char *error = NULL;
		const uint8_t *rec = data + off;
		const uint8_t *payload = rec + MS_REC_HDR_SIZE;
		size_t avail = size - off;
		int ret = ms_rec_decode(rec, avail, &h, &error);

		if (ret < 0) {
			CHECK(error != NULL);
			CHECK(ret == MS_ETRUNC || ret == MS_ECORRUPT);
			if (avail < MS_REC_HDR_SIZE) {
				CHECK(ret == MS_ETRUNC);
				return;
			}
			/* the header's own checks say the same as decode */
			struct ms_rec_hdr h2;
			error = NULL;
			int hret = ms_rec_check_hdr(rec, &h2, &error);
			if (hret < 0) {
				CHECK(hret == MS_ECORRUPT && ret == hret);
				CHECK(error != NULL);
				return;
			}
			if (h2.type == MS_REC_HOLE) {
				/* only its header counts: the sum failed */
				CHECK(ret == MS_ECORRUPT);
				CHECK(ms_rec_check_sum(rec, NULL, 0, &error) ==
				      MS_ECORRUPT);
				return;
			}
			if (h2.len > avail - MS_REC_HDR_SIZE) {
				CHECK(ret == MS_ETRUNC);
				return;
			}
			/* only the sum is wrong: give the payload codecs the
			   bytes all the same (mutations rarely keep a sum) */
			CHECK(ret == MS_ECORRUPT);
			CHECK(ms_rec_check_sum(rec, payload, h2.len, &error) ==
			      MS_ECORRUPT);
			check_payload(h2.type, payload, h2.len);
			return;
		}
		/* valid: the header is exactly what encode makes of it */
		CHECK(h.len <= MS_REC_MAX_PAYLOAD);
		if (h.type == MS_REC_HOLE) {
			/* a header alone; the payload may be cut, or past
			   the end of the input */
			uint8_t again[MS_REC_HDR_SIZE];
			ms_rec_encode_hdr(again, h.type, h.flags, h.len, h.seq,
					  h.timeline, NULL);
			CHECK(memcmp(again, rec, MS_REC_HDR_SIZE) == 0);
			CHECK(h.flags == 0 || h.flags == MS_REC_F_BATCH);
			if (h.len > avail - MS_REC_HDR_SIZE)
				return;
			off += MS_REC_HDR_SIZE + (size_t)h.len;
			continue;
		}
		CHECK(h.len <= avail - MS_REC_HDR_SIZE);
		CHECK(h.type >= 1 && h.type <= MS_REC_TYPE_MAX);
		CHECK(strcmp(ms_rec_type_name(h.type), "unknown") != 0);
		uint8_t again[MS_REC_HDR_SIZE];
		ms_rec_encode_hdr(again, h.type, h.flags, h.len, h.seq,
				  h.timeline, payload);
		CHECK(memcmp(again, rec, MS_REC_HDR_SIZE) == 0);

		check_payload(h.type, payload, h.len);
		off += MS_REC_HDR_SIZE + (size_t)h.len;
	}
}

/* The meta file as it is, then with its checksum made right. */
static void check_meta(const uint8_t *data, size_t size)
{
	size_t len = size < MS_META_SIZE ? size : MS_META_SIZE;
	uint8_t fixed[MS_META_SIZE];

	for (int pass = 0; pass < 2; pass++) {
		const uint8_t *buf = data;
		struct ms_meta m;
		const char *error = NULL;

		if (pass == 1) {
			if (len != MS_META_SIZE)
				return;
			memcpy(fixed, data, MS_META_SIZE);
			ms_put64(fixed + 72, XXH3_64bits(fixed, 72));
			buf = fixed;
		}
		int ret = ms_meta_decode(buf, len, &m, &error);
		if (ret < 0) {
			CHECK(error != NULL);
			CHECK(ret == MS_ECORRUPT || ret == MS_EMAGIC ||
			      ret == MS_EVERSION);
			/* with the sum right, only the reserved field (bytes
			   12..15, must be 0) is left to be corrupt */
			if (pass == 1 && ret == MS_ECORRUPT)
				CHECK(ms_get32(buf + 12) != 0);
			continue;
		}
		CHECK(len == MS_META_SIZE);
		uint8_t again[MS_META_SIZE];
		ms_meta_encode(&m, again);
		/* bytes 12..15 are reserved: the decoder wants 0 there
		   and encode writes 0 */
		CHECK(memcmp(again, buf, 12) == 0);
		CHECK(memcmp(again + 16, buf + 16, 72 - 16) == 0);
		if (ms_get32(buf + 12) == 0)
			CHECK(memcmp(again + 72, buf + 72, 8) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_seg_hdr(data, size);
	walk_records(data, size);
	check_meta(data, size);
	return 0;
}
