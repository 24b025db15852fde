/*
 * ms.h - what every mstore module shares: error codes, log positions,
 * little-endian byte helpers and invariant checks.
 *
 * Errors: functions return 0 on success and a negative value on failure:
 * -errno for a system error, or one of the MS_E* codes below (all below
 * MS_ERR_BASE, so they never collide with errno) for a format or state
 * problem.  ms_strerror() names either kind.
 *
 * ms_assert() states an invariant of our own code; it is never used to
 * check input.  A failed assertion reports file, line and function and
 * aborts (it is a bug, see msg_panic in msg.h).
 */
#ifndef MS_H
#define MS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MS_ERR_BASE (-10000)
enum {
	MS_ECORRUPT = MS_ERR_BASE - 1,	/* bytes failed a check */
	MS_EVERSION = MS_ERR_BASE - 2,	/* format version we do not know */
	MS_EMAGIC = MS_ERR_BASE - 3,	/* not an mstore file */
	MS_ETOOBIG = MS_ERR_BASE - 4,	/* over a size limit */
	MS_ENOCOPY = MS_ERR_BASE - 5,	/* no copy of the log can be written */
	MS_EAUTH = MS_ERR_BASE - 6,	/* sealed body failed authentication */
	MS_ESTATE = MS_ERR_BASE - 7,	/* operation not valid in this state */
	MS_EMISMATCH = MS_ERR_BASE - 8,	/* copies belong to different stores */
	MS_ECONFIG = MS_ERR_BASE - 9,	/* bad configuration */
	MS_ETRUNC = MS_ERR_BASE - 10,	/* input ends before the item does */
	MS_ENOKEY = MS_ERR_BASE - 11,	/* sealed body but no at-rest key */
	MS_ENOTFOUND = MS_ERR_BASE - 12,/* no such record / position */
	MS_EREPLICA = MS_ERR_BASE - 13,	/* a DR replica: read-only until promoted */
};

/* Name of an error: an MS_E* code or a negative errno. Never NULL. */
const char *ms_strerror(int err);

/* A place in the log: segment number and byte offset in that segment. */
struct ms_pos {
	uint64_t seg;
	uint64_t off;
};

static inline int ms_pos_cmp(struct ms_pos a, struct ms_pos b)
{
	if (a.seg != b.seg)
		return a.seg < b.seg ? -1 : 1;
	if (a.off != b.off)
		return a.off < b.off ? -1 : 1;
	return 0;
}

/* Little-endian encoding: every integer on disk and on the wire. */
static inline void ms_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void ms_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void ms_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t ms_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t ms_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t ms_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

void ms_assert_fail(const char *expr, const char *file, int line,
		    const char *func) __attribute__((noreturn));

#define ms_assert(expr)                                                   \
	((expr) ? (void)0                                                 \
		: ms_assert_fail(#expr, __FILE__, __LINE__, __func__))

/*
 * Error detail for const char **error_r out-params: formats into one of a
 * few thread-local rotating buffers (cf. Dovecot's data stack), so the text
 * stays valid until MS_ERRF_SLOTS more calls on the same thread.  Copy it if
 * it must live longer.
 */
#define MS_ERRF_SLOTS 8
#define MS_ERRF_LEN 512
const char *ms_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define MS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
