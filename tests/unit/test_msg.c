/*
 * test_msg.c - the diagnostics line format (store/msg.c, docs/logging.md):
 * a table of event texts and the logfmt fields they become (structured
 * events, quoted values, free text and broken fields kept whole in msg=);
 * msg_q() on plain, spaced, quoted, empty, control-byte and over-long
 * values; 20,000 random byte strings whose lines must all parse as logfmt
 * with no byte of input lost; and the whole line on stderr with ts, prog,
 * pid and level, and on to the hook unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "msg.h"

/* ---- a logfmt reader, written from docs/logging.md ---- */

struct field {
	char key[64];
	char val[4096];
};

static int is_key(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Split a line into fields; -1 if it is not logfmt. */
static int parse(const char *p, struct field *f, int max)
{
	int n = 0;

	for (;;) {
		size_t k = 0, v = 0;

		if (*p == '\0')
			return n;
		if (n > 0) {
			if (*p != ' ')
				return -1;
			p++;
		}
		if (n == max)
			return -1;
		while (is_key((unsigned char)*p) && k + 1 < sizeof(f[n].key))
			f[n].key[k++] = *p++;
		f[n].key[k] = '\0';
		if (k == 0 || *p++ != '=')
			return -1;
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				if (*p == '\0')
					return -1;
				if (*p == '\\') {
					p++;
					if (*p != '"' && *p != '\\')
						return -1;
				}
				if (v + 1 < sizeof(f[n].val))
					f[n].val[v++] = *p;
			}
			p++;
		} else {
			for (; (unsigned char)*p > ' ' && *p != '"' &&
			       *p != '=' && *p != '\\' && *p != 0x7f;
			     p++)
				if (v + 1 < sizeof(f[n].val))
					f[n].val[v++] = *p;
			if (v == 0)
				return -1;
		}
		f[n].val[v] = '\0';
		n++;
	}
}

/* ---- ms_msg_kv_line ---- */

static const struct {
	const char *text, *want;
} kv_cases[] = {
	{ "ready", "event=ready" },
	{ "ready socket=/run/m.sock loop=uring",
	  "event=ready socket=/run/m.sock loop=uring" },
	{ "copy.failed copy=secondary error=\"Input/output error\"",
	  "event=copy.failed copy=secondary error=\"Input/output error\"" },
	{ "a k=\"x \\\" y\" j=1", "event=a k=\"x \\\" y\" j=1" },
	{ "a  k=1   j=2  ", "event=a k=1 j=2" },
	/* free text: kept whole */
	{ "index rebuilt from the log",
	  "event=index msg=\"rebuilt from the log\"" },
	{ "Hello, world", "event=message msg=\"Hello, world\"" },
	{ "", "event=message msg=\"\"" },
	{ "x: y", "event=message msg=\"x: y\"" },
	/* a field that breaks: it and the rest go to msg */
	{ "ev a=1 b=two words c=3", "event=ev a=1 b=two msg=\"words c=3\"" },
	{ "ev a=1 b= c=3", "event=ev a=1 msg=\"b= c=3\"" },
	{ "ev a=\"open", "event=ev msg=\"a=\\\"open\"" },
	{ "ev a=\"x\"y", "event=ev msg=\"a=\\\"x\\\"y\"" },
	{ "ev path=C:\\dir", "event=ev msg=\"path=C:\\\\dir\"" },
	{ "ev =1", "event=ev msg=\"=1\"" },
};

static void test_kv_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(kv_cases) / sizeof(kv_cases[0]); i++) {
		char out[512];
		struct field f[16];

		ms_msg_kv_line(out, sizeof(out), kv_cases[i].text);
		if (strcmp(out, kv_cases[i].want) != 0)
			fail_msg("case %zu: [%s] -> [%s], want [%s]", i,
				 kv_cases[i].text, out, kv_cases[i].want);
		assert_true(parse(out, f, 16) > 0);
	}
}

/* ---- msg_q ---- */

static void test_q(void **state)
{
	char long_in[3000];
	const char *q;

	(void)state;
	assert_string_equal(msg_q("plain"), "plain");
	assert_string_equal(msg_q("/var/lib/mstore"), "/var/lib/mstore");
	assert_string_equal(msg_q("two words"), "\"two words\"");
	assert_string_equal(msg_q(""), "\"\"");
	assert_string_equal(msg_q(NULL), "\"\"");
	assert_string_equal(msg_q("a=b"), "\"a=b\"");
	assert_string_equal(msg_q("say \"hi\""), "\"say \\\"hi\\\"\"");
	assert_string_equal(msg_q("back\\slash"), "\"back\\\\slash\"");
	assert_string_equal(msg_q("tab\there\nnl"), "\"tab here nl\"");
	assert_string_equal(msg_q("Grüße"), "Grüße");
	/* eight slots: eight values of one line stay apart */
	const char *v[MSG_Q_SLOTS];
	char in[MSG_Q_SLOTS][16];
	for (int i = 0; i < MSG_Q_SLOTS; i++) {
		snprintf(in[i], sizeof(in[i]), "v %d", i);
		v[i] = msg_q(in[i]);
	}
	for (int i = 0; i < MSG_Q_SLOTS; i++) {
		char want[24];
		snprintf(want, sizeof(want), "\"v %d\"", i);
		assert_string_equal(v[i], want);
	}
	/* over-long: cut, still quoted and closed */
	memset(long_in, 'x', sizeof(long_in) - 1);
	long_in[sizeof(long_in) - 1] = '\0';
	long_in[5] = ' ';
	q = msg_q(long_in);
	assert_true(strlen(q) < MSG_Q_LEN);
	assert_int_equal(q[0], '"');
	assert_int_equal(q[strlen(q) - 1], '"');
}

/* ---- any input: valid logfmt, nothing lost ---- */

static void test_random_texts(void **state)
{
	unsigned seed = 20261128;
	static const char alphabet[] = "ab= \"\\.:_-\t\x01\x7f\xc3\xa9zZ09";

	(void)state;
	for (int round = 0; round < 20000; round++) {
		char text[64], out[1024];
		struct field f[64];
		size_t len;
		int n;

		seed = seed * 1103515245u + 12345u;
		len = (seed >> 16) % (sizeof(text) - 1);
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			text[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		text[len] = '\0';
		for (size_t i = 0; i < len; i++) /* as msg_vprint does */
			if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
				text[i] = ' ';
		ms_msg_kv_line(out, sizeof(out), text);
		n = parse(out, f, 64);
		if (n < 1 || strcmp(f[0].key, "event") != 0)
			fail_msg("round %d: [%s] -> [%s] is not logfmt", round,
				 text, out);
		/* every non-space byte of the text is in some field */
		size_t have = 0, want = 0;
		for (size_t i = 0; i < len; i++)
			want += text[i] != ' ';
		for (int i = 1; i < n; i++) {
			for (const char *p = f[i].val; *p; p++)
				have += *p != ' ';
			if (strcmp(f[i].key, "msg") != 0)
				have += strlen(f[i].key) + 1; /* key= */
		}
		/* the event name is the text's, or "message" before a
		   msg that holds all of it */
		if (have != want)
			have += strlen(f[0].val);
		if (have != want)
			fail_msg("round %d: [%s] -> [%s]: %zu of %zu bytes", round,
				 text, out, have, want);
	}
}

/* ---- the whole line ---- */

static char hook_text[256];

static void hook(enum ms_msg_level level, const char *text, void *ctx)
{
	(void)level;
	(void)ctx;
	snprintf(hook_text, sizeof(hook_text), "%s", text);
}

static void test_stderr_line(void **state)
{
	char path[] = "/tmp/test_msg.XXXXXX", line[1024];
	struct field f[16];
	int fd, saved;
	FILE *in;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0 && dup2(fd, 2) == 2);
	ms_msg_init("/usr/sbin/mstored");
	ms_msg_set_hook(hook, NULL);
	msg_warn("copy.failed copy=%s error=%s", "secondary",
		 msg_q("Input/output error"));
	msg_info("multi\nline\rtext");
	ms_msg_set_hook(NULL, NULL);
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
	close(fd);
	assert_string_equal(hook_text, "multi line text");
	in = fopen(path, "r");
	assert_non_null(in);
	assert_non_null(fgets(line, sizeof(line), in));
	line[strcspn(line, "\n")] = '\0';
	assert_int_equal(parse(line, f, 16), 7);
	assert_string_equal(f[0].key, "ts");
	assert_int_equal(strlen(f[0].val), 27); /* 2026-11-28T19:20:01.123456Z */
	assert_int_equal(f[0].val[26], 'Z');
	assert_string_equal(f[1].key, "prog");
	assert_string_equal(f[1].val, "mstored");
	assert_string_equal(f[2].key, "pid");
	assert_int_equal(atol(f[2].val), (long)getpid());
	assert_string_equal(f[3].val, "warning");
	assert_string_equal(f[4].val, "copy.failed");
	assert_string_equal(f[5].val, "secondary");
	assert_string_equal(f[6].key, "error");
	assert_string_equal(f[6].val, "Input/output error");
	assert_non_null(fgets(line, sizeof(line), in));
	line[strcspn(line, "\n")] = '\0';
	assert_int_equal(parse(line, f, 16), 6);
	assert_string_equal(f[4].val, "multi");
	assert_string_equal(f[5].key, "msg");
	assert_string_equal(f[5].val, "line text");
	assert_null(fgets(line, sizeof(line), in));
	fclose(in);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kv_table),
		cmocka_unit_test(test_q),
		cmocka_unit_test(test_random_texts),
		cmocka_unit_test(test_stderr_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
