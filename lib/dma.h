/* SPDX-License-Identifier: MIT */
/* White-box access to a DMA context, for tests. */
#ifndef CVM_DMA_H
#define CVM_DMA_H

#include "backend.h"

struct cvm_be *cvm_dma_backend(struct cvm_dma *d);
/* iova is a point where the context knows the kernel may hold one of its
 * mappings as several (a split no call showed). */
bool cvm_dma_may_split_at(struct cvm_dma *d, uint64_t iova);

#endif
