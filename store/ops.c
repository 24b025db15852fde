/*
 * ops.c - requests of the mstore protocol, on the log and the index; see
 * ops.h for the promise.
 *
 * Write path: a request is checked against the index (the durable,
 * applied state) and the in-memory allocation state, its records are
 * appended to the log, and its reply is built at once but held.  Each
 * record's completion applies it to the index in the loop's write
 * transaction; at the end of the loop's turn (ms_ops_tick) the held
 * replies of the requests whose records are all durable go out.  A
 * failed log (no writable copy) answers them with MS_ENOCOPY instead.
 * The transaction is committed only now and then (idx_settle).
 *
 * Read path: the open write transaction, else a read transaction on the
 * committed index (ms_idx_read_begin); bodies are read from the log
 * (checked, healed from the other copy) and decoded; the last decoded
 * body is kept per connection, since a large body is fetched in chunks.
 *
 * Isolation: a user-role session names mailboxes only, always within
 * the user it said hello as; no request carries a mailbox or message id,
 * so there is nothing to forge.  Admin requests come only from the admin
 * socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <sodium.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "body.h"
#include "chgsnap.h"
#include "event.h"
#include "idx.h"
#include "log.h"
#include "msg.h"
#include "ops.h"
#include "u64map.h"

#define OPS_SERVER_NAME "mstored"

struct sess {
	int hello;
	uint16_t version; /* the protocol version HELLO agreed on */
	uint64_t user_id;
	char user[MS_PROTO_NAME_MAX + 1];
	/* commit gather (see "group commit gather" below) */
	unsigned writes;	/* its requests with records in flight */
	uint64_t answered_ns;	/* its last write answered, none in flight
				   since; 0: not so */
	int slow;		/* it did not come back within a gather */
	uint64_t gather_gen;	/* expected back by this gather; 0: no */
	/* the last body decoded for FETCH_BODY (compressed or sealed),
	   for the chunks that follow; let go after its last chunk */
	uint8_t body_key[32];
	int have_body;
	struct ms_buf body;
	/* the last plain body too large for one reply: its record, read
	   and checked at its first chunk; the chunks that follow are sent
	   from that copy's file, nothing of it is held here */
	int have_fbody;
	uint8_t fbody_key[32];
	struct ms_pos fbody_pos;
	int fbody_copy;
	uint64_t fbody_len;
	uint64_t fbody_epoch;	/* the log's file epoch when checked */
	struct waiter *waits;	/* its WAITs parked (IDLE), its USER_WATCH */
	int watching;		/* it has a USER_WATCH */
	/* a reply of its goes out in this turn (uwake_send) */
	int reply_due;
};

struct req;

/* The index's write transaction is committed when it is this old or
   holds this many records (idx_settle). */
#define IDX_COMMIT_NS (50 * 1000000ULL)
#define IDX_COMMIT_RECORDS 8192
/* The most a buffer kept between reads holds on to. */
#define READ_KEEP (1u << 20)

static uint64_t now_ns(void);

struct req {
	struct ms_ops *ops;
	struct ms_conn *conn;	/* a reference */
	uint16_t op;
	uint32_t id;
	int pending;		/* records not settled yet */
	int status;
	struct ms_buf reply;	/* the whole reply frame, held */
	/* names reserved while their create is in flight */
	char *pend_user;
	uint64_t pend_mbox_user;
	char *pend_mbox;
	/* quota use in flight: one entry per placement, released with the
	   request */
	uint64_t *pend_quota_users;
	size_t npend_quota;
	uint64_t pend_quota_bytes;
	/* messages on their way into mailboxes (struct mpend), and the
	   mailbox it deletes: released with the request */
	struct mpend_ent *pend_in;
	size_t npend_in;
	uint64_t pend_del;
	/* USER_DELETE: the user it deletes (ops->udel), while in flight */
	uint64_t pend_user_del;
	/* MBOX_RENAME: the new names it reserves while in flight */
	char **pend_ren;
	size_t npend_ren;
	/* replication = sync: the seq of its last record, and since when
	   its reply waits for the DR site */
	uint64_t max_seq;
	uint64_t dr_wait_ms;
	int wrote;		/* its records went to the log */
	/* answered only once its records are applied (ms_ops_tick): what
	   it did is more than the index (COMPACT: the retired segments) */
	int after_apply;
	/* STORE, EXPUNGE (version 7) that wrote a record: its reply ends
	   with the mailbox's counts before and after it, filled in when
	   the record is durable (rec_done, from chg_recs) */
	int chg_counts;
	struct req *next;
};

/* the mailbox counts note_record gave the FLAGS and EXPUNGE records of
   the batch being finished, for their requests' replies */
struct chg_rec {
	uint64_t seq, prev, count;
};

struct mstate {			/* allocation state of one mailbox */
	uint64_t uidnext;
	uint64_t modseq;	/* highest given */
	uint32_t uidvalidity;	/* as of the last request (MBOX_UPDATE) */
};

struct waiter {			/* a WAIT or USER_WATCH request ("WAIT" below) */
	struct ms_conn *conn;	/* a reference */
	uint32_t id;
	uint64_t mbox_id;	/* USER_WATCH: its user id | WAIT_USER_KEY */
	/* USER_WATCH: on ops->uwake while its user's change is to be sent */
	int due;
	/* USER_WATCH: the session's protocol version; from 7 its replies
	   carry mailbox counts (watch_reply): those of the mailboxes
	   changed since the last reply (mchg), or every one of the user's
	   (mchg_full), or none at all (mchg_none: the user was deleted) */
	uint16_t version;
	uint8_t mchg_full, mchg_none, mchg_over;
	uint64_t *mchg;
	size_t nmchg, capmchg;
	struct waiter *u_next, **u_pprev;
	uint64_t deadline_ms;
	struct waiter *next, *prev;		/* its mailbox's */
	struct waiter *expired_next;		/* wake_waiters' own */
	struct waiter *s_next, **s_pprev;	/* its session's */
};

/* a USER_WATCH's key in the WAIT map: its user id with this bit */
#define WAIT_USER_KEY ((uint64_t)1 << 63)

struct upend {			/* quota use in flight per user */
	uint64_t bytes, msgs;
};

/* Per mailbox, while not all 0: messages on their way in (PLACE records
   of APPEND, COPY, MOVE, UNDELETE not yet in the index) and deletes in
   flight (MBOX_DELETE not yet in the index). */
struct mpend {
	uint64_t in, del;
};

struct mpend_ent {		/* a request's share of one struct mpend */
	uint64_t mbox_id, n;
};

/*
 * Replication state (udsync, docs/replication.md).  udsync send learns
 * the durable end with REPL_WAIT and reports the DR site's durable
 * position with REPL_ACK.  With replication = sync a reply that wrote
 * records waits on dr_wait until the DR ack covers its last record; if
 * the DR site is away longer than sync_timeout the daemon is "degraded":
 * it refuses writes (sync_fallback = refuse) or acknowledges without the
 * DR site (async), until the DR site has caught up again.
 */
#define REPL_DUR 4096

struct repl_waiter {		/* a REPL_WAIT request */
	struct ms_conn *conn;	/* a reference */
	uint32_t id;
	struct ms_pos from;
	uint64_t deadline_ms;
	struct repl_waiter *next;
};

struct repl {
	int sync;		/* replication = sync */
	int fallback_async;	/* sync_fallback = async */
	uint64_t timeout_ms;	/* sync_timeout */
	struct repl_waiter *waiters;
	/* the last REPL_ACK */
	int have_ack;
	struct ms_pos dr_pos;
	uint64_t dr_seq;
	unsigned dr_state;	/* enum ms_repl_state */
	uint64_t ack_ms;	/* when it came */
	uint64_t behind_ms;	/* since when DR is behind; 0: it is not */
	/* when the durable end passed which seq: lag in time is the age of
	   the first record the DR site has not acknowledged (REPL_DUR
	   entries, at most one per ms: at least 4 s at any rate) */
	struct repl_dur { uint64_t seq, ms; } dur[REPL_DUR];
	unsigned dur_head, dur_n;
	int degraded;		/* sync mode, DR away past the timeout */
	struct req *dr_wait, *dr_wait_tail;
	uint64_t n_waiting, n_timeouts, n_refused, n_released_async;
};

/* LMTP reply codes 200..599; mstore-lmtpd instances remembered */
#define LMTP_CODE_MIN 200
#define LMTP_CODES 400
#define LMTP_INSTANCES 16

struct ms_ops {
	struct ms_log *log;
	struct ms_idx *idx;
	char *idx_dir;
	uint64_t map_size;
	struct ms_body_ctx bctx;
	struct ms_srv *srv;
	struct ms_idx_txn *txn;
	uint64_t txn_began;	/* ns: when txn was begun */
	uint64_t txn_records;	/* records applied in txn */
	int idx_tfd;		/* timerfd: txn's commit is due; -1 */
	/* FETCH_BODY's read of a body record, kept from one read to the
	   next (up to READ_KEEP bytes): no allocation per body */
	struct ms_buf rd_payload;
	uint64_t idx_armed;	/* what idx_tfd is set to; 0: nothing */
	struct req *ready, *ready_tail;
	struct req *inflight;	/* requests with records in the log */
	struct ms_u64map mstate;	/* mailbox id -> struct mstate */
	struct ms_u64map upend;	/* user id -> struct upend, while not 0 */
	struct ms_u64map mpend;	/* mailbox id -> struct mpend, while not 0 */
	struct ms_u64map udel;	/* user id -> struct mpend (del), while not 0 */
	uint64_t next_user_id, next_mbox_id;
	uint32_t last_uidvalidity;
	struct {
		char **v;
		size_t n;
	} pend_users, pend_mboxes, pend_renames;
	uint64_t completions;
	int dead_reported;
	int idx_full;		/* apply hit the map size: grow, replay */
	uint64_t scrub_rate;	/* bytes per second, 0: off */
	uint64_t scrub_last_us; /* the token bucket's last fill */
	int64_t scrub_tokens;	/* bytes the scrub may read now (a step
				   that read a large record leaves a debt) */
	struct ms_pos scrub_pos;
	unsigned turn_requests; /* requests this turn of the loop */
	struct ms_scrub_stats scrub;
	uint64_t scrub_passes;
	/* WAIT requests parked until a change: mailbox id -> its first
	   ("WAIT") */
	struct ms_u64map waits;
	size_t nwaiters;
	size_t nwatches;	/* the USER_WATCHes among them */
	uint64_t wait_next_ms;	/* no deadline comes before it */
	uint64_t *touched;	/* mailboxes changed in this turn */
	size_t ntouched, captouched;
	/* each user's change count (USER_WATCH, "WAIT" below) */
	uint64_t chg_epoch;	/* random, new at a start (chg_restore) */
	uint64_t chg_seq;	/* the largest count given in this epoch */
	uint64_t chg_floor;	/* the count of a user not in chg_users */
	struct ms_u64map chg_users;	/* user id -> its count, as a pointer */
	/* mailbox id -> the count its last change got; a mailbox not here
	   has its user's count */
	struct ms_u64map chg_mboxes;
	uint64_t chg_noted;	/* the seq of the last record counted */
	struct chg_rec *chg_recs;	/* seq ascending */
	size_t nchg_recs, capchg_recs;
	int chg_recs_done;	/* a done callback came since: a new batch */
	uint64_t n_watch_full;	/* USER_WATCH replies that listed all */
	struct waiter *uwake;	/* USER_WATCHes due: sent by uwake_send */
	/* counters for STATUS */
	uint64_t n_requests, n_errors, n_appends, n_bodies_deduped;
	uint64_t n_body_chunks, n_body_chunks_file;
	uint64_t body_held;	/* bytes of decoded bodies sessions hold */
	uint64_t max_mailboxes;	/* a user's, INBOX included; 0: no limit */
	uint64_t n_anomalies;
	/* the largest list a reply may carry (FETCH_META, CHANGES) and
	   the largest FETCH_BODY chunk: half the frame limit (reply_max) */
	uint64_t reply_max;
	/* undelete and compaction */
	uint64_t undelete_window_s;
	uint64_t compact_threshold;	/* per mille */
	uint64_t compact_interval_ms, compact_last_ms;
	uint64_t purged_before;	/* the last PURGE appended */
	struct dying {		/* bodies a queued RETIRE drops */
		uint64_t seg;
		uint8_t key[32];
	} *dying;
	size_t ndying, capdying;
	uint64_t n_compactions, n_segs_compacted, n_recs_dropped;
	uint64_t n_bytes_dropped, n_compact_errors, n_undeleted;
	struct repl repl;	/* udsync: see "replication" below */
	/* requests and error replies by op (the system API's metrics) */
	uint64_t n_op_requests[MS_OPS_MAX_OP], n_op_errors[MS_OPS_MAX_OP];
	/* mstored --standby: see "standby" at the end */
	int standby;
	struct ms_log_cfg lcfg;
	uint64_t standby_warned_ms;
	/* [store] user_socket_peers, resolved: see "peers" */
	struct peers {
		int any;		/* "*" */
		uid_t *uids;
		size_t nuids;
		gid_t *gids;
		size_t ngids;
	} peers;
	/* group commit gather: see there */
	struct {
		uint64_t max_ns;	/* group_commit_wait_us; 0: off */
		uint64_t flush_ns;	/* recent flush time (moving avg) */
		uint64_t gen;		/* the completion being gathered */
		unsigned out;		/* its clients not back yet */
		uint64_t deadline;	/* ns; the hold ends then at last */
		uint64_t since;		/* ns: the hold began; 0: none */
		int tfd;		/* timerfd for the deadline; -1 */
		uint64_t armed;		/* deadline the timer is set to */
		uint64_t n_holds, n_timeouts, held_ns;
	} gather;
	/* LMTP_STATS: see "mstore-lmtpd's replies" near the end */
	struct lmtp_inst {
		uint64_t instance, seen_ms;
		uint64_t by_code[LMTP_CODES];
	} lmtp[LMTP_INSTANCES];
	size_t nlmtp;
	uint64_t lmtp_gone[LMTP_CODES]; /* of instances that gave way */
};

/* ---- small helpers ---- */

#define REPL_COUNTERS 16
static int op_lmtp_stats(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			 const struct ms_req_lmtp_stats *q,
			 const char **why_r);
static size_t repl_counters(struct ms_ops *ops, struct ms_counter *cs);
static int op_promote(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
		      const char **why_r);
static int op_fork_info(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			const struct ms_req_fork_info *q, const char **why_r);

static uint64_t now_ms(void);
static int repl_refuses(const struct ms_ops *ops);

/* A body a queued compaction drops: never reuse it (a new BODY record
   is written instead, and the index then finds the body there). */
static int body_dying(const struct ms_ops *ops, const uint8_t key[32])
{
	for (size_t i = 0; i < ops->ndying; i++)
		if (memcmp(ops->dying[i].key, key, 32) == 0)
			return 1;
	return 0;
}

static void retire_applied(struct ms_ops *ops, const struct ms_rec_hdr *h,
			   const uint8_t *payload);

static int reply_error(struct ms_conn *c, uint16_t op, uint32_t id, int status,
		       const char *reason)
{
	struct ms_buf b;
	ms_buf_init(&b, 0);
	ms_proto_error(&b, op, id, status, reason);
	ms_conn_send(c, b.data, b.len);
	ms_buf_free(&b);
	return status;
}

static void reply_out(struct ms_conn *c, uint32_t id,
		      const struct ms_reply *rep, int hold)
{
	struct ms_buf b, *out = ms_conn_out(c);
	const char *err = "";

	/* straight into the client's queue; a reply that cannot be
	   encoded there (a bad one, or a full queue) takes the way below,
	   which tells the two apart (an encoder's failure leaves the queue
	   as it was) */
	if (out != NULL && ms_reply_encode(out, id, rep, NULL) == 0) {
		if (hold)
			ms_conn_hold(c);
		else
			ms_conn_queued(c);
		return;
	}
	ms_buf_init(&b, 0);
	if (ms_reply_encode(&b, id, rep, &err) < 0) {
		ms_buf_reset(&b);
		msg_error("reply.encode_failed op=%s error=%s",
			  ms_op_name(rep->op), msg_q(err));
		ms_proto_error(&b, rep->op, id, -EIO, "reply encoding failed");
	}
	ms_conn_send(c, b.data, b.len);
	ms_buf_free(&b);
}

static void reply_now(struct ms_conn *c, uint32_t id, const struct ms_reply *rep)
{
	reply_out(c, id, rep, 0);
}

/* Sent with the connection's next frame: see uwake_send's caller. */
static void reply_held(struct ms_conn *c, uint32_t id,
		       const struct ms_reply *rep)
{
	reply_out(c, id, rep, 1);
}

static struct mstate *mstate_get(struct ms_ops *ops, struct ms_idx_rd *rd,
				 uint64_t mbox_id)
{
	struct mstate *m = ms_u64map_get(&ops->mstate, mbox_id);
	if (m != NULL)
		return m;
	struct ms_idx_mbox im;
	if (ms_idx_mbox_get(rd, mbox_id, &im) < 0)
		return NULL;
	m = ms_calloc(1, sizeof(*m));
	m->uidnext = im.uidnext ? im.uidnext : 1;
	m->modseq = im.highestmodseq;
	m->uidvalidity = im.uidvalidity;
	ms_u64map_put(&ops->mstate, mbox_id, m);
	return m;
}

/* UIDVALIDITY of a new mailbox: the time, but never one given before
   (a mailbox created again under an old name must get a new one). */
static uint32_t next_uidvalidity(struct ms_ops *ops)
{
	uint32_t uv = (uint32_t)time(NULL);
	if (uv <= ops->last_uidvalidity)
		uv = ops->last_uidvalidity + 1;
	ops->last_uidvalidity = uv;
	return uv;
}

/* A new mailbox: its allocation state starts fresh. */
static void mstate_new(struct ms_ops *ops, uint64_t mbox_id,
		       uint32_t uidvalidity)
{
	struct mstate *m = ms_calloc(1, sizeof(*m));
	m->uidnext = 1;
	m->modseq = 1;
	m->uidvalidity = uidvalidity;
	/* ids are never given twice: no state can be there yet */
	ms_assert(ms_u64map_get(&ops->mstate, mbox_id) == NULL);
	ms_u64map_put(&ops->mstate, mbox_id, m);
}

static void mstate_clear(struct ms_ops *ops)
{
	MS_U64MAP_EACH(&ops->mstate, i) {
		free(ops->mstate.vals[i]);
	}
	ms_u64map_free(&ops->mstate);
}

/*
 * Quota use in flight per user: counted at APPEND, let go when its
 * request ends (req_free).  Only users with use in flight have an entry,
 * so the map stays as small as the writes in flight, however many users
 * have ever received mail (with a list of every user that ever did, an
 * append cost a walk of it: 24,000 appends/s fell to 5,000 after 20,000
 * users).
 */
static const struct upend *upend_find(const struct ms_ops *ops,
				      uint64_t user_id)
{
	static const struct upend none;
	const struct upend *u = ms_u64map_get(&ops->upend, user_id);
	return u != NULL ? u : &none;
}

static void upend_add(struct ms_ops *ops, uint64_t user_id, uint64_t bytes)
{
	struct upend *u = ms_u64map_get(&ops->upend, user_id);
	if (u == NULL) {
		u = ms_calloc(1, sizeof(*u));
		ms_u64map_put(&ops->upend, user_id, u);
	}
	u->bytes += bytes;
	u->msgs++;
}

static void upend_sub(struct ms_ops *ops, uint64_t user_id, uint64_t bytes)
{
	struct upend *u = ms_u64map_get(&ops->upend, user_id);
	ms_assert(u != NULL && u->msgs > 0 && u->bytes >= bytes);
	u->bytes -= bytes;
	if (--u->msgs == 0)
		free(ms_u64map_del(&ops->upend, user_id));
}

/* id's entry of map (ops->mpend by mailbox, ops->udel by user); all 0
   when it has none */
static const struct mpend *mpend_find(const struct ms_u64map *map,
				      uint64_t id)
{
	static const struct mpend none;
	const struct mpend *m = ms_u64map_get(map, id);
	return m != NULL ? m : &none;
}

static struct mpend *mpend_get(struct ms_u64map *map, uint64_t id)
{
	struct mpend *m = ms_u64map_get(map, id);
	if (m == NULL) {
		m = ms_calloc(1, sizeof(*m));
		ms_u64map_put(map, id, m);
	}
	return m;
}

/* An entry back to all 0 leaves the map. */
static void mpend_put(struct ms_u64map *map, uint64_t id, struct mpend *m)
{
	if (m->in == 0 && m->del == 0)
		free(ms_u64map_del(map, id));
}

/* One less of r's delete of id in map (its release). */
static void mpend_del_sub(struct ms_u64map *map, uint64_t id)
{
	struct mpend *m = ms_u64map_get(map, id);
	ms_assert(m != NULL && m->del > 0);
	m->del--;
	mpend_put(map, id, m);
}

/* r brings n messages into mailbox mbox_id (until it ends). */
static void mpend_in_add(struct ms_ops *ops, struct req *r, uint64_t mbox_id,
			 uint64_t n)
{
	if (n == 0)
		return;
	mpend_get(&ops->mpend, mbox_id)->in += n;
	if (r->npend_in > 0 && r->pend_in[r->npend_in - 1].mbox_id == mbox_id) {
		r->pend_in[r->npend_in - 1].n += n;
		return;
	}
	r->pend_in = ms_realloc(r->pend_in,
				(r->npend_in + 1) * sizeof(*r->pend_in));
	r->pend_in[r->npend_in++] = (struct mpend_ent){ mbox_id, n };
}

static void mpend_release(struct ms_ops *ops, struct req *r)
{
	for (size_t i = 0; i < r->npend_in; i++) {
		struct mpend *m = ms_u64map_get(&ops->mpend,
						r->pend_in[i].mbox_id);
		ms_assert(m != NULL && m->in >= r->pend_in[i].n);
		m->in -= r->pend_in[i].n;
		mpend_put(&ops->mpend, r->pend_in[i].mbox_id, m);
	}
	free(r->pend_in);
	r->pend_in = NULL;
	r->npend_in = 0;
	if (r->pend_del != 0)
		mpend_del_sub(&ops->mpend, r->pend_del);
	if (r->pend_user_del != 0)
		mpend_del_sub(&ops->udel, r->pend_user_del);
	r->pend_del = r->pend_user_del = 0;
}

/* As mbox_dying, for a user whose USER_DELETE is in flight: the
   records of a write after it would name a user the index no longer
   has when they are applied. */
static int user_dying(const struct ms_ops *ops, uint64_t user_id,
		      const char **why_r)
{
	if (mpend_find(&ops->udel, user_id)->del == 0)
		return 0;
	*why_r = "no such user (being deleted)";
	return MS_ENOTFOUND;
}

/*
 * A mailbox whose MBOX_DELETE is in flight is gone for every request
 * that writes after it: a message placed in it meanwhile would be
 * answered OK and then land in no mailbox (its PLACE record comes after
 * the delete's in the log), and a flag change, an expunge, an update, a
 * second delete or a rename would name a mailbox the index no longer
 * has when they are applied (an anomaly).  Reads still see it until the
 * delete is applied.
 */
static int mbox_dying(const struct ms_ops *ops, uint64_t mbox_id,
		      const char **why_r)
{
	if (mpend_find(&ops->mpend, mbox_id)->del == 0)
		return 0;
	*why_r = "no such mailbox (being deleted)";
	return MS_ENOTFOUND;
}

static int pend_has(const char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return 1;
	return 0;
}

/* A mailbox name (mbox_key) that a create or a rename in flight takes:
   the index does not have it yet, and a second one would be an anomaly
   when applied (a name the user has already). */
static int name_pending(const struct ms_ops *ops, const char *key)
{
	return pend_has((const char *const *)ops->pend_mboxes.v,
			ops->pend_mboxes.n, key) ||
	       pend_has((const char *const *)ops->pend_renames.v,
			ops->pend_renames.n, key);
}

static char *pend_add(char ***v, size_t *n, const char *s)
{
	*v = ms_realloc(*v, (*n + 1) * sizeof(**v));
	(*v)[*n] = ms_strdup(s);
	return (*v)[(*n)++];
}

static void pend_del(char **v, size_t *n, const char *s)
{
	for (size_t i = 0; i < *n; i++) {
		if (v[i] == s) {
			v[i] = v[--*n];
			return;
		}
	}
}

static char *mbox_key(uint64_t user_id, const char *name, size_t len)
{
	char *k = ms_malloc(len + 24);
	snprintf(k, len + 24, "%llu/%.*s", (unsigned long long)user_id,
		 (int)len, name);
	return k;
}

/* MBOX_CREATEs of user_id in flight (not in the index yet). */
static uint64_t user_creates(const struct ms_ops *ops, uint64_t user_id)
{
	char pre[24];
	int n = snprintf(pre, sizeof(pre), "%llu/",
			 (unsigned long long)user_id);
	uint64_t c = 0;
	for (size_t i = 0; i < ops->pend_mboxes.n; i++)
		c += strncmp(ops->pend_mboxes.v[i], pre, (size_t)n) == 0;
	return c;
}

/* ---- records and their completion ---- */

static void req_settled(struct req *r)
{
	struct ms_ops *ops = r->ops;
	if (r->wrote) {
		struct sess *s = ms_conn_data(r->conn);
		if (s != NULL && s->writes > 0)
			s->writes--;
	}
	/* off the in-flight list, onto the ready list */
	for (struct req **p = &ops->inflight; *p != NULL; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	r->next = NULL;
	if (ops->ready_tail)
		ops->ready_tail->next = r;
	else
		ops->ready = r;
	ops->ready_tail = r;
}

/* Every durable record, in log order: apply it to the index. */
static void apply_record(void *ctx, const struct ms_rec_hdr *h,
			 const uint8_t *payload, struct ms_pos pos)
{
	struct ms_ops *ops = ctx;
	const char *err = "";
	int ret = 0;

	if (h->type == MS_REC_RETIRE && !ops->standby)
		retire_applied(ops, h, payload);
	if (ops->txn == NULL) {
		ret = ms_idx_begin(ops->idx, &ops->txn);
		ops->txn_began = now_ns();
		ops->txn_records = 0;
	}
	ops->txn_records++;
	if (ret == 0)
		ret = ms_idx_apply(ops->txn, h->seq, pos, h, payload, &err);
	/* these payloads start with u64 user id, u64 mailbox id
	   (docs/format.md): note the mailbox for WAIT */
	if ((h->type == MS_REC_PLACE || h->type == MS_REC_FLAGS ||
	     h->type == MS_REC_EXPUNGE || h->type == MS_REC_MBOX_DELETE ||
	     h->type == MS_REC_MBOX_RENAME || h->type == MS_REC_MBOX_UPDATE) &&
	    h->len >= 16 && ops->nwaiters > ops->nwatches) {
		if (ops->ntouched == ops->captouched) {
			ops->captouched = ops->captouched ? ops->captouched * 2
							  : 64;
			ops->touched = ms_realloc(ops->touched,
						  ops->captouched *
							  sizeof(*ops->touched));
		}
		ops->touched[ops->ntouched++] = ms_get64(payload + 8);
	}
	if (ret == MS_IDX_ANOMALY) {
		ops->n_anomalies++;
		msg_warn("index.record_refused seq=%llu error=%s",
			 (unsigned long long)h->seq, msg_q(err));
	} else if (ret == MS_ETOOBIG || ops->idx_full) {
		/* the map is full: the turn's end grows it and replays the
		   log from the index's position (the records are durable) */
		ops->idx_full = 1;
	} else if (ret < 0) {
		/* the record is durable; the index is derived and a restart
		   replays it.  Stop rather than answer from a state that
		   lost it. */
		msg_fatal("index.apply_failed seq=%llu error=%s detail=%s "
			  "msg=\"exiting; the restart replays the log\"",
			  (unsigned long long)h->seq, msg_q(ms_strerror(ret)),
			  msg_q(err));
	}
}

/* A STORE's or EXPUNGE's reply gets the mailbox counts that its record
   (seq) got, or keeps 0, 0 (cannot tell). */
static void chg_patch(struct req *r, uint64_t seq)
{
	struct ms_ops *ops = r->ops;
	size_t lo = 0, hi = ops->nchg_recs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ops->chg_recs[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < ops->nchg_recs && ops->chg_recs[lo].seq == seq &&
	    r->reply.len >= MS_PROTO_HDR_SIZE + 16) {
		uint8_t *end = r->reply.data + r->reply.len;
		ms_put64(end - 16, ops->chg_recs[lo].prev);
		ms_put64(end - 8, ops->chg_recs[lo].count);
	}
}

/* A record of a request is durable (and applied) or has failed. */
static void rec_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct req *r = ctx;
	(void)seq;
	(void)pos;
	r->ops->completions++;
	r->ops->chg_recs_done = 1;
	if (seq > r->max_seq)
		r->max_seq = seq;
	if (r->chg_counts && status == 0)
		chg_patch(r, seq);
	if (status != 0 && r->status == 0)
		r->status = status;
	if (--r->pending == 0)
		req_settled(r);
}

static int req_append(struct req *r, uint8_t type, uint8_t flags,
		      const void *payload, uint32_t len, uint64_t *seq_r)
{
	int ret = ms_log_append(r->ops->log, type, flags, payload, len,
				rec_done, r, NULL, seq_r);
	if (ret == 0)
		r->pending++;
	return ret;
}

static int req_append_event(struct req *r, const struct ms_event *ev,
			    uint64_t *seq_r)
{
	struct ms_buf b;
	ms_buf_init(&b, MS_REC_MAX_PAYLOAD);
	int ret = ms_event_encode(ev, &b);
	if (ret == 0)
		ret = req_append(r, ev->type, 0, b.data, (uint32_t)b.len, seq_r);
	ms_buf_free(&b);
	return ret;
}

static struct req *req_new(struct ms_ops *ops, struct ms_conn *c, uint16_t op,
			   uint32_t id)
{
	struct req *r = ms_calloc(1, sizeof(*r));
	r->ops = ops;
	r->conn = c;
	ms_conn_ref(c);
	r->op = op;
	r->id = id;
	ms_buf_init(&r->reply, 0);
	return r;
}

static void req_free(struct req *r)
{
	struct ms_ops *ops = r->ops;
	if (r->pend_user)
		pend_del(ops->pend_users.v, &ops->pend_users.n, r->pend_user);
	if (r->pend_mbox)
		pend_del(ops->pend_mboxes.v, &ops->pend_mboxes.n, r->pend_mbox);
	for (size_t i = 0; i < r->npend_ren; i++) {
		pend_del(ops->pend_renames.v, &ops->pend_renames.n,
			 r->pend_ren[i]);
		free(r->pend_ren[i]);
	}
	free(r->pend_ren);
	free(r->pend_user);
	free(r->pend_mbox);
	for (size_t i = 0; i < r->npend_quota; i++)
		upend_sub(ops, r->pend_quota_users[i], r->pend_quota_bytes);
	free(r->pend_quota_users);
	mpend_release(ops, r);
	ms_conn_unref(&r->conn);
	ms_buf_free(&r->reply);
	free(r);
}

/*
 * The request's records are queued: hold the reply until they are
 * durable, or answer now if it wrote none.
 */
static void req_submit(struct req *r, const struct ms_reply *rep)
{
	const char *err = "";
	if (ms_reply_encode(&r->reply, r->id, rep, &err) < 0) {
		msg_error("reply.encode_failed op=%s error=%s",
			  ms_op_name(rep->op), msg_q(err));
		ms_buf_reset(&r->reply);
		ms_proto_error(&r->reply, r->op, r->id, -EIO,
			       "reply encoding failed");
		r->chg_counts = 0;
	}
	if (r->pending == 0) {
		r->next = NULL;
		req_settled(r);
		return;
	}
	r->next = r->ops->inflight;
	r->ops->inflight = r;
	r->wrote = 1;
	struct sess *s = ms_conn_data(r->conn);
	if (s != NULL)
		s->writes++;
}

/* ---- sessions ---- */

static struct sess *sess_of(struct ms_conn *c)
{
	struct sess *s = ms_conn_data(c);
	if (s == NULL) {
		s = ms_calloc(1, sizeof(*s));
		ms_buf_init(&s->body, MS_BODY_MAX_PLAIN);
		ms_conn_set_data(c, s);
	}
	return s;
}

static void gather_back(struct ms_ops *ops, struct sess *s);
static void wait_drop_session(struct ms_ops *ops, struct sess *s);

/* Let go of the session's decoded body and its buffer. */
static void sess_body_free(struct ms_ops *ops, struct sess *s)
{
	ops->body_held -= s->body.cap;
	ms_buf_free(&s->body);
	s->have_body = 0;
}

void ms_ops_closed(struct ms_ops *ops, struct ms_conn *c)
{
	struct sess *s = ms_conn_data(c);
	if (s == NULL)
		return;
	gather_back(ops, s);	/* it will not send again */
	wait_drop_session(ops, s);
	sess_body_free(ops, s);
	free(s);
	ms_conn_set_data(c, NULL);
}

/*
 * ---- peers ----
 *
 * Who may say hello as which user on the user socket (docs/protocol.md,
 * "Roles and sessions"): root and mstored's own uid as anyone; a peer
 * whose uid, gid or a supplementary group (SO_PEERCRED, SO_PEERGROUPS)
 * is in [store] user_socket_peers as anyone (Dovecot's mail processes,
 * one mail_uid for all virtual users); any other peer only as the mail
 * user named like its system user.  "*" in the list lets every peer the
 * socket's mode lets in act for anyone (the old rule).  The admin socket
 * takes root and mstored's uid only (srv.c, at accept).
 */
static void peers_free(struct peers *p)
{
	free(p->uids);
	free(p->gids);
	memset(p, 0, sizeof(*p));
}

/* Names, numbers and @groups, separated by commas or blanks. */
static int peers_parse(const char *spec, struct peers *p,
		       const char **error_r)
{
	memset(p, 0, sizeof(*p));
	for (const char *s = spec != NULL ? spec : ""; *s != '\0';) {
		size_t n = strcspn(s, ", \t");
		if (n == 0) {
			s++;
			continue;
		}
		char tok[256];
		if (n >= sizeof(tok)) {
			*error_r = "[store] user_socket_peers: a name is too "
				   "long";
			peers_free(p);
			return MS_ECONFIG;
		}
		memcpy(tok, s, n);
		tok[n] = '\0';
		s += n;
		int group = tok[0] == '@';
		const char *name = tok + group;
		char *end;
		errno = 0;
		unsigned long id = strtoul(name, &end, 10);
		int numeric = *name != '\0' && *end == '\0' && errno == 0 &&
			      id < (unsigned long)(uid_t)-1;
		if (strcmp(tok, "*") == 0) {
			p->any = 1;
		} else if (group) {
			struct group *g = numeric ? NULL : getgrnam(name);
			if (!numeric && g == NULL) {
				*error_r = ms_errf("[store] user_socket_peers: "
						   "no group %s",
						   name);
				peers_free(p);
				return MS_ECONFIG;
			}
			p->gids = ms_realloc(p->gids, (p->ngids + 1) *
							      sizeof(gid_t));
			p->gids[p->ngids++] = numeric ? (gid_t)id : g->gr_gid;
		} else {
			struct passwd *pw = numeric ? NULL : getpwnam(name);
			if (!numeric && pw == NULL) {
				*error_r = ms_errf("[store] user_socket_peers: "
						   "no user %s",
						   name);
				peers_free(p);
				return MS_ECONFIG;
			}
			p->uids = ms_realloc(p->uids, (p->nuids + 1) *
							      sizeof(uid_t));
			p->uids[p->nuids++] = numeric ? (uid_t)id : pw->pw_uid;
		}
	}
	return 0;
}

static int peers_has_gid(const struct peers *p, gid_t g)
{
	for (size_t i = 0; i < p->ngids; i++)
		if (p->gids[i] == g)
			return 1;
	return 0;
}

/* May the peer of c (a user-socket connection) act for user?  0, or
   -EACCES with the reason. */
static int peer_may_act(const struct ms_ops *ops, struct ms_conn *c,
			const char *user, size_t len, const char **why_r)
{
	const struct peers *p = &ops->peers;
	uid_t uid = ms_conn_uid(c);

	if (ms_conn_is_admin(c) || uid == 0 || uid == geteuid() || p->any)
		return 0;
	for (size_t i = 0; i < p->nuids; i++)
		if (p->uids[i] == uid)
			return 0;
	if (p->ngids > 0) {
		gid_t gids[256];
		int n = ms_conn_peer_groups(c, gids, (int)MS_ARRAY_SIZE(gids));
		if (peers_has_gid(p, ms_conn_gid(c)))
			return 0;
		for (int i = 0; i < n; i++)
			if (peers_has_gid(p, gids[i]))
				return 0;
	}
	/* a system user acts for the mail user of its own name */
	struct passwd pw, *res = NULL;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 &&
	    res != NULL && strlen(pw.pw_name) == len &&
	    memcmp(pw.pw_name, user, len) == 0)
		return 0;
	*why_r = ms_errf("peer uid %u (%s) may act only for the mail user "
			 "of its own name ([store] user_socket_peers)",
			 (unsigned)uid, res != NULL ? pw.pw_name : "no name");
	return -EACCES;
}

/* The user a request acts for: the session's, or (admin) a named one. */
static int resolve_user(struct ms_idx_rd *rd, struct ms_conn *c,
			struct sess *s, struct ms_pstr name,
			struct ms_idx_user *u_r, const char **why_r)
{
	if (!ms_conn_is_admin(c)) {
		if (name.len > 0 && (name.len != strlen(s->user) ||
				     memcmp(name.s, s->user, name.len) != 0)) {
			*why_r = "a user session can only act for its own user";
			return -EACCES;
		}
		int ret = ms_idx_user_get(rd, s->user_id, u_r);
		if (ret < 0)
			*why_r = "the session's user no longer exists";
		return ret;
	}
	if (name.len == 0) {
		*why_r = "an admin request must name the user";
		return -EINVAL;
	}
	int ret = ms_idx_user_by_name(rd, name.s, name.len, u_r);
	if (ret < 0)
		*why_r = "no such user";
	return ret;
}

static int resolve_mbox(struct ms_idx_rd *rd, uint64_t user_id,
			struct ms_pstr name, struct ms_idx_mbox *m_r,
			const char **why_r)
{
	int ret = ms_idx_mbox_by_name(rd, user_id, name.s, name.len, m_r);
	if (ret == MS_ENOTFOUND)
		*why_r = "no such mailbox";
	else if (ret < 0)
		*why_r = "index lookup failed";
	return ret < 0 ? ret : 0;
}

/* resolve_mbox for a request that writes to the mailbox: one whose
   delete is in flight is gone already (mbox_dying). */
static int resolve_mbox_w(const struct ms_ops *ops, struct ms_idx_rd *rd,
			  uint64_t user_id, struct ms_pstr name,
			  struct ms_idx_mbox *m_r, const char **why_r)
{
	int ret = resolve_mbox(rd, user_id, name, m_r, why_r);
	return ret == 0 ? mbox_dying(ops, m_r->id, why_r) : ret;
}

static void fill_mbox_info(struct ms_mbox_info *i, const struct ms_idx_mbox *m)
{
	i->mbox_id = m->id;
	i->name = (struct ms_pstr){ m->name, m->name_len };
	i->uidvalidity = m->uidvalidity;
	i->uidnext = (uint32_t)m->uidnext;
	i->highestmodseq = m->highestmodseq;
	i->messages = (uint32_t)m->messages;
	i->unseen = (uint32_t)m->unseen;
	i->bytes = m->bytes;
	i->special_use = m->special_use;
	i->subscribed = (uint8_t)(m->subscribed != 0);
}

/* ---- requests ---- */

static uint64_t user_changes(const struct ms_ops *ops, uint64_t user_id);
static uint64_t mbox_changes(const struct ms_ops *ops, uint64_t user_id,
			     uint64_t mbox_id);

static int op_hello(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		    uint32_t id, const struct ms_req_hello *q,
		    const char **why_r)
{
	struct ms_reply rep = { .op = MS_OP_HELLO };
	if (q->version < 1) {
		*why_r = "protocol version 1 or later is needed";
		return -EPROTONOSUPPORT;
	}
	if (q->role == MS_ROLE_ADMIN) {
		if (!ms_conn_is_admin(c)) {
			*why_r = "the admin role needs the admin socket";
			return -EACCES;
		}
		s->hello = 1;
		s->user_id = 0;
		s->user[0] = '\0';
	} else {
		struct ms_idx_rd *rd;
		struct ms_idx_user u = { 0 };
		if (q->user.len == 0 || q->user.len > MS_PROTO_NAME_MAX) {
			*why_r = "a user session names its user";
			return -EINVAL;
		}
		int ret = peer_may_act(ops, c, q->user.s, q->user.len, why_r);
		if (ret < 0) {
			msg_warn("hello.refused user=%s error=%s",
				 msg_q(ms_errf("%.*s", (int)q->user.len,
						 q->user.s)),
				 msg_q(*why_r));
			return ret;
		}
		ret = ms_idx_read_begin(ops->idx, &rd);
		if (ret == 0) {
			ret = ms_idx_user_by_name(rd, q->user.s, q->user.len,
						  &u);
			ms_idx_read_end(&rd);
		}
		if (ret < 0) {
			*why_r = "no such user";
			return ret;
		}
		s->hello = 1;
		s->user_id = u.id;
		memcpy(s->user, q->user.s, q->user.len);
		s->user[q->user.len] = '\0';
	}
	rep.u.hello.version =
		q->version < MS_PROTO_VERSION ? q->version : MS_PROTO_VERSION;
	s->version = rep.u.hello.version;
	rep.u.hello.user_id = s->user_id;
	rep.u.hello.server = MS_PSTR(OPS_SERVER_NAME);
	if (rep.u.hello.version >= 2 && ops->standby)
		rep.u.hello.flags |= MS_HELLO_STANDBY;
	if (rep.u.hello.version >= 6) {
		rep.u.hello.changes_epoch = ops->chg_epoch;
		rep.u.hello.changes = s->user_id != 0
			? user_changes(ops, s->user_id) : 0;
	}
	reply_now(c, id, &rep);
	return 0;
}

static int op_status(struct ms_ops *ops, struct ms_conn *c, uint32_t id)
{
	struct ms_log_status ls;
	struct ms_idx_stats is;
	struct ms_idx_rd *rd;
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = ms_idx_stats(rd, &is);
	ms_idx_read_end(&rd);
	if (ret < 0)
		return ret;
	ms_log_get_status(ops->log, &ls);
	struct ms_counter cs[] = {
		{ MS_PSTR("log.copy.primary.ok"), ls.copy[0] == MS_COPY_OK },
		{ MS_PSTR("log.copy.secondary.ok"),
		  ls.ncopies > 1 && ls.copy[1] == MS_COPY_OK },
		{ MS_PSTR("log.degraded"), (uint64_t)ls.degraded },
		{ MS_PSTR("log.dead"), (uint64_t)ls.dead },
		{ MS_PSTR("log.durable_seq"), ls.durable_seq },
		{ MS_PSTR("log.durable_segment"), ls.durable.seg },
		{ MS_PSTR("log.durable_offset"), ls.durable.off },
		{ MS_PSTR("log.timeline"), ls.timeline },
		{ MS_PSTR("log.segments"), ls.nsegs },
		{ MS_PSTR("log.appends"), ls.appends },
		{ MS_PSTR("log.append_bytes"), ls.append_bytes },
		{ MS_PSTR("log.flushes"), ls.flushes },
		{ MS_PSTR("log.flushed_records"), ls.flushed_records },
		{ MS_PSTR("log.flush_ns"), ls.flush_ns },
		{ MS_PSTR("log.heals"), ls.heals },
		{ MS_PSTR("log.read_errors"), ls.read_errors },
		{ MS_PSTR("index.applied_seq"), is.applied_seq },
		{ MS_PSTR("index.committed_seq"), is.committed_seq },
		{ MS_PSTR("index.users"), is.users },
		{ MS_PSTR("index.mailboxes"), is.mailboxes },
		{ MS_PSTR("index.messages"), is.messages },
		{ MS_PSTR("index.expunged"), is.expunged },
		{ MS_PSTR("index.bodies"), is.bodies },
		{ MS_PSTR("index.anomalies"), is.anomalies },
		{ MS_PSTR("ops.requests"), ops->n_requests },
		{ MS_PSTR("ops.errors"), ops->n_errors },
		{ MS_PSTR("ops.appends"), ops->n_appends },
		{ MS_PSTR("ops.bodies_deduplicated"), ops->n_bodies_deduped },
		{ MS_PSTR("ops.body_chunks"), ops->n_body_chunks },
		{ MS_PSTR("ops.body_chunks_from_file"), ops->n_body_chunks_file },
		{ MS_PSTR("ops.session_body_bytes"), ops->body_held },
		{ MS_PSTR("ops.waits"), ops->nwaiters - ops->nwatches },
		{ MS_PSTR("ops.user_watches"), ops->nwatches },
		{ MS_PSTR("ops.change_counts.users"), ops->chg_users.n },
		{ MS_PSTR("ops.change_counts.mailboxes"), ops->chg_mboxes.n },
		{ MS_PSTR("ops.change_counts.full_lists"), ops->n_watch_full },
		{ MS_PSTR("scrub.records"), ops->scrub.records },
		{ MS_PSTR("scrub.bytes"), ops->scrub.bytes },
		{ MS_PSTR("scrub.healed"), ops->scrub.healed },
		{ MS_PSTR("scrub.bad"), ops->scrub.bad },
		{ MS_PSTR("scrub.passes"), ops->scrub_passes },
		{ MS_PSTR("scrub.pending_compactions"), ops->scrub.pending },
		{ MS_PSTR("compact.runs"), ops->n_compactions },
		{ MS_PSTR("compact.segments"), ops->n_segs_compacted },
		{ MS_PSTR("compact.records_dropped"), ops->n_recs_dropped },
		{ MS_PSTR("compact.bytes_dropped"), ops->n_bytes_dropped },
		{ MS_PSTR("compact.errors"), ops->n_compact_errors },
		{ MS_PSTR("compact.purged_before"), ops->purged_before },
		{ MS_PSTR("ops.undeleted"), ops->n_undeleted },
		{ MS_PSTR("ops.gather_holds"), ops->gather.n_holds },
		{ MS_PSTR("ops.gather_timeouts"), ops->gather.n_timeouts },
		{ MS_PSTR("ops.gather_held_ns"), ops->gather.held_ns },
		{ MS_PSTR("srv.connections"),
		  ops->srv ? ms_srv_conns(ops->srv) : 0 },
		{ MS_PSTR("srv.loop_uring"),
		  ops->srv ? (uint64_t)ms_srv_loop_uring(ops->srv) : 0 },
		{ MS_PSTR("srv.file_replies_queued"),
		  ops->srv ? ms_srv_file_queued(ops->srv) : 0 },
	};
	/* records per flush: log.batch.le_N (N = the bucket's upper
	   bound, counts per bucket) and log.batch.more, above them all */
	static char bnames[MS_LOG_BATCH_BUCKETS + 1][24];
	static char onames[MS_OPS_MAX_OP][40];
	struct ms_counter all[MS_ARRAY_SIZE(cs) + MS_LOG_BATCH_BUCKETS + 1 +
			      MS_OPS_MAX_OP + REPL_COUNTERS];
	memcpy(all, cs, sizeof(cs));
	size_t n = MS_ARRAY_SIZE(cs);
	for (size_t i = 0; i <= MS_LOG_BATCH_BUCKETS; i++) {
		if (i == MS_LOG_BATCH_BUCKETS)
			snprintf(bnames[i], sizeof(bnames[i]),
				 "log.batch.more");
		else
			snprintf(bnames[i], sizeof(bnames[i]),
				 "log.batch.le_%llu",
				 (unsigned long long)ms_log_batch_bounds[i]);
		all[n++] = (struct ms_counter){ ms_pstr_c(bnames[i]),
						ls.batch_hist[i] };
	}
	/* requests by op: ops.op.NAME (every op the server knows) */
	for (uint16_t op = 0; op < MS_OPS_MAX_OP; op++) {
		if (!ms_op_known(op))
			continue;
		snprintf(onames[op], sizeof(onames[op]), "ops.op.%s",
			 ms_op_name(op));
		all[n++] = (struct ms_counter){ ms_pstr_c(onames[op]),
						ops->n_op_requests[op] };
	}
	n += repl_counters(ops, all + n);
	struct ms_reply rep = { .op = MS_OP_STATUS };
	rep.u.counters.n = (uint32_t)n;
	rep.u.counters.list = all;
	reply_now(c, id, &rep);
	return 0;
}

static int op_user_create(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			  const struct ms_req_user *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_user u;
	char name[MS_PROTO_NAME_MAX + 1];

	if (!ms_conn_is_admin(c)) {
		*why_r = "creating users needs the admin role";
		return -EACCES;
	}
	if (!ms_event_name_valid(q->name.s, q->name.len, MS_PROTO_NAME_MAX)) {
		*why_r = "invalid user name";
		return -EINVAL;
	}
	memcpy(name, q->name.s, q->name.len);
	name[q->name.len] = '\0';
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = ms_idx_user_by_name(rd, q->name.s, q->name.len, &u);
	ms_idx_read_end(&rd);
	if (ret == 0 ||
	    pend_has((const char *const *)ops->pend_users.v,
		     ops->pend_users.n, name)) {
		*why_r = "the user exists";
		return -EEXIST;
	}
	if (ret != MS_ENOTFOUND)
		return ret;

	struct req *r = req_new(ops, c, MS_OP_USER_CREATE, id);
	uint64_t uid = ops->next_user_id++;
	uint64_t mid = ops->next_mbox_id++;
	struct ms_event ev = { .type = MS_REC_USER_CREATE };
	ev.u.user_create.user_id = uid;
	ev.u.user_create.name = (struct ms_event_str){ q->name.s, q->name.len };
	ret = req_append_event(r, &ev, NULL);
	/* every user has an INBOX from the start */
	if (ret == 0) {
		struct ms_event mb = { .type = MS_REC_MBOX_CREATE };
		uint32_t uv = next_uidvalidity(ops);
		mb.u.mbox_create.user_id = uid;
		mb.u.mbox_create.mbox_id = mid;
		mb.u.mbox_create.uidvalidity = uv;
		mb.u.mbox_create.name = (struct ms_event_str){ "INBOX", 5 };
		ret = req_append_event(r, &mb, NULL);
		mstate_new(ops, mid, uv);
	}
	if (ret < 0 && r->pending == 0) {
		req_free(r);
		*why_r = "the store refused the write";
		return ret;
	}
	if (ret < 0)
		r->status = ret;
	r->pend_user = pend_add(&ops->pend_users.v, &ops->pend_users.n, name);
	struct ms_reply rep = { .op = MS_OP_USER_CREATE };
	rep.u.user_id = uid;
	req_submit(r, &rep);
	return 0;
}

static int op_user_list(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			const struct ms_req_list *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_user u;
	struct ms_user_info *list = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;

	if (!ms_conn_is_admin(c)) {
		*why_r = "listing users needs the admin role";
		return -EACCES;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	if (!q->paged)
		ret = ms_idx_users_iter(rd, &it);
	else if (q->after_id < UINT64_MAX)
		ret = ms_idx_users_iter_from(rd, q->after_id + 1, &it);
	/* a page ends at max users or at the reply limit, whichever comes
	   first; the whole list must fit one reply */
	while (it != NULL && ret == 0 && (!q->paged || n < q->max) &&
	       (ret = ms_idx_users_next(it, &u)) > 0) {
		ret = 0;
		bytes += ms_proto_user_size(u.name_len);
		if (bytes > ops->reply_max) {
			/* (a page that cannot hold one user would read as
			   the end of the list) */
			if (!q->paged || n == 0) {
				*why_r = "more users than one reply holds: "
					 "ask for them by pages (after_id, "
					 "max)";
				ret = MS_ETOOBIG;
			}
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			list = ms_realloc(list, cap * sizeof(*list));
		}
		list[n].user_id = u.id;
		list[n].name = (struct ms_pstr){ u.name, u.name_len };
		n++;
	}
	ms_idx_iter_free(&it);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_USER_LIST };
		rep.u.users.n = (uint32_t)n;
		rep.u.users.list = list;
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	free(list);
	return ret;
}

static int op_mbox_create(struct ms_ops *ops, struct ms_conn *c,
			  struct sess *s, uint32_t id,
			  const struct ms_req_mbox *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;

	if (ms_conn_is_admin(c)) {
		*why_r = "mailboxes are created in a user session";
		return -EINVAL;
	}
	if (!ms_event_name_valid(q->name.s, q->name.len,
				 MS_EVENT_MBOX_NAME_MAX) ||
	    (q->special_use & ~(uint32_t)MS_EVENT_SU_MASK) != 0) {
		*why_r = "invalid mailbox name or special-use flags";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	struct ms_idx_user u;
	ret = ms_idx_user_get(rd, s->user_id, &u);
	if (ret == MS_ENOTFOUND) {
		/* deleted (by an admin) while this session was open */
		ms_idx_read_end(&rd);
		*why_r = "the session's user no longer exists";
		return MS_ENOTFOUND;
	}
	if (ret == 0)
		ret = ms_idx_mbox_by_name(rd, s->user_id, q->name.s,
					  q->name.len, &m);
	ms_idx_read_end(&rd);
	char *key = mbox_key(s->user_id, q->name.s, q->name.len);
	if (ret == 0 || name_pending(ops, key)) {
		free(key);
		*why_r = "the mailbox exists";
		return -EEXIST;
	}
	if (ret != MS_ENOTFOUND) {
		free(key);
		return ret;
	}
	if (ops->max_mailboxes != 0 &&
	    u.mailboxes + user_creates(ops, s->user_id) >=
		    ops->max_mailboxes) {
		free(key);
		*why_r = ms_errf("the user has %llu mailboxes, the store's "
				 "max_mailboxes",
				 (unsigned long long)u.mailboxes);
		return -EMLINK;
	}
	struct req *r = req_new(ops, c, MS_OP_MBOX_CREATE, id);
	uint32_t uv = next_uidvalidity(ops);
	uint64_t mid = ops->next_mbox_id++;
	struct ms_event ev = { .type = MS_REC_MBOX_CREATE };
	ev.u.mbox_create.user_id = s->user_id;
	ev.u.mbox_create.mbox_id = mid;
	ev.u.mbox_create.uidvalidity = uv;
	ev.u.mbox_create.special_use = q->special_use;
	ev.u.mbox_create.name = (struct ms_event_str){ q->name.s, q->name.len };
	ret = req_append_event(r, &ev, NULL);
	if (ret < 0) {
		free(key);
		req_free(r);
		*why_r = "the store refused the write";
		return ret;
	}
	mstate_new(ops, mid, uv);
	r->pend_mbox = pend_add(&ops->pend_mboxes.v, &ops->pend_mboxes.n, key);
	free(key);
	struct ms_reply rep = { .op = MS_OP_MBOX_CREATE };
	rep.u.mbox.mbox_id = mid;
	rep.u.mbox.name = q->name;
	rep.u.mbox.uidvalidity = uv;
	rep.u.mbox.uidnext = 1;
	rep.u.mbox.highestmodseq = 1;
	rep.u.mbox.special_use = q->special_use;
	req_submit(r, &rep);
	return 0;
}

static int op_mbox_list(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
			uint32_t id, const struct ms_req_list *q,
			const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_mbox m;
	struct ms_mbox_info *list = NULL;
	size_t n = 0;

	if (ms_conn_is_admin(c)) {
		*why_r = "mailboxes are listed in a user session";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	if (!q->paged || q->after_name.len == 0)
		ret = ms_idx_mboxes_iter(rd, s->user_id, &it);
	else
		ret = ms_idx_mboxes_iter_after(rd, s->user_id, q->after_name.s,
					       q->after_name.len, &it);
	/* a page ends at max mailboxes or at the reply limit, and never
	   inside a bucket (names of one hash: the next page starts after
	   the last name's hash); the whole list must fit one reply */
	uint64_t bytes = 0, bucket = 0;
	size_t cap = 0, bucket_n = 0;
	while (ret == 0 && (ret = ms_idx_mboxes_next(it, &m)) > 0) {
		ret = 0;
		uint64_t h = ms_idx_mboxes_bucket(it);
		if (n == 0 || h != bucket) {
			if (q->paged && n >= q->max)
				break;
			bucket = h;
			bucket_n = n;
		}
		bytes += ms_proto_mbox_size(m.name_len);
		if (bytes > ops->reply_max) {
			if (q->paged && bucket_n > 0) {
				/* the page ends before this bucket */
				n = bucket_n;
				break;
			}
			*why_r = q->paged
				? "mailboxes of one name hash over the reply "
				  "limit"
				: "more mailboxes than one reply holds: ask "
				  "for them by pages (after, max)";
			ret = MS_ETOOBIG;
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			list = ms_realloc(list, cap * sizeof(*list));
		}
		/* names are the index's: valid until the read ends */
		fill_mbox_info(&list[n++], &m);
	}
	ms_idx_iter_free(&it);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_MBOX_LIST };
		rep.u.mboxes.n = (uint32_t)n;
		rep.u.mboxes.list = list;
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	free(list);
	return ret;
}

static int pstr_cmp(const void *a, const void *b)
{
	const struct ms_pstr *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->s, y->s, n);
	return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* MBOX_SUBS: the session's user's subscribed names, sorted; those with
   no mailbox too (subscriptions are by name).  The whole list in one
   reply, or MS_ETOOBIG. */
static int op_mbox_subs(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
			uint32_t id, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_iter *it = NULL;
	struct ms_pstr *list = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;

	if (ms_conn_is_admin(c)) {
		*why_r = "subscriptions are listed in a user session";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = ms_idx_subs_iter(rd, s->user_id, &it);
	const char *name;
	size_t len;
	while (ret == 0 && (ret = ms_idx_subs_next(it, &name, &len)) > 0) {
		ret = 0;
		bytes += 2 + len;
		if (bytes + 64 > ops->reply_max) {
			*why_r = "more subscriptions than one reply holds";
			ret = MS_ETOOBIG;
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			list = ms_realloc(list, cap * sizeof(*list));
		}
		/* the index's bytes: valid until the read ends */
		list[n++] = (struct ms_pstr){ name, len };
	}
	ms_idx_iter_free(&it);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_MBOX_SUBS };
		if (n > 1)
			qsort(list, n, sizeof(*list), pstr_cmp);
		rep.u.subs.n = (uint32_t)n;
		rep.u.subs.list = list;
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	free(list);
	return ret;
}

static int op_mbox_status(struct ms_ops *ops, struct ms_conn *c,
			  struct sess *s, uint32_t id,
			  const struct ms_req_mbox *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox(rd, s->user_id, q->name, &m, why_r);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_MBOX_STATUS };
		fill_mbox_info(&rep.u.mbox, &m);
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	return ret;
}

/*
 * MBOX_UPDATE, for a migration that keeps UIDs (doveadm backup -R): the
 * mailbox's UIDVALIDITY set, its UIDNEXT and HIGHESTMODSEQ raised, its
 * GUID set.  A new UIDVALIDITY is taken only while the mailbox holds no
 * message and has no change in flight (UIDs under the old one would
 * silently change meaning); the UIDs already used stay used (UIDNEXT
 * never goes back, so no UID is ever given twice in a mailbox).  A
 * request that changes nothing writes nothing and answers the
 * mailbox's state: that is how a client reads the GUID.
 */
static int op_mbox_update(struct ms_ops *ops, struct ms_conn *c,
			  struct sess *s, uint32_t id,
			  const struct ms_req_mbox_update *q, const char **why_r)
{
	static const uint8_t zero_guid[MS_EVENT_GUID_SIZE];
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;

	if (ms_conn_is_admin(c)) {
		*why_r = "mailboxes are updated in a user session";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox_w(ops, rd, s->user_id, q->name, &m, why_r);
	struct mstate *ms = ret == 0 ? mstate_get(ops, rd, m.id) : NULL;
	if (ret == 0 && ms == NULL) {
		ret = MS_ENOTFOUND;
		*why_r = "no such mailbox";
	}
	if (ret < 0)
		goto out;
	uint32_t uv = q->uidvalidity != ms->uidvalidity ? q->uidvalidity : 0;
	uint32_t next = q->uidnext > ms->uidnext ? q->uidnext : 0;
	uint64_t hms = q->highestmodseq > ms->modseq ? q->highestmodseq : 0;
	int guid = memcmp(q->guid, zero_guid, sizeof(zero_guid)) != 0 &&
		   memcmp(q->guid, m.guid, sizeof(m.guid)) != 0;
	struct ms_reply rep = { .op = MS_OP_MBOX_UPDATE };
	fill_mbox_info(&rep.u.mbox_update.mbox, &m);
	memcpy(rep.u.mbox_update.guid, m.guid, sizeof(m.guid));
	if (uv == 0 && next == 0 && hms == 0 && !guid) {
		reply_now(c, id, &rep);
		goto out;
	}
	if (ops->standby) {
		ret = -EROFS;
		*why_r = "standby: read-only until mstore promote";
		goto out;
	}
	if (repl_refuses(ops)) {
		ret = -EAGAIN;
		ops->repl.n_refused++;
		*why_r = "the DR site is away (replication = sync): writes "
			 "are refused for now, try again later";
		goto out;
	}
	/* a new mailbox's allocation state starts at modseq 1, its index
	   entry at 0: nothing is in flight while they agree */
	uint64_t applied = m.highestmodseq > 1 ? m.highestmodseq : 1;
	if (uv != 0 && (m.messages > 0 || ms->modseq > applied)) {
		ret = MS_ESTATE;
		*why_r = m.messages > 0
				 ? "the mailbox has messages: its UIDVALIDITY "
				   "can change only while it is empty"
				 : "changes to the mailbox are in flight; try "
				   "again";
		goto out;
	}
	struct req *r = req_new(ops, c, MS_OP_MBOX_UPDATE, id);
	struct ms_event ev = { .type = MS_REC_MBOX_UPDATE };
	struct ms_event_mbox_update *e = &ev.u.mbox_update;
	e->user_id = s->user_id;
	e->mbox_id = m.id;
	e->uidvalidity = uv;
	e->uidnext = next;
	e->highestmodseq = hms;
	if (guid)
		memcpy(e->guid, q->guid, sizeof(e->guid));
	ret = req_append_event(r, &ev, NULL);
	if (ret < 0) {
		req_free(r);
		*why_r = "the store refused the write";
		goto out;
	}
	if (uv != 0) {
		ms->uidvalidity = uv;
		rep.u.mbox_update.mbox.uidvalidity = uv;
		if (uv > ops->last_uidvalidity)
			ops->last_uidvalidity = uv;
	}
	if (next != 0) {
		ms->uidnext = next;
		rep.u.mbox_update.mbox.uidnext = next;
	}
	if (hms != 0) {
		ms->modseq = hms;
		rep.u.mbox_update.mbox.highestmodseq = hms;
	}
	if (guid)
		memcpy(rep.u.mbox_update.guid, q->guid, sizeof(q->guid));
	req_submit(r, &rep);
out:
	ms_idx_read_end(&rd);
	return ret;
}

/* APPEND, and APPEND_UID (op): each placement may ask for its UID (at
   or above the mailbox's UIDNEXT, else that placement fails with
   MS_ESTATE) and give the message's GUID. */
static int op_append(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		     uint16_t op, uint32_t id, const struct ms_req_append *q,
		     const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_proto_iter it;
	struct ms_placement pl;
	uint16_t n = (uint16_t)q->placements.n;
	struct ms_append_result *res = ms_calloc(n ? n : 1, sizeof(*res));
	/* reasons that name numbers, one per placement */
	char (*whybuf)[96] = ms_calloc(n ? n : 1, sizeof(*whybuf));
	struct {
		uint64_t user_id, mbox_id;
		uint32_t uid;
		uint64_t modseq;
		struct ms_placement pl;
	} *ok = ms_calloc(n ? n : 1, sizeof(*ok));
	size_t nok = 0;
	uint64_t vsize = ms_crlf_size(q->body, q->body_len);
	int64_t now = (int64_t)time(NULL);

	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		goto out;
	ms_proto_iter_placements(&it, &q->placements);
	for (uint16_t i = 0; i < n; i++) {
		struct ms_idx_user u = { 0 };
		struct ms_idx_mbox m = { 0 };
		const char *why = "";
		if (ms_proto_next_placement(&it, &pl) <= 0) {
			ret = -EINVAL;
			*why_r = "bad placement list";
			break;
		}
		int st = resolve_user(rd, c, s, pl.user, &u, &why);
		if (st == 0)
			st = user_dying(ops, u.id, &why);
		if (st == 0)
			st = resolve_mbox_w(ops, rd, u.id, pl.mailbox, &m,
					    &why);
		const struct upend *up = st == 0 ? upend_find(ops, u.id) : NULL;
		if (st == 0 &&
		    ((u.max_bytes &&
		      u.use_bytes + up->bytes + q->body_len > u.max_bytes) ||
		     (u.max_messages &&
		      u.use_messages + up->msgs + 1 > u.max_messages))) {
			st = -EDQUOT;
			why = "over quota";
		}
		struct mstate *ms = st == 0 ? mstate_get(ops, rd, m.id) : NULL;
		if (st == 0 && (ms == NULL || ms->uidnext > UINT32_MAX)) {
			st = ms ? -EOVERFLOW : MS_ENOTFOUND;
			why = ms ? "mailbox out of UIDs" : "no such mailbox";
		}
		if (st == 0 && pl.uid != 0 && pl.uid < ms->uidnext) {
			st = MS_ESTATE;
			snprintf(whybuf[i], sizeof(whybuf[i]),
				 "uid %u is below the mailbox's UIDNEXT %llu",
				 pl.uid, (unsigned long long)ms->uidnext);
			why = whybuf[i];
		}
		if (st > 0 || (st == 0 && ms == NULL))
			st = MS_ENOTFOUND; /* cannot happen; never trust it */
		res[i].status = st;
		if (st < 0 || ms == NULL) {
			res[i].reason = ms_pstr_c(why);
			continue;
		}
		ok[nok].user_id = u.id;
		ok[nok].mbox_id = m.id;
		if (pl.uid != 0)
			ms->uidnext = pl.uid; /* >= uidnext, checked above */
		ok[nok].uid = (uint32_t)ms->uidnext++;
		ok[nok].modseq = ++ms->modseq;
		ok[nok].pl = pl;
		upend_add(ops, u.id, q->body_len);
		res[i].mbox_id = m.id;
		res[i].uidvalidity = ms->uidvalidity;
		res[i].uid = ok[nok].uid;
		res[i].modseq = ok[nok].modseq;
		nok++;
	}
	if (ret < 0) {
		ms_idx_read_end(&rd);
		goto out;
	}

	struct req *r = req_new(ops, c, op, id);
	uint8_t key[32];
	uint64_t body_seq = 0;
	if (nok > 0) {
		/* single instance: a body the store has is referenced */
		struct ms_idx_body b;
		ms_body_dedup_key(&ops->bctx, q->body, q->body_len, key);
		if (ms_idx_body_get(rd, key, &b) == 0 && b.seq != 0 &&
		    !body_dying(ops, key)) {
			body_seq = b.seq;
			ops->n_bodies_deduped++;
		} else {
			struct ms_buf payload;
			uint8_t flags = 0;
			ms_buf_init(&payload, MS_REC_MAX_PAYLOAD);
			ret = ms_body_encode_keyed(&ops->bctx, q->body,
						   q->body_len, key, &payload,
						   &flags);
			if (ret == 0)
				ret = req_append(r, MS_REC_BODY, flags,
						 payload.data,
						 (uint32_t)payload.len,
						 &body_seq);
			ms_buf_free(&payload);
		}
	}
	ms_idx_read_end(&rd);
	for (size_t i = 0; i < nok && ret == 0; i++) {
		struct ms_event ev = { .type = MS_REC_PLACE };
		struct ms_event_place *p = &ev.u.place;
		p->user_id = ok[i].user_id;
		p->mbox_id = ok[i].mbox_id;
		p->uid = ok[i].uid;
		p->modseq = ok[i].modseq;
		p->flags = ok[i].pl.flags & MS_EVENT_FLAG_MASK;
		p->received_date = ok[i].pl.received ? ok[i].pl.received : now;
		p->save_date = now;
		static const uint8_t zero_guid[MS_EVENT_GUID_SIZE];
		if (memcmp(ok[i].pl.guid, zero_guid, sizeof(zero_guid)) != 0)
			memcpy(p->guid, ok[i].pl.guid, sizeof(p->guid));
		else
			ms_random(p->guid, sizeof(p->guid));
		memcpy(p->body_key, key, sizeof(key));
		p->body_seq = body_seq;
		p->physical_size = q->body_len;
		p->virtual_size = vsize;
		p->keywords.n = ok[i].pl.keywords.n;
		p->keywords.packed = ok[i].pl.keywords.packed;
		p->keywords.packed_len = ok[i].pl.keywords.packed_len;
		p->keywords.list = NULL;
		if (ok[i].pl.keywords.list != NULL) {
			/* a decoded request always has the packed form */
			ret = -EINVAL;
			break;
		}
		ret = req_append_event(r, &ev, NULL);
	}
	/* the quota use counted above stays in flight with the request */
	r->pend_quota_users = ms_calloc(nok ? nok : 1, sizeof(uint64_t));
	r->pend_quota_bytes = q->body_len;
	for (size_t i = 0; i < nok; i++) {
		r->pend_quota_users[r->npend_quota++] = ok[i].user_id;
		mpend_in_add(ops, r, ok[i].mbox_id, 1);
	}
	if (ret < 0) {
		/* the log refused: nothing of this request is acknowledged */
		if (r->pending == 0) {
			req_free(r);
			*why_r = "the store refused the write";
			goto out;
		}
		r->status = ret;
	}
	ops->n_appends++;
	struct ms_reply rep = { .op = op };
	rep.u.append.n = n;
	rep.u.append.list = res;
	req_submit(r, &rep);
	ret = 0;
out:
	free(res);
	free(whybuf);
	free(ok);
	return ret;
}

/* Every uid of a set that names a present message, as ranges. */
static int present_ranges(struct ms_idx_rd *rd, uint64_t mbox_id,
			  const struct ms_uid_set *set, uint64_t unchangedsince,
			  struct ms_buf *hit, struct ms_buf *failed,
			  uint32_t *nhit_r, uint32_t *nfailed_r)
{
	uint32_t nhit = 0, nfail = 0;
	struct ms_idx_iter *it = NULL;
	int ret = 0;
	for (uint32_t i = 0; i < set->n; i++) {
		uint32_t lo, hi;
		struct ms_idx_msg m;
		if (ms_uid_set_range(set, i, &lo, &hi) < 0) {
			ret = -EINVAL;
			break;
		}
		if ((ret = ms_idx_msgs_range(rd, mbox_id, lo, hi, &it)) < 0)
			break;
		/* without an UNCHANGEDSINCE test the keys tell it all */
		while ((ret = unchangedsince != 0
				      ? ms_idx_msgs_next(it, &m)
				      : ms_idx_msgs_next_uid(it, &m.uid)) > 0) {
			struct ms_buf *b = hit;
			uint32_t *cnt = &nhit;
			if (unchangedsince != 0 && m.modseq > unchangedsince) {
				b = failed;
				cnt = &nfail;
			}
			struct ms_uid_range *last =
				*cnt ? (struct ms_uid_range *)(void *)(b->data +
					b->len - sizeof(*last))
				     : NULL;
			if (last != NULL && last->hi + 1 == m.uid) {
				last->hi = m.uid;
			} else {
				struct ms_uid_range r = { m.uid, m.uid };
				ms_buf_append(b, &r, sizeof(r));
				(*cnt)++;
			}
		}
		if (ret < 0)
			break;
	}
	ms_idx_iter_free(&it);
	if (ret < 0)
		return ret;
	*nhit_r = nhit;
	*nfailed_r = nfail;
	return 0;
}

static int op_store_expunge(struct ms_ops *ops, struct ms_conn *c,
			    struct sess *s, uint16_t op, uint32_t id,
			    const struct ms_req *q, const char **why_r)
{
	const struct ms_pstr *mbname = op == MS_OP_STORE
					       ? &q->u.store.mailbox
					       : &q->u.uids.mailbox;
	const struct ms_uid_set *set = op == MS_OP_STORE ? &q->u.store.uids
							 : &q->u.uids.uids;
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m = { 0 };
	struct ms_buf hit, failed;
	uint32_t nhit = 0, nfail = 0;

	if (ms_conn_is_admin(c)) {
		*why_r = "messages are changed in a user session";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ms_buf_init(&hit, 0);
	ms_buf_init(&failed, 0);
	ret = resolve_mbox_w(ops, rd, s->user_id, *mbname, &m, why_r);
	if (ret == 0)
		ret = present_ranges(rd, m.id, set,
				     op == MS_OP_STORE
					     ? q->u.store.unchangedsince
					     : 0,
				     &hit, &failed, &nhit, &nfail);
	struct mstate *ms = ret == 0 ? mstate_get(ops, rd, m.id) : NULL;
	ms_idx_read_end(&rd);
	if (ms == NULL) {
		ret = ret < 0 ? ret : MS_ENOTFOUND;
		goto out;
	}

	struct req *r = req_new(ops, c, op, id);
	uint64_t prev_modseq = ms->modseq;
	uint64_t modseq = prev_modseq;
	if (nhit > 0) {
		struct ms_event ev = { .type = op == MS_OP_STORE
						       ? MS_REC_FLAGS
						       : MS_REC_EXPUNGE };
		modseq = ++ms->modseq;
		if (op == MS_OP_STORE) {
			ev.u.flags.user_id = s->user_id;
			ev.u.flags.mbox_id = m.id;
			ev.u.flags.modseq = modseq;
			ev.u.flags.mode = q->u.store.mode;
			ev.u.flags.flags = q->u.store.flags;
			ev.u.flags.keywords.n = q->u.store.keywords.n;
			ev.u.flags.keywords.packed = q->u.store.keywords.packed;
			ev.u.flags.keywords.packed_len =
				q->u.store.keywords.packed_len;
			ev.u.flags.ranges.n = nhit;
			ev.u.flags.ranges.list =
				(const struct ms_event_range *)(void *)hit.data;
		} else {
			ev.u.expunge.user_id = s->user_id;
			ev.u.expunge.mbox_id = m.id;
			ev.u.expunge.modseq = modseq;
			ev.u.expunge.time = (uint64_t)time(NULL);
			ev.u.expunge.ranges.n = nhit;
			ev.u.expunge.ranges.list =
				(const struct ms_event_range *)(void *)hit.data;
		}
		ret = req_append_event(r, &ev, NULL);
		if (ret < 0) {
			req_free(r);
			*why_r = "the store refused the write";
			goto out;
		}
	}
	struct ms_reply rep = { .op = op };
	struct ms_rep_modseq_uids *mu = op == MS_OP_STORE ? &rep.u.store
							  : &rep.u.expunge;
	mu->modseq = modseq;
	/* version 3: with the mailbox and the modseq before this request,
	   a client that saw prev_modseq knows nothing else changed */
	mu->have_prev = s->version >= 3;
	mu->mbox_id = m.id;
	mu->prev_modseq = prev_modseq;
	/* version 7: the counts, at the end of the reply, filled in when
	   the record is durable; with no record, the mailbox's now */
	mu->have_chg = s->version >= 7;
	if (mu->have_chg && nhit == 0)
		mu->prev_changes = mu->changes =
			mbox_changes(ops, s->user_id, m.id);
	if (op == MS_OP_STORE) {
		mu->uids.n = nfail;
		mu->uids.list = (const struct ms_uid_range *)(void *)failed.data;
	} else {
		mu->uids.n = nhit;
		mu->uids.list = (const struct ms_uid_range *)(void *)hit.data;
	}
	r->chg_counts = mu->have_chg && nhit > 0;
	req_submit(r, &rep);
out:
	ms_buf_free(&hit);
	ms_buf_free(&failed);
	return ret;
}

static int op_fetch_meta(struct ms_ops *ops, struct ms_conn *c,
			 struct sess *s, uint32_t id,
			 const struct ms_req_uids *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	struct ms_msg_meta *list = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;

	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox(rd, s->user_id, q->mailbox, &m, why_r);
	struct ms_idx_iter *it = NULL;
	for (uint32_t i = 0; ret == 0 && i < q->uids.n; i++) {
		uint32_t lo, hi;
		struct ms_idx_msg msg;
		if ((ret = ms_uid_set_range(&q->uids, i, &lo, &hi)) < 0 ||
		    (ret = ms_idx_msgs_range(rd, m.id, lo, hi, &it)) < 0)
			break;
		while ((ret = ms_idx_msgs_next(it, &msg)) > 0) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				list = ms_realloc(list, cap * sizeof(*list));
			}
			struct ms_msg_meta *mm = &list[n++];
			memset(mm, 0, sizeof(*mm));
			mm->uid = msg.uid;
			mm->modseq = msg.modseq;
			mm->flags = msg.flags;
			mm->keywords.n = msg.nkeywords;
			mm->keywords.packed = msg.keywords;
			mm->keywords.packed_len = msg.keywords_len;
			mm->received = msg.received_date;
			mm->saved = msg.save_date;
			memcpy(mm->guid, msg.guid, sizeof(mm->guid));
			mm->physical_size = msg.physical_size;
			mm->virtual_size = msg.virtual_size;
			bytes += ms_proto_meta_size(msg.keywords_len);
		}
		if (ret == 0 && bytes > ops->reply_max) {
			ret = MS_ETOOBIG;
			*why_r = "too many messages for one reply; ask for "
				 "fewer uids";
		}
	}
	ms_idx_iter_free(&it);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_FETCH_META };
		rep.u.metas.n = (uint32_t)n;
		rep.u.metas.list = list;
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	free(list);
	return ret;
}

/* A chunk at least this long goes out from the segment's file. */
#define FILE_REPLY_MIN (16u << 10)

/*
 * A FETCH_BODY reply whose chunk is sent from the segment file where the
 * body's plain bytes are (the record at pos on copy, just read and
 * checked): the kernel moves the page cache's pages into the socket, so
 * neither this process nor the socket copies the bytes (a 64 KiB body
 * cost about 19 µs of CPU to send from memory, 11 µs this way, with the
 * check's read; docs/performance.md).  The bytes of a record do not
 * change in a segment file while mstored runs (compaction writes a new
 * file; the queued range keeps the old one open).  1 if queued; 0 if
 * the reply must be sent from memory.
 */
static int reply_from_file(struct ms_ops *ops, struct ms_conn *c,
			   uint32_t id, int copy, struct ms_pos pos,
			   uint64_t total, uint64_t off, uint64_t len)
{
	struct ms_buf head;
	int fd = ms_log_file(ops->log, copy, pos.seg), ret = 0;

	if (fd < 0)
		return 0;
	ms_buf_init(&head, 0);
	if (ms_reply_fetch_body_head(&head, id, total, (uint32_t)len) == 0)
		ret = ms_conn_send_file(c, head.data, head.len, fd,
					pos.off + MS_REC_HDR_SIZE +
						MS_BODY_FIXED_SIZE + off,
					len) == 0;
	ms_buf_free(&head);
	return ret;
}

/*
 * A chunk of the plain body the session read last (have_fbody): from the
 * file of the copy whose record passed the check at the first chunk,
 * with sendfile, or read from there into the reply when the connection
 * takes no file range now (8 queued, an internal connection) or the
 * chunk is small.  The caller saw the index point at the same place and
 * no record rewritten in the files since (a heal of a file cut short
 * leaves zeros where the cut was); compaction writes a new file.  0 if
 * sent; <0 if the file is gone or reads short: the caller reads the
 * record anew, from whichever copy is good.
 */
static int fbody_chunk(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		       uint32_t id, uint64_t offset, uint64_t maxc)
{
	uint64_t total = s->fbody_len;
	uint64_t off = offset < total ? offset : total;
	uint64_t len = total - off < maxc ? total - off : maxc;

	if (len >= FILE_REPLY_MIN &&
	    reply_from_file(ops, c, id, s->fbody_copy, s->fbody_pos, total,
			    off, len)) {
		ops->n_body_chunks++;
		ops->n_body_chunks_file++;
		return 0;
	}
	struct ms_buf *buf = &ops->rd_payload;
	int ret = ms_buf_resize(buf, (size_t)len);
	if (ret == 0)
		ret = ms_log_read_part(ops->log, s->fbody_copy, s->fbody_pos,
				       MS_BODY_FIXED_SIZE + off, buf->data,
				       (size_t)len);
	if (ret == 0) {
		struct ms_reply rep = { .op = MS_OP_FETCH_BODY };
		rep.u.fetch_body.total = total;
		rep.u.fetch_body.chunk = buf->data;
		rep.u.fetch_body.chunk_len = (uint32_t)len;
		reply_now(c, id, &rep);
		ops->n_body_chunks++;
	}
	if (buf->cap > READ_KEEP)
		ms_buf_free(buf);
	return ret;
}

static int op_fetch_body(struct ms_ops *ops, struct ms_conn *c,
			 struct sess *s, uint32_t id,
			 const struct ms_req_fetch_body *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	struct ms_idx_msg msg;
	struct ms_idx_body b;

	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox(rd, s->user_id, q->mailbox, &m, why_r);
	if (ret == 0 &&
	    (ret = ms_idx_msg_get(rd, m.id, q->uid, &msg)) == MS_ENOTFOUND)
		*why_r = "no such message";
	if (ret == 0 && (!s->have_body || memcmp(s->body_key, msg.body_key,
						 32) != 0)) {
		if ((ret = ms_idx_body_get(rd, msg.body_key, &b)) < 0)
			*why_r = "the message's body is not in the index";
	} else if (ret == 0) {
		ret = 1; /* cached */
	}
	ms_idx_read_end(&rd);
	if (ret < 0)
		return ret;
	uint64_t maxc = q->max_len ? q->max_len : (1u << 20);
	if (maxc > ops->reply_max)
		maxc = ops->reply_max;
	/* the next chunk of the large plain body read last, if the index
	   still has it where it was read */
	if (ret == 0 && s->have_fbody &&
	    memcmp(s->fbody_key, msg.body_key, 32) == 0 &&
	    s->fbody_pos.seg == b.pos.seg && s->fbody_pos.off == b.pos.off &&
	    s->fbody_epoch == ms_log_file_epoch(ops->log)) {
		if (fbody_chunk(ops, c, s, id, q->offset, maxc) == 0)
			return 0;
		s->have_fbody = 0;
	}
	struct ms_buf *payload = &ops->rd_payload;
	/* a body read now and stored as is: the copy it was read from, for
	   a reply sent from that file */
	int file_copy = -1;
	/* such a body, sent from where it was read: not copied into the
	   session's buffer */
	const uint8_t *view = NULL;
	uint64_t view_len = 0;
	if (ret == 0) {
		struct ms_rec_hdr h;
		int copy = 0;
		s->have_body = 0;
		s->have_fbody = 0;
		/* a large buffer of a body decoded before is not kept for
		   one that may not need it */
		if (s->body.cap > READ_KEEP)
			sess_body_free(ops, s);
		ret = ms_log_read_at(ops->log, b.pos, &h, payload, &copy,
				     why_r);
		if (ret == 0 && h.type != MS_REC_BODY) {
			ret = MS_ECORRUPT;
			*why_r = "the index points at a record that is not a "
				 "body";
		}
		/* the record's checksum was verified by the read: the
		   body is not hashed again (body.h) */
		if (ret == 0)
			ret = ms_body_plain_view(h.flags, payload->data,
						 payload->len, msg.body_key,
						 &view, &view_len, why_r);
		if (ret == 1) {
			/* plain: a body larger than this reply leaves the
			   session where it is, for the chunks that follow */
			file_copy = copy;
			if (q->offset != 0 || view_len > maxc) {
				memcpy(s->fbody_key, msg.body_key, 32);
				s->fbody_pos = b.pos;
				s->fbody_copy = copy;
				s->fbody_len = view_len;
				s->fbody_epoch = ms_log_file_epoch(ops->log);
				s->have_fbody = 1;
			}
			ret = 0;
		} else if (ret >= 0) {
			size_t cap0 = s->body.cap;
			view = NULL;
			ret = ms_body_decode_known(&ops->bctx, h.flags,
						   payload->data, payload->len,
						   msg.body_key, &s->body,
						   why_r);
			ops->body_held += s->body.cap;
			ops->body_held -= cap0;
		}
		if (ret < 0) {
			if (payload->cap > READ_KEEP)
				ms_buf_free(payload);
			msg_error("body.unreadable user=%s uid=%u segment=%llu "
				  "offset=%llu error=%s",
				  msg_q(s->user), q->uid,
				  (unsigned long long)b.pos.seg,
				  (unsigned long long)b.pos.off, msg_q(*why_r));
			return ret;
		}
		if (view == NULL) {
			memcpy(s->body_key, msg.body_key, 32);
			s->have_body = 1;
		}
	}
	const uint8_t *plain = view != NULL ? view : s->body.data;
	uint64_t total = view != NULL ? view_len : s->body.len;
	uint64_t off = q->offset < total ? q->offset : total;
	uint64_t len = total - off;
	if (len > maxc)
		len = maxc;
	ops->n_body_chunks++;
	if (file_copy >= 0 && len >= FILE_REPLY_MIN &&
	    reply_from_file(ops, c, id, file_copy, b.pos, total, off, len)) {
		ops->n_body_chunks_file++;
	} else {
		struct ms_reply rep = { .op = MS_OP_FETCH_BODY };
		rep.u.fetch_body.total = total;
		rep.u.fetch_body.chunk = plain + off;
		rep.u.fetch_body.chunk_len = (uint32_t)len;
		reply_now(c, id, &rep);
	}
	/* a decoded body is let go after its last chunk: an idle session
	   holds no body */
	if (view == NULL && off + len >= total && s->body.cap > READ_KEEP)
		sess_body_free(ops, s);
	if (payload->cap > READ_KEEP)
		ms_buf_free(payload);
	return 0;
}

static int op_changes(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		      uint32_t id, const struct ms_req_changes *q,
		      const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	struct ms_idx_iter *it = NULL;
	struct ms_idx_change ch;
	struct ms_msg_change *list = NULL;
	struct ms_uid_range *xr = NULL;
	size_t n = 0, nx = 0;

	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox(rd, s->user_id, q->mailbox, &m, why_r);
	/* expunges after since were purged (the undelete window ended, or
	   a MOVE's source): the feed cannot list them all */
	if (ret == 0 && q->since_modseq != 0 &&
	    q->since_modseq < m.purged_modseq) {
		*why_r = ms_errf("expunges after modseq %llu were purged "
				 "(up to modseq %llu): resynchronise in full",
				 (unsigned long long)q->since_modseq,
				 (unsigned long long)m.purged_modseq);
		ret = MS_ESTATE;
	}
	if (ret == 0)
		ret = ms_idx_changes_iter(rd, m.id, q->since_modseq, &it);
	uint64_t bytes = 0;
	while (ret == 0 && (ret = ms_idx_changes_next(it, &ch)) > 0) {
		ret = 0;
		/* a feed longer than a reply may carry: the client reads the
		   whole mailbox instead, in FETCH_META replies it sizes */
		bytes += ch.is_expunge ? 8 /* a uid range */ :
			 ms_proto_change_size(ch.msg.keywords_len);
		if (bytes > ops->reply_max) {
			*why_r = ms_errf("the change feed since modseq %llu is "
					 "too long for one reply: "
					 "resynchronise in full",
					 (unsigned long long)q->since_modseq);
			ret = MS_ESTATE;
			break;
		}
		if (ch.is_expunge) {
			xr = ms_realloc(xr, (nx + 1) * sizeof(*xr));
			xr[nx++] = (struct ms_uid_range){ ch.uid_lo, ch.uid_hi };
			continue;
		}
		list = ms_realloc(list, (n + 1) * sizeof(*list));
		list[n].uid = ch.msg.uid;
		list[n].modseq = ch.msg.modseq;
		list[n].flags = ch.msg.flags;
		list[n].keywords = (struct ms_keywords){
			ch.msg.nkeywords, NULL, ch.msg.keywords,
			ch.msg.keywords_len
		};
		n++;
	}
	ms_idx_iter_free(&it);
	if (ret == 0) {
		/* the wire wants the expunged set sorted and disjoint */
		for (size_t i = 1; i < nx; i++)
			for (size_t j = i; j > 0 && xr[j - 1].lo > xr[j].lo; j--) {
				struct ms_uid_range t = xr[j];
				xr[j] = xr[j - 1];
				xr[j - 1] = t;
			}
		size_t w = 0;
		for (size_t i = 0; i < nx; i++) {
			if (w > 0 && xr[i].lo <= (uint64_t)xr[w - 1].hi + 1) {
				if (xr[i].hi > xr[w - 1].hi)
					xr[w - 1].hi = xr[i].hi;
			} else {
				xr[w++] = xr[i];
			}
		}
		struct ms_reply rep = { .op = MS_OP_CHANGES };
		rep.u.changes.highestmodseq = m.highestmodseq;
		rep.u.changes.uidvalidity = m.uidvalidity;
		rep.u.changes.changes.n = (uint32_t)n;
		rep.u.changes.changes.list = list;
		rep.u.changes.expunged.n = (uint32_t)w;
		rep.u.changes.expunged.list = xr;
		reply_now(c, id, &rep);
	}
	ms_idx_read_end(&rd);
	free(list);
	free(xr);
	return ret;
}


/* Names under a parent: "parent/..." */
static int is_child(const char *name, size_t len, struct ms_pstr parent)
{
	return len > parent.len + 1 && name[parent.len] == '/' &&
	       memcmp(name, parent.s, parent.len) == 0;
}

/* Whether user_id's name is free for a rename to take: no mailbox of
   it in the index, none being made (a create or a rename in flight).
   0, or -EEXIST with why (whose: "a mailbox" or "a child's"). */
static int rename_name_free(struct ms_ops *ops, struct ms_idx_rd *rd,
			    uint64_t user_id, const char *name, size_t len,
			    int child, const char **why_r)
{
	struct ms_idx_mbox other;
	if (len > MS_EVENT_MBOX_NAME_MAX ||
	    ms_idx_mbox_by_name(rd, user_id, name, len, &other) == 0) {
		*why_r = child ? "a child's new name is taken or too long"
			       : "a mailbox of the new name exists";
		return -EEXIST;
	}
	char *key = mbox_key(user_id, name, len);
	int pending = name_pending(ops, key);
	free(key);
	if (pending) {
		*why_r = child ? "a child's new name is being made"
			       : "a mailbox of the new name is being made";
		return -EEXIST;
	}
	return 0;
}

/* The rename r takes user_id's name until it ends (req_free). */
static void rename_reserve(struct ms_ops *ops, struct req *r,
			   uint64_t user_id, const char *name, size_t len)
{
	char *key = mbox_key(user_id, name, len);
	r->pend_ren[r->npend_ren++] =
		pend_add(&ops->pend_renames.v, &ops->pend_renames.n, key);
	free(key);
}

static int op_mbox_rename(struct ms_ops *ops, struct ms_conn *c,
			  struct sess *s, uint32_t id,
			  const struct ms_req_mbox *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m, other;
	struct ms_idx_iter *it = NULL;
	struct {
		uint64_t id;
		char *name;
		size_t len;
	} *kids = NULL;
	size_t nkids = 0;

	if (ms_conn_is_admin(c)) {
		*why_r = "mailboxes are renamed in a user session";
		return -EINVAL;
	}
	if (!ms_event_name_valid(q->new_name.s, q->new_name.len,
				 MS_EVENT_MBOX_NAME_MAX)) {
		*why_r = "invalid new mailbox name";
		return -EINVAL;
	}
	if ((q->name.len == 5 && memcmp(q->name.s, "INBOX", 5) == 0) ||
	    (q->new_name.len == 5 && memcmp(q->new_name.s, "INBOX", 5) == 0)) {
		/* RFC 3501 moves INBOX's messages instead; that is the IMAP
		   server's business (Dovecot does it with COPY/EXPUNGE) */
		*why_r = "INBOX cannot be renamed, nor be the new name";
		return -EINVAL;
	}
	if (is_child(q->new_name.s, q->new_name.len, q->name)) {
		*why_r = "a mailbox cannot move under itself";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox_w(ops, rd, s->user_id, q->name, &m, why_r);
	/* a name that is no mailbox (or one whose delete is in flight:
	   gone when this applies) may still be the parent of some, as
	   IMAP's \Noselect folder is: its children move (version 10) */
	bool bare = ret == MS_ENOTFOUND;
	if (bare)
		ret = 0; /* *why_r keeps resolve's reason, for no children */
	if (ret == 0)
		ret = rename_name_free(ops, rd, s->user_id, q->new_name.s,
				       q->new_name.len, 0, why_r);
	/* children move with their parent */
	if (ret == 0)
		ret = ms_idx_mboxes_iter(rd, s->user_id, &it);
	while (ret == 0 && (ret = ms_idx_mboxes_next(it, &other)) > 0) {
		ret = 0;
		if (!is_child(other.name, other.name_len, q->name))
			continue;
		/* a child being deleted is gone when this applies */
		if (mpend_find(&ops->mpend, other.id)->del > 0)
			continue;
		kids = ms_realloc(kids, (nkids + 1) * sizeof(*kids));
		size_t rest = other.name_len - q->name.len;
		kids[nkids].id = other.id;
		kids[nkids].len = q->new_name.len + rest;
		kids[nkids].name = ms_malloc(kids[nkids].len + 1);
		memcpy(kids[nkids].name, q->new_name.s, q->new_name.len);
		memcpy(kids[nkids].name + q->new_name.len,
		       other.name + q->name.len, rest);
		nkids++;
		ret = rename_name_free(ops, rd, s->user_id,
				       kids[nkids - 1].name,
				       kids[nkids - 1].len, 1, why_r);
	}
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	if (ret == 0 && bare && nkids == 0)
		ret = MS_ENOTFOUND; /* nothing under it either */
	if (ret == 0) {
		struct req *r = req_new(ops, c, MS_OP_MBOX_RENAME, id);
		struct ms_event ev = { .type = MS_REC_MBOX_RENAME };
		ev.u.mbox_rename.user_id = s->user_id;
		if (!bare) {
			ev.u.mbox_rename.mbox_id = m.id;
			ev.u.mbox_rename.new_name = (struct ms_event_str){
				q->new_name.s, q->new_name.len
			};
			ret = req_append_event(r, &ev, NULL);
		}
		for (size_t i = 0; i < nkids && ret == 0; i++) {
			ev.u.mbox_rename.mbox_id = kids[i].id;
			ev.u.mbox_rename.new_name = (struct ms_event_str){
				kids[i].name, kids[i].len
			};
			ret = req_append_event(r, &ev, NULL);
		}
		if (ret < 0 && r->pending == 0) {
			req_free(r);
			*why_r = "the store refused the write";
		} else {
			if (ret < 0)
				r->status = ret;
			/* the new names are taken until the index has them */
			r->pend_ren = ms_calloc(nkids + 1, sizeof(char *));
			if (!bare)
				rename_reserve(ops, r, s->user_id,
					       q->new_name.s, q->new_name.len);
			for (size_t i = 0; i < nkids; i++)
				rename_reserve(ops, r, s->user_id, kids[i].name,
					       kids[i].len);
			struct ms_reply rep = { .op = MS_OP_MBOX_RENAME };
			req_submit(r, &rep);
			ret = 0;
		}
	}
	for (size_t i = 0; i < nkids; i++)
		free(kids[i].name);
	free(kids);
	return ret;
}

/* One record, no reply body: DELETE, SUBSCRIBE, USER_DELETE, QUOTA_SET. */
/* A request of one record ev, not submitted yet; NULL (*ret_r, *why_r)
   when the log refused it. */
static struct req *req_one(struct ms_ops *ops, struct ms_conn *c, uint16_t op,
			   uint32_t id, const struct ms_event *ev,
			   const char **why_r, int *ret_r)
{
	struct req *r = req_new(ops, c, op, id);
	if ((*ret_r = req_append_event(r, ev, NULL)) < 0) {
		req_free(r);
		*why_r = "the store refused the write";
		return NULL;
	}
	return r;
}

static int write_one(struct ms_ops *ops, struct ms_conn *c, uint16_t op,
		     uint32_t id, const struct ms_event *ev,
		     const struct ms_reply *rep, const char **why_r)
{
	int ret;
	struct req *r = req_one(ops, c, op, id, ev, why_r, &ret);
	if (r == NULL)
		return ret;
	req_submit(r, rep);
	return 0;
}

static int op_mbox_delete(struct ms_ops *ops, struct ms_conn *c,
			  struct sess *s, uint32_t id,
			  const struct ms_req_mbox *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	if (ms_conn_is_admin(c)) {
		*why_r = "mailboxes are deleted in a user session";
		return -EINVAL;
	}
	if (q->name.len == 5 && memcmp(q->name.s, "INBOX", 5) == 0) {
		*why_r = "INBOX cannot be deleted";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox_w(ops, rd, s->user_id, q->name, &m, why_r);
	ms_idx_read_end(&rd);
	if (ret < 0)
		return ret;
	/* version 9: only an empty mailbox, nothing on its way in (what a
	   caller that expunged everything first needs, so that a message
	   delivered meanwhile is not deleted unseen) */
	if ((q->delete_flags & MS_MBOX_DELETE_EMPTY) &&
	    (m.messages > 0 || mpend_find(&ops->mpend, m.id)->in > 0)) {
		*why_r = m.messages > 0 ? "mailbox is not empty"
					: "a message is on its way in";
		return -ENOTEMPTY;
	}
	struct ms_event ev = { .type = MS_REC_MBOX_DELETE };
	ev.u.mbox_delete.user_id = s->user_id;
	ev.u.mbox_delete.mbox_id = m.id;
	struct ms_reply rep = { .op = MS_OP_MBOX_DELETE };
	struct req *r = req_one(ops, c, MS_OP_MBOX_DELETE, id, &ev, why_r,
				&ret);
	if (r == NULL)
		return ret;
	r->pend_del = m.id;
	mpend_get(&ops->mpend, m.id)->del++;
	req_submit(r, &rep);
	return 0;
}

static int op_mbox_subscribe(struct ms_ops *ops, struct ms_conn *c,
			     struct sess *s, uint32_t id,
			     const struct ms_req_mbox *q, const char **why_r)
{
	if (ms_conn_is_admin(c)) {
		*why_r = "subscriptions belong to a user session";
		return -EINVAL;
	}
	if (!ms_event_name_valid(q->name.s, q->name.len,
				 MS_EVENT_MBOX_NAME_MAX)) {
		*why_r = "invalid mailbox name";
		return -EINVAL;
	}
	/* IMAP allows subscribing names that do not exist */
	struct ms_event ev = { .type = MS_REC_MBOX_SUBSCRIBE };
	ev.u.mbox_subscribe.user_id = s->user_id;
	ev.u.mbox_subscribe.subscribed = q->subscribe != 0;
	ev.u.mbox_subscribe.name = (struct ms_event_str){ q->name.s, q->name.len };
	struct ms_reply rep = { .op = MS_OP_MBOX_SUBSCRIBE };
	return write_one(ops, c, MS_OP_MBOX_SUBSCRIBE, id, &ev, &rep, why_r);
}

static int op_user_delete(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			  const struct ms_req_user *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_user u;
	if (!ms_conn_is_admin(c)) {
		*why_r = "deleting users needs the admin role";
		return -EACCES;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = ms_idx_user_by_name(rd, q->name.s, q->name.len, &u);
	ms_idx_read_end(&rd);
	if (ret < 0) {
		*why_r = "no such user";
		return ret;
	}
	if ((ret = user_dying(ops, u.id, why_r)) < 0)
		return ret;
	struct ms_event ev = { .type = MS_REC_USER_DELETE };
	ev.u.user_delete.user_id = u.id;
	struct ms_reply rep = { .op = MS_OP_USER_DELETE };
	rep.u.user_id = u.id;
	struct req *r = req_one(ops, c, MS_OP_USER_DELETE, id, &ev, why_r,
				&ret);
	if (r == NULL)
		return ret;
	r->pend_user_del = u.id;
	mpend_get(&ops->udel, u.id)->del++;
	req_submit(r, &rep);
	return 0;
}

static int op_quota(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		    uint16_t op, uint32_t id, const struct ms_req_quota *q,
		    const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_user u;
	if (op == MS_OP_QUOTA_SET && !ms_conn_is_admin(c)) {
		*why_r = "setting a quota needs the admin role";
		return -EACCES;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_user(rd, c, s, q->user, &u, why_r);
	ms_idx_read_end(&rd);
	if (ret == 0 && op == MS_OP_QUOTA_SET)
		ret = user_dying(ops, u.id, why_r);
	if (ret < 0)
		return ret;
	if (op == MS_OP_QUOTA_GET) {
		struct ms_reply rep = { .op = MS_OP_QUOTA_GET };
		rep.u.quota.max_bytes = u.max_bytes;
		rep.u.quota.max_messages = u.max_messages;
		rep.u.quota.used_bytes = u.use_bytes;
		rep.u.quota.used_messages = u.use_messages;
		if (s->version >= 5) {
			rep.u.quota.have_mailboxes = 1;
			rep.u.quota.mailboxes = u.mailboxes;
			rep.u.quota.max_mailboxes = ops->max_mailboxes;
		}
		reply_now(c, id, &rep);
		return 0;
	}
	struct ms_event ev = { .type = MS_REC_QUOTA };
	ev.u.quota.user_id = u.id;
	ev.u.quota.max_bytes = q->max_bytes;
	ev.u.quota.max_messages = q->max_messages;
	struct ms_reply rep = { .op = MS_OP_QUOTA_SET };
	return write_one(ops, c, MS_OP_QUOTA_SET, id, &ev, &rep, why_r);
}

/* COPY and MOVE inside the session's user: new placements of the same
   bodies (nothing is copied but the placement), then, for MOVE, an
   expunge of the sources. */
/*
 * A PLACE of message m in user_id's mailbox mbox_id (uid and modseq are
 * the caller's).  The keywords go to kwbuf; keywords.packed holds their
 * offset there until kwbuf stops moving (then: kwbuf.data + offset).
 */
static void place_from_msg(struct ms_event *ev, const struct ms_idx_msg *m,
			   uint64_t user_id, uint64_t mbox_id,
			   struct ms_buf *kwbuf)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = MS_REC_PLACE;
	struct ms_event_place *p = &ev->u.place;
	p->user_id = user_id;
	p->mbox_id = mbox_id;
	p->flags = m->flags;
	p->received_date = m->received_date;
	p->save_date = (int64_t)time(NULL);
	memcpy(p->guid, m->guid, sizeof(p->guid));
	memcpy(p->body_key, m->body_key, sizeof(p->body_key));
	p->physical_size = m->physical_size;
	p->virtual_size = m->virtual_size;
	p->keywords.n = m->nkeywords;
	p->keywords.packed_len = m->keywords_len;
	p->keywords.packed = (const uint8_t *)(uintptr_t)kwbuf->len;
	ms_buf_append(kwbuf, m->keywords, m->keywords_len);
}

/* Room in user u's quota for n more messages of bytes in all (what is
   in flight counts).  0 or -EDQUOT. */
static int quota_room(struct ms_ops *ops, const struct ms_idx_user *u,
		      uint64_t bytes, size_t n, const char **why_r)
{
	const struct upend *up = upend_find(ops, u->id);

	if (n == 0)
		return 0;
	if ((u->max_bytes && u->use_bytes + up->bytes + bytes > u->max_bytes) ||
	    (u->max_messages &&
	     u->use_messages + up->msgs + n > u->max_messages)) {
		*why_r = "over quota";
		return -EDQUOT;
	}
	return 0;
}

/* Give the PLACEs of place_from_msg() their uids and modseqs in mailbox
   ms and append them to r; pairs[i].dst_uid gets each uid. */
static int place_all(struct req *r, struct mstate *ms, struct ms_event *evs,
		     size_t n, const struct ms_buf *kwbuf,
		     struct ms_uid_pair *pairs)
{
	int ret = 0;

	for (size_t i = 0; i < n && ret == 0; i++) {
		struct ms_event_place *p = &evs[i].u.place;
		p->keywords.packed =
			kwbuf->data + (uintptr_t)p->keywords.packed;
		p->uid = (uint32_t)ms->uidnext++;
		p->modseq = ++ms->modseq;
		pairs[i].dst_uid = p->uid;
		ret = req_append_event(r, &evs[i], NULL);
	}
	return ret;
}

/* The reply of COPY, MOVE and UNDELETE: UIDVALIDITY and uid pairs. */
static void submit_pairs(struct req *r, uint16_t op, uint32_t uidvalidity,
			 const struct ms_uid_pair *pairs, size_t n)
{
	struct ms_reply rep = { .op = op };
	rep.u.copy.uidvalidity = uidvalidity;
	rep.u.copy.pairs.n = (uint32_t)n;
	rep.u.copy.pairs.list = pairs;
	req_submit(r, &rep);
}

static int op_copy_move(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
			uint16_t op, uint32_t id, const struct ms_req_uids *q,
			const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox src = { 0 }, dst = { 0 };
	struct ms_idx_user u = { 0 };
	struct ms_uid_pair *pairs = NULL;
	struct ms_event *evs = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;

	if (ms_conn_is_admin(c)) {
		*why_r = "messages are copied in a user session";
		return -EINVAL;
	}
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox_w(ops, rd, s->user_id, q->mailbox, &src, why_r);
	if (ret == 0)
		ret = resolve_mbox_w(ops, rd, s->user_id, q->dst, &dst, why_r);
	/* into the same mailbox too, as IMAP allows: a COPY makes
	   duplicates with new UIDs, a MOVE gives the messages new UIDs */
	if (ret == 0)
		ret = ms_idx_user_get(rd, s->user_id, &u);
	struct mstate *ms = ret == 0 ? mstate_get(ops, rd, dst.id) : NULL;
	struct mstate *ss = ret == 0 ? mstate_get(ops, rd, src.id) : NULL;
	if (ret == 0 && (ms == NULL || ss == NULL))
		ret = MS_ENOTFOUND;
	/* keywords of the sources are copied out of the read handle */
	struct ms_buf kwbuf;
	ms_buf_init(&kwbuf, 0);
	struct ms_idx_iter *it = NULL;
	for (uint32_t i = 0; ret == 0 && i < q->uids.n; i++) {
		uint32_t lo, hi;
		struct ms_idx_msg m;
		if ((ret = ms_uid_set_range(&q->uids, i, &lo, &hi)) < 0 ||
		    (ret = ms_idx_msgs_range(rd, src.id, lo, hi, &it)) < 0)
			break;
		while ((ret = ms_idx_msgs_next(it, &m)) > 0) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				pairs = ms_realloc(pairs, cap * sizeof(*pairs));
				evs = ms_realloc(evs, cap * sizeof(*evs));
			}
			place_from_msg(&evs[n], &m, s->user_id, dst.id, &kwbuf);
			pairs[n].src_uid = m.uid;
			bytes += m.physical_size;
			n++;
		}
	}
	ms_idx_iter_free(&it);
	if (ret == 0 && op == MS_OP_COPY)
		ret = quota_room(ops, &u, bytes, n, why_r);
	ms_idx_read_end(&rd);
	if (ret < 0 || ms == NULL || ss == NULL) {
		if (ret >= 0)
			ret = MS_ENOTFOUND;
		goto out;
	}

	struct req *r = req_new(ops, c, op, id);
	ret = place_all(r, ms, evs, n, &kwbuf, pairs);
	mpend_in_add(ops, r, dst.id, n);
	if (ret == 0 && op == MS_OP_MOVE && n > 0) {
		/* the sources, as ranges (they came in uid order) */
		struct ms_event_range *rg = ms_calloc(n, sizeof(*rg));
		uint32_t nr = 0;
		for (size_t i = 0; i < n; i++) {
			if (nr > 0 && rg[nr - 1].hi + 1 == pairs[i].src_uid)
				rg[nr - 1].hi = pairs[i].src_uid;
			else
				rg[nr++] = (struct ms_event_range){
					pairs[i].src_uid, pairs[i].src_uid
				};
		}
		struct ms_event ev = { .type = MS_REC_EXPUNGE };
		ev.u.expunge.user_id = s->user_id;
		ev.u.expunge.mbox_id = src.id;
		ev.u.expunge.modseq = ++ss->modseq;
		/* time 0: a moved message is not restorable where it was
		   (undelete would duplicate it); the next purge drops it */
		ev.u.expunge.time = 0;
		ev.u.expunge.ranges.n = nr;
		ev.u.expunge.ranges.list = rg;
		ret = req_append_event(r, &ev, NULL);
		free(rg);
	}
	if (ret < 0 && r->pending == 0) {
		req_free(r);
		*why_r = "the store refused the write";
		goto out;
	}
	if (ret < 0)
		r->status = ret;
	/* copies in flight are not counted against the quota until they
	   are durable (the check above used the committed use) */
	submit_pairs(r, op, ms->uidvalidity, pairs, n);
	ret = 0;
out:
	ms_buf_free(&kwbuf);
	free(pairs);
	free(evs);
	return ret;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* WAIT: answer at once if the mailbox moved past known, else park. */
/* ---- undelete and compaction ---- */

/* Everything queued is durable, applied and committed. */
static void idx_settle(struct ms_ops *ops, int force);
static void uwake_send(struct ms_ops *ops);

static int settle(struct ms_ops *ops)
{
	int ret = ms_log_sync(ops->log);
	/* before any reply that may show what became durable */
	uwake_send(ops);
	idx_settle(ops, 1);
	return ret;
}

/*
 * UNDELETE: the mailbox's expunged messages still in the undelete window
 * (and at or after since) come back as new uids, without \Deleted.
 */
static int op_undelete(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		       uint32_t id, const struct ms_req_undelete *q,
		       const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_user u = { 0 };
	struct ms_idx_mbox m = { 0 };
	struct ms_uid_pair *pairs = NULL;
	struct ms_event *evs = NULL;
	struct ms_buf kwbuf;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0, now = (uint64_t)time(NULL);
	int ret;

	/* restores in flight are applied first: none is restored twice */
	if ((ret = settle(ops)) < 0) {
		*why_r = "the log cannot be flushed";
		return ret;
	}
	uint64_t cutoff = now > ops->undelete_window_s
				  ? now - ops->undelete_window_s
				  : 1;
	if ((uint64_t)q->since > cutoff)
		cutoff = (uint64_t)q->since;
	if (ops->purged_before > cutoff)
		cutoff = ops->purged_before;
	if ((ret = ms_idx_read_begin(ops->idx, &rd)) < 0)
		return ret;
	ms_buf_init(&kwbuf, 0);
	ret = resolve_user(rd, c, s, q->user, &u, why_r);
	if (ret == 0)
		ret = user_dying(ops, u.id, why_r);
	if (ret == 0)
		ret = resolve_mbox_w(ops, rd, u.id, q->mailbox, &m, why_r);
	struct mstate *ms = ret == 0 ? mstate_get(ops, rd, m.id) : NULL;
	if (ret == 0 && ms == NULL)
		ret = MS_ENOTFOUND;
	struct ms_idx_iter *it = NULL;
	if (ret == 0)
		ret = ms_idx_expunged_iter(rd, m.id, cutoff, &it);
	struct ms_idx_msg x;
	while (it != NULL && (ret = ms_idx_expunged_next(it, &x)) > 0) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			pairs = ms_realloc(pairs, cap * sizeof(*pairs));
			evs = ms_realloc(evs, cap * sizeof(*evs));
		}
		place_from_msg(&evs[n], &x, u.id, m.id, &kwbuf);
		evs[n].u.place.flags &= ~(uint32_t)MS_EVENT_FLAG_DELETED;
		evs[n].u.place.restore_uid = x.uid;
		pairs[n].src_uid = x.uid;
		bytes += x.physical_size;
		n++;
	}
	ms_idx_iter_free(&it);
	if (ret == 0)
		ret = quota_room(ops, &u, bytes, n, why_r);
	ms_idx_read_end(&rd);
	if (ret < 0 || ms == NULL) {
		if (ret >= 0)
			ret = MS_ENOTFOUND;
		goto out;
	}

	struct req *r = req_new(ops, c, MS_OP_UNDELETE, id);
	ret = place_all(r, ms, evs, n, &kwbuf, pairs);
	mpend_in_add(ops, r, m.id, n);
	if (ret < 0 && r->pending == 0) {
		req_free(r);
		*why_r = "the store refused the write";
		goto out;
	}
	if (ret < 0)
		r->status = ret;
	ops->n_undeleted += n;
	submit_pairs(r, MS_OP_UNDELETE, ms->uidvalidity, pairs, n);
	ret = 0;
out:
	ms_buf_free(&kwbuf);
	free(pairs);
	free(evs);
	return ret;
}

/* The drop list of a decoded RETIRE, as two arrays for the log. */
static int retire_lists(const struct ms_event *ev, uint64_t **offs_r,
			uint8_t **types_r)
{
	uint32_t n = ev->u.retire.drops.n;
	uint64_t *offs = ms_calloc(n, sizeof(*offs));
	uint8_t *types = ms_calloc(n, 1);

	for (uint32_t i = 0; i < n; i++) {
		struct ms_event_drop d;
		if (ms_event_drop(ev, i, &d) < 0) {
			free(offs);
			free(types);
			return -EINVAL;
		}
		offs[i] = d.off;
		types[i] = d.type;
	}
	*offs_r = offs;
	*types_r = types;
	return 0;
}

/* Make the segment files say what a RETIRE record says (idempotent). */
static int retire_finish(struct ms_log *log, const uint8_t *payload,
			 uint32_t len, uint64_t *seg_r, const char **error_r)
{
	struct ms_event ev;
	uint64_t *offs;
	uint8_t *types;
	int ret = ms_event_decode(MS_REC_RETIRE, payload, len, &ev, error_r);

	if (ret < 0)
		return ret;
	*seg_r = ev.u.retire.seg;
	if ((ret = retire_lists(&ev, &offs, &types)) < 0) {
		*error_r = "bad drop list";
		return ret;
	}
	ret = ms_log_compact_finish(log, ev.u.retire.seg, offs, types,
				    ev.u.retire.drops.n, ev.u.retire.sum,
				    error_r);
	free(offs);
	free(types);
	return ret;
}

/*
 * A RETIRE is durable: rename the rewrites into place before the index
 * forgets the dropped bodies, so that no reader is sent to a HOLE.
 */
static void retire_applied(struct ms_ops *ops, const struct ms_rec_hdr *h,
			   const uint8_t *payload)
{
	const char *err = "";
	uint64_t seg = 0;

	if (retire_finish(ops->log, payload, h->len, &seg, &err) < 0) {
		ops->n_compact_errors++;
		msg_error("compaction.unfinished segment=%llu seq=%llu error=%s "
			  "msg=\"the next start finishes it\"",
			  (unsigned long long)seg, (unsigned long long)h->seq,
			  msg_q(err));
	}
	size_t w = 0;
	for (size_t i = 0; i < ops->ndying; i++)
		if (ops->dying[i].seg != seg)
			ops->dying[w++] = ops->dying[i];
	ops->ndying = w;
}

/*
 * Finish the RETIREs from pos on (at start: after a crash the rename of a
 * durable RETIRE may not have reached every copy).  Only the last RETIRE
 * of a segment counts: a segment compacted twice has the second one's
 * checksum.
 */
static int finish_retires(struct ms_ops *ops, struct ms_pos from,
			  const char **error_r)
{
	struct last {
		uint64_t seg;
		struct ms_buf payload;
	} *last = NULL;
	size_t nlast = 0;
	struct ms_log_iter *it;
	struct ms_rec_hdr h;
	struct ms_pos pos;
	const uint8_t *p;
	int ret = ms_log_iter_new(ops->log, from, &it);

	if (ret < 0) {
		*error_r = "cannot walk the log";
		return ret;
	}
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, error_r)) > 0) {
		if (h.type != MS_REC_RETIRE || h.len < 8)
			continue;
		uint64_t seg = ms_get64(p);
		size_t i = 0;
		while (i < nlast && last[i].seg != seg)
			i++;
		if (i == nlast) {
			last = ms_realloc(last, (nlast + 1) * sizeof(*last));
			last[nlast].seg = seg;
			ms_buf_init(&last[nlast++].payload, 0);
		}
		ms_buf_reset(&last[i].payload);
		ms_buf_append(&last[i].payload, p, h.len);
	}
	ms_log_iter_free(&it);
	for (size_t i = 0; i < nlast; i++) {
		uint64_t seg;
		if (ret == 0)
			ret = retire_finish(ops->log, last[i].payload.data,
					    (uint32_t)last[i].payload.len, &seg,
					    error_r);
		ms_buf_free(&last[i].payload);
	}
	free(last);
	if (ret == 0)
		ms_log_compact_cleanup(ops->log);
	return ret;
}

static void sys_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct ms_ops *ops = ctx;
	(void)pos;
	ops->completions++;
	if (status != 0)
		msg_error("compaction.record_failed seq=%llu error=%s",
			  (unsigned long long)seq, msg_q(ms_strerror(status)));
}

/* Append a record for request r, or for the daemon itself (r NULL). */
static int ops_append_event(struct ms_ops *ops, struct req *r,
			    const struct ms_event *ev)
{
	if (r != NULL)
		return req_append_event(r, ev, NULL);
	struct ms_buf b;
	ms_buf_init(&b, MS_REC_MAX_PAYLOAD);
	int ret = ms_event_encode(ev, &b);
	if (ret == 0)
		ret = ms_log_append(ops->log, ev->type, 0, b.data,
				    (uint32_t)b.len, sys_done, ops, NULL, NULL);
	ms_buf_free(&b);
	return ret;
}

/*
 * The dead records of sealed segment seg (docs/format.md, "Compaction"):
 * NOOPs; BODYs no placement needs (none present or restorable, or the
 * index found the body at a newer record); PLACEs of messages neither
 * present nor restorable.  Appends struct ms_event_drop to drops.
 */
static int plan_segment(struct ms_ops *ops, struct ms_idx_rd *rd, uint64_t seg,
			struct ms_buf *drops, uint64_t *bytes_r,
			const char **why_r)
{
	struct ms_log_iter *it;
	struct ms_rec_hdr h;
	struct ms_pos pos;
	const uint8_t *p;
	int ret = ms_log_iter_new(ops->log,
				  (struct ms_pos){ seg, MS_SEG_HDR_SIZE }, &it);

	if (ret < 0) {
		*why_r = "cannot walk the segment";
		return ret;
	}
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, why_r)) > 0) {
		struct ms_event_drop d = { .off = pos.off, .type = h.type };
		int drop = 0, r2 = 0;

		if (pos.seg != seg || h.type == MS_REC_SEAL)
			break;
		if (h.type == MS_REC_NOOP) {
			drop = 1;
		} else if (h.type == MS_REC_BODY) {
			struct ms_idx_body b;
			uint64_t plain;
			if (ms_body_peek(p, h.len, d.key, &plain) < 0)
				continue; /* not ours to judge */
			r2 = ms_idx_body_get(rd, d.key, &b);
			if (r2 == MS_ENOTFOUND)
				drop = 1, r2 = 0;
			else if (r2 == 0)
				drop = b.pos.seg != seg || b.pos.off != pos.off ||
				       b.refcount + b.expunged_refs == 0;
		} else if (h.type == MS_REC_PLACE) {
			struct ms_event ev;
			struct ms_idx_msg m;
			if (ms_event_decode(h.type, p, h.len, &ev, NULL) < 0)
				continue;
			r2 = ms_idx_msg_get(rd, ev.u.place.mbox_id,
					    ev.u.place.uid, &m);
			if (r2 == MS_ENOTFOUND)
				r2 = ms_idx_expunged_get(rd, ev.u.place.mbox_id,
							 ev.u.place.uid, &m);
			if (r2 == MS_ENOTFOUND)
				drop = 1, r2 = 0;
			else if (r2 == 0)
				drop = m.place_pos.seg != seg ||
				       m.place_pos.off != pos.off;
		}
		if (r2 < 0) {
			*why_r = "index lookup failed";
			ret = r2;
			break;
		}
		if (drop) {
			if (h.type != MS_REC_BODY)
				memset(d.key, 0, sizeof(d.key));
			ms_buf_append(drops, &d, sizeof(d));
			*bytes_r += MS_REC_HDR_SIZE + h.len;
		}
	}
	ms_log_iter_free(&it);
	return ret < 0 ? ret : 0;
}

/* At most this many segment bytes are rewritten per run (the loop waits
   for the rewrite); what is left waits for the next run. */
#define COMPACT_MAX_BYTES ((uint64_t)256 << 20)


/*
 * Purge what left the undelete window, then compact the sealed segments
 * whose live bytes are under threshold per mille of their allocated
 * size.  The RETIREs go out as records of r (NULL: the daemon's own).
 */
static int run_compaction(struct ms_ops *ops, struct req *r,
			  uint64_t threshold, int purge_only,
			  struct ms_compact_result *cr, const char **why_r)
{
	uint64_t now = (uint64_t)time(NULL);
	struct ms_buf drops;
	struct ms_idx_rd *rd;
	int ret;

	ops->n_compactions++;
	if ((ret = settle(ops)) < 0) {
		*why_r = "the log cannot be flushed";
		return ret;
	}
	uint64_t before = now > ops->undelete_window_s
				  ? now - ops->undelete_window_s
				  : 0;
	if (before > ops->purged_before) {
		struct ms_event ev = { .type = MS_REC_PURGE };
		ev.u.purge.before = before;
		if ((ret = ops_append_event(ops, NULL, &ev)) < 0 ||
		    (ret = settle(ops)) < 0) {
			*why_r = "the purge record was not written";
			return ret;
		}
		ops->purged_before = before;
	}
	cr->purged_before = ops->purged_before;
	if (purge_only)
		return 0;

	size_t nsegs;
	const uint64_t *lsegs = ms_log_segments(ops->log, &nsegs);
	uint64_t *segs = ms_calloc(nsegs + 1, sizeof(*segs));
	memcpy(segs, lsegs, nsegs * sizeof(*segs));
	uint64_t head = ms_log_head_seg(ops->log), budget = COMPACT_MAX_BYTES;
	if ((ret = ms_idx_read_begin(ops->idx, &rd)) < 0) {
		free(segs);
		return ret;
	}
	ms_buf_init(&drops, 0);
	for (size_t i = 0; i < nsegs && ret == 0; i++) {
		struct ms_idx_seg is;
		uint64_t size, alloc, dbytes = 0, sum = 0;

		if (segs[i] >= head)
			break;
		if (ms_log_seg_space(ops->log, segs[i], &size, &alloc) < 0)
			continue;
		uint64_t base = alloc < size ? alloc : size;
		if ((ret = ms_idx_seg_get(rd, segs[i], &is)) < 0)
			break;
		if (base == 0 || is.live_bytes * 1000 >= threshold * base)
			continue;
		if (size > budget) {
			cr->more = 1;
			break;
		}
		cr->scanned++;
		ms_buf_reset(&drops);
		if ((ret = plan_segment(ops, rd, segs[i], &drops, &dbytes,
					why_r)) < 0)
			break;
		size_t nd = drops.len / sizeof(struct ms_event_drop);
		if (nd == 0)
			continue;
		const struct ms_event_drop *dl = (const void *)drops.data;
		uint64_t *offs = ms_calloc(nd, sizeof(*offs));
		uint8_t *types = ms_calloc(nd, 1);
		for (size_t k = 0; k < nd; k++) {
			offs[k] = dl[k].off;
			types[k] = dl[k].type;
		}
		ret = ms_log_compact_write(ops->log, segs[i], offs, types, nd,
					   &sum, why_r);
		free(offs);
		free(types);
		if (ret < 0)
			break;
		for (size_t k = 0; k < nd; k++) {
			if (dl[k].type != MS_REC_BODY)
				continue;
			if (ops->ndying == ops->capdying) {
				ops->capdying = ops->capdying
							? ops->capdying * 2
							: 256;
				ops->dying = ms_realloc(
					ops->dying,
					ops->capdying * sizeof(*ops->dying));
			}
			ops->dying[ops->ndying].seg = segs[i];
			memcpy(ops->dying[ops->ndying++].key, dl[k].key, 32);
		}
		struct ms_event ev = { .type = MS_REC_RETIRE };
		ev.u.retire.seg = segs[i];
		ev.u.retire.sum = sum;
		ev.u.retire.drops.n = (uint32_t)nd;
		ev.u.retire.drops.list = dl;
		if ((ret = ops_append_event(ops, r, &ev)) < 0) {
			*why_r = "the retire record was not written";
			break;
		}
		budget -= size;
		cr->compacted++;
		cr->dropped += nd;
		cr->bytes += dbytes;
	}
	ms_idx_read_end(&rd);
	ms_buf_free(&drops);
	free(segs);
	ops->n_segs_compacted += cr->compacted;
	ops->n_recs_dropped += cr->dropped;
	ops->n_bytes_dropped += cr->bytes;
	return ret;
}

static int op_compact(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
		      const struct ms_req_compact *q, const char **why_r)
{
	struct ms_compact_result cr = { 0 };

	if (!ms_conn_is_admin(c)) {
		*why_r = "compaction is an admin operation";
		return -EACCES;
	}
	struct req *r = req_new(ops, c, MS_OP_COMPACT, id);
	r->after_apply = 1;
	int ret = run_compaction(ops, r,
				 q->threshold ? q->threshold
					      : ops->compact_threshold,
				 q->purge_only, &cr, why_r);
	if (ret < 0 && r->pending == 0) {
		req_free(r);
		ops->n_compact_errors++;
		return ret;
	}
	if (ret < 0)
		r->status = ret;
	struct ms_counter cnt[] = {
		{ MS_PSTR("purged_before"), cr.purged_before },
		{ MS_PSTR("segments_scanned"), cr.scanned },
		{ MS_PSTR("segments_compacted"), cr.compacted },
		{ MS_PSTR("records_dropped"), cr.dropped },
		{ MS_PSTR("bytes_dropped"), cr.bytes },
		{ MS_PSTR("more"), cr.more },
	};
	struct ms_reply rep = { .op = MS_OP_COMPACT };
	rep.u.counters.n = MS_ARRAY_SIZE(cnt);
	rep.u.counters.list = cnt;
	req_submit(r, &rep);
	return 0;
}

int ms_ops_compact(struct ms_ops *ops, uint32_t threshold, int purge_only,
		   struct ms_compact_result *res_r, const char **error_r)
{
	memset(res_r, 0, sizeof(*res_r));
	*error_r = "";
	int ret = run_compaction(ops, NULL,
				 threshold ? threshold : ops->compact_threshold,
				 purge_only, res_r, error_r);
	int r2 = settle(ops);
	if (ret == 0 && r2 < 0) {
		*error_r = "the log cannot be flushed";
		ret = r2;
	}
	return ret;
}

/* Automatic compaction every compact_interval. */
static void compact_tick(struct ms_ops *ops)
{
	if (ops->compact_interval_ms == 0 || ms_log_dead(ops->log) ||
	    ops->standby)
		return;
	uint64_t now = now_ms();
	if (ops->compact_last_ms == 0)
		ops->compact_last_ms = now;
	if (now - ops->compact_last_ms < ops->compact_interval_ms)
		return;
	ops->compact_last_ms = now;
	struct ms_compact_result cr = { 0 };
	const char *why = "";
	int ret = run_compaction(ops, NULL, ops->compact_threshold, 0, &cr,
				 &why);
	if (ret < 0) {
		ops->n_compact_errors++;
		msg_error("compaction.failed error=%s detail=%s",
			  msg_q(ms_strerror(ret)), msg_q(why));
	} else if (cr.compacted > 0) {
		msg_info("compaction.done segments=%llu records_dropped=%llu "
			 "bytes_dropped=%llu",
			 (unsigned long long)cr.compacted,
			 (unsigned long long)cr.dropped,
			 (unsigned long long)cr.bytes);
	}
}

/*
 * ---- WAIT ----
 *
 * An IMAP session in IDLE parks a WAIT here for up to an hour, so a
 * store with many users holds many of them; a loop turn that changed
 * mailboxes must not walk them all.  Each mailbox's WAITs hang in a
 * list that a map by mailbox id finds (a changed mailbox wakes its own),
 * and on their session's list (a connection that goes drops its own at
 * once).  Deadlines are found by a walk of them all, done only once the
 * earliest (wait_next_ms) has come.
 */
static void wait_link(struct ms_ops *ops, struct waiter *w)
{
	struct waiter *first = ms_u64map_get(&ops->waits, w->mbox_id);
	w->prev = NULL;
	w->next = first;
	if (first != NULL)
		first->prev = w;
	ms_u64map_put(&ops->waits, w->mbox_id, w);
}

static void uwake_unlink(struct ms_ops *ops, struct waiter *w);

/* Off its mailbox's list and its session's; the caller frees it. */
static void wait_unlink(struct ms_ops *ops, struct waiter *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else if (w->next != NULL)
		ms_u64map_put(&ops->waits, w->mbox_id, w->next);
	else
		ms_u64map_del(&ops->waits, w->mbox_id);
	if (w->next != NULL)
		w->next->prev = w->prev;
	*w->s_pprev = w->s_next;
	if (w->s_next != NULL)
		w->s_next->s_pprev = w->s_pprev;
	if (w->due)
		uwake_unlink(ops, w);
	ops->nwaiters--;
	if ((w->mbox_id & WAIT_USER_KEY) != 0)
		ops->nwatches--;
}

static void wait_free(struct waiter *w)
{
	ms_conn_unref(&w->conn);
	free(w->mchg);
	free(w);
}

static struct waiter *wait_park(struct ms_ops *ops, struct ms_conn *c,
				struct sess *s, uint32_t id, uint64_t key,
				uint64_t deadline_ms);

static int op_wait(struct ms_ops *ops, struct ms_conn *c, struct sess *s,
		   uint32_t id, const struct ms_req_wait *q, const char **why_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_mbox m;
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0)
		return ret;
	ret = resolve_mbox(rd, s->user_id, q->mailbox, &m, why_r);
	ms_idx_read_end(&rd);
	if (ret < 0)
		return ret;
	if (m.highestmodseq != q->known_modseq || q->timeout_ms == 0) {
		struct ms_reply rep = { .op = MS_OP_WAIT };
		rep.u.highestmodseq = m.highestmodseq;
		reply_now(c, id, &rep);
		return 0;
	}
	wait_park(ops, c, s, id, m.id, now_ms() + q->timeout_ms);
	return 0;
}

/*
 * USER_WATCH: a session learns of any change to its user's mail without
 * asking mailbox by mailbox (the Dovecot plugin: a SELECT or a command's
 * sync that finds the user unchanged since its index was brought up to
 * date asks the store nothing).  Each user has a change count: the value
 * of chg_seq when a durable record last named the user (every record
 * type whose payload starts with the user id: placements, flags,
 * expunges, mailboxes, subscriptions, quota, the user itself).  Counts
 * live in memory; HELLO hands one out with chg_epoch.  A clean stop
 * writes them to the index directory (chg_save), and the next start
 * takes them back with their epoch only if the log is as it was then
 * (chg_restore): its last record the one last counted, on the same
 * timeline of the same store, and the file in the directory that wrote
 * it.  Every other start draws a new epoch, so
 * a count from before it is never taken for a current one.  A user not
 * in chg_users (unchanged since its epoch began, or forgotten when the
 * map reached CHG_USERS_MAX) has chg_floor, which only ever grows: a
 * forgotten count can look changed, never unchanged.
 *
 * A USER_WATCH is answered at once with the count, and then again each
 * time it moves, for as long as the connection lives: there is no gap
 * between one wait and the next in which a change could go unseen.  The
 * order is the point: counts are noted when a batch is durable, before
 * its done callbacks (the log's notice hook; on a standby as the records
 * are applied), and the watches that wakes are answered (uwake_send)
 * before any reply of that turn: before the replies that say the change
 * is done, and before any read of the index that shows it (a watch on
 * a connection with a reply of that turn: in the same write, in front
 * of it; see ms_ops_tick).  So a client that learns of a change by any
 * path finds the new count already on its watch's connection.
 *
 * Each mailbox has a count too (version 7): the count its last change
 * got (chg_mboxes: every record type whose payload has the mailbox id
 * after the user id), or, not in the map, its user's count, which is
 * never below it.  A watch's first reply gives the counts of all the
 * user's mailboxes, and each next one those of the mailboxes changed
 * since the one before (more than fit a watch's mchg: all again), so
 * that a client can tell a change in one mailbox from a change in
 * another without asking.  A mailbox not in a client's list is one it
 * knows nothing of: a new one, or not the user's.
 */
#define CHG_USERS_MAX ((size_t)1 << 20)
#define CHG_MBOXES_MAX ((size_t)1 << 20)
/* a watch's mailboxes changed between two replies: past this, a reply
   without mailboxes, and the next one lists them all */
#define WATCH_MCHG_MAX ((size_t)1024)
/* a restore's gap (chg_restore): at least this, under twice it */
#define CHG_SEQ_GAP_MIN ((uint64_t)1 << 40)
/* a file whose counts leave less room than 2^20 restores: a new epoch */
#define CHG_SEQ_RESTORE_MAX (UINT64_MAX - ((uint64_t)1 << 61))
_Static_assert(CHG_USERS_MAX <= MS_CHGSNAP_MAX_USERS &&
		       CHG_MBOXES_MAX <= MS_CHGSNAP_MAX_MBOXES,
	       "a clean stop writes every count it holds");
_Static_assert(sizeof(void *) >= sizeof(uint64_t),
	       "chg_users keeps a count in a pointer");

static uint64_t user_changes(const struct ms_ops *ops, uint64_t user_id)
{
	void *v = ms_u64map_get(&ops->chg_users, user_id);
	return v != NULL ? (uint64_t)(uintptr_t)v : ops->chg_floor;
}

static uint64_t mbox_changes(const struct ms_ops *ops, uint64_t user_id,
			     uint64_t mbox_id)
{
	void *v = ms_u64map_get(&ops->chg_mboxes, mbox_id);
	return v != NULL ? (uint64_t)(uintptr_t)v : user_changes(ops, user_id);
}

/* Note a change of mailbox mbox_id for a watch; 0: of the user as a
   whole (USER_DELETE; USER_CREATE comes before any session of the
   user): it has no mailboxes after it. */
static void watch_note_mbox(struct waiter *w, uint64_t mbox_id)
{
	if (w->version < 7 || w->mchg_none || w->mchg_over)
		return;
	if (mbox_id == 0) {
		w->mchg_none = 1;
		return;
	}
	for (size_t i = 0; i < w->nmchg; i++)
		if (w->mchg[i] == mbox_id)
			return;
	if (w->nmchg == WATCH_MCHG_MAX) {
		w->mchg_over = 1;
		return;
	}
	if (w->nmchg == w->capmchg) {
		w->capmchg = w->capmchg ? w->capmchg * 2 : 8;
		w->mchg = ms_realloc(w->mchg, w->capmchg * sizeof(*w->mchg));
	}
	w->mchg[w->nmchg++] = mbox_id;
}

/* The log's notice hook: count the change of the record's user, and
   mark its watches due. */
static void note_record(void *ctx, const struct ms_rec_hdr *h,
			const uint8_t *payload, struct ms_pos pos)
{
	struct ms_ops *ops = ctx;
	(void)pos;

	ops->chg_noted = h->seq;
	switch (h->type) {
	case MS_REC_PLACE:
	case MS_REC_FLAGS:
	case MS_REC_EXPUNGE:
	case MS_REC_MBOX_CREATE:
	case MS_REC_MBOX_RENAME:
	case MS_REC_MBOX_DELETE:
	case MS_REC_MBOX_SUBSCRIBE:
	case MS_REC_MBOX_UPDATE:
	case MS_REC_USER_CREATE:
	case MS_REC_USER_DELETE:
	case MS_REC_QUOTA:
		break;
	default:
		return;
	}
	if (h->len < 8)
		return;
	uint64_t user_id = ms_get64(payload);
	if (user_id == 0 || (user_id & WAIT_USER_KEY) != 0)
		return;
	/* the mailbox a record changes: its id after the user's; none
	   (0) for the user's own records, which count for each of its
	   mailboxes; a subscription or quota changes no mailbox; a
	   mailbox record without one (no writer makes it) leaves every
	   watch knowing none until it lists them all again */
	uint64_t mbox_id = 0;
	int of_mbox = 1;
	switch (h->type) {
	case MS_REC_USER_CREATE:
	case MS_REC_USER_DELETE:
		break;
	case MS_REC_MBOX_SUBSCRIBE:
	case MS_REC_QUOTA:
		of_mbox = 0;
		break;
	default:
		if (h->len >= 16)
			mbox_id = ms_get64(payload + 8);
		if (mbox_id == 0)
			of_mbox = -1;
	}
	/* the mailbox's count before this change */
	uint64_t mprev = mbox_id != 0 ? mbox_changes(ops, user_id, mbox_id) : 0;
	if (ops->chg_users.n >= CHG_USERS_MAX &&
	    ms_u64map_get(&ops->chg_users, user_id) == NULL) {
		ms_u64map_free(&ops->chg_users);
		ops->chg_floor = ops->chg_seq;
	}
	ops->chg_seq++;
	ms_u64map_put(&ops->chg_users, user_id,
		      (void *)(uintptr_t)ops->chg_seq);
	if (h->type == MS_REC_FLAGS || h->type == MS_REC_EXPUNGE) {
		/* for the reply of the request that wrote it (chg_patch):
		   the batch's records, from the first one noted after a
		   done callback; bounded where no request waits (a
		   standby) */
		if (ops->chg_recs_done || ops->nchg_recs >= 65536) {
			ops->nchg_recs = 0;
			ops->chg_recs_done = 0;
		}
		if (ops->nchg_recs == ops->capchg_recs) {
			ops->capchg_recs = ops->capchg_recs
						   ? ops->capchg_recs * 2
						   : 64;
			ops->chg_recs = ms_realloc(ops->chg_recs,
						   ops->capchg_recs *
							   sizeof(*ops->chg_recs));
		}
		ops->chg_recs[ops->nchg_recs++] = (struct chg_rec){
			.seq = h->seq,
			.prev = mprev,
			.count = ops->chg_seq };
	}
	if (mbox_id != 0) {
		/* forgotten, a mailbox has its user's count: never lower */
		if (ops->chg_mboxes.n >= CHG_MBOXES_MAX &&
		    ms_u64map_get(&ops->chg_mboxes, mbox_id) == NULL)
			ms_u64map_free(&ops->chg_mboxes);
		ms_u64map_put(&ops->chg_mboxes, mbox_id,
			      (void *)(uintptr_t)ops->chg_seq);
	}
	for (struct waiter *w = ms_u64map_get(&ops->waits,
					      user_id | WAIT_USER_KEY);
	     w != NULL; w = w->next) {
		if (of_mbox > 0)
			watch_note_mbox(w, mbox_id);
		else if (of_mbox < 0)
			w->mchg_over = 1;
		if (w->due)
			continue;
		w->due = 1;
		w->u_next = ops->uwake;
		if (ops->uwake != NULL)
			ops->uwake->u_pprev = &w->u_next;
		w->u_pprev = &ops->uwake;
		ops->uwake = w;
	}
}

/* Off the due list (it is being answered, or it goes). */
static void uwake_unlink(struct ms_ops *ops, struct waiter *w)
{
	(void)ops;
	*w->u_pprev = w->u_next;
	if (w->u_next != NULL)
		w->u_next->u_pprev = w->u_pprev;
	w->due = 0;
}

static void mchg_add(struct ms_ops *ops, uint64_t user_id,
		     struct ms_mbox_chg **list, size_t *n, size_t *cap,
		     uint64_t mbox_id)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*list = ms_realloc(*list, *cap * sizeof(**list));
	}
	(*list)[*n].mbox_id = mbox_id;
	(*list)[*n].changes = mbox_changes(ops, user_id, mbox_id);
	(*n)++;
}

/*
 * A watch's reply: the user's count and, from version 7, the mailboxes'
 * (watch_note_mbox).  Those changed since the last reply; or all the
 * user's (the first reply, and the one after a reply that had too many
 * to note): those the index has, and those changed since the last
 * reply, which it may not have yet (the turn's records are applied after
 * its replies); or none at all after a USER_DELETE.  The list is in
 * *list_r (freed by the caller).  A reply with no mailboxes at all (too
 * many changed, more than fit one reply, the index unreadable) tells
 * the client it knows none until a reply lists them all again.
 */
static void watch_reply(struct ms_ops *ops, struct waiter *w,
			struct ms_reply *rep, struct ms_mbox_chg **list_r)
{
	uint64_t user_id = w->mbox_id & ~WAIT_USER_KEY;
	struct ms_mbox_chg *list = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	*list_r = NULL;
	rep->u.watch.changes = user_changes(ops, user_id);
	if (w->version < 7)
		return;
	if (w->mchg_none) {
		rep->u.watch.have_mboxes = 1;
		rep->u.watch.full = 1;
	} else if (w->mchg_over) {
		w->mchg_full = 1; /* the next reply */
		w->mchg_over = 0;
		w->nmchg = 0;
		return;
	} else if (w->mchg_full) {
		struct ms_idx_rd *rd;
		struct ms_idx_iter *it = NULL;
		struct ms_idx_mbox m;
		ret = ms_idx_read_begin(ops->idx, &rd);
		if (ret == 0) {
			ret = ms_idx_mboxes_iter(rd, user_id, &it);
			while (ret == 0 &&
			       (ret = ms_idx_mboxes_next(it, &m)) > 0) {
				ret = 0;
				mchg_add(ops, user_id, &list, &n, &cap, m.id);
			}
			ms_idx_iter_free(&it);
			ms_idx_read_end(&rd);
		}
		rep->u.watch.full = 1;
	}
	if (!w->mchg_none) {
		for (size_t i = 0; i < w->nmchg; i++)
			mchg_add(ops, user_id, &list, &n, &cap, w->mchg[i]);
		rep->u.watch.have_mboxes = 1;
	}
	if (ret < 0 || (n + 1) * 16 + 64 > ops->reply_max) {
		/* none: the client knows none until the next full reply */
		rep->u.watch.have_mboxes = 0;
		rep->u.watch.full = 0;
		free(list);
		list = NULL;
		n = 0;
		w->mchg_full = 1;
	} else {
		w->mchg_full = 0;
		ops->n_watch_full += rep->u.watch.full;
	}
	w->nmchg = 0;
	rep->u.watch.mboxes.n = (uint32_t)n;
	rep->u.watch.mboxes.list = list;
	*list_r = list;
}

/* Answer the USER_WATCHes note_record made due: each with its user's
   count now, and it stays. */
static void uwake_send(struct ms_ops *ops)
{
	while (ops->uwake != NULL) {
		struct waiter *w = ops->uwake;
		struct ms_reply rep = { .op = MS_OP_USER_WATCH };
		struct ms_mbox_chg *list;
		uwake_unlink(ops, w);
		watch_reply(ops, w, &rep, &list);
		/* an answer that closes the connection unlinks no one else:
		   the watch goes with its session, at the close's end */
		struct sess *s = ms_conn_data(w->conn);
		if (s != NULL && s->reply_due && ops->srv != NULL)
			reply_held(w->conn, w->id, &rep);
		else
			reply_now(w->conn, w->id, &rep);
		free(list);
	}
}

/* Mark (due 1) or unmark the sessions with a reply on ops->ready. */
static void mark_reply_due(struct ms_ops *ops, int due)
{
	for (struct req *r = ops->ready; r != NULL; r = r->next) {
		struct sess *s = ms_conn_data(r->conn);
		if (s != NULL)
			s->reply_due = due;
	}
}

static int op_user_watch(struct ms_ops *ops, struct ms_conn *c,
			 struct sess *s, uint32_t id, const char **why_r)
{
	if (s->user_id == 0) {
		*why_r = "USER_WATCH needs a user session";
		return -EACCES;
	}
	if (s->watching) {
		*why_r = "this connection has a USER_WATCH already";
		return -EEXIST;
	}
	struct ms_reply rep = { .op = MS_OP_USER_WATCH };
	struct ms_mbox_chg *list;
	s->watching = 1;
	struct waiter *w = wait_park(ops, c, s, id,
				     s->user_id | WAIT_USER_KEY, UINT64_MAX);
	w->version = s->version;
	w->mchg_full = 1; /* the first reply: every mailbox */
	watch_reply(ops, w, &rep, &list);
	/* last: a send that fails drops the connection, and the session
	   (with the watch just parked) goes with it */
	reply_now(c, id, &rep);
	free(list);
	return 0;
}

/* Park a WAIT (key: its mailbox id) or USER_WATCH (its user | bit, no
   deadline: UINT64_MAX). */
static struct waiter *wait_park(struct ms_ops *ops, struct ms_conn *c,
				struct sess *s, uint32_t id, uint64_t key,
				uint64_t deadline_ms)
{
	struct waiter *w = ms_calloc(1, sizeof(*w));
	w->conn = c;
	ms_conn_ref(c);
	w->id = id;
	w->mbox_id = key;
	w->deadline_ms = deadline_ms;
	wait_link(ops, w);
	w->s_next = s->waits;
	if (s->waits != NULL)
		s->waits->s_pprev = &w->s_next;
	w->s_pprev = &s->waits;
	s->waits = w;
	if ((key & WAIT_USER_KEY) != 0)
		ops->nwatches++;
	if (ops->nwaiters++ == 0 || w->deadline_ms < ops->wait_next_ms)
		ops->wait_next_ms = w->deadline_ms;
	return w;
}

/* After a commit: wake the waiters whose mailbox changed or timed out.
   They are taken out first and answered after: an answer can close a
   connection, and its session's other waiters with it. */
static void wake_waiters(struct ms_ops *ops)
{
	uint64_t now = now_ms();
	struct waiter *due = NULL;

	for (size_t i = 0; i < ops->ntouched && ops->nwaiters > 0; i++) {
		struct waiter *w;
		while ((w = ms_u64map_get(&ops->waits, ops->touched[i])) !=
		       NULL) {
			wait_unlink(ops, w);
			w->next = due;
			due = w;
		}
	}
	if (ops->nwaiters > 0 && now >= ops->wait_next_ms) {
		uint64_t next_ms = UINT64_MAX;
		/* the map is not changed under the walk: the due ones are
		   collected first */
		struct waiter *expired = NULL;
		MS_U64MAP_EACH(&ops->waits, k) {
			for (struct waiter *w = ops->waits.vals[k]; w != NULL;
			     w = w->next) {
				if (now >= w->deadline_ms) {
					w->expired_next = expired;
					expired = w;
				} else if (w->deadline_ms < next_ms) {
					next_ms = w->deadline_ms;
				}
			}
		}
		while (expired != NULL) {
			struct waiter *w = expired;
			expired = w->expired_next;
			wait_unlink(ops, w);
			w->next = due;
			due = w;
		}
		ops->wait_next_ms = next_ms;
	}
	ops->ntouched = 0;
	if (due == NULL)
		return;
	struct ms_idx_rd *rd = NULL;
	if (ms_idx_read_begin(ops->idx, &rd) < 0)
		rd = NULL;
	while (due != NULL) {
		struct waiter *w = due;
		struct ms_idx_mbox m;
		struct ms_reply rep = { .op = MS_OP_WAIT };
		due = w->next;
		if (rd != NULL && ms_idx_mbox_get(rd, w->mbox_id, &m) == 0) {
			rep.u.highestmodseq = m.highestmodseq;
			reply_now(w->conn, w->id, &rep);
		} else {
			reply_error(w->conn, MS_OP_WAIT, w->id, MS_ENOTFOUND,
				    "the mailbox is gone");
		}
		wait_free(w);
	}
	if (rd != NULL)
		ms_idx_read_end(&rd);
}

/* A connection went: its parked WAITs go with it. */
static void wait_drop_session(struct ms_ops *ops, struct sess *s)
{
	struct waiter *w = s->waits;
	while (w != NULL) {
		struct waiter *next = w->s_next;
		wait_unlink(ops, w);
		wait_free(w);
		w = next;
	}
	s->waits = NULL;
}

/* ---- replication (udsync): REPL_WAIT, REPL_ACK, sync mode ---- */

/* Ops that write records (refused while sync mode is degraded/refuse). */
static int op_writes(uint16_t op)
{
	switch (op) {
	case MS_OP_USER_CREATE:
	case MS_OP_USER_DELETE:
	case MS_OP_MBOX_CREATE:
	case MS_OP_MBOX_RENAME:
	case MS_OP_MBOX_DELETE:
	case MS_OP_MBOX_SUBSCRIBE:
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
	case MS_OP_STORE:
	case MS_OP_EXPUNGE:
	case MS_OP_COPY:
	case MS_OP_MOVE:
	case MS_OP_UNDELETE:
	case MS_OP_QUOTA_SET:
	case MS_OP_COMPACT:
		return 1;
	default:
		return 0;
	}
}

static void repl_reply(struct ms_ops *ops, struct ms_conn *c, uint16_t op,
		       uint32_t id)
{
	struct ms_log_status ls;
	struct ms_reply rep = { .op = op };

	ms_log_get_status(ops->log, &ls);
	rep.u.repl.seg = ls.durable.seg;
	rep.u.repl.off = ls.durable.off;
	rep.u.repl.seq = ls.durable_seq;
	rep.u.repl.timeline = ls.timeline;
	reply_now(c, id, &rep);
}

static int op_repl_wait(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			const struct ms_req_repl_wait *q, const char **why_r)
{
	struct ms_log_status ls;
	struct ms_pos from = { q->seg, q->off };

	if (!ms_conn_is_admin(c)) {
		*why_r = "the replication feed is an admin operation";
		return -EACCES;
	}
	ms_log_get_status(ops->log, &ls);
	if (q->timeout_ms == 0 || ms_pos_cmp(ls.durable, from) > 0) {
		repl_reply(ops, c, MS_OP_REPL_WAIT, id);
		return 0;
	}
	struct repl_waiter *w = ms_calloc(1, sizeof(*w));
	w->conn = c;
	ms_conn_ref(c);
	w->id = id;
	w->from = from;
	w->deadline_ms = now_ms() + q->timeout_ms;
	w->next = ops->repl.waiters;
	ops->repl.waiters = w;
	return 0;
}

static void repl_send_held(struct req *r)
{
	ms_conn_send(r->conn, r->reply.data, r->reply.len);
	req_free(r);
}

/* Answer the held replies the DR ack covers (all: force). */
static void repl_release(struct ms_ops *ops, int force, int refuse)
{
	struct repl *rp = &ops->repl;
	struct req **pr = &rp->dr_wait;

	rp->dr_wait_tail = NULL;
	while (*pr != NULL) {
		struct req *r = *pr;
		if (!force && !(rp->have_ack && r->max_seq <= rp->dr_seq)) {
			rp->dr_wait_tail = r;
			pr = &r->next;
			continue;
		}
		*pr = r->next;
		rp->n_waiting--;
		if (refuse) {
			/* durable here, not confirmed there: a temporary
			   error, so the client retries (never a silent loss;
			   a retry may store the message twice) */
			ms_buf_reset(&r->reply);
			ms_proto_error(&r->reply, r->op, r->id, -EAGAIN,
				       "not confirmed by the DR site "
				       "(replication = sync); try again");
			rp->n_refused++;
		} else if (force) {
			rp->n_released_async++;
		}
		repl_send_held(r);
	}
}

static int op_repl_ack(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
		       const struct ms_req_repl_ack *q, const char **why_r)
{
	struct repl *rp = &ops->repl;
	struct ms_log_status ls;
	struct ms_pos dr = { q->seg, q->off };

	if (!ms_conn_is_admin(c)) {
		*why_r = "the replication ack is an admin operation";
		return -EACCES;
	}
	ms_log_get_status(ops->log, &ls);
	/* (seg + 1, 0) is how the DR site says "segment seg complete",
	   which may be past the durable end here: check the seq only */
	if (q->seq > ls.durable_seq) {
		*why_r = ms_errf("DR position %llu:%llu seq %llu is past the "
				 "durable end %llu:%llu seq %llu",
				 (unsigned long long)q->seg,
				 (unsigned long long)q->off,
				 (unsigned long long)q->seq,
				 (unsigned long long)ls.durable.seg,
				 (unsigned long long)ls.durable.off,
				 (unsigned long long)ls.durable_seq);
		return -EINVAL;
	}
	if (rp->dr_state != q->state || !rp->have_ack)
		msg_info("repl.state state=%s segment=%llu offset=%llu seq=%llu",
			 q->state == MS_REPL_STREAMING	 ? "streaming"
			 : q->state == MS_REPL_CATCHING_UP ? "catching_up"
							   : "disconnected",
			 (unsigned long long)q->seg, (unsigned long long)q->off,
			 (unsigned long long)q->seq);
	rp->have_ack = 1;
	rp->dr_pos = dr;
	rp->dr_seq = q->seq;
	rp->dr_state = q->state;
	rp->ack_ms = now_ms();
	if (rp->dr_seq >= ls.durable_seq)
		rp->behind_ms = 0;
	if (rp->degraded && rp->dr_seq >= ls.durable_seq &&
	    q->state != MS_REPL_DISCONNECTED) {
		rp->degraded = 0;
		msg_warn("repl.recovered mode=sync msg=\"the DR site has caught "
			 "up; sync replication is back on\"");
	}
	repl_release(ops, 0, 0);
	repl_reply(ops, c, MS_OP_REPL_ACK, id);
	return 0;
}

/* Sync mode and not degraded into async: replies wait for the DR ack. */
static int repl_holds(const struct ms_ops *ops)
{
	return ops->repl.sync && !ops->repl.degraded;
}

/* Sync mode, degraded, sync_fallback = refuse: writes are refused. */
static int repl_refuses(const struct ms_ops *ops)
{
	return ops->repl.sync && ops->repl.degraded &&
	       !ops->repl.fallback_async;
}

/* A reply is ready: hold it for the DR site?  1 if it was taken. */
static int repl_hold(struct ms_ops *ops, struct req *r)
{
	struct repl *rp = &ops->repl;

	if (!repl_holds(ops) || r->status != 0 || r->max_seq == 0 ||
	    (rp->have_ack && r->max_seq <= rp->dr_seq))
		return 0;
	r->next = NULL;
	r->dr_wait_ms = now_ms();
	if (rp->dr_wait_tail != NULL)
		rp->dr_wait_tail->next = r;
	else
		rp->dr_wait = r;
	rp->dr_wait_tail = r;
	rp->n_waiting++;
	return 1;
}

/* The durable end has reached seq at now: one entry per ms (the newest
   one's seq moves up within its ms), the oldest overwritten when full. */
static void repl_dur_note(struct repl *rp, uint64_t seq, uint64_t now)
{
	if (rp->dur_n > 0) {
		unsigned last = (rp->dur_head + rp->dur_n - 1) % REPL_DUR;
		if (seq <= rp->dur[last].seq)
			return;
		if (rp->dur[last].ms == now) {
			rp->dur[last].seq = seq;
			return;
		}
	}
	if (rp->dur_n == REPL_DUR) {
		rp->dur_head = (rp->dur_head + 1) % REPL_DUR;
		rp->dur_n--;
	}
	rp->dur[(rp->dur_head + rp->dur_n) % REPL_DUR] =
		(struct repl_dur){ seq, now };
	rp->dur_n++;
}

/*
 * Lag in time: how long ago the first record the DR site has not
 * acknowledged (seq dr_seq + 1) became durable here, i.e. the age of
 * the oldest unshipped write; 0 when the DR site has everything.  Under
 * a steady load this stays small when the DR site keeps up (unlike "since
 * when it was last fully caught up", which never comes under load).  The
 * entry that says so is the first with seq > dr_seq; when the ring no
 * longer reaches back that far, the time since the DR site was last
 * caught up (an upper bound) is used.
 */
static uint64_t repl_lag_ms(const struct repl *rp, uint64_t durable_seq,
			    uint64_t now)
{
	uint64_t dr = rp->have_ack ? rp->dr_seq : 0;
	if (dr >= durable_seq)
		return 0;
	if (rp->dur_n > 0 && rp->dur[rp->dur_head].seq <= dr) {
		/* binary search: the first entry with seq > dr */
		unsigned lo = 0, hi = rp->dur_n;
		while (lo < hi) {
			unsigned mid = lo + (hi - lo) / 2;
			if (rp->dur[(rp->dur_head + mid) % REPL_DUR].seq > dr)
				hi = mid;
			else
				lo = mid + 1;
		}
		if (lo < rp->dur_n) {
			uint64_t t = rp->dur[(rp->dur_head + lo) % REPL_DUR].ms;
			return now > t ? now - t : 0;
		}
	}
	return rp->behind_ms && now > rp->behind_ms ? now - rp->behind_ms : 0;
}

/* Each turn: wake REPL_WAITs, watch the DR site's lag and timeout. */
static void repl_tick(struct ms_ops *ops)
{
	struct repl *rp = &ops->repl;
	struct ms_pos durable;
	uint64_t now = now_ms(), durable_seq;

	ms_log_durable(ops->log, &durable, &durable_seq);
	for (struct repl_waiter **pw = &rp->waiters; *pw != NULL;) {
		struct repl_waiter *w = *pw;
		int closed = ms_conn_is_closed(w->conn);
		if (!closed && ms_pos_cmp(durable, w->from) <= 0 &&
		    now < w->deadline_ms) {
			pw = &w->next;
			continue;
		}
		*pw = w->next;
		if (!closed)
			repl_reply(ops, w->conn, MS_OP_REPL_WAIT, w->id);
		ms_conn_unref(&w->conn);
		free(w);
	}
	if (!rp->have_ack || rp->dr_seq < durable_seq) {
		if (rp->behind_ms == 0)
			rp->behind_ms = now;
	} else {
		rp->behind_ms = 0;
	}
	repl_dur_note(rp, durable_seq, now);
	/* no ack for a while: the sender (or its link) is gone */
	if (rp->have_ack && rp->dr_state != MS_REPL_DISCONNECTED &&
	    now - rp->ack_ms > 5000) {
		rp->dr_state = MS_REPL_DISCONNECTED;
		msg_warn("repl.state state=disconnected silent_ms=5000 "
			 "msg=\"no word from udsync\"");
	}
	if (!rp->sync || rp->degraded)
		return;
	int late = rp->dr_wait != NULL &&
		   now - rp->dr_wait->dr_wait_ms > rp->timeout_ms;
	if (!late)
		return;
	rp->degraded = 1;
	rp->n_timeouts++;
	if (rp->fallback_async) {
		msg_error("repl.degraded sync_timeout_ms=%llu fallback=async "
			  "msg=\"DEGRADED, falling back to async replication "
			  "until the DR site catches up\"",
			  (unsigned long long)rp->timeout_ms);
		repl_release(ops, 1, 0);
	} else {
		msg_error("repl.degraded sync_timeout_ms=%llu fallback=refuse "
			  "msg=\"DEGRADED, refusing writes with a temporary "
			  "error until the DR site catches up\"",
			  (unsigned long long)rp->timeout_ms);
		repl_release(ops, 1, 1);
	}
}

/* Bytes of log between the DR position and the durable end. */
static uint64_t repl_lag_bytes(struct ms_ops *ops,
			       const struct ms_log_status *ls)
{
	const struct repl *rp = &ops->repl;
	struct ms_pos dr = rp->have_ack ? rp->dr_pos : (struct ms_pos){ 0, 0 };
	uint64_t lag = 0;
	size_t n;
	const uint64_t *segs = ms_log_segments(ops->log, &n);

	if (ms_pos_cmp(dr, ls->durable) >= 0)
		return 0;
	if (dr.seg == ls->durable.seg)
		return ls->durable.off - dr.off;
	for (size_t i = 0; i < n; i++) {
		uint64_t size, alloc;
		if (segs[i] < dr.seg || segs[i] >= ls->durable.seg)
			continue;
		if (ms_log_seg_space(ops->log, segs[i], &size, &alloc) < 0)
			continue;
		lag += segs[i] == dr.seg && size > dr.off ? size - dr.off
							  : size;
	}
	return lag + ls->durable.off;
}

/* The repl.* counters of STATUS, into cs[0..]; returns how many. */
static size_t repl_counters(struct ms_ops *ops, struct ms_counter *cs)
{
	const struct repl *rp = &ops->repl;
	struct ms_log_status ls;
	uint64_t now = now_ms();
	size_t n = 0;

	ms_log_get_status(ops->log, &ls);
	repl_dur_note(&ops->repl, ls.durable_seq, now);
	/* state: 0 disconnected, 1 catching up, 2 streaming, 3 degraded */
	uint64_t state = rp->degraded	? 3
			 : rp->have_ack ? rp->dr_state
					: MS_REPL_DISCONNECTED;
	uint64_t lag_rec = rp->have_ack && rp->dr_seq < ls.durable_seq
				   ? ls.durable_seq - rp->dr_seq
				   : (rp->have_ack ? 0 : ls.durable_seq);
#define C(k, v) cs[n++] = (struct ms_counter){ MS_PSTR(k), (uint64_t)(v) }
	C("repl.sync", rp->sync);
	C("repl.standby", ops->standby);
	C("repl.fallback_async", rp->fallback_async);
	C("repl.state", state);
	C("repl.degraded", rp->degraded);
	C("repl.connected", rp->have_ack && rp->dr_state != MS_REPL_DISCONNECTED);
	C("repl.dr_seq", rp->dr_seq);
	C("repl.dr_segment", rp->dr_pos.seg);
	C("repl.dr_offset", rp->dr_pos.off);
	C("repl.lag_records", lag_rec);
	C("repl.lag_bytes", repl_lag_bytes(ops, &ls));
	C("repl.lag_ms", repl_lag_ms(rp, ls.durable_seq, now));
	C("repl.sync_waiting", rp->n_waiting);
	C("repl.sync_timeouts", rp->n_timeouts);
	C("repl.sync_refused", rp->n_refused);
	C("repl.sync_released_async", rp->n_released_async);
#undef C
	ms_assert(n == REPL_COUNTERS);
	return n;
}

static void repl_close(struct ms_ops *ops)
{
	struct repl *rp = &ops->repl;
	while (rp->waiters != NULL) {
		struct repl_waiter *w = rp->waiters;
		rp->waiters = w->next;
		ms_conn_unref(&w->conn);
		free(w);
	}
	while (rp->dr_wait != NULL) {
		struct req *r = rp->dr_wait;
		rp->dr_wait = r->next;
		req_free(r);
	}
	rp->dr_wait_tail = NULL;
}

void ms_ops_request(struct ms_ops *ops, struct ms_conn *c,
		    const struct ms_proto_hdr *h, const uint8_t *body,
		    size_t len)
{
	struct sess *s = sess_of(c);
	struct ms_req q;

	ops->turn_requests++;
	const char *why = "";
	int ret;

	/* a full map failed the write transaction, and with it what was
	   applied since the last commit: grow and replay before a read */
	if (ops->idx_full)
		idx_settle(ops, 1);

	ops->n_requests++;
	if (h->op < MS_OPS_MAX_OP)
		ops->n_op_requests[h->op]++;
	ret = ms_req_decode(h->op, body, len, &q, &why);
	if (ret < 0) {
		ops->n_errors++;
		if (h->op < MS_OPS_MAX_OP)
			ops->n_op_errors[h->op]++;
		reply_error(c, h->op, h->id,
			    ret == -EOPNOTSUPP	 ? -EOPNOTSUPP
			    : ret == MS_ETOOBIG ? MS_ETOOBIG
						 : -EINVAL,
			    why);
		return;
	}
	if (s->answered_ns != 0 || s->gather_gen != 0)
		gather_back(ops, s);
	if (!s->hello && q.op != MS_OP_HELLO) {
		ops->n_errors++;
		if (h->op < MS_OPS_MAX_OP)
			ops->n_op_errors[h->op]++;
		reply_error(c, h->op, h->id, -EACCES, "say hello first");
		return;
	}
	if (ops->standby && (op_writes(q.op) || q.op == MS_OP_REPL_ACK)) {
		ops->n_errors++;
		reply_error(c, h->op, h->id, -EROFS,
			    "standby: read-only until mstore promote");
		return;
	}
	if (op_writes(q.op) && repl_refuses(ops)) {
		ops->n_errors++;
		ops->repl.n_refused++;
		reply_error(c, h->op, h->id, -EAGAIN,
			    "the DR site is away (replication = sync): "
			    "writes are refused for now, try again later");
		return;
	}
	/* (MBOX_UPDATE is no write for a standby: one that changes nothing
	   reads the GUID; here it may as well be refused) */
	if ((op_writes(q.op) || q.op == MS_OP_MBOX_UPDATE) &&
	    !ms_conn_is_admin(c) && s->hello &&
	    user_dying(ops, s->user_id, &why) < 0) {
		/* the session's user: its records would be applied after
		   the user's delete */
		ops->n_errors++;
		if (h->op < MS_OPS_MAX_OP)
			ops->n_op_errors[h->op]++;
		reply_error(c, h->op, h->id, MS_ENOTFOUND,
			    "the session's user is being deleted");
		return;
	}
	switch (q.op) {
	case MS_OP_HELLO:
		ret = op_hello(ops, c, s, h->id, &q.u.hello, &why);
		break;
	case MS_OP_STATUS:
		ret = op_status(ops, c, h->id);
		break;
	case MS_OP_USER_CREATE:
		ret = op_user_create(ops, c, h->id, &q.u.user, &why);
		break;
	case MS_OP_USER_LIST:
		ret = op_user_list(ops, c, h->id, &q.u.list, &why);
		break;
	case MS_OP_MBOX_CREATE:
		ret = op_mbox_create(ops, c, s, h->id, &q.u.mbox, &why);
		break;
	case MS_OP_MBOX_LIST:
		ret = op_mbox_list(ops, c, s, h->id, &q.u.list, &why);
		break;
	case MS_OP_MBOX_SUBS:
		ret = op_mbox_subs(ops, c, s, h->id, &why);
		break;
	case MS_OP_MBOX_STATUS:
		ret = op_mbox_status(ops, c, s, h->id, &q.u.mbox, &why);
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
		ret = op_append(ops, c, s, q.op, h->id, &q.u.append, &why);
		break;
	case MS_OP_MBOX_UPDATE:
		ret = op_mbox_update(ops, c, s, h->id, &q.u.mbox_update, &why);
		break;
	case MS_OP_FETCH_META:
		ret = op_fetch_meta(ops, c, s, h->id, &q.u.uids, &why);
		break;
	case MS_OP_FETCH_BODY:
		ret = op_fetch_body(ops, c, s, h->id, &q.u.fetch_body, &why);
		break;
	case MS_OP_CHANGES:
		ret = op_changes(ops, c, s, h->id, &q.u.changes, &why);
		break;
	case MS_OP_STORE:
	case MS_OP_EXPUNGE:
		ret = op_store_expunge(ops, c, s, q.op, h->id, &q, &why);
		break;
	case MS_OP_MBOX_RENAME:
		ret = op_mbox_rename(ops, c, s, h->id, &q.u.mbox, &why);
		break;
	case MS_OP_MBOX_DELETE:
		ret = op_mbox_delete(ops, c, s, h->id, &q.u.mbox, &why);
		break;
	case MS_OP_MBOX_SUBSCRIBE:
		ret = op_mbox_subscribe(ops, c, s, h->id, &q.u.mbox, &why);
		break;
	case MS_OP_USER_DELETE:
		ret = op_user_delete(ops, c, h->id, &q.u.user, &why);
		break;
	case MS_OP_QUOTA_GET:
	case MS_OP_QUOTA_SET:
		ret = op_quota(ops, c, s, q.op, h->id, &q.u.quota, &why);
		break;
	case MS_OP_COPY:
	case MS_OP_MOVE:
		ret = op_copy_move(ops, c, s, q.op, h->id, &q.u.uids, &why);
		break;
	case MS_OP_WAIT:
		ret = op_wait(ops, c, s, h->id, &q.u.wait, &why);
		break;
	case MS_OP_USER_WATCH:
		ret = op_user_watch(ops, c, s, h->id, &why);
		break;
	case MS_OP_UNDELETE:
		ret = op_undelete(ops, c, s, h->id, &q.u.undelete, &why);
		break;
	case MS_OP_COMPACT:
		ret = op_compact(ops, c, h->id, &q.u.compact, &why);
		break;
	case MS_OP_REPL_WAIT:
		ret = op_repl_wait(ops, c, h->id, &q.u.repl_wait, &why);
		break;
	case MS_OP_REPL_ACK:
		ret = op_repl_ack(ops, c, h->id, &q.u.repl_ack, &why);
		break;
	case MS_OP_PROMOTE:
		ret = op_promote(ops, c, h->id, &why);
		break;
	case MS_OP_FORK_INFO:
		ret = op_fork_info(ops, c, h->id, &q.u.fork_info, &why);
		break;
	case MS_OP_LMTP_STATS:
		ret = op_lmtp_stats(ops, c, h->id, &q.u.lmtp_stats, &why);
		break;
	default:
		ret = -EOPNOTSUPP;
		why = "unknown operation";
		break;
	}
	if (ret < 0) {
		ops->n_errors++;
		if (h->op < MS_OPS_MAX_OP)
			ops->n_op_errors[h->op]++;
		reply_error(c, h->op, h->id, ret,
			    why[0] ? why : ms_strerror(ret));
	}
}

/* ---- the loop's turn ---- */

/*
 * The online scrub: scrub_rate bytes per second of records, each read
 * on both copies and healed from the good one (a read that finds the
 * primary good never looks at the secondary, so this is what finds
 * damage there).  Its reads are synchronous, in the loop's thread, so
 * it goes in steps of SCRUB_STEP (about 0.1-0.3 ms each) from a token
 * bucket, in turns that served no request (the loop is woken for them),
 * and in busy turns only when more than a second of the rate is owed:
 * a step never waits behind a request, and under a steady load the
 * rate is still kept.  At most 2 s of the rate is owed.
 */
#define SCRUB_STEP (64u << 10)

/* Have the loop turn when the bucket holds a step again. */
static void scrub_wake(struct ms_ops *ops)
{
	int64_t need = (int64_t)SCRUB_STEP - ops->scrub_tokens;
	if (ops->srv == NULL)
		return;
	if (need < 0)
		need = 0;
	ms_srv_wake_in(ops->srv,
		       (unsigned)((uint64_t)need * 1000 / ops->scrub_rate) + 1);
}

static void scrub_tick(struct ms_ops *ops, int busy)
{
	if (ops->scrub_rate == 0)
		return;
	uint64_t now = now_us();
	int64_t rate = (int64_t)ops->scrub_rate; /* <= 16G: fits */
	int64_t cap = 2 * rate < (int64_t)SCRUB_STEP ? (int64_t)SCRUB_STEP
						      : 2 * rate;
	if (ops->scrub_last_us == 0)
		ops->scrub_last_us = now;
	/* more than the cap's 2 s never counts (nor overflows) */
	uint64_t elapsed = now - ops->scrub_last_us;
	if (elapsed > 2000000)
		elapsed = 2000000;
	int64_t add = (int64_t)(elapsed * ops->scrub_rate / 1000000);
	if (add > 0) {
		ops->scrub_tokens = ops->scrub_tokens + add > cap
					    ? cap
					    : ops->scrub_tokens + add;
		ops->scrub_last_us = now;
	}
	if (ops->scrub_tokens < (int64_t)SCRUB_STEP ||
	    (busy && ops->scrub_tokens < rate)) {
		scrub_wake(ops);
		return;
	}
	/* a step reads whole records: at least SCRUB_STEP bytes' worth,
	   or one record larger than that; what it read is paid for */
	uint64_t before = ops->scrub.bytes;
	const char *err = "";
	int ret = ms_log_scrub_step(ops->log, &ops->scrub_pos, SCRUB_STEP,
				    &ops->scrub, &err);
	ops->scrub_tokens -= (int64_t)(ops->scrub.bytes - before);
	if (ops->scrub.bytes == before)
		ops->scrub_tokens -= SCRUB_STEP; /* nothing to read yet */
	scrub_wake(ops);
	if (ret < 0)
		msg_error("scrub.failed error=%s", msg_q(err));
	else if (ret == 1)
		ops->scrub_passes++;
}

/* The commit of the write transaction is due: the turn's end does it. */
static void idx_timer(void *arg)
{
	struct ms_ops *ops = arg;
	uint64_t n;
	while (read(ops->idx_tfd, &n, sizeof(n)) == sizeof(n))
		;
	ops->idx_armed = 0;
}

/* The loop wakes at due (CLOCK_MONOTONIC ns); -1: no timer for it. */
static int idx_timer_arm(struct ms_ops *ops, uint64_t due)
{
	if (ops->idx_armed == due)
		return 0;
	struct itimerspec its = { { 0, 0 },
				  { (time_t)(due / 1000000000ULL),
				    (long)(due % 1000000000ULL) } };
	if (ops->idx_tfd < 0 ||
	    timerfd_settime(ops->idx_tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -1;
	ops->idx_armed = due;
	return 0;
}

/*
 * Commit what was applied, once the write transaction is IDX_COMMIT_NS
 * old or holds IDX_COMMIT_RECORDS records, or when force says so; grow
 * the map and replay when it is full.  Readers see the open transaction
 * (ms_idx_read_begin), so a reply need not wait for a commit: the log is
 * what makes it durable, and a restart replays the log's tail past the
 * last commit.  Committing every turn wrote the same B-tree pages again
 * and again: at 64 appending clients, about 4 page writes per APPEND.
 */
static void idx_settle(struct ms_ops *ops, int force)
{
	if (ops->txn != NULL && !ops->idx_full && !force &&
	    ops->txn_records < IDX_COMMIT_RECORDS) {
		uint64_t due = ops->txn_began + IDX_COMMIT_NS;
		/* not due, and the loop will wake for it: later */
		if (now_ns() < due && idx_timer_arm(ops, due) == 0)
			return;
	}
	if (ops->txn != NULL && !ops->idx_full) {
		int ret = ms_idx_commit(&ops->txn);
		if (ret == MS_ETOOBIG)
			ops->idx_full = 1;
		else if (ret < 0)
			msg_fatal("index.commit_failed error=%s msg=\"exiting; the "
				  "restart replays the log\"",
				  msg_q(ms_strerror(ret)));
	}
	if (ops->idx_full) {
		const char *err = "";
		if (ops->txn != NULL)
			ms_idx_abort(&ops->txn);
		int ret = ms_idx_grow(ops->idx, 0);
		if (ret == 0)
			ret = ms_idx_catch_up(ops->idx, ops->log, &err);
		if (ret < 0)
			msg_fatal("index.grow_failed error=%s detail=%s",
				  msg_q(ms_strerror(ret)), msg_q(err));
		msg_info("index.grown msg=\"the log's tail was replayed\"");
		ops->idx_full = 0;
	}
}

/*
 * ---- group commit gather ----
 *
 * The log flushes one batch at a time and the next flush takes whatever
 * was queued meanwhile.  Clients that wait for their reply before they
 * write again (a Dovecot process, an LMTP session, a closed loop) then
 * split into cohorts: the clients a flush answers need a round trip to
 * send their next write, the next flush has already started without
 * them, and each flush carries a part of them (at 64 such clients,
 * about 32 records of 64).  So when a flush has answered clients that
 * are expected back (they have nothing else in flight, and came back
 * within the gather the last time), the next flush waits until they have
 * all sent a request, or until the deadline: group_commit_wait_us, and
 * never more than half the recent flush time (a fast disk gets a short
 * gather).  It waits only with records queued and expected clients
 * missing: an idle store, a lone client (its own request ends the
 * gather) and a flush that answered nobody start at once.  A client
 * that let a gather run out is not waited for again until it comes back
 * within one.
 */
static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void gather_timer(void *arg)
{
	struct ms_ops *ops = arg;
	uint64_t n;
	/* the loop's turn ends with ms_ops_tick, which decides */
	while (read(ops->gather.tfd, &n, sizeof(n)) == sizeof(n))
		;
	ops->gather.armed = 0;
}

/* How long a gather may hold a flush. */
static uint64_t gather_wait(const struct ms_ops *ops)
{
	uint64_t wait = ops->gather.flush_ns / 2;
	return wait < ops->gather.max_ns ? wait : ops->gather.max_ns;
}

/* A request of s came (or s went): it is back. */
static void gather_back(struct ms_ops *ops, struct sess *s)
{
	if (s->answered_ns != 0) {
		/* came back within a gather's time: worth waiting for */
		s->slow = now_ns() - s->answered_ns > gather_wait(ops);
		s->answered_ns = 0;
	}
	if (s->gather_gen != 0 && s->gather_gen == ops->gather.gen &&
	    ops->gather.out > 0)
		ops->gather.out--;
	s->gather_gen = 0;
}

/* A flush completed: whom the next one waits for.  Before the replies
   of the ready list go out. */
static void gather_mark(struct ms_ops *ops)
{
	uint64_t now = now_ns(), last = ms_log_last_flush_ns(ops->log);

	if (last != 0)
		ops->gather.flush_ns = ops->gather.flush_ns == 0
					       ? last
					       : (ops->gather.flush_ns * 7 +
						  last) / 8;
	ops->gather.gen++;
	ops->gather.out = 0;
	/* sync replication holds the replies for the DR site */
	if (ops->gather.max_ns == 0 || ops->gather.tfd < 0 ||
	    repl_holds(ops))
		return;
	ops->gather.deadline = now + gather_wait(ops);
	for (struct req *r = ops->ready; r != NULL; r = r->next) {
		struct sess *s = ms_conn_data(r->conn);
		if (!r->wrote || r->status != 0 || s == NULL ||
		    ms_conn_is_closed(r->conn) || s->writes > 0)
			continue;
		s->answered_ns = now;
		if (s->slow || s->gather_gen == ops->gather.gen)
			continue;
		s->gather_gen = ops->gather.gen;
		ops->gather.out++;
	}
}

static void gather_end(struct ms_ops *ops, uint64_t now)
{
	if (ops->gather.since != 0) {
		ops->gather.held_ns += now - ops->gather.since;
		ops->gather.since = 0;
	}
}

/* Hold the next flush back now?  Sets the timer for the deadline. */
static int gather_hold(struct ms_ops *ops)
{
	if (ops->gather.out == 0 || !ms_log_waiting(ops->log)) {
		if (ops->gather.since != 0)
			gather_end(ops, now_ns());
		return 0;
	}
	uint64_t now = now_ns();
	if (now >= ops->gather.deadline) {
		ops->gather.n_timeouts++;
		ops->gather.out = 0;
		gather_end(ops, now);
		return 0;
	}
	if (ops->gather.since == 0) {
		ops->gather.since = now;
		ops->gather.n_holds++;
	}
	if (ops->gather.armed != ops->gather.deadline) {
		struct itimerspec its = { { 0, 0 },
					  { (time_t)(ops->gather.deadline /
						     1000000000ULL),
					    (long)(ops->gather.deadline %
						   1000000000ULL) } };
		if (timerfd_settime(ops->gather.tfd, TFD_TIMER_ABSTIME, &its,
				    NULL) < 0) {
			/* without a timer the hold could last: no gather */
			msg_warn("gather.off error=%s msg=\"no timerfd: not "
				 "waiting\"",
				 msg_q(strerror(errno)));
			ops->gather.max_ns = 0;
			ops->gather.out = 0;
			gather_end(ops, now);
			return 0;
		}
		ops->gather.armed = ops->gather.deadline;
	}
	return 1;
}

/* A settled request's reply (its error if a record failed) goes out,
   or waits for the DR site (replication = sync). */
static void reply_settled(struct ms_ops *ops, struct req *r)
{
	if (r->status != 0) {
		if (r->op < MS_OPS_MAX_OP)
			ops->n_op_errors[r->op]++;
		ms_buf_reset(&r->reply);
		ms_proto_error(&r->reply, r->op, r->id, r->status,
			       r->status == MS_ENOCOPY
				       ? "store unavailable: no writable copy "
					 "of the log"
				       : ms_strerror(r->status));
	}
	if (repl_hold(ops, r))
		return;
	ms_conn_send(r->conn, r->reply.data, r->reply.len);
	req_free(r);
}

uint64_t ms_ops_file_epoch(struct ms_ops *ops)
{
	return ms_log_file_epoch(ops->log);
}

void ms_ops_tick(struct ms_ops *ops)
{
	/* start the flush of what this turn queued, unless the gather holds
	   it; with psync that is the whole write, so reap it too */
	for (int i = 0; i < 8; i++) {
		uint64_t before = ops->completions;
		int more = ms_log_reap(ops->log, 0);
		if (ops->completions != before)
			gather_mark(ops);
		if (more > 0 && !gather_hold(ops))
			more = ms_log_kick(ops->log);
		if (more <= 0 || (i > 0 && ops->completions == before))
			break;
	}
	/*
	 * The watches before the replies (see USER_WATCH): a watch's frame
	 * is sent at once, except to a session with a reply in this turn,
	 * whose frame goes out in one write with that reply (the client
	 * wakes once, not twice: measured on the APPEND row of bench-imap).
	 * Such a client has a request in flight, and the Dovecot plugin
	 * takes no count from its watch until it has read every reply it
	 * waits for, which come behind the frame; every other client has
	 * its frame before anyone has a reply.
	 */
	if (ops->uwake != NULL) {
		mark_reply_due(ops, 1);
		uwake_send(ops);
		mark_reply_due(ops, 0);
	}
	/* the replies go out before the index takes the records that made
	   them durable (ms_log_defer_apply): a client reads the index only
	   with a later request, which this turn's end has applied for */
	struct req *late = NULL, **late_tail = &late;
	while (ops->ready != NULL) {
		struct req *r = ops->ready;
		ops->ready = r->next;
		if (ops->ready == NULL)
			ops->ready_tail = NULL;
		r->next = NULL;
		if (r->after_apply) {
			*late_tail = r;
			late_tail = &r->next;
		} else {
			reply_settled(ops, r);
		}
	}
	ms_log_apply_pending(ops->log);
	while (late != NULL) {
		struct req *r = late;
		late = r->next;
		r->next = NULL;
		reply_settled(ops, r);
	}
	/* the frames of watches whose replies the DR site holds */
	if (ops->srv != NULL)
		ms_srv_flush_held(ops->srv);
	idx_settle(ops, 0);
	/* WAITs only: a USER_WATCH is answered by uwake_send, and has no
	   deadline */
	if (ops->nwaiters > ops->nwatches)
		wake_waiters(ops);
	ops->ntouched = 0;
	repl_tick(ops);
	scrub_tick(ops, ops->turn_requests > 0);
	ops->turn_requests = 0;
	compact_tick(ops);
	if (ms_log_dead(ops->log) && !ops->dead_reported) {
		ops->dead_reported = 1;
		msg_error("log.no_writable_copy msg=\"every write is refused "
			  "until mstored is restarted on a repaired store\"");
	}
}

void ms_ops_log_ready(struct ms_ops *ops)
{
	ms_ops_tick(ops);
}

int ms_ops_event_fd(struct ms_ops *ops)
{
	return ms_log_event_fd(ops->log);
}

const char *ms_ops_index_dir(struct ms_ops *ops)
{
	return ops->idx_dir;
}

/* A timerfd that the loop watches (fn reads it), in *fd_r unless set
   already; without one, the warning event and what it costs in msg. */
static void ops_timer(struct ms_ops *ops, int *fd_r, void (*fn)(void *),
		      const char *event, const char *msg)
{
	if (*fd_r >= 0)
		return;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (fd < 0 || ms_srv_watch(ops->srv, fd, fn, ops) < 0) {
		msg_warn("%s error=%s msg=%s", event, msg_q(strerror(errno)),
			 msg_q(msg));
		if (fd >= 0)
			close(fd);
		return;
	}
	*fd_r = fd;
}

void ms_ops_set_srv(struct ms_ops *ops, struct ms_srv *srv)
{
	ops->srv = srv;
	ops_timer(ops, &ops->gather.tfd, gather_timer, "gather.off",
		  "no timer: flushes will not wait for clients");
	/* without it every turn commits (idx_settle) */
	ops_timer(ops, &ops->idx_tfd, idx_timer, "index.commit_timer_off",
		  "no timer: the index commits every turn");
}

/* Half the frame limit: the store's own ([store] max_frame), and never
   more than the protocol's default, which every client reads. */
static uint64_t reply_max(uint64_t max_frame)
{
	if (max_frame > MS_PROTO_MAX_FRAME_DEFAULT)
		max_frame = MS_PROTO_MAX_FRAME_DEFAULT;
	return max_frame / 2;
}

void ms_ops_reload(struct ms_ops *ops, const struct ms_store_cfg *cfg)
{
	ops->scrub_rate = cfg->scrub_rate;
	ops->gather.max_ns = cfg->group_commit_wait_us * 1000;
	struct peers np;
	const char *perr = "";
	if (peers_parse(cfg->user_socket_peers, &np, &perr) < 0) {
		msg_warn("reload.failed key=user_socket_peers error=%s "
			 "msg=\"keeping the peers of before\"",
			 msg_q(perr));
	} else {
		peers_free(&ops->peers);
		ops->peers = np;
	}
	ops->undelete_window_s = cfg->undelete_window / 1000;
	ops->max_mailboxes = cfg->max_mailboxes;
	ops->reply_max = reply_max(cfg->max_frame);
	ops->compact_threshold = cfg->compact_threshold;
	ops->compact_interval_ms = cfg->compact_interval;
	ops->repl.sync = cfg->replication == MS_REPL_SYNC;
	ops->repl.fallback_async = cfg->sync_fallback == MS_FALLBACK_ASYNC;
	ops->repl.timeout_ms = cfg->sync_timeout;
	if (!ops->repl.sync)
		repl_release(ops, 1, 0);
}

void ms_ops_drain(struct ms_ops *ops)
{
	ms_log_sync(ops->log);
	ms_ops_tick(ops);
}

/* ---- open, close ---- */

static int init_ids(struct ms_ops *ops, const char **error_r)
{
	struct ms_idx_rd *rd;
	struct ms_idx_iter *uit, *mit;
	struct ms_idx_user u;
	struct ms_idx_mbox m;
	int ret = ms_idx_read_begin(ops->idx, &rd);
	if (ret < 0) {
		*error_r = "index read failed";
		return ret;
	}
	ops->next_user_id = 1;
	ops->next_mbox_id = 1;
	ret = ms_idx_users_iter(rd, &uit);
	while (ret == 0 && (ret = ms_idx_users_next(uit, &u)) > 0) {
		if (u.id >= ops->next_user_id)
			ops->next_user_id = u.id + 1;
		if ((ret = ms_idx_mboxes_iter(rd, u.id, &mit)) < 0)
			break;
		while ((ret = ms_idx_mboxes_next(mit, &m)) > 0) {
			if (m.id >= ops->next_mbox_id)
				ops->next_mbox_id = m.id + 1;
			if (m.uidvalidity > ops->last_uidvalidity)
				ops->last_uidvalidity = m.uidvalidity;
		}
		ms_idx_iter_free(&mit);
	}
	ms_idx_iter_free(&uit);
	ms_idx_read_end(&rd);
	if (ret < 0)
		*error_r = "index scan failed";
	/* ids of deleted users and mailboxes are never given again: the
	   log's record count bounds every id given so far */
	struct ms_log_status st;
	ms_log_get_status(ops->log, &st);
	if (ops->next_user_id < st.next_seq)
		ops->next_user_id = st.next_seq;
	if (ops->next_mbox_id < st.next_seq)
		ops->next_mbox_id = st.next_seq;
	return ret < 0 ? ret : 0;
}

/*
 * At the start, before any record is counted: the counts a clean stop
 * wrote, if the log is as that stop left it (the same store, timeline
 * and last record: nothing since, by this daemon, a tool or udsync) and
 * the file is where it was written (not a copy of the directory); else
 * a new epoch.  The file goes either way: once this process counts
 * a record the log has moved past it, and a stale file is only refused
 * again.  (The checks and the gap below, not the removal, are what keep
 * a count from meaning two states: every new count comes with a new
 * record, past any count given before the file was copied.)
 */
static void chg_restore(struct ms_ops *ops)
{
	const struct ms_meta *meta = ms_log_meta(ops->log);
	struct ms_log_status ls;
	struct ms_chgsnap snap;
	struct ms_u64map users = { 0 }, mboxes = { 0 };
	const char *err = "", *stale = NULL;
	int dirfd, ret;

	ms_log_get_status(ops->log, &ls);
	ops->chg_noted = ls.durable_seq;
	/* a new epoch, unless the file gives the old one back */
	do
		randombytes_buf(&ops->chg_epoch, sizeof(ops->chg_epoch));
	while (ops->chg_epoch == 0);
	dirfd = open(ops->idx_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		msg_warn("changes.unreadable dir=%s error=%s",
			 msg_q(ops->idx_dir), msg_q(strerror(errno)));
		return;
	}
	ret = ms_chgsnap_read(dirfd, &snap, &users, &mboxes, &err);
	if (ret < 0) {
		msg_warn("changes.unreadable dir=%s error=%s msg=\"a new "
			 "epoch: clients ask once\"",
			 msg_q(ops->idx_dir), msg_q(err));
	} else if (ret > 0) {
		if (memcmp(snap.store_id, meta->store_id, 16) != 0)
			stale = "another store";
		else if (!ms_chgsnap_in(dirfd, &snap))
			stale = "written in another directory";
		else if (snap.timeline != ls.timeline)
			stale = "another timeline";
		else if (snap.seq != ls.durable_seq)
			stale = "the log moved";
		else if (snap.chg_seq > CHG_SEQ_RESTORE_MAX)
			stale = "its counts are used up";
	}
	if (ret > 0 && stale == NULL) {
		ops->chg_epoch = snap.epoch;
		ops->chg_floor = snap.chg_floor;
		ops->chg_users = users;
		ops->chg_mboxes = mboxes;
		/*
		 * The counts given from here on start past a random gap.
		 * A store put back in place from a copy of its files (the
		 * same directories; the log, the index and this file as a
		 * clean stop left them) passes every check above, and the
		 * counts given after the copy was made, before it was put
		 * back, were given to states the log no longer has: counting
		 * on from the file's largest would give them again to other
		 * states.  A user unchanged since keeps its count.
		 */
		uint64_t gap;
		randombytes_buf(&gap, sizeof(gap));
		ops->chg_seq = snap.chg_seq + CHG_SEQ_GAP_MIN +
			       gap % CHG_SEQ_GAP_MIN;
		msg_info("changes.restored users=%zu mailboxes=%zu seq=%llu",
			 ops->chg_users.n, ops->chg_mboxes.n,
			 (unsigned long long)snap.seq);
	} else {
		ms_u64map_free(&users);
		ms_u64map_free(&mboxes);
		if (stale != NULL)
			msg_info("changes.stale reason=%s file_seq=%llu "
				 "log_seq=%llu msg=\"a new epoch\"",
				 msg_q(stale), (unsigned long long)snap.seq,
				 (unsigned long long)ls.durable_seq);
	}
	if (ret != 0 && unlinkat(dirfd, MS_CHGSNAP_NAME, 0) < 0 &&
	    errno != ENOENT)
		msg_warn("changes.unlink_failed dir=%s error=%s",
			 msg_q(ops->idx_dir), msg_q(strerror(errno)));
	close(dirfd);
}

/* At a clean stop, with the log settled: the counts for the next start
   (chg_restore).  A failure costs the clients a question each. */
static void chg_save(struct ms_ops *ops)
{
	const struct ms_meta *meta = ms_log_meta(ops->log);
	struct ms_log_status ls;
	struct ms_chgsnap snap = { .seq = ops->chg_noted,
				   .epoch = ops->chg_epoch,
				   .chg_seq = ops->chg_seq,
				   .chg_floor = ops->chg_floor };
	const char *err = "";
	int dirfd, ret;

	if (ops->chg_epoch == 0)
		return; /* the open failed before chg_restore */
	ms_log_get_status(ops->log, &ls);
	memcpy(snap.store_id, meta->store_id, 16);
	snap.timeline = ls.timeline;
	dirfd = open(ops->idx_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		ret = -errno;
		err = ms_errf("open: %s", strerror(errno));
	} else {
		ret = ms_chgsnap_write(dirfd, &snap, &ops->chg_users,
				       &ops->chg_mboxes, &err);
		close(dirfd);
	}
	if (ret < 0)
		msg_warn("changes.save_failed dir=%s error=%s msg=\"the next "
			 "start draws a new epoch\"",
			 msg_q(ops->idx_dir), msg_q(err));
}

/* standby: read-only (mstored --standby); replica_ok: a DR replica may
   be opened read-write (promote --offline); else it is refused */
static int ops_open(const struct ms_store_cfg *cfg, int standby,
		    int replica_ok, struct ms_ops **ops_r,
		    const char **error_r)
{
	struct ms_ops *ops = ms_calloc(1, sizeof(*ops));
	ops->gather.tfd = -1;
	ops->idx_tfd = -1;
	ms_buf_init(&ops->rd_payload, MS_REC_MAX_PAYLOAD);
	struct ms_log_cfg lc;
	uint8_t key[32];
	int ret;

	ms_store_cfg_to_log(cfg, &lc);
	lc.create = !standby;
	lc.readonly = standby;
	lc.follow = standby; /* udsync recv writes the store meanwhile */
	ops->standby = standby;
	lc.replica_ok = replica_ok;
	ops->lcfg = lc;
	ops->lcfg.readonly = 0;
	ops->lcfg.create = 0;
	ops->lcfg.replica_ok = 1; /* for ms_ops_promote only */
	if ((ret = ms_log_open(&lc, &ops->log, error_r)) < 0)
		goto fail;
	const struct ms_meta *meta = ms_log_meta(ops->log);
	if (cfg->key_file != NULL &&
	    (ret = ms_body_key_load(cfg->key_file, key, error_r)) < 0)
		goto fail;
	ms_body_ctx_init(&ops->bctx, meta->store_id, meta->salt,
			 cfg->key_file ? key : NULL, cfg->compress);
	sodium_memzero(key, sizeof(key));

	if (cfg->index != NULL) {
		ops->idx_dir = ms_strdup(cfg->index);
	} else {
		size_t n = strlen(cfg->primary) + 8;
		ops->idx_dir = ms_malloc(n);
		snprintf(ops->idx_dir, n, "%s/index", cfg->primary);
	}
	ops->map_size = cfg->index_map_size;
	/* where the index stood: RETIREs after it may have been cut off
	   before their rewrite reached every copy */
	struct ms_pos from = { 0, 0 };
	ret = ms_idx_open(ops->idx_dir, ops->map_size, &ops->idx, error_r);
	if (ret == 0) {
		uint64_t s0;
		if (ms_idx_applied(ops->idx, &s0, &from) < 0)
			from = (struct ms_pos){ 0, 0 };
	}
	if (ret == 0) {
		/* an index ahead of the log (a log restored from a copy, a
		   cut tail) describes records that do not exist: rebuild */
		struct ms_log_status ls;
		struct ms_pos ipos;
		uint64_t iseq = 0;
		ms_log_get_status(ops->log, &ls);
		if (ms_idx_applied(ops->idx, &iseq, &ipos) == 0 &&
		    iseq > ls.durable_seq) {
			*error_r = ms_errf("index has applied seq %llu but the "
					   "log ends at %llu",
					   (unsigned long long)iseq,
					   (unsigned long long)ls.durable_seq);
			ret = MS_ECORRUPT;
		} else {
			ret = ms_idx_catch_up(ops->idx, ops->log, error_r);
		}
		if (ret < 0)
			ms_idx_close(&ops->idx);
	}
	if (ret < 0) {
		msg_warn("index.rebuild dir=%s reason=%s",
			 msg_q(ops->idx_dir), msg_q(*error_r));
		if ((ret = ms_idx_rebuild(ops->idx_dir, ops->map_size,
					  ops->log, error_r)) < 0 ||
		    (ret = ms_idx_open(ops->idx_dir, ops->map_size, &ops->idx,
				       error_r)) < 0)
			goto fail;
		msg_info("index.rebuilt");
	}
	if ((ret = init_ids(ops, error_r)) < 0)
		goto fail;
	if (!standby && (ret = finish_retires(ops, from, error_r)) < 0)
		goto fail;
	chg_restore(ops);
	ms_log_set_notice_hook(ops->log, note_record, ops);
	ms_log_set_apply_hook(ops->log, apply_record, ops);
	ms_log_defer_apply(ops->log, 1);
	/* names that do not resolve stop the start (a reload keeps the
	   old list) */
	if ((ret = peers_parse(cfg->user_socket_peers, &ops->peers,
			       error_r)) < 0)
		goto fail;
	ms_ops_reload(ops, cfg);
	*ops_r = ops;
	return 0;
fail:
	ms_ops_close(&ops);
	return ret;
}

int ms_ops_open(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
		const char **error_r)
{
	return ops_open(cfg, 0, 0, ops_r, error_r);
}

int ms_ops_open_promote(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
			const char **error_r)
{
	return ops_open(cfg, 0, 1, ops_r, error_r);
}

void ms_ops_close(struct ms_ops **opsp)
{
	struct ms_ops *ops = *opsp;
	if (ops == NULL)
		return;
	/* settle the log first: what completes is applied and committed */
	if (ops->log != NULL && ops->idx != NULL) {
		ms_log_sync(ops->log);
		if (ops->txn != NULL && ms_idx_commit(&ops->txn) < 0)
			msg_error("index.commit_failed at=close msg=\"the next "
				  "start replays the log\"");
		chg_save(ops);
	}
	if (ops->txn != NULL)
		ms_idx_abort(&ops->txn);
	if (ops->log != NULL)
		ms_log_set_apply_hook(ops->log, NULL, NULL);
	repl_close(ops);
	while (ops->inflight != NULL) {
		struct req *r = ops->inflight;
		ops->inflight = r->next;
		req_free(r);
	}
	while (ops->ready != NULL) {
		struct req *r = ops->ready;
		ops->ready = r->next;
		req_free(r);
	}
	mstate_clear(ops);
	MS_U64MAP_EACH(&ops->waits, k) {
		struct waiter *w = ops->waits.vals[k];
		while (w != NULL) {
			struct waiter *next = w->next;
			wait_free(w);
			w = next;
		}
	}
	ms_u64map_free(&ops->waits);
	ops->uwake = NULL; /* parked ones, freed with the map's */
	ms_u64map_free(&ops->chg_users);
	ms_u64map_free(&ops->chg_mboxes);
	free(ops->chg_recs);
	free(ops->touched);
	free(ops->dying);
	MS_U64MAP_EACH(&ops->upend, i) {
		free(ops->upend.vals[i]);
	}
	ms_u64map_free(&ops->upend);
	MS_U64MAP_EACH(&ops->mpend, i) {
		free(ops->mpend.vals[i]);
	}
	ms_u64map_free(&ops->mpend);
	MS_U64MAP_EACH(&ops->udel, i) {
		free(ops->udel.vals[i]);
	}
	ms_u64map_free(&ops->udel);
	for (size_t i = 0; i < ops->pend_users.n; i++)
		free(ops->pend_users.v[i]);
	for (size_t i = 0; i < ops->pend_mboxes.n; i++)
		free(ops->pend_mboxes.v[i]);
	for (size_t i = 0; i < ops->pend_renames.n; i++)
		free(ops->pend_renames.v[i]);
	free(ops->pend_users.v);
	free(ops->pend_mboxes.v);
	free(ops->pend_renames.v);
	if (ops->idx != NULL) {
		ms_idx_sync(ops->idx);
		ms_idx_close(&ops->idx);
	}
	ms_log_close(&ops->log);
	ms_body_ctx_wipe(&ops->bctx);
	if (ops->gather.tfd >= 0)
		close(ops->gather.tfd);
	if (ops->idx_tfd >= 0)
		close(ops->idx_tfd);
	peers_free(&ops->peers);
	ms_buf_free(&ops->rd_payload);
	free(ops->idx_dir);
	free(ops);
	*opsp = NULL;
}

/* ---- for the system API (sysapi.c) ---- */

struct ms_log *ms_ops_log(struct ms_ops *ops)
{
	return ops->log;
}

struct ms_idx *ms_ops_idx(struct ms_ops *ops)
{
	return ops->idx;
}

void ms_ops_op_counts(const struct ms_ops *ops, uint16_t op,
		      uint64_t *requests_r, uint64_t *errors_r)
{
	*requests_r = op < MS_OPS_MAX_OP ? ops->n_op_requests[op] : 0;
	*errors_r = op < MS_OPS_MAX_OP ? ops->n_op_errors[op] : 0;
}

/* ---- mstore-lmtpd's replies (LMTP_STATS) ----
 *
 * Each mstore-lmtpd pushes its reply counts since it started, by code,
 * with its own instance id.  A push replaces what that instance said
 * before (so a reconnect neither loses nor doubles anything); the sum
 * over instances is what /metrics shows, a counter that never goes
 * down: an instance that is gone (restarted: a new id) stays counted,
 * and when more than LMTP_INSTANCES have spoken the one heard from
 * least recently is folded into lmtp_gone.
 */
static int op_lmtp_stats(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			 const struct ms_req_lmtp_stats *q,
			 const char **why_r)
{
	struct lmtp_inst *in = NULL;

	if (!ms_conn_is_admin(c)) {
		*why_r = "LMTP_STATS is for mstore-lmtpd (admin socket)";
		return -EACCES;
	}
	for (size_t i = 0; i < ops->nlmtp; i++)
		if (ops->lmtp[i].instance == q->instance)
			in = &ops->lmtp[i];
	if (in == NULL && ops->nlmtp < LMTP_INSTANCES) {
		in = &ops->lmtp[ops->nlmtp++];
		memset(in, 0, sizeof(*in));
	} else if (in == NULL) {
		in = &ops->lmtp[0];
		for (size_t i = 1; i < ops->nlmtp; i++)
			if (ops->lmtp[i].seen_ms < in->seen_ms)
				in = &ops->lmtp[i];
		for (size_t k = 0; k < LMTP_CODES; k++)
			ops->lmtp_gone[k] += in->by_code[k];
		memset(in, 0, sizeof(*in));
	}
	in->instance = q->instance;
	in->seen_ms = now_ms();
	for (uint16_t i = 0; i < q->n; i++) {
		/* the codec checked 200..599 */
		uint64_t *v = &in->by_code[q->codes[i].code - LMTP_CODE_MIN];
		if (q->codes[i].count > *v)
			*v = q->codes[i].count;
	}
	struct ms_reply rep = { .op = MS_OP_LMTP_STATS };
	reply_now(c, id, &rep);
	return 0;
}

size_t ms_ops_lmtp_replies(const struct ms_ops *ops, struct ms_lmtp_count *out,
			   size_t max, size_t *instances_r)
{
	size_t n = 0;

	for (size_t k = 0; k < LMTP_CODES && n < max; k++) {
		uint64_t sum = ops->lmtp_gone[k];
		for (size_t i = 0; i < ops->nlmtp; i++)
			sum += ops->lmtp[i].by_code[k];
		if (sum == 0)
			continue;
		out[n].code = (uint16_t)(k + LMTP_CODE_MIN);
		out[n].count = sum;
		n++;
	}
	if (instances_r != NULL)
		*instances_r = ops->nlmtp;
	return n;
}

/* ---- standby (mstored --standby, udsync's DR site) ----
 *
 * The DR store is written by udsync recv alone; a standby mstored opens
 * it read-only (no lock taken: the log's readonly mode), refuses every
 * write with -EROFS, and keeps its own index current: mstored calls
 * ms_ops_standby_follow() every ~100 ms, which reads on from the log's
 * durable end (ms_log_follow) and applies the new records to the index
 * as the daemon applies its own (apply_record: WAIT wakes up).
 * PROMOTE (or `mstore promote`) stops that: the log is opened
 * read-write (which needs udsync recv stopped: it holds the store lock),
 * a TIMELINE record starts a new timeline, and writes are accepted.
 */

int ms_ops_open_standby(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
			const char **error_r)
{
	return ops_open(cfg, 1, 0, ops_r, error_r);
}

int ms_ops_is_standby(const struct ms_ops *ops)
{
	return ops->standby;
}

/* Apply the log's records past the index's position. */
static int standby_apply(struct ms_ops *ops, const char **error_r)
{
	struct ms_log_iter *it;
	struct ms_rec_hdr h;
	struct ms_pos pos, from = { 0, 0 };
	const uint8_t *p;
	uint64_t seq = 0, n = 0;
	int ret;

	if (ms_idx_applied(ops->idx, &seq, &from) < 0) {
		seq = 0;
		from = (struct ms_pos){ 0, 0 };
	}
	if ((ret = ms_log_iter_new(ops->log, from, &it)) < 0) {
		*error_r = "cannot walk the log";
		return ret;
	}
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, error_r)) > 0) {
		if (h.seq <= seq)
			continue;
		/* the wake-ups go out at the tick after, before any reply */
		note_record(ops, &h, p, pos);
		apply_record(ops, &h, p, pos);
		if (++n % 4096 == 0)
			idx_settle(ops, 1);
	}
	ms_log_iter_free(&it);
	return ret;
}

int ms_ops_standby_follow(struct ms_ops *ops)
{
	const char *err = "";
	int ret;

	if (!ops->standby)
		return 0;
	ret = ms_log_follow(ops->log, &err);
	if (ret > 0 && (ret = standby_apply(ops, &err)) == 0)
		ret = 1;
	if (ret < 0) {
		uint64_t now = now_ms();
		if (now - ops->standby_warned_ms > 10000) {
			msg_warn("standby.follow_failed error=%s", msg_q(err));
			ops->standby_warned_ms = now;
		}
		return ret;
	}
	if (ret > 0)
		ms_ops_tick(ops); /* commit, wake WAITs */
	return ret;
}

/*
 * A new timeline on a read-write log: TIMELINE (new = current + 1, fork
 * seq = the last record kept, this store's id), durable and applied.
 * On a DR replica (mstore.replica) the markers say PROMOTING(new
 * timeline) before the record is appended and are removed once it is
 * durable: a crash in between leaves a replica (the record was not
 * durable) or a promoted store (it was; the next open finishes it).
 */
int ms_ops_timeline(struct ms_ops *ops, uint64_t *timeline_r,
		    uint64_t *fork_seq_r, const char **error_r)
{
	struct ms_log_status ls;
	struct ms_event ev;
	const char *e = "";
	int ret;

	if (ops->standby) {
		*error_r = "the store is open read-only (standby)";
		return MS_ESTATE;
	}
	if (ms_log_promoted(ops->log, timeline_r, fork_seq_r)) {
		/* a promote cut short after its TIMELINE record was durable:
		   the open finished it, nothing more to write */
		msg_warn("promoted timeline=%llu fork_seq=%llu "
			 "msg=\"finished a promote cut short\"",
			 (unsigned long long)*timeline_r,
			 (unsigned long long)*fork_seq_r);
		return 0;
	}
	if ((ret = settle(ops)) < 0) {
		*error_r = "the log cannot be flushed";
		return ret;
	}
	ms_log_get_status(ops->log, &ls);
	int replica = ms_log_replica(ops->log) != MS_REPLICA_NONE;
	if (replica && (ret = ms_log_promote_begin(ops->log, ls.timeline + 1,
						   ls.durable_seq, &e)) < 0) {
		*error_r = ms_errf("the replica marker: %s", e);
		return ret;
	}
	memset(&ev, 0, sizeof(ev));
	ev.type = MS_REC_TIMELINE;
	ev.u.timeline.new_timeline = ls.timeline + 1;
	ev.u.timeline.fork_seq = ls.durable_seq;
	memcpy(ev.u.timeline.store_id, ms_log_meta(ops->log)->store_id,
	       MS_STORE_ID_SIZE);
	if ((ret = ops_append_event(ops, NULL, &ev)) < 0 ||
	    (ret = settle(ops)) < 0) {
		*error_r = "the TIMELINE record was not written";
		return ret;
	}
	if (replica && ms_log_promote_end(ops->log, &e) < 0)
		/* the record is durable: promoted; the markers are left
		   saying PROMOTING, and the next open removes them */
		msg_error("promote.unmark_failed error=%s msg=\"promoted; "
			  "the next start removes the replica marker\"",
			  msg_q(e));
	*timeline_r = ls.timeline + 1;
	*fork_seq_r = ls.durable_seq;
	msg_warn("promoted timeline=%llu fork_seq=%llu",
		 (unsigned long long)*timeline_r,
		 (unsigned long long)*fork_seq_r);
	return 0;
}

/* The standby becomes the writer: read-write log, new timeline. */
int ms_ops_promote(struct ms_ops *ops, uint64_t *timeline_r,
		   uint64_t *fork_seq_r, const char **error_r)
{
	struct ms_log *rw = NULL;
	struct ms_log_status ls;
	uint64_t iseq = 0;
	struct ms_pos ipos;
	int ret;

	if (!ops->standby) {
		*error_r = "not a standby: already read-write";
		return MS_ESTATE;
	}
	/* what is on disk now, in the index */
	(void)ms_ops_standby_follow(ops);
	idx_settle(ops, 1);
	if ((ret = ms_log_open(&ops->lcfg, &rw, error_r)) < 0) {
		if (ret == -EBUSY)
			*error_r = "the DR store is in use (udsync recv holds "
				   "it): stop udsync recv first, then promote";
		return ret;
	}
	ms_log_set_apply_hook(ops->log, NULL, NULL);
	ms_log_close(&ops->log);
	ops->log = rw;
	ops->standby = 0;
	/* the read-write open may have cut a torn tail the standby had
	   applied: then the index is ahead of the log; rebuild it */
	ms_log_get_status(ops->log, &ls);
	if (ms_idx_applied(ops->idx, &iseq, &ipos) == 0 &&
	    iseq > ls.durable_seq) {
		msg_warn("promote.index_ahead index_seq=%llu durable_seq=%llu "
			 "msg=\"rebuilding the index\"",
			 (unsigned long long)iseq,
			 (unsigned long long)ls.durable_seq);
		ms_idx_close(&ops->idx);
		if (ms_idx_rebuild(ops->idx_dir, ops->map_size, ops->log,
				   error_r) < 0 ||
		    ms_idx_open(ops->idx_dir, ops->map_size, &ops->idx,
				error_r) < 0)
			msg_fatal("promote.rebuild_failed error=%s msg=\"exiting; "
				  "the restart rebuilds it\"",
				  msg_q(*error_r));
	} else if (ms_idx_catch_up(ops->idx, ops->log, error_r) < 0) {
		msg_fatal("promote.catch_up_failed error=%s", msg_q(*error_r));
	}
	mstate_clear(ops);
	if (init_ids(ops, error_r) < 0)
		msg_fatal("promote.failed error=%s", msg_q(*error_r));
	ms_log_set_notice_hook(ops->log, note_record, ops);
	ms_log_set_apply_hook(ops->log, apply_record, ops);
	ms_log_defer_apply(ops->log, 1);
	return ms_ops_timeline(ops, timeline_r, fork_seq_r, error_r);
}

/*
 * FORK_INFO (failback, docs/replication.md): where this log left the
 * asked timeline, with the chain hash up to there.  Reads the whole fork
 * segment and two small pieces of every older one, in the event loop:
 * bounded by the segment size, not by the size of the log.
 */
static int op_fork_info(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
			const struct ms_req_fork_info *q, const char **why_r)
{
	struct ms_reply rep = { .op = MS_OP_FORK_INFO };
	struct ms_rep_fork_info *r = &rep.u.fork_info;
	struct ms_log_status ls;
	struct ms_log_fork f;
	int ret;

	if (!ms_conn_is_admin(c)) {
		*why_r = "fork-info is an admin operation";
		return -EACCES;
	}
	if ((ret = ms_log_fork_find(ops->log, q->timeline, &f, why_r)) < 0 ||
	    (ret = ms_log_fork_hash(ops->log, f.pos, f.fork_seq, &f,
				    why_r)) < 0)
		return ret;
	ms_log_get_status(ops->log, &ls);
	r->fork_seq = f.fork_seq;
	r->seg = f.pos.seg;
	r->off = f.pos.off;
	r->timeline = f.timeline;
	r->cur_timeline = ls.timeline;
	memcpy(r->store_id, f.store_id, sizeof(r->store_id));
	memcpy(r->chain, f.chain, sizeof(r->chain));
	r->tail_sum = f.tail_sum;
	r->tail_holes = (uint8_t)f.tail_holes;
	reply_now(c, id, &rep);
	return 0;
}

static int op_promote(struct ms_ops *ops, struct ms_conn *c, uint32_t id,
		      const char **why_r)
{
	uint64_t tl, fork;
	int ret;

	if (!ms_conn_is_admin(c)) {
		*why_r = "promote is an admin operation";
		return -EACCES;
	}
	if ((ret = ms_ops_promote(ops, &tl, &fork, why_r)) < 0)
		return ret;
	repl_reply(ops, c, MS_OP_PROMOTE, id);
	return 0;
}
