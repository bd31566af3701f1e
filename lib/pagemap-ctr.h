/* SPDX-License-Identifier: MIT */
/*
 * Containers of the page-state map (internal to lib/pagemap.c).
 *
 * A chunk is 65,536 pages (fewer for the last chunk of a map: clen).  A
 * chunk that is all clear or all set has no container; otherwise its set
 * pages are held in one of three forms, chosen by size:
 *
 *   ARRAY   sorted uint16 offsets of the set pages, at most 4096 (8 KiB)
 *   RUN     sorted, non-adjacent {start, last} runs, at most 2048 (8 KiB)
 *   BITSET  one bit per page, 8 KiB
 *
 * Every container carries its cardinality and run count, kept exact by
 * every operation, so choosing a form is O(1).  The functions below are
 * pure container algorithms; policy (which form, when to allocate) lives
 * in pagemap.c.
 */
#ifndef CVM_PAGEMAP_CTR_H
#define CVM_PAGEMAP_CTR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK_SHIFT	16
#define CHUNK_PAGES	(1u << CHUNK_SHIFT)
#define ARRAY_MAX	4096u	/* elements: 8 KiB, the size of a bitset */
#define RUN_MAX		2048u	/* runs: 8 KiB */
#define BITSET_WORDS	(CHUNK_PAGES / 64)
#define BITSET_BYTES	(CHUNK_PAGES / 8)

/* Typecodes, stored in the low bits of a leaf slot. */
enum ctr_type { CT_UNIFORM = 0, CT_ARRAY = 1, CT_RUN = 2, CT_BITSET = 3 };

struct run16 {
	uint16_t start;
	uint16_t last;		/* inclusive, so a run can reach offset 65535 */
};

struct ctr {
	uint32_t card;		/* set pages */
	uint16_t nruns;		/* maximal runs of set pages (<= 32768) */
	uint16_t cap;		/* ARRAY: elements, RUN: runs; BITSET: unused */
	uint64_t data[];	/* uint16_t[cap], struct run16[cap] or uint64_t[1024] */
};

/*
 * Ask for a container's first four cache lines at once: its header and
 * then all of a small container (up to 124 offsets or 62 runs, the size
 * of scattered shared pages), which the probe's binary search would
 * otherwise fetch one dependent miss after another.
 */
static inline void ctr_prefetch(const struct ctr *c)
{
	for (int i = 0; i < 4; i++)
		__builtin_prefetch((const char *)c + 64 * i);
}

static inline uint16_t *ctr_arr(const struct ctr *c)
{
	return (uint16_t *)c->data;
}

static inline struct run16 *ctr_run(const struct ctr *c)
{
	return (struct run16 *)c->data;
}

static inline uint64_t *ctr_words(const struct ctr *c)
{
	return (uint64_t *)c->data;
}

/* One chunk as the algorithms see it: a container, or uniform uval. */
struct chunkv {
	struct ctr *c;		/* NULL when type == CT_UNIFORM */
	unsigned type;
	bool uval;
	uint32_t clen;		/* pages in this chunk, 1 .. 65536 */
};

/* Receives [start, end) offsets, ascending; non-zero stops the walk. */
typedef int (*ctr_emit_fn)(void *ctx, uint32_t start, uint32_t end);

size_t ctr_bytes(unsigned type, uint32_t cap);

static inline uint32_t cv_card(const struct chunkv *cv)
{
	return cv->c ? cv->c->card : cv->uval ? cv->clen : 0;
}

static inline uint32_t cv_nruns(const struct chunkv *cv)
{
	return cv->c ? cv->c->nruns : cv->uval;
}

bool cv_test(const struct chunkv *cv, uint32_t off);
/* First offset >= off (off < clen) whose bit is val, or -1. */
int32_t cv_next(const struct chunkv *cv, uint32_t off, bool val);
/* Last offset <= off (off < clen) whose bit is val, or -1. */
int32_t cv_prev(const struct chunkv *cv, uint32_t off, bool val);
/* Each maximal run of val clipped to [lo, hi), ascending. */
int cv_runs(const struct chunkv *cv, uint32_t lo, uint32_t hi, bool val,
	    ctr_emit_fn fn, void *ctx);

/*
 * Joins runs that meet (across chunk and leaf edges) before handing them
 * on: the walk of a whole guest goes through here once per run, so the
 * joining is inline and the walk per container type a plain loop.
 */
struct runsink {
	int (*fn)(void *opaque, uint64_t start, uint64_t len);
	void *opaque;
	uint64_t s, e;		/* pending run, none when s == e */
};

static inline int sink_add(struct runsink *k, uint64_t s, uint64_t e)
{
	int ret = 0;

	if (k->e == s && k->s != k->e) {
		k->e = e;
		return 0;
	}
	if (k->s != k->e)
		ret = k->fn(k->opaque, k->s, k->e - k->s);
	k->s = s;
	k->e = e;
	return ret;
}

/* The runs of val clipped to [lo, hi) of a chunk at page base, into k. */
int cv_walk(const struct chunkv *cv, uint64_t base, uint32_t lo, uint32_t hi, bool val,
	    struct runsink *k);

/*
 * What assigning [lo, hi) needs to know about a chunk, found with one
 * search: the hot path then reports and modifies without searching again.
 */
struct probe {
	uint32_t in;		/* set pages in [lo, hi) */
	uint32_t starts;	/* run starts at offsets lo ..= hi */
	bool left, right;	/* bits lo - 1 and hi; false outside the chunk */
	uint32_t i, j;		/* ARRAY: elements [i, j) lie in [lo, hi);
				 * RUN: runs [i, j) meet [lo - 1, hi] */
};

void cv_probe(const struct chunkv *cv, uint32_t lo, uint32_t hi, struct probe *pr);
/* cv_runs() for the range a probe was made for. */
int cv_report(const struct chunkv *cv, const struct probe *pr, uint32_t lo, uint32_t hi,
	      bool val, ctr_emit_fn fn, void *ctx);

/*
 * Assign [lo, hi) := val in place, given the probe of that range; card and
 * nruns are the values after the assignment (the caller computed them to
 * choose the form) and the container must have room for them.
 */
void ctr_assign(unsigned type, struct ctr *c, const struct probe *pr, uint32_t lo,
		uint32_t hi, bool val, uint32_t card, uint32_t nruns);
/*
 * Fill dst, a fresh container of the given type and capacity, with src's
 * pages with [lo, hi) := val applied (lo == hi: a plain copy/conversion).
 */
void ctr_build(struct ctr *dst, unsigned type, uint32_t cap, const struct chunkv *src,
	       uint32_t lo, uint32_t hi, bool val);
/*
 * ctr_build() for a container that only moves to a bigger one of its own
 * type (ARRAY or RUN, cap >= its elements): a copy, then ctr_assign() with
 * the probe of src, which still describes the copy.
 */
void ctr_regrow(struct ctr *dst, unsigned type, uint32_t cap, const struct ctr *src,
		const struct probe *pr, uint32_t lo, uint32_t hi, bool val, uint32_t card,
		uint32_t nruns);
/* Structural invariants of one container: 0, or -EUCLEAN and why. */
int ctr_check(unsigned type, const struct ctr *c, uint32_t clen, char *why, size_t len);

#endif
