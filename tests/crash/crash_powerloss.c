/*
 * crash_powerloss - seeded power-loss rounds against the log engine.
 *
 * Each round appends records of random size through the fault engine,
 * with small segments so rolls and seals happen, until the plan cuts the
 * power: at a random fdatasync, or in the middle of a random write (torn
 * write).  What a disk could have kept is then applied to the files
 * (unsynced sectors kept, zeroed or garbage, cut at a random length),
 * and the store is reopened with recovery.  The round fails if
 *   - an acknowledged record is missing or not byte-identical,
 *   - any visible record is not exactly one that was appended, in order
 *     (no partial or stale record is visible),
 *   - the two copies are not byte-identical after recovery,
 *   - appends after recovery do not work and survive a reopen.
 *
 * Rounds: 200 (MS_ROUNDS, or 5000 with MS_STRESS); seed MS_SEED.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "msg.h"
#include "mstest.h"

#define MAX_RECS 4000
#define MAX_LEN 6000

struct app {
	uint64_t seq;
	struct ms_pos pos;
	uint32_t len;
	int acked;
};

static struct app apps[MAX_RECS + 64];
static size_t napps;

static void on_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct app *a = ctx;
	(void)seq;
	(void)pos;
	if (status == 0)
		a->acked = 1;
}

static uint32_t rec_len(uint64_t key)
{
	uint64_t s = key;
	uint64_t r = mst_rand(&s);
	/* mostly small, some large, some empty */
	switch (r % 8) {
	case 0:
		return 0;
	case 1:
		return (uint32_t)(mst_rand(&s) % MAX_LEN);
	default:
		return (uint32_t)(mst_rand(&s) % 300);
	}
}

static int fail(unsigned long round, uint64_t seed, const char *what)
{
	printf("FAIL round %lu seed 0x%llx: %s\n", round,
	       (unsigned long long)seed, what);
	return 1;
}

static int check_store(const char *a, const char *b, unsigned long round,
		       uint64_t seed, uint64_t key, size_t *visible_r)
{
	struct ms_log_cfg cfg = { .dir = { a, b }, .seg_size = 0,
				  .engine = MS_IO_PSYNC };
	struct ms_log *log;
	const char *err;
	static uint8_t want[MAX_LEN];
	struct ms_buf payload;
	int bad = 0;

	if (ms_log_open(&cfg, &log, &err) < 0)
		return fail(round, seed, ms_errf("reopen: %s", err));
	ms_buf_init(&payload, 0);
	/* every acknowledged record, at its place, byte-identical */
	for (size_t i = 0; i < napps && !bad; i++) {
		struct ms_rec_hdr h;
		if (!apps[i].acked)
			continue;
		if (ms_log_read(log, apps[i].pos, &h, &payload, &err) < 0) {
			bad = fail(round, seed,
				   ms_errf("acked record seq %llu lost: %s",
					   (unsigned long long)apps[i].seq,
					   err));
			break;
		}
		mst_fill(want, apps[i].len, key + i);
		if (h.seq != apps[i].seq || h.len != apps[i].len ||
		    (h.len > 0 && memcmp(payload.data, want, h.len) != 0))
			bad = fail(round, seed,
				   ms_errf("acked record seq %llu differs",
					   (unsigned long long)apps[i].seq));
	}
	/* everything visible is exactly what was appended, in order */
	struct ms_log_iter *it;
	struct ms_pos pos;
	struct ms_rec_hdr h;
	const uint8_t *p;
	uint64_t expect = 1;
	size_t visible = 0;
	int r;
	ms_log_iter_new(log, (struct ms_pos){ 0, 0 }, &it);
	while (!bad && (r = ms_log_iter_next(it, &pos, &h, &p, &err)) == 1) {
		if (h.seq != expect)
			bad = fail(round, seed,
				   ms_errf("seq %llu after %llu",
					   (unsigned long long)h.seq,
					   (unsigned long long)expect - 1));
		expect++;
		if (h.type == MS_REC_SEAL)
			continue;
		size_t i;
		for (i = 0; i < napps && apps[i].seq != h.seq; i++)
			;
		if (i == napps) {
			bad = fail(round, seed,
				   ms_errf("record seq %llu was never appended",
					   (unsigned long long)h.seq));
			break;
		}
		mst_fill(want, apps[i].len, key + i);
		if (h.len != apps[i].len ||
		    (h.len > 0 && memcmp(p, want, h.len) != 0) ||
		    pos.seg != apps[i].pos.seg || pos.off != apps[i].pos.off)
			bad = fail(round, seed,
				   ms_errf("visible record seq %llu is not the "
					   "one appended",
					   (unsigned long long)h.seq));
		visible++;
	}
	if (!bad && r < 0)
		bad = fail(round, seed, ms_errf("iterate: %s", err));
	ms_log_iter_free(&it);
	*visible_r = visible;
	ms_buf_free(&payload);
	ms_log_close(&log);
	if (!bad && !mst_copies_equal(a, b, &err))
		bad = fail(round, seed, ms_errf("copies differ: %s", err));
	return bad;
}

static int run_round(unsigned long round, uint64_t seed)
{
	uint64_t rs = seed;
	char *root = mst_tmpdir("crash");
	char a[4200], b[4200];
	static uint8_t buf[MAX_LEN];
	struct ms_fault_plan plan = { .copy = -1 };
	struct ms_io *inner, *io;
	struct ms_log *log;
	const char *err;
	uint64_t key = mst_rand(&rs);

	snprintf(a, sizeof(a), "%s/a", root);
	snprintf(b, sizeof(b), "%s/b", root);
	if (mst_randn(&rs, 3) == 0) {
		plan.torn_write = 1 + mst_randn(&rs, 120);
		plan.torn_len = mst_randn(&rs, 8000);
	} else {
		plan.power_loss_sync = 1 + mst_randn(&rs, 120);
	}
	ms_io_psync_new(&inner);
	ms_io_fault_new(inner, &plan, &io);
	struct ms_log_cfg cfg = {
		.dir = { a, b },
		.seg_size = 4096 + mst_randn(&rs, 60000),
		.io = io,
		.create = 1,
	};
	if (ms_log_open(&cfg, &log, &err) < 0)
		return fail(round, seed, ms_errf("open: %s", err));
	napps = 0;
	while (napps < MAX_RECS && !ms_io_fault_powered_off(io)) {
		/* a burst of appends, then let the engine flush */
		unsigned burst = 1 + (unsigned)mst_randn(&rs, 12);
		for (unsigned k = 0; k < burst && napps < MAX_RECS; k++) {
			struct app *ap = &apps[napps];
			ap->acked = 0;
			uint64_t seq;
			ap->len = rec_len(key ^ (napps * 7919));
			mst_fill(buf, ap->len, key + napps);
			if (ms_log_append(log, MS_REC_NOOP, 0, buf, ap->len,
					  on_done, ap, &ap->pos, &seq) < 0)
				break;
			ap->seq = seq;
			napps++;
		}
		if (ms_log_run(log, 1) < 0)
			break;
	}
	if (!ms_io_fault_powered_off(io))
		ms_io_fault_power_off(io);
	ms_io_fault_apply_loss(io, mst_rand(&rs));
	/* the dead log fails what is queued; nothing more is acknowledged */
	ms_log_close(&log);

	size_t visible, acked = 0;
	for (size_t i = 0; i < napps; i++)
		acked += apps[i].acked;
	if (check_store(a, b, round, seed, key, &visible))
		return 1;
	if (visible < acked)
		return fail(round, seed, "fewer visible records than acked");
	/* what was never made durable is gone for good, and its seqs will
	   be given to new records: forget it */
	napps = visible;

	/* the recovered store takes appends, and they survive a reopen */
	struct ms_log_cfg cfg2 = { .dir = { a, b }, .seg_size = cfg.seg_size,
				   .engine = MS_IO_PSYNC };
	if (ms_log_open(&cfg2, &log, &err) < 0)
		return fail(round, seed, ms_errf("reopen 2: %s", err));
	for (int k = 0; k < 20 && napps < MAX_RECS + 60; k++) {
		struct app *ap = &apps[napps];
		ap->len = rec_len(key ^ (napps * 7919));
		ap->acked = 0;
		mst_fill(buf, ap->len, key + napps);
		if (ms_log_append(log, MS_REC_NOOP, 0, buf, ap->len, on_done,
				  ap, &ap->pos, &ap->seq) < 0)
			return fail(round, seed, "append after recovery");
		napps++;
	}
	if (ms_log_sync(log) < 0)
		return fail(round, seed, "sync after recovery");
	ms_log_close(&log);
	if (check_store(a, b, round, seed, key, &visible))
		return 1;
	mst_rmtree(root);
	return 0;
}

int main(void)
{
	unsigned long rounds = mst_rounds(200, 5000);
	uint64_t seed = mst_seed(0x6d73746f7265ULL);

	ms_msg_set_level((enum ms_msg_level)(MS_MSG_PANIC + 1)); /* quiet: warnings are expected */
	for (unsigned long r = 0; r < rounds; r++) {
		uint64_t s = seed + r * 0x100000001b3ULL;
		if (run_round(r, s))
			return 1;
	}
	printf("%lu power-loss rounds passed (seed 0x%llx)\n", rounds,
	       (unsigned long long)seed);
	return 0;
}
