/*
 * bench-store - what mstored sustains through its socket, next to what
 * the log engine does in-process in the same run, on the same disk.
 *
 * Appends: for 4 and 64 KiB messages and 1, 8 and 64 clients, a fresh
 * mstored; each client is a process with its own connection and user,
 * in a closed loop (one APPEND in flight: send, wait for the reply,
 * send the next), one placement into its user's INBOX.  A reply means
 * durable on both copies.  Bodies are random (LZ4 does not shrink
 * them) and unique (a tag in the first 16 bytes), so every APPEND
 * writes its body.  The engine case before it runs bench-log's closed
 * loop (ms_log, NOOP records of the message size, as many appenders),
 * and the table prints daemon / engine.  Target: >= 70% at 64 clients.
 *
 * Fetch: on the last append store (64 KiB), 1, 8 and 64 clients fetch
 * random messages (FETCH_BODY in 1 MiB chunks via ms_client_fetch_body,
 * each body checked by its tag); the page cache is warm.  Reference:
 * one thread doing ms_log_read + ms_body_decode on the same bodies.
 *
 * Users: one 4 KiB APPEND to each of MS_BENCH_USERS (50,000) users, by
 * one admin connection pipelining; the rate of each tenth of the users
 * (it must not fall as more users have had mail).
 *
 * Restart: a store with MS_BENCH_MESSAGES messages in one INBOX, built
 * by two clients pipelining APPENDs of 1000 placements.  Then, each
 * after a clean stop (SIGTERM, timed), msd_start() is timed until the
 * sockets answer: three times with the page cache warm (target < 1 s),
 * once with the store's files evicted from the cache, once with the
 * index directory deleted (a full rebuild from the log).  MBOX_STATUS
 * checks the count each time.  msd_start() gives up after 30 s.
 *
 * The table also shows, from the daemon's STATUS and /proc, appends per
 * flush, mean flush time and CPU time per append, and the same for the
 * engine: they say whether a figure is the disk's or the CPU's.  Under
 * each daemon row: the client processes' CPU per append, and how busy
 * the daemon and the clients kept the machine's cores together over the
 * window (near 100%: the CPU is the limit, whatever the daemon's share).  Lines
 * that a daemon logged above info level are shown once its store goes.
 *
 * Each case measures for MS_BENCH_SECONDS (default 3) after a warm-up
 * of a tenth of that.  Environment: MS_BENCH_DIR (default var/bench;
 * the daemons' directories go there too), MS_BENCH_SECONDS,
 * MS_BENCH_MESSAGES (default 1000000), MS_BENCH_ENGINE=psync,
 * MSTORE_BUILD (where mstored is), MS_BENCH_CASES and MS_BENCH_PARTS
 * (to run a part of it; see parse_cases), MS_BENCH_STORE_CONF (more
 * [store] settings for the daemons), MS_BENCH_WAITS (connections parked
 * in WAIT through each append case, as IMAP sessions in IDLE; 0).  Under
 * each append row: the
 * histograms of records per flush (STATUS log.batch.*, and the engine's),
 * over the measured window.  fio, if installed, adds the disk's
 * figures for reference.  Exit 77 when mstored is not built, the engine
 * cannot run here, or the socket paths under MS_BENCH_DIR would be too
 * long; 1 when a case failed (a missed target is reported, not failed).
 * Every process started here is stopped and reaped before exit; on
 * SIGTERM or SIGINT they are killed and scratch directories are left.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bproc.h"
#include "body.h"
#include "client.h"
#include "log.h"
#include "msd.h"
#include "msg.h"
#include "mstest.h"

#define BENCH_MAX_CLIENTS 64
#define BENCH_TAG_MAGIC 0x6e62736dU /* "msbn" */
#define BENCH_FETCH_CHUNK (1u << 20)
#define BENCH_TIMEOUT_MS 60000u /* per client read or write */
#define BENCH_BUILD_CLIENTS 2
#define BENCH_BUILD_DEPTH 4 /* APPENDs in flight per build client */
#define BENCH_BUILD_BODY 512
#define BENCH_MESSAGES_MAX 100000000UL

/* At the start of every body: who wrote it, and its sequence number. */
struct tag {
	uint32_t magic;
	uint32_t client;
	uint64_t seq;
};

/* One client's results, in memory shared with the parent. */
struct slot {
	uint64_t window; /* operations completed in the measured window */
	uint64_t bytes;  /* bytes moved in the window */
	uint64_t total;  /* operations (or messages) completed in all */
	uint32_t max_uid;
	int failed;
	char err[200];
};

struct shared {
	double t_go;
	struct slot s[BENCH_MAX_CLIENTS];
};

enum job_kind {
	JOB_APPEND,
	JOB_FETCH,
	JOB_BUILD
};

/* What the clients of one run do; copied into each child by fork. */
struct job {
	enum job_kind kind;
	uint32_t len; /* body size */
	int nusers;   /* client i is user i % nusers */
	double warm, secs;
	uint32_t max_uid[BENCH_MAX_CLIENTS]; /* fetch: messages per user */
	uint64_t messages;                   /* build: in all */
	int nclients;
};

/* Counters of the daemon's STATUS that explain a figure. */
struct dstat {
	uint64_t flushes, flush_ns, appends;
	uint64_t holds, timeouts, held_ns; /* ops.gather_* */
	uint64_t batch[MS_LOG_BATCH_BUCKETS + 1]; /* log.batch.* */
	double cpu_s; /* the daemon's CPU time (all its threads) */
	double cli_s; /* the client processes' CPU time, together */
	double t;     /* when */
};

/* Everything to stop if we are told to go (run-bench's timeout). */
static pid_t kids[BENCH_MAX_CLIENTS];
static struct msd *cur_msd;

static void on_fatal_signal(int sig)
{
	(void)sig;
	for (int i = 0; i < BENCH_MAX_CLIENTS; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	if (cur_msd != NULL && cur_msd->pid > 0)
		kill(cur_msd->pid, SIGKILL);
	_exit(1);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of a process, all threads (io_uring workers too), or 0. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], line[1024];
	unsigned long long ut = 0, st = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	char *p = fgets(line, sizeof(line), f);
	fclose(f);
	/* after "pid (comm) ": state is field 3, utime 14, stime 15 */
	if (p == NULL || (p = strrchr(line, ')')) == NULL ||
	    sscanf(p + 1,
		   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
		   "%llu",
		   &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void sleep_until(double t)
{
	for (double d = t - now_s(); d > 0; d = t - now_s()) {
		struct timespec ts = {(time_t)d,
				      (long)((d - (double)(time_t)d) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

static const char *size_name(uint32_t len)
{
	return len == 4096 ? "4KiB" : len == 65536 ? "64KiB" : "?";
}

static void user_name(int u, char *out, size_t n)
{
	snprintf(out, n, "bench%d", u);
}

static void tag_put(uint8_t *body, uint32_t client, uint64_t seq)
{
	struct tag t = {BENCH_TAG_MAGIC, client, seq};
	memcpy(body, &t, sizeof(t));
}

static void slot_fail(struct slot *sl, const char *what, const char *err)
{
	sl->failed = 1;
	snprintf(sl->err, sizeof(sl->err), "%s: %s", what, err ? err : "");
}

/* ---- the clients ---- */

static int client_append(struct ms_client *c, int i, const struct job *job,
			 struct slot *sl, double w0, double w1)
{
	struct ms_placement pl = {.mailbox = MS_PSTR("INBOX")};
	struct ms_req q = {.op = MS_OP_APPEND};
	uint8_t *body = ms_malloc(job->len);
	int ret = 0;

	mst_fill(body, job->len, (uint64_t)i + 1);
	q.u.append.body = body;
	q.u.append.body_len = job->len;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	for (uint64_t seq = 0; now_s() < w1; seq++) {
		struct ms_reply rep;
		struct ms_proto_iter it;
		struct ms_append_result r = {0};
		const char *err = "";
		tag_put(body, (uint32_t)i, seq);
		if ((ret = ms_client_request(c, &q, &rep, &err)) < 0) {
			slot_fail(sl, "APPEND", err);
			break;
		}
		ms_proto_iter_results(&it, &rep.u.append);
		if (ms_proto_next_result(&it, &r) != 1 || r.status != 0) {
			slot_fail(sl, "APPEND placement",
				  r.status ? ms_strerror(r.status)
					   : "no result in the reply");
			ret = -1;
			break;
		}
		double t = now_s();
		if (t >= w0 && t < w1) {
			sl->window++;
			sl->bytes += job->len;
		}
		sl->total++;
		sl->max_uid = r.uid;
	}
	free(body);
	return ret;
}

static int client_fetch(struct ms_client *c, int i, const struct job *job,
			struct slot *sl, double w0, double w1)
{
	int u = i % job->nusers;
	uint64_t rnd = (uint64_t)i * 7919 + 1;
	struct ms_buf body;
	int ret = 0;

	if (job->max_uid[u] == 0) {
		slot_fail(sl, "fetch", "the user has no messages");
		return -1;
	}
	ms_buf_init(&body, 0);
	while (now_s() < w1) {
		uint32_t uid = 1 + (uint32_t)mst_randn(&rnd, job->max_uid[u]);
		const char *err = "";
		struct tag t;
		ret = ms_client_fetch_body(c, "INBOX", uid, BENCH_FETCH_CHUNK,
					   &body, &err);
		if (ret < 0) {
			slot_fail(sl, "FETCH_BODY", err);
			break;
		}
		memset(&t, 0, sizeof(t));
		if (body.len >= sizeof(t))
			memcpy(&t, body.data, sizeof(t));
		if (body.len != job->len || t.magic != BENCH_TAG_MAGIC ||
		    t.client != (uint32_t)u || t.seq + 1 != uid) {
			slot_fail(sl, "FETCH_BODY",
				  "a body is not the one "
				  "appended with that uid");
			ret = -1;
			break;
		}
		double now = now_s();
		if (now >= w0 && now < w1) {
			sl->window++;
			sl->bytes += body.len;
		}
		sl->total++;
	}
	ms_buf_free(&body);
	return ret;
}

/* APPENDs of up to MS_PROTO_MAX_PLACEMENTS placements, pipelined. */
static int client_build(struct ms_client *c, int i, const struct job *job,
			struct slot *sl, double w0, double w1)
{
	uint64_t per = MS_PROTO_MAX_PLACEMENTS;
	uint64_t nreq = (job->messages + per - 1) / per;
	uint64_t next = (uint64_t)i;
	struct ms_placement *pls = ms_calloc(per, sizeof(*pls));
	uint8_t body[BENCH_BUILD_BODY];
	struct ms_req q = {.op = MS_OP_APPEND};
	struct ms_buf out;
	int inflight = 0, ret = 0;

	(void)w0;
	(void)w1;
	for (uint64_t k = 0; k < per; k++)
		pls[k].mailbox = MS_PSTR("INBOX");
	mst_fill(body, sizeof(body), (uint64_t)i + 1);
	q.u.append.body = body;
	q.u.append.body_len = sizeof(body);
	q.u.append.placements.list = pls;
	ms_buf_init(&out, 0);
	while (next < nreq || inflight > 0) {
		const char *err = "";
		while (inflight < BENCH_BUILD_DEPTH && next < nreq) {
			uint64_t left = job->messages - next * per;
			q.u.append.placements.n =
				(uint32_t)(left < per ? left : per);
			tag_put(body, (uint32_t)i, next);
			ms_buf_reset(&out);
			if ((ret = ms_req_encode(&out, ms_client_id(c), &q,
						 &err)) < 0) {
				slot_fail(sl, "APPEND encode", err);
				goto out;
			}
			if ((ret = ms_client_send(c, out.data, out.len)) < 0) {
				slot_fail(sl, "APPEND send", strerror(-ret));
				goto out;
			}
			inflight++;
			next += (uint64_t)job->nclients;
		}
		struct ms_proto_hdr h;
		const uint8_t *rb;
		size_t rlen;
		struct ms_reply rep;
		struct ms_proto_iter it;
		struct ms_append_result r;
		if ((ret = ms_client_recv(c, &h, &rb, &rlen, &err)) < 0 ||
		    (ret = ms_reply_decode(h.op, rb, rlen, &rep, &err)) < 0) {
			slot_fail(sl, "APPEND reply", err);
			goto out;
		}
		if (rep.status != 0 || rep.op != MS_OP_APPEND) {
			slot_fail(sl, "APPEND",
				  rep.status ? ms_strerror(rep.status)
					     : "not an APPEND reply");
			ret = -1;
			goto out;
		}
		ms_proto_iter_results(&it, &rep.u.append);
		while ((ret = ms_proto_next_result(&it, &r)) > 0) {
			if (r.status != 0) {
				slot_fail(sl, "APPEND placement",
					  ms_strerror(r.status));
				ret = -1;
				goto out;
			}
			sl->total++;
		}
		if (ret < 0) {
			slot_fail(sl, "APPEND reply", "bad result list");
			goto out;
		}
		inflight--;
	}
out:
	ms_buf_free(&out);
	free(pls);
	return ret < 0 ? -1 : 0;
}

static int status_get(struct ms_client *admin, struct dstat *st)
{
	struct ms_req q = {.op = MS_OP_STATUS};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter cn;
	const char *err = "";
	int ret;

	memset(st, 0, sizeof(*st));
	if ((ret = ms_client_request(admin, &q, &rep, &err)) < 0) {
		fprintf(stderr, "bench-store: STATUS: %s\n", err);
		return ret;
	}
	ms_proto_iter_counters(&it, &rep.u.counters);
	while ((ret = ms_proto_next_counter(&it, &cn)) > 0) {
		static const struct {
			const char *key;
			size_t off;
		} keys[] = {
			{"log.flushes", offsetof(struct dstat, flushes)},
			{"log.flush_ns", offsetof(struct dstat, flush_ns)},
			{"ops.appends", offsetof(struct dstat, appends)},
			{"ops.gather_holds", offsetof(struct dstat, holds)},
			{"ops.gather_timeouts",
			 offsetof(struct dstat, timeouts)},
			{"ops.gather_held_ns", offsetof(struct dstat, held_ns)},
		};
		for (size_t k = 0; k < MS_ARRAY_SIZE(keys); k++)
			if (cn.key.len == strlen(keys[k].key) &&
			    memcmp(cn.key.s, keys[k].key, cn.key.len) == 0)
				memcpy((char *)st + keys[k].off, &cn.value,
				       sizeof(cn.value));
		for (size_t k = 0; k <= MS_LOG_BATCH_BUCKETS; k++) {
			char name[32];
			if (k < MS_LOG_BATCH_BUCKETS)
				snprintf(name, sizeof(name), "log.batch.le_%llu",
					 (unsigned long long)
						 ms_log_batch_bounds[k]);
			else
				snprintf(name, sizeof(name), "log.batch.more");
			if (cn.key.len == strlen(name) &&
			    memcmp(cn.key.s, name, cn.key.len) == 0)
				st->batch[k] = cn.value;
		}
	}
	return ret;
}

/* Wait for the children until deadline, then kill what is left. */
static int reap(int n, double deadline)
{
	int bad = 0, left = n;
	while (left > 0) {
		for (int i = 0; i < n; i++) {
			int status;
			if (kids[i] <= 0 ||
			    waitpid(kids[i], &status, WNOHANG) != kids[i])
				continue;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				bad++;
			kids[i] = 0;
			left--;
		}
		if (left == 0)
			break;
		if (now_s() > deadline) {
			fprintf(stderr,
				"bench-store: %d clients still running;"
				" killing them\n",
				left);
			for (int i = 0; i < n; i++) {
				if (kids[i] > 0) {
					kill(kids[i], SIGKILL);
					waitpid(kids[i], NULL, 0);
					kids[i] = 0;
				}
			}
			return -1;
		}
		struct timespec ts = {0, 5 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return bad ? -1 : 0;
}

static void child_main(struct msd *d, const struct job *job, int i,
		       struct shared *sh, int go_fd, int ready_fd)
{
	struct slot *sl = &sh->s[i];
	struct ms_client *c = NULL;
	const char *err = "";
	char user[32];
	char b;

	user_name(i % job->nusers, user, sizeof(user));
	if (ms_client_connect(d->sock, BENCH_TIMEOUT_MS, &c, &err) < 0 ||
	    ms_client_hello(c, user, &err) < 0) {
		slot_fail(sl, "connect", err);
		(void)!write(ready_fd, "x", 1);
		_exit(1);
	}
	(void)!write(ready_fd, "r", 1);
	close(ready_fd);
	/* EOF when the parent says go (or is gone) */
	while (read(go_fd, &b, 1) < 0 && errno == EINTR)
		;
	double w0 = sh->t_go + job->warm, w1 = w0 + job->secs;
	int ret = job->kind == JOB_APPEND ? client_append(c, i, job, sl, w0, w1)
		  : job->kind == JOB_FETCH
			  ? client_fetch(c, i, job, sl, w0, w1)
			  : client_build(c, i, job, sl, w0, w1);
	ms_client_close(&c);
	_exit(ret < 0 ? 1 : 0);
}

/*
 * Start n clients, each connected and said hello, then let them go at
 * once.  snap (if not NULL) gets the daemon's STATUS at the start and
 * the end of the measured window.  0 if every client did its job.
 */
static int run_clients(struct msd *d, const struct job *job, int n,
		       struct shared *sh, struct dstat snap[2])
{
	int go[2], ready[2], ret = 0;
	pid_t parent = getpid();
	struct ms_client *admin = snap ? msd_connect(d, NULL) : NULL;

	memset(sh, 0, sizeof(*sh));
	if (pipe2(go, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0) {
		perror("bench-store: pipe");
		exit(1);
	}
	fflush(NULL);
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("bench-store: fork");
			ret = -1;
			break;
		}
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			close(go[1]);
			close(ready[0]);
			child_main(d, job, i, sh, go[0], ready[1]);
		}
		kids[i] = pid;
	}
	close(go[0]);
	close(ready[1]);
	/* all connected (or failed); a bound in case one hangs */
	int nready = 0;
	for (double end = now_s() + 60; ret == 0 && now_s() < end;) {
		struct pollfd p = {.fd = ready[0], .events = POLLIN};
		char b;
		if (poll(&p, 1, 1000) <= 0)
			continue;
		ssize_t k = read(ready[0], &b, 1);
		if (k <= 0)
			break;
		if (b == 'r' && ++nready == n)
			break;
	}
	close(ready[0]);
	if (nready != n)
		ret = -1;
	sh->t_go = now_s();
	close(go[1]);
	double w0 = sh->t_go + job->warm, w1 = w0 + job->secs;
	if (ret == 0 && snap != NULL) {
		sleep_until(w0);
		status_get(admin, &snap[0]);
		snap[0].cpu_s = proc_cpu_s(d->pid);
		snap[0].t = now_s();
		for (int i = 0; i < n; i++)
			snap[0].cli_s += proc_cpu_s(kids[i]);
		sleep_until(w1);
		status_get(admin, &snap[1]);
		snap[1].cpu_s = proc_cpu_s(d->pid);
		snap[1].t = now_s();
		for (int i = 0; i < n; i++)
			snap[1].cli_s += proc_cpu_s(kids[i]);
	}
	/* a build has no fixed time: bound it by a generous rate */
	double deadline = job->kind == JOB_BUILD
				  ? w1 + 600 + (double)job->messages / 1000
				  : w1 + 2.0 * BENCH_TIMEOUT_MS / 1000;
	if (reap(n, deadline) < 0)
		ret = -1;
	for (int i = 0; i < n; i++) {
		if (sh->s[i].failed) {
			fprintf(stderr, "bench-store: client %d: %s\n", i,
				sh->s[i].err);
			ret = -1;
		}
	}
	ms_client_close(&admin);
	return ret;
}

/* ---- the engine, in-process (as bench-log) ---- */

struct eng {
	struct ms_log *log;
	uint8_t *buf;
	uint32_t len;
	uint64_t done;
	int failed;
	int stop;
};

static void eng_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct eng *e = ctx;
	(void)seq;
	(void)pos;
	if (status != 0) {
		e->failed = 1;
		return;
	}
	e->done++;
	if (!e->stop && ms_log_append(e->log, MS_REC_NOOP, 0, e->buf, e->len,
				      eng_done, e, NULL, NULL) < 0)
		e->failed = 1;
}

static int engine_case(const char *dir, enum ms_io_kind kind, uint32_t len,
		       int appenders, double warm, double secs, double *aps_r,
		       double *batch_r, double *flush_us_r, double *cpu_us_r,
		       uint64_t *hist_r)
{
	char root[4200], a[4300], b[4300];
	snprintf(root, sizeof(root), "%s/log-%u-%d", dir, len, appenders);
	mst_rmtree(root);
	if (mkdir(root, 0755) < 0)
		return -errno;
	snprintf(a, sizeof(a), "%s/primary", root);
	snprintf(b, sizeof(b), "%s/secondary", root);
	struct ms_log_cfg cfg = {.dir = {a, b}, .engine = kind, .create = 1};
	struct eng e = {0};
	const char *err;
	if (ms_log_open(&cfg, &e.log, &err) < 0) {
		fprintf(stderr, "bench-store: engine: %s\n", err);
		mst_rmtree(root);
		return -1;
	}
	e.len = len;
	e.buf = ms_malloc(len);
	mst_fill(e.buf, len, len);
	for (int i = 0; i < appenders; i++)
		if (ms_log_append(e.log, MS_REC_NOOP, 0, e.buf, len, eng_done,
				  &e, NULL, NULL) < 0)
			e.failed = 1;
	double t0 = now_s(), t1 = t0;
	uint64_t start_done = 0;
	struct ms_log_status st0, st;
	double cpu0 = 0;
	int warming = 1;
	memset(&st0, 0, sizeof(st0));
	while (!e.failed) {
		if (ms_log_run(e.log, 1) < 0)
			break;
		t1 = now_s();
		if (warming && t1 - t0 >= warm) {
			warming = 0;
			t0 = t1;
			start_done = e.done;
			ms_log_get_status(e.log, &st0);
			cpu0 = proc_cpu_s(getpid());
		}
		if (!warming && t1 - t0 >= secs)
			break;
	}
	uint64_t n = e.done - start_done;
	ms_log_get_status(e.log, &st);
	*cpu_us_r = n ? (proc_cpu_s(getpid()) - cpu0) / (double)n * 1e6 : 0;
	e.stop = 1;
	ms_log_sync(e.log);
	uint64_t fl = st.flushes - st0.flushes;
	for (size_t k = 0; k <= MS_LOG_BATCH_BUCKETS; k++)
		hist_r[k] = st.batch_hist[k] - st0.batch_hist[k];
	*aps_r = t1 > t0 ? (double)n / (t1 - t0) : 0;
	*batch_r = fl ? (double)(st.flushed_records - st0.flushed_records) /
				   (double)fl
		      : 0;
	*flush_us_r =
		fl ? (double)(st.flush_ns - st0.flush_ns) / (double)fl / 1e3
		   : 0;
	ms_log_close(&e.log);
	free(e.buf);
	mst_rmtree(root);
	return e.failed ? -1 : 0;
}

/*
 * Read the store's BODY records in random order for secs, decoded as
 * the daemon does (ms_log_read + ms_body_decode), one thread; the log
 * is opened read-only once mstored has stopped.
 */
static int engine_read(const struct msd *d, enum ms_io_kind kind, double warm,
		       double secs, double *rps_r, double *mbs_r)
{
	struct ms_log_cfg cfg = {.dir = {d->primary, d->secondary},
				 .engine = kind,
				 .readonly = 1};
	struct ms_log *log;
	struct ms_log_iter *it;
	struct ms_pos *pos = NULL, p;
	struct ms_rec_hdr h;
	const uint8_t *payload;
	size_t n = 0, cap = 0;
	const char *err = "";
	int ret;

	if ((ret = ms_log_open(&cfg, &log, &err)) < 0) {
		fprintf(stderr, "bench-store: read-only open: %s\n", err);
		return ret;
	}
	if ((ret = ms_log_iter_new(log, (struct ms_pos){0, 0}, &it)) < 0) {
		ms_log_close(&log);
		return ret;
	}
	while ((ret = ms_log_iter_next(it, &p, &h, &payload, &err)) > 0) {
		if (h.type != MS_REC_BODY)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			pos = ms_realloc(pos, cap * sizeof(*pos));
		}
		pos[n++] = p;
	}
	ms_log_iter_free(&it);
	struct ms_body_ctx bctx;
	const struct ms_meta *meta = ms_log_meta(log);
	ms_body_ctx_init(&bctx, meta->store_id, meta->salt, NULL, 1);
	struct ms_buf pl, plain;
	ms_buf_init(&pl, MS_REC_MAX_PAYLOAD);
	ms_buf_init(&plain, 0);
	uint64_t rnd = 12345, reads = 0, bytes = 0;
	double t0 = now_s(), w0 = t0 + warm, w1 = w0 + secs;
	for (double t = t0; ret == 0 && n > 0 && t < w1;) {
		struct ms_pos at = pos[mst_randn(&rnd, n)];
		if ((ret = ms_log_read(log, at, &h, &pl, &err)) < 0 ||
		    (ret = ms_body_decode(&bctx, h.flags, pl.data, pl.len,
					  &plain, &err)) < 0) {
			fprintf(stderr, "bench-store: engine read: %s\n", err);
			break;
		}
		t = now_s();
		if (t >= w0 && t < w1) {
			reads++;
			bytes += plain.len;
		}
	}
	*rps_r = (double)reads / secs;
	*mbs_r = (double)bytes / secs / 1e6;
	ms_buf_free(&pl);
	ms_buf_free(&plain);
	ms_body_ctx_wipe(&bctx);
	free(pos);
	ms_log_close(&log);
	return ret < 0 ? ret : n > 0 ? 0 : -1;
}

/* ---- the daemon ---- */

/*
 * MS_BENCH_WAITS: connections parked in WAIT on a user of their own
 * during each append case, as IMAP sessions in IDLE are (the plugin
 * parks one WAIT per IDLE), to see what many of them cost the loop.
 */
#define BENCH_WAITS_MAX 20000
static long bench_waits;
static struct ms_client **waiters;

static int waiters_park(struct msd *d)
{
	if (bench_waits == 0)
		return 0;
	int ret = msd_user_add(d, "waiter");
	if (ret < 0) {
		fprintf(stderr, "bench-store: USER_CREATE waiter: %s\n",
			ms_strerror(ret));
		return -1;
	}
	waiters = calloc((size_t)bench_waits, sizeof(*waiters));
	if (waiters == NULL)
		return -1;
	for (long i = 0; i < bench_waits; i++) {
		struct ms_client *c = msd_connect(d, "waiter");
		struct ms_req q = {.op = MS_OP_MBOX_STATUS};
		struct ms_reply rep;
		const char *err = "";
		uint32_t id;
		q.u.mbox.name = MS_PSTR("INBOX");
		if (ms_client_request(c, &q, &rep, &err) < 0) {
			fprintf(stderr, "bench-store: MBOX_STATUS: %s\n", err);
			ms_client_close(&c);
			return -1;
		}
		q = (struct ms_req){.op = MS_OP_WAIT};
		q.u.wait.mailbox = MS_PSTR("INBOX");
		q.u.wait.known_modseq = rep.u.mbox.highestmodseq;
		q.u.wait.timeout_ms = MS_PROTO_MAX_WAIT_MS;
		if (ms_client_send_req(c, &q, &id, &err) < 0) {
			fprintf(stderr, "bench-store: WAIT: %s\n", err);
			ms_client_close(&c);
			return -1;
		}
		waiters[i] = c;
	}
	return 0;
}

static void waiters_close(void)
{
	for (long i = 0; waiters != NULL && i < bench_waits; i++)
		ms_client_close(&waiters[i]);
	free(waiters);
	waiters = NULL;
}

static void daemon_setup(struct msd *d, enum ms_io_kind kind, int nusers)
{
	/* MS_BENCH_STORE_CONF: more [store] lines (with \n between them),
	   e.g. "group_commit_wait_us = 0" to compare */
	const char *more = getenv("MS_BENCH_STORE_CONF");
	char extra[1024], conns[64] = "";
	if (bench_waits > 0)
		snprintf(conns, sizeof(conns), "max_connections = %ld\n",
			 bench_waits + BENCH_MAX_CLIENTS + 16);
	snprintf(extra, sizeof(extra), "%s\n%s%s",
		 kind == MS_IO_PSYNC ? "io_engine = psync" : "", conns,
		 more != NULL ? more : "");
	msd_setup(d, "bench", extra);
	cur_msd = d;
	msd_start(d);
	for (int u = 0; u < nusers; u++) {
		char user[32];
		user_name(u, user, sizeof(user));
		int ret = msd_user_add(d, user);
		if (ret < 0) {
			fprintf(stderr, "bench-store: USER_CREATE %s: %s\n",
				user, ms_strerror(ret));
			msd_stop(d);
			exit(1);
		}
	}
}

/*
 * What the daemon logged above info level, said once per store (before
 * its directory goes): those lines would explain a figure.
 */
static int daemon_log_check(const struct msd *d)
{
	static const char *const bad[] = {
		"mstored: warning:", "mstored: error:", "mstored: fatal:",
		"mstored: panic:"};
	char line[1024], first[1024] = "";
	int n = 0;
	FILE *f = fopen(d->logfile, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
			if (strstr(line, bad[i]) == NULL)
				continue;
			if (n++ == 0)
				snprintf(first, sizeof(first), "%s", line);
			break;
		}
	}
	fclose(f);
	if (n > 0)
		printf("  (mstored logged %d warnings or errors; the first: "
		       "%.*s)\n",
		       n, (int)strcspn(first, "\n"), first);
	return n;
}

static void daemon_done(struct msd *d)
{
	waiters_close();
	msd_stop(d);
	cur_msd = NULL;
	daemon_log_check(d);
	mst_rmtree(d->dir);
}

static int evict_one(const char *path, const struct stat *st, int flag,
		     struct FTW *f)
{
	(void)st;
	(void)f;
	if (flag != FTW_F)
		return 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		/* only clean pages go: the stopped daemon synced them */
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	return 0;
}

/* Drop the store's files (and only them) from the page cache. */
static void evict_cache(const char *dir)
{
	nftw(dir, evict_one, 16, FTW_PHYS);
}

/* Messages in the user's INBOX, or -1. */
static long long inbox_messages(struct msd *d, const char *user)
{
	struct ms_client *c = msd_connect(d, user);
	struct ms_req q = {.op = MS_OP_MBOX_STATUS};
	struct ms_reply rep;
	const char *err = "";
	long long n = -1;
	q.u.mbox.name = MS_PSTR("INBOX");
	if (ms_client_request(c, &q, &rep, &err) == 0)
		n = rep.u.mbox.messages;
	else
		fprintf(stderr, "bench-store: MBOX_STATUS: %s\n", err);
	ms_client_close(&c);
	return n;
}

static long long du_total;

static int du_add(const char *path, const struct stat *st, int flag,
		  struct FTW *f)
{
	(void)path;
	(void)f;
	if (flag == FTW_F)
		du_total += (long long)st->st_size;
	return 0;
}

static double du_mb(const char *dir)
{
	du_total = 0;
	nftw(dir, du_add, 16, FTW_PHYS);
	return (double)du_total / 1e6;
}

/* ---- main ---- */

/* A batch histogram on one line: the non-empty buckets, "<=N:count". */
static void hist_print(const char *who, const uint64_t *h)
{
	printf("  %-7s records/flush:", who);
	for (size_t k = 0; k <= MS_LOG_BATCH_BUCKETS; k++) {
		if (h[k] == 0)
			continue;
		if (k < MS_LOG_BATCH_BUCKETS)
			printf(" <=%llu:%llu",
			       (unsigned long long)ms_log_batch_bounds[k],
			       (unsigned long long)h[k]);
		else
			printf(" more:%llu", (unsigned long long)h[k]);
	}
	printf("\n");
}

/*
 * MS_BENCH_CASES: the append cases to run, "SIZE:CLIENTS" separated by
 * commas (SIZE 4k or 64k, CLIENTS 1..64), e.g. "4k:64,4k:1"; default
 * all six.  MS_BENCH_PARTS: which of disk (fio), append, fetch, restart
 * to run, separated by commas; default all.  Fetch reads the store of the last
 * append case.
 */
struct bcase {
	uint32_t len;
	int clients;
};

/*
 * Many users: one APPEND of 4 KiB to each of nusers users, through one
 * admin connection with USERS_WINDOW requests in flight (as
 * mstore-lmtpd delivers for many recipients), the users created first
 * the same way.  The rate of each tenth of the users says whether an
 * append costs more as more users have had mail (it must not).
 */
#define USERS_WINDOW 100

static int users_send(struct ms_client *a, const struct ms_req *q,
		      int *inflight)
{
	const char *err = "";
	uint32_t id;
	if (ms_client_send_req(a, q, &id, &err) < 0) {
		fprintf(stderr, "bench-store: users: send: %s\n", err);
		return -1;
	}
	(*inflight)++;
	return 0;
}

/* Read replies until at most keep are in flight; all must succeed. */
static int users_reap(struct ms_client *a, int *inflight, int keep)
{
	while (*inflight > keep) {
		struct ms_proto_hdr h;
		struct ms_reply rep = {0};
		const uint8_t *b;
		size_t len;
		const char *err = "";
		if (ms_client_recv(a, &h, &b, &len, &err) < 0 ||
		    ms_reply_decode(h.op, b, len, &rep, &err) < 0 ||
		    rep.status < 0) {
			fprintf(stderr, "bench-store: users: reply: %s %.*s\n",
				err, (int)rep.reason.len,
				rep.reason.s ? rep.reason.s : "");
			return -1;
		}
		if (rep.op == MS_OP_APPEND) {
			struct ms_proto_iter it;
			struct ms_append_result r;
			ms_proto_iter_results(&it, &rep.u.append);
			if (ms_proto_next_result(&it, &r) != 1 ||
			    r.status != 0) {
				fprintf(stderr, "bench-store: users: a "
					"placement failed\n");
				return -1;
			}
		}
		(*inflight)--;
	}
	return 0;
}

static int users_part(enum ms_io_kind kind, long nusers)
{
	struct msd d;
	int inflight = 0, ret = 0;
	uint8_t body[4096];
	char name[32];
	double rate[10];

	printf("\nusers: one 4 KiB APPEND to each of %ld users (one admin "
	       "connection, %d in flight),\nthe users created first; "
	       "appends/s for each tenth of them\n",
	       nusers, USERS_WINDOW);
	fflush(stdout);
	daemon_setup(&d, kind, 0);
	struct ms_client *a = msd_connect(&d, NULL);
	for (long u = 0; ret == 0 && u < nusers; u++) {
		struct ms_req q = {.op = MS_OP_USER_CREATE};
		snprintf(name, sizeof(name), "user%ld", u);
		q.u.user.name = ms_pstr_c(name);
		ret = users_send(a, &q, &inflight);
		if (ret == 0)
			ret = users_reap(a, &inflight, USERS_WINDOW);
	}
	if (ret == 0)
		ret = users_reap(a, &inflight, 0);
	ms_random(body, sizeof(body));
	for (int t = 0; ret == 0 && t < 10; t++) {
		long lo = nusers * t / 10, hi = nusers * (t + 1) / 10;
		double t0 = now_s();
		for (long u = lo; ret == 0 && u < hi; u++) {
			struct ms_placement pl = {.mailbox = MS_PSTR("INBOX")};
			struct ms_req q = {.op = MS_OP_APPEND};
			snprintf(name, sizeof(name), "user%ld", u);
			pl.user = ms_pstr_c(name);
			tag_put(body, 0, (uint64_t)u);
			q.u.append.body = body;
			q.u.append.body_len = sizeof(body);
			q.u.append.placements.n = 1;
			q.u.append.placements.list = &pl;
			ret = users_send(a, &q, &inflight);
			if (ret == 0)
				ret = users_reap(a, &inflight, USERS_WINDOW);
		}
		if (ret == 0)
			ret = users_reap(a, &inflight, 0);
		double dt = now_s() - t0;
		rate[t] = dt > 0 ? (double)(hi - lo) / dt : 0;
	}
	ms_client_close(&a);
	if (ret == 0) {
		for (int t = 0; t < 10; t++)
			printf(" %.0f", rate[t]);
		printf("\n  the last tenth at %.0f%% of the first's rate\n",
		       rate[0] > 0 ? 100 * rate[9] / rate[0] : 0);
	} else {
		printf("  FAILED\n");
	}
	daemon_done(&d);
	return ret;
}

static int parse_cases(struct bcase *cs, size_t max, size_t *n_r)
{
	const char *e = getenv("MS_BENCH_CASES");
	size_t n = 0;
	if (e == NULL || *e == '\0') {
		static const struct bcase def[] = {
			{4096, 1},  {4096, 8},	{4096, 64},
			{65536, 1}, {65536, 8}, {65536, 64},
		};
		memcpy(cs, def, sizeof(def));
		*n_r = MS_ARRAY_SIZE(def);
		return 0;
	}
	for (const char *p = e; *p != '\0';) {
		char size[8];
		int clients, used = 0;
		if (n == max ||
		    sscanf(p, "%7[0-9kK]:%d%n", size, &clients, &used) != 2 ||
		    clients < 1 || clients > BENCH_MAX_CLIENTS ||
		    (strcasecmp(size, "4k") != 0 &&
		     strcasecmp(size, "64k") != 0)) {
			fprintf(stderr,
				"bench-store: MS_BENCH_CASES=%s: want "
				"SIZE:CLIENTS,... (SIZE 4k or 64k, CLIENTS "
				"1..%d, at most %zu cases)\n",
				e, BENCH_MAX_CLIENTS, max);
			return -1;
		}
		cs[n].len = strcasecmp(size, "4k") == 0 ? 4096 : 65536;
		cs[n++].clients = clients;
		p += used;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			return parse_cases(cs, 0, n_r); /* the message */
	}
	*n_r = n;
	return 0;
}

static int part_on(const char *part)
{
	const char *e = getenv("MS_BENCH_PARTS");
	size_t len = strlen(part);
	if (e == NULL || *e == '\0')
		return 1;
	for (const char *p = e; *p != '\0';) {
		size_t k = strcspn(p, ",");
		if (k == len && strncmp(p, part, len) == 0)
			return 1;
		p += k;
		if (*p == ',')
			p++;
	}
	return 0;
}


static int check_env(const char *dir, enum ms_io_kind kind)
{
	const char *b = getenv("MSTORE_BUILD");
	char bin[4200], why[4400];
	snprintf(bin, sizeof(bin), "%s/mstored", b && *b ? b : "build");
	if (access(bin, X_OK) < 0) {
		snprintf(why, sizeof(why), "%s is not built (make)", bin);
		mst_skip(why);
	}
	/* mst_tmpdir() makes <dir>/mstest-bench-XXXXXX/a.sock */
	if (strlen(dir) + sizeof("/mstest-bench-XXXXXX/a.sock") >
	    sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(why, sizeof(why),
			 "MS_BENCH_DIR %s is too long for unix socket paths",
			 dir);
		mst_skip(why);
	}
	/* can the engine run here? */
	char root[4200], a[4300], s[4300];
	snprintf(root, sizeof(root), "%s/probe", dir);
	snprintf(a, sizeof(a), "%s/primary", root);
	snprintf(s, sizeof(s), "%s/secondary", root);
	mst_rmtree(root);
	if (mkdir(root, 0755) < 0) {
		fprintf(stderr, "bench-store: mkdir %s: %s\n", root,
			strerror(errno));
		return -1;
	}
	struct ms_log_cfg cfg = {.dir = {a, s}, .engine = kind, .create = 1};
	struct ms_log *log;
	const char *err = "";
	int ret = ms_log_open(&cfg, &log, &err);
	if (ret == 0)
		ms_log_close(&log);
	mst_rmtree(root);
	if (ret < 0) {
		snprintf(why, sizeof(why),
			 "cannot open a log with %s here: %s%s",
			 kind == MS_IO_URING ? "io_uring" : "psync", err,
			 kind == MS_IO_URING ? " (MS_BENCH_ENGINE=psync)" : "");
		mst_skip(why);
	}
	return 0;
}

int main(void)
{
	static const int clients[] = {1, 8, 64};
	struct bcase cases[16];
	size_t ncases = 0;
	const char *eng = getenv("MS_BENCH_ENGINE");
	enum ms_io_kind kind =
		eng && strcmp(eng, "psync") == 0 ? MS_IO_PSYNC : MS_IO_URING;
	double secs, msgs_d;
	char dir[PATH_MAX];
	int fails = 0;

	double waits_d, users_d;
	if (mst_env_double("bench-store", "MS_BENCH_WAITS", 0, 0,
			   BENCH_WAITS_MAX, &waits_d) < 0 ||
	    mst_env_double("bench-store", "MS_BENCH_USERS", 50000, 10,
			   1000000, &users_d) < 0)
		return 1;
	bench_waits = (long)waits_d;
	if (bench_waits > 0) {
		/* the daemon inherits it */
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur < (rlim_t)bench_waits * 2 + 1024) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (mst_env_double("bench-store", "MS_BENCH_SECONDS", 3, 0.1, 3600, &secs) < 0 ||
	    mst_env_double("bench-store", "MS_BENCH_MESSAGES", 1000000, 1,
		       (double)BENCH_MESSAGES_MAX, &msgs_d) < 0 ||
	    msgs_d != (double)(uint64_t)msgs_d)
		return 1;
	uint64_t messages = (uint64_t)msgs_d;
	if (parse_cases(cases, MS_ARRAY_SIZE(cases), &ncases) < 0)
		return 1;
	if (!part_on("append"))
		ncases = 0;
	double warm = secs / 10;
	/* the daemons' directories (msd_setup) go there too: same disk */
	if (bp_bench_dir("bench-store", dir, sizeof(dir)) < 0)
		return 1;
	ms_msg_set_level(MS_MSG_WARN);
	if (check_env(dir, kind) < 0)
		return 1;
	bp_fatal_signals(on_fatal_signal);
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("bench-store: mmap");
		return 1;
	}

	printf("bench-store: dir=%s engine=%s, %.0f s per case after %.1f s "
	       "of warm-up, 2 copies on the same disk\n",
	       dir, kind == MS_IO_URING ? "uring" : "psync", secs, warm);
	double sync_iops = 0, kbs = 0, seq_iops = 0, seq_kbs = 0;
	if (!part_on("disk"))
		printf("disk (fio): not in MS_BENCH_PARTS\n");
	else if (system("command -v fio >/dev/null 2>&1") != 0)
		printf("disk (fio): not installed, no disk figures\n");
	else if (mst_fio(dir, "4k", secs, 0, &sync_iops, &kbs) < 0 ||
		 mst_fio(dir, "1M", secs, 0, &seq_iops, &seq_kbs) < 0)
		printf("disk (fio): failed, no disk figures\n");
	else
		printf("disk (fio, appending): 4 KiB write+fdatasync %.0f/s; "
		       "1 MiB write+fdatasync %.0f MB/s\n",
		       sync_iops, seq_kbs * 1024 / 1e6);

	/* ---- appends ---- */
	printf("\nappends: each client a process with its own connection "
	       "and user, closed loop\n(1 APPEND in flight), 1 placement "
	       "into INBOX; engine: ms_log in-process, NOOP records\nof the "
	       "message size, as many closed-loop appenders.  app/sync: "
	       "appends per flush (a\nflush = write + fdatasync of both "
	       "copies); cpu_us: CPU time of the daemon (of the\nengine's "
	       "process), all threads, per append\n");
	if (bench_waits > 0)
		printf("mstored: %ld connections parked in WAIT "
		       "(MS_BENCH_WAITS) through each case\n",
		       bench_waits);
	printf("%-15s %-43s  %-43s\n", "",
	       "--------------- mstored -------------------",
	       "--------------- engine --------------------");
	printf("%-7s %7s %9s %6s %8s %8s %6s  %9s %6s %8s %8s %6s %7s\n",
	       "message", "clients", "appends/s", "MB/s", "app/sync",
	       "flush_us", "cpu_us", "appends/s", "MB/s", "app/sync",
	       "flush_us", "cpu_us", "d/e");
	/* [0] 4 KiB, [1] 64 KiB; < 0: not run */
	double ratio64[2] = {-1, -1};
	struct msd d;
	struct job fjob = {.kind = JOB_FETCH};
	int have_fetch_store = 0;
	for (size_t ci = 0; ci < ncases; ci++) {
		{
			uint32_t len = cases[ci].len;
			int n = cases[ci].clients;
			int last = ci + 1 == ncases && part_on("fetch");
			double eaps = 0, ebatch = 0, efus = 0, ecpu = 0;
			uint64_t ehist[MS_LOG_BATCH_BUCKETS + 1] = {0};
			int ok = engine_case(dir, kind, len, n, warm, secs,
					     &eaps, &ebatch, &efus, &ecpu,
					     ehist) == 0;
			struct job job = {.kind = JOB_APPEND,
					  .len = len,
					  .nusers = n,
					  .warm = warm,
					  .secs = secs};
			struct dstat st[2];
			memset(st, 0, sizeof(st));
			daemon_setup(&d, kind, n);
			if (waiters_park(&d) < 0 ||
			    run_clients(&d, &job, n, sh, st) < 0)
				ok = 0;
			uint64_t win = 0;
			for (int i = 0; i < n; i++) {
				win += sh->s[i].window;
				fjob.max_uid[i] = sh->s[i].max_uid;
			}
			if (!ok) {
				printf("%-7s %7d FAILED\n", size_name(len), n);
				fails++;
				daemon_done(&d);
				continue;
			}
			double aps = (double)win / secs;
			uint64_t fl = st[1].flushes - st[0].flushes;
			uint64_t na = st[1].appends - st[0].appends;
			double dbatch = fl ? (double)na / (double)fl : 0;
			double dfus =
				fl ? (double)(st[1].flush_ns - st[0].flush_ns) /
						(double)fl / 1e3
				   : 0;
			double dcpu = na ? (st[1].cpu_s - st[0].cpu_s) /
						      (double)na * 1e6
					 : 0;
			double ratio = eaps > 0 ? aps / eaps : 0;
			if (n == 64)
				ratio64[len == 4096 ? 0 : 1] = ratio;
			printf("%-7s %7d %9.0f %6.1f %8.1f %8.0f %6.0f  %9.0f "
			       "%6.1f %8.1f %8.0f %6.0f %6.0f%%\n",
			       size_name(len), n, aps, aps * len / 1e6, dbatch,
			       dfus, dcpu, eaps, eaps * len / 1e6, ebatch, efus,
			       ecpu, 100 * ratio);
			uint64_t dhist[MS_LOG_BATCH_BUCKETS + 1];
			for (size_t k = 0; k <= MS_LOG_BATCH_BUCKETS; k++)
				dhist[k] = st[1].batch[k] - st[0].batch[k];
			hist_print("mstored", dhist);
			uint64_t holds = st[1].holds - st[0].holds;
			printf("  mstored group commit gather: %llu flushes "
			       "held (%llu to the deadline), %.0f us each\n",
			       (unsigned long long)holds,
			       (unsigned long long)(st[1].timeouts -
						    st[0].timeouts),
			       holds ? (double)(st[1].held_ns -
						st[0].held_ns) /
					       (double)holds / 1e3
				     : 0.0);
			/* what else used the machine: the clients' CPU, and
			   how much of every core was busy at all */
			double span = st[1].t - st[0].t;
			printf("  mstored clients: %.0f us of CPU per append; "
			       "daemon and clients used %.0f%% of %ld cores\n",
			       na ? (st[1].cli_s - st[0].cli_s) / (double)na * 1e6
				  : 0.0,
			       span > 0 ? 100 *
						  (st[1].cpu_s - st[0].cpu_s +
						   st[1].cli_s - st[0].cli_s) /
						  span /
						  (double)sysconf(
							  _SC_NPROCESSORS_ONLN)
					: 0.0,
			       sysconf(_SC_NPROCESSORS_ONLN));
			hist_print("engine", ehist);
			fflush(stdout);
			if (last) {
				have_fetch_store = 1; /* keep it running */
				fjob.len = len;
				fjob.nusers = n;
			} else {
				daemon_done(&d);
			}
		}
	}
	printf("target: daemon >= 70%% of the engine's append rate at 64 "
	       "clients:");
	for (size_t s = 0; s < 2; s++)
		if (ratio64[s] >= 0)
			printf(" %s %.0f%% (%s)", s == 0 ? "4KiB" : "64KiB",
			       100 * ratio64[s],
			       ratio64[s] >= 0.7 ? "met" : "MISSED");
	printf("\n");

	/* ---- fetch ---- */
	if (have_fetch_store) {
		uint64_t stored = 0;
		for (int u = 0; u < fjob.nusers; u++)
			stored += fjob.max_uid[u];
		printf("\nfetch: %s messages, a random one of the %llu just "
		       "appended each time, FETCH_BODY\nin 1 MiB chunks "
		       "(ms_client_fetch_body: one request per message), "
		       "page cache warm;\nengine: one thread, ms_log_read + "
		       "ms_body_decode of the same bodies\n",
		       size_name(fjob.len), (unsigned long long)stored);
		printf("%-7s %9s %6s %7s\n", "clients", "fetches/s", "MB/s",
		       "d/e");
		fjob.warm = warm;
		fjob.secs = secs;
		double frps[MS_ARRAY_SIZE(clients)] = {0};
		double fmbs[MS_ARRAY_SIZE(clients)] = {0};
		int fok[MS_ARRAY_SIZE(clients)] = {0};
		for (size_t k = 0; k < MS_ARRAY_SIZE(clients); k++) {
			int n = clients[k];
			if (run_clients(&d, &fjob, n, sh, NULL) < 0) {
				fails++;
				continue;
			}
			uint64_t win = 0, bytes = 0;
			for (int i = 0; i < n; i++) {
				win += sh->s[i].window;
				bytes += sh->s[i].bytes;
			}
			fok[k] = 1;
			frps[k] = (double)win / secs;
			fmbs[k] = (double)bytes / secs / 1e6;
		}
		/* the reference needs the daemon stopped: print after it */
		msd_stop(&d);
		double rps = 0, mbs = 0;
		int eok = engine_read(&d, kind, warm, secs, &rps, &mbs) == 0;
		for (size_t k = 0; k < MS_ARRAY_SIZE(clients); k++) {
			if (!fok[k])
				printf("%-7d FAILED\n", clients[k]);
			else if (!eok)
				printf("%-7d %9.0f %6.1f\n", clients[k],
				       frps[k], fmbs[k]);
			else
				printf("%-7d %9.0f %6.1f %6.0f%%\n", clients[k],
				       frps[k], fmbs[k], 100 * fmbs[k] / mbs);
		}
		if (eok) {
			printf("%-7s %9.0f %6.1f\n", "engine", rps, mbs);
		} else {
			printf("%-7s FAILED\n", "engine");
			fails++;
		}
		daemon_done(&d);
	}

	/* ---- many users ---- */
	if (part_on("users") && users_part(kind, (long)users_d) < 0)
		fails++;

	/* ---- restart with many messages ---- */
	if (!part_on("restart")) {
		munmap(sh, sizeof(*sh));
		return fails ? 1 : 0;
	}
	printf("\nrestart: %llu messages in one INBOX\n",
	       (unsigned long long)messages);
	fflush(stdout);
	daemon_setup(&d, kind, 1);
	struct job bjob = {.kind = JOB_BUILD,
			   .nusers = 1,
			   .messages = messages,
			   .nclients = BENCH_BUILD_CLIENTS};
	double t0 = now_s();
	int ok = run_clients(&d, &bjob, BENCH_BUILD_CLIENTS, sh, NULL) == 0;
	double tbuild = now_s() - t0;
	uint64_t built = 0;
	for (int i = 0; i < BENCH_BUILD_CLIENTS; i++)
		built += sh->s[i].total;
	long long have = ok ? inbox_messages(&d, "bench0") : -1;
	if (!ok || have != (long long)messages) {
		printf("  build: FAILED (%llu acknowledged, INBOX says %lld)\n",
		       (unsigned long long)built, have);
		daemon_done(&d);
		return 1;
	}
	printf("  build: APPENDs of %u placements (%u-byte bodies), %d "
	       "clients x %d pipelined:\n  %.1f s, %.0f messages/s\n",
	       MS_PROTO_MAX_PLACEMENTS, BENCH_BUILD_BODY, BENCH_BUILD_CLIENTS,
	       BENCH_BUILD_DEPTH, tbuild, (double)messages / tbuild);
	/*
	 * Starts: three with the page cache warm, one with the store's
	 * files evicted from it, one with the index deleted (and the log
	 * evicted): each after a clean stop, each checked by MBOX_STATUS.
	 */
	static const char *const what[] = {
		"start until the sockets answer, warm",
		"start until the sockets answer, warm",
		"start until the sockets answer, warm",
		"start, store files evicted from cache",
		"start, index deleted: full rebuild",
	};
	double tstart[MS_ARRAY_SIZE(what)], tstop = 0, tmax = 0;
	int bad_count = 0, bad_stop = 0;
	for (size_t r = 0; r < MS_ARRAY_SIZE(what); r++) {
		t0 = now_s();
		int st = msd_stop(&d);
		double t = now_s() - t0;
		tstop = t > tstop ? t : tstop;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad_stop++;
		if (r == 0)
			printf("  store: log %.0f MB per copy, index %.0f MB\n",
			       du_mb(d.primary), du_mb(d.index));
		if (r + 1 == MS_ARRAY_SIZE(what))
			mst_rmtree(d.index);
		if (r + 2 >= MS_ARRAY_SIZE(what))
			evict_cache(d.dir);
		t0 = now_s();
		msd_start(&d);
		tstart[r] = now_s() - t0;
		have = inbox_messages(&d, "bench0");
		double tstatus = now_s() - t0;
		if (r < 3 && tstart[r] > tmax)
			tmax = tstart[r];
		if (have != (long long)messages)
			bad_count++;
		printf("  %-38s %6.2f s (MBOX_STATUS at %.2f s: %lld "
		       "messages%s)\n",
		       what[r], tstart[r], tstatus, have,
		       have == (long long)messages ? "" : ", WRONG");
		fflush(stdout);
	}
	printf("  %-38s %6.2f s (the longest of %zu)%s\n",
	       "stop: SIGTERM until it exits", tstop, MS_ARRAY_SIZE(what),
	       bad_stop ? ", exit status FAILED" : "");
	printf("target: restart with %llu messages < 1 s: %.2f s, the "
	       "longest warm start (%s)\n",
	       (unsigned long long)messages, tmax, tmax < 1 ? "met" : "MISSED");
	fails += bad_count + bad_stop;
	daemon_done(&d);
	munmap(sh, sizeof(*sh));
	return fails ? 1 : 0;
}
