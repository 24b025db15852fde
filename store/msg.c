/*
 * msg.c - diagnostics; see msg.h.  Also holds ms_strerror() and the
 * assertion handler, which every module needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ms.h"
#include "msg.h"

static const char *msg_prog = "mstore";
static int msg_use_syslog;
static enum ms_msg_level msg_min = MS_MSG_INFO;
static ms_msg_hook_fn *msg_hook;
static void *msg_hook_ctx;

static const char *const level_names[] = {
	[MS_MSG_DEBUG] = "debug", [MS_MSG_INFO] = "info",
	[MS_MSG_WARN] = "warning", [MS_MSG_ERROR] = "error",
	[MS_MSG_FATAL] = "fatal", [MS_MSG_PANIC] = "panic",
};

void ms_msg_init(const char *progname)
{
	const char *slash = strrchr(progname, '/');
	msg_prog = slash ? slash + 1 : progname;
}

void ms_msg_syslog(int enable)
{
	if (enable && !msg_use_syslog)
		openlog(msg_prog, LOG_PID | LOG_NDELAY, LOG_MAIL);
	msg_use_syslog = enable;
}

void ms_msg_set_level(enum ms_msg_level min)
{
	msg_min = min;
}

void ms_msg_set_hook(ms_msg_hook_fn *fn, void *ctx)
{
	msg_hook = fn;
	msg_hook_ctx = ctx;
}

/* A byte that may stand in a bare (unquoted) logfmt value or key. */
static int kv_bare(unsigned char c)
{
	return c > 0x20 && c != 0x7f && c != '"' && c != '=' && c != '\\';
}

static int kv_key(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Append s to out[*n..cap) quoted: "...", with \" and \\ escaped. */
static void kv_quote(char *out, size_t cap, size_t *n, const char *s,
		     size_t len)
{
	if (*n + 1 < cap)
		out[(*n)++] = '"';
	for (size_t i = 0; i < len && *n + 3 < cap; i++) {
		if (s[i] == '"' || s[i] == '\\')
			out[(*n)++] = '\\';
		out[(*n)++] = s[i];
	}
	if (*n + 1 < cap)
		out[(*n)++] = '"';
	out[*n < cap ? *n : cap - 1] = '\0';
}

static void kv_put(char *out, size_t cap, size_t *n, const char *s,
		   size_t len)
{
	if (*n + len >= cap)
		len = *n + 1 < cap ? cap - *n - 1 : 0;
	memcpy(out + *n, s, len);
	*n += len;
	out[*n] = '\0';
}

/*
 * The event text "EVENT key=value key=\"quoted value\" ..." as logfmt:
 * "event=EVENT key=value ...".  Whatever does not parse from some point
 * on (free text, a value with a space that was not quoted) goes whole
 * into msg="...", so the line is always valid logfmt and nothing is lost.
 */
void ms_msg_kv_line(char *out, size_t cap, const char *text)
{
	const char *p = text, *end, *tok = NULL;
	size_t n = 0;

	if (cap == 0)
		return;
	out[0] = '\0';
	for (end = p; kv_key((unsigned char)*end); end++)
		;
	if (end == p || (*end != ' ' && *end != '\0')) {
		kv_put(out, cap, &n, "event=message msg=", 18);
		kv_quote(out, cap, &n, text, strlen(text));
		return;
	}
	kv_put(out, cap, &n, "event=", 6);
	kv_put(out, cap, &n, p, (size_t)(end - p));
	p = end;
	for (;;) {
		const char *k, *v;

		while (*p == ' ')
			p++;
		if (*p == '\0')
			return;
		tok = p;
		for (k = p; kv_key((unsigned char)*p); p++)
			;
		if (p == k || *p != '=')
			break;
		v = ++p;
		if (*p == '"') {
			/* only \" and \\ escape: the reader knows no other */
			for (p++; *p != '\0' && *p != '"'; p++)
				if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
					p++;
				else if (*p == '\\')
					break;
			if (*p != '"')
				break;
			p++;
		} else {
			while (kv_bare((unsigned char)*p))
				p++;
			if (p == v)
				break;
		}
		if (*p != ' ' && *p != '\0')
			break;
		kv_put(out, cap, &n, " ", 1);
		kv_put(out, cap, &n, k, (size_t)(p - k));
	}
	/* the rest, from the token that did not parse */
	p = tok;
	kv_put(out, cap, &n, " msg=", 5);
	kv_quote(out, cap, &n, p, strlen(p));
}

static void msg_vprint(enum ms_msg_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void msg_vprint(enum ms_msg_level level, const char *fmt, va_list ap)
{
	char text[2048], line[4096 + 64];
	size_t n = 0;

	if (level < msg_min && level < MS_MSG_FATAL)
		return;
	vsnprintf(text, sizeof(text), fmt, ap);
	/* one event, one line: never let a control byte from input split it */
	for (char *p = text; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	if (msg_hook != NULL)
		msg_hook(level, text, msg_hook_ctx);
	if (!msg_use_syslog) {
		struct timespec ts;
		struct tm tm;
		char when[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
		n = (size_t)snprintf(line, sizeof(line),
				     "ts=%s.%06ldZ prog=%s pid=%ld ", when,
				     ts.tv_nsec / 1000, msg_prog, (long)getpid());
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "level=%s ",
			      level_names[level]);
	ms_msg_kv_line(line + n, sizeof(line) - n, text);
	if (msg_use_syslog) {
		static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING,
					    LOG_ERR, LOG_CRIT, LOG_CRIT };
		syslog(prio[level], "%s", line);
	} else {
		fprintf(stderr, "%s\n", line);
	}
}

const char *msg_q(const char *s)
{
	static __thread char slots[MSG_Q_SLOTS][MSG_Q_LEN];
	static __thread unsigned next;
	char *out = slots[next++ % MSG_Q_SLOTS];
	size_t n = 0, i;

	if (s == NULL)
		s = "";
	for (i = 0; s[i] != '\0' && kv_bare((unsigned char)s[i]); i++)
		;
	if (i > 0 && s[i] == '\0' && i < MSG_Q_LEN)
		return s;
	out[n++] = '"';
	for (i = 0; s[i] != '\0' && n + 4 < MSG_Q_LEN; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			out[n++] = '\\';
		out[n++] = (char)(c < 0x20 || c == 0x7f ? ' ' : c);
	}
	out[n++] = '"';
	out[n] = '\0';
	return out;
}

#define MSG_FN(name, level)                      \
	void name(const char *fmt, ...)          \
	{                                        \
		va_list ap;                      \
		va_start(ap, fmt);               \
		msg_vprint(level, fmt, ap);      \
		va_end(ap);                      \
	}

MSG_FN(msg_debug, MS_MSG_DEBUG)
MSG_FN(msg_info, MS_MSG_INFO)
MSG_FN(msg_warn, MS_MSG_WARN)
MSG_FN(msg_error, MS_MSG_ERROR)

void msg_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_vprint(MS_MSG_FATAL, fmt, ap);
	va_end(ap);
	exit(1);
}

void msg_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_vprint(MS_MSG_PANIC, fmt, ap);
	va_end(ap);
	abort();
}

void ms_assert_fail(const char *expr, const char *file, int line,
		    const char *func)
{
	msg_panic("assert expr=%s file=%s line=%d func=%s", msg_q(expr),
		  msg_q(file), line, msg_q(func));
}

const char *ms_errf(const char *fmt, ...)
{
	static __thread char slots[MS_ERRF_SLOTS][MS_ERRF_LEN];
	static __thread unsigned next;
	char *out = slots[next++ % MS_ERRF_SLOTS];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, MS_ERRF_LEN, fmt, ap);
	va_end(ap);
	return out;
}

const char *ms_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case MS_ECORRUPT:
		return "data failed its check (corrupt)";
	case MS_EVERSION:
		return "unknown format version";
	case MS_EMAGIC:
		return "bad magic: not an mstore file";
	case MS_ETOOBIG:
		return "over a size limit";
	case MS_ENOCOPY:
		return "no copy of the log is writable";
	case MS_EAUTH:
		return "sealed data failed authentication";
	case MS_ESTATE:
		return "not allowed in this state";
	case MS_EMISMATCH:
		return "copies belong to different stores";
	case MS_ECONFIG:
		return "bad configuration";
	case MS_ETRUNC:
		return "input ends too early (truncated)";
	case MS_ENOKEY:
		return "sealed data but no at-rest key configured";
	case MS_ENOTFOUND:
		return "not found";
	case MS_EREPLICA:
		return "the store is a DR replica (read-only until promoted)";
	}
	if (err < 0 && err > MS_ERR_BASE)
		return strerror(-err);
	return "unknown error";
}
