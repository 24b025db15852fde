/*
 * msg.h - diagnostics (Postfix msg(3) style).  Not ms_log_*: that is the
 * mail log.
 *
 * msg_info   an event worth a line
 * msg_warn   something is wrong, we go on
 * msg_error  an operation failed, we go on (the caller reports it)
 * msg_fatal  the environment is broken: exit(1)
 * msg_panic  our own bug: abort() for a core dump
 *
 * One line per event in logfmt (docs/logging.md):
 *   ts=2026-11-28T19:20:01.123456Z prog=mstored pid=42 level=info event=ready socket=...
 * on stderr, or without ts/prog/pid (syslog has them) once ms_msg_syslog()
 * was called.  The text a caller formats is "EVENT key=value ...": an event
 * name, then fields; a value that may hold a space, a quote or an '=' goes
 * through msg_q().  A text that does not parse from some point on keeps its
 * rest in msg="...", so every line is valid logfmt.  Tests may install a
 * hook to capture the caller's text.  Hostile input is none of these: it
 * gets a reply code and a counter.
 */
#ifndef MS_MSG_H
#define MS_MSG_H

#include <stdarg.h>
#include <stddef.h>

#define MS_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum ms_msg_level {
	MS_MSG_DEBUG,
	MS_MSG_INFO,
	MS_MSG_WARN,
	MS_MSG_ERROR,
	MS_MSG_FATAL,
	MS_MSG_PANIC,
};

typedef void ms_msg_hook_fn(enum ms_msg_level level, const char *text,
			    void *ctx);

void ms_msg_init(const char *progname);
void ms_msg_syslog(int enable);
/* Lines below this level are dropped (default MS_MSG_INFO). */
void ms_msg_set_level(enum ms_msg_level min);
/* Install a hook that sees every line (NULL removes it). */
void ms_msg_set_hook(ms_msg_hook_fn *fn, void *ctx);

/*
 * s as a logfmt value: itself when it is a non-empty run of printable
 * bytes without space, '"', '=' or '\\'; else "quoted", with \" and \\
 * (NULL gives "").  The result lives in one of MSG_Q_SLOTS per-thread
 * slots of MSG_Q_LEN bytes (longer values are cut): enough for the
 * fields of one line.
 */
#define MSG_Q_SLOTS 8
#define MSG_Q_LEN 768
const char *msg_q(const char *s);

/* The logfmt fields for an event text (see above) into out[cap]. */
void ms_msg_kv_line(char *out, size_t cap, const char *text);

void msg_debug(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_info(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_warn(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_error(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_fatal(const char *fmt, ...) MS_PRINTF(1, 2)
	__attribute__((noreturn));
void msg_panic(const char *fmt, ...) MS_PRINTF(1, 2)
	__attribute__((noreturn));

#endif
