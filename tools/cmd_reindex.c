/*
 * cmd_reindex - `mstore [-c FILE] reindex [DIR] [--index IDXDIR]`: build
 * the index again from the log alone (offline: mstored must be stopped;
 * the store's lock says so if it is not).  The old index is replaced.
 *
 * `mstore verify` calls index_check() below to compare an index with
 * the log: the index's own invariants (ms_idx_check), then its canonical
 * dump against the dump of a fresh rebuild in a scratch directory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx.h"
#include "log.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

/* The index directory for a store: --index, the config's, or <primary>/index. */
static void index_dir(const struct tool_store *ts, const char *opt, char *out,
		      size_t n)
{
	const struct ms_store_cfg *cfg = tool_cfg();
	if (opt != NULL)
		snprintf(out, n, "%s", opt);
	else if (cfg != NULL && cfg->index != NULL)
		snprintf(out, n, "%s", cfg->index);
	else
		snprintf(out, n, "%s/index", ts->primary);
}

int cmd_reindex(int argc, char **argv)
{
	const char *dir = NULL, *secondary = NULL, *idxopt = NULL, *err = "";
	struct tool_store ts;
	char idxdir[4200];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (strcmp(argv[i], "--index") == 0 && i + 1 < argc)
			idxopt = argv[++i];
		else if (argv[i][0] != '-' && dir == NULL)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: mstore reindex DIR [--index "
					"IDXDIR] [--secondary DIR2]\n");
			return TOOL_FAILED;
		}
	}
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	index_dir(&ts, idxopt, idxdir, sizeof(idxdir));
	/* open for writing: the flock proves mstored is not running */
	/* a DR replica too: only the index is written, no record */
	struct ms_log_cfg cfg = { .dir = { ts.copy[0], ts.copy[1] },
				  .engine = MS_IO_PSYNC,
				  .replica_ok = 1 };
	struct ms_log *log;
	if (ms_log_open(&cfg, &log, &err) < 0) {
		fprintf(stderr, "mstore reindex: %s\n", err);
		return TOOL_FAILED;
	}
	int ret = ms_idx_rebuild(idxdir, 0, log, &err);
	ms_log_close(&log);
	if (ret < 0) {
		fprintf(stderr, "mstore reindex: %s\n", err);
		return TOOL_FAILED;
	}
	printf("index %s rebuilt from the log\n", idxdir);
	return TOOL_OK;
}

static char *dump_of(const char *dir, const char **error_r)
{
	struct ms_idx *idx;
	char *buf = NULL;
	size_t len = 0;
	if (ms_idx_open(dir, 0, &idx, error_r) < 0)
		return NULL;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL || ms_idx_dump(idx, f) < 0) {
		*error_r = "index dump failed";
		if (f)
			fclose(f);
		free(buf);
		ms_idx_close(&idx);
		return NULL;
	}
	fclose(f);
	ms_idx_close(&idx);
	return buf;
}

/*
 * Compare the index in idxdir with the log: 0 agree, 1 they differ
 * (*what_r says where), -1 could not check (*what_r says why).
 */
int index_check(const struct tool_store *ts, const char *idxopt,
		const char **what_r)
{
	static char what[8800];
	char idxdir[4200], tmp[] = "/tmp/mstore-verify-XXXXXX";
	const char *err = "";
	struct stat st;
	int ret = -1;

	index_dir(ts, idxopt, idxdir, sizeof(idxdir));
	snprintf(what, sizeof(what), "%s/data.mdb", idxdir);
	if (stat(what, &st) < 0) {
		snprintf(what, sizeof(what), "no index at %s", idxdir);
		*what_r = what;
		return -1;
	}
	struct ms_idx *idx;
	if (ms_idx_open(idxdir, 0, &idx, &err) < 0) {
		snprintf(what, sizeof(what), "index %s: %s", idxdir, err);
		*what_r = what;
		return 1;
	}
	if (ms_idx_check(idx, &err) < 0) {
		snprintf(what, sizeof(what), "index %s: %s", idxdir, err);
		ms_idx_close(&idx);
		*what_r = what;
		return 1;
	}
	ms_idx_close(&idx);
	if (mkdtemp(tmp) == NULL) {
		*what_r = "mkdtemp failed";
		return -1;
	}
	struct ms_log_cfg cfg = { .dir = { ts->copy[0], ts->copy[1] },
				  .readonly = 1 };
	struct ms_log *log;
	char *live = NULL, *fresh = NULL;
	if (ms_log_open(&cfg, &log, &err) < 0 ||
	    ms_idx_rebuild(tmp, 0, log, &err) < 0) {
		snprintf(what, sizeof(what), "rebuild for comparison: %s", err);
		*what_r = what;
		goto out;
	}
	ms_log_close(&log);
	live = dump_of(idxdir, &err);
	fresh = dump_of(tmp, &err);
	if (live == NULL || fresh == NULL) {
		snprintf(what, sizeof(what), "%s", err);
		*what_r = what;
		goto out;
	}
	ret = strcmp(live, fresh) != 0;
	if (ret) {
		/* name the first line that differs */
		size_t i = 0, line = 1, start = 0;
		while (live[i] && live[i] == fresh[i]) {
			if (live[i] == '\n') {
				line++;
				start = i + 1;
			}
			i++;
		}
		const char *nl = strchr(live + start, '\n');
		int len = nl ? (int)(nl - live - (long)start) : 80;
		snprintf(what, sizeof(what),
			 "index differs from a rebuild from the log at dump "
			 "line %zu: %.*s",
			 line, len > 200 ? 200 : len, live + start);
		*what_r = what;
	}
out:
	free(live);
	free(fresh);
	unlink(ms_errf("%s/data.mdb", tmp));
	unlink(ms_errf("%s/lock.mdb", tmp));
	rmdir(tmp);
	return ret;
}
