/*
 * lmtp_store.c - the non-blocking mstored client; see lmtp_store.h.
 *
 * Requests in flight are in a hash by id (for the replies) and in a list
 * in the order they were queued (for the timeout: the oldest is first).
 * Failed requests move to a list whose callbacks the tick calls, so a
 * callback never runs inside a call that its owner made.  Writes happen
 * on EPOLLOUT and at the tick, never inside lmtp_store_send, so a write
 * error cannot tear the connection down under a callback that is still
 * reading a reply.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "buf.h"
#include "lmtp_store.h"
#include "msg.h"

#define STORE_READ_CHUNK 65536
#define STORE_RETRY_MIN_MS 100
#define STORE_RETRY_MAX_MS 2000

enum { ST_DOWN, ST_HELLO, ST_UP };

struct lmtp_store_req {
	uint32_t id;
	uint16_t op;
	lmtp_store_cb *cb;
	void *ctx;
	uint64_t queued_ms;
	int status;			/* on the failed list */
	const char *why;		/* static text */
	struct lmtp_store_req *hnext;	/* hash chain */
	struct lmtp_store_req *prev, *next;
};

struct req_list {
	struct lmtp_store_req *head, *tail;
};

struct lmtp_store {
	struct lmtp_loop *loop;
	char *path;
	uint32_t max_frame;
	uint64_t timeout_ms;
	struct lmtp_watch w;
	int state;
	uint64_t retry_at;
	unsigned backoff;
	struct ms_buf in, out;
	size_t out_off;
	uint32_t next_id;
	struct lmtp_store_req **buckets;
	size_t nbuckets, nreqs;
	struct req_list inflight, failed;
	int in_read; /* store_read is dispatching replies */
};

/* ---- lists and hash ---- */

static void list_add(struct req_list *l, struct lmtp_store_req *r)
{
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void list_del(struct req_list *l, struct lmtp_store_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->prev = r->next = NULL;
}

static size_t bucket_of(const struct lmtp_store *st, uint32_t id)
{
	return (size_t)(id * 2654435761u) & (st->nbuckets - 1);
}

static void hash_grow(struct lmtp_store *st)
{
	size_t n = st->nbuckets * 2;
	struct lmtp_store_req **b = ms_calloc(n, sizeof(*b)); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
	struct lmtp_store_req **old = st->buckets;
	size_t oldn = st->nbuckets;
	st->buckets = b;
	st->nbuckets = n;
	for (size_t i = 0; i < oldn; i++) {
		while (old[i] != NULL) {
			struct lmtp_store_req *r = old[i];
			old[i] = r->hnext;
			size_t k = bucket_of(st, r->id);
			r->hnext = b[k];
			b[k] = r;
		}
	}
	free(old);
}

static void hash_add(struct lmtp_store *st, struct lmtp_store_req *r)
{
	if (st->nreqs >= st->nbuckets * 2)
		hash_grow(st);
	size_t k = bucket_of(st, r->id);
	r->hnext = st->buckets[k];
	st->buckets[k] = r;
	st->nreqs++;
}

static struct lmtp_store_req *hash_take(struct lmtp_store *st, uint32_t id)
{
	struct lmtp_store_req **pp = &st->buckets[bucket_of(st, id)];
	for (; *pp != NULL; pp = &(*pp)->hnext) {
		if ((*pp)->id == id) {
			struct lmtp_store_req *r = *pp;
			*pp = r->hnext;
			r->hnext = NULL;
			st->nreqs--;
			return r;
		}
	}
	return NULL;
}

/* ---- failure ---- */

static void fail_req(struct lmtp_store *st, struct lmtp_store_req *r,
		     int status, const char *why)
{
	r->status = status;
	r->why = why;
	list_add(&st->failed, r);
	lmtp_loop_wake_at(st->loop, lmtp_now_ms());
}

/* Drop the connection; everything in flight fails. */
static void store_down(struct lmtp_store *st, const char *why)
{
	if (st->w.fd >= 0) {
		msg_warn("store.down socket=%s error=%s msg=reconnecting",
			 msg_q(st->path), msg_q(why));
		lmtp_loop_del(st->loop, &st->w);
		close(st->w.fd);
		st->w.fd = -1;
	}
	st->state = ST_DOWN;
	while (st->inflight.head != NULL) {
		struct lmtp_store_req *r = st->inflight.head;
		list_del(&st->inflight, r);
		(void)hash_take(st, r->id);
		fail_req(st, r, -EPIPE, "connection to mstored lost");
	}
	ms_buf_free(&st->in);
	ms_buf_free(&st->out);
	st->out_off = 0;
	if (st->backoff == 0)
		st->backoff = STORE_RETRY_MIN_MS;
	st->retry_at = lmtp_now_ms() + st->backoff;
	st->backoff = st->backoff * 2 > STORE_RETRY_MAX_MS
			      ? STORE_RETRY_MAX_MS
			      : st->backoff * 2;
	lmtp_loop_wake_at(st->loop, st->retry_at);
}

/* ---- requests ---- */

static struct lmtp_store_req *queue_req(struct lmtp_store *st,
					const struct ms_req *q,
					lmtp_store_cb *cb, void *ctx)
{
	struct lmtp_store_req *r = ms_calloc(1, sizeof(*r));
	const char *err = "";
	r->cb = cb;
	r->ctx = ctx;
	r->op = q->op;
	r->queued_ms = lmtp_now_ms();
	if (st->state == ST_DOWN) {
		fail_req(st, r, -ENOTCONN, "mstored is not connected");
		return r;
	}
	if (++st->next_id == 0)
		st->next_id = 1; /* id 0 is the server's */
	r->id = st->next_id;
	int ret = ms_req_encode(&st->out, r->id, q, &err);
	if (ret < 0) {
		msg_warn("store.request_failed op=%s error=%s",
			 ms_op_name(q->op), msg_q(err));
		fail_req(st, r, ret, "request could not be encoded");
		return r;
	}
	hash_add(st, r);
	list_add(&st->inflight, r);
	(void)lmtp_loop_mod(st->loop, &st->w, EPOLLIN | EPOLLOUT);
	return r;
}

struct lmtp_store_req *lmtp_store_send(struct lmtp_store *st,
				       const struct ms_req *q,
				       lmtp_store_cb *cb, void *ctx)
{
	return queue_req(st, q, cb, ctx);
}

void lmtp_store_cancel(struct lmtp_store_req **reqp)
{
	if (*reqp != NULL)
		(*reqp)->cb = NULL;
	*reqp = NULL;
}

static void hello_done(void *ctx, int status, const struct ms_reply *rep,
		       const char *why)
{
	struct lmtp_store *st = ctx;
	(void)rep;
	if (status < 0) {
		msg_warn("store.hello_refused socket=%s error=%s",
			 msg_q(st->path), msg_q(why));
		store_down(st, "no session");
		return;
	}
	if (st->state == ST_HELLO) {
		st->state = ST_UP;
		st->backoff = 0;
		msg_info("store.connected socket=%s", msg_q(st->path));
	}
}

/* ---- I/O ---- */

static void store_flush(struct lmtp_store *st)
{
	while (st->w.fd >= 0 && st->out_off < st->out.len) {
		ssize_t n = send(st->w.fd, st->out.data + st->out_off,
				 st->out.len - st->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			store_down(st, strerror(errno));
			return;
		}
		st->out_off += (size_t)n;
	}
	if (st->w.fd < 0)
		return;
	if (st->out_off == st->out.len) {
		/* idle: give the (maybe large) buffer back */
		ms_buf_free(&st->out);
		st->out_off = 0;
		(void)lmtp_loop_mod(st->loop, &st->w, EPOLLIN);
	} else if (st->out_off > (1u << 20)) {
		memmove(st->out.data, st->out.data + st->out_off,
			st->out.len - st->out_off);
		st->out.len -= st->out_off;
		st->out_off = 0;
	}
}

/* One whole frame: its request's callback.  false: connection dropped. */
static bool store_frame(struct lmtp_store *st, const struct ms_proto_hdr *h)
{
	struct ms_reply rep;
	const char *err = "";
	if (h->id == 0 || !(h->op & MS_OP_REPLY)) {
		store_down(st, "mstored closed the session");
		return false;
	}
	struct lmtp_store_req *r = hash_take(st, h->id);
	if (r == NULL) {
		store_down(st, "a reply to no request");
		return false;
	}
	list_del(&st->inflight, r);
	if ((h->op & ~MS_OP_REPLY) != r->op ||
	    ms_reply_decode(h->op, h->body, h->body_len, &rep, &err) < 0) {
		msg_warn("store.bad_reply op=%s error=%s", ms_op_name(r->op),
			 msg_q(err));
		fail_req(st, r, -EPROTO, "broken reply from mstored");
		store_down(st, "broken reply");
		return false;
	}
	if (r->cb != NULL) {
		char why[MS_PROTO_MAX_REASON + 1];
		size_t n = rep.status < 0 ? rep.reason.len : 0;
		if (n > 0) /* reason.s may be NULL when empty */
			memcpy(why, rep.reason.s, n);
		why[n] = '\0';
		r->cb(r->ctx, rep.status, &rep, why);
	}
	free(r);
	return st->w.fd >= 0;
}

static void store_read(struct lmtp_store *st)
{
	for (int rounds = 0; rounds < 16 && st->w.fd >= 0; rounds++) {
		if (ms_buf_reserve(&st->in, STORE_READ_CHUNK) < 0) {
			store_down(st, "reply buffer full");
			return;
		}
		ssize_t n = recv(st->w.fd, st->in.data + st->in.len,
				 STORE_READ_CHUNK, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			store_down(st, n == 0 ? "mstored closed the connection"
					      : strerror(errno));
			return;
		}
		st->in.len += (size_t)n;
		size_t off = 0;
		st->in_read = 1;
		for (;;) {
			struct ms_proto_hdr h;
			const char *err = "";
			int ret = ms_proto_frame(st->in.data + off,
						 st->in.len - off,
						 st->max_frame, &h, NULL, &err);
			if (ret == MS_ETRUNC)
				break;
			if (ret < 0) {
				st->in_read = 0;
				store_down(st, err);
				return;
			}
			off += 4 + (size_t)h.len;
			if (!store_frame(st, &h)) {
				st->in_read = 0;
				return;
			}
		}
		st->in_read = 0;
		memmove(st->in.data, st->in.data + off, st->in.len - off);
		st->in.len -= off;
	}
	if (st->w.fd >= 0 && st->in.len == 0)
		ms_buf_free(&st->in);
}

static void store_event(struct lmtp_watch *w, unsigned events)
{
	struct lmtp_store *st = w->ctx;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		store_read(st);
	if (st->w.fd >= 0 && (events & EPOLLOUT))
		store_flush(st);
}

static void store_connect(struct lmtp_store *st)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t pl = strlen(st->path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || pl >= sizeof(sa.sun_path)) {
		if (fd >= 0)
			close(fd);
		store_down(st, "cannot make a socket");
		return;
	}
	memcpy(sa.sun_path, st->path, pl + 1);
	/* a unix socket connects at once, or fails (EAGAIN: backlog full) */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		st->w.fd = -1;
		if (st->backoff <= STORE_RETRY_MIN_MS)
			msg_warn("store.down socket=%s error=%s msg=retrying",
				 msg_q(st->path), msg_q(strerror(err)));
		store_down(st, strerror(err));
		return;
	}
	st->w.fd = fd;
	ms_buf_init(&st->in, st->max_frame + STORE_READ_CHUNK);
	ms_buf_init(&st->out, 0);
	st->out_off = 0;
	if (lmtp_loop_add(st->loop, &st->w, EPOLLIN) < 0) {
		close(fd);
		st->w.fd = -1;
		store_down(st, "cannot watch the socket");
		return;
	}
	st->state = ST_HELLO;
	struct ms_req q = { .op = MS_OP_HELLO };
	q.u.hello.version = MS_PROTO_VERSION;
	q.u.hello.role = MS_ROLE_ADMIN;
	(void)queue_req(st, &q, hello_done, st);
	store_flush(st);
}

/* ---- the tick ---- */

void lmtp_store_tick(struct lmtp_store *st)
{
	uint64_t now = lmtp_now_ms();
	/* failed requests first: their owners may queue new ones */
	struct lmtp_store_req *r = st->failed.head;
	st->failed.head = st->failed.tail = NULL;
	while (r != NULL) {
		struct lmtp_store_req *next = r->next;
		if (r->cb != NULL)
			r->cb(r->ctx, r->status, NULL, r->why);
		free(r);
		r = next;
	}
	if (st->state == ST_DOWN && now >= st->retry_at)
		store_connect(st);
	/* not now - queued_ms: a request queued above (the HELLO of
	   store_connect, or by a failed request's owner) is younger than
	   now, and the difference would wrap */
	if (st->w.fd >= 0 && st->inflight.head != NULL &&
	    now > st->inflight.head->queued_ms + st->timeout_ms)
		store_down(st, "no answer within store_timeout");
	if (st->w.fd >= 0 && st->out_off < st->out.len)
		store_flush(st);
	if (st->inflight.head != NULL)
		lmtp_loop_wake_at(st->loop,
				  st->inflight.head->queued_ms +
					  st->timeout_ms + 1);
	if (st->failed.head != NULL)
		lmtp_loop_wake_at(st->loop, now);
	if (st->state == ST_DOWN)
		lmtp_loop_wake_at(st->loop, st->retry_at);
}

int lmtp_store_new(struct lmtp_loop *loop, const char *path,
		   uint32_t max_frame, uint64_t timeout_ms,
		   struct lmtp_store **st_r)
{
	struct lmtp_store *st = ms_calloc(1, sizeof(*st));
	st->loop = loop;
	st->path = ms_strdup(path);
	st->max_frame = max_frame;
	st->timeout_ms = timeout_ms;
	st->w.fd = -1;
	st->w.fn = store_event;
	st->w.ctx = st;
	st->nbuckets = 1024;
	st->buckets = ms_calloc(st->nbuckets, sizeof(*st->buckets)); /* NOLINT(bugprone-sizeof-expression): an array of pointers */
	ms_buf_init(&st->in, 0);
	ms_buf_init(&st->out, 0);
	/* connected at the first tick: after privileges were dropped */
	st->state = ST_DOWN;
	st->retry_at = 0;
	lmtp_loop_wake_at(loop, lmtp_now_ms());
	*st_r = st;
	return 0;
}

static void free_list(struct req_list *l)
{
	struct lmtp_store_req *r = l->head;
	while (r != NULL) {
		struct lmtp_store_req *next = r->next;
		free(r);
		r = next;
	}
	l->head = l->tail = NULL;
}

void lmtp_store_free(struct lmtp_store **stp)
{
	struct lmtp_store *st = *stp;
	if (st == NULL)
		return;
	if (st->w.fd >= 0) {
		lmtp_loop_del(st->loop, &st->w);
		close(st->w.fd);
	}
	free_list(&st->inflight);
	free_list(&st->failed);
	free(st->buckets);
	ms_buf_free(&st->in);
	ms_buf_free(&st->out);
	free(st->path);
	free(st);
	*stp = NULL;
}

bool lmtp_store_ready(const struct lmtp_store *st)
{
	return st->state == ST_UP;
}

unsigned lmtp_store_inflight(const struct lmtp_store *st)
{
	return (unsigned)st->nreqs;
}
