/*
 * buf.c - bounded growable byte buffer; see buf.h.
 */
#include <stdlib.h>

#include "buf.h"
#include "msg.h"

void *ms_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		msg_fatal("oom bytes=%zu", n);
	return p;
}

void *ms_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		msg_fatal("oom count=%zu size=%zu", n, size);
	return p;
}

void *ms_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		msg_fatal("oom bytes=%zu what=realloc", n);
	return q;
}

char *ms_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = ms_malloc(n);
	memcpy(d, s, n);
	return d;
}

void ms_buf_init(struct ms_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max ? max : MS_BUF_MAX_DEFAULT;
}

void ms_buf_free(struct ms_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int ms_buf_reserve(struct ms_buf *b, size_t extra)
{
	if (extra > b->max || b->len > b->max - extra)
		return MS_ETOOBIG;
	size_t need = b->len + extra;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > b->max / 2 ? b->max : cap * 2;
	b->data = ms_realloc(b->data, cap);
	b->cap = cap;
	return 0;
}

int ms_buf_append(struct ms_buf *b, const void *p, size_t n)
{
	int ret = ms_buf_reserve(b, n);
	if (ret < 0)
		return ret;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int ms_buf_resize(struct ms_buf *b, size_t n)
{
	if (n > b->len) {
		int ret = ms_buf_reserve(b, n - b->len);
		if (ret < 0)
			return ret;
	}
	b->len = n;
	return 0;
}
