/*
 * log_follow.c - a read-only log follows what another process appends
 * (the DR store written by udsync recv, read by mstored --standby):
 * from the durable end, read whole records that pass every check of
 * rec.h with the next seq and a timeline not below the last, cross a
 * seal into the next segment once its header is there, and move the
 * durable end.  Nothing is written.  A record that is not whole yet (the
 * writer is in the middle of it) ends the step quietly; the next step
 * reads it again.
 *
 * A segment the writer replaced by renaming a new version over it (a
 * compaction, a re-fetch) is noticed by its inode: the cached fd is
 * dropped and the file opened again.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log_int.h"
#include "msg.h"

/* The copy to read: the first that is not failed. */
static int follow_copy(struct ms_log *log)
{
	for (int c = 0; c < log->ncopies; c++)
		if (log->copy[c].state == MS_COPY_OK)
			return c;
	return -1;
}

/* The cached fd of seg still the file of that name?  Else forget it
   and say so (1). */
static int follow_recheck(struct ms_log *log, int c, uint64_t seg)
{
	char name[MS_SEG_NAME_LEN + 1];
	struct stat a, b;
	int fd = ms_log_seg_fd(log, c, seg);

	if (fd < 0)
		return 0;
	ms_seg_name(seg, name);
	if (fstat(fd, &a) == 0 &&
	    fstatat(log->copy[c].log_fd, name, &b, 0) == 0 &&
	    (a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
		ms_log_seg_fd_forget(log, c, seg);
		return 1;
	}
	return 0;
}

/* The header of segment head_seg, if it is there: 1 taken, 0 not yet. */
static int follow_hdr(struct ms_log *log, int c, const char **error_r)
{
	uint8_t hb[MS_SEG_HDR_SIZE];
	struct ms_seg_hdr sh;
	const char *err;
	int fd = ms_log_seg_fd(log, c, log->head_seg);

	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	ssize_t n = pread(fd, hb, sizeof(hb), 0);
	if (n != (ssize_t)sizeof(hb) ||
	    ms_seg_hdr_decode(hb, sizeof(hb), &sh, &err) < 0) {
		/* not written yet: an empty file is opened again later */
		ms_log_seg_fd_forget(log, c, log->head_seg);
		return 0;
	}
	if (memcmp(sh.store_id, log->meta.store_id, MS_STORE_ID_SIZE) != 0 ||
	    sh.seg != log->head_seg || sh.first_seq != log->next_seq ||
	    sh.timeline < log->timeline) {
		*error_r = ms_errf("segment %llu: its header does not follow "
				   "the log (first seq %llu, expected %llu)",
				   (unsigned long long)log->head_seg,
				   (unsigned long long)sh.first_seq,
				   (unsigned long long)log->next_seq);
		return MS_ECORRUPT;
	}
	ms_log_segs_add(log, log->head_seg);
	log->need_hdr = 0;
	log->head_end = MS_SEG_HDR_SIZE;
	log->seg_first_seq = sh.first_seq;
	log->seg_count = 0;
	log->timeline = sh.timeline;
	log->durable = (struct ms_pos){ log->head_seg, MS_SEG_HDR_SIZE };
	return 1;
}

/* Whole records of the head segment from head_end: 1 if any, 0 none. */
static int follow_records(struct ms_log *log, int c)
{
	struct ms_buf pl;
	int moved = 0;
	int fd = ms_log_seg_fd(log, c, log->head_seg);

	if (fd < 0)
		return 0;
	ms_buf_init(&pl, 0);
	for (;;) {
		uint8_t hb[MS_REC_HDR_SIZE];
		struct ms_rec_hdr h;
		const char *err;
		if (pread(fd, hb, sizeof(hb), (off_t)log->head_end) !=
			    (ssize_t)sizeof(hb) ||
		    ms_rec_check_hdr(hb, &h, &err) < 0 ||
		    h.seq != log->next_seq || h.timeline < log->timeline)
			break;
		ms_buf_reset(&pl);
		if (h.type != MS_REC_HOLE) {
			if (ms_buf_resize(&pl, h.len) < 0 ||
			    ms_pread_full(fd, pl.data, h.len,
					  log->head_end + sizeof(hb)) < 0 ||
			    ms_rec_check_sum(hb, pl.data, h.len, &err) < 0)
				break;
		} else if (ms_rec_check_sum(hb, NULL, 0, &err) < 0) {
			break;
		} else {
			struct stat sb;
			if (fstat(fd, &sb) < 0 ||
			    (uint64_t)sb.st_size <
				    log->head_end + sizeof(hb) + h.len)
				break;
		}
		log->head_end += sizeof(hb) + h.len;
		log->next_seq = h.seq + 1;
		log->durable_seq = h.seq;
		log->timeline = h.timeline;
		log->durable = (struct ms_pos){ log->head_seg, log->head_end };
		moved = 1;
		if (h.type == MS_REC_SEAL) {
			/* as recovery leaves a sealed newest segment */
			log->need_hdr = 1;
			log->head_seg++;
			break;
		}
		log->seg_count++;
	}
	ms_buf_free(&pl);
	return moved;
}

int ms_log_follow(struct ms_log *log, const char **error_r)
{
	int c = follow_copy(log), moved = 0;

	if (!log->cfg.readonly) {
		*error_r = "only a read-only log follows another writer";
		return MS_ESTATE;
	}
	if (c < 0) {
		*error_r = "no readable copy of the log";
		return MS_ENOCOPY;
	}
	for (int round = 0; round < 1024; round++) {
		if (log->need_hdr) {
			int r = follow_hdr(log, c, error_r);
			if (r < 0)
				return r;
			if (r == 0)
				break;
			moved = 1;
		}
		int r = follow_records(log, c);
		if (r == 0 && !log->need_hdr) {
			/* replaced under us (a re-fetch)?  then once more */
			if (!follow_recheck(log, c, log->head_seg))
				break;
			r = follow_records(log, c);
			if (r == 0)
				break;
		}
		moved |= r;
		if (!log->need_hdr)
			break;
	}
	return moved;
}
