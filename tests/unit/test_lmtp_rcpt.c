/*
 * test_lmtp_rcpt.c - recipient mapping (lmtp/lmtp_rcpt.c: domains in
 * any case, user+detail, quoted local parts, Postmaster, bad names), the
 * header lines (lmtp/lmtp_hdr.c: format, Delivered-To only with one
 * recipient, hostile values cannot add lines), the [lmtp] config
 * (lmtp/lmtp_cfg.c: defaults, lists, networks, bad values) and the
 * reply table.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "lmtp_cfg.h"
#include "lmtp_data.h"
#include "lmtp_hdr.h"
#include "lmtp_rcpt.h"
#include "lmtp_reply.h"

static const char *const domains[] = { "example.test", "Other.TEST" };

struct rcase {
	const char *addr;
	int ret;
	const char *user, *detail;
};

static const struct rcase rcases[] = {
	/* 0 */ { "alice@example.test", 0, "alice", "" },
	{ "Alice@EXAMPLE.TEST", 0, "alice", "" },
	{ "bob@other.test", 0, "bob", "" },
	{ "bob+Work@example.test", 0, "bob", "Work" },
	{ "bob+@example.test", 0, "bob", "" },
	/* 5 */
	{ "bob+a+b@example.test", 0, "bob", "a+b" },
	{ "\"j doe\"@example.test", 0, "j doe", "" },
	{ "\"a\\\"b\"@example.test", 0, "a\"b", "" },
	{ "\"x@y\"@example.test", 0, "x@y", "" },
	{ "Postmaster", 0, "postmaster", "" },
	/* 10 */
	{ "alice@elsewhere.test", LMTP_RCPT_EDOMAIN, NULL, NULL },
	{ "alice@example.test.evil", LMTP_RCPT_EDOMAIN, NULL, NULL },
	{ "+detail@example.test", LMTP_RCPT_ENAME, NULL, NULL },
	{ "\"\"@example.test", LMTP_RCPT_ENAME, NULL, NULL },
	{ "j\xc3\xb6rg@example.test", 0, "j\xc3\xb6rg", "" },
	/* 15 */
	{ "bob+Sub/Folder@example.test", 0, "bob", "Sub/Folder" },
	{ "nobody", LMTP_RCPT_ENAME, NULL, NULL },
};

static void test_map(void **state)
{
	(void)state;
	struct lmtp_rcpt_cfg cfg = { domains, 2, '+', true };
	for (size_t i = 0; i < MS_ARRAY_SIZE(rcases); i++) {
		const struct rcase *c = &rcases[i];
		struct lmtp_rcpt r;
		int ret = lmtp_rcpt_map(&cfg, ms_pstr_c(c->addr), &r);
		if (ret != c->ret)
			fail_msg("rcases[%zu] %s: %d, want %d", i, c->addr, ret,
				 c->ret);
		if (ret == 0 && (strcmp(r.user, c->user) != 0 ||
				 strcmp(r.detail, c->detail) != 0))
			fail_msg("rcases[%zu] %s: user '%s' detail '%s'", i,
				 c->addr, r.user, r.detail);
	}
}

static void test_map_options(void **state)
{
	(void)state;
	struct lmtp_rcpt r;
	/* no domains: any; no delimiter: '+' is part of the name; no
	   lowercasing */
	struct lmtp_rcpt_cfg any = { NULL, 0, '\0', false };
	assert_int_equal(lmtp_rcpt_map(&any, MS_PSTR("Bob+X@any.where"), &r),
			 0);
	assert_string_equal(r.user, "Bob+X");
	assert_string_equal(r.detail, "");
	struct lmtp_rcpt_cfg dash = { NULL, 0, '-', true };
	assert_int_equal(lmtp_rcpt_map(&dash, MS_PSTR("Bob-Lists@x"), &r), 0);
	assert_string_equal(r.user, "bob");
	assert_string_equal(r.detail, "Lists");
	/* a user name over 255 bytes is not one */
	char addr[300];
	memset(addr, 'u', 256);
	memcpy(addr + 256, "@x", 3);
	assert_int_equal(lmtp_rcpt_map(&any, ms_pstr_c(addr), &r),
			 LMTP_RCPT_ENAME);
	assert_true(lmtp_rcpt_domain_local(&any, "whatever", 8));
}

static struct lmtp_hdr_info hinfo(void)
{
	struct lmtp_hdr_info h = { 0 };
	h.sender = MS_PSTR("s@x.test");
	h.helo = MS_PSTR("gw.test");
	h.addr = MS_PSTR("192.0.2.1");
	h.by = MS_PSTR("mx.test");
	h.id = MS_PSTR("ABC123");
	h.now = 1700000000; /* Tue, 14 Nov 2023 22:13:20 +0000 */
	return h;
}

static void test_headers(void **state)
{
	(void)state;
	struct ms_buf b;
	struct lmtp_hdr_info h = hinfo();
	ms_buf_init(&b, 0);
	assert_int_equal(lmtp_hdr_build(&h, &b), 0);
	const char *want =
		"Return-Path: <s@x.test>\r\n"
		"Received: from gw.test ([192.0.2.1])\r\n"
		"\tby mx.test (mstore-lmtpd) with LMTP id ABC123; "
		"Tue, 14 Nov 2023 22:13:20 +0000\r\n";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);

	/* one recipient: Delivered-To and "for"; a name; UTF8LMTP */
	ms_buf_reset(&b);
	h.rcpt = MS_PSTR("alice@example.test");
	h.name = MS_PSTR("client.test");
	h.utf8 = true;
	h.sender = MS_PSTR("");
	assert_int_equal(lmtp_hdr_build(&h, &b), 0);
	want = "Return-Path: <>\r\n"
	       "Delivered-To: <alice@example.test>\r\n"
	       "Received: from gw.test (client.test [192.0.2.1])\r\n"
	       "\tby mx.test (mstore-lmtpd) with UTF8LMTP id ABC123\r\n"
	       "\tfor <alice@example.test>; "
	       "Tue, 14 Nov 2023 22:13:20 +0000\r\n";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);

	/* hostile values never make a new line */
	ms_buf_reset(&b);
	h = hinfo();
	h.helo = MS_PSTR("evil\r\nX-Injected: 1");
	h.name = MS_PSTR("a\nb\0c");
	assert_int_equal(lmtp_hdr_build(&h, &b), 0);
	size_t lines = 0;
	for (size_t i = 0; i < b.len; i++) {
		if (b.data[i] == '\n') {
			lines++;
			assert_true(i > 0 && b.data[i - 1] == '\r');
		}
		assert_true(b.data[i] != '\0');
	}
	assert_int_equal(lines, 3);
	assert_null(memmem(b.data, b.len, "\nX-Injected", 11));

	/* a full buffer: MS_ETOOBIG and nothing appended */
	struct ms_buf small;
	ms_buf_init(&small, 40);
	assert_int_equal(lmtp_hdr_build(&h, &small), MS_ETOOBIG);
	assert_int_equal(small.len, 0);
	ms_buf_free(&small);
	ms_buf_free(&b);
}

static void test_cfg(void **state)
{
	(void)state;
	struct lmtp_cfg c;
	const char *err = "";
	const char *text = "[store]\nprimary = p\n"
			   "[lmtp]\nlisten = 127.0.0.1:2424, [::1]:2424\n"
			   "domains = example.test other.test\n"
			   "trusted_gateways = 10.0.0.0/8,::1 unix\n"
			   "max_message_size = 1M\nbare_lf = reject\n"
			   "quota_reply = temporary\n";
	assert_int_equal(lmtp_cfg_parse(text, strlen(text), &c, &err), 0);
	assert_int_equal(c.nlistens, 2);
	assert_string_equal(c.listens[1].text, "[::1]:2424");
	assert_int_equal(c.ndomains, 2);
	assert_string_equal(c.domain_list[1], "other.test");
	assert_int_equal(c.ntrusted, 2);
	assert_true(c.trust_unix);
	assert_int_equal(c.max_message_size, 1 << 20);
	assert_int_equal(c.bare_lf, LMTP_BARE_LF_REJECT);
	assert_int_equal(c.quota_reply, LMTP_QUOTA_TEMPORARY);
	assert_int_equal(c.max_recipients, 1000);
	assert_int_equal(c.command_timeout, 300000);
	uint8_t a[16];
	inet_pton(AF_INET, "10.1.2.3", a);
	assert_true(lmtp_cfg_trusted(&c, AF_INET, a));
	inet_pton(AF_INET, "11.1.2.3", a);
	assert_false(lmtp_cfg_trusted(&c, AF_INET, a));
	inet_pton(AF_INET6, "::1", a);
	assert_true(lmtp_cfg_trusted(&c, AF_INET6, a));
	lmtp_cfg_free(&c);

	/* defaults: 127.0.0.1:24, no socket, nobody trusted */
	assert_int_equal(lmtp_cfg_parse("", 0, &c, &err), 0);
	assert_int_equal(c.nlistens, 1);
	assert_string_equal(c.listens[0].text, "127.0.0.1:24");
	assert_int_equal(c.ntrusted, 0);
	assert_false(c.trust_unix);
	assert_string_equal(c.recipient_delimiter, "+");
	assert_null(c.dovecot_indexer);
	assert_string_equal(c.dovecot_separator, "/");
	assert_null(c.dovecot_prefix);
	lmtp_cfg_free(&c);

	/* Dovecot's indexer, relative to the config file's directory */
	char dir[] = "/tmp/ms-lmtpcfg-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mstore.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("[lmtp]\ndovecot_indexer = run/indexer\n"
	      "dovecot_separator = .\ndovecot_prefix = INBOX.\n", f);
	fclose(f);
	assert_int_equal(lmtp_cfg_load(path, &c, &err), 0);
	char want[96];
	snprintf(want, sizeof(want), "%s/run/indexer", dir);
	assert_string_equal(c.dovecot_indexer, want);
	assert_string_equal(c.dovecot_separator, ".");
	assert_string_equal(c.dovecot_prefix, "INBOX.");
	lmtp_cfg_free(&c);
	/* a path that a unix socket cannot hold once made absolute */
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "[lmtp]\ndovecot_indexer = %.*s\n", 100,
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	fclose(f);
	err = NULL;
	assert_int_equal(lmtp_cfg_load(path, &c, &err), MS_ECONFIG);
	assert_non_null(strstr(err, "dovecot_indexer"));
	unlink(path);
	rmdir(dir);

	static const char *const bad[] = {
		"[lmtp]\nlisten = localhost:24\n",
		"[lmtp]\nlisten = 127.0.0.1\n",
		"[lmtp]\nlisten = 127.0.0.1:0\n",
		"[lmtp]\nlisten = 127.0.0.1:65536\n",
		"[lmtp]\nlisten = ::1:24\n",
		"[lmtp]\nlisten =\n",
		"[lmtp]\ntrusted_gateways = 10.0.0.0/33\n",
		"[lmtp]\ntrusted_gateways = gateway.test\n",
		"[lmtp]\nmax_recipients = 1001\n",
		"[lmtp]\nmax_line_length = 100\n",
		"[lmtp]\nrecipient_delimiter = +-\n",
		"[lmtp]\nbare_lf = keep\n",
		"[lmtp]\ndovecot_separator = ::\n",
		"[lmtp]\ndovecot_separator =\n",
		"[lmtp]\nnope = 1\n",
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
		err = NULL;
		if (lmtp_cfg_parse(bad[i], strlen(bad[i]), &c, &err) == 0)
			fail_msg("bad[%zu] parsed: %s", i, bad[i]);
		assert_non_null(err);
	}
}

static void test_net(void **state)
{
	(void)state;
	struct lmtp_net n;
	uint8_t a[16];
	assert_int_equal(lmtp_net_parse("192.168.1.0/23", 14, &n), 0);
	inet_pton(AF_INET, "192.168.0.255", a);
	assert_true(lmtp_net_match(&n, AF_INET, a));
	inet_pton(AF_INET, "192.168.2.0", a);
	assert_false(lmtp_net_match(&n, AF_INET, a));
	assert_false(lmtp_net_match(&n, AF_INET6, a));
	assert_int_equal(lmtp_net_parse("0.0.0.0/0", 9, &n), 0);
	assert_true(lmtp_net_match(&n, AF_INET, a));
	assert_int_equal(lmtp_net_parse("/8", 2, &n), -EINVAL);
	assert_int_equal(lmtp_net_parse("1.2.3.4/", 8, &n), -EINVAL);
}

static void test_replies(void **state)
{
	(void)state;
	struct ms_buf b;
	ms_buf_init(&b, 0);
	assert_int_equal(lmtp_reply_append(&b, LMTP_R_NO_USER, NULL), 0);
	assert_int_equal(lmtp_reply_append(&b, LMTP_R_DELIVERED, "uid\n7"), 0);
	const char *want = "550 5.1.1 No such user\r\n"
			   "250 2.0.0 Delivered (uid?7)\r\n";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	ms_buf_free(&b);
	/* every entry is filled in, with a code that fits its class */
	for (int r = 0; r < LMTP_R_COUNT; r++) {
		const struct lmtp_reply_def *d = lmtp_reply_get(r);
		assert_non_null(d->text);
		assert_true(d->code >= 200 && d->code < 600);
		if (d->enh != NULL)
			assert_int_equal(d->enh[0] - '0', d->code / 100);
	}
	assert_int_equal(lmtp_reply_get(LMTP_R_STORE_DOWN)->code, 451);
	assert_int_equal(lmtp_reply_get(LMTP_R_QUOTA_PERM)->code, 552);
	assert_int_equal(lmtp_reply_get(LMTP_R_TOO_BIG)->code, 552);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map),
		cmocka_unit_test(test_map_options),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_cfg),
		cmocka_unit_test(test_net),
		cmocka_unit_test(test_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
