/*
 * udsync_auth.c - udsync's link: pinned X25519 keys, mutual
 * authentication, then libsodium secretstream both ways
 * (docs/replication.md, "Link security").
 *
 * Handshake, both sides at once (the sender is the kx client):
 *   hello = "UDSYNC\0\1" | u8 role (1 sender, 2 receiver) | static pk[32]
 *           | ephemeral pk[32] | random nonce[32]            (105 bytes)
 *   A peer whose static pk is not the pinned one is refused here.
 *   th = BLAKE2b-256(hello_sender || hello_receiver)
 *   (rx_s, tx_s) = crypto_kx_*_session_keys(static keys)
 *   (rx_e, tx_e) = crypto_kx_*_session_keys(ephemeral keys)
 *   key_tx = BLAKE2b-256(key = tx_s, "udsync-v1" || tx_e || th), same
 *   for rx; so only the holders of both pinned secrets can derive them
 *   (authentication), they are new for every connection (the nonces and
 *   the ephemeral keys: an old session replayed does not open), and a
 *   stolen static key does not open recorded sessions.
 *   Each side sends its 24-byte secretstream header, then an AUTH message
 *   holding th; the peer checks it (key confirmation).
 * Frames: u32 n (bytes of ciphertext, 17..UDSYNC_MAX_FRAME) | ciphertext.
 * secretstream numbers its messages, so an altered, dropped, reordered
 * or replayed frame fails to open, and the link is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "body.h"
#include "msg.h"
#include "udsync.h"

#define HELLO_SIZE 105
#define SS_HDR crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define SS_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
static const uint8_t magic[8] = { 'U', 'D', 'S', 'Y', 'N', 'C', 0, 1 };

static int hex_decode32(const char *hex, uint8_t out[32])
{
	size_t bin_len = 0;
	const char *end = NULL;

	if (hex == NULL || strlen(hex) != 64)
		return -EINVAL;
	if (sodium_hex2bin(out, 32, hex, 64, NULL, &bin_len, &end) != 0 ||
	    bin_len != 32 || *end != '\0')
		return -EINVAL;
	return 0;
}

int udsync_keygen(const char *path, char pub_hex_r[65], const char **error_r)
{
	uint8_t sk[32], pk[32];
	int ret = ms_body_key_generate(path, error_r);
	if (ret < 0)
		return ret;
	if ((ret = ms_body_key_load(path, sk, error_r)) < 0)
		return ret;
	crypto_scalarmult_base(pk, sk);
	sodium_memzero(sk, sizeof(sk));
	sodium_bin2hex(pub_hex_r, 65, pk, 32);
	return 0;
}

int udsync_keys_load(const char *key_file, const char *peer_hex,
		     struct udsync_keys *k_r, const char **error_r)
{
	struct udsync_keys k;
	int ret;

	if (sodium_init() < 0) {
		*error_r = "libsodium failed to initialise";
		return -EIO;
	}
	if (key_file == NULL) {
		*error_r = "[udsync] key_file is not set (udsync keygen FILE)";
		return MS_ECONFIG;
	}
	if ((ret = ms_body_key_load(key_file, k.sk, error_r)) < 0)
		return ret;
	crypto_scalarmult_base(k.pk, k.sk);
	if (hex_decode32(peer_hex, k.peer_pk) < 0) {
		sodium_memzero(&k, sizeof(k));
		*error_r = "[udsync] peer_key must be the peer's public key, "
			   "64 hex digits (udsync keygen prints it)";
		return MS_ECONFIG;
	}
	*k_r = k;
	sodium_memzero(&k, sizeof(k));
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Exactly len bytes within timeout_ms. */
static int read_exact(int fd, void *buf, size_t len, unsigned timeout_ms)
{
	uint64_t end = now_ms() + timeout_ms;
	size_t got = 0;

	while (got < len) {
		uint64_t now = now_ms();
		if (now >= end)
			return -ETIMEDOUT;
		struct pollfd p = { fd, POLLIN, 0 };
		int r = poll(&p, 1, (int)(end - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		got += (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(fd, (const uint8_t *)buf + done, len - done,
				 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

static void derive(uint8_t out[32], const uint8_t ks[32], const uint8_t ke[32],
		   const uint8_t th[32])
{
	crypto_generichash_state h;
	crypto_generichash_init(&h, ks, 32, 32);
	crypto_generichash_update(&h, (const uint8_t *)"udsync-v1", 9);
	crypto_generichash_update(&h, ke, 32);
	crypto_generichash_update(&h, th, 32);
	crypto_generichash_final(&h, out, 32);
}

int udsync_link_init(struct udsync_link *l, int fd, int is_client,
		     const struct udsync_keys *k, unsigned timeout_ms,
		     const char **error_r)
{
	uint8_t mine[HELLO_SIZE], theirs[HELLO_SIZE];
	uint8_t esk[32], epk[32], th[32];
	uint8_t rx_s[32], tx_s[32], rx_e[32], tx_e[32], key_tx[32], key_rx[32];
	uint8_t hdr[SS_HDR];
	struct udsync_msg m;
	int ret;

	memset(l, 0, sizeof(*l));
	l->fd = fd;
	ms_buf_init(&l->in, 0);
	ms_buf_init(&l->plain, 0);
	ms_buf_init(&l->out, 0);
	crypto_kx_keypair(epk, esk);
	memcpy(mine, magic, 8);
	mine[8] = is_client ? 1 : 2;
	memcpy(mine + 9, k->pk, 32);
	memcpy(mine + 41, epk, 32);
	randombytes_buf(mine + 73, 32);
	if ((ret = write_all(fd, mine, sizeof(mine))) < 0 ||
	    (ret = read_exact(fd, theirs, sizeof(theirs), timeout_ms)) < 0) {
		*error_r = ms_errf("handshake: %s", ms_strerror(ret));
		goto out;
	}
	/* not garbage: read_exact filled it (analyzer: poll() errno 0) */
	/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinary*) */
	if (memcmp(theirs, magic, 8) != 0 || theirs[8] != (is_client ? 2 : 1)) {
		*error_r = "handshake: the peer does not speak udsync v1 in "
			   "the other role";
		ret = MS_ECORRUPT;
		goto out;
	}
	if (sodium_memcmp(theirs + 9, k->peer_pk, 32) != 0) {
		char hex[65];
		sodium_bin2hex(hex, sizeof(hex), theirs + 9, 32);
		*error_r = ms_errf("handshake: peer key %s is not the pinned "
				   "peer_key: refused",
				   hex);
		ret = -EACCES;
		goto out;
	}
	crypto_generichash_state h;
	crypto_generichash_init(&h, NULL, 0, 32);
	crypto_generichash_update(&h, is_client ? mine : theirs, HELLO_SIZE);
	crypto_generichash_update(&h, is_client ? theirs : mine, HELLO_SIZE);
	crypto_generichash_final(&h, th, 32);
	if (is_client)
		ret = crypto_kx_client_session_keys(rx_s, tx_s, k->pk, k->sk,
						    k->peer_pk) |
		      crypto_kx_client_session_keys(rx_e, tx_e, epk, esk,
						    theirs + 41);
	else
		ret = crypto_kx_server_session_keys(rx_s, tx_s, k->pk, k->sk,
						    k->peer_pk) |
		      crypto_kx_server_session_keys(rx_e, tx_e, epk, esk,
						    theirs + 41);
	if (ret != 0) {
		*error_r = "handshake: the peer's keys are not usable";
		ret = -EACCES;
		goto out;
	}
	derive(key_tx, tx_s, tx_e, th);
	derive(key_rx, rx_s, rx_e, th);
	crypto_secretstream_xchacha20poly1305_init_push(&l->tx, hdr, key_tx);
	if ((ret = write_all(fd, hdr, sizeof(hdr))) < 0 ||
	    (ret = read_exact(fd, hdr, sizeof(hdr), timeout_ms)) < 0) {
		*error_r = ms_errf("handshake: %s", ms_strerror(ret));
		goto out;
	}
	if (crypto_secretstream_xchacha20poly1305_init_pull(&l->rx, hdr,
							    key_rx) != 0) {
		*error_r = "handshake: bad stream header";
		ret = -EACCES;
		goto out;
	}
	m.type = UDSYNC_AUTH;
	memcpy(m.u.auth, th, 32);
	if ((ret = udsync_link_send(l, &m, error_r)) < 0)
		goto out;
	ret = udsync_link_recv(l, (int)timeout_ms, &m, error_r);
	if (ret == 0) {
		*error_r = "handshake: no AUTH from the peer in time";
		ret = -ETIMEDOUT;
	}
	if (ret < 0)
		goto out;
	if (m.type != UDSYNC_AUTH || sodium_memcmp(m.u.auth, th, 32) != 0) {
		*error_r = "handshake: the peer did not prove its key";
		ret = -EACCES;
		goto out;
	}
	ret = 0;
out:
	sodium_memzero(esk, sizeof(esk));
	sodium_memzero(rx_s, sizeof(rx_s));
	sodium_memzero(tx_s, sizeof(tx_s));
	sodium_memzero(rx_e, sizeof(rx_e));
	sodium_memzero(tx_e, sizeof(tx_e));
	sodium_memzero(key_tx, sizeof(key_tx));
	sodium_memzero(key_rx, sizeof(key_rx));
	return ret;
}

void udsync_link_free(struct udsync_link *l)
{
	ms_buf_free(&l->in);
	ms_buf_free(&l->plain);
	ms_buf_free(&l->out);
	sodium_memzero(&l->tx, sizeof(l->tx));
	sodium_memzero(&l->rx, sizeof(l->rx));
}

int udsync_link_send(struct udsync_link *l, const struct udsync_msg *m,
		     const char **error_r)
{
	struct ms_buf *b = &l->out;
	int ret;

	ms_buf_reset(&l->plain);
	if ((ret = udsync_wire_encode(m, &l->plain)) < 0) {
		*error_r = ms_errf("encoding a %s message: %s",
				   udsync_type_name(m->type), ms_strerror(ret));
		return ret;
	}
	ms_buf_reset(b);
	if (ms_buf_resize(b, 4 + l->plain.len + SS_ABYTES) < 0)
		return MS_ETOOBIG;
	ms_put32(b->data, (uint32_t)(l->plain.len + SS_ABYTES));
	crypto_secretstream_xchacha20poly1305_push(
		&l->tx, b->data + 4, NULL, l->plain.data, l->plain.len, NULL,
		0, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
	if ((ret = write_all(l->fd, b->data, b->len)) < 0) {
		*error_r = ms_errf("send: %s", ms_strerror(ret));
		return ret;
	}
	l->frames_out++;
	l->bytes_out += b->len;
	return 0;
}

/* A whole frame at the start of l->in: open it into l->plain. */
static int open_frame(struct udsync_link *l, struct udsync_msg *m_r,
		      const char **error_r)
{
	uint32_t n = ms_get32(l->in.data);
	unsigned long long plen = 0;
	unsigned char tag = 0;

	if (ms_buf_resize(&l->plain, n - SS_ABYTES) < 0)
		return MS_ETOOBIG;
	if (crypto_secretstream_xchacha20poly1305_pull(
		    &l->rx, l->plain.data, &plen, &tag, l->in.data + 4, n,
		    NULL, 0) != 0) {
		*error_r = ms_errf("frame %llu does not open (altered, "
				   "replayed or out of order): refused",
				   (unsigned long long)l->frames_in + 1);
		return MS_ECORRUPT;
	}
	memmove(l->in.data, l->in.data + 4 + n, l->in.len - 4 - n);
	l->in.len -= 4 + n;
	l->frames_in++;
	if (udsync_wire_decode(l->plain.data, (size_t)plen, m_r, error_r) < 0)
		return MS_ECORRUPT;
	return 1;
}

int udsync_link_recv(struct udsync_link *l, int timeout_ms,
		     struct udsync_msg *m_r, const char **error_r)
{
	uint64_t end = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);

	for (;;) {
		if (l->in.len >= 4) {
			uint32_t n = ms_get32(l->in.data);
			if (n < SS_ABYTES + 1 || n > UDSYNC_MAX_FRAME) {
				*error_r = ms_errf("frame length %u is out of "
						   "bounds: refused",
						   n);
				return MS_ECORRUPT;
			}
			if (l->in.len >= 4 + (size_t)n)
				return open_frame(l, m_r, error_r);
		}
		uint64_t now = now_ms();
		int wait = now >= end ? 0 : (int)(end - now);
		struct pollfd p = { l->fd, POLLIN, 0 };
		int r = poll(&p, 1, wait);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*error_r = ms_errf("poll: %s", strerror(errno));
			return -errno;
		}
		if (r == 0)
			return 0;
		if (ms_buf_reserve(&l->in, 256 << 10) < 0)
			return MS_ETOOBIG;
		ssize_t got = recv(l->fd, l->in.data + l->in.len,
				   l->in.cap - l->in.len, MSG_DONTWAIT);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0) {
			*error_r = ms_errf("recv: %s", strerror(errno));
			return -errno;
		}
		if (got == 0) {
			*error_r = "the peer closed the connection";
			return -ECONNRESET;
		}
		l->in.len += (size_t)got;
		l->bytes_in += (uint64_t)got;
	}
}
