// SPDX-License-Identifier: MIT
/*
 * The 0.1 ABI that abidiff cannot see: enumerators of enums that appear in
 * no function signature (struct fields are uint32_t), #define flag values,
 * and the layout of every 0.1 field (also when abidiff is missing or the
 * build is sanitized).  Released values never change: add, don't edit.
 */
#include <stddef.h>
#include <cvmdma.h>

#define EQ(a, b) _Static_assert((a) == (b), #a " == " #b)
#define AT(type, field, off, size)                                           \
	_Static_assert(offsetof(struct type, field) == (off) &&                \
		       sizeof(((struct type *)0)->field) == (size), #type "." #field)

EQ(CVMDMA_VERSION_MAJOR, 0);
EQ(CVM_PRIVATE, 0); EQ(CVM_SHARED, 1); EQ(CVM_MIXED, 2);
EQ(CVM_REGION_INIT_SHARED, 1u << 0); EQ(CVM_REGION_IOVA, 1u << 1);
EQ(CVM_LISTENER_REPLAY_PRIVATE, 1u << 0);
EQ(CVM_BACKEND_AUTO, 0); EQ(CVM_BACKEND_TYPE1, 1); EQ(CVM_BACKEND_IOMMUFD, 2);
EQ(CVM_BACKEND_MODEL, 3);
EQ(CVM_MODEL_TYPE1, 0); EQ(CVM_MODEL_IOMMUFD, 1); EQ(CVM_MODEL_CUT, 2);
EQ(CVM_DMA_PER_PAGE, 1u << 0); EQ(CVM_DMA_NO_CUT, 1u << 1); EQ(CVM_DMA_COMPACT, 1u << 2);

#if defined(__LP64__)
AT(cvm_region_config, sz, 0, 8); AT(cvm_region_config, gpa, 8, 8);
AT(cvm_region_config, length, 16, 8); AT(cvm_region_config, hva, 24, 8);
AT(cvm_region_config, iova, 32, 8); AT(cvm_region_config, page_size, 40, 4);
AT(cvm_region_config, flags, 44, 4);
AT(cvm_range, gpa, 0, 8); AT(cvm_range, length, 8, 8); EQ(sizeof(struct cvm_range), 16);
AT(cvm_region_stats, sz, 0, 8); AT(cvm_region_stats, pages, 8, 8);
AT(cvm_region_stats, shared_pages, 16, 8); AT(cvm_region_stats, shared_runs, 24, 8);
AT(cvm_region_stats, conversions, 32, 8); AT(cvm_region_stats, notifications, 40, 8);
AT(cvm_region_stats, pagemap_bytes, 48, 8); AT(cvm_region_stats, page_size, 56, 4);
AT(cvm_region_stats, listeners, 60, 4);
AT(cvm_listener_ops, sz, 0, 8); AT(cvm_listener_ops, to_shared, 8, 8);
AT(cvm_listener_ops, to_private, 16, 8);
AT(cvm_dma_config, sz, 0, 8); AT(cvm_dma_config, backend, 8, 4); AT(cvm_dma_config, fd, 12, 4);
AT(cvm_dma_config, ioas_id, 16, 4); AT(cvm_dma_config, flags, 20, 4);
AT(cvm_dma_config, split_granule, 24, 8); AT(cvm_dma_config, model_rules, 32, 4);
AT(cvm_dma_config, model_entry_limit, 36, 4);
AT(cvm_dma_stats, sz, 0, 8); AT(cvm_dma_stats, mappings, 8, 8);
AT(cvm_dma_stats, mappings_peak, 16, 8); AT(cvm_dma_stats, mapped_bytes, 24, 8);
AT(cvm_dma_stats, map_calls, 32, 8); AT(cvm_dma_stats, unmap_calls, 40, 8);
AT(cvm_dma_stats, cut_calls, 48, 8); AT(cvm_dma_stats, disruptive_splits, 56, 8);
AT(cvm_dma_stats, disrupted_bytes, 64, 8); AT(cvm_dma_stats, entries_avail, 72, 8);
AT(cvm_dma_stats, pending_repairs, 80, 8);
AT(cvm_dma_info, sz, 0, 8); AT(cvm_dma_info, backend, 8, 4); AT(cvm_dma_info, fd, 12, 4);
AT(cvm_dma_info, ioas_id, 16, 4); AT(cvm_dma_info, can_cut, 20, 4);
AT(cvm_dma_info, split_granule, 24, 8); AT(cvm_dma_info, iova_pgsizes, 32, 8);
AT(cvm_pin_info, sz, 0, 8); AT(cvm_pin_info, cap_ipc_lock, 8, 4); AT(cvm_pin_info, reserved, 12, 4);
AT(cvm_pin_info, memlock_limit, 16, 8); AT(cvm_pin_info, locked_bytes, 24, 8);
#endif
