/*
 * fuzz_seg.c - libFuzzer target for the windowed segment reader
 * (ms_seg_reader_* in store/seg.c).  The input is written to a memfd, as
 * a segment file; the reader then walks it from offset 64 (0 if shorter)
 * until it says 0 (the end) or an error, and once more from an offset the
 * input picks, so that windows are refilled and reused at odd places.
 *
 * Checked on the way: a record returned is one ms_rec_decode() accepts on
 * the same bytes of the input; the offset moves by exactly its size on
 * success and not at all on failure; 0 comes only at the end of the file
 * or where only zeros are left (prepared space, docs/format.md);
 * ETRUNC only when the record does not fit in the file.  A HOLE record is
 * its header alone (its payload is a hole: only the header bytes are
 * returned), but the file must still reach its end: the reader says
 * ETRUNC where ms_rec_decode(), which needs the header only, may accept
 * it.  A broken promise aborts.  Seeds: tests/fuzz/corpus/seg/.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Istore \
 *         store/buf.c store/msg.c store/rec.c store/seg.c \
 *         tests/fuzz/fuzz_seg.c -lxxhash -o fuzz_seg
 *   ./fuzz_seg -max_total_time=60 tests/fuzz/corpus/seg
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create(), when built without the Makefile */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "seg.h"

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_seg: %s:%d: %s\n", __FILE__, \
				__LINE__, #cond);                          \
			abort();                                           \
		}                                                          \
	} while (0)

/* Walk from off; at most max records. */
static void walk(struct ms_seg_reader *r, const uint8_t *data, size_t size,
		 uint64_t off, unsigned max)
{
	ms_seg_reader_seek(r, off);
	for (unsigned n = 0; n < max; n++) {
		struct ms_rec_hdr h;
		const uint8_t *rec = NULL;
		const char *error = NULL;
		uint64_t at = r->off;
		int ret = ms_seg_reader_next(r, &h, &rec, &error);

		if (ret == 0) {
			/* the end of the file, or prepared space: zeros
			   from here to the end */
			CHECK(r->off == at && at <= size);
			for (size_t i = (size_t)at; i < size; i++)
				CHECK(data[i] == 0);
			return;
		}
		if (ret < 0) {
			CHECK(error != NULL);
			CHECK(r->off == at);
			CHECK(at < size);
			/* the same verdict as the pure decoder on the bytes */
			struct ms_rec_hdr h2;
			const char *e2 = NULL;
			int want = ms_rec_decode(data + at, size - at, &h2, &e2);
			/* except a HOLE that passes the end of the file: the
			   reader says truncated before it looks at the sum,
			   the decoder (header only) checks the sum */
			struct ms_rec_hdr h3;
			const char *e3 = NULL;
			if (size - at >= MS_REC_HDR_SIZE &&
			    ms_rec_check_hdr(data + at, &h3, &e3) == 0 &&
			    h3.type == MS_REC_HOLE &&
			    h3.len > size - at - MS_REC_HDR_SIZE)
				CHECK(ret == MS_ETRUNC &&
				      (want == 0 || want == MS_ECORRUPT));
			else
				CHECK(ret == want);
			return;
		}
		CHECK(ret == 1);
		CHECK(at < size);
		CHECK(h.len <= size - at - MS_REC_HDR_SIZE);
		CHECK(r->off == at + MS_REC_HDR_SIZE + h.len);
		CHECK(memcmp(rec, data + at,
			     MS_REC_HDR_SIZE +
				     (h.type == MS_REC_HOLE ? 0 : h.len)) == 0);
		struct ms_rec_hdr h2;
		const char *e2 = NULL;
		CHECK(ms_rec_decode(data + at, size - at, &h2, &e2) == 0);
		CHECK(h2.len == h.len && h2.seq == h.seq && h2.sum == h.sum);
		if (h.type == MS_REC_SEAL) {
			struct ms_seg_seal s;
			const char *e3 = NULL;
			if (ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, h.len,
					       &s, &e3) == 0 &&
			    s.seal_off == at) {
				/* the sum over everything before the seal,
				   through the window */
				const uint8_t *all;
				CHECK(ms_seg_reader_peek(r, 0, (size_t)at,
							 &all) == 0);
				CHECK(memcmp(all, data, (size_t)at) == 0);
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz_seg", MFD_CLOEXEC);
	if (fd < 0) {
		perror("memfd_create");
		abort();
	}
	CHECK(ms_pwrite_full(fd, data, size, 0) == 0);

	struct ms_seg_reader r;
	CHECK(ms_seg_reader_init(&r, fd) == 0);
	CHECK(r.size == size);

	const uint8_t *p;
	int ret = ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p);
	if (size >= MS_SEG_HDR_SIZE) {
		struct ms_seg_hdr h;
		const char *error = NULL;
		CHECK(ret == 0);
		CHECK(memcmp(p, data, MS_SEG_HDR_SIZE) == 0);
		(void)ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &h, &error);
	} else {
		CHECK(ret == MS_ETRUNC);
	}

	walk(&r, data, size, size >= MS_SEG_HDR_SIZE ? MS_SEG_HDR_SIZE : 0,
	     100000);
	/* again from an offset taken from the input's last bytes */
	if (size >= 2) {
		uint64_t off = ms_get16(data + size - 2) % (size + 1);
		walk(&r, data, size, off, 100000);
	}

	ms_seg_reader_free(&r);
	close(fd);
	return 0;
}
