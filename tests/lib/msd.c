/*
 * msd.c - see msd.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msd.h"
#include "mstest.h"

/* daemons still running at exit (a failed test skips its stop) */
static pid_t live[64];
static int nlive;

static void msd_reap_all(void)
{
	for (int i = 0; i < nlive; i++) {
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
		}
	}
	nlive = 0;
}

static void live_add(pid_t pid)
{
	if (nlive == 0)
		atexit(msd_reap_all);
	for (int i = 0; i < nlive; i++)
		if (live[i] <= 0) {
			live[i] = pid;
			return;
		}
	if (nlive < 64)
		live[nlive++] = pid;
}

static void live_del(pid_t pid)
{
	for (int i = 0; i < nlive; i++)
		if (live[i] == pid)
			live[i] = 0;
}

void msd_setup(struct msd *d, const char *tag, const char *extra)
{
	char *root = mst_tmpdir(tag);
	snprintf(d->dir, sizeof(d->dir), "%s", root);
	snprintf(d->conf, sizeof(d->conf), "%s/mstore.conf", d->dir);
	snprintf(d->sock, sizeof(d->sock), "%s/s.sock", d->dir);
	snprintf(d->asock, sizeof(d->asock), "%s/a.sock", d->dir);
	snprintf(d->primary, sizeof(d->primary), "%s/primary", d->dir);
	snprintf(d->secondary, sizeof(d->secondary), "%s/secondary", d->dir);
	snprintf(d->index, sizeof(d->index), "%s/index", d->dir);
	snprintf(d->logfile, sizeof(d->logfile), "%s/mstored.log", d->dir);
	d->pid = -1;
	FILE *f = fopen(d->conf, "w");
	if (f == NULL) {
		perror(d->conf);
		exit(1);
	}
	fprintf(f,
		"[store]\nprimary = primary\nsecondary = secondary\n"
		"index = index\nsocket = s.sock\nadmin_socket = a.sock\n%s\n",
		extra ? extra : "");
	fclose(f);
}

static int can_connect(const char *path)
{
	struct ms_client *c;
	const char *err;
	if (ms_client_connect(path, 1000, &c, &err) < 0)
		return 0;
	ms_client_close(&c);
	return 1;
}

/* The "event=ready" lines in the log so far (mstored writes one when it has
   dropped root and watches its signals: after its sockets answer). */
static int ready_lines(const char *logfile)
{
	char line[4096];
	int n = 0;
	FILE *f = fopen(logfile, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, " event=ready ") != NULL;
	fclose(f);
	return n;
}

void msd_start(struct msd *d)
{
	const char *b = getenv("MSTORE_BUILD");
	char bin[1100];
	snprintf(bin, sizeof(bin), "%s/mstored", b && *b ? b : "build");
	unlink(d->sock);
	unlink(d->asock);
	int ready = ready_lines(d->logfile);
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(d->logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execl(bin, "mstored", "-c", d->conf, (char *)NULL);
		perror(bin);
		_exit(127);
	}
	d->pid = pid;
	live_add(pid);
	for (int i = 0; i < 3000; i++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fprintf(stderr, "mstored exited at start (%d); log %s\n",
				status, d->logfile);
			exit(1);
		}
		if (ready_lines(d->logfile) > ready && can_connect(d->sock) &&
		    can_connect(d->asock))
			return;
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "mstored did not answer within 30 s\n");
	kill(pid, SIGKILL);
	exit(1);
}

int msd_stop(struct msd *d)
{
	int status = -1;
	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		waitpid(d->pid, &status, 0);
		live_del(d->pid);
	}
	d->pid = -1;
	return status;
}

void msd_kill(struct msd *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
		live_del(d->pid);
	}
	d->pid = -1;
}

struct ms_client *msd_connect(struct msd *d, const char *user)
{
	struct ms_client *c;
	const char *err;
	if (ms_client_connect(user ? d->sock : d->asock, 30000, &c, &err) < 0 ||
	    ms_client_hello(c, user, &err) < 0) {
		fprintf(stderr, "connect as %s: %s\n", user ? user : "admin",
			err);
		exit(1);
	}
	return c;
}

int msd_user_add(struct msd *d, const char *user)
{
	struct ms_client *c = msd_connect(d, NULL);
	struct ms_req q = { .op = MS_OP_USER_CREATE };
	struct ms_reply rep;
	const char *err;
	q.u.user.name = ms_pstr_c(user);
	int ret = ms_client_request(c, &q, &rep, &err);
	ms_client_close(&c);
	return ret;
}
