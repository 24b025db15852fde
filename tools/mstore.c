/*
 * mstore - the offline (and, later, online) administration command.
 * One subcommand per file (cmd_<name>.c); this file holds the table, the
 * helpers of tools.h, and main.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

static struct ms_store_cfg cfg;
static int have_cfg;

const struct ms_store_cfg *tool_cfg(void)
{
	return have_cfg ? &cfg : NULL;
}

int cmd_config(int argc, char **argv)
{
	(void)argv;
	if (argc != 1 || !have_cfg) {
		fprintf(stderr, "usage: mstore -c FILE config\n");
		return TOOL_FAILED;
	}
	return ms_store_cfg_dump(&cfg, stdout) < 0 ? TOOL_FAILED : TOOL_OK;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
} cmds[] = {
	{ "user", cmd_user,
	  "user add NAME | user del NAME | user list   (online, -c FILE: "
	  "mstored's admin socket)" },
	{ "quota", cmd_quota,
	  "quota USER [MAX-BYTES MAX-MESSAGES]   show or set (online)" },
	{ "deliver", cmd_deliver,
	  "deliver USER MAILBOX FILE [--flags seen,...] [--keyword KW] "
	  "[--received TIME]   store a message through mstored (online, "
	  "-c FILE)" },
	{ "undelete", cmd_undelete,
	  "undelete USER MAILBOX [--since WHEN]   bring back expunged mail "
	  "(WHEN: unix time, YYYY-MM-DD[THH:MM:SS] UTC, or 2h/3d ago)" },
	{ "compact", cmd_compact,
	  "compact [--threshold PERMILLE] [--purge-only] [--offline]   purge "
	  "what left the undelete window and compact mostly-dead segments" },
	{ "promote", cmd_promote,
	  "promote [--offline]   make the DR store the writer: a new "
	  "timeline (online: the standby mstored; udsync recv stopped)" },
	{ "failback", cmd_failback,
	  "failback --to SOCKET [--to-user SOCKET] [--dry-run] [--no-rewind]"
	  "   at the old "
	  "primary (its mstored stopped): re-deliver what it acknowledged "
	  "past the fork to the new primary (SOCKET: its admin socket), "
	  "then rewind to follow it" },
	{ "drill", cmd_drill,
	  "drill --primary P.conf --dr D.conf --primary-pid FILE --send-pid "
	  "FILE --recv-pid FILE [--user NAME] [--messages N] [--isolate MS]"
	  "   failover and failback drill against a running pair: RPO, RTO, "
	  "re-delivered" },
	{ "stats", cmd_stats,
	  "stats [DIR | --offline]   mstored's counters (online, -c FILE), "
	  "or what the files hold" },
	{ "status", cmd_status,
	  "status   mstored's state for a person: copies, positions, index, "
	  "counters (online, the admin socket)" },
	{ "mailbox", cmd_mailbox,
	  "mailbox add USER NAME   create a mailbox (online, as USER)" },
	{ "export", cmd_export,
	  "export [DIR] USER --maildir OUT | --mbox FILE [--mailbox NAME]   "
	  "a user's mail as Maildir++ or mboxrd (offline, read-only)" },
	{ "config", cmd_config,
	  "config   print the effective settings of -c FILE" },
	{ "verify", cmd_verify,
	  "verify DIR [--secondary DIR2] [--json] [--index IDXDIR | "
	  "--no-index]   every record of both copies; the index against "
	  "the log" },
	{ "dump", cmd_dump,
	  "dump DIR [--from SEG:OFF] [--count N] [--copy primary|secondary]"
	  "   one line per record" },
	{ "repair", cmd_repair,
	  "repair DIR [--secondary DIR2]   recover, then rewrite every bad "
	  "record from the good copy" },
	{ "reindex", cmd_reindex,
	  "reindex DIR [--index IDXDIR]   rebuild the index from the log "
	  "(offline)" },
	{ "init", cmd_init,
	  "init DIR [--secondary DIR2]   create an empty store" },
	{ "cat", cmd_cat,
	  "cat DIR SEG:OFF [--key KEYFILE]   write a body's plain bytes to "
	  "stdout, checked" },
	{ "keygen", cmd_keygen,
	  "keygen KEYFILE   create an at-rest key file (mode 0600, never "
	  "overwrites)" },
	{ "append", cmd_append,
	  "append DIR [--secondary DIR2] FILE...   store files as body "
	  "records (test and demo aid)" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: mstore [-c mstore.conf] COMMAND ARGS\n"
		     "  (with -c, DIR may be left out: the [store] copies are "
		     "used)\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(out, "  mstore %s\n", cmds[i].usage);
	fprintf(out, "exit status: 0 clean, 1 problems found, 2 could not "
		     "run\n");
}

int tool_store_find(const char *dir, const char *secondary, int must_exist,
		    struct tool_store *ts)
{
	struct stat st;
	char meta[4200];

	if (dir == NULL) {
		if (!have_cfg) {
			fprintf(stderr, "mstore: name the store: DIR, or -c "
					"mstore.conf before the command\n");
			return -1;
		}
		snprintf(ts->primary, sizeof(ts->primary), "%s", cfg.primary);
		snprintf(ts->secondary, sizeof(ts->secondary), "%s",
			 secondary ? secondary : cfg.secondary);
		ts->copy[0] = ts->primary;
		ts->copy[1] = ts->secondary;
		snprintf(meta, sizeof(meta), "%s/mstore.meta", ts->primary);
		if (must_exist && stat(meta, &st) < 0) {
			fprintf(stderr, "mstore: no store at %s\n",
				ts->primary);
			return -1;
		}
		return 0;
	}
	snprintf(ts->primary, sizeof(ts->primary), "%s/primary", dir);
	snprintf(meta, sizeof(meta), "%s/mstore.meta", ts->primary);
	if (secondary == NULL && stat(meta, &st) == 0) {
		snprintf(ts->secondary, sizeof(ts->secondary), "%s/secondary",
			 dir);
		ts->copy[0] = ts->primary;
		ts->copy[1] = ts->secondary;
		return 0;
	}
	snprintf(meta, sizeof(meta), "%s/mstore.meta", dir);
	if (must_exist && stat(meta, &st) < 0) {
		fprintf(stderr,
			"mstore: no store at %s (neither %s/mstore.meta nor "
			"%s/primary/mstore.meta)\n",
			dir, dir, dir);
		return -1;
	}
	snprintf(ts->primary, sizeof(ts->primary), "%s", dir);
	ts->copy[0] = ts->primary;
	ts->copy[1] = NULL;
	if (secondary != NULL) {
		snprintf(ts->secondary, sizeof(ts->secondary), "%s", secondary);
		ts->copy[1] = ts->secondary;
	}
	return 0;
}

static int progress_shown;

void tool_progress(const char *what, uint64_t done, uint64_t total)
{
	if (!isatty(STDERR_FILENO))
		return;
	fprintf(stderr, "\r%s: %llu/%llu (%llu%%)   ", what,
		(unsigned long long)done, (unsigned long long)total,
		(unsigned long long)(total ? done * 100 / total : 100));
	progress_shown = 1;
}

void tool_progress_end(void)
{
	if (progress_shown)
		fprintf(stderr, "\r\033[K");
	progress_shown = 0;
}

void tool_json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

int main(int argc, char **argv)
{
	const char *err;

	ms_msg_init("mstore");
	if (argc >= 3 && strcmp(argv[1], "-c") == 0) {
		if (ms_store_cfg_load(argv[2], &cfg, &err) < 0) {
			fprintf(stderr, "mstore: %s\n", err);
			return TOOL_FAILED;
		}
		have_cfg = 1;
		argc -= 2;
		argv += 2;
	}
	if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? TOOL_FAILED : TOOL_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "mstore: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return TOOL_FAILED;
}
