/*
 * test_u64map.c - the id → pointer map (store/u64map.c): puts, gets,
 * replacements and removals checked against a plain array after every
 * step, with ids that collide in the table's low bits (runs that wrap
 * around its end, removals in the middle of a run), through several
 * growths and back to empty; and the walk over every value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "u64map.h"

#define IDS 3000

/* a seeded generator of our own (random() would tie the test to libc) */
static uint64_t rng_state = 0x853c49e6748fea9bULL;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint64_t ids[IDS];
static void *ref[IDS];		/* what the map must say for ids[i] */
static char vals[IDS];		/* pointers to hand out */

static void check_all(const struct ms_u64map *m)
{
	size_t n = 0;
	for (size_t i = 0; i < IDS; i++) {
		assert_ptr_equal(ms_u64map_get(m, ids[i]), ref[i]);
		n += ref[i] != NULL;
	}
	assert_int_equal(m->n, n);
	assert_true(m->cap == 0 || m->n * 2 <= m->cap);
}

static void test_against_array(void **state)
{
	(void)state;
	struct ms_u64map m;
	ms_u64map_init(&m);
	/* dense ids, and ids that share their hash's low bits often:
	   multiples of a large power of two */
	for (size_t i = 0; i < IDS; i++)
		ids[i] = i % 2 ? i + 1 : ((uint64_t)(i + 1) << 40);
	assert_null(ms_u64map_get(&m, 5));
	assert_null(ms_u64map_del(&m, 5));
	assert_null(ms_u64map_get(&m, 0));
	for (int step = 0; step < 200000; step++) {
		size_t i = rng() % IDS;
		switch (rng() % 4) {
		case 0:
		case 1: /* put, or replace */
			ms_u64map_put(&m, ids[i], &vals[(i + step) % IDS]);
			ref[i] = &vals[(i + step) % IDS];
			break;
		case 2:
			assert_ptr_equal(ms_u64map_del(&m, ids[i]), ref[i]);
			ref[i] = NULL;
			break;
		default:
			assert_ptr_equal(ms_u64map_get(&m, ids[i]), ref[i]);
			break;
		}
		if (step % 5000 == 0)
			check_all(&m);
	}
	check_all(&m);
	/* the walk sees every value once */
	size_t seen = 0;
	MS_U64MAP_EACH(&m, k)
	{
		size_t j = 0;
		while (j < IDS && ids[j] != m.keys[k])
			j++;
		assert_true(j < IDS);
		assert_ptr_equal(m.vals[k], ref[j]);
		seen++;
	}
	assert_int_equal(seen, m.n);
	/* all out again, in a random order */
	for (size_t k = 0; k < IDS; k++) {
		size_t i = rng() % IDS;
		assert_ptr_equal(ms_u64map_del(&m, ids[i]), ref[i]);
		ref[i] = NULL;
	}
	for (size_t i = 0; i < IDS; i++) {
		assert_ptr_equal(ms_u64map_del(&m, ids[i]), ref[i]);
		ref[i] = NULL;
	}
	check_all(&m);
	assert_int_equal(m.n, 0);
	ms_u64map_free(&m);
	assert_int_equal(m.cap, 0);
	assert_null(ms_u64map_get(&m, ids[0]));
}

/* A full run around the table's end: removing its first entry moves
   the ones that wrapped around back into reach. */
static void test_wrapping_run(void **state)
{
	(void)state;
	struct ms_u64map m;
	ms_u64map_init(&m);
	ms_u64map_put(&m, 1, &vals[0]); /* 16 slots now */
	ms_u64map_del(&m, 1);
	/* keys whose home is the last slot, found by search */
	uint64_t same[6];
	size_t n = 0;
	for (uint64_t k = 1; n < 6; k++) {
		size_t h = (size_t)((k * 0x9e3779b97f4a7c15ULL) >> 32) & 15;
		if (h == 15)
			same[n++] = k;
	}
	for (size_t i = 0; i < 6; i++)
		ms_u64map_put(&m, same[i], &vals[i]);
	assert_int_equal(m.cap, 16);
	assert_int_equal(m.keys[15], same[0]);
	assert_int_equal(m.keys[0], same[1]); /* wrapped */
	assert_ptr_equal(ms_u64map_del(&m, same[0]), &vals[0]);
	for (size_t i = 1; i < 6; i++)
		assert_ptr_equal(ms_u64map_get(&m, same[i]), &vals[i]);
	assert_ptr_equal(ms_u64map_del(&m, same[3]), &vals[3]);
	for (size_t i = 1; i < 6; i++)
		assert_ptr_equal(ms_u64map_get(&m, same[i]),
				 i == 3 ? NULL : &vals[i]);
	ms_u64map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_against_array),
		cmocka_unit_test(test_wrapping_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
