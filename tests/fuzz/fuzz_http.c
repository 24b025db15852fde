/*
 * fuzz_http.c - libFuzzer target for the system API's parsers: the HTTP
 * request parser (store/http.c) and the JSON reader (store/json.c).
 *
 * The input is parsed as a stream of requests, as sysapi.c does; each
 * request must lie inside the input (path, headers, body), and its body
 * goes to the JSON reader.  An object that parses must survive a round
 * trip: its members written again (ms_json_put_str for strings) parse
 * back to the same values, or the target aborts.  The whole input is also
 * given to the JSON reader and to the percent-decoder.  Seeds:
 * tests/fuzz/corpus/http/.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "http.h"
#include "json.h"

static void json_round_trip(const uint8_t *p, size_t len)
{
	struct ms_json_obj o, o2;
	struct ms_buf b;
	const char *err = NULL;

	if (ms_json_parse_object(p, len, &o, &err) < 0) {
		if (err == NULL)
			abort();
		return;
	}
	ms_buf_init(&b, 0);
	(void)ms_buf_append(&b, "{", 1);
	for (size_t i = 0; i < o.n; i++) {
		char num[32];
		if (i > 0)
			(void)ms_buf_append(&b, ",", 1);
		(void)ms_json_put_str(&b, o.f[i].key, strlen(o.f[i].key));
		(void)ms_buf_append(&b, ":", 1);
		if (o.f[i].type == MS_JSON_STRING) {
			if (strlen(o.f[i].str) != o.f[i].str_len)
				abort(); /* a NUL inside */
			(void)ms_json_put_str(&b, o.f[i].str, o.f[i].str_len);
		} else {
			int n = snprintf(num, sizeof(num), "%" PRId64,
					 o.f[i].num);
			(void)ms_buf_append(&b, num, (size_t)n);
		}
	}
	(void)ms_buf_append(&b, "}", 1);
	if (ms_json_parse_object(b.data, b.len, &o2, &err) < 0) {
		fprintf(stderr, "written object does not parse: %s\n", err);
		abort();
	}
	if (o2.n != o.n)
		abort();
	for (size_t i = 0; i < o.n; i++) {
		if (strcmp(o.f[i].key, o2.f[i].key) != 0 ||
		    o.f[i].type != o2.f[i].type)
			abort();
		if (o.f[i].type == MS_JSON_STRING
			    ? o.f[i].str_len != o2.f[i].str_len ||
				      memcmp(o.f[i].str, o2.f[i].str,
					     o.f[i].str_len) != 0
			    : o.f[i].num != o2.f[i].num)
			abort();
	}
	ms_json_obj_free(&o2);
	ms_json_obj_free(&o);
	ms_buf_free(&b);
}

static void inside(const void *p, size_t len, const uint8_t *data,
		   size_t size)
{
	const uint8_t *q = p;
	if (len > 0 && (q < data || q + len > data + size))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ms_http_limits lim = { .max_head = 4096, .max_body = 4096 };
	size_t off = 0;

	while (off < size) {
		struct ms_http_req r;
		int st = 0;
		const char *err = NULL;
		int ret = ms_http_parse(data + off, size - off, &lim, &r, &st,
					&err);
		if (ret == MS_ETRUNC)
			break;
		if (ret < 0) {
			if (err == NULL || st < 400 || st > 599)
				abort();
			break;
		}
		if (r.total == 0 || r.total > size - off ||
		    r.path_len == 0 || r.path[0] != '/' ||
		    r.body_len > lim.max_body)
			abort();
		inside(r.method, r.method_len, data + off, r.total);
		inside(r.path, r.path_len, data + off, r.total);
		inside(r.query, r.query_len, data + off, r.total);
		inside(r.auth, r.auth_len, data + off, r.total);
		inside(r.body, r.body_len, data + off, r.total);
		char name[256];
		(void)ms_http_pct_decode(r.path, r.path_len, name,
					 sizeof(name));
		json_round_trip(r.body, r.body_len);
		off += r.total;
	}
	json_round_trip(data, size);
	return 0;
}
