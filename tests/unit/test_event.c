/*
 * test_event.c - payloads of the mail-model records (store/event.c):
 *
 *   golden       a few payloads byte for byte, as docs/format.md draws them
 *   round trip   table of valid events, each case named by its index: the
 *                encoder's bytes equal an independent writer's (raw_encode
 *                below, written from the format tables), decode gives the
 *                same event back, and re-encoding the decoded (packed)
 *                event gives the same bytes
 *   truncated    every round-trip payload cut at every length: MS_ETRUNC
 *   extra byte   every round-trip payload plus one byte: MS_ECORRUPT
 *   bad table    invalid events and payloads, each case named by its
 *                index: the decoder refuses the bytes (without touching its
 *                output or allocating), the encoder refuses the struct
 *   names        the name rule (UTF-8, NUL/CR/LF, lengths) on its own
 *   accessors    keywords, ranges and dropped records in both forms
 *   encoder      limits and malformed structs
 */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"

/* ---- fixtures ---- */

#define KW_STORE 65536
#define RANGE_STORE 10000
#define DROP_STORE 10000

static struct ms_event_str kw_store[KW_STORE];
static char kw_chars[KW_STORE][12];
static struct ms_event_range range_store[RANGE_STORE];
static struct ms_event_drop drop_store[DROP_STORE];
static char fill_chars[70000];
static uint8_t noop_bytes[4096];

/* keywords "k00000", "k00001", ...: n of them in kw_store */
static struct ms_event_keywords make_keywords(uint32_t n)
{
	struct ms_event_keywords k = {.n = n, .list = kw_store};
	for (uint32_t i = 0; i < n; i++) {
		snprintf(kw_chars[i], sizeof(kw_chars[i]), "k%05u", i);
		kw_store[i].s = kw_chars[i];
		kw_store[i].len = 6;
	}
	return k;
}

/* n ranges {3i+1, 3i+2}, then the last one ends at hi_last if not 0 */
static struct ms_event_ranges make_ranges(uint32_t n, uint32_t hi_last)
{
	struct ms_event_ranges r = {.n = n, .list = range_store};
	for (uint32_t i = 0; i < n; i++) {
		range_store[i].lo = 3 * i + 1;
		range_store[i].hi = 3 * i + 2;
	}
	if (n > 0 && hi_last != 0)
		range_store[n - 1].hi = hi_last;
	return r;
}

/* name of len bytes: unit repeated (len must be a multiple of its size) */
static struct ms_event_str make_name(const char *unit, size_t len)
{
	size_t u = strlen(unit);
	assert_true(len <= sizeof(fill_chars) && len % u == 0);
	for (size_t i = 0; i < len; i += u)
		memcpy(fill_chars + i, unit, u);
	return (struct ms_event_str){fill_chars, len};
}

#define S(lit) ((struct ms_event_str){(lit), sizeof(lit) - 1})

static const struct ms_event_str base_place_kw[] = {S("$Forwarded"), S("Work")};
static const struct ms_event_str base_flags_kw[] = {S("$Junk")};
static const struct ms_event_range base_flags_ranges[] = {
	{1, 5}, {7, 7}, {9, 20}};
static const struct ms_event_range base_expunge_ranges[] = {{3, 4}};
/* a BODY (with its key), a PLACE and a NOOP, as compaction lists them */
static const struct ms_event_drop base_drops[] = {
	{64, MS_REC_BODY, {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
			   0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
			   0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
			   0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf}},
	{4200, MS_REC_PLACE, {0}},
	{4400, MS_REC_NOOP, {0}},
};

/* A typical valid event of each type. */
static void base_event(uint8_t type, struct ms_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	switch (type) {
	case MS_REC_USER_CREATE:
		ev->u.user_create.user_id = 7;
		ev->u.user_create.name = S("alice@example.test");
		break;
	case MS_REC_USER_DELETE:
		ev->u.user_delete.user_id = 7;
		break;
	case MS_REC_MBOX_CREATE:
		ev->u.mbox_create.user_id = 7;
		ev->u.mbox_create.mbox_id = 42;
		ev->u.mbox_create.uidvalidity = 1700000000;
		ev->u.mbox_create.special_use = MS_EVENT_SU_DRAFTS;
		ev->u.mbox_create.name = S("Entwürfe");
		break;
	case MS_REC_MBOX_RENAME:
		ev->u.mbox_rename.user_id = 7;
		ev->u.mbox_rename.mbox_id = 42;
		ev->u.mbox_rename.new_name = S("Archiv/2024");
		break;
	case MS_REC_MBOX_DELETE:
		ev->u.mbox_delete.user_id = 7;
		ev->u.mbox_delete.mbox_id = 42;
		break;
	case MS_REC_MBOX_SUBSCRIBE:
		ev->u.mbox_subscribe.user_id = 7;
		ev->u.mbox_subscribe.subscribed = 1;
		ev->u.mbox_subscribe.name = S("INBOX");
		break;
	case MS_REC_MBOX_UPDATE: {
		struct ms_event_mbox_update *e = &ev->u.mbox_update;
		e->user_id = 7;
		e->mbox_id = 42;
		e->uidvalidity = 1795870984;
		e->uidnext = 4711;
		e->highestmodseq = 99;
		for (size_t i = 0; i < sizeof(e->guid); i++)
			e->guid[i] = (uint8_t)(0xc0 + i);
		break;
	}
	case MS_REC_PLACE: {
		struct ms_event_place *e = &ev->u.place;
		e->user_id = 7;
		e->mbox_id = 42;
		e->uid = 1;
		e->modseq = 5;
		e->flags = MS_EVENT_FLAG_SEEN | MS_EVENT_FLAG_FLAGGED;
		e->received_date = 1700000000;
		e->save_date = 1700000100;
		for (size_t i = 0; i < sizeof(e->guid); i++)
			e->guid[i] = (uint8_t)(0x10 + i);
		for (size_t i = 0; i < sizeof(e->body_key); i++)
			e->body_key[i] = (uint8_t)(0x80 + i);
		e->body_seq = 1000;
		e->physical_size = 2048;
		e->virtual_size = 2100;
		e->restore_uid = 0;
		e->keywords.n = MS_ARRAY_SIZE(base_place_kw);
		e->keywords.list = base_place_kw;
		break;
	}
	case MS_REC_FLAGS: {
		struct ms_event_flags *e = &ev->u.flags;
		e->user_id = 7;
		e->mbox_id = 42;
		e->modseq = 6;
		e->mode = MS_EVENT_MODE_ADD;
		e->flags = MS_EVENT_FLAG_SEEN;
		e->keywords.n = MS_ARRAY_SIZE(base_flags_kw);
		e->keywords.list = base_flags_kw;
		e->ranges.n = MS_ARRAY_SIZE(base_flags_ranges);
		e->ranges.list = base_flags_ranges;
		break;
	}
	case MS_REC_EXPUNGE:
		ev->u.expunge.user_id = 7;
		ev->u.expunge.mbox_id = 42;
		ev->u.expunge.modseq = 7;
		ev->u.expunge.time = 1700000300;
		ev->u.expunge.ranges.n = MS_ARRAY_SIZE(base_expunge_ranges);
		ev->u.expunge.ranges.list = base_expunge_ranges;
		break;
	case MS_REC_QUOTA:
		ev->u.quota.user_id = 7;
		ev->u.quota.max_bytes = (uint64_t)1 << 30;
		ev->u.quota.max_messages = 100000;
		break;
	case MS_REC_TIMELINE:
		ev->u.timeline.new_timeline = 2;
		ev->u.timeline.fork_seq = 12345;
		for (size_t i = 0; i < sizeof(ev->u.timeline.store_id); i++)
			ev->u.timeline.store_id[i] = (uint8_t)(0xa0 + i);
		break;
	case MS_REC_RETIRE:
		ev->u.retire.seg = 3;
		ev->u.retire.sum = 0x1122334455667788;
		ev->u.retire.drops.n = MS_ARRAY_SIZE(base_drops);
		ev->u.retire.drops.list = base_drops;
		break;
	case MS_REC_PURGE:
		ev->u.purge.before = 1700000400;
		break;
	case MS_REC_CHECKPOINT:
		ev->u.checkpoint.applied_seq = 5000;
		ev->u.checkpoint.index_generation = 3;
		ev->u.checkpoint.time = 1700000200;
		break;
	case MS_REC_NOOP:
		ev->u.noop.data = (const uint8_t *)"filler";
		ev->u.noop.len = 6;
		break;
	default:
		fail_msg("no base event for type %u", type);
	}
}

/* every type with a payload of its own here */
static const uint8_t event_types[] = {
	MS_REC_PLACE,          MS_REC_FLAGS,       MS_REC_EXPUNGE,
	MS_REC_MBOX_CREATE,    MS_REC_MBOX_RENAME, MS_REC_MBOX_DELETE,
	MS_REC_MBOX_SUBSCRIBE, MS_REC_USER_CREATE, MS_REC_USER_DELETE,
	MS_REC_QUOTA,          MS_REC_TIMELINE,    MS_REC_RETIRE,
	MS_REC_PURGE,          MS_REC_CHECKPOINT,  MS_REC_NOOP,
	MS_REC_MBOX_UPDATE,
};

/* ---- an independent writer, from the tables in docs/format.md ---- */

static void raw8(struct ms_buf *b, uint8_t v)
{
	assert_int_equal(ms_buf_append(b, &v, 1), 0);
}

static void raw16(struct ms_buf *b, uint16_t v)
{
	uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	assert_int_equal(ms_buf_append(b, t, 2), 0);
}

static void raw32(struct ms_buf *b, uint32_t v)
{
	raw16(b, (uint16_t)v);
	raw16(b, (uint16_t)(v >> 16));
}

static void raw64(struct ms_buf *b, uint64_t v)
{
	raw32(b, (uint32_t)v);
	raw32(b, (uint32_t)(v >> 32));
}

static void rawbytes(struct ms_buf *b, const void *p, size_t n)
{
	assert_int_equal(ms_buf_append(b, p, n), 0);
}

static void rawstr(struct ms_buf *b, struct ms_event_str s)
{
	raw16(b, (uint16_t)s.len);
	rawbytes(b, s.s, s.len);
}

static void rawkw(struct ms_buf *b, const struct ms_event_keywords *k)
{
	assert_null(k->packed);
	raw16(b, (uint16_t)k->n);
	for (uint32_t i = 0; i < k->n; i++)
		rawstr(b, k->list[i]);
}

static void rawranges(struct ms_buf *b, const struct ms_event_ranges *r)
{
	assert_null(r->packed);
	raw32(b, r->n);
	for (uint32_t i = 0; i < r->n; i++) {
		raw32(b, r->list[i].lo);
		raw32(b, r->list[i].hi);
	}
}

/* Write ev (list forms only) without checking any rule. */
static void raw_encode(const struct ms_event *ev, struct ms_buf *b)
{
	switch (ev->type) {
	case MS_REC_USER_CREATE:
		raw64(b, ev->u.user_create.user_id);
		rawstr(b, ev->u.user_create.name);
		break;
	case MS_REC_USER_DELETE:
		raw64(b, ev->u.user_delete.user_id);
		break;
	case MS_REC_MBOX_CREATE:
		raw64(b, ev->u.mbox_create.user_id);
		raw64(b, ev->u.mbox_create.mbox_id);
		raw32(b, ev->u.mbox_create.uidvalidity);
		raw32(b, ev->u.mbox_create.special_use);
		rawstr(b, ev->u.mbox_create.name);
		break;
	case MS_REC_MBOX_RENAME:
		raw64(b, ev->u.mbox_rename.user_id);
		raw64(b, ev->u.mbox_rename.mbox_id);
		rawstr(b, ev->u.mbox_rename.new_name);
		break;
	case MS_REC_MBOX_DELETE:
		raw64(b, ev->u.mbox_delete.user_id);
		raw64(b, ev->u.mbox_delete.mbox_id);
		break;
	case MS_REC_MBOX_SUBSCRIBE:
		raw64(b, ev->u.mbox_subscribe.user_id);
		raw8(b, ev->u.mbox_subscribe.subscribed);
		rawstr(b, ev->u.mbox_subscribe.name);
		break;
	case MS_REC_MBOX_UPDATE: {
		const struct ms_event_mbox_update *e = &ev->u.mbox_update;
		raw64(b, e->user_id);       /* 0 */
		raw64(b, e->mbox_id);       /* 8 */
		raw32(b, e->uidvalidity);   /* 16 */
		raw32(b, e->uidnext);       /* 20 */
		raw64(b, e->highestmodseq); /* 24 */
		rawbytes(b, e->guid, 16);   /* 32 */
		break;
	}
	case MS_REC_PLACE: {
		const struct ms_event_place *e = &ev->u.place;
		raw64(b, e->user_id);                 /* 0 */
		raw64(b, e->mbox_id);                 /* 8 */
		raw32(b, e->uid);                     /* 16 */
		raw64(b, e->modseq);                  /* 20 */
		raw32(b, e->flags);                   /* 28 */
		raw64(b, (uint64_t)e->received_date); /* 32 */
		raw64(b, (uint64_t)e->save_date);     /* 40 */
		rawbytes(b, e->guid, 16);             /* 48 */
		rawbytes(b, e->body_key, 32);         /* 64 */
		raw64(b, e->body_seq);                /* 96 */
		raw64(b, e->physical_size);           /* 104 */
		raw64(b, e->virtual_size);            /* 112 */
		raw32(b, e->restore_uid);             /* 120 */
		rawkw(b, &e->keywords);               /* 124 */
		break;
	}
	case MS_REC_FLAGS: {
		const struct ms_event_flags *e = &ev->u.flags;
		raw64(b, e->user_id);
		raw64(b, e->mbox_id);
		raw64(b, e->modseq);
		raw8(b, e->mode);
		raw32(b, e->flags);
		rawkw(b, &e->keywords);
		rawranges(b, &e->ranges);
		break;
	}
	case MS_REC_EXPUNGE:
		raw64(b, ev->u.expunge.user_id);
		raw64(b, ev->u.expunge.mbox_id);
		raw64(b, ev->u.expunge.modseq);
		raw64(b, ev->u.expunge.time);
		rawranges(b, &ev->u.expunge.ranges);
		break;
	case MS_REC_QUOTA:
		raw64(b, ev->u.quota.user_id);
		raw64(b, ev->u.quota.max_bytes);
		raw64(b, ev->u.quota.max_messages);
		break;
	case MS_REC_TIMELINE:
		raw64(b, ev->u.timeline.new_timeline);
		raw64(b, ev->u.timeline.fork_seq);
		rawbytes(b, ev->u.timeline.store_id, 16);
		break;
	case MS_REC_RETIRE:
		assert_null(ev->u.retire.drops.packed);
		raw64(b, ev->u.retire.seg);     /* 0 */
		raw64(b, ev->u.retire.sum);     /* 8 */
		raw32(b, ev->u.retire.drops.n); /* 16 */
		for (uint32_t i = 0; i < ev->u.retire.drops.n; i++) {
			const struct ms_event_drop *x =
				&ev->u.retire.drops.list[i];
			raw64(b, x->off);                    /* 20 + 41i */
			raw8(b, x->type);                    /* 28 + 41i */
			rawbytes(b, x->key, sizeof(x->key)); /* 29 + 41i */
		}
		break;
	case MS_REC_PURGE:
		raw64(b, ev->u.purge.before);
		break;
	case MS_REC_CHECKPOINT:
		raw64(b, ev->u.checkpoint.applied_seq);
		raw64(b, ev->u.checkpoint.index_generation);
		raw64(b, ev->u.checkpoint.time);
		break;
	case MS_REC_NOOP:
		rawbytes(b, ev->u.noop.data, ev->u.noop.len);
		break;
	default:
		fail_msg("raw_encode: type %u", ev->type);
	}
}

/* ---- comparing events (lists through the accessors) ---- */

static const char *str_diff(const char *field, struct ms_event_str a,
			    struct ms_event_str b)
{
	if (a.len != b.len || memcmp(a.s, b.s, a.len) != 0)
		return field;
	return NULL;
}

#define SAME(f)                       \
	do {                          \
		if (a->u.f != b->u.f) \
			return #f;    \
	} while (0)

static const char *lists_diff(const struct ms_event *a,
			      const struct ms_event *b)
{
	struct ms_event_kw_iter ia, ib;
	const char *ka, *kb;
	size_t la, lb;
	int ra, rb;
	uint32_t i = 0;

	ms_event_kw_iter_init(&ia, a);
	ms_event_kw_iter_init(&ib, b);
	do {
		ra = ms_event_kw_next(&ia, &ka, &la);
		rb = ms_event_kw_next(&ib, &kb, &lb);
		if (ra != rb)
			return "keyword count";
		if (ra == 1 && (la != lb || memcmp(ka, kb, la) != 0))
			return "keyword";
	} while (ra == 1);
	if (ra < 0)
		return "keyword iterator failed";
	for (i = 0;; i++) {
		uint32_t loa = 0, hia = 0, lob = 0, hib = 0;
		ra = ms_event_range(a, i, &loa, &hia);
		rb = ms_event_range(b, i, &lob, &hib);
		if (ra != rb)
			return "range count";
		if (ra < 0)
			break;
		if (loa != lob || hia != hib)
			return "range";
	}
	for (i = 0;; i++) {
		struct ms_event_drop da, db;
		memset(&da, 0, sizeof(da));
		memset(&db, 0, sizeof(db));
		ra = ms_event_drop(a, i, &da);
		rb = ms_event_drop(b, i, &db);
		if (ra != rb)
			return "dropped record count";
		if (ra < 0)
			break;
		if (da.off != db.off)
			return "dropped record offset";
		if (da.type != db.type)
			return "dropped record type";
		if (memcmp(da.key, db.key, sizeof(da.key)) != 0)
			return "dropped record key";
	}
	return NULL;
}

/* NULL if a and b hold the same event, else the first field that differs */
static const char *ev_diff(const struct ms_event *a, const struct ms_event *b)
{
	if (a->type != b->type)
		return "type";
	switch (a->type) {
	case MS_REC_USER_CREATE:
		SAME(user_create.user_id);
		return str_diff("name", a->u.user_create.name,
				b->u.user_create.name);
	case MS_REC_USER_DELETE:
		SAME(user_delete.user_id);
		return NULL;
	case MS_REC_MBOX_CREATE:
		SAME(mbox_create.user_id);
		SAME(mbox_create.mbox_id);
		SAME(mbox_create.uidvalidity);
		SAME(mbox_create.special_use);
		return str_diff("name", a->u.mbox_create.name,
				b->u.mbox_create.name);
	case MS_REC_MBOX_RENAME:
		SAME(mbox_rename.user_id);
		SAME(mbox_rename.mbox_id);
		return str_diff("new_name", a->u.mbox_rename.new_name,
				b->u.mbox_rename.new_name);
	case MS_REC_MBOX_DELETE:
		SAME(mbox_delete.user_id);
		SAME(mbox_delete.mbox_id);
		return NULL;
	case MS_REC_MBOX_SUBSCRIBE:
		SAME(mbox_subscribe.user_id);
		SAME(mbox_subscribe.subscribed);
		return str_diff("name", a->u.mbox_subscribe.name,
				b->u.mbox_subscribe.name);
	case MS_REC_MBOX_UPDATE:
		SAME(mbox_update.user_id);
		SAME(mbox_update.mbox_id);
		SAME(mbox_update.uidvalidity);
		SAME(mbox_update.uidnext);
		SAME(mbox_update.highestmodseq);
		if (memcmp(a->u.mbox_update.guid, b->u.mbox_update.guid, 16) !=
		    0)
			return "guid";
		return NULL;
	case MS_REC_PLACE:
		SAME(place.user_id);
		SAME(place.mbox_id);
		SAME(place.uid);
		SAME(place.modseq);
		SAME(place.flags);
		SAME(place.received_date);
		SAME(place.save_date);
		SAME(place.body_seq);
		SAME(place.physical_size);
		SAME(place.virtual_size);
		SAME(place.restore_uid);
		SAME(place.keywords.n);
		if (memcmp(a->u.place.guid, b->u.place.guid, 16) != 0)
			return "guid";
		if (memcmp(a->u.place.body_key, b->u.place.body_key, 32) != 0)
			return "body_key";
		return lists_diff(a, b);
	case MS_REC_FLAGS:
		SAME(flags.user_id);
		SAME(flags.mbox_id);
		SAME(flags.modseq);
		SAME(flags.mode);
		SAME(flags.flags);
		SAME(flags.keywords.n);
		SAME(flags.ranges.n);
		return lists_diff(a, b);
	case MS_REC_EXPUNGE:
		SAME(expunge.user_id);
		SAME(expunge.mbox_id);
		SAME(expunge.modseq);
		SAME(expunge.time);
		SAME(expunge.ranges.n);
		return lists_diff(a, b);
	case MS_REC_QUOTA:
		SAME(quota.user_id);
		SAME(quota.max_bytes);
		SAME(quota.max_messages);
		return NULL;
	case MS_REC_TIMELINE:
		SAME(timeline.new_timeline);
		SAME(timeline.fork_seq);
		if (memcmp(a->u.timeline.store_id, b->u.timeline.store_id,
			   16) != 0)
			return "store_id";
		return NULL;
	case MS_REC_RETIRE:
		SAME(retire.seg);
		SAME(retire.sum);
		SAME(retire.drops.n);
		return lists_diff(a, b);
	case MS_REC_PURGE:
		SAME(purge.before);
		return NULL;
	case MS_REC_CHECKPOINT:
		SAME(checkpoint.applied_seq);
		SAME(checkpoint.index_generation);
		SAME(checkpoint.time);
		return NULL;
	case MS_REC_NOOP:
		SAME(noop.len);
		if (a->u.noop.len > 0 &&
		    memcmp(a->u.noop.data, b->u.noop.data, a->u.noop.len) != 0)
			return "noop data";
		return NULL;
	default:
		return "unknown type";
	}
}

/*
 * ---- heap use, to show that decoding allocates nothing ----
 * Exact under ASan (make asan).  In a plain build mallinfo2() catches big
 * allocations only: glibc counts small chunks in its per-thread cache as
 * in use already, so taking one changes nothing.
 */

size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static size_t heap_in_use(void)
{
	if (__sanitizer_get_current_allocated_bytes != NULL)
		return __sanitizer_get_current_allocated_bytes();
	return mallinfo2().uordblks;
}

/* ---- golden bytes ---- */

static void test_golden(void **state)
{
	static const uint8_t user_create[] = {8, 7, 6, 5, 4,   3,
					      2, 1, 2, 0, 'a', 'b'};
	static const uint8_t subscribe[] = {9, 0, 0, 0, 0, 0,
					    0, 0, 1, 1, 0, 'X'};
	/* the golden bytes laid out one field a line */
	/* clang-format off */
	static const uint8_t expunge[] = {
		1,    0,    0,    0,    0, 0, 0, 0, /* user_id */
		2,    0,    0,    0,    0, 0, 0, 0, /* mbox_id */
		3,    0,    0,    0,    0, 0, 0, 0, /* modseq */
		0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0, /* time 1700000000 */
		1,    0,    0,    0,                /* nranges */
		4,    0,    0,    0,    5, 0, 0, 0, /* 4:5 */
	};
	static const uint8_t retire[] = {
		2,    0,    0,    0,    0,    0,    0,    0,    /* seg */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* sum */
		2,    0,    0,    0,                            /* ndrops */
		/* 0: offset 64, PLACE, no key */
		64, 0, 0, 0, 0, 0, 0, 0, 2,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		/* 1: offset 0x10000, BODY, key 0xee... */
		0, 0, 1, 0, 0, 0, 0, 0, 1,
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
	};
	static const uint8_t purge[] = {0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0};
	static const uint8_t mbox_update[] = {
		7,    0,    0,    0,    0, 0, 0, 0, /* user_id */
		42,   0,    0,    0,    0, 0, 0, 0, /* mbox_id */
		0x08, 0xa9, 0x0a, 0x6b,             /* uidvalidity 1795860744 */
		0,    0,    0,    0,                /* uidnext: unchanged */
		99,   0,    0,    0,    0, 0, 0, 0, /* highestmodseq */
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	};
	static const struct ms_event_range r45[] = {{4, 5}};
	static const struct ms_event_drop d2[] = {
		{64, MS_REC_PLACE, {0}},
		{0x10000, MS_REC_BODY,
		 {0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		  0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		  0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
		  0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee}},
	};
	/* clang-format on */
	const struct {
		struct ms_event ev;
		const uint8_t *bytes;
		size_t len;
	} cases[] = {
		{{.type = MS_REC_USER_CREATE,
		  .u.user_create = {0x0102030405060708, S("ab")}},
		 user_create,
		 sizeof(user_create)},
		{{.type = MS_REC_MBOX_SUBSCRIBE,
		  .u.mbox_subscribe = {9, 1, S("X")}},
		 subscribe,
		 sizeof(subscribe)},
		{{.type = MS_REC_EXPUNGE,
		  .u.expunge = {1, 2, 3, 1700000000, {1, r45, NULL}}},
		 expunge,
		 sizeof(expunge)},
		{{.type = MS_REC_RETIRE,
		  .u.retire = {2, 0x0807060504030201, {2, d2, NULL}}},
		 retire,
		 sizeof(retire)},
		{{.type = MS_REC_PURGE, .u.purge = {1700000000}},
		 purge,
		 sizeof(purge)},
		{{.type = MS_REC_MBOX_UPDATE,
		  .u.mbox_update = {7, 42, 1795860744, 0, 99,
				    {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
				     13, 14, 15, 16}}},
		 mbox_update,
		 sizeof(mbox_update)},
	};
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
		struct ms_buf b;
		struct ms_event ev;
		const char *error = NULL;

		ms_buf_init(&b, 0);
		assert_int_equal(ms_event_encode(&cases[i].ev, &b), 0);
		if (b.len != cases[i].len ||
		    memcmp(b.data, cases[i].bytes, b.len) != 0)
			fail_msg("golden case %zu: bytes differ", i);
		if (ms_event_decode(cases[i].ev.type, cases[i].bytes,
				    cases[i].len, &ev, &error) != 0)
			fail_msg("golden case %zu: %s", i, error);
		assert_null(ev_diff(&cases[i].ev, &ev));
		ms_buf_free(&b);
	}

	/* PLACE: restore_uid at 120, after virtual_size; keywords at 124 */
	{
		struct ms_event ev, dec;
		struct ms_buf b;
		const char *error = NULL;

		base_event(MS_REC_PLACE, &ev);
		ev.u.place.restore_uid = 0x01020304;
		ms_buf_init(&b, 0);
		assert_int_equal(ms_event_encode(&ev, &b), 0);
		assert_int_equal(b.len, 124 + 2 + 2 + 10 + 2 + 4);
		assert_int_equal(ms_get64(b.data + 112), 2100);
		assert_int_equal(ms_get32(b.data + 120), 0x01020304);
		assert_int_equal(ms_get16(b.data + 124), 2);
		assert_int_equal(ms_event_decode(MS_REC_PLACE, b.data, b.len,
						 &dec, &error),
				 0);
		assert_int_equal(dec.u.place.restore_uid, 0x01020304);
		ms_buf_free(&b);
	}
}

/* ---- round trips ---- */

static void rt_user_max(struct ms_event *ev)
{
	ev->u.user_create.name = make_name("u", MS_EVENT_USER_NAME_MAX);
}

static void rt_user_cjk_max(struct ms_event *ev)
{
	/* 85 × 3 bytes = 255 */
	ev->u.user_create.name = make_name("日", MS_EVENT_USER_NAME_MAX);
}

static void rt_user_edge(struct ms_event *ev)
{
	ev->u.user_create.user_id = UINT64_MAX;
	ev->u.user_create.name = S("x");
}

static void rt_user_delete_zero(struct ms_event *ev)
{
	ev->u.user_delete.user_id = 0;
}

static void rt_mbox_cjk(struct ms_event *ev)
{
	ev->u.mbox_create.name = S("日本語");
	ev->u.mbox_create.special_use = MS_EVENT_SU_MASK;
	ev->u.mbox_create.uidvalidity = UINT32_MAX;
}

static void rt_mbox_max(struct ms_event *ev)
{
	ev->u.mbox_create.name = make_name("a/", MS_EVENT_MBOX_NAME_MAX);
}

static void rt_mbox_4byte(struct ms_event *ev)
{
	/* U+1F4E5, U+10FFFF, U+0080, U+07FF, U+E000, U+FFFD, tab */
	ev->u.mbox_create.name = S("In\xf0\x9f\x93\xa5 \xf4\x8f\xbf\xbf"
				   "\xc2\x80\xdf\xbf\xee\x80\x80\xef\xbf\xbd"
				   "\t");
	ev->u.mbox_create.uidvalidity = 1;
	ev->u.mbox_create.special_use = 0;
	ev->u.mbox_create.user_id = 0;
	ev->u.mbox_create.mbox_id = UINT64_MAX;
}

static void rt_rename_max(struct ms_event *ev)
{
	ev->u.mbox_rename.new_name = make_name("ü", MS_EVENT_MBOX_NAME_MAX);
}

static void rt_subscribe_off(struct ms_event *ev)
{
	ev->u.mbox_subscribe.subscribed = 0;
	ev->u.mbox_subscribe.name = S("Does/Not/Exist");
}

static void rt_subscribe_max(struct ms_event *ev)
{
	ev->u.mbox_subscribe.name = make_name("日本", 1020);
}

static void rt_place_kw0(struct ms_event *ev)
{
	ev->u.place.keywords = make_keywords(0);
}

static void rt_place_kw1000(struct ms_event *ev)
{
	ev->u.place.keywords = make_keywords(1000);
}

static void rt_place_kw65535(struct ms_event *ev)
{
	ev->u.place.keywords = make_keywords(UINT16_MAX);
}

static void rt_place_kw_max_len(struct ms_event *ev)
{
	static struct ms_event_str kw[2];
	kw[0] = make_name("k", MS_EVENT_KEYWORD_MAX);
	kw[1] = S("Entwurf-ü");
	ev->u.place.keywords = (struct ms_event_keywords){2, kw, NULL, 0};
}

static void rt_place_edge(struct ms_event *ev)
{
	struct ms_event_place *e = &ev->u.place;
	e->user_id = UINT64_MAX;
	e->mbox_id = 0;
	e->uid = UINT32_MAX;
	e->modseq = UINT64_MAX;
	e->flags = MS_EVENT_FLAG_MASK;
	e->received_date = INT64_MIN;
	e->save_date = INT64_MAX;
	memset(e->guid, 0xff, sizeof(e->guid));
	memset(e->body_key, 0, sizeof(e->body_key));
	e->body_seq = 0;
	e->physical_size = 0;
	e->virtual_size = 0;
	e->keywords = make_keywords(0);
}

static void rt_place_sizes(struct ms_event *ev)
{
	ev->u.place.flags = 0;
	ev->u.place.physical_size = UINT64_MAX;
	ev->u.place.virtual_size = UINT64_MAX;
	ev->u.place.received_date = -1;
}

static void rt_flags_remove(struct ms_event *ev)
{
	static const struct ms_event_range all[] = {{1, UINT32_MAX}};
	ev->u.flags.mode = MS_EVENT_MODE_REMOVE;
	ev->u.flags.flags = MS_EVENT_FLAG_DELETED | MS_EVENT_FLAG_DRAFT;
	ev->u.flags.keywords = make_keywords(0);
	ev->u.flags.ranges = (struct ms_event_ranges){1, all, NULL};
}

static void rt_flags_big(struct ms_event *ev)
{
	ev->u.flags.mode = MS_EVENT_MODE_REPLACE;
	ev->u.flags.flags = 0;
	ev->u.flags.modseq = UINT64_MAX;
	ev->u.flags.keywords = make_keywords(1000);
	ev->u.flags.ranges = make_ranges(RANGE_STORE, UINT32_MAX);
}

static void rt_flags_adjacent(struct ms_event *ev)
{
	static const struct ms_event_range adj[] = {{1, 1}, {2, 2}, {3, 10}};
	ev->u.flags.ranges = (struct ms_event_ranges){3, adj, NULL};
}

static void rt_expunge_big(struct ms_event *ev)
{
	ev->u.expunge.ranges = make_ranges(RANGE_STORE, 0);
}

static void rt_expunge_top(struct ms_event *ev)
{
	static const struct ms_event_range top[] = {{UINT32_MAX, UINT32_MAX}};
	ev->u.expunge.ranges = (struct ms_event_ranges){1, top, NULL};
}

static void rt_quota_unlimited(struct ms_event *ev)
{
	ev->u.quota.max_bytes = 0;
	ev->u.quota.max_messages = 0;
}

static void rt_timeline_edge(struct ms_event *ev)
{
	ev->u.timeline.new_timeline = UINT64_MAX;
	ev->u.timeline.fork_seq = 0;
	memset(ev->u.timeline.store_id, 0, 16);
}

static void rt_place_restore(struct ms_event *ev)
{
	ev->u.place.uid = 31;
	ev->u.place.restore_uid = 17;
}

static void rt_place_restore_max(struct ms_event *ev)
{
	ev->u.place.restore_uid = UINT32_MAX;
	ev->u.place.keywords = make_keywords(0);
}

static void rt_expunge_time_zero(struct ms_event *ev)
{
	ev->u.expunge.time = 0;
}

static void rt_expunge_time_max(struct ms_event *ev)
{
	ev->u.expunge.time = UINT64_MAX;
	ev->u.expunge.user_id = UINT64_MAX;
}

/* the first offset there can be, a BODY with an all-zero key */
static void rt_retire_one(struct ms_event *ev)
{
	static const struct ms_event_drop one[] = {
		{MS_EVENT_SEG_HDR_SIZE, MS_REC_BODY, {0}}};
	ev->u.retire.seg = 0;
	ev->u.retire.sum = 0;
	ev->u.retire.drops = (struct ms_event_drops){1, one, NULL};
}

static void rt_retire_one_noop_far(struct ms_event *ev)
{
	static const struct ms_event_drop one[] = {
		{UINT64_MAX, MS_REC_NOOP, {0}}};
	ev->u.retire.seg = UINT64_MAX;
	ev->u.retire.sum = UINT64_MAX;
	ev->u.retire.drops = (struct ms_event_drops){1, one, NULL};
}

/* DROP_STORE drops of the three types in turn, offsets 64 + 97i, the
   last one far out; BODY keys differ per item */
static void rt_retire_big(struct ms_event *ev)
{
	static const uint8_t types[] = {MS_REC_BODY, MS_REC_PLACE, MS_REC_NOOP};
	for (uint32_t i = 0; i < DROP_STORE; i++) {
		struct ms_event_drop *x = &drop_store[i];
		memset(x, 0, sizeof(*x));
		x->off = MS_EVENT_SEG_HDR_SIZE + (uint64_t)i * 97 +
			 (i == DROP_STORE - 1 ? UINT64_MAX / 2 : 0);
		x->type = types[i % 3];
		if (x->type == MS_REC_BODY)
			for (size_t k = 0; k < sizeof(x->key); k++)
				x->key[k] = (uint8_t)(i * 31 + k);
	}
	ev->u.retire.drops =
		(struct ms_event_drops){DROP_STORE, drop_store, NULL};
}

static void rt_purge_max(struct ms_event *ev)
{
	ev->u.purge.before = UINT64_MAX;
}

static void rt_purge_one(struct ms_event *ev)
{
	ev->u.purge.before = 1;
}

static void rt_checkpoint_zero(struct ms_event *ev)
{
	memset(&ev->u.checkpoint, 0, sizeof(ev->u.checkpoint));
}

static void rt_noop_empty(struct ms_event *ev)
{
	ev->u.noop.data = NULL;
	ev->u.noop.len = 0;
}

static void rt_noop_binary(struct ms_event *ev)
{
	for (size_t i = 0; i < sizeof(noop_bytes); i++)
		noop_bytes[i] = (uint8_t)(i * 131 + (i >> 8));
	ev->u.noop.data = noop_bytes;
	ev->u.noop.len = sizeof(noop_bytes);
}

static void rt_update_zero(struct ms_event *ev)
{
	struct ms_event_mbox_update *e = &ev->u.mbox_update;
	e->uidvalidity = 0;
	e->uidnext = 0;
	e->highestmodseq = 0;
	memset(e->guid, 0, sizeof(e->guid));
}

static void rt_update_max(struct ms_event *ev)
{
	struct ms_event_mbox_update *e = &ev->u.mbox_update;
	e->user_id = UINT64_MAX;
	e->mbox_id = UINT64_MAX;
	e->uidvalidity = UINT32_MAX;
	e->uidnext = UINT32_MAX;
	e->highestmodseq = UINT64_MAX;
	memset(e->guid, 0xff, sizeof(e->guid));
}

static const struct rt_case {
	const char *name;
	uint8_t type;
	void (*build)(struct ms_event *ev); /* on top of base_event() */
} rt_cases[] = {
	{"user-create typical", MS_REC_USER_CREATE, NULL},
	{"user-create name 255 bytes", MS_REC_USER_CREATE, rt_user_max},
	{"user-create name 85 x 日", MS_REC_USER_CREATE, rt_user_cjk_max},
	{"user-create id max, 1-byte name", MS_REC_USER_CREATE, rt_user_edge},
	{"user-delete typical", MS_REC_USER_DELETE, NULL},
	{"user-delete id 0", MS_REC_USER_DELETE, rt_user_delete_zero},
	{"mbox-create Entwürfe", MS_REC_MBOX_CREATE, NULL},
	{"mbox-create 日本語, all special-use", MS_REC_MBOX_CREATE,
	 rt_mbox_cjk},
	{"mbox-create name 1024 bytes", MS_REC_MBOX_CREATE, rt_mbox_max},
	{"mbox-create 4-byte UTF-8, U+10FFFF, tab", MS_REC_MBOX_CREATE,
	 rt_mbox_4byte},
	{"mbox-rename typical", MS_REC_MBOX_RENAME, NULL},
	{"mbox-rename 512 x ü", MS_REC_MBOX_RENAME, rt_rename_max},
	{"mbox-delete typical", MS_REC_MBOX_DELETE, NULL},
	{"mbox-subscribe INBOX", MS_REC_MBOX_SUBSCRIBE, NULL},
	{"mbox-subscribe off, missing mailbox", MS_REC_MBOX_SUBSCRIBE,
	 rt_subscribe_off},
	{"mbox-subscribe 1020 bytes of 日本", MS_REC_MBOX_SUBSCRIBE,
	 rt_subscribe_max},
	{"place typical", MS_REC_PLACE, NULL},
	{"place 0 keywords", MS_REC_PLACE, rt_place_kw0},
	{"place 1000 keywords", MS_REC_PLACE, rt_place_kw1000},
	{"place 65535 keywords", MS_REC_PLACE, rt_place_kw65535},
	{"place keyword 255 bytes", MS_REC_PLACE, rt_place_kw_max_len},
	{"place edge values", MS_REC_PLACE, rt_place_edge},
	{"place sizes max, date -1", MS_REC_PLACE, rt_place_sizes},
	{"place restores uid 17", MS_REC_PLACE, rt_place_restore},
	{"place restores uid max, 0 keywords", MS_REC_PLACE,
	 rt_place_restore_max},
	{"flags typical", MS_REC_FLAGS, NULL},
	{"flags remove, 0 keywords, 1:*", MS_REC_FLAGS, rt_flags_remove},
	{"flags replace, 1000 keywords, 10000 ranges", MS_REC_FLAGS,
	 rt_flags_big},
	{"flags adjacent ranges", MS_REC_FLAGS, rt_flags_adjacent},
	{"expunge typical", MS_REC_EXPUNGE, NULL},
	{"expunge 10000 ranges", MS_REC_EXPUNGE, rt_expunge_big},
	{"expunge uid max", MS_REC_EXPUNGE, rt_expunge_top},
	{"expunge time 0", MS_REC_EXPUNGE, rt_expunge_time_zero},
	{"expunge time max", MS_REC_EXPUNGE, rt_expunge_time_max},
	{"quota typical", MS_REC_QUOTA, NULL},
	{"quota unlimited", MS_REC_QUOTA, rt_quota_unlimited},
	{"timeline typical", MS_REC_TIMELINE, NULL},
	{"timeline edge", MS_REC_TIMELINE, rt_timeline_edge},
	{"retire typical", MS_REC_RETIRE, NULL},
	{"retire one BODY at 64, zero key", MS_REC_RETIRE, rt_retire_one},
	{"retire one NOOP at offset max", MS_REC_RETIRE,
	 rt_retire_one_noop_far},
	{"retire 10000 drops", MS_REC_RETIRE, rt_retire_big},
	{"purge typical", MS_REC_PURGE, NULL},
	{"purge before max", MS_REC_PURGE, rt_purge_max},
	{"purge before 1", MS_REC_PURGE, rt_purge_one},
	{"checkpoint typical", MS_REC_CHECKPOINT, NULL},
	{"checkpoint zeros", MS_REC_CHECKPOINT, rt_checkpoint_zero},
	{"mbox-update typical", MS_REC_MBOX_UPDATE, NULL},
	{"mbox-update nothing set", MS_REC_MBOX_UPDATE, rt_update_zero},
	{"mbox-update maxima", MS_REC_MBOX_UPDATE, rt_update_max},
	{"noop typical", MS_REC_NOOP, NULL},
	{"noop empty", MS_REC_NOOP, rt_noop_empty},
	{"noop 4096 binary bytes", MS_REC_NOOP, rt_noop_binary},
};

/* memcmp, but NULL is fine for 0 bytes */
static bool same_bytes(const uint8_t *a, size_t alen, const uint8_t *b,
		       size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void rt_build(size_t i, struct ms_event *ev)
{
	base_event(rt_cases[i].type, ev);
	if (rt_cases[i].build != NULL)
		rt_cases[i].build(ev);
}

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(rt_cases); i++) {
		const struct rt_case *c = &rt_cases[i];
		struct ms_event ev, dec;
		struct ms_buf enc, raw, again;
		const char *error = NULL, *diff;
		int ret;

		rt_build(i, &ev);
		ms_buf_init(&enc, 0);
		ms_buf_init(&raw, 0);
		ms_buf_init(&again, 0);
		/* something before: encode appends */
		assert_int_equal(ms_buf_append(&enc, "pre", 3), 0);
		if ((ret = ms_event_encode(&ev, &enc)) != 0)
			fail_msg("rt case %zu (%s): encode: %s", i, c->name,
				 ms_strerror(ret));
		assert_memory_equal(enc.data, "pre", 3);
		raw_encode(&ev, &raw);
		if (!same_bytes(enc.data + 3, enc.len - 3, raw.data, raw.len))
			fail_msg("rt case %zu (%s): %zu bytes, the format "
				 "says %zu (or other bytes)",
				 i, c->name, enc.len - 3, raw.len);
		ret = ms_event_decode(c->type, raw.data, raw.len, &dec, &error);
		if (ret != 0)
			fail_msg("rt case %zu (%s): decode: %s", i, c->name,
				 error);
		if ((diff = ev_diff(&ev, &dec)) != NULL)
			fail_msg("rt case %zu (%s): decoded %s differs", i,
				 c->name, diff);
		/* the decoded event has packed lists; encode them again */
		if ((ret = ms_event_encode(&dec, &again)) != 0)
			fail_msg("rt case %zu (%s): re-encode: %s", i, c->name,
				 ms_strerror(ret));
		if (!same_bytes(again.data, again.len, raw.data, raw.len))
			fail_msg("rt case %zu (%s): re-encoded bytes differ", i,
				 c->name);
		ms_buf_free(&enc);
		ms_buf_free(&raw);
		ms_buf_free(&again);
	}
}

/* ---- every payload cut short, or one byte too long ---- */

/*
 * Decode bytes expecting failure `expect`: the error text is set, *ev_r
 * is untouched and the heap is as it was.
 */
static void expect_fail(const char *what, size_t i, const char *name,
			uint8_t type, const uint8_t *p, size_t len, int expect)
{
	struct ms_event ev, pattern;
	const char *error = NULL;
	size_t heap;
	int ret;

	memset(&pattern, 0xa5, sizeof(pattern));
	ev = pattern;
	heap = heap_in_use();
	ret = ms_event_decode(type, p, len, &ev, &error);
	if (heap_in_use() != heap)
		fail_msg("%s case %zu (%s): decode allocated memory", what, i,
			 name);
	if (ret != expect)
		fail_msg("%s case %zu (%s), len %zu: got %s (%s), want %s",
			 what, i, name, len, ms_strerror(ret),
			 ret == 0 ? "-" : error, ms_strerror(expect));
	if (error == NULL || error[0] == '\0')
		fail_msg("%s case %zu (%s): no error text", what, i, name);
	if (memcmp(&ev, &pattern, sizeof(ev)) != 0)
		fail_msg("%s case %zu (%s): output touched on failure", what, i,
			 name);
}

static void test_truncated(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(rt_cases); i++) {
		struct ms_event ev;
		struct ms_buf b;
		size_t step;

		if (rt_cases[i].type == MS_REC_NOOP)
			continue; /* any bytes are a NOOP */
		rt_build(i, &ev);
		ms_buf_init(&b, 0);
		raw_encode(&ev, &b);
		/* every length for the small ones, a sample of the rest */
		step = b.len <= 16384 ? 1 : b.len / 512;
		for (size_t cut = 0; cut < b.len; cut++) {
			if (cut % step != 0 && b.len - cut > 64)
				continue;
			/* a copy of exactly cut bytes, so ASan sees overreads
			 */
			uint8_t *p = ms_malloc(cut);
			memcpy(p, b.data, cut);
			expect_fail("truncated", i, rt_cases[i].name,
				    rt_cases[i].type, p, cut, MS_ETRUNC);
			free(p);
		}
		ms_buf_free(&b);
	}
}

static void test_extra_byte(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(rt_cases); i++) {
		struct ms_event ev;
		struct ms_buf b;

		if (rt_cases[i].type == MS_REC_NOOP)
			continue;
		rt_build(i, &ev);
		ms_buf_init(&b, 0);
		raw_encode(&ev, &b);
		raw8(&b, 0);
		expect_fail("extra byte", i, rt_cases[i].name, rt_cases[i].type,
			    b.data, b.len, MS_ECORRUPT);
		b.data[b.len - 1] = 0xff;
		expect_fail("extra byte", i, rt_cases[i].name, rt_cases[i].type,
			    b.data, b.len, MS_ECORRUPT);
		ms_buf_free(&b);
	}
}

/* ---- the bad table ---- */

enum edit {
	ED_NONE,
	ED_INT,    /* integer field of size bytes := val */
	ED_STR,    /* name field := str/len (str NULL: len × 'a') */
	ED_KW,     /* keywords field := one keyword str/len */
	ED_RANGES, /* ranges field := ranges[0..n-1] */
	ED_DROPS,  /* drops field := drops[0..n-1] */
};

enum mut {
	MUT_NONE,
	MUT_PUT16, /* the raw payload's u16 at `at` := mval */
	MUT_PUT32,
	MUT_TYPE, /* decode as type mval */
};

struct bad_case {
	const char *name;
	uint8_t type; /* base_event() of this type */
	enum edit edit;
	size_t field; /* offsetof(struct ms_event, ...) */
	size_t size;
	uint64_t val;
	const char *str;
	size_t len;
	const struct ms_event_range *ranges;
	const struct ms_event_drop *drops;
	uint32_t n;
	enum mut mut;
	size_t at;
	uint64_t mval;
	int expect; /* from the decoder; the encoder says -EINVAL to edits */
};

#define F(f) offsetof(struct ms_event, u.f)
#define INT(t, f, v)                                                       \
	.type = t, .edit = ED_INT, .field = F(f),                          \
	.size = sizeof(((struct ms_event *)0)->u.f), .val = (uint64_t)(v), \
	.expect = MS_ECORRUPT
#define STR(t, f, lit)                                        \
	.type = t, .edit = ED_STR, .field = F(f), .str = lit, \
	.len = sizeof(lit) - 1, .expect = MS_ECORRUPT
#define LONG(t, f, l)                                                    \
	.type = t, .edit = ED_STR, .field = F(f), .str = NULL, .len = l, \
	.expect = MS_ECORRUPT
#define KW(t, f, lit)                                        \
	.type = t, .edit = ED_KW, .field = F(f), .str = lit, \
	.len = sizeof(lit) - 1, .expect = MS_ECORRUPT
#define LONGKW(t, f, l)                                                 \
	.type = t, .edit = ED_KW, .field = F(f), .str = NULL, .len = l, \
	.expect = MS_ECORRUPT
#define RANGES(t, f, ...)                                           \
	.type = t, .edit = ED_RANGES, .field = F(f),                \
	.ranges = (const struct ms_event_range[]){__VA_ARGS__},     \
	.n = sizeof((const struct ms_event_range[]){__VA_ARGS__}) / \
	     sizeof(struct ms_event_range),                         \
	.expect = MS_ECORRUPT
#define DROPS(...)                                                         \
	.type = MS_REC_RETIRE, .edit = ED_DROPS, .field = F(retire.drops), \
	.drops = (const struct ms_event_drop[]){__VA_ARGS__},              \
	.n = sizeof((const struct ms_event_drop[]){__VA_ARGS__}) /         \
	     sizeof(struct ms_event_drop),                                 \
	.expect = MS_ECORRUPT
/* the base event of type t, decoded as type `as` */
#define TYPE(t, as) \
	.type = t, .mut = MUT_TYPE, .mval = as, .expect = MS_ECORRUPT
#define PUT(t, bits, off, v, e) \
	.type = t, .mut = MUT_PUT##bits, .at = off, .mval = v, .expect = e

/* offsets in the base events' payloads */
#define PLACE_NKW 124
#define FLAGS_NKW 29
#define FLAGS_NRANGES 38 /* after "$Junk" */
#define EXPUNGE_NRANGES 32
#define RETIRE_NDROPS 16
#define RETIRE_DROP(i) (20 + 41 * (i)) /* offset of item i */

static const struct bad_case bad_cases[] = {
	/* user names */
	{"user name empty", STR(MS_REC_USER_CREATE, user_create.name, "")},
	{"user name 256 bytes",
	 LONG(MS_REC_USER_CREATE, user_create.name, 256)},
	{"user name NUL", STR(MS_REC_USER_CREATE, user_create.name, "a\0b")},
	{"user name NUL only", STR(MS_REC_USER_CREATE, user_create.name, "\0")},
	{"user name CR", STR(MS_REC_USER_CREATE, user_create.name, "a\rb")},
	{"user name LF", STR(MS_REC_USER_CREATE, user_create.name, "ab\n")},
	{"user name overlong 2-byte '/'",
	 STR(MS_REC_USER_CREATE, user_create.name, "a\xc0\xaf")},
	{"user name overlong C1",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xc1\xbf")},
	{"user name overlong 3-byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xe0\x80\xaf")},
	{"user name overlong 3-byte U+07FF",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xe0\x9f\xbf")},
	{"user name overlong 4-byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xf0\x80\x80\xaf")},
	{"user name overlong 4-byte U+FFFF",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xf0\x8f\xbf\xbf")},
	{"user name high surrogate",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xed\xa0\x80")},
	{"user name low surrogate",
	 STR(MS_REC_USER_CREATE, user_create.name, "x\xed\xbf\xbf")},
	{"user name surrogate pair in CESU-8",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xed\xa0\xbd\xed\xb2\xa9")},
	{"user name lone continuation byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "ab\x80")},
	{"user name lone continuation byte first",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xbf")},
	{"user name sequence cut at the end",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xe6\x97")},
	{"user name sequence cut by ASCII",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xe6\x97z")},
	{"user name above U+10FFFF",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xf4\x90\x80\x80")},
	{"user name F5 byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xf5\x80\x80\x80")},
	{"user name FF byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "\xff")},
	{"user name FE byte",
	 STR(MS_REC_USER_CREATE, user_create.name, "a\xfe")},
	/* mailbox names */
	{"mbox-create name empty",
	 STR(MS_REC_MBOX_CREATE, mbox_create.name, "")},
	{"mbox-create name 1025 bytes",
	 LONG(MS_REC_MBOX_CREATE, mbox_create.name, 1025)},
	{"mbox-create name lone continuation",
	 STR(MS_REC_MBOX_CREATE, mbox_create.name, "Entw\xbcrfe")},
	{"mbox-create name Latin-1",
	 STR(MS_REC_MBOX_CREATE, mbox_create.name, "Entw\xfcrfe")},
	{"mbox-create name LF",
	 STR(MS_REC_MBOX_CREATE, mbox_create.name, "a\nb")},
	{"mbox-create name NUL",
	 STR(MS_REC_MBOX_CREATE, mbox_create.name, "INBOX\0")},
	{"mbox-rename name empty",
	 STR(MS_REC_MBOX_RENAME, mbox_rename.new_name, "")},
	{"mbox-rename name 1025 bytes",
	 LONG(MS_REC_MBOX_RENAME, mbox_rename.new_name, 1025)},
	{"mbox-rename name overlong",
	 STR(MS_REC_MBOX_RENAME, mbox_rename.new_name, "a\xc0\x80")},
	{"mbox-rename name CR",
	 STR(MS_REC_MBOX_RENAME, mbox_rename.new_name, "\r")},
	{"mbox-rename name NUL",
	 STR(MS_REC_MBOX_RENAME, mbox_rename.new_name, "a\0")},
	{"mbox-subscribe name empty",
	 STR(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.name, "")},
	{"mbox-subscribe name 1025 bytes",
	 LONG(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.name, 1025)},
	{"mbox-subscribe name surrogate",
	 STR(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.name, "\xed\xb0\x80")},
	{"mbox-subscribe name NUL",
	 STR(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.name, "\0INBOX")},
	{"mbox-subscribe name CRLF",
	 STR(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.name, "INBOX\r\n")},
	/* keywords */
	{"place keyword empty", KW(MS_REC_PLACE, place.keywords, "")},
	{"place keyword 256 bytes", LONGKW(MS_REC_PLACE, place.keywords, 256)},
	{"place keyword bad UTF-8",
	 KW(MS_REC_PLACE, place.keywords, "$\xe0\x80\x80")},
	{"place keyword LF", KW(MS_REC_PLACE, place.keywords, "$a\n")},
	{"place keyword NUL", KW(MS_REC_PLACE, place.keywords, "$a\0")},
	{"flags keyword empty", KW(MS_REC_FLAGS, flags.keywords, "")},
	{"flags keyword CR", KW(MS_REC_FLAGS, flags.keywords, "\r")},
	{"flags keyword 256 bytes", LONGKW(MS_REC_FLAGS, flags.keywords, 256)},
	{"flags keyword lone continuation",
	 KW(MS_REC_FLAGS, flags.keywords, "\x80")},
	/* numbers */
	{"place uid 0", INT(MS_REC_PLACE, place.uid, 0)},
	{"place modseq 0", INT(MS_REC_PLACE, place.modseq, 0)},
	{"place flag bit 5 (\\Recent is not stored)",
	 INT(MS_REC_PLACE, place.flags, 0x20)},
	{"place flag bit 31", INT(MS_REC_PLACE, place.flags, 0x80000001)},
	{"place virtual size below physical",
	 INT(MS_REC_PLACE, place.virtual_size, 2047)},
	{"flags modseq 0", INT(MS_REC_FLAGS, flags.modseq, 0)},
	{"flags unknown flag bit", INT(MS_REC_FLAGS, flags.flags, 0x40)},
	{"flags mode 3", INT(MS_REC_FLAGS, flags.mode, 3)},
	{"flags mode 255", INT(MS_REC_FLAGS, flags.mode, 255)},
	{"expunge modseq 0", INT(MS_REC_EXPUNGE, expunge.modseq, 0)},
	{"purge before 0", INT(MS_REC_PURGE, purge.before, 0)},
	{"mbox-create uidvalidity 0",
	 INT(MS_REC_MBOX_CREATE, mbox_create.uidvalidity, 0)},
	{"mbox-create special-use bit 7",
	 INT(MS_REC_MBOX_CREATE, mbox_create.special_use, 0x80)},
	{"mbox-create special-use all bits",
	 INT(MS_REC_MBOX_CREATE, mbox_create.special_use, 0xffffffff)},
	{"mbox-subscribe subscribed 2",
	 INT(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.subscribed, 2)},
	{"mbox-subscribe subscribed 255",
	 INT(MS_REC_MBOX_SUBSCRIBE, mbox_subscribe.subscribed, 255)},
	{"timeline 0", INT(MS_REC_TIMELINE, timeline.new_timeline, 0)},
	/* uid ranges */
	{"flags ranges unsorted",
	 RANGES(MS_REC_FLAGS, flags.ranges, {5, 6}, {1, 2})},
	{"flags ranges overlap at one uid",
	 RANGES(MS_REC_FLAGS, flags.ranges, {1, 5}, {5, 9})},
	{"flags range inside the previous",
	 RANGES(MS_REC_FLAGS, flags.ranges, {1, 9}, {3, 4})},
	{"flags range repeated",
	 RANGES(MS_REC_FLAGS, flags.ranges, {3, 3}, {3, 3})},
	{"flags range lo > hi", RANGES(MS_REC_FLAGS, flags.ranges, {5, 4})},
	{"flags range lo 0", RANGES(MS_REC_FLAGS, flags.ranges, {0, 3})},
	{"flags range 0:0", RANGES(MS_REC_FLAGS, flags.ranges, {0, 0})},
	{"flags range bad after good ones",
	 RANGES(MS_REC_FLAGS, flags.ranges, {1, 1}, {3, 4}, {9, 8})},
	{"flags no ranges", .type = MS_REC_FLAGS, .edit = ED_RANGES,
	 .field = F(flags.ranges), .n = 0, .expect = MS_ECORRUPT},
	{"expunge ranges unsorted",
	 RANGES(MS_REC_EXPUNGE, expunge.ranges, {10, 20}, {1, 9})},
	{"expunge ranges overlap",
	 RANGES(MS_REC_EXPUNGE, expunge.ranges, {1, 10}, {10, 20})},
	{"expunge range lo > hi",
	 RANGES(MS_REC_EXPUNGE, expunge.ranges, {UINT32_MAX, 1})},
	{"expunge range lo 0",
	 RANGES(MS_REC_EXPUNGE, expunge.ranges, {0, UINT32_MAX})},
	{"expunge range after uid max",
	 RANGES(MS_REC_EXPUNGE, expunge.ranges, {1, UINT32_MAX},
		{UINT32_MAX, UINT32_MAX})},
	{"expunge no ranges", .type = MS_REC_EXPUNGE, .edit = ED_RANGES,
	 .field = F(expunge.ranges), .n = 0, .expect = MS_ECORRUPT},
	/* dropped records */
	{"retire offsets unsorted",
	 DROPS({200, MS_REC_NOOP, {0}}, {100, MS_REC_NOOP, {0}})},
	{"retire offset repeated",
	 DROPS({100, MS_REC_NOOP, {0}}, {100, MS_REC_PLACE, {0}})},
	{"retire repeat at the end",
	 DROPS({64, MS_REC_NOOP, {0}}, {99, MS_REC_NOOP, {0}},
	       {99, MS_REC_NOOP, {0}})},
	{"retire offset max then 64",
	 DROPS({UINT64_MAX, MS_REC_NOOP, {0}}, {64, MS_REC_NOOP, {0}})},
	{"retire offset 63 (inside the segment header)",
	 DROPS({63, MS_REC_NOOP, {0}})},
	{"retire offset 0", DROPS({0, MS_REC_BODY, {1}})},
	{"retire offset 63 before good ones",
	 DROPS({63, MS_REC_PLACE, {0}}, {64, MS_REC_PLACE, {0}})},
	{"retire type 0", DROPS({64, 0, {0}})},
	{"retire type FLAGS", DROPS({64, MS_REC_FLAGS, {0}})},
	{"retire type EXPUNGE", DROPS({64, MS_REC_EXPUNGE, {0}})},
	{"retire type RETIRE", DROPS({64, MS_REC_RETIRE, {0}})},
	{"retire type SEAL", DROPS({64, MS_REC_SEAL, {0}})},
	{"retire type PURGE", DROPS({64, MS_REC_PURGE, {0}})},
	{"retire type HOLE", DROPS({64, MS_REC_HOLE, {0}})},
	{"retire type 255", DROPS({64, 255, {0}})},
	{"retire bad type after good ones",
	 DROPS({64, MS_REC_BODY, {1}}, {128, MS_REC_PLACE, {0}},
	       {256, MS_REC_CHECKPOINT, {0}})},
	{"retire key on a PLACE drop (first byte)",
	 DROPS({64, MS_REC_PLACE, {1}})},
	{"retire key on a PLACE drop (last byte)",
	 DROPS({64, MS_REC_BODY, {1}}, {200, MS_REC_PLACE, {[31] = 0x80}})},
	{"retire key on a NOOP drop", DROPS({64, MS_REC_NOOP, {[7] = 1}})},
	{"retire no drops", .type = MS_REC_RETIRE, .edit = ED_DROPS,
	 .field = F(retire.drops), .n = 0, .expect = MS_ECORRUPT},
	/* the same rules on the bytes of the base RETIRE */
	{"retire bytes: offset 63",
	 PUT(MS_REC_RETIRE, 32, RETIRE_DROP(0), 63, MS_ECORRUPT)},
	{"retire bytes: second offset below the first",
	 PUT(MS_REC_RETIRE, 32, RETIRE_DROP(1), 63, MS_ECORRUPT)},
	{"retire bytes: type SEAL",
	 PUT(MS_REC_RETIRE, 16, RETIRE_DROP(0) + 8, MS_REC_SEAL, MS_ECORRUPT)},
	{"retire bytes: key on the PLACE",
	 PUT(MS_REC_RETIRE, 32, RETIRE_DROP(1) + 9 + 28, 1, MS_ECORRUPT)},
	{"retire bytes: key on the NOOP",
	 PUT(MS_REC_RETIRE, 16, RETIRE_DROP(2) + 9, 0x100, MS_ECORRUPT)},
	/* counts against the bytes left: must fail before any use */
	{"flags nranges 2^32-1",
	 PUT(MS_REC_FLAGS, 32, FLAGS_NRANGES, UINT32_MAX, MS_ETRUNC)},
	{"flags nranges one too many",
	 PUT(MS_REC_FLAGS, 32, FLAGS_NRANGES, 4, MS_ETRUNC)},
	{"flags nranges one too few (leftover)",
	 PUT(MS_REC_FLAGS, 32, FLAGS_NRANGES, 2, MS_ECORRUPT)},
	{"expunge nranges 2^29",
	 PUT(MS_REC_EXPUNGE, 32, EXPUNGE_NRANGES, 1u << 29, MS_ETRUNC)},
	{"expunge nranges 2^32-1",
	 PUT(MS_REC_EXPUNGE, 32, EXPUNGE_NRANGES, UINT32_MAX, MS_ETRUNC)},
	{"retire ndrops 2^32-1",
	 PUT(MS_REC_RETIRE, 32, RETIRE_NDROPS, UINT32_MAX, MS_ETRUNC)},
	{"retire ndrops one too many",
	 PUT(MS_REC_RETIRE, 32, RETIRE_NDROPS, 4, MS_ETRUNC)},
	{"retire ndrops one too few (leftover)",
	 PUT(MS_REC_RETIRE, 32, RETIRE_NDROPS, 2, MS_ECORRUPT)},
	{"retire ndrops 0",
	 PUT(MS_REC_RETIRE, 32, RETIRE_NDROPS, 0, MS_ECORRUPT)},
	{"place nkeywords 65535",
	 PUT(MS_REC_PLACE, 16, PLACE_NKW, UINT16_MAX, MS_ETRUNC)},
	{"place nkeywords one too many",
	 PUT(MS_REC_PLACE, 16, PLACE_NKW, 3, MS_ETRUNC)},
	{"place nkeywords one too few (leftover)",
	 PUT(MS_REC_PLACE, 16, PLACE_NKW, 1, MS_ECORRUPT)},
	{"flags nkeywords 65535",
	 PUT(MS_REC_FLAGS, 16, FLAGS_NKW, UINT16_MAX, MS_ETRUNC)},
	{"user name length past the end",
	 PUT(MS_REC_USER_CREATE, 16, 8, UINT16_MAX, MS_ETRUNC)},
	{"user name length one past the end",
	 PUT(MS_REC_USER_CREATE, 16, 8, 19, MS_ETRUNC)},
	{"user name length short (leftover)",
	 PUT(MS_REC_USER_CREATE, 16, 8, 17, MS_ECORRUPT)},
	{"mbox-create name length 0",
	 PUT(MS_REC_MBOX_CREATE, 16, 24, 0, MS_ECORRUPT)},
	{"place keyword length past the end",
	 PUT(MS_REC_PLACE, 16, PLACE_NKW + 2, 200, MS_ETRUNC)},
	/* not event types */
	{"BODY", TYPE(MS_REC_PLACE, MS_REC_BODY)},
	{"SEAL", TYPE(MS_REC_CHECKPOINT, MS_REC_SEAL)},
	{"HOLE", TYPE(MS_REC_NOOP, MS_REC_HOLE)},
	{"HOLE, PURGE's bytes", TYPE(MS_REC_PURGE, MS_REC_HOLE)},
	{"type 0", TYPE(MS_REC_NOOP, 0)},
	{"type 20", TYPE(MS_REC_NOOP, MS_REC_TYPE_MAX + 1)},
	{"PURGE, mbox-update's bytes",
	 TYPE(MS_REC_MBOX_UPDATE, MS_REC_PURGE)},
	{"type 255", TYPE(MS_REC_USER_DELETE, 255)},
};

static void bad_edit(const struct bad_case *c, struct ms_event *ev)
{
	static struct ms_event_str kw;
	uint8_t *f = (uint8_t *)ev + c->field;
	struct ms_event_str s = {c->str, c->len};

	if (c->edit == ED_STR || c->edit == ED_KW) {
		if (c->str == NULL)
			s = make_name("a", c->len);
	}
	switch (c->edit) {
	case ED_NONE:
		break;
	case ED_INT:
		if (c->size == 1) {
			uint8_t v = (uint8_t)c->val;
			memcpy(f, &v, 1);
		} else if (c->size == 4) {
			uint32_t v = (uint32_t)c->val;
			memcpy(f, &v, 4);
		} else {
			assert_int_equal(c->size, 8);
			memcpy(f, &c->val, 8);
		}
		break;
	case ED_STR:
		memcpy(f, &s, sizeof(s));
		break;
	case ED_KW: {
		struct ms_event_keywords k = {1, &kw, NULL, 0};
		kw = s;
		memcpy(f, &k, sizeof(k));
		break;
	}
	case ED_RANGES: {
		struct ms_event_ranges r = {c->n, c->ranges, NULL};
		memcpy(f, &r, sizeof(r));
		break;
	}
	case ED_DROPS: {
		struct ms_event_drops ds = {c->n, c->drops, NULL};
		memcpy(f, &ds, sizeof(ds));
		break;
	}
	}
}

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct ms_event ev;
		struct ms_buf b, out;
		uint8_t type = c->type;
		int ret;

		base_event(c->type, &ev);
		bad_edit(c, &ev);
		ms_buf_init(&b, 0);
		raw_encode(&ev, &b);
		switch (c->mut) {
		case MUT_NONE:
			break;
		case MUT_PUT16:
			assert_true(c->at + 2 <= b.len);
			ms_put16(b.data + c->at, (uint16_t)c->mval);
			break;
		case MUT_PUT32:
			assert_true(c->at + 4 <= b.len);
			ms_put32(b.data + c->at, (uint32_t)c->mval);
			break;
		case MUT_TYPE:
			type = (uint8_t)c->mval;
			break;
		}
		/* an exact-size copy, so ASan sees any overread */
		uint8_t *p = ms_malloc(b.len);
		memcpy(p, b.data, b.len);
		expect_fail("bad", i, c->name, type, p, b.len, c->expect);
		free(p);

		if (c->edit != ED_NONE) {
			ms_buf_init(&out, 0);
			assert_int_equal(ms_buf_append(&out, "x", 1), 0);
			ret = ms_event_encode(&ev, &out);
			if (ret != -EINVAL)
				fail_msg("bad case %zu (%s): encode gave %s, "
					 "want -EINVAL",
					 i, c->name, ms_strerror(ret));
			assert_int_equal(out.len, 1);
			ms_buf_free(&out);
		}
		ms_buf_free(&b);
	}
}

/* ---- the name rule on its own ---- */

static void test_names(void **state)
{
	static const struct {
		const char *s;
		size_t len; /* 0: strlen */
		size_t max;
		bool valid;
	} cases[] = {
		{"INBOX", 0, 1024, true},
		{"Entwürfe", 0, 1024, true},
		{"日本語", 0, 1024, true},
		{"\xf0\x9f\x98\x80", 0, 1024, true}, /* U+1F600 */
		{"\xf4\x8f\xbf\xbf", 0, 1024, true}, /* U+10FFFF */
		{"\xed\x9f\xbf", 0, 1024, true},     /* U+D7FF */
		{"\xee\x80\x80", 0, 1024, true},     /* U+E000 */
		{"\xef\xbf\xbf", 0, 1024, true},     /* U+FFFF */
		{"\xe0\xa0\x80", 0, 1024, true},     /* U+0800 */
		{"\xf0\x90\x80\x80", 0, 1024, true}, /* U+10000 */
		{"a\tb \x7f", 0, 1024, true},        /* other controls */
		{"abc", 0, 3, true},
		{"abcd", 0, 3, false},
		{"日", 0, 2, false}, /* bytes, not characters */
		{"", 0, 1024, false},
		{"a\0", 2, 1024, false},
		{"\r", 0, 1024, false},
		{"\n", 0, 1024, false},
		{"\xc0\x80", 0, 1024, false}, /* overlong NUL */
		{"\xed\xa0\x80", 0, 1024, false},
		{"\xed\xbf\xbf", 0, 1024, false},
		{"\xf4\x90\x80\x80", 0, 1024, false},
		{"\xf0\x8f\xbf\xbf", 0, 1024, false},
		{"\xe0\x9f\xbf", 0, 1024, false},
		{"\x80", 0, 1024, false},
		{"\xc2", 0, 1024, false},
		{"\xf0\x9f\x98", 0, 1024, false},
		{"\xf0\x9f\x98z", 0, 1024, false},
		{"\xc2\xc2\x80", 0, 1024, false},
		{"\xf8\x88\x80\x80\x80", 0, 1024, false},
		{"\xfe\xff", 0, 1024, false},
		/* sequences cut by the length: what follows must not be read */
		{"\xc3\xa4", 1, 1024, false},
		{"\xe6\x97\xa5", 2, 1024, false},
		{"\xf0\x9f\x98\x80", 3, 1024, false},
		{"a\xf0\x9f\x98\x80", 2, 1024, false},
	};
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
		if (ms_event_name_valid(cases[i].s, len, cases[i].max) !=
		    cases[i].valid)
			fail_msg("name case %zu: want %s", i,
				 cases[i].valid ? "valid" : "invalid");
	}
	assert_false(ms_event_name_valid(NULL, 0, 10));
	assert_false(ms_event_name_valid(NULL, 3, 10));
}

/* ---- accessors ---- */

static void test_accessors(void **state)
{
	struct ms_event ev, dec, other;
	struct ms_buf b;
	const char *kw, *error = NULL;
	size_t len;
	uint32_t lo = 0, hi = 0;
	struct ms_event_drop drop;
	(void)state;

	/* keywords, list form and packed form, by index and by iterator */
	base_event(MS_REC_PLACE, &ev);
	ev.u.place.keywords = make_keywords(1000);
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	assert_int_equal(
		ms_event_decode(MS_REC_PLACE, b.data, b.len, &dec, &error), 0);
	assert_non_null(dec.u.place.keywords.packed);
	assert_null(dec.u.place.keywords.list);
	for (uint32_t i = 0; i < 1000; i += 333) {
		char want[8];
		snprintf(want, sizeof(want), "k%05u", i);
		assert_int_equal(ms_event_keyword(&ev, i, &kw, &len), 0);
		assert_int_equal(len, 6);
		assert_memory_equal(kw, want, 6);
		assert_int_equal(ms_event_keyword(&dec, i, &kw, &len), 0);
		assert_int_equal(len, 6);
		assert_memory_equal(kw, want, 6);
		/* borrowed from the payload */
		assert_true((const uint8_t *)kw > b.data &&
			    (const uint8_t *)kw < b.data + b.len);
	}
	kw = "untouched";
	len = 99;
	assert_int_equal(ms_event_keyword(&dec, 1000, &kw, &len), -EINVAL);
	assert_string_equal(kw, "untouched");
	assert_int_equal(len, 99);
	{
		struct ms_event_kw_iter it;
		uint32_t n = 0;
		ms_event_kw_iter_init(&it, &dec);
		while (ms_event_kw_next(&it, &kw, &len) == 1) {
			char want[8];
			snprintf(want, sizeof(want), "k%05u", n);
			assert_memory_equal(kw, want, 6);
			n++;
		}
		assert_int_equal(n, 1000);
		assert_int_equal(ms_event_kw_next(&it, &kw, &len), 0);
	}
	ms_buf_free(&b);

	/* types without the list */
	base_event(MS_REC_EXPUNGE, &other);
	assert_int_equal(ms_event_keyword(&other, 0, &kw, &len), -EINVAL);
	{
		struct ms_event_kw_iter it;
		ms_event_kw_iter_init(&it, &other);
		assert_int_equal(ms_event_kw_next(&it, &kw, &len), 0);
	}
	assert_int_equal(ms_event_drop(&other, 0, &drop), -EINVAL);
	base_event(MS_REC_PLACE, &other);
	assert_int_equal(ms_event_range(&other, 0, &lo, &hi), -EINVAL);
	assert_int_equal(ms_event_drop(&other, 0, &drop), -EINVAL);
	base_event(MS_REC_PURGE, &other);
	assert_int_equal(ms_event_drop(&other, 0, &drop), -EINVAL);
	base_event(MS_REC_RETIRE, &other);
	assert_int_equal(ms_event_range(&other, 0, &lo, &hi), -EINVAL);
	assert_int_equal(ms_event_keyword(&other, 0, &kw, &len), -EINVAL);

	/* ranges, both forms */
	base_event(MS_REC_EXPUNGE, &ev);
	ev.u.expunge.ranges = make_ranges(RANGE_STORE, 0);
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	assert_int_equal(b.len, 32 + 4 + 8 * RANGE_STORE);
	assert_int_equal(
		ms_event_decode(MS_REC_EXPUNGE, b.data, b.len, &dec, &error),
		0);
	for (uint32_t i = 0; i < RANGE_STORE; i += 999) {
		assert_int_equal(ms_event_range(&ev, i, &lo, &hi), 0);
		assert_int_equal(lo, 3 * i + 1);
		assert_int_equal(hi, 3 * i + 2);
		lo = hi = 0;
		assert_int_equal(ms_event_range(&dec, i, &lo, &hi), 0);
		assert_int_equal(lo, 3 * i + 1);
		assert_int_equal(hi, 3 * i + 2);
	}
	lo = hi = 77;
	assert_int_equal(ms_event_range(&dec, RANGE_STORE, &lo, &hi), -EINVAL);
	assert_int_equal(lo, 77);
	assert_int_equal(hi, 77);
	ms_buf_free(&b);

	/* dropped records, both forms */
	base_event(MS_REC_RETIRE, &ev);
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	assert_int_equal(b.len, 8 + 8 + 4 + 3 * MS_EVENT_DROP_SIZE);
	assert_int_equal(
		ms_event_decode(MS_REC_RETIRE, b.data, b.len, &dec, &error), 0);
	assert_null(dec.u.retire.drops.list);
	assert_ptr_equal(dec.u.retire.drops.packed, b.data + 20);
	assert_int_equal(dec.u.retire.seg, 3);
	assert_int_equal(dec.u.retire.sum, 0x1122334455667788);
	for (uint32_t i = 0; i < 3; i++) {
		memset(&drop, 0x5a, sizeof(drop));
		assert_int_equal(ms_event_drop(&ev, i, &drop), 0);
		assert_int_equal(drop.off, base_drops[i].off);
		assert_int_equal(drop.type, base_drops[i].type);
		assert_memory_equal(drop.key, base_drops[i].key, 32);
		memset(&drop, 0x5a, sizeof(drop));
		assert_int_equal(ms_event_drop(&dec, i, &drop), 0);
		assert_int_equal(drop.off, base_drops[i].off);
		assert_int_equal(drop.type, base_drops[i].type);
		assert_memory_equal(drop.key, base_drops[i].key, 32);
	}
	memset(&drop, 0x77, sizeof(drop));
	{
		struct ms_event_drop want;
		memset(&want, 0x77, sizeof(want));
		assert_int_equal(ms_event_drop(&dec, 3, &drop), -EINVAL);
		assert_memory_equal(&drop, &want, sizeof(drop));
		assert_int_equal(ms_event_drop(&ev, 3, &drop), -EINVAL);
		assert_int_equal(ms_event_drop(&dec, UINT32_MAX, &drop),
				 -EINVAL);
		assert_memory_equal(&drop, &want, sizeof(drop));
	}
	/* a packed list handed to the encoder (as a copy would) */
	{
		struct ms_buf again;
		ev.u.retire.drops.list = NULL;
		ev.u.retire.drops.packed = b.data + 20;
		assert_int_equal(ms_event_drop(&ev, 2, &drop), 0);
		assert_int_equal(drop.off, base_drops[2].off);
		assert_int_equal(drop.type, MS_REC_NOOP);
		ms_buf_init(&again, 0);
		assert_int_equal(ms_event_encode(&ev, &again), 0);
		assert_int_equal(again.len, b.len);
		assert_memory_equal(again.data, b.data, b.len);
		ms_buf_free(&again);
	}
	ms_buf_free(&b);

	/* many dropped records: O(1) access anywhere in the packed list */
	base_event(MS_REC_RETIRE, &ev);
	for (uint32_t i = 0; i < DROP_STORE; i++) {
		memset(&drop_store[i], 0, sizeof(drop_store[i]));
		drop_store[i].off = MS_EVENT_SEG_HDR_SIZE + (uint64_t)i * 4096;
		drop_store[i].type = i % 2 ? MS_REC_PLACE : MS_REC_BODY;
		if (drop_store[i].type == MS_REC_BODY)
			memset(drop_store[i].key, (int)(i & 0xff), 32);
	}
	ev.u.retire.drops =
		(struct ms_event_drops){DROP_STORE, drop_store, NULL};
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	assert_int_equal(b.len, 20 + (size_t)DROP_STORE * MS_EVENT_DROP_SIZE);
	assert_int_equal(
		ms_event_decode(MS_REC_RETIRE, b.data, b.len, &dec, &error), 0);
	assert_int_equal(dec.u.retire.drops.n, DROP_STORE);
	for (uint32_t i = 0; i < DROP_STORE; i += 777) {
		assert_int_equal(ms_event_drop(&dec, i, &drop), 0);
		assert_int_equal(drop.off, drop_store[i].off);
		assert_int_equal(drop.type, drop_store[i].type);
		assert_memory_equal(drop.key, drop_store[i].key, 32);
	}
	assert_int_equal(ms_event_drop(&dec, DROP_STORE - 1, &drop), 0);
	assert_int_equal(drop.off, drop_store[DROP_STORE - 1].off);
	assert_int_equal(ms_event_drop(&dec, DROP_STORE, &drop), -EINVAL);
	ms_buf_free(&b);

	/* borrowed names */
	base_event(MS_REC_MBOX_CREATE, &ev);
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	assert_int_equal(ms_event_decode(MS_REC_MBOX_CREATE, b.data, b.len,
					 &dec, &error),
			 0);
	assert_ptr_equal(dec.u.mbox_create.name.s, b.data + 26);
	assert_int_equal(dec.u.mbox_create.name.len, strlen("Entwürfe"));
	ms_buf_free(&b);

	/* error_r may be NULL */
	assert_int_equal(ms_event_decode(MS_REC_USER_DELETE,
					 (const uint8_t *)"abc", 3, &dec, NULL),
			 MS_ETRUNC);
}

/* ---- encoder limits and malformed structs ---- */

static void expect_einval(const char *what, const struct ms_event *ev)
{
	struct ms_buf b;
	int ret;

	ms_buf_init(&b, 0);
	assert_int_equal(ms_buf_append(&b, "keep", 4), 0);
	ret = ms_event_encode(ev, &b);
	if (ret != -EINVAL)
		fail_msg("%s: encode gave %s, want -EINVAL", what,
			 ms_strerror(ret));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "keep", 4);
	ms_buf_free(&b);
}

static void test_encode_limits(void **state)
{
	struct ms_event ev;
	struct ms_buf b;
	static const uint8_t bad_packed[] = {9, 0, 'a'}; /* length 9, 1 byte */
	static const uint8_t good_packed[] = {1, 0, 'a'};
	static const uint8_t packed_ranges[] = {5, 0, 0, 0, 6, 0, 0, 0,
						1, 0, 0, 0, 2, 0, 0, 0};
	static const struct ms_event_str kw1[] = {S("a")};
	(void)state;

	/* types that are not events */
	memset(&ev, 0, sizeof(ev));
	ev.type = 0;
	expect_einval("type 0", &ev);
	ev.type = MS_REC_BODY;
	expect_einval("BODY", &ev);
	ev.type = MS_REC_SEAL;
	expect_einval("SEAL", &ev);
	ev.type = MS_REC_HOLE;
	expect_einval("HOLE", &ev);
	ev.type = MS_REC_TYPE_MAX + 1;
	expect_einval("type 19", &ev);

	/* both forms, no form, malformed packed */
	base_event(MS_REC_PLACE, &ev);
	ev.u.place.keywords.packed = good_packed;
	ev.u.place.keywords.packed_len = sizeof(good_packed);
	expect_einval("keywords in both forms", &ev);
	ev.u.place.keywords = (struct ms_event_keywords){1, NULL, NULL, 0};
	expect_einval("keywords in no form", &ev);
	ev.u.place.keywords = (struct ms_event_keywords){1, NULL, bad_packed,
							 sizeof(bad_packed)};
	expect_einval("packed keyword past its end", &ev);
	ev.u.place.keywords = (struct ms_event_keywords){2, NULL, good_packed,
							 sizeof(good_packed)};
	expect_einval("packed keywords fewer than n", &ev);
	ev.u.place.keywords = (struct ms_event_keywords){0, NULL, good_packed,
							 sizeof(good_packed)};
	expect_einval("packed keywords more than n", &ev);
	ev.u.place.keywords = (struct ms_event_keywords){1, NULL, good_packed,
							 sizeof(good_packed)};
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	ms_buf_free(&b);
	ev.u.place.keywords = make_keywords(UINT16_MAX + 1);
	expect_einval("65536 keywords", &ev);
	{
		struct ms_event_kw_iter it;
		const char *kw;
		size_t len;
		ev.u.place.keywords = (struct ms_event_keywords){
			2, NULL, bad_packed, sizeof(bad_packed)};
		ms_event_kw_iter_init(&it, &ev);
		assert_int_equal(ms_event_kw_next(&it, &kw, &len), -EINVAL);
		assert_int_equal(ms_event_keyword(&ev, 0, &kw, &len), -EINVAL);
		ev.u.place.keywords.list = kw1;
		assert_int_equal(ms_event_keyword(&ev, 0, &kw, &len), -EINVAL);
	}

	base_event(MS_REC_FLAGS, &ev);
	ev.u.flags.ranges.packed = packed_ranges;
	expect_einval("ranges in both forms", &ev);
	ev.u.flags.ranges.list = NULL;
	ev.u.flags.ranges.n = 2;
	expect_einval("packed ranges unsorted", &ev);
	ev.u.flags.ranges.n = 1;
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), 0);
	ms_buf_free(&b);
	ev.u.flags.ranges.packed = NULL;
	expect_einval("ranges in no form", &ev);

	/* dropped records: forms, malformed packed lists, counts */
	{
		static const uint8_t packed_drops[2 * MS_EVENT_DROP_SIZE] = {
			/* 64 NOOP, 128 PLACE */
			[0] = 64,
			[8] = MS_REC_NOOP,
			[41] = 128,
			[49] = MS_REC_PLACE};
		uint8_t bad[sizeof(packed_drops)];

		base_event(MS_REC_RETIRE, &ev);
		ev.u.retire.drops.packed = packed_drops;
		expect_einval("drops in both forms", &ev);
		ev.u.retire.drops = (struct ms_event_drops){1, NULL, NULL};
		expect_einval("drops in no form", &ev);
		ev.u.retire.drops =
			(struct ms_event_drops){0, NULL, packed_drops};
		expect_einval("packed drops, n 0", &ev);
		ev.u.retire.drops =
			(struct ms_event_drops){2, NULL, packed_drops};
		ms_buf_init(&b, 0);
		assert_int_equal(ms_event_encode(&ev, &b), 0);
		assert_int_equal(b.len, 20 + sizeof(packed_drops));
		assert_memory_equal(b.data + 20, packed_drops,
				    sizeof(packed_drops));
		ms_buf_free(&b);

		memcpy(bad, packed_drops, sizeof(bad));
		bad[41] = 64; /* second offset == first */
		ev.u.retire.drops.packed = bad;
		expect_einval("packed drops, offset repeated", &ev);
		memcpy(bad, packed_drops, sizeof(bad));
		bad[0] = 63;
		expect_einval("packed drops, offset 63", &ev);
		memcpy(bad, packed_drops, sizeof(bad));
		bad[49] = MS_REC_HOLE;
		expect_einval("packed drops, type HOLE", &ev);
		memcpy(bad, packed_drops, sizeof(bad));
		bad[41 + 9 + 31] = 1;
		expect_einval("packed drops, key on a PLACE", &ev);
		memcpy(bad, packed_drops, sizeof(bad));
		bad[8] = MS_REC_BODY;
		bad[9] = 1; /* a key on a BODY is fine */
		ms_buf_init(&b, 0);
		assert_int_equal(ms_event_encode(&ev, &b), 0);
		ms_buf_free(&b);

		/* a count no payload can hold is refused before any item
		   is read (the list has 1 item) */
		static const struct ms_event_drop one = {64, MS_REC_NOOP, {0}};
		ev.u.retire.drops = (struct ms_event_drops){
			MS_REC_MAX_PAYLOAD / MS_EVENT_DROP_SIZE + 1, &one,
			NULL};
		expect_einval("drops: more than a payload holds", &ev);
		ev.u.retire.drops.n = UINT32_MAX;
		expect_einval("drops: 2^32-1", &ev);
	}

	/* names given as NULL */
	base_event(MS_REC_USER_CREATE, &ev);
	ev.u.user_create.name.s = NULL;
	expect_einval("NULL name", &ev);
	base_event(MS_REC_NOOP, &ev);
	ev.u.noop.data = NULL;
	expect_einval("NULL noop data, length 6", &ev);

	/* sizes: out->max, and the record payload limit */
	base_event(MS_REC_PLACE, &ev);
	ms_buf_init(&b, 130);
	assert_int_equal(ms_buf_append(&b, "0123456789", 10), 0);
	assert_int_equal(ms_event_encode(&ev, &b), MS_ETOOBIG);
	assert_int_equal(b.len, 10);
	assert_memory_equal(b.data, "0123456789", 10);
	ms_buf_free(&b);

	base_event(MS_REC_NOOP, &ev);
	ev.u.noop.len = (size_t)MS_REC_MAX_PAYLOAD + 1; /* never read */
	ms_buf_init(&b, 0);
	assert_int_equal(ms_event_encode(&ev, &b), MS_ETOOBIG);
	assert_int_equal(b.len, 0);
	ms_buf_free(&b);

	/* and the decoder refuses such a payload length before reading */
	{
		struct ms_event dec;
		const char *error = NULL;
		assert_int_equal(ms_event_decode(MS_REC_NOOP, noop_bytes,
						 (size_t)MS_REC_MAX_PAYLOAD + 1,
						 &dec, &error),
				 MS_ECORRUPT);
		assert_non_null(error);
	}
}

/* ---- every type: one valid base, re-encodable, bad in many lengths ---- */

static void test_every_type(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(event_types); i++) {
		struct ms_event ev, dec;
		struct ms_buf b;
		const char *error = NULL;

		base_event(event_types[i], &ev);
		ms_buf_init(&b, 0);
		assert_int_equal(ms_event_encode(&ev, &b), 0);
		if (ms_event_decode(event_types[i], b.data, b.len, &dec,
				    &error) != 0)
			fail_msg("type %u: %s", event_types[i], error);
		assert_null(ev_diff(&ev, &dec));
		/* the same bytes under every other event type */
		for (size_t j = 0; j < MS_ARRAY_SIZE(event_types); j++) {
			struct ms_event o;
			int ret;
			if (j == i)
				continue;
			ret = ms_event_decode(event_types[j], b.data, b.len, &o,
					      &error);
			/* may or may not parse; must not crash, and a
			   success must re-encode to the same bytes */
			if (ret == 0) {
				struct ms_buf again;
				ms_buf_init(&again, 0);
				assert_int_equal(ms_event_encode(&o, &again),
						 0);
				assert_int_equal(again.len, b.len);
				assert_memory_equal(again.data, b.data, b.len);
				ms_buf_free(&again);
			}
		}
		ms_buf_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_extra_byte),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_accessors),
		cmocka_unit_test(test_encode_limits),
		cmocka_unit_test(test_every_type),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
