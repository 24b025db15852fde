/*
 * srv.h - the daemon's event loop and connections: unix sockets, framed
 * requests in, replies out, with bounds on everything that grows.  It
 * knows frames (proto.h) but no operation: each whole request frame goes
 * to the handler, which answers now or later (after the log made the
 * request durable) with ms_conn_send().  A new connection is read in
 * the turn that accepts it, and the replies to the requests of that
 * first read go out in one write when its frames are done (up to 64 KiB
 * queued; more goes at once): a client's first requests are served
 * without a turn of the loop in between, and answered with one wake-up.
 *
 * One thread, one loop: poll requests on an io_uring ring of its own
 * (MS_SRV_LOOP_URING), or epoll where io_uring is refused or not wanted
 * (MS_SRV_LOOP_EPOLL); the reads and writes are the same non-blocking
 * calls either way.  Other fds (the log's completion eventfd, a
 * signalfd) join the loop with ms_srv_watch().  Connections are counted
 * references: a handler that answers later holds one (ms_conn_ref), so a
 * client that hangs up while its request is in flight never leaves a
 * dangling pointer; the reply is then dropped.
 *
 * Limits: frame size (a larger frame closes the connection: its bytes
 * cannot be skipped safely), connections, output queued per connection
 * (past it the connection is not read until the client drains it),
 * idle time.
 */
#ifndef MS_SRV_H
#define MS_SRV_H

#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "proto.h"

struct ms_srv;
struct ms_conn;

struct ms_srv_limits {
	uint32_t max_frame;		/* bytes, header included */
	unsigned max_conns;
	size_t max_out;			/* queued reply bytes before reads pause */
	unsigned idle_ms;		/* 0: no idle limit */
};

struct ms_srv_handler {
	/* A whole request; body valid until return. */
	void (*request)(void *ctx, struct ms_conn *c,
			const struct ms_proto_hdr *h, const uint8_t *body,
			size_t len);
	/* The connection is gone (its data may be freed here). */
	void (*closed)(void *ctx, struct ms_conn *c);
	/* After each turn of the loop (commit, flush replies...). */
	void (*tick)(void *ctx);
	/* A count that changes whenever bytes already in the files that
	   ms_conn_send_file ranges come from are rewritten (a record
	   healed from the other copy); NULL: never.  A range queued
	   before a change is not sent: its bytes were checked before. */
	uint64_t (*file_epoch)(void *ctx);
};

enum ms_srv_loop {
	MS_SRV_LOOP_URING,		/* multishot polls where the kernel can */
	/* single polls, re-armed, and task work that interrupts the loop:
	   what a kernel before 5.13 gets (tests) */
	MS_SRV_LOOP_URING_ONESHOT,
	MS_SRV_LOOP_EPOLL,
};

/* io_uring that cannot be set up falls back to epoll, with a warning. */
int ms_srv_new(const struct ms_srv_limits *lim,
	       const struct ms_srv_handler *h, void *ctx,
	       enum ms_srv_loop loop, struct ms_srv **srv_r);
/* The loop in use: 1 for io_uring; its name, for a log line. */
int ms_srv_loop_uring(const struct ms_srv *srv);
const char *ms_srv_loop_name(const struct ms_srv *srv);
/* File ranges of replies that the socket did not take at once: each
   waited with a descriptor of its own (ms_conn_send_file). */
uint64_t ms_srv_file_queued(const struct ms_srv *srv);
void ms_srv_free(struct ms_srv **srv);
/*
 * Listen on a unix socket at path (a stale socket file is replaced),
 * mode applied to the socket file; admin: connections on it have the
 * admin flag.  Call before dropping privileges.
 */
int ms_srv_listen(struct ms_srv *srv, const char *path, unsigned mode,
		  int admin, const char **error_r);
/* Watch fd for input; fn runs from the loop when it is readable. */
int ms_srv_watch(struct ms_srv *srv, int fd, void (*fn)(void *arg),
		 void *arg);
/* Run until ms_srv_stop(); 0, or -errno if the loop itself failed. */
int ms_srv_run(struct ms_srv *srv);
void ms_srv_stop(struct ms_srv *srv);
unsigned ms_srv_conns(struct ms_srv *srv);
/* From the tick handler: the loop turns again within ms (at most 1000,
   its idle wait) even if nothing happens; for the turn's next run. */
void ms_srv_wake_in(struct ms_srv *srv, unsigned ms);
/* New limits (SIGHUP); existing connections keep their buffers. */
void ms_srv_set_limits(struct ms_srv *srv, const struct ms_srv_limits *lim);

/*
 * Byte-stream listeners (the system API's HTTP, store/sysapi.c): their
 * connections carry no frames.  Their input goes to st->input, which
 * consumes whole requests and answers with ms_conn_send(); the handler
 * of ms_srv_new never sees them.  They have no credentials (uid -1),
 * count towards max_conns and towards st->max_conns of their own, and
 * keep at most st->max_in bytes not consumed (more: closed).  Their
 * clock is the last request consumed or reply sent, not the last byte
 * read, so a client that trickles bytes without finishing a request is
 * closed after st->timeout_ms like an idle one (never while a request
 * of it is in flight, that is, while another reference is held).
 */
struct ms_srv_stream {
	/* data[0..len): what is not consumed yet.  Returns the bytes
	   consumed (a whole request), 0 for "need more" or "paused". */
	size_t (*input)(void *ctx, struct ms_conn *c, const uint8_t *data,
			size_t len);
	/* The connection is gone (its data may be freed here). */
	void (*closed)(void *ctx, struct ms_conn *c);
	void *ctx;
	size_t max_in;
	unsigned max_conns;
	unsigned timeout_ms;	/* 0: none */
};
/* Listen on TCP at sa (port 0: any; *port_r says which, may be NULL).
   st is borrowed: it must outlive srv.  Call before dropping root. */
int ms_srv_listen_tcp(struct ms_srv *srv, const struct sockaddr *sa,
		      socklen_t salen, const struct ms_srv_stream *st,
		      unsigned *port_r, const char **error_r);
/* A stream connection: stop handing its input to st->input (a request
   is in flight; its socket is not read meanwhile), or start again. */
void ms_conn_pause(struct ms_conn *c, int pause);

/*
 * An internal connection, with no socket: what is sent to it goes to
 * deliver(arg, frame, len) at once (from ms_conn_send).  A module of the
 * daemon uses one to feed requests to the handler as a client would (the
 * system API's admin endpoints go through the ops layer this way).  Not
 * counted as a client.  The caller holds its one reference; end it with
 * ms_conn_close(), never unref: the handler's closed() runs, later sends
 * are dropped, and the struct lives while others hold references.
 */
struct ms_conn *ms_srv_conn_internal(struct ms_srv *srv, int admin,
				     void (*deliver)(void *arg,
						     const void *frame,
						     size_t len),
				     void *arg);

/* Queue a whole frame for the client (copied).  Dropped if closed. */
void ms_conn_send(struct ms_conn *c, const void *frame, size_t len);
/*
 * Queue a frame whose last len bytes are in a file: head (copied) and
 * then the bytes at off of fd, sent with sendfile (from the page cache:
 * not copied in this process, and into the socket without a copy).  fd
 * is dup'ed.  0 when queued (or the connection was dropped meanwhile);
 * -1 when the caller must send the frame itself: an internal connection,
 * too many file ranges queued already, no fd to spare.  The bytes must
 * not change until sent.  A range the file does not have closes the
 * connection, as does a failing sendfile.
 */
int ms_conn_send_file(struct ms_conn *c, const void *head, size_t hlen,
		      int fd, uint64_t off, uint64_t len);
/*
 * The client's output queue, for a frame encoded in place (a body is
 * then copied once, not into a frame first and then into the queue):
 * NULL for a closed or internal connection (those take ms_conn_send).
 * Append whole frames only, within its max (a frame that does not fit
 * goes through ms_conn_send, which closes the connection), then call
 * ms_conn_queued().
 */
struct ms_buf *ms_conn_out(struct ms_conn *c);
void ms_conn_queued(struct ms_conn *c);
/*
 * Instead of ms_conn_queued(): what was appended to ms_conn_out() waits
 * for the connection's next send, so that it and that send go out in
 * one write (one wake-up of the client instead of two), or for
 * ms_srv_flush_held() at the latest, which the caller must reach before
 * its turn of the loop ends.
 */
void ms_conn_hold(struct ms_conn *c);
void ms_srv_flush_held(struct ms_srv *srv);
void ms_conn_ref(struct ms_conn *c);
void ms_conn_unref(struct ms_conn **c);
/* Close after the queued output is written. */
void ms_conn_close(struct ms_conn *c);
int ms_conn_is_admin(const struct ms_conn *c);
int ms_conn_is_closed(const struct ms_conn *c);
/* Peer credentials (SO_PEERCRED) taken at accept ((uid_t)-1 for an
   internal connection). */
uid_t ms_conn_uid(const struct ms_conn *c);
gid_t ms_conn_gid(const struct ms_conn *c);
/* The peer's supplementary groups (SO_PEERGROUPS, as at connect): the
   count, or -errno (-ERANGE: more than max; -EINVAL: no socket peer). */
int ms_conn_peer_groups(const struct ms_conn *c, gid_t *gids, int max);
void *ms_conn_data(const struct ms_conn *c);
void ms_conn_set_data(struct ms_conn *c, void *data);

#endif
