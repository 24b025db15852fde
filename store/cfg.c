/*
 * cfg.c - config parser driven by a table of ms_cfg_def; the syntax and
 * the rules are in cfg.h.
 *
 * A parse works on scratch copies: one value slot and one "seen on line"
 * number per table row.  Defaults go in first, then each line of the text
 * is checked (length, NUL and control bytes, then syntax, then meaning)
 * and converted into its slot; only when the whole text is good are the
 * slots copied into the target, so a failed parse leaves the target as it
 * was and frees every string it made.
 *
 * Numbers are parsed by hand (ms_parse_*): the whole value must be digits
 * and an optional unit, and every multiplication is checked for overflow
 * before it is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cfg.h"

/* Sections that belong to some mstore daemon: skipped if not in a table. */
static const char *const cfg_daemon_sections[] = {
	"", "store", "lmtp", "udsync", "dovecot", "http", "tools",
};

#define ECHO_MAX 64 /* bytes of a value quoted back in an error */

union cfg_val {
	char *s;
	uint64_t u;
	int b;
	unsigned e;
};

/* ---- numbers ---- */

static int all_digits(const char *s, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

int ms_parse_u64(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;

	if (!all_digits(s, len))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

static int mul_checked(uint64_t v, uint64_t mul, uint64_t *v_r)
{
	if (mul != 0 && v > UINT64_MAX / mul)
		return -ERANGE;
	*v_r = v * mul;
	return 0;
}

int ms_parse_size(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v, mul = 1;
	int ret;

	if (len > 0 && !(s[len - 1] >= '0' && s[len - 1] <= '9')) {
		switch (s[len - 1]) {
		case 'k':
		case 'K':
			mul = (uint64_t)1 << 10;
			break;
		case 'm':
		case 'M':
			mul = (uint64_t)1 << 20;
			break;
		case 'g':
		case 'G':
			mul = (uint64_t)1 << 30;
			break;
		case 't':
		case 'T':
			mul = (uint64_t)1 << 40;
			break;
		default:
			return -EINVAL;
		}
		len--;
	}
	if ((ret = ms_parse_u64(s, len, &v)) < 0)
		return ret;
	return mul_checked(v, mul, v_r);
}

int ms_parse_duration_ms(const char *s, size_t len, uint64_t *ms_r)
{
	uint64_t v, mul = 1000;
	int ret;

	if (len >= 2 && s[len - 2] == 'm' && s[len - 1] == 's') {
		mul = 1;
		len -= 2;
	} else if (len > 0 && !(s[len - 1] >= '0' && s[len - 1] <= '9')) {
		switch (s[len - 1]) {
		case 's':
			mul = 1000;
			break;
		case 'm':
			mul = 60 * 1000;
			break;
		case 'h':
			mul = 3600 * 1000;
			break;
		case 'd':
			mul = (uint64_t)86400 * 1000;
			break;
		default:
			return -EINVAL;
		}
		len--;
	}
	if ((ret = ms_parse_u64(s, len, &v)) < 0)
		return ret;
	return mul_checked(v, mul, ms_r);
}

static int parse_mode(const char *s, size_t len, uint64_t *v_r)
{
	uint64_t v = 0;

	if (len == 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '7')
			return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		v = v * 8 + (uint64_t)(s[i] - '0');
		if (v > 07777)
			return -ERANGE;
	}
	*v_r = v;
	return 0;
}

/* ---- formatting (dump and error messages) ---- */

static void fmt_unit(uint64_t v, const uint64_t *muls, const char *const *units,
		     size_t n, char *buf, size_t size)
{
	for (size_t i = 0; i < n; i++) {
		if (v != 0 && v % muls[i] == 0) {
			snprintf(buf, size, "%llu%s",
				 (unsigned long long)(v / muls[i]), units[i]);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void fmt_num(enum ms_cfg_type type, uint64_t v, char *buf, size_t size)
{
	static const uint64_t size_muls[] = {
		(uint64_t)1 << 40,
		(uint64_t)1 << 30,
		(uint64_t)1 << 20,
		(uint64_t)1 << 10,
	};
	static const char *const size_units[] = {"T", "G", "M", "K"};
	static const uint64_t dur_muls[] = {(uint64_t)86400 * 1000, 3600 * 1000,
					    60 * 1000, 1000, 1};
	static const char *const dur_units[] = {"d", "h", "m", "s", "ms"};

	switch (type) {
	case MS_CFG_SIZE:
		fmt_unit(v, size_muls, size_units, MS_ARRAY_SIZE(size_muls),
			 buf, size);
		break;
	case MS_CFG_DURATION:
		if (v == 0)
			snprintf(buf, size, "0s");
		else
			fmt_unit(v, dur_muls, dur_units,
				 MS_ARRAY_SIZE(dur_muls), buf, size);
		break;
	case MS_CFG_MODE:
		snprintf(buf, size, "%04llo", (unsigned long long)v);
		break;
	default:
		snprintf(buf, size, "%llu", (unsigned long long)v);
		break;
	}
}

static uint64_t def_max(const struct ms_cfg_def *def)
{
	if (def->max != 0)
		return def->max;
	return def->type == MS_CFG_MODE ? 07777 : UINT64_MAX;
}

static const char *type_what(const struct ms_cfg_def *def)
{
	switch (def->type) {
	case MS_CFG_UINT:
		return "a number";
	case MS_CFG_SIZE:
		return "a size (4096, 64K, 64M, 1G)";
	case MS_CFG_DURATION:
		return "a duration (250ms, 30s, 5m, 2h, 7d)";
	case MS_CFG_MODE:
		return "an octal mode (0640)";
	case MS_CFG_BOOL:
		return "yes or no";
	default:
		return "a value";
	}
}

/* "expected ..., got '...'" for a value that failed. */
static const char *expected(const struct ms_cfg_def *def, const char *v,
			    size_t vlen)
{
	char what[256], lo[32], hi[32];
	size_t off = 0;
	const char *dots = vlen > ECHO_MAX ? "..." : "";
	int echo = vlen > ECHO_MAX ? ECHO_MAX : (int)vlen;

	switch (def->type) {
	case MS_CFG_ENUM:
		off = (size_t)snprintf(what, sizeof(what), "one of ");
		for (size_t i = 0; def->enum_names[i] != NULL; i++) {
			if (off >= sizeof(what))
				break;
			off += (size_t)snprintf(what + off, sizeof(what) - off,
						"%s%s", i ? ", " : "",
						def->enum_names[i]);
		}
		break;
	case MS_CFG_STR:
		if (def->max != 0)
			snprintf(what, sizeof(what), "%llu to %llu bytes",
				 (unsigned long long)def->min,
				 (unsigned long long)def->max);
		else
			snprintf(what, sizeof(what), "at least %llu byte%s",
				 (unsigned long long)def->min,
				 def->min == 1 ? "" : "s");
		break;
	case MS_CFG_BOOL:
		snprintf(what, sizeof(what), "%s", type_what(def));
		break;
	default:
		fmt_num(def->type, def->min, lo, sizeof(lo));
		fmt_num(def->type, def_max(def), hi, sizeof(hi));
		snprintf(what, sizeof(what), "%s from %s to %s", type_what(def),
			 lo, hi);
		break;
	}
	return ms_errf("expected %s, got '%.*s%s'", what, echo, v, dots);
}

/* ---- conversion of one value ---- */

static int ci_eq(const char *s, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

static int convert(const struct ms_cfg_def *def, const char *v, size_t vlen,
		   union cfg_val *out, const char **why_r)
{
	static const char *const bool_names[] = {"no",  "yes", "false", "true",
						 "off", "on",  "0",     "1"};
	uint64_t u = 0;
	int ret = 0;

	switch (def->type) {
	case MS_CFG_STR:
		if (vlen < def->min || (def->max != 0 && vlen > def->max)) {
			*why_r = expected(def, v, vlen);
			return MS_ECONFIG;
		}
		if (vlen == 0) {
			out->s = NULL;
		} else {
			out->s = ms_malloc(vlen + 1);
			memcpy(out->s, v, vlen);
			out->s[vlen] = '\0';
		}
		return 0;
	case MS_CFG_BOOL:
		for (size_t i = 0; i < MS_ARRAY_SIZE(bool_names); i++) {
			if (ci_eq(v, vlen, bool_names[i])) {
				out->b = (int)(i % 2);
				return 0;
			}
		}
		*why_r = expected(def, v, vlen);
		return MS_ECONFIG;
	case MS_CFG_ENUM:
		for (unsigned i = 0; def->enum_names[i] != NULL; i++) {
			if (ci_eq(v, vlen, def->enum_names[i])) {
				out->e = i;
				return 0;
			}
		}
		*why_r = expected(def, v, vlen);
		return MS_ECONFIG;
	case MS_CFG_UINT:
		ret = ms_parse_u64(v, vlen, &u);
		break;
	case MS_CFG_SIZE:
		ret = ms_parse_size(v, vlen, &u);
		break;
	case MS_CFG_DURATION:
		ret = ms_parse_duration_ms(v, vlen, &u);
		break;
	case MS_CFG_MODE:
		ret = parse_mode(v, vlen, &u);
		break;
	}
	if (ret < 0 || u < def->min || u > def_max(def)) {
		*why_r = expected(def, v, vlen);
		if (ret == -ERANGE)
			*why_r = ms_errf("%s (too large)", *why_r);
		return MS_ECONFIG;
	}
	if (def->type == MS_CFG_MODE)
		out->e = (unsigned)u;
	else
		out->u = u;
	return 0;
}

/* ---- line syntax ---- */

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static int name_ok(const char *s, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!is_name_char(s[i]))
			return 0;
	return 1;
}

static void trim(const char **s, size_t *len)
{
	while (*len > 0 && is_blank(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_blank((*s)[*len - 1]))
		(*len)--;
}

static int str_eq(const char *s, size_t len, const char *z)
{
	return strlen(z) == len && memcmp(s, z, len) == 0;
}

static int table_has_section(const struct ms_cfg_def *defs, size_t n,
			     const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (str_eq(s, len, defs[i].section))
			return 1;
	return 0;
}

static int daemon_section(const char *s, size_t len)
{
	for (size_t i = 0; i < MS_ARRAY_SIZE(cfg_daemon_sections); i++)
		if (str_eq(s, len, cfg_daemon_sections[i]))
			return 1;
	return 0;
}

/* Strip the quotes of a quoted value; reject '"' and '#' elsewhere. */
static int unquote(const char **v, size_t *vlen, const char **why_r)
{
	const char *s = *v;
	size_t len = *vlen;

	if (len > 0 && s[0] == '"') {
		if (len < 2 || s[len - 1] != '"') {
			*why_r = "unterminated quote";
			return MS_ECONFIG;
		}
		if (memchr(s + 1, '"', len - 2) != NULL) {
			*why_r = "'\"' inside a quoted value (there are no "
				 "escapes)";
			return MS_ECONFIG;
		}
		*v = s + 1;
		*vlen = len - 2;
		return 0;
	}
	if (memchr(s, '"', len) != NULL) {
		*why_r = "'\"' inside a value (quote the whole value)";
		return MS_ECONFIG;
	}
	if (memchr(s, '#', len) != NULL) {
		*why_r = "'#' inside a value: comments go on their own line; "
			 "quote the value to keep a '#'";
		return MS_ECONFIG;
	}
	return 0;
}

static void check_table(const struct ms_cfg_def *defs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct ms_cfg_def *d = &defs[i];
		ms_assert(d->section != NULL && d->key != NULL);
		ms_assert(d->section[0] == '\0' ||
			  name_ok(d->section, strlen(d->section)));
		ms_assert(name_ok(d->key, strlen(d->key)));
		ms_assert(d->type <= MS_CFG_MODE);
		ms_assert(d->type != MS_CFG_ENUM || d->enum_names != NULL);
	}
}

/* How a section is named in messages. */
#define SEC_FMT "%s%.*s%s"
#define SEC_ARGS(s, len) \
	(len) ? "[" : "", (int)(len), (s), (len) ? "]" : "global section"

/* ---- the parser ---- */

int ms_cfg_parse(const struct ms_cfg_def *defs, size_t n, const char *text,
		 size_t len, void *target, const char **error_r)
{
	union cfg_val *vals;
	unsigned *seen;
	const char *sec = "";
	size_t sec_len = 0, pos = 0;
	unsigned lineno = 0;
	int skip, ret = 0;
	const char *why = NULL;

	check_table(defs, n);
	if (len > MS_CFG_MAX_FILE) {
		*error_r = ms_errf("config is %zu bytes, over the limit of %zu",
				   len, MS_CFG_MAX_FILE);
		return MS_ETOOBIG;
	}
	vals = ms_calloc(n, sizeof(*vals));
	seen = ms_calloc(n, sizeof(*seen));

	for (size_t i = 0; i < n; i++) {
		const struct ms_cfg_def *d = &defs[i];
		if (d->def == NULL)
			continue;
		if ((ret = convert(d, d->def, strlen(d->def), &vals[i], &why)) <
		    0) {
			*error_r = ms_errf(
				"built-in default of %s in " SEC_FMT ": %s",
				d->key,
				SEC_ARGS(d->section, strlen(d->section)), why);
			goto fail;
		}
	}

	skip = !table_has_section(defs, n, "", 0);
	while (pos < len) {
		const char *line = text + pos, *nl, *key, *v;
		size_t llen, klen, vlen, k, i;

		lineno++;
		nl = memchr(line, '\n', len - pos);
		llen = nl != NULL ? (size_t)(nl - line) : len - pos;
		pos += llen + (nl != NULL ? 1 : 0);
		if (llen > 0 && line[llen - 1] == '\r')
			llen--;
		if (llen > MS_CFG_MAX_LINE) {
			*error_r = ms_errf("line %u: %zu bytes, over the line "
					   "limit of %d",
					   lineno, llen, MS_CFG_MAX_LINE);
			ret = MS_ECONFIG;
			goto fail;
		}
		for (k = 0; k < llen; k++) {
			unsigned char c = (unsigned char)line[k];
			if (c == '\0') {
				*error_r = ms_errf("line %u: NUL byte", lineno);
				ret = MS_ECONFIG;
				goto fail;
			}
			if ((c < 0x20 && c != '\t') || c == 0x7f) {
				*error_r = ms_errf("line %u: control "
						   "character 0x%02x",
						   lineno, c);
				ret = MS_ECONFIG;
				goto fail;
			}
		}
		trim(&line, &llen);
		if (llen == 0 || line[0] == '#')
			continue;

		if (line[0] == '[') {
			if (line[llen - 1] != ']') {
				*error_r = ms_errf("line %u: section header "
						   "does not end in ']'",
						   lineno);
				ret = MS_ECONFIG;
				goto fail;
			}
			const char *s = line + 1;
			size_t slen = llen - 2;
			trim(&s, &slen);
			if (!name_ok(s, slen)) {
				*error_r =
					ms_errf("line %u: bad section name "
						"'%.*s' (expected "
						"[a-z0-9_]+)",
						lineno,
						(int)(slen > ECHO_MAX ? ECHO_MAX
								      : slen),
						s);
				ret = MS_ECONFIG;
				goto fail;
			}
			if (table_has_section(defs, n, s, slen)) {
				skip = 0;
			} else if (daemon_section(s, slen)) {
				skip = 1;
			} else {
				*error_r = ms_errf("line %u: unknown section "
						   "[%.*s]",
						   lineno, (int)slen, s);
				ret = MS_ECONFIG;
				goto fail;
			}
			sec = s;
			sec_len = slen;
			continue;
		}

		key = line;
		for (klen = 0; klen < llen && is_name_char(line[klen]); klen++)
			;
		k = klen;
		while (k < llen && is_blank(line[k]))
			k++;
		if (klen == 0 || k == llen || line[k] != '=') {
			*error_r = ms_errf("line %u: expected 'key = value' "
					   "with a key of [a-z0-9_]+",
					   lineno);
			ret = MS_ECONFIG;
			goto fail;
		}
		if (klen > ECHO_MAX) {
			*error_r = ms_errf("line %u: key '%.*s...' too long",
					   lineno, ECHO_MAX, key);
			ret = MS_ECONFIG;
			goto fail;
		}
		v = line + k + 1;
		vlen = llen - k - 1;
		trim(&v, &vlen);
		if ((ret = unquote(&v, &vlen, &why)) < 0) {
			*error_r = ms_errf("line %u: %.*s in " SEC_FMT ": %s",
					   lineno, (int)klen, key,
					   SEC_ARGS(sec, sec_len), why);
			goto fail;
		}
		if (skip)
			continue;

		for (i = 0; i < n; i++)
			if (str_eq(sec, sec_len, defs[i].section) &&
			    str_eq(key, klen, defs[i].key))
				break;
		if (i == n) {
			*error_r = ms_errf(
				"line %u: unknown key '%.*s' in " SEC_FMT,
				lineno, (int)klen, key, SEC_ARGS(sec, sec_len));
			ret = MS_ECONFIG;
			goto fail;
		}
		if (seen[i] != 0) {
			*error_r = ms_errf("line %u: %s in " SEC_FMT " given "
					   "twice (first on line %u)",
					   lineno, defs[i].key,
					   SEC_ARGS(sec, sec_len), seen[i]);
			ret = MS_ECONFIG;
			goto fail;
		}
		seen[i] = lineno;

		union cfg_val nv;
		if ((ret = convert(&defs[i], v, vlen, &nv, &why)) < 0) {
			*error_r = ms_errf("line %u: %s in " SEC_FMT ": %s",
					   lineno, defs[i].key,
					   SEC_ARGS(sec, sec_len), why);
			goto fail;
		}
		if (defs[i].type == MS_CFG_STR)
			free(vals[i].s);
		vals[i] = nv;
	}

	/* publish: copy every slot into the target */
	for (size_t i = 0; i < n; i++) {
		uint8_t *f = (uint8_t *)target + defs[i].offset;
		switch (defs[i].type) {
		case MS_CFG_STR:
			memcpy(f, &vals[i].s, sizeof(vals[i].s));
			break;
		case MS_CFG_UINT:
		case MS_CFG_SIZE:
		case MS_CFG_DURATION:
			memcpy(f, &vals[i].u, sizeof(vals[i].u));
			break;
		case MS_CFG_BOOL:
			memcpy(f, &vals[i].b, sizeof(vals[i].b));
			break;
		case MS_CFG_ENUM:
		case MS_CFG_MODE:
			memcpy(f, &vals[i].e, sizeof(vals[i].e));
			break;
		}
	}
	free(vals);
	free(seen);
	return 0;

fail:
	for (size_t i = 0; i < n; i++)
		if (defs[i].type == MS_CFG_STR)
			free(vals[i].s);
	free(vals);
	free(seen);
	return ret;
}

int ms_cfg_load(const struct ms_cfg_def *defs, size_t n, const char *path,
		void *target, const char **error_r)
{
	struct ms_buf b;
	const char *error;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		*error_r = ms_errf("%s: open: %s", path, ms_strerror(ret));
		return ret;
	}
	/* one byte over the limit is enough to know it is too big */
	ms_buf_init(&b, MS_CFG_MAX_FILE + 1);
	for (;;) {
		size_t room = b.max - b.len;
		if (room == 0)
			break;
		if (room > 65536)
			room = 65536;
		ret = ms_buf_reserve(&b, room);
		ms_assert(ret == 0);
		ssize_t got = read(fd, b.data + b.len, room);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			*error_r =
				ms_errf("%s: read: %s", path, ms_strerror(ret));
			goto out;
		}
		if (got == 0)
			break;
		b.len += (size_t)got;
	}
	if (b.len > MS_CFG_MAX_FILE) {
		*error_r = ms_errf("%s: over the limit of %zu bytes", path,
				   MS_CFG_MAX_FILE);
		ret = MS_ETOOBIG;
		goto out;
	}
	ret = ms_cfg_parse(defs, n, (const char *)b.data, b.len, target,
			   &error);
	if (ret < 0)
		*error_r = ms_errf("%s: %s", path, error);
out:
	ms_buf_free(&b);
	close(fd);
	return ret;
}

void ms_cfg_path_abs(char **p, const char *cfg_path)
{
	const char *slash = strrchr(cfg_path, '/');
	if (*p == NULL || (*p)[0] == '/' || slash == NULL)
		return;
	size_t dl = (size_t)(slash - cfg_path), pl = strlen(*p);
	char *r = ms_malloc(dl + 1 + pl + 1);
	memcpy(r, cfg_path, dl);
	r[dl] = '/';
	memcpy(r + dl + 1, *p, pl + 1);
	free(*p);
	*p = r;
}

void ms_cfg_free(const struct ms_cfg_def *defs, size_t n, void *target)
{
	for (size_t i = 0; i < n; i++) {
		if (defs[i].type != MS_CFG_STR)
			continue;
		char **f =
			(char **)(void *)((uint8_t *)target + defs[i].offset);
		free(*f);
		*f = NULL;
	}
}

/* ---- dump ---- */

static void dump_def(const struct ms_cfg_def *d, const void *target, FILE *out)
{
	const uint8_t *f = (const uint8_t *)target + d->offset;
	char buf[64];
	uint64_t u;
	unsigned e;
	int b;
	char *s;

	if (d->help != NULL) {
		const char *h = d->help;
		while (*h != '\0') {
			size_t l = strcspn(h, "\n");
			fprintf(out, "# %.*s\n", (int)l, h);
			h += l;
			if (*h == '\n')
				h++;
		}
	}
	switch (d->type) {
	case MS_CFG_STR:
		memcpy(&s, f, sizeof(s));
		if (s == NULL && d->def != NULL && d->def[0] != '\0' &&
		    d->min == 0)
			/* emptied on purpose: "(not set)" would mean the
			   default when read back */
			fprintf(out, "%s = \"\"\n", d->key);
		else if (s == NULL)
			fprintf(out, "# %s = (not set)\n", d->key);
		else
			fprintf(out, "%s = \"%s\"\n", d->key, s);
		break;
	case MS_CFG_UINT:
	case MS_CFG_SIZE:
	case MS_CFG_DURATION:
		memcpy(&u, f, sizeof(u));
		fmt_num(d->type, u, buf, sizeof(buf));
		fprintf(out, "%s = %s\n", d->key, buf);
		break;
	case MS_CFG_MODE:
		memcpy(&e, f, sizeof(e));
		fmt_num(d->type, e, buf, sizeof(buf));
		fprintf(out, "%s = %s\n", d->key, buf);
		break;
	case MS_CFG_BOOL:
		memcpy(&b, f, sizeof(b));
		fprintf(out, "%s = %s\n", d->key, b ? "yes" : "no");
		break;
	case MS_CFG_ENUM: {
		size_t count = 0;
		memcpy(&e, f, sizeof(e));
		while (d->enum_names[count] != NULL)
			count++;
		if (e < count)
			fprintf(out, "%s = %s\n", d->key, d->enum_names[e]);
		else
			fprintf(out, "# %s = (invalid index %u)\n", d->key, e);
		break;
	}
	}
}

int ms_cfg_dump(const struct ms_cfg_def *defs, size_t n, const void *target,
		FILE *out)
{
	int first = 1;

	check_table(defs, n);
	for (size_t i = 0; i < n; i++) {
		if (defs[i].section[0] == '\0') {
			dump_def(&defs[i], target, out);
			first = 0;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const char *sec = defs[i].section;
		size_t j;

		if (sec[0] == '\0')
			continue;
		for (j = 0; j < i; j++)
			if (strcmp(defs[j].section, sec) == 0)
				break;
		if (j < i)
			continue; /* section already printed */
		fprintf(out, "%s[%s]\n", first ? "" : "\n", sec);
		first = 0;
		for (j = i; j < n; j++)
			if (strcmp(defs[j].section, sec) == 0)
				dump_def(&defs[j], target, out);
	}
	if (fflush(out) != 0 || ferror(out))
		return -EIO;
	return 0;
}
