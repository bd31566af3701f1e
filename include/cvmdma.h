/* SPDX-License-Identifier: MIT */
/*
 * libcvmdma - keep IOMMU DMA mappings equal to the shared memory of a
 * confidential VM, hitlessly and with few mappings.
 *
 * This is the only installed header.  Every function returns 0 (or a
 * non-negative value where stated) or a negative errno, never aborts, never
 * prints unless a log callback is installed, and changes nothing when it
 * fails (the difference a conversion that fails part way, by a kernel
 * error or another region's taking a context's last entries meanwhile, can
 * leave: pages a DMA context had already cut out are mapped back as
 * mappings of their own, and mappings a CVM_DMA_COMPACT context merged
 * stay merged: the same pages in
 * more or fewer entries; see cvm_convert_batch(3) and cvm_dma_open(3)).
 * Structs that cross the ABI start with `size_t sz`: set it to sizeof(the
 * struct); the library reads only what sz covers, rejects a sz that ends
 * inside a field (-EINVAL), non-zero bytes past the fields it knows
 * (-E2BIG), and a sz above 4096 (-E2BIG, nothing past those fields read).  In C++, name them with `struct` (struct cvm_dma_stats st = {}):
 * cvm_region_stats, cvm_dma_stats and cvm_dma_info are also functions.
 */
#ifndef CVMDMA_H
#define CVMDMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
/* A function named like its struct "hides the constructor" for g++
 * -Wshadow; it is C's usual idiom, and this header's API. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#endif
#endif

#define CVMDMA_VERSION_MAJOR 0
#define CVMDMA_VERSION_MINOR 1

/* ---- page state ---- */

enum cvm_state { CVM_PRIVATE = 0, CVM_SHARED = 1, CVM_MIXED = 2 };

#define CVM_REGION_INIT_SHARED  (1u << 0)   /* start all-shared (default: all-private) */
#define CVM_REGION_IOVA         (1u << 1)   /* use cfg->iova (default: IOVA == GPA)     */

struct cvm_region_config {
	size_t   sz;
	uint64_t gpa;        /* guest-physical base, page aligned                  */
	uint64_t length;     /* bytes, page aligned, > 0, at most 2^32 pages        */
	void    *hva;        /* host address backing gpa's shared pages (for DMA)  */
	uint64_t iova;       /* with CVM_REGION_IOVA                                */
	uint32_t page_size;  /* 0 = 4096; a power of two >= 4096                    */
	uint32_t flags;
};
struct cvm_region;
struct cvm_listener;

int  cvm_region_create(const struct cvm_region_config *cfg, struct cvm_region **out);
/* Also detaches every listener (without notifying) and every DMA context
 * (unmapping what they mapped for this region).  NULL is a no-op. */
void cvm_region_destroy(struct cvm_region *region);

/* gpa/length: absolute guest-physical, page aligned, inside the region.
 * to: CVM_SHARED or CVM_PRIVATE.  flags: none defined yet (must be 0). */
int cvm_convert(struct cvm_region *region, uint64_t gpa, uint64_t length,
		enum cvm_state to, uint32_t flags);
struct cvm_range { uint64_t gpa, length; };
/* All or nothing.  Ranges may be in any order and may overlap or touch;
 * listeners hear the maximal changed runs of their union, ascending. */
int cvm_convert_batch(struct cvm_region *region, const struct cvm_range *ranges,
		      size_t count, enum cvm_state to, uint32_t flags);

/* >= 0: enum cvm_state of the whole range; < 0: -errno. */
int cvm_region_query(struct cvm_region *region, uint64_t gpa, uint64_t length);
/* Calls fn for each maximal run in [gpa, gpa+length) that is in `state`
 * (clipped to the window), ascending; a non-zero return from fn stops the
 * walk and is returned. */
int cvm_region_for_each_run(struct cvm_region *region, uint64_t gpa, uint64_t length,
			    enum cvm_state state,
			    int (*fn)(void *opaque, uint64_t gpa, uint64_t length), void *opaque);

struct cvm_region_stats {
	size_t   sz;
	uint64_t pages;            /* pages in the region                              */
	uint64_t shared_pages;
	uint64_t shared_runs;      /* maximal runs of shared pages                     */
	uint64_t conversions;      /* successful cvm_convert/cvm_convert_batch calls    */
	uint64_t notifications;    /* listener callbacks made (rollbacks included)      */
	uint64_t pagemap_bytes;    /* memory the page-state map uses                   */
	uint32_t page_size;
	uint32_t listeners;        /* plain listeners (DMA contexts not counted)        */
};
int cvm_region_stats(struct cvm_region *region, struct cvm_region_stats *st);

struct cvm_listener_ops {
	size_t sz;
	/* pages [gpa, gpa+length) became shared; a negative return vetoes the conversion */
	int  (*to_shared)(void *opaque, uint64_t gpa, uint64_t length);
	/* pages became private; cannot fail */
	void (*to_private)(void *opaque, uint64_t gpa, uint64_t length);
};
#define CVM_LISTENER_REPLAY_PRIVATE (1u << 0)   /* on remove: to_private for every shared run */
/* Replays every current shared run (maximal, ascending) to to_shared before returning;
 * if a replay call fails, the runs already replayed get to_private, nothing is added,
 * and the error is returned. */
int  cvm_listener_add(struct cvm_region *region, const struct cvm_listener_ops *ops,
		      void *opaque, uint32_t flags, struct cvm_listener **out);
/* NULL is a no-op.  From inside a callback of the same region the call is
 * refused (logged at LOG_ERR) and the listener stays registered. */
void cvm_listener_remove(struct cvm_listener *listener, uint32_t flags);

/* ---- DMA ---- */

enum cvm_backend { CVM_BACKEND_AUTO = 0, CVM_BACKEND_TYPE1, CVM_BACKEND_IOMMUFD, CVM_BACKEND_MODEL };
enum cvm_model_rules { CVM_MODEL_TYPE1 = 0, CVM_MODEL_IOMMUFD, CVM_MODEL_CUT };

#define CVM_DMA_PER_PAGE  (1u << 0)  /* one mapping per page: today's VMM behaviour, baseline */
#define CVM_DMA_NO_CUT    (1u << 1)  /* never use a kernel cut even where one is available   */
#define CVM_DMA_COMPACT   (1u << 2)  /* may merge neighbours (disruptively) near the limit    */

struct cvm_dma_config {
	size_t   sz;
	uint32_t backend;           /* enum cvm_backend                                        */
	int      fd;                /* TYPE1: container fd with the IOMMU set; IOMMUFD: /dev/iommu fd; -1: open own where possible */
	uint32_t ioas_id;           /* IOMMUFD: IOAS to manage; 0: allocate one                */
	uint32_t flags;
	uint64_t split_granule;     /* 0: auto; else a power of two >= page size; UINT64_MAX: never split */
	uint32_t model_rules;       /* MODEL only: enum cvm_model_rules                        */
	uint32_t model_entry_limit; /* MODEL only: 0 = 65535 for TYPE1 rules, unlimited otherwise */
};
struct cvm_dma;
int  cvm_dma_open(const struct cvm_dma_config *cfg, struct cvm_dma **out);
int  cvm_dma_add_region(struct cvm_dma *dma, struct cvm_region *region);  /* maps current shared runs */
int  cvm_dma_remove_region(struct cvm_dma *dma, struct cvm_region *region); /* unmaps them */
void cvm_dma_close(struct cvm_dma *dma);   /* unmaps everything it mapped; closes what it opened */

struct cvm_dma_stats {
	size_t   sz;
	uint64_t mappings;          /* live                                                  */
	uint64_t mappings_peak;
	uint64_t mapped_bytes;
	uint64_t map_calls;         /* backend map operations (ioctls on real backends)      */
	uint64_t unmap_calls;
	uint64_t cut_calls;
	uint64_t disruptive_splits; /* times a still-shared range was unmapped and remapped  */
	uint64_t disrupted_bytes;
	uint64_t entries_avail;     /* backend's remaining mappings; UINT64_MAX: no limit     */
	/* since 0.1.0: ranges where a rollback the kernel refused left the IOMMU
	 * different from the shared set, retried by the context's next
	 * conversion or add_region, or by cvm_dma_repair() */
	uint64_t pending_repairs;
};
int cvm_dma_stats(struct cvm_dma *dma, struct cvm_dma_stats *st);
/* Retries now the repairs pending_repairs counts: 0 once none is left, else
 * the error that keeps one pending (see cvm_dma_repair(3)). */
int cvm_dma_repair(struct cvm_dma *dma);
/* Each live mapping, ascending IOVA; a non-zero return from fn stops the walk
 * and is returned. */
int cvm_dma_for_each_mapping(struct cvm_dma *dma,
			     int (*fn)(void *opaque, uint64_t iova, uint64_t length), void *opaque);

struct cvm_dma_info {
	size_t   sz;
	uint32_t backend;           /* enum cvm_backend actually in use                      */
	int      fd;                /* the container or /dev/iommu fd                         */
	uint32_t ioas_id;           /* IOMMUFD: the IOAS (attach devices to it)              */
	uint32_t can_cut;           /* 1: private conversions cut mappings hitlessly; 0 with NO_CUT or PER_PAGE */
	uint64_t split_granule;     /* the context's (a region with larger pages uses its
	                               page size); UINT64_MAX: unlimited; 0: PER_PAGE        */
	uint64_t iova_pgsizes;      /* IOMMU page sizes (iommufd: from its IOVA alignment)    */
};
int cvm_dma_info(struct cvm_dma *dma, struct cvm_dma_info *info);

/* ---- pinning ---- */

struct cvm_pin_info {
	size_t   sz;
	uint32_t cap_ipc_lock;      /* 1: CAP_IPC_LOCK is effective: no limit applies        */
	uint32_t reserved;          /* written as 0                                          */
	uint64_t memlock_limit;     /* RLIMIT_MEMLOCK soft limit, bytes (UINT64_MAX: none)   */
	uint64_t locked_bytes;      /* already locked by this process (VmLck)                */
};
/* Can this process pin `bytes` more bytes for DMA?  0: yes; -ENOMEM: no (it
 * lacks CAP_IPC_LOCK and the request would pass RLIMIT_MEMLOCK); other
 * -errno: could not tell.  info (may be NULL) receives what was found. */
int cvm_pin_check(uint64_t bytes, struct cvm_pin_info *info);

/* ---- logging and version ---- */

/*
 * Install a process-wide log callback.  priority is a syslog priority
 * (LOG_ERR = 3 ... LOG_DEBUG = 7); messages above max_priority are not
 * formatted.  fn = NULL silences the library (the default).
 */
void cvm_set_log(void (*fn)(void *opaque, int priority, const char *msg),
		 void *opaque, int max_priority);
/* The library's version, "MAJOR.MINOR.PATCH". */
const char *cvm_version(void);

#ifdef __cplusplus
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}
#endif
#endif /* CVMDMA_H */
