/*
 * test_compact - undelete and compaction through a private mstored:
 * expunged mail comes back within the undelete window and not after it;
 * the last placement of a body frees it after compaction (the blocks go
 * back to the filesystem, the rebuilt index equals the live one); and
 * compaction while other clients append and fetch loses nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client.h"
#include "event.h"
#include "log.h"
#include "msd.h"
#include "msd_cm.h"
#include "mstest.h"

static struct ms_rep_copy undelete(struct ms_client *c, const char *user,
				   const char *mbox, int64_t since, int want)
{
	struct ms_req q = {.op = MS_OP_UNDELETE};
	struct ms_reply rep;
	q.u.undelete.user = ms_pstr_c(user);
	q.u.undelete.mailbox = ms_pstr_c(mbox);
	q.u.undelete.since = since;
	assert_int_equal(msd_req(c, &q, &rep), want);
	return want == 0 ? rep.u.copy : (struct ms_rep_copy){0};
}

static void expunge(struct ms_client *c, const char *mbox, uint32_t lo,
		    uint32_t hi)
{
	struct ms_uid_range r = {lo, hi};
	struct ms_req q = {.op = MS_OP_EXPUNGE};
	struct ms_reply rep;
	q.u.uids.mailbox = ms_pstr_c(mbox);
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &r;
	assert_int_equal(msd_req(c, &q, &rep), 0);
}

/* COMPACT through the admin socket; the reply's counter key. */
static uint64_t compact(struct ms_client *adm, uint32_t threshold,
			const char *key)
{
	struct ms_req q = {.op = MS_OP_COMPACT};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter k;
	q.u.compact.threshold = threshold;
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	ms_proto_iter_counters(&it, &rep.u.counters);
	while (ms_proto_next_counter(&it, &k) > 0)
		if (k.key.len == strlen(key) &&
		    memcmp(k.key.s, key, k.key.len) == 0)
			return k.value;
	fail_msg("no %s in the compact reply", key);
	return 0;
}

static uint64_t quota_used(struct ms_client *c, uint64_t *msgs_r)
{
	struct ms_req q = {.op = MS_OP_QUOTA_GET};
	struct ms_reply rep;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	*msgs_r = rep.u.quota.used_messages;
	return rep.u.quota.used_bytes;
}

static void body_is(struct ms_client *c, const char *mbox, uint32_t uid,
		    const void *want, size_t len)
{
	struct ms_buf b;
	const char *err = "";
	ms_buf_init(&b, 0);
	int ret = ms_client_fetch_body(c, mbox, uid, 0, &b, &err);
	if (ret < 0)
		fail_msg("fetch %s uid %u: %s", mbox, uid, err);
	assert_int_equal(b.len, len);
	assert_memory_equal(b.data, want, len);
	ms_buf_free(&b);
}

/* Stop, dump the index, delete it, start (rebuild), stop, dump again:
   the log alone gives the same index. */
static void rebuild_equal(struct msd *d)
{
	assert_int_equal(msd_stop(d), 0);
	char *before = msd_index_dump(d->index);
	mst_rmtree(d->index);
	msd_start(d);
	assert_int_equal(msd_stop(d), 0);
	char *after = msd_index_dump(d->index);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

/* Run `mstore -c CONF args`; its exit status, stdout in out (if set). */
static int tool(struct msd *d, const char *args, char out[4096])
{
	char cmd[4000];
	const char *b = getenv("MSTORE_BUILD");
	snprintf(cmd, sizeof(cmd), "%s/mstore -c %s %s 2>/dev/null",
		 b ? b : "build", d->conf, args);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out ? out : cmd, 1, 4095, p);
	if (out != NULL)
		out[n] = '\0';
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* CHANGES since a modseq: its status; on success the reply in *r. */
static int changes(struct ms_client *c, const char *mbox, uint64_t since,
		   struct ms_rep_changes *r)
{
	struct ms_req q = {.op = MS_OP_CHANGES};
	struct ms_reply rep;
	q.u.changes.mailbox = ms_pstr_c(mbox);
	q.u.changes.since_modseq = since;
	int ret = msd_req(c, &q, &rep);
	if (ret == 0 && r != NULL)
		*r = rep.u.changes;
	return ret;
}

static void test_undelete(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-undel", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "ivy"), 0);
	assert_int_equal(msd_user_add(&d, "jay"), 0);
	struct ms_client *c = msd_connect(&d, "ivy");
	char body[10][300];
	for (int i = 0; i < 10; i++) {
		mst_fill((uint8_t *)body[i], sizeof(body[i]), (uint64_t)i);
		uint32_t fl = i >= 2 && i <= 5 ? MS_EVENT_FLAG_DELETED |
							 MS_EVENT_FLAG_SEEN
					       : 0;
		assert_int_equal(
			msd_append1(c, "INBOX", body[i], sizeof(body[i]), fl)
				.status,
			0);
	}
	uint64_t m0, b0 = quota_used(c, &m0);
	uint64_t hms0 = msd_mbox_status(c, "INBOX").highestmodseq;
	expunge(c, "INBOX", 3, 6);
	uint64_t m1, b1 = quota_used(c, &m1);
	assert_int_equal(m1, m0 - 4);
	assert_int_equal(b1, b0 - 4 * sizeof(body[0]));
	struct ms_mbox_info mi = msd_mbox_status(c, "INBOX");
	assert_int_equal(mi.messages, 6);

	/* another user's mailbox: refused in a user session */
	undelete(c, "jay", "INBOX", 0, -EACCES);
	/* a since in the future finds nothing */
	struct ms_rep_copy r =
		undelete(c, "", "INBOX", (int64_t)time(NULL) + 3600, 0);
	assert_int_equal(r.pairs.n, 0);

	r = undelete(c, "", "INBOX", 0, 0);
	assert_int_equal(r.pairs.n, 4);
	assert_int_equal(r.uidvalidity, mi.uidvalidity);
	/* the expunges of uids 3..6 left the change feed with them: a
	   client from before them resynchronises in full */
	assert_int_equal(changes(c, "INBOX", hms0, NULL), MS_ESTATE);
	assert_int_equal(
		changes(c, "INBOX", msd_mbox_status(c, "INBOX").highestmodseq,
			NULL),
		0);
	struct ms_proto_iter it;
	struct ms_uid_pair pr;
	uint32_t want_src = 3, want_dst = 11;
	ms_proto_iter_pairs(&it, &r.pairs);
	while (ms_proto_next_pair(&it, &pr) > 0) {
		assert_int_equal(pr.src_uid, want_src++);
		assert_int_equal(pr.dst_uid, want_dst++);
	}
	for (uint32_t u = 11; u <= 14; u++)
		body_is(c, "INBOX", u, body[u - 9], sizeof(body[0]));
	/* \Deleted is gone (or the next EXPUNGE would take them again);
	   \Seen stays */
	struct ms_req q = {.op = MS_OP_FETCH_META};
	struct ms_reply rep;
	struct ms_uid_range all = {11, 14};
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &all;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	struct ms_msg_meta mm;
	int n = 0;
	ms_proto_iter_metas(&it, &rep.u.metas);
	while (ms_proto_next_meta(&it, &mm) > 0) {
		assert_int_equal(mm.flags, MS_EVENT_FLAG_SEEN);
		n++;
	}
	assert_int_equal(n, 4);
	uint64_t m2, b2 = quota_used(c, &m2);
	assert_int_equal(m2, m0);
	assert_int_equal(b2, b0);
	mi = msd_mbox_status(c, "INBOX");
	assert_int_equal(mi.messages, 10);
	assert_int_equal(mi.uidnext, 15);
	/* nothing is restored twice */
	r = undelete(c, "", "INBOX", 0, 0);
	assert_int_equal(r.pairs.n, 0);

	/* a moved message is not restorable where it was */
	q = (struct ms_req){.op = MS_OP_MBOX_CREATE};
	q.u.mbox.name = MS_PSTR("Old");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	struct ms_uid_range one = {1, 1};
	q = (struct ms_req){.op = MS_OP_MOVE};
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &one;
	q.u.uids.dst = MS_PSTR("Old");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	r = undelete(c, "", "INBOX", 0, 0);
	assert_int_equal(r.pairs.n, 0);

	/* the tool: bad times refused, then the same op through it */
	expunge(c, "INBOX", 11, 11);
	assert_int_equal(tool(&d, "undelete ivy INBOX --since yesterday", NULL),
			 2);
	assert_int_equal(
		tool(&d, "undelete ivy INBOX --since 2026-13-01", NULL), 2);
	char out[4096];
	assert_int_equal(tool(&d, "undelete ivy INBOX --since 1h", out), 0);
	assert_non_null(strstr(out, "uid 11 restored as uid 15"));
	assert_non_null(strstr(out, "1 messages restored in INBOX of ivy"));
	assert_int_equal(tool(&d, "undelete nobody INBOX", out), 1);

	/* the admin names the user */
	expunge(c, "Old", 1, 1);
	struct ms_client *adm = msd_connect(&d, NULL);
	undelete(adm, "", "Old", 0, -EINVAL);
	r = undelete(adm, "ivy", "Old", 0, 0);
	assert_int_equal(r.pairs.n, 1);
	body_is(c, "Old", 2, body[0], sizeof(body[0]));
	assert_int_equal(msd_counter(adm, "ops.undeleted"), 6);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);
}

/* past the window nothing comes back, and compaction may free it */
static void test_undelete_window(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-window", "undelete_window = 1s");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "kim"), 0);
	struct ms_client *c = msd_connect(&d, "kim");
	assert_int_equal(msd_append1(c, "INBOX", "old mail", 8, 0).status, 0);
	expunge(c, "INBOX", 1, 1);
	sleep(3);
	struct ms_rep_copy r = undelete(c, "", "INBOX", 0, 0);
	assert_int_equal(r.pairs.n, 0);
	/* the purge takes it out of the index for good */
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_req q = {.op = MS_OP_COMPACT};
	struct ms_reply rep;
	q.u.compact.purge_only = 1;
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);
}

/*
 * The change feed after a purge: a client whose modseq is older than an
 * expunge the purge dropped (one that left the undelete window, or a
 * MOVE's source) gets MS_ESTATE and resynchronises in full; one that saw
 * those expunges, and a full listing (since 0), are answered.  The
 * boundary survives a rebuild, also from a log whose PLACE records of the
 * purged messages were compacted away.
 */
static void test_changes_after_purge(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-feed",
		  "undelete_window = 1s\nsegment_size = 1M\n"
		  "compact_interval = 0");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "max"), 0);
	struct ms_client *c = msd_connect(&d, "max");
	struct ms_req q = {.op = MS_OP_MBOX_CREATE};
	struct ms_reply rep;
	q.u.mbox.name = MS_PSTR("Other");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(msd_append1(c, "INBOX", "m", 1, 0).status, 0);
	uint64_t m0 = msd_mbox_status(c, "INBOX").highestmodseq;

	/* before the purge the feed lists the expunge and the move */
	expunge(c, "INBOX", 1, 1);
	struct ms_uid_range r2 = {2, 2};
	q = (struct ms_req){.op = MS_OP_MOVE};
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &r2;
	q.u.uids.dst = MS_PSTR("Other");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	uint64_t m1 = msd_mbox_status(c, "INBOX").highestmodseq;
	struct ms_rep_changes ch;
	assert_int_equal(changes(c, "INBOX", m0, &ch), 0);
	assert_int_equal(ch.expunged.n, 1); /* 1:2 */
	uint32_t lo, hi;
	assert_int_equal(ms_uid_set_range(&ch.expunged, 0, &lo, &hi), 0);
	assert_int_equal(lo, 1);
	assert_int_equal(hi, 2);

	/* a later expunge, inside the window at the purge */
	sleep(2);
	struct ms_client *adm = msd_connect(&d, NULL);
	q = (struct ms_req){.op = MS_OP_COMPACT};
	q.u.compact.purge_only = 1;
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	expunge(c, "INBOX", 3, 3);

	assert_int_equal(changes(c, "INBOX", m0, NULL), MS_ESTATE);
	assert_int_equal(changes(c, "INBOX", m1 - 1, NULL), MS_ESTATE);
	/* saw both purged expunges: the feed still answers, with uid 3 */
	assert_int_equal(changes(c, "INBOX", m1, &ch), 0);
	assert_int_equal(ch.expunged.n, 1);
	assert_int_equal(ms_uid_set_range(&ch.expunged, 0, &lo, &hi), 0);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 3);
	/* a full listing: uid 4 only, nothing expunged to report */
	assert_int_equal(changes(c, "INBOX", 0, &ch), 0);
	assert_int_equal(ch.changes.n, 1);
	/* the destination of the move was not purged */
	assert_int_equal(changes(c, "Other", 1, NULL), 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);

	/* the boundary from a log without the PLACE records: a restart
	   rebuilds the index from the compacted log */
	msd_start(&d);
	c = msd_connect(&d, "max");
	adm = msd_connect(&d, NULL);
	static uint8_t fill[200000];
	for (int i = 0; i < 8; i++) { /* seal the first segment */
		mst_fill(fill, sizeof(fill), 500 + (uint64_t)i);
		assert_int_equal(
			msd_append1(c, "Other", fill, sizeof(fill), 0).status,
			0);
	}
	sleep(2); /* uid 3 leaves the window too */
	assert_true(compact(adm, 1000, "records_dropped") >= 3);
	uint64_t m2 = msd_mbox_status(c, "INBOX").highestmodseq;
	assert_int_equal(changes(c, "INBOX", m1, NULL), MS_ESTATE);
	assert_int_equal(changes(c, "INBOX", m2, NULL), 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);
	msd_start(&d);
	c = msd_connect(&d, "max");
	assert_int_equal(changes(c, "INBOX", m1, NULL), MS_ESTATE);
	assert_int_equal(changes(c, "INBOX", m2, NULL), 0);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

static uint64_t seg_blocks(const char *copy, uint64_t seg)
{
	char p[1300];
	struct stat st;
	snprintf(p, sizeof(p), "%s/log/%012llu.seg", copy,
		 (unsigned long long)seg);
	assert_int_equal(stat(p, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Records of a type in the log (mstored stopped or not: read-only). */
static int count_type(struct msd *d, uint8_t type)
{
	struct ms_log_cfg lc = {.dir = {d->primary, d->secondary},
				.readonly = 1};
	struct ms_log *log;
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *p;
	const char *err;
	int n = 0;
	assert_int_equal(ms_log_open(&lc, &log, &err), 0);
	ms_log_iter_new(log, (struct ms_pos){0, 0}, &it);
	while (ms_log_iter_next(it, &pos, &h, &p, &err) == 1)
		n += h.type == type;
	ms_log_iter_free(&it);
	ms_log_close(&log);
	return n;
}

/* one body, 100 placements: 99 expunged keep it, the last frees it */
static void test_compact_single_instance(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-compact",
		  "undelete_window = 0\nsegment_size = 1M\n"
		  "compact_interval = 0");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "lou"), 0);
	struct ms_client *c = msd_connect(&d, "lou");
	static uint8_t big[300000], other[40][30000];
	mst_fill(big, sizeof(big), 77);
	for (int i = 0; i < 100; i++)
		assert_int_equal(
			msd_append1(c, "INBOX", big, sizeof(big), 0).status, 0);
	/* distinct mail after it fills the first segments and seals them */
	for (int i = 0; i < 40; i++) {
		mst_fill(other[i], sizeof(other[i]), 1000 + (uint64_t)i);
		assert_int_equal(
			msd_append1(c, "INBOX", other[i], sizeof(other[i]), 0)
				.status,
			0);
	}
	uint64_t blocks0 = seg_blocks(d.primary, 1);
	struct ms_client *adm = msd_connect(&d, NULL);
	/* a user session may not compact */
	struct ms_req q = {.op = MS_OP_COMPACT};
	struct ms_reply rep;
	assert_int_equal(msd_req(c, &q, &rep), -EACCES);

	expunge(c, "INBOX", 1, 99);
	sleep(2); /* the expunges leave the (zero) window */
	uint64_t dropped = compact(adm, 1000, "records_dropped");
	assert_int_equal(dropped, 99); /* the 99 placements */
	assert_int_equal(count_type(&d, MS_REC_BODY), 41);
	body_is(c, "INBOX", 100, big, sizeof(big));

	expunge(c, "INBOX", 100, 100);
	sleep(2);
	assert_true(compact(adm, 1000, "bytes_dropped") >= sizeof(big) / 2);
	assert_int_equal(count_type(&d, MS_REC_BODY), 40);
	assert_true(count_type(&d, MS_REC_HOLE) >= 100);
	/* the filesystem got the blocks back, on both copies */
	uint64_t blocks1 = seg_blocks(d.primary, 1);
	assert_true(blocks1 + 200000 < blocks0);
	assert_int_equal(seg_blocks(d.secondary, 1), blocks1);
	const char *why;
	assert_true(mst_copies_equal(d.primary, d.secondary, &why));
	for (int i = 0; i < 40; i++)
		body_is(c, "INBOX", 101 + (uint32_t)i, other[i],
			sizeof(other[i]));
	/* the same body again is stored anew, not found in a hole */
	struct ms_append_result ar =
		msd_append1(c, "INBOX", big, sizeof(big), 0);
	assert_int_equal(ar.status, 0);
	body_is(c, "INBOX", ar.uid, big, sizeof(big));
	assert_int_equal(count_type(&d, MS_REC_BODY), 41);
	/* nothing more to do: a second run drops nothing (the tool) */
	char out[4096];
	assert_int_equal(tool(&d, "compact --threshold 1000", out), 0);
	assert_non_null(strstr(out, "records_dropped 0\n"));
	assert_int_equal(tool(&d, "compact --threshold 0", NULL), 2);
	/* offline compaction is refused while mstored runs (one writer) */
	assert_int_equal(tool(&d, "compact --offline", NULL), 2);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);
	/* offline, with mstored stopped */
	assert_int_equal(tool(&d, "compact --offline --threshold 1000", out),
			 0);
	assert_non_null(strstr(out, "segments_compacted 0\n"));
	/* and the store verifies */
	char cmd[4000];
	snprintf(cmd, sizeof(cmd),
		 "%s/mstore verify %s --secondary %s "
		 "--index %s >/dev/null",
		 getenv("MSTORE_BUILD") ? getenv("MSTORE_BUILD") : "build",
		 d.primary, d.secondary, d.index);
	assert_int_equal(system(cmd), 0);
}

/*
 * Compaction while others append and fetch: two writers append distinct
 * bodies to INBOX and fetch back what they wrote; a third fills Trash,
 * which the test empties and compacts again and again.  Every INBOX
 * body stays fetchable, byte for byte.
 */
#define LOAD_WRITERS 2
#define LOAD_MSGS 150

static size_t load_len(uint64_t key)
{
	return 2000 + (size_t)(key * 7919 % 60000);
}

static int load_child(struct msd *d, int w, int fd)
{
	struct ms_client *c = msd_connect(d, "max");
	static uint8_t buf[70000];
	struct ms_buf got;
	const char *err = "";
	ms_buf_init(&got, 0);
	for (int i = 0; i < LOAD_MSGS; i++) {
		uint64_t key = (uint64_t)w * 100000 + (uint64_t)i;
		size_t len = load_len(key);
		mst_fill(buf, len, key);
		struct ms_append_result r = msd_append1(
			c, w == LOAD_WRITERS ? "Trash" : "INBOX", buf, len, 0);
		if (r.status != 0)
			return 1;
		if (w == LOAD_WRITERS)
			continue;
		char line[64];
		int n = snprintf(line, sizeof(line), "%u %llu\n", r.uid,
				 (unsigned long long)key);
		if (write(fd, line, (size_t)n) != n)
			return 2;
		/* read back something written earlier */
		if (ms_client_fetch_body(c, "INBOX", r.uid, 4096, &got, &err) <
			    0 ||
		    got.len != len || memcmp(got.data, buf, len) != 0)
			return 3;
	}
	ms_buf_free(&got);
	ms_client_close(&c);
	return 0;
}

static void test_compact_under_load(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-cload",
		  "undelete_window = 0\nsegment_size = 1M\n"
		  "compact_interval = 0");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "max"), 0);
	struct ms_client *c = msd_connect(&d, "max");
	struct ms_req q = {.op = MS_OP_MBOX_CREATE};
	struct ms_reply rep;
	q.u.mbox.name = MS_PSTR("Trash");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	char keys[1200];
	snprintf(keys, sizeof(keys), "%s/keys", d.dir);
	FILE *kf = fopen(keys, "w+");
	assert_non_null(kf);
	pid_t pid[LOAD_WRITERS + 1];
	for (int w = 0; w <= LOAD_WRITERS; w++) {
		pid[w] = fork();
		assert_true(pid[w] >= 0);
		if (pid[w] == 0)
			_exit(load_child(&d, w, fileno(kf)));
	}
	struct ms_client *adm = msd_connect(&d, NULL);
	uint64_t compacted = 0;
	int running = LOAD_WRITERS + 1;
	while (running > 0) {
		struct ms_mbox_info t = msd_mbox_status(c, "Trash");
		if (t.messages > 0)
			expunge(c, "Trash", 1, t.uidnext - 1);
		compacted += compact(adm, 1000, "segments_compacted");
		usleep(100000);
		for (int w = 0; w <= LOAD_WRITERS; w++) {
			int st;
			if (pid[w] > 0 &&
			    waitpid(pid[w], &st, WNOHANG) == pid[w]) {
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					fail_msg("writer %d failed (%d)", w,
						 st);
				pid[w] = 0;
				running--;
			}
		}
	}
	sleep(1);
	struct ms_mbox_info t = msd_mbox_status(c, "Trash");
	if (t.messages > 0)
		expunge(c, "Trash", 1, t.uidnext - 1);
	sleep(1);
	compacted += compact(adm, 1000, "segments_compacted");
	assert_true(compacted > 0);
	/* every acknowledged INBOX message, byte for byte */
	rewind(kf);
	unsigned uid;
	unsigned long long key;
	int n = 0;
	static uint8_t buf[70000];
	while (fscanf(kf, "%u %llu", &uid, &key) == 2) {
		size_t len = load_len(key);
		mst_fill(buf, len, key);
		body_is(c, "INBOX", uid, buf, len);
		n++;
	}
	fclose(kf);
	assert_int_equal(n, LOAD_WRITERS * LOAD_MSGS);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, n);
	assert_int_equal(msd_counter(adm, "compact.errors"), 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	rebuild_equal(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_undelete),
		cmocka_unit_test(test_undelete_window),
		cmocka_unit_test(test_changes_after_purge),
		cmocka_unit_test(test_compact_single_instance),
		cmocka_unit_test(test_compact_under_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
