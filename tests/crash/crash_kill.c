/*
 * crash_kill - kill -9 of a writing process, then recovery.
 *
 * A child appends records through the io_uring engine (psync where
 * io_uring is refused) with 16 appends in flight, and reports each
 * acknowledgement (index, seq, position, length) on a pipe as soon as its
 * callback runs, i.e. at the moment a client would hear "stored".  The
 * parent kills it with SIGKILL after a random delay, reads every report
 * that made it into the pipe, reopens the store with recovery and checks
 * that every acknowledged record is there, byte-identical, that the
 * copies are identical, and that verify-style iteration sees nothing that
 * was not appended.  Rounds: 30 (MS_ROUNDS, 1000 with MS_STRESS).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "msg.h"
#include "mstest.h"

#define MAXLEN 20000

struct ack {
	uint64_t idx, seq, seg, off;
	uint32_t len;
};

struct child {
	struct ms_log *log;
	int fd;
	uint64_t next_idx, key;
	uint8_t buf[MAXLEN];
};

static uint32_t len_of(uint64_t key, uint64_t idx)
{
	uint64_t s = key ^ (idx * 0x9e3779b97f4a7c15ULL);
	return (uint32_t)(mst_rand(&s) % MAXLEN);
}

static void child_append(struct child *c);

struct pending {
	struct child *c;
	uint64_t idx;
	uint32_t len;
};

static void on_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct pending *p = ctx;
	if (status == 0) {
		struct ack a = { p->idx, seq, pos.seg, pos.off, p->len };
		if (write(p->c->fd, &a, sizeof(a)) != sizeof(a))
			_exit(3);
	}
	struct child *c = p->c;
	free(p);
	child_append(c);
}

static void child_append(struct child *c)
{
	struct pending *p = malloc(sizeof(*p));
	p->c = c;
	p->idx = c->next_idx++;
	p->len = len_of(c->key, p->idx);
	mst_fill(c->buf, p->len, c->key + p->idx);
	if (ms_log_append(c->log, MS_REC_NOOP, 0, c->buf, p->len, on_done, p,
			  NULL, NULL) < 0)
		_exit(4);
}

static void child_main(const char *a, const char *b, int fd, uint64_t key)
{
	static struct child c;
	struct ms_log_cfg cfg = { .dir = { a, b }, .engine = MS_IO_URING,
				  .seg_size = 256 * 1024, .create = 1 };
	const char *err;
	if (ms_log_open(&cfg, &c.log, &err) < 0) {
		cfg.engine = MS_IO_PSYNC;
		if (ms_log_open(&cfg, &c.log, &err) < 0)
			_exit(2);
	}
	c.fd = fd;
	c.key = key;
	for (int i = 0; i < 16; i++)
		child_append(&c);
	for (;;)
		if (ms_log_run(c.log, 1) < 0)
			_exit(5);
}

static int round_fail(unsigned long r, uint64_t seed, const char *what)
{
	printf("FAIL round %lu seed 0x%llx: %s\n", r,
	       (unsigned long long)seed, what);
	return 1;
}

static int run_round(unsigned long r, uint64_t seed)
{
	uint64_t rs = seed;
	char *root = mst_tmpdir("kill");
	char a[4200], b[4200];
	int pfd[2];
	uint64_t key = mst_rand(&rs);

	snprintf(a, sizeof(a), "%s/a", root);
	snprintf(b, sizeof(b), "%s/b", root);
	if (pipe(pfd) < 0)
		return round_fail(r, seed, "pipe");
	pid_t pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		child_main(a, b, pfd[1], key);
	}
	close(pfd[1]);
	struct timespec d = { 0, (long)(5 + mst_randn(&rs, 150)) * 1000000L };
	nanosleep(&d, NULL);
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	if (!WIFSIGNALED(status))
		return round_fail(r, seed, ms_errf("child exited %d early",
						   WEXITSTATUS(status)));

	/* every report the child managed to write before it died */
	size_t n = 0, cap = 1024;
	struct ack *acks = malloc(cap * sizeof(*acks));
	for (;;) {
		if (n == cap)
			acks = realloc(acks, (cap *= 2) * sizeof(*acks));
		ssize_t got = read(pfd[0], &acks[n], sizeof(*acks));
		if (got <= 0)
			break;
		if (got != sizeof(*acks))
			return round_fail(r, seed, "short report");
		n++;
	}
	close(pfd[0]);

	struct ms_log_cfg cfg = { .dir = { a, b }, .engine = MS_IO_PSYNC };
	struct ms_log *log;
	const char *err;
	char meta[4300];
	struct stat st;
	snprintf(meta, sizeof(meta), "%s/mstore.meta", a);
	if (n == 0 && stat(meta, &st) < 0) {
		/* killed before it had made the store (a loaded machine):
		   nothing was acknowledged, so there is nothing to check */
		free(acks);
		mst_rmtree(root);
		return 0;
	}
	if (ms_log_open(&cfg, &log, &err) < 0)
		return round_fail(r, seed, ms_errf("reopen: %s", err));
	static uint8_t want[MAXLEN];
	struct ms_buf p;
	ms_buf_init(&p, 0);
	int bad = 0;
	for (size_t i = 0; i < n && !bad; i++) {
		struct ms_rec_hdr h;
		struct ms_pos pos = { acks[i].seg, acks[i].off };
		if (ms_log_read(log, pos, &h, &p, &err) < 0) {
			bad = round_fail(r, seed,
					 ms_errf("acked seq %llu lost: %s",
						 (unsigned long long)acks[i].seq,
						 err));
			break;
		}
		mst_fill(want, acks[i].len, key + acks[i].idx);
		if (h.seq != acks[i].seq || h.len != acks[i].len ||
		    (h.len && memcmp(p.data, want, h.len) != 0))
			bad = round_fail(r, seed,
					 ms_errf("acked seq %llu differs",
						 (unsigned long long)acks[i].seq));
	}
	/* everything visible is a whole record that was appended */
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *pl;
	uint64_t expect = 1;
	int ret;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while (!bad && (ret = ms_log_iter_next(it, &pos, &h, &pl, &err)) == 1) {
		if (h.seq != expect++)
			bad = round_fail(r, seed, "seq gap after recovery");
	}
	if (!bad && ret < 0)
		bad = round_fail(r, seed, err);
	ms_log_iter_free(&it);
	ms_buf_free(&p);
	ms_log_close(&log);
	if (!bad && !mst_copies_equal(a, b, &err))
		bad = round_fail(r, seed, ms_errf("copies differ: %s", err));
	free(acks);
	if (!bad)
		mst_rmtree(root);
	return bad;
}

int main(void)
{
	unsigned long rounds = mst_rounds(30, 1000);
	uint64_t seed = mst_seed(0x6b696c6cULL);
	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1));
	signal(SIGPIPE, SIG_IGN);
	for (unsigned long r = 0; r < rounds; r++)
		if (run_round(r, seed + r * 0x100000001b3ULL))
			return 1;
	printf("%lu kill -9 rounds passed (seed 0x%llx)\n", rounds,
	       (unsigned long long)seed);
	return 0;
}
