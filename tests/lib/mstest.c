/*
 * mstest.c - see mstest.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mstest.h"

static char **tmpdirs;
static size_t ntmpdirs;

static void mst_cleanup(void)
{
	if (getenv("MS_KEEP") != NULL) {
		for (size_t i = 0; i < ntmpdirs; i++)
			fprintf(stderr, "kept %s\n", tmpdirs[i]);
		return;
	}
	for (size_t i = 0; i < ntmpdirs; i++) {
		mst_rmtree(tmpdirs[i]);
		free(tmpdirs[i]);
	}
	free(tmpdirs);
	tmpdirs = NULL;
	ntmpdirs = 0;
}

char *mst_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char path[4096];

	snprintf(path, sizeof(path), "%s/mstest-%s-XXXXXX",
		 base && *base ? base : "/tmp", tag);
	if (mkdtemp(path) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	if (ntmpdirs == 0)
		atexit(mst_cleanup);
	tmpdirs = realloc(tmpdirs, (ntmpdirs + 1) * sizeof(*tmpdirs));
	if (tmpdirs == NULL)
		abort();
	tmpdirs[ntmpdirs] = strdup(path);
	return tmpdirs[ntmpdirs++];
}

void mst_rmtree(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL) {
		unlink(path);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char sub[4096];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			mst_rmtree(sub);
		else
			unlink(sub);
	}
	closedir(d);
	rmdir(path);
}

uint64_t mst_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t mst_randn(uint64_t *s, uint64_t n)
{
	return n ? mst_rand(s) % n : 0;
}

void mst_fill(uint8_t *buf, size_t len, uint64_t key)
{
	uint64_t s = key * 0x2545f4914f6cdd1dULL + len;
	size_t i = 0;
	while (i < len) {
		uint64_t v = mst_rand(&s);
		for (int k = 0; k < 8 && i < len; k++, i++)
			buf[i] = (uint8_t)(v >> (8 * k));
	}
}

int mst_files_equal(const char *a, const char *b, const char **why_r)
{
	static char why[600];
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	int eq = 1;
	long long off = 0;

	if (fa == NULL || fb == NULL) {
		snprintf(why, sizeof(why), "%s missing", fa ? b : a);
		eq = 0;
	}
	while (eq) {
		int ca = fgetc(fa), cb = fgetc(fb);
		if (ca != cb) {
			snprintf(why, sizeof(why),
				 "%s and %s differ at byte %lld", a, b, off);
			eq = 0;
		}
		if (ca == EOF || cb == EOF)
			break;
		off++;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	if (!eq && why_r)
		*why_r = why;
	return eq;
}

static int cmp_name(const void *x, const void *y)
{
	return strcmp((const char *)x, (const char *)y);
}

static size_t list_segs(const char *root, char names[][32], size_t max)
{
	char path[4096];
	size_t n = 0;
	snprintf(path, sizeof(path), "%s/log", root);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < max) {
		size_t l = strlen(de->d_name);
		if (l == 16 && strcmp(de->d_name + 12, ".seg") == 0)
			memcpy(names[n++], de->d_name, l + 1);
	}
	closedir(d);
	qsort(names, n, 32, cmp_name);
	return n;
}

int mst_copies_equal(const char *a, const char *b, const char **why_r)
{
	static char why[600];
	static char na[4096][32], nb[4096][32];
	size_t n = list_segs(a, na, 4096), m = list_segs(b, nb, 4096);

	if (n != m) {
		snprintf(why, sizeof(why), "%zu segment files in %s, %zu in %s",
			 n, a, m, b);
		*why_r = why;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		char pa[4200], pb[4200];
		if (strcmp(na[i], nb[i]) != 0) {
			snprintf(why, sizeof(why), "segment %s vs %s", na[i],
				 nb[i]);
			*why_r = why;
			return 0;
		}
		snprintf(pa, sizeof(pa), "%s/log/%s", a, na[i]);
		snprintf(pb, sizeof(pb), "%s/log/%s", b, nb[i]);
		if (!mst_files_equal(pa, pb, why_r))
			return 0;
	}
	return 1;
}

int mst_flip(const char *path, uint64_t off, uint8_t x)
{
	uint8_t c;
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	int ret = 0;
	if (pread(fd, &c, 1, (off_t)off) != 1)
		ret = -EIO;
	c ^= x;
	if (ret == 0 && pwrite(fd, &c, 1, (off_t)off) != 1)
		ret = -EIO;
	close(fd);
	return ret;
}

long long mst_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) < 0 ? -1 : (long long)st.st_size;
}

uint64_t mst_seed(uint64_t def)
{
	const char *s = getenv("MS_SEED");
	return s && *s ? strtoull(s, NULL, 0) : def;
}

unsigned long mst_rounds(unsigned long normal, unsigned long stress)
{
	const char *s = getenv("MS_ROUNDS");
	if (s && *s)
		return strtoul(s, NULL, 0);
	return getenv("MS_STRESS") != NULL ? stress : normal;
}

void mst_skip(const char *reason)
{
	printf("SKIP: %s\n", reason);
	exit(77);
}

/*
 * One fio run of write + fdatasync per block; write IOPS and KiB/s from
 * terse v3 fields 49 and 48.  overwrite: into a file written beforehand.
 */
int mst_fio(const char *dir, const char *bs, double secs, int overwrite,
	    double *iops_r, double *kbs_r)
{
	char cmd[8192], line[8192], path[4200];
	snprintf(path, sizeof(path), "%s/fio.dat", dir);
	unlink(path);
	if (overwrite) {
		snprintf(cmd, sizeof(cmd),
			 "dd if=/dev/zero of=%s bs=1M count=1024 conv=fsync "
			 "status=none",
			 path);
		if (system(cmd) != 0)
			return -1;
	}
	snprintf(cmd, sizeof(cmd),
		 "fio --name=ms --filename=%s --rw=write --bs=%s "
		 "--size=%s --fdatasync=1 --ioengine=psync --runtime=%.0f "
		 "--time_based --fallocate=none --output-format=terse "
		 "--terse-version=3 2>/dev/null",
		 path, bs, overwrite ? "1G" : "16G", secs < 1 ? 1 : secs);
	FILE *p = popen(cmd, "r");
	if (p == NULL)
		return -1;
	int ok = fgets(line, sizeof(line), p) != NULL;
	pclose(p);
	unlink(path);
	if (!ok)
		return -1;
	char *save = NULL, *f = strtok_r(line, ";", &save);
	for (int i = 1; f != NULL; i++, f = strtok_r(NULL, ";", &save)) {
		if (i == 48)
			*kbs_r = strtod(f, NULL);
		if (i == 49) {
			*iops_r = strtod(f, NULL);
			return 0;
		}
	}
	return -1;
}

int mst_env_double(const char *prog, const char *name, double def, double lo,
		   double hi, double *v_r)
{
	const char *s = getenv(name);
	char *end;

	if (s == NULL || *s == '\0') {
		*v_r = def;
		return 0;
	}
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !(v >= lo && v <= hi)) {
		fprintf(stderr, "%s: %s=%s: not a number in %g..%g\n", prog,
			name, s, lo, hi);
		return -1;
	}
	*v_r = v;
	return 0;
}
