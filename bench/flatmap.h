/* SPDX-License-Identifier: MIT */
/*
 * A flat bitmap, one bit per page, searched a word at a time (the way
 * QEMU's find_next_bit / bitmap_set do it): the baseline for
 * bench-pagemap.  Written for the benchmark; not part of the library.
 */
#ifndef CVM_BENCH_FLATMAP_H
#define CVM_BENCH_FLATMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct flatmap {
	uint64_t nbits;
	uint64_t *words;
};

typedef int (*flatmap_run_fn)(void *opaque, uint64_t start, uint64_t len);

int flatmap_init(struct flatmap *fm, uint64_t nbits, bool initial);
void flatmap_fini(struct flatmap *fm);
size_t flatmap_bytes(const struct flatmap *fm);
/* First bit >= off (and < size) equal to val, or size. */
uint64_t flatmap_find_next(const struct flatmap *fm, uint64_t size, uint64_t off, bool val);
void flatmap_fill(struct flatmap *fm, uint64_t start, uint64_t len, bool val);
/* [start, start+len) := val, reporting each changed run first. */
void flatmap_assign(struct flatmap *fm, uint64_t start, uint64_t len, bool val,
		    flatmap_run_fn changed, void *opaque);
/* Each maximal run of set bits, ascending. */
void flatmap_for_each_run(const struct flatmap *fm, flatmap_run_fn fn, void *opaque);

#endif
