/*
 * io.h - the narrow I/O layer every log write goes through (cf. SQLite's
 * VFS).  Three engines: io_uring (io_uring.c), psync (io_psync.c) and
 * fault (io_fault.c, tests only: fails, tears or "loses power" on cue).
 *
 * A flush writes the same bytes at the same offset to up to two files
 * (the primary and the secondary copy), each write made durable as an
 * fdatasync of that file after it would (io_uring: a write with
 * RWF_DSYNC, or a write -> fdatasync chain).  One flush is in flight at
 * a time (group commit serialises them).  The buffer must stay untouched
 * until the flush is reaped.  Per copy the result is 0 (written and
 * synced) or -errno; a copy whose write or sync failed is never reported
 * as synced.
 *
 * A flush may also write zeros past the records (the log's prepared
 * space, docs/format.md): zlen[c] bytes at zoff[c], after the records'
 * write and before the fdatasync, off the caller's thread where the
 * engine has threads.  They are no part of the result: a copy whose
 * zeros failed is synced all the same, and zres[c] says whether they
 * were written.
 *
 * The small synchronous calls (pread, pwrite, datasync) are for recovery,
 * healing and reads; the copy index lets the fault engine aim at one copy.
 */
#ifndef MS_IO_H
#define MS_IO_H

#include <sys/types.h>

#include "ms.h"

#define MS_IO_COPIES 2

/* the most zeros one flush writes, and the buffer they come from (in
   .bss: never written, so it costs no memory of its own) */
#define MS_IO_ZEROS ((size_t)1 << 20)
extern uint8_t ms_io_zeros[MS_IO_ZEROS];

enum ms_io_kind { MS_IO_URING, MS_IO_PSYNC };

struct ms_io_flush {
	int fd[MS_IO_COPIES];	/* -1: skip this copy */
	const void *buf;
	size_t len;
	uint64_t off;
	int res[MS_IO_COPIES];	/* out: 0 synced, -errno failed */
	uint64_t zoff[MS_IO_COPIES];	/* zeros after the records */
	size_t zlen[MS_IO_COPIES];	/* 0: none; at most MS_IO_ZEROS */
	int zres[MS_IO_COPIES];	/* out: 0 zeros written, -errno not */
	/* engine state */
	size_t done[MS_IO_COPIES];
	int pending;
};

struct ms_io;

struct ms_io_ops {
	const char *name;
	/* Start a flush.  0, or -errno if nothing could be started. */
	int (*flush_start)(struct ms_io *io, struct ms_io_flush *f);
	/* 1: the flush finished (res[] filled); 0: not yet (only if !block). */
	int (*flush_reap)(struct ms_io *io, struct ms_io_flush *f, int block);
	int (*pread)(struct ms_io *io, int copy, int fd, void *buf, size_t len,
		     uint64_t off);
	int (*pwrite)(struct ms_io *io, int copy, int fd, const void *buf,
		      size_t len, uint64_t off);
	int (*datasync)(struct ms_io *io, int copy, int fd);
	/* Cut the file to len bytes (not synced). */
	int (*truncate)(struct ms_io *io, int copy, int fd, uint64_t len);
	/* An fd that polls readable when a flush can be reaped, or -1. */
	int (*event_fd)(struct ms_io *io);
	void (*free)(struct ms_io *io);
};

struct ms_io {
	const struct ms_io_ops *ops;
};

/*
 * io_uring engine.  A refusal by the kernel or a container (ENOSYS,
 * EPERM, ...) fails with an error that says so and names the setting
 * `io_engine = psync`.
 */
int ms_io_uring_new(unsigned entries, struct ms_io **io_r,
		    const char **error_r);
int ms_io_psync_new(struct ms_io **io_r);
/* psync's synchronous calls, for engines that do these the same way. */
int ms_io_plain_pread(struct ms_io *io, int copy, int fd, void *buf,
		      size_t len, uint64_t off);
int ms_io_plain_pwrite(struct ms_io *io, int copy, int fd, const void *buf,
		       size_t len, uint64_t off);
int ms_io_plain_datasync(struct ms_io *io, int copy, int fd);
int ms_io_plain_truncate(struct ms_io *io, int copy, int fd, uint64_t len);
/* A flush done in flush_start, one copy after the other, through the
   engine's own pwrite and datasync (records, zeros, sync); reaped at
   once; no event fd.  The psync and fault engines'. */
int ms_io_turn_flush_start(struct ms_io *io, struct ms_io_flush *f);
int ms_io_turn_flush_reap(struct ms_io *io, struct ms_io_flush *f, int block);
int ms_io_no_event_fd(struct ms_io *io);

/* Tests: every write of the io_uring engine asks for at most max bytes,
   so that a flush takes the way of a short write (0: no limit). */
void ms_io_uring_test_max_write(struct ms_io *io, size_t max);
/* tests: the submits from..to from now on (1 = the next) fail with
   EAGAIN, submitting nothing */
void ms_io_uring_test_fail_submit(struct ms_io *io, unsigned long from,
				  unsigned long to);

/* What the io_uring engine does with one completion; pure, for tests. */
enum ms_uring_step { MS_URING_OK, MS_URING_RESUBMIT, MS_URING_FAILED };
enum ms_uring_step ms_io_uring_write_step(size_t want, int res,
					  size_t *done_r);

/*
 * Fault engine (tests).  It wraps another engine and counts writes and
 * fdatasyncs per copy (flush writes and the synchronous calls alike).
 */
struct ms_fault_plan {
	int copy;		/* copy that write/sync faults hit; -1 = any */
	unsigned long fail_write;	/* fail the Nth write with EIO; 0 never */
	unsigned long fail_sync;	/* fail the Nth fdatasync with EIO */
	int sticky;		/* after a failure every later write and
				   sync of that copy fails too (dead disk) */
	unsigned long short_write;	/* Nth write stops after short_len */
	size_t short_len;
	unsigned long torn_write;	/* Nth write (any copy) writes torn_len
					   bytes, then power is lost */
	size_t torn_len;
	unsigned long power_loss_sync;	/* Nth fdatasync (any copy) never
					   completes: power is lost */
	unsigned long fail_truncate;	/* fail the Nth truncate with EIO */
};

int ms_io_fault_new(struct ms_io *inner, const struct ms_fault_plan *plan,
		    struct ms_io **io_r);
/* 1 if the plan's power loss has happened (every later call fails EIO). */
int ms_io_fault_powered_off(struct ms_io *io);
/* Lose power now (every later call fails EIO). */
void ms_io_fault_power_off(struct ms_io *io);
/*
 * After power loss: apply to the files what a disk could have kept.  For
 * every file written, bytes past its last completed fdatasync are, sector
 * by sector from a random cut, kept, zeroed or replaced with garbage, and
 * the file is cut at a random length >= its synced length.  Seeded.
 */
int ms_io_fault_apply_loss(struct ms_io *io, uint64_t seed);
/* Counters, for tests. */
unsigned long ms_io_fault_writes(struct ms_io *io, int copy);
unsigned long ms_io_fault_syncs(struct ms_io *io, int copy);
unsigned long ms_io_fault_reads(struct ms_io *io, int copy);
/* The furthest byte (offset + length) a read of copy asked for, in any
   file, since the last call (which it resets). */
uint64_t ms_io_fault_read_end(struct ms_io *io, int copy);

static inline void ms_io_free(struct ms_io **io)
{
	if (*io != NULL)
		(*io)->ops->free(*io);
	*io = NULL;
}

#endif
