/*
 * body.c - BODY record payloads: dedup key, LZ4, XChaCha20-Poly1305 sealing,
 * and the at-rest key file.  The payload layout is in body.h and
 * docs/format.md ("Body record payload").
 *
 * Encode compresses into a scratch buffer only when compression is
 * allowed, then writes the fixed part and the (sealed) data straight into
 * the caller's buffer.  Decode checks every length against the bytes it
 * has before it reads or allocates; the only allocations are a scratch
 * copy of the inner bytes (bounded by the payload it was given) and the
 * plain buffer (bounded by MS_BODY_MAX_PLAIN and the buffer's max).
 * Scratch copies that held plaintext or key material are wiped.
 *
 * DIAGNOSTICS: every failure is a return code with *error_r; nothing is
 * logged and nothing is fatal except out of memory (ms_malloc).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lz4.h>
#include <sodium.h>

#include "body.h"

#define DEDUP_SALT_LABEL "mstore-dedup-salt"
#define AD_SIZE (16 + MS_BODY_DEDUP_SIZE + 8 + 1)
/* 64 hex digits and an optional newline; one more byte to see extra data */
#define KEY_FILE_MAX (2 * MS_BODY_KEY_SIZE + 1)

#define RANDOM_POOL 4096

void ms_random(void *out, size_t n)
{
	static _Thread_local uint8_t pool[RANDOM_POOL];
	static _Thread_local size_t left;

	ms_assert(n <= RANDOM_POOL);
	if (left < n) {
		randombytes_buf(pool, sizeof(pool));
		left = sizeof(pool);
	}
	memcpy(out, pool + sizeof(pool) - left, n);
	sodium_memzero(pool + sizeof(pool) - left, n);
	left -= n;
}

_Static_assert(MS_BODY_NONCE_SIZE ==
		       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
	       "nonce size");
_Static_assert(MS_BODY_TAG_SIZE == crypto_aead_xchacha20poly1305_ietf_ABYTES,
	       "tag size");
_Static_assert(MS_BODY_KEY_SIZE == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
	       "key size");
_Static_assert(MS_BODY_MAX_PLAIN + MS_BODY_OVERHEAD_MAX <= MS_REC_MAX_PAYLOAD,
	       "a body of MS_BODY_MAX_PLAIN bytes must fit a record");
_Static_assert(MS_BODY_MAX_PLAIN <= LZ4_MAX_INPUT_SIZE,
	       "LZ4 must accept every body");
_Static_assert(MS_BODY_MAX_PLAIN <= INT_MAX, "LZ4 sizes are int");

int ms_body_ctx_init(struct ms_body_ctx *ctx, const uint8_t store_id[16],
		     const uint8_t store_salt[32], const uint8_t *atrest_key,
		     int compress)
{
	crypto_generichash_state st;

	if (sodium_init() < 0)
		return -EIO;
	memset(ctx, 0, sizeof(*ctx));
	memcpy(ctx->store_id, store_id, sizeof(ctx->store_id));
	ctx->compress = compress != 0;
	memcpy(ctx->store_salt, store_salt, sizeof(ctx->store_salt));
	if (atrest_key == NULL) {
		memcpy(ctx->salt, store_salt, sizeof(ctx->salt));
		return 0;
	}
	ctx->sealed = 1;
	memcpy(ctx->key, atrest_key, sizeof(ctx->key));
	crypto_generichash_init(&st, ctx->key, sizeof(ctx->key),
				sizeof(ctx->salt));
	crypto_generichash_update(&st, (const uint8_t *)DEDUP_SALT_LABEL,
				  sizeof(DEDUP_SALT_LABEL) - 1);
	crypto_generichash_update(&st, store_salt, 32);
	crypto_generichash_final(&st, ctx->salt, sizeof(ctx->salt));
	sodium_memzero(&st, sizeof(st));
	return 0;
}

void ms_body_ctx_wipe(struct ms_body_ctx *ctx)
{
	sodium_memzero(ctx->key, sizeof(ctx->key));
	sodium_memzero(ctx->salt, sizeof(ctx->salt));
	sodium_memzero(ctx->store_salt, sizeof(ctx->store_salt));
	ctx->sealed = 0;
}

/* ---- key file ---- */

int ms_body_key_load(const char *path, uint8_t key_r[32], const char **error_r)
{
	uint8_t text[KEY_FILE_MAX + 1];
	uint8_t key[MS_BODY_KEY_SIZE];
	size_t got = 0, bin_len = 0;
	const char *hex_end = NULL;
	struct stat st;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		*error_r = ms_errf("key file %s: open: %s", path,
				   ms_strerror(ret));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		*error_r = ms_errf("key file %s: fstat: %s", path,
				   ms_strerror(ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = ms_errf("key file %s: not a regular file", path);
		ret = MS_ECONFIG;
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		*error_r = ms_errf("key file %s: mode %04o lets group or other "
				   "access it; chmod 600 it",
				   path, (unsigned)(st.st_mode & 07777));
		ret = MS_ECONFIG;
		goto out;
	}
	/* bounded read: one byte more than a valid file can hold */
	while (got < sizeof(text)) {
		ssize_t n = read(fd, text + got, sizeof(text) - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			*error_r = ms_errf("key file %s: read: %s", path,
					   ms_strerror(ret));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > 2 * MS_BODY_KEY_SIZE &&
	    !(got == 2 * MS_BODY_KEY_SIZE + 1 &&
	      text[2 * MS_BODY_KEY_SIZE] == '\n')) {
		*error_r = ms_errf("key file %s: more than 64 hex digits and "
				   "a newline",
				   path);
		ret = MS_ECONFIG;
		goto out;
	}
	if (got < 2 * MS_BODY_KEY_SIZE) {
		*error_r = ms_errf("key file %s: %zu bytes, expected 64 hex "
				   "digits",
				   path, got);
		ret = MS_ECONFIG;
		goto out;
	}
	for (size_t i = 0; i < 2 * MS_BODY_KEY_SIZE; i++) {
		uint8_t c = text[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		      (c >= 'A' && c <= 'F'))) {
			*error_r = ms_errf("key file %s: byte %zu is not a "
					   "hex digit",
					   path, i);
			ret = MS_ECONFIG;
			goto out;
		}
	}
	if (sodium_hex2bin(key, sizeof(key), (const char *)text,
			   2 * MS_BODY_KEY_SIZE, NULL, &bin_len,
			   &hex_end) != 0 ||
	    bin_len != sizeof(key) ||
	    hex_end != (const char *)text + 2 * MS_BODY_KEY_SIZE) {
		*error_r = ms_errf("key file %s: bad hex", path);
		ret = MS_ECONFIG;
		goto out;
	}
	memcpy(key_r, key, sizeof(key));
out:
	sodium_memzero(text, sizeof(text));
	sodium_memzero(key, sizeof(key));
	close(fd);
	return ret;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, ret = 0;

	if (slash == NULL)
		dir = ms_strdup(".");
	else if (slash == path)
		dir = ms_strdup("/");
	else {
		size_t n = (size_t)(slash - path);
		dir = ms_malloc(n + 1);
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		ret = -errno;
	else {
		if (fsync(fd) < 0)
			ret = -errno;
		close(fd);
	}
	free(dir);
	return ret;
}

int ms_body_key_generate(const char *path, const char **error_r)
{
	uint8_t key[MS_BODY_KEY_SIZE];
	char hex[2 * MS_BODY_KEY_SIZE + 2];
	const char *step;
	int fd, ret;

	if (sodium_init() < 0) {
		*error_r = "libsodium failed to initialise";
		return -EIO;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0) {
		ret = -errno;
		*error_r = ms_errf("key file %s: create: %s", path,
				   ms_strerror(ret));
		return ret;
	}
	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
	hex[2 * MS_BODY_KEY_SIZE] = '\n';
	/* a umask could have made it stricter; make it exactly 0600 */
	step = "fchmod";
	ret = fchmod(fd, 0600) < 0 ? -errno : 0;
	if (ret == 0) {
		step = "write";
		ret = write_all(fd, (const uint8_t *)hex,
				2 * MS_BODY_KEY_SIZE + 1);
	}
	if (ret == 0) {
		step = "fsync";
		ret = fsync(fd) < 0 ? -errno : 0;
	}
	if (close(fd) < 0 && ret == 0) {
		step = "close";
		ret = -errno;
	}
	if (ret == 0) {
		step = "fsync directory";
		ret = fsync_parent(path);
	}
	if (ret < 0) {
		*error_r = ms_errf("key file %s: %s: %s", path, step,
				   ms_strerror(ret));
		unlink(path);
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hex, sizeof(hex));
	return ret;
}

/* ---- payload ---- */

void ms_body_dedup_key(const struct ms_body_ctx *ctx, const void *plain,
		       size_t len, uint8_t out[32])
{
	crypto_generichash(out, MS_BODY_DEDUP_SIZE, len ? plain : NULL, len,
			   ctx->salt, sizeof(ctx->salt));
}

static void body_ad(const struct ms_body_ctx *ctx, const uint8_t *dedup,
		    uint64_t plain_len, uint8_t flags, uint8_t ad[AD_SIZE])
{
	memcpy(ad, ctx->store_id, 16);
	memcpy(ad + 16, dedup, MS_BODY_DEDUP_SIZE);
	ms_put64(ad + 16 + MS_BODY_DEDUP_SIZE, plain_len);
	ad[AD_SIZE - 1] = flags;
}

int ms_body_encode(const struct ms_body_ctx *ctx, const void *plain, size_t len,
		   struct ms_buf *payload, uint8_t *flags_r)
{
	uint8_t key[MS_BODY_DEDUP_SIZE];
	if (len > MS_BODY_MAX_PLAIN) {
		ms_buf_reset(payload);
		return MS_ETOOBIG;
	}
	ms_body_dedup_key(ctx, plain, len, key);
	return ms_body_encode_keyed(ctx, plain, len, key, payload, flags_r);
}

int ms_body_encode_keyed(const struct ms_body_ctx *ctx, const void *plain,
			 size_t len, const uint8_t key[MS_BODY_DEDUP_SIZE],
			 struct ms_buf *payload, uint8_t *flags_r)
{
	uint8_t dedup[MS_BODY_DEDUP_SIZE], ad[AD_SIZE];
	const uint8_t *inner = plain;
	size_t inner_len = len, zcap = 0;
	uint8_t *z = NULL, *p;
	uint8_t flags = 0;
	int ret;

	ms_buf_reset(payload);
	if (len > MS_BODY_MAX_PLAIN)
		return MS_ETOOBIG;

	if (ctx->compress && len >= 64) {
		/* keep the block only if it saves at least 1/16 */
		zcap = len - len / 16;
		z = ms_malloc(zcap);
		int n = LZ4_compress_default(plain, (char *)z, (int)len,
					     (int)zcap);
		if (n > 0) {
			inner = z;
			inner_len = (size_t)n;
			flags |= MS_REC_F_LZ4;
		}
	}
	if (ctx->sealed)
		flags |= MS_REC_F_SEALED;

	size_t total =
		MS_BODY_FIXED_SIZE + inner_len +
		(ctx->sealed ? MS_BODY_NONCE_SIZE + MS_BODY_TAG_SIZE : 0);
	if ((ret = ms_buf_resize(payload, total)) < 0)
		goto out;

	memcpy(dedup, key, sizeof(dedup));
	p = payload->data;
	memcpy(p, dedup, sizeof(dedup));
	ms_put64(p + MS_BODY_DEDUP_SIZE, (uint64_t)len);
	p += MS_BODY_FIXED_SIZE;
	if (!ctx->sealed) {
		if (inner_len > 0)
			memcpy(p, inner, inner_len);
	} else {
		unsigned long long clen = 0;
		body_ad(ctx, dedup, len, flags, ad);
		ms_random(p, MS_BODY_NONCE_SIZE);
		crypto_aead_xchacha20poly1305_ietf_encrypt(
			p + MS_BODY_NONCE_SIZE, &clen, inner, inner_len, ad,
			sizeof(ad), NULL, p, ctx->key);
		ms_assert(clen == inner_len + MS_BODY_TAG_SIZE);
	}
	*flags_r = flags;
out:
	if (z != NULL) {
		sodium_memzero(z, zcap);
		free(z);
	}
	if (ret < 0)
		ms_buf_reset(payload);
	return ret;
}

int ms_body_peek(const uint8_t *payload, size_t len, uint8_t key_r[32],
		 uint64_t *plain_len_r)
{
	if (len < MS_BODY_FIXED_SIZE)
		return MS_ETRUNC;
	memcpy(key_r, payload, MS_BODY_DEDUP_SIZE);
	*plain_len_r = ms_get64(payload + MS_BODY_DEDUP_SIZE);
	return 0;
}

/* The fixed part of a body payload (flags without the batch mark):
   known flags, the part there, the stored key want_key (if given), the
   plain length within bounds.  0 with *plain_len_r, or MS_ECORRUPT. */
static int body_head(uint8_t flags, const uint8_t *payload, size_t len,
		     const uint8_t *want_key, uint64_t *plain_len_r,
		     const char **error_r)
{
	if ((flags & ~(MS_REC_F_LZ4 | MS_REC_F_SEALED)) != 0) {
		*error_r = ms_errf("body flags 0x%02x unknown", flags);
		return MS_ECORRUPT;
	}
	if (len < MS_BODY_FIXED_SIZE) {
		*error_r = ms_errf("body payload of %zu bytes is shorter than "
				   "its %d-byte fixed part",
				   len, MS_BODY_FIXED_SIZE);
		return MS_ECORRUPT;
	}
	if (want_key != NULL &&
	    sodium_memcmp(payload, want_key, MS_BODY_DEDUP_SIZE) != 0) {
		*error_r = "body record has another dedup key than the one "
			   "asked for";
		return MS_ECORRUPT;
	}
	*plain_len_r = ms_get64(payload + MS_BODY_DEDUP_SIZE);
	if (*plain_len_r > MS_BODY_MAX_PLAIN) {
		*error_r = ms_errf("body plain length %llu over the limit %zu",
				   (unsigned long long)*plain_len_r,
				   MS_BODY_MAX_PLAIN);
		return MS_ECORRUPT;
	}
	return 0;
}

int ms_body_plain_view(uint8_t flags, const uint8_t *payload, size_t len,
		       const uint8_t want_key[MS_BODY_DEDUP_SIZE],
		       const uint8_t **plain_r, uint64_t *plain_len_r,
		       const char **error_r)
{
	uint64_t plain_len;
	int ret;

	flags &= (uint8_t)~MS_REC_F_BATCH;
	if ((ret = body_head(flags, payload, len, want_key, &plain_len,
			     error_r)) < 0)
		return ret;
	if ((flags & (MS_REC_F_LZ4 | MS_REC_F_SEALED)) != 0)
		return 0;
	if (len - MS_BODY_FIXED_SIZE != plain_len) {
		*error_r = ms_errf("body data is %zu bytes, stated plain "
				   "length %llu", len - MS_BODY_FIXED_SIZE,
				   (unsigned long long)plain_len);
		return MS_ECORRUPT;
	}
	*plain_r = payload + MS_BODY_FIXED_SIZE;
	*plain_len_r = plain_len;
	return 1;
}

/* want_key NULL: prove the dedup key by hashing the result; else the
   stored key must be want_key and the result is not hashed again. */
static int body_decode(const struct ms_body_ctx *ctx, uint8_t flags,
		       const uint8_t *payload, size_t len,
		       const uint8_t *want_key, struct ms_buf *plain,
		       const char **error_r)
{
	uint8_t dedup[MS_BODY_DEDUP_SIZE], ad[AD_SIZE];
	const uint8_t *stored_dedup, *data, *inner;
	uint8_t *scratch = NULL;
	size_t data_len, inner_len, scratch_len = 0;
	uint64_t plain_len;
	int ret = 0;

	ms_buf_reset(plain);
	/* the batch mark belongs to the log, not to the body (and is set
	   after encoding): it is not part of the additional data */
	flags &= (uint8_t)~MS_REC_F_BATCH;
	if ((ret = body_head(flags, payload, len, want_key, &plain_len,
			     error_r)) < 0)
		return ret;
	stored_dedup = payload;
	data = payload + MS_BODY_FIXED_SIZE;
	data_len = len - MS_BODY_FIXED_SIZE;
	if (plain_len > plain->max) {
		*error_r = ms_errf("body plain length %llu over the buffer "
				   "limit %zu",
				   (unsigned long long)plain_len, plain->max);
		return MS_ETOOBIG;
	}

	inner = data;
	inner_len = data_len;
	if ((flags & MS_REC_F_SEALED) != 0) {
		const uint8_t *nonce = data;
		unsigned long long mlen = 0;

		if (!ctx->sealed) {
			*error_r = "body is sealed but no at-rest key is "
				   "configured";
			return MS_ENOKEY;
		}
		if (data_len < MS_BODY_NONCE_SIZE + MS_BODY_TAG_SIZE) {
			*error_r = ms_errf("sealed body data of %zu bytes has "
					   "no room for nonce and tag",
					   data_len);
			return MS_ECORRUPT;
		}
		inner_len = data_len - MS_BODY_NONCE_SIZE - MS_BODY_TAG_SIZE;
		scratch_len = inner_len;
		scratch = ms_malloc(scratch_len);
		body_ad(ctx, stored_dedup, plain_len, flags, ad);
		if (crypto_aead_xchacha20poly1305_ietf_decrypt(
			    scratch, &mlen, NULL, nonce + MS_BODY_NONCE_SIZE,
			    data_len - MS_BODY_NONCE_SIZE, ad, sizeof(ad),
			    nonce, ctx->key) != 0) {
			*error_r = "sealed body failed authentication (wrong "
				   "key, or data changed)";
			ret = MS_EAUTH;
			goto out;
		}
		ms_assert(mlen == inner_len);
		inner = scratch;
	}

	if ((flags & MS_REC_F_LZ4) != 0) {
		if (inner_len > INT_MAX) {
			*error_r = ms_errf("LZ4 block of %zu bytes too long",
					   inner_len);
			ret = MS_ECORRUPT;
			goto out;
		}
		if (plain_len == 0) {
			*error_r = "LZ4 block for an empty body";
			ret = MS_ECORRUPT;
			goto out;
		}
		/* plain_len <= plain->max was checked above */
		if ((ret = ms_buf_resize(plain, (size_t)plain_len)) < 0) {
			*error_r = "body does not fit the plain buffer";
			goto out;
		}
		/* output capacity is plain_len: a longer block fails */
		int n = LZ4_decompress_safe((const char *)inner,
					    (char *)plain->data, (int)inner_len,
					    (int)plain_len);
		if (n < 0 || (uint64_t)n != plain_len) {
			*error_r = ms_errf("LZ4 block does not decode to the "
					   "stated %llu bytes",
					   (unsigned long long)plain_len);
			ret = MS_ECORRUPT;
			goto out;
		}
	} else {
		if (inner_len != plain_len) {
			*error_r = ms_errf("body data is %zu bytes, stated "
					   "plain length %llu",
					   inner_len,
					   (unsigned long long)plain_len);
			ret = MS_ECORRUPT;
			goto out;
		}
		if ((ret = ms_buf_append(plain, inner, inner_len)) < 0) {
			*error_r = "body does not fit the plain buffer";
			goto out;
		}
	}

	if (want_key != NULL)
		goto out;
	/* an unsealed body was keyed with the store's salt, even when this
	   context has an at-rest key: a store that turns sealing on later
	   still reads what it wrote before */
	if ((flags & MS_REC_F_SEALED) == 0 && ctx->sealed)
		crypto_generichash(dedup, MS_BODY_DEDUP_SIZE,
				   plain->len ? plain->data : NULL, plain->len,
				   ctx->store_salt, sizeof(ctx->store_salt));
	else
		ms_body_dedup_key(ctx, plain->data, plain->len, dedup);
	if (sodium_memcmp(dedup, stored_dedup, sizeof(dedup)) != 0) {
		*error_r = "body does not match its dedup key";
		ret = MS_ECORRUPT;
		goto out;
	}
out:
	if (scratch != NULL) {
		sodium_memzero(scratch, scratch_len);
		free(scratch);
	}
	if (ret < 0) {
		if (plain->len > 0)
			sodium_memzero(plain->data, plain->len);
		ms_buf_reset(plain);
	}
	return ret;
}

int ms_body_decode(const struct ms_body_ctx *ctx, uint8_t flags,
		   const uint8_t *payload, size_t len, struct ms_buf *plain,
		   const char **error_r)
{
	return body_decode(ctx, flags, payload, len, NULL, plain, error_r);
}

int ms_body_decode_known(const struct ms_body_ctx *ctx, uint8_t flags,
			 const uint8_t *payload, size_t len,
			 const uint8_t want_key[MS_BODY_DEDUP_SIZE],
			 struct ms_buf *plain, const char **error_r)
{
	return body_decode(ctx, flags, payload, len, want_key, plain,
			   error_r);
}
