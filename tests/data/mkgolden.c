/*
 * mkgolden - writes tests/data/golden/: a small store with one record of
 * most types (an undelete PLACE and a PURGE among them; no TIMELINE,
 * RETIRE or HOLE), a fixed store id, salt and times, so that `mstore
 * dump` and `mstore verify` can be checked against committed output
 * (golden.dump.ref).  The files are committed; run this only when the
 * format changes on purpose, into an empty directory, and review the diff
 * of the .ref file:
 *
 *   cc -std=c11 -D_GNU_SOURCE -Istore -Ibuild tests/data/mkgolden.c \
 *      build/libmstore.a -luring -lsodium -lxxhash -llz4 -llmdb \
 *      -o /tmp/mkgolden
 *   rm -rf tests/data/golden && /tmp/mkgolden tests/data/golden
 *   rm tests/data/golden/*/mstore.lock
 *   rmdir tests/data/golden/*/lost+found
 *   build/mstore dump tests/data/golden > tests/data/golden.dump.ref
 *
 * The output is the same on every run: ids, times and the body are fixed
 * and the body is not sealed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "body.h"
#include "event.h"
#include "log.h"
#include "msg.h"

static struct ms_log *log_;

static void put(uint8_t type, uint8_t flags, const void *p, size_t len)
{
	if (ms_log_append(log_, type, flags, p, (uint32_t)len, NULL, NULL, NULL,
			  NULL) < 0 ||
	    ms_log_sync(log_) < 0) {
		fprintf(stderr, "append failed\n");
		exit(1);
	}
}

static void put_event(const struct ms_event *ev)
{
	struct ms_buf b;
	ms_buf_init(&b, 0);
	if (ms_event_encode(ev, &b) < 0) {
		fprintf(stderr, "encode %u failed\n", ev->type);
		exit(1);
	}
	put(ev->type, 0, b.data, b.len);
	ms_buf_free(&b);
}

#define STR(x) ((struct ms_event_str){ x, sizeof(x) - 1 })

int main(int argc, char **argv)
{
	char a[4096], b[4096];
	struct ms_meta m;
	const char *err;

	if (argc != 2)
		return 2;
	snprintf(a, sizeof(a), "%s/primary", argv[1]);
	snprintf(b, sizeof(b), "%s/secondary", argv[1]);
	mkdir(argv[1], 0755);
	mkdir(a, 0755);
	mkdir(b, 0755);
	/* a fixed identity, so the output never changes */
	for (int i = 0; i < MS_STORE_ID_SIZE; i++)
		m.store_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < MS_SALT_SIZE; i++)
		m.salt[i] = (uint8_t)i;
	m.created = 1795000000;
	for (int c = 0; c < 2; c++) {
		int dfd = open(c ? b : a, O_RDONLY | O_DIRECTORY);
		if (dfd < 0 || ms_meta_write(dfd, &m, &err) < 0)
			return 1;
	}
	struct ms_log_cfg cfg = { .dir = { a, b }, .seg_size = 4096,
				  .engine = MS_IO_PSYNC };
	if (ms_log_open(&cfg, &log_, &err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct ms_body_ctx bctx;
	struct ms_buf payload;
	uint8_t flags;
	ms_body_ctx_init(&bctx, m.store_id, m.salt, NULL, 1);
	ms_buf_init(&payload, 0);
	static const char body[] =
		"From: a@example.test\r\nTo: b@example.test\r\n"
		"Subject: golden\r\n\r\nThe same line again.\r\n"
		"The same line again.\r\nThe same line again.\r\n"
		"The same line again.\r\nThe same line again.\r\n";
	ms_body_encode(&bctx, body, sizeof(body) - 1, &payload, &flags);

	struct ms_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_USER_CREATE;
	ev.u.user_create = (struct ms_event_user_create){ 1, STR("alice") };
	put_event(&ev);
	ev.type = MS_REC_MBOX_CREATE;
	ev.u.mbox_create = (struct ms_event_mbox_create){ 1, 10, 1795000000,
							  0, STR("INBOX") };
	put_event(&ev);
	ev.type = MS_REC_MBOX_SUBSCRIBE;
	ev.u.mbox_subscribe =
		(struct ms_event_mbox_subscribe){ 1, 1, STR("INBOX") };
	put_event(&ev);
	ev.type = MS_REC_QUOTA;
	ev.u.quota = (struct ms_event_quota){ 1, 1 << 30, 100000 };
	put_event(&ev);
	put(MS_REC_BODY, flags, payload.data, payload.len);
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_PLACE;
	ev.u.place.user_id = 1;
	ev.u.place.mbox_id = 10;
	ev.u.place.uid = 1;
	ev.u.place.modseq = 1;
	ev.u.place.flags = 1;
	ev.u.place.received_date = 1795000001;
	ev.u.place.save_date = 1795000001;
	ms_body_dedup_key(&bctx, body, sizeof(body) - 1, ev.u.place.body_key);
	ev.u.place.body_seq = 5;
	ev.u.place.physical_size = sizeof(body) - 1;
	ev.u.place.virtual_size = sizeof(body) - 1;
	put_event(&ev);
	static const struct ms_event_range r1[] = { { 1, 1 } };
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_FLAGS;
	ev.u.flags.user_id = 1;
	ev.u.flags.mbox_id = 10;
	ev.u.flags.modseq = 2;
	ev.u.flags.mode = MS_EVENT_MODE_ADD;
	ev.u.flags.flags = 4;
	ev.u.flags.ranges = (struct ms_event_ranges){ 1, r1, NULL };
	put_event(&ev);
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_EXPUNGE;
	ev.u.expunge.user_id = 1;
	ev.u.expunge.mbox_id = 10;
	ev.u.expunge.modseq = 3;
	ev.u.expunge.time = 1795000100;
	ev.u.expunge.ranges = (struct ms_event_ranges){ 1, r1, NULL };
	put_event(&ev);
	/* undelete: uid 1 comes back as uid 2, on the same body */
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_PLACE;
	ev.u.place.user_id = 1;
	ev.u.place.mbox_id = 10;
	ev.u.place.uid = 2;
	ev.u.place.modseq = 4;
	ev.u.place.flags = 1 | 4;
	ev.u.place.received_date = 1795000001;
	ev.u.place.save_date = 1795000200;
	ms_body_dedup_key(&bctx, body, sizeof(body) - 1, ev.u.place.body_key);
	ev.u.place.body_seq = 5;
	ev.u.place.physical_size = sizeof(body) - 1;
	ev.u.place.virtual_size = sizeof(body) - 1;
	ev.u.place.restore_uid = 1;
	put_event(&ev);
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_PURGE;
	ev.u.purge.before = 1795000300;
	put_event(&ev);
	ev.type = MS_REC_MBOX_RENAME;
	ev.u.mbox_rename = (struct ms_event_mbox_rename){ 1, 10,
							  STR("Archiv/Entwürfe") };
	put_event(&ev);
	ev.type = MS_REC_MBOX_DELETE;
	ev.u.mbox_delete = (struct ms_event_mbox_delete){ 1, 10 };
	put_event(&ev);
	ev.type = MS_REC_CHECKPOINT;
	ev.u.checkpoint = (struct ms_event_checkpoint){ 13, 1, 1795000400 };
	put_event(&ev);
	uint8_t filler[3100];
	memset(filler, 'x', sizeof(filler));
	put(MS_REC_NOOP, 0, filler, sizeof(filler)); /* rolls the segment */
	put(MS_REC_NOOP, 0, filler, 10);
	ev.type = MS_REC_USER_DELETE;
	ev.u.user_delete = (struct ms_event_user_delete){ 1 };
	put_event(&ev);
	ms_buf_free(&payload);
	ms_log_close(&log_);
	return 0;
}
