/*
 * udsync_store.c - the DR store, written by udsync recv alone: the bytes
 * of the primary's segments at the same offsets of the same segment
 * files, on both DR copies, with the log engine's rules
 * (docs/replication.md, "The receiver"):
 *
 *   - every record is checked before it is queued (header checks and
 *     XXH3; seq +1 each; timeline never smaller; a segment header names
 *     this store, the segment expected and the next seq; a seal matches
 *     the count, seqs, offset and checksum of what came before it);
 *   - a flush writes what was checked to both copies at its offset and
 *     fdatasyncs both; a new segment file is created (O_EXCL) and the
 *     log directory fsynced before its bytes are acknowledged;
 *   - the position acknowledged is the end of what was flushed;
 *   - a RETIRE record, once durable here, compacts this store's copy of
 *     its segment in place exactly as the primary did (ms_log_compact_*
 *     on an ms_log opened for the moment), arriving at the RETIRE's sum.
 *
 * Open: an existing DR store is opened once with ms_log_open (the
 * engine's recovery: torn tail to lost+found/, the copies reconciled),
 * then its newest segment is read to restore the running state.  The
 * store lock (mstore.lock on each copy) is then held, so that no mstored
 * or tool writes the DR store while udsync recv runs; a standby mstored
 * opens it read-only.  The store is a DR replica (mstore.replica, seg.h):
 * the marker is written before the primary's identity is taken (and on
 * a DR store that has udsync.pos but no marker yet, at open), so no
 * plain mstored or writing tool opens it read-write when udsync recv is
 * not running either; `mstore promote` removes it.
 *
 * Errors: a record that fails a check is refused with its position (the
 * caller drops the link; nothing of it is written).  A write or sync
 * that fails on either copy is returned as an error: udsync recv then
 * exits, and its restart recovers (no copy is ever marked failed here).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "event.h"
#include "log.h"
#include "msg.h"
#include "udsync.h"

#define NCOPIES 2

struct udsync_store {
	char *dir[NCOPIES];
	int root_fd[NCOPIES], log_fd[NCOPIES], lock_fd[NCOPIES];
	int have_meta;
	struct ms_meta meta;

	/* the newest segment: seg (0: none yet), durable bytes `end` */
	uint64_t seg, end;
	int sealed;		/* it ends with its seal */
	int fd[NCOPIES];	/* of seg, both copies */
	uint64_t next_seq, last_seq, timeline;
	uint64_t seg_first_seq, seg_count;
	uint64_t seg_tl;	/* the timeline in seg's header */
	XXH3_state_t *sum;	/* of seg's checked bytes */
	int pos_fd[NCOPIES];	/* udsync.pos */

	/* checked, queued for the next flush: bytes [qoff, qoff+q.len) of
	   segment qseg; qnew: the file is to be created */
	struct ms_buf q;
	uint64_t qseg, qoff;
	int qnew, qsealed;
	uint64_t q_next_seq, q_last_seq, q_timeline;
	/* input not yet a whole record, at (pseg, poff) */
	struct ms_buf pend;
	uint64_t pseg, poff;
	/* RETIRE payloads among the queued records */
	struct ms_buf *retire;
	size_t nretire;

	/* re-fetch of segment `refetch` (its seal did not match: resumed
	   across a compaction on the primary): the next session asks for it
	   from offset 0; `refetching` while its bytes go to NNN.seg.refetch
	   (tfd), `rf_end` written there so far.  The old file stays in
	   place, and stays the durable truth, until the new one is whole
	   (sealed), synced and renamed over it. */
	uint64_t refetch;
	int refetching;
	int tfd[NCOPIES];
	uint64_t rf_end;
};

#define POS_NAME "udsync.pos"
#define POS_SIZE 48
static const uint8_t pos_magic[8] = { 'U', 'D', 'S', 'P', 'O', 'S', 0, 1 };

static int lock_copies(struct udsync_store *st, const char **error_r)
{
	for (int c = 0; c < NCOPIES; c++) {
		st->lock_fd[c] = openat(st->root_fd[c], "mstore.lock",
					O_RDWR | O_CREAT | O_CLOEXEC, 0640);
		if (st->lock_fd[c] < 0 ||
		    flock(st->lock_fd[c], LOCK_EX | LOCK_NB) < 0) {
			*error_r = ms_errf("DR copy %s is in use (an mstored "
					   "that is not a standby, a tool, "
					   "another udsync recv?): %s",
					   st->dir[c], strerror(errno));
			return -EBUSY;
		}
	}
	return 0;
}

static void unlock_copies(struct udsync_store *st)
{
	for (int c = 0; c < NCOPIES; c++) {
		if (st->lock_fd[c] >= 0)
			close(st->lock_fd[c]);
		st->lock_fd[c] = -1;
	}
}

static int open_dirs(struct udsync_store *st, const char **error_r)
{
	for (int c = 0; c < NCOPIES; c++) {
		if (mkdir(st->dir[c], 0750) < 0 && errno != EEXIST)
			goto fail;
		st->root_fd[c] = open(st->dir[c],
				      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (st->root_fd[c] < 0)
			goto fail;
		if ((mkdirat(st->root_fd[c], "log", 0750) < 0 &&
		     errno != EEXIST) ||
		    (mkdirat(st->root_fd[c], "lost+found", 0750) < 0 &&
		     errno != EEXIST))
			goto fail;
		st->log_fd[c] = openat(st->root_fd[c], "log",
				       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (st->log_fd[c] < 0)
			goto fail;
		/* mkdir's directory entries */
		if (fsync(st->root_fd[c]) < 0)
			goto fail;
		continue;
	fail:
		*error_r = ms_errf("DR copy %s: %s", st->dir[c],
				   strerror(errno));
		return -errno;
	}
	return 0;
}

static int newest_segment(struct udsync_store *st, uint64_t *seg_r)
{
	uint64_t best = 0;
	for (int c = 0; c < NCOPIES; c++) {
		int dfd = dup(st->log_fd[c]);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;
		if (d == NULL) {
			if (dfd >= 0)
				close(dfd);
			return -errno;
		}
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			uint64_t s;
			if (ms_seg_parse_name(de->d_name, &s) == 0 && s > best)
				best = s;
		}
		closedir(d);
	}
	*seg_r = best;
	return 0;
}

/*
 * The durable position file, <copy>/udsync.pos: where the DR log was
 * durable on both copies at the end of the last flush (segment, end of
 * its bytes, last seq, timeline), written and fdatasynced after the
 * flush's data and before its ACK.  A receiver flush spans several of
 * the primary's batches, so after a power loss its torn part may hold a
 * valid batch-start record past a damaged one, which the engine's
 * recovery would take for damage to acknowledged records; nothing past
 * this position was ever acknowledged, so udsync recv cuts the DR log
 * to it (to lost+found/) before the engine's recovery runs.
 *
 *   magic "UDSPOS\0\1" | seg u64 | off u64 | seq u64 | timeline u64 |
 *   XXH3-64 of the 40 bytes before it
 */
struct dr_pos {
	uint64_t seg, off, seq, timeline;
};

static int pos_write(struct udsync_store *st, const char **error_r)
{
	uint8_t b[POS_SIZE];
	memcpy(b, pos_magic, 8);
	ms_put64(b + 8, st->seg);
	ms_put64(b + 16, st->end);
	ms_put64(b + 24, st->last_seq);
	ms_put64(b + 32, st->timeline);
	ms_put64(b + 40, XXH3_64bits(b, 40));
	for (int c = 0; c < NCOPIES; c++) {
		int created = 0, ret = 0;
		if (st->pos_fd[c] < 0) {
			st->pos_fd[c] = openat(st->root_fd[c], POS_NAME,
					       O_RDWR | O_CREAT | O_CLOEXEC,
					       0640);
			created = 1;
		}
		if (st->pos_fd[c] < 0)
			ret = -errno;
		if (ret == 0)
			ret = ms_pwrite_full(st->pos_fd[c], b, POS_SIZE, 0);
		if (ret == 0 && fdatasync(st->pos_fd[c]) < 0)
			ret = -errno;
		if (ret == 0 && created && fsync(st->root_fd[c]) < 0)
			ret = -errno;
		if (ret < 0) {
			*error_r = ms_errf("DR copy %s: write+fdatasync %s: %s",
					   st->dir[c], POS_NAME,
					   ms_strerror(ret));
			return ret;
		}
	}
	return 0;
}

static int pos_read(int root_fd, struct dr_pos *p)
{
	uint8_t b[POS_SIZE];
	int fd = openat(root_fd, POS_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = pread(fd, b, POS_SIZE, 0);
	close(fd);
	if (n != POS_SIZE || memcmp(b, pos_magic, 8) != 0 ||
	    ms_get64(b + 40) != XXH3_64bits(b, 40))
		return MS_ECORRUPT;
	p->seg = ms_get64(b + 8);
	p->off = ms_get64(b + 16);
	p->seq = ms_get64(b + 24);
	p->timeline = ms_get64(b + 32);
	return 0;
}

/* Copy [off, size) of fd to lost+found/<name>@<off>.udsync-cut.<time>. */
static int save_cut(struct udsync_store *st, int c, const char *name, int fd,
		    uint64_t off, uint64_t size)
{
	char dst[320];
	snprintf(dst, sizeof(dst), "lost+found/%s@%llu.udsync-cut.%lld", name,
		 (unsigned long long)off, (long long)time(NULL));
	return ms_save_range(st->root_fd[c], dst, fd, off, size);
}

/*
 * Cut each DR copy to the durable position: segments past it go to
 * lost+found whole, its segment's bytes past it are saved there and cut.
 * No position file (a DR store written before it existed, or not yet
 * flushed): nothing is cut.
 */
static int pos_cut(struct udsync_store *st, const char **error_r)
{
	struct dr_pos p[NCOPIES], best = { 0, 0, 0, 0 };
	int have = 0;
	for (int c = 0; c < NCOPIES; c++) {
		if (pos_read(st->root_fd[c], &p[c]) < 0)
			continue;
		/* both copies were synced before either file was written:
		   the furthest valid one is durable on both */
		/* not garbage: pos_read filled it (analyzer: openat errno 0) */
		/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinary*) */
		if (!have || p[c].seg > best.seg ||
		    (p[c].seg == best.seg && p[c].off > best.off))
			best = p[c];
		have = 1;
	}
	if (!have || best.seg == 0)
		return 0;
	for (int c = 0; c < NCOPIES; c++) {
		int dfd = dup(st->log_fd[c]);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;
		int changed = 0;
		if (d == NULL) {
			if (dfd >= 0)
				close(dfd);
			*error_r = ms_errf("DR copy %s: list log: %s",
					   st->dir[c], strerror(errno));
			return -errno;
		}
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			uint64_t seg;
			char dst[320];
			struct stat sb;
			if (ms_seg_parse_name(de->d_name, &seg) < 0 ||
			    seg < best.seg)
				continue;
			if (seg > best.seg) {
				snprintf(dst, sizeof(dst),
					 "../lost+found/%s.udsync-cut.%lld",
					 de->d_name, (long long)time(NULL));
				if (renameat(st->log_fd[c], de->d_name,
					     st->log_fd[c], dst) < 0)
					goto fail;
				msg_warn("recover.segment_moved dir=%s "
					 "file=%s to=lost+found "
					 "durable_segment=%llu "
					 "durable_offset=%llu "
					 "msg=\"never acknowledged\"",
					 msg_q(st->dir[c]), msg_q(de->d_name),
					 (unsigned long long)best.seg,
					 (unsigned long long)best.off);
				changed = 1;
				continue;
			}
			int fd = openat(st->log_fd[c], de->d_name,
					O_RDWR | O_CLOEXEC);
			if (fd < 0)
				goto fail;
			if (fstat(fd, &sb) < 0 ||
			    (uint64_t)sb.st_size <= best.off) {
				close(fd);
				continue;
			}
			int r = save_cut(st, c, de->d_name, fd, best.off,
					 (uint64_t)sb.st_size);
			if (r == 0 && (ftruncate(fd, (off_t)best.off) < 0 ||
				       fsync(fd) < 0))
				r = -errno;
			close(fd);
			if (r < 0) {
				errno = -r;
				goto fail;
			}
			msg_warn("recover.tail_cut dir=%s file=%s bytes=%llu "
				 "durable_segment=%llu durable_offset=%llu "
				 "saved=lost+found msg=\"never acknowledged\"",
				 msg_q(st->dir[c]), msg_q(de->d_name),
				 (unsigned long long)((uint64_t)sb.st_size -
						      best.off),
				 (unsigned long long)best.seg,
				 (unsigned long long)best.off);
			changed = 1;
		}
		closedir(d);
		if (changed && fsync(st->log_fd[c]) < 0) {
			*error_r = ms_errf("DR copy %s: fsync log: %s",
					   st->dir[c], strerror(errno));
			return -errno;
		}
		continue;
	fail:;
		int err = errno;
		*error_r = ms_errf("DR copy %s: cutting to the durable "
				   "position: %s",
				   st->dir[c], strerror(err));
		closedir(d);
		return -err;
	}
	return 0;
}

/* Remove NNN.seg.refetch files a re-fetch left behind. */
static void refetch_cleanup(struct udsync_store *st)
{
	for (int c = 0; c < NCOPIES; c++) {
		int dfd = dup(st->log_fd[c]);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;
		if (d == NULL) {
			if (dfd >= 0)
				close(dfd);
			continue;
		}
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			size_t n = strlen(de->d_name);
			if (n > 8 && strcmp(de->d_name + n - 8, ".refetch") == 0)
				(void)unlinkat(st->log_fd[c], de->d_name, 0);
		}
		closedir(d);
	}
}

/* Read the newest segment (recovered: valid to its end) into the state. */
static int load_head(struct udsync_store *st, uint64_t seg,
		     const char **error_r)
{
	struct ms_seg_reader r;
	struct ms_seg_hdr sh;
	const uint8_t *p;
	char name[MS_SEG_NAME_LEN + 1];
	int ret;

	ms_seg_name(seg, name);
	for (int c = 0; c < NCOPIES; c++) {
		st->fd[c] = openat(st->log_fd[c], name, O_RDWR | O_CLOEXEC);
		if (st->fd[c] < 0) {
			*error_r = ms_errf("DR copy %s: segment %s: %s",
					   st->dir[c], name, strerror(errno));
			return -errno;
		}
	}
	if ((ret = ms_seg_reader_init(&r, st->fd[0])) < 0) {
		*error_r = "cannot read the newest DR segment";
		return ret;
	}
	ret = ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p);
	if (ret == 0)
		ret = ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &sh, error_r);
	if (ret != 0) /* both return 0 or <0 */
		goto out;
	XXH3_64bits_reset(st->sum);
	XXH3_64bits_update(st->sum, p, MS_SEG_HDR_SIZE);
	st->seg = seg;
	st->seg_tl = sh.timeline;
	st->seg_first_seq = sh.first_seq;
	st->next_seq = sh.first_seq;
	st->last_seq = sh.first_seq - 1;
	st->timeline = sh.timeline;
	st->seg_count = 0;
	st->sealed = 0;
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
	for (;;) {
		struct ms_rec_hdr h;
		const uint8_t *rec;
		ret = ms_seg_reader_next(&r, &h, &rec, error_r);
		if (ret <= 0)
			break;
		if (h.type == MS_REC_SEAL) {
			st->sealed = 1;
		} else {
			ms_seg_sum_rec(st->sum, &h, rec);
			st->seg_count++;
		}
		st->last_seq = h.seq;
		st->next_seq = h.seq + 1;
		st->timeline = h.timeline;
	}
	st->end = r.off;
out:
	ms_seg_reader_free(&r);
	if (ret < 0)
		*error_r = ms_errf("newest DR segment %s does not check out "
				   "after recovery: %s; run mstore repair",
				   name, *error_r);
	return ret;
}

int udsync_store_open(const char *dir0, const char *dir1,
		      struct udsync_store **st_r, const char **error_r)
{
	struct udsync_store *st = ms_calloc(1, sizeof(*st));
	int ret;

	st->dir[0] = ms_strdup(dir0);
	st->dir[1] = ms_strdup(dir1);
	for (int c = 0; c < NCOPIES; c++)
		st->root_fd[c] = st->log_fd[c] = st->lock_fd[c] = st->fd[c] =
			st->tfd[c] = st->pos_fd[c] = -1;
	st->sum = XXH3_createState();
	ms_assert(st->sum != NULL);
	ms_buf_init(&st->q, 0);
	ms_buf_init(&st->pend, 0);
	if ((ret = open_dirs(st, error_r)) < 0)
		goto fail;
	struct ms_meta m;
	const char *e0 = "", *e1 = "";
	/* under the lock: cut to the durable position, drop re-fetch files */
	if ((ret = lock_copies(st, error_r)) < 0)
		goto fail;
	refetch_cleanup(st);
	ret = pos_cut(st, error_r);
	unlock_copies(st);
	if (ret < 0)
		goto fail;
	if (ms_meta_read(st->root_fd[0], &m, &e0) == 0 ||
	    ms_meta_read(st->root_fd[1], &m, &e1) == 0) {
		/* the engine's recovery, once */
		struct ms_log_cfg lc = { 0 };
		struct ms_log *log;
		lc.dir[0] = dir0;
		lc.dir[1] = dir1;
		lc.engine = MS_IO_PSYNC;
		lc.replica_ok = 1;
		if ((ret = ms_log_open(&lc, &log, error_r)) < 0)
			goto fail;
		uint64_t ptl, pfork;
		if (ms_log_promoted(log, &ptl, &pfork)) {
			/* the open finished a promote cut short: this store
			   is a primary now, on its own timeline */
			*error_r = ms_errf("this store was promoted (timeline "
					   "%llu): it is not a DR copy any "
					   "more; udsync recv will not write "
					   "it",
					   (unsigned long long)ptl);
			ms_log_close(&log);
			ret = MS_EREPLICA;
			goto fail;
		}
		ret = 0;
		if (ms_log_replica(log) == MS_REPLICA_NONE &&
		    (faccessat(st->root_fd[0], POS_NAME, F_OK, 0) == 0 ||
		     faccessat(st->root_fd[1], POS_NAME, F_OK, 0) == 0)) {
			/* a DR store udsync recv wrote before the marker
			   existed: mark it now */
			ret = ms_log_mark_replica(log, error_r);
			if (ret == 0)
				msg_info("replica.marked dir=%s msg=\"a DR "
					 "store written before the replica "
					 "marker: read-only until mstore "
					 "promote\"",
					 msg_q(dir0));
		}
		st->meta = *ms_log_meta(log);
		st->have_meta = 1;
		ms_log_close(&log);
		if (ret < 0)
			goto fail;
	}
	if ((ret = lock_copies(st, error_r)) < 0)
		goto fail;
	uint64_t seg = 0;
	if ((ret = newest_segment(st, &seg)) < 0) {
		*error_r = "cannot list the DR log";
		goto fail;
	}
	if (seg != 0 && (ret = load_head(st, seg, error_r)) < 0)
		goto fail;
	*st_r = st;
	return 0;
fail:
	udsync_store_close(&st);
	return ret;
}

void udsync_store_close(struct udsync_store **stp)
{
	struct udsync_store *st = *stp;
	if (st == NULL)
		return;
	for (int c = 0; c < NCOPIES; c++) {
		if (st->fd[c] >= 0)
			close(st->fd[c]);
		if (st->tfd[c] >= 0)
			close(st->tfd[c]);
		if (st->pos_fd[c] >= 0)
			close(st->pos_fd[c]);
		if (st->log_fd[c] >= 0)
			close(st->log_fd[c]);
		if (st->root_fd[c] >= 0)
			close(st->root_fd[c]);
		free(st->dir[c]);
	}
	unlock_copies(st);
	for (size_t i = 0; i < st->nretire; i++)
		ms_buf_free(&st->retire[i]);
	free(st->retire);
	ms_buf_free(&st->q);
	ms_buf_free(&st->pend);
	XXH3_freeState(st->sum);
	free(st);
	*stp = NULL;
}

int udsync_store_meta(struct udsync_store *st, struct ms_meta *meta_r)
{
	if (!st->have_meta)
		return 0;
	*meta_r = st->meta;
	return 1;
}

int udsync_store_set_meta(struct udsync_store *st, const uint8_t *raw,
			  size_t len, const char **error_r)
{
	struct ms_meta m;
	int ret = ms_meta_decode(raw, len, &m, error_r);
	if (ret < 0)
		return ret;
	if (st->have_meta) {
		if (memcmp(m.store_id, st->meta.store_id, MS_STORE_ID_SIZE) !=
			    0 ||
		    memcmp(m.salt, st->meta.salt, MS_SALT_SIZE) != 0) {
			*error_r = "the primary is another store than the one "
				   "this DR store copies";
			return MS_EMISMATCH;
		}
		return 0;
	}
	/* the replica marker before the identity: there is never a store
	   here that a plain mstored or a tool could open read-write */
	struct ms_replica r = { MS_REPLICA_DR, 0, 0 };
	for (int c = 0; c < NCOPIES; c++)
		if ((ret = ms_replica_write(st->root_fd[c], &r, error_r)) < 0)
			return ret;
	for (int c = 0; c < NCOPIES; c++)
		if ((ret = ms_meta_write(st->root_fd[c], &m, error_r)) < 0)
			return ret;
	st->meta = m;
	st->have_meta = 1;
	msg_info("store.created dir=%s msg=\"identity taken from the "
		 "primary\"",
		 msg_q(st->dir[0]));
	return 0;
}

void udsync_store_pos(struct udsync_store *st, uint64_t *seg_r,
		      uint64_t *off_r, uint64_t *seq_r, uint64_t *timeline_r)
{
	if (st->seg == 0) {
		*seg_r = *off_r = 0;
	} else if (st->sealed) {
		*seg_r = st->seg + 1;
		*off_r = 0;
	} else {
		*seg_r = st->seg;
		*off_r = st->end;
		/* re-fetching: the old bytes are still the durable truth;
		   say how far the new copy got, for the sender's window */
		if (st->refetching && st->rf_end > st->end)
			*off_r = st->rf_end;
	}
	*seq_r = st->last_seq;
	*timeline_r = st->timeline;
}

static void refetch_stop(struct udsync_store *st)
{
	for (int c = 0; c < NCOPIES; c++) {
		if (st->tfd[c] >= 0)
			close(st->tfd[c]);
		st->tfd[c] = -1;
	}
	st->refetching = 0;
	st->rf_end = 0;
}

void udsync_store_resume(struct udsync_store *st, uint64_t *seg_r,
			 uint64_t *off_r, uint64_t *seq_r, uint64_t *timeline_r)
{
	/* a new session: input of the last one that was not a whole
	   record is gone (the sender re-sends from what we say) */
	ms_buf_reset(&st->pend);
	if (st->refetching)
		refetch_stop(st);
	udsync_store_pos(st, seg_r, off_r, seq_r, timeline_r);
	if (st->refetch != 0 && st->refetch == st->seg && !st->sealed) {
		*seg_r = st->refetch;
		*off_r = 0;
	} else {
		st->refetch = 0;
	}
}

size_t udsync_store_queued(const struct udsync_store *st)
{
	return st->q.len;
}

/* Where the next checked byte goes (after the queue). */
static void next_pos(const struct udsync_store *st, uint64_t *seg_r,
		     uint64_t *off_r)
{
	if (st->q.len > 0 || st->qnew) {
		if (st->qsealed) {
			*seg_r = st->qseg + 1;
			*off_r = 0;
		} else {
			*seg_r = st->qseg;
			*off_r = st->qoff + st->q.len;
		}
		return;
	}
	if (st->refetching) {
		*seg_r = st->refetch;
		*off_r = st->rf_end;
		return;
	}
	if (st->refetch != 0) {
		*seg_r = st->refetch;
		*off_r = 0;
		return;
	}
	uint64_t seq, tl;
	udsync_store_pos((struct udsync_store *)st, seg_r, off_r, &seq, &tl);
}

/*
 * Check one whole unit at the start of pend: a segment header (at offset
 * 0) or a record.  0 with *take_r bytes checked (and queued); MS_ETRUNC:
 * more bytes needed; MS_ECORRUPT.
 */
static int check_unit(struct udsync_store *st, size_t *take_r,
		      const char **error_r)
{
	const uint8_t *p = st->pend.data;
	size_t avail = st->pend.len;
	int ret;

	if (st->poff == 0) {
		struct ms_seg_hdr sh;
		if (avail < MS_SEG_HDR_SIZE)
			return MS_ETRUNC;
		if ((ret = ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &sh,
					     error_r)) < 0)
			return ret;
		if (memcmp(sh.store_id, st->meta.store_id, MS_STORE_ID_SIZE) !=
		    0) {
			*error_r = "segment header names another store";
			return MS_ECORRUPT;
		}
		if (sh.seg != st->pseg) {
			*error_r = "segment header names another segment";
			return MS_ECORRUPT;
		}
		if (st->seg != 0 && (sh.first_seq != st->q_next_seq ||
				     sh.timeline < st->q_timeline)) {
			*error_r = ms_errf("segment header: first seq %llu, "
					   "timeline %llu; expected seq %llu",
					   (unsigned long long)sh.first_seq,
					   (unsigned long long)sh.timeline,
					   (unsigned long long)st->q_next_seq);
			return MS_ECORRUPT;
		}
		if (sh.first_seq == 0) {
			*error_r = "segment header: first seq 0";
			return MS_ECORRUPT;
		}
		/* a new segment: the queue must be empty (flushed) */
		ms_assert(st->q.len == 0);
		st->qseg = sh.seg;
		st->qoff = 0;
		st->qnew = 1;
		st->qsealed = 0;
		st->q_next_seq = sh.first_seq;
		st->q_last_seq = sh.first_seq - 1;
		st->q_timeline = sh.timeline;
		st->seg_first_seq = sh.first_seq;
		st->seg_tl = sh.timeline;
		st->seg_count = 0;
		XXH3_64bits_reset(st->sum);
		XXH3_64bits_update(st->sum, p, MS_SEG_HDR_SIZE);
		ms_buf_append(&st->q, p, MS_SEG_HDR_SIZE);
		*take_r = MS_SEG_HDR_SIZE;
		return 0;
	}
	struct ms_rec_hdr h;
	if (avail < MS_REC_HDR_SIZE)
		return MS_ETRUNC;
	if ((ret = ms_rec_check_hdr(p, &h, error_r)) < 0)
		return ret;
	if (avail < MS_REC_HDR_SIZE + (size_t)h.len)
		return MS_ETRUNC;
	if (h.type == MS_REC_HOLE)
		ret = ms_rec_check_sum(p, NULL, 0, error_r);
	else
		ret = ms_rec_check_sum(p, p + MS_REC_HDR_SIZE, h.len, error_r);
	if (ret < 0)
		return ret;
	if (h.seq != st->q_next_seq || h.timeline < st->q_timeline) {
		*error_r = ms_errf("%s record has seq %llu timeline %llu; "
				   "expected seq %llu, timeline >= %llu",
				   ms_rec_type_name(h.type),
				   (unsigned long long)h.seq,
				   (unsigned long long)h.timeline,
				   (unsigned long long)st->q_next_seq,
				   (unsigned long long)st->q_timeline);
		return MS_ECORRUPT;
	}
	if (h.type == MS_REC_SEAL) {
		struct ms_seg_seal s;
		if ((ret = ms_seg_seal_decode(p + MS_REC_HDR_SIZE, h.len, &s,
					      error_r)) < 0)
			return ret;
		if (s.count != st->seg_count ||
		    s.first_seq != st->seg_first_seq ||
		    s.last_seq != st->q_last_seq || s.seal_off != st->poff) {
			*error_r = "the seal does not match the segment's "
				   "records";
			return MS_ECORRUPT;
		}
		if (s.sum != XXH3_64bits_digest(st->sum)) {
			/* every record checked, only the checksum differs:
			   the segment came in two sessions with a compaction
			   on the primary between them (old bytes before the
			   resume point, new ones after).  Fetch it whole. */
			if (st->refetching) {
				*error_r = "the seal does not match the "
					   "segment's records, even fetched "
					   "whole";
				return MS_ECORRUPT;
			}
			st->refetch = st->pseg;
			*error_r = "the seal's checksum does not match the "
				   "segment as received (resumed across a "
				   "compaction on the primary?): fetching "
				   "the segment again whole";
			return MS_ECORRUPT;
		}
		st->qsealed = 1;
	} else {
		ms_seg_sum_rec(st->sum, &h, p);
		st->seg_count++;
	}
	if (h.type == MS_REC_RETIRE) {
		struct ms_event ev;
		if ((ret = ms_event_decode(MS_REC_RETIRE, p + MS_REC_HDR_SIZE,
					   h.len, &ev, error_r)) < 0)
			return ret;
		st->retire = ms_realloc(st->retire, (st->nretire + 1) *
							    sizeof(*st->retire));
		ms_buf_init(&st->retire[st->nretire], 0);
		ms_buf_append(&st->retire[st->nretire++], p + MS_REC_HDR_SIZE,
			      h.len);
	}
	if (st->q.len == 0 && !st->qnew) {
		st->qseg = st->pseg;
		st->qoff = st->poff;
	}
	/* a HOLE's payload is zeros on every copy, whatever came */
	ms_buf_append(&st->q, p, MS_REC_HDR_SIZE);
	if (h.type == MS_REC_HOLE) {
		size_t at = st->q.len;
		ms_buf_resize(&st->q, at + h.len);
		memset(st->q.data + at, 0, h.len);
	} else {
		ms_buf_append(&st->q, p + MS_REC_HDR_SIZE, h.len);
	}
	st->q_last_seq = h.seq;
	st->q_next_seq = h.seq + 1;
	st->q_timeline = h.timeline;
	*take_r = MS_REC_HDR_SIZE + h.len;
	return 0;
}

int udsync_store_data(struct udsync_store *st, uint64_t seg, uint64_t off,
		      const uint8_t *p, size_t len, const char **error_r)
{
	uint64_t es, eo;
	int ret;

	if (!st->have_meta) {
		*error_r = "log bytes before the store's identity (META)";
		return MS_ECORRUPT;
	}
	if (st->pend.len == 0) {
		next_pos(st, &es, &eo);
		if (st->seg == 0 && !st->qnew && st->q.len == 0 && es == 0) {
			/* an empty DR store starts where the primary's log
			   does, at a segment's start */
			es = seg;
			if (off != 0) {
				*error_r = "an empty DR store needs the log "
					   "from a segment's start";
				return MS_ECORRUPT;
			}
			st->q_next_seq = 0;
		}
		if (seg != es || off != eo) {
			*error_r = ms_errf("data for %llu:%llu, expected "
					   "%llu:%llu",
					   (unsigned long long)seg,
					   (unsigned long long)off,
					   (unsigned long long)es,
					   (unsigned long long)eo);
			return MS_ECORRUPT;
		}
		st->pseg = seg;
		st->poff = off;
		if (st->refetch != 0 && !st->refetching && off == 0) {
			/* the segment again from its start, into
			   NNN.seg.refetch; its header must be the one we
			   have */
			ms_assert(st->q.len == 0 && !st->qnew);
			st->refetching = 1;
			st->rf_end = 0;
			st->q_next_seq = st->seg_first_seq;
			st->q_last_seq = st->seg_first_seq - 1;
			st->q_timeline = st->seg_tl;
			msg_info("refetch.start segment=%llu",
				 (unsigned long long)seg);
		}
	} else if (seg != st->pseg || off != st->poff + st->pend.len) {
		*error_r = "data does not follow the previous data";
		return MS_ECORRUPT;
	}
	if (st->seg != 0 && st->q.len == 0 && !st->qnew && !st->refetching) {
		st->q_next_seq = st->next_seq;
		st->q_last_seq = st->last_seq;
		st->q_timeline = st->timeline;
	}
	if ((ret = ms_buf_append(&st->pend, p, len)) < 0) {
		*error_r = "too much pending input";
		return ret;
	}
	for (;;) {
		size_t take = 0;
		if (st->pend.len == 0)
			break;
		if (st->qsealed) {
			/* the segment is complete: it must be durable before
			   the next one starts */
			if ((ret = udsync_store_flush(st, error_r)) < 0)
				return ret;
			if (st->pseg != st->seg + 1 || st->poff != 0) {
				*error_r = "bytes after a segment's seal";
				return MS_ECORRUPT;
			}
			st->q_next_seq = st->next_seq;
			st->q_last_seq = st->last_seq;
			st->q_timeline = st->timeline;
		}
		ret = check_unit(st, &take, error_r);
		if (ret == MS_ETRUNC)
			break;
		if (ret < 0) {
			*error_r = ms_errf("segment %llu offset %llu: %s",
					   (unsigned long long)st->pseg,
					   (unsigned long long)st->poff,
					   *error_r);
			ms_buf_reset(&st->pend);
			return MS_ECORRUPT;
		}
		memmove(st->pend.data, st->pend.data + take,
			st->pend.len - take);
		st->pend.len -= take;
		st->poff += take;
		if (st->qsealed) {
			st->pseg++;
			st->poff = 0;
		}
	}
	return 0;
}

/* A RETIRE is durable here: compact our copy of its segment the same way. */
static int apply_retire(struct udsync_store *st, const struct ms_buf *pl,
			const char **error_r)
{
	struct ms_log_cfg lc = { 0 };
	struct ms_log *log = NULL;
	struct ms_event ev;
	uint64_t *offs = NULL;
	uint8_t *types = NULL;
	int ret = ms_event_decode(MS_REC_RETIRE, pl->data, pl->len, &ev,
				  error_r);
	if (ret < 0)
		return ret;
	uint32_t n = ev.u.retire.drops.n;
	offs = ms_calloc(n ? n : 1, sizeof(*offs));
	types = ms_calloc(n ? n : 1, 1);
	for (uint32_t i = 0; i < n; i++) {
		struct ms_event_drop d;
		if (ms_event_drop(&ev, i, &d) < 0) {
			*error_r = "bad drop list";
			ret = MS_ECORRUPT;
			goto out;
		}
		offs[i] = d.off;
		types[i] = d.type;
	}
	/* the engine's own compaction; it takes the store lock itself */
	unlock_copies(st);
	lc.dir[0] = st->dir[0];
	lc.dir[1] = st->dir[1];
	lc.engine = MS_IO_PSYNC;
	lc.replica_ok = 1;
	if ((ret = ms_log_open(&lc, &log, error_r)) < 0)
		goto relock;
	ret = ms_log_compact_finish(log, ev.u.retire.seg, offs, types, n,
				    ev.u.retire.sum, error_r);
	ms_log_close(&log);
	if (ret == 0)
		msg_info("compaction.mirrored segment=%llu records=%u",
			 (unsigned long long)ev.u.retire.seg, n);
relock:;
	const char *lerr;
	if (lock_copies(st, &lerr) < 0) {
		*error_r = lerr;
		ret = -EBUSY;
	}
out:
	free(offs);
	free(types);
	return ret;
}

/* The RETIREs among the records just made durable. */
static int apply_retires(struct udsync_store *st, const char **error_r)
{
	int ret = 0;
	for (size_t i = 0; i < st->nretire; i++) {
		if (ret == 0)
			ret = apply_retire(st, &st->retire[i], error_r);
		ms_buf_free(&st->retire[i]);
	}
	st->nretire = 0;
	return ret;
}

/*
 * A flush while re-fetching: the bytes go to NNN.seg.refetch.  When the
 * segment is whole (its seal checked), the file is synced and renamed
 * over the old one on both copies, and only then published.
 */
static int refetch_flush(struct udsync_store *st, const char *name,
			 const char **error_r)
{
	char tmp[MS_SEG_NAME_LEN + 16];
	int ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.refetch", name);
	for (int c = 0; c < NCOPIES && ret == 0; c++) {
		if (st->qnew || st->tfd[c] < 0) {
			if (st->tfd[c] >= 0)
				close(st->tfd[c]);
			st->tfd[c] = openat(st->log_fd[c], tmp,
					    O_RDWR | O_CREAT | O_TRUNC |
						    O_CLOEXEC,
					    0640);
			if (st->tfd[c] < 0)
				ret = -errno;
		}
		if (ret == 0)
			ret = ms_pwrite_full(st->tfd[c], st->q.data, st->q.len,
					     st->qoff);
		if (ret == 0 && fdatasync(st->tfd[c]) < 0)
			ret = -errno;
		if (ret < 0)
			*error_r = ms_errf("DR copy %s: write+fdatasync %s: %s",
					   st->dir[c], tmp, ms_strerror(ret));
	}
	if (ret < 0)
		return ret;
	st->rf_end = st->qoff + st->q.len;
	ms_buf_reset(&st->q);
	st->qnew = 0;
	if (!st->qsealed)
		return 0;
	for (int c = 0; c < NCOPIES; c++) {
		if (renameat(st->log_fd[c], tmp, st->log_fd[c], name) < 0 ||
		    fsync(st->log_fd[c]) < 0) {
			*error_r = ms_errf("DR copy %s: rename %s: %s",
					   st->dir[c], tmp, strerror(errno));
			return -errno;
		}
		if (st->fd[c] >= 0)
			close(st->fd[c]);
		st->fd[c] = st->tfd[c];
		st->tfd[c] = -1;
	}
	msg_info("refetch.done file=%s", msg_q(name));
	st->seg = st->qseg;
	st->end = st->rf_end;
	st->sealed = 1;
	st->next_seq = st->q_next_seq;
	st->last_seq = st->q_last_seq;
	st->timeline = st->q_timeline;
	st->qsealed = 0;
	st->refetch = 0;
	refetch_stop(st);
	if ((ret = pos_write(st, error_r)) < 0)
		return ret;
	/* RETIREs in the segment (compacting earlier ones): a second
	   application finds the checksum there and does nothing */
	return apply_retires(st, error_r);
}

int udsync_store_flush(struct udsync_store *st, const char **error_r)
{
	char name[MS_SEG_NAME_LEN + 1];
	int ret;

	if (st->q.len == 0)
		return 0;
	ms_seg_name(st->qseg, name);
	if (st->refetching)
		return refetch_flush(st, name, error_r);
	if (st->qnew) {
		for (int c = 0; c < NCOPIES; c++) {
			if (st->fd[c] >= 0)
				close(st->fd[c]);
			st->fd[c] = openat(st->log_fd[c], name,
					   O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
					   0640);
			if (st->fd[c] < 0) {
				*error_r = ms_errf("DR copy %s: create %s: %s",
						   st->dir[c], name,
						   strerror(errno));
				return -errno;
			}
		}
	}
	for (int c = 0; c < NCOPIES; c++) {
		ret = ms_pwrite_full(st->fd[c], st->q.data, st->q.len,
				     st->qoff);
		if (ret == 0 && fdatasync(st->fd[c]) < 0)
			ret = -errno;
		if (ret == 0 && st->qnew && fsync(st->log_fd[c]) < 0)
			ret = -errno;
		if (ret < 0) {
			*error_r = ms_errf("DR copy %s: write+fdatasync %s "
					   "offset %llu: %s",
					   st->dir[c], name,
					   (unsigned long long)st->qoff,
					   ms_strerror(ret));
			return ret;
		}
	}
	/* durable on both copies: publish */
	st->seg = st->qseg;
	st->end = st->qoff + st->q.len;
	st->sealed = st->qsealed;
	st->next_seq = st->q_next_seq;
	st->last_seq = st->q_last_seq;
	st->timeline = st->q_timeline;
	ms_buf_reset(&st->q);
	st->qnew = 0;
	st->qsealed = 0;
	/* the durable position, before the ACK that says it */
	if ((ret = pos_write(st, error_r)) < 0)
		return ret;
	return apply_retires(st, error_r);
}
