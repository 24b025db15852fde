/*
 * test_lmtp_cmd.c - the LMTP command parser (lmtp/lmtp_cmd.c): a table
 * of valid commands with what they must parse to, a table of invalid
 * ones with the error each must give, each case named by its index;
 * the length limits at their edges; NUL and control bytes; xtext.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lmtp_cmd.h"

struct valid {
	const char *line;
	enum lmtp_verb verb;
	const char *addr; /* expected addr (MAIL/RCPT) or arg, or NULL */
	uint64_t size;	  /* MAIL SIZE= or BDAT size */
	int flags;	  /* F_* below */
};

#define F_SIZE 1
#define F_UTF8 2      /* addr_utf8 */
#define F_SMTPUTF8 4  /* MAIL SMTPUTF8 */
#define F_8BIT 8      /* BODY=8BITMIME */
#define F_LAST 16     /* BDAT LAST */
#define F_7BIT 32     /* BODY=7BIT */

static const struct valid valid[] = {
	/* 0 */ { "LHLO gw.example.test", LMTP_CMD_LHLO, "gw.example.test", 0, 0 },
	{ "lhlo [127.0.0.1]", LMTP_CMD_LHLO, "[127.0.0.1]", 0, 0 },
	{ "MAIL FROM:<a@b.test>", LMTP_CMD_MAIL, "a@b.test", 0, 0 },
	{ "mail from:<>", LMTP_CMD_MAIL, "", 0, 0 },
	{ "MAIL FROM: <a@b.test>", LMTP_CMD_MAIL, "a@b.test", 0, 0 },
	/* 5 */
	{ "MAIL FROM:<a@b.test> SIZE=1000", LMTP_CMD_MAIL, "a@b.test", 1000,
	  F_SIZE },
	{ "MAIL FROM:<a@b.test> BODY=8BITMIME SIZE=0", LMTP_CMD_MAIL,
	  "a@b.test", 0, F_SIZE | F_8BIT },
	{ "MAIL FROM:<a@b.test> body=7bit", LMTP_CMD_MAIL, "a@b.test", 0,
	  F_7BIT },
	{ "MAIL FROM:<j\xc3\xb6rg@b\xc3\xa4r.test> SMTPUTF8", LMTP_CMD_MAIL,
	  "j\xc3\xb6rg@b\xc3\xa4r.test", 0, F_UTF8 | F_SMTPUTF8 },
	{ "MAIL FROM:<@relay.test,@r2.test:a@b.test>", LMTP_CMD_MAIL,
	  "a@b.test", 0, 0 },
	/* 10 */
	{ "RCPT TO:<alice@example.test>", LMTP_CMD_RCPT,
	  "alice@example.test", 0, 0 },
	{ "rcpt to:<Alice+Work@EXAMPLE.test>", LMTP_CMD_RCPT,
	  "Alice+Work@EXAMPLE.test", 0, 0 },
	{ "RCPT TO:<Postmaster>", LMTP_CMD_RCPT, "Postmaster", 0, 0 },
	{ "RCPT TO:<\"john doe\"@example.test>", LMTP_CMD_RCPT,
	  "\"john doe\"@example.test", 0, 0 },
	{ "RCPT TO:<\"a\\\"b\"@example.test>", LMTP_CMD_RCPT,
	  "\"a\\\"b\"@example.test", 0, 0 },
	/* 15 */
	{ "RCPT TO:<a.b.c@[192.0.2.1]>", LMTP_CMD_RCPT, "a.b.c@[192.0.2.1]", 0, 0 },
	{ "RCPT TO:<x@a-b.example>", LMTP_CMD_RCPT, "x@a-b.example", 0, 0 },
	{ "DATA", LMTP_CMD_DATA, NULL, 0, 0 },
	{ "data", LMTP_CMD_DATA, NULL, 0, 0 },
	{ "RSET", LMTP_CMD_RSET, NULL, 0, 0 },
	/* 20 */
	{ "NOOP", LMTP_CMD_NOOP, NULL, 0, 0 },
	{ "NOOP anything at all", LMTP_CMD_NOOP, "anything at all", 0, 0 },
	{ "QUIT", LMTP_CMD_QUIT, NULL, 0, 0 },
	{ "VRFY alice", LMTP_CMD_VRFY, "alice", 0, 0 },
	{ "VRFY Alice Smith <alice@x.test>", LMTP_CMD_VRFY,
	  "Alice Smith <alice@x.test>", 0, 0 },
	/* 25 */
	{ "BDAT 0 LAST", LMTP_CMD_BDAT, NULL, 0, F_LAST },
	{ "BDAT 12345", LMTP_CMD_BDAT, NULL, 12345, 0 },
	{ "bdat 7 last", LMTP_CMD_BDAT, NULL, 7, F_LAST },
	{ "XCLIENT NAME=mx.example.test ADDR=192.0.2.7", LMTP_CMD_XCLIENT, NULL, 0, 0 },
	{ "XFORWARD HELO=client+20name IDENT=123ABC SOURCE=REMOTE",
	  LMTP_CMD_XFORWARD, NULL, 0, 0 },
	/* 30 */
	{ "HELO x", LMTP_CMD_HELO, "x", 0, 0 },
	{ "EHLO x", LMTP_CMD_EHLO, "x", 0, 0 },
	{ "MAIL FROM:<a@b.test>  SIZE=5", LMTP_CMD_MAIL, "a@b.test", 5,
	  F_SIZE },
	{ "RCPT TO:<!#$%&'*+-/=?^_`{|}~@x.test>", LMTP_CMD_RCPT,
	  "!#$%&'*+-/=?^_`{|}~@x.test", 0, 0 },
};

struct invalid {
	const char *line;
	size_t len; /* 0: strlen(line) */
	int ret;
};

static const struct invalid invalid[] = {
	/* 0 */ { "", 0, LMTP_CMD_EUNKNOWN },
	{ "FOO", 0, LMTP_CMD_EUNKNOWN },
	{ "LHLOX a", 0, LMTP_CMD_EUNKNOWN },
	{ " LHLO a", 0, LMTP_CMD_EUNKNOWN },
	{ "LHLO", 0, LMTP_CMD_ESYNTAX },
	/* 5 */
	{ "LHLO ", 0, LMTP_CMD_ESYNTAX },
	{ "LHLO a b", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL a@b.test", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:a@b.test", 0, LMTP_CMD_EADDR },
	{ "MAIL FROM:<a@b.test", 0, LMTP_CMD_EADDR },
	/* 10 */
	{ "MAIL FROM:<a@>", 0, LMTP_CMD_EADDR },
	{ "MAIL FROM:<@b.test>", 0, LMTP_CMD_EADDR },
	{ "MAIL FROM:<a..b@c.test>", 0, LMTP_CMD_EADDR },
	{ "MAIL FROM:<a@b..test>", 0, LMTP_CMD_EADDR },
	{ "MAIL FROM:<a@-b.test>", 0, LMTP_CMD_EADDR },
	/* 15 */
	{ "MAIL FROM:<a@b.test> SIZE=", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test> SIZE=12x", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test> SIZE=99999999999999999999999", 0,
	  LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test> SIZE=1 SIZE=2", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test> BODY=BINARYMIME", 0, LMTP_CMD_EPARAM },
	/* 20 */
	{ "MAIL FROM:<a@b.test> RET=FULL", 0, LMTP_CMD_EPARAM },
	{ "MAIL FROM:<a@b.test> SMTPUTF8=yes", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test>x", 0, LMTP_CMD_ESYNTAX },
	{ "RCPT TO:<>", 0, LMTP_CMD_EADDR },
	{ "RCPT TO:<alice>", 0, LMTP_CMD_EADDR },
	/* 25 */
	{ "RCPT TO:<a@b.test> NOTIFY=NEVER", 0, LMTP_CMD_EPARAM },
	{ "RCPT TO:<a b@c.test>", 0, LMTP_CMD_EADDR },
	{ "RCPT TO:<\"unterminated@c.test>", 0, LMTP_CMD_EADDR },
	{ "RCPT TO:<a@b.test\r>", 0, LMTP_CMD_EADDR },
	{ "RCPT TO:<a\xff@b.test>", 0, LMTP_CMD_EADDR },
	/* 30: overlong UTF-8, a surrogate */
	{ "RCPT TO:<a\xc0\xaf@b.test>", 0, LMTP_CMD_EADDR },
	{ "RCPT TO:<a\xed\xa0\x80@b.test>", 0, LMTP_CMD_EADDR },
	{ "RCPT FROM:<a@b.test>", 0, LMTP_CMD_ESYNTAX },
	{ "DATA x", 0, LMTP_CMD_ESYNTAX },
	{ "QUIT now", 0, LMTP_CMD_ESYNTAX },
	/* 35 */
	{ "RSET ", 0, LMTP_CMD_ESYNTAX },
	{ "BDAT", 0, LMTP_CMD_ESYNTAX },
	{ "BDAT x", 0, LMTP_CMD_ESYNTAX },
	{ "BDAT -1", 0, LMTP_CMD_ESYNTAX },
	{ "BDAT 10 LASTX", 0, LMTP_CMD_ESYNTAX },
	/* 40 */
	{ "BDAT 99999999999999999999", 0, LMTP_CMD_ESYNTAX },
	{ "BDAT 1099511627777", 0, LMTP_CMD_ESYNTAX }, /* > 1 TiB */
	{ "VRFY", 0, LMTP_CMD_ESYNTAX },
	{ "XCLIENT", 0, LMTP_CMD_ESYNTAX },
	{ "XCLIENT FOO=bar", 0, LMTP_CMD_ESYNTAX },
	/* 45 */
	{ "XCLIENT NAME=a NAME=b", 0, LMTP_CMD_ESYNTAX },
	{ "XCLIENT NAME=a+2", 0, LMTP_CMD_ESYNTAX },
	{ "XCLIENT IDENT=x", 0, LMTP_CMD_ESYNTAX },
	{ "XFORWARD LOGIN=x", 0, LMTP_CMD_ESYNTAX },
	{ "XCLIENT NAME", 0, LMTP_CMD_ESYNTAX },
	/* 50: NUL and controls */
	{ "DATA\0", 5, LMTP_CMD_ESYNTAX },
	{ "LHLO a\0b", 8, LMTP_CMD_ESYNTAX },
	{ "VRFY a\tb", 0, LMTP_CMD_ESYNTAX },
	{ "MAIL FROM:<a@b.test>\0", 21, LMTP_CMD_ESYNTAX },
	{ "RCPT TO:<a\0@b.test>", 19, LMTP_CMD_EADDR },
};

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(valid); i++) {
		const struct valid *v = &valid[i];
		struct lmtp_cmd cmd;
		const char *err = "";
		int ret = lmtp_cmd_parse(v->line, strlen(v->line), &cmd, &err);
		if (ret != 0)
			fail_msg("valid[%zu] '%s': %d (%s)", i, v->line, ret,
				 err);
		if (cmd.verb != v->verb)
			fail_msg("valid[%zu]: verb %d, want %d", i, cmd.verb,
				 v->verb);
		if (v->addr != NULL) {
			struct ms_pstr got =
				v->verb == LMTP_CMD_MAIL ||
						v->verb == LMTP_CMD_RCPT
					? cmd.addr
					: cmd.arg;
			if (got.len != strlen(v->addr) ||
			    memcmp(got.s, v->addr, got.len) != 0)
				fail_msg("valid[%zu]: '%.*s', want '%s'", i,
					 (int)got.len, got.s, v->addr);
		}
		if (v->verb == LMTP_CMD_MAIL) {
			assert_int_equal(cmd.has_size, !!(v->flags & F_SIZE));
			if (v->flags & F_SIZE)
				assert_int_equal(cmd.size, v->size);
			assert_int_equal(cmd.smtputf8,
					 !!(v->flags & F_SMTPUTF8));
			assert_int_equal(cmd.body,
					 v->flags & F_8BIT   ? LMTP_BODY_8BITMIME
					 : v->flags & F_7BIT ? LMTP_BODY_7BIT
							     : LMTP_BODY_NONE);
		}
		if (v->verb == LMTP_CMD_MAIL || v->verb == LMTP_CMD_RCPT)
			assert_int_equal(cmd.addr_utf8, !!(v->flags & F_UTF8));
		if (v->verb == LMTP_CMD_BDAT) {
			assert_int_equal(cmd.chunk, v->size);
			assert_int_equal(cmd.last, !!(v->flags & F_LAST));
		}
	}
}

static void test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(invalid); i++) {
		const struct invalid *v = &invalid[i];
		size_t len = v->len ? v->len : strlen(v->line);
		/* exactly len bytes, so a read past the end shows in ASan */
		char *copy = malloc(len ? len : 1);
		memcpy(copy, v->line, len);
		struct lmtp_cmd cmd;
		const char *err = NULL;
		int ret = lmtp_cmd_parse(copy, len, &cmd, &err);
		free(copy);
		if (ret != v->ret)
			fail_msg("invalid[%zu] '%s': got %d, want %d", i,
				 v->line, ret, v->ret);
		if (err == NULL || err[0] == '\0')
			fail_msg("invalid[%zu]: no reason given", i);
	}
}

static void test_xclient_attrs(void **state)
{
	(void)state;
	const char *line = "XCLIENT NAME=mx.example.test ADDR=192.0.2.7 "
			   "PORT=2525 HELO=my+20helo LOGIN=[UNAVAILABLE]";
	struct lmtp_cmd cmd;
	const char *err;
	char out[64];
	assert_int_equal(lmtp_cmd_parse(line, strlen(line), &cmd, &err), 0);
	assert_true(cmd.given[LMTP_X_NAME] && cmd.given[LMTP_X_ADDR] &&
		    cmd.given[LMTP_X_PORT] && cmd.given[LMTP_X_HELO] &&
		    cmd.given[LMTP_X_LOGIN]);
	assert_false(cmd.given[LMTP_X_PROTO]);
	assert_int_equal(lmtp_xtext_decode(cmd.xattr[LMTP_X_HELO], out,
					   sizeof(out)),
			 7);
	assert_string_equal(out, "my helo");
	/* decoded control bytes become '?'; a short buffer fails */
	assert_int_equal(lmtp_xtext_decode(MS_PSTR("a+0Db+0A"), out,
					   sizeof(out)),
			 4);
	assert_string_equal(out, "a?b?");
	assert_int_equal(lmtp_xtext_decode(MS_PSTR("abcdef"), out, 4), -1);
	assert_int_equal(lmtp_xtext_decode(MS_PSTR("a+4"), out, sizeof(out)),
			 -1);
	assert_int_equal(lmtp_xtext_decode(MS_PSTR("a=b"), out, sizeof(out)),
			 -1);
}

/* The limits at their edges: local part, domain, path, LHLO argument. */
static void test_limits(void **state)
{
	(void)state;
	char line[2048];
	struct lmtp_cmd cmd;
	const char *err;
	char local[300], label[70];

	memset(local, 'l', sizeof(local));
	memset(label, 'd', sizeof(label));
	/* local part of LMTP_CMD_MAX_LOCAL bytes passes, one more fails */
	int n = snprintf(line, sizeof(line), "RCPT TO:<%.*s@x.test>",
			 LMTP_CMD_MAX_LOCAL, local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err), 0);
	n = snprintf(line, sizeof(line), "RCPT TO:<%.*s@x.test>",
		     LMTP_CMD_MAX_LOCAL + 1, local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err),
			 LMTP_CMD_EADDR);
	/* a domain of 4 × 63 + 3 = 255 bytes passes; 256 fails */
	n = snprintf(line, sizeof(line), "RCPT TO:<a@%.63s.%.63s.%.63s.%.63s>",
		     label, label, label, label);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err), 0);
	n = snprintf(line, sizeof(line),
		     "RCPT TO:<a@%.63s.%.63s.%.63s.%.64s>", label, label,
		     label, label);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err),
			 LMTP_CMD_EADDR);
	/* LHLO argument: 255 bytes pass, 256 fail */
	n = snprintf(line, sizeof(line), "LHLO %.255s", local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err), 0);
	n = snprintf(line, sizeof(line), "LHLO %.256s", local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err),
			 LMTP_CMD_ESYNTAX);
	/* an XCLIENT value of 255 bytes passes, 256 fail */
	n = snprintf(line, sizeof(line), "XCLIENT NAME=%.255s", local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err), 0);
	n = snprintf(line, sizeof(line), "XCLIENT NAME=%.256s", local);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err),
			 LMTP_CMD_ESYNTAX);
	/* BDAT at its limit */
	n = snprintf(line, sizeof(line), "BDAT %llu LAST",
		     (unsigned long long)LMTP_CMD_MAX_CHUNK);
	assert_int_equal(lmtp_cmd_parse(line, (size_t)n, &cmd, &err), 0);
	assert_int_equal(cmd.chunk, LMTP_CMD_MAX_CHUNK);
}

/* Every prefix of valid commands parses or fails cleanly (no overread:
   each prefix is its own allocation). */
static void test_prefixes(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(valid); i++) {
		size_t len = strlen(valid[i].line);
		for (size_t k = 0; k <= len; k++) {
			char *p = malloc(k ? k : 1);
			struct lmtp_cmd cmd;
			const char *err = "";
			memcpy(p, valid[i].line, k);
			int ret = lmtp_cmd_parse(p, k, &cmd, &err);
			assert_true(ret == 0 || (ret <= LMTP_CMD_EUNKNOWN &&
						 ret >= LMTP_CMD_EPARAM));
			free(p);
		}
	}
}

static void test_utf8_printable(void **state)
{
	(void)state;
	assert_true(lmtp_utf8_printable("abc", 3));
	assert_true(lmtp_utf8_printable("\xc3\xa4\xe2\x82\xac", 5));
	assert_true(lmtp_utf8_printable("\xf0\x9f\x98\x80", 4));
	assert_false(lmtp_utf8_printable("a\nb", 3));
	assert_false(lmtp_utf8_printable("a\x7f", 2));
	assert_false(lmtp_utf8_printable("\xc3", 1));
	assert_false(lmtp_utf8_printable("\xf4\x90\x80\x80", 4)); /* > 10FFFF */
	assert_false(lmtp_utf8_printable("\xe0\x80\x80", 3));	  /* overlong */
	assert_string_equal(lmtp_cmd_verb_name(LMTP_CMD_BDAT), "BDAT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_xclient_attrs),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_utf8_printable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
