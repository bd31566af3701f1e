// SPDX-License-Identifier: MIT
/* The flat-bitmap baseline of bench-pagemap (see flatmap.h). */
#include <stdlib.h>
#include <string.h>

#include "flatmap.h"

#define WORD_BITS 64

int flatmap_init(struct flatmap *fm, uint64_t nbits, bool initial)
{
	size_t nwords = (nbits + WORD_BITS - 1) / WORD_BITS;

	fm->nbits = nbits;
	fm->words = malloc(nwords * sizeof(uint64_t));
	if (!fm->words)
		return -1;
	memset(fm->words, 0, nwords * sizeof(uint64_t));
	if (initial)
		flatmap_fill(fm, 0, nbits, true);
	return 0;
}

void flatmap_fini(struct flatmap *fm)
{
	free(fm->words);
	fm->words = NULL;
}

size_t flatmap_bytes(const struct flatmap *fm)
{
	return (fm->nbits + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t);
}

uint64_t flatmap_find_next(const struct flatmap *fm, uint64_t size, uint64_t off, bool val)
{
	const uint64_t *w = fm->words;
	uint64_t i = off / WORD_BITS, x;

	if (off >= size)
		return size;
	x = (val ? w[i] : ~w[i]) & (~0ull << (off % WORD_BITS));
	for (;;) {
		if (x) {
			uint64_t p = i * WORD_BITS + __builtin_ctzll(x);

			return p < size ? p : size;
		}
		if (++i * WORD_BITS >= size)
			return size;
		x = val ? w[i] : ~w[i];
	}
}

void flatmap_fill(struct flatmap *fm, uint64_t start, uint64_t len, bool val)
{
	uint64_t *w = fm->words, end = start + len;
	uint64_t i = start / WORD_BITS, last = (end - 1) / WORD_BITS;
	uint64_t m = ~0ull << (start % WORD_BITS);

	for (; i <= last; i++, m = ~0ull) {
		if (i == last)
			m &= ~0ull >> (WORD_BITS - 1 - (end - 1) % WORD_BITS);
		w[i] = val ? w[i] | m : w[i] & ~m;
	}
}

void flatmap_assign(struct flatmap *fm, uint64_t start, uint64_t len, bool val,
		    flatmap_run_fn changed, void *opaque)
{
	uint64_t end = start + len, p = start;
	bool any = false;

	while (p < end) {
		uint64_t s = flatmap_find_next(fm, end, p, !val), e;

		if (s >= end)
			break;
		e = flatmap_find_next(fm, end, s, val);
		changed(opaque, s, e - s);
		any = true;
		p = e;
	}
	if (any)
		flatmap_fill(fm, start, len, val);
}

void flatmap_for_each_run(const struct flatmap *fm, flatmap_run_fn fn, void *opaque)
{
	uint64_t p = 0;

	for (;;) {
		uint64_t s = flatmap_find_next(fm, fm->nbits, p, true), e;

		if (s >= fm->nbits)
			return;
		e = flatmap_find_next(fm, fm->nbits, s, false);
		fn(opaque, s, e - s);
		p = e;
	}
}
