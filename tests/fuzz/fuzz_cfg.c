/*
 * fuzz_cfg.c - libFuzzer target for the config parser (store/cfg.c).
 *
 * Parses arbitrary bytes with a sample table shaped like the store's (every
 * type, a global section, two daemon sections).  Whatever parses must also
 * survive a round trip: ms_cfg_dump() output parses back to the same
 * values, or the target aborts.  Seeds: tests/fuzz/corpus/cfg/.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Istore tests/fuzz/fuzz_cfg.c \
 *         store/cfg.c store/buf.c store/msg.c -o fuzz_cfg
 *   ./fuzz_cfg -max_total_time=60 tests/fuzz/corpus/cfg
 */
#include <stdio.h>
#include <stdlib.h>

#include "cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	unsigned level;
	uint64_t counter;
	char *primary;
	char *secondary;
	uint64_t segment_size;
	unsigned io_engine;
	int sync;
	uint64_t max_connections;
	uint64_t timeout;
	unsigned socket_mode;
	char *banner;
};

static const char *const levels[] = {"debug", "info", "warn", NULL};
static const char *const engines[] = {"uring", "psync", NULL};

#define F(x) offsetof(struct fz, x)
static const struct ms_cfg_def defs[] = {
	{"", "log_level", MS_CFG_ENUM, "info", 0, 0, levels, F(level),
	 "lowest level logged"},
	{"", "counter", MS_CFG_UINT, "0", 0, 0, NULL, F(counter), NULL},
	{"store", "primary", MS_CFG_STR, NULL, 1, 4096, NULL, F(primary), NULL},
	{"store", "secondary", MS_CFG_STR, NULL, 0, 0, NULL, F(secondary),
	 NULL},
	{"store", "segment_size", MS_CFG_SIZE, "64M", 1 << 20, 1 << 30, NULL,
	 F(segment_size), "bytes per segment"},
	{"store", "io_engine", MS_CFG_ENUM, "uring", 0, 0, engines,
	 F(io_engine), NULL},
	{"store", "sync", MS_CFG_BOOL, "yes", 0, 0, NULL, F(sync), NULL},
	{"lmtp", "max_connections", MS_CFG_UINT, "100", 1, 10000, NULL,
	 F(max_connections), NULL},
	{"lmtp", "timeout", MS_CFG_DURATION, "5m", 0, 0, NULL, F(timeout),
	 NULL},
	{"lmtp", "socket_mode", MS_CFG_MODE, "0660", 0, 0, NULL, F(socket_mode),
	 NULL},
	{"lmtp", "banner", MS_CFG_STR, "mstore", 0, 0, NULL, F(banner), NULL},
};
#define NDEFS MS_ARRAY_SIZE(defs)

static int same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static int same(const struct fz *a, const struct fz *b)
{
	return a->level == b->level && a->counter == b->counter &&
	       same_str(a->primary, b->primary) &&
	       same_str(a->secondary, b->secondary) &&
	       a->segment_size == b->segment_size &&
	       a->io_engine == b->io_engine && a->sync == b->sync &&
	       a->max_connections == b->max_connections &&
	       a->timeout == b->timeout && a->socket_mode == b->socket_mode &&
	       same_str(a->banner, b->banner);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz a, b;
	const char *error = NULL;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;

	if (ms_cfg_parse(defs, NDEFS, (const char *)data, size, &a, &error) <
	    0) {
		if (error == NULL)
			abort();
		return 0;
	}
	f = open_memstream(&out, &outlen);
	if (f == NULL)
		abort();
	if (ms_cfg_dump(defs, NDEFS, &a, f) != 0)
		abort();
	fclose(f);
	if (ms_cfg_parse(defs, NDEFS, out, outlen, &b, &error) < 0) {
		fprintf(stderr, "dump does not parse back: %s\n%s", error, out);
		abort();
	}
	if (!same(&a, &b)) {
		fprintf(stderr, "dump parses back to other values:\n%s", out);
		abort();
	}
	free(out);
	ms_cfg_free(defs, NDEFS, &a);
	ms_cfg_free(defs, NDEFS, &b);
	return 0;
}
