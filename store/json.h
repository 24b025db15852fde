/*
 * json.h - the little JSON the system API needs (sysapi.c): a strict
 * reader for request bodies that are one flat object of string and
 * integer members, and a writer of escaped strings.  Pure; fuzzed with
 * the HTTP parser (tests/fuzz/fuzz_http.c), table-tested in
 * tests/unit/test_http.c.
 *
 * Accepted (RFC 8259, narrowed): optional blanks (SP HTAB CR LF), one
 * object, optional blanks, the end.  Members: "key": value, where value
 * is a string or an integer -?(0|[1-9][0-9]*) within int64.  Refused:
 * any other value (true, false, null, arrays, objects, fractions,
 * exponents), a duplicate key, a key longer than MS_JSON_MAX_KEY, more
 * than MS_JSON_MAX_FIELDS members, bytes that are not UTF-8 (overlong
 * forms and surrogates included), raw control characters in strings,
 * \u0000 (so every string is a C string), unpaired surrogate escapes,
 * anything after the object.
 *
 * Ownership: a struct ms_json_obj holds the decoded strings; the
 * pointers of its fields are valid until ms_json_obj_free().
 */
#ifndef MS_JSON_H
#define MS_JSON_H

#include "buf.h"

#define MS_JSON_MAX_FIELDS 16
#define MS_JSON_MAX_KEY 64

enum ms_json_type { MS_JSON_STRING, MS_JSON_INT };

struct ms_json_field {
	const char *key;	/* NUL-terminated */
	enum ms_json_type type;
	const char *str;	/* MS_JSON_STRING: NUL-terminated, no NUL inside */
	size_t str_len;
	int64_t num;		/* MS_JSON_INT */
};

struct ms_json_obj {
	size_t n;
	struct ms_json_field f[MS_JSON_MAX_FIELDS];
	struct ms_buf text;	/* the decoded keys and strings */
};

/* Parse p[0..len) into o (which need not be initialised).  0, or
   MS_ECORRUPT with *error_r saying what and at which byte offset (then
   o holds nothing to free). */
int ms_json_parse_object(const uint8_t *p, size_t len, struct ms_json_obj *o,
			 const char **error_r);
void ms_json_obj_free(struct ms_json_obj *o);

/* A member: 1 with its value, 0 when there is none, MS_ECORRUPT when it
   has the other type. */
int ms_json_get_str(const struct ms_json_obj *o, const char *key,
		    const char **s_r, size_t *len_r);
int ms_json_get_int(const struct ms_json_obj *o, const char *key,
		    int64_t *v_r);
/* The first key not in allowed (NULL-terminated), or NULL. */
const char *ms_json_unknown_key(const struct ms_json_obj *o,
				const char *const *allowed);

/* Length of the well-formed UTF-8 sequence at p[0..len), 0 if none. */
size_t ms_utf8_seq(const uint8_t *p, size_t len);
/*
 * Append s[0..len) as a JSON string, quotes included: '"', '\' and
 * control characters escaped, and every byte that is not well-formed
 * UTF-8 written as U+FFFD, so the output is always valid JSON.
 */
int ms_json_put_str(struct ms_buf *b, const char *s, size_t len);

#endif
