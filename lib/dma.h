/* SPDX-License-Identifier: MIT */
/* White-box access to a DMA context, for tests. */
#ifndef CVM_DMA_H
#define CVM_DMA_H

#include "backend.h"

struct cvm_be *cvm_dma_backend(struct cvm_dma *d);

#endif
