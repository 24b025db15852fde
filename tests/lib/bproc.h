/*
 * bproc.h - processes, ports and logs for the benchmarks that run
 * servers (bench-imap, bench-lmtp, bench-repl): a monotonic clock, the
 * CPU time of a whole process tree from /proc, waiting until a tree is
 * gone, reaping a child with a timeout, stopping a server's whole tree,
 * starting a program with its output in a log file, Dovecot's mail uid,
 * free loopback ports, and scanning a server log for warnings.  Nothing
 * here exits the program; every call says how it went.
 */
#ifndef BPROC_H
#define BPROC_H

#include <stddef.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC in seconds. */
double bp_now(void);
void bp_sleep(double secs);
/* This process's user + system CPU time, seconds. */
double bp_self_cpu(void);

struct bp_proc {
	pid_t pid, ppid;
	char state;
	unsigned long long cpu; /* utime+stime+cutime+cstime, ticks */
	unsigned long long start;
};

/* Every process whose ancestry reaches one of roots (the roots too),
   into out (at most max).  How many. */
int bp_tree_list(const pid_t *roots, int nroots, struct bp_proc *out, int max);
/* CPU seconds of the whole tree under roots (reaped children too). */
double bp_tree_cpu(const pid_t *roots, int nroots);
/* Wait until every process of the list is gone (a zombie counts as
   gone); SIGKILL what is left after timeout.  How many had to be
   killed. */
int bp_wait_gone(const struct bp_proc *list, int n, double timeout);
/* waitpid with a timeout, then SIGKILL.  The wait status, or -1. */
int bp_reap(pid_t pid, double timeout);
/* SIGTERM pid (our child) and bp_reap it within timeout, then
   bp_wait_gone every process its tree held before the signal, within
   gone_timeout.  The child's wait status (or -1) in *status_r; how
   many of the tree had to be killed. */
int bp_stop_tree(pid_t pid, double timeout, double gone_timeout, int *status_r);
/* fork + exec argv, stdin /dev/null, stdout and stderr appended to
   logfile.  The pid, or -1 with errno. */
pid_t bp_spawn(char *const argv[], const char *logfile);

/* The system user name (a mail uid for a private Dovecot), made with
   useradd --system if missing: 0 with its uid and gid, or -1. */
int bp_system_user(const char *name, uid_t *uid_r, gid_t *gid_r);
/* 1 if a process as uid:gid can create a file in dir (which it leaves
   there), else 0. */
int bp_uid_can_write(uid_t uid, gid_t gid, const char *dir);

/*
 * The benchmarks' scratch directory: MS_BENCH_DIR (default var/bench),
 * created with its parents, as an absolute path in dir; TMPDIR is set to
 * it, so that the servers' directories (mst_tmpdir, msd_setup) go on the
 * same disk.  0, or -1 with a line on stderr naming prog.
 */
int bp_bench_dir(const char *prog, char *dir, size_t len);
/* SIGTERM, SIGINT and SIGHUP to fatal (which stops what the bench
   started), SIGPIPE ignored. */
void bp_fatal_signals(void (*fatal)(int));
/* The first line of `dovecot --version` (bin), or "?". */
void bp_dovecot_version(const char *bin, char *buf, size_t len);
/*
 * What a bench needs to run a private Dovecot on dir, whose servers make
 * sockets at dir + sock_sub: root, the system user mail_user (created
 * if missing; uid and gid returned), socket paths that fit, no quote in
 * dir, and dir reachable and writable by that user.  0, or -1 with the
 * reason to skip in why.
 */
int bp_dovecot_env(const char *dir, const char *sock_sub,
		   const char *mail_user, uid_t *uid_r, gid_t *gid_r,
		   char *why, size_t whylen);

/* A TCP port on 127.0.0.1 nobody listens on just now, or -1. */
int bp_free_port(void);
/* 1 if something accepts on 127.0.0.1:port. */
int bp_port_answers(int port);
/* 1 if a line of the file contains what. */
int bp_file_has(const char *path, const char *what);
/* Lines of a log that contain one of bad[] and none of ignore[] (both
   NULL-terminated): one line printed with the first of them.  How
   many. */
int bp_log_check(const char *who, const char *path, const char *const *bad,
		 const char *const *ignore);
/* "load average <when>: ..." from /proc/loadavg. */
void bp_print_load(const char *when);

#endif
