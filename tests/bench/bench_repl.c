/*
 * bench-repl - udsync replication on loopback (docs/replication.md): how
 * fast the DR site gets the log, how far behind it is under a steady
 * LMTP load, what replication = sync costs, and how long a failover
 * takes.
 *
 * A pair per mode, new for each (scratch directories under $TMPDIR, as
 * the other benchmarks' mstored): the primary (mstored with both copies
 * and its defaults, mstore-lmtpd on a free 127.0.0.1 port, udsync send)
 * and the DR site (udsync recv into its own two copies, a standby
 * mstored --standby following them), udsync over 127.0.0.1 with keys
 * made here.  Users u0..u9.
 *
 * The load: 64 LMTP sessions (MS_BENCH_REPL_SESSIONS) in one epoll loop
 * in this process, each a closed loop of MAIL, RCPT, DATA (pipelined),
 * the 4 KiB message (a Message-ID per delivery, a base64 body LZ4 cannot
 * shrink), the 250 - delivery k of session i to u((i + k) % 10) - as
 * bench-lmtp does.  Warm-up MS_BENCH_SECONDS/10 (at least 0.3 s), then
 * the window of MS_BENCH_SECONDS (default 3).  Every 10 ms in the loop
 * the primary's STATUS is read on its admin socket: log.append_bytes,
 * repl.lag_records, repl.lag_bytes, repl.lag_ms (the age of the oldest
 * durable record the DR site has not acknowledged).
 *
 * The figures:
 *   async, streaming   msgs/s and the primary's append rate (MB/s of
 *                      records appended in the window); the rate the DR
 *                      site acknowledged in the same window (appended
 *                      minus the growth of the lag in bytes); lag p50,
 *                      p99, max in ms (of the 10 ms samples) and the
 *                      lag in records at the window's end; the time
 *                      the DR site needs to catch up once the load
 *                      stops.
 *   async, catch-up    udsync send stopped, the same load for the same
 *                      window (the raw append rate: nothing ships),
 *                      then udsync send started: the backlog's bytes
 *                      over the time until the lag is 0 is the
 *                      replication throughput with nothing else
 *                      running.  Then the DR copy is checked
 *                      byte-identical (mstore verify --against).
 *   sync               a new pair with replication = sync: the same
 *                      load; msgs/s as a ratio of async's.
 *   failover (RTO)     at the end of each mode's last window, with
 *                      deliveries in flight: kill -9 of mstored,
 *                      mstore-lmtpd and udsync send (the primary site
 *                      is lost), kill -9 of udsync recv, mstore promote
 *                      at the DR site, an APPEND there: the time from
 *                      the kill to the APPEND's reply.  In sync mode
 *                      the messages acknowledged by LMTP are then
 *                      counted at the DR site (RPO: none may miss).
 *
 * Targets (reported, not failed): replication keeps up with the full
 * append rate (the DR site acknowledged >= 95% of the window's bytes and
 * the catch-up rate is above the append rate), lag p99 < 100 ms, sync
 * >= 70% of async msgs/s, RTO < 5 s.  A delivery error, a DR copy that
 * is not byte-identical or a message lost in sync mode fails the run
 * (exit 1).  Exit 77 when a program is not built.  The load average is
 * printed before and after: on a shared machine every rate moves with
 * it; the lag and the ratios are the steadier figures.
 *
 * Environment: MS_BENCH_SECONDS (default 3), MS_BENCH_REPL_SESSIONS
 * (default 64), MSTORE_BUILD.  Every process started here is killed and
 * reaped before exit, on SIGINT and SIGTERM too (then the scratch
 * directories are left, as with MS_KEEP=1).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bproc.h"
#include "client.h"
#include "msd.h"
#include "msg.h"
#include "mstest.h"
#include "udsync.h"

#define NUSERS 10
#define MAX_SESS 256
#define MSG_SIZE 4096
#define DOMAIN "example.test"
#define IN_CAP 4096
#define SAMPLE_MS 10

static const char *build_dir(void)
{
	const char *b = getenv("MSTORE_BUILD");
	return b && *b ? b : "build";
}

/* ---- processes ---- */

/* every child still running, for the exit and signal paths */
static volatile pid_t kids[16];

static void kid_add(pid_t pid)
{
	for (size_t i = 0; i < MS_ARRAY_SIZE(kids); i++)
		if (kids[i] <= 0) {
			kids[i] = pid;
			return;
		}
}

static void kid_del(pid_t pid)
{
	for (size_t i = 0; i < MS_ARRAY_SIZE(kids); i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

static void kids_kill(void)
{
	for (size_t i = 0; i < MS_ARRAY_SIZE(kids); i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
}

static void on_fatal_signal(int sig)
{
	(void)sig;
	for (size_t i = 0; i < MS_ARRAY_SIZE(kids); i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	_exit(1);
}

/* bp_spawn, and the child joins kids. */
static pid_t spawn(char *const argv[], const char *logfile)
{
	pid_t pid = bp_spawn(argv, logfile);
	if (pid > 0)
		kid_add(pid);
	return pid;
}

static void stop(pid_t *pid, int sig)
{
	if (*pid <= 0)
		return;
	kill(*pid, sig);
	waitpid(*pid, NULL, 0);
	kid_del(*pid);
	*pid = -1;
}

/* Run argv to its end; its exit status (-1: did not run). */
static int run_wait(char *const argv[], const char *logfile)
{
	int status;
	pid_t pid = spawn(argv, logfile);
	if (pid < 0)
		return -1;
	if (waitpid(pid, &status, 0) != pid)
		status = -1;
	kid_del(pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- the pair ---- */

struct pair {
	int sync;
	int lmtp_port, udsync_port;
	struct msd pri;    /* mstored at the primary site */
	char dr[PATH_MAX]; /* the DR site's directory */
	char dr_conf[PATH_MAX + 32];
	char dr_sock[PATH_MAX + 32], dr_asock[PATH_MAX + 32];
	char log_lmtpd[PATH_MAX + 32], log_send[PATH_MAX + 32];
	char log_recv[PATH_MAX + 32], log_standby[PATH_MAX + 32];
	char log_tools[PATH_MAX + 32];
	pid_t lmtpd, send, recv, standby;
	struct ms_client *admin; /* the primary's admin socket */
};

struct status {
	uint64_t append_bytes, appends, durable_seq;
	uint64_t lag_records, lag_bytes, lag_ms, connected, dr_seq;
};

static int status_get(struct ms_client *c, struct status *st,
		      const char **error_r)
{
	struct ms_req q = {.op = MS_OP_STATUS};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter k;
	static const struct {
		const char *key;
		size_t off;
	} want[] = {
		{"log.append_bytes", offsetof(struct status, append_bytes)},
		{"log.appends", offsetof(struct status, appends)},
		{"log.durable_seq", offsetof(struct status, durable_seq)},
		{"repl.lag_records", offsetof(struct status, lag_records)},
		{"repl.lag_bytes", offsetof(struct status, lag_bytes)},
		{"repl.lag_ms", offsetof(struct status, lag_ms)},
		{"repl.connected", offsetof(struct status, connected)},
		{"repl.dr_seq", offsetof(struct status, dr_seq)},
	};
	int ret = ms_client_request(c, &q, &rep, error_r);
	if (ret < 0)
		return ret;
	memset(st, 0, sizeof(*st));
	ms_proto_iter_counters(&it, &rep.u.counters);
	while (ms_proto_next_counter(&it, &k) > 0)
		for (size_t i = 0; i < MS_ARRAY_SIZE(want); i++)
			if (k.key.len == strlen(want[i].key) &&
			    memcmp(k.key.s, want[i].key, k.key.len) == 0)
				*(uint64_t *)((char *)st + want[i].off) =
					k.value;
	return 0;
}

static int start_daemon(pid_t *pid, char *const argv[], const char *log,
			const char *ready_line, int port, const char *what)
{
	*pid = spawn(argv, log);
	if (*pid < 0) {
		printf("  %s: fork: %s\n", what, strerror(errno));
		return -1;
	}
	for (double end = bp_now() + 20; bp_now() < end; bp_sleep(0.01)) {
		if (waitpid(*pid, NULL, WNOHANG) == *pid) {
			kid_del(*pid);
			*pid = -1;
			printf("  %s exited at start; see %s\n", what, log);
			return -1;
		}
		if (ready_line == NULL && port == 0)
			return 0;
		if ((ready_line == NULL || bp_file_has(log, ready_line)) &&
		    (port == 0 || bp_port_answers(port)))
			return 0;
	}
	printf("  %s not ready within 20 s; see %s\n", what, log);
	return -1;
}

/* Wait until the DR site has acknowledged everything durable. */
static int wait_caught_up(struct pair *p, double timeout, struct status *st)
{
	const char *err = "";
	for (double end = bp_now() + timeout; bp_now() < end; bp_sleep(0.005)) {
		if (status_get(p->admin, st, &err) < 0) {
			printf("  STATUS: %s\n", err);
			return -1;
		}
		if (st->connected && st->lag_records == 0)
			return 0;
	}
	printf("  the DR site did not catch up within %.0f s (lag %llu "
	       "records); see %s, %s\n",
	       timeout, (unsigned long long)st->lag_records, p->log_send,
	       p->log_recv);
	return -1;
}

static int pair_start(struct pair *p, int sync)
{
	char pub_p[65], pub_d[65], key[PATH_MAX + 32], extra[PATH_MAX * 2];
	char bin_send[PATH_MAX], bin_lmtpd[PATH_MAX], bin_mstored[PATH_MAX];
	const char *err = "";
	struct status st;

	memset(p, 0, sizeof(*p));
	p->lmtpd = p->send = p->recv = p->standby = -1;
	p->sync = sync;
	p->lmtp_port = bp_free_port();
	p->udsync_port = bp_free_port();
	snprintf(p->dr, sizeof(p->dr), "%s", mst_tmpdir("repl-dr"));
	snprintf(key, sizeof(key), "%s/udsync.key", p->dr);
	if (udsync_keygen(key, pub_d, &err) < 0) {
		printf("  udsync keygen %s: %s\n", key, err);
		return -1;
	}
	/* the primary's key: its own directory (msd_setup makes the
	   primary's, with the config that names the key, below) */
	char *tmp = mst_tmpdir("repl-keys");
	snprintf(key, sizeof(key), "%s/udsync.key", tmp);
	if (udsync_keygen(key, pub_p, &err) < 0) {
		printf("  udsync keygen %s: %s\n", key, err);
		return -1;
	}
	snprintf(extra, sizeof(extra),
		 "replication = %s\nsync_timeout = 30s\n"
		 "\n[lmtp]\nlisten = 127.0.0.1:%d\nhostname = lmtp.%s\n"
		 "domains = %s\n"
		 "\n[udsync]\nkey_file = %s\npeer_key = %s\n"
		 "connect = 127.0.0.1:%d\nreconnect_delay = 100ms\n",
		 sync ? "sync" : "async", p->lmtp_port, DOMAIN, DOMAIN, key,
		 pub_d, p->udsync_port);
	msd_setup(&p->pri, sync ? "repl-pri-sync" : "repl-pri", extra);
	snprintf(p->dr_conf, sizeof(p->dr_conf), "%s/mstore.conf", p->dr);
	snprintf(p->dr_sock, sizeof(p->dr_sock), "%s/s.sock", p->dr);
	snprintf(p->dr_asock, sizeof(p->dr_asock), "%s/a.sock", p->dr);
	FILE *f = fopen(p->dr_conf, "w");
	if (f == NULL) {
		printf("  %s: %s\n", p->dr_conf, strerror(errno));
		return -1;
	}
	fprintf(f,
		"[store]\nprimary = primary\nsecondary = secondary\n"
		"index = index\nsocket = s.sock\nadmin_socket = a.sock\n"
		"\n[udsync]\nkey_file = udsync.key\npeer_key = %s\n"
		"listen = 127.0.0.1:%d\n",
		pub_p, p->udsync_port);
	if (fclose(f) != 0) {
		printf("  %s: %s\n", p->dr_conf, strerror(errno));
		return -1;
	}
	snprintf(p->log_lmtpd, sizeof(p->log_lmtpd), "%s/lmtpd.log",
		 p->pri.dir);
	snprintf(p->log_send, sizeof(p->log_send), "%s/send.log", p->pri.dir);
	snprintf(p->log_recv, sizeof(p->log_recv), "%s/recv.log", p->dr);
	snprintf(p->log_standby, sizeof(p->log_standby), "%s/standby.log",
		 p->dr);
	snprintf(p->log_tools, sizeof(p->log_tools), "%s/tools.log", p->dr);

	msd_start(&p->pri);  /* exits if it cannot */
	kid_add(p->pri.pid); /* for the signal path; msd reaps it */
	p->admin = msd_connect(&p->pri, NULL);
	snprintf(bin_send, sizeof(bin_send), "%s/udsync", build_dir());
	snprintf(bin_lmtpd, sizeof(bin_lmtpd), "%s/mstore-lmtpd", build_dir());
	snprintf(bin_mstored, sizeof(bin_mstored), "%s/mstored", build_dir());
	char *recv_argv[] = {bin_send, "-c", p->dr_conf, "recv", NULL};
	char *send_argv[] = {bin_send, "-c", p->pri.conf, "send", NULL};
	char *lmtpd_argv[] = {bin_lmtpd, "-c", p->pri.conf, NULL};
	char *standby_argv[] = {bin_mstored, "-c", p->dr_conf, "--standby",
				NULL};
	/* udsync first: in sync mode USER_CREATE waits for the DR site */
	if (start_daemon(&p->recv, recv_argv, p->log_recv, NULL, p->udsync_port,
			 "udsync recv") < 0 ||
	    start_daemon(&p->send, send_argv, p->log_send, NULL, 0,
			 "udsync send") < 0 ||
	    wait_caught_up(p, 30, &st) < 0)
		return -1;
	for (int u = 0; u < NUSERS; u++) {
		char user[16];
		snprintf(user, sizeof(user), "u%d", u);
		int ret = msd_user_add(&p->pri, user);
		if (ret < 0) {
			printf("  USER_CREATE %s: %s\n", user,
			       ms_strerror(ret));
			return -1;
		}
	}
	if (wait_caught_up(p, 30, &st) < 0 ||
	    start_daemon(&p->standby, standby_argv, p->log_standby,
			 "event=ready ", 0, "mstored --standby") < 0 ||
	    start_daemon(&p->lmtpd, lmtpd_argv, p->log_lmtpd,
			 "event=store.connected", p->lmtp_port,
			 "mstore-lmtpd") < 0)
		return -1;
	return 0;
}

static void pair_stop(struct pair *p)
{
	ms_client_close(&p->admin);
	stop(&p->lmtpd, SIGTERM);
	stop(&p->send, SIGKILL);
	stop(&p->recv, SIGKILL);
	stop(&p->standby, SIGTERM);
	kid_del(p->pri.pid);
	msd_stop(&p->pri);
	mst_rmtree(p->pri.dir);
	mst_rmtree(p->dr);
}

/* ---- the LMTP load ---- */

enum sess_state {
	S_CONNECT,
	S_GREET,
	S_LHLO,
	S_ENVELOPE,
	S_DATA,
	S_DONE
};

struct sess {
	int fd, idx, events;
	enum sess_state state;
	char in[IN_CAP];
	size_t inlen;
	const char *out;
	size_t outlen, outoff;
	char cmd[256];
	int k; /* replies so far in this phase */
	int rcpt;
	char *msg; /* the message, then ".\r\n" */
	size_t msglen;
	uint64_t seq;
};

struct gen {
	struct sess s[MAX_SESS];
	int nsess, ep, port;
	int stopping;
	uint64_t acked, win_acked, errors;
	uint64_t per_user[NUSERS];
	char first_error[256];
};

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#define MSGID_FMT "Message-ID: <%020llu.%03d@bench." DOMAIN ">\r\n"

static char *msg_make(int idx, uint32_t size, size_t *len_r)
{
	char *m = ms_malloc(size + 3);
	int n = snprintf(m, size,
			 MSGID_FMT "From: <bench@" DOMAIN ">\r\n"
				   "To: <list@" DOMAIN ">\r\n"
				   "Subject: bench-repl session %d\r\n"
				   "MIME-Version: 1.0\r\n"
				   "Content-Type: application/octet-stream\r\n"
				   "Content-Transfer-Encoding: base64\r\n\r\n",
			 0ULL, idx, idx);
	uint64_t rnd = 0x9e3779b97f4a7c15ULL * (uint64_t)(idx + 1) + size;
	size_t pos = (size_t)n;
	while (pos < size) {
		size_t room = size - pos;
		size_t line = room > 80 ? 76 : room > 78 ? 40 : room - 2;
		for (size_t i = 0; i < line; i++)
			m[pos + i] = b64[mst_rand(&rnd) & 63];
		pos += line;
		m[pos++] = '\r';
		m[pos++] = '\n';
	}
	memcpy(m + size, ".\r\n", 3);
	*len_r = size + 3;
	return m;
}

static void sess_close(struct gen *g, struct sess *s)
{
	if (s->fd >= 0) {
		epoll_ctl(g->ep, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
		s->fd = -1;
	}
	s->state = S_DONE;
}

static void sess_events(struct gen *g, struct sess *s, int want)
{
	if (s->fd < 0 || want == s->events)
		return;
	struct epoll_event ev = {.events = (uint32_t)want, .data.ptr = s};
	epoll_ctl(g->ep, EPOLL_CTL_MOD, s->fd, &ev);
	s->events = want;
}

static void sess_error(struct gen *g, struct sess *s, const char *what,
		       const char *line)
{
	if (!g->stopping) {
		g->errors++;
		if (g->first_error[0] == '\0')
			snprintf(g->first_error, sizeof(g->first_error),
				 "session %d: %s%s", s->idx, what, line);
	}
	sess_close(g, s);
}

static void sess_flush(struct gen *g, struct sess *s)
{
	while (s->outoff < s->outlen) {
		ssize_t w = send(s->fd, s->out + s->outoff,
				 s->outlen - s->outoff, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			sess_events(g, s, EPOLLIN | EPOLLOUT);
			return;
		}
		if (w < 0) {
			sess_error(g, s, "send: ", strerror(errno));
			return;
		}
		s->outoff += (size_t)w;
	}
	sess_events(g, s, EPOLLIN);
}

static void sess_send(struct gen *g, struct sess *s, const char *p, size_t len)
{
	s->out = p;
	s->outlen = len;
	s->outoff = 0;
	sess_flush(g, s);
}

/* MAIL, RCPT, DATA in one write (mstore-lmtpd offers PIPELINING). */
static void delivery_start(struct gen *g, struct sess *s)
{
	char line[128];
	s->seq++;
	int n = snprintf(line, sizeof(line), MSGID_FMT,
			 (unsigned long long)s->seq, s->idx);
	memcpy(s->msg, line, (size_t)n);
	s->rcpt = (int)(((uint64_t)s->idx + s->seq) % NUSERS);
	n = snprintf(s->cmd, sizeof(s->cmd),
		     "MAIL FROM:<bench@" DOMAIN ">\r\n"
		     "RCPT TO:<u%d@" DOMAIN ">\r\nDATA\r\n",
		     s->rcpt);
	s->k = 0;
	s->state = S_ENVELOPE;
	sess_send(g, s, s->cmd, (size_t)n);
}

static void on_reply(struct gen *g, struct sess *s, int code, const char *line)
{
	switch (s->state) {
	case S_GREET:
		if (code != 220) {
			sess_error(g, s, "greeting: ", line);
			break;
		}
		s->state = S_LHLO;
		sess_send(g, s, "LHLO bench." DOMAIN "\r\n",
			  sizeof("LHLO bench." DOMAIN "\r\n") - 1);
		break;
	case S_LHLO:
		if (code != 250) {
			sess_error(g, s, "LHLO: ", line);
			break;
		}
		delivery_start(g, s);
		break;
	case S_ENVELOPE:
		if (code != (s->k == 2 ? 354 : 250)) {
			sess_error(g, s, "envelope: ", line);
			break;
		}
		if (++s->k == 3) {
			s->state = S_DATA;
			sess_send(g, s, s->msg, s->msglen);
		}
		break;
	case S_DATA:
		if (code != 250) {
			sess_error(g, s, "after DATA: ", line);
			break;
		}
		g->acked++;
		g->win_acked++;
		g->per_user[s->rcpt]++;
		if (g->stopping)
			sess_close(g, s);
		else
			delivery_start(g, s);
		break;
	default:
		sess_error(g, s, "unexpected reply: ", line);
		break;
	}
}

static void sess_read(struct gen *g, struct sess *s)
{
	for (;;) {
		if (s->inlen == sizeof(s->in) - 1) {
			sess_error(g, s, "reply line too long", "");
			return;
		}
		ssize_t r = recv(s->fd, s->in + s->inlen,
				 sizeof(s->in) - 1 - s->inlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			sess_error(g, s, "connection closed by the server: ",
				   r < 0 ? strerror(errno) : "EOF");
			return;
		}
		s->inlen += (size_t)r;
		s->in[s->inlen] = '\0';
		char *p = s->in, *nl;
		while (s->fd >= 0 &&
		       (nl = memchr(p, '\n', s->inlen - (size_t)(p - s->in))) !=
			       NULL) {
			*nl = '\0';
			if (nl > p && nl[-1] == '\r')
				nl[-1] = '\0';
			if (strlen(p) < 3 || !isdigit((unsigned char)p[0])) {
				sess_error(g, s, "bad reply line: ", p);
				return;
			}
			if (p[3] != '-')
				on_reply(g, s, atoi(p), p);
			p = nl + 1;
		}
		if (s->fd < 0)
			return;
		s->inlen -= (size_t)(p - s->in);
		memmove(s->in, p, s->inlen);
	}
}

static int sess_open(struct gen *g, struct sess *s)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)g->port)};
	int one = 1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->state = S_CONNECT;
	s->events = EPOLLOUT;
	s->inlen = 0;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
	if (epoll_ctl(g->ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
		close(s->fd);
		s->fd = -1;
		return -1;
	}
	if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
	    errno != EINPROGRESS) {
		sess_close(g, s);
		return -1;
	}
	return 0;
}

static int gen_init(struct gen *g, int nsess, int port)
{
	memset(g, 0, sizeof(*g));
	g->nsess = nsess;
	g->port = port;
	g->ep = epoll_create1(EPOLL_CLOEXEC);
	if (g->ep < 0)
		return -1;
	for (int i = 0; i < nsess; i++) {
		struct sess *s = &g->s[i];
		s->idx = i;
		s->fd = -1;
		s->msg = msg_make(i, MSG_SIZE, &s->msglen);
		if (sess_open(g, s) < 0)
			return -1;
	}
	return 0;
}

/* One turn of the loop, waiting at most ms. */
static void gen_turn(struct gen *g, int ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(g->ep, evs, 64, ms);
	for (int i = 0; i < n; i++) {
		struct sess *s = evs[i].data.ptr;
		if (s->fd < 0)
			continue;
		if (s->state == S_CONNECT) {
			int e = 0;
			socklen_t len = sizeof(e);
			getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &len);
			if (e != 0) {
				sess_error(g, s, "connect: ", strerror(e));
				continue;
			}
			s->state = S_GREET;
			sess_events(g, s, EPOLLIN);
			continue;
		}
		if (evs[i].events & EPOLLOUT)
			sess_flush(g, s);
		if (s->fd >= 0 &&
		    (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			sess_read(g, s);
	}
}

static int gen_active(const struct gen *g)
{
	int n = 0;
	for (int i = 0; i < g->nsess; i++)
		n += g->s[i].fd >= 0;
	return n;
}

/* Stop: no new delivery; those in flight finish (drain) or not. */
static void gen_end(struct gen *g, int drain)
{
	g->stopping = 1;
	for (double end = bp_now() + 30;
	     drain && gen_active(g) > 0 && bp_now() < end;)
		gen_turn(g, 5);
	for (int i = 0; i < g->nsess; i++) {
		sess_close(g, &g->s[i]);
		free(g->s[i].msg);
		g->s[i].msg = NULL;
	}
	close(g->ep);
}

/* ---- one load window with lag samples ---- */

struct window {
	double secs;        /* its length */
	uint64_t msgs;      /* acknowledged in it */
	uint64_t app_bytes; /* appended in it (log.append_bytes) */
	uint64_t lag_bytes0, lag_bytes1;
	uint64_t lag_rec_end;
	float *lag; /* ms, a sample per SAMPLE_MS */
	size_t nlag, caplag;
};

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static double pct(const struct window *w, double q)
{
	if (w->nlag == 0)
		return 0;
	size_t i = (size_t)(q * (double)(w->nlag - 1) + 0.5);
	return w->lag[i];
}

/*
 * Warm-up, then the window, sampling STATUS; then stop (drain: let the
 * deliveries in flight finish; else leave them in flight for a kill).
 * 0, or -1 when the load failed.
 */
static int run_window(struct pair *p, struct gen *g, double secs, int drain,
		      struct window *w)
{
	struct status st0, st;
	const char *err = "";
	double warm = secs / 10 < 0.3 ? 0.3 : secs / 10;
	double t = bp_now(), t_next = 0;
	int ret = 0;

	memset(w, 0, sizeof(*w));
	while (bp_now() < t + warm && g->errors == 0)
		gen_turn(g, 5);
	if (status_get(p->admin, &st0, &err) < 0) {
		printf("  STATUS: %s\n", err);
		return -1;
	}
	g->win_acked = 0;
	double w0 = bp_now(), w1 = w0 + secs;
	for (double n = w0; n < w1 && g->errors == 0; n = bp_now()) {
		gen_turn(g, 2);
		if (bp_now() < t_next)
			continue;
		t_next = bp_now() + SAMPLE_MS / 1e3;
		if (status_get(p->admin, &st, &err) < 0) {
			printf("  STATUS: %s\n", err);
			ret = -1;
			break;
		}
		if (w->nlag == w->caplag) {
			w->caplag = w->caplag ? w->caplag * 2 : 1024;
			w->lag = realloc(w->lag, w->caplag * sizeof(*w->lag));
			if (w->lag == NULL)
				abort();
		}
		w->lag[w->nlag++] = (float)st.lag_ms;
	}
	w->secs = bp_now() - w0;
	w->msgs = g->win_acked;
	if (ret == 0 && status_get(p->admin, &st, &err) < 0) {
		printf("  STATUS: %s\n", err);
		ret = -1;
	}
	if (ret == 0) {
		w->app_bytes = st.append_bytes - st0.append_bytes;
		w->lag_bytes0 = st0.lag_bytes;
		w->lag_bytes1 = st.lag_bytes;
		w->lag_rec_end = st.lag_records;
	}
	gen_end(g, drain);
	qsort(w->lag, w->nlag, sizeof(*w->lag), cmp_float);
	if (g->errors > 0) {
		printf("  %llu delivery errors; the first: %s\n",
		       (unsigned long long)g->errors, g->first_error);
		ret = -1;
	}
	return ret;
}

/* ---- failover ---- */

/*
 * The primary site is lost (kill -9 of mstored, mstore-lmtpd, udsync
 * send) with deliveries in flight; udsync recv is stopped; mstore
 * promote; an APPEND at the DR site.  Seconds from the kill to the
 * APPEND's reply, or -1.
 */
static double failover(struct pair *p, struct gen *g)
{
	char bin[PATH_MAX];
	const char *err = "";
	struct ms_client *c = NULL;
	double t0 = bp_now();

	kid_del(p->pri.pid);
	msd_kill(&p->pri);
	stop(&p->lmtpd, SIGKILL);
	stop(&p->send, SIGKILL);
	gen_end(g, 0);
	ms_client_close(&p->admin);
	stop(&p->recv, SIGKILL);
	snprintf(bin, sizeof(bin), "%s/mstore", build_dir());
	char *argv[] = {bin, "-c", p->dr_conf, "promote", NULL};
	int rc = run_wait(argv, p->log_tools);
	if (rc != 0) {
		printf("  mstore promote exited %d; see %s\n", rc,
		       p->log_tools);
		return -1;
	}
	struct ms_placement pl = {.mailbox = MS_PSTR("INBOX")};
	struct ms_req q = {.op = MS_OP_APPEND};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_append_result r = {0};
	static const char body[] = "Subject: after failover\r\n\r\nhello\r\n";
	q.u.append.body = (const uint8_t *)body;
	q.u.append.body_len = sizeof(body) - 1;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	if (ms_client_connect(p->dr_sock, 10000, &c, &err) < 0 ||
	    ms_client_hello(c, "u0", &err) < 0 ||
	    ms_client_request(c, &q, &rep, &err) < 0) {
		printf("  APPEND at the DR site: %s\n", err);
		ms_client_close(&c);
		return -1;
	}
	ms_proto_iter_results(&it, &rep.u.append);
	if (ms_proto_next_result(&it, &r) != 1 || r.status != 0) {
		printf("  APPEND at the DR site refused: %s\n",
		       ms_strerror(r.status));
		ms_client_close(&c);
		return -1;
	}
	double rto = bp_now() - t0;
	ms_client_close(&c);
	return rto;
}

/* Messages in u's INBOX at the DR site (the promoted standby). */
static long long dr_count(struct pair *p, int u)
{
	char user[16];
	const char *err = "";
	struct ms_client *c = NULL;
	struct ms_req q = {.op = MS_OP_MBOX_STATUS};
	struct ms_reply rep;
	long long n = -1;
	snprintf(user, sizeof(user), "u%d", u);
	q.u.mbox.name = MS_PSTR("INBOX");
	if (ms_client_connect(p->dr_sock, 10000, &c, &err) == 0 &&
	    ms_client_hello(c, user, &err) == 0 &&
	    ms_client_request(c, &q, &rep, &err) == 0)
		n = rep.u.mbox.messages;
	else
		printf("  MBOX_STATUS %s at the DR site: %s\n", user, err);
	ms_client_close(&c);
	return n;
}

/* ---- the run ---- */

struct mode_result {
	int ok;
	double mps, app_mbs, shipped_mbs, p50, p99, pmax, drain_s;
	uint64_t lag_rec_end;
	double raw_mbs, catchup_mbs, catchup_s, backlog_mb;
	double rto;
	long long lost;
};

static int check_identical(struct pair *p)
{
	char bin[PATH_MAX], logf[PATH_MAX + 32];
	snprintf(bin, sizeof(bin), "%s/mstore", build_dir());
	snprintf(logf, sizeof(logf), "%s/verify.log", p->dr);
	char *argv[] = {bin,
			"verify",
			p->pri.primary,
			"--secondary",
			p->pri.secondary,
			"--no-index",
			"--against",
			NULL,
			NULL};
	char dr_primary[PATH_MAX + 32];
	snprintf(dr_primary, sizeof(dr_primary), "%s/primary", p->dr);
	argv[7] = dr_primary;
	int rc = run_wait(argv, logf);
	if (rc != 0 || !bp_file_has(logf, "byte-identical")) {
		printf("  mstore verify --against: exit %d, not byte-identical; "
		       "see %s\n",
		       rc, logf);
		return -1;
	}
	return 0;
}

static int run_mode(int sync, int nsess, double secs, struct mode_result *m)
{
	struct pair p;
	struct gen *g = ms_calloc(1, sizeof(*g));
	struct window w = {0};
	struct status st;
	const char *mode = sync ? "sync" : "async";
	int ret = -1;

	memset(m, 0, sizeof(*m));
	m->lost = -1;
	if (pair_start(&p, sync) < 0)
		goto out;
	/* streaming under load */
	if (gen_init(g, nsess, p.lmtp_port) < 0) {
		printf("  %s: the load could not start: %s\n", mode,
		       strerror(errno));
		goto out;
	}
	int last = sync; /* sync: this window ends in the failover */
	if (run_window(&p, g, secs, !last, &w) < 0)
		goto out;
	m->mps = (double)w.msgs / w.secs;
	m->app_mbs = (double)w.app_bytes / w.secs / 1e6;
	int64_t shipped = (int64_t)w.app_bytes -
			  ((int64_t)w.lag_bytes1 - (int64_t)w.lag_bytes0);
	m->shipped_mbs = (double)shipped / w.secs / 1e6;
	m->p50 = pct(&w, 0.5);
	m->p99 = pct(&w, 0.99);
	m->pmax = pct(&w, 1.0);
	m->lag_rec_end = w.lag_rec_end;
	if (!last) {
		double t = bp_now();
		if (wait_caught_up(&p, 60, &st) < 0)
			goto out;
		m->drain_s = bp_now() - t;
		/* the backlog: no udsync send while the same load runs */
		stop(&p.send, SIGKILL);
		free(w.lag);
		memset(&w, 0, sizeof(w));
		if (gen_init(g, nsess, p.lmtp_port) < 0 ||
		    run_window(&p, g, secs, 1, &w) < 0)
			goto out;
		m->raw_mbs = (double)w.app_bytes / w.secs / 1e6;
		if (status_get(p.admin, &st, &(const char *){""}) < 0)
			goto out;
		m->backlog_mb = (double)st.lag_bytes / 1e6;
		char bin[PATH_MAX];
		snprintf(bin, sizeof(bin), "%s/udsync", build_dir());
		char *send_argv[] = {bin, "-c", p.pri.conf, "send", NULL};
		t = bp_now();
		if (start_daemon(&p.send, send_argv, p.log_send, NULL, 0,
				 "udsync send") < 0 ||
		    wait_caught_up(&p, 120, &st) < 0)
			goto out;
		m->catchup_s = bp_now() - t;
		m->catchup_mbs = m->backlog_mb / m->catchup_s;
		if (check_identical(&p) < 0)
			goto out;
		/* then the failover, under the same load */
		free(w.lag);
		memset(&w, 0, sizeof(w));
		if (gen_init(g, nsess, p.lmtp_port) < 0 ||
		    run_window(&p, g, secs / 3, 0, &w) < 0)
			goto out;
	}
	uint64_t per_user[NUSERS];
	memcpy(per_user, g->per_user, sizeof(per_user));
	m->rto = failover(&p, g);
	if (m->rto < 0)
		goto out;
	if (sync) {
		/* every delivery LMTP acknowledged is at the DR site (the
		   last window's; the users were empty before it, plus the
		   one APPEND to u0) */
		m->lost = 0;
		for (int u = 0; u < NUSERS; u++) {
			long long n = dr_count(&p, u);
			long long want = (long long)per_user[u] + (u == 0);
			if (n < 0)
				goto out;
			if (n < want)
				m->lost += want - n;
		}
		if (m->lost > 0) {
			printf("  sync: %lld acknowledged deliveries missing "
			       "at the DR site\n",
			       m->lost);
			goto out;
		}
	}
	m->ok = 1;
	ret = 0;
out:
	if (ret < 0)
		printf("  %s: FAILED (logs under %s and %s, kept with "
		       "MS_KEEP=1)\n",
		       mode, p.pri.dir, p.dr);
	free(w.lag);
	free(g);
	if (ret == 0)
		pair_stop(&p);
	else {
		kid_del(p.pri.pid);
		kids_kill();
		msd_kill(&p.pri);
	}
	return ret;
}

int main(void)
{
	double secs, nsess_d;
	char bin[PATH_MAX];
	struct mode_result a, s;
	int fails = 0;

	if (mst_env_double("bench-repl", "MS_BENCH_SECONDS", 3, 0.1, 3600,
			   &secs) < 0 ||
	    mst_env_double("bench-repl", "MS_BENCH_REPL_SESSIONS", 64, 1,
			   MAX_SESS, &nsess_d) < 0)
		return 1;
	int nsess = (int)nsess_d;
	static const char *const progs[] = {"mstored", "mstore-lmtpd", "udsync",
					    "mstore"};
	for (size_t i = 0; i < MS_ARRAY_SIZE(progs); i++) {
		snprintf(bin, sizeof(bin), "%s/%s", build_dir(), progs[i]);
		if (access(bin, X_OK) != 0) {
			char why[PATH_MAX + 64];
			snprintf(why, sizeof(why), "%s is not built", bin);
			mst_skip(why);
		}
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "bench-repl: libsodium failed to initialise\n");
		return 1;
	}
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGPIPE, SIG_IGN);
	atexit(kids_kill);

	printf("bench-repl: udsync on loopback, %d LMTP sessions, %d B "
	       "messages, 1 recipient, window %.1f s\n",
	       nsess, MSG_SIZE, secs);
	bp_print_load("before");
	if (run_mode(0, nsess, secs, &a) < 0)
		fails++;
	if (run_mode(1, nsess, secs, &s) < 0)
		fails++;
	bp_print_load("after");

	printf("\n%-22s %9s %9s %9s %8s %8s %8s %9s %8s\n", "mode", "msgs/s",
	       "app MB/s", "DR MB/s", "lag p50", "lag p99", "lag max",
	       "lag@end", "RTO s");
	const struct mode_result *r[2] = {&a, &s};
	for (int i = 0; i < 2; i++) {
		if (!r[i]->ok) {
			printf("%-22s FAILED\n", i ? "sync" : "async");
			continue;
		}
		printf("%-22s %9.0f %9.2f %9.2f %6.1fms %6.1fms %6.1fms "
		       "%9llu %8.3f\n",
		       i ? "sync" : "async, streaming", r[i]->mps,
		       r[i]->app_mbs, r[i]->shipped_mbs, r[i]->p50, r[i]->p99,
		       r[i]->pmax, (unsigned long long)r[i]->lag_rec_end,
		       r[i]->rto);
	}
	if (a.ok) {
		printf("%-22s %9s %9.2f %9s (udsync send stopped: the raw "
		       "append rate)\n",
		       "async, no shipping", "", a.raw_mbs, "");
		printf("%-22s %9s %9s %9.2f (%.1f MB backlog in %.2f s, no "
		       "load)\n",
		       "async, catch-up", "", "", a.catchup_mbs, a.backlog_mb,
		       a.catchup_s);
		printf("async: the DR site caught up %.3f s after the load "
		       "stopped; DR byte-identical (mstore verify --against)\n",
		       a.drain_s);
	}
	if (s.ok)
		printf("sync: RPO 0 (every LMTP-acknowledged delivery of the "
		       "last window at the DR site after promote)\n");

	printf("\nratios and targets:\n");
	if (a.ok) {
		double keep = a.app_mbs > 0 ? a.shipped_mbs / a.app_mbs : 0;
		double head = a.raw_mbs > 0 ? a.catchup_mbs / a.raw_mbs : 0;
		printf("  DR acknowledged / appended (streaming)   %6.2f  "
		       "(target >= 0.95) %s\n",
		       keep, keep >= 0.95 ? "met" : "MISSED");
		printf("  catch-up rate / raw append rate          %6.2f  "
		       "(target > 1: keeps up with the full rate) %s\n",
		       head, head > 1 ? "met" : "MISSED");
		printf("  async lag p99                            %6.1f ms "
		       "(target < 100 ms) %s\n",
		       a.p99, a.p99 < 100 ? "met" : "MISSED");
	}
	if (a.ok && s.ok) {
		double ratio = a.mps > 0 ? s.mps / a.mps : 0;
		printf("  sync msgs/s / async msgs/s               %6.2f  "
		       "(target >= 0.70) %s\n",
		       ratio, ratio >= 0.7 ? "met" : "MISSED");
	}
	for (int i = 0; i < 2; i++)
		if (r[i]->ok)
			printf("  RTO (%-5s kill -9 to APPEND at DR)      %6.3f s  "
			       "(target < 5 s) %s\n",
			       i ? "sync," : "async,", r[i]->rto,
			       r[i]->rto < 5 ? "met" : "MISSED");
	return fails ? 1 : 0;
}
