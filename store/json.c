/*
 * json.c - strict reader of flat JSON objects and a string writer; see
 * json.h.  Decoded keys and strings go to o->text, reserved once at the
 * input's length (a decoded string and its NUL never take more bytes
 * than the quoted original), so pointers into it never move.
 */
#include <stdio.h>

#include "json.h"

size_t ms_utf8_seq(const uint8_t *p, size_t len)
{
	if (len == 0)
		return 0;
	uint8_t c = p[0];
	if (c < 0x80)
		return 1;
	size_t n;
	uint32_t cp, min;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

struct jp {
	const uint8_t *p;
	size_t len, i;
	struct ms_json_obj *o;
	const char *err;
};

static int jfail(struct jp *j, const char *what)
{
	j->err = ms_errf("%s at byte %zu", what, j->i);
	return MS_ECORRUPT;
}

static void skip_ws(struct jp *j)
{
	while (j->i < j->len && (j->p[j->i] == ' ' || j->p[j->i] == '\t' ||
				 j->p[j->i] == '\r' || j->p[j->i] == '\n'))
		j->i++;
}

static int hex4(struct jp *j, uint32_t *v_r)
{
	uint32_t v = 0;
	if (j->len - j->i < 4)
		return jfail(j, "short \\u escape");
	for (int k = 0; k < 4; k++) {
		uint8_t c = j->p[j->i++];
		int d = c >= '0' && c <= '9'	 ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return jfail(j, "bad \\u escape");
		v = v * 16 + (uint32_t)d;
	}
	*v_r = v;
	return 0;
}

static void put_utf8(struct ms_buf *b, uint32_t cp)
{
	uint8_t *o = b->data + b->len;
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		b->len += 1;
	} else if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | (cp >> 6));
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		b->len += 2;
	} else if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | (cp >> 12));
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		b->len += 3;
	} else {
		o[0] = (uint8_t)(0xf0 | (cp >> 18));
		o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (uint8_t)(0x80 | (cp & 0x3f));
		b->len += 4;
	}
}

/* A string at j->i (the opening quote); decoded into o->text with a NUL.
   Every escape's output is no longer than the escape itself. */
static int parse_string(struct jp *j, size_t *off_r, size_t *len_r)
{
	struct ms_buf *b = &j->o->text;
	size_t start = b->len;
	j->i++; /* the quote */
	for (;;) {
		if (j->i >= j->len)
			return jfail(j, "unterminated string");
		uint8_t c = j->p[j->i];
		if (c == '"') {
			j->i++;
			break;
		}
		if (c < 0x20)
			return jfail(j, "control character in a string");
		if (c != '\\') {
			size_t n = ms_utf8_seq(j->p + j->i, j->len - j->i);
			if (n == 0)
				return jfail(j, "not UTF-8");
			memcpy(b->data + b->len, j->p + j->i, n);
			b->len += n;
			j->i += n;
			continue;
		}
		if (++j->i >= j->len)
			return jfail(j, "unterminated escape");
		c = j->p[j->i++];
		uint32_t cp;
		switch (c) {
		case '"': case '\\': case '/':
			cp = c;
			break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u': {
			if (hex4(j, &cp) < 0)
				return MS_ECORRUPT;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return jfail(j, "unpaired low surrogate");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				uint32_t lo;
				if (j->len - j->i < 2 || j->p[j->i] != '\\' ||
				    j->p[j->i + 1] != 'u')
					return jfail(j, "unpaired high "
							"surrogate");
				j->i += 2;
				if (hex4(j, &lo) < 0)
					return MS_ECORRUPT;
				if (lo < 0xdc00 || lo > 0xdfff)
					return jfail(j, "unpaired high "
							"surrogate");
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			if (cp == 0)
				return jfail(j, "\\u0000 in a string");
			break;
		}
		default:
			return jfail(j, "bad escape");
		}
		put_utf8(b, cp);
	}
	*len_r = b->len - start;
	b->data[b->len++] = '\0';
	*off_r = start; /* an offset: pointers are made at the end */
	return 0;
}

static int parse_int(struct jp *j, int64_t *v_r)
{
	int neg = 0;
	uint64_t v = 0;
	if (j->p[j->i] == '-') {
		neg = 1;
		j->i++;
	}
	if (j->i >= j->len || j->p[j->i] < '0' || j->p[j->i] > '9')
		return jfail(j, "bad number");
	if (j->p[j->i] == '0' && j->i + 1 < j->len && j->p[j->i + 1] >= '0' &&
	    j->p[j->i + 1] <= '9')
		return jfail(j, "a number with a leading zero");
	while (j->i < j->len && j->p[j->i] >= '0' && j->p[j->i] <= '9') {
		uint64_t d = (uint64_t)(j->p[j->i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return jfail(j, "number out of range");
		v = v * 10 + d;
		j->i++;
	}
	if (j->i < j->len && (j->p[j->i] == '.' || j->p[j->i] == 'e' ||
			      j->p[j->i] == 'E'))
		return jfail(j, "only integers are accepted");
	if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
		return jfail(j, "number out of range");
	*v_r = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int ms_json_parse_object(const uint8_t *p, size_t len, struct ms_json_obj *o,
			 const char **error_r)
{
	struct jp j = { .p = p, .len = len, .o = o };
	size_t koff[MS_JSON_MAX_FIELDS] = { 0 }, soff[MS_JSON_MAX_FIELDS] = { 0 };
	int ret = MS_ECORRUPT;

	o->n = 0;
	ms_buf_init(&o->text, len + 1);
	if (ms_buf_reserve(&o->text, len + 1) < 0)
		goto fail; /* cannot be: max is len + 1 */
	skip_ws(&j);
	if (j.i >= len || p[j.i] != '{') {
		jfail(&j, "not an object");
		goto fail;
	}
	j.i++;
	skip_ws(&j);
	if (j.i < len && p[j.i] == '}') {
		j.i++;
	} else {
		for (;;) {
			skip_ws(&j);
			if (j.i >= len || p[j.i] != '"') {
				jfail(&j, "a member name is expected");
				goto fail;
			}
			if (o->n == MS_JSON_MAX_FIELDS) {
				jfail(&j, "too many members");
				goto fail;
			}
			struct ms_json_field *f = &o->f[o->n];
			size_t klen;
			if (parse_string(&j, &koff[o->n], &klen) < 0)
				goto fail;
			if (klen > MS_JSON_MAX_KEY) {
				jfail(&j, "member name too long");
				goto fail;
			}
			for (size_t i = 0; i < o->n; i++) {
				if (strcmp((const char *)o->text.data + koff[i],
					   (const char *)o->text.data +
						   koff[o->n]) == 0) {
					jfail(&j, "duplicate member");
					goto fail;
				}
			}
			skip_ws(&j);
			if (j.i >= len || p[j.i] != ':') {
				jfail(&j, "':' is expected");
				goto fail;
			}
			j.i++;
			skip_ws(&j);
			if (j.i >= len) {
				jfail(&j, "a value is expected");
				goto fail;
			}
			if (p[j.i] == '"') {
				f->type = MS_JSON_STRING;
				if (parse_string(&j, &soff[o->n],
						 &f->str_len) < 0)
					goto fail;
			} else if (p[j.i] == '-' ||
				   (p[j.i] >= '0' && p[j.i] <= '9')) {
				f->type = MS_JSON_INT;
				if (parse_int(&j, &f->num) < 0)
					goto fail;
			} else {
				jfail(&j, "only strings and integers are "
					  "accepted as values");
				goto fail;
			}
			o->n++;
			skip_ws(&j);
			if (j.i < len && p[j.i] == ',') {
				j.i++;
				continue;
			}
			if (j.i < len && p[j.i] == '}') {
				j.i++;
				break;
			}
			jfail(&j, "',' or '}' is expected");
			goto fail;
		}
	}
	skip_ws(&j);
	if (j.i != len) {
		jfail(&j, "bytes after the object");
		goto fail;
	}
	/* the text no longer moves: offsets become pointers */
	for (size_t i = 0; i < o->n; i++) {
		o->f[i].key = (const char *)o->text.data + koff[i];
		o->f[i].str = o->f[i].type == MS_JSON_STRING
				      ? (const char *)o->text.data + soff[i]
				      : NULL;
	}
	return 0;
fail:
	*error_r = j.err ? j.err : "out of memory";
	ms_buf_free(&o->text);
	o->n = 0;
	return ret;
}

void ms_json_obj_free(struct ms_json_obj *o)
{
	ms_buf_free(&o->text);
	o->n = 0;
}

static const struct ms_json_field *find(const struct ms_json_obj *o,
					const char *key)
{
	for (size_t i = 0; i < o->n; i++)
		if (strcmp(o->f[i].key, key) == 0)
			return &o->f[i];
	return NULL;
}

int ms_json_get_str(const struct ms_json_obj *o, const char *key,
		    const char **s_r, size_t *len_r)
{
	const struct ms_json_field *f = find(o, key);
	if (f == NULL)
		return 0;
	if (f->type != MS_JSON_STRING)
		return MS_ECORRUPT;
	*s_r = f->str;
	*len_r = f->str_len;
	return 1;
}

int ms_json_get_int(const struct ms_json_obj *o, const char *key,
		    int64_t *v_r)
{
	const struct ms_json_field *f = find(o, key);
	if (f == NULL)
		return 0;
	if (f->type != MS_JSON_INT)
		return MS_ECORRUPT;
	*v_r = f->num;
	return 1;
}

const char *ms_json_unknown_key(const struct ms_json_obj *o,
				const char *const *allowed)
{
	for (size_t i = 0; i < o->n; i++) {
		size_t k = 0;
		while (allowed[k] != NULL && strcmp(allowed[k], o->f[i].key) != 0)
			k++;
		if (allowed[k] == NULL)
			return o->f[i].key;
	}
	return NULL;
}

int ms_json_put_str(struct ms_buf *b, const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	int ret = ms_buf_append(b, "\"", 1);
	for (size_t i = 0; ret == 0 && i < len;) {
		uint8_t c = p[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			ret = ms_buf_append(b, esc, 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			ret = ms_buf_append(b, esc, 6);
			i++;
		} else {
			size_t n = ms_utf8_seq(p + i, len - i);
			if (n == 0) {
				ret = ms_buf_append(b, "\xef\xbf\xbd", 3);
				i++;
			} else {
				ret = ms_buf_append(b, p + i, n);
				i += n;
			}
		}
	}
	if (ret == 0)
		ret = ms_buf_append(b, "\"", 1);
	return ret;
}
