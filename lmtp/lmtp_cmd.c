/*
 * lmtp_cmd.c - the LMTP command parser; see lmtp_cmd.h.
 *
 * A cursor (struct cur) walks the line; every step checks what is left
 * before it looks at a byte, and every length is bounded by the limits
 * in lmtp_cmd.h.  Nothing is copied or allocated.
 */
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "lmtp_cmd.h"

struct cur {
	const unsigned char *s;
	size_t len, pos;
	const char *why;
};

static int peek(const struct cur *c)
{
	return c->pos < c->len ? c->s[c->pos] : -1;
}

static bool eat(struct cur *c, int ch)
{
	if (peek(c) != ch)
		return false;
	c->pos++;
	return true;
}

static bool at_end(const struct cur *c)
{
	return c->pos == c->len;
}

/* ---- characters ---- */

/* Length of the valid UTF-8 sequence at p (a non-ASCII lead byte), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	unsigned char b = p[0];
	size_t n;
	uint32_t cp;

	if (b >= 0xc2 && b <= 0xdf) {
		n = 2;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		n = 3;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		n = 4;
		cp = b & 0x07;
	} else {
		return 0;
	}
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

bool lmtp_utf8_printable(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		if (p[i] < 0x80) {
			if (p[i] < 0x20 || p[i] == 0x7f)
				return false;
			i++;
			continue;
		}
		size_t n = utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* Eat one UTF-8 character at the cursor; false if it is not one. */
static bool eat_utf8(struct cur *c, bool *utf8)
{
	if (c->pos >= c->len || c->s[c->pos] < 0x80)
		return false;
	size_t n = utf8_seq(c->s + c->pos, c->len - c->pos);
	if (n == 0)
		return false;
	c->pos += n;
	*utf8 = true;
	return true;
}

static bool is_alnum(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9');
}

/* RFC 5322 atext */
static bool is_atext(int ch)
{
	/* ch > 0: strchr() would find the terminator for 0 */
	return ch > 0 &&
	       (is_alnum(ch) || strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* ---- addresses ---- */

/* Atom *("." Atom), atext or UTF-8 */
static bool parse_dot_string(struct cur *c, bool *utf8)
{
	for (;;) {
		size_t start = c->pos;
		for (;;) {
			int ch = peek(c);
			if (ch >= 0 && ch < 0x80 && is_atext(ch))
				c->pos++;
			else if (!eat_utf8(c, utf8))
				break;
		}
		if (c->pos == start)
			return false;
		if (!eat(c, '.'))
			return true;
	}
}

/* DQUOTE *(qtextSMTP / quoted-pairSMTP / UTF-8) DQUOTE */
static bool parse_quoted(struct cur *c, bool *utf8)
{
	if (!eat(c, '"'))
		return false;
	for (;;) {
		int ch = peek(c);
		if (ch == '"') {
			c->pos++;
			return true;
		}
		if (ch == '\\') {
			c->pos++;
			ch = peek(c);
			if (ch < 32 || ch > 126)
				return false;
			c->pos++;
		} else if (ch >= 32 && ch <= 126) {
			c->pos++;
		} else if (!eat_utf8(c, utf8)) {
			return false;
		}
	}
}

/* sub-domain *("." sub-domain), or "[" dtext "]" */
static bool parse_domain(struct cur *c, bool *utf8)
{
	size_t start = c->pos;
	if (eat(c, '[')) {
		size_t lit = c->pos;
		for (;;) {
			int ch = peek(c);
			if (ch == ']')
				break;
			if (ch < 33 || ch > 126 || ch == '[' || ch == '\\')
				return false;
			c->pos++;
		}
		if (c->pos == lit)
			return false;
		c->pos++;
	} else {
		for (;;) {
			size_t lab = c->pos;
			int last = -1;
			for (;;) {
				int ch = peek(c);
				if (ch >= 0 && ch < 0x80 &&
				    (is_alnum(ch) || ch == '-')) {
					c->pos++;
					last = ch;
				} else if (eat_utf8(c, utf8)) {
					last = 'x';
				} else {
					break;
				}
			}
			if (c->pos == lab || c->s[lab] == '-' || last == '-')
				return false;
			if (!eat(c, '.'))
				break;
		}
	}
	return c->pos - start <= LMTP_CMD_MAX_DOMAIN;
}

/*
 * "<" [ A-d-l ":" ] Mailbox ">", or "<>" (null_ok), or "<Postmaster>"
 * (postmaster_ok).  The mailbox (without route and brackets) goes to
 * *addr_r.
 */
static bool parse_path(struct cur *c, bool null_ok, bool postmaster_ok,
		       struct ms_pstr *addr_r, bool *utf8)
{
	size_t start = c->pos;
	if (!eat(c, '<'))
		return false;
	if (peek(c) == '>') {
		c->pos++;
		*addr_r = (struct ms_pstr){ "", 0 };
		return null_ok;
	}
	if (peek(c) == '@') {
		/* a source route: accepted and dropped */
		do {
			if (!eat(c, '@') || !parse_domain(c, utf8))
				return false;
		} while (eat(c, ','));
		if (!eat(c, ':'))
			return false;
	}
	size_t mbox = c->pos;
	bool ok = peek(c) == '"' ? parse_quoted(c, utf8)
				 : parse_dot_string(c, utf8);
	if (!ok || c->pos - mbox > LMTP_CMD_MAX_LOCAL)
		return false;
	if (postmaster_ok && peek(c) == '>' && c->pos - mbox == 10 &&
	    strncasecmp((const char *)c->s + mbox, "postmaster", 10) == 0) {
		/* RFC 5321 4.5.1: <Postmaster> without a domain */
	} else if (!eat(c, '@') || !parse_domain(c, utf8)) {
		return false;
	}
	size_t end = c->pos;
	if (!eat(c, '>') || c->pos - start > LMTP_CMD_MAX_PATH)
		return false;
	*addr_r = (struct ms_pstr){ (const char *)c->s + mbox, end - mbox };
	return true;
}

/* ---- parameters ---- */

struct param {
	struct ms_pstr key, value; /* value.s NULL: no "=value" */
};

/* SP esmtp-keyword ["=" esmtp-value]; false at the end of the line. */
static int next_param(struct cur *c, struct param *p, bool *utf8)
{
	if (at_end(c))
		return 0;
	if (!eat(c, ' '))
		return -1;
	while (eat(c, ' ')) /* tolerate extra blanks between parameters */
		;
	if (at_end(c))
		return 0;
	size_t k = c->pos;
	while (is_alnum(peek(c)) || (peek(c) == '-' && c->pos > k))
		c->pos++;
	if (c->pos == k)
		return -1;
	p->key = (struct ms_pstr){ (const char *)c->s + k, c->pos - k };
	p->value = (struct ms_pstr){ NULL, 0 };
	if (!eat(c, '='))
		return at_end(c) || peek(c) == ' ' ? 1 : -1;
	size_t v = c->pos;
	for (;;) {
		int ch = peek(c);
		if (ch >= 33 && ch <= 126 && ch != '=')
			c->pos++;
		else if (!eat_utf8(c, utf8))
			break;
	}
	if (c->pos == v || !(at_end(c) || peek(c) == ' '))
		return -1;
	p->value = (struct ms_pstr){ (const char *)c->s + v, c->pos - v };
	return 1;
}

static bool key_is(struct ms_pstr k, const char *name)
{
	return k.len == strlen(name) && strncasecmp(k.s, name, k.len) == 0;
}

static int mail_params(struct cur *c, struct lmtp_cmd *cmd)
{
	struct param p;
	bool utf8 = false;
	int r;
	while ((r = next_param(c, &p, &utf8)) > 0) {
		if (key_is(p.key, "SIZE")) {
			if (cmd->has_size || p.value.s == NULL ||
			    p.value.len > 20 ||
			    ms_parse_u64(p.value.s, p.value.len, &cmd->size) <
				    0) {
				c->why = "bad SIZE parameter";
				return LMTP_CMD_ESYNTAX;
			}
			cmd->has_size = true;
		} else if (key_is(p.key, "BODY")) {
			if (cmd->body != LMTP_BODY_NONE || p.value.s == NULL) {
				c->why = "bad BODY parameter";
				return LMTP_CMD_ESYNTAX;
			}
			if (key_is(p.value, "7BIT")) {
				cmd->body = LMTP_BODY_7BIT;
			} else if (key_is(p.value, "8BITMIME")) {
				cmd->body = LMTP_BODY_8BITMIME;
			} else {
				c->why = "only BODY=7BIT and BODY=8BITMIME "
					 "are supported";
				return LMTP_CMD_EPARAM;
			}
		} else if (key_is(p.key, "SMTPUTF8")) {
			if (cmd->smtputf8 || p.value.s != NULL) {
				c->why = "bad SMTPUTF8 parameter";
				return LMTP_CMD_ESYNTAX;
			}
			cmd->smtputf8 = true;
		} else {
			c->why = "unsupported MAIL parameter";
			return LMTP_CMD_EPARAM;
		}
	}
	if (r < 0) {
		c->why = "bad MAIL parameter syntax";
		return LMTP_CMD_ESYNTAX;
	}
	return 0;
}

/* ---- XCLIENT, XFORWARD ---- */

static const char *const xattr_names[LMTP_X_COUNT] = {
	[LMTP_X_NAME] = "NAME",		[LMTP_X_ADDR] = "ADDR",
	[LMTP_X_PORT] = "PORT",		[LMTP_X_PROTO] = "PROTO",
	[LMTP_X_HELO] = "HELO",		[LMTP_X_LOGIN] = "LOGIN",
	[LMTP_X_DESTADDR] = "DESTADDR", [LMTP_X_DESTPORT] = "DESTPORT",
	[LMTP_X_IDENT] = "IDENT",	[LMTP_X_SOURCE] = "SOURCE",
};

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

int lmtp_xtext_decode(struct ms_pstr in, char *out, size_t outsize)
{
	size_t o = 0;
	if (outsize == 0)
		return -1;
	for (size_t i = 0; i < in.len; i++) {
		int ch = (unsigned char)in.s[i];
		if (ch == '+') {
			if (in.len - i < 3 || hexval(in.s[i + 1]) < 0 ||
			    hexval(in.s[i + 2]) < 0)
				return -1;
			ch = hexval(in.s[i + 1]) * 16 + hexval(in.s[i + 2]);
			i += 2;
		} else if (ch < 33 || ch > 126 || ch == '=') {
			return -1;
		}
		if (o + 1 >= outsize)
			return -1;
		out[o++] = (char)(ch < 0x20 || ch > 0x7e ? '?' : ch);
	}
	out[o] = '\0';
	return (int)o;
}

static bool xtext_valid(struct ms_pstr v)
{
	char tmp[LMTP_CMD_MAX_XVALUE + 1];
	return v.len <= LMTP_CMD_MAX_XVALUE &&
	       lmtp_xtext_decode(v, tmp, sizeof(tmp)) >= 0;
}

static int x_attrs(struct cur *c, struct lmtp_cmd *cmd)
{
	bool xforward = cmd->verb == LMTP_CMD_XFORWARD;
	struct param p;
	bool utf8 = false;
	int r, n = 0;
	while ((r = next_param(c, &p, &utf8)) > 0) {
		int i;
		for (i = 0; i < LMTP_X_COUNT; i++)
			if (key_is(p.key, xattr_names[i]))
				break;
		bool allowed =
			i < LMTP_X_COUNT &&
			(xforward ? (i != LMTP_X_LOGIN && i != LMTP_X_DESTADDR &&
				     i != LMTP_X_DESTPORT)
				  : (i != LMTP_X_IDENT && i != LMTP_X_SOURCE));
		if (!allowed) {
			c->why = "unknown attribute";
			return LMTP_CMD_ESYNTAX;
		}
		if (cmd->given[i] || p.value.s == NULL || utf8 ||
		    !xtext_valid(p.value)) {
			c->why = "bad attribute value";
			return LMTP_CMD_ESYNTAX;
		}
		cmd->given[i] = true;
		cmd->xattr[i] = p.value;
		n++;
	}
	if (r < 0 || n == 0) {
		c->why = "expected attribute=value";
		return LMTP_CMD_ESYNTAX;
	}
	return 0;
}

/* ---- commands ---- */

static const struct {
	const char *name;
	enum lmtp_verb verb;
} verbs[] = {
	{ "LHLO", LMTP_CMD_LHLO },	  { "HELO", LMTP_CMD_HELO },
	{ "EHLO", LMTP_CMD_EHLO },	  { "MAIL", LMTP_CMD_MAIL },
	{ "RCPT", LMTP_CMD_RCPT },	  { "DATA", LMTP_CMD_DATA },
	{ "BDAT", LMTP_CMD_BDAT },	  { "RSET", LMTP_CMD_RSET },
	{ "NOOP", LMTP_CMD_NOOP },	  { "QUIT", LMTP_CMD_QUIT },
	{ "VRFY", LMTP_CMD_VRFY },	  { "XCLIENT", LMTP_CMD_XCLIENT },
	{ "XFORWARD", LMTP_CMD_XFORWARD },
};

const char *lmtp_cmd_verb_name(enum lmtp_verb verb)
{
	for (size_t i = 0; i < MS_ARRAY_SIZE(verbs); i++)
		if (verbs[i].verb == verb)
			return verbs[i].name;
	return "?";
}

/* The rest of the line after one space, as the argument. */
static struct ms_pstr rest(const struct cur *c)
{
	return (struct ms_pstr){ (const char *)c->s + c->pos,
				 c->len - c->pos };
}

static int parse_mail_rcpt(struct cur *c, struct lmtp_cmd *cmd)
{
	bool mail = cmd->verb == LMTP_CMD_MAIL;
	const char *kw = mail ? "FROM:" : "TO:";
	size_t kl = strlen(kw);
	if (!eat(c, ' ') || c->len - c->pos < kl ||
	    strncasecmp((const char *)c->s + c->pos, kw, kl) != 0) {
		c->why = mail ? "expected MAIL FROM:<address>"
			      : "expected RCPT TO:<address>";
		return LMTP_CMD_ESYNTAX;
	}
	c->pos += kl;
	eat(c, ' ');
	if (!parse_path(c, mail, !mail, &cmd->addr, &cmd->addr_utf8)) {
		c->why = mail ? "bad sender address syntax"
			      : "bad recipient address syntax";
		return LMTP_CMD_EADDR;
	}
	if (mail)
		return mail_params(c, cmd);
	if (!at_end(c)) {
		struct param p;
		bool utf8 = false;
		if (next_param(c, &p, &utf8) > 0) {
			c->why = "RCPT parameters are not supported";
			return LMTP_CMD_EPARAM;
		}
		c->why = "bad RCPT syntax";
		return LMTP_CMD_ESYNTAX;
	}
	return 0;
}

static int parse_bdat(struct cur *c, struct lmtp_cmd *cmd)
{
	if (!eat(c, ' ')) {
		c->why = "expected BDAT size [LAST]";
		return LMTP_CMD_ESYNTAX;
	}
	size_t d = c->pos;
	while (peek(c) >= '0' && peek(c) <= '9')
		c->pos++;
	if (c->pos == d || c->pos - d > 20 ||
	    ms_parse_u64((const char *)c->s + d, c->pos - d, &cmd->chunk) < 0 ||
	    cmd->chunk > LMTP_CMD_MAX_CHUNK) {
		c->why = "bad BDAT size";
		return LMTP_CMD_ESYNTAX;
	}
	if (at_end(c))
		return 0;
	if (c->len - c->pos == 5 &&
	    strncasecmp((const char *)c->s + c->pos, " LAST", 5) == 0) {
		cmd->last = true;
		c->pos = c->len;
		return 0;
	}
	c->why = "expected BDAT size [LAST]";
	return LMTP_CMD_ESYNTAX;
}

/* LHLO domain, VRFY string: one space, then 1..255 printable bytes */
static int parse_text_arg(struct cur *c, struct lmtp_cmd *cmd, bool blanks)
{
	if (!eat(c, ' ') || at_end(c)) {
		c->why = "argument required";
		return LMTP_CMD_ESYNTAX;
	}
	cmd->arg = rest(c);
	if (cmd->arg.len > 255 || !lmtp_utf8_printable(cmd->arg.s, cmd->arg.len) ||
	    (!blanks && memchr(cmd->arg.s, ' ', cmd->arg.len) != NULL)) {
		c->why = "bad argument";
		return LMTP_CMD_ESYNTAX;
	}
	c->pos = c->len;
	return 0;
}

int lmtp_cmd_parse(const char *line, size_t len, struct lmtp_cmd *cmd_r,
		   const char **error_r)
{
	struct cur c = { (const unsigned char *)line, len, 0, "" };
	struct lmtp_cmd cmd;
	size_t vl = 0;
	int ret = 0;

	memset(&cmd, 0, sizeof(cmd));
	/* the verb: the leading letters (what follows is checked later) */
	while (vl < len && ((line[vl] >= 'A' && line[vl] <= 'Z') ||
			    (line[vl] >= 'a' && line[vl] <= 'z')))
		vl++;
	for (size_t i = 0; i < MS_ARRAY_SIZE(verbs); i++) {
		if (strlen(verbs[i].name) == vl &&
		    strncasecmp(line, verbs[i].name, vl) == 0) {
			cmd.verb = verbs[i].verb;
			break;
		}
	}
	if (cmd.verb == 0) {
		*error_r = "command not recognized";
		return LMTP_CMD_EUNKNOWN;
	}
	if (vl < len && line[vl] != ' ') {
		*error_r = "bad character after the command"; /* "DATA\0" */
		return LMTP_CMD_ESYNTAX;
	}
	c.pos = vl;
	switch (cmd.verb) {
	case LMTP_CMD_LHLO:
	case LMTP_CMD_HELO:
	case LMTP_CMD_EHLO:
		ret = parse_text_arg(&c, &cmd, false);
		break;
	case LMTP_CMD_VRFY:
		ret = parse_text_arg(&c, &cmd, true);
		break;
	case LMTP_CMD_MAIL:
	case LMTP_CMD_RCPT:
		ret = parse_mail_rcpt(&c, &cmd);
		break;
	case LMTP_CMD_BDAT:
		ret = parse_bdat(&c, &cmd);
		break;
	case LMTP_CMD_XCLIENT:
	case LMTP_CMD_XFORWARD:
		ret = x_attrs(&c, &cmd);
		break;
	case LMTP_CMD_NOOP:
		if (!at_end(&c) && !eat(&c, ' ')) {
			c.why = "bad NOOP syntax";
			ret = LMTP_CMD_ESYNTAX;
		}
		cmd.arg = rest(&c);
		c.pos = c.len;
		break;
	case LMTP_CMD_DATA:
	case LMTP_CMD_RSET:
	case LMTP_CMD_QUIT:
		if (!at_end(&c)) {
			c.why = "no argument allowed";
			ret = LMTP_CMD_ESYNTAX;
		}
		break;
	}
	if (ret == 0 && !at_end(&c)) {
		c.why = "junk after the command";
		ret = LMTP_CMD_ESYNTAX;
	}
	if (ret < 0) {
		*error_r = c.why;
		return ret;
	}
	*cmd_r = cmd;
	return 0;
}
