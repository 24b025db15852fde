/*
 * bench-imap - the same IMAP workload against Dovecot on the mstore
 * plugin (mstored + lib20_mstore_plugin.so), Dovecot on mdbox and
 * Dovecot on maildir, in one run, on the same machine, with the same
 * load, and the ratios mstore/mdbox and mstore/maildir.
 *
 * The rows (sizes from the environment, defaults in brackets):
 *   body      FETCH 1:* BODY.PEEK[] over BODY_MSGS [2000] messages of
 *             BODY_SIZE [64 KiB]: MB/s of message bytes received
 *   envelope  FETCH 1:* (FLAGS ENVELOPE) over ENV_MSGS [10000] messages
 *             of 2 KiB: messages/s (and ms per FETCH)
 *   select    SELECT INBOX of SELECT_MSGS [100000] messages of 1 KiB,
 *             the first SELECT after a LOGIN, Dovecot's index warm
 *             (the median of the rounds; the servers' rounds
 *             alternate, one each in turn)
 *   login     that LOGIN (information: it is where the plugin asks the
 *             store for the user's folders)
 *   cold      the first LOGIN + SELECT of that mailbox ever, with no
 *             Dovecot index yet: mstore pulls every message's metadata
 *             from the store, maildir scans cur/ and writes its
 *             uidlist and index; not measured for mdbox (doveadm
 *             import, which filled it, wrote its index: mdbox has no
 *             index-less state short of a rebuild)
 *   append    APPEND_CLIENTS [16] sessions, each LOGINed as its own
 *             user, each a closed loop of APPEND INBOX of APPEND_SIZE
 *             [4 KiB] (LITERAL+ when offered: one write per APPEND);
 *             messages/s, p50/p99 per APPEND.  No mailbox is selected
 *             (a client saving to Sent, a migration); with
 *             APPEND_SELECT=1 INBOX is selected first, so each APPEND
 *             also syncs the session's view (EXISTS)
 *   copy      3 rounds of UID COPY 1:* of the envelope row's INBOX into
 *             a new folder and UID MOVE 1:* of that folder into another
 *             (then both deleted, untimed): messages copied or moved per
 *             second of those two commands (information, no target)
 *   store     3 rounds of UID STORE +FLAGS (\Flagged) on every other
 *             message of the envelope row's INBOX and -FLAGS back:
 *             messages changed per second (information, no target)
 *   status    STATUS (MESSAGES UNSEEN UIDNEXT) of each of 50 folders
 *             (2 messages each, made over IMAP first, untimed) in
 *             turn, none selected: STATUS commands per second
 *             (information, no target)
 *   lstatus   LIST "" "bstat-*" RETURN (STATUS (MESSAGES UNSEEN
 *             UIDNEXT)) of those folders: ms per command (information,
 *             no target)
 * A single-session row repeats its command (after untimed warm-up
 * rounds that let Dovecot fill its cache) until MS_BENCH_SECONDS have
 * passed, at least once; every round is checked (the number of FETCH
 * responses, the bytes of BODY[] literals, EXISTS).  The append row
 * runs warm-up (MS_BENCH_SECONDS/10, at least 0.3 s), a window of
 * MS_BENCH_SECONDS, then drains; afterwards every user's STATUS
 * MESSAGES must equal the APPENDs that got OK.
 *
 * The messages: headers (Message-ID, Date, From, To, Cc, Subject,
 * MIME) and lines of base64 characters from a seeded generator, CRLF,
 * exactly the row's size; the same bytes for all three servers.  They
 * go in untimed, the fastest fair way: mstore through the protocol
 * (pipelined APPENDs to mstored, as mstore-lmtpd would); maildir as
 * files written straight into ~/Maildir/cur (names with S= and W=,
 * as Dovecot writes them, so it never opens them for sizes); mdbox by
 * `doveadm import` of that same maildir.
 *
 * The client: this one process, raw sockets, no library.  Responses are
 * parsed by lines and literals (literal bytes are counted and skipped,
 * never copied), the APPEND sessions share one epoll loop.  Its CPU is
 * in the cli% column (of one core); near 100% means the client was the
 * limit.  srv is the server's CPU in cores over the same time: every
 * process of Dovecot's tree (imap, imap-login, auth, ...) and, for
 * mstore, mstored.
 *
 * The servers all run at once, each filled first; then each row runs
 * on each server in turn (interleaved, so that a busy machine slows all
 * of them alike; the select row's rounds alternate between the servers
 * one by one, and the append row runs in 3 slices a pass, the servers
 * taking turns slice by slice), MS_BENCH_IMAP_PASSES times [3]; the
 * table shows the median of the passes (one pass moves by 15-30% with
 * the machine's load).  At the end every server is stopped and its
 * scratch directory under MS_BENCH_DIR removed.  The servers:
 *  - Dovecot (Debian's dovecot-core and dovecot-imapd), private: its own
 *    dovecot.conf, base_dir, state_dir, logs and instance_name under the
 *    scratch directory, imap on a free 127.0.0.1 port, passwd-file
 *    users, plaintext LOGIN, mail as the system user mstbench (created
 *    if missing: Dovecot refuses mail as root), everything else at
 *    Dovecot's defaults (mail_fsync = optimized);
 *  - for mstore the same, plus mail_plugins = mstore, mail_location =
 *    mstore:~/mstore, the plugin's recommended mail_prefetch_count
 *    (PREFETCH [4]: its read-ahead of bodies; Dovecot prefetches only
 *    file-per-mail formats itself, so mdbox would not change) and
 *    mstored (tests/lib/msd.c defaults: io_uring,
 *    both copies in the scratch directory, socket mode 0666 for the
 *    mail uid); an APPEND's OK means written and fdatasync'ed on both
 *    copies.
 * Each Dovecot log (and mstored's) is checked for warnings and errors
 * at the end.
 *
 * Environment: MS_BENCH_SECONDS (3), MS_BENCH_DIR (var/bench),
 * MS_BENCH_MSTORED_CONF (more [store] lines for mstored, "\n" between
 * them: A/B runs of its knobs, e.g. "group_commit_wait_us = 0"),
 * MS_BENCH_IMAP_SERVERS (a comma list of mstore, mdbox, maildir; all),
 * MS_BENCH_IMAP_ROWS (a comma list of the row names above; all),
 * MS_BENCH_IMAP_BODY_MSGS, _BODY_SIZE, _ENV_MSGS, _SELECT_MSGS,
 * _APPEND_CLIENTS, _APPEND_SIZE, _APPEND_SELECT, _PREFETCH, _PASSES (as
 * above; a CI smoke run sets them tiny), MSTORE_BUILD.  Exit 77 when
 * Dovecot's imap or doveadm is not installed, the plugin or mstored is
 * not built, we are not root, or the mail uid cannot enter MS_BENCH_DIR;
 * 1 when a row failed (a missed target is reported, not failed).  Every
 * process started here is stopped and reaped before exit.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bproc.h"
#include "client.h"
#include "msd.h"
#include "msg.h"
#include "mstest.h"

#define MAIL_USER "mstbench"
#define PASSWORD "bench"
#define DOVECOT_BIN "/usr/sbin/dovecot"
#define DOVEADM_BIN "/usr/bin/doveadm"
#define DOVECOT_IMAP "/usr/lib/dovecot/imap"
#define MAX_CLIENTS 256
#define IO_TIMEOUT_MS 300000 /* one read of a response (a cold SELECT) */
#define RBUF 262144
#define LINE_CAP 16384
#define FILL_WINDOW 64 /* APPENDs in flight while filling mstore */

enum kind {
	K_MSTORE,
	K_MDBOX,
	K_MAILDIR,
	NKINDS
};
static const char *const kind_name[NKINDS] = {"mstore", "mdbox", "maildir"};

enum row {
	R_BODY,
	R_ENV,
	R_SELECT,
	R_LOGIN,
	R_COLD,
	R_APPEND,
	R_COPY,
	R_STORE,
	R_STATUS,
	R_LSTATUS,
	NROWS
};

struct knobs {
	double secs;
	long body_msgs, body_size, env_msgs, sel_msgs, clients, app_size;
	long app_select; /* APPEND into the selected INBOX */
	long prefetch;	 /* mstore's mail_prefetch_count */
	long passes;     /* every row on every server, this many times */
	int run[NKINDS];
	int rows[NROWS]; /* MS_BENCH_IMAP_ROWS: the rows that run */
};
static struct knobs K;

#define MAX_PASSES 9

struct result {
	int ran, ok;
	double value; /* the row's unit; in the table: the median */
	double vals[MAX_PASSES];
	int nvals;
	/* the server's CPU per unit of the row (append: µs a message),
	   each pass; its median is cpu_per */
	double cpus[MAX_PASSES];
	double cpu_per;
	double extra; /* body: -, env: ms per FETCH, append: p99 ms */
	double p50;   /* append: ms */
	double srv;   /* server CPU, cores */
	double cli;   /* client CPU, % of one core */
	int rounds;
};
static struct result res[NROWS][NKINDS];

static uid_t mail_uid;
static gid_t mail_gid;
static char bench_dir[PATH_MAX];

static const char *build_dir(void)
{
	const char *b = getenv("MSTORE_BUILD");
	return b && *b ? b : "build";
}

/* ---- the messages ---- */

#define MSGID_FMT "Message-ID: <%010u.%04u.%s@bench.example.test>\r\n"

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char *const words[] = {
	"quarterly", "report", "meeting", "notes", "invoice", "travel",
	"plan",      "review", "budget",  "draft", "release", "schedule"};

/*
 * Message i of a set (tag): exactly size bytes (size >= 1024), CRLF
 * line ends; sess goes into the Message-ID (APPEND sessions restamp it
 * per message with msg_stamp).
 */
static size_t msg_make(char *m, size_t size, const char *tag, uint32_t i,
		       uint32_t sess)
{
	uint64_t rnd = 0x9e3779b97f4a7c15ULL * (i + 1) + size + sess;
	for (const char *t = tag; *t; t++)
		rnd = rnd * 131 + (unsigned char)*t;
	int n = snprintf(
		m, size,
		MSGID_FMT "Date: Tue, 03 Jun 2025 %02u:%02u:%02u +0000\r\n"
			  "From: \"Sender %u\" <sender%u@example.test>\r\n"
			  "To: \"Bench User\" <%s@example.test>\r\n"
			  "Cc: <copy%u@example.test>, \"List\" "
			  "<list@example.test>\r\n"
			  "Subject: %s %s %u (bench-imap)\r\n"
			  "MIME-Version: 1.0\r\n"
			  "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
		i, sess, tag, (i / 3600) % 24, (i / 60) % 60, i % 60, i % 97,
		i % 97, tag, i % 13, words[i % 12], words[(i / 12) % 12], i);
	size_t pos = (size_t)n;
	while (pos < size) {
		/* lines of 76 and CRLF; the last ones shorter so that the
		   message ends at size with CRLF */
		size_t room = size - pos;
		size_t line = room > 80 ? 76 : room > 78 ? 40 : room - 2;
		for (size_t k = 0; k < line; k++)
			m[pos + k] = b64[mst_rand(&rnd) & 63];
		pos += line;
		m[pos++] = '\r';
		m[pos++] = '\n';
	}
	return size;
}

/* ---- IMAP responses: lines and literals ---- */

/*
 * The response parser: bytes in, one call per line (without CRLF; a
 * line longer than LINE_CAP is cut, its end kept apart for the literal
 * test); literal bytes are counted and skipped.  cont: the line goes on
 * a response whose previous line ended in a literal.
 */
struct imap {
	int fd;
	unsigned tagn;
	/* parser */
	uint64_t lit_left;
	int cont;
	char line[LINE_CAP];
	size_t len;
	char tail[24]; /* the last bytes of a cut line */
	size_t tlen;
	int cut;
	/* what the current command saw */
	uint64_t lines;
	char tag[16];
	int done, ok, cont_req, literal_plus;
	uint64_t fetches, lit_bytes, exists;
	/* STATUS responses, and the sum of their MESSAGES */
	uint64_t statuses, status_messages;
	char result[256];
};

static void on_line(struct imap *c, const char *line, size_t len, uint64_t lit)
{
	if (c->cont) {
		/* the rest of a response: nothing we look at */
		return;
	}
	if (len >= 2 && line[0] == '*' && line[1] == ' ') {
		const char *sp = memchr(line + 2, ' ', len - 2);
		if (sp != NULL && len - (size_t)(sp - line) >= 6 &&
		    strncmp(sp, " FETCH", 6) == 0)
			c->fetches++;
		else if (sp != NULL && len - (size_t)(sp - line) >= 7 &&
			 strncmp(sp, " EXISTS", 7) == 0)
			c->exists = strtoull(line + 2, NULL, 10);
		else if (len >= 9 && strncmp(line + 2, "STATUS ", 7) == 0) {
			const char *m = memmem(line, len, "(MESSAGES ", 10);
			c->statuses++;
			if (m != NULL)
				c->status_messages += strtoull(m + 10, NULL, 10);
		}
		if (memmem(line, len, "LITERAL+", 8) != NULL)
			c->literal_plus = 1;
		(void)lit;
		return;
	}
	if (len >= 1 && line[0] == '+') {
		c->cont_req = 1;
		return;
	}
	size_t tl = strlen(c->tag);
	if (tl > 0 && len > tl && strncmp(line, c->tag, tl) == 0 &&
	    line[tl] == ' ') {
		c->done = 1;
		c->ok = len >= tl + 3 && strncmp(line + tl + 1, "OK", 2) == 0;
		snprintf(c->result, sizeof(c->result), "%.*s", (int)len, line);
		if (memmem(line, len, "LITERAL+", 8) != NULL)
			c->literal_plus = 1;
	}
}

/* The literal size a line ends with ("{123}" or "{123+}"), or -1. */
static long long literal_at_end(const char *s, size_t len)
{
	if (len < 3 || s[len - 1] != '}')
		return -1;
	size_t i = len - 1;
	if (i > 0 && s[i - 1] == '+')
		i--;
	size_t end = i;
	while (i > 0 && isdigit((unsigned char)s[i - 1]))
		i--;
	if (i == end || i == 0 || s[i - 1] != '{')
		return -1;
	return strtoll(s + i, NULL, 10);
}

static void line_done(struct imap *c)
{
	size_t len = c->len;
	if (len > 0 && c->line[len - 1] == '\r')
		len--;
	long long lit;
	if (c->cut) {
		size_t tl = c->tlen;
		if (tl > 0 && c->tail[tl - 1] == '\r')
			tl--;
		lit = literal_at_end(c->tail, tl);
	} else {
		lit = literal_at_end(c->line, len);
	}
	on_line(c, c->line, len, lit > 0 ? (uint64_t)lit : 0);
	c->lines++;
	c->len = 0;
	c->tlen = 0;
	c->cut = 0;
	if (lit >= 0) {
		c->lit_left = (uint64_t)lit;
		c->lit_bytes += (uint64_t)lit;
		c->cont = 1;
	} else {
		c->cont = 0;
	}
}

static void feed(struct imap *c, const char *p, size_t n)
{
	while (n > 0) {
		if (c->lit_left > 0) {
			size_t k = n < c->lit_left ? n : (size_t)c->lit_left;
			c->lit_left -= k;
			p += k;
			n -= k;
			continue;
		}
		const char *nl = memchr(p, '\n', n);
		size_t k = nl ? (size_t)(nl - p) : n;
		size_t room = sizeof(c->line) - c->len;
		if (k <= room) {
			memcpy(c->line + c->len, p, k);
			c->len += k;
		} else {
			memcpy(c->line + c->len, p, room);
			c->len += room;
			c->cut = 1;
		}
		if (c->cut) {
			/* keep the last bytes apart */
			size_t t = k < sizeof(c->tail) ? k : sizeof(c->tail);
			if (c->tlen + t > sizeof(c->tail)) {
				size_t drop = c->tlen + t - sizeof(c->tail);
				memmove(c->tail, c->tail + drop,
					c->tlen - drop);
				c->tlen -= drop;
			}
			memcpy(c->tail + c->tlen, p + k - t, t);
			c->tlen += t;
		}
		p += k;
		n -= k;
		if (nl != NULL) {
			p++;
			n--;
			line_done(c);
		}
	}
}

/* ---- a blocking session ---- */

static int imap_read(struct imap *c, char *buf, size_t cap, char *why,
		     size_t whylen)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int pr = poll(&pfd, 1, IO_TIMEOUT_MS);
	if (pr == 0) {
		snprintf(why, whylen, "no response within %d s",
			 IO_TIMEOUT_MS / 1000);
		return -1;
	}
	ssize_t r = recv(c->fd, buf, cap, 0);
	if (r < 0 && errno == EINTR)
		return 0;
	if (r <= 0) {
		snprintf(why, whylen, "connection closed by the server: %s",
			 r < 0 ? strerror(errno) : "EOF");
		return -1;
	}
	feed(c, buf, (size_t)r);
	return 0;
}

static int imap_send(struct imap *c, const char *p, size_t n, char *why,
		     size_t whylen)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			snprintf(why, whylen, "send: %s", strerror(errno));
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void imap_close(struct imap *c);

static int imap_connect(struct imap *c, int port, char *why, size_t whylen)
{
	static char buf[RBUF];
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	int one = 1;
	memset(c, 0, sizeof(*c));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(why, whylen, "connect 127.0.0.1:%d: %s", port,
			 strerror(errno));
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* the greeting: the first line */
	while (c->lines == 0) {
		if (imap_read(c, buf, sizeof(buf), why, whylen) < 0) {
			imap_close(c);
			return -1;
		}
	}
	return 0;
}

static void imap_close(struct imap *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Start a command: a new tag, counters reset, the line sent. */
static int imap_start(struct imap *c, char *why, size_t whylen, const char *fmt,
		      ...)
{
	va_list ap;
	snprintf(c->tag, sizeof(c->tag), "T%u", ++c->tagn);
	/* any length: the store row's uid sets are long */
	char *body = NULL;
	va_start(ap, fmt);
	int len = vasprintf(&body, fmt, ap);
	va_end(ap);
	if (len < 0) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	size_t cap = strlen(c->tag) + (size_t)len + 4;
	char *cmd = ms_malloc(cap);
	int n = snprintf(cmd, cap, "%s %s\r\n", c->tag, body);
	free(body);
	c->done = c->ok = c->cont_req = 0;
	c->fetches = c->lit_bytes = 0;
	c->statuses = c->status_messages = 0;
	c->result[0] = '\0';
	int ret = imap_send(c, cmd, (size_t)n, why, whylen);
	free(cmd);
	return ret;
}

/* Read until the tagged response; 0 if it is OK. */
static int imap_wait(struct imap *c, char *why, size_t whylen)
{
	static char buf[RBUF];
	while (!c->done)
		if (imap_read(c, buf, sizeof(buf), why, whylen) < 0)
			return -1;
	if (!c->ok) {
		snprintf(why, whylen, "%s", c->result);
		return -1;
	}
	return 0;
}

static int imap_cmd(struct imap *c, char *why, size_t whylen, const char *fmt,
		    const char *arg)
{
	if (imap_start(c, why, whylen, fmt, arg) < 0)
		return -1;
	return imap_wait(c, why, whylen);
}

static int imap_login(struct imap *c, int port, const char *user, char *why,
		      size_t whylen)
{
	if (imap_connect(c, port, why, whylen) < 0)
		return -1;
	if (imap_cmd(c, why, whylen, "LOGIN %s " PASSWORD, user) < 0) {
		imap_close(c);
		return -1;
	}
	return 0;
}

static void imap_logout(struct imap *c)
{
	char why[512];
	if (c->fd >= 0 && imap_start(c, why, sizeof(why), "LOGOUT") == 0)
		(void)imap_wait(c, why, sizeof(why));
	imap_close(c);
}

/* ---- the servers ---- */

struct server {
	enum kind kind;
	int port;
	char dir[PATH_MAX];
	char conf[PATH_MAX + 32];
	char log[PATH_MAX + 32];
	char pidfile[PATH_MAX + 32];
	pid_t master;
	struct msd d; /* mstore */
	pid_t roots[2];
	int nroots;
};

/* what to kill when told to go, and at exit after a failure */
static struct server *volatile cur_srv[NKINDS];

static void on_fatal_signal(int sig)
{
	(void)sig;
	for (int k = 0; k < NKINDS; k++) {
		struct server *s = cur_srv[k];
		if (s == NULL)
			continue;
		if (s->master > 0)
			kill(s->master, SIGTERM);
		if (s->d.pid > 0)
			kill(s->d.pid, SIGKILL);
	}
	_exit(1);
}

static void server_kill_all(void)
{
	for (int k = 0; k < NKINDS; k++) {
		struct server *s = cur_srv[k];
		if (s == NULL)
			continue;
		cur_srv[k] = NULL;
		if (s->master > 0) {
			int st;
			bp_stop_tree(s->master, 10, 10, &st);
		}
	}
	/* mstored: msd's own atexit */
}

/* The users: body, env, sel, a0..a<clients-1>. */
static void user_name(int i, char *buf, size_t n)
{
	static const char *const fixed[] = {"body", "env", "sel"};
	if (i < 3)
		snprintf(buf, n, "%s", fixed[i]);
	else
		snprintf(buf, n, "a%d", i - 3);
}

static int nusers(void)
{
	return 3 + (int)K.clients;
}

static int write_conf(struct server *s, const char *root, char *why,
		      size_t whylen)
{
	char users[PATH_MAX + 32], mods[PATH_MAX + 32], so[PATH_MAX + 64];
	snprintf(users, sizeof(users), "%s/users", root);
	FILE *f = fopen(users, "w");
	if (f == NULL) {
		snprintf(why, whylen, "%s: %s", users, strerror(errno));
		return -1;
	}
	for (int i = 0; i < nusers(); i++) {
		char u[32];
		user_name(i, u, sizeof(u));
		fprintf(f, "%s:{PLAIN}" PASSWORD "::::::\n", u);
	}
	fclose(f);
	const char *loc = s->kind == K_MSTORE  ? "mstore:~/mstore"
			  : s->kind == K_MDBOX ? "mdbox:~/mdbox"
					       : "maildir:~/Maildir";
	char plugin[2 * PATH_MAX + 256] = "";
	if (s->kind == K_MSTORE) {
		/* our module alone in a directory of its own */
		snprintf(mods, sizeof(mods), "%s/modules", root);
		snprintf(so, sizeof(so), "%s/modules/lib20_mstore_plugin.so",
			 build_dir());
		char abs[PATH_MAX], link[PATH_MAX + 64];
		if (mkdir(mods, 0755) < 0 || realpath(so, abs) == NULL) {
			snprintf(why, whylen, "%s: %s", so, strerror(errno));
			return -1;
		}
		snprintf(link, sizeof(link), "%s/lib20_mstore_plugin.so", mods);
		if (symlink(abs, link) < 0) {
			snprintf(why, whylen, "%s: %s", link, strerror(errno));
			return -1;
		}
		/* the plugin's read-ahead (docs/dovecot-plugin.md): part
		   of its recommended configuration; for mdbox it would
		   change nothing (Dovecot prefetches only file-per-mail
		   storages) */
		snprintf(plugin, sizeof(plugin),
			 "mail_plugin_dir = %s\nmail_plugins = mstore\n"
			 "mail_prefetch_count = %ld\n"
			 "plugin {\n  mstore_socket = %s\n}\n",
			 mods, K.prefetch, s->d.sock);
	}
	/* a distinct instance name: the root's unique suffix */
	const char *tag = strrchr(root, '-');
	f = fopen(s->conf, "w");
	if (f == NULL) {
		snprintf(why, whylen, "%s: %s", s->conf, strerror(errno));
		return -1;
	}
	fprintf(f,
		"# bench-imap: a private Dovecot on loopback\n"
		"instance_name = mstbenchimap%s\n"
		"base_dir = %s/run\n"
		"state_dir = %s/state\n"
		"log_path = %s\n"
		"info_log_path = %s/dovecot-info.log\n"
		"listen = 127.0.0.1\n"
		"protocols = imap\n"
		"ssl = no\n"
		"disable_plaintext_auth = no\n"
		"auth_mechanisms = plain login\n"
		"first_valid_uid = %u\nlast_valid_uid = %u\n"
		"first_valid_gid = %u\nlast_valid_gid = %u\n"
		"mail_location = %s\n"
		"%s"
		"namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
		"passdb {\n  driver = passwd-file\n"
		"  args = username_format=%%n %s\n}\n"
		"userdb {\n  driver = passwd-file\n"
		"  args = username_format=%%n %s\n"
		"  default_fields = uid=%u gid=%u home=%s/mail/%%n\n}\n"
		"service imap-login {\n  inet_listener imap {\n"
		"    address = 127.0.0.1\n    port = %d\n  }\n"
		"  inet_listener imaps {\n    port = 0\n  }\n}\n",
		tag ? tag : "", root, root, s->log, root, (unsigned)mail_uid,
		(unsigned)mail_uid, (unsigned)mail_gid, (unsigned)mail_gid, loc,
		plugin, users, users, (unsigned)mail_uid, (unsigned)mail_gid,
		root, s->port);
	if (fclose(f) != 0) {
		snprintf(why, whylen, "%s: %s", s->conf, strerror(errno));
		return -1;
	}
	return 0;
}

static int server_start(struct server *s, enum kind kind, char *why,
			size_t whylen)
{
	char path[PATH_MAX + 64];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->d.pid = -1;
	s->port = bp_free_port();
	if (s->port <= 0) {
		snprintf(why, whylen, "no free port: %s", strerror(errno));
		return -1;
	}
	cur_srv[kind] = s;
	snprintf(path, sizeof(path), "imap-%s", kind_name[kind]);
	char *root = mst_tmpdir(path);
	snprintf(s->dir, sizeof(s->dir), "%s", root);
	snprintf(s->conf, sizeof(s->conf), "%s/dovecot.conf", root);
	snprintf(s->log, sizeof(s->log), "%s/dovecot.log", root);
	snprintf(s->pidfile, sizeof(s->pidfile), "%s/run/master.pid", root);
	/* the mail uid must enter the root; the mail is its own */
	chmod(root, 0755);
	snprintf(path, sizeof(path), "%s/run", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/state", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/mail", root);
	if (mkdir(path, 0755) < 0 || chown(path, mail_uid, mail_gid) < 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (kind == K_MSTORE) {
		/* Dovecot's mail processes run as MAIL_USER and act for
		   every bench user (docs/config.md, user_socket_peers) */
		/* MS_BENCH_MSTORED_CONF: more [store] lines, for A/B runs
		   of mstored's knobs ("\n" between them) */
		const char *more = getenv("MS_BENCH_MSTORED_CONF");
		char conf[1024];
		snprintf(conf, sizeof(conf),
			 "socket_mode = 0666\n"
			 "user_socket_peers = " MAIL_USER "\n%s%s",
			 more != NULL ? more : "", more != NULL ? "\n" : "");
		for (char *p = conf; (p = strstr(p, "\\n")) != NULL;) {
			p[0] = ' ';
			p[1] = '\n';
		}
		msd_setup(&s->d, "imap-mstored", conf);
		/* the mail uid reaches the user socket in there */
		chmod(s->d.dir, 0755);
		msd_start(&s->d); /* exits if it cannot */
		for (int i = 0; i < nusers(); i++) {
			char u[32];
			user_name(i, u, sizeof(u));
			int ret = msd_user_add(&s->d, u);
			if (ret < 0) {
				snprintf(why, whylen, "USER_CREATE %s: %s", u,
					 ms_strerror(ret));
				return -1;
			}
		}
		s->roots[s->nroots++] = s->d.pid;
	}
	if (write_conf(s, root, why, whylen) < 0)
		return -1;
	char *argv[] = {DOVECOT_BIN, "-F", "-c", s->conf, NULL};
	s->master = bp_spawn(argv, s->log);
	if (s->master < 0) {
		snprintf(why, whylen, "fork: %s", strerror(errno));
		return -1;
	}
	s->roots[s->nroots++] = s->master;
	for (double end = bp_now() + 15; bp_now() < end; bp_sleep(0.01)) {
		if (waitpid(s->master, NULL, WNOHANG) == s->master) {
			s->master = 0;
			snprintf(why, whylen, "dovecot exited; see %s", s->log);
			return -1;
		}
		if (access(s->pidfile, R_OK) == 0 && bp_port_answers(s->port))
			return 0;
	}
	snprintf(why, whylen, "dovecot not ready within 15 s; see %s", s->log);
	return -1;
}

/* Stop everything, reap it, check the logs, remove the directories. */
static int server_stop(struct server *s)
{
	static const char *const ms_bad[] = {"level=warning", "level=error",
					     "level=fatal", "level=panic",
					     NULL};
	static const char *const dv_bad[] = {
		"Warning:", "Error:", "Fatal:", "Panic:", NULL};
	static const char *const dv_ignore[] = {"Killed with signal 15", NULL};
	static const char *const none[] = {NULL};
	int bad = 0;

	if (s->master > 0) {
		int st;
		pid_t pid = s->master;
		s->master = 0; /* bp_stop_tree signals and reaps it */
		int killed = bp_stop_tree(pid, 30, 10, &st);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			printf("  (dovecot exit status %d)\n", st);
			bad++;
		}
		if (killed) {
			printf("  (%d of Dovecot's processes were still there "
			       "10 s after the master: killed)\n",
			       killed);
			bad++;
		}
	}
	if (bp_log_check("dovecot", s->log, dv_bad, dv_ignore))
		bad++;
	if (s->kind == K_MSTORE && s->d.pid > 0) {
		int st = msd_stop(&s->d);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			printf("  (mstored exit status %d)\n", st);
			bad++;
		}
		if (bp_log_check("mstored", s->d.logfile, ms_bad, none))
			bad++;
	}
	cur_srv[s->kind] = NULL;
	if (getenv("MS_KEEP") == NULL) {
		if (s->dir[0] != '\0')
			mst_rmtree(s->dir);
		if (s->kind == K_MSTORE && s->d.dir[0] != '\0')
			mst_rmtree(s->d.dir);
	}
	return bad ? -1 : 0;
}

/* ---- filling the mailboxes (untimed) ---- */

/* mstore: pipelined APPENDs on the protocol, FILL_WINDOW in flight. */
static int fill_mstore(struct server *s, const char *user, const char *tag,
		       uint32_t n, uint32_t size, char *why, size_t whylen)
{
	struct ms_client *c = msd_connect(&s->d, user);
	struct ms_buf out;
	char *m = ms_malloc(size);
	uint32_t sent = 0, done = 0;
	int ret = 0;
	struct ms_placement pl = {.mailbox = MS_PSTR("INBOX"),
				  .received = 1748944800}; /* 2025-06-03 */

	ms_buf_init(&out, 0);
	while (ret == 0 && done < n) {
		const char *err = "";
		ms_buf_reset(&out);
		while (sent < n && sent - done < FILL_WINDOW) {
			struct ms_req q = {.op = MS_OP_APPEND};
			msg_make(m, size, tag, sent, 0);
			q.u.append.body = (const uint8_t *)m;
			q.u.append.body_len = size;
			q.u.append.placements.n = 1;
			q.u.append.placements.list = &pl;
			if (ms_req_encode(&out, ms_client_id(c), &q, &err) < 0)
				break;
			sent++;
		}
		if (err[0] != '\0' ||
		    (out.len > 0 &&
		     (ret = ms_client_send(c, out.data, out.len)) < 0)) {
			snprintf(why, whylen, "APPEND to %s: %s %s", user, err,
				 ms_strerror(ret));
			ret = -1;
			break;
		}
		struct ms_proto_hdr hdr;
		const uint8_t *body;
		size_t len;
		struct ms_reply rep;
		ret = ms_client_recv(c, &hdr, &body, &len, &err);
		if (ret == 0)
			ret = ms_reply_decode(hdr.op, body, len, &rep, &err);
		if (ret == 0 && rep.status != 0)
			ret = rep.status;
		struct ms_proto_iter it;
		struct ms_append_result r;
		if (ret == 0) {
			ms_proto_iter_results(&it, &rep.u.append);
			if (ms_proto_next_result(&it, &r) != 1)
				ret = MS_ECORRUPT;
			else
				ret = r.status;
		}
		if (ret != 0) {
			snprintf(why, whylen, "APPEND to %s: %s %s", user, err,
				 ms_strerror(ret));
			ret = -1;
			break;
		}
		done++;
	}
	ms_buf_free(&out);
	free(m);
	ms_client_close(&c);
	return ret;
}

/*
 * A maildir of n messages at dir (cur, new, tmp), written by a child as
 * the mail uid: file names as Dovecot's own (S= size, W= virtual size,
 * ":2," no flags), mtime the received date.
 */
static int fill_maildir(const char *dir, const char *tag, uint32_t n,
			uint32_t size, char *why, size_t whylen)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(why, whylen, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		char path[PATH_MAX + 128];
		char *m = ms_malloc(size);
		if (setgid(mail_gid) < 0 || setuid(mail_uid) < 0)
			_exit(2);
		static const char *const subs[] = {"", "/cur", "/new", "/tmp"};
		/* the parent (a user's home) first */
		snprintf(path, sizeof(path), "%s", dir);
		char *slash = strrchr(path, '/');
		if (slash != NULL)
			*slash = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			perror(path);
			_exit(3);
		}
		for (int i = 0; i < 4; i++) {
			snprintf(path, sizeof(path), "%s%s", dir, subs[i]);
			if (mkdir(path, 0700) < 0 && errno != EEXIST) {
				perror(path);
				_exit(3);
			}
		}
		for (uint32_t i = 0; i < n; i++) {
			msg_make(m, size, tag, i, 0);
			snprintf(path, sizeof(path),
				 "%s/cur/1748944800.M%uP1.bench,S=%u,W=%u:2,",
				 dir, i, size, size);
			int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
			if (fd < 0 || write(fd, m, size) != (ssize_t)size ||
			    close(fd) < 0) {
				perror(path);
				_exit(4);
			}
			struct timespec ts[2] = {{1748944800, 0},
						 {1748944800, 0}};
			utimensat(AT_FDCWD, path, ts, 0);
		}
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0) {
		snprintf(why, whylen, "writing the maildir %s failed (%d)", dir,
			 st);
		return -1;
	}
	return 0;
}

static int run_quiet(const char *cmd, char *why, size_t whylen)
{
	int st = system(cmd);
	if (st != 0) {
		snprintf(why, whylen, "%s: exit %d", cmd, st);
		return -1;
	}
	return 0;
}

static int fill(struct server *s, int user_idx, const char *tag, uint32_t n,
		uint32_t size, char *why, size_t whylen)
{
	char user[32], dir[PATH_MAX + 64], cmd[3 * PATH_MAX];
	user_name(user_idx, user, sizeof(user));
	if (n == 0)
		return 0;
	switch (s->kind) {
	case K_MSTORE:
		return fill_mstore(s, user, tag, n, size, why, whylen);
	case K_MAILDIR:
		/* home/Maildir is INBOX */
		snprintf(dir, sizeof(dir), "%s/mail/%s/Maildir", s->dir, user);
		return fill_maildir(dir, tag, n, size, why, whylen);
	case K_MDBOX:
		snprintf(dir, sizeof(dir), "%s/mail/src-%s", s->dir, user);
		if (fill_maildir(dir, tag, n, size, why, whylen) < 0)
			return -1;
		snprintf(cmd, sizeof(cmd),
			 DOVEADM_BIN " -c '%s' import -u %s maildir:%s '' all",
			 s->conf, user, dir);
		if (run_quiet(cmd, why, whylen) < 0)
			return -1;
		mst_rmtree(dir);
		return 0;
	default:
		return -1;
	}
}

/* ---- the rows ---- */

struct meter {
	double t0, cpu0, self0;
};

static void meter_start(struct server *s, struct meter *m)
{
	m->cpu0 = bp_tree_cpu(s->roots, s->nroots);
	m->self0 = bp_self_cpu();
	m->t0 = bp_now();
}

/* Wall time since start; the CPU shares into r. */
static double meter_stop(struct server *s, struct meter *m, struct result *r)
{
	double w = bp_now() - m->t0;
	double cpu = bp_tree_cpu(s->roots, s->nroots) - m->cpu0;
	double self = bp_self_cpu() - m->self0;
	if (w > 0) {
		r->srv = cpu / w;
		r->cli = 100 * self / w;
	}
	return w;
}

/*
 * One FETCH 1:* of items over the user's INBOX of n messages, checked:
 * n FETCH responses and, with want_lit, that many literal bytes.
 */
static int fetch_round(struct imap *c, const char *items, uint32_t n,
		       uint64_t want_lit, char *why, size_t whylen)
{
	if (imap_cmd(c, why, whylen, "FETCH 1:* %s", items) < 0)
		return -1;
	if (c->fetches != n || (want_lit && c->lit_bytes != want_lit)) {
		snprintf(why, whylen,
			 "FETCH 1:* %s: %llu responses, %llu literal bytes; "
			 "expected %u and %llu",
			 items, (unsigned long long)c->fetches,
			 (unsigned long long)c->lit_bytes, n,
			 (unsigned long long)want_lit);
		return -1;
	}
	return 0;
}

/* body and envelope rows: warm-up rounds, then rounds for secs. */
static int row_fetch(struct server *s, int user_idx, const char *items,
		     uint32_t n, uint64_t want_lit, int warmups,
		     struct result *r, char *why, size_t whylen)
{
	struct imap c;
	char user[32];
	struct meter m = {0};
	user_name(user_idx, user, sizeof(user));
	if (imap_login(&c, s->port, user, why, whylen) < 0)
		return -1;
	int ret = imap_cmd(&c, why, whylen, "SELECT %s", "INBOX");
	for (int i = 0; ret == 0 && i < warmups; i++)
		ret = fetch_round(&c, items, n, want_lit, why, whylen);
	if (ret == 0) {
		double w = 0;
		meter_start(s, &m);
		do {
			ret = fetch_round(&c, items, n, want_lit, why, whylen);
			r->rounds++;
			w = bp_now() - m.t0;
		} while (ret == 0 && w < K.secs);
		w = meter_stop(s, &m, r);
		if (ret == 0 && want_lit) {
			r->value = (double)want_lit * r->rounds / w / 1e6;
		} else if (ret == 0) {
			r->value = (double)n * r->rounds / w;
			r->extra = w / r->rounds * 1e3;
		}
	}
	imap_logout(&c);
	return ret;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* cold: the first LOGIN + SELECT ever of the sel user. */
static int row_cold(struct server *s, uint32_t n, struct result *r, char *why,
		    size_t whylen)
{
	struct imap c;
	struct meter m = {0};
	meter_start(s, &m);
	if (imap_login(&c, s->port, "sel", why, whylen) < 0)
		return -1;
	int ret = imap_cmd(&c, why, whylen, "SELECT %s", "INBOX");
	double w = meter_stop(s, &m, r);
	if (ret == 0 && c.exists != n) {
		snprintf(why, whylen, "SELECT: %llu EXISTS, expected %u",
			 (unsigned long long)c.exists, n);
		ret = -1;
	}
	r->value = w * 1e3;
	r->rounds = 1;
	imap_logout(&c);
	return ret;
}

/*
 * select and login: rounds of connect, LOGIN, SELECT, LOGOUT, on every
 * running server in turn, round by round (the servers' rounds
 * interleaved, so that what slows the machine for a while - another
 * process, the host under the virtual machine - slows each of them
 * alike; a row run per server in turn moved the ratio by 10-20% from
 * pass to pass), until MS_BENCH_SECONDS per server have passed.  Each
 * server's median SELECT and LOGIN into rs[k] and rl[k]; its CPU over
 * the wall time of its own rounds.  0, or -1 with why (the server whose
 * round failed: its index in ss in *bad_r).
 */
static int row_select(struct server **ss, int ns, uint32_t n,
		      struct result *rs, struct result *rl, int *bad_r,
		      char *why, size_t whylen)
{
	static double sel_ms[NKINDS][100000], login_ms[NKINDS][100000];
	double wall[NKINDS] = {0}, cpu0[NKINDS], self0 = bp_self_cpu();
	double t_start = bp_now(), t_end = t_start + K.secs * ns;
	int k = 0, ret = 0;

	for (int i = 0; i < ns; i++)
		cpu0[i] = bp_tree_cpu(ss[i]->roots, ss[i]->nroots);
	do {
		for (int i = 0; i < ns && ret == 0; i++) {
			struct imap c;
			double t0 = bp_now();
			*bad_r = i;
			if (imap_login(&c, ss[i]->port, "sel", why, whylen) <
			    0)
				return -1;
			double t1 = bp_now();
			ret = imap_cmd(&c, why, whylen, "SELECT %s", "INBOX");
			double t2 = bp_now();
			if (ret == 0 && c.exists != n) {
				snprintf(why, whylen,
					 "SELECT: %llu EXISTS, expected %u",
					 (unsigned long long)c.exists, n);
				ret = -1;
			}
			imap_logout(&c);
			login_ms[i][k] = (t1 - t0) * 1e3;
			sel_ms[i][k] = (t2 - t1) * 1e3;
			wall[i] += bp_now() - t0;
		}
		k++;
	} while (ret == 0 && bp_now() < t_end && k < 100000);
	double all = bp_now() - t_start, self = bp_self_cpu() - self0;
	for (int i = 0; i < ns; i++) {
		double cpu = bp_tree_cpu(ss[i]->roots, ss[i]->nroots) - cpu0[i];
		rs[i].srv = wall[i] > 0 ? cpu / wall[i] : 0;
		rs[i].cli = all > 0 ? 100 * self / all : 0;
		qsort(sel_ms[i], (size_t)k, sizeof(double), cmp_double);
		qsort(login_ms[i], (size_t)k, sizeof(double), cmp_double);
		rs[i].value = sel_ms[i][(k - 1) / 2];
		rs[i].rounds = k;
		rl[i] = rs[i];
		rl[i].value = login_ms[i][(k - 1) / 2];
	}
	return ret;
}

/* copy: COPY_ROUNDS rounds, each UID COPY 1:* of the env user's INBOX
   into a new folder, then UID MOVE 1:* of that folder into another
   (each checked by the next SELECT's EXISTS), the folders deleted after
   the round.  Messages copied or moved per second of those two
   commands. */
#define COPY_ROUNDS 3
static int row_copy(struct server *s, uint32_t n, struct result *r,
		    char *why, size_t whylen)
{
	struct imap c;
	struct meter m = {0};
	char user[32];
	double busy = 0;
	int ret = 0;

	user_name(1, user, sizeof(user));
	if (imap_login(&c, s->port, user, why, whylen) < 0)
		return -1;
	meter_start(s, &m);
	for (int i = 0; ret == 0 && i < COPY_ROUNDS; i++) {
		static const char *const steps[] = {
			"CREATE %s", "bcopy-a", "CREATE %s", "bcopy-b",
			"SELECT %s", "INBOX",   "UID COPY 1:* %s", "bcopy-a",
			"SELECT %s", "bcopy-a", "UID MOVE 1:* %s", "bcopy-b",
			"SELECT %s", "bcopy-b", "SELECT %s", "INBOX",
			"DELETE %s", "bcopy-a", "DELETE %s", "bcopy-b",
		};
		for (size_t j = 0; ret == 0 && j < MS_ARRAY_SIZE(steps);
		     j += 2) {
			int timed = strncmp(steps[j], "UID ", 4) == 0;
			double t0 = bp_now();
			ret = imap_cmd(&c, why, whylen, steps[j], steps[j + 1]);
			if (timed)
				busy += bp_now() - t0;
			/* what the copy and the move made is all there */
			if (ret == 0 && strncmp(steps[j], "SELECT", 6) == 0 &&
			    strncmp(steps[j + 1], "bcopy", 5) == 0 &&
			    c.exists != n) {
				snprintf(why, whylen,
					 "SELECT %s: %llu EXISTS, expected %u",
					 steps[j + 1],
					 (unsigned long long)c.exists, n);
				ret = -1;
			}
		}
		r->rounds++;
	}
	meter_stop(s, &m, r);
	if (ret == 0 && busy > 0)
		r->value = 2.0 * n * r->rounds / busy;
	imap_logout(&c);
	return ret;
}

/* store: STORE_ROUNDS rounds on the env user's INBOX, each UID STORE
   +FLAGS (\Flagged) on every other message (a scattered set: n/2 runs
   of one uid, as a client marks a selection) and -FLAGS back, each
   checked by its FETCH responses.  Messages changed per second of the
   STOREs. */
#define STORE_ROUNDS 3
static int row_store(struct server *s, uint32_t n, struct result *r,
		     char *why, size_t whylen)
{
	struct imap c;
	struct meter m = {0};
	char user[32];
	double busy = 0;
	int ret = 0;
	uint32_t want = (n + 1) / 2;
	char *set = ms_malloc((size_t)want * 11 + 1), *p = set;

	for (uint32_t uid = 1; uid <= n; uid += 2)
		p += sprintf(p, "%s%u", uid > 1 ? "," : "", uid);
	user_name(1, user, sizeof(user));
	if (imap_login(&c, s->port, user, why, whylen) < 0) {
		free(set);
		return -1;
	}
	ret = imap_cmd(&c, why, whylen, "SELECT %s", "INBOX");
	meter_start(s, &m);
	for (int i = 0; ret == 0 && i < STORE_ROUNDS; i++) {
		static const char *const steps[] = {
			"UID STORE %s +FLAGS (\\Flagged)",
			"UID STORE %s -FLAGS (\\Flagged)",
		};
		for (size_t j = 0; ret == 0 && j < MS_ARRAY_SIZE(steps); j++) {
			double t0 = bp_now();
			ret = imap_cmd(&c, why, whylen, steps[j], set);
			busy += bp_now() - t0;
			if (ret == 0 && c.fetches != want) {
				snprintf(why, whylen,
					 "%.16s: %llu FETCH, expected %u",
					 steps[j],
					 (unsigned long long)c.fetches, want);
				ret = -1;
			}
		}
		r->rounds++;
	}
	meter_stop(s, &m, r);
	if (ret == 0 && busy > 0)
		r->value = 2.0 * want * r->rounds / busy;
	imap_logout(&c);
	free(set);
	return ret;
}

/* status: STATUS_FOLDERS folders of the env user with STATUS_MSGS
   messages each, made over IMAP (CREATE, APPEND) before the first pass
   and not timed; then one session, after a LIST, asks STATUS (MESSAGES
   UNSEEN UIDNEXT) of each folder in turn with none selected, as a
   client checking its folders for new mail, for the row's time.  The
   first round is not timed (each server builds what it keeps of a
   folder); every answer is checked.  STATUS commands per second. */
#define STATUS_FOLDERS 50
#define STATUS_MSGS 2
static int status_folders_make(struct imap *c, char *why, size_t whylen)
{
	char msg[1024], box[32];
	int ret = 0;

	for (int f = 0; ret == 0 && f < STATUS_FOLDERS; f++) {
		snprintf(box, sizeof(box), "bstat-%02d", f);
		ret = imap_cmd(c, why, whylen, "CREATE %s", box);
		for (uint32_t i = 0; ret == 0 && i < STATUS_MSGS; i++) {
			size_t n = msg_make(msg, sizeof(msg), box, i, 0);
			char *cmd = NULL;
			if (asprintf(&cmd, "APPEND %s {%zu+}\r\n%.*s", box, n,
				     (int)n, msg) < 0) {
				snprintf(why, whylen, "out of memory");
				return -1;
			}
			ret = imap_cmd(c, why, whylen, "%s", cmd);
			free(cmd);
		}
	}
	return ret;
}

static int status_round(struct imap *c, char *why, size_t whylen)
{
	char box[32];
	int ret = 0;

	for (int f = 0; ret == 0 && f < STATUS_FOLDERS; f++) {
		snprintf(box, sizeof(box), "bstat-%02d", f);
		ret = imap_cmd(c, why, whylen,
			       "STATUS %s (MESSAGES UNSEEN UIDNEXT)", box);
		if (ret == 0 && (c->statuses != 1 ||
				 c->status_messages != STATUS_MSGS)) {
			snprintf(why, whylen,
				 "STATUS %s: %llu answers, %llu messages, "
				 "expected 1 and %d", box,
				 (unsigned long long)c->statuses,
				 (unsigned long long)c->status_messages,
				 STATUS_MSGS);
			ret = -1;
		}
	}
	return ret;
}

/* A session of the env user, after a LIST; the status rows' folders
   made first if they are not there yet. */
static int status_session(struct server *s, struct imap *c, char *why,
			  size_t whylen)
{
	static int made[NKINDS];
	char user[32];
	int ret;

	user_name(1, user, sizeof(user));
	if (imap_login(c, s->port, user, why, whylen) < 0)
		return -1;
	if (!made[s->kind]) {
		ret = status_folders_make(c, why, whylen);
		made[s->kind] = ret == 0;
		imap_logout(c);
		if (ret < 0 || imap_login(c, s->port, user, why, whylen) < 0)
			return -1;
	}
	if (imap_cmd(c, why, whylen, "LIST \"\" %s", "*") < 0) {
		imap_logout(c);
		return -1;
	}
	return 0;
}

static int row_status(struct server *s, struct result *r, char *why,
		      size_t whylen)
{
	struct imap c;
	struct meter m = {0};
	int ret = 0;

	if (status_session(s, &c, why, whylen) < 0)
		return -1;
	ret = status_round(&c, why, whylen);
	meter_start(s, &m);
	double t0 = bp_now(), t_end = t0 + K.secs;
	while (ret == 0 && (r->rounds == 0 || bp_now() < t_end)) {
		ret = status_round(&c, why, whylen);
		r->rounds++;
	}
	double busy = bp_now() - t0;
	meter_stop(s, &m, r);
	if (ret == 0 && busy > 0)
		r->value = (double)STATUS_FOLDERS * r->rounds / busy;
	imap_logout(&c);
	return ret;
}

/* One LIST-STATUS of the status rows' folders, checked. */
static int lstatus_round(struct imap *c, char *why, size_t whylen)
{
	int ret = imap_cmd(c, why, whylen,
			   "LIST \"\" %s RETURN (STATUS (MESSAGES UNSEEN "
			   "UIDNEXT))", "bstat-*");
	if (ret == 0 && (c->statuses != STATUS_FOLDERS ||
			 c->status_messages !=
				 (uint64_t)STATUS_FOLDERS * STATUS_MSGS)) {
		snprintf(why, whylen,
			 "LIST-STATUS: %llu STATUS, %llu messages, expected "
			 "%d and %d", (unsigned long long)c->statuses,
			 (unsigned long long)c->status_messages,
			 STATUS_FOLDERS, STATUS_FOLDERS * STATUS_MSGS);
		ret = -1;
	}
	return ret;
}

/* lstatus: the same folders by LIST-STATUS, rounds for the row's time
   after an untimed one; the median ms per command. */
static int row_lstatus(struct server *s, struct result *r, char *why,
		       size_t whylen)
{
	static double ms[100000];
	struct imap c;
	struct meter m = {0};
	int ret, k = 0;

	if (status_session(s, &c, why, whylen) < 0)
		return -1;
	ret = lstatus_round(&c, why, whylen);
	meter_start(s, &m);
	double t_end = bp_now() + K.secs;
	while (ret == 0 && (k == 0 || bp_now() < t_end) && k < 100000) {
		double t0 = bp_now();
		ret = lstatus_round(&c, why, whylen);
		ms[k++] = (bp_now() - t0) * 1e3;
	}
	meter_stop(s, &m, r);
	if (ret == 0) {
		qsort(ms, (size_t)k, sizeof(double), cmp_double);
		r->value = ms[(k - 1) / 2];
	}
	r->rounds = k;
	imap_logout(&c);
	return ret;
}

/* ---- append: APPEND_CLIENTS sessions in one epoll loop ---- */

enum app_state {
	A_IDLE,
	A_WAIT_CONT, /* sent the command, waiting for "+" (no LITERAL+) */
	A_WAIT_TAG,
	A_DONE
};

#define CMD_ROOM 64

struct asess {
	struct imap c;
	int idx;
	enum app_state state;
	/* CMD_ROOM bytes, the message, CRLF; the command line is written
	   just before the message, out points at it */
	char *buf, *out;
	size_t cmdlen, msglen;
	size_t outoff, outlen;
	uint64_t seq, acked;
	double t0;
	int want_out;
};

struct agen {
	int ep;
	double t_stop;
	int in_window;
	uint64_t win_msgs;
	double *lat;
	size_t nlat, caplat;
	char err[512];
};

static void asess_events(struct agen *g, struct asess *a, int out)
{
	if (a->want_out == out)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
				 .data.ptr = a};
	epoll_ctl(g->ep, EPOLL_CTL_MOD, a->c.fd, &ev);
	a->want_out = out;
}

static void asess_flush(struct agen *g, struct asess *a)
{
	while (a->outoff < a->outlen) {
		ssize_t w = send(a->c.fd, a->out + a->outoff,
				 a->outlen - a->outoff, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			asess_events(g, a, 1);
			return;
		}
		if (w < 0) {
			snprintf(g->err, sizeof(g->err), "session %d: send: %s",
				 a->idx, strerror(errno));
			return;
		}
		a->outoff += (size_t)w;
	}
	asess_events(g, a, 0);
}

/* The next APPEND: a new tag and Message-ID, sent. */
static void append_start(struct agen *g, struct asess *a)
{
	char head[CMD_ROOM], id[128];
	char *msg = a->buf + CMD_ROOM;
	a->seq++;
	snprintf(a->c.tag, sizeof(a->c.tag), "T%u", ++a->c.tagn);
	int n = snprintf(head, sizeof(head), "%s APPEND INBOX {%zu%s}\r\n",
			 a->c.tag, a->msglen, a->c.literal_plus ? "+" : "");
	a->cmdlen = (size_t)n;
	a->out = msg - n;
	memcpy(a->out, head, (size_t)n);
	/* a new Message-ID of the same length: no two alike */
	int k = snprintf(id, sizeof(id), MSGID_FMT, (unsigned)a->seq,
			 (unsigned)a->idx, "append");
	memcpy(msg, id, (size_t)k);
	a->c.done = a->c.ok = a->c.cont_req = 0;
	a->t0 = bp_now();
	a->outoff = 0;
	if (a->c.literal_plus) {
		a->state = A_WAIT_TAG;
		a->outlen = a->cmdlen + a->msglen + 2;
	} else {
		a->state = A_WAIT_CONT;
		a->outlen = a->cmdlen;
	}
	asess_flush(g, a);
}

static void append_done(struct agen *g, struct asess *a)
{
	double t = bp_now();
	a->acked++;
	if (g->in_window) {
		g->win_msgs++;
		if (g->nlat == g->caplat) {
			g->caplat = g->caplat ? g->caplat * 2 : 65536;
			g->lat = realloc(g->lat, g->caplat * sizeof(*g->lat));
			if (g->lat == NULL)
				abort();
		}
		g->lat[g->nlat++] = (t - a->t0) * 1e3;
	}
	if (t < g->t_stop) {
		append_start(g, a);
	} else {
		a->state = A_DONE;
	}
}

static void asess_read(struct agen *g, struct asess *a)
{
	static char buf[65536];
	for (;;) {
		ssize_t r = recv(a->c.fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			snprintf(g->err, sizeof(g->err),
				 "session %d: connection closed by the "
				 "server: %s",
				 a->idx, r < 0 ? strerror(errno) : "EOF");
			return;
		}
		feed(&a->c, buf, (size_t)r);
		if (a->state == A_WAIT_CONT && a->c.cont_req) {
			a->state = A_WAIT_TAG;
			a->outlen = a->cmdlen + a->msglen + 2;
			asess_flush(g, a);
		}
		if (a->c.done) {
			if (!a->c.ok) {
				snprintf(g->err, sizeof(g->err),
					 "session %d: APPEND: %s", a->idx,
					 a->c.result);
				return;
			}
			append_done(g, a);
		}
	}
}

/* The append row's slices of one pass on one server, summed. */
struct aacc {
	uint64_t msgs;
	double win, srv_cpu, cli_cpu; /* s; CPU s (server), % x s (client) */
	double *lat;
	size_t nlat, caplat;
};

/* One slice: K.clients sessions log in, APPEND for a window of secs
   (after a warm-up), log out; counted into acc. */
static int row_append(struct server *s, double secs, struct aacc *acc,
		      uint64_t *acked, char *why, size_t whylen)
{
	int nc = (int)K.clients;
	struct asess *as = ms_calloc((size_t)nc, sizeof(*as));
	struct agen g = {.t_stop = 1e300, .lat = acc->lat, .nlat = acc->nlat,
			 .caplat = acc->caplat};
	struct epoll_event evs[64];
	struct meter m = {0};
	struct result r = {0};
	int ret = 0;
	double warm = secs / 10 > 0.3 ? secs / 10 : 0.3;

	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.ep < 0) {
		snprintf(why, whylen, "epoll_create1: %s", strerror(errno));
		free(as);
		return -1;
	}
	for (int i = 0; i < nc && ret == 0; i++) {
		char user[32];
		struct asess *a = &as[i];
		user_name(3 + i, user, sizeof(user));
		a->idx = i;
		a->c.fd = -1;
		ret = imap_login(&a->c, s->port, user, why, whylen);
		if (ret == 0 && K.app_select)
			ret = imap_cmd(&a->c, why, whylen, "SELECT %s",
				       "INBOX");
		if (ret < 0)
			break;
		a->msglen = (size_t)K.app_size;
		a->buf = ms_malloc(CMD_ROOM + a->msglen + 2);
		msg_make(a->buf + CMD_ROOM, a->msglen, "append", 0,
			 (uint32_t)i);
		memcpy(a->buf + CMD_ROOM + a->msglen, "\r\n", 2);
		fcntl(a->c.fd, F_SETFL, fcntl(a->c.fd, F_GETFL) | O_NONBLOCK);
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = a};
		epoll_ctl(g.ep, EPOLL_CTL_ADD, a->c.fd, &ev);
	}
	double t_go = bp_now(), w0 = t_go + warm, w1 = w0 + secs;
	g.t_stop = w1;
	for (int i = 0; i < nc && ret == 0; i++)
		append_start(&g, &as[i]);
	int window_done = 0;
	double deadline = w1 + 120;
	while (ret == 0 && g.err[0] == '\0') {
		double t = bp_now();
		if (!g.in_window && !window_done && t >= w0) {
			meter_start(s, &m);
			g.in_window = 1;
		}
		if (g.in_window && t >= w1) {
			double w = meter_stop(s, &m, &r);
			acc->msgs += g.win_msgs;
			acc->win += w;
			acc->srv_cpu += r.srv * w;
			acc->cli_cpu += r.cli * w;
			g.in_window = 0;
			window_done = 1;
		}
		int busy = 0;
		for (int i = 0; i < nc; i++)
			busy += as[i].state != A_DONE;
		if (window_done && busy == 0)
			break;
		if (t > deadline) {
			snprintf(g.err, sizeof(g.err),
				 "APPENDs still in flight 120 s after the "
				 "window");
			break;
		}
		int tmo = 50;
		int n = epoll_wait(g.ep, evs, 64, tmo);
		for (int i = 0; i < n && g.err[0] == '\0'; i++) {
			struct asess *a = evs[i].data.ptr;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				asess_read(&g, a);
			if (g.err[0] == '\0' && (evs[i].events & EPOLLOUT))
				asess_flush(&g, a);
		}
	}
	if (ret == 0 && g.err[0] != '\0') {
		snprintf(why, whylen, "%s", g.err);
		ret = -1;
	}
	for (int i = 0; i < nc; i++) {
		acked[i] = as[i].acked;
		if (as[i].c.fd >= 0) {
			if (ret == 0) {
				fcntl(as[i].c.fd, F_SETFL,
				      fcntl(as[i].c.fd, F_GETFL) & ~O_NONBLOCK);
				imap_logout(&as[i].c);
			} else {
				imap_close(&as[i].c);
			}
		}
		free(as[i].buf);
	}
	close(g.ep);
	acc->lat = g.lat;
	acc->nlat = g.nlat;
	acc->caplat = g.caplat;
	free(as);
	return ret;
}

/* The pass's result from its slices (and acc's latencies freed). */
static void aacc_result(struct aacc *acc, struct result *r)
{
	if (acc->win > 0) {
		r->value = (double)acc->msgs / acc->win;
		r->srv = acc->srv_cpu / acc->win;
		r->cli = acc->cli_cpu / acc->win;
	}
	if (acc->nlat > 0) {
		qsort(acc->lat, acc->nlat, sizeof(double), cmp_double);
		r->p50 = acc->lat[(acc->nlat - 1) / 2];
		r->extra = acc->lat[(size_t)((double)(acc->nlat - 1) * 0.99)];
	}
	r->rounds = (int)acc->nlat;
	free(acc->lat);
	acc->lat = NULL;
	acc->nlat = acc->caplat = 0;
}

/* Every APPEND user's INBOX holds exactly what got OK. */
static int check_appended(struct server *s, const uint64_t *acked, char *why,
			  size_t whylen)
{
	struct imap c;
	for (int i = 0; i < K.clients; i++) {
		char user[32];
		user_name(3 + i, user, sizeof(user));
		if (imap_login(&c, s->port, user, why, whylen) < 0)
			return -1;
		int ret = imap_cmd(&c, why, whylen, "EXAMINE %s", "INBOX");
		imap_logout(&c);
		if (ret < 0)
			return -1;
		if (c.exists != acked[i]) {
			snprintf(why, whylen,
				 "%s: %llu APPENDs got OK, INBOX has %llu",
				 user, (unsigned long long)acked[i],
				 (unsigned long long)c.exists);
			return -1;
		}
	}
	return 0;
}

/* ---- one server: fill, then every row ---- */

static const char *row_label(enum row r, char *buf, size_t n)
{
	switch (r) {
	case R_BODY:
		snprintf(buf, n, "FETCH BODY.PEEK[] %ldx%ldK", K.body_msgs,
			 K.body_size / 1024);
		break;
	case R_ENV:
		snprintf(buf, n, "FETCH (FLAGS ENVELOPE) %ld", K.env_msgs);
		break;
	case R_SELECT:
		snprintf(buf, n, "SELECT %ld, warm", K.sel_msgs);
		break;
	case R_LOGIN:
		snprintf(buf, n, "LOGIN before it");
		break;
	case R_COLD:
		snprintf(buf, n, "1st LOGIN+SELECT, no index");
		break;
	case R_APPEND:
		snprintf(buf, n, "APPEND %ldK, %ld clients%s",
			 K.app_size / 1024, K.clients,
			 K.app_select ? ", sel" : "");
		break;
	case R_COPY:
		snprintf(buf, n, "COPY+MOVE 1:* of %ld", K.env_msgs);
		break;
	case R_STORE:
		snprintf(buf, n, "STORE odd uids of %ld", K.env_msgs);
		break;
	case R_STATUS:
		snprintf(buf, n, "STATUS of %d folders", STATUS_FOLDERS);
		break;
	case R_LSTATUS:
		snprintf(buf, n, "LIST-STATUS of %d folders", STATUS_FOLDERS);
		break;
	default:
		buf[0] = '\0';
	}
	return buf;
}

static const char *const row_unit[NROWS] = {"MB/s", "msgs/s", "ms",
					    "ms",   "ms",     "msgs/s",
					    "msgs/s", "msgs/s", "cmds/s",
					    "ms"};
/* 1: higher is better (a rate); 0: lower is better (a time) */
static const int row_rate[NROWS] = {1, 1, 0, 0, 0, 1, 1, 1, 1, 0};

/* A row's figure: three decimals below 1 (a SELECT's 0.334 ms against
   0.318 is not "0.33 against 0.32"), two below 10, one above. */
static const char *fmt_value(double v, char *buf, size_t size)
{
	snprintf(buf, size, v < 1 ? "%.3f" : v < 10 ? "%.2f" : "%.1f", v);
	return buf;
}

static void print_row(enum kind k, enum row rw, const struct result *r,
		      const char *why)
{
	char label[64], val[32];
	printf("%-8s %-28s ", kind_name[k],
	       row_label(rw, label, sizeof(label)));
	if (!r->ok) {
		printf("FAILED: %s\n", why);
	} else {
		printf("%10s %-6s %5.2f %5.0f%% %6d",
		       fmt_value(r->value, val, sizeof(val)), row_unit[rw],
		       r->srv, r->cli, r->rounds);
		if (rw == R_ENV)
			printf("  %.1f ms per FETCH", r->extra);
		if (rw == R_APPEND)
			printf("  p50 %.2f ms p99 %.2f ms", r->p50, r->extra);
		printf("\n");
		if (r->cli > 80)
			printf("  (the client used most of a core: this "
			       "figure may be its limit)\n");
	}
	fflush(stdout);
}

/*
 * Keep one pass's result of a row: the table shows the median of the
 * passes' values (set by finish_results) and the last pass's other
 * figures; a row is ok when every pass was.
 */
static void keep(struct result *r, const struct result *one, int ok)
{
	struct result old = *r;
	*r = *one;
	memcpy(r->vals, old.vals, sizeof(r->vals));
	memcpy(r->cpus, old.cpus, sizeof(r->cpus));
	r->nvals = old.nvals;
	r->ran = 1;
	r->ok = (old.ran ? old.ok : 1) && ok;
	if (ok && r->nvals < MAX_PASSES) {
		r->cpus[r->nvals] =
			one->value > 0 ? one->srv / one->value * 1e6 : 0;
		r->vals[r->nvals++] = one->value;
	}
}

/* One row on one running server: measured, kept, printed.  0 or 1. */
static int run_row(struct server *srv, enum row rw)
{
	enum kind k = srv->kind;
	struct result one = {.ran = 1};
	static char why[16384];
	int ret;

	why[0] = '\0';
	switch (rw) {
	case R_COLD:
		ret = row_cold(srv, (uint32_t)K.sel_msgs, &one, why,
			       sizeof(why));
		break;
	case R_BODY:
		ret = row_fetch(srv, 0, "BODY.PEEK[]", (uint32_t)K.body_msgs,
				(uint64_t)K.body_msgs * (uint64_t)K.body_size,
				1, &one, why, sizeof(why));
		break;
	case R_ENV:
		ret = row_fetch(srv, 1, "(FLAGS ENVELOPE)",
				(uint32_t)K.env_msgs, 0, 2, &one, why,
				sizeof(why));
		break;
	case R_COPY:
		ret = row_copy(srv, (uint32_t)K.env_msgs, &one, why,
			       sizeof(why));
		break;
	case R_STORE:
		ret = row_store(srv, (uint32_t)K.env_msgs, &one, why,
				sizeof(why));
		break;
	case R_STATUS:
		ret = row_status(srv, &one, why, sizeof(why));
		break;
	case R_LSTATUS:
		ret = row_lstatus(srv, &one, why, sizeof(why));
		break;
	default:
		return 0;
	}
	one.ok = ret == 0;
	keep(&res[rw][k], &one, ret == 0);
	print_row(k, rw, &one, why);
	return ret == 0 ? 0 : 1;
}

/*
 * The append row on every running server: APPEND_SLICES slices a pass,
 * each a window of MS_BENCH_SECONDS / APPEND_SLICES, the servers taking
 * turns slice by slice, so that the machine's speed, which moves over
 * seconds (one server's pass alone moved by 20-30%), weighs on them
 * alike; a pass's rate is its slices' APPENDs over their windows.  Every
 * APPEND stays: the INBOXes are checked against the sum at each pass.
 * Kept, printed; the failures.
 */
#define APPEND_SLICES 3
static int run_append(struct server *srv, const int *up)
{
	static uint64_t sum[NKINDS][MAX_CLIENTS];
	static char why[NKINDS][16384];
	struct aacc acc[NKINDS];
	int bad[NKINDS] = {0}, fails = 0;

	memset(acc, 0, sizeof(acc));
	for (int sl = 0; sl < APPEND_SLICES; sl++) {
		for (int k = 0; k < NKINDS; k++) {
			uint64_t acked[MAX_CLIENTS] = {0};
			if (!up[k] || bad[k])
				continue;
			why[k][0] = '\0';
			if (row_append(&srv[k], K.secs / APPEND_SLICES, &acc[k],
				       acked, why[k], sizeof(why[k])) < 0)
				bad[k] = 1;
			for (int i = 0; i < K.clients; i++)
				sum[k][i] += acked[i];
		}
	}
	for (int k = 0; k < NKINDS; k++) {
		struct result one = {.ran = 1};
		if (!up[k])
			continue;
		if (!bad[k] && check_appended(&srv[k], sum[k], why[k],
					      sizeof(why[k])) < 0)
			bad[k] = 1;
		aacc_result(&acc[k], &one);
		one.ok = !bad[k];
		keep(&res[R_APPEND][k], &one, !bad[k]);
		print_row((enum kind)k, R_APPEND, &one, why[k]);
		fails += bad[k];
	}
	return fails;
}

/* The select row (and LOGIN, measured with it) on every running server
   at once, their rounds interleaved: kept, printed.  The failures. */
static int run_select(struct server *srv, const int *up)
{
	struct server *ss[NKINDS];
	struct result one[NKINDS], login[NKINDS];
	static char why[16384];
	int ns = 0, bad = -1, fails = 0;

	for (int k = 0; k < NKINDS; k++)
		if (up[k])
			ss[ns++] = &srv[k];
	if (ns == 0)
		return 0;
	memset(one, 0, sizeof(one));
	why[0] = '\0';
	int ret = row_select(ss, ns, (uint32_t)K.sel_msgs, one, login, &bad,
			     why, sizeof(why));
	for (int i = 0; i < ns; i++) {
		/* a failed round fails its server's row; the others' rows
		   were cut short with it and are not kept either */
		int ok = ret == 0;
		enum kind k = ss[i]->kind;
		one[i].ran = login[i].ran = 1;
		one[i].ok = login[i].ok = ok;
		keep(&res[R_SELECT][k], &one[i], ok);
		keep(&res[R_LOGIN][k], &login[i], ok);
		const char *w = ok ? ""
			: i == bad ? why : "another server's round failed";
		print_row(k, R_SELECT, &one[i], w);
		print_row(k, R_LOGIN, &login[i], w);
		fails += !ok;
	}
	return fails;
}

/* The medians for the table. */
static void finish_results(void)
{
	for (int rw = 0; rw < NROWS; rw++) {
		for (int k = 0; k < NKINDS; k++) {
			struct result *r = &res[rw][k];
			double v[MAX_PASSES];
			int n = r->nvals;
			if (n == 0)
				continue;
			memcpy(v, r->vals, (size_t)n * sizeof(double));
			qsort(v, (size_t)n, sizeof(double), cmp_double);
			r->value = n % 2 ? v[n / 2]
					 : (v[n / 2 - 1] + v[n / 2]) / 2;
			memcpy(v, r->cpus, (size_t)n * sizeof(double));
			qsort(v, (size_t)n, sizeof(double), cmp_double);
			r->cpu_per = n % 2 ? v[n / 2]
					   : (v[n / 2 - 1] + v[n / 2]) / 2;
		}
	}
}

/*
 * Every server up and filled, then each row on each server in turn (the
 * servers interleaved, so that a busy machine slows all of them alike),
 * as many passes as asked; then every server stopped.  The number of
 * failures.
 */
static int run_all(void)
{
	static struct server srv[NKINDS];
	static char why[16384];
	int up[NKINDS] = {0}, fails = 0;

	for (int k = 0; k < NKINDS; k++) {
		if (!K.run[k])
			continue;
		double t0 = bp_now();
		why[0] = '\0';
		if (server_start(&srv[k], (enum kind)k, why, sizeof(why)) < 0 ||
		    fill(&srv[k], 0, "body", (uint32_t)K.body_msgs,
			 (uint32_t)K.body_size, why, sizeof(why)) < 0 ||
		    fill(&srv[k], 1, "env", (uint32_t)K.env_msgs, 2048, why,
			 sizeof(why)) < 0 ||
		    fill(&srv[k], 2, "sel", (uint32_t)K.sel_msgs, 1024, why,
			 sizeof(why)) < 0) {
			printf("%-8s FAILED to start or fill: %s\n",
			       kind_name[k], why);
			for (int r = 0; r < NROWS; r++)
				res[r][k].ran = 1;
			fails++;
			continue;
		}
		up[k] = 1;
		printf("%-8s (started and filled in %.1f s)\n", kind_name[k],
		       bp_now() - t0);
		fflush(stdout);
	}
	/* the cold row first: it must be the first access of its user
	   (mdbox: see above) */
	for (int k = 0; k < NKINDS; k++)
		if (up[k] && k != K_MDBOX && K.rows[R_COLD])
			fails += run_row(&srv[k], R_COLD);
	static const enum row order[] = {R_BODY, R_ENV, R_COPY, R_STORE,
					 R_STATUS, R_LSTATUS, R_SELECT,
					 R_APPEND};
	for (long pass = 0; pass < K.passes; pass++) {
		if (K.passes > 1)
			printf("-- pass %ld\n", pass + 1);
		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			if (!K.rows[order[i]])
				continue;
			if (order[i] == R_SELECT) {
				fails += run_select(srv, up);
				continue;
			}
			if (order[i] == R_APPEND) {
				fails += run_append(srv, up);
				continue;
			}
			for (int k = 0; k < NKINDS; k++)
				if (up[k])
					fails += run_row(&srv[k], order[i]);
		}
	}
	for (int k = 0; k < NKINDS; k++)
		if (K.run[k] && server_stop(&srv[k]) < 0)
			fails++;
	finish_results();
	return fails;
}

/* ---- environment ---- */

/* The mail uid for Dovecot: MAIL_USER, created if missing. */
static void check_env(const char *dir)
{
	char bin[PATH_MAX + 64], why[PATH_MAX + 256];
	static const char *const progs[] = {"mstored",
					    "modules/lib20_mstore_plugin.so"};
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		snprintf(bin, sizeof(bin), "%s/%s", build_dir(), progs[i]);
		if (K.run[K_MSTORE] && access(bin, R_OK) < 0) {
			snprintf(why, sizeof(why), "%s is not built (make)",
				 bin);
			mst_skip(why);
		}
	}
	if (access(DOVECOT_BIN, X_OK) < 0 || access(DOVECOT_IMAP, X_OK) < 0 ||
	    access(DOVEADM_BIN, X_OK) < 0)
		mst_skip("Dovecot's IMAP server is not installed (" DOVECOT_BIN
			 ", " DOVECOT_IMAP ", " DOVEADM_BIN "): apt-get "
			 "install dovecot-core dovecot-imapd");
	/* msd makes <dir>/mstest-imap-mstored-XXXXXX/a.sock */
	if (bp_dovecot_env(dir, "/mstest-imap-mstored-XXXXXX/a.sock", MAIL_USER, &mail_uid, &mail_gid,
			   why, sizeof(why)) < 0)
		mst_skip(why);
}

static int env_long(const char *name, long def, long lo, long hi, long *v_r)
{
	double d;
	if (mst_env_double("bench-imap", name, (double)def, (double)lo,
			   (double)hi, &d) < 0)
		return -1;
	*v_r = (long)d;
	return 0;
}

/* The environment variable var, a comma list of names[0..n) (NULL
   entries are not names): on[i] = 1 for those in it, 0 for the rest.
   Unset or empty: every name on.  0, or -1 (with a message) for an
   empty list or a word that is none of the names. */
static int pick(const char *var, const char *const *names, int n, int *on)
{
	const char *v = getenv(var), *p = v;
	int any = 0;

	for (int i = 0; i < n; i++)
		on[i] = !v || !*v;
	if (!v || !*v)
		return 0;
	for (int i = 0; i < n; i++)
		on[i] = 0;
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		int hit = -1;
		for (int i = 0; i < n && hit < 0; i++)
			if (names[i] && strlen(names[i]) == len &&
			    strncmp(p, names[i], len) == 0)
				hit = i;
		if (hit < 0) {
			fprintf(stderr, "bench-imap: %s=%s: \"%.*s\" is not one "
				"of:", var, v, (int)len, p);
			for (int i = 0; i < n; i++)
				if (names[i])
					fprintf(stderr, " %s", names[i]);
			fprintf(stderr, "\n");
			return -1;
		}
		on[hit] = 1;
		any = 1;
		p += len + (p[len] == ',');
	}
	return any ? 0 : -1;
}

static int read_knobs(void)
{
	if (mst_env_double("bench-imap", "MS_BENCH_SECONDS", 3, 0.1, 3600,
			   &K.secs) < 0 ||
	    env_long("MS_BENCH_IMAP_BODY_MSGS", 2000, 1, 1000000,
		     &K.body_msgs) < 0 ||
	    env_long("MS_BENCH_IMAP_BODY_SIZE", 65536, 1024, 16 << 20,
		     &K.body_size) < 0 ||
	    env_long("MS_BENCH_IMAP_ENV_MSGS", 10000, 1, 1000000, &K.env_msgs) <
		    0 ||
	    env_long("MS_BENCH_IMAP_SELECT_MSGS", 100000, 1, 2000000,
		     &K.sel_msgs) < 0 ||
	    env_long("MS_BENCH_IMAP_APPEND_CLIENTS", 16, 1, MAX_CLIENTS,
		     &K.clients) < 0 ||
	    env_long("MS_BENCH_IMAP_APPEND_SIZE", 4096, 1024, 16 << 20,
		     &K.app_size) < 0 ||
	    env_long("MS_BENCH_IMAP_APPEND_SELECT", 0, 0, 1, &K.app_select) <
		    0 ||
	    env_long("MS_BENCH_IMAP_PREFETCH", 4, 0, 1000, &K.prefetch) < 0 ||
	    env_long("MS_BENCH_IMAP_PASSES", 3, 1, MAX_PASSES, &K.passes) < 0)
		return -1;
	static const char *const row_names[NROWS] = {
	    [R_BODY] = "body",	   [R_ENV] = "env",	  [R_SELECT] = "select",
	    [R_COLD] = "cold",	   [R_APPEND] = "append", [R_COPY] = "copy",
	    [R_STORE] = "store",   [R_STATUS] = "status", [R_LSTATUS] = "lstatus"};
	if (pick("MS_BENCH_IMAP_ROWS", row_names, NROWS, K.rows) < 0 ||
	    pick("MS_BENCH_IMAP_SERVERS", kind_name, NKINDS, K.run) < 0)
		return -1;
	return 0;
}

/* ---- the table ---- */

/* mstore's advantage of values m and o of row rw: > 1 means mstore is
   faster (a rate above the other's, a time below). */
static double advantage(enum row rw, double m, double o)
{
	return row_rate[rw] ? m / o : o / m;
}

/* The table's: of the two medians. */
static int ratio(enum row rw, enum kind other, double *v_r)
{
	const struct result *m = &res[rw][K_MSTORE], *o = &res[rw][other];
	if (!m->ran || !o->ran || !m->ok || !o->ok || m->value <= 0 ||
	    o->value <= 0)
		return -1;
	*v_r = advantage(rw, m->value, o->value);
	return 0;
}

/* Each pass's own ratio (the servers of a pass ran side by side, the
   table's medians may come from different passes): how far a target is
   from the noise. */
static void pass_ratios(enum row rw)
{
	const struct result *m = &res[rw][K_MSTORE], *o = &res[rw][K_MDBOX];
	if (!m->ran || !o->ran || !m->ok || !o->ok || m->nvals < 2 ||
	    m->nvals != o->nvals)
		return;
	printf("; the passes");
	for (int i = 0; i < m->nvals; i++) {
		if (m->vals[i] <= 0 || o->vals[i] <= 0)
			return;
		printf(" %.2fx", advantage(rw, m->vals[i], o->vals[i]));
	}
}

static void print_table(void)
{
	char label[64], cell[32];
	printf("\n%-28s %-6s %10s %10s %10s %13s %15s\n", "row", "unit",
	       "mstore", "mdbox", "maildir", "mstore/mdbox", "mstore/maildir");
	for (int rw = 0; rw < NROWS; rw++) {
		printf("%-28s %-6s",
		       row_label((enum row)rw, label, sizeof(label)),
		       row_unit[rw]);
		for (int k = 0; k < NKINDS; k++) {
			const struct result *r = &res[rw][k];
			if (r->ran && r->ok)
				fmt_value(r->value, cell, sizeof(cell));
			else
				snprintf(cell, sizeof(cell), "%s",
					 !K.run[k] ? "-"
					 : !r->ran ? "n/a"
						   : "FAILED");
			printf(" %10s", cell);
		}
		double v;
		for (int k = K_MDBOX; k < NKINDS; k++) {
			if (ratio((enum row)rw, (enum kind)k, &v) == 0)
				snprintf(cell, sizeof(cell), "%.2fx", v);
			else
				snprintf(cell, sizeof(cell), "-");
			printf(" %*s", k == K_MDBOX ? 13 : 15, cell);
		}
		printf("\n");
	}
	printf("(ratios are mstore's speed over the other's: for times, "
	       "the other's time over\nmstore's; above 1.00x mstore is "
	       "faster)\n");

	printf("\ntargets (a missed target is reported, not failed):\n");
	static const enum row main_rows[] = {R_BODY, R_ENV, R_SELECT, R_APPEND};
	for (size_t i = 0; i < sizeof(main_rows) / sizeof(main_rows[0]); i++) {
		enum row rw = main_rows[i];
		double v, want = rw == R_APPEND ? 3.0 : 1.0;
		printf("  %-28s mstore/mdbox >= %.1fx: ",
		       row_label(rw, label, sizeof(label)), want);
		if (ratio(rw, K_MDBOX, &v) == 0)
			printf("%.2fx (%s)", v, v >= want ? "met" : "MISSED");
		else
			printf("not measured");
		pass_ratios(rw);
		printf("\n");
	}
	/* information: what the APPEND rate leaves out, the CPU each
	   server spent on a message (its rate also follows the disk) */
	const struct result *a = res[R_APPEND];
	if (a[K_MSTORE].ran && a[K_MSTORE].ok && a[K_MSTORE].cpu_per > 0) {
		printf("\nserver CPU per APPEND (median of the passes; "
		       "information):\n");
		for (int k = 0; k < NKINDS; k++) {
			if (!a[k].ran || !a[k].ok || a[k].cpu_per <= 0)
				continue;
			printf("  %-8s %6.0f us", kind_name[k], a[k].cpu_per);
			if (k != K_MSTORE)
				printf("   %.2fx mstore's", a[k].cpu_per /
						      a[K_MSTORE].cpu_per);
			printf("\n");
		}
	}
}

int main(void)
{
	int fails = 0;

	if (read_knobs() < 0)
		return 1;
	if (bp_bench_dir("bench-imap", bench_dir, sizeof(bench_dir)) < 0)
		return 1;
	ms_msg_set_level(MS_MSG_WARN);
	check_env(bench_dir);
	bp_fatal_signals(on_fatal_signal);
	atexit(server_kill_all);

	char ver[128];
	bp_dovecot_version(DOVECOT_BIN, ver, sizeof(ver));
	printf("bench-imap: dir=%s, %.1f s per row; %ld CPUs; Dovecot %.*s; "
	       "mail uid %s (%u)\n",
	       bench_dir, K.secs, sysconf(_SC_NPROCESSORS_ONLN),
	       (int)strlen(ver), ver, MAIL_USER, (unsigned)mail_uid);
	bp_print_load("at start");
	printf("srv: the server's CPU (Dovecot's process tree, and mstored), "
	       "cores; cli: this\nclient's CPU, %% of one core; n: rounds "
	       "(APPENDs for the append row)\n\n");
	printf("%-8s %-28s %10s %-6s %5s %6s %6s\n", "server", "row", "value",
	       "unit", "srv", "cli", "n");
	fflush(stdout);
	fails = run_all();
	bp_print_load("at the end");
	print_table();
	if (fails)
		printf("bench-imap: %d rows FAILED\n", fails);
	return fails ? 1 : 0;
}
