/*
 * fuzz_proto.c - libFuzzer target for the protocol codec (store/proto.c).
 *
 * Input: a stream of frames, parsed one after the other with
 * ms_proto_frame() until it refuses or the input ends.  The body of each
 * frame is decoded as the request and as the reply of every op (and of
 * its own op, known or not).  Whatever decodes must:
 *   - yield every list item through the iterators, each keeping the rules;
 *   - encode back, from the decoded (packed) struct, to exactly the same
 *     bytes (the whole frame, header included, for the frame's own op);
 *   - encode to the same bytes again from a copy whose lists were turned
 *     into plain C arrays (the "list" form an encoder is usually given).
 * A refusal must be MS_ETRUNC, MS_ECORRUPT, MS_ETOOBIG or -EOPNOTSUPP with
 * an error text.  Anything else aborts.  Seeds: tests/fuzz/corpus/proto/
 * (one valid frame per request and reply, a pipelined stream, broken
 * frames).
 *
 *   make fuzz FUZZ_SECONDS=120, or by hand with the store's sources
 *   (every store .c file but the one with main):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *         -Istore tests/fuzz/fuzz_proto.c $(STORE_SOURCES) -luring \
 *         -lsodium -lxxhash -llz4 -llmdb -o fuzz_proto
 *   ./fuzz_proto -max_total_time=120 NEW_DIR tests/fuzz/corpus/proto
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t all_ops[] = {
	MS_OP_HELLO,          MS_OP_STATUS,      MS_OP_USER_CREATE,
	MS_OP_USER_DELETE,    MS_OP_USER_LIST,   MS_OP_MBOX_LIST,
	MS_OP_MBOX_CREATE,    MS_OP_MBOX_RENAME, MS_OP_MBOX_DELETE,
	MS_OP_MBOX_SUBSCRIBE, MS_OP_MBOX_STATUS, MS_OP_APPEND,
	MS_OP_FETCH_META,     MS_OP_FETCH_BODY,  MS_OP_CHANGES,
	MS_OP_STORE,          MS_OP_EXPUNGE,     MS_OP_COPY,
	MS_OP_MOVE,           MS_OP_QUOTA_GET,   MS_OP_QUOTA_SET,
	MS_OP_WAIT,           MS_OP_MBOX_UPDATE, MS_OP_APPEND_UID,
	MS_OP_MBOX_SUBS,
};

static void die(const char *what, uint16_t op)
{
	fprintf(stderr, "fuzz_proto: op 0x%04x (%s): %s\n", op, ms_op_name(op),
		what);
	abort();
}

/* ---- allocations for the list form, freed after each input ---- */

static void *allocs[4096];
static size_t nallocs;

static void *take(size_t n, size_t size)
{
	void *p;

	if (nallocs == MS_ARRAY_SIZE(allocs))
		die("too many lists", 0);
	p = calloc(n ? n : 1, size);
	if (p == NULL)
		die("out of memory", 0);
	allocs[nallocs++] = p;
	return p;
}

static void free_all(void)
{
	while (nallocs > 0)
		free(allocs[--nallocs]);
}

/* ---- checks on items, and the list form ---- */

static void check_name(struct ms_pstr s, size_t max, bool may_be_empty,
		       uint16_t op)
{
	if (s.len == 0 && may_be_empty)
		return;
	if (!ms_event_name_valid(s.s, s.len, max))
		die("a decoded name breaks the name rule", op);
}

static void check_set(const struct ms_uid_set *s, uint16_t op)
{
	uint32_t lo, hi, prev = 0;

	for (uint32_t i = 0; i < s->n; i++) {
		if (ms_uid_set_range(s, i, &lo, &hi) != 0)
			die("uid range not found", op);
		if (lo == 0 || lo > hi || (i > 0 && lo <= prev))
			die("a decoded uid set breaks the rules", op);
		prev = hi;
	}
	if (ms_uid_set_range(s, s->n, &lo, &hi) != -EINVAL)
		die("uid range past the end found", op);
}

static struct ms_uid_set list_set(const struct ms_uid_set *s, uint16_t op)
{
	struct ms_uid_range *r = take(s->n, sizeof(*r));

	check_set(s, op);
	for (uint32_t i = 0; i < s->n; i++)
		(void)ms_uid_set_range(s, i, &r[i].lo, &r[i].hi);
	return (struct ms_uid_set){s->n, s->n ? r : NULL, NULL};
}

static struct ms_keywords list_kws(const struct ms_keywords *k, uint16_t op)
{
	struct ms_pstr *a = take(k->n, sizeof(*a));
	struct ms_proto_iter it;
	uint32_t n = 0;
	int ret;

	ms_proto_iter_keywords(&it, k);
	while ((ret = ms_proto_next_keyword(&it, &a[n < k->n ? n : 0])) == 1) {
		if (n >= k->n)
			die("more keywords than counted", op);
		check_name(a[n], MS_EVENT_KEYWORD_MAX, false, op);
		n++;
	}
	if (ret != 0 || n != k->n)
		die("keyword iterator failed on a decoded list", op);
	if (k->n > MS_PROTO_MAX_KEYWORDS)
		die("keywords over the limit", op);
	return (struct ms_keywords){k->n, k->n ? a : NULL, NULL, 0};
}

/*
 * A list of n items in list form: every item through the iterator (next
 * must give exactly n, then 0), with fix(item) turning its own lists into
 * list form too.
 */
#define LIST_COPY(l, item_type, iter_fn, next_fn, fix, op)            \
	do {                                                          \
		item_type *a_ = take((l)->n, sizeof(item_type));      \
		struct ms_proto_iter it_;                             \
		uint32_t n_ = 0;                                      \
		int r_;                                               \
		item_type tmp_;                                       \
		iter_fn(&it_, (l));                                   \
		while ((r_ = next_fn(&it_, &tmp_)) == 1) {            \
			if (n_ >= (l)->n)                             \
				die("more items than counted", op);   \
			a_[n_] = tmp_;                                \
			fix(&a_[n_], op);                             \
			n_++;                                         \
		}                                                     \
		if (r_ != 0 || n_ != (l)->n)                          \
			die("iterator failed on a decoded list", op); \
		(l)->list = (l)->n ? a_ : NULL;                       \
		(l)->packed = NULL;                                   \
		(l)->packed_len = 0;                                  \
	} while (0)

static void fix_placement(struct ms_placement *p, uint16_t op)
{
	check_name(p->user, MS_EVENT_USER_NAME_MAX, true, op);
	check_name(p->mailbox, MS_EVENT_MBOX_NAME_MAX, false, op);
	if (p->received < 0 || p->received > MS_PROTO_TIME_MAX)
		die("placement time out of range", op);
	p->keywords = list_kws(&p->keywords, op);
}

static void fix_counter(struct ms_counter *c, uint16_t op)
{
	check_name(c->key, MS_PROTO_NAME_MAX, false, op);
}

static void fix_user(struct ms_user_info *u, uint16_t op)
{
	check_name(u->name, MS_EVENT_USER_NAME_MAX, false, op);
}

static void fix_mbox(struct ms_mbox_info *m, uint16_t op)
{
	check_name(m->name, MS_EVENT_MBOX_NAME_MAX, false, op);
	if (m->uidvalidity == 0 || m->uidnext == 0 || m->unseen > m->messages)
		die("a decoded mailbox breaks the rules", op);
}

static void fix_result(struct ms_append_result *r, uint16_t op)
{
	if (r->status > 0)
		die("positive result status", op);
	if (r->status == 0 && (r->uid == 0 || r->uidvalidity == 0))
		die("a decoded result breaks the rules", op);
}

static void fix_meta(struct ms_msg_meta *m, uint16_t op)
{
	if (m->uid == 0 || m->modseq == 0 || m->virtual_size < m->physical_size)
		die("a decoded message breaks the rules", op);
	m->keywords = list_kws(&m->keywords, op);
}

static void fix_change(struct ms_msg_change *c, uint16_t op)
{
	if (c->uid == 0 || c->modseq == 0)
		die("a decoded change breaks the rules", op);
	c->keywords = list_kws(&c->keywords, op);
}

static void fix_pair(struct ms_uid_pair *p, uint16_t op)
{
	if (p->src_uid == 0 || p->dst_uid == 0)
		die("a decoded uid pair breaks the rules", op);
}

static void fix_name(struct ms_pstr *n, uint16_t op)
{
	if (n->len == 0 || n->s == NULL)
		die("a decoded name is empty", op);
}

static void fix_mbox_chg(struct ms_mbox_chg *m, uint16_t op)
{
	if (m->mbox_id == 0 || m->changes == 0)
		die("a decoded mailbox count breaks the rules", op);
}

/* r in list form (and checked). */
static void req_to_list(struct ms_req *r)
{
	uint16_t op = r->op;

	switch (op) {
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
		if (r->u.append.placements.n == 0)
			die("empty append decoded", op);
		LIST_COPY(&r->u.append.placements, struct ms_placement,
			  ms_proto_iter_placements, ms_proto_next_placement,
			  fix_placement, op);
		break;
	case MS_OP_FETCH_META:
	case MS_OP_EXPUNGE:
	case MS_OP_COPY:
	case MS_OP_MOVE:
		if (r->u.uids.uids.n == 0)
			die("empty uid set in a request", op);
		r->u.uids.uids = list_set(&r->u.uids.uids, op);
		break;
	case MS_OP_STORE:
		if (r->u.store.uids.n == 0)
			die("empty uid set in a request", op);
		r->u.store.uids = list_set(&r->u.store.uids, op);
		r->u.store.keywords = list_kws(&r->u.store.keywords, op);
		break;
	default:
		break;
	}
}

static void reply_to_list(struct ms_reply *r)
{
	uint16_t op = r->op;

	if (r->status < 0)
		return;
	switch (op) {
	case MS_OP_STATUS:
		LIST_COPY(&r->u.counters, struct ms_counter,
			  ms_proto_iter_counters, ms_proto_next_counter,
			  fix_counter, op);
		break;
	case MS_OP_USER_LIST:
		LIST_COPY(&r->u.users, struct ms_user_info, ms_proto_iter_users,
			  ms_proto_next_user, fix_user, op);
		break;
	case MS_OP_MBOX_LIST:
		LIST_COPY(&r->u.mboxes, struct ms_mbox_info,
			  ms_proto_iter_mboxes, ms_proto_next_mbox, fix_mbox,
			  op);
		break;
	case MS_OP_MBOX_UPDATE:
		fix_mbox(&r->u.mbox_update.mbox, op);
		break;
	case MS_OP_MBOX_SUBS:
		LIST_COPY(&r->u.subs, struct ms_pstr, ms_proto_iter_names,
			  ms_proto_next_name, fix_name, op);
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
		LIST_COPY(&r->u.append, struct ms_append_result,
			  ms_proto_iter_results, ms_proto_next_result,
			  fix_result, op);
		break;
	case MS_OP_FETCH_META:
		LIST_COPY(&r->u.metas, struct ms_msg_meta, ms_proto_iter_metas,
			  ms_proto_next_meta, fix_meta, op);
		break;
	case MS_OP_CHANGES:
		LIST_COPY(&r->u.changes.changes, struct ms_msg_change,
			  ms_proto_iter_changes, ms_proto_next_change,
			  fix_change, op);
		r->u.changes.expunged = list_set(&r->u.changes.expunged, op);
		break;
	case MS_OP_STORE:
	case MS_OP_EXPUNGE:
		r->u.store.uids = list_set(&r->u.store.uids, op);
		break;
	case MS_OP_COPY:
	case MS_OP_MOVE:
		LIST_COPY(&r->u.copy.pairs, struct ms_uid_pair,
			  ms_proto_iter_pairs, ms_proto_next_pair, fix_pair,
			  op);
		break;
	case MS_OP_USER_WATCH:
		if (!r->u.watch.have_mboxes && r->u.watch.mboxes.n != 0)
			die("mailbox counts without their fields", op);
		LIST_COPY(&r->u.watch.mboxes, struct ms_mbox_chg,
			  ms_proto_iter_mbox_chgs, ms_proto_next_mbox_chg,
			  fix_mbox_chg, op);
		break;
	default:
		break;
	}
}

/* ---- one body as one op ---- */

static void check_refusal(int ret, const char *error, uint16_t op)
{
	if (ret != MS_ETRUNC && ret != MS_ECORRUPT && ret != MS_ETOOBIG &&
	    ret != -EOPNOTSUPP)
		die("decode returned an unexpected code", op);
	if (error == NULL || error[0] == '\0')
		die("decode failed without an error text", op);
}

/* out holds one frame: its body must equal body[0..len-1]; with whole,
   the whole frame must equal it. */
static void check_same(const struct ms_buf *out, const uint8_t *body,
		       size_t len, const uint8_t *whole, uint16_t op)
{
	if (out->len != MS_PROTO_HDR_SIZE + len)
		die("re-encoded frame has another length", op);
	if (len > 0 && memcmp(out->data + MS_PROTO_HDR_SIZE, body, len) != 0)
		die("re-encoded body differs from the input", op);
	if (whole != NULL && memcmp(out->data, whole, MS_PROTO_HDR_SIZE) != 0)
		die("re-encoded header differs from the input", op);
}

/*
 * Decode body as op (a reply if MS_OP_REPLY is set) and check the
 * round trips.  whole: the frame the body came from, if op is its op.
 */
static void one(uint16_t op, uint32_t id, const uint8_t *body, size_t len,
		const uint8_t *whole)
{
	bool reply = (op & MS_OP_REPLY) != 0;
	const char *error = NULL;
	struct ms_req req;
	struct ms_reply rep;
	struct ms_buf out;
	int ret;

	ret = reply ? ms_reply_decode(op, body, len, &rep, &error)
		    : ms_req_decode(op, body, len, &req, &error);
	if (ret != 0) {
		check_refusal(ret, error, op);
		return;
	}
	if (reply && (rep.op != (op & ~MS_OP_REPLY) || rep.status > 0))
		die("decoded reply has another op or a positive status", op);
	if (!reply && req.op != op)
		die("decoded request has another op", op);

	ms_buf_init(&out, 0);
	ret = reply ? ms_reply_encode(&out, id, &rep, &error)
		    : ms_req_encode(&out, id, &req, &error);
	if (ret != 0) {
		fprintf(stderr, "fuzz_proto: encode: %s: %s\n",
			ms_strerror(ret), error ? error : "");
		die("a decoded struct does not encode", op);
	}
	check_same(&out, body, len, whole, op);

	ms_buf_reset(&out);
	if (reply)
		reply_to_list(&rep);
	else
		req_to_list(&req);
	ret = reply ? ms_reply_encode(&out, id, &rep, &error)
		    : ms_req_encode(&out, id, &req, &error);
	if (ret != 0) {
		fprintf(stderr, "fuzz_proto: encode: %s: %s\n",
			ms_strerror(ret), error ? error : "");
		die("the list form of a decoded struct does not encode", op);
	}
	check_same(&out, body, len, whole, op);
	ms_buf_free(&out);
	free_all();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off < size) {
		struct ms_proto_hdr h;
		size_t need = 0;
		const char *error = NULL;
		int ret = ms_proto_frame(data + off, size - off, 0, &h, &need,
					 &error);

		if (ret == MS_ETRUNC) {
			if (need <= size - off || need < MS_PROTO_HDR_SIZE)
				die("MS_ETRUNC with a need already there", 0);
			break;
		}
		if (ret != 0) {
			if (ret != MS_ECORRUPT && ret != MS_ETOOBIG)
				die("frame returned an unexpected code", 0);
			if (error == NULL || error[0] == '\0')
				die("frame refused without an error text", 0);
			break;
		}
		if (h.flags != 0 || h.len < 8 || h.body != data + off + 12 ||
		    h.body_len != h.len - 8 || h.body_len > size - off - 12)
			die("frame header out of bounds", h.op);
		/* its own op, then every op both ways */
		one(h.op, h.id, h.body, h.body_len, data + off);
		for (size_t i = 0; i < MS_ARRAY_SIZE(all_ops); i++) {
			uint16_t op = all_ops[i];
			one(op, h.id, h.body, h.body_len,
			    op == h.op ? data + off : NULL);
			op |= MS_OP_REPLY;
			one(op, h.id, h.body, h.body_len,
			    op == h.op ? data + off : NULL);
		}
		off += MS_PROTO_HDR_SIZE + h.body_len;
	}
	return 0;
}
