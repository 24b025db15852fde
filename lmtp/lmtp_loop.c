/*
 * lmtp_loop.c - epoll loop; see lmtp_loop.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "lmtp_loop.h"

#define LOOP_EVENTS 128

struct lmtp_loop {
	int epfd;
	int stop;
	struct epoll_event evs[LOOP_EVENTS];
	int nevs, cur; /* the turn being dispatched */
	void (*tick)(void *ctx);
	void *tick_ctx;
	uint64_t wake_at;
};

uint64_t lmtp_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int lmtp_loop_new(struct lmtp_loop **loop_r)
{
	struct lmtp_loop *l = ms_calloc(1, sizeof(*l));
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int err = -errno;
		free(l);
		return err;
	}
	*loop_r = l;
	return 0;
}

void lmtp_loop_free(struct lmtp_loop **lp)
{
	struct lmtp_loop *l = *lp;
	if (l == NULL)
		return;
	close(l->epfd);
	free(l);
	*lp = NULL;
}

int lmtp_loop_add(struct lmtp_loop *l, struct lmtp_watch *w, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	w->added = 1;
	return 0;
}

int lmtp_loop_mod(struct lmtp_loop *l, struct lmtp_watch *w, unsigned events)
{
	if (!w->added)
		return -EINVAL;
	if (w->events == events)
		return 0;
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

void lmtp_loop_del(struct lmtp_loop *l, struct lmtp_watch *w)
{
	if (!w->added)
		return;
	(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->added = 0;
	/* the rest of this turn must not call it */
	for (int i = l->cur; i < l->nevs; i++)
		if (l->evs[i].data.ptr == w)
			l->evs[i].data.ptr = NULL;
}

void lmtp_loop_set_tick(struct lmtp_loop *l, void (*fn)(void *ctx), void *ctx)
{
	l->tick = fn;
	l->tick_ctx = ctx;
}

void lmtp_loop_wake_at(struct lmtp_loop *l, uint64_t ms)
{
	if (l->wake_at == 0 || ms < l->wake_at)
		l->wake_at = ms;
}

void lmtp_loop_stop(struct lmtp_loop *l)
{
	l->stop = 1;
}

int lmtp_loop_run(struct lmtp_loop *l)
{
	while (!l->stop) {
		int timeout = 1000;
		uint64_t now = lmtp_now_ms();
		if (l->wake_at != 0)
			timeout = l->wake_at <= now ? 0
			: l->wake_at - now < 1000 ? (int)(l->wake_at - now)
						  : 1000;
		l->wake_at = 0;
		int n = epoll_wait(l->epfd, l->evs, LOOP_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		l->nevs = n;
		for (l->cur = 0; l->cur < l->nevs; l->cur++) {
			struct lmtp_watch *w = l->evs[l->cur].data.ptr;
			if (w == NULL)
				continue;
			w->fn(w, l->evs[l->cur].events);
		}
		l->nevs = l->cur = 0;
		if (l->tick)
			l->tick(l->tick_ctx);
	}
	return 0;
}
