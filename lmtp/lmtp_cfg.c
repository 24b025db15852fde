/*
 * lmtp_cfg.c - the [lmtp] table, its lists and its loader; see
 * lmtp_cfg.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "buf.h"
#include "cfg.h"
#include "lmtp_cfg.h"
#include "lmtp_data.h"

static const char *const quota_names[] = { "permanent", "temporary", NULL };
static const char *const bare_lf_names[] = { "normalize", "reject", NULL };

#define F(field) offsetof(struct lmtp_cfg, field)
/* the longest path a unix socket address holds */
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static const struct ms_cfg_def lmtp_defs[] = {
	{ "lmtp", "listen", MS_CFG_STR, "127.0.0.1:24", 0, 4000, NULL,
	  F(listen),
	  "TCP addresses to listen on (a.b.c.d:port, [v6]:port); empty: none" },
	{ "lmtp", "socket", MS_CFG_STR, NULL, 0, 100, NULL, F(socket),
	  "unix socket to listen on; empty: none" },
	{ "lmtp", "socket_mode", MS_CFG_MODE, "0666", 0, 0777, NULL,
	  F(socket_mode), "permissions of the unix socket file" },
	{ "lmtp", "user", MS_CFG_STR, NULL, 0, 64, NULL, F(user),
	  "run as this user after binding; empty: [store] user" },
	{ "lmtp", "hostname", MS_CFG_STR, NULL, 0, 255, NULL, F(hostname),
	  "name in the greeting and Received lines; empty: the host's" },
	{ "lmtp", "domains", MS_CFG_STR, NULL, 0, 4000, NULL, F(domains),
	  "domains delivered here (any case); empty: every domain" },
	{ "lmtp", "recipient_delimiter", MS_CFG_STR, "+", 0, 1, NULL,
	  F(recipient_delimiter),
	  "user+detail delivers to mailbox detail if it exists; empty: off" },
	{ "lmtp", "lowercase_local", MS_CFG_BOOL, "yes", 0, 0, NULL,
	  F(lowercase_local), "lower the ASCII letters of the user name" },
	{ "lmtp", "trusted_gateways", MS_CFG_STR, NULL, 0, 4000, NULL,
	  F(trusted_gateways),
	  "networks (and \"unix\") allowed XCLIENT and XFORWARD; empty: none" },
	{ "lmtp", "max_line_length", MS_CFG_SIZE, "4096", 512, 65536, NULL,
	  F(max_line_length), "longest command line, without CRLF" },
	{ "lmtp", "max_message_size", MS_CFG_SIZE, "50M", 1024,
	  (uint64_t)255 << 20, NULL, F(max_message_size),
	  "largest message (announced with SIZE); must fit [store] "
	  "max_frame" },
	{ "lmtp", "max_recipients", MS_CFG_UINT, "1000", 1, 1000, NULL,
	  F(max_recipients), "accepted recipients per transaction" },
	{ "lmtp", "max_sessions", MS_CFG_UINT, "1000", 1, 100000, NULL,
	  F(max_sessions), "sessions at once" },
	{ "lmtp", "max_sessions_per_client", MS_CFG_UINT, "100", 0, 100000,
	  NULL, F(max_sessions_per_client),
	  "sessions at once from one address; 0: no limit" },
	{ "lmtp", "command_timeout", MS_CFG_DURATION, "5m", 1000, 0, NULL,
	  F(command_timeout), "wait this long for a command" },
	{ "lmtp", "data_timeout", MS_CFG_DURATION, "10m", 1000, 0, NULL,
	  F(data_timeout), "wait this long for more message data" },
	{ "lmtp", "store_timeout", MS_CFG_DURATION, "2m", 1000, 0, NULL,
	  F(store_timeout),
	  "an answer from mstored later than this: reconnect, 451" },
	{ "lmtp", "max_errors", MS_CFG_UINT, "20", 1, 100000, NULL,
	  F(max_errors), "command errors before the session is closed" },
	{ "lmtp", "quota_reply", MS_CFG_ENUM, "permanent", 0, 0, quota_names,
	  F(quota_reply),
	  "over quota: permanent (552 5.2.2) or temporary (452 4.2.2)" },
	{ "lmtp", "bare_lf", MS_CFG_ENUM, "normalize", 0, 0, bare_lf_names,
	  F(bare_lf),
	  "a message line ending in a bare LF: normalize (store CRLF) or "
	  "reject (550 5.6.0)" },
	{ "lmtp", "dovecot_indexer", MS_CFG_STR, NULL, 0, SUN_PATH_MAX, NULL,
	  F(dovecot_indexer),
	  "Dovecot's indexer socket: queue each folder that got mail for "
	  "full-text indexing; empty: off" },
	{ "lmtp", "dovecot_separator", MS_CFG_STR, "/", 1, 1, NULL,
	  F(dovecot_separator),
	  "the hierarchy separator of Dovecot's namespace (folder names "
	  "for the indexer)" },
	{ "lmtp", "dovecot_prefix", MS_CFG_STR, NULL, 0, 100, NULL,
	  F(dovecot_prefix),
	  "the prefix of Dovecot's namespace (folder names for the "
	  "indexer)" },
};

/* ---- lists ---- */

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t';
}

/* The next item of a list at *p; false at the end. */
static bool next_item(const char **p, const char **item_r, size_t *len_r)
{
	const char *s = *p;
	while (*s != '\0' && is_sep(*s))
		s++;
	if (*s == '\0')
		return false;
	const char *e = s;
	while (*e != '\0' && !is_sep(*e))
		e++;
	*item_r = s;
	*len_r = (size_t)(e - s);
	*p = e;
	return true;
}

static int parse_listen(const char *s, size_t len, struct lmtp_listen *l)
{
	char host[64];
	const char *colon, *port;
	uint64_t pn;

	memset(l, 0, sizeof(*l));
	if (len == 0 || len >= sizeof(l->text))
		return -EINVAL;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', len);
		if (rb == NULL || (size_t)(rb - s) + 1 >= len || rb[1] != ':')
			return -EINVAL;
		colon = rb + 1;
		if ((size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
	} else {
		colon = memchr(s, ':', len);
		if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	port = colon + 1;
	if (ms_parse_u64(port, len - (size_t)(port - s), &pn) < 0 || pn == 0 ||
	    pn > 65535)
		return -EINVAL;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&l->sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&l->sa;
	if (s[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)pn);
		l->salen = sizeof(*in4);
	} else if (s[0] == '[' &&
		   inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)pn);
		l->salen = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	memcpy(l->text, s, len);
	l->text[len] = '\0';
	return 0;
}

int lmtp_net_parse(const char *s, size_t len, struct lmtp_net *net)
{
	char host[64];
	const char *slash = memchr(s, '/', len);
	size_t hl = slash ? (size_t)(slash - s) : len;
	uint64_t bits;

	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, host, net->addr) == 1) {
		net->family = AF_INET;
		bits = 32;
	} else if (inet_pton(AF_INET6, host, net->addr) == 1) {
		net->family = AF_INET6;
		bits = 128;
	} else {
		return -EINVAL;
	}
	if (slash != NULL) {
		uint64_t b;
		if (ms_parse_u64(slash + 1, len - hl - 1, &b) < 0 || b > bits)
			return -EINVAL;
		bits = b;
	}
	net->bits = (unsigned)bits;
	return 0;
}

bool lmtp_net_match(const struct lmtp_net *net, int family,
		    const uint8_t *addr)
{
	if (net->family != family)
		return false;
	unsigned full = net->bits / 8, rest = net->bits % 8;
	if (memcmp(net->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (addr[full] & mask);
}

bool lmtp_cfg_trusted(const struct lmtp_cfg *cfg, int family,
		      const uint8_t *addr)
{
	for (size_t i = 0; i < cfg->ntrusted; i++)
		if (lmtp_net_match(&cfg->trusted[i], family, addr))
			return true;
	return false;
}

static int derive(struct lmtp_cfg *c, const char **error_r)
{
	const char *p, *item;
	size_t len;

	p = c->listen ? c->listen : "";
	while (next_item(&p, &item, &len)) {
		c->listens = ms_realloc(c->listens,
					(c->nlistens + 1) * sizeof(*c->listens));
		if (parse_listen(item, len, &c->listens[c->nlistens]) < 0) {
			*error_r = ms_errf("[lmtp] listen: bad address '%.*s' "
					   "(a.b.c.d:port or [v6]:port)",
					   (int)len, item);
			return MS_ECONFIG;
		}
		c->nlistens++;
	}
	p = c->domains ? c->domains : "";
	while (next_item(&p, &item, &len)) {
		c->domain_list = ms_realloc(c->domain_list,
					    (c->ndomains + 1) * sizeof(char *));
		char *d = ms_malloc(len + 1);
		memcpy(d, item, len);
		d[len] = '\0';
		c->domain_list[c->ndomains++] = d;
	}
	p = c->trusted_gateways ? c->trusted_gateways : "";
	while (next_item(&p, &item, &len)) {
		if (len == 4 && memcmp(item, "unix", 4) == 0) {
			c->trust_unix = true;
			continue;
		}
		c->trusted = ms_realloc(c->trusted,
					(c->ntrusted + 1) * sizeof(*c->trusted));
		if (lmtp_net_parse(item, len, &c->trusted[c->ntrusted]) < 0) {
			*error_r = ms_errf("[lmtp] trusted_gateways: bad "
					   "network '%.*s'",
					   (int)len, item);
			return MS_ECONFIG;
		}
		c->ntrusted++;
	}
	if (c->nlistens == 0 && c->socket == NULL) {
		*error_r = "[lmtp] neither listen nor socket is set: nothing "
			   "to serve";
		return MS_ECONFIG;
	}
	return 0;
}

static void free_derived(struct lmtp_cfg *c)
{
	for (size_t i = 0; i < c->ndomains; i++)
		free(c->domain_list[i]);
	free(c->domain_list);
	free(c->listens);
	free(c->trusted);
	c->domain_list = NULL;
	c->listens = NULL;
	c->trusted = NULL;
	c->ndomains = c->nlistens = c->ntrusted = 0;
}

static int finish(struct lmtp_cfg *c, const char **error_r)
{
	c->listens = NULL;
	c->domain_list = NULL;
	c->trusted = NULL;
	c->nlistens = c->ndomains = c->ntrusted = 0;
	c->trust_unix = false;
	int ret = derive(c, error_r);
	if (ret < 0) {
		free_derived(c);
		ms_cfg_free(lmtp_defs, MS_ARRAY_SIZE(lmtp_defs), c);
	}
	return ret;
}

int lmtp_cfg_parse(const char *text, size_t len, struct lmtp_cfg *cfg,
		   const char **error_r)
{
	struct lmtp_cfg c;
	int ret = ms_cfg_parse(lmtp_defs, MS_ARRAY_SIZE(lmtp_defs), text, len,
			       &c, error_r);
	if (ret < 0 || (ret = finish(&c, error_r)) < 0)
		return ret;
	*cfg = c;
	return 0;
}

int lmtp_cfg_load(const char *path, struct lmtp_cfg *cfg,
		  const char **error_r)
{
	struct lmtp_cfg c;
	int ret = ms_cfg_load(lmtp_defs, MS_ARRAY_SIZE(lmtp_defs), path, &c,
			      error_r);
	if (ret < 0)
		return ret;
	if ((ret = finish(&c, error_r)) < 0) {
		*error_r = ms_errf("%s: %s", path, *error_r);
		return ret;
	}
	ms_cfg_path_abs(&c.socket, path);
	ms_cfg_path_abs(&c.dovecot_indexer, path);
	if (c.dovecot_indexer != NULL &&
	    strlen(c.dovecot_indexer) > SUN_PATH_MAX) {
		*error_r = ms_errf("%s: [lmtp] dovecot_indexer: the path is "
				   "longer than a unix socket's %zu bytes",
				   path, SUN_PATH_MAX);
		lmtp_cfg_free(&c);
		return MS_ECONFIG;
	}
	*cfg = c;
	return 0;
}

void lmtp_cfg_free(struct lmtp_cfg *cfg)
{
	free_derived(cfg);
	ms_cfg_free(lmtp_defs, MS_ARRAY_SIZE(lmtp_defs), cfg);
}

int lmtp_cfg_dump(const struct lmtp_cfg *cfg, FILE *out)
{
	return ms_cfg_dump(lmtp_defs, MS_ARRAY_SIZE(lmtp_defs), cfg, out);
}
