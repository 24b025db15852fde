/*
 * event.c - payload codecs of the mail-model records; see event.h and
 * docs/format.md ("Record payloads").
 *
 * One set of rules serves both directions: the encoder checks a struct
 * by running the decoder's checks (over its packed lists, or item by item
 * over its C arrays), so the two cannot drift apart.  The encoder checks
 * everything and computes the exact size before it writes a byte.
 */
#include <errno.h>

#include "event.h"

/* ---- names ---- */

/*
 * Length of the valid UTF-8 prefix of p[0..len-1] (RFC 3629 table 3-7:
 * shortest form only, no surrogates, nothing above U+10FFFF).
 */
static size_t utf8_valid_prefix(const uint8_t *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = p[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0; /* else overlong */
			else if (c == 0xed)
				hi = 0x9f; /* else a surrogate */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90; /* else overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* else above U+10FFFF */
		} else {
			return i; /* continuation, C0/C1 overlong, F5..FF */
		}
		if (len - i <= n)
			return i;
		if (p[i + 1] < lo || p[i + 1] > hi)
			return i;
		for (size_t k = 2; k <= n; k++) {
			if (p[i + k] < 0x80 || p[i + k] > 0xbf)
				return i;
		}
		i += n + 1;
	}
	return i;
}

/* NULL if p[0..len-1] is a good name of at most max bytes, else why not. */
static const char *name_problem(const uint8_t *p, size_t len, size_t max)
{
	size_t ok;

	if (len == 0)
		return "empty";
	if (len > max)
		return ms_errf("%zu bytes, more than %zu", len, max);
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\0')
			return ms_errf("NUL at byte %zu", i);
		if (p[i] == '\r')
			return ms_errf("CR at byte %zu", i);
		if (p[i] == '\n')
			return ms_errf("LF at byte %zu", i);
	}
	ok = utf8_valid_prefix(p, len);
	if (ok != len)
		return ms_errf("invalid UTF-8 at byte %zu", ok);
	return NULL;
}

bool ms_event_name_valid(const char *s, size_t len, size_t max)
{
	if (s == NULL)
		return false;
	return name_problem((const uint8_t *)s, len, max) == NULL;
}

/* ---- decoding ---- */

static void get_bytes(struct ms_dec *d, const char *field, uint8_t *out,
		      size_t n)
{
	size_t off = ms_dec_off(d);
	const uint8_t *p = ms_rd_bytes(&d->rd, n);
	if (ms_dec_ok(d, field, off))
		memcpy(out, p, n);
	else
		memset(out, 0, n);
}

/* str: u16 length + bytes, checked as a name of at most max bytes. */
static void get_name(struct ms_dec *d, const char *field, size_t max,
		     struct ms_event_str *out)
{
	size_t off = ms_dec_off(d);
	uint16_t n = ms_dec_u16(d, field);
	const uint8_t *p = ms_rd_bytes(&d->rd, n);
	const char *why;

	out->s = NULL;
	out->len = 0;
	if (!ms_dec_ok(d, field, off))
		return;
	if ((why = name_problem(p, n, max)) != NULL) {
		ms_dec_bad(d, field, off, why);
		return;
	}
	out->s = (const char *)p;
	out->len = n;
}

/* n keywords (the count is read by the caller); packed form. */
static void get_keyword_items(struct ms_dec *d, uint32_t n,
			      struct ms_event_keywords *kws)
{
	const uint8_t *start = d->rd.p;
	struct ms_event_str kw;

	for (uint32_t i = 0; i < n && d->ret == 0; i++)
		get_name(d, "keyword", MS_EVENT_KEYWORD_MAX, &kw);
	kws->n = n;
	kws->list = NULL;
	kws->packed = start;
	kws->packed_len = (size_t)(d->rd.p - start);
}

static void get_keywords(struct ms_dec *d, struct ms_event_keywords *kws)
{
	size_t off = ms_dec_off(d);
	uint16_t n = ms_dec_u16(d, "nkeywords");

	memset(kws, 0, sizeof(*kws));
	if (d->ret != 0)
		return;
	/* each keyword takes at least its 2 length bytes (the name check
	   then refuses an empty one, with a better message) */
	if (n > d->rd.left / 2) {
		ms_dec_fail(d, MS_ETRUNC,
			    ms_errf("%s: nkeywords %u at offset %zu needs at "
				    "least %zu bytes, %zu left",
				    ms_dec_what(d), n, off, (size_t)n * 2,
				    d->rd.left));
		return;
	}
	get_keyword_items(d, n, kws);
}

/* n uid ranges, 8n bytes already known to be there or not; packed form. */
static void get_range_items(struct ms_dec *d, uint32_t n,
			    struct ms_event_ranges *rs)
{
	const uint8_t *p = ms_dec_uid_ranges(d, n);

	memset(rs, 0, sizeof(*rs));
	if (p == NULL)
		return;
	rs->n = n;
	rs->packed = p;
}

static void get_ranges(struct ms_dec *d, struct ms_event_ranges *rs)
{
	size_t off = ms_dec_off(d);
	uint32_t n = ms_dec_u32(d, "nranges");

	memset(rs, 0, sizeof(*rs));
	if (d->ret != 0)
		return;
	if (n == 0) {
		ms_dec_bad(d, "nranges", off, "0");
		return;
	}
	if (n > d->rd.left / 8) {
		ms_dec_fail(d, MS_ETRUNC,
			    ms_errf("%s: nranges %u at offset %zu needs %zu "
				    "bytes, %zu left",
				    ms_dec_what(d), n, off, (size_t)n * 8,
				    d->rd.left));
		return;
	}
	get_range_items(d, n, rs);
}

static bool drop_item_ok(const struct ms_event_drop *x, uint64_t prev_off,
			 uint32_t i, const char **why_r)
{
	static const uint8_t zero[MS_EVENT_BODY_KEY_SIZE];

	if (x->off < MS_EVENT_SEG_HDR_SIZE || (i > 0 && x->off <= prev_off)) {
		*why_r = ms_errf(
			"%u: offset %llu not above %llu", i,
			(unsigned long long)x->off,
			(unsigned long long)(i > 0 ? prev_off
						   : MS_EVENT_SEG_HDR_SIZE -
							     1));
		return false;
	}
	if (x->type != MS_REC_BODY && x->type != MS_REC_PLACE &&
	    x->type != MS_REC_NOOP) {
		*why_r = ms_errf("%u: type %u cannot be dropped", i, x->type);
		return false;
	}
	if (x->type != MS_REC_BODY && memcmp(x->key, zero, sizeof(zero)) != 0) {
		*why_r = ms_errf("%u: a key on a %s", i,
				 ms_rec_type_name(x->type));
		return false;
	}
	return true;
}

static void drop_unpack(const uint8_t *p, struct ms_event_drop *x)
{
	x->off = ms_get64(p);
	x->type = p[8];
	memcpy(x->key, p + 9, sizeof(x->key));
}

/* n dropped records, n * MS_EVENT_DROP_SIZE bytes; packed form. */
static void get_drop_items(struct ms_dec *d, uint32_t n,
			   struct ms_event_drops *ds)
{
	size_t off = ms_dec_off(d);
	const uint8_t *p = ms_rd_bytes(&d->rd, (size_t)n * MS_EVENT_DROP_SIZE);
	uint64_t prev = 0;

	memset(ds, 0, sizeof(*ds));
	if (!ms_dec_ok(d, "dropped records", off))
		return;
	for (uint32_t i = 0; i < n; i++) {
		struct ms_event_drop x;
		const char *why;

		drop_unpack(p + (size_t)i * MS_EVENT_DROP_SIZE, &x);
		if (!drop_item_ok(&x, prev, i, &why)) {
			ms_dec_bad(d, "dropped record",
				   off + (size_t)i * MS_EVENT_DROP_SIZE, why);
			return;
		}
		prev = x.off;
	}
	ds->n = n;
	ds->packed = p;
}

static void get_drops(struct ms_dec *d, struct ms_event_drops *ds)
{
	size_t off = ms_dec_off(d);
	uint32_t n = ms_dec_u32(d, "ndrops");

	memset(ds, 0, sizeof(*ds));
	if (d->ret != 0)
		return;
	if (n == 0) {
		ms_dec_bad(d, "ndrops", off, "0");
		return;
	}
	if (n > d->rd.left / MS_EVENT_DROP_SIZE) {
		ms_dec_fail(d, MS_ETRUNC,
			    ms_errf("%s: ndrops %u at offset %zu needs %zu "
				    "bytes, %zu left",
				    ms_dec_what(d), n, off,
				    (size_t)n * MS_EVENT_DROP_SIZE,
				    d->rd.left));
		return;
	}
	get_drop_items(d, n, ds);
}

static void dec_place(struct ms_dec *d, struct ms_event_place *e)
{
	size_t off;

	e->user_id = ms_dec_u64(d, "user_id");
	e->mbox_id = ms_dec_u64(d, "mbox_id");
	e->uid = ms_dec_u32_nz(d, "uid");
	e->modseq = ms_dec_u64_nz(d, "modseq");
	e->flags = ms_dec_u32_mask(d, "flags", MS_EVENT_FLAG_MASK);
	e->received_date = (int64_t)ms_dec_u64(d, "received_date");
	e->save_date = (int64_t)ms_dec_u64(d, "save_date");
	get_bytes(d, "guid", e->guid, sizeof(e->guid));
	get_bytes(d, "body_key", e->body_key, sizeof(e->body_key));
	e->body_seq = ms_dec_u64(d, "body_seq");
	e->physical_size = ms_dec_u64(d, "physical_size");
	off = ms_dec_off(d);
	e->virtual_size = ms_dec_u64(d, "virtual_size");
	if (d->ret == 0 && e->virtual_size < e->physical_size)
		ms_dec_bad(d, "virtual_size", off,
			   ms_errf("%llu below physical size %llu",
				   (unsigned long long)e->virtual_size,
				   (unsigned long long)e->physical_size));
	e->restore_uid = ms_dec_u32(d, "restore_uid");
	get_keywords(d, &e->keywords);
}

static void dec_flags(struct ms_dec *d, struct ms_event_flags *e)
{
	size_t off;

	e->user_id = ms_dec_u64(d, "user_id");
	e->mbox_id = ms_dec_u64(d, "mbox_id");
	e->modseq = ms_dec_u64_nz(d, "modseq");
	off = ms_dec_off(d);
	e->mode = ms_dec_u8(d, "mode");
	if (d->ret == 0 && e->mode > MS_EVENT_MODE_REPLACE)
		ms_dec_bad(d, "mode", off, ms_errf("%u", e->mode));
	e->flags = ms_dec_u32_mask(d, "flags", MS_EVENT_FLAG_MASK);
	get_keywords(d, &e->keywords);
	get_ranges(d, &e->ranges);
}

static void dec_event(struct ms_dec *d, struct ms_event *ev)
{
	size_t off;

	switch (ev->type) {
	case MS_REC_USER_CREATE: {
		struct ms_event_user_create *e = &ev->u.user_create;
		e->user_id = ms_dec_u64(d, "user_id");
		get_name(d, "name", MS_EVENT_USER_NAME_MAX, &e->name);
		break;
	}
	case MS_REC_USER_DELETE:
		ev->u.user_delete.user_id = ms_dec_u64(d, "user_id");
		break;
	case MS_REC_MBOX_CREATE: {
		struct ms_event_mbox_create *e = &ev->u.mbox_create;
		e->user_id = ms_dec_u64(d, "user_id");
		e->mbox_id = ms_dec_u64(d, "mbox_id");
		e->uidvalidity = ms_dec_u32_nz(d, "uidvalidity");
		e->special_use = ms_dec_u32_mask(d, "special_use", MS_EVENT_SU_MASK);
		get_name(d, "name", MS_EVENT_MBOX_NAME_MAX, &e->name);
		break;
	}
	case MS_REC_MBOX_RENAME: {
		struct ms_event_mbox_rename *e = &ev->u.mbox_rename;
		e->user_id = ms_dec_u64(d, "user_id");
		e->mbox_id = ms_dec_u64(d, "mbox_id");
		get_name(d, "new_name", MS_EVENT_MBOX_NAME_MAX, &e->new_name);
		break;
	}
	case MS_REC_MBOX_DELETE:
		ev->u.mbox_delete.user_id = ms_dec_u64(d, "user_id");
		ev->u.mbox_delete.mbox_id = ms_dec_u64(d, "mbox_id");
		break;
	case MS_REC_MBOX_SUBSCRIBE: {
		struct ms_event_mbox_subscribe *e = &ev->u.mbox_subscribe;
		e->user_id = ms_dec_u64(d, "user_id");
		off = ms_dec_off(d);
		e->subscribed = ms_dec_u8(d, "subscribed");
		if (d->ret == 0 && e->subscribed > 1)
			ms_dec_bad(d, "subscribed", off,
				   ms_errf("%u, not 0 or 1", e->subscribed));
		get_name(d, "name", MS_EVENT_MBOX_NAME_MAX, &e->name);
		break;
	}
	case MS_REC_MBOX_UPDATE: {
		struct ms_event_mbox_update *e = &ev->u.mbox_update;
		e->user_id = ms_dec_u64(d, "user_id");
		e->mbox_id = ms_dec_u64(d, "mbox_id");
		e->uidvalidity = ms_dec_u32(d, "uidvalidity");
		e->uidnext = ms_dec_u32(d, "uidnext");
		e->highestmodseq = ms_dec_u64(d, "highestmodseq");
		get_bytes(d, "guid", e->guid, sizeof(e->guid));
		break;
	}
	case MS_REC_PLACE:
		dec_place(d, &ev->u.place);
		break;
	case MS_REC_FLAGS:
		dec_flags(d, &ev->u.flags);
		break;
	case MS_REC_EXPUNGE: {
		struct ms_event_expunge *e = &ev->u.expunge;
		e->user_id = ms_dec_u64(d, "user_id");
		e->mbox_id = ms_dec_u64(d, "mbox_id");
		e->modseq = ms_dec_u64_nz(d, "modseq");
		e->time = ms_dec_u64(d, "time");
		get_ranges(d, &e->ranges);
		break;
	}
	case MS_REC_QUOTA:
		ev->u.quota.user_id = ms_dec_u64(d, "user_id");
		ev->u.quota.max_bytes = ms_dec_u64(d, "max_bytes");
		ev->u.quota.max_messages = ms_dec_u64(d, "max_messages");
		break;
	case MS_REC_TIMELINE: {
		struct ms_event_timeline *e = &ev->u.timeline;
		e->new_timeline = ms_dec_u64_nz(d, "new_timeline");
		e->fork_seq = ms_dec_u64(d, "fork_seq");
		get_bytes(d, "store_id", e->store_id, sizeof(e->store_id));
		break;
	}
	case MS_REC_RETIRE:
		ev->u.retire.seg = ms_dec_u64(d, "seg");
		ev->u.retire.sum = ms_dec_u64(d, "sum");
		get_drops(d, &ev->u.retire.drops);
		break;
	case MS_REC_PURGE:
		ev->u.purge.before = ms_dec_u64_nz(d, "before");
		break;
	case MS_REC_CHECKPOINT:
		ev->u.checkpoint.applied_seq = ms_dec_u64(d, "applied_seq");
		ev->u.checkpoint.index_generation =
			ms_dec_u64(d, "index_generation");
		ev->u.checkpoint.time = ms_dec_u64(d, "time");
		break;
	case MS_REC_NOOP:
		/* all of it; not through the cursor when empty, as the
		   payload pointer may then be NULL (NULL + 0 is undefined) */
		ev->u.noop.len = d->rd.left;
		ev->u.noop.data = d->rd.left > 0
					  ? ms_rd_bytes(&d->rd, d->rd.left)
					  : d->rd.p;
		break;
	default:
		/* the caller rejected every other type */
		ms_assert(!"unexpected record type");
	}
}

int ms_event_decode(uint8_t type, const uint8_t *payload, size_t len,
		    struct ms_event *ev_r, const char **error_r)
{
	struct ms_event ev;
	struct ms_dec d;
	const char *error = NULL;
	int ret;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	if (type == MS_REC_BODY || type == MS_REC_SEAL || type == MS_REC_HOLE) {
		error = ms_errf("%s records are not events (their payload "
				"has its own decoder)",
				ms_rec_type_name(type));
		ret = MS_ECORRUPT;
		goto out;
	}
	if (type == 0 || type > MS_REC_TYPE_MAX) {
		error = ms_errf("unknown record type %u", type);
		ret = MS_ECORRUPT;
		goto out;
	}
	if (len > MS_REC_MAX_PAYLOAD) {
		error = ms_errf("%s: payload of %zu bytes, more than %u",
				ms_rec_type_name(type), len,
				MS_REC_MAX_PAYLOAD);
		ret = MS_ECORRUPT;
		goto out;
	}
	ms_dec_init(&d, payload, len, ms_rec_type_name(type), NULL, "payload");
	dec_event(&d, &ev);
	if (d.ret != 0) {
		error = d.error;
		ret = d.ret;
		goto out;
	}
	if ((ret = ms_rd_end(&d.rd)) < 0) {
		/* every failed read was reported above: this is a leftover */
		error = ms_errf("%s: %zu bytes after the last field (offset "
				"%zu of %zu)",
				ms_dec_what(&d), d.rd.left, ms_dec_off(&d),
				len);
		goto out;
	}
	*ev_r = ev;
out:
	if (ret < 0 && error_r != NULL)
		*error_r = error;
	return ret;
}

/* ---- list accessors ---- */

static const struct ms_event_keywords *ev_keywords(const struct ms_event *ev)
{
	switch (ev->type) {
	case MS_REC_PLACE:
		return &ev->u.place.keywords;
	case MS_REC_FLAGS:
		return &ev->u.flags.keywords;
	default:
		return NULL;
	}
}

static const struct ms_event_ranges *ev_ranges(const struct ms_event *ev)
{
	switch (ev->type) {
	case MS_REC_FLAGS:
		return &ev->u.flags.ranges;
	case MS_REC_EXPUNGE:
		return &ev->u.expunge.ranges;
	default:
		return NULL;
	}
}

/* Exactly one form is set, or none for an empty list. */
static bool one_form(uint32_t n, const void *list, const void *packed)
{
	if (list != NULL && packed != NULL)
		return false;
	return n == 0 || list != NULL || packed != NULL;
}

void ms_event_kw_iter_init(struct ms_event_kw_iter *it,
			   const struct ms_event *ev)
{
	it->kws = ev_keywords(ev);
	it->i = 0;
	it->off = 0;
}

int ms_event_kw_next(struct ms_event_kw_iter *it, const char **kw_r,
		     size_t *len_r)
{
	const struct ms_event_keywords *k = it->kws;
	size_t n;

	if (k == NULL || it->i >= k->n)
		return 0;
	if (!one_form(k->n, k->list, k->packed))
		return -EINVAL;
	if (k->list != NULL) {
		*kw_r = k->list[it->i].s;
		*len_r = k->list[it->i].len;
		it->i++;
		return 1;
	}
	if (k->packed_len - it->off < 2)
		return -EINVAL;
	n = ms_get16(k->packed + it->off);
	if (k->packed_len - it->off - 2 < n)
		return -EINVAL;
	*kw_r = (const char *)k->packed + it->off + 2;
	*len_r = n;
	it->off += 2 + n;
	it->i++;
	return 1;
}

int ms_event_keyword(const struct ms_event *ev, uint32_t i, const char **kw_r,
		     size_t *len_r)
{
	struct ms_event_kw_iter it;
	const char *kw = NULL;
	size_t len = 0;

	ms_event_kw_iter_init(&it, ev);
	if (it.kws == NULL || i >= it.kws->n)
		return -EINVAL;
	if (it.kws->list != NULL && it.kws->packed == NULL)
		it.i = i; /* O(1) */
	do {
		if (ms_event_kw_next(&it, &kw, &len) <= 0)
			return -EINVAL;
	} while (it.i <= i);
	*kw_r = kw;
	*len_r = len;
	return 0;
}

int ms_event_range(const struct ms_event *ev, uint32_t i, uint32_t *lo_r,
		   uint32_t *hi_r)
{
	const struct ms_event_ranges *r = ev_ranges(ev);

	if (r == NULL || i >= r->n || !one_form(r->n, r->list, r->packed))
		return -EINVAL;
	if (r->list != NULL) {
		*lo_r = r->list[i].lo;
		*hi_r = r->list[i].hi;
	} else {
		*lo_r = ms_get32(r->packed + (size_t)i * 8);
		*hi_r = ms_get32(r->packed + (size_t)i * 8 + 4);
	}
	return 0;
}

int ms_event_drop(const struct ms_event *ev, uint32_t i,
		  struct ms_event_drop *drop_r)
{
	const struct ms_event_drops *ds =
		ev->type == MS_REC_RETIRE ? &ev->u.retire.drops : NULL;

	if (ds == NULL || i >= ds->n || !one_form(ds->n, ds->list, ds->packed))
		return -EINVAL;
	if (ds->list != NULL)
		*drop_r = ds->list[i];
	else
		drop_unpack(ds->packed + (size_t)i * MS_EVENT_DROP_SIZE,
			    drop_r);
	return 0;
}

/* ---- encoding: check and size ---- */

static bool name_ok(const struct ms_event_str *s, size_t max, size_t *size)
{
	if (!ms_event_name_valid(s->s, s->len, max))
		return false;
	*size += 2 + s->len;
	return true;
}

/* Keywords of a struct: the rules, and their size on disk (with count). */
static bool keywords_ok(const struct ms_event_keywords *k, size_t *size)
{
	if (k->n > UINT16_MAX || !one_form(k->n, k->list, k->packed))
		return false;
	*size += 2;
	if (k->list != NULL) {
		for (uint32_t i = 0; i < k->n; i++) {
			if (!name_ok(&k->list[i], MS_EVENT_KEYWORD_MAX, size))
				return false;
		}
		return true;
	}
	if (k->n == 0)
		return k->packed == NULL || k->packed_len == 0;
	/* the decoder's checks over the packed bytes */
	struct ms_event_keywords tmp;
	struct ms_dec d;
	ms_dec_init(&d, k->packed, k->packed_len,
		    ms_rec_type_name(MS_REC_PLACE), NULL, "payload");
	get_keyword_items(&d, k->n, &tmp);
	if (d.ret != 0 || ms_rd_end(&d.rd) != 0)
		return false;
	*size += k->packed_len;
	return true;
}

static bool ranges_ok(const struct ms_event_ranges *r, size_t *size)
{
	if (r->n == 0 || !one_form(r->n, r->list, r->packed))
		return false;
	if (r->list != NULL) {
		for (uint32_t i = 0; i < r->n; i++) {
			uint32_t lo = r->list[i].lo, hi = r->list[i].hi;
			if (lo == 0 || lo > hi)
				return false;
			if (i > 0 && lo <= r->list[i - 1].hi)
				return false;
		}
	} else {
		struct ms_event_ranges tmp;
		struct ms_dec d;
		ms_dec_init(&d, r->packed, (size_t)r->n * 8,
			    ms_rec_type_name(MS_REC_FLAGS), NULL, "payload");
		get_range_items(&d, r->n, &tmp);
		if (d.ret != 0)
			return false;
	}
	*size += 4 + (size_t)r->n * 8;
	return true;
}

static bool drops_ok(const struct ms_event_drops *ds, size_t *size)
{
	if (ds->n == 0 || !one_form(ds->n, ds->list, ds->packed))
		return false;
	if (ds->n > MS_REC_MAX_PAYLOAD / MS_EVENT_DROP_SIZE)
		return false;
	if (ds->list != NULL) {
		for (uint32_t i = 0; i < ds->n; i++) {
			const char *why;
			if (!drop_item_ok(&ds->list[i],
					  i > 0 ? ds->list[i - 1].off : 0, i,
					  &why))
				return false;
		}
	} else {
		struct ms_event_drops tmp;
		struct ms_dec d;
		ms_dec_init(&d, ds->packed, (size_t)ds->n * MS_EVENT_DROP_SIZE,
			    ms_rec_type_name(MS_REC_RETIRE), NULL, "payload");
		get_drop_items(&d, ds->n, &tmp);
		if (d.ret != 0)
			return false;
	}
	*size += 4 + (size_t)ds->n * MS_EVENT_DROP_SIZE;
	return true;
}

/* The rules of event.h for ev; *size_r gets its payload size. */
static int ev_check(const struct ms_event *ev, size_t *size_r)
{
	size_t size = 0;
	bool ok;

	switch (ev->type) {
	case MS_REC_USER_CREATE:
		size = 8;
		ok = name_ok(&ev->u.user_create.name, MS_EVENT_USER_NAME_MAX,
			     &size);
		break;
	case MS_REC_USER_DELETE:
		size = 8;
		ok = true;
		break;
	case MS_REC_MBOX_CREATE: {
		const struct ms_event_mbox_create *e = &ev->u.mbox_create;
		size = 8 + 8 + 4 + 4;
		ok = e->uidvalidity != 0 &&
		     (e->special_use & ~(uint32_t)MS_EVENT_SU_MASK) == 0 &&
		     name_ok(&e->name, MS_EVENT_MBOX_NAME_MAX, &size);
		break;
	}
	case MS_REC_MBOX_RENAME:
		size = 8 + 8;
		ok = name_ok(&ev->u.mbox_rename.new_name,
			     MS_EVENT_MBOX_NAME_MAX, &size);
		break;
	case MS_REC_MBOX_DELETE:
		size = 8 + 8;
		ok = true;
		break;
	case MS_REC_MBOX_SUBSCRIBE:
		size = 8 + 1;
		ok = ev->u.mbox_subscribe.subscribed <= 1 &&
		     name_ok(&ev->u.mbox_subscribe.name, MS_EVENT_MBOX_NAME_MAX,
			     &size);
		break;
	case MS_REC_MBOX_UPDATE:
		size = 8 + 8 + 4 + 4 + 8 + MS_EVENT_GUID_SIZE;
		ok = true;
		break;
	case MS_REC_PLACE: {
		const struct ms_event_place *e = &ev->u.place;
		size = 8 + 8 + 4 + 8 + 4 + 8 + 8 + MS_EVENT_GUID_SIZE +
		       MS_EVENT_BODY_KEY_SIZE + 8 + 8 + 8 + 4;
		ok = e->uid != 0 && e->modseq != 0 &&
		     (e->flags & ~(uint32_t)MS_EVENT_FLAG_MASK) == 0 &&
		     e->virtual_size >= e->physical_size &&
		     keywords_ok(&e->keywords, &size);
		break;
	}
	case MS_REC_FLAGS: {
		const struct ms_event_flags *e = &ev->u.flags;
		size = 8 + 8 + 8 + 1 + 4;
		ok = e->modseq != 0 && e->mode <= MS_EVENT_MODE_REPLACE &&
		     (e->flags & ~(uint32_t)MS_EVENT_FLAG_MASK) == 0 &&
		     keywords_ok(&e->keywords, &size) &&
		     ranges_ok(&e->ranges, &size);
		break;
	}
	case MS_REC_EXPUNGE:
		size = 8 + 8 + 8 + 8;
		ok = ev->u.expunge.modseq != 0 &&
		     ranges_ok(&ev->u.expunge.ranges, &size);
		break;
	case MS_REC_QUOTA:
		size = 8 + 8 + 8;
		ok = true;
		break;
	case MS_REC_TIMELINE:
		size = 8 + 8 + MS_EVENT_STORE_ID_SIZE;
		ok = ev->u.timeline.new_timeline != 0;
		break;
	case MS_REC_RETIRE:
		size = 8 + 8;
		ok = drops_ok(&ev->u.retire.drops, &size);
		break;
	case MS_REC_PURGE:
		size = 8;
		ok = ev->u.purge.before != 0;
		break;
	case MS_REC_CHECKPOINT:
		size = 8 + 8 + 8;
		ok = true;
		break;
	case MS_REC_NOOP:
		if (ev->u.noop.len > MS_REC_MAX_PAYLOAD)
			return MS_ETOOBIG;
		size = ev->u.noop.len;
		ok = ev->u.noop.data != NULL || ev->u.noop.len == 0;
		break;
	default:
		ok = false;
		break;
	}
	if (!ok)
		return -EINVAL;
	if (size > MS_REC_MAX_PAYLOAD)
		return MS_ETOOBIG;
	*size_r = size;
	return 0;
}

/*
 * ---- encoding: write ----
 * ms_event_encode() reserved the exact size first, so no write can fail.
 */
static void put8(struct ms_buf *b, uint8_t v)
{
	int ret = ms_wr_u8(b, v);
	ms_assert(ret == 0);
}

static void put16(struct ms_buf *b, uint16_t v)
{
	int ret = ms_wr_u16(b, v);
	ms_assert(ret == 0);
}

static void put32(struct ms_buf *b, uint32_t v)
{
	int ret = ms_wr_u32(b, v);
	ms_assert(ret == 0);
}

static void put64(struct ms_buf *b, uint64_t v)
{
	int ret = ms_wr_u64(b, v);
	ms_assert(ret == 0);
}

static void put_bytes(struct ms_buf *b, const void *p, size_t n)
{
	int ret = ms_wr_bytes(b, p, n);
	ms_assert(ret == 0);
}

static void put_str(struct ms_buf *b, const struct ms_event_str *s)
{
	int ret = ms_wr_str(b, s->s, s->len);
	ms_assert(ret == 0);
}

static void put_keywords(struct ms_buf *b, const struct ms_event_keywords *k)
{
	put16(b, (uint16_t)k->n);
	if (k->list != NULL) {
		for (uint32_t i = 0; i < k->n; i++)
			put_str(b, &k->list[i]);
	} else if (k->n > 0) {
		put_bytes(b, k->packed, k->packed_len);
	}
}

static void put_ranges(struct ms_buf *b, const struct ms_event_ranges *r)
{
	put32(b, r->n);
	if (r->list != NULL) {
		for (uint32_t i = 0; i < r->n; i++) {
			put32(b, r->list[i].lo);
			put32(b, r->list[i].hi);
		}
	} else {
		put_bytes(b, r->packed, (size_t)r->n * 8);
	}
}

static void put_drops(struct ms_buf *b, const struct ms_event_drops *ds)
{
	put32(b, ds->n);
	if (ds->packed != NULL) {
		put_bytes(b, ds->packed, (size_t)ds->n * MS_EVENT_DROP_SIZE);
		return;
	}
	for (uint32_t i = 0; i < ds->n; i++) {
		put64(b, ds->list[i].off);
		put8(b, ds->list[i].type);
		put_bytes(b, ds->list[i].key, sizeof(ds->list[i].key));
	}
}

static void put_event(struct ms_buf *b, const struct ms_event *ev)
{
	switch (ev->type) {
	case MS_REC_USER_CREATE:
		put64(b, ev->u.user_create.user_id);
		put_str(b, &ev->u.user_create.name);
		break;
	case MS_REC_USER_DELETE:
		put64(b, ev->u.user_delete.user_id);
		break;
	case MS_REC_MBOX_CREATE: {
		const struct ms_event_mbox_create *e = &ev->u.mbox_create;
		put64(b, e->user_id);
		put64(b, e->mbox_id);
		put32(b, e->uidvalidity);
		put32(b, e->special_use);
		put_str(b, &e->name);
		break;
	}
	case MS_REC_MBOX_RENAME:
		put64(b, ev->u.mbox_rename.user_id);
		put64(b, ev->u.mbox_rename.mbox_id);
		put_str(b, &ev->u.mbox_rename.new_name);
		break;
	case MS_REC_MBOX_DELETE:
		put64(b, ev->u.mbox_delete.user_id);
		put64(b, ev->u.mbox_delete.mbox_id);
		break;
	case MS_REC_MBOX_SUBSCRIBE:
		put64(b, ev->u.mbox_subscribe.user_id);
		put8(b, ev->u.mbox_subscribe.subscribed);
		put_str(b, &ev->u.mbox_subscribe.name);
		break;
	case MS_REC_MBOX_UPDATE: {
		const struct ms_event_mbox_update *e = &ev->u.mbox_update;
		put64(b, e->user_id);
		put64(b, e->mbox_id);
		put32(b, e->uidvalidity);
		put32(b, e->uidnext);
		put64(b, e->highestmodseq);
		put_bytes(b, e->guid, sizeof(e->guid));
		break;
	}
	case MS_REC_PLACE: {
		const struct ms_event_place *e = &ev->u.place;
		put64(b, e->user_id);
		put64(b, e->mbox_id);
		put32(b, e->uid);
		put64(b, e->modseq);
		put32(b, e->flags);
		put64(b, (uint64_t)e->received_date);
		put64(b, (uint64_t)e->save_date);
		put_bytes(b, e->guid, sizeof(e->guid));
		put_bytes(b, e->body_key, sizeof(e->body_key));
		put64(b, e->body_seq);
		put64(b, e->physical_size);
		put64(b, e->virtual_size);
		put32(b, e->restore_uid);
		put_keywords(b, &e->keywords);
		break;
	}
	case MS_REC_FLAGS: {
		const struct ms_event_flags *e = &ev->u.flags;
		put64(b, e->user_id);
		put64(b, e->mbox_id);
		put64(b, e->modseq);
		put8(b, e->mode);
		put32(b, e->flags);
		put_keywords(b, &e->keywords);
		put_ranges(b, &e->ranges);
		break;
	}
	case MS_REC_EXPUNGE:
		put64(b, ev->u.expunge.user_id);
		put64(b, ev->u.expunge.mbox_id);
		put64(b, ev->u.expunge.modseq);
		put64(b, ev->u.expunge.time);
		put_ranges(b, &ev->u.expunge.ranges);
		break;
	case MS_REC_QUOTA:
		put64(b, ev->u.quota.user_id);
		put64(b, ev->u.quota.max_bytes);
		put64(b, ev->u.quota.max_messages);
		break;
	case MS_REC_TIMELINE:
		put64(b, ev->u.timeline.new_timeline);
		put64(b, ev->u.timeline.fork_seq);
		put_bytes(b, ev->u.timeline.store_id,
			  sizeof(ev->u.timeline.store_id));
		break;
	case MS_REC_RETIRE:
		put64(b, ev->u.retire.seg);
		put64(b, ev->u.retire.sum);
		put_drops(b, &ev->u.retire.drops);
		break;
	case MS_REC_PURGE:
		put64(b, ev->u.purge.before);
		break;
	case MS_REC_CHECKPOINT:
		put64(b, ev->u.checkpoint.applied_seq);
		put64(b, ev->u.checkpoint.index_generation);
		put64(b, ev->u.checkpoint.time);
		break;
	case MS_REC_NOOP:
		put_bytes(b, ev->u.noop.data, ev->u.noop.len);
		break;
	default:
		ms_assert(!"type passed ev_check");
	}
}

int ms_event_encode(const struct ms_event *ev, struct ms_buf *out)
{
	size_t size = 0, start = out->len;
	int ret;

	if ((ret = ev_check(ev, &size)) < 0)
		return ret;
	if ((ret = ms_buf_reserve(out, size)) < 0)
		return ret;
	put_event(out, ev);
	ms_assert(out->len - start == size);
	return 0;
}
