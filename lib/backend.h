/* SPDX-License-Identifier: MIT */
/*
 * The kernel-facing side: one struct cvm_be per IOMMU address space (not
 * "struct cvm_backend": C shares one tag namespace between structs and
 * enums, and the public header already has enum cvm_backend),
 * behind a static const ops table (NULL op = unsupported).  Ops report the
 * kernel's raw results (errno and reported sizes exactly as the kernel, or
 * the model of it, gives them): normalisation (type1's "unmap of nothing is
 * 0" vs iommufd's -ENOENT) is the DMA layer's job, and the conformance suite
 * asserts the raw facts of doc/kernel-facts.md against every backend.
 * Not thread-safe: the DMA context serialises calls.
 */
#ifndef CVM_BACKEND_H
#define CVM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "cvmdma.h"

struct cvm_iova_range { uint64_t start, last; };   /* inclusive, like the uapi */

struct cvm_be {
	const struct cvm_backend_ops *ops;
	enum cvm_backend kind;           /* TYPE1, IOMMUFD or MODEL */
	int fd;                          /* container or /dev/iommu fd; -1 for the model */
	bool own_fd;                     /* opened by us: closed by destroy */
	uint32_t ioas_id;                /* IOMMUFD */
	bool own_ioas;                   /* allocated by us: destroyed by destroy */
	/* Capabilities, probed at open, updated by ops->refresh(): */
	uint64_t pgsizes;                /* IOMMU page sizes (bitmap); lowest = granularity */
	uint64_t entries_avail;          /* remaining mappings; UINT64_MAX: no limit */
	bool can_cut;                    /* ops->cut was probed to work */
	bool unmap_partial;              /* a failed unmap or cut of several mappings
					  * may have removed some of them */
	uint32_t nranges;                /* valid IOVA ranges, sorted, disjoint */
	struct cvm_iova_range *ranges;   /* cvm_malloc'ed, owned by the backend */
};

struct cvm_backend_ops {
	const char *name;                /* "type1", "iommufd", "model-type1", ... */
	/* Map [iova, iova+len) to vaddr, read+write.  0 or the raw -errno. */
	int (*map)(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr);
	/* Unmap [iova, iova+len) by the kernel's own rules; *unmapped receives
	 * the bytes the kernel reports removed (0 on error). */
	int (*unmap)(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped);
	/* Hitless cut: remove [iova, iova+len) even where it splits mappings;
	 * what stays mapped is never unmapped, not even for a moment.  May
	 * also remove whole mappings inside the range.  NULL: cannot cut.  Only
	 * called when be->can_cut. */
	int (*cut)(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped);
	/* Remove every mapping in the address space, the VMM's own too on a
	 * container or IOAS it handed over: only the conformance tests call
	 * it; a context unmaps region by region (cvm_dma_close(3)). */
	int (*unmap_all)(struct cvm_be *be);
	/* Re-read IOVA ranges, page sizes and remaining entries. */
	int (*refresh)(struct cvm_be *be);
	/* Free everything; closes the fd / destroys the IOAS only if own_*. */
	void (*destroy)(struct cvm_be *be);
};

/* MODEL: rules = enum cvm_model_rules; entry_limit 0 = 65535 for TYPE1
 * rules, unlimited otherwise. */
int cvm_backend_model_open(uint32_t rules, uint32_t entry_limit, struct cvm_be **out);
/* TYPE1: adopt a container fd whose IOMMU is already set (VFIO_SET_IOMMU).
 * want_cut: probe for a hitless cut (doc/kernel-facts.md §3); else none. */
int cvm_backend_type1_open(int container_fd, bool want_cut, struct cvm_be **out);
/* IOMMUFD: adopt fd (or open /dev/iommu when fd < 0) and IOAS (or allocate
 * one when ioas_id == 0).  want_cut: set up and probe the hitless cut
 * (doc/kernel-facts.md §2a) where it can be had. */
int cvm_backend_iommufd_open(int fd, uint32_t ioas_id, bool want_cut, struct cvm_be **out);
void cvm_backend_destroy(struct cvm_be *be);   /* NULL is a no-op */
/* fd is an iommufd (not a VFIO container), whatever node opened it. */
bool cvm_backend_fd_is_iommufd(int fd);

/* Sort n ranges by start; 0, or -EPROTO if two overlap or one ends below
 * its start (a kernel answer the library cannot use). */
int cvm_iova_ranges_sort(struct cvm_iova_range *r, uint32_t n);
/* [iova, iova+len) lies inside one valid IOVA range. */
bool cvm_backend_iova_valid(const struct cvm_be *be, uint64_t iova, uint64_t len);
/* A scratch IOVA window of len bytes for probes: the top of the highest
 * valid range that can hold it (regions rarely live there); 0 and *iova,
 * or -ENOSPC.  The caller must make sure nothing is mapped there. */
int cvm_backend_scratch_iova(const struct cvm_be *be, uint64_t len, uint64_t *iova);

/* ---- MODEL test hooks (tests only; not exported) ---- */
/* Fail the nth backend call from now (1 = the next one; map, unmap, cut and
 * unmap_all count) with err, once; nth 0 disables. */
void cvm_model_inject(struct cvm_be *be, uint64_t nth, int err);
/* The same for count calls in a row from the nth on. */
void cvm_model_inject_n(struct cvm_be *be, uint64_t nth, uint64_t count, int err);
/* The nth call, if it is an unmap or a cut of several mappings, removes the
 * first of them and then fails with err, as iommufd can. */
void cvm_model_inject_partial(struct cvm_be *be, uint64_t nth, int err);
/* The same, and the count - 1 calls after it fail too, plainly. */
void cvm_model_inject_partial_n(struct cvm_be *be, uint64_t nth, uint64_t count, int err);
/* The nth call, if it is a cut, splits the mappings across its ends and
 * then fails with err, removing nothing: iommufd when the first area
 * inside cannot go.  No call shows the splits. */
void cvm_model_inject_split(struct cvm_be *be, uint64_t nth, int err);
/* A CUT model whose unmap is IOMMU_IOAS_UNMAP's (no cut: -ENOENT where an
 * area reaches across an end), as on an iommufd IOAS that cuts; 0, or
 * -EINVAL for any other backend. */
int cvm_model_native_unmap(struct cvm_be *be);
/* Another user of the container (the VMM): remove exactly the whole
 * mapping [iova, iova+len) (-ENOENT if there is none), or map one (-EEXIST
 * over another, -ENOSPC at the limit), with no call counted and no failure
 * injected. */
int cvm_model_vmm_unmap(struct cvm_be *be, uint64_t iova, uint64_t len);
int cvm_model_vmm_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr);
/* Calls fn for each mapping the model kernel holds, ascending. */
int  cvm_model_for_each(struct cvm_be *be,
			int (*fn)(void *opaque, uint64_t iova, uint64_t len), void *opaque);
uint64_t cvm_model_count(struct cvm_be *be);

#endif
