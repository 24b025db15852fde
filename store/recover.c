/*
 * recover.c - open-time recovery of the log (DESIGN.md section 3).
 *
 * Sealed segments are checked cheaply (header and seal, from the file
 * size); a deep check of every byte is `mstore verify`'s and the scrub's
 * job.  The newest segment, and any sealed one that fails the cheap check
 * on both copies, is scanned record by record on both copies in lockstep:
 * at each offset a record counts if it passes every check of rec.h on
 * either copy and carries the expected seq (timelines never go back).  The
 * first offset where no copy has such a record ends the durable prefix.
 *
 * Then the copies are made equal to that prefix: records missing or bad
 * on one copy are copied from the other, bytes past the end (a torn tail)
 * are saved under <copy>/lost+found/ and cut off, and the file synced
 * (a tail of zeros only is space the writer prepared, log.c: cut, not
 * saved).
 * A newest segment with no valid header on either copy (a crash right
 * after its file was created) goes to lost+found whole.
 *
 * Why this is enough: acknowledged records were synced on every healthy
 * copy before the acknowledgement, so each is valid on at least one copy,
 * and the batch that was in flight at the crash was acknowledged to no
 * one; only that batch can be torn.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log_int.h"
#include "msg.h"


struct range {
	uint64_t off, len;
};

struct scan {
	int have_hdr;
	struct ms_seg_hdr hdr;
	uint64_t end;
	int sealed;
	uint64_t count;		/* records before the seal */
	uint64_t last_seq;	/* last record's seq (the seal's, if sealed) */
	uint64_t last_timeline;
	uint64_t size[MS_IO_COPIES];
	struct range *fix[MS_IO_COPIES];
	size_t nfix[MS_IO_COPIES], capfix[MS_IO_COPIES];
};

static void fix_add(struct scan *s, int c, uint64_t off, uint64_t len)
{
	if (s->nfix[c] > 0) {
		struct range *r = &s->fix[c][s->nfix[c] - 1];
		if (r->off + r->len == off) {
			r->len += len;
			return;
		}
	}
	if (s->nfix[c] == s->capfix[c]) {
		s->capfix[c] = s->capfix[c] ? s->capfix[c] * 2 : 16;
		s->fix[c] = ms_realloc(s->fix[c],
				       s->capfix[c] * sizeof(*s->fix[c]));
	}
	s->fix[c][s->nfix[c]++] = (struct range){ off, len };
}

static void scan_free(struct scan *s)
{
	for (int c = 0; c < MS_IO_COPIES; c++)
		free(s->fix[c]);
}

static int hdr_valid(struct ms_log *log, uint64_t seg, const uint8_t *p,
		     size_t len, struct ms_seg_hdr *h_r)
{
	const char *err;
	if (ms_seg_hdr_decode(p, len, h_r, &err) < 0)
		return 0;
	return h_r->seg == seg &&
	       memcmp(h_r->store_id, log->meta.store_id, MS_STORE_ID_SIZE) == 0;
}

/*
 * Lockstep scan of one segment over the copies whose fd is >= 0.
 * min_seq: the first record's seq must be at least this.  Feeds log->sum
 * with the merged bytes.
 */
static int scan_segment(struct ms_log *log, uint64_t seg, const int fd[],
			uint64_t min_seq, struct scan *s)
{
	struct ms_seg_reader r[MS_IO_COPIES];
	int hok[MS_IO_COPIES] = { 0, 0 };
	struct ms_seg_hdr h[MS_IO_COPIES];
	const uint8_t *hp[MS_IO_COPIES] = { NULL, NULL };
	int ret = 0;

	memset(s, 0, sizeof(*s));
	for (int c = 0; c < MS_IO_COPIES; c++) {
		s->size[c] = 0;
		if (fd[c] < 0)
			continue;
		if ((ret = ms_seg_reader_init(&r[c], fd[c])) < 0) {
			for (int k = 0; k < c; k++)
				if (fd[k] >= 0)
					ms_seg_reader_free(&r[k]);
			return ret;
		}
		s->size[c] = r[c].size;
		if (ms_seg_reader_peek(&r[c], 0, MS_SEG_HDR_SIZE, &hp[c]) == 0)
			hok[c] = hdr_valid(log, seg, hp[c], MS_SEG_HDR_SIZE,
					   &h[c]) &&
				 h[c].first_seq >= min_seq;
	}
	int pick = hok[0] ? 0 : hok[1] ? 1 : -1;
	if (pick < 0)
		goto out;
	s->have_hdr = 1;
	s->hdr = h[pick];
	uint8_t hbytes[MS_SEG_HDR_SIZE];
	memcpy(hbytes, hp[pick], MS_SEG_HDR_SIZE);
	for (int c = 0; c < MS_IO_COPIES; c++)
		if (c != pick && fd[c] >= 0 &&
		    (!hok[c] || memcmp(hp[c], hbytes, MS_SEG_HDR_SIZE) != 0))
			fix_add(s, c, 0, MS_SEG_HDR_SIZE);
	XXH3_64bits_reset(log->sum);
	XXH3_64bits_update(log->sum, hbytes, MS_SEG_HDR_SIZE);

	uint64_t off = MS_SEG_HDR_SIZE, expect = s->hdr.first_seq;
	uint64_t tl = s->hdr.timeline;
	s->last_seq = expect - 1;
	s->last_timeline = tl;
	for (;;) {
		struct ms_rec_hdr rh[MS_IO_COPIES];
		const uint8_t *rec[MS_IO_COPIES] = { NULL, NULL };
		int ok[MS_IO_COPIES] = { 0, 0 };
		const char *err;

		for (int c = 0; c < MS_IO_COPIES; c++) {
			if (fd[c] < 0)
				continue;
			ms_seg_reader_seek(&r[c], off);
			if (ms_seg_reader_next(&r[c], &rh[c], &rec[c], &err) != 1)
				continue;
			if (rh[c].seq != expect || rh[c].timeline < tl)
				continue;
			if (rh[c].type == MS_REC_SEAL) {
				struct ms_seg_seal seal;
				if (ms_seg_seal_decode(rec[c] + MS_REC_HDR_SIZE,
						       rh[c].len, &seal,
						       &err) < 0 ||
				    seal.seal_off != off ||
				    seal.count != s->count ||
				    seal.first_seq != s->hdr.first_seq ||
				    seal.last_seq + 1 != expect ||
				    seal.sum != XXH3_64bits_digest(log->sum))
					continue;
			}
			ok[c] = 1;
		}
		pick = ok[0] ? 0 : ok[1] ? 1 : -1;
		if (pick < 0)
			break;
		uint64_t size = MS_REC_HDR_SIZE + (uint64_t)rh[pick].len;
		/* a HOLE is its header: its payload is not part of it */
		uint64_t cmp = rh[pick].type == MS_REC_HOLE ? MS_REC_HDR_SIZE
							    : size;
		for (int c = 0; c < MS_IO_COPIES; c++)
			if (c != pick && fd[c] >= 0 &&
			    (!ok[c] || memcmp(rec[c], rec[pick], cmp) != 0))
				fix_add(s, c, off, cmp);
		ms_seg_sum_rec(log->sum, &rh[pick], rec[pick]);
		s->last_seq = expect;
		s->last_timeline = tl = rh[pick].timeline;
		off += size;
		expect++;
		if (rh[pick].type == MS_REC_SEAL) {
			s->sealed = 1;
			break;
		}
		s->count++;
	}
	s->end = off;
out:
	for (int c = 0; c < MS_IO_COPIES; c++)
		if (fd[c] >= 0)
			ms_seg_reader_free(&r[c]);
	return 0;
}

static int copy_bytes(int from, int to, uint64_t off, uint64_t len)
{
	uint8_t buf[1 << 16];
	while (len > 0) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		int ret = ms_pread_full(from, buf, n, off);
		if (ret == 0)
			ret = ms_pwrite_full(to, buf, n, off);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* Save [off, size) of a segment file under lost+found. */
static int save_tail(struct ms_log *log, int c, uint64_t seg, int fd,
		     uint64_t off, uint64_t size)
{
	char name[128];
	struct ms_log_copy *cp = &log->copy[c];

	snprintf(name, sizeof(name), "lost+found/%012llu.seg@%llu.%s.%lld",
		 (unsigned long long)seg, (unsigned long long)off,
		 ms_log_copy_name(c), (long long)time(NULL));
	int ret = ms_save_range(cp->root_fd, name, fd, off, size);
	if (ret == 0)
		msg_warn("recover.tail_cut copy=%s segment=%llu offset=%llu "
			 "bytes=%llu saved=%s msg=\"never acknowledged\"",
			 ms_log_copy_name(c), (unsigned long long)seg,
			 (unsigned long long)off,
			 (unsigned long long)(size - off),
			 msg_q(ms_errf("%s/%s", cp->root, name)));
	return ret;
}

/* 1 if [off, end of file) of fd is zeros only (the writer's prepared
   space), 0 if not or unreadable. */
static int tail_is_zeros(int fd, uint64_t off)
{
	struct ms_seg_reader r;

	if (ms_seg_reader_init(&r, fd) < 0)
		return 0;
	int ret = ms_seg_reader_zeros_from(&r, off);
	ms_seg_reader_free(&r);
	return ret > 0;
}

/*
 * Is there a valid batch-start record past off on this copy?  If so the
 * bytes before it were durable when it was written: damage at off is not
 * a torn tail but lost acknowledged data, and must not be cut.  Returns
 * its offset, or 0.  Candidates are found by the cheap header rules
 * first, so the checksum runs rarely.
 */
static uint64_t find_batch_mark(int fd, uint64_t off, uint64_t min_seq)
{
	struct ms_seg_reader r;
	uint64_t found = 0;

	if (fd < 0 || ms_seg_reader_init(&r, fd) < 0)
		return 0;
	for (uint64_t p = off + 1; p + MS_REC_HDR_SIZE <= r.size; p++) {
		const uint8_t *b;
		struct ms_rec_hdr h;
		const char *err;
		if (ms_seg_reader_peek(&r, p, MS_REC_HDR_SIZE, &b) < 0)
			break;
		if ((b[1] & MS_REC_F_BATCH) == 0 ||
		    ms_rec_check_hdr(b, &h, &err) < 0 || h.seq < min_seq ||
		    h.len > r.size - p - MS_REC_HDR_SIZE)
			continue;
		ms_seg_reader_seek(&r, p);
		const uint8_t *rec;
		if (ms_seg_reader_next(&r, &h, &rec, &err) == 1) {
			found = p;
			break;
		}
	}
	ms_seg_reader_free(&r);
	return found;
}

/* Make every healthy copy equal to the scan's merged prefix. */
static int apply_scan(struct ms_log *log, uint64_t seg, int fd[],
		      struct scan *s)
{
	char name[MS_SEG_NAME_LEN + 1];

	ms_seg_name(seg, name);
	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		int o = 1 - c, changed = 0, ret = 0;
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		if (fd[c] < 0) {
			/* the file is missing on this copy: rebuild it whole */
			fd[c] = openat(log->copy[c].log_fd, name,
				       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
				       0640);
			if (fd[c] < 0 || fsync(log->copy[c].log_fd) < 0) {
				ms_log_copy_fail(log, c, -errno,
						 ms_errf("recreate %s", name));
				continue;
			}
			s->nfix[c] = 0;
			fix_add(s, c, 0, s->end);
			s->size[c] = 0;
			msg_warn("recover.segment_rebuilt copy=%s segment=%llu "
				 "source=%s reason=missing",
				 ms_log_copy_name(c), (unsigned long long)seg,
				 ms_log_copy_name(o));
		}
		if (s->size[c] > s->end) {
			if (tail_is_zeros(fd[c], s->end))
				msg_info("recover.prepared_cut copy=%s "
					 "segment=%llu offset=%llu bytes=%llu",
					 ms_log_copy_name(c),
					 (unsigned long long)seg,
					 (unsigned long long)s->end,
					 (unsigned long long)(s->size[c] -
							      s->end));
			else
				ret = save_tail(log, c, seg, fd[c], s->end,
						s->size[c]);
			if (ret == 0 && ftruncate(fd[c], (off_t)s->end) < 0)
				ret = -errno;
			changed = 1;
		}
		for (size_t i = 0; i < s->nfix[c] && ret == 0; i++) {
			ret = copy_bytes(fd[o], fd[c], s->fix[c][i].off,
					 s->fix[c][i].len);
			changed = 1;
		}
		if (s->nfix[c] > 0 && ret == 0)
			msg_warn("recover.ranges_rewritten copy=%s segment=%llu "
				 "ranges=%zu source=%s",
				 ms_log_copy_name(c), (unsigned long long)seg,
				 s->nfix[c], ms_log_copy_name(o));
		if (changed && ret == 0 && fdatasync(fd[c]) < 0)
			ret = -errno;
		if (ret < 0)
			ms_log_copy_fail(log, c, ret,
					 ms_errf("recover %s", name));
	}
	return 0;
}

/* Move a segment file aside to lost+found on every copy. */
static void move_aside(struct ms_log *log, uint64_t seg)
{
	char name[MS_SEG_NAME_LEN + 1], dst[128];

	ms_seg_name(seg, name);
	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		struct ms_log_copy *cp = &log->copy[c];
		if (cp->state != MS_COPY_OK)
			continue;
		snprintf(dst, sizeof(dst), "lost+found/%s.%s.%lld", name,
			 ms_log_copy_name(c), (long long)time(NULL));
		if (renameat(cp->log_fd, name, cp->root_fd, dst) == 0) {
			(void)fsync(cp->log_fd);
			msg_warn("recover.segment_moved copy=%s file=%s to=%s "
				 "reason=\"no valid header (never "
				 "acknowledged)\"",
				 ms_log_copy_name(c), msg_q(name),
				 msg_q(ms_errf("%s/%s", cp->root, dst)));
		}
	}
}

/* Cheap check of a sealed segment: header, and the seal at the end. */
static int sealed_ok(struct ms_log *log, uint64_t seg, int fd, uint64_t min_seq,
		     struct ms_seg_seal *seal_r, struct ms_rec_hdr *sh_r,
		     uint8_t tail_r[MS_SEG_SEAL_SIZE])
{
	uint8_t hb[MS_SEG_HDR_SIZE];
	struct ms_seg_hdr h;
	struct stat st;
	const char *err;

	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	uint64_t size = (uint64_t)st.st_size;
	if (size < MS_SEG_HDR_SIZE + MS_SEG_SEAL_SIZE)
		return 0;
	if (ms_pread_full(fd, hb, sizeof(hb), 0) < 0 ||
	    !hdr_valid(log, seg, hb, sizeof(hb), &h) || h.first_seq < min_seq)
		return 0;
	if (ms_pread_full(fd, tail_r, MS_SEG_SEAL_SIZE,
			  size - MS_SEG_SEAL_SIZE) < 0)
		return 0;
	if (ms_rec_decode(tail_r, MS_SEG_SEAL_SIZE, sh_r, &err) < 0 ||
	    sh_r->type != MS_REC_SEAL ||
	    ms_seg_seal_decode(tail_r + MS_REC_HDR_SIZE, sh_r->len, seal_r,
			       &err) < 0)
		return 0;
	return seal_r->seal_off == size - MS_SEG_SEAL_SIZE &&
	       seal_r->first_seq == h.first_seq &&
	       sh_r->seq == seal_r->last_seq + 1;
}

/* Replace a sealed segment file on copy c with the good copy's. */
static void clone_segment(struct ms_log *log, uint64_t seg, int c, int from_fd)
{
	char name[MS_SEG_NAME_LEN + 1], tmp[MS_SEG_NAME_LEN + 8];
	struct ms_log_copy *cp = &log->copy[c];
	struct stat st;
	int ret = 0;

	ms_seg_name(seg, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	int fd = openat(cp->log_fd, tmp,
			O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	memset(&st, 0, sizeof(st));
	if (fd < 0 || fstat(from_fd, &st) < 0)
		ret = errno ? -errno : -EIO;
	if (ret == 0)
		ret = copy_bytes(from_fd, fd, 0, (uint64_t)st.st_size);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (ret == 0 && renameat(cp->log_fd, tmp, cp->log_fd, name) < 0)
		ret = -errno;
	if (ret == 0 && fsync(cp->log_fd) < 0)
		ret = -errno;
	ms_log_seg_fd_forget(log, c, seg);
	if (ret < 0) {
		ms_log_copy_fail(log, c, ret, ms_errf("rebuild %s", name));
		return;
	}
	msg_warn("recover.segment_rebuilt copy=%s segment=%llu source=%s "
		 "reason=\"bad header or seal\"",
		 ms_log_copy_name(c), (unsigned long long)seg, ms_log_copy_name(1 - c));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Union of the segment numbers found on the healthy copies, ascending. */
static int list_segments(struct ms_log *log, uint64_t **list_r, size_t *n_r)
{
	uint64_t *list = NULL;
	size_t n = 0, cap = 0;

	for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		int dfd = dup(log->copy[c].log_fd);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		if (d == NULL) {
			if (dfd >= 0)
				close(dfd);
			ms_log_copy_fail(log, c, -errno, "list log directory");
			continue;
		}
		rewinddir(d);
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			uint64_t seg;
			if (ms_seg_parse_name(de->d_name, &seg) < 0 || seg == 0)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				list = ms_realloc(list, cap * sizeof(*list));
			}
			list[n++] = seg;
		}
		closedir(d);
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), cmp_u64);
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (u == 0 || list[u - 1] != list[i])
			list[u++] = list[i];
	*list_r = list;
	*n_r = u;
	return 0;
}

int ms_log_recover(struct ms_log *log, const char **error_r)
{
	uint64_t *list;
	size_t n;
	uint64_t min_seq = 1;
	int ret = 0;

	ms_assert(log->ncopies >= 1 && log->ncopies <= MS_IO_COPIES);
	log->timeline = 1;
	log->next_seq = 1;
	log->head_seg = 1;
	log->need_hdr = 1;
	list_segments(log, &list, &n);

	for (size_t i = 0; i < n; i++) {
		uint64_t seg = list[i];
		int last = i + 1 == n;
		int fd[MS_IO_COPIES] = { -1, -1 };

		for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
			if (log->copy[c].state == MS_COPY_OK) {
				int r = ms_log_seg_fd(log, c, seg);
				fd[c] = r >= 0 ? r : -1;
			}

		if (!last) {
			struct ms_seg_seal seal[MS_IO_COPIES];
			struct ms_rec_hdr sh[MS_IO_COPIES];
			uint8_t tail[MS_IO_COPIES][MS_SEG_SEAL_SIZE];
			int ok[MS_IO_COPIES] = { 0, 0 };
			for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
				ok[c] = sealed_ok(log, seg, fd[c], min_seq,
						  &seal[c], &sh[c], tail[c]);
			int good = ok[0] ? 0 : ok[1] ? 1 : -1;
			if (good >= 0) {
				int other = 1 - good;
				if (other < log->ncopies &&
				    log->copy[other].state == MS_COPY_OK &&
				    !log->cfg.readonly &&
				    (!ok[other] ||
				     memcmp(tail[0], tail[1],
					    MS_SEG_SEAL_SIZE) != 0))
					clone_segment(log, seg, other, fd[good]);
				min_seq = sh[good].seq + 1;
				log->timeline = sh[good].timeline;
				ms_log_segs_add(log, seg);
				continue;
			}
		}

		struct scan s;
		scan_segment(log, seg, fd, min_seq, &s);
		if (!s.have_hdr) {
			if (!last) {
				*error_r = ms_errf(
					"segment %llu has no valid header on any "
					"copy but later segments exist; run "
					"mstore verify",
					(unsigned long long)seg);
				ret = MS_ECORRUPT;
				scan_free(&s);
				break;
			}
			if (!log->cfg.readonly) {
				for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++)
					ms_log_seg_fd_forget(log, c, seg);
				move_aside(log, seg);
			}
			scan_free(&s);
			break;
		}
		if (!last && !s.sealed) {
			*error_r = ms_errf("segment %llu: no valid seal on any "
					   "copy (valid records end at offset "
					   "%llu) but later segments exist; run "
					   "mstore verify",
					   (unsigned long long)seg,
					   (unsigned long long)s.end);
			ret = MS_ECORRUPT;
			scan_free(&s);
			break;
		}
		/* a follower's head ends where its valid records end: past
		   them is the writer's flush in progress (whose next batch
		   may come while the copies are read), or damage, where the
		   following stops alike */
		if (last && !s.sealed && !log->cfg.follow) {
			for (int c = 0; c < MS_IO_COPIES && c < log->ncopies; c++) {
				uint64_t mark = s.size[c] > s.end
							? find_batch_mark(fd[c], s.end,
									  s.last_seq + 1)
							: 0;
				if (mark == 0)
					continue;
				*error_r = ms_errf(
					"segment %llu offset %llu: record bad "
					"on every copy, but acknowledged "
					"records follow (%s copy: a batch "
					"starts at offset %llu); refusing to "
					"cut them: run mstore verify",
					(unsigned long long)seg,
					(unsigned long long)s.end,
					ms_log_copy_name(c),
					(unsigned long long)mark);
				ret = MS_ECORRUPT;
			}
			if (ret < 0 && log->cfg.readonly) {
				/* a reader may still read every record on
				   disk: each is checked on its own, and a walk
				   stops at the damage with its position */
				uint64_t end = s.size[0] > s.size[1] ? s.size[0]
								     : s.size[1];
				msg_warn("recover.warning error=%s", msg_q(*error_r));
				s.end = end;
				ret = 0;
			}
			if (ret < 0) {
				scan_free(&s);
				break;
			}
		}
		if (!log->cfg.readonly)
			apply_scan(log, seg, fd, &s);
		ms_log_segs_add(log, seg);
		log->timeline = s.last_timeline;
		min_seq = s.last_seq + 1;
		if (last && !s.sealed) {
			/* the head: appends continue here */
			log->head_seg = seg;
			log->head_end = s.end;
			log->seg_first_seq = s.hdr.first_seq;
			log->seg_count = s.count;
			log->need_hdr = 0;
			log->durable = (struct ms_pos){ seg, s.end };
		}
		scan_free(&s);
	}
	if (ret == 0) {
		log->next_seq = min_seq;
		log->durable_seq = min_seq - 1;
		if (log->need_hdr) {
			/* the head will be a new segment after the last one */
			log->head_seg = log->nsegs ? log->segs[log->nsegs - 1] + 1
						   : (n ? list[n - 1] + 1 : 1);
			if (log->nsegs > 0) {
				uint64_t lastseg = log->segs[log->nsegs - 1];
				struct stat st;
				int fd = -1;
				for (int c = 0; c < log->ncopies && fd < 0; c++)
					if (log->copy[c].state == MS_COPY_OK)
						fd = ms_log_seg_fd(log, c, lastseg);
				if (fd >= 0 && fstat(fd, &st) == 0)
					log->durable = (struct ms_pos){
						lastseg, (uint64_t)st.st_size
					};
			}
		}
	}
	free(list);
	return ret;
}
