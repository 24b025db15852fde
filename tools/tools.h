/*
 * tools.h - what the mstore subcommands share: the subcommand entry
 * points, finding a store's copies from a directory argument, and the
 * progress line.
 *
 * Exit status of every subcommand: 0 done / clean, 1 problems found,
 * 2 could not run (usage, no store, I/O error before any check).
 */
#ifndef MS_TOOLS_H
#define MS_TOOLS_H

#include <stdint.h>
#include <stdio.h>

#define TOOL_OK 0
#define TOOL_PROBLEMS 1
#define TOOL_FAILED 2

int cmd_verify(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_append(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_deliver(int argc, char **argv);
int cmd_reindex(int argc, char **argv);
int cmd_quota(int argc, char **argv);
int cmd_undelete(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_mailbox(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_failback(int argc, char **argv);
int cmd_drill(int argc, char **argv);

/* Failback (cmd_failback.c): the old primary (cfg; its mstored stopped)
   against the new primary's admin socket dsock. */
struct failback_opts {
	int dry_run;	/* check and list, change nothing */
	int no_rewind;	/* re-deliver, do not rewind */
	int quiet;	/* the report only to its file */
};
struct failback_result {
	uint64_t fork_seq;
	uint64_t redelivered, already, gone, failed, not_replayed;
	int rewound;
};
struct ms_store_cfg;
/* 0 done; MS_EMISMATCH refused (diverged); MS_ESTATE not every message
   re-delivered; other <0 could not run.  *error_r says why. */
int tool_failback(const struct ms_store_cfg *cfg, const char *dsock,
		  const char *dusock, const struct failback_opts *o,
		  struct failback_result *res, const char **error_r);
/* Connect to mstored's admin socket (-c FILE) and say hello; NULL with
   the reason printed. */
struct ms_client;
struct ms_client *tool_admin_connect(void);

/*
 * The copies of the store named by dir: dir/primary and dir/secondary
 * when dir holds them (the layout `make run` uses), else dir itself as
 * the primary and `secondary` (may be NULL) as the other.  copy[1] is
 * NULL when the store has one copy.  Returns 0 or -1 with a message
 * printed.
 */
struct tool_store {
	char primary[4096];
	char secondary[4096];
	const char *copy[2];
};
int tool_store_find(const char *dir, const char *secondary, int must_exist,
		    struct tool_store *ts);

/*
 * The configuration given with `mstore -c FILE COMMAND ...`, or NULL.
 * With it, DIR may be left out: the [store] copies are used.
 */
struct ms_store_cfg;
const struct ms_store_cfg *tool_cfg(void);
int cmd_config(int argc, char **argv);

/* A "\r"-rewritten progress line on stderr, only when it is a terminal. */
void tool_progress(const char *what, uint64_t done, uint64_t total);
void tool_progress_end(void);

/* Print s as a JSON string (quotes included). */
void tool_json_str(FILE *out, const char *s);

/* 0 index agrees with the log, 1 it does not, -1 could not check */
int index_check(const struct tool_store *ts, const char *idxopt,
		const char **what_r);

#endif
