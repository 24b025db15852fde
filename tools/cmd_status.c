/*
 * cmd_status - `mstore -c FILE status`: mstored's state for a person,
 * from the admin socket's STATUS request (always there, no token, no
 * TCP; the HTTP /status endpoint carries the same counters plus the
 * copies' error texts, for programs).  The copies' directories come from
 * the config.  Exit 0 when both copies take writes, 1 when the store is
 * degraded or dead, 2 when mstored could not be asked.
 *
 * `mstore -c FILE mailbox add USER NAME`: create a mailbox, through the
 * user socket as USER (the protocol lets only a user session create its
 * mailboxes).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "store_cfg.h"
#include "tools.h"

struct counters {
	struct ms_counter list[MS_PROTO_MAX_COUNTERS];
	size_t n;
};

static int get(const struct counters *cs, const char *key, uint64_t *v_r)
{
	for (size_t i = 0; i < cs->n; i++) {
		if (cs->list[i].key.len == strlen(key) &&
		    memcmp(cs->list[i].key.s, key, cs->list[i].key.len) == 0) {
			*v_r = cs->list[i].value;
			return 1;
		}
	}
	*v_r = 0;
	return 0;
}

static uint64_t v(const struct counters *cs, const char *key)
{
	uint64_t x;
	(void)get(cs, key, &x);
	return x;
}

/* The DR site as mstored sees it (udsync send's acks). */
static void print_repl(const struct counters *cs)
{
	static const char *const states[] = { "disconnected", "catching up",
					      "streaming", "DEGRADED" };
	uint64_t st = v(cs, "repl.state");
	if (v(cs, "repl.standby")) {
		printf("  %-16s standby (read-only until mstore promote)\n",
		       "replication");
		return;
	}
	printf("  %-16s %s, %s", "replication",
	       v(cs, "repl.sync") ? "sync" : "async",
	       st < MS_ARRAY_SIZE(states) ? states[st] : "?");
	if (st == 3)
		printf(" (%s)", v(cs, "repl.fallback_async")
					? "acknowledging without the DR site"
					: "refusing writes");
	printf("\n  %-16s seq %" PRIu64 ", segment %" PRIu64 " offset %" PRIu64
	       "\n",
	       "DR acknowledged", v(cs, "repl.dr_seq"), v(cs, "repl.dr_segment"),
	       v(cs, "repl.dr_offset"));
	printf("  %-16s %" PRIu64 " records, %" PRIu64 " bytes, %.3f s\n",
	       "DR lag", v(cs, "repl.lag_records"), v(cs, "repl.lag_bytes"),
	       (double)v(cs, "repl.lag_ms") / 1000.0);
}

int cmd_status(int argc, char **argv)
{
	struct ms_req q = { .op = MS_OP_STATUS };
	struct ms_reply rep;
	const char *err = "";
	struct counters cs = { .n = 0 };

	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: mstore -c FILE status\n");
		return TOOL_FAILED;
	}
	struct ms_client *c = tool_admin_connect();
	if (c == NULL)
		return TOOL_FAILED;
	int ret = ms_client_request(c, &q, &rep, &err);
	if (ret < 0) {
		fprintf(stderr, "mstore status: %s\n", err);
		ms_client_close(&c);
		return TOOL_FAILED;
	}
	struct ms_proto_iter it;
	ms_proto_iter_counters(&it, &rep.u.counters);
	while (cs.n < MS_ARRAY_SIZE(cs.list) &&
	       ms_proto_next_counter(&it, &cs.list[cs.n]) > 0)
		cs.n++;

	const struct ms_store_cfg *cfg = tool_cfg();
	int pok = v(&cs, "log.copy.primary.ok") != 0;
	int sok = v(&cs, "log.copy.secondary.ok") != 0;
	int degraded = v(&cs, "log.degraded") != 0, dead = v(&cs, "log.dead") != 0;
	uint64_t flushes = v(&cs, "log.flushes");
	printf("mstored at %s\n", cfg->admin_socket);
	printf("  %-16s %-7s %s\n", "copy primary", pok ? "ok" : "FAILED",
	       cfg->primary);
	printf("  %-16s %-7s %s\n", "copy secondary", sok ? "ok" : "FAILED",
	       cfg->secondary);
	printf("  %-16s %s\n", "state",
	       dead	  ? "DEAD: no writable copy, every write is refused"
	       : degraded ? "DEGRADED: one copy failed; run mstore repair"
			  : "both copies take writes");
	printf("  %-16s seq %" PRIu64 ", segment %" PRIu64 " offset %" PRIu64
	       ", timeline %" PRIu64 "\n",
	       "durable", v(&cs, "log.durable_seq"),
	       v(&cs, "log.durable_segment"), v(&cs, "log.durable_offset"),
	       v(&cs, "log.timeline"));
	printf("  %-16s %" PRIu64 "\n", "segments", v(&cs, "log.segments"));
	uint64_t applied = v(&cs, "index.applied_seq");
	uint64_t durable = v(&cs, "log.durable_seq");
	printf("  %-16s seq %" PRIu64 " (%s)\n", "index applied", applied,
	       applied >= durable ? "caught up" : "behind the log");
	print_repl(&cs);
	printf("  %-16s %" PRIu64 "\n", "users", v(&cs, "index.users"));
	printf("  %-16s %" PRIu64 "\n", "mailboxes", v(&cs, "index.mailboxes"));
	printf("  %-16s %" PRIu64 " (%" PRIu64 " expunged, restorable)\n",
	       "messages", v(&cs, "index.messages"), v(&cs, "index.expunged"));
	printf("  %-16s %" PRIu64 " (%" PRIu64 " deduplicated appends)\n",
	       "bodies", v(&cs, "index.bodies"),
	       v(&cs, "ops.bodies_deduplicated"));
	printf("  %-16s %" PRIu64 "\n", "index anomalies",
	       v(&cs, "index.anomalies"));
	printf("  %-16s %" PRIu64 " (%" PRIu64 " errors), %" PRIu64
	       " appends\n",
	       "requests", v(&cs, "ops.requests"), v(&cs, "ops.errors"),
	       v(&cs, "ops.appends"));
	printf("  %-16s %" PRIu64, "flushes", flushes);
	if (flushes > 0)
		printf(" (%.1f records, %.3f ms on average)",
		       (double)v(&cs, "log.flushed_records") / (double)flushes,
		       (double)v(&cs, "log.flush_ns") / 1e6 / (double)flushes);
	printf("\n  %-16s %" PRIu64 " healed, %" PRIu64 " unreadable\n",
	       "reads", v(&cs, "log.heals"), v(&cs, "log.read_errors"));
	printf("  %-16s %" PRIu64 " passes, %" PRIu64 " records, %" PRIu64
	       " healed, %" PRIu64 " bad\n",
	       "scrub", v(&cs, "scrub.passes"), v(&cs, "scrub.records"),
	       v(&cs, "scrub.healed"), v(&cs, "scrub.bad"));
	printf("  %-16s %" PRIu64 " runs, %" PRIu64 " segments, %" PRIu64
	       " records dropped, %" PRIu64 " errors\n",
	       "compaction", v(&cs, "compact.runs"), v(&cs, "compact.segments"),
	       v(&cs, "compact.records_dropped"), v(&cs, "compact.errors"));
	printf("  %-16s %" PRIu64 " (loop: %s)\n", "connections",
	       v(&cs, "srv.connections"),
	       v(&cs, "srv.loop_uring") ? "io_uring" : "epoll");
	if (cfg->http != NULL)
		printf("  %-16s http://%s/status, /metrics\n", "system API",
		       cfg->http);
	ms_client_close(&c);
	return dead || degraded ? TOOL_PROBLEMS : TOOL_OK;
}

int cmd_mailbox(int argc, char **argv)
{
	const struct ms_store_cfg *cfg = tool_cfg();
	struct ms_client *c;
	struct ms_reply rep;
	const char *err = "";

	if (argc != 4 || strcmp(argv[1], "add") != 0 || cfg == NULL) {
		fprintf(stderr, "usage: mstore -c FILE mailbox add USER NAME\n");
		return TOOL_FAILED;
	}
	if (ms_client_connect(cfg->socket, 30000, &c, &err) < 0) {
		fprintf(stderr, "mstore: mstored at %s: %s\n", cfg->socket, err);
		return TOOL_FAILED;
	}
	int ret = ms_client_hello(c, argv[2], &err);
	if (ret == 0) {
		struct ms_req q = { .op = MS_OP_MBOX_CREATE };
		q.u.mbox.name = ms_pstr_c(argv[3]);
		ret = ms_client_request(c, &q, &rep, &err);
	}
	if (ret < 0)
		fprintf(stderr, "mstore mailbox: %s\n", err);
	else
		printf("mailbox %s of %s created\n", argv[3], argv[2]);
	ms_client_close(&c);
	return ret < 0 ? TOOL_PROBLEMS : TOOL_OK;
}
