/*
 * test_idx - the index, fed the way the daemon feeds it: records encoded
 * with ms_event_encode / ms_body_encode, appended to a real log (psync),
 * synced, then applied in log order through ms_log_iter, one index
 * transaction per batch.
 *
 * Covered: users, mailboxes, subscriptions, quota; placements, flags and
 * expunges with exact counters after each step; the change feed since a
 * modseq; body refcounts and live bytes per segment; rename keeps
 * UIDVALIDITY; anomalies are counted and leave no trace; idempotent
 * replay; rebuild equals the incremental index; catch-up after a close;
 * damaged, foreign and other-version index files refused; a map that
 * fills up grows; 100,000 placements in batches of 1000.  Undelete
 * (PLACE with restore_uid), PURGE by expunge time, RETIRE of a placed
 * body, and compaction: an index rebuilt from a log whose dead records
 * are HOLEs equals the live one, over two compaction rounds.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "body.h"
#include "event.h"
#include "idx.h"
#include "log.h"
#include "msg.h"
#include "mstest.h"
#include "mstest_cmocka.h"

#define TEST_MAP ((uint64_t)64 << 20)
#define SEEN MS_EVENT_FLAG_SEEN
#define FLAGGED MS_EVENT_FLAG_FLAGGED

struct tx {
	char *root;
	char logdir[1024], idxdir[1024];
	struct ms_log *log;
	struct ms_idx *idx;
	struct ms_body_ctx bctx;
	struct ms_buf buf;
	uint64_t last_seq;
	struct ms_pos last_pos;
	uint64_t last_len; /* header + payload of the last record */
	uint64_t now;      /* the time of EXPUNGE records */
};

static void tx_open_log(struct tx *x, uint64_t seg_size)
{
	struct ms_log_cfg cfg = {.dir = {x->logdir, NULL},
				 .seg_size = seg_size,
				 .engine = MS_IO_PSYNC,
				 .create = 1};
	const char *err = NULL;

	if (ms_log_open(&cfg, &x->log, &err) < 0)
		fail_msg("log open: %s", err);
}

static void tx_open_idx(struct tx *x)
{
	const char *err = NULL;
	int ret = ms_idx_open(x->idxdir, TEST_MAP, &x->idx, &err);

	if (ret < 0)
		fail_msg("idx open: %s", err);
}

static void tx_init(struct tx *x, const char *tag, uint64_t seg_size)
{
	memset(x, 0, sizeof(*x));
	x->root = mst_tmpdir(tag);
	snprintf(x->logdir, sizeof(x->logdir), "%s/log", x->root);
	snprintf(x->idxdir, sizeof(x->idxdir), "%s/idx", x->root);
	tx_open_log(x, seg_size);
	tx_open_idx(x);
	const struct ms_meta *m = ms_log_meta(x->log);
	CHECK_RET(ms_body_ctx_init(&x->bctx, m->store_id, m->salt, NULL, 1), 0,
		  "body ctx");
	ms_buf_init(&x->buf, 0);
	x->now = 1700000000;
}

static void tx_free(struct tx *x)
{
	ms_idx_close(&x->idx);
	ms_log_close(&x->log);
	ms_buf_free(&x->buf);
	ms_body_ctx_wipe(&x->bctx);
}

static uint64_t tx_append(struct tx *x, uint8_t type, uint8_t flags,
			  const void *p, size_t len)
{
	CHECK_RET(ms_log_append(x->log, type, flags, p, (uint32_t)len, NULL,
				NULL, &x->last_pos, &x->last_seq),
		  0, "append type %u", type);
	x->last_len = MS_REC_HDR_SIZE + len;
	return x->last_seq;
}

static uint64_t tx_ev(struct tx *x, const struct ms_event *ev)
{
	ms_buf_reset(&x->buf);
	CHECK_RET(ms_event_encode(ev, &x->buf), 0, "encode type %u", ev->type);
	return tx_append(x, ev->type, 0, x->buf.data, x->buf.len);
}

/* A body of len bytes made from n; its key in key_r. */
static uint64_t ev_body(struct tx *x, uint64_t n, size_t len, uint8_t key_r[32])
{
	uint8_t *plain = ms_malloc(len ? len : 1);
	uint8_t flags = 0;

	mst_fill(plain, len, n);
	/* compressible in part, so LZ4 is used for some */
	if (len > 256)
		memset(plain, 'a', len / 2);
	ms_body_dedup_key(&x->bctx, plain, len, key_r);
	ms_buf_reset(&x->buf);
	CHECK_RET(ms_body_encode(&x->bctx, plain, len, &x->buf, &flags), 0,
		  "body encode");
	free(plain);
	return tx_append(x, MS_REC_BODY, flags, x->buf.data, x->buf.len);
}

static uint64_t ev_user(struct tx *x, uint64_t id, const char *name)
{
	struct ms_event ev = {.type = MS_REC_USER_CREATE};
	ev.u.user_create.user_id = id;
	ev.u.user_create.name = (struct ms_event_str){name, strlen(name)};
	return tx_ev(x, &ev);
}

static uint64_t ev_user_del(struct tx *x, uint64_t id)
{
	struct ms_event ev = {.type = MS_REC_USER_DELETE};
	ev.u.user_delete.user_id = id;
	return tx_ev(x, &ev);
}

static uint64_t ev_mbox(struct tx *x, uint64_t user, uint64_t mbox,
			uint32_t uidvalidity, uint32_t su, const char *name)
{
	struct ms_event ev = {.type = MS_REC_MBOX_CREATE};
	ev.u.mbox_create.user_id = user;
	ev.u.mbox_create.mbox_id = mbox;
	ev.u.mbox_create.uidvalidity = uidvalidity;
	ev.u.mbox_create.special_use = su;
	ev.u.mbox_create.name = (struct ms_event_str){name, strlen(name)};
	return tx_ev(x, &ev);
}

static uint64_t ev_rename(struct tx *x, uint64_t user, uint64_t mbox,
			  const char *name)
{
	struct ms_event ev = {.type = MS_REC_MBOX_RENAME};
	ev.u.mbox_rename.user_id = user;
	ev.u.mbox_rename.mbox_id = mbox;
	ev.u.mbox_rename.new_name = (struct ms_event_str){name, strlen(name)};
	return tx_ev(x, &ev);
}

static uint64_t ev_mbox_del(struct tx *x, uint64_t user, uint64_t mbox)
{
	struct ms_event ev = {.type = MS_REC_MBOX_DELETE};
	ev.u.mbox_delete.user_id = user;
	ev.u.mbox_delete.mbox_id = mbox;
	return tx_ev(x, &ev);
}

static uint64_t ev_sub(struct tx *x, uint64_t user, int on, const char *name)
{
	struct ms_event ev = {.type = MS_REC_MBOX_SUBSCRIBE};
	ev.u.mbox_subscribe.user_id = user;
	ev.u.mbox_subscribe.subscribed = (uint8_t)on;
	ev.u.mbox_subscribe.name = (struct ms_event_str){name, strlen(name)};
	return tx_ev(x, &ev);
}

static uint64_t ev_quota(struct tx *x, uint64_t user, uint64_t maxb,
			 uint64_t maxm)
{
	struct ms_event ev = {.type = MS_REC_QUOTA};
	ev.u.quota.user_id = user;
	ev.u.quota.max_bytes = maxb;
	ev.u.quota.max_messages = maxm;
	return tx_ev(x, &ev);
}

/* Up to 4 keywords from a NULL-terminated list. */
static void kw_list(struct ms_event_keywords *k, struct ms_event_str *s,
		    const char *const *kws)
{
	uint32_t n = 0;

	for (; kws != NULL && kws[n] != NULL; n++)
		s[n] = (struct ms_event_str){kws[n], strlen(kws[n])};
	k->n = n;
	k->list = n ? s : NULL;
	k->packed = NULL;
}

/* A placement; restore_uid != 0: the undelete of that expunged uid. */
static uint64_t ev_place_r(struct tx *x, uint64_t user, uint64_t mbox,
			   uint32_t uid, uint64_t modseq, uint32_t flags,
			   const uint8_t key[32], uint64_t size,
			   const char *const *kws, uint32_t restore_uid)
{
	struct ms_event ev = {.type = MS_REC_PLACE};
	struct ms_event_place *p = &ev.u.place;
	struct ms_event_str s[8];

	p->user_id = user;
	p->mbox_id = mbox;
	p->uid = uid;
	p->modseq = modseq;
	p->flags = flags;
	p->received_date = 1700000000 + uid;
	p->save_date = 1700000100 + uid;
	memset(p->guid, (int)uid, sizeof(p->guid));
	memcpy(p->body_key, key, 32);
	p->body_seq = 1;
	p->physical_size = size;
	p->virtual_size = size + size / 50;
	p->restore_uid = restore_uid;
	kw_list(&p->keywords, s, kws);
	return tx_ev(x, &ev);
}

static uint64_t ev_place(struct tx *x, uint64_t user, uint64_t mbox,
			 uint32_t uid, uint64_t modseq, uint32_t flags,
			 const uint8_t key[32], uint64_t size,
			 const char *const *kws)
{
	return ev_place_r(x, user, mbox, uid, modseq, flags, key, size, kws, 0);
}

static uint64_t ev_flags(struct tx *x, uint64_t user, uint64_t mbox,
			 uint64_t modseq, uint8_t mode, uint32_t flags,
			 const char *const *kws, uint32_t lo, uint32_t hi)
{
	struct ms_event ev = {.type = MS_REC_FLAGS};
	struct ms_event_flags *f = &ev.u.flags;
	struct ms_event_str s[8];
	struct ms_event_range r = {lo, hi};

	f->user_id = user;
	f->mbox_id = mbox;
	f->modseq = modseq;
	f->mode = mode;
	f->flags = flags;
	kw_list(&f->keywords, s, kws);
	f->ranges = (struct ms_event_ranges){.n = 1, .list = &r};
	return tx_ev(x, &ev);
}

static uint64_t ev_expunge_ranges(struct tx *x, uint64_t user, uint64_t mbox,
				  uint64_t modseq,
				  const struct ms_event_range *r, uint32_t n)
{
	struct ms_event ev = {.type = MS_REC_EXPUNGE};
	ev.u.expunge.user_id = user;
	ev.u.expunge.mbox_id = mbox;
	ev.u.expunge.modseq = modseq;
	ev.u.expunge.time = x->now;
	ev.u.expunge.ranges = (struct ms_event_ranges){.n = n, .list = r};
	return tx_ev(x, &ev);
}

static uint64_t ev_expunge(struct tx *x, uint64_t user, uint64_t mbox,
			   uint64_t modseq, uint32_t lo, uint32_t hi)
{
	struct ms_event_range r = {lo, hi};
	return ev_expunge_ranges(x, user, mbox, modseq, &r, 1);
}

static uint64_t ev_update(struct tx *x, uint64_t user, uint64_t mbox,
			  uint32_t uidvalidity, uint32_t uidnext,
			  uint64_t highestmodseq, uint8_t guid_byte)
{
	struct ms_event ev = {.type = MS_REC_MBOX_UPDATE};
	ev.u.mbox_update.user_id = user;
	ev.u.mbox_update.mbox_id = mbox;
	ev.u.mbox_update.uidvalidity = uidvalidity;
	ev.u.mbox_update.uidnext = uidnext;
	ev.u.mbox_update.highestmodseq = highestmodseq;
	memset(ev.u.mbox_update.guid, guid_byte,
	       sizeof(ev.u.mbox_update.guid));
	return tx_ev(x, &ev);
}

static uint64_t ev_purge(struct tx *x, uint64_t before)
{
	struct ms_event ev = {.type = MS_REC_PURGE};
	ev.u.purge.before = before;
	return tx_ev(x, &ev);
}

static uint64_t ev_retire(struct tx *x, uint64_t seg, uint64_t sum,
			  const struct ms_event_drop *drops, uint32_t n)
{
	struct ms_event ev = {.type = MS_REC_RETIRE};
	ev.u.retire.seg = seg;
	ev.u.retire.sum = sum;
	ev.u.retire.drops = (struct ms_event_drops){.n = n, .list = drops};
	return tx_ev(x, &ev);
}

static uint64_t ev_simple(struct tx *x, uint8_t type)
{
	struct ms_event ev = {.type = type};
	static const struct ms_event_drop drops[] = {
		{.off = 64, .type = MS_REC_NOOP}};

	switch (type) {
	case MS_REC_CHECKPOINT:
		ev.u.checkpoint.applied_seq = 1;
		ev.u.checkpoint.time = 1700000000;
		break;
	case MS_REC_TIMELINE:
		ev.u.timeline.new_timeline = 1;
		break;
	case MS_REC_RETIRE:
		ev.u.retire.seg = 999999;
		ev.u.retire.sum = 42;
		ev.u.retire.drops =
			(struct ms_event_drops){.n = 1, .list = drops};
		break;
	default:
		break;
	}
	return tx_ev(x, &ev);
}

/*
 * Sync the log and apply every durable record the index has not, in
 * transactions of batch records (0: one for all), through ms_log_iter.
 * 0 with the anomalies seen in *anomalies_r, or the first error (its
 * transaction aborted).
 */
static int tx_apply_run(struct tx *x, unsigned batch, int *anomalies_r,
			const char **err_r)
{
	struct ms_log_iter *it = NULL;
	struct ms_idx_txn *txn = NULL;
	struct ms_pos pos, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	uint64_t seq;
	unsigned n = 0;
	int ret;

	*anomalies_r = 0;
	CHECK_RET(ms_log_sync(x->log), 0, "log sync");
	CHECK_RET(ms_idx_applied(x->idx, &seq, &pos), 0, "applied");
	CHECK_RET(ms_log_iter_new(x->log, pos, &it), 0, "iter");
	while ((ret = ms_log_iter_next(it, &rpos, &hdr, &payload, err_r)) >
	       0) {
		if (txn == NULL)
			CHECK_RET(ms_idx_begin(x->idx, &txn), 0, "begin");
		ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, err_r);
		if (ret < 0)
			break;
		if (ret == MS_IDX_ANOMALY)
			(*anomalies_r)++;
		if (batch != 0 && ++n == batch) {
			CHECK_RET(ms_idx_commit(&txn), 0, "commit");
			n = 0;
		}
	}
	if (ret < 0)
		ms_idx_abort(&txn);
	else if (txn != NULL)
		CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	ms_log_iter_free(&it);
	return ret < 0 ? ret : 0;
}

/* tx_apply_run, where an error fails the test: the anomalies seen. */
static int tx_apply_batches(struct tx *x, unsigned batch)
{
	const char *err = NULL;
	int anomalies, ret = tx_apply_run(x, batch, &anomalies, &err);

	if (ret < 0)
		fail_msg("apply: %s (%s)", err, ms_strerror(ret));
	return anomalies;
}

static int tx_apply(struct tx *x)
{
	return tx_apply_batches(x, 0);
}

static void check_ok(struct ms_idx *idx)
{
	const char *err = NULL;
	if (ms_idx_check(idx, &err) != 0)
		fail_msg("%s", err);
}

static char *dump_str(struct ms_idx *idx)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	assert_non_null(f);
	int ret = ms_idx_dump(idx, f);
	fclose(f);
	if (ret != 0)
		fail_msg("dump: %s\n%s", ms_strerror(ret), s);
	return s;
}

static void same_dump(const char *a, const char *b, const char *what)
{
	if (strcmp(a, b) == 0)
		return;
	size_t i = 0, line = 1;
	while (a[i] == b[i]) {
		if (a[i] == '\n')
			line++;
		i++;
	}
	fail_msg("%s: dumps differ at line %zu:\n%.300s\n--- vs ---\n%.300s",
		 what, line, a + (i > 80 ? i - 80 : 0),
		 b + (i > 80 ? i - 80 : 0));
}

static struct ms_idx_stats stats(struct ms_idx *idx)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_stats st;

	CHECK_RET(ms_idx_read_begin(idx, &rd), 0, "read");
	CHECK_RET(ms_idx_stats(rd, &st), 0, "stats");
	ms_idx_read_end(&rd);
	return st;
}

#define want_mbox(x, id, msgs, unseen, bytes, uidnext, hms) \
	want_mbox_at(__LINE__, x, id, msgs, unseen, bytes, uidnext, hms)

static void want_mbox_at(int line, struct tx *x, uint64_t id, uint64_t msgs,
			 uint64_t unseen, uint64_t bytes, uint64_t uidnext,
			 uint64_t hms)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_mbox m;

	CHECK_RET(ms_idx_read_begin(x->idx, &rd), 0, "read");
	CHECK_RET(ms_idx_mbox_get(rd, id, &m), 0, "line %d: mbox %llu", line,
		  (unsigned long long)id);
	ms_idx_read_end(&rd);
	if (m.messages != msgs || m.unseen != unseen || m.bytes != bytes ||
	    m.uidnext != uidnext || m.highestmodseq != hms)
		fail_msg("line %d: mbox %llu: messages %llu unseen %llu bytes "
			 "%llu uidnext %llu hms %llu; want %llu %llu %llu %llu "
			 "%llu",
			 line, (unsigned long long)id,
			 (unsigned long long)m.messages,
			 (unsigned long long)m.unseen,
			 (unsigned long long)m.bytes,
			 (unsigned long long)m.uidnext,
			 (unsigned long long)m.highestmodseq,
			 (unsigned long long)msgs, (unsigned long long)unseen,
			 (unsigned long long)bytes, (unsigned long long)uidnext,
			 (unsigned long long)hms);
}

#define want_user(x, id, b, m) want_user_at(__LINE__, x, id, b, m)

static void want_user_at(int line, struct tx *x, uint64_t id,
			 uint64_t use_bytes, uint64_t use_msgs)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_user u;

	CHECK_RET(ms_idx_read_begin(x->idx, &rd), 0, "read");
	CHECK_RET(ms_idx_user_get(rd, id, &u), 0, "line %d: user", line);
	ms_idx_read_end(&rd);
	if (u.use_bytes != use_bytes || u.use_messages != use_msgs)
		fail_msg("line %d: user %llu use %llu/%llu, want %llu/%llu",
			 line, (unsigned long long)id,
			 (unsigned long long)u.use_bytes,
			 (unsigned long long)u.use_messages,
			 (unsigned long long)use_bytes,
			 (unsigned long long)use_msgs);
}

#define want_body(x, key, r, xr) want_body_at(__LINE__, x, key, r, xr)

static void want_body_at(int line, struct tx *x, const uint8_t key[32],
			 uint64_t refs, uint64_t xrefs)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_body b;

	CHECK_RET(ms_idx_read_begin(x->idx, &rd), 0, "read");
	CHECK_RET(ms_idx_body_get(rd, key, &b), 0, "line %d: body", line);
	ms_idx_read_end(&rd);
	if (b.refcount != refs || b.expunged_refs != xrefs)
		fail_msg("line %d: body refs %llu/%llu, want %llu/%llu", line,
			 (unsigned long long)b.refcount,
			 (unsigned long long)b.expunged_refs,
			 (unsigned long long)refs, (unsigned long long)xrefs);
}

/* The message's flags, modseq and keywords as "k1 k2". */
static void want_msg(struct tx *x, uint64_t mbox, uint32_t uid, uint32_t flags,
		     uint64_t modseq, const char *kws)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_msg m;
	char got[256] = "";
	size_t off = 0, len, o = 0;
	const char *kw;

	CHECK_RET(ms_idx_read_begin(x->idx, &rd), 0, "read");
	CHECK_RET(ms_idx_msg_get(rd, mbox, uid, &m), 0, "msg %u", uid);
	while (ms_idx_msg_keyword(&m, &off, &kw, &len) > 0)
		o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%.*s",
				      o ? " " : "", (int)len, kw);
	ms_idx_read_end(&rd);
	if (m.flags != flags || m.modseq != modseq || strcmp(got, kws) != 0)
		fail_msg("uid %u: flags 0x%x modseq %llu kw [%s], want 0x%x "
			 "%llu [%s]",
			 uid, m.flags, (unsigned long long)m.modseq, got, flags,
			 (unsigned long long)modseq, kws);
}

/* ---- tests ------------------------------------------------------------------
 */

/* User 1 "alice" with INBOX (mailbox 10, UIDVALIDITY 1) and a second
   mailbox (11, UIDVALIDITY 2) of that name. */
static void alice_two_mboxes(struct tx *x, const char *second)
{
	ev_user(x, 1, "alice");
	ev_mbox(x, 1, 10, 1, 0, "INBOX");
	ev_mbox(x, 1, 11, 2, 0, second);
}

static void test_users_mailboxes(void **state)
{
	struct tx x;
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_user u;
	struct ms_idx_mbox m;
	const char *name;
	size_t len;
	int n;

	(void)state;
	tx_init(&x, "idx-users", 0);
	ev_user(&x, 1, "alice");
	ev_user(&x, 2, "bob");
	ev_quota(&x, 1, 1000000, 500);
	ev_mbox(&x, 1, 10, 1111, 0, "INBOX");
	ev_mbox(&x, 1, 11, 2222, MS_EVENT_SU_SENT, "Sent");
	ev_mbox(&x, 2, 20, 3333, 0, "INBOX");
	ev_sub(&x, 1, 1, "INBOX");
	ev_sub(&x, 1, 1, "Sent");
	ev_sub(&x, 1, 1, "Elsewhere"); /* need not exist */
	ev_sub(&x, 1, 1, "INBOX");     /* again: no change */
	ev_sub(&x, 1, 0, "Elsewhere");
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);

	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_user_by_name(rd, "alice", 5, &u), 0, "alice");
	assert_int_equal(u.id, 1);
	assert_int_equal(u.max_bytes, 1000000);
	assert_int_equal(u.max_messages, 500);
	assert_int_equal(u.mailboxes, 2);
	CHECK_RET(ms_idx_user_by_name(rd, "carol", 5, &u), MS_ENOTFOUND,
		  "carol");
	CHECK_RET(ms_idx_user_get(rd, 3, &u), MS_ENOTFOUND, "user 3");
	CHECK_RET(ms_idx_mbox_by_name(rd, 1, "Sent", 4, &m), 0, "Sent");
	assert_int_equal(m.id, 11);
	assert_int_equal(m.uidvalidity, 2222);
	assert_int_equal(m.special_use, MS_EVENT_SU_SENT);
	assert_int_equal(m.uidnext, 1);
	assert_int_equal(m.highestmodseq, 0);
	assert_int_equal(m.subscribed, 1);
	CHECK_RET(ms_idx_mbox_get(rd, 20, &m), 0, "mbox 20");
	assert_int_equal(m.user_id, 2);
	assert_int_equal(m.subscribed, 0);
	CHECK_RET(ms_idx_mbox_by_name(rd, 2, "Sent", 4, &m), MS_ENOTFOUND,
		  "bob's Sent");
	assert_int_equal(ms_idx_subscribed(rd, 1, "Elsewhere", 9), 0);
	/* lists */
	CHECK_RET(ms_idx_users_iter(rd, &it), 0, "users");
	for (n = 0; ms_idx_users_next(it, &u) > 0; n++)
		assert_int_equal(u.id, (uint64_t)n + 1);
	assert_int_equal(n, 2);
	CHECK_RET(ms_idx_mboxes_next(it, &m), MS_ESTATE, "wrong kind");
	ms_idx_iter_free(&it);
	CHECK_RET(ms_idx_mboxes_iter(rd, 1, &it), 0, "mboxes");
	for (n = 0; ms_idx_mboxes_next(it, &m) > 0; n++)
		assert_int_equal(m.user_id, 1);
	assert_int_equal(n, 2);
	ms_idx_iter_free(&it);
	CHECK_RET(ms_idx_subs_iter(rd, 1, &it), 0, "subs");
	for (n = 0; ms_idx_subs_next(it, &name, &len) > 0; n++)
		assert_true((len == 5 && memcmp(name, "INBOX", 5) == 0) ||
			    (len == 4 && memcmp(name, "Sent", 4) == 0));
	assert_int_equal(n, 2);
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);

	/* rename: same id and UIDVALIDITY; the old name is free again */
	ev_rename(&x, 1, 11, "Sent Items");
	ev_mbox(&x, 1, 12, 4444, 0, "Sent");
	assert_int_equal(tx_apply(&x), 0);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_mbox_by_name(rd, 1, "Sent Items", 10, &m), 0,
		  "renamed");
	assert_int_equal(m.id, 11);
	assert_int_equal(m.uidvalidity, 2222);
	assert_int_equal(m.subscribed, 0); /* subscriptions are by name */
	CHECK_RET(ms_idx_mbox_by_name(rd, 1, "Sent", 4, &m), 0, "new Sent");
	assert_int_equal(m.id, 12);
	assert_int_equal(m.subscribed, 1);
	ms_idx_read_end(&rd);

	/* anomalies: each counted, none changes anything */
	char *before = dump_str(x.idx);
	ev_user(&x, 1, "other");           /* id taken */
	ev_user(&x, 3, "alice");           /* name taken */
	ev_mbox(&x, 9, 90, 1, 0, "X");     /* no user 9 */
	ev_mbox(&x, 1, 10, 1, 0, "Y");     /* id taken */
	ev_mbox(&x, 1, 13, 1, 0, "INBOX"); /* name taken */
	ev_rename(&x, 1, 12, "INBOX");     /* name taken */
	ev_rename(&x, 2, 12, "Z");         /* not bob's */
	ev_mbox_del(&x, 1, 77);            /* no such mailbox */
	ev_quota(&x, 7, 1, 1);             /* no user 7 */
	ev_sub(&x, 7, 1, "INBOX");         /* no user 7 */
	ev_user_del(&x, 7);                /* no user 7 */
	assert_int_equal(tx_apply(&x), 11);
	char *after = dump_str(x.idx);
	/* only the applied line differs */
	assert_string_equal(strchr(strchr(before, '\n') + 1, '\n'),
			    strchr(strchr(after, '\n') + 1, '\n'));
	struct ms_idx_stats st = stats(x.idx);
	assert_int_equal(st.anomalies, 11);
	assert_int_equal(st.last_anomaly_seq, x.last_seq);
	assert_int_equal(st.applied_seq, x.last_seq);
	free(before);
	free(after);

	/* delete a mailbox, then a user */
	ev_mbox_del(&x, 1, 12);
	assert_int_equal(tx_apply(&x), 0);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_mbox_get(rd, 12, &m), MS_ENOTFOUND, "deleted");
	CHECK_RET(ms_idx_user_get(rd, 1, &u), 0, "alice");
	assert_int_equal(u.mailboxes, 2);
	ms_idx_read_end(&rd);
	ev_user_del(&x, 1);
	assert_int_equal(tx_apply(&x), 0);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_user_get(rd, 1, &u), MS_ENOTFOUND, "alice gone");
	CHECK_RET(ms_idx_user_by_name(rd, "alice", 5, &u), MS_ENOTFOUND,
		  "alice's name gone");
	CHECK_RET(ms_idx_mbox_get(rd, 10, &m), MS_ENOTFOUND, "her INBOX");
	assert_int_equal(ms_idx_subscribed(rd, 1, "INBOX", 5), 0);
	ms_idx_read_end(&rd);
	st = stats(x.idx);
	assert_int_equal(st.users, 1);
	assert_int_equal(st.mailboxes, 1);
	/* the name can be used again, by a new id */
	ev_user(&x, 5, "alice");
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);
	tx_free(&x);
}

static void test_place_flags_expunge(void **state)
{
	struct tx x;
	uint8_t b1[32], b2[32];
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_msg m;
	static const char *const kw_junk_work[] = {"work", "$Junk", "work",
						   NULL};
	static const char *const kw_work[] = {"work", NULL};
	static const char *const kw_ab[] = {"b", "a", NULL};

	(void)state;
	tx_init(&x, "idx-place", 0);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 777, 0, "INBOX");
	ev_body(&x, 1, 1000, b1);
	ev_body(&x, 2, 2000, b2);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 0, 0, 0, 1, 0);
	want_body(&x, b1, 0, 0);

	ev_place(&x, 1, 10, 1, 1, 0, b1, 1000, NULL);
	ev_place(&x, 1, 10, 2, 2, SEEN, b2, 2000, NULL);
	ev_place(&x, 1, 10, 3, 3, 0, b1, 1000, kw_junk_work);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 3, 2, 4000, 4, 3);
	want_user(&x, 1, 4000, 3);
	want_body(&x, b1, 2, 0);
	want_body(&x, b2, 1, 0);
	want_msg(&x, 10, 3, 0, 3, "$Junk work"); /* sorted, no duplicate */
	check_ok(x.idx);

	/* add \Seen to 1:3: uid 2 had it and keeps its modseq */
	ev_flags(&x, 1, 10, 4, MS_EVENT_MODE_ADD, SEEN, NULL, 1, 3);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 3, 0, 4000, 4, 4);
	want_msg(&x, 10, 1, SEEN, 4, "");
	want_msg(&x, 10, 2, SEEN, 2, "");
	want_msg(&x, 10, 3, SEEN, 4, "$Junk work");
	/* remove a keyword */
	ev_flags(&x, 1, 10, 5, MS_EVENT_MODE_REMOVE, 0, kw_work, 3, 3);
	/* replace flags and keywords */
	ev_flags(&x, 1, 10, 6, MS_EVENT_MODE_REPLACE, FLAGGED, kw_ab, 2, 2);
	/* add what is there already: no change, no new modseq */
	ev_flags(&x, 1, 10, 7, MS_EVENT_MODE_ADD, FLAGGED, kw_ab, 2, 2);
	/* a range with no messages still advances HIGHESTMODSEQ */
	ev_flags(&x, 1, 10, 8, MS_EVENT_MODE_ADD, SEEN, NULL, 100, 200);
	assert_int_equal(tx_apply(&x), 0);
	want_msg(&x, 10, 3, SEEN, 5, "$Junk");
	want_msg(&x, 10, 2, FLAGGED, 6, "a b");
	want_mbox(&x, 10, 3, 1, 4000, 4, 8);
	check_ok(x.idx);

	/* expunge uid 1: counts drop, the body keeps a restorable ref */
	uint64_t xseq = ev_expunge(&x, 1, 10, 9, 1, 1);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 2, 1, 3000, 4, 9);
	want_user(&x, 1, 3000, 2);
	want_body(&x, b1, 1, 1);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_msg_get(rd, 10, 1, &m), MS_ENOTFOUND, "expunged");
	CHECK_RET(ms_idx_expunged_get(rd, 10, 1, &m), 0, "restorable");
	assert_int_equal(m.expunge_modseq, 9);
	assert_int_equal(m.expunge_seq, xseq);
	assert_int_equal(m.expunge_time, x.now);
	assert_int_equal(m.physical_size, 1000);
	ms_idx_read_end(&rd);
	check_ok(x.idx);

	/* uids out of order: uidnext and HIGHESTMODSEQ never go down */
	ev_place(&x, 1, 10, 10, 10, 0, b2, 2000, NULL);
	ev_place(&x, 1, 10, 5, 11, SEEN, b2, 2000, NULL);
	ev_place(&x, 1, 10, 11, 3, SEEN, b2, 2000, NULL);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 5, 2, 9000, 12, 11);
	want_body(&x, b2, 4, 0);
	/* uids taken, present or expunged: anomalies */
	ev_place(&x, 1, 10, 2, 12, 0, b2, 2000, NULL);
	ev_place(&x, 1, 10, 1, 12, 0, b2, 2000, NULL);
	assert_int_equal(tx_apply(&x), 2);
	want_mbox(&x, 10, 5, 2, 9000, 12, 11);
	/* an unknown body is none: the message is placed on a body entry
	   without location (a rebuild after compaction dropped its BODY),
	   which the check refuses at rest and dies with its last ref */
	uint8_t nobody[32];
	memset(nobody, 0x5a, sizeof(nobody));
	uint64_t nbodies = stats(x.idx).bodies;
	ev_mbox(&x, 1, 12, 5, 0, "Other");
	ev_place(&x, 1, 12, 20, 12, 0, nobody, 10, NULL);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 12, 1, 1, 10, 21, 12);
	want_user(&x, 1, 9010, 6);
	{
		struct ms_idx_body nb;
		const char *cerr = NULL;
		CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
		CHECK_RET(ms_idx_body_get(rd, nobody, &nb), MS_ENOTFOUND,
			  "no location");
		ms_idx_read_end(&rd);
		assert_int_equal(stats(x.idx).bodies, nbodies + 1);
		char *d = dump_str(x.idx);
		assert_non_null(strstr(d,
				       "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
				       "5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
				       " at=0@0:0+0 plain=0 refs=1 xrefs=0"));
		free(d);
		CHECK_RET(ms_idx_check(x.idx, &cerr), MS_ECORRUPT, "check");
		assert_non_null(strstr(cerr, "no location"));
	}
	ev_expunge(&x, 1, 12, 13, 20, 20);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 12, 0, 0, 0, 21, 13);
	assert_int_equal(stats(x.idx).bodies, nbodies + 1); /* xref */
	ev_mbox_del(&x, 1, 12);
	assert_int_equal(tx_apply(&x), 0);
	assert_int_equal(stats(x.idx).bodies, nbodies);
	want_user(&x, 1, 9000, 5);
	check_ok(x.idx);

	/* ranges */
	uint32_t want_uids[] = {2, 3, 5, 10, 11};
	size_t n = 0;
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_msgs_iter(rd, 10, 1, UINT32_MAX, &it), 0, "iter");
	while (ms_idx_msgs_next(it, &m) > 0) {
		assert_true(n < MS_ARRAY_SIZE(want_uids));
		assert_int_equal(m.uid, want_uids[n++]);
	}
	assert_int_equal(n, MS_ARRAY_SIZE(want_uids));
	ms_idx_iter_free(&it);
	CHECK_RET(ms_idx_msgs_iter(rd, 10, 3, 5, &it), 0, "iter");
	for (n = 0; ms_idx_msgs_next(it, &m) > 0; n++)
		assert_int_equal(m.uid, n == 0 ? 3 : 5);
	assert_int_equal(n, 2);
	ms_idx_iter_free(&it);
	CHECK_RET(ms_idx_msgs_iter(rd, 11, 1, UINT32_MAX, &it), 0, "iter");
	assert_int_equal(ms_idx_msgs_next(it, &m), 0);
	ms_idx_iter_free(&it);
	/* one iterator moved over the ranges of a uid set, keys only or
	   whole: ranges with and without messages, one going back, an
	   empty one (lo > hi), another mailbox and back */
	static const struct {
		uint64_t mbox;
		uint32_t lo, hi;
		const char *uids;
	} seeks[] = {
		{10, 1, 2, "2"},  {10, 4, 4, ""},	 {10, 5, 10, "5 10"},
		{10, 3, 3, "3"},  {10, 9, 8, ""},	 {11, 1, 99, ""},
		{10, 11, 99, "11"}, {10, 12, UINT32_MAX, ""},
	};
	for (int keys = 0; keys < 2; keys++) {
		it = NULL;
		for (size_t i = 0; i < MS_ARRAY_SIZE(seeks); i++) {
			char got[64] = "";
			uint32_t uid;
			int r;
			CHECK_RET(ms_idx_msgs_range(rd, seeks[i].mbox,
						    seeks[i].lo, seeks[i].hi,
						    &it),
				  0, "range %zu", i);
			while ((r = keys ? ms_idx_msgs_next_uid(it, &uid)
					 : ms_idx_msgs_next(it, &m)) > 0)
				snprintf(got + strlen(got),
					 sizeof(got) - strlen(got), "%s%u",
					 got[0] ? " " : "", keys ? uid : m.uid);
			assert_int_equal(r, 0);
			if (strcmp(got, seeks[i].uids) != 0)
				fail_msg("range %zu keys=%d: got \"%s\"", i,
					 keys, got);
		}
		ms_idx_iter_free(&it);
	}
	ms_idx_read_end(&rd);

	/* expunge everything, in two ranges with a gap (the writer names
	   only placed uids: up to 11) */
	struct ms_event_range rs[] = {{1, 4}, {6, 11}};
	ev_expunge_ranges(&x, 1, 10, 14, rs, 2);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 1, 0, 2000, 12, 14); /* uid 5 stays */
	want_user(&x, 1, 2000, 1);
	want_body(&x, b1, 0, 2);
	want_body(&x, b2, 1, 3);
	check_ok(x.idx);

	/* uid 4294967295: uidnext is 2^32 */
	ev_place(&x, 1, 10, UINT32_MAX, 15, 0, b1, 1000, NULL);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 2, 1, 3000, (uint64_t)1 << 32, 15);
	check_ok(x.idx);
	tx_free(&x);
}

/*
 * Flag changes and expunges over many messages (LMDB pages of them), in
 * two mailboxes side by side (a walk must stop at its mailbox's end),
 * with holes (expunged uids) inside the ranges, by ranges and by lists
 * of single uids, in each mode: every message's flags and modseq
 * against a model, and the index's own check (each message's modseq
 * entry, and no other) after each batch.  range_walk steps from a
 * changed message to the next and searches only at a range's start.
 */
#define WALK_N 1500
static void test_flags_walk(void **state)
{
	struct tx x;
	uint8_t b[32];
	static uint32_t mflags[2][WALK_N + 1];
	static uint64_t mmod[2][WALK_N + 1];
	static uint8_t gone[2][WALK_N + 1];
	uint64_t modseq = 1;
	uint32_t seed = 12345;
	static const uint8_t modes[] = {MS_EVENT_MODE_ADD,
					MS_EVENT_MODE_REMOVE,
					MS_EVENT_MODE_REPLACE};

	(void)state;
	tx_init(&x, "idx-walk", 0);
	alice_two_mboxes(&x, "Other");
	ev_body(&x, 1, 100, b);
	assert_int_equal(tx_apply(&x), 0);
	for (uint32_t uid = 1; uid <= WALK_N; uid++) {
		for (int mb = 0; mb < 2; mb++) {
			ev_place(&x, 1, (uint64_t)(10 + mb), uid, modseq, 0, b,
				 100, NULL);
			mmod[mb][uid] = modseq;
		}
		modseq++;
	}
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);
	for (int round = 0; round < 60; round++) {
		int mb = round % 2;
		uint64_t id = (uint64_t)(10 + mb);
		seed = seed * 1103515245u + 12345u;
		uint32_t lo = 1 + (seed >> 8) % WALK_N;
		seed = seed * 1103515245u + 12345u;
		uint32_t hi = lo + (seed >> 8) % 400;
		if (hi > WALK_N + 5)
			hi = WALK_N + 5; /* past the last uid too */
		if (round % 7 == 3) {
			/* holes: expunge every fifth uid of the range */
			struct ms_event_range r[100];
			uint32_t n = 0;
			for (uint32_t u = lo; u <= hi && u <= WALK_N && n < 100;
			     u += 5) {
				r[n++] = (struct ms_event_range){u, u};
				gone[mb][u] = 1;
			}
			if (n > 0) {
				ev_expunge_ranges(&x, 1, id, modseq++, r, n);
				assert_int_equal(tx_apply(&x), 0);
			}
			continue;
		}
		uint8_t mode = modes[round % 3];
		uint32_t fl = (round & 4) ? SEEN | FLAGGED : SEEN;
		struct ms_event ev = {.type = MS_REC_FLAGS};
		struct ms_event_flags *f = &ev.u.flags;
		struct ms_event_range r[400];
		uint32_t n = 0;
		if (round % 5 == 1) {
			/* single uids: every other one */
			for (uint32_t u = lo; u <= hi && n < 400; u += 2)
				r[n++] = (struct ms_event_range){u, u};
		} else {
			r[n++] = (struct ms_event_range){lo, hi};
		}
		f->user_id = 1;
		f->mbox_id = id;
		f->modseq = modseq;
		f->mode = mode;
		f->flags = fl;
		f->ranges = (struct ms_event_ranges){.n = n, .list = r};
		tx_ev(&x, &ev);
		for (uint32_t i = 0; i < n; i++) {
			for (uint32_t u = r[i].lo; u <= r[i].hi && u <= WALK_N;
			     u++) {
				if (gone[mb][u])
					continue;
				uint32_t nf = mode == MS_EVENT_MODE_ADD
						      ? mflags[mb][u] | fl
					      : mode == MS_EVENT_MODE_REMOVE
						      ? mflags[mb][u] & ~fl
						      : fl;
				if (nf != mflags[mb][u]) {
					mflags[mb][u] = nf;
					mmod[mb][u] = modseq;
				}
			}
		}
		modseq++;
		assert_int_equal(tx_apply(&x), 0);
		if (round % 10 == 9)
			check_ok(x.idx);
	}
	check_ok(x.idx);
	for (int mb = 0; mb < 2; mb++) {
		struct ms_idx_rd *rd = NULL;
		CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
		for (uint32_t u = 1; u <= WALK_N; u++) {
			struct ms_idx_msg m;
			int ret = ms_idx_msg_get(rd, (uint64_t)(10 + mb), u, &m);
			if (gone[mb][u]) {
				CHECK_RET(ret, MS_ENOTFOUND, "uid %u", u);
				continue;
			}
			CHECK_RET(ret, 0, "uid %u", u);
			if (m.flags != mflags[mb][u] || m.modseq != mmod[mb][u])
				fail_msg("mbox %d uid %u: flags 0x%x modseq %llu,"
					 " want 0x%x %llu", 10 + mb, u, m.flags,
					 (unsigned long long)m.modseq,
					 mflags[mb][u],
					 (unsigned long long)mmod[mb][u]);
		}
		ms_idx_read_end(&rd);
	}
	tx_free(&x);
}

static void test_change_feed(void **state)
{
	struct tx x;
	uint8_t b[32];
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_change c;
	struct ms_idx_msg m;
	static const char *const kw_x[] = {"x", NULL};

	(void)state;
	tx_init(&x, "idx-feed", 0);
	alice_two_mboxes(&x, "Other");
	ev_body(&x, 1, 100, b);
	for (uint32_t uid = 1; uid <= 6; uid++)
		ev_place(&x, 1, 10, uid, uid, 0, b, 100, NULL);
	ev_place(&x, 1, 11, 1, 1, 0, b, 100, NULL);
	ev_flags(&x, 1, 10, 7, MS_EVENT_MODE_ADD, SEEN, NULL, 2, 2);
	x.now = 1000;
	ev_expunge(&x, 1, 10, 8, 3, 4);
	ev_flags(&x, 1, 10, 9, MS_EVENT_MODE_ADD, 0, kw_x, 5, 5);
	struct ms_event_range rs[] = {{1, 1}, {6, 6}};
	x.now = 2000;
	uint64_t x2 = ev_expunge_ranges(&x, 1, 10, 10, rs, 2);
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);

	/*
	 * uids 1..6 were placed at modseq 1..6; 2 and 5 changed later, the
	 * others were expunged: what each since sees, m<uid>:<modseq> for a
	 * message, x<modseq>:<lo>-<hi> for expunged uids
	 */
	static const struct {
		uint64_t since;
		const char *want;
	} cases[] = {
		{0, "m2:7 x8:3-4 m5:9 x10:1-1 x10:6-6"},
		{6, "m2:7 x8:3-4 m5:9 x10:1-1 x10:6-6"},
		{7, "x8:3-4 m5:9 x10:1-1 x10:6-6"},
		{8, "m5:9 x10:1-1 x10:6-6"},
		{9, "x10:1-1 x10:6-6"},
		{10, ""},
		{UINT64_MAX, ""},
	};
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
		char got[256] = "";
		size_t o = 0;
		CHECK_RET(ms_idx_changes_iter(rd, 10, cases[i].since, &it), 0,
			  "case %zu", i);
		while (ms_idx_changes_next(it, &c) > 0) {
			if (c.is_expunge)
				o += (size_t)snprintf(
					got + o, sizeof(got) - o,
					"%sx%llu:%u-%u", o ? " " : "",
					(unsigned long long)c.modseq, c.uid_lo,
					c.uid_hi);
			else
				o += (size_t)snprintf(
					got + o, sizeof(got) - o, "%sm%u:%llu",
					o ? " " : "", c.msg.uid,
					(unsigned long long)c.modseq);
		}
		ms_idx_iter_free(&it);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("since %llu: got \"%s\", want \"%s\"",
				 (unsigned long long)cases[i].since, got,
				 cases[i].want);
	}
	/* the other mailbox is not mixed in */
	CHECK_RET(ms_idx_changes_iter(rd, 11, 0, &it), 0, "mbox 11");
	assert_int_equal(ms_idx_changes_next(it, &c), 1);
	assert_int_equal(c.is_expunge, 0);
	assert_int_equal(c.msg.mbox_id, 11);
	assert_int_equal(ms_idx_changes_next(it, &c), 0);
	ms_idx_iter_free(&it);
	/* expunged since a time: expunge time >= since */
	static const struct {
		uint64_t since;
		size_t n;
	} xcases[] = {{0, 4}, {1000, 4}, {1001, 2}, {2000, 2}, {2001, 0}};
	for (size_t i = 0; i < MS_ARRAY_SIZE(xcases); i++) {
		size_t n = 0;
		CHECK_RET(ms_idx_expunged_iter(rd, 10, xcases[i].since, &it), 0,
			  "xp");
		while (ms_idx_expunged_next(it, &m) > 0) {
			if (xcases[i].since > 1000) {
				assert_int_equal(m.expunge_seq, x2);
				assert_int_equal(m.expunge_time, 2000);
				assert_true(m.uid == 1 || m.uid == 6);
			}
			n++;
		}
		ms_idx_iter_free(&it);
		if (n != xcases[i].n)
			fail_msg("expunged since %llu: %zu, want %zu",
				 (unsigned long long)xcases[i].since, n,
				 xcases[i].n);
	}
	ms_idx_read_end(&rd);

	/* the write transaction's own view sees its uncommitted change */
	struct ms_idx_txn *txn = NULL;
	struct ms_log_iter *li = NULL;
	struct ms_pos pos, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	const char *err = NULL;
	uint64_t seq;
	ev_flags(&x, 1, 10, 11, MS_EVENT_MODE_ADD, FLAGGED, NULL, 2, 2);
	CHECK_RET(ms_log_sync(x.log), 0, "sync");
	CHECK_RET(ms_idx_applied(x.idx, &seq, &pos), 0, "applied");
	CHECK_RET(ms_log_iter_new(x.log, pos, &li), 0, "iter");
	CHECK_RET(ms_idx_begin(x.idx, &txn), 0, "begin");
	CHECK_RET(ms_idx_begin(x.idx, &txn), MS_ESTATE, "second begin");
	while (ms_log_iter_next(li, &rpos, &hdr, &payload, &err) > 0)
		ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
	ms_log_iter_free(&li);
	CHECK_RET(ms_idx_changes_iter(ms_idx_txn_rd(txn), 10, 10, &it), 0,
		  "txn view");
	assert_int_equal(ms_idx_changes_next(it, &c), 1);
	assert_int_equal(c.msg.uid, 2);
	assert_int_equal(c.modseq, 11);
	ms_idx_iter_free(&it);
	/* a reader while the transaction is open reads it: mstored answers
	   before it commits */
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_changes_iter(rd, 10, 10, &it), 0, "reader");
	assert_int_equal(ms_idx_changes_next(it, &c), 1);
	assert_int_equal(c.msg.uid, 2);
	ms_idx_iter_free(&it);
	struct ms_idx_stats st;
	CHECK_RET(ms_idx_stats(rd, &st), 0, "stats");
	assert_true(st.applied_seq > seq);
	assert_int_equal(st.committed_seq, seq);
	ms_idx_read_end(&rd);
	uint64_t applied = st.applied_seq;
	CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	/* and after the commit, a read transaction of its own */
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read after");
	CHECK_RET(ms_idx_changes_iter(rd, 10, 10, &it), 0, "reader after");
	assert_int_equal(ms_idx_changes_next(it, &c), 1);
	ms_idx_iter_free(&it);
	CHECK_RET(ms_idx_stats(rd, &st), 0, "stats after");
	assert_int_equal(st.applied_seq, applied);
	assert_int_equal(st.committed_seq, applied);
	ms_idx_read_end(&rd);
	check_ok(x.idx);
	tx_free(&x);
}

static void test_body_refcount(void **state)
{
	struct tx x;
	uint8_t b[32];
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_seg s;
	uint64_t place_bytes = 0, body_len, total;

	(void)state;
	tx_init(&x, "idx-refs", 0);
	ev_user(&x, 1, "alice");
	for (uint64_t i = 0; i < 100; i++) {
		char name[32];
		snprintf(name, sizeof(name), "box%llu", (unsigned long long)i);
		ev_mbox(&x, 1, 100 + i, 1, 0, name);
	}
	ev_body(&x, 7, 5000, b);
	body_len = x.last_len;
	ev_simple(&x, MS_REC_NOOP);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 0, 0);
	/* no placement: the body record is not live */
	assert_int_equal(stats(x.idx).live_segments, 0);

	for (uint64_t i = 0; i < 100; i++) {
		ev_place(&x, 1, 100 + i, 1, 1, 0, b, 5000, NULL);
		place_bytes += x.last_len;
	}
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 100, 0);
	want_user(&x, 1, 500000, 100);

	/* live bytes: the body once plus every placement */
	total = 0;
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_segs_iter(rd, &it), 0, "segs");
	while (ms_idx_segs_next(it, &s) > 0) {
		total += s.live_bytes;
		assert_false(s.compacted);
	}
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	assert_int_equal(total, body_len + place_bytes);

	/* expunge 99: one present reference, 99 restorable */
	for (uint64_t i = 0; i < 99; i++)
		ev_expunge(&x, 1, 100 + i, 2, 1, 1);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 1, 99);
	want_user(&x, 1, 5000, 1);
	want_mbox(&x, 100, 0, 0, 0, 2, 2);
	want_mbox(&x, 199, 1, 1, 5000, 2, 1);
	check_ok(x.idx);
	/* restorable placements are still live */
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_seg_get(rd, x.last_pos.seg, &s), 0, "seg");
	ms_idx_read_end(&rd);
	assert_int_equal(s.live_bytes, body_len + place_bytes);

	/* deleting mailboxes drops their restorable placements */
	for (uint64_t i = 0; i < 99; i++)
		ev_mbox_del(&x, 1, 100 + i);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 1, 0);
	check_ok(x.idx);
	ev_expunge(&x, 1, 199, 2, 1, 1);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 0, 1);
	ev_mbox_del(&x, 1, 199);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 0, 0);
	want_user(&x, 1, 0, 0);
	/* nothing is live any more */
	assert_int_equal(stats(x.idx).live_segments, 0);
	check_ok(x.idx);

	/* a later BODY record of the same key moves the body there */
	ev_mbox(&x, 1, 300, 1, 0, "again");
	ev_place(&x, 1, 300, 1, 1, 0, b, 5000, NULL);
	uint64_t pl = x.last_len;
	assert_int_equal(tx_apply(&x), 0);
	uint8_t b_again[32];
	ev_body(&x, 7, 5000, b_again);
	struct ms_pos moved = x.last_pos;
	uint64_t moved_seq = x.last_seq;
	assert_memory_equal(b, b_again, 32);
	assert_int_equal(tx_apply(&x), 0);
	struct ms_idx_body body;
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_body_get(rd, b, &body), 0, "body");
	assert_int_equal(body.seq, moved_seq);
	assert_int_equal(ms_pos_cmp(body.pos, moved), 0);
	assert_int_equal(body.refcount, 1);
	assert_int_equal(body.plain_len, 5000);
	total = 0;
	CHECK_RET(ms_idx_segs_iter(rd, &it), 0, "segs");
	while (ms_idx_segs_next(it, &s) > 0)
		total += s.live_bytes;
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	assert_int_equal(total, pl + x.last_len);
	check_ok(x.idx);

	/*
	 * A RETIRE dropping the record of a body that is still placed: a
	 * writer bug, an anomaly; the entry stays, and so does everything
	 * else, but the segment is recorded as compacted.
	 */
	uint64_t seg = moved.seg;
	uint8_t absent[32];
	memset(absent, 0x77, sizeof(absent));
	struct ms_event_drop d1[] = {
		{.off = moved.off, .type = MS_REC_BODY},
		{.off = moved.off + x.last_len, .type = MS_REC_BODY},
	};
	memcpy(d1[0].key, b, 32);
	memcpy(d1[1].key, absent, 32); /* no such body: nothing */
	char *before = dump_str(x.idx);
	uint64_t rseq = ev_retire(&x, seg, 0xabc, d1, 2);
	assert_int_equal(tx_apply(&x), 1);
	want_body(&x, b, 1, 0);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_body_get(rd, b, &body), 0, "kept");
	assert_int_equal(ms_pos_cmp(body.pos, moved), 0);
	CHECK_RET(ms_idx_seg_get(rd, seg, &s), 0, "seg");
	assert_true(s.compacted);
	assert_int_equal(s.compact_seq, rseq);
	assert_int_equal(s.sum, 0xabc);
	assert_int_equal(s.compactions, 1);
	ms_idx_read_end(&rd);
	assert_int_equal(stats(x.idx).compacted_segments, 1);
	assert_int_equal(stats(x.idx).anomalies, 1);
	check_ok(x.idx);
	{
		/* nothing but the applied line and the compacted entry */
		char *after = dump_str(x.idx);
		char *ca = strstr(after, "\ncompacted seg=");
		assert_non_null(ca);
		ca[1] = '\0';
		assert_string_equal(strchr(strchr(before, '\n') + 1, '\n'),
				    strchr(strchr(after, '\n') + 1, '\n'));
		free(after);
	}
	free(before);

	/* unplaced, the body entry stays with its location, refs 0 */
	ev_expunge(&x, 1, 300, 2, 1, 1);
	ev_mbox_del(&x, 1, 300);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b, 0, 0);
	assert_int_equal(stats(x.idx).live_segments, 0);
	check_ok(x.idx);
	/* now its drop deletes it; a second compaction of the segment */
	struct ms_event_drop d2[] = {{.off = moved.off, .type = MS_REC_BODY}};
	memcpy(d2[0].key, b, 32);
	uint64_t rseq2 = ev_retire(&x, seg, 0xdef, d2, 1);
	assert_int_equal(tx_apply(&x), 0);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_body_get(rd, b, &body), MS_ENOTFOUND, "dropped");
	CHECK_RET(ms_idx_seg_get(rd, seg, &s), 0, "seg");
	assert_true(s.compacted);
	assert_int_equal(s.compact_seq, rseq2);
	assert_int_equal(s.sum, 0xdef);
	assert_int_equal(s.compactions, 2);
	ms_idx_read_end(&rd);
	assert_int_equal(stats(x.idx).bodies, 0);
	check_ok(x.idx);
	tx_free(&x);
}

/*
 * A log with every record type, several segments, two users, renames,
 * deletes, anomalies.  apply_often: apply after each step (the
 * incremental index); else only append.
 */
static void scenario(struct tx *x, int apply_often)
{
	uint8_t k[8][32];
	uint64_t ms10 = 0, ms11 = 0, ms20 = 0, ms22 = 0;
	uint32_t u10 = 0, u11 = 0, u20 = 0, u22 = 0;
	static const char *const kws[][4] = {
		{NULL},
		{"$Forwarded", NULL},
		{"b", "a", NULL},
		{"\xc3\xa9t\xc3\xa9", "a", NULL},
	};
	static const char *const kw_a[] = {"a", NULL};

#define STEP()                       \
	do {                         \
		if (apply_often)     \
			tx_apply(x); \
	} while (0)

	ev_user(x, 1, "alice");
	ev_user(x, 2, "bob");
	ev_quota(x, 1, 1 << 20, 100);
	ev_mbox(x, 1, 10, 100, 0, "INBOX");
	ev_mbox(x, 1, 11, 101, MS_EVENT_SU_SENT, "Sent");
	ev_mbox(x, 2, 20, 200, 0, "INBOX");
	ev_mbox(x, 2, 21, 201, MS_EVENT_SU_TRASH, "Trash");
	ev_sub(x, 1, 1, "INBOX");
	ev_sub(x, 1, 1, "Sent");
	ev_sub(x, 1, 1, "Nowhere");
	ev_sub(x, 2, 1, "INBOX");
	STEP();
	ev_sub(x, 1, 0, "Nowhere");
	for (int i = 0; i < 8; i++)
		ev_body(x, (uint64_t)i, 500 + (size_t)i * 3000, k[i]);
	STEP();
	for (int i = 0; i < 60; i++) {
		uint64_t size = 500 + (uint64_t)(i % 8) * 3000;
		uint32_t flags = (uint32_t)(i % 3 == 0 ? SEEN : 0);
		switch (i % 3) {
		case 0:
			ev_place(x, 1, 10, ++u10, ++ms10, flags, k[i % 8], size,
				 kws[i % 4]);
			break;
		case 1:
			ev_place(x, 1, 11, ++u11, ++ms11, flags, k[i % 8], size,
				 kws[i % 4]);
			break;
		default:
			ev_place(x, 2, 20, ++u20, ++ms20, flags, k[i % 8], size,
				 kws[i % 4]);
			break;
		}
		if (i % 13 == 0)
			STEP();
	}
	ev_flags(x, 1, 10, ++ms10, MS_EVENT_MODE_ADD, SEEN, kw_a, 1, 5);
	ev_flags(x, 1, 10, ++ms10, MS_EVENT_MODE_REMOVE, SEEN, kw_a, 3, 8);
	ev_flags(x, 2, 20, ++ms20, MS_EVENT_MODE_REPLACE, FLAGGED, kws[2], 2,
		 UINT32_MAX);
	STEP();
	ev_expunge(x, 1, 10, ++ms10, 2, 3);
	ev_expunge(x, 1, 10, ++ms10, 7, 7);
	ev_expunge(x, 2, 20, ++ms20, 1, 4);
	ev_rename(x, 1, 11, "Sent Items");
	ev_rename(x, 2, 21, "Deleted");
	ev_mbox_del(x, 2, 21);
	ev_mbox(x, 2, 22, 202, 0, "Archive");
	/* a migration: UIDVALIDITY, UIDNEXT and GUID set, then messages
	   from uid 10 on */
	ev_update(x, 2, 22, 1795870984, 10, 0, 0x5a);
	u22 = 9;
	STEP();
	for (int i = 0; i < 5; i++)
		ev_place(x, 2, 22, ++u22, ++ms22, 0, k[i],
			 500 + (uint64_t)i * 3000, NULL);
	ev_update(x, 2, 22, 0, 3, 50, 0); /* uidnext lower: kept */
	ev_mbox_del(x, 2, 20);
	ev_simple(x, MS_REC_NOOP);
	ev_simple(x, MS_REC_CHECKPOINT);
	ev_simple(x, MS_REC_TIMELINE);
	ev_simple(x, MS_REC_RETIRE);
	STEP();
	/* a later copy of a body moves it */
	uint8_t again[32];
	ev_body(x, 3, 500 + 3 * 3000, again);
	/* anomalies */
	ev_place(x, 1, 999, 1, 1, 0, k[0], 500, NULL);
	ev_flags(x, 1, 20, 5, MS_EVENT_MODE_ADD, SEEN, NULL, 1, 1);
	tx_append(x, MS_REC_PLACE, 0, "garbage", 7);
	STEP();
	/* a user that comes and goes */
	ev_user(x, 3, "carol");
	ev_mbox(x, 3, 30, 300, 0, "INBOX");
	ev_place(x, 3, 30, 1, 1, 0, k[1], 3500, NULL);
	ev_place(x, 3, 30, 2, 2, 0, k[2], 6500, NULL);
	ev_expunge(x, 3, 30, 3, 1, 1);
	ev_sub(x, 3, 1, "INBOX");
	ev_user_del(x, 3);
	ev_user(x, 4, "dave");
	ev_mbox(x, 4, 40, 400, 0, "INBOX");
	ev_place(x, 4, 40, 1, 1, 0, k[7], 500 + 7 * 3000, kws[3]);
	STEP();
#undef STEP
}

/* MBOX_UPDATE: UIDVALIDITY and GUID replaced, UIDNEXT and HIGHESTMODSEQ
   raised only; 0 changes nothing; an unknown mailbox is an anomaly. */
static void test_mbox_update(void **state)
{
	struct tx x;
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_mbox m;
	uint8_t k[32];

	(void)state;
	tx_init(&x, "idx-update", 0);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 1111, 0, "INBOX");
	ev_update(&x, 1, 10, 1795870984, 4711, 0, 0x11);
	ev_update(&x, 1, 10, 0, 12, 30, 0);
	ev_body(&x, 0, 500, k);
	ev_place(&x, 1, 10, 4711, 31, SEEN, k, 500, NULL);
	ev_update(&x, 1, 10, 0, 0, 7, 0x22); /* modseq lower: kept */
	assert_int_equal(tx_apply(&x), 0);
	ev_update(&x, 1, 99, 5, 0, 0, 0); /* no such mailbox */
	assert_int_equal(tx_apply(&x), 1);
	check_ok(x.idx);

	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_mbox_get(rd, 10, &m), 0, "INBOX");
	assert_int_equal(m.uidvalidity, 1795870984);
	assert_int_equal(m.uidnext, 4712);
	assert_int_equal(m.highestmodseq, 31);
	assert_int_equal(m.messages, 1);
	for (size_t i = 0; i < sizeof(m.guid); i++)
		assert_int_equal(m.guid[i], 0x22);
	ms_idx_read_end(&rd);
	tx_free(&x);
}

static void test_idempotent_replay(void **state)
{
	struct tx x;
	struct ms_log_iter *it = NULL;
	struct ms_idx_txn *txn = NULL;
	struct ms_pos start = {0, 0}, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	const char *err = NULL;
	int ret, skipped = 0, records = 0;

	(void)state;
	tx_init(&x, "idx-replay", 16 << 10);
	scenario(&x, 1);
	check_ok(x.idx);
	char *a = dump_str(x.idx);

	/* the whole log again from the start: every record skipped */
	uint64_t skipped0 = stats(x.idx).skipped;
	CHECK_RET(ms_log_iter_new(x.log, start, &it), 0, "iter");
	CHECK_RET(ms_idx_begin(x.idx, &txn), 0, "begin");
	while ((ret = ms_log_iter_next(it, &rpos, &hdr, &payload, &err)) > 0) {
		ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
		if (hdr.type == MS_REC_SEAL) {
			assert_int_equal(ret, 0); /* seals: nothing to do */
			continue;
		}
		records++;
		if (ret == MS_IDX_SKIPPED)
			skipped++;
	}
	ms_log_iter_free(&it);
	CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	assert_int_equal(skipped, records);
	char *b = dump_str(x.idx);
	same_dump(a, b, "replay");
	assert_int_equal(stats(x.idx).skipped - skipped0, (uint64_t)records);

	/* a fresh index applying every record twice in one transaction */
	struct tx y = x;
	snprintf(y.idxdir, sizeof(y.idxdir), "%s/idx2", x.root);
	tx_open_idx(&y);
	CHECK_RET(ms_log_iter_new(x.log, start, &it), 0, "iter");
	CHECK_RET(ms_idx_begin(y.idx, &txn), 0, "begin");
	while ((ret = ms_log_iter_next(it, &rpos, &hdr, &payload, &err)) > 0) {
		ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
		assert_true(ret >= 0 && ret != MS_IDX_SKIPPED);
		ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
		assert_int_equal(ret,
				 hdr.type == MS_REC_SEAL ? 0 : MS_IDX_SKIPPED);
	}
	ms_log_iter_free(&it);
	CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	char *c = dump_str(y.idx);
	same_dump(a, c, "applied twice");
	ms_idx_close(&y.idx);
	free(a);
	free(b);
	free(c);
	tx_free(&x);
}

static void test_rebuild_equals_incremental(void **state)
{
	struct tx x;
	struct ms_idx *r = NULL;
	char rdir[1100];
	const char *err = NULL;

	(void)state;
	tx_init(&x, "idx-rebuild", 16 << 10);
	scenario(&x, 1);
	struct ms_log_status ls;
	ms_log_get_status(x.log, &ls);
	if (ls.nsegs < 3) /* seals and segment rolls included */
		fail_msg("%llu segments", (unsigned long long)ls.nsegs);
	check_ok(x.idx);
	char *inc = dump_str(x.idx);
	struct ms_idx_stats st = stats(x.idx);
	assert_int_equal(st.anomalies, 3);
	assert_int_equal(st.users, 3);

	snprintf(rdir, sizeof(rdir), "%s/rebuilt", x.root);
	CHECK_RET(ms_idx_rebuild(rdir, TEST_MAP, x.log, &err), 0, "rebuild: %s",
		  err);
	CHECK_RET(ms_idx_open(rdir, TEST_MAP, &r, &err), 0, "open: %s", err);
	check_ok(r);
	char *reb = dump_str(r);
	same_dump(inc, reb, "rebuild");
	ms_idx_close(&r);

	/* fed like the daemon, which never sees the log's seals */
	{
		struct ms_log_iter *it = NULL;
		struct ms_idx_txn *txn = NULL;
		struct ms_pos start = {0, 0}, rpos;
		struct ms_rec_hdr hdr;
		const uint8_t *payload;
		int seals = 0;

		snprintf(rdir, sizeof(rdir), "%s/noseals", x.root);
		CHECK_RET(ms_idx_open(rdir, TEST_MAP, &r, &err), 0, "open");
		CHECK_RET(ms_log_iter_new(x.log, start, &it), 0, "iter");
		CHECK_RET(ms_idx_begin(r, &txn), 0, "begin");
		while (ms_log_iter_next(it, &rpos, &hdr, &payload, &err) > 0) {
			if (hdr.type == MS_REC_SEAL) {
				seals++;
				continue;
			}
			assert_true(ms_idx_apply(txn, hdr.seq, rpos, &hdr,
						 payload, &err) >= 0);
		}
		ms_log_iter_free(&it);
		CHECK_RET(ms_idx_commit(&txn), 0, "commit");
		assert_true(seals >= 2);
		char *ns = dump_str(r);
		same_dump(inc, ns, "without seals");
		free(ns);
		ms_idx_close(&r);
	}

	/* rebuilding over an existing index replaces it */
	ms_idx_close(&x.idx);
	CHECK_RET(ms_idx_rebuild(x.idxdir, 0, x.log, &err), 0, "rebuild: %s",
		  err);
	tx_open_idx(&x);
	char *again = dump_str(x.idx);
	same_dump(inc, again, "rebuild in place");
	free(inc);
	free(reb);
	free(again);
	tx_free(&x);
}

static void test_catch_up(void **state)
{
	struct tx x;
	const char *err = NULL;
	uint64_t seq;
	struct ms_pos pos;

	(void)state;
	tx_init(&x, "idx-catchup", 16 << 10);
	scenario(&x, 0);
	CHECK_RET(ms_log_sync(x.log), 0, "sync");

	/* apply about half, in small batches, then close */
	struct ms_log_iter *it = NULL;
	struct ms_idx_txn *txn = NULL;
	struct ms_pos start = {0, 0}, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	int n = 0;
	uint64_t committed = 0, last = 0;
	CHECK_RET(ms_log_iter_new(x.log, start, &it), 0, "iter");
	CHECK_RET(ms_idx_begin(x.idx, &txn), 0, "begin");
	while (n < 60 &&
	       ms_log_iter_next(it, &rpos, &hdr, &payload, &err) > 0) {
		assert_true(ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload,
					 &err) >= 0);
		if (hdr.type != MS_REC_SEAL) /* seals move nothing */
			last = hdr.seq;
		if (++n % 7 == 0) {
			CHECK_RET(ms_idx_commit(&txn), 0, "commit");
			CHECK_RET(ms_idx_begin(x.idx, &txn), 0, "begin");
			committed = last;
		}
	}
	/* the last, uncommitted part is lost with the abort */
	ms_idx_abort(&txn);
	ms_log_iter_free(&it);
	CHECK_RET(ms_idx_applied(x.idx, &seq, &pos), 0, "applied");
	assert_int_equal(seq, committed);
	ms_idx_close(&x.idx);

	tx_open_idx(&x);
	CHECK_RET(ms_idx_applied(x.idx, &seq, &pos), 0, "applied");
	assert_int_equal(seq, committed);
	CHECK_RET(ms_idx_catch_up(x.idx, x.log, &err), 0, "catch up: %s", err);
	CHECK_RET(ms_idx_applied(x.idx, &seq, &pos), 0, "applied");
	struct ms_log_status ls;
	ms_log_get_status(x.log, &ls);
	assert_int_equal(seq, ls.durable_seq);
	check_ok(x.idx);
	char *a = dump_str(x.idx);

	/* equal to a rebuild */
	char rdir[1100];
	struct ms_idx *r = NULL;
	snprintf(rdir, sizeof(rdir), "%s/rebuilt", x.root);
	CHECK_RET(ms_idx_rebuild(rdir, TEST_MAP, x.log, &err), 0, "rebuild");
	CHECK_RET(ms_idx_open(rdir, TEST_MAP, &r, &err), 0, "open");
	char *b = dump_str(r);
	same_dump(a, b, "catch-up vs rebuild");
	ms_idx_close(&r);

	/* catch-up with nothing new changes nothing */
	CHECK_RET(ms_idx_catch_up(x.idx, x.log, &err), 0, "again");
	char *c = dump_str(x.idx);
	same_dump(a, c, "second catch-up");

	/* the index follows this store: another log is refused */
	struct tx other;
	tx_init(&other, "idx-other", 0);
	ev_user(&other, 1, "someone");
	CHECK_RET(ms_log_sync(other.log), 0, "sync");
	CHECK_RET(ms_idx_catch_up(x.idx, other.log, &err), MS_EMISMATCH,
		  "other store");
	tx_free(&other);
	free(a);
	free(b);
	free(c);
	tx_free(&x);
}

static void data_path(char *out, size_t n, const struct tx *x)
{
	snprintf(out, n, "%s/data.mdb", x->idxdir);
}

/* Put k -> v into database db through LMDB itself. */
static void raw_put(const char *dir, const char *db, const void *k,
		    size_t klen, const void *v, size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {.mv_size = klen, .mv_data = (void *)k};
	MDB_val val = {.mv_size = len, .mv_data = (void *)v};

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 20), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Put meta "format" through LMDB itself. */
static void raw_put_format(const char *dir, const void *v, size_t len)
{
	raw_put(dir, "meta", "format", 6, v, len);
}

static void test_corrupt_index(void **state)
{
	struct tx x;
	struct ms_idx *idx = NULL;
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_user u;
	const char *err = NULL;
	char path[1200];
	static const char uname[] = "zqxjvkwb-unique-user";

	(void)state;
	tx_init(&x, "idx-corrupt", 0);
	ev_user(&x, 1, uname);
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	assert_int_equal(tx_apply(&x), 0);
	ms_idx_close(&x.idx);

	/* another format version */
	uint8_t f[16];
	memcpy(f, "MSTOIDX\0", 8);
	ms_put32(f + 8, MS_IDX_VERSION + 1);
	ms_put32(f + 12, 0);
	raw_put_format(x.idxdir, f, sizeof(f));
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_EVERSION,
		  "version");
	assert_non_null(strstr(err, "version"));
	/* a damaged format entry */
	memcpy(f, "MSTOIDY\0", 8);
	ms_put32(f + 8, MS_IDX_VERSION);
	raw_put_format(x.idxdir, f, sizeof(f));
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "magic");
	raw_put_format(x.idxdir, f, 15);
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "size");
	memcpy(f, "MSTOIDX\0", 8);
	raw_put_format(x.idxdir, f, sizeof(f));
	tx_open_idx(&x);
	check_ok(x.idx);
	ms_idx_close(&x.idx);

	/* flipped bytes in values and keys: every copy of the name */
	data_path(path, sizeof(path), &x);
	long long size = mst_file_size(path);
	assert_true(size > 0);
	uint8_t *data = ms_malloc((size_t)size);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, data, (size_t)size, 0), size);
	close(fd);
	int flips = 0;
	for (uint8_t *p = data; (p = memmem(p, (size_t)(data + size - p), uname,
					    sizeof(uname) - 1)) != NULL;
	     p++) {
		assert_int_equal(mst_flip(path, (uint64_t)(p - data) + 3, 0x01),
				 0);
		flips++;
	}
	free(data);
	assert_true(flips >= 2); /* users value and user_names key */
	tx_open_idx(&x);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_user_get(rd, 1, &u), MS_ECORRUPT, "damaged user");
	CHECK_RET(ms_idx_user_by_name(rd, uname, sizeof(uname) - 1, &u),
		  MS_ENOTFOUND, "damaged name key");
	ms_idx_read_end(&rd);
	CHECK_RET(ms_idx_check(x.idx, &err), MS_ECORRUPT, "check");
	if (strstr(err, "checksum") == NULL)
		fail_msg("check said: %s", err);
	{
		char *s = NULL;
		size_t n = 0;
		FILE *out = open_memstream(&s, &n);
		CHECK_RET(ms_idx_dump(x.idx, out), MS_ECORRUPT, "dump");
		fclose(out);
		assert_non_null(strstr(s, "error: index damaged"));
		free(s);
	}
	ms_idx_close(&x.idx);

	/* LMDB's own meta page damaged */
	long psize = sysconf(_SC_PAGESIZE);
	assert_int_equal(mst_flip(path, 16, 0xff), 0); /* mm_magic, page 0 */
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "meta page");
	assert_int_equal(mst_flip(path, 16, 0xff), 0);
	assert_int_equal(mst_flip(path, (uint64_t)psize + 16, 0xff), 0);
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "meta page 1");

	/* garbage */
	uint8_t junk[65536];
	mst_fill(junk, sizeof(junk), 42);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	int ret = ms_idx_open(x.idxdir, TEST_MAP, &idx, &err);
	assert_true(ret == MS_ECORRUPT || ret == MS_EVERSION);

	/* an LMDB file of someone else */
	char odir[1100];
	snprintf(odir, sizeof(odir), "%s/foreign", x.root);
	assert_int_equal(mkdir(odir, 0700), 0);
	{
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		MDB_val k = {.mv_size = 1, .mv_data = "k"};
		MDB_val v = {.mv_size = 1, .mv_data = "v"};
		assert_int_equal(mdb_env_create(&env), 0);
		assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
		assert_int_equal(mdb_env_open(env, odir, 0, 0600), 0);
		assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
		assert_int_equal(mdb_dbi_open(txn, "other", MDB_CREATE, &dbi),
				 0);
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
		assert_int_equal(mdb_txn_commit(txn), 0);
		mdb_env_close(env);
	}
	CHECK_RET(ms_idx_open(odir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "foreign");
	assert_non_null(strstr(err, "not an mstore index"));

	/* an index of the previous version, which had other tables: the
	   version is what it is refused for */
	{
		char vdir[1100];
		struct ms_idx *v1 = NULL;
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		snprintf(vdir, sizeof(vdir), "%s/v1", x.root);
		CHECK_RET(ms_idx_open(vdir, TEST_MAP, &v1, &err), 0, "v1");
		ms_idx_close(&v1);
		assert_int_equal(mdb_env_create(&env), 0);
		assert_int_equal(mdb_env_set_maxdbs(env, 20), 0);
		assert_int_equal(mdb_env_open(env, vdir, 0, 0600), 0);
		assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
		assert_int_equal(mdb_dbi_open(txn, "compacted", 0, &dbi), 0);
		assert_int_equal(mdb_drop(txn, dbi, 1), 0);
		assert_int_equal(mdb_txn_commit(txn), 0);
		mdb_env_close(env);
		memcpy(f, "MSTOIDX\0", 8);
		ms_put32(f + 8, 1);
		ms_put32(f + 12, 0);
		raw_put_format(vdir, f, sizeof(f));
		CHECK_RET(ms_idx_open(vdir, TEST_MAP, &v1, &err), MS_EVERSION,
			  "old version");
	}

	/* after all that, a rebuild gives a good index again */
	CHECK_RET(ms_idx_rebuild(x.idxdir, TEST_MAP, x.log, &err), 0,
		  "rebuild: %s", err);
	tx_open_idx(&x);
	check_ok(x.idx);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_user_by_name(rd, uname, sizeof(uname) - 1, &u), 0,
		  "rebuilt user");
	ms_idx_read_end(&rd);
	tx_free(&x);
}

/* In a child: open the index on this boot and die without closing. */
static void die_with_index_open(const char *dir, const char *boot)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ms_idx *idx = NULL;
		const char *err = NULL;
		ms_idx_test_boot_id(boot);
		_exit(ms_idx_open(dir, TEST_MAP, &idx, &err) == 0 ? 0 : 2);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A message key of the wrong size inside a range (damage): reads and a
   flag change over that range report it; none takes it for the range's
   end and goes on as if the messages after it were not there. */
static void test_bad_msg_key(void **state)
{
	struct tx x;
	uint8_t b[32], k[13];
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_msg m;
	const char *err = NULL;
	uint32_t uid;
	int n, ret, anomalies;

	(void)state;
	tx_init(&x, "idx-badkey", 0);
	ev_user(&x, 1, "kim");
	ev_mbox(&x, 1, 10, 5, 0, "INBOX");
	ev_body(&x, 1, 100, b);
	for (uint32_t u = 1; u <= 5; u++)
		ev_place(&x, 1, 10, u, u, 0, b, 100, NULL);
	assert_int_equal(tx_apply(&x), 0);
	ms_idx_close(&x.idx);
	/* mailbox 10, uid 6, one byte more: after uid 5, where a walk
	   from uid 6 on lands */
	memset(k, 0, sizeof(k));
	k[7] = 10;
	k[11] = 6;
	raw_put(x.idxdir, "msgs", k, sizeof(k), "x", 1);
	tx_open_idx(&x);

	for (int keys = 0; keys < 2; keys++) {
		CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
		CHECK_RET(ms_idx_msgs_range(rd, 10, 1, 9, &it), 0, "iter");
		for (n = 0; (ret = keys ? ms_idx_msgs_next_uid(it, &uid)
					: ms_idx_msgs_next(it, &m)) > 0;
		     n++)
			;
		assert_int_equal(n, 5);
		assert_int_equal(ret, MS_ECORRUPT);
		ms_idx_iter_free(&it);
		ms_idx_read_end(&rd);
	}
	ev_flags(&x, 1, 10, 6, MS_EVENT_MODE_ADD, SEEN, NULL, 1, 9);
	CHECK_RET(tx_apply_run(&x, 0, &anomalies, &err), MS_ECORRUPT, "flags");
	assert_non_null(err);
	ev_expunge(&x, 1, 10, 6, 4, 9);
	CHECK_RET(tx_apply_run(&x, 0, &anomalies, &err), MS_ECORRUPT,
		  "expunge");
	tx_free(&x);
	mst_rmtree(x.root);
}

static void test_reboot_detected(void **state)
{
	struct tx x;
	struct ms_idx *idx = NULL;
	const char *err = NULL;

	(void)state;
	tx_init(&x, "idx-reboot", 0);
	ev_user(&x, 1, "alice");
	assert_int_equal(tx_apply(&x), 0);
	ms_idx_close(&x.idx);

	/* closed cleanly: any boot may open it */
	ms_idx_test_boot_id("boot-b");
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), 0, "clean");
	ms_idx_close(&idx);

	/* the process died with it open, same boot: the page cache had it */
	die_with_index_open(x.idxdir, "boot-a");
	ms_idx_test_boot_id("boot-a");
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), 0, "same boot");
	ms_idx_close(&idx);

	/* died with it open, then the machine went down: not trusted */
	die_with_index_open(x.idxdir, "boot-a");
	ms_idx_test_boot_id("boot-c");
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), MS_ECORRUPT,
		  "other boot");
	assert_non_null(strstr(err, "rebuild"));
	/* and a rebuild makes a new one */
	CHECK_RET(ms_idx_rebuild(x.idxdir, TEST_MAP, x.log, &err), 0,
		  "rebuild: %s", err);
	CHECK_RET(ms_idx_open(x.idxdir, TEST_MAP, &idx, &err), 0, "rebuilt");
	ms_idx_close(&idx);
	ms_idx_test_boot_id(NULL);
	tx_open_idx(&x);
	tx_free(&x);
}

static void test_anomaly_unknown_mailbox(void **state)
{
	struct tx x;
	uint8_t b[32];
	struct ms_idx_txn *txn = NULL;
	struct ms_log_iter *it = NULL;
	struct ms_pos pos, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	const char *err = NULL;
	uint64_t seq;

	(void)state;
	tx_init(&x, "idx-anomaly", 0);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	ev_body(&x, 1, 300, b);
	assert_int_equal(tx_apply(&x), 0);
	char *before = dump_str(x.idx);

	uint64_t bad = ev_place(&x, 1, 99, 1, 1, 0, b, 300, NULL);
	CHECK_RET(ms_log_sync(x.log), 0, "sync");
	CHECK_RET(ms_idx_applied(x.idx, &seq, &pos), 0, "applied");
	CHECK_RET(ms_log_iter_new(x.log, pos, &it), 0, "iter");
	CHECK_RET(ms_idx_begin(x.idx, &txn), 0, "begin");
	int anomalies = 0;
	while (ms_log_iter_next(it, &rpos, &hdr, &payload, &err) > 0) {
		int ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
		if (ret == MS_IDX_ANOMALY) {
			anomalies++;
			assert_int_equal(hdr.seq, bad);
			assert_non_null(strstr(err, "no mailbox 99"));
		}
	}
	ms_log_iter_free(&it);
	CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	assert_int_equal(anomalies, 1);
	struct ms_idx_stats st = stats(x.idx);
	assert_int_equal(st.anomalies, 1);
	assert_int_equal(st.last_anomaly_seq, bad);
	assert_int_equal(st.applied_seq, bad);
	assert_int_equal(st.messages, 0);
	want_body(&x, b, 0, 0);
	want_mbox(&x, 10, 0, 0, 0, 1, 0);
	char *after = dump_str(x.idx);
	assert_string_equal(strchr(strchr(before, '\n') + 1, '\n'),
			    strchr(strchr(after, '\n') + 1, '\n'));
	/* the batch goes on after an anomaly */
	ev_place(&x, 1, 10, 1, 1, 0, b, 300, NULL);
	ev_place(&x, 1, 98, 1, 1, 0, b, 300, NULL);
	ev_place(&x, 1, 10, 2, 2, 0, b, 300, NULL);
	assert_int_equal(tx_apply(&x), 1);
	want_mbox(&x, 10, 2, 2, 600, 3, 2);
	assert_int_equal(stats(x.idx).anomalies, 2);
	check_ok(x.idx);
	free(before);
	free(after);
	tx_free(&x);
}

static void test_map_grows(void **state)
{
	struct tx x;
	uint8_t b[32];
	const char *err = NULL;
	struct ms_idx *small = NULL;
	char dir[1100];
	static const char *const kws[] = {"some-long-keyword-to-take-room",
					  "another-long-keyword-here", NULL};

	(void)state;
	tx_init(&x, "idx-grow", 0);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	ev_body(&x, 1, 100, b);
	for (uint32_t uid = 1; uid <= 10000; uid++)
		ev_place(&x, 1, 10, uid, uid, 0, b, 100, kws);
	CHECK_RET(ms_log_sync(x.log), 0, "sync");

	snprintf(dir, sizeof(dir), "%s/small", x.root);
	CHECK_RET(ms_idx_open(dir, 64 << 10, &small, &err), 0, "open");
	uint64_t before = 0;
	{
		struct ms_idx_rd *rd = NULL;
		struct ms_idx_stats st;
		CHECK_RET(ms_idx_read_begin(small, &rd), 0, "read");
		CHECK_RET(ms_idx_stats(rd, &st), 0, "stats");
		before = st.map_size;
		/* no growing under a reader */
		CHECK_RET(ms_idx_grow(small, 0), MS_ESTATE, "grow");
		ms_idx_read_end(&rd);
	}
	{
		/* a write transaction that filled the map lost what it
		   applied: a reader is refused, not given the older commit */
		struct ms_idx_txn *txn = NULL;
		struct ms_log_iter *li = NULL;
		struct ms_idx_rd *rd = NULL;
		struct ms_pos rpos;
		struct ms_rec_hdr hdr;
		const uint8_t *payload;
		int ret = 0;
		CHECK_RET(ms_log_iter_new(x.log, (struct ms_pos){ 0, 0 }, &li),
			  0, "iter");
		CHECK_RET(ms_idx_begin(small, &txn), 0, "begin");
		CHECK_RET(ms_idx_read_begin(small, &rd), 0, "read in txn");
		ms_idx_read_end(&rd);
		while (ret >= 0 &&
		       ms_log_iter_next(li, &rpos, &hdr, &payload, &err) > 0)
			ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload,
					   &err);
		ms_log_iter_free(&li);
		assert_int_equal(ret, MS_ETOOBIG);
		CHECK_RET(ms_idx_read_begin(small, &rd), MS_ESTATE, "read");
		assert_null(rd);
		ms_idx_abort(&txn);
	}
	CHECK_RET(ms_idx_catch_up(small, x.log, &err), 0, "catch up: %s", err);
	struct ms_idx_stats st = stats(small);
	assert_true(st.map_size > before);
	assert_int_equal(st.messages, 10000);
	check_ok(small);
	ms_idx_close(&small);
	/* reopened with a smaller request, the grown map is kept */
	CHECK_RET(ms_idx_open(dir, 64 << 10, &small, &err), 0, "reopen");
	assert_true(stats(small).map_size >= st.map_size);
	ms_idx_close(&small);
	tx_free(&x);
}

static void test_throughput_smoke(void **state)
{
	struct tx x;
	uint8_t b[32];
	const uint32_t total = 100000, batch = 1000;

	(void)state;
	tx_init(&x, "idx-smoke", 8 << 20);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	ev_body(&x, 1, 2000, b);
	assert_int_equal(tx_apply(&x), 0);
	for (uint32_t uid = 1; uid <= total; uid++) {
		ev_place(&x, 1, 10, uid, uid, uid % 4 ? SEEN : 0, b, 2000,
			 NULL);
		if (uid % batch == 0)
			assert_int_equal(tx_apply(&x), 0);
	}
	want_mbox(&x, 10, total, total / 4, (uint64_t)total * 2000,
		  (uint64_t)total + 1, total);
	want_user(&x, 1, (uint64_t)total * 2000, total);
	want_body(&x, b, total, 0);
	struct ms_idx_stats st = stats(x.idx);
	assert_int_equal(st.messages, total);
	/* every record of the log applied once; one seal per full segment
	   is not counted */
	struct ms_log_status ls;
	ms_log_get_status(x.log, &ls);
	assert_true(ls.nsegs >= 2);
	assert_int_equal(st.applied_seq, ls.durable_seq);
	assert_int_equal(st.records + (ls.nsegs - 1), ls.durable_seq);
	check_ok(x.idx);
	tx_free(&x);
}

/* ---- undelete, purge, compaction ------------------------------------------
 */

/* The changes of a mailbox since 0 as "m<uid>:<modseq> x<modseq>:<lo>-<hi>". */
static void want_feed(struct ms_idx *idx, uint64_t mbox, const char *want)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_change c;
	char got[512] = "";
	size_t o = 0;

	CHECK_RET(ms_idx_read_begin(idx, &rd), 0, "read");
	CHECK_RET(ms_idx_changes_iter(rd, mbox, 0, &it), 0, "changes");
	while (ms_idx_changes_next(it, &c) > 0) {
		if (c.is_expunge)
			o += (size_t)snprintf(got + o, sizeof(got) - o,
					      "%sx%llu:%u-%u", o ? " " : "",
					      (unsigned long long)c.modseq,
					      c.uid_lo, c.uid_hi);
		else
			o += (size_t)snprintf(got + o, sizeof(got) - o,
					      "%sm%u:%llu", o ? " " : "",
					      c.msg.uid,
					      (unsigned long long)c.modseq);
	}
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	if (strcmp(got, want) != 0)
		fail_msg("mailbox %llu feed \"%s\", want \"%s\"",
			 (unsigned long long)mbox, got, want);
}

static uint64_t mbox_expunged(struct ms_idx *idx, uint64_t mbox)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_mbox m;

	CHECK_RET(ms_idx_read_begin(idx, &rd), 0, "read");
	CHECK_RET(ms_idx_mbox_get(rd, mbox, &m), 0, "mbox");
	ms_idx_read_end(&rd);
	return m.expunged;
}

static uint64_t live_total(struct ms_idx *idx)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_seg s;
	uint64_t total = 0;

	CHECK_RET(ms_idx_read_begin(idx, &rd), 0, "read");
	CHECK_RET(ms_idx_segs_iter(rd, &it), 0, "segs");
	while (ms_idx_segs_next(it, &s) > 0)
		total += s.live_bytes;
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	return total;
}

/* ms_idx_rebuild from x's log into <root>/<name>: its dump equals x's. */
static void rebuild_same(struct tx *x, const char *name)
{
	char dir[1100];
	const char *err = NULL;
	struct ms_idx *r = NULL;

	CHECK_RET(ms_log_sync(x->log), 0, "sync");
	snprintf(dir, sizeof(dir), "%s/%s", x->root, name);
	CHECK_RET(ms_idx_rebuild(dir, TEST_MAP, x->log, &err), 0, "rebuild: %s",
		  err);
	CHECK_RET(ms_idx_open(dir, TEST_MAP, &r, &err), 0, "open: %s", err);
	check_ok(r);
	char *a = dump_str(x->idx), *b = dump_str(r);
	same_dump(a, b, name);
	free(a);
	free(b);
	ms_idx_close(&r);
}

static void test_undelete(void **state)
{
	struct tx x;
	uint8_t b1[32], b2[32];
	uint64_t lb1, lb2, p1, p2, p3;
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_msg m;

	(void)state;
	tx_init(&x, "idx-undelete", 0);
	ev_user(&x, 1, "alice");
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	ev_body(&x, 1, 1000, b1);
	lb1 = x.last_len;
	ev_body(&x, 2, 2000, b2);
	lb2 = x.last_len;
	ev_place(&x, 1, 10, 1, 1, 0, b1, 1000, NULL);
	p1 = x.last_len;
	ev_place(&x, 1, 10, 2, 2, SEEN, b2, 2000, NULL);
	p2 = x.last_len;
	x.now = 5000;
	ev_expunge(&x, 1, 10, 3, 1, 1);
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 1, 0, 2000, 3, 3);
	want_body(&x, b1, 0, 1);
	assert_int_equal(mbox_expunged(x.idx, 10), 1);
	assert_int_equal(live_total(x.idx), lb1 + lb2 + p1 + p2);

	/* undelete uid 1 as uid 3: same body, new uid, the old one leaves
	   the expunged set with its feed entry and live bytes */
	static const char *const kw[] = {"restored", NULL};
	ev_place_r(&x, 1, 10, 3, 4, 0, b1, 1000, kw, 1);
	p3 = x.last_len;
	assert_int_equal(tx_apply(&x), 0);
	want_mbox(&x, 10, 2, 1, 3000, 4, 4);
	want_user(&x, 1, 3000, 2);
	want_body(&x, b1, 1, 0);
	want_body(&x, b2, 1, 0);
	want_msg(&x, 10, 3, 0, 4, "restored");
	assert_int_equal(mbox_expunged(x.idx, 10), 0);
	want_feed(x.idx, 10, "m2:2 m3:4");
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_expunged_get(rd, 10, 1, &m), MS_ENOTFOUND, "gone");
	CHECK_RET(ms_idx_msg_get(rd, 10, 1, &m), MS_ENOTFOUND, "not back");
	CHECK_RET(ms_idx_msg_get(rd, 10, 3, &m), 0, "restored");
	assert_memory_equal(m.body_key, b1, 32);
	ms_idx_read_end(&rd);
	assert_int_equal(live_total(x.idx), lb1 + lb2 + p2 + p3);
	assert_int_equal(stats(x.idx).expunged, 0);
	check_ok(x.idx);

	/* restoring a uid that is not expunged places the message all the
	   same, and is no anomaly (a rebuild after compaction meets it);
	   placing an expunged uid is one, as before */
	ev_expunge(&x, 1, 10, 5, 2, 2);
	ev_place_r(&x, 1, 10, 4, 6, SEEN, b2, 2000, NULL, 77);
	ev_place_r(&x, 1, 10, 2, 7, SEEN, b2, 2000, NULL, 2);
	assert_int_equal(tx_apply(&x), 1);
	want_mbox(&x, 10, 2, 1, 3000, 5, 6);
	want_body(&x, b2, 1, 1);
	assert_int_equal(mbox_expunged(x.idx, 10), 1);
	/* the body of an undeleted message may also be another one's */
	ev_place_r(&x, 1, 10, 5, 8, SEEN, b2, 2000, NULL, 2);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b2, 2, 0);
	want_feed(x.idx, 10, "m3:4 m4:6 m5:8");
	check_ok(x.idx);
	rebuild_same(&x, "rebuilt");
	tx_free(&x);
}

static void test_purge(void **state)
{
	struct tx x;
	uint8_t b1[32], b2[32];
	uint64_t lb2, p3;
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_msg m;
	struct ms_idx_body body;

	(void)state;
	tx_init(&x, "idx-purge", 0);
	alice_two_mboxes(&x, "Trash");
	ev_body(&x, 1, 1000, b1);
	ev_body(&x, 2, 2000, b2);
	lb2 = x.last_len;
	ev_place(&x, 1, 10, 1, 1, 0, b1, 1000, NULL);
	ev_place(&x, 1, 10, 2, 2, 0, b1, 1000, NULL);
	ev_place(&x, 1, 10, 3, 3, 0, b2, 2000, NULL);
	p3 = x.last_len;
	ev_place(&x, 1, 11, 1, 1, 0, b2, 2000, NULL);
	x.now = 1000;
	ev_expunge(&x, 1, 10, 4, 1, 1);
	x.now = 2000;
	ev_expunge(&x, 1, 10, 5, 2, 2);
	ev_expunge(&x, 1, 11, 2, 1, 1);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b1, 0, 2);
	want_body(&x, b2, 1, 1);
	want_feed(x.idx, 10, "m3:3 x4:1-1 x5:2-2");

	/* between the two times: only the older expunge leaves */
	ev_purge(&x, 1500);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b1, 0, 1);
	want_body(&x, b2, 1, 1);
	assert_int_equal(mbox_expunged(x.idx, 10), 1);
	assert_int_equal(mbox_expunged(x.idx, 11), 1);
	want_feed(x.idx, 10, "m3:3 x5:2-2");
	want_mbox(&x, 10, 1, 1, 2000, 4, 5);
	want_user(&x, 1, 2000, 1);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_expunged_get(rd, 10, 1, &m), MS_ENOTFOUND, "purged");
	CHECK_RET(ms_idx_expunged_get(rd, 10, 2, &m), 0, "kept");
	assert_int_equal(m.expunge_time, 2000);
	CHECK_RET(ms_idx_expunged_iter(rd, 10, 0, &it), 0, "iter");
	assert_int_equal(ms_idx_expunged_next(it, &m), 1);
	assert_int_equal(m.uid, 2);
	assert_int_equal(ms_idx_expunged_next(it, &m), 0);
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	check_ok(x.idx);

	/* a purge at the exact time keeps it (< before) */
	ev_purge(&x, 2000);
	assert_int_equal(tx_apply(&x), 0);
	assert_int_equal(mbox_expunged(x.idx, 10), 1);
	/* then everything: b1 has no placement left but stays, located,
	   for dedup, and is not live */
	ev_purge(&x, 2001);
	assert_int_equal(tx_apply(&x), 0);
	want_body(&x, b1, 0, 0);
	want_body(&x, b2, 1, 0);
	assert_int_equal(mbox_expunged(x.idx, 10), 0);
	assert_int_equal(mbox_expunged(x.idx, 11), 0);
	want_feed(x.idx, 10, "m3:3");
	want_feed(x.idx, 11, "");
	want_mbox(&x, 10, 1, 1, 2000, 4, 5);
	want_mbox(&x, 11, 0, 0, 0, 2, 2);
	CHECK_RET(ms_idx_read_begin(x.idx, &rd), 0, "read");
	CHECK_RET(ms_idx_body_get(rd, b1, &body), 0, "b1 stays");
	assert_int_equal(body.plain_len, 1000);
	ms_idx_read_end(&rd);
	assert_int_equal(live_total(x.idx), lb2 + p3);
	assert_int_equal(stats(x.idx).expunged, 0);
	assert_int_equal(stats(x.idx).bodies, 2);
	/* nothing to purge: no change */
	char *a = dump_str(x.idx);
	ev_purge(&x, 3000);
	assert_int_equal(tx_apply(&x), 0);
	char *b = dump_str(x.idx);
	assert_string_equal(strchr(strchr(a, '\n') + 1, '\n'),
			    strchr(strchr(b, '\n') + 1, '\n'));
	free(a);
	free(b);
	check_ok(x.idx);
	rebuild_same(&x, "rebuilt");
	tx_free(&x);
}

/*
 * Compaction.  A compaction round computes the dead records of the sealed
 * segments from the live index exactly as the writer's rule says, and
 * appends one RETIRE per segment to the log.  The live index applies the
 * log as it is; "rebuilt" indexes are fed the same log with the dropped
 * records replaced by HOLE headers (NULL payload), as a rebuild from the
 * compacted log would see them.
 */
struct drop_at {
	struct ms_pos pos;
	uint8_t type;
	uint8_t key[32];
};

struct dropset {
	struct drop_at *v;
	size_t n, cap;
};

static int pos_in(const struct ms_pos *v, size_t n, struct ms_pos p)
{
	for (size_t i = 0; i < n; i++) {
		if (ms_pos_cmp(v[i], p) == 0)
			return 1;
	}
	return 0;
}

static int dropped(const struct dropset *d, struct ms_pos p)
{
	for (size_t i = 0; i < d->n; i++) {
		if (ms_pos_cmp(d->v[i].pos, p) == 0)
			return 1;
	}
	return 0;
}

/* The place positions of every present and expunged message. */
static struct ms_pos *placed_positions(struct ms_idx *idx, size_t *n_r)
{
	struct ms_idx_rd *rd = NULL;
	struct ms_idx_iter *ui = NULL, *mi = NULL, *it = NULL;
	struct ms_idx_user u;
	struct ms_idx_mbox mb;
	struct ms_idx_msg m;
	struct ms_pos *v = NULL;
	size_t n = 0, cap = 0;

	CHECK_RET(ms_idx_read_begin(idx, &rd), 0, "read");
	CHECK_RET(ms_idx_users_iter(rd, &ui), 0, "users");
	while (ms_idx_users_next(ui, &u) > 0) {
		CHECK_RET(ms_idx_mboxes_iter(rd, u.id, &mi), 0, "mboxes");
		while (ms_idx_mboxes_next(mi, &mb) > 0) {
			for (int x = 0; x < 2; x++) {
				if (x)
					CHECK_RET(ms_idx_expunged_iter(
							  rd, mb.id, 0, &it),
						  0, "xp");
				else
					CHECK_RET(ms_idx_msgs_iter(rd, mb.id, 1,
								   UINT32_MAX,
								   &it),
						  0, "msgs");
				while ((x ? ms_idx_expunged_next(it, &m)
					  : ms_idx_msgs_next(it, &m)) > 0) {
					if (n == cap) {
						cap = cap ? 2 * cap : 64;
						v = ms_realloc(
							v, cap * sizeof(*v));
					}
					v[n++] = m.place_pos;
				}
				ms_idx_iter_free(&it);
			}
		}
		ms_idx_iter_free(&mi);
	}
	ms_idx_iter_free(&ui);
	ms_idx_read_end(&rd);
	*n_r = n;
	return v;
}

/*
 * One compaction round: the dead records of the sealed segments of x's
 * log but skip_seg (and those dropped before), by the rule, from x's
 * index (which has applied everything); added to all; one RETIRE per
 * segment appended.  Returns the number of records dropped this round.
 */
static size_t compact_round(struct tx *x, uint64_t skip_seg,
			    struct dropset *all)
{
	struct ms_log_iter *it = NULL;
	struct ms_pos start = {0, 0}, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	const char *err = NULL;
	struct ms_idx_rd *rd = NULL;
	size_t nplaced, first = all->n;
	struct ms_pos *placed = placed_positions(x->idx, &nplaced);
	uint64_t active = x->last_pos.seg;
	int ret;

	CHECK_RET(ms_log_sync(x->log), 0, "sync");
	CHECK_RET(ms_idx_read_begin(x->idx, &rd), 0, "read");
	CHECK_RET(ms_log_iter_new(x->log, start, &it), 0, "iter");
	while ((ret = ms_log_iter_next(it, &rpos, &hdr, &payload, &err)) > 0) {
		struct drop_at d = {.pos = rpos, .type = hdr.type};
		int dead = 0;

		if (rpos.seg >= active || rpos.seg == skip_seg ||
		    dropped(all, rpos))
			continue;
		if (hdr.type == MS_REC_NOOP) {
			dead = 1;
		} else if (hdr.type == MS_REC_PLACE) {
			dead = !pos_in(placed, nplaced, rpos);
		} else if (hdr.type == MS_REC_BODY) {
			struct ms_idx_body b;
			uint64_t plain;
			assert_int_equal(
				ms_body_peek(payload, hdr.len, d.key, &plain),
				0);
			dead = ms_idx_body_get(rd, d.key, &b) == 0 &&
			       b.refcount == 0 && b.expunged_refs == 0 &&
			       ms_pos_cmp(b.pos, rpos) == 0;
		}
		if (!dead)
			continue;
		if (all->n == all->cap) {
			all->cap = all->cap ? 2 * all->cap : 64;
			all->v = ms_realloc(all->v, all->cap * sizeof(*all->v));
		}
		all->v[all->n++] = d;
	}
	if (ret < 0)
		fail_msg("iter: %s", err);
	ms_log_iter_free(&it);
	ms_idx_read_end(&rd);
	free(placed);
	/* the log is in order: this round's drops come by segment, offset */
	for (size_t i = first; i < all->n;) {
		size_t j = i;
		struct ms_event_drop *dv;
		while (j < all->n && all->v[j].pos.seg == all->v[i].pos.seg)
			j++;
		dv = ms_calloc(j - i, sizeof(*dv));
		for (size_t k = i; k < j; k++) {
			dv[k - i].off = all->v[k].pos.off;
			dv[k - i].type = all->v[k].type;
			if (all->v[k].type == MS_REC_BODY)
				memcpy(dv[k - i].key, all->v[k].key, 32);
		}
		ev_retire(x, all->v[i].pos.seg, 0x5eed0000 + all->v[i].pos.seg,
			  dv, (uint32_t)(j - i));
		free(dv);
		i = j;
	}
	return all->n - first;
}

/*
 * Feed idx x's log from idx's applied position, the records in holes as
 * HOLE headers without payload, in transactions of 5 records.  Returns
 * the anomalies.
 */
static int feed_holes(struct tx *x, struct ms_idx *idx,
		      const struct dropset *holes)
{
	struct ms_log_iter *it = NULL;
	struct ms_idx_txn *txn = NULL;
	struct ms_pos pos, rpos;
	struct ms_rec_hdr hdr;
	const uint8_t *payload;
	const char *err = NULL;
	uint64_t seq;
	unsigned n = 0;
	int anomalies = 0, ret;

	CHECK_RET(ms_log_sync(x->log), 0, "sync");
	CHECK_RET(ms_idx_applied(idx, &seq, &pos), 0, "applied");
	CHECK_RET(ms_log_iter_new(x->log, pos, &it), 0, "iter");
	while ((ret = ms_log_iter_next(it, &rpos, &hdr, &payload, &err)) > 0) {
		if (txn == NULL)
			CHECK_RET(ms_idx_begin(idx, &txn), 0, "begin");
		if (dropped(holes, rpos)) {
			hdr.type = MS_REC_HOLE;
			hdr.flags = 0;
			payload = NULL;
		}
		ret = ms_idx_apply(txn, hdr.seq, rpos, &hdr, payload, &err);
		if (ret < 0)
			fail_msg("apply seq %llu: %s",
				 (unsigned long long)hdr.seq, err);
		if (ret == MS_IDX_ANOMALY)
			anomalies++;
		if (++n % 5 == 0)
			CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	}
	if (ret < 0)
		fail_msg("iter: %s", err);
	if (txn != NULL)
		CHECK_RET(ms_idx_commit(&txn), 0, "commit");
	ms_log_iter_free(&it);
	return anomalies;
}

static struct ms_idx *idx_at(struct tx *x, const char *name)
{
	char dir[1100];
	const char *err = NULL;
	struct ms_idx *r = NULL;

	snprintf(dir, sizeof(dir), "%s/%s", x->root, name);
	CHECK_RET(ms_idx_open(dir, TEST_MAP, &r, &err), 0, "open: %s", err);
	return r;
}

/* NOOPs until the log is in a new segment. */
static void next_segment(struct tx *x)
{
	static const uint8_t junk[1500];
	uint64_t seg = x->last_pos.seg;

	while (x->last_pos.seg == seg)
		tx_append(x, MS_REC_NOOP, 0, junk, sizeof(junk));
}

static void same_idx(struct ms_idx *a, struct ms_idx *b, const char *what)
{
	check_ok(a);
	check_ok(b);
	char *da = dump_str(a), *db = dump_str(b);
	same_dump(da, db, what);
	free(da);
	free(db);
}

static int has_drop(const struct dropset *d, struct ms_pos p, uint8_t type)
{
	for (size_t i = 0; i < d->n; i++) {
		if (ms_pos_cmp(d->v[i].pos, p) == 0 && d->v[i].type == type)
			return 1;
	}
	return 0;
}

static void test_compaction_equivalence(void **state)
{
	struct tx x;
	uint8_t k[9][32], ka[32], kd[32], kd2[32];
	struct ms_pos body_ka, place_a, place_b, body_kd1, place_r;
	struct ms_pos body_k0 = {0, 0}, body_k8 = {0, 0};
	struct dropset holes = {0};
	static const char *const kw[] = {"x", NULL};

	(void)state;
	tx_init(&x, "idx-compact", 16 << 10);
	/* round 1 ------------------------------------------------------ */
	ev_user(&x, 1, "alice");
	ev_user(&x, 2, "bob");
	ev_mbox(&x, 1, 10, 1, 0, "INBOX");
	ev_mbox(&x, 1, 11, 2, 0, "Trash");
	ev_mbox(&x, 2, 20, 3, 0, "INBOX");
	ev_mbox(&x, 2, 21, 4, 0, "Other");
	for (int i = 0; i < 9; i++) {
		ev_body(&x, 10 + (uint64_t)i, 3000 + (size_t)i * 500, k[i]);
		if (i == 0)
			body_k0 = x.last_pos;
		if (i == 8)
			body_k8 = x.last_pos;
	}
	/* a body written twice: the second record takes the entry */
	ev_body(&x, 99, 2500, kd);
	body_kd1 = x.last_pos;
	ev_simple(&x, MS_REC_NOOP);
	for (uint32_t uid = 1; uid <= 6; uid++)
		ev_place(&x, 1, 10, uid, uid, uid % 2 ? SEEN : 0, k[uid - 1],
			 3000 + (uid - 1) * 500, NULL);
	ev_place(&x, 1, 11, 1, 1, 0, k[6], 6000, NULL);
	/* k0 shared: INBOX uid 1 stays, this one is purged */
	ev_place(&x, 1, 11, 2, 2, 0, k[0], 3000, NULL);
	/* uid 3, Trash's highest: dropped, its EXPUNGE kept */
	ev_place(&x, 1, 11, 3, 3, 0, k[7], 6500, kw);
	place_b = x.last_pos;
	ev_place(&x, 2, 20, 1, 1, 0, k[7], 6500, NULL);
	ev_place(&x, 2, 21, 1, 1, 0, k[8], 7000, NULL); /* k8 only here */
	ev_flags(&x, 1, 10, 7, MS_EVENT_MODE_ADD, FLAGGED, kw, 1, 6);
	ev_flags(&x, 1, 11, 4, MS_EVENT_MODE_ADD, SEEN, NULL, 1, 3);
	uint8_t kd_again[32];
	ev_body(&x, 99, 2500, kd_again);
	assert_memory_equal(kd, kd_again, 32);
	ev_place(&x, 2, 20, 2, 2, 0, kd, 2500, NULL);
	/* a body in this segment, its only placement alone in the next */
	ev_body(&x, 77, 4000, ka);
	body_ka = x.last_pos;
	next_segment(&x);
	ev_place(&x, 2, 20, 10, 3, 0, ka, 4000, NULL);
	place_a = x.last_pos;
	assert_true(place_a.seg > body_ka.seg);
	next_segment(&x);
	/* expunges at 1000 (purged below) and 3000 (not) */
	x.now = 1000;
	ev_expunge(&x, 1, 11, 5, 2, 3);
	ev_expunge(&x, 2, 20, 4, 10, 10); /* ka's only placement */
	ev_expunge(&x, 2, 20, 5, 2, 2);   /* kd's only placement */
	ev_expunge(&x, 1, 10, 8, 5, 5);
	/* undelete uid 5 as uid 7: uid 5's PLACE is dead */
	ev_place_r(&x, 1, 10, 7, 9, 0, k[4], 5000, NULL, 5);
	place_r = x.last_pos;
	x.now = 3000;
	ev_expunge(&x, 1, 10, 10, 6, 6);
	ev_mbox_del(&x, 2, 21);
	/* a user that comes and goes, with a body of its own */
	ev_user(&x, 3, "carol");
	ev_mbox(&x, 3, 30, 5, 0, "INBOX");
	ev_body(&x, 33, 3333, kd2);
	ev_place(&x, 3, 30, 1, 1, 0, kd2, 3333, NULL);
	ev_user_del(&x, 3);
	ev_purge(&x, 2000);
	next_segment(&x);
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);
	want_mbox(&x, 11, 1, 0, 6000, 4, 5);

	size_t n1 = compact_round(&x, place_a.seg, &holes);
	assert_true(n1 > 0);
	/* the cases are what they should be */
	assert_true(has_drop(&holes, body_ka, MS_REC_BODY)); /* PLACE kept */
	assert_false(dropped(&holes, place_a));
	assert_true(has_drop(&holes, place_b, MS_REC_PLACE));
	assert_false(dropped(&holes, body_k0)); /* shared, one present */
	assert_true(has_drop(&holes, body_k8, MS_REC_BODY));
	assert_false(dropped(&holes, body_kd1)); /* superseded: not by rule */
	assert_false(dropped(&holes, place_r));
	assert_int_equal(tx_apply(&x), 0); /* the live index: RETIREs */
	check_ok(x.idx);

	struct ms_idx *r1 = idx_at(&x, "rebuilt1");
	assert_int_equal(feed_holes(&x, r1, &holes), 0);
	same_idx(x.idx, r1, "round 1: live vs rebuilt");
	/* uidnext of Trash comes from the EXPUNGE of its dropped uid 3 */
	{
		struct ms_idx_rd *rd = NULL;
		struct ms_idx_mbox m;
		CHECK_RET(ms_idx_read_begin(r1, &rd), 0, "read");
		CHECK_RET(ms_idx_mbox_get(rd, 11, &m), 0, "Trash");
		assert_int_equal(m.uidnext, 4);
		assert_int_equal(m.highestmodseq, 5);
		ms_idx_read_end(&rd);
	}
	struct ms_idx_stats st = stats(x.idx);
	assert_true(st.compacted_segments >= 2);

	/* round 2: more changes, then compaction again -------------------- */
	ev_place(&x, 1, 10, 8, 11, 0, k[1], 3500, NULL); /* dedup: k1 */
	uint8_t kd3[32];
	ev_body(&x, 33, 3333, kd3); /* carol's body, dropped, comes again */
	assert_memory_equal(kd2, kd3, 32);
	ev_place(&x, 1, 10, 9, 12, 0, kd2, 3333, NULL);
	x.now = 4000;
	ev_expunge(&x, 1, 10, 13, 1, 1); /* k0's last placement */
	ev_flags(&x, 1, 10, 14, MS_EVENT_MODE_REMOVE, 0, kw, 1, 9);
	ev_purge(&x, 5000);
	next_segment(&x);
	assert_int_equal(tx_apply(&x), 0);
	size_t n2 = compact_round(&x, place_a.seg, &holes);
	assert_true(n2 > 0);
	assert_true(has_drop(&holes, body_k0, MS_REC_BODY));
	assert_int_equal(tx_apply(&x), 0);
	check_ok(x.idx);

	/* the index rebuilt after round 1, live since */
	struct dropset none = {0};
	assert_int_equal(feed_holes(&x, r1, &none), 0);
	same_idx(x.idx, r1, "round 2: live vs rebuilt after round 1");
	ms_idx_close(&r1);
	/* rebuilt from the log as compacted twice */
	struct ms_idx *r2 = idx_at(&x, "rebuilt2");
	assert_int_equal(feed_holes(&x, r2, &holes), 0);
	same_idx(x.idx, r2, "round 2: live vs rebuilt");
	ms_idx_close(&r2);
	st = stats(x.idx);
	assert_int_equal(st.anomalies, 0);
	free(holes.v);
	tx_free(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_users_mailboxes),
		cmocka_unit_test(test_place_flags_expunge),
		cmocka_unit_test(test_flags_walk),
		cmocka_unit_test(test_change_feed),
		cmocka_unit_test(test_body_refcount),
		cmocka_unit_test(test_mbox_update),
		cmocka_unit_test(test_idempotent_replay),
		cmocka_unit_test(test_rebuild_equals_incremental),
		cmocka_unit_test(test_catch_up),
		cmocka_unit_test(test_corrupt_index),
		cmocka_unit_test(test_bad_msg_key),
		cmocka_unit_test(test_reboot_detected),
		cmocka_unit_test(test_anomaly_unknown_mailbox),
		cmocka_unit_test(test_map_grows),
		cmocka_unit_test(test_throughput_smoke),
		cmocka_unit_test(test_undelete),
		cmocka_unit_test(test_purge),
		cmocka_unit_test(test_compaction_equivalence),
	};

	ms_msg_init("test_idx");
	ms_msg_set_level(MS_MSG_ERROR); /* anomaly warnings are expected */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
