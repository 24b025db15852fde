/*
 * fuzz_event.c - libFuzzer target for the event payload codecs
 * (store/event.c).
 *
 * Input: the first byte is the record type, the rest the payload.  Whatever
 * decodes must encode back to exactly the same bytes, and every list item
 * must be readable through the accessors; else the target aborts.  A
 * refusal must be MS_ETRUNC or MS_ECORRUPT with an error text.  Seeds (one
 * valid payload per type): tests/fuzz/corpus/event/.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Istore \
 *         tests/fuzz/fuzz_event.c store/event.c store/rec.c store/buf.c \
 *         store/msg.c -lxxhash -o fuzz_event
 *   ./fuzz_event -max_total_time=90 tests/fuzz/corpus/event
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, uint8_t type)
{
	fprintf(stderr, "fuzz_event: type %u: %s\n", type, what);
	abort();
}

/* Read every item of the lists of ev; they must all be there. */
static void walk_lists(const struct ms_event *ev)
{
	struct ms_event_kw_iter it;
	const char *kw;
	size_t len;
	uint32_t n = 0, lo, hi;
	struct ms_event_drop drop;
	uint64_t prev_off = 0;
	int ret;

	ms_event_kw_iter_init(&it, ev);
	while ((ret = ms_event_kw_next(&it, &kw, &len)) == 1) {
		if (!ms_event_name_valid(kw, len, MS_EVENT_KEYWORD_MAX))
			die("decoded keyword fails the name rule", ev->type);
		n++;
	}
	if (ret != 0)
		die("keyword iterator failed on a decoded event", ev->type);
	for (uint32_t i = 0; ms_event_range(ev, i, &lo, &hi) == 0; i++) {
		if (lo == 0 || lo > hi)
			die("decoded range breaks the rules", ev->type);
	}
	for (uint32_t i = 0; ms_event_drop(ev, i, &drop) == 0; i++) {
		static const uint8_t zero[MS_EVENT_BODY_KEY_SIZE];
		if (drop.off < MS_EVENT_SEG_HDR_SIZE ||
		    (i > 0 && drop.off <= prev_off))
			die("decoded drop offsets break the rules", ev->type);
		if (drop.type != MS_REC_BODY && drop.type != MS_REC_PLACE &&
		    drop.type != MS_REC_NOOP)
			die("decoded drop has a type that cannot be dropped",
			    ev->type);
		if (drop.type != MS_REC_BODY &&
		    memcmp(drop.key, zero, sizeof(zero)) != 0)
			die("decoded drop has a key on a non-BODY", ev->type);
		prev_off = drop.off;
	}
	if (n > 0 && ms_event_keyword(ev, n - 1, &kw, &len) != 0)
		die("last keyword not found by index", ev->type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_event ev;
	struct ms_buf out;
	const char *error = NULL;
	uint8_t type;
	int ret;

	if (size == 0)
		return 0;
	type = data[0];
	ret = ms_event_decode(type, data + 1, size - 1, &ev, &error);
	if (ret != 0) {
		if (ret != MS_ETRUNC && ret != MS_ECORRUPT)
			die("decode returned an unexpected code", type);
		if (error == NULL || error[0] == '\0')
			die("decode failed without an error text", type);
		return 0;
	}
	if (ev.type != type)
		die("decoded event has another type", type);
	walk_lists(&ev);
	ms_buf_init(&out, 0);
	ret = ms_event_encode(&ev, &out);
	if (ret != 0) {
		fprintf(stderr, "fuzz_event: encode: %s\n", ms_strerror(ret));
		die("a decoded event does not encode", type);
	}
	if (out.len != size - 1 ||
	    (out.len > 0 && memcmp(out.data, data + 1, out.len) != 0))
		die("re-encoded bytes differ from the input", type);
	ms_buf_free(&out);
	return 0;
}
