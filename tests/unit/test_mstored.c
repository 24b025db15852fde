/*
 * test_mstored - the daemon through its protocol, with a private mstored
 * per test (tests/lib/msd.c): the mail model (users, mailboxes, append,
 * fetch, flags, changes, expunge), single-instance bodies, isolation
 * between users, malformed input, concurrent clients, and an index that
 * is lost or kept across restarts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "chgsnap.h"
#include "client.h"
#include "idx.h"
#include "log.h"
#include "msd.h"
#include "msd_cm.h"
#include "msg.h"
#include "mstest.h"

static void test_mail_model(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "alice"), 0);
	assert_int_equal(msd_user_add(&d, "alice"), -EEXIST);
	struct ms_client *c = msd_connect(&d, "alice");

	/* INBOX exists from the start; create another mailbox */
	struct ms_mbox_info in = msd_mbox_status(c, "INBOX");
	assert_int_equal(in.messages, 0);
	assert_true(in.uidvalidity != 0);
	struct ms_req q = { .op = MS_OP_MBOX_CREATE };
	struct ms_reply rep;
	q.u.mbox.name = MS_PSTR("Archiv/Entwürfe");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(msd_req(c, &q, &rep), -EEXIST);

	/* append three messages, fetch them back byte for byte */
	static const char *bodies[] = {
		"Subject: one\r\n\r\nfirst\r\n",
		"Subject: two\n\nbare LF\n",	/* virtual size counts CRs */
		"",				/* an empty message */
	};
	for (int i = 0; i < 3; i++) {
		struct ms_append_result r =
			msd_append1(c, "INBOX", bodies[i], strlen(bodies[i]),
				i == 0 ? MS_EVENT_FLAG_SEEN : 0);
		assert_int_equal(r.status, 0);
		assert_int_equal(r.uid, (uint32_t)i + 1);
		assert_int_equal(r.uidvalidity, in.uidvalidity);
	}
	struct ms_mbox_info st = msd_mbox_status(c, "INBOX");
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.unseen, 2);
	assert_int_equal(st.uidnext, 4);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ms_client_fetch_body(c, "INBOX", (uint32_t)i + 1,
						      7, &body, &err),
				 0);
		assert_int_equal(body.len, strlen(bodies[i]));
		assert_memory_equal(body.data, bodies[i], body.len);
	}
	struct ms_uid_range all = { 1, 100 };
	q = (struct ms_req){ .op = MS_OP_FETCH_META };
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &all;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.metas.n, 3);
	struct ms_proto_iter it;
	struct ms_msg_meta mm;
	ms_proto_iter_metas(&it, &rep.u.metas);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ms_proto_next_meta(&it, &mm), 1);
		assert_int_equal(mm.uid, (uint32_t)i + 1);
		assert_int_equal(mm.physical_size, strlen(bodies[i]));
	}
	/* three bare LFs: virtual size is 3 more than physical */
	ms_proto_iter_metas(&it, &rep.u.metas);
	ms_proto_next_meta(&it, &mm);
	ms_proto_next_meta(&it, &mm);
	assert_int_equal(mm.virtual_size, mm.physical_size + 3);

	/* flags: \Seen on all, with a keyword; modseq goes up */
	uint64_t hms = msd_mbox_status(c, "INBOX").highestmodseq;
	struct ms_pstr kw = MS_PSTR("$Important");
	q = (struct ms_req){ .op = MS_OP_STORE };
	q.u.store.mailbox = MS_PSTR("INBOX");
	q.u.store.uids.n = 1;
	q.u.store.uids.list = &all;
	q.u.store.mode = MS_EVENT_MODE_ADD;
	q.u.store.flags = MS_EVENT_FLAG_SEEN;
	q.u.store.keywords.n = 1;
	q.u.store.keywords.list = &kw;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	uint64_t m2 = rep.u.store.modseq;
	assert_true(m2 > hms);
	/* version 3: the mailbox, and its modseq before the change */
	assert_true(rep.u.store.have_prev);
	assert_int_equal(rep.u.store.mbox_id, in.mbox_id);
	assert_int_equal(rep.u.store.prev_modseq, hms);
	assert_int_equal(m2, hms + 1);
	assert_int_equal(msd_mbox_status(c, "INBOX").unseen, 0);
	/* CONDSTORE: unchangedsince older than the change fails them all */
	q.u.store.unchangedsince = hms;
	q.u.store.flags = MS_EVENT_FLAG_FLAGGED;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.store.uids.n, 1); /* 1:3 failed */
	/* nothing changed: the modseq stays */
	assert_int_equal(rep.u.store.prev_modseq, m2);
	assert_int_equal(rep.u.store.modseq, m2);

	/* changes since hms: three changed messages */
	q = (struct ms_req){ .op = MS_OP_CHANGES };
	q.u.changes.mailbox = MS_PSTR("INBOX");
	q.u.changes.since_modseq = hms;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.changes.changes.n, 3);
	assert_int_equal(rep.u.changes.expunged.n, 0);

	/* expunge uid 2: gone from meta, in the change feed */
	struct ms_uid_range two = { 2, 2 };
	q = (struct ms_req){ .op = MS_OP_EXPUNGE };
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &two;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.expunge.uids.n, 1);
	assert_true(rep.u.expunge.have_prev);
	assert_int_equal(rep.u.expunge.mbox_id, in.mbox_id);
	assert_int_equal(rep.u.expunge.prev_modseq, m2);
	assert_int_equal(rep.u.expunge.modseq, m2 + 1);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 2);
	q = (struct ms_req){ .op = MS_OP_CHANGES };
	q.u.changes.mailbox = MS_PSTR("INBOX");
	q.u.changes.since_modseq = m2;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.changes.expunged.n, 1);
	assert_int_equal(ms_client_fetch_body(c, "INBOX", 2, 0, &body, &err),
			 MS_ENOTFOUND);
	/* a new message never reuses uid 2, or 3 */
	struct ms_append_result r = msd_append1(c, "INBOX", "x", 1, 0);
	assert_int_equal(r.uid, 4);

	/* survive a restart: same uidvalidity, uids, flags */
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	msd_start(&d);
	c = msd_connect(&d, "alice");
	st = msd_mbox_status(c, "INBOX");
	assert_int_equal(st.uidvalidity, in.uidvalidity);
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.uidnext, 5);
	assert_int_equal(msd_append1(c, "INBOX", "y", 1, 0).uid, 5);
	ms_buf_free(&body);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* A connection to d's user socket that has said nothing yet. */
static int raw_connect(const struct msd *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(d->sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, d->sock, strlen(d->sock) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* One request on a raw connection; the reply's body stays in buf. */
static void raw_call(int fd, const struct ms_req *q, struct ms_buf *buf,
		     struct ms_reply *rep_r)
{
	const char *err = NULL;
	struct ms_proto_hdr h;
	size_t need = MS_PROTO_HDR_SIZE;

	ms_buf_reset(buf);
	assert_int_equal(ms_req_encode(buf, 1, q, &err), 0);
	assert_int_equal(send(fd, buf->data, buf->len, MSG_NOSIGNAL),
			 (ssize_t)buf->len);
	ms_buf_reset(buf);
	for (;;) {
		int ret = ms_proto_frame(buf->data, buf->len, 0, &h, &need,
					 &err);
		if (ret == 0)
			break;
		assert_int_equal(ret, MS_ETRUNC);
		assert_int_equal(ms_buf_reserve(buf, need - buf->len), 0);
		ssize_t n = recv(fd, buf->data + buf->len, need - buf->len, 0);
		assert_true(n > 0);
		buf->len += (size_t)n;
	}
	assert_int_equal(h.op, q->op | MS_OP_REPLY);
	assert_int_equal(ms_reply_decode(h.op, buf->data + MS_PROTO_HDR_SIZE,
					 buf->len - MS_PROTO_HDR_SIZE, rep_r,
					 &err),
			 0);
}

/* A client that speaks version 2 gets STORE and EXPUNGE replies without
   the fields version 3 added (mailbox id, the modseq before); one of
   version 4 gets QUOTA_GET replies without those of version 5 (the
   user's mailboxes, the store's max_mailboxes). */
static void test_store_reply_versions(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-v2", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "vera"), 0);
	struct ms_client *c = msd_connect(&d, "vera");
	assert_int_equal(msd_append1(c, "INBOX", "one", 3, 0).status, 0);
	struct ms_mbox_info in = msd_mbox_status(c, "INBOX");

	for (uint16_t v = 1; v <= MS_PROTO_VERSION; v++) {
		int fd = raw_connect(&d);
		struct ms_buf buf;
		struct ms_reply rep;
		ms_buf_init(&buf, 0);
		struct ms_req q = { .op = MS_OP_HELLO };
		q.u.hello.version = v;
		q.u.hello.role = MS_ROLE_USER;
		q.u.hello.user = MS_PSTR("vera");
		raw_call(fd, &q, &buf, &rep);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.u.hello.version, v);
		uint64_t hms = msd_mbox_status(c, "INBOX").highestmodseq;
		struct ms_uid_range one = { 1, 1 };
		q = (struct ms_req){ .op = MS_OP_STORE };
		q.u.store.mailbox = MS_PSTR("INBOX");
		q.u.store.uids.n = 1;
		q.u.store.uids.list = &one;
		q.u.store.mode = v % 2 ? MS_EVENT_MODE_ADD
				       : MS_EVENT_MODE_REMOVE;
		q.u.store.flags = MS_EVENT_FLAG_FLAGGED;
		raw_call(fd, &q, &buf, &rep);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.u.store.modseq, hms + 1);
		assert_int_equal(rep.u.store.have_prev, v >= 3);
		if (v >= 3) {
			assert_int_equal(rep.u.store.mbox_id, in.mbox_id);
			assert_int_equal(rep.u.store.prev_modseq, hms);
		}
		/* QUOTA_GET: the mailboxes and their limit from version 5 */
		q = (struct ms_req){ .op = MS_OP_QUOTA_GET };
		raw_call(fd, &q, &buf, &rep);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.u.quota.used_messages, 1);
		assert_int_equal(rep.u.quota.have_mailboxes, v >= 5);
		if (v >= 5) {
			assert_int_equal(rep.u.quota.mailboxes, 1);
			assert_int_equal(rep.u.quota.max_mailboxes, 10000);
		}
		ms_buf_free(&buf);
		close(fd);
	}
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

static void test_single_instance(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-sis", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "bob"), 0);
	struct ms_client *c = msd_connect(&d, "bob");
	char big[20000];
	mst_fill((uint8_t *)big, sizeof(big), 5);
	for (int i = 0; i < 100; i++)
		assert_int_equal(msd_append1(c, "INBOX", big, sizeof(big), 0).status,
				 0);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	/* the log holds one body record and 100 placements */
	struct ms_log_cfg lc = { .dir = { d.primary, d.secondary },
				 .readonly = 1 };
	struct ms_log *log;
	const char *err;
	assert_int_equal(ms_log_open(&lc, &log, &err), 0);
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *p;
	int bodies = 0, places = 0;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while (ms_log_iter_next(it, &pos, &h, &p, &err) == 1) {
		bodies += h.type == MS_REC_BODY;
		places += h.type == MS_REC_PLACE;
	}
	ms_log_iter_free(&it);
	ms_log_close(&log);
	assert_int_equal(bodies, 1);
	assert_int_equal(places, 100);
}

static void test_isolation(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-iso", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "alice"), 0);
	assert_int_equal(msd_user_add(&d, "bob"), 0);
	struct ms_client *a = msd_connect(&d, "alice");
	struct ms_client *b = msd_connect(&d, "bob");
	assert_int_equal(msd_append1(a, "INBOX", "secret", 6, 0).status, 0);
	struct ms_req q = { .op = MS_OP_MBOX_CREATE };
	struct ms_reply rep;
	q.u.mbox.name = MS_PSTR("Private");
	assert_int_equal(msd_req(a, &q, &rep), 0);

	/* bob sees his own, empty INBOX and no "Private" */
	assert_int_equal(msd_mbox_status(b, "INBOX").messages, 0);
	q = (struct ms_req){ .op = MS_OP_MBOX_STATUS };
	q.u.mbox.name = MS_PSTR("Private");
	assert_int_equal(msd_req(b, &q, &rep), MS_ENOTFOUND);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	assert_int_equal(ms_client_fetch_body(b, "INBOX", 1, 0, &body, &err),
			 MS_ENOTFOUND);
	/* delivering into alice's mailbox from bob's session is refused */
	struct ms_placement pl = { .user = MS_PSTR("alice"),
				   .mailbox = MS_PSTR("INBOX") };
	q = (struct ms_req){ .op = MS_OP_APPEND };
	q.u.append.body = (const uint8_t *)"x";
	q.u.append.body_len = 1;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	assert_int_equal(msd_req(b, &q, &rep), 0);
	struct ms_proto_iter it;
	struct ms_append_result r;
	ms_proto_iter_results(&it, &rep.u.append);
	ms_proto_next_result(&it, &r);
	assert_int_equal(r.status, -EACCES);
	/* bob cannot expunge or flag alice's uid 1 */
	struct ms_uid_range one = { 1, 1 };
	q = (struct ms_req){ .op = MS_OP_EXPUNGE };
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &one;
	assert_int_equal(msd_req(b, &q, &rep), 0);
	assert_int_equal(rep.u.expunge.uids.n, 0); /* nothing of his */
	assert_int_equal(msd_mbox_status(a, "INBOX").messages, 1);
	/* admin operations from the user socket */
	q = (struct ms_req){ .op = MS_OP_USER_CREATE };
	q.u.user.name = MS_PSTR("mallory");
	assert_int_equal(msd_req(b, &q, &rep), -EACCES);
	q = (struct ms_req){ .op = MS_OP_USER_LIST };
	assert_int_equal(msd_req(b, &q, &rep), -EACCES);
	struct ms_client *x;
	assert_int_equal(ms_client_connect(d.sock, 5000, &x, &err), 0);
	assert_int_equal(ms_client_hello(x, NULL, &err), -EACCES);
	/* nothing before hello; unknown users */
	q = (struct ms_req){ .op = MS_OP_MBOX_LIST };
	assert_int_equal(msd_req(x, &q, &rep), -EACCES);
	assert_int_equal(ms_client_hello(x, "nobody", &err), MS_ENOTFOUND);
	ms_client_close(&x);
	ms_buf_free(&body);
	ms_client_close(&a);
	ms_client_close(&b);
	assert_int_equal(msd_stop(&d), 0);
}

/* raw bytes to the socket: the daemon answers or hangs up, and keeps
   serving everyone else */
static void test_malformed_frames(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-bad", "max_frame = 1M");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "carol"), 0);
	struct ms_client *good = msd_connect(&d, "carol");
	uint64_t rs = 99;
	static uint8_t junk[300000];
	for (int round = 0; round < 60; round++) {
		int fd = raw_connect(&d);
		size_t n = 1 + mst_randn(&rs, round < 50 ? 200 : sizeof(junk));
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)mst_rand(&rs);
		if (round % 3 == 0 && n >= 12) {
			/* a sane header, a garbage body */
			ms_put32(junk, (uint32_t)(n - 4));
			ms_put16(junk + 4, (uint16_t)(1 + round % 42));
			ms_put16(junk + 6, 0);
		}
		if (round == 55) {
			/* a frame header announcing 1 GB */
			ms_put32(junk, 1u << 30);
			n = 12;
		}
		(void)!send(fd, junk, n, MSG_NOSIGNAL);
		shutdown(fd, SHUT_WR);
		char sink[4096];
		while (recv(fd, sink, sizeof(sink), 0) > 0)
			;
		close(fd);
	}
	/* still alive, still correct */
	assert_int_equal(msd_append1(good, "INBOX", "ok", 2, 0).status, 0);
	assert_int_equal(msd_mbox_status(good, "INBOX").messages, 1);
	ms_client_close(&good);
	assert_int_equal(msd_stop(&d), 0);
}

static int cmp_guid(const void *a, const void *b)
{
	return memcmp(a, b, MS_EVENT_GUID_SIZE);
}

/* N processes append to one mailbox and to their own, at once */
static void test_concurrent_appends(void **state)
{
	(void)state;
	enum { NPROC = 6, PER = 150 };
	struct msd d;
	msd_setup(&d, "mstored-conc", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "dave"), 0);
	struct ms_client *c = msd_connect(&d, "dave");
	for (int p = 0; p < NPROC; p++) {
		char name[32];
		snprintf(name, sizeof(name), "box%d", p);
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		struct ms_reply rep;
		q.u.mbox.name = ms_pstr_c(name);
		assert_int_equal(msd_req(c, &q, &rep), 0);
	}
	for (int p = 0; p < NPROC; p++) {
		if (fork() != 0)
			continue;
		struct ms_client *cc = msd_connect(&d, "dave");
		char name[32], msg[2000];
		snprintf(name, sizeof(name), "box%d", p);
		for (int i = 0; i < PER; i++) {
			size_t len = 100 + (size_t)((p * 31 + i * 17) % 1800);
			mst_fill((uint8_t *)msg, len, (uint64_t)p * 100000 + (uint64_t)i);
			struct ms_append_result r1 =
				msd_append1(cc, "INBOX", msg, len, 0);
			struct ms_append_result r2 = msd_append1(cc, name, msg, len, 0);
			if (r1.status != 0 || r2.status != 0 ||
			    r2.uid != (uint32_t)i + 1)
				_exit(1);
		}
		ms_client_close(&cc);
		_exit(0);
	}
	for (int p = 0; p < NPROC; p++) {
		int status;
		wait(&status);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* INBOX: dense uids 1..N*PER; every body comes back whole */
	struct ms_mbox_info st = msd_mbox_status(c, "INBOX");
	assert_int_equal(st.messages, NPROC * PER);
	assert_int_equal(st.uidnext, NPROC * PER + 1);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	for (int p = 0; p < NPROC; p++) {
		char name[32], want[2000];
		snprintf(name, sizeof(name), "box%d", p);
		for (int i = 0; i < PER; i += 7) {
			size_t len = 100 + (size_t)((p * 31 + i * 17) % 1800);
			mst_fill((uint8_t *)want, len, (uint64_t)p * 100000 + (uint64_t)i);
			assert_int_equal(ms_client_fetch_body(c, name,
							      (uint32_t)i + 1,
							      0, &body, &err),
					 0);
			assert_int_equal(body.len, len);
			assert_memory_equal(body.data, want, len);
		}
	}
	ms_buf_free(&body);
	/* every message got its own GUID (the store picks them from a pool
	   of random bytes that refills every 256) */
	struct ms_uid_range all = { 1, NPROC * PER };
	struct ms_req q = { .op = MS_OP_FETCH_META };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_msg_meta mm;
	static uint8_t guids[NPROC * PER][MS_EVENT_GUID_SIZE];
	static const uint8_t zero[MS_EVENT_GUID_SIZE];
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &all;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.metas.n, NPROC * PER);
	ms_proto_iter_metas(&it, &rep.u.metas);
	for (int i = 0; i < NPROC * PER; i++) {
		assert_int_equal(ms_proto_next_meta(&it, &mm), 1);
		assert_memory_not_equal(mm.guid, zero, sizeof(zero));
		memcpy(guids[i], mm.guid, sizeof(mm.guid));
	}
	qsort(guids, NPROC * PER, sizeof(guids[0]), cmp_guid);
	for (int i = 1; i < NPROC * PER; i++)
		assert_memory_not_equal(guids[i - 1], guids[i], sizeof(zero));
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* delete the index: the restart rebuilds the same one from the log */
static void test_index_loss(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-idx", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "erin"), 0);
	struct ms_client *c = msd_connect(&d, "erin");
	for (int i = 0; i < 50; i++)
		msd_append1(c, "INBOX", "hello!!", 5 + (size_t)(i % 3),
			(uint32_t)i & 3);
	struct ms_uid_range r = { 10, 20 };
	struct ms_req q = { .op = MS_OP_EXPUNGE };
	struct ms_reply rep;
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &r;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	char *before = msd_index_dump(d.index);
	mst_rmtree(d.index);
	msd_start(&d);
	c = msd_connect(&d, "erin");
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 39);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	char *after = msd_index_dump(d.index);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

/* FETCH_META of one uid: its flags (must exist). */
static uint32_t meta_flags(struct ms_client *c, uint32_t uid)
{
	struct ms_uid_range r = { uid, uid };
	struct ms_req q = { .op = MS_OP_FETCH_META };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_msg_meta mm;
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &r;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.metas.n, 1);
	ms_proto_iter_metas(&it, &rep.u.metas);
	assert_int_equal(ms_proto_next_meta(&it, &mm), 1);
	assert_int_equal(mm.uid, uid);
	return mm.flags;
}

/* Append message i ("Subject: i", flags i & 3) as uid i + 1, and read it
   back at once: the reply's state is the index's, committed or not. */
static void commit_append(struct ms_client *c, int i)
{
	char msg[64];
	int n = snprintf(msg, sizeof(msg), "Subject: %d\r\n\r\nbody %d\r\n",
			 i, i);
	struct ms_append_result a =
		msd_append1(c, "INBOX", msg, (size_t)n, (uint32_t)i & 3);
	assert_int_equal(a.status, 0);
	assert_int_equal(a.uid, (uint32_t)i + 1);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, i + 1);
	assert_int_equal(meta_flags(c, a.uid), (uint32_t)i & 3);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	assert_int_equal(ms_client_fetch_body(c, "INBOX", a.uid, 0, &body,
					      &err),
			 0);
	assert_int_equal(body.len, (size_t)n);
	assert_memory_equal(body.data, msg, (size_t)n);
	ms_buf_free(&body);
}

/* Applied but not committed: index.committed_seq behind applied_seq. */
static int commit_behind(struct ms_client *c)
{
	uint64_t applied = msd_counter(c, "index.applied_seq");
	uint64_t committed = msd_counter(c, "index.committed_seq");
	assert_true(committed <= applied);
	return committed < applied;
}

/*
 * The index's write transaction is committed now and then, not at every
 * turn: what a reply said is read back before the commit; an idle
 * daemon commits within the interval (its timer); kill -9 with answered
 * appends not committed loses none of them, and the index the restart
 * replays equals one rebuilt from the log.
 */
static void test_index_commit_deferred(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-commit", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "fay"), 0);
	struct ms_client *c = msd_connect(&d, "fay");
	int i = 0, behind = 0;
	for (; i < 30; i++) {
		commit_append(c, i);
		behind += commit_behind(c);
	}
	assert_true(behind > 0);
	/* idle: the commit comes without another request (50 ms) */
	usleep(300 * 1000);
	assert_false(commit_behind(c));
	/* answered and not committed, then killed */
	do {
		commit_append(c, i++);
	} while (!commit_behind(c) && i < 1000);
	assert_true(commit_behind(c));
	ms_client_close(&c);
	msd_kill(&d);
	msd_start(&d);
	c = msd_connect(&d, "fay");
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, i);
	for (int k = 0; k < i; k++)
		assert_int_equal(meta_flags(c, (uint32_t)k + 1), (uint32_t)k & 3);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	char *replayed = msd_index_dump(d.index);
	mst_rmtree(d.index);
	msd_start(&d);
	assert_int_equal(msd_stop(&d), 0);
	char *rebuilt = msd_index_dump(d.index);
	assert_string_equal(replayed, rebuilt);
	free(replayed);
	free(rebuilt);
}

static uint64_t user_quota(struct ms_client *c, uint64_t *msgs_r)
{
	struct ms_req q = { .op = MS_OP_QUOTA_GET };
	struct ms_reply rep;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	*msgs_r = rep.u.quota.used_messages;
	return rep.u.quota.used_bytes;
}

/* A COPY or MOVE of src's uids lo..hi into dst: the status. */
static int copy_move(struct ms_client *c, uint16_t op, const char *src,
		     uint32_t lo, uint32_t hi, const char *dst,
		     struct ms_reply *rep)
{
	struct ms_uid_range r = { lo, hi };
	struct ms_req q = { .op = op };
	q.u.uids.mailbox = ms_pstr_c(src);
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &r;
	q.u.uids.dst = ms_pstr_c(dst);
	return msd_req(c, &q, rep);
}

/* rename (children too), delete, subscribe, copy, move, quota, wait */
static void test_mailbox_ops(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-ops", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "fay"), 0);
	struct ms_client *c = msd_connect(&d, "fay");
	struct ms_req q;
	struct ms_reply rep;
	static const char *names[] = { "Work", "Work/2025", "Work/2025/Q1",
				       "Worker" };
	for (size_t i = 0; i < 4; i++) {
		q = (struct ms_req){ .op = MS_OP_MBOX_CREATE };
		q.u.mbox.name = ms_pstr_c(names[i]);
		assert_int_equal(msd_req(c, &q, &rep), 0);
	}
	assert_int_equal(msd_append1(c, "Work/2025", "m1", 2, 0).status, 0);
	uint32_t uv = msd_mbox_status(c, "Work/2025").uidvalidity;

	/* rename moves the children, not "Worker"; UIDVALIDITY stays */
	q = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q.u.mbox.name = MS_PSTR("Work");
	q.u.mbox.new_name = MS_PSTR("Archive/Work");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(msd_mbox_status(c, "Archive/Work/2025").uidvalidity, uv);
	assert_int_equal(msd_mbox_status(c, "Archive/Work/2025").messages, 1);
	msd_mbox_status(c, "Archive/Work/2025/Q1");
	msd_mbox_status(c, "Worker");
	q = (struct ms_req){ .op = MS_OP_MBOX_STATUS };
	q.u.mbox.name = MS_PSTR("Work/2025");
	assert_int_equal(msd_req(c, &q, &rep), MS_ENOTFOUND);
	/* under itself, onto a taken name, INBOX: refused */
	q = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q.u.mbox.name = MS_PSTR("Worker");
	q.u.mbox.new_name = MS_PSTR("Worker/x");
	assert_int_equal(msd_req(c, &q, &rep), -EINVAL);
	q.u.mbox.new_name = MS_PSTR("Archive/Work");
	assert_int_equal(msd_req(c, &q, &rep), -EEXIST);
	q.u.mbox.name = MS_PSTR("INBOX");
	q.u.mbox.new_name = MS_PSTR("Old");
	assert_int_equal(msd_req(c, &q, &rep), -EINVAL);

	/* subscribe shows in the list; delete removes */
	q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
	q.u.mbox.name = MS_PSTR("Worker");
	q.u.mbox.subscribe = 1;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(msd_mbox_status(c, "Worker").subscribed, 1);
	q = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q.u.mbox.name = MS_PSTR("Worker");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	q.u.mbox.name = MS_PSTR("INBOX");
	assert_int_equal(msd_req(c, &q, &rep), -EINVAL);
	q = (struct ms_req){ .op = MS_OP_MBOX_STATUS };
	q.u.mbox.name = MS_PSTR("Worker");
	assert_int_equal(msd_req(c, &q, &rep), MS_ENOTFOUND);

	/* MBOX_SUBS: every subscribed name, sorted, with or without a
	   mailbox (by name, as IMAP has them: a delete or a rename moves
	   none); an unsubscribe takes one out; admin sessions refused */
	static const char *const subs[] = { "Zeta", "Archive/Work",
					    "Ghost/\xc3\xa9t\xc3\xa9", "Gone" };
	for (size_t i = 0; i < MS_ARRAY_SIZE(subs); i++) {
		q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
		q.u.mbox.name = ms_pstr_c(subs[i]);
		q.u.mbox.subscribe = 1;
		assert_int_equal(msd_req(c, &q, &rep), 0);
	}
	q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
	q.u.mbox.name = MS_PSTR("Gone");
	q.u.mbox.subscribe = 0;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	q = (struct ms_req){ .op = MS_OP_MBOX_SUBS };
	assert_int_equal(msd_req(c, &q, &rep), 0);
	static const char *const want_subs[] = {
		"Archive/Work", "Ghost/\xc3\xa9t\xc3\xa9", "Worker", "Zeta" };
	struct ms_proto_iter sit;
	struct ms_pstr sn;
	size_t ns = 0;
	assert_int_equal(rep.u.subs.n, MS_ARRAY_SIZE(want_subs));
	ms_proto_iter_names(&sit, &rep.u.subs);
	while (ms_proto_next_name(&sit, &sn) == 1) {
		assert_true(ns < MS_ARRAY_SIZE(want_subs));
		assert_int_equal(sn.len, strlen(want_subs[ns]));
		assert_memory_equal(sn.s, want_subs[ns], sn.len);
		ns++;
	}
	assert_int_equal(ns, MS_ARRAY_SIZE(want_subs));
	struct ms_client *sadm = msd_connect(&d, NULL);
	assert_int_equal(msd_req(sadm, &q, &rep), -EINVAL);
	ms_client_close(&sadm);
	/* another user has none */
	assert_int_equal(msd_user_add(&d, "gus"), 0);
	struct ms_client *g = msd_connect(&d, "gus");
	assert_int_equal(msd_req(g, &q, &rep), 0);
	assert_int_equal(rep.u.subs.n, 0);
	ms_client_close(&g);

	/* copy shares the body; move expunges the source */
	for (int i = 0; i < 5; i++)
		assert_int_equal(msd_append1(c, "INBOX", "copy me", 7, 1).status, 0);
	uint64_t msgs0, bytes0 = user_quota(c, &msgs0);
	assert_int_equal(copy_move(c, MS_OP_COPY, "INBOX", 1, 3, "Archive/Work",
				   &rep), 0);
	assert_int_equal(rep.u.copy.pairs.n, 3);
	assert_int_equal(msd_mbox_status(c, "Archive/Work").messages, 3);
	uint64_t msgs1, bytes1 = user_quota(c, &msgs1);
	assert_int_equal(msgs1, msgs0 + 3);
	assert_int_equal(bytes1, bytes0 + 21);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	assert_int_equal(ms_client_fetch_body(c, "Archive/Work", 2, 0, &body,
					      &err),
			 0);
	assert_int_equal(body.len, 7);
	assert_int_equal(copy_move(c, MS_OP_MOVE, "INBOX", 4, 5, "Archive/Work",
				   &rep), 0);
	assert_int_equal(rep.u.copy.pairs.n, 2);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 3);
	assert_int_equal(msd_mbox_status(c, "Archive/Work").messages, 5);
	uint64_t msgs2;
	user_quota(c, &msgs2);
	assert_int_equal(msgs2, msgs1);
	/* into the same mailbox: a copy is a duplicate with a new UID (and
	   counts), a move gives new UIDs and takes the old ones away */
	struct ms_proto_iter pit;
	struct ms_uid_pair pair;
	assert_int_equal(copy_move(c, MS_OP_COPY, "Archive/Work", 1, 1,
				   "Archive/Work", &rep), 0);
	assert_int_equal(rep.u.copy.pairs.n, 1);
	ms_proto_iter_pairs(&pit, &rep.u.copy.pairs);
	assert_int_equal(ms_proto_next_pair(&pit, &pair), 1);
	assert_int_equal(pair.src_uid, 1);
	assert_int_equal(pair.dst_uid, 6);
	assert_int_equal(copy_move(c, MS_OP_MOVE, "Archive/Work", 2, 2,
				   "Archive/Work", &rep), 0);
	ms_proto_iter_pairs(&pit, &rep.u.copy.pairs);
	assert_int_equal(ms_proto_next_pair(&pit, &pair), 1);
	assert_int_equal(pair.src_uid, 2);
	assert_int_equal(pair.dst_uid, 7);
	struct ms_mbox_info ws = msd_mbox_status(c, "Archive/Work");
	assert_int_equal(ws.messages, 6);
	assert_int_equal(ws.uidnext, 8);
	body.len = 0;
	assert_int_equal(ms_client_fetch_body(c, "Archive/Work", 6, 0, &body,
					      &err),
			 0);
	assert_int_equal(body.len, 7);
	assert_memory_equal(body.data, "copy me", 7);
	assert_int_equal(ms_client_fetch_body(c, "Archive/Work", 2, 0, &body,
					      &err),
			 MS_ENOTFOUND);
	user_quota(c, &msgs2);
	assert_int_equal(msgs2, msgs1 + 1);

	/* quota: the admin sets it, an append past it is refused */
	struct ms_client *adm = msd_connect(&d, NULL);
	q = (struct ms_req){ .op = MS_OP_QUOTA_SET };
	q.u.quota.user = MS_PSTR("fay");
	q.u.quota.max_messages = msgs2 + 1;
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	q.u.quota.user = MS_PSTR("");
	assert_int_equal(msd_req(c, &q, &rep), -EACCES); /* not by the user */
	assert_int_equal(msd_append1(c, "INBOX", "fits", 4, 0).status, 0);
	assert_int_equal(msd_append1(c, "INBOX", "over", 4, 0).status, -EDQUOT);
	assert_int_equal(copy_move(c, MS_OP_COPY, "INBOX", 1, 3, "Archive/Work",
				   &rep), -EDQUOT);

	/* wait: a change from another connection wakes it */
	uint64_t hms = msd_mbox_status(c, "INBOX").highestmodseq;
	pid_t pid = fork();
	if (pid == 0) {
		struct ms_client *w = msd_connect(&d, "fay");
		struct ms_req wq = { .op = MS_OP_WAIT };
		struct ms_reply wr;
		const char *e;
		wq.u.wait.mailbox = MS_PSTR("INBOX");
		wq.u.wait.known_modseq = hms;
		wq.u.wait.timeout_ms = 20000;
		int ret = ms_client_request(w, &wq, &wr, &e);
		_exit(ret == 0 && wr.u.highestmodseq > hms ? 0 : 1);
	}
	usleep(300000);
	struct ms_uid_range one = { 1, 1 };
	q = (struct ms_req){ .op = MS_OP_STORE };
	q.u.store.mailbox = MS_PSTR("INBOX");
	q.u.store.uids.n = 1;
	q.u.store.uids.list = &one;
	q.u.store.flags = MS_EVENT_FLAG_FLAGGED;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* ...and with nothing happening it times out with the same value */
	hms = msd_mbox_status(c, "INBOX").highestmodseq;
	q = (struct ms_req){ .op = MS_OP_WAIT };
	q.u.wait.mailbox = MS_PSTR("INBOX");
	q.u.wait.known_modseq = hms;
	q.u.wait.timeout_ms = 1200;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.highestmodseq, hms);

	/* the admin deletes the user: it can no longer say hello */
	q = (struct ms_req){ .op = MS_OP_USER_DELETE };
	q.u.user.name = MS_PSTR("fay");
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	struct ms_client *x;
	assert_int_equal(ms_client_connect(d.sock, 5000, &x, &err), 0);
	assert_int_equal(ms_client_hello(x, "fay", &err), MS_ENOTFOUND);
	ms_client_close(&x);
	ms_buf_free(&body);
	ms_client_close(&adm);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* lines of d's log holding needle */
static int log_count(const struct msd *d, const char *needle)
{
	FILE *f = fopen(d->logfile, "r");
	char line[512];
	int n = 0;
	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, needle) != NULL;
	if (f != NULL)
		fclose(f);
	return n;
}

/* 1 if a line of d's log (mstored stopped) holds needle */
static int log_has(const struct msd *d, const char *needle)
{
	return log_count(d, needle) > 0;
}

/* a small index map fills up: the daemon grows it and goes on */
static void test_index_grows(void **state)
{
	(void)state;
	enum { REQS = 120, PER = 1000 };
	struct msd d;
	msd_setup(&d, "mstored-grow", "index_map_size = 16M");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "gil"), 0);
	struct ms_client *c = msd_connect(&d, "gil");
	static struct ms_placement pl[PER];
	for (int i = 0; i < PER; i++)
		pl[i] = (struct ms_placement){ .mailbox = MS_PSTR("INBOX") };
	for (int r = 0; r < REQS; r++) {
		char msg[64];
		int n = snprintf(msg, sizeof(msg), "Subject: %d\r\n\r\nx\r\n", r);
		struct ms_req q = { .op = MS_OP_APPEND };
		struct ms_reply rep;
		q.u.append.body = (const uint8_t *)msg;
		q.u.append.body_len = (uint32_t)n;
		q.u.append.placements.n = PER;
		q.u.append.placements.list = pl;
		assert_int_equal(msd_req(c, &q, &rep), 0);
	}
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, REQS * PER);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	assert_true(log_has(&d, "event=index.grown"));
}

/* A started mstored with user, connected as it, n messages of 50000
   bytes in INBOX: something for the scrub to read. */
static struct ms_client *scrub_setup(struct msd *d, const char *name,
				     const char *conf, const char *user,
				     int n)
{
	static char big[50000];
	msd_setup(d, name, conf);
	msd_start(d);
	assert_int_equal(msd_user_add(d, user), 0);
	struct ms_client *c = msd_connect(d, user);
	for (int i = 0; i < n; i++) {
		mst_fill((uint8_t *)big, sizeof(big), (uint64_t)i);
		assert_int_equal(msd_append1(c, "INBOX", big, sizeof(big), 0).status,
				 0);
	}
	return c;
}

/* the online scrub finds damage on the secondary (which reads never
   look at while the primary is good) and rewrites it */
static void test_online_scrub(void **state)
{
	(void)state;
	struct msd d;
	struct ms_client *c =
		scrub_setup(&d, "mstored-scrub",
			    "scrub_rate = 64M\nsegment_size = 1M", "hal", 60);
	char sa[1200], sb[1200];
	snprintf(sa, sizeof(sa), "%s/log/000000000001.seg", d.primary);
	snprintf(sb, sizeof(sb), "%s/log/000000000001.seg", d.secondary);
	const char *why;
	assert_true(mst_files_equal(sa, sb, &why));
	assert_int_equal(mst_flip(sb, 5000, 0x20), 0);
	assert_false(mst_files_equal(sa, sb, &why));
	struct ms_client *adm = msd_connect(&d, NULL);
	uint64_t healed = 0;
	for (int i = 0; i < 100 && healed == 0; i++) {
		usleep(100000);
		healed = msd_counter(adm, "scrub.healed");
	}
	assert_int_equal(healed, 1);
	assert_true(mst_files_equal(sa, sb, &why));
	assert_true(msd_counter(adm, "scrub.records") > 0);
	assert_int_equal(msd_counter(adm, "scrub.bad"), 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

static uint64_t mono_ms(void);

/* the online scrub keeps its rate with no request to wake the loop (it
   wakes itself for its steps) and under a steady stream of requests
   (whose turns it leaves alone until a second of the rate is owed) */
static void test_scrub_rate(void **state)
{
	(void)state;
	struct msd d;
	struct ms_client *c =
		scrub_setup(&d, "mstored-scrubrate",
			    "scrub_rate = 1M\nsegment_size = 4M", "ida", 40);
	struct ms_client *adm = msd_connect(&d, NULL);
	/* idle: four seconds without a request, after 1.5 s for the
	   bucket to spend what the appends left in it */
	usleep(1500000);
	uint64_t b0 = msd_counter(adm, "scrub.bytes");
	uint64_t t0 = mono_ms();
	usleep(4000000);
	uint64_t b1 = msd_counter(adm, "scrub.bytes");
	uint64_t idle_ms = mono_ms() - t0;
	/* busy: requests back to back for two seconds */
	uint64_t t1 = mono_ms();
	unsigned n = 0;
	while (mono_ms() - t1 < 2000) {
		(void)msd_counter(adm, "scrub.bytes");
		n++;
	}
	uint64_t b2 = msd_counter(adm, "scrub.bytes");
	uint64_t busy_ms = mono_ms() - t1;
	print_message("scrub: idle %llu bytes in %llu ms, busy %llu bytes in "
		      "%llu ms (%u requests)\n",
		      (unsigned long long)(b1 - b0),
		      (unsigned long long)idle_ms,
		      (unsigned long long)(b2 - b1),
		      (unsigned long long)busy_ms, n);
	/* 1 MiB/s: 4 s of it, give or take two steps of whole 50 kB
	   records (a step that reads more than 64 KiB pays for it); busy,
	   at least the second that is owed before it scrubs at all */
	assert_true(b1 - b0 >= (7u << 19));
	assert_true(b1 - b0 <= 4600000);
	assert_true(b2 - b1 >= (512u << 10));
	assert_true(b2 - b1 <= (3u << 20));
	assert_int_equal(msd_counter(adm, "scrub.bad"), 0);
	ms_client_close(&adm);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* SIGHUP takes new limits without a restart */
static void test_reload(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-hup", "max_connections = 100");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "ivy"), 0);
	struct ms_client *a = msd_connect(&d, "ivy");
	struct ms_client *b = msd_connect(&d, "ivy");
	/* a 50 KiB body comes in one reply under the default frame limit */
	static char big[50 << 10];
	memset(big, 'r', sizeof(big));
	struct ms_append_result r = msd_append1(a, "INBOX", big, sizeof(big),
						0);
	assert_int_equal(r.status, 0);
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	struct ms_reply rep;
	q.u.fetch_body.mailbox = MS_PSTR("INBOX");
	q.u.fetch_body.uid = r.uid;
	q.u.fetch_body.max_len = 1 << 20;
	assert_int_equal(msd_req(a, &q, &rep), 0);
	assert_int_equal(rep.u.fetch_body.chunk_len, sizeof(big));
	FILE *f = fopen(d.conf, "w");
	assert_non_null(f);
	fprintf(f, "[store]\nprimary = primary\nsecondary = secondary\n"
		   "index = index\nsocket = s.sock\nadmin_socket = a.sock\n"
		   "max_connections = 2\nmax_frame = 64k\n");
	fclose(f);
	kill(d.pid, SIGHUP);
	usleep(300000);
	/* the reply limit follows the new frame limit: half of it */
	assert_int_equal(msd_req(a, &q, &rep), 0);
	assert_int_equal(rep.u.fetch_body.total, sizeof(big));
	assert_int_equal(rep.u.fetch_body.chunk_len, 32 << 10);
	/* a third connection is turned away with a reason */
	struct ms_client *x;
	const char *err = "";
	assert_int_equal(ms_client_connect(d.sock, 5000, &x, &err), 0);
	assert_int_equal(ms_client_hello(x, "ivy", &err), -EBUSY);
	ms_client_close(&x);
	/* the two in place still work */
	assert_int_equal(msd_append1(a, "INBOX", "a", 1, 0).status, 0);
	assert_int_equal(msd_append1(b, "INBOX", "b", 1, 0).status, 0);
	ms_client_close(&a);
	ms_client_close(&b);
	assert_int_equal(msd_stop(&d), 0);
	assert_true(log_has(&d, "event=reload max_frame"));
}

/* MBOX_CREATE of name as c's user: the status. */
static int mbox_create(struct ms_client *c, const char *name,
		       struct ms_reply *rep)
{
	struct ms_req q = { .op = MS_OP_MBOX_CREATE };
	q.u.mbox.name = (struct ms_pstr){ name, strlen(name) };
	return msd_req(c, &q, rep);
}

/*
 * [store] max_mailboxes: a user's mailboxes, INBOX included.  A create
 * past it is refused with -EMLINK and a reason, creates in flight
 * counted (two pipelined for the last place: one gets it); a delete
 * makes room again; another user has a count of its own; a limit
 * lowered by SIGHUP keeps what is there and refuses the next create;
 * a restart keeps the count (from the index).
 */
static void test_max_mailboxes(void **state)
{
	(void)state;
	struct msd d;
	struct ms_reply rep;
	msd_setup(&d, "mstored-maxmb", "max_mailboxes = 4");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "jan"), 0);
	assert_int_equal(msd_user_add(&d, "kim"), 0);
	struct ms_client *c = msd_connect(&d, "jan");
	assert_int_equal(mbox_create(c, "a", &rep), 0);
	assert_int_equal(mbox_create(c, "b", &rep), 0);
	/* the last place, asked for twice in one send */
	struct ms_buf b;
	const char *err = "";
	ms_buf_init(&b, 0);
	const char *names[] = { "c", "d" };
	for (int i = 0; i < 2; i++) {
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		q.u.mbox.name = (struct ms_pstr){ names[i], 1 };
		assert_int_equal(ms_req_encode(&b, ms_client_id(c), &q, &err),
				 0);
	}
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
	int st[2];
	for (int i = 0; i < 2; i++) {
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
		st[i] = rep.status;
		if (rep.status != 0)
			assert_non_null(memmem(rep.reason.s, rep.reason.len,
					       "max_mailboxes", 13));
	}
	/* (the refusal is answered at once, ahead of the create's reply,
	   which waits for its record to be durable) */
	assert_true((st[0] == 0 && st[1] == -EMLINK) ||
		    (st[0] == -EMLINK && st[1] == 0));
	assert_int_equal(mbox_create(c, "e", &rep), -EMLINK);
	struct ms_req lq = { .op = MS_OP_MBOX_LIST };
	assert_int_equal(msd_req(c, &lq, &rep), 0);
	assert_int_equal(rep.u.mboxes.n, 4);
	/* another user counts its own */
	struct ms_client *k = msd_connect(&d, "kim");
	assert_int_equal(mbox_create(k, "a", &rep), 0);
	/* a delete makes room */
	struct ms_req dq = { .op = MS_OP_MBOX_DELETE };
	dq.u.mbox.name = MS_PSTR("a");
	assert_int_equal(msd_req(c, &dq, &rep), 0);
	assert_int_equal(mbox_create(c, "e", &rep), 0);
	assert_int_equal(mbox_create(c, "f", &rep), -EMLINK);
	/* lowered: what is there stays, the next create is refused */
	FILE *f = fopen(d.conf, "w");
	assert_non_null(f);
	fprintf(f, "[store]\nprimary = primary\nsecondary = secondary\n"
		   "index = index\nsocket = s.sock\nadmin_socket = a.sock\n"
		   "max_mailboxes = 2\n");
	fclose(f);
	kill(d.pid, SIGHUP);
	usleep(300000);
	assert_int_equal(mbox_create(k, "b", &rep), -EMLINK);
	/* kim deleted while a session of hers is open: a create is refused
	   as for a user that is not there, and writes nothing */
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_req uq = { .op = MS_OP_USER_DELETE };
	uq.u.user.name = MS_PSTR("kim");
	assert_int_equal(msd_req(adm, &uq, &rep), 0);
	uint64_t seq = msd_counter(adm, "log.durable_seq");
	assert_int_equal(mbox_create(k, "b", &rep), MS_ENOTFOUND);
	assert_non_null(memmem(rep.reason.s, rep.reason.len,
			       "no longer exists", 16));
	assert_int_equal(msd_counter(adm, "log.durable_seq"), seq);
	ms_client_close(&adm);
	assert_int_equal(msd_mbox_status(c, "e").messages, 0);
	assert_int_equal(msd_append1(c, "e", "x", 1, 0).status, 0);
	/* raised and restarted: the count comes from the index */
	ms_client_close(&c);
	ms_client_close(&k);
	assert_int_equal(msd_stop(&d), 0);
	f = fopen(d.conf, "w");
	assert_non_null(f);
	fprintf(f, "[store]\nprimary = primary\nsecondary = secondary\n"
		   "index = index\nsocket = s.sock\nadmin_socket = a.sock\n"
		   "max_mailboxes = 5\n");
	fclose(f);
	msd_start(&d);
	c = msd_connect(&d, "jan");
	assert_int_equal(mbox_create(c, "g", &rep), 0);
	assert_int_equal(mbox_create(c, "h", &rep), -EMLINK);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* started as root with [store] user: it drops to that user and still
   creates segments and index pages */
static void test_drop_root(void **state)
{
	(void)state;
	if (getuid() != 0)
		skip();
	struct msd d;
	msd_setup(&d, "mstored-user", "user = nobody\nsegment_size = 1M");
	msd_start(&d);
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)d.pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	unsigned ruid = 0, euid = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u %u", &ruid, &euid) == 2)
			break;
	fclose(f);
	assert_int_equal(ruid, 65534);
	assert_int_equal(euid, 65534);
	assert_int_equal(msd_user_add(&d, "joe"), 0);
	struct ms_client *c = msd_connect(&d, "joe");
	static char big[100000];
	for (int i = 0; i < 40; i++) { /* 4 MB: new segments after the drop */
		mst_fill((uint8_t *)big, sizeof(big), (uint64_t)i);
		assert_int_equal(msd_append1(c, "INBOX", big, sizeof(big), 0).status,
				 0);
	}
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 40);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	char seg[1200];
	snprintf(seg, sizeof(seg), "%s/log/000000000004.seg", d.secondary);
	assert_true(mst_file_size(seg) > 0);
}

/* n pipelined requests q in one send; returns the first id */
static uint32_t send_many(struct ms_client *c, const struct ms_req *q, int n)
{
	struct ms_buf b;
	const char *err = "";
	uint32_t first = 0;
	ms_buf_init(&b, 0);
	for (int i = 0; i < n; i++) {
		uint32_t id = ms_client_id(c);
		if (i == 0)
			first = id;
		assert_int_equal(ms_req_encode(&b, id, q, &err), 0);
	}
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
	return first;
}

/*
 * A client that pipelines large replies and does not read them is not
 * served further (its output stays near max_output) while others are;
 * once it reads, every reply arrives.  An idle client is closed after
 * idle_timeout.
 */
static void test_backpressure_idle(void **state)
{
	(void)state;
	enum { N = 300 };
	struct msd d;
	msd_setup(&d, "mstored-bp",
		  "max_output = 64k\nmax_frame = 128k\nidle_timeout = 2s");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "kay"), 0);
	struct ms_client *c = msd_connect(&d, "kay");
	static char big[60000];
	mst_fill((uint8_t *)big, sizeof(big), 9);
	assert_int_equal(msd_append1(c, "INBOX", big, sizeof(big), 0).status, 0);
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	q.u.fetch_body.mailbox = MS_PSTR("INBOX");
	q.u.fetch_body.uid = 1;
	q.u.fetch_body.max_len = sizeof(big);
	send_many(c, &q, N); /* 18 MB of replies, none read yet */
	/* another client is served meanwhile */
	struct ms_client *o = msd_connect(&d, "kay");
	for (int i = 0; i < 5; i++)
		assert_int_equal(msd_mbox_status(o, "INBOX").messages, 1);
	/* now read them all: nothing was dropped */
	for (int i = 0; i < N; i++) {
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		const char *err = "";
		struct ms_reply rep;
		assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.u.fetch_body.chunk_len, sizeof(big));
	}
	/* idle: closed after 2 s without a request */
	sleep(4);
	struct ms_req st = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	const char *err = "";
	st.u.mbox.name = MS_PSTR("INBOX");
	assert_true(ms_client_request(o, &st, &rep, &err) < 0);
	ms_client_close(&o);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * SIGTERM with pipelined appends in flight: every append answered OK is
 * there after a restart; a client that hangs up with appends in flight
 * leaves the daemon serving, and what it stored is whole.
 */
static void test_shutdown_and_hangup(void **state)
{
	(void)state;
	enum { N = 200 };
	struct msd d;
	msd_setup(&d, "mstored-term", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "lou"), 0);

	/* hang up with 100 appends just sent */
	struct ms_client *h = msd_connect(&d, "lou");
	struct ms_placement pl = { .mailbox = MS_PSTR("INBOX") };
	struct ms_req q = { .op = MS_OP_APPEND };
	q.u.append.body = (const uint8_t *)"hangup body\r\n";
	q.u.append.body_len = 13;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	send_many(h, &q, 100);
	ms_client_close(&h);
	struct ms_client *c = msd_connect(&d, "lou");
	uint32_t stored = msd_mbox_status(c, "INBOX").messages;
	assert_true(stored <= 100);
	struct ms_buf body;
	const char *err = "";
	ms_buf_init(&body, 0);
	for (uint32_t u = 1; u <= stored; u++) {
		assert_int_equal(ms_client_fetch_body(c, "INBOX", u, 0, &body,
						      &err),
				 0);
		assert_int_equal(body.len, 13);
	}

	/* SIGTERM right after N pipelined appends */
	q.u.append.body = (const uint8_t *)"term body\r\n";
	q.u.append.body_len = 11;
	send_many(c, &q, N);
	kill(d.pid, SIGTERM);
	uint32_t ok_uids[N];
	int nok = 0;
	for (int i = 0; i < N; i++) {
		struct ms_proto_hdr hd;
		const uint8_t *b;
		size_t len;
		struct ms_reply rep;
		if (ms_client_recv(c, &hd, &b, &len, &err) < 0)
			break; /* the rest were never read: no promise */
		assert_int_equal(ms_reply_decode(hd.op, b, len, &rep, &err), 0);
		if (rep.status != 0)
			continue;
		struct ms_proto_iter it;
		struct ms_append_result r;
		ms_proto_iter_results(&it, &rep.u.append);
		assert_int_equal(ms_proto_next_result(&it, &r), 1);
		if (r.status == 0)
			ok_uids[nok++] = r.uid;
	}
	ms_client_close(&c);
	int status = msd_stop(&d); /* already stopping: wait for it */
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	msd_start(&d);
	c = msd_connect(&d, "lou");
	for (int i = 0; i < nok; i++) {
		assert_int_equal(ms_client_fetch_body(c, "INBOX", ok_uids[i], 0,
						      &body, &err),
				 0);
		assert_memory_equal(body.data, "term body\r\n", 11);
	}
	ms_buf_free(&body);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * Megabytes of requests in one send: the daemon reads a bounded amount
 * per turn, and with multishot polls (which fire on wake-ups, not while
 * data waits) it must come back for the rest by itself.
 */
static void test_pipelined_burst(void **state)
{
	(void)state;
	enum { N = 300 };
	struct msd d;
	msd_setup(&d, "mstored-burst", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "ned"), 0);
	struct ms_client *c = msd_connect(&d, "ned");
	static char big[20000];
	mst_fill((uint8_t *)big, sizeof(big), 3);
	struct ms_placement pl = { .mailbox = MS_PSTR("INBOX") };
	struct ms_req q = { .op = MS_OP_APPEND };
	q.u.append.body = (const uint8_t *)big;
	q.u.append.body_len = sizeof(big);
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	send_many(c, &q, N); /* 6 MB */
	for (int i = 0; i < N; i++) {
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		const char *err = "";
		struct ms_reply rep;
		assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
		assert_int_equal(rep.status, 0);
	}
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, N);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* poll STATUS until key is want (the daemon accepts and sees hang-ups
   in its own time); returns the last value */
static uint64_t counter_wait(struct ms_client *c, const char *key,
			     uint64_t want)
{
	uint64_t v = 0;
	for (int i = 0; i < 300; i++) {
		if ((v = msd_counter(c, key)) == want)
			break;
		usleep(50000);
	}
	return v;
}

/*
 * 500 idle connections (connected, never a byte) and one that works: it
 * is served promptly, STATUS counts every connection, and the count
 * comes back down when they all hang up.  The loop is io_uring unless
 * the run forces epoll (MSTORE_LOOP=epoll, tests/run-tests.sh).
 */
static void test_many_idle(void **state)
{
	(void)state;
	enum { IDLE = 500 };
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * IDLE + 100) {
		/* the daemon inherits it */
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < 2 * IDLE + 100)
			skip();
	}
	const char *loop = getenv("MSTORE_LOOP");
	uint64_t want_uring = loop && strcmp(loop, "epoll") == 0 ? 0 : 1;
	struct msd d;
	msd_setup(&d, "mstored-idle", "max_connections = 1000");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "max"), 0);
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_client *c = msd_connect(&d, "max");
	assert_int_equal(msd_counter(adm, "srv.loop_uring"), want_uring);
	static int fds[IDLE];
	for (int i = 0; i < IDLE; i++)
		fds[i] = raw_connect(&d);
	/* 500 idle, the worker and the admin */
	assert_int_equal(counter_wait(adm, "srv.connections", IDLE + 2),
			 IDLE + 2);
	/* the working one: each request answered well within a second
	   (a shared machine; the loop itself takes microseconds) */
	uint64_t worst = 0, t0 = mono_ms();
	for (int i = 0; i < 50; i++) {
		uint64_t t = mono_ms();
		assert_int_equal(msd_append1(c, "INBOX", "busy", 4, 0).status, 0);
		assert_int_equal(msd_mbox_status(c, "INBOX").messages,
				 (uint32_t)i + 1);
		if (mono_ms() - t > worst)
			worst = mono_ms() - t;
	}
	if (worst >= 1000 || mono_ms() - t0 >= 10000)
		fail_msg("slow with %d idle connections: worst %llu ms, "
			 "all %llu ms",
			 IDLE, (unsigned long long)worst,
			 (unsigned long long)(mono_ms() - t0));
	assert_int_equal(msd_counter(adm, "srv.connections"), IDLE + 2);
	for (int i = 0; i < IDLE; i++)
		close(fds[i]);
	assert_int_equal(counter_wait(adm, "srv.connections", 2), 2);
	/* still serving */
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 50);
	ms_client_close(&c);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);
	/* the ready line names the loop, quoted (it has spaces); io_uring's
	   task work waits for the loop's own system calls (srv.c,
	   "Cooperative task work") unless the kernel refused that */
	const char *want = " loop=epoll role=primary";
	if (loop != NULL && strcmp(loop, "uring-oneshot") == 0)
		want = " loop=\"io_uring (poll)\" role=primary";
	else if (want_uring && log_has(&d, "loop.fallback what=coop_taskrun"))
		want = " loop=\"io_uring (multishot poll)\" role=primary";
	else if (want_uring)
		want = " loop=\"io_uring (multishot poll, cooperative task "
		       "work)\" role=primary";
	if (!log_has(&d, want))
		fail_msg("no ready line with%s", want);
}

/* Send a WAIT on cl for mailbox at its highestmodseq now. */
static uint64_t wait_send(struct ms_client *cl, const char *mailbox,
			  uint32_t timeout_ms)
{
	struct ms_req q = { .op = MS_OP_WAIT };
	const char *err = "";
	uint32_t id;
	uint64_t hms = msd_mbox_status(cl, mailbox).highestmodseq;
	q.u.wait.mailbox = (struct ms_pstr){ mailbox, strlen(mailbox) };
	q.u.wait.known_modseq = hms;
	q.u.wait.timeout_ms = timeout_ms;
	assert_int_equal(ms_client_send_req(cl, &q, &id, &err), 0);
	return hms;
}

/* A WAIT's reply on cl within ms: 1 with its status and highestmodseq,
   0 when none came. */
static int wait_reply(struct ms_client *cl, int ms, int *status_r,
		      uint64_t *hms_r)
{
	struct pollfd p = { .fd = ms_client_fd(cl), .events = POLLIN };
	if (poll(&p, 1, ms) <= 0)
		return 0;
	struct ms_proto_hdr h;
	struct ms_reply rep;
	const uint8_t *body;
	size_t len;
	const char *err = "";
	assert_int_equal(ms_client_recv(cl, &h, &body, &len, &err), 0);
	assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
	assert_int_equal(rep.op, MS_OP_WAIT);
	*status_r = rep.status;
	*hms_r = rep.status == 0 ? rep.u.highestmodseq : 0;
	return 1;
}

/* A user session that said HELLO at this version: its change epoch
   and the user's change count. */
static struct ms_client *uw_connect(struct msd *d, const char *user,
				    uint64_t *epoch_r, uint64_t *count_r)
{
	struct ms_client *c;
	struct ms_req q = { .op = MS_OP_HELLO };
	struct ms_reply rep;
	const char *err = "";
	assert_int_equal(ms_client_connect(d->sock, 5000, &c, &err), 0);
	q.u.hello.version = MS_PROTO_VERSION;
	q.u.hello.role = user != NULL ? MS_ROLE_USER : MS_ROLE_ADMIN;
	q.u.hello.user = ms_pstr_c(user);
	assert_int_equal(ms_client_request(c, &q, &rep, &err), 0);
	assert_int_equal(rep.u.hello.version, MS_PROTO_VERSION);
	assert_true(rep.u.hello.changes_epoch != 0);
	*epoch_r = rep.u.hello.changes_epoch;
	*count_r = rep.u.hello.changes;
	return c;
}

/* Start a USER_WATCH on c; its first reply (the count now) within 5 s. */
static uint64_t uw_watch(struct ms_client *c)
{
	struct ms_req q = { .op = MS_OP_USER_WATCH };
	struct pollfd p = { .fd = ms_client_fd(c), .events = POLLIN };
	const char *err = "";
	int32_t st;
	uint64_t count = 0;
	uint32_t id;
	assert_int_equal(ms_client_send_req(c, &q, &id, &err), 0);
	ms_client_watch(c, id);
	assert_true(poll(&p, 1, 5000) == 1);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &count, &err), 1);
	assert_int_equal(st, 0);
	return count;
}

/* The watch's count from what c's socket holds now, without waiting. */
static uint64_t uw_now(struct ms_client *c)
{
	const char *err = "";
	int32_t st;
	uint64_t count = 0;
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &count, &err), 1);
	assert_int_equal(st, 0);
	return count;
}

/* The store's id of c's mailbox name. */
static uint64_t uw_mbox_id(struct ms_client *c, const char *name)
{
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	q.u.mbox.name = ms_pstr_c(name);
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_true(rep.u.mbox.mbox_id != 0);
	return rep.u.mbox.mbox_id;
}

/* The watch's count of mailbox id as c holds it: 0 if it lists none. */
static uint64_t uw_mbox(struct ms_client *c, uint64_t id)
{
	uint64_t n = 0;
	int ret = ms_client_watch_mbox(c, id, &n);
	assert_true(ret == 0 || ret == 1);
	return ret == 1 ? n : 0;
}

/*
 * USER_WATCH, version 7: the replies carry mailbox counts, the count of
 * each mailbox's last change.  The first reply lists every mailbox of
 * the user; a change in one mailbox moves its count (to the user's new
 * one) and no other's; a subscription moves the user's count and no
 * mailbox's; a new mailbox is listed from its creation on; a delete and
 * a rename move the mailbox's count; creates pipelined past what one
 * reply notes one by one are all listed, with counts; another user's
 * mailbox is never listed; a version 6 session gets none, and the
 * client says it knows nothing of mailboxes.  Run with a watcher on each
 * side of every change, read without waiting once the change is
 * acknowledged.
 */
static void test_user_watch_mailboxes(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-uwmbox", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "uma"), 0);
	assert_int_equal(msd_user_add(&d, "umb"), 0);
	struct ms_client *w = msd_connect(&d, "uma");
	struct ms_client *other = msd_connect(&d, "umb");
	struct ms_reply rep;
	struct ms_req q;
	uint64_t epoch, c0;

	assert_int_equal(msd_append1(w, "INBOX", "first", 5, 0).status, 0);
	assert_int_equal(mbox_create(w, "A", &rep), 0);
	assert_int_equal(mbox_create(w, "B", &rep), 0);
	uint64_t inbox = uw_mbox_id(w, "INBOX"), ma = uw_mbox_id(w, "A"),
		 mb = uw_mbox_id(w, "B");
	uint64_t theirs = uw_mbox_id(other, "INBOX");
	struct ms_client *x = uw_connect(&d, "uma", &epoch, &c0);
	assert_true(uw_watch(x) == c0);
	/* every mailbox at once, none above the user's count */
	uint64_t ci = uw_mbox(x, inbox), ca = uw_mbox(x, ma),
		 cb = uw_mbox(x, mb);
	assert_true(ci != 0 && ca != 0 && cb != 0);
	assert_true(ci <= c0 && ca <= c0 && cb <= c0);
	assert_true(ca > ci && cb > ca); /* made in that order */
	assert_int_equal(uw_mbox(x, theirs), 0);
	assert_int_equal(uw_mbox(x, 999999999), 0);

	/* a delivery to A: A's count, no other's */
	assert_int_equal(msd_append1(w, "A", "to a", 4, 0).status, 0);
	uint64_t now = uw_now(x);
	assert_true(now > c0);
	assert_true(uw_mbox(x, ma) == now);
	assert_true(uw_mbox(x, mb) == cb && uw_mbox(x, inbox) == ci);
	ca = now;
	/* flags in INBOX */
	struct ms_uid_range one = { 1, 1 };
	q = (struct ms_req){ .op = MS_OP_STORE };
	q.u.store.mailbox = MS_PSTR("INBOX");
	q.u.store.uids.n = 1;
	q.u.store.uids.list = &one;
	q.u.store.flags = MS_EVENT_FLAG_SEEN;
	q.u.store.mode = MS_EVENT_MODE_ADD;
	assert_int_equal(msd_req(w, &q, &rep), 0);
	now = uw_now(x);
	assert_true(uw_mbox(x, inbox) == now);
	assert_true(uw_mbox(x, ma) == ca && uw_mbox(x, mb) == cb);
	/* the reply has the mailbox's counts before and after it */
	assert_true(rep.u.store.have_chg);
	assert_true(rep.u.store.prev_changes == ci &&
		    rep.u.store.changes == now);
	ci = now;
	/* an EXPUNGE of nothing there: the counts now, no change */
	struct ms_uid_range gone = { 999, 999 };
	q.op = MS_OP_EXPUNGE;
	q.u.store.uids.list = &gone;
	assert_int_equal(msd_req(w, &q, &rep), 0);
	assert_true(rep.u.expunge.have_chg &&
		    rep.u.expunge.prev_changes == ci &&
		    rep.u.expunge.changes == ci);
	q.op = MS_OP_STORE;
	q.u.store.uids.list = &one;
	/* pipelined STOREs of two sessions in one flush: each reply's
	   counts are its own record's, one after the other */
	struct ms_client *w2 = msd_connect(&d, "uma");
	uint32_t sid[2];
	const char *serr = "";
	assert_int_equal(ms_client_send_req(w, &q, &sid[0], &serr), 0);
	assert_int_equal(ms_client_send_req(w2, &q, &sid[1], &serr), 0);
	uint64_t got[2][2];
	for (int k = 0; k < 2; k++) {
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		struct ms_client *cl = k == 0 ? w : w2;
		assert_int_equal(ms_client_recv(cl, &h, &body, &len, &serr), 0);
		assert_int_equal(h.id, sid[k]);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &serr),
				 0);
		assert_int_equal(rep.status, 0);
		got[k][0] = rep.u.store.prev_changes;
		got[k][1] = rep.u.store.changes;
	}
	now = uw_now(x);
	/* in some order: one from ci, the other from the first's */
	int first = got[0][0] == ci ? 0 : 1;
	assert_true(got[first][0] == ci);
	assert_true(got[1 - first][0] == got[first][1]);
	assert_true(got[1 - first][1] == now && got[first][1] < now);
	assert_true(uw_mbox(x, inbox) == now);
	ms_client_close(&w2);
	ci = now;
	/* a subscription: the user's count only */
	uint64_t before = now;
	q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
	q.u.mbox.name = MS_PSTR("B");
	q.u.mbox.subscribe = 1;
	assert_int_equal(msd_req(w, &q, &rep), 0);
	now = uw_now(x);
	assert_true(now > before);
	assert_true(uw_mbox(x, inbox) == ci && uw_mbox(x, ma) == ca &&
		    uw_mbox(x, mb) == cb);
	/* another user's delivery: nothing */
	assert_int_equal(msd_append1(other, "INBOX", "b", 1, 0).status, 0);
	assert_true(uw_now(x) == now);
	assert_int_equal(uw_mbox(x, theirs), 0);
	/* a new mailbox is listed; a rename and a delete move theirs */
	assert_int_equal(mbox_create(w, "C", &rep), 0);
	now = uw_now(x);
	uint64_t mc = uw_mbox_id(w, "C");
	assert_true(uw_mbox(x, mc) == now);
	q = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q.u.mbox.name = MS_PSTR("A");
	q.u.mbox.new_name = MS_PSTR("A2");
	assert_int_equal(msd_req(w, &q, &rep), 0);
	now = uw_now(x);
	assert_true(uw_mbox(x, ma) == now);
	assert_true(uw_mbox_id(w, "A2") == ma);
	q = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q.u.mbox.name = MS_PSTR("B");
	assert_int_equal(msd_req(w, &q, &rep), 0);
	now = uw_now(x);
	assert_true(uw_mbox(x, mb) == now);
	assert_true(uw_mbox(x, inbox) == ci && uw_mbox(x, mc) < now);

	/* creates pipelined: more than a reply notes one by one */
	enum { MANY = 20 };
	uint32_t ids[MANY];
	const char *err = "";
	before = now;
	for (int i = 0; i < MANY; i++) {
		char name[16];
		snprintf(name, sizeof(name), "P%d", i);
		q = (struct ms_req){ .op = MS_OP_MBOX_CREATE };
		q.u.mbox.name = ms_pstr_c(name);
		assert_int_equal(ms_client_send_req(w, &q, &ids[i], &err), 0);
	}
	for (int i = 0; i < MANY; i++) {
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		assert_int_equal(ms_client_recv(w, &h, &body, &len, &err), 0);
		assert_int_equal(h.id, ids[i]);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err),
				 0);
		assert_int_equal(rep.status, 0);
	}
	now = uw_now(x);
	for (int i = 0; i < MANY; i++) {
		char name[16];
		snprintf(name, sizeof(name), "P%d", i);
		uint64_t n = uw_mbox(x, uw_mbox_id(w, name));
		if (n <= before || n > now)
			fail_msg("P%d: count %llu, not in (%llu, %llu]", i,
				 (unsigned long long)n,
				 (unsigned long long)before,
				 (unsigned long long)now);
	}
	assert_true(uw_mbox(x, inbox) == ci);

	/* a version 6 session: no mailboxes */
	struct ms_client *v6;
	const char *e6 = "";
	q = (struct ms_req){ .op = MS_OP_HELLO };
	assert_int_equal(ms_client_connect(d.sock, 5000, &v6, &e6), 0);
	q.u.hello.version = 6;
	q.u.hello.role = MS_ROLE_USER;
	q.u.hello.user = MS_PSTR("uma");
	assert_int_equal(ms_client_request(v6, &q, &rep, &e6), 0);
	assert_int_equal(rep.u.hello.version, 6);
	assert_true(uw_watch(v6) == now);
	uint64_t n6;
	assert_int_equal(ms_client_watch_mbox(v6, inbox, &n6), -ENOENT);
	assert_int_equal(msd_append1(w, "INBOX", "x", 1, 0).status, 0);
	assert_true(uw_now(v6) > now);
	assert_int_equal(ms_client_watch_mbox(v6, inbox, &n6), -ENOENT);
	assert_true(uw_now(x) == uw_now(v6));
	assert_true(uw_mbox(x, inbox) == uw_now(x));

	/* STATUS: the counts held, of the users and of the mailboxes made
	   or changed here (INBOX, A, B, C, P0..P19 and umb's INBOX) */
	assert_int_equal(msd_counter(w, "ops.change_counts.users"), 2);
	assert_int_equal(msd_counter(w, "ops.change_counts.mailboxes"),
			 5 + MANY);
	/* a clean restart keeps the mailboxes' counts with the epoch */
	uint64_t keep[4] = { uw_mbox(x, inbox), uw_mbox(x, ma),
			     uw_mbox(x, mb), uw_mbox(x, mc) };
	uint64_t user_count = uw_now(x);
	ms_client_close(&v6);
	ms_client_close(&x);
	ms_client_close(&other);
	ms_client_close(&w);
	assert_int_equal(msd_stop(&d), 0);
	msd_start(&d);
	uint64_t e2, c2;
	x = uw_connect(&d, "uma", &e2, &c2);
	assert_true(e2 == epoch && c2 == user_count);
	assert_true(uw_watch(x) == c2);
	/* B was deleted: listed no more */
	assert_true(uw_mbox(x, inbox) == keep[0] && uw_mbox(x, ma) == keep[1] &&
		    uw_mbox(x, mb) == 0 && uw_mbox(x, mc) == keep[3]);
	assert_true(keep[2] != 0);
	ms_client_close(&x);
	assert_int_equal(msd_stop(&d), 0);
}

/* The watch's count once every reply the server sent is whole in c
   (a large list can come in pieces: a piece is waited for, 5 s at most). */
static uint64_t uw_settled(struct ms_client *c)
{
	const char *err = "";
	int32_t st;
	uint64_t count = 0;
	for (int i = 0; i < 500; i++) {
		int ret = ms_client_watch_poll(c, 1, &st, &count, &err);
		if (ret == 1) {
			assert_int_equal(st, 0);
			return count;
		}
		assert_int_equal(ret, -EBUSY);
		struct pollfd p = { .fd = ms_client_fd(c), .events = POLLIN };
		(void)poll(&p, 1, 10);
	}
	fail_msg("the watch's replies did not come whole");
	return 0;
}

/* n MBOX_CREATEs of prefix0.. prefix(n-1) pipelined on c, each OK. */
static void mbox_create_many(struct ms_client *c, const char *prefix, int n)
{
	uint32_t *ids = calloc((size_t)n, sizeof(*ids));
	const char *err = "";
	assert_non_null(ids);
	for (int i = 0; i < n; i++) {
		char name[32];
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		snprintf(name, sizeof(name), "%s%d", prefix, i);
		q.u.mbox.name = ms_pstr_c(name);
		assert_int_equal(ms_client_send_req(c, &q, &ids[i], &err), 0);
	}
	for (int i = 0; i < n; i++) {
		struct ms_proto_hdr h;
		struct ms_reply rep;
		const uint8_t *body;
		size_t len;
		assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
		assert_int_equal(h.id, ids[i]);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err),
				 0);
		assert_int_equal(rep.status, 0);
	}
	free(ids);
}

/*
 * The watch's mailbox lists at their limits ([store] max_frame = 64K:
 * a reply of 32 KiB at most, about 2,000 mailboxes).  More than 1,024
 * mailboxes changed between two replies (a RENAME of a folder with
 * 1,100 children, one request): that reply has none, the client knows
 * none, and the next one lists them all (STATUS counts the full lists).
 * A full list larger than a reply holds (2,100 mailboxes): a new watch
 * gets none, and knows none, its user's count right; an older watch
 * goes on with the changed ones.  A USER_DELETE: an empty full list,
 * the client knows that the user has no mailbox.
 */
static void test_user_watch_mailbox_limits(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-uwlim", "max_frame = 64K");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "ula"), 0);
	struct ms_client *w = msd_connect(&d, "ula");
	struct ms_reply rep;
	struct ms_req q;
	uint64_t epoch, c0, n;
	assert_int_equal(msd_append1(w, "INBOX", "first", 5, 0).status, 0);
	assert_int_equal(mbox_create(w, "R", &rep), 0);
	mbox_create_many(w, "R/c", 1100);
	uint64_t inbox = uw_mbox_id(w, "INBOX"), child = uw_mbox_id(w, "R/c7");
	struct ms_client *x = uw_connect(&d, "ula", &epoch, &c0);
	assert_true(uw_watch(x) == c0);
	assert_true(uw_mbox(x, child) != 0);
	assert_int_equal(msd_counter(w, "ops.change_counts.full_lists"), 1);

	/* 1,101 renamed in one request: none, then all */
	q = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q.u.mbox.name = MS_PSTR("R");
	q.u.mbox.new_name = MS_PSTR("S");
	assert_int_equal(msd_req(w, &q, &rep), 0);
	uint64_t now = uw_settled(x);
	assert_true(now > c0);
	assert_int_equal(ms_client_watch_mbox(x, child, &n), -ENOENT);
	assert_int_equal(msd_append1(w, "INBOX", "more", 4, 0).status, 0);
	now = uw_settled(x);
	assert_int_equal(msd_counter(w, "ops.change_counts.full_lists"), 2);
	assert_true(uw_mbox(x, inbox) == now);
	uint64_t k = uw_mbox(x, uw_mbox_id(w, "S/c7"));
	assert_true(k > c0 && k < now && uw_mbox_id(w, "S/c7") == child);

	/* 2,103 mailboxes: a full list does not fit a reply */
	mbox_create_many(w, "T", 1000);
	now = uw_settled(x);
	assert_true(uw_mbox(x, uw_mbox_id(w, "T999")) != 0);
	uint64_t c1;
	struct ms_client *y = uw_connect(&d, "ula", &epoch, &c1);
	assert_true(uw_watch(y) == now && c1 == now);
	assert_int_equal(ms_client_watch_mbox(y, inbox, &n), -ENOENT);
	assert_int_equal(msd_counter(w, "ops.change_counts.full_lists"), 2);
	assert_int_equal(msd_append1(w, "INBOX", "last", 4, 0).status, 0);
	now = uw_settled(x);
	assert_true(uw_settled(y) == now);
	assert_true(uw_mbox(x, inbox) == now);
	assert_int_equal(ms_client_watch_mbox(y, inbox, &n), -ENOENT);

	/* the user deleted: an empty full list */
	struct ms_client *adm = msd_connect(&d, NULL);
	q = (struct ms_req){ .op = MS_OP_USER_DELETE };
	q.u.user.name = MS_PSTR("ula");
	assert_int_equal(msd_req(adm, &q, &rep), 0);
	assert_true(uw_settled(x) > now);
	assert_true(uw_settled(y) > now);
	assert_int_equal(ms_client_watch_mbox(x, inbox, &n), 0);
	assert_int_equal(ms_client_watch_mbox(y, inbox, &n), 0);
	ms_client_close(&adm);
	ms_client_close(&y);
	ms_client_close(&x);
	ms_client_close(&w);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * USER_WATCH: answered at once with the user's change count, then each
 * time a change to the user's mail (a delivery, flags, an expunge, a
 * new or deleted mailbox, a subscription) moves it; the new count is on
 * the watcher's socket before the writer has its reply: read without
 * waiting right after each of 60 acknowledged changes, on 20 watching
 * connections.  Another user's change moves nothing; an unchanged
 * user's next HELLO gives the same epoch and count; a second watch on
 * a connection and the admin role are refused; a clean restart keeps
 * the epoch and the count, a kill -9 and restart gives a new epoch.
 */
static void test_user_watch(void **state)
{
	(void)state;
	enum { WATCHERS = 20 };
	struct msd d;
	msd_setup(&d, "mstored-uwatch", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "uwa"), 0);
	assert_int_equal(msd_user_add(&d, "uwb"), 0);
	uint64_t epoch, c0, e2, cnt;
	struct ms_client *w = msd_connect(&d, "uwa");
	struct ms_client *b = msd_connect(&d, "uwb");
	struct ms_client *a[WATCHERS];
	struct ms_reply rep;
	struct ms_req q;

	assert_int_equal(msd_append1(w, "INBOX", "first", 5, 0).status, 0);
	for (int i = 0; i < WATCHERS; i++) {
		a[i] = uw_connect(&d, "uwa", &e2, &c0);
		if (i == 0)
			epoch = e2;
		assert_true(e2 == epoch);
		assert_true(uw_watch(a[i]) == c0);
	}
	/* counted apart from IDLE's WAITs (whose walk they stay out of) */
	assert_int_equal(msd_counter(w, "ops.user_watches"), WATCHERS);
	assert_int_equal(msd_counter(w, "ops.waits"), 0);
	uint64_t known = c0;
	uint32_t last_uid = 0;
	for (int round = 0; round < 60; round++) {
		char name[32];
		struct ms_uid_range one = { 1, 1 };
		switch (round % 6) {
		case 0: {
			struct ms_append_result r =
				msd_append1(w, "INBOX", "more", 4, 0);
			assert_int_equal(r.status, 0);
			last_uid = r.uid;
			break;
		}
		case 1:
		case 2:
			q = (struct ms_req){ .op = round % 6 == 1
							  ? MS_OP_STORE
							  : MS_OP_EXPUNGE };
			q.u.store.mailbox = MS_PSTR("INBOX");
			q.u.store.uids.n = 1;
			q.u.store.uids.list = &one;
			one.lo = one.hi = last_uid;
			q.u.store.flags = MS_EVENT_FLAG_DELETED;
			q.u.store.mode = MS_EVENT_MODE_ADD;
			assert_int_equal(msd_req(w, &q, &rep), 0);
			break;
		case 3:
			snprintf(name, sizeof(name), "F%d", round);
			assert_int_equal(mbox_create(w, name, &rep), 0);
			break;
		case 4:
			snprintf(name, sizeof(name), "F%d", round - 1);
			q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
			q.u.mbox.name = ms_pstr_c(name);
			q.u.mbox.subscribe = 1;
			assert_int_equal(msd_req(w, &q, &rep), 0);
			break;
		case 5:
			snprintf(name, sizeof(name), "F%d", round - 2);
			q = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
			q.u.mbox.name = ms_pstr_c(name);
			assert_int_equal(msd_req(w, &q, &rep), 0);
			break;
		}
		/* the writer has its reply: every watcher has the count */
		uint64_t now = uw_now(a[0]);
		if (now <= known)
			fail_msg("round %d: the count on the watch did not move "
				 "by the time the change was acknowledged",
				 round);
		for (int i = 1; i < WATCHERS; i++)
			if (uw_now(a[i]) != now)
				fail_msg("round %d: watcher %d is behind", round,
					 i);
		known = now;
	}

	/* another user's change moves nothing */
	assert_int_equal(msd_append1(b, "INBOX", "bob", 3, 0).status, 0);
	usleep(200000);
	assert_true(uw_now(a[0]) == known);
	/* an unchanged user's HELLO: the same epoch and count */
	struct ms_client *x = uw_connect(&d, "uwa", &e2, &cnt);
	assert_true(e2 == epoch);
	assert_true(cnt == known);
	/* one watch a connection; none for the admin role */
	q = (struct ms_req){ .op = MS_OP_USER_WATCH };
	assert_int_equal(msd_req(a[1], &q, &rep), -EEXIST);
	assert_true(uw_now(a[1]) == known);
	struct ms_client *adm = msd_connect(&d, NULL);
	assert_int_equal(msd_req(adm, &q, &rep), -EACCES);
	/* a USER_WATCH whose first reply cannot be sent (the client shut
	   its reading side after HELLO): the send drops the connection and
	   its session; the watch is parked before that reply, not after
	   (a use after free under ASan otherwise) */
	for (int i = 0; i < 20; i++) {
		struct ms_buf fb;
		struct ms_req hq = { .op = MS_OP_HELLO };
		struct ms_req wq = { .op = MS_OP_USER_WATCH };
		int fd = raw_connect(&d);
		const char *werr = "";
		hq.u.hello.version = MS_PROTO_VERSION;
		hq.u.hello.user = MS_PSTR("uwa");
		ms_buf_init(&fb, 0);
		raw_call(fd, &hq, &fb, &rep);
		assert_int_equal(rep.status, 0);
		assert_int_equal(shutdown(fd, SHUT_RD), 0);
		ms_buf_reset(&fb);
		assert_int_equal(ms_req_encode(&fb, 2, &wq, &werr), 0);
		assert_int_equal(send(fd, fb.data, fb.len, MSG_NOSIGNAL),
				 (ssize_t)fb.len);
		ms_buf_free(&fb);
		/* answered (or not) by the time a request behind it is */
		assert_int_equal(msd_append1(w, "INBOX", "x", 1, 0).status, 0);
		close(fd);
	}
	assert_int_equal(msd_append1(w, "INBOX", "alive", 5, 0).status, 0);
	known = uw_now(a[1]);
	/* a watcher that goes while a change is due to it, and the others
	   still told */
	ms_client_close(&a[0]);
	assert_int_equal(msd_append1(w, "INBOX", "late", 4, 0).status, 0);
	assert_true(uw_now(a[WATCHERS - 1]) > known);
	for (int i = 1; i < WATCHERS; i++)
		ms_client_close(&a[i]);
	assert_int_equal(counter_wait(w, "ops.user_watches", 0), 0);
	ms_client_close(&x);
	ms_client_close(&adm);
	ms_client_close(&b);
	ms_client_close(&w);
	x = uw_connect(&d, "uwa", &e2, &known);
	ms_client_close(&x);
	assert_int_equal(msd_stop(&d), 0);
	/* a clean restart: the same epoch and count (test_changes_kept) */
	msd_start(&d);
	x = uw_connect(&d, "uwa", &e2, &cnt);
	assert_true(e2 == epoch && cnt == known);
	ms_client_close(&x);
	/* killed: a new epoch */
	msd_kill(&d);
	msd_start(&d);
	x = uw_connect(&d, "uwa", &e2, &cnt);
	assert_true(e2 != epoch);
	ms_client_close(&x);
	assert_int_equal(msd_stop(&d), 0);
}

/* How many whole frames buf holds, their ops in ops[] (up to max); -1
   when it ends in part of one. */
static int raw_frames(const struct ms_buf *buf, uint16_t *ops, int max)
{
	size_t off = 0;
	int n = 0;
	while (off < buf->len) {
		struct ms_proto_hdr h;
		size_t need = 0;
		const char *err = "";
		if (ms_proto_frame(buf->data + off, buf->len - off, 0, &h,
				   &need, &err) != 0)
			break;
		if (n < max)
			ops[n] = h.op;
		n++;
		off += MS_PROTO_HDR_SIZE + h.body_len;
	}
	return off == buf->len ? n : -1;
}

/*
 * A watcher that writes: its watch's frame goes out with its reply, in
 * one write, so that it is woken once (docs/protocol.md, USER_WATCH).
 * A raw connection says HELLO and USER_WATCH, then 40 times sends an
 * APPEND, waits until its socket is readable and reads once without
 * waiting: the watch's frame and then the reply, both whole, and
 * nothing else.  Ten other watchers of the user (no reply of theirs
 * in those turns) have the new count by the time the writer has its
 * reply, as every watcher does when the writer does not watch
 * (test_user_watch); as do the watchers while two watching writers
 * append at once.
 */
static void test_user_watch_with_reply(void **state)
{
	(void)state;
	enum { WATCHERS = 10, ROUNDS = 40 };
	struct msd d;
	msd_setup(&d, "mstored-uwreply", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "uwr"), 0);
	struct ms_client *a[WATCHERS];
	uint64_t epoch, c0;
	for (int i = 0; i < WATCHERS; i++) {
		a[i] = uw_connect(&d, "uwr", &epoch, &c0);
		(void)uw_watch(a[i]);
	}
	struct ms_buf fb;
	struct ms_reply rep;
	struct ms_req hq = { .op = MS_OP_HELLO };
	struct ms_req wq = { .op = MS_OP_USER_WATCH };
	struct ms_req aq = { .op = MS_OP_APPEND };
	struct ms_placement pl = { .mailbox = MS_PSTR("INBOX") };
	const char *err = "";
	int fd = raw_connect(&d);
	hq.u.hello.version = MS_PROTO_VERSION;
	hq.u.hello.user = MS_PSTR("uwr");
	ms_buf_init(&fb, 0);
	raw_call(fd, &hq, &fb, &rep);
	assert_int_equal(rep.status, 0);
	raw_call(fd, &wq, &fb, &rep);
	assert_int_equal(rep.status, 0);
	aq.u.append.body = (const uint8_t *)"Subject: x\r\n\r\nbody\r\n";
	aq.u.append.body_len = 20;
	aq.u.append.placements.n = 1;
	aq.u.append.placements.list = &pl;
	uint64_t known = uw_now(a[0]);
	for (int round = 0; round < ROUNDS; round++) {
		uint16_t ops[4];
		ms_buf_reset(&fb);
		assert_int_equal(ms_req_encode(&fb, 100 + (uint32_t)round, &aq,
					       &err),
				 0);
		assert_int_equal(send(fd, fb.data, fb.len, MSG_NOSIGNAL),
				 (ssize_t)fb.len);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ms_buf_reset(&fb);
		assert_int_equal(ms_buf_reserve(&fb, 65536), 0);
		ssize_t n = recv(fd, fb.data, 65536, MSG_DONTWAIT);
		assert_true(n > 0);
		fb.len = (size_t)n;
		int nf = raw_frames(&fb, ops, 4);
		if (nf != 2)
			fail_msg("round %d: one read took %d frames (%zd "
				 "bytes), not the watch's and the reply",
				 round, nf, n);
		assert_int_equal(ops[0], MS_OP_USER_WATCH | MS_OP_REPLY);
		assert_int_equal(ops[1], MS_OP_APPEND | MS_OP_REPLY);
		/* the others were told before the reply went */
		uint64_t now = uw_now(a[0]);
		if (now <= known)
			fail_msg("round %d: a watcher's count did not move by "
				 "the time the writer had its reply",
				 round);
		for (int i = 1; i < WATCHERS; i++)
			if (uw_now(a[i]) != now)
				fail_msg("round %d: watcher %d is behind",
					 round, i);
		known = now;
	}
	/* two watching writers in one turn: each reply comes behind its
	   watch's frame, and every watcher has the count when either
	   writer has its reply */
	for (int round = 0; round < ROUNDS; round++) {
		struct ms_req q0 = aq;
		uint32_t id0, id1;
		assert_int_equal(ms_client_send_req(a[0], &q0, &id0, &err), 0);
		assert_int_equal(ms_client_send_req(a[1], &q0, &id1, &err), 0);
		struct ms_proto_hdr h;
		const uint8_t *body;
		size_t len;
		assert_int_equal(ms_client_recv(a[0], &h, &body, &len, &err),
				 0);
		assert_int_equal(h.id, id0);
		uint64_t now = uw_now(a[0]);
		assert_true(now > known);
		for (int i = 2; i < WATCHERS; i++)
			assert_true(uw_now(a[i]) >= now);
		assert_int_equal(ms_client_recv(a[1], &h, &body, &len, &err),
				 0);
		assert_int_equal(h.id, id1);
		known = uw_now(a[1]);
		assert_true(known >= now);
		for (int i = 2; i < WATCHERS; i++)
			assert_true(uw_now(a[i]) >= known);
	}
	ms_buf_free(&fb);
	close(fd);
	for (int i = 0; i < WATCHERS; i++)
		ms_client_close(&a[i]);
	assert_int_equal(msd_stop(&d), 0);
}

/* One acknowledged message into user's INBOX. */
static void append_as(struct msd *d, const char *user, const char *text)
{
	struct ms_client *w = msd_connect(d, user);
	assert_int_equal(msd_append1(w, "INBOX", text, strlen(text), 0).status,
			 0);
	ms_client_close(&w);
}

static void hello_of(struct msd *d, const char *user, uint64_t *epoch_r,
		     uint64_t *count_r)
{
	struct ms_client *c = uw_connect(d, user, epoch_r, count_r);
	ms_client_close(&c);
}

/* Rewrite d's change counts file through edit (NULL: as it is). */
static void snap_edit(struct msd *d, void (*edit)(struct ms_chgsnap *))
{
	int dirfd = open(d->index, O_RDONLY | O_DIRECTORY);
	struct ms_chgsnap s;
	struct ms_u64map users = { 0 }, mboxes = { 0 };
	const char *err = "";
	assert_true(dirfd >= 0);
	assert_int_equal(ms_chgsnap_read(dirfd, &s, &users, &mboxes, &err), 1);
	if (edit != NULL)
		edit(&s);
	assert_int_equal(ms_chgsnap_write(dirfd, &s, &users, &mboxes, &err), 0);
	ms_u64map_free(&users);
	ms_u64map_free(&mboxes);
	close(dirfd);
}

static void other_store(struct ms_chgsnap *s)
{
	s->store_id[0] ^= 1;
}

static void other_timeline(struct ms_chgsnap *s)
{
	s->timeline++;
}

/* counted past the log's end: the log was cut since (a failback's
   rewind) */
static void log_cut(struct ms_chgsnap *s)
{
	s->seq++;
}

/* counts too near the top of u64 for another restore's gap (ops.c,
   CHG_SEQ_RESTORE_MAX): one past the largest taken */
static void used_up(struct ms_chgsnap *s)
{
	s->chg_seq = UINT64_MAX - ((uint64_t)1 << 61) + 1;
}

static int snap_exists(const struct msd *d)
{
	char path[1200];
	snprintf(path, sizeof(path), "%s/%s", d->index, MS_CHGSNAP_NAME);
	return access(path, F_OK) == 0;
}

/*
 * The change counts across restarts (docs/protocol.md, USER_WATCH): a
 * clean stop writes them to the index directory; the next start takes
 * back the epoch and every user's count, and removes the file.  A
 * changed user's count moves after such a start, an unchanged user's
 * does not.  A new epoch (and a log line saying why) when the file is
 * from before the log's last record (an older file put back) or past it
 * (a log cut since), of another store or timeline, damaged, in a copy
 * of the index directory, or absent (a kill -9: there is none); every
 * such start still serves.  A temporary file left behind by a torn
 * write is neither read nor kept; a stop that cannot write the file
 * logs it, and the next start draws a new epoch.
 */
static void test_changes_kept(void **state)
{
	(void)state;
	struct msd d;
	uint64_t e, a0, b0, e2, a1, b1, a2, b2;
	char held[1200], path[1200];
	msd_setup(&d, "mstored-chgkeep", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "cka"), 0);
	assert_int_equal(msd_user_add(&d, "ckb"), 0);
	append_as(&d, "cka", "one");
	hello_of(&d, "cka", &e, &a0);
	hello_of(&d, "ckb", &e2, &b0);
	assert_true(e2 == e);

	assert_int_equal(msd_stop(&d), 0);
	assert_true(snap_exists(&d));
	msd_start(&d);
	assert_false(snap_exists(&d));
	assert_int_equal(log_count(&d, "event=changes.restored"), 1);
	hello_of(&d, "cka", &e2, &a1);
	hello_of(&d, "ckb", &e2, &b1);
	assert_true(e2 == e && a1 == a0 && b1 == b0);
	/* a change after the restart moves its user's count only */
	append_as(&d, "cka", "two");
	hello_of(&d, "cka", &e2, &a1);
	hello_of(&d, "ckb", &e2, &b1);
	assert_true(e2 == e && a1 > a0 && b1 == b0);
	assert_int_equal(msd_stop(&d), 0);
	/* a temporary file left by a stop killed while it wrote: not read,
	   and the next stop writes over it */
	snprintf(path, sizeof(path), "%s/%s", d.index, MS_CHGSNAP_TMP);
	FILE *tf = fopen(path, "w");
	assert_non_null(tf);
	fputs("torn", tf);
	fclose(tf);
	msd_start(&d);
	hello_of(&d, "cka", &e2, &a2);
	hello_of(&d, "ckb", &e2, &b2);
	assert_true(e2 == e && a2 == a1 && b2 == b0);
	assert_int_equal(msd_stop(&d), 0);
	assert_int_equal(access(path, F_OK), -1);
	msd_start(&d);
	hello_of(&d, "cka", &e2, &a2);
	assert_true(e2 == e && a2 == a1);

	/* an older file put back after the log moved on */
	assert_int_equal(msd_stop(&d), 0);
	snprintf(path, sizeof(path), "%s/%s", d.index, MS_CHGSNAP_NAME);
	snprintf(held, sizeof(held), "%s/held", d.dir);
	assert_int_equal(rename(path, held), 0);
	msd_start(&d);	/* no file: a new epoch */
	hello_of(&d, "cka", &e2, &a2);
	assert_true(e2 != e);
	e = e2;
	append_as(&d, "ckb", "three");
	assert_int_equal(msd_stop(&d), 0);
	assert_int_equal(rename(held, path), 0);
	msd_start(&d);
	assert_int_equal(log_count(&d, "reason=\"the log moved\""), 1);
	assert_false(snap_exists(&d));
	hello_of(&d, "ckb", &e2, &b2);
	assert_true(e2 != e);
	e = e2;

	/* another store's file, another timeline's, one counted past a
	   log cut since, one with no room left for counts, a damaged one */
	static void (*const edits[])(struct ms_chgsnap *) = {
		other_store, other_timeline, log_cut, used_up
	};
	static const char *const why[] = {
		"reason=\"another store\"", "reason=\"another timeline\"",
		"reason=\"the log moved\"",
		"reason=\"its counts are used up\""
	};
	enum { EDITS = MS_ARRAY_SIZE(edits) };
	for (int i = 0; i <= EDITS; i++) {
		assert_int_equal(msd_stop(&d), 0);
		if (i < EDITS) {
			snap_edit(&d, edits[i]);
		} else {
			int fd = open(path, O_RDWR);
			uint8_t byte;
			assert_true(fd >= 0);
			assert_int_equal(pread(fd, &byte, 1, 30), 1);
			byte ^= 0x40;
			assert_int_equal(pwrite(fd, &byte, 1, 30), 1);
			close(fd);
		}
		msd_start(&d);
		/* (the log moved once before, above) */
		assert_int_equal(log_count(&d, i < EDITS ? why[i]
							 : "event=changes."
							   "unreadable"),
				 i == 2 ? 2 : 1);
		assert_false(snap_exists(&d));
		hello_of(&d, "cka", &e2, &a2);
		assert_true(e2 != e);
		e = e2;
		append_as(&d, "cka", "on");
	}
	/* and the file as written is taken (the edits above were what
	   made the difference) */
	assert_int_equal(msd_stop(&d), 0);
	snap_edit(&d, NULL);
	msd_start(&d);
	hello_of(&d, "cka", &e2, &a2);
	assert_true(e2 == e);
	/* a copy of the index directory (a site seeded from this one):
	   not the directory that wrote the file */
	assert_int_equal(msd_stop(&d), 0);
	char cmd[4600];
	snprintf(cmd, sizeof(cmd), "mv '%s' '%s.orig' && cp -a '%s.orig' '%s'",
		 d.index, d.index, d.index, d.index);
	assert_int_equal(system(cmd), 0);
	assert_true(snap_exists(&d));
	msd_start(&d);
	assert_int_equal(log_count(&d, "reason=\"written in another "
				       "directory\""),
			 1);
	hello_of(&d, "cka", &e2, &a2);
	assert_true(e2 != e);
	e = e2;
	/* a stop that cannot write the file (its temporary name taken by
	   a directory): it says so and exits 0, and the next start draws a
	   new epoch */
	snprintf(path, sizeof(path), "%s/%s", d.index, MS_CHGSNAP_TMP);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(msd_stop(&d), 0);
	assert_int_equal(log_count(&d, "event=changes.save_failed"), 1);
	assert_false(snap_exists(&d));
	assert_int_equal(rmdir(path), 0);
	msd_start(&d);
	hello_of(&d, "cka", &e2, &a2);
	assert_true(e2 != e);
	assert_int_equal(msd_stop(&d), 0);
}

/* Run a shell command; the test fails if it does. */
static void __attribute__((format(printf, 1, 2))) sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

/*
 * A store put back in place from a copy of its files, taken after a
 * clean stop (its directories kept, every file as the copy had it: the
 * log, the index and the change counts).  The start takes the counts
 * back (nothing tells it the log was put back), so the users' counts are
 * the copy's; and a change after it gets a count no change after the
 * copy was made had (ops.c, chg_restore's gap), where counting on from
 * the file's largest count gave the first one's again.
 */
static void test_changes_put_back(void **state)
{
	(void)state;
	struct msd d;
	uint64_t e, e2, a0, b0, a1, a2, b2;
	const char *const dirs[] = { d.primary, d.secondary, d.index };
	msd_setup(&d, "mstored-chgback", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "pba"), 0);
	assert_int_equal(msd_user_add(&d, "pbb"), 0);
	append_as(&d, "pba", "one");
	assert_int_equal(msd_stop(&d), 0);
	for (int i = 0; i < 3; i++)
		sh("cp -a '%s' '%s/copy%d'", dirs[i], d.dir, i);

	msd_start(&d);
	hello_of(&d, "pba", &e, &a0);
	hello_of(&d, "pbb", &e2, &b0);
	append_as(&d, "pba", "two");
	hello_of(&d, "pba", &e2, &a1);
	assert_true(e2 == e && a1 != a0);
	assert_int_equal(msd_stop(&d), 0);

	/* put back: the files only, so that every directory stays the
	   one that wrote the counts */
	for (int i = 0; i < 3; i++)
		sh("find '%s' -type f -delete && cp -a '%s/copy%d/.' '%s/'",
		   dirs[i], d.dir, i, dirs[i]);
	msd_start(&d);
	assert_int_equal(log_count(&d, "event=changes.restored"), 2);
	hello_of(&d, "pba", &e2, &a2);
	hello_of(&d, "pbb", &e2, &b2);
	assert_true(e2 == e && a2 == a0 && b2 == b0);
	append_as(&d, "pba", "other");
	hello_of(&d, "pba", &e2, &a2);
	assert_true(e2 == e && a2 != a0 && a2 != a1);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * Many WAITs parked at once (IDLE sessions), on three mailboxes, with
 * two deadlines, each mailbox's in a list of its own: a
 * change wakes exactly the waiters of its mailbox; a deadline wakes
 * exactly those whose time came, with the modseq they knew; a
 * connection that hangs up takes its WAITs along (two on one
 * connection included), and a deleted mailbox answers its waiters with
 * an error.  ops.waits counts them all the way.
 */
static void test_many_waits(void **state)
{
	(void)state;
	enum { PER = 40, SHORT = 10, GONE = 20 };
	struct msd d;
	msd_setup(&d, "mstored-waits", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "wt"), 0);
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_client *c = msd_connect(&d, "wt");
	struct ms_reply rep;
	const char *names[] = { "A", "B", "C" };
	for (int i = 0; i < 3; i++)
		assert_int_equal(mbox_create(c, names[i], &rep), 0);
	/* PER long waiters on each of A, B, C; SHORT with a short
	   deadline on A; one connection with two WAITs on A */
	static struct ms_client *w[3][PER], *sh[SHORT];
	uint64_t known[3] = { 0 }, sknown = 0;
	for (int m = 0; m < 3; m++)
		for (int i = 0; i < PER; i++) {
			w[m][i] = msd_connect(&d, "wt");
			known[m] = wait_send(w[m][i], names[m], 60000);
		}
	for (int i = 0; i < SHORT; i++) {
		sh[i] = msd_connect(&d, "wt");
		sknown = wait_send(sh[i], "A", 700);
	}
	struct ms_client *two = msd_connect(&d, "wt");
	wait_send(two, "A", 60000);
	wait_send(two, "A", 60000);
	uint64_t all = 3 * PER + SHORT + 2;
	assert_int_equal(counter_wait(adm, "ops.waits", all), all);

	/* hang-ups: their WAITs go (the one with two included) */
	for (int i = 0; i < GONE; i++)
		ms_client_close(&w[0][i]);
	ms_client_close(&two);
	all -= GONE + 2;
	assert_int_equal(counter_wait(adm, "ops.waits", all), all);

	/* a change to B wakes B's waiters, and only them */
	assert_int_equal(msd_append1(c, "B", "wake", 4, 0).status, 0);
	int st;
	uint64_t hms;
	for (int i = 0; i < PER; i++) {
		assert_int_equal(wait_reply(w[1][i], 5000, &st, &hms), 1);
		assert_int_equal(st, 0);
		assert_true(hms > known[1]);
	}
	all -= PER;
	assert_int_equal(counter_wait(adm, "ops.waits", all), all);
	for (int i = GONE; i < PER; i++)
		assert_int_equal(wait_reply(w[0][i], 0, &st, &hms), 0);
	for (int i = 0; i < PER; i++)
		assert_int_equal(wait_reply(w[2][i], 0, &st, &hms), 0);

	/* the short deadlines pass: those answer with what they knew */
	for (int i = 0; i < SHORT; i++) {
		assert_int_equal(wait_reply(sh[i], 5000, &st, &hms), 1);
		assert_int_equal(st, 0);
		assert_int_equal(hms, sknown);
	}
	all -= SHORT;
	assert_int_equal(counter_wait(adm, "ops.waits", all), all);
	for (int i = GONE; i < PER; i++)
		assert_int_equal(wait_reply(w[0][i], 0, &st, &hms), 0);

	/* C deleted: its waiters are told it is gone */
	struct ms_req q = { .op = MS_OP_MBOX_DELETE };
	q.u.mbox.name = MS_PSTR("C");
	assert_int_equal(msd_req(c, &q, &rep), 0);
	for (int i = 0; i < PER; i++) {
		assert_int_equal(wait_reply(w[2][i], 5000, &st, &hms), 1);
		assert_int_equal(st, MS_ENOTFOUND);
	}
	all -= PER;
	assert_int_equal(counter_wait(adm, "ops.waits", all), all);

	/* A's long waiters are still parked, and a change to A wakes them */
	assert_int_equal(all, PER - GONE);
	assert_int_equal(msd_append1(c, "A", "wake", 4, 0).status, 0);
	for (int i = GONE; i < PER; i++) {
		assert_int_equal(wait_reply(w[0][i], 5000, &st, &hms), 1);
		assert_true(hms > known[0]);
	}
	assert_int_equal(counter_wait(adm, "ops.waits", 0), 0);
	for (int m = 0; m < 3; m++)
		for (int i = 0; i < PER; i++)
			ms_client_close(&w[m][i]);
	for (int i = 0; i < SHORT; i++)
		ms_client_close(&sh[i]);
	ms_client_close(&c);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);
}

/* The index of d's daemon met no record it could not apply. */
static void assert_no_anomalies(struct msd *d)
{
	struct ms_client *adm = msd_connect(d, NULL);
	assert_int_equal(msd_counter(adm, "index.anomalies"), 0);
	ms_client_close(&adm);
}

/* d stopped cleanly and started again (its log replayed into the
   index); *c a new session of user's. */
static void restart_as(struct msd *d, struct ms_client **c, const char *user)
{
	ms_client_close(c);
	assert_int_equal(msd_stop(d), 0);
	msd_start(d);
	*c = msd_connect(d, user);
}

/* The replies to the requests of ids[0..n) (in any order): statuses of
   each (an APPEND's: its one placement's) into st, reasons into why. */
static void replies_by_id(struct ms_client *c, const uint32_t *ids, int n,
			  int *st, char (*why)[64])
{
	for (int k = 0; k < n; k++) {
		struct ms_proto_hdr h;
		struct ms_reply rep;
		const uint8_t *body;
		size_t len;
		const char *err = "";
		assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err),
				 0);
		int i = 0;
		while (i < n && ids[i] != h.id)
			i++;
		assert_true(i < n);
		st[i] = rep.status;
		snprintf(why[i], 64, "%.*s", (int)rep.reason.len,
			 rep.reason.s ? rep.reason.s : "");
		if (rep.status == 0 && h.op == (MS_OP_APPEND | MS_OP_REPLY)) {
			struct ms_proto_iter it;
			struct ms_append_result r;
			ms_proto_iter_results(&it, &rep.u.append);
			assert_int_equal(ms_proto_next_result(&it, &r), 1);
			st[i] = r.status;
			snprintf(why[i], 64, "%.*s", (int)r.reason.len,
				 r.reason.s ? r.reason.s : "");
		}
	}
}

/* reqs q[0..n) in one send on c; their ids into ids */
static void send_reqs(struct ms_client *c, const struct ms_req *q, int n,
		      uint32_t *ids)
{
	struct ms_buf b;
	const char *err = "";
	ms_buf_init(&b, 0);
	for (int i = 0; i < n; i++) {
		ids[i] = ms_client_id(c);
		assert_int_equal(ms_req_encode(&b, ids[i], &q[i], &err), 0);
	}
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
}

/*
 * MBOX_DELETE while messages come in.  A delete in flight makes the
 * mailbox gone for what follows it: an APPEND, a COPY, a second delete
 * and a rename pipelined behind it are refused (not answered OK and
 * then lost with the mailbox).  With MS_MBOX_DELETE_EMPTY (version 9)
 * a mailbox that holds a message, or has one on its way in (an APPEND
 * or COPY ahead of it in the same send), is not deleted: -ENOTEMPTY,
 * and everything stays; an empty one is.  Unknown flag bits are a
 * malformed request.
 */
static void test_mbox_delete_races(void **state)
{
	(void)state;
	struct msd d;
	struct ms_reply rep;
	uint32_t ids[6];
	int st[6];
	char why[6][64];
	msd_setup(&d, "mstored-delrace", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "dee"), 0);
	struct ms_client *c = msd_connect(&d, "dee");
	assert_int_equal(mbox_create(c, "x", &rep), 0);
	assert_int_equal(mbox_create(c, "y", &rep), 0);
	assert_int_equal(msd_append1(c, "x", "one", 3, 0).status, 0);

	/* a message in it: not deleted */
	struct ms_req dq = { .op = MS_OP_MBOX_DELETE };
	dq.u.mbox.name = MS_PSTR("x");
	dq.u.mbox.delete_flags = MS_MBOX_DELETE_EMPTY;
	assert_int_equal(msd_req(c, &dq, &rep), -ENOTEMPTY);
	assert_non_null(memmem(rep.reason.s, rep.reason.len, "not empty", 9));
	assert_int_equal(msd_mbox_status(c, "x").messages, 1);

	/* emptied, then an APPEND and the delete in one send: the APPEND
	   is on its way in when the delete is asked */
	struct ms_uid_range all = { 1, UINT32_MAX };
	struct ms_req eq = { .op = MS_OP_EXPUNGE };
	eq.u.uids.mailbox = MS_PSTR("x");
	eq.u.uids.uids.n = 1;
	eq.u.uids.uids.list = &all;
	assert_int_equal(msd_req(c, &eq, &rep), 0);
	assert_int_equal(msd_mbox_status(c, "x").messages, 0);
	struct ms_placement pl = { .mailbox = MS_PSTR("x") };
	struct ms_req q[6];
	memset(q, 0, sizeof(q));
	q[0].op = MS_OP_APPEND;
	q[0].u.append.body = (const uint8_t *)"two";
	q[0].u.append.body_len = 3;
	q[0].u.append.placements.n = 1;
	q[0].u.append.placements.list = &pl;
	q[1] = dq;
	send_reqs(c, q, 2, ids);
	replies_by_id(c, ids, 2, st, why);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], -ENOTEMPTY);
	assert_non_null(strstr(why[1], "on its way in"));
	assert_int_equal(msd_mbox_status(c, "x").messages, 1);
	/* a COPY into it ahead of the delete: the same */
	assert_int_equal(msd_append1(c, "y", "three", 5, 0).status, 0);
	assert_int_equal(msd_req(c, &eq, &rep), 0);
	q[0] = (struct ms_req){ .op = MS_OP_COPY };
	q[0].u.uids.mailbox = MS_PSTR("y");
	q[0].u.uids.dst = MS_PSTR("x");
	q[0].u.uids.uids.n = 1;
	q[0].u.uids.uids.list = &all;
	send_reqs(c, q, 2, ids);
	replies_by_id(c, ids, 2, st, why);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], -ENOTEMPTY);
	assert_int_equal(msd_mbox_status(c, "x").messages, 1);
	/* empty, nothing coming: deleted */
	assert_int_equal(msd_req(c, &eq, &rep), 0);
	assert_int_equal(msd_req(c, &dq, &rep), 0);
	struct ms_req sq = { .op = MS_OP_MBOX_STATUS };
	sq.u.mbox.name = MS_PSTR("x");
	assert_int_equal(msd_req(c, &sq, &rep), MS_ENOTFOUND);

	/* an unconditional delete in flight: what follows it in the same
	   send finds no mailbox, and nothing answered OK is lost */
	struct ms_placement ply = { .mailbox = MS_PSTR("y") };
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q[0].u.mbox.name = MS_PSTR("y");
	q[1] = (struct ms_req){ .op = MS_OP_APPEND };
	q[1].u.append.body = (const uint8_t *)"four";
	q[1].u.append.body_len = 4;
	q[1].u.append.placements.n = 1;
	q[1].u.append.placements.list = &ply;
	q[2] = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q[2].u.mbox.name = MS_PSTR("y");
	q[3] = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q[3].u.mbox.name = MS_PSTR("y");
	q[3].u.mbox.new_name = MS_PSTR("z");
	assert_int_equal(mbox_create(c, "w", &rep), 0);
	send_reqs(c, q, 4, ids);
	replies_by_id(c, ids, 4, st, why);
	assert_int_equal(st[0], 0);
	for (int i = 1; i < 4; i++) {
		assert_int_equal(st[i], MS_ENOTFOUND);
		assert_non_null(strstr(why[i], "being deleted"));
	}
	sq.u.mbox.name = MS_PSTR("y");
	assert_int_equal(msd_req(c, &sq, &rep), MS_ENOTFOUND);
	sq.u.mbox.name = MS_PSTR("z");
	assert_int_equal(msd_req(c, &sq, &rep), MS_ENOTFOUND);
	/* a COPY into a mailbox being deleted */
	assert_int_equal(msd_append1(c, "INBOX", "five", 4, 0).status, 0);
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q[0].u.mbox.name = MS_PSTR("w");
	q[1] = (struct ms_req){ .op = MS_OP_COPY };
	q[1].u.uids.mailbox = MS_PSTR("INBOX");
	q[1].u.uids.dst = MS_PSTR("w");
	q[1].u.uids.uids.n = 1;
	q[1].u.uids.uids.list = &all;
	send_reqs(c, q, 2, ids);
	replies_by_id(c, ids, 2, st, why);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], MS_ENOTFOUND);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 1);
	/* the writes that name a mailbox being deleted: a flag change, an
	   expunge, an update, a MOVE out of it */
	assert_int_equal(mbox_create(c, "u", &rep), 0);
	assert_int_equal(msd_append1(c, "u", "six", 3, 0).status, 0);
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q[0].u.mbox.name = MS_PSTR("u");
	q[1] = (struct ms_req){ .op = MS_OP_STORE };
	q[1].u.store.mailbox = MS_PSTR("u");
	q[1].u.store.uids.n = 1;
	q[1].u.store.uids.list = &all;
	q[1].u.store.mode = MS_EVENT_MODE_ADD;
	q[1].u.store.flags = MS_EVENT_FLAG_SEEN;
	q[2] = eq;
	q[2].u.uids.mailbox = MS_PSTR("u");
	q[3] = (struct ms_req){ .op = MS_OP_MBOX_UPDATE };
	q[3].u.mbox_update.name = MS_PSTR("u");
	q[3].u.mbox_update.uidnext = 100;
	q[4] = (struct ms_req){ .op = MS_OP_MOVE };
	q[4].u.uids.mailbox = MS_PSTR("u");
	q[4].u.uids.dst = MS_PSTR("INBOX");
	q[4].u.uids.uids.n = 1;
	q[4].u.uids.uids.list = &all;
	send_reqs(c, q, 5, ids);
	replies_by_id(c, ids, 5, st, why);
	assert_int_equal(st[0], 0);
	for (int i = 1; i < 5; i++) {
		assert_int_equal(st[i], MS_ENOTFOUND);
		assert_non_null(strstr(why[i], "being deleted"));
	}
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 1);
	/* none of it was an anomaly for the index */
	assert_no_anomalies(&d);

	/* unknown flag bits: malformed */
	assert_int_equal(mbox_create(c, "v", &rep), 0);
	dq.u.mbox.name = MS_PSTR("v");
	{
		/* the encoder refuses them: the flags byte (the frame's
		   last) is changed after it */
		struct ms_buf b;
		const char *err = "";
		ms_buf_init(&b, 0);
		ids[0] = ms_client_id(c);
		assert_int_equal(ms_req_encode(&b, ids[0], &dq, &err), 0);
		assert_int_equal(b.data[b.len - 1], MS_MBOX_DELETE_EMPTY);
		b.data[b.len - 1] = 2;
		assert_int_equal(ms_client_send(c, b.data, b.len), 0);
		ms_buf_free(&b);
	}
	replies_by_id(c, ids, 1, st, why);
	assert_int_equal(st[0], -EINVAL);
	assert_non_null(strstr(why[0], "flags"));
	assert_int_equal(msd_mbox_status(c, "v").messages, 0);
	/* the index after a restart: nothing of the refused requests */
	restart_as(&d, &c, "dee");
	sq.u.mbox.name = MS_PSTR("x");
	assert_int_equal(msd_req(c, &sq, &rep), MS_ENOTFOUND);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 1);
	assert_int_equal(msd_mbox_status(c, "v").messages, 0);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/* A store in dir with user `user`, connected, and the mailboxes
   made[0..n) created. */
static struct ms_client *start_with_mboxes(struct msd *d, const char *dir,
					   const char *user,
					   const char *const *made, size_t n)
{
	struct ms_reply rep;
	msd_setup(d, dir, NULL);
	msd_start(d);
	assert_int_equal(msd_user_add(d, user), 0);
	struct ms_client *c = msd_connect(d, user);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(mbox_create(c, made[i], &rep), 0);
	return c;
}

/* MBOX_STATUS of each of names[0..n) answers `status`. */
static void assert_mbox_status(struct ms_client *c, const char *const *names,
			       size_t n, int status)
{
	struct ms_req sq = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	for (size_t i = 0; i < n; i++) {
		sq.u.mbox.name = (struct ms_pstr){ names[i], strlen(names[i]) };
		assert_int_equal(msd_req(c, &sq, &rep), status);
	}
}

/*
 * Names in flight: a RENAME takes its new names (its own and its
 * children's) until they are in the index, as a CREATE takes its name.
 * A CREATE of a name a rename in flight takes, a RENAME onto a name a
 * create or another rename in flight takes, are refused with -EEXIST
 * (they were answered OK, and the index then met a second mailbox of
 * one name: an anomaly, the second one's change dropped).
 */
static void test_mbox_rename_races(void **state)
{
	(void)state;
	struct msd d;
	struct ms_reply rep;
	uint32_t ids[2];
	int st[2];
	char why[2][64];
	struct ms_req q[2];
	const char *made[] = { "a", "a2", "p", "p/k", "e", "g" };
	struct ms_client *c = start_with_mboxes(&d, "mstored-renrace", "ren",
						made, MS_ARRAY_SIZE(made));
	struct {
		const char *op1, *a1, *b1, *op2, *a2, *b2, *why;
	} cases[] = {
		{ "rename", "a", "b", "create", "b", NULL, "exists" },
		{ "create", "c", NULL, "rename", "a2", "c", "being made" },
		{ "rename", "p", "q", "create", "q/k", NULL, "exists" },
		{ "rename", "e", "f", "rename", "g", "f", "being made" },
	};
	for (size_t k = 0; k < MS_ARRAY_SIZE(cases); k++) {
		const char *op[2] = { cases[k].op1, cases[k].op2 };
		const char *a[2] = { cases[k].a1, cases[k].a2 };
		const char *b[2] = { cases[k].b1, cases[k].b2 };
		for (int i = 0; i < 2; i++) {
			q[i] = (struct ms_req){ .op = strcmp(op[i], "rename")
							  ? MS_OP_MBOX_CREATE
							  : MS_OP_MBOX_RENAME };
			q[i].u.mbox.name = (struct ms_pstr){ a[i],
							     strlen(a[i]) };
			if (b[i] != NULL)
				q[i].u.mbox.new_name = (struct ms_pstr){
					b[i], strlen(b[i])
				};
		}
		send_reqs(c, q, 2, ids);
		replies_by_id(c, ids, 2, st, why);
		assert_int_equal(st[0], 0);
		assert_int_equal(st[1], -EEXIST);
		assert_non_null(strstr(why[1], cases[k].why));
	}
	/* what the index has: the first of each pair */
	const char *there[] = { "b", "a2", "c", "q", "q/k", "f", "g" };
	for (size_t i = 0; i < MS_ARRAY_SIZE(there); i++)
		assert_int_equal(msd_mbox_status(c, there[i]).messages, 0);
	const char *gone[] = { "a", "p", "p/k", "e" };
	assert_mbox_status(c, gone, MS_ARRAY_SIZE(gone), MS_ENOTFOUND);
	/* once applied, the names are free again for what may take them */
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q[0].u.mbox.name = MS_PSTR("g");
	q[0].u.mbox.new_name = MS_PSTR("e");
	assert_int_equal(msd_req(c, &q[0], &rep), 0);
	assert_int_equal(mbox_create(c, "a", &rep), 0);
	assert_no_anomalies(&d);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * MBOX_RENAME of a name that is no mailbox but has mailboxes under it (an
 * IMAP \Noselect parent: CREATE d/x makes d/x only) moves those, as IMAP
 * renames a \Noselect folder's inferiors (version 10; before, it was
 * MS_ENOTFOUND, and Dovecot renamed its own folders while the store kept
 * the old names).  A name with nothing under it stays MS_ENOTFOUND; a
 * new name (or a child's) that exists is -EEXIST, and nothing moves; a
 * parent whose delete is in flight counts as bare.  The same after a
 * restart (the log replayed), and never an index anomaly.
 */
static void rename_bare_check(struct ms_client *c)
{
	const char *there[] = { "n/x", "n/y/z", "dz", "k/x", "j/x", "r2/c",
				"m2" };
	const char *gone[] = { "d/x", "d/y/z", "n", "n/y", "p2", "p2/c",
			       "r2" };
	assert_int_equal(msd_mbox_status(c, "n/x").messages, 1);
	assert_mbox_status(c, there, MS_ARRAY_SIZE(there), 0);
	assert_mbox_status(c, gone, MS_ARRAY_SIZE(gone), MS_ENOTFOUND);
}

static void test_mbox_rename_bare(void **state)
{
	(void)state;
	struct msd d;
	struct ms_reply rep;
	uint32_t ids[2];
	int st[2];
	char why[2][64];
	struct ms_req q[2];
	const char *made[] = { "d/x", "d/y/z", "dz", "k/x", "j/x", "p2",
			       "p2/c" };
	struct ms_client *c = start_with_mboxes(&d, "mstored-renbare", "bare",
						made, MS_ARRAY_SIZE(made));
	assert_int_equal(msd_append1(c, "d/x", "one", 3, 0).status, 0);
	struct {
		const char *from, *to;
		int status;
	} cases[] = {
		{ "nothing", "m", MS_ENOTFOUND },
		{ "d", "dz", -EEXIST },	 /* the new name is a mailbox */
		{ "k", "j", -EEXIST },	 /* a child's new name is */
		{ "d", "d/w", -EINVAL }, /* under itself */
		{ "d", "n", 0 },
	};
	for (size_t k = 0; k < MS_ARRAY_SIZE(cases); k++) {
		q[0] = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
		q[0].u.mbox.name = (struct ms_pstr){ cases[k].from,
						     strlen(cases[k].from) };
		q[0].u.mbox.new_name = (struct ms_pstr){ cases[k].to,
							 strlen(cases[k].to) };
		assert_int_equal(msd_req(c, &q[0], &rep), cases[k].status);
	}
	/* pipelined: p2's delete, then the rename of p2 (bare by then):
	   its child moves; a create of m2, then a rename of bare k to m2:
	   refused, as a rename onto a mailbox would be */
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_DELETE };
	q[0].u.mbox.name = MS_PSTR("p2");
	q[1] = (struct ms_req){ .op = MS_OP_MBOX_RENAME };
	q[1].u.mbox.name = MS_PSTR("p2");
	q[1].u.mbox.new_name = MS_PSTR("r2");
	send_reqs(c, q, 2, ids);
	replies_by_id(c, ids, 2, st, why);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], 0);
	q[0] = (struct ms_req){ .op = MS_OP_MBOX_CREATE };
	q[0].u.mbox.name = MS_PSTR("m2");
	q[1].u.mbox.name = MS_PSTR("k");
	q[1].u.mbox.new_name = MS_PSTR("m2");
	send_reqs(c, q, 2, ids);
	replies_by_id(c, ids, 2, st, why);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], -EEXIST);
	assert_non_null(strstr(why[1], "being made"));
	rename_bare_check(c);
	assert_no_anomalies(&d);
	restart_as(&d, &c, "bare");
	rename_bare_check(c);
	assert_no_anomalies(&d);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * A user whose USER_DELETE is in flight is gone for the writes after it:
 * an admin APPEND placement for the user, a QUOTA_SET and a second
 * USER_DELETE pipelined behind it are refused with MS_ENOTFOUND.  A
 * session of the user writing at the same time (the server may take its
 * requests before or after the delete): each is answered OK and
 * applied, or refused; never an index anomaly, before or after a
 * restart.
 */
static void test_user_delete_races(void **state)
{
	(void)state;
	struct msd d;
	uint32_t ids[4];
	int st[4];
	char why[4][64];
	struct ms_req q[4];
	msd_setup(&d, "mstored-udelrace", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "gone"), 0);
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_client *u = msd_connect(&d, "gone");
	assert_int_equal(msd_append1(u, "INBOX", "one", 3, 0).status, 0);
	struct ms_placement pl = { .user = MS_PSTR("gone"),
				   .mailbox = MS_PSTR("INBOX") };
	memset(q, 0, sizeof(q));
	q[0].op = MS_OP_USER_DELETE;
	q[0].u.user.name = MS_PSTR("gone");
	q[1].op = MS_OP_APPEND;
	q[1].u.append.body = (const uint8_t *)"two";
	q[1].u.append.body_len = 3;
	q[1].u.append.placements.n = 1;
	q[1].u.append.placements.list = &pl;
	q[2].op = MS_OP_QUOTA_SET;
	q[2].u.quota.user = MS_PSTR("gone");
	q[2].u.quota.max_messages = 10;
	q[3] = q[0];
	send_reqs(adm, q, 4, ids);
	/* and the user's session, at once */
	struct ms_req uq[2];
	uint32_t uids[2];
	int ust[2];
	char uwhy[2][64];
	memset(uq, 0, sizeof(uq));
	uq[0].op = MS_OP_MBOX_CREATE;
	uq[0].u.mbox.name = MS_PSTR("late");
	struct ms_placement upl = { .mailbox = MS_PSTR("INBOX") };
	uq[1].op = MS_OP_APPEND;
	uq[1].u.append.body = (const uint8_t *)"three";
	uq[1].u.append.body_len = 5;
	uq[1].u.append.placements.n = 1;
	uq[1].u.append.placements.list = &upl;
	send_reqs(u, uq, 2, uids);
	replies_by_id(adm, ids, 4, st, why);
	assert_int_equal(st[0], 0);
	for (int i = 1; i < 4; i++) {
		assert_int_equal(st[i], MS_ENOTFOUND);
		assert_non_null(strstr(why[i], "being deleted"));
	}
	replies_by_id(u, uids, 2, ust, uwhy);
	for (int i = 0; i < 2; i++)
		assert_true(ust[i] == 0 || ust[i] == MS_ENOTFOUND);
	/* the session's writes after the delete is applied: refused */
	assert_int_equal(msd_append1(u, "INBOX", "four", 4, 0).status,
			 MS_ENOTFOUND);
	assert_int_equal(msd_counter(adm, "index.anomalies"), 0);
	/* the name is free again */
	assert_int_equal(msd_user_add(&d, "gone"), 0);
	ms_client_close(&u);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);
	msd_start(&d);
	assert_no_anomalies(&d);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * Folder lifecycle against writes, seeded (MS_SEED): three sessions of
 * one user each send a few random requests at once, the three in turn,
 * then read their replies: CREATE, RENAME (children too), DELETE (with
 * and without MS_MBOX_DELETE_EMPTY), APPEND, COPY, MOVE, STORE,
 * EXPUNGE, MBOX_UPDATE over a handful of names.  Any status the request
 * may have is fine; what must never happen is an index anomaly (a
 * record the index cannot apply: a request answered OK whose change is
 * then dropped), a reply of -EIO, or a closed connection; after a
 * restart (the log's tail replayed) there is still none, and every
 * mailbox's MESSAGES is what FETCH_META lists.  MS_STRESS: 15 times the
 * rounds.
 */
static void test_lifecycle_random(void **state)
{
	(void)state;
	enum { NS = 3, MAXB = 6 };
	static const char *names[] = { "A", "B", "C", "A/x", "B/x", "C/x" };
	const size_t nn = MS_ARRAY_SIZE(names);
	uint64_t seed = mst_seed(20261201), rs = seed;
	unsigned long rounds = mst_rounds(1000, 15000);
	struct msd d;
	struct ms_reply rep;
	msd_setup(&d, "mstored-lifecycle", NULL);
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "lif"), 0);
	struct ms_client *c[NS];
	for (int i = 0; i < NS; i++)
		c[i] = msd_connect(&d, "lif");
	struct ms_uid_range all = { 1, UINT32_MAX };
	struct ms_uid_range some = { 2, 4 };
	char body[64];
	unsigned long sent = 0, ok = 0;
	for (unsigned long round = 0; round < rounds; round++) {
		uint32_t ids[NS][MAXB];
		struct ms_placement pl[NS][MAXB];
		int nb[NS];
		for (int k = 0; k < NS; k++) {
			struct ms_req q[MAXB];
			nb[k] = 1 + (int)mst_randn(&rs, MAXB);
			for (int i = 0; i < nb[k]; i++) {
				const char *a = names[mst_randn(&rs, nn)];
				const char *b = names[mst_randn(&rs, nn)];
				struct ms_pstr pa = { a, strlen(a) };
				struct ms_pstr pb = { b, strlen(b) };
				struct ms_req *r = &q[i];
				memset(r, 0, sizeof(*r));
				switch (mst_randn(&rs, 15)) {
				case 0: case 12:
					r->op = MS_OP_MBOX_CREATE;
					r->u.mbox.name = pa;
					break;
				case 1: case 13:
					r->op = MS_OP_MBOX_RENAME;
					r->u.mbox.name = pa;
					r->u.mbox.new_name = pb;
					break;
				case 2: case 14:
					r->op = MS_OP_MBOX_DELETE;
					r->u.mbox.name = pa;
					if (mst_randn(&rs, 2))
						r->u.mbox.delete_flags =
							MS_MBOX_DELETE_EMPTY;
					break;
				case 3: case 4: case 5:
					snprintf(body, sizeof(body),
						 "Subject: r%lu\r\n\r\n%d\r\n",
						 round, i);
					pl[k][i] = (struct ms_placement){
						.mailbox = mst_randn(&rs, 4)
								   ? pa
								   : MS_PSTR("INBOX")
					};
					r->op = MS_OP_APPEND;
					r->u.append.body = (const uint8_t *)body;
					r->u.append.body_len =
						(uint32_t)strlen(body);
					r->u.append.placements.n = 1;
					r->u.append.placements.list = &pl[k][i];
					break;
				case 6: case 7:
					r->op = mst_randn(&rs, 2) ? MS_OP_COPY
								  : MS_OP_MOVE;
					r->u.uids.mailbox = pa;
					r->u.uids.dst = pb;
					r->u.uids.uids.n = 1;
					r->u.uids.uids.list =
						mst_randn(&rs, 2) ? &all : &some;
					break;
				case 8:
					r->op = MS_OP_STORE;
					r->u.store.mailbox = pa;
					r->u.store.uids.n = 1;
					r->u.store.uids.list = &all;
					r->u.store.mode = MS_EVENT_MODE_ADD;
					r->u.store.flags = MS_EVENT_FLAG_SEEN;
					break;
				case 9: case 10:
					r->op = MS_OP_EXPUNGE;
					r->u.uids.mailbox = pa;
					r->u.uids.uids.n = 1;
					r->u.uids.uids.list =
						mst_randn(&rs, 2) ? &all : &some;
					break;
				default:
					r->op = MS_OP_MBOX_UPDATE;
					r->u.mbox_update.name = pa;
					r->u.mbox_update.uidnext =
						(uint32_t)(50 + round);
					break;
				}
			}
			send_reqs(c[k], q, nb[k], ids[k]);
			sent += (unsigned long)nb[k];
		}
		for (int k = 0; k < NS; k++) {
			int st[MAXB];
			char why[MAXB][64];
			replies_by_id(c[k], ids[k], nb[k], st, why);
			for (int i = 0; i < nb[k]; i++) {
				if (st[i] == -EIO || st[i] == MS_ENOCOPY)
					fail_msg("seed %llu round %lu: %d %s",
						 (unsigned long long)seed,
						 round, st[i], why[i]);
				ok += st[i] == 0;
			}
		}
	}
	struct ms_client *adm = msd_connect(&d, NULL);
	uint64_t an = msd_counter(adm, "index.anomalies");
	if (an != 0)
		fail_msg("seed %llu: %llu index anomalies (%lu requests, "
			 "%lu OK)", (unsigned long long)seed,
			 (unsigned long long)an, sent, ok);
	ms_client_close(&adm);
	for (int i = 0; i < NS; i++)
		ms_client_close(&c[i]);
	assert_int_equal(msd_stop(&d), 0);
	msd_start(&d);
	assert_no_anomalies(&d);
	struct ms_client *u = msd_connect(&d, "lif");
	struct ms_req lq = { .op = MS_OP_MBOX_LIST };
	assert_int_equal(msd_req(u, &lq, &rep), 0);
	uint32_t nmb = rep.u.mboxes.n;
	assert_true(nmb >= 1);
	for (size_t i = 0; i < nn + 1; i++) {
		const char *nm = i < nn ? names[i] : "INBOX";
		struct ms_req sq = { .op = MS_OP_MBOX_STATUS };
		sq.u.mbox.name = (struct ms_pstr){ nm, strlen(nm) };
		if (msd_req(u, &sq, &rep) != 0)
			continue;
		uint32_t msgs = rep.u.mbox.messages;
		struct ms_req fq = { .op = MS_OP_FETCH_META };
		fq.u.uids.mailbox = sq.u.mbox.name;
		fq.u.uids.uids.n = 1;
		fq.u.uids.uids.list = &all;
		assert_int_equal(msd_req(u, &fq, &rep), 0);
		if (rep.u.metas.n != msgs)
			fail_msg("seed %llu: %s has MESSAGES %u, FETCH_META "
				 "%u", (unsigned long long)seed, nm, msgs,
				 rep.u.metas.n);
	}
	printf("lifecycle: seed %llu, %lu requests, %lu OK, %u mailboxes\n",
	       (unsigned long long)seed, sent, ok, nmb);
	ms_client_close(&u);
	assert_int_equal(msd_stop(&d), 0);
}

/* n APPENDs of body into INBOX sent at once on c, then their replies
   read: how many were placed (the others must be over quota). */
static int appends_pipelined(struct ms_client *c, int n, const char *body)
{
	struct ms_placement pl = { .mailbox = MS_PSTR("INBOX") };
	struct ms_req q = { .op = MS_OP_APPEND };
	struct ms_buf b;
	const char *err = "";
	int placed = 0;

	q.u.append.body = (const uint8_t *)body;
	q.u.append.body_len = (uint32_t)strlen(body);
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	ms_buf_init(&b, 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(ms_req_encode(&b, ms_client_id(c), &q, &err),
				 0);
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
	for (int i = 0; i < n; i++) {
		struct ms_proto_hdr h;
		struct ms_reply rep;
		struct ms_proto_iter it;
		struct ms_append_result r;
		const uint8_t *body_r;
		size_t len;
		assert_int_equal(ms_client_recv(c, &h, &body_r, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body_r, len, &rep, &err),
				 0);
		assert_int_equal(rep.status, 0);
		ms_proto_iter_results(&it, &rep.u.append);
		assert_int_equal(ms_proto_next_result(&it, &r), 1);
		if (r.status == 0)
			placed++;
		else
			assert_int_equal(r.status, -EDQUOT);
	}
	return placed;
}

static void quota_set(struct ms_client *adm, const char *user,
		      uint64_t max_bytes, uint64_t max_messages)
{
	struct ms_req q = { .op = MS_OP_QUOTA_SET };
	struct ms_reply rep;
	q.u.quota.user = (struct ms_pstr){ user, strlen(user) };
	q.u.quota.max_bytes = max_bytes;
	q.u.quota.max_messages = max_messages;
	assert_int_equal(msd_req(adm, &q, &rep), 0);
}

/*
 * Quota counts what is in flight: APPENDs sent at once, none durable
 * yet when the next is checked, fill a quota exactly and no further,
 * by messages and by bytes; what was in flight is let go when it is
 * durable (the next batch again fills exactly what is left), and users
 * that appended once and never again leave nothing behind that changes
 * another's count (600 of them, then the first user again).
 */
static void test_quota_in_flight(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-quota-flight", NULL);
	msd_start(&d);
	struct ms_client *adm = msd_connect(&d, NULL);
	assert_int_equal(msd_user_add(&d, "qf"), 0);
	struct ms_client *c = msd_connect(&d, "qf");
	static const char body[] = "Subject: q\r\n\r\n0123456789\r\n";
	const uint64_t len = sizeof(body) - 1;

	quota_set(adm, "qf", 0, 5);
	assert_int_equal(appends_pipelined(c, 8, body), 5);
	quota_set(adm, "qf", 0, 7);
	assert_int_equal(appends_pipelined(c, 4, body), 2);
	/* by bytes: room for three more */
	quota_set(adm, "qf", 10 * len, 0);
	assert_int_equal(appends_pipelined(c, 6, body), 3);
	assert_int_equal(appends_pipelined(c, 2, body), 0);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 10);

	/* many users, one append each, none with a quota */
	char name[32];
	for (int u = 0; u < 600; u++) {
		snprintf(name, sizeof(name), "many%d", u);
		assert_int_equal(msd_user_add(&d, name), 0);
		struct ms_client *x = msd_connect(&d, name);
		assert_int_equal(appends_pipelined(x, 1, body), 1);
		ms_client_close(&x);
	}
	/* qf's count is its own: room for exactly two */
	quota_set(adm, "qf", 12 * len, 0);
	assert_int_equal(appends_pipelined(c, 5, body), 2);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, 12);
	ms_client_close(&c);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * Group commit gather: a lone client is never held (its own request
 * ends the gather); a flush held for a client that does not come back
 * starts at the deadline (the timer), and the request behind it is
 * answered; with the gather off nothing is held.
 */
static void test_commit_gather(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-gather", "group_commit_wait_us = 20000");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "gina"), 0);
	assert_int_equal(msd_user_add(&d, "hugo"), 0);
	struct ms_client *adm = msd_connect(&d, NULL);
	struct ms_client *a = msd_connect(&d, "gina");
	struct ms_client *b = msd_connect(&d, "hugo");

	for (int i = 0; i < 30; i++)
		assert_int_equal(msd_append1(a, "INBOX", "x", 1, 0).status, 0);
	assert_int_equal(msd_counter(adm, "ops.gather_holds"), 0);

	/*
	 * a appends twice in a row (so it came back within the gather
	 * and is worth waiting for), and its second append is answered;
	 * b's append behind it is held until the deadline, since a sends
	 * nothing.  b is answered all the same.  (Tried a few times: a
	 * scheduler that stops this process longer than the gather lets
	 * the deadline pass before b's request is there.)
	 */
	uint64_t worst = 0;
	uint32_t nb = 0;
	for (int i = 0; i < 20 && msd_counter(adm, "ops.gather_holds") == 0;
	     i++) {
		assert_int_equal(msd_append1(a, "INBOX", "a", 1, 0).status, 0);
		assert_int_equal(msd_append1(a, "INBOX", "a", 1, 0).status, 0);
		uint64_t t0 = mono_ms();
		assert_int_equal(msd_append1(b, "INBOX", "b", 1, 0).status, 0);
		nb++;
		uint64_t t = mono_ms() - t0;
		worst = t > worst ? t : worst;
	}
	assert_true(msd_counter(adm, "ops.gather_holds") >= 1);
	assert_true(msd_counter(adm, "ops.gather_timeouts") >= 1);
	/* the hold is at most the cap (20 ms) plus scheduling; a hold the
	   timer did not end would wait for the loop's 1 s turn */
	if (worst > 500)
		fail_msg("a held append took %llu ms", (unsigned long long)worst);
	assert_int_equal(msd_mbox_status(b, "INBOX").messages, nb);
	ms_client_close(&a);
	ms_client_close(&b);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);

	/* off: never held */
	msd_setup(&d, "mstored-gather0", "group_commit_wait_us = 0");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "gina"), 0);
	assert_int_equal(msd_user_add(&d, "hugo"), 0);
	adm = msd_connect(&d, NULL);
	a = msd_connect(&d, "gina");
	b = msd_connect(&d, "hugo");
	for (int i = 0; i < 10; i++) {
		assert_int_equal(msd_append1(a, "INBOX", "a", 1, 0).status, 0);
		assert_int_equal(msd_append1(b, "INBOX", "b", 1, 0).status, 0);
	}
	assert_int_equal(msd_counter(adm, "ops.gather_holds"), 0);
	ms_client_close(&a);
	ms_client_close(&b);
	ms_client_close(&adm);
	assert_int_equal(msd_stop(&d), 0);
}

struct meta_walk {
	size_t n;
	uint32_t last;
};

struct list_walk {
	size_t n;
	int inbox;
};

/* ms_client_mbox_list_each's callback: counts. */
static int mbox_count(void *ctx, const struct ms_mbox_info *m)
{
	struct list_walk *w = ctx;
	w->n++;
	w->inbox += m->name.len == 5 && memcmp(m->name.s, "INBOX", 5) == 0;
	return 0;
}

/* ms_client_fetch_meta_each's callback: counts, checks the order. */
static int meta_count(void *ctx, const struct ms_msg_meta *m)
{
	struct meta_walk *w = ctx;
	if (m->uid <= w->last)
		return MS_ECORRUPT;
	w->last = m->uid;
	w->n++;
	return 0;
}

/* Open file descriptors of process pid. */
static int count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	int n = 0;
	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 2;
}

enum { FILE_BODIES = 12, FILE_BODY_SIZE = 60000 };

/* A daemon that may queue 1 MiB of replies a connection, a user, and
   FILE_BODIES bodies of FILE_BODY_SIZE in its INBOX (uids 1, 2, ...),
   incompressible (mst_fill from seed): its client is returned. */
static struct ms_client *file_setup(struct msd *d, const char *tag,
				    const char *user,
				    uint8_t bodies[][FILE_BODY_SIZE],
				    uint64_t seed)
{
	msd_setup(d, tag, "max_output = 1m");
	msd_start(d);
	assert_int_equal(msd_user_add(d, user), 0);
	struct ms_client *c = msd_connect(d, user);
	for (int i = 0; i < FILE_BODIES; i++) {
		mst_fill(bodies[i], FILE_BODY_SIZE, seed + (uint64_t)i);
		assert_int_equal(msd_append1(c, "INBOX", bodies[i],
					     FILE_BODY_SIZE, 0).uid,
				 (uint32_t)i + 1);
	}
	return c;
}

/* Every body of file_setup's INBOX asked for and read one at a time:
   bodies' bytes. */
static void file_bodies_check(struct ms_client *c,
			      uint8_t bodies[][FILE_BODY_SIZE])
{
	const char *err = "";
	for (int i = 0; i < FILE_BODIES; i++) {
		struct ms_buf body;
		ms_buf_init(&body, 0);
		assert_int_equal(ms_client_fetch_body(c, "INBOX",
						      (uint32_t)i + 1, 0, &body,
						      &err), 0);
		assert_int_equal(body.len, FILE_BODY_SIZE);
		assert_memory_equal(body.data, bodies[i], FILE_BODY_SIZE);
		ms_buf_free(&body);
	}
}

/* The next reply on c, decoded into *rep (pointing into c's buffer,
   until the next read): status 0. */
static void reply_ok(struct ms_client *c, struct ms_reply *rep)
{
	struct ms_proto_hdr h;
	const uint8_t *body;
	size_t len;
	const char *err = "";
	assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
	assert_int_equal(ms_reply_decode(h.op, body, len, rep, &err), 0);
	assert_int_equal(rep->status, 0);
}

/* rep is a FETCH_BODY reply with all of want (FILE_BODY_SIZE bytes). */
static void body_reply_check(const struct ms_reply *rep, const uint8_t *want)
{
	assert_int_equal(rep->op, MS_OP_FETCH_BODY);
	assert_int_equal(rep->u.fetch_body.total, FILE_BODY_SIZE);
	assert_int_equal(rep->u.fetch_body.chunk_len, FILE_BODY_SIZE);
	assert_memory_equal(rep->u.fetch_body.chunk, want, FILE_BODY_SIZE);
}

/* The lowest descriptor number pid has free. */
static int lowest_free_fd(pid_t pid)
{
	char path[64];
	static char used[4096];
	memset(used, 0, sizeof(used));
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	struct dirent *e;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd >= 0 && fd < (int)sizeof(used))
			used[fd] = 1;
	}
	closedir(d);
	int fd = 0;
	while (fd < (int)sizeof(used) && used[fd])
		fd++;
	return fd;
}

/* n FETCH_BODY requests of uids 1..FILE_BODIES in turn, in one send,
   none of their replies read */
static void file_fetches(struct ms_client *c, int n)
{
	struct ms_buf b;
	const char *err = "";
	ms_buf_init(&b, 0);
	for (int i = 0; i < n; i++) {
		struct ms_req q = { .op = MS_OP_FETCH_BODY };
		q.u.fetch_body.mailbox = MS_PSTR("INBOX");
		q.u.fetch_body.uid = (uint32_t)(i % FILE_BODIES) + 1;
		assert_int_equal(ms_req_encode(&b, ms_client_id(c), &q, &err),
				 0);
	}
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
}

/*
 * Body chunks sent from the segment file (sendfile) between replies sent
 * from memory, on a connection whose queue fills (max_output 1 MiB): 12
 * bodies of 60,000 bytes asked for in turn, 120 times, a STATUS among
 * them every tenth, all sent before any reply is read.  Each body is read
 * anew (the session keeps only the last one), so the chunks go from the
 * file until 8 file ranges are queued, and from memory while they are;
 * the replies come back in order, byte-identical.  Before that, each
 * body asked for and read one at a time goes out at once, with the log's
 * own descriptor (srv.file_replies_queued stays 0); in the burst some
 * ranges wait, with a dup each.  A client that hangs up with file ranges
 * queued leaves no descriptor open.
 */
static void test_file_replies(void **state)
{
	(void)state;
	enum { B = FILE_BODIES, N = 120, SIZE = FILE_BODY_SIZE };
	struct msd d;
	static uint8_t bodies[B][SIZE];
	struct ms_client *c = file_setup(&d, "mstored-file", "liv", bodies,
					 100);
	int fds0 = count_fds(d.pid);
	struct ms_buf b;
	const char *err = "";
	/* one at a time, each reply read as it comes: the socket takes it
	   at once, sent with the log's own descriptor (none waits with a
	   dup of its own) */
	file_bodies_check(c, bodies);
	assert_int_equal(msd_counter(c, "ops.body_chunks_from_file"), B);
	assert_int_equal(msd_counter(c, "srv.file_replies_queued"), 0);
	assert_int_equal(count_fds(d.pid), fds0);
	ms_buf_init(&b, 0);
	for (int i = 0; i < N; i++) {
		struct ms_req q = { .op = MS_OP_FETCH_BODY };
		q.u.fetch_body.mailbox = MS_PSTR("INBOX");
		q.u.fetch_body.uid = (uint32_t)(i % B) + 1;
		if (i % 10 == 9) {
			q = (struct ms_req){ .op = MS_OP_MBOX_STATUS };
			q.u.mbox.name = MS_PSTR("INBOX");
		}
		assert_int_equal(ms_req_encode(&b, ms_client_id(c), &q, &err),
				 0);
	}
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	/* let the daemon queue all it may (1 MiB) before anything is read */
	usleep(200000);
	for (int i = 0; i < N; i++) {
		struct ms_reply rep;
		reply_ok(c, &rep);
		if (i % 10 == 9) {
			assert_int_equal(rep.op, MS_OP_MBOX_STATUS);
			assert_int_equal(rep.u.mbox.messages, B);
			continue;
		}
		body_reply_check(&rep, bodies[i % B]);
	}
	/* the queue drained: every file range's descriptor closed */
	assert_int_equal(count_fds(d.pid), fds0);
	/* both ways were taken: 12 fresh reads a turn of 12, the first
	   8 queued from the file (then the queue is full, and stays so
	   while nothing is read) */
	uint64_t all = msd_counter(c, "ops.body_chunks") - B;
	uint64_t file = msd_counter(c, "ops.body_chunks_from_file") - B;
	assert_int_equal(all, 108);
	assert_true(file >= 8 && file < all);
	/* those the socket could not take waited, each with its dup */
	assert_true(msd_counter(c, "srv.file_replies_queued") >= 1);

	/* no descriptor to spare (mstored's open files at its limit): the
	   ranges the socket does not take are read into the queue, not
	   kept as dups, and every reply still comes back whole */
	uint64_t queued = msd_counter(c, "srv.file_replies_queued");
	uint64_t from_file = msd_counter(c, "ops.body_chunks_from_file");
	struct rlimit old, low;
	assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest_free_fd(d.pid);
	assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &low, NULL), 0);
	file_fetches(c, 40);
	usleep(200000);
	for (int i = 0; i < 40; i++) {
		struct ms_reply rep;
		reply_ok(c, &rep);
		body_reply_check(&rep, bodies[i % B]);
	}
	assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &old, NULL), 0);
	assert_true(msd_counter(c, "ops.body_chunks_from_file") > from_file);
	assert_int_equal(msd_counter(c, "srv.file_replies_queued"), queued);
	assert_int_equal(count_fds(d.pid), fds0);

	/* hang up with file ranges queued: closed with the connection */
	ms_buf_free(&b);
	struct ms_client *h = msd_connect(&d, "liv");
	file_fetches(h, 40);
	assert_int_equal(msd_mbox_status(c, "INBOX").messages, B);
	usleep(100000);
	ms_client_close(&h);
	/* the daemon serves on, and lets go of what the other queued */
	int fds = -1;
	for (int t = 0; t < 100 && fds != fds0; t++) {
		assert_int_equal(msd_mbox_status(c, "INBOX").messages, B);
		usleep(20000);
		fds = count_fds(d.pid);
	}
	assert_int_equal(fds, fds0);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

/*
 * A file range that the file no longer holds when its turn comes (the
 * primary's segment cut short under a running mstored, as a failing
 * disk or an operator could), or that a heal has made long again with
 * zeros in the cut (another session's read rewrote a later record from
 * the secondary): the connection is closed in the middle of that reply,
 * with a warning, instead of sending other bytes; every reply that came
 * whole is the body; the daemon serves on, from the other copy.
 */
static void test_file_reply_cut(void **state)
{
	(void)state;
	enum { B = FILE_BODIES, N = 40, SIZE = FILE_BODY_SIZE };
	struct msd d;
	static uint8_t bodies[B][SIZE];
	struct ms_client *c = file_setup(&d, "mstored-filecut", "lou", bodies,
					 300);
	const char *err = "";
	struct ms_client *h = msd_connect(&d, "lou");
	file_fetches(h, N);
	/* what the socket takes goes out now (bodies 1 to 3 or so, in the
	   file's first 200 KB); the next ranges wait in the daemon */
	usleep(200000);
	assert_true(msd_counter(c, "ops.body_chunks_from_file") >= 8);
	/* cut the primary's segment at 64 KiB, a page boundary inside the
	   second body (the bodies follow each other in uid order from
	   offset 64 and some records): whatever is in flight keeps its
	   pages, the first body is whole, the ranges of the others that
	   wait are past the end */
	char seg[1200];
	snprintf(seg, sizeof(seg), "%s/log/000000000001.seg", d.primary);
	assert_true(mst_file_size(seg) > B * SIZE);
	assert_int_equal(truncate(seg, 65536), 0);
	/* another session reads the last body: the primary fails, the
	   secondary's record is written back at its place, and the file
	   is long again, with zeros where the cut was.  The ranges that
	   wait were checked before that rewrite: none of them is sent
	   (they would read those zeros) */
	struct ms_buf last;
	ms_buf_init(&last, 0);
	assert_int_equal(ms_client_fetch_body(c, "INBOX", B, 0, &last, &err),
			 0);
	assert_memory_equal(last.data, bodies[B - 1], SIZE);
	ms_buf_free(&last);
	assert_true(msd_counter(c, "log.heals") >= 1);
	assert_true(mst_file_size(seg) > (B - 1) * SIZE);
	/* read: whole replies are the bodies, then the cut */
	int got = 0, ret = 0;
	for (int i = 0; i < N; i++) {
		struct ms_proto_hdr hd;
		const uint8_t *body;
		size_t len;
		struct ms_reply rep;
		if ((ret = ms_client_recv(h, &hd, &body, &len, &err)) < 0)
			break;
		assert_int_equal(ms_reply_decode(hd.op, body, len, &rep, &err),
				 0);
		assert_int_equal(rep.status, 0);
		assert_int_equal(rep.u.fetch_body.chunk_len, SIZE);
		assert_memory_equal(rep.u.fetch_body.chunk, bodies[i % B], SIZE);
		got++;
	}
	assert_int_equal(ret, MS_ETRUNC);
	assert_true(got >= 1 && got < N);
	ms_client_close(&h);
	/* the daemon serves on: every body, read from the other copy */
	file_bodies_check(c, bodies);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
	assert_true(log_has(&d, "reason=reply_file"));
}

/* One FETCH_BODY of uid from off, at most max bytes: the chunk must be
   want's bytes there (total of them in all). */
static void chunk_check(struct ms_client *c, uint32_t uid, uint64_t off,
			uint32_t max, const uint8_t *want, uint64_t total)
{
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	struct ms_proto_hdr h;
	struct ms_reply rep;
	struct ms_buf b;
	const uint8_t *body;
	const char *err = "";
	size_t len;

	q.u.fetch_body.mailbox = MS_PSTR("INBOX");
	q.u.fetch_body.uid = uid;
	q.u.fetch_body.offset = off;
	q.u.fetch_body.max_len = max;
	ms_buf_init(&b, 0);
	assert_int_equal(ms_req_encode(&b, ms_client_id(c), &q, &err), 0);
	assert_int_equal(ms_client_send(c, b.data, b.len), 0);
	ms_buf_free(&b);
	assert_int_equal(ms_client_recv(c, &h, &body, &len, &err), 0);
	assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
	assert_int_equal(rep.status, 0);
	assert_int_equal(rep.u.fetch_body.total, total);
	uint64_t n = total - off < max ? total - off : max;
	assert_int_equal(rep.u.fetch_body.chunk_len, n);
	assert_memory_equal(rep.u.fetch_body.chunk, want + off, n);
}

/*
 * Large bodies asked for in chunks by several sessions at once, their
 * requests interleaved.  A plain body (incompressible) is read and
 * checked at each session's first chunk, and every chunk goes from the
 * segment file: no session holds a copy of it.  A compressed one is held
 * decoded by each session until its last chunk, then let go.  Chunks
 * pipelined past the 8 file ranges a connection may queue are read from
 * the file into the reply.  A file that reads short under a session
 * (the primary's segment cut) sends it back to the record, which the
 * secondary has.
 */
static void test_large_body_chunks(void **state)
{
	(void)state;
	enum { S = 4, CH = 256 << 10, CH2 = 64 << 10 };
	const uint64_t plen = (3u << 20) + 777, zlen = (3u << 20) + 555;
	struct msd d;
	struct ms_client *c[S];
	const char *err = "";
	uint8_t *p = ms_malloc(plen), *z = ms_malloc(zlen);

	mst_fill(p, plen, 4242);
	for (uint64_t i = 0; i < zlen; i++)
		z[i] = (uint8_t)("To whom it may concern,\r\n"[i % 25]);
	msd_setup(&d, "mstored-bigbody", "max_output = 1m\nscrub_rate = 0");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "ida"), 0);
	for (int i = 0; i < S; i++)
		c[i] = msd_connect(&d, "ida");
	assert_int_equal(msd_append1(c[0], "INBOX", p, plen, 0).uid, 1);
	assert_int_equal(msd_append1(c[0], "INBOX", z, zlen, 0).uid, 2);

	/* the plain body, chunk by chunk, the sessions in turn */
	uint64_t all0 = msd_counter(c[0], "ops.body_chunks");
	uint64_t file0 = msd_counter(c[0], "ops.body_chunks_from_file");
	uint64_t n = 0, nfile = 0;
	for (uint64_t off = 0; off < plen; off += CH) {
		/* a chunk under 16 KiB (the last, 777 bytes) is read */
		for (int i = 0; i < S; i++, n++) {
			chunk_check(c[i], 1, off, CH, p, plen);
			nfile += plen - off >= (16u << 10);
		}
		assert_int_equal(msd_counter(c[0], "ops.session_body_bytes"),
				 0);
	}
	assert_int_equal(msd_counter(c[0], "ops.body_chunks") - all0, n);
	assert_int_equal(msd_counter(c[0], "ops.body_chunks_from_file") -
				 file0, nfile);
	assert_int_equal(nfile, n - S);

	/* the compressed one: held by each session until its last chunk */
	for (uint64_t off = 0; off < zlen; off += CH) {
		for (int i = 0; i < S; i++)
			chunk_check(c[i], 2, off, CH, z, zlen);
		uint64_t held = msd_counter(c[0], "ops.session_body_bytes");
		if (off + CH < zlen)
			assert_true(held >= S * zlen);
		else
			assert_int_equal(held, 0);
	}
	/* one left half read is let go when the session reads another */
	chunk_check(c[0], 2, 0, CH, z, zlen);
	assert_true(msd_counter(c[0], "ops.session_body_bytes") >= zlen);
	chunk_check(c[0], 1, 0, CH, p, plen);
	assert_int_equal(msd_counter(c[0], "ops.session_body_bytes"), 0);

	/* the plain body in chunks of 64 KiB, all asked in one send: 8 file
	   ranges queued (512 KiB, under the connection's 1 MiB), then chunks
	   read into replies while they wait */
	all0 = msd_counter(c[0], "ops.body_chunks");
	file0 = msd_counter(c[0], "ops.body_chunks_from_file");
	struct ms_buf b;
	ms_buf_init(&b, 0);
	uint64_t nch = (plen + CH2 - 1) / CH2;
	for (uint64_t k = 0; k < nch; k++) {
		struct ms_req q = { .op = MS_OP_FETCH_BODY };
		q.u.fetch_body.mailbox = MS_PSTR("INBOX");
		q.u.fetch_body.uid = 1;
		q.u.fetch_body.offset = k * CH2;
		q.u.fetch_body.max_len = CH2;
		assert_int_equal(ms_req_encode(&b, ms_client_id(c[1]), &q,
					       &err), 0);
	}
	assert_int_equal(ms_client_send(c[1], b.data, b.len), 0);
	ms_buf_free(&b);
	usleep(200000);
	for (uint64_t k = 0; k < nch; k++) {
		struct ms_proto_hdr h;
		struct ms_reply rep;
		const uint8_t *body;
		size_t len;
		assert_int_equal(ms_client_recv(c[1], &h, &body, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, body, len, &rep, &err), 0);
		assert_int_equal(rep.status, 0);
		uint64_t want = plen - k * CH2 < CH2 ? plen - k * CH2 : CH2;
		assert_int_equal(rep.u.fetch_body.chunk_len, want);
		assert_memory_equal(rep.u.fetch_body.chunk, p + k * CH2, want);
	}
	uint64_t all = msd_counter(c[0], "ops.body_chunks") - all0;
	uint64_t file = msd_counter(c[0], "ops.body_chunks_from_file") - file0;
	assert_int_equal(all, nch);
	/* of the 48 chunks of 64 KiB, some were read: 8 ranges waited */
	assert_true(file >= 8 && file < nch - 1);

	/* chunks under the file-range minimum are read; the primary cut
	   short under a session that read the body from it */
	chunk_check(c[2], 1, 0, 8192, p, plen);
	uint64_t errs0 = msd_counter(c[0], "log.read_errors");
	char seg[1200];
	snprintf(seg, sizeof(seg), "%s/log/000000000001.seg", d.primary);
	assert_true(mst_file_size(seg) > (long long)plen);
	assert_int_equal(truncate(seg, 65536), 0);
	chunk_check(c[2], 1, 1u << 20, 8192, p, plen);
	chunk_check(c[2], 1, 2u << 20, 8192, p, plen);
	chunk_check(c[2], 1, plen - 100, 8192, p, plen);
	/* the record was read again, from the secondary */
	assert_true(msd_counter(c[0], "log.read_errors") > errs0);
	/* cut again under a session that read the (healed) body from the
	   primary; then another session reads the compressed body, which
	   lies after it: its record is healed into the primary, which is
	   long again with zeros where the plain body was.  The first
	   session's next chunk does not read those zeros: a record was
	   rewritten since its check, so it reads the record anew */
	chunk_check(c[1], 1, 0, 8192, p, plen);
	assert_int_equal(truncate(seg, 65536), 0);
	struct ms_buf zb;
	ms_buf_init(&zb, 0);
	assert_int_equal(ms_client_fetch_body(c[3], "INBOX", 2, 0, &zb, &err),
			 0);
	assert_int_equal(zb.len, zlen);
	assert_memory_equal(zb.data, z, zlen);
	ms_buf_free(&zb);
	assert_true(mst_file_size(seg) > (long long)plen);
	errs0 = msd_counter(c[0], "log.read_errors");
	chunk_check(c[1], 1, 1u << 20, 8192, p, plen);
	assert_true(msd_counter(c[0], "log.read_errors") > errs0);
	struct ms_buf whole;
	ms_buf_init(&whole, 0);
	assert_int_equal(ms_client_fetch_body(c[3], "INBOX", 1, 0, &whole,
					      &err), 0);
	assert_int_equal(whole.len, plen);
	assert_memory_equal(whole.data, p, plen);
	ms_buf_free(&whole);

	for (int i = 0; i < S; i++)
		ms_client_close(&c[i]);
	assert_int_equal(msd_stop(&d), 0);
	free(p);
	free(z);
}

/* Read n replies, each a success. */
static void replies_ok(struct ms_client *c, int n)
{
	for (int i = 0; i < n; i++) {
		struct ms_proto_hdr h;
		struct ms_reply rep;
		const uint8_t *b;
		const char *err = "";
		size_t len;
		assert_int_equal(ms_client_recv(c, &h, &b, &len, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, b, len, &rep, &err), 0);
		assert_int_equal(rep.status, 0);
	}
}

/*
 * Replies stay under half the frame limit ([store] max_frame, here its
 * least, 64 KiB: 32 KiB a reply).  FETCH_META over it answers MS_ETOOBIG
 * (ask for fewer UIDs); a change feed over it answers MS_ESTATE, which
 * sends the client to a full read in FETCH_META replies it sizes;
 * FETCH_BODY's chunk is cut to it and the client library reads on.
 */
static void test_reply_limits(void **state)
{
	(void)state;
	struct msd d;
	msd_setup(&d, "mstored-replymax", "max_frame = 64k");
	msd_start(&d);
	assert_int_equal(msd_user_add(&d, "kim"), 0);
	struct ms_client *c = msd_connect(&d, "kim");
	struct ms_req q;
	struct ms_reply rep;
	/* MBOX_SUBS at the reply limit (32 KiB here): 32 names of 1,000
	   bytes (2 + 1,000 each, with the reply's own 64) fit, a 33rd is
	   refused, MS_ETOOBIG, with the reason */
	char subname[1001];
	memset(subname, 'n', 1000);
	subname[1000] = '\0';
	for (int i = 0; i < 33; i++) {
		char num[16];
		snprintf(num, sizeof(num), "%07d", i);
		memcpy(subname, num, 7); /* the rest stays 'n' */
		q = (struct ms_req){ .op = MS_OP_MBOX_SUBSCRIBE };
		q.u.mbox.name = ms_pstr_c(subname);
		q.u.mbox.subscribe = 1;
		assert_int_equal(msd_req(c, &q, &rep), 0);
		q = (struct ms_req){ .op = MS_OP_MBOX_SUBS };
		if (i < 32) {
			assert_int_equal(msd_req(c, &q, &rep), 0);
			assert_int_equal(rep.u.subs.n, i + 1);
			continue;
		}
		assert_int_equal(msd_req(c, &q, &rep), MS_ETOOBIG);
		assert_non_null(rep.reason.s);
		assert_true(rep.reason.len > 0);
	}

	/* 66 bytes a message in FETCH_META: 600 are over 32 KiB */
	for (int i = 0; i < 600; i++)
		assert_int_equal(msd_append1(c, "INBOX", "short body", 10,
					     0).status, 0);
	struct ms_uid_range all = { 1, UINT32_MAX }, some = { 1, 400 };
	q = (struct ms_req){ .op = MS_OP_FETCH_META };
	q.u.uids.mailbox = MS_PSTR("INBOX");
	q.u.uids.uids.n = 1;
	q.u.uids.uids.list = &all;
	assert_int_equal(msd_req(c, &q, &rep), MS_ETOOBIG);
	assert_non_null(memmem(rep.reason.s, rep.reason.len,
			       "ask for fewer uids", 18));
	q.u.uids.uids.list = &some;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.metas.n, 400);

	/* a 40-byte keyword on all 600: a feed of 60 bytes each */
	uint64_t before = msd_mbox_status(c, "INBOX").highestmodseq;
	struct ms_pstr kw = MS_PSTR("a-keyword-of-forty-bytes-for-the-feed-xx");
	q = (struct ms_req){ .op = MS_OP_STORE };
	q.u.store.mailbox = MS_PSTR("INBOX");
	q.u.store.uids.n = 1;
	q.u.store.uids.list = &all;
	q.u.store.mode = MS_EVENT_MODE_ADD;
	q.u.store.keywords.n = 1;
	q.u.store.keywords.list = &kw;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	uint64_t after = rep.u.store.modseq;
	q = (struct ms_req){ .op = MS_OP_CHANGES };
	q.u.changes.mailbox = MS_PSTR("INBOX");
	q.u.changes.since_modseq = before;
	assert_int_equal(msd_req(c, &q, &rep), MS_ESTATE);
	assert_non_null(memmem(rep.reason.s, rep.reason.len,
			       "too long for one reply", 22));
	/* a feed that fits is answered: 100 messages flagged since */
	struct ms_uid_range first100 = { 1, 100 };
	q = (struct ms_req){ .op = MS_OP_STORE };
	q.u.store.mailbox = MS_PSTR("INBOX");
	q.u.store.uids.n = 1;
	q.u.store.uids.list = &first100;
	q.u.store.mode = MS_EVENT_MODE_ADD;
	q.u.store.flags = MS_EVENT_FLAG_FLAGGED;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	q = (struct ms_req){ .op = MS_OP_CHANGES };
	q.u.changes.mailbox = MS_PSTR("INBOX");
	q.u.changes.since_modseq = after;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.changes.changes.n, 100);

	/* a 50 KiB body: one request gets 32 KiB; the library reads on */
	static char big[50 << 10];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	struct ms_append_result r = msd_append1(c, "INBOX", big, sizeof(big),
						0);
	assert_int_equal(r.status, 0);
	q = (struct ms_req){ .op = MS_OP_FETCH_BODY };
	q.u.fetch_body.mailbox = MS_PSTR("INBOX");
	q.u.fetch_body.uid = r.uid;
	q.u.fetch_body.max_len = 1 << 20;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.fetch_body.total, sizeof(big));
	assert_int_equal(rep.u.fetch_body.chunk_len, 32 << 10);
	struct ms_buf body;
	const char *err;
	ms_buf_init(&body, 0);
	assert_int_equal(ms_client_fetch_body(c, "INBOX", r.uid, 0, &body,
					      &err), 0);
	assert_int_equal(body.len, sizeof(big));
	assert_memory_equal(body.data, big, sizeof(big));
	ms_buf_free(&body);

	/* the library's walk halves its requests until they fit, from
	   the size of the one refused: 601 messages (39,666 bytes) are
	   refused once, then asked as 300, 300 and the rest */
	struct meta_walk w = { 0, 0 };
	uint64_t asked = msd_counter(c, "ops.op.fetch-meta");
	assert_int_equal(ms_client_fetch_meta_each(c, "INBOX", meta_count, &w,
						   &err), 0);
	assert_int_equal(w.n, 601);
	assert_int_equal(w.last, r.uid);
	assert_int_equal(msd_counter(c, "ops.op.fetch-meta") - asked, 4);
	ms_client_close(&c);

	/* USER_LIST: 1,200 users of 40-byte names (about 50 bytes each
	   in the reply) are over 32 KiB; the whole list is refused, pages
	   give every user once, in id order */
	struct ms_client *a = msd_connect(&d, NULL);
	enum { NUSERS = 1200 };
	char name[64];
	for (int i = 0; i < NUSERS; i++) {
		uint32_t rid;
		snprintf(name, sizeof(name), "user-%04d-of-a-list-longer-than-"
			 "a-reply", i);
		q = (struct ms_req){ .op = MS_OP_USER_CREATE };
		q.u.user.name = ms_pstr_c(name);
		assert_int_equal(ms_client_send_req(a, &q, &rid, &err), 0);
	}
	replies_ok(a, NUSERS);
	q = (struct ms_req){ .op = MS_OP_USER_LIST };
	assert_int_equal(msd_req(a, &q, &rep), MS_ETOOBIG);
	assert_non_null(memmem(rep.reason.s, rep.reason.len, "by pages", 8));
	uint64_t last_id = 0;
	unsigned pages = 0, seen = 0, full = 0;
	for (;;) {
		q = (struct ms_req){ .op = MS_OP_USER_LIST };
		q.u.list = (struct ms_req_list){ .paged = 1,
						 .after_id = last_id,
						 .max = 100000 };
		assert_int_equal(msd_req(a, &q, &rep), 0);
		if (rep.u.users.n == 0)
			break;
		struct ms_proto_iter it;
		struct ms_user_info u;
		ms_proto_iter_users(&it, &rep.u.users);
		while (ms_proto_next_user(&it, &u) > 0) {
			assert_true(u.user_id > last_id);
			last_id = u.user_id;
			seen++;
		}
		pages++;
		full += rep.u.users.n;
	}
	assert_int_equal(seen, NUSERS + 1); /* and kim */
	assert_int_equal(full, NUSERS + 1);
	assert_true(pages >= 2);
	/* a page of max users, and none past the last */
	q = (struct ms_req){ .op = MS_OP_USER_LIST };
	q.u.list = (struct ms_req_list){ .paged = 1, .after_id = 0, .max = 7 };
	assert_int_equal(msd_req(a, &q, &rep), 0);
	assert_int_equal(rep.u.users.n, 7);
	q.u.list = (struct ms_req_list){ .paged = 1, .after_id = last_id, .max = 7 };
	assert_int_equal(msd_req(a, &q, &rep), 0);
	assert_int_equal(rep.u.users.n, 0);
	q.u.list = (struct ms_req_list){ .paged = 1, .after_id = UINT64_MAX, .max = 7 };
	assert_int_equal(msd_req(a, &q, &rep), 0);
	assert_int_equal(rep.u.users.n, 0);
	ms_client_close(&a);

	/* MBOX_LIST: 500 mailboxes of 39-byte names (86 bytes each)
	   are over 32 KiB: a clear refusal, not a broken reply; pages give
	   each once (cut by the reply limit, or at max), and the library's
	   walk goes by pages by itself */
	c = msd_connect(&d, "kim");
	q = (struct ms_req){ .op = MS_OP_MBOX_LIST };
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.mboxes.n, 1);
	for (int i = 0; i < 500; i++) {
		uint32_t rid;
		snprintf(name, sizeof(name), "folder-%04d-of-a-list-longer-"
			 "than-reply", i);
		q = (struct ms_req){ .op = MS_OP_MBOX_CREATE };
		q.u.mbox.name = ms_pstr_c(name);
		assert_int_equal(ms_client_send_req(c, &q, &rid, &err), 0);
	}
	replies_ok(c, 500);
	q = (struct ms_req){ .op = MS_OP_MBOX_LIST };
	assert_int_equal(msd_req(c, &q, &rep), MS_ETOOBIG);
	assert_non_null(memmem(rep.reason.s, rep.reason.len,
			       "more mailboxes than one reply", 29));
	uint32_t max_of[] = { 100000, 7 };
	static uint64_t order[501]; /* the names' hashes, in list order */
	for (int t = 0; t < 2; t++) {
		static uint8_t got[501];
		char last[64] = "";
		unsigned npages = 0, n = 0;
		memset(got, 0, sizeof(got));
		for (;;) {
			q = (struct ms_req){ .op = MS_OP_MBOX_LIST };
			q.u.list = (struct ms_req_list){
				.paged = 1, .after_name = ms_pstr_c(last),
				.max = max_of[t] };
			assert_int_equal(msd_req(c, &q, &rep), 0);
			if (rep.u.mboxes.n == 0)
				break;
			npages++;
			assert_true(rep.u.mboxes.n <= max_of[t]);
			struct ms_proto_iter it;
			struct ms_mbox_info mi;
			ms_proto_iter_mboxes(&it, &rep.u.mboxes);
			while (ms_proto_next_mbox(&it, &mi) > 0) {
				int k = 500;
				if (mi.name.len != 5 ||
				    memcmp(mi.name.s, "INBOX", 5) != 0)
					assert_int_equal(sscanf(mi.name.s,
							 "folder-%d", &k), 1);
				assert_true(k >= 0 && k <= 500);
				assert_int_equal(got[k], 0);
				got[k] = 1;
				order[n] = XXH3_64bits(mi.name.s, mi.name.len);
				/* the server's order: the names' hash */
				assert_true(n == 0 || order[n] > order[n - 1]);
				n++;
				assert_true(mi.name.len < sizeof(last));
				memcpy(last, mi.name.s, mi.name.len);
				last[mi.name.len] = '\0';
			}
		}
		assert_int_equal(n, 501);
		/* 43,052 bytes: two replies of 32 KiB; 72 pages of 7 */
		assert_int_equal(npages, t == 0 ? 2 : 72);
	}
	/* after a name that is not there: the next 5 from its hash's place
	   in the order */
	uint64_t hx = XXH3_64bits("no such name", 12);
	size_t at = 0;
	while (at < 501 && order[at] <= hx)
		at++;
	q = (struct ms_req){ .op = MS_OP_MBOX_LIST };
	q.u.list = (struct ms_req_list){ .paged = 1,
					 .after_name = MS_PSTR("no such name"),
					 .max = 5 };
	assert_int_equal(msd_req(c, &q, &rep), 0);
	assert_int_equal(rep.u.mboxes.n, at + 5 <= 501 ? 5 : 501 - at);
	struct ms_proto_iter pit;
	struct ms_mbox_info pmi;
	ms_proto_iter_mboxes(&pit, &rep.u.mboxes);
	for (size_t k = at; ms_proto_next_mbox(&pit, &pmi) > 0; k++)
		assert_true(XXH3_64bits(pmi.name.s, pmi.name.len) == order[k]);
	struct list_walk lw = { 0, 0 };
	asked = msd_counter(c, "ops.op.mbox-list");
	assert_int_equal(ms_client_mbox_list_each(c, mbox_count, &lw, &err),
			 0);
	assert_int_equal(lw.n, 501);
	assert_int_equal(lw.inbox, 1);
	/* refused whole, two pages of 32 KiB (43,052 bytes in all), the
	   empty page */
	assert_int_equal(msd_counter(c, "ops.op.mbox-list") - asked, 4);
	ms_client_close(&c);
	assert_int_equal(msd_stop(&d), 0);
}

int main(void)
{
	ms_msg_set_level(MS_MSG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mail_model),
		cmocka_unit_test(test_store_reply_versions),
		cmocka_unit_test(test_single_instance),
		cmocka_unit_test(test_isolation),
		cmocka_unit_test(test_malformed_frames),
		cmocka_unit_test(test_concurrent_appends),
		cmocka_unit_test(test_index_loss),
		cmocka_unit_test(test_index_commit_deferred),
		cmocka_unit_test(test_mailbox_ops),
		cmocka_unit_test(test_index_grows),
		cmocka_unit_test(test_online_scrub),
		cmocka_unit_test(test_scrub_rate),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_drop_root),
		cmocka_unit_test(test_backpressure_idle),
		cmocka_unit_test(test_shutdown_and_hangup),
		cmocka_unit_test(test_pipelined_burst),
		cmocka_unit_test(test_many_idle),
		cmocka_unit_test(test_many_waits),
		cmocka_unit_test(test_quota_in_flight),
		cmocka_unit_test(test_commit_gather),
		cmocka_unit_test(test_reply_limits),
		cmocka_unit_test(test_file_replies),
		cmocka_unit_test(test_file_reply_cut),
		cmocka_unit_test(test_large_body_chunks),
		cmocka_unit_test(test_max_mailboxes),
		cmocka_unit_test(test_user_watch),
		cmocka_unit_test(test_user_watch_with_reply),
		cmocka_unit_test(test_user_watch_mailboxes),
		cmocka_unit_test(test_user_watch_mailbox_limits),
		cmocka_unit_test(test_changes_kept),
		cmocka_unit_test(test_changes_put_back),
		cmocka_unit_test(test_mbox_delete_races),
		cmocka_unit_test(test_mbox_rename_races),
		cmocka_unit_test(test_mbox_rename_bare),
		cmocka_unit_test(test_user_delete_races),
		cmocka_unit_test(test_lifecycle_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
