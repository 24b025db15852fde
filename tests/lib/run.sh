#!/bin/sh
#
# run.sh - start or stop the mstore backend on loopback, data in ./var
# (`make run`, `make stop`).
#
# usage: tests/lib/run.sh start|stop [BUILD_DIR]
#
# Today the backend is mstored alone: `start` writes var/mstore.conf
# (io_uring, or psync where the kernel refuses io_uring), starts mstored
# on the unix sockets var/mstored.sock (users) and var/mstored-admin.sock
# (admin), with the store's copies in var/store/{primary,secondary} and
# its index in var/store/index, creates the user "demo" and delivers a
# demo message through the daemon, then prints how to reach it.  `stop`
# stops the mstored it started, by the PID in var/mstored.pid.  The LMTP
# receiver, udsync, Dovecot and Postfix join here as they are built.
# MSTORE_VAR overrides ./var (the tests use a scratch directory).

cmd=${1:-}
build=${2:-build}
cd "$(dirname "$0")/../.." || exit 1
top=$(pwd)
var=${MSTORE_VAR:-$top/var}
case $build in /*) bdir=$build ;; *) bdir=$top/$build ;; esac
mstore=$bdir/mstore
mstored=$bdir/mstored
conf=$var/mstore.conf
pidfile=$var/mstored.pid

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
	for d in lmtp/lmtpd.c replica/udsync.c; do
		[ -f "$d" ] && echo "run.sh: $d exists but is not started by" \
			"this script yet" >&2
	done
	for p in "$mstore" "$mstored"; do
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
Not built yet: the LMTP receiver, the Dovecot plugin (IMAP, POP3), udsync.
Try:
  $mstore -c $conf stats
  $mstore -c $conf user add alice
  $mstore -c $conf deliver alice INBOX FILE
  make stop; $mstore -c $conf verify
MSG
	;;
stop)
	if running; then
		pid=$(cat "$pidfile")
		kill "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "run.sh: mstored (pid $pid) did not stop" >&2
			exit 1
		fi
		echo "run.sh: mstored (pid $pid) stopped"
	else
		echo "run.sh: mstored is not running"
	fi
	rm -f "$pidfile"
	;;
*)
	echo "usage: $0 start|stop [BUILD_DIR]" >&2
	exit 2
	;;
esac
