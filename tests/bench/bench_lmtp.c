/*
 * bench-lmtp - LMTP delivery into mstore (mstore-lmtpd + mstored) next to
 * Dovecot's own LMTP server delivering to mdbox and to maildir, in the
 * same run, on the same machine, with the same load.
 *
 * The load: S sessions (1, 8, 64) over TCP on 127.0.0.1, each a closed
 * loop: LHLO once, then per delivery MAIL, RCPT x R (1 or 10), DATA,
 * sent in one write when the server offers PIPELINING (both do), then
 * the message once the 354 has come, then the R replies (one per
 * recipient, RFC 2033); the next delivery starts when the last reply is
 * in.  Latency is per delivery, from the MAIL write to the last reply.
 * Messages are 4 KiB and 64 KiB exactly (headers and a base64 body of
 * random bytes, which LZ4 cannot shrink); the first header is a
 * Message-ID with a per-session counter, so no two bodies are the same
 * and neither side can deduplicate across deliveries.  The bytes depend
 * only on (session, counter, size): both servers get the same messages.
 * Recipients are the users u0..u9 (the same ten on both servers): with
 * R = 1 delivery k of session i goes to u((i + k) % 10), with R = 10 to
 * all ten, in an order rotated the same way.
 *
 * The load generator is one thread and one epoll loop in this process
 * (no fork, no threads): its cost is per delivery (a few syscalls),
 * not per session, with no context switch between sessions, which
 * matters on a 2-core machine where every cycle it takes is one the
 * servers lack (seen: 20-30% of one core at mstore's 64-session 4 KiB
 * rate, a few percent at Dovecot's); a closed loop needs no timer, and
 * one loop makes the go/warm-up/window/drain phases exact.  The gen%
 * column shows its share of one core in the window.
 *
 * The servers, each new for every case (a scratch directory under
 * MS_BENCH_DIR, removed after the case):
 *  - mstore: mstored (tests/lib/msd.c, its defaults: io_uring, both
 *    copies in the scratch directory, on the same disk) and
 *    mstore-lmtpd on a free 127.0.0.1 port.  Durable: a 250 is sent
 *    only once the record is written and fdatasync'ed on both copies.
 *    Users u0..u9 created through the admin socket.
 *  - Dovecot (Debian's dovecot-core + dovecot-lmtpd), private: its own
 *    dovecot.conf, base_dir, state_dir and log files in the scratch
 *    directory, a distinct instance_name, `protocols = lmtp` with one
 *    inet_listener on a free 127.0.0.1 port, passwd-file passdb and
 *    userdb with u0..u9, mail as the system user mstbench (created with
 *    useradd --system if missing: Dovecot refuses mail as root),
 *    mail_location mdbox:~/mdbox or maildir:~/Maildir, mail_fsync
 *    `optimized` (its default) and `always`; everything else at
 *    Dovecot's defaults (auth cache off, info log of every delivery,
 *    maildir_copy_with_hardlinks = yes: with R = 10 maildir hardlinks
 *    one file into ten mailboxes, mdbox copies).  Started as our child
 *    with `dovecot -F -c CONF`, stopped by the PID in its master.pid;
 *    every admin call is `doveadm -c CONF`.
 *
 * Each case: all S sessions connect and finish LHLO, then go; after a
 * warm-up of MS_BENCH_SECONDS/10 (at least 0.3 s) the window of
 * MS_BENCH_SECONDS (default 3) starts; when it ends, no session starts
 * another delivery, those in flight finish and QUIT.  The columns:
 *   msgs/s   messages (transactions) completed in the window per second
 *   MB/s     msgs/s x message size (bytes received, not x recipients)
 *   p50 p99  delivery latency (MAIL to the last reply) in the window, ms
 *   cpu_ms   CPU time per delivery (one recipient's 250 after DATA):
 *            utime+stime (+ cutime+cstime, the children they reaped) of
 *            every process of the server's tree from /proc/PID/stat, in
 *            the window: mstored and mstore-lmtpd (all their threads,
 *            io_uring workers too); Dovecot's master and all its
 *            children (lmtp, auth, log, config, anvil, stats)
 *   gen%     the load generator's CPU in the window, % of one core
 *   err      recipients that got no 250 in the whole case
 * A reply other than the expected one, or a connection the server
 * closes, fails that delivery: its recipients without a 250 count in
 * err (not in msgs/s), and the session reconnects and goes on, as an
 * MTA would.  For mstore any err fails the case; for Dovecot it is a
 * result (its mdbox panics on an fcntl EDEADLK now and then when
 * sessions deliver to one user at once; the first such line of its log
 * is printed).  Correctness, cheaply: every user's INBOX is checked
 * empty before the load (that also makes Dovecot create each user's
 * storage, as a first login would) and after it must hold exactly the
 * deliveries the generator saw acknowledged for that user, plus at most
 * those sent and never answered with a 250 (mstore: MBOX_STATUS through
 * the protocol; Dovecot: `doveadm -c CONF mailbox status -A messages
 * INBOX`).  A count outside that fails the case.
 *
 * Then the ratios mstore/Dovecot of msgs/s per case and Dovecot run,
 * and the targets (a missed target is reported, not failed): at 64
 * sessions, 4 KiB, 1 recipient, mstore >= 10x Dovecot-mdbox; at 64
 * sessions, 4 KiB, 10 recipients, >= 10x Dovecot's best format; mstore
 * CPU per delivery <= 0.2 ms (64 sessions, 4 KiB, 1 recipient); p99 at
 * 64 sessions below the lowest Dovecot p99 of the same case.  Each is
 * checked against every Dovecot fsync mode that ran.
 *
 * Reading it: on a machine where other jobs run, the figures move from
 * run to run; the ratios (cases interleaved: for each load, mstore and
 * then every Dovecot run, one after the other) are steadier than the
 * rates.  cpu_ms says whether a side is CPU-bound: msgs/s x rcpt x
 * cpu_ms near 2000 ms/s means both cores were busy with that server.
 *
 * Environment: MS_BENCH_SECONDS (default 3), MS_BENCH_DIR (default
 * var/bench; every scratch directory goes there, so mstore's copies and
 * Dovecot's mail are on the same disk), MS_BENCH_LMTP_FSYNC (both,
 * optimized or always: Dovecot's mail_fsync runs; default both),
 * MS_BENCH_LMTP_SESSIONS (a comma list out of 1,8,64; default all),
 * MS_BENCH_LMTP_SERVERS (a comma list out of mstore,mdbox,maildir;
 * default all; the last two knobs are for quick runs while developing),
 * MSTORE_BUILD (where mstored and mstore-lmtpd are).  Exit 77 when
 * Dovecot's LMTP server (dovecot-lmtpd) or doveadm is not installed,
 * mstored or mstore-lmtpd is not built, we are not root (Dovecot needs
 * a mail uid to switch to), or the mail uid cannot enter MS_BENCH_DIR;
 * 1 when a case failed.  Every process started here is stopped and
 * reaped before exit (Dovecot's children too: we wait until they are
 * gone); on SIGTERM or SIGINT they are killed and the scratch
 * directories are left.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

#define NUSERS 10
#define MAX_SESS 64
#define MAX_RCPT 10
#define MAIL_USER "mstbench"
#define DOMAIN "example.test"
#define DOVECOT_BIN "/usr/sbin/dovecot"
#define DOVEADM_BIN "/usr/bin/doveadm"
#define DOVECOT_LMTP "/usr/lib/dovecot/lmtp"
#define SETUP_TIMEOUT 30.0 /* connect + LHLO of every session */
#define DRAIN_TIMEOUT 60.0 /* deliveries in flight at the window's end */
#define IN_CAP 8192

/* ---- the servers ---- */

enum srv_kind {
	SRV_MSTORE,
	SRV_DOVECOT
};

struct variant {
	enum srv_kind kind;
	const char *format; /* Dovecot: mdbox or maildir */
	const char *fsync;  /* Dovecot: mail_fsync */
};

struct server {
	const struct variant *v;
	int port;
	char dir[PATH_MAX];
	char log[PATH_MAX + 32];
	pid_t roots[2]; /* whose trees are the server */
	int nroots;
	/* mstore */
	struct msd d;
	pid_t lmtpd;
	/* Dovecot */
	char conf[PATH_MAX + 32];
	char infolog[PATH_MAX + 32];
	char pidfile[PATH_MAX + 32];
	pid_t master;
};

static const char *build_dir(void)
{
	const char *b = getenv("MSTORE_BUILD");
	return b && *b ? b : "build";
}

static uid_t mail_uid;
static gid_t mail_gid;
static char bench_dir[PATH_MAX];
/* what to kill when told to go, and at exit after a failure */
static struct server *volatile cur_srv;

static void on_fatal_signal(int sig)
{
	(void)sig;
	struct server *s = cur_srv;
	if (s != NULL) {
		if (s->lmtpd > 0)
			kill(s->lmtpd, SIGKILL);
		if (s->d.pid > 0)
			kill(s->d.pid, SIGKILL);
		/* the master takes its children with it */
		if (s->master > 0)
			kill(s->master, SIGTERM);
	}
	_exit(1);
}

static void server_kill_all(void)
{
	struct server *s = cur_srv;
	if (s == NULL)
		return;
	cur_srv = NULL;
	if (s->lmtpd > 0) {
		kill(s->lmtpd, SIGKILL);
		waitpid(s->lmtpd, NULL, 0);
	}
	if (s->master > 0) {
		int st;
		bp_stop_tree(s->master, 10, 10, &st);
	}
	/* mstored: msd's own atexit */
}

static int mstore_start(struct server *s, char *why, size_t whylen)
{
	char extra[512], bin[PATH_MAX];
	snprintf(extra, sizeof(extra),
		 "\n[lmtp]\nlisten = 127.0.0.1:%d\nhostname = lmtp.%s\n"
		 "domains = %s\n",
		 s->port, DOMAIN, DOMAIN);
	msd_setup(&s->d, "lmtp-mstore", extra);
	snprintf(s->dir, sizeof(s->dir), "%s", s->d.dir);
	snprintf(s->log, sizeof(s->log), "%s/lmtpd.log", s->dir);
	msd_start(&s->d); /* exits if it cannot */
	s->roots[0] = s->d.pid;
	for (int u = 0; u < NUSERS; u++) {
		char user[16];
		snprintf(user, sizeof(user), "u%d", u);
		int ret = msd_user_add(&s->d, user);
		if (ret < 0) {
			snprintf(why, whylen, "USER_CREATE %s: %s", user,
				 ms_strerror(ret));
			return -1;
		}
	}
	snprintf(bin, sizeof(bin), "%s/mstore-lmtpd", build_dir());
	char *argv[] = {bin, "-c", s->d.conf, NULL};
	s->lmtpd = bp_spawn(argv, s->log);
	if (s->lmtpd < 0) {
		snprintf(why, whylen, "fork: %s", strerror(errno));
		return -1;
	}
	s->roots[1] = s->lmtpd;
	s->nroots = 2;
	for (double end = bp_now() + 15; bp_now() < end; bp_sleep(0.01)) {
		if (waitpid(s->lmtpd, NULL, WNOHANG) == s->lmtpd) {
			s->lmtpd = 0;
			snprintf(why, whylen, "mstore-lmtpd exited; see %s",
				 s->log);
			return -1;
		}
		if (bp_file_has(s->log, "event=store.connected") &&
		    bp_port_answers(s->port))
			return 0;
	}
	snprintf(why, whylen, "mstore-lmtpd not ready within 15 s; see %s",
		 s->log);
	return -1;
}

static int dovecot_start(struct server *s, char *why, size_t whylen)
{
	char *root = mst_tmpdir("lmtp-dovecot");
	char path[PATH_MAX + 64], users[PATH_MAX + 32];

	snprintf(s->dir, sizeof(s->dir), "%s", root);
	snprintf(s->conf, sizeof(s->conf), "%s/dovecot.conf", root);
	snprintf(s->log, sizeof(s->log), "%s/dovecot.log", root);
	snprintf(s->infolog, sizeof(s->infolog), "%s/dovecot-info.log", root);
	snprintf(s->pidfile, sizeof(s->pidfile), "%s/run/master.pid", root);
	snprintf(users, sizeof(users), "%s/users", root);
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
	FILE *f = fopen(users, "w");
	if (f == NULL) {
		snprintf(why, whylen, "%s: %s", users, strerror(errno));
		return -1;
	}
	for (int u = 0; u < NUSERS; u++)
		fprintf(f, "u%d:{PLAIN}bench::::::\n", u);
	fclose(f);
	/* a distinct instance name: the root's unique suffix */
	const char *tag = strrchr(root, '-');
	f = fopen(s->conf, "w");
	if (f == NULL) {
		snprintf(why, whylen, "%s: %s", s->conf, strerror(errno));
		return -1;
	}
	fprintf(f,
		"# bench-lmtp: a private Dovecot on loopback\n"
		"instance_name = mstbench%s\n"
		"base_dir = %s/run\n"
		"state_dir = %s/state\n"
		"log_path = %s\n"
		"info_log_path = %s\n"
		"listen = 127.0.0.1\n"
		"protocols = lmtp\n"
		"ssl = no\n"
		"disable_plaintext_auth = no\n"
		"auth_mechanisms = plain\n"
		"hostname = lmtp.%s\n"
		"postmaster_address = postmaster@%s\n"
		"first_valid_uid = %u\nlast_valid_uid = %u\n"
		"first_valid_gid = %u\nlast_valid_gid = %u\n"
		"mail_location = %s:~/%s\n"
		"mail_fsync = %s\n"
		"passdb {\n  driver = passwd-file\n"
		"  args = username_format=%%n %s\n}\n"
		"userdb {\n  driver = passwd-file\n"
		"  args = username_format=%%n %s\n"
		"  default_fields = uid=%u gid=%u home=%s/mail/%%n\n}\n"
		"service lmtp {\n  inet_listener lmtp {\n"
		"    address = 127.0.0.1\n    port = %d\n  }\n}\n",
		tag ? tag : "", root, root, s->log, s->infolog, DOMAIN, DOMAIN,
		(unsigned)mail_uid, (unsigned)mail_uid, (unsigned)mail_gid,
		(unsigned)mail_gid, s->v->format,
		strcmp(s->v->format, "mdbox") == 0 ? "mdbox" : "Maildir",
		s->v->fsync, users, users, (unsigned)mail_uid,
		(unsigned)mail_gid, root, s->port);
	if (fclose(f) != 0) {
		snprintf(why, whylen, "%s: %s", s->conf, strerror(errno));
		return -1;
	}
	char *argv[] = {DOVECOT_BIN, "-F", "-c", s->conf, NULL};
	s->master = bp_spawn(argv, s->log);
	if (s->master < 0) {
		snprintf(why, whylen, "fork: %s", strerror(errno));
		return -1;
	}
	s->roots[0] = s->master;
	s->nroots = 1;
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

static int server_start(struct server *s, const struct variant *v, char *why,
			size_t whylen)
{
	memset(s, 0, sizeof(*s));
	s->v = v;
	s->d.pid = -1;
	s->port = bp_free_port();
	if (s->port <= 0) {
		snprintf(why, whylen, "no free port: %s", strerror(errno));
		return -1;
	}
	cur_srv = s;
	return v->kind == SRV_MSTORE ? mstore_start(s, why, whylen)
				     : dovecot_start(s, why, whylen);
}

/* Messages in each user's INBOX.  0, or -1 with why. */
static int server_count(struct server *s, long long count[NUSERS], char *why,
			size_t whylen)
{
	for (int u = 0; u < NUSERS; u++)
		count[u] = -1;
	if (s->v->kind == SRV_MSTORE) {
		for (int u = 0; u < NUSERS; u++) {
			char user[16];
			snprintf(user, sizeof(user), "u%d", u);
			struct ms_client *c = msd_connect(&s->d, user);
			struct ms_req q = {.op = MS_OP_MBOX_STATUS};
			struct ms_reply rep;
			const char *err = "";
			q.u.mbox.name = MS_PSTR("INBOX");
			if (ms_client_request(c, &q, &rep, &err) == 0)
				count[u] = rep.u.mbox.messages;
			ms_client_close(&c);
			if (count[u] < 0) {
				snprintf(why, whylen, "MBOX_STATUS %s: %s",
					 user, err);
				return -1;
			}
		}
		return 0;
	}
	char cmd[PATH_MAX + 128], line[512];
	snprintf(cmd, sizeof(cmd),
		 DOVEADM_BIN " -c '%s' -f flow mailbox status -A messages "
			     "INBOX 2>&1",
		 s->conf);
	FILE *p = popen(cmd, "r");
	if (p == NULL) {
		snprintf(why, whylen, "popen doveadm: %s", strerror(errno));
		return -1;
	}
	/* "u3 INBOX messages=17" (flow: maybe with name=value fields) */
	while (fgets(line, sizeof(line), p) != NULL) {
		int u;
		const char *m = strstr(line, "messages=");
		const char *name = line;
		if (strncmp(name, "username=", 9) == 0)
			name += 9;
		if (m == NULL || sscanf(name, "u%d ", &u) != 1 || u < 0 ||
		    u >= NUSERS) {
			snprintf(why, whylen, "doveadm said: %.*s",
				 (int)strcspn(line, "\n"), line);
			continue;
		}
		count[u] = atoll(m + 9);
	}
	int st = pclose(p);
	for (int u = 0; u < NUSERS; u++) {
		if (count[u] < 0) {
			if (st != 0 || why[0] == '\0')
				snprintf(why + strlen(why),
					 whylen - strlen(why),
					 "%sdoveadm mailbox status: no count "
					 "for u%d (exit %d)",
					 why[0] ? "; " : "", u, st);
			return -1;
		}
	}
	return 0;
}

/* Stop everything, reap it, check the logs, remove the directory. */
static int server_stop(struct server *s)
{
	/* our daemons' lines are logfmt (docs/logging.md) */
	static const char *const ms_bad[] = {"level=warning", "level=error",
					     "level=fatal", "level=panic",
					     NULL};
	static const char *const ms_ignore[] = {NULL};
	static const char *const dv_bad[] = {
		"Warning:", "Error:", "Fatal:", "Panic:", NULL};
	/* our own SIGTERM at the end */
	static const char *const dv_ignore[] = {"Killed with signal 15", NULL};
	int bad = 0;

	if (s->v->kind == SRV_MSTORE) {
		if (s->lmtpd > 0) {
			kill(s->lmtpd, SIGTERM);
			int st = bp_reap(s->lmtpd, 30);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				printf("  (mstore-lmtpd exit status %d)\n", st);
				bad++;
			}
			s->lmtpd = 0;
		}
		if (s->d.pid > 0) {
			int st = msd_stop(&s->d);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				printf("  (mstored exit status %d)\n", st);
				bad++;
			}
		}
		bp_log_check("mstored", s->d.logfile, ms_bad, ms_ignore);
		bp_log_check("mstore-lmtpd", s->log, ms_bad, ms_ignore);
	} else if (s->master > 0) {
		/* stop it by the PID in its master.pid, and wait until
		   every process of its tree is gone */
		pid_t pid = s->master;
		FILE *f = fopen(s->pidfile, "r");
		int filepid = 0;
		if (f != NULL) {
			if (fscanf(f, "%d", &filepid) != 1)
				filepid = 0;
			fclose(f);
		}
		if (filepid != (int)pid) {
			printf("  (dovecot's master.pid says %d, we started "
			       "%d)\n",
			       filepid, (int)pid);
			bad++;
		}
		int st;
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
		bp_log_check("dovecot", s->log, dv_bad, dv_ignore);
	}
	cur_srv = NULL;
	if (getenv("MS_KEEP") == NULL)
		mst_rmtree(s->dir);
	return bad ? -1 : 0;
}

static const char *server_name(const struct variant *v, char *buf, size_t n)
{
	if (v->kind == SRV_MSTORE)
		snprintf(buf, n, "%-8s %-8s %-9s", "mstore", "log",
			 "fdatasync");
	else
		snprintf(buf, n, "%-8s %-8s %-9s", "dovecot", v->format,
			 v->fsync);
	return buf;
}

/* ---- the load generator ---- */

enum sess_state {
	S_CONNECT,
	S_GREET,
	S_LHLO,
	S_READY,
	S_ENVELOPE,
	S_DATA,
	S_QUIT,
	S_DONE
};

struct sess {
	int fd, idx, events;
	enum sess_state state;
	int pipelining;
	int was_ready;     /* counted in g->ready once */
	unsigned conn_gen; /* +1 per connection */
	char in[IN_CAP];
	size_t inlen;
	const char *out;
	size_t outlen, outoff;
	char cmd[64 + MAX_RCPT * 64];
	size_t line_end[MAX_RCPT + 2]; /* ends of the envelope's lines */
	int nlines, sent_lines;
	int k; /* replies so far in this phase */
	int rcpt[MAX_RCPT];
	char *msg; /* the message, then ".\r\n" */
	size_t msglen;
	uint64_t seq;
	double t0;
};

struct lcase {
	int nsess;
	uint32_t size;
	int nrcpt;
};

struct gen {
	const struct lcase *c;
	struct sess *s;
	int ep, port;
	int ready, active;
	int go, in_window, window_done;
	double t_stop; /* no new delivery after this */
	uint64_t win_msgs, win_dlv, total_msgs;
	long long per_user[NUSERS];  /* 250s after DATA */
	long long uncertain[NUSERS]; /* sent, then no 250: maybe stored */
	uint64_t errors;             /* recipients without a 250 */
	uint64_t reconnects;
	char first_error[512];
	float *lat; /* ms, deliveries completed in the window */
	size_t nlat, caplat;
	char err[1024];
};

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#define MSGID_FMT "Message-ID: <%020llu.%03d@bench." DOMAIN ">\r\n"

/*
 * The message of session idx: exactly size bytes, then ".\r\n".  The
 * first line (Message-ID) carries the counter, rewritten per delivery
 * by msg_stamp(); no line starts with a dot.
 */
static char *msg_make(int idx, uint32_t size, size_t *len_r)
{
	char *m = ms_malloc(size + 3);
	int n = snprintf(m, size,
			 MSGID_FMT "From: <bench@" DOMAIN ">\r\n"
				   "To: <list@" DOMAIN ">\r\n"
				   "Subject: bench-lmtp session %d\r\n"
				   "Date: Tue, 03 Jun 2025 10:00:00 +0000\r\n"
				   "MIME-Version: 1.0\r\n"
				   "Content-Type: application/octet-stream\r\n"
				   "Content-Transfer-Encoding: base64\r\n\r\n",
			 0ULL, idx, idx);
	uint64_t rnd = 0x9e3779b97f4a7c15ULL * (uint64_t)(idx + 1) + size;
	size_t pos = (size_t)n;
	while (pos < size) {
		/* a line of up to 76 characters and CRLF, the last one
		   shorter so that the message ends at size with CRLF */
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

static void msg_stamp(struct sess *s)
{
	char line[128];
	int n = snprintf(line, sizeof(line), MSGID_FMT,
			 (unsigned long long)s->seq, s->idx);
	memcpy(s->msg, line, (size_t)n);
}

static void gen_fail(struct gen *g, const struct sess *s, const char *fmt,
		     const char *arg)
{
	if (g->err[0] != '\0')
		return;
	int n = snprintf(g->err, sizeof(g->err),
			 "session %d: ", s ? s->idx : -1);
	snprintf(g->err + n, sizeof(g->err) - (size_t)n, "%s%s", fmt,
		 arg ? arg : "");
}

static void sess_events(struct gen *g, struct sess *s, int want)
{
	if (s->fd < 0 || want == s->events)
		return;
	struct epoll_event ev = {.events = (uint32_t)want, .data.ptr = s};
	epoll_ctl(g->ep, EPOLL_CTL_MOD, s->fd, &ev);
	s->events = want;
}

static void sess_close(struct gen *g, struct sess *s)
{
	if (s->fd >= 0) {
		epoll_ctl(g->ep, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
		s->fd = -1;
		g->active--;
	}
	s->state = S_DONE;
}

static void delivery_error(struct gen *g, struct sess *s, const char *what,
			   const char *line);
static int sess_open(struct gen *g, struct sess *s, int port);

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
			delivery_error(g, s, "send: ", strerror(errno));
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

static void delivery_start(struct gen *g, struct sess *s)
{
	int n = g->c->nrcpt;
	size_t off;

	s->seq++;
	msg_stamp(s);
	off = (size_t)snprintf(s->cmd, sizeof(s->cmd),
			       "MAIL FROM:<bench@" DOMAIN ">\r\n");
	s->line_end[0] = off;
	for (int r = 0; r < n; r++) {
		s->rcpt[r] = (int)((uint64_t)(s->idx + r) + s->seq) % NUSERS;
		off += (size_t)snprintf(s->cmd + off, sizeof(s->cmd) - off,
					"RCPT TO:<u%d@" DOMAIN ">\r\n",
					s->rcpt[r]);
		s->line_end[1 + r] = off;
	}
	off += (size_t)snprintf(s->cmd + off, sizeof(s->cmd) - off, "DATA\r\n");
	s->line_end[n + 1] = off;
	s->nlines = n + 2;
	s->k = 0;
	s->state = S_ENVELOPE;
	s->t0 = bp_now();
	/* with PIPELINING the whole envelope at once (RFC 2920: DATA is
	   the last command of the group); else one line per reply */
	s->sent_lines = s->pipelining ? s->nlines : 1;
	sess_send(g, s, s->cmd, s->line_end[s->sent_lines - 1]);
}

/*
 * The server failed the delivery in flight (a reply other than the
 * expected one, or it closed the connection): its recipients without a
 * 250 are errors (and, once the message was sent, maybe stored); the
 * session reconnects, as an MTA would, and goes on.  Dovecot's mdbox
 * does this under concurrent deliveries to one user (see docs/lmtp.md).
 */
static void delivery_error(struct gen *g, struct sess *s, const char *what,
			   const char *line)
{
	int n = g->c->nrcpt;
	if (s->state == S_QUIT) {
		/* done anyway */
		sess_close(g, s);
		return;
	}
	if (s->state == S_ENVELOPE || s->state == S_DATA) {
		int acked = s->state == S_DATA ? s->k : 0;
		g->errors += (uint64_t)(n - acked);
		for (int r = acked; s->state == S_DATA && r < n; r++)
			g->uncertain[s->rcpt[r]]++;
	} else {
		g->errors++;
	}
	if (g->first_error[0] == '\0')
		snprintf(g->first_error, sizeof(g->first_error),
			 "session %d: %s%s", s->idx, what, line);
	sess_close(g, s);
	s->inlen = 0;
	s->outlen = s->outoff = 0;
	s->pipelining = 0;
	g->reconnects++;
	/* a server that keeps failing: give up */
	if (g->reconnects > 200 + 10 * g->total_msgs) {
		gen_fail(g, s, "the server keeps failing; the first: ",
			 g->first_error);
		return;
	}
	sess_open(g, s, g->port);
}

static void lat_add(struct gen *g, double ms)
{
	if (g->nlat == g->caplat) {
		g->caplat = g->caplat ? g->caplat * 2 : 65536;
		g->lat = realloc(g->lat, g->caplat * sizeof(*g->lat));
		if (g->lat == NULL)
			abort();
	}
	g->lat[g->nlat++] = (float)ms;
}

static void delivery_done(struct gen *g, struct sess *s)
{
	double t = bp_now();
	g->total_msgs++;
	if (g->in_window) {
		g->win_msgs++;
		g->win_dlv += (uint64_t)g->c->nrcpt;
		lat_add(g, (t - s->t0) * 1e3);
	}
	if (t < g->t_stop) {
		delivery_start(g, s);
	} else {
		s->state = S_QUIT;
		sess_send(g, s, "QUIT\r\n", 6);
	}
}

/* One whole reply (its last line); the line is NUL-terminated. */
static void on_reply(struct gen *g, struct sess *s, int code, const char *line)
{
	int n = g->c->nrcpt;
	switch (s->state) {
	case S_GREET:
		if (code != 220) {
			delivery_error(g, s, "greeting: ", line);
			break;
		}
		s->state = S_LHLO;
		sess_send(g, s, "LHLO bench." DOMAIN "\r\n",
			  sizeof("LHLO bench." DOMAIN "\r\n") - 1);
		break;
	case S_LHLO:
		if (code != 250) {
			delivery_error(g, s, "LHLO: ", line);
			break;
		}
		s->state = S_READY;
		if (!s->was_ready) {
			s->was_ready = 1;
			g->ready++;
		}
		if (g->go) {
			/* back after an error */
			if (bp_now() < g->t_stop) {
				delivery_start(g, s);
			} else {
				s->state = S_QUIT;
				sess_send(g, s, "QUIT\r\n", 6);
			}
		}
		break;
	case S_ENVELOPE: {
		int want = s->k == n + 1 ? 354 : 250;
		if (code != want && !(want == 250 && code == 251)) {
			delivery_error(g, s,
				       s->k == 0   ? "MAIL: "
				       : s->k <= n ? "RCPT: "
						   : "DATA: ",
				       line);
			break;
		}
		s->k++;
		if (s->k < s->nlines && s->sent_lines == s->k) {
			/* no PIPELINING: the next command now */
			size_t from = s->line_end[s->k - 1];
			s->sent_lines++;
			sess_send(g, s, s->cmd + from,
				  s->line_end[s->k] - from);
		} else if (s->k == s->nlines) {
			s->state = S_DATA;
			s->k = 0;
			sess_send(g, s, s->msg, s->msglen);
		}
		break;
	}
	case S_DATA:
		if (code != 250) {
			delivery_error(g, s, "after DATA: ", line);
			break;
		}
		g->per_user[s->rcpt[s->k]]++;
		if (++s->k == n)
			delivery_done(g, s);
		break;
	case S_QUIT:
		sess_close(g, s);
		break;
	default:
		delivery_error(g, s, "unexpected reply: ", line);
		break;
	}
}

static void sess_read(struct gen *g, struct sess *s)
{
	for (;;) {
		if (s->inlen == sizeof(s->in) - 1) {
			gen_fail(g, s, "reply line too long", NULL);
			sess_close(g, s);
			return;
		}
		ssize_t r = recv(s->fd, s->in + s->inlen,
				 sizeof(s->in) - 1 - s->inlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			if (s->state == S_QUIT)
				sess_close(g, s);
			else
				delivery_error(g, s,
					       "connection closed by the "
					       "server: ",
					       r < 0 ? strerror(errno) : "EOF");
			return;
		}
		s->inlen += (size_t)r;
		s->in[s->inlen] = '\0';
		char *p = s->in, *nl;
		unsigned gen0 = s->conn_gen;
		while (s->fd >= 0 && s->conn_gen == gen0 && g->err[0] == '\0' &&
		       (nl = memchr(p, '\n', s->inlen - (size_t)(p - s->in))) !=
			       NULL) {
			*nl = '\0';
			if (nl > p && nl[-1] == '\r')
				nl[-1] = '\0';
			if (strlen(p) < 3 || !isdigit((unsigned char)p[0]) ||
			    !isdigit((unsigned char)p[1]) ||
			    !isdigit((unsigned char)p[2])) {
				gen_fail(g, s, "bad reply line: ", p);
				break;
			}
			if (s->state == S_LHLO && strlen(p) > 4 &&
			    strncasecmp(p + 4, "PIPELINING", 10) == 0 &&
			    (p[14] == '\0' || p[14] == ' '))
				s->pipelining = 1;
			if (p[3] != '-')
				on_reply(g, s, atoi(p), p);
			p = nl + 1;
		}
		if (g->err[0] != '\0') {
			sess_close(g, s);
			return;
		}
		if (s->fd < 0 || s->conn_gen != gen0)
			return;
		s->inlen -= (size_t)(p - s->in);
		memmove(s->in, p, s->inlen);
	}
}

static void sess_connected(struct gen *g, struct sess *s)
{
	int e = 0;
	socklen_t len = sizeof(e);
	getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &len);
	if (e != 0) {
		/* the server is gone (it was there at the start) */
		gen_fail(g, s, "connect: ", strerror(e));
		sess_close(g, s);
		return;
	}
	s->state = S_GREET;
	sess_events(g, s, EPOLLIN);
}

static int sess_open(struct gen *g, struct sess *s, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	int one = 1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		gen_fail(g, s, "socket: ", strerror(errno));
		return -1;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	g->active++;
	s->conn_gen++;
	s->state = S_CONNECT;
	s->events = EPOLLOUT;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
	if (epoll_ctl(g->ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
		gen_fail(g, s, "epoll_ctl: ", strerror(errno));
		close(s->fd);
		s->fd = -1;
		g->active--;
		return -1;
	}
	if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
	    errno != EINPROGRESS) {
		gen_fail(g, s, "connect: ", strerror(errno));
		sess_close(g, s);
		return -1;
	}
	return 0;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

struct result {
	int ran, ok;
	double mps, mbs, p50, p99, cpu_ms, gen_pct;
	uint64_t errors;
};

/*
 * One case against a running server: connect, LHLO, go, warm-up,
 * window, drain.  0, or -1 with g->err.
 */
static int run_load(struct server *srv, const struct lcase *c, double warm,
		    double secs, struct gen *g, struct result *res)
{
	struct sess *ss = ms_calloc((size_t)c->nsess, sizeof(*ss));
	struct epoll_event evs[128];
	double t_go = 0, w0 = 0, w1 = 0, t_s0 = 0, t_s1 = 0;
	double cpu0 = 0, cpu1 = 0, gen0 = 0, gen1 = 0;
	double deadline = bp_now() + SETUP_TIMEOUT;

	memset(g, 0, sizeof(*g));
	g->c = c;
	g->s = ss;
	g->port = srv->port;
	g->t_stop = 1e300;
	g->ep = epoll_create1(EPOLL_CLOEXEC);
	if (g->ep < 0) {
		gen_fail(g, NULL, "epoll_create1: ", strerror(errno));
		free(ss);
		return -1;
	}
	for (int i = 0; i < c->nsess; i++) {
		ss[i].idx = i;
		ss[i].fd = -1;
		ss[i].msg = msg_make(i, c->size, &ss[i].msglen);
	}
	for (int i = 0; i < c->nsess && g->err[0] == '\0'; i++)
		sess_open(g, &ss[i], srv->port);

	/* the phases are checked before the loop may end: the last
	   session closes only after w1, and the window is closed then */
	for (;;) {
		double t = bp_now();
		if (!g->go && g->ready == c->nsess) {
			g->go = 1;
			t_go = t;
			w0 = t_go + warm;
			w1 = w0 + secs;
			g->t_stop = w1;
			deadline = w1 + DRAIN_TIMEOUT;
			for (int i = 0; i < c->nsess; i++)
				delivery_start(g, &ss[i]);
			continue;
		}
		if (g->go && !g->in_window && !g->window_done && t >= w0) {
			cpu0 = bp_tree_cpu(srv->roots, srv->nroots);
			gen0 = bp_self_cpu();
			t_s0 = bp_now();
			g->in_window = 1;
		}
		if (g->in_window && t >= w1) {
			t_s1 = bp_now();
			cpu1 = bp_tree_cpu(srv->roots, srv->nroots);
			gen1 = bp_self_cpu();
			g->in_window = 0;
			g->window_done = 1;
		}
		if (g->active == 0 || g->err[0] != '\0')
			break;
		if (t > deadline) {
			gen_fail(g, NULL,
				 g->go ? "deliveries still in flight 60 s "
					 "after the window"
				       : "sessions not ready within 30 s",
				 NULL);
			break;
		}
		/* wake up at the next phase boundary */
		double next = deadline;
		if (g->go && !g->in_window && !g->window_done)
			next = w0;
		else if (g->in_window)
			next = w1;
		int tmo = (int)((next - t) * 1e3) + 1;
		if (tmo > 100)
			tmo = 100;
		if (tmo < 0)
			tmo = 0;
		int n = epoll_wait(g->ep, evs, 128, tmo);
		if (n < 0 && errno != EINTR) {
			gen_fail(g, NULL, "epoll_wait: ", strerror(errno));
			break;
		}
		for (int i = 0; i < n && g->err[0] == '\0'; i++) {
			struct sess *s = evs[i].data.ptr;
			unsigned cg = s->conn_gen;
			if (s->fd < 0)
				continue;
			if (s->state == S_CONNECT) {
				sess_connected(g, s);
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				sess_read(g, s);
			if (s->fd >= 0 && s->conn_gen == cg &&
			    (evs[i].events & EPOLLOUT))
				sess_flush(g, s);
		}
	}
	for (int i = 0; i < c->nsess; i++) {
		sess_close(g, &ss[i]);
		free(ss[i].msg);
	}
	close(g->ep);
	free(ss);
	if (g->err[0] == '\0' && !g->window_done)
		gen_fail(g, NULL, "the window did not end", NULL);
	if (g->err[0] != '\0')
		return -1;

	double w = t_s1 - t_s0;
	res->mps = (double)g->win_msgs / w;
	res->mbs = res->mps * c->size / 1e6;
	res->cpu_ms = g->win_dlv ? (cpu1 - cpu0) / (double)g->win_dlv * 1e3 : 0;
	res->gen_pct = 100 * (gen1 - gen0) / w;
	if (g->nlat > 0) {
		qsort(g->lat, g->nlat, sizeof(*g->lat), cmp_float);
		res->p50 = g->lat[(g->nlat - 1) / 2];
		res->p99 = g->lat[(size_t)((double)(g->nlat - 1) * 0.99)];
	}
	return 0;
}

/* ---- main ---- */

/* The mail uid for Dovecot: MAIL_USER, created if missing. */
static void check_env(const char *dir)
{
	char bin[PATH_MAX + 32], why[PATH_MAX + 256];
	static const char *const progs[] = {"mstored", "mstore-lmtpd"};
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		snprintf(bin, sizeof(bin), "%s/%s", build_dir(), progs[i]);
		if (access(bin, X_OK) < 0) {
			snprintf(why, sizeof(why), "%s is not built (make)",
				 bin);
			mst_skip(why);
		}
	}
	if (access(DOVECOT_BIN, X_OK) < 0 || access(DOVECOT_LMTP, X_OK) < 0 ||
	    access(DOVEADM_BIN, X_OK) < 0)
		mst_skip("Dovecot's LMTP server is not installed (" DOVECOT_BIN
			 ", " DOVECOT_LMTP ", " DOVEADM_BIN "): apt-get "
			 "install dovecot-core dovecot-lmtpd (./configure "
			 "does it as root)");
	/* msd makes <dir>/mstest-lmtp-mstore-XXXXXX/a.sock */
	if (bp_dovecot_env(dir, "/mstest-lmtp-mstore-XXXXXX/a.sock", MAIL_USER, &mail_uid, &mail_gid,
			   why, sizeof(why)) < 0)
		mst_skip(why);
}

static const char *size_name(uint32_t len)
{
	return len == 4096 ? "4KiB" : len == 65536 ? "64KiB" : "?";
}

/* A comma list of session counts, each one of 1, 8, 64. */
static int parse_sessions(const char *s, int *out, int max)
{
	int n = 0;
	while (s && *s && n < max) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || (v != 1 && v != 8 && v != 64))
			return -1;
		out[n++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			return -1;
	}
	return n;
}

#define NVARIANTS 5
static const struct variant variants[NVARIANTS] = {
	{SRV_MSTORE, NULL, NULL},
	{SRV_DOVECOT, "mdbox", "optimized"},
	{SRV_DOVECOT, "mdbox", "always"},
	{SRV_DOVECOT, "maildir", "optimized"},
	{SRV_DOVECOT, "maildir", "always"},
};

static const char *const fsyncs[] = {"optimized", "always"};

/* Index of the Dovecot variant, or -1. */
static int variant_of(const char *format, const char *fsync)
{
	for (int v = 1; v < NVARIANTS; v++)
		if (strcmp(variants[v].format, format) == 0 &&
		    strcmp(variants[v].fsync, fsync) == 0)
			return v;
	return -1;
}

int main(void)
{
	static const uint32_t sizes[] = {4096, 65536};
	static const int rcpts[] = {1, 10};
	int sessions[3] = {1, 8, 64}, nsessions = 3;
	const char *fs_env = getenv("MS_BENCH_LMTP_FSYNC");
	const char *ss_env = getenv("MS_BENCH_LMTP_SESSIONS");
	const char *sv_env = getenv("MS_BENCH_LMTP_SERVERS");
	int run_server[3] = {1, 1, 1}; /* mstore, mdbox, maildir */
	int run_fsync[2] = {1, 1};
	double secs;
	int fails = 0;

	if (mst_env_double("bench-lmtp", "MS_BENCH_SECONDS", 3, 0.1, 3600,
			   &secs) < 0)
		return 1;
	if (fs_env && *fs_env && strcmp(fs_env, "both") != 0) {
		run_fsync[0] = strcmp(fs_env, "optimized") == 0;
		run_fsync[1] = strcmp(fs_env, "always") == 0;
		if (!run_fsync[0] && !run_fsync[1]) {
			fprintf(stderr,
				"bench-lmtp: MS_BENCH_LMTP_FSYNC=%s: "
				"both, optimized or always\n",
				fs_env);
			return 1;
		}
	}
	if (ss_env && *ss_env &&
	    (nsessions = parse_sessions(ss_env, sessions, 3)) <= 0) {
		fprintf(stderr,
			"bench-lmtp: MS_BENCH_LMTP_SESSIONS=%s: a "
			"comma list of 1, 8, 64\n",
			ss_env);
		return 1;
	}
	if (sv_env && *sv_env) {
		static const char *const names[] = {"mstore", "mdbox",
						    "maildir"};
		char list[256];
		snprintf(list, sizeof(list), ",%s,", sv_env);
		int any = 0;
		for (int i = 0; i < 3; i++) {
			char item[32];
			snprintf(item, sizeof(item), ",%s,", names[i]);
			run_server[i] = strstr(list, item) != NULL;
			any |= run_server[i];
		}
		if (!any) {
			fprintf(stderr,
				"bench-lmtp: MS_BENCH_LMTP_SERVERS=%s: "
				"a comma list of mstore, mdbox, "
				"maildir\n",
				sv_env);
			return 1;
		}
	}
	double warm = secs / 10 > 0.3 ? secs / 10 : 0.3;
	if (bp_bench_dir("bench-lmtp", bench_dir, sizeof(bench_dir)) < 0)
		return 1;
	ms_msg_set_level(MS_MSG_WARN);
	check_env(bench_dir);
	bp_fatal_signals(on_fatal_signal);
	atexit(server_kill_all);

	char ver[128];
	bp_dovecot_version(DOVECOT_BIN, ver, sizeof(ver));
	printf("bench-lmtp: dir=%s, %.1f s per case after %.1f s of warm-up; "
	       "%ld CPUs; Dovecot %.*s; mail uid %s (%u)\n",
	       bench_dir, secs, warm, sysconf(_SC_NPROCESSORS_ONLN),
	       (int)strlen(ver), ver, MAIL_USER, (unsigned)mail_uid);
	bp_print_load("at start");
	printf("each case: a fresh server; S sessions on 127.0.0.1, each a "
	       "closed loop of MAIL,\nRCPT x R, DATA (pipelined), message; "
	       "users u0..u9; msgs/s and MB/s of\nmessages received; "
	       "p50/p99 per delivery (MAIL to the last reply); cpu_ms: CPU "
	       "of\nthe server's process tree per delivery (one recipient's "
	       "250); gen%%: the load\ngenerator's CPU, %% of one core; err: recipients without a 250 (the "
	       "server failed\nthe delivery; the session reconnects and goes "
	       "on; not counted in msgs/s)\n\n");
	printf("%-8s %-8s %-9s %4s %5s %4s %9s %7s %8s %8s %7s %5s %5s\n",
	       "server", "format", "fsync", "sess", "size", "rcpt", "msgs/s",
	       "MB/s", "p50_ms", "p99_ms", "cpu_ms", "gen%", "err");
	fflush(stdout);

	/* results[size][rcpt][sessions][variant] */
	static struct result res[2][2][3][NVARIANTS];
	struct server srv;
	struct gen g;
	for (size_t si = 0; si < 2; si++) {
		for (size_t ri = 0; ri < 2; ri++) {
			for (int ki = 0; ki < nsessions; ki++) {
				struct lcase c = {sessions[ki], sizes[si],
						  rcpts[ri]};
				int kslot = sessions[ki] == 1   ? 0
					    : sessions[ki] == 8 ? 1
								: 2;
				for (int v = 0; v < NVARIANTS; v++) {
					const struct variant *var =
						&variants[v];
					if (var->kind == SRV_DOVECOT &&
					    !run_fsync[strcmp(var->fsync,
							      "always") == 0])
						continue;
					if (!run_server[var->kind == SRV_MSTORE
								? 0
							: strcmp(var->format,
								 "mdbox") == 0
								? 1
								: 2])
						continue;
					struct result *r =
						&res[si][ri][kslot][v];
					char why[16384] = "", name[64];
					long long have[NUSERS];
					memset(r, 0, sizeof(*r));
					r->ran = 1;
					server_name(var, name, sizeof(name));
					printf("%s %4d %5s %4d ", name, c.nsess,
					       size_name(c.size), c.nrcpt);
					fflush(stdout);
					int ok = server_start(&srv, var, why,
							      sizeof(why)) == 0;
					/* every user's INBOX there and empty
					   before the load (Dovecot creates
					   the user's storage here, as a
					   user's first login would) */
					if (ok && server_count(&srv, have, why,
							       sizeof(why)) < 0)
						ok = 0;
					for (int u = 0; ok && u < NUSERS; u++) {
						if (have[u] == 0)
							continue;
						snprintf(why, sizeof(why),
							 "u%d has %lld "
							 "messages at the "
							 "start",
							 u, have[u]);
						ok = 0;
					}
					if (ok && run_load(&srv, &c, warm, secs,
							   &g, r) < 0) {
						snprintf(why, sizeof(why), "%s",
							 g.err);
						ok = 0;
					}
					if (ok && server_count(&srv, have, why,
							       sizeof(why)) < 0)
						ok = 0;
					if (ok && var->kind == SRV_MSTORE &&
					    g.errors > 0) {
						/* ours must not fail */
						snprintf(why, sizeof(why),
							 "%llu recipients "
							 "without a 250; the "
							 "first: %s",
							 (unsigned long long)
								 g.errors,
							 g.first_error);
						ok = 0;
					}
					/* every 250 stored; beyond them only
					   what was sent and then not
					   answered with a 250 */
					for (int u = 0; ok && u < NUSERS; u++) {
						if (have[u] >= g.per_user[u] &&
						    have[u] <=
							    g.per_user[u] +
								    g.uncertain
									    [u])
							continue;
						snprintf(why, sizeof(why),
							 "u%d: %lld "
							 "acknowledged (%lld "
							 "unanswered), %lld "
							 "in its INBOX",
							 u, g.per_user[u],
							 g.uncertain[u],
							 have[u]);
						ok = 0;
					}
					r->errors = g.errors;
					if (ok)
						printf("%9.0f %7.1f %8.2f %8.2f "
						       "%7.3f %4.0f%% %5llu\n",
						       r->mps, r->mbs, r->p50,
						       r->p99, r->cpu_ms,
						       r->gen_pct,
						       (unsigned long long)
							       g.errors);
					if (!ok)
						printf("FAILED: %s\n", why);
					else if (r->gen_pct > 80)
						printf("  (the load generator "
						       "used most of a core: "
						       "this figure may be "
						       "its limit)\n");
					else if (g.errors > 0)
						printf("  (%llu recipients "
						       "without a 250, %llu "
						       "reconnects; the first: "
						       "%s)\n",
						       (unsigned long long)
							       g.errors,
						       (unsigned long long)
							       g.reconnects,
						       g.first_error);
					fflush(stdout);
					free(g.lat);
					g.lat = NULL;
					if (server_stop(&srv) < 0)
						ok = 0;
					r->ok = ok;
					if (!ok)
						fails++;
				}
			}
		}
	}
	bp_print_load("at the end");

	/* ---- ratios ---- */
	printf("\nratio mstore/dovecot, messages/s (and p99: dovecot/mstore, "
	       "higher is better for mstore)\n");
	printf("%4s %5s %4s", "sess", "size", "rcpt");
	for (int v = 1; v < NVARIANTS; v++)
		if (run_fsync[strcmp(variants[v].fsync, "always") == 0])
			printf("  %8s/%-9s", variants[v].format,
			       variants[v].fsync);
	printf("\n");
	for (size_t si = 0; si < 2; si++) {
		for (size_t ri = 0; ri < 2; ri++) {
			for (int ki = 0; ki < nsessions; ki++) {
				int kslot = sessions[ki] == 1   ? 0
					    : sessions[ki] == 8 ? 1
								: 2;
				struct result *m = &res[si][ri][kslot][0];
				printf("%4d %5s %4d", sessions[ki],
				       size_name(sizes[si]), rcpts[ri]);
				for (int v = 1; v < NVARIANTS; v++) {
					struct result *d =
						&res[si][ri][kslot][v];
					if (!run_fsync[strcmp(variants[v].fsync,
							      "always") == 0])
						continue;
					if (m->ok && d->ok && d->mps > 0 &&
					    m->p99 > 0)
						printf("  %6.1fx p99 %5.1fx",
						       m->mps / d->mps,
						       d->p99 / m->p99);
					else
						printf("  %18s", "-");
				}
				printf("\n");
			}
		}
	}

	/* ---- targets: 64 sessions, 4 KiB ---- */
	int k64 = -1;
	for (int ki = 0; ki < nsessions; ki++)
		if (sessions[ki] == 64)
			k64 = 2;
	if (k64 < 0) {
		printf("\ntargets: not checked (no 64-session cases)\n");
		return fails ? 1 : 0;
	}
	printf("\ntargets (64 sessions; a missed target is reported, "
	       "not failed):\n");
	struct result *m1 = &res[0][0][2][0], *m10 = &res[0][1][2][0];
	for (int f = 0; f < 2; f++) {
		if (!run_fsync[f])
			continue;
		struct result *d =
			&res[0][0][2][variant_of("mdbox", fsyncs[f])];
		if (m1->ok && d->ok && d->mps > 0)
			printf("  1 rcpt: mstore >= 10x dovecot mdbox "
			       "(mail_fsync=%s): %.2fx (%s)\n",
			       fsyncs[f], m1->mps / d->mps,
			       m1->mps >= 10 * d->mps ? "met" : "MISSED");
		else
			printf("  1 rcpt: mstore >= 10x dovecot mdbox "
			       "(mail_fsync=%s): not measured\n",
			       fsyncs[f]);
	}
	for (int f = 0; f < 2; f++) {
		if (!run_fsync[f])
			continue;
		struct result *a =
			&res[0][1][2][variant_of("mdbox", fsyncs[f])];
		struct result *b =
			&res[0][1][2][variant_of("maildir", fsyncs[f])];
		struct result *best = !a->ok             ? b
				      : !b->ok           ? a
				      : a->mps >= b->mps ? a
							 : b;
		const char *bname = best == a ? "mdbox" : "maildir";
		if (m10->ok && best->ok && best->mps > 0)
			printf("  10 rcpt: mstore >= 10x dovecot's best format "
			       "(mail_fsync=%s: %s): %.2fx (%s)\n",
			       fsyncs[f], bname, m10->mps / best->mps,
			       m10->mps >= 10 * best->mps ? "met" : "MISSED");
		else
			printf("  10 rcpt: mstore >= 10x dovecot's best format "
			       "(mail_fsync=%s): not measured\n",
			       fsyncs[f]);
	}
	if (m1->ok)
		printf("  mstore CPU per delivery <= 0.2 ms (1 rcpt): %.3f ms "
		       "(%s); with 10 rcpt %.3f ms\n",
		       m1->cpu_ms, m1->cpu_ms <= 0.2 ? "met" : "MISSED",
		       m10->ok ? m10->cpu_ms : 0.0);
	else
		printf("  mstore CPU per delivery <= 0.2 ms: not measured\n");
	for (size_t si = 0; si < 2; si++) {
		for (size_t ri = 0; ri < 2; ri++) {
			struct result *m = &res[si][ri][2][0];
			double low = 0;
			int have_d = 0;
			for (int v = 1; v < NVARIANTS; v++) {
				struct result *d = &res[si][ri][2][v];
				if (d->ok && (!have_d || d->p99 < low)) {
					low = d->p99;
					have_d = 1;
				}
			}
			if (m->ok && have_d)
				printf("  p99 below dovecot's lowest (%s, %d "
				       "rcpt): %.2f ms vs %.2f ms (%s)\n",
				       size_name(sizes[si]), rcpts[ri], m->p99,
				       low, m->p99 < low ? "met" : "MISSED");
			else
				printf("  p99 below dovecot's lowest (%s, %d "
				       "rcpt): not measured\n",
				       size_name(sizes[si]), rcpts[ri]);
		}
	}
	if (fails)
		printf("bench-lmtp: %d cases FAILED\n", fails);
	return fails ? 1 : 0;
}
