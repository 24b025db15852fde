/*
 * udsync_recv.c - udsync recv, at the DR site: accept the pinned sender,
 * say where the DR store's durable log ends, take the log bytes, check
 * every record, write both DR copies, fdatasync, acknowledge
 * (docs/replication.md).  One sender at a time.  A record that fails a
 * check ends the session (nothing of it is written); the sender resumes
 * from the acknowledged position.  A write or sync that fails is fatal:
 * the restart recovers the DR store.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "privs.h"
#include "proto.h"
#include "store_cfg.h"
#include "udsync.h"

#define FLUSH_BYTES ((size_t)4 << 20)

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int send_ack(struct udsync_store *st, struct udsync_link *l,
		    const char **error_r)
{
	struct udsync_msg m = { .type = UDSYNC_ACK };
	uint64_t tl;
	udsync_store_pos(st, &m.u.ack.seg, &m.u.ack.off, &m.u.ack.seq, &tl);
	return udsync_link_send(l, &m, error_r);
}

static void send_error(struct udsync_link *l, const char *why)
{
	struct udsync_msg m = { .type = UDSYNC_ERROR };
	const char *ign;
	size_t n = strlen(why);
	m.u.error.s = why;
	m.u.error.len = (uint16_t)(n > UDSYNC_MAX_ERROR ? UDSYNC_MAX_ERROR : n);
	(void)udsync_link_send(l, &m, &ign);
}

/* Flush; a failure here is fatal (the restart recovers). */
static void flush_or_die(struct udsync_store *st)
{
	const char *err = "";
	if (udsync_store_flush(st, &err) < 0)
		msg_fatal("store.failed error=%s msg=\"exiting; the restart "
			  "recovers\"",
			  msg_q(err));
}

static int session(struct udsync_store *st, struct udsync_link *l,
		   uint64_t timeout_ms, const char **error_r)
{
	struct udsync_msg m = { .type = UDSYNC_RHELLO };
	struct ms_meta meta;
	int ret;

	if (udsync_store_meta(st, &meta)) {
		memcpy(m.u.rhello.store_id, meta.store_id, MS_STORE_ID_SIZE);
		m.u.rhello.has_store = 1;
	}
	udsync_store_resume(st, &m.u.rhello.seg, &m.u.rhello.off,
			    &m.u.rhello.seq, &m.u.rhello.timeline);
	if ((ret = udsync_link_send(l, &m, error_r)) < 0)
		return ret;
	uint64_t last_heard = mono_ms();
	for (;;) {
		int need_ack = 0;
		ret = udsync_link_recv(l, 1000, &m, error_r);
		if (ret == 0) {
			if (mono_ms() - last_heard > timeout_ms) {
				*error_r = "no word from the sender: link "
					   "timed out";
				return -ETIMEDOUT;
			}
			continue;
		}
		/* take everything that is already here, then one flush */
		while (ret > 0) {
			last_heard = mono_ms();
			switch (m.type) {
			case UDSYNC_META:
				ret = udsync_store_set_meta(st, m.u.meta,
							    MS_META_SIZE,
							    error_r);
				break;
			case UDSYNC_DATA:
				ret = udsync_store_data(st, m.u.data.seg,
							m.u.data.off,
							m.u.data.p,
							m.u.data.len, error_r);
				need_ack = 1;
				break;
			case UDSYNC_BEAT:
				need_ack = 1;
				break;
			case UDSYNC_ERROR:
				*error_r = ms_errf("the sender says: %.*s",
						   (int)m.u.error.len,
						   m.u.error.s);
				ret = MS_ECORRUPT;
				break;
			default:
				*error_r = ms_errf("unexpected %s message",
						   udsync_type_name(m.type));
				ret = MS_ECORRUPT;
			}
			if (ret < 0) {
				/* what was checked before is good: keep it */
				flush_or_die(st);
				send_error(l, *error_r);
				return ret;
			}
			if (udsync_store_queued(st) >= FLUSH_BYTES)
				break;
			ret = udsync_link_recv(l, 0, &m, error_r);
		}
		if (ret < 0) {
			flush_or_die(st);
			return ret;
		}
		flush_or_die(st);
		if (need_ack && (ret = send_ack(st, l, error_r)) < 0)
			return ret;
	}
}

/*
 * Root (with [store] user set) opens the DR store and binds, then the
 * copies are given to that user and recv becomes it: the standby
 * mstored runs as the same user and, once promoted, must write there.
 * Depth 2 from a copy's root reaches log/ and lost+found/ and their
 * files; the open descriptors (locks, positions, the head segment)
 * stay valid across the drop.
 */
static int drop_privileges(const struct ms_store_cfg *scfg,
			   const char **error_r)
{
	uid_t uid;
	gid_t gid;

	if (scfg->user == NULL || getuid() != 0)
		return 0;
	if (ms_privs_lookup(scfg->user, &uid, &gid) < 0) {
		*error_r = ms_errf("[store] user %s does not exist",
				   scfg->user);
		return -ENOENT;
	}
	const char *copies[] = { scfg->primary, scfg->secondary };
	for (size_t i = 0; i < 2; i++) {
		if (ms_privs_chown_tree(copies[i], uid, gid, 2) < 0) {
			int e = errno;
			*error_r = ms_errf("cannot give %s to %s: %s",
					   copies[i], scfg->user, strerror(e));
			return -e;
		}
	}
	if (ms_privs_drop(scfg->user, NULL, 0) < 0) {
		*error_r = ms_errf("cannot become %s", scfg->user);
		return -EPERM;
	}
	return 0;
}

int udsync_recv_run(const char *conf, const char **error_r)
{
	struct ms_store_cfg scfg;
	struct udsync_cfg ucfg;
	struct udsync_keys keys;
	struct udsync_store *st;
	int ret, lfd;

	if ((ret = ms_store_cfg_load(conf, &scfg, error_r)) < 0)
		return ret;
	if (scfg.log == MS_LOG_SYSLOG)
		ms_msg_syslog(1);
	if ((ret = udsync_cfg_load(conf, &ucfg, error_r)) < 0)
		return ret;
	if ((ret = udsync_keys_load(ucfg.key_file, ucfg.peer_key, &keys,
				    error_r)) < 0)
		return ret;
	if ((ret = udsync_store_open(scfg.primary, scfg.secondary, &st,
				     error_r)) < 0)
		return ret;
	if ((lfd = udsync_tcp_listen(ucfg.listen, error_r)) < 0)
		return lfd;
	if ((ret = drop_privileges(&scfg, error_r)) < 0)
		return ret;
	uint64_t seg, off, seq, tl;
	udsync_store_pos(st, &seg, &off, &seq, &tl);
	msg_info("listening address=%s store=%s segment=%llu offset=%llu "
		 "seq=%llu",
		 msg_q(ucfg.listen), msg_q(scfg.primary), (unsigned long long)seg,
		 (unsigned long long)off, (unsigned long long)seq);
	for (;;) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		char peer[INET6_ADDRSTRLEN + 8] = "?";
		const char *why = "";
		struct udsync_link l;
		int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			*error_r = ms_errf("accept: %s", strerror(errno));
			return -errno;
		}
		/* not garbage: accept4() filled it (via __SOCKADDR_ARG) */
		/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinary*) */
		if (sa.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr,
				  peer, sizeof(peer));
		else if (sa.ss_family == AF_INET6)
			inet_ntop(AF_INET6,
				  &((struct sockaddr_in6 *)&sa)->sin6_addr, peer,
				  sizeof(peer));
		struct timeval tv = { 10, 0 };
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		/* an ACK is a small write after a small write: with Nagle
		   it waits for the sender's delayed TCP ack (up to 40 ms),
		   which sync mode's replies then wait for too */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (udsync_link_init(&l, fd, 0, &keys, 10000, &why) < 0) {
			msg_warn("connection.refused peer=%s error=%s", msg_q(peer),
				 msg_q(why));
			udsync_link_free(&l);
			close(fd);
			continue;
		}
		msg_info("session.authenticated peer=%s", msg_q(peer));
		/* how it ended is in why; a store failure exits in it */
		(void)session(st, &l, ucfg.timeout, &why);
		udsync_store_pos(st, &seg, &off, &seq, &tl);
		msg_warn("session.ended peer=%s segment=%llu offset=%llu seq=%llu "
			 "error=%s",
			 msg_q(peer), (unsigned long long)seg,
			 (unsigned long long)off, (unsigned long long)seq,
			 msg_q(why));
		udsync_link_free(&l);
		close(fd);
	}
}
