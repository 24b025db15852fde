/*
 * store_cfg.h - the [store] section of mstore.conf: where the copies live,
 * segment size, I/O engine, at-rest key.  One table (store_cfg.c) for
 * mstored and the tools; docs/config.md lists the keys.
 *
 * Relative paths are taken relative to the directory of the config file.
 */
#ifndef MS_STORE_CFG_H
#define MS_STORE_CFG_H

#include <stdio.h>

#include "log.h"

enum ms_store_engine { MS_ENGINE_URING, MS_ENGINE_PSYNC };
enum ms_store_repl { MS_REPL_ASYNC, MS_REPL_SYNC };
enum ms_store_fallback { MS_FALLBACK_REFUSE, MS_FALLBACK_ASYNC };
enum ms_store_log { MS_LOG_STDERR, MS_LOG_SYSLOG };

struct ms_store_cfg {
	char *primary;		/* primary copy directory (required) */
	char *secondary;	/* secondary copy directory (required) */
	uint64_t segment_size;
	unsigned io_engine;	/* enum ms_store_engine */
	uint64_t uring_entries;
	char *key_file;		/* at-rest key, outside the store; optional */
	int compress;		/* LZ4 for bodies when it helps */
	/* mstored */
	char *index;		/* LMDB index directory */
	uint64_t index_map_size;
	char *socket;		/* user-role clients (Dovecot, LMTP) */
	unsigned socket_mode;
	char *admin_socket;	/* admin role (tools); keep it 0600 */
	unsigned admin_socket_mode;
	char *user;		/* drop root to this user after binding */
	char *user_socket_peers;	/* who may act for any user; NULL */
	uint64_t max_frame;
	uint64_t max_connections;
	uint64_t max_output;
	uint64_t idle_timeout;	/* ms */
	uint64_t scrub_rate;	/* bytes per second read on each copy */
	uint64_t undelete_window;	/* ms an expunge stays restorable */
	uint64_t compact_threshold;	/* per mille of live bytes */
	uint64_t compact_interval;	/* ms between automatic runs; 0: off */
	uint64_t group_commit_wait_us;	/* commit gather's cap; 0: off */
	uint64_t max_mailboxes;	/* a user's mailboxes; 0: no limit */
	/* replication to the DR site (udsync; docs/replication.md) */
	unsigned replication;	/* enum ms_store_repl */
	uint64_t sync_timeout;	/* ms */
	unsigned sync_fallback;	/* enum ms_store_fallback */
	unsigned log;		/* enum ms_store_log: where diagnostics go */
	/* the system API (HTTP on loopback) */
	char *http;		/* HOST:PORT, NULL: off */
	char *http_token_file;	/* admin bearer token; NULL: no /admin */
	uint64_t http_timeout;	/* ms to send a whole request */
	uint64_t http_max_connections;
	uint64_t http_quota_users;	/* per-user series in /metrics */
};

/* Load and check path; cfg is filled only on success. */
int ms_store_cfg_load(const char *path, struct ms_store_cfg *cfg,
		      const char **error_r);
/* Parse text (for tests); relative paths are kept as they are. */
int ms_store_cfg_parse(const char *text, size_t len, struct ms_store_cfg *cfg,
		       const char **error_r);
void ms_store_cfg_free(struct ms_store_cfg *cfg);
/* Print the effective settings in file syntax. */
int ms_store_cfg_dump(const struct ms_store_cfg *cfg, FILE *out);
/* The log settings this configuration asks for (strings borrowed). */
void ms_store_cfg_to_log(const struct ms_store_cfg *cfg,
			 struct ms_log_cfg *log_cfg);

#endif
