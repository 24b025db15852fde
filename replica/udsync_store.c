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
 * opens it read-only.
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
	XXH3_state_t *sum;	/* of seg's checked bytes */

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
};

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
	if (ret < 0)
		goto out;
	XXH3_64bits_reset(st->sum);
	XXH3_64bits_update(st->sum, p, MS_SEG_HDR_SIZE);
	st->seg = seg;
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
			-1;
	st->sum = XXH3_createState();
	ms_assert(st->sum != NULL);
	ms_buf_init(&st->q, 0);
	ms_buf_init(&st->pend, 0);
	if ((ret = open_dirs(st, error_r)) < 0)
		goto fail;
	struct ms_meta m;
	const char *e0 = "", *e1 = "";
	if (ms_meta_read(st->root_fd[0], &m, &e0) == 0 ||
	    ms_meta_read(st->root_fd[1], &m, &e1) == 0) {
		/* the engine's recovery, once */
		struct ms_log_cfg lc = { 0 };
		struct ms_log *log;
		lc.dir[0] = dir0;
		lc.dir[1] = dir1;
		lc.engine = MS_IO_PSYNC;
		if ((ret = ms_log_open(&lc, &log, error_r)) < 0)
			goto fail;
		st->meta = *ms_log_meta(log);
		st->have_meta = 1;
		ms_log_close(&log);
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
		if (memcmp(m.store_id, st->meta.store_id, MS_STORE_ID_SIZE) ||
		    memcmp(m.salt, st->meta.salt, MS_SALT_SIZE)) {
			*error_r = "the primary is another store than the one "
				   "this DR store copies";
			return MS_EMISMATCH;
		}
		return 0;
	}
	for (int c = 0; c < NCOPIES; c++)
		if ((ret = ms_meta_write(st->root_fd[c], &m, error_r)) < 0)
			return ret;
	st->meta = m;
	st->have_meta = 1;
	msg_info("DR store %s: new copy of store, identity taken from the "
		 "primary",
		 st->dir[0]);
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
	}
	*seq_r = st->last_seq;
	*timeline_r = st->timeline;
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
		if (memcmp(sh.store_id, st->meta.store_id, MS_STORE_ID_SIZE)) {
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
		    s.last_seq != st->q_last_seq || s.seal_off != st->poff ||
		    s.sum != XXH3_64bits_digest(st->sum)) {
			*error_r = "the seal does not match the segment's "
				   "records";
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
	} else if (seg != st->pseg || off != st->poff + st->pend.len) {
		*error_r = "data does not follow the previous data";
		return MS_ECORRUPT;
	}
	if (st->seg != 0 && st->q.len == 0 && !st->qnew) {
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
	if ((ret = ms_log_open(&lc, &log, error_r)) < 0)
		goto relock;
	ret = ms_log_compact_finish(log, ev.u.retire.seg, offs, types, n,
				    ev.u.retire.sum, error_r);
	ms_log_close(&log);
	if (ret == 0)
		msg_info("DR store: segment %llu compacted as the primary's "
			 "RETIRE says (%u records)",
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

int udsync_store_flush(struct udsync_store *st, const char **error_r)
{
	char name[MS_SEG_NAME_LEN + 1];
	int ret;

	if (st->q.len == 0)
		return 0;
	ms_seg_name(st->qseg, name);
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
	ret = 0;
	for (size_t i = 0; i < st->nretire; i++) {
		if (ret == 0)
			ret = apply_retire(st, &st->retire[i], error_r);
		ms_buf_free(&st->retire[i]);
	}
	st->nretire = 0;
	return ret;
}
