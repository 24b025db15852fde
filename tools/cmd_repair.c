/*
 * cmd_repair - `mstore repair DIR`: open the store with recovery (torn
 * tails to lost+found, missing or damaged segments rebuilt from the other
 * copy, copies made equal), then scrub every segment: each record is read
 * on both copies and a bad one is rewritten from the good one.  A record
 * bad on both copies cannot be repaired: it is reported with its
 * segment:offset and the exit status is 1.  Run it with mstored stopped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "msg.h"
#include "tools.h"

int cmd_repair(int argc, char **argv)
{
	const char *dir = NULL, *secondary = NULL;
	struct tool_store ts;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (argv[i][0] != '-' && dir == NULL)
			dir = argv[i];
		else
			goto usage;
	}
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	if (ts.copy[1] == NULL) {
		fprintf(stderr, "mstore repair: %s has one copy; nothing to "
				"repair from (use --secondary)\n",
			dir);
		return TOOL_FAILED;
	}
	/* a DR replica too: repair appends no record, it rewrites a bad
	   record with the other copy's very same bytes (and recovery cuts
	   only what was never durable), so the DR copy stays the primary's
	   bytes */
	struct ms_log_cfg cfg = { .dir = { ts.copy[0], ts.copy[1] },
				  .engine = MS_IO_PSYNC,
				  .create = 1,
				  .replica_ok = 1 };
	struct ms_log *log;
	const char *err;
	int ret = ms_log_open(&cfg, &log, &err);
	if (ret < 0) {
		/* damage recovery will not cut is a finding, not a failure to
		   run */
		printf("UNREPAIRABLE %s\n", err);
		return ret == MS_ECORRUPT ? TOOL_PROBLEMS : TOOL_FAILED;
	}
	size_t nsegs;
	const uint64_t *segs = ms_log_segments(log, &nsegs);
	struct ms_scrub_stats st = { 0 };
	int unrepaired = 0;
	for (size_t i = 0; i < nsegs; i++) {
		tool_progress("repair", i, nsegs);
		if (ms_log_scrub(log, segs[i], &st, &err) < 0) {
			tool_progress_end();
			printf("UNREPAIRABLE %s\n", err);
			unrepaired++;
		}
	}
	tool_progress_end();
	struct ms_log_status ls;
	ms_log_get_status(log, &ls);
	printf("repair: %zu segments, %" PRIu64 " records checked on both "
	       "copies, %" PRIu64 " rewritten, %d unrepairable\n",
	       nsegs, st.records, st.healed, unrepaired);
	for (int c = 0; c < ls.ncopies; c++)
		if (ls.copy[c] != MS_COPY_OK) {
			printf("copy %s FAILED: %s\n", ls.copy_dir[c],
			       ls.copy_error[c]);
			unrepaired++;
		}
	ms_log_close(&log);
	return unrepaired ? TOOL_PROBLEMS : TOOL_OK;
usage:
	fprintf(stderr, "usage: mstore repair DIR [--secondary DIR2]\n");
	return TOOL_FAILED;
}
