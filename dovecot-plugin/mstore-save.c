/*
 * mstore-save.c - APPEND, COPY and MOVE into an mstore mailbox.
 *
 * A saved message is buffered whole, then sent to the store in one
 * APPEND at save_finish, byte for byte as Dovecot has it (no line-end
 * conversion: the store's virtual size counts bare LFs as CRLF, like
 * Dovecot).  save_finish returns only once the store acknowledged it,
 * i.e. once it is durable; so an IMAP "APPEND OK" is never lost.
 *
 * The store assigns the UIDs.  As in imapc, each saved message is added
 * to the index transaction only for the time of the transaction (so the
 * caller's dest_mail answers sizes and the stream), and those records
 * are expunged again in commit_pre; the next sync of the mailbox imports
 * the messages with their store UIDs, which commit_pre hands to Dovecot
 * for APPENDUID / COPYUID.  A rolled-back transaction expunges what it
 * had appended from the store.
 *
 * COPY/MOVE between mailboxes of the same user is a store-side COPY (the
 * body is shared; for a MOVE, Dovecot then expunges the source), the
 * messages of one command gathered into one request sent at commit (one
 * durable write; a source gone meanwhile fails it, EXPUNGEISSUED); any
 * other source (another user's mail, a
 * raw mail from LDA/LMTP, another storage) is copied by value through
 * the save path.
 */
#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "istream.h"
#include "ostream.h"
#include "seq-range-array.h"
#include "mail-copy.h"
#include "guid.h"
#include "index-mail.h"
#include "mstore-storage.h"

#include <errno.h>

#include "client.h"
#include "ms.h"

ARRAY_DEFINE_TYPE(ms_uid_pair, struct ms_uid_pair);

/* Room left in a frame for everything of an APPEND but the body. */
#define MSTORE_APPEND_OVERHEAD (256 * 1024)

struct mstore_save_context {
	struct mail_save_context ctx;
	struct mstore_mailbox *mbox;
	struct mail_index_transaction *trans;

	buffer_t *body;
	struct istream *input;

	uint32_t uid_validity;
	ARRAY_TYPE(seq_range) saved_uids;
	unsigned int save_count;

	/* store-side copies not sent yet: uids of the one source mailbox
	   copy_src, sent as one COPY (one durable write) at commit, or
	   before anything else is saved, another source is copied from or
	   a uid comes again (so each uid is one copy) */
	char *copy_src;
	ARRAY_TYPE(seq_range) copy_uids;
	/* of those, the ones whose caller wants other flags or keywords
	   than the source's (mstore_copy_fix) */
	ARRAY(struct mstore_copy_fix) copy_fixes;
	pool_t fix_pool;
	/* saves with UIDs of their caller's choosing, held until commit
	   (mstore_deferred) */
	ARRAY(struct mstore_deferred) deferred;
	size_t deferred_bytes;

	bool failed:1;
	bool finished:1;
};

#define MSTORE_SAVECTX(s) (container_of(s, struct mstore_save_context, ctx))

/* Store-side copies to be given other flags and keywords than their
   sources have: the store's COPY copies a message's as they are, and
   most callers want just that (IMAP COPY asks for the source's own),
   but not all: lazy_expunge keeps an expunged message without its
   \Deleted.  A STORE (replace) of the wanted ones follows the COPY, one
   per set of wanted flags and keywords, on the copies' new UIDs. */
struct mstore_copy_fix {
	uint32_t flags;		/* the store's bits */
	const char **keywords;	/* NULL-terminated, in fix_pool */
	unsigned int nkeywords;
	ARRAY_TYPE(seq_range) src_uids;
};

/* A save with a UID of its caller's choosing (dsync keeping the
   source's UIDs, or renumbering a conflict), held until commit.  dsync
   saves such messages in the order they reach it, not by UID (a local
   copy renumbered to UID 6 may come before the other side's message for
   UID 5), and commits only when the UIDs still to come are higher: it
   counts on the index sorting a transaction's appends by UID at commit,
   as Dovecot's own does.  The store's UIDNEXT never goes back, so the
   held saves are sent at commit in UID order; or earlier, sorted, once
   their bodies pass MSTORE_DEFER_MAX_BYTES. */
struct mstore_deferred {
	struct ms_placement pl;	/* its strings in pool */
	buffer_t *body;		/* a copy: the save's own went to the index */
	pool_t pool;
};
#define MSTORE_DEFER_MAX_BYTES (16 * 1024 * 1024)

static int mstore_copy_flush(struct mstore_save_context *ctx);
static void mstore_copy_fixes_clear(struct mstore_save_context *ctx);
static int mstore_deferred_flush(struct mstore_save_context *ctx);
static void mstore_deferred_clear(struct mstore_save_context *ctx);

struct mail_save_context *
mstore_save_alloc(struct mailbox_transaction_context *t)
{
	struct mstore_save_context *ctx;

	i_assert((t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) != 0);
	if (t->save_ctx == NULL) {
		ctx = i_new(struct mstore_save_context, 1);
		ctx->ctx.transaction = t;
		ctx->mbox = MSTORE_MAILBOX(t->box);
		ctx->trans = t->itrans;
		i_array_init(&ctx->saved_uids, 8);
		i_array_init(&ctx->copy_uids, 8);
		i_array_init(&ctx->copy_fixes, 2);
		i_array_init(&ctx->deferred, 4);
		t->save_ctx = &ctx->ctx;
	}
	return t->save_ctx;
}

/* A standby store (the DR site before mstore promote) takes no message:
   say so before anything is buffered, sent to the store or read from a
   source mail, with the NO [NOPERM] that the store's -EROFS gives.  Early
   also because IMAP COPY keeps a pointer to the storage's error string
   while it commits the source's transaction; a change in that
   transaction (say, a virtual size cached when the source was read)
   makes Dovecot's list index push and pop the error, which frees that
   string before it is sent. */
static bool mstore_save_refused(struct mstore_mailbox *mbox, const char *what)
{
	if (!mstore_storage_is_standby(mbox->storage))
		return FALSE;
	mstore_set_store_error(mbox->storage, -EROFS, what);
	return TRUE;
}

int mstore_save_begin(struct mail_save_context *_ctx, struct istream *input)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	i_assert(ctx->body == NULL);
	ctx->finished = FALSE;
	ctx->failed = FALSE;
	if (mstore_save_refused(ctx->mbox, "APPEND")) {
		ctx->failed = TRUE;
		return -1;
	}
	/* copies gathered before this message get their UIDs first */
	if (mstore_copy_flush(ctx) < 0) {
		ctx->failed = TRUE;
		return -1;
	}
	ctx->body = buffer_create_dynamic(default_pool, 8192);
	ctx->input = input;
	i_stream_ref(input);
	_ctx->data.output = o_stream_create_buffer(ctx->body);
	o_stream_cork(_ctx->data.output);
	return 0;
}

int mstore_save_continue(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	if (ctx->failed)
		return -1;
	if (index_storage_save_continue(_ctx, ctx->input, NULL) < 0) {
		ctx->failed = TRUE;
		return -1;
	}
	if (ctx->body->used > MS_PROTO_MAX_FRAME_DEFAULT -
			      MSTORE_APPEND_OVERHEAD) {
		mail_storage_set_error(_ctx->transaction->box->storage,
				       MAIL_ERROR_LIMIT,
				       "Message is too large for the store");
		ctx->failed = TRUE;
		return -1;
	}
	return 0;
}

static void mstore_save_body_free(buffer_t *body)
{
	buffer_free(&body);
}

/* The temporary index record that lets dest_mail answer until commit.
   body (NULL for a store-side copy) becomes the mail's stream's. */
static void mstore_save_add_to_index(struct mstore_save_context *ctx,
				     uint32_t uid, uoff_t psize, uoff_t vsize,
				     buffer_t **body)
{
	struct mail *_mail = ctx->ctx.dest_mail;
	struct index_mail *imail = INDEX_MAIL(_mail);
	uint32_t seq;

	mail_index_append(ctx->trans, uid, &seq);
	mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
		ctx->ctx.data.flags & ENUM_NEGATE(MAIL_RECENT));
	mail_set_seq_saving(_mail, seq);
	imail->data.no_caching = TRUE;
	imail->data.forced_no_caching = TRUE;
	imail->data.physical_size = psize;
	imail->data.virtual_size = vsize;
	if (body != NULL) {
		/* the stream reads the buffer the message was saved into,
		   and frees it when it goes: no second copy in memory */
		buffer_t *buf = *body;
		*body = NULL;
		imail->data.stream = i_stream_create_from_data(buf->data,
							       buf->used);
		i_stream_add_destroy_callback(imail->data.stream,
					      mstore_save_body_free, buf);
		/* the stream was not read through mail_get_stream(); mark
		   it accessed as imapc does, and hand it to index-mail,
		   which owns it from now on */
		_mail->mail_stream_accessed = TRUE;
		struct istream *input;
		if (index_mail_init_stream(imail, NULL, NULL, &input) < 0)
			i_unreached();
	}
	ctx->save_count++;
}

static void mstore_save_add_uid(struct mstore_save_context *ctx,
				uint32_t uid_validity, uint32_t uid)
{
	if (ctx->uid_validity != 0 && ctx->uid_validity != uid_validity) {
		/* the mailbox was replaced meanwhile: no APPENDUID */
		array_clear(&ctx->saved_uids);
	}
	ctx->uid_validity = uid_validity;
	seq_range_array_add(&ctx->saved_uids, uid);
}

/* The fixes of the copies just made: the copies' new UIDs (pairs from
   the COPY's reply) given the flags and keywords their callers asked
   for, one STORE per fix. */
static int mstore_copy_fixes_apply(struct mstore_save_context *ctx,
				   const ARRAY_TYPE(ms_uid_pair) *pairs)
{
	const struct mstore_copy_fix *fix;
	const struct ms_uid_pair *pair;

	array_foreach(&ctx->copy_fixes, fix) {
		ARRAY_TYPE(seq_range) dst;
		t_array_init(&dst, 8);
		array_foreach(pairs, pair) {
			if (seq_range_exists(&fix->src_uids, pair->src_uid))
				seq_range_array_add(&dst, pair->dst_uid);
		}
		if (array_count(&dst) == 0)
			continue;
		struct ms_req q = { .op = MS_OP_STORE };
		struct ms_reply rep;
		struct ms_pstr *kws = t_new(struct ms_pstr,
					    fix->nkeywords + 1);
		for (unsigned int i = 0; i < fix->nkeywords; i++)
			kws[i] = ms_pstr_c(fix->keywords[i]);
		q.u.store.mailbox = ms_pstr_c(
			mstore_box_store_name(&ctx->mbox->box));
		q.u.store.uids = mstore_uid_set(&dst);
		q.u.store.mode = MS_EVENT_MODE_REPLACE;
		q.u.store.flags = fix->flags;
		q.u.store.keywords.n = fix->nkeywords;
		q.u.store.keywords.list = fix->nkeywords > 0 ? kws : NULL;
		if (mstore_request(ctx->mbox->storage, &q, &rep, NULL) < 0)
			return -1;
	}
	return 0;
}

/* Whether the NULL-terminated a holds the keywords of b, no more. */
static bool mstore_kw_same(const char *const *a,
			   const ARRAY_TYPE(const_string) *b)
{
	const char *const *kw;

	if (str_array_length(a) != array_count(b))
		return FALSE;
	array_foreach(b, kw) {
		if (!str_array_find(a, *kw))
			return FALSE;
	}
	return TRUE;
}

/* Whether the copy of mail is to have other flags or keywords than the
   source has: then it is noted in a fix (mstore_copy_fix). */
static void mstore_copy_note_flags(struct mstore_save_context *ctx,
				   struct mail *mail)
{
	const struct mail_save_data *mdata = &ctx->ctx.data;
	enum mail_flags want = mdata->flags & ENUM_NEGATE(MAIL_RECENT);
	const char *const *have_kw = mail_get_keywords(mail);
	ARRAY_TYPE(const_string) want_kw;

	t_array_init(&want_kw, 8);
	if (mdata->keywords != NULL) {
		const ARRAY_TYPE(keywords) *names =
			mail_index_get_keywords(mdata->keywords->index);
		for (unsigned int i = 0; i < mdata->keywords->count; i++) {
			unsigned int idx = mdata->keywords->idx[i];
			if (idx < array_count(names))
				array_push_back(&want_kw,
					array_idx(names, idx));
		}
	}
	if (want == (mail_get_flags(mail) & ENUM_NEGATE(MAIL_RECENT)) &&
	    mstore_kw_same(have_kw, &want_kw))
		return;

	/* the fix with these same flags and keywords, or a new one */
	uint32_t sflags = mstore_flags_to_store(want);
	struct mstore_copy_fix *fix;
	array_foreach_modifiable(&ctx->copy_fixes, fix) {
		if (fix->flags == sflags &&
		    mstore_kw_same((const char *const *)fix->keywords,
				   &want_kw)) {
			seq_range_array_add(&fix->src_uids, mail->uid);
			return;
		}
	}
	if (ctx->fix_pool == NULL)
		ctx->fix_pool = pool_alloconly_create("mstore copy fixes", 512);
	fix = array_append_space(&ctx->copy_fixes);
	fix->flags = sflags;
	fix->nkeywords = array_count(&want_kw);
	fix->keywords = p_new(ctx->fix_pool, const char *, fix->nkeywords + 1);
	for (unsigned int i = 0; i < fix->nkeywords; i++)
		fix->keywords[i] = p_strdup(ctx->fix_pool,
					    array_idx_elem(&want_kw, i));
	i_array_init(&fix->src_uids, 8);
	seq_range_array_add(&fix->src_uids, mail->uid);
}

/* Sends the store-side copies gathered so far as one COPY.  What the
   store copied is this transaction's even when this fails: a rollback
   takes it back.  A source that is gone (expunged by another session
   since this one's index saw it) fails the whole COPY, as Dovecot's own
   storages do at commit. */
static int mstore_copy_flush(struct mstore_save_context *ctx)
{
	struct mstore_storage *storage = ctx->mbox->storage;
	struct ms_req q = { .op = MS_OP_COPY };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_uid_pair pair;
	unsigned int want, got = 0;
	int ret;

	if (array_count(&ctx->copy_uids) == 0)
		return 0;
	want = seq_range_count(&ctx->copy_uids);
	T_BEGIN {
		q.u.uids.mailbox = ms_pstr_c(ctx->copy_src);
		q.u.uids.uids = mstore_uid_set(&ctx->copy_uids);
		q.u.uids.dst = ms_pstr_c(
			mstore_box_store_name(&ctx->mbox->box));
		ret = mstore_request(storage, &q, &rep, NULL);
	} T_END;
	array_clear(&ctx->copy_uids);
	if (ret < 0) {
		mstore_copy_fixes_clear(ctx);
		return -1;
	}
	ARRAY_TYPE(ms_uid_pair) pairs;
	t_array_init(&pairs, want);
	ms_proto_iter_pairs(&it, &rep.u.copy.pairs);
	while ((ret = ms_proto_next_pair(&it, &pair)) > 0) {
		mstore_save_add_uid(ctx, rep.u.copy.uidvalidity,
				    pair.dst_uid);
		array_push_back(&pairs, &pair);
		got++;
	}
	if (ret < 0 || got != rep.u.copy.pairs.n || got > want) {
		mstore_copy_fixes_clear(ctx);
		mailbox_set_critical(&ctx->mbox->box,
			"mstore: malformed COPY reply from the store");
		return -1;
	}
	if (got < want) {
		mstore_copy_fixes_clear(ctx);
		mail_storage_set_error(&storage->storage, MAIL_ERROR_EXPUNGED,
			"Some of the requested messages no longer exist");
		return -1;
	}
	T_BEGIN {
		ret = mstore_copy_fixes_apply(ctx, &pairs);
	} T_END;
	mstore_copy_fixes_clear(ctx);
	return ret;
}

static int mstore_save_send(struct mstore_save_context *ctx,
			    struct ms_req *q, const struct ms_placement *pl,
			    const buffer_t *body, uint32_t *uid_r);

static bool mstore_deferred_has(struct mstore_save_context *ctx,
				uint32_t uid)
{
	const struct mstore_deferred *d;

	array_foreach(&ctx->deferred, d) {
		if (d->pl.uid == uid)
			return TRUE;
	}
	return FALSE;
}

static int mstore_save_append(struct mstore_save_context *ctx)
{
	struct mail_save_context *_ctx = &ctx->ctx;
	struct mail_save_data *mdata = &_ctx->data;
	struct ms_req q = { .op = MS_OP_APPEND };
	struct ms_placement pl;
	struct ms_pstr *kws = NULL;
	unsigned int nkw = 0;

	i_zero(&pl);
	pl.mailbox = ms_pstr_c(mstore_box_store_name(&ctx->mbox->box));
	pl.flags = mstore_flags_to_store(mdata->flags);
	if (mdata->received_date != (time_t)-1) {
		pl.received = mdata->received_date <= 0 ? 1 :
			(int64_t)mdata->received_date > MS_PROTO_TIME_MAX ?
			MS_PROTO_TIME_MAX : (int64_t)mdata->received_date;
	}
	if (mdata->keywords != NULL && mdata->keywords->count > 0) {
		const ARRAY_TYPE(keywords) *names =
			mail_index_get_keywords(mdata->keywords->index);
		kws = t_new(struct ms_pstr, mdata->keywords->count);
		for (unsigned int i = 0; i < mdata->keywords->count; i++) {
			unsigned int idx = mdata->keywords->idx[i];
			if (idx >= array_count(names))
				continue;
			kws[nkw++] = ms_pstr_c(array_idx_elem(names, idx));
		}
		pl.keywords.n = nkw;
		pl.keywords.list = nkw > 0 ? kws : NULL;
	}
	if (mdata->uid != 0 || mdata->guid != NULL) {
		/* dsync (doveadm backup) keeps the source's UIDs and GUIDs:
		   APPEND_UID.  A GUID that is not 128-bit hex (maildir's
		   are file names) is hashed, as dsync does when it compares
		   (HAVE_MAIL_GUID128) */
		q.op = MS_OP_APPEND_UID;
		pl.uid = mdata->uid;
		if (mdata->guid != NULL &&
		    guid_128_from_string(mdata->guid, pl.guid) < 0)
			mail_generate_guid_128_hash(mdata->guid, pl.guid);
	}
	if (q.op == MS_OP_APPEND_UID && pl.uid != 0 &&
	    !seq_range_exists(&ctx->saved_uids, pl.uid) &&
	    !mstore_deferred_has(ctx, pl.uid)) {
		/* held until commit, sent in UID order (mstore_deferred);
		   a UID this transaction already has is sent now, for the
		   store to refuse */
		pool_t pool = pool_alloconly_create("mstore deferred save",
						    256);
		struct mstore_deferred *d = array_append_space(&ctx->deferred);
		struct ms_pstr *dkws = p_new(pool, struct ms_pstr, nkw + 1);
		d->pool = pool;
		d->pl = pl;
		d->pl.mailbox = ms_pstr_c(p_strndup(pool, pl.mailbox.s,
						    pl.mailbox.len));
		for (unsigned int i = 0; i < nkw; i++)
			dkws[i] = ms_pstr_c(p_strndup(pool, kws[i].s,
						      kws[i].len));
		d->pl.keywords.list = nkw > 0 ? dkws : NULL;
		d->body = buffer_create_dynamic(default_pool,
						ctx->body->used + 1);
		buffer_append_buf(d->body, ctx->body, 0, SIZE_MAX);
		ctx->deferred_bytes += ctx->body->used;
		mstore_save_add_to_index(ctx, pl.uid, ctx->body->used,
			ms_crlf_size(ctx->body->data, ctx->body->used),
			&ctx->body);
		if (ctx->deferred_bytes > MSTORE_DEFER_MAX_BYTES)
			return mstore_deferred_flush(ctx);
		return 0;
	}
	uint32_t uid;
	if (mstore_save_send(ctx, &q, &pl, ctx->body, &uid) < 0)
		return -1;
	mstore_save_add_to_index(ctx, uid, ctx->body->used,
		ms_crlf_size(ctx->body->data, ctx->body->used), &ctx->body);
	return 0;
}

/* One APPEND or APPEND_UID of body with the placement pl; the message's
   UID is noted as saved, and given. */
static int mstore_save_send(struct mstore_save_context *ctx,
			    struct ms_req *q, const struct ms_placement *pl,
			    const buffer_t *body, uint32_t *uid_r)
{
	struct mstore_storage *storage = ctx->mbox->storage;
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_append_result res;

	q->u.append.body = body->data;
	q->u.append.body_len = body->used;
	q->u.append.placements.n = 1;
	q->u.append.placements.list = pl;
	if (mstore_request(storage, q, &rep, NULL) < 0)
		return -1;
	ms_proto_iter_results(&it, &rep.u.append);
	if (rep.u.append.n != 1 || ms_proto_next_result(&it, &res) <= 0) {
		mailbox_set_critical(&ctx->mbox->box,
			"mstore: malformed APPEND reply from the store");
		return -1;
	}
	if (res.status == MS_ESTATE) {
		/* a UID below the mailbox's UIDNEXT: the store's reason */
		mail_storage_set_error(&storage->storage,
			MAIL_ERROR_NOTPOSSIBLE,
			t_strdup_printf("mstore: %.*s", (int)res.reason.len,
					res.reason.s));
		return -1;
	}
	if (res.status < 0) {
		mstore_set_store_error(storage, res.status, "APPEND");
		return -1;
	}
	mstore_save_add_uid(ctx, res.uidvalidity, res.uid);
	*uid_r = res.uid;
	return 0;
}

static int mstore_deferred_cmp(const struct mstore_deferred *a,
			       const struct mstore_deferred *b)
{
	return a->pl.uid < b->pl.uid ? -1 : a->pl.uid > b->pl.uid ? 1 : 0;
}

static void mstore_deferred_clear(struct mstore_save_context *ctx)
{
	struct mstore_deferred *d;

	array_foreach_modifiable(&ctx->deferred, d) {
		buffer_free(&d->body);
		pool_unref(&d->pool);
	}
	array_clear(&ctx->deferred);
	ctx->deferred_bytes = 0;
}

/* The held saves, in UID order; -1 at the first the store refused (the
   ones sent before it are this transaction's: a rollback takes them
   back). */
static int mstore_deferred_flush(struct mstore_save_context *ctx)
{
	const struct mstore_deferred *d;
	int ret = 0;

	array_sort(&ctx->deferred, mstore_deferred_cmp);
	array_foreach(&ctx->deferred, d) {
		struct ms_req q = { .op = MS_OP_APPEND_UID };
		uint32_t uid;

		if ((ret = mstore_save_send(ctx, &q, &d->pl, d->body,
					    &uid)) < 0)
			break;
	}
	mstore_deferred_clear(ctx);
	return ret;
}

int mstore_save_finish(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);
	struct mail_storage *storage = _ctx->transaction->box->storage;

	ctx->finished = TRUE;
	if (!ctx->failed && o_stream_finish(_ctx->data.output) < 0) {
		mail_set_critical(_ctx->dest_mail,
			"mstore: buffering the message failed: %s",
			o_stream_get_error(_ctx->data.output));
		ctx->failed = TRUE;
	}
	if (!ctx->failed) {
		int ret;
		T_BEGIN {
			ret = mstore_save_append(ctx);
		} T_END;
		if (ret < 0)
			ctx->failed = TRUE;
	}
	o_stream_unref(&_ctx->data.output);
	i_stream_unref(&ctx->input);
	buffer_free(&ctx->body);
	index_save_context_free(_ctx);
	(void)storage;
	return ctx->failed ? -1 : 0;
}

void mstore_save_cancel(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	ctx->failed = TRUE;
	(void)mstore_save_finish(_ctx);
}

static bool mstore_copy_same_user(struct mail_save_context *_ctx,
				  struct mail *mail)
{
	struct mailbox *dest = _ctx->transaction->box;

	/* the same store user: a shared or public folder is another's,
	   though its storage is this process's user's too */
	return strcmp(mail->box->storage->name, MSTORE_STORAGE_NAME) == 0 &&
	       strcmp(MSTORE_STORAGE(mail->box->storage)->store_user,
		      MSTORE_STORAGE(dest->storage)->store_user) == 0 &&
	       MSTORE_STORAGE(mail->box->storage)->socket_path != NULL &&
	       strcmp(MSTORE_STORAGE(mail->box->storage)->socket_path,
		      MSTORE_STORAGE(dest->storage)->socket_path) == 0 &&
	       !dest->disable_reflink_copy_to;
}

static int mstore_copy_store(struct mstore_save_context *ctx,
			     struct mail *mail)
{
	struct mail_save_context *_ctx = &ctx->ctx;
	/* a MOVE too is a store COPY here: Dovecot expunges the source in
	   the source's transaction once this one committed, so a rolled
	   back MOVE (whose copies this transaction takes back) leaves the
	   messages where they were; a crash in between leaves a copy too
	   many, never none */
	struct mstore_mail_rec rec;
	uoff_t psize, vsize;
	const char *src = mstore_box_store_name(mail->box);

	/* sizes for the caller (quota) before the source may be gone: from
	   the source's record as is, not through mail_get_*_size(), which
	   would have the source mail cache them into the source's
	   transaction (see mstore_save_refused() for why that transaction
	   must stay clean) */
	if (mstore_mail_get_rec(mail, &rec)) {
		psize = rec.physical_size;
		vsize = rec.virtual_size;
	} else if (mail_get_physical_size(mail, &psize) < 0 ||
		   mail_get_virtual_size(mail, &vsize) < 0) {
		mail_storage_copy_error(_ctx->transaction->box->storage,
					mail->box->storage);
		return -1;
	}
	/* gathered, not sent: a COPY or MOVE of many messages is one
	   request and one durable write (mstore_copy_flush), not one per
	   message.  The store gives the copies UIDs in source UID order,
	   which is the order COPYUID pairs them in. */
	if (array_count(&ctx->copy_uids) > 0 &&
	    (strcmp(ctx->copy_src, src) != 0 ||
	     seq_range_exists(&ctx->copy_uids, mail->uid) ||
	     array_count(&ctx->copy_uids) >= MS_PROTO_MAX_RANGES) &&
	    mstore_copy_flush(ctx) < 0)
		return -1;
	if (array_count(&ctx->copy_uids) == 0) {
		i_free(ctx->copy_src);
		ctx->copy_src = i_strdup(src);
	}
	seq_range_array_add(&ctx->copy_uids, mail->uid);
	mstore_copy_note_flags(ctx, mail);
	/* its UID comes with the COPY's reply; until then it reads as its
	   source (mail_log, say, reads its headers now) */
	mstore_save_add_to_index(ctx, 0, psize, vsize, NULL);
	struct mstore_mail *dest = MSTORE_MAIL(ctx->ctx.dest_mail);
	dest->copy_src = i_strdup(src);
	dest->copy_src_uid = mail->uid;
	return 0;
}

int mstore_copy(struct mail_save_context *_ctx, struct mail *mail)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);
	int ret;

	if (mstore_save_refused(ctx->mbox, "COPY")) {
		/* before a copy by value reads the source too */
		index_save_context_free(_ctx);
		ctx->failed = TRUE;
		return -1;
	}
	/* a copy that is to have a UID of its caller's choosing (dsync
	   renumbering a conflict, or copying a message it has elsewhere,
	   keeps the source's UIDs) is saved by value with that UID: the
	   store's COPY gives the next one */
	if (!mstore_copy_same_user(_ctx, mail) || _ctx->data.uid != 0)
		return mail_storage_copy(_ctx, mail);
	T_BEGIN {
		ret = mstore_copy_store(ctx, mail);
	} T_END;
	index_save_context_free(_ctx);
	if (ret < 0)
		ctx->failed = TRUE;
	return ret;
}

int mstore_transaction_save_flush(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	if (mstore_deferred_flush(ctx) < 0)
		return -1;
	return mstore_copy_flush(ctx);
}

int mstore_transaction_save_commit_pre(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);
	struct mail_transaction_commit_changes *changes =
		_ctx->transaction->changes;
	uint32_t i, last_seq;

	/* the held saves first: the copies' UIDs are the store's next */
	if (mstore_deferred_flush(ctx) < 0) {
		mstore_transaction_save_rollback(_ctx);
		return -1;
	}
	if (mstore_copy_flush(ctx) < 0) {
		/* the commit fails (MAIL_ERROR_EXPUNGED when a source had
		   gone, which IMAP reports as such); what the store copied
		   is taken back */
		mstore_transaction_save_rollback(_ctx);
		return -1;
	}
	/* the temporary records go; the next sync brings the messages
	   back with the store's UIDs */
	last_seq = mail_index_view_get_messages_count(_ctx->transaction->view);
	for (i = 0; i < ctx->save_count && i < last_seq; i++)
		mail_index_expunge(ctx->trans, last_seq - i);
	if (!ctx->failed && array_count(&ctx->saved_uids) > 0 &&
	    seq_range_count(&ctx->saved_uids) == ctx->save_count) {
		changes->uid_validity = ctx->uid_validity;
		array_append_array(&changes->saved_uids, &ctx->saved_uids);
	}
	ctx->mbox->pending_saves = TRUE;
	return 0;
}

static void mstore_copy_fixes_clear(struct mstore_save_context *ctx)
{
	struct mstore_copy_fix *fix;

	array_foreach_modifiable(&ctx->copy_fixes, fix)
		array_free(&fix->src_uids);
	array_clear(&ctx->copy_fixes);
	pool_unref(&ctx->fix_pool);
}

static void mstore_save_free(struct mstore_save_context *ctx)
{
	mstore_copy_fixes_clear(ctx);
	array_free(&ctx->copy_fixes);
	mstore_deferred_clear(ctx);
	array_free(&ctx->deferred);
	array_free(&ctx->saved_uids);
	array_free(&ctx->copy_uids);
	i_free(ctx->copy_src);
	i_free(ctx);
}

void mstore_transaction_save_commit_post(
	struct mail_save_context *_ctx,
	struct mail_index_transaction_commit_result *result ATTR_UNUSED)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	_ctx->transaction = NULL; /* freed already */
	mstore_save_free(ctx);
}

void mstore_transaction_save_rollback(struct mail_save_context *_ctx)
{
	struct mstore_save_context *ctx = MSTORE_SAVECTX(_ctx);

	if (array_count(&ctx->saved_uids) > 0) {
		/* the client was told the save failed: take back what the
		   store already has */
		struct ms_req q = { .op = MS_OP_EXPUNGE };
		struct ms_reply rep;

		T_BEGIN {
			q.u.uids.mailbox = ms_pstr_c(
				mstore_box_store_name(&ctx->mbox->box));
			q.u.uids.uids = mstore_uid_set(&ctx->saved_uids);
			if (mstore_request(ctx->mbox->storage, &q, &rep,
					   NULL) < 0) {
				e_error(ctx->mbox->box.event,
					"mstore: rolling back saved messages "
					"failed: %s",
					mail_storage_get_last_internal_error(
						&ctx->mbox->storage->storage,
						NULL));
			}
		} T_END;
		ctx->mbox->pending_saves = TRUE;
	}
	mstore_save_free(ctx);
}
