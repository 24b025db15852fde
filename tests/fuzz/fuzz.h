/*
 * fuzz.h - the libFuzzer entry points, declared once.
 *
 * Every tests/fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput() for one
 * pure parser; it must not keep state between calls, and it returns 0.
 * The Makefile force-includes this header (-include) into everything under
 * tests/fuzz/, so targets need not include it themselves.  The same target
 * links either with libFuzzer (`make fuzz`) or with replay.c (`make check`,
 * which runs the committed corpus in tests/fuzz/corpus/<name>/).
 */
#ifndef MS_FUZZ_H
#define MS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: called once before the first input if a target defines it. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
