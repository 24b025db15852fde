/*
 * mstore-lmtpd - the LMTP receiver: gateways hand it mail, it stores
 * each message once, through mstored, for all its recipients.
 *
 * SYNOPSIS
 *	mstore-lmtpd -c mstore.conf [-t]
 *
 * DESCRIPTION
 *	Reads [lmtp] (listeners, domains, limits) and [store] (mstored's
 *	admin socket, the frame size, the user) from the config file,
 *	binds its TCP addresses and unix socket, drops root, connects to
 *	mstored's admin socket (and reconnects whenever it goes away), and
 *	serves LMTP (RFC 2033; docs/lmtp.md) on one event loop until
 *	SIGTERM or SIGINT.  Then it stops listening, closes idle sessions
 *	and sessions in the middle of a message with 421 (nothing of those
 *	is stored), answers the deliveries already handed to mstored, and
 *	exits.  SIGHUP is logged and ignored: changes need a restart.
 *	-t checks the configuration and exits.
 *
 * DIAGNOSTICS
 *	One line per event on stderr (one per recipient delivered or
 *	refused).  Exit 1 for a bad configuration or when it cannot bind.
 *
 * SECURITY
 *	Binds (port 24 needs root) before dropping to [lmtp] user, or
 *	[store] user when that is empty; everything that parses client
 *	input runs after the drop.  mstored lets only its own uid and root
 *	on the admin socket, so the two users must be the same.  XCLIENT
 *	and XFORWARD are accepted only from [lmtp] trusted_gateways.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "lmtp_cfg.h"
#include "lmtp_loop.h"
#include "lmtp_server.h"
#include "lmtp_session.h"
#include "lmtp_store.h"
#include "msg.h"
#include "privs.h"
#include "store_cfg.h"

struct daemon {
	struct lmtp_loop *loop;
	struct lmtp_server *srv;
	struct lmtp_store *store;
	struct lmtp_watch sigw;
	uint64_t grace_ms;
};

static void on_signal(struct lmtp_watch *w, unsigned events)
{
	struct daemon *d = w->ctx;
	struct signalfd_siginfo si;
	(void)events;
	while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			msg_info("reload.ignored msg=\"settings change only at a "
				 "restart\"");
			continue;
		}
		msg_info("stopping signal=%u msg=\"deliveries in flight are "
			 "answered first\"",
			 si.ssi_signo);
		lmtp_server_stop(d->srv, d->grace_ms);
	}
}

static void on_tick(void *ctx)
{
	struct daemon *d = ctx;
	lmtp_store_tick(d->store);
	lmtp_server_tick(d->srv);
	if (lmtp_server_done(d->srv))
		lmtp_loop_stop(d->loop);
}


/* A message and its recipients must fit one APPEND frame. */
static int check_sizes(const struct lmtp_cfg *lc,
		       const struct ms_store_cfg *sc)
{
	uint64_t need = lc->max_message_size + LMTP_HDR_ROOM +
			lc->max_recipients *
				(MS_EVENT_USER_NAME_MAX +
				 MS_EVENT_MBOX_NAME_MAX + 32) +
			64;
	if (need > sc->max_frame) {
		msg_error("config.invalid max_message_size=%llu "
			  "max_recipients=%llu frame_needed=%llu max_frame=%llu "
			  "msg=\"[store] max_frame is too small for [lmtp] "
			  "max_message_size\"",
			  (unsigned long long)lc->max_message_size,
			  (unsigned long long)lc->max_recipients,
			  (unsigned long long)need,
			  (unsigned long long)sc->max_frame);
		return -1;
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: mstore-lmtpd -c mstore.conf [-t]\n");
}

int main(int argc, char **argv)
{
	struct ms_store_cfg scfg;
	struct lmtp_cfg lcfg;
	struct daemon d = { 0 };
	const char *conf = NULL, *err = "";
	char host[256];
	int opt, test_only = 0, ret = 1;

	ms_msg_init("mstore-lmtpd");
	while ((opt = getopt(argc, argv, "c:t")) != -1) {
		switch (opt) {
		case 'c':
			conf = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (conf == NULL || optind != argc) {
		usage();
		return 2;
	}
	if (ms_store_cfg_load(conf, &scfg, &err) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		return 1;
	}
	if (lmtp_cfg_load(conf, &lcfg, &err) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		ms_store_cfg_free(&scfg);
		return 1;
	}
	if (check_sizes(&lcfg, &scfg) < 0)
		goto out_cfg;
	if (scfg.log == MS_LOG_SYSLOG)
		ms_msg_syslog(1);
	if (test_only) {
		printf("%s: ok\n", conf);
		ret = 0;
		goto out_cfg;
	}
	if (lcfg.hostname != NULL) {
		snprintf(host, sizeof(host), "%s", lcfg.hostname);
	} else if (gethostname(host, sizeof(host)) < 0) {
		snprintf(host, sizeof(host), "localhost");
	}
	host[sizeof(host) - 1] = '\0';

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sigw.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	d.sigw.fn = on_signal;
	d.sigw.ctx = &d;
	d.grace_ms = lcfg.store_timeout + 1000;

	if (d.sigw.fd < 0 || lmtp_loop_new(&d.loop) < 0) {
		msg_error("startup.failed what=loop error=%s",
			  msg_q(strerror(errno)));
		goto out;
	}
	/* the store is connected after the drop: the server is made with
	   it, so make both now and let the store try at its first tick */
	if (lmtp_store_new(d.loop, scfg.admin_socket, (uint32_t)scfg.max_frame,
			   lcfg.store_timeout, &d.store) < 0 ||
	    lmtp_server_new(d.loop, d.store, &lcfg, host, &d.srv) < 0) {
		msg_error("startup.failed error=\"out of resources\"");
		goto out;
	}
	if (lmtp_server_listen(d.srv, &err) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		goto out;
	}
	const char *mine[] = { lcfg.socket };
	if (ms_privs_drop(lcfg.user != NULL ? lcfg.user : scfg.user, mine,
			  1) < 0)
		goto out;
	if (lmtp_server_start(d.srv, &err) < 0 ||
	    lmtp_loop_add(d.loop, &d.sigw, EPOLLIN) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		goto out;
	}
	lmtp_loop_set_tick(d.loop, on_tick, &d);
	msg_info("ready store=%s max_message_size=%llu",
		 msg_q(scfg.admin_socket),
		 (unsigned long long)lcfg.max_message_size);
	if (lmtp_loop_run(d.loop) < 0)
		msg_error("loop.failed error=%s", msg_q(strerror(errno)));
	else
		ret = 0;
	msg_info("stopped");
out:
	lmtp_server_free(&d.srv);
	lmtp_store_free(&d.store);
	if (d.sigw.fd >= 0) {
		if (d.loop != NULL)
			lmtp_loop_del(d.loop, &d.sigw);
		close(d.sigw.fd);
	}
	lmtp_loop_free(&d.loop);
out_cfg:
	lmtp_cfg_free(&lcfg);
	ms_store_cfg_free(&scfg);
	return ret;
}
