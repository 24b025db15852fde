/*
 * mstore-client.c - the plugin's side of the store connection.
 *
 * One blocking connection per storage, opened when the storage is
 * created (mail processes have dropped privileges by then, so the socket
 * is opened as the mail user), said HELLO as the store user whose mail
 * the storage holds (the logged-in user, or a shared namespace's owner).  The
 * HELLO is sent then and its reply read by the first request, so that
 * the round trip overlaps the rest of the login (Dovecot answers LOGIN
 * before it creates the namespaces) and the client's first command.  A
 * mailbox's open sends MBOX_STATUS the same way before it opens the
 * index (mstore_status_ahead).  A transport failure closes the
 * connection; the next request reconnects once.  Replies borrow from
 * the connection's buffer until the next request.  Store statuses map
 * to Dovecot's mail errors here; transport and codec failures are
 * critical errors (logged, "internal error" to the client).
 *
 * Read-ahead (mail_prefetch_count): Dovecot's search hands the next mails
 * to mail_prefetch() before the first one is read; each sends its
 * FETCH_BODY at once (pipelined, its own id) and the reply is read when
 * that mail's stream is opened, so that mstored reads the next bodies
 * while imap sends this one.  Any other request first reads every
 * read-ahead reply still in flight (into the mails that asked, or
 * dropped).  A read-ahead that failed in any way is forgotten: the mail
 * then asks again itself, and that request says what is wrong.
 */
#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "time-util.h"
#include "array.h"
#include "mail-storage-private.h"
#include "mail-user.h"
#include "mstore-storage.h"

#include <errno.h>

#include "client.h"
#include "ms.h"

static void mstore_hello_req(const char *user, struct ms_req *q)
{
	i_zero(q);
	q->op = MS_OP_HELLO;
	q->u.hello.version = MS_PROTO_VERSION;
	q->u.hello.role = MS_ROLE_USER;
	q->u.hello.user = ms_pstr_c(user);
}

static void mstore_hello_done(struct mstore_storage *storage,
			      const struct ms_reply *rep, bool main_conn)
{
	storage->user_id = rep->u.hello.user_id;
	if (main_conn) {
		/* the user's change count goes with this connection's
		   watch only (mstore_chg_refresh) */
		storage->chg_known = rep->u.hello.version >= 6;
		storage->subs_known = rep->u.hello.version >= 8;
		storage->delete_empty_known = rep->u.hello.version >= 9;
		storage->chg_epoch = rep->u.hello.changes_epoch;
		storage->chg_count = rep->u.hello.changes;
	}
	if (rep->u.hello.version >= 2) {
		/* no STATUS needed to know it (mstore_storage_is_standby) */
		storage->standby =
			(rep->u.hello.flags & MS_HELLO_STANDBY) != 0;
		storage->standby_known = TRUE;
	}
}

static const char *mstore_hello_error(struct mstore_storage *storage,
				      int ret, const char *error)
{
	return t_strdup_printf("HELLO as %s on %s failed: %s (%s)",
			       storage->store_user, storage->socket_path,
			       error, ms_strerror(ret));
}

static void mstore_hello_failed(struct mstore_storage *storage, int ret,
				const char *error)
{
	mail_storage_set_critical(&storage->storage, "mstore: %s",
				  mstore_hello_error(storage, ret, error));
}

/* Every storage's req_seq move of this process, counted together: one
   that has not moved since a moment T means no storage here sent a
   request or read a reply since T (mstore_chg_refresh_full). */
static unsigned int mstore_req_seq_all;

static void mstore_req_next(struct mstore_storage *storage)
{
	storage->req_seq++;
	mstore_req_seq_all++;
}

/* A connection to the store that said HELLO as the storage's store user;
   -1 with error_r set (nothing logged: the caller says how). */
static int mstore_client_connect(struct mstore_storage *storage,
				 struct ms_client **client_r, bool main_conn,
				 const char **error_r)
{
	struct ms_client *c;
	struct ms_req q;
	struct ms_reply rep;
	const char *error;
	int ret;

	if (ms_client_connect(storage->socket_path, MSTORE_TIMEOUT_MSECS,
			      &c, &error) < 0) {
		*error_r = t_strdup(error);
		return -1;
	}
	mstore_hello_req(storage->store_user, &q);
	ret = ms_client_request(c, &q, &rep, &error);
	if (ret < 0) {
		*error_r = mstore_hello_error(storage, ret, error);
		ms_client_close(&c);
		return -1;
	}
	mstore_hello_done(storage, &rep, main_conn);
	*client_r = c;
	return 0;
}

/* The connection's watch: a USER_WATCH, whose replies (the user's change
   count, at once and at every change) recv takes out of the stream
   wherever they come (ms_client_watch). */
static void mstore_watch_start(struct mstore_storage *storage)
{
	struct ms_req q = { .op = MS_OP_USER_WATCH };
	const char *error;
	uint32_t id;

	if (ms_client_send_req(storage->client, &q, &id, &error) < 0) {
		/* the next request reconnects and reports */
		mstore_client_disconnect(storage);
		return;
	}
	ms_client_watch(storage->client, id);
}

/* Connect to path and send HELLO as user and the watch, in one write
   (mstored reads them together and answers both in one turn), without
   waiting: the first request reads the replies. */
static int mstore_client_open(const char *path, const char *user,
			      struct ms_client **c_r, uint32_t *hello_id_r)
{
	struct ms_req q, wq = { .op = MS_OP_USER_WATCH };
	struct ms_client *c;
	struct ms_buf b;
	const char *error;
	uint32_t id, wid;
	int ret;

	if (ms_client_connect(path, MSTORE_TIMEOUT_MSECS, &c, &error) < 0)
		return -1;
	mstore_hello_req(user, &q);
	id = ms_client_id(c);
	wid = ms_client_id(c);
	ms_buf_init(&b, MS_PROTO_MAX_FRAME_LIMIT);
	ret = ms_req_encode(&b, id, &q, &error);
	if (ret == 0)
		ret = ms_req_encode(&b, wid, &wq, &error);
	if (ret == 0)
		ret = ms_client_send(c, b.data, b.len);
	ms_buf_free(&b);
	if (ret < 0) {
		ms_client_close(&c);
		return -1;
	}
	ms_client_watch(c, wid);
	*c_r = c;
	*hello_id_r = id;
	return 0;
}

/*
 * The connection opened when the mail user is made.  imap makes the user
 * before it answers LOGIN and the namespaces only after (Dovecot's
 * client_create_finish()), so a connection opened with the storage got
 * mstored's HELLO work onto the CPUs while imap made the namespaces and
 * served the client's first command: here it overlaps the LOGIN reply's
 * way to the client and back.  The storage takes it over
 * (mstore_client_start); one nobody took is closed with the user.
 */
struct mstore_user {
	union mail_user_module_context module_ctx;
	struct ms_client *client;	/* not taken yet */
	uint32_t hello_id;
};

#define MSTORE_USER_CONTEXT(obj) MODULE_CONTEXT(obj, mstore_user_module)
static MODULE_CONTEXT_DEFINE_INIT(mstore_user_module,
				  &mail_user_module_register);

static void mstore_user_deinit(struct mail_user *user)
{
	struct mstore_user *muser = MSTORE_USER_CONTEXT(user);

	ms_client_close(&muser->client);
	muser->module_ctx.super.deinit(user);
}

/* Whether the user's mail (or one of its namespaces) is in mstore. */
static bool mstore_user_uses_mstore(struct mail_user *user)
{
	static const char prefix[] = MSTORE_STORAGE_NAME ":";
	struct mail_namespace_settings *const *nss;
	const char *loc = mail_user_set_get_storage_set(user)->mail_location;

	if (loc != NULL && str_begins(loc, prefix))
		return TRUE;
	if (!array_is_created(&user->set->namespaces))
		return FALSE;
	array_foreach(&user->set->namespaces, nss) {
		if ((*nss)->location != NULL &&
		    str_begins((*nss)->location, prefix))
			return TRUE;
	}
	return FALSE;
}

void mstore_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct mstore_user *muser;
	const char *path;

	/* the users of shared folders are someone else's: their storage
	   connects for itself */
	if (user->autocreated || !mstore_user_uses_mstore(user))
		return;
	path = mail_user_plugin_getenv(user, "mstore_socket");
	if (path == NULL || *path == '\0')
		return; /* the storage says what is missing */
	muser = p_new(user->pool, struct mstore_user, 1);
	muser->module_ctx.super = *v;
	user->vlast = &muser->module_ctx.super;
	v->deinit = mstore_user_deinit;
	MODULE_CONTEXT_SET(user, mstore_user_module, muser);
	/* a failure is silent: the storage connects again and says why */
	(void)mstore_client_open(path, user->username, &muser->client,
				 &muser->hello_id);
}

void mstore_client_start(struct mstore_storage *storage)
{
	struct mail_user *user = storage->storage.user;
	struct mstore_user *muser = MSTORE_USER_CONTEXT(user);

	if (storage->client != NULL)
		return;
	/* the same user's mstore_socket: the same path; a shared or public
	   namespace's storage is another store user's */
	if (muser != NULL && muser->client != NULL &&
	    strcmp(storage->store_user, user->username) == 0) {
		storage->client = muser->client;
		storage->hello_id = muser->hello_id;
		muser->client = NULL;
		return;
	}
	/* a failure is silent: the first request connects again and says
	   why */
	(void)mstore_client_open(storage->socket_path, storage->store_user,
				 &storage->client, &storage->hello_id);
}

/* Read the reply to the HELLO sent ahead, if one is still due.  On any
   failure the connection is closed (the caller connects afresh and
   reports what that says), except a refusal by the store, which is
   logged here and returned.  Without wait, 1 when the reply is not in
   yet (nothing else changed). */
static int mstore_client_hello_read(struct mstore_storage *storage,
				    bool wait)
{
	struct ms_proto_hdr h;
	struct ms_reply rep;
	const uint8_t *body;
	const char *error = "";
	size_t len;
	int ret;

	if (storage->hello_id == 0)
		return 0;
	do {
		ret = wait ? ms_client_recv(storage->client, &h, &body, &len,
					    &error)
			   : ms_client_recv_nowait(storage->client, &h, &body,
						   &len, &error);
	} while (ret == 0 && h.id != storage->hello_id && h.id != 0);
	if (ret == -EAGAIN && !wait)
		return 1;
	storage->hello_id = 0;
	i_zero(&rep);
	if (ret == 0)
		ret = ms_reply_decode(h.op, body, len, &rep, &error);
	if (ret == 0 && rep.status < 0) {
		/* the store's answer (no such user, a refused connection):
		   what a fresh connection would hear too */
		mstore_hello_failed(storage, rep.status,
				    rep.reason.s == NULL ? "" :
				    t_strndup(rep.reason.s, rep.reason.len));
		mstore_client_disconnect(storage);
		return -1;
	}
	if (ret < 0 || rep.op != MS_OP_HELLO) {
		mstore_client_disconnect(storage);
		return 0;
	}
	mstore_hello_done(storage, &rep, TRUE);
	return 0;
}

static int mstore_client_hello_finish(struct mstore_storage *storage)
{
	return mstore_client_hello_read(storage, TRUE);
}

/* The connection, up and said HELLO. */
static int mstore_client_ready(struct mstore_storage *storage)
{
	if (storage->hello_refused) {
		storage->hello_refused = FALSE;
		return -1;
	}
	if (storage->client != NULL && mstore_client_hello_finish(storage) < 0)
		return -1;
	if (storage->client == NULL) {
		const char *error;
		if (mstore_client_connect(storage, &storage->client, TRUE,
					  &error) < 0) {
			mail_storage_set_critical(&storage->storage,
						  "mstore: %s", error);
			return -1;
		}
		if (storage->chg_known)
			mstore_watch_start(storage);
		if (storage->client == NULL)
			return -1;
	}
	return 0;
}

void mstore_status_ahead(struct mstore_storage *storage,
			 struct mstore_mailbox *mbox, const char *name)
{
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	const char *error;
	uint32_t id;

	mbox->ahead_have = FALSE;
	/* only on a connection that is up with nothing in flight but the
	   HELLO sent at login (the store answers a connection's requests
	   in order: both replies are read by one recv, later) */
	if (storage->client == NULL || storage->ahead_id != 0 ||
	    storage->prefetch_count > 0)
		return;
	q.u.mbox.name = ms_pstr_c(name);
	if (ms_client_send_req(storage->client, &q, &id, &error) < 0) {
		/* the sync's own request reconnects and reports */
		mstore_client_disconnect(storage);
		return;
	}
	storage->ahead_id = id;
	storage->ahead_mbox = mbox;
}

/* Read the reply to the MBOX_STATUS sent ahead, if one is due, into the
   mailbox that asked (if it is still open).  A broken connection or an
   answer to something else closes the connection: the next request
   connects afresh and says what is wrong. */
static void mstore_status_ahead_finish(struct mstore_storage *storage)
{
	struct mstore_mailbox *mbox = storage->ahead_mbox;
	struct ms_proto_hdr h = { 0 };
	struct ms_reply rep;
	const uint8_t *body = NULL;
	const char *error = "";
	size_t len = 0;
	int ret;

	if (storage->ahead_id == 0)
		return;
	if (mstore_client_hello_finish(storage) < 0) {
		/* refused and logged: the request that wanted this reply
		   fails with it, as it would have read it itself */
		storage->hello_refused = TRUE;
		return;
	}
	if (storage->ahead_id == 0)
		return; /* the HELLO's reply was bad: connection closed */
	mstore_req_next(storage);
	ret = ms_client_recv(storage->client, &h, &body, &len, &error);
	if (ret == 0 && h.id != storage->ahead_id)
		ret = MS_ECORRUPT;
	if (ret == 0)
		ret = ms_reply_decode(h.op, body, len, &rep, &error);
	storage->ahead_id = 0;
	storage->ahead_mbox = NULL;
	if (ret < 0 || rep.op != MS_OP_MBOX_STATUS) {
		mstore_client_disconnect(storage);
		return;
	}
	if (mbox == NULL || rep.status != 0)
		return; /* closed meanwhile; or not there: the sync finds out */
	mbox->ahead_have = TRUE;
	mbox->ahead_mbox_id = rep.u.mbox.mbox_id;
	mbox->ahead_uidvalidity = rep.u.mbox.uidvalidity;
	mbox->ahead_highestmodseq = rep.u.mbox.highestmodseq;
}

bool mstore_status_ahead_take(struct mstore_mailbox *mbox)
{
	struct mstore_storage *storage = mbox->storage;
	bool have;

	if (storage->ahead_mbox == mbox)
		mstore_status_ahead_finish(storage);
	have = mbox->ahead_have;
	mbox->ahead_have = FALSE;
	return have;
}

void mstore_status_ahead_forget(struct mstore_mailbox *mbox)
{
	if (mbox->storage->ahead_mbox == mbox)
		mbox->storage->ahead_mbox = NULL;
	mbox->ahead_have = FALSE;
}

static void mstore_prefetch_forget(struct mstore_storage *storage)
{
	for (unsigned int i = 0; i < storage->prefetch_count; i++) {
		struct mstore_prefetch *pf = &storage->prefetch[i];

		if (pf->mail != NULL)
			pf->mail->prefetch_id = 0;
		i_assert(storage->prefetch_bytes >= pf->size);
		storage->prefetch_bytes -= pf->size;
	}
	storage->prefetch_count = 0;
}

void mstore_client_disconnect(struct mstore_storage *storage)
{
	/* a NOTIFY watch of the connection goes first (its timer puts it
	   back on the next connection) */
	io_remove(&storage->notify_io);
	/* the replies in flight are lost with the connection */
	mstore_prefetch_forget(storage);
	ms_client_close(&storage->client);
	storage->hello_id = 0;
	storage->ahead_id = 0;
	storage->ahead_mbox = NULL;
	/* a promote may come between two connections */
	storage->standby_known = FALSE;
	storage->chg_known = FALSE;
	storage->chg_polled_seq = 0;
}

/*
 * The user's change count (mstored's USER_WATCH, docs/protocol.md): the
 * connection's watch is answered at once with the count, and again each
 * time it moves, before the store acknowledges the change to anyone.  So
 * a reply read on the connection shows every change up to the count the
 * watch had said before it: mstore_chg_snapshot() right after such a
 * reply says what the reply is as new as.  mstore_chg_refresh() takes
 * what the socket holds without waiting: with the watch's first answer
 * in and nothing after it, nothing of the user changed since the count
 * it leaves in chg_count.
 */
bool mstore_chg_snapshot(struct mstore_storage *storage,
			 struct mstore_chg *snap_r)
{
	int32_t status;
	uint64_t count;

	i_zero(snap_r);
	if (storage->client == NULL || !storage->chg_known ||
	    ms_client_watch_peek(storage->client, &status, &count) != 1 ||
	    status != 0)
		return FALSE;
	snap_r->epoch = storage->chg_epoch;
	snap_r->count = count;
	return TRUE;
}

static bool mstore_chg_refresh_full(struct mstore_storage *storage,
				    bool wait, bool *hello_late_r)
{
	const char *error;
	int32_t status;
	uint64_t count;

	if (storage->client == NULL)
		return FALSE;
	uint64_t drains = ms_client_drains(storage->client);
	bool hello_now = storage->hello_id != 0;
	int hret = hello_now ? mstore_client_hello_read(storage, wait) : 0;
	if (hret < 0) {
		storage->hello_refused = TRUE; /* the next request says */
		return FALSE;
	}
	if (hret == 1) {
		*hello_late_r = TRUE;
		return FALSE;
	}
	/* replies of others in flight would come first: not now */
	if (storage->client == NULL || !storage->chg_known ||
	    storage->ahead_id != 0 || storage->prefetch_count > 0)
		return FALSE;
	/* Polled already in this ioloop run, and no request or read since
	   by any storage of the process (this one's own requests, a change
	   made through another storage of the same user): what a change
	   acknowledged before this run began said is in what that poll
	   read (the watch hears of a change before anyone is told it is
	   done).  A LIST-STATUS asked the socket twice for each folder it
	   listed, each time to be told EAGAIN. */
	if (storage->chg_polled_seq != 0 &&
	    storage->chg_polled_seq == mstore_req_seq_all &&
	    timeval_cmp(&storage->chg_polled_run, &ioloop_timeval) == 0)
		return TRUE;
	mstore_req_next(storage); /* a borrowed reply goes */
	/* reading the HELLO's reply just now emptied the socket: all the
	   watch said before this call is in the buffer, and another read
	   could only say EAGAIN */
	int do_read = hello_now &&
		ms_client_drains(storage->client) != drains ? 0 : 2;
	int ret = ms_client_watch_poll(storage->client, do_read, &status,
				       &count, &error);
	/* the watch's first reply comes right behind the HELLO's: waited
	   for if it is not in yet */
	if (ret == 0 && do_read == 0)
		ret = ms_client_watch_poll(storage->client, 2, &status,
					   &count, &error);
	if (ret != 1 || status != 0)
		return FALSE;
	storage->chg_count = count;
	storage->chg_polled_run = ioloop_timeval;
	storage->chg_polled_seq = mstore_req_seq_all;
	return TRUE;
}

bool mstore_chg_refresh(struct mstore_storage *storage)
{
	return mstore_chg_refresh_full(storage, TRUE, NULL);
}

bool mstore_chg_refresh_nowait(struct mstore_storage *storage,
			       bool *hello_late_r)
{
	*hello_late_r = FALSE;
	return mstore_chg_refresh_full(storage, FALSE, hello_late_r);
}

bool mstore_chg_current(struct mstore_storage *storage,
			const struct mstore_chg *chg, uint64_t mbox_id)
{
	uint64_t mbox_count;

	if (!storage->chg_known || chg->epoch == 0 ||
	    chg->epoch != storage->chg_epoch)
		return FALSE;
	if (chg->count == storage->chg_count)
		return TRUE;
	/* the user changed since, but maybe not this mailbox: the count
	   of its last change, as the watch's replies read so far list it
	   (none for a mailbox they do not list: a new one, or the store's
	   mailbox of that name is another) */
	return storage->client != NULL && mbox_id != 0 &&
	       ms_client_watch_mbox(storage->client, mbox_id,
				    &mbox_count) == 1 &&
	       mbox_count <= chg->count;
}

bool mstore_storage_is_standby(struct mstore_storage *storage)
{
	struct ms_req q = { .op = MS_OP_STATUS };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter c;
	int ret;

	if (storage->hello_id != 0)
		(void)mstore_client_hello_finish(storage);
	if (storage->standby_known)
		return storage->standby;
	if (mstore_request_status(storage, &q, &rep) != 0)
		return FALSE; /* the write will say (-EROFS) */
	storage->standby = FALSE;
	ms_proto_iter_counters(&it, &rep.u.counters);
	while ((ret = ms_proto_next_counter(&it, &c)) > 0) {
		if (c.key.len == strlen("repl.standby") &&
		    memcmp(c.key.s, "repl.standby", c.key.len) == 0)
			storage->standby = c.value != 0;
	}
	storage->standby_known = ret == 0;
	return storage->standby;
}

struct ms_client *mstore_client_open_extra(struct mstore_storage *storage,
					   const char **error_r)
{
	struct ms_client *c;

	/* nothing logged here: IDLE's reconnects say once per outage what
	   failed (mstore-sync.c) */
	if (mstore_client_connect(storage, &c, FALSE, error_r) < 0)
		return NULL;
	return c;
}

int mstore_request_status(struct mstore_storage *storage,
			  const struct ms_req *q, struct ms_reply *rep_r)
{
	const char *error = "";
	int ret = -EIO;

	for (int attempt = 0; attempt < 2; attempt++) {
		/* ms_client_request() would skip the replies to requests
		   sent ahead */
		mstore_status_ahead_finish(storage);
		mstore_req_next(storage);
		mstore_prefetch_drain(storage);
		if (mstore_client_ready(storage) < 0)
			return -1;
		/* a decoded reply sets op and status; anything else that
		   fails is the transport's or the codec's failure */
		i_zero(rep_r);
		rep_r->status = 1;
		ret = ms_client_request(storage->client, q, rep_r, &error);
		if (ret == 0)
			return 0;
		if (rep_r->op == q->op && rep_r->status == ret) {
			/* the store's answer; -1 (EPERM) would read as
			   ours, so it becomes -EIO */
			return ret == -1 ? -EIO : ret;
		}
		/* drop the connection; retry once, on a fresh one, only
		   requests that are safe to repeat */
		mstore_client_disconnect(storage);
		if (q->op == MS_OP_APPEND || q->op == MS_OP_APPEND_UID ||
		    q->op == MS_OP_COPY ||
		    q->op == MS_OP_MOVE || q->op == MS_OP_MBOX_CREATE ||
		    q->op == MS_OP_MBOX_RENAME || q->op == MS_OP_MBOX_DELETE)
			break;
	}
	mail_storage_set_critical(&storage->storage,
		"mstore: %s request failed: %s (%s)", ms_op_name(q->op),
		error, ms_strerror(ret));
	return -1;
}

void mstore_set_store_error(struct mstore_storage *storage, int status,
			    const char *what)
{
	struct mail_storage *s = &storage->storage;

	switch (status) {
	case MS_ENOTFOUND:
		/* what a mailbox request finds gone is, nearly always, the
		   mailbox itself (deleted or renamed by another session
		   meanwhile): Dovecot's words for it, and the store's in
		   brackets for the rest (a user, a message) */
		mail_storage_set_error(s, MAIL_ERROR_NOTFOUND,
			t_strdup_printf("Mailbox doesn't exist "
					"(%s: not found in the store)", what));
		break;
	case -EEXIST:
		mail_storage_set_error(s, MAIL_ERROR_EXISTS,
				       "Mailbox already exists");
		break;
	case -EDQUOT:
		mail_storage_set_error(s, MAIL_ERROR_NOQUOTA,
				       "Quota exceeded (mailbox for user is full)");
		break;
	case MS_ETOOBIG:
		mail_storage_set_error(s, MAIL_ERROR_LIMIT,
			t_strdup_printf("%s: too large", what));
		break;
	case -EMLINK:
		/* the store's max_mailboxes (MBOX_CREATE); Dovecot's own
		   words for its quota_mailbox_count */
		mail_storage_set_error(s, MAIL_ERROR_LIMIT,
				       "Maximum number of mailboxes reached");
		break;
	case -EACCES:
		mail_storage_set_error(s, MAIL_ERROR_PERM,
				       MAIL_ERRSTR_NO_PERMISSION);
		break;
	case -EINVAL:
		mail_storage_set_error(s, MAIL_ERROR_PARAMS,
			t_strdup_printf("%s: refused by the store", what));
		break;
	case MS_ENOCOPY:
		mail_storage_set_error(s, MAIL_ERROR_TEMP,
			"The mail store cannot write now; try again later");
		break;
	case -EROFS:
		/* a standby mstored (the DR site before mstore promote):
		   reads are served, every write is refused; a plain NO,
		   not a server error */
		storage->standby = storage->standby_known = TRUE;
		mail_storage_set_error(s, MAIL_ERROR_PERM,
			"Read-only: this mail store is a standby (DR site)");
		break;
	case -EAGAIN:
		/* replication = sync and the DR site away */
		mail_storage_set_error(s, MAIL_ERROR_TEMP,
			"The mail store refuses writes for now; try again later");
		break;
	default:
		mail_storage_set_critical(s, "mstore: %s failed: %s", what,
					  ms_strerror(status));
		break;
	}
}

int mstore_request(struct mstore_storage *storage, const struct ms_req *q,
		   struct ms_reply *rep_r, int *status_r)
{
	int ret = mstore_request_status(storage, q, rep_r);

	if (status_r != NULL)
		*status_r = ret < -1 ? ret : 0;
	if (ret == 0)
		return 0;
	if (ret < -1)
		mstore_set_store_error(storage, ret, ms_op_name(q->op));
	return -1;
}

int mstore_fetch_body(struct mstore_storage *storage, struct mail *mail,
		      const char *mailbox, uint32_t uid, buffer_t *buf,
		      uint64_t total)
{
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	struct ms_reply rep;
	bool known = total > 0;
	int ret;

	if (!known)
		buffer_set_used_size(buf, 0);
	q.u.fetch_body.mailbox = ms_pstr_c(mailbox);
	q.u.fetch_body.uid = uid;
	q.u.fetch_body.max_len = MSTORE_BODY_CHUNK;
	while (!known || buf->used < total) {
		q.u.fetch_body.offset = buf->used;
		ret = mstore_request_status(storage, &q, &rep);
		if (ret == MS_ENOTFOUND) {
			mail_set_expunged(mail);
			return -1;
		}
		if (ret < -1)
			mstore_set_store_error(storage, ret, "FETCH_BODY");
		if (ret < 0)
			return -1;
		if (known && rep.u.fetch_body.total != total) {
			mail_set_critical(mail,
				"mstore: body of uid %u changed size while "
				"read (%llu, then %llu)", uid,
				(unsigned long long)total,
				(unsigned long long)rep.u.fetch_body.total);
			return -1;
		}
		total = rep.u.fetch_body.total;
		known = TRUE;
		if (total > (uint64_t)SSIZE_T_MAX / 2) {
			mail_set_critical(mail, "mstore: body too large");
			return -1;
		}
		if (rep.u.fetch_body.chunk_len > total - buf->used) {
			mail_set_critical(mail, "mstore: body chunk of uid %u "
					  "past its total size", uid);
			return -1;
		}
		buffer_append(buf, rep.u.fetch_body.chunk,
			      rep.u.fetch_body.chunk_len);
		if (rep.u.fetch_body.chunk_len == 0 && buf->used < total) {
			mail_set_critical(mail,
				"mstore: store sent an empty body chunk");
			return -1;
		}
	}
	return 0;
}

bool mstore_prefetch_body(struct mstore_storage *storage,
			  struct mstore_mail *mmail, const char *mailbox,
			  uint32_t uid, uint64_t size)
{
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	const char *error = "";
	uint32_t id;
	int ret;

	i_assert(mmail->prefetch_id == 0 && mmail->prefetched == NULL);
	/* only on a connection that is up: a failure to connect is for
	   the mail's own read to report */
	if (storage->client == NULL || storage->hello_id != 0 ||
	    storage->ahead_id != 0 ||
	    storage->prefetch_count >= MSTORE_PREFETCH_MAX_MAILS ||
	    size > MSTORE_PREFETCH_MAX_BYTES ||
	    storage->prefetch_bytes > MSTORE_PREFETCH_MAX_BYTES - size)
		return FALSE;

	q.u.fetch_body.mailbox = ms_pstr_c(mailbox);
	q.u.fetch_body.uid = uid;
	q.u.fetch_body.offset = 0;
	/* the whole body in one reply (size is the record's; if the
	   store's differs, the mail reads the rest itself) */
	q.u.fetch_body.max_len = size > MSTORE_BODY_CHUNK ? (uint32_t)size :
				 MSTORE_BODY_CHUNK;
	ret = ms_client_send_req(storage->client, &q, &id, &error);
	if (ret < 0) {
		/* the connection is unusable; the mail's own read
		   reconnects and reports */
		e_warning(storage->storage.event,
			  "mstore: read-ahead of uid %u: %s (%s)", uid,
			  error, ms_strerror(ret));
		mstore_client_disconnect(storage);
		return FALSE;
	}
	e_debug(storage->storage.event,
		"mstore: read-ahead of uid %u (%llu bytes), id %u", uid,
		(unsigned long long)size, id);
	storage->prefetch[storage->prefetch_count++] =
		(struct mstore_prefetch){ .id = id, .mail = mmail,
					  .size = size };
	storage->prefetch_bytes += size;
	mmail->prefetch_id = id;
	return TRUE;
}

/* Read one read-ahead reply.  0, or -1 when the connection broke or the
   store answered something else (it is closed; every read-ahead in
   flight is forgotten). */
static int mstore_prefetch_recv(struct mstore_storage *storage)
{
	struct ms_proto_hdr h = { 0 };
	struct ms_reply rep;
	struct mstore_prefetch pf;
	struct mstore_mail *mmail;
	const uint8_t *body = NULL;
	size_t len = 0;
	const char *error = "";
	unsigned int i = 0;
	buffer_t *buf;
	int ret;

	i_assert(storage->client != NULL && storage->prefetch_count > 0);
	mstore_req_next(storage);
	ret = ms_client_recv(storage->client, &h, &body, &len, &error);
	if (ret == 0)
		ret = ms_reply_decode(h.op, body, len, &rep, &error);
	if (ret == 0) {
		for (i = 0; i < storage->prefetch_count; i++) {
			if (storage->prefetch[i].id == h.id)
				break;
		}
		if (i == storage->prefetch_count ||
		    rep.op != MS_OP_FETCH_BODY) {
			ret = MS_ECORRUPT;
			error = h.id == 0 ? "an error about the connection" :
				"a reply to no read-ahead request";
		}
	}
	if (ret < 0) {
		e_warning(storage->storage.event,
			  "mstore: read-ahead reply: %s (%s); reconnecting",
			  error, ms_strerror(ret));
		mstore_client_disconnect(storage);
		return -1;
	}

	pf = storage->prefetch[i];
	storage->prefetch_count--;
	memmove(&storage->prefetch[i], &storage->prefetch[i + 1],
		(storage->prefetch_count - i) * sizeof(storage->prefetch[0]));
	i_assert(storage->prefetch_bytes >= pf.size);
	storage->prefetch_bytes -= pf.size;
	mmail = pf.mail;
	if (mmail == NULL)
		return 0; /* the mail let go of it */
	mmail->prefetch_id = 0;
	/* an error (expunged meanwhile, ...) or a reply that does not add
	   up: the mail asks again itself, and that request says what is
	   wrong */
	if (rep.status < 0) {
		e_debug(storage->storage.event,
			"mstore: read-ahead id %u: %s; the mail asks again",
			pf.id, ms_strerror(rep.status));
		return 0;
	}
	if (rep.u.fetch_body.total > (uint64_t)SSIZE_T_MAX / 2 ||
	    rep.u.fetch_body.chunk_len > rep.u.fetch_body.total ||
	    (rep.u.fetch_body.chunk_len == 0 && rep.u.fetch_body.total > 0))
		return 0;
	buf = buffer_create_dynamic(default_pool,
				    I_MAX(rep.u.fetch_body.chunk_len, 1));
	buffer_append(buf, rep.u.fetch_body.chunk, rep.u.fetch_body.chunk_len);
	mmail->prefetched = buf;
	mmail->prefetched_total = rep.u.fetch_body.total;
	mmail->prefetched_held = rep.u.fetch_body.chunk_len;
	storage->prefetch_bytes += mmail->prefetched_held;
	return 0;
}

void mstore_prefetch_wait(struct mstore_storage *storage,
			  struct mstore_mail *mmail)
{
	/* each round takes a request off the list or forgets them all */
	while (mmail->prefetch_id != 0) {
		if (mstore_prefetch_recv(storage) < 0)
			break;
	}
	i_assert(mmail->prefetch_id == 0);
}

void mstore_prefetch_drain(struct mstore_storage *storage)
{
	while (storage->prefetch_count > 0) {
		if (mstore_prefetch_recv(storage) < 0)
			break;
	}
}

buffer_t *mstore_prefetch_take(struct mstore_storage *storage,
			       struct mstore_mail *mmail, uint64_t *total_r)
{
	buffer_t *buf = mmail->prefetched;

	*total_r = 0;
	if (buf == NULL)
		return NULL;
	*total_r = mmail->prefetched_total;
	i_assert(storage->prefetch_bytes >= mmail->prefetched_held);
	storage->prefetch_bytes -= mmail->prefetched_held;
	mmail->prefetched_held = 0;
	mmail->prefetched = NULL;
	return buf;
}

void mstore_prefetch_release(struct mstore_storage *storage,
			     struct mstore_mail *mmail)
{
	if (mmail->prefetch_id != 0) {
		for (unsigned int i = 0; i < storage->prefetch_count; i++) {
			if (storage->prefetch[i].mail == mmail)
				storage->prefetch[i].mail = NULL;
		}
		mmail->prefetch_id = 0;
	}
	if (mmail->prefetched != NULL) {
		i_assert(storage->prefetch_bytes >= mmail->prefetched_held);
		storage->prefetch_bytes -= mmail->prefetched_held;
		mmail->prefetched_held = 0;
		buffer_free(&mmail->prefetched);
	}
}
