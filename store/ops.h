/*
 * ops.h - what mstored does with each request: the mail model on top of
 * the log and the index.  It validates a request against the index,
 * writes the records that carry it, and answers when they are durable
 * and applied; reads are answered from the index (and the log for
 * bodies) at once.
 *
 * The promise: a reply that says a change succeeded is sent only after
 * its records are durable on the log's copies (ms_log) and applied to
 * the index in a committed transaction.
 *
 * Allocation (UIDs, modseqs, user and mailbox ids, UIDVALIDITY) happens
 * here, in memory, when a request is accepted, so pipelined requests get
 * distinct numbers before their records are durable; the index catches
 * up as batches complete.  A number given to a record that never became
 * durable is never shown to anyone and may be given again after a
 * restart.
 */
#ifndef MS_OPS_H
#define MS_OPS_H

#include "proto.h"
#include "srv.h"
#include "store_cfg.h"

struct ms_ops;

/* Open log (with recovery) and index (rebuilt or caught up). */
int ms_ops_open(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
		const char **error_r);
/* The same on a DR replica too (mstore.replica): for `mstore promote
   --offline`, whose ms_ops_timeline() ends the replica. */
int ms_ops_open_promote(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
			const char **error_r);
void ms_ops_close(struct ms_ops **ops);

/*
 * Standby (mstored --standby, docs/replication.md): the DR store opened
 * read-only (udsync recv writes it); every write op is refused with
 * -EROFS.  ms_ops_standby_follow() reads what was appended since and
 * applies it to the index (1 when something new came, 0 nothing, <0
 * error, logged).  ms_ops_promote(): read-write (fails with -EBUSY while
 * udsync recv holds the store), then ms_ops_timeline(): a TIMELINE
 * record (new timeline = current + 1, fork seq = the last seq kept); on
 * a DR replica it clears the replica marker, crash-safely (log.h).
 */
int ms_ops_open_standby(const struct ms_store_cfg *cfg, struct ms_ops **ops_r,
			const char **error_r);
int ms_ops_is_standby(const struct ms_ops *ops);
int ms_ops_standby_follow(struct ms_ops *ops);
int ms_ops_promote(struct ms_ops *ops, uint64_t *timeline_r,
		   uint64_t *fork_seq_r, const char **error_r);
int ms_ops_timeline(struct ms_ops *ops, uint64_t *timeline_r,
		    uint64_t *fork_seq_r, const char **error_r);
/* Where the index lives. */
const char *ms_ops_index_dir(struct ms_ops *ops);
void ms_ops_set_srv(struct ms_ops *ops, struct ms_srv *srv);
/* The log's completion fd (-1 with psync) and what to do when it fires. */
int ms_ops_event_fd(struct ms_ops *ops);
void ms_ops_log_ready(struct ms_ops *ops);
/* srv.h handler entry points. */
void ms_ops_request(struct ms_ops *ops, struct ms_conn *c,
		    const struct ms_proto_hdr *h, const uint8_t *body,
		    size_t len);
void ms_ops_closed(struct ms_ops *ops, struct ms_conn *c);
void ms_ops_tick(struct ms_ops *ops);
/* For ms_srv_handler.file_epoch: the log's (ms_log_file_epoch). */
uint64_t ms_ops_file_epoch(struct ms_ops *ops);
/* Settings that can change while running (SIGHUP). */
void ms_ops_reload(struct ms_ops *ops, const struct ms_store_cfg *cfg);
/* Settle everything in flight (shutdown). */
void ms_ops_drain(struct ms_ops *ops);

/*
 * Purge what left the undelete window and compact (COMPACT's work,
 * docs/protocol.md), for a tool that opened the store itself with no
 * mstored running: everything is durable and applied on return.
 * threshold 0: the configured one.  0, or the error with *error_r.
 */
struct ms_compact_result {
	uint64_t purged_before, scanned, compacted, dropped, bytes, more;
};
int ms_ops_compact(struct ms_ops *ops, uint32_t threshold, int purge_only,
		   struct ms_compact_result *res_r, const char **error_r);

/*
 * For the system API (sysapi.c), which reads what it reports: the log
 * and the index (owned by ops; to be read only, from the loop's thread),
 * and the requests and error replies (at once, or after a write that
 * failed in the log) counted per op since start; ops >= MS_OPS_MAX_OP
 * count as 0.
 */
#define MS_OPS_MAX_OP 128
struct ms_log;
struct ms_idx;
struct ms_log *ms_ops_log(struct ms_ops *ops);
struct ms_idx *ms_ops_idx(struct ms_ops *ops);
void ms_ops_op_counts(const struct ms_ops *ops, uint16_t op,
		      uint64_t *requests_r, uint64_t *errors_r);
/* The LMTP replies mstore-lmtpd instances reported (LMTP_STATS), summed
   by code, ascending, codes with 0 left out: at most max into out; the
   number of instances heard from (at most 16 remembered) in
   *instances_r if not NULL. */
struct ms_lmtp_count;
size_t ms_ops_lmtp_replies(const struct ms_ops *ops, struct ms_lmtp_count *out,
			   size_t max, size_t *instances_r);

#endif
