/*
 * bench-log - what the log engine sustains, next to what the disk does.
 *
 * For record sizes 1, 4 and 64 KiB and 1, 8 and 64 concurrent appenders
 * (closed loop: each appender appends again as soon as its record is
 * durable on both copies), it runs the io_uring engine on a fresh store
 * for a few seconds and reports appends/s, MB/s, records per fdatasync
 * (the group-commit batch) and the mean flush time.  In the same run it
 * measures the disk with fio on the same file system: 4 KiB write +
 * fdatasync (the no-batching ceiling) and 1 MiB write + fdatasync (the
 * batching ceiling), and prints our figures as ratios of those.
 *
 * fio writes the way the log does: appending to a new file, never
 * wrapping around (--size larger than the run can fill, no fallocate).
 * It also prints, for reference, the same runs overwriting blocks that
 * were already written: much faster on ext4, since an fdatasync then
 * has no allocation or file size to journal.  Ratios are against the
 * appending figures, the disk's limit for an append-only log.
 *
 * Both copies live on the same disk here, so every record is written and
 * synced twice per batch; fio writes one file.
 *
 * Environment: MS_BENCH_DIR (default ./var/bench), MS_BENCH_SECONDS
 * (default 3 per case), MS_BENCH_ENGINE=psync to measure psync instead.
 * Exit 77 if fio is missing.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bproc.h"
#include "log.h"
#include "msg.h"
#include "mstest.h"

struct bench {
	struct ms_log *log;
	uint8_t *buf;
	uint32_t len;
	uint64_t done;
	int failed;
	int stop;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct bench *b = ctx;
	(void)seq;
	(void)pos;
	if (status != 0) {
		b->failed = 1;
		return;
	}
	b->done++;
	if (!b->stop &&
	    ms_log_append(b->log, MS_REC_NOOP, 0, b->buf, b->len, on_done, b,
			  NULL, NULL) < 0)
		b->failed = 1;
}

static int run_case(const char *dir, enum ms_io_kind kind, uint32_t len,
		    int appenders, double secs, double *aps_r, double *mbs_r,
		    double *batch_r, double *flush_us_r)
{
	char root[PATH_MAX + 64], a[PATH_MAX + 128], b[PATH_MAX + 128];
	snprintf(root, sizeof(root), "%s/log-%u-%d", dir, len, appenders);
	mst_rmtree(root);
	if (mkdir(root, 0755) < 0)
		return -errno;
	snprintf(a, sizeof(a), "%s/primary", root);
	snprintf(b, sizeof(b), "%s/secondary", root);
	struct ms_log_cfg cfg = { .dir = { a, b }, .engine = kind,
				  .create = 1 };
	struct bench bn = { 0 };
	const char *err;
	if (ms_log_open(&cfg, &bn.log, &err) < 0) {
		fprintf(stderr, "bench-log: %s\n", err);
		return -1;
	}
	bn.len = len;
	bn.buf = malloc(len);
	mst_fill(bn.buf, len, len);
	for (int i = 0; i < appenders; i++)
		ms_log_append(bn.log, MS_REC_NOOP, 0, bn.buf, len, on_done, &bn,
			      NULL, NULL);
	double t0 = now_s(), t1 = t0;
	uint64_t start_done = 0;
	/* warm up for a tenth of the time, then measure */
	int warm = 1;
	for (;;) {
		if (ms_log_run(bn.log, 1) < 0 || bn.failed)
			break;
		t1 = now_s();
		if (warm && t1 - t0 > secs / 10) {
			warm = 0;
			t0 = t1;
			start_done = bn.done;
		}
		if (!warm && t1 - t0 >= secs)
			break;
	}
	uint64_t n = bn.done - start_done;
	bn.stop = 1;
	ms_log_sync(bn.log);
	struct ms_log_status st;
	ms_log_get_status(bn.log, &st);
	*aps_r = (double)n / (t1 - t0);
	*mbs_r = *aps_r * len / 1e6;
	*batch_r = st.flushes ? (double)st.flushed_records / st.flushes : 0;
	*flush_us_r = st.flushes ? (double)st.flush_ns / st.flushes / 1e3 : 0;
	ms_log_close(&bn.log);
	free(bn.buf);
	mst_rmtree(root);
	return bn.failed ? -1 : 0;
}

int main(void)
{
	char dir[PATH_MAX];
	const char *secs_s = getenv("MS_BENCH_SECONDS");
	const char *eng = getenv("MS_BENCH_ENGINE");
	double secs = secs_s ? strtod(secs_s, NULL) : 3;
	enum ms_io_kind kind = eng && strcmp(eng, "psync") == 0 ? MS_IO_PSYNC
								: MS_IO_URING;
	static const uint32_t sizes[] = { 1024, 4096, 65536 };
	static const int apps[] = { 1, 8, 64 };

	if (system("command -v fio >/dev/null 2>&1") != 0)
		mst_skip("fio is not installed (apt-get install fio)");
	if (bp_bench_dir("bench-log", dir, sizeof(dir)) < 0)
		return 1;
	ms_msg_set_level(MS_MSG_WARN);

	double sync_iops = 0, sync_kbs = 0, seq_iops = 0, seq_kbs = 0;
	double ow_iops = 0, ow_kbs = 0, owseq_iops = 0, owseq_kbs = 0;
	if (mst_fio(dir, "4k", secs, 0, &sync_iops, &sync_kbs) < 0 ||
	    mst_fio(dir, "1M", secs, 0, &seq_iops, &seq_kbs) < 0 ||
	    mst_fio(dir, "4k", secs, 1, &ow_iops, &ow_kbs) < 0 ||
	    mst_fio(dir, "1M", secs, 1, &owseq_iops, &owseq_kbs) < 0) {
		fprintf(stderr, "bench-log: fio failed\n");
		return 1;
	}
	double seq_mbs = seq_kbs * 1024 / 1e6;
	printf("bench-log: dir=%s engine=%s, %.0f s per case, 2 copies on "
	       "the same disk\n",
	       dir, kind == MS_IO_URING ? "uring" : "psync", secs);
	printf("disk (fio, appending): 4 KiB write+fdatasync %.0f/s; 1 MiB "
	       "write+fdatasync %.0f MB/s\n",
	       sync_iops, seq_mbs);
	printf("disk (fio, overwriting, for reference): 4 KiB %.0f/s; 1 MiB "
	       "%.0f MB/s\n",
	       ow_iops, owseq_kbs * 1024 / 1e6);
	printf("%-7s %-5s %12s %9s %9s %10s %11s %11s\n", "record", "apps",
	       "appends/s", "MB/s", "rec/sync", "flush_us", "x fio 4k/s",
	       "%fio 1MiB");
	int fails = 0;
	for (size_t s = 0; s < MS_ARRAY_SIZE(sizes); s++) {
		for (size_t a = 0; a < MS_ARRAY_SIZE(apps); a++) {
			double aps = 0, mbs = 0, batch = 0, fus = 0;
			if (run_case(dir, kind, sizes[s], apps[a], secs, &aps,
				     &mbs, &batch, &fus) < 0) {
				printf("%-7u %-5d FAILED\n", sizes[s], apps[a]);
				fails++;
				continue;
			}
			printf("%-7s %-5d %12.0f %9.1f %9.1f %10.0f %11.2f "
			       "%10.0f%%\n",
			       sizes[s] == 1024	  ? "1KiB"
			       : sizes[s] == 4096 ? "4KiB"
						  : "64KiB",
			       apps[a], aps, mbs, batch, fus, aps / sync_iops,
			       100 * mbs / seq_mbs);
		}
	}
	return fails ? 1 : 0;
}
