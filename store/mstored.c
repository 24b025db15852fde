/*
 * mstored - the store daemon: the only process that writes a store.
 *
 * SYNOPSIS
 *	mstored -c mstore.conf [-t] [--standby]
 *
 * DESCRIPTION
 *	Opens the log (recovering it), opens the index (rebuilding it from
 *	the log when it is missing or does not check out, and replaying
 *	the log's tail into it), binds the user and admin sockets, drops
 *	root to [store] user, and serves the mstore protocol
 *	(docs/protocol.md) until SIGTERM or SIGINT: then it stops reading
 *	requests, lets the batch in flight finish, applies it, answers it,
 *	and exits.  SIGHUP reloads what can change at run time: the
 *	connection limits and the scrub rate (other changes are logged as
 *	needing a restart).
 *	-t checks the configuration and exits.
 *	--standby: the DR site's hot standby (docs/replication.md): the
 *	store (written by udsync recv) is opened read-only, every write is
 *	refused (-EROFS), and what udsync recv appends is applied to the
 *	index every 100 ms.  PROMOTE (mstore promote) makes it read-write.
 *
 * ENVIRONMENT
 *	MSTORE_LOOP=epoll|uring|uring-oneshot chooses the network loop over
 *	what [store] io_engine implies (uring: io_uring; psync: epoll), for
 *	tests.  An io_uring that cannot be set up falls back to epoll.
 *
 * DIAGNOSTICS
 *	One line per event on stderr.  Exit 1 when the store cannot be
 *	opened or the configuration is bad (the message says which).
 *
 * SECURITY
 *	Sockets are bound (and their modes set) before privileges are
 *	dropped; everything after that runs as [store] user.  Clients on
 *	the user socket can touch only the user they said hello as.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <sodium.h>

#include "msg.h"
#include "ops.h"
#include "privs.h"
#include "srv.h"
#include "store_cfg.h"
#include "sysapi.h"

struct daemon {
	struct ms_srv *srv;
	struct ms_ops *ops;
	struct ms_sysapi *api;	/* the HTTP system API, or NULL */
	int sigfd;
	const char *conf_path;
	struct ms_store_cfg *cfg;	/* the settings in force */
	int follow_fd;			/* --standby: 100 ms timer */
	int log_watched;
};

static void limits_of(const struct ms_store_cfg *cfg, struct ms_srv_limits *lim)
{
	lim->max_frame = (uint32_t)cfg->max_frame;
	lim->max_conns = (unsigned)cfg->max_connections;
	lim->max_out = (size_t)cfg->max_output;
	lim->idle_ms = (unsigned)cfg->idle_timeout;
}

#define SAME_STR(a, b) \
	(((a) == NULL && (b) == NULL) || \
	 ((a) != NULL && (b) != NULL && strcmp((a), (b)) == 0))

/* SIGHUP: take what can change at run time; say what needs a restart. */
static void reload(struct daemon *d)
{
	struct ms_store_cfg n;
	const char *err;
	if (ms_store_cfg_load(d->conf_path, &n, &err) < 0) {
		msg_error("reload.failed error=%s msg=\"keeping the settings in "
			  "force\"",
			  msg_q(err));
		return;
	}
	const struct ms_store_cfg *o = d->cfg;
	if (!SAME_STR(o->primary, n.primary) ||
	    !SAME_STR(o->secondary, n.secondary) ||
	    !SAME_STR(o->index, n.index) || !SAME_STR(o->socket, n.socket) ||
	    !SAME_STR(o->admin_socket, n.admin_socket) ||
	    !SAME_STR(o->user, n.user) || !SAME_STR(o->key_file, n.key_file) ||
	    o->io_engine != n.io_engine || o->segment_size != n.segment_size ||
	    o->compress != n.compress || o->socket_mode != n.socket_mode ||
	    o->admin_socket_mode != n.admin_socket_mode ||
	    !SAME_STR(o->http, n.http) ||
	    !SAME_STR(o->http_token_file, n.http_token_file) ||
	    o->http_timeout != n.http_timeout ||
	    o->http_max_connections != n.http_max_connections ||
	    o->http_quota_users != n.http_quota_users)
		msg_warn("reload.restart_needed msg=\"paths, sockets, user, key, "
			 "engine, segment size, compression and the http "
			 "settings change only at a restart; those changes are "
			 "not in force\"");
	struct ms_srv_limits lim;
	limits_of(&n, &lim);
	ms_srv_set_limits(d->srv, &lim);
	ms_ops_reload(d->ops, &n);
	msg_info("reload max_frame=%llu max_connections=%llu "
		 "max_output=%llu idle_timeout=%llu scrub_rate=%llu",
		 (unsigned long long)n.max_frame,
		 (unsigned long long)n.max_connections,
		 (unsigned long long)n.max_output,
		 (unsigned long long)n.idle_timeout,
		 (unsigned long long)n.scrub_rate);
	/* keep the new values (the paths stay as they were opened) */
	d->cfg->max_frame = n.max_frame;
	d->cfg->max_connections = n.max_connections;
	d->cfg->max_output = n.max_output;
	d->cfg->idle_timeout = n.idle_timeout;
	d->cfg->scrub_rate = n.scrub_rate;
	ms_store_cfg_free(&n);
}

/*
 * The system API, when [store] http is set: its token is read and its
 * port bound here, before root is dropped.  *port_r: the bound port.
 */
static int sysapi_start(struct daemon *d, const struct ms_store_cfg *cfg,
			unsigned *port_r, const char **error_r)
{
	struct ms_sysapi_cfg ac = {
		.timeout_ms = (unsigned)cfg->http_timeout,
		.max_conns = (unsigned)cfg->http_max_connections,
		.quota_users = cfg->http_quota_users,
	};
	char *token = NULL;
	int ret = 0;

	if (cfg->http_token_file != NULL &&
	    (ret = ms_sysapi_token_load(cfg->http_token_file, &token,
					&ac.token_len, error_r)) < 0)
		return ret;
	ac.token = token;
	ret = ms_sysapi_new(d->srv, d->ops, &ac, &d->api);
	if (token != NULL) {
		sodium_memzero(token, ac.token_len);
		free(token);
	}
	if (ret < 0) {
		*error_r = "the system API could not start";
		return ret;
	}
	return ms_sysapi_listen(d->api, cfg->http, port_r, error_r);
}

/* The network loop: io_engine's choice, unless MSTORE_LOOP says else. */
static enum ms_srv_loop loop_of(const struct ms_store_cfg *cfg)
{
	const char *e = getenv("MSTORE_LOOP");
	if (e != NULL && *e != '\0') {
		if (strcmp(e, "epoll") == 0)
			return MS_SRV_LOOP_EPOLL;
		if (strcmp(e, "uring") == 0)
			return MS_SRV_LOOP_URING;
		if (strcmp(e, "uring-oneshot") == 0)
			return MS_SRV_LOOP_URING_ONESHOT;
		msg_warn("config.ignored env=MSTORE_LOOP value=%s msg=\"none of "
			 "epoll, uring, uring-oneshot\"",
			 msg_q(e));
	}
	return cfg->io_engine == MS_ENGINE_PSYNC ? MS_SRV_LOOP_EPOLL
						 : MS_SRV_LOOP_URING;
}

static void on_signal(void *arg)
{
	struct daemon *d = arg;
	struct signalfd_siginfo si;

	while (read(d->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			reload(d);
			continue;
		}
		msg_info("stopping signal=%u msg=\"finishing the batch in "
			 "flight\"",
			 si.ssi_signo);
		ms_srv_stop(d->srv);
	}
}

static void on_log(void *arg)
{
	ms_ops_log_ready(arg);
}

/* --standby: apply what udsync recv appended; after a promote, watch the
   read-write log's completion fd. */
static void on_follow(void *arg)
{
	struct daemon *d = arg;
	uint64_t n;
	while (read(d->follow_fd, &n, sizeof(n)) == sizeof(n))
		;
	if (ms_ops_is_standby(d->ops)) {
		(void)ms_ops_standby_follow(d->ops);
		return;
	}
	if (!d->log_watched) {
		int lfd = ms_ops_event_fd(d->ops);
		if (lfd >= 0)
			ms_srv_watch(d->srv, lfd, on_log, d->ops);
		d->log_watched = 1;
	}
}

static void h_request(void *ctx, struct ms_conn *c,
		      const struct ms_proto_hdr *h, const uint8_t *body,
		      size_t len)
{
	ms_ops_request(ctx, c, h, body, len);
}

static void h_closed(void *ctx, struct ms_conn *c)
{
	ms_ops_closed(ctx, c);
}

static void h_tick(void *ctx)
{
	ms_ops_tick(ctx);
}

static uint64_t h_file_epoch(void *ctx)
{
	return ms_ops_file_epoch(ctx);
}

/*
 * The store's files belong to the user mstored runs as: after the drop
 * it must still create segments, lost+found files and index pages.
 */
static int drop_privileges(const char *user, const struct ms_store_cfg *cfg,
			   const char *index)
{
	uid_t uid;
	gid_t gid;

	if (user == NULL || getuid() != 0)
		return 0;
	if (ms_privs_lookup(user, &uid, &gid) < 0)
		return -1;
	const char *paths[] = { cfg->primary, cfg->secondary, index };
	for (size_t i = 0; i < 3; i++) {
		if (paths[i] != NULL &&
		    ms_privs_chown_tree(paths[i], uid, gid, 2) < 0) {
			msg_error("chown.failed path=%s user=%s error=%s",
				  msg_q(paths[i]), msg_q(user),
				  msg_q(strerror(errno)));
			return -1;
		}
	}
	/* the sockets too, so that the user's group can be let in */
	const char *socks[] = { cfg->socket, cfg->admin_socket };
	return ms_privs_drop(user, socks, 2);
}

int main(int argc, char **argv)
{
	struct ms_store_cfg cfg;
	struct daemon d = { .sigfd = -1, .follow_fd = -1 };
	const char *err;
	int opt, test_only = 0, standby = 0, ret = 1;
	static const struct option lopts[] = {
		{ "standby", no_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};

	ms_msg_init(argv[0]);
	while ((opt = getopt_long(argc, argv, "c:t", lopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			d.conf_path = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		case 's':
			standby = 1;
			break;
		default:
			fprintf(stderr, "usage: mstored -c mstore.conf [-t] "
					"[--standby]\n");
			return 2;
		}
	}
	if (d.conf_path == NULL || optind != argc) {
		fprintf(stderr, "usage: mstored -c mstore.conf [-t] "
				"[--standby]\n");
		return 2;
	}
	if (ms_store_cfg_load(d.conf_path, &cfg, &err) < 0) {
		msg_error("config.invalid error=%s", msg_q(err));
		return 1;
	}
	if (cfg.log == MS_LOG_SYSLOG)
		ms_msg_syslog(1);
	if (test_only) {
		printf("%s: ok\n", d.conf_path);
		ms_store_cfg_free(&cfg);
		return 0;
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	if ((standby ? ms_ops_open_standby(&cfg, &d.ops, &err)
		     : ms_ops_open(&cfg, &d.ops, &err)) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		goto out;
	}
	struct ms_srv_limits lim;
	limits_of(&cfg, &lim);
	d.cfg = &cfg;
	struct ms_srv_handler h = { h_request, h_closed, h_tick,
				    h_file_epoch };
	if (ms_srv_new(&lim, &h, d.ops, loop_of(&cfg), &d.srv) < 0 ||
	    ms_srv_listen(d.srv, cfg.socket, cfg.socket_mode, 0, &err) < 0 ||
	    ms_srv_listen(d.srv, cfg.admin_socket, cfg.admin_socket_mode, 1,
			  &err) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		goto out;
	}
	unsigned http_port = 0;
	if (cfg.http != NULL && sysapi_start(&d, &cfg, &http_port, &err) < 0) {
		msg_error("startup.failed error=%s", msg_q(err));
		goto out;
	}
	if (drop_privileges(cfg.user, &cfg, ms_ops_index_dir(d.ops)) < 0)
		goto out;
	ms_srv_watch(d.srv, d.sigfd, on_signal, &d);
	int lfd = ms_ops_event_fd(d.ops);
	if (lfd >= 0)
		ms_srv_watch(d.srv, lfd, on_log, d.ops);
	d.log_watched = !standby;
	if (standby) {
		struct itimerspec its = { { 0, 100000000 }, { 0, 100000000 } };
		d.follow_fd = timerfd_create(CLOCK_MONOTONIC,
					     TFD_NONBLOCK | TFD_CLOEXEC);
		if (d.follow_fd < 0 ||
		    timerfd_settime(d.follow_fd, 0, &its, NULL) < 0) {
			msg_error("startup.failed what=timerfd error=%s",
				  msg_q(strerror(errno)));
			goto out;
		}
		ms_srv_watch(d.srv, d.follow_fd, on_follow, &d);
	}
	ms_ops_set_srv(d.ops, d.srv);
	if (cfg.http != NULL)
		msg_info("http.listening port=%u address=%s admin=%s",
			 http_port, msg_q(cfg.http),
			 cfg.http_token_file ? "on" : "off");
	msg_info("ready socket=%s admin_socket=%s loop=%s role=%s",
		 msg_q(cfg.socket), msg_q(cfg.admin_socket),
		 msg_q(ms_srv_loop_name(d.srv)), standby ? "standby" : "primary");
	int run = ms_srv_run(d.srv);
	if (run < 0)
		msg_error("loop.failed error=%s", msg_q(strerror(-run)));
	else
		ret = 0;
	/* stopped: finish what is in flight, answer it, then go */
	ms_ops_drain(d.ops);
	msg_info("stopped");
out:
	ms_srv_free(&d.srv);
	ms_sysapi_free(&d.api);
	ms_ops_close(&d.ops);
	unlink(cfg.socket);
	unlink(cfg.admin_socket);
	ms_store_cfg_free(&cfg);
	if (d.sigfd >= 0)
		close(d.sigfd);
	if (d.follow_fd >= 0)
		close(d.follow_fd);
	return ret;
}
