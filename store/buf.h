/*
 * buf.h - bounded growable byte buffer (cf. Postfix vstring).
 *
 * A buffer never grows past its max (set at init; 0 means MS_BUF_MAX_DEFAULT):
 * growing past it fails with MS_ETOOBIG and leaves the buffer as it was.
 * Growing may move the data: pointers into data are valid only until the
 * next call that can grow the buffer.  Out of memory is fatal (msg_fatal),
 * as in Postfix's mymalloc: an allocation succeeds or never returns.
 */
#ifndef MS_BUF_H
#define MS_BUF_H

#include "ms.h"

#define MS_BUF_MAX_DEFAULT ((size_t)1 << 30)

struct ms_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t max;
};

void ms_buf_init(struct ms_buf *b, size_t max);
void ms_buf_free(struct ms_buf *b);
/* Make room for len + extra bytes. 0 or MS_ETOOBIG. */
int ms_buf_reserve(struct ms_buf *b, size_t extra);
/* Append n bytes. 0 or MS_ETOOBIG. */
int ms_buf_append(struct ms_buf *b, const void *p, size_t n);
/* Set len to n (growing with uninitialised bytes). 0 or MS_ETOOBIG. */
int ms_buf_resize(struct ms_buf *b, size_t n);
static inline void ms_buf_reset(struct ms_buf *b)
{
	b->len = 0;
}

/* Allocation that succeeds or exits (msg_fatal). */
void *ms_malloc(size_t n);
void *ms_calloc(size_t n, size_t size);
void *ms_realloc(void *p, size_t n);
char *ms_strdup(const char *s);

#endif
