/*
 * cmd_verify - `mstore verify DIR`: check every record of every copy, on
 * its own (not through the log's merged view, which would hide a bad copy
 * behind a good one), then compare the copies.
 *
 * Per copy: the meta file; each segment's header (magic, version,
 * checksum, store id, number); each record (header rules, XXH3, seq +1,
 * timeline never going back); each seal (counts, offset, XXH3 of the whole
 * segment); every segment but the newest must be sealed, and nothing may
 * follow a seal.  Across copies: the same segments, byte for byte.
 *
 * Each problem is one line: copy, segment, offset, record type, the check
 * that failed, and why.  With --json, one JSON object on stdout.
 * Exit: 0 clean, 1 problems, 2 could not run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "buf.h"
#include "log.h"
#include "msg.h"
#include "seg.h"
#include "tools.h"


struct problem {
	int copy;		/* 0, 1, or 2 for "both" */
	uint64_t seg, off;
	char type[24];
	char check[24];
	char detail[256];
};

struct copy_stats {
	uint64_t segments, records, bytes;
	uint64_t *segs;
	size_t nsegs;
	int meta_ok;
	struct ms_meta meta;
};

static struct problem *problems;
static size_t nproblems, capproblems;

static void problem(int copy, uint64_t seg, uint64_t off, const char *type,
		    const char *check, const char *detail)
{
	if (nproblems == capproblems) {
		capproblems = capproblems ? capproblems * 2 : 32;
		problems = ms_realloc(problems,
				      capproblems * sizeof(*problems));
	}
	struct problem *p = &problems[nproblems++];
	p->copy = copy;
	p->seg = seg;
	p->off = off;
	snprintf(p->type, sizeof(p->type), "%s", type);
	snprintf(p->check, sizeof(p->check), "%s", check);
	snprintf(p->detail, sizeof(p->detail), "%s", detail);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int list_segs(int logfd, uint64_t **segs_r, size_t *n_r)
{
	int dfd = dup(logfd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	uint64_t *segs = NULL;
	size_t n = 0;
	struct dirent *de;

	if (d == NULL) {
		if (dfd >= 0)
			close(dfd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		uint64_t seg;
		if (ms_seg_parse_name(de->d_name, &seg) < 0)
			continue;
		segs = ms_realloc(segs, (n + 1) * sizeof(*segs));
		segs[n++] = seg;
	}
	closedir(d);
	if (n > 1)
		qsort(segs, n, sizeof(*segs), cmp_u64);
	*segs_r = segs;
	*n_r = n;
	return 0;
}

/* Why a record at r->off failed: header rules, checksum or truncation. */
static void record_problem(int c, uint64_t seg, struct ms_seg_reader *r,
			   int ret, const char *err)
{
	const uint8_t *p;
	struct ms_rec_hdr h;
	const char *e2;
	const char *type = "unknown", *check = "read";

	if (ret == MS_ETRUNC) {
		check = "truncated";
	} else if (ret == MS_ECORRUPT) {
		check = "header";
		if (ms_seg_reader_peek(r, r->off, MS_REC_HDR_SIZE, &p) == 0 &&
		    ms_rec_check_hdr(p, &h, &e2) == 0) {
			check = "checksum";
			type = ms_rec_type_name(h.type);
		}
	}
	if (ret == MS_ETRUNC &&
	    ms_seg_reader_peek(r, r->off, MS_REC_HDR_SIZE, &p) == 0 &&
	    ms_rec_check_hdr(p, &h, &e2) == 0)
		type = ms_rec_type_name(h.type);
	problem(c, seg, r->off, type, check, err);
}

static void verify_segment(int c, int logfd, uint64_t seg, int newest,
			   const struct copy_stats *cs, uint64_t *expect_seq,
			   struct copy_stats *out)
{
	char name[MS_SEG_NAME_LEN + 1];
	struct ms_seg_reader r;
	struct ms_seg_hdr hdr;
	const uint8_t *p = NULL;
	const char *err = "";
	int ret;

	ms_seg_name(seg, name);
	int fd = openat(logfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		problem(c, seg, 0, "segment", "open", strerror(errno));
		return;
	}
	if ((ret = ms_seg_reader_init(&r, fd)) < 0) {
		problem(c, seg, 0, "segment", "read", ms_strerror(ret));
		close(fd);
		return;
	}
	out->segments++;
	out->bytes += r.size;
	if ((ret = ms_seg_reader_peek(&r, 0, MS_SEG_HDR_SIZE, &p)) < 0 ||
	    (ret = ms_seg_hdr_decode(p, MS_SEG_HDR_SIZE, &hdr, &err)) < 0) {
		problem(c, seg, 0, "segment-header",
			ret == MS_EMAGIC     ? "magic"
			: ret == MS_EVERSION ? "version"
			: ret == MS_ETRUNC   ? "truncated"
					     : "checksum",
			ret == MS_ETRUNC ? "file shorter than a segment header"
					 : err);
		goto out;
	}
	if (cs->meta_ok && memcmp(hdr.store_id, cs->meta.store_id,
				  MS_STORE_ID_SIZE) != 0)
		problem(c, seg, 0, "segment-header", "store-id",
			"segment belongs to another store");
	if (hdr.seg != seg)
		problem(c, seg, 0, "segment-header", "number",
			ms_errf("header says segment %llu",
				(unsigned long long)hdr.seg));
	if (*expect_seq != 0 && hdr.first_seq < *expect_seq)
		problem(c, seg, 0, "segment-header", "sequence",
			ms_errf("first seq %llu, but the previous segment "
				"ended at %llu",
				(unsigned long long)hdr.first_seq,
				(unsigned long long)*expect_seq - 1));

	XXH3_state_t *sum = XXH3_createState();
	if (sum == NULL)
		msg_fatal("oom");
	XXH3_64bits_reset(sum);
	XXH3_64bits_update(sum, p, MS_SEG_HDR_SIZE);
	uint64_t seq = hdr.first_seq, tl = hdr.timeline, count = 0;
	int sealed = 0;
	ms_seg_reader_seek(&r, MS_SEG_HDR_SIZE);
	for (;;) {
		struct ms_rec_hdr h;
		const uint8_t *rec;
		uint64_t off = r.off;
		ret = ms_seg_reader_next(&r, &h, &rec, &err);
		if (ret == 0)
			break;
		if (ret < 0) {
			record_problem(c, seg, &r, ret, err);
			break;
		}
		const char *tn = ms_rec_type_name(h.type);
		if (sealed) {
			problem(c, seg, off, tn, "after-seal",
				"record after the segment's seal");
			break;
		}
		if (h.seq != seq)
			problem(c, seg, off, tn, "sequence",
				ms_errf("seq %llu, expected %llu",
					(unsigned long long)h.seq,
					(unsigned long long)seq));
		if (h.timeline < tl)
			problem(c, seg, off, tn, "timeline",
				ms_errf("timeline %llu after %llu",
					(unsigned long long)h.timeline,
					(unsigned long long)tl));
		if (h.type == MS_REC_SEAL) {
			struct ms_seg_seal s;
			if (ms_seg_seal_decode(rec + MS_REC_HDR_SIZE, h.len, &s,
					       &err) < 0)
				problem(c, seg, off, tn, "seal", err);
			else if (s.seal_off != off || s.count != count ||
				 s.first_seq != hdr.first_seq ||
				 s.last_seq + 1 != h.seq)
				problem(c, seg, off, tn, "seal",
					"seal counts or offset disagree with "
					"the segment");
			else if (s.sum != XXH3_64bits_digest(sum))
				problem(c, seg, off, tn, "segment-checksum",
					"XXH3 of the segment does not match "
					"its seal");
			sealed = 1;
		} else {
			count++;
		}
		ms_seg_sum_rec(sum, &h, rec);
		seq = h.seq + 1;
		tl = h.timeline;
		out->records++;
	}
	XXH3_freeState(sum);
	*expect_seq = seq;
	if (!sealed && !newest)
		problem(c, seg, r.off, "segment", "unsealed",
			"segment has no seal but is not the newest");
out:
	ms_seg_reader_free(&r);
	close(fd);
}

static void verify_copy(int c, const char *dir, struct copy_stats *cs,
			int *could_not_run)
{
	const char *err;
	int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		problem(c, 0, 0, "copy", "open",
			ms_errf("%s: %s", dir, strerror(errno)));
		*could_not_run = c == 0;
		return;
	}
	if (ms_meta_read(rootfd, &cs->meta, &err) < 0)
		problem(c, 0, 0, "meta", "meta", err);
	else
		cs->meta_ok = 1;
	int logfd = openat(rootfd, "log", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (logfd < 0 || list_segs(logfd, &cs->segs, &cs->nsegs) < 0) {
		problem(c, 0, 0, "copy", "open",
			ms_errf("%s/log: %s", dir, strerror(errno)));
		if (logfd >= 0)
			close(logfd);
		close(rootfd);
		return;
	}
	uint64_t expect = 0;
	for (size_t i = 0; i < cs->nsegs; i++) {
		tool_progress(ms_errf("verify %s", ms_log_copy_name(c)), i,
			      cs->nsegs);
		verify_segment(c, logfd, cs->segs[i], i + 1 == cs->nsegs, cs,
			       &expect, cs);
	}
	tool_progress_end();
	close(logfd);
	close(rootfd);
}

/* 1 if the rest of f, from its buffer's byte at from on (n bytes in
   buf), is zeros only. */
static int rest_zeros(FILE *f, const uint8_t *buf, size_t from, size_t n)
{
	static uint8_t more[1 << 16];
	if (!ms_zeros(buf + from, n - from))
		return 0;
	while ((n = fread(more, 1, sizeof(more), f)) > 0)
		if (!ms_zeros(more, n))
			return 0;
	return !ferror(f);
}

/* First offset where two files differ, or -1 if equal.  With segs (two
   segment files), zero bytes at the end of the longer one do not count:
   a running writer's prepared space (log.c) holds no records; any other
   file must be the same to its last byte. */
static long long first_diff(const char *a, const char *b, int segs)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	static uint8_t ba[1 << 16], bb[1 << 16];
	long long off = 0, diff = -1;

	if (fa == NULL || fb == NULL) {
		diff = 0;
		goto out;
	}
	for (;;) {
		size_t na = fread(ba, 1, sizeof(ba), fa);
		size_t nb = fread(bb, 1, sizeof(bb), fb);
		size_t n = na < nb ? na : nb;
		for (size_t i = 0; i < n; i++)
			if (ba[i] != bb[i]) {
				diff = off + (long long)i;
				goto out;
			}
		if (na != nb) {
			if (!segs || !(na > nb ? rest_zeros(fa, ba, n, na)
					       : rest_zeros(fb, bb, n, nb)))
				diff = off + (long long)n;
			goto out;
		}
		if (na == 0)
			break;
		off += (long long)na;
	}
out:
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return diff;
}

static void compare_copies(const struct tool_store *ts,
			   const struct copy_stats *cs)
{
	if (cs[0].meta_ok && cs[1].meta_ok &&
	    memcmp(cs[0].meta.store_id, cs[1].meta.store_id,
		   MS_STORE_ID_SIZE) != 0)
		problem(2, 0, 0, "meta", "store-id",
			"the copies belong to different stores");
	size_t i = 0, j = 0;
	while (i < cs[0].nsegs || j < cs[1].nsegs) {
		uint64_t a = i < cs[0].nsegs ? cs[0].segs[i] : UINT64_MAX;
		uint64_t b = j < cs[1].nsegs ? cs[1].segs[j] : UINT64_MAX;
		if (a < b) {
			problem(1, a, 0, "segment", "missing",
				"segment only on the primary");
			i++;
			continue;
		}
		if (b < a) {
			problem(0, b, 0, "segment", "missing",
				"segment only on the secondary");
			j++;
			continue;
		}
		char pa[4200], pb[4200], name[MS_SEG_NAME_LEN + 1];
		ms_seg_name(a, name);
		snprintf(pa, sizeof(pa), "%s/log/%s", ts->copy[0], name);
		snprintf(pb, sizeof(pb), "%s/log/%s", ts->copy[1], name);
		long long d = first_diff(pa, pb, 1);
		if (d >= 0)
			problem(2, a, (uint64_t)d, "segment", "copies-differ",
				"the copies differ from this byte on");
		i++;
		j++;
	}
}

/*
 * --against: the other store (a DR site's) must hold the very same bytes:
 * the same identity (mstore.meta), the same segments, each byte for byte
 * (its primary copy against ours; its own copies are compared by its own
 * verify).  A difference is reported at its segment:offset.
 */
static void compare_against(const struct tool_store *ts, const char *other)
{
	struct tool_store to;
	char pa[4200], pb[4200], name[MS_SEG_NAME_LEN + 1];
	uint64_t *sa = NULL, *sb = NULL;
	size_t na = 0, nb = 0;

	if (tool_store_find(other, NULL, 1, &to) < 0) {
		problem(2, 0, 0, "against", "missing",
			"the other store cannot be opened");
		return;
	}
	snprintf(pa, sizeof(pa), "%s/%s", ts->copy[0], MS_META_NAME);
	snprintf(pb, sizeof(pb), "%s/%s", to.copy[0], MS_META_NAME);
	if (first_diff(pa, pb, 0) >= 0)
		problem(2, 0, 0, "against", "meta",
			"the stores' identities (mstore.meta) differ");
	snprintf(pa, sizeof(pa), "%s/log", ts->copy[0]);
	snprintf(pb, sizeof(pb), "%s/log", to.copy[0]);
	int fa = open(pa, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fb = open(pb, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fa < 0 || fb < 0 || list_segs(fa, &sa, &na) < 0 ||
	    list_segs(fb, &sb, &nb) < 0) {
		problem(2, 0, 0, "against", "missing",
			"a log directory cannot be listed");
		goto out;
	}
	size_t i = 0, j = 0;
	while (i < na || j < nb) {
		uint64_t a = i < na ? sa[i] : UINT64_MAX;
		uint64_t b = j < nb ? sb[j] : UINT64_MAX;
		if (a != b) {
			problem(2, a < b ? a : b, 0, "against", "missing",
				a < b ? "segment only in this store"
				      : "segment only in the other store");
			if (a < b)
				i++;
			else
				j++;
			continue;
		}
		ms_seg_name(a, name);
		snprintf(pa, sizeof(pa), "%s/log/%s", ts->copy[0], name);
		snprintf(pb, sizeof(pb), "%s/log/%s", to.copy[0], name);
		long long d = first_diff(pa, pb, 1);
		if (d >= 0)
			problem(2, a, (uint64_t)d, "against", "differs",
				"the stores differ from this byte on");
		i++;
		j++;
	}
	if (!nproblems)
		printf("against %s: %zu segments, byte-identical\n", to.copy[0],
		       na);
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	free(sa);
	free(sb);
}

static void print_text(const struct tool_store *ts, int ncopies,
		       const struct copy_stats *cs)
{
	for (size_t i = 0; i < nproblems; i++) {
		const struct problem *p = &problems[i];
		printf("PROBLEM copy=%s segment=%llu offset=%llu type=%s "
		       "check=%s: %s\n",
		       p->copy == 2 ? "both" : ms_log_copy_name(p->copy),
		       (unsigned long long)p->seg, (unsigned long long)p->off,
		       p->type, p->check, p->detail);
	}
	for (int c = 0; c < ncopies; c++)
		printf("%s %s: %llu segments, %llu records, %llu bytes\n",
		       ms_log_copy_name(c), ts->copy[c],
		       (unsigned long long)cs[c].segments,
		       (unsigned long long)cs[c].records,
		       (unsigned long long)cs[c].bytes);
	if (nproblems == 0)
		printf("verify: clean\n");
	else
		printf("verify: %zu problem(s)\n", nproblems);
}

static void print_json(const struct tool_store *ts, int ncopies,
		       const struct copy_stats *cs)
{
	printf("{\"clean\":%s,\"store_id\":\"", nproblems ? "false" : "true");
	if (cs[0].meta_ok)
		for (int i = 0; i < MS_STORE_ID_SIZE; i++)
			printf("%02x", cs[0].meta.store_id[i]);
	printf("\",\"copies\":[");
	for (int c = 0; c < ncopies; c++) {
		printf("%s{\"copy\":\"%s\",\"dir\":", c ? "," : "",
		       ms_log_copy_name(c));
		tool_json_str(stdout, ts->copy[c]);
		printf(",\"segments\":%llu,\"records\":%llu,\"bytes\":%llu}",
		       (unsigned long long)cs[c].segments,
		       (unsigned long long)cs[c].records,
		       (unsigned long long)cs[c].bytes);
	}
	printf("],\"problems\":[");
	for (size_t i = 0; i < nproblems; i++) {
		const struct problem *p = &problems[i];
		printf("%s{\"copy\":\"%s\",\"segment\":%llu,\"offset\":%llu,"
		       "\"type\":\"%s\",\"check\":\"%s\",\"detail\":",
		       i ? "," : "",
		       p->copy == 2 ? "both" : ms_log_copy_name(p->copy),
		       (unsigned long long)p->seg, (unsigned long long)p->off,
		       p->type, p->check);
		tool_json_str(stdout, p->detail);
		printf("}");
	}
	printf("]}\n");
}

int cmd_verify(int argc, char **argv)
{
	const char *dir = NULL, *secondary = NULL, *idxopt = NULL;
	const char *against = NULL;
	int json = 0, could_not_run = 0, no_index = 0;
	struct tool_store ts;
	struct copy_stats cs[2];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (strcmp(argv[i], "--index") == 0 && i + 1 < argc)
			idxopt = argv[++i];
		else if (strcmp(argv[i], "--no-index") == 0)
			no_index = 1;
		else if (strcmp(argv[i], "--against") == 0 && i + 1 < argc)
			against = argv[++i];
		else if (argv[i][0] != '-' && dir == NULL)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: mstore verify DIR "
					"[--secondary DIR2] [--json] [--index "
					"IDXDIR | --no-index] [--against "
					"OTHERDIR]\n");
			return TOOL_FAILED;
		}
	}
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	memset(cs, 0, sizeof(cs));
	int ncopies = ts.copy[1] ? 2 : 1;
	for (int c = 0; c < ncopies; c++)
		verify_copy(c, ts.copy[c], &cs[c], &could_not_run);
	if (could_not_run) {
		fprintf(stderr, "mstore verify: %s\n", problems[0].detail);
		return TOOL_FAILED;
	}
	if (ncopies == 2)
		compare_copies(&ts, cs);
	if (against != NULL)
		compare_against(&ts, against);
	/* the index against the log, when the log itself is sound */
	const char *what = "";
	int ic = no_index || nproblems ? -1 : index_check(&ts, idxopt, &what);
	if (ic == 1)
		problem(2, 0, 0, "index", "index", what);
	else if (ic < 0 && !no_index && !nproblems && !json)
		printf("index: not checked (%s)\n", what);
	if (json)
		print_json(&ts, ncopies, cs);
	else
		print_text(&ts, ncopies, cs);
	for (int c = 0; c < 2; c++)
		free(cs[c].segs);
	free(problems);
	return nproblems ? TOOL_PROBLEMS : TOOL_OK;
}
