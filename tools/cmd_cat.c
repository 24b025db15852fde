/*
 * cmd_cat - `mstore cat DIR SEG:OFF [--key KEYFILE]`: write the plain
 * bytes of the body record at SEG:OFF to stdout, after every check (the
 * record's XXH3 on a good copy, then the body's own: authentication when
 * sealed, LZ4, and the dedup key of the result).  Read-only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "body.h"
#include "log.h"
#include "msg.h"
#include "store_cfg.h"
#include "tools.h"

int cmd_cat(int argc, char **argv)
{
	const char *dir = NULL, *where = NULL, *keyfile = NULL, *err;
	const char *secondary = NULL;
	struct tool_store ts;
	uint8_t key[32];
	int ret = TOOL_FAILED;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
			keyfile = argv[++i];
		else if (strcmp(argv[i], "--secondary") == 0 && i + 1 < argc)
			secondary = argv[++i];
		else if (argv[i][0] != '-' && dir == NULL)
			dir = argv[i];
		else if (argv[i][0] != '-' && where == NULL)
			where = argv[i];
		else
			goto usage;
	}
	struct ms_pos pos;
	char *end;
	if (where == NULL && tool_cfg() != NULL) {
		where = dir; /* mstore -c FILE cat SEG:OFF */
		dir = NULL;
	}
	if (where == NULL)
		goto usage;
	pos.seg = strtoull(where, &end, 10);
	if (end == where || *end != ':' || where[0] == '-')
		goto usage;
	pos.off = strtoull(end + 1, &end, 10);
	if (*end != '\0')
		goto usage;
	if (tool_store_find(dir, secondary, 1, &ts) < 0)
		return TOOL_FAILED;
	if (keyfile == NULL && tool_cfg() != NULL)
		keyfile = tool_cfg()->key_file;
	if (keyfile != NULL && ms_body_key_load(keyfile, key, &err) < 0) {
		fprintf(stderr, "mstore cat: %s\n", err);
		return TOOL_FAILED;
	}
	ms_msg_set_level(MS_MSG_ERROR);
	struct ms_log_cfg cfg = { .dir = { ts.copy[0], ts.copy[1] },
				  .engine = MS_IO_PSYNC,
				  .readonly = 1 };
	struct ms_log *log;
	if (ms_log_open(&cfg, &log, &err) < 0) {
		fprintf(stderr, "mstore cat: %s\n", err);
		return TOOL_FAILED;
	}
	const struct ms_meta *m = ms_log_meta(log);
	struct ms_body_ctx bctx;
	struct ms_buf payload, plain;
	struct ms_rec_hdr h;
	ms_body_ctx_init(&bctx, m->store_id, m->salt, keyfile ? key : NULL, 0);
	ms_buf_init(&payload, MS_REC_MAX_PAYLOAD);
	ms_buf_init(&plain, MS_BODY_MAX_PLAIN);
	if (ms_log_read(log, pos, &h, &payload, &err) < 0) {
		fprintf(stderr, "mstore cat: %s\n", err);
		ret = TOOL_PROBLEMS;
	} else if (h.type != MS_REC_BODY) {
		fprintf(stderr, "mstore cat: %s is a %s record, not a body\n",
			where, ms_rec_type_name(h.type));
	} else if (ms_body_decode(&bctx, h.flags, payload.data, payload.len,
				  &plain, &err) < 0) {
		fprintf(stderr, "mstore cat: body at %s: %s\n", where, err);
		ret = TOOL_PROBLEMS;
	} else if ((plain.len > 0 &&
		    fwrite(plain.data, 1, plain.len, stdout) != plain.len) ||
		   fflush(stdout) != 0) {
		fprintf(stderr, "mstore cat: write: short\n");
	} else {
		ret = TOOL_OK;
	}
	ms_buf_free(&payload);
	ms_buf_free(&plain);
	ms_body_ctx_wipe(&bctx);
	ms_log_close(&log);
	return ret;
usage:
	fprintf(stderr, "usage: mstore cat DIR SEG:OFF [--key KEYFILE] "
			"[--secondary DIR2]\n");
	return TOOL_FAILED;
}
