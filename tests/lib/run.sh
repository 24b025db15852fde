#!/bin/sh
#
# run.sh - start or stop the mstore backend on loopback, data in ./var
# (`make run`, `make stop`).
#
# usage: tests/lib/run.sh start|stop [BUILD_DIR]
#
# `start` writes var/mstore.conf (io_uring, or psync where the kernel
# refuses io_uring), starts mstored on the unix sockets var/mstored.sock
# (users) and var/mstored-admin.sock (admin), the system API on
# 127.0.0.1:9180 (or the next free port; /admin token var/http.token,
# per-user quota series for 10 users), with the store's copies in
# var/store/{primary,secondary} and its index in var/store/index, then
# mstore-lmtpd on 127.0.0.1 (port 24 when it is free and we are root,
# else the first free one of 2424..2434; MSTORE_LMTP_PORT chooses) and
# on the unix socket var/lmtp.sock, creates the user "demo" and delivers
# a demo message through mstored, then prints how to reach it all.
# The DR site lives in var/dr: its own store (written by `udsync recv`
# alone), a standby mstored on it (read-only until `mstore promote`),
# and `udsync send` on the primary streams the log there over 127.0.0.1
# (pinned keys var/udsync.key, var/dr/udsync.key).  With Postfix
# installed and root, a private Postfix is the MX gateway on
# 127.0.0.1:8025 (MSTORE_SMTP_PORT), relaying example.test to the LMTP
# receiver (var/postfix).
# With Dovecot installed, the plugin built and root, a private Dovecot
# (var/dovecot) serves IMAP on 127.0.0.1:1143 and POP3 on 1110 (or the
# next free ports) through the mstore plugin, for the user demo
# (password demo); mstored then runs as the system user mstore, and
# Dovecot's mail user mstoremail reaches its user socket through the
# group mstore.
# `stop` stops them all by the PIDs in var/*.pid (Postfix with
# `postfix -c var/postfix/etc stop`, Dovecot by its master.pid).
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
udsync=$bdir/udsync
dr=$var/dr
dr_conf=$dr/mstore.conf

# Dovecot needs root, the plugin and the users; then mstored runs as
# mstore (its sockets belong to it; the mail user reaches the user
# socket through the group).
plugin=$bdir/modules/lib20_mstore_plugin.so
dovecot_wanted()
{
	[ "$(id -u)" = 0 ] && [ -x /usr/sbin/dovecot ] && [ -f "$plugin" ]
}

ensure_user()
{
	id "$1" >/dev/null 2>&1 ||
		useradd --system --user-group --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin "$1"
}

write_conf()
{
	store_user=
	# only where those users can reach var/ (not under a 0700 parent)
	if dovecot_wanted && ensure_user mstore && ensure_user mstoremail &&
	   runuser -u mstore -- test -x "$var" 2>/dev/null &&
	   runuser -u mstoremail -- test -x "$var" 2>/dev/null; then
		# Dovecot's mail processes (mail_uid mstoremail) act for
		# every mail user on the user socket
		store_user="user = mstore
user_socket_peers = mstoremail"
	fi
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
$store_user
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

# The system API (docs/http-api.md) in [store], once: a free loopback
# port and a token for /admin (var/http.token, 0600).
add_http_conf()
{
	grep -q '^http = ' "$conf" && return 0
	port=$(free_port 9180 9199) || return 1
	if [ ! -s "$var/http.token" ]; then
		(umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' \
			>"$var/http.token") || return 1
	fi
	sed -i "s|^\[store\]\$|[store]\nhttp = 127.0.0.1:$port\nhttp_token_file = http.token\nhttp_quota_users = 10|" \
		"$conf"
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
	logged=0
	[ -f "$var/lmtpd.log" ] && logged=$(wc -c <"$var/lmtpd.log")
	"$lmtpd" -c "$conf" >>"$var/lmtpd.log" 2>&1 &
	echo $! >"$lmtp_pidfile"
	i=0
	while [ $i -lt 100 ]; do
		tail -c +$((logged + 1)) "$var/lmtpd.log" |
			grep -q "event=store.connected" && return 0
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

# ---- the DR site ----

# free_port FIRST LAST: the first free TCP port on 127.0.0.1 in the range
free_port()
{
	p=$1
	while [ "$p" -le "$2" ]; do
		port_in_use "$p" || { echo "$p"; return 0; }
		p=$((p + 1))
	done
	return 1
}

# keygen FILE: a udsync key pair once; its public key is kept in FILE.pub
keygen()
{
	[ -f "$1" ] && [ -f "$1.pub" ] && return 0
	rm -f "$1" "$1.pub"
	"$udsync" keygen "$1" >"$1.pub.tmp" && mv "$1.pub.tmp" "$1.pub"
}

# The [udsync] sections and the DR site's config, once.
dr_setup()
{
	mkdir -p "$dr/store" || return 1
	keygen "$var/udsync.key" && keygen "$dr/udsync.key" || return 1
	if ! grep -q '^\[udsync\]' "$conf"; then
		port=$(free_port 7600 7640) || return 1
		cat >>"$conf" <<CONF
[udsync]
key_file = udsync.key
peer_key = $(cat "$dr/udsync.key.pub")
connect = 127.0.0.1:$port
CONF
		cat >"$dr_conf" <<CONF
# mstore.conf of the DR site of \`make run\`: udsync recv writes this
# store; mstored --standby serves it read-only until mstore promote.
[store]
primary = store/primary
secondary = store/secondary
index = store/index
segment_size = 64M
io_engine = $(sed -n 's/^io_engine = //p' "$conf")
socket = mstored.sock
admin_socket = mstored-admin.sock
$(grep -E '^(user|user_socket_peers) = ' "$conf")
[udsync]
key_file = udsync.key
peer_key = $(cat "$var/udsync.key.pub")
listen = 127.0.0.1:$port
CONF
	fi
}

pid_running()
{
	[ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# start_bg NAME PIDFILE LOG CMD...: start CMD in the background once
start_bg()
{
	bg_name=$1 bg_pidfile=$2 bg_log=$3
	shift 3
	if pid_running "$bg_pidfile"; then
		echo "run.sh: $bg_name is already running" \
			"(pid $(cat "$bg_pidfile"))"
		return 0
	fi
	"$@" >>"$bg_log" 2>&1 &
	echo $! >"$bg_pidfile"
}

# wait_for SECONDS CMD...: until CMD succeeds
wait_for()
{
	n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

dr_start()
{
	dr_setup || { echo "run.sh: DR site setup failed" >&2; return 1; }
	start_bg "udsync recv" "$var/udsync-recv.pid" "$dr/udsync-recv.log" \
		"$udsync" -c "$dr_conf" recv
	start_bg "udsync send" "$var/udsync-send.pid" "$var/udsync-send.log" \
		"$udsync" -c "$conf" send
	# the standby needs the DR store, which the first sync creates
	if ! wait_for 20 test -f "$dr/store/primary/mstore.meta"; then
		echo "run.sh: the DR store did not appear; see" \
			"$dr/udsync-recv.log and $var/udsync-send.log" >&2
		return 1
	fi
	start_bg "standby mstored" "$var/standby.pid" "$dr/mstored.log" \
		"$mstored" -c "$dr_conf" --standby
	wait_for 20 "$mstore" -c "$dr_conf" stats || {
		tail -5 "$dr/mstored.log" >&2
		return 1
	}
}

# ---- Postfix, the MX gateway ----

pfx=$var/postfix

postfix_start()
{
	if [ ! -x /usr/sbin/postfix ] || [ "$(id -u)" != 0 ]; then
		echo "run.sh: no Postfix gateway (needs the postfix package" \
			"and root)"
		return 0
	fi
	if [ -f "$pfx/etc/main.cf" ] &&
	   postfix -c "$pfx/etc" status >/dev/null 2>&1; then
		echo "run.sh: the Postfix gateway is already running"
		return 0
	fi
	smtp_port=${MSTORE_SMTP_PORT:-$(free_port 8025 8045)} || return 1
	lport=${lmtp_listen##*:}
	rm -rf "$pfx"
	mkdir -p "$pfx/etc" "$pfx/spool" "$pfx/data" || return 1
	chmod 755 "$pfx"
	chown postfix "$pfx/data"
	if ! runuser -u postfix -- test -w "$pfx/data" 2>/dev/null; then
		echo "run.sh: no Postfix gateway: the postfix user cannot" \
			"reach $pfx/data (a parent directory is not searchable)"
		rm -rf "$pfx"
		return 0
	fi
	# no chroot (the private queue has none of its files); smtpd on
	# loopback only
	sed -e "s/^smtp\([[:space:]]*\)inet.*/127.0.0.1:$smtp_port inet n - n - - smtpd/" \
	    -e 's/^\([^#[:space:]][^[:space:]]*[[:space:]]\{1,\}[^[:space:]]\{1,\}[[:space:]]\{1,\}[^[:space:]]\{1,\}[[:space:]]\{1,\}[^[:space:]]\{1,\}[[:space:]]\{1,\}\)y\([[:space:]]\)/\1n\2/' \
	    /etc/postfix/master.cf >"$pfx/etc/master.cf"
	cat >"$pfx/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $pfx/spool
data_directory = $pfx/data
maillog_file = $pfx/maillog
maillog_file_prefixes = $pfx
myhostname = gw.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = example.test
transport_maps = inline:{ example.test=lmtp:inet:127.0.0.1:$lport }
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
lmtp_send_xforward_command = yes
biff = no
CONF
	postfix -c "$pfx/etc" start >>"$var/postfix.log" 2>&1 || {
		echo "run.sh: Postfix did not start: see $var/postfix.log" >&2
		return 1
	}
	echo "$smtp_port" >"$var/smtp.port"
}

postfix_stop()
{
	[ -f "$pfx/etc/main.cf" ] || return 0
	if postfix -c "$pfx/etc" status >/dev/null 2>&1; then
		postfix -c "$pfx/etc" stop >>"$var/postfix.log" 2>&1
		# master exits after its children
		pidf=$pfx/spool/pid/master.pid
		[ -f "$pidf" ] && wait_for 10 sh -c \
			"! kill -0 \$(cat '$pidf' | tr -d ' ') 2>/dev/null"
		echo "run.sh: Postfix gateway stopped"
	fi
}

# ---- Dovecot with the mstore plugin ----

dv=$var/dovecot
dr_dv=$dr/dovecot

# dovecot_site DIR SOCKET PORTSFILE IMAP_FIRST POP3_FIRST: a private
# Dovecot in DIR (its own base_dir, logs, homes) with the plugin on the
# mstored user socket SOCKET, IMAP and POP3 on the first free loopback
# ports from IMAP_FIRST and POP3_FIRST; its ports go to PORTSFILE.
dovecot_site()
{
	site=$1 sock=$2 portsfile=$3
	if [ -f "$site/run/master.pid" ] &&
	   kill -0 "$(cat "$site/run/master.pid")" 2>/dev/null; then
		echo "run.sh: the Dovecot in $site is already running"
		return 0
	fi
	imap_port=$(free_port "$4" $(($4 + 20))) &&
		pop3_port=$(free_port "$5" $(($5 + 20))) || return 1
	mkdir -p "$site/run" "$site/state" "$site/log" "$site/home/demo" \
		"$site/modules" || return 1
	chmod 755 "$site"
	chown mstoremail:mstoremail "$site/home/demo"
	for m in /usr/lib/dovecot/modules/*.so; do
		ln -sf "$m" "$site/modules/"
	done
	ln -sf "$plugin" "$site/modules/"
	uid=$(id -u mstoremail) gid=$(id -g mstoremail)
	echo "demo:{PLAIN}demo:$uid:$gid::$site/home/demo" >"$site/passwd"
	cat >"$site/dovecot.conf" <<CONF
# Dovecot of \`make run\`: IMAP and POP3 on the store (the mstore plugin)
base_dir = $site/run
state_dir = $site/state
instance_name = mstore-run-$imap_port
listen = 127.0.0.1
protocols = imap pop3
log_path = $site/log/dovecot.log
info_log_path = $site/log/dovecot-info.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = $uid
last_valid_uid = $uid
mail_access_groups = mstore
mail_plugin_dir = $site/modules
mail_plugins = mstore
mail_location = mstore:~/mstore
plugin {
  mstore_socket = $sock
}
passdb {
  driver = passwd-file
  args = $site/passwd
}
userdb {
  driver = passwd-file
  args = $site/passwd
}
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $pop3_port
  }
  inet_listener pop3s {
    port = 0
  }
}
CONF
	dovecot -c "$site/dovecot.conf" >>"$site/dovecot-start.log" 2>&1 || {
		echo "run.sh: Dovecot did not start: see" \
			"$site/dovecot-start.log" >&2
		return 1
	}
	wait_for 20 sh -c "ss -Hltn 'sport = :$imap_port' | grep -q ." || {
		echo "run.sh: Dovecot does not listen: see $site/log" >&2
		return 1
	}
	echo "$imap_port $pop3_port" >"$portsfile"
}

# Dovecot needs root, the plugin, and mstored running as mstore
dovecot_usable()
{
	if ! dovecot_wanted; then
		echo "run.sh: no Dovecot (needs root, dovecot-imapd and" \
			"dovecot-pop3d, and the plugin built)"
		return 1
	fi
	if ! grep -q '^user = mstore' "$conf"; then
		echo "run.sh: no Dovecot: mstored does not run as mstore" \
			"($var predates it, or its parent directories are" \
			"not searchable by the mail users)"
		return 1
	fi
	if ! runuser -u mstoremail -- test -x "$var" 2>/dev/null; then
		echo "run.sh: no Dovecot: the mail user cannot reach $var" \
			"(a parent directory is not searchable)"
		return 1
	fi
	return 0
}

dovecot_start()
{
	dovecot_usable || return 0
	dovecot_site "$dv" "$var/mstored.sock" "$var/dovecot.ports" 1143 1110 ||
		return 1
	# the DR site's, read-only on the standby: only when the standby
	# runs as mstore too and lets Dovecot's mail_uid act for its users
	# (a DR config from before has no user or user_socket_peers line)
	if ! grep -q '^user = mstore' "$dr_conf" ||
	   ! grep -q '^user_socket_peers = mstoremail' "$dr_conf"; then
		echo "run.sh: no Dovecot at the DR site: its mstored does" \
			"not run as mstore for mstoremail ($dr_conf predates" \
			"it)"
		return 0
	fi
	dovecot_site "$dr_dv" "$dr/mstored.sock" "$var/dr-dovecot.ports" \
		1243 1210
}

# dovecot_stop_site DIR
dovecot_stop_site()
{
	mp=$1/run/master.pid
	if [ -f "$mp" ] && kill -0 "$(cat "$mp")" 2>/dev/null; then
		dpid=$(cat "$mp")
		kill "$dpid"
		wait_for 20 sh -c "! kill -0 $dpid 2>/dev/null"
		echo "run.sh: Dovecot in $1 (pid $dpid) stopped"
	fi
}

dovecot_stop()
{
	dovecot_stop_site "$dr_dv"
	dovecot_stop_site "$dv"
	rm -f "$var/dovecot.ports" "$var/dr-dovecot.ports"
}

case $cmd in
start)
	for p in "$mstore" "$mstored" "$lmtpd" "$udsync"; do
		[ -x "$p" ] || { echo "run.sh: $p is not built" >&2; exit 1; }
	done
	mkdir -p "$var/store" || exit 1
	if running; then
		echo "run.sh: mstored is already running (pid $(cat "$pidfile"))"
	else
		[ -f "$conf" ] || write_conf uring
		add_http_conf || { echo "run.sh: no free port for the" \
			"system API" >&2; exit 1; }
		if ! start_daemon; then
			if grep -q io_uring "$var/mstored.log"; then
				echo "run.sh: io_uring refused here; using" \
					"io_engine = psync"
				write_conf psync
				add_http_conf || exit 1
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
	dr_start || exit 1
	postfix_start || exit 1
	dovecot_start || exit 1
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
  system API    http://$(sed -n 's/^http = //p' "$conf")/metrics and /status   (docs/http-api.md)
                /admin/... with: -H "Authorization: Bearer \$(cat $var/http.token)"
udsync send (pid $(cat "$var/udsync-send.pid")) streams the log to the DR site in $dr:
  udsync recv (pid $(cat "$var/udsync-recv.pid")), standby mstored (pid $(cat "$var/standby.pid"), read-only)
  DR admin socket $dr/mstored-admin.sock   (mstore -c $dr_conf stats)
$( [ -f "$var/smtp.port" ] && echo "Postfix MX gateway: SMTP on 127.0.0.1:$(cat "$var/smtp.port") -> LMTP $lmtp_listen (log $pfx/maillog)")
$( [ -f "$var/dovecot.ports" ] && read ip pp <"$var/dovecot.ports" && echo "Dovecot with the mstore plugin: IMAP 127.0.0.1:$ip, POP3 127.0.0.1:$pp (user demo, password demo)
  curl -s --url imap://127.0.0.1:$ip/INBOX -u demo:demo -X 'FETCH 1:* (FLAGS BODY[HEADER.FIELDS (SUBJECT)])'")
$( [ -f "$var/dr-dovecot.ports" ] && read ip pp <"$var/dr-dovecot.ports" && echo "DR Dovecot (read-only on the standby until mstore promote): IMAP 127.0.0.1:$ip, POP3 127.0.0.1:$pp
  curl -s --url imap://127.0.0.1:$ip/INBOX -u demo:demo -X 'FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])'")
Try:
  $mstore -c $conf stats
  python3 -c 'import smtplib; l = smtplib.LMTP("${lmtp_listen%:*}", ${lmtp_listen##*:}); l.ehlo("me"); print(l.sendmail("me@example.test", ["demo@example.test"], b"Subject: hi\r\n\r\nhello\r\n"))'
  $mstore -c $conf user add alice
  $mstore -c $conf deliver alice INBOX FILE
  make stop; $mstore -c $conf verify
MSG
	;;
stop)
	dovecot_stop
	postfix_stop
	stop_pid "udsync send" "$var/udsync-send.pid" || exit 1
	stop_pid "standby mstored" "$var/standby.pid" || exit 1
	stop_pid "udsync recv" "$var/udsync-recv.pid" || exit 1
	stop_pid mstore-lmtpd "$lmtp_pidfile" || exit 1
	stop_pid mstored "$pidfile" || exit 1
	;;
*)
	echo "usage: $0 start|stop [BUILD_DIR]" >&2
	exit 2
	;;
esac
