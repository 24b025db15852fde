/*
 * mstore-client.c - the plugin's side of the store connection.
 *
 * One blocking connection per storage, opened on first use (mail
 * processes have dropped privileges by then, so the socket is opened as
 * the mail user), said HELLO as the logged-in user.  A transport failure
 * closes it; the next request reconnects once.  Replies borrow from the
 * connection's buffer until the next request.  Store statuses map to
 * Dovecot's mail errors here; transport and codec failures are critical
 * errors (logged, "internal error" to the client).
 */
#include "lib.h"
#include "buffer.h"
#include "mail-storage-private.h"
#include "mstore-storage.h"

#include <errno.h>

#include "client.h"
#include "ms.h"

static int mstore_client_connect(struct mstore_storage *storage,
				 struct ms_client **client_r)
{
	struct ms_client *c;
	const char *error;
	int ret;

	ret = ms_client_connect(storage->socket_path, MSTORE_TIMEOUT_MSECS,
				&c, &error);
	if (ret < 0) {
		mail_storage_set_critical(&storage->storage,
			"mstore: %s", error);
		return -1;
	}
	struct ms_req q = { .op = MS_OP_HELLO };
	struct ms_reply rep;
	q.u.hello.version = MS_PROTO_VERSION;
	q.u.hello.role = MS_ROLE_USER;
	q.u.hello.user = ms_pstr_c(storage->storage.user->username);
	ret = ms_client_request(c, &q, &rep, &error);
	if (ret < 0) {
		mail_storage_set_critical(&storage->storage,
			"mstore: HELLO as %s on %s failed: %s (%s)",
			storage->storage.user->username, storage->socket_path,
			error, ms_strerror(ret));
		ms_client_close(&c);
		return -1;
	}
	storage->user_id = rep.u.hello.user_id;
	*client_r = c;
	return 0;
}

void mstore_client_disconnect(struct mstore_storage *storage)
{
	ms_client_close(&storage->client);
	/* a promote may come between two connections */
	storage->standby_known = FALSE;
}

bool mstore_storage_is_standby(struct mstore_storage *storage)
{
	struct ms_req q = { .op = MS_OP_STATUS };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter c;
	int ret;

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

struct ms_client *mstore_client_open_extra(struct mstore_storage *storage)
{
	struct ms_client *c;

	if (mstore_client_connect(storage, &c) < 0)
		return NULL;
	return c;
}

int mstore_request_status(struct mstore_storage *storage,
			  const struct ms_req *q, struct ms_reply *rep_r)
{
	const char *error = "";
	int ret = -EIO;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (storage->client == NULL &&
		    mstore_client_connect(storage, &storage->client) < 0)
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
		mail_storage_set_error(s, MAIL_ERROR_NOTFOUND,
			t_strdup_printf("%s: not found", what));
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
		      const char *mailbox, uint32_t uid, buffer_t *buf)
{
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	struct ms_reply rep;
	uint64_t total = 0;
	int ret;

	buffer_set_used_size(buf, 0);
	q.u.fetch_body.mailbox = ms_pstr_c(mailbox);
	q.u.fetch_body.uid = uid;
	q.u.fetch_body.max_len = MSTORE_BODY_CHUNK;
	do {
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
		if (buf->used > 0 && rep.u.fetch_body.total != total) {
			mail_set_critical(mail,
				"mstore: body of uid %u changed size while "
				"read (%llu, then %llu)", uid,
				(unsigned long long)total,
				(unsigned long long)rep.u.fetch_body.total);
			return -1;
		}
		total = rep.u.fetch_body.total;
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
	} while (buf->used < total);
	return 0;
}
