/*
 * sysapi.c - mstored's system API over HTTP/1.1; see sysapi.h and
 * docs/http-api.md.
 *
 * A connection (struct hconn, the stream connection's data) reads one
 * request (http.c), routes it, and either answers at once (a refusal, a
 * 404) or asks the ops layer: it encodes a protocol request, hands it to
 * ms_ops_request() on its internal admin connection (said HELLO once),
 * pauses its input, and answers when the reply frame comes back through
 * deliver() - at once for reads, after the records are durable for
 * changes.  Closing the HTTP connection closes the internal one, so a
 * late reply is dropped by srv.c and never reaches freed memory.
 *
 * Metrics and status read the log's and the index's status directly
 * (ms_ops_log, ms_ops_idx) and take the ops layer's counters from a
 * STATUS request, so a counter another module adds to STATUS shows up
 * here too (as mstore_status_counter{name="..."} until it gets a name).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "config.h"
#include "http.h"
#include "idx.h"
#include "json.h"
#include "log.h"
#include "msg.h"
#include "sysapi.h"

#define SYSAPI_MAX_NAME MS_PROTO_NAME_MAX
/* GET /admin/users: users per page by default, and at most */
#define SYSAPI_USERS_PAGE 1000
#define SYSAPI_USERS_PAGE_MAX 10000

struct ms_sysapi {
	struct ms_srv *srv;
	struct ms_ops *ops;
	struct ms_srv_stream stream;
	struct ms_http_limits lim;
	int have_token;
	uint8_t token_hash[crypto_generichash_BYTES];
	uint64_t quota_users;
	time_t started;
	struct timespec started_mono;
	uint64_t n_http_requests, n_http_refused, n_http_auth_failures;
};

enum route {
	R_NONE,
	R_METRICS,
	R_STATUS,
	R_USER_CREATE,
	R_USER_DELETE,
	R_USER_LIST,
	R_QUOTA_GET,
	R_QUOTA_SET,
	R_UNDELETE,
};

struct hconn {
	struct ms_sysapi *api;
	struct ms_conn *c;	/* the HTTP connection */
	struct ms_conn *ic;	/* internal admin connection, or NULL */
	int busy;		/* a request in the ops layer (holds c) */
	enum route route;
	bool keep_alive;
	uint32_t next_id, want_id;
	char name[SYSAPI_MAX_NAME + 1];	/* the user the request names */
};

/* ---- small helpers ---- */

static void bprintf(struct ms_buf *b, const char *fmt, ...) MS_PRINTF(2, 3);
static void bprintf(struct ms_buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		(void)ms_buf_append(b, tmp, (size_t)n);
		return;
	}
	if (ms_buf_reserve(b, (size_t)n + 1) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void bputs(struct ms_buf *b, const char *s)
{
	(void)ms_buf_append(b, s, strlen(s));
}

static uint64_t uptime_s(const struct ms_sysapi *api)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - api->started_mono.tv_sec);
}

/* Send a whole response; after it, close unless keep_alive. */
static void respond(struct hconn *hc, int status, const char *ctype,
		    const char *extra, const void *body, size_t len)
{
	struct ms_buf out;
	ms_buf_init(&out, 0);
	if (ms_http_response(&out, status, ctype, extra, hc->keep_alive, body,
			     len) < 0) {
		ms_buf_reset(&out);
		hc->keep_alive = false;
		(void)ms_http_response(&out, 500, NULL, NULL, false, NULL, 0);
	}
	ms_conn_send(hc->c, out.data, out.len);
	ms_buf_free(&out);
	if (!hc->keep_alive)
		ms_conn_close(hc->c);
}

/* A JSON error body: {"error": why, "status": code}. */
static void respond_error(struct hconn *hc, int status, const char *extra,
			  const char *why)
{
	struct ms_buf b;
	ms_buf_init(&b, 0);
	bputs(&b, "{\"error\":");
	(void)ms_json_put_str(&b, why, strlen(why));
	bprintf(&b, ",\"status\":%d}\n", status);
	respond(hc, status, "application/json", extra, b.data, b.len);
	ms_buf_free(&b);
}

/* HTTP status for an ops-layer status */
static int http_status_of(int st)
{
	switch (st) {
	case 0: return 200;
	case -EEXIST: return 409;
	case MS_ENOTFOUND: case -ENOENT: return 404;
	case -EINVAL: case MS_ECORRUPT: case MS_ETRUNC: return 400;
	case -EACCES: case -EPERM: return 403;
	case MS_ETOOBIG: return 413;
	case -EDQUOT: return 507;
	case MS_ENOCOPY: case -EBUSY: case -EAGAIN: return 503;
	default: return 500;
	}
}

/* ---- the ops layer, through the internal connection ---- */

static void finish(struct hconn *hc, const struct ms_reply *rep);

/* A reply frame for the internal connection. */
static void deliver(void *arg, const void *frame, size_t len)
{
	struct hconn *hc = arg;
	struct ms_proto_hdr h;
	struct ms_reply rep;
	const char *err = "";

	if (ms_proto_frame(frame, len, MS_PROTO_MAX_FRAME_LIMIT, &h, NULL,
			   &err) < 0) {
		msg_error("http.bad_reply error=%s", msg_q(err));
		return;
	}
	if (!hc->busy || h.id != hc->want_id)
		return; /* HELLO's reply */
	if (ms_reply_decode(h.op, h.body, h.body_len, &rep, &err) < 0) {
		msg_error("http.bad_reply op=%s error=%s", ms_op_name(h.op),
			  msg_q(err));
		rep = (struct ms_reply){ .op = h.op & ~MS_OP_REPLY,
					 .status = -EIO,
					 .reason = MS_PSTR("bad reply") };
	}
	finish(hc, &rep);
}

/* Encode q and hand it to the ops layer.  The encoder checks what a
   client could get wrong (a bad name): that is the caller's 400. */
static int feed(struct hconn *hc, uint32_t id, const struct ms_req *q,
		const char **error_r)
{
	struct ms_buf b;
	struct ms_proto_hdr h;
	ms_buf_init(&b, MS_PROTO_MAX_FRAME_LIMIT);
	int ret = ms_req_encode(&b, id, q, error_r);
	if (ret == 0)
		ret = ms_proto_frame(b.data, b.len, MS_PROTO_MAX_FRAME_LIMIT,
				     &h, NULL, error_r);
	if (ret == 0)
		ms_ops_request(hc->api->ops, hc->ic, &h, h.body, h.body_len);
	ms_buf_free(&b);
	return ret;
}

/* Ask the ops layer; the reply comes to finish() (maybe before this
   returns). */
static void call(struct hconn *hc, enum route route, const struct ms_req *q)
{
	if (hc->ic == NULL) {
		struct ms_req hello = { .op = MS_OP_HELLO };
		hello.u.hello.version = MS_PROTO_VERSION;
		hello.u.hello.role = MS_ROLE_ADMIN;
		const char *err = "";
		hc->ic = ms_srv_conn_internal(hc->api->srv, 1, deliver, hc);
		if (feed(hc, ++hc->next_id, &hello, &err) < 0)
			msg_panic("bug msg=\"HELLO does not encode\" error=%s",
				  msg_q(err));
	}
	const char *why = "";
	hc->route = route;
	hc->busy = 1;
	hc->want_id = ++hc->next_id;
	ms_conn_ref(hc->c);
	ms_conn_pause(hc->c, 1);
	if (feed(hc, hc->want_id, q, &why) < 0) {
		struct ms_reply rep = { .op = q->op, .status = -EINVAL,
					.reason = ms_pstr_c(why) };
		finish(hc, &rep);
	}
}

/* ---- /metrics ---- */

struct metric_def {
	const char *counter;	/* the STATUS counter */
	const char *name;	/* the metric */
	const char *type;	/* counter or gauge */
	const char *help;
};

/* STATUS counters exported under their own names */
static const struct metric_def status_metrics[] = {
	{ "log.appends", "mstore_log_appends_total", "counter",
	  "Records appended to the log since start." },
	{ "log.append_bytes", "mstore_log_append_bytes_total", "counter",
	  "Bytes of records appended since start." },
	{ "log.flushes", "mstore_log_flushes_total", "counter",
	  "Group commits (write and fdatasync of a batch on every copy)." },
	{ "log.heals", "mstore_log_heals_total", "counter",
	  "Records read bad on one copy and rewritten from the other." },
	{ "log.read_errors", "mstore_log_read_errors_total", "counter",
	  "Reads that found a record bad on every copy." },
	{ "log.degraded", "mstore_log_degraded", "gauge",
	  "1 when a copy of the log has failed." },
	{ "log.dead", "mstore_log_dead", "gauge",
	  "1 when no copy of the log is writable (every write refused)." },
	{ "log.durable_seq", "mstore_log_durable_seq", "gauge",
	  "Sequence number of the last durable record." },
	{ "log.timeline", "mstore_log_timeline", "gauge",
	  "Timeline of the log." },
	{ "log.segments", "mstore_log_segments", "gauge",
	  "Segment files of the log." },
	{ "index.applied_seq", "mstore_index_applied_seq", "gauge",
	  "Sequence number of the last record applied to the index." },
	{ "index.committed_seq", "mstore_index_committed_seq", "gauge",
	  "Sequence number of the last record applied and committed to "
	  "the index (a restart replays the log after it)." },
	{ "index.users", "mstore_users", "gauge", "Users." },
	{ "index.mailboxes", "mstore_mailboxes", "gauge", "Mailboxes." },
	{ "index.messages", "mstore_messages", "gauge",
	  "Present messages (placements)." },
	{ "index.expunged", "mstore_messages_expunged", "gauge",
	  "Expunged messages still restorable (undelete window)." },
	{ "index.bodies", "mstore_bodies", "gauge",
	  "Distinct bodies (single-instance storage)." },
	{ "index.anomalies", "mstore_index_anomalies_total", "counter",
	  "Records the index applied as anomalies (writer bugs); "
	  "persistent." },
	{ "ops.requests", "mstore_ops_requests_total", "counter",
	  "Protocol requests handled (all ops)." },
	{ "ops.errors", "mstore_ops_errors_total", "counter",
	  "Protocol requests answered at once with an error." },
	{ "ops.bodies_deduplicated", "mstore_bodies_deduplicated_total",
	  "counter", "Appends whose body was already stored." },
	{ "ops.body_chunks", "mstore_body_chunks_total", "counter",
	  "FETCH_BODY replies with a chunk of a body." },
	{ "ops.body_chunks_from_file", "mstore_body_chunks_from_file_total",
	  "counter", "Of those, chunks sent from the segment file "
	  "(sendfile), not from memory." },
	{ "ops.session_body_bytes", "mstore_session_body_bytes", "gauge",
	  "Bytes of decoded (compressed or sealed) bodies that sessions "
	  "hold between the chunks of a FETCH_BODY." },
	{ "ops.waits", "mstore_waits", "gauge",
	  "WAIT requests parked until their mailbox changes (IMAP IDLE)." },
	{ "ops.undeleted", "mstore_undeleted_total", "counter",
	  "Messages brought back by undelete." },
	{ "ops.gather_holds", "mstore_group_commit_holds_total", "counter",
	  "Flushes held back for the clients the previous one answered "
	  "(group_commit_wait_us)." },
	{ "ops.gather_timeouts", "mstore_group_commit_timeouts_total",
	  "counter", "Held flushes that started at the deadline, not all "
	  "those clients back." },
	{ "ops.gather_held_ns", "mstore_group_commit_held_ns_total",
	  "counter", "Nanoseconds flushes were held back in all." },
	{ "scrub.records", "mstore_scrub_records_total", "counter",
	  "Records the online scrub checked on every copy." },
	{ "scrub.bytes", "mstore_scrub_bytes_total", "counter",
	  "Bytes the online scrub read." },
	{ "scrub.healed", "mstore_scrub_healed_total", "counter",
	  "Records the scrub found bad on one copy and rewrote." },
	{ "scrub.bad", "mstore_scrub_bad_total", "counter",
	  "Records the scrub found bad on every copy." },
	{ "scrub.passes", "mstore_scrub_passes_total", "counter",
	  "Whole passes of the scrub over the log." },
	{ "scrub.pending_compactions", "mstore_scrub_pending_compactions",
	  "gauge", "Records compacted on one copy and not yet on the other." },
	{ "compact.runs", "mstore_compact_runs_total", "counter",
	  "Compaction runs." },
	{ "compact.segments", "mstore_compact_segments_total", "counter",
	  "Segments compacted." },
	{ "compact.records_dropped", "mstore_compact_records_dropped_total",
	  "counter", "Dead records compaction turned into holes." },
	{ "compact.bytes_dropped", "mstore_compact_bytes_dropped_total",
	  "counter", "Bytes compaction gave back." },
	{ "compact.errors", "mstore_compact_errors_total", "counter",
	  "Compaction runs that failed." },
	{ "compact.purged_before", "mstore_compact_purged_before", "gauge",
	  "Expunges before this unix time were purged (left the undelete "
	  "window)." },
	{ "repl.sync", "mstore_replication_sync_mode", "gauge",
	  "1 with replication = sync (replies wait for the DR site's "
	  "durable ack), 0 with async." },
	{ "repl.fallback_async", "mstore_replication_fallback_async", "gauge",
	  "1 with sync_fallback = async (degraded: acknowledge without the "
	  "DR site), 0 with refuse." },
	{ "repl.standby", "mstore_replication_standby", "gauge",
	  "1 for a hot standby at the DR site (read-only)." },
	{ "repl.degraded", "mstore_replication_degraded", "gauge",
	  "1 while sync replication is degraded (the DR site away past "
	  "sync_timeout)." },
	{ "repl.connected", "mstore_replication_connected", "gauge",
	  "1 while udsync send reports a DR site." },
	{ "repl.dr_seq", "mstore_replication_acked_seq", "gauge",
	  "Sequence number of the last record durable at the DR site "
	  "(acknowledged)." },
	{ "repl.dr_segment", "mstore_replication_acked_segment", "gauge",
	  "Segment of the DR site's acknowledged position." },
	{ "repl.dr_offset", "mstore_replication_acked_offset_bytes", "gauge",
	  "Offset in that segment of the DR site's acknowledged position." },
	{ "repl.lag_records", "mstore_replication_lag_records", "gauge",
	  "Durable records the DR site has not acknowledged." },
	{ "repl.lag_bytes", "mstore_replication_lag_bytes", "gauge",
	  "Bytes of durable log the DR site has not acknowledged." },
	{ "repl.sync_waiting", "mstore_replication_sync_waiting", "gauge",
	  "Replies held for the DR site's ack (sync mode)." },
	{ "repl.sync_timeouts", "mstore_replication_sync_timeouts_total",
	  "counter", "Times sync replication became degraded (sync_timeout)." },
	{ "repl.sync_refused", "mstore_replication_sync_refused_total",
	  "counter", "Writes refused or answered with a temporary error "
	  "while degraded (sync_fallback = refuse)." },
	{ "repl.sync_released_async", "mstore_replication_sync_released_total",
	  "counter", "Held replies released without the DR site's ack "
	  "(sync_fallback = async)." },
	{ "srv.connections", "mstore_connections", "gauge",
	  "Open client connections (protocol and HTTP)." },
	{ "srv.loop_uring", "mstore_event_loop_uring", "gauge",
	  "1 when the network loop waits on io_uring, 0 for epoll." },
	{ "srv.file_replies_queued", "mstore_file_replies_queued_total",
	  "counter", "Body replies sent from a segment file that the "
	  "client's socket did not take at once (each waited with a "
	  "descriptor of its own)." },
};

/* STATUS counters exported otherwise (copy states, sums of histograms) */
static const char *const status_taken[] = {
	"log.copy.primary.ok", "log.copy.secondary.ok", "log.durable_segment",
	"log.durable_offset",  "log.flushed_records",	"log.flush_ns",
	"repl.state",	       "repl.lag_ms",
	NULL,
};

static void m_head(struct ms_buf *b, const char *name, const char *type,
		   const char *help)
{
	bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void m_value(struct ms_buf *b, const char *name, uint64_t v)
{
	bprintf(b, "%s %" PRIu64 "\n", name, v);
}

static void m_one(struct ms_buf *b, const char *name, const char *type,
		  const char *help, uint64_t v)
{
	m_head(b, name, type, help);
	m_value(b, name, v);
}

/* A label value: '\', '"' and LF escaped (the format's rules). */
static void m_label(struct ms_buf *b, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\' || s[i] == '"')
			bprintf(b, "\\%c", s[i]);
		else if (s[i] == '\n')
			bputs(b, "\\n");
		else
			(void)ms_buf_append(b, &s[i], 1);
	}
}

static void m_hist(struct ms_buf *b, const char *name, const char *help,
		   const uint64_t *counts, const uint64_t *bounds, size_t n,
		   double scale, double sum)
{
	char bname[128];
	uint64_t cum = 0;
	m_head(b, name, "histogram", help);
	snprintf(bname, sizeof(bname), "%s_bucket", name);
	for (size_t i = 0; i < n; i++) {
		cum += counts[i];
		bprintf(b, "%s{le=\"%g\"} %" PRIu64 "\n", bname,
			(double)bounds[i] * scale, cum);
	}
	cum += counts[n];
	bprintf(b, "%s{le=\"+Inf\"} %" PRIu64 "\n", bname, cum);
	bprintf(b, "%s_sum %.9g\n", name, sum);
	bprintf(b, "%s_count %" PRIu64 "\n", name, cum);
}

static bool taken(const char *k, size_t len)
{
	/* log.batch.*: the histogram mstore_log_flush_records */
	if (len > 10 && memcmp(k, "log.batch.", 10) == 0)
		return true;
	/* ops.op.*: mstore_requests_total{op} */
	if (len > 7 && memcmp(k, "ops.op.", 7) == 0)
		return true;
	for (size_t i = 0; status_taken[i] != NULL; i++)
		if (strlen(status_taken[i]) == len &&
		    memcmp(status_taken[i], k, len) == 0)
			return true;
	return false;
}

static void metrics_quota(struct hconn *hc, struct ms_buf *b)
{
	struct ms_idx_rd *rd;
	struct ms_idx_iter *it;
	struct ms_idx_user u;
	uint64_t n = 0;
	int ret, more = 0;
	struct ms_buf used, msgs, limit;

	if (hc->api->quota_users == 0)
		return;
	if (ms_idx_read_begin(ms_ops_idx(hc->api->ops), &rd) < 0)
		return;
	ms_buf_init(&used, 0);
	ms_buf_init(&msgs, 0);
	ms_buf_init(&limit, 0);
	ret = ms_idx_users_iter(rd, &it);
	while (ret == 0 && ms_idx_users_next(it, &u) > 0) {
		if (n == hc->api->quota_users) {
			more = 1;
			break;
		}
		n++;
		bputs(&used, "mstore_quota_used_bytes{user=\"");
		m_label(&used, u.name, u.name_len);
		bprintf(&used, "\"} %" PRIu64 "\n", u.use_bytes);
		bputs(&msgs, "mstore_quota_used_messages{user=\"");
		m_label(&msgs, u.name, u.name_len);
		bprintf(&msgs, "\"} %" PRIu64 "\n", u.use_messages);
		bputs(&limit, "mstore_quota_limit_bytes{user=\"");
		m_label(&limit, u.name, u.name_len);
		bprintf(&limit, "\"} %" PRIu64 "\n", u.max_bytes);
	}
	ms_idx_iter_free(&it);
	ms_idx_read_end(&rd);
	m_head(b, "mstore_quota_used_bytes", "gauge",
	       "Quota use in bytes, per user (the first http_quota_users "
	       "users by id).");
	(void)ms_buf_append(b, used.data, used.len);
	m_head(b, "mstore_quota_used_messages", "gauge",
	       "Quota use in messages, per user (as above).");
	(void)ms_buf_append(b, msgs.data, msgs.len);
	m_head(b, "mstore_quota_limit_bytes", "gauge",
	       "Quota limit in bytes, per user (0: none; as above).");
	(void)ms_buf_append(b, limit.data, limit.len);
	m_one(b, "mstore_quota_users_truncated", "gauge",
	      "1 when there are more users than http_quota_users: the "
	      "per-user series above are not all of them.",
	      (uint64_t)more);
	ms_buf_free(&used);
	ms_buf_free(&msgs);
	ms_buf_free(&limit);
}

/* The replication state as a state set (one series per state, 1 for
   the current one) and the lag in seconds; from STATUS's repl.state and
   repl.lag_ms (docs/replication.md). */
static void metrics_repl(struct ms_buf *b, const struct ms_counters *counters)
{
	static const char *const states[] = { "disconnected", "catching_up",
					      "streaming", "degraded" };
	struct ms_proto_iter it;
	struct ms_counter k;
	uint64_t state = 0, lag_ms = 0;
	int have = 0;

	ms_proto_iter_counters(&it, counters);
	while (ms_proto_next_counter(&it, &k) > 0) {
		if (k.key.len == 10 && memcmp(k.key.s, "repl.state", 10) == 0) {
			state = k.value;
			have |= 1;
		} else if (k.key.len == 11 &&
			   memcmp(k.key.s, "repl.lag_ms", 11) == 0) {
			lag_ms = k.value;
			have |= 2;
		}
	}
	if (have & 1) {
		m_head(b, "mstore_replication_state", "gauge",
		       "The DR site's state: 1 for the current one "
		       "(disconnected, catching_up, streaming, degraded).");
		for (uint64_t i = 0; i < MS_ARRAY_SIZE(states); i++)
			bprintf(b, "mstore_replication_state{state=\"%s\"} %d\n",
				states[i], state == i);
	}
	if (have & 2) {
		m_head(b, "mstore_replication_lag_seconds", "gauge",
		       "Age of the oldest durable record the DR site has not "
		       "acknowledged (0: it has everything).");
		bprintf(b, "mstore_replication_lag_seconds %.3f\n",
			(double)lag_ms / 1000.0);
	}
}

static void metrics(struct hconn *hc, const struct ms_reply *rep)
{
	struct ms_sysapi *api = hc->api;
	struct ms_log_status ls;
	struct ms_idx_stats is = { 0 };
	struct ms_idx_rd *rd;
	struct ms_buf b;
	struct ms_proto_iter it;
	struct ms_counter k;

	ms_log_get_status(ms_ops_log(api->ops), &ls);
	if (ms_idx_read_begin(ms_ops_idx(api->ops), &rd) == 0) {
		(void)ms_idx_stats(rd, &is);
		ms_idx_read_end(&rd);
	}
	ms_buf_init(&b, 0);
	bprintf(&b, "# HELP mstore_build_info mstored's version, I/O engine "
		    "and network loop.\n# TYPE mstore_build_info gauge\n"
		    "mstore_build_info{version=\"%s\",engine=\"",
		MS_VERSION);
	m_label(&b, ls.engine, strlen(ls.engine));
	bputs(&b, "\",loop=\"");
	const char *loop = ms_srv_loop_name(api->srv);
	m_label(&b, loop, strlen(loop));
	bputs(&b, "\"} 1\n");
	m_one(&b, "mstore_start_time_seconds", "gauge",
	      "When mstored started (unix time).", (uint64_t)api->started);
	m_one(&b, "mstore_uptime_seconds", "gauge",
	      "Seconds since mstored started.", uptime_s(api));

	/* the copies */
	m_head(&b, "mstore_copy_up", "gauge",
	       "1 while a copy of the log takes writes, 0 once it failed.");
	for (int c = 0; c < ls.ncopies && c < MS_IO_COPIES; c++)
		bprintf(&b, "mstore_copy_up{copy=\"%s\"} %d\n",
			ms_log_copy_name(c), ls.copy[c] == MS_COPY_OK);

	/* flush histograms */
	m_hist(&b, "mstore_log_flush_duration_seconds",
	       "Time of a group commit: the batch written and fdatasynced "
	       "on every copy.",
	       ls.flush_hist, ms_log_flush_bounds_ns, MS_LOG_FLUSH_BUCKETS,
	       1e-9, (double)ls.flush_ns / 1e9);
	m_hist(&b, "mstore_log_flush_records",
	       "Records per group commit (batch size).", ls.batch_hist,
	       ms_log_batch_bounds, MS_LOG_BATCH_BUCKETS, 1,
	       (double)ls.flushed_records);
	m_one(&b, "mstore_log_durable_segment", "gauge",
	      "Segment of the end of the durable log.", ls.durable.seg);
	m_one(&b, "mstore_log_durable_offset_bytes", "gauge",
	      "Offset in that segment of the end of the durable log.",
	      ls.durable.off);
	m_one(&b, "mstore_index_records", "gauge",
	      "Records the index has applied.", is.records);
	m_one(&b, "mstore_index_map_used_bytes", "gauge",
	      "Bytes of the index map in use.", is.map_used);
	m_one(&b, "mstore_index_map_size_bytes", "gauge",
	      "Size of the index map (address space).", is.map_size);

	/* the STATUS counters */
	ms_proto_iter_counters(&it, &rep->u.counters);
	struct ms_buf other;
	ms_buf_init(&other, 0);
	while (ms_proto_next_counter(&it, &k) > 0) {
		size_t i;
		for (i = 0; i < MS_ARRAY_SIZE(status_metrics); i++)
			if (strlen(status_metrics[i].counter) == k.key.len &&
			    memcmp(status_metrics[i].counter, k.key.s,
				   k.key.len) == 0)
				break;
		if (i < MS_ARRAY_SIZE(status_metrics)) {
			const struct metric_def *d = &status_metrics[i];
			m_one(&b, d->name, d->type, d->help, k.value);
		} else if (!taken(k.key.s, k.key.len)) {
			bputs(&other, "mstore_status_counter{name=\"");
			m_label(&other, k.key.s, k.key.len);
			bprintf(&other, "\"} %" PRIu64 "\n", k.value);
		}
	}
	metrics_repl(&b, &rep->u.counters);
	if (other.len > 0) {
		m_head(&b, "mstore_status_counter", "gauge",
		       "Other counters of the STATUS request, by name.");
		(void)ms_buf_append(&b, other.data, other.len);
	}
	ms_buf_free(&other);

	/* requests and errors by op */
	m_head(&b, "mstore_requests_total", "counter",
	       "Protocol requests by op (HTTP admin calls included).");
	for (uint16_t op = 0; op < MS_OPS_MAX_OP; op++) {
		uint64_t nreq, nerr;
		if (!ms_op_known(op))
			continue;
		ms_ops_op_counts(api->ops, op, &nreq, &nerr);
		bprintf(&b, "mstore_requests_total{op=\"%s\"} %" PRIu64 "\n",
			ms_op_name(op), nreq);
	}
	m_head(&b, "mstore_request_errors_total", "counter",
	       "Error replies by op: refused at once, or a write that "
	       "failed in the log.");
	for (uint16_t op = 0; op < MS_OPS_MAX_OP; op++) {
		uint64_t nreq, nerr;
		if (!ms_op_known(op))
			continue;
		ms_ops_op_counts(api->ops, op, &nreq, &nerr);
		bprintf(&b,
			"mstore_request_errors_total{op=\"%s\"} %" PRIu64 "\n",
			ms_op_name(op), nerr);
	}
	/* mstore-lmtpd's replies, as it reported them (LMTP_STATS) */
	struct ms_lmtp_count lc[MS_PROTO_MAX_LMTP_CODES * 4];
	size_t ninst = 0;
	size_t nlc = ms_ops_lmtp_replies(api->ops, lc, MS_ARRAY_SIZE(lc),
					 &ninst);
	m_head(&b, "mstore_lmtp_replies_total", "counter",
	       "LMTP replies mstore-lmtpd sent, by code (250 delivered or "
	       "accepted, 4xx temporary, 5xx permanent), as it reports "
	       "them.");
	for (size_t i = 0; i < nlc; i++)
		bprintf(&b,
			"mstore_lmtp_replies_total{code=\"%u\"} %" PRIu64 "\n",
			lc[i].code, lc[i].count);
	m_one(&b, "mstore_lmtp_instances", "gauge",
	      "mstore-lmtpd instances heard from since mstored started "
	      "(at most 16 remembered).",
	      (uint64_t)ninst);
	m_one(&b, "mstore_http_requests_total", "counter",
	      "HTTP requests of the system API.", api->n_http_requests);
	m_one(&b, "mstore_http_refused_total", "counter",
	      "HTTP requests refused as malformed or over a limit.",
	      api->n_http_refused);
	m_one(&b, "mstore_http_auth_failures_total", "counter",
	      "Admin requests without the right token.",
	      api->n_http_auth_failures);
	metrics_quota(hc, &b);
	respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
		b.data, b.len);
	ms_buf_free(&b);
}

/* ---- /status ---- */

static void j_key(struct ms_buf *b, const char *k)
{
	(void)ms_json_put_str(b, k, strlen(k));
	bputs(b, ":");
}

static void status(struct hconn *hc, const struct ms_reply *rep)
{
	struct ms_sysapi *api = hc->api;
	struct ms_log_status ls;
	struct ms_idx_stats is = { 0 };
	struct ms_idx_rd *rd;
	struct ms_buf b;
	int have_is = 0;

	ms_log_get_status(ms_ops_log(api->ops), &ls);
	if (ms_idx_read_begin(ms_ops_idx(api->ops), &rd) == 0) {
		have_is = ms_idx_stats(rd, &is) == 0;
		ms_idx_read_end(&rd);
	}
	ms_buf_init(&b, 0);
	bprintf(&b, "{\"version\":\"%s\",\"uptime_seconds\":%" PRIu64
		    ",\"start_time\":%" PRIu64 ",",
		MS_VERSION, uptime_s(api), (uint64_t)api->started);
	j_key(&b, "engine");
	(void)ms_json_put_str(&b, ls.engine, strlen(ls.engine));
	bputs(&b, ",");
	j_key(&b, "loop");
	const char *loop = ms_srv_loop_name(api->srv);
	(void)ms_json_put_str(&b, loop, strlen(loop));
	bputs(&b, ",\"copies\":[");
	for (int c = 0; c < ls.ncopies && c < MS_IO_COPIES; c++) {
		bprintf(&b, "%s{\"name\":\"%s\",\"dir\":", c ? "," : "",
			ms_log_copy_name(c));
		const char *dir = ls.copy_dir[c] ? ls.copy_dir[c] : "";
		(void)ms_json_put_str(&b, dir, strlen(dir));
		bprintf(&b, ",\"state\":\"%s\",\"error\":",
			ls.copy[c] == MS_COPY_OK ? "ok" : "failed");
		(void)ms_json_put_str(&b, ls.copy_error[c],
				      strnlen(ls.copy_error[c],
					      sizeof(ls.copy_error[c])));
		bputs(&b, "}");
	}
	bprintf(&b, "],\"degraded\":%s,\"dead\":%s,",
		ls.degraded ? "true" : "false", ls.dead ? "true" : "false");
	bprintf(&b, "\"segments\":{\"first\":%" PRIu64 ",\"head\":%" PRIu64
		    ",\"count\":%" PRIu64 "},",
		ls.first_seg, ls.head_seg, ls.nsegs);
	bprintf(&b, "\"durable\":{\"segment\":%" PRIu64 ",\"offset\":%" PRIu64
		    ",\"seq\":%" PRIu64 "},\"next_seq\":%" PRIu64
		    ",\"timeline\":%" PRIu64 ",",
		ls.durable.seg, ls.durable.off, ls.durable_seq, ls.next_seq,
		ls.timeline);
	if (have_is)
		bprintf(&b, "\"index\":{\"applied\":{\"segment\":%" PRIu64
			    ",\"offset\":%" PRIu64 ",\"seq\":%" PRIu64
			    "},\"records\":%" PRIu64 ",\"anomalies\":%" PRIu64
			    ",\"users\":%" PRIu64 ",\"mailboxes\":%" PRIu64
			    ",\"messages\":%" PRIu64 ",\"expunged\":%" PRIu64
			    ",\"bodies\":%" PRIu64 ",\"map_used\":%" PRIu64
			    ",\"map_size\":%" PRIu64 "},",
			is.applied_pos.seg, is.applied_pos.off,
			is.applied_seq, is.records, is.anomalies, is.users,
			is.mailboxes, is.messages, is.expunged, is.bodies,
			is.map_used, is.map_size);
	else
		bputs(&b, "\"index\":null,");
	bputs(&b, "\"counters\":{");
	struct ms_proto_iter it;
	struct ms_counter k;
	int first = 1;
	ms_proto_iter_counters(&it, &rep->u.counters);
	while (ms_proto_next_counter(&it, &k) > 0) {
		if (!first)
			bputs(&b, ",");
		first = 0;
		(void)ms_json_put_str(&b, k.key.s, k.key.len);
		bprintf(&b, ":%" PRIu64, k.value);
	}
	bprintf(&b, "},\"http\":{\"requests\":%" PRIu64 ",\"refused\":%" PRIu64
		    ",\"auth_failures\":%" PRIu64 "}}\n",
		api->n_http_requests, api->n_http_refused,
		api->n_http_auth_failures);
	respond(hc, 200, "application/json", NULL, b.data, b.len);
	ms_buf_free(&b);
}

/* ---- admin replies ---- */

static void admin_reply(struct hconn *hc, const struct ms_reply *rep)
{
	struct ms_buf b;
	int code = 200;
	ms_buf_init(&b, 0);
	switch (hc->route) {
	case R_USER_CREATE:
		code = 201;
		bputs(&b, "{\"name\":");
		(void)ms_json_put_str(&b, hc->name, strlen(hc->name));
		bprintf(&b, ",\"id\":%" PRIu64 "}\n", rep->u.user_id);
		break;
	case R_USER_DELETE:
		bputs(&b, "{\"deleted\":");
		(void)ms_json_put_str(&b, hc->name, strlen(hc->name));
		bprintf(&b, ",\"id\":%" PRIu64 "}\n", rep->u.user_id);
		break;
	case R_USER_LIST: {
		struct ms_proto_iter it;
		struct ms_user_info u;
		int first = 1;
		uint64_t last = 0;
		bputs(&b, "{\"users\":[");
		ms_proto_iter_users(&it, &rep->u.users);
		while (ms_proto_next_user(&it, &u) > 0) {
			bprintf(&b, "%s{\"id\":%" PRIu64 ",\"name\":",
				first ? "" : ",", u.user_id);
			(void)ms_json_put_str(&b, u.name.s, u.name.len);
			bputs(&b, "}");
			first = 0;
			last = u.user_id;
		}
		/* a page: the next one is after its last user; an empty
		   page ends the list */
		if (!first)
			bprintf(&b, "],\"next_after\":%" PRIu64 "}\n", last);
		else
			bputs(&b, "]}\n");
		break;
	}
	case R_QUOTA_GET:
		bputs(&b, "{\"user\":");
		(void)ms_json_put_str(&b, hc->name, strlen(hc->name));
		bprintf(&b,
			",\"max_bytes\":%" PRIu64 ",\"max_messages\":%" PRIu64
			",\"used_bytes\":%" PRIu64 ",\"used_messages\":%" PRIu64
			",\"mailboxes\":%" PRIu64 ",\"max_mailboxes\":%" PRIu64
			"}\n",
			rep->u.quota.max_bytes, rep->u.quota.max_messages,
			rep->u.quota.used_bytes, rep->u.quota.used_messages,
			rep->u.quota.mailboxes, rep->u.quota.max_mailboxes);
		break;
	case R_QUOTA_SET:
		bputs(&b, "{\"user\":");
		(void)ms_json_put_str(&b, hc->name, strlen(hc->name));
		bputs(&b, ",\"quota\":\"set\"}\n");
		break;
	case R_UNDELETE: {
		struct ms_proto_iter it;
		struct ms_uid_pair p;
		int first = 1;
		bprintf(&b, "{\"uidvalidity\":%u,\"restored\":[",
			rep->u.copy.uidvalidity);
		ms_proto_iter_pairs(&it, &rep->u.copy.pairs);
		while (ms_proto_next_pair(&it, &p) > 0) {
			bprintf(&b, "%s{\"old_uid\":%u,\"uid\":%u}",
				first ? "" : ",", p.src_uid, p.dst_uid);
			first = 0;
		}
		bputs(&b, "]}\n");
		break;
	}
	default:
		break;
	}
	respond(hc, code, "application/json", NULL, b.data, b.len);
	ms_buf_free(&b);
}

static void finish(struct hconn *hc, const struct ms_reply *rep)
{
	struct ms_conn *c = hc->c;
	hc->busy = 0;
	if (rep->status < 0) {
		char why[MS_PROTO_MAX_REASON + 1];
		snprintf(why, sizeof(why), "%.*s", (int)rep->reason.len,
			 rep->reason.s ? rep->reason.s : "");
		respond_error(hc, http_status_of(rep->status), NULL, why);
	} else if (hc->route == R_METRICS) {
		metrics(hc, rep);
	} else if (hc->route == R_STATUS) {
		status(hc, rep);
	} else {
		admin_reply(hc, rep);
	}
	ms_conn_pause(c, 0);
	ms_conn_unref(&c);	/* call()'s: the connection's own remains */
}

/* ---- routing ---- */

/* GET /admin/users's query: after=ID (0) and limit=N (1..10000; 1000),
   nothing else.  0, or -1 with why. */
static int users_query(const struct ms_http_req *r, struct ms_req_list *l,
		       const char **why_r)
{
	l->after_id = 0;
	l->max = SYSAPI_USERS_PAGE;
	if (r->query == NULL)
		return 0;

	const char *p = r->query, *end = r->query + r->query_len;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp != NULL ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(e - p));
		uint64_t v = 0;
		bool after;

		if (eq != NULL && eq - p == 5 && memcmp(p, "after", 5) == 0)
			after = true;
		else if (eq != NULL && eq - p == 5 &&
			 memcmp(p, "limit", 5) == 0)
			after = false;
		else {
			*why_r = "the query takes after=ID and limit=N only";
			return -1;
		}
		if (eq + 1 == e) {
			*why_r = "an empty number in the query";
			return -1;
		}
		for (const char *d = eq + 1; d < e; d++) {
			if (*d < '0' || *d > '9' ||
			    v > (UINT64_MAX - (uint64_t)(*d - '0')) / 10) {
				*why_r = "a number in the query is not one";
				return -1;
			}
			v = v * 10 + (uint64_t)(*d - '0');
		}
		if (after) {
			l->after_id = v;
		} else if (v < 1 || v > SYSAPI_USERS_PAGE_MAX) {
			*why_r = "limit is 1 to 10000";
			return -1;
		} else {
			l->max = (uint32_t)v;
		}
		p = amp != NULL ? amp + 1 : end;
	}
	return 0;
}

static bool path_is(const struct ms_http_req *r, const char *p)
{
	return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

/* path = prefix + one segment: decode it into hc->name */
static int path_name(struct hconn *hc, const struct ms_http_req *r,
		     const char *prefix)
{
	size_t pl = strlen(prefix);
	if (r->path_len <= pl || memcmp(r->path, prefix, pl) != 0)
		return 0;
	if (ms_http_pct_decode(r->path + pl, r->path_len - pl, hc->name,
			       sizeof(hc->name)) <= 0)
		return -1;
	return 1;
}

/* Constant time: the hashes of the two are compared, whatever length. */
static bool token_ok(const struct ms_sysapi *api, const struct ms_http_req *r)
{
	uint8_t h[crypto_generichash_BYTES];
	const char *t;
	size_t tl;
	if (r->auth == NULL || r->auth_len < 7 ||
	    strncasecmp(r->auth, "Bearer ", 7) != 0)
		return false;
	t = r->auth + 7;
	tl = r->auth_len - 7;
	while (tl > 0 && *t == ' ') {
		t++;
		tl--;
	}
	crypto_generichash(h, sizeof(h), (const uint8_t *)t, tl, NULL, 0);
	return sodium_memcmp(h, api->token_hash, sizeof(h)) == 0;
}

static int json_body(struct hconn *hc, const struct ms_http_req *r,
		     const char *const *allowed, struct ms_json_obj *o)
{
	const char *err = "";
	if (r->content_type != NULL &&
	    !(r->content_type_len >= 16 &&
	      strncasecmp(r->content_type, "application/json", 16) == 0 &&
	      (r->content_type_len == 16 || r->content_type[16] == ';'))) {
		respond_error(hc, 415, NULL, "the body must be "
					     "application/json");
		return -1;
	}
	if (ms_json_parse_object(r->body, r->body_len, o, &err) < 0) {
		char why[200];
		snprintf(why, sizeof(why), "bad JSON body: %s", err);
		respond_error(hc, 400, NULL, why);
		return -1;
	}
	const char *unk = ms_json_unknown_key(o, allowed);
	if (unk != NULL) {
		char why[200];
		snprintf(why, sizeof(why), "unknown member \"%.64s\"", unk);
		ms_json_obj_free(o);
		respond_error(hc, 400, NULL, why);
		return -1;
	}
	return 0;
}

/* A required string member into dst (dst_size with the NUL). */
static int json_name(struct hconn *hc, const struct ms_json_obj *o,
		     const char *key, char *dst, size_t dst_size)
{
	const char *s;
	size_t len;
	char why[120];
	int ret = ms_json_get_str(o, key, &s, &len);
	if (ret == 1 && len > 0 && len < dst_size) {
		memcpy(dst, s, len + 1);
		return 0;
	}
	snprintf(why, sizeof(why), "\"%s\" must be a string of 1 to %zu "
				   "bytes",
		 key, dst_size - 1);
	respond_error(hc, 400, NULL, why);
	return -1;
}

static int json_u64(struct hconn *hc, const struct ms_json_obj *o,
		    const char *key, int required, int64_t *v_r)
{
	char why[120];
	int ret = ms_json_get_int(o, key, v_r);
	if (ret == 1 && *v_r >= 0)
		return 0;
	if (ret == 0 && !required) {
		*v_r = 0;
		return 0;
	}
	snprintf(why, sizeof(why), "\"%s\" must be an integer >= 0", key);
	respond_error(hc, 400, NULL, why);
	return -1;
}

static void route_admin(struct hconn *hc, const struct ms_http_req *r)
{
	struct ms_sysapi *api = hc->api;
	struct ms_json_obj o;
	struct ms_req q = { 0 };
	char mbox[SYSAPI_MAX_NAME + 1];
	int64_t a, b;
	int n;

	if (!api->have_token) {
		api->n_http_auth_failures++;
		respond_error(hc, 403, NULL,
			      "admin endpoints are off: no http_token_file "
			      "is configured");
		return;
	}
	if (!token_ok(api, r)) {
		api->n_http_auth_failures++;
		respond_error(hc, 401,
			      "WWW-Authenticate: Bearer realm=\"mstore\"\r\n",
			      "a valid Authorization: Bearer token is needed");
		return;
	}
	hc->name[0] = '\0';
	if (path_is(r, "/admin/users")) {
		if (ms_http_method_is(r, "GET")) {
			const char *why = "";
			q.op = MS_OP_USER_LIST;
			q.u.list.paged = 1;
			if (users_query(r, &q.u.list, &why) < 0) {
				respond_error(hc, 400, NULL, why);
				return;
			}
			call(hc, R_USER_LIST, &q);
		} else if (ms_http_method_is(r, "POST")) {
			static const char *const ok[] = { "name", NULL };
			if (json_body(hc, r, ok, &o) < 0)
				return;
			if (json_name(hc, &o, "name", hc->name,
				      sizeof(hc->name)) == 0) {
				q.op = MS_OP_USER_CREATE;
				q.u.user.name = ms_pstr_c(hc->name);
				call(hc, R_USER_CREATE, &q);
			}
			ms_json_obj_free(&o);
		} else {
			respond_error(hc, 405, "Allow: GET, POST\r\n",
				      "method not allowed");
		}
		return;
	}
	if ((n = path_name(hc, r, "/admin/users/")) != 0) {
		if (n < 0) {
			respond_error(hc, 400, NULL, "bad user name in the "
						     "path");
		} else if (!ms_http_method_is(r, "DELETE")) {
			respond_error(hc, 405, "Allow: DELETE\r\n",
				      "method not allowed");
		} else {
			q.op = MS_OP_USER_DELETE;
			q.u.user.name = ms_pstr_c(hc->name);
			call(hc, R_USER_DELETE, &q);
		}
		return;
	}
	if ((n = path_name(hc, r, "/admin/quota/")) != 0) {
		if (n < 0) {
			respond_error(hc, 400, NULL, "bad user name in the "
						     "path");
		} else if (ms_http_method_is(r, "GET")) {
			q.op = MS_OP_QUOTA_GET;
			q.u.quota.user = ms_pstr_c(hc->name);
			call(hc, R_QUOTA_GET, &q);
		} else if (ms_http_method_is(r, "PUT")) {
			static const char *const ok[] = { "max_bytes",
							  "max_messages", NULL };
			if (json_body(hc, r, ok, &o) < 0)
				return;
			if (json_u64(hc, &o, "max_bytes", 1, &a) == 0 &&
			    json_u64(hc, &o, "max_messages", 1, &b) == 0) {
				q.op = MS_OP_QUOTA_SET;
				q.u.quota.user = ms_pstr_c(hc->name);
				q.u.quota.max_bytes = (uint64_t)a;
				q.u.quota.max_messages = (uint64_t)b;
				call(hc, R_QUOTA_SET, &q);
			}
			ms_json_obj_free(&o);
		} else {
			respond_error(hc, 405, "Allow: GET, PUT\r\n",
				      "method not allowed");
		}
		return;
	}
	if (path_is(r, "/admin/undelete")) {
		static const char *const ok[] = { "user", "mailbox", "since",
						  NULL };
		if (!ms_http_method_is(r, "POST")) {
			respond_error(hc, 405, "Allow: POST\r\n",
				      "method not allowed");
			return;
		}
		if (json_body(hc, r, ok, &o) < 0)
			return;
		if (json_name(hc, &o, "user", hc->name, sizeof(hc->name)) == 0 &&
		    json_name(hc, &o, "mailbox", mbox, sizeof(mbox)) == 0 &&
		    json_u64(hc, &o, "since", 0, &a) == 0) {
			q.op = MS_OP_UNDELETE;
			q.u.undelete.user = ms_pstr_c(hc->name);
			q.u.undelete.mailbox = ms_pstr_c(mbox);
			q.u.undelete.since = a;
			call(hc, R_UNDELETE, &q);
		}
		ms_json_obj_free(&o);
		return;
	}
	respond_error(hc, 404, NULL, "no such endpoint");
}

static void route(struct hconn *hc, const struct ms_http_req *r)
{
	struct ms_req q = { .op = MS_OP_STATUS };

	if (path_is(r, "/metrics") || path_is(r, "/status")) {
		if (!ms_http_method_is(r, "GET"))
			respond_error(hc, 405, "Allow: GET\r\n",
				      "method not allowed");
		else
			call(hc, path_is(r, "/metrics") ? R_METRICS
							: R_STATUS,
			     &q);
		return;
	}
	if (r->path_len >= 6 && memcmp(r->path, "/admin", 6) == 0 &&
	    (r->path_len == 6 || r->path[6] == '/')) {
		route_admin(hc, r);
		return;
	}
	respond_error(hc, 404, NULL, "no such endpoint");
}

/* ---- the stream connection ---- */

static size_t on_input(void *ctx, struct ms_conn *c, const uint8_t *data,
		       size_t len)
{
	struct ms_sysapi *api = ctx;
	struct hconn *hc = ms_conn_data(c);
	struct ms_http_req r;
	const char *err = "";
	int st = 0;

	if (hc == NULL) {
		hc = ms_calloc(1, sizeof(*hc));
		hc->api = api;
		hc->c = c;
		ms_conn_set_data(c, hc);
	}
	if (hc->busy)
		return 0;
	int ret = ms_http_parse(data, len, &api->lim, &r, &st, &err);
	if (ret == MS_ETRUNC)
		return 0;
	if (ret < 0) {
		api->n_http_refused++;
		hc->keep_alive = false;
		msg_info("http.refused status=%d error=%s", st, msg_q(err));
		respond_error(hc, st, NULL, err);
		return len;
	}
	api->n_http_requests++;
	hc->keep_alive = r.keep_alive;
	route(hc, &r);
	return r.total;
}

static void on_closed(void *ctx, struct ms_conn *c)
{
	(void)ctx;
	struct hconn *hc = ms_conn_data(c);
	if (hc == NULL)
		return;
	if (hc->ic != NULL)
		ms_conn_close(hc->ic); /* a late reply is dropped */
	if (hc->busy)
		ms_conn_unref(&hc->c); /* call()'s reference */
	ms_conn_set_data(c, NULL);
	free(hc);
}

/* ---- set-up ---- */

int ms_sysapi_new(struct ms_srv *srv, struct ms_ops *ops,
		  const struct ms_sysapi_cfg *cfg, struct ms_sysapi **api_r)
{
	if (sodium_init() < 0)
		return -EIO;
	struct ms_sysapi *api = ms_calloc(1, sizeof(*api));
	api->srv = srv;
	api->ops = ops;
	api->lim.max_head = MS_HTTP_MAX_HEAD_DEFAULT;
	api->lim.max_body = MS_HTTP_MAX_BODY_DEFAULT;
	api->stream.input = on_input;
	api->stream.closed = on_closed;
	api->stream.ctx = api;
	api->stream.max_in = api->lim.max_head + api->lim.max_body;
	api->stream.max_conns = cfg->max_conns;
	api->stream.timeout_ms = cfg->timeout_ms;
	api->quota_users = cfg->quota_users;
	if (cfg->token != NULL) {
		api->have_token = 1;
		crypto_generichash(api->token_hash, sizeof(api->token_hash),
				   (const uint8_t *)cfg->token, cfg->token_len,
				   NULL, 0);
	}
	api->started = time(NULL);
	clock_gettime(CLOCK_MONOTONIC, &api->started_mono);
	*api_r = api;
	return 0;
}

int ms_sysapi_listen(struct ms_sysapi *api, const char *addr,
		     unsigned *port_r, const char **error_r)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	int ret = ms_sysapi_addr_parse(addr, &sa, &salen, error_r);
	if (ret < 0)
		return ret;
	ret = ms_srv_listen_tcp(api->srv, (struct sockaddr *)&sa, salen,
				&api->stream, port_r, error_r);
	if (ret < 0)
		*error_r = ms_errf("http %s: %s", addr, *error_r);
	return ret;
}

void ms_sysapi_free(struct ms_sysapi **apip)
{
	struct ms_sysapi *api = *apip;
	if (api == NULL)
		return;
	sodium_memzero(api->token_hash, sizeof(api->token_hash));
	free(api);
	*apip = NULL;
}

int ms_sysapi_addr_parse(const char *s, struct sockaddr_storage *sa_r,
			 socklen_t *len_r, const char **error_r)
{
	char host[64];
	const char *port;
	uint64_t pn;
	size_t len = strlen(s);

	memset(sa_r, 0, sizeof(*sa_r));
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			goto bad;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
		port = rb + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
			goto bad;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port = colon + 1;
	}
	if (ms_parse_u64(port, len - (size_t)(port - s), &pn) < 0 ||
	    pn > 65535)
		goto bad;
	struct sockaddr_in *in4 = (struct sockaddr_in *)sa_r;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa_r;
	if (s[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127) {
			*error_r = ms_errf("http %s: not a loopback address "
					   "(127.0.0.0/8 or [::1])",
					   s);
			return -EINVAL;
		}
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)pn);
		*len_r = sizeof(*in4);
		return 0;
	}
	if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
			*error_r = ms_errf("http %s: not a loopback address "
					   "(127.0.0.0/8 or [::1])",
					   s);
			return -EINVAL;
		}
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)pn);
		*len_r = sizeof(*in6);
		return 0;
	}
bad:
	*error_r = ms_errf("http %s: expected HOST:PORT or [HOST6]:PORT with "
			   "a numeric loopback address",
			   s);
	return -EINVAL;
}

int ms_sysapi_token_load(const char *path, char **token_r, size_t *len_r,
			 const char **error_r)
{
	char buf[MS_SYSAPI_TOKEN_MAX + 3];
	struct stat st;
	int ret = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*error_r = ms_errf("http_token_file %s: %s", path,
				   strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*error_r = ms_errf("http_token_file %s: not a regular file",
				   path);
		close(fd);
		return -EINVAL;
	}
	if ((st.st_mode & 077) != 0) {
		*error_r = ms_errf("http_token_file %s: mode %04o lets group "
				   "or others read it; make it 0600",
				   path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0) {
		*error_r = ms_errf("http_token_file %s: %s", path,
				   strerror(errno));
		return -EIO;
	}
	size_t len = (size_t)n;
	const char *nl = memchr(buf, '\n', len);
	if (nl != NULL) {
		for (const char *p = nl + 1; p < buf + len; p++)
			if (*p != '\n' && *p != '\r')
				ret = -EINVAL; /* more than one line */
		len = (size_t)(nl - buf);
		if (len > 0 && buf[len - 1] == '\r')
			len--;
	}
	for (size_t i = 0; i < len; i++)
		if (buf[i] < 0x21 || buf[i] > 0x7e)
			ret = -EINVAL;
	if (ret < 0 || len < MS_SYSAPI_TOKEN_MIN || len > MS_SYSAPI_TOKEN_MAX) {
		sodium_memzero(buf, sizeof(buf));
		*error_r = ms_errf("http_token_file %s: the token must be one "
				   "line of %d to %d visible ASCII characters",
				   path, MS_SYSAPI_TOKEN_MIN,
				   MS_SYSAPI_TOKEN_MAX);
		return -EINVAL;
	}
	char *t = ms_malloc(len + 1);
	memcpy(t, buf, len);
	t[len] = '\0';
	sodium_memzero(buf, sizeof(buf));
	*token_r = t;
	*len_r = len;
	return 0;
}
