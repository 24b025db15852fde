/*
 * test_body.c - BODY payloads (store/body.c): round trips for every size
 * class with and without sealing and compression, when LZ4 is kept, the
 * decode failure table (each case named by its index), dedup keys, and the
 * at-rest key file.
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

#include <cmocka.h>
#include <sodium.h>

#include "body.h"

static const uint8_t store_id[16] = {1, 2,  3,  4,  5,  6,  7,  8,
				     9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t salt_a[32] = {0x5a, 0x11};
static const uint8_t salt_b[32] = {0x5a, 0x12};
static const uint8_t key_a[32] = {0xaa, 1, 2, 3};
static const uint8_t key_b[32] = {0xbb, 1, 2, 3};

enum fill {
	FILL_NONE,
	FILL_TEXT,
	FILL_RUN,
	FILL_RANDOM
};

static uint8_t *make_plain(size_t len, enum fill fill)
{
	static const char text[] = "Received: from mx.example.test by mstore; "
				   "Subject: hello hello hello\r\n";
	uint8_t *p = ms_malloc(len ? len : 1);

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)text[i % (sizeof(text) - 1)];
	if (fill == FILL_RUN)
		memset(p, 'a', len);
	if (fill == FILL_RANDOM)
		randombytes_buf(p, len);
	return p;
}

static void init_ctx(struct ms_body_ctx *ctx, const uint8_t *key, int compress)
{
	assert_int_equal(ms_body_ctx_init(ctx, store_id, salt_a, key, compress),
			 0);
}

/* ---- round trips ---- */

static const struct rt_case {
	const char *name;
	size_t len;
	enum fill fill;
	int lz4_helps; /* expected MS_REC_F_LZ4 when compressing */
} rt_cases[] = {
	{"empty", 0, FILL_NONE, 0},
	{"1 byte", 1, FILL_TEXT, 0},
	{"63 bytes text", 63, FILL_TEXT, 0},
	{"63 bytes run: under 64, not tried", 63, FILL_RUN, 0},
	{"64 bytes text", 64, FILL_TEXT, 0},
	{"64 bytes run", 64, FILL_RUN, 1},
	{"64 bytes random", 64, FILL_RANDOM, 0},
	{"1 MiB text", 1 << 20, FILL_TEXT, 1},
	{"1 MiB random", 1 << 20, FILL_RANDOM, 0},
};

/* A decode of round-trip case i gave back exactly the plain bytes. */
static void check_decoded(int ret, const char *error, const char *what,
			  size_t i, const struct rt_case *c, int mode,
			  const struct ms_buf *out, const uint8_t *plain)
{
	if (ret != 0)
		fail_msg("rt case %zu (%s) mode %d: %s %s: %s", i, c->name,
			 mode, what, ms_strerror(ret), error);
	assert_int_equal(out->len, c->len);
	if (c->len > 0)
		assert_memory_equal(out->data, plain, c->len);
}

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(rt_cases); i++) {
		const struct rt_case *c = &rt_cases[i];
		uint8_t *plain = make_plain(c->len, c->fill);

		for (int mode = 0; mode < 4; mode++) {
			int sealed = mode & 1, compress = (mode >> 1) & 1;
			struct ms_body_ctx ctx;
			struct ms_buf payload, out;
			uint8_t flags = 0xff, dedup[32], pk[32];
			uint64_t plen = 0;
			const char *error = NULL;
			int ret;

			init_ctx(&ctx, sealed ? key_a : NULL, compress);
			ms_buf_init(&payload, 0);
			ms_buf_init(&out, 0);
			ret = ms_body_encode(&ctx, plain, c->len, &payload,
					     &flags);
			if (ret != 0)
				fail_msg("rt case %zu (%s) mode %d: encode %s",
					 i, c->name, mode, ms_strerror(ret));
			int want_lz4 = compress && c->lz4_helps;
			uint8_t want_flags =
				(uint8_t)((want_lz4 ? MS_REC_F_LZ4 : 0) |
					  (sealed ? MS_REC_F_SEALED : 0));
			if (flags != want_flags)
				fail_msg(
					"rt case %zu (%s) mode %d: flags 0x%x, "
					"want 0x%x",
					i, c->name, mode, flags, want_flags);
			size_t over =
				MS_BODY_FIXED_SIZE +
				(sealed ? MS_BODY_NONCE_SIZE + MS_BODY_TAG_SIZE
					: 0);
			if (want_lz4)
				assert_true(payload.len < over + c->len);
			else
				assert_int_equal(payload.len, over + c->len);
			assert_true(payload.len <= MS_REC_MAX_PAYLOAD);

			/* the fixed part is the dedup key and the length */
			ms_body_dedup_key(&ctx, plain, c->len, dedup);
			assert_int_equal(ms_body_peek(payload.data, payload.len,
						      pk, &plen),
					 0);
			assert_memory_equal(pk, dedup, 32);
			assert_int_equal(plen, c->len);

			/* sealed: the plain bytes do not appear */
			if (sealed && !want_lz4 && c->len >= 64)
				assert_true(memcmp(payload.data + 40 + 24,
						   plain, 64) != 0);

			ret = ms_body_decode(&ctx, flags, payload.data,
					     payload.len, &out, &error);
			check_decoded(ret, error, "decode", i, c, mode, &out,
				      plain);

			/* a read that knows the key: the same bytes; another
			   key is refused before any work */
			ret = ms_body_decode_known(&ctx, flags, payload.data,
						   payload.len, dedup, &out,
						   &error);
			check_decoded(ret, error, "known", i, c, mode, &out,
				      plain);
			/* the same read, as is: a view into the payload of a
			   body stored as is; compressed or sealed: decode */
			const uint8_t *view = NULL;
			uint64_t vlen = 0;
			ret = ms_body_plain_view(flags, payload.data,
						 payload.len, dedup, &view,
						 &vlen, &error);
			if (want_lz4 || sealed) {
				assert_int_equal(ret, 0);
			} else {
				assert_int_equal(ret, 1);
				assert_int_equal(vlen, c->len);
				assert_ptr_equal(view, payload.data + 40);
				if (c->len > 0)
					assert_memory_equal(view, plain,
							    c->len);
				/* one byte short: of the stated length, or
				   (an empty body) of the fixed part */
				assert_int_equal(ms_body_plain_view(
							 flags, payload.data,
							 payload.len - 1, dedup,
							 &view, &vlen, &error),
						 MS_ECORRUPT);
			}
			pk[0] = (uint8_t)(dedup[0] ^ 1);
			memcpy(pk + 1, dedup + 1, 31);
			/* another key, unknown flags: refused either way */
			assert_int_equal(ms_body_plain_view(flags, payload.data,
							    payload.len, pk,
							    &view, &vlen,
							    &error),
					 MS_ECORRUPT);
			assert_int_equal(ms_body_plain_view(0x40, payload.data,
							    payload.len, dedup,
							    &view, &vlen,
							    &error),
					 MS_ECORRUPT);
			assert_int_equal(ms_body_decode_known(&ctx, flags,
							      payload.data,
							      payload.len, pk,
							      &out, &error),
					 MS_ECORRUPT);
			assert_int_equal(out.len, 0);
			/* a sealed body whose stored key was changed with it
			   still fails authentication */
			if (sealed) {
				payload.data[0] ^= 1;
				assert_int_equal(ms_body_decode_known(
							 &ctx, flags,
							 payload.data,
							 payload.len, pk, &out,
							 &error),
						 MS_EAUTH);
			}

			ms_buf_free(&payload);
			ms_buf_free(&out);
			ms_body_ctx_wipe(&ctx);
		}
		free(plain);
	}
}

/* empty body given as NULL pointer */
static void test_empty_null(void **state)
{
	struct ms_body_ctx ctx;
	struct ms_buf payload, out;
	uint8_t flags;
	const char *error;

	(void)state;
	for (int sealed = 0; sealed < 2; sealed++) {
		init_ctx(&ctx, sealed ? key_a : NULL, 1);
		ms_buf_init(&payload, 0);
		ms_buf_init(&out, 0);
		assert_int_equal(
			ms_body_encode(&ctx, NULL, 0, &payload, &flags), 0);
		assert_int_equal(ms_body_decode(&ctx, flags, payload.data,
						payload.len, &out, &error),
				 0);
		assert_int_equal(out.len, 0);
		ms_buf_free(&payload);
		ms_buf_free(&out);
	}
}

/* LZ4 is kept only if it saves at least len/16 */
static void test_lz4_threshold(void **state)
{
	static const struct {
		size_t len, zeros; /* random bytes, then zeros */
		int lz4;
	} cases[] = {
		{1024, 0, 0},    /* incompressible */
		{1024, 48, 0},   /* block ~996 bytes: saves, but < 1/16 */
		{1024, 200, 1},  /* saves well over 1/16 */
		{4096, 4096, 1}, /* all zeros */
	};
	struct ms_body_ctx ctx;

	(void)state;
	init_ctx(&ctx, NULL, 1);
	for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
		uint8_t *plain = make_plain(cases[i].len, FILL_RANDOM);
		struct ms_buf payload;
		uint8_t flags = 0;

		memset(plain + cases[i].len - cases[i].zeros, 0,
		       cases[i].zeros);
		ms_buf_init(&payload, 0);
		assert_int_equal(ms_body_encode(&ctx, plain, cases[i].len,
						&payload, &flags),
				 0);
		if (((flags & MS_REC_F_LZ4) != 0) != cases[i].lz4)
			fail_msg("lz4 case %zu: flags 0x%x", i, flags);
		if (cases[i].lz4)
			assert_true(payload.len - MS_BODY_FIXED_SIZE <=
				    cases[i].len - cases[i].len / 16);
		ms_buf_free(&payload);
		free(plain);
	}
	/* compress off: never LZ4 */
	init_ctx(&ctx, NULL, 0);
	{
		uint8_t *plain = make_plain(4096, FILL_TEXT);
		struct ms_buf payload;
		uint8_t flags = 0xff;
		ms_buf_init(&payload, 0);
		assert_int_equal(
			ms_body_encode(&ctx, plain, 4096, &payload, &flags), 0);
		assert_int_equal(flags, 0);
		ms_buf_free(&payload);
		free(plain);
	}
}

static void test_encode_limits(void **state)
{
	struct ms_body_ctx ctx;
	struct ms_buf payload;
	uint8_t flags = 0x77;
	uint8_t plain[100] = {0};

	(void)state;
	init_ctx(&ctx, key_a, 1);
	ms_buf_init(&payload, 0);
	ms_buf_append(&payload, "junk", 4);
	/* length is checked before the plain bytes are read */
	assert_int_equal(ms_body_encode(&ctx, plain, MS_BODY_MAX_PLAIN + 1,
					&payload, &flags),
			 MS_ETOOBIG);
	assert_int_equal(payload.len, 0);
	assert_int_equal(flags, 0x77);
	ms_buf_free(&payload);

	/* payload buffer too small for the result */
	ms_buf_init(&payload, 100);
	randombytes_buf(plain, sizeof(plain));
	assert_int_equal(
		ms_body_encode(&ctx, plain, sizeof(plain), &payload, &flags),
		MS_ETOOBIG);
	assert_int_equal(payload.len, 0);
	assert_int_equal(flags, 0x77);
	ms_buf_free(&payload);

	/* the bound itself leaves room for the worst-case overhead */
	assert_true(MS_BODY_MAX_PLAIN + MS_BODY_OVERHEAD_MAX <=
		    MS_REC_MAX_PAYLOAD);
}

static int cmp_nonce(const void *x, const void *y)
{
	return memcmp(x, y, MS_BODY_NONCE_SIZE);
}

/* two encodings of one body differ (random nonce) but share the key */
static void test_sealed_nonce(void **state)
{
	struct ms_body_ctx ctx;
	struct ms_buf a, b;
	uint8_t fa, fb;
	uint8_t *plain = make_plain(300, FILL_TEXT);

	(void)state;
	init_ctx(&ctx, key_a, 0);
	ms_buf_init(&a, 0);
	ms_buf_init(&b, 0);
	assert_int_equal(ms_body_encode(&ctx, plain, 300, &a, &fa), 0);
	assert_int_equal(ms_body_encode(&ctx, plain, 300, &b, &fb), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, MS_BODY_FIXED_SIZE);
	assert_memory_not_equal(a.data + MS_BODY_FIXED_SIZE,
				b.data + MS_BODY_FIXED_SIZE,
				a.len - MS_BODY_FIXED_SIZE);
	/* every nonce its own, across refills of ms_random's pool (4,096
	   bytes: 170 nonces), and every encoding decodes */
	enum { N = 600 };
	static uint8_t nonces[N][MS_BODY_NONCE_SIZE];
	for (int i = 0; i < N; i++) {
		ms_buf_reset(&a);
		assert_int_equal(ms_body_encode(&ctx, plain, 300, &a, &fa), 0);
		memcpy(nonces[i], a.data + MS_BODY_FIXED_SIZE,
		       MS_BODY_NONCE_SIZE);
		struct ms_buf out;
		const char *err = NULL;
		ms_buf_init(&out, 0);
		assert_int_equal(ms_body_decode(&ctx, fa, a.data, a.len, &out,
						&err),
				 0);
		assert_memory_equal(out.data, plain, 300);
		ms_buf_free(&out);
	}
	qsort(nonces, N, sizeof(nonces[0]), cmp_nonce);
	for (int i = 1; i < N; i++)
		assert_memory_not_equal(nonces[i - 1], nonces[i],
					MS_BODY_NONCE_SIZE);
	ms_buf_free(&a);
	ms_buf_free(&b);
	free(plain);
}

/* ---- decode failures ---- */

enum mut {
	MUT_NONE,
	MUT_TRUNCATE,    /* payload length = arg */
	MUT_FLIP_BYTE,   /* payload[arg] ^= 0x01 */
	MUT_FLIP_LAST,   /* last byte ^= 0x01 (tag or data) */
	MUT_FLAGS_XOR,   /* flags ^= arg */
	MUT_LEN_ADD,     /* plain length += (int64)arg */
	MUT_LEN_SET,     /* plain length = arg */
	MUT_DATA_RANDOM, /* data replaced by random bytes */
};

enum dec_ctx {
	DEC_SAME,
	DEC_NOKEY,
	DEC_OTHER_KEY
};

static const struct bad_case {
	const char *name;
	int sealed, compress;
	size_t len;
	enum fill fill;
	enum mut mut;
	uint64_t arg;
	enum dec_ctx dec;
	size_t plain_max; /* 0: default */
	int expect;
} bad_cases[] = {
	/* 0 */ {"fixed part truncated", 0, 0, 100, FILL_TEXT, MUT_TRUNCATE, 39,
		 DEC_SAME, 0, MS_ECORRUPT},
	/* 1 */
	{"empty payload", 1, 0, 100, FILL_TEXT, MUT_TRUNCATE, 0, DEC_SAME, 0,
	 MS_ECORRUPT},
	/* 2 */
	{"wrong key", 1, 0, 100, FILL_TEXT, MUT_NONE, 0, DEC_OTHER_KEY, 0,
	 MS_EAUTH},
	/* 3 */
	{"flipped ciphertext byte", 1, 0, 100, FILL_TEXT, MUT_FLIP_BYTE,
	 40 + 24 + 5, DEC_SAME, 0, MS_EAUTH},
	/* 4 */
	{"flipped tag", 1, 0, 100, FILL_TEXT, MUT_FLIP_LAST, 0, DEC_SAME, 0,
	 MS_EAUTH},
	/* 5 */
	{"flipped nonce", 1, 0, 100, FILL_TEXT, MUT_FLIP_BYTE, 40, DEC_SAME, 0,
	 MS_EAUTH},
	/* 6 */
	{"AD: flipped dedup key", 1, 0, 100, FILL_TEXT, MUT_FLIP_BYTE, 3,
	 DEC_SAME, 0, MS_EAUTH},
	/* 7 */
	{"AD: plain length -1", 1, 0, 100, FILL_TEXT, MUT_LEN_ADD, (uint64_t)-1,
	 DEC_SAME, 0, MS_EAUTH},
	/* 8 */
	{"AD: plain length +1 (LZ4)", 1, 1, 4096, FILL_TEXT, MUT_LEN_ADD, 1,
	 DEC_SAME, 0, MS_EAUTH},
	/* 9 */
	{"AD: LZ4 flag added", 1, 0, 100, FILL_TEXT, MUT_FLAGS_XOR,
	 MS_REC_F_LZ4, DEC_SAME, 0, MS_EAUTH},
	/* 10 */
	{"AD: LZ4 flag removed", 1, 1, 4096, FILL_TEXT, MUT_FLAGS_XOR,
	 MS_REC_F_LZ4, DEC_SAME, 0, MS_EAUTH},
	/* 11 */
	{"sealed without key", 1, 0, 100, FILL_TEXT, MUT_NONE, 0, DEC_NOKEY, 0,
	 MS_ENOKEY},
	/* 12 */
	{"sealed flag dropped", 1, 0, 100, FILL_TEXT, MUT_FLAGS_XOR,
	 MS_REC_F_SEALED, DEC_SAME, 0, MS_ECORRUPT},
	/* 13 */
	{"sealed, no room for nonce and tag", 1, 0, 100, FILL_TEXT,
	 MUT_TRUNCATE, 40 + 39, DEC_SAME, 0, MS_ECORRUPT},
	/* 14 */
	{"lying length: bigger", 0, 0, 100, FILL_TEXT, MUT_LEN_ADD, 1, DEC_SAME,
	 0, MS_ECORRUPT},
	/* 15 */
	{"lying length: smaller", 0, 0, 100, FILL_TEXT, MUT_LEN_ADD,
	 (uint64_t)-1, DEC_SAME, 0, MS_ECORRUPT},
	/* 16 */
	{"lying length: huge", 0, 0, 100, FILL_TEXT, MUT_LEN_SET, UINT64_MAX,
	 DEC_SAME, 0, MS_ECORRUPT},
	/* 17 */
	{"lying length: max + 1", 1, 0, 100, FILL_TEXT, MUT_LEN_SET,
	 MS_BODY_MAX_PLAIN + 1, DEC_SAME, 0, MS_ECORRUPT},
	/* 18 */
	{"LZ4 lying length: bigger", 0, 1, 4096, FILL_TEXT, MUT_LEN_ADD, 1,
	 DEC_SAME, 0, MS_ECORRUPT},
	/* 19 */
	{"LZ4 lying length: smaller", 0, 1, 4096, FILL_TEXT, MUT_LEN_ADD,
	 (uint64_t)-1, DEC_SAME, 0, MS_ECORRUPT},
	/* 20 */
	{"LZ4 lying length: huge", 0, 1, 4096, FILL_TEXT, MUT_LEN_SET,
	 (uint64_t)1 << 40, DEC_SAME, 0, MS_ECORRUPT},
	/* 21 */
	{"LZ4 garbage", 0, 0, 4096, FILL_RANDOM, MUT_FLAGS_XOR, MS_REC_F_LZ4,
	 DEC_SAME, 0, MS_ECORRUPT},
	/* 22 */
	{"LZ4 random block", 0, 1, 4096, FILL_TEXT, MUT_DATA_RANDOM, 0,
	 DEC_SAME, 0, MS_ECORRUPT},
	/* 23 */
	{"LZ4 block truncated", 0, 1, 4096, FILL_TEXT, MUT_TRUNCATE, 60,
	 DEC_SAME, 0, MS_ECORRUPT},
	/* 24 */
	{"dedup key mismatch", 0, 0, 100, FILL_TEXT, MUT_FLIP_BYTE, 0, DEC_SAME,
	 0, MS_ECORRUPT},
	/* 25 */
	{"data byte flipped", 0, 0, 100, FILL_TEXT, MUT_FLIP_LAST, 0, DEC_SAME,
	 0, MS_ECORRUPT},
	/* 26 */
	{"unknown flag", 0, 0, 100, FILL_TEXT, MUT_FLAGS_XOR, 0x04, DEC_SAME, 0,
	 MS_ECORRUPT},
	/* 27 */
	{"over the plain buffer max", 0, 0, 100, FILL_TEXT, MUT_NONE, 0,
	 DEC_SAME, 99, MS_ETOOBIG},
	/* 28 */
	{"sealed empty body, tag flipped", 1, 0, 0, FILL_NONE, MUT_FLIP_LAST, 0,
	 DEC_SAME, 0, MS_EAUTH},
	/* 29 */
	{"empty body, LZ4 flag", 0, 0, 0, FILL_NONE, MUT_FLAGS_XOR,
	 MS_REC_F_LZ4, DEC_SAME, 0, MS_ECORRUPT},
};

static void test_decode_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct ms_body_ctx enc, dec;
		struct ms_buf payload, out;
		uint8_t flags = 0;
		const char *error = NULL;
		uint8_t *plain = make_plain(c->len, c->fill);
		size_t len;
		int ret;

		init_ctx(&enc, c->sealed ? key_a : NULL, c->compress);
		switch (c->dec) {
		case DEC_SAME:
			dec = enc;
			break;
		case DEC_NOKEY:
			init_ctx(&dec, NULL, 0);
			break;
		case DEC_OTHER_KEY:
			init_ctx(&dec, key_b, 0);
			break;
		}
		ms_buf_init(&payload, 0);
		ms_buf_init(&out, c->plain_max);
		assert_int_equal(
			ms_body_encode(&enc, plain, c->len, &payload, &flags),
			0);
		if (c->compress && c->len >= 4096)
			assert_true((flags & MS_REC_F_LZ4) != 0);
		len = payload.len;
		uint8_t *p = payload.data;
		switch (c->mut) {
		case MUT_NONE:
			break;
		case MUT_TRUNCATE:
			assert_true(c->arg < len);
			len = (size_t)c->arg;
			break;
		case MUT_FLIP_BYTE:
			assert_true(c->arg < len);
			p[c->arg] ^= 0x01;
			break;
		case MUT_FLIP_LAST:
			p[len - 1] ^= 0x01;
			break;
		case MUT_FLAGS_XOR:
			flags ^= (uint8_t)c->arg;
			break;
		case MUT_LEN_ADD:
			ms_put64(p + 32, ms_get64(p + 32) + c->arg);
			break;
		case MUT_LEN_SET:
			ms_put64(p + 32, c->arg);
			break;
		case MUT_DATA_RANDOM:
			randombytes_buf(p + 40, len - 40);
			break;
		}
		/* something in the output buffer that must not survive */
		ms_buf_append(&out, "x", 1);
		ret = ms_body_decode(&dec, flags, p, len, &out, &error);
		if (ret != c->expect)
			fail_msg("bad case %zu (%s): got %s (%s), want %s", i,
				 c->name, ms_strerror(ret),
				 ret == 0 ? "-" : error,
				 ms_strerror(c->expect));
		assert_non_null(error);
		assert_int_equal(out.len, 0);
		ms_buf_free(&payload);
		ms_buf_free(&out);
		free(plain);
	}
}

/* ---- dedup keys ---- */

static void test_dedup_keys(void **state)
{
	struct ms_body_ctx a, a2, b, ka, kb;
	uint8_t da[32], da2[32], db[32], dka[32], dkb[32];
	uint8_t *plain = make_plain(1000, FILL_TEXT);

	(void)state;
	assert_int_equal(ms_body_ctx_init(&a, store_id, salt_a, NULL, 1), 0);
	assert_int_equal(ms_body_ctx_init(&a2, store_id, salt_a, NULL, 0), 0);
	assert_int_equal(ms_body_ctx_init(&b, store_id, salt_b, NULL, 1), 0);
	assert_int_equal(ms_body_ctx_init(&ka, store_id, salt_a, key_a, 1), 0);
	assert_int_equal(ms_body_ctx_init(&kb, store_id, salt_a, key_b, 1), 0);
	ms_body_dedup_key(&a, plain, 1000, da);
	ms_body_dedup_key(&a2, plain, 1000, da2);
	ms_body_dedup_key(&b, plain, 1000, db);
	ms_body_dedup_key(&ka, plain, 1000, dka);
	ms_body_dedup_key(&kb, plain, 1000, dkb);

	/* without a key the effective salt is the store salt */
	assert_memory_equal(a.salt, salt_a, 32);
	assert_memory_equal(da, da2, 32);
	/* different salts, different keys */
	assert_memory_not_equal(da, db, 32);
	/* the at-rest key changes the salt, and so the dedup key */
	assert_memory_not_equal(ka.salt, salt_a, 32);
	assert_memory_not_equal(da, dka, 32);
	assert_memory_not_equal(dka, dkb, 32);
	/* one byte of difference in the body */
	plain[999] ^= 1;
	ms_body_dedup_key(&a, plain, 1000, da2);
	assert_memory_not_equal(da, da2, 32);

	/* a store that turns sealing on later still reads its old, unsealed
	   bodies: their dedup key is checked with the store's own salt */
	{
		struct ms_buf pl, out;
		uint8_t flags = 0;
		const char *err = NULL;
		plain[999] ^= 1;
		ms_buf_init(&pl, 0);
		ms_buf_init(&out, 0);
		assert_int_equal(ms_body_encode(&a, plain, 1000, &pl, &flags), 0);
		assert_int_equal(flags & MS_REC_F_SEALED, 0);
		assert_int_equal(ms_body_decode(&ka, flags, pl.data, pl.len,
						&out, &err),
				 0);
		assert_memory_equal(out.data, plain, 1000);
		/* ...but a flipped byte is still caught */
		pl.data[pl.len - 1] ^= 1;
		assert_int_equal(ms_body_decode(&ka, flags, pl.data, pl.len,
						&out, &err),
				 MS_ECORRUPT);
		ms_buf_free(&pl);
		ms_buf_free(&out);
	}

	/* wipe clears key material */
	ms_body_ctx_wipe(&ka);
	assert_int_equal(ka.sealed, 0);
	static const uint8_t zero[32];
	assert_memory_equal(ka.key, zero, 32);
	free(plain);
}

static void test_peek(void **state)
{
	uint8_t payload[40], key[32], key0[32];
	uint64_t len = 7;

	(void)state;
	for (int i = 0; i < 32; i++)
		payload[i] = (uint8_t)i;
	ms_put64(payload + 32, 12345);
	memset(key, 0xee, 32);
	memcpy(key0, key, 32);
	assert_int_equal(ms_body_peek(payload, 39, key, &len), MS_ETRUNC);
	assert_memory_equal(key, key0, 32);
	assert_int_equal(len, 7);
	assert_int_equal(ms_body_peek(payload, 40, key, &len), 0);
	assert_memory_equal(key, payload, 32);
	assert_int_equal(len, 12345);
}

/* ---- key file ---- */

static char tmpdir[64];

static int setup_tmp(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/test_body.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown_tmp(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* HEX64 = "0" HEX63: 64 hex digits, mixed case */
#define HEX63                             \
	"0112233445566778899aabbccddeeff" \
	"0123456789abcdefFEDCBA9876543210"
#define HEX64 "0" HEX63

static const struct key_case {
	const char *name;
	const char *text; /* NULL: no file */
	mode_t mode;
	int expect;
} key_cases[] = {
	/* 0 */ {"good, newline", HEX64 "\n", 0600, 0},
	/* 1 */ {"good, no newline", HEX64, 0400, 0},
	/* 2 */ {"bad hex digit", "g" HEX63, 0600, MS_ECONFIG},
	/* 3 */ {"too short", HEX63, 0600, MS_ECONFIG},
	/* 4 */ {"too long", "0" HEX64, 0600, MS_ECONFIG},
	/* 5 */ {"too long + newline", "0" HEX64 "\n", 0600, MS_ECONFIG},
	/* 6 */ {"extra newline", HEX64 "\n\n", 0600, MS_ECONFIG},
	/* 7 */ {"extra text", HEX64 "\nkey2", 0600, MS_ECONFIG},
	/* 8 */ {"CRLF", HEX64 "\r\n", 0600, MS_ECONFIG},
	/* 9 */ {"space", HEX64 " ", 0600, MS_ECONFIG},
	/* 10 */ {"empty file", "", 0600, MS_ECONFIG},
	/* 11 */ {"mode 0644", HEX64 "\n", 0644, MS_ECONFIG},
	/* 12 */ {"mode 0640", HEX64 "\n", 0640, MS_ECONFIG},
	/* 13 */ {"mode 0602", HEX64 "\n", 0602, MS_ECONFIG},
	/* 14 */ {"missing", NULL, 0, -ENOENT},
	/* 15 */ {"leading space", " " HEX63, 0600, MS_ECONFIG},
};

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void test_key_load(void **state)
{
	static const uint8_t want[32] = {
		0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
		0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
		0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
		0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
	};
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(key_cases); i++) {
		const struct key_case *c = &key_cases[i];
		char path[128];
		uint8_t key[32];
		const char *error = NULL;
		int ret;

		snprintf(path, sizeof(path), "%s/key%zu", tmpdir, i);
		if (c->text != NULL)
			write_file(path, c->text, c->mode);
		memset(key, 0xa5, sizeof(key));
		ret = ms_body_key_load(path, key, &error);
		if (ret != c->expect)
			fail_msg("key case %zu (%s): got %s (%s)", i, c->name,
				 ms_strerror(ret), ret == 0 ? "-" : error);
		if (ret == 0) {
			assert_memory_equal(key, want, 32);
		} else {
			/* untouched on failure, and the error names the file */
			for (size_t k = 0; k < 32; k++)
				assert_int_equal(key[k], 0xa5);
			assert_non_null(strstr(error, path));
		}
	}

	/* a directory is not a key file */
	uint8_t key[32];
	const char *error;
	assert_int_equal(ms_body_key_load(tmpdir, key, &error), MS_ECONFIG);
}

static void test_key_generate(void **state)
{
	char path[128], bad[160];
	uint8_t k1[32], k2[32];
	const char *error;
	struct stat st;

	(void)state;
	snprintf(path, sizeof(path), "%s/gen.key", tmpdir);
	assert_int_equal(ms_body_key_generate(path, &error), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 65);
	assert_int_equal(ms_body_key_load(path, k1, &error), 0);

	/* never overwrites */
	assert_int_equal(ms_body_key_generate(path, &error), -EEXIST);
	assert_int_equal(ms_body_key_load(path, k2, &error), 0);
	assert_memory_equal(k1, k2, 32);

	/* a second key is different */
	snprintf(path, sizeof(path), "%s/gen2.key", tmpdir);
	assert_int_equal(ms_body_key_generate(path, &error), 0);
	assert_int_equal(ms_body_key_load(path, k2, &error), 0);
	assert_memory_not_equal(k1, k2, 32);

	/* missing directory */
	snprintf(bad, sizeof(bad), "%s/nodir/k", tmpdir);
	assert_int_equal(ms_body_key_generate(bad, &error), -ENOENT);

	/* a generated key seals and opens a body */
	struct ms_body_ctx ctx;
	struct ms_buf payload, out;
	uint8_t flags;
	init_ctx(&ctx, k2, 1);
	ms_buf_init(&payload, 0);
	ms_buf_init(&out, 0);
	assert_int_equal(ms_body_encode(&ctx, "hello", 5, &payload, &flags), 0);
	assert_int_equal(ms_body_decode(&ctx, flags, payload.data, payload.len,
					&out, &error),
			 0);
	assert_memory_equal(out.data, "hello", 5);
	ms_buf_free(&payload);
	ms_buf_free(&out);
	ms_body_ctx_wipe(&ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_empty_null),
		cmocka_unit_test(test_lz4_threshold),
		cmocka_unit_test(test_encode_limits),
		cmocka_unit_test(test_sealed_nonce),
		cmocka_unit_test(test_decode_bad),
		cmocka_unit_test(test_dedup_keys),
		cmocka_unit_test(test_peek),
		cmocka_unit_test(test_key_load),
		cmocka_unit_test(test_key_generate),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
