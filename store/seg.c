/*
 * seg.c - segment header, seal record, meta file, segment reader.  The
 * byte layouts are in seg.h (and docs/format.md); a comment that disagrees
 * with the code is a bug.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "seg.h"

static const uint8_t seg_magic[8] = { 'M', 'S', 'T', 'O', 'R', 'S', 'E', 'G' };
static const uint8_t meta_magic[8] = { 'M', 'S', 'T', 'O', 'M', 'E', 'T', 'A' };
static const uint8_t repl_magic[8] = { 'M', 'S', 'T', 'O', 'R', 'E', 'P', 'L' };

#define MS_SEG_WINDOW ((size_t)1 << 20)

void ms_seg_name(uint64_t seg, char *out)
{
	ms_assert(seg <= MS_SEG_MAX_NUMBER);
	snprintf(out, MS_SEG_NAME_LEN + 1, "%012llu.seg",
		 (unsigned long long)seg);
}

int ms_seg_parse_name(const char *name, uint64_t *seg_r)
{
	uint64_t v = 0;
	for (int i = 0; i < 12; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	if (strcmp(name + 12, ".seg") != 0)
		return -1;
	*seg_r = v;
	return 0;
}

void ms_seg_hdr_encode(const struct ms_seg_hdr *h, uint8_t out[MS_SEG_HDR_SIZE])
{
	memcpy(out, seg_magic, 8);
	ms_put32(out + 8, MS_SEG_VERSION);
	ms_put32(out + 12, MS_SEG_HDR_SIZE);
	memcpy(out + 16, h->store_id, MS_STORE_ID_SIZE);
	ms_put64(out + 32, h->seg);
	ms_put64(out + 40, h->timeline);
	ms_put64(out + 48, h->first_seq);
	ms_put64(out + 56, XXH3_64bits(out, 56));
}

int ms_seg_hdr_decode(const uint8_t *buf, size_t len, struct ms_seg_hdr *h_r,
		      const char **error_r)
{
	if (len < MS_SEG_HDR_SIZE) {
		*error_r = ms_errf("segment header truncated (%zu of %d bytes)",
				   len, MS_SEG_HDR_SIZE);
		return MS_ETRUNC;
	}
	if (memcmp(buf, seg_magic, 8) != 0) {
		*error_r = "bad segment magic";
		return MS_EMAGIC;
	}
	if (XXH3_64bits(buf, 56) != ms_get64(buf + 56)) {
		*error_r = "segment header checksum mismatch";
		return MS_ECORRUPT;
	}
	if (ms_get32(buf + 8) != MS_SEG_VERSION) {
		*error_r = ms_errf("segment format version %u, expected %u",
				   ms_get32(buf + 8), MS_SEG_VERSION);
		return MS_EVERSION;
	}
	if (ms_get32(buf + 12) != MS_SEG_HDR_SIZE) {
		*error_r = "segment header size is not 64";
		return MS_ECORRUPT;
	}
	memcpy(h_r->store_id, buf + 16, MS_STORE_ID_SIZE);
	h_r->seg = ms_get64(buf + 32);
	h_r->timeline = ms_get64(buf + 40);
	h_r->first_seq = ms_get64(buf + 48);
	return 0;
}

void ms_seg_seal_encode(const struct ms_seg_seal *s,
			uint8_t out[MS_SEG_SEAL_PAYLOAD])
{
	ms_put64(out, s->count);
	ms_put64(out + 8, s->first_seq);
	ms_put64(out + 16, s->last_seq);
	ms_put64(out + 24, s->seal_off);
	ms_put64(out + 32, s->sum);
}

int ms_seg_seal_decode(const uint8_t *payload, size_t len,
		       struct ms_seg_seal *s_r, const char **error_r)
{
	struct ms_seg_seal s;

	if (len != MS_SEG_SEAL_PAYLOAD) {
		*error_r = ms_errf("seal payload is %zu bytes, expected %d",
				   len, MS_SEG_SEAL_PAYLOAD);
		return MS_ECORRUPT;
	}
	s.count = ms_get64(payload);
	s.first_seq = ms_get64(payload + 8);
	s.last_seq = ms_get64(payload + 16);
	s.seal_off = ms_get64(payload + 24);
	s.sum = ms_get64(payload + 32);
	if (s.first_seq == 0 || s.last_seq + 1 < s.first_seq ||
	    s.last_seq + 1 - s.first_seq != s.count) {
		*error_r = "seal record counts disagree";
		return MS_ECORRUPT;
	}
	if (s.seal_off < MS_SEG_HDR_SIZE ||
	    (s.seal_off - MS_SEG_HDR_SIZE) / MS_REC_HDR_SIZE < s.count) {
		*error_r = "seal offset too small for its record count";
		return MS_ECORRUPT;
	}
	*s_r = s;
	return 0;
}

void ms_meta_encode(const struct ms_meta *m, uint8_t out[MS_META_SIZE])
{
	memcpy(out, meta_magic, 8);
	ms_put32(out + 8, MS_SEG_VERSION);
	ms_put32(out + 12, 0);
	memcpy(out + 16, m->store_id, MS_STORE_ID_SIZE);
	memcpy(out + 32, m->salt, MS_SALT_SIZE);
	ms_put64(out + 64, m->created);
	ms_put64(out + 72, XXH3_64bits(out, 72));
}

int ms_meta_decode(const uint8_t *buf, size_t len, struct ms_meta *m_r,
		   const char **error_r)
{
	if (len != MS_META_SIZE) {
		*error_r = ms_errf("meta file is %zu bytes, expected %d", len,
				   MS_META_SIZE);
		return MS_ECORRUPT;
	}
	if (memcmp(buf, meta_magic, 8) != 0) {
		*error_r = "bad meta file magic";
		return MS_EMAGIC;
	}
	if (XXH3_64bits(buf, 72) != ms_get64(buf + 72)) {
		*error_r = "meta file checksum mismatch";
		return MS_ECORRUPT;
	}
	if (ms_get32(buf + 8) != MS_SEG_VERSION) {
		*error_r = ms_errf("meta format version %u, expected %u",
				   ms_get32(buf + 8), MS_SEG_VERSION);
		return MS_EVERSION;
	}
	if (ms_get32(buf + 12) != 0) {
		*error_r = "meta file reserved field is not zero";
		return MS_ECORRUPT;
	}
	memcpy(m_r->store_id, buf + 16, MS_STORE_ID_SIZE);
	memcpy(m_r->salt, buf + 32, MS_SALT_SIZE);
	m_r->created = ms_get64(buf + 64);
	return 0;
}

int ms_meta_read(int dirfd, struct ms_meta *m_r, const char **error_r)
{
	uint8_t buf[MS_META_SIZE + 1];
	int fd = openat(dirfd, MS_META_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = -errno;
		*error_r = ms_errf("open %s: %s", MS_META_NAME, strerror(errno));
		return err;
	}
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	int err = n < 0 ? -errno : 0;
	close(fd);
	if (err < 0) {
		*error_r = ms_errf("read %s: %s", MS_META_NAME,
				   strerror(-err));
		return err;
	}
	return ms_meta_decode(buf, (size_t)n, m_r, error_r);
}

int ms_write_small_file(int dirfd, const char *name, const char *tmp,
			const uint8_t *buf, size_t len, const char **error_r)
{
	int ret;
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			0640);
	if (fd < 0) {
		ret = -errno;
		*error_r = ms_errf("create %s: %s", tmp, strerror(errno));
		return ret;
	}
	ret = ms_pwrite_full(fd, buf, len, 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		ret = -errno;
	if (ret == 0 && fsync(dirfd) < 0)
		ret = -errno;
	if (ret < 0)
		*error_r = ms_errf("write %s: %s", name, ms_strerror(ret));
	return ret;
}

int ms_meta_write(int dirfd, const struct ms_meta *m, const char **error_r)
{
	uint8_t buf[MS_META_SIZE];

	ms_meta_encode(m, buf);
	return ms_write_small_file(dirfd, MS_META_NAME, MS_META_NAME ".tmp",
				   buf, sizeof(buf), error_r);
}

/* ---- replica marker (seg.h) ---- */

void ms_replica_encode(const struct ms_replica *r,
		       uint8_t out[MS_REPLICA_SIZE])
{
	int promoting = r->state == MS_REPLICA_PROMOTING;
	memcpy(out, repl_magic, 8);
	ms_put32(out + 8, 1);
	ms_put32(out + 12, (uint32_t)r->state);
	ms_put64(out + 16, promoting ? r->timeline : 0);
	ms_put64(out + 24, promoting ? r->fork_seq : 0);
	ms_put64(out + 32, XXH3_64bits(out, 32));
}

int ms_replica_decode(const uint8_t *buf, size_t len, struct ms_replica *r_r,
		      const char **error_r)
{
	if (len != MS_REPLICA_SIZE) {
		*error_r = ms_errf("%s is %zu bytes, expected %d",
				   MS_REPLICA_NAME, len, MS_REPLICA_SIZE);
		return MS_ECORRUPT;
	}
	if (memcmp(buf, repl_magic, 8) != 0) {
		*error_r = ms_errf("bad %s magic", MS_REPLICA_NAME);
		return MS_EMAGIC;
	}
	if (XXH3_64bits(buf, 32) != ms_get64(buf + 32)) {
		*error_r = ms_errf("%s checksum mismatch", MS_REPLICA_NAME);
		return MS_ECORRUPT;
	}
	if (ms_get32(buf + 8) != 1) {
		*error_r = ms_errf("%s format version %u, expected 1",
				   MS_REPLICA_NAME, ms_get32(buf + 8));
		return MS_EVERSION;
	}
	uint32_t state = ms_get32(buf + 12);
	uint64_t tl = ms_get64(buf + 16), fork = ms_get64(buf + 24);
	if (state != MS_REPLICA_DR && state != MS_REPLICA_PROMOTING) {
		*error_r = ms_errf("%s: unknown state %u", MS_REPLICA_NAME,
				   state);
		return MS_ECORRUPT;
	}
	if ((state == MS_REPLICA_PROMOTING) != (tl != 0) ||
	    (state == MS_REPLICA_DR && fork != 0)) {
		*error_r = ms_errf("%s: state %u with timeline %llu",
				   MS_REPLICA_NAME, state,
				   (unsigned long long)tl);
		return MS_ECORRUPT;
	}
	r_r->state = (enum ms_replica_state)state;
	r_r->timeline = tl;
	r_r->fork_seq = fork;
	return 0;
}

int ms_replica_read(int dirfd, struct ms_replica *r_r, const char **error_r)
{
	uint8_t buf[MS_REPLICA_SIZE + 1];
	r_r->state = MS_REPLICA_NONE;
	r_r->timeline = r_r->fork_seq = 0;
	int fd = openat(dirfd, MS_REPLICA_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		int err = -errno;
		*error_r = ms_errf("open %s: %s", MS_REPLICA_NAME,
				   strerror(errno));
		return err;
	}
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	int err = n < 0 ? -errno : 0;
	close(fd);
	if (err < 0) {
		*error_r = ms_errf("read %s: %s", MS_REPLICA_NAME,
				   strerror(-err));
		return err;
	}
	return ms_replica_decode(buf, (size_t)n, r_r, error_r);
}

int ms_replica_write(int dirfd, const struct ms_replica *r,
		     const char **error_r)
{
	uint8_t buf[MS_REPLICA_SIZE];

	ms_assert(r->state == MS_REPLICA_DR ||
		  r->state == MS_REPLICA_PROMOTING);
	ms_replica_encode(r, buf);
	return ms_write_small_file(dirfd, MS_REPLICA_NAME,
				   MS_REPLICA_NAME ".tmp", buf, sizeof(buf),
				   error_r);
}

int ms_replica_remove(int dirfd, const char **error_r)
{
	int ret = 0;
	if (unlinkat(dirfd, MS_REPLICA_NAME, 0) < 0) {
		if (errno == ENOENT)
			return 0;
		ret = -errno;
	}
	if (ret == 0 && fsync(dirfd) < 0)
		ret = -errno;
	if (ret < 0)
		*error_r = ms_errf("remove %s: %s", MS_REPLICA_NAME,
				   ms_strerror(ret));
	return ret;
}

int ms_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return MS_ETRUNC;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int ms_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int ms_seg_reader_init(struct ms_seg_reader *r, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	r->fd = fd;
	r->size = (uint64_t)st.st_size;
	r->off = 0;
	r->win_off = 0;
	ms_buf_init(&r->win, MS_REC_HDR_SIZE + (size_t)MS_REC_MAX_PAYLOAD +
				     MS_SEG_WINDOW);
	return 0;
}

void ms_seg_reader_free(struct ms_seg_reader *r)
{
	ms_buf_free(&r->win);
}

int ms_seg_reader_peek(struct ms_seg_reader *r, uint64_t off, size_t len,
		       const uint8_t **p_r)
{
	if (off > r->size || len > r->size - off)
		return MS_ETRUNC;
	if (r->win.data != NULL && off >= r->win_off &&
	    off + len <= r->win_off + r->win.len) {
		*p_r = r->win.data + (off - r->win_off);
		return 0;
	}
	/* refill: read at least a window, more if the item is larger */
	size_t want = len > MS_SEG_WINDOW ? len : MS_SEG_WINDOW;
	if (want > r->size - off)
		want = (size_t)(r->size - off);
	ms_buf_reset(&r->win);
	int ret = ms_buf_resize(&r->win, want);
	if (ret < 0)
		return ret;
	r->win_off = off;
	ret = ms_pread_full(r->fd, r->win.data, want, off);
	if (ret < 0) {
		r->win.len = 0;
		return ret;
	}
	*p_r = r->win.data;
	return 0;
}

int ms_seg_reader_zeros_from(struct ms_seg_reader *r, uint64_t off)
{
	while (off < r->size) {
		const uint8_t *p;
		size_t n = r->size - off < MS_SEG_WINDOW ?
				   (size_t)(r->size - off) : MS_SEG_WINDOW;
		int ret = ms_seg_reader_peek(r, off, n, &p);
		if (ret < 0)
			return ret;
		if (!ms_zeros(p, n))
			return 0;
		off += n;
	}
	return 1;
}

int ms_seg_reader_next(struct ms_seg_reader *r, struct ms_rec_hdr *hdr_r,
		       const uint8_t **rec_r, const char **error_r)
{
	const uint8_t *p;
	struct ms_rec_hdr h;
	int ret;

	if (r->off == r->size)
		return 0;
	if (r->size - r->off < MS_REC_HDR_SIZE) {
		*error_r = "file ends inside a record header";
		return MS_ETRUNC;
	}
	if ((ret = ms_seg_reader_peek(r, r->off, MS_REC_HDR_SIZE, &p)) < 0) {
		*error_r = ms_errf("read: %s", ms_strerror(ret));
		return ret;
	}
	if (ms_zeros(p, MS_REC_HDR_SIZE) &&
	    (ret = ms_seg_reader_zeros_from(r, r->off)) != 0) {
		if (ret > 0)
			return 0; /* prepared space: the records end here */
		*error_r = ms_errf("read: %s", ms_strerror(ret));
		return ret;
	}
	if ((ret = ms_rec_check_hdr(p, &h, error_r)) < 0)
		return ret;
	if (r->size - r->off - MS_REC_HDR_SIZE < h.len) {
		*error_r = ms_errf("file ends inside a %u-byte record payload",
				   h.len);
		return MS_ETRUNC;
	}
	if (h.type == MS_REC_HOLE) {
		/* its payload is a hole: the header is the whole record */
		if ((ret = ms_rec_check_sum(p, NULL, 0, error_r)) < 0)
			return ret;
		*hdr_r = h;
		*rec_r = p;
		r->off += MS_REC_HDR_SIZE + h.len;
		return 1;
	}
	if ((ret = ms_seg_reader_peek(r, r->off, MS_REC_HDR_SIZE + h.len,
				      &p)) < 0) {
		*error_r = ms_errf("read: %s", ms_strerror(ret));
		return ret;
	}
	if ((ret = ms_rec_check_sum(p, p + MS_REC_HDR_SIZE, h.len,
				    error_r)) < 0)
		return ret;
	*hdr_r = h;
	*rec_r = p;
	r->off += MS_REC_HDR_SIZE + h.len;
	return 1;
}

void ms_seg_sum_rec(void *xxh3_state, const struct ms_rec_hdr *h,
		    const uint8_t *rec)
{
	static const uint8_t zero[65536];
	XXH3_state_t *st = xxh3_state;

	if (h->type != MS_REC_HOLE) {
		XXH3_64bits_update(st, rec, MS_REC_HDR_SIZE + (size_t)h->len);
		return;
	}
	XXH3_64bits_update(st, rec, MS_REC_HDR_SIZE);
	for (uint64_t left = h->len; left > 0;) {
		size_t n = left < sizeof(zero) ? (size_t)left : sizeof(zero);
		XXH3_64bits_update(st, zero, n);
		left -= n;
	}
}

int ms_save_range(int dirfd, const char *name, int fd, uint64_t off,
		  uint64_t size)
{
	uint8_t buf[1 << 16];
	int ret = 0;
	int out = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			 0640);
	if (out < 0)
		return -errno;
	for (uint64_t o = off; o < size && ret == 0;) {
		size_t n = size - o < sizeof(buf) ? (size_t)(size - o)
						  : sizeof(buf);
		ret = ms_pread_full(fd, buf, n, o);
		if (ret == 0)
			ret = ms_pwrite_full(out, buf, n, o - off);
		o += n;
	}
	if (ret == 0 && fsync(out) < 0)
		ret = -errno;
	close(out);
	return ret;
}
