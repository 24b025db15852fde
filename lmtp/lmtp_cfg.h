/*
 * lmtp_cfg.h - the [lmtp] section of mstore.conf: where mstore-lmtpd
 * listens, which domains are local, who may send XCLIENT, and every
 * limit.  One table (lmtp_cfg.c), parsed by store/cfg.c; docs/config.md
 * and docs/lmtp.md list the keys.
 *
 * Lists (listen, domains, trusted_gateways) are separated by commas
 * and/or blanks.  listen holds IPv4 "a.b.c.d:port" or IPv6 "[::1]:port"
 * literals (no host names: nothing is resolved).  trusted_gateways holds
 * addresses or networks ("10.0.0.0/8", "::1") and the word "unix" for
 * the unix socket.  Relative paths are relative to the config file.
 */
#ifndef LMTP_CFG_H
#define LMTP_CFG_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "ms.h"

enum lmtp_quota_reply { LMTP_QUOTA_PERMANENT, LMTP_QUOTA_TEMPORARY };

struct lmtp_listen {
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[80];
};

struct lmtp_net {
	int family; /* AF_INET, AF_INET6 */
	uint8_t addr[16];
	unsigned bits;
};

struct lmtp_cfg {
	char *listen;
	char *socket;
	unsigned socket_mode;
	char *user;
	char *hostname;
	char *domains;
	char *recipient_delimiter;
	int lowercase_local;
	char *trusted_gateways;
	uint64_t max_line_length;
	uint64_t max_message_size;
	uint64_t max_recipients;
	uint64_t max_sessions;
	uint64_t max_sessions_per_client;
	uint64_t command_timeout; /* ms */
	uint64_t data_timeout;	  /* ms */
	uint64_t store_timeout;	  /* ms */
	uint64_t max_errors;
	unsigned quota_reply; /* enum lmtp_quota_reply */
	unsigned bare_lf;     /* enum lmtp_bare_lf */
	char *dovecot_indexer;	 /* NULL: off */
	char *dovecot_separator; /* one byte */
	char *dovecot_prefix;	 /* NULL: none */

	/* derived from the above by the loader */
	struct lmtp_listen *listens;
	size_t nlistens;
	char **domain_list;
	size_t ndomains;
	struct lmtp_net *trusted;
	size_t ntrusted;
	bool trust_unix;
};

/* Parse text (tests; relative paths kept). 0, or MS_ECONFIG with
   *error_r; cfg is filled only on success. */
int lmtp_cfg_parse(const char *text, size_t len, struct lmtp_cfg *cfg,
		   const char **error_r);
/* Load path (errors name it); the socket path is made absolute. */
int lmtp_cfg_load(const char *path, struct lmtp_cfg *cfg,
		  const char **error_r);
void lmtp_cfg_free(struct lmtp_cfg *cfg);
int lmtp_cfg_dump(const struct lmtp_cfg *cfg, FILE *out);

/* true if the address (family AF_INET/AF_INET6, 4 or 16 bytes) is in one
   of the trusted networks. */
bool lmtp_cfg_trusted(const struct lmtp_cfg *cfg, int family,
		      const uint8_t *addr);
/* Parse "addr[/bits]" into *net. 0 or -EINVAL. */
int lmtp_net_parse(const char *s, size_t len, struct lmtp_net *net);
bool lmtp_net_match(const struct lmtp_net *net, int family,
		    const uint8_t *addr);

#endif
