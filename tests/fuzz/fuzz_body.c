/*
 * fuzz_body.c - libFuzzer target for BODY payload decoding (store/body.c).
 *
 * Input: one byte of record flags, then the payload.  It is decoded with
 * a keyed and an unkeyed context (fixed store id, salt and key), and
 * peeked.  A decode that succeeds must give exactly the stated plain
 * length.  Seeds: tests/fuzz/corpus/body/ (payloads made by
 * ms_body_encode with the same fixed context, flags byte first).
 *
 *   clang -fsanitize=fuzzer,address,undefined -Istore tests/fuzz/fuzz_body.c \
 *         store/body.c store/buf.c store/msg.c store/rec.c \
 *         -lsodium -llz4 -lxxhash -o fuzz_body
 */
#include <stdlib.h>

#include "body.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fz_store_id[16] = {'f', 'u', 'z', 'z'};
static const uint8_t fz_salt[32] = {'s', 'a', 'l', 't'};
static const uint8_t fz_key[32] = {'k', 'e', 'y'};

/* Set once, read-only afterwards: no state carries from input to input. */
static struct ms_body_ctx keyed, plain_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ms_body_ctx_init(&keyed, fz_store_id, fz_salt, fz_key, 1) < 0 ||
	    ms_body_ctx_init(&plain_ctx, fz_store_id, fz_salt, NULL, 1) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_buf out;
	const char *error;
	uint8_t dedup[32];
	uint64_t plen;

	if (size < 1)
		return 0;
	/* a small plain limit keeps lying lengths from costing memory */
	ms_buf_init(&out, 1 << 20);
	for (int k = 0; k < 2; k++) {
		const struct ms_body_ctx *ctx = k ? &keyed : &plain_ctx;
		int ret = ms_body_decode(ctx, data[0], data + 1, size - 1, &out,
					 &error);
		if (ret == 0) {
			if (ms_body_peek(data + 1, size - 1, dedup, &plen) !=
				    0 ||
			    plen != out.len)
				abort();
		} else if (out.len != 0) {
			abort();
		}
	}
	ms_buf_free(&out);
	return 0;
}
