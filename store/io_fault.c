/*
 * io_fault.c - fault-injecting engine for tests (cf. SQLite's test6.c and
 * test_vfs.c).  It wraps another engine for the synchronous calls and
 * runs flushes itself, synchronously, one copy after the other, so every
 * write and fdatasync passes through one place where a plan can fail it
 * (EIO on the Nth write or sync of a copy, once or for good), cut it short,
 * tear it at byte K and lose power, or lose power at the Nth sync.
 *
 * It remembers, for every file it wrote, how far the file was written and
 * how far the last completed fdatasync reached, so that after a simulated
 * power loss ms_io_fault_apply_loss() can make the files look like what a
 * disk may have kept: the synced prefix intact, the rest partly kept,
 * zeroed or garbage.  Not thread-safe; tests only.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "io.h"
#include "seg.h"

struct fault_file {
	dev_t dev;
	ino_t ino;
	char *path;
	uint64_t written_end;
	uint64_t synced_end;
};

struct fault_io {
	struct ms_io io;
	struct ms_io *inner;
	struct ms_fault_plan plan;
	unsigned long writes[MS_IO_COPIES], syncs[MS_IO_COPIES];
	unsigned long truncates[MS_IO_COPIES];
	unsigned long reads[MS_IO_COPIES];
	uint64_t read_end[MS_IO_COPIES];
	unsigned long writes_all, syncs_all;
	int dead[MS_IO_COPIES];
	int powered_off;
	struct fault_file *files;
	size_t nfiles;
};

static struct fault_file *fault_file(struct fault_io *f, int fd)
{
	struct stat st;
	char link[64], path[PATH_MAX];

	if (fstat(fd, &st) < 0)
		return NULL;
	for (size_t i = 0; i < f->nfiles; i++)
		if (f->files[i].dev == st.st_dev && f->files[i].ino == st.st_ino)
			return &f->files[i];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return NULL;
	path[n] = '\0';
	f->files = ms_realloc(f->files, (f->nfiles + 1) * sizeof(*f->files));
	struct fault_file *ff = &f->files[f->nfiles++];
	ff->dev = st.st_dev;
	ff->ino = st.st_ino;
	ff->path = ms_strdup(path);
	/* what was there before we saw it counts as durable */
	ff->written_end = ff->synced_end = (uint64_t)st.st_size;
	return ff;
}

static int fault_targets(const struct fault_io *f, int copy)
{
	return f->plan.copy < 0 || f->plan.copy == copy;
}

/* One write attempt: bytes written (maybe short) or -errno. */
static ssize_t fault_write_once(struct fault_io *f, int copy, int fd,
				const void *buf, size_t len, uint64_t off)
{
	if (f->powered_off)
		return -EIO;
	unsigned long n = ++f->writes[copy];
	unsigned long nall = ++f->writes_all;
	struct fault_file *ff = fault_file(f, fd);
	size_t todo = len;
	int lose_power = 0;

	if (f->plan.torn_write != 0 && f->plan.torn_write == nall) {
		todo = f->plan.torn_len < len ? f->plan.torn_len : len;
		lose_power = 1;
	} else if (fault_targets(f, copy)) {
		if (f->dead[copy] ||
		    (f->plan.fail_write != 0 && f->plan.fail_write == n)) {
			f->dead[copy] = f->plan.sticky;
			return -EIO;
		}
		if (f->plan.short_write != 0 && f->plan.short_write == n &&
		    f->plan.short_len < len)
			todo = f->plan.short_len;
	}
	int ret = todo ? f->inner->ops->pwrite(f->inner, copy, fd, buf, todo,
					       off)
		       : 0;
	if (ret == 0 && ff != NULL && off + todo > ff->written_end)
		ff->written_end = off + todo;
	if (lose_power) {
		f->powered_off = 1;
		return -EIO;
	}
	return ret < 0 ? ret : (ssize_t)todo;
}

static int fault_pwrite(struct ms_io *io, int copy, int fd, const void *buf,
			size_t len, uint64_t off)
{
	struct fault_io *f = (struct fault_io *)io;
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = fault_write_once(f, copy, fd, p, len, off);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int fault_datasync(struct ms_io *io, int copy, int fd)
{
	struct fault_io *f = (struct fault_io *)io;

	if (f->powered_off)
		return -EIO;
	unsigned long n = ++f->syncs[copy];
	unsigned long nall = ++f->syncs_all;
	if (f->plan.power_loss_sync != 0 && f->plan.power_loss_sync == nall) {
		f->powered_off = 1;
		return -EIO;
	}
	if (fault_targets(f, copy) &&
	    (f->dead[copy] ||
	     (f->plan.fail_sync != 0 && f->plan.fail_sync == n))) {
		f->dead[copy] = f->plan.sticky;
		return -EIO;
	}
	int ret = f->inner->ops->datasync(f->inner, copy, fd);
	struct fault_file *ff = fault_file(f, fd);
	if (ret == 0 && ff != NULL)
		ff->synced_end = ff->written_end;
	return ret;
}

static int fault_truncate(struct ms_io *io, int copy, int fd, uint64_t len)
{
	struct fault_io *f = (struct fault_io *)io;

	if (f->powered_off)
		return -EIO;
	unsigned long n = ++f->truncates[copy];
	if (fault_targets(f, copy) &&
	    (f->dead[copy] ||
	     (f->plan.fail_truncate != 0 && f->plan.fail_truncate == n))) {
		f->dead[copy] = f->plan.sticky;
		return -EIO;
	}
	int ret = f->inner->ops->truncate(f->inner, copy, fd, len);
	struct fault_file *ff = fault_file(f, fd);
	if (ret == 0 && ff != NULL) {
		if (ff->written_end > len)
			ff->written_end = len;
		if (ff->synced_end > len)
			ff->synced_end = len;
	}
	return ret;
}

static int fault_pread(struct ms_io *io, int copy, int fd, void *buf,
		       size_t len, uint64_t off)
{
	struct fault_io *f = (struct fault_io *)io;
	if (f->powered_off)
		return -EIO;
	if (copy >= 0 && copy < MS_IO_COPIES) {
		f->reads[copy]++;
		if (off + len > f->read_end[copy])
			f->read_end[copy] = off + len;
	}
	return f->inner->ops->pread(f->inner, copy, fd, buf, len, off);
}

static void fault_free(struct ms_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	for (size_t i = 0; i < f->nfiles; i++)
		free(f->files[i].path);
	free(f->files);
	ms_io_free(&f->inner);
	free(f);
}

static const struct ms_io_ops fault_ops = {
	.name = "fault",
	/* in turn, through fault_pwrite and fault_datasync */
	.flush_start = ms_io_turn_flush_start,
	.flush_reap = ms_io_turn_flush_reap,
	.pread = fault_pread,
	.pwrite = fault_pwrite,
	.datasync = fault_datasync,
	.truncate = fault_truncate,
	.event_fd = ms_io_no_event_fd,
	.free = fault_free,
};

int ms_io_fault_new(struct ms_io *inner, const struct ms_fault_plan *plan,
		    struct ms_io **io_r)
{
	struct fault_io *f = ms_calloc(1, sizeof(*f));
	f->io.ops = &fault_ops;
	f->inner = inner;
	f->plan = *plan;
	*io_r = &f->io;
	return 0;
}

int ms_io_fault_powered_off(struct ms_io *io)
{
	return ((struct fault_io *)io)->powered_off;
}

void ms_io_fault_power_off(struct ms_io *io)
{
	((struct fault_io *)io)->powered_off = 1;
}

unsigned long ms_io_fault_writes(struct ms_io *io, int copy)
{
	return ((struct fault_io *)io)->writes[copy];
}

unsigned long ms_io_fault_syncs(struct ms_io *io, int copy)
{
	return ((struct fault_io *)io)->syncs[copy];
}

unsigned long ms_io_fault_reads(struct ms_io *io, int copy)
{
	return ((struct fault_io *)io)->reads[copy];
}

uint64_t ms_io_fault_read_end(struct ms_io *io, int copy)
{
	struct fault_io *f = (struct fault_io *)io;
	uint64_t end = f->read_end[copy];
	f->read_end[copy] = 0;
	return end;
}

/* splitmix64: a small seeded generator, the same on every machine */
static uint64_t fault_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int ms_io_fault_apply_loss(struct ms_io *io, uint64_t seed)
{
	struct fault_io *f = (struct fault_io *)io;
	uint64_t rs = seed;
	uint8_t sector[512];

	for (size_t i = 0; i < f->nfiles; i++) {
		struct fault_file *ff = &f->files[i];
		struct stat st;
		int fd = open(ff->path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue; /* removed since: nothing to lose */
		if (fstat(fd, &st) < 0) {
			close(fd);
			return -errno;
		}
		uint64_t size = (uint64_t)st.st_size;
		uint64_t synced = ff->synced_end < size ? ff->synced_end : size;
		if (size > synced) {
			uint64_t cut = synced + fault_rand(&rs) % (size - synced + 1);
			for (uint64_t o = synced; o < cut; o += sizeof(sector)) {
				uint64_t r = fault_rand(&rs) % 8;
				size_t n = cut - o < sizeof(sector)
						   ? (size_t)(cut - o)
						   : sizeof(sector);
				if (r > 1)
					continue; /* this sector made it */
				for (size_t k = 0; k < n; k++)
					sector[k] = r == 0 ? 0
						  : (uint8_t)fault_rand(&rs);
				if (ms_pwrite_full(fd, sector, n, o) < 0)
					break;
			}
			if (ftruncate(fd, (off_t)cut) < 0) {
				int err = -errno;
				close(fd);
				return err;
			}
		}
		close(fd);
	}
	return 0;
}
