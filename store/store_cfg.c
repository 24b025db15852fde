/*
 * store_cfg.c - the [store] table and its loader; see store_cfg.h.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cfg.h"
#include "store_cfg.h"
#include "sysapi.h"

static const char *const engine_names[] = { "uring", "psync", NULL };
static const char *const repl_names[] = { "async", "sync", NULL };
static const char *const fallback_names[] = { "refuse", "async", NULL };
static const char *const log_names[] = { "stderr", "syslog", NULL };

#define F(field) offsetof(struct ms_store_cfg, field)

static const struct ms_cfg_def store_defs[] = {
	{ "store", "primary", MS_CFG_STR, NULL, 1, 4000, NULL, F(primary),
	  "directory of the primary copy of the log" },
	{ "store", "secondary", MS_CFG_STR, NULL, 1, 4000, NULL, F(secondary),
	  "directory of the secondary copy (another device)" },
	{ "store", "segment_size", MS_CFG_SIZE, "64M", 1 << 20,
	  (uint64_t)1 << 30, NULL, F(segment_size),
	  "target size of a log segment" },
	{ "store", "io_engine", MS_CFG_ENUM, "uring", 0, 0, engine_names,
	  F(io_engine),
	  "uring, or psync where the kernel or a container refuses io_uring" },
	{ "store", "uring_entries", MS_CFG_UINT, "64", 8, 4096, NULL,
	  F(uring_entries), "io_uring submission queue size" },
	{ "store", "key_file", MS_CFG_STR, NULL, 0, 4000, NULL, F(key_file),
	  "at-rest key (mstore keygen), kept outside the store; empty: "
	  "bodies are not sealed" },
	{ "store", "compress", MS_CFG_BOOL, "yes", 0, 0, NULL, F(compress),
	  "LZ4-compress bodies when that saves at least 1/16" },
	{ "store", "index", MS_CFG_STR, NULL, 0, 4000, NULL, F(index),
	  "LMDB index directory (derived from the log, rebuildable); empty: "
	  "<primary>/index" },
	{ "store", "index_map_size", MS_CFG_SIZE, "16G", 16 << 20,
	  (uint64_t)1 << 44, NULL, F(index_map_size),
	  "largest size the index may grow to (address space, not disk)" },
	{ "store", "socket", MS_CFG_STR, "mstored.sock", 1, 100, NULL,
	  F(socket), "unix socket for user-role clients" },
	{ "store", "socket_mode", MS_CFG_MODE, "0660", 0, 0777, NULL,
	  F(socket_mode), "permissions of the socket file" },
	{ "store", "admin_socket", MS_CFG_STR, "mstored-admin.sock", 1, 100,
	  NULL, F(admin_socket), "unix socket for the admin role" },
	{ "store", "admin_socket_mode", MS_CFG_MODE, "0600", 0, 0777, NULL,
	  F(admin_socket_mode), "permissions of the admin socket file" },
	{ "store", "user", MS_CFG_STR, NULL, 0, 64, NULL, F(user),
	  "run as this user after binding (when started as root)" },
	{ "store", "user_socket_peers", MS_CFG_STR, NULL, 0, 4000, NULL,
	  F(user_socket_peers),
	  "system users and @groups whose processes may say hello on the "
	  "user socket as any mail user (Dovecot's mail_uid); any other "
	  "peer only as the mail user named like its system user; *: any "
	  "peer as any user" },
	{ "store", "max_frame", MS_CFG_SIZE, "64M", 64 << 10, 256 << 20, NULL,
	  F(max_frame), "largest protocol frame (so, largest message)" },
	{ "store", "max_connections", MS_CFG_UINT, "1024", 1, 100000, NULL,
	  F(max_connections), "client connections at once" },
	{ "store", "max_output", MS_CFG_SIZE, "4M", 64 << 10, 1 << 30, NULL,
	  F(max_output), "reply bytes queued per client before it is no "
	  "longer read" },
	{ "store", "idle_timeout", MS_CFG_DURATION, "30m", 0, 0, NULL,
	  F(idle_timeout), "close a client idle this long (0: never)" },
	{ "store", "scrub_rate", MS_CFG_SIZE, "8M", 0, (uint64_t)1 << 34,
	  NULL, F(scrub_rate),
	  "bytes per second the online scrub reads (and checks on both "
	  "copies); 0: no online scrub" },
	{ "store", "undelete_window", MS_CFG_DURATION, "7d", 0, 0, NULL,
	  F(undelete_window),
	  "how long expunged messages stay restorable (mstore undelete); "
	  "compaction frees them after that" },
	{ "store", "compact_threshold", MS_CFG_UINT, "500", 1, 1000, NULL,
	  F(compact_threshold),
	  "compact a sealed segment when its live bytes are under this many "
	  "per mille of its size" },
	{ "store", "compact_interval", MS_CFG_DURATION, "1h", 0, 0, NULL,
	  F(compact_interval),
	  "run compaction this often (0: only when asked, mstore compact)" },
	{ "store", "group_commit_wait_us", MS_CFG_UINT, "1000", 0, 100000,
	  NULL, F(group_commit_wait_us),
	  "after a flush, the next one waits at most this many microseconds "
	  "(and at most half a recent flush) for the clients it answered to "
	  "send again; 0: never waits" },
	{ "store", "max_mailboxes", MS_CFG_UINT, "10000", 0, 1000000, NULL,
	  F(max_mailboxes),
	  "mailboxes a user may have, INBOX included: a create past it is "
	  "refused (0: no limit)" },
	{ "store", "replication", MS_CFG_ENUM, "async", 0, 0, repl_names,
	  F(replication),
	  "async: acknowledge once durable here; sync: also wait for the DR "
	  "site's durable ack (udsync, docs/replication.md)" },
	{ "store", "sync_timeout", MS_CFG_DURATION, "10s", 100, 0, NULL,
	  F(sync_timeout),
	  "sync mode: how long acknowledgements wait for the DR site before "
	  "sync_fallback applies" },
	{ "store", "sync_fallback", MS_CFG_ENUM, "refuse", 0, 0,
	  fallback_names, F(sync_fallback),
	  "sync mode, DR away past sync_timeout: refuse writes with a "
	  "temporary error, or fall back to async (logged either way)" },
	{ "store", "log", MS_CFG_ENUM, "stderr", 0, 0, log_names, F(log),
	  "where mstored, mstore-lmtpd and udsync write their key=value "
	  "lines (docs/logging.md): stderr, or syslog (facility mail)" },
	/* the system API (sysapi.c, docs/http-api.md) */
	{ "store", "http", MS_CFG_STR, NULL, 0, 100, NULL, F(http),
	  "HTTP system API (/metrics, /status, /admin) on this loopback "
	  "HOST:PORT (127.0.0.1:9190, [::1]:9190; port 0: any); empty: off" },
	{ "store", "http_token_file", MS_CFG_STR, NULL, 0, 4000, NULL,
	  F(http_token_file),
	  "file (mode 0600) holding the bearer token of the /admin "
	  "endpoints; empty: /admin answers 403" },
	{ "store", "http_timeout", MS_CFG_DURATION, "10s", 100, 3600000, NULL,
	  F(http_timeout),
	  "close an HTTP connection that sends no whole request this long "
	  "(idle keep-alive and slow senders alike)" },
	{ "store", "http_max_connections", MS_CFG_UINT, "16", 1, 1024, NULL,
	  F(http_max_connections), "HTTP connections at once" },
	{ "store", "http_quota_users", MS_CFG_UINT, "0", 0, 100000, NULL,
	  F(http_quota_users),
	  "per-user quota series in /metrics for at most this many users "
	  "(the first by id); 0: none" },
};

static int check(struct ms_store_cfg *cfg, const char **error_r)
{
	if (cfg->primary == NULL || cfg->secondary == NULL) {
		*error_r = "[store] needs both primary and secondary";
		return MS_ECONFIG;
	}
	if (strcmp(cfg->primary, cfg->secondary) == 0) {
		*error_r = "[store] primary and secondary are the same "
			   "directory: the copies would not be independent";
		return MS_ECONFIG;
	}
	struct sockaddr_storage sa;
	socklen_t salen;
	if (cfg->http != NULL &&
	    ms_sysapi_addr_parse(cfg->http, &sa, &salen, error_r) < 0)
		return MS_ECONFIG;
	return 0;
}

int ms_store_cfg_parse(const char *text, size_t len, struct ms_store_cfg *cfg,
		       const char **error_r)
{
	struct ms_store_cfg c;
	int ret = ms_cfg_parse(store_defs, MS_ARRAY_SIZE(store_defs), text, len,
			       &c, error_r);
	if (ret < 0)
		return ret;
	if ((ret = check(&c, error_r)) < 0) {
		ms_store_cfg_free(&c);
		return ret;
	}
	*cfg = c;
	return 0;
}

int ms_store_cfg_load(const char *path, struct ms_store_cfg *cfg,
		      const char **error_r)
{
	struct ms_store_cfg c;
	int ret = ms_cfg_load(store_defs, MS_ARRAY_SIZE(store_defs), path, &c,
			      error_r);
	if (ret < 0)
		return ret;
	if ((ret = check(&c, error_r)) < 0) {
		*error_r = ms_errf("%s: %s", path, *error_r);
		ms_store_cfg_free(&c);
		return ret;
	}
	ms_cfg_path_abs(&c.primary, path);
	ms_cfg_path_abs(&c.secondary, path);
	ms_cfg_path_abs(&c.key_file, path);
	ms_cfg_path_abs(&c.index, path);
	ms_cfg_path_abs(&c.socket, path);
	ms_cfg_path_abs(&c.admin_socket, path);
	ms_cfg_path_abs(&c.http_token_file, path);
	*cfg = c;
	return 0;
}

void ms_store_cfg_free(struct ms_store_cfg *cfg)
{
	ms_cfg_free(store_defs, MS_ARRAY_SIZE(store_defs), cfg);
}

int ms_store_cfg_dump(const struct ms_store_cfg *cfg, FILE *out)
{
	return ms_cfg_dump(store_defs, MS_ARRAY_SIZE(store_defs), cfg, out);
}

void ms_store_cfg_to_log(const struct ms_store_cfg *cfg,
			 struct ms_log_cfg *log_cfg)
{
	memset(log_cfg, 0, sizeof(*log_cfg));
	log_cfg->dir[0] = cfg->primary;
	log_cfg->dir[1] = cfg->secondary;
	log_cfg->seg_size = cfg->segment_size;
	log_cfg->engine = cfg->io_engine == MS_ENGINE_PSYNC ? MS_IO_PSYNC
							    : MS_IO_URING;
	log_cfg->uring_entries = (unsigned)cfg->uring_entries;
}
