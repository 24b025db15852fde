/*
 * cmd_drill - `mstore drill --primary P.conf --dr D.conf --primary-pid
 * FILE --send-pid FILE --recv-pid FILE [--user NAME] [--messages N]
 * [--isolate MS]`: a failover and failback drill against a running pair
 * (docs/replication.md, "Drill").  P runs mstored and udsync send, D
 * runs udsync recv and mstored --standby; the pid files name the
 * processes the drill stops.
 *
 *  1. N probe messages to P (APPEND as the drill user, INBOX, created if
 *     missing), each remembered once acknowledged;
 *  2. isolate: udsync send is stopped and probes go on for MS
 *     milliseconds (async mode acknowledges them at P alone; sync mode
 *     holds them, and they are not acknowledged);
 *  3. the primary is lost: SIGKILL to P's mstored (t0); udsync recv is
 *     stopped, D promoted (PROMOTE);
 *  4. RTO: until D has accepted an APPEND and served a probe's body;
 *  5. every acknowledged probe is looked for at D (by its bytes);
 *  6. failback (cmd_failback.c) re-delivers what P acknowledged past
 *     the fork and rewinds P; every probe is looked for again.
 *
 * Prints rpo (acknowledged probes lost after the failback; must be 0),
 * missing_at_promote (the async window; 0 in sync mode), rto_ms,
 * redelivered, acknowledged.  Exit 0 when nothing acknowledged is lost
 * (and, in sync mode, nothing was missing at the promote), 1 otherwise,
 * 2 could not run.  P is left rewound: start udsync recv and mstored
 * --standby there to follow D.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "cfg.h"
#include "client.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

struct probe {
	uint8_t sum[32];
	int found;
};

struct drill {
	struct ms_store_cfg p, d;
	const char *user;
	struct probe *pr;
	size_t npr, cappr;
	unsigned seq;
	uint64_t tag;
	uint32_t last_uid;	/* of the last probe acknowledged */
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sum(const void *p, size_t n, uint8_t out[32])
{
	crypto_generichash(out, 32, p, n, NULL, 0);
}

static int read_pid(const char *path, pid_t *pid_r)
{
	char b[32];
	uint64_t v;
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -errno;
	size_t n = fread(b, 1, sizeof(b) - 1, f);
	fclose(f);
	while (n > 0 && (b[n - 1] == '\n' || b[n - 1] == ' '))
		n--;
	if (ms_parse_u64(b, n, &v) < 0 || v < 2 || v > INT32_MAX)
		return -EINVAL;
	*pid_r = (pid_t)v;
	return 0;
}

/* Signal the process of a pid file and wait (up to 30 s) until it is
   gone. */
static int stop_pid(const char *what, const char *path, int sig)
{
	pid_t pid = 0;
	int ret = read_pid(path, &pid);
	if (ret < 0) {
		fprintf(stderr, "mstore drill: %s pid file %s: %s\n", what,
			path, strerror(-ret));
		return ret;
	}
	if (kill(pid, sig) < 0 && errno != ESRCH) {
		fprintf(stderr, "mstore drill: %s (pid %d): %s\n", what,
			(int)pid, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < 3000; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return 0;
		/* a child of ours (tests) must be reaped by its parent;
		   it shows as a zombie: /proc says so */
		char p[64], st[256];
		snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
		FILE *f = fopen(p, "r");
		if (f != NULL) {
			size_t n = fread(st, 1, sizeof(st) - 1, f);
			fclose(f);
			st[n] = '\0';
			char *c = strrchr(st, ')');
			if (c != NULL && c[1] == ' ' && c[2] == 'Z')
				return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "mstore drill: %s (pid %d) did not stop\n", what,
		(int)pid);
	return -ETIMEDOUT;
}

static struct ms_client *connect_user(const char *sock, const char *user,
				      unsigned timeout_ms)
{
	struct ms_client *c;
	const char *err;
	if (ms_client_connect(sock, timeout_ms, &c, &err) < 0)
		return NULL;
	if (ms_client_hello(c, user, &err) < 0) {
		ms_client_close(&c);
		return NULL;
	}
	return c;
}

/* One probe to c; remembered when acknowledged.  0 acked, <0 not. */
static int probe(struct drill *dr, struct ms_client *c, const char *phase)
{
	char b[512];
	int n = snprintf(b, sizeof(b),
			 "Subject: mstore drill %" PRIu64 " %s %u\r\n"
			 "X-Mstore-Drill: %" PRIu64 "\r\n\r\n"
			 "A probe of mstore drill; it may be deleted.\r\n",
			 dr->tag, phase, dr->seq, dr->tag);
	struct ms_placement pl = { .mailbox = MS_PSTR("INBOX") };
	struct ms_req q = { .op = MS_OP_APPEND };
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_append_result r = { .status = -EPROTO };
	const char *err;
	dr->seq++;
	q.u.append.body = (const uint8_t *)b;
	q.u.append.body_len = (uint32_t)n;
	q.u.append.placements = (struct ms_placements){ .n = 1, .list = &pl };
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret == 0) {
		ms_proto_iter_results(&it, &rep.u.append);
		if (ms_proto_next_result(&it, &r) <= 0)
			r.status = -EPROTO;
		ret = r.status;
	}
	if (ret < 0)
		return ret;
	dr->last_uid = r.uid;
	if (dr->npr == dr->cappr) {
		dr->cappr = dr->cappr ? 2 * dr->cappr : 64;
		dr->pr = ms_realloc(dr->pr, dr->cappr * sizeof(*dr->pr));
	}
	sum(b, (size_t)n, dr->pr[dr->npr].sum);
	dr->pr[dr->npr++].found = 0;
	return 0;
}

struct uid_list {
	uint32_t *uids;
	size_t n;
};

static int uid_add(void *ctx, const struct ms_msg_meta *m)
{
	struct uid_list *l = ctx;
	l->uids = ms_realloc(l->uids, (l->n + 1) * sizeof(*l->uids));
	l->uids[l->n++] = m->uid;
	return 0;
}

/* Mark the probes D has (by their bytes); the number missing, or <0. */
static long check_probes(struct drill *dr, struct ms_client *c)
{
	struct ms_buf body;
	const char *err;
	struct uid_list l = { NULL, 0 };
	long missing = 0;

	if (ms_client_fetch_meta_each(c, "INBOX", uid_add, &l, &err) < 0) {
		fprintf(stderr, "mstore drill: the DR site's INBOX: %s\n", err);
		free(l.uids);
		return -1;
	}
	uint32_t *uids = l.uids;
	size_t n = l.n;
	ms_buf_init(&body, MS_PROTO_MAX_FRAME_DEFAULT);
	for (size_t i = 0; i < n; i++) {
		uint8_t s[32];
		if (ms_client_fetch_body(c, "INBOX", uids[i], 0, &body, &err) <
		    0)
			continue;
		sum(body.data, body.len, s);
		for (size_t k = 0; k < dr->npr; k++)
			if (!dr->pr[k].found &&
			    memcmp(dr->pr[k].sum, s, 32) == 0) {
				dr->pr[k].found = 1;
				break;
			}
	}
	ms_buf_free(&body);
	free(uids);
	for (size_t k = 0; k < dr->npr; k++)
		missing += !dr->pr[k].found;
	return missing;
}

static int load_cfg(const char *path, struct ms_store_cfg *c)
{
	const char *err;
	if (ms_store_cfg_load(path, c, &err) < 0) {
		fprintf(stderr, "mstore drill: %s\n", err);
		return -1;
	}
	return 0;
}

int cmd_drill(int argc, char **argv)
{
	const char *pconf = NULL, *dconf = NULL, *ppid = NULL, *spid = NULL;
	const char *rpid = NULL, *err = "";
	uint64_t nmsg = 20, isolate = 1000;
	struct drill dr;
	struct ms_client *c = NULL, *adm = NULL;
	int ret = TOOL_FAILED;

	memset(&dr, 0, sizeof(dr));
	dr.user = "drill";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			goto usage;
		i++;
		if (strcmp(a, "--primary") == 0)
			pconf = v;
		else if (strcmp(a, "--dr") == 0)
			dconf = v;
		else if (strcmp(a, "--primary-pid") == 0)
			ppid = v;
		else if (strcmp(a, "--send-pid") == 0)
			spid = v;
		else if (strcmp(a, "--recv-pid") == 0)
			rpid = v;
		else if (strcmp(a, "--user") == 0)
			dr.user = v;
		else if (strcmp(a, "--messages") == 0) {
			if (ms_parse_u64(v, strlen(v), &nmsg) < 0 ||
			    nmsg > 100000)
				goto usage;
		} else if (strcmp(a, "--isolate") == 0) {
			if (ms_parse_u64(v, strlen(v), &isolate) < 0 ||
			    isolate > 600000)
				goto usage;
		} else {
			goto usage;
		}
	}
	if (!pconf || !dconf || !ppid || !spid || !rpid)
		goto usage;
	if (load_cfg(pconf, &dr.p) < 0)
		return TOOL_FAILED;
	if (load_cfg(dconf, &dr.d) < 0) {
		ms_store_cfg_free(&dr.p);
		return TOOL_FAILED;
	}
	ms_msg_set_level(MS_MSG_ERROR);
	dr.tag = (uint64_t)time(NULL);
	int sync = dr.p.replication == MS_REPL_SYNC;

	/* 1. probes to the primary */
	if (ms_client_connect(dr.p.admin_socket, 30000, &adm, &err) < 0 ||
	    ms_client_hello(adm, NULL, &err) < 0) {
		fprintf(stderr, "mstore drill: the primary's mstored: %s\n",
			err);
		goto out;
	}
	struct ms_req q = { .op = MS_OP_USER_CREATE };
	struct ms_reply rep;
	q.u.user.name = ms_pstr_c(dr.user);
	int r = ms_client_request(adm, &q, &rep, &err);
	ms_client_close(&adm);
	if (r < 0 && r != -EEXIST) {
		fprintf(stderr, "mstore drill: user %s: %s\n", dr.user, err);
		goto out;
	}
	if ((c = connect_user(dr.p.socket, dr.user, 30000)) == NULL) {
		fprintf(stderr, "mstore drill: the primary's %s\n",
			dr.p.socket);
		goto out;
	}
	for (uint64_t i = 0; i < nmsg; i++)
		if (probe(&dr, c, "before") < 0) {
			fprintf(stderr, "mstore drill: a probe before the "
					"drill was refused\n");
			goto out;
		}
	ms_client_close(&c);
	size_t before = dr.npr;

	/* 2. isolate: the link goes, probes go on */
	if (stop_pid("udsync send", spid, SIGTERM) < 0)
		goto out;
	uint64_t until = mono_ms() + isolate;
	c = connect_user(dr.p.socket, dr.user,
			 (unsigned)(isolate > 100 ? isolate : 100));
	while (c != NULL && mono_ms() < until)
		if (probe(&dr, c, "isolated") < 0)
			break; /* held (sync mode) or refused: not acked */
	ms_client_close(&c);
	size_t isolated = dr.npr - before;

	/* 3. the primary is lost; promote the DR site */
	if (stop_pid("the primary's mstored", ppid, SIGKILL) < 0)
		goto out;
	uint64_t t0 = mono_ms();
	if (stop_pid("udsync recv", rpid, SIGTERM) < 0)
		goto out;
	if (ms_client_connect(dr.d.admin_socket, 60000, &adm, &err) < 0 ||
	    ms_client_hello(adm, NULL, &err) < 0) {
		fprintf(stderr, "mstore drill: the DR site's mstored: %s\n",
			err);
		goto out;
	}
	q = (struct ms_req){ .op = MS_OP_PROMOTE };
	if (ms_client_request(adm, &q, &rep, &err) < 0) {
		fprintf(stderr, "mstore drill: promote: %s\n", err);
		goto out;
	}
	ms_client_close(&adm);

	/* 4. RTO: an APPEND accepted and a probe read at the DR site */
	if ((c = connect_user(dr.d.socket, dr.user, 30000)) == NULL) {
		fprintf(stderr, "mstore drill: the DR site's %s\n",
			dr.d.socket);
		goto out;
	}
	if (probe(&dr, c, "after") < 0) {
		fprintf(stderr, "mstore drill: the promoted DR site refused "
				"an APPEND\n");
		goto out;
	}
	struct ms_buf b;
	ms_buf_init(&b, MS_PROTO_MAX_FRAME_DEFAULT);
	r = ms_client_fetch_body(c, "INBOX", dr.last_uid, 0, &b, &err);
	ms_buf_free(&b);
	if (r < 0) {
		fprintf(stderr, "mstore drill: the promoted DR site: read: "
				"%s\n",
			err);
		goto out;
	}
	uint64_t rto = mono_ms() - t0;

	/* 5. what the DR site has of what was acknowledged */
	long missing = check_probes(&dr, c);
	ms_client_close(&c);
	if (missing < 0)
		goto out;

	/* 6. failback */
	struct failback_opts fo = { .quiet = 1 };
	struct failback_result fr;
	if (tool_failback(&dr.p, dr.d.admin_socket, dr.d.socket, &fo, &fr,
			  &err) < 0) {
		fprintf(stderr, "mstore drill: failback: %s\n", err);
		ret = TOOL_PROBLEMS;
		goto out;
	}
	if ((c = connect_user(dr.d.socket, dr.user, 30000)) == NULL)
		goto out;
	long lost = check_probes(&dr, c);
	ms_client_close(&c);
	if (lost < 0)
		goto out;
	printf("mode %s\nacknowledged %zu\nacknowledged_isolated %zu\n"
	       "missing_at_promote %ld\nrto_ms %" PRIu64
	       "\nredelivered %" PRIu64 "\nfork_seq %" PRIu64
	       "\nrpo %ld\n",
	       sync ? "sync" : "async", dr.npr, isolated, missing, rto,
	       fr.redelivered, fr.fork_seq, lost);
	printf("the old primary is rewound: start udsync recv and mstored "
	       "--standby there (its [udsync] as the DR site)\n");
	ret = lost == 0 && (!sync || missing == 0) ? TOOL_OK : TOOL_PROBLEMS;
out:
	ms_client_close(&c);
	ms_client_close(&adm);
	free(dr.pr);
	ms_store_cfg_free(&dr.p);
	ms_store_cfg_free(&dr.d);
	return ret;
usage:
	fprintf(stderr, "usage: mstore drill --primary P.conf --dr D.conf "
			"--primary-pid FILE --send-pid FILE --recv-pid FILE "
			"[--user NAME] [--messages N] [--isolate MS]\n");
	return TOOL_FAILED;
}
