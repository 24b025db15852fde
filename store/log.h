/*
 * log.h - the store's ordered log of records, kept on two copies
 * (primary and secondary), with group commit.
 *
 * Promise: the done callback of an append says 0 only after the record
 * was written and fdatasync'ed on every copy that is still healthy, and
 * at least one is.  A copy whose write or sync fails is marked failed and
 * left alone (degraded, logged, in the status); with no healthy copy left
 * the log is dead: every queued and later append fails with MS_ENOCOPY
 * and nothing more is acknowledged.
 *
 * Group commit: appends only copy the record into the open batch.  A
 * flush takes the oldest batch; the next flush starts when it completes,
 * taking everything that arrived meanwhile (no timer here).  Call
 * ms_log_run() from the event loop (when ms_log_event_fd() polls
 * readable, or after appending); ms_log_sync() runs until everything
 * queued is settled.  A caller that wants to hold the next flush a
 * moment (mstored's commit gather, ops.c) calls ms_log_reap() and
 * ms_log_kick() instead.
 *
 * Reads check every record; a record bad on one copy is read from the
 * other and the bad copy is rewritten (self-heal).  Bad on both: an error
 * naming segment:offset and what failed on each copy.
 *
 * Open recovers: the durable prefix is the longest run of valid records
 * (both copies read in lockstep, a record good on either counts); a torn
 * tail is copied to <copy>/lost+found/ and cut; the copies are made equal.
 * Not thread-safe: one thread owns a log.
 */
#ifndef MS_LOG_H
#define MS_LOG_H

#include "buf.h"
#include "io.h"
#include "rec.h"
#include "seg.h"

#define MS_LOG_SEG_SIZE_DEFAULT ((uint64_t)64 << 20)
#define MS_LOG_SEG_SIZE_MIN ((uint64_t)4096)

struct ms_log_cfg {
	const char *dir[MS_IO_COPIES];	/* copy roots; dir[1] NULL: one copy */
	uint64_t seg_size;		/* 0: MS_LOG_SEG_SIZE_DEFAULT */
	enum ms_io_kind engine;
	unsigned uring_entries;		/* 0: default */
	struct ms_io *io;		/* use this engine (tests); owned */
	int create;			/* make a new store if there is none */
	int readonly;			/* no recovery writes, no appends */
	/* read-only, and another process appends (mstored --standby over
	   the store udsync recv writes): the head's durable end is where
	   its valid records end, whatever follows (the writer's flush in
	   progress); ms_log_follow() goes on from there */
	int follow;
	/* open a DR replica (mstore.replica) read-write: only udsync recv,
	   promote, failback, reindex and repair (they append nothing on the
	   old timeline); every other read-write open gets MS_EREPLICA */
	int replica_ok;
};

enum ms_copy_state { MS_COPY_OK, MS_COPY_FAILED };

/*
 * Histograms of flushes (for the system API's /metrics): the time from
 * a batch's submission to its completion on every copy (write+fdatasync),
 * and the records per batch.  bounds[i] is the upper bound of bucket i;
 * the counts are per bucket (not cumulative), the last one (index
 * MS_LOG_*_BUCKETS) for what is above every bound.
 */
#define MS_LOG_FLUSH_BUCKETS 15
#define MS_LOG_BATCH_BUCKETS 12
extern const uint64_t ms_log_flush_bounds_ns[MS_LOG_FLUSH_BUCKETS];
extern const uint64_t ms_log_batch_bounds[MS_LOG_BATCH_BUCKETS];

struct ms_log_status {
	int ncopies;
	enum ms_copy_state copy[MS_IO_COPIES];
	char copy_error[MS_IO_COPIES][256];
	const char *copy_dir[MS_IO_COPIES];
	int degraded;			/* a copy has failed */
	int dead;			/* no copy is writable */
	const char *engine;
	struct ms_pos durable;		/* end of the durable log */
	uint64_t durable_seq;		/* last durable record's seq */
	uint64_t next_seq;
	uint64_t timeline;
	uint64_t first_seg, head_seg, nsegs;
	uint64_t appends, append_bytes;
	uint64_t flushes, flushed_records, flush_ns;
	uint64_t heals, read_errors;
	uint64_t flush_hist[MS_LOG_FLUSH_BUCKETS + 1];
	uint64_t batch_hist[MS_LOG_BATCH_BUCKETS + 1];
};

/* status: 0 durable, else why not (the record is not acknowledged). */
typedef void ms_log_done_fn(void *ctx, int status, uint64_t seq,
			    struct ms_pos pos);

struct ms_log;

int ms_log_open(const struct ms_log_cfg *cfg, struct ms_log **log_r,
		const char **error_r);
/* Settles everything queued (ms_log_sync), then closes. */
void ms_log_close(struct ms_log **log);

/*
 * DR replica (docs/replication.md, "A DR copy is read-only until
 * promoted").  The marker is read at every open; a read-write open
 * without replica_ok is refused with MS_EREPLICA while it says replica.
 * A read-write open that finds PROMOTING(T) settles it after recovery:
 * the log reached timeline T (the TIMELINE record is durable): the
 * promotion is finished (markers and udsync.pos removed;
 * ms_log_promoted() says so); else the store is still a replica (with
 * replica_ok the markers say so again, before anything is appended).
 *
 * ms_log_replica: the state (MS_REPLICA_NONE, _DR; _PROMOTING only on a
 * read-only open).  ms_log_mark_replica: write the DR marker on every
 * copy (durable).  ms_log_promote_begin: PROMOTING(timeline, fork_seq)
 * on every copy, before the TIMELINE record is appended;
 * ms_log_promote_end, once it is durable: udsync.pos and the markers
 * removed.  0 or the error with *error_r.
 */
enum ms_replica_state ms_log_replica(const struct ms_log *log);
int ms_log_mark_replica(struct ms_log *log, const char **error_r);
int ms_log_promote_begin(struct ms_log *log, uint64_t timeline,
			 uint64_t fork_seq, const char **error_r);
int ms_log_promote_end(struct ms_log *log, const char **error_r);
/* 1 and the TIMELINE's values if this open finished a promotion. */
int ms_log_promoted(const struct ms_log *log, uint64_t *timeline_r,
		    uint64_t *fork_seq_r);

/*
 * Queue a record.  Its position and seq are known at once (pos_r, seq_r
 * may be NULL); done(ctx, ...) runs from ms_log_run()/ms_log_sync() once
 * the record is durable or has failed.  MS_ETOOBIG, MS_ENOCOPY (dead),
 * MS_ESTATE (read-only), -EINVAL (reserved type) without queuing.
 * A TIMELINE record whose new timeline (its first u64) is above the
 * log's starts it: that record and every later one carry it.
 */
int ms_log_append(struct ms_log *log, uint8_t type, uint8_t flags,
		  const void *payload, uint32_t len, ms_log_done_fn *done,
		  void *ctx, struct ms_pos *pos_r, uint64_t *seq_r);

/*
 * Make progress: reap a finished flush (running its callbacks) and start
 * the next.  block: wait for the flush in flight.  Returns 1 while work
 * is queued or in flight, 0 when idle, <0 on an engine error.
 */
int ms_log_run(struct ms_log *log, int block);
/*
 * ms_log_run() in two halves, for a caller that decides when a flush
 * starts (mstored's commit gather): reap only (the callbacks of a
 * finished flush run; no flush is started), and start the next flush
 * if none is in flight.  Same returns as ms_log_run().
 */
int ms_log_reap(struct ms_log *log, int block);
int ms_log_kick(struct ms_log *log);
/* Records are queued and no flush is in flight: ms_log_kick() would
   start one. */
int ms_log_waiting(const struct ms_log *log);
/* How long the last flush took, submission to completion (ns; 0: none
   yet). */
uint64_t ms_log_last_flush_ns(const struct ms_log *log);
/* The durable end and the seq of the last durable record: what
   ms_log_get_status says of them, without the rest (for every turn). */
void ms_log_durable(const struct ms_log *log, struct ms_pos *end_r,
		    uint64_t *seq_r);
/*
 * Called for every record, in log order, when its batch is durable
 * (seals included), before the done callbacks of that batch; payload
 * is valid during the call.  The daemon applies the index here.
 * Setting a hook first hands what is deferred (below) to the old one.
 */
typedef void ms_log_apply_fn(void *ctx, const struct ms_rec_hdr *hdr,
			     const uint8_t *payload, struct ms_pos pos);
void ms_log_set_apply_hook(struct ms_log *log, ms_log_apply_fn *fn,
			   void *ctx);
/*
 * Called like the apply hook, for every record of a durable batch in log
 * order and before the batch's done callbacks, but never deferred: the
 * daemon counts each user's changes here (USER_WATCH), before any reply
 * that says a change is done can go out.
 */
void ms_log_set_notice_hook(struct ms_log *log, ms_log_apply_fn *fn,
			    void *ctx);
/*
 * Deferred: a durable batch's done callbacks run first, and its records
 * go to the apply hook at ms_log_apply_pending() (ms_log_sync and
 * ms_log_close call it too).  The daemon answers its clients between
 * the two, so a reply does not wait for the index.
 */
void ms_log_defer_apply(struct ms_log *log, int on);
void ms_log_apply_pending(struct ms_log *log);

/* Run until idle.  0 if every record queued so far is durable. */
int ms_log_sync(struct ms_log *log);
/* Polls readable when ms_log_run() has a completion to reap; -1: none. */
int ms_log_event_fd(struct ms_log *log);

/*
 * Read the durable record at pos.  Payload goes to *payload (reset
 * first).  MS_ENOTFOUND past the durable end; MS_ECORRUPT when no copy
 * has a good record there (*error_r names segment:offset and each copy's
 * failure).
 */
int ms_log_read(struct ms_log *log, struct ms_pos pos,
		struct ms_rec_hdr *hdr_r, struct ms_buf *payload,
		const char **error_r);
/* The same, and the copy whose record passed in *copy_r (its bytes are
   at pos on that copy, the payload MS_REC_HDR_SIZE further on:
   ms_log_file() gives the file). */
int ms_log_read_at(struct ms_log *log, struct ms_pos pos,
		   struct ms_rec_hdr *hdr_r, struct ms_buf *payload,
		   int *copy_r, const char **error_r);
/* The open file of segment seg on copy copy: the log's own, valid until
   the next call into the log (dup it to keep it); -errno if it cannot be
   opened (retired by compaction, say). */
int ms_log_file(struct ms_log *log, int copy, uint64_t seg);
/* len bytes of the payload of the record at pos on copy, from off in
   it: a part of a record that ms_log_read_at() checked there before
   (ms_log_file_epoch unchanged since), read again through the log's
   I/O, with no check of its own.  0; MS_ETRUNC past the file's end; or
   -errno. */
int ms_log_read_part(struct ms_log *log, int copy, struct ms_pos pos,
		     uint64_t off, void *buf, size_t len);
/* Changes whenever bytes already in a copy's files are rewritten (a
   record healed from the other copy, or an attempt that may have
   written part of it): a range read and checked before may read
   otherwise now. */
uint64_t ms_log_file_epoch(const struct ms_log *log);

/*
 * Scrub: read every record of one segment on every copy, rewrite a bad
 * record from a copy where it is good, count what was found.  A record
 * bad on every copy stops the scrub of that segment (its length cannot be
 * trusted) with MS_ECORRUPT and *error_r naming segment:offset.
 */
struct ms_scrub_stats {
	uint64_t records, bytes, healed, bad;
	/* records compacted (HOLE) on one copy, not yet on the other */
	uint64_t pending;
};
int ms_log_scrub(struct ms_log *log, uint64_t seg, struct ms_scrub_stats *st,
		 const char **error_r);
/*
 * Scrub a little: at most max_bytes of records from *pos (which then
 * points where to go on; {0,0} starts at the beginning).  1 when a whole
 * pass over the log just ended, 0 otherwise, <0 for a record bad on
 * every copy (reported in *error_r; the next step skips its segment).
 */
int ms_log_scrub_step(struct ms_log *log, struct ms_pos *pos,
		      uint64_t max_bytes, struct ms_scrub_stats *st,
		      const char **error_r);
/* Segment numbers of the log, ascending (valid until the next append). */
const uint64_t *ms_log_segments(struct ms_log *log, size_t *n_r);

void ms_log_get_status(struct ms_log *log, struct ms_log_status *st);
/* 1 when no copy is writable (cheap; for the event loop). */
int ms_log_dead(const struct ms_log *log);
/* "primary" or "secondary" (c is 0 or 1). */
const char *ms_log_copy_name(int c);
const struct ms_meta *ms_log_meta(struct ms_log *log);

/*
 * In-place compaction of one sealed segment (compact.c; docs/format.md).
 * The records at offs[0..n-1] (ascending; types[i] their types) become
 * HOLE records; everything else keeps its bytes and offset.
 *
 * write: rewrite from a copy where the segment checks out whole into
 * NNN.seg.compact on every healthy copy (synced); *sum_r: the new seal
 * checksum, for the RETIRE record.  commit: rename the rewrites into
 * place on every healthy copy where the segment does not have sum yet;
 * MS_ENOTFOUND if a copy has no finished rewrite.  finish: commit, and
 * write first where that is needed (recovery of an unfinished RETIRE).
 * cleanup: remove rewrite files left behind (none may be in progress).
 * seg_sum: the seal checksum of copy c's segment (tmp: of its rewrite)
 * after checking the whole file.
 */
int ms_log_compact_write(struct ms_log *log, uint64_t seg,
			 const uint64_t *offs, const uint8_t *types, size_t n,
			 uint64_t *sum_r, const char **error_r);
int ms_log_compact_commit(struct ms_log *log, uint64_t seg, uint64_t sum,
			  const char **error_r);
int ms_log_compact_finish(struct ms_log *log, uint64_t seg,
			  const uint64_t *offs, const uint8_t *types, size_t n,
			  uint64_t sum, const char **error_r);
void ms_log_compact_cleanup(struct ms_log *log);
int ms_log_seg_sum(struct ms_log *log, int c, uint64_t seg, int tmp,
		   uint64_t *sum_r);
/* Apparent and allocated bytes of a segment file (first healthy copy). */
int ms_log_seg_space(struct ms_log *log, uint64_t seg, uint64_t *size_r,
		     uint64_t *alloc_r);
/* The number of the open (newest) segment. */
uint64_t ms_log_head_seg(const struct ms_log *log);

/*
 * Follow a log another process writes (log_follow.c; a read-only log
 * only: the DR store that udsync recv writes, read by a standby
 * mstored).  Reads on from the durable end: every whole record that
 * passes the checks, with the next seq, and the segments after a seal,
 * become durable here.  Stops quietly at the first record that is not
 * (yet) whole.  1 when the durable end moved, 0 when not, <0 on errors
 * (MS_ESTATE: not read-only).
 */
int ms_log_follow(struct ms_log *log, const char **error_r);

/* Walk the durable records in log order, from a position. */
struct ms_log_iter;
/* from.seg == 0: from the first record of the log. */
int ms_log_iter_new(struct ms_log *log, struct ms_pos from,
		    struct ms_log_iter **it_r);
/*
 * 1 with the record (payload_r valid until the next call), 0 at the
 * durable end, <0 when a record is bad on every copy (*error_r says
 * where; the iterator cannot go past it).
 */
int ms_log_iter_next(struct ms_log_iter *it, struct ms_pos *pos_r,
		     struct ms_rec_hdr *hdr_r, const uint8_t **payload_r,
		     const char **error_r);
void ms_log_iter_free(struct ms_log_iter **it);

/*
 * The fork point of two logs, for failback (log_fork.c,
 * docs/replication.md "Failback").  find: the TIMELINE record that
 * raised this log above old_tl: its position, the fork seq it names,
 * the new timeline, the store id it names.  hash: the chain hash of
 * this log up to the fork position at (the record ending there must
 * have seq fork_seq), with the XXH3 of the fork segment's records
 * before it; MS_EMISMATCH when this log has no record boundary with
 * that seq there.  MS_ENOTFOUND: no such TIMELINE.
 */
struct ms_log_fork {
	uint64_t fork_seq;	/* F: the last seq both logs share */
	struct ms_pos pos;	/* (s, o): where D's TIMELINE record starts */
	uint64_t timeline;	/* the timeline it starts */
	uint8_t store_id[MS_STORE_ID_SIZE];
	uint8_t chain[32];	/* BLAKE2b-256, compaction-proof */
	uint64_t tail_sum;	/* XXH3-64 of segment s's records before o */
	int tail_holes;		/* segment s has HOLEs before o */
};
int ms_log_fork_find(struct ms_log *log, uint64_t old_tl,
		     struct ms_log_fork *f_r, const char **error_r);
int ms_log_fork_hash(struct ms_log *log, struct ms_pos at, uint64_t fork_seq,
		     struct ms_log_fork *f, const char **error_r);

#endif
