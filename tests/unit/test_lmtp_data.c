/*
 * test_lmtp_data.c - the DATA/BDAT decoder (lmtp/lmtp_data.c): a table
 * of wire inputs with the message each must give (dot-unstuffing, the
 * end marker, bare LF and smuggling variants, NUL and 8-bit bytes), fed
 * whole, byte by byte and split at every point; the size limit; the
 * reject policy; BDAT mode across chunks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lmtp_data.h"

struct dcase {
	const char *in;
	size_t inlen;	 /* 0: strlen */
	const char *out; /* the message */
	size_t outlen;	 /* 0: strlen */
	size_t consumed; /* 0: inlen (the marker ends the input) */
	int bare_lf;
};

#define S(x) x, sizeof(x) - 1

static const struct dcase dcases[] = {
	/* 0: the empty message */
	{ ".\r\n", 0, "", 0, 0, 0 },
	{ "a\r\n.\r\n", 0, "a\r\n", 0, 0, 0 },
	{ "a\r\n..b\r\n.\r\n", 0, "a\r\n.b\r\n", 0, 0, 0 },
	{ "..\r\n.\r\n", 0, ".\r\n", 0, 0, 0 },
	{ ".x\r\n.\r\n", 0, "x\r\n", 0, 0, 0 },
	/* 5: pipelined bytes after the marker are not consumed */
	{ "a\r\n.\r\nQUIT\r\n", 0, "a\r\n", 0, 6, 0 },
	/* bare LF: normalised, and never part of an end marker */
	{ "a\nb\r\n.\r\n", 0, "a\r\nb\r\n", 0, 0, 1 },
	{ "a\n.\nb\r\n.\r\n", 0, "a\r\n.\r\nb\r\n", 0, 0, 1 },
	{ "a\r\n.\nb\r\n.\r\n", 0, "a\r\n.\r\nb\r\n", 0, 0, 1 },
	{ "a\n.\r\nb\r\n.\r\n", 0, "a\r\n.\r\nb\r\n", 0, 0, 1 },
	/* 10: bare CR kept; ".\r" followed by something else */
	{ "a\rb\r\n.\r\n", 0, "a\rb\r\n", 0, 0, 0 },
	{ ".\rx\r\n.\r\n", 0, "\rx\r\n", 0, 0, 0 },
	{ "x\r\n.\r\r\n.\r\n", 0, "x\r\n\r\r\n", 0, 0, 0 },
	/* NUL and 8-bit bytes are kept */
	{ S("a\0b\xff\xfe\r\n.\r\n"), S("a\0b\xff\xfe\r\n"), 0, 0 },
	/* a line that starts with a dot after a bare LF is unstuffed too */
	{ "a\n..b\r\n.\r\n", 0, "a\r\n.b\r\n", 0, 0, 1 },
	/* 15: no end yet: everything is consumed */
	{ "a\r\n.", 0, "a\r\n", 0, 0, 0 },
	{ "abc", 0, "abc", 0, 0, 0 },
};

struct run {
	struct ms_buf out;
	struct lmtp_data d;
	size_t consumed;
};

static void run_begin(struct run *r, enum lmtp_bare_lf pol, uint64_t max)
{
	ms_buf_init(&r->out, 0);
	lmtp_data_begin(&r->d, LMTP_DATA_DOT, pol, max, &r->out);
	r->consumed = 0;
}

/* feed in pieces of step bytes (0: one piece), then split at split */
static void run_feed(struct run *r, const uint8_t *p, size_t n, size_t step)
{
	size_t off = 0;
	while (off < n && !r->d.done) {
		size_t k = step == 0 ? n - off
				     : (n - off < step ? n - off : step);
		/* an exact-size copy: ASan sees any overread */
		uint8_t *piece = malloc(k);
		memcpy(piece, p + off, k);
		size_t c = lmtp_data_feed(&r->d, piece, k);
		free(piece);
		assert_true(c <= k);
		r->consumed += c;
		if (c < k)
			break;
		off += k;
	}
}

static void check_case(size_t i, const struct run *r, const struct dcase *c,
		       size_t inlen, const char *how)
{
	size_t outlen = c->outlen ? c->outlen : strlen(c->out);
	size_t want_consumed = c->consumed ? c->consumed : inlen;
	bool want_done = memmem(c->in, inlen, "\r\n.\r\n", 5) != NULL ||
			 (inlen >= 3 && memcmp(c->in, ".\r\n", 3) == 0);
	if (r->out.len != outlen ||
	    (outlen && memcmp(r->out.data, c->out, outlen) != 0))
		fail_msg("dcases[%zu] (%s): wrong message (%zu bytes, want "
			 "%zu)",
			 i, how, r->out.len, outlen);
	if (r->consumed != want_consumed)
		fail_msg("dcases[%zu] (%s): consumed %zu, want %zu", i, how,
			 r->consumed, want_consumed);
	if (r->d.done != want_done)
		fail_msg("dcases[%zu] (%s): done %d", i, how, r->d.done);
	if (r->d.bare_lf != (c->bare_lf != 0))
		fail_msg("dcases[%zu] (%s): bare_lf %d", i, how, r->d.bare_lf);
	if (r->d.size != outlen || r->d.too_big)
		fail_msg("dcases[%zu] (%s): size %llu", i, how,
			 (unsigned long long)r->d.size);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(dcases); i++) {
		const struct dcase *c = &dcases[i];
		size_t inlen = c->inlen ? c->inlen : strlen(c->in);
		const uint8_t *in = (const uint8_t *)c->in;
		struct run r;
		/* whole, then byte by byte, then in 2- and 3-byte steps */
		size_t steps[] = { 0, 1, 2, 3 };
		for (size_t s = 0; s < MS_ARRAY_SIZE(steps); s++) {
			char how[32];
			snprintf(how, sizeof(how), "step %zu", steps[s]);
			run_begin(&r, LMTP_BARE_LF_NORMALIZE, 1 << 20);
			run_feed(&r, in, inlen, steps[s]);
			check_case(i, &r, c, inlen, how);
			ms_buf_free(&r.out);
		}
		/* every split into two pieces */
		for (size_t k = 0; k <= inlen; k++) {
			char how[32];
			snprintf(how, sizeof(how), "split at %zu", k);
			run_begin(&r, LMTP_BARE_LF_NORMALIZE, 1 << 20);
			run_feed(&r, in, k, 0);
			if (!r.d.done)
				run_feed(&r, in + k, inlen - k, 0);
			check_case(i, &r, c, inlen, how);
			ms_buf_free(&r.out);
		}
	}
}

/* Past the limit nothing more is kept, but the input is read to the end
   marker, and the size still counts every byte. */
static void test_too_big(void **state)
{
	(void)state;
	const char *in = "0123456789\r\n0123456789\r\n.\r\nNEXT";
	struct run r;
	run_begin(&r, LMTP_BARE_LF_NORMALIZE, 24);
	run_feed(&r, (const uint8_t *)in, strlen(in), 0);
	assert_false(r.d.too_big); /* exactly 24 bytes: at the limit */
	assert_true(r.d.done);
	assert_int_equal(r.out.len, 24);
	ms_buf_free(&r.out);

	run_begin(&r, LMTP_BARE_LF_NORMALIZE, 23);
	run_feed(&r, (const uint8_t *)in, strlen(in), 5);
	assert_true(r.d.too_big);
	assert_true(r.d.done);
	assert_int_equal(r.consumed, strlen(in) - 4);
	assert_int_equal(r.d.size, 24);
	assert_true(r.out.len <= 23);
	ms_buf_free(&r.out);

	/* the output buffer's own max is a bound too */
	struct ms_buf small;
	struct lmtp_data d;
	ms_buf_init(&small, 8);
	lmtp_data_begin(&d, LMTP_DATA_DOT, LMTP_BARE_LF_NORMALIZE, 1 << 20,
			&small);
	assert_int_equal(lmtp_data_feed(&d, (const uint8_t *)in, strlen(in)),
			 strlen(in) - 4);
	assert_true(d.too_big && d.done);
	assert_true(small.len <= 8);
	ms_buf_free(&small);
}

static void test_reject_policy(void **state)
{
	(void)state;
	struct run r;
	const char *in = "a\nb\r\n.\r\n";
	run_begin(&r, LMTP_BARE_LF_REJECT, 1 << 20);
	run_feed(&r, (const uint8_t *)in, strlen(in), 0);
	assert_true(r.d.done && r.d.bare_lf);
	ms_buf_free(&r.out);
	in = "a\r\nb\r\n.\r\n";
	run_begin(&r, LMTP_BARE_LF_REJECT, 1 << 20);
	run_feed(&r, (const uint8_t *)in, strlen(in), 0);
	assert_true(r.d.done);
	assert_false(r.d.bare_lf);
	ms_buf_free(&r.out);
}

/* BDAT: no unstuffing, no end marker; a CRLF split between chunks is a
   CRLF, a bare LF is normalised; consumed is always everything. */
static void test_raw(void **state)
{
	(void)state;
	struct ms_buf out;
	struct lmtp_data d;
	ms_buf_init(&out, 0);
	lmtp_data_begin(&d, LMTP_DATA_RAW, LMTP_BARE_LF_NORMALIZE, 1 << 20,
			&out);
	const char *chunks[] = { "a\r", "\n.\r\n..x\r", "\nb\nc", "" };
	for (size_t i = 0; i < MS_ARRAY_SIZE(chunks); i++)
		assert_int_equal(lmtp_data_feed(&d, (const uint8_t *)chunks[i],
						strlen(chunks[i])),
				 strlen(chunks[i]));
	const char *want = "a\r\n.\r\n..x\r\nb\r\nc";
	assert_int_equal(out.len, strlen(want));
	assert_memory_equal(out.data, want, out.len);
	assert_true(d.bare_lf);
	assert_false(d.done);
	ms_buf_free(&out);

	/* a LF first in the message is bare */
	ms_buf_init(&out, 0);
	lmtp_data_begin(&d, LMTP_DATA_RAW, LMTP_BARE_LF_NORMALIZE, 3, &out);
	assert_int_equal(lmtp_data_feed(&d, (const uint8_t *)"\nabcdef", 7),
			 7);
	assert_true(d.bare_lf && d.too_big);
	assert_int_equal(d.size, 8);
	ms_buf_free(&out);
}

/* A long line of 1 MiB passes through unchanged. */
static void test_long_line(void **state)
{
	(void)state;
	size_t n = 1 << 20;
	uint8_t *in = malloc(n + 5);
	memset(in, 'x', n);
	memcpy(in + n, "\r\n.\r\n", 5);
	struct run r;
	run_begin(&r, LMTP_BARE_LF_NORMALIZE, 2 << 20);
	run_feed(&r, in, n + 5, 4096);
	assert_true(r.d.done);
	assert_int_equal(r.out.len, n + 2);
	assert_memory_equal(r.out.data, in, n + 2);
	ms_buf_free(&r.out);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_reject_policy),
		cmocka_unit_test(test_raw),
		cmocka_unit_test(test_long_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
