/*
 * test_log - the log engine's promises, one cmocka test each:
 * appends and reads across segment rolls, recovery of a torn tail,
 * EIO on one copy (write, sync) → degraded but acknowledged, EIO on both
 * → nothing acknowledged, short writes, corruption on one copy healed,
 * corruption on both reported with segment:offset, broken files refused
 * cleanly, the io_uring completion rules, and the head file's prepared
 * space of zeros (there while the log runs, cut at seal, close and
 * recovery, never taken for a torn tail).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "msg.h"
#include "mstest.h"
#include "mstest_cmocka.h"

struct t {
	char *root;
	char a[1024], b[1024];
};

static struct t *t_new(void)
{
	static struct t t;
	t.root = mst_tmpdir("log");
	snprintf(t.a, sizeof(t.a), "%s/a", t.root);
	snprintf(t.b, sizeof(t.b), "%s/b", t.root);
	return &t;
}

static struct ms_log *t_open(struct t *t, uint64_t seg_size,
			     struct ms_io *io, enum ms_io_kind kind)
{
	struct ms_log_cfg cfg = { .dir = { t->a, t->b },
				  .seg_size = seg_size,
				  .engine = kind,
				  .io = io,
				  .create = 1 };
	struct ms_log *log = NULL;
	const char *err = NULL;
	int ret = ms_log_open(&cfg, &log, &err);
	if (ret < 0)
		fail_msg("open: %s", err);
	return log;
}

/* A log on the fault engine (over psync) with this plan. */
static struct ms_log *t_open_fault(struct t *t, uint64_t seg_size,
				   const struct ms_fault_plan *plan)
{
	struct ms_io *inner, *io;
	ms_io_psync_new(&inner);
	ms_io_fault_new(inner, plan, &io);
	return t_open(t, seg_size, io, MS_IO_PSYNC);
}

struct acks {
	int ok, failed, last_status;
};

static void on_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct acks *a = ctx;
	(void)seq;
	(void)pos;
	if (status == 0)
		a->ok++;
	else
		a->failed++;
	a->last_status = status;
}

/* append n records with content key+i; positions into pos[] */
static void put_n(struct ms_log *log, int n, uint64_t key, struct ms_pos *pos,
		  struct acks *a, size_t len)
{
	uint8_t buf[70000];
	assert_true(len <= sizeof(buf));
	for (int i = 0; i < n; i++) {
		mst_fill(buf, len, key + (uint64_t)i);
		int ret = ms_log_append(log, MS_REC_NOOP, 0, buf, (uint32_t)len,
					on_done, a, &pos[i], NULL);
		assert_int_equal(ret, 0);
		if (i % 5 == 4)
			ms_log_run(log, 0);
	}
	ms_log_sync(log);
}

static void check_n(struct ms_log *log, int n, uint64_t key,
		    const struct ms_pos *pos, size_t len)
{
	uint8_t want[70000];
	struct ms_buf p;
	ms_buf_init(&p, 0);
	for (int i = 0; i < n; i++) {
		struct ms_rec_hdr h;
		const char *err = NULL;
		int ret = ms_log_read(log, pos[i], &h, &p, &err);
		if (ret < 0)
			fail_msg("read %d: %s", i, err);
		mst_fill(want, len, key + (uint64_t)i);
		assert_int_equal(h.len, len);
		assert_memory_equal(p.data, want, len);
	}
	ms_buf_free(&p);
}

static void seg_path(char *out, size_t n, const char *root, uint64_t seg)
{
	char name[MS_SEG_NAME_LEN + 1];
	ms_seg_name(seg, name);
	snprintf(out, n, "%s/log/%s", root, name);
}

/* The apply hook's view: records seen, in order, and the done callbacks
   that had run when each came. */
struct applied {
	int n;
	uint64_t last_seq;
	int acks_at_first; /* acks.ok when the first record came */
	struct acks *acks;
};

static void on_apply(void *ctx, const struct ms_rec_hdr *h,
		     const uint8_t *payload, struct ms_pos pos)
{
	struct applied *ap = ctx;
	(void)payload;
	(void)pos;
	if (h->type == MS_REC_SEAL)
		return;
	if (ap->n == 0)
		ap->acks_at_first = ap->acks->ok;
	assert_true(h->seq > ap->last_seq); /* in log order, once each */
	ap->last_seq = h->seq;
	ap->n++;
}

/* One small record, run until durable (and acknowledged to a). */
static void put_one_durable(struct ms_log *log, struct acks *a)
{
	static const uint8_t ten[10];
	struct ms_pos pos;

	assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, ten, sizeof(ten),
				       on_done, a, &pos, NULL),
			 0);
	while (ms_log_run(log, 1) > 0)
		;
}

/* Deferred apply: a durable batch's done callbacks run at once, its
   records reach the hook only at ms_log_apply_pending (in order, once),
   or at ms_log_sync, or when the hook is replaced; without deferral the
   hook runs first. */
static void test_defer_apply(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_log *log = t_open(t, 1 << 20, NULL, MS_IO_PSYNC);
	struct acks a = {0};
	struct applied ap = {.acks = &a};
	uint8_t buf[3000];
	struct ms_pos pos[40];

	ms_log_set_apply_hook(log, on_apply, &ap);
	ms_log_defer_apply(log, 1);
	/* 3 KiB records into a 1 MiB segment: some batches seal it */
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 100; i++) {
			mst_fill(buf, sizeof(buf), (uint64_t)(round * 100 + i));
			assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, buf,
						       sizeof(buf), on_done,
						       &a, &pos[i % 40], NULL),
					 0);
			if (i % 7 == 6) {
				while (ms_log_run(log, 1) > 0)
					;
			}
		}
		while (ms_log_run(log, 1) > 0)
			;
		/* all durable and acknowledged, nothing applied yet */
		assert_int_equal(a.ok, (round + 1) * 100);
		assert_int_equal(ap.n, round * 100);
		ms_log_apply_pending(log);
		assert_int_equal(ap.n, (round + 1) * 100);
		if (round == 0)
			assert_int_equal(ap.acks_at_first, 100);
		ms_log_apply_pending(log); /* nothing twice */
		assert_int_equal(ap.n, (round + 1) * 100);
	}
	/* ms_log_sync applies what it made durable */
	put_one_durable(log, &a);
	assert_int_equal(ap.n, 400);
	assert_int_equal(ms_log_sync(log), 0);
	assert_int_equal(ap.n, 401);
	/* a new hook: what is pending goes to the old one first */
	struct applied ap2 = {.acks = &a};
	put_one_durable(log, &a);
	assert_int_equal(ap.n, 401);
	ms_log_set_apply_hook(log, on_apply, &ap2);
	assert_int_equal(ap.n, 402);
	assert_int_equal(ap2.n, 0);
	/* not deferred: the hook before the callbacks, within the run */
	ms_log_defer_apply(log, 0);
	ap2.last_seq = ap.last_seq;
	int ok = a.ok;
	put_one_durable(log, &a);
	assert_int_equal(ap2.n, 1);
	assert_int_equal(ap2.acks_at_first, ok);
	assert_int_equal(a.failed, 0);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

static void test_append_read_roll(void **state)
{
	(void)state;
	for (int kind = 0; kind < 2; kind++) {
		struct t *t = t_new();
		struct ms_pos pos[300];
		struct acks a = { 0 };
		struct ms_log *log = t_open(t, 16384, NULL,
					    kind ? MS_IO_PSYNC : MS_IO_URING);
		put_n(log, 300, 1, pos, &a, 500);
		assert_int_equal(a.ok, 300);
		struct ms_log_status st;
		ms_log_get_status(log, &st);
		assert_true(st.nsegs > 5); /* rolled many times */
		assert_false(st.degraded);
		check_n(log, 300, 1, pos, 500);
		ms_log_close(&log);
		const char *why;
		assert_true(mst_copies_equal(t->a, t->b, &why));
		/* reopen: everything is still there and appends continue */
		log = t_open(t, 16384, NULL, MS_IO_PSYNC);
		check_n(log, 300, 1, pos, 500);
		struct ms_pos pos2[10];
		put_n(log, 10, 1000, pos2, &a, 100);
		check_n(log, 10, 1000, pos2, 100);
		ms_log_close(&log);
		mst_rmtree(t->root);
	}
}

/* A read-only log follows what a writer appends (ms_log_follow). */
static void test_follow(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[300];
	struct acks a = { 0 };
	struct ms_log *w = t_open(t, 16384, NULL, MS_IO_PSYNC);
	struct ms_log_status st;
	const char *err = "";

	put_n(w, 10, 1, pos, &a, 500);
	struct ms_log_cfg rc = { .dir = { t->a, t->b }, .seg_size = 16384,
				 .engine = MS_IO_PSYNC, .readonly = 1 };
	struct ms_log *r = NULL;
	if (ms_log_open(&rc, &r, &err) < 0)
		fail_msg("open read-only: %s", err);
	assert_int_equal(ms_log_follow(r, &err), 0);
	ms_log_get_status(r, &st);
	assert_int_equal(st.durable_seq, 10);
	check_n(r, 10, 1, pos, 500);
	/* many segments later */
	put_n(w, 300, 100, pos, &a, 500);
	assert_int_equal(ms_log_follow(r, &err), 1);
	ms_log_get_status(r, &st);
	struct ms_log_status ws;
	ms_log_get_status(w, &ws);
	assert_true(ws.durable_seq > 310); /* seals have seqs too */
	assert_int_equal(st.durable_seq, ws.durable_seq);
	assert_true(ms_pos_cmp(st.durable, ws.durable) == 0);
	assert_int_equal(st.nsegs, ws.nsegs);
	check_n(r, 300, 100, pos, 500);
	assert_int_equal(ms_log_follow(r, &err), 0);
	/* a TIMELINE record: the new timeline from it on */
	uint8_t tl[32] = { 0 };
	ms_put64(tl, 2);
	ms_put64(tl + 8, 310);
	assert_int_equal(ms_log_append(w, MS_REC_TIMELINE, 0, tl, sizeof(tl),
				       NULL, NULL, NULL, NULL),
			 0);
	put_n(w, 3, 1000, pos, &a, 100);
	assert_int_equal(ms_log_follow(r, &err), 1);
	ms_log_get_status(r, &st);
	ms_log_get_status(w, &ws);
	assert_int_equal(st.durable_seq, ws.durable_seq);
	assert_int_equal(st.timeline, 2);
	check_n(r, 3, 1000, pos, 100);
	/* the timeline never goes back */
	ms_put64(tl, 1);
	assert_int_equal(ms_log_append(w, MS_REC_TIMELINE, 0, tl, sizeof(tl),
				       NULL, NULL, NULL, NULL),
			 0);
	ms_log_sync(w);
	ms_log_get_status(w, &ws);
	assert_int_equal(ws.timeline, 2);
	assert_int_equal(ms_log_follow(r, &err), 1);
	/* a record not yet whole is not taken: half of one past the end */
	{
		char path[2200];
		uint8_t half[20];
		seg_path(path, sizeof(path), t->a, ws.durable.seg);
		memset(half, 0x5a, sizeof(half));
		int fd = open(path, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, half, sizeof(half),
					(off_t)ws.durable.off),
				 (ssize_t)sizeof(half));
		close(fd);
		assert_int_equal(ms_log_follow(r, &err), 0);
		ms_log_get_status(r, &st);
		assert_int_equal(st.durable_seq, ws.durable_seq);
		assert_int_equal(truncate(path, (off_t)ws.durable.off), 0);
	}
	/* only a read-only log follows */
	assert_int_equal(ms_log_follow(w, &err), MS_ESTATE);
	ms_log_close(&r);
	ms_log_close(&w);
	/* the writer's reopen keeps the timeline */
	w = t_open(t, 16384, NULL, MS_IO_PSYNC);
	ms_log_get_status(w, &ws);
	assert_int_equal(ws.timeline, 2);
	ms_log_close(&w);
	mst_rmtree(t->root);
}

static void test_torn_tail_recovered(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[20];
	struct acks a = { 0 };
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC);
	put_n(log, 20, 7, pos, &a, 1000);
	ms_log_close(&log);
	/* garbage after the last record on the primary, a half record on
	   the secondary */
	char p[2200];
	seg_path(p, sizeof(p), t->a, 1);
	int fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage garbage garbage garbage garbage", 39), 39);
	close(fd);
	seg_path(p, sizeof(p), t->b, 1);
	long long size = mst_file_size(p);
	assert_int_equal(truncate(p, size - 10), 0);
	log = t_open(t, 0, NULL, MS_IO_PSYNC);
	/* the last record survives: it was whole on the primary */
	check_n(log, 20, 7, pos, 1000);
	ms_log_close(&log);
	const char *why;
	assert_true(mst_copies_equal(t->a, t->b, &why));
	/* the tail went to lost+found */
	char lf[2200];
	snprintf(lf, sizeof(lf), "%s/lost+found", t->a);
	struct stat st;
	assert_int_equal(stat(lf, &st), 0);
	mst_rmtree(t->root);
}

/* Bytes of the file at path from off to its end: -1 none (the file ends
   at or before off), 0 zeros only, 1 something else. */
static int tail_kind(const char *path, long long off)
{
	long long size = mst_file_size(path);
	if (size <= off)
		return -1;
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	uint8_t buf[65536];
	int kind = 0;
	while (kind == 0 && off < size) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
		assert_true(n > 0);
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != 0)
				kind = 1;
		off += n;
	}
	close(fd);
	return kind;
}

/* Every sealed segment (those before head_seg) ends with its seal, on
   both copies: its file was cut to the seal (log.c "prepared space"). */
static void check_sealed_ends(const struct t *t, uint64_t head_seg)
{
	for (uint64_t s = 1; s < head_seg; s++) {
		for (int c = 0; c < 2; c++) {
			char sp[2200];
			uint8_t tail[MS_SEG_SEAL_SIZE];
			seg_path(sp, sizeof(sp), c ? t->b : t->a, s);
			long long size = mst_file_size(sp);
			assert_true(size > (long long)MS_SEG_SEAL_SIZE);
			int fd = open(sp, O_RDONLY);
			assert_true(fd >= 0);
			assert_int_equal(pread(fd, tail, sizeof(tail),
					       size - (long long)sizeof(tail)),
					 (ssize_t)sizeof(tail));
			close(fd);
			assert_int_equal(tail[0], MS_REC_SEAL);
		}
	}
}

/* Entries in dir other than . and ..; 0 if it does not exist. */
static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/*
 * Prepared space (log.c): while the log runs, the head file holds zeros
 * past the durable end; a clean close cuts them; a writer that dies
 * leaves them and the next open cuts them without a word in lost+found;
 * a sealed segment ends with its seal.  Both engines.
 */
static void test_prepared_space(void **state)
{
	(void)state;
	for (int kind = 0; kind < 2; kind++) {
		enum ms_io_kind k = kind ? MS_IO_PSYNC : MS_IO_URING;
		struct t *t = t_new();
		struct ms_pos pos[100];
		struct acks a = { 0 };
		struct ms_log_status st;
		char pa[2200], pb[2200], lf[2200];
		seg_path(pa, sizeof(pa), t->a, 1);
		seg_path(pb, sizeof(pb), t->b, 1);

		struct ms_log *log = t_open(t, 8 << 20, NULL, k);
		put_n(log, 30, 11, pos, &a, 3000);
		ms_log_get_status(log, &st);
		long long end = (long long)st.durable.off;
		assert_int_equal(st.durable.seg, 1);
		assert_int_equal(tail_kind(pa, end), 0);
		assert_int_equal(tail_kind(pb, end), 0);
		ms_log_close(&log);
		assert_int_equal(mst_file_size(pa), end);
		assert_int_equal(mst_file_size(pb), end);

		/* a writer that dies after its records were acknowledged */
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct acks ca = { 0 };
			struct ms_log *cl = t_open(t, 8 << 20, NULL, k);
			put_n(cl, 30, 41, pos + 30, &ca, 3000);
			ms_log_get_status(cl, &st);
			_exit(ca.ok == 30 && tail_kind(pa, (long long)
						       st.durable.off) == 0
				      ? 0 : 1);
		}
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_true(mst_file_size(pa) > end);
		log = t_open(t, 8 << 20, NULL, k);
		ms_log_get_status(log, &st);
		assert_int_equal(st.durable_seq, 60);
		struct ms_log_iter *it;
		struct ms_pos p;
		struct ms_rec_hdr h;
		const uint8_t *rec;
		const char *err = NULL;
		int n = 0;
		ms_log_iter_new(log, (struct ms_pos){ 1, 0 }, &it);
		while (ms_log_iter_next(it, &p, &h, &rec, &err) > 0) {
			if (h.type != MS_REC_NOOP)
				continue;
			uint8_t want[3000];
			mst_fill(want, sizeof(want),
				 n < 30 ? 11 + (uint64_t)n : 41 + (uint64_t)(n - 30));
			assert_int_equal(h.len, sizeof(want));
			assert_memory_equal(rec, want, sizeof(want));
			n++;
		}
		ms_log_iter_free(&it);
		assert_int_equal(n, 60);
		/* the zeros were cut, and not kept as a torn tail */
		assert_int_equal(mst_file_size(pa), (long long)st.durable.off);
		assert_int_equal(mst_file_size(pb), (long long)st.durable.off);
		snprintf(lf, sizeof(lf), "%s/lost+found", t->a);
		assert_int_equal(dir_entries(lf), 0);
		snprintf(lf, sizeof(lf), "%s/lost+found", t->b);
		assert_int_equal(dir_entries(lf), 0);
		ms_log_close(&log);
		mst_rmtree(t->root);

		/* segments of 64 KiB: each sealed one ends with its seal */
		t = t_new();
		log = t_open(t, 65536, NULL, k);
		put_n(log, 100, 71, pos, &a, 3000);
		ms_log_get_status(log, &st);
		assert_true(st.head_seg > 3);
		check_sealed_ends(t, st.head_seg);
		ms_log_close(&log);
		mst_rmtree(t->root);
	}
}

/* Pages of path's first len bytes in the page cache (mincore) whose
   index is below lo. */
static long cached_below(const char *path, long long len, long lo)
{
	long pg = sysconf(_SC_PAGESIZE), in = 0;
	long n = (long)((len + pg - 1) / pg);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	unsigned char *v = malloc((size_t)n);
	assert_non_null(v);
	assert_int_equal(mincore(m, (size_t)len, v), 0);
	for (long i = 0; i < n && i < lo; i++)
		in += v[i] & 1;
	free(v);
	munmap(m, (size_t)len);
	close(fd);
	return in;
}

/* The secondary's durable pages leave the page cache (log.c
   drop_cached); the primary's, which readers use, stay.  The page
   cache drops a large folio only whole: the one holding the durable end
   may stay, up to 2 MiB (512 pages) and aligned to its size, so every
   page below the 2 MiB boundary under the end must be gone.  On tmpfs
   nothing can leave it: only the primary is checked there. */
static void test_secondary_not_cached(void **state)
{
	(void)state;
	enum { N = 1000, LEN = 3000 };
	static struct ms_pos pos[N];
	for (int kind = 0; kind < 2; kind++) {
		enum ms_io_kind k = kind ? MS_IO_PSYNC : MS_IO_URING;
		struct t *t = t_new();
		struct acks a = { 0 };
		struct ms_log_status st;
		struct statfs sf;
		char pa[2200], pb[2200];

		seg_path(pa, sizeof(pa), t->a, 1);
		seg_path(pb, sizeof(pb), t->b, 1);
		struct ms_log *log = t_open(t, 8 << 20, NULL, k);
		put_n(log, N, 5, pos, &a, LEN);
		assert_int_equal(a.ok, N);
		ms_log_get_status(log, &st);
		long long end = (long long)st.durable.off;
		long pages = (long)(end / 4096);
		assert_true(pages > 512);
		assert_int_equal(cached_below(pa, end, pages), pages);
		assert_int_equal(statfs(t->b, &sf), 0);
		long cb = cached_below(pb, end, pages & ~511L);
		if (sf.f_type != 0x01021994 /* TMPFS_MAGIC */ && cb != 0)
			fail_msg("secondary: %ld of the first %ld pages cached",
				 cb, pages & ~511L);
		/* a scrub reads both copies, and leaves the secondary's
		   pages out of the cache again */
		struct ms_scrub_stats ss = { 0 };
		const char *serr = NULL;
		assert_int_equal(ms_log_scrub(log, 1, &ss, &serr), 0);
		assert_int_equal(ss.records, N);
		cb = cached_below(pb, end, pages & ~511L);
		if (sf.f_type != 0x01021994 && cb != 0)
			fail_msg("secondary after a scrub: %ld of the first "
				 "%ld pages cached", cb, pages & ~511L);
		ms_log_close(&log);
		/* a record damaged on the primary is repaired from the
		   secondary's disk (by the open's recovery: the head
		   segment) */
		assert_int_equal(mst_flip(pa, pos[3].off + MS_REC_HDR_SIZE + 9,
					  0x20), 0);
		log = t_open(t, 8 << 20, NULL, k);
		check_n(log, N, 5, pos, LEN);
		ms_log_close(&log);
		const char *why;
		if (!mst_copies_equal(t->a, t->b, &why))
			fail_msg("%s", why);
		mst_rmtree(t->root);
	}
}

/* A cut to the seal that fails (an I/O error) fails that copy, as a
   failed write does: appends go on, degraded, and the next open
   repairs it; every sealed segment then ends with its seal. */
static void test_cut_fails_copy(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[60];
	struct acks a = { 0 };
	struct ms_fault_plan plan = { .copy = 1, .fail_truncate = 1,
				      .sticky = 1 };
	struct ms_log_status st;
	struct ms_log *log = t_open_fault(t, 8192, &plan);
	put_n(log, 60, 90, pos, &a, 500);
	ms_log_get_status(log, &st);
	assert_int_equal(a.ok, 60);
	assert_true(st.head_seg > 2);
	assert_int_equal(st.copy[0], MS_COPY_OK);
	assert_int_equal(st.copy[1], MS_COPY_FAILED);
	assert_non_null(strstr(st.copy_error[1], "cut segment 1"));
	ms_log_close(&log);

	log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	check_n(log, 60, 90, pos, 500);
	ms_log_get_status(log, &st);
	assert_false(st.degraded);
	check_sealed_ends(t, st.head_seg);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	mst_rmtree(t->root);
}

static void fault_case(int copy, int on_sync, int both)
{
	struct t *t = t_new();
	struct ms_pos pos[40];
	struct acks a = { 0 };
	struct ms_fault_plan plan = { .copy = both ? -1 : copy,
				      .sticky = 1 };
	if (on_sync)
		plan.fail_sync = 5;
	else
		plan.fail_write = 5;
	struct ms_log *log = t_open_fault(t, 0, &plan);
	uint8_t buf[100];
	for (int i = 0; i < 40; i++) {
		mst_fill(buf, sizeof(buf), 50 + (uint64_t)i);
		int ret = ms_log_append(log, MS_REC_NOOP, 0, buf, sizeof(buf),
					on_done, &a, &pos[i], NULL);
		if (both && ret == MS_ENOCOPY)
			break;
		assert_int_equal(ret, 0);
		ms_log_run(log, 1);
	}
	ms_log_sync(log);
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	if (!both) {
		assert_int_equal(a.ok, 40);
		assert_int_equal(a.failed, 0);
		assert_true(st.degraded);
		assert_false(st.dead);
		assert_int_equal(st.copy[copy], MS_COPY_FAILED);
		assert_int_equal(st.copy[1 - copy], MS_COPY_OK);
		check_n(log, 40, 50, pos, sizeof(buf));
	} else {
		/* the 5th write or sync failed on both copies: 4 flushes
		   went through before a failed sync; before a failed write
		   3, for the zeros prepared after the first flush were a
		   write of their own (log.c "prepared space") */
		assert_int_equal(a.ok, on_sync ? 4 : 3);
		assert_true(a.failed >= 1);
		assert_int_equal(a.last_status, MS_ENOCOPY);
		assert_true(st.dead);
		assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, buf, 1,
					       NULL, NULL, NULL, NULL),
				 MS_ENOCOPY);
	}
	ms_log_close(&log);
	/* reopen without faults: the failed copy is repaired */
	log = t_open(t, 0, NULL, MS_IO_PSYNC);
	int acked = a.ok;
	check_n(log, both ? acked : 40, 50, pos, sizeof(buf));
	ms_log_get_status(log, &st);
	/* nothing acknowledged is lost; a record whose write failed is not
	   there, one whose sync failed may be (it was never acknowledged) */
	if (both && !on_sync)
		assert_int_equal(st.durable_seq, (uint64_t)acked);
	if (both && on_sync)
		assert_true(st.durable_seq == (uint64_t)acked ||
			    st.durable_seq == (uint64_t)acked + 1);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	mst_rmtree(t->root);
}

static void test_eio_secondary_write(void **state)
{
	(void)state;
	fault_case(1, 0, 0);
}

static void test_eio_secondary_sync(void **state)
{
	(void)state;
	fault_case(1, 1, 0);
}

static void test_eio_primary_write(void **state)
{
	(void)state;
	fault_case(0, 0, 0);
}

static void test_eio_both(void **state)
{
	(void)state;
	fault_case(0, 0, 1);
	fault_case(0, 1, 1);
}

static void test_short_write(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[10];
	struct acks a = { 0 };
	struct ms_fault_plan plan = { .copy = 0, .short_write = 3,
				      .short_len = 17 };
	struct ms_log *log = t_open_fault(t, 0, &plan);
	put_n(log, 10, 3, pos, &a, 3000);
	assert_int_equal(a.ok, 10);
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	assert_false(st.degraded);
	check_n(log, 10, 3, pos, 3000);
	ms_log_close(&log);
	const char *why;
	assert_true(mst_copies_equal(t->a, t->b, &why));
	mst_rmtree(t->root);
}

/* A log on an io_uring engine whose every write asks for at most 1,000
   bytes (a short write each time); *io_r is that engine.  Skips the
   test where io_uring is refused. */
static struct ms_log *t_open_short(struct t *t, uint64_t seg_size,
				   struct ms_io **io_r)
{
	const char *err = NULL;

	if (ms_io_uring_new(64, io_r, &err) < 0)
		skip(); /* io_uring refused here */
	ms_io_uring_test_max_write(*io_r, 1000);
	return t_open(t, seg_size, *io_r, MS_IO_URING);
}

/*
 * The io_uring engine's way back from a short write, with the kernel's
 * real I/O: every write asks for at most 1,000 bytes, so each flush
 * goes on from where the last write stopped, both in a write ->
 * zeros -> fdatasync chain (the first flushes of a segment) and with
 * RWF_DSYNC writes alone (the others).  Records of 3,000 bytes in
 * segments of 64 KiB: every append acknowledged, every record read
 * back, the copies equal, and a reopen finds them clean.
 */
static void test_uring_short_writes(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[80];
	struct acks a = { 0 };
	struct ms_io *io;
	struct ms_log_status st;
	struct ms_log *log = t_open_short(t, 65536, &io);
	put_n(log, 80, 500, pos, &a, 3000);
	ms_log_get_status(log, &st);
	assert_int_equal(a.ok, 80);
	assert_int_equal(a.failed, 0);
	assert_false(st.degraded);
	assert_true(st.head_seg > 3);
	check_n(log, 80, 500, pos, 3000);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	log = t_open(t, 65536, NULL, MS_IO_URING);
	ms_log_get_status(log, &st);
	assert_false(st.degraded);
	assert_true(st.durable_seq > 80); /* and a seal per sealed segment */
	check_n(log, 80, 500, pos, 3000);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

/* A submit that fails leaves its requests queued in the ring.  The rest
   of a short write is tried again (SUBMIT_TRIES in io_uring.c): two
   failures in a row are met, and nothing is lost. */
static void test_uring_submit_retried(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[40];
	struct acks a = { 0 };
	struct ms_io *io;
	struct ms_log_status st;
	struct ms_log *log = t_open_short(t, 1 << 20, &io);
	put_n(log, 10, 600, pos, &a, 3000);
	/* the next submit is a flush's, the two after it rests' */
	ms_io_uring_test_fail_submit(io, 2, 3);
	put_n(log, 30, 610, pos + 10, &a, 3000);
	ms_log_get_status(log, &st);
	assert_int_equal(a.ok, 40);
	assert_int_equal(a.failed, 0);
	assert_false(st.degraded);
	check_n(log, 10, 600, pos, 3000);
	check_n(log, 30, 610, pos + 10, 3000);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	mst_rmtree(t->root);
}

/* A rest that cannot be submitted at all breaks the engine: the flush
   fails (no wait for a completion that cannot come), every later flush
   fails without submitting, and what was acknowledged before is there
   at the next open. */
static void test_uring_submit_broken(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[10], p;
	struct acks a = { 0 }, b = { 0 };
	struct ms_io *io;
	struct ms_log_status st;
	uint8_t buf[3000];
	struct ms_log *log = t_open_short(t, 1 << 20, &io);
	put_n(log, 10, 700, pos, &a, 3000);
	assert_int_equal(a.ok, 10);
	ms_io_uring_test_fail_submit(io, 2, 1000000);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 5; i++) {
			mst_fill(buf, sizeof(buf), 800 + (uint64_t)i);
			(void)ms_log_append(log, MS_REC_NOOP, 0, buf,
					    sizeof(buf), on_done, &b, &p, NULL);
		}
		ms_log_sync(log);
	}
	assert_int_equal(b.ok, 0);
	assert_true(b.failed >= 5);
	ms_log_get_status(log, &st);
	assert_int_equal(st.durable_seq, 10);
	ms_log_close(&log);
	log = t_open(t, 1 << 20, NULL, MS_IO_URING);
	check_n(log, 10, 700, pos, 3000);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

/* The engine itself, without a log: once a rest could not be
   submitted, the flush ends (no wait for a completion that cannot come)
   and the next flush is refused even when submits work again, rather
   than sent with the stale requests still in the ring. */
static void test_uring_broken_refuses(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_io *io;
	struct ms_io_flush f = { 0 };
	uint8_t buf[3000];
	const char *err = NULL;
	char path[2200];

	if (ms_io_uring_new(64, &io, &err) < 0)
		skip();
	ms_io_uring_test_max_write(io, 1000);
	for (int c = 0; c < MS_IO_COPIES; c++) {
		snprintf(path, sizeof(path), "%s/f%d", t->root, c);
		f.fd[c] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		assert_true(f.fd[c] >= 0);
	}
	mst_fill(buf, sizeof(buf), 9);
	f.buf = buf;
	f.len = sizeof(buf);
	/* the flush's own submit works, every rest's fails */
	ms_io_uring_test_fail_submit(io, 2, 1000);
	assert_int_equal(io->ops->flush_start(io, &f), 0);
	assert_int_equal(io->ops->flush_reap(io, &f, 1), 1);
	assert_true(f.res[0] < 0 || f.res[1] < 0);
	/* submits work again: the engine still refuses */
	ms_io_uring_test_fail_submit(io, 1, 0);
	struct ms_io_flush g = f;
	assert_int_equal(io->ops->flush_start(io, &g), -EIO);
	assert_int_equal(g.pending, 0);
	for (int c = 0; c < MS_IO_COPIES; c++)
		close(f.fd[c]);
	io->ops->free(io);
	mst_rmtree(t->root);
}

static void test_uring_steps(void **state)
{
	(void)state;
	size_t done = 0;
	assert_int_equal(ms_io_uring_write_step(100, 100, &done), MS_URING_OK);
	assert_int_equal(done, 100);
	done = 0;
	assert_int_equal(ms_io_uring_write_step(100, 40, &done),
			 MS_URING_RESUBMIT);
	assert_int_equal(done, 40);
	assert_int_equal(ms_io_uring_write_step(60, 60, &done), MS_URING_OK);
	assert_int_equal(done, 100);
	assert_int_equal(ms_io_uring_write_step(100, -EIO, &done),
			 MS_URING_FAILED);
	assert_int_equal(ms_io_uring_write_step(100, 0, &done),
			 MS_URING_FAILED);
	assert_int_equal(ms_io_uring_write_step(10, 11, &done),
			 MS_URING_FAILED);
}

/* 3 sealed segments, then damage */
static struct ms_log *sealed_store(struct t *t, struct ms_pos *pos)
{
	struct acks a = { 0 };
	struct ms_log *log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	put_n(log, 30, 99, pos, &a, 700);
	assert_int_equal(a.ok, 30);
	ms_log_close(&log);
	return NULL;
}

static void test_corrupt_one_copy_healed(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[30];
	sealed_store(t, pos);
	char pa[2200], pb[2200];
	/* flip a payload byte of record 2 (segment 1) on the primary, and
	   a header byte of record 20 on the secondary */
	seg_path(pa, sizeof(pa), t->a, pos[2].seg);
	assert_int_equal(mst_flip(pa, pos[2].off + MS_REC_HDR_SIZE + 5, 0x40),
			 0);
	seg_path(pb, sizeof(pb), t->b, pos[20].seg);
	assert_int_equal(mst_flip(pb, pos[20].off + 9, 0x01), 0);
	struct ms_log *log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	check_n(log, 30, 99, pos, 700); /* right bytes from the other copy */
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	/* a read tries the primary first: only its damage was seen */
	assert_int_equal(st.heals, 1);
	/* the scrub reads both copies and heals the secondary too */
	struct ms_scrub_stats ss = { 0 };
	size_t nsegs;
	const uint64_t *segs = ms_log_segments(log, &nsegs);
	for (size_t i = 0; i < nsegs; i++) {
		const char *err;
		assert_int_equal(ms_log_scrub(log, segs[i], &ss, &err), 0);
	}
	assert_int_equal(ss.healed, 1);
	assert_int_equal(ss.bad, 0);
	assert_true(ss.records >= 30);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why)) /* both repaired */
		fail_msg("%s", why);
	mst_rmtree(t->root);
}

/* The scrub in steps, as mstored runs it: small records are read by the
   window (a few reads a step, not two per record and copy), records
   longer than the window on their own, and damage anywhere (in a
   window, in a long record, on either copy) is healed. */
static void test_scrub_windows(void **state)
{
	(void)state;
	enum { N = 1500, BIG = 140000, SMALL = 300 };
	struct t *t = t_new();
	static struct ms_pos pos[N];
	static uint8_t buf[BIG];
	struct acks a = { 0 };
	struct ms_log *log = t_open(t, 256 << 10, NULL, MS_IO_PSYNC);
	for (int i = 0; i < N; i++) {
		size_t len = i == 500 || i == 1000 ? BIG : SMALL + i % 7;
		mst_fill(buf, len, 7000 + (uint64_t)i);
		assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, buf,
					       (uint32_t)len, on_done, &a,
					       &pos[i], NULL),
				 0);
		if (i % 50 == 49)
			ms_log_run(log, 0);
	}
	ms_log_sync(log);
	assert_int_equal(a.ok, N);
	ms_log_close(&log);

	/* a payload byte on the primary, a header byte on the secondary,
	   a byte of a long record on the secondary, the last byte of a
	   record on the primary (none in the head segment, which the open
	   checks and mends itself) */
	assert_true(pos[1000].seg < pos[N - 1].seg);
	char p[2200];
	seg_path(p, sizeof(p), t->a, pos[100].seg);
	assert_int_equal(mst_flip(p, pos[100].off + MS_REC_HDR_SIZE + 9, 1), 0);
	seg_path(p, sizeof(p), t->b, pos[701].seg);
	assert_int_equal(mst_flip(p, pos[701].off + 5, 0x20), 0);
	seg_path(p, sizeof(p), t->b, pos[1000].seg);
	assert_int_equal(mst_flip(p, pos[1000].off + MS_REC_HDR_SIZE + 130000,
				  0x80),
			 0);
	seg_path(p, sizeof(p), t->a, pos[200].seg);
	assert_int_equal(mst_flip(p, pos[200].off + MS_REC_HDR_SIZE + SMALL +
					    200 % 7 - 1,
				  0x04),
			 0);

	struct ms_io *inner, *io;
	const struct ms_fault_plan none = { .copy = -1 };
	ms_io_psync_new(&inner);
	ms_io_fault_new(inner, &none, &io);
	log = t_open(t, 256 << 10, io, MS_IO_PSYNC);
	unsigned long r0 = ms_io_fault_reads(io, 0) + ms_io_fault_reads(io, 1);
	struct ms_scrub_stats ss = { 0 };
	struct ms_pos sp = { 0, 0 };
	const char *err = NULL;
	int ret, steps = 0;
	do {
		ret = ms_log_scrub_step(log, &sp, 64 << 10, &ss, &err);
		if (ret < 0)
			fail_msg("scrub step: %s", err);
		steps++;
	} while (ret == 0 && steps < 10000);
	assert_int_equal(ret, 1);
	unsigned long preads =
		ms_io_fault_reads(io, 0) + ms_io_fault_reads(io, 1) - r0;
	print_message("scrub: %llu records, %llu bytes in %d steps, %lu reads\n",
		      (unsigned long long)ss.records,
		      (unsigned long long)ss.bytes, steps, preads);
	assert_int_equal(ss.healed, 4);
	assert_int_equal(ss.bad, 0);
	assert_true(ss.records >= N);
	/* two per record and copy read one by one: 4 * N and more */
	assert_true(preads < ss.records / 10);
	/* in the head segment the windows stop at the durable end: the
	   zeros kept ready past it are not read */
	struct ms_pos last;
	mst_fill(buf, SMALL, 1);
	assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, buf, SMALL,
				       on_done, &a, &last, NULL),
			 0);
	ms_log_sync(log); /* with the zeros kept ready past it */
	struct ms_log_status lst;
	ms_log_get_status(log, &lst);
	assert_int_equal(lst.durable.seg, pos[N - 1].seg);
	char hp[2200];
	struct stat hst;
	seg_path(hp, sizeof(hp), t->b, lst.durable.seg);
	assert_int_equal(stat(hp, &hst), 0);
	assert_true((uint64_t)hst.st_size > lst.durable.off + 4096);
	for (int c = 0; c < 2; c++)
		(void)ms_io_fault_read_end(io, c);
	struct ms_scrub_stats hs = { 0 };
	assert_int_equal(ms_log_scrub(log, lst.durable.seg, &hs, &err), 0);
	assert_true(hs.records > 0);
	for (int c = 0; c < 2; c++) {
		uint64_t e = ms_io_fault_read_end(io, c);
		if (e == 0 || e > lst.durable.off)
			fail_msg("copy %d: the scrub read to %llu, the durable "
				 "end is %llu", c, (unsigned long long)e,
				 (unsigned long long)lst.durable.off);
	}
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	log = t_open(t, 256 << 10, NULL, MS_IO_PSYNC);
	for (int i = 0; i < N; i++) {
		struct ms_buf pl;
		struct ms_rec_hdr h;
		size_t len = i == 500 || i == 1000 ? BIG : SMALL + i % 7;
		ms_buf_init(&pl, 0);
		if (ms_log_read(log, pos[i], &h, &pl, &err) < 0)
			fail_msg("read %d: %s", i, err);
		mst_fill(buf, len, 7000 + (uint64_t)i);
		assert_int_equal(h.len, len);
		assert_memory_equal(pl.data, buf, len);
		ms_buf_free(&pl);
	}
	ms_log_close(&log);
	mst_rmtree(t->root);
}

static void test_corrupt_both_copies(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[30];
	sealed_store(t, pos);
	char pa[2200], pb[2200];
	seg_path(pa, sizeof(pa), t->a, pos[4].seg);
	seg_path(pb, sizeof(pb), t->b, pos[4].seg);
	assert_int_equal(mst_flip(pa, pos[4].off + 40, 0x10), 0);
	assert_int_equal(mst_flip(pb, pos[4].off + 41, 0x10), 0);
	struct ms_log *log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	struct ms_buf p;
	struct ms_rec_hdr h;
	const char *err = NULL;
	ms_buf_init(&p, 0);
	assert_int_equal(ms_log_read(log, pos[4], &h, &p, &err), MS_ECORRUPT);
	char want[100];
	snprintf(want, sizeof(want), "segment %llu offset %llu",
		 (unsigned long long)pos[4].seg,
		 (unsigned long long)pos[4].off);
	if (strstr(err, want) == NULL || strstr(err, "primary") == NULL ||
	    strstr(err, "secondary") == NULL)
		fail_msg("error does not name the place and copies: %s", err);
	/* the neighbours are fine */
	assert_int_equal(ms_log_read(log, pos[3], &h, &p, &err), 0);
	assert_int_equal(ms_log_read(log, pos[5], &h, &p, &err), 0);
	ms_buf_free(&p);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

static void test_broken_files_refused(void **state)
{
	(void)state;
	struct ms_pos pos[30];
	const char *err = NULL;
	struct ms_log *log;
	char pa[2200], pb[2200];

	/* a sealed segment cut short on one copy: rebuilt from the other */
	struct t *t = t_new();
	sealed_store(t, pos);
	seg_path(pa, sizeof(pa), t->a, 1);
	assert_int_equal(truncate(pa, 100), 0);
	log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	check_n(log, 30, 99, pos, 700);
	ms_log_close(&log);
	assert_true(mst_copies_equal(t->a, t->b, &err));
	mst_rmtree(t->root);

	/* wrong magic on both copies of a sealed segment: a clean refusal */
	t = t_new();
	sealed_store(t, pos);
	seg_path(pa, sizeof(pa), t->a, 2);
	seg_path(pb, sizeof(pb), t->b, 2);
	assert_int_equal(mst_flip(pa, 0, 0xff), 0);
	assert_int_equal(mst_flip(pb, 0, 0xff), 0);
	struct ms_log_cfg cfg = { .dir = { t->a, t->b },
				  .engine = MS_IO_PSYNC };
	assert_int_equal(ms_log_open(&cfg, &log, &err), MS_ECORRUPT);
	assert_non_null(strstr(err, "segment 2"));
	mst_rmtree(t->root);

	/* an absurd length in a record header on both copies of the head:
	   the log ends before it, nothing crashes */
	t = t_new();
	struct acks a = { 0 };
	log = t_open(t, 0, NULL, MS_IO_PSYNC);
	put_n(log, 10, 5, pos, &a, 100);
	ms_log_close(&log);
	uint8_t big[4] = { 0xff, 0xff, 0xff, 0x7f };
	for (int c = 0; c < 2; c++) {
		seg_path(pa, sizeof(pa), c ? t->b : t->a, 1);
		int fd = open(pa, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, big, 4, (off_t)pos[7].off + 4), 4);
		close(fd);
	}
	log = t_open(t, 0, NULL, MS_IO_PSYNC);
	check_n(log, 7, 5, pos, 100);
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	assert_int_equal(st.durable_seq, 7);
	ms_log_close(&log);
	mst_rmtree(t->root);

	/* copies of two different stores are refused */
	t = t_new();
	log = t_open(t, 0, NULL, MS_IO_PSYNC);
	ms_log_close(&log);
	char other[2200];
	snprintf(other, sizeof(other), "%s/c", t->root);
	struct ms_log_cfg c2 = { .dir = { other, NULL }, .create = 1,
				 .engine = MS_IO_PSYNC };
	assert_int_equal(ms_log_open(&c2, &log, &err), 0);
	ms_log_close(&log);
	struct ms_log_cfg c3 = { .dir = { t->a, other },
				 .engine = MS_IO_PSYNC };
	assert_int_equal(ms_log_open(&c3, &log, &err), MS_EMISMATCH);
	mst_rmtree(t->root);
}

/* damage on both copies in the open segment, with acknowledged records
   after it: recovery must refuse to cut them (it is not a torn tail) */
static void test_head_damage_not_cut(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[12];
	struct acks a = { 0 };
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC);
	for (int i = 0; i < 12; i++) /* one batch per record */
		put_n(log, 1, 200 + (uint64_t)i, &pos[i], &a, 300);
	ms_log_close(&log);
	char pa[2200], pb[2200];
	seg_path(pa, sizeof(pa), t->a, 1);
	seg_path(pb, sizeof(pb), t->b, 1);
	long long size = mst_file_size(pa);
	assert_int_equal(mst_flip(pa, pos[5].off + 50, 0x08), 0);
	assert_int_equal(mst_flip(pb, pos[5].off + 60, 0x08), 0);
	struct ms_log_cfg cfg = { .dir = { t->a, t->b },
				  .engine = MS_IO_PSYNC };
	const char *err = NULL;
	assert_int_equal(ms_log_open(&cfg, &log, &err), MS_ECORRUPT);
	char want[64];
	snprintf(want, sizeof(want), "offset %llu",
		 (unsigned long long)pos[5].off);
	if (strstr(err, want) == NULL || strstr(err, "refusing") == NULL)
		fail_msg("unexpected error: %s", err);
	/* nothing was cut */
	assert_int_equal(mst_file_size(pa), size);
	assert_int_equal(mst_file_size(pb), size);
	/* a read-only open serves what comes before and reports the rest */
	cfg.readonly = 1;
	assert_int_equal(ms_log_open(&cfg, &log, &err), 0);
	struct ms_log_iter *it;
	struct ms_pos p;
	struct ms_rec_hdr h;
	const uint8_t *pl;
	int n = 0, r;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while ((r = ms_log_iter_next(it, &p, &h, &pl, &err)) == 1)
		n++;
	assert_int_equal(n, 5);
	assert_int_equal(r, MS_ECORRUPT);
	ms_log_iter_free(&it);
	ms_log_close(&log);

	/* a follower (mstored --standby over what udsync recv writes): the
	   bad record is the writer's flush in progress, seen while later
	   ones came; the durable end stays before it ... */
	cfg.follow = 1;
	assert_int_equal(ms_log_open(&cfg, &log, &err), 0);
	struct ms_pos end;
	uint64_t seq;
	ms_log_durable(log, &end, &seq);
	assert_int_equal(end.seg, pos[5].seg);
	assert_int_equal(end.off, pos[5].off);
	assert_int_equal(ms_log_follow(log, &err), 0); /* still bad */
	/* ... and once the write is whole, following takes it and the
	   records after it */
	assert_int_equal(mst_flip(pa, pos[5].off + 50, 0x08), 0);
	assert_int_equal(mst_flip(pb, pos[5].off + 60, 0x08), 0);
	assert_int_equal(ms_log_follow(log, &err), 1);
	uint64_t seq2;
	ms_log_durable(log, &end, &seq2);
	assert_int_equal(seq2, seq + 7);
	n = 0;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while ((r = ms_log_iter_next(it, &p, &h, &pl, &err)) == 1)
		n++;
	assert_int_equal(r, 0);
	assert_int_equal(n, 12);
	ms_log_iter_free(&it);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

static void test_missing_secondary_rebuilt(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_pos pos[30];
	sealed_store(t, pos);
	mst_rmtree(t->b); /* a new, empty secondary device */
	struct ms_log *log = t_open(t, 8192, NULL, MS_IO_PSYNC);
	check_n(log, 30, 99, pos, 700);
	ms_log_close(&log);
	const char *why;
	if (!mst_copies_equal(t->a, t->b, &why))
		fail_msg("%s", why);
	mst_rmtree(t->root);
}

/* one writer per store: a second open for writing is refused */
static void test_one_writer(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC), *log2;
	struct ms_log_cfg cfg = { .dir = { t->a, t->b },
				  .engine = MS_IO_PSYNC };
	const char *err = "";
	assert_int_equal(ms_log_open(&cfg, &log2, &err), -EBUSY);
	assert_non_null(strstr(err, "in use by another process"));
	cfg.readonly = 1; /* readers are welcome */
	assert_int_equal(ms_log_open(&cfg, &log2, &err), 0);
	ms_log_close(&log2);
	ms_log_close(&log);
	cfg.readonly = 0; /* and the lock goes with its holder */
	assert_int_equal(ms_log_open(&cfg, &log2, &err), 0);
	ms_log_close(&log2);
	mst_rmtree(t->root);
}

/* ---- the DR replica marker (mstore.replica, log.h) ---- */

static void marker_put(const char *dir, enum ms_replica_state st,
		       uint64_t tl, uint64_t fork)
{
	struct ms_replica r = { st, tl, fork };
	const char *err = "";
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	CHECK_RET(ms_replica_write(fd, &r, &err), 0, "%s", dir);
	close(fd);
}

static enum ms_replica_state marker_get(const char *dir, uint64_t *tl_r)
{
	struct ms_replica r;
	const char *err = "";
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	CHECK_RET(ms_replica_read(fd, &r, &err), 0, "%s", dir);
	close(fd);
	if (tl_r != NULL)
		*tl_r = r.timeline;
	return r.state;
}

static int replica_open(struct t *t, int replica_ok, int readonly,
			struct ms_log **log_r, const char **err_r)
{
	struct ms_log_cfg cfg = { .dir = { t->a, t->b },
				  .engine = MS_IO_PSYNC,
				  .replica_ok = replica_ok,
				  .readonly = readonly };
	*err_r = "";
	return ms_log_open(&cfg, log_r, err_r);
}

static void append_timeline(struct ms_log *log, uint64_t tl, uint64_t fork)
{
	uint8_t p[32] = { 0 };
	ms_put64(p, tl);
	ms_put64(p + 8, fork);
	assert_int_equal(ms_log_append(log, MS_REC_TIMELINE, 0, p, sizeof(p),
				       NULL, NULL, NULL, NULL),
			 0);
	assert_int_equal(ms_log_sync(log), 0);
}

/*
 * A DR replica is refused to every read-write open but its own writers'
 * (replica_ok); a promote cut short settles at the next open: promoted if
 * its TIMELINE record is durable, else still a replica.
 */
static void test_replica_marker(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC), *l2;
	struct ms_log_status st;
	const char *err;
	uint64_t tl, fork;
	char path[2200];
	struct ms_pos pos[5];
	struct acks a = { 0 };
	put_n(log, 5, 100, pos, &a, 100);
	assert_int_equal(a.ok, 5);
	ms_log_close(&log);

	/* no marker: as before */
	CHECK_RET(replica_open(t, 0, 0, &log, &err), 0, "plain: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_NONE);
	assert_int_equal(ms_log_promoted(log, &tl, &fork), 0);
	ms_log_close(&log);

	/* a marker on one copy is enough; the refusal says what to do */
	marker_put(t->a, MS_REPLICA_DR, 0, 0);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), MS_EREPLICA, "plain");
	assert_non_null(strstr(err, "DR replica"));
	assert_non_null(strstr(err, "--standby"));
	assert_non_null(strstr(err, "mstore promote"));
	assert_int_equal(marker_get(t->b, NULL), MS_REPLICA_NONE);
	/* readers are welcome, and know */
	CHECK_RET(replica_open(t, 0, 1, &log, &err), 0, "ro: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_DR);
	ms_log_close(&log);
	/* its own writer makes the copies agree */
	CHECK_RET(replica_open(t, 1, 0, &log, &err), 0, "own: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_DR);
	assert_int_equal(marker_get(t->b, NULL), MS_REPLICA_DR);
	ms_log_close(&log);

	/* a damaged marker is a replica too (fail safe) */
	snprintf(path, sizeof(path), "%s/%s", t->a, MS_REPLICA_NAME);
	assert_int_equal(mst_flip(path, 20, 0x01), 0);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), MS_EREPLICA, "damaged");
	CHECK_RET(replica_open(t, 1, 0, &log, &err), 0, "own: %s", err);
	assert_int_equal(marker_get(t->a, NULL), MS_REPLICA_DR);

	/* promote cut short before its TIMELINE record: still a replica */
	ms_log_get_status(log, &st);
	uint64_t T = st.timeline + 1;
	CHECK_RET(ms_log_promote_begin(log, T, st.durable_seq, &err), 0,
		  "begin: %s", err);
	assert_int_equal(marker_get(t->a, &tl), MS_REPLICA_PROMOTING);
	assert_int_equal(tl, T);
	ms_log_close(&log);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), MS_EREPLICA, "undone");
	/* the plain open wrote nothing; the own writer says DR again */
	assert_int_equal(marker_get(t->a, NULL), MS_REPLICA_PROMOTING);
	CHECK_RET(replica_open(t, 1, 0, &log, &err), 0, "own: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_DR);
	assert_int_equal(marker_get(t->a, NULL), MS_REPLICA_DR);
	assert_int_equal(marker_get(t->b, NULL), MS_REPLICA_DR);

	/* cut short after it was durable (one copy already said DR
	   again, one udsync.pos left): promoted */
	ms_log_get_status(log, &st);
	CHECK_RET(ms_log_promote_begin(log, T, st.durable_seq, &err), 0,
		  "begin: %s", err);
	append_timeline(log, T, st.durable_seq);
	ms_log_close(&log);
	marker_put(t->b, MS_REPLICA_DR, 0, 0);
	snprintf(path, sizeof(path), "%s/udsync.pos", t->b);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fclose(fp);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), 0, "finished: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_NONE);
	assert_int_equal(ms_log_promoted(log, &tl, &fork), 1);
	assert_int_equal(tl, T);
	assert_int_equal(fork, st.durable_seq);
	assert_int_equal(marker_get(t->a, NULL), MS_REPLICA_NONE);
	assert_int_equal(marker_get(t->b, NULL), MS_REPLICA_NONE);
	assert_int_equal(access(path, F_OK), -1);
	ms_log_close(&log);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), 0, "again: %s", err);
	assert_int_equal(ms_log_promoted(log, &tl, &fork), 0);

	/* mark, and the whole promotion in one go */
	CHECK_RET(ms_log_mark_replica(log, &err), 0, "mark: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_DR);
	ms_log_close(&log);
	CHECK_RET(replica_open(t, 0, 0, &l2, &err), MS_EREPLICA, "marked");
	CHECK_RET(replica_open(t, 1, 0, &log, &err), 0, "own: %s", err);
	ms_log_get_status(log, &st);
	assert_int_equal(ms_log_promote_begin(log, st.timeline, 0, &err),
			 MS_ESTATE);
	CHECK_RET(ms_log_promote_begin(log, st.timeline + 1, st.durable_seq,
				       &err), 0, "begin: %s", err);
	append_timeline(log, st.timeline + 1, st.durable_seq);
	CHECK_RET(ms_log_promote_end(log, &err), 0, "end: %s", err);
	assert_int_equal(ms_log_replica(log), MS_REPLICA_NONE);
	ms_log_close(&log);
	CHECK_RET(replica_open(t, 0, 0, &log, &err), 0, "promoted: %s", err);
	ms_log_get_status(log, &st);
	assert_int_equal(st.timeline, T + 1);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

static void test_bad_appends(void **state)
{
	(void)state;
	struct t *t = t_new();
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC);
	assert_int_equal(ms_log_append(log, MS_REC_SEAL, 0, "x", 1, NULL, NULL,
				       NULL, NULL),
			 -EINVAL);
	assert_int_equal(ms_log_append(log, 0, 0, "x", 1, NULL, NULL, NULL,
				       NULL),
			 -EINVAL);
	assert_int_equal(ms_log_append(log, MS_REC_NOOP, 1, "x", 1, NULL, NULL,
				       NULL, NULL),
			 -EINVAL);
	assert_int_equal(ms_log_append(log, MS_REC_NOOP, 0, "x",
				       MS_REC_MAX_PAYLOAD + 1, NULL, NULL,
				       NULL, NULL),
			 MS_ETOOBIG);
	struct ms_buf p;
	struct ms_rec_hdr h;
	const char *err;
	ms_buf_init(&p, 0);
	assert_int_equal(ms_log_read(log, (struct ms_pos){ 7, 64 }, &h, &p,
				     &err),
			 MS_ENOTFOUND);
	ms_buf_free(&p);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

/* As in a container whose seccomp profile forbids io_uring: the open
   fails, and the error says so and names the setting. */
static void test_uring_refused(void **state)
{
	(void)state;
	struct t *t = t_new();
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
				 offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup,
				 0, 1),
			BPF_STMT(BPF_RET | BPF_K,
				 SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { MS_ARRAY_SIZE(f), f };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
			_exit(77);
		struct ms_log_cfg cfg = { .dir = { t->a, t->b },
					  .engine = MS_IO_URING, .create = 1 };
		struct ms_log *log;
		const char *err = "";
		int ret = ms_log_open(&cfg, &log, &err);
		if (write(pfd[1], err, strlen(err)) < 0)
			_exit(3);
		_exit(ret == -EPERM ? 0 : 1);
	}
	close(pfd[1]);
	char msg[512] = "";
	ssize_t n = read(pfd[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
	if (strstr(msg, "io_uring") == NULL ||
	    strstr(msg, "io_engine = psync") == NULL)
		fail_msg("error does not say what to do: %s", msg);
	/* and psync works there */
	struct ms_log *log = t_open(t, 0, NULL, MS_IO_PSYNC);
	ms_log_close(&log);
	mst_rmtree(t->root);
}

/*
 * The tmpfs cases: each in a child with its own mount namespace (root).
 * Copy a on a tmpfs of a_size ("" for none), b on one of b_size.  77:
 * no namespaces or tmpfs here.
 */
static int tmpfs_copies(const char *root, const char *a_size,
			const char *b_size, char *a, char *b, size_t n)
{
	char opt[64];
	snprintf(a, n, "%s/a", root);
	snprintf(b, n, "%s/b", root);
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mkdir(a, 0755) < 0 || mkdir(b, 0755) < 0)
		return -1;
	snprintf(opt, sizeof(opt), "size=%s", b_size);
	if (mount("tmpfs", b, "tmpfs", 0, opt) < 0)
		return -1;
	snprintf(opt, sizeof(opt), "size=%s", a_size);
	if (a_size[0] != '\0' && mount("tmpfs", a, "tmpfs", 0, opt) < 0)
		return -1;
	return 0;
}

/* Up to n appends of 3,000 bytes (key+i), run every third; the first
   refused ends them.  How many were taken. */
static int put_3000(struct ms_log *log, int n, uint64_t key,
		    struct ms_pos *pos, struct acks *ak)
{
	uint8_t buf[3000];
	int i;
	for (i = 0; i < n; i++) {
		mst_fill(buf, sizeof(buf), key + (uint64_t)i);
		if (ms_log_append(log, MS_REC_NOOP, 0, buf, sizeof(buf), on_done,
				  ak, &pos[i], NULL) < 0)
			break;
		if (i % 3 == 2)
			ms_log_run(log, 1);
	}
	ms_log_sync(log);
	return i;
}

/* The first n records of put_3000 read back: 0, or -1. */
static int read_3000(struct ms_log *log, int n, uint64_t key,
		     const struct ms_pos *pos)
{
	struct ms_buf p;
	const char *err;
	int ret = 0;
	ms_buf_init(&p, 0);
	for (int i = 0; i < n && ret == 0; i++) {
		struct ms_rec_hdr h;
		uint8_t want[3000];
		mst_fill(want, sizeof(want), key + (uint64_t)i);
		if (ms_log_read(log, pos[i], &h, &p, &err) < 0 ||
		    h.len != sizeof(want) || memcmp(p.data, want, h.len) != 0)
			ret = -1;
	}
	ms_buf_free(&p);
	return ret;
}

/*
 * The io_uring engine against a real full disk: copies on small tmpfs
 * mounts (in a private mount namespace) run out of space.  The write that
 * crosses the limit comes back short, the engine resubmits the rest, and
 * that fails with ENOSPC.  One copy full: appends go on, degraded.  Both
 * full: the append fails, nothing more is acknowledged, and everything
 * acknowledged before is there.
 */
static int enospc_child(const char *root, int both)
{
	char a[1024], b[1024];
	if (tmpfs_copies(root, both ? "256k" : "", "256k", a, b,
			 sizeof(a)) < 0)
		return 77;
	struct ms_log_cfg cfg = { .dir = { a, b }, .engine = MS_IO_URING,
				  .create = 1 };
	struct ms_log *log;
	const char *err;
	if (ms_log_open(&cfg, &log, &err) < 0)
		return 77; /* io_uring refused here */
	struct acks ak = { 0, 0, 0 };
	static struct ms_pos pos[200];
	(void)put_3000(log, 200, 7000, pos, &ak);
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	if (!both) {
		/* 600 KB went to a 256 KB secondary */
		if (ak.ok != 200 || ak.failed != 0 || !st.degraded || st.dead ||
		    st.copy[1] != MS_COPY_FAILED || st.copy[0] != MS_COPY_OK ||
		    strstr(st.copy_error[1], "No space") == NULL)
			return 1;
	} else {
		if (ak.ok == 0 || ak.ok >= 200 || !st.dead ||
		    ak.last_status != MS_ENOCOPY)
			return 2;
	}
	/* every acknowledged record reads back, from the primary */
	if (read_3000(log, ak.ok, 7000, pos) < 0)
		return 3;
	ms_log_close(&log);
	return 0;
}

/*
 * Prepared space on a nearly full disk: both copies on a 640 KiB tmpfs,
 * 150 records of 3,000 bytes.  The records fit; a MiB of zeros past
 * them never does (each try fails, or writes part).  Zeros that fail
 * are no failure: every append is acknowledged, no copy fails, every
 * record reads back.  With io_uring the zeros sit in the flush's linked
 * chain between the records and the fdatasync: a link that broke there
 * would cancel the sync and fail the copy.  Both engines.
 */
static int zeros_child(const char *root, int kind)
{
	char a[1024], b[1024];
	if (tmpfs_copies(root, "640k", "640k", a, b, sizeof(a)) < 0)
		return 77;
	struct ms_log_cfg cfg = { .dir = { a, b },
				  .engine = (enum ms_io_kind)kind,
				  .seg_size = 8 << 20, .create = 1 };
	struct ms_log *log;
	const char *err;
	if (ms_log_open(&cfg, &log, &err) < 0)
		return 77; /* io_uring refused here */
	struct acks ak = { 0, 0, 0 };
	static struct ms_pos pos[150];
	if (put_3000(log, 150, 9000, pos, &ak) != 150)
		return 1;
	struct ms_log_status st;
	ms_log_get_status(log, &st);
	if (ak.ok != 150 || ak.failed != 0 || st.degraded || st.dead ||
	    st.copy[0] != MS_COPY_OK || st.copy[1] != MS_COPY_OK)
		return 2;
	if (read_3000(log, 150, 9000, pos) < 0)
		return 3;
	ms_log_close(&log);
	/* and a reopen finds both copies whole */
	cfg.create = 0;
	if (ms_log_open(&cfg, &log, &err) < 0)
		return 4;
	ms_log_get_status(log, &st);
	if (st.durable_seq < 150 || st.degraded)
		return 5;
	ms_log_close(&log);
	return 0;
}

/* child(root, arg) in a child process: 0 passes, 77 skips. */
static void tmpfs_case(int (*child)(const char *root, int arg), int arg)
{
	struct t *t = t_new();
	pid_t pid = fork();
	if (pid == 0)
		_exit(child(t->root, arg));
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
	mst_rmtree(t->root);
}

static void test_zeros_that_fail(void **state)
{
	(void)state;
	tmpfs_case(zeros_child, MS_IO_URING);
	tmpfs_case(zeros_child, MS_IO_PSYNC);
}

static void test_uring_enospc_secondary(void **state)
{
	(void)state;
	tmpfs_case(enospc_child, 0);
}

static void test_uring_enospc_both(void **state)
{
	(void)state;
	tmpfs_case(enospc_child, 1);
}

int main(void)
{
	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_read_roll),
		cmocka_unit_test(test_defer_apply),
		cmocka_unit_test(test_torn_tail_recovered),
		cmocka_unit_test(test_prepared_space),
		cmocka_unit_test(test_secondary_not_cached),
		cmocka_unit_test(test_cut_fails_copy),
		cmocka_unit_test(test_follow),
		cmocka_unit_test(test_eio_secondary_write),
		cmocka_unit_test(test_eio_secondary_sync),
		cmocka_unit_test(test_eio_primary_write),
		cmocka_unit_test(test_eio_both),
		cmocka_unit_test(test_short_write),
		cmocka_unit_test(test_uring_steps),
		cmocka_unit_test(test_uring_submit_retried),
		cmocka_unit_test(test_uring_submit_broken),
		cmocka_unit_test(test_uring_broken_refuses),
		cmocka_unit_test(test_uring_short_writes),
		cmocka_unit_test(test_corrupt_one_copy_healed),
		cmocka_unit_test(test_scrub_windows),
		cmocka_unit_test(test_corrupt_both_copies),
		cmocka_unit_test(test_broken_files_refused),
		cmocka_unit_test(test_head_damage_not_cut),
		cmocka_unit_test(test_missing_secondary_rebuilt),
		cmocka_unit_test(test_one_writer),
		cmocka_unit_test(test_replica_marker),
		cmocka_unit_test(test_bad_appends),
		cmocka_unit_test(test_uring_refused),
		cmocka_unit_test(test_uring_enospc_secondary),
		cmocka_unit_test(test_uring_enospc_both),
		cmocka_unit_test(test_zeros_that_fail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
