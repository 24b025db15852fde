/*
 * log.c - appends, group commit, reads with self-heal, iteration.  The
 * contract is in log.h, the formats in seg.h/rec.h and docs/format.md,
 * open-time recovery in recover.c.
 *
 * Order of events for one batch (publish last, cf. LMDB's commit):
 *   1. appends copy records into the batch and get their position;
 *   2. the flush writes the batch and fdatasyncs it, on both copies at once;
 *   3. only when both copies have answered does `durable` move and do the
 *      callbacks run: the 250 / OK goes out after this.
 * A segment's seal is the last record of its last batch; the next
 * segment's file is created (and its directory synced) only after that
 * batch completed, so at most one segment ever has unsynced bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log_int.h"
#include "msg.h"

const char *ms_log_copy_name(int c)
{
	ms_assert(c >= 0 && c < MS_IO_COPIES);
	return c == 0 ? "primary" : "secondary";
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void ms_log_copy_fail(struct ms_log *log, int c, int err, const char *what)
{
	struct ms_log_copy *cp = &log->copy[c];
	if (cp->state == MS_COPY_FAILED)
		return;
	cp->state = MS_COPY_FAILED;
	snprintf(cp->error, sizeof(cp->error), "%s: %s", what,
		 ms_strerror(err));
	int ok = 0;
	for (int i = 0; i < log->ncopies; i++)
		ok += log->copy[i].state == MS_COPY_OK;
	if (ok > 0)
		msg_error("copy.failed copy=%s dir=%s error=%s msg=\"continuing "
			  "on the other copy, DEGRADED: run mstore repair\"",
			  ms_log_copy_name(c), msg_q(cp->root), msg_q(cp->error));
	else
		msg_error("copy.failed copy=%s dir=%s error=%s msg=\"no writable "
			  "copy is left: every write is refused\"",
			  ms_log_copy_name(c), msg_q(cp->root), msg_q(cp->error));
}

void ms_log_segs_add(struct ms_log *log, uint64_t seg)
{
	if (log->nsegs > 0 && log->segs[log->nsegs - 1] >= seg)
		return;
	if (log->nsegs == log->capsegs) {
		log->capsegs = log->capsegs ? log->capsegs * 2 : 64;
		log->segs = ms_realloc(log->segs,
				       log->capsegs * sizeof(*log->segs));
	}
	log->segs[log->nsegs++] = seg;
}

int ms_log_seg_fd(struct ms_log *log, int c, uint64_t seg)
{
	struct ms_log_copy *cp = &log->copy[c];
	char name[MS_SEG_NAME_LEN + 1];
	int victim = 0;

	for (int i = 0; i < MS_LOG_FD_CACHE; i++) {
		if (cp->cache[i].fd >= 0 && cp->cache[i].seg == seg) {
			cp->cache[i].used = ++log->counter;
			return cp->cache[i].fd;
		}
		if (cp->cache[i].fd < 0 ||
		    cp->cache[i].used < cp->cache[victim].used)
			victim = i;
	}
	ms_seg_name(seg, name);
	int fd = openat(cp->log_fd, name,
			(log->cfg.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (cp->cache[victim].fd >= 0)
		close(cp->cache[victim].fd);
	cp->cache[victim].fd = fd;
	cp->cache[victim].seg = seg;
	cp->cache[victim].used = ++log->counter;
	return fd;
}

uint64_t ms_log_head_seg(const struct ms_log *log)
{
	return log->head_seg;
}

void ms_log_seg_fd_forget(struct ms_log *log, int c, uint64_t seg)
{
	struct ms_log_copy *cp = &log->copy[c];
	for (int i = 0; i < MS_LOG_FD_CACHE; i++) {
		if (cp->cache[i].fd >= 0 && cp->cache[i].seg == seg) {
			close(cp->cache[i].fd);
			cp->cache[i].fd = -1;
		}
	}
}

/* ---- open ---- */

static int copy_open(struct ms_log *log, int c, const char **error_r)
{
	struct ms_log_copy *cp = &log->copy[c];
	const char *dir = log->cfg.dir[c];

	if (log->cfg.create && !log->cfg.readonly && mkdir(dir, 0750) < 0 &&
	    errno != EEXIST) {
		*error_r = ms_errf("%s copy: mkdir %s: %s", ms_log_copy_name(c), dir,
				   strerror(errno));
		return -errno;
	}
	cp->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cp->root_fd < 0) {
		int err = -errno;
		*error_r = ms_errf("%s copy: open %s: %s", ms_log_copy_name(c), dir,
				   strerror(errno));
		return err;
	}
	if (!log->cfg.readonly) {
		if (mkdirat(cp->root_fd, "log", 0750) < 0 && errno != EEXIST)
			goto fail;
		if (mkdirat(cp->root_fd, "lost+found", 0750) < 0 &&
		    errno != EEXIST)
			goto fail;
	}
	cp->log_fd = openat(cp->root_fd, "log",
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cp->log_fd < 0)
		goto fail;
	if (!log->cfg.readonly) {
		/* one writer per store: mstored, or an offline tool */
		cp->lock_fd = openat(cp->root_fd, "mstore.lock",
				     O_RDWR | O_CREAT | O_CLOEXEC, 0640);
		if (cp->lock_fd < 0)
			goto fail;
		if (flock(cp->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			int err = -errno;
			*error_r = ms_errf("%s copy %s is in use by another "
					   "process (mstored, or a tool that "
					   "writes); stop it first",
					   ms_log_copy_name(c), dir);
			return err == -EWOULDBLOCK ? -EBUSY : err;
		}
	}
	return 0;
fail:;
	int err = -errno;
	*error_r = ms_errf("%s copy: %s/log: %s", ms_log_copy_name(c), dir,
			   strerror(errno));
	return err;
}

/* Agree on one store identity across the copies (or make a new one). */
static int meta_setup(struct ms_log *log, const char **error_r)
{
	struct ms_meta m[MS_IO_COPIES];
	int ret[MS_IO_COPIES];
	const char *err[MS_IO_COPIES] = { "", "" };
	int good = -1;

	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		ret[c] = log->copy[c].state == MS_COPY_OK
				 ? ms_meta_read(log->copy[c].root_fd, &m[c],
						&err[c])
				 : -ENOENT;
		if (ret[c] == 0 && good < 0)
			good = c;
	}
	if (good < 0) {
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
			if (ret[c] != -ENOENT) {
				*error_r = ms_errf("%s copy %s: %s",
						   ms_log_copy_name(c),
						   log->copy[c].root, err[c]);
				return ret[c];
			}
		}
		if (!log->cfg.create || log->cfg.readonly) {
			*error_r = ms_errf("no store at %s (no %s)",
					   log->copy[0].root, MS_META_NAME);
			return -ENOENT;
		}
		randombytes_buf(log->meta.store_id, sizeof(log->meta.store_id));
		randombytes_buf(log->meta.salt, sizeof(log->meta.salt));
		log->meta.created = (uint64_t)time(NULL);
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
			int r = ms_meta_write(log->copy[c].root_fd, &log->meta,
					      error_r);
			if (r < 0)
				return r;
		}
		msg_info("store.created dir=%s", msg_q(log->copy[0].root));
		return 0;
	}
	log->meta = m[good];
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		if (c == good || log->copy[c].state != MS_COPY_OK)
			continue;
		if (ret[c] == 0) {
			if (memcmp(m[c].store_id, m[good].store_id,
				   MS_STORE_ID_SIZE) != 0 ||
			    memcmp(m[c].salt, m[good].salt, MS_SALT_SIZE) != 0) {
				*error_r = ms_errf(
					"%s copy %s and %s copy %s belong to "
					"different stores",
					ms_log_copy_name(good), log->copy[good].root,
					ms_log_copy_name(c), log->copy[c].root);
				return MS_EMISMATCH;
			}
			continue;
		}
		/* missing or damaged meta on one copy: take the good one's */
		if (log->cfg.readonly)
			continue;
		msg_warn("meta.rewritten copy=%s dir=%s error=%s source=%s",
			 ms_log_copy_name(c), msg_q(log->copy[c].root),
			 msg_q(err[c]),
			 ms_log_copy_name(good));
		int r = ms_meta_write(log->copy[c].root_fd, &log->meta, error_r);
		if (r < 0)
			ms_log_copy_fail(log, c, r, "write meta");
	}
	return 0;
}

/* ---- the DR replica marker (seg.h; docs/replication.md) ---- */

/*
 * What the copies' markers say together: PROMOTING on any copy wins (a
 * promote cut short between the copies), then DR; a marker that cannot
 * be read counts as DR (fail safe).  *bad_r: some copy's marker is
 * missing, damaged or not the combined state (a replica_ok writer
 * rewrites them).
 */
static void replica_read(struct ms_log *log, int *bad_r)
{
	struct ms_replica all = { MS_REPLICA_NONE, 0, 0 };
	struct ms_replica r[MS_IO_COPIES] = { { MS_REPLICA_NONE, 0, 0 },
					      { MS_REPLICA_NONE, 0, 0 } };
	int ok[MS_IO_COPIES] = { 0, 0 };

	*bad_r = 0;
	for (int c = 0; c < log->ncopies && c < MS_IO_COPIES; c++) {
		const char *e = "";
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		ok[c] = 1;
		if (ms_replica_read(log->copy[c].root_fd, &r[c], &e) < 0) {
			msg_warn("replica.marker_bad copy=%s dir=%s error=%s "
				 "msg=\"taken for a DR replica\"",
				 ms_log_copy_name(c), msg_q(log->copy[c].root),
				 msg_q(e));
			r[c] = (struct ms_replica){ MS_REPLICA_DR, 0, 0 };
			*bad_r = 1;
		}
		if ((r[c].state == MS_REPLICA_PROMOTING &&
		     (all.state != MS_REPLICA_PROMOTING ||
		      r[c].timeline > all.timeline)) ||
		    (r[c].state == MS_REPLICA_DR &&
		     all.state == MS_REPLICA_NONE))
			all = r[c];
	}
	for (int c = 0; c < log->ncopies && c < MS_IO_COPIES; c++)
		if (ok[c] && (r[c].state != all.state ||
			      r[c].timeline != all.timeline))
			*bad_r = 1;
	log->replica = all;
}

static int replica_write_all(struct ms_log *log, const struct ms_replica *r,
			     const char **error_r)
{
	for (int c = 0; c < log->ncopies; c++) {
		const char *e = "";
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		int ret = ms_replica_write(log->copy[c].root_fd, r, &e);
		if (ret < 0) {
			*error_r = ms_errf("%s copy %s: %s",
					   ms_log_copy_name(c),
					   log->copy[c].root, e);
			return ret;
		}
	}
	log->replica = *r;
	return 0;
}

static const char *replica_refusal(const struct ms_log *log)
{
	return ms_errf("this store is a DR replica: start it with "
		       "--standby, or mstore promote (%s/%s: read-only "
		       "until promoted)",
		       log->copy[0].root, MS_REPLICA_NAME);
}

/*
 * After recovery (read-write): settle a promotion cut short, refuse a
 * replica to a writer that is not its own, make the markers agree.
 */
static int replica_settle(struct ms_log *log, int bad, const char **error_r)
{
	struct ms_replica r = log->replica;
	int ret;

	if (r.state == MS_REPLICA_PROMOTING) {
		if (log->timeline >= r.timeline) {
			/* the TIMELINE record is durable: promoted */
			if ((ret = ms_log_promote_end(log, error_r)) < 0)
				return ret;
			log->promoted_tl = r.timeline;
			log->promoted_fork = r.fork_seq;
			msg_warn("replica.promote_finished timeline=%llu "
				 "fork_seq=%llu msg=\"a promote cut short had "
				 "made its TIMELINE record durable: the store "
				 "is promoted\"",
				 (unsigned long long)r.timeline,
				 (unsigned long long)r.fork_seq);
			return 0;
		}
		/* it never was: still a replica, and the markers must say
		   so before anything (udsync recv: the primary's TIMELINE)
		   can take the log to that timeline */
		msg_warn("replica.promote_undone timeline=%llu log_timeline="
			 "%llu msg=\"a promote cut short before its TIMELINE "
			 "record was durable: still a DR replica\"",
			 (unsigned long long)r.timeline,
			 (unsigned long long)log->timeline);
		log->replica = (struct ms_replica){ MS_REPLICA_DR, 0, 0 };
		bad = 1;
	}
	if (log->replica.state == MS_REPLICA_NONE)
		return 0;
	if (!log->cfg.replica_ok) {
		*error_r = replica_refusal(log);
		return MS_EREPLICA;
	}
	if (bad)
		return replica_write_all(log, &log->replica, error_r);
	return 0;
}

enum ms_replica_state ms_log_replica(const struct ms_log *log)
{
	return log->replica.state;
}

int ms_log_mark_replica(struct ms_log *log, const char **error_r)
{
	struct ms_replica r = { MS_REPLICA_DR, 0, 0 };
	if (log->cfg.readonly)
		return MS_ESTATE;
	return replica_write_all(log, &r, error_r);
}

int ms_log_promote_begin(struct ms_log *log, uint64_t timeline,
			 uint64_t fork_seq, const char **error_r)
{
	struct ms_replica r = { MS_REPLICA_PROMOTING, timeline, fork_seq };
	if (log->cfg.readonly || timeline <= log->timeline)
		return MS_ESTATE;
	return replica_write_all(log, &r, error_r);
}

int ms_log_promote_end(struct ms_log *log, const char **error_r)
{
	if (log->cfg.readonly)
		return MS_ESTATE;
	/* udsync.pos first: udsync recv would cut the log back to it (and
	   with it the TIMELINE record and every write after it); while a
	   marker is left, the next open finishes this */
	for (int c = 0; c < log->ncopies; c++) {
		struct ms_log_copy *cp = &log->copy[c];
		if (cp->state != MS_COPY_OK)
			continue;
		if (unlinkat(cp->root_fd, "udsync.pos", 0) < 0 &&
		    errno != ENOENT) {
			int err = -errno;
			*error_r = ms_errf("%s copy %s: remove udsync.pos: %s",
					   ms_log_copy_name(c), cp->root,
					   strerror(errno));
			return err;
		}
		if (fsync(cp->root_fd) < 0) {
			int err = -errno;
			*error_r = ms_errf("%s copy %s: fsync: %s",
					   ms_log_copy_name(c), cp->root,
					   strerror(errno));
			return err;
		}
	}
	for (int c = 0; c < log->ncopies; c++) {
		const char *e = "";
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		int ret = ms_replica_remove(log->copy[c].root_fd, &e);
		if (ret < 0) {
			*error_r = ms_errf("%s copy %s: %s",
					   ms_log_copy_name(c),
					   log->copy[c].root, e);
			return ret;
		}
	}
	log->replica = (struct ms_replica){ MS_REPLICA_NONE, 0, 0 };
	return 0;
}

int ms_log_promoted(const struct ms_log *log, uint64_t *timeline_r,
		    uint64_t *fork_seq_r)
{
	if (log->promoted_tl == 0)
		return 0;
	*timeline_r = log->promoted_tl;
	*fork_seq_r = log->promoted_fork;
	return 1;
}

int ms_log_open(const struct ms_log_cfg *cfg, struct ms_log **log_r,
		const char **error_r)
{
	struct ms_log *log = ms_calloc(1, sizeof(*log));
	int ret;

	log->cfg = *cfg;
	log->cfg.io = NULL;
	for (int c = 0; c < MS_IO_COPIES; c++)
		ms_buf_init(&log->scrub_win[c], 0);
	if (log->cfg.seg_size == 0)
		log->cfg.seg_size = MS_LOG_SEG_SIZE_DEFAULT;
	if (log->cfg.seg_size < MS_LOG_SEG_SIZE_MIN)
		log->cfg.seg_size = MS_LOG_SEG_SIZE_MIN;
	log->ncopies = cfg->dir[1] != NULL ? 2 : 1;
	for (int c = 0; c < MS_IO_COPIES; c++) {
		log->copy[c].root_fd = log->copy[c].log_fd = -1;
		log->copy[c].lock_fd = -1;
		log->copy[c].head_fd = -1;
		for (int i = 0; i < MS_LOG_FD_CACHE; i++)
			log->copy[c].cache[i].fd = -1;
		if (c < log->ncopies)
			log->copy[c].root = ms_strdup(cfg->dir[c]);
	}
	log->io = cfg->io;
	log->sum = XXH3_createState();
	if (log->sum == NULL)
		msg_fatal("oom what=xxh3_state");
	if (sodium_init() < 0) {
		*error_r = "libsodium failed to initialise";
		ret = -EIO;
		goto fail;
	}

	int nok = 0;
	const char *first_err = NULL;
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		const char *e;
		ret = copy_open(log, c, &e);
		if (ret == -EBUSY) {
			*error_r = e;
			goto fail;
		}
		if (ret < 0) {
			first_err = first_err ? first_err : e;
			ms_log_copy_fail(log, c, ret, e);
		} else {
			nok++;
		}
	}
	if (nok == 0) {
		*error_r = first_err;
		ret = MS_ENOCOPY;
		goto fail;
	}
	if ((ret = meta_setup(log, error_r)) < 0)
		goto fail;
	int replica_bad = 0;
	replica_read(log, &replica_bad);
	if (!log->cfg.readonly && !log->cfg.replica_ok &&
	    log->replica.state == MS_REPLICA_DR) {
		/* refused before recovery writes anything */
		*error_r = replica_refusal(log);
		ret = MS_EREPLICA;
		goto fail;
	}
	if (log->io == NULL && !log->cfg.readonly) {
		if (cfg->engine == MS_IO_URING)
			ret = ms_io_uring_new(cfg->uring_entries ? cfg->uring_entries : 64,
					      &log->io, error_r);
		else
			ret = ms_io_psync_new(&log->io);
		if (ret < 0)
			goto fail;
	} else if (log->io == NULL) {
		ms_io_psync_new(&log->io);
	}
	if ((ret = ms_log_recover(log, error_r)) < 0)
		goto fail;
	if (!log->cfg.readonly &&
	    (ret = replica_settle(log, replica_bad, error_r)) < 0)
		goto fail;
	*log_r = log;
	return 0;
fail:
	if (log->io == NULL)
		log->io = cfg->io; /* owned even on failure */
	log->cfg.readonly = 1;	/* close must not try to flush */
	ms_log_close(&log);
	return ret;
}

/* ---- appends ---- */

static struct ms_log_batch *batch_new(struct ms_log *log, uint64_t seg,
				      uint64_t off)
{
	struct ms_log_batch *b = log->spare;
	if (b != NULL) {
		log->spare = b->next;
	} else {
		b = ms_calloc(1, sizeof(*b));
		ms_buf_init(&b->data, 0);
	}
	b->next = NULL;
	b->seg = seg;
	b->off = off;
	b->new_seg = 0;
	b->sealed = 0;
	b->nw = 0;
	b->last_seq = 0;
	ms_buf_reset(&b->data);
	if (log->q_last != NULL)
		log->q_last->next = b;
	else
		log->q_first = b;
	log->q_last = b;
	return b;
}

/* The batch the next record for the head segment goes into. */
static struct ms_log_batch *batch_open(struct ms_log *log)
{
	struct ms_log_batch *b = log->q_last;
	if (b == NULL || b->sealed || b->seg != log->head_seg ||
	    (log->inflight && b == log->q_first))
		b = batch_new(log, log->head_seg, log->head_end);
	return b;
}

static void head_start(struct ms_log *log)
{
	struct ms_seg_hdr h;
	uint8_t hb[MS_SEG_HDR_SIZE];

	memcpy(h.store_id, log->meta.store_id, MS_STORE_ID_SIZE);
	h.seg = log->head_seg;
	h.timeline = log->timeline;
	h.first_seq = log->next_seq;
	ms_seg_hdr_encode(&h, hb);
	struct ms_log_batch *b = batch_new(log, log->head_seg, 0);
	b->new_seg = 1;
	if (ms_buf_append(&b->data, hb, sizeof(hb)) < 0)
		msg_panic("bug msg=\"batch buffer refused a segment header\"");
	XXH3_64bits_reset(log->sum);
	XXH3_64bits_update(log->sum, hb, sizeof(hb));
	log->head_end = MS_SEG_HDR_SIZE;
	log->seg_first_seq = log->next_seq;
	log->seg_count = 0;
	log->need_hdr = 0;
	ms_log_segs_add(log, log->head_seg);
}

static int put_record(struct ms_log *log, uint8_t type, uint8_t flags,
		      const void *payload, uint32_t len, ms_log_done_fn *done,
		      void *ctx, struct ms_pos *pos_r, uint64_t *seq_r)
{
	uint8_t hb[MS_REC_HDR_SIZE];
	struct ms_log_batch *b = batch_open(log);
	size_t at = b->data.len;

	if (b->last_seq == 0)
		flags |= MS_REC_F_BATCH; /* first record of its batch */
	ms_rec_encode_hdr(hb, type, flags, len, log->next_seq, log->timeline,
			  payload);
	if (ms_buf_reserve(&b->data, sizeof(hb) + len) < 0)
		return MS_ETOOBIG;
	ms_buf_append(&b->data, hb, sizeof(hb));
	ms_buf_append(&b->data, payload, len);
	XXH3_64bits_update(log->sum, b->data.data + at, sizeof(hb) + len);

	struct ms_pos pos = { log->head_seg, log->head_end };
	if (done != NULL) {
		if (b->nw == b->capw) {
			b->capw = b->capw ? b->capw * 2 : 64;
			b->w = ms_realloc(b->w, b->capw * sizeof(*b->w));
		}
		b->w[b->nw++] = (struct ms_log_waiter){ done, ctx,
							log->next_seq, pos };
	}
	if (pos_r != NULL)
		*pos_r = pos;
	if (seq_r != NULL)
		*seq_r = log->next_seq;
	b->last_seq = log->next_seq;
	log->head_end += sizeof(hb) + len;
	log->next_seq++;
	log->seg_count++;
	return 0;
}

static void head_seal(struct ms_log *log)
{
	struct ms_seg_seal s = {
		.count = log->seg_count,
		.first_seq = log->seg_first_seq,
		.last_seq = log->next_seq - 1,
		.seal_off = log->head_end,
		.sum = XXH3_64bits_digest(log->sum),
	};
	uint8_t p[MS_SEG_SEAL_PAYLOAD];

	ms_seg_seal_encode(&s, p);
	if (put_record(log, MS_REC_SEAL, 0, p, sizeof(p), NULL, NULL, NULL,
		       NULL) < 0)
		msg_panic("bug msg=\"batch buffer refused a seal record\"");
	log->q_last->sealed = 1;
	log->head_seg++;
	log->need_hdr = 1;
}

int ms_log_append(struct ms_log *log, uint8_t type, uint8_t flags,
		  const void *payload, uint32_t len, ms_log_done_fn *done,
		  void *ctx, struct ms_pos *pos_r, uint64_t *seq_r)
{
	const char *err;
	uint8_t probe[MS_REC_HDR_SIZE];
	struct ms_rec_hdr h;

	if (log->cfg.readonly)
		return MS_ESTATE;
	if (log->dead)
		return MS_ENOCOPY;
	if (len > MS_REC_MAX_PAYLOAD)
		return MS_ETOOBIG;
	if (type == MS_REC_SEAL || (flags & MS_REC_F_BATCH) != 0)
		return -EINVAL;
	/* the header must pass our own reader's checks */
	probe[0] = type;
	probe[1] = flags;
	ms_put16(probe + 2, 0);
	ms_put32(probe + 4, len);
	if (ms_rec_check_hdr(probe, &h, &err) < 0)
		return -EINVAL;

	uint64_t need = MS_REC_HDR_SIZE + (uint64_t)len + MS_SEG_SEAL_SIZE;
	if (!log->need_hdr && log->seg_count > 0 &&
	    log->head_end + need > log->cfg.seg_size)
		head_seal(log);
	if (log->need_hdr)
		head_start(log);
	/* TIMELINE (promotion): it and every record after it carry its new
	   timeline when that is above the current one (timelines never go
	   back; a TIMELINE that does not raise it changes nothing here) */
	uint64_t old_tl = log->timeline;
	if (type == MS_REC_TIMELINE && len >= 8 &&
	    ms_get64(payload) > log->timeline)
		log->timeline = ms_get64(payload);
	int ret = put_record(log, type, flags, payload, len, done, ctx, pos_r,
			     seq_r);
	if (ret < 0)
		log->timeline = old_tl;
	if (ret == 0) {
		log->st.appends++;
		log->st.append_bytes += len;
	}
	return ret;
}

/* ---- flushes ---- */

static int head_fd_for(struct ms_log *log, int c, struct ms_log_batch *b)
{
	struct ms_log_copy *cp = &log->copy[c];
	char name[MS_SEG_NAME_LEN + 1];

	if (cp->head_fd >= 0 && cp->head_fd_seg == b->seg)
		return cp->head_fd;
	if (cp->head_fd >= 0)
		close(cp->head_fd);
	cp->head_fd = -1;
	ms_seg_name(b->seg, name);
	int flags = O_RDWR | O_CLOEXEC | (b->new_seg ? O_CREAT | O_EXCL : 0);
	int fd = openat(cp->log_fd, name, flags, 0640);
	if (fd < 0) {
		int err = -errno;
		ms_log_copy_fail(log, c, err,
				 ms_errf("create segment %s", name));
		return err;
	}
	/* the new file's directory entry must be durable before its data
	   is acknowledged */
	if (b->new_seg && fsync(cp->log_fd) < 0) {
		int err = -errno;
		close(fd);
		ms_log_copy_fail(log, c, err, "fsync log directory");
		return err;
	}
	cp->head_fd = fd;
	cp->head_fd_seg = b->seg;
	cp->head_zero_end = 0;
	return fd;
}

static void batch_each(const struct ms_log_batch *b, ms_log_apply_fn *fn,
		       void *ctx);

/* A batch done with goes back to the spare list. */
static void batch_release(struct ms_log *log, struct ms_log_batch *b)
{
	b->next = log->spare;
	log->spare = b;
}

void ms_log_set_apply_hook(struct ms_log *log, ms_log_apply_fn *fn,
			   void *ctx)
{
	ms_log_apply_pending(log);
	log->apply = fn;
	log->apply_ctx = ctx;
}

void ms_log_set_notice_hook(struct ms_log *log, ms_log_apply_fn *fn,
			    void *ctx)
{
	log->notice = fn;
	log->notice_ctx = ctx;
}

void ms_log_defer_apply(struct ms_log *log, int on)
{
	if (!on)
		ms_log_apply_pending(log);
	log->defer_apply = on;
}

void ms_log_apply_pending(struct ms_log *log)
{
	while (log->applyq_first != NULL) {
		struct ms_log_batch *b = log->applyq_first;
		log->applyq_first = b->next;
		if (log->applyq_first == NULL)
			log->applyq_last = NULL;
		if (log->apply != NULL)
			batch_each(b, log->apply, log->apply_ctx);
		batch_release(log, b);
	}
}

/* The batch is durable: hand each of its records to a hook. */
static void batch_each(const struct ms_log_batch *b, ms_log_apply_fn *fn,
		       void *ctx)
{
	size_t off = b->new_seg ? MS_SEG_HDR_SIZE : 0;
	while (off + MS_REC_HDR_SIZE <= b->data.len) {
		struct ms_rec_hdr h;
		const char *err;
		/* our own bytes, encoded by put_record */
		if (ms_rec_check_hdr(b->data.data + off, &h, &err) < 0)
			msg_panic("bug msg=\"batch holds a bad record header\" "
				  "error=%s",
				  msg_q(err));
		fn(ctx, &h, b->data.data + off + MS_REC_HDR_SIZE,
		   (struct ms_pos){ b->seg, b->off + off });
		off += MS_REC_HDR_SIZE + h.len;
	}
}

static void batch_finish(struct ms_log *log, struct ms_log_batch *b,
			 int status)
{
	if (status == 0) {
		log->durable.seg = b->seg;
		log->durable.off = b->off + b->data.len;
		if (b->last_seq != 0)
			log->durable_seq = b->last_seq;
	}
	for (size_t i = 0; i < b->nw; i++) {
		b->w[i].fn(b->w[i].ctx, status, b->w[i].seq, b->w[i].pos);
	}
	b->nw = 0;
}

static void flush_fail_all(struct ms_log *log)
{
	log->dead = 1;
	while (log->q_first != NULL) {
		struct ms_log_batch *b = log->q_first;
		log->q_first = b->next;
		batch_finish(log, b, MS_ENOCOPY);
		batch_release(log, b);
	}
	log->q_last = NULL;
}

/*
 * Prepared space.  A flush that makes a file longer makes fdatasync write
 * the inode too (the new size), a second device write that the flush
 * waits for: here 150-160 us per write+fdatasync of 8 KiB appended at
 * the end of a file, 100 us over bytes that are there (a Python loop of
 * pwrite+fdatasync, 2,000 rounds each).  So when the head file will
 * hold less than half of MS_LOG_PREPARE past a flush's records, the
 * flush also writes zeros from the records' end to MS_LOG_PREPARE past
 * it: after the records and before the fdatasync (io.h), which makes
 * them and the new size durable, and the flushes after it overwrite
 * zeros and leave the size alone.  The engine writes them on its own
 * threads where it has some: up to a MiB of copying, which on the
 * loop's thread cost 5.7% of mstored's loop at 64 appending clients.
 * One flush is in flight at a time and the zeros start where its
 * records end: they never race a record write, never take space that
 * written records need (the records are written first), and zeros that
 * do not fit (a full disk) are left out, as the next records would not
 * fit there either; the flush's result does not depend on them.  The
 * zeros are never durable data: they are past log->durable, and a
 * reader stops where only zeros are left (seg.c).  A sealed segment is
 * cut to its seal when its last flush is done (the seal must be the
 * file's end); a closing log cuts the head file to its durable end;
 * recovery cuts a tail of zeros without saving it (recover.c).
 */
_Static_assert(MS_LOG_PREPARE <= MS_IO_ZEROS, "zeros: one write");

static void flush_zeros(struct ms_log *log, const struct ms_log_batch *b)
{
	uint64_t end = b->off + b->data.len;
	uint64_t zend = (end + MS_LOG_PREPARE) & ~(uint64_t)4095;

	if (zend > log->cfg.seg_size)
		zend = log->cfg.seg_size;
	for (int c = 0; c < MS_IO_COPIES; c++) {
		const struct ms_log_copy *cp = &log->copy[c];
		log->fl.zlen[c] = 0;
		if (b->sealed || b->data.len == 0 || log->fl.fd[c] < 0 ||
		    cp->head_fd != log->fl.fd[c] ||
		    cp->head_zero_end >= end + MS_LOG_PREPARE / 2 ||
		    cp->head_zero_end >= zend)
			continue;
		uint64_t at = cp->head_zero_end > end ? cp->head_zero_end : end;
		log->fl.zoff[c] = at;
		log->fl.zlen[c] = (size_t)(zend - at);
	}
}

static void flush_start(struct ms_log *log)
{
	struct ms_log_batch *b = log->q_first;
	int nok = 0;

	for (int c = 0; c < MS_IO_COPIES; c++) {
		log->fl.fd[c] = -1;
		if (c >= log->ncopies || log->copy[c].state != MS_COPY_OK)
			continue;
		int fd = head_fd_for(log, c, b);
		if (fd >= 0) {
			log->fl.fd[c] = fd;
			nok++;
		}
	}
	if (nok == 0) {
		flush_fail_all(log);
		return;
	}
	log->fl.buf = b->data.data;
	log->fl.len = b->data.len;
	log->fl.off = b->off;
	flush_zeros(log, b);
	log->flush_t0 = now_ns();
	int ret = log->io->ops->flush_start(log->io, &log->fl);
	if (ret < 0) {
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
			if (log->fl.fd[c] >= 0)
				ms_log_copy_fail(log, c, ret, "submit flush");
		flush_fail_all(log);
		return;
	}
	log->inflight = 1;
}

/* ---- flush histograms (log.h) ---- */

const uint64_t ms_log_flush_bounds_ns[MS_LOG_FLUSH_BUCKETS] = {
	50000,	   100000,    250000,	 500000,    1000000,
	2500000,   5000000,   10000000,	 25000000,  50000000,
	100000000, 250000000, 500000000, 750000000, 1000000000,
};
const uint64_t ms_log_batch_bounds[MS_LOG_BATCH_BUCKETS] = {
	1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096,
};

static void hist_add(uint64_t *hist, const uint64_t *bounds, size_t n,
		     uint64_t v)
{
	size_t i = 0;
	while (i < n && v > bounds[i])
		i++;
	hist[i]++;
}

/* Cut copy c's head file (segment seg) to end when zeros were prepared
   past it; never a failed copy's (it is not written again until it is
   repaired).  A cut that fails fails the copy, as any failed write does:
   its file would not end at its seal (seg.h), and the next open's
   recovery repairs it from the other copy. */
static void head_cut(struct ms_log *log, int c, uint64_t seg, uint64_t end)
{
	struct ms_log_copy *cp = &log->copy[c];
	int ret;

	if (cp->state != MS_COPY_OK || cp->head_fd < 0 ||
	    cp->head_fd_seg != seg || cp->head_zero_end <= end)
		return;
	if ((ret = log->io->ops->truncate(log->io, c, cp->head_fd, end)) < 0 ||
	    (ret = log->io->ops->datasync(log->io, c, cp->head_fd)) < 0) {
		ms_log_copy_fail(log, c, ret,
				 ms_errf("cut segment %llu to offset %llu",
					 (unsigned long long)seg,
					 (unsigned long long)end));
		return;
	}
	cp->head_zero_end = end;
}

/*
 * The secondary's written pages leave the page cache once durable.
 * Reads are served from the primary (ms_log_read); the secondary is
 * read only when the primary's record is bad, by a scrub, by verify and
 * by repair, and those should see the disk, not the bytes this process
 * wrote (the scrub drops what it read of the secondary again).  Keeping
 * them cached doubled the log's share of memory for nothing, and each
 * new cached page costs: on the dev VM a first-touch page cost about
 * 5 us of the writer's CPU against 1 us for a page freed a moment ago
 * (docs/performance.md).  Only whole pages are
 * dropped: the page holding the durable end (the next flush writes into
 * it) and the prepared zeros past it stay, so a write never waits for a
 * read of a page it only partly covers.  Advice: a failure changes
 * nothing but memory use, and is not reported.
 */
#define DROP_BACK (2u << 20)

static void drop_cached(int fd, uint64_t from, uint64_t to)
{
	uint64_t a = from & ~(uint64_t)4095, b = to & ~(uint64_t)4095;

	/* The page cache drops a large folio (up to 2 MiB on x86-64) only
	   when the range covers all of it.  One that held the last durable
	   end is covered by a later flush's range from 2 MiB back. */
	a = a > DROP_BACK ? a - DROP_BACK : 0;

	if (b > a)
		(void)posix_fadvise(fd, (off_t)a, (off_t)(b - a),
				    POSIX_FADV_DONTNEED);
}

static void flush_done(struct ms_log *log)
{
	struct ms_log_batch *b = log->q_first;
	int nok = 0;

	log->inflight = 0;
	for (int c = 0; c < MS_IO_COPIES; c++) {
		if (log->fl.fd[c] < 0)
			continue;
		if (log->fl.res[c] < 0)
			ms_log_copy_fail(log, c, log->fl.res[c],
					 ms_errf("write+fdatasync segment %llu "
						 "offset %llu length %zu",
						 (unsigned long long)b->seg,
						 (unsigned long long)b->off,
						 b->data.len));
		else
			nok++;
	}
	if (nok == 0) {
		flush_fail_all(log);
		return;
	}
	for (int c = 0; c < MS_IO_COPIES; c++) {
		struct ms_log_copy *cp = &log->copy[c];
		uint64_t wrote = log->fl.off + log->fl.len;
		if (log->fl.fd[c] < 0 || log->fl.res[c] != 0 ||
		    cp->head_fd != log->fl.fd[c])
			continue;
		if (wrote > cp->head_zero_end)
			cp->head_zero_end = wrote;
		if (log->fl.zlen[c] > 0 && log->fl.zres[c] == 0 &&
		    log->fl.zoff[c] + log->fl.zlen[c] > cp->head_zero_end)
			cp->head_zero_end = log->fl.zoff[c] + log->fl.zlen[c];
		if (c > 0)
			drop_cached(log->fl.fd[c], log->fl.off, wrote);
	}
	log->st.flushes++;
	log->st.flushed_records += b->nw;
	uint64_t flush_ns = now_ns() - log->flush_t0;
	log->last_flush_ns = flush_ns;
	log->st.flush_ns += flush_ns;
	hist_add(log->st.flush_hist, ms_log_flush_bounds_ns,
		 MS_LOG_FLUSH_BUCKETS, flush_ns);
	hist_add(log->st.batch_hist, ms_log_batch_bounds,
		 MS_LOG_BATCH_BUCKETS, b->nw);
	log->q_first = b->next;
	if (log->q_first == NULL)
		log->q_last = NULL;
	if (b->sealed)
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
			head_cut(log, c, b->seg, b->off + b->data.len);
	/* the apply hook before the done callbacks, or, deferred, at
	   ms_log_apply_pending() */
	int defer = log->defer_apply && log->apply != NULL;
	if (log->notice != NULL)
		batch_each(b, log->notice, log->notice_ctx);
	if (log->apply != NULL && !defer)
		batch_each(b, log->apply, log->apply_ctx);
	batch_finish(log, b, 0);
	if (b->sealed) {
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
			if (log->copy[c].head_fd >= 0)
				close(log->copy[c].head_fd);
			log->copy[c].head_fd = -1;
		}
	}
	if (!defer) {
		batch_release(log, b);
		return;
	}
	b->next = NULL;
	if (log->applyq_last != NULL)
		log->applyq_last->next = b;
	else
		log->applyq_first = b;
	log->applyq_last = b;
}

int ms_log_reap(struct ms_log *log, int block)
{
	if (log->inflight) {
		int r = log->io->ops->flush_reap(log->io, &log->fl, block);
		if (r < 0)
			return r;
		if (r == 0)
			return 1;
		flush_done(log);
	}
	return log->inflight || log->q_first != NULL;
}

int ms_log_kick(struct ms_log *log)
{
	if (!log->inflight && log->q_first != NULL && !log->dead)
		flush_start(log);
	return log->inflight || log->q_first != NULL;
}

int ms_log_run(struct ms_log *log, int block)
{
	int r = ms_log_reap(log, block);
	if (r < 0)
		return r;
	return ms_log_kick(log);
}

int ms_log_waiting(const struct ms_log *log)
{
	return !log->inflight && log->q_first != NULL && !log->dead;
}

uint64_t ms_log_last_flush_ns(const struct ms_log *log)
{
	return log->last_flush_ns;
}

void ms_log_durable(const struct ms_log *log, struct ms_pos *end_r,
		    uint64_t *seq_r)
{
	*end_r = log->durable;
	*seq_r = log->durable_seq;
}

int ms_log_sync(struct ms_log *log)
{
	int r;
	while ((r = ms_log_run(log, 1)) > 0)
		;
	ms_log_apply_pending(log);
	if (r < 0)
		return r;
	return log->dead ? MS_ENOCOPY : 0;
}

int ms_log_event_fd(struct ms_log *log)
{
	return log->io->ops->event_fd(log->io);
}

/* ---- reads ---- */

/* Read and check the record at pos on copy c. */
static int read_copy(struct ms_log *log, int c, struct ms_pos pos,
		     struct ms_rec_hdr *hdr_r, struct ms_buf *out,
		     const char **error_r)
{
	uint8_t hb[MS_REC_HDR_SIZE];
	int fd = ms_log_seg_fd(log, c, pos.seg);
	int ret;

	if (fd < 0) {
		*error_r = ms_errf("open: %s", ms_strerror(fd));
		return fd;
	}
	ret = log->io->ops->pread(log->io, c, fd, hb, sizeof(hb), pos.off);
	if (ret < 0) {
		*error_r = ms_errf("read header: %s", ms_strerror(ret));
		return ret;
	}
	if ((ret = ms_rec_check_hdr(hb, hdr_r, error_r)) < 0)
		return ret;
	ms_buf_reset(out);
	if (hdr_r->type == MS_REC_HOLE) /* no payload to read (rec.h) */
		return ms_rec_check_sum(hb, NULL, 0, error_r);
	if ((ret = ms_buf_resize(out, hdr_r->len)) < 0) {
		*error_r = "record larger than the read buffer allows";
		return ret;
	}
	ret = log->io->ops->pread(log->io, c, fd, out->data, hdr_r->len,
				  pos.off + MS_REC_HDR_SIZE);
	if (ret < 0) {
		*error_r = ms_errf("read payload: %s", ms_strerror(ret));
		return ret;
	}
	return ms_rec_check_sum(hb, out->data, hdr_r->len, error_r);
}

static void heal(struct ms_log *log, int c, struct ms_pos pos,
		 const struct ms_rec_hdr *h, const uint8_t *payload)
{
	uint8_t hb[MS_REC_HDR_SIZE];
	int fd = ms_log_seg_fd(log, c, pos.seg);
	int ret = fd;

	/* rebuild the exact header bytes of the good copy */
	ms_rec_encode_hdr(hb, h->type, h->flags, h->len, h->seq, h->timeline,
			  payload);
	if (fd >= 0) {
		/* from here the file may read otherwise (ms_log_file_epoch) */
		log->file_epoch++;
		ret = log->io->ops->pwrite(log->io, c, fd, hb, sizeof(hb),
					   pos.off);
	}
	if (ret >= 0 && h->type != MS_REC_HOLE)
		ret = log->io->ops->pwrite(log->io, c, fd, payload,
					   h->len, pos.off + MS_REC_HDR_SIZE);
	if (ret >= 0)
		ret = log->io->ops->datasync(log->io, c, fd);
	if (ret < 0) {
		msg_error("heal.failed copy=%s segment=%llu offset=%llu error=%s",
			  ms_log_copy_name(c), (unsigned long long)pos.seg,
			  (unsigned long long)pos.off, msg_q(ms_strerror(ret)));
		return;
	}
	log->st.heals++;
	msg_warn("heal.rewritten copy=%s segment=%llu offset=%llu source=%s "
		 "msg=\"bad record rewritten from the %s copy\"",
		 ms_log_copy_name(c), (unsigned long long)pos.seg,
		 (unsigned long long)pos.off, ms_log_copy_name(1 - c),
		 ms_log_copy_name(1 - c));
}

uint64_t ms_log_file_epoch(const struct ms_log *log)
{
	return log->file_epoch;
}

int ms_log_file(struct ms_log *log, int copy, uint64_t seg)
{
	if (copy < 0 || copy >= log->ncopies || copy >= MS_IO_COPIES)
		return -EINVAL;
	return ms_log_seg_fd(log, copy, seg);
}

int ms_log_read_part(struct ms_log *log, int copy, struct ms_pos pos,
		     uint64_t off, void *buf, size_t len)
{
	int fd = ms_log_file(log, copy, pos.seg);
	if (fd < 0)
		return fd;
	return log->io->ops->pread(log->io, copy, fd, buf, len,
				   pos.off + MS_REC_HDR_SIZE + off);
}

int ms_log_read(struct ms_log *log, struct ms_pos pos,
		struct ms_rec_hdr *hdr_r, struct ms_buf *payload,
		const char **error_r)
{
	return ms_log_read_at(log, pos, hdr_r, payload, NULL, error_r);
}

int ms_log_read_at(struct ms_log *log, struct ms_pos pos,
		   struct ms_rec_hdr *hdr_r, struct ms_buf *payload,
		   int *copy_r, const char **error_r)
{
	const char *why[MS_IO_COPIES] = { "not tried", "not tried" };
	int bad[MS_IO_COPIES] = { 0, 0 };
	int ret = MS_ECORRUPT;

	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	if (pos.seg > log->durable.seg ||
	    (pos.seg == log->durable.seg && pos.off >= log->durable.off) ||
	    pos.off < MS_SEG_HDR_SIZE) {
		*error_r = ms_errf("segment %llu offset %llu: not a durable "
				   "record position",
				   (unsigned long long)pos.seg,
				   (unsigned long long)pos.off);
		return MS_ENOTFOUND;
	}
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		struct ms_rec_hdr h;
		ret = read_copy(log, c, pos, &h, payload, &why[c]);
		if (ret == 0) {
			for (int o = 0; o < c; o++)
				if (bad[o] && !log->cfg.readonly)
					heal(log, o, pos, &h, payload->data);
			*hdr_r = h;
			if (copy_r != NULL)
				*copy_r = c;
			return 0;
		}
		bad[c] = 1;
		log->st.read_errors++;
		msg_warn("record.bad copy=%s segment=%llu offset=%llu error=%s",
			 ms_log_copy_name(c), (unsigned long long)pos.seg,
			 (unsigned long long)pos.off, msg_q(why[c]));
	}
	*error_r = ms_errf("segment %llu offset %llu: bad on every copy "
			   "(primary: %s; secondary: %s)",
			   (unsigned long long)pos.seg,
			   (unsigned long long)pos.off, why[0],
			   log->ncopies > 1 ? why[1] : "none configured");
	return ret == MS_ENOTFOUND ? MS_ECORRUPT : (ret < 0 ? ret : MS_ECORRUPT);
}

/*
 * The scrub reads each copy through a window: one read from a record's
 * start of what the step has left to read (at most SCRUB_WIN bytes, and
 * a page more for the record that ends the step), whose records are then
 * checked where they lie, instead of two reads (header, payload) per
 * record and copy.  At 8 MB/s of records a few hundred bytes long those
 * were some 50,000 reads a second, several percent of a core with
 * nothing else to do.  A record longer than the window is read on its
 * own (read_copy), as is one whose window could not be read: read_copy
 * then says why, for that record.  The checks are read_copy's, on the
 * same bytes.  A window lives for one step: what it holds may be
 * rewritten between steps (a heal, a compaction).
 */
#define SCRUB_WIN (128u << 10)

struct scrub_win {
	uint8_t *data;		/* SCRUB_WIN bytes (the log's, reused) */
	struct ms_buf own;	/* a record read on its own */
	uint64_t seg, off;	/* what data holds: seg's [off, off+len) */
	size_t len;
	uint64_t size_seg;	/* the segment whose file size is known */
	uint64_t size;
	uint64_t left;		/* bytes of records the step may still read */
};

/* Fill w from pos on copy c: what the step has left, as the file has it. */
static void scrub_fill(struct ms_log *log, int c, struct ms_pos pos,
		       struct scrub_win *w)
{
	int fd = ms_log_seg_fd(log, c, pos.seg);
	struct stat st;

	w->len = 0;
	if (fd < 0)
		return;
	if (w->size_seg != pos.seg) {
		if (fstat(fd, &st) < 0)
			return;
		w->size_seg = pos.seg;
		w->size = (uint64_t)st.st_size;
	}
	if (w->size <= pos.off)
		return;
	uint64_t want = w->left + 4096;
	if (want > SCRUB_WIN)
		want = SCRUB_WIN;
	if (want > w->size - pos.off)
		want = w->size - pos.off;
	/* not past the durable end of the head segment: the zeros kept
	   ready there, and the page the next flush writes into */
	if (pos.seg == log->durable.seg && want > log->durable.off - pos.off)
		want = log->durable.off - pos.off;
	if (log->io->ops->pread(log->io, c, fd, w->data, (size_t)want,
				pos.off) < 0)
		return;
	w->seg = pos.seg;
	w->off = pos.off;
	w->len = (size_t)want;
}

/* Whether w holds pos's segment's bytes [pos.off, pos.off+len). */
static int scrub_has(const struct scrub_win *w, struct ms_pos pos,
		     uint64_t len)
{
	return w->len > 0 && w->seg == pos.seg && pos.off >= w->off &&
	       pos.off + len <= w->off + w->len;
}

/* The record at pos on copy c, checked; *payload_r points at its
   payload (in the window or w->own), NULL for a HOLE. */
static int scrub_read(struct ms_log *log, int c, struct ms_pos pos,
		      struct scrub_win *w, struct ms_rec_hdr *hdr_r,
		      const uint8_t **payload_r, const char **error_r)
{
	*payload_r = NULL;
	if (!scrub_has(w, pos, MS_REC_HDR_SIZE))
		scrub_fill(log, c, pos, w);
	if (scrub_has(w, pos, MS_REC_HDR_SIZE)) {
		const uint8_t *hb = w->data + (pos.off - w->off);
		int ret = ms_rec_check_hdr(hb, hdr_r, error_r);
		if (ret < 0)
			return ret;
		if (hdr_r->type == MS_REC_HOLE)
			return ms_rec_check_sum(hb, NULL, 0, error_r);
		uint64_t span = MS_REC_HDR_SIZE + (uint64_t)hdr_r->len;
		/* cut by the window's end: a window from this record, if it
		   fits one and this one did not start here already */
		if (!scrub_has(w, pos, span) && span <= SCRUB_WIN &&
		    pos.off != w->off)
			scrub_fill(log, c, pos, w);
		if (scrub_has(w, pos, span)) {
			hb = w->data + (pos.off - w->off);
			*payload_r = hb + MS_REC_HDR_SIZE;
			return ms_rec_check_sum(hb, *payload_r, hdr_r->len,
						error_r);
		}
	}
	/* longer than a window, or no window could be read: on its own,
	   and read_copy says what is wrong */
	int ret = read_copy(log, c, pos, hdr_r, &w->own, error_r);
	if (ret == 0 && hdr_r->type != MS_REC_HOLE)
		*payload_r = w->own.data;
	return ret;
}

/*
 * Scrub from *posp, at most max_bytes of records (0: no limit), stopping
 * after a seal or at the durable end; *posp is left after the last record
 * checked.  1 if the segment was finished (seal or durable end), 0 if
 * the budget ran out first, <0 when a record is bad on every copy.
 */
static int scrub_from(struct ms_log *log, struct ms_pos *posp,
		      uint64_t max_bytes, struct ms_scrub_stats *st,
		      const char **error_r)
{
	struct scrub_win w[MS_IO_COPIES];
	struct ms_pos pos = *posp, start = *posp;
	uint64_t done = 0;
	int ret = 1;

	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	memset(w, 0, sizeof(w));
	for (int c = 0; c < MS_IO_COPIES; c++) {
		w[c].size_seg = UINT64_MAX;
		ms_buf_init(&w[c].own, 0);
		if (c >= log->ncopies)
			continue;
		if (log->scrub_win[c].data == NULL &&
		    ms_buf_resize(&log->scrub_win[c], SCRUB_WIN) < 0)
			ms_assert(!"cannot happen: no limit on the buffer");
		w[c].data = log->scrub_win[c].data;
	}
	for (;;) {
		struct ms_rec_hdr h[MS_IO_COPIES];
		const uint8_t *pl[MS_IO_COPIES] = { NULL, NULL };
		const char *why[MS_IO_COPIES] = { "", "" };
		int ok[MS_IO_COPIES] = { 0, 0 }, good = -1;

		if (pos.seg > log->durable.seg ||
		    (pos.seg == log->durable.seg && pos.off >= log->durable.off))
			break;
		if (max_bytes != 0 && done >= max_bytes) {
			ret = 0;
			break;
		}
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
			w[c].left = max_bytes == 0 ? SCRUB_WIN
						   : max_bytes - done;
			ok[c] = scrub_read(log, c, pos, &w[c], &h[c], &pl[c],
					   &why[c]) == 0;
			if (ok[c] && good < 0)
				good = c;
		}
		if (good < 0) {
			st->bad++;
			*error_r = ms_errf("segment %llu offset %llu: bad on "
					   "every copy (primary: %s; "
					   "secondary: %s)",
					   (unsigned long long)pos.seg,
					   (unsigned long long)pos.off, why[0],
					   log->ncopies > 1 ? why[1] : "none");
			ret = MS_ECORRUPT;
			break;
		}
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
			if (c == good)
				continue;
			if (ok[c] && h[c].sum == h[good].sum &&
			    h[c].len == h[good].len &&
			    (h[c].type == MS_REC_HOLE ||
			     memcmp(pl[c], pl[good], h[c].len) == 0))
				continue;
			/* a compaction that reached one copy and not yet the
			   other (ms_log_compact_seg finishes it): not damage */
			if (ok[c] && h[c].seq == h[good].seq &&
			    h[c].len == h[good].len &&
			    (h[c].type == MS_REC_HOLE) !=
				    (h[good].type == MS_REC_HOLE)) {
				st->pending++;
				continue;
			}
			if (!ok[c])
				msg_warn("record.bad copy=%s segment=%llu "
					 "offset=%llu error=%s",
					 ms_log_copy_name(c),
					 (unsigned long long)pos.seg,
					 (unsigned long long)pos.off,
					 msg_q(why[c]));
			if (log->cfg.readonly || log->copy[c].state != MS_COPY_OK)
				continue;
			heal(log, c, pos, &h[good], pl[good]);
			st->healed++;
		}
		st->records++;
		st->bytes += MS_REC_HDR_SIZE + h[good].len;
		done += MS_REC_HDR_SIZE + h[good].len;
		pos.off += MS_REC_HDR_SIZE + h[good].len;
		if (h[good].type == MS_REC_SEAL)
			break;
	}
	/* what the scrub checked of the secondary leaves the cache again
	   (flush_done): its next pass reads the disk too.  Whole pages up
	   to the last record checked: what the window read past it is
	   the next step's, and in the head segment the page holding the
	   durable end stays (the next flush writes into it) */
	for (int c = 1; c < MS_IO_COPIES && c < log->ncopies; c++) {
		int fd;
		if (pos.seg == start.seg && pos.off > start.off &&
		    (fd = ms_log_seg_fd(log, c, start.seg)) >= 0)
			drop_cached(fd, start.off, pos.off);
	}
	for (int c = 0; c < MS_IO_COPIES; c++)
		ms_buf_free(&w[c].own);
	*posp = pos;
	return ret;
}

int ms_log_scrub(struct ms_log *log, uint64_t seg, struct ms_scrub_stats *st,
		 const char **error_r)
{
	struct ms_pos pos = { seg, MS_SEG_HDR_SIZE };
	int ret = scrub_from(log, &pos, 0, st, error_r);
	return ret < 0 ? ret : 0;
}

int ms_log_scrub_step(struct ms_log *log, struct ms_pos *pos,
		      uint64_t max_bytes, struct ms_scrub_stats *st,
		      const char **error_r)
{
	size_t i = 0;
	if (log->nsegs == 0)
		return 1;
	/* where the position is (segments may have gone since) */
	while (i < log->nsegs && log->segs[i] < pos->seg)
		i++;
	if (i == log->nsegs || pos->off < MS_SEG_HDR_SIZE) {
		if (i == log->nsegs)
			i = 0;
		*pos = (struct ms_pos){ log->segs[i], MS_SEG_HDR_SIZE };
	} else if (log->segs[i] != pos->seg) {
		*pos = (struct ms_pos){ log->segs[i], MS_SEG_HDR_SIZE };
	}
	int ret = scrub_from(log, pos, max_bytes, st, error_r);
	if (ret < 0) {
		/* cannot read past it: the next step starts at the next
		   segment (the error was reported and counted) */
		if (i + 1 < log->nsegs)
			*pos = (struct ms_pos){ log->segs[i + 1],
						MS_SEG_HDR_SIZE };
		else
			*pos = (struct ms_pos){ log->segs[0], MS_SEG_HDR_SIZE };
		return ret;
	}
	if (ret == 1) {
		/* this segment is done: on to the next, or a new pass */
		if (i + 1 < log->nsegs) {
			*pos = (struct ms_pos){ log->segs[i + 1],
						MS_SEG_HDR_SIZE };
			return 0;
		}
		*pos = (struct ms_pos){ log->segs[0], MS_SEG_HDR_SIZE };
		return 1;
	}
	return 0;
}

const uint64_t *ms_log_segments(struct ms_log *log, size_t *n_r)
{
	*n_r = log->nsegs;
	return log->segs;
}

/* ---- iteration ---- */

struct ms_log_iter {
	struct ms_log *log;
	size_t segi;
	struct ms_pos pos;
	struct ms_buf payload;
};

int ms_log_iter_new(struct ms_log *log, struct ms_pos from,
		    struct ms_log_iter **it_r)
{
	struct ms_log_iter *it = ms_calloc(1, sizeof(*it));
	it->log = log;
	ms_buf_init(&it->payload, 0);
	it->segi = 0;
	if (from.seg != 0) {
		while (it->segi < log->nsegs && log->segs[it->segi] < from.seg)
			it->segi++;
	}
	it->pos.seg = it->segi < log->nsegs ? log->segs[it->segi] : 0;
	it->pos.off = from.seg != 0 && it->pos.seg == from.seg &&
				      from.off > MS_SEG_HDR_SIZE
			      ? from.off
			      : MS_SEG_HDR_SIZE;
	*it_r = it;
	return 0;
}

int ms_log_iter_next(struct ms_log_iter *it, struct ms_pos *pos_r,
		     struct ms_rec_hdr *hdr_r, const uint8_t **payload_r,
		     const char **error_r)
{
	struct ms_log *log = it->log;

	for (;;) {
		if (it->segi >= log->nsegs)
			return 0;
		if (it->pos.seg > log->durable.seg ||
		    (it->pos.seg == log->durable.seg &&
		     it->pos.off >= log->durable.off))
			return 0;
		int ret = ms_log_read(log, it->pos, hdr_r, &it->payload,
				      error_r);
		if (ret < 0)
			return ret;
		*pos_r = it->pos;
		*payload_r = it->payload.data;
		if (hdr_r->type == MS_REC_SEAL) {
			/* a seal ends its segment: go on to the next */
			if (++it->segi < log->nsegs) {
				it->pos.seg = log->segs[it->segi];
				it->pos.off = MS_SEG_HDR_SIZE;
			} else {
				it->pos.off += MS_REC_HDR_SIZE + hdr_r->len;
			}
		} else {
			it->pos.off += MS_REC_HDR_SIZE + hdr_r->len;
		}
		return 1;
	}
}

void ms_log_iter_free(struct ms_log_iter **itp)
{
	struct ms_log_iter *it = *itp;
	if (it == NULL)
		return;
	ms_buf_free(&it->payload);
	free(it);
	*itp = NULL;
}

/* ---- status, close ---- */

void ms_log_get_status(struct ms_log *log, struct ms_log_status *st)
{
	*st = log->st;
	st->ncopies = log->ncopies;
	st->degraded = 0;
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		st->copy[c] = log->copy[c].state;
		st->copy_dir[c] = log->copy[c].root;
		snprintf(st->copy_error[c], sizeof(st->copy_error[c]), "%s",
			 log->copy[c].error);
		if (log->copy[c].state != MS_COPY_OK)
			st->degraded = 1;
	}
	st->dead = log->dead;
	st->engine = log->io ? log->io->ops->name : "none";
	st->durable = log->durable;
	st->durable_seq = log->durable_seq;
	st->next_seq = log->next_seq;
	st->timeline = log->timeline;
	st->first_seg = log->nsegs ? log->segs[0] : 0;
	st->head_seg = log->head_seg;
	st->nsegs = log->nsegs;
}

int ms_log_dead(const struct ms_log *log)
{
	return log->dead;
}

const struct ms_meta *ms_log_meta(struct ms_log *log)
{
	return &log->meta;
}

static void batch_free_list(struct ms_log_batch *b)
{
	while (b != NULL) {
		struct ms_log_batch *next = b->next;
		ms_buf_free(&b->data);
		free(b->w);
		free(b);
		b = next;
	}
}

void ms_log_close(struct ms_log **logp)
{
	struct ms_log *log = *logp;
	if (log == NULL)
		return;
	if (!log->cfg.readonly && log->io != NULL &&
	    ms_log_sync(log) == 0 && !log->dead)
		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
			head_cut(log, c, log->durable.seg, log->durable.off);
	ms_log_apply_pending(log);
	batch_free_list(log->q_first);
	batch_free_list(log->spare);
	for (int c = 0; c < MS_IO_COPIES; c++) {
		struct ms_log_copy *cp = &log->copy[c];
		for (int i = 0; i < MS_LOG_FD_CACHE; i++)
			if (cp->cache[i].fd >= 0)
				close(cp->cache[i].fd);
		if (cp->head_fd >= 0)
			close(cp->head_fd);
		if (cp->log_fd >= 0)
			close(cp->log_fd);
		if (cp->root_fd >= 0)
			close(cp->root_fd);
		if (cp->lock_fd >= 0)
			close(cp->lock_fd); /* releases the flock */
		free(cp->root);
	}
	for (int c = 0; c < MS_IO_COPIES; c++)
		ms_buf_free(&log->scrub_win[c]);
	ms_io_free(&log->io);
	if (log->sum != NULL)
		XXH3_freeState(log->sum);
	free(log->segs);
	free(log);
	*logp = NULL;
}
