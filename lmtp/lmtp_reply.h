/*
 * lmtp_reply.h - every reply mstore-lmtpd sends, in one table: code,
 * enhanced status code (RFC 3463) and text.  docs/lmtp.md lists them.
 */
#ifndef LMTP_REPLY_H
#define LMTP_REPLY_H

#include "buf.h"

enum lmtp_reply {
	LMTP_R_OK,		/* 250 2.0.0 Ok */
	LMTP_R_SENDER_OK,	/* 250 2.1.0 */
	LMTP_R_RCPT_OK,		/* 250 2.1.5 */
	LMTP_R_DELIVERED,	/* 250 2.0.0 delivered */
	LMTP_R_CHUNK_OK,	/* 250 2.0.0 octets received */
	LMTP_R_DATA_GO,		/* 354 */
	LMTP_R_BYE,		/* 221 2.0.0 */
	LMTP_R_VRFY,		/* 252 2.5.2 */
	LMTP_R_UNKNOWN_CMD,	/* 500 5.5.2 */
	LMTP_R_LINE_TOO_LONG,	/* 500 5.5.2 */
	LMTP_R_USE_LHLO,	/* 500 5.5.1 */
	LMTP_R_SYNTAX,		/* 501 5.5.4 */
	LMTP_R_BAD_SENDER,	/* 501 5.1.7 */
	LMTP_R_BAD_RCPT,	/* 501 5.1.3 */
	LMTP_R_PARAM,		/* 555 5.5.4 */
	LMTP_R_SEQ_LHLO,	/* 503 5.5.1 send LHLO first */
	LMTP_R_SEQ_MAIL,	/* 503 5.5.1 need MAIL */
	LMTP_R_SEQ_NESTED,	/* 503 5.5.1 nested MAIL */
	LMTP_R_SEQ_RCPT,	/* 503 5.5.1 no valid recipients */
	LMTP_R_SEQ_DATA_BDAT,	/* 503 5.5.1 DATA and BDAT mixed */
	LMTP_R_NO_XCLIENT,	/* 550 5.7.0 */
	LMTP_R_NO_USER,		/* 550 5.1.1 */
	LMTP_R_NO_DOMAIN,	/* 550 5.1.2 */
	LMTP_R_UTF8_NEEDED,	/* 553 5.6.7 */
	LMTP_R_QUOTA_PERM,	/* 552 5.2.2 */
	LMTP_R_QUOTA_TEMP,	/* 452 4.2.2 */
	LMTP_R_TOO_BIG,		/* 552 5.3.4 */
	LMTP_R_TOO_MANY_RCPTS,	/* 452 4.5.3 */
	LMTP_R_BARE_LF,		/* 550 5.6.0 */
	LMTP_R_STORE_DOWN,	/* 451 4.3.0 */
	LMTP_R_TIMEOUT,		/* 421 4.4.2 */
	LMTP_R_TOO_MANY_ERRORS, /* 421 4.7.0 */
	LMTP_R_TOO_MANY_SESSIONS, /* 421 4.3.2 */
	LMTP_R_TOO_MANY_FROM_YOU, /* 421 4.7.0 */
	LMTP_R_SHUTDOWN,	/* 421 4.3.2 */
	LMTP_R_COUNT
};

struct lmtp_reply_def {
	int code;		/* 250, 451, ... */
	const char *enh;	/* "2.0.0"; NULL for 354 */
	const char *text;
};

const struct lmtp_reply_def *lmtp_reply_get(enum lmtp_reply r);
/*
 * Append "code enh text[ detail]\r\n" to out; detail (may be NULL) is
 * cut to 200 bytes and every byte outside printable ASCII becomes '?'.
 * 0 or MS_ETOOBIG.
 */
int lmtp_reply_append(struct ms_buf *out, enum lmtp_reply r,
		      const char *detail);
/*
 * Replies appended since the process started, summed by code (250, 451,
 * ...) in ascending order, codes never sent left out: at most max into
 * out; how many there were.  *total_r (if not NULL): all of them.
 */
struct ms_lmtp_count;
/* Count a reply written without the table (the greeting, LHLO's). */
void lmtp_reply_count(int code);
size_t lmtp_reply_counts(struct ms_lmtp_count *out, size_t max,
			 uint64_t *total_r);
/* true for 4xx/5xx replies that count as client errors (error limit). */
int lmtp_reply_is_client_error(enum lmtp_reply r);

#endif
