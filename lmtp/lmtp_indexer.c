/*
 * lmtp_indexer.c - Dovecot's indexer told which folders got mail; see
 * lmtp_indexer.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include "lmtp_indexer.h"
#include "msg.h"
#include "u64map.h"

#define HANDSHAKE "VERSION\tindexer\t1\t0\n"

struct pair {
	uint64_t key;
	char *user, *vname;
};

struct lmtp_indexer {
	char *path;
	char sep;
	char *prefix;
	struct pair **pairs; /* waiting, in the order noted */
	size_t n, cap;
	struct ms_u64map seen; /* key -> the pair waiting with it */
	uint64_t due;          /* 0: not set */
	uint64_t retry_ms;     /* 0: the last try went through */
	int dropping;          /* a drop was logged since the last send */
	struct lmtp_indexer_stats st;
	struct ms_buf out;
};

char *lmtp_indexer_vname(char sep, const char *prefix, const char *mailbox)
{
	if (mailbox == NULL || mailbox[0] == '\0' ||
	    strcmp(mailbox, "INBOX") == 0)
		return ms_strdup("INBOX");
	size_t pl = strlen(prefix), ml = strlen(mailbox);
	char *s = ms_malloc(pl + ml + 1);
	memcpy(s, prefix, pl);
	for (size_t i = 0; i < ml; i++) {
		char c = mailbox[i];
		if (c == '/')
			c = sep;
		else if (c == sep)
			c = '/';
		s[pl + i] = c;
	}
	s[pl + ml] = '\0';
	return s;
}

static int put_escaped(struct ms_buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		char e[2] = {'\001', 0};
		switch (*s) {
		case '\001':
			e[1] = '1';
			break;
		case '\t':
			e[1] = 't';
			break;
		case '\r':
			e[1] = 'r';
			break;
		case '\n':
			e[1] = 'n';
			break;
		default:
			break;
		}
		int ret =
			e[1] ? ms_buf_append(b, e, 2) : ms_buf_append(b, s, 1);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int lmtp_indexer_line(struct ms_buf *b, const char *user, const char *vname)
{
	size_t was = b->len;
	int ret;
	if ((ret = ms_buf_append(b, "APPEND\t0\t", 9)) < 0 ||
	    (ret = put_escaped(b, user)) < 0 ||
	    (ret = ms_buf_append(b, "\t", 1)) < 0 ||
	    (ret = put_escaped(b, vname)) < 0 ||
	    (ret = ms_buf_append(b, "\n", 1)) < 0) {
		b->len = was;
		return ret;
	}
	return 0;
}

size_t lmtp_indexer_lines_written(const uint8_t *d, size_t len, size_t w)
{
	size_t at = sizeof(HANDSHAKE) - 1, n = 0;
	if (w > len)
		w = len;
	while (at < w) {
		const uint8_t *nl = memchr(d + at, '\n', len - at);
		if (nl == NULL || (size_t)(nl - d) + 1 > w)
			break;
		at = (size_t)(nl - d) + 1;
		n++;
	}
	return n;
}

struct lmtp_indexer *lmtp_indexer_new(const char *path, char sep,
				      const char *prefix)
{
	struct lmtp_indexer *ix = ms_calloc(1, sizeof(*ix));
	ix->path = ms_strdup(path);
	ix->sep = sep;
	ix->prefix = ms_strdup(prefix != NULL ? prefix : "");
	ms_u64map_init(&ix->seen);
	ms_buf_init(&ix->out, 0);
	return ix;
}

static void pair_free(struct pair *p)
{
	free(p->user);
	free(p->vname);
	free(p);
}

void lmtp_indexer_free(struct lmtp_indexer **ixp)
{
	struct lmtp_indexer *ix = *ixp;
	if (ix == NULL)
		return;
	for (size_t i = 0; i < ix->n; i++)
		pair_free(ix->pairs[i]);
	free(ix->pairs);
	ms_u64map_free(&ix->seen);
	ms_buf_free(&ix->out);
	free(ix->path);
	free(ix->prefix);
	free(ix);
	*ixp = NULL;
}

static uint64_t pair_key(const char *user, const char *vname)
{
	uint64_t k = XXH3_64bits_withSeed(vname, strlen(vname),
					  XXH3_64bits(user, strlen(user)));
	return k != 0 ? k : 1;
}

void lmtp_indexer_note(struct lmtp_indexer *ix, const char *user,
		       const char *mailbox)
{
	char *vname = lmtp_indexer_vname(ix->sep, ix->prefix, mailbox);
	uint64_t key = pair_key(user, vname);
	struct pair *old = ms_u64map_get(&ix->seen, key);

	if (old != NULL && strcmp(old->user, user) == 0 &&
	    strcmp(old->vname, vname) == 0) {
		free(vname);
		return;
	}
	if (ix->n >= LMTP_INDEXER_MAX) {
		ix->st.dropped++;
		if (!ix->dropping)
			msg_warn("indexer.dropped socket=%s waiting=%zu "
				 "note=\"folders not queued for indexing; "
				 "the next search indexes them\"",
				 msg_q(ix->path), ix->n);
		ix->dropping = 1;
		free(vname);
		return;
	}
	struct pair *p = ms_calloc(1, sizeof(*p));
	p->key = key;
	p->user = ms_strdup(user);
	p->vname = vname;
	if (ix->n == ix->cap) {
		ix->cap = ix->cap ? ix->cap * 2 : 16;
		ix->pairs =
			ms_realloc(ix->pairs, ix->cap * sizeof(struct pair *));
	}
	ix->pairs[ix->n++] = p;
	if (old == NULL) /* a different pair with the same key: no entry */
		ms_u64map_put(&ix->seen, key, p);
	ix->st.noted++;
}

/* Forget the first k pairs (sent). */
static void drop_first(struct lmtp_indexer *ix, size_t k)
{
	for (size_t i = 0; i < k; i++) {
		struct pair *p = ix->pairs[i];
		if (ms_u64map_get(&ix->seen, p->key) == p)
			ms_u64map_del(&ix->seen, p->key);
		pair_free(p);
	}
	memmove(ix->pairs, ix->pairs + k, (ix->n - k) * sizeof(struct pair *));
	ix->n -= k;
}

/* Build the handshake and the lines that fit LMTP_INDEXER_WRITE, at
   least one. */
static void build(struct lmtp_indexer *ix)
{
	size_t k = 0;
	ms_buf_reset(&ix->out);
	(void)ms_buf_append(&ix->out, HANDSHAKE, sizeof(HANDSHAKE) - 1);
	while (k < ix->n) {
		size_t was = ix->out.len;
		(void)lmtp_indexer_line(&ix->out, ix->pairs[k]->user,
					ix->pairs[k]->vname);
		if (k > 0 && ix->out.len > LMTP_INDEXER_WRITE) {
			ix->out.len = was;
			break;
		}
		k++;
	}
}

/* One connection: 0 with *sent_r pairs written, or -errno.  Some
   pair waits (lmtp_indexer_tick). */
static int send_batch(struct lmtp_indexer *ix, size_t *sent_r)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, ret = 0;

	*sent_r = 0;
	build(ix);
	if (strlen(ix->path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG; /* the config refuses it */
	memcpy(sa.sun_path, ix->path, strlen(ix->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	ssize_t w;
	do {
		w = send(fd, ix->out.data, ix->out.len, MSG_NOSIGNAL);
	} while (w < 0 && errno == EINTR);
	if (w < 0) {
		ret = -errno;
	} else {
		*sent_r = lmtp_indexer_lines_written(ix->out.data, ix->out.len,
						     (size_t)w);
		if (*sent_r == 0)
			ret = -EAGAIN;
	}
	close(fd);
	return ret;
}

uint64_t lmtp_indexer_tick(struct lmtp_indexer *ix, uint64_t now)
{
	if (ix == NULL || ix->n == 0)
		return 0;
	if (ix->due == 0)
		ix->due = now + LMTP_INDEXER_EVERY_MS;
	if (now < ix->due)
		return ix->due;
	size_t sent;
	int ret = send_batch(ix, &sent);
	if (sent > 0) {
		ix->st.sent += sent;
		drop_first(ix, sent);
		ix->dropping = 0;
	}
	if (ret < 0) {
		ix->st.failures++;
		if (ix->retry_ms == 0)
			msg_warn("indexer.unreachable socket=%s error=%s "
				 "waiting=%zu note=\"retrying; mail is still "
				 "delivered\"",
				 msg_q(ix->path), msg_q(strerror(-ret)), ix->n);
		ix->retry_ms = ix->retry_ms == 0 ? LMTP_INDEXER_RETRY_MS
			       : ix->retry_ms * 2 > LMTP_INDEXER_RETRY_MAX_MS
				       ? LMTP_INDEXER_RETRY_MAX_MS
				       : ix->retry_ms * 2;
		ix->due = now + ix->retry_ms;
		return ix->due;
	}
	if (ix->retry_ms != 0)
		msg_info("indexer.reachable socket=%s", msg_q(ix->path));
	ix->retry_ms = 0;
	/* what did not fit goes at once; new pairs wait for the interval */
	ix->due = ix->n > 0 ? now : 0;
	return ix->due;
}

size_t lmtp_indexer_waiting(const struct lmtp_indexer *ix)
{
	return ix != NULL ? ix->n : 0;
}

void lmtp_indexer_stats(const struct lmtp_indexer *ix,
			struct lmtp_indexer_stats *st)
{
	if (ix == NULL)
		memset(st, 0, sizeof(*st));
	else
		*st = ix->st;
}
