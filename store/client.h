/*
 * client.h - the blocking client side of the mstore protocol, for every
 * program that talks to mstored (mstore-lmtpd, the Dovecot plugin,
 * tools, udsync).  Transport only: frames out, frames in, with the same
 * bounds as the server; the request and reply bodies are proto.h's.
 *
 * Pipelining: send several request frames (one ms_buf may hold many),
 * then read replies with ms_client_recv() in whatever order they come.
 * ms_client_request() is the simple case: one request, its reply.
 */
#ifndef MS_CLIENT_H
#define MS_CLIENT_H

#include "buf.h"
#include "proto.h"

struct ms_client;

/* Connect to a unix socket; timeout_ms bounds each read and write. */
int ms_client_connect(const char *path, unsigned timeout_ms,
		      struct ms_client **c_r, const char **error_r);
void ms_client_close(struct ms_client **c);
/* The socket, for a caller's event loop (e.g. a WAIT read when it is
   readable); still owned by the client. */
int ms_client_fd(const struct ms_client *c);
/* A fresh request id. */
uint32_t ms_client_id(struct ms_client *c);
/* Write every byte of buf.  0 or -errno. */
int ms_client_send(struct ms_client *c, const void *buf, size_t len);
/*
 * Read the next whole frame.  *body_r (after the 12-byte header) stays
 * valid until the next recv.  0; -errno; MS_ETRUNC if the server closed
 * the connection; MS_ECORRUPT/MS_ETOOBIG for a frame that breaks the
 * rules (the connection is then unusable).
 */
int ms_client_recv(struct ms_client *c, struct ms_proto_hdr *hdr_r,
		   const uint8_t **body_r, size_t *len_r,
		   const char **error_r);
/* The same without waiting: the next whole frame the buffer holds, or
   the socket holds now (one recv), else -EAGAIN with nothing lost (a
   part of a frame stays in the buffer for the next recv). */
int ms_client_recv_nowait(struct ms_client *c, struct ms_proto_hdr *hdr_r,
			  const uint8_t **body_r, size_t *len_r,
			  const char **error_r);
/*
 * A watch: a request answered again and again (USER_WATCH, sent with
 * ms_client_send_req, its id given here) whose replies are taken out of
 * the stream: every recv passes over them wherever they come and keeps
 * the last one's status and count, and no caller sees them.
 * ms_client_watch_peek() says what recv has kept, touching nothing: 1
 * (a reply came: the last one's status and count), 0 (none yet), or
 * -ENOENT (no watch).  ms_client_watch_poll() first takes the watch's
 * replies the buffer holds and, with do_read 1, what the socket holds
 * without waiting (2: and, if the watch's first reply has not come yet,
 * waits for it, with the timeout), then answers the same; or a negative error: the
 * connection failed, or a reply to another request (or part of one) is
 * there unread, or a part of the watch's own reply that the socket does
 * not hold the rest of yet (with do_read, the rest that it holds is
 * read), so that it cannot be told now (-EBUSY).  Like
 * a recv, it lets go of the frame the last recv handed out.  A watch
 * whose reply is an error ends there.
 */
void ms_client_watch(struct ms_client *c, uint32_t id);
int ms_client_watch_peek(const struct ms_client *c, int32_t *status_r,
			 uint64_t *changes_r);
int ms_client_watch_poll(struct ms_client *c, int do_read, int32_t *status_r,
			 uint64_t *changes_r, const char **error_r);
/* The count of one of the user's mailboxes as the watch's replies taken
   so far say (protocol version 7): 1 with *changes_r set; 0 when they
   list no such mailbox (a new one, or not the user's); -ENOENT when
   they say nothing of mailboxes (no reply yet, an older server, or one
   that had no room to list them). */
int ms_client_watch_mbox(const struct ms_client *c, uint64_t mbox_id,
			 uint64_t *changes_r);
/* How many reads so far found the socket emptied: a recv that took less
   than it had room for, or said EAGAIN.  One counted since a moment T
   means every byte the server sent before T is in the buffer. */
uint64_t ms_client_drains(const struct ms_client *c);
/* Encode q with a fresh id and send it without waiting for its reply
   (read later with ms_client_recv(): pipelining).  0 with *id_r set, or
   a codec or transport error (*error_r says which). */
int ms_client_send_req(struct ms_client *c, const struct ms_req *q,
		       uint32_t *id_r, const char **error_r);
/*
 * One request, its decoded reply: encode q, send, wait for the reply with
 * its id, decode it into *rep_r (borrowing from the client's buffer:
 * valid until the next recv or request).  Returns rep_r->status (0 or a
 * negative code, with the server's reason in *error_r), or a transport
 * or codec error.
 */
int ms_client_request(struct ms_client *c, const struct ms_req *q,
		      struct ms_reply *rep_r, const char **error_r);
/* HELLO as a user (user != NULL) or as admin. */
int ms_client_hello(struct ms_client *c, const char *user,
		    const char **error_r);
/* A whole message body, fetched in chunks of chunk bytes. */
int ms_client_fetch_body(struct ms_client *c, const char *mailbox,
			 uint32_t uid, uint32_t chunk, struct ms_buf *out,
			 const char **error_r);
/*
 * The metadata of every message of mailbox, in ascending UID order, in
 * as many FETCH_META requests as the store's replies allow: 100,000
 * UIDs a request at first, and half of a request's UIDs each time the
 * store answers that its reply would be too large (MS_ETOOBIG: a store
 * with a small max_frame, messages with many keywords).  fn gets each message (borrowed: valid
 * for the call; fn must not use c); a negative return from it stops the
 * walk and is returned.  0, fn's error, or a request's (with *error_r).
 */
/*
 * Every mailbox of the session's user: one MBOX_LIST, or, when the store
 * answers that one reply cannot hold them (MS_ETOOBIG: a small
 * max_frame), pages of at most MS_CLIENT_MBOX_PAGE, each after the last
 * name of the one before, until an empty page.  fn gets each mailbox
 * (borrowed: valid for the call; fn must not use c); a negative return
 * from it stops the walk and is returned.  0, fn's error, or a
 * request's (with *error_r).  A mailbox renamed while the pages are read
 * may be missed or seen twice.
 */
#define MS_CLIENT_MBOX_PAGE 10000
int ms_client_mbox_list_each(struct ms_client *c,
			     int (*fn)(void *ctx, const struct ms_mbox_info *m),
			     void *ctx, const char **error_r);
int ms_client_fetch_meta_each(struct ms_client *c, const char *mailbox,
			      int (*fn)(void *ctx, const struct ms_msg_meta *m),
			      void *ctx, const char **error_r);

#endif
