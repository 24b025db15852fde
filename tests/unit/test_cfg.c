/*
 * test_cfg.c - the config parser (store/cfg.c) against a sample table
 * shaped like the store's: tables of valid and invalid inputs, each case
 * named by its index; limits (line, file size, u64 overflow); target
 * untouched on failure; load, dump and the number helpers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "cfg.h"

/* ---- the sample table ---- */

struct sample {
	unsigned log_level;
	uint64_t counter;
	char *primary;
	char *secondary;
	uint64_t segment_size;
	unsigned io_engine;
	int sync;
	uint64_t max_connections;
	uint64_t timeout;
	unsigned socket_mode;
	char *banner;
};

static const char *const log_levels[] = {"debug", "info", "warn", NULL};
static const char *const io_engines[] = {"uring", "psync", NULL};

#define F(x) offsetof(struct sample, x)
static const struct ms_cfg_def defs[] = {
	{"", "log_level", MS_CFG_ENUM, "info", 0, 0, log_levels, F(log_level),
	 "lowest level logged"},
	{"", "counter", MS_CFG_UINT, "0", 0, 0, NULL, F(counter), NULL},
	{"store", "primary", MS_CFG_STR, NULL, 1, 4096, NULL, F(primary),
	 "directory of the primary copy"},
	{"store", "secondary", MS_CFG_STR, NULL, 0, 4096, NULL, F(secondary),
	 "directory of the second copy (optional)"},
	{"store", "segment_size", MS_CFG_SIZE, "64M", 1 << 20, 1 << 30, NULL,
	 F(segment_size), "bytes per segment file"},
	{"store", "io_engine", MS_CFG_ENUM, "uring", 0, 0, io_engines,
	 F(io_engine), "uring or psync"},
	{"store", "sync", MS_CFG_BOOL, "yes", 0, 0, NULL, F(sync),
	 "fdatasync before acknowledging"},
	{"lmtp", "max_connections", MS_CFG_UINT, "100", 1, 10000, NULL,
	 F(max_connections), NULL},
	{"lmtp", "timeout", MS_CFG_DURATION, "5m", 1000, 86400000, NULL,
	 F(timeout), "idle timeout\nper connection"},
	{"lmtp", "socket_mode", MS_CFG_MODE, "0660", 0, 0777, NULL,
	 F(socket_mode), NULL},
	{"lmtp", "banner", MS_CFG_STR, "mstore LMTP", 0, 0, NULL, F(banner),
	 NULL},
};
#define NDEFS MS_ARRAY_SIZE(defs)

enum field {
	X_END,
	X_LOG_LEVEL,
	X_COUNTER,
	X_PRIMARY,
	X_SECONDARY,
	X_SEGMENT_SIZE,
	X_IO_ENGINE,
	X_SYNC,
	X_MAX_CONN,
	X_TIMEOUT,
	X_MODE,
	X_BANNER,
};

struct expect {
	enum field f;
	uint64_t u;
	const char *s;
};

static void defaults(struct sample *s)
{
	memset(s, 0, sizeof(*s));
	s->log_level = 1;
	s->counter = 0;
	s->primary = NULL;
	s->secondary = NULL;
	s->segment_size = 64 << 20;
	s->io_engine = 0;
	s->sync = 1;
	s->max_connections = 100;
	s->timeout = 5 * 60 * 1000;
	s->socket_mode = 0660;
	s->banner = "mstore LMTP";
}

static void apply(struct sample *s, const struct expect *e)
{
	for (; e->f != X_END; e++) {
		switch (e->f) {
		case X_END:
			break;
		case X_LOG_LEVEL:
			s->log_level = (unsigned)e->u;
			break;
		case X_COUNTER:
			s->counter = e->u;
			break;
		case X_PRIMARY:
			s->primary = (char *)e->s;
			break;
		case X_SECONDARY:
			s->secondary = (char *)e->s;
			break;
		case X_SEGMENT_SIZE:
			s->segment_size = e->u;
			break;
		case X_IO_ENGINE:
			s->io_engine = (unsigned)e->u;
			break;
		case X_SYNC:
			s->sync = (int)e->u;
			break;
		case X_MAX_CONN:
			s->max_connections = e->u;
			break;
		case X_TIMEOUT:
			s->timeout = e->u;
			break;
		case X_MODE:
			s->socket_mode = (unsigned)e->u;
			break;
		case X_BANNER:
			s->banner = (char *)e->s;
			break;
		}
	}
}

static int str_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* NULL if equal, else the name of the first field that differs */
static const char *sample_diff(const struct sample *a, const struct sample *b)
{
	if (a->log_level != b->log_level)
		return "log_level";
	if (a->counter != b->counter)
		return "counter";
	if (!str_same(a->primary, b->primary))
		return "primary";
	if (!str_same(a->secondary, b->secondary))
		return "secondary";
	if (a->segment_size != b->segment_size)
		return "segment_size";
	if (a->io_engine != b->io_engine)
		return "io_engine";
	if (a->sync != b->sync)
		return "sync";
	if (a->max_connections != b->max_connections)
		return "max_connections";
	if (a->timeout != b->timeout)
		return "timeout";
	if (a->socket_mode != b->socket_mode)
		return "socket_mode";
	if (!str_same(a->banner, b->banner))
		return "banner";
	return NULL;
}

/* ---- valid inputs ---- */

#define MIB ((uint64_t)1 << 20)

static const struct valid_case {
	const char *text;
	struct expect exp[5];
} valid_cases[] = {
	/* 0 */ {"", {{X_END, 0, NULL}}},
	/* 1 */
	{"# only a comment\n\n   \n\t# indented comment\n", {{X_END, 0, NULL}}},
	/* 2 */
	{"[store]\nprimary = /var/mail/a\nsecondary = /var/mail/b\n",
	 {{X_PRIMARY, 0, "/var/mail/a"},
	  {X_SECONDARY, 0, "/var/mail/b"},
	  {X_END, 0, NULL}}},
	/* 3 */
	{"[store]\nsegment_size = 1M",
	 {{X_SEGMENT_SIZE, MIB, NULL}, {X_END, 0, NULL}}},
	/* 4 */
	{"[store]\nsegment_size = 1G\n",
	 {{X_SEGMENT_SIZE, 1024 * MIB, NULL}, {X_END, 0, NULL}}},
	/* 5 */
	{"[store]\nsegment_size = 1048576\n",
	 {{X_SEGMENT_SIZE, MIB, NULL}, {X_END, 0, NULL}}},
	/* 6 */
	{"[store]\nsegment_size = 65536k\n",
	 {{X_SEGMENT_SIZE, 64 * MIB, NULL}, {X_END, 0, NULL}}},
	/* 7 */
	{"[store]\nsegment_size=2m\n",
	 {{X_SEGMENT_SIZE, 2 * MIB, NULL}, {X_END, 0, NULL}}},
	/* 8 */
	{"[store]\nsegment_size = 0001G\n",
	 {{X_SEGMENT_SIZE, 1024 * MIB, NULL}, {X_END, 0, NULL}}},
	/* 9 */ {"[store]\nsync = no\n", {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 10 */
	{"[store]\nsync = off\n", {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 11 */
	{"[store]\nsync = false\n", {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 12 */ {"[store]\nsync = 0\n", {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 13 */
	{"[store]\nsync = NO\n", {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 14 */
	{"[store]\nsync = On\n", {{X_SYNC, 1, NULL}, {X_END, 0, NULL}}},
	/* 15 */
	{"[store]\nsync = true\n", {{X_SYNC, 1, NULL}, {X_END, 0, NULL}}},
	/* 16 */ {"[store]\nsync = 1\n", {{X_SYNC, 1, NULL}, {X_END, 0, NULL}}},
	/* 17 */
	{"[store]\nio_engine = psync\n",
	 {{X_IO_ENGINE, 1, NULL}, {X_END, 0, NULL}}},
	/* 18 */
	{"[store]\nio_engine = PSync\n",
	 {{X_IO_ENGINE, 1, NULL}, {X_END, 0, NULL}}},
	/* 19 */
	{"[lmtp]\ntimeout = 30s\n",
	 {{X_TIMEOUT, 30000, NULL}, {X_END, 0, NULL}}},
	/* 20 */
	{"[lmtp]\ntimeout = 2h\n",
	 {{X_TIMEOUT, 7200000, NULL}, {X_END, 0, NULL}}},
	/* 21 */
	{"[lmtp]\ntimeout = 1d\n",
	 {{X_TIMEOUT, 86400000, NULL}, {X_END, 0, NULL}}},
	/* 22 */
	{"[lmtp]\ntimeout = 1s\n", {{X_TIMEOUT, 1000, NULL}, {X_END, 0, NULL}}},
	/* 23 */
	{"[lmtp]\ntimeout = 90\n",
	 {{X_TIMEOUT, 90000, NULL}, {X_END, 0, NULL}}},
	/* 24 */
	{"[lmtp]\ntimeout = 1500ms\n",
	 {{X_TIMEOUT, 1500, NULL}, {X_END, 0, NULL}}},
	/* 25 */
	{"[lmtp]\ntimeout = 5m\n",
	 {{X_TIMEOUT, 300000, NULL}, {X_END, 0, NULL}}},
	/* 26 */
	{"[lmtp]\nsocket_mode = 0600\n",
	 {{X_MODE, 0600, NULL}, {X_END, 0, NULL}}},
	/* 27 */
	{"[lmtp]\nsocket_mode = 640\n",
	 {{X_MODE, 0640, NULL}, {X_END, 0, NULL}}},
	/* 28 */
	{"[lmtp]\nsocket_mode = 0\n", {{X_MODE, 0, NULL}, {X_END, 0, NULL}}},
	/* 29 */
	{"[lmtp]\nsocket_mode = 0777\n",
	 {{X_MODE, 0777, NULL}, {X_END, 0, NULL}}},
	/* 30 */
	{"[lmtp]\nmax_connections = 1\n",
	 {{X_MAX_CONN, 1, NULL}, {X_END, 0, NULL}}},
	/* 31 */
	{"[lmtp]\nmax_connections = 10000\n",
	 {{X_MAX_CONN, 10000, NULL}, {X_END, 0, NULL}}},
	/* 32 */
	{"[lmtp]\nmax_connections = 007\n",
	 {{X_MAX_CONN, 7, NULL}, {X_END, 0, NULL}}},
	/* 33 */
	{"[lmtp]\nbanner = \"hello  world # not a comment\"\n",
	 {{X_BANNER, 0, "hello  world # not a comment"}, {X_END, 0, NULL}}},
	/* 34 */
	{"[lmtp]\nbanner =   unquoted  inner  blanks  \n",
	 {{X_BANNER, 0, "unquoted  inner  blanks"}, {X_END, 0, NULL}}},
	/* 35 */
	{"[store]\r\nprimary = /a\r\nsync = no\r\n",
	 {{X_PRIMARY, 0, "/a"}, {X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 36 */
	{"[udsync]\nwhatever = 1\n[http]\nlisten = \"127.0.0.1:80\""
	 "\n[dovecot]\nx=y\n[tools]\n[store]\nsync = no\n",
	 {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 37 */
	{"log_level = debug\ncounter = 5\n[store]\nsync = no\n",
	 {{X_LOG_LEVEL, 0, NULL},
	  {X_COUNTER, 5, NULL},
	  {X_SYNC, 0, NULL},
	  {X_END, 0, NULL}}},
	/* 38 */
	{"\t[ store ]\t\n\tsync\t=\tno\t\n",
	 {{X_SYNC, 0, NULL}, {X_END, 0, NULL}}},
	/* 39 */
	{"[store]\nsync=no\n[lmtp]\nmax_connections=5\n[store]\n"
	 "primary=/x\n",
	 {{X_SYNC, 0, NULL},
	  {X_MAX_CONN, 5, NULL},
	  {X_PRIMARY, 0, "/x"},
	  {X_END, 0, NULL}}},
	/* 40 */
	{"counter = 18446744073709551615\n",
	 {{X_COUNTER, UINT64_MAX, NULL}, {X_END, 0, NULL}}},
	/* 41 */
	{"[store]\nsecondary =\n", {{X_SECONDARY, 0, NULL}, {X_END, 0, NULL}}},
	/* 42 */
	{"[store]\nsecondary = \"\"\n[lmtp]\nbanner=\n",
	 {{X_SECONDARY, 0, NULL}, {X_BANNER, 0, NULL}, {X_END, 0, NULL}}},
	/* 43 */ {"\r\n\n\r\n", {{X_END, 0, NULL}}},
	/* 44 */
	{"[lmtp]\nbanner = Gr\xc3\xbc\xc3\x9f"
	 "e\n",
	 {{X_BANNER, 0,
	   "Gr\xc3\xbc\xc3\x9f"
	   "e"},
	  {X_END, 0, NULL}}},
	/* 45 */
	{"[store]\nprimary = \"/path with space\"\n",
	 {{X_PRIMARY, 0, "/path with space"}, {X_END, 0, NULL}}},
	/* 46 */
	{"[lmtp]\nbanner = x=y=z\n",
	 {{X_BANNER, 0, "x=y=z"}, {X_END, 0, NULL}}},
	/* 47 */
	{"[store]\nsegment_size = 524288K\n",
	 {{X_SEGMENT_SIZE, 512 * MIB, NULL}, {X_END, 0, NULL}}},
	/* 48 */
	{"[lmtp]\ntimeout = 0000000000000000000000000000060s\n",
	 {{X_TIMEOUT, 60000, NULL}, {X_END, 0, NULL}}},
};

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(valid_cases); i++) {
		const struct valid_case *c = &valid_cases[i];
		struct sample got, want;
		const char *error = "none", *diff;
		int ret;

		memset(&got, 0xee, sizeof(got));
		defaults(&want);
		apply(&want, c->exp);
		ret = ms_cfg_parse(defs, NDEFS, c->text, strlen(c->text), &got,
				   &error);
		if (ret != 0)
			fail_msg("valid case %zu: %s: %s", i, ms_strerror(ret),
				 error);
		if ((diff = sample_diff(&got, &want)) != NULL)
			fail_msg("valid case %zu: field %s differs", i, diff);
		ms_cfg_free(defs, NDEFS, &got);
		assert_null(got.primary);
		assert_null(got.banner);
	}
}

/* ---- invalid inputs ---- */

static const struct invalid_case {
	const char *text;
	size_t len; /* 0: strlen(text) */
	int ret;
	const char *error; /* substring of *error_r */
} invalid_cases[] = {
	/* 0 */ {"[store]\nsegment_size = 1048575\n", 0, MS_ECONFIG,
		 "line 2: segment_size in [store]: expected a size"},
	/* 1 */
	{"[store]\nsegment_size = 1025M\n", 0, MS_ECONFIG,
	 "from 1M to 1G, got '1025M'"},
	/* 2 */ {"[store]\nsegment_size = 2G\n", 0, MS_ECONFIG, "got '2G'"},
	/* 3 */ {"[store]\nsegment_size = 64X\n", 0, MS_ECONFIG, "got '64X'"},
	/* 4 */
	{"[store]\nsegment_size = 64 M\n", 0, MS_ECONFIG, "expected a size"},
	/* 5 */
	{"[store]\nsegment_size = -1M\n", 0, MS_ECONFIG, "expected a size"},
	/* 6 */
	{"[store]\nsegment_size = +1M\n", 0, MS_ECONFIG, "expected a size"},
	/* 7 */
	{"[store]\nsegment_size = M\n", 0, MS_ECONFIG, "expected a size"},
	/* 8 */ {"[store]\nsegment_size =\n", 0, MS_ECONFIG, "expected a size"},
	/* 9 */
	{"[store]\nsegment_size = 0x100000\n", 0, MS_ECONFIG,
	 "expected a size"},
	/* 10 */
	{"[store]\nsegment_size = 17179869184T\n", 0, MS_ECONFIG,
	 "(too large)"},
	/* 11 */
	{"counter = 18446744073709551616\n", 0, MS_ECONFIG,
	 "line 1: counter in global section: expected a number"},
	/* 12 */
	{"counter = 99999999999999999999999999\n", 0, MS_ECONFIG,
	 "(too large)"},
	/* 13 */
	{"[lmtp]\ntimeout = 0s\n", 0, MS_ECONFIG, "from 1s to 1d, got '0s'"},
	/* 14 */ {"[lmtp]\ntimeout = 999ms\n", 0, MS_ECONFIG, "got '999ms'"},
	/* 15 */ {"[lmtp]\ntimeout = 86401s\n", 0, MS_ECONFIG, "got '86401s'"},
	/* 16 */
	{"[lmtp]\ntimeout = 5x\n", 0, MS_ECONFIG, "expected a duration"},
	/* 17 */
	{"[lmtp]\ntimeout = 1.5h\n", 0, MS_ECONFIG, "expected a duration"},
	/* 18 */
	{"[lmtp]\ntimeout = ms\n", 0, MS_ECONFIG, "expected a duration"},
	/* 19 */
	{"[lmtp]\ntimeout = 213503982334601d\n", 0, MS_ECONFIG, "(too large)"},
	/* 20 */
	{"[lmtp]\nsocket_mode = 0800\n", 0, MS_ECONFIG,
	 "expected an octal mode"},
	/* 21 */
	{"[lmtp]\nsocket_mode = 01000\n", 0, MS_ECONFIG, "from 0000 to 0777"},
	/* 22 */
	{"[lmtp]\nsocket_mode = 0177777\n", 0, MS_ECONFIG,
	 "expected an octal mode"},
	/* 23 */
	{"[lmtp]\nsocket_mode = rw-r-----\n", 0, MS_ECONFIG,
	 "expected an octal mode"},
	/* 24 */
	{"[lmtp]\nmax_connections = 0\n", 0, MS_ECONFIG,
	 "from 1 to 10000, got '0'"},
	/* 25 */
	{"[lmtp]\nmax_connections = 10001\n", 0, MS_ECONFIG, "got '10001'"},
	/* 26 */
	{"[lmtp]\nmax_connections = 1e3\n", 0, MS_ECONFIG, "expected a number"},
	/* 27 */
	{"[lmtp]\nmax_connections = \"\"\n", 0, MS_ECONFIG,
	 "expected a number"},
	/* 28 */
	{"[store]\nsync = maybe\n", 0, MS_ECONFIG,
	 "sync in [store]: expected yes or no, got 'maybe'"},
	/* 29 */ {"[store]\nsync =\n", 0, MS_ECONFIG, "expected yes or no"},
	/* 30 */
	{"[store]\nsync = \"yes please\"\n", 0, MS_ECONFIG,
	 "expected yes or no"},
	/* 31 */
	{"[store]\nio_engine = aio\n", 0, MS_ECONFIG,
	 "expected one of uring, psync, got 'aio'"},
	/* 32 */
	{"[store]\nprimry = /x\n", 0, MS_ECONFIG,
	 "line 2: unknown key 'primry' in [store]"},
	/* 33 */
	{"[store]\n[stroe]\nprimary = /x\n", 0, MS_ECONFIG,
	 "line 2: unknown section [stroe]"},
	/* 34 */
	{"foo = 1\n", 0, MS_ECONFIG,
	 "line 1: unknown key 'foo' in global section"},
	/* 35 */
	{"[store]\nsync = yes\nsync = no\n", 0, MS_ECONFIG,
	 "line 3: sync in [store] given twice (first on line 2)"},
	/* 36 */
	{"[store]\nsync = yes\n[lmtp]\n[store]\nsync = no\n", 0, MS_ECONFIG,
	 "line 5: sync in [store] given twice"},
	/* 37 */
	{"[store]\nsync yes\n", 0, MS_ECONFIG,
	 "line 2: expected 'key = value'"},
	/* 38 */
	{"[store]\nsync\n", 0, MS_ECONFIG, "line 2: expected 'key = value'"},
	/* 39 */
	{"[store]\nSync = yes\n", 0, MS_ECONFIG,
	 "line 2: expected 'key = value'"},
	/* 40 */
	{"[store]\n= yes\n", 0, MS_ECONFIG, "line 2: expected 'key = value'"},
	/* 41 */ {"[store\n", 0, MS_ECONFIG, "does not end in ']'"},
	/* 42 */ {"[]\n", 0, MS_ECONFIG, "bad section name ''"},
	/* 43 */ {"[Store]\n", 0, MS_ECONFIG, "bad section name 'Store'"},
	/* 44 */ {"[store] x\n", 0, MS_ECONFIG, "does not end in ']'"},
	/* 45 */
	{"[lmtp]\nbanner = \"abc\n", 0, MS_ECONFIG,
	 "line 2: banner in [lmtp]: unterminated quote"},
	/* 46 */ {"[lmtp]\nbanner = \"\n", 0, MS_ECONFIG, "unterminated quote"},
	/* 47 */
	{"[lmtp]\nbanner = \"a\"b\"\n", 0, MS_ECONFIG, "inside a quoted value"},
	/* 48 */ {"[lmtp]\nbanner = a\"b\n", 0, MS_ECONFIG, "inside a value"},
	/* 49 */
	{"[store]\nsync = yes # fsync\n", 0, MS_ECONFIG, "'#' inside a value"},
	/* 50 */
	{"[store]\nsync = y\0es\n", 20, MS_ECONFIG, "line 2: NUL byte"},
	/* 51 */ {"\0", 1, MS_ECONFIG, "line 1: NUL byte"},
	/* 52 */
	{"[store]\nsync = \x01yes\n", 0, MS_ECONFIG,
	 "line 2: control character 0x01"},
	/* 53 */
	{"[store]\nsync = y\res\n", 0, MS_ECONFIG,
	 "line 2: control character 0x0d"},
	/* 54 */
	{"[store]\nprimary =\n", 0, MS_ECONFIG,
	 "primary in [store]: expected 1 to 4096 bytes, got ''"},
	/* 55 */
	{"[store]\nprimary = \"\"\n", 0, MS_ECONFIG,
	 "expected 1 to 4096 bytes"},
	/* 56 */
	{"[lmtp]\n\n\n# c\nbanner = a\n\nbanner = b\n", 0, MS_ECONFIG,
	 "line 7: banner in [lmtp] given twice "
	 "(first on line 5)"},
	/* 57 */
	{"[udsync]\nkey = \"open\n", 0, MS_ECONFIG, "unterminated quote"},
	/* 58 */
	{"[udsync]\nnot a key line\n", 0, MS_ECONFIG, "expected 'key = value'"},
	/* 59 */
	{"[store]\nsync = yes\x7f\n", 0, MS_ECONFIG, "control character 0x7f"},
	/* 60 */
	{"[lmtp]\ntimeout = -5s\n", 0, MS_ECONFIG, "expected a duration"},
	/* 61 */
	{"[store]\nsegment_size = 64MB\n", 0, MS_ECONFIG, "expected a size"},
	/* 62 */
	{"[store]\nio_engine = uring,psync\n", 0, MS_ECONFIG,
	 "expected one of"},
	/* 63 */
	{"[store]\nsync = yes\r\r\n", 0, MS_ECONFIG, "control character 0x0d"},
};

static void test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(invalid_cases); i++) {
		const struct invalid_case *c = &invalid_cases[i];
		size_t len = c->len ? c->len : strlen(c->text);
		struct sample got, before;
		const char *error = NULL;
		int ret;

		memset(&got, 0x5c, sizeof(got));
		before = got;
		ret = ms_cfg_parse(defs, NDEFS, c->text, len, &got, &error);
		if (ret != c->ret)
			fail_msg("invalid case %zu: got %s (%s), want %s", i,
				 ms_strerror(ret), ret == 0 ? "-" : error,
				 ms_strerror(c->ret));
		if (error == NULL || strstr(error, c->error) == NULL)
			fail_msg("invalid case %zu: error '%s' lacks '%s'", i,
				 error ? error : "(null)", c->error);
		if (memcmp(&got, &before, sizeof(got)) != 0)
			fail_msg("invalid case %zu: target was changed", i);
	}
}

/* ---- limits ---- */

static char *line_of(size_t line_len, const char *prefix, const char *eol)
{
	/* prefix + "banner = " + 'a'... so the line is line_len bytes */
	size_t plen = strlen(prefix), elen = strlen(eol);
	char *s = ms_malloc(plen + line_len + elen + 1);
	const char *kv = "banner = ";
	size_t kvlen = strlen(kv);

	memcpy(s, prefix, plen);
	memcpy(s + plen, kv, kvlen);
	memset(s + plen + kvlen, 'a', line_len - kvlen);
	memcpy(s + plen + line_len, eol, elen + 1);
	return s;
}

static void test_line_limit(void **state)
{
	static const struct {
		size_t line;
		const char *eol;
		int ret;
	} cases[] = {
		{MS_CFG_MAX_LINE, "\n", 0},
		{MS_CFG_MAX_LINE, "\r\n", 0}, /* line end not counted */
		{MS_CFG_MAX_LINE, "", 0},
		{MS_CFG_MAX_LINE + 1, "\n", MS_ECONFIG},
		{MS_CFG_MAX_LINE + 1, "\r\n", MS_ECONFIG},
		{MS_CFG_MAX_LINE + 1, "", MS_ECONFIG},
	};
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
		char *text = line_of(cases[i].line, "[lmtp]\n", cases[i].eol);
		struct sample got;
		const char *error = NULL;
		int ret = ms_cfg_parse(defs, NDEFS, text, strlen(text), &got,
				       &error);
		if (ret != cases[i].ret)
			fail_msg("line case %zu: got %s (%s)", i,
				 ms_strerror(ret), ret ? error : "-");
		if (ret == 0) {
			assert_int_equal(strlen(got.banner),
					 cases[i].line - strlen("banner = "));
			ms_cfg_free(defs, NDEFS, &got);
		} else {
			assert_non_null(strstr(error, "line 2: 4097 bytes"));
		}
		free(text);
	}
}

static void test_file_limit(void **state)
{
	struct sample got;
	const char *error;
	size_t len = MS_CFG_MAX_FILE + 1;
	char *text = ms_malloc(len);

	(void)state;
	/* a file of comment lines */
	for (size_t i = 0; i < len; i++)
		text[i] = (i % 64 == 63) ? '\n' : '#';
	assert_int_equal(ms_cfg_parse(defs, NDEFS, text, len, &got, &error),
			 MS_ETOOBIG);
	assert_int_equal(ms_cfg_parse(defs, NDEFS, text, len - 1, &got, &error),
			 0);
	ms_cfg_free(defs, NDEFS, &got);
	free(text);
}

/* ---- ownership ---- */

static void test_target_untouched(void **state)
{
	struct sample s;
	const char *error;

	(void)state;
	defaults(&s);
	s.primary = "keep me";
	s.segment_size = 12345;
	s.sync = 7;
	/* good lines before the bad one must not leak into the target */
	static const char bad[] = "[store]\nprimary = /new\n"
				  "segment_size = 2M\nsync = maybe\n";
	static const char good[] = "[store]\nprimary=/p\n";
	assert_int_equal(
		ms_cfg_parse(defs, NDEFS, bad, sizeof(bad) - 1, &s, &error),
		MS_ECONFIG);
	assert_string_equal(s.primary, "keep me");
	assert_int_equal(s.segment_size, 12345);
	assert_int_equal(s.sync, 7);
	assert_string_equal(s.banner, "mstore LMTP");
	assert_non_null(strstr(error, "line 4"));

	/* success overwrites every field */
	assert_int_equal(
		ms_cfg_parse(defs, NDEFS, good, sizeof(good) - 1, &s, &error),
		0);
	assert_string_equal(s.primary, "/p");
	assert_int_equal(s.segment_size, 64 * MIB);
	assert_int_equal(s.sync, 1);
	ms_cfg_free(defs, NDEFS, &s);
}

static void test_bad_default(void **state)
{
	static const struct ms_cfg_def bad[] = {
		{"store", "n", MS_CFG_UINT, "12x", 0, 0, NULL, 0, NULL},
	};
	static const struct ms_cfg_def out_of_range[] = {
		{"store", "s", MS_CFG_STR, "x", 0, 0, NULL, 0, NULL},
		{"store", "n", MS_CFG_UINT, "5", 10, 20, NULL, 8, NULL},
	};
	uint64_t v[2] = {0, 0};
	const char *error;

	(void)state;
	assert_int_equal(ms_cfg_parse(bad, 1, "", 0, v, &error), MS_ECONFIG);
	assert_non_null(strstr(error, "built-in default of n in [store]"));
	/* the STR default made before the failure is freed (ASan) */
	assert_int_equal(ms_cfg_parse(out_of_range, 2, "", 0, v, &error),
			 MS_ECONFIG);
	assert_non_null(strstr(error, "from 10 to 20"));
}

/* ---- dump ---- */

static void test_dump(void **state)
{
	static const char text[] =
		"log_level = warn\n[store]\nprimary = \"/var/mail/a b\"\n"
		"segment_size = 3M\nio_engine = psync\nsync = off\n"
		"[lmtp]\ntimeout = 1500ms\nsocket_mode = 600\n"
		"banner = \"# hi\"\n";
	struct sample a, b;
	const char *error;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;

	(void)state;
	assert_int_equal(
		ms_cfg_parse(defs, NDEFS, text, sizeof(text) - 1, &a, &error),
		0);
	f = open_memstream(&out, &outlen);
	assert_non_null(f);
	assert_int_equal(ms_cfg_dump(defs, NDEFS, &a, f), 0);
	fclose(f);

	static const char want[] = "# lowest level logged\n"
				   "log_level = warn\n"
				   "counter = 0\n"
				   "\n[store]\n"
				   "# directory of the primary copy\n"
				   "primary = \"/var/mail/a b\"\n"
				   "# directory of the second copy (optional)\n"
				   "# secondary = (not set)\n"
				   "# bytes per segment file\n"
				   "segment_size = 3M\n"
				   "# uring or psync\n"
				   "io_engine = psync\n"
				   "# fdatasync before acknowledging\n"
				   "sync = no\n"
				   "\n[lmtp]\n"
				   "max_connections = 100\n"
				   "# idle timeout\n"
				   "# per connection\n"
				   "timeout = 1500ms\n"
				   "socket_mode = 0600\n"
				   "banner = \"# hi\"\n";
	assert_string_equal(out, want);

	/* the dump parses back to the same values */
	assert_int_equal(ms_cfg_parse(defs, NDEFS, out, outlen, &b, &error), 0);
	assert_null(sample_diff(&a, &b));
	ms_cfg_free(defs, NDEFS, &a);
	ms_cfg_free(defs, NDEFS, &b);
	free(out);

	/* a STR emptied against a non-empty default stays empty */
	static const char empty[] = "[lmtp]\nbanner =\n";
	assert_int_equal(
		ms_cfg_parse(defs, NDEFS, empty, sizeof(empty) - 1, &a, &error),
		0);
	assert_null(a.banner);
	f = open_memstream(&out, &outlen);
	assert_int_equal(ms_cfg_dump(defs, NDEFS, &a, f), 0);
	fclose(f);
	assert_non_null(strstr(out, "\nbanner = \"\"\n"));
	assert_non_null(strstr(out, "\n# primary = (not set)\n"));
	assert_int_equal(ms_cfg_parse(defs, NDEFS, out, outlen, &b, &error), 0);
	assert_null(sample_diff(&a, &b));
	free(out);
}

/* ---- load ---- */

static void test_load(void **state)
{
	char dir[] = "/tmp/test_cfg.XXXXXX", path[64], cmd[96];
	struct sample s;
	const char *error;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mstore.conf", dir);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[store]\nprimary = /srv/a\nsync = no\n", f);
	fclose(f);
	assert_int_equal(ms_cfg_load(defs, NDEFS, path, &s, &error), 0);
	assert_string_equal(s.primary, "/srv/a");
	assert_int_equal(s.sync, 0);
	ms_cfg_free(defs, NDEFS, &s);

	/* errors name the file and the line */
	f = fopen(path, "w");
	fputs("[store]\nsync = perhaps\n", f);
	fclose(f);
	assert_int_equal(ms_cfg_load(defs, NDEFS, path, &s, &error),
			 MS_ECONFIG);
	assert_non_null(strstr(error, path));
	assert_non_null(strstr(error, "line 2"));

	/* too big */
	f = fopen(path, "w");
	for (size_t i = 0; i < MS_CFG_MAX_FILE / 8 + 1; i++)
		fputs("#######\n", f);
	fclose(f);
	assert_int_equal(ms_cfg_load(defs, NDEFS, path, &s, &error),
			 MS_ETOOBIG);

	snprintf(path, sizeof(path), "%s/missing.conf", dir);
	assert_int_equal(ms_cfg_load(defs, NDEFS, path, &s, &error), -ENOENT);
	assert_non_null(strstr(error, path));

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- number helpers ---- */

enum num_fn {
	P_U64,
	P_SIZE,
	P_DUR
};

static const struct num_case {
	enum num_fn fn;
	const char *s;
	int ret;
	uint64_t v;
} num_cases[] = {
	/* 0 */ {P_U64, "0", 0, 0},
	/* 1 */ {P_U64, "18446744073709551615", 0, UINT64_MAX},
	/* 2 */ {P_U64, "18446744073709551616", -ERANGE, 0},
	/* 3 */ {P_U64, "18446744073709551620", -ERANGE, 0},
	/* 4 */ {P_U64, "", -EINVAL, 0},
	/* 5 */ {P_U64, " 1", -EINVAL, 0},
	/* 6 */ {P_U64, "1 ", -EINVAL, 0},
	/* 7 */ {P_U64, "-1", -EINVAL, 0},
	/* 8 */ {P_U64, "+1", -EINVAL, 0},
	/* 9 */ {P_U64, "99999999999999999999x", -EINVAL, 0},
	/* 10 */ {P_SIZE, "0", 0, 0},
	/* 11 */ {P_SIZE, "1k", 0, 1024},
	/* 12 */ {P_SIZE, "1T", 0, (uint64_t)1 << 40},
	/* 13 */ {P_SIZE, "16777215T", 0, (uint64_t)16777215 << 40},
	/* 14 */ {P_SIZE, "16777216T", -ERANGE, 0},
	/* 15 */ {P_SIZE, "k", -EINVAL, 0},
	/* 16 */ {P_SIZE, "1kk", -EINVAL, 0},
	/* 17 */ {P_SIZE, "1b", -EINVAL, 0},
	/* 18 */ {P_DUR, "0", 0, 0},
	/* 19 */ {P_DUR, "7d", 0, (uint64_t)7 * 86400000},
	/* 20 */ {P_DUR, "250ms", 0, 250},
	/* 21 */ {P_DUR, "18446744073709551615ms", 0, UINT64_MAX},
	/* 22 */ {P_DUR, "18446744073709551615", -ERANGE, 0},
	/* 23 */ {P_DUR, "s", -EINVAL, 0},
	/* 24 */ {P_DUR, "5mss", -EINVAL, 0},
	/* 25 */ {P_DUR, "5sm", -EINVAL, 0},
	/* 26 */ {P_DUR, "1w", -EINVAL, 0},
};

/* relative paths are relative to the config file's directory */
static void test_path_abs(void **state)
{
	(void)state;
	static const struct {
		const char *cfg, *in, *want;
	} c[] = {
		{ "/etc/mstore/mstore.conf", "a.sock", "/etc/mstore/a.sock" },
		{ "/etc/mstore/mstore.conf", "run/x", "/etc/mstore/run/x" },
		{ "/etc/mstore/mstore.conf", "/run/x", "/run/x" },
		{ "conf/m.conf", "../d", "conf/../d" },
		{ "m.conf", "d", "d" }, /* no directory in the file's path */
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *p = ms_strdup(c[i].in);
		ms_cfg_path_abs(&p, c[i].cfg);
		assert_string_equal(p, c[i].want);
		free(p);
	}
	char *none = NULL;
	ms_cfg_path_abs(&none, "/etc/mstore/mstore.conf");
	assert_null(none);
}

static void test_numbers(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(num_cases); i++) {
		const struct num_case *c = &num_cases[i];
		uint64_t v = 4242;
		int ret = 0;

		switch (c->fn) {
		case P_U64:
			ret = ms_parse_u64(c->s, strlen(c->s), &v);
			break;
		case P_SIZE:
			ret = ms_parse_size(c->s, strlen(c->s), &v);
			break;
		case P_DUR:
			ret = ms_parse_duration_ms(c->s, strlen(c->s), &v);
			break;
		}
		if (ret != c->ret)
			fail_msg("number case %zu: got %d, want %d", i, ret,
				 c->ret);
		if (v != (ret == 0 ? c->v : 4242))
			fail_msg("number case %zu: value %llu", i,
				 (unsigned long long)v);
	}
	/* the length bounds the parse: no NUL needed */
	uint64_t v = 0;
	assert_int_equal(ms_parse_u64("12345", 3, &v), 0);
	assert_int_equal(v, 123);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_file_limit),
		cmocka_unit_test(test_target_untouched),
		cmocka_unit_test(test_bad_default),
		cmocka_unit_test(test_dump),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_path_abs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
