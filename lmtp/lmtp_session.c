/*
 * lmtp_session.c - the LMTP protocol of one session: commands, the
 * transaction, the message, and delivery through mstored; see
 * lmtp_session.h and docs/lmtp.md.
 *
 * States:
 *   SS_CMD      reading command lines
 *   SS_DISCARD  skipping the rest of a line longer than max_line_length
 *               (answered with 500 when its end comes)
 *   SS_DATA     after 354: bytes go to the DATA decoder until "."
 *   SS_BDAT     bdat_left bytes of a chunk go to the decoder (or, with
 *               bdat_sink, nowhere: a BDAT that is refused still has its
 *               bytes read, so the stream stays in step)
 *   SS_WAIT     a request to mstored (RCPT lookup, APPEND) is in flight;
 *               nothing more is read until its answer
 *
 * The promise: a recipient hears 250 only from append_done(), for a
 * placement whose APPEND result said 0, which mstored sends only when
 * the record is durable on both copies.  Every other path (transport
 * failure, error reply, timeout, disconnect) gives 4xx/5xx or nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "lmtp_hdr.h"
#include "lmtp_indexer.h"
#include "lmtp_reply.h"
#include "lmtp_session.h"
#include "msg.h"

enum { SS_CMD, SS_DISCARD, SS_DATA, SS_BDAT, SS_WAIT };

struct txn_rcpt {
	char *path;    /* as the client wrote it (for headers and logs) */
	char *user;
	char *mailbox; /* the detail mailbox; NULL: INBOX */
	bool retry;    /* detail mailbox missing: INBOX in a second APPEND */
	bool inbox;    /* ... and so it went to INBOX */
	enum lmtp_reply reply;
	char note[80];
};

struct lmtp_txn {
	char id[32];
	char *sender;
	bool smtputf8;
	uint64_t size_hint;
	struct txn_rcpt *rcpts;
	unsigned n, cap;
	struct txn_rcpt pending; /* the RCPT being looked up */
	int mode;		 /* 0, LMTP_CMD_DATA or LMTP_CMD_BDAT */
	struct ms_buf body;
	struct lmtp_data dec;
	int pass;		/* 1: the APPEND; 2: the INBOX retry */
	unsigned *sent;		/* indexes of rcpts in the APPEND in flight */
	unsigned nsent;
};

struct lmtp_session {
	struct lmtp_session_links l;
	struct lmtp_server *srv;
	struct lmtp_watch w;
	int state;
	bool is_unix, trusted, lhlo, closing;
	int family;
	uint8_t ip[16];
	char addr[64];
	char *helo;
	char *xc[LMTP_X_COUNT]; /* XCLIENT: for the session */
	char *xf[LMTP_X_COUNT]; /* XFORWARD: for the next transaction */
	struct ms_buf in, out;
	size_t in_off, out_off;
	unsigned errors;
	struct lmtp_txn *txn;
	struct lmtp_store_req *req;
	uint64_t bdat_left;
	bool bdat_last, bdat_sink;
	enum lmtp_reply bdat_reply; /* for a sunk chunk */
};

static void sess_input(struct lmtp_session *s);
static void sess_flush(struct lmtp_session *s);
static void sess_update(struct lmtp_session *s);

struct lmtp_session_links *lmtp_session_links(struct lmtp_session *s)
{
	return &s->l;
}

static const struct lmtp_cfg *cfg_of(const struct lmtp_session *s)
{
	return s->srv->cfg;
}

static void kill_session(struct lmtp_session *s)
{
	lmtp_server_kill(s->srv, s);
}

/* ---- output ---- */

static void out_append(struct lmtp_session *s, const char *p, size_t n)
{
	if (s->l.dead)
		return;
	if (ms_buf_append(&s->out, p, n) < 0) {
		msg_warn("client.closed client=%s reason=reply_queue_full "
			 "limit=%zu",
			 msg_q(s->addr), (size_t)LMTP_OUT_MAX);
		kill_session(s);
	}
}

/* A reply that is the client's own doing may count towards max_errors. */
static void reply(struct lmtp_session *s, enum lmtp_reply r,
		  const char *detail)
{
	if (s->l.dead || s->closing)
		return;
	if (lmtp_reply_append(&s->out, r, detail) < 0) {
		kill_session(s);
		return;
	}
	if (lmtp_reply_is_client_error(r) &&
	    ++s->errors >= cfg_of(s)->max_errors) {
		msg_info("client.closed client=%s reason=errors errors=%u",
			 msg_q(s->addr), s->errors);
		(void)lmtp_reply_append(&s->out, LMTP_R_TOO_MANY_ERRORS, NULL);
		s->closing = true;
	}
}

static void sess_flush(struct lmtp_session *s)
{
	while (!s->l.dead && s->out_off < s->out.len) {
		ssize_t n = send(s->w.fd, s->out.data + s->out_off,
				 s->out.len - s->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			kill_session(s);
			return;
		}
		s->out_off += (size_t)n;
	}
	if (s->l.dead)
		return;
	ms_buf_free(&s->out);
	s->out_off = 0;
	if (s->closing)
		kill_session(s);
}

static bool want_read(const struct lmtp_session *s)
{
	return !s->closing && s->state != SS_WAIT &&
	       s->out.len - s->out_off < LMTP_OUT_HIGH;
}

static void sess_update(struct lmtp_session *s)
{
	if (s->l.dead)
		return;
	unsigned ev = 0;
	if (want_read(s))
		ev |= EPOLLIN;
	if (s->out_off < s->out.len)
		ev |= EPOLLOUT;
	if (lmtp_loop_mod(s->srv->loop, &s->w, ev) < 0)
		kill_session(s);
}

/*
 * Use the input already read, flushing replies as we go: input that
 * waited for the client to read its replies may be used as soon as they
 * are sent, and no event would come for it (the kernel has nothing new
 * to say).  Stops when nothing moves: input used up or blocked, or
 * replies the client has not read yet (EPOLLOUT wakes us for those).
 */
static void sess_pump(struct lmtp_session *s)
{
	for (int i = 0; i < 1024 && !s->l.dead; i++) {
		size_t before = s->in.len;
		sess_input(s);
		sess_flush(s);
		if (s->l.dead || s->in.len == 0 || s->in.len == before ||
		    s->out_off < s->out.len)
			break;
	}
}

/* After anything that may have changed the state from outside a read. */
static void sess_after(struct lmtp_session *s)
{
	sess_pump(s);
	sess_update(s);
}

/* ---- the transaction ---- */

static void rcpt_free(struct txn_rcpt *r)
{
	free(r->path);
	free(r->user);
	free(r->mailbox);
	memset(r, 0, sizeof(*r));
}

static void xf_clear(struct lmtp_session *s)
{
	for (int i = 0; i < LMTP_X_COUNT; i++) {
		free(s->xf[i]);
		s->xf[i] = NULL;
	}
}

static void txn_free(struct lmtp_session *s)
{
	struct lmtp_txn *t = s->txn;
	if (t == NULL)
		return;
	for (unsigned i = 0; i < t->n; i++)
		rcpt_free(&t->rcpts[i]);
	rcpt_free(&t->pending);
	free(t->rcpts);
	free(t->sender);
	free(t->sent);
	ms_buf_free(&t->body);
	free(t);
	s->txn = NULL;
	xf_clear(s);
}

static char *pstrdup(struct ms_pstr p)
{
	char *s = ms_malloc(p.len + 1);
	memcpy(s, p.s, p.len);
	s[p.len] = '\0';
	return s;
}

static void txn_new(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	struct lmtp_txn *t = ms_calloc(1, sizeof(*t));
	struct lmtp_server *srv = s->srv;
	snprintf(t->id, sizeof(t->id), "%08" PRIX32 "%06" PRIX64,
		 srv->txn_salt, ++srv->txn_seq & 0xffffff);
	t->sender = pstrdup(cmd->addr);
	t->smtputf8 = cmd->smtputf8;
	t->size_hint = cmd->has_size ? cmd->size : 0;
	ms_buf_init(&t->body, cfg_of(s)->max_message_size + LMTP_HDR_ROOM);
	s->txn = t;
}

/* ---- identity (XCLIENT / XFORWARD / the connection) ---- */

static const char *ident(const struct lmtp_session *s, enum lmtp_xattr a)
{
	if (s->xf[a] != NULL)
		return s->xf[a];
	return s->xc[a];
}

static struct ms_pstr pstr_or(const char *a, const char *b)
{
	return ms_pstr_c(a != NULL ? a : b != NULL ? b : "");
}

/* ---- delivery ---- */

static void finish_delivery(struct lmtp_session *s);
static void append_done(void *ctx, int status, const struct ms_reply *rep,
			const char *why);

static void deliver(struct lmtp_session *s, int pass)
{
	struct lmtp_txn *t = s->txn;
	struct ms_placement *pl = ms_calloc(t->n, sizeof(*pl));
	unsigned k = 0;

	t->pass = pass;
	free(t->sent);
	t->sent = ms_calloc(t->n, sizeof(*t->sent));
	for (unsigned i = 0; i < t->n; i++) {
		struct txn_rcpt *r = &t->rcpts[i];
		if (pass == 2 && !r->retry)
			continue;
		r->inbox = pass == 2 || r->mailbox == NULL;
		pl[k].user = ms_pstr_c(r->user);
		pl[k].mailbox = ms_pstr_c(pass == 1 && r->mailbox != NULL
						  ? r->mailbox
						  : "INBOX");
		t->sent[k++] = i;
	}
	t->nsent = k;
	struct ms_req q = { .op = MS_OP_APPEND };
	q.u.append.body = t->body.data;
	q.u.append.body_len = (uint32_t)t->body.len;
	q.u.append.placements.n = k;
	q.u.append.placements.list = pl;
	s->state = SS_WAIT;
	lmtp_server_touch(s->srv, s);
	s->req = lmtp_store_send(s->srv->store, &q, append_done, s);
	free(pl);
}

static void set_reply(struct txn_rcpt *r, enum lmtp_reply rep,
		      const char *note)
{
	r->reply = rep;
	snprintf(r->note, sizeof(r->note), "%s", note ? note : "");
}

static enum lmtp_reply quota_reply(const struct lmtp_session *s)
{
	return cfg_of(s)->quota_reply == LMTP_QUOTA_TEMPORARY
		       ? LMTP_R_QUOTA_TEMP
		       : LMTP_R_QUOTA_PERM;
}

static void append_done(void *ctx, int status, const struct ms_reply *rep,
			const char *why)
{
	struct lmtp_session *s = ctx;
	struct lmtp_txn *t = s->txn;
	struct ms_proto_iter it;
	bool retry = false;

	s->req = NULL;
	if (rep != NULL && status == 0 && rep->u.append.n != t->nsent) {
		msg_warn("store.bad_reply id=%s results=%u placements=%u",
			 t->id, rep->u.append.n, t->nsent);
		rep = NULL;
		status = -EPROTO;
		why = "broken reply";
	}
	if (rep != NULL && status == 0)
		ms_proto_iter_results(&it, &rep->u.append);
	for (unsigned i = 0; i < t->nsent; i++) {
		struct txn_rcpt *r = &t->rcpts[t->sent[i]];
		struct ms_append_result res;
		char note[64];
		r->retry = false;
		if (rep == NULL || status < 0) {
			set_reply(r, status == MS_ETOOBIG ? LMTP_R_TOO_BIG
							  : LMTP_R_STORE_DOWN,
				  why);
			continue;
		}
		if (ms_proto_next_result(&it, &res) <= 0) {
			set_reply(r, LMTP_R_STORE_DOWN, "broken reply");
			continue;
		}
		switch (res.status) {
		case 0:
			snprintf(note, sizeof(note), "uid %" PRIu32, res.uid);
			set_reply(r, LMTP_R_DELIVERED, note);
			break;
		case -EDQUOT:
			set_reply(r, quota_reply(s), NULL);
			break;
		case MS_ENOTFOUND:
			if (t->pass == 1 && r->mailbox != NULL) {
				r->retry = true; /* no such mailbox: INBOX */
				retry = true;
			} else {
				set_reply(r, LMTP_R_NO_USER, NULL);
			}
			break;
		case MS_ETOOBIG:
			set_reply(r, LMTP_R_TOO_BIG, NULL);
			break;
		default:
			set_reply(r, LMTP_R_STORE_DOWN,
				  ms_strerror(res.status));
			break;
		}
	}
	if (retry) {
		deliver(s, 2);
		return;
	}
	finish_delivery(s);
	sess_after(s);
}

/* One reply per recipient, in order; then the transaction is over. */
static void finish_delivery(struct lmtp_session *s)
{
	struct lmtp_txn *t = s->txn;
	for (unsigned i = 0; i < t->n; i++) {
		struct txn_rcpt *r = &t->rcpts[i];
		const struct lmtp_reply_def *d = lmtp_reply_get(r->reply);
		msg_info("delivery id=%s to=%s user=%s mailbox=%s size=%zu code=%d "
			 "status=%s note=%s",
			 t->id, msg_q(r->path), msg_q(r->user),
			 msg_q(r->inbox || r->mailbox == NULL ? "INBOX"
								: r->mailbox),
			 t->body.len, d->code, msg_q(d->enh ? d->enh : ""),
			 msg_q(r->note));
		if (r->reply == LMTP_R_DELIVERED && s->srv->indexer != NULL)
			lmtp_indexer_note(s->srv->indexer, r->user,
					  r->inbox ? NULL : r->mailbox);
		reply(s, r->reply, r->note);
	}
	txn_free(s);
	s->state = SS_CMD;
	if (s->srv->stopping) {
		reply(s, LMTP_R_SHUTDOWN, NULL);
		s->closing = true;
	}
	lmtp_server_touch(s->srv, s);
}

/* Same reply for every accepted recipient (the message was refused). */
static void reply_all(struct lmtp_session *s, enum lmtp_reply r,
		      const char *note)
{
	struct lmtp_txn *t = s->txn;
	for (unsigned i = 0; i < t->n; i++)
		set_reply(&t->rcpts[i], r, note);
	finish_delivery(s);
}

/* The message is whole: refuse it or store it. */
static void data_end(struct lmtp_session *s)
{
	struct lmtp_txn *t = s->txn;
	char note[64];
	if (t->dec.too_big) {
		snprintf(note, sizeof(note), "max %" PRIu64 " bytes",
			 cfg_of(s)->max_message_size);
		msg_info("message.refused id=%s size=%" PRIu64 " reason=%s",
			 t->id, t->dec.size, msg_q(note));
		reply_all(s, LMTP_R_TOO_BIG, note);
		return;
	}
	if (t->dec.bare_lf && t->dec.bare_lf_policy == LMTP_BARE_LF_REJECT) {
		reply_all(s, LMTP_R_BARE_LF, NULL);
		return;
	}
	msg_info("message id=%s from=%s size=%zu nrcpt=%u client=%s", t->id,
		 msg_q(t->sender), t->body.len, t->n, msg_q(s->addr));
	deliver(s, 1);
}

/* Header lines, then the decoder, for DATA or the first BDAT. */
static void data_begin(struct lmtp_session *s, int mode)
{
	struct lmtp_txn *t = s->txn;
	struct lmtp_hdr_info h = { 0 };
	h.sender = ms_pstr_c(t->sender);
	if (t->n == 1)
		h.rcpt = ms_pstr_c(t->rcpts[0].path);
	h.helo = pstr_or(ident(s, LMTP_X_HELO), s->helo);
	h.name = pstr_or(ident(s, LMTP_X_NAME), NULL);
	h.addr = pstr_or(ident(s, LMTP_X_ADDR), s->addr);
	h.by = ms_pstr_c(s->srv->hostname);
	h.id = ms_pstr_c(t->id);
	h.utf8 = t->smtputf8;
	h.now = time(NULL);
	/* cannot fail: the buffer has LMTP_HDR_ROOM over the message */
	(void)lmtp_hdr_build(&h, &t->body);
	t->mode = mode;
	lmtp_data_begin(&t->dec,
			mode == LMTP_CMD_DATA ? LMTP_DATA_DOT : LMTP_DATA_RAW,
			(enum lmtp_bare_lf)cfg_of(s)->bare_lf,
			cfg_of(s)->max_message_size, &t->body);
}

/* ---- RCPT lookup ---- */

static void rcpt_done(void *ctx, int status, const struct ms_reply *rep,
		      const char *why)
{
	struct lmtp_session *s = ctx;
	struct lmtp_txn *t = s->txn;
	struct txn_rcpt *p = &t->pending;
	const struct lmtp_cfg *cfg = cfg_of(s);

	s->req = NULL;
	s->state = SS_CMD;
	lmtp_server_touch(s->srv, s);
	if (rep != NULL && status == 0) {
		const struct ms_rep_quota *q = &rep->u.quota;
		uint64_t need = t->size_hint > 0 ? t->size_hint : 1;
		if ((q->max_bytes && (q->used_bytes >= q->max_bytes ||
				      need > q->max_bytes - q->used_bytes)) ||
		    (q->max_messages && q->used_messages >= q->max_messages)) {
			msg_info("rcpt.refused id=%s to=%s user=%s "
				 "reason=over_quota",
				 t->id, msg_q(p->path), msg_q(p->user));
			reply(s, quota_reply(s), NULL);
			rcpt_free(p);
		} else {
			if (t->n == t->cap) {
				t->cap = t->cap ? t->cap * 2 : 4;
				if (t->cap > cfg->max_recipients)
					t->cap = (unsigned)cfg->max_recipients;
				t->rcpts = ms_realloc(t->rcpts,
						      t->cap * sizeof(*t->rcpts));
			}
			t->rcpts[t->n++] = *p;
			memset(p, 0, sizeof(*p));
			reply(s, LMTP_R_RCPT_OK, NULL);
		}
	} else if (rep != NULL && status == MS_ENOTFOUND) {
		msg_info("rcpt.refused id=%s to=%s user=%s reason=no_such_user",
			 t->id, msg_q(p->path), msg_q(p->user));
		reply(s, LMTP_R_NO_USER, NULL);
		rcpt_free(p);
	} else {
		msg_warn("rcpt.lookup_failed id=%s to=%s error=%s", t->id,
			 msg_q(p->path), msg_q(why));
		reply(s, LMTP_R_STORE_DOWN, NULL);
		rcpt_free(p);
	}
	sess_after(s);
}

/* ---- commands ---- */

static void cmd_lhlo(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	char line[512];
	const char *ext[12];
	size_t n = 0;

	txn_free(s);
	free(s->helo);
	s->helo = pstrdup(cmd->arg);
	s->lhlo = true;
	snprintf(line, sizeof(line), "SIZE %" PRIu64,
		 cfg_of(s)->max_message_size);
	ext[n++] = s->srv->hostname;
	ext[n++] = "PIPELINING";
	ext[n++] = "ENHANCEDSTATUSCODES";
	ext[n++] = "8BITMIME";
	ext[n++] = line;
	ext[n++] = "CHUNKING";
	ext[n++] = "SMTPUTF8";
	if (s->trusted) {
		ext[n++] = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR "
			   "DESTPORT";
		ext[n++] = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE";
	}
	lmtp_reply_count(250);
	for (size_t i = 0; i < n; i++) {
		out_append(s, i + 1 < n ? "250-" : "250 ", 4);
		out_append(s, ext[i], strlen(ext[i]));
		out_append(s, "\r\n", 2);
	}
}

static void cmd_mail(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	char note[64];
	if (!s->lhlo) {
		reply(s, LMTP_R_SEQ_LHLO, NULL);
	} else if (s->txn != NULL) {
		reply(s, LMTP_R_SEQ_NESTED, NULL);
	} else if (cmd->addr_utf8 && !cmd->smtputf8) {
		reply(s, LMTP_R_UTF8_NEEDED, NULL);
	} else if (cmd->has_size && cmd->size > cfg_of(s)->max_message_size) {
		snprintf(note, sizeof(note), "max %" PRIu64 " bytes",
			 cfg_of(s)->max_message_size);
		reply(s, LMTP_R_TOO_BIG, note);
	} else {
		txn_new(s, cmd);
		reply(s, LMTP_R_SENDER_OK, NULL);
	}
}

static void cmd_rcpt(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	struct lmtp_txn *t = s->txn;
	struct lmtp_rcpt map;

	if (t == NULL) {
		reply(s, LMTP_R_SEQ_MAIL, NULL);
		return;
	}
	if (t->mode != 0) {
		reply(s, LMTP_R_SEQ_DATA_BDAT, NULL);
		return;
	}
	if (cmd->addr_utf8 && !t->smtputf8) {
		reply(s, LMTP_R_UTF8_NEEDED, NULL);
		return;
	}
	if (t->n >= cfg_of(s)->max_recipients) {
		reply(s, LMTP_R_TOO_MANY_RCPTS, NULL);
		return;
	}
	int ret = lmtp_rcpt_map(&s->srv->rcfg, cmd->addr, &map);
	if (ret == LMTP_RCPT_EDOMAIN) {
		reply(s, LMTP_R_NO_DOMAIN, NULL);
		return;
	}
	if (ret < 0) {
		reply(s, LMTP_R_NO_USER, NULL);
		return;
	}
	t->pending.path = pstrdup(cmd->addr);
	t->pending.user = ms_strdup(map.user);
	t->pending.mailbox = map.detail[0] ? ms_strdup(map.detail) : NULL;
	struct ms_req q = { .op = MS_OP_QUOTA_GET };
	q.u.quota.user = ms_pstr_c(map.user);
	s->state = SS_WAIT;
	lmtp_server_touch(s->srv, s);
	s->req = lmtp_store_send(s->srv->store, &q, rcpt_done, s);
}

static void cmd_data(struct lmtp_session *s)
{
	struct lmtp_txn *t = s->txn;
	if (t == NULL) {
		reply(s, LMTP_R_SEQ_MAIL, NULL);
	} else if (t->mode != 0) {
		reply(s, LMTP_R_SEQ_DATA_BDAT, NULL);
	} else if (t->n == 0) {
		reply(s, LMTP_R_SEQ_RCPT, NULL);
	} else {
		data_begin(s, LMTP_CMD_DATA);
		reply(s, LMTP_R_DATA_GO, NULL);
		s->state = SS_DATA;
		lmtp_server_touch(s->srv, s);
	}
}

/* A whole chunk was read. */
static void bdat_chunk_end(struct lmtp_session *s)
{
	struct lmtp_txn *t = s->txn;
	char note[64];

	s->state = SS_CMD;
	lmtp_server_touch(s->srv, s);
	if (s->bdat_sink) {
		reply(s, s->bdat_reply, NULL);
		return;
	}
	if (t->dec.too_big && !s->bdat_last) {
		/* RFC 3030: the transaction failed; later chunks get 503 */
		snprintf(note, sizeof(note), "max %" PRIu64 " bytes",
			 cfg_of(s)->max_message_size);
		msg_info("message.refused id=%s reason=too_big limit=%" PRIu64,
			 t->id,
			 cfg_of(s)->max_message_size);
		txn_free(s);
		reply(s, LMTP_R_TOO_BIG, note);
		return;
	}
	if (s->bdat_last) {
		data_end(s);
		return;
	}
	snprintf(note, sizeof(note), "%" PRIu64 " octets so far", t->dec.size);
	reply(s, LMTP_R_CHUNK_OK, note);
}

static void cmd_bdat(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	struct lmtp_txn *t = s->txn;
	s->bdat_left = cmd->chunk;
	s->bdat_last = cmd->last;
	s->bdat_sink = true;
	if (t == NULL) {
		s->bdat_reply = LMTP_R_SEQ_MAIL;
	} else if (t->mode == LMTP_CMD_DATA) {
		s->bdat_reply = LMTP_R_SEQ_DATA_BDAT;
	} else if (t->n == 0) {
		s->bdat_reply = LMTP_R_SEQ_RCPT;
	} else {
		s->bdat_sink = false;
		if (t->mode == 0)
			data_begin(s, LMTP_CMD_BDAT);
	}
	s->state = SS_BDAT;
	lmtp_server_touch(s->srv, s);
	if (s->bdat_left == 0)
		bdat_chunk_end(s);
}

/* XCLIENT / XFORWARD value: decoded; [UNAVAILABLE] and friends: none. */
static char *xvalue(struct ms_pstr v)
{
	char tmp[LMTP_CMD_MAX_XVALUE + 1];
	int n = lmtp_xtext_decode(v, tmp, sizeof(tmp));
	if (n <= 0 || strcmp(tmp, "[UNAVAILABLE]") == 0 ||
	    strcmp(tmp, "[TEMPUNAVAIL]") == 0)
		return NULL;
	return ms_strdup(tmp);
}

static void cmd_xclient(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	bool xforward = cmd->verb == LMTP_CMD_XFORWARD;
	char **attrs = xforward ? s->xf : s->xc;
	if (!s->trusted) {
		msg_warn("command.refused client=%s command=%s "
			 "reason=untrusted_gateway",
			 msg_q(s->addr), lmtp_cmd_verb_name(cmd->verb));
		reply(s, LMTP_R_NO_XCLIENT, NULL);
		return;
	}
	if (s->txn != NULL) {
		reply(s, LMTP_R_SEQ_NESTED, NULL);
		return;
	}
	for (int i = 0; i < LMTP_X_COUNT; i++) {
		if (!cmd->given[i])
			continue;
		free(attrs[i]);
		attrs[i] = xvalue(cmd->xattr[i]);
	}
	if (xforward) {
		reply(s, LMTP_R_OK, NULL);
		return;
	}
	/* XCLIENT: a new session as the client named; greet again */
	free(s->helo);
	s->helo = NULL;
	s->lhlo = false;
	lmtp_reply_count(220);
	out_append(s, "220 ", 4);
	out_append(s, s->srv->hostname, strlen(s->srv->hostname));
	out_append(s, " LMTP mstore-lmtpd\r\n", 20);
}

static void bad_command(struct lmtp_session *s, const char *line, size_t len,
			int ret, const char *why)
{
	switch (ret) {
	case LMTP_CMD_EUNKNOWN:
		reply(s, LMTP_R_UNKNOWN_CMD, NULL);
		break;
	case LMTP_CMD_EADDR:
		reply(s,
		      len >= 4 && strncasecmp(line, "MAIL", 4) == 0
			      ? LMTP_R_BAD_SENDER
			      : LMTP_R_BAD_RCPT,
		      NULL);
		break;
	case LMTP_CMD_EPARAM:
		reply(s, LMTP_R_PARAM, why);
		break;
	default:
		reply(s, LMTP_R_SYNTAX, why);
		break;
	}
}

static void sess_command(struct lmtp_session *s, const char *line, size_t len)
{
	struct lmtp_cmd cmd;
	const char *why = "";
	int ret = lmtp_cmd_parse(line, len, &cmd, &why);
	if (ret < 0) {
		bad_command(s, line, len, ret, why);
		return;
	}
	switch (cmd.verb) {
	case LMTP_CMD_LHLO:
		cmd_lhlo(s, &cmd);
		break;
	case LMTP_CMD_HELO:
	case LMTP_CMD_EHLO:
		reply(s, LMTP_R_USE_LHLO, NULL);
		break;
	case LMTP_CMD_MAIL:
		cmd_mail(s, &cmd);
		break;
	case LMTP_CMD_RCPT:
		cmd_rcpt(s, &cmd);
		break;
	case LMTP_CMD_DATA:
		cmd_data(s);
		break;
	case LMTP_CMD_BDAT:
		cmd_bdat(s, &cmd);
		break;
	case LMTP_CMD_RSET:
		txn_free(s);
		reply(s, LMTP_R_OK, NULL);
		break;
	case LMTP_CMD_NOOP:
		reply(s, LMTP_R_OK, NULL);
		break;
	case LMTP_CMD_QUIT:
		reply(s, LMTP_R_BYE, NULL);
		s->closing = true;
		break;
	case LMTP_CMD_VRFY:
		reply(s, LMTP_R_VRFY, NULL);
		break;
	case LMTP_CMD_XCLIENT:
	case LMTP_CMD_XFORWARD:
		cmd_xclient(s, &cmd);
		break;
	}
}

/* ---- input ---- */

/* One step on the bytes waiting; false when nothing more can be done. */
static bool input_step(struct lmtp_session *s)
{
	const uint8_t *p = s->in.data + s->in_off;
	size_t avail = s->in.len - s->in_off, n;
	const uint8_t *nl;
	size_t max = (size_t)cfg_of(s)->max_line_length;

	if (avail == 0)
		return false;
	switch (s->state) {
	case SS_DATA:
		n = lmtp_data_feed(&s->txn->dec, p, avail);
		s->in_off += n;
		if (s->txn->dec.done) {
			s->state = SS_CMD;
			data_end(s);
		}
		return true;
	case SS_BDAT:
		n = avail < s->bdat_left ? avail : (size_t)s->bdat_left;
		if (!s->bdat_sink)
			(void)lmtp_data_feed(&s->txn->dec, p, n);
		s->in_off += n;
		s->bdat_left -= n;
		if (s->bdat_left == 0)
			bdat_chunk_end(s);
		return true;
	case SS_DISCARD:
		nl = memchr(p, '\n', avail);
		if (nl == NULL) {
			s->in_off += avail;
			return false;
		}
		s->in_off += (size_t)(nl - p) + 1;
		s->state = SS_CMD;
		reply(s, LMTP_R_LINE_TOO_LONG, NULL);
		return true;
	default:
		nl = memchr(p, '\n', avail);
		if (nl == NULL) {
			if (avail > max + 1) { /* +1: a CR may come last */
				s->in_off += avail;
				s->state = SS_DISCARD;
			}
			return false;
		}
		n = (size_t)(nl - p);
		s->in_off += n + 1;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > max)
			reply(s, LMTP_R_LINE_TOO_LONG, NULL);
		else
			sess_command(s, (const char *)p, n);
		return true;
	}
}

static void sess_input(struct lmtp_session *s)
{
	while (!s->l.dead && !s->closing && s->state != SS_WAIT &&
	       s->out.len - s->out_off < LMTP_OUT_HIGH && input_step(s))
		;
	if (s->l.dead)
		return;
	if (s->in_off == s->in.len) {
		ms_buf_free(&s->in); /* idle sessions hold no buffer */
		s->in_off = 0;
	} else if (s->in_off > 0) {
		memmove(s->in.data, s->in.data + s->in_off,
			s->in.len - s->in_off);
		s->in.len -= s->in_off;
		s->in_off = 0;
	}
}

static void sess_read(struct lmtp_session *s)
{
	size_t max_left = (size_t)cfg_of(s)->max_line_length + 1;
	for (int rounds = 0; rounds < 8 && !s->l.dead && want_read(s);
	     rounds++) {
		/* what was read before must be used first: the buffer holds
		   at most a partial line and one chunk */
		if (s->in.len > max_left)
			break;
		if (ms_buf_reserve(&s->in, LMTP_READ_CHUNK) < 0) {
			kill_session(s); /* cannot happen: see sess_input */
			return;
		}
		ssize_t n = recv(s->w.fd, s->in.data + s->in.len,
				 LMTP_READ_CHUNK, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			if (s->state == SS_DATA || s->state == SS_BDAT)
				msg_info("client.lost client=%s "
					 "msg=\"disconnected in the middle of "
					 "a message; nothing stored\"",
					 msg_q(s->addr));
			kill_session(s);
			return;
		}
		s->in.len += (size_t)n;
		lmtp_server_touch(s->srv, s);
		sess_input(s);
		if ((size_t)n < LMTP_READ_CHUNK)
			break;
	}
}

static void sess_event(struct lmtp_watch *w, unsigned events)
{
	struct lmtp_session *s = w->ctx;
	if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
		kill_session(s);
		return;
	}
	if (events & EPOLLOUT)
		sess_flush(s);
	sess_pump(s); /* what waited for the client to read its replies */
	if (!s->l.dead && (events & EPOLLIN))
		sess_read(s);
	sess_pump(s);
	sess_update(s);
}

/* ---- for the server ---- */

struct lmtp_session *lmtp_session_new(struct lmtp_server *srv, int fd,
				      const struct sockaddr *sa,
				      socklen_t salen, bool is_unix)
{
	struct lmtp_session *s = ms_calloc(1, sizeof(*s));
	const struct lmtp_cfg *cfg = srv->cfg;
	s->srv = srv;
	s->w.fd = fd;
	s->w.fn = sess_event;
	s->w.ctx = s;
	s->l.tlist = LMTP_T_NONE;
	s->is_unix = is_unix;
	s->state = SS_CMD;
	ms_buf_init(&s->in, cfg->max_line_length + 2 + LMTP_READ_CHUNK);
	ms_buf_init(&s->out, LMTP_OUT_MAX);
	if (is_unix) {
		snprintf(s->addr, sizeof(s->addr), "unix");
		s->trusted = cfg->trust_unix;
	} else if (sa->sa_family == AF_INET &&
		   salen >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in4 = (const void *)sa;
		s->family = AF_INET;
		memcpy(s->ip, &in4->sin_addr, 4);
		inet_ntop(AF_INET, &in4->sin_addr, s->addr, sizeof(s->addr));
		s->trusted = lmtp_cfg_trusted(cfg, AF_INET, s->ip);
	} else if (sa->sa_family == AF_INET6 &&
		   salen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		s->family = AF_INET6;
		memcpy(s->ip, &in6->sin6_addr, 16);
		inet_ntop(AF_INET6, &in6->sin6_addr, s->addr, sizeof(s->addr));
		s->trusted = lmtp_cfg_trusted(cfg, AF_INET6, s->ip);
	} else {
		snprintf(s->addr, sizeof(s->addr), "unknown");
	}
	return s;
}

int lmtp_session_start(struct lmtp_session *s)
{
	lmtp_reply_count(220);
	out_append(s, "220 ", 4);
	out_append(s, s->srv->hostname, strlen(s->srv->hostname));
	out_append(s, " LMTP mstore-lmtpd ready\r\n", 26);
	int ret = lmtp_loop_add(s->srv->loop, &s->w, EPOLLIN);
	if (ret < 0)
		return ret;
	lmtp_server_touch(s->srv, s);
	sess_flush(s);
	sess_update(s);
	return 0;
}

int lmtp_session_family(const struct lmtp_session *s, const uint8_t **ip_r)
{
	*ip_r = s->ip;
	return s->is_unix ? 0 : s->family;
}

enum lmtp_tlist lmtp_session_tlist(const struct lmtp_session *s)
{
	if (s->closing)
		return LMTP_T_CMD;
	switch (s->state) {
	case SS_WAIT:
		return LMTP_T_NONE;
	case SS_DATA:
	case SS_BDAT:
		return LMTP_T_DATA;
	default:
		return LMTP_T_CMD;
	}
}

void lmtp_session_timeout(struct lmtp_session *s)
{
	if (s->closing) {
		kill_session(s); /* it did not even read its last reply */
		return;
	}
	if (s->state == SS_DATA || s->state == SS_BDAT)
		msg_info("client.timeout client=%s state=data "
			 "msg=\"nothing stored\"",
			 msg_q(s->addr));
	else
		msg_info("client.timeout client=%s state=command",
			 msg_q(s->addr));
	reply(s, LMTP_R_TIMEOUT, NULL);
	s->closing = true;
	lmtp_server_touch(s->srv, s);
	sess_flush(s);
	sess_update(s);
}

void lmtp_session_shutdown(struct lmtp_session *s)
{
	if (s->l.dead || s->state == SS_WAIT)
		return; /* its replies come first (finish_delivery) */
	reply(s, LMTP_R_SHUTDOWN, NULL);
	s->closing = true;
	lmtp_server_touch(s->srv, s);
	sess_flush(s);
	sess_update(s);
}

void lmtp_session_release(struct lmtp_session *s)
{
	lmtp_store_cancel(&s->req);
	if (s->w.fd >= 0) {
		lmtp_loop_del(s->srv->loop, &s->w);
		close(s->w.fd);
		s->w.fd = -1;
	}
	txn_free(s);
	ms_buf_free(&s->in);
	ms_buf_free(&s->out);
}

void lmtp_session_free(struct lmtp_session *s)
{
	lmtp_session_release(s);
	free(s->helo);
	for (int i = 0; i < LMTP_X_COUNT; i++)
		free(s->xc[i]);
	xf_clear(s);
	free(s);
}
