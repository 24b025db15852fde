#!/bin/bash
#
# run-tests.sh - run every mstore test that make built, one line per test.
#
# usage: tests/run-tests.sh BUILD_DIR [--stress]
#
# Runs, in this order: each tests/unit/test_*.c binary; test_mstored again
# with MSTORE_LOOP=epoll and =uring-oneshot (the daemon's other event
# loops); each
# tests/crash/*.c binary; each fuzz target's replay over
# tests/fuzz/corpus/<name>/; then pytest over tests/integration if it
# holds test_*.py files.  Tests are found from their
# sources, so a test whose binary is missing fails instead of vanishing.
#
# A test program exits 0 (pass), 77 (skip: its last line of output says
# why) or anything else (fail: the last 40 lines of its output are shown).
# Each pytest test counts as one test.  Output of every test is kept in
# BUILD_DIR/tests/logs/.  The last line is always
# "N passed, N failed, N skipped"; the exit status is 1 if any test failed.
#
# Environment for the tests: MSTORE_BUILD (absolute BUILD_DIR), MSTORE_SRC
# (the source tree, also the working directory), MS_STRESS=1 with --stress.
# Knobs: MSTORE_TIMEOUT (seconds per program; 300, 3600 with --stress),
# MSTORE_PYTEST_TIMEOUT (whole pytest run; 3600, 36000 with --stress),
# VALGRIND (a command put before each test program, e.g. "valgrind -q
# --error-exitcode=1"), PYTHON (/usr/bin/python3).

if [ $# -lt 1 ] || [ $# -gt 2 ] || { [ $# = 2 ] && [ "$2" != --stress ]; }
then
	echo "usage: $0 BUILD_DIR [--stress]" >&2
	exit 2
fi

src=$(cd "$(dirname "$0")/.." && pwd) || exit 2
build=$(cd "$1" && pwd) || exit 2
stress=0
[ "${2:-}" = --stress ] && stress=1

export MSTORE_BUILD="$build" MSTORE_SRC="$src"
if [ $stress = 1 ]; then
	export MS_STRESS=1
	timeout_s=${MSTORE_TIMEOUT:-3600}
	pytest_timeout=${MSTORE_PYTEST_TIMEOUT:-36000}
else
	timeout_s=${MSTORE_TIMEOUT:-300}
	pytest_timeout=${MSTORE_PYTEST_TIMEOUT:-3600}
fi
python=${PYTHON:-/usr/bin/python3}

logs=$build/tests/logs
rm -rf "$logs"
mkdir -p "$logs" || exit 2
cd "$src" || exit 2
shopt -s nullglob

passed=0 failed=0 skipped=0

pass()
{
	echo "PASS $1"
	passed=$((passed + 1))
}

# fail NAME [WHY] [LOG]
fail()
{
	echo "FAIL $1${2:+ ($2)}"
	failed=$((failed + 1))
	if [ -n "${3:-}" ] && [ -s "$3" ]; then
		tail -n 40 "$3" | sed 's/^/    /'
	fi
}

skip()
{
	echo "SKIP $1: $2"
	skipped=$((skipped + 1))
}

# run_prog NAME PROGRAM ARGS...: one test program, with a timeout.
run_prog()
{
	local name=$1 log rc
	shift
	log=$logs/${name//\//_}.log
	if [ ! -x "$1" ]; then
		fail "$name" "not built: $1"
		return
	fi
	# shellcheck disable=SC2086 # VALGRIND is a command with its options
	timeout -k 10 "$timeout_s" ${VALGRIND:-} "$@" </dev/null >"$log" 2>&1
	rc=$?
	case $rc in
	0)	pass "$name" ;;
	77)	skip "$name" "$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)" ;;
	124|137) fail "$name" "timed out after ${timeout_s} s" "$log" ;;
	*)	fail "$name" "exit $rc" "$log" ;;
	esac
}

for c in tests/unit/test_*.c; do
	t=$(basename "$c" .c)
	run_prog "unit/$t" "$build/tests/unit/$t"
done

# mstored's network loop is io_uring by default; run its test once more
# on the epoll loop (io_engine = psync, or io_uring refused) and once on
# the io_uring loop of older kernels (single polls, no cooperative task
# work) so that each stays tested
if [ -e tests/unit/test_mstored.c ]; then
	MSTORE_LOOP=epoll run_prog unit/test_mstored-epoll \
		"$build/tests/unit/test_mstored"
	MSTORE_LOOP=uring-oneshot run_prog unit/test_mstored-uring-oneshot \
		"$build/tests/unit/test_mstored"
fi

for c in tests/crash/*.c; do
	t=$(basename "$c" .c)
	run_prog "crash/$t" "$build/tests/crash/$t"
done

for c in tests/fuzz/fuzz_*.c; do
	n=$(basename "$c" .c)
	n=${n#fuzz_}
	corpus=tests/fuzz/corpus/$n
	if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
		skip "fuzz/$n" "no corpus in $corpus"
	else
		run_prog "fuzz/$n" "$build/tests/fuzz/fuzz_$n-replay" "$corpus"
	fi
done

# pytest: one line per test, from its JUnit XML report.
report_junit()
{
	"$python" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    cls, test = case.get("classname", ""), case.get("name", "")
    if cls:
        name = "%s::%s" % (cls, test)
    else:  # a file that failed to import
        name = test
    if name.startswith("tests.integration."):
        name = name[len("tests.integration."):]
    name = "integration/" + name
    bad = case.find("failure")
    if bad is None:
        bad = case.find("error")
    skip = case.find("skipped")
    if bad is not None:
        failed += 1
        print("FAIL %s" % name)
        text = (bad.text or bad.get("message") or "").rstrip("\n")
        for line in text.split("\n")[-40:]:
            print("    " + line)
    elif skip is not None:
        skipped += 1
        why = (skip.get("message") or "").strip().split("\n")[0]
        print("SKIP %s: %s" % (name, why or "no reason given"))
    else:
        passed += 1
        print("PASS %s" % name)
print("#counts %d %d %d" % (passed, failed, skipped))
EOF
}

run_pytest()
{
	local junit=$logs/pytest.xml log=$logs/pytest.log rc out counts
	if ! "$python" -c 'import pytest' >/dev/null 2>&1; then
		skip integration "pytest is not installed for $python"
		return
	fi
	timeout -k 10 "$pytest_timeout" env PYTHONDONTWRITEBYTECODE=1 \
		"$python" -m pytest -q -p no:cacheprovider \
		--junitxml="$junit" tests/integration </dev/null >"$log" 2>&1
	rc=$?
	if [ $rc = 5 ]; then
		return			# no tests collected
	fi
	if [ -s "$junit" ] && out=$(report_junit "$junit"); then
		counts=$(printf '%s\n' "$out" | sed -n 's/^#counts //p')
		printf '%s\n' "$out" | grep -v '^#counts '
		# shellcheck disable=SC2086
		set -- $counts
		passed=$((passed + $1))
		failed=$((failed + $2))
		skipped=$((skipped + $3))
		# failed tests (1) and collection errors (2, reported as
		# failed tests) explain a nonzero exit; nothing else does
		if [ $rc = 0 ] || { [ $rc -le 2 ] && [ "$2" -gt 0 ]; }; then
			return
		fi
	fi
	case $rc in
	124|137) fail integration "pytest timed out after ${pytest_timeout} s" \
			"$log" ;;
	*)	fail integration "pytest exit $rc" "$log" ;;
	esac
}

if [ -n "$(find tests/integration -name 'test_*.py' 2>/dev/null)" ]; then
	run_pytest
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
