/*
 * fuzz_lmtp_data.c - libFuzzer target for the DATA/BDAT decoder
 * (lmtp/lmtp_data.c).
 *
 * Input: byte 0 picks the mode (bit 0: BDAT), the policy (bit 1:
 * reject bare LF) and the size limit (bits 2..7, as a small number of
 * bytes, or "large"); byte 1 picks a split point; the rest is the wire
 * stream.  It is decoded three ways: whole, split in two, and byte by
 * byte; the three must agree on the message, the bytes consumed and
 * every flag.  Then the message itself must be sane: within the limit,
 * with no bare LF when the stream had none, and in DATA mode (when the
 * end marker was read) never longer than the input.
 * Seeds: tests/fuzz/corpus/lmtp_data/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmtp_data.h"

struct res {
	struct ms_buf out;
	struct lmtp_data d;
	size_t consumed;
};

static void decode(struct res *r, int raw, int reject, uint64_t max,
		   const uint8_t *p, size_t n, size_t step)
{
	ms_buf_init(&r->out, 0);
	lmtp_data_begin(&r->d, raw ? LMTP_DATA_RAW : LMTP_DATA_DOT,
			reject ? LMTP_BARE_LF_REJECT : LMTP_BARE_LF_NORMALIZE,
			max, &r->out);
	r->consumed = 0;
	size_t off = 0;
	while (off < n && !r->d.done) {
		size_t k = step == 0 || n - off < step ? n - off : step;
		size_t c = lmtp_data_feed(&r->d, p + off, k);
		if (c > k)
			abort();
		r->consumed += c;
		if (c < k)
			break;
		off += k;
	}
}

static void same(const struct res *a, const struct res *b)
{
	if (a->out.len != b->out.len ||
	    (a->out.len && memcmp(a->out.data, b->out.data, a->out.len)) ||
	    a->consumed != b->consumed || a->d.done != b->d.done ||
	    a->d.too_big != b->d.too_big || a->d.bare_lf != b->d.bare_lf ||
	    a->d.size != b->d.size) {
		fprintf(stderr, "decodings differ\n");
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	int raw = data[0] & 1, reject = (data[0] >> 1) & 1;
	unsigned lim = data[0] >> 2;
	uint64_t max = lim == 63 ? (uint64_t)1 << 30 : (uint64_t)lim * 7;
	const uint8_t *p = data + 2;
	size_t n = size - 2, split = n ? data[1] % (n + 1) : 0;
	struct res whole, two, bytes;

	decode(&whole, raw, reject, max, p, n, 0);
	decode(&two, raw, reject, max, p, split, 0);
	if (!two.d.done && two.consumed == split) {
		size_t c = lmtp_data_feed(&two.d, p + split, n - split);
		two.consumed += c;
	}
	decode(&bytes, raw, reject, max, p, n, 1);
	same(&whole, &two);
	same(&whole, &bytes);

	if (whole.out.len > max ||
	    (!whole.d.too_big && whole.d.size != whole.out.len))
		abort();
	if (raw && whole.consumed != n)
		abort();
	if (!memchr(p, '\n', n) && whole.d.bare_lf)
		abort();
	/* unstuffing only shortens; only a bare LF (-> CRLF) grows */
	size_t lfs = 0;
	for (size_t i = 0; i < whole.consumed; i++)
		lfs += p[i] == '\n';
	if (whole.d.size > whole.consumed + lfs)
		abort();
	for (size_t i = 0; i < whole.out.len; i++)
		if (whole.out.data[i] == '\n' &&
		    (i == 0 || whole.out.data[i - 1] != '\r'))
			abort(); /* every LF stored is part of a CRLF */
	ms_buf_free(&whole.out);
	ms_buf_free(&two.out);
	ms_buf_free(&bytes.out);
	return 0;
}
