/*
 * sysapi.h - mstored's system API: HTTP/1.1 on a loopback TCP port,
 * served from the daemon's one event loop (srv.h stream listener).
 * docs/http-api.md has the endpoints, the metric names and the auth.
 *
 *   GET /metrics      Prometheus text format 0.0.4
 *   GET /status       JSON: copies, segments, positions, index, counters
 *   /admin/...        users, quota, undelete; Authorization: Bearer TOKEN
 *
 * Every endpoint that needs the store goes through the ops layer as a
 * protocol request on an internal admin connection (srv.h
 * ms_srv_conn_internal): the same checks, the same records, and the HTTP
 * reply only once the ops layer answers, which for a change is when its
 * records are durable and applied.  One request at a time per HTTP
 * connection: the next one is not read until the reply is queued.
 *
 * SECURITY: only loopback addresses are accepted (ms_sysapi_addr_parse);
 * /metrics and /status are open to local processes, /admin needs the
 * token (compared in constant time through a hash); without a token
 * file every /admin request is 403.  The token file must not be
 * readable by group or others.
 */
#ifndef MS_SYSAPI_H
#define MS_SYSAPI_H

#include <sys/socket.h>

#include "ops.h"
#include "srv.h"

#define MS_SYSAPI_TOKEN_MAX 1024
#define MS_SYSAPI_TOKEN_MIN 16

struct ms_sysapi_cfg {
	const char *token;	/* NULL: no admin endpoints (403) */
	size_t token_len;
	unsigned timeout_ms;	/* a request must come whole within it */
	unsigned max_conns;
	uint64_t quota_users;	/* per-user quota series: at most these */
};

struct ms_sysapi;

int ms_sysapi_new(struct ms_srv *srv, struct ms_ops *ops,
		  const struct ms_sysapi_cfg *cfg, struct ms_sysapi **api_r);
/* Listen on addr ("127.0.0.1:8080", "[::1]:0"); *port_r: the port. */
int ms_sysapi_listen(struct ms_sysapi *api, const char *addr,
		     unsigned *port_r, const char **error_r);
/* After ms_srv_free (which closes the connections). */
void ms_sysapi_free(struct ms_sysapi **api);

/*
 * HOST:PORT or [HOST6]:PORT, a numeric loopback address (127.0.0.0/8,
 * ::1) and a port 0-65535 (0: any free one).  0, or -EINVAL with
 * *error_r.
 */
int ms_sysapi_addr_parse(const char *s, struct sockaddr_storage *sa_r,
			 socklen_t *len_r, const char **error_r);
/*
 * Read the admin token: the file's first line (a trailing LF or CRLF is
 * dropped), MS_SYSAPI_TOKEN_MIN to MS_SYSAPI_TOKEN_MAX visible ASCII
 * bytes; the file must be a regular file without group or other
 * permissions.  *token_r is malloc'd (free it after sodium_memzero).
 */
int ms_sysapi_token_load(const char *path, char **token_r, size_t *len_r,
			 const char **error_r);

#endif
