/*
 * crash_mstored - kill -9 of mstored under concurrent append load.
 *
 * Each round, four client processes append messages (content derived
 * from round, client and count; flags from the count) to the same
 * mailbox and report every append the daemon acknowledged, with its
 * UID, on a pipe.  After a random delay the daemon is killed with
 * SIGKILL and started again.  Every acknowledged append must then be
 * there with its UID, its flags and its exact bytes, and UIDs must stay
 * unique.  Every tenth round, and at the end, the daemon is stopped and
 * `mstore verify` must find both copies clean, and the index must equal
 * one rebuilt from the log alone.
 * A fifth process fills and empties Trash and asks for compaction all
 * the time (with an undelete window of 0), so that kills land in the
 * middle of compactions too: before, between and after the rewrite of
 * the copies and the RETIRE record.
 * Rounds: 50 (MS_ROUNDS; 500 with MS_STRESS); seed MS_SEED.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "idx.h"
#include "log.h"
#include "msd.h"
#include "msg.h"
#include "mstest.h"

#define NWRITERS 4
#define MAXLEN 5000

struct ack {
	uint32_t uid;
	uint32_t flags;
	uint64_t key;
	uint32_t len;
};

static uint32_t msg_len(uint64_t key)
{
	uint64_t s = key;
	return 1 + (uint32_t)(mst_rand(&s) % MAXLEN);
}

static void writer(struct msd *d, int fd, uint64_t base)
{
	struct ms_client *c;
	const char *err;
	static uint8_t buf[MAXLEN];
	if (ms_client_connect(d->sock, 10000, &c, &err) < 0 ||
	    ms_client_hello(c, "kim", &err) < 0)
		_exit(0);
	for (uint64_t i = 0;; i++) {
		uint64_t key = base + i;
		uint32_t len = msg_len(key);
		uint32_t flags = (uint32_t)(i % 4);
		mst_fill(buf, len, key);
		struct ms_placement pl = { .mailbox = MS_PSTR("INBOX"),
					   .flags = flags };
		struct ms_req q = { .op = MS_OP_APPEND };
		struct ms_reply rep;
		q.u.append.body = buf;
		q.u.append.body_len = len;
		q.u.append.placements.n = 1;
		q.u.append.placements.list = &pl;
		if (ms_client_request(c, &q, &rep, &err) != 0)
			_exit(0); /* the daemon died: stop */
		struct ms_proto_iter it;
		struct ms_append_result r;
		ms_proto_iter_results(&it, &rep.u.append);
		if (ms_proto_next_result(&it, &r) != 1 || r.status != 0)
			_exit(0);
		struct ack a = { r.uid, flags, key, len };
		if (write(fd, &a, sizeof(a)) != sizeof(a))
			_exit(0);
	}
}

/* Fill Trash, empty it, compact; until the daemon dies. */
static void compactor(struct msd *d, uint64_t key)
{
	struct ms_client *c, *adm;
	const char *err;
	static uint8_t buf[40000];
	if (ms_client_connect(d->sock, 10000, &c, &err) < 0 ||
	    ms_client_hello(c, "kim", &err) < 0 ||
	    ms_client_connect(d->asock, 10000, &adm, &err) < 0 ||
	    ms_client_hello(adm, NULL, &err) < 0)
		_exit(0);
	for (uint64_t i = 0;; i++) {
		struct ms_req q = { .op = MS_OP_APPEND };
		struct ms_reply rep;
		struct ms_placement pl = { .mailbox = MS_PSTR("Trash") };
		mst_fill(buf, sizeof(buf), key + i);
		q.u.append.body = buf;
		q.u.append.body_len = sizeof(buf);
		q.u.append.placements.n = 1;
		q.u.append.placements.list = &pl;
		for (int k = 0; k < 4; k++)
			if (ms_client_request(c, &q, &rep, &err) < 0)
				_exit(0);
		q = (struct ms_req){ .op = MS_OP_MBOX_STATUS };
		q.u.mbox.name = MS_PSTR("Trash");
		if (ms_client_request(c, &q, &rep, &err) < 0)
			_exit(0);
		struct ms_uid_range all = { 1, rep.u.mbox.uidnext - 1 };
		q = (struct ms_req){ .op = MS_OP_EXPUNGE };
		q.u.uids.mailbox = MS_PSTR("Trash");
		q.u.uids.uids.n = 1;
		q.u.uids.uids.list = &all;
		if (ms_client_request(c, &q, &rep, &err) < 0)
			_exit(0);
		q = (struct ms_req){ .op = MS_OP_COMPACT };
		q.u.compact.threshold = 1000;
		if (ms_client_request(adm, &q, &rep, &err) < 0 &&
		    rep.status == 0)
			_exit(0);
	}
}

static struct ack *acks;
static size_t nacks, capacks;

static int fail(unsigned long round, const char *what)
{
	printf("FAIL round %lu: %s\n", round, what);
	return 1;
}

static int check_all(struct msd *d, unsigned long round)
{
	struct ms_client *c = msd_connect(d, "kim");
	struct ms_buf body;
	const char *err;
	static uint8_t want[MAXLEN];
	int bad = 0;
	ms_buf_init(&body, 0);
	for (size_t i = 0; i < nacks && !bad; i++) {
		struct ms_uid_range r = { acks[i].uid, acks[i].uid };
		struct ms_req q = { .op = MS_OP_FETCH_META };
		struct ms_reply rep;
		q.u.uids.mailbox = MS_PSTR("INBOX");
		q.u.uids.uids.n = 1;
		q.u.uids.uids.list = &r;
		struct ms_proto_iter it;
		struct ms_msg_meta m;
		if (ms_client_request(c, &q, &rep, &err) != 0 ||
		    rep.u.metas.n != 1) {
			bad = fail(round, ms_errf("acked uid %u is missing",
						  acks[i].uid));
			break;
		}
		ms_proto_iter_metas(&it, &rep.u.metas);
		ms_proto_next_meta(&it, &m);
		if (m.flags != acks[i].flags || m.physical_size != acks[i].len)
			bad = fail(round, ms_errf("uid %u: flags %u size %llu",
						  m.uid, m.flags,
						  (unsigned long long)
							  m.physical_size));
		if (ms_client_fetch_body(c, "INBOX", acks[i].uid, 0, &body,
					 &err) < 0) {
			bad = fail(round, ms_errf("uid %u body: %s",
						  acks[i].uid, err));
			break;
		}
		mst_fill(want, acks[i].len, acks[i].key);
		if (body.len != acks[i].len ||
		    memcmp(body.data, want, body.len) != 0)
			bad = fail(round, ms_errf("uid %u: body differs",
						  acks[i].uid));
	}
	ms_buf_free(&body);
	ms_client_close(&c);
	return bad;
}

static char *dump_index(const char *dir)
{
	struct ms_idx *idx;
	const char *err;
	char *buf = NULL;
	size_t len = 0;
	if (ms_idx_open(dir, 0, &idx, &err) < 0)
		return NULL;
	FILE *f = open_memstream(&buf, &len);
	ms_idx_dump(idx, f);
	fclose(f);
	ms_idx_close(&idx);
	return buf;
}

/* stopped daemon: both copies verify clean, index == rebuild */
static int check_offline(struct msd *d, unsigned long round)
{
	const char *b = getenv("MSTORE_BUILD");
	char cmd[4000];
	snprintf(cmd, sizeof(cmd),
		 "%s/mstore verify %s --secondary %s >/dev/null 2>&1",
		 b && *b ? b : "build", d->primary, d->secondary);
	if (system(cmd) != 0)
		return fail(round, "mstore verify did not find the store clean");
	char *live = dump_index(d->index);
	char fresh[1200];
	snprintf(fresh, sizeof(fresh), "%s/fresh-index", d->dir);
	mst_rmtree(fresh);
	struct ms_log_cfg lc = { .dir = { d->primary, d->secondary },
				 .readonly = 1 };
	struct ms_log *log;
	const char *err;
	if (ms_log_open(&lc, &log, &err) < 0 ||
	    ms_idx_rebuild(fresh, 0, log, &err) < 0)
		return fail(round, ms_errf("rebuild: %s", err));
	ms_log_close(&log);
	char *rebuilt = dump_index(fresh);
	int bad = live == NULL || rebuilt == NULL || strcmp(live, rebuilt) != 0;
	if (bad && live != NULL && rebuilt != NULL) {
		/* show where they part, for the failure report */
		char p1[1200], p2[1200];
		snprintf(p1, sizeof(p1), "%s/index.live", d->dir);
		snprintf(p2, sizeof(p2), "%s/index.rebuilt", d->dir);
		FILE *f1 = fopen(p1, "w"), *f2 = fopen(p2, "w");
		if (f1 && f2) {
			fputs(live, f1);
			fputs(rebuilt, f2);
		}
		if (f1)
			fclose(f1);
		if (f2)
			fclose(f2);
		snprintf(cmd, sizeof(cmd), "diff %s %s | head -20", p1, p2);
		(void)!system(cmd);
	}
	free(live);
	free(rebuilt);
	mst_rmtree(fresh);
	return bad ? fail(round, "the index differs from a rebuild") : 0;
}

int main(void)
{
	unsigned long rounds = mst_rounds(50, 500);
	uint64_t rs = mst_seed(0x6d73746f726564ULL);
	struct msd d;

	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1));
	signal(SIGPIPE, SIG_IGN);
	msd_setup(&d, "crash-mstored",
		  "segment_size = 1M\nundelete_window = 0\n"
		  "compact_interval = 0");
	msd_start(&d);
	if (msd_user_add(&d, "kim") != 0)
		return fail(0, "user add");
	{
		struct ms_client *c = msd_connect(&d, "kim");
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		struct ms_reply rep;
		const char *err;
		q.u.mbox.name = MS_PSTR("Trash");
		if (ms_client_request(c, &q, &rep, &err) != 0)
			return fail(0, "create Trash");
		ms_client_close(&c);
	}
	for (unsigned long r = 0; r < rounds; r++) {
		int pfd[2];
		pid_t kids[NWRITERS], comp;
		if (pipe(pfd) < 0)
			return fail(r, "pipe");
		for (int k = 0; k < NWRITERS; k++) {
			kids[k] = fork();
			if (kids[k] == 0) {
				close(pfd[0]);
				writer(&d, pfd[1],
				       ((uint64_t)r << 32) | ((uint64_t)k << 24));
			}
		}
		comp = fork();
		if (comp == 0) {
			close(pfd[0]);
			close(pfd[1]);
			compactor(&d, (uint64_t)r << 40);
		}
		close(pfd[1]);
		struct timespec ts = { 0, (long)(10 + mst_randn(&rs, 120)) *
						   1000000L };
		nanosleep(&ts, NULL);
		msd_kill(&d);
		for (int k = 0; k < NWRITERS; k++)
			waitpid(kids[k], NULL, 0);
		waitpid(comp, NULL, 0);
		struct ack a;
		while (read(pfd[0], &a, sizeof(a)) == sizeof(a)) {
			if (nacks == capacks) {
				capacks = capacks ? capacks * 2 : 1024;
				acks = realloc(acks, capacks * sizeof(*acks));
			}
			for (size_t i = 0; i < nacks; i++)
				if (acks[i].uid == a.uid)
					return fail(r, ms_errf("uid %u given "
							       "twice", a.uid));
			acks[nacks++] = a;
		}
		close(pfd[0]);
		msd_start(&d);
		if (check_all(&d, r))
			return 1;
		if (r % 10 == 9 || r + 1 == rounds || getenv("MS_CHECK_EVERY")) {
			if (msd_stop(&d) != 0)
				return fail(r, "mstored did not stop cleanly");
			if (check_offline(&d, r))
				return 1;
			msd_start(&d);
		}
	}
	msd_stop(&d);
	/* the kills must have met compactions */
	struct ms_log_cfg lc = { .dir = { d.primary, d.secondary },
				 .readonly = 1 };
	struct ms_log *log;
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *p;
	const char *err;
	unsigned long retires = 0, holes = 0;
	if (ms_log_open(&lc, &log, &err) < 0)
		return fail(rounds, err);
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while (ms_log_iter_next(it, &pos, &h, &p, &err) == 1) {
		retires += h.type == MS_REC_RETIRE;
		holes += h.type == MS_REC_HOLE;
	}
	ms_log_iter_free(&it);
	ms_log_close(&log);
	if (retires == 0 || holes == 0)
		return fail(rounds, "no compaction happened");
	printf("%lu kill -9 rounds of mstored passed, %zu acknowledged "
	       "appends all present; %lu compactions left %lu holes\n",
	       rounds, nacks, retires, holes);
	free(acks);
	return 0;
}
