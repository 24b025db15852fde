/*
 * lmtp_reply.c - the reply table; see lmtp_reply.h.
 */
#include <stdio.h>
#include <string.h>

#include "lmtp_reply.h"
#include "proto.h"

/* what lmtp_reply_append() appended, by reply (the process is one
   thread: the loop) */
static uint64_t n_sent[LMTP_R_COUNT];
/* and those written without the table (greeting, LHLO), codes 200..599 */
static uint64_t n_other[400];

static const struct lmtp_reply_def replies[LMTP_R_COUNT] = {
	[LMTP_R_OK] = { 250, "2.0.0", "Ok" },
	[LMTP_R_SENDER_OK] = { 250, "2.1.0", "Sender ok" },
	[LMTP_R_RCPT_OK] = { 250, "2.1.5", "Recipient ok" },
	[LMTP_R_DELIVERED] = { 250, "2.0.0", "Delivered" },
	[LMTP_R_CHUNK_OK] = { 250, "2.0.0", "Chunk received" },
	[LMTP_R_DATA_GO] = { 354, NULL, "End data with <CR><LF>.<CR><LF>" },
	[LMTP_R_BYE] = { 221, "2.0.0", "Bye" },
	[LMTP_R_VRFY] = { 252, "2.5.2",
			  "Cannot VRFY user; send a message to find out" },
	[LMTP_R_UNKNOWN_CMD] = { 500, "5.5.2", "Command not recognized" },
	[LMTP_R_LINE_TOO_LONG] = { 500, "5.5.2", "Line too long" },
	[LMTP_R_USE_LHLO] = { 500, "5.5.1", "This is LMTP: use LHLO" },
	[LMTP_R_SYNTAX] = { 501, "5.5.4", "Syntax error" },
	[LMTP_R_BAD_SENDER] = { 501, "5.1.7", "Bad sender address syntax" },
	[LMTP_R_BAD_RCPT] = { 501, "5.1.3", "Bad recipient address syntax" },
	[LMTP_R_PARAM] = { 555, "5.5.4", "Parameter not supported" },
	[LMTP_R_SEQ_LHLO] = { 503, "5.5.1", "Send LHLO first" },
	[LMTP_R_SEQ_MAIL] = { 503, "5.5.1", "Need MAIL first" },
	[LMTP_R_SEQ_NESTED] = { 503, "5.5.1", "Nested MAIL command" },
	[LMTP_R_SEQ_RCPT] = { 503, "5.5.1", "No valid recipients" },
	[LMTP_R_SEQ_DATA_BDAT] = { 503, "5.5.1",
				   "Bad sequence of commands during BDAT" },
	[LMTP_R_NO_XCLIENT] = { 550, "5.7.0", "Not a trusted gateway" },
	[LMTP_R_NO_USER] = { 550, "5.1.1", "No such user" },
	[LMTP_R_NO_DOMAIN] = { 550, "5.1.2", "Domain not handled here" },
	[LMTP_R_UTF8_NEEDED] = { 553, "5.6.7",
				 "Non-ASCII address without SMTPUTF8" },
	[LMTP_R_QUOTA_PERM] = { 552, "5.2.2", "Mailbox full" },
	[LMTP_R_QUOTA_TEMP] = { 452, "4.2.2", "Mailbox full" },
	[LMTP_R_TOO_BIG] = { 552, "5.3.4", "Message too big" },
	[LMTP_R_TOO_MANY_RCPTS] = { 452, "4.5.3", "Too many recipients" },
	[LMTP_R_BARE_LF] = { 550, "5.6.0",
			     "Bare LF line endings are not accepted" },
	[LMTP_R_STORE_DOWN] = { 451, "4.3.0", "Store unavailable; try later" },
	[LMTP_R_TIMEOUT] = { 421, "4.4.2", "Timeout; closing" },
	[LMTP_R_TOO_MANY_ERRORS] = { 421, "4.7.0", "Too many errors; closing" },
	[LMTP_R_TOO_MANY_SESSIONS] = { 421, "4.3.2",
				       "Too many sessions; try later" },
	[LMTP_R_TOO_MANY_FROM_YOU] = { 421, "4.7.0",
				       "Too many sessions from your address" },
	[LMTP_R_SHUTDOWN] = { 421, "4.3.2", "Shutting down" },
};

const struct lmtp_reply_def *lmtp_reply_get(enum lmtp_reply r)
{
	if ((unsigned)r >= LMTP_R_COUNT)
		r = LMTP_R_STORE_DOWN; /* never reached: a bug must not 250 */
	return &replies[r];
}

int lmtp_reply_append(struct ms_buf *out, enum lmtp_reply r,
		      const char *detail)
{
	const struct lmtp_reply_def *d = lmtp_reply_get(r);
	char line[512];
	int n = snprintf(line, sizeof(line), "%d %s%s%s", d->code,
			 d->enh ? d->enh : "", d->enh ? " " : "", d->text);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	size_t len = (size_t)n;
	if (detail != NULL && detail[0] != '\0') {
		line[len++] = ' ';
		line[len++] = '(';
		for (size_t i = 0; i < 200 && detail[i] != '\0'; i++) {
			unsigned char ch = (unsigned char)detail[i];
			line[len++] = (char)(ch < 0x20 || ch >= 0x7f ? '?' : ch);
		}
		line[len++] = ')';
	}
	line[len++] = '\r';
	line[len++] = '\n';
	int ret = ms_buf_append(out, line, len);
	if (ret == 0 && (unsigned)r < LMTP_R_COUNT)
		n_sent[r]++;
	return ret;
}

void lmtp_reply_count(int code)
{
	if (code >= 200 && code <= 599)
		n_other[code - 200]++;
}

size_t lmtp_reply_counts(struct ms_lmtp_count *out, size_t max,
			 uint64_t *total_r)
{
	uint64_t by_code[400];
	size_t n = 0;
	uint64_t total = 0;

	memcpy(by_code, n_other, sizeof(by_code));
	for (int r = 0; r < LMTP_R_COUNT; r++) {
		int code = replies[r].code;
		if (code >= 200 && code <= 599)
			by_code[code - 200] += n_sent[r];
	}
	for (int k = 0; k < 400; k++) {
		if (by_code[k] == 0)
			continue;
		total += by_code[k];
		if (n < max) {
			out[n].code = (uint16_t)(k + 200);
			out[n].count = by_code[k];
			n++;
		}
	}
	if (total_r != NULL)
		*total_r = total;
	return n;
}

int lmtp_reply_is_client_error(enum lmtp_reply r)
{
	switch (r) {
	case LMTP_R_UNKNOWN_CMD:
	case LMTP_R_LINE_TOO_LONG:
	case LMTP_R_USE_LHLO:
	case LMTP_R_SYNTAX:
	case LMTP_R_BAD_SENDER:
	case LMTP_R_BAD_RCPT:
	case LMTP_R_PARAM:
	case LMTP_R_SEQ_LHLO:
	case LMTP_R_SEQ_MAIL:
	case LMTP_R_SEQ_NESTED:
	case LMTP_R_SEQ_RCPT:
	case LMTP_R_SEQ_DATA_BDAT:
	case LMTP_R_NO_XCLIENT:
	case LMTP_R_UTF8_NEEDED:
		return 1;
	default:
		return 0;
	}
}
