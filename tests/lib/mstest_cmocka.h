/*
 * mstest_cmocka.h - assertions shared by the cmocka tests; include after
 * <cmocka.h>.
 */
#ifndef MSTEST_CMOCKA_H
#define MSTEST_CMOCKA_H

#include <stdio.h>

#include "ms.h"

/* Fail with the case's name unless got == want; codes shown by name. */
#define CHECK_RET(got, want, ...)                                          \
	do {                                                               \
		int got_ = (got), want_ = (want);                          \
		if (got_ != want_) {                                       \
			char what_[200];                                   \
			snprintf(what_, sizeof(what_), __VA_ARGS__);       \
			fail_msg("%s: got %d (%s), want %d (%s)", what_,   \
				 got_, ms_strerror(got_), want_,           \
				 ms_strerror(want_));                      \
		}                                                          \
	} while (0)

#endif
