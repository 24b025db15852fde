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
 * One line per event, "<prog>: <level>: text" on stderr (or syslog once
 * ms_msg_syslog() was called).  Tests may install a hook to capture lines.
 * Hostile input is none of these: it gets a reply code and a counter.
 */
#ifndef MS_MSG_H
#define MS_MSG_H

#include <stdarg.h>

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

void msg_debug(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_info(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_warn(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_error(const char *fmt, ...) MS_PRINTF(1, 2);
void msg_fatal(const char *fmt, ...) MS_PRINTF(1, 2)
	__attribute__((noreturn));
void msg_panic(const char *fmt, ...) MS_PRINTF(1, 2)
	__attribute__((noreturn));

#endif
