/*
 * srv.c - event loop and framed connections; see srv.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "srv.h"

#define SRV_READ_CHUNK 65536

enum watch_kind { W_LISTEN, W_CONN, W_FD };

struct watch {
	enum watch_kind kind;
	int fd;
	int admin;			/* W_LISTEN */
	void (*fn)(void *arg);		/* W_FD */
	void *arg;
	struct ms_conn *conn;		/* W_CONN */
};

struct ms_conn {
	struct watch w;
	struct ms_srv *srv;
	int refs;
	int closed;		/* fd gone, or closing */
	int closing;		/* close when out is drained */
	int admin;
	int in_frames;		/* conn_frames is running (no re-entry) */
	uid_t uid;
	struct ms_buf in, out;
	size_t out_off;
	uint64_t last_ms;
	void *data;
	struct ms_conn *prev, *next;
	unsigned events;
};

struct ms_srv {
	int epfd;
	struct ms_srv_limits lim;
	struct ms_srv_handler h;
	void *ctx;
	int stop;
	unsigned nconns;
	struct ms_conn *conns;
	struct watch **watches;
	size_t nwatches;
	struct ms_conn *dead;	/* dropped this turn: released at its end */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ms_srv_new(const struct ms_srv_limits *lim,
	       const struct ms_srv_handler *h, void *ctx,
	       struct ms_srv **srv_r)
{
	struct ms_srv *srv = ms_calloc(1, sizeof(*srv));
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0) {
		int err = -errno;
		free(srv);
		return err;
	}
	srv->lim = *lim;
	srv->h = *h;
	srv->ctx = ctx;
	*srv_r = srv;
	return 0;
}

static int watch_add(struct ms_srv *srv, struct watch *w, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	return 0;
}

static struct watch *watch_new(struct ms_srv *srv)
{
	struct watch *w = ms_calloc(1, sizeof(*w));
	srv->watches = ms_realloc(srv->watches, /* NOLINT(bugprone-sizeof-expression): an array of pointers */
				  (srv->nwatches + 1) * sizeof(struct watch *));
	srv->watches[srv->nwatches++] = w;
	return w;
}

int ms_srv_listen(struct ms_srv *srv, const char *path, unsigned mode,
		  int admin, const char **error_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		*error_r = ms_errf("socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	(void)unlink(path); /* a stale socket of an earlier run */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, mode) < 0 || listen(fd, 128) < 0)
		goto fail;
	struct watch *w = watch_new(srv);
	w->kind = W_LISTEN;
	w->fd = fd;
	w->admin = admin;
	if ((ret = watch_add(srv, w, EPOLLIN)) < 0) {
		errno = -ret;
		goto fail;
	}
	return 0;
fail:
	ret = -errno;
	*error_r = ms_errf("listen on %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return ret;
}

int ms_srv_watch(struct ms_srv *srv, int fd, void (*fn)(void *arg),
		 void *arg)
{
	struct watch *w = watch_new(srv);
	w->kind = W_FD;
	w->fd = fd;
	w->fn = fn;
	w->arg = arg;
	return watch_add(srv, w, EPOLLIN);
}

void ms_srv_set_limits(struct ms_srv *srv, const struct ms_srv_limits *lim)
{
	srv->lim = *lim;
}

unsigned ms_srv_conns(struct ms_srv *srv)
{
	return srv->nconns;
}

static void conn_update_events(struct ms_conn *c)
{
	unsigned ev = 0;
	if (c->closed)
		return;
	if (!c->closing && c->out.len - c->out_off < c->srv->lim.max_out)
		ev |= EPOLLIN;
	if (c->out.len > c->out_off)
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	struct epoll_event e = { .events = ev, .data.ptr = &c->w };
	if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->w.fd, &e) == 0)
		c->events = ev;
}

static void conn_free(struct ms_conn *c)
{
	ms_buf_free(&c->in);
	ms_buf_free(&c->out);
	free(c);
}

/*
 * The fd goes now; the connection's own reference at the end of the
 * loop's turn (srv_reap), so that a connection never vanishes under a
 * function that is still using it; the struct goes with the last
 * reference.
 */
static void conn_drop(struct ms_conn *c)
{
	struct ms_srv *srv = c->srv;
	if (c->closed)
		return;
	c->closed = 1;
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->w.fd, NULL);
	close(c->w.fd);
	c->w.fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	if (srv->h.closed)
		srv->h.closed(srv->ctx, c);
	c->next = srv->dead;
	c->prev = NULL;
	srv->dead = c;
}

static void srv_reap(struct ms_srv *srv)
{
	while (srv->dead != NULL) {
		struct ms_conn *c = srv->dead;
		srv->dead = c->next;
		ms_conn_unref(&c);
	}
}

void ms_conn_ref(struct ms_conn *c)
{
	c->refs++;
}

void ms_conn_unref(struct ms_conn **cp)
{
	struct ms_conn *c = *cp;
	*cp = NULL;
	if (c != NULL && --c->refs == 0)
		conn_free(c);
}

void ms_conn_close(struct ms_conn *c)
{
	if (c->closed)
		return;
	c->closing = 1;
	if (c->out.len == c->out_off)
		conn_drop(c);
	else
		conn_update_events(c);
}

int ms_conn_is_admin(const struct ms_conn *c)
{
	return c->admin;
}

int ms_conn_is_closed(const struct ms_conn *c)
{
	return c->closed || c->closing;
}

uid_t ms_conn_uid(const struct ms_conn *c)
{
	return c->uid;
}

void *ms_conn_data(const struct ms_conn *c)
{
	return c->data;
}

void ms_conn_set_data(struct ms_conn *c, void *data)
{
	c->data = data;
}

static void conn_flush(struct ms_conn *c)
{
	while (!c->closed && c->out.len > c->out_off) {
		ssize_t n = send(c->w.fd, c->out.data + c->out_off,
				 c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			conn_drop(c); /* the client went away */
			return;
		}
		c->out_off += (size_t)n;
	}
	if (c->closed)
		return;
	if (c->out_off == c->out.len) {
		ms_buf_reset(&c->out);
		c->out_off = 0;
		if (c->closing) {
			conn_drop(c);
			return;
		}
	} else if (c->out_off > (1u << 20) && c->out_off * 2 > c->out.len) {
		/* keep the buffer from growing with what was sent */
		memmove(c->out.data, c->out.data + c->out_off,
			c->out.len - c->out_off);
		c->out.len -= c->out_off;
		c->out_off = 0;
	}
	conn_update_events(c);
}

void ms_conn_send(struct ms_conn *c, const void *frame, size_t len)
{
	if (c->closed)
		return;
	if (ms_buf_append(&c->out, frame, len) < 0) {
		msg_warn("client uid=%u: reply queue over its limit; closing",
			 (unsigned)c->uid);
		conn_drop(c);
		return;
	}
	conn_flush(c);
}

/* Hand every whole frame in the input buffer to the handler. */
static void conn_frames(struct ms_conn *c)
{
	struct ms_srv *srv = c->srv;
	size_t off = 0;

	c->in_frames = 1;
	while (!c->closed && !c->closing) {
		struct ms_proto_hdr h;
		size_t need = 0;
		const char *err = "";
		/* a client that does not read its replies is not served
		   further until it does: what it sent waits in c->in */
		if (c->out.len - c->out_off >= srv->lim.max_out)
			break;
		int ret = ms_proto_frame(c->in.data + off, c->in.len - off,
					 srv->lim.max_frame, &h, &need, &err);
		if (ret == MS_ETRUNC)
			break;
		if (ret < 0) {
			/* the stream cannot be trusted past a bad header */
			msg_warn("client uid=%u: %s; closing the connection",
				 (unsigned)c->uid, err);
			ms_proto_error(&c->out, 0, 0, ret, err);
			ms_conn_close(c);
			break;
		}
		size_t flen = 4 + (size_t)h.len;
		srv->h.request(srv->ctx, c, &h, c->in.data + off +
						       MS_PROTO_HDR_SIZE,
			       flen - MS_PROTO_HDR_SIZE);
		off += flen;
	}
	c->in_frames = 0;
	if (c->closed)
		return;
	memmove(c->in.data, c->in.data + off, c->in.len - off);
	c->in.len -= off;
}

static void conn_read(struct ms_conn *c)
{
	for (int rounds = 0; rounds < 16 && !c->closed; rounds++) {
		if (ms_buf_reserve(&c->in, SRV_READ_CHUNK) < 0) {
			/* cannot happen: max is a frame plus a chunk */
			conn_drop(c);
			return;
		}
		ssize_t n = recv(c->w.fd, c->in.data + c->in.len,
				 SRV_READ_CHUNK, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_drop(c);
			break;
		}
		if (n == 0) {
			conn_drop(c);
			break;
		}
		c->in.len += (size_t)n;
		c->last_ms = now_ms();
		conn_frames(c);
		if (c->closed || c->closing)
			break;
		if (c->out.len - c->out_off >= c->srv->lim.max_out)
			break; /* let the client read first */
	}
	if (!c->closed)
		conn_update_events(c);
}

static void srv_accept(struct ms_srv *srv, struct watch *lw)
{
	for (;;) {
		int fd = accept4(lw->fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				msg_warn("accept: %s", strerror(errno));
			return;
		}
		if (srv->nconns >= srv->lim.max_conns) {
			struct ms_buf b;
			ms_buf_init(&b, 0);
			ms_proto_error(&b, 0, 0, -EBUSY,
				       "too many connections");
			(void)!send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
			ms_buf_free(&b);
			close(fd);
			msg_warn("connection refused: %u connections (limit)",
				 srv->nconns);
			continue;
		}
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
			close(fd);
			continue;
		}
		struct ms_conn *c = ms_calloc(1, sizeof(*c));
		c->w.kind = W_CONN;
		c->w.fd = fd;
		c->w.conn = c;
		c->srv = srv;
		c->refs = 1;
		c->admin = lw->admin;
		c->uid = cred.uid;
		c->last_ms = now_ms();
		ms_buf_init(&c->in, srv->lim.max_frame + SRV_READ_CHUNK);
		ms_buf_init(&c->out, srv->lim.max_out + srv->lim.max_frame);
		if (watch_add(srv, &c->w, EPOLLIN) < 0) {
			close(fd);
			conn_free(c);
			continue;
		}
		c->events = EPOLLIN;
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
	}
}

static void srv_idle_check(struct ms_srv *srv)
{
	if (srv->lim.idle_ms == 0)
		return;
	uint64_t now = now_ms();
	struct ms_conn *c = srv->conns;
	while (c != NULL) {
		struct ms_conn *next = c->next;
		if (now - c->last_ms > srv->lim.idle_ms &&
		    c->out.len == c->out_off && c->refs == 1) {
			msg_info("client uid=%u idle for %u ms; closing",
				 (unsigned)c->uid, srv->lim.idle_ms);
			conn_drop(c);
		}
		c = next;
	}
}

int ms_srv_run(struct ms_srv *srv)
{
	struct epoll_event evs[64];

	while (!srv->stop) {
		int n = epoll_wait(srv->epfd, evs, 64, 1000);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			switch (w->kind) {
			case W_LISTEN:
				srv_accept(srv, w);
				break;
			case W_FD:
				w->fn(w->arg);
				break;
			case W_CONN: {
				struct ms_conn *c = w->conn;
				if (evs[i].events & (EPOLLERR | EPOLLHUP) &&
				    !(evs[i].events & EPOLLIN))
					conn_drop(c);
				if (!c->closed &&
				    (evs[i].events & EPOLLOUT)) {
					conn_flush(c);
					/* drained: serve what waited */
					if (!c->closed && !c->in_frames &&
					    c->in.len > 0 &&
					    c->out.len - c->out_off <
						    srv->lim.max_out)
						conn_frames(c);
				}
				if (!c->closed && (evs[i].events & EPOLLIN))
					conn_read(c);
				break;
			}
			}
		}
		if (srv->h.tick)
			srv->h.tick(srv->ctx);
		srv_idle_check(srv);
		srv_reap(srv);
	}
	return 0;
}

void ms_srv_stop(struct ms_srv *srv)
{
	srv->stop = 1;
}

void ms_srv_free(struct ms_srv **srvp)
{
	struct ms_srv *srv = *srvp;
	if (srv == NULL)
		return;
	while (srv->conns != NULL)
		conn_drop(srv->conns);
	srv_reap(srv);
	for (size_t i = 0; i < srv->nwatches; i++) {
		if (srv->watches[i]->kind == W_LISTEN)
			close(srv->watches[i]->fd);
		free(srv->watches[i]);
	}
	free(srv->watches);
	close(srv->epfd);
	free(srv);
	*srvp = NULL;
}
