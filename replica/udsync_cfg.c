/*
 * udsync_cfg.c - the [udsync] section of mstore.conf (docs/config.md),
 * with the one parser (store/cfg.h), and the TCP helpers both roles use.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cfg.h"
#include "udsync.h"

#define F(field) offsetof(struct udsync_cfg, field)

static const struct ms_cfg_def defs[] = {
	{ "udsync", "key_file", MS_CFG_STR, NULL, 0, 4000, NULL, F(key_file),
	  "this site's secret key (udsync keygen FILE), mode 0600" },
	{ "udsync", "peer_key", MS_CFG_STR, NULL, 0, 64, NULL, F(peer_key),
	  "the other site's public key, 64 hex digits: the only peer "
	  "accepted" },
	{ "udsync", "listen", MS_CFG_STR, "127.0.0.1:7600", 1, 300, NULL,
	  F(listen), "udsync recv: address:port to listen on" },
	{ "udsync", "connect", MS_CFG_STR, "127.0.0.1:7600", 1, 300, NULL,
	  F(connect), "udsync send: the DR site's address:port" },
	{ "udsync", "reconnect_delay", MS_CFG_DURATION, "1s", 10, 0, NULL,
	  F(reconnect_delay), "udsync send: wait this long between tries" },
	{ "udsync", "timeout", MS_CFG_DURATION, "30s", 100, 0, NULL,
	  F(timeout),
	  "drop the link after this long without a word from the peer" },
};

int udsync_cfg_load(const char *path, struct udsync_cfg *cfg,
		    const char **error_r)
{
	struct udsync_cfg c;
	int ret = ms_cfg_load(defs, MS_ARRAY_SIZE(defs), path, &c, error_r);
	if (ret < 0)
		return ret;
	ms_cfg_path_abs(&c.key_file, path);
	*cfg = c;
	return 0;
}

void udsync_cfg_free(struct udsync_cfg *cfg)
{
	ms_cfg_free(defs, MS_ARRAY_SIZE(defs), cfg);
}

int udsync_cfg_dump(const struct udsync_cfg *cfg, FILE *out)
{
	return ms_cfg_dump(defs, MS_ARRAY_SIZE(defs), cfg, out);
}

static int resolve(const char *hostport, int passive, struct addrinfo **ai_r,
		   const char **error_r)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { 0 };
	size_t hl;

	if (colon == NULL || colon == hostport || colon[1] == '\0' ||
	    (hl = (size_t)(colon - hostport)) >= sizeof(host)) {
		*error_r = ms_errf("%s: not host:port", hostport);
		return MS_ECONFIG;
	}
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	int r = getaddrinfo(host, colon + 1, &hints, ai_r);
	if (r != 0) {
		*error_r = ms_errf("%s: %s", hostport, gai_strerror(r));
		return -EINVAL;
	}
	return 0;
}

int udsync_tcp_connect(const char *hostport, unsigned timeout_ms,
		       const char **error_r)
{
	struct addrinfo *ai;
	int ret = resolve(hostport, 0, &ai, error_r), fd = -1;
	if (ret < 0)
		return ret;
	for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		struct timeval tv = { timeout_ms / 1000,
				      (long)(timeout_ms % 1000) * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		*error_r = ms_errf("connect %s: %s", hostport,
				   ms_strerror(ret < 0 ? ret : -EIO));
		return ret < 0 ? ret : -EIO;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int udsync_tcp_listen(const char *hostport, const char **error_r)
{
	struct addrinfo *ai;
	int ret = resolve(hostport, 1, &ai, error_r), fd = -1;
	if (ret < 0)
		return ret;
	for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
		int one = 1;
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 &&
		    listen(fd, 8) == 0)
			break;
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		*error_r = ms_errf("listen %s: %s", hostport,
				   ms_strerror(ret < 0 ? ret : -EIO));
		return ret < 0 ? ret : -EIO;
	}
	return fd;
}
