/*
 * compact.c - the file side of in-place compaction (docs/format.md,
 * "Compaction"): rewrite one sealed segment with some records turned into
 * HOLE records, every other byte at its offset, and a new seal.
 *
 * The rewrite is a pure function of the segment and the drop list, so any
 * copy can be rewritten from any copy that checks out, and the result's
 * seal checksum (the RETIRE record carries it) tells a finished rewrite
 * from an unfinished one.  Writing goes to NNN.seg.compact next to the
 * segment; the commit is a rename.  Holes are never written: the
 * filesystem does not allocate them, which is where the space comes back.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log_int.h"
#include "msg.h"

#define TMP_SUFFIX ".compact"

static void tmp_name(uint64_t seg, char out[MS_SEG_NAME_LEN + 16])
{
	char name[MS_SEG_NAME_LEN + 1];

	ms_seg_name(seg, name);
	snprintf(out, MS_SEG_NAME_LEN + 16, "%s%s", name, TMP_SUFFIX);
}

/*
 * Check the whole segment file fd: header, every record in seq order,
 * the seal and its checksum.  0 with *seal_r; MS_ECORRUPT with *error_r.
 */
static int seg_check(int fd, uint64_t seg, struct ms_seg_seal *seal_r,
		     const char **error_r)
{
	struct ms_seg_reader r;
	struct ms_seg_hdr sh = { 0 };
	const uint8_t *p;
	XXH3_state_t *st = XXH3_createState();
	uint64_t expect;
	int ret;

	ms_assert(st != NULL);
	XXH3_64bits_reset(st);
	if ((ret = ms_seg_reader_init(&r, fd)) < 0) {
		XXH3_freeState(st);
		*error_r = ms_errf("stat: %s", ms_strerror(ret));
		return ret;
	}
	ret = ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p);
	if (ret == 0)
		ret = ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &sh, error_r);
	else
		*error_r = "segment header unreadable";
	if (ret == 0 && sh.seg != seg) {
		*error_r = "segment header names another segment";
		ret = MS_ECORRUPT;
	}
	if (ret < 0)
		goto out;
	XXH3_64bits_update(st, p, MS_SEG_HDR_SIZE);
	expect = sh.first_seq;
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
	for (;;) {
		struct ms_rec_hdr h;
		const uint8_t *rec;
		uint64_t at = r.off;

		ret = ms_seg_reader_next(&r, &h, &rec, error_r);
		if (ret == 0) {
			*error_r = "segment has no seal";
			ret = MS_ECORRUPT;
			break;
		}
		if (ret < 0)
			break;
		if (h.seq != expect) {
			*error_r = ms_errf("record at %llu has seq %llu, "
					   "expected %llu",
					   (unsigned long long)at,
					   (unsigned long long)h.seq,
					   (unsigned long long)expect);
			ret = MS_ECORRUPT;
			break;
		}
		if (h.type == MS_REC_SEAL) {
			ret = ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, h.len,
						 seal_r, error_r);
			if (ret == 0 &&
			    (seal_r->seal_off != at || r.off != r.size ||
			     seal_r->sum != XXH3_64bits_digest(st))) {
				*error_r = "seal does not match the segment";
				ret = MS_ECORRUPT;
			}
			break;
		}
		ms_seg_sum_rec(st, &h, rec);
		expect++;
	}
out:
	ms_seg_reader_free(&r);
	XXH3_freeState(st);
	return ret < 0 ? ret : 0;
}

static int open_seg(struct ms_log *log, int c, const char *name, int flags)
{
	int fd = openat(log->copy[c].log_fd, name, flags | O_CLOEXEC, 0640);
	return fd < 0 ? -errno : fd;
}

int ms_log_seg_sum(struct ms_log *log, int c, uint64_t seg, int tmp,
		   uint64_t *sum_r)
{
	char name[MS_SEG_NAME_LEN + 16];
	struct ms_seg_seal seal;
	const char *err;
	int ret;

	if (tmp)
		tmp_name(seg, name);
	else
		ms_seg_name(seg, name);
	int fd = open_seg(log, c, name, O_RDONLY);
	if (fd < 0)
		return fd;
	ret = seg_check(fd, seg, &seal, &err);
	close(fd);
	if (ret == 0)
		*sum_r = seal.sum;
	return ret;
}

/* Write out[0..len) at off of every output fd; holes are skipped. */
static int out_write(int *ofd, int n, const void *p, size_t len, uint64_t off)
{
	for (int i = 0; i < n; i++) {
		int ret = ms_pwrite_full(ofd[i], p, len, off);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Rewrite from the checked source fd into every ofd: records at the drop
 * offsets become HOLEs.  *sum_r: the new seal checksum.
 */
static int rewrite(int src, const uint64_t *offs, const uint8_t *types,
		   size_t n, int *ofd, int nout, uint64_t *sum_r,
		   const char **error_r)
{
	struct ms_seg_reader r;
	const uint8_t *p;
	XXH3_state_t *st = XXH3_createState();
	size_t di = 0;
	int ret;

	ms_assert(st != NULL);
	XXH3_64bits_reset(st);
	if ((ret = ms_seg_reader_init(&r, src)) < 0) {
		XXH3_freeState(st);
		*error_r = "stat failed";
		return ret;
	}
	ret = ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p);
	if (ret == 0)
		ret = out_write(ofd, nout, p, MS_SEG_HDR_SIZE, 0);
	if (ret < 0) {
		*error_r = ms_errf("segment header: %s", ms_strerror(ret));
		goto out;
	}
	XXH3_64bits_update(st, p, MS_SEG_HDR_SIZE);
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
	for (;;) {
		struct ms_rec_hdr h;
		const uint8_t *rec;
		uint8_t hb[MS_REC_HDR_SIZE]; /* a HOLE's header, when dropped */
		uint64_t at = r.off;

		ret = ms_seg_reader_next(&r, &h, &rec, error_r);
		if (ret <= 0) {
			if (ret == 0) {
				*error_r = "segment has no seal";
				ret = MS_ECORRUPT;
			}
			break;
		}
		if (di < n && offs[di] < at) {
			*error_r = ms_errf("no record starts at offset %llu",
					   (unsigned long long)offs[di]);
			ret = -EINVAL;
			break;
		}
		if (h.type == MS_REC_SEAL) {
			struct ms_seg_seal seal;
			uint8_t pl[MS_SEG_SEAL_PAYLOAD];

			if (di < n) {
				*error_r =
					ms_errf("offset %llu is past the "
						"last record",
						(unsigned long long)offs[di]);
				ret = -EINVAL;
				break;
			}
			ret = ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, h.len,
						 &seal, error_r);
			if (ret < 0)
				break;
			seal.sum = XXH3_64bits_digest(st);
			ms_seg_seal_encode(&seal, pl);
			ms_rec_encode_hdr(hb, MS_REC_SEAL, h.flags, h.len,
					  h.seq, h.timeline, pl);
			ret = out_write(ofd, nout, hb, sizeof(hb), at);
			if (ret == 0)
				ret = out_write(ofd, nout, pl, sizeof(pl),
						at + MS_REC_HDR_SIZE);
			if (ret < 0)
				*error_r =
					ms_errf("write: %s", ms_strerror(ret));
			*sum_r = seal.sum;
			break;
		}
		if (di < n && offs[di] == at) {
			if (h.type != types[di] && h.type != MS_REC_HOLE) {
				*error_r = ms_errf("record at %llu is a %s, "
						   "not a %s",
						   (unsigned long long)at,
						   ms_rec_type_name(h.type),
						   ms_rec_type_name(types[di]));
				ret = -EINVAL;
				break;
			}
			di++;
			ms_rec_encode_hdr(hb, MS_REC_HOLE,
					  h.flags & MS_REC_F_BATCH, h.len,
					  h.seq, h.timeline, NULL);
			h.type = MS_REC_HOLE;
			rec = hb;
		}
		ms_seg_sum_rec(st, &h, rec);
		ret = out_write(ofd, nout, rec,
				MS_REC_HDR_SIZE + (h.type == MS_REC_HOLE
							   ? 0
							   : (size_t)h.len),
				at);
		if (ret < 0) {
			*error_r = ms_errf("write: %s", ms_strerror(ret));
			break;
		}
	}
out:
	ms_seg_reader_free(&r);
	XXH3_freeState(st);
	return ret < 0 ? ret : 0;
}

int ms_log_compact_write(struct ms_log *log, uint64_t seg, const uint64_t *offs,
			 const uint8_t *types, size_t n, uint64_t *sum_r,
			 const char **error_r)
{
	char name[MS_SEG_NAME_LEN + 1], tmp[MS_SEG_NAME_LEN + 16];
	int src = -1, ofd[MS_IO_COPIES], oc[MS_IO_COPIES], nout = 0;
	const char *why[MS_IO_COPIES] = {"not tried", "not tried"};
	int ret;

	if (log->cfg.readonly)
		return MS_ESTATE;
	if (seg >= log->head_seg) {
		*error_r = "the open segment is never compacted";
		return -EINVAL;
	}
	for (size_t i = 1; i < n; i++)
		ms_assert(offs[i] > offs[i - 1]);
	ms_seg_name(seg, name);
	tmp_name(seg, tmp);
	/* the source: the first copy where the segment checks out whole */
	for (int c = 0; c < log->ncopies && src < 0; c++) {
		struct ms_seg_seal seal;
		int fd = open_seg(log, c, name, O_RDONLY);
		if (fd < 0) {
			why[c] = ms_strerror(fd);
			continue;
		}
		if (seg_check(fd, seg, &seal, &why[c]) == 0)
			src = fd;
		else
			close(fd);
	}
	if (src < 0) {
		*error_r = ms_errf("segment %llu checks out on no copy "
				   "(primary: %s; secondary: %s)",
				   (unsigned long long)seg, why[0], why[1]);
		return MS_ECORRUPT;
	}
	for (int c = 0; c < log->ncopies; c++) {
		if (log->copy[c].state != MS_COPY_OK)
			continue;
		int fd = open_seg(log, c, tmp, O_WRONLY | O_CREAT | O_TRUNC);
		if (fd < 0) {
			ret = fd;
			*error_r = ms_errf("%s: create %s: %s",
					   ms_log_copy_name(c), tmp,
					   ms_strerror(fd));
			goto fail;
		}
		oc[nout] = c;
		ofd[nout++] = fd;
	}
	if (nout == 0) {
		*error_r = "no copy is writable";
		ret = MS_ENOCOPY;
		goto fail;
	}
	ret = rewrite(src, offs, types, n, ofd, nout, sum_r, error_r);
	for (int i = 0; i < nout && ret == 0; i++) {
		if (fdatasync(ofd[i]) < 0 ||
		    fsync(log->copy[oc[i]].log_fd) < 0) {
			ret = -errno;
			*error_r = ms_errf("%s: sync %s: %s",
					   ms_log_copy_name(oc[i]), tmp,
					   ms_strerror(ret));
		}
	}
fail:
	for (int i = 0; i < nout; i++) {
		close(ofd[i]);
		if (ret < 0)
			(void)unlinkat(log->copy[oc[i]].log_fd, tmp, 0);
	}
	close(src);
	return ret;
}

int ms_log_compact_commit(struct ms_log *log, uint64_t seg, uint64_t sum,
			  const char **error_r)
{
	char name[MS_SEG_NAME_LEN + 1], tmp[MS_SEG_NAME_LEN + 16];
	int ret = 0;

	ms_seg_name(seg, name);
	tmp_name(seg, tmp);
	for (int c = 0; c < log->ncopies; c++) {
		uint64_t have = 0;

		if (log->copy[c].state != MS_COPY_OK)
			continue;
		if (ms_log_seg_sum(log, c, seg, 0, &have) == 0 && have == sum) {
			(void)unlinkat(log->copy[c].log_fd, tmp, 0);
			continue; /* done before */
		}
		if (ms_log_seg_sum(log, c, seg, 1, &have) < 0 || have != sum) {
			*error_r = ms_errf("%s: no finished rewrite of segment "
					   "%llu to commit",
					   ms_log_copy_name(c),
					   (unsigned long long)seg);
			ret = MS_ENOTFOUND;
			continue;
		}
		if (renameat(log->copy[c].log_fd, tmp, log->copy[c].log_fd,
			     name) < 0 ||
		    fsync(log->copy[c].log_fd) < 0) {
			ret = -errno;
			*error_r = ms_errf("%s: rename %s: %s",
					   ms_log_copy_name(c), tmp,
					   ms_strerror(ret));
			continue;
		}
		/* cached fds hold the old file: the same bytes at every
		   offset still in use, but its blocks stay allocated */
		ms_log_seg_fd_forget(log, c, seg);
	}
	return ret;
}

int ms_log_compact_finish(struct ms_log *log, uint64_t seg,
			  const uint64_t *offs, const uint8_t *types, size_t n,
			  uint64_t sum, const char **error_r)
{
	uint64_t got;
	int ret = ms_log_compact_commit(log, seg, sum, error_r);

	if (ret != MS_ENOTFOUND)
		return ret;
	/* the rewrite is gone or never finished: do it again */
	if ((ret = ms_log_compact_write(log, seg, offs, types, n, &got,
					error_r)) < 0)
		return ret;
	if (got != sum) {
		*error_r = ms_errf("rewrite of segment %llu gives checksum "
				   "%016llx, the record says %016llx",
				   (unsigned long long)seg,
				   (unsigned long long)got,
				   (unsigned long long)sum);
		return MS_ECORRUPT;
	}
	return ms_log_compact_commit(log, seg, sum, error_r);
}

void ms_log_compact_cleanup(struct ms_log *log)
{
	for (int c = 0; c < log->ncopies; c++) {
		int dfd = dup(log->copy[c].log_fd);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;

		if (d == NULL) {
			if (dfd >= 0)
				close(dfd);
			continue;
		}
		while ((de = readdir(d)) != NULL) {
			size_t len = strlen(de->d_name);
			if (len > strlen(TMP_SUFFIX) &&
			    strcmp(de->d_name + len - strlen(TMP_SUFFIX),
				   TMP_SUFFIX) == 0) {
				msg_info("compaction.cleanup copy=%s file=%s",
					 ms_log_copy_name(c),
					 msg_q(de->d_name));
				(void)unlinkat(log->copy[c].log_fd, de->d_name,
					       0);
			}
		}
		closedir(d);
	}
}

int ms_log_seg_space(struct ms_log *log, uint64_t seg, uint64_t *size_r,
		     uint64_t *alloc_r)
{
	char name[MS_SEG_NAME_LEN + 1];
	struct stat st;

	ms_seg_name(seg, name);
	for (int c = 0; c < log->ncopies; c++) {
		if (log->copy[c].state != MS_COPY_OK ||
		    fstatat(log->copy[c].log_fd, name, &st, 0) < 0)
			continue;
		*size_r = (uint64_t)st.st_size;
		*alloc_r = (uint64_t)st.st_blocks * 512;
		return 0;
	}
	return MS_ENOTFOUND;
}
