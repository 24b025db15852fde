#!/bin/sh
#
# run.sh - start or stop the mstore backend on loopback, data in ./var
# (`make run`, `make stop`).
#
# usage: tests/lib/run.sh start|stop [BUILD_DIR]
#
# `start` writes var/mstore.conf (io_uring, or psync where the kernel
# refuses io_uring), starts mstored on the unix sockets var/mstored.sock
# (users) and var/mstored-admin.sock (admin), with the store's copies in
# var/store/{primary,secondary} and its index in var/store/index, then
# mstore-lmtpd on 127.0.0.1 (port 24 when it is free and we are root,
# else the first free one of 2424..2434; MSTORE_LMTP_PORT chooses) and
# on the unix socket var/lmtp.sock, creates the user "demo" and delivers
# a demo message through mstored, then prints how to reach it all.
# `stop` stops mstore-lmtpd and mstored by the PIDs in var/*.pid.
# udsync, Dovecot and Postfix join here as they are built.
# MSTORE_VAR overrides ./var (the tests use a scratch directory).

cmd=${1:-}
build=${2:-build}
cd "$(dirname "$0")/../.." || exit 1
top=$(pwd)
var=${MSTORE_VAR:-$top/var}
case $build in /*) bdir=$build ;; *) bdir=$top/$build ;; esac
mstore=$bdir/mstore
mstored=$bdir/mstored
lmtpd=$bdir/mstore-lmtpd
conf=$var/mstore.conf
pidfile=$var/mstored.pid
lmtp_pidfile=$var/lmtpd.pid

write_conf()
{
	cat >"$conf" <<CONF
# mstore.conf for \`make run\`: paths are relative to this file.
[store]
primary = store/primary
secondary = store/secondary
index = store/index
segment_size = 64M
io_engine = $1
socket = mstored.sock
admin_socket = mstored-admin.sock
CONF
}

port_in_use()
{
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

lmtp_port()
{
	if [ -n "${MSTORE_LMTP_PORT:-}" ]; then
		echo "$MSTORE_LMTP_PORT"
		return
	fi
	if [ "$(id -u)" = 0 ] && ! port_in_use 24; then
		echo 24
		return
	fi
	for p in 2424 2425 2426 2427 2428 2429 2430 2431 2432 2433 2434; do
		port_in_use "$p" || { echo "$p"; return; }
	done
	echo 2424
}

# An [lmtp] section, once (a var/ from before the LMTP receiver has none).
add_lmtp_conf()
{
	grep -q '^\[lmtp\]' "$conf" && return
	cat >>"$conf" <<CONF
[lmtp]
listen = 127.0.0.1:$(lmtp_port)
socket = lmtp.sock
CONF
}

lmtp_running()
{
	[ -f "$lmtp_pidfile" ] && kill -0 "$(cat "$lmtp_pidfile")" 2>/dev/null
}

start_lmtpd()
{
	# only what this run logs counts
	logged=$(wc -c <"$var/lmtpd.log" 2>/dev/null || echo 0)
	"$lmtpd" -c "$conf" >>"$var/lmtpd.log" 2>&1 &
	echo $! >"$lmtp_pidfile"
	i=0
	while [ $i -lt 100 ]; do
		tail -c +$((logged + 1)) "$var/lmtpd.log" |
			grep -q "connected to mstored" && return 0
		lmtp_running || return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# stop_pid NAME PIDFILE
stop_pid()
{
	if [ -f "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
		pid=$(cat "$2")
		kill "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "run.sh: $1 (pid $pid) did not stop" >&2
			return 1
		fi
		echo "run.sh: $1 (pid $pid) stopped"
	else
		echo "run.sh: $1 is not running"
	fi
	rm -f "$2"
}

running()
{
	[ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_ready()
{
	i=0
	while [ $i -lt 100 ]; do
		"$mstore" -c "$conf" stats >/dev/null 2>&1 && return 0
		running || return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

start_daemon()
{
	"$mstored" -c "$conf" >>"$var/mstored.log" 2>&1 &
	echo $! >"$pidfile"
	wait_ready
}

case $cmd in
start)
	for d in replica/udsync.c; do
		[ -f "$d" ] && echo "run.sh: $d exists but is not started by" \
			"this script yet" >&2
	done
	for p in "$mstore" "$mstored" "$lmtpd"; do
		[ -x "$p" ] || { echo "run.sh: $p is not built" >&2; exit 1; }
	done
	mkdir -p "$var/store" || exit 1
	if running; then
		echo "run.sh: mstored is already running (pid $(cat "$pidfile"))"
	else
		[ -f "$conf" ] || write_conf uring
		if ! start_daemon; then
			if grep -q io_uring "$var/mstored.log"; then
				echo "run.sh: io_uring refused here; using" \
					"io_engine = psync"
				write_conf psync
				start_daemon || { tail -5 "$var/mstored.log"; exit 1; }
			else
				tail -5 "$var/mstored.log" >&2
				exit 1
			fi
		fi
	fi
	add_lmtp_conf
	if lmtp_running; then
		echo "run.sh: mstore-lmtpd is already running" \
			"(pid $(cat "$lmtp_pidfile"))"
	elif ! start_lmtpd; then
		tail -5 "$var/lmtpd.log" >&2
		exit 1
	fi
	lmtp_listen=$(sed -n 's/^listen = //p' "$conf" | head -n 1)
	"$mstore" -c "$conf" user list | grep -q ' demo$' ||
		"$mstore" -c "$conf" user add demo || exit 1
	demo=$var/demo.eml
	printf 'From: demo@example.test\r\nTo: demo@example.test\r\nSubject: mstore demo %s\r\n\r\nStored by mstored, on both copies.\r\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$demo"
	"$mstore" -c "$conf" deliver demo INBOX "$demo" || exit 1
	cat <<MSG

mstore: mstored is running (pid $(cat "$pidfile")), log in $var/mstored.log
  user socket   $var/mstored.sock   (protocol: docs/protocol.md)
  admin socket  $var/mstored-admin.sock
  store         $var/store (config $conf)
mstore-lmtpd is running (pid $(cat "$lmtp_pidfile")), log in $var/lmtpd.log
  LMTP          $lmtp_listen and $var/lmtp.sock   (docs/lmtp.md)
Not built yet: the Dovecot plugin (IMAP, POP3), udsync.
Try:
  $mstore -c $conf stats
  python3 -c 'import smtplib; l = smtplib.LMTP("${lmtp_listen%:*}", ${lmtp_listen##*:}); l.ehlo("me"); print(l.sendmail("me@example.test", ["demo@example.test"], b"Subject: hi\r\n\r\nhello\r\n"))'
  $mstore -c $conf user add alice
  $mstore -c $conf deliver alice INBOX FILE
  make stop; $mstore -c $conf verify
MSG
	;;
stop)
	stop_pid mstore-lmtpd "$lmtp_pidfile" || exit 1
	stop_pid mstored "$pidfile" || exit 1
	;;
*)
	echo "usage: $0 start|stop [BUILD_DIR]" >&2
	exit 2
	;;
esac
