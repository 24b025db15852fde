/*
 * lmtp_server.h - mstore-lmtpd's listeners and sessions on one event
 * loop (lmtp_loop.h), talking to mstored through lmtp_store.h.
 *
 * The server owns the listening sockets (TCP and unix), counts sessions
 * (in all and per client address), runs the timeouts and frees sessions
 * at the end of a loop turn, so that nothing frees a session while one
 * of its functions is still on the stack.  lmtp_session.c holds the
 * protocol.
 *
 * Timeouts cost O(1) per event however many sessions are idle: a session
 * sits on one of two lists (waiting for a command, waiting for message
 * data), each in the order of its deadline because every session on a
 * list has the same timeout; the tick looks only at the heads.  Sessions
 * waiting for mstored are on neither list (the store has its own
 * timeout).
 *
 * Stopping (SIGTERM): the listeners close; sessions waiting for a command
 * or in the middle of a message get 421 and are closed (nothing of a
 * half-received message is stored); sessions whose message is being
 * stored get their replies first, then 421.  lmtp_server_done() is true
 * when no session is left (or the grace time has passed).
 */
#ifndef LMTP_SERVER_H
#define LMTP_SERVER_H

#include <stdbool.h>

#include "lmtp_cfg.h"
#include "lmtp_loop.h"
#include "lmtp_store.h"

struct lmtp_server;

int lmtp_server_new(struct lmtp_loop *loop, struct lmtp_store *store,
		    const struct lmtp_cfg *cfg, const char *hostname,
		    struct lmtp_server **srv_r);
/* Bind and listen on every configured address and socket. */
int lmtp_server_listen(struct lmtp_server *srv, const char **error_r);
/* Start serving (after privileges were dropped). */
int lmtp_server_start(struct lmtp_server *srv, const char **error_r);
void lmtp_server_tick(struct lmtp_server *srv);
void lmtp_server_stop(struct lmtp_server *srv, uint64_t grace_ms);
bool lmtp_server_done(const struct lmtp_server *srv);
void lmtp_server_free(struct lmtp_server **srv);

#endif
