/*
 * lmtp_rcpt.c - recipient address to user and mailbox; see lmtp_rcpt.h.
 */
#include <strings.h>

#include "lmtp_rcpt.h"

bool lmtp_rcpt_domain_local(const struct lmtp_rcpt_cfg *cfg, const char *d,
			    size_t len)
{
	if (cfg->ndomains == 0)
		return true;
	for (size_t i = 0; i < cfg->ndomains; i++)
		if (strlen(cfg->domains[i]) == len &&
		    strncasecmp(cfg->domains[i], d, len) == 0)
			return true;
	return false;
}

/* The local part, unquoted, into out (NUL-terminated); -1 if too long. */
static int unquote(const char *s, size_t len, char *out, size_t outsize)
{
	size_t o = 0;
	bool quoted = len >= 2 && s[0] == '"' && s[len - 1] == '"';
	size_t i = quoted ? 1 : 0, end = quoted ? len - 1 : len;
	for (; i < end; i++) {
		char ch = s[i];
		if (quoted && ch == '\\' && i + 1 < end)
			ch = s[++i];
		if (o + 1 >= outsize)
			return -1;
		out[o++] = ch;
	}
	out[o] = '\0';
	return (int)o;
}

int lmtp_rcpt_map(const struct lmtp_rcpt_cfg *cfg, struct ms_pstr addr,
		  struct lmtp_rcpt *r)
{
	char local[MS_EVENT_USER_NAME_MAX + MS_EVENT_MBOX_NAME_MAX + 2] = { 0 };
	size_t at = addr.len;

	/* the last '@' outside quotes: a quoted local part may hold '@' */
	while (at > 0 && addr.s[at - 1] != '@' && addr.s[at - 1] != '"')
		at--;
	if (at == 0 || addr.s[at - 1] != '@') {
		/* no domain: only <Postmaster> parses that way */
		if (addr.len != 10 ||
		    strncasecmp(addr.s, "postmaster", 10) != 0)
			return LMTP_RCPT_ENAME;
		memcpy(r->user, "postmaster", 11);
		r->detail[0] = '\0';
		return 0;
	}
	if (!lmtp_rcpt_domain_local(cfg, addr.s + at, addr.len - at))
		return LMTP_RCPT_EDOMAIN;
	int n = unquote(addr.s, at - 1, local, sizeof(local));
	if (n <= 0)
		return LMTP_RCPT_ENAME;
	size_t ulen = (size_t)n;
	const char *detail = NULL;
	size_t dlen = 0;
	if (cfg->delimiter != '\0') {
		char *d = memchr(local, cfg->delimiter, (size_t)n);
		if (d != NULL) {
			ulen = (size_t)(d - local);
			detail = d + 1;
			dlen = (size_t)n - ulen - 1;
		}
	}
	if (!ms_event_name_valid(local, ulen, MS_EVENT_USER_NAME_MAX) ||
	    (dlen > 0 &&
	     !ms_event_name_valid(detail, dlen, MS_EVENT_MBOX_NAME_MAX)))
		return LMTP_RCPT_ENAME;
	for (size_t i = 0; i < ulen; i++) {
		char ch = local[i];
		if (cfg->lowercase && ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		r->user[i] = ch;
	}
	r->user[ulen] = '\0';
	if (dlen > 0)
		memcpy(r->detail, detail, dlen);
	r->detail[dlen] = '\0';
	return 0;
}
