/*
 * body.h - message bodies as stored in BODY log records: dedup key, LZ4
 * compression, XChaCha20-Poly1305 sealing with the at-rest key.
 *
 * Payload of a BODY record (docs/format.md, "Body record payload"):
 *
 *   0   u8[32] dedup key: BLAKE2b-256 of the plain body, keyed with the
 *              effective dedup salt (see below)
 *   32  u64    plain length
 *   40  data   not sealed: inner
 *              sealed:     nonce[24] || XChaCha20-Poly1305-IETF(inner) ||
 *                          tag[16]
 *       inner: an LZ4 block if the record has MS_REC_F_LZ4, else the plain
 *              bytes
 *
 * The AEAD additional data is store_id(16) || dedup key(32) || plain length
 * (u64 LE) || record flags(u8): a sealed body cannot be moved to another
 * store, paired with another dedup key or length, or have its LZ4 flag
 * flipped without failing authentication.
 *
 * Effective dedup salt: without an at-rest key it is the store's salt (from
 * the segment header).  With a key it is BLAKE2b-256, keyed with the at-rest
 * key, of "mstore-dedup-salt" || store salt.  The store salt lies on disk
 * next to the data; deriving the salt from the key means a disk thief
 * without the key cannot confirm a guessed message by recomputing its
 * dedup key.
 *
 * The context holds key material: wipe it with ms_body_ctx_wipe().  All
 * functions are pure apart from libsodium's random nonce and the key file
 * helpers; decode trusts nothing in the payload and allocates at most the
 * payload size plus the plain length it was asked to check
 * (<= MS_BODY_MAX_PLAIN and <= the plain buffer's max).
 */
#ifndef MS_BODY_H
#define MS_BODY_H

#include "buf.h"
#include "rec.h"

#define MS_BODY_KEY_SIZE 32
#define MS_BODY_DEDUP_SIZE 32
#define MS_BODY_FIXED_SIZE 40 /* dedup key + plain length */
#define MS_BODY_NONCE_SIZE 24
#define MS_BODY_TAG_SIZE 16
/* Largest payload overhead: fixed part, nonce and tag. */
#define MS_BODY_OVERHEAD_MAX \
	(MS_BODY_FIXED_SIZE + MS_BODY_NONCE_SIZE + MS_BODY_TAG_SIZE)
/*
 * Largest plain body.  LZ4 is kept only when it is smaller than the plain
 * bytes, so the data is never longer than the plain length and every
 * encoded payload fits MS_REC_MAX_PAYLOAD.
 */
#define MS_BODY_MAX_PLAIN ((size_t)MS_REC_MAX_PAYLOAD - MS_BODY_OVERHEAD_MAX)

struct ms_body_ctx {
	uint8_t store_id[16];
	uint8_t salt[32]; /* effective dedup salt */
	uint8_t store_salt[32]; /* the store's own, for unsealed bodies */
	int sealed;       /* 1 if key holds an at-rest key */
	uint8_t key[32];
	int compress; /* try LZ4 when encoding */
};

/*
 * n random bytes (n <= 4096) for message GUIDs and body nonces, from a
 * per-thread pool that one getrandom fills (randombytes_buf made a system
 * call for each: one per APPEND, 11,050 a second at 11,400 appends a
 * second).  The bytes are the kernel's either way, and each is wiped from
 * the pool when taken; mstored and the tools do not fork.  Keys are made
 * with randombytes_buf itself.
 */
void ms_random(void *out, size_t n);

/*
 * Set up ctx for a store.  atrest_key is 32 bytes or NULL (bodies are
 * then written unsealed and sealed ones cannot be read).  Calls
 * sodium_init(); returns 0, or -EIO if libsodium cannot start (no usable
 * random source).  The key is copied; the caller may wipe its own copy.
 */
int ms_body_ctx_init(struct ms_body_ctx *ctx, const uint8_t store_id[16],
		     const uint8_t store_salt[32], const uint8_t *atrest_key,
		     int compress);
/* Wipe the key and salt (sodium_memzero); ctx must be re-initialised. */
void ms_body_ctx_wipe(struct ms_body_ctx *ctx);

/*
 * Read an at-rest key file (kept outside the store): exactly 64 hex digits,
 * optionally followed by one "\n", nothing else.  The file must be a
 * regular file and neither readable nor writable by group or other
 * (mode & 077 == 0).  0 with key_r filled; -errno if it cannot be opened
 * or read; MS_ECONFIG if its mode or contents are wrong.  *error_r names
 * the file and the problem.  key_r is untouched on failure.
 */
int ms_body_key_load(const char *path, uint8_t key_r[32], const char **error_r);
/*
 * Create a new key file at path with a random key, mode 0600.  Never
 * overwrites: an existing path gives -EEXIST.  The file and its directory
 * are fsynced before 0 is returned; on failure nothing is left behind.
 */
int ms_body_key_generate(const char *path, const char **error_r);

/* BLAKE2b-256 of plain, keyed with ctx's effective dedup salt. */
void ms_body_dedup_key(const struct ms_body_ctx *ctx, const void *plain,
		       size_t len, uint8_t out[32]);

/*
 * Encode plain as a BODY payload: payload is reset, then filled; *flags_r
 * gets the record flags (MS_REC_F_LZ4, MS_REC_F_SEALED).  LZ4 is used when
 * ctx->compress, len >= 64 and the block is at most len - len/16 bytes.
 * Sealed if ctx has a key.  0; MS_ETOOBIG if len > MS_BODY_MAX_PLAIN or
 * the payload does not fit payload->max (payload is then empty and
 * *flags_r untouched).
 */
int ms_body_encode(const struct ms_body_ctx *ctx, const void *plain, size_t len,
		   struct ms_buf *payload, uint8_t *flags_r);

/*
 * The same, with the dedup key the caller already computed with
 * ms_body_dedup_key() (a writer that looked the body up first need not
 * hash it twice).  A wrong key is not detected here: decode will refuse
 * the body.
 */
int ms_body_encode_keyed(const struct ms_body_ctx *ctx, const void *plain,
			 size_t len, const uint8_t key[MS_BODY_DEDUP_SIZE],
			 struct ms_buf *payload, uint8_t *flags_r);

/*
 * Read the fixed part (dedup key, plain length) without checking the
 * rest: for index building from a payload prefix.  0; MS_ETRUNC if len is
 * below MS_BODY_FIXED_SIZE (outputs untouched).  The values are not
 * verified: only ms_body_decode() proves them.
 */
int ms_body_peek(const uint8_t *payload, size_t len, uint8_t key_r[32],
		 uint64_t *plain_len_r);

/*
 * Decode a BODY payload with its record flags into plain (reset, then
 * filled).  Every check comes before use, in this order:
 *   fixed part present                                   MS_ECORRUPT
 *   plain length <= MS_BODY_MAX_PLAIN                    MS_ECORRUPT
 *   plain length <= plain->max                           MS_ETOOBIG
 *   sealed: ctx has a key                                MS_ENOKEY
 *   sealed: room for nonce and tag                       MS_ECORRUPT
 *   sealed: AEAD tag verifies (ciphertext, AD)           MS_EAUTH
 *   LZ4: block decompresses to exactly plain length      MS_ECORRUPT
 *   not LZ4: data length equals plain length             MS_ECORRUPT
 *   dedup key of the result equals the stored one        MS_ECORRUPT
 * 0 on success.  On failure plain->len is 0 and *error_r says which check
 * failed.
 */
int ms_body_decode(const struct ms_body_ctx *ctx, uint8_t flags,
		   const uint8_t *payload, size_t len, struct ms_buf *plain,
		   const char **error_r);

/*
 * The same for a read whose record checksum ms_log_read() has just
 * verified, of the body the index names by want_key: the stored dedup key
 * must equal want_key (else MS_ECORRUPT: the index points at another
 * body), and the result is not hashed again.  What the last check of
 * ms_body_decode() adds is already covered: the payload's bytes are the
 * ones written (the record's XXH3), a sealed body is authenticated with
 * its dedup key in the additional data, and LZ4 must give exactly the
 * plain length.  The daemon's FETCH_BODY uses it; cat, export and
 * failback prove the key in full.
 */
int ms_body_decode_known(const struct ms_body_ctx *ctx, uint8_t flags,
			 const uint8_t *payload, size_t len,
			 const uint8_t want_key[MS_BODY_DEDUP_SIZE],
			 struct ms_buf *plain, const char **error_r);
/*
 * For the same read, a body stored as is (neither LZ4 nor sealed): the
 * checks of ms_body_decode_known() without the copy.  1 with *plain_r
 * pointing into payload (the plain bytes, *plain_len_r of them); 0 if
 * the body is compressed or sealed (decode it); MS_ECORRUPT as
 * ms_body_decode_known() would.
 */
int ms_body_plain_view(uint8_t flags, const uint8_t *payload, size_t len,
		       const uint8_t want_key[MS_BODY_DEDUP_SIZE],
		       const uint8_t **plain_r, uint64_t *plain_len_r,
		       const char **error_r);

#endif
