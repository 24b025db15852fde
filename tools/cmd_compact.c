/*
 * cmd_compact - `mstore -c FILE undelete USER MAILBOX [--since WHEN]` and
 * `mstore -c FILE compact [--threshold PERMILLE] [--purge-only]
 * [--offline]`: online through mstored's admin socket (mstored is the
 * only writer), or with --offline on a store no mstored runs on.  Exit 0
 * done, 1 the daemon refused (the reason is printed), 2 could not run.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "msg.h"
#include "ops.h"
#include "store_cfg.h"
#include "tools.h"

/* unix seconds; YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC); N{s,m,h,d} ago */
static int parse_when(const char *s, int64_t *t_r)
{
	char *end;
	size_t len = strlen(s);

	if (len == 0 || len > 32)
		return -1;
	if (isdigit((unsigned char)s[len - 1]) && strchr(s, '-') == NULL) {
		unsigned long long v = strtoull(s, &end, 10);
		if (*end != '\0' || v > (unsigned long long)MS_PROTO_TIME_MAX)
			return -1;
		*t_r = (int64_t)v;
		return 0;
	}
	if (strchr("smhd", s[len - 1]) != NULL &&
	    isdigit((unsigned char)s[0])) {
		unsigned long long v = strtoull(s, &end, 10);
		static const struct {
			char c;
			uint64_t mul;
		} unit[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
		if (end != s + len - 1 || v > 100ULL * 365 * 86400)
			return -1;
		for (size_t i = 0; i < sizeof(unit) / sizeof(unit[0]); i++) {
			if (unit[i].c == s[len - 1]) {
				int64_t now = (int64_t)time(NULL);
				*t_r = now - (int64_t)(v * unit[i].mul);
				if (*t_r < 0)
					*t_r = 0;
				return 0;
			}
		}
		return -1;
	}
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end == NULL || *end != '\0') {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%d", &tm);
	}
	if (end == NULL || *end != '\0')
		return -1;
	time_t t = timegm(&tm);
	if (t < 0 || (int64_t)t > MS_PROTO_TIME_MAX)
		return -1;
	*t_r = (int64_t)t;
	return 0;
}

int cmd_undelete(int argc, char **argv)
{
	struct ms_req q = {.op = MS_OP_UNDELETE};
	struct ms_reply rep = {0};
	const char *err = "";
	int64_t since = 0;

	if (argc == 5 && strcmp(argv[3], "--since") == 0) {
		if (parse_when(argv[4], &since) < 0) {
			fprintf(stderr,
				"mstore undelete: --since %s: not a "
				"time (unix seconds, YYYY-MM-DD"
				"[THH:MM:SS] UTC, or 30m/2h/3d ago)\n",
				argv[4]);
			return TOOL_FAILED;
		}
	} else if (argc != 3) {
		fprintf(stderr, "usage: mstore -c FILE undelete USER MAILBOX "
				"[--since WHEN]\n");
		return TOOL_FAILED;
	}
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	q.u.undelete.user = ms_pstr_c(argv[1]);
	q.u.undelete.mailbox = ms_pstr_c(argv[2]);
	q.u.undelete.since = since;
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret == 0) {
		struct ms_proto_iter it;
		struct ms_uid_pair pr;
		ms_proto_iter_pairs(&it, &rep.u.copy.pairs);
		while (ms_proto_next_pair(&it, &pr) > 0)
			printf("uid %u restored as uid %u\n", pr.src_uid,
			       pr.dst_uid);
		printf("%u messages restored in %s of %s (uidvalidity %u)\n",
		       rep.u.copy.pairs.n, argv[2], argv[1],
		       rep.u.copy.uidvalidity);
	} else {
		fprintf(stderr, "mstore undelete: %s\n", err);
	}
	ms_client_close(&c);
	if (ret < 0)
		return ret == rep.status ? TOOL_PROBLEMS : TOOL_FAILED;
	return TOOL_OK;
}

/* No mstored: open the store as mstored would (its lock keeps a
   running daemon out) and do the same work. */
static int compact_offline(uint32_t threshold, int purge_only)
{
	const struct ms_store_cfg *cfg = tool_cfg();
	struct ms_compact_result res;
	struct ms_ops *ops;
	const char *err = "";

	if (cfg == NULL) {
		fprintf(stderr, "mstore compact --offline: give -c "
				"mstore.conf\n");
		return TOOL_FAILED;
	}
	if (ms_ops_open(cfg, &ops, &err) < 0) {
		fprintf(stderr, "mstore compact: %s\n", err);
		return TOOL_FAILED;
	}
	int ret = ms_ops_compact(ops, threshold, purge_only, &res, &err);
	if (ret < 0)
		fprintf(stderr, "mstore compact: %s (%s)\n", err,
			ms_strerror(ret));
	ms_ops_close(&ops);
	if (ret < 0)
		return TOOL_PROBLEMS;
	printf("purged_before %" PRIu64 "\nsegments_scanned %" PRIu64
	       "\nsegments_compacted %" PRIu64 "\nrecords_dropped %" PRIu64
	       "\nbytes_dropped %" PRIu64 "\nmore %" PRIu64 "\n",
	       res.purged_before, res.scanned, res.compacted, res.dropped,
	       res.bytes, res.more);
	return TOOL_OK;
}

int cmd_compact(int argc, char **argv)
{
	struct ms_req q = {.op = MS_OP_COMPACT};
	struct ms_reply rep = {0};
	const char *err = "";
	int offline = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--offline") == 0) {
			offline = 1;
		} else if (strcmp(argv[i], "--purge-only") == 0) {
			q.u.compact.purge_only = 1;
		} else if (strcmp(argv[i], "--threshold") == 0 &&
			   i + 1 < argc) {
			char *end;
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (*end != '\0' || v == 0 || v > 1000) {
				fprintf(stderr, "mstore compact: --threshold "
						"is 1..1000 per mille\n");
				return TOOL_FAILED;
			}
			q.u.compact.threshold = (uint32_t)v;
		} else {
			fprintf(stderr, "usage: mstore -c FILE compact "
					"[--threshold PERMILLE] "
					"[--purge-only] [--offline]\n");
			return TOOL_FAILED;
		}
	}
	if (offline)
		return compact_offline(q.u.compact.threshold,
				       q.u.compact.purge_only);
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret == 0) {
		struct ms_proto_iter it;
		struct ms_counter k;
		ms_proto_iter_counters(&it, &rep.u.counters);
		while (ms_proto_next_counter(&it, &k) > 0)
			printf("%.*s %" PRIu64 "\n", (int)k.key.len, k.key.s,
			       k.value);
	} else {
		fprintf(stderr, "mstore compact: %s\n", err);
	}
	ms_client_close(&c);
	if (ret < 0)
		return ret == rep.status ? TOOL_PROBLEMS : TOOL_FAILED;
	return TOOL_OK;
}
