/*
 * lmtp_session.h - one LMTP session, and the parts of the server it
 * shares with lmtp_server.c.  Internal to lmtp/.
 *
 * A session's memory while it waits for a command is the struct, its
 * LHLO name and the kernel's socket buffers: input and output buffers are
 * given back whenever they are empty, and a transaction (sender,
 * recipients, message) exists only between MAIL and its last reply.
 *
 * Input is read only when it can be used: not while the session waits
 * for mstored (pipelined commands stay in the kernel), and not while
 * more than LMTP_OUT_HIGH bytes of replies wait for a client that does
 * not read them.
 */
#ifndef LMTP_SESSION_H
#define LMTP_SESSION_H

#include <netinet/in.h>

#include "lmtp_cmd.h"
#include "lmtp_data.h"
#include "lmtp_rcpt.h"
#include "lmtp_server.h"

#define LMTP_READ_CHUNK 32768
#define LMTP_OUT_HIGH 65536
#define LMTP_OUT_MAX ((size_t)4 << 20)
/* room for our header lines above a message, within a store frame */
#define LMTP_HDR_ROOM 4096

enum lmtp_tlist { LMTP_T_NONE = -1, LMTP_T_CMD = 0, LMTP_T_DATA = 1 };

struct lmtp_session;

struct lmtp_slist {
	struct lmtp_session *head, *tail;
};

struct lmtp_client_count {
	int family;
	uint8_t addr[16];
	unsigned n;
	struct lmtp_client_count *next;
};

#define LMTP_CC_BUCKETS 1024

struct lmtp_listener {
	struct lmtp_watch w;
	struct lmtp_server *srv;
	bool is_unix;
	char name[100];
};

struct lmtp_server {
	struct lmtp_loop *loop;
	struct lmtp_store *store;
	const struct lmtp_cfg *cfg;
	struct lmtp_rcpt_cfg rcfg;
	char hostname[256];
	struct lmtp_listener *listeners;
	size_t nlisteners;
	unsigned nsessions;
	struct lmtp_slist all;
	struct lmtp_slist timers[2];
	struct lmtp_session *dead;
	struct lmtp_client_count *cc[LMTP_CC_BUCKETS];
	bool stopping;
	uint64_t stop_deadline;
	uint64_t txn_seq;
	uint32_t txn_salt;
	/* reply counts pushed to mstored (LMTP_STATS, lmtp_server.c) */
	struct lmtp_store_req *stats_req;
	uint64_t stats_instance, stats_pushed, stats_next_ms;
	bool stats_ready, stats_off;
	/* Dovecot's indexer told of folders that got mail; NULL: off */
	struct lmtp_indexer *indexer;
};

/* Server side, for sessions. */
/* Put s on the timer list its state asks for, deadline from now. */
void lmtp_server_touch(struct lmtp_server *srv, struct lmtp_session *s);
/* Close now; freed at the end of the turn. */
void lmtp_server_kill(struct lmtp_server *srv, struct lmtp_session *s);

/* Session side, for the server. */
struct lmtp_session *lmtp_session_new(struct lmtp_server *srv, int fd,
				      const struct sockaddr *sa,
				      socklen_t salen, bool is_unix);
/* Greet and watch; the server has counted and listed the session. */
int lmtp_session_start(struct lmtp_session *s);
/* AF_INET or AF_INET6 with the address in *ip_r; 0 for the unix socket. */
int lmtp_session_family(const struct lmtp_session *s, const uint8_t **ip_r);
enum lmtp_tlist lmtp_session_tlist(const struct lmtp_session *s);
void lmtp_session_timeout(struct lmtp_session *s);
/* Stopping: 421 and close unless a message is being stored. */
void lmtp_session_shutdown(struct lmtp_session *s);
/* Release what the session holds (fd, store request, buffers). */
void lmtp_session_release(struct lmtp_session *s);
void lmtp_session_free(struct lmtp_session *s);

/* The links the server's lists use (the struct is private otherwise). */
struct lmtp_session_links {
	struct lmtp_session *prev, *next;   /* srv->all */
	struct lmtp_session *tprev, *tnext; /* srv->timers[tlist] */
	int tlist;
	uint64_t deadline;
	struct lmtp_session *dead_next;
	bool dead;
	struct lmtp_client_count *cc;
};
struct lmtp_session_links *lmtp_session_links(struct lmtp_session *s);

#endif
