/* SPDX-License-Identifier: MIT */
/*
 * The page-state map: one bit per page (1 = shared), for up to 2^32 pages,
 * as a roaring-style compressed bitmap.  Page indexes are relative to the
 * region (0 .. npages-1).  Not thread-safe: the region serialises access.
 *
 * Transactions.  The region applies several assignments and must be able to
 * undo them without any chance of failure.  Between pagemap_txn_begin() and
 * pagemap_txn_end() the map never frees or shrinks memory, so assigning back
 * runs that an assignment of the same transaction reported as changed
 * (the undo) cannot fail.  pagemap_txn_end() re-compacts, best effort.
 * The undo goes back through the states the transaction went through:
 * assignments are undone last first (the runs of one assignment in any
 * order); an undo in another order may need memory the map does not have.
 */
#ifndef CVM_PAGEMAP_H
#define CVM_PAGEMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pagemap;

/* Called once per maximal run [start, start+len) (page indexes). */
typedef int (*pagemap_run_fn)(void *opaque, uint64_t start, uint64_t len);

/* npages in 1 .. 2^32; initial: every page set (true) or clear. */
int  pagemap_create(uint64_t npages, bool initial, struct pagemap **out);
void pagemap_destroy(struct pagemap *pm);
uint64_t pagemap_npages(const struct pagemap *pm);

/*
 * Set [start, start+len) to value, reporting each maximal sub-run whose
 * state actually changed to changed() (may be NULL), ascending; runs are
 * maximal across chunk boundaries.  If changed() returns non-zero, or an
 * allocation fails (-ENOMEM), the map is left exactly as before and that
 * value is returned.  Otherwise returns 0.  changed() must not touch the map.
 * The caller guarantees start + len <= npages and len > 0.
 */
int pagemap_assign(struct pagemap *pm, uint64_t start, uint64_t len, bool value,
		   pagemap_run_fn changed, void *opaque);

void pagemap_txn_begin(struct pagemap *pm);
void pagemap_txn_end(struct pagemap *pm);

/* 0: all clear, 1: all set, 2: mixed (the values of enum cvm_state). */
int  pagemap_query(const struct pagemap *pm, uint64_t start, uint64_t len);
bool pagemap_test(const struct pagemap *pm, uint64_t pos);
/* First page >= pos whose bit is value; npages if none (pos < npages). */
uint64_t pagemap_next(const struct pagemap *pm, uint64_t pos, bool value);
/* Last page <= pos whose bit is value; UINT64_MAX if none. */
uint64_t pagemap_prev(const struct pagemap *pm, uint64_t pos, bool value);
/* Each maximal run of value intersected with [start, start+len), ascending;
 * a non-zero return from fn stops the walk and is returned. */
int pagemap_for_each_run(const struct pagemap *pm, uint64_t start, uint64_t len,
			 bool value, pagemap_run_fn fn, void *opaque);
uint64_t pagemap_count(const struct pagemap *pm);        /* set pages */
uint64_t pagemap_count_runs(const struct pagemap *pm);   /* maximal runs of set pages */
size_t   pagemap_bytes(const struct pagemap *pm);        /* heap bytes in use */
/* Checks every internal invariant: 0, or -EUCLEAN with the first broken one
 * described in why (if non-NULL). */
int pagemap_validate(const struct pagemap *pm, char *why, size_t whylen);

#endif
