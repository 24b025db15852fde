# Makefile - build and test mstore (GNU make).  `make help` lists the targets.
#
# Objects go under $(B), mirroring the source tree, so builds with different
# flags (build/, build-asan/) live side by side.  Sources are found by
# wildcard: a new store/x.c joins libmstore.a, a new tests/unit/test_x.c
# becomes $(B)/tests/unit/test_x, with no edit here.  A folder's main()
# lives alone in the file named in *_MAINS and is left out of its archive.

B ?= build

all:

# ---- configuration ---------------------------------------------------------
# config.mk and config.h come from ./configure; make runs it when they are
# missing or older than configure.  Goals that need no configuration skip it.
NOCONF_GOALS := clean format format-check help stop
ifneq ($(if $(MAKECMDGOALS),$(filter-out $(NOCONF_GOALS),$(MAKECMDGOALS)),all),)
include config.mk
endif

config.mk: configure
	./configure $(CONFIGURE_ARGS)
# configure replaces config.h only when its contents change, so config.h
# may be older than config.mk; it is remade only when it is missing.
config.h: | config.mk
	./configure $(CONFIGURE_ARGS)

# ---- flags -----------------------------------------------------------------
WARN := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes
INCLUDES = -Istore -I$(B)
LIB_CFLAGS = $(LIBURING_CFLAGS) $(LIBSODIUM_CFLAGS) $(LIBXXHASH_CFLAGS) \
	$(LIBLZ4_CFLAGS) $(LMDB_CFLAGS)
LIBS = $(LIBURING_LIBS) $(LIBSODIUM_LIBS) $(LIBXXHASH_LIBS) $(LIBLZ4_LIBS) \
	$(LMDB_LIBS)
# -fPIC so that the Dovecot plugin (a shared object) can link libmstore.a.
# XCFLAGS is set per folder below; EXTRA_CFLAGS/EXTRA_LDFLAGS are for you
# and for `make asan`.
ALL_CFLAGS = $(strip -std=c11 -D_GNU_SOURCE $(CFLAGS) $(WARN) -fno-common -fPIC \
	$(INCLUDES) $(LIB_CFLAGS) $(XCFLAGS) $(EXTRA_CFLAGS))
# Full RELRO, as Debian links Dovecot and its plugins: the GOT is bound
# at load and made read-only (and no first call pays for a lookup).
HARDEN_LDFLAGS := -Wl,-z,relro -Wl,-z,now
ALL_LDFLAGS = $(HARDEN_LDFLAGS) $(LDFLAGS) $(EXTRA_LDFLAGS)

# Test, bench and fuzz code also sees the test helpers, the LMTP and replica
# headers and cmocka.  Fuzz targets get their prototypes from fuzz.h.
TEST_XCFLAGS = -Itests/lib -Ilmtp -Ireplica $(CMOCKA_CFLAGS)
$(B)/tests/%.o: XCFLAGS = $(TEST_XCFLAGS)
$(B)/tests/fuzz/%.o: XCFLAGS = $(TEST_XCFLAGS) -include tests/fuzz/fuzz.h

obj = $(patsubst %.c,$(B)/%.o,$(1))

# ---- the product -------------------------------------------------------------
STORE_MAINS = store/mstored.c
LMTP_MAINS = lmtp/lmtpd.c
REPLICA_MAINS = replica/udsync.c
MAINS = $(STORE_MAINS) $(LMTP_MAINS) $(REPLICA_MAINS)

STORE_OBJS := $(call obj,$(filter-out $(STORE_MAINS),$(wildcard store/*.c)))
LMTP_OBJS := $(call obj,$(filter-out $(LMTP_MAINS),$(wildcard lmtp/*.c)))
REPLICA_OBJS := $(call obj,$(filter-out $(REPLICA_MAINS),$(wildcard replica/*.c)))
TOOLS_OBJS := $(call obj,$(wildcard tools/*.c))
TESTLIB_OBJS := $(call obj,$(wildcard tests/lib/*.c))

# Every program and test links all three archives; only what it uses is
# pulled in.  libmstore.a goes last: the others depend on it.
LIBMSTORE := $(B)/libmstore.a
LIBLMTP := $(if $(LMTP_OBJS),$(B)/liblmtp.a)
LIBUDSYNC := $(if $(REPLICA_OBJS),$(B)/libudsync.a)
ARCHIVES = $(LIBUDSYNC) $(LIBLMTP) $(LIBMSTORE)
TESTLIB := $(if $(TESTLIB_OBJS),$(B)/tests/libtest.a)

MSTORED := $(if $(wildcard $(STORE_MAINS)),$(B)/mstored)
LMTPD := $(if $(wildcard $(LMTP_MAINS)),$(B)/mstore-lmtpd)
UDSYNC := $(if $(wildcard $(REPLICA_MAINS)),$(B)/udsync)
MSTORE := $(if $(TOOLS_OBJS),$(B)/mstore)
PROGS = $(MSTORED) $(LMTPD) $(UDSYNC) $(MSTORE)

# The Dovecot plugin, in $(B)/modules so that a test Dovecot can load it
# with mail_plugin_dir.  It is built with Dovecot's flags, not ours, plus
# EXTRA_CFLAGS: under `make asan` it is instrumented like the rest, and a
# Dovecot that loads it needs LD_PRELOAD=$$(gcc -print-file-name=libasan.so).
PLUGIN_OBJS := $(if $(filter 1,$(HAVE_DOVECOT)),$(call obj,$(wildcard dovecot-plugin/*.c)))
# Not in sanitizer builds: Dovecot's own processes are not instrumented,
# so an instrumented plugin cannot be loaded into them (the Dovecot
# tests then skip).
PLUGIN := $(if $(and $(PLUGIN_OBJS),$(if $(findstring sanitize,$(EXTRA_CFLAGS)),,1)),$(B)/modules/lib20_mstore_plugin.so)

LINK = $(strip $(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(ARCHIVES) $(LIBS))

all: $(ARCHIVES) $(PROGS) $(PLUGIN)

$(B)/config.h: config.h
	@mkdir -p $(@D)
	cp config.h $@

$(B)/%.o: %.c | $(B)/config.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(PLUGIN_OBJS): $(B)/%.o: %.c | $(B)/config.h
	@mkdir -p $(@D)
	$(CC) $(DOVECOT_CFLAGS) -fPIC -Werror -Istore $(EXTRA_CFLAGS) \
		-MMD -MP -c -o $@ $<

$(B)/libmstore.a: $(STORE_OBJS)
$(B)/liblmtp.a: $(LMTP_OBJS)
$(B)/libudsync.a: $(REPLICA_OBJS)
$(B)/tests/libtest.a: $(TESTLIB_OBJS)
%.a:
	@rm -f $@
	$(AR) rcs $@ $^

$(B)/mstored: $(call obj,$(STORE_MAINS)) $(ARCHIVES)
	$(LINK)
$(B)/mstore-lmtpd: $(call obj,$(LMTP_MAINS)) $(ARCHIVES)
	$(LINK)
$(B)/udsync: $(call obj,$(REPLICA_MAINS)) $(ARCHIVES)
	$(LINK)
$(B)/mstore: $(TOOLS_OBJS) $(ARCHIVES)
	$(LINK)

$(PLUGIN): $(PLUGIN_OBJS) $(ARCHIVES) dovecot-plugin/mstore-plugin.map
	@mkdir -p $(@D)
	$(CC) -shared -fPIC -Wl,--no-undefined \
		-Wl,--version-script=dovecot-plugin/mstore-plugin.map \
		$(ALL_LDFLAGS) -o $@ $(PLUGIN_OBJS) $(ARCHIVES) $(LIBS) \
		$(DOVECOT_LIBS)

# ---- tests -------------------------------------------------------------------
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/tests/unit/%,$(wildcard tests/unit/test_*.c))
CRASH_BINS := $(patsubst tests/crash/%.c,$(B)/tests/crash/%,$(wildcard tests/crash/*.c))
BENCH_BINS := $(patsubst tests/bench/bench_%.c,$(B)/tests/bench/bench-%,$(wildcard tests/bench/bench_*.c))
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BINS := $(FUZZ_NAMES:%=$(B)/tests/fuzz/fuzz_%-replay)
TEST_BINS = $(UNIT_BINS) $(CRASH_BINS) $(BENCH_BINS) $(REPLAY_BINS)

LINK_TEST = $(strip $(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(TESTLIB) \
	$(ARCHIVES) $(CMOCKA_LIBS) $(LIBS))

$(UNIT_BINS) $(CRASH_BINS): %: %.o $(TESTLIB) $(ARCHIVES)
	$(LINK_TEST)
$(BENCH_BINS): $(B)/tests/bench/bench-%: $(B)/tests/bench/bench_%.o $(TESTLIB) $(ARCHIVES)
	$(LINK_TEST)
# make check replays each fuzz target's corpus without libFuzzer.
$(REPLAY_BINS): $(B)/tests/fuzz/fuzz_%-replay: $(B)/tests/fuzz/fuzz_%.o \
		$(B)/tests/fuzz/replay.o $(TESTLIB) $(ARCHIVES)
	$(LINK_TEST)

tests: all $(TEST_BINS)

check: tests
	tests/run-tests.sh $(B)

stress: tests
	tests/run-tests.sh $(B) --stress

# ASan + UBSan over the whole of `make check`, in its own build directory.
SAN := -fsanitize=address,undefined
asan:
	ASAN_OPTIONS=detect_leaks=1$${ASAN_OPTIONS:+:$$ASAN_OPTIONS} \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1$${UBSAN_OPTIONS:+:$$UBSAN_OPTIONS} \
	$(MAKE) check B=build-asan \
		EXTRA_CFLAGS='$(SAN) -fno-omit-frame-pointer -O1' \
		EXTRA_LDFLAGS='$(SAN)'

bench: tests
	tests/bench/run-bench.sh $(B)

# ---- fuzzing with libFuzzer ------------------------------------------------
# Everything the targets link is rebuilt under $(B)/fuzz/obj with coverage
# instrumentation, by clang, whose warnings differ from gcc's: here they are
# shown but do not stop the run (-Wno-error); the gcc build and `make lint`
# are where warnings fail.  New inputs go to $(B)/fuzz/new/<name>, crashes
# to $(B)/fuzz/crashes; the committed corpus is only read.
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer
FUZZ_BINS := $(FUZZ_NAMES:%=$(B)/fuzz/fuzz_%)
FUZZ_LIB_OBJS := $(patsubst $(B)/%,$(B)/fuzz/obj/%,$(STORE_OBJS) $(LMTP_OBJS) \
	$(REPLICA_OBJS) $(TESTLIB_OBJS))

$(B)/fuzz/obj/tests/%.o: XCFLAGS = $(TEST_XCFLAGS)
$(B)/fuzz/obj/tests/fuzz/%.o: XCFLAGS = $(TEST_XCFLAGS) -include tests/fuzz/fuzz.h
$(B)/fuzz/obj/%.o: %.c | $(B)/config.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(ALL_CFLAGS) -Wno-error -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN) \
		-MMD -MP -c -o $@ $<

$(B)/fuzz/libfuzz.a: $(FUZZ_LIB_OBJS)

$(FUZZ_BINS): $(B)/fuzz/fuzz_%: $(B)/fuzz/obj/tests/fuzz/fuzz_%.o $(B)/fuzz/libfuzz.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $(ALL_LDFLAGS) -o $@ $^ \
		$(CMOCKA_LIBS) $(LIBS)

ifeq ($(FUZZ_CC),)
fuzz:
	@echo "make fuzz: no clang with libFuzzer; see config.log" >&2; exit 1
else
fuzz: $(FUZZ_BINS)
	@failed=; for n in $(FUZZ_NAMES); do \
		mkdir -p $(B)/fuzz/new/$$n $(B)/fuzz/crashes || exit 1; \
		corpus=tests/fuzz/corpus/$$n; [ -d $$corpus ] || corpus=; \
		dict=tests/fuzz/$$n.dict; \
		if [ -f $$dict ]; then dict=-dict=$$dict; else dict=; fi; \
		echo "== fuzz_$$n for $(FUZZ_SECONDS) s"; \
		$(B)/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=$(B)/fuzz/crashes/$$n- $$dict \
			$(FUZZ_ARGS) $(B)/fuzz/new/$$n $$corpus \
			|| failed="$$failed fuzz_$$n"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "make fuzz: failed:$$failed (inputs in $(B)/fuzz/crashes)"; \
		exit 1; \
	fi
endif

# ---- lint and format -------------------------------------------------------
# clang-tidy checks left out, each for its noise:
#  bugprone-easily-swappable-parameters: flags every f(int a, int b).
#  bugprone-implicit-widening-of-multiplication-result: flags constant
#    sizes such as buf[2 * MS_BODY_KEY_SIZE].
#  clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling:
#    wants memcpy_s and friends (C11 Annex K), which glibc does not have.
#  clang-analyzer-valist.Uninitialized: clang-tidy 14 reports every
#    va_list received as a parameter (vsnprintf(.., ap)) as uninitialized.
#  cert-err33-c: wants every snprintf/fprintf result used, even for
#    bounded numbers and messages to stderr.
TIDY_CHECKS = bugprone-*,cert-*,clang-analyzer-*,$\
	-bugprone-easily-swappable-parameters,$\
	-bugprone-implicit-widening-of-multiplication-result,$\
	-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,$\
	-clang-analyzer-valist.Uninitialized,$\
	-cert-err33-c
LINT_SRCS = $(wildcard store/*.c tools/*.c lmtp/*.c replica/*.c)
FORMAT_SRCS = $(wildcard store/*.[ch] tools/*.[ch] lmtp/*.[ch] \
	replica/*.[ch] dovecot-plugin/*.[ch] tests/*/*.[ch])

# $(call need,COMMAND,PACKAGE): stop, saying what to install, if missing
need = @command -v $(1) >/dev/null || { echo "make $@: needs $(1);" \
	"as root: apt-get install -y --no-install-recommends $(2)" >&2; exit 1; }

lint: $(B)/config.h
	$(call need,clang-tidy,clang-tidy)
	$(call need,cppcheck,cppcheck)
	clang-tidy --quiet --checks='$(TIDY_CHECKS)' --warnings-as-errors='*' \
		$(LINT_SRCS) -- -std=c11 -D_GNU_SOURCE $(INCLUDES) -Ilmtp \
		-Ireplica $(LIB_CFLAGS)
	cppcheck --quiet --enable=warning,portability --error-exitcode=1 \
		--inline-suppr --std=c11 -D_GNU_SOURCE $(INCLUDES) -Ilmtp \
		-Ireplica store tools lmtp replica

format:
	$(call need,clang-format,clang-format)
	clang-format -i $(FORMAT_SRCS)

format-check:
	$(call need,clang-format,clang-format)
	clang-format --dry-run -Werror $(FORMAT_SRCS)

# ---- run, install, clean -----------------------------------------------------
run: all
	tests/lib/run.sh start $(B)

stop:
	tests/lib/run.sh stop $(B)

# Man pages: mstore.conf(5) is written from docs/config.md (one place for
# the keys).  systemd units get the install paths.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
MAN_PAGES = man/mstore.1 man/mstored.8 man/mstore-lmtpd.8 \
	$(wildcard man/udsync.8)
UNITS = $(patsubst dist/systemd/%.in,$(B)/dist/%,$(wildcard dist/systemd/*.in))

$(B)/man/mstore.conf.5: docs/config.md man/mkconfman.sh
	@mkdir -p $(@D)
	sh man/mkconfman.sh docs/config.md > $@

$(B)/dist/%: dist/systemd/%.in
	@mkdir -p $(@D)
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' \
		-e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@

install: all $(B)/man/mstore.conf.5 $(UNITS)
	install -d '$(DESTDIR)$(PREFIX)/bin' '$(DESTDIR)$(PREFIX)/sbin' \
		'$(DESTDIR)$(PREFIX)/share/man/man1' \
		'$(DESTDIR)$(PREFIX)/share/man/man5' \
		'$(DESTDIR)$(PREFIX)/share/man/man8' \
		'$(DESTDIR)$(PREFIX)/lib/systemd/system' \
		'$(DESTDIR)$(PREFIX)/share/doc/mstore/examples'
	install -m 644 man/*.1 '$(DESTDIR)$(PREFIX)/share/man/man1/'
	install -m 644 $(B)/man/mstore.conf.5 \
		'$(DESTDIR)$(PREFIX)/share/man/man5/'
	install -m 644 $(filter %.8,$(MAN_PAGES)) \
		'$(DESTDIR)$(PREFIX)/share/man/man8/'
	install -m 644 $(UNITS) '$(DESTDIR)$(PREFIX)/lib/systemd/system/'
	install -m 644 docs/examples/* \
		'$(DESTDIR)$(PREFIX)/share/doc/mstore/examples/'
	$(if $(MSTORE),install -m 755 $(MSTORE) '$(DESTDIR)$(PREFIX)/bin/')
	$(if $(MSTORED)$(LMTPD)$(UDSYNC),install -m 755 $(MSTORED) $(LMTPD) \
		$(UDSYNC) '$(DESTDIR)$(PREFIX)/sbin/')
	$(if $(PLUGIN),install -D -m 644 $(PLUGIN) \
		'$(DESTDIR)$(DOVECOT_MODULEDIR)/lib20_mstore_plugin.so')

clean:
	rm -rf $(sort build build-asan $(B)) config.mk config.h config.log

help:
	@echo 'make [B=dir]   build the libraries and programs into $$B (build/)'
	@echo 'make check     build everything, run unit, crash, fuzz-replay and'
	@echo '               integration tests (tests/run-tests.sh)'
	@echo 'make stress    the same with MS_STRESS=1: long campaigns'
	@echo 'make asan      make check under ASan+UBSan in build-asan/'
	@echo 'make fuzz      run each libFuzzer target FUZZ_SECONDS (60) seconds'
	@echo 'make bench     run the benchmarks (tests/bench/run-bench.sh)'
	@echo 'make lint      clang-tidy and cppcheck'
	@echo 'make format    clang-format -i (format-check: only report)'
	@echo 'make run/stop  start/stop the backend on loopback, data in ./var'
	@echo 'make install   to $$PREFIX (from ./configure --prefix), under $$DESTDIR'
	@echo 'make clean     remove build directories and configure output'

.PHONY: all tests check stress asan bench fuzz lint format format-check \
	run stop install clean help
.DELETE_ON_ERROR:

-include $(patsubst %.o,%.d,$(STORE_OBJS) $(LMTP_OBJS) $(REPLICA_OBJS) \
	$(TOOLS_OBJS) $(PLUGIN_OBJS) $(TESTLIB_OBJS) $(FUZZ_LIB_OBJS) \
	$(call obj,$(MAINS) $(wildcard tests/*/*.c)) \
	$(patsubst $(B)/%,$(B)/fuzz/obj/%,$(call obj,$(wildcard tests/fuzz/*.c))))
