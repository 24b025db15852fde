/*
 * cmd_user - `mstore -c FILE user add|list NAME` and `mstore -c FILE
 * stats`: online administration through mstored's admin socket (the
 * socket of the config's [store] section).  Exit 0 done, 1 the daemon
 * refused (the reason is printed), 2 could not run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cfg.h"
#include "client.h"
#include "idx.h"
#include "log.h"
#include "store_cfg.h"
#include "tools.h"

/* users asked for per USER_LIST page (a page may hold fewer: the
   store's reply limit) */
#define USER_LIST_PAGE 10000

struct ms_client *tool_admin_connect(void)
{
	const struct ms_store_cfg *cfg = tool_cfg();
	struct ms_client *c;
	const char *err;

	if (cfg == NULL) {
		fprintf(stderr, "mstore: this command talks to mstored: give "
				"-c mstore.conf\n");
		return NULL;
	}
	if (ms_client_connect(cfg->admin_socket, 30000, &c, &err) < 0) {
		fprintf(stderr, "mstore: mstored at %s: %s\n",
			cfg->admin_socket, err);
		return NULL;
	}
	if (ms_client_hello(c, NULL, &err) < 0) {
		fprintf(stderr, "mstore: mstored at %s: %s\n",
			cfg->admin_socket, err);
		ms_client_close(&c);
		return NULL;
	}
	return c;
}

int cmd_user(int argc, char **argv)
{
	struct ms_req q;
	struct ms_reply rep;
	const char *err = "";
	int ret;

	int add = argc == 3 && strcmp(argv[1], "add") == 0;
	int del = argc == 3 && strcmp(argv[1], "del") == 0;
	int list = argc == 2 && strcmp(argv[1], "list") == 0;
	if (!add && !del && !list) {
		fprintf(stderr, "usage: mstore -c FILE user add NAME | user del "
				"NAME | user list\n");
		return TOOL_FAILED;
	}
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	if (add || del) {
		q = (struct ms_req){ .op = add ? MS_OP_USER_CREATE
					       : MS_OP_USER_DELETE };
		q.u.user.name = ms_pstr_c(argv[2]);
		ret = ms_client_request(c, &q, &rep, &err);
		if (ret == 0 && add)
			printf("user %s created (id %" PRIu64 ", with INBOX)\n",
			       argv[2], rep.u.user_id);
		else if (ret == 0)
			printf("user %s deleted with all its mail\n", argv[2]);
	} else {
		/* by pages, in id order, until an empty one */
		uint64_t after = 0;
		int more = 1;
		while (more) {
			q = (struct ms_req){ .op = MS_OP_USER_LIST };
			q.u.list.paged = 1;
			q.u.list.after_id = after;
			q.u.list.max = USER_LIST_PAGE;
			if ((ret = ms_client_request(c, &q, &rep, &err)) < 0)
				break;
			struct ms_proto_iter it;
			struct ms_user_info u;
			ms_proto_iter_users(&it, &rep.u.users);
			more = 0;
			while ((ret = ms_proto_next_user(&it, &u)) > 0) {
				printf("%" PRIu64 " %.*s\n", u.user_id,
				       (int)u.name.len, u.name.s);
				after = u.user_id;
				more = 1;
			}
			if (ret < 0) {
				err = "a malformed user list";
				break;
			}
		}
	}
	/* err may point into the client: report before closing it */
	if (ret < 0)
		fprintf(stderr, "mstore user: %s\n", err);
	ms_client_close(&c);
	if (ret < 0)
		return ret == rep.status ? TOOL_PROBLEMS : TOOL_FAILED;
	return TOOL_OK;
}

/*
 * Offline: what the log and the index hold, from the files (mstored may
 * run: both are opened read-only).
 */
static int stats_offline(const char *dir, const char *secondary)
{
	struct tool_store ts;
	const char *err = "";
	uint64_t count[MS_REC_TYPE_MAX + 1] = { 0 };
	uint64_t bytes[MS_REC_TYPE_MAX + 1] = { 0 };

	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	struct ms_log_cfg lc = { .dir = { ts.copy[0], ts.copy[1] },
				 .readonly = 1 };
	struct ms_log *log;
	if (ms_log_open(&lc, &log, &err) < 0) {
		fprintf(stderr, "mstore stats: %s\n", err);
		return TOOL_FAILED;
	}
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *p;
	int ret;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, &err)) == 1) {
		count[h.type]++;
		bytes[h.type] += MS_REC_HDR_SIZE + h.len;
	}
	ms_log_iter_free(&it);
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	printf("log.segments %" PRIu64 "\nlog.durable_seq %" PRIu64
	       "\nlog.timeline %" PRIu64 "\n",
	       st.nsegs, st.durable_seq, st.timeline);
	for (unsigned t = 1; t <= MS_REC_TYPE_MAX; t++)
		if (count[t] != 0)
			printf("log.records.%s %" PRIu64 "\nlog.bytes.%s %" PRIu64
			       "\n",
			       ms_rec_type_name(t), count[t],
			       ms_rec_type_name(t), bytes[t]);
	if (ret < 0)
		printf("log.unreadable %s\n", err);
	ms_log_close(&log);

	const struct ms_store_cfg *cfg = tool_cfg();
	char idxdir[4200];
	if (cfg != NULL && cfg->index != NULL)
		snprintf(idxdir, sizeof(idxdir), "%s", cfg->index);
	else
		snprintf(idxdir, sizeof(idxdir), "%s/index", ts.primary);
	struct ms_idx *idx;
	struct ms_idx_rd *rd;
	struct ms_idx_stats is;
	struct stat sb;
	char data[4300];
	/* look first: opening would create an empty index */
	snprintf(data, sizeof(data), "%s/data.mdb", idxdir);
	if (stat(data, &sb) < 0) {
		printf("index.unavailable no index at %s\n", idxdir);
		return ret < 0 ? TOOL_PROBLEMS : TOOL_OK;
	}
	if (ms_idx_open(idxdir, 0, &idx, &err) < 0) {
		printf("index.unavailable %s\n", err);
		return ret < 0 ? TOOL_PROBLEMS : TOOL_OK;
	}
	if (ms_idx_read_begin(idx, &rd) == 0) {
		if (ms_idx_stats(rd, &is) == 0)
			printf("index.applied_seq %" PRIu64 "\nindex.users %" PRIu64
			       "\nindex.mailboxes %" PRIu64
			       "\nindex.messages %" PRIu64
			       "\nindex.expunged %" PRIu64
			       "\nindex.bodies %" PRIu64
			       "\nindex.anomalies %" PRIu64
			       "\nindex.map_used %" PRIu64 "\n",
			       is.applied_seq, is.users, is.mailboxes,
			       is.messages, is.expunged, is.bodies,
			       is.anomalies, is.map_used);
		ms_idx_read_end(&rd);
	}
	ms_idx_close(&idx);
	return ret < 0 ? TOOL_PROBLEMS : TOOL_OK;
}

/* `mstore -c FILE stats` asks mstored; `mstore stats DIR` (or
   --offline) reads the files. */
int cmd_stats(int argc, char **argv)
{
	struct ms_req q = { .op = MS_OP_STATUS };
	struct ms_reply rep;
	const char *err = "", *dir = NULL, *secondary = NULL;
	int offline = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--offline") == 0)
			offline = 1;
		else if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (argv[i][0] != '-' && dir == NULL)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: mstore -c FILE stats | mstore "
					"[-c FILE] stats DIR|--offline\n");
			return TOOL_FAILED;
		}
	}
	if (offline || dir != NULL)
		return stats_offline(dir, secondary);
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	int ret = ms_client_request(c, &q, &rep, &err);
	struct ms_proto_iter it;
	struct ms_counter k;
	ms_proto_iter_counters(&it, &rep.u.counters);
	while (ret == 0 && ms_proto_next_counter(&it, &k) > 0)
		printf("%.*s %" PRIu64 "\n", (int)k.key.len, k.key.s, k.value);
	if (ret < 0)
		fprintf(stderr, "mstore stats: %s\n", err);
	ms_client_close(&c);
	return ret < 0 ? TOOL_FAILED : TOOL_OK;
}

/* --flags seen,answered,flagged,deleted,draft (comma-separated) */
static int parse_flags(const char *s, uint32_t *flags_r)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{ "seen", MS_EVENT_FLAG_SEEN },
		{ "answered", MS_EVENT_FLAG_ANSWERED },
		{ "flagged", MS_EVENT_FLAG_FLAGGED },
		{ "deleted", MS_EVENT_FLAG_DELETED },
		{ "draft", MS_EVENT_FLAG_DRAFT },
	};
	uint32_t f = 0;
	while (*s != '\0') {
		size_t n = strcspn(s, ",");
		size_t i;
		for (i = 0; i < MS_ARRAY_SIZE(names); i++)
			if (strlen(names[i].name) == n &&
			    strncmp(names[i].name, s, n) == 0)
				break;
		if (i == MS_ARRAY_SIZE(names))
			return -1;
		f |= names[i].bit;
		s += n;
		if (*s == ',')
			s++;
	}
	*flags_r = f;
	return 0;
}

/* `mstore -c FILE deliver USER MAILBOX FILE [--flags LIST] [--keyword
   KW]... [--received UNIXTIME]`: an admin APPEND. */
int cmd_deliver(int argc, char **argv)
{
	struct ms_buf body;
	const char *err = "";
	struct ms_pstr kws[32];
	uint32_t nkw = 0, flags = 0;
	uint64_t received = 0;
	int nargs = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--flags") == 0 && i + 1 < argc) {
			if (parse_flags(argv[++i], &flags) < 0)
				goto usage;
		} else if (strcmp(argv[i], "--keyword") == 0 && i + 1 < argc &&
			   nkw < MS_ARRAY_SIZE(kws)) {
			kws[nkw++] = ms_pstr_c(argv[++i]);
		} else if (strcmp(argv[i], "--received") == 0 && i + 1 < argc) {
			i++;
			if (ms_parse_u64(argv[i], strlen(argv[i]), &received) <
			    0)
				goto usage;
		} else if (argv[i][0] == '-' || nargs == 4) {
			goto usage;
		} else {
			argv[nargs++] = argv[i];
		}
	}
	if (nargs != 4) {
usage:
		fprintf(stderr, "usage: mstore -c FILE deliver USER MAILBOX "
				"MESSAGE-FILE [--flags seen,answered,flagged,"
				"deleted,draft] [--keyword KW]... [--received "
				"UNIXTIME]\n");
		return TOOL_FAILED;
	}
	FILE *f = fopen(argv[3], "rb");
	if (f == NULL) {
		perror(argv[3]);
		return TOOL_FAILED;
	}
	ms_buf_init(&body, MS_PROTO_MAX_FRAME_DEFAULT);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (ms_buf_append(&body, chunk, n) < 0) {
			fprintf(stderr, "mstore deliver: message too large\n");
			fclose(f);
			ms_buf_free(&body);
			return TOOL_FAILED;
		}
	fclose(f);
	struct ms_client *c = tool_admin_connect();
	if (c == NULL) {
		ms_buf_free(&body);
		return TOOL_FAILED;
	}
	struct ms_placement pl = { .user = ms_pstr_c(argv[1]),
				   .mailbox = ms_pstr_c(argv[2]),
				   .flags = flags,
				   .received = (int64_t)received };
	pl.keywords.n = nkw;
	pl.keywords.list = nkw ? kws : NULL;
	struct ms_req q = { .op = MS_OP_APPEND };
	struct ms_reply rep;
	q.u.append.body = body.data;
	q.u.append.body_len = (uint32_t)body.len;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	int ret = ms_client_request(c, &q, &rep, &err);
	struct ms_proto_iter it;
	struct ms_append_result r = { .status = ret };
	if (ret == 0) {
		ms_proto_iter_results(&it, &rep.u.append);
		if (ms_proto_next_result(&it, &r) <= 0)
			r.status = -EPROTO;
	}
	if (ret == 0 && r.status == 0)
		printf("delivered to %s/%s: uid %u (uidvalidity %u)\n",
		       argv[1], argv[2], r.uid, r.uidvalidity);
	else if (ret == 0)
		fprintf(stderr, "mstore deliver: %.*s\n", (int)r.reason.len,
			r.reason.s);
	else
		fprintf(stderr, "mstore deliver: %s\n", err);
	ms_client_close(&c);
	ms_buf_free(&body);
	return ret < 0 && ret != rep.status ? TOOL_FAILED
	       : r.status != 0		    ? TOOL_PROBLEMS
					    : TOOL_OK;
}

/* `mstore -c FILE quota USER [BYTES MESSAGES]`: show, or set (0 = none). */
int cmd_quota(int argc, char **argv)
{
	struct ms_req q = { .op = MS_OP_QUOTA_GET };
	struct ms_reply rep;
	const char *err = "";
	uint64_t bytes = 0, msgs = 0;

	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: mstore -c FILE quota USER [MAX-BYTES "
				"MAX-MESSAGES]   (sizes like 10G; 0 = no "
				"limit)\n");
		return TOOL_FAILED;
	}
	if (argc == 4 &&
	    (ms_parse_size(argv[2], strlen(argv[2]), &bytes) < 0 ||
	     ms_parse_u64(argv[3], strlen(argv[3]), &msgs) < 0)) {
		fprintf(stderr, "mstore quota: bad limits '%s' '%s'\n", argv[2],
			argv[3]);
		return TOOL_FAILED;
	}
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	q.u.quota.user = ms_pstr_c(argv[1]);
	if (argc == 4) {
		q.op = MS_OP_QUOTA_SET;
		q.u.quota.max_bytes = bytes;
		q.u.quota.max_messages = msgs;
	}
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret == 0 && argc == 2 && rep.u.quota.have_mailboxes)
		printf("user %s: %" PRIu64 " of %" PRIu64 " bytes, %" PRIu64
		       " of %" PRIu64 " messages, %" PRIu64 " of %" PRIu64
		       " mailboxes (0: no limit)\n",
		       argv[1], rep.u.quota.used_bytes, rep.u.quota.max_bytes,
		       rep.u.quota.used_messages, rep.u.quota.max_messages,
		       rep.u.quota.mailboxes, rep.u.quota.max_mailboxes);
	else if (ret == 0 && argc == 2)
		printf("user %s: %" PRIu64 " of %" PRIu64 " bytes, %" PRIu64
		       " of %" PRIu64 " messages (0: no limit)\n",
		       argv[1], rep.u.quota.used_bytes, rep.u.quota.max_bytes,
		       rep.u.quota.used_messages, rep.u.quota.max_messages);
	else if (ret == 0)
		printf("user %s: quota set\n", argv[1]);
	if (ret < 0)
		fprintf(stderr, "mstore quota: %s\n", err);
	ms_client_close(&c);
	if (ret < 0)
		return ret == rep.status ? TOOL_PROBLEMS : TOOL_FAILED;
	return TOOL_OK;
}
