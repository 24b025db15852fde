#!/bin/sh
#
# run.sh - start or stop the mstore backend on loopback, data in ./var
# (`make run`, `make stop`).
#
# usage: tests/lib/run.sh start|stop [BUILD_DIR]
#
# Not written yet: which daemons start, with what configuration, is decided
# as they land.  Until then this script only reports which daemons are
# built and exits 1 from `start`, so that `make run` never seems to work
# when nothing is running.

cmd=${1:-}
build=${2:-build}
cd "$(dirname "$0")/../.." || exit 1

# daemon name, and the source file that has its main()
daemons="mstored:store/mstored.c mstore-lmtpd:lmtp/lmtpd.c udsync:replica/udsync.c"

case $cmd in
start)
	for d in $daemons; do
		name=${d%%:*} main=${d#*:}
		if [ ! -f "$main" ]; then
			echo "run.sh: $name does not exist yet (no $main)"
		elif [ -x "$build/$name" ]; then
			echo "run.sh: $name is built ($build/$name)"
		else
			echo "run.sh: $name is not built (run make)"
		fi
	done
	echo "run.sh: starting the backend is not written yet; nothing was started" >&2
	exit 1
	;;
stop)
	echo "run.sh: run.sh start starts nothing yet, so there is nothing to stop"
	exit 0
	;;
*)
	echo "usage: $0 start|stop [BUILD_DIR]" >&2
	exit 2
	;;
esac
