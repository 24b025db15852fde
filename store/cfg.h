/*
 * cfg.h - the one config parser: `key = value` lines in `[section]`s,
 * interpreted through a table of definitions (cf. Postfix's mail_conf
 * tables and Redis's createIntConfig rows).  Pure: ms_cfg_parse() does no
 * I/O; ms_cfg_load() reads a file (bounded) and parses it.
 *
 * Syntax (one rule per line; lines end in "\n" or "\r\n"):
 *   - blank lines, and lines whose first non-blank character is '#', are
 *     ignored.  Comments are full-line only: a '#' inside an unquoted value
 *     is an error (so "size = 64M # comment" cannot silently become part of
 *     a value); quote the value to keep a '#'.
 *   - "[name]" starts a section; keys before the first section belong to
 *     section "" (global).  A section may appear more than once.
 *   - "key = value": key is [a-z0-9_]+; blanks (space, tab) around key and
 *     value are trimmed.  A value may be quoted with double quotes to keep
 *     blanks or '#'; there are no escapes, so a value cannot contain '"'.
 *     An empty value ("key =" or key = "") is allowed only where the type
 *     accepts it (a STR with min 0, which then is NULL).
 *   - names are [a-z0-9_]+; values are any bytes but control characters
 *     (tab is allowed); a NUL byte is an error.
 * Limits: a line is at most MS_CFG_MAX_LINE bytes without its line end, the
 * text at most MS_CFG_MAX_FILE bytes.
 *
 * Interpretation: every key the table names gets its default first, then
 * the value from the text.  A key the table does not name, in a section the
 * table does name, is an error; so is a key given twice.  A section the
 * table does not name is skipped (its lines still have to be well formed)
 * if it belongs to another mstore daemon ("", store, lmtp, udsync, dovecot,
 * http, tools), and is an error otherwise (typo protection).
 *
 * Types and what they store at def->offset in the target struct:
 *   MS_CFG_STR       char *    malloc'd copy, NULL when empty/absent;
 *                              min/max bound its length in bytes
 *   MS_CFG_UINT      uint64_t  decimal digits only
 *   MS_CFG_SIZE      uint64_t  bytes: 4096, 64k/64K, 64m/64M, 1g/1G, 1t/1T
 *                              (powers of 1024)
 *   MS_CFG_BOOL      int       yes/no, true/false, on/off, 1/0 (any case)
 *   MS_CFG_ENUM      unsigned  index into def->enum_names (any case)
 *   MS_CFG_DURATION  uint64_t  milliseconds: 250ms, 30s, 5m, 2h, 7d; a
 *                              plain number is seconds
 *   MS_CFG_MODE      unsigned  octal file mode, 0 to 07777 ("0640", "640")
 * Numbers are strict: the whole value, no sign, no blanks, overflow is an
 * error.  min/max bound the stored value (for STR its length); max == 0
 * means no upper bound (07777 for MODE).  BOOL and ENUM ignore min/max.
 *
 * Ownership: on success the target's fields named in the table are
 * overwritten without freeing what they held (the target may be
 * uninitialised); STR fields then belong to the target: release them with
 * ms_cfg_free().  To reload, parse into a fresh struct and swap it in.  On
 * failure the target is untouched, nothing is leaked, and *error_r names
 * the line, section, key and what was expected.
 *
 * DIAGNOSTICS: MS_ECONFIG for bad text, MS_ETOOBIG over a size limit,
 * -errno for I/O (ms_cfg_load).  A malformed table (missing names, ENUM
 * without names) is our bug and panics; a bad default is reported as
 * MS_ECONFIG naming the default.
 */
#ifndef MS_CFG_H
#define MS_CFG_H

#include <stdio.h>

#include "ms.h"

#define MS_CFG_MAX_LINE 4096
#define MS_CFG_MAX_FILE ((size_t)1 << 20)

enum ms_cfg_type {
	MS_CFG_STR,
	MS_CFG_UINT,
	MS_CFG_SIZE,
	MS_CFG_BOOL,
	MS_CFG_ENUM,
	MS_CFG_DURATION,
	MS_CFG_MODE,
};

struct ms_cfg_def {
	const char *section; /* "" for global keys */
	const char *key;
	enum ms_cfg_type type;
	const char *def;   /* default in file syntax; NULL: empty/0 */
	uint64_t min, max; /* max 0: no upper bound */
	const char *const *enum_names; /* MS_CFG_ENUM: NULL-terminated */
	size_t offset;                 /* offsetof(target struct, field) */
	const char *help; /* one line for ms_cfg_dump; may be NULL */
};

/* Parse text[0..len) (need not be NUL-terminated) into target. */
int ms_cfg_parse(const struct ms_cfg_def *defs, size_t n, const char *text,
		 size_t len, void *target, const char **error_r);
/* Read path (at most MS_CFG_MAX_FILE bytes) and parse it; errors start
   with the path. */
int ms_cfg_load(const struct ms_cfg_def *defs, size_t n, const char *path,
		void *target, const char **error_r);
/* Free the STR fields of a parsed target and set them to NULL. */
void ms_cfg_free(const struct ms_cfg_def *defs, size_t n, void *target);
/* A relative path value *p made relative to the directory of the config
   file cfg_path (the rule of every section); NULL and absolute stay. */
void ms_cfg_path_abs(char **p, const char *cfg_path);
/*
 * Print every key of the table with its value, in file syntax, "" section
 * first, then the others in table order; help as a "# " line above each
 * key; a NULL STR as a comment line (or as "" if its default is not
 * empty).  The output of a parsed target parses back to the same values.
 * 0, or -EIO if writing to out failed.
 */
int ms_cfg_dump(const struct ms_cfg_def *defs, size_t n, const void *target,
		FILE *out);

/*
 * Strict number parsers, for the config and elsewhere: s[0..len) must be
 * the whole number (no sign, no blanks).  0 with *v_r set; -EINVAL if
 * malformed, -ERANGE if over UINT64_MAX; *v_r untouched on failure.
 */
int ms_parse_u64(const char *s, size_t len, uint64_t *v_r);
/* Digits with an optional k/K m/M g/G t/T suffix (powers of 1024). */
int ms_parse_size(const char *s, size_t len, uint64_t *v_r);
/* Digits with an optional ms/s/m/h/d suffix (none: seconds), in ms. */
int ms_parse_duration_ms(const char *s, size_t len, uint64_t *ms_r);

#endif
