/*
 * test_srv.c - the event loop's connections (store/srv.c) with a handler
 * of the test's own, on both ways of waiting (io_uring and epoll), in
 * one thread: the test's client socket is read from inside the handler,
 * so what the server has written by then is known exactly.
 *
 *  - a request that is in the socket when the connection is accepted is
 *    served in that same turn of the loop, before its tick;
 *  - the replies to the requests of a connection's first read go out in
 *    one write, at the end of the read: none of them is in the client's
 *    socket while a later request of that read is being served; a queue
 *    that reaches 64 KiB, or the client's max_out, goes at once; a later
 *    read's replies go as each is made (the client works on the first
 *    while the rest are made);
 *  - ms_conn_hold: held output goes with the connection's next send, or
 *    at ms_srv_flush_held, not before.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "mstest.h"
#include "proto.h"
#include "srv.h"

struct t {
	struct ms_srv *srv;
	int cfd;		/* the test's client end */
	int ticks;
	int nreq;
	int stop_at;		/* stop after this many requests */
	int req_tick[8];	/* the ticks before each request */
	int in_sock[8];		/* client's bytes readable at each request */
	size_t reply_len[8];	/* the reply to each request (0: small) */
	int hold_in_tick;	/* tick: hold a frame, check, flush */
	size_t max_out;		/* the server's limit (0: 4 MiB) */
	int give_up;		/* stop at this many ticks (0: never) */
	int second;		/* tick: read the replies, send this many more */
	size_t got;		/* the replies' bytes read by the tick */
	struct ms_conn *last;	/* a reference */
	int held_before, held_after;
};

static int readable(int fd)
{
	int n = 0;
	assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

/* A frame of op with a body of len bytes (x), id. */
static void frame(struct ms_buf *b, uint16_t op, uint32_t id, size_t len)
{
	uint8_t h[MS_PROTO_HDR_SIZE];
	ms_put32(h, (uint32_t)(8 + len));
	ms_put16(h + 4, op);
	ms_put16(h + 6, 0);
	ms_put32(h + 8, id);
	assert_int_equal(ms_buf_append(b, h, sizeof(h)), 0);
	assert_int_equal(ms_buf_reserve(b, len), 0);
	memset(b->data + b->len, 'x', len);
	b->len += len;
}

/* n requests in one write on fd, ids first+1..first+n. */
static void send_requests(int fd, int first, int n)
{
	struct ms_buf b;
	ms_buf_init(&b, 0);
	for (int i = 0; i < n; i++)
		frame(&b, 0x7000, (uint32_t)(first + i + 1), 16);
	assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL),
			 (ssize_t)b.len);
	ms_buf_free(&b);
}

static void on_request(void *ctx, struct ms_conn *c,
		       const struct ms_proto_hdr *h, const uint8_t *body,
		       size_t len)
{
	struct t *t = ctx;
	struct ms_buf b;
	(void)body;
	(void)len;
	assert_true(t->nreq < 8);
	t->req_tick[t->nreq] = t->ticks;
	t->in_sock[t->nreq] = readable(t->cfd);
	ms_buf_init(&b, 0);
	frame(&b, h->op | MS_OP_REPLY, h->id, t->reply_len[t->nreq]);
	ms_conn_send(c, b.data, b.len);
	ms_buf_free(&b);
	if (t->last == NULL) {
		ms_conn_ref(c);
		t->last = c;
	}
	if (++t->nreq == t->stop_at && !t->hold_in_tick)
		ms_srv_stop(t->srv);
}

static void on_tick(void *ctx)
{
	struct t *t = ctx;
	t->ticks++;
	if (t->second > 0 && t->nreq > 0) {
		/* the first read's replies off the socket; then more
		   requests, which the loop reads in a later turn */
		static char sink[1 << 20];
		ssize_t r;
		while ((r = recv(t->cfd, sink, sizeof(sink), MSG_DONTWAIT)) >
		       0)
			t->got += (size_t)r;
		send_requests(t->cfd, t->nreq, t->second);
		t->second = 0;
	}
	if (t->give_up > 0 && t->ticks >= t->give_up)
		ms_srv_stop(t->srv);
	if (!t->hold_in_tick || t->nreq < t->stop_at || t->last == NULL)
		return;
	/* a frame held: not sent until the flush */
	struct ms_buf *out = ms_conn_out(t->last);
	assert_non_null(out);
	frame(out, 0x7001, 99, 10);
	ms_conn_hold(t->last);
	t->held_before = readable(t->cfd);
	ms_srv_flush_held(t->srv);
	t->held_after = readable(t->cfd);
	t->hold_in_tick = 0;
	ms_srv_stop(t->srv);
}

static void on_closed(void *ctx, struct ms_conn *c)
{
	(void)ctx;
	(void)c;
}

/* A server on a fresh socket and a client connected to it that has
   sent n frames in one write; the server has not turned yet. */
static void setup(struct t *t, enum ms_srv_loop loop, int n)
{
	static const struct ms_srv_handler h = {
		.request = on_request,
		.closed = on_closed,
		.tick = on_tick,
	};
	struct ms_srv_limits lim = {
		.max_frame = 1u << 20,
		.max_conns = 16,
		.max_out = t->max_out != 0 ? t->max_out : 4u << 20,
	};
	char path[256];
	const char *err = "";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(path, sizeof(path), "%s/s.sock", mst_tmpdir("srv"));
	assert_int_equal(ms_srv_new(&lim, &h, t, loop, &t->srv), 0);
	assert_int_equal(ms_srv_listen(t->srv, path, 0600, 0, &err), 0);
	t->cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(t->cfd >= 0);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(connect(t->cfd, (struct sockaddr *)&sa, sizeof(sa)),
			 0);
	send_requests(t->cfd, 0, n);
}

static void teardown(struct t *t)
{
	ms_conn_unref(&t->last);
	ms_srv_free(&t->srv);
	close(t->cfd);
}

/* Read the client's frames: n of them, ids first+1..first+n in order
   (plus the held one, id 99, when held). */
static void expect_replies_from(struct t *t, int first, int n, int held)
{
	struct ms_buf b;
	ms_buf_init(&b, 0);
	size_t want = 0;
	for (int i = first; i < first + n; i++)
		want += MS_PROTO_HDR_SIZE + t->reply_len[i];
	if (held)
		want += MS_PROTO_HDR_SIZE + 10;
	assert_int_equal(ms_buf_reserve(&b, want), 0);
	while (b.len < want) {
		struct pollfd p = { .fd = t->cfd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = recv(t->cfd, b.data + b.len, want - b.len, 0);
		assert_true(r > 0);
		b.len += (size_t)r;
	}
	size_t off = 0;
	for (int i = 0; i < n + held; i++) {
		struct ms_proto_hdr h;
		const char *err = "";
		assert_int_equal(ms_proto_frame(b.data + off, b.len - off, 0,
						&h, NULL, &err),
				 0);
		assert_int_equal(h.id,
				 i < n ? (uint32_t)(first + i) + 1 : 99u);
		off += MS_PROTO_HDR_SIZE + h.body_len;
	}
	assert_int_equal(off, b.len);
	ms_buf_free(&b);
}

static void expect_replies(struct t *t, int n, int held)
{
	expect_replies_from(t, 0, n, held);
}

static const enum ms_srv_loop loops[] = { MS_SRV_LOOP_URING,
					   MS_SRV_LOOP_EPOLL };

static void test_first_request_in_accept_turn(void **state)
{
	(void)state;
	for (size_t l = 0; l < MS_ARRAY_SIZE(loops); l++) {
		struct t t = { .stop_at = 3 };
		setup(&t, loops[l], 3);
		assert_int_equal(ms_srv_run(t.srv), 0);
		assert_int_equal(t.nreq, 3);
		/* accept, read and serve in one turn: no tick before */
		for (int i = 0; i < 3; i++)
			assert_int_equal(t.req_tick[i], 0);
		expect_replies(&t, 3, 0);
		teardown(&t);
	}
}

static void test_first_read_in_one_write(void **state)
{
	(void)state;
	for (size_t l = 0; l < MS_ARRAY_SIZE(loops); l++) {
		struct t t = { .stop_at = 7, .second = 3 };
		/* the third reply is more than the cork takes: it and what
		   was queued before it go at once */
		t.reply_len[2] = 70u << 10;
		setup(&t, loops[l], 4);
		assert_int_equal(ms_srv_run(t.srv), 0);
		assert_int_equal(t.nreq, 7);
		assert_int_equal(t.in_sock[0], 0);
		assert_int_equal(t.in_sock[1], 0); /* the first one waits */
		assert_int_equal(t.in_sock[2], 0);
		assert_int_equal(t.in_sock[3],
				 (int)(3 * MS_PROTO_HDR_SIZE + (70u << 10)));
		assert_int_equal(t.got, 4 * MS_PROTO_HDR_SIZE + (70u << 10));
		/* the second read (in a later turn): each reply goes as it
		   is made */
		assert_true(t.req_tick[4] > 0);
		assert_int_equal(t.in_sock[4], 0);
		assert_int_equal(t.in_sock[5], MS_PROTO_HDR_SIZE);
		assert_int_equal(t.in_sock[6], 2 * MS_PROTO_HDR_SIZE);
		expect_replies_from(&t, 4, 3, 0);
		teardown(&t);
	}
}

/* A client whose max_out is under what the first read holds back: the
   hold ends at max_out, and every request of the read is served (held
   to 64 KiB, the read would stop at max_out with two requests unserved
   and their replies' bytes sent, nothing left to wake it). */
static void test_first_read_within_max_out(void **state)
{
	(void)state;
	for (size_t l = 0; l < MS_ARRAY_SIZE(loops); l++) {
		struct t t = { .stop_at = 4, .max_out = 16u << 10,
			       .give_up = 3 };
		for (int i = 0; i < 4; i++)
			t.reply_len[i] = 8u << 10;
		setup(&t, loops[l], 4);
		assert_int_equal(ms_srv_run(t.srv), 0);
		assert_int_equal(t.nreq, 4);
		assert_int_equal(t.req_tick[3], 0);
		assert_int_equal(t.in_sock[1], 0);
		/* the first two replies reached max_out: sent at once */
		assert_int_equal(t.in_sock[2],
				 (int)(2 * (MS_PROTO_HDR_SIZE + (8u << 10))));
		expect_replies(&t, 4, 0);
		teardown(&t);
	}
}

static void test_hold(void **state)
{
	(void)state;
	for (size_t l = 0; l < MS_ARRAY_SIZE(loops); l++) {
		struct t t = { .stop_at = 1, .hold_in_tick = 1 };
		setup(&t, loops[l], 1);
		assert_int_equal(ms_srv_run(t.srv), 0);
		assert_int_equal(t.held_before, MS_PROTO_HDR_SIZE);
		assert_int_equal(t.held_after, 2 * MS_PROTO_HDR_SIZE + 10);
		expect_replies(&t, 1, 1);
		teardown(&t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_request_in_accept_turn),
		cmocka_unit_test(test_first_read_in_one_write),
		cmocka_unit_test(test_first_read_within_max_out),
		cmocka_unit_test(test_hold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
