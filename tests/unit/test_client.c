/*
 * test_client.c - the blocking client's transport (store/client.c)
 * against a scripted peer in a child process: a reply that comes late or
 * in pieces, two frames in one read, a train of frames of mixed sizes
 * cut at odd places, a peer that never answers or never
 * reads (the timeout), a send larger than the socket buffer, a peer that
 * closes, a frame that breaks the rules, MBOX_LIST pages that do not
 * advance.  The client tries each send and
 * receive first and waits (poll, bounded by its timeout) only when the
 * socket is not ready; these cases walk both ways.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "client.h"

#define BIG_SEND (8u << 20)

static char dir[64];
static char path[96];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* A frame: header (len, op, flags 0, id) and body. */
static size_t frame(uint8_t *out, uint16_t op, uint32_t id,
		    const void *body, uint32_t blen)
{
	uint32_t len = 8 + blen;
	memcpy(out, &len, 4);
	memcpy(out + 4, &op, 2);
	memset(out + 6, 0, 2);
	memcpy(out + 8, &id, 4);
	memcpy(out + 12, body, blen);
	return 12 + blen;
}

/* Write (out) or read exactly len bytes: 0, or -1 (an error, or the end
   of the stream first). */
static int xfer_all(int fd, void *buf, size_t len, int out)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = out ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

#define write_all(fd, buf, len) xfer_all(fd, buf, len, 1)
#define read_all(fd, buf, len) xfer_all(fd, buf, len, 0)

enum script {
	LATE_IN_PIECES,  /* reads the request; answers 100 ms later, in
			    two writes 50 ms apart */
	TWO_AT_ONCE,	 /* two reply frames in one write, then silence */
	SILENT,		 /* reads nothing, answers nothing, stays open */
	SLOW_READER,	 /* reads BIG_SEND bytes after 100 ms, checks them */
	CLOSE_NOW,	 /* closes at once */
	BAD_FLAGS,	 /* a frame with flags != 0 */
	TRAIN,		 /* TRAIN_FRAMES frames, written in pieces of
			    TRAIN_PIECE bytes that cut them anywhere */
	SLOW_PINGS,	 /* reads SLOW_PINGS_N requests one by one, 2 ms
			    apart, then answers once */
	STUCK_PAGES,	 /* MBOX_LIST: the whole list refused (too big),
			    then every page the same one mailbox */
	WATCH		 /* USER_WATCH replies among others, per ping:
			    see test_watch_replies */
};

#define SLOW_PINGS_N 40

#define TRAIN_FRAMES 300
#define TRAIN_PIECE 7919

/* Frame id's body: its length and bytes. */
static uint32_t train_len(uint32_t id)
{
	return (id * 2654435761u) % 70001u;
}

static uint8_t train_byte(uint32_t id, uint32_t i)
{
	return (uint8_t)(id * 31u + i);
}

static const uint8_t req_body[4] = { 'p', 'i', 'n', 'g' };
static const uint8_t rep_body[9] = { 0, 0, 0, 0, 'p', 'o', 'n', 'g', '!' };

/* The child's side: one connection, the script; exit 0 if all it checked
   held. */
static int peer(int lfd, enum script s)
{
	int fd = accept(lfd, NULL, NULL);
	uint8_t f[64], g[64];
	size_t n;

	if (fd < 0)
		return 2;
	switch (s) {
	case LATE_IN_PIECES:
		if (read_all(fd, f, 16) < 0 || memcmp(f + 12, req_body, 4) != 0)
			return 3;
		sleep_ms(100);
		n = frame(g, 0x8000 | 2, 7, rep_body, sizeof(rep_body));
		if (write_all(fd, g, 5) < 0)
			return 4;
		sleep_ms(50);
		if (write_all(fd, g + 5, n - 5) < 0)
			return 4;
		break;
	case TWO_AT_ONCE:
		n = frame(g, 0x8000 | 2, 1, rep_body, sizeof(rep_body));
		n += frame(g + n, 0x8000 | 2, 2, rep_body, 4);
		if (write_all(fd, g, n) < 0)
			return 4;
		break;
	case SILENT:
	case CLOSE_NOW:
		break;
	case SLOW_READER: {
		sleep_ms(100);
		uint8_t *buf = malloc(BIG_SEND);
		if (buf == NULL || read_all(fd, buf, BIG_SEND) < 0)
			return 5;
		for (size_t i = 0; i < BIG_SEND; i++)
			if (buf[i] != (uint8_t)(i * 7 + 3))
				return 6;
		free(buf);
		break;
	}
	case BAD_FLAGS:
		n = frame(g, 0x8000 | 2, 1, rep_body, sizeof(rep_body));
		g[6] = 1;
		if (write_all(fd, g, n) < 0)
			return 4;
		break;
	case SLOW_PINGS:
		for (int i = 0; i < SLOW_PINGS_N; i++) {
			if (read_all(fd, f, 16) < 0 ||
			    memcmp(f + 12, req_body, 4) != 0)
				return 3;
			sleep_ms(2);
		}
		n = frame(g, 0x8000 | 2, 7, rep_body, sizeof(rep_body));
		if (write_all(fd, g, n) < 0)
			return 4;
		break;
	case STUCK_PAGES:
		for (int i = 0; i < 5; i++) {
			uint32_t len, id;
			uint16_t op;
			uint8_t req[2048];
			struct ms_buf out;
			if (read_all(fd, f, 12) < 0)
				break; /* the client gave up */
			memcpy(&len, f, 4);
			memcpy(&op, f + 4, 2);
			memcpy(&id, f + 8, 4);
			if (op != MS_OP_MBOX_LIST || len < 8 ||
			    len - 8 > sizeof(req) ||
			    read_all(fd, req, len - 8) < 0)
				return 3;
			/* the first is the whole list, the others pages */
			if ((i == 0) != (len == 8))
				return 7;
			ms_buf_init(&out, 0);
			if (i == 0) {
				ms_proto_error(&out, MS_OP_MBOX_LIST, id,
					       MS_ETOOBIG, "too many");
			} else {
				struct ms_mbox_info mi = {
					.mbox_id = 1, .name = MS_PSTR("A"),
					.uidvalidity = 1, .uidnext = 1 };
				struct ms_reply r = { .op = MS_OP_MBOX_LIST };
				r.u.mboxes = (struct ms_mbox_infos){ 1, &mi,
								     NULL, 0 };
				if (ms_reply_encode(&out, id, &r, NULL) < 0)
					return 8;
			}
			if (write_all(fd, out.data, out.len) < 0)
				return 4;
			ms_buf_free(&out);
		}
		break;
	case WATCH: {
		/* per ping, the frames to write: (id, count) a watch frame
		   (USER_WATCH, id 5), (id, 0) a ping's reply; cut: only the
		   first 5 bytes go; many: 8 watch frames of version 7 with
		   30 mailboxes each and one of version 6 (4,096 bytes, one
		   read of the client's, whole frames), then that many more
		   of version 6; counts 100, 101, ... */
		static const struct {
			struct { uint32_t id; uint64_t count; } f[2];
			int n, cut, many;
		} steps[] = {
			{ { { 5, 44 } }, 1, 0, 0 },	/* 100 ms late */
			{ { { 5, 45 }, { 7, 0 } }, 2, 0, 0 },
			{ { { 8, 0 } }, 1, 0, 0 },
			{ { { 5, 46 } }, 1, 0, 0 },
			{ { { 10, 0 }, { 5, 47 } }, 2, 0, 0 },
			{ { { 0, 0 } }, 0, 0, 100 },
			{ { { 5, 48 } }, 1, 1, 0 },
		};
		for (size_t i = 0; i < MS_ARRAY_SIZE(steps); i++) {
			struct ms_buf out;
			if (read_all(fd, f, 16) < 0)
				return 3;
			if (i == 0)
				sleep_ms(100);
			ms_buf_init(&out, 0);
			for (int k = 0; k < steps[i].n; k++) {
				uint32_t id = steps[i].f[k].id;
				if (steps[i].f[k].count == 0) {
					n = frame(g, 0x8000 | 2, id, rep_body,
						  sizeof(rep_body));
					if (ms_buf_append(&out, g, n) < 0)
						return 8;
					continue;
				}
				struct ms_reply r = { .op = MS_OP_USER_WATCH };
				r.u.watch.changes = steps[i].f[k].count;
				if (ms_reply_encode(&out, id, &r, NULL) < 0)
					return 8;
			}
			static struct ms_mbox_chg thirty[30];
			for (int k = 0; k < 30; k++)
				thirty[k] = (struct ms_mbox_chg){
					(uint64_t)k + 1, 50 };
			for (int k = 0; steps[i].many > 0 &&
					k < 9 + steps[i].many; k++) {
				struct ms_reply r = { .op = MS_OP_USER_WATCH };
				r.u.watch.changes = 100 + (uint64_t)k;
				if (k < 8) {
					r.u.watch.have_mboxes = 1;
					r.u.watch.mboxes.n = 30;
					r.u.watch.mboxes.list = thirty;
				}
				if (ms_reply_encode(&out, 5, &r, NULL) < 0)
					return 8;
				if (k == 8 && out.len != 4096)
					return 9;
			}
			size_t len = steps[i].cut ? 5 : out.len;
			if (write_all(fd, out.data, len) < 0)
				return 4;
			ms_buf_free(&out);
		}
		break;
	}
	case TRAIN: {
		size_t cap = (size_t)TRAIN_FRAMES * (12 + 70001), len = 0;
		uint8_t *buf = malloc(cap), *body = malloc(70001);
		if (buf == NULL || body == NULL)
			return 5;
		for (uint32_t id = 1; id <= TRAIN_FRAMES; id++) {
			for (uint32_t i = 0; i < train_len(id); i++)
				body[i] = train_byte(id, i);
			len += frame(buf + len, 0x8000 | 2, id, body,
				     train_len(id));
		}
		for (size_t off = 0, k = 0; off < len; off += n, k++) {
			n = len - off < TRAIN_PIECE ? len - off : TRAIN_PIECE;
			if (write_all(fd, buf + off, n) < 0)
				return 4;
			if (k % 16 == 0)
				sleep_ms(1); /* let a read end here */
		}
		free(buf);
		free(body);
		break;
	}
	}
	if (s == SILENT) {
		/* read nothing, ever: wait for the client to close */
		struct pollfd p = { .fd = fd, .events = POLLRDHUP };
		while (poll(&p, 1, 10000) < 0 && errno == EINTR)
			;
	} else if (s != CLOSE_NOW) {
		/* hold the connection until the client closes it */
		while (read(fd, f, sizeof(f)) > 0)
			;
	}
	close(fd);
	return 0;
}

/* Listen, fork the peer, connect: the client with timeout_ms. */
static struct ms_client *start(enum script s, unsigned timeout_ms,
			       pid_t *pid_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct ms_client *c = NULL;
	const char *error = "";

	assert_true(lfd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(peer(lfd, s));
	close(lfd);
	assert_int_equal(ms_client_connect(path, timeout_ms, &c, &error), 0);
	*pid_r = pid;
	return c;
}

/* Close the client, then the peer's verdict. */
static int finish(struct ms_client **c, pid_t pid)
{
	int st = 0;
	ms_client_close(c);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static int count_mbox(void *ctx, const struct ms_mbox_info *m)
{
	(void)m;
	(*(int *)ctx)++;
	return 0;
}

/* A server whose MBOX_LIST pages do not advance (each the same mailbox):
   ms_client_mbox_list_each stops at the second page with an error,
   instead of asking forever. */
static void test_mbox_pages_that_do_not_advance(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(STUCK_PAGES, 5000, &pid);
	const char *error = "";
	int n = 0;
	assert_int_equal(ms_client_mbox_list_each(c, count_mbox, &n, &error),
			 MS_ECORRUPT);
	assert_non_null(strstr(error, "does not advance"));
	assert_int_equal(n, 1);
	assert_int_equal(finish(&c, pid), 0);
}

static void send_ping(struct ms_client *c)
{
	uint8_t f[32];
	size_t n = frame(f, 2, 7, req_body, sizeof(req_body));
	assert_int_equal(ms_client_send(c, f, n), 0);
}

/* The next frame: its id and body length as expected, after between
   min_ms and max_ms; its body. */
static const uint8_t *recv_ok(struct ms_client *c, uint32_t id, size_t blen,
			      uint64_t min_ms, uint64_t max_ms)
{
	struct ms_proto_hdr h;
	const uint8_t *body = NULL;
	size_t len = 0;
	const char *error = "";
	uint64_t t0 = now_ms();

	assert_int_equal(ms_client_recv(c, &h, &body, &len, &error), 0);
	uint64_t took = now_ms() - t0;
	assert_true(took >= min_ms && took < max_ms);
	assert_int_equal(h.op, 0x8000 | 2);
	assert_int_equal(h.id, id);
	assert_int_equal(len, blen);
	return body;
}

/* The next recv fails with want and an error that says err, after
   between min_ms and max_ms. */
static void recv_fails(struct ms_client *c, int want, const char *err,
		       uint64_t min_ms, uint64_t max_ms)
{
	struct ms_proto_hdr h;
	const uint8_t *body;
	size_t len;
	const char *error = "";
	uint64_t t0 = now_ms();

	assert_int_equal(ms_client_recv(c, &h, &body, &len, &error), want);
	uint64_t took = now_ms() - t0;
	assert_true(took >= min_ms && took < max_ms);
	assert_non_null(strstr(error, err));
}

static void test_reply_late_in_pieces(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(LATE_IN_PIECES, 5000, &pid);

	send_ping(c);
	const uint8_t *body = recv_ok(c, 7, sizeof(rep_body), 140, 5000);
	assert_memory_equal(body, rep_body, sizeof(rep_body));
	assert_int_equal(finish(&c, pid), 0);
}

/* recv without waiting: nothing there yet, then a part of the frame
   (kept, not lost), then the whole frame, each answered at once. */
static void test_recv_nowait(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(LATE_IN_PIECES, 5000, &pid);
	struct ms_proto_hdr h;
	const uint8_t *body = NULL;
	size_t len = 0;
	const char *error = "";

	send_ping(c);
	uint64_t t0 = now_ms();
	assert_int_equal(ms_client_recv_nowait(c, &h, &body, &len, &error),
			 -EAGAIN);
	assert_true(now_ms() - t0 < 50);
	sleep_ms(125); /* the first 5 bytes are in */
	assert_int_equal(ms_client_recv_nowait(c, &h, &body, &len, &error),
			 -EAGAIN);
	sleep_ms(100); /* and the rest */
	assert_int_equal(ms_client_recv_nowait(c, &h, &body, &len, &error),
			 0);
	assert_int_equal(h.id, 7);
	assert_int_equal(len, sizeof(rep_body));
	assert_memory_equal(body, rep_body, sizeof(rep_body));
	assert_int_equal(finish(&c, pid), 0);
}

static void test_two_frames_one_read(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(TWO_AT_ONCE, 3000, &pid);

	(void)recv_ok(c, 1, sizeof(rep_body), 0, 3000);
	/* the second is already here: no wait for the (silent) peer */
	const uint8_t *body = recv_ok(c, 2, 4, 0, 1000);
	assert_memory_equal(body, rep_body, 4);
	/* and then nothing: the timeout, not a hang */
	recv_fails(c, -ETIMEDOUT, "server timed out", 2900, 10000);
	assert_int_equal(finish(&c, pid), 0);
}

/* Frames that come several to a read, or cut anywhere: each handed out
   whole, in order, with its own bytes. */
static void test_train_of_frames(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(TRAIN, 5000, &pid);

	for (uint32_t id = 1; id <= TRAIN_FRAMES; id++) {
		struct ms_proto_hdr h;
		const uint8_t *body = NULL;
		size_t len = 0;
		const char *error = "";

		assert_int_equal(ms_client_recv(c, &h, &body, &len, &error),
				 0);
		assert_int_equal(h.id, id);
		assert_int_equal(len, train_len(id));
		for (uint32_t i = 0; i < len; i++)
			if (body[i] != train_byte(id, i))
				fail_msg("frame %u byte %u differs", id, i);
	}
	assert_int_equal(finish(&c, pid), 0);
}

/* A client waiting for its reply sleeps until the reply comes: the
   server reading its requests (40 of them, one by one, 2 ms apart) does
   not wake it each time.  A recv that blocks in the kernel is woken by
   each of those reads (the socket turns writable); the count of
   voluntary context switches while waiting says which it was. */
static void test_wait_not_woken_by_reads(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(SLOW_PINGS, 5000, &pid);
	struct rusage r0, r1;

	for (int i = 0; i < SLOW_PINGS_N; i++)
		send_ping(c);
	assert_int_equal(getrusage(RUSAGE_SELF, &r0), 0);
	(void)recv_ok(c, 7, sizeof(rep_body), 2 * SLOW_PINGS_N, 5000);
	assert_int_equal(getrusage(RUSAGE_SELF, &r1), 0);
	long woken = r1.ru_nvcsw - r0.ru_nvcsw;
	if (woken > 5)
		fail_msg("woken %ld times while waiting for one reply", woken);
	assert_int_equal(finish(&c, pid), 0);
}

static void test_recv_timeout(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(SILENT, 150, &pid);

	send_ping(c);
	recv_fails(c, -ETIMEDOUT, "server timed out", 140, 2000);
	assert_int_equal(finish(&c, pid), 0);
}

/* BIG_SEND bytes (more than a socket holds) sent with the peer's
   script; the send's status, after between min_ms and max_ms. */
static void big_send(enum script s, unsigned timeout_ms, int want,
		     uint64_t min_ms, uint64_t max_ms)
{
	pid_t pid;
	uint8_t *buf = malloc(BIG_SEND);

	/* the bytes first: the peer's clock starts when it accepts */
	assert_non_null(buf);
	for (size_t i = 0; i < BIG_SEND; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	struct ms_client *c = start(s, timeout_ms, &pid);
	uint64_t t0 = now_ms();
	assert_int_equal(ms_client_send(c, buf, BIG_SEND), want);
	uint64_t took = now_ms() - t0;
	assert_true(took >= min_ms && took < max_ms);
	free(buf);
	assert_int_equal(finish(&c, pid), 0);
}

static void test_send_waits_for_a_slow_reader(void **state)
{
	(void)state;
	/* the peer checks every byte */
	big_send(SLOW_READER, 5000, 0, 90, 5000);
}

static void test_send_timeout(void **state)
{
	(void)state;
	big_send(SILENT, 150, -ETIMEDOUT, 140, 2000);
}

static void test_peer_closes(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(CLOSE_NOW, 3000, &pid);

	recv_fails(c, MS_ETRUNC, "the server closed the connection", 0,
		   3000);
	/* a send to a closed peer fails, without SIGPIPE */
	uint8_t f[32];
	size_t n = frame(f, 2, 7, req_body, sizeof(req_body));
	int ret = 0;
	for (int i = 0; i < 3 && ret == 0; i++)
		ret = ms_client_send(c, f, n);
	assert_int_equal(ret, -EPIPE);
	assert_int_equal(finish(&c, pid), 0);
}

static void test_bad_frame(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(BAD_FLAGS, 3000, &pid);

	recv_fails(c, MS_ECORRUPT, "bad frame from the server", 0, 3000);
	assert_int_equal(finish(&c, pid), 0);
}

/* A watch's replies (USER_WATCH) are passed over by recv wherever they
   come, the last one kept, and reported by peek and poll; poll says
   -EBUSY while another reply before one is unread, or only a part of
   one came. */
static void test_watch_replies(void **state)
{
	(void)state;
	pid_t pid;
	struct ms_client *c = start(WATCH, 2000, &pid);
	const char *err = "";
	int32_t st = -1;
	uint64_t chg = 0;

	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), -ENOENT);
	assert_int_equal(ms_client_watch_peek(c, &st, &chg), -ENOENT);
	ms_client_watch(c, 5);
	assert_int_equal(ms_client_watch_peek(c, &st, &chg), 0);
	/* do_read 2: the first reply waited for */
	send_ping(c);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), 0);
	uint64_t t0 = now_ms();
	assert_int_equal(ms_client_watch_poll(c, 2, &st, &chg, &err), 1);
	assert_true(now_ms() - t0 >= 50);
	assert_int_equal(chg, 44);
	/* once it came, 2 reads what is there and does not wait */
	t0 = now_ms();
	assert_int_equal(ms_client_watch_poll(c, 2, &st, &chg, &err), 1);
	assert_true(now_ms() - t0 < 50);
	send_ping(c);
	(void)recv_ok(c, 7, sizeof(rep_body), 0, 1000);
	assert_int_equal(ms_client_watch_peek(c, &st, &chg), 1);
	assert_int_equal(st, 0);
	assert_int_equal(chg, 45);
	assert_int_equal(ms_client_watch_poll(c, 0, &st, &chg, &err), 1);
	assert_int_equal(chg, 45);

	send_ping(c);
	(void)recv_ok(c, 8, sizeof(rep_body), 0, 1000);
	sleep_ms(50);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), 1);
	assert_int_equal(chg, 45);
	send_ping(c);
	sleep_ms(50);
	uint64_t d0 = ms_client_drains(c);
	assert_int_equal(ms_client_watch_poll(c, 0, &st, &chg, &err), 1);
	assert_int_equal(chg, 45); /* not read yet */
	assert_int_equal(ms_client_drains(c), d0); /* nothing read */
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), 1);
	assert_int_equal(chg, 46);
	/* that read took all there was: the socket was emptied */
	assert_true(ms_client_drains(c) > d0);
	d0 = ms_client_drains(c);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), 1);
	assert_int_equal(ms_client_drains(c), d0 + 1); /* EAGAIN */

	send_ping(c);
	sleep_ms(50);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), -EBUSY);
	(void)recv_ok(c, 10, sizeof(rep_body), 0, 1000);
	assert_int_equal(ms_client_watch_poll(c, 0, &st, &chg, &err), 1);
	assert_int_equal(chg, 47);
	/* more replies than one read takes, the first read ending with a
	   whole frame: one poll takes them all */
	send_ping(c);
	sleep_ms(50);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), 1);
	assert_int_equal(chg, 208);

	send_ping(c);
	sleep_ms(50);
	assert_int_equal(ms_client_watch_poll(c, 1, &st, &chg, &err), -EBUSY);
	assert_int_equal(finish(&c, pid), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mstest-client-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/s.sock", dir);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_late_in_pieces),
		cmocka_unit_test(test_recv_nowait),
		cmocka_unit_test(test_two_frames_one_read),
		cmocka_unit_test(test_train_of_frames),
		cmocka_unit_test(test_wait_not_woken_by_reads),
		cmocka_unit_test(test_recv_timeout),
		cmocka_unit_test(test_send_waits_for_a_slow_reader),
		cmocka_unit_test(test_send_timeout),
		cmocka_unit_test(test_peer_closes),
		cmocka_unit_test(test_bad_frame),
		cmocka_unit_test(test_mbox_pages_that_do_not_advance),
		cmocka_unit_test(test_watch_replies),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
