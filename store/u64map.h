/*
 * u64map.h - a hash map from a 64-bit id (users, mailboxes) to a pointer,
 * for the daemon's per-id state that must not cost a walk per request
 * when a store has a million users.
 *
 * Open addressing with linear probing, at most half full; a removal moves
 * the entries after it back (no tombstones), so a lookup never walks more
 * than the run its key hashes into.  Key 0 is not allowed (it marks an
 * empty slot; the store's ids start at 1).  The map owns nothing it
 * points to.
 */
#ifndef MS_U64MAP_H
#define MS_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct ms_u64map {
	uint64_t *keys;		/* cap slots; 0: empty */
	void **vals;
	size_t cap;		/* 0 or a power of two */
	size_t n;
};

/* A zeroed struct is an empty map; ms_u64map_init() makes one too. */
void ms_u64map_init(struct ms_u64map *m);
/* The value for key, or NULL. */
void *ms_u64map_get(const struct ms_u64map *m, uint64_t key);
/* Set key to val (replacing a value it had); key != 0, val != NULL. */
void ms_u64map_put(struct ms_u64map *m, uint64_t key, void *val);
/* Remove key: its value, or NULL if it was not there. */
void *ms_u64map_del(struct ms_u64map *m, uint64_t key);
/* Every value, for freeing: slot i holds one when keys[i] != 0. */
#define MS_U64MAP_EACH(m, i) \
	for (size_t i = 0; i < (m)->cap; i++) \
		if ((m)->keys[i] != 0)
/* Free the map's own memory (not the values); it is empty again. */
void ms_u64map_free(struct ms_u64map *m);

#endif
