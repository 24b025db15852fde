/*
 * lmtp_cmd.h - the LMTP command parser (RFC 2033 over RFC 5321 syntax):
 * one command line in, one struct out.  Pure: no I/O, no allocation, no
 * state, safe on any bytes (fuzzed by tests/fuzz/fuzz_lmtp_cmd.c, table
 * tested by tests/unit/test_lmtp_cmd.c).
 *
 * The line is given without its line end, as (pointer, length); it may
 * hold any byte, NUL included.  Everything a parsed command points to
 * (arguments, the address, parameter values) is BORROWED from the line:
 * valid while the line is, and not NUL-terminated.
 *
 * What is accepted:
 *   LHLO domain            a domain or an address literal, 1..255 bytes
 *   MAIL FROM:<path> [params]   path may be <>; params SIZE=n, BODY=7BIT
 *                          or BODY=8BITMIME, SMTPUTF8
 *   RCPT TO:<path>         path may be <Postmaster> without a domain; no
 *                          parameters (DSN is not announced)
 *   DATA, RSET, QUIT       no argument
 *   NOOP [string]          the string is ignored
 *   VRFY string            answered without saying anything (252)
 *   BDAT size [LAST]       size: decimal, at most LMTP_CMD_MAX_CHUNK
 *   XCLIENT attr=value ... NAME ADDR PORT PROTO HELO LOGIN DESTADDR
 *                          DESTPORT; values in xtext (RFC 3461)
 *   XFORWARD attr=value ...  NAME ADDR PORT PROTO HELO IDENT SOURCE
 *   HELO, EHLO             recognised only to be refused (this is LMTP)
 * Verbs and parameter names are case-insensitive.  Source routes
 * (<@a,@b:user@d>) are accepted and dropped, as RFC 5321 asks.  A single
 * space separates verb and argument; "MAIL FROM: <a@b>" (a space after
 * the colon) is accepted, as many clients send it.
 *
 * Addresses: local part as dot-string or quoted-string, domain as
 * sub-domains or an address literal.  Non-ASCII bytes must be valid
 * UTF-8; the parser flags them (utf8) and the session refuses them
 * unless the transaction asked for SMTPUTF8.
 *
 * DIAGNOSTICS: lmtp_cmd_parse() returns 0 or one of the LMTP_CMD_E*
 * codes below, each meaning one reply (lmtp_reply.h), with *error_r
 * saying what was wrong (a static string).
 */
#ifndef LMTP_CMD_H
#define LMTP_CMD_H

#include <stdbool.h>

#include "proto.h"

/* RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets; we take
   up to the store's user name (255) in the local part. */
#define LMTP_CMD_MAX_LOCAL 255
#define LMTP_CMD_MAX_DOMAIN 255
#define LMTP_CMD_MAX_PATH 512
#define LMTP_CMD_MAX_CHUNK ((uint64_t)1 << 40)
#define LMTP_CMD_MAX_XVALUE 255

enum lmtp_verb {
	LMTP_CMD_LHLO = 1,
	LMTP_CMD_HELO,
	LMTP_CMD_EHLO,
	LMTP_CMD_MAIL,
	LMTP_CMD_RCPT,
	LMTP_CMD_DATA,
	LMTP_CMD_BDAT,
	LMTP_CMD_RSET,
	LMTP_CMD_NOOP,
	LMTP_CMD_QUIT,
	LMTP_CMD_VRFY,
	LMTP_CMD_XCLIENT,
	LMTP_CMD_XFORWARD,
};

enum lmtp_cmd_err {
	LMTP_CMD_EUNKNOWN = -1, /* 500 5.5.2 command not recognized */
	LMTP_CMD_ESYNTAX = -2,  /* 501 5.5.4 syntax error in arguments */
	LMTP_CMD_EADDR = -3,    /* 501 5.1.3 / 5.1.7 bad address syntax */
	LMTP_CMD_EPARAM = -4,   /* 555 5.5.4 parameter not supported */
};

enum lmtp_body {
	LMTP_BODY_NONE = 0,
	LMTP_BODY_7BIT,
	LMTP_BODY_8BITMIME,
};

/* XCLIENT / XFORWARD attributes, as sent (xtext, not decoded). */
enum lmtp_xattr {
	LMTP_X_NAME,
	LMTP_X_ADDR,
	LMTP_X_PORT,
	LMTP_X_PROTO,
	LMTP_X_HELO,
	LMTP_X_LOGIN,
	LMTP_X_DESTADDR,
	LMTP_X_DESTPORT,
	LMTP_X_IDENT,
	LMTP_X_SOURCE,
	LMTP_X_COUNT
};

struct lmtp_cmd {
	enum lmtp_verb verb;
	/* LHLO domain, VRFY and NOOP string */
	struct ms_pstr arg;
	/* MAIL, RCPT: the mailbox without <> and source route; empty for
	   MAIL FROM:<> */
	struct ms_pstr addr;
	bool addr_utf8; /* the address has non-ASCII (UTF-8) bytes */
	/* MAIL */
	bool has_size;
	uint64_t size;
	enum lmtp_body body;
	bool smtputf8;
	/* BDAT */
	uint64_t chunk;
	bool last;
	/* XCLIENT, XFORWARD: given[i] says attribute i was there */
	bool given[LMTP_X_COUNT];
	struct ms_pstr xattr[LMTP_X_COUNT];
};

/* Parse line[0..len) (no line end).  0 with *cmd_r filled, or an
   LMTP_CMD_E* code with *error_r set; *cmd_r is then undefined. */
int lmtp_cmd_parse(const char *line, size_t len, struct lmtp_cmd *cmd_r,
		   const char **error_r);

/* Name of a verb ("LHLO"...), "?" for none. */
const char *lmtp_cmd_verb_name(enum lmtp_verb verb);

/*
 * Decode xtext (RFC 3461: "+XX" for a byte) from in into out (at most
 * outsize - 1 bytes and a NUL).  Bytes below 0x21 or above 0x7e that
 * come out of it are replaced by '?', so the result is safe to log and
 * to put in a header.  Returns the decoded length, or -1 if in is not
 * well-formed xtext or does not fit.
 */
int lmtp_xtext_decode(struct ms_pstr in, char *out, size_t outsize);

/* true if s[0..len) is valid UTF-8 (RFC 3629) without C0 controls or
   DEL; used for addresses and for the arguments we log. */
bool lmtp_utf8_printable(const char *s, size_t len);

#endif
