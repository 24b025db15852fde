/*
 * cmd_failback - `mstore -c OLD-PRIMARY.conf failback --to SOCKET
 * [--dry-run] [--no-rewind]`: bring the old primary P back after a
 * failover, as the new standby of the promoted DR store D
 * (docs/replication.md, "Failback").  Run at P with P's mstored
 * stopped (P's store lock is taken); SOCKET is D's mstored admin socket
 * (on one machine, or forwarded over ssh: see the docs).
 *
 *  1. fork check: FORK_INFO (op 53) at D names the fork (seq F, the
 *     position (s, o) of D's TIMELINE record) and D's chain hash up to
 *     there; P computes its own (ms_log_fork_hash) and compares.  A
 *     mismatch refuses: the stores diverged before the fork.
 *  2. re-delivery: every PLACE past F whose message P still has (P
 *     acknowledged it) goes to D as a new message, same user and
 *     mailbox by name (created there if missing), body read from P and
 *     checked against its dedup key, flags, keywords plus
 *     $MstoreRedelivered and $MstoreFrom-T-SEQ (P's timeline and the
 *     PLACE's seq), received time.  Messages D already has with that
 *     keyword (an earlier, interrupted run) are skipped: idempotent.
 *  3. report: every other record past F (flag changes, expunges,
 *     mailbox and user changes, quota ...) is not replayed and is
 *     listed, with the re-deliveries, in lost+found/failback.TIME.report
 *     and on stdout.
 *  4. rewind (only if every message is at D): P's log is cut to (s, o)
 *     (or to the start of the oldest segment P compacted after the fork,
 *     which D then sends again whole), the cut parts saved in
 *     lost+found/, udsync.pos written, the index removed.  P can then run
 *     udsync recv (from D's udsync send) and mstored --standby.
 *
 * Exit 0 done, 1 refused or not every message re-delivered (nothing
 * rewound), 2 could not run.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "body.h"
#include "client.h"
#include "event.h"
#include "idx.h"
#include "log.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

#define REDELIVERED_KW "$MstoreRedelivered"
#define FROM_KW "$MstoreFrom-"

struct fb_item {
	uint64_t seq, timeline, user_id, mbox_id;
	uint32_t uid;
	int copied; /* its body is older than the fork: a copy or move */
};

struct fb {
	const struct ms_store_cfg *cfg;
	const struct failback_opts *o;
	struct failback_result *res;
	struct ms_log *log;
	struct ms_idx *idx;
	char idxdir[4096];
	struct ms_body_ctx bctx;
	struct ms_client *dadm;
	const char *dsock;	/* D's admin socket */
	const char *dusock;	/* D's user socket (mailboxes, messages) */
	FILE *rep;		/* the report file */
	struct ms_log_fork fork;
	uint64_t p_timeline;
	struct fb_item *items;
	size_t nitems, capitems;
	uint64_t retire_min;	/* oldest segment P compacted past the fork */
	/* the user being re-delivered to at D */
	struct ms_client *duser;
	uint64_t cur_user_id;
	char **tags, **mboxes;
	size_t ntags, nmboxes;
};

static void report(struct fb *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void report(struct fb *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (f->rep != NULL) {
		va_list ap2;
		va_copy(ap2, ap);
		vfprintf(f->rep, fmt, ap2);
		fputc('\n', f->rep);
		va_end(ap2);
	}
	if (!f->o->quiet) {
		vfprintf(stdout, fmt, ap);
		fputc('\n', stdout);
		fflush(stdout);
	}
	va_end(ap);
}

static void strs_free(char ***v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
	*n = 0;
}

static void strs_add(char ***v, size_t *n, const char *s, size_t len)
{
	*v = ms_realloc(*v, (*n + 1) * sizeof(**v));
	(*v)[*n] = ms_calloc(1, len + 1);
	memcpy((*v)[*n], s, len);
	(*n)++;
}

static int strs_has(char **v, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(v[i]) == len && memcmp(v[i], s, len) == 0)
			return 1;
	return 0;
}

/* ---- 1. the fork ---- */

static int fork_check(struct fb *f, const char **error_r)
{
	struct ms_req q = { .op = MS_OP_FORK_INFO };
	struct ms_reply rep;
	struct ms_log_status ls;
	struct ms_log_fork mine;
	int ret;

	ms_log_get_status(f->log, &ls);
	f->p_timeline = ls.timeline;
	q.u.fork_info.timeline = ls.timeline;
	if ((ret = ms_client_request(f->dadm, &q, &rep, error_r)) < 0) {
		*error_r = ms_errf("the new primary's fork from timeline "
				   "%" PRIu64 ": %s",
				   ls.timeline, *error_r);
		return ret == rep.status ? MS_EMISMATCH : ret;
	}
	const struct ms_rep_fork_info *fi = &rep.u.fork_info;
	f->fork.fork_seq = fi->fork_seq;
	f->fork.pos = (struct ms_pos){ fi->seg, fi->off };
	f->fork.timeline = fi->timeline;
	if (memcmp(fi->store_id, ms_log_meta(f->log)->store_id,
		   MS_STORE_ID_SIZE) != 0) {
		*error_r = "the new primary is a copy of another store";
		return MS_EMISMATCH;
	}
	report(f, "fork: seq %" PRIu64 " at %" PRIu64 ":%" PRIu64
		  ", timeline %" PRIu64 " -> %" PRIu64
		  " (the new primary is on timeline %" PRIu64
		  "); this store ends at seq %" PRIu64,
	       fi->fork_seq, fi->seg, fi->off, ls.timeline, fi->timeline,
	       fi->cur_timeline, ls.durable_seq);
	ret = ms_log_fork_hash(f->log, f->fork.pos, fi->fork_seq, &mine,
			       error_r);
	if (ret < 0) {
		*error_r = ms_errf("this store does not share the log up to "
				   "the fork: %s; the stores diverged before "
				   "the fork (operator: compare them with "
				   "mstore dump)",
				   *error_r);
		return MS_EMISMATCH;
	}
	if (memcmp(mine.chain, fi->chain, sizeof(mine.chain)) != 0) {
		*error_r = "the chain hash up to the fork differs: the stores "
			   "diverged before the fork (operator: compare them "
			   "with mstore dump)";
		return MS_EMISMATCH;
	}
	if (!mine.tail_holes && !fi->tail_holes &&
	    mine.tail_sum != fi->tail_sum) {
		*error_r = ms_errf("the bytes of segment %" PRIu64 " before "
				   "the fork differ: the stores diverged "
				   "before the fork",
				   fi->seg);
		return MS_EMISMATCH;
	}
	report(f, "fork check: both stores agree up to the fork%s",
	       mine.tail_holes || fi->tail_holes
		       ? " (chain only: the fork segment was compacted)"
		       : "");
	return 0;
}

/* ---- index ---- */

static int index_open(struct fb *f, const char **error_r)
{
	uint64_t seq = 0;
	struct ms_pos pos;
	struct ms_log_status ls;
	int ret;

	if (f->cfg->index != NULL)
		snprintf(f->idxdir, sizeof(f->idxdir), "%s", f->cfg->index);
	else
		snprintf(f->idxdir, sizeof(f->idxdir), "%s/index",
			 f->cfg->primary);
	ms_log_get_status(f->log, &ls);
	ret = ms_idx_open(f->idxdir, f->cfg->index_map_size, &f->idx, error_r);
	if (ret == 0 && ms_idx_applied(f->idx, &seq, &pos) == 0 &&
	    seq > ls.durable_seq)
		ret = MS_ECORRUPT; /* ahead of the log */
	if (ret == 0)
		ret = ms_idx_catch_up(f->idx, f->log, error_r);
	if (ret == 0)
		return 0;
	ms_idx_close(&f->idx);
	report(f, "index %s: rebuilding it from the log", f->idxdir);
	if ((ret = ms_idx_rebuild(f->idxdir, f->cfg->index_map_size, f->log,
				  error_r)) < 0 ||
	    (ret = ms_idx_open(f->idxdir, f->cfg->index_map_size, &f->idx,
			       error_r)) < 0)
		return ret;
	return 0;
}

/* ---- 2. the tail past the fork ---- */

static void note(struct fb *f, uint64_t seq, const char *what)
{
	f->res->not_replayed++;
	report(f, "not replayed: seq %" PRIu64 " %s", seq, what);
}

/* A change to some uid ranges of a mailbox, listed, not replayed. */
static void note_ranges(struct fb *f, uint64_t seq, const char *what,
			uint64_t user_id, uint64_t mbox_id, uint32_t nranges)
{
	note(f, seq, ms_errf("%s: user %" PRIu64 " mailbox %" PRIu64
			     ", %u uid ranges",
			     what, user_id, mbox_id, nranges));
}

static int walk_tail(struct fb *f, const char **error_r)
{
	struct ms_log_iter *it;
	struct ms_rec_hdr h;
	struct ms_pos pos;
	const uint8_t *p;
	int ret;

	ms_log_iter_new(f->log, f->fork.pos, &it);
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, error_r)) > 0) {
		struct ms_event ev;
		if (h.seq <= f->fork.fork_seq)
			continue;
		if (h.type == MS_REC_BODY || h.type == MS_REC_SEAL ||
		    h.type == MS_REC_HOLE || h.type == MS_REC_NOOP ||
		    h.type == MS_REC_CHECKPOINT)
			continue;
		if (ms_event_decode(h.type, p, h.len, &ev, error_r) < 0) {
			note(f, h.seq, ms_errf("%s (does not decode: %s)",
					       ms_rec_type_name(h.type),
					       *error_r));
			continue;
		}
		switch (h.type) {
		case MS_REC_PLACE: {
			struct fb_item *x;
			if (f->nitems == f->capitems) {
				f->capitems = f->capitems ? 2 * f->capitems
							  : 256;
				f->items = ms_realloc(f->items,
						      f->capitems *
							      sizeof(*x));
			}
			x = &f->items[f->nitems++];
			x->seq = h.seq;
			x->timeline = h.timeline;
			x->user_id = ev.u.place.user_id;
			x->mbox_id = ev.u.place.mbox_id;
			x->uid = ev.u.place.uid;
			x->copied = ev.u.place.body_seq != 0 &&
				    ev.u.place.body_seq <= f->fork.fork_seq;
			break;
		}
		case MS_REC_FLAGS:
			note_ranges(f, h.seq, "flag change",
				    ev.u.flags.user_id, ev.u.flags.mbox_id,
				    ev.u.flags.ranges.n);
			break;
		case MS_REC_EXPUNGE:
			note_ranges(f, h.seq, "expunge", ev.u.expunge.user_id,
				    ev.u.expunge.mbox_id,
				    ev.u.expunge.ranges.n);
			break;
		case MS_REC_MBOX_CREATE:
			note(f, h.seq, ms_errf("mailbox create: user %" PRIu64
					       " \"%.*s\" (created at the new "
					       "primary only if a message is "
					       "re-delivered to it)",
					       ev.u.mbox_create.user_id,
					       (int)ev.u.mbox_create.name.len,
					       ev.u.mbox_create.name.s));
			break;
		case MS_REC_MBOX_RENAME:
			note(f, h.seq, ms_errf("mailbox rename: user %" PRIu64
					       " mailbox %" PRIu64
					       " to \"%.*s\"",
					       ev.u.mbox_rename.user_id,
					       ev.u.mbox_rename.mbox_id,
					       (int)ev.u.mbox_rename.new_name.len,
					       ev.u.mbox_rename.new_name.s));
			break;
		case MS_REC_MBOX_DELETE:
			note(f, h.seq, ms_errf("mailbox delete: user %" PRIu64
					       " mailbox %" PRIu64,
					       ev.u.mbox_delete.user_id,
					       ev.u.mbox_delete.mbox_id));
			break;
		case MS_REC_USER_CREATE:
			note(f, h.seq, ms_errf("user create: \"%.*s\"",
					       (int)ev.u.user_create.name.len,
					       ev.u.user_create.name.s));
			break;
		case MS_REC_RETIRE:
			if (f->retire_min == 0 ||
			    ev.u.retire.seg < f->retire_min)
				f->retire_min = ev.u.retire.seg;
			note(f, h.seq, ms_errf("compaction of segment %" PRIu64
					       " (the new primary sends it "
					       "again whole)",
					       ev.u.retire.seg));
			break;
		default:
			note(f, h.seq, ms_rec_type_name(h.type));
		}
	}
	ms_log_iter_free(&it);
	return ret;
}

/* ---- re-delivery at D ---- */

static int by_user(const void *a, const void *b)
{
	const struct fb_item *x = a, *y = b;
	if (x->user_id != y->user_id)
		return x->user_id < y->user_id ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void user_end(struct fb *f)
{
	ms_client_close(&f->duser);
	strs_free(&f->tags, &f->ntags);
	strs_free(&f->mboxes, &f->nmboxes);
}

/* The $MstoreFrom- keywords of one message into f->tags. */
static int collect_tags(void *ctx, const struct ms_msg_meta *m)
{
	struct fb *f = ctx;
	struct ms_proto_iter kit;
	struct ms_pstr kw;

	ms_proto_iter_keywords(&kit, &m->keywords);
	while (ms_proto_next_keyword(&kit, &kw) > 0)
		if (kw.len > strlen(FROM_KW) &&
		    memcmp(kw.s, FROM_KW, strlen(FROM_KW)) == 0)
			strs_add(&f->tags, &f->ntags, kw.s, kw.len);
	return 0;
}

/* A mailbox's name into f->mboxes. */
static int collect_mbox(void *ctx, const struct ms_mbox_info *mi)
{
	struct fb *f = ctx;
	strs_add(&f->mboxes, &f->nmboxes, mi->name.s, mi->name.len);
	return 0;
}

/* Connect to D as the user (created there if missing); collect its
   mailboxes and the $MstoreFrom- keywords it already has. */
static int user_begin(struct fb *f, const char *user, const char **error_r)
{
	struct ms_req q = { .op = MS_OP_USER_CREATE };
	struct ms_reply rep;
	int ret;

	q.u.user.name = ms_pstr_c(user);
	ret = ms_client_request(f->dadm, &q, &rep, error_r);
	if (ret == 0)
		report(f, "user %s: created at the new primary", user);
	else if (ret != -EEXIST)
		return ret;
	if ((ret = ms_client_connect(f->dusock, 30000, &f->duser, error_r)) <
		    0 ||
	    (ret = ms_client_hello(f->duser, user, error_r)) < 0)
		return ret;
	if ((ret = ms_client_mbox_list_each(f->duser, collect_mbox, f,
					    error_r)) < 0)
		return ret;
	for (size_t i = 0; i < f->nmboxes; i++)
		if ((ret = ms_client_fetch_meta_each(f->duser, f->mboxes[i],
						     collect_tags, f,
						     error_r)) < 0)
			return ret;
	return 0;
}

/* What re-delivery needs of a message, copied out of the index. */
struct fb_msg {
	char user[MS_PROTO_NAME_MAX + 1];
	char *mbox;
	uint32_t special_use;
	uint32_t flags;
	int64_t received;
	struct ms_pstr *kws;
	uint32_t nkws;
	struct ms_buf body;
};

static void msg_clear(struct fb_msg *m)
{
	free(m->mbox);
	for (uint32_t i = 0; i < m->nkws; i++)
		free((char *)m->kws[i].s);
	free(m->kws);
	ms_buf_free(&m->body);
}

/* 1 with *m_r; 0 when P no longer has the message; <0 an error. */
static int msg_load(struct fb *f, const struct fb_item *x, struct fb_msg *m_r,
		    const char **error_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_msg im;
	struct ms_idx_mbox mb;
	struct ms_idx_user u;
	struct ms_idx_body b;
	struct ms_rec_hdr h;
	struct ms_buf payload;
	uint8_t key[MS_BODY_DEDUP_SIZE];
	int ret;

	memset(m_r, 0, sizeof(*m_r));
	ms_buf_init(&m_r->body, MS_BODY_MAX_PLAIN);
	if ((ret = ms_idx_read_begin(f->idx, &rd)) < 0) {
		*error_r = "cannot read the index";
		return ret;
	}
	ret = ms_idx_msg_get(rd, x->mbox_id, x->uid, &im);
	if (ret == MS_ENOTFOUND) {
		ms_idx_read_end(&rd);
		return 0;
	}
	if (ret == 0)
		ret = ms_idx_mbox_get(rd, x->mbox_id, &mb);
	if (ret == 0)
		ret = ms_idx_user_get(rd, mb.user_id, &u);
	if (ret == 0)
		ret = ms_idx_body_get(rd, im.body_key, &b);
	if (ret != 0) { /* the getters answer 0 or an error */
		if (ret > 0)
			ret = -EIO;
		ms_idx_read_end(&rd);
		*error_r = ms_errf("the index of this store: %s",
				   ms_strerror(ret));
		return ret;
	}
	snprintf(m_r->user, sizeof(m_r->user), "%.*s", (int)u.name_len,
		 u.name);
	m_r->mbox = ms_calloc(1, mb.name_len + 1);
	memcpy(m_r->mbox, mb.name, mb.name_len);
	m_r->special_use = mb.special_use;
	m_r->flags = im.flags;
	m_r->received = im.received_date;
	m_r->kws = ms_calloc(im.nkeywords + 2, sizeof(*m_r->kws));
	size_t koff = 0;
	const char *kw;
	size_t kl;
	while (ms_idx_msg_keyword(&im, &koff, &kw, &kl) > 0) {
		char *c = ms_calloc(1, kl + 1);
		memcpy(c, kw, kl);
		m_r->kws[m_r->nkws++] = (struct ms_pstr){ c, kl };
	}
	ms_idx_read_end(&rd);
	/* the body, from the log, checked */
	ms_buf_init(&payload, MS_REC_MAX_PAYLOAD);
	ret = ms_log_read(f->log, b.pos, &h, &payload, error_r);
	if (ret == 0 && h.type != MS_REC_BODY) {
		*error_r = "the index points at a record that is no body";
		ret = MS_ECORRUPT;
	}
	if (ret == 0)
		ret = ms_body_decode(&f->bctx, h.flags, payload.data,
				     payload.len, &m_r->body, error_r);
	ms_buf_free(&payload);
	if (ret == 0) {
		ms_body_dedup_key(&f->bctx, m_r->body.data, m_r->body.len, key);
		if (memcmp(key, im.body_key, sizeof(key)) != 0) {
			*error_r = "the body does not match its dedup key";
			ret = MS_ECORRUPT;
		}
	}
	return ret < 0 ? ret : 1;
}

static int redeliver_one(struct fb *f, const struct fb_item *x,
			 const char **error_r)
{
	struct fb_msg m;
	char tag[64];
	int ret = msg_load(f, x, &m, error_r);

	if (ret <= 0) {
		msg_clear(&m);
		if (ret == 0) {
			f->res->gone++;
			report(f, "not re-delivered: seq %" PRIu64
				  " (mailbox %" PRIu64 " uid %u): expunged "
				  "past the fork",
			       x->seq, x->mbox_id, x->uid);
		}
		return ret;
	}
	snprintf(tag, sizeof(tag), FROM_KW "%" PRIu64 "-%" PRIu64,
		 x->timeline, x->seq);
	if (f->duser == NULL || f->cur_user_id != x->user_id) {
		user_end(f);
		if ((ret = user_begin(f, m.user, error_r)) < 0) {
			*error_r = ms_errf("user %s at the new primary: %s",
					   m.user, *error_r);
			msg_clear(&m);
			return ret;
		}
		f->cur_user_id = x->user_id;
	}
	if (strs_has(f->tags, f->ntags, tag, strlen(tag))) {
		f->res->already++;
		report(f, "already at the new primary: %s/%s seq %" PRIu64
			  " (%s)",
		       m.user, m.mbox, x->seq, tag);
		msg_clear(&m);
		return 0;
	}
	if (!strs_has(f->mboxes, f->nmboxes, m.mbox, strlen(m.mbox))) {
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		struct ms_reply rep;
		q.u.mbox.name = ms_pstr_c(m.mbox);
		q.u.mbox.special_use = m.special_use;
		ret = ms_client_request(f->duser, &q, &rep, error_r);
		if (ret < 0 && ret != -EEXIST) {
			msg_clear(&m);
			return ret;
		}
		if (ret == 0)
			report(f, "mailbox %s/%s: created at the new primary",
			       m.user, m.mbox);
		strs_add(&f->mboxes, &f->nmboxes, m.mbox, strlen(m.mbox));
	}
	m.kws[m.nkws++] = MS_PSTR(REDELIVERED_KW);
	m.kws[m.nkws++] = ms_pstr_c(tag);
	struct ms_placement pl = { .mailbox = ms_pstr_c(m.mbox),
				   .flags = m.flags,
				   .received = m.received > 0 ? m.received : 0 };
	pl.keywords.n = m.nkws;
	pl.keywords.list = m.kws;
	struct ms_req q = { .op = MS_OP_APPEND };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_append_result r = { .status = -EPROTO };
	q.u.append.body = m.body.data;
	q.u.append.body_len = (uint32_t)m.body.len;
	q.u.append.placements = (struct ms_placements){ .n = 1, .list = &pl };
	ret = ms_client_request(f->duser, &q, &rep, error_r);
	if (ret == 0) {
		ms_proto_iter_results(&it, &rep.u.append);
		if (ms_proto_next_result(&it, &r) <= 0)
			r.status = -EPROTO;
		if (r.status < 0)
			*error_r = ms_errf("%.*s", (int)r.reason.len,
					   r.reason.s);
		ret = r.status;
	}
	m.nkws -= 2; /* the two added are not ours to free */
	if (ret == 0) {
		f->res->redelivered++;
		report(f, "re-delivered: %s/%s seq %" PRIu64 " -> uid %u%s",
		       m.user, m.mbox, x->seq, r.uid,
		       x->copied ? " (a copy or move of an older message: "
				   "the original may be there too)"
				 : "");
	}
	msg_clear(&m);
	return ret;
}

static int redeliver(struct fb *f, const char **error_r)
{
	int ret = 0, failed = 0;

	qsort(f->items, f->nitems, sizeof(*f->items), by_user);
	for (size_t i = 0; i < f->nitems; i++) {
		const char *why = "";
		ret = redeliver_one(f, &f->items[i], &why);
		if (ret < 0) {
			failed++;
			report(f, "NOT re-delivered: seq %" PRIu64 ": %s",
			       f->items[i].seq, why);
			*error_r = why;
			user_end(f);
		}
	}
	user_end(f);
	f->res->failed = (uint64_t)failed;
	return failed ? MS_ESTATE : 0;
}

/* ---- 4. rewind ---- */

static int lock_copies(const char *dirs[2], int fds[2], const char **error_r)
{
	for (int c = 0; c < 2; c++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/mstore.lock", dirs[c]);
		fds[c] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
		if (fds[c] < 0 || flock(fds[c], LOCK_EX | LOCK_NB) < 0) {
			*error_r = ms_errf("%s is in use (mstored, udsync "
					   "recv?): %s",
					   dirs[c], strerror(errno));
			return -EBUSY;
		}
	}
	return 0;
}

/* The durable position file udsync recv reads (docs/replication.md). */
static int pos_write(const char *dir, uint64_t seg, uint64_t off,
		     uint64_t seq, uint64_t tl)
{
	static const uint8_t magic[8] = { 'U', 'D', 'S', 'P', 'O', 'S', 0, 1 };
	uint8_t b[48];
	char path[4200], tmp[4220];
	memcpy(b, magic, 8);
	ms_put64(b + 8, seg);
	ms_put64(b + 16, off);
	ms_put64(b + 24, seq);
	ms_put64(b + 32, tl);
	ms_put64(b + 40, XXH3_64bits(b, 40));
	snprintf(path, sizeof(path), "%s/udsync.pos", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	int ret = ms_pwrite_full(fd, b, sizeof(b), 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (ret == 0 && fsync(dfd) < 0)
			ret = -errno;
		close(dfd);
	}
	return ret;
}

static int save_range(const char *dir, const char *name, int fd, uint64_t off,
		      uint64_t size, long long t)
{
	char dst[4400];
	snprintf(dst, sizeof(dst), "%s/lost+found/%s@%" PRIu64 ".failback.%lld",
		 dir, name, off, t);
	return ms_save_range(AT_FDCWD, dst, fd, off, size);
}

/* Cut one copy at (seg, off): later segments to lost+found whole, the
   bytes of seg past off saved there and cut.  *last_r: the newest
   segment left, *size_r its size. */
static int cut_copy(struct fb *f, const char *dir, uint64_t cseg,
		    uint64_t coff, uint64_t *last_r, uint64_t *size_r,
		    const char **error_r)
{
	char ldir[4200];
	long long t = (long long)time(NULL);
	snprintf(ldir, sizeof(ldir), "%s/log", dir);
	DIR *d = opendir(ldir);
	struct dirent *de;
	int lfd, ret = 0;
	if (d == NULL) {
		*error_r = ms_errf("%s: %s", ldir, strerror(errno));
		return -errno;
	}
	lfd = dirfd(d);
	*last_r = 0;
	*size_r = 0;
	while ((de = readdir(d)) != NULL && ret == 0) {
		uint64_t seg;
		struct stat sb;
		char dst[4400];
		if (ms_seg_parse_name(de->d_name, &seg) < 0)
			continue;
		if (seg > cseg || (seg == cseg && coff == 0)) {
			snprintf(dst, sizeof(dst), "%s/lost+found/%s.failback.%lld",
				 dir, de->d_name, t);
			if (renameat(lfd, de->d_name, AT_FDCWD, dst) < 0)
				ret = -errno;
			else
				report(f, "rewind: %s/log/%s moved to "
					  "lost+found",
				       dir, de->d_name);
			continue;
		}
		int fd = openat(lfd, de->d_name, O_RDWR | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) < 0) {
			ret = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		uint64_t size = (uint64_t)sb.st_size;
		if (seg == cseg && size > coff) {
			ret = save_range(dir, de->d_name, fd, coff, size, t);
			if (ret == 0 && (ftruncate(fd, (off_t)coff) < 0 ||
					 fsync(fd) < 0))
				ret = -errno;
			if (ret == 0)
				report(f, "rewind: %s/log/%s: %" PRIu64
					  " bytes past %" PRIu64
					  " saved to lost+found and cut",
				       dir, de->d_name, size - coff, coff);
			size = coff;
		}
		close(fd);
		if (seg > *last_r) {
			*last_r = seg;
			*size_r = size;
		}
	}
	if (ret == 0 && fsync(lfd) < 0)
		ret = -errno;
	closedir(d);
	if (ret < 0)
		*error_r = ms_errf("%s: cutting the log: %s", dir,
				   ms_strerror(ret));
	return ret;
}

/* The seal's seq of a sealed segment file (the last record). */
static int seal_seq(const char *dir, uint64_t seg, uint64_t size,
		    uint64_t *seq_r)
{
	char path[4300], name[MS_SEG_NAME_LEN + 1];
	uint8_t hb[MS_REC_HDR_SIZE];
	struct ms_rec_hdr h;
	const char *err;
	ms_seg_name(seg, name);
	snprintf(path, sizeof(path), "%s/log/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = size < MS_SEG_HDR_SIZE + MS_SEG_SEAL_SIZE
			  ? MS_ECORRUPT
			  : ms_pread_full(fd, hb, sizeof(hb),
					  size - MS_SEG_SEAL_SIZE);
	close(fd);
	if (ret == 0 && (ms_rec_check_hdr(hb, &h, &err) < 0 ||
			 h.type != MS_REC_SEAL))
		ret = MS_ECORRUPT;
	if (ret == 0)
		*seq_r = h.seq;
	return ret;
}

static int rewind_store(struct fb *f, const char **error_r)
{
	const char *dirs[2] = { f->cfg->primary, f->cfg->secondary };
	int lk[2] = { -1, -1 };
	uint64_t cseg = f->fork.pos.seg, coff = f->fork.pos.off;
	uint64_t seq = f->fork.fork_seq;
	int ret;

	if (f->retire_min != 0 && f->retire_min <= cseg) {
		/* P compacted an older segment after the fork: its bytes
		   there are not D's; D sends it again whole */
		cseg = f->retire_min;
		coff = 0;
		report(f, "rewind: to the start of segment %" PRIu64
			  " (compacted here after the fork)",
		       cseg);
	}
	if ((ret = lock_copies(dirs, lk, error_r)) < 0)
		goto out;
	/* P is a DR replica of D from before the first byte is cut: a
	   plain mstored must never start on the old timeline again */
	struct ms_replica mark = { MS_REPLICA_DR, 0, 0 };
	for (int c = 0; c < 2; c++) {
		int dfd = open(dirs[c], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		const char *e = "";
		ret = dfd < 0 ? -errno : ms_replica_write(dfd, &mark, &e);
		if (dfd < 0)
			e = strerror(errno);
		if (dfd >= 0)
			close(dfd);
		if (ret < 0) {
			*error_r = ms_errf("%s: %s", dirs[c], e);
			goto out;
		}
	}
	report(f, "rewind: marked a DR replica (%s): mstored only with "
		  "--standby until mstore promote",
	       MS_REPLICA_NAME);
	uint64_t last = 0, size = 0;
	for (int c = 0; c < 2; c++) {
		uint64_t l = 0, s = 0;
		if ((ret = cut_copy(f, dirs[c], cseg, coff, &l, &s,
				    error_r)) < 0)
			goto out;
		if (c == 0) {
			last = l;
			size = s;
		}
	}
	if (last != 0 && (last != cseg || coff == 0) &&
	    (ret = seal_seq(dirs[0], last, size, &seq)) < 0) {
		*error_r = ms_errf("segment %" PRIu64 " before the cut is not "
				   "sealed: %s",
				   last, ms_strerror(ret));
		goto out;
	}
	for (int c = 0; c < 2; c++) {
		char path[4200];
		if (last == 0) {
			snprintf(path, sizeof(path), "%s/udsync.pos", dirs[c]);
			(void)unlink(path);
			continue;
		}
		if ((ret = pos_write(dirs[c], last, size, seq,
				     f->p_timeline)) < 0) {
			*error_r = ms_errf("%s/udsync.pos: %s", dirs[c],
					   ms_strerror(ret));
			goto out;
		}
	}
	report(f, "rewind: the log ends at %" PRIu64 ":%" PRIu64
		  " (seq %" PRIu64 "); udsync.pos written",
	       last, size, seq);
	/* (the change counts file may stay: the rewound log follows the
	   new primary's timeline, and a start refuses counts of another
	   timeline or of another last record) */
	static const char *const idxfiles[] = { "data.mdb", "lock.mdb" };
	for (size_t i = 0; i < MS_ARRAY_SIZE(idxfiles); i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/%s", f->idxdir, idxfiles[i]);
		if (unlink(path) < 0 && errno != ENOENT) {
			ret = -errno;
			*error_r = ms_errf("%s: %s", path, strerror(errno));
			goto out;
		}
	}
	report(f, "rewind: index %s removed (mstored --standby rebuilds it)",
	       f->idxdir);
	ret = 0;
out:
	for (int c = 0; c < 2; c++)
		if (lk[c] >= 0)
			close(lk[c]);
	return ret;
}

/* ---- the whole run ---- */

int tool_failback(const struct ms_store_cfg *cfg, const char *dsock,
		  const char *dusock, const struct failback_opts *o,
		  struct failback_result *res, const char **error_r)
{
	struct fb f;
	struct ms_log_cfg lc;
	uint8_t key[32];
	char path[4300];
	int ret;

	memset(&f, 0, sizeof(f));
	memset(res, 0, sizeof(*res));
	f.cfg = cfg;
	f.o = o;
	f.res = res;
	f.dsock = dsock;
	f.dusock = dusock;
	ms_store_cfg_to_log(cfg, &lc);
	lc.create = 0;
	/* a failback run again after its rewind finds P a DR replica: it
	   appends nothing to P's log (it reads it, and cuts it) */
	lc.replica_ok = 1;
	if ((ret = ms_log_open(&lc, &f.log, error_r)) < 0) {
		if (ret == -EBUSY)
			*error_r = "this store is in use: stop its mstored "
				   "(and any udsync recv) first";
		return ret;
	}
	if (cfg->key_file != NULL &&
	    (ret = ms_body_key_load(cfg->key_file, key, error_r)) < 0)
		goto out;
	const struct ms_meta *meta = ms_log_meta(f.log);
	ms_body_ctx_init(&f.bctx, meta->store_id, meta->salt,
			 cfg->key_file ? key : NULL, 0);
	snprintf(path, sizeof(path), "%s/lost+found/failback.%lld.report",
		 cfg->primary, (long long)time(NULL));
	if (!o->dry_run && (f.rep = fopen(path, "w")) == NULL) {
		*error_r = ms_errf("%s: %s", path, strerror(errno));
		ret = -errno;
		goto out;
	}
	if ((ret = ms_client_connect(dsock, 60000, &f.dadm, error_r)) < 0 ||
	    (ret = ms_client_hello(f.dadm, NULL, error_r)) < 0) {
		*error_r = ms_errf("the new primary's mstored at %s: %s",
				   dsock, *error_r);
		goto out;
	}
	if ((ret = fork_check(&f, error_r)) < 0)
		goto out;
	res->fork_seq = f.fork.fork_seq;
	if ((ret = index_open(&f, error_r)) < 0)
		goto out;
	if ((ret = walk_tail(&f, error_r)) < 0)
		goto out;
	report(&f, "past the fork: %zu messages placed, %" PRIu64
		   " other changes",
	       f.nitems, res->not_replayed);
	if (o->dry_run) {
		ret = 0;
		goto out;
	}
	ret = redeliver(&f, error_r);
	report(&f, "re-delivered %" PRIu64 ", already there %" PRIu64
		   ", expunged past the fork %" PRIu64 ", failed %" PRIu64
		   ", not replayed %" PRIu64,
	       res->redelivered, res->already, res->gone, res->failed,
	       res->not_replayed);
	if (ret < 0) {
		*error_r = ms_errf("not every message is at the new primary "
				   "(%" PRIu64 " failed): nothing rewound; "
				   "run failback again",
				   res->failed);
		goto out;
	}
	ms_idx_close(&f.idx);
	ms_log_close(&f.log);
	if (o->no_rewind) {
		report(&f, "not rewound (--no-rewind)");
		goto out;
	}
	if ((ret = rewind_store(&f, error_r)) < 0)
		goto out;
	res->rewound = 1;
	report(&f, "done: start udsync recv here (the new primary's udsync "
		   "send resumes at the fork) and mstored --standby");
out:
	if (f.rep != NULL) {
		fclose(f.rep);
		if (!o->quiet)
			printf("report: %s\n", path);
	}
	user_end(&f);
	ms_client_close(&f.dadm);
	if (f.idx != NULL)
		ms_idx_close(&f.idx);
	if (f.log != NULL)
		ms_log_close(&f.log);
	ms_body_ctx_wipe(&f.bctx);
	free(f.items);
	return ret;
}

int cmd_failback(int argc, char **argv)
{
	struct failback_opts o = { 0 };
	struct failback_result r;
	const char *to = NULL, *to_user = NULL, *err = "";
	char derived[4200];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
			to = argv[++i];
		else if (strcmp(argv[i], "--to-user") == 0 && i + 1 < argc)
			to_user = argv[++i];
		else if (strcmp(argv[i], "--dry-run") == 0)
			o.dry_run = 1;
		else if (strcmp(argv[i], "--no-rewind") == 0)
			o.no_rewind = 1;
		else
			goto usage;
	}
	if (to == NULL || tool_cfg() == NULL)
		goto usage;
	if (to_user == NULL) {
		/* the default layout: mstored.sock next to
		   mstored-admin.sock */
		size_t n = strlen(to), sl = strlen("-admin.sock");
		if (n <= sl || strcmp(to + n - sl, "-admin.sock") != 0 ||
		    n + 1 > sizeof(derived)) {
			fprintf(stderr, "mstore failback: name the new "
					"primary's user socket with --to-user\n");
			return TOOL_FAILED;
		}
		snprintf(derived, sizeof(derived), "%.*s.sock",
			 (int)(n - sl), to);
		to_user = derived;
	}
	ms_msg_set_level(MS_MSG_ERROR);
	int ret = tool_failback(tool_cfg(), to, to_user, &o, &r, &err);
	if (ret < 0) {
		fprintf(stderr, "mstore failback: %s\n", err);
		return ret == MS_EMISMATCH || ret == MS_ESTATE ? TOOL_PROBLEMS
							       : TOOL_FAILED;
	}
	return TOOL_OK;
usage:
	fprintf(stderr, "usage: mstore -c OLD-PRIMARY.conf failback --to "
			"NEW-PRIMARY-ADMIN-SOCKET [--to-user USER-SOCKET] "
			"[--dry-run] [--no-rewind]\n");
	return TOOL_FAILED;
}
