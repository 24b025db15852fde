#!/bin/sh
# mkconfman.sh - write mstore.conf(5) from docs/config.md, so that the
# keys are described in one place.  usage: mkconfman.sh config.md > out.5
#
# Each "## [section]" heading becomes a subsection; each table row
# "| `key` | default | range | meaning |" an entry.  Markdown code spans
# lose their backquotes; a leading "." or "'" is escaped for troff.
set -e
[ $# = 1 ] || { echo "usage: $0 docs/config.md" >&2; exit 2; }
cat <<'HEAD'
.TH MSTORE.CONF 5 2026-11-28 mstore "mstore manual"
.SH NAME
mstore.conf \- configuration of mstored, mstore-lmtpd, udsync and mstore
.SH DESCRIPTION
One file for every mstore program:
.I key = value
lines under
.I [section]
headers,
.B #
comments on their own lines, values in double quotes to keep spaces.
An unknown key, a value out of range or a malformed line is refused with
its line number.
Relative paths are relative to the directory of the file.
Sizes take k, M, G, T (powers of 1024); durations ms, s, m, h, d (a bare
number is seconds).
.B mstore \-c
.I file
.B config
prints the effective settings.
HEAD
awk '
function clean(s) {
	gsub(/`/, "", s); gsub(/\\/, "\\e", s)
	sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
	if (s ~ /^[.\047]/) s = "\\&" s
	return s
}
/^## \[/ { sec = $2; printf ".SH SECTION %s\n", sec; next }
/^## / { sec = ""; next }
sec != "" && /^\| `/ {
	n = split($0, f, "|")
	key = clean(f[2]); def = clean(f[3]); range = clean(f[4])
	mean = clean(f[5])
	printf ".TP\n.B %s\n%s\n", key, mean
	printf ".br\nDefault: %s%s.\n", (def == "" ? "none" : def),
	       (range == "" ? "" : "; range: " range)
}' "$1"
cat <<'TAIL'
.SH SEE ALSO
.BR mstored (8),
.BR mstore-lmtpd (8),
.BR mstore (1)
TAIL
