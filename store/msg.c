/*
 * msg.c - diagnostics; see msg.h.  Also holds ms_strerror() and the
 * assertion handler, which every module needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

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

static void msg_vprint(enum ms_msg_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void msg_vprint(enum ms_msg_level level, const char *fmt, va_list ap)
{
	char text[2048];

	if (level < msg_min && level < MS_MSG_FATAL)
		return;
	vsnprintf(text, sizeof(text), fmt, ap);
	/* one event, one line: never let a newline from input split it */
	for (char *p = text; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (msg_hook != NULL)
		msg_hook(level, text, msg_hook_ctx);
	if (msg_use_syslog) {
		static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING,
					    LOG_ERR, LOG_CRIT, LOG_CRIT };
		syslog(prio[level], "%s: %s", level_names[level], text);
	} else {
		fprintf(stderr, "%s: %s: %s\n", msg_prog, level_names[level],
			text);
	}
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
	msg_panic("assertion failed: %s (%s:%d, %s)", expr, file, line, func);
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
	}
	if (err < 0 && err > MS_ERR_BASE)
		return strerror(-err);
	return "unknown error";
}
