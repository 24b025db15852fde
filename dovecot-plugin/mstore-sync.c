/*
 * mstore-sync.c - the index cache kept equal to the store.
 *
 * One sync = one locked Dovecot index sync (mail_index_sync_begin takes
 * the index's sync lock, so the processes of a user take turns), in
 * which:
 *   1. push: every change Dovecot queued in the index since the last
 *      sync (STORE flags/keywords, EXPUNGE; non-external transactions) is
 *      sent to the store as STORE / EXPUNGE requests.  A failure rolls
 *      the index sync back: the requests stay queued for the next sync.
 *   2. pull: the store's change feed since the modseq this index last
 *      saw (CHANGES) is applied as external changes: expunges, flags and
 *      keywords replaced by the store's, new messages appended with the
 *      store's UIDs in ascending order (with FETCH_META's GUID, sizes
 *      and dates in the "mstore-rec" record extension).  A fresh index,
 *      a feed that no longer reaches back (MS_ESTATE), doveadm
 *      force-resync or a new UIDVALIDITY make it a full pull: the whole
 *      mailbox (FETCH_META 1:*) compared with the index; a UIDVALIDITY
 *      change resets the index first.
 * The store's answer is the truth: echoes of our own pushes come back as
 * no-op updates (AVOID_FLAG_UPDATES).  A push whose replies show it was
 * the store's only change since the index last saw it leaves the pull
 * out (mstore_sync_push_reply(), mstore_sync_pull()).  MODSEQs stay
 * Dovecot's, raised to the store's at each pull (see mstore_sync_apply()).
 *
 * IDLE: a second store connection sends WAIT (the store answers when the
 * mailbox's highestmodseq moves) and its reply, read by the ioloop, calls
 * Dovecot's notify callback, which syncs.
 */
#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "time-util.h"
#include "mail-index-modseq.h"
#include "mail-transaction-log.h"
#include "mail-index-transaction-private.h"
#include "mail-cache-private.h"
#include "mailbox-recent-flags.h"
#include "mstore-storage.h"

#include <errno.h>

#include "client.h"
#include "ms.h"

struct mstore_msg {
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags; /* store flags */
	const char **keywords; /* NULL-terminated */
	bool have_rec;
	struct mstore_mail_rec rec;
};

struct mstore_sync_ctx {
	struct mstore_mailbox *mbox;
	struct mailbox *box;
	const char *name;
	struct mail_index_sync_ctx *index_sync_ctx;
	struct mail_index_view *sync_view;
	struct mail_index_transaction *trans;
	struct mstore_index_header ext_hdr;

	ARRAY(struct mstore_msg) msgs;	  /* ascending uid */
	ARRAY(struct ms_uid_range) expunged;
	uint32_t uid_validity;
	uint32_t uidnext; /* full read: the store's UIDNEXT */
	/* UIDs asked for in one FETCH_META: MSTORE_META_UIDS, and half of
	   a refused request's for the rest of the sync each time the store
	   says a reply would be too large */
	uint32_t meta_uids;
	uint64_t highestmodseq;
	uint64_t mbox_id;
	bool full;
	bool reset;
	bool expunged_any;
	/* not all of the feed was applied: do not move last_modseq */
	bool incomplete;
	/* the index had no UIDVALIDITY yet: new, or rebuilt after a loss */
	bool fresh;
	/* a session that takes \Recent (SELECT): the messages new to the
	   index are its recent ones (mstore_sync_append) */
	bool drop_recent;
	/* the store refused the push (-EROFS: a standby): the queued
	   changes were dropped and the index is pulled back whole */
	bool refused;
	/* CHANGES since pre_since, asked before the index was locked
	   (mstore_sync_ask_first); borrowed from the connection while its
	   req_seq is still pre_seq */
	const struct ms_reply *pre;
	uint64_t pre_since;
	unsigned int pre_seq;
	struct mstore_chg pre_chg;
	/* the user's change count as of the reply the pull took the
	   store's state from (epoch 0: not known); written with it */
	struct mstore_chg chg;
	/* the open's MBOX_STATUS named another store mailbox than the one
	   the index is of (renamed away, another made under the name):
	   CHANGES, which goes by name, cannot tell; the pull reads it
	   whole and resets the index */
	bool other_mailbox;
	/* the push's replies, one after the other: while each names this
	   index's store mailbox and starts at the modseq the one before
	   ended at (the first at last_modseq), nothing but the push
	   changed the store since the index last saw it, and the pull
	   has nothing to bring back but echoes (mstore_sync_pull) */
	bool pushed;
	bool push_alone;
	uint64_t push_modseq;
	/* and the mailbox's change counts (protocol version 7): the first
	   reply's count before it at most the count the index (or this
	   process) had the store's mailbox as of, each next one's where
	   the one before ended: then the index has the mailbox as of the
	   last reply's count, which the pull writes when it leaves the
	   feed out */
	bool push_chg_ok;
	struct mstore_chg push_chg;
	/* what the push's EXPUNGEs expunged: Dovecot's index holds only
	   requests for them until the sync expunges them, from the feed
	   or, when the pull is left out, from here */
	ARRAY(struct ms_uid_range) push_expunged;
};

/* The keywords of a store reply, as a NULL-terminated list on the data
   stack.  Names IMAP cannot carry (the store allows any UTF-8 without
   CR, LF, NUL) are left out, with a warning, rather than sent to
   clients as broken FETCH lines. */
static const char **mstore_copy_keywords(struct mailbox *box,
					 const struct ms_keywords *kws,
					 bool *ok_r)
{
	struct ms_proto_iter it;
	struct ms_pstr kw;
	const char **list = t_new(const char *, kws->n + 1);
	const char *error;
	unsigned int i = 0;
	int ret;

	ms_proto_iter_keywords(&it, kws);
	while ((ret = ms_proto_next_keyword(&it, &kw)) > 0 && i < kws->n) {
		const char *name = t_strndup(kw.s, kw.len);
		if (!mailbox_keyword_is_valid(box, name, &error)) {
			e_warning(box->event, "mstore: keyword %s from the "
				  "store left out: %s", name, error);
			continue;
		}
		list[i++] = name;
	}
	if (ret < 0)
		*ok_r = FALSE;
	list[i] = NULL;
	return list;
}

static int mstore_msg_cmp(const struct mstore_msg *a,
			  const struct mstore_msg *b)
{
	if (a->uid != b->uid)
		return a->uid < b->uid ? -1 : 1;
	if (a->modseq != b->modseq)
		return a->modseq < b->modseq ? -1 : 1;
	return 0;
}

static int mstore_msg_uid_cmp(const struct mstore_msg *a,
			      const struct mstore_msg *b)
{
	return a->uid < b->uid ? -1 : a->uid > b->uid ? 1 : 0;
}

static void mstore_sync_corrupted(struct mstore_sync_ctx *ctx, const char *what)
{
	mailbox_set_critical(ctx->box, "mstore: malformed %s reply from the "
			     "store", what);
}

/* ---- push ---- */

/*
 * The changes of one kind that a sync gathers from Dovecot's queue, which
 * holds one record per run of uids (an expunge per message, a flag or
 * keyword change per range of a scattered set) and hands them out in uid
 * order, the kinds interleaved.  Each kind goes to the store as one
 * request (one durable write) for all its uids.  Order between kinds does
 * not matter: the queue is Dovecot's sync transaction, which already made
 * the changes net (per uid one flag change, a keyword added or removed,
 * not both).
 */
struct mstore_push {
	enum mail_index_sync_type type;
	uint32_t add, rm;		/* FLAGS: store flags */
	const char *keyword;		/* KEYWORD_ADD/REMOVE */
	ARRAY_TYPE(seq_range) uids;
};
ARRAY_DEFINE_TYPE(mstore_push, struct mstore_push);

/* Follow the push's chain of modseqs with one more reply. */
static void mstore_sync_push_reply(struct mstore_sync_ctx *ctx,
				   const struct ms_rep_modseq_uids *mu,
				   bool store)
{
	ctx->pushed = TRUE;
	if (!mu->have_prev || mu->mbox_id != ctx->ext_hdr.mbox_id ||
	    mu->prev_modseq != ctx->push_modseq ||
	    (store && mu->uids.n != 0)) {
		ctx->push_alone = FALSE;
		return;
	}
	ctx->push_modseq = mu->modseq;
	if (!mu->have_chg || mu->changes == 0 ||
	    mu->prev_changes > ctx->push_chg.count)
		ctx->push_chg_ok = FALSE;
	else
		ctx->push_chg.count = mu->changes;
	for (uint32_t i = 0; !store && i < mu->uids.n; i++) {
		struct ms_uid_range r;
		if (ms_uid_set_range(&mu->uids, i, &r.lo, &r.hi) < 0) {
			ctx->push_alone = FALSE;
			return;
		}
		array_push_back(&ctx->push_expunged, &r);
	}
}

static int mstore_sync_push_store(struct mstore_sync_ctx *ctx,
				  const ARRAY_TYPE(seq_range) *uids,
				  uint8_t mode, uint32_t flags,
				  const char *keyword, int *status_r)
{
	struct ms_req q = { .op = MS_OP_STORE };
	struct ms_reply rep;
	struct ms_pstr kw;
	int ret;

	T_BEGIN {
		q.u.store.mailbox = ms_pstr_c(ctx->name);
		q.u.store.uids = mstore_uid_set(uids);
		q.u.store.mode = mode;
		q.u.store.flags = flags;
		if (keyword != NULL) {
			kw = ms_pstr_c(keyword);
			q.u.store.keywords.n = 1;
			q.u.store.keywords.list = &kw;
		}
		ret = mstore_request(ctx->mbox->storage, &q, &rep, status_r);
		if (ret == 0)
			mstore_sync_push_reply(ctx, &rep.u.store, TRUE);
	} T_END;
	return ret;
}

/* What was gathered, as one request (two for flags added and removed). */
static int mstore_sync_push_flush(struct mstore_sync_ctx *ctx,
				  struct mstore_push *push, int *status_r)
{
	struct ms_req q = { .op = MS_OP_EXPUNGE };
	struct ms_reply rep;
	int ret = 0;

	if (array_count(&push->uids) == 0)
		return 0;
	switch (push->type) {
	case MAIL_INDEX_SYNC_TYPE_EXPUNGE:
		T_BEGIN {
			q.u.uids.mailbox = ms_pstr_c(ctx->name);
			q.u.uids.uids = mstore_uid_set(&push->uids);
			ret = mstore_request(ctx->mbox->storage, &q, &rep,
					     status_r);
			if (ret == 0)
				mstore_sync_push_reply(ctx, &rep.u.expunge,
						       FALSE);
		} T_END;
		break;
	case MAIL_INDEX_SYNC_TYPE_FLAGS:
		/* disjoint sets: adding all, then removing all, is what
		   each range's add then remove was */
		if (push->add != 0)
			ret = mstore_sync_push_store(ctx, &push->uids,
				MS_EVENT_MODE_ADD, push->add, NULL, status_r);
		if (ret == 0 && push->rm != 0)
			ret = mstore_sync_push_store(ctx, &push->uids,
				MS_EVENT_MODE_REMOVE, push->rm, NULL,
				status_r);
		break;
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_REMOVE:
		ret = mstore_sync_push_store(ctx, &push->uids,
			push->type == MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD ?
			MS_EVENT_MODE_ADD : MS_EVENT_MODE_REMOVE,
			0, push->keyword, status_r);
		break;
	}
	array_clear(&push->uids);
	return ret;
}

/* rec as what push gathers: its kind and parameters; FALSE when it asks
   nothing of the store (only Dovecot's own flags, a keyword not known) */
static bool mstore_push_key(struct mstore_sync_ctx *ctx,
			    const struct mail_index_sync_rec *rec,
			    struct mstore_push *key)
{
	const ARRAY_TYPE(keywords) *kw_names =
		mail_index_get_keywords(ctx->box->index);

	key->type = rec->type;
	key->add = key->rm = 0;
	key->keyword = NULL;
	switch (rec->type) {
	case MAIL_INDEX_SYNC_TYPE_EXPUNGE:
		return TRUE;
	case MAIL_INDEX_SYNC_TYPE_FLAGS:
		key->add = mstore_flags_to_store(rec->add_flags);
		key->rm = mstore_flags_to_store(rec->remove_flags);
		return key->add != 0 || key->rm != 0;
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_REMOVE:
		if (rec->keyword_idx >= array_count(kw_names))
			return FALSE;
		key->keyword = array_idx_elem(kw_names, rec->keyword_idx);
		return TRUE;
	}
	return FALSE;
}

/* The gather of key's kind, made when new. */
static struct mstore_push *
mstore_push_find(ARRAY_TYPE(mstore_push) *pushes,
		 const struct mstore_push *key)
{
	struct mstore_push *push;

	array_foreach_modifiable(pushes, push) {
		if (push->type == key->type && push->add == key->add &&
		    push->rm == key->rm &&
		    null_strcmp(push->keyword, key->keyword) == 0)
			return push;
	}
	push = array_append_space(pushes);
	*push = *key;
	i_array_init(&push->uids, 16);
	return push;
}

/* The count the push's chain of counts starts from: the one the index
   has the store's mailbox as of, of the current epoch. */
static void mstore_sync_push_chg_base(struct mstore_sync_ctx *ctx)
{
	struct mstore_storage *storage = ctx->mbox->storage;

	mstore_index_chg(ctx->mbox, ctx->sync_view, &ctx->push_chg);
	ctx->push_chg_ok = storage->chg_known &&
			   ctx->push_chg.epoch != 0 &&
			   ctx->push_chg.epoch == storage->chg_epoch;
}

static int mstore_sync_push(struct mstore_sync_ctx *ctx)
{
	struct mail_index_sync_rec rec;
	ARRAY_TYPE(mstore_push) pushes;
	struct mstore_push *push, key;
	int ret = 0, status = 0;

	ctx->pushed = FALSE;
	ctx->push_alone = TRUE;
	ctx->push_modseq = ctx->ext_hdr.last_modseq;
	mstore_sync_push_chg_base(ctx);
	array_clear(&ctx->push_expunged);
	i_array_init(&pushes, 4);
	while (ret == 0 &&
	       mail_index_sync_next(ctx->index_sync_ctx, &rec)) {
		if (!mstore_push_key(ctx, &rec, &key))
			continue;
		push = mstore_push_find(&pushes, &key);
		if (array_count(&push->uids) >= MS_PROTO_MAX_RANGES)
			ret = mstore_sync_push_flush(ctx, push, &status);
		seq_range_array_add_range(&push->uids, rec.uid1, rec.uid2);
	}
	array_foreach_modifiable(&pushes, push) {
		if (ret == 0)
			ret = mstore_sync_push_flush(ctx, push, &status);
		array_free(&push->uids);
	}
	array_free(&pushes);
	if (ret < 0 && status == -EROFS) {
		/* a standby takes no change now nor later: drop what is
		   queued (kept, it would fail every sync until a promote);
		   the full pull puts the store's state back into the
		   index */
		ctx->refused = TRUE;
		while (mail_index_sync_next(ctx->index_sync_ctx, &rec))
			;
		return 0;
	}
	return ret;
}

/* Deleted from the store: apply the queued expunges to the index only. */
static void mstore_sync_local_only(struct mstore_sync_ctx *ctx)
{
	struct mail_index_sync_rec rec;
	uint32_t seq1, seq2;

	while (mail_index_sync_next(ctx->index_sync_ctx, &rec)) {
		if (rec.type != MAIL_INDEX_SYNC_TYPE_EXPUNGE)
			continue;
		if (!mail_index_lookup_seq_range(ctx->sync_view, rec.uid1,
						 rec.uid2, &seq1, &seq2))
			continue;
		for (; seq1 <= seq2; seq1++)
			mail_index_expunge(ctx->trans, seq1);
	}
}

/* ---- pull: reading the store ---- */

static void mstore_meta_to_msg(struct mailbox *box,
			       const struct ms_msg_meta *m,
			       struct mstore_msg *msg, bool *ok)
{
	msg->uid = m->uid;
	msg->modseq = m->modseq;
	msg->flags = m->flags;
	msg->keywords = mstore_copy_keywords(box, &m->keywords, ok);
	msg->have_rec = TRUE;
	memcpy(msg->rec.guid, m->guid, sizeof(msg->rec.guid));
	msg->rec.physical_size = m->physical_size;
	msg->rec.virtual_size = m->virtual_size;
	msg->rec.received = m->received;
	msg->rec.saved = m->saved;
}

/* One FETCH_META; its messages replace the data of ctx->msgs with the
   same uid, or are appended when add is set.  0, -1 (error set), or the
   store's MS_ETOOBIG (nothing set, nothing changed). */
static int mstore_sync_fetch_meta_once(struct mstore_sync_ctx *ctx,
				       const struct ms_uid_range *ranges,
				       unsigned int nranges, bool add)
{
	struct ms_req q = { .op = MS_OP_FETCH_META };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_msg_meta m;
	bool ok = TRUE;
	int ret;

	q.u.uids.mailbox = ms_pstr_c(ctx->name);
	q.u.uids.uids.n = nranges;
	q.u.uids.uids.list = ranges;
	ret = mstore_request_status(ctx->mbox->storage, &q, &rep);
	if (ret == MS_ETOOBIG)
		return ret;
	if (ret < -1)
		mstore_set_store_error(ctx->mbox->storage, ret, "FETCH_META");
	if (ret < 0)
		return -1;
	ms_proto_iter_metas(&it, &rep.u.metas);
	while ((ret = ms_proto_next_meta(&it, &m)) > 0) {
		struct mstore_msg *msg = NULL;
		if (add) {
			/* appends must come in strictly ascending UIDs, or
			   the index is corrupted: check the store */
			if (array_count(&ctx->msgs) > 0 &&
			    (array_back(&ctx->msgs))->uid >= m.uid) {
				ok = FALSE;
				break;
			}
			msg = array_append_space(&ctx->msgs);
		} else {
			struct mstore_msg key = { .uid = m.uid };
			msg = array_bsearch(&ctx->msgs, &key,
						       mstore_msg_uid_cmp);
		}
		if (msg != NULL)
			mstore_meta_to_msg(ctx->box, &m, msg, &ok);
	}
	if (ret < 0 || !ok) {
		mstore_sync_corrupted(ctx, "FETCH_META");
		return -1;
	}
	return 0;
}

/* UIDs and ranges asked for in one FETCH_META at first: a reply of about
   100 bytes a message stays well under the store's 32 MiB reply limit,
   unless the messages carry many or long keywords, or the store's frame
   is smaller ([store] max_frame); then the store answers MS_ETOOBIG and
   the request is asked again in halves. */
#define MSTORE_META_UIDS 100000u
#define MSTORE_META_RANGES 1000u

/*
 * The metadata of the messages in ranges (ascending, disjoint), as
 * mstore_sync_fetch_meta_once(), in as many requests as it takes.  A
 * range ending at UINT32_MAX ("to the end", a full read's last) is split
 * only below ctx->uidnext: a message saved after the MBOX_STATUS that
 * set it has a higher UID, and the last request, which reaches to the
 * end, brings it.
 */
static int mstore_sync_fetch_meta(struct mstore_sync_ctx *ctx,
				  const struct ms_uid_range *ranges,
				  unsigned int nranges, bool add)
{
	ARRAY(struct ms_uid_range) part;
	unsigned int i = 0;
	uint32_t lo = nranges > 0 ? ranges[0].lo : 0;
	int ret = 0;

	if (ctx->meta_uids == 0)
		ctx->meta_uids = MSTORE_META_UIDS;
	t_array_init(&part, 16);
	while (i < nranges) {
		uint64_t left = ctx->meta_uids;
		unsigned int j = i;
		uint32_t l = lo;

		array_clear(&part);
		while (j < nranges && left > 0 &&
		       array_count(&part) < MSTORE_META_RANGES) {
			uint32_t hi = ranges[j].hi;
			/* where the messages end, for a range to the end */
			uint64_t last = hi != UINT32_MAX ? hi :
				I_MAX((uint64_t)l, (uint64_t)ctx->uidnext);
			if (last - l + 1 > left) {
				hi = (uint32_t)(l + left - 1);
				left = 0;
			} else {
				left -= last - l + 1;
			}
			array_push_back(&part, &((struct ms_uid_range){
				l, hi }));
			if (hi != ranges[j].hi) {
				l = hi + 1;
			} else if (++j < nranges) {
				l = ranges[j].lo;
			}
		}
		ret = mstore_sync_fetch_meta_once(ctx, array_front(&part),
						  array_count(&part), add);
		/* the UIDs the part counted (a range to the end: those
		   below uidnext) */
		uint64_t asked = ctx->meta_uids - left;
		if (ret == MS_ETOOBIG && asked > 1) {
			ctx->meta_uids = (uint32_t)(asked / 2);
			continue; /* the same part again, in halves */
		}
		if (ret == MS_ETOOBIG) {
			mstore_set_store_error(ctx->mbox->storage, ret,
					       "FETCH_META");
			return -1;
		}
		if (ret < 0)
			return -1;
		i = j;
		lo = l;
	}
	return 0;
}

static int mstore_sync_read_full(struct mstore_sync_ctx *ctx)
{
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	/* the store's state at STATUS time or later: a message added in
	   between comes with a UID >= uidnext, which the last request
	   reaches (mstore_sync_fetch_meta) */
	const struct ms_uid_range all = { 1, UINT32_MAX };

	q.u.mbox.name = ms_pstr_c(ctx->name);
	if (mstore_request(ctx->mbox->storage, &q, &rep, NULL) < 0)
		return -1;
	(void)mstore_chg_snapshot(ctx->mbox->storage, &ctx->chg);
	ctx->uid_validity = rep.u.mbox.uidvalidity;
	ctx->highestmodseq = rep.u.mbox.highestmodseq;
	ctx->mbox_id = rep.u.mbox.mbox_id;
	ctx->uidnext = rep.u.mbox.uidnext;
	ctx->full = TRUE;
	array_clear(&ctx->msgs);
	array_clear(&ctx->expunged);
	return mstore_sync_fetch_meta(ctx, &all, 1, TRUE);
}

/* 1 = done, 0 = a full read is needed, -1 = error */
static int mstore_sync_read_changes(struct mstore_sync_ctx *ctx,
				    uint32_t next_uid)
{
	struct ms_req q = { .op = MS_OP_CHANGES };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_msg_change c;
	ARRAY(struct ms_uid_range) new_uids;
	bool ok = TRUE;
	int ret, status;

	q.u.changes.mailbox = ms_pstr_c(ctx->name);
	q.u.changes.since_modseq = ctx->ext_hdr.last_modseq;
	if (ctx->pre != NULL && ctx->pre_since == ctx->ext_hdr.last_modseq &&
	    ctx->pre_seq == ctx->mbox->storage->req_seq) {
		/* asked just before the lock, from the same point */
		rep = *ctx->pre;
		ctx->chg = ctx->pre_chg;
		status = 0;
	} else {
		status = mstore_request_status(ctx->mbox->storage, &q, &rep);
		(void)mstore_chg_snapshot(ctx->mbox->storage, &ctx->chg);
	}
	ctx->pre = NULL;
	if (status == MS_ESTATE) {
		/* expunges after our modseq were purged (the undelete
		   window ended, a MOVE, an undelete): not an error, the
		   whole mailbox tells what is gone */
		e_debug(ctx->box->event, "mstore: the change feed no longer "
			"reaches back to modseq %llu; reading the whole "
			"mailbox",
			(unsigned long long)ctx->ext_hdr.last_modseq);
		return 0;
	}
	if (status < -1)
		mstore_set_store_error(ctx->mbox->storage, status, "CHANGES");
	if (status < 0)
		return -1;
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	if (rep.u.changes.uidvalidity != hdr->uid_validity)
		return 0;
	ctx->uid_validity = rep.u.changes.uidvalidity;
	ctx->highestmodseq = rep.u.changes.highestmodseq;
	ctx->mbox_id = ctx->ext_hdr.mbox_id;

	t_array_init(&new_uids, 8);
	ms_proto_iter_changes(&it, &rep.u.changes.changes);
	while ((ret = ms_proto_next_change(&it, &c)) > 0) {
		struct mstore_msg *msg = array_append_space(&ctx->msgs);
		msg->uid = c.uid;
		msg->modseq = c.modseq;
		msg->flags = c.flags;
		msg->keywords = mstore_copy_keywords(ctx->box, &c.keywords,
						     &ok);
	}
	if (ret < 0 || !ok) {
		mstore_sync_corrupted(ctx, "CHANGES");
		return -1;
	}
	/* mstored sends the feed in modseq order (docs/protocol.md says
	   UID order); appends need ascending UIDs, each once: sort, and of
	   a UID given twice keep the newer state */
	array_sort(&ctx->msgs, mstore_msg_cmp);
	unsigned int count, w = 0;
	struct mstore_msg *msgs = array_get_modifiable(&ctx->msgs, &count);
	for (unsigned int i = 0; i < count; i++) {
		if (w > 0 && msgs[w - 1].uid == msgs[i].uid)
			msgs[w - 1] = msgs[i];
		else
			msgs[w++] = msgs[i];
	}
	array_delete(&ctx->msgs, w, count - w);
	msgs = array_get_modifiable(&ctx->msgs, &count);
	for (unsigned int i = 0; i < count; i++) {
		if (msgs[i].uid < next_uid)
			continue;
		struct ms_uid_range *last = array_count(&new_uids) == 0
			? NULL : array_back_modifiable(&new_uids);
		if (last != NULL && last->hi + 1 == msgs[i].uid)
			last->hi = msgs[i].uid;
		else
			array_push_back(&new_uids, &((struct ms_uid_range){
				msgs[i].uid, msgs[i].uid }));
	}
	for (uint32_t i = 0; i < rep.u.changes.expunged.n; i++) {
		struct ms_uid_range r;
		if (ms_uid_set_range(&rep.u.changes.expunged, i, &r.lo,
				     &r.hi) < 0) {
			mstore_sync_corrupted(ctx, "CHANGES");
			return -1;
		}
		array_push_back(&ctx->expunged, &r);
	}
	/* the reply is borrowed until the next request: everything needed
	   was copied above */
	if (array_count(&new_uids) > 0 &&
	    mstore_sync_fetch_meta(ctx, array_front(&new_uids),
				   array_count(&new_uids), FALSE) < 0)
		return -1;
	return 1;
}

/* ---- pull: applying ---- */

static void mstore_sync_update_keywords(struct mstore_sync_ctx *ctx,
					uint32_t seq, const char **keywords)
{
	struct mail_keywords *kw;
	ARRAY_TYPE(keyword_indexes) old;
	const ARRAY_TYPE(keywords) *names =
		mail_index_get_keywords(ctx->box->index);
	unsigned int n = str_array_length(keywords);
	bool same = TRUE;

	t_array_init(&old, 8);
	mail_index_lookup_keywords(ctx->sync_view, seq, &old);
	if (array_count(&old) != n)
		same = FALSE;
	else {
		const unsigned int *idx;
		array_foreach(&old, idx) {
			const char *name = *idx < array_count(names) ?
				array_idx_elem(names, *idx) : NULL;
			if (name == NULL ||
			    !str_array_find(keywords, name)) {
				same = FALSE;
				break;
			}
		}
	}
	if (same)
		return;
	kw = mail_index_keywords_create(ctx->box->index, keywords);
	mail_index_update_keywords(ctx->trans, seq, MODIFY_REPLACE, kw);
	mail_index_keywords_unref(&kw);
}

static void mstore_sync_expunge_seq(struct mstore_sync_ctx *ctx, uint32_t seq)
{
	uint32_t uid;

	mail_index_lookup_uid(ctx->sync_view, seq, &uid);
	mail_index_expunge(ctx->trans, seq);
	mailbox_sync_notify(ctx->box, uid, MAILBOX_SYNC_TYPE_EXPUNGE);
	ctx->expunged_any = TRUE;
}

static void mstore_sync_update_existing(struct mstore_sync_ctx *ctx,
					uint32_t seq,
					const struct mstore_msg *msg)
{
	const struct mail_index_record *rec =
		mail_index_lookup(ctx->sync_view, seq);
	enum mail_flags flags = mstore_flags_from_store(msg->flags);

	if ((rec->flags & MAIL_FLAGS_NONRECENT) != flags) {
		mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
					flags);
	}
	mstore_sync_update_keywords(ctx, seq, msg->keywords);
	if (msg->modseq != 0 && !ctx->reset)
		mail_index_update_modseq(ctx->trans, seq, msg->modseq);
	if (msg->have_rec) {
		const void *data;
		bool expunged;
		mail_index_lookup_ext(ctx->sync_view, seq,
				      ctx->mbox->rec_ext_id, &data, &expunged);
		if (data == NULL ||
		    memcmp(data, &msg->rec, sizeof(msg->rec)) != 0)
			mail_index_update_ext(ctx->trans, seq,
					      ctx->mbox->rec_ext_id,
					      &msg->rec, NULL);
	}
}

static void mstore_sync_append(struct mstore_sync_ctx *ctx,
			       const struct mstore_msg *msg)
{
	struct mail_keywords *kw;
	uint32_t seq;

	mail_index_append(ctx->trans, msg->uid, &seq);
	/* arrived since this index last saw the mailbox, and this session
	   is the first to see it: \Recent here (the commit's DROP_RECENT
	   takes it from the others).  Not a rebuilt index's messages: the
	   cache of a mailbox is not new mail. */
	if (ctx->drop_recent && !ctx->fresh && !ctx->reset)
		mailbox_recent_flags_set_uid(ctx->box, msg->uid);
	mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
				mstore_flags_from_store(msg->flags));
	if (msg->keywords[0] != NULL) {
		kw = mail_index_keywords_create(ctx->box->index,
						msg->keywords);
		mail_index_update_keywords(ctx->trans, seq, MODIFY_REPLACE,
					   kw);
		mail_index_keywords_unref(&kw);
	}
	mail_index_update_ext(ctx->trans, seq, ctx->mbox->rec_ext_id,
			      &msg->rec, NULL);
	if (ctx->fresh) {
		/* a new index (a lost one rebuilt): every message "changed"
		   at the store's HIGHESTMODSEQ, which is not below any
		   MODSEQ the lost index gave out */
		mail_index_update_modseq(ctx->trans, seq, ctx->highestmodseq);
	} else if (msg->modseq != 0 && !ctx->reset) {
		mail_index_update_modseq(ctx->trans, seq, msg->modseq);
	}
}

/* FALSE if a store uid below next_uid is missing from the index: the
   index cannot take it any more, so it must be reset.  Checked before
   anything is changed. */
static bool mstore_sync_full_fits(struct mstore_sync_ctx *ctx)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	const struct mstore_msg *msg;
	uint32_t seq;

	array_foreach(&ctx->msgs, msg) {
		if (msg->uid >= hdr->next_uid)
			break;
		if (!mail_index_lookup_seq(ctx->sync_view, msg->uid, &seq))
			return FALSE;
	}
	return TRUE;
}

static void mstore_sync_apply(struct mstore_sync_ctx *ctx)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	uint32_t next_uid = ctx->reset ? 1 : hdr->next_uid;
	uint32_t new_next_uid = next_uid;
	const struct mstore_msg *msgs;
	unsigned int count, i;
	uint32_t seq, seq1, seq2;

	msgs = array_get(&ctx->msgs, &count);

	/* expunges first: those the feed names, or in a full pull every
	   message of the index that the store does not have */
	if (!ctx->reset) {
		const struct ms_uid_range *r;
		array_foreach(&ctx->expunged, r) {
			if (r->hi != UINT32_MAX && r->hi >= new_next_uid)
				new_next_uid = r->hi + 1;
			if (!mail_index_lookup_seq_range(ctx->sync_view,
							 r->lo, r->hi,
							 &seq1, &seq2))
				continue;
			for (seq = seq1; seq <= seq2; seq++)
				mstore_sync_expunge_seq(ctx, seq);
		}
	}
	if (ctx->full && !ctx->reset) {
		uint32_t nseq = mail_index_view_get_messages_count(
			ctx->sync_view);
		i = 0;
		for (seq = 1; seq <= nseq; seq++) {
			uint32_t uid;
			mail_index_lookup_uid(ctx->sync_view, seq, &uid);
			while (i < count && msgs[i].uid < uid)
				i++;
			if (i < count && msgs[i].uid == uid)
				continue;
			mstore_sync_expunge_seq(ctx, seq);
		}
	}

	for (i = 0; i < count; i++) {
		if (msgs[i].uid < next_uid) {
			if (mail_index_lookup_seq(ctx->sync_view, msgs[i].uid,
						  &seq))
				mstore_sync_update_existing(ctx, seq,
							    &msgs[i]);
			continue;
		}
		if (!msgs[i].have_rec) {
			/* gone before its metadata could be read (or the
			   store did not say): append nothing past it, and
			   read this part of the feed again next time, when
			   the store lists it as expunged */
			ctx->incomplete = TRUE;
			break;
		}
		mstore_sync_append(ctx, &msgs[i]);
		new_next_uid = msgs[i].uid + 1;
	}
	/* Dovecot's MODSEQs follow the store's: a message's is at least the
	   store's, HIGHESTMODSEQ at least the store's; where Dovecot's
	   own count gets ahead, the store's is raised after the commit
	   (mstore_sync_modseq_catch_up), so that a rebuilt index, which
	   starts at the store's HIGHESTMODSEQ, is not below the lost one */
	if (!ctx->incomplete && !ctx->reset &&
	    ctx->highestmodseq >
		    mail_index_modseq_get_highest(ctx->sync_view)) {
		/* only when it moves: the update is a record in the index
		   log even when it changes nothing, and most syncs (every
		   SELECT, NOOP, ...) find nothing new */
		mail_index_update_highest_modseq(ctx->trans,
						 ctx->highestmodseq);
	}
	if (ctx->full && ctx->uidnext > new_next_uid)
		new_next_uid = ctx->uidnext;
	if (new_next_uid > next_uid) {
		/* UIDs the store used for messages already gone */
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, next_uid),
			&new_next_uid, sizeof(new_next_uid), FALSE);
	}
}

static void mstore_sync_write_header(struct mstore_sync_ctx *ctx)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	struct mstore_index_header new_hdr;

	if (ctx->reset || hdr->uid_validity != ctx->uid_validity) {
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, uid_validity),
			&ctx->uid_validity, sizeof(ctx->uid_validity), TRUE);
	}
	i_zero(&new_hdr);
	new_hdr.mbox_id = ctx->mbox_id;
	new_hdr.last_modseq = ctx->incomplete ? ctx->ext_hdr.last_modseq :
		ctx->highestmodseq;
	if (ctx->reset ||
	    memcmp(&new_hdr, &ctx->ext_hdr, sizeof(new_hdr)) != 0)
		mail_index_update_header_ext(ctx->trans, ctx->mbox->hdr_ext_id,
					     0, &new_hdr, sizeof(new_hdr));
	if (ctx->chg.epoch != 0 && !ctx->incomplete) {
		/* the count as of which the index has all of the store's
		   mailbox (mstore_sync_ask_first); written only when it
		   moves: the update is a record in the log */
		struct mstore_chg old;
		(void)mstore_index_ext_get(ctx->sync_view,
					   ctx->mbox->chg_ext_id, &old,
					   sizeof(old));
		if (ctx->reset || memcmp(&old, &ctx->chg, sizeof(old)) != 0)
			mail_index_update_header_ext(ctx->trans,
				ctx->mbox->chg_ext_id, 0, &ctx->chg,
				sizeof(ctx->chg));
		ctx->mbox->verified = ctx->chg;
	}
	if (ctx->expunged_any && ctx->box->vsize_hdr_ext_id != 0) {
		/* the mailbox's vsize summary no longer adds up: drop it,
		   Dovecot recounts it when asked */
		struct mailbox_index_vsize vsize_hdr;
		const void *data;
		size_t size;
		mail_index_get_header_ext(ctx->sync_view,
					  ctx->box->vsize_hdr_ext_id,
					  &data, &size);
		if (size == sizeof(vsize_hdr)) {
			i_zero(&vsize_hdr);
			mail_index_update_header_ext(ctx->trans,
				ctx->box->vsize_hdr_ext_id, 0,
				&vsize_hdr, sizeof(vsize_hdr));
		}
	}
	ctx->mbox->mbox_id = ctx->mbox_id;
}

/*
 * Keep the mailbox GUID cached in "mstore-guid" (the mailbox list index
 * asks for it at every SELECT): the one this process set or read, else
 * the store's, asked once per mailbox (an MBOX_UPDATE that changes
 * nothing).  The first write introduces the extension, which Dovecot
 * applies to a whole copy of the records at each open until
 * dovecot.index is written again: have this sync's commit write it.
 */
static void mstore_sync_guid(struct mstore_sync_ctx *ctx)
{
	struct mstore_mailbox *mbox = ctx->mbox;
	struct mstore_index_guid g;

	if (ctx->mbox_id == 0)
		return;
	bool have = mstore_index_ext_get(ctx->sync_view, mbox->guid_ext_id,
					 &g, sizeof(g));
	if (mbox->have_guid && mbox->guid_mbox_id == ctx->mbox_id) {
		if (!ctx->reset && g.mbox_id == ctx->mbox_id &&
		    memcmp(g.guid, mbox->guid, sizeof(g.guid)) == 0)
			return;
	} else if (!ctx->reset && g.mbox_id == ctx->mbox_id &&
		   !guid_128_is_empty(g.guid)) {
		return; /* cached */
	} else {
		struct ms_req q = { .op = MS_OP_MBOX_UPDATE };
		struct ms_reply rep;
		q.u.mbox_update.name = ms_pstr_c(ctx->name);
		/* a cache: without it the GUID is asked for when wanted */
		if (mstore_request_status(mbox->storage, &q, &rep) != 0 ||
		    rep.u.mbox_update.mbox.mbox_id != ctx->mbox_id)
			return;
		mstore_mailbox_guid_from(mbox, &rep);
	}
	/* a GUID that replaces another: Dovecot's mailbox list index has
	   the old one too (doveadm mailbox status guid answers from it) */
	if (!guid_128_is_empty(g.guid) &&
	    memcmp(g.guid, mbox->guid, sizeof(g.guid)) != 0)
		mbox->list_guid_stale = TRUE;
	g.mbox_id = ctx->mbox_id;
	memcpy(g.guid, mbox->guid, sizeof(g.guid));
	mail_index_update_header_ext(ctx->trans, mbox->guid_ext_id, 0, &g,
				     sizeof(g));
	if (!have && ctx->box->index->need_recreate == NULL) {
		ctx->box->index->need_recreate =
			i_strdup("mstore: new extension mstore-guid");
	}
}

static int mstore_sync_pull(struct mstore_sync_ctx *ctx, bool full)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	int ret;

	ctx->fresh = hdr->uid_validity == 0;
	if (full || hdr->uid_validity == 0 || ctx->ext_hdr.mbox_id == 0) {
		full = TRUE;
	} else if (ctx->pushed && ctx->push_alone) {
		/* the store changed by this push alone, which the index
		   already has: its feed would bring back only our own
		   changes (for a STORE of 5,000 messages, 5,000 of them).
		   The count that goes with that is the last reply's, when
		   the replies' counts chain from the index's (a count read
		   from the watch may be of a change after the push) */
		ctx->pre = NULL;
		i_zero(&ctx->chg);
		if (ctx->push_chg_ok &&
		    ctx->push_chg.epoch == ctx->mbox->storage->chg_epoch)
			ctx->chg = ctx->push_chg;
		ctx->uid_validity = hdr->uid_validity;
		ctx->highestmodseq = ctx->push_modseq;
		ctx->mbox_id = ctx->ext_hdr.mbox_id;
		array_append_array(&ctx->expunged, &ctx->push_expunged);
	} else if ((ret = mstore_sync_read_changes(ctx, hdr->next_uid)) < 0) {
		return -1;
	} else if (ret == 0) {
		full = TRUE;
	}
	if (full && mstore_sync_read_full(ctx) < 0)
		return -1;
	if (hdr->uid_validity != 0 &&
	    (hdr->uid_validity != ctx->uid_validity ||
	     (ctx->ext_hdr.mbox_id != 0 &&
	      ctx->mbox_id != ctx->ext_hdr.mbox_id))) {
		/* the store's mailbox of this name is another one now */
		ctx->reset = TRUE;
		mail_index_reset(ctx->trans);
		mailbox_recent_flags_reset(ctx->box);
	}
	if (ctx->full && !ctx->reset && !mstore_sync_full_fits(ctx)) {
		e_warning(ctx->box->event, "mstore: index lacks messages "
			  "that the store has; rebuilding it");
		ctx->reset = TRUE;
		mail_index_reset(ctx->trans);
		mailbox_recent_flags_reset(ctx->box);
	}
	mstore_sync_apply(ctx);
	if (ctx->fresh || ctx->reset) {
		/* what a new or rebuilt index took in is no one's recent
		   mail: the first SELECT after an index loss does not see
		   the whole mailbox as \Recent */
		uint32_t next = mail_index_transaction_get_next_uid(ctx->trans);
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&next, sizeof(next), FALSE);
	}
	mstore_sync_write_header(ctx);
	mstore_sync_guid(ctx);
	return 0;
}

/*
 * Give the mailbox a dovecot.index.cache if it has none.  Without the
 * file every cache lookup tries to open it, an open() that fails: one
 * per message for a FETCH BODY[] (Dovecot looks up the cached NUL state
 * of each mail it streams), whatever the record extension answers.
 * With it, a lookup that finds nothing costs no system call, as in
 * Dovecot's own formats, and what Dovecot decides to cache (headers,
 * BODYSTRUCTURE) goes there.  Created here, under the sync lock, before
 * the pull adds messages: for a new index the file starts empty, and an
 * existing index (whose file was never made, or was deleted as
 * corrupted) gets it once.  A failure is Dovecot's to log; the lookups
 * then go on as without the file.
 * The fields the settings ask to cache (mail_cache_fields: flags) are
 * registered as never used; written so, the first read of the file's
 * header takes them for fields unused for a month and purges the file
 * again to drop them.  They are written as used now, as Dovecot marks
 * a field it starts caching.
 */
static void mstore_sync_cache_file(struct mstore_sync_ctx *ctx)
{
	struct mail_cache *cache = ctx->box->cache;

	if (cache == NULL || ctx->box->index->readonly ||
	    mail_cache_open_and_verify(cache) != 0)
		return;
	for (unsigned int i = 0; i < cache->fields_count; i++) {
		struct mail_cache_field *f = &cache->fields[i].field;
		if ((f->decision & ENUM_NEGATE(MAIL_CACHE_DECISION_FORCED)) !=
		    MAIL_CACHE_DECISION_NO && f->last_used == 0)
			f->last_used = ioloop_time;
	}
	(void)mail_cache_purge_with_trans(cache, ctx->trans, 0,
					  "mstore: no cache file yet");
}

static int mstore_sync_locked(struct mstore_sync_ctx *ctx, bool full)
{

	(void)mstore_index_ext_get(ctx->sync_view, ctx->mbox->hdr_ext_id,
				   &ctx->ext_hdr, sizeof(ctx->ext_hdr));
	if (ctx->mbox->deleted) {
		mstore_sync_local_only(ctx);
		return 0;
	}
	mstore_sync_cache_file(ctx);
	if (mstore_sync_push(ctx) < 0)
		return -1;
	return mstore_sync_pull(ctx, full || ctx->refused ||
				     ctx->other_mailbox);
}

/*
 * Whether dovecot.index, as last read or written, has a modseq header
 * behind its own log position.  Dovecot then walks every record's
 * modseq at each open of the index (mail_index_modseq_sync_init, 0.5 ms
 * per 100,000 messages), until dovecot.index is written again.  It
 * happens after each rotation of dovecot.index.log: the rotation writes
 * dovecot.index pointing at the new .log's start, its modseq header
 * still at the old .log's end (the same point, compared as older).
 */
static bool mstore_index_modseq_lags(struct mail_index *index)
{
	const struct mail_index_modseq_header *m;

	if (index->map == NULL || index->main_index_hdr_log_file_seq == 0)
		return FALSE;
	m = &index->map->modseq_hdr_snapshot;
	if (m->log_seq == 0)
		return FALSE; /* no modseq header in the file yet */
	return m->log_seq < index->main_index_hdr_log_file_seq ||
	       (m->log_seq == index->main_index_hdr_log_file_seq &&
		m->log_offset < index->main_index_hdr_log_file_tail_offset);
}

/*
 * Ask the store for CHANGES before locking the index (not in a commit's
 * sync: it locks to push anyway, and the replies to its pushes say
 * whether anything else changed the mailbox, mstore_sync_push_reply).
 * Most syncs (every command's, every SELECT of a mailbox nobody touched)
 * find nothing new; then the sync needs the lock only if Dovecot has work
 * of its own (changes to push, \Recent to take, dirty flags, an index to
 * rewrite), which mail_index_sync_begin() with
 * MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES finds out.  Whatever the answer, the locked sync uses it instead of
 * asking again, if its index is still at the same modseq.  1: the store
 * has nothing new for the index; 0: the locked sync is to see (a change,
 * a store error such as MS_ESTATE, or nothing asked); -1: the store
 * could not be reached (logged: the locked sync would only log it again).
 *
 * A mailbox's open asks MBOX_STATUS before it opens the index
 * (mstore_status_ahead), and its first sync asks nothing more when the
 * store's mailbox is the one the index has (same mailbox id and
 * UIDVALIDITY) at the modseq it has seen: the round trip overlapped the
 * index's open.  Otherwise the locked sync asks CHANGES.
 */
static int mstore_sync_ask_first(struct mstore_sync_ctx *ctx,
				 struct ms_reply *rep)
{
	struct mstore_mailbox *mbox = ctx->mbox;
	struct mail_index *index = ctx->box->index;
	struct mail_index_view *view;
	struct mstore_index_header ext;
	struct mstore_index_guid g;
	struct mstore_chg chg;
	bool ahead = mstore_status_ahead_take(mbox);
	bool fresh = mbox->index_fresh;
	/* the open that called this refreshed the count a moment ago, with
	   no command read in between */
	bool refreshed = fresh && mbox->chg_refreshed;

	mbox->index_fresh = FALSE;
	mbox->chg_refreshed = FALSE;
	if (mbox->deleted || mstore_index_modseq_lags(index) ||
	    (!fresh && mail_index_refresh(index) < 0))
		return 0;
	view = mail_index_view_open(index);
	uint32_t uidv = mail_index_get_header(view)->uid_validity;
	(void)mstore_index_ext_get(view, mbox->hdr_ext_id, &ext, sizeof(ext));
	(void)mstore_index_ext_get(view, mbox->guid_ext_id, &g, sizeof(g));
	(void)mstore_index_ext_get(view, mbox->chg_ext_id, &chg, sizeof(chg));
	mail_index_view_close(&view);
	/* a new or rebuilt index, or a GUID to cache: the locked sync
	   asks for more than CHANGES */
	if (uidv == 0 || ext.mbox_id == 0 || g.mbox_id != ext.mbox_id ||
	    guid_128_is_empty(g.guid))
		return 0;
	/* nothing of the user changed since the index (or this process)
	   last found the store with nothing it lacks: nothing to ask */
	if (!ahead && (refreshed || mstore_chg_refresh(mbox->storage)) &&
	    (mstore_chg_current(mbox->storage, &chg, ext.mbox_id) ||
	     mstore_chg_current(mbox->storage, &mbox->verified,
				ext.mbox_id)))
		return 1;
	if (!ahead && fresh) {
		/* an open, with no MBOX_STATUS sent ahead (the count was
		   to tell): ask it now; CHANGES goes by name and would not
		   see the mailbox replaced by another of the same name */
		struct ms_req sq = { .op = MS_OP_MBOX_STATUS };
		sq.u.mbox.name = ms_pstr_c(ctx->name);
		int status = mstore_request_status(mbox->storage, &sq, rep);
		if (status == -1)
			return -1;
		if (status != 0)
			return 0;
		ahead = TRUE;
		mbox->ahead_mbox_id = rep->u.mbox.mbox_id;
		mbox->ahead_uidvalidity = rep->u.mbox.uidvalidity;
		mbox->ahead_highestmodseq = rep->u.mbox.highestmodseq;
	}
	if (ahead) {
		if (mbox->ahead_mbox_id != ext.mbox_id) {
			ctx->other_mailbox = TRUE;
			return 0;
		}
		if (mbox->ahead_uidvalidity != uidv ||
		    mbox->ahead_highestmodseq != ext.last_modseq)
			return 0;
		(void)mstore_chg_snapshot(mbox->storage, &mbox->verified);
		return 1;
	}

	struct ms_req q = { .op = MS_OP_CHANGES };
	q.u.changes.mailbox = ms_pstr_c(ctx->name);
	q.u.changes.since_modseq = ext.last_modseq;
	int status = mstore_request_status(mbox->storage, &q, rep);
	if (status == -1)
		return -1;
	if (status != 0)
		return 0; /* the locked sync asks again, and deals with it */
	ctx->pre = rep;
	ctx->pre_since = ext.last_modseq;
	ctx->pre_seq = mbox->storage->req_seq;
	(void)mstore_chg_snapshot(mbox->storage, &ctx->pre_chg);
	if (rep->u.changes.uidvalidity != uidv ||
	    rep->u.changes.highestmodseq != ext.last_modseq ||
	    rep->u.changes.changes.n != 0 || rep->u.changes.expunged.n != 0)
		return 0;
	mbox->verified = ctx->pre_chg;
	return 1;
}

/*
 * Dovecot counts its own MODSEQs, and some changes count more there than
 * in the store: an IMAP EXPUNGE of one message raised the index's
 * HIGHESTMODSEQ by two and the store's by one.  An index that got ahead this way would,
 * lost and rebuilt at the store's HIGHESTMODSEQ, go back.  So when the
 * commit left the index's HIGHESTMODSEQ above the store's, the store's
 * is raised to it (MBOX_UPDATE: it only raises; the next change there
 * gets a higher one).
 */
static int mstore_sync_modseq_catch_up(struct mstore_sync_ctx *ctx)
{
	struct mail_index_view *view = mail_index_view_open(ctx->box->index);
	uint64_t ours = mail_index_modseq_get_highest(view);
	struct ms_req q = { .op = MS_OP_MBOX_UPDATE };
	struct ms_reply rep;
	int status;

	mail_index_view_close(&view);
	if (ours <= ctx->highestmodseq ||
	    mstore_storage_is_standby(ctx->mbox->storage))
		return 0;
	T_BEGIN {
		q.u.mbox_update.name = ms_pstr_c(mstore_box_store_name(ctx->box));
		q.u.mbox_update.highestmodseq = ours;
		status = mstore_request_status(ctx->mbox->storage, &q, &rep);
	} T_END;
	if (status < -1)
		mstore_set_store_error(ctx->mbox->storage, status,
				       "MBOX_UPDATE");
	return status < 0 ? -1 : 0;
}

/*
 * What mail_index_sync_begin() with MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES
 * looks at to decide there is nothing to sync (its mail_index_need_sync()
 * and the checks after it), on the map as it is: \Recent to take, dirty
 * flags to flush, transactions in the log past the index's tail, a
 * rewrite or a cache purge due, a deleted index.  Called right after the
 * map was read from the files (an open) or refreshed (the ask), so that
 * mapping again, as mail_index_sync_begin() would, finds nothing more.
 */
static bool mstore_index_has_work(struct mail_index *index,
				  enum mail_index_sync_flags flags)
{
	const struct mail_index_header *hdr;
	const char *reason;
	uint32_t log_seq;
	uoff_t log_offset;

	if (index->map == NULL || index->index_deleted ||
	    index->need_recreate != NULL)
		return TRUE;
	hdr = &index->map->hdr;
	if (hdr->first_recent_uid < hdr->next_uid &&
	    (flags & MAIL_INDEX_SYNC_FLAG_DROP_RECENT) != 0)
		return TRUE;
	if ((hdr->flags & MAIL_INDEX_HDR_FLAG_HAVE_DIRTY) != 0 &&
	    (flags & MAIL_INDEX_SYNC_FLAG_FLUSH_DIRTY) != 0 &&
	    (index->flags & MAIL_INDEX_OPEN_FLAG_NO_DIRTY) == 0)
		return TRUE;
	mail_transaction_log_get_head(index->log, &log_seq, &log_offset);
	if ((hdr->log_file_tail_offset < log_offset &&
	     hdr->log_file_seq == log_seq) || hdr->log_file_seq < log_seq)
		return TRUE;
	return index->cache != NULL &&
	       mail_cache_need_purge(index->cache, &reason);
}

int mstore_sync(struct mstore_mailbox *mbox, enum mstore_sync_flags sflags)
{
	struct mailbox *box = &mbox->box;
	struct mstore_sync_ctx ctx;
	enum mail_index_sync_flags flags;
	bool full = (sflags & MSTORE_SYNC_FULL) != 0;
	struct ms_reply pre;
	int ret;

	i_zero(&ctx);
	ctx.mbox = mbox;
	ctx.box = box;
	flags = index_storage_get_sync_flags(box) |
		MAIL_INDEX_SYNC_FLAG_FLUSH_DIRTY |
		MAIL_INDEX_SYNC_FLAG_AVOID_FLAG_UPDATES;
	if ((sflags & MSTORE_SYNC_KEEP_RECENT) != 0)
		flags &= ENUM_NEGATE(MAIL_INDEX_SYNC_FLAG_DROP_RECENT);
	if (!full && !mbox->committing) {
		int asked;
		T_BEGIN {
			ctx.name = mstore_box_store_name(box);
			asked = mstore_sync_ask_first(&ctx, &pre);
		} T_END;
		if (asked < 0)
			return -1;
		if (asked > 0)
			flags |= MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES;
	}
	if ((flags & MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES) != 0 &&
	    !mstore_index_has_work(box->index, flags)) {
		/* the store has nothing new, and the index, just mapped
		   (opened, or refreshed by the ask), nothing of Dovecot's:
		   mail_index_sync_begin() would map it again to find that */
		return 0;
	}
	ret = mail_index_sync_begin(box->index, &ctx.index_sync_ctx,
				    &ctx.sync_view, &ctx.trans, flags);
	if (ret <= 0) {
		if (ret < 0)
			mailbox_set_index_error(box);
		return ret;
	}
	box->tmp_sync_view = ctx.sync_view;
	mbox->syncing = TRUE;
	if ((flags & MAIL_INDEX_SYNC_FLAG_DROP_RECENT) != 0) {
		/* the index's messages no session has taken as \Recent yet
		   (pulled by a process that did not SELECT: a STATUS, an
		   APPEND's sync, doveadm) are this session's, as in sdbox;
		   those this sync pulls too (mstore_sync_append) */
		const struct mail_index_header *hdr =
			mail_index_get_header(ctx.sync_view);
		uint32_t seq1, seq2;
		if (mail_index_lookup_seq_range(ctx.sync_view,
						hdr->first_recent_uid,
						hdr->next_uid, &seq1, &seq2))
			mailbox_recent_flags_set_seqs(box, ctx.sync_view,
						      seq1, seq2);
		ctx.drop_recent = TRUE;
	}
	/* the messages read from the store on the heap, not the data
	   stack: a first read of a mailbox holds them all (88 bytes each),
	   and the data stack's blocks double as they grow and are not given
	   back until the frame ends (a 514,000-message folder asked it for
	   a 128 MB block beyond Dovecot's 256M vsz_limit) */
	i_array_init(&ctx.msgs, 64);
	i_array_init(&ctx.expunged, 8);
	i_array_init(&ctx.push_expunged, 8);
	T_BEGIN {
		ctx.name = mstore_box_store_name(box);
		ret = mstore_sync_locked(&ctx, full);
	} T_END;
	array_free(&ctx.msgs);
	array_free(&ctx.expunged);
	array_free(&ctx.push_expunged);
	mbox->syncing = FALSE;
	if (ret < 0) {
		mail_index_sync_rollback(&ctx.index_sync_ctx);
		box->tmp_sync_view = NULL;
		return -1;
	}
	uint32_t file_seq = box->index->main_index_hdr_log_file_seq;
	uint32_t file_tail = box->index->main_index_hdr_log_file_tail_offset;
	if (mstore_index_modseq_lags(box->index)) {
		/* have this commit write dovecot.index: with a record in
		   the log first, so that the modseq header it writes has
		   moved past the index's log position */
		mail_index_update_highest_modseq(ctx.trans,
			mail_index_modseq_get_highest(ctx.sync_view));
		if (box->index->need_recreate == NULL) {
			box->index->need_recreate = i_strdup(
				"mstore: the modseq header lags the log");
		}
	}
	if (mail_index_sync_commit(&ctx.index_sync_ctx) < 0) {
		mailbox_set_index_error(box);
		ret = -1;
	} else if (ctx.refused) {
		/* in sync with the store again, but the change was not
		   made: the command that asked for it fails */
		mstore_set_store_error(mbox->storage, -EROFS, "STORE");
		ret = -1;
	}
	if (box->index->map != NULL &&
	    (box->index->main_index_hdr_log_file_seq != file_seq ||
	     box->index->main_index_hdr_log_file_tail_offset != file_tail)) {
		/* the commit wrote dovecot.index: with the modseq header
		   the map has now */
		mail_index_modseq_hdr_snapshot_update(box->index->map);
	}
	mailbox_sync_notify(box, 0, 0);
	box->tmp_sync_view = NULL;
	if (ret == 0 && ctx.highestmodseq != 0 && !ctx.incomplete &&
	    !ctx.reset && !ctx.refused)
		ret = mstore_sync_modseq_catch_up(&ctx);
	return ret < 0 ? -1 : 1;
}

void mstore_sync_view_refresh(struct mailbox *box)
{
	struct mail_index_view_sync_ctx *vctx;
	bool delayed_expunges;

	vctx = mail_index_view_sync_begin(box->view,
		MAIL_INDEX_VIEW_SYNC_FLAG_FIX_INCONSISTENT);
	if (mail_index_view_sync_commit(&vctx, &delayed_expunges) < 0)
		mailbox_set_index_error(box);
}

/*
 * Whether the change counts say the store changed this mailbox since the
 * index (or this process) last found it complete, without a request:
 * the watch's pushed counts, read from the socket.  FALSE when they
 * cannot tell (no count in the index, another epoch).
 */
static bool mstore_sync_store_moved(struct mstore_mailbox *mbox)
{
	struct mstore_storage *storage = mbox->storage;
	struct mstore_index_header ext;
	struct mstore_chg chg;

	if (mbox->deleted || mbox->box.view == NULL ||
	    !mstore_chg_refresh(storage))
		return FALSE;
	i_zero(&ext);
	i_zero(&chg);
	(void)mstore_index_ext_get(mbox->box.view, mbox->hdr_ext_id, &ext,
				   sizeof(ext));
	(void)mstore_index_ext_get(mbox->box.view, mbox->chg_ext_id, &chg,
				   sizeof(chg));
	if (ext.mbox_id == 0 || chg.epoch == 0 ||
	    chg.epoch != storage->chg_epoch)
		return FALSE;
	return !mstore_chg_current(storage, &chg, ext.mbox_id) &&
	       !mstore_chg_current(storage, &mbox->verified, ext.mbox_id);
}

struct mailbox_sync_context *
mstore_mailbox_sync_init(struct mailbox *box, enum mailbox_sync_flags flags)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);
	bool force = (flags & MAILBOX_SYNC_FLAG_FORCE_RESYNC) != 0;
	bool want = index_mailbox_want_full_sync(box, flags);
	int ret = 0;

	/* the open that just pulled from the store (in this same ioloop
	   run: a SELECT opens, then syncs) stands for this sync, unless
	   there are changes to push */
	if (want && mbox->synced_at_open &&
	    timeval_cmp(&mbox->synced_at, &ioloop_timeval) == 0)
		want = FALSE;
	mbox->synced_at_open = FALSE;
	/* a FAST sync (the one after FETCH, STORE, SEARCH, STATUS of the
	   selected folder) within Dovecot's 5 s of the last full one: what
	   other processes wrote to the index Dovecot shows anyway; what
	   reached the store by other ways (mstore-lmtpd, another host, a
	   Dovecot LMTP save, which adds nothing to the index) is pulled when
	   the counts say there is some, so that it shows at the next
	   command, as on Dovecot's own formats.  It takes no \Recent, as
	   theirs do not sync their storage then: the next full sync does.
	   Our own saves' sync takes them, as theirs does. */
	bool fast = !want && !force && !mbox->pending_saves;
	if (fast && mstore_sync_store_moved(mbox))
		want = TRUE;
	if (force || mbox->pending_saves || want ||
	    mail_index_sync_have_any(box->index, 0)) {
		mbox->pending_saves = FALSE;
		ret = mstore_sync(mbox, (force ? MSTORE_SYNC_FULL : 0) |
				  (fast ? MSTORE_SYNC_KEEP_RECENT : 0));
	}
	return index_mailbox_sync_init(box, flags, ret < 0);
}

/* ---- IDLE ---- */

struct mstore_idle {
	struct mstore_mailbox *mbox;
	struct ms_client *client;
	struct io *io;
	struct timeout *to_retry;
	uint64_t known;
	uint32_t wait_id;
};

static void mstore_idle_start(struct mstore_mailbox *mbox);

static void mstore_idle_close(struct mstore_idle *idle)
{
	io_remove(&idle->io);
	timeout_remove(&idle->to_retry);
	ms_client_close(&idle->client);
}

void mstore_idle_stop(struct mstore_mailbox *mbox)
{
	struct mstore_idle *idle = mbox->idle;

	if (idle == NULL)
		return;
	mstore_idle_close(idle);
	mbox->idle = NULL;
	i_free(idle);
}

static uint64_t mstore_idle_known_modseq(struct mstore_mailbox *mbox)
{
	struct mstore_index_header h;
	struct mail_index_view *view;

	/* the newest the index knows, not only this session's view: a
	   store change that another process already synced needs no
	   wake-up for it, one that none synced does */
	(void)mail_index_refresh(mbox->box.index);
	view = mail_index_view_open(mbox->box.index);
	(void)mstore_index_ext_get(view, mbox->hdr_ext_id, &h, sizeof(h));
	mail_index_view_close(&view);
	return h.last_modseq;
}

static int mstore_idle_send_wait(struct mstore_idle *idle,
				 const char **error_r)
{
	struct ms_req q = { .op = MS_OP_WAIT };
	const char *error = "";
	int ret;

	q.u.wait.mailbox = ms_pstr_c(mstore_box_store_name(&idle->mbox->box));
	q.u.wait.known_modseq = idle->known;
	q.u.wait.timeout_ms = MSTORE_WAIT_MSECS;
	ret = ms_client_send_req(idle->client, &q, &idle->wait_id, &error);
	if (ret < 0) {
		*error_r = t_strdup_printf("sending WAIT: %s (%s)", error,
					   ms_strerror(ret));
	}
	return ret;
}

static void mstore_idle_retry(struct mstore_mailbox *mbox)
{
	struct mstore_idle *idle = mbox->idle;

	timeout_remove(&idle->to_retry);
	mstore_idle_stop(mbox);
	mstore_idle_start(mbox);
}

/* The store is away (a restart, an outage): try again later, 1 s after
   the first failure and doubling to 10 s, a quarter of it at random so
   that the sessions of a restarted store do not all come at once.  IDLE
   goes on meanwhile (Dovecot still checks every
   mailbox_idle_check_interval).  The first failure of an outage is a
   warning, the retries that fail after it are not logged. */
static void mstore_idle_away(struct mstore_idle *idle, const char *what,
			     const char *error)
{
	struct mstore_mailbox *mbox = idle->mbox;

	if (mbox->idle_retries == 0) {
		e_warning(mbox->box.event, "mstore: IDLE %s: %s; "
			  "reconnecting in the background", what, error);
	} else {
		e_debug(mbox->box.event, "mstore: IDLE %s (retry %u): %s",
			what, mbox->idle_retries, error);
	}
	unsigned int delay = 1000U << I_MIN(mbox->idle_retries, 4U);
	if (delay > 10000)
		delay = 10000;
	delay += i_rand_limit(delay / 4 + 1);
	mbox->idle_retries++;
	io_remove(&idle->io);
	ms_client_close(&idle->client);
	if (idle->to_retry == NULL)
		idle->to_retry = timeout_add(delay, mstore_idle_retry, mbox);
}

/* The store answered what it should not: an error, and retried like an
   outage (a store that was replaced may answer right again). */
static void mstore_idle_bad(struct mstore_idle *idle, const char *error,
			    int ret)
{
	struct mstore_mailbox *mbox = idle->mbox;

	e_error(mbox->box.event, "mstore: IDLE wait: %s (%s)", error,
		ms_strerror(ret));
	/* logged already: the retry's first failure is not warned about */
	if (mbox->idle_retries == 0)
		mbox->idle_retries = 1;
	mstore_idle_away(idle, "wait", error);
}

static void mstore_idle_input(struct mstore_mailbox *mbox)
{
	struct mstore_idle *idle = mbox->idle;
	struct mailbox *box = &mbox->box;
	struct ms_proto_hdr h;
	struct ms_reply rep;
	const uint8_t *body;
	size_t len;
	const char *error = "";
	int ret;

	ret = ms_client_recv(idle->client, &h, &body, &len, &error);
	if (ret < 0) {
		/* the connection went (mstored stopped or restarted) */
		mstore_idle_away(idle, "lost the store connection",
				 t_strdup_printf("%s (%s)", error,
						 ms_strerror(ret)));
		return;
	}
	ret = ms_reply_decode(h.op, body, len, &rep, &error);
	if (ret == 0 && (h.id != idle->wait_id || rep.op != MS_OP_WAIT)) {
		ret = MS_ECORRUPT;
		error = "unexpected reply";
	}
	if (ret == 0 && rep.status < 0) {
		ret = rep.status;
		error = "the store refused WAIT";
	}
	if (ret < 0) {
		mstore_idle_bad(idle, error, ret);
		return;
	}
	bool changed = rep.u.highestmodseq != idle->known;
	idle->known = rep.u.highestmodseq;
	if (mstore_idle_send_wait(idle, &error) < 0)
		mstore_idle_away(idle, "lost the store connection", error);
	if (changed && box->notify_callback != NULL)
		box->notify_callback(box, box->notify_context);
}

static void mstore_idle_start(struct mstore_mailbox *mbox)
{
	struct mstore_idle *idle;
	const char *error;

	idle = i_new(struct mstore_idle, 1);
	idle->mbox = mbox;
	mbox->idle = idle;
	idle->known = mstore_idle_known_modseq(mbox);
	idle->client = mstore_client_open_extra(mbox->storage, &error);
	if (idle->client == NULL) {
		mstore_idle_away(idle, "cannot reach the store", error);
		return;
	}
	if (mstore_idle_send_wait(idle, &error) < 0) {
		mstore_idle_away(idle, "lost the store connection", error);
		return;
	}
	if (mbox->idle_retries > 0) {
		e_info(mbox->box.event, "mstore: IDLE reconnected to the "
		       "store after %u retries", mbox->idle_retries);
		mbox->idle_retries = 0;
	}
	idle->io = io_add(ms_client_fd(idle->client), IO_READ,
			  mstore_idle_input, mbox);
}

void mstore_notify_changes(struct mailbox *box)
{
	struct mstore_mailbox *mbox = MSTORE_MAILBOX(box);

	if (box->notify_callback == NULL) {
		mstore_idle_stop(mbox);
		return;
	}
	if (mbox->idle == NULL)
		mstore_idle_start(mbox);
}
