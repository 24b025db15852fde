/*
 * log_int.h - the log's private state, shared by log.c (appends, flushes,
 * reads) and recover.c (open-time recovery).  Nobody else includes it.
 */
#ifndef MS_LOG_INT_H
#define MS_LOG_INT_H

#include <xxhash.h>

#include "log.h"

#define MS_LOG_FD_CACHE 16

struct ms_log_copy {
	char *root;
	int root_fd;
	int log_fd;		/* <root>/log */
	int lock_fd;		/* <root>/mstore.lock, flock'ed: one writer */
	enum ms_copy_state state;
	char error[256];
	int head_fd;		/* segment log->flush_seg, for flushes */
	uint64_t head_fd_seg;
	/* head_fd's file holds records or prepared zeros up to here (0:
	   not known; log.c "prepared space") */
	uint64_t head_zero_end;
	struct {
		uint64_t seg;
		int fd;
		uint64_t used;
	} cache[MS_LOG_FD_CACHE];
};

struct ms_log_waiter {
	ms_log_done_fn *fn;
	void *ctx;
	uint64_t seq;
	struct ms_pos pos;
};

struct ms_log_batch {
	struct ms_log_batch *next;
	uint64_t seg, off;	/* where data goes */
	int new_seg;		/* data starts with the segment header */
	int sealed;		/* data ends with the seal record */
	uint64_t last_seq;	/* seq of its last record, 0 if none */
	struct ms_buf data;
	struct ms_log_waiter *w;
	size_t nw, capw;
};

struct ms_log {
	struct ms_log_cfg cfg;
	int ncopies;
	struct ms_log_copy copy[MS_IO_COPIES];
	struct ms_io *io;
	struct ms_meta meta;
	/* the DR replica marker (seg.h), as found at open and kept since;
	   promoted_*: this open finished a promotion cut short */
	struct ms_replica replica;
	uint64_t promoted_tl, promoted_fork;
	uint64_t timeline;

	uint64_t *segs;		/* segment numbers on disk or queued, asc. */
	size_t nsegs, capsegs;

	/* the tail: where the next append goes */
	uint64_t head_seg, head_end, next_seq;
	uint64_t seg_first_seq, seg_count;
	int need_hdr;		/* head segment's header not queued yet */
	XXH3_state_t *sum;	/* running XXH3 of head segment bytes */

	struct ms_pos durable;
	uint64_t durable_seq;

	struct ms_log_batch *q_first, *q_last, *spare;
	int inflight;
	uint64_t flush_t0;
	uint64_t last_flush_ns;	/* the last flush, start to reap */
	struct ms_io_flush fl;
	int dead;
	uint64_t counter;	/* fd cache clock */

	struct ms_log_status st;	/* counters */
	uint64_t file_epoch;	/* ms_log_file_epoch: in-place rewrites */
	ms_log_apply_fn *apply;
	void *apply_ctx;
	ms_log_apply_fn *notice;	/* ms_log_set_notice_hook */
	void *notice_ctx;
	/* ms_log_defer_apply: durable batches whose records the apply hook
	   has not seen yet, oldest first */
	int defer_apply;
	struct ms_log_batch *applyq_first, *applyq_last;
	/* the scrub's read windows, one per copy (log.c, scrub_from) */
	struct ms_buf scrub_win[MS_IO_COPIES];
};

void ms_log_copy_fail(struct ms_log *log, int c, int err, const char *what);
void ms_log_segs_add(struct ms_log *log, uint64_t seg);
/* A read fd for segment seg of copy c (cached; do not close). */
int ms_log_seg_fd(struct ms_log *log, int c, uint64_t seg);
void ms_log_seg_fd_forget(struct ms_log *log, int c, uint64_t seg);

/* Bytes of zeros kept ready past the head file's last record (log.c
   "prepared space"). */
#define MS_LOG_PREPARE ((uint64_t)1 << 20)

/* recover.c: set up segs, head, durable, next_seq from what is on disk. */
int ms_log_recover(struct ms_log *log, const char **error_r);

#endif
