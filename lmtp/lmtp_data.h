/*
 * lmtp_data.h - the message decoder for DATA and BDAT: bytes from the
 * wire in, the message as it is stored out, in pieces of any size (a
 * chunk boundary may fall anywhere, even inside "\r\n.\r\n").  Pure: no
 * I/O; fuzzed by tests/fuzz/fuzz_lmtp_data.c, which checks that any
 * split of the input gives the same output.
 *
 * DATA (LMTP_DATA_DOT): the message ends at CRLF "." CRLF (the CRLF of
 * the DATA command counts, so an empty message is ".\r\n").  A line that
 * starts with "." loses that dot (RFC 5321 4.5.2).  Only a "." line
 * between two real CRLFs ends the message: "\n.\n", "\r\n.\n" and
 * "\n.\r\n" do not (SMTP smuggling); such a lone "." line is kept as it
 * is.
 *
 * BDAT (LMTP_DATA_RAW): every byte is message; the session feeds exactly
 * the chunk's bytes and says when the last chunk is done.
 *
 * Bare LF (a LF without CR before it), in both modes, by policy:
 *   LMTP_BARE_LF_NORMALIZE  stored as CRLF (bodies are kept with CRLF
 *                           line ends, DESIGN §8);
 *   LMTP_BARE_LF_REJECT     flagged (bare_lf); the session refuses the
 *                           message when it ends.
 * A bare CR is kept as it is.  NUL and 8-bit bytes are kept as they are.
 *
 * Size: size counts the bytes of the message as stored (after unstuffing
 * and normalising).  Past max_size nothing more is appended (too_big is
 * set) but the input is still consumed to its end, so the session can
 * answer 552 at the right place in the stream.  The output buffer is the
 * caller's; bytes are appended to it (its own max is a second bound: a
 * failed append sets too_big too).
 */
#ifndef LMTP_DATA_H
#define LMTP_DATA_H

#include <stdbool.h>

#include "buf.h"

enum lmtp_data_mode { LMTP_DATA_DOT, LMTP_DATA_RAW };
enum lmtp_bare_lf { LMTP_BARE_LF_NORMALIZE, LMTP_BARE_LF_REJECT };

struct lmtp_data {
	enum lmtp_data_mode mode;
	enum lmtp_bare_lf bare_lf_policy;
	struct ms_buf *out;
	uint64_t max_size;
	uint64_t size;	/* message bytes so far (also past max_size) */
	int state;	/* private */
	bool prev_cr;	/* private: the last byte emitted was a CR */
	bool too_big;
	bool bare_lf;	/* a bare LF was seen */
	bool done;	/* DOT: the end marker was read */
};

void lmtp_data_begin(struct lmtp_data *d, enum lmtp_data_mode mode,
		     enum lmtp_bare_lf policy, uint64_t max_size,
		     struct ms_buf *out);
/*
 * Feed n bytes.  Returns how many were consumed: all of them, except in
 * DOT mode when the end marker is among them: then the count ends just
 * after it (the rest is the client's next commands) and done is set.
 * Feeding after done consumes nothing.
 */
size_t lmtp_data_feed(struct lmtp_data *d, const uint8_t *p, size_t n);

#endif
