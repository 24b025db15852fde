/*
 * chgsnap.c - the change counts file; see chgsnap.h and docs/format.md
 * ("Change counts").
 *
 * A file that is short, long, of another version, fails its checksum or
 * holds a value no writer makes (a count above the largest, a user twice)
 * is refused whole: the caller then starts with a new epoch, which costs
 * the clients one question each and never shows them a stale count.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "buf.h"
#include "chgsnap.h"
#include "ms.h"
#include "seg.h"

/* version 3 adds the mailboxes; a version 2 file is read as one with
   none */
static const uint8_t chgsnap_magic[8] = { 'M', 'S', 'C', 'H', 'G', 'S', '0', '3' };
static const uint8_t chgsnap_magic_v2[8] = { 'M', 'S', 'C', 'H', 'G', 'S', '0', '2' };

void ms_chgsnap_encode(const struct ms_chgsnap *s,
		       const struct ms_u64map *users,
		       const struct ms_u64map *mboxes, uint8_t **buf_r,
		       size_t *len_r)
{
	size_t m = mboxes != NULL ? mboxes->n : 0;
	size_t len = MS_CHGSNAP_HDR_SIZE + users->n * MS_CHGSNAP_USER_SIZE +
		     8 + m * MS_CHGSNAP_USER_SIZE + 8;
	uint8_t *buf = ms_malloc(len), *p = buf;

	memcpy(p, chgsnap_magic, 8);
	memcpy(p + 8, s->store_id, 16);
	p += 24;
	ms_put64(p, s->dir_dev);
	ms_put64(p + 8, s->dir_ino);
	ms_put64(p + 16, s->timeline);
	ms_put64(p + 24, s->seq);
	ms_put64(p + 32, s->epoch);
	ms_put64(p + 40, s->chg_seq);
	ms_put64(p + 48, s->chg_floor);
	ms_put64(p + 56, users->n);
	p += 64;
	MS_U64MAP_EACH(users, i) {
		ms_put64(p, users->keys[i]);
		ms_put64(p + 8, (uint64_t)(uintptr_t)users->vals[i]);
		p += MS_CHGSNAP_USER_SIZE;
	}
	ms_put64(p, m);
	p += 8;
	if (mboxes != NULL) {
		MS_U64MAP_EACH(mboxes, i) {
			ms_put64(p, mboxes->keys[i]);
			ms_put64(p + 8, (uint64_t)(uintptr_t)mboxes->vals[i]);
			p += MS_CHGSNAP_USER_SIZE;
		}
	}
	ms_put64(p, XXH3_64bits(buf, (size_t)(p - buf)));
	*buf_r = buf;
	*len_r = len;
}

int ms_chgsnap_decode(const uint8_t *buf, size_t len, struct ms_chgsnap *s,
		      struct ms_u64map *users, struct ms_u64map *mboxes,
		      const char **error_r)
{
	const uint8_t *p;
	uint64_t n, m = 0;
	int v3;

	if (len < MS_CHGSNAP_HDR_SIZE + 8) {
		*error_r = ms_errf("%zu bytes, shorter than its header", len);
		return MS_ECORRUPT;
	}
	v3 = memcmp(buf, chgsnap_magic, 8) == 0;
	if (!v3 && memcmp(buf, chgsnap_magic_v2, 8) != 0) {
		*error_r = "not a change counts file of this version";
		return MS_ECORRUPT;
	}
	p = buf + 24;
	n = ms_get64(p + 56);
	if (n > MS_CHGSNAP_MAX_USERS) {
		*error_r = ms_errf("%llu users, more than a file holds",
				   (unsigned long long)n);
		return MS_ECORRUPT;
	}
	/* version 3: the mailboxes' number after the users */
	size_t users_end = MS_CHGSNAP_HDR_SIZE + n * MS_CHGSNAP_USER_SIZE;
	if (v3 && len >= users_end + 8 + 8)
		m = ms_get64(buf + users_end);
	if (m > MS_CHGSNAP_MAX_MBOXES ||
	    len != users_end + (v3 ? 8 + m * MS_CHGSNAP_USER_SIZE : 0) + 8) {
		*error_r = ms_errf("%zu bytes for %llu users and %llu "
				   "mailboxes", len, (unsigned long long)n,
				   (unsigned long long)m);
		return MS_ECORRUPT;
	}
	if (ms_get64(buf + len - 8) != XXH3_64bits(buf, len - 8)) {
		*error_r = "checksum mismatch";
		return MS_ECORRUPT;
	}
	memcpy(s->store_id, buf + 8, 16);
	s->dir_dev = ms_get64(p);
	s->dir_ino = ms_get64(p + 8);
	s->timeline = ms_get64(p + 16);
	s->seq = ms_get64(p + 24);
	s->epoch = ms_get64(p + 32);
	s->chg_seq = ms_get64(p + 40);
	s->chg_floor = ms_get64(p + 48);
	if (s->epoch == 0 || s->chg_floor > s->chg_seq) {
		*error_r = ms_errf("epoch %llu, floor %llu above the count "
				   "%llu",
				   (unsigned long long)s->epoch,
				   (unsigned long long)s->chg_floor,
				   (unsigned long long)s->chg_seq);
		return MS_ECORRUPT;
	}
	p += 64;
	for (uint64_t i = 0; i < n; i++, p += MS_CHGSNAP_USER_SIZE) {
		uint64_t user = ms_get64(p), count = ms_get64(p + 8);
		/* a listed user changed after the floor was set */
		if (user == 0 || count <= s->chg_floor ||
		    count > s->chg_seq ||
		    ms_u64map_get(users, user) != NULL) {
			*error_r = ms_errf("user %llu: count %llu (floor %llu, "
					   "largest %llu), or listed twice",
					   (unsigned long long)user,
					   (unsigned long long)count,
					   (unsigned long long)s->chg_floor,
					   (unsigned long long)s->chg_seq);
			ms_u64map_free(users);
			return MS_ECORRUPT;
		}
		ms_u64map_put(users, user, (void *)(uintptr_t)count);
	}
	/* a mailbox's count is that of its last change: any count given */
	struct ms_u64map seen = { 0 }, *into = mboxes != NULL ? mboxes : &seen;
	p += v3 ? 8 : 0;
	for (uint64_t i = 0; i < m; i++, p += MS_CHGSNAP_USER_SIZE) {
		uint64_t mbox = ms_get64(p), count = ms_get64(p + 8);
		if (mbox == 0 || count == 0 || count > s->chg_seq ||
		    ms_u64map_get(into, mbox) != NULL) {
			*error_r = ms_errf("mailbox %llu: count %llu (largest "
					   "%llu), or listed twice",
					   (unsigned long long)mbox,
					   (unsigned long long)count,
					   (unsigned long long)s->chg_seq);
			ms_u64map_free(users);
			ms_u64map_free(into);
			return MS_ECORRUPT;
		}
		ms_u64map_put(into, mbox, (void *)(uintptr_t)count);
	}
	ms_u64map_free(&seen);
	return 0;
}

int ms_chgsnap_write(int dirfd, const struct ms_chgsnap *s,
		     const struct ms_u64map *users,
		     const struct ms_u64map *mboxes, const char **error_r)
{
	struct ms_chgsnap here = *s;
	struct stat st;
	uint8_t *buf;
	size_t len;

	if (fstat(dirfd, &st) < 0) {
		int ret = -errno;
		*error_r = ms_errf("fstat: %s", strerror(errno));
		return ret;
	}
	here.dir_dev = (uint64_t)st.st_dev;
	here.dir_ino = (uint64_t)st.st_ino;
	ms_chgsnap_encode(&here, users, mboxes, &buf, &len);
	int ret = ms_write_small_file(dirfd, MS_CHGSNAP_NAME, MS_CHGSNAP_TMP,
				      buf, len, error_r);
	free(buf);
	return ret;
}

int ms_chgsnap_read(int dirfd, struct ms_chgsnap *s, struct ms_u64map *users,
		    struct ms_u64map *mboxes, const char **error_r)
{
	const size_t max = MS_CHGSNAP_HDR_SIZE +
			   MS_CHGSNAP_MAX_USERS * MS_CHGSNAP_USER_SIZE + 8 +
			   MS_CHGSNAP_MAX_MBOXES * MS_CHGSNAP_USER_SIZE + 8;
	struct stat st;
	uint8_t *buf;
	int ret;
	int fd = openat(dirfd, MS_CHGSNAP_NAME, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		ret = -errno;
		*error_r = ms_errf("open: %s", strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		*error_r = ms_errf("fstat: %s", strerror(errno));
		close(fd);
		return ret;
	}
	/* bounded before it is read: a file no writer makes is refused */
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		*error_r = ms_errf("not a regular file of at most %zu bytes",
				   max);
		close(fd);
		return MS_ECORRUPT;
	}
	buf = ms_malloc((size_t)st.st_size);
	ret = ms_pread_full(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (ret < 0)
		*error_r = ms_errf("read: %s", ms_strerror(ret));
	else
		ret = ms_chgsnap_decode(buf, (size_t)st.st_size, s, users,
					mboxes, error_r);
	free(buf);
	return ret < 0 ? ret : 1;
}

int ms_chgsnap_in(int dirfd, const struct ms_chgsnap *s)
{
	struct stat st;

	return fstat(dirfd, &st) == 0 && (uint64_t)st.st_dev == s->dir_dev &&
	       (uint64_t)st.st_ino == s->dir_ino;
}
