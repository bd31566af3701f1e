/* SPDX-License-Identifier: MIT */
/*
 * Interval map of live IOVA mappings: disjoint [iova, iova+len) entries,
 * each with one 64-bit datum.  O(log n) lookup/insert/remove, a few dozen
 * bytes per entry, no per-page nodes: it must hold 16 M entries.
 * Not thread-safe: the owner serialises access.
 */
#ifndef CVM_MAPTABLE_H
#define CVM_MAPTABLE_H

#include <stddef.h>
#include <stdint.h>

struct maptable;
struct mt_entry { uint64_t iova, len, data; };

int  maptable_create(struct maptable **out);
void maptable_destroy(struct maptable *mt);          /* NULL is a no-op */
/* 0; -EEXIST if it overlaps an entry (nothing inserted); -ENOMEM; -EINVAL for
 * len 0 or iova + len wrapping past 2^64. */
int  maptable_insert(struct maptable *mt, uint64_t iova, uint64_t len, uint64_t data);
/* Remove the entry starting exactly at iova: 0, or -ENOENT.  If out is not
 * NULL it receives the removed entry.  Never allocates, never fails otherwise. */
int  maptable_remove(struct maptable *mt, uint64_t iova, struct mt_entry *out);
/* The same, only if that entry is exactly [iova, iova+len): else -ENOENT and
 * nothing changes (-EINVAL for len 0).  One search where a lookup and a
 * removal would take two: an unmap of one whole mapping. */
int  maptable_remove_exact(struct maptable *mt, uint64_t iova, uint64_t len,
			   struct mt_entry *out);
/* Remove every entry that starts in [iova, iova+len) (len 0: to the end).
 * Returns how many went and adds their bytes to *bytes if not NULL.  Never
 * fails: a few entries go one by one; many go in one pass that rebuilds the
 * tree, if memory for two lists of its leaves is there, else one by one. */
uint64_t maptable_remove_range(struct maptable *mt, uint64_t iova, uint64_t len,
			       uint64_t *bytes);
/* The first entry that ends after iova (so: the one containing iova, or else
 * the next one above it): 0 and *out, or -ENOENT. */
int  maptable_lookup(const struct maptable *mt, uint64_t iova, struct mt_entry *out);
/* The last entry that starts at or below iova: 0 and *out, or -ENOENT. */
int  maptable_lookup_le(const struct maptable *mt, uint64_t iova, struct mt_entry *out);
/* Each entry overlapping [iova, iova+len) (len 0: to the end), ascending; a
 * non-zero return stops the walk and is returned.  fn must not modify mt. */
int  maptable_for_each(const struct maptable *mt, uint64_t iova, uint64_t len,
		       int (*fn)(void *opaque, const struct mt_entry *e), void *opaque);
uint64_t maptable_count(const struct maptable *mt);
size_t   maptable_bytes(const struct maptable *mt);
/* Ensure the next n inserts cannot fail with -ENOMEM (0 or -ENOMEM). */
int  maptable_reserve(struct maptable *mt, uint64_t n);
/* Tests only: check every structural invariant; 0, or -EUCLEAN after
 * logging (cvm_err) the first one that is broken. */
int  maptable_validate(const struct maptable *mt);

#endif
