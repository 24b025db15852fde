#!/bin/sh
#
# run.sh - start or stop the mstore backend on loopback, data in ./var
# (`make run`, `make stop`).
#
# usage: tests/lib/run.sh start|stop [BUILD_DIR]
#
# What exists so far is the log engine and the mstore command; the daemons
# (mstored, mstore-lmtpd, udsync) are not written yet, so nothing listens
# on the network.  `start` therefore runs the engine itself: it writes
# var/mstore.conf (io_uring, or psync where the kernel refuses io_uring),
# creates the store in var/store/{primary,secondary} if it is not there,
# stores a demo message through the engine (both copies, fdatasync'ed),
# verifies every record of both copies, and prints what to try next.  As
# each daemon lands, it is started here, and `stop` stops it by its PID.
# MSTORE_VAR overrides ./var (the tests use a scratch directory).

cmd=${1:-}
build=${2:-build}
cd "$(dirname "$0")/../.." || exit 1
top=$(pwd)
var=${MSTORE_VAR:-$top/var}
case $build in /*) mstore=$build/mstore ;; *) mstore=$top/$build/mstore ;; esac
conf=$var/mstore.conf

write_conf()
{
	cat >"$conf" <<CONF
# mstore.conf for \`make run\`: paths are relative to this file.
[store]
primary = store/primary
secondary = store/secondary
segment_size = 64M
io_engine = $1
CONF
}

case $cmd in
start)
	for d in store/mstored.c lmtp/lmtpd.c replica/udsync.c; do
		[ -f "$d" ] && echo "run.sh: $d exists but is not started by" \
			"this script yet" >&2
	done
	[ -x "$mstore" ] || { echo "run.sh: $mstore is not built" >&2; exit 1; }
	mkdir -p "$var/store" || exit 1
	[ -f "$conf" ] || write_conf uring
	# init opens an existing store, or makes one; a kernel or container
	# that refuses io_uring gets psync
	if ! "$mstore" -c "$conf" init >/dev/null 2>"$var/init.err"; then
		if grep -q io_uring "$var/init.err"; then
			echo "run.sh: io_uring refused here; using io_engine = psync"
			write_conf psync
			"$mstore" -c "$conf" init >/dev/null || exit 1
		else
			cat "$var/init.err" >&2
			exit 1
		fi
	fi
	rm -f "$var/init.err"
	demo=$var/demo.eml
	printf 'From: demo@example.test\r\nTo: user@example.test\r\nSubject: mstore demo %s\r\n\r\nStored through the log engine, on both copies.\r\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$demo"
	out=$("$mstore" -c "$conf" append "$demo") || { echo "$out"; exit 1; }
	pos=$(echo "$out" | sed -n 's/.*: \([0-9]*:[0-9]*\) seq=.*/\1/p')
	"$mstore" -c "$conf" verify || exit 1
	cat <<MSG

mstore: the store is in $var/store (config $conf).
The daemons (mstored, mstore-lmtpd, udsync, the Dovecot plugin) are not
built yet, so no network service was started; this is the log engine.
A demo message was just stored at $pos.  Try:

  $mstore -c $conf dump
  $mstore -c $conf cat $pos
  $mstore -c $conf append FILE...
  $mstore -c $conf verify --json
  $mstore -c $conf repair
  make bench        # the engine next to fio's limits of this disk

MSG
	;;
stop)
	echo "run.sh: no daemon is started by make run yet; nothing to stop"
	;;
*)
	echo "usage: $0 start|stop [BUILD_DIR]" >&2
	exit 2
	;;
esac
