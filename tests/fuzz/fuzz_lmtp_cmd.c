/*
 * fuzz_lmtp_cmd.c - libFuzzer target for the LMTP command parser
 * (lmtp/lmtp_cmd.c).
 *
 * The input is one command line (any bytes, NUL included).  Whatever
 * the parser returns must be 0 or one of its error codes, with a reason
 * for an error; on success every string it hands back must lie inside
 * the line, the xtext of XCLIENT/XFORWARD attributes must decode, and
 * what it calls an address must pass the same parser again when put
 * back into a RCPT or MAIL command.  Seeds: tests/fuzz/corpus/lmtp_cmd/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmtp_cmd.h"

static void inside(const uint8_t *data, size_t size, struct ms_pstr p)
{
	if (p.len == 0)
		return;
	if ((const uint8_t *)p.s < data ||
	    (const uint8_t *)p.s + p.len > data + size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmtp_cmd cmd;
	const char *err = NULL;
	int ret = lmtp_cmd_parse((const char *)data, size, &cmd, &err);
	if (ret < 0) {
		if (ret < LMTP_CMD_EPARAM || err == NULL || err[0] == '\0')
			abort();
		return 0;
	}
	if (ret != 0)
		abort();
	inside(data, size, cmd.arg);
	inside(data, size, cmd.addr);
	for (int i = 0; i < LMTP_X_COUNT; i++) {
		char out[LMTP_CMD_MAX_XVALUE + 1];
		if (!cmd.given[i])
			continue;
		inside(data, size, cmd.xattr[i]);
		if (lmtp_xtext_decode(cmd.xattr[i], out, sizeof(out)) < 0)
			abort();
	}
	if ((cmd.verb == LMTP_CMD_RCPT || cmd.verb == LMTP_CMD_MAIL) &&
	    cmd.addr.len > 0) {
		/* the address alone parses again, to the same address */
		char line[LMTP_CMD_MAX_PATH + 32];
		struct lmtp_cmd again;
		int n = snprintf(line, sizeof(line), "MAIL FROM:<%.*s> SMTPUTF8",
				 (int)cmd.addr.len, cmd.addr.s);
		if (n < 0 || (size_t)n >= sizeof(line))
			abort();
		if (memchr(cmd.addr.s, '\0', cmd.addr.len) != NULL)
			abort(); /* an address never holds NUL */
		if (cmd.verb == LMTP_CMD_RCPT && cmd.addr.len == 10 &&
		    memchr(cmd.addr.s, '@', cmd.addr.len) == NULL)
			return 0; /* <Postmaster> is RCPT only */
		if (lmtp_cmd_parse(line, (size_t)n, &again, &err) != 0 ||
		    again.addr.len != cmd.addr.len ||
		    memcmp(again.addr.s, cmd.addr.s, cmd.addr.len) != 0) {
			fprintf(stderr, "address does not parse again: %s\n",
				line);
			abort();
		}
	}
	return 0;
}
