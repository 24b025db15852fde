#!/bin/bash
#
# run-bench.sh - run every benchmark that make built.
#
# usage: tests/bench/run-bench.sh BUILD_DIR
#
# Each tests/bench/bench_<name>.c is built as BUILD_DIR/tests/bench/bench-<name>
# and run here in turn, from the source tree, with its output shown as it
# comes.  Exit 77 from a benchmark means it could not run here (it says
# why); any other nonzero exit, or a missing binary, is a failure, and the
# script then exits 1.  MSTORE_BENCH_TIMEOUT (seconds, default 1800) bounds
# each one.  Environment: MSTORE_BUILD, MSTORE_SRC as for the tests.

if [ $# != 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
src=$(cd "$(dirname "$0")/../.." && pwd) || exit 2
build=$(cd "$1" && pwd) || exit 2
export MSTORE_BUILD="$build" MSTORE_SRC="$src"
cd "$src" || exit 2
shopt -s nullglob

ran=0 failed=0 skipped=0
for c in tests/bench/bench_*.c; do
	name=$(basename "$c" .c)
	name=bench-${name#bench_}
	bin=$build/tests/bench/$name
	echo "== $name"
	if [ ! -x "$bin" ]; then
		echo "$name: not built ($bin)"
		failed=$((failed + 1))
		continue
	fi
	timeout -k 10 "${MSTORE_BENCH_TIMEOUT:-1800}" "$bin" </dev/null
	rc=$?
	case $rc in
	0)	ran=$((ran + 1)) ;;
	77)	skipped=$((skipped + 1)); echo "$name: skipped" ;;
	*)	failed=$((failed + 1)); echo "$name: FAILED (exit $rc)" ;;
	esac
done

echo "benchmarks: $ran ran, $failed failed, $skipped skipped"
[ $failed = 0 ]
