/*
 * test_proto.c - the protocol codec (store/proto.c):
 *
 *   names        ms_op_name / ms_op_known for every op
 *   golden       a few bodies byte for byte, written from the tables of
 *                docs/protocol.md with a tiny spec language (build())
 *   round trip   a valid request and a valid reply for every op (and some
 *                error replies), named by index: encode from the list form
 *                → ms_proto_frame → decode → the same content (dump())
 *                → re-encode the decoded (packed) struct → the same bytes
 *   pipelined    three frames in one buffer, parsed one after the other
 *   bad frames   table of invalid frame headers, named by index
 *   frame cut    every valid frame cut at every length: MS_ETRUNC, need
 *   body cut     every valid body cut at every length (in a buffer of
 *                exactly that size, for ASan): refused, never a crash
 *   extra byte   every valid body plus one byte: MS_ECORRUPT
 *   bad bodies   table of invalid request and reply bodies, named by
 *                index: the right code, an error text, output untouched
 *   limits       MS_PROTO_MAX_* at the limit and one past, both ways
 *   encoder      malformed structs, unused fields, buffer limits, errors
 *   iterators    wrong kind, list form, uid set accessor
 *   migration    APPEND_UID placements and MBOX_UPDATE (golden bytes,
 *                unused fields on APPEND, the placement iterator's kinds)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mstest.h"
#include "mstest_cmocka.h"
#include "proto.h"

/* ---- a spec language for raw bodies ---- */

/*
 * Space-separated tokens, each appended to the output:
 *   u8:N u16:N u32:N u64:N   integers (C syntax: 0x.. allowed)
 *   i32:N i64:N              signed integers
 *   s:TEXT                   str: u16 length + TEXT
 *   sx:HEX                   str whose bytes are given in hex
 *   sn:N:C                   str of N times the character C
 *   x:HEX                    raw bytes
 *   xn:N:C                   N raw bytes C
 */
static size_t build(const char *spec, uint8_t *out, size_t cap)
{
	size_t n = 0;
	char tok[256];
	const char *p = spec;

	while (*p != '\0') {
		size_t tl = strcspn(p, " ");
		assert_true(tl < sizeof(tok));
		memcpy(tok, p, tl);
		tok[tl] = '\0';
		p += tl;
		p += strspn(p, " ");
		if (tl == 0)
			continue;
		char *colon = strchr(tok, ':');
		assert_non_null(colon);
		*colon = '\0';
		const char *v = colon + 1;
		uint8_t tmp[8];
		if (strcmp(tok, "u8") == 0 || strcmp(tok, "u16") == 0 ||
		    strcmp(tok, "u32") == 0 || strcmp(tok, "u64") == 0 ||
		    strcmp(tok, "i32") == 0 || strcmp(tok, "i64") == 0) {
			uint64_t x = tok[0] == 'i'
					     ? (uint64_t)strtoll(v, NULL, 0)
					     : strtoull(v, NULL, 0);
			size_t w = strcmp(tok + 1, "8") == 0    ? 1
				   : strcmp(tok + 1, "16") == 0 ? 2
				   : strcmp(tok + 1, "32") == 0 ? 4
								: 8;
			for (size_t i = 0; i < w; i++)
				tmp[i] = (uint8_t)(x >> (8 * i));
			assert_true(n + w <= cap);
			memcpy(out + n, tmp, w);
			n += w;
		} else if (strcmp(tok, "s") == 0) {
			size_t l = strlen(v);
			assert_true(n + 2 + l <= cap);
			ms_put16(out + n, (uint16_t)l);
			memcpy(out + n + 2, v, l);
			n += 2 + l;
		} else if (strcmp(tok, "sx") == 0 || strcmp(tok, "x") == 0) {
			size_t l = strlen(v) / 2, at = n;
			if (tok[0] == 's') {
				assert_true(n + 2 <= cap);
				ms_put16(out + n, (uint16_t)l);
				at += 2;
			}
			assert_true(at + l <= cap);
			for (size_t i = 0; i < l; i++) {
				unsigned b;
				assert_int_equal(sscanf(v + 2 * i, "%2x", &b),
						 1);
				out[at + i] = (uint8_t)b;
			}
			n = at + l;
		} else if (strcmp(tok, "sn") == 0 || strcmp(tok, "xn") == 0) {
			char *end;
			size_t l = strtoul(v, &end, 10), at = n;
			assert_true(*end == ':' && end[1] != '\0');
			if (tok[0] == 's') {
				assert_true(n + 2 <= cap);
				ms_put16(out + n, (uint16_t)l);
				at += 2;
			}
			assert_true(at + l <= cap);
			memset(out + at, end[1], l);
			n = at + l;
		} else {
			fail_msg("bad spec token %s", tok);
		}
	}
	return n;
}

/* ---- dump: the content of a request or reply as text ---- */

/*
 * Every field, lists through the iterators, so the list form of an
 * encoder's input and the packed form of a decoder's output give the same
 * text when they hold the same content.
 */
static void dump_str(FILE *f, const char *what, struct ms_pstr s)
{
	fprintf(f, " %s=[%.*s]", what, (int)s.len, s.len ? s.s : "");
}

static void dump_kws(FILE *f, const struct ms_keywords *k)
{
	struct ms_proto_iter it;
	struct ms_pstr kw;
	int ret;

	fprintf(f, " kw(%u)", k->n);
	ms_proto_iter_keywords(&it, k);
	while ((ret = ms_proto_next_keyword(&it, &kw)) == 1)
		dump_str(f, "k", kw);
	assert_int_equal(ret, 0);
}

static void dump_set(FILE *f, const struct ms_uid_set *s)
{
	uint32_t lo, hi;

	fprintf(f, " set(%u)", s->n);
	for (uint32_t i = 0; i < s->n; i++) {
		assert_int_equal(ms_uid_set_range(s, i, &lo, &hi), 0);
		fprintf(f, " %u:%u", lo, hi);
	}
	assert_int_equal(ms_uid_set_range(s, s->n, &lo, &hi), -EINVAL);
}

static void dump_mbox(FILE *f, const struct ms_mbox_info *m)
{
	fprintf(f, " mbox %llu", (unsigned long long)m->mbox_id);
	dump_str(f, "name", m->name);
	fprintf(f,
		" uv=%u next=%u hms=%llu msgs=%u unseen=%u bytes=%llu "
		"su=%u sub=%u",
		m->uidvalidity, m->uidnext,
		(unsigned long long)m->highestmodseq, m->messages, m->unseen,
		(unsigned long long)m->bytes, m->special_use, m->subscribed);
}

static void dump_req(FILE *f, const struct ms_req *r)
{
	struct ms_proto_iter it;
	int ret;

	fprintf(f, "req %s", ms_op_name(r->op));
	switch (r->op) {
	case MS_OP_HELLO:
		fprintf(f, " v=%u role=%u", r->u.hello.version,
			r->u.hello.role);
		dump_str(f, "user", r->u.hello.user);
		break;
	case MS_OP_USER_CREATE:
	case MS_OP_USER_DELETE:
		dump_str(f, "name", r->u.user.name);
		break;
	case MS_OP_USER_LIST:
		fprintf(f, " paged=%u after=%llu max=%u", r->u.list.paged,
			(unsigned long long)r->u.list.after_id, r->u.list.max);
		break;
	case MS_OP_MBOX_LIST:
		fprintf(f, " paged=%u", r->u.list.paged);
		dump_str(f, "after", r->u.list.after_name);
		fprintf(f, " max=%u", r->u.list.max);
		break;
	case MS_OP_MBOX_CREATE:
	case MS_OP_MBOX_RENAME:
	case MS_OP_MBOX_DELETE:
	case MS_OP_MBOX_SUBSCRIBE:
	case MS_OP_MBOX_STATUS:
		dump_str(f, "name", r->u.mbox.name);
		dump_str(f, "new", r->u.mbox.new_name);
		fprintf(f, " su=%u sub=%u del=%u", r->u.mbox.special_use,
			r->u.mbox.subscribe, r->u.mbox.delete_flags);
		break;
	case MS_OP_MBOX_UPDATE:
		dump_str(f, "name", r->u.mbox_update.name);
		fprintf(f, " uv=%u next=%u hms=%llu guid=",
			r->u.mbox_update.uidvalidity, r->u.mbox_update.uidnext,
			(unsigned long long)r->u.mbox_update.highestmodseq);
		for (size_t i = 0; i < sizeof(r->u.mbox_update.guid); i++)
			fprintf(f, "%02x", r->u.mbox_update.guid[i]);
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID: {
		struct ms_placement p;
		fprintf(f, " body=[%.*s] n=%u", (int)r->u.append.body_len,
			(const char *)r->u.append.body,
			r->u.append.placements.n);
		ms_proto_iter_placements(&it, &r->u.append.placements);
		while ((ret = ms_proto_next_placement(&it, &p)) == 1) {
			dump_str(f, "user", p.user);
			dump_str(f, "mbox", p.mailbox);
			fprintf(f, " fl=%u rcv=%lld", p.flags,
				(long long)p.received);
			dump_kws(f, &p.keywords);
			fprintf(f, " uid=%u guid=", p.uid);
			for (size_t i = 0; i < sizeof(p.guid); i++)
				fprintf(f, "%02x", p.guid[i]);
		}
		assert_int_equal(ret, 0);
		break;
	}
	case MS_OP_FETCH_META:
	case MS_OP_EXPUNGE:
	case MS_OP_COPY:
	case MS_OP_MOVE:
		dump_str(f, "mbox", r->u.uids.mailbox);
		dump_set(f, &r->u.uids.uids);
		dump_str(f, "dst", r->u.uids.dst);
		break;
	case MS_OP_STORE:
		dump_str(f, "mbox", r->u.store.mailbox);
		dump_set(f, &r->u.store.uids);
		fprintf(f, " mode=%u fl=%u", r->u.store.mode, r->u.store.flags);
		dump_kws(f, &r->u.store.keywords);
		fprintf(f, " unch=%llu",
			(unsigned long long)r->u.store.unchangedsince);
		break;
	case MS_OP_FETCH_BODY:
		dump_str(f, "mbox", r->u.fetch_body.mailbox);
		fprintf(f, " uid=%u off=%llu max=%u", r->u.fetch_body.uid,
			(unsigned long long)r->u.fetch_body.offset,
			r->u.fetch_body.max_len);
		break;
	case MS_OP_CHANGES:
		dump_str(f, "mbox", r->u.changes.mailbox);
		fprintf(f, " since=%llu",
			(unsigned long long)r->u.changes.since_modseq);
		break;
	case MS_OP_QUOTA_GET:
	case MS_OP_QUOTA_SET:
		dump_str(f, "user", r->u.quota.user);
		fprintf(f, " maxb=%llu maxm=%llu",
			(unsigned long long)r->u.quota.max_bytes,
			(unsigned long long)r->u.quota.max_messages);
		break;
	case MS_OP_WAIT:
		dump_str(f, "mbox", r->u.wait.mailbox);
		fprintf(f, " known=%llu to=%u",
			(unsigned long long)r->u.wait.known_modseq,
			r->u.wait.timeout_ms);
		break;
	case MS_OP_UNDELETE:
		dump_str(f, "user", r->u.undelete.user);
		dump_str(f, "mbox", r->u.undelete.mailbox);
		fprintf(f, " since=%lld", (long long)r->u.undelete.since);
		break;
	case MS_OP_COMPACT:
		fprintf(f, " thr=%u purge=%u", r->u.compact.threshold,
			r->u.compact.purge_only);
		break;
	case MS_OP_REPL_WAIT:
		fprintf(f, " from=%llu:%llu to=%u",
			(unsigned long long)r->u.repl_wait.seg,
			(unsigned long long)r->u.repl_wait.off,
			r->u.repl_wait.timeout_ms);
		break;
	case MS_OP_REPL_ACK:
		fprintf(f, " dr=%llu:%llu seq=%llu state=%u",
			(unsigned long long)r->u.repl_ack.seg,
			(unsigned long long)r->u.repl_ack.off,
			(unsigned long long)r->u.repl_ack.seq,
			r->u.repl_ack.state);
		break;
	case MS_OP_FORK_INFO:
		fprintf(f, " tl=%llu", (unsigned long long)r->u.fork_info.timeline);
		break;
	case MS_OP_LMTP_STATS:
		fprintf(f, " inst=%llu",
			(unsigned long long)r->u.lmtp_stats.instance);
		for (uint16_t i = 0; i < r->u.lmtp_stats.n; i++)
			fprintf(f, " %u=%llu", r->u.lmtp_stats.codes[i].code,
				(unsigned long long)r->u.lmtp_stats.codes[i]
					.count);
		break;
	default:
		break;
	}
}

static void dump_reply(FILE *f, const struct ms_reply *r)
{
	struct ms_proto_iter it;
	int ret = 0;

	fprintf(f, "reply %s status=%d", ms_op_name(r->op), (int)r->status);
	if (r->status < 0) {
		dump_str(f, "reason", r->reason);
		return;
	}
	switch (r->op) {
	case MS_OP_HELLO:
		fprintf(f, " v=%u uid=%llu flags=%#x", r->u.hello.version,
			(unsigned long long)r->u.hello.user_id,
			r->u.hello.flags);
		dump_str(f, "server", r->u.hello.server);
		break;
	case MS_OP_STATUS: {
		struct ms_counter c;
		ms_proto_iter_counters(&it, &r->u.counters);
		while ((ret = ms_proto_next_counter(&it, &c)) == 1) {
			dump_str(f, "key", c.key);
			fprintf(f, "=%llu", (unsigned long long)c.value);
		}
		break;
	}
	case MS_OP_USER_CREATE:
	case MS_OP_USER_DELETE:
		fprintf(f, " id=%llu", (unsigned long long)r->u.user_id);
		break;
	case MS_OP_USER_LIST: {
		struct ms_user_info u;
		ms_proto_iter_users(&it, &r->u.users);
		while ((ret = ms_proto_next_user(&it, &u)) == 1) {
			fprintf(f, " id=%llu", (unsigned long long)u.user_id);
			dump_str(f, "name", u.name);
		}
		break;
	}
	case MS_OP_MBOX_LIST: {
		struct ms_mbox_info m;
		ms_proto_iter_mboxes(&it, &r->u.mboxes);
		while ((ret = ms_proto_next_mbox(&it, &m)) == 1)
			dump_mbox(f, &m);
		break;
	}
	case MS_OP_MBOX_SUBS: {
		struct ms_pstr n;
		ms_proto_iter_names(&it, &r->u.subs);
		while ((ret = ms_proto_next_name(&it, &n)) == 1)
			dump_str(f, "sub", n);
		break;
	}
	case MS_OP_MBOX_CREATE:
	case MS_OP_MBOX_STATUS:
		dump_mbox(f, &r->u.mbox);
		break;
	case MS_OP_MBOX_UPDATE:
		dump_mbox(f, &r->u.mbox_update.mbox);
		fprintf(f, " guid=");
		for (size_t i = 0; i < sizeof(r->u.mbox_update.guid); i++)
			fprintf(f, "%02x", r->u.mbox_update.guid[i]);
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID: {
		struct ms_append_result a;
		ms_proto_iter_results(&it, &r->u.append);
		while ((ret = ms_proto_next_result(&it, &a)) == 1) {
			fprintf(f, " st=%d", (int)a.status);
			dump_str(f, "why", a.reason);
			fprintf(f, " mb=%llu uv=%u uid=%u ms=%llu",
				(unsigned long long)a.mbox_id, a.uidvalidity,
				a.uid, (unsigned long long)a.modseq);
		}
		break;
	}
	case MS_OP_FETCH_META: {
		struct ms_msg_meta m;
		ms_proto_iter_metas(&it, &r->u.metas);
		while ((ret = ms_proto_next_meta(&it, &m)) == 1) {
			fprintf(f, " uid=%u ms=%llu fl=%u", m.uid,
				(unsigned long long)m.modseq, m.flags);
			dump_kws(f, &m.keywords);
			fprintf(f, " rcv=%lld saved=%lld guid=",
				(long long)m.received, (long long)m.saved);
			for (size_t i = 0; i < sizeof(m.guid); i++)
				fprintf(f, "%02x", m.guid[i]);
			fprintf(f, " phys=%llu virt=%llu",
				(unsigned long long)m.physical_size,
				(unsigned long long)m.virtual_size);
		}
		break;
	}
	case MS_OP_FETCH_BODY:
		fprintf(f, " total=%llu chunk=[%.*s]",
			(unsigned long long)r->u.fetch_body.total,
			(int)r->u.fetch_body.chunk_len,
			(const char *)r->u.fetch_body.chunk);
		break;
	case MS_OP_CHANGES: {
		struct ms_msg_change c;
		fprintf(f, " hms=%llu uv=%u",
			(unsigned long long)r->u.changes.highestmodseq,
			r->u.changes.uidvalidity);
		ms_proto_iter_changes(&it, &r->u.changes.changes);
		while ((ret = ms_proto_next_change(&it, &c)) == 1) {
			fprintf(f, " uid=%u ms=%llu fl=%u", c.uid,
				(unsigned long long)c.modseq, c.flags);
			dump_kws(f, &c.keywords);
		}
		dump_set(f, &r->u.changes.expunged);
		break;
	}
	case MS_OP_STORE:
	case MS_OP_EXPUNGE:
		fprintf(f, " ms=%llu", (unsigned long long)r->u.store.modseq);
		dump_set(f, &r->u.store.uids);
		if (r->u.store.have_prev)
			fprintf(f, " mbox=%llu prev=%llu",
				(unsigned long long)r->u.store.mbox_id,
				(unsigned long long)r->u.store.prev_modseq);
		if (r->u.store.have_chg)
			fprintf(f, " chg=%llu..%llu",
				(unsigned long long)r->u.store.prev_changes,
				(unsigned long long)r->u.store.changes);
		break;
	case MS_OP_COPY:
	case MS_OP_MOVE:
	case MS_OP_UNDELETE: {
		struct ms_uid_pair p;
		fprintf(f, " uv=%u", r->u.copy.uidvalidity);
		ms_proto_iter_pairs(&it, &r->u.copy.pairs);
		while ((ret = ms_proto_next_pair(&it, &p)) == 1)
			fprintf(f, " %u>%u", p.src_uid, p.dst_uid);
		break;
	}
	case MS_OP_QUOTA_GET:
		fprintf(f, " %llu %llu %llu %llu",
			(unsigned long long)r->u.quota.max_bytes,
			(unsigned long long)r->u.quota.max_messages,
			(unsigned long long)r->u.quota.used_bytes,
			(unsigned long long)r->u.quota.used_messages);
		if (r->u.quota.have_mailboxes)
			fprintf(f, " mailboxes=%llu/%llu",
				(unsigned long long)r->u.quota.mailboxes,
				(unsigned long long)r->u.quota.max_mailboxes);
		break;
	case MS_OP_WAIT:
		fprintf(f, " hms=%llu", (unsigned long long)r->u.highestmodseq);
		break;
	case MS_OP_USER_WATCH: {
		struct ms_mbox_chg m;
		fprintf(f, " chg=%llu",
			(unsigned long long)r->u.watch.changes);
		if (!r->u.watch.have_mboxes)
			break;
		fprintf(f, " %s", r->u.watch.full ? "full" : "delta");
		ms_proto_iter_mbox_chgs(&it, &r->u.watch.mboxes);
		while (ms_proto_next_mbox_chg(&it, &m) > 0)
			fprintf(f, " %llu@%llu", (unsigned long long)m.mbox_id,
				(unsigned long long)m.changes);
		break;
	}
	case MS_OP_REPL_WAIT:
	case MS_OP_REPL_ACK:
	case MS_OP_PROMOTE:
		fprintf(f, " %llu:%llu seq=%llu tl=%llu",
			(unsigned long long)r->u.repl.seg,
			(unsigned long long)r->u.repl.off,
			(unsigned long long)r->u.repl.seq,
			(unsigned long long)r->u.repl.timeline);
		break;
	case MS_OP_FORK_INFO: {
		const struct ms_rep_fork_info *fi = &r->u.fork_info;
		fprintf(f, " fork=%llu at=%llu:%llu tl=%llu cur=%llu id=%02x "
			   "chain=%02x..%02x sum=%llx holes=%u",
			(unsigned long long)fi->fork_seq,
			(unsigned long long)fi->seg,
			(unsigned long long)fi->off,
			(unsigned long long)fi->timeline,
			(unsigned long long)fi->cur_timeline, fi->store_id[0],
			fi->chain[0], fi->chain[31],
			(unsigned long long)fi->tail_sum, fi->tail_holes);
		break;
	}
	default:
		break;
	}
	assert_int_equal(ret, 0);
}

/* The dump as a string (caller frees). */
static char *dump(const struct ms_req *req, const struct ms_reply *rep)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	assert_non_null(f);
	if (req != NULL)
		dump_req(f, req);
	else
		dump_reply(f, rep);
	fclose(f);
	return s;
}

/* ---- samples: a valid request and reply for every op ---- */

static const uint16_t all_ops[] = {
	MS_OP_HELLO,          MS_OP_STATUS,      MS_OP_USER_CREATE,
	MS_OP_USER_DELETE,    MS_OP_USER_LIST,   MS_OP_MBOX_LIST,
	MS_OP_MBOX_CREATE,    MS_OP_MBOX_RENAME, MS_OP_MBOX_DELETE,
	MS_OP_MBOX_SUBSCRIBE, MS_OP_MBOX_STATUS, MS_OP_APPEND,
	MS_OP_FETCH_META,     MS_OP_FETCH_BODY,  MS_OP_CHANGES,
	MS_OP_STORE,          MS_OP_EXPUNGE,     MS_OP_COPY,
	MS_OP_MOVE,           MS_OP_QUOTA_GET,   MS_OP_QUOTA_SET,
	MS_OP_WAIT,           MS_OP_UNDELETE,    MS_OP_COMPACT,
	MS_OP_REPL_WAIT,      MS_OP_REPL_ACK,    MS_OP_PROMOTE,
	MS_OP_FORK_INFO,      MS_OP_MBOX_UPDATE, MS_OP_APPEND_UID,
	MS_OP_LMTP_STATS,     MS_OP_USER_WATCH,  MS_OP_MBOX_SUBS,
};

#define P(lit) MS_PSTR(lit)

static const struct ms_pstr kw_two[] = {P("$Forwarded"), P("Work")};
static const struct ms_pstr kw_junk[] = {P("$Junk")};
static const struct ms_pstr sub_names[] = {P("Archiv/Entwürfe"), P("Gone"),
					   P("Work")};
static const struct ms_uid_range set_three[] = {
	{1, 5}, {7, 7}, {9, 4294967295u}};
static const struct ms_uid_range set_one[] = {{3, 4}};
static const char msg_body[] = "From: a@example.test\r\n\r\nhi\r\n";
static const struct ms_placement placements[] = {
	{P(""), P("INBOX"), MS_EVENT_FLAG_SEEN, 0, {2, kw_two, NULL, 0}, 0,
	 {0}},
	{P("carol"), P("Entwürfe"), 0, 1700000000, {0, NULL, NULL, 0}, 0,
	 {0}},
};
static const struct ms_placement placements_uid[] = {
	{P(""), P("INBOX"), MS_EVENT_FLAG_SEEN, 0, {2, kw_two, NULL, 0}, 7,
	 {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
	{P(""), P("Archive"), 0, 1700000000, {0, NULL, NULL, 0}, 0, {0}},
};
static const uint8_t guid_seq[MS_EVENT_GUID_SIZE] = {
	0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87,
	0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};

/* A valid request for op, list form. */
static struct ms_req sample_req(uint16_t op)
{
	struct ms_req r;

	memset(&r, 0, sizeof(r));
	r.op = op;
	switch (op) {
	case MS_OP_HELLO:
		r.u.hello =
			(struct ms_req_hello){MS_PROTO_VERSION, MS_ROLE_USER,
					      P("alice@example.test")};
		break;
	case MS_OP_USER_CREATE:
	case MS_OP_USER_DELETE:
		r.u.user.name = P("bob");
		break;
	case MS_OP_USER_LIST:
		r.u.list = (struct ms_req_list){
			.paged = 1, .after_id = 42, .max = 100 };
		break;
	case MS_OP_MBOX_LIST:
		r.u.list = (struct ms_req_list){
			.paged = 1, .after_name = P("Archiv/Entwürfe"),
			.max = 500 };
		break;
	case MS_OP_MBOX_CREATE:
		r.u.mbox.name = P("Entwürfe");
		r.u.mbox.special_use = MS_EVENT_SU_DRAFTS;
		break;
	case MS_OP_MBOX_RENAME:
		r.u.mbox.name = P("Archive/2023");
		r.u.mbox.new_name = P("Archiv/2023");
		break;
	case MS_OP_MBOX_DELETE:
		r.u.mbox.name = P("Old");
		r.u.mbox.delete_flags = MS_MBOX_DELETE_EMPTY;
		break;
	case MS_OP_MBOX_SUBSCRIBE:
		r.u.mbox.name = P("Lists/dev");
		r.u.mbox.subscribe = 1;
		break;
	case MS_OP_MBOX_STATUS:
		r.u.mbox.name = P("INBOX");
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
		r.u.append.body = (const uint8_t *)msg_body;
		r.u.append.body_len = sizeof(msg_body) - 1;
		r.u.append.placements.n = 2;
		r.u.append.placements.list =
			op == MS_OP_APPEND ? placements : placements_uid;
		break;
	case MS_OP_MBOX_UPDATE:
		r.u.mbox_update.name = P("Archive");
		r.u.mbox_update.uidvalidity = 1795870984;
		r.u.mbox_update.uidnext = 4711;
		r.u.mbox_update.highestmodseq = 99;
		memcpy(r.u.mbox_update.guid, guid_seq, sizeof(guid_seq));
		break;
	case MS_OP_FETCH_META:
	case MS_OP_EXPUNGE:
		r.u.uids.mailbox = P("INBOX");
		r.u.uids.uids = (struct ms_uid_set){3, set_three, NULL};
		break;
	case MS_OP_COPY:
	case MS_OP_MOVE:
		r.u.uids.mailbox = P("INBOX");
		r.u.uids.uids = (struct ms_uid_set){1, set_one, NULL};
		r.u.uids.dst = op == MS_OP_COPY ? P("Archive") : P("Trash");
		break;
	case MS_OP_STORE:
		r.u.store.mailbox = P("INBOX");
		r.u.store.uids = (struct ms_uid_set){1, set_one, NULL};
		r.u.store.mode = MS_EVENT_MODE_REMOVE;
		r.u.store.flags = MS_EVENT_FLAG_SEEN | MS_EVENT_FLAG_FLAGGED;
		r.u.store.keywords = (struct ms_keywords){1, kw_junk, NULL, 0};
		r.u.store.unchangedsince = 55;
		break;
	case MS_OP_FETCH_BODY:
		r.u.fetch_body =
			(struct ms_req_fetch_body){P("INBOX"), 7, 65536, 65536};
		break;
	case MS_OP_CHANGES:
		r.u.changes.mailbox = P("INBOX");
		r.u.changes.since_modseq = 100;
		break;
	case MS_OP_QUOTA_GET:
		break;
	case MS_OP_QUOTA_SET:
		r.u.quota = (struct ms_req_quota){P("dave"), (uint64_t)1 << 30,
						  100000};
		break;
	case MS_OP_WAIT:
		r.u.wait = (struct ms_req_wait){P("INBOX"), 1234, 30000};
		break;
	case MS_OP_UNDELETE:
		r.u.undelete = (struct ms_req_undelete){P("erin"), P("INBOX"),
							1700000000};
		break;
	case MS_OP_COMPACT:
		r.u.compact = (struct ms_req_compact){300, 1};
		break;
	case MS_OP_REPL_WAIT:
		r.u.repl_wait = (struct ms_req_repl_wait){3, 4096, 1000};
		break;
	case MS_OP_REPL_ACK:
		r.u.repl_ack = (struct ms_req_repl_ack){3, 4096, 77,
							MS_REPL_STREAMING};
		break;
	case MS_OP_FORK_INFO:
		r.u.fork_info.timeline = 1;
		break;
	case MS_OP_LMTP_STATS:
		r.u.lmtp_stats.instance = 0x1122334455667788ull;
		r.u.lmtp_stats.n = 3;
		r.u.lmtp_stats.codes[0] = (struct ms_lmtp_count){250, 1000};
		r.u.lmtp_stats.codes[1] = (struct ms_lmtp_count){451, 2};
		r.u.lmtp_stats.codes[2] = (struct ms_lmtp_count){550, 7};
		break;
	default:
		break;
	}
	return r;
}

static const struct ms_counter counters[] = {{P("connections"), 3},
					     {P("log.seq"), 123456789}};
static const struct ms_user_info users[] = {{1, P("alice")}, {2, P("bob")}};
static const struct ms_mbox_info mboxes[] = {
	{5, P("INBOX"), 1700000000, 11, 77, 10, 2, 123456, 0, 1},
	{6, P("Sent"), 1700000001, 3, 9, 2, 0, 2048, MS_EVENT_SU_SENT, 0},
};
static const struct ms_append_result results[] = {
	{0, {NULL, 0}, 5, 1700000000, 11, 78},
	{-EDQUOT, P("over quota: 100 of 100 messages"), 0, 0, 0, 0},
};
static const struct ms_pstr kw_work[] = {P("Work")};
static const struct ms_msg_meta metas[] = {
	{1,
	 10,
	 MS_EVENT_FLAG_SEEN,
	 {2, kw_two, NULL, 0},
	 1700000000,
	 1700000005,
	 {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
	 1000,
	 1020},
	{2, 11, 0, {0, NULL, NULL, 0}, -1, 0, {0}, 0, 0},
};
static const struct ms_msg_change changes[] = {
	{3, 88, MS_EVENT_FLAG_SEEN, {1, kw_work, NULL, 0}},
	{4, 89, 0, {0, NULL, NULL, 0}},
};
static const struct ms_uid_range set_expunged[] = {{5, 6}, {9, 9}};
static const struct ms_uid_pair pairs[] = {{2, 10}, {3, 11}};
static const struct ms_mbox_chg mbox_chgs[] = {{5, 90}, {7, 96}};
static const char chunk[] = "Subject: hello\r\n";

/* A valid success reply for op, list form. */
static struct ms_reply sample_reply(uint16_t op)
{
	struct ms_reply r;

	memset(&r, 0, sizeof(r));
	r.op = op;
	switch (op) {
	case MS_OP_HELLO:
		r.u.hello = (struct ms_rep_hello){2, 42, P("mstored 0.1.0"),
						  MS_HELLO_STANDBY, 0, 0};
		break;
	case MS_OP_STATUS:
	case MS_OP_COMPACT:
		r.u.counters = (struct ms_counters){2, counters, NULL, 0};
		break;
	case MS_OP_USER_CREATE:
	case MS_OP_USER_DELETE:
		r.u.user_id = 43;
		break;
	case MS_OP_USER_LIST:
		r.u.users = (struct ms_user_infos){2, users, NULL, 0};
		break;
	case MS_OP_MBOX_LIST:
		r.u.mboxes = (struct ms_mbox_infos){2, mboxes, NULL, 0};
		break;
	case MS_OP_MBOX_SUBS:
		r.u.subs = (struct ms_names){MS_ARRAY_SIZE(sub_names), sub_names,
					     NULL, 0};
		break;
	case MS_OP_MBOX_CREATE:
	case MS_OP_MBOX_STATUS:
		r.u.mbox = mboxes[1];
		break;
	case MS_OP_APPEND:
	case MS_OP_APPEND_UID:
		r.u.append = (struct ms_append_results){2, results, NULL, 0};
		break;
	case MS_OP_MBOX_UPDATE:
		r.u.mbox_update.mbox = mboxes[0];
		memcpy(r.u.mbox_update.guid, guid_seq, sizeof(guid_seq));
		break;
	case MS_OP_FETCH_META:
		r.u.metas = (struct ms_msg_metas){2, metas, NULL, 0};
		break;
	case MS_OP_FETCH_BODY:
		r.u.fetch_body = (struct ms_rep_fetch_body){
			100000, (const uint8_t *)chunk, sizeof(chunk) - 1};
		break;
	case MS_OP_CHANGES:
		r.u.changes.highestmodseq = 90;
		r.u.changes.uidvalidity = 1700000000;
		r.u.changes.changes =
			(struct ms_msg_changes){2, changes, NULL, 0};
		r.u.changes.expunged =
			(struct ms_uid_set){2, set_expunged, NULL};
		break;
	case MS_OP_STORE:
		r.u.store.modseq = 91;
		r.u.store.uids = (struct ms_uid_set){1, set_one, NULL};
		break;
	case MS_OP_EXPUNGE:
		r.u.expunge.modseq = 92; /* and nothing expunged */
		/* the fields of version 3 */
		r.u.expunge.have_prev = 1;
		r.u.expunge.mbox_id = 7;
		r.u.expunge.prev_modseq = 91;
		/* and of version 7 */
		r.u.expunge.have_chg = 1;
		r.u.expunge.prev_changes = 40;
		r.u.expunge.changes = 41;
		break;
	case MS_OP_COPY:
	case MS_OP_MOVE:
	case MS_OP_UNDELETE:
		r.u.copy.uidvalidity = 99;
		r.u.copy.pairs = (struct ms_uid_pairs){2, pairs, NULL, 0};
		break;
	case MS_OP_QUOTA_GET:
		r.u.quota = (struct ms_rep_quota){
			.max_bytes = (uint64_t)1 << 30, .max_messages = 100000,
			.used_bytes = 123456, .used_messages = 789,
			.have_mailboxes = 1, .mailboxes = 12,
			.max_mailboxes = 10000 };
		break;
	case MS_OP_WAIT:
		r.u.highestmodseq = 95;
		break;
	case MS_OP_USER_WATCH:
		r.u.watch = (struct ms_rep_user_watch){
			.changes = 96, .have_mboxes = 1, .full = 1,
			.mboxes = {.n = MS_ARRAY_SIZE(mbox_chgs),
				   .list = mbox_chgs} };
		break;
	case MS_OP_REPL_WAIT:
	case MS_OP_REPL_ACK:
	case MS_OP_PROMOTE:
		r.u.repl = (struct ms_rep_repl){7, 65536, 1234, 2};
		break;
	case MS_OP_FORK_INFO: {
		struct ms_rep_fork_info *fi = &r.u.fork_info;
		fi->fork_seq = 1234;
		fi->seg = 7;
		fi->off = 65536;
		fi->timeline = 2;
		fi->cur_timeline = 3;
		memset(fi->store_id, 0xab, sizeof(fi->store_id));
		for (size_t k = 0; k < sizeof(fi->chain); k++)
			fi->chain[k] = (uint8_t)k;
		fi->tail_sum = 0x0123456789abcdefULL;
		fi->tail_holes = 1;
		break;
	}
	default:
		break;
	}
	return r;
}

/* The valid cases: every request, every reply, some error replies. */
struct sample {
	bool reply;
	struct ms_req req;
	struct ms_reply rep;
};

#define NOPS MS_ARRAY_SIZE(all_ops)
#define NERRS 4
#define NSAMPLES (2 * NOPS + NERRS)

static struct sample get_sample(size_t i)
{
	struct sample s;

	memset(&s, 0, sizeof(s));
	if (i < NOPS) {
		s.req = sample_req(all_ops[i]);
		return s;
	}
	s.reply = true;
	if (i < 2 * NOPS) {
		s.rep = sample_reply(all_ops[i - NOPS]);
		return s;
	}
	switch (i - 2 * NOPS) {
	case 0:
		s.rep = (struct ms_reply){.op = MS_OP_MBOX_CREATE,
					  .status = -EEXIST,
					  .reason = P("mailbox exists")};
		break;
	case 1:
		s.rep = (struct ms_reply){.op = MS_OP_FETCH_META,
					  .status = MS_ENOTFOUND,
					  .reason = P("no such mailbox")};
		break;
	case 2: /* an unknown op gets an error reply too */
		s.rep = (struct ms_reply){.op = 99,
					  .status = -EOPNOTSUPP,
					  .reason = P("unknown op 99")};
		break;
	default: /* empty reason */
		s.rep = (struct ms_reply){.op = MS_OP_APPEND,
					  .status = MS_ENOCOPY};
		break;
	}
	return s;
}

/* Encode sample i as one frame with id into out (appending). */
static void encode_sample(const struct sample *s, uint32_t id,
			  struct ms_buf *out, size_t i)
{
	const char *error = NULL;
	int ret = s->reply ? ms_reply_encode(out, id, &s->rep, &error)
			   : ms_req_encode(out, id, &s->req, &error);
	if (ret != 0)
		fail_msg("sample %zu: encode: %s: %s", i, ms_strerror(ret),
			 error ? error : "");
}

/* ---- names ---- */

static void test_op_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < NOPS; i++) {
		assert_true(ms_op_known(all_ops[i]));
		assert_true(ms_op_known(all_ops[i] | MS_OP_REPLY));
		assert_string_not_equal(ms_op_name(all_ops[i]), "unknown");
		assert_string_equal(ms_op_name(all_ops[i]),
				    ms_op_name(all_ops[i] | MS_OP_REPLY));
	}
	assert_string_equal(ms_op_name(MS_OP_MBOX_CREATE), "mbox-create");
	assert_string_equal(ms_op_name(MS_OP_WAIT), "wait");
	assert_string_equal(ms_op_name(MS_OP_USER_WATCH), "user-watch");
	static const uint16_t unknown[] = {0,  3,  9,      13,     27,
					   39, 45, 0x7fff, 0xffff, MS_OP_REPLY};
	for (size_t i = 0; i < MS_ARRAY_SIZE(unknown); i++) {
		assert_false(ms_op_known(unknown[i]));
		assert_string_equal(ms_op_name(unknown[i]), "unknown");
	}
}

/* ---- golden bytes ---- */

static void check_golden(const struct sample *s, uint16_t op, const char *spec,
			 size_t i)
{
	uint8_t want[4096];
	size_t n = build(spec, want, sizeof(want));
	struct ms_buf b;

	ms_buf_init(&b, 0);
	encode_sample(s, 0x01020304, &b, i);
	assert_int_equal(b.len, MS_PROTO_HDR_SIZE + n);
	assert_int_equal(ms_get32(b.data), 8 + n);
	assert_int_equal(ms_get16(b.data + 4), op);
	assert_int_equal(ms_get16(b.data + 6), 0);
	assert_int_equal(ms_get32(b.data + 8), 0x01020304);
	if (memcmp(b.data + MS_PROTO_HDR_SIZE, want, n) != 0)
		fail_msg("golden %zu: body differs", i);
	ms_buf_free(&b);
}

/* Hex of n bytes, for specs (a few rotating buffers). */
static const char *hex(const void *p, size_t n)
{
	static char bufs[4][512];
	static unsigned slot;
	char *h = bufs[slot++ % 4];

	assert_true(2 * n < sizeof(bufs[0]));
	for (size_t i = 0; i < n; i++)
		sprintf(h + 2 * i, "%02x", ((const uint8_t *)p)[i]);
	h[2 * n] = '\0';
	return h;
}

static void test_golden(void **state)
{
	static const char reason[] = "over quota: 100 of 100 messages";
	char spec[1024];
	struct sample s;

	(void)state;
	memset(&s, 0, sizeof(s));
	s.req = sample_req(MS_OP_HELLO);
	check_golden(&s, MS_OP_HELLO, "u16:10 u8:0 s:alice@example.test", 0);

	s.req = sample_req(MS_OP_APPEND);
	snprintf(spec, sizeof(spec),
		 "u32:28 x:%s u16:2 "
		 "s: s:INBOX u32:1 i64:0 u16:2 s:$Forwarded s:Work "
		 "s:carol sx:%s u32:0 i64:1700000000 u16:0",
		 hex(msg_body, 28), hex("Entwürfe", strlen("Entwürfe")));
	check_golden(&s, MS_OP_APPEND, spec, 1);

	s.req = sample_req(MS_OP_STORE);
	check_golden(&s, MS_OP_STORE,
		     "s:INBOX u32:1 u32:3 u32:4 u8:1 u32:5 u16:1 s:$Junk "
		     "u64:55",
		     2);

	memset(&s, 0, sizeof(s));
	s.reply = true;
	s.rep = sample_reply(MS_OP_MBOX_STATUS);
	check_golden(&s, MS_OP_MBOX_STATUS | MS_OP_REPLY,
		     "i32:0 u64:6 s:Sent u32:1700000001 u32:3 u64:9 u32:2 "
		     "u32:0 u64:2048 u32:32 u8:0",
		     3);

	s.rep = sample_reply(MS_OP_APPEND);
	snprintf(spec, sizeof(spec),
		 "i32:0 u16:2 i32:0 u64:5 u32:1700000000 u32:11 u64:78 "
		 "i32:%d sx:%s",
		 -EDQUOT, hex(reason, sizeof(reason) - 1));
	check_golden(&s, MS_OP_APPEND | MS_OP_REPLY, spec, 4);

	s.rep = (struct ms_reply){.op = MS_OP_MBOX_CREATE,
				  .status = -EEXIST,
				  .reason = P("exists")};
	snprintf(spec, sizeof(spec), "i32:%d s:exists", -EEXIST);
	check_golden(&s, MS_OP_MBOX_CREATE | MS_OP_REPLY, spec, 5);

	/* migration: APPEND_UID placements end with uid and guid */
	memset(&s, 0, sizeof(s));
	s.req = sample_req(MS_OP_APPEND_UID);
	snprintf(spec, sizeof(spec),
		 "u32:28 x:%s u16:2 "
		 "s: s:INBOX u32:1 i64:0 u16:2 s:$Forwarded s:Work "
		 "u32:7 x:0102030405060708090a0b0c0d0e0f10 "
		 "s: s:Archive u32:0 i64:1700000000 u16:0 u32:0 "
		 "x:00000000000000000000000000000000",
		 hex(msg_body, 28));
	check_golden(&s, MS_OP_APPEND_UID, spec, 6);
	/* HELLO's reply carries flags from version 2 on, not before */
	memset(&s, 0, sizeof(s));
	s.reply = true;
	s.rep = sample_reply(MS_OP_HELLO);
	snprintf(spec, sizeof(spec), "i32:0 u16:2 u64:42 sx:%s u32:1",
		 hex("mstored 0.1.0", 13));
	check_golden(&s, MS_OP_HELLO | MS_OP_REPLY, spec, 9);
	s.rep.u.hello.version = 1;
	s.rep.u.hello.flags = 0;
	snprintf(spec, sizeof(spec), "i32:0 u16:1 u64:42 sx:%s",
		 hex("mstored 0.1.0", 13));
	check_golden(&s, MS_OP_HELLO | MS_OP_REPLY, spec, 10);
	/* a version 1 reply has no room for flags: refused, not lost */
	{
		struct ms_buf b;
		const char *err = NULL;
		s.rep.u.hello.flags = MS_HELLO_STANDBY;
		ms_buf_init(&b, 0);
		assert_int_equal(ms_reply_encode(&b, 1, &s.rep, &err),
				 -EINVAL);
		ms_buf_free(&b);
	}
	/* from version 6 the change epoch and the user's change count;
	   before, no room for them either */
	s.rep.u.hello.version = 6;
	s.rep.u.hello.flags = 0;
	s.rep.u.hello.changes_epoch = 0x0102030405060708ull;
	s.rep.u.hello.changes = 9;
	snprintf(spec, sizeof(spec),
		 "i32:0 u16:6 u64:42 sx:%s u32:0 u64:72623859790382856 u64:9",
		 hex("mstored 0.1.0", 13));
	check_golden(&s, MS_OP_HELLO | MS_OP_REPLY, spec, 11);
	{
		struct ms_buf b;
		const char *err = NULL;
		s.rep.u.hello.version = 5;
		ms_buf_init(&b, 0);
		assert_int_equal(ms_reply_encode(&b, 1, &s.rep, &err),
				 -EINVAL);
		ms_buf_free(&b);
	}
	memset(&s, 0, sizeof(s));
	s.req = sample_req(MS_OP_MBOX_UPDATE);
	check_golden(&s, MS_OP_MBOX_UPDATE,
		     "s:Archive u32:1795870984 u32:4711 u64:99 "
		     "x:f0e1d2c3b4a5968778695a4b3c2d1e0f",
		     7);
	s.reply = true;
	s.rep = sample_reply(MS_OP_MBOX_UPDATE);
	check_golden(&s, MS_OP_MBOX_UPDATE | MS_OP_REPLY,
		     "i32:0 u64:5 s:INBOX u32:1700000000 u32:11 u64:77 "
		     "u32:10 u32:2 u64:123456 u32:0 u8:1 "
		     "x:f0e1d2c3b4a5968778695a4b3c2d1e0f",
		     8);
}

/* ---- round trip ---- */

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < NSAMPLES; i++) {
		struct sample s = get_sample(i);
		struct ms_proto_hdr h;
		struct ms_buf b, b2;
		struct ms_req req;
		struct ms_reply rep;
		const char *error = NULL;
		size_t need = 0;
		uint32_t id = (uint32_t)(1000 + i);
		uint16_t op =
			s.reply ? (uint16_t)(s.rep.op | MS_OP_REPLY) : s.req.op;
		char *want, *got;
		int ret;

		ms_buf_init(&b, 0);
		ms_buf_init(&b2, 0);
		encode_sample(&s, id, &b, i);
		ret = ms_proto_frame(b.data, b.len, 0, &h, &need, &error);
		CHECK_RET(ret, 0, "sample %zu: frame", i);
		assert_int_equal(h.op, op);
		assert_int_equal(h.id, id);
		assert_int_equal(h.flags, 0);
		assert_int_equal(h.len, b.len - 4);
		assert_ptr_equal(h.body, b.data + MS_PROTO_HDR_SIZE);
		assert_int_equal(h.body_len, b.len - MS_PROTO_HDR_SIZE);
		if (s.reply) {
			ret = ms_reply_decode(h.op, h.body, h.body_len, &rep,
					      &error);
			CHECK_RET(ret, 0, "sample %zu: decode: %s", i,
				  ret ? error : "");
			assert_int_equal(rep.op, s.rep.op);
			want = dump(NULL, &s.rep);
			got = dump(NULL, &rep);
			ret = ms_reply_encode(&b2, id, &rep, &error);
		} else {
			ret = ms_req_decode(h.op, h.body, h.body_len, &req,
					    &error);
			CHECK_RET(ret, 0, "sample %zu: decode: %s", i,
				  ret ? error : "");
			assert_int_equal(req.op, s.req.op);
			want = dump(&s.req, NULL);
			got = dump(&req, NULL);
			ret = ms_req_encode(&b2, id, &req, &error);
		}
		if (strcmp(want, got) != 0)
			fail_msg("sample %zu:\n want %s\n got  %s", i, want,
				 got);
		CHECK_RET(ret, 0, "sample %zu: re-encode: %s", i,
			  ret ? error : "");
		if (b2.len != b.len || memcmp(b.data, b2.data, b.len) != 0)
			fail_msg("sample %zu: re-encoded bytes differ", i);
		free(want);
		free(got);
		ms_buf_free(&b);
		ms_buf_free(&b2);
	}
}

/* ---- pipelining ---- */

static void test_pipelined(void **state)
{
	static const uint16_t ops[] = {MS_OP_HELLO, MS_OP_MBOX_LIST,
				       MS_OP_APPEND};
	struct ms_buf b;
	size_t off = 0, ends[3];

	(void)state;
	ms_buf_init(&b, 0);
	for (size_t i = 0; i < 3; i++) {
		struct ms_req r = sample_req(ops[i]);
		assert_int_equal(ms_req_encode(&b, (uint32_t)(7 + i), &r, NULL),
				 0);
		ends[i] = b.len;
	}
	for (size_t i = 0; i < 3; i++) {
		struct ms_proto_hdr h;
		struct ms_req r;
		size_t need = 0;
		const char *error = NULL;
		/* with a cut in the middle of the next frame, then whole */
		if (i < 2) {
			size_t cut = ends[i] + (ends[i + 1] - ends[i]) / 2;
			assert_int_equal(ms_proto_frame(b.data + ends[i],
							cut - ends[i], 0, &h,
							&need, &error),
					 MS_ETRUNC);
			assert_int_equal(need, ends[i + 1] - ends[i]);
		}
		CHECK_RET(ms_proto_frame(b.data + off, b.len - off, 0, &h,
					 &need, &error),
			  0, "frame %zu", i);
		assert_int_equal(h.op, ops[i]);
		assert_int_equal(h.id, 7 + i);
		assert_int_equal(off + MS_PROTO_HDR_SIZE + h.body_len, ends[i]);
		CHECK_RET(ms_req_decode(h.op, h.body, h.body_len, &r, &error),
			  0, "frame %zu body", i);
		assert_int_equal(r.op, ops[i]);
		off += MS_PROTO_HDR_SIZE + h.body_len;
	}
	assert_int_equal(off, b.len);
	ms_buf_free(&b);
}

/* ---- bad frames ---- */

static const struct bad_frame {
	const char *spec; /* the bytes there are */
	uint32_t max;
	int want;
	size_t need; /* for MS_ETRUNC */
} bad_frames[] = {
	/* 0 */ {"", 0, MS_ETRUNC, MS_PROTO_HDR_SIZE},
	/* 1 */ {"u8:20", 0, MS_ETRUNC, MS_PROTO_HDR_SIZE},
	/* 2 */ {"u16:20 u8:0", 0, MS_ETRUNC, MS_PROTO_HDR_SIZE},
	/* 3 */ {"u32:20", 0, MS_ETRUNC, 24},
	/* len < 8, as soon as the len is there */
	/* 4 */ {"u32:0", 0, MS_ECORRUPT, 0},
	/* 5 */ {"u32:7 u16:1 u16:0 u32:1", 0, MS_ECORRUPT, 0},
	/* 6 */ {"u32:4 u16:1 u16:0 u32:1", 0, MS_ECORRUPT, 0},
	/* over the max, default and given, and the limit */
	/* 7 */ {"u32:0x4000000", 0, MS_ETOOBIG, 0},
	/* 8 */ {"u32:0x3fffffd", 0, MS_ETOOBIG, 0},
	/* 9 */ {"u32:0x3fffffc", 0, MS_ETRUNC, 0x4000000},
	/* 10 */ {"u32:0xffffffff u16:1", 0xffffffff, MS_ETOOBIG, 0},
	/* 11 */ {"u32:0xffffffff", 0, MS_ETOOBIG, 0},
	/* 12 */ {"u32:0xffffffc", 0xffffffff, MS_ETRUNC, 0x10000000},
	/* 13 */ {"u32:0xffffffd", 0xffffffff, MS_ETOOBIG, 0},
	/* 14 */ {"u32:9 u16:1 u16:0 u32:1 u8:0", 12, MS_ETOOBIG, 0},
	/* 15 */ {"u32:8 u16:1 u16:0 u32:1", 12, 0, 0},
	/* 16 */ {"u32:8 u16:1 u16:0 u32:1", 11, MS_ETOOBIG, 0},
	/* 17 */ {"u32:8 u16:1 u16:0 u32:1", 1, MS_ETOOBIG, 0},
	/* flags, as soon as they are there */
	/* 18 */ {"u32:8 u16:1 u16:1 u32:1", 0, MS_ECORRUPT, 0},
	/* 19 */ {"u32:8 u16:1 u16:0x8000 u32:1", 0, MS_ECORRUPT, 0},
	/* 20 */ {"u32:100 u16:1 u16:2", 0, MS_ECORRUPT, 0},
	/* 21 */ {"u32:100 u16:1 u8:0", 0, MS_ETRUNC, 104},
	/* an unknown op is not a frame error */
	/* 22 */ {"u32:8 u16:0 u16:0 u32:1", 0, 0, 0},
	/* 23 */ {"u32:10 u16:0xffff u16:0 u32:0 u16:0", 0, 0, 0},
	/* a frame followed by more bytes is fine */
	/* 24 */ {"u32:8 u16:1 u16:0 u32:1 u32:8 u16:1", 0, 0, 0},
};

static void test_bad_frames(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_frames); i++) {
		const struct bad_frame *c = &bad_frames[i];
		uint8_t tmp[64];
		size_t n = build(c->spec, tmp, sizeof(tmp));
		uint8_t *buf = malloc(n > 0 ? n : 1);
		struct ms_proto_hdr h, h0;
		size_t need = 12345;
		const char *error = NULL;
		int ret;

		memcpy(buf, tmp, n);
		memset(&h, 0xa5, sizeof(h));
		h0 = h;
		ret = ms_proto_frame(buf, n, c->max, &h, &need, &error);
		CHECK_RET(ret, c->want, "bad frame %zu", i);
		if (ret == 0) {
			assert_int_equal(h.len + 4, ms_get32(buf) + 4);
			assert_ptr_equal(h.body, buf + 12);
		} else {
			assert_memory_equal(&h, &h0, sizeof(h));
			assert_non_null(error);
			assert_true(error[0] != '\0');
		}
		if (ret == MS_ETRUNC && need != c->need)
			fail_msg("bad frame %zu: need %zu, want %zu", i, need,
				 c->need);
		/* need_r and error_r may be NULL */
		assert_int_equal(ms_proto_frame(buf, n, c->max, &h, NULL, NULL),
				 ret);
		free(buf);
	}
}

/* ---- cuts and extra bytes ---- */

/* Decode body (len bytes, copied to a buffer of exactly that size). */
static int decode_copy(const struct sample *s, const uint8_t *body, size_t len,
		       const char **error_r)
{
	uint8_t *copy = malloc(len > 0 ? len : 1);
	struct ms_req req;
	struct ms_reply rep;
	int ret;

	memcpy(copy, body, len);
	/* exactly len bytes (1 when empty): ASan sees any read past them */
	ret = s->reply ? ms_reply_decode(s->rep.op, copy, len, &rep, error_r)
		       : ms_req_decode(s->req.op, copy, len, &req, error_r);
	free(copy);
	return ret;
}

static void test_cuts(void **state)
{
	(void)state;
	for (size_t i = 0; i < NSAMPLES; i++) {
		struct sample s = get_sample(i);
		struct ms_buf b;
		size_t body_len;

		ms_buf_init(&b, 0);
		encode_sample(&s, 1, &b, i);
		body_len = b.len - MS_PROTO_HDR_SIZE;
		/* the frame cut at every length */
		for (size_t cut = 0; cut < b.len; cut++) {
			uint8_t *p = malloc(cut > 0 ? cut : 1);
			struct ms_proto_hdr h;
			size_t need = 0;
			memcpy(p, b.data, cut);
			CHECK_RET(ms_proto_frame(p, cut, 0, &h, &need, NULL),
				  MS_ETRUNC, "sample %zu cut at %zu", i, cut);
			if (need != (cut < 4 ? MS_PROTO_HDR_SIZE : b.len))
				fail_msg("sample %zu cut at %zu: need %zu", i,
					 cut, need);
			free(p);
		}
		/* the body cut at every length */
		for (size_t cut = 0; cut < body_len; cut++) {
			const char *error = NULL;
			int ret = decode_copy(&s, b.data + MS_PROTO_HDR_SIZE,
					      cut, &error);
			/* a STORE or EXPUNGE reply without the fields of
			   version 3 is the version 2 form, without those of
			   version 7 the version 3 form */
			if (s.reply && s.rep.u.store.have_prev &&
			    (s.rep.op == MS_OP_STORE ||
			     s.rep.op == MS_OP_EXPUNGE) &&
			    (cut == body_len - 16 ||
			     (s.rep.u.store.have_chg &&
			      cut == body_len - 32))) {
				CHECK_RET(ret, 0, "sample %zu v2/v3 form", i);
				continue;
			}
			/* a QUOTA_GET reply without the fields of version
			   5 is the version 4 form */
			if (s.reply && s.rep.op == MS_OP_QUOTA_GET &&
			    cut == body_len - 16) {
				CHECK_RET(ret, 0, "sample %zu v4 form", i);
				continue;
			}
			/* a USER_WATCH reply without the fields of version
			   7 is the version 6 form */
			if (s.reply && s.rep.op == MS_OP_USER_WATCH &&
			    cut == 12) {
				CHECK_RET(ret, 0, "sample %zu v6 form", i);
				continue;
			}
			/* an MBOX_DELETE without its flags (version 9) is
			   the unconditional delete */
			if (!s.reply && s.req.op == MS_OP_MBOX_DELETE &&
			    cut == body_len - 1) {
				CHECK_RET(ret, 0, "sample %zu v8 form", i);
				continue;
			}
			/* a USER_LIST page with nothing left is the whole
			   list */
			if (!s.reply && (s.req.op == MS_OP_USER_LIST ||
					 s.req.op == MS_OP_MBOX_LIST) &&
			    cut == 0) {
				CHECK_RET(ret, 0, "sample %zu unpaged", i);
				continue;
			}
			if (ret != MS_ETRUNC && ret != MS_ECORRUPT)
				fail_msg("sample %zu body cut at %zu: %d (%s)",
					 i, cut, ret, ms_strerror(ret));
			assert_non_null(error);
		}
		/* one byte too many: after the last field, or for a STORE
		   reply in the version 2 form, the version 3 fields cut */
		assert_int_equal(ms_buf_append(&b, "", 1), 0);
		const char *error = NULL;
		int v2_store = s.reply &&
			       (s.rep.op == MS_OP_STORE ||
				s.rep.op == MS_OP_EXPUNGE) &&
			       !s.rep.u.store.have_chg;
		CHECK_RET(decode_copy(&s, b.data + MS_PROTO_HDR_SIZE,
				      body_len + 1, &error),
			  v2_store ? MS_ETRUNC : MS_ECORRUPT,
			  "sample %zu + 1 byte", i);
		assert_non_null(strstr(error, v2_store ? "mbox_id"
						       : "after the last field"));
		ms_buf_free(&b);
	}
}

/* ---- bad bodies ---- */

#define REQ false
#define REP true

static const struct bad_body {
	bool reply;
	uint16_t op;
	const char *spec;
	int want;
} bad_bodies[] = {
	/* the spec language makes valid bodies too */
	/* 0 */ {REQ, MS_OP_MBOX_DELETE, "s:INBOX", 0},
	/* 1 */ {REQ, MS_OP_STATUS, "", 0},
	/* names */
	/* 2 */ {REQ, MS_OP_MBOX_DELETE, "s:", MS_ECORRUPT},
	/* 3 */ {REQ, MS_OP_MBOX_DELETE, "sx:494e00", MS_ECORRUPT},
	/* 4 */ {REQ, MS_OP_MBOX_DELETE, "sx:494e0d", MS_ECORRUPT},
	/* 5 */ {REQ, MS_OP_MBOX_DELETE, "sx:494e0a", MS_ECORRUPT},
	/* 6 */ {REQ, MS_OP_MBOX_DELETE, "sx:c080", MS_ECORRUPT},
	/* 7 */ {REQ, MS_OP_MBOX_DELETE, "sx:eda080", MS_ECORRUPT},
	/* 8 */ {REQ, MS_OP_MBOX_DELETE, "sx:f5808080", MS_ECORRUPT},
	/* 9 */ {REQ, MS_OP_MBOX_DELETE, "sx:c3", MS_ECORRUPT},
	/* 10 */ {REQ, MS_OP_MBOX_DELETE, "sx:ff", MS_ECORRUPT},
	/* 11 */ {REQ, MS_OP_MBOX_DELETE, "sn:1024:a", 0},
	/* 12 */ {REQ, MS_OP_MBOX_DELETE, "sn:1025:a", MS_ECORRUPT},
	/* 13 */ {REQ, MS_OP_USER_CREATE, "sn:255:u", 0},
	/* 14 */ {REQ, MS_OP_USER_CREATE, "sn:256:u", MS_ECORRUPT},
	/* 15 */ {REQ, MS_OP_USER_CREATE, "s:", MS_ECORRUPT},
	/* 16 */
	{REQ, MS_OP_STORE,
	 "s:INBOX u32:1 u32:1 u32:1 u8:0 u32:0 u16:1 sn:256:k u64:0",
	 MS_ECORRUPT},
	/* 17 */
	{REQ, MS_OP_STORE,
	 "s:INBOX u32:1 u32:1 u32:1 u8:0 u32:0 u16:1 sn:255:k u64:0", 0},
	/* 18 */ {REQ, MS_OP_MBOX_DELETE, "u16:10 x:41", MS_ETRUNC},
	/* 19 */ {REQ, MS_OP_MBOX_RENAME, "s:A s:", MS_ECORRUPT},
	/* 20 */ {REQ, MS_OP_COPY, "s:A u32:1 u32:1 u32:1 sx:0a", MS_ECORRUPT},
	/* uid sets */
	/* 21 */ {REQ, MS_OP_EXPUNGE, "s:A u32:0", MS_ECORRUPT},
	/* 22 */ {REQ, MS_OP_EXPUNGE, "s:A u32:1 u32:0 u32:5", MS_ECORRUPT},
	/* 23 */ {REQ, MS_OP_EXPUNGE, "s:A u32:1 u32:6 u32:5", MS_ECORRUPT},
	/* 24 */
	{REQ, MS_OP_EXPUNGE, "s:A u32:2 u32:5 u32:6 u32:1 u32:2", MS_ECORRUPT},
	/* 25 */
	{REQ, MS_OP_EXPUNGE, "s:A u32:2 u32:1 u32:6 u32:6 u32:9", MS_ECORRUPT},
	/* 26 */ {REQ, MS_OP_EXPUNGE, "s:A u32:2 u32:1 u32:5 u32:6 u32:9", 0},
	/* 27 */
	{REQ, MS_OP_EXPUNGE, "s:A u32:3 u32:1 u32:5 u32:6 u32:9", MS_ETRUNC},
	/* 28 */
	{REQ, MS_OP_EXPUNGE, "s:A u32:0xffffffff u32:1 u32:1", MS_ETOOBIG},
	/* 29 */ {REQ, MS_OP_EXPUNGE, "s:A u32:100001", MS_ETOOBIG},
	/* 30 */ {REQ, MS_OP_EXPUNGE, "s:A u32:100000", MS_ETRUNC},
	/* 31 */ {REQ, MS_OP_FETCH_META, "s:A u32:1 u32:1 u32:0xffffffff", 0},
	/* 32 */ {REP, MS_OP_EXPUNGE, "i32:0 u64:1 u32:0", 0},
	/* 33 */
	{REP, MS_OP_STORE, "i32:0 u64:1 u32:1 u32:2 u32:1", MS_ECORRUPT},
	/* version 3: the mailbox and the modseq before */
	/* 33a */ {REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:4", 0},
	/* 33b */ {REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:5", 0},
	/* 33c */
	{REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:6", MS_ECORRUPT},
	/* 33d */
	{REP, MS_OP_EXPUNGE, "i32:0 u64:5 u32:0 u64:0 u64:4", MS_ECORRUPT},
	/* 33e */ {REP, MS_OP_EXPUNGE, "i32:0 u64:5 u32:0 u64:7", MS_ETRUNC},
	/* 33f */
	{REP, MS_OP_EXPUNGE, "i32:0 u64:5 u32:0 u64:7 u64:4 u8:0", MS_ETRUNC},
	/* version 7: the mailbox's change counts before and after */
	/* 33g */
	{REP, MS_OP_EXPUNGE, "i32:0 u64:5 u32:0 u64:7 u64:4 u64:3 u64:9", 0},
	/* 33h */
	{REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:4 u64:9 u64:3",
	 MS_ECORRUPT},
	/* 33i: 0, the server cannot tell */
	{REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:4 u64:9 u64:0", 0},
	/* 33j */
	{REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:4 u64:9 u64:9 u8:0",
	 MS_ECORRUPT},
	/* 33k */
	{REP, MS_OP_STORE, "i32:0 u64:5 u32:0 u64:7 u64:4 u64:9 u32:9",
	 MS_ETRUNC},
	/* APPEND */
	/* 34 */ {REQ, MS_OP_APPEND, "u32:1 x:41 u16:0", MS_ECORRUPT},
	/* 35 */ {REQ, MS_OP_APPEND, "u32:1 x:41 u16:1001", MS_ETOOBIG},
	/* 36 */ {REQ, MS_OP_APPEND, "u32:1 x:41 u16:1000", MS_ETRUNC},
	/* 37 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:0 u16:0", 0},
	/* 38 */
	{REQ, MS_OP_APPEND, "u32:0 u16:1 s: s:INBOX u32:0 i64:0 u16:0", 0},
	/* 39 */ {REQ, MS_OP_APPEND, "u32:100 x:41 u16:1", MS_ETRUNC},
	/* 40 */ {REQ, MS_OP_APPEND, "u32:0xffffffff x:41", MS_ETRUNC},
	/* 41 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:-1 u16:0",
	 MS_ECORRUPT},
	/* 42 */
	{REQ, MS_OP_APPEND,
	 "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:253402300800 u16:0",
	 MS_ECORRUPT},
	/* 43 */
	{REQ, MS_OP_APPEND,
	 "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:253402300799 u16:0", 0},
	/* 44 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s:INBOX u32:0x20 i64:0 u16:0",
	 MS_ECORRUPT},
	/* 45 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:0 u16:1001",
	 MS_ETOOBIG},
	/* 46 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s:INBOX u32:0 i64:0 u16:2 s:a",
	 MS_ETRUNC},
	/* 47 */
	{REQ, MS_OP_APPEND,
	 "u32:1 x:41 u16:1 sn:256:u s:INBOX u32:0 i64:0 u16:0", MS_ECORRUPT},
	/* 48 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:1 s: s: u32:0 i64:0 u16:0",
	 MS_ECORRUPT},
	/* 49 */
	{REQ, MS_OP_APPEND, "u32:1 x:41 u16:2 s: s:INBOX u32:0 i64:0 u16:0",
	 MS_ETRUNC},
	/* HELLO */
	/* 50 */ {REQ, MS_OP_HELLO, "u16:0 u8:0 s:a", MS_ECORRUPT},
	/* 51 */ {REQ, MS_OP_HELLO, "u16:1 u8:2 s:a", MS_ECORRUPT},
	/* 52 */ {REQ, MS_OP_HELLO, "u16:1 u8:0 s:", MS_ECORRUPT},
	/* 53 */ {REQ, MS_OP_HELLO, "u16:1 u8:1 s:a", MS_ECORRUPT},
	/* 54 */ {REQ, MS_OP_HELLO, "u16:1 u8:1 s:", 0},
	/* 55 */ {REQ, MS_OP_HELLO, "u16:65535 u8:0 s:a", 0},
	/* other fields */
	/* 56 */ {REQ, MS_OP_MBOX_CREATE, "s:A u32:0x80", MS_ECORRUPT},
	/* 57 */ {REQ, MS_OP_MBOX_CREATE, "s:A u32:0x7f", 0},
	/* 58 */ {REQ, MS_OP_MBOX_SUBSCRIBE, "s:A u8:2", MS_ECORRUPT},
	/* 59 */ {REQ, MS_OP_MBOX_SUBSCRIBE, "s:A u8:0", 0},
	/* 60 */
	{REQ, MS_OP_STORE, "s:A u32:1 u32:1 u32:1 u8:3 u32:0 u16:0 u64:0",
	 MS_ECORRUPT},
	/* 61 */
	{REQ, MS_OP_STORE, "s:A u32:1 u32:1 u32:1 u8:2 u32:0x21 u16:0 u64:0",
	 MS_ECORRUPT},
	/* 62 */ {REQ, MS_OP_FETCH_BODY, "s:A u32:0 u64:0 u32:1", MS_ECORRUPT},
	/* 63 */
	{REQ, MS_OP_FETCH_BODY, "s:A u32:1 u64:0x8000000000000000 u32:1",
	 MS_ECORRUPT},
	/* 64 */ {REQ, MS_OP_FETCH_BODY, "s:A u32:1 u64:0 u32:0", 0},
	/* 65 */
	{REQ, MS_OP_FETCH_BODY,
	 "s:A u32:1 u64:0x7fffffffffffffff u32:0xffffffff", 0},
	/* 66 */ {REQ, MS_OP_WAIT, "s:A u64:0 u32:3600001", MS_ECORRUPT},
	/* 67 */ {REQ, MS_OP_WAIT, "s:A u64:0 u32:3600000", 0},
	/* 68 */ {REQ, MS_OP_QUOTA_GET, "s:", 0},
	/* 69 */ {REQ, MS_OP_QUOTA_GET, "s:a u64:0", MS_ECORRUPT},
	/* 70 */ {REQ, MS_OP_QUOTA_SET, "s:a u64:1", MS_ETRUNC},
	/* 71 */ {REQ, MS_OP_STATUS, "u8:0", MS_ECORRUPT},
	/* 71a */ {REQ, MS_OP_UNDELETE, "s: s:INBOX u64:0", 0},
	/* 71b */ {REQ, MS_OP_UNDELETE, "s:bob s: u64:0", MS_ECORRUPT},
	/* 71c */
	{REQ, MS_OP_UNDELETE, "s: s:INBOX u64:253402300800", MS_ECORRUPT},
	/* 71d */
	{REQ, MS_OP_UNDELETE, "s: s:INBOX u64:0x8000000000000000", MS_ECORRUPT},
	/* 71e */ {REQ, MS_OP_UNDELETE, "s: s:INBOX", MS_ETRUNC},
	/* 71f */ {REQ, MS_OP_COMPACT, "u32:1000 u8:0", 0},
	/* 71g */ {REQ, MS_OP_COMPACT, "u32:1001 u8:0", MS_ECORRUPT},
	/* 71h */ {REQ, MS_OP_COMPACT, "u32:0 u8:2", MS_ECORRUPT},
	/* 71i */ {REQ, MS_OP_COMPACT, "u32:0", MS_ETRUNC},
	/* 71j */ {REQ, MS_OP_COMPACT, "u32:0 u8:0 u8:0", MS_ECORRUPT},
	/* replication */
	/* 71k */ {REQ, MS_OP_REPL_WAIT, "u64:1 u64:64 u32:3600000", 0},
	/* 71l */
	{REQ, MS_OP_REPL_WAIT, "u64:1 u64:64 u32:3600001", MS_ECORRUPT},
	/* 71m */ {REQ, MS_OP_REPL_WAIT, "u64:1 u64:64", MS_ETRUNC},
	/* 71n */ {REQ, MS_OP_REPL_ACK, "u64:1 u64:64 u64:9 u8:2", 0},
	/* 71o */ {REQ, MS_OP_REPL_ACK, "u64:1 u64:64 u64:9 u8:3", MS_ECORRUPT},
	/* 71p */
	{REQ, MS_OP_REPL_ACK, "u64:1 u64:64 u64:9 u8:0 u8:0", MS_ECORRUPT},
	/* 71q */ {REP, MS_OP_REPL_WAIT, "i32:0 u64:1 u64:64 u64:0 u64:1", 0},
	/* 71r */ {REP, MS_OP_REPL_ACK, "i32:0 u64:1 u64:64 u64:0", MS_ETRUNC},
	/* 71s */ {REQ, MS_OP_PROMOTE, "", 0},
	/* 71t */ {REQ, MS_OP_PROMOTE, "u8:0", MS_ECORRUPT},
	/* 71u */ {REP, MS_OP_PROMOTE, "i32:0 u64:3 u64:64 u64:10 u64:2", 0},
	/* 71v */ {REP, MS_OP_PROMOTE, "i32:0 u64:3 u64:64 u64:10", MS_ETRUNC},
	/* 71w */ {REP, MS_OP_PROMOTE, "i32:-30 s:standby", 0},
	/* 71x */ {REQ, MS_OP_FORK_INFO, "u64:1", 0},
	/* 71y */ {REQ, MS_OP_FORK_INFO, "u64:0", MS_ECORRUPT},
	/* 71z */ {REQ, MS_OP_FORK_INFO, "u32:1", MS_ETRUNC},
	/* 71aa */ {REQ, MS_OP_FORK_INFO, "u64:1 u8:0", MS_ECORRUPT},
	/* 71ab */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:2 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0", 0},
	/* 71ac: the fork inside a segment header */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:63 u64:2 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0",
	 MS_ECORRUPT},
	/* 71ad: segment 0 */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:0 u64:64 u64:2 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0",
	 MS_ECORRUPT},
	/* 71ae: timeline 0 */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:0 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0",
	 MS_ECORRUPT},
	/* 71af: now below the fork's timeline */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:3 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0",
	 MS_ECORRUPT},
	/* 71ag: tail_holes not a bool */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:2 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:2",
	 MS_ECORRUPT},
	/* 71ah: the chain cut short */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:2 u64:2 x:00000000000000000000000000000000 x:1111", MS_ETRUNC},
	/* 71ai: bytes left over */
	{REP, MS_OP_FORK_INFO,
	 "i32:0 u64:9 u64:2 u64:64 u64:2 u64:2 x:00000000000000000000000000000000 x:1111111111111111111111111111111111111111111111111111111111111111 u64:5 u8:0 u8:0",
	 MS_ECORRUPT},
	/* 71aj */ {REP, MS_OP_FORK_INFO, "i32:-2 s:never-promoted", 0},
	/* LMTP_STATS: instance, codes 200..599 ascending, counts not 0 */
	/* 71x */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:0", 0},
	/* 71y */ {REQ, MS_OP_LMTP_STATS, "u64:0 u16:0", MS_ECORRUPT},
	/* 71z */
	{REQ, MS_OP_LMTP_STATS, "u64:9 u16:2 u16:250 u64:5 u16:451 u64:1", 0},
	/* 71za */
	{REQ, MS_OP_LMTP_STATS, "u64:9 u16:2 u16:451 u64:5 u16:250 u64:1",
	 MS_ECORRUPT},
	/* 71zb */
	{REQ, MS_OP_LMTP_STATS, "u64:9 u16:2 u16:250 u64:5 u16:250 u64:1",
	 MS_ECORRUPT},
	/* 71zc */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:1 u16:199 u64:5",
		    MS_ECORRUPT},
	/* 71zd */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:1 u16:600 u64:5",
		    MS_ECORRUPT},
	/* 71ze */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:1 u16:250 u64:0",
		    MS_ECORRUPT},
	/* 71zf */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:33", MS_ECORRUPT},
	/* 71zg */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:2 u16:250 u64:5",
		    MS_ETRUNC},
	/* 71zh */ {REQ, MS_OP_LMTP_STATS, "u64:9 u16:0 u8:0", MS_ECORRUPT},
	/* 71zi */ {REP, MS_OP_LMTP_STATS, "i32:0", 0},
	/* 71zj */ {REP, MS_OP_LMTP_STATS, "i32:0 u8:0", MS_ECORRUPT},
	/* 71zk */ {REP, MS_OP_LMTP_STATS, "i32:-13 s:admin", 0},
	/* USER_LIST: the whole list, or a page (version 4) */
	/* 71zl */ {REQ, MS_OP_USER_LIST, "", 0},
	/* 71zm */ {REQ, MS_OP_USER_LIST, "u64:0 u32:100", 0},
	/* 71zn */ {REQ, MS_OP_USER_LIST, "u64:7 u32:0", MS_ECORRUPT},
	/* 71zo */ {REQ, MS_OP_USER_LIST, "u64:7", MS_ETRUNC},
	/* 71zp */ {REQ, MS_OP_USER_LIST, "u64:7 u32:1 u8:0", MS_ECORRUPT},
	/* MBOX_LIST: the whole list, or a page after a name (version 5) */
	/* 71zq */ {REQ, MS_OP_MBOX_LIST, "", 0},
	/* 71zr */ {REQ, MS_OP_MBOX_LIST, "s: u32:100", 0},
	/* 71zs */ {REQ, MS_OP_MBOX_LIST, "s:Work u32:1", 0},
	/* 71zt */ {REQ, MS_OP_MBOX_LIST, "s:Work u32:0", MS_ECORRUPT},
	/* 71zu */ {REQ, MS_OP_MBOX_LIST, "s:Work", MS_ETRUNC},
	/* 71zv */ {REQ, MS_OP_MBOX_LIST, "s:Work u32:1 u8:0", MS_ECORRUPT},
	/* 71zw */ {REQ, MS_OP_MBOX_LIST, "sx:00 u32:1", MS_ECORRUPT},
	/* ops that are not requests */
	/* 72 */ {REQ, 0, "", -EOPNOTSUPP},
	/* 73 */ {REQ, 99, "s:A", -EOPNOTSUPP},
	/* 74 */ {REQ, MS_OP_STATUS | MS_OP_REPLY, "", -EOPNOTSUPP},
	/* replies */
	/* QUOTA_GET: version 5 adds the mailboxes and their limit */
	/* 74q */ {REP, MS_OP_QUOTA_GET, "i32:0 u64:1 u64:2 u64:3 u64:4", 0},
	/* 74r */ {REP, MS_OP_QUOTA_GET,
		   "i32:0 u64:1 u64:2 u64:3 u64:4 u64:5 u64:0", 0},
	/* 74s */ {REP, MS_OP_QUOTA_GET,
		   "i32:0 u64:1 u64:2 u64:3 u64:4 u64:5", MS_ETRUNC},
	/* 74t */ {REP, MS_OP_QUOTA_GET,
		   "i32:0 u64:1 u64:2 u64:3 u64:4 u64:5 u64:6 u8:0",
		   MS_ECORRUPT},
	/* 74u */ {REP, MS_OP_QUOTA_GET, "i32:0 u64:1 u64:2 u64:3",
		   MS_ETRUNC},
	/* 75 */ {REP, MS_OP_WAIT, "i32:1 u64:5", MS_ECORRUPT},
	/* 76 */ {REP, MS_OP_WAIT, "i32:-5 s:why", 0},
	/* 77 */ {REP, MS_OP_WAIT, "i32:-5 s:why u64:5", MS_ECORRUPT},
	/* 78 */ {REP, MS_OP_WAIT, "i32:-5 sx:0a", MS_ECORRUPT},
	/* 79 */ {REP, MS_OP_WAIT, "i32:-5 sn:1025:r", MS_ECORRUPT},
	/* 80 */ {REP, MS_OP_WAIT, "i32:-5 sn:1024:r", 0},
	/* 81 */ {REP, MS_OP_WAIT, "i32:-5", MS_ETRUNC},
	/* 82 */ {REP, 99, "i32:-95 s:unknown", 0},
	/* 83 */ {REP, 99, "i32:0", -EOPNOTSUPP},
	/* 84 */ {REP, 0, "", MS_ETRUNC},
	/* 85 */
	{REP, MS_OP_MBOX_STATUS,
	 "i32:0 u64:1 s:A u32:1 u32:1 u64:0 u32:1 u32:2 u64:0 u32:0 u8:0",
	 MS_ECORRUPT},
	/* 86 */
	{REP, MS_OP_MBOX_STATUS,
	 "i32:0 u64:1 s:A u32:0 u32:1 u64:0 u32:1 u32:1 u64:0 u32:0 u8:0",
	 MS_ECORRUPT},
	/* 87 */
	{REP, MS_OP_MBOX_STATUS,
	 "i32:0 u64:1 s:A u32:1 u32:1 u64:0 u32:1 u32:1 u64:0 u32:0 u8:2",
	 MS_ECORRUPT},
	/* 88 */
	{REP, MS_OP_MBOX_STATUS,
	 "i32:0 u64:1 s:A u32:1 u32:1 u64:0 u32:1 u32:1 u64:0 u32:0 u8:1", 0},
	/* 89 */
	{REP, MS_OP_FETCH_META,
	 "i32:0 u32:1 u32:1 u64:1 u32:0 u16:0 i64:0 i64:0 xn:16:g "
	 "u64:10 u64:9",
	 MS_ECORRUPT},
	/* 90 */
	{REP, MS_OP_FETCH_META,
	 "i32:0 u32:1 u32:1 u64:0 u32:0 u16:0 i64:0 i64:0 xn:16:g "
	 "u64:10 u64:10",
	 MS_ECORRUPT},
	/* 91 */ {REP, MS_OP_FETCH_META, "i32:0 u32:0xffffffff", MS_ETRUNC},
	/* 92 */
	{REP, MS_OP_FETCH_BODY, "i32:0 u64:2 u32:3 x:414243", MS_ECORRUPT},
	/* 93 */ {REP, MS_OP_FETCH_BODY, "i32:0 u64:-1 u32:0", MS_ECORRUPT},
	/* 94 */
	{REP, MS_OP_FETCH_BODY, "i32:0 u64:3 u32:4 x:414243", MS_ETRUNC},
	/* 95 */ {REP, MS_OP_APPEND, "i32:0 u16:1 i32:1 s:x", MS_ECORRUPT},
	/* 96 */
	{REP, MS_OP_APPEND, "i32:0 u16:1 i32:0 u64:1 u32:1 u32:0 u64:1",
	 MS_ECORRUPT},
	/* 97 */ {REP, MS_OP_APPEND, "i32:0 u16:1001", MS_ETOOBIG},
	/* 98 */ {REP, MS_OP_STATUS, "i32:0 u16:1025", MS_ETOOBIG},
	/* 99 */ {REP, MS_OP_STATUS, "i32:0 u16:1 s: u64:1", MS_ECORRUPT},
	/* 100 */
	{REP, MS_OP_COPY, "i32:0 u32:1 u32:1 u32:0 u32:5", MS_ECORRUPT},
	/* 101 */ {REP, MS_OP_COPY, "i32:0 u32:0 u32:0", MS_ECORRUPT},
	/* 102 */
	{REP, MS_OP_CHANGES,
	 "i32:0 u64:9 u32:1 u32:1 u32:1 u64:0 u32:0 u16:0 u32:0", MS_ECORRUPT},
	/* 103 */
	{REP, MS_OP_CHANGES,
	 "i32:0 u64:9 u32:1 u32:0 u32:2 u32:5 u32:6 u32:6 u32:9", MS_ECORRUPT},
	/* 104 */ {REP, MS_OP_CHANGES, "i32:0 u64:9 u32:1 u32:0 u32:0", 0},
	/* 105 */ {REP, MS_OP_HELLO, "i32:0 u16:0 u64:0 s:s", MS_ECORRUPT},
	/* 106 */ {REP, MS_OP_HELLO, "i32:0 u16:1 u64:0 s:", MS_ECORRUPT},
	/* 106a: version 2 carries flags; version 1 does not */
	{REP, MS_OP_HELLO, "i32:0 u16:2 u64:0 s:s", MS_ETRUNC},
	{REP, MS_OP_HELLO, "i32:0 u16:2 u64:0 s:s u32:3", 0},
	{REP, MS_OP_HELLO, "i32:0 u16:1 u64:0 s:s u32:0", MS_ECORRUPT},
	/* 107 */
	{REP, MS_OP_USER_LIST, "i32:0 u32:1 u64:1 sx:ff", MS_ECORRUPT},
	/* 108 */ {REP, MS_OP_MBOX_DELETE, "i32:0", 0},
	/* 109 */ {REP, MS_OP_MBOX_DELETE, "i32:0 u8:0", MS_ECORRUPT},
	/* 110 */ {REP, MS_OP_MBOX_LIST, "i32:0 u32:2", MS_ETRUNC},
	/* migration ops */
	/* 111 */
	{REQ, MS_OP_MBOX_UPDATE, "s:A u32:0 u32:0 u64:0 xn:16:x", 0},
	/* 112 */
	{REQ, MS_OP_MBOX_UPDATE, "s:A u32:0 u32:0 u64:0 xn:15:x", MS_ETRUNC},
	/* 113 */
	{REQ, MS_OP_MBOX_UPDATE, "s:A u32:0 u32:0 u64:0 xn:17:x",
	 MS_ECORRUPT},
	/* 114 */
	{REQ, MS_OP_APPEND_UID,
	 "u32:1 x:41 u16:1 s: s:A u32:0 i64:0 u16:0 u32:9 xn:16:g", 0},
	/* 115: APPEND's placement under APPEND_UID: no uid, no guid */
	{REQ, MS_OP_APPEND_UID, "u32:1 x:41 u16:1 s: s:A u32:0 i64:0 u16:0",
	 MS_ETRUNC},
	/* 116: APPEND_UID's placement under APPEND: bytes left over */
	{REQ, MS_OP_APPEND,
	 "u32:1 x:41 u16:1 s: s:A u32:0 i64:0 u16:0 u32:9 xn:16:g",
	 MS_ECORRUPT},
	/* 117 */
	{REQ, MS_OP_APPEND_UID,
	 "u32:1 x:41 u16:1 s: s:A u32:0x40 i64:0 u16:0 u32:9 xn:16:g",
	 MS_ECORRUPT},
	/* 118 */
	{REP, MS_OP_MBOX_UPDATE,
	 "i32:0 u64:5 s:A u32:1 u32:1 u64:0 u32:0 u32:0 u64:0 u32:0 u8:0",
	 MS_ETRUNC},
	/* 119 */
	{REP, MS_OP_MBOX_UPDATE,
	 "i32:0 u64:5 s:A u32:0 u32:1 u64:0 u32:0 u32:0 u64:0 u32:0 u8:0 "
	 "xn:16:g",
	 MS_ECORRUPT},
	/* 120 */
	{REP, MS_OP_APPEND_UID, "i32:0 u16:1 i32:0 u64:5 u32:1 u32:7 u64:3",
	 0},
	/* 121 */ {REQ, MS_OP_USER_WATCH, "", 0},
	/* 122 */ {REQ, MS_OP_USER_WATCH, "u8:0", MS_ECORRUPT},
	/* 123 */ {REP, MS_OP_USER_WATCH, "i32:0 u64:8", 0},
	/* 124 */ {REP, MS_OP_USER_WATCH, "i32:0 u32:8", MS_ETRUNC},
	/* 125 */ {REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:0", MS_ETRUNC},
	/* 126 */ {REP, MS_OP_USER_WATCH, "i32:-13 s:no", 0},
	/* version 7: the mailboxes' counts, all (1) or the changed (0) */
	/* 127 */ {REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:0 u32:0", 0},
	/* 128 */
	{REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:2 u64:5 u64:7 u64:6 u64:8",
	 0},
	/* 129 */ {REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:2 u32:0", MS_ECORRUPT},
	/* 130 */
	{REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:1 u64:0 u64:7", MS_ECORRUPT},
	/* 131 */
	{REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:1 u64:5 u64:0", MS_ECORRUPT},
	/* 132 */
	{REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:2 u64:5 u64:7", MS_ETRUNC},
	/* 133 */
	{REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:1 u64:5 u64:7 u8:0",
	 MS_ECORRUPT},
	/* 134 */ {REP, MS_OP_USER_WATCH, "i32:0 u64:8 u8:1 u32:1 u64:5", MS_ETRUNC},
	/* MBOX_SUBS (version 8): the subscribed names */
	/* 135 */ {REQ, MS_OP_MBOX_SUBS, "", 0},
	/* 136 */ {REQ, MS_OP_MBOX_SUBS, "u8:0", MS_ECORRUPT},
	/* 137 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:0", 0},
	/* 138 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:2 s:A s:B/C", 0},
	/* 139 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:2 s:A", MS_ETRUNC},
	/* 140 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:1 s: u8:0", MS_ECORRUPT},
	/* 140b */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:1 s:", MS_ETRUNC},
	/* 141 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:1 sx:410a", MS_ECORRUPT},
	/* 142 */ {REP, MS_OP_MBOX_SUBS, "i32:0 u32:1 s:A u8:0", MS_ECORRUPT},
	/* 143 */ {REP, MS_OP_MBOX_SUBS, "i32:0", MS_ETRUNC},
	/* 144 */ {REP, MS_OP_MBOX_SUBS, "i32:-13 s:no", 0},
	/* MBOX_DELETE's flags (version 9): only known bits, never 0 */
	/* 145 */ {REQ, MS_OP_MBOX_DELETE, "s:Old u8:1", 0},
	/* 146 */ {REQ, MS_OP_MBOX_DELETE, "s:Old u8:0", MS_ECORRUPT},
	/* 147 */ {REQ, MS_OP_MBOX_DELETE, "s:Old u8:2", MS_ECORRUPT},
	/* 148 */ {REQ, MS_OP_MBOX_DELETE, "s:Old u8:255", MS_ECORRUPT},
	/* 149 */ {REQ, MS_OP_MBOX_DELETE, "s:Old u8:1 u8:1", MS_ECORRUPT},
	/* 150 */ {REQ, MS_OP_MBOX_RENAME, "s:A s:B u8:1", MS_ECORRUPT},
};

static void test_bad_bodies(void **state)
{
	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(bad_bodies); i++) {
		const struct bad_body *c = &bad_bodies[i];
		static uint8_t tmp[8192];
		size_t n = build(c->spec, tmp, sizeof(tmp));
		uint8_t *buf = malloc(n > 0 ? n : 1);
		union {
			struct ms_req req;
			struct ms_reply rep;
		} out, out0;
		const char *error = NULL;
		int ret;

		memcpy(buf, tmp, n);
		memset(&out, 0xa5, sizeof(out));
		out0 = out;
		ret = c->reply
			      ? ms_reply_decode(c->op, buf, n, &out.rep, &error)
			      : ms_req_decode(c->op, buf, n, &out.req, &error);
		CHECK_RET(ret, c->want, "bad body %zu: %s", i,
			  ret ? error : "");
		if (ret != 0) {
			assert_memory_equal(&out, &out0, sizeof(out));
			assert_non_null(error);
			assert_true(error[0] != '\0');
		}
		free(buf);
	}
}

/* ---- limits, both ways ---- */

static struct ms_pstr kw_many[MS_PROTO_MAX_KEYWORDS + 1];
static char kw_chars[MS_PROTO_MAX_KEYWORDS + 1][8];
static struct ms_placement pl_many[MS_PROTO_MAX_PLACEMENTS + 1];
static struct ms_uid_range ranges_many[MS_PROTO_MAX_RANGES + 1];
static struct ms_counter counters_many[MS_PROTO_MAX_COUNTERS + 1];
static struct ms_append_result results_many[MS_PROTO_MAX_PLACEMENTS + 1];

/* Encode req or rep: want; and if it encodes, it decodes. */
static void limit_case(const struct ms_req *req, const struct ms_reply *rep,
		       int want, const char *what)
{
	struct ms_buf b;
	struct ms_proto_hdr h;
	const char *error = NULL;
	int ret;

	ms_buf_init(&b, 0);
	ret = req != NULL ? ms_req_encode(&b, 1, req, &error)
			  : ms_reply_encode(&b, 1, rep, &error);
	CHECK_RET(ret, want, "%s: %s", what, ret ? error : "");
	if (ret == 0) {
		struct ms_req r2;
		struct ms_reply p2;
		assert_int_equal(
			ms_proto_frame(b.data, b.len, 0, &h, NULL, NULL), 0);
		ret = req != NULL ? ms_req_decode(h.op, h.body, h.body_len, &r2,
						  &error)
				  : ms_reply_decode(h.op, h.body, h.body_len,
						    &p2, &error);
		CHECK_RET(ret, 0, "%s: decode", what);
	} else {
		assert_int_equal(b.len, 0);
	}
	ms_buf_free(&b);
}

static void test_limits(void **state)
{
	struct ms_req r;
	struct ms_reply p;

	(void)state;
	for (size_t i = 0; i < MS_ARRAY_SIZE(kw_many); i++) {
		snprintf(kw_chars[i], sizeof(kw_chars[i]), "k%04zu", i);
		kw_many[i] = ms_pstr_c(kw_chars[i]);
	}
	for (size_t i = 0; i < MS_ARRAY_SIZE(pl_many); i++)
		pl_many[i] = (struct ms_placement){
			P(""), P("INBOX"), 0, 0, {0, NULL, NULL, 0}, 0, {0}};
	for (size_t i = 0; i < MS_ARRAY_SIZE(ranges_many); i++)
		ranges_many[i] = (struct ms_uid_range){(uint32_t)(2 * i + 1),
						       (uint32_t)(2 * i + 1)};
	for (size_t i = 0; i < MS_ARRAY_SIZE(counters_many); i++)
		counters_many[i] = (struct ms_counter){P("c"), i};
	for (size_t i = 0; i < MS_ARRAY_SIZE(results_many); i++)
		results_many[i] = (struct ms_append_result){
			-EDQUOT, P("full"), 0, 0, 0, 0};

	r = sample_req(MS_OP_STORE);
	r.u.store.keywords.list = kw_many;
	r.u.store.keywords.n = MS_PROTO_MAX_KEYWORDS;
	limit_case(&r, NULL, 0, "keywords at the limit");
	r.u.store.keywords.n++;
	limit_case(&r, NULL, MS_ETOOBIG, "keywords over the limit");
	r.u.store.keywords.n = 70000; /* would not even fit the u16 */
	limit_case(&r, NULL, MS_ETOOBIG, "keywords past a u16");
	r.u.store.keywords.n = 2;
	kw_many[1] = kw_many[0];
	limit_case(&r, NULL, 0, "the same keyword twice");

	r = sample_req(MS_OP_EXPUNGE);
	r.u.uids.uids.list = ranges_many;
	r.u.uids.uids.n = MS_PROTO_MAX_RANGES;
	limit_case(&r, NULL, 0, "ranges at the limit");
	r.u.uids.uids.n++;
	limit_case(&r, NULL, MS_ETOOBIG, "ranges over the limit");

	r = sample_req(MS_OP_APPEND);
	r.u.append.placements.list = pl_many;
	r.u.append.placements.n = MS_PROTO_MAX_PLACEMENTS;
	limit_case(&r, NULL, 0, "placements at the limit");
	r.u.append.placements.n++;
	limit_case(&r, NULL, MS_ETOOBIG, "placements over the limit");
	r.u.append.placements.n = 0;
	r.u.append.placements.list = NULL;
	limit_case(&r, NULL, -EINVAL, "no placement");

	p = sample_reply(MS_OP_STATUS);
	p.u.counters.list = counters_many;
	p.u.counters.n = MS_PROTO_MAX_COUNTERS;
	limit_case(NULL, &p, 0, "counters at the limit");
	p.u.counters.n++;
	limit_case(NULL, &p, MS_ETOOBIG, "counters over the limit");

	p = sample_reply(MS_OP_APPEND);
	p.u.append.list = results_many;
	p.u.append.n = MS_PROTO_MAX_PLACEMENTS;
	limit_case(NULL, &p, 0, "results at the limit");
	p.u.append.n++;
	limit_case(NULL, &p, MS_ETOOBIG, "results over the limit");
}

/* ---- encoder ---- */

static void enc_req_case(const struct ms_req *r, int want, const char *what)
{
	struct ms_buf b;
	const char *error = NULL;
	int ret;

	ms_buf_init(&b, 0);
	assert_int_equal(ms_buf_append(&b, "xyz", 3), 0);
	ret = ms_req_encode(&b, 5, r, &error);
	CHECK_RET(ret, want, "%s", what);
	if (ret != 0) {
		assert_int_equal(b.len, 3); /* untouched */
		assert_non_null(error);
	}
	ms_buf_free(&b);
}

static void test_encoder(void **state)
{
	struct ms_req r;
	struct ms_reply p;
	struct ms_buf b;
	const char *error;

	(void)state;
	r = sample_req(MS_OP_MBOX_DELETE);
	r.u.mbox.name = P("bad\nname");
	enc_req_case(&r, -EINVAL, "LF in a name");
	r.u.mbox.name = (struct ms_pstr){"x", 70000};
	enc_req_case(&r, -EINVAL, "a str longer than a u16");
	r.u.mbox.name = (struct ms_pstr){NULL, 3};
	enc_req_case(&r, -EINVAL, "NULL name with a length");
	r = sample_req(MS_OP_MBOX_DELETE);
	r.u.mbox.new_name = P("x");
	enc_req_case(&r, -EINVAL, "new_name on delete");
	r = sample_req(MS_OP_MBOX_STATUS);
	r.u.mbox.special_use = 1;
	enc_req_case(&r, -EINVAL, "special_use on status");
	r = sample_req(MS_OP_MBOX_CREATE);
	r.u.mbox.subscribe = 1;
	enc_req_case(&r, -EINVAL, "subscribe on create");
	r = sample_req(MS_OP_FETCH_META);
	r.u.uids.dst = P("x");
	enc_req_case(&r, -EINVAL, "dst on fetch-meta");
	r = sample_req(MS_OP_QUOTA_GET);
	r.u.quota.max_bytes = 1;
	enc_req_case(&r, -EINVAL, "limits on quota-get");
	r = sample_req(MS_OP_STORE);
	r.u.store.keywords.packed = (const uint8_t *)"\x01\x00k";
	enc_req_case(&r, -EINVAL, "keywords in both forms");
	r.u.store.keywords.list = NULL;
	r.u.store.keywords.packed = NULL;
	enc_req_case(&r, -EINVAL, "keywords in no form");
	/* a packed list handed in is checked on its own */
	r.u.store.keywords.packed = (const uint8_t *)"\x01\x00k\x01\x00j";
	r.u.store.keywords.packed_len = 6;
	r.u.store.keywords.n = 2;
	enc_req_case(&r, 0, "packed keywords");
	r.u.store.keywords.n = 1;
	enc_req_case(&r, -EINVAL, "packed keywords: count too low");
	r.u.store.keywords.n = 3;
	enc_req_case(&r, -EINVAL, "packed keywords: count too high");
	r.u.store.keywords.packed = (const uint8_t *)"\x01\x00\n";
	r.u.store.keywords.packed_len = 3;
	r.u.store.keywords.n = 1;
	enc_req_case(&r, -EINVAL, "packed keywords: bad keyword");
	r = sample_req(MS_OP_STORE);
	r.u.store.uids.n = 0;
	r.u.store.uids.list = NULL;
	enc_req_case(&r, -EINVAL, "empty uid set in a request");
	r = sample_req(MS_OP_STORE);
	r.u.store.uids.list = (const struct ms_uid_range[]){{5, 5}, {5, 6}};
	r.u.store.uids.n = 2;
	enc_req_case(&r, -EINVAL, "overlapping uid set");
	r.u.store.uids.list = NULL;
	r.u.store.uids.packed = (const uint8_t *)"\x01\0\0\0\x02\0\0\0";
	r.u.store.uids.n = 1;
	enc_req_case(&r, 0, "packed uid set");
	r = sample_req(MS_OP_APPEND);
	r.u.append.body = NULL;
	enc_req_case(&r, -EINVAL, "NULL message body");
	r.u.append.body_len = 0;
	enc_req_case(&r, 0, "empty message body");
	/* an APPEND carries no uid or guid: they would be lost */
	r = sample_req(MS_OP_APPEND);
	r.u.append.placements.list = placements_uid;
	enc_req_case(&r, -EINVAL, "placement uid and guid on append");
	r.op = MS_OP_APPEND_UID;
	enc_req_case(&r, 0, "placement uid and guid on append-uid");
	r.u.append.placements.list = placements;
	enc_req_case(&r, 0, "append-uid without uid or guid");
	r = sample_req(MS_OP_MBOX_UPDATE);
	r.u.mbox_update.name = P("");
	enc_req_case(&r, -EINVAL, "mbox-update without a name");
	r = sample_req(MS_OP_HELLO);
	r.u.hello.role = MS_ROLE_ADMIN;
	enc_req_case(&r, -EINVAL, "admin role with a user");
	r.op = 99;
	enc_req_case(&r, -EOPNOTSUPP, "unknown op");
	r.op = MS_OP_HELLO | MS_OP_REPLY;
	enc_req_case(&r, -EOPNOTSUPP, "reply op in a request");

	/* replies */
	ms_buf_init(&b, 0);
	p = sample_reply(MS_OP_WAIT);
	p.status = 1;
	assert_int_equal(ms_reply_encode(&b, 1, &p, &error), -EINVAL);
	p.status = 0;
	p.reason = P("why");
	assert_int_equal(ms_reply_encode(&b, 1, &p, &error), -EINVAL);
	p.op = 99;
	p.reason = P("");
	assert_int_equal(ms_reply_encode(&b, 1, &p, &error), -EOPNOTSUPP);
	p = sample_reply(MS_OP_WAIT);
	p.status = -EIO;
	p.reason = P("bad\rreason");
	assert_int_equal(ms_reply_encode(&b, 1, &p, &error), -EINVAL);
	p = sample_reply(MS_OP_FETCH_BODY);
	p.u.fetch_body.total = 3;
	assert_int_equal(ms_reply_encode(&b, 1, &p, &error), -EINVAL);
	assert_int_equal(b.len, 0);

	/* the buffer's max: nothing appended */
	ms_buf_free(&b);
	ms_buf_init(&b, 40);
	assert_int_equal(ms_buf_append(&b, "abc", 3), 0);
	r = sample_req(MS_OP_APPEND);
	CHECK_RET(ms_req_encode(&b, 1, &r, &error), MS_ETOOBIG, "max 40");
	assert_int_equal(b.len, 3);
	r = sample_req(MS_OP_STATUS);
	assert_int_equal(ms_req_encode(&b, 1, &r, &error), 0);
	assert_int_equal(b.len, 3 + 12);
	ms_buf_free(&b);
}

static void test_begin_end(void **state)
{
	struct ms_buf b;
	struct ms_proto_hdr h;
	struct ms_reply p;
	size_t start = 99;

	(void)state;
	ms_buf_init(&b, 0);
	assert_int_equal(ms_buf_append(&b, "pre", 3), 0);
	assert_int_equal(
		ms_proto_begin(&b, MS_OP_WAIT | MS_OP_REPLY, 77, &start), 0);
	assert_int_equal(start, 3);
	assert_int_equal(ms_wr_u32(&b, 0), 0);
	assert_int_equal(ms_wr_u64(&b, 12), 0);
	assert_int_equal(ms_proto_end(&b, start), 0);
	assert_int_equal(
		ms_proto_frame(b.data + 3, b.len - 3, 0, &h, NULL, NULL), 0);
	assert_int_equal(h.len, 8 + 12);
	assert_int_equal(h.id, 77);
	assert_int_equal(ms_reply_decode(h.op, h.body, h.body_len, &p, NULL),
			 0);
	assert_int_equal(p.u.highestmodseq, 12);
	ms_buf_free(&b);

	/* over the limit: out->len goes back to start, data untouched */
	uint8_t small[16] = {0};
	struct ms_buf fake = {small, (size_t)MS_PROTO_MAX_FRAME_LIMIT + 1,
			      sizeof(small), MS_BUF_MAX_DEFAULT};
	assert_int_equal(ms_proto_end(&fake, 0), MS_ETOOBIG);
	assert_int_equal(fake.len, 0);
	fake.len = MS_PROTO_MAX_FRAME_LIMIT;
	assert_int_equal(ms_proto_end(&fake, 0), 0);
	assert_int_equal(ms_get32(small), MS_PROTO_MAX_FRAME_LIMIT - 4);

	/* begin against a full buffer */
	ms_buf_init(&b, 11);
	assert_int_equal(ms_proto_begin(&b, 1, 1, &start), MS_ETOOBIG);
	assert_int_equal(b.len, 0);
	ms_buf_free(&b);
}

static void test_error_reply(void **state)
{
	struct ms_buf b;
	struct ms_proto_hdr h;
	struct ms_reply p;
	char long_reason[3000];

	(void)state;
	ms_buf_init(&b, 0);
	assert_int_equal(
		ms_proto_error(&b, MS_OP_MBOX_CREATE, 9, -EEXIST, "exists"), 0);
	assert_int_equal(ms_proto_frame(b.data, b.len, 0, &h, NULL, NULL), 0);
	assert_int_equal(h.op, MS_OP_MBOX_CREATE | MS_OP_REPLY);
	assert_int_equal(h.id, 9);
	assert_int_equal(ms_reply_decode(h.op, h.body, h.body_len, &p, NULL),
			 0);
	assert_int_equal(p.status, -EEXIST);
	assert_int_equal(p.reason.len, 6);
	assert_memory_equal(p.reason.s, "exists", 6);

	/* bad bytes become '?', a long reason is cut at a character */
	static const struct {
		const char *in, *out;
	} clean[] = {
		{NULL, ""},
		{"", ""},
		{"a\r\nb", "a??b"},
		{"\xc3\xa4\xff\xc3", "\xc3\xa4??"},
		{"\xed\xa0\x80x", "???x"},
		{"f\xc3\xbcr", "f\xc3\xbcr"},
	};
	for (size_t i = 0; i < MS_ARRAY_SIZE(clean); i++) {
		ms_buf_reset(&b);
		assert_int_equal(
			ms_proto_error(&b, 0, 1, MS_ECORRUPT, clean[i].in), 0);
		assert_int_equal(
			ms_proto_frame(b.data, b.len, 0, &h, NULL, NULL), 0);
		assert_int_equal(
			ms_reply_decode(h.op, h.body, h.body_len, &p, NULL), 0);
		assert_int_equal(p.reason.len, strlen(clean[i].out));
		if (p.reason.len > 0)
			assert_memory_equal(p.reason.s, clean[i].out,
					    p.reason.len);
	}
	/* 1023 'a' then a 2-byte character: cut before it */
	memset(long_reason, 'a', sizeof(long_reason));
	memcpy(long_reason + 1023, "\xc3\xa4", 2);
	long_reason[sizeof(long_reason) - 1] = '\0';
	ms_buf_reset(&b);
	assert_int_equal(ms_proto_error(&b, MS_OP_APPEND, 1, -EIO, long_reason),
			 0);
	assert_int_equal(ms_proto_frame(b.data, b.len, 0, &h, NULL, NULL), 0);
	assert_int_equal(ms_reply_decode(h.op, h.body, h.body_len, &p, NULL),
			 0);
	assert_int_equal(p.reason.len, 1023);

	/* status must be negative */
	ms_buf_reset(&b);
	assert_int_equal(ms_proto_error(&b, 1, 1, 0, "x"), -EINVAL);
	assert_int_equal(ms_proto_error(&b, 1, 1, 5, "x"), -EINVAL);
	assert_int_equal(b.len, 0);
	ms_buf_free(&b);
}

/* ---- iterators ---- */

/* A FETCH_BODY reply's head, then its chunk, is the frame that
   ms_reply_encode() writes, and decodes to the same reply. */
/* The encoded length of a reply. */
static size_t reply_len(const struct ms_reply *rep)
{
	struct ms_buf b;
	const char *err = "";
	size_t len;

	ms_buf_init(&b, 0);
	assert_int_equal(ms_reply_encode(&b, 1, rep, &err), 0);
	len = b.len;
	ms_buf_free(&b);
	return len;
}

/* The item sizes mstored counts to keep a reply under its limit
   (ms_proto_*_size) are what the encoder writes for an item. */
/* The bytes the one item of r's list adds: r against r with an empty
   list (the same op, its fixed fields as in r). */
static size_t item_len(const struct ms_reply *r, const struct ms_reply *empty)
{
	return reply_len(r) - reply_len(empty);
}

static void test_item_sizes(void **state)
{
	(void)state;
	static const struct ms_pstr kw[] = {P("$Forwarded"), P("Work")};
	const size_t kw_len = 2 + 10 + 2 + 4; /* packed: 2 strs */
	const struct ms_keywords kws = {2, kw, NULL, 0};

	/* USER_LIST: a user */
	const struct ms_user_info u = {7, P("carol@example.test")};
	struct ms_reply e = { .op = MS_OP_USER_LIST }, r = e;
	r.u.users = (struct ms_user_infos){1, &u, NULL, 0};
	assert_int_equal(item_len(&r, &e), ms_proto_user_size(u.name.len));
	/* MBOX_LIST: a mailbox */
	const struct ms_mbox_info mb = { .mbox_id = 3,
					 .name = P("Archive/2026"),
					 .uidvalidity = 1700000000,
					 .uidnext = 9,
					 .highestmodseq = 4 };
	e = r = (struct ms_reply){ .op = MS_OP_MBOX_LIST };
	r.u.mboxes = (struct ms_mbox_infos){1, &mb, NULL, 0};
	assert_int_equal(item_len(&r, &e), ms_proto_mbox_size(mb.name.len));
	/* FETCH_META: a message with two keywords */
	const struct ms_msg_meta m = { .uid = 5, .modseq = 9,
				       .keywords = kws };
	e = r = (struct ms_reply){ .op = MS_OP_FETCH_META };
	r.u.metas = (struct ms_msg_metas){1, &m, NULL, 0};
	assert_int_equal(item_len(&r, &e), ms_proto_meta_size(kw_len));
	/* CHANGES: a change with the same keywords */
	const struct ms_msg_change ch = {5, 9, MS_EVENT_FLAG_SEEN, kws};
	e = (struct ms_reply){ .op = MS_OP_CHANGES };
	e.u.changes.highestmodseq = 9;
	e.u.changes.uidvalidity = 1700000000;
	r = e;
	r.u.changes.changes = (struct ms_msg_changes){1, &ch, NULL, 0};
	assert_int_equal(item_len(&r, &e), ms_proto_change_size(kw_len));
}

static void test_fetch_body_head(void **state)
{
	(void)state;
	static const uint32_t lens[] = { 0, 1, 4096, 65536 };
	static uint8_t bytes[65536];
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(i * 7 + 3);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		struct ms_reply rep = { .op = MS_OP_FETCH_BODY };
		struct ms_buf whole, split;
		const char *err = "";
		rep.u.fetch_body.total = (uint64_t)lens[k] + 100;
		rep.u.fetch_body.chunk = bytes;
		rep.u.fetch_body.chunk_len = lens[k];
		ms_buf_init(&whole, 0);
		ms_buf_init(&split, 0);
		assert_int_equal(ms_reply_encode(&whole, 77, &rep, &err), 0);
		assert_int_equal(ms_reply_fetch_body_head(&split, 77,
							  lens[k] + 100ull,
							  lens[k]), 0);
		assert_int_equal(split.len, MS_PROTO_HDR_SIZE + 16);
		assert_int_equal(ms_buf_append(&split, bytes, lens[k]), 0);
		assert_int_equal(split.len, whole.len);
		assert_memory_equal(split.data, whole.data, whole.len);
		struct ms_proto_hdr h;
		struct ms_reply back;
		assert_int_equal(ms_proto_frame(split.data, split.len, 0, &h,
						NULL, &err), 0);
		assert_int_equal(ms_reply_decode(h.op, h.body, h.body_len,
						 &back, &err), 0);
		assert_int_equal(back.u.fetch_body.chunk_len, lens[k]);
		ms_buf_free(&whole);
		ms_buf_free(&split);
	}
	/* a chunk longer than the total, a total past 2^63 - 1, a frame
	   past the limit: refused, nothing written */
	struct ms_buf b;
	ms_buf_init(&b, 0);
	assert_int_equal(ms_reply_fetch_body_head(&b, 1, 10, 11), -EINVAL);
	assert_int_equal(ms_reply_fetch_body_head(&b, 1, (uint64_t)1 << 63,
						  0), -EINVAL);
	assert_int_equal(ms_reply_fetch_body_head(&b, 1, UINT32_MAX,
						  MS_PROTO_MAX_FRAME_LIMIT),
			 MS_ETOOBIG);
	assert_int_equal(b.len, 0);
	ms_buf_free(&b);
}

static void test_iterators(void **state)
{
	struct ms_proto_iter it;
	struct ms_mbox_info m;
	struct ms_pstr kw;
	struct ms_counter c;
	struct ms_mbox_infos l = {2, mboxes, NULL, 0};
	uint32_t lo, hi;

	(void)state;
	ms_proto_iter_mboxes(&it, &l);
	assert_int_equal(ms_proto_next_keyword(&it, &kw), -EINVAL);
	assert_int_equal(ms_proto_next_mbox(&it, &m), 1);
	assert_int_equal(m.mbox_id, 5);
	assert_int_equal(ms_proto_next_mbox(&it, &m), 1);
	assert_int_equal(m.mbox_id, 6);
	assert_int_equal(ms_proto_next_mbox(&it, &m), 0);
	assert_int_equal(ms_proto_next_mbox(&it, &m), 0);

	/* malformed packed list handed in by hand */
	struct ms_counters bad = {2, NULL, (const uint8_t *)"\x01\0k", 3};
	ms_proto_iter_counters(&it, &bad);
	assert_int_equal(ms_proto_next_counter(&it, &c), -EINVAL);
	struct ms_counters both = {1, counters, (const uint8_t *)"", 0};
	ms_proto_iter_counters(&it, &both);
	assert_int_equal(ms_proto_next_counter(&it, &c), -EINVAL);
	struct ms_counters none = {0, NULL, NULL, 0};
	ms_proto_iter_counters(&it, &none);
	assert_int_equal(ms_proto_next_counter(&it, &c), 0);

	struct ms_uid_set s = {1, set_one, NULL};
	assert_int_equal(ms_uid_set_range(&s, 0, &lo, &hi), 0);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 4);
	assert_int_equal(ms_uid_set_range(&s, 1, &lo, &hi), -EINVAL);
	s.packed = (const uint8_t *)"";
	assert_int_equal(ms_uid_set_range(&s, 0, &lo, &hi), -EINVAL);
}

/* What ms_crlf_size counts, a byte at a time. */
static uint64_t crlf_size_ref(const uint8_t *p, size_t len)
{
	uint64_t v = len;
	for (size_t i = 0; i < len; i++)
		v += p[i] == '\n' && (i == 0 || p[i - 1] != '\r');
	return v;
}

/* ms_crlf_size: a table, then random bytes of few kinds (seeded: the
   same bytes every run) from every start within a word against the
   byte loop. */
static void test_crlf_size(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t want;
	} t[] = {
		{"", 0},         {"\n", 2},       {"\r\n", 2},
		{"\r", 1},       {"a\nb", 4},     {"a\r\nb\n", 6},
		{"\n\n", 4},     {"\r\r\n", 3},   {"\n\r", 3},
		{"x\r", 2},      {"\r\n\n\r\n", 6},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_int_equal(ms_crlf_size(t[i].s, strlen(t[i].s)),
				 t[i].want);
	/* a NUL is a byte like any other */
	assert_int_equal(ms_crlf_size("\0\n\0", 3), 4);

	static uint8_t buf[65536];
	static const uint8_t kinds[] = {'\r', '\n', 'a', '\0'};
	uint64_t x = 2463534242u;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = kinds[mst_randn(&x, 4)];
	for (size_t len = 0; len <= sizeof(buf) - 8; len = len * 2 + 1)
		for (size_t at = 0; at < 8; at++)
			assert_int_equal(ms_crlf_size(buf + at, len),
					 crlf_size_ref(buf + at, len));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_op_names),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_bad_frames),
		cmocka_unit_test(test_cuts),
		cmocka_unit_test(test_bad_bodies),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_encoder),
		cmocka_unit_test(test_begin_end),
		cmocka_unit_test(test_error_reply),
		cmocka_unit_test(test_iterators),
		cmocka_unit_test(test_fetch_body_head),
		cmocka_unit_test(test_item_sizes),
		cmocka_unit_test(test_crlf_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
