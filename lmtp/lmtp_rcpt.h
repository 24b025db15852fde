/*
 * lmtp_rcpt.h - from a recipient address to a store user and mailbox.
 * Pure (table tested in tests/unit/test_lmtp_rcpt.c).
 *
 *   local@domain      domain must be one of the configured domains
 *                     (compared without regard to ASCII case; no
 *                     domains configured: every domain is local)
 *   "quoted local"    unquoted (quoted pairs resolved) before mapping
 *   user+detail       with the delimiter '+': user "user", mailbox
 *                     "detail" (the session falls back to INBOX when
 *                     that mailbox does not exist); "user+" is "user"
 *   Postmaster        without a domain (RFC 5321): user "postmaster"
 * With lowercase set, ASCII letters of the local part are lowered (the
 * detail keeps its case: mailbox names are case-sensitive).  The user
 * name must then keep the store's name rule (1..255 bytes of UTF-8, no
 * NUL, CR, LF), and a detail the mailbox name rule.
 */
#ifndef LMTP_RCPT_H
#define LMTP_RCPT_H

#include <stdbool.h>

#include "event.h"
#include "proto.h"

struct lmtp_rcpt_cfg {
	const char *const *domains; /* ndomains entries; 0: any domain */
	size_t ndomains;
	char delimiter; /* '\0': no detail mailboxes */
	bool lowercase;
};

struct lmtp_rcpt {
	char user[MS_EVENT_USER_NAME_MAX + 1];
	char detail[MS_EVENT_MBOX_NAME_MAX + 1]; /* "" = INBOX */
};

enum {
	LMTP_RCPT_EDOMAIN = -1, /* not one of our domains: 550 5.1.2 */
	LMTP_RCPT_ENAME = -2,   /* no valid user name in it: 550 5.1.1 */
};

/* addr: what lmtp_cmd_parse() gave for RCPT (local@domain or
   Postmaster).  0 with *r filled, or an LMTP_RCPT_E* code. */
int lmtp_rcpt_map(const struct lmtp_rcpt_cfg *cfg, struct ms_pstr addr,
		  struct lmtp_rcpt *r);

/* true if domain[0..len) equals one of the configured domains. */
bool lmtp_rcpt_domain_local(const struct lmtp_rcpt_cfg *cfg, const char *d,
			    size_t len);

#endif
