/*
 * log_fork.c - the fork point of two logs, for failback
 * (docs/replication.md, "Failback").  The new primary D finds the
 * TIMELINE record that raised its log above the old primary P's
 * timeline (ms_log_fork_find); both sides then hash what they should
 * share up to that position (ms_log_fork_hash) and compare.
 *
 * The chain hash is BLAKE2b-256 over what compaction does not change:
 *
 *   "mstore-fork-v1"
 *   every sealed segment k before the fork segment s, in order:
 *       its 64 header bytes,
 *       its seal record's seq, timeline, length, flags & BATCH (u64 each),
 *       the seal's count, first seq, last seq, seal offset (not its sum)
 *   the fork segment s, when the fork is past its header (o > 64):
 *       its 64 header bytes,
 *       per record in [64, o): offset, seq, timeline, length,
 *       flags & BATCH (u64 each; the type is left out: a HOLE replaces
 *       a compacted record with the same offset, seq, timeline, length)
 *
 * Reading two small pieces per sealed segment and one segment whole
 * keeps the cost bounded for the live primary that answers FORK_INFO
 * (a chain over every record of a multi-terabyte log would stall its
 * event loop for minutes); a divergence before the fork shows in the
 * segment layout (offsets, seqs, timelines of seals and headers) or in
 * the fork segment's records.  tail_sum adds the bytes: XXH3-64 of the
 * records in [64, o) of segment s, comparable when neither side has a
 * HOLE there (tail_holes).
 *
 * Read-only; reads go through ms_log_read (checked, either copy).
 */
#include <errno.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "event.h"
#include "log_int.h"
#include "msg.h"

#define FORK_LABEL "mstore-fork-v1"

/* The header of segment seg (checked) from the first copy that has it. */
static int fork_seg_hdr(struct ms_log *log, uint64_t seg,
			uint8_t hb[MS_SEG_HDR_SIZE], struct ms_seg_hdr *sh_r,
			uint64_t *size_r, const char **error_r)
{
	const char *why = "no copy";
	for (int c = 0; c < log->ncopies; c++) {
		struct stat sb;
		int fd = ms_log_seg_fd(log, c, seg);
		if (fd < 0) {
			why = ms_strerror(fd);
			continue;
		}
		if (ms_pread_full(fd, hb, MS_SEG_HDR_SIZE, 0) < 0 ||
		    ms_seg_hdr_decode(hb, MS_SEG_HDR_SIZE, sh_r, &why) < 0 ||
		    sh_r->seg != seg || fstat(fd, &sb) < 0)
			continue;
		*size_r = (uint64_t)sb.st_size;
		return 0;
	}
	*error_r = ms_errf("segment %llu: header unreadable: %s",
			   (unsigned long long)seg, why);
	return MS_ECORRUPT;
}

static void put_u64s(crypto_generichash_state *st, const uint64_t *v, size_t n)
{
	uint8_t b[8];
	for (size_t i = 0; i < n; i++) {
		ms_put64(b, v[i]);
		crypto_generichash_update(st, b, 8);
	}
}

int ms_log_fork_find(struct ms_log *log, uint64_t old_tl,
		     struct ms_log_fork *f_r, const char **error_r)
{
	struct ms_log_iter *it;
	struct ms_rec_hdr h;
	struct ms_pos pos;
	const uint8_t *p;
	uint64_t k = 0;
	int ret;

	/* the TIMELINE that raised the log above old_tl lies in the last
	   segment whose header still has a timeline <= old_tl (a segment
	   started by the TIMELINE's append has the old one) */
	for (size_t i = 0; i < log->nsegs; i++) {
		uint8_t hb[MS_SEG_HDR_SIZE];
		struct ms_seg_hdr sh;
		uint64_t size;
		if (log->segs[i] > log->durable.seg)
			break;
		if ((ret = fork_seg_hdr(log, log->segs[i], hb, &sh, &size,
					error_r)) < 0)
			return ret;
		if (sh.timeline > old_tl)
			break;
		k = log->segs[i];
	}
	if (k == 0) {
		*error_r = ms_errf("this log has no segment of timeline %llu",
				   (unsigned long long)old_tl);
		return MS_ENOTFOUND;
	}
	if ((ret = ms_log_iter_new(log, (struct ms_pos){ k, 0 }, &it)) < 0) {
		*error_r = "cannot walk the log";
		return ret;
	}
	while ((ret = ms_log_iter_next(it, &pos, &h, &p, error_r)) > 0) {
		if (h.timeline <= old_tl)
			continue;
		struct ms_event ev;
		if (h.type != MS_REC_TIMELINE ||
		    ms_event_decode(h.type, p, h.len, &ev, error_r) < 0 ||
		    ev.u.timeline.fork_seq + 1 != h.seq) {
			*error_r = ms_errf("%llu:%llu: the first record above "
					   "timeline %llu is a %s record, not "
					   "the TIMELINE of a promotion",
					   (unsigned long long)pos.seg,
					   (unsigned long long)pos.off,
					   (unsigned long long)old_tl,
					   ms_rec_type_name(h.type));
			ret = MS_ECORRUPT;
			break;
		}
		memset(f_r, 0, sizeof(*f_r));
		f_r->fork_seq = ev.u.timeline.fork_seq;
		f_r->pos = pos;
		f_r->timeline = ev.u.timeline.new_timeline;
		memcpy(f_r->store_id, ev.u.timeline.store_id, MS_STORE_ID_SIZE);
		ret = 1;
		break;
	}
	ms_log_iter_free(&it);
	if (ret == 0) {
		*error_r = ms_errf("this log was never promoted above timeline "
				   "%llu",
				   (unsigned long long)old_tl);
		return MS_ENOTFOUND;
	}
	return ret < 0 ? ret : 0;
}

int ms_log_fork_hash(struct ms_log *log, struct ms_pos at, uint64_t fork_seq,
		     struct ms_log_fork *f, const char **error_r)
{
	crypto_generichash_state st;
	struct ms_buf pl;
	uint64_t last_seq = 0;
	int ret = 0;

	if (at.seg == 0 || at.off < MS_SEG_HDR_SIZE) {
		*error_r = "the fork position is not a record position";
		return -EINVAL;
	}
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)FORK_LABEL,
				  sizeof(FORK_LABEL) - 1);
	ms_buf_init(&pl, 0);
	f->tail_sum = 0;
	f->tail_holes = 0;
	for (size_t i = 0; i < log->nsegs && log->segs[i] < at.seg; i++) {
		uint64_t seg = log->segs[i], size;
		uint8_t hb[MS_SEG_HDR_SIZE];
		struct ms_seg_hdr sh;
		struct ms_seg_seal s;
		struct ms_rec_hdr h;
		if ((ret = fork_seg_hdr(log, seg, hb, &sh, &size, error_r)) < 0)
			goto out;
		crypto_generichash_update(&st, hb, sizeof(hb));
		if (size < MS_SEG_HDR_SIZE + MS_SEG_SEAL_SIZE ||
		    (ret = ms_log_read(log,
				       (struct ms_pos){ seg,
							size - MS_SEG_SEAL_SIZE },
				       &h, &pl, error_r)) < 0 ||
		    h.type != MS_REC_SEAL ||
		    ms_seg_seal_decode(pl.data, pl.len, &s, error_r) < 0) {
			if (ret == 0)
				*error_r = ms_errf("segment %llu before the "
						   "fork is not sealed",
						   (unsigned long long)seg);
			ret = MS_ECORRUPT;
			goto out;
		}
		uint64_t v[8] = { h.seq,     h.timeline,
				  h.len,     h.flags & MS_REC_F_BATCH,
				  s.count,   s.first_seq,
				  s.last_seq, s.seal_off };
		put_u64s(&st, v, 8);
		last_seq = h.seq;
	}
	if (at.off > MS_SEG_HDR_SIZE) {
		uint8_t hb[MS_SEG_HDR_SIZE];
		struct ms_seg_hdr sh;
		struct ms_log_iter *it;
		struct ms_rec_hdr h;
		struct ms_pos pos;
		const uint8_t *p;
		uint64_t size, end = MS_SEG_HDR_SIZE;
		XXH3_state_t *xs = XXH3_createState();

		ms_assert(xs != NULL);
		XXH3_64bits_reset(xs);
		if ((ret = fork_seg_hdr(log, at.seg, hb, &sh, &size,
					error_r)) < 0) {
			XXH3_freeState(xs);
			goto out;
		}
		crypto_generichash_update(&st, hb, sizeof(hb));
		ms_log_iter_new(log, (struct ms_pos){ at.seg, 0 }, &it);
		while (end < at.off &&
		       (ret = ms_log_iter_next(it, &pos, &h, &p, error_r)) > 0) {
			uint8_t rh[MS_REC_HDR_SIZE];
			if (pos.seg != at.seg)
				break;
			uint64_t v[5] = { pos.off, h.seq, h.timeline, h.len,
					  h.flags & MS_REC_F_BATCH };
			put_u64s(&st, v, 5);
			if (h.type == MS_REC_HOLE) {
				f->tail_holes = 1;
			} else {
				ms_rec_encode_hdr(rh, h.type, h.flags, h.len,
						  h.seq, h.timeline, p);
				XXH3_64bits_update(xs, rh, sizeof(rh));
				XXH3_64bits_update(xs, p, h.len);
			}
			end = pos.off + MS_REC_HDR_SIZE + h.len;
			last_seq = h.seq;
		}
		ms_log_iter_free(&it);
		f->tail_sum = XXH3_64bits_digest(xs);
		XXH3_freeState(xs);
		if (ret < 0)
			goto out;
		if (end != at.off) {
			*error_r = ms_errf("no record ends at the fork position "
					   "%llu:%llu (this log's records end "
					   "at offset %llu there)",
					   (unsigned long long)at.seg,
					   (unsigned long long)at.off,
					   (unsigned long long)end);
			ret = MS_EMISMATCH;
			goto out;
		}
	}
	if (last_seq != fork_seq) {
		*error_r = ms_errf("the record before the fork position "
				   "%llu:%llu has seq %llu, not the fork "
				   "seq %llu",
				   (unsigned long long)at.seg,
				   (unsigned long long)at.off,
				   (unsigned long long)last_seq,
				   (unsigned long long)fork_seq);
		ret = MS_EMISMATCH;
		goto out;
	}
	ret = 0;
	crypto_generichash_final(&st, f->chain, sizeof(f->chain));
out:
	ms_buf_free(&pl);
	return ret;
}
