/* SPDX-License-Identifier: MIT */
/*
 * What the DMA layer sees of a region: its geometry and a listener flavour
 * that is always notified last for to_shared and first for to_private, takes
 * whole batches of runs, and may fail either way (each call is atomic: on
 * failure it has undone its own work).
 */
#ifndef CVM_REGION_H
#define CVM_REGION_H

#include <stdbool.h>
#include <stdint.h>

#include "cvmdma.h"

struct region_geom {
	uint64_t gpa, length, iova;
	void *hva;
	uint32_t page_size, page_shift;
};
const struct region_geom *region_geom(const struct cvm_region *r);

struct region_dma_ops {
	/* runs: absolute GPA, maximal, ascending, page aligned.  A call that
	 * fails has undone itself.  One that succeeds with last false keeps
	 * what it needs to undo itself until settle(keep): another DMA
	 * listener of the same conversion may still fail it.  checked: this
	 * conversion's check_map() / check_unmap() of the listener passed
	 * just before: the call does not repair again (a repair that went
	 * through now could take the room the check counted), and map_runs()
	 * takes the check's count rather than count on the table its
	 * compaction changed. */
	int  (*map_runs)(void *opaque, const struct cvm_range *runs, size_t n, bool last,
			  bool checked);
	int  (*unmap_runs)(void *opaque, const struct cvm_range *runs, size_t n, bool last,
			    bool checked);
	/* Only when a conversion to shared has more than one DMA listener,
	 * after the plain listeners accepted it and before any map_runs(): the
	 * error map_runs() would be refused with before it maps anything (at
	 * the entry limit, logged; for pages a repair must unmap first), so
	 * that no other listener has joined a run to its neighbours yet (with
	 * CVM_DMA_COMPACT; its undo would unmap the join again). */
	int  (*check_map)(void *opaque, const struct cvm_range *runs, size_t n);
	/* Before the plain listeners hear a conversion to shared, and before
	 * any check_map(), when there are plain listeners or several DMA
	 * listeners: -ENOSPC (logged) when map_runs() is sure to be refused
	 * at the entry limit, so that no listener does to_shared work, and no
	 * other context merges, only to undo it.  Changes nothing else; 0
	 * where it cannot tell without acting (merges with CVM_DMA_COMPACT,
	 * pending repairs): map_runs() or check_map() decides then. */
	int  (*precheck_map)(void *opaque, const struct cvm_range *runs, size_t n);
	/* Only when a conversion to private has more than one DMA listener,
	 * before any unmap_runs(): -ENOSPC (logged) when unmap_runs() would be
	 * refused at the entry limit, so that no other listener has cut or
	 * split anything yet (its undo could not join the pieces again). */
	int  (*check_unmap)(void *opaque, const struct cvm_range *runs, size_t n);
	void (*settle)(void *opaque, bool keep);
	/* The region is being destroyed: forget it (unmap what was mapped for it). */
	void (*region_gone)(void *opaque);
	/* Attach only, under the region lock.  count_runs() sees every shared
	 * run before anything is mapped (last true on the final call, which
	 * may refuse the attach); attach_failed() undoes the batches mapped
	 * so far when a later one fails, before anyone sees the region. */
	int  (*count_runs)(void *opaque, const struct cvm_range *runs, size_t n, bool last);
	void (*attach_failed)(void *opaque);
};

/* Attach a DMA listener: with count, count_runs() gets every current shared
 * run first; then map_runs() gets them (in batches); if anything fails the
 * listener is not added, attach_failed() runs (under the region lock once
 * it is taken) and the error is returned. */
int region_dma_attach(struct cvm_region *r, const struct region_dma_ops *ops, void *opaque,
		      bool count, struct cvm_listener **out);
/* Detach l from r: under the region lock, before(opaque) runs first (the
 * DMA layer unmaps the region there); if it fails, nothing is detached.
 * -ENOENT, without calling before(), if r was destroyed meanwhile: its
 * region_gone() has run.  The caller holds a reference to r. */
int region_dma_detach(struct cvm_region *r, struct cvm_listener *l,
		      int (*before)(void *opaque), void *opaque);
/* References that keep a region's memory (not the region: destroying it
 * still unmaps and detaches everything) until the last is dropped. */
void region_get(struct cvm_region *r);
void region_put(struct cvm_region *r);
/* This thread is inside a callback of r (a mutation of r would deadlock). */
bool region_in_callback(const struct cvm_region *r);

#endif
