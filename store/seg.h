/*
 * seg.h - segment files: names, the 64-byte segment header, the seal
 * (footer) record, the store meta file, and a buffered reader that walks
 * the records of one segment file.  No policy: log.c and recover.c decide
 * what to do with what is found here.
 *
 * Segment header (offset 0 of every NNNNNNNNNNNN.seg, little-endian):
 *
 *   0   u8[8]  magic "MSTORSEG"
 *   8   u32    format version (MS_SEG_VERSION)
 *   12  u32    header size (64)
 *   16  u8[16] store id
 *   32  u64    segment number (the same as in the file name)
 *   40  u64    timeline at the segment's start
 *   48  u64    seq of the first record in the segment
 *   56  u64    XXH3-64 of bytes 0..55
 *
 * Records follow from offset 64.  A sealed segment ends with exactly one
 * MS_REC_SEAL record whose 40-byte payload is
 *
 *   0   u64    records in the segment before the seal
 *   8   u64    seq of the first record (as in the header)
 *   16  u64    seq of the last record before the seal (first - 1 if none)
 *   24  u64    offset of the seal record itself (= bytes before it)
 *   32  u64    XXH3-64 of the segment's bytes [0, seal offset)
 *
 * so a sealed segment is exactly seal offset + MS_SEG_SEAL_SIZE bytes long,
 * and its seal can be found from the file size alone.  The open segment
 * (the newest) has no seal.
 *
 * Store meta file (mstore.meta in each copy's root, 80 bytes):
 *
 *   0   u8[8]  magic "MSTOMETA"
 *   8   u32    format version (MS_SEG_VERSION)
 *   12  u32    0 (reserved)
 *   16  u8[16] store id
 *   32  u8[32] dedup salt
 *   64  u64    creation time, Unix seconds
 *   72  u64    XXH3-64 of bytes 0..71
 *
 * DR replica marker (mstore.replica in each copy's root, 40 bytes; no
 * file: not a replica).  Present while the store is a DR copy (written
 * by udsync recv when it takes the primary's identity, and by failback's
 * rewind); a writer that is not a replica's own (udsync recv, promote,
 * failback, reindex, repair) refuses to open it (log.h, replica_ok):
 *
 *   0   u8[8]  magic "MSTOREPL"
 *   8   u32    format version (1)
 *   12  u32    state: 1 replica, 2 promoting
 *   16  u64    promoting: the TIMELINE record's new timeline; else 0
 *   24  u64    promoting: its fork seq; else 0
 *   32  u64    XXH3-64 of bytes 0..31
 */
#ifndef MS_SEG_H
#define MS_SEG_H

#include "buf.h"
#include "rec.h"

#define MS_SEG_VERSION 1
#define MS_SEG_HDR_SIZE 64
#define MS_SEG_SEAL_PAYLOAD 40
#define MS_SEG_SEAL_SIZE (MS_REC_HDR_SIZE + MS_SEG_SEAL_PAYLOAD)
#define MS_SEG_NAME_LEN 16	/* "000000000042.seg" */
#define MS_SEG_MAX_NUMBER 999999999999ULL
#define MS_META_SIZE 80
#define MS_META_NAME "mstore.meta"
#define MS_STORE_ID_SIZE 16
#define MS_SALT_SIZE 32
#define MS_REPLICA_NAME "mstore.replica"
#define MS_REPLICA_SIZE 40

struct ms_seg_hdr {
	uint8_t store_id[MS_STORE_ID_SIZE];
	uint64_t seg;
	uint64_t timeline;
	uint64_t first_seq;
};

struct ms_seg_seal {
	uint64_t count;
	uint64_t first_seq;
	uint64_t last_seq;
	uint64_t seal_off;
	uint64_t sum;
};

struct ms_meta {
	uint8_t store_id[MS_STORE_ID_SIZE];
	uint8_t salt[MS_SALT_SIZE];
	uint64_t created;
};

enum ms_replica_state {
	MS_REPLICA_NONE = 0,	/* no marker: an ordinary store */
	MS_REPLICA_DR = 1,	/* a DR copy: read-only until promoted */
	MS_REPLICA_PROMOTING = 2, /* promote began: TIMELINE `timeline` */
};

struct ms_replica {
	enum ms_replica_state state;
	uint64_t timeline, fork_seq;	/* MS_REPLICA_PROMOTING */
};

/* "000000000042.seg" into out (at least MS_SEG_NAME_LEN + 1 bytes). */
void ms_seg_name(uint64_t seg, char *out);
/* 0 and *seg_r if name is a segment file name; else -1. */
int ms_seg_parse_name(const char *name, uint64_t *seg_r);

void ms_seg_hdr_encode(const struct ms_seg_hdr *h, uint8_t out[MS_SEG_HDR_SIZE]);
/* MS_ETRUNC, MS_EMAGIC, MS_EVERSION or MS_ECORRUPT with *error_r. */
int ms_seg_hdr_decode(const uint8_t *buf, size_t len, struct ms_seg_hdr *h_r,
		      const char **error_r);

void ms_seg_seal_encode(const struct ms_seg_seal *s,
			uint8_t out[MS_SEG_SEAL_PAYLOAD]);
/* Checks the payload's own consistency (offsets, counts). */
int ms_seg_seal_decode(const uint8_t *payload, size_t len,
		       struct ms_seg_seal *s_r, const char **error_r);

void ms_meta_encode(const struct ms_meta *m, uint8_t out[MS_META_SIZE]);
int ms_meta_decode(const uint8_t *buf, size_t len, struct ms_meta *m_r,
		   const char **error_r);
/* Read / write (tmp file, fsync, rename, fsync dir) dir/mstore.meta. */
int ms_meta_read(int dirfd, struct ms_meta *m_r, const char **error_r);
int ms_meta_write(int dirfd, const struct ms_meta *m, const char **error_r);

/*
 * The replica marker of one copy (dirfd: the copy's root).  Read: 0 with
 * r_r->state MS_REPLICA_NONE when there is no file; MS_ECORRUPT,
 * MS_EMAGIC, MS_EVERSION (or -errno) with *error_r when there is one that
 * cannot be read: the caller takes that for a replica (fail safe).
 * Write: tmp file, fsync, rename, fsync dir.  Remove: unlink, fsync dir
 * (no file is not an error).
 */
void ms_replica_encode(const struct ms_replica *r,
		       uint8_t out[MS_REPLICA_SIZE]);
int ms_replica_decode(const uint8_t *buf, size_t len, struct ms_replica *r_r,
		      const char **error_r);
int ms_replica_read(int dirfd, struct ms_replica *r_r, const char **error_r);
int ms_replica_write(int dirfd, const struct ms_replica *r,
		     const char **error_r);
int ms_replica_remove(int dirfd, const char **error_r);

/*
 * Buffered sequential reader over one segment file.  It checks every
 * record fully (rec.h) before returning it; it does not check seq order
 * (the caller knows what it expects).  Records are returned as pointers
 * into the reader's window, valid until the next call.
 */
struct ms_seg_reader {
	int fd;
	uint64_t size;		/* file size when opened */
	uint64_t off;		/* offset of the next record */
	uint64_t win_off;	/* file offset of win.data[0] */
	struct ms_buf win;
};

/* Takes fd (borrowed); reads the file size. */
int ms_seg_reader_init(struct ms_seg_reader *r, int fd);
void ms_seg_reader_free(struct ms_seg_reader *r);
static inline void ms_seg_reader_seek(struct ms_seg_reader *r, uint64_t off)
{
	r->off = off;
}
/* 1 if the n bytes at p are all zero. */
static inline int ms_zeros(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}
/* 1 if [off, end of file) holds zero bytes only (the writer's prepared
   space, log.c), 0 if not, or -errno. */
int ms_seg_reader_zeros_from(struct ms_seg_reader *r, uint64_t off);
/* Read len bytes at off through the window; *p_r valid until next call. */
int ms_seg_reader_peek(struct ms_seg_reader *r, uint64_t off, size_t len,
		       const uint8_t **p_r);
/*
 * Next record: 1 with *hdr_r and *rec_r (header + payload bytes; for a
 * HOLE the header only, its payload is never read), and
 * r->off advanced past it; 0 at the exact end of the file, or where
 * nothing but zero bytes is left (the writer's prepared space, log.c: off
 * stays there, the end of the records); MS_ETRUNC if the file ends inside
 * a record; MS_ECORRUPT if a check fails (off is not advanced); -errno on
 * a read error.
 */
int ms_seg_reader_next(struct ms_seg_reader *r, struct ms_rec_hdr *hdr_r,
		       const uint8_t **rec_r, const char **error_r);

/*
 * Feed one record to an XXH3-64 state (an XXH3_state_t *) the way a seal
 * checksum counts it: header and payload, and for a HOLE its header and
 * then zeros for its payload (rec may then hold the header only).
 */
void ms_seg_sum_rec(void *xxh3_state, const struct ms_rec_hdr *h,
		    const uint8_t *rec);

/* Full-length pread / pwrite: -errno, or MS_ETRUNC for a read past EOF. */
int ms_pread_full(int fd, void *buf, size_t len, uint64_t off);
int ms_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Replace dirfd/name with len bytes of buf, durably: written to tmp and
   fsynced, renamed over name, the directory fsynced. */
int ms_write_small_file(int dirfd, const char *name, const char *tmp,
			const uint8_t *buf, size_t len, const char **error_r);

/*
 * Save the bytes [off, size) of fd to a new file name (relative to dirfd,
 * or a path with AT_FDCWD), mode 0640, fsynced: what recovery, udsync
 * recv and failback keep in lost+found before they cut a segment.  0 or
 * -errno / MS_ETRUNC (fd shorter than size).
 */
int ms_save_range(int dirfd, const char *name, int fd, uint64_t off,
		  uint64_t size);

#endif
