/*
 * test_lmtp_indexer.c - mstore-lmtpd's notices to Dovecot's indexer
 * (lmtp/lmtp_indexer.c): folder names as Dovecot's namespace has them,
 * the protocol's lines and tab escaping, a short send, and the whole
 * path against a unix socket this test listens on: one line per pair
 * however many messages it got, the interval, a socket that is not
 * there (pairs kept, retries doubling to the cap, then sent), and the
 * bound on what waits (dropped and counted; a backlog sent in several
 * connections of whole lines, in order).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "lmtp_indexer.h"

#define HS "VERSION\tindexer\t1\t0\n"

static void test_vname(void **state)
{
	(void)state;
	static const struct {
		char sep;
		const char *prefix, *name, *want;
	} c[] = {
		{'/', "", NULL, "INBOX"},
		{'/', "", "", "INBOX"},
		{'.', "INBOX.", "INBOX", "INBOX"},
		{'/', "", "Lists/dev", "Lists/dev"},
		{'.', "", "Lists/dev", "Lists.dev"},
		{'.', "", "v1.2/x", "v1/2.x"},
		{'.', "INBOX.", "Work/2026", "INBOX.Work.2026"},
		{'/', "",
		 "Entw\xc3\xbc"
		 "rfe",
		 "Entw\xc3\xbc"
		 "rfe"},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char *v = lmtp_indexer_vname(c[i].sep, c[i].prefix, c[i].name);
		assert_string_equal(v, c[i].want);
		free(v);
	}
}

static void test_line(void **state)
{
	(void)state;
	struct ms_buf b;
	ms_buf_init(&b, 0);
	assert_int_equal(lmtp_indexer_line(&b, "alice", "INBOX"), 0);
	assert_int_equal(lmtp_indexer_line(&b, "b\tob", "a\001b\r\nc\td"), 0);
	static const char want[] =
		"APPEND\t0\talice\tINBOX\n"
		"APPEND\t0\tb\001tob\ta\0011b\001r\001nc\001td\n";
	assert_int_equal(b.len, sizeof(want) - 1);
	assert_memory_equal(b.data, want, b.len);
	/* a line that does not fit leaves the buffer as it was */
	struct ms_buf small;
	ms_buf_init(&small, 30);
	assert_int_equal(lmtp_indexer_line(&small, "alice", "INBOX"), 0);
	size_t len = small.len;
	assert_true(lmtp_indexer_line(&small, "alice", "INBOX") < 0);
	assert_int_equal(small.len, len);
	ms_buf_free(&small);
	ms_buf_free(&b);
}

static void test_lines_written(void **state)
{
	(void)state;
	static const char d[] = HS "APPEND\t0\ta\tINBOX\n"
				   "APPEND\t0\tb\tINBOX\n"
				   "APPEND\t0\tc\tX\n";
	size_t len = sizeof(d) - 1, hs = sizeof(HS) - 1;
	size_t l1 = hs + strlen("APPEND\t0\ta\tINBOX\n");
	size_t l2 = l1 + strlen("APPEND\t0\tb\tINBOX\n");
	const uint8_t *p = (const uint8_t *)d;
	assert_int_equal(lmtp_indexer_lines_written(p, len, 0), 0);
	assert_int_equal(lmtp_indexer_lines_written(p, len, hs - 1), 0);
	assert_int_equal(lmtp_indexer_lines_written(p, len, hs), 0);
	assert_int_equal(lmtp_indexer_lines_written(p, len, l1 - 1), 0);
	assert_int_equal(lmtp_indexer_lines_written(p, len, l1), 1);
	assert_int_equal(lmtp_indexer_lines_written(p, len, l2 - 1), 1);
	assert_int_equal(lmtp_indexer_lines_written(p, len, l2), 2);
	assert_int_equal(lmtp_indexer_lines_written(p, len, len - 1), 2);
	assert_int_equal(lmtp_indexer_lines_written(p, len, len), 3);
	assert_int_equal(lmtp_indexer_lines_written(p, len, len + 9), 3);
}

/* ---- against a socket ---- */

struct lsn {
	char dir[64], path[96];
	int fd;
};

static void lsn_dir(struct lsn *l)
{
	snprintf(l->dir, sizeof(l->dir), "/tmp/ms-ixtest-XXXXXX");
	assert_non_null(mkdtemp(l->dir));
	snprintf(l->path, sizeof(l->path), "%s/indexer", l->dir);
	l->fd = -1;
}

static void lsn_listen(struct lsn *l)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", l->path);
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(l->fd >= 0);
	assert_int_equal(bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l->fd, 64), 0);
}

static void lsn_done(struct lsn *l)
{
	if (l->fd >= 0)
		close(l->fd);
	unlink(l->path);
	rmdir(l->dir);
}

/* Every connection waiting: its bytes (each ends in EOF, the client has
   closed) appended to b; the number of connections. */
static int lsn_take(struct lsn *l, struct ms_buf *b)
{
	int n = 0, c;
	while ((c = accept(l->fd, NULL, NULL)) >= 0) {
		char tmp[65536];
		ssize_t r;
		while ((r = read(c, tmp, sizeof(tmp))) > 0)
			assert_int_equal(ms_buf_append(b, tmp, (size_t)r), 0);
		assert_int_equal(r, 0);
		close(c);
		n++;
	}
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	return n;
}

static void test_sends_each_pair_once(void **state)
{
	(void)state;
	struct lsn l;
	struct ms_buf got;
	struct lmtp_indexer_stats st;
	lsn_dir(&l);
	lsn_listen(&l);
	ms_buf_init(&got, 0);

	struct lmtp_indexer *ix = lmtp_indexer_new(l.path, '.', "");
	assert_int_equal(lmtp_indexer_tick(ix, 1000), 0); /* nothing waits */
	for (int i = 0; i < 5; i++)
		lmtp_indexer_note(ix, "alice", NULL);
	lmtp_indexer_note(ix, "alice", "INBOX");
	lmtp_indexer_note(ix, "alice", "Lists/dev");
	lmtp_indexer_note(ix, "bob", NULL);
	lmtp_indexer_note(ix, "alice", "Lists/dev");
	assert_int_equal(lmtp_indexer_waiting(ix), 3);
	/* the first tick sets the interval; nothing goes before it */
	assert_int_equal(lmtp_indexer_tick(ix, 1000),
			 1000 + LMTP_INDEXER_EVERY_MS);
	assert_int_equal(lmtp_indexer_tick(ix, 1050),
			 1000 + LMTP_INDEXER_EVERY_MS);
	assert_int_equal(lsn_take(&l, &got), 0);
	assert_int_equal(lmtp_indexer_tick(ix, 1000 + LMTP_INDEXER_EVERY_MS),
			 0);
	assert_int_equal(lsn_take(&l, &got), 1);
	static const char want[] = HS "APPEND\t0\talice\tINBOX\n"
				      "APPEND\t0\talice\tLists.dev\n"
				      "APPEND\t0\tbob\tINBOX\n";
	assert_int_equal(got.len, sizeof(want) - 1);
	assert_memory_equal(got.data, want, got.len);
	assert_int_equal(lmtp_indexer_waiting(ix), 0);
	/* sent: the same pair is noted again */
	lmtp_indexer_note(ix, "alice", NULL);
	assert_int_equal(lmtp_indexer_waiting(ix), 1);
	lmtp_indexer_stats(ix, &st);
	assert_int_equal(st.noted, 4);
	assert_int_equal(st.sent, 3);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.failures, 0);
	lmtp_indexer_free(&ix);
	assert_null(ix);
	ms_buf_free(&got);
	lsn_done(&l);
}

static void test_unreachable_keeps_and_retries(void **state)
{
	(void)state;
	struct lsn l;
	struct ms_buf got;
	struct lmtp_indexer_stats st;
	lsn_dir(&l);
	ms_buf_init(&got, 0);

	struct lmtp_indexer *ix = lmtp_indexer_new(l.path, '/', "");
	lmtp_indexer_note(ix, "alice", NULL);
	uint64_t now = 5000, due = lmtp_indexer_tick(ix, now);
	assert_int_equal(due, now + LMTP_INDEXER_EVERY_MS);
	/* no socket: kept, tried again after 1 s, 2 s, 4 s ... 30 s */
	uint64_t want = LMTP_INDEXER_RETRY_MS;
	for (int i = 0; i < 8; i++) {
		now = due;
		due = lmtp_indexer_tick(ix, now);
		assert_int_equal(due - now, want);
		want = want * 2 > LMTP_INDEXER_RETRY_MAX_MS
			       ? LMTP_INDEXER_RETRY_MAX_MS
			       : want * 2;
		/* more mail meanwhile waits with it, once */
		lmtp_indexer_note(ix, "alice", NULL);
		lmtp_indexer_note(ix, "carol", "Sent");
		/* a tick before the time tries nothing */
		assert_int_equal(lmtp_indexer_tick(ix, now + 1), due);
	}
	assert_int_equal(due - now, LMTP_INDEXER_RETRY_MAX_MS);
	lmtp_indexer_stats(ix, &st);
	assert_int_equal(st.failures, 8);
	assert_int_equal(st.sent, 0);
	assert_int_equal(lmtp_indexer_waiting(ix), 2);
	/* a file that is not a socket: refused too */
	FILE *f = fopen(l.path, "w");
	assert_non_null(f);
	fclose(f);
	now = due;
	due = lmtp_indexer_tick(ix, now);
	assert_int_equal(due - now, LMTP_INDEXER_RETRY_MAX_MS);
	unlink(l.path);
	/* the socket is back: everything goes at the next try, and the
	   next failure starts from 1 s again */
	lsn_listen(&l);
	assert_int_equal(lmtp_indexer_tick(ix, due), 0);
	assert_int_equal(lsn_take(&l, &got), 1);
	static const char want2[] = HS "APPEND\t0\talice\tINBOX\n"
				       "APPEND\t0\tcarol\tSent\n";
	assert_int_equal(got.len, sizeof(want2) - 1);
	assert_memory_equal(got.data, want2, got.len);
	close(l.fd);
	l.fd = -1;
	unlink(l.path);
	lmtp_indexer_note(ix, "alice", NULL);
	now = due + 10;
	due = lmtp_indexer_tick(ix, now);
	now = due;
	due = lmtp_indexer_tick(ix, now);
	assert_int_equal(due - now, LMTP_INDEXER_RETRY_MS);
	assert_int_equal(lmtp_indexer_waiting(ix), 1);
	lmtp_indexer_stats(ix, &st);
	assert_int_equal(st.failures, 10);
	assert_int_equal(st.sent, 2);
	lmtp_indexer_free(&ix);
	ms_buf_free(&got);
	lsn_done(&l);
}

static void test_bound_and_backlog(void **state)
{
	(void)state;
	struct lsn l;
	struct ms_buf got;
	struct lmtp_indexer_stats st;
	char user[32];
	lsn_dir(&l);
	lsn_listen(&l);
	ms_buf_init(&got, 0);

	struct lmtp_indexer *ix = lmtp_indexer_new(l.path, '/', "");
	for (int i = 0; i < LMTP_INDEXER_MAX + 5; i++) {
		snprintf(user, sizeof(user), "user%05d", i);
		lmtp_indexer_note(ix, user, NULL);
	}
	assert_int_equal(lmtp_indexer_waiting(ix), LMTP_INDEXER_MAX);
	lmtp_indexer_stats(ix, &st);
	assert_int_equal(st.noted, LMTP_INDEXER_MAX);
	assert_int_equal(st.dropped, 5);
	/* sent in connections of at most LMTP_INDEXER_WRITE bytes, whole
	   lines, one after the other without waiting */
	uint64_t now = 100, due = lmtp_indexer_tick(ix, now);
	int conns = 0;
	while (due != 0) {
		now = due;
		due = lmtp_indexer_tick(ix, now);
		assert_true(due == 0 || due == now);
		conns += lsn_take(&l, &got);
	}
	size_t line = strlen("APPEND\t0\tuser00000\tINBOX\n");
	size_t per = (LMTP_INDEXER_WRITE - (sizeof(HS) - 1)) / line;
	assert_int_equal(conns, (LMTP_INDEXER_MAX + per - 1) / per);
	assert_int_equal(got.len, (size_t)conns * (sizeof(HS) - 1) +
					  LMTP_INDEXER_MAX * line);
	/* in order, each once */
	const char *p = (const char *)got.data, *end = p + got.len;
	int next = 0;
	while (p < end) {
		if (strncmp(p, HS, sizeof(HS) - 1) == 0) {
			p += sizeof(HS) - 1;
			continue;
		}
		char want[64];
		snprintf(want, sizeof(want), "APPEND\t0\tuser%05d\tINBOX\n",
			 next++);
		assert_true((size_t)(end - p) >= line);
		assert_memory_equal(p, want, line);
		p += line;
	}
	assert_int_equal(next, LMTP_INDEXER_MAX);
	lmtp_indexer_stats(ix, &st);
	assert_int_equal(st.sent, LMTP_INDEXER_MAX);
	assert_int_equal(st.failures, 0);
	/* after the backlog went out, room again */
	lmtp_indexer_note(ix, "user00000", NULL);
	assert_int_equal(lmtp_indexer_waiting(ix), 1);
	lmtp_indexer_free(&ix);
	lmtp_indexer_free(&ix); /* NULL: nothing */
	ms_buf_free(&got);
	lsn_done(&l);
}

/* a line longer than one write goes alone (no name the store allows
   makes one; a prefix can) */
static void test_long_line_alone(void **state)
{
	(void)state;
	struct lsn l;
	struct ms_buf got;
	lsn_dir(&l);
	lsn_listen(&l);
	ms_buf_init(&got, 0);
	size_t plen = LMTP_INDEXER_WRITE + 1000;
	char *prefix = malloc(plen + 1);
	assert_non_null(prefix);
	memset(prefix, 'p', plen);
	prefix[plen] = '\0';
	struct lmtp_indexer *ix = lmtp_indexer_new(l.path, '/', prefix);
	lmtp_indexer_note(ix, "alice", "Box");
	lmtp_indexer_note(ix, "bob", "Box");
	uint64_t now = 10, due = lmtp_indexer_tick(ix, now);
	int conns = 0;
	while (due != 0) {
		due = lmtp_indexer_tick(ix, due);
		conns += lsn_take(&l, &got);
	}
	assert_int_equal(conns, 2);
	size_t line = strlen("APPEND\t0\talice\t") + plen + strlen("Box\n");
	assert_int_equal(got.len, 2 * (sizeof(HS) - 1) + 2 * line - 2);
	lmtp_indexer_free(&ix);
	free(prefix);
	ms_buf_free(&got);
	lsn_done(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vname),
		cmocka_unit_test(test_line),
		cmocka_unit_test(test_lines_written),
		cmocka_unit_test(test_sends_each_pair_once),
		cmocka_unit_test(test_unreachable_keeps_and_retries),
		cmocka_unit_test(test_bound_and_backlog),
		cmocka_unit_test(test_long_line_alone),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
