/*
 * lmtp_loop.h - the one event loop of mstore-lmtpd: epoll, level
 * triggered, one thread.  A watch is an fd with a callback; the owner
 * embeds the struct and keeps it alive until lmtp_loop_del().  Deleting
 * a watch from inside any callback is safe: events of the current turn
 * that still point at it are dropped.
 *
 * After every turn the tick callback runs (timeouts, store replies that
 * failed, sessions to free); the loop sleeps at most until the time the
 * tick asked for (lmtp_loop_wake_at) and never longer than a second.
 */
#ifndef LMTP_LOOP_H
#define LMTP_LOOP_H

#include <stdint.h>

struct lmtp_loop;
struct lmtp_watch;

typedef void lmtp_watch_fn(struct lmtp_watch *w, unsigned events);

struct lmtp_watch {
	int fd;
	unsigned events; /* EPOLLIN / EPOLLOUT as registered */
	lmtp_watch_fn *fn;
	void *ctx;
	int added;
};

int lmtp_loop_new(struct lmtp_loop **loop_r);
void lmtp_loop_free(struct lmtp_loop **loop);
/* 0 or -errno. */
int lmtp_loop_add(struct lmtp_loop *l, struct lmtp_watch *w, unsigned events);
/* Change the events (no system call if they are the same). */
int lmtp_loop_mod(struct lmtp_loop *l, struct lmtp_watch *w, unsigned events);
void lmtp_loop_del(struct lmtp_loop *l, struct lmtp_watch *w);
void lmtp_loop_set_tick(struct lmtp_loop *l, void (*fn)(void *ctx), void *ctx);
/* Wake for the tick no later than this (lmtp_now_ms() time). */
void lmtp_loop_wake_at(struct lmtp_loop *l, uint64_t ms);
/* Run until lmtp_loop_stop(); 0 or -errno from epoll_wait. */
int lmtp_loop_run(struct lmtp_loop *l);
void lmtp_loop_stop(struct lmtp_loop *l);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t lmtp_now_ms(void);

#endif
