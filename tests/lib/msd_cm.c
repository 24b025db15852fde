/*
 * msd_cm.c - protocol helpers for cmocka tests that run a private mstored
 * (msd.h): a request that fails the test on a transport error, a
 * one-placement append, a mailbox's status, a STATUS counter, and the
 * canonical dump of an index.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idx.h"
#include "msd_cm.h"

int msd_req(struct ms_client *c, struct ms_req *q, struct ms_reply *rep)
{
	const char *err = "";
	int ret = ms_client_request(c, q, rep, &err);
	if (ret < 0 && ret != rep->status)
		fail_msg("%s request: transport: %s (%d)", ms_op_name(q->op),
			 err, ret);
	return ret;
}

struct ms_append_result msd_append1(struct ms_client *c, const char *mbox,
				    const void *body, size_t len,
				    uint32_t flags)
{
	struct ms_placement pl = {.mailbox = ms_pstr_c(mbox), .flags = flags};
	struct ms_req q = {.op = MS_OP_APPEND};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_append_result r = {.status = -1};
	q.u.append.body = body;
	q.u.append.body_len = (uint32_t)len;
	q.u.append.placements.n = 1;
	q.u.append.placements.list = &pl;
	if (msd_req(c, &q, &rep) == 0) {
		ms_proto_iter_results(&it, &rep.u.append);
		assert_int_equal(ms_proto_next_result(&it, &r), 1);
	}
	return r;
}

struct ms_mbox_info msd_mbox_status(struct ms_client *c, const char *mbox)
{
	struct ms_req q = {.op = MS_OP_MBOX_STATUS};
	struct ms_reply rep;
	q.u.mbox.name = ms_pstr_c(mbox);
	assert_int_equal(msd_req(c, &q, &rep), 0);
	return rep.u.mbox;
}

char *msd_index_dump(const char *dir)
{
	struct ms_idx *idx;
	const char *err;
	char *buf = NULL;
	size_t len = 0;
	if (ms_idx_open(dir, 0, &idx, &err) < 0)
		fail_msg("open index %s: %s", dir, err);
	FILE *f = open_memstream(&buf, &len);
	ms_idx_dump(idx, f);
	fclose(f);
	ms_idx_close(&idx);
	return buf;
}

uint64_t msd_counter(struct ms_client *c, const char *key)
{
	struct ms_req q = {.op = MS_OP_STATUS};
	struct ms_reply rep;
	struct ms_proto_iter it;
	struct ms_counter k;
	assert_int_equal(msd_req(c, &q, &rep), 0);
	ms_proto_iter_counters(&it, &rep.u.counters);
	while (ms_proto_next_counter(&it, &k) > 0)
		if (k.key.len == strlen(key) &&
		    memcmp(k.key.s, key, k.key.len) == 0)
			return k.value;
	fail_msg("no counter %s", key);
	return 0;
}
