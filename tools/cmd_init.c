/*
 * cmd_init - `mstore init DIR`: create an empty store, with its two
 * copies in DIR/primary and DIR/secondary, or DIR and --secondary DIR2.
 * `mstore append` stores files as body records: a demo and test aid
 * until mstored takes writes (it prints where each record landed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "body.h"
#include "log.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

/*
 * Open (or, with create, make) the store named by the arguments: DIR, or
 * the [store] copies of `mstore -c FILE`, in which case every positional
 * argument is left for the caller (*first_file).  With a config, its
 * engine is used; the tools otherwise use psync.
 */
static int open_store(int argc, char **argv, int create, const char **key,
		      int *first_file, struct ms_log **log_r)
{
	const struct ms_store_cfg *conf = tool_cfg();
	const char *dir = NULL, *secondary = NULL;
	struct tool_store ts;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (key && strcmp(argv[i], "--key") == 0 && i + 1 < argc)
			*key = argv[++i];
		else if (argv[i][0] == '-')
			return -1;
		else if (dir == NULL && conf == NULL)
			dir = argv[i];
		else
			break;
	}
	if (dir == NULL && conf == NULL)
		return -1;
	*first_file = i;
	if (create && dir != NULL && secondary == NULL) {
		if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
			fprintf(stderr, "mstore: mkdir %s: %s\n", dir,
				strerror(errno));
			return -2;
		}
		snprintf(ts.primary, sizeof(ts.primary), "%s/primary", dir);
		snprintf(ts.secondary, sizeof(ts.secondary), "%s/secondary",
			 dir);
		ts.copy[0] = ts.primary;
		ts.copy[1] = ts.secondary;
	} else if (tool_store_find(dir, secondary, !create, &ts) < 0) {
		return -2;
	}
	struct ms_log_cfg cfg = { .engine = MS_IO_PSYNC };
	if (conf != NULL)
		ms_store_cfg_to_log(conf, &cfg);
	cfg.dir[0] = ts.copy[0];
	cfg.dir[1] = ts.copy[1];
	cfg.create = create;
	const char *err;
	if (ms_log_open(&cfg, log_r, &err) < 0) {
		fprintf(stderr, "mstore: %s\n", err);
		return -2;
	}
	return 0;
}

int cmd_init(int argc, char **argv)
{
	struct ms_log *log;
	int first;
	int ret = open_store(argc, argv, 1, NULL, &first, &log);
	if (ret < 0 || first != argc) {
		if (ret == 0)
			ms_log_close(&log);
		if (ret != -2)
			fprintf(stderr,
				"usage: mstore init DIR [--secondary DIR2]\n");
		return TOOL_FAILED;
	}
	const struct ms_meta *m = ms_log_meta(log);
	printf("store id ");
	for (int i = 0; i < MS_STORE_ID_SIZE; i++)
		printf("%02x", m->store_id[i]);
	printf("\n");
	ms_log_close(&log);
	return TOOL_OK;
}

int cmd_keygen(int argc, char **argv)
{
	const char *err;
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: mstore keygen KEYFILE\n");
		return TOOL_FAILED;
	}
	if (ms_body_key_generate(argv[1], &err) < 0) {
		fprintf(stderr, "mstore keygen: %s\n", err);
		return TOOL_FAILED;
	}
	printf("wrote %s (keep it outside the store, and back it up: "
	       "sealed bodies cannot be read without it)\n",
	       argv[1]);
	return TOOL_OK;
}

struct append_ctx {
	const char *file;
	int status;
};

static void on_done(void *ctx, int status, uint64_t seq, struct ms_pos pos)
{
	struct append_ctx *a = ctx;
	a->status = status;
	if (status == 0)
		printf("%s: %012" PRIu64 ":%" PRIu64 " seq=%" PRIu64 "\n",
		       a->file, pos.seg, pos.off, seq);
	else
		printf("%s: not stored: %s\n", a->file, ms_strerror(status));
}

int cmd_append(int argc, char **argv)
{
	struct ms_log *log;
	const char *keyfile = NULL, *err;
	int first, failed = 0;
	uint8_t key[32];
	struct ms_body_ctx bctx;
	struct ms_buf plain, payload;

	int ret = open_store(argc, argv, 0, &keyfile, &first, &log);
	if (ret < 0 || first == argc) {
		if (ret == 0)
			ms_log_close(&log);
		if (ret != -2)
			fprintf(stderr, "usage: mstore append DIR [--secondary "
					"DIR2] [--key KEYFILE] FILE...\n");
		return TOOL_FAILED;
	}
	const struct ms_store_cfg *conf = tool_cfg();
	if (keyfile == NULL && conf != NULL)
		keyfile = conf->key_file;
	if (keyfile != NULL && ms_body_key_load(keyfile, key, &err) < 0) {
		fprintf(stderr, "mstore append: %s\n", err);
		ms_log_close(&log);
		return TOOL_FAILED;
	}
	const struct ms_meta *m = ms_log_meta(log);
	ms_body_ctx_init(&bctx, m->store_id, m->salt, keyfile ? key : NULL,
			 conf ? conf->compress : 1);
	ms_buf_init(&plain, MS_BODY_MAX_PLAIN);
	ms_buf_init(&payload, MS_REC_MAX_PAYLOAD);
	struct append_ctx *ctx = ms_calloc((size_t)(argc - first),
					   sizeof(*ctx));
	for (int i = first; i < argc; i++) {
		struct append_ctx *a = &ctx[i - first];
		uint8_t flags = 0;
		a->file = argv[i];
		a->status = 1;
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		struct stat st;
		ms_buf_reset(&plain);
		if (fd < 0 || fstat(fd, &st) < 0 ||
		    ms_buf_resize(&plain, (size_t)st.st_size) < 0 ||
		    ms_pread_full(fd, plain.data, plain.len, 0) < 0) {
			printf("%s: cannot read: %s\n", argv[i],
			       strerror(errno));
			failed++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		close(fd);
		if (ms_body_encode(&bctx, plain.data, plain.len, &payload,
				   &flags) < 0 ||
		    ms_log_append(log, MS_REC_BODY, flags, payload.data,
				  (uint32_t)payload.len, on_done, a, NULL,
				  NULL) < 0) {
			printf("%s: too big or store not writable\n", argv[i]);
			failed++;
			continue;
		}
		ms_log_run(log, 0);
	}
	ms_log_sync(log);
	for (int i = first; i < argc; i++)
		failed += ctx[i - first].status < 0;
	free(ctx);
	ms_buf_free(&plain);
	ms_buf_free(&payload);
	ms_body_ctx_wipe(&bctx);
	ms_log_close(&log);
	return failed ? TOOL_PROBLEMS : TOOL_OK;
}
