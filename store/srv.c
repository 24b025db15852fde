/*
 * srv.c - event loop and framed connections; see srv.h.
 *
 * Two ways of waiting, behind struct loop_ops (add/modify/remove the
 * interest of a watch, wait for events, free): epoll, and poll requests
 * on an io_uring ring of the loop's own (multishot where the kernel has
 * it).  Either way, readiness only: the reads, writes and accepts are the
 * same non-blocking calls.  The rest of this file sees (watch, events)
 * pairs with epoll's bits, which are poll's bits.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "seg.h"
#include "srv.h"

#define SRV_READ_CHUNK 65536

/* the rest of the file uses epoll's bits for poll's too */
_Static_assert(EPOLLIN == POLLIN && EPOLLOUT == POLLOUT &&
		       EPOLLERR == POLLERR && EPOLLHUP == POLLHUP &&
		       EPOLLRDHUP == POLLRDHUP,
	       "epoll and poll event bits differ");

/* a connection's read interest: data, and the peer's end of writing
   (conn_read reads to the end only when that came) */
#define CONN_IN (EPOLLIN | EPOLLRDHUP)

enum watch_kind { W_LISTEN, W_CONN, W_FD };

struct watch {
	enum watch_kind kind;
	int fd;
	int admin;			/* W_LISTEN */
	const struct ms_srv_stream *stream;	/* W_LISTEN: TCP, streams */
	unsigned nconns;		/* W_LISTEN with stream */
	void (*fn)(void *arg);		/* W_FD */
	void *arg;
	struct ms_conn *conn;		/* W_CONN */
	unsigned events;		/* the interest asked for */
	/* io_uring: the poll request in the kernel, if any */
	int armed;			/* its final CQE has not been seen */
	int cancelling;			/* a cancel for it was queued */
	unsigned armed_events;		/* its mask */
	int armed_multi;		/* multishot */
	int failed;			/* polling it failed: not re-armed */
};

/* What a wait returns: events for a watch (epoll bits), and whether the
   connection reference of a finished poll request is to be dropped once
   the batch has been handled. */
struct loop_ev {
	struct watch *w;
	unsigned events;
	int put;
};

struct loop_ops {
	const char *name;
	int (*add)(struct ms_srv *srv, struct watch *w, unsigned events);
	int (*mod)(struct ms_srv *srv, struct watch *w, unsigned events);
	/* before the fd is closed */
	void (*del)(struct ms_srv *srv, struct watch *w);
	/* up to max events, waiting at most timeout_ms; n or -errno */
	int (*wait)(struct ms_srv *srv, struct loop_ev *evs, int max,
		    int timeout_ms);
	/* after every connection was dropped; before watches are freed */
	void (*free)(struct ms_srv *srv);
};

/* File ranges a connection may have queued (ms_conn_send_file). */
#define CONN_TAILS 8

struct ms_conn {
	struct watch w;
	struct ms_srv *srv;
	int refs;
	int closed;		/* fd gone, or closing */
	int closing;		/* close when out is drained */
	int admin;
	int in_frames;		/* conn_frames is running (no re-entry) */
	int first_read;		/* its first read is being served (CONN_CORK) */
	int flush_due;		/* output held back meanwhile (CONN_CORK) */
	uid_t uid;		/* the peer's (SO_PEERCRED), at accept */
	gid_t gid;
	struct ms_buf in, out;
	size_t out_off;
	/* file ranges sent (sendfile) between the bytes of out: each goes
	   out when out has been sent up to its place, at */
	struct conn_tail {
		int fd;		/* a dup, closed when sent */
		uint64_t off, len;
		size_t at;
		uint64_t epoch;	/* the files' when queued (file_epoch) */
		/* fd is the log's own, lent for ms_conn_send_file's call:
		   never closed here, replaced by a dup before the call
		   returns if the range is not sent by then */
		int lent;
	} tails[CONN_TAILS];
	unsigned ntails;
	uint64_t tail_bytes;	/* of the tails, not sent yet */
	uint64_t last_ms;
	void *data;
	struct ms_conn *prev, *next;
	int in_more;		/* on srv->more (holds a reference) */
	struct ms_conn *more_next;
	int in_held;		/* on srv->held (holds a reference) */
	struct ms_conn *held_next;
	/* a stream connection (ms_srv_listen_tcp) */
	const struct ms_srv_stream *stream;
	struct watch *lw;	/* its listener */
	int paused;		/* input not handed on (ms_conn_pause) */
	/* an internal connection (ms_srv_conn_internal) */
	int internal;
	void (*deliver)(void *arg, const void *frame, size_t len);
	void *deliver_arg;
};

struct ms_srv {
	const struct loop_ops *loop;
	int epfd;		/* epoll */
	struct io_uring ring;	/* io_uring */
	int multishot;		/* io_uring: multishot polls */
	int npolls;		/* io_uring: armed poll requests */
	int shutting;		/* io_uring: no re-arming (ms_srv_free) */
	int failed;		/* io_uring: -errno, for ms_srv_run */
	/*
	 * Edge-triggered readiness (multishot polls fire on wake-ups, not
	 * while data waits): a connection whose read stopped at its round
	 * limit with data possibly left goes on more, read again next turn.
	 */
	int edge;
	struct ms_conn *more;
	struct ms_conn *held;	/* output held back (ms_conn_hold) */
	int wake_ms; /* a turn wanted within this (-1: none; ms_srv_wake_in) */
	uint64_t idle_checked_ms;	/* srv_idle_check's last walk */
	uint64_t idle_every_ms;		/* and how long until the next */
	uint64_t n_file_queued;	/* file ranges that waited (a dup each) */
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

/* ---- epoll ---------------------------------------------------------- */

static int ep_ctl(struct ms_srv *srv, int op, struct watch *w,
		  unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(srv->epfd, op, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

static int ep_add(struct ms_srv *srv, struct watch *w, unsigned events)
{
	return ep_ctl(srv, EPOLL_CTL_ADD, w, events);
}

static int ep_mod(struct ms_srv *srv, struct watch *w, unsigned events)
{
	return ep_ctl(srv, EPOLL_CTL_MOD, w, events);
}

static void ep_del(struct ms_srv *srv, struct watch *w)
{
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

static int ep_wait(struct ms_srv *srv, struct loop_ev *evs, int max,
		   int timeout_ms)
{
	struct epoll_event ev[64];
	if (max > 64)
		max = 64;
	int n = epoll_wait(srv->epfd, ev, max, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++)
		evs[i] = (struct loop_ev){ ev[i].data.ptr, ev[i].events, 0 };
	return n;
}

static void ep_free(struct ms_srv *srv)
{
	close(srv->epfd);
}

static const struct loop_ops epoll_loop = {
	"epoll", ep_add, ep_mod, ep_del, ep_wait, ep_free,
};

/* ---- io_uring --------------------------------------------------------
 *
 * Each watch has at most one poll request in the kernel at a time, with
 * user_data = the watch (armed = its final CQE, the one without
 * IORING_CQE_F_MORE, has not been seen yet).  A new interest cancels it
 * (IORING_OP_ASYNC_CANCEL: POLL_REMOVE can answer -EALREADY while the
 * poll is being woken and leave a multishot poll armed, which a cancel
 * cannot) and the final CQE re-arms it with the interest in force then.
 *
 * Connections and freed memory: a poll request armed on a connection
 * holds a reference to it (ms_conn_ref at arm), dropped only after the
 * request's final CQE was handled (the put of its loop_ev, after the
 * batch).  Closing a connection queues a cancel and closes the fd; the
 * struct lives on until the -ECANCELED (or last event) CQE has come back,
 * so no CQE can carry a pointer to freed memory, and no two live
 * requests ever share a user_data: memory is reused only after its
 * request is over.  The cancel itself carries user_data 0 (ignored), and
 * it is submitted (and runs, inline) before the CQE that ends its
 * target is reaped, so it can never hit a later request of the same
 * address.  ms_srv_free cancels everything and reaps until no request
 * is left, then tears the ring down.
 */

#define URING_ENTRIES 256
#define UD_IGNORE 0

static struct io_uring_sqe *ur_sqe(struct ms_srv *srv)
{
	for (int i = 0; i < 4; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&srv->ring);
		if (sqe != NULL)
			return sqe;
		(void)io_uring_submit(&srv->ring);	/* full: make room */
	}
	msg_fatal("loop.failed msg=\"the io_uring submission queue stays "
		  "full\"");
}

static void ur_arm(struct ms_srv *srv, struct watch *w)
{
	struct io_uring_sqe *sqe = ur_sqe(srv);
	if (srv->multishot)
		io_uring_prep_poll_multishot(sqe, w->fd, w->events);
	else
		io_uring_prep_poll_add(sqe, w->fd, w->events);
	io_uring_sqe_set_data(sqe, w);
	w->armed = 1;
	w->cancelling = 0;
	w->armed_events = w->events;
	w->armed_multi = srv->multishot;
	srv->npolls++;
	if (w->kind == W_CONN)
		ms_conn_ref(w->conn);	/* dropped after its final CQE */
}

static void ur_cancel(struct ms_srv *srv, struct watch *w)
{
	if (!w->armed || w->cancelling)
		return;
	struct io_uring_sqe *sqe = ur_sqe(srv);
	io_uring_prep_cancel(sqe, w, 0);
	io_uring_sqe_set_data64(sqe, UD_IGNORE);
	w->cancelling = 1;
}

static int ur_mod(struct ms_srv *srv, struct watch *w, unsigned events)
{
	w->events = events;
	if (!w->armed)
		ur_arm(srv, w);
	else if (w->armed_events != events)
		ur_cancel(srv, w);	/* the final CQE re-arms */
	return 0;
}

static void ur_del(struct ms_srv *srv, struct watch *w)
{
	w->events = 0;
	ur_cancel(srv, w);
}

static int ur_live(const struct ms_srv *srv, const struct watch *w)
{
	return !srv->shutting && !w->failed &&
	       (w->kind != W_CONN || !w->conn->closed);
}

/* Reap up to max CQEs into evs.  A listener or an fd watch that cannot
   be polled any more is left unarmed, and the loop fails (srv->failed). */
static int ur_reap(struct ms_srv *srv, struct loop_ev *evs, int max)
{
	struct io_uring_cqe *cqe;
	int n = 0;

	while (n < max && io_uring_peek_cqe(&srv->ring, &cqe) == 0) {
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		int res = cqe->res;
		int final = !(cqe->flags & IORING_CQE_F_MORE);
		io_uring_cqe_seen(&srv->ring, cqe);
		if (ud == UD_IGNORE || ud == LIBURING_UDATA_TIMEOUT)
			continue;	/* a cancel's own answer */
		struct watch *w = (struct watch *)(uintptr_t)ud;
		unsigned ev = 0;
		if (res >= 0) {
			ev = (unsigned)res;
		} else if (res == -EINVAL && final && w->armed_multi) {
			/* a kernel before 5.13: single-shot polls, re-armed
			   after each event (level-triggered at each arm) */
			if (srv->multishot)
				msg_info("loop.fallback what=multishot_poll "
					 "msg=\"re-arming single polls\"");
			srv->multishot = 0;
			srv->edge = 0;
		} else if (res != -ECANCELED) {
			if (w->kind != W_CONN && ur_live(srv, w)) {
				msg_error("loop.poll_failed fd=%d error=%s",
					  w->fd, msg_q(strerror(-res)));
				w->failed = 1;
				srv->failed = res;
			}
			ev = EPOLLERR;
		}
		int put = 0;
		if (final) {
			w->armed = 0;
			w->cancelling = 0;
			srv->npolls--;
			put = w->kind == W_CONN;
			if (ur_live(srv, w))
				ur_arm(srv, w);	/* with the interest now */
		}
		/* what a poll with an older mask saw, filtered as epoll
		   filters: the asked-for bits, errors and hang-ups */
		ev &= w->events | EPOLLERR | EPOLLHUP;
		if (ev != 0 || put)
			evs[n++] = (struct loop_ev){ w, ev, put };
	}
	return n;
}

static int ur_wait(struct ms_srv *srv, struct loop_ev *evs, int max,
		   int timeout_ms)
{
	struct io_uring_cqe *cqe;
	int ret;

	if (srv->failed < 0 && !srv->shutting)
		return srv->failed;
	if (timeout_ms == 0 || io_uring_cq_ready(&srv->ring) > 0) {
		ret = io_uring_submit(&srv->ring);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};
		ret = io_uring_submit_and_wait_timeout(&srv->ring, &cqe, 1, &ts,
						       NULL);
	}
	/* -ETIME: timed out; -EBUSY/-EAGAIN: reap first, submit later */
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY &&
	    ret != -EAGAIN)
		return ret;
	return ur_reap(srv, evs, max);
}

static void ur_free(struct ms_srv *srv)
{
	struct loop_ev evs[64];
	uint64_t deadline = now_ms() + 5000;

	srv->shutting = 1;
	for (size_t i = 0; i < srv->nwatches; i++)
		ur_cancel(srv, srv->watches[i]);
	/* every connection was dropped, so its cancel is queued: reap
	   until each request has ended, and drop what they held */
	while (srv->npolls > 0) {
		int n = ur_wait(srv, evs, 64, 100);
		if (n < 0 || now_ms() > deadline) {
			msg_warn("loop.polls_left count=%d",
				 srv->npolls);
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].put) {
				struct ms_conn *c = evs[i].w->conn;
				ms_conn_unref(&c);
			}
		}
	}
	io_uring_queue_exit(&srv->ring);
}

static const struct loop_ops uring_loop = {
	"uring", ur_mod, ur_mod, ur_del, ur_wait, ur_free,
};

/*
 * Cooperative task work.  A poll request that fires (a client wrote)
 * completes as task work of the loop's thread, and by default the kernel
 * interrupts that thread to run it when it is running on another core:
 * an IPI per wake-up, which in a VM is an exit to the hypervisor.  At 64
 * appending clients that was 7,000 IPIs a second to mstored's core, and
 * perf put 29% of the loop's samples where interrupts end.  With
 * IORING_SETUP_COOP_TASKRUN the work waits for the thread's next entry
 * into the kernel, which the loop makes at every read and write and
 * whenever it waits (a sleeping loop is still woken at once);
 * IORING_SETUP_TASKRUN_FLAG lets a peek at the completions see that work
 * is pending and enter for it.  bench-store, 4 KiB appends, 64 clients,
 * 3 interleaved runs each: 14,851-15,639 -> 18,262-18,792 appends/s, the
 * loop thread's CPU 23-26 -> 18-19 us per record.  Kernels before 5.19
 * refuse the flags: the ring is then set up without them, as it is for
 * MS_SRV_LOOP_URING_ONESHOT (the loop of older kernels, for tests).
 */
#define UR_COOP (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG)

/* modern: multishot polls and cooperative task work, where the kernel
   has them */
static int ur_setup(struct ms_srv *srv, int modern)
{
	int ret = io_uring_queue_init(URING_ENTRIES, &srv->ring,
				      modern ? UR_COOP : 0);
	if (ret == -EINVAL && modern) {
		msg_info("loop.fallback what=coop_taskrun msg=\"task work "
			 "interrupts the loop\"");
		ret = io_uring_queue_init(URING_ENTRIES, &srv->ring, 0);
	}
	if (ret < 0)
		return ret;
	srv->multishot = modern;
	srv->edge = modern;
	return 0;
}

/* ---- the server --------------------------------------------------------- */

int ms_srv_new(const struct ms_srv_limits *lim,
	       const struct ms_srv_handler *h, void *ctx,
	       enum ms_srv_loop loop, struct ms_srv **srv_r)
{
	struct ms_srv *srv = ms_calloc(1, sizeof(*srv));
	srv->epfd = -1;
	srv->wake_ms = -1;
	if (loop != MS_SRV_LOOP_EPOLL) {
		int ret = ur_setup(srv, loop != MS_SRV_LOOP_URING_ONESHOT);
		if (ret == 0)
			srv->loop = &uring_loop;
		else
			msg_warn("loop.fallback what=io_uring error=%s loop=epoll",
				 msg_q(strerror(-ret)));
	}
	if (srv->loop == NULL) {
		srv->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (srv->epfd < 0) {
			int err = -errno;
			free(srv);
			return err;
		}
		srv->loop = &epoll_loop;
	}
	srv->lim = *lim;
	srv->h = *h;
	srv->ctx = ctx;
	*srv_r = srv;
	return 0;
}

const char *ms_srv_loop_name(const struct ms_srv *srv)
{
	static const char *const names[2][2] = {
		{ "io_uring (poll)", "io_uring (multishot poll)" },
		{ "io_uring (poll, cooperative task work)",
		  "io_uring (multishot poll, cooperative task work)" },
	};
	if (srv->loop != &uring_loop)
		return srv->loop->name;
	return names[(srv->ring.flags & UR_COOP) != 0][srv->multishot != 0];
}

int ms_srv_loop_uring(const struct ms_srv *srv)
{
	return srv->loop == &uring_loop;
}

uint64_t ms_srv_file_queued(const struct ms_srv *srv)
{
	return srv->n_file_queued;
}

static int watch_add(struct ms_srv *srv, struct watch *w, unsigned events)
{
	return srv->loop->add(srv, w, events);
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

int ms_srv_listen_tcp(struct ms_srv *srv, const struct sockaddr *sa,
		      socklen_t salen, const struct ms_srv_stream *st,
		      unsigned *port_r, const char **error_r)
{
	struct sockaddr_storage bound = { 0 };
	socklen_t blen = sizeof(bound);
	int one = 1, ret;
	int fd = socket(sa->sa_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, sa, salen) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &blen) < 0)
		goto fail;
	struct watch *w = watch_new(srv);
	w->kind = W_LISTEN;
	w->fd = fd;
	w->stream = st;
	if ((ret = watch_add(srv, w, EPOLLIN)) < 0) {
		errno = -ret;
		goto fail;
	}
	if (port_r != NULL && bound.ss_family == AF_INET6) {
		struct sockaddr_in6 s6;
		memcpy(&s6, &bound, sizeof(s6));
		*port_r = ntohs(s6.sin6_port);
	} else if (port_r != NULL) {
		struct sockaddr_in s4;
		memcpy(&s4, &bound, sizeof(s4));
		*port_r = ntohs(s4.sin_port);
	}
	return 0;
fail:
	ret = -errno;
	*error_r = ms_errf("listen on TCP: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return ret;
}

static void conn_frames(struct ms_conn *c);
static void conn_update_events(struct ms_conn *c);

void ms_conn_pause(struct ms_conn *c, int pause)
{
	if (c->closed || c->paused == (pause != 0))
		return;
	c->paused = pause != 0;
	/* unpaused: serve what waited (unless we are inside its input) */
	if (!c->paused && !c->in_frames && c->in.len > 0)
		conn_frames(c);
	if (!c->closed)
		conn_update_events(c);
}

struct ms_conn *ms_srv_conn_internal(struct ms_srv *srv, int admin,
				     void (*deliver)(void *arg,
						     const void *frame,
						     size_t len),
				     void *arg)
{
	struct ms_conn *c = ms_calloc(1, sizeof(*c));
	c->w.kind = W_CONN;
	c->w.fd = -1;
	c->w.conn = c;
	c->srv = srv;
	c->refs = 1;
	c->admin = admin;
	c->uid = (uid_t)-1;
	c->gid = (gid_t)-1;
	c->internal = 1;
	c->deliver = deliver;
	c->deliver_arg = arg;
	ms_buf_init(&c->in, 1);
	ms_buf_init(&c->out, 1);
	return c;
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
	srv->idle_every_ms = 0;	/* walk next turn, with the new limit */
}

void ms_srv_wake_in(struct ms_srv *srv, unsigned ms)
{
	if (ms > 1000)
		ms = 1000;
	if (srv->wake_ms < 0 || (int)ms < srv->wake_ms)
		srv->wake_ms = (int)ms;
}

unsigned ms_srv_conns(struct ms_srv *srv)
{
	return srv->nconns;
}

/* Reply bytes queued and not sent yet, file ranges included. */
static uint64_t conn_pending(const struct ms_conn *c)
{
	return c->out.len - c->out_off + c->tail_bytes;
}

static uint64_t file_epoch(struct ms_srv *srv)
{
	return srv->h.file_epoch != NULL ? srv->h.file_epoch(srv->ctx) : 0;
}

static void conn_tails_close(struct ms_conn *c)
{
	for (unsigned i = 0; i < c->ntails; i++)
		if (!c->tails[i].lent)
			close(c->tails[i].fd);
	c->ntails = 0;
	c->tail_bytes = 0;
}

static void conn_update_events(struct ms_conn *c)
{
	unsigned ev = 0;
	if (c->closed || c->internal)
		return;
	if (!c->closing && !c->paused &&
	    conn_pending(c) < c->srv->lim.max_out)
		ev |= CONN_IN;
	if (conn_pending(c) > 0)
		ev |= EPOLLOUT;
	if (ev == c->w.events)
		return;
	(void)c->srv->loop->mod(c->srv, &c->w, ev);
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
	conn_tails_close(c);
	if (c->internal) {
		if (srv->h.closed)
			srv->h.closed(srv->ctx, c);
		c->next = srv->dead;
		srv->dead = c;
		return;
	}
	srv->loop->del(srv, &c->w);
	close(c->w.fd);
	c->w.fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	if (c->stream) {
		c->lw->nconns--;
		c->stream->closed(c->stream->ctx, c);
	} else if (srv->h.closed) {
		srv->h.closed(srv->ctx, c);
	}
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
	if (conn_pending(c) == 0)
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

gid_t ms_conn_gid(const struct ms_conn *c)
{
	return c->gid;
}

int ms_conn_peer_groups(const struct ms_conn *c, gid_t *gids, int max)
{
	socklen_t len = (socklen_t)((size_t)max * sizeof(gid_t));
	if (c->internal || c->stream || c->closed)
		return -EINVAL;
	if (getsockopt(c->w.fd, SOL_SOCKET, SO_PEERGROUPS, gids, &len) < 0)
		return -errno;	/* ERANGE: more than max */
	return (int)(len / sizeof(gid_t));
}

void *ms_conn_data(const struct ms_conn *c)
{
	return c->data;
}

void ms_conn_set_data(struct ms_conn *c, void *data)
{
	c->data = data;
}

/* Send out's bytes up to end.  1: some sent; 0: the socket is full;
   -1: the client went away. */
static int conn_send_out(struct ms_conn *c, size_t end)
{
	ssize_t n;
	do
		n = send(c->w.fd, c->out.data + c->out_off, end - c->out_off,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -1;
	c->out_off += (size_t)n;
	return 1;
}

/* Send from the first file range, and let go of it once all sent; as
   conn_send_out(). */
static int conn_send_tail(struct ms_conn *c)
{
	struct conn_tail *t = &c->tails[0];
	off_t off = (off_t)t->off;
	ssize_t n;
	if (file_epoch(c->srv) != t->epoch) {
		/* a record was rewritten in the files since this range's
		   bytes were checked: a file cut short and healed reads
		   zeros where the cut was */
		msg_warn("client.closed uid=%u reason=reply_file error=%s",
			 (unsigned)c->uid,
			 msg_q("the store's files were rewritten (healed) "
			       "since the range was read"));
		return -1;
	}
	do
		n = sendfile(c->w.fd, t->fd, &off,
			     t->len < (1u << 30) ? (size_t)t->len : 1u << 30);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0) {
		/* the range past the file's end, or the file unreadable:
		   the frame cannot be finished */
		msg_warn("client.closed uid=%u reason=reply_file error=%s",
			 (unsigned)c->uid,
			 msg_q(n == 0 ? "file shorter than the range"
				      : ms_strerror(-errno)));
		return -1;
	}
	t->off += (uint64_t)n;
	t->len -= (uint64_t)n;
	c->tail_bytes -= (uint64_t)n;
	if (t->len == 0) {
		if (!t->lent)
			close(t->fd);
		c->ntails--;
		memmove(&c->tails[0], &c->tails[1],
			c->ntails * sizeof(c->tails[0]));
	}
	return 1;
}

static void conn_flush(struct ms_conn *c)
{
	int r = 1;
	while (!c->closed && r > 0) {
		/* out up to the first file range's place, then the range */
		size_t end = c->ntails > 0 ? c->tails[0].at : c->out.len;
		if (c->out_off < end)
			r = conn_send_out(c, end);
		else if (c->ntails > 0)
			r = conn_send_tail(c);
		else
			break;
		if (r < 0) {
			conn_drop(c);
			return;
		}
	}
	if (c->closed)
		return;
	if (c->out_off == c->out.len && c->ntails == 0) {
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
		for (unsigned i = 0; i < c->ntails; i++)
			c->tails[i].at -= c->out_off;
		c->out_off = 0;
	}
	conn_update_events(c);
}

void ms_conn_send(struct ms_conn *c, const void *frame, size_t len)
{
	if (c->closed)
		return;
	if (c->internal) {
		c->deliver(c->deliver_arg, frame, len);
		return;
	}
	if (ms_buf_append(&c->out, frame, len) < 0) {
		msg_warn("client.closed uid=%u reason=reply_queue_full",
			 (unsigned)c->uid);
		conn_drop(c);
		return;
	}
	ms_conn_queued(c);
}

/*
 * The part of the last file range that the socket did not take keeps its
 * bytes: a dup of the log's descriptor, which the log may close before
 * the socket drains (a segment compacted or retired); without a
 * descriptor to spare, the bytes themselves, read into the queue in the
 * range's place (it is the last thing queued).  -1 if neither.
 */
static int conn_tail_keep(struct ms_conn *c)
{
	struct conn_tail *t = &c->tails[c->ntails - 1];
	int dup_fd = fcntl(t->fd, F_DUPFD_CLOEXEC, 0);
	if (dup_fd >= 0) {
		t->fd = dup_fd;
		t->lent = 0;
		c->srv->n_file_queued++;
		return 0;
	}
	size_t at = c->out.len;
	if (t->at != at || ms_buf_resize(&c->out, at + t->len) < 0 ||
	    ms_pread_full(t->fd, c->out.data + at, t->len, t->off) < 0) {
		c->out.len = at;
		return -1;
	}
	c->tail_bytes -= t->len;
	c->ntails--;
	return 0;
}

/*
 * The range goes out with the log's own descriptor while this call
 * runs: a reply that the socket takes at once (a client reading as fast
 * as the store answers, as Dovecot's read-ahead does) costs no dup and
 * no close.  What is still queued when the call returns is kept by
 * conn_tail_keep.
 */
int ms_conn_send_file(struct ms_conn *c, const void *head, size_t hlen,
		      int fd, uint64_t off, uint64_t len)
{
	if (c->closed || c->internal || c->ntails == CONN_TAILS)
		return -1;
	if (ms_buf_append(&c->out, head, hlen) < 0) {
		msg_warn("client.closed uid=%u reason=reply_queue_full",
			 (unsigned)c->uid);
		conn_drop(c);
		return 0;
	}
	c->tails[c->ntails++] = (struct conn_tail){ fd, off, len, c->out.len,
						    file_epoch(c->srv), 1 };
	c->tail_bytes += len;
	ms_conn_queued(c);
	/* ranges leave from the front: this one, if left, is the last */
	if (!c->closed && c->ntails > 0 && c->tails[c->ntails - 1].lent &&
	    conn_tail_keep(c) < 0) {
		msg_warn("client.closed uid=%u reason=reply_file error=%s",
			 (unsigned)c->uid,
			 msg_q("no descriptor and no room for the range"));
		conn_drop(c);
	}
	return 0;
}

struct ms_buf *ms_conn_out(struct ms_conn *c)
{
	return c->closed || c->internal ? NULL : &c->out;
}

/*
 * The replies to the requests of a connection's first read go out
 * together, at the end of conn_frames: one write, one wake-up of the
 * client, for the HELLO and the USER_WATCH that a Dovecot session sends
 * together at login; unless this much is queued before, or the client's
 * max_out: then at once (conn_frames stops serving a client whose queue
 * is at max_out, and waits for it to drain: never for bytes held back
 * here).  Only the first read: a later run of pipelined requests (the
 * plugin's read-ahead of bodies, a LIST-STATUS's folders) is answered
 * as each reply is ready, so that the client works on the first replies
 * while the rest are made (holding every read's replies to its end made
 * bench-imap's LIST-STATUS row 0.83 ms against 0.70).
 */
#define CONN_CORK ((uint64_t)64 << 10)

void ms_conn_queued(struct ms_conn *c)
{
	if (c->closed)
		return;
	if (c->stream)
		c->last_ms = now_ms();
	if (c->in_frames && c->first_read && conn_pending(c) < CONN_CORK &&
	    conn_pending(c) < c->srv->lim.max_out) {
		c->flush_due = 1;
		return;
	}
	conn_flush(c);
}

void ms_conn_hold(struct ms_conn *c)
{
	if (c->closed || c->in_held)
		return;
	c->in_held = 1;
	ms_conn_ref(c);
	c->held_next = c->srv->held;
	c->srv->held = c;
}

void ms_srv_flush_held(struct ms_srv *srv)
{
	while (srv->held != NULL) {
		struct ms_conn *c = srv->held;
		srv->held = c->held_next;
		c->in_held = 0;
		/* sent already with a later frame, or not yet */
		ms_conn_queued(c);
		ms_conn_unref(&c);
	}
}

/* A stream connection: hand its input on until nothing is consumed. */
static size_t conn_stream_input(struct ms_conn *c)
{
	struct ms_srv *srv = c->srv;
	size_t off = 0;

	while (!c->closed && !c->closing && !c->paused && off < c->in.len &&
	       conn_pending(c) < srv->lim.max_out) {
		size_t n = c->stream->input(c->stream->ctx, c,
					    c->in.data + off, c->in.len - off);
		if (n == 0)
			break;
		off += n;
		c->last_ms = now_ms();
	}
	return off;
}

/* Hand every whole frame in the input buffer to the handler. */
static void conn_frames(struct ms_conn *c)
{
	struct ms_srv *srv = c->srv;
	size_t off = 0;

	c->in_frames = 1;
	if (c->stream)
		off = conn_stream_input(c);
	while (!c->stream && !c->closed && !c->closing) {
		struct ms_proto_hdr h;
		size_t need = 0;
		const char *err = "";
		/* a client that does not read its replies is not served
		   further until it does: what it sent waits in c->in */
		if (conn_pending(c) >= srv->lim.max_out)
			break;
		int ret = ms_proto_frame(c->in.data + off, c->in.len - off,
					 srv->lim.max_frame, &h, &need, &err);
		if (ret == MS_ETRUNC)
			break;
		if (ret < 0) {
			/* the stream cannot be trusted past a bad header */
			msg_warn("client.closed uid=%u reason=bad_frame error=%s",
				 (unsigned)c->uid, msg_q(err));
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
	c->first_read = 0;
	if (c->flush_due) {
		c->flush_due = 0;
		if (!c->closed)
			conn_flush(c);
	}
	if (c->closed)
		return;
	memmove(c->in.data, c->in.data + off, c->in.len - off);
	c->in.len -= off;
}

/* Read again next turn (edge-triggered loop; see ms_srv.edge). */
static void conn_more(struct ms_conn *c)
{
	if (c->in_more)
		return;
	c->in_more = 1;
	ms_conn_ref(c);
	c->more_next = c->srv->more;
	c->srv->more = c;
}

/*
 * Read and serve what came.  A short read emptied the socket, and what
 * comes after it wakes the loop again (level- or edge-triggered), so it
 * ends the read without a recv that would only say EAGAIN; but when the
 * peer's end of writing was seen (the event's EPOLLRDHUP, or ev 0: no
 * event, read on) the read goes on until recv says so, or an
 * edge-triggered loop would never see the end.
 */
static void conn_read(struct ms_conn *c, unsigned ev)
{
	int rounds;
	for (rounds = 0; rounds < 16 && !c->closed; rounds++) {
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
		if (c->stream == NULL)
			c->last_ms = now_ms();
		conn_frames(c);
		if (c->closed || c->closing || c->paused)
			break;
		if (conn_pending(c) >= c->srv->lim.max_out)
			break; /* let the client read first */
		if ((size_t)n < SRV_READ_CHUNK &&
		    (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) == EPOLLIN)
			break;
	}
	if (!c->closed)
		conn_update_events(c);
	/* stopped with data perhaps left: no new wake-up may come for it */
	if (rounds == 16 && !c->closed && c->srv->edge)
		conn_more(c);
}

/* The connections conn_read left with data perhaps unread. */
static void srv_more(struct ms_conn *list)
{
	while (list != NULL) {
		struct ms_conn *c = list;
		list = c->more_next;
		c->in_more = 0;
		if (!c->closed && (c->w.events & EPOLLIN))
			conn_read(c, 0);
		ms_conn_unref(&c);
	}
}

static void conn_link(struct ms_srv *srv, struct ms_conn *c)
{
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
}

/* A connection of a stream listener: no frames, no credentials. */
static void srv_accept_stream(struct ms_srv *srv, struct watch *lw, int fd)
{
	const struct ms_srv_stream *st = lw->stream;
	if (srv->nconns >= srv->lim.max_conns || lw->nconns >= st->max_conns) {
		/* nothing to say in a protocol we do not know here */
		close(fd);
		msg_warn("connection.refused kind=stream connections=%u "
			 "reason=limit",
			 lw->nconns);
		return;
	}
	struct ms_conn *c = ms_calloc(1, sizeof(*c));
	c->w.kind = W_CONN;
	c->w.fd = fd;
	c->w.conn = c;
	c->srv = srv;
	c->refs = 1;
	c->uid = (uid_t)-1;
	c->gid = (gid_t)-1;
	c->last_ms = now_ms();
	c->stream = st;
	c->lw = lw;
	/* its limit may be the smallest: walk often enough for it */
	if (st->timeout_ms != 0 && st->timeout_ms / 4 < srv->idle_every_ms)
		srv->idle_every_ms = st->timeout_ms / 4;
	ms_buf_init(&c->in, st->max_in + SRV_READ_CHUNK);
	ms_buf_init(&c->out, srv->lim.max_out + srv->lim.max_frame);
	if (watch_add(srv, &c->w, CONN_IN) < 0) {
		close(fd);
		conn_free(c);
		return;
	}
	lw->nconns++;
	conn_link(srv, c);
}

static void srv_accept(struct ms_srv *srv, struct watch *lw)
{
	for (;;) {
		int fd = accept4(lw->fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				msg_warn("accept.failed error=%s",
					 msg_q(strerror(errno)));
			return;
		}
		if (lw->stream != NULL) {
			srv_accept_stream(srv, lw, fd);
			continue;
		}
		if (srv->nconns >= srv->lim.max_conns) {
			struct ms_buf b;
			ms_buf_init(&b, 0);
			ms_proto_error(&b, 0, 0, -EBUSY,
				       "too many connections");
			(void)!send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
			ms_buf_free(&b);
			close(fd);
			msg_warn("connection.refused connections=%u reason=limit",
				 srv->nconns);
			continue;
		}
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
			close(fd);
			continue;
		}
		/* the admin socket: our own uid and root only, whatever the
		   socket file's mode (docs/protocol.md, roles) */
		if (lw->admin && cred.uid != 0 && cred.uid != geteuid()) {
			struct ms_buf b;
			ms_buf_init(&b, 0);
			ms_proto_error(&b, 0, 0, -EACCES,
				       "the admin socket takes mstored's own "
				       "uid and root only");
			(void)!send(fd, b.data, b.len,
				    MSG_NOSIGNAL | MSG_DONTWAIT);
			ms_buf_free(&b);
			close(fd);
			msg_warn("connection.refused socket=admin peer_uid=%u "
				 "peer_pid=%d mstored_uid=%u "
				 "reason=\"not mstored's uid, not root\"",
				 (unsigned)cred.uid, (int)cred.pid,
				 (unsigned)geteuid());
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
		c->gid = cred.gid;
		c->last_ms = now_ms();
		ms_buf_init(&c->in, srv->lim.max_frame + SRV_READ_CHUNK);
		ms_buf_init(&c->out, srv->lim.max_out + srv->lim.max_frame);
		if (watch_add(srv, &c->w, CONN_IN) < 0) {
			close(fd);
			conn_free(c);
			continue;
		}
		conn_link(srv, c);
		c->first_read = 1;
		/* a client sends its first request right after connecting
		   (the Dovecot plugin: HELLO and USER_WATCH in one write), so
		   it is mostly here already: served now, not a turn later
		   (which begins with a wait, and may do a scrub step first).
		   Nothing there yet: one recv says EAGAIN, and the watch just
		   added wakes the loop when it comes. */
		conn_read(c, EPOLLIN);
	}
}

/*
 * Close the connections idle past their limit.  A walk of every
 * connection, so not at every turn: a store with thousands of IMAP
 * sessions parked in IDLE turns thousands of times a second under load,
 * and the walk then cost a fifth of the loop (3,000 connections, 64
 * appending).  Once a second at most, and four times within the
 * smallest limit the last walk saw: a limit is kept to within a quarter
 * of itself (a second for the default 30 minutes) and the turn after.
 */
#define IDLE_CHECK_MAX_MS 1000

static void srv_idle_check(struct ms_srv *srv)
{
	uint64_t now = now_ms();
	if (now - srv->idle_checked_ms < srv->idle_every_ms)
		return;
	srv->idle_checked_ms = now;
	uint64_t every = IDLE_CHECK_MAX_MS;
	if (srv->lim.idle_ms != 0 && srv->lim.idle_ms / 4 < every)
		every = srv->lim.idle_ms / 4;
	struct ms_conn *c = srv->conns;
	while (c != NULL) {
		struct ms_conn *next = c->next;
		unsigned limit = c->stream ? c->stream->timeout_ms
					   : srv->lim.idle_ms;
		if (limit != 0 && limit / 4 < every)
			every = limit / 4;
		/* references besides its own, its poll request's and its
		   places on srv->more and srv->held: a request in flight */
		int held = c->refs - 1 - c->w.armed - c->in_more -
			   c->in_held;
		if (limit != 0 && now - c->last_ms > limit &&
		    conn_pending(c) == 0 && held == 0) {
			if (c->stream)
				msg_info("client.closed kind=stream "
					 "reason=timeout idle_ms=%u",
					 limit);
			else
				msg_info("client.closed uid=%u "
					 "reason=idle idle_ms=%u",
					 (unsigned)c->uid, limit);
			conn_drop(c);
		}
		c = next;
	}
	srv->idle_every_ms = every;
}

int ms_srv_run(struct ms_srv *srv)
{
	struct loop_ev evs[64];

	while (!srv->stop) {
		struct ms_conn *more = srv->more;
		srv->more = NULL;
		int timeout = more ? 0 : srv->wake_ms >= 0 ? srv->wake_ms : 1000;
		srv->wake_ms = -1;
		int n = srv->loop->wait(srv, evs, 64, timeout);
		if (n < 0) {
			srv->more = more; /* ms_srv_free drops them */
			return n;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].w;
			if (evs[i].events == 0)
				continue;
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
					    conn_pending(c) <
						    srv->lim.max_out)
						conn_frames(c);
				}
				if (!c->closed && (evs[i].events & EPOLLIN))
					conn_read(c, evs[i].events);
				break;
			}
			}
		}
		srv_more(more);
		/* the references of poll requests that ended (io_uring) */
		for (int i = 0; i < n; i++) {
			if (evs[i].put) {
				struct ms_conn *c = evs[i].w->conn;
				ms_conn_unref(&c);
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
	srv_more(srv->more);	/* all closed: only their references go */
	srv->more = NULL;
	ms_srv_flush_held(srv);	/* the same */
	srv_reap(srv);
	srv->loop->free(srv);
	for (size_t i = 0; i < srv->nwatches; i++) {
		if (srv->watches[i]->kind == W_LISTEN)
			close(srv->watches[i]->fd);
		free(srv->watches[i]);
	}
	free(srv->watches);
	free(srv);
	*srvp = NULL;
}
