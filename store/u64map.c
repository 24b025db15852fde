/*
 * u64map.c - id → pointer hash map; see u64map.h.
 */
#include <stdlib.h>

#include "buf.h"
#include "ms.h"
#include "u64map.h"

#define MIN_CAP 16

void ms_u64map_init(struct ms_u64map *m)
{
	m->keys = NULL;
	m->vals = NULL;
	m->cap = 0;
	m->n = 0;
}

/* Fibonacci hashing: ids are dense, the top bits of the product spread
   them over the slots. */
static size_t home(const struct ms_u64map *m, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & (m->cap - 1);
}

/* The slot of key, or of the empty slot where it would go. */
static size_t slot(const struct ms_u64map *m, uint64_t key)
{
	size_t i = home(m, key);
	while (m->keys[i] != 0 && m->keys[i] != key)
		i = (i + 1) & (m->cap - 1);
	return i;
}

void *ms_u64map_get(const struct ms_u64map *m, uint64_t key)
{
	if (m->n == 0 || key == 0)
		return NULL;
	size_t i = slot(m, key);
	return m->keys[i] == key ? m->vals[i] : NULL;
}

static void grow(struct ms_u64map *m)
{
	struct ms_u64map old = *m;
	m->cap = old.cap ? old.cap * 2 : MIN_CAP;
	m->keys = ms_calloc(m->cap, sizeof(*m->keys));
	m->vals = ms_calloc(m->cap, sizeof(*m->vals));
	for (size_t i = 0; i < old.cap; i++) {
		if (old.keys[i] == 0)
			continue;
		size_t j = slot(m, old.keys[i]);
		m->keys[j] = old.keys[i];
		m->vals[j] = old.vals[i];
	}
	free(old.keys);
	free(old.vals);
}

void ms_u64map_put(struct ms_u64map *m, uint64_t key, void *val)
{
	ms_assert(key != 0 && val != NULL);
	if ((m->n + 1) * 2 > m->cap)
		grow(m);
	size_t i = slot(m, key);
	if (m->keys[i] == 0) {
		m->keys[i] = key;
		m->n++;
	}
	m->vals[i] = val;
}

void *ms_u64map_del(struct ms_u64map *m, uint64_t key)
{
	if (m->n == 0 || key == 0)
		return NULL;
	size_t i = slot(m, key), mask = m->cap - 1;
	if (m->keys[i] != key)
		return NULL;
	void *val = m->vals[i];
	m->keys[i] = 0;
	m->vals[i] = NULL;
	m->n--;
	/* move back the entries of the run after i that a lookup would no
	   longer reach past the hole */
	for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
		size_t h = home(m, m->keys[j]);
		/* stays if its home lies cyclically in (i, j] */
		int stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
		if (stays)
			continue;
		m->keys[i] = m->keys[j];
		m->vals[i] = m->vals[j];
		m->keys[j] = 0;
		m->vals[j] = NULL;
		i = j;
	}
	return val;
}

void ms_u64map_free(struct ms_u64map *m)
{
	free(m->keys);
	free(m->vals);
	ms_u64map_init(m);
}
