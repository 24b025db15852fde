/*
 * cmd_promote - `mstore -c FILE promote [--offline]`: make the DR store
 * the writer (docs/replication.md, "Failover").  Online: PROMOTE to the
 * standby mstored's admin socket; it opens the store read-write (which
 * fails while udsync recv holds the store: stop it first), writes a
 * TIMELINE record (new timeline = old + 1, fork seq = the last seq
 * received, this store's id) and accepts writes from then on.  Offline
 * (--offline, or no mstored answering): the same on the store directly.
 * On a DR replica (mstore.replica) the TIMELINE record is what ends it:
 * the marker is cleared once the record is durable (ms_ops_timeline).
 * Prints the new timeline and the fork seq.  Exit 0 done, 1 refused, 2
 * could not run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "msg.h"
#include "ops.h"
#include "store_cfg.h"
#include "tools.h"

static int promote_offline(void)
{
	const struct ms_store_cfg *cfg = tool_cfg();
	struct ms_ops *ops;
	const char *err = "";
	uint64_t tl = 0, fork = 0;

	if (cfg == NULL) {
		fprintf(stderr, "mstore promote --offline: give -c "
				"mstore.conf\n");
		return TOOL_FAILED;
	}
	if (ms_ops_open_promote(cfg, &ops, &err) < 0) {
		fprintf(stderr, "mstore promote: %s\n", err);
		return TOOL_FAILED;
	}
	int ret = ms_ops_timeline(ops, &tl, &fork, &err);
	if (ret < 0)
		fprintf(stderr, "mstore promote: %s (%s)\n", err,
			ms_strerror(ret));
	ms_ops_close(&ops);
	if (ret < 0)
		return TOOL_PROBLEMS;
	printf("timeline %" PRIu64 "\nfork_seq %" PRIu64 "\n", tl, fork);
	return TOOL_OK;
}

int cmd_promote(int argc, char **argv)
{
	struct ms_req q = { .op = MS_OP_PROMOTE };
	struct ms_reply rep = { 0 };
	const char *err = "";
	int offline = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--offline") == 0) {
			offline = 1;
		} else {
			fprintf(stderr, "usage: mstore -c FILE promote "
					"[--offline]\n");
			return TOOL_FAILED;
		}
	}
	if (offline)
		return promote_offline();
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret == 0)
		printf("timeline %" PRIu64 "\nfork_seq %" PRIu64 "\n",
		       rep.u.repl.timeline,
		       rep.u.repl.seq > 0 ? rep.u.repl.seq - 1 : 0);
	else
		fprintf(stderr, "mstore promote: %s\n", err);
	ms_client_close(&c);
	if (ret < 0)
		return ret == rep.status ? TOOL_PROBLEMS : TOOL_FAILED;
	return TOOL_OK;
}
