/*
 * mstest.h - helpers shared by the C tests: scratch directories that are
 * removed at exit, a seeded generator, deterministic contents, file
 * comparison and byte flipping.  Test programs exit 0 pass, 1 fail,
 * 77 skip (mst_skip prints why).
 */
#ifndef MSTEST_H
#define MSTEST_H

#include <stddef.h>
#include <stdint.h>

/* A new empty directory under $TMPDIR (or /tmp), removed at exit unless
   MS_KEEP is set in the environment.  Never fails (exits instead). */
char *mst_tmpdir(const char *tag);
/* rm -rf of a directory we made. */
void mst_rmtree(const char *path);

uint64_t mst_rand(uint64_t *state);
/* 0..n-1 */
uint64_t mst_randn(uint64_t *state, uint64_t n);
/* Fill buf with bytes that depend only on key (and len). */
void mst_fill(uint8_t *buf, size_t len, uint64_t key);

/* 1 if both files exist and hold the same bytes; *why_r says otherwise. */
int mst_files_equal(const char *a, const char *b, const char **why_r);
/* 1 if two copy roots hold the same segment files, byte for byte. */
int mst_copies_equal(const char *a, const char *b, const char **why_r);
/* XOR the byte at off with x. 0 or -errno. */
int mst_flip(const char *path, uint64_t off, uint8_t x);
/* Size of a file, or -1. */
long long mst_file_size(const char *path);
/* Seed from MS_SEED in the environment, else def. */
uint64_t mst_seed(uint64_t def);
/* A number from the environment: def when name is unset or empty;
   -1 (with a line on stderr naming prog) when it is not in lo..hi. */
int mst_env_double(const char *prog, const char *name, double def, double lo,
		   double hi, double *v_r);
/* Rounds: MS_STRESS set → stress, else normal. */
unsigned long mst_rounds(unsigned long normal, unsigned long stress);

void mst_skip(const char *reason) __attribute__((noreturn));

/*
 * Benchmarks: one fio run of write + fdatasync per block of bs in dir
 * (appending to a new file, or overwriting one written beforehand), for
 * secs seconds.  0 with write IOPS and KiB/s, -1 if fio failed.
 */
int mst_fio(const char *dir, const char *bs, double secs, int overwrite,
	    double *iops_r, double *kbs_r);

#endif
