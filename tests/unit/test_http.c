/*
 * test_http.c - the system API's pure parts: the HTTP request parser
 * (store/http.c) and the JSON reader and string writer (store/json.c),
 * as tables of valid and invalid inputs, each case named by its index;
 * every limit hit; every prefix of a valid request is "need more"; the
 * output untouched on failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "http.h"
#include "json.h"
#include "mstest_cmocka.h"

/* ---- HTTP: valid requests ---- */

struct http_ok {
	const char *in;
	const char *method, *path, *query;
	int minor;
	bool keep_alive;
	const char *auth;
	const char *body;
	size_t extra;	/* bytes after the request (the next one) */
};

static const struct http_ok http_valid[] = {
	/* 0 */ { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET",
		  "/metrics", NULL, 1, true, NULL, "", 0 },
	/* 1 */ { "GET /status?x=1 HTTP/1.0\r\n\r\n", "GET", "/status", "x=1",
		  0, false, NULL, "", 0 },
	/* 2 */ { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET",
		  "/", NULL, 0, true, NULL, "", 0 },
	/* 3 */ { "GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n",
		  "GET", "/", NULL, 1, false, NULL, "", 0 },
	/* 4 */ { "POST /admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: "
		  "4\r\nAuthorization:   Bearer abc  \r\n\r\n{}\r\nGET",
		  "POST", "/admin/users", NULL, 1, true, "Bearer abc", "{}\r\n",
		  3 },
	/* 5 */ { "PUT /q HTTP/1.1\r\nhOsT: x\r\ncontent-length: 0\r\n\r\n",
		  "PUT", "/q", NULL, 1, true, NULL, "", 0 },
	/* 6 */ { "DELETE /a%20b HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n"
		  "Connection: keep-alive, TE\r\n\r\n",
		  "DELETE", "/a%20b", NULL, 1, true, NULL, "", 0 },
	/* 7 */ { "GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\r\n\r\n", "GET", "/",
		  NULL, 1, true, NULL, "", 0 },
};

static void test_http_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(http_valid); i++) {
		const struct http_ok *c = &http_valid[i];
		size_t len = strlen(c->in);
		struct ms_http_req r;
		int st = 0;
		const char *err = "";
		CHECK_RET(ms_http_parse((const uint8_t *)c->in, len, NULL, &r,
					&st, &err),
			  0, "valid %zu (%s)", i, err);
		assert_int_equal(r.total, len - c->extra);
		assert_true(ms_http_method_is(&r, c->method));
		assert_int_equal(r.path_len, strlen(c->path));
		assert_memory_equal(r.path, c->path, r.path_len);
		if (c->query == NULL) {
			assert_null(r.query);
		} else {
			assert_int_equal(r.query_len, strlen(c->query));
			assert_memory_equal(r.query, c->query, r.query_len);
		}
		assert_int_equal(r.minor, c->minor);
		if (r.keep_alive != c->keep_alive)
			fail_msg("valid %zu: keep_alive %d", i, r.keep_alive);
		if (c->auth == NULL) {
			assert_null(r.auth);
		} else {
			assert_int_equal(r.auth_len, strlen(c->auth));
			assert_memory_equal(r.auth, c->auth, r.auth_len);
		}
		assert_int_equal(r.body_len, strlen(c->body));
		if (r.body_len)
			assert_memory_equal(r.body, c->body, r.body_len);
		/* every proper prefix of the request needs more bytes */
		for (size_t k = 0; k < len - c->extra; k++) {
			struct ms_http_req r2;
			r2.total = 12345;
			int ret = ms_http_parse((const uint8_t *)c->in, k, NULL,
						&r2, &st, &err);
			if (ret != MS_ETRUNC)
				fail_msg("valid %zu prefix %zu: %d (%s)", i, k,
					 ret, err);
			assert_int_equal(r2.total, 12345);
		}
	}
}

/* ---- HTTP: refused requests ---- */

struct http_bad {
	const char *in;
	size_t len;	/* 0: strlen */
	int status;
};

#define NUL_REQ "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"

static const struct http_bad http_invalid[] = {
	/* 0 */ { "GARBAGE\r\n\r\n", 0, 400 },
	/* 1 */ { "GET /x\r\n\r\n", 0, 400 },
	/* 2 */ { "GET x HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 3 */ { "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 0, 505 },
	/* 4 */ { "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 0, 505 },
	/* 5 */ { "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 0, 400 },
	/* 6 */ { "GET / http/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 7 */ { "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 8 */ { "GET / HTTP/1.1\r\n\r\n", 0, 400 },		/* no Host */
	/* 9 */ { "GET / HTTP/1.1\nHost: x\n\n", 0, 400 },
	/* 10 */ { "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 0, 400 },
	/* 11 */ { NUL_REQ, sizeof(NUL_REQ) - 1, 400 },
	/* 12 */ { "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 0, 400 },
	/* 13 */ { "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0, 400 },
	/* 14 */ { "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 0, 400 },
	/* 15 */ { "GET / HTTP/1.1\r\nHost: x\r\nX: \x80\r\n\r\n", 0, 400 },
	/* 16 */ { "POST / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 411 },
	/* 17 */ { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
		   "\r\n\r\n", 0, 411 },
	/* 18 */ { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip"
		   "\r\nContent-Length: 1\r\n\r\nx", 0, 501 },
	/* 19 */ { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537"
		   "\r\n\r\n", 0, 413 },
	/* 20 */ { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
		   0, 400 },
	/* 21 */ { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
		   0, 400 },
	/* 22 */ { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
		   "99999999999999999999\r\n\r\n", 0, 400 },
	/* 23 */ { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
		   "Content-Length: 1\r\n\r\nx", 0, 400 },
	/* 24 */ { "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\n"
		   "Authorization: b\r\n\r\n", 0, 400 },
	/* 25 */ { "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 26 */ { "GETTINGTOOLONGMETHOD / HTTP/1.1\r\nHost: x\r\n\r\n", 0,
		   501 },
	/* 27 */ { "GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n", 0, 400 },
	/* 28 */ { "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 29 */ { "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400 },
	/* 30 */ { "GET / HTTP/1.1\r\nHost: x\r\nConnection: a\r\n"
		   "Connection: b\r\n\r\n", 0, 400 },
};

static void test_http_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(http_invalid); i++) {
		const struct http_bad *c = &http_invalid[i];
		size_t len = c->len ? c->len : strlen(c->in);
		struct ms_http_req r;
		int st = 0;
		const char *err = NULL;
		r.total = 777;
		CHECK_RET(ms_http_parse((const uint8_t *)c->in, len, NULL, &r,
					&st, &err),
			  MS_ECORRUPT, "invalid %zu", i);
		if (st != c->status)
			fail_msg("invalid %zu: status %d, want %d (%s)", i, st,
				 c->status, err);
		assert_non_null(err);
		assert_int_equal(r.total, 777);
	}
}

static void test_http_limits(void **state)
{
	(void)state;
	struct ms_http_limits lim = { .max_head = 64, .max_body = 8 };
	struct ms_http_req r;
	int st = 0;
	const char *err = "";
	char buf[200];

	/* a head of exactly 64 bytes passes, 65 does not */
	const char *pre = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
	size_t fill = 64 - strlen(pre) - 4;
	snprintf(buf, sizeof(buf), "%s%.*s\r\n\r\n", pre, (int)fill,
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(strlen(buf), 64);
	CHECK_RET(ms_http_parse((uint8_t *)buf, 64, &lim, &r, &st, &err), 0,
		  "head at the limit");
	snprintf(buf, sizeof(buf), "%sa%.*s\r\n\r\n", pre, (int)fill,
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CHECK_RET(ms_http_parse((uint8_t *)buf, strlen(buf), &lim, &r, &st,
				&err),
		  MS_ECORRUPT, "head over the limit");
	assert_int_equal(st, 431);
	/* refused as soon as the limit is passed, without the end */
	CHECK_RET(ms_http_parse((uint8_t *)buf, 64, &lim, &r, &st, &err),
		  MS_ECORRUPT, "head over the limit, unfinished");
	assert_int_equal(st, 431);
	/* body at and over the limit */
	const char *b8 = "POST / HTTP/1.0\r\nContent-Length: 8\r\n\r\n12345678";
	CHECK_RET(ms_http_parse((uint8_t *)b8, strlen(b8), &lim, &r, &st,
				&err),
		  0, "body at the limit");
	assert_int_equal(r.body_len, 8);
	const char *b9 = "POST / HTTP/1.0\r\nContent-Length: 9\r\n\r\n";
	CHECK_RET(ms_http_parse((uint8_t *)b9, strlen(b9), &lim, &r, &st,
				&err),
		  MS_ECORRUPT, "body over the limit");
	assert_int_equal(st, 413);
	/* too many header lines */
	char many[4096] = "GET / HTTP/1.1\r\nHost: x\r\n";
	for (int i = 0; i < MS_HTTP_MAX_HEADERS; i++)
		strcat(many, "X: y\r\n");
	strcat(many, "\r\n");
	CHECK_RET(ms_http_parse((uint8_t *)many, strlen(many), NULL, &r, &st,
				&err),
		  MS_ECORRUPT, "too many headers");
	assert_int_equal(st, 431);
	/* a long target */
	char target[MS_HTTP_MAX_TARGET + 100];
	snprintf(target, sizeof(target), "GET /%0*d HTTP/1.1\r\nHost: x\r\n\r\n",
		 MS_HTTP_MAX_TARGET, 0);
	CHECK_RET(ms_http_parse((uint8_t *)target, strlen(target), NULL, &r,
				&st, &err),
		  MS_ECORRUPT, "long target");
	assert_int_equal(st, 414);
}

static void test_http_pct_and_response(void **state)
{
	(void)state;
	char out[16];
	assert_int_equal(ms_http_pct_decode("a%20b%2Fc", 9, out, sizeof(out)),
			 5);
	assert_string_equal(out, "a b/c");
	assert_int_equal(ms_http_pct_decode("%c3%A9", 6, out, sizeof(out)), 2);
	static const char *const bad[] = { "a/b", "%", "%2", "%zz", "%00",
					   "%0a", "\x01",
					   "0123456789abcdef" };
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++)
		if (ms_http_pct_decode(bad[i], strlen(bad[i]), out,
				       sizeof(out)) >= 0)
			fail_msg("pct %zu: accepted", i);

	struct ms_buf b;
	ms_buf_init(&b, 0);
	assert_int_equal(ms_http_response(&b, 404, "application/json",
					  "X-A: b\r\n", false, "{}", 2),
			 0);
	const char *want = "HTTP/1.1 404 Not Found\r\nServer: mstored\r\n"
			   "Content-Type: application/json\r\n"
			   "Content-Length: 2\r\nConnection: close\r\n"
			   "Cache-Control: no-store\r\nX-A: b\r\n\r\n{}";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	ms_buf_free(&b);
}

/* ---- JSON ---- */

struct json_ok {
	const char *in;
	const char *key1;
	const char *str1;	/* NULL: key1 is an integer */
	int64_t num1;
	size_t n;
};

static const struct json_ok json_valid[] = {
	/* 0 */ { "{}", NULL, NULL, 0, 0 },
	/* 1 */ { " {\"name\":\"alice\"} \n", "name", "alice", 0, 1 },
	/* 2 */ { "{\"max_bytes\":0,\"max_messages\":7}", "max_bytes", NULL, 0,
		  2 },
	/* 3 */ { "{\"n\":-9223372036854775808}", "n", NULL, INT64_MIN, 1 },
	/* 4 */ { "{\"n\":9223372036854775807}", "n", NULL, INT64_MAX, 1 },
	/* 5 */ { "{\"s\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "s",
		  "a\"\\/\b\f\n\r\t", 0, 1 },
	/* 6 */ { "{\"s\":\"\\u00e9\\u20AC\\ud83d\\ude00\"}", "s",
		  "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 0, 1 },
	/* 7 */ { "{\"s\":\"\xc3\xa9\"}", "s", "\xc3\xa9", 0, 1 },
	/* 8 */ { "{\"s\":\"\"}", "s", "", 0, 1 },
	/* 9 */ { "{\"\\u0061\":1}", "a", NULL, 1, 1 },
};

static void test_json_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(json_valid); i++) {
		const struct json_ok *c = &json_valid[i];
		struct ms_json_obj o;
		const char *err = "";
		CHECK_RET(ms_json_parse_object((const uint8_t *)c->in,
					       strlen(c->in), &o, &err),
			  0, "valid %zu (%s)", i, err);
		assert_int_equal(o.n, c->n);
		if (c->key1 != NULL) {
			const char *s;
			size_t len;
			int64_t v;
			if (c->str1 != NULL) {
				assert_int_equal(ms_json_get_str(&o, c->key1,
								 &s, &len),
						 1);
				assert_int_equal(len, strlen(c->str1));
				assert_string_equal(s, c->str1);
				assert_int_equal(ms_json_get_int(&o, c->key1,
								 &v),
						 MS_ECORRUPT);
			} else {
				assert_int_equal(ms_json_get_int(&o, c->key1,
								 &v),
						 1);
				assert_true(v == c->num1);
			}
		}
		assert_int_equal(ms_json_get_int(&o, "absent", NULL), 0);
		ms_json_obj_free(&o);
	}
}

static const char *const json_invalid[] = {
	/* 0 */ "",
	/* 1 */ "[]",
	/* 2 */ "{",
	/* 3 */ "{\"a\":1,}",
	/* 4 */ "{\"a\":1} x",
	/* 5 */ "{\"a\":true}",
	/* 6 */ "{\"a\":null}",
	/* 7 */ "{\"a\":{}}",
	/* 8 */ "{\"a\":[1]}",
	/* 9 */ "{\"a\":1.5}",
	/* 10 */ "{\"a\":1e3}",
	/* 11 */ "{\"a\":01}",
	/* 12 */ "{\"a\":-}",
	/* 13 */ "{\"a\":9223372036854775808}",
	/* 14 */ "{\"a\":-9223372036854775809}",
	/* 15 */ "{\"a\":99999999999999999999999}",
	/* 16 */ "{\"a\":1,\"a\":2}",
	/* 17 */ "{\"a\":\"\\u0000\"}",
	/* 18 */ "{\"a\":\"\\ud800\"}",
	/* 19 */ "{\"a\":\"\\udc00\"}",
	/* 20 */ "{\"a\":\"\\ud800\\u0041\"}",
	/* 21 */ "{\"a\":\"\\x\"}",
	/* 22 */ "{\"a\":\"\\u12\"}",
	/* 23 */ "{\"a\":\"\x01\"}",
	/* 24 */ "{\"a\":\"\xff\"}",
	/* 25 */ "{\"a\":\"\xc0\xaf\"}",		/* overlong */
	/* 26 */ "{\"a\":\"\xed\xa0\x80\"}",	/* a surrogate */
	/* 27 */ "{\"a\":\"unterminated}",
	/* 28 */ "{a:1}",
	/* 29 */ "{\"a\" 1}",
	/* 30 */ "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}",
	/* 31 */ "{\"1\":1,\"2\":1,\"3\":1,\"4\":1,\"5\":1,\"6\":1,\"7\":1,"
		 "\"8\":1,\"9\":1,\"10\":1,\"11\":1,\"12\":1,\"13\":1,\"14\":1,"
		 "\"15\":1,\"16\":1,\"17\":1}",
	/* 32 */ "{\"a\":+1}",
	/* 33 */ "\xef\xbb\xbf{}",
	/* 34 */ "{}{}",
};

static void test_json_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(json_invalid); i++) {
		struct ms_json_obj o;
		const char *err = NULL;
		CHECK_RET(ms_json_parse_object((const uint8_t *)json_invalid[i],
					       strlen(json_invalid[i]), &o,
					       &err),
			  MS_ECORRUPT, "invalid %zu", i);
		assert_non_null(err);
	}
}

static void test_json_unknown_and_writer(void **state)
{
	(void)state;
	struct ms_json_obj o;
	const char *err = "";
	const char *in = "{\"user\":\"a\",\"since\":3}";
	assert_int_equal(ms_json_parse_object((const uint8_t *)in, strlen(in),
					      &o, &err),
			 0);
	static const char *const ok1[] = { "user", "since", NULL };
	static const char *const ok2[] = { "user", NULL };
	assert_null(ms_json_unknown_key(&o, ok1));
	assert_string_equal(ms_json_unknown_key(&o, ok2), "since");
	ms_json_obj_free(&o);

	struct ms_buf b;
	ms_buf_init(&b, 0);
	const char s[] = "a\"b\\c\n\x01\x7f\xc3\xa9\xff/";
	assert_int_equal(ms_json_put_str(&b, s, sizeof(s) - 1), 0);
	const char *want = "\"a\\\"b\\\\c\\u000a\\u0001\\u007f\xc3\xa9"
			   "\xef\xbf\xbd/\"";
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	/* what the writer writes, the reader reads back */
	ms_buf_reset(&b);
	(void)ms_buf_append(&b, "{\"k\":", 5);
	assert_int_equal(ms_json_put_str(&b, "x\ty\"", 4), 0);
	(void)ms_buf_append(&b, "}", 1);
	const char *got;
	size_t glen;
	assert_int_equal(ms_json_parse_object(b.data, b.len, &o, &err), 0);
	assert_int_equal(ms_json_get_str(&o, "k", &got, &glen), 1);
	assert_string_equal(got, "x\ty\"");
	ms_json_obj_free(&o);
	ms_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http_valid),
		cmocka_unit_test(test_http_invalid),
		cmocka_unit_test(test_http_limits),
		cmocka_unit_test(test_http_pct_and_response),
		cmocka_unit_test(test_json_valid),
		cmocka_unit_test(test_json_invalid),
		cmocka_unit_test(test_json_unknown_and_writer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
