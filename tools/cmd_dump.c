/*
 * cmd_dump - `mstore dump DIR`: one line per record, in log order, read
 * through the log's checked view (a record bad on one copy is read from
 * the other).  With --copy, only that copy is read, as it is on disk.
 *
 * Line: SEG:OFF seq=N tl=N type=NAME len=N [flags] [what the payload says]
 * Offline and read-only: nothing is written, not even a torn tail cut.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "body.h"
#include "event.h"
#include "log.h"
#include "msg.h"
#include "tools.h"

static int parse_pos(const char *s, struct ms_pos *pos_r)
{
	char *end;
	unsigned long long seg = strtoull(s, &end, 10);
	if (end == s || *end != ':' || s[0] == '-')
		return -1;
	const char *o = end + 1;
	unsigned long long off = strtoull(o, &end, 10);
	if (end == o || *end != '\0' || o[0] == '-')
		return -1;
	pos_r->seg = seg;
	pos_r->off = off;
	return 0;
}

static void print_str(const char *key, struct ms_event_str s)
{
	/* names are checked UTF-8 without control bytes; quote them */
	printf(" %s=\"%.*s\"", key, (int)s.len, s.s);
}

static void print_ranges(const struct ms_event *ev,
			 const struct ms_event_ranges *r)
{
	printf(" uids=");
	for (uint32_t i = 0; i < r->n && i < 8; i++) {
		uint32_t lo, hi;
		if (ms_event_range(ev, i, &lo, &hi) < 0)
			break;
		if (lo == hi)
			printf("%s%u", i ? "," : "", lo);
		else
			printf("%s%u:%u", i ? "," : "", lo, hi);
	}
	if (r->n > 8)
		printf(",...(%u ranges)", r->n);
}

/* What an event record says, in a few key=value words. */
static void print_event(const struct ms_rec_hdr *h, const uint8_t *payload)
{
	struct ms_event ev;
	const char *err;

	if (ms_event_decode(h->type, payload, h->len, &ev, &err) < 0) {
		printf(" BAD-PAYLOAD(%s)", err);
		return;
	}
	switch (ev.type) {
	case MS_REC_USER_CREATE:
		printf(" user=%" PRIu64, ev.u.user_create.user_id);
		print_str("name", ev.u.user_create.name);
		break;
	case MS_REC_USER_DELETE:
		printf(" user=%" PRIu64, ev.u.user_delete.user_id);
		break;
	case MS_REC_MBOX_CREATE:
		printf(" user=%" PRIu64 " mbox=%" PRIu64 " uidvalidity=%u",
		       ev.u.mbox_create.user_id, ev.u.mbox_create.mbox_id,
		       ev.u.mbox_create.uidvalidity);
		print_str("name", ev.u.mbox_create.name);
		break;
	case MS_REC_MBOX_RENAME:
		printf(" user=%" PRIu64 " mbox=%" PRIu64,
		       ev.u.mbox_rename.user_id, ev.u.mbox_rename.mbox_id);
		print_str("to", ev.u.mbox_rename.new_name);
		break;
	case MS_REC_MBOX_DELETE:
		printf(" user=%" PRIu64 " mbox=%" PRIu64,
		       ev.u.mbox_delete.user_id, ev.u.mbox_delete.mbox_id);
		break;
	case MS_REC_MBOX_UPDATE: {
		const struct ms_event_mbox_update *u = &ev.u.mbox_update;
		printf(" user=%" PRIu64 " mbox=%" PRIu64, u->user_id,
		       u->mbox_id);
		if (u->uidvalidity != 0)
			printf(" uidvalidity=%u", u->uidvalidity);
		if (u->uidnext != 0)
			printf(" uidnext>=%u", u->uidnext);
		if (u->highestmodseq != 0)
			printf(" highestmodseq>=%" PRIu64, u->highestmodseq);
		static const uint8_t zero[MS_EVENT_GUID_SIZE];
		if (memcmp(u->guid, zero, sizeof(zero)) != 0) {
			printf(" guid=");
			for (size_t i = 0; i < sizeof(u->guid); i++)
				printf("%02x", u->guid[i]);
		}
		break;
	}
	case MS_REC_MBOX_SUBSCRIBE:
		printf(" user=%" PRIu64 " %s", ev.u.mbox_subscribe.user_id,
		       ev.u.mbox_subscribe.subscribed ? "subscribe"
						      : "unsubscribe");
		print_str("name", ev.u.mbox_subscribe.name);
		break;
	case MS_REC_PLACE:
		printf(" user=%" PRIu64 " mbox=%" PRIu64 " uid=%u modseq=%" PRIu64
		       " flags=0x%x size=%" PRIu64 " body=",
		       ev.u.place.user_id, ev.u.place.mbox_id, ev.u.place.uid,
		       ev.u.place.modseq, ev.u.place.flags,
		       ev.u.place.physical_size);
		for (int i = 0; i < 8; i++)
			printf("%02x", ev.u.place.body_key[i]);
		if (ev.u.place.restore_uid != 0)
			printf(" restores=%u", ev.u.place.restore_uid);
		break;
	case MS_REC_FLAGS:
		printf(" user=%" PRIu64 " mbox=%" PRIu64 " modseq=%" PRIu64
		       " mode=%u flags=0x%x keywords=%u",
		       ev.u.flags.user_id, ev.u.flags.mbox_id,
		       ev.u.flags.modseq, ev.u.flags.mode, ev.u.flags.flags,
		       ev.u.flags.keywords.n);
		print_ranges(&ev, &ev.u.flags.ranges);
		break;
	case MS_REC_EXPUNGE:
		printf(" user=%" PRIu64 " mbox=%" PRIu64 " modseq=%" PRIu64
		       " time=%" PRIu64,
		       ev.u.expunge.user_id, ev.u.expunge.mbox_id,
		       ev.u.expunge.modseq, ev.u.expunge.time);
		print_ranges(&ev, &ev.u.expunge.ranges);
		break;
	case MS_REC_QUOTA:
		printf(" user=%" PRIu64 " max_bytes=%" PRIu64
		       " max_messages=%" PRIu64,
		       ev.u.quota.user_id, ev.u.quota.max_bytes,
		       ev.u.quota.max_messages);
		break;
	case MS_REC_TIMELINE:
		printf(" new_timeline=%" PRIu64 " fork_seq=%" PRIu64,
		       ev.u.timeline.new_timeline, ev.u.timeline.fork_seq);
		break;
	case MS_REC_RETIRE:
		printf(" seg=%" PRIu64 " sum=%016" PRIx64 " dropped=%u",
		       ev.u.retire.seg, ev.u.retire.sum, ev.u.retire.drops.n);
		break;
	case MS_REC_PURGE:
		printf(" before=%" PRIu64, ev.u.purge.before);
		break;
	case MS_REC_CHECKPOINT:
		printf(" applied_seq=%" PRIu64 " generation=%" PRIu64,
		       ev.u.checkpoint.applied_seq,
		       ev.u.checkpoint.index_generation);
		break;
	default:
		break;
	}
}

static void print_record(struct ms_pos pos, const struct ms_rec_hdr *h,
			 const uint8_t *payload)
{
	printf("%012" PRIu64 ":%" PRIu64 " seq=%" PRIu64 " tl=%" PRIu64
	       " type=%s len=%u",
	       pos.seg, pos.off, h->seq, h->timeline,
	       ms_rec_type_name(h->type), h->len);
	if (h->type == MS_REC_BODY) {
		uint8_t key[32];
		uint64_t plain;
		if (ms_body_peek(payload, h->len, key, &plain) == 0) {
			printf(" plain=%" PRIu64 " key=", plain);
			for (int i = 0; i < 8; i++)
				printf("%02x", key[i]);
		}
		if (h->flags & MS_REC_F_LZ4)
			printf(" lz4");
		if (h->flags & MS_REC_F_SEALED)
			printf(" sealed");
	} else if (h->type == MS_REC_SEAL) {
		struct ms_seg_seal s;
		const char *err;
		if (ms_seg_seal_decode(payload, h->len, &s, &err) == 0)
			printf(" records=%" PRIu64 " first=%" PRIu64
			       " last=%" PRIu64 " sum=%016" PRIx64,
			       s.count, s.first_seq, s.last_seq, s.sum);
	} else if (h->type != MS_REC_NOOP) {
		print_event(h, payload);
	}
	if (h->flags & MS_REC_F_BATCH)
		printf(" batch");
	printf("\n");
}

int cmd_dump(int argc, char **argv)
{
	const char *dir = NULL, *secondary = NULL, *copy = NULL;
	struct ms_pos from = { 0, 0 };
	unsigned long long count = ~0ULL;
	struct tool_store ts;

	for (int i = 1; i < argc; i++) {
		char *end;
		if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
			if (parse_pos(argv[++i], &from) < 0)
				goto usage;
		} else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			count = strtoull(argv[++i], &end, 10);
			if (*end != '\0' || argv[i][0] == '-')
				goto usage;
		} else if (strcmp(argv[i], "--copy") == 0 && i + 1 < argc) {
			copy = argv[++i];
			if (strcmp(copy, "primary") != 0 &&
			    strcmp(copy, "secondary") != 0)
				goto usage;
		} else if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc) {
			secondary = argv[++i];
		} else if (argv[i][0] != '-' && dir == NULL) {
			dir = argv[i];
		} else {
			goto usage;
		}
	}
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	if (copy != NULL && strcmp(copy, "secondary") == 0) {
		if (ts.copy[1] == NULL) {
			fprintf(stderr, "mstore dump: no secondary copy\n");
			return TOOL_FAILED;
		}
		ts.copy[0] = ts.copy[1];
	}
	if (copy != NULL)
		ts.copy[1] = NULL;

	ms_msg_set_level(MS_MSG_ERROR);
	struct ms_log_cfg cfg = { .dir = { ts.copy[0], ts.copy[1] },
				  .engine = MS_IO_PSYNC,
				  .readonly = 1 };
	struct ms_log *log;
	const char *err;
	if (ms_log_open(&cfg, &log, &err) < 0) {
		fprintf(stderr, "mstore dump: %s\n", err);
		return TOOL_FAILED;
	}
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *payload;
	int ret = 0;
	ms_log_iter_new(log, from, &it);
	for (unsigned long long n = 0; n < count; n++) {
		ret = ms_log_iter_next(it, &pos, &h, &payload, &err);
		if (ret <= 0)
			break;
		print_record(pos, &h, payload);
	}
	if (ret < 0)
		fprintf(stderr, "mstore dump: %s\n", err);
	ms_log_iter_free(&it);
	ms_log_close(&log);
	return ret < 0 ? TOOL_PROBLEMS : TOOL_OK;
usage:
	fprintf(stderr, "usage: mstore dump DIR [--from SEG:OFF] [--count N] "
			"[--copy primary|secondary] [--secondary DIR2]\n");
	return TOOL_FAILED;
}
