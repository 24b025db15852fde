/*
 * lmtp_data.c - DATA/BDAT decoder; see lmtp_data.h.
 *
 * States (DOT mode; RAW mode stays in S_MID):
 *   S_START_CRLF  at the start of a line that follows a real CRLF (or
 *                 the DATA command): ".\r\n" here ends the message
 *   S_START_LF    at the start of a line that follows a bare LF
 *   S_DOT         after a leading "." (held back; start kind in dot_lf)
 *   S_DOT_CR      after a leading ".\r" (both held back)
 *   S_MID         inside a line
 * A held-back dot is dropped (unstuffed) as soon as a byte other than the
 * line end follows it, and kept when the line is a lone "." that does not
 * end the message.
 */
#include "lmtp_data.h"

enum {
	S_START_CRLF,
	S_START_LF,
	S_DOT,
	S_DOT_LF, /* S_DOT, after a bare LF */
	S_DOT_CR,
	S_DOT_CR_LF, /* S_DOT_CR, after a bare LF */
	S_MID,
};

void lmtp_data_begin(struct lmtp_data *d, enum lmtp_data_mode mode,
		     enum lmtp_bare_lf policy, uint64_t max_size,
		     struct ms_buf *out)
{
	*d = (struct lmtp_data){ .mode = mode, .bare_lf_policy = policy,
				 .out = out, .max_size = max_size };
	d->state = mode == LMTP_DATA_DOT ? S_START_CRLF : S_MID;
}

static void emit(struct lmtp_data *d, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	uint64_t before = d->size;
	d->size += n;
	d->prev_cr = p[n - 1] == '\r';
	if (d->too_big)
		return;
	/* keep exactly the first max_size bytes, however the input was
	   cut into pieces (the fuzz target checks that) */
	size_t fit = d->size > d->max_size ? (size_t)(d->max_size - before) : n;
	if (ms_buf_append(d->out, p, fit) < 0 || fit < n)
		d->too_big = true;
}

/* A LF that ends a line; returns the state of the next line's start. */
static int line_end(struct lmtp_data *d)
{
	if (d->prev_cr) {
		emit(d, (const uint8_t *)"\n", 1);
		return S_START_CRLF;
	}
	d->bare_lf = true;
	emit(d, (const uint8_t *)"\r\n", 2);
	return S_START_LF;
}

/* Bytes inside a line, up to (not including) the next LF; returns the
   count consumed. */
static size_t mid_line(struct lmtp_data *d, const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != '\n')
		i++;
	emit(d, p, i);
	return i;
}

static size_t feed_raw(struct lmtp_data *d, const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		i += mid_line(d, p + i, n - i);
		if (i < n) {
			(void)line_end(d);
			i++;
		}
	}
	return n;
}

size_t lmtp_data_feed(struct lmtp_data *d, const uint8_t *p, size_t n)
{
	size_t i = 0;

	if (d->mode == LMTP_DATA_RAW)
		return feed_raw(d, p, n);
	while (i < n && !d->done) {
		uint8_t b = p[i];
		switch (d->state) {
		case S_START_CRLF:
		case S_START_LF:
			d->prev_cr = false;
			if (b == '.') {
				d->state = d->state == S_START_CRLF ? S_DOT
								    : S_DOT_LF;
				i++;
			} else {
				d->state = S_MID;
			}
			break;
		case S_DOT:
		case S_DOT_LF:
			if (b == '\r') {
				d->state = d->state == S_DOT ? S_DOT_CR
							     : S_DOT_CR_LF;
				i++;
			} else if (b == '\n') {
				/* ".\n": not an end; keep the lone dot */
				emit(d, (const uint8_t *)".", 1);
				d->state = line_end(d);
				i++;
			} else {
				/* a stuffed dot: dropped */
				d->state = S_MID;
			}
			break;
		case S_DOT_CR:
		case S_DOT_CR_LF:
			if (b == '\n' && d->state == S_DOT_CR) {
				d->done = true;
				i++;
			} else if (b == '\n') {
				/* "\n.\r\n": not an end either */
				emit(d, (const uint8_t *)".\r\n", 3);
				d->state = S_START_CRLF;
				i++;
			} else {
				/* ".\rX": the dot was stuffing */
				emit(d, (const uint8_t *)"\r", 1);
				d->prev_cr = true;
				d->state = S_MID;
			}
			break;
		default: /* S_MID */
			if (b == '\n') {
				d->state = line_end(d);
				i++;
			} else {
				i += mid_line(d, p + i, n - i);
			}
			break;
		}
	}
	return i;
}
