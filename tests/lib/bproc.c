/*
 * bproc.c - see bproc.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bproc.h"

#define MAX_ALL 16384

double bp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bp_sleep(double d)
{
	struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
	nanosleep(&ts, NULL);
}

double bp_self_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int proc_read(pid_t pid, struct bp_proc *ps)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char *p = fgets(line, sizeof(line), f);
	fclose(f);
	unsigned long long ut, st;
	long long cut, cst;
	int ppid;
	/* after "pid (comm) ": state 3, ppid 4, utime 14 .. cstime 17,
	   starttime 22 */
	if (p == NULL || (p = strrchr(line, ')')) == NULL ||
	    sscanf(p + 1,
		   " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
		   "%lld %lld %*d %*d %*d %*d %llu",
		   &ps->state, &ppid, &ut, &st, &cut, &cst, &ps->start) != 7)
		return -1;
	ps->pid = pid;
	ps->ppid = ppid;
	ps->cpu = ut + st + (unsigned long long)cut + (unsigned long long)cst;
	return 0;
}

int bp_tree_list(const pid_t *roots, int nroots, struct bp_proc *out, int max)
{
	static struct bp_proc all[MAX_ALL];
	static char in[MAX_ALL];
	int n = 0;
	DIR *d = opendir("/proc");
	if (d == NULL)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < MAX_ALL) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		if (proc_read((pid_t)atoi(de->d_name), &all[n]) == 0)
			n++;
	}
	closedir(d);
	for (int i = 0; i < n; i++) {
		in[i] = 0;
		for (int r = 0; r < nroots; r++)
			if (roots[r] > 0 && all[i].pid == roots[r])
				in[i] = 1;
	}
	/* parents before children is not guaranteed: repeat until no
	   process joins */
	for (int changed = 1; changed;) {
		changed = 0;
		for (int i = 0; i < n; i++) {
			if (in[i])
				continue;
			for (int j = 0; j < n; j++) {
				if (in[j] && all[j].pid == all[i].ppid) {
					in[i] = 1;
					changed = 1;
					break;
				}
			}
		}
	}
	int k = 0;
	for (int i = 0; i < n && k < max; i++)
		if (in[i])
			out[k++] = all[i];
	return k;
}

double bp_tree_cpu(const pid_t *roots, int nroots)
{
	static struct bp_proc t[4096];
	int n = bp_tree_list(roots, nroots, t, 4096);
	unsigned long long sum = 0;
	for (int i = 0; i < n; i++)
		sum += t[i].cpu;
	return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

/* 1 while the process that was ps (same pid, same start) lives. */
static int still_there(const struct bp_proc *ps)
{
	struct bp_proc now;
	if (proc_read(ps->pid, &now) < 0 || now.start != ps->start)
		return 0;
	return now.state != 'Z' && now.state != 'X';
}

int bp_wait_gone(const struct bp_proc *list, int n, double timeout)
{
	double end = bp_now() + timeout;
	for (;;) {
		int left = 0;
		for (int i = 0; i < n; i++)
			left += still_there(&list[i]);
		if (left == 0)
			return 0;
		if (bp_now() > end) {
			for (int i = 0; i < n; i++)
				if (still_there(&list[i]))
					kill(list[i].pid, SIGKILL);
			bp_sleep(0.5);
			return left;
		}
		bp_sleep(0.02);
	}
}

int bp_reap(pid_t pid, double timeout)
{
	int status;
	double end = bp_now() + timeout;
	while (bp_now() < end) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0)
			return -1;
		bp_sleep(0.01);
	}
	kill(pid, SIGKILL);
	return waitpid(pid, &status, 0) == pid ? status : -1;
}

int bp_stop_tree(pid_t pid, double timeout, double gone_timeout, int *status_r)
{
	static struct bp_proc t[4096];
	int n = bp_tree_list(&pid, 1, t, 4096);
	kill(pid, SIGTERM);
	*status_r = bp_reap(pid, timeout);
	return bp_wait_gone(t, n, gone_timeout);
}

pid_t bp_spawn(char *const argv[], const char *logfile)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(logfile,
			      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int bp_system_user(const char *name, uid_t *uid_r, gid_t *gid_r)
{
	if (name == NULL || name[0] == '\0')
		return -1;
	struct passwd *pw = getpwnam(name);
	if (pw == NULL) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd),
			 "useradd --system --no-create-home --home-dir "
			 "/nonexistent --shell /usr/sbin/nologin %s "
			 ">/dev/null 2>&1",
			 name);
		int rc = system(cmd);
		(void)rc; /* another run may have made it meanwhile */
		pw = getpwnam(name);
	}
	if (pw == NULL)
		return -1;
	*uid_r = pw->pw_uid;
	*gid_r = pw->pw_gid;
	return 0;
}

int bp_uid_can_write(uid_t uid, gid_t gid, const char *dir)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (setgid(gid) < 0 || setuid(uid) < 0)
			_exit(1);
		char f[4096];
		snprintf(f, sizeof(f), "%s/x", dir);
		int fd = open(f, O_WRONLY | O_CREAT | O_EXCL, 0600);
		_exit(fd >= 0 ? 0 : 1);
	}
	int st;
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	       WEXITSTATUS(st) == 0;
}

int bp_bench_dir(const char *prog, char *dir, size_t len)
{
	const char *env = getenv("MS_BENCH_DIR");
	char path[PATH_MAX], abs[PATH_MAX];

	if (env == NULL || *env == '\0')
		env = "var/bench";
	if (strchr(env, '\'') != NULL ||
	    (size_t)snprintf(path, sizeof(path), "%s", env) >= sizeof(path)) {
		fprintf(stderr, "%s: MS_BENCH_DIR %s: no quotes, at most %d "
			"bytes\n", prog, env, PATH_MAX - 1);
		return -1;
	}
	/* mkdir -p */
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			fprintf(stderr, "%s: cannot create %s: %s\n", prog,
				path, strerror(errno));
			return -1;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	if (realpath(path, abs) == NULL || strlen(abs) >= len) {
		fprintf(stderr, "%s: cannot use %s: %s\n", prog, path,
			strerror(errno ? errno : ENAMETOOLONG));
		return -1;
	}
	memcpy(dir, abs, strlen(abs) + 1);
	setenv("TMPDIR", dir, 1);
	return 0;
}

void bp_fatal_signals(void (*fatal)(int))
{
	struct sigaction sa = {.sa_handler = fatal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void bp_dovecot_version(const char *bin, char *buf, size_t len)
{
	char cmd[PATH_MAX + 32];
	snprintf(buf, len, "?");
	snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", bin);
	FILE *vp = popen(cmd, "r");
	if (vp == NULL)
		return;
	if (fgets(buf, (int)len, vp) == NULL)
		snprintf(buf, len, "?");
	buf[strcspn(buf, "\n")] = '\0';
	pclose(vp);
}

int bp_dovecot_env(const char *dir, const char *sock_sub,
		   const char *mail_user, uid_t *uid_r, gid_t *gid_r,
		   char *why, size_t whylen)
{
	if (geteuid() != 0) {
		snprintf(why, whylen, "not root: the private Dovecot needs a "
			 "mail uid to switch to (and we create it)");
		return -1;
	}
	if (strlen(dir) + strlen(sock_sub) + 1 >
	    sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(why, whylen,
			 "MS_BENCH_DIR %s is too long for unix socket paths",
			 dir);
		return -1;
	}
	if (strchr(dir, '\'') != NULL) {
		snprintf(why, whylen, "MS_BENCH_DIR has a quote in it");
		return -1;
	}
	if (bp_system_user(mail_user, uid_r, gid_r) < 0) {
		snprintf(why, whylen, "cannot create the system user %s for "
			 "Dovecot's mail (useradd --system failed)", mail_user);
		return -1;
	}
	/* can the mail uid enter and write in dir?  (the mail goes there) */
	char probe[PATH_MAX];
	snprintf(probe, sizeof(probe), "%s/mail-probe-XXXXXX", dir);
	int ok = mkdtemp(probe) != NULL && chmod(probe, 0777) == 0 &&
		 bp_uid_can_write(*uid_r, *gid_r, probe);
	char x[PATH_MAX + 4];
	snprintf(x, sizeof(x), "%s/x", probe);
	unlink(x);
	rmdir(probe);
	if (!ok) {
		snprintf(why, whylen, "the mail user %s cannot enter %s (a "
			 "parent is not searchable by others): set "
			 "MS_BENCH_DIR to a directory it can reach",
			 mail_user, dir);
		return -1;
	}
	return 0;
}

int bp_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return ntohs(sa.sin_port);
}

int bp_port_answers(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return 0;
	int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int bp_file_has(const char *path, const char *what)
{
	char line[2048];
	int found = 0;
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, what) != NULL;
	fclose(f);
	return found;
}

int bp_log_check(const char *who, const char *path, const char *const *bad,
		 const char *const *ignore)
{
	char line[2048], first[2048] = "";
	int n = 0;
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		int hit = 0;
		for (int i = 0; bad[i] != NULL; i++)
			hit |= strstr(line, bad[i]) != NULL;
		for (int i = 0; hit && ignore[i] != NULL; i++)
			hit = strstr(line, ignore[i]) == NULL;
		if (hit && n++ == 0)
			snprintf(first, sizeof(first), "%s", line);
	}
	fclose(f);
	if (n > 0)
		printf("  (%s logged %d warnings or errors; the first: %.*s)\n",
		       who, n, (int)strcspn(first, "\n"), first);
	return n;
}

void bp_print_load(const char *when)
{
	char buf[128] = "";
	FILE *f = fopen("/proc/loadavg", "r");
	if (f != NULL) {
		if (fgets(buf, sizeof(buf), f) == NULL)
			buf[0] = '\0';
		fclose(f);
	}
	printf("load average %s: %.*s\n", when, (int)strcspn(buf, "\n"), buf);
}
