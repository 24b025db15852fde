/*
 * test_chgsnap.c - the change counts file (store/chgsnap.c): written and
 * read back equal (1,000 users and 3,000 mailboxes, and none; a version
 * 2 file, which has no mailboxes, read too), with the identity of the
 * directory that wrote it, which a copy of the file in another
 * directory does not have; no file is "none"; every shorter length,
 * one byte more, every single flipped byte, and values no writer makes
 * (behind a good checksum) are refused whole, the map left empty; the
 * most users a file may list are taken and one more is refused; a file
 * larger than any writer makes is refused before it is read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "chgsnap.h"
#include "ms.h"
#include "mstest.h"
#include "seg.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static void sample_mboxes(const struct ms_chgsnap *s, struct ms_u64map *m,
			  size_t n)
{
	ms_u64map_init(m);
	for (size_t i = 0; i < n; i++) {
		uint64_t id = 1 + mst_randn(&rng_state, 1000000);
		if (ms_u64map_get(m, id) != NULL) {
			i--;
			continue;
		}
		ms_u64map_put(m, id,
			      (void *)(uintptr_t)(1 + mst_randn(&rng_state,
								s->chg_seq)));
	}
}

static void sample(struct ms_chgsnap *s, struct ms_u64map *users, size_t n)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < 16; i++)
		s->store_id[i] = (uint8_t)(0xa0 + i);
	s->dir_dev = 0x801; /* the writer puts its own in their place */
	s->dir_ino = 424242;
	s->timeline = 3;
	s->seq = 123456;
	s->epoch = 0x1122334455667788ULL;
	s->chg_floor = 500;
	s->chg_seq = 500 + 4 * n + 1;
	ms_u64map_init(users);
	for (size_t i = 0; i < n; i++) {
		uint64_t user = 1 + mst_randn(&rng_state, 1000000);
		if (ms_u64map_get(users, user) != NULL) {
			i--;
			continue;
		}
		ms_u64map_put(users, user,
			      (void *)(uintptr_t)(s->chg_floor + 1 +
						  mst_randn(&rng_state, 4 * n + 1)));
	}
}

static void assert_same_map(const struct ms_u64map *ua,
			    const struct ms_u64map *ub)
{
	assert_int_equal(ua->n, ub->n);
	MS_U64MAP_EACH(ua, i) {
		assert_ptr_equal(ms_u64map_get(ub, ua->keys[i]), ua->vals[i]);
	}
}

static void assert_same(const struct ms_chgsnap *a,
			const struct ms_u64map *ua,
			const struct ms_chgsnap *b,
			const struct ms_u64map *ub)
{
	assert_memory_equal(a->store_id, b->store_id, 16);
	assert_true(a->dir_dev == b->dir_dev && a->dir_ino == b->dir_ino &&
		    a->timeline == b->timeline && a->seq == b->seq &&
		    a->epoch == b->epoch && a->chg_seq == b->chg_seq &&
		    a->chg_floor == b->chg_floor);
	assert_int_equal(ua->n, ub->n);
	MS_U64MAP_EACH(ua, i) {
		assert_ptr_equal(ms_u64map_get(ub, ua->keys[i]), ua->vals[i]);
	}
}

static void test_round_trip(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("chgsnap");
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	struct ms_chgsnap s, r;
	struct ms_u64map users, back = { 0 }, mboxes, mback = { 0 };
	const char *err = "";

	assert_true(dirfd >= 0);
	assert_int_equal(ms_chgsnap_read(dirfd, &r, &back, &mback, &err), 0);
	struct stat st;
	assert_int_equal(fstat(dirfd, &st), 0);
	for (size_t n = 0; n <= 1000; n += 1000) {
		sample(&s, &users, n);
		sample_mboxes(&s, &mboxes, 3 * n);
		assert_int_equal(ms_chgsnap_write(dirfd, &s, &users, &mboxes,
						  &err),
				 0);
		assert_int_equal(faccessat(dirfd, MS_CHGSNAP_TMP, F_OK, 0), -1);
		assert_int_equal(ms_chgsnap_read(dirfd, &r, &back, &mback,
						 &err),
				 1);
		/* the writer put its directory's identity in place of s's */
		assert_true(r.dir_dev == (uint64_t)st.st_dev &&
			    r.dir_ino == (uint64_t)st.st_ino);
		assert_int_equal(ms_chgsnap_in(dirfd, &r), 1);
		s.dir_dev = r.dir_dev;
		s.dir_ino = r.dir_ino;
		assert_same(&s, &users, &r, &back);
		assert_same_map(&mboxes, &mback);
		ms_u64map_free(&users);
		ms_u64map_free(&back);
		ms_u64map_free(&mboxes);
		ms_u64map_free(&mback);
	}
	/* the same bytes in another directory: read, but not written there */
	char *other = mst_tmpdir("chgsnap-copy"), cmd[2200];
	snprintf(cmd, sizeof(cmd), "cp '%s/%s' '%s/'", dir, MS_CHGSNAP_NAME,
		 other);
	assert_int_equal(system(cmd), 0);
	int ofd = open(other, O_RDONLY | O_DIRECTORY);
	assert_true(ofd >= 0);
	assert_int_equal(ms_chgsnap_read(ofd, &r, &back, NULL, &err), 1);
	assert_int_equal(ms_chgsnap_in(ofd, &r), 0);
	assert_int_equal(ms_chgsnap_in(dirfd, &r), 1);
	ms_u64map_free(&back);
	close(ofd);
	close(dirfd);
	mst_rmtree(other);
	mst_rmtree(dir);
}

/* MS_CHGSNAP_MAX_USERS listed: taken; one more (bytes and checksum
   right for it): refused. */
static void test_most_users(void **state)
{
	(void)state;
	struct ms_chgsnap s, r;
	struct ms_u64map users = { 0 }, back = { 0 };
	const char *err = "";
	uint8_t *buf;
	size_t len;

	memset(&s, 0, sizeof(s));
	s.epoch = 1;
	s.chg_seq = MS_CHGSNAP_MAX_USERS + 1;
	for (uint64_t u = 1; u <= MS_CHGSNAP_MAX_USERS + 1; u++)
		ms_u64map_put(&users, u, (void *)(uintptr_t)u);
	ms_chgsnap_encode(&s, &users, NULL, &buf, &len);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, NULL, &err),
			 MS_ECORRUPT);
	assert_non_null(strstr(err, "users"));
	assert_int_equal(back.n, 0);
	free(buf);
	ms_u64map_del(&users, MS_CHGSNAP_MAX_USERS + 1);
	ms_chgsnap_encode(&s, &users, NULL, &buf, &len);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, NULL, &err),
			 0);
	assert_int_equal(back.n, MS_CHGSNAP_MAX_USERS);
	free(buf);
	ms_u64map_free(&back);
	/* the same for mailboxes */
	struct ms_u64map none = { 0 }, mb = { 0 }, mback = { 0 };
	for (uint64_t m = 1; m <= MS_CHGSNAP_MAX_MBOXES + 1; m++)
		ms_u64map_put(&mb, m, (void *)(uintptr_t)1);
	ms_chgsnap_encode(&s, &none, &mb, &buf, &len);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 MS_ECORRUPT);
	assert_non_null(strstr(err, "mailboxes"));
	assert_int_equal(mback.n, 0);
	free(buf);
	ms_u64map_del(&mb, MS_CHGSNAP_MAX_MBOXES + 1);
	ms_chgsnap_encode(&s, &none, &mb, &buf, &len);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 0);
	assert_int_equal(mback.n, MS_CHGSNAP_MAX_MBOXES);
	free(buf);
	ms_u64map_free(&mback);
	ms_u64map_free(&mb);
	ms_u64map_free(&users);
}

/* A version 2 file (no mailbox table): read, with no mailboxes. */
static void test_version_2(void **state)
{
	(void)state;
	struct ms_chgsnap s, r;
	struct ms_u64map users, back = { 0 }, mback = { 0 };
	const char *err = "";
	uint8_t *buf;
	size_t len;

	sample(&s, &users, 10);
	ms_chgsnap_encode(&s, &users, NULL, &buf, &len);
	/* version 2: the same without the mailboxes' count */
	memcpy(buf + 7, "2", 1);
	memmove(buf + len - 16, buf + len - 8, 8);
	len -= 8;
	ms_put64(buf + len - 8, XXH3_64bits(buf, len - 8));
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 0);
	assert_same(&s, &users, &r, &back);
	assert_int_equal(mback.n, 0);
	/* and not another version */
	memcpy(buf + 7, "4", 1);
	ms_put64(buf + len - 8, XXH3_64bits(buf, len - 8));
	ms_u64map_free(&back);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 MS_ECORRUPT);
	free(buf);
	ms_u64map_free(&back);
	ms_u64map_free(&users);
}

/* Every cut, one byte more, and every flipped byte: refused, map empty. */
static void test_damage(void **state)
{
	(void)state;
	struct ms_chgsnap s, r;
	struct ms_u64map users, back = { 0 }, mboxes, mback = { 0 };
	const char *err = "";
	uint8_t *buf, *big;
	size_t len;

	sample(&s, &users, 40);
	sample_mboxes(&s, &mboxes, 30);
	ms_chgsnap_encode(&s, &users, &mboxes, &buf, &len);
	assert_int_equal(len, MS_CHGSNAP_HDR_SIZE + 40 * 16 + 8 + 30 * 16 + 8);
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 0);
	ms_u64map_free(&back);
	ms_u64map_free(&mback);
	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(ms_chgsnap_decode(buf, cut, &r, &back, &mback,
						   &err),
				 MS_ECORRUPT);
		assert_int_equal(back.n, 0);
		assert_int_equal(mback.n, 0);
	}
	big = calloc(1, len + 1);
	memcpy(big, buf, len);
	assert_int_equal(ms_chgsnap_decode(big, len + 1, &r, &back, &mback,
					   &err),
			 MS_ECORRUPT);
	free(big);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			buf[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back,
							   &mback, &err),
					 MS_ECORRUPT);
			assert_int_equal(back.n, 0);
			assert_int_equal(mback.n, 0);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	free(buf);
	ms_u64map_free(&users);
	ms_u64map_free(&mboxes);
}

/* Values no writer makes, with the checksum made good: refused. */
static void test_values(void **state)
{
	(void)state;
	struct ms_chgsnap s, r;
	struct ms_u64map users, back = { 0 }, mboxes, mback = { 0 };
	const char *err = "";
	uint8_t *buf;
	size_t len;
	const size_t users_at = MS_CHGSNAP_HDR_SIZE;
	const size_t epoch_at = 24 + 32, floor_at = 24 + 48;
	const size_t mboxes_at = users_at + 3 * 16 + 8;

	sample(&s, &users, 3);
	sample_mboxes(&s, &mboxes, 2);
	ms_chgsnap_encode(&s, &users, &mboxes, &buf, &len);
	struct {
		size_t off;
		uint64_t v;
		const char *what;
	} bad[] = {
		{ epoch_at, 0, "epoch 0" },
		{ floor_at, s.chg_seq + 1, "floor above the largest" },
		{ users_at, 0, "user 0" },
		{ users_at + 8, s.chg_floor, "a count at the floor" },
		{ users_at + 8, s.chg_seq + 1, "a count above the largest" },
		{ mboxes_at, 0, "mailbox 0" },
		{ mboxes_at + 8, 0, "a mailbox count 0" },
		{ mboxes_at + 8, s.chg_seq + 1,
		  "a mailbox count above the largest" },
		{ mboxes_at - 8, 3, "more mailboxes than the bytes hold" },
		{ users_at + 16, 0, "(user 2 = user 1, below)" },
		{ mboxes_at + 16, 0, "(mailbox 2 = mailbox 1, below)" },
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
		uint8_t *c = malloc(len);
		memcpy(c, buf, len);
		if (bad[i].what[0] == '(')
			memcpy(c + bad[i].off, c + bad[i].off - 16, 8);
		else
			ms_put64(c + bad[i].off, bad[i].v);
		ms_put64(c + len - 8, XXH3_64bits(c, len - 8));
		if (ms_chgsnap_decode(c, len, &r, &back, &mback, &err) !=
		    MS_ECORRUPT)
			fail_msg("%s was taken", bad[i].what);
		assert_int_equal(back.n, 0);
		assert_int_equal(mback.n, 0);
		free(c);
	}
	/* a user count that says more users than the bytes hold */
	ms_put64(buf + 24 + 56, 4);
	ms_put64(buf + len - 8, XXH3_64bits(buf, len - 8));
	assert_int_equal(ms_chgsnap_decode(buf, len, &r, &back, &mback, &err),
			 MS_ECORRUPT);
	free(buf);
	ms_u64map_free(&users);
	ms_u64map_free(&mboxes);
}

/* A file larger than any writer makes: refused before it is read. */
static void test_oversized(void **state)
{
	(void)state;
	char *dir = mst_tmpdir("chgsnap-big");
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	struct ms_chgsnap r;
	struct ms_u64map back = { 0 };
	const char *err = "";
	int fd = openat(dirfd, MS_CHGSNAP_NAME, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(MS_CHGSNAP_HDR_SIZE +
						MS_CHGSNAP_MAX_USERS * 16 + 8 +
						MS_CHGSNAP_MAX_MBOXES * 16 + 9)),
			 0);
	close(fd);
	assert_int_equal(ms_chgsnap_read(dirfd, &r, &back, NULL, &err),
			 MS_ECORRUPT);
	assert_non_null(strstr(err, "at most"));
	close(dirfd);
	mst_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_version_2),
		cmocka_unit_test(test_damage),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_most_users),
		cmocka_unit_test(test_oversized),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
