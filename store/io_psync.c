/*
 * io_psync.c - the plain engine: pwrite + fdatasync, one copy after the
 * other, synchronously in flush_start.  Same formats and results as
 * io_uring; for kernels and containers that refuse io_uring.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "buf.h"
#include "io.h"
#include "seg.h"

uint8_t ms_io_zeros[MS_IO_ZEROS];

int ms_io_plain_pread(struct ms_io *io, int copy, int fd, void *buf,
		       size_t len, uint64_t off)
{
	(void)io;
	(void)copy;
	return ms_pread_full(fd, buf, len, off);
}

int ms_io_plain_pwrite(struct ms_io *io, int copy, int fd, const void *buf,
			size_t len, uint64_t off)
{
	(void)io;
	(void)copy;
	return ms_pwrite_full(fd, buf, len, off);
}

int ms_io_plain_datasync(struct ms_io *io, int copy, int fd)
{
	(void)io;
	(void)copy;
	return fdatasync(fd) < 0 ? -errno : 0;
}

int ms_io_plain_truncate(struct ms_io *io, int copy, int fd, uint64_t len)
{
	(void)io;
	(void)copy;
	return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

int ms_io_turn_flush_start(struct ms_io *io, struct ms_io_flush *f)
{
	for (int c = 0; c < MS_IO_COPIES; c++) {
		if (f->fd[c] < 0) {
			f->res[c] = 0;
			continue;
		}
		int ret = io->ops->pwrite(io, c, f->fd[c], f->buf, f->len,
					  f->off);
		f->zres[c] = -ECANCELED;
		if (ret == 0 && f->zlen[c] > 0)
			f->zres[c] = io->ops->pwrite(io, c, f->fd[c],
						     ms_io_zeros, f->zlen[c],
						     f->zoff[c]);
		if (ret == 0)
			ret = io->ops->datasync(io, c, f->fd[c]);
		f->res[c] = ret;
	}
	f->pending = 0;
	return 0;
}

int ms_io_turn_flush_reap(struct ms_io *io, struct ms_io_flush *f, int block)
{
	(void)io;
	(void)f;
	(void)block;
	return 1;
}

int ms_io_no_event_fd(struct ms_io *io)
{
	(void)io;
	return -1;
}

static void psync_free(struct ms_io *io)
{
	free(io);
}

static const struct ms_io_ops psync_ops = {
	.name = "psync",
	.flush_start = ms_io_turn_flush_start,
	.flush_reap = ms_io_turn_flush_reap,
	.pread = ms_io_plain_pread,
	.pwrite = ms_io_plain_pwrite,
	.datasync = ms_io_plain_datasync,
	.truncate = ms_io_plain_truncate,
	.event_fd = ms_io_no_event_fd,
	.free = psync_free,
};

int ms_io_psync_new(struct ms_io **io_r)
{
	struct ms_io *io = ms_calloc(1, sizeof(*io));
	io->ops = &psync_ops;
	*io_r = io;
	return 0;
}
