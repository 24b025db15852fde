/*
 * test_seg.c - segment files (store/seg.c): names, the 64-byte segment
 * header, the seal payload, the meta file, and the windowed segment reader
 * over a segment built here byte by byte (a record over 1 MiB makes the
 * window grow), and over a compacted segment whose HOLE records have
 * sparse, punched or junk payloads.  Valid and invalid cases are tables
 * named by their index.
 * Also ms_pread_full past the end and ms_pos_cmp ordering.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include "msg.h"
#include "mstest.h"
#include "mstest_cmocka.h"
#include "seg.h"


/* ---- names ---- */

static const struct {
	uint64_t seg;
	const char *name;
} good_names[] = {
	/* 0 */ { 0, "000000000000.seg" },
	/* 1 */ { 1, "000000000001.seg" },
	/* 2 */ { 42, "000000000042.seg" },
	/* 3 */ { 123456789012ULL, "123456789012.seg" },
	/* 4 */ { MS_SEG_MAX_NUMBER, "999999999999.seg" },
};

static const char *const bad_names[] = {
	/* 0 */ "",
	/* 1 */ "42.seg",
	/* 2 */ "00000000042.seg",	 /* 11 digits */
	/* 3 */ "0000000000042.seg",	 /* 13 digits */
	/* 4 */ "00000000004a.seg",
	/* 5 */ "a00000000042.seg",
	/* 6 */ "+00000000042.seg",
	/* 7 */ "-00000000042.seg",
	/* 8 */ " 00000000042.seg",
	/* 9 */ "0000000 0042.seg",
	/* 10 */ "000000000042.se",
	/* 11 */ "000000000042.sega",
	/* 12 */ "000000000042.SEG",
	/* 13 */ "000000000042.log",
	/* 14 */ "000000000042seg.",
	/* 15 */ "000000000042",
	/* 16 */ "000000000042.seg.tmp",
	/* 17 */ "000000000042.seg/",
	/* 18 */ "000000000042 seg",
	/* 19 */ "mstore.meta",
	/* 20 */ ".seg",
	/* 21 */ "000000000042.",
};

static void test_seg_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(good_names); i++) {
		char out[MS_SEG_NAME_LEN + 1 + 8];
		memset(out, 'X', sizeof(out));
		ms_seg_name(good_names[i].seg, out);
		if (strcmp(out, good_names[i].name) != 0)
			fail_msg("good_names[%zu]: \"%s\", want \"%s\"", i,
				 out, good_names[i].name);
		if (out[MS_SEG_NAME_LEN + 1] != 'X')
			fail_msg("good_names[%zu]: wrote past the name", i);
		uint64_t seg = 0xDEAD;
		CHECK_RET(ms_seg_parse_name(good_names[i].name, &seg), 0,
			  "good_names[%zu]", i);
		if (seg != good_names[i].seg)
			fail_msg("good_names[%zu]: parsed %llu", i,
				 (unsigned long long)seg);
	}
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_names); i++) {
		/* a copy of exactly its size, for ASan */
		size_t n = strlen(bad_names[i]) + 1;
		char *name = malloc(n);
		assert_non_null(name);
		memcpy(name, bad_names[i], n);
		uint64_t seg = 0xDEAD;
		CHECK_RET(ms_seg_parse_name(name, &seg), -1,
			  "bad_names[%zu] \"%s\"", i, bad_names[i]);
		if (seg != 0xDEAD)
			fail_msg("bad_names[%zu]: output changed", i);
		free(name);
	}
}

/* ---- segment header ---- */

static const struct ms_seg_hdr good_hdrs[] = {
	/* 0 */ { { 0 }, 0, 0, 0 },
	/* 1 */ { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 },
		  1, 1, 1 },
	/* 2 */ { { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF },
		  MS_SEG_MAX_NUMBER, UINT64_MAX, UINT64_MAX },
	/* 3 */ { { 'M', 'S', 'T', 'O', 'R', 'S', 'E', 'G' },
		  0x0102030405060708ULL, 0x1112131415161718ULL,
		  0x2122232425262728ULL },
};

static int seg_hdr_eq(const struct ms_seg_hdr *a, const struct ms_seg_hdr *b)
{
	return memcmp(a->store_id, b->store_id, MS_STORE_ID_SIZE) == 0 &&
	       a->seg == b->seg && a->timeline == b->timeline &&
	       a->first_seq == b->first_seq;
}

static const struct ms_seg_hdr hdr_sentinel = {
	{ 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
	  0xEE, 0xEE, 0xEE, 0xEE, 0xEE },
	0xEE,
	0xEE,
	0xEE
};

static void test_seg_hdr_roundtrip(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(good_hdrs); i++) {
		const struct ms_seg_hdr *h = &good_hdrs[i];
		uint8_t buf[MS_SEG_HDR_SIZE + 16];
		memset(buf, 0xA5, sizeof(buf));
		ms_seg_hdr_encode(h, buf);
		/* the layout of seg.h, field by field */
		if (memcmp(buf, "MSTORSEG", 8) != 0 ||
		    ms_get32(buf + 8) != MS_SEG_VERSION ||
		    ms_get32(buf + 12) != MS_SEG_HDR_SIZE ||
		    memcmp(buf + 16, h->store_id, MS_STORE_ID_SIZE) != 0 ||
		    ms_get64(buf + 32) != h->seg ||
		    ms_get64(buf + 40) != h->timeline ||
		    ms_get64(buf + 48) != h->first_seq ||
		    ms_get64(buf + 56) != XXH3_64bits(buf, 56))
			fail_msg("good_hdrs[%zu]: layout differs from seg.h", i);
		if (buf[MS_SEG_HDR_SIZE] != 0xA5)
			fail_msg("good_hdrs[%zu]: encode wrote past 64", i);

		/* exactly 64 bytes, and 64 followed by records */
		for (size_t len = MS_SEG_HDR_SIZE; len <= sizeof(buf);
		     len += 16) {
			uint8_t *copy = malloc(len);
			assert_non_null(copy);
			memcpy(copy, buf, len);
			struct ms_seg_hdr got = hdr_sentinel;
			const char *err = NULL;
			CHECK_RET(ms_seg_hdr_decode(copy, len, &got, &err), 0,
				  "good_hdrs[%zu] len %zu", i, len);
			if (!seg_hdr_eq(&got, h))
				fail_msg("good_hdrs[%zu]: fields differ", i);
			free(copy);
		}
	}
}

/* Rewrite the header checksum after changing bytes 0..55. */
static void reseal_hdr(uint8_t buf[MS_SEG_HDR_SIZE])
{
	ms_put64(buf + 56, XXH3_64bits(buf, 56));
}

enum hdr_edit {
	H_NONE,
	H_XOR,	      /* buf[at] ^= val, checksum left as it is */
	H_XOR_RESEAL, /* buf[at] ^= val, checksum recomputed */
	H_PUT32_RESEAL,
};

static const struct bad_hdr {
	enum hdr_edit edit;
	size_t at;
	uint32_t val;
	int want;
} bad_seg_hdrs[] = {
	/* bad magic, whatever else: MS_EMAGIC */
	/* 0 */ { H_XOR, 0, 0x01, MS_EMAGIC },
	/* 1 */ { H_XOR, 7, 0x20, MS_EMAGIC },	  /* "MSTORSEg" */
	/* 2 */ { H_XOR_RESEAL, 3, 0xFF, MS_EMAGIC },
	/* 3 */ { H_PUT32_RESEAL, 4, 0x4154454D, MS_EMAGIC }, /* "MSTOMETA" */
	/* checksum: any byte from 8 on, before version and size are read */
	/* 4 */ { H_XOR, 8, 0x01, MS_ECORRUPT },  /* version, not resealed */
	/* 5 */ { H_XOR, 12, 0x01, MS_ECORRUPT }, /* size, not resealed */
	/* 6 */ { H_XOR, 16, 0x80, MS_ECORRUPT }, /* store id */
	/* 7 */ { H_XOR, 32, 0x01, MS_ECORRUPT }, /* seg */
	/* 8 */ { H_XOR, 47, 0x01, MS_ECORRUPT }, /* timeline */
	/* 9 */ { H_XOR, 55, 0x80, MS_ECORRUPT }, /* first seq */
	/* 10 */ { H_XOR, 56, 0x01, MS_ECORRUPT }, /* the sum itself */
	/* 11 */ { H_XOR, 63, 0x80, MS_ECORRUPT },
	/* version, with a checksum that matches */
	/* 12 */ { H_PUT32_RESEAL, 8, 0, MS_EVERSION },
	/* 13 */ { H_PUT32_RESEAL, 8, MS_SEG_VERSION + 1, MS_EVERSION },
	/* 14 */ { H_PUT32_RESEAL, 8, 0xFFFFFFFF, MS_EVERSION },
	/* 15 */ { H_PUT32_RESEAL, 8, 0x01000000, MS_EVERSION }, /* BE 1 */
	/* header size field, with a checksum that matches */
	/* 16 */ { H_PUT32_RESEAL, 12, 0, MS_ECORRUPT },
	/* 17 */ { H_PUT32_RESEAL, 12, MS_SEG_HDR_SIZE - 1, MS_ECORRUPT },
	/* 18 */ { H_PUT32_RESEAL, 12, MS_SEG_HDR_SIZE + 1, MS_ECORRUPT },
	/* 19 */ { H_PUT32_RESEAL, 12, 128, MS_ECORRUPT },
	/* 20 */ { H_PUT32_RESEAL, 12, 0xFFFFFFFF, MS_ECORRUPT },
};

static void test_seg_hdr_invalid(void **state)
{
	(void)state;
	uint8_t good[MS_SEG_HDR_SIZE];
	ms_seg_hdr_encode(&good_hdrs[1], good);

	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_seg_hdrs); i++) {
		const struct bad_hdr *c = &bad_seg_hdrs[i];
		uint8_t *buf = malloc(MS_SEG_HDR_SIZE);
		assert_non_null(buf);
		memcpy(buf, good, MS_SEG_HDR_SIZE);
		switch (c->edit) {
		case H_NONE:
			break;
		case H_XOR:
			buf[c->at] ^= (uint8_t)c->val;
			break;
		case H_XOR_RESEAL:
			buf[c->at] ^= (uint8_t)c->val;
			reseal_hdr(buf);
			break;
		case H_PUT32_RESEAL:
			ms_put32(buf + c->at, c->val);
			reseal_hdr(buf);
			break;
		}
		struct ms_seg_hdr got = hdr_sentinel;
		const char *err = NULL;
		CHECK_RET(ms_seg_hdr_decode(buf, MS_SEG_HDR_SIZE, &got, &err),
			  c->want, "bad_seg_hdrs[%zu]", i);
		if (err == NULL)
			fail_msg("bad_seg_hdrs[%zu]: no error text", i);
		if (!seg_hdr_eq(&got, &hdr_sentinel))
			fail_msg("bad_seg_hdrs[%zu]: output changed", i);
		free(buf);
	}

	/* every byte: magic bytes give EMAGIC, every other byte the sum */
	for (size_t at = 0; at < MS_SEG_HDR_SIZE; at++) {
		uint8_t buf[MS_SEG_HDR_SIZE];
		memcpy(buf, good, sizeof(buf));
		buf[at] ^= 0x10;
		struct ms_seg_hdr got;
		const char *err;
		CHECK_RET(ms_seg_hdr_decode(buf, sizeof(buf), &got, &err),
			  at < 8 ? MS_EMAGIC : MS_ECORRUPT,
			  "header byte %zu flipped", at);
	}

	/* version and size both wrong: the version is reported */
	uint8_t buf[MS_SEG_HDR_SIZE];
	memcpy(buf, good, sizeof(buf));
	ms_put32(buf + 8, 7);
	ms_put32(buf + 12, 7);
	reseal_hdr(buf);
	struct ms_seg_hdr got;
	const char *err;
	CHECK_RET(ms_seg_hdr_decode(buf, sizeof(buf), &got, &err), MS_EVERSION,
		  "version and size wrong");
}

/* Every prefix of a header is MS_ETRUNC, even one with a bad magic. */
static void test_seg_hdr_truncated(void **state)
{
	(void)state;
	uint8_t good[MS_SEG_HDR_SIZE], bad[MS_SEG_HDR_SIZE];
	ms_seg_hdr_encode(&good_hdrs[3], good);
	memset(bad, 'Z', sizeof(bad));
	for (size_t len = 0; len < MS_SEG_HDR_SIZE; len++) {
		for (int k = 0; k < 2; k++) {
			uint8_t *copy = malloc(len ? len : 1);
			assert_non_null(copy);
			memcpy(copy, k ? bad : good, len);
			struct ms_seg_hdr got = hdr_sentinel;
			const char *err = NULL;
			CHECK_RET(ms_seg_hdr_decode(copy, len, &got, &err),
				  MS_ETRUNC, "%s header cut at %zu",
				  k ? "bad" : "good", len);
			if (err == NULL || !seg_hdr_eq(&got, &hdr_sentinel))
				fail_msg("cut at %zu: no error text or output "
					 "changed",
					 len);
			free(copy);
		}
	}
}

/* ---- seal ---- */

static int seal_eq(const struct ms_seg_seal *a, const struct ms_seg_seal *b)
{
	return a->count == b->count && a->first_seq == b->first_seq &&
	       a->last_seq == b->last_seq && a->seal_off == b->seal_off &&
	       a->sum == b->sum;
}

#define R MS_REC_HDR_SIZE
#define H MS_SEG_HDR_SIZE

static const struct ms_seg_seal good_seals[] = {
	/* count, first, last, seal_off, sum */
	/* 0 */ { 0, 1, 0, H, 0 },			/* empty segment */
	/* 1 */ { 0, 1000, 999, H + 5000, 1 },	/* empty, odd offset */
	/* 2 */ { 1, 1, 1, H + R, 0x1234 },	/* one empty record */
	/* 3 */ { 3, 10, 12, H + 3 * R, UINT64_MAX },
	/* 4 */ { 3, 10, 12, H + 3 * R + 12345, 7 },
	/* 5 */ { 1, UINT64_MAX - 1, UINT64_MAX - 1, H + R, 9 },
	/* 6 */ { 1000000, 5, 1000004, (uint64_t)1 << 40, 3 },
	/* 7 */ { 0, UINT64_MAX, UINT64_MAX - 1, UINT64_MAX, 0 },
};

static void test_seal_roundtrip(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(good_seals); i++) {
		uint8_t *p = malloc(MS_SEG_SEAL_PAYLOAD);
		assert_non_null(p);
		ms_seg_seal_encode(&good_seals[i], p);
		const struct ms_seg_seal *s = &good_seals[i];
		if (ms_get64(p) != s->count || ms_get64(p + 8) != s->first_seq ||
		    ms_get64(p + 16) != s->last_seq ||
		    ms_get64(p + 24) != s->seal_off ||
		    ms_get64(p + 32) != s->sum)
			fail_msg("good_seals[%zu]: layout differs from seg.h",
				 i);
		struct ms_seg_seal got;
		memset(&got, 0xEE, sizeof(got));
		const char *err = NULL;
		CHECK_RET(ms_seg_seal_decode(p, MS_SEG_SEAL_PAYLOAD, &got,
					     &err),
			  0, "good_seals[%zu]", i);
		if (!seal_eq(&got, s))
			fail_msg("good_seals[%zu]: fields differ", i);
		free(p);
	}
}

static const struct bad_seal {
	struct ms_seg_seal s;
	size_t len; /* payload length given to decode */
} bad_seals[] = {
	/* wrong size */
	/* 0 */ { { 0, 1, 0, H, 0 }, 0 },
	/* 1 */ { { 0, 1, 0, H, 0 }, MS_SEG_SEAL_PAYLOAD - 1 },
	/* 2 */ { { 0, 1, 0, H, 0 }, MS_SEG_SEAL_PAYLOAD + 1 },
	/* 3 */ { { 0, 1, 0, H, 0 }, 8 },
	/* count against first/last */
	/* 4 */ { { 0, 0, 0, H, 0 }, MS_SEG_SEAL_PAYLOAD },	/* first 0 */
	/* 5 */ { { 1, 0, 0, H + R, 0 }, MS_SEG_SEAL_PAYLOAD }, /* first 0 */
	/* 6 */ { { 1, 1, 0, H + R, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 7 */ { { 0, 1, 1, H + R, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 8 */ { { 2, 10, 12, H + 3 * R, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 9 */ { { 4, 10, 12, H + 4 * R, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 10 */ { { 0, 10, 5, H, 0 }, MS_SEG_SEAL_PAYLOAD }, /* last < first-1 */
	/* 11 */ { { UINT64_MAX - 4, 10, 5, H, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 12 */ { { UINT64_MAX, 1, UINT64_MAX - 1, UINT64_MAX, 0 },
		   MS_SEG_SEAL_PAYLOAD },
	/* seal offset too small */
	/* 13 */ { { 0, 1, 0, 0, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 14 */ { { 0, 1, 0, H - 1, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 15 */ { { 1, 1, 1, H, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 16 */ { { 1, 1, 1, H + R - 1, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 17 */ { { 3, 10, 12, H + 3 * R - 1, 0 }, MS_SEG_SEAL_PAYLOAD },
	/* 18 */ { { 1000000, 5, 1000004, H + 1000000 * R - 1, 0 },
		   MS_SEG_SEAL_PAYLOAD },
	/* seal offset too small once count * 32 is done without wrapping */
	/* 19 */ { { (uint64_t)1 << 59, 1, (uint64_t)1 << 59, H, 0 },
		   MS_SEG_SEAL_PAYLOAD },
	/* 20 */ { { ((uint64_t)1 << 59) + 1, 1, ((uint64_t)1 << 59) + 1,
		     H + R, 0 },
		   MS_SEG_SEAL_PAYLOAD },
};

static void test_seal_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_seals); i++) {
		const struct bad_seal *c = &bad_seals[i];
		uint8_t full[MS_SEG_SEAL_PAYLOAD + 8] = { 0 };
		ms_seg_seal_encode(&c->s, full);
		uint8_t *p = malloc(c->len ? c->len : 1);
		assert_non_null(p);
		memcpy(p, full, c->len);
		struct ms_seg_seal got;
		memset(&got, 0xEE, sizeof(got));
		struct ms_seg_seal sentinel = got;
		const char *err = NULL;
		int ret = ms_seg_seal_decode(p, c->len, &got, &err);
		free(p);
		CHECK_RET(ret, MS_ECORRUPT, "bad_seals[%zu]", i);
		if (err == NULL)
			fail_msg("bad_seals[%zu]: no error text", i);
		if (!seal_eq(&got, &sentinel))
			fail_msg("bad_seals[%zu]: output changed", i);
	}
}

/* ---- meta ---- */

static void meta_sample(struct ms_meta *m, uint64_t key)
{
	mst_fill(m->store_id, sizeof(m->store_id), key);
	mst_fill(m->salt, sizeof(m->salt), key + 1000);
	m->created = 1700000000 + key;
}

static int meta_eq(const struct ms_meta *a, const struct ms_meta *b)
{
	return memcmp(a->store_id, b->store_id, sizeof(a->store_id)) == 0 &&
	       memcmp(a->salt, b->salt, sizeof(a->salt)) == 0 &&
	       a->created == b->created;
}

static void reseal_meta(uint8_t buf[MS_META_SIZE])
{
	ms_put64(buf + 72, XXH3_64bits(buf, 72));
}

static void test_meta_codec(void **state)
{
	(void)state;
	struct ms_meta m, got;
	const char *err;
	uint8_t buf[MS_META_SIZE + 1];

	for (uint64_t key = 0; key < 4; key++) {
		meta_sample(&m, key);
		if (key == 3)
			m.created = UINT64_MAX;
		memset(buf, 0xA5, sizeof(buf));
		ms_meta_encode(&m, buf);
		if (memcmp(buf, "MSTOMETA", 8) != 0 ||
		    ms_get32(buf + 8) != MS_SEG_VERSION ||
		    ms_get32(buf + 12) != 0 ||
		    memcmp(buf + 16, m.store_id, 16) != 0 ||
		    memcmp(buf + 32, m.salt, 32) != 0 ||
		    ms_get64(buf + 64) != m.created ||
		    ms_get64(buf + 72) != XXH3_64bits(buf, 72) ||
		    buf[MS_META_SIZE] != 0xA5)
			fail_msg("meta %llu: layout differs from seg.h",
				 (unsigned long long)key);
		uint8_t *copy = malloc(MS_META_SIZE);
		assert_non_null(copy);
		memcpy(copy, buf, MS_META_SIZE);
		memset(&got, 0, sizeof(got));
		CHECK_RET(ms_meta_decode(copy, MS_META_SIZE, &got, &err), 0,
			  "meta %llu", (unsigned long long)key);
		assert_true(meta_eq(&got, &m));
		free(copy);
	}

	/* every size but 80 */
	meta_sample(&m, 9);
	ms_meta_encode(&m, buf);
	buf[MS_META_SIZE] = 0;
	for (size_t len = 0; len <= MS_META_SIZE + 1; len++) {
		if (len == MS_META_SIZE)
			continue;
		CHECK_RET(ms_meta_decode(buf, len, &got, &err), MS_ECORRUPT,
			  "meta of %zu bytes", len);
	}
	/* every byte flipped: magic → EMAGIC, the rest → checksum */
	for (size_t at = 0; at < MS_META_SIZE; at++) {
		uint8_t b2[MS_META_SIZE];
		memcpy(b2, buf, sizeof(b2));
		b2[at] ^= 0x04;
		CHECK_RET(ms_meta_decode(b2, sizeof(b2), &got, &err),
			  at < 8 ? MS_EMAGIC : MS_ECORRUPT,
			  "meta byte %zu flipped", at);
	}
	/* a version we do not know, checksum right */
	static const uint32_t versions[] = { 0, MS_SEG_VERSION + 1,
					     0xFFFFFFFF };
	for (size_t i = 0; i < MS_ARRAY_SIZE(versions); i++) {
		uint8_t b2[MS_META_SIZE];
		memcpy(b2, buf, sizeof(b2));
		ms_put32(b2 + 8, versions[i]);
		reseal_meta(b2);
		CHECK_RET(ms_meta_decode(b2, sizeof(b2), &got, &err),
			  MS_EVERSION, "meta versions[%zu]", i);
	}
}

static void write_file(int dirfd, const char *name, const void *p, size_t n)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ms_pwrite_full(fd, p, n, 0), 0);
	close(fd);
}

static void test_meta_file(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-meta");
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, MS_META_NAME);
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dirfd >= 0);

	struct ms_meta m, got;
	const char *err = NULL;
	CHECK_RET(ms_meta_read(dirfd, &got, &err), -ENOENT, "no meta file");
	assert_non_null(err);

	meta_sample(&m, 1);
	CHECK_RET(ms_meta_write(dirfd, &m, &err), 0, "write");
	assert_int_equal(mst_file_size(path), MS_META_SIZE);
	memset(&got, 0, sizeof(got));
	CHECK_RET(ms_meta_read(dirfd, &got, &err), 0, "read");
	assert_true(meta_eq(&got, &m));
	/* no temporary file left behind */
	assert_int_equal(faccessat(dirfd, MS_META_NAME ".tmp", F_OK, 0), -1);

	/* a second write replaces the first */
	meta_sample(&m, 2);
	CHECK_RET(ms_meta_write(dirfd, &m, &err), 0, "rewrite");
	CHECK_RET(ms_meta_read(dirfd, &got, &err), 0, "reread");
	assert_true(meta_eq(&got, &m));

	/* damage on disk */
	uint8_t buf[MS_META_SIZE + 1];
	ms_meta_encode(&m, buf);
	buf[MS_META_SIZE] = 0;
	static const struct {
		size_t len;	/* bytes written */
		size_t flip;	/* byte flipped, SIZE_MAX: none */
		int want;
	} damage[] = {
		/* 0 */ { 0, SIZE_MAX, MS_ECORRUPT },
		/* 1 */ { 1, SIZE_MAX, MS_ECORRUPT },
		/* 2 */ { MS_META_SIZE - 1, SIZE_MAX, MS_ECORRUPT },
		/* 3 */ { MS_META_SIZE + 1, SIZE_MAX, MS_ECORRUPT },
		/* 4 */ { MS_META_SIZE, 0, MS_EMAGIC },
		/* 5 */ { MS_META_SIZE, 20, MS_ECORRUPT },
		/* 6 */ { MS_META_SIZE, 64, MS_ECORRUPT },
		/* 7 */ { MS_META_SIZE, 79, MS_ECORRUPT },
		/* 8 */ { MS_META_SIZE, SIZE_MAX, 0 },
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(damage); i++) {
		write_file(dirfd, MS_META_NAME, buf, damage[i].len);
		if (damage[i].flip != SIZE_MAX)
			assert_int_equal(mst_flip(path, damage[i].flip, 0x01),
					 0);
		memset(&got, 0xEE, sizeof(got));
		err = NULL;
		CHECK_RET(ms_meta_read(dirfd, &got, &err), damage[i].want,
			  "damage[%zu]", i);
		if (damage[i].want < 0 && err == NULL)
			fail_msg("damage[%zu]: no error text", i);
	}
	/* a bigger file: read stops after 81 bytes and says so */
	uint8_t large[4096];
	memset(large, 0, sizeof(large));
	memcpy(large, buf, MS_META_SIZE);
	write_file(dirfd, MS_META_NAME, large, sizeof(large));
	CHECK_RET(ms_meta_read(dirfd, &got, &err), MS_ECORRUPT, "4096 bytes");

	close(dirfd);
	mst_rmtree(dir);
}

/* the DR replica marker (mstore.replica): none, written, read back,
   removed; every damage refused (the caller takes it for a replica) */
static void test_replica_file(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-replica");
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, MS_REPLICA_NAME);
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dirfd >= 0);
	struct ms_replica got;
	const char *err = NULL;

	/* no file: an ordinary store */
	CHECK_RET(ms_replica_read(dirfd, &got, &err), 0, "no file");
	assert_int_equal(got.state, MS_REPLICA_NONE);
	CHECK_RET(ms_replica_remove(dirfd, &err), 0, "remove nothing");

	static const struct ms_replica ok[] = {
		{ MS_REPLICA_DR, 0, 0 },
		{ MS_REPLICA_PROMOTING, 2, 1234 },
		{ MS_REPLICA_PROMOTING, UINT64_MAX, 0 },
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(ok); i++) {
		CHECK_RET(ms_replica_write(dirfd, &ok[i], &err), 0,
			  "write %zu", i);
		assert_int_equal(mst_file_size(path), MS_REPLICA_SIZE);
		assert_int_equal(faccessat(dirfd, MS_REPLICA_NAME ".tmp",
					   F_OK, 0), -1);
		memset(&got, 0xEE, sizeof(got));
		CHECK_RET(ms_replica_read(dirfd, &got, &err), 0, "read %zu", i);
		assert_int_equal(got.state, ok[i].state);
		assert_int_equal(got.timeline, ok[i].timeline);
		assert_int_equal(got.fork_seq, ok[i].fork_seq);
	}

	/* every flipped byte, every wrong length, refused with a reason */
	uint8_t buf[MS_REPLICA_SIZE + 1], b2[MS_REPLICA_SIZE];
	ms_replica_encode(&ok[1], buf);
	buf[MS_REPLICA_SIZE] = 0;
	for (size_t at = 0; at < MS_REPLICA_SIZE; at++) {
		memcpy(b2, buf, sizeof(b2));
		b2[at] ^= 0x10;
		err = NULL;
		if (ms_replica_decode(b2, sizeof(b2), &got, &err) >= 0)
			fail_msg("byte %zu flipped: accepted", at);
		assert_non_null(err);
	}
	for (size_t len = 0; len <= MS_REPLICA_SIZE + 1; len++) {
		if (len == MS_REPLICA_SIZE)
			continue;
		CHECK_RET(ms_replica_decode(buf, len, &got, &err),
			  MS_ECORRUPT, "len %zu", len);
	}
	/* well-formed but meaningless: an unknown state, a promotion
	   without its timeline, a DR marker with one */
	static const struct {
		uint32_t state;
		uint64_t tl, fork;
	} bad[] = { { 0, 0, 0 }, { 3, 0, 0 }, { 2, 0, 5 }, { 1, 4, 0 },
		    { 1, 0, 4 } };
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
		memcpy(b2, buf, sizeof(b2));
		ms_put32(b2 + 12, bad[i].state);
		ms_put64(b2 + 16, bad[i].tl);
		ms_put64(b2 + 24, bad[i].fork);
		ms_put64(b2 + 32, XXH3_64bits(b2, 32));
		CHECK_RET(ms_replica_decode(b2, sizeof(b2), &got, &err),
			  MS_ECORRUPT, "bad[%zu]", i);
	}
	/* damage on disk is an error of read, not "no marker" */
	write_file(dirfd, MS_REPLICA_NAME, buf, 7);
	CHECK_RET(ms_replica_read(dirfd, &got, &err), MS_ECORRUPT, "short");

	CHECK_RET(ms_replica_remove(dirfd, &err), 0, "remove");
	assert_int_equal(faccessat(dirfd, MS_REPLICA_NAME, F_OK, 0), -1);
	CHECK_RET(ms_replica_read(dirfd, &got, &err), 0, "gone");
	assert_int_equal(got.state, MS_REPLICA_NONE);
	close(dirfd);
	mst_rmtree(dir);
}

/* ---- the segment reader ---- */

/* payload sizes of the hand-built segment; [3] is over the 1 MiB window */
static const uint32_t seg_lens[] = { 0, 1, 1000, (3u << 19) + 17, 100 };
#define NRECS MS_ARRAY_SIZE(seg_lens)
#define FIRST_SEQ 500

struct segfile {
	char path[4200];
	uint8_t *img;	/* the whole file */
	size_t size;
	uint64_t off[NRECS + 1]; /* record offsets; [NRECS] = end */
};

static void seg_build(struct segfile *sf, const char *dir, int sealed)
{
	static const uint8_t types[] = { MS_REC_NOOP, MS_REC_PLACE,
					 MS_REC_FLAGS, MS_REC_BODY,
					 MS_REC_EXPUNGE };
	struct ms_seg_hdr h = { { 7, 7, 7 }, 3, 2, FIRST_SEQ };
	size_t size = MS_SEG_HDR_SIZE;
	for (size_t i = 0; i < NRECS; i++)
		size += MS_REC_HDR_SIZE + seg_lens[i];
	if (sealed)
		size += MS_SEG_SEAL_SIZE;
	sf->img = malloc(size);
	assert_non_null(sf->img);
	sf->size = size;
	ms_seg_hdr_encode(&h, sf->img);
	uint64_t off = MS_SEG_HDR_SIZE;
	for (size_t i = 0; i < NRECS; i++) {
		uint8_t *p = sf->img + off;
		mst_fill(p + MS_REC_HDR_SIZE, seg_lens[i], i);
		ms_rec_encode_hdr(p, types[i],
				  types[i] == MS_REC_BODY ? MS_REC_F_LZ4 : 0,
				  seg_lens[i], FIRST_SEQ + i, 2,
				  p + MS_REC_HDR_SIZE);
		sf->off[i] = off;
		off += MS_REC_HDR_SIZE + seg_lens[i];
	}
	sf->off[NRECS] = off;
	if (sealed) {
		struct ms_seg_seal s = { NRECS, FIRST_SEQ,
					 FIRST_SEQ + NRECS - 1, off,
					 XXH3_64bits(sf->img, off) };
		uint8_t *p = sf->img + off;
		ms_seg_seal_encode(&s, p + MS_REC_HDR_SIZE);
		ms_rec_encode_hdr(p, MS_REC_SEAL, 0, MS_SEG_SEAL_PAYLOAD,
				  FIRST_SEQ + NRECS, 2, p + MS_REC_HDR_SIZE);
	}
	char name[MS_SEG_NAME_LEN + 1];
	ms_seg_name(3, name);
	snprintf(sf->path, sizeof(sf->path), "%s/%s", dir, name);
	int fd = open(sf->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ms_pwrite_full(fd, sf->img, size, 0), 0);
	close(fd);
}

/* Rewrite the file as the image cut to len bytes. */
static void seg_cut(const struct segfile *sf, size_t len)
{
	int fd = open(sf->path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ms_pwrite_full(fd, sf->img, len, 0), 0);
	close(fd);
}

/*
 * Read the segment from offset 64: records [0, nok) must come back intact,
 * then the reader must return want with the offset left at the failing
 * record (want 0: at the exact end of the file).
 */
static void seg_expect(const struct segfile *sf, size_t nok, int want,
		       const char *what)
{
	int fd = open(sf->path, O_RDONLY);
	assert_true(fd >= 0);
	struct ms_seg_reader r;
	CHECK_RET(ms_seg_reader_init(&r, fd), 0, "%s: init", what);

	const uint8_t *p;
	struct ms_seg_hdr h;
	const char *err = NULL;
	if (r.size >= MS_SEG_HDR_SIZE) {
		CHECK_RET(ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p), 0,
			  "%s: peek header", what);
		CHECK_RET(ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &h, &err), 0,
			  "%s: header", what);
		assert_int_equal(h.first_seq, FIRST_SEQ);
	}
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);

	for (size_t i = 0; i < nok; i++) {
		struct ms_rec_hdr rh;
		const uint8_t *rec = NULL;
		int ret = ms_seg_reader_next(&r, &rh, &rec, &err);
		if (ret != 1)
			fail_msg("%s: record %zu: %d (%s: %s)", what, i, ret,
				 ms_strerror(ret), err);
		if (rh.len != seg_lens[i] || rh.seq != FIRST_SEQ + i ||
		    memcmp(rec, sf->img + sf->off[i],
			   MS_REC_HDR_SIZE + rh.len) != 0)
			fail_msg("%s: record %zu differs", what, i);
		if (r.off != sf->off[i + 1])
			fail_msg("%s: record %zu: offset %llu after it", what,
				 i, (unsigned long long)r.off);
	}
	uint64_t at = r.off;
	for (int again = 0; again < 2; again++) {
		struct ms_rec_hdr rh;
		const uint8_t *rec;
		err = NULL;
		int ret = ms_seg_reader_next(&r, &rh, &rec, &err);
		CHECK_RET(ret, want, "%s: after %zu records (try %d)", what,
			  nok, again);
		if (ret < 0 && err == NULL)
			fail_msg("%s: no error text", what);
		if (r.off != at)
			fail_msg("%s: offset moved from %llu to %llu", what,
				 (unsigned long long)at,
				 (unsigned long long)r.off);
	}
	ms_seg_reader_free(&r);
	close(fd);
}

static void test_reader_all(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-reader");
	struct segfile sf;
	seg_build(&sf, dir, 0);
	seg_expect(&sf, NRECS, 0, "whole segment");

	/* a record larger than the window was read in one piece */
	assert_true(seg_lens[3] > (1u << 20));

	/* header only: no records, at the end */
	seg_cut(&sf, MS_SEG_HDR_SIZE);
	seg_expect(&sf, 0, 0, "header only");
	free(sf.img);
	mst_rmtree(dir);
}

/* Rewrite the file as the image with zeros over [from, to) and zeros
   after it up to len bytes. */
static void seg_zeros(const struct segfile *sf, size_t from, size_t to,
		      size_t len)
{
	uint8_t *img = calloc(1, len);
	assert_non_null(img);
	memcpy(img, sf->img, sf->size < len ? sf->size : len);
	memset(img + from, 0, to - from);
	int fd = open(sf->path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ms_pwrite_full(fd, img, len, 0), 0);
	close(fd);
	free(img);
}

/* The writer's prepared space (log.c): zeros after the last record read
   as the end, across windows; zeros with a record after them are damage
   as before. */
static void test_reader_prepared_space(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-prepared");
	struct segfile sf;
	seg_build(&sf, dir, 0);
	size_t end = sf.off[NRECS];

	seg_zeros(&sf, end, end, end + (3u << 20) + 5);
	seg_expect(&sf, NRECS, 0, "zeros after the last record");
	/* a zero header then one non-zero byte at the very end */
	seg_zeros(&sf, end, end, end + (2u << 20));
	int fd = open(sf.path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(ms_pwrite_full(fd, "x", 1, end + (2u << 20) - 1), 0);
	close(fd);
	seg_expect(&sf, NRECS, MS_ECORRUPT, "zeros, then a byte");
	/* record 2 zeroed, records 3 and 4 after it */
	seg_zeros(&sf, sf.off[2], sf.off[3], sf.size);
	seg_expect(&sf, 2, MS_ECORRUPT, "zeros, then records");
	free(sf.img);
	mst_rmtree(dir);
}

static void test_reader_sealed(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-sealed");
	struct segfile sf;
	seg_build(&sf, dir, 1);
	/* the seal is found from the file size alone */
	uint64_t seal_off = sf.size - MS_SEG_SEAL_SIZE;
	assert_int_equal(seal_off, sf.off[NRECS]);

	int fd = open(sf.path, O_RDONLY);
	assert_true(fd >= 0);
	struct ms_seg_reader r;
	assert_int_equal(ms_seg_reader_init(&r, fd), 0);
	ms_seg_reader_seek(&r, seal_off);
	struct ms_rec_hdr rh;
	const uint8_t *rec;
	const char *err = NULL;
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1, "seal record");
	assert_int_equal(rh.type, MS_REC_SEAL);
	struct ms_seg_seal s;
	CHECK_RET(ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, rh.len, &s, &err),
		  0, "seal payload");
	assert_int_equal(s.count, NRECS);
	assert_int_equal(s.first_seq, FIRST_SEQ);
	assert_int_equal(s.last_seq, FIRST_SEQ + NRECS - 1);
	assert_int_equal(s.seal_off, seal_off);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 0, "after seal");

	/* the seal's sum covers every byte before it */
	const uint8_t *all;
	CHECK_RET(ms_seg_reader_peek(&r, 0, (size_t)seal_off, &all), 0,
		  "peek all");
	assert_true(XXH3_64bits(all, (size_t)seal_off) == s.sum);
	/* and the whole walk sees the records, then the seal, then the end */
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
	for (size_t i = 0; i < NRECS; i++)
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1,
			  "sealed walk %zu", i);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1, "sealed walk");
	assert_int_equal(rh.type, MS_REC_SEAL);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 0, "sealed end");
	ms_seg_reader_free(&r);
	close(fd);
	free(sf.img);
	mst_rmtree(dir);
}

/* Where the file is cut or flipped, and what the reader must say. */
enum seg_damage { CUT, FLIP };

static const struct seg_case {
	enum seg_damage what;
	size_t rec;	/* record the damage is in */
	int64_t at;	/* bytes into it; < 0: from the end of the payload */
	size_t nok;	/* records read back intact before it */
	int want;
} seg_cases[] = {
	/* cut inside a header */
	/* 0 */ { CUT, 0, 1, 0, MS_ETRUNC },
	/* 1 */ { CUT, 0, MS_REC_HDR_SIZE - 1, 0, MS_ETRUNC },
	/* 2 */ { CUT, 2, 16, 2, MS_ETRUNC },
	/* 3 */ { CUT, 3, 31, 3, MS_ETRUNC },
	/* 4 */ { CUT, 4, 8, 4, MS_ETRUNC },
	/* cut inside a payload */
	/* 5 */ { CUT, 1, MS_REC_HDR_SIZE, 1, MS_ETRUNC },
	/* 6 */ { CUT, 2, MS_REC_HDR_SIZE + 500, 2, MS_ETRUNC },
	/* 7 */ { CUT, 3, MS_REC_HDR_SIZE, 3, MS_ETRUNC },
	/* 8 */ { CUT, 3, MS_REC_HDR_SIZE + (1 << 20), 3, MS_ETRUNC },
	/* 9 */ { CUT, 3, -1, 3, MS_ETRUNC },
	/* 10 */ { CUT, 4, -1, 4, MS_ETRUNC },
	/* cut between records: a clean end */
	/* 11 */ { CUT, 0, 0, 0, 0 },
	/* 12 */ { CUT, 1, 0, 1, 0 },
	/* 13 */ { CUT, 4, 0, 4, 0 },
	/* flipped byte: header check or checksum */
	/* 14 */ { FLIP, 0, 0, 0, MS_ECORRUPT },		/* type */
	/* 15 */ { FLIP, 0, 24, 0, MS_ECORRUPT },		/* sum */
	/* 16 */ { FLIP, 1, MS_REC_HDR_SIZE, 1, MS_ECORRUPT }, /* payload */
	/* 17 */ { FLIP, 2, 2, 2, MS_ECORRUPT },		/* reserved */
	/* 18 */ { FLIP, 2, 7, 2, MS_ECORRUPT },		/* len > max */
	/* 19 */ { FLIP, 3, 8, 3, MS_ECORRUPT },		/* seq */
	/* 20 */ { FLIP, 3, MS_REC_HDR_SIZE + 1234567, 3, MS_ECORRUPT },
	/* 21 */ { FLIP, 3, -1, 3, MS_ECORRUPT },
	/* 22 */ { FLIP, 4, -1, 4, MS_ECORRUPT },
	/* 23 */ { FLIP, 4, 16, 4, MS_ECORRUPT },		/* timeline */
};

static void test_reader_damage(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-damage");
	struct segfile sf;
	seg_build(&sf, dir, 0);
	for (size_t i = 0; i < MS_ARRAY_SIZE(seg_cases); i++) {
		const struct seg_case *c = &seg_cases[i];
		uint64_t pos = c->at >= 0 ? sf.off[c->rec] + (uint64_t)c->at
					  : sf.off[c->rec + 1] -
						    (uint64_t)-c->at;
		char what[64];
		snprintf(what, sizeof(what), "seg_cases[%zu]", i);
		if (c->what == CUT) {
			seg_cut(&sf, (size_t)pos);
		} else {
			seg_cut(&sf, sf.size);
			/* 0x40: in byte 7 (len's top byte) that is > max */
			assert_int_equal(mst_flip(sf.path, pos, 0x40), 0);
		}
		seg_expect(&sf, c->nok, c->want, what);
	}
	free(sf.img);
	mst_rmtree(dir);
}

/* ---- HOLE records in a segment ---- */

/*
 * A compacted segment: NOOP, HOLE (3 MiB: over the window), PLACE, HOLE
 * (5000), NOOP (empty), then the seal, whose sum is over the file as it
 * reads with the holes' payload bytes as zeros.  The payload regions of
 * the HOLEs are, by mode: never written (sparse), written then punched
 * out (fallocate), or left full of junk.
 */
enum hole_mode { HOLE_SPARSE, HOLE_PUNCHED, HOLE_JUNK };

static const struct {
	uint8_t type;
	uint32_t len;
} hole_recs[] = {
	{ MS_REC_NOOP, 10 },
	{ MS_REC_HOLE, (3u << 20) + 5 },
	{ MS_REC_PLACE, 100 },
	{ MS_REC_HOLE, 5000 },
	{ MS_REC_NOOP, 0 },
};
#define NHOLE_RECS MS_ARRAY_SIZE(hole_recs)

/* 1: built; 0: the file system cannot punch holes (skip that mode) */
static int hole_build(const char *path, enum hole_mode mode,
		      uint64_t off_r[NHOLE_RECS + 1], uint8_t **img_r,
		      size_t *size_r)
{
	struct ms_seg_hdr h = { { 9 }, 4, 1, 700 };
	size_t size = MS_SEG_HDR_SIZE + MS_SEG_SEAL_SIZE;
	for (size_t i = 0; i < NHOLE_RECS; i++)
		size += MS_REC_HDR_SIZE + hole_recs[i].len;
	/* img: the file as it must read in the sparse and punched modes */
	uint8_t *img = calloc(1, size);
	assert_non_null(img);
	ms_seg_hdr_encode(&h, img);
	uint64_t off = MS_SEG_HDR_SIZE;
	for (size_t i = 0; i < NHOLE_RECS; i++) {
		uint8_t *p = img + off;
		if (hole_recs[i].type == MS_REC_HOLE) {
			ms_rec_encode_hdr(p, MS_REC_HOLE, 0, hole_recs[i].len,
					  700 + i, 1, NULL);
		} else {
			mst_fill(p + MS_REC_HDR_SIZE, hole_recs[i].len, i);
			ms_rec_encode_hdr(p, hole_recs[i].type,
					  MS_REC_F_BATCH, hole_recs[i].len,
					  700 + i, 1, p + MS_REC_HDR_SIZE);
		}
		off_r[i] = off;
		off += MS_REC_HDR_SIZE + hole_recs[i].len;
	}
	off_r[NHOLE_RECS] = off;
	struct ms_seg_seal s = { NHOLE_RECS, 700, 700 + NHOLE_RECS - 1, off,
				 XXH3_64bits(img, off) };
	ms_seg_seal_encode(&s, img + off + MS_REC_HDR_SIZE);
	ms_rec_encode_hdr(img + off, MS_REC_SEAL, 0, MS_SEG_SEAL_PAYLOAD,
			  700 + NHOLE_RECS, 1, img + off + MS_REC_HDR_SIZE);

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	/* everything but the HOLE payloads, piece by piece */
	size_t from = 0;
	for (size_t i = 0; i < NHOLE_RECS; i++) {
		if (hole_recs[i].type != MS_REC_HOLE)
			continue;
		size_t to = off_r[i] + MS_REC_HDR_SIZE;
		assert_int_equal(ms_pwrite_full(fd, img + from, to - from,
						from),
				 0);
		from = to + hole_recs[i].len;
		if (mode != HOLE_SPARSE) {
			uint8_t *junk = malloc(hole_recs[i].len);
			assert_non_null(junk);
			memset(junk, 0xA5, hole_recs[i].len);
			assert_int_equal(ms_pwrite_full(fd, junk,
							hole_recs[i].len, to),
					 0);
			free(junk);
		}
	}
	assert_int_equal(ms_pwrite_full(fd, img + from, size - from, from), 0);
	if (mode == HOLE_PUNCHED) {
		for (size_t i = 0; i < NHOLE_RECS; i++) {
			if (hole_recs[i].type != MS_REC_HOLE)
				continue;
			if (fallocate(fd,
				      FALLOC_FL_PUNCH_HOLE |
					      FALLOC_FL_KEEP_SIZE,
				      (off_t)(off_r[i] + MS_REC_HDR_SIZE),
				      (off_t)hole_recs[i].len) < 0) {
				assert_true(errno == EOPNOTSUPP ||
					    errno == ENOSYS);
				close(fd);
				free(img);
				return 0;
			}
		}
	}
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((size_t)st.st_size, size);
	close(fd);
	*img_r = img;
	*size_r = size;
	return 1;
}

static void test_reader_holes(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-holes");
	char path[4200];
	snprintf(path, sizeof(path), "%s/000000000004.seg", dir);
	static const char *const names[] = { "sparse", "punched", "junk" };

	for (int mode = HOLE_SPARSE; mode <= HOLE_JUNK; mode++) {
		uint64_t off[NHOLE_RECS + 1];
		uint8_t *img;
		size_t size;
		if (!hole_build(path, (enum hole_mode)mode, off, &img, &size)) {
			print_message("punching holes not supported here: "
				      "%s mode left out\n", names[mode]);
			continue;
		}
		int fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		struct ms_seg_reader r;
		assert_int_equal(ms_seg_reader_init(&r, fd), 0);
		ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
		for (size_t i = 0; i < NHOLE_RECS; i++) {
			struct ms_rec_hdr rh;
			const uint8_t *rec = NULL;
			const char *err = NULL;
			int ret = ms_seg_reader_next(&r, &rh, &rec, &err);
			if (ret != 1)
				fail_msg("%s: record %zu: %d (%s)", names[mode],
					 i, ret, err);
			if (rh.type != hole_recs[i].type ||
			    rh.len != hole_recs[i].len || rh.seq != 700 + i ||
			    r.off != off[i + 1])
				fail_msg("%s: record %zu: type %u len %u seq "
					 "%llu, offset %llu after",
					 names[mode], i, rh.type, rh.len,
					 (unsigned long long)rh.seq,
					 (unsigned long long)r.off);
			/* the header always; the payload when there is one */
			size_t n = MS_REC_HDR_SIZE +
				   (rh.type == MS_REC_HOLE ? 0 : rh.len);
			if (memcmp(rec, img + off[i], n) != 0)
				fail_msg("%s: record %zu: bytes differ",
					 names[mode], i);
		}
		/* the seal, and its sum over the file as it reads */
		struct ms_rec_hdr rh;
		const uint8_t *rec;
		const char *err = NULL;
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1,
			  "%s: seal", names[mode]);
		assert_int_equal(rh.type, MS_REC_SEAL);
		struct ms_seg_seal s;
		CHECK_RET(ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, rh.len, &s,
					     &err),
			  0, "%s: seal payload", names[mode]);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 0,
			  "%s: end", names[mode]);
		const uint8_t *all;
		CHECK_RET(ms_seg_reader_peek(&r, 0, (size_t)s.seal_off, &all),
			  0, "%s: peek all", names[mode]);
		/* holes read as zeros; junk left in place does not */
		if ((XXH3_64bits(all, (size_t)s.seal_off) == s.sum) !=
		    (mode != HOLE_JUNK))
			fail_msg("%s: seal sum over the file", names[mode]);

		/* from the second HOLE on, after a seek (a cold window) */
		ms_seg_reader_seek(&r, off[3]);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1,
			  "%s: HOLE after a seek", names[mode]);
		assert_int_equal(rh.type, MS_REC_HOLE);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1,
			  "%s: the record after it", names[mode]);
		assert_int_equal(rh.type, MS_REC_NOOP);
		assert_int_equal(rh.seq, 704);
		ms_seg_reader_free(&r);
		close(fd);

		/* a flipped HOLE header is corrupt; the reader stays put */
		assert_int_equal(mst_flip(path, off[1] + 9, 0x01), 0);
		fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(ms_seg_reader_init(&r, fd), 0);
		ms_seg_reader_seek(&r, off[1]);
		err = NULL;
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), MS_ECORRUPT,
			  "%s: flipped HOLE seq", names[mode]);
		assert_non_null(err);
		assert_int_equal(r.off, off[1]);
		ms_seg_reader_free(&r);
		close(fd);
		assert_int_equal(mst_flip(path, off[1] + 9, 0x01), 0);

		/* a HOLE flagged LZ4 (a BODY flag) is refused */
		uint8_t bad[MS_REC_HDR_SIZE];
		memcpy(bad, img + off[3], sizeof(bad));
		bad[1] = MS_REC_F_LZ4;
		ms_put64(bad + 24, XXH3_64bits_withSeed(bad, 24, 0));
		fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(ms_pwrite_full(fd, bad, sizeof(bad), off[3]),
				 0);
		assert_int_equal(ms_seg_reader_init(&r, fd), 0);
		ms_seg_reader_seek(&r, off[3]);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), MS_ECORRUPT,
			  "%s: HOLE with LZ4", names[mode]);
		ms_seg_reader_free(&r);

		/* cut inside the second HOLE's payload: the file ends
		   inside the record, which is truncated like any other */
		assert_int_equal(ftruncate(fd, (off_t)(off[3] +
						       MS_REC_HDR_SIZE + 100)),
				 0);
		assert_int_equal(ms_pwrite_full(fd, img + off[3],
						MS_REC_HDR_SIZE, off[3]),
				 0);
		assert_int_equal(ms_seg_reader_init(&r, fd), 0);
		ms_seg_reader_seek(&r, off[2]);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 1,
			  "%s: PLACE before the cut", names[mode]);
		CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), MS_ETRUNC,
			  "%s: HOLE cut short", names[mode]);
		assert_int_equal(r.off, off[3]);
		ms_seg_reader_free(&r);
		close(fd);
		free(img);
	}
	mst_rmtree(dir);
}

/* A file shorter than a record header, and offsets past the end. */
static void test_reader_edges(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-edges");
	char path[4200];
	snprintf(path, sizeof(path), "%s/x", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	struct ms_seg_reader r;
	struct ms_rec_hdr rh;
	const uint8_t *rec, *p;
	const char *err;

	/* empty file: the end at once */
	assert_int_equal(ms_seg_reader_init(&r, fd), 0);
	assert_int_equal(r.size, 0);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 0, "empty file");
	CHECK_RET(ms_seg_reader_peek(&r, 0, 1, &p), MS_ETRUNC, "peek empty");
	CHECK_RET(ms_seg_reader_peek(&r, 0, 0, &p), 0, "peek 0 of empty");
	ms_seg_reader_free(&r);

	/* 20 bytes: inside a header */
	uint8_t junk[20] = { MS_REC_NOOP };
	assert_int_equal(ms_pwrite_full(fd, junk, sizeof(junk), 0), 0);
	assert_int_equal(ms_seg_reader_init(&r, fd), 0);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), MS_ETRUNC,
		  "20-byte file");
	assert_int_equal(r.off, 0);
	CHECK_RET(ms_seg_reader_peek(&r, 10, 10, &p), 0, "peek to the end");
	assert_memory_equal(p, junk + 10, 10);
	CHECK_RET(ms_seg_reader_peek(&r, 10, 11, &p), MS_ETRUNC,
		  "peek past the end");
	CHECK_RET(ms_seg_reader_peek(&r, 21, 0, &p), MS_ETRUNC,
		  "peek after the end");
	CHECK_RET(ms_seg_reader_peek(&r, UINT64_MAX, 2, &p), MS_ETRUNC,
		  "peek at UINT64_MAX");
	CHECK_RET(ms_seg_reader_peek(&r, 10, SIZE_MAX, &p), MS_ETRUNC,
		  "peek SIZE_MAX bytes");
	ms_seg_reader_seek(&r, 20);
	CHECK_RET(ms_seg_reader_next(&r, &rh, &rec, &err), 0, "at the end");
	ms_seg_reader_free(&r);

	/* init on something that is not a file descriptor */
	CHECK_RET(ms_seg_reader_init(&r, -1), -EBADF, "init on fd -1");

	close(fd);
	mst_rmtree(dir);
}

/* ---- full-length pread ---- */

static const struct {
	uint64_t off;
	size_t len;
	int want;
} pread_cases[] = {
	/* 0 */ { 0, 100, 0 },
	/* 1 */ { 0, 0, 0 },
	/* 2 */ { 100, 0, 0 },	     /* at EOF, nothing asked */
	/* 3 */ { 99, 1, 0 },
	/* 4 */ { 0, 101, MS_ETRUNC }, /* one byte past EOF */
	/* 5 */ { 99, 2, MS_ETRUNC },
	/* 6 */ { 100, 1, MS_ETRUNC },
	/* 7 */ { 5000, 10, MS_ETRUNC },
};

static void test_pread_full(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("seg-pread");
	char path[4200];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	uint8_t data[100], buf[200];
	mst_fill(data, sizeof(data), 5);
	assert_int_equal(ms_pwrite_full(fd, data, sizeof(data), 0), 0);
	for (size_t i = 0; i < MS_ARRAY_SIZE(pread_cases); i++) {
		memset(buf, 0, sizeof(buf));
		CHECK_RET(ms_pread_full(fd, buf, pread_cases[i].len,
					pread_cases[i].off),
			  pread_cases[i].want, "pread_cases[%zu]", i);
		if (pread_cases[i].want == 0 &&
		    memcmp(buf, data + pread_cases[i].off,
			   pread_cases[i].len) != 0)
			fail_msg("pread_cases[%zu]: wrong bytes", i);
	}
	CHECK_RET(ms_pread_full(-1, buf, 1, 0), -EBADF, "pread on fd -1");
	CHECK_RET(ms_pwrite_full(-1, buf, 1, 0), -EBADF, "pwrite on fd -1");
	close(fd);
	mst_rmtree(dir);
}

/* ---- positions ---- */

static const struct {
	struct ms_pos a, b;
	int want;
} pos_cases[] = {
	/* 0 */ { { 0, 0 }, { 0, 0 }, 0 },
	/* 1 */ { { 1, 64 }, { 1, 64 }, 0 },
	/* 2 */ { { 1, 64 }, { 1, 65 }, -1 },
	/* 3 */ { { 1, 64 }, { 2, 0 }, -1 },	/* segment first */
	/* 4 */ { { 1, UINT64_MAX }, { 2, 0 }, -1 },
	/* 5 */ { { 2, 0 }, { 1, UINT64_MAX }, 1 },
	/* 6 */ { { 0, 1 }, { 0, 0 }, 1 },
	/* 7 */ { { UINT64_MAX, 0 }, { 0, UINT64_MAX }, 1 },
	/* 8 */ { { UINT64_MAX, UINT64_MAX }, { UINT64_MAX, UINT64_MAX }, 0 },
	/* 9 */ { { 0, 0 }, { UINT64_MAX, UINT64_MAX }, -1 },
	/* 10 */ { { 5, 1ULL << 63 }, { 5, (1ULL << 63) - 1 }, 1 },
};

static void test_pos_cmp(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(pos_cases); i++) {
		int got = ms_pos_cmp(pos_cases[i].a, pos_cases[i].b);
		int back = ms_pos_cmp(pos_cases[i].b, pos_cases[i].a);
		if (got != pos_cases[i].want || back != -pos_cases[i].want)
			fail_msg("pos_cases[%zu]: %d / %d, want %d", i, got,
				 back, pos_cases[i].want);
	}
	/* a sorted list stays sorted: transitivity over all pairs */
	static const struct ms_pos sorted[] = {
		{ 0, 0 }, { 0, 64 }, { 0, UINT64_MAX }, { 1, 0 },
		{ 1, 1 }, { 7, 64 }, { UINT64_MAX, 0 },
		{ UINT64_MAX, UINT64_MAX },
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(sorted); i++)
		for (size_t j = 0; j < MS_ARRAY_SIZE(sorted); j++) {
			int want = i < j ? -1 : i > j ? 1 : 0;
			if (ms_pos_cmp(sorted[i], sorted[j]) != want)
				fail_msg("sorted[%zu] vs sorted[%zu]", i, j);
		}
}

int main(void)
{
	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seg_names),
		cmocka_unit_test(test_seg_hdr_roundtrip),
		cmocka_unit_test(test_seg_hdr_invalid),
		cmocka_unit_test(test_seg_hdr_truncated),
		cmocka_unit_test(test_seal_roundtrip),
		cmocka_unit_test(test_seal_invalid),
		cmocka_unit_test(test_meta_codec),
		cmocka_unit_test(test_meta_file),
		cmocka_unit_test(test_replica_file),
		cmocka_unit_test(test_reader_all),
		cmocka_unit_test(test_reader_sealed),
		cmocka_unit_test(test_reader_prepared_space),
		cmocka_unit_test(test_reader_damage),
		cmocka_unit_test(test_reader_holes),
		cmocka_unit_test(test_reader_edges),
		cmocka_unit_test(test_pread_full),
		cmocka_unit_test(test_pos_cmp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
