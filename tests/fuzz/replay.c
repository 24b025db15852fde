/*
 * replay.c - run files through a fuzz target without libFuzzer.
 *
 * usage: fuzz_<name>-replay PATH...
 *
 * Each PATH is a file, or a directory whose regular files (not starting
 * with '.') are run in name order; subdirectories are not entered.  Every
 * input is copied into a buffer of exactly its size, so a read past the end
 * is caught by ASan in `make asan`.  Prints "<prog>: N inputs" and exits 0
 * when every input ran; exits 1 if a path cannot be read, 2 on bad usage.
 *
 * DIAGNOSTICS: the name of each input goes to stderr before it runs, so
 * the input a sanitizer report is about is the last one named before the
 * report; after a crash, an abort or an ASan report, it is named again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

/* Inputs larger than this are refused rather than read. */
#define REPLAY_MAX_INPUT ((size_t)64 << 20)

/* Weak: present only in sanitizer builds / targets that define them. */
void __sanitizer_set_death_callback(void (*callback)(void))
	__attribute__((weak));
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static const char *current_input;
static const char *prog = "replay";

static void say_current(void)
{
	const char *p = current_input;

	if (p == NULL)
		return;
	/* async-signal-safe: write(2) only */
	if (write(STDERR_FILENO, prog, strlen(prog)) < 0 ||
	    write(STDERR_FILENO, ": died on input ", 16) < 0 ||
	    write(STDERR_FILENO, p, strlen(p)) < 0 ||
	    write(STDERR_FILENO, "\n", 1) < 0)
		return;
}

static void on_fatal_signal(int sig)
{
	say_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int run_file(const char *path)
{
	struct stat st;
	uint8_t *data = NULL;
	size_t size, got = 0;
	int fd, ret = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size > REPLAY_MAX_INPUT) {
		fprintf(stderr, "%s: %s: larger than %zu bytes\n", prog, path,
			REPLAY_MAX_INPUT);
		goto out;
	}
	size = (size_t)st.st_size;
	/* exactly size bytes (malloc(0) may return NULL: ask for 1) */
	data = malloc(size > 0 ? size : 1);
	if (data == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		goto out;
	}
	while (got < size) {
		ssize_t n = read(fd, data + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "%s: %s: %s\n", prog, path,
				n < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		got += (size_t)n;
	}
	fprintf(stderr, "%s: %s\n", prog, path);
	current_input = path;
	(void)LLVMFuzzerTestOneInput(data, size);
	current_input = NULL;
	ret = 0;
out:
	free(data);
	close(fd);
	return ret;
}

static int skip_name(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Run the regular files of dir in name order; count them into *count. */
static int run_dir(const char *dir, unsigned long *count)
{
	struct dirent **names;
	int n, ret = 0;

	n = scandir(dir, &names, skip_name, alphasort);
	if (n < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		if (snprintf(path, sizeof(path), "%s/%s", dir,
			     names[i]->d_name) >= (int)sizeof(path)) {
			fprintf(stderr, "%s: %s/%s: path too long\n", prog,
				dir, names[i]->d_name);
			ret = -1;
		} else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) < 0)
				ret = -1;
			else
				(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return ret;
}

int main(int argc, char **argv)
{
	static const int fatal[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL };
	unsigned long count = 0;
	int ret = 0;

	if (argc > 0 && argv[0] != NULL) {
		const char *slash = strrchr(argv[0], '/');
		prog = slash != NULL ? slash + 1 : argv[0];
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", prog);
		return 2;
	}
	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		signal(fatal[i], on_fatal_signal);
	if (__sanitizer_set_death_callback != NULL)
		__sanitizer_set_death_callback(say_current);
	if (LLVMFuzzerInitialize != NULL)
		(void)LLVMFuzzerInitialize(&argc, &argv);

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: %s: %s\n", prog, argv[i],
				strerror(errno));
			ret = 1;
		} else if (S_ISDIR(st.st_mode)) {
			if (run_dir(argv[i], &count) < 0)
				ret = 1;
		} else if (run_file(argv[i]) < 0) {
			ret = 1;
		} else {
			count++;
		}
	}
	printf("%s: %lu inputs\n", prog, count);
	return ret;
}
