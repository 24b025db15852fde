/*
 * client.c - blocking protocol client; see client.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "u64map.h"
#include "msg.h"

/* What a read asks for at least, when no frame header says more. */
#define MS_CLIENT_READ_MIN 4096

struct ms_client {
	int fd;
	unsigned timeout_ms;
	uint32_t next_id;
	uint32_t max_frame;
	struct ms_buf in;
	size_t start;		/* in[start..len): not handed out yet */
	size_t handed;		/* the frame the last recv handed out */
	char reason[512];
	/* ms_client_watch: a request whose replies are taken out of the
	   stream */
	uint32_t watch_id;	/* 0: none (or it was refused) */
	int watch_seen;		/* a reply came: the last one's status and
				   count */
	int32_t watch_status;
	uint64_t watch_changes;
	/* the watch's mailbox counts (version 7): mailbox id -> count, as
	   a pointer; known once a reply listed every mailbox, and until a
	   reply comes without them */
	struct ms_u64map watch_mboxes;
	int watch_mboxes_known;
	/* ms_client_request sent and waits for the reply: the next read
	   that finds no whole frame polls first (recv could only say
	   EAGAIN that soon after the send) */
	int await;
	uint64_t drains;	/* ms_client_drains */
};

int ms_client_connect(const char *path, unsigned timeout_ms,
		      struct ms_client **c_r, const char **error_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		*error_r = ms_errf("socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;
		*error_r = ms_errf("connect to %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	/* the timeout, for any blocking read of the socket (ms_client_recv
	   waits in poll, with the same timeout) */
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (timeout_ms % 1000) * 1000 };
	if (timeout_ms != 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		int err = -errno;
		*error_r = ms_errf("setsockopt SO_RCVTIMEO: %s",
				   strerror(errno));
		close(fd);
		return err;
	}
	struct ms_client *c = ms_calloc(1, sizeof(*c));
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	c->next_id = 1;
	c->max_frame = MS_PROTO_MAX_FRAME_LIMIT;
	ms_buf_init(&c->in, (size_t)MS_PROTO_MAX_FRAME_LIMIT + 65536);
	*c_r = c;
	return 0;
}

void ms_client_close(struct ms_client **cp)
{
	struct ms_client *c = *cp;
	if (c == NULL)
		return;
	close(c->fd);
	ms_buf_free(&c->in);
	ms_u64map_free(&c->watch_mboxes);
	free(c);
	*cp = NULL;
}

int ms_client_fd(const struct ms_client *c)
{
	return c->fd;
}

uint32_t ms_client_id(struct ms_client *c)
{
	return c->next_id++;
}

static int wait_fd(struct ms_client *c, short ev)
{
	struct pollfd p = { .fd = c->fd, .events = ev };
	int n;
	do {
		n = poll(&p, 1, c->timeout_ms ? (int)c->timeout_ms : -1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 0 ? -ETIMEDOUT : 0;
}

/*
 * A send tries first and waits (poll, with the timeout) only when the
 * socket is full.  A recv too: it takes what is there, and waits in
 * poll for POLLIN only when nothing is.  It does not block in recv: a
 * task asleep in a unix socket's recv is woken by every wake-up of the
 * socket, and mstored's reading of the request wakes it (the request's
 * bytes leave the sender's send buffer: "writable"), for nothing.  With
 * 64 clients appending that spurious wake-up was 12.5% of mstored's
 * loop (perf: unix_write_space under its recv); poll's wait is woken
 * only by the events it asked for.  ms_client_request, which waits for
 * the reply to what it just sent, polls first: a recv right after the
 * send could only say EAGAIN (an APPEND's reply comes after a flush of
 * the log), one system call in three of each round trip.
 */
int ms_client_send(struct ms_client *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int ret = wait_fd(c, POLLOUT);
				if (ret < 0)
					return ret;
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Wait (with the timeout) until the socket has something to read. */
static int wait_readable(struct ms_client *c, const char **error_r)
{
	int ret = wait_fd(c, POLLIN);
	if (ret < 0)
		*error_r = ret == -ETIMEDOUT
				   ? "server timed out"
				   : ms_errf("poll: %s", strerror(-ret));
	return ret;
}

static void watch_forget_mboxes(struct ms_client *c)
{
	ms_u64map_free(&c->watch_mboxes);
	c->watch_mboxes_known = 0;
}

/* The mailbox counts of a watch's reply: all of them (full) or the
   changed ones.  -1: none to go by (an older server, no room for them,
   or a list that does not decode). */
static int watch_take_mboxes(struct ms_client *c,
			     const struct ms_rep_user_watch *w)
{
	struct ms_proto_iter it;
	struct ms_mbox_chg m;
	int ret;

	if (!w->have_mboxes)
		return -1;
	if (w->full) {
		ms_u64map_free(&c->watch_mboxes);
		c->watch_mboxes_known = 1;
	} else if (!c->watch_mboxes_known) {
		return -1;
	}
	ms_proto_iter_mbox_chgs(&it, &w->mboxes);
	while ((ret = ms_proto_next_mbox_chg(&it, &m)) > 0)
		ms_u64map_put(&c->watch_mboxes, m.mbox_id,
			      (void *)(uintptr_t)m.changes);
	return ret < 0 ? -1 : 0;
}

/* A frame of the watch, whole at p: noted and passed over. */
static void watch_take(struct ms_client *c, const struct ms_proto_hdr *h,
		       const uint8_t *p, size_t flen)
{
	struct ms_reply rep;
	const char *err = "";

	if (ms_reply_decode(h->op, p + MS_PROTO_HDR_SIZE,
			    flen - MS_PROTO_HDR_SIZE, &rep, &err) == 0 &&
	    rep.op == MS_OP_USER_WATCH) {
		c->watch_status = rep.status;
		c->watch_changes = rep.status == 0 ? rep.u.watch.changes : 0;
		if (rep.status != 0 || watch_take_mboxes(c, &rep.u.watch) < 0)
			watch_forget_mboxes(c);
	} else {
		c->watch_status = MS_ECORRUPT;
		c->watch_changes = 0;
		watch_forget_mboxes(c);
	}
	c->watch_seen = 1;
	if (c->watch_status != 0)
		c->watch_id = 0; /* refused: no more frames come */
	c->start += flen;
	if (c->start == c->in.len)
		c->start = c->in.len = 0;
}

void ms_client_watch(struct ms_client *c, uint32_t id)
{
	c->watch_id = id;
	c->watch_seen = 0;
	c->watch_status = 0;
	c->watch_changes = 0;
	watch_forget_mboxes(c);
}

int ms_client_watch_mbox(const struct ms_client *c, uint64_t mbox_id,
			 uint64_t *changes_r)
{
	if (!c->watch_seen || c->watch_status != 0 ||
	    !c->watch_mboxes_known)
		return -ENOENT;
	void *v = mbox_id != 0 ? ms_u64map_get(&c->watch_mboxes, mbox_id)
			       : NULL;
	if (v == NULL)
		return 0;
	*changes_r = (uint64_t)(uintptr_t)v;
	return 1;
}

uint64_t ms_client_drains(const struct ms_client *c)
{
	return c->drains;
}

int ms_client_watch_peek(const struct ms_client *c, int32_t *status_r,
			 uint64_t *changes_r)
{
	if (c->watch_seen) {
		*status_r = c->watch_status;
		*changes_r = c->watch_changes;
		return 1;
	}
	return c->watch_id != 0 ? 0 : -ENOENT;
}

int ms_client_watch_poll(struct ms_client *c, int do_read,
			 int32_t *status_r, uint64_t *changes_r,
			 const char **error_r)
{
	c->start += c->handed;
	c->handed = 0;
	if (c->start == c->in.len)
		c->start = c->in.len = 0;
	/* read on while a read fills what it asked for: the socket may
	   hold more of the watch's replies */
	for (int drained = 0;;) {
		/* the watch's frames at the front: taken; a part of one
		   (a long list of mailboxes) is read on */
		size_t part = 0;
		while (c->watch_id != 0 && c->start < c->in.len) {
			struct ms_proto_hdr h;
			size_t need = 0, have = c->in.len - c->start;
			const char *err = "";
			const uint8_t *p = c->in.data + c->start;
			int ret = ms_proto_frame(p, have, c->max_frame, &h,
						 &need, &err);
			/* a part: the watch's, or too short to tell whose */
			if (ret == MS_ETRUNC && need > have &&
			    (have < MS_PROTO_HDR_SIZE ||
			     ms_get32(p + 8) == c->watch_id))
				part = need - have;
			if (ret != 0 || h.id != c->watch_id)
				break;
			watch_take(c, &h, p, 4 + (size_t)h.len);
		}
		if (c->start < c->in.len && (part == 0 || !do_read)) {
			/* a reply to something else first, or a part of a
			   frame: what the watch says cannot be known now */
			*error_r = "other replies are unread, or a part of one";
			return -EBUSY;
		}
		/* 2: until its first reply is in */
		if (!do_read || c->watch_id == 0 ||
		    (part == 0 && drained &&
		     (do_read != 2 || c->watch_seen)))
			break;
		size_t want = part > MS_CLIENT_READ_MIN ? part
							: MS_CLIENT_READ_MIN;
		if (ms_buf_reserve(&c->in, want) < 0) {
			*error_r = "out of memory";
			return -ENOMEM;
		}
		ssize_t n;
		do
			n = recv(c->fd, c->in.data + c->in.len, want,
				 MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->drains++;
			if (part != 0 && (do_read != 2 || c->watch_seen)) {
				*error_r = "a part of the watch's reply is "
					   "not in yet";
				return -EBUSY;
			}
			if (do_read != 2 || c->watch_seen)
				break;
			int ret = wait_readable(c, error_r);
			if (ret < 0)
				return ret;
			continue;
		}
		if (n < 0) {
			*error_r = ms_errf("recv: %s", strerror(errno));
			return -errno;
		}
		if (n == 0) {
			*error_r = "the server closed the connection";
			return MS_ETRUNC;
		}
		drained = (size_t)n < want;
		if (drained)
			c->drains++;
		c->in.len += (size_t)n;
	}
	int ret = ms_client_watch_peek(c, status_r, changes_r);
	if (ret < 0)
		*error_r = "no watch";
	return ret;
}

static int client_recv(struct ms_client *c, struct ms_proto_hdr *hdr_r,
		       const uint8_t **body_r, size_t *len_r, int wait,
		       const char **error_r)
{
	/* drop the frame handed out last time: passed over, not moved;
	   what follows it moves to the front only when a read needs the
	   room (frames that came whole in one read are never moved) */
	c->start += c->handed;
	c->handed = 0;
	if (c->start == c->in.len)
		c->start = c->in.len = 0;
	for (;;) {
		size_t need = 0;
		const char *err = "";
		const uint8_t *p = c->in.len > 0 ? c->in.data + c->start :
				   NULL;
		int ret = ms_proto_frame(p, c->in.len - c->start,
					 c->max_frame, hdr_r, &need, &err);
		if (ret == 0) {
			size_t flen = 4 + (size_t)hdr_r->len;
			if (c->watch_id != 0 && hdr_r->id == c->watch_id) {
				watch_take(c, hdr_r, p, flen);
				continue;
			}
			*body_r = p + MS_PROTO_HDR_SIZE;
			*len_r = flen - MS_PROTO_HDR_SIZE;
			c->handed = flen;
			return 0;
		}
		if (ret != MS_ETRUNC) {
			*error_r = ms_errf("bad frame from the server: %s", err);
			return ret;
		}
		if (c->start > 0) {
			memmove(c->in.data, c->in.data + c->start,
				c->in.len - c->start);
			c->in.len -= c->start;
			c->start = 0;
		}
		/* room for the rest of the frame when its header said how
		   much, else a page; and whatever the buffer has anyway */
		size_t room = MS_CLIENT_READ_MIN;
		if (need > c->in.len && need - c->in.len > room)
			room = need - c->in.len;
		if (c->in.cap - c->in.len > room)
			room = c->in.cap - c->in.len;
		if (room > c->in.max - c->in.len)
			room = c->in.max - c->in.len;
		if ((ret = ms_buf_reserve(&c->in, room)) < 0) {
			*error_r = "reply over the frame limit";
			return ret;
		}
		if (c->await && wait) {
			c->await = 0;
			if ((ret = wait_readable(c, error_r)) < 0)
				return ret;
		}
		ssize_t n = recv(c->fd, c->in.data + c->in.len, room,
				 MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->drains++;
			if (!wait) {
				*error_r = "no whole reply in yet";
				return -EAGAIN;
			}
			if ((ret = wait_readable(c, error_r)) < 0)
				return ret;
			continue;
		}
		if (n >= 0 && (size_t)n < room)
			c->drains++;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*error_r = ms_errf("recv: %s", strerror(errno));
			return -errno;
		}
		if (n == 0) {
			*error_r = "the server closed the connection";
			return MS_ETRUNC;
		}
		c->in.len += (size_t)n;
	}
}

int ms_client_recv(struct ms_client *c, struct ms_proto_hdr *hdr_r,
		   const uint8_t **body_r, size_t *len_r,
		   const char **error_r)
{
	return client_recv(c, hdr_r, body_r, len_r, 1, error_r);
}

int ms_client_recv_nowait(struct ms_client *c, struct ms_proto_hdr *hdr_r,
			  const uint8_t **body_r, size_t *len_r,
			  const char **error_r)
{
	return client_recv(c, hdr_r, body_r, len_r, 0, error_r);
}

int ms_client_send_req(struct ms_client *c, const struct ms_req *q,
		       uint32_t *id_r, const char **error_r)
{
	struct ms_buf b;
	uint32_t id = ms_client_id(c);
	int ret;

	ms_buf_init(&b, MS_PROTO_MAX_FRAME_LIMIT);
	ret = ms_req_encode(&b, id, q, error_r);
	if (ret == 0 && (ret = ms_client_send(c, b.data, b.len)) < 0)
		*error_r = ms_errf("send: %s", strerror(-ret));
	ms_buf_free(&b);
	*id_r = id;
	return ret;
}

int ms_client_request(struct ms_client *c, const struct ms_req *q,
		      struct ms_reply *rep_r, const char **error_r)
{
	struct ms_proto_hdr h = { 0 };
	const uint8_t *body = NULL;
	size_t len = 0;
	uint32_t id;
	int ret;

	/* not a decoded reply until one is (callers tell the store's
	   answer from a failure of ours by it) */
	rep_r->op = 0;
	ret = ms_client_send_req(c, q, &id, error_r);
	if (ret == -EPIPE || ret == -ECONNRESET) {
		/* the server hung up; it may have said why (a refused
		   connection gets one error frame with id 0) */
		const char *e2 = "";
		if (ms_client_recv(c, &h, &body, &len, &e2) == 0 &&
		    ms_reply_decode(h.op, body, len, rep_r, &e2) == 0 &&
		    rep_r->status < 0) {
			snprintf(c->reason, sizeof(c->reason), "%.*s",
				 (int)rep_r->reason.len,
				 rep_r->reason.s ? rep_r->reason.s : "");
			*error_r = c->reason;
			return rep_r->status;
		}
	}
	if (ret < 0)
		return ret;
	c->await = 1;
	do {
		if ((ret = ms_client_recv(c, &h, &body, &len, error_r)) < 0) {
			c->await = 0;
			return ret;
		}
	} while (h.id != id && h.id != 0);
	c->await = 0;
	if ((ret = ms_reply_decode(h.op, body, len, rep_r, error_r)) < 0)
		return ret;
	if (rep_r->status < 0) {
		snprintf(c->reason, sizeof(c->reason), "%.*s",
			 (int)rep_r->reason.len,
			 rep_r->reason.s ? rep_r->reason.s : "");
		*error_r = c->reason;
	}
	return rep_r->status;
}

int ms_client_hello(struct ms_client *c, const char *user,
		    const char **error_r)
{
	struct ms_req q = { .op = MS_OP_HELLO };
	struct ms_reply rep;
	q.u.hello.version = MS_PROTO_VERSION;
	q.u.hello.role = user ? MS_ROLE_USER : MS_ROLE_ADMIN;
	q.u.hello.user = ms_pstr_c(user);
	return ms_client_request(c, &q, &rep, error_r);
}

int ms_client_fetch_body(struct ms_client *c, const char *mailbox,
			 uint32_t uid, uint32_t chunk, struct ms_buf *out,
			 const char **error_r)
{
	struct ms_req q = { .op = MS_OP_FETCH_BODY };
	struct ms_reply rep;
	uint64_t total = 0;
	int ret;

	ms_buf_reset(out);
	q.u.fetch_body.mailbox = ms_pstr_c(mailbox);
	q.u.fetch_body.uid = uid;
	q.u.fetch_body.max_len = chunk;
	do {
		q.u.fetch_body.offset = out->len;
		if ((ret = ms_client_request(c, &q, &rep, error_r)) < 0)
			return ret;
		total = rep.u.fetch_body.total;
		if ((ret = ms_buf_append(out, rep.u.fetch_body.chunk,
					 rep.u.fetch_body.chunk_len)) < 0) {
			*error_r = "body larger than the buffer allows";
			return ret;
		}
		if (rep.u.fetch_body.chunk_len == 0 && out->len < total) {
			*error_r = "server sent an empty chunk";
			return MS_ECORRUPT;
		}
	} while (out->len < total);
	return 0;
}

int ms_client_mbox_list_each(struct ms_client *c,
			     int (*fn)(void *ctx, const struct ms_mbox_info *m),
			     void *ctx, const char **error_r)
{
	struct ms_req q = { .op = MS_OP_MBOX_LIST };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_mbox_info mi;
	char after[MS_EVENT_MBOX_NAME_MAX];
	size_t after_len = 0;
	int ret, paged = 0;

	for (;;) {
		if (paged) {
			q.u.list.paged = 1;
			q.u.list.after_name = (struct ms_pstr){ after,
								after_len };
			q.u.list.max = MS_CLIENT_MBOX_PAGE;
		}
		ret = ms_client_request(c, &q, &rep, error_r);
		if (ret == MS_ETOOBIG && !paged && rep.op == MS_OP_MBOX_LIST) {
			paged = 1;
			continue;
		}
		if (ret < 0)
			return ret;
		uint32_t n = 0;
		ms_proto_iter_mboxes(&it, &rep.u.mboxes);
		while ((ret = ms_proto_next_mbox(&it, &mi)) > 0) {
			/* a page starts after the name before: a server
			   that does not advance would be asked forever */
			if (n++ == 0 && paged && after_len > 0 &&
			    mi.name.len == after_len &&
			    memcmp(mi.name.s, after, after_len) == 0) {
				*error_r = "MBOX_LIST: a page does not advance";
				return MS_ECORRUPT;
			}
			if (mi.name.len > sizeof(after)) {
				*error_r = "MBOX_LIST: a name over the limit";
				return MS_ECORRUPT;
			}
			memcpy(after, mi.name.s, mi.name.len);
			after_len = mi.name.len;
			if ((ret = fn(ctx, &mi)) < 0)
				return ret;
		}
		if (ret < 0) {
			*error_r = "MBOX_LIST reply does not decode";
			return ret;
		}
		if (!paged || n == 0)
			return 0;
	}
}

int ms_client_fetch_meta_each(struct ms_client *c, const char *mailbox,
			      int (*fn)(void *ctx, const struct ms_msg_meta *m),
			      void *ctx, const char **error_r)
{
	struct ms_req q = { .op = MS_OP_MBOX_STATUS };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_msg_meta m;
	uint32_t step = 100000, lo = 1, uidnext;
	int ret;

	q.u.mbox.name = ms_pstr_c(mailbox);
	if ((ret = ms_client_request(c, &q, &rep, error_r)) < 0)
		return ret;
	uidnext = rep.u.mbox.uidnext;
	for (;;) {
		/* the last request reaches to the end: a message saved
		   after the STATUS has a UID >= uidnext */
		struct ms_uid_range r = { lo, UINT32_MAX };
		if (uidnext > lo && uidnext - lo > step)
			r.hi = lo + step - 1;
		q = (struct ms_req){ .op = MS_OP_FETCH_META };
		q.u.uids.mailbox = ms_pstr_c(mailbox);
		q.u.uids.uids = (struct ms_uid_set){ 1, &r, NULL };
		ret = ms_client_request(c, &q, &rep, error_r);
		/* refused: half of what this request asked (a range to the
		   end counts the UIDs below uidnext) */
		uint32_t asked = r.hi != UINT32_MAX ? r.hi - lo + 1 :
				 uidnext > lo ? uidnext - lo : 1;
		if (ret == MS_ETOOBIG && rep.op == MS_OP_FETCH_META &&
		    asked > 1) {
			step = asked / 2;
			continue;
		}
		if (ret < 0)
			return ret;
		ms_proto_iter_metas(&it, &rep.u.metas);
		while ((ret = ms_proto_next_meta(&it, &m)) > 0)
			if ((ret = fn(ctx, &m)) < 0)
				return ret;
		if (ret < 0) {
			*error_r = "FETCH_META reply does not decode";
			return ret;
		}
		if (r.hi == UINT32_MAX)
			return 0;
		lo = r.hi + 1;
	}
}
