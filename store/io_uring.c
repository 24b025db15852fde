/*
 * io_uring.c - the io_uring engine.  A flush is one submit per copy,
 * both copies at once: a write with RWF_DSYNC (the write and the data
 * sync of its bytes, fdatasync's work for that range, in one request);
 * with zeros to write (io.h), a linked chain write -> zeros ->
 * fdatasync.  One request and one completion per copy instead of a
 * write -> fdatasync chain's two: each completion signals the eventfd,
 * and each signal wakes mstored's loop from another core, which in a VM
 * costs an IPI.  bench-store, 4 KiB appends, 3 interleaved runs of
 * each: 1 client 2,679-2,777 -> 2,866-2,956 appends/s and 258-266 ->
 * 208-230 us of mstored's CPU per append; 8 clients 68-69 -> 60-68 us;
 * 64 clients 44-47 us either way.
 *
 * What bites, and what we do about it:
 *  - a short write: the rest is written again, with RWF_DSYNC (the sync
 *    of a short write covered the bytes it wrote).  In a chain, a short
 *    write breaks its link: the fdatasync after it completes with
 *    -ECANCELED (or, on some kernels, runs anyway), and the rest is
 *    written once that completion is in.
 *  - a chain ends at each submit, so write and sync go in one submit.
 *  - every write is forced to the kernel's workers (IOSQE_ASYNC): a
 *    buffered write that waits for its sync must not run in the loop
 *    that submits.  (Without the flag, perf of mstored's loop on ext4
 *    never showed a record write in it either: the kernel had already
 *    handed them to its workers.)
 *  - a failed write or sync marks that copy failed for this flush; it is
 *    never retried as if it succeeded (the kernel may have dropped the
 *    dirty pages after reporting the error).
 *  - the zeros are hard-linked to the sync: their failure (a full disk)
 *    leaves the chain going.  Copying up to a MiB into the page cache is
 *    work for another core, not for the loop that submits (IOSQE_ASYNC,
 *    as every write here).  A broken chain cancels them; the rest of a
 *    short write is written without them.
 *  - a submit that fails leaves its requests queued in the ring, where
 *    the next submit would send them.  The rest of a short write is
 *    submitted up to SUBMIT_TRIES times; then, as when a flush's own
 *    submit (or queueing) fails, the engine is broken: what the flush
 *    still has open fails, and every later flush fails at once without
 *    submitting (the requests still queued would be sent with it, and
 *    their completions taken for its own).  The log then goes on with a
 *    copy whose write had completed, until its next flush.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "buf.h"
#include "io.h"
#include "seg.h"

struct uring_io {
	struct ms_io io;
	struct io_uring ring;
	int efd;
	int resubmit[MS_IO_COPIES];
	int failed[MS_IO_COPIES];
	int broken;		/* see above: nothing is submitted again */
	size_t max_write;	/* tests: a write asks for at most this */
	unsigned long nsubmit;	/* submits tried */
	unsigned long fail_from, fail_to; /* tests: these fail (1-based) */
};

#define SUBMIT_TRIES 3

void ms_io_uring_test_max_write(struct ms_io *io, size_t max)
{
	((struct uring_io *)io)->max_write = max;
}

void ms_io_uring_test_fail_submit(struct ms_io *io, unsigned long from,
				  unsigned long to)
{
	struct uring_io *u = (struct uring_io *)io;
	u->fail_from = u->nsubmit + from;
	u->fail_to = u->nsubmit + to;
}

/* The bytes of copy c's records a write asks for now. */
static unsigned write_len(const struct uring_io *u, const struct ms_io_flush *f,
			  int c)
{
	size_t n = f->len - f->done[c];
	if (u->max_write != 0 && n > u->max_write)
		n = u->max_write;
	return (unsigned)n;
}

#define UD(copy, op) ((uint64_t)(copy) << 2 | (op))
#define OP_WRITE 0 /* a write in a chain, no sync */
#define OP_SYNC 1  /* the fdatasync ending a chain */
#define OP_ZEROS 2 /* the zeros in a chain */
#define OP_WSYNC 3 /* a write with RWF_DSYNC, alone */

/* The rest of copy c's records as one write with RWF_DSYNC. */
static int uring_queue_wsync(struct uring_io *u, struct ms_io_flush *f, int c)
{
	struct io_uring_sqe *w = io_uring_get_sqe(&u->ring);
	if (w == NULL)
		return -EBUSY; /* ring sized for 2 chains: a bug if hit */
	io_uring_prep_write(w, f->fd[c], (const uint8_t *)f->buf + f->done[c],
			    write_len(u, f, c), f->off + f->done[c]);
	w->rw_flags = RWF_DSYNC;
	w->flags |= IOSQE_ASYNC;
	io_uring_sqe_set_data64(w, UD(c, OP_WSYNC));
	f->pending++;
	return 0;
}

enum ms_uring_step ms_io_uring_write_step(size_t want, int res, size_t *done_r)
{
	if (res < 0)
		return MS_URING_FAILED;
	if (res == 0 && want > 0)
		return MS_URING_FAILED; /* no progress: would loop forever */
	if ((size_t)res > want)
		return MS_URING_FAILED; /* cannot happen; never trust it */
	*done_r += (size_t)res;
	return (size_t)res == want ? MS_URING_OK : MS_URING_RESUBMIT;
}

/* Copy c's records, then its zeros, then an fdatasync: a chain. */
static int uring_queue_chain(struct uring_io *u, struct ms_io_flush *f, int c)
{
	struct io_uring_sqe *w = io_uring_get_sqe(&u->ring);
	struct io_uring_sqe *z = w ? io_uring_get_sqe(&u->ring) : NULL;
	struct io_uring_sqe *s = z ? io_uring_get_sqe(&u->ring) : NULL;
	if (s == NULL)
		return -EBUSY; /* ring sized for 2 chains: a bug if hit */
	io_uring_prep_write(w, f->fd[c], (const uint8_t *)f->buf + f->done[c],
			    write_len(u, f, c), f->off + f->done[c]);
	w->flags |= IOSQE_IO_LINK | IOSQE_ASYNC;
	io_uring_sqe_set_data64(w, UD(c, OP_WRITE));
	io_uring_prep_write(z, f->fd[c], ms_io_zeros, (unsigned)f->zlen[c],
			    f->zoff[c]);
	z->flags |= IOSQE_IO_HARDLINK | IOSQE_ASYNC;
	io_uring_sqe_set_data64(z, UD(c, OP_ZEROS));
	f->pending++;
	io_uring_prep_fsync(s, f->fd[c], IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data64(s, UD(c, OP_SYNC));
	f->pending += 2;
	return 0;
}

/* Submit what is queued; a failure leaves it queued (tests: a failure
   planned by ms_io_uring_test_fail_submit submits nothing). */
static int uring_submit(struct uring_io *u)
{
	int ret;

	u->nsubmit++;
	if (u->nsubmit >= u->fail_from && u->nsubmit <= u->fail_to)
		ret = -EAGAIN;
	else
		do {
			ret = io_uring_submit(&u->ring);
		} while (ret == -EINTR);
	return ret < 0 ? ret : 0;
}

/* Fail what flush f still has open, with err; nothing is reaped after. */
static void uring_fail_open(struct uring_io *u, struct ms_io_flush *f,
			    int err)
{
	for (int c = 0; c < MS_IO_COPIES; c++)
		if (f->fd[c] >= 0 && !u->failed[c] && f->done[c] < f->len)
			f->res[c] = err;
	f->pending = 0;
}

/* After a short write: the rest of copy c's records, written and synced
   now.  A copy whose rest cannot be queued (no room: a bug) is failed;
   a rest that cannot be submitted breaks the engine (above). */
static void uring_write_rest(struct uring_io *u, struct ms_io_flush *f, int c)
{
	int ret = -EIO;

	if (uring_queue_wsync(u, f, c) < 0) {
		u->failed[c] = 1;
		f->res[c] = -EIO;
		return;
	}
	for (int i = 0; i < SUBMIT_TRIES; i++)
		if ((ret = uring_submit(u)) == 0)
			return;
	u->broken = 1;
	uring_fail_open(u, f, ret);
}

static int uring_flush_start(struct ms_io *io, struct ms_io_flush *f)
{
	struct uring_io *u = (struct uring_io *)io;
	int ret = 0;

	f->pending = 0;
	if (u->broken)
		return -EIO;
	for (int c = 0; c < MS_IO_COPIES; c++) {
		f->done[c] = 0;
		f->res[c] = 0;
		f->zres[c] = -ECANCELED;
		u->resubmit[c] = 0;
		u->failed[c] = 0;
		if (f->fd[c] < 0)
			continue;
		if (f->len == 0) {
			/* nothing to write: a sync alone keeps the contract */
			f->res[c] = fdatasync(f->fd[c]) < 0 ? -errno : 0;
			continue;
		}
		ret = f->zlen[c] > 0 ? uring_queue_chain(u, f, c)
				     : uring_queue_wsync(u, f, c);
		if (ret < 0)
			break;
	}
	if (ret == 0 && f->pending > 0)
		ret = uring_submit(u);
	/* a failed submit, or a copy that could not be queued (no room: a
	   bug), leaves requests queued in the ring */
	if (ret < 0) {
		u->broken = 1;
		f->pending = 0;
		return ret;
	}
	return 0;
}

static void uring_complete(struct uring_io *u, struct ms_io_flush *f,
			   uint64_t ud, int res)
{
	int c = (int)(ud >> 2);

	f->pending--;
	if ((ud & 3) == OP_ZEROS) {
		/* all of them or none: a short write of zeros is not
		   resumed (the log asks again after a later flush) */
		f->zres[c] = res < 0 ? res : (size_t)res == f->zlen[c] ? 0 : -EIO;
		return;
	}
	if ((ud & 3) == OP_WRITE || (ud & 3) == OP_WSYNC) {
		switch (ms_io_uring_write_step(f->len - f->done[c], res,
					       &f->done[c])) {
		case MS_URING_OK:
			break;
		case MS_URING_RESUBMIT:
			if ((ud & 3) == OP_WRITE) {
				/* the chain's sync comes, then the rest */
				u->resubmit[c] = 1;
				break;
			}
			uring_write_rest(u, f, c);
			break;
		case MS_URING_FAILED:
			u->failed[c] = 1;
			f->res[c] = res < 0 ? res : -EIO;
			break;
		}
		return;
	}
	/* the fdatasync of this copy's chain */
	if (u->failed[c])
		return;
	if (u->resubmit[c]) {
		/* short write: write the rest, and sync it */
		u->resubmit[c] = 0;
		uring_write_rest(u, f, c);
		return;
	}
	if (res < 0) {
		u->failed[c] = 1;
		f->res[c] = res;
	}
}

static int uring_flush_reap(struct ms_io *io, struct ms_io_flush *f, int block)
{
	struct uring_io *u = (struct uring_io *)io;
	struct io_uring_cqe *cqe;
	uint64_t v;

	/* consume the wake-up first: otherwise the eventfd stays readable
	   while the flush is half done, and a poll loop spins on it */
	if (u->efd >= 0)
		(void)!read(u->efd, &v, sizeof(v));
	while (f->pending > 0) {
		int ret = block ? io_uring_wait_cqe(&u->ring, &cqe)
				: io_uring_peek_cqe(&u->ring, &cqe);
		if (ret == -EAGAIN && !block)
			return 0;
		if (ret == -EINTR)
			continue;
		if (ret < 0) {
			/* the ring itself failed: fail what is still open */
			u->broken = 1;
			uring_fail_open(u, f, ret);
			break;
		}
		uring_complete(u, f, io_uring_cqe_get_data64(cqe), cqe->res);
		io_uring_cqe_seen(&u->ring, cqe);
	}
	return 1;
}

static int uring_event_fd(struct ms_io *io)
{
	return ((struct uring_io *)io)->efd;
}

static void uring_free(struct ms_io *io)
{
	struct uring_io *u = (struct uring_io *)io;
	io_uring_queue_exit(&u->ring);
	if (u->efd >= 0)
		close(u->efd);
	free(u);
}

static const struct ms_io_ops uring_ops = {
	.name = "uring",
	.flush_start = uring_flush_start,
	.flush_reap = uring_flush_reap,
	.pread = ms_io_plain_pread,
	.pwrite = ms_io_plain_pwrite,
	.datasync = ms_io_plain_datasync,
	.truncate = ms_io_plain_truncate,
	.event_fd = uring_event_fd,
	.free = uring_free,
};

int ms_io_uring_new(unsigned entries, struct ms_io **io_r,
		    const char **error_r)
{
	struct uring_io *u = ms_calloc(1, sizeof(*u));
	int ret;

	if (entries < 8)
		entries = 8;
	ret = io_uring_queue_init(entries, &u->ring, 0);
	if (ret < 0) {
		*error_r = ms_errf("io_uring refused by the kernel or container "
				   "(%s); set io_engine = psync in [store] to "
				   "run without it",
				   strerror(-ret));
		free(u);
		return ret;
	}
	u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (u->efd >= 0 && io_uring_register_eventfd(&u->ring, u->efd) < 0) {
		close(u->efd);
		u->efd = -1;
	}
	u->io.ops = &uring_ops;
	*io_r = &u->io;
	return 0;
}
