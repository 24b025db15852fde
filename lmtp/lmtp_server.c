/*
 * lmtp_server.c - listeners, session accounting, timeouts, stopping; see
 * lmtp_server.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "buf.h"
#include "lmtp_indexer.h"
#include "lmtp_reply.h"
#include "lmtp_session.h"
#include "msg.h"

#define ACCEPTS_PER_EVENT 64

/* ---- per-client counts ---- */

static size_t cc_bucket(int family, const uint8_t *addr)
{
	uint32_t h = 2166136261u ^ (uint32_t)family;
	size_t n = family == AF_INET6 ? 16 : 4;
	for (size_t i = 0; i < n; i++)
		h = (h ^ addr[i]) * 16777619u;
	return h % LMTP_CC_BUCKETS;
}

static struct lmtp_client_count *cc_get(struct lmtp_server *srv, int family,
					const uint8_t *addr, bool create)
{
	size_t n = family == AF_INET6 ? 16 : 4;
	struct lmtp_client_count **pp = &srv->cc[cc_bucket(family, addr)];
	for (; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->family == family && memcmp((*pp)->addr, addr, n) == 0)
			return *pp;
	if (!create)
		return NULL;
	struct lmtp_client_count *c = ms_calloc(1, sizeof(*c));
	c->family = family;
	memcpy(c->addr, addr, n);
	*pp = c;
	return c;
}

static void cc_put(struct lmtp_server *srv, struct lmtp_client_count *c)
{
	if (c == NULL || --c->n > 0)
		return;
	struct lmtp_client_count **pp = &srv->cc[cc_bucket(c->family, c->addr)];
	for (; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			free(c);
			return;
		}
	}
}

/* ---- lists ---- */

static void slist_add(struct lmtp_slist *l, struct lmtp_session *s, bool all)
{
	struct lmtp_session_links *k = lmtp_session_links(s);
	struct lmtp_session **prev = all ? &k->prev : &k->tprev;
	struct lmtp_session **next = all ? &k->next : &k->tnext;
	*next = NULL;
	*prev = l->tail;
	if (l->tail != NULL) {
		struct lmtp_session_links *t = lmtp_session_links(l->tail);
		*(all ? &t->next : &t->tnext) = s;
	} else {
		l->head = s;
	}
	l->tail = s;
}

static void slist_del(struct lmtp_slist *l, struct lmtp_session *s, bool all)
{
	struct lmtp_session_links *k = lmtp_session_links(s);
	struct lmtp_session *prev = all ? k->prev : k->tprev;
	struct lmtp_session *next = all ? k->next : k->tnext;
	if (prev != NULL) {
		struct lmtp_session_links *p = lmtp_session_links(prev);
		*(all ? &p->next : &p->tnext) = next;
	} else {
		l->head = next;
	}
	if (next != NULL) {
		struct lmtp_session_links *n = lmtp_session_links(next);
		*(all ? &n->prev : &n->tprev) = prev;
	} else {
		l->tail = prev;
	}
	if (all)
		k->prev = k->next = NULL;
	else
		k->tprev = k->tnext = NULL;
}

void lmtp_server_touch(struct lmtp_server *srv, struct lmtp_session *s)
{
	struct lmtp_session_links *k = lmtp_session_links(s);
	if (k->dead)
		return;
	if (k->tlist != LMTP_T_NONE)
		slist_del(&srv->timers[k->tlist], s, false);
	k->tlist = lmtp_session_tlist(s);
	if (k->tlist == LMTP_T_NONE)
		return;
	uint64_t t = k->tlist == LMTP_T_DATA ? srv->cfg->data_timeout
					     : srv->cfg->command_timeout;
	k->deadline = lmtp_now_ms() + t;
	slist_add(&srv->timers[k->tlist], s, false);
}

void lmtp_server_kill(struct lmtp_server *srv, struct lmtp_session *s)
{
	struct lmtp_session_links *k = lmtp_session_links(s);
	if (k->dead)
		return;
	k->dead = true;
	if (k->tlist != LMTP_T_NONE)
		slist_del(&srv->timers[k->tlist], s, false);
	k->tlist = LMTP_T_NONE;
	slist_del(&srv->all, s, true);
	cc_put(srv, k->cc);
	k->cc = NULL;
	srv->nsessions--;
	lmtp_session_release(s);
	k->dead_next = srv->dead;
	srv->dead = s;
	lmtp_loop_wake_at(srv->loop, lmtp_now_ms());
}

/* ---- accepting ---- */

/* Refuse a connection with one line, without waiting for anything. */
static void refuse(int fd, enum lmtp_reply r)
{
	struct ms_buf b;
	ms_buf_init(&b, 1024);
	if (lmtp_reply_append(&b, r, NULL) == 0)
		(void)!send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
	ms_buf_free(&b);
	close(fd);
}

/* The client's address family and bytes; 0 for the unix socket. */
static int peer_ip(const struct sockaddr_storage *ss, socklen_t sl,
		   bool is_unix, uint8_t ip[16])
{
	if (is_unix)
		return 0;
	if (ss->ss_family == AF_INET && sl >= sizeof(struct sockaddr_in)) {
		memcpy(ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return AF_INET;
	}
	if (ss->ss_family == AF_INET6 && sl >= sizeof(struct sockaddr_in6)) {
		memcpy(ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return AF_INET6;
	}
	return 0;
}

static void accept_one(struct lmtp_listener *ln, int fd,
		       const struct sockaddr_storage *ss, socklen_t sl)
{
	struct lmtp_server *srv = ln->srv;
	const struct lmtp_cfg *cfg = srv->cfg;
	struct lmtp_client_count *cc = NULL;
	uint8_t ip[16];
	int family = peer_ip(ss, sl, ln->is_unix, ip);

	if (srv->nsessions >= cfg->max_sessions) {
		msg_warn("connection.refused sessions=%u reason=max_sessions",
			 srv->nsessions);
		refuse(fd, LMTP_R_TOO_MANY_SESSIONS);
		return;
	}
	if (family != 0) {
		cc = cc_get(srv, family, ip, false);
		if (cc != NULL && cfg->max_sessions_per_client != 0 &&
		    cc->n >= cfg->max_sessions_per_client) {
			msg_warn("connection.refused sessions=%u "
				 "reason=max_sessions_per_client",
				 cc->n);
			refuse(fd, LMTP_R_TOO_MANY_FROM_YOU);
			return;
		}
		if (cc == NULL)
			cc = cc_get(srv, family, ip, true);
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				 sizeof(one));
	}
	struct lmtp_session *s = lmtp_session_new(
		srv, fd, (const struct sockaddr *)ss, sl, ln->is_unix);
	struct lmtp_session_links *k = lmtp_session_links(s);
	if (cc != NULL)
		cc->n++;
	k->cc = cc;
	srv->nsessions++;
	slist_add(&srv->all, s, true);
	if (lmtp_session_start(s) < 0)
		lmtp_server_kill(srv, s);
}

static void on_accept(struct lmtp_watch *w, unsigned events)
{
	struct lmtp_listener *ln = w->ctx;
	(void)events;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		memset(&ss, 0, sizeof(ss));
		int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				msg_warn("accept.failed listener=%s error=%s",
					 msg_q(ln->name), msg_q(strerror(errno)));
			return;
		}
		accept_one(ln, fd, &ss, sl);
	}
}

/* ---- listening ---- */

static struct lmtp_listener *listener_add(struct lmtp_server *srv, int fd,
					  const char *name, bool is_unix)
{
	srv->listeners = ms_realloc(srv->listeners, (srv->nlisteners + 1) *
							    sizeof(*srv->listeners));
	struct lmtp_listener *ln = &srv->listeners[srv->nlisteners++];
	memset(ln, 0, sizeof(*ln));
	ln->w.fd = fd;
	ln->w.fn = on_accept;
	ln->is_unix = is_unix;
	ln->srv = srv;
	snprintf(ln->name, sizeof(ln->name), "%s", name);
	return ln;
}

static int listen_tcp(struct lmtp_server *srv, const struct lmtp_listen *l,
		      const char **error_r)
{
	int fd = socket(l->sa.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		goto fail;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->sa.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
				 sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->sa, l->salen) < 0 ||
	    listen(fd, 511) < 0)
		goto fail;
	listener_add(srv, fd, l->text, false);
	return 0;
fail:;
	int err = errno;
	*error_r = ms_errf("listen on %s: %s", l->text, strerror(err));
	if (fd >= 0)
		close(fd);
	return -err;
}

static int listen_unix(struct lmtp_server *srv, const char *path,
		       unsigned mode, const char **error_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t pl = strlen(path);
	if (pl >= sizeof(sa.sun_path)) {
		*error_r = ms_errf("socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, pl + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	(void)unlink(path); /* a stale socket of an earlier run */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, mode) < 0 || listen(fd, 511) < 0)
		goto fail;
	listener_add(srv, fd, path, true);
	return 0;
fail:;
	int err = errno;
	*error_r = ms_errf("listen on %s: %s", path, strerror(err));
	if (fd >= 0)
		close(fd);
	return -err;
}

int lmtp_server_listen(struct lmtp_server *srv, const char **error_r)
{
	const struct lmtp_cfg *cfg = srv->cfg;
	int ret;
	for (size_t i = 0; i < cfg->nlistens; i++)
		if ((ret = listen_tcp(srv, &cfg->listens[i], error_r)) < 0)
			return ret;
	if (cfg->socket != NULL &&
	    (ret = listen_unix(srv, cfg->socket, cfg->socket_mode, error_r)) <
		    0)
		return ret;
	return 0;
}

int lmtp_server_start(struct lmtp_server *srv, const char **error_r)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct lmtp_listener *ln = &srv->listeners[i];
		ln->w.ctx = ln; /* the array no longer moves */
		int ret = lmtp_loop_add(srv->loop, &ln->w, EPOLLIN);
		if (ret < 0) {
			*error_r = ms_errf("watch %s: %s", ln->name,
					   strerror(-ret));
			return ret;
		}
		msg_info("listening address=%s", msg_q(ln->name));
	}
	return 0;
}

static void close_listeners(struct lmtp_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct lmtp_listener *ln = &srv->listeners[i];
		if (ln->w.fd < 0)
			continue;
		lmtp_loop_del(srv->loop, &ln->w);
		close(ln->w.fd);
		ln->w.fd = -1;
		if (ln->is_unix)
			(void)unlink(ln->name);
	}
}

/* ---- the tick ---- */

static void reap(struct lmtp_server *srv)
{
	while (srv->dead != NULL) {
		struct lmtp_session *s = srv->dead;
		srv->dead = lmtp_session_links(s)->dead_next;
		lmtp_session_free(s);
	}
}

/*
 * The reply counts go to mstored (LMTP_STATS, op 54) over the store
 * connection: when they changed, at most every STATS_EVERY_MS, one push
 * in flight at a time; again in full after every reconnect (mstored may
 * have restarted).  The instance id keeps a reconnect from counting
 * twice there.  An mstored that does not know the op is not asked again.
 */
#define STATS_EVERY_MS 500

static void stats_done(void *ctx, int status, const struct ms_reply *rep,
		       const char *why)
{
	struct lmtp_server *srv = ctx;

	srv->stats_req = NULL;
	if (rep != NULL && status == -EOPNOTSUPP) {
		msg_warn("stats.unsupported error=%s msg=\"mstored does not take "
			 "LMTP_STATS: reply counts stay here\"",
			 msg_q(why));
		srv->stats_off = true;
		return;
	}
	if (rep != NULL && status < 0)
		msg_warn("stats.refused error=%s", msg_q(why));
	/* a transport failure: the next connection says it all again */
}

static void stats_push(struct lmtp_server *srv, uint64_t now)
{
	struct ms_req q = { .op = MS_OP_LMTP_STATS };
	uint64_t total;

	if (srv->stats_off || srv->stats_req != NULL)
		return;
	if (!lmtp_store_ready(srv->store)) {
		srv->stats_ready = false;
		return;
	}
	if (!srv->stats_ready) {
		/* a new connection: say it all again */
		srv->stats_ready = true;
		srv->stats_pushed = UINT64_MAX;
	}
	q.u.lmtp_stats.n = (uint16_t)lmtp_reply_counts(
		q.u.lmtp_stats.codes, MS_PROTO_MAX_LMTP_CODES, &total);
	if (total == srv->stats_pushed || q.u.lmtp_stats.n == 0)
		return;
	if (now < srv->stats_next_ms) {
		lmtp_loop_wake_at(srv->loop, srv->stats_next_ms);
		return;
	}
	q.u.lmtp_stats.instance = srv->stats_instance;
	srv->stats_next_ms = now + STATS_EVERY_MS;
	srv->stats_req = lmtp_store_send(srv->store, &q, stats_done, srv);
	/* taken as said; a failure makes the next connection say it all */
	srv->stats_pushed = total;
}

void lmtp_server_tick(struct lmtp_server *srv)
{
	uint64_t now = lmtp_now_ms();
	stats_push(srv, now);
	uint64_t ix_due = lmtp_indexer_tick(srv->indexer, now);
	if (ix_due != 0)
		lmtp_loop_wake_at(srv->loop, ix_due);
	for (int t = 0; t < 2; t++) {
		struct lmtp_slist *l = &srv->timers[t];
		while (l->head != NULL &&
		       lmtp_session_links(l->head)->deadline <= now)
			lmtp_session_timeout(l->head);
		if (l->head != NULL)
			lmtp_loop_wake_at(srv->loop,
					  lmtp_session_links(l->head)->deadline);
	}
	if (srv->stopping && now >= srv->stop_deadline) {
		while (srv->all.head != NULL)
			lmtp_server_kill(srv, srv->all.head);
	}
	reap(srv);
}

void lmtp_server_stop(struct lmtp_server *srv, uint64_t grace_ms)
{
	if (srv->stopping)
		return;
	srv->stopping = true;
	srv->stop_deadline = lmtp_now_ms() + grace_ms;
	close_listeners(srv);
	struct lmtp_session *s = srv->all.head;
	while (s != NULL) {
		struct lmtp_session *next = lmtp_session_links(s)->next;
		lmtp_session_shutdown(s);
		s = next;
	}
	lmtp_loop_wake_at(srv->loop, lmtp_now_ms());
}

bool lmtp_server_done(const struct lmtp_server *srv)
{
	return srv->stopping && srv->nsessions == 0;
}

int lmtp_server_new(struct lmtp_loop *loop, struct lmtp_store *store,
		    const struct lmtp_cfg *cfg, const char *hostname,
		    struct lmtp_server **srv_r)
{
	struct lmtp_server *srv = ms_calloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->store = store;
	srv->cfg = cfg;
	srv->rcfg.domains = (const char *const *)cfg->domain_list;
	srv->rcfg.ndomains = cfg->ndomains;
	srv->rcfg.delimiter = (char)(cfg->recipient_delimiter != NULL
					     ? cfg->recipient_delimiter[0]
					     : '\0');
	srv->rcfg.lowercase = cfg->lowercase_local != 0;
	snprintf(srv->hostname, sizeof(srv->hostname), "%s", hostname);
	if (getrandom(&srv->txn_salt, sizeof(srv->txn_salt), 0) !=
	    sizeof(srv->txn_salt))
		srv->txn_salt = (uint32_t)getpid();
	if (getrandom(&srv->stats_instance, sizeof(srv->stats_instance), 0) !=
	    sizeof(srv->stats_instance))
		srv->stats_instance = ((uint64_t)getpid() << 32) ^ lmtp_now_ms();
	if (srv->stats_instance == 0)
		srv->stats_instance = 1;
	if (cfg->dovecot_indexer != NULL)
		srv->indexer = lmtp_indexer_new(cfg->dovecot_indexer,
						cfg->dovecot_separator[0],
						cfg->dovecot_prefix);
	*srv_r = srv;
	return 0;
}

void lmtp_server_free(struct lmtp_server **srvp)
{
	struct lmtp_server *srv = *srvp;
	if (srv == NULL)
		return;
	lmtp_store_cancel(&srv->stats_req);
	if (srv->indexer != NULL) {
		struct lmtp_indexer_stats st;
		lmtp_indexer_stats(srv->indexer, &st);
		msg_info("indexer.stats noted=%" PRIu64 " sent=%" PRIu64
			 " dropped=%" PRIu64 " failures=%" PRIu64
			 " waiting=%zu",
			 st.noted, st.sent, st.dropped, st.failures,
			 lmtp_indexer_waiting(srv->indexer));
		lmtp_indexer_free(&srv->indexer);
	}
	while (srv->all.head != NULL)
		lmtp_server_kill(srv, srv->all.head);
	reap(srv);
	close_listeners(srv);
	free(srv->listeners);
	for (size_t i = 0; i < LMTP_CC_BUCKETS; i++) {
		while (srv->cc[i] != NULL) {
			struct lmtp_client_count *c = srv->cc[i];
			srv->cc[i] = c->next;
			free(c);
		}
	}
	free(srv);
	*srvp = NULL;
}
