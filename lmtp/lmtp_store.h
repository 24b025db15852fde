/*
 * lmtp_store.h - a non-blocking client of mstored's admin socket for the
 * LMTP loop: requests are encoded with store/proto.h, pipelined on one
 * connection with distinct ids, and their replies, which may come in any
 * order, are matched by id.  The loop never blocks on mstored.
 *
 * A request's callback runs exactly once, from the loop (never from
 * inside lmtp_store_send), with:
 *   - the decoded reply (status = its status, rep != NULL), borrowed for
 *     the duration of the call; or
 *   - a transport failure (rep == NULL, status < 0): mstored is not
 *     connected, went away, sent something broken, or did not answer
 *     within the store timeout.  Then the connection is dropped, every
 *     request in flight fails the same way, and the client reconnects
 *     (100 ms, doubling up to 2 s between tries).
 * A request whose owner is gone is cancelled: its callback is not called
 * and its reply, when it comes, is dropped.
 *
 * A transport failure tells nothing about whether mstored acted on the
 * request (an APPEND may have become durable just before mstored died):
 * the LMTP session answers 451 (try again), never 250; the message may
 * then be stored twice, never lost.
 */
#ifndef LMTP_STORE_H
#define LMTP_STORE_H

#include <stdbool.h>

#include "lmtp_loop.h"
#include "proto.h"

struct lmtp_store;
struct lmtp_store_req;

/* why: the server's reason or ours; borrowed for the call. */
typedef void lmtp_store_cb(void *ctx, int status, const struct ms_reply *rep,
			   const char *why);

int lmtp_store_new(struct lmtp_loop *loop, const char *path,
		   uint32_t max_frame, uint64_t timeout_ms,
		   struct lmtp_store **st_r);
/* Drops the connection; pending callbacks are not called. */
void lmtp_store_free(struct lmtp_store **st);
/* Queue a request (copied into the output buffer at once). */
struct lmtp_store_req *lmtp_store_send(struct lmtp_store *st,
				       const struct ms_req *q,
				       lmtp_store_cb *cb, void *ctx);
/* Forget the callback of a request in flight; sets *req to NULL. */
void lmtp_store_cancel(struct lmtp_store_req **req);
/* Call after every loop turn: writes, failures, reconnects, timeouts. */
void lmtp_store_tick(struct lmtp_store *st);
/* true when the connection is up and said hello. */
bool lmtp_store_ready(const struct lmtp_store *st);
/* Requests in flight (sent or queued, not yet answered). */
unsigned lmtp_store_inflight(const struct lmtp_store *st);

#endif
