/* SPDX-License-Identifier: MIT */
/*
 * Capability probes: what the process may pin (CAP_IPC_LOCK, RLIMIT_MEMLOCK)
 * and what a backend's kernel can do (the hitless cut), each found by asking
 * the kernel, never assumed from a version number.
 */
#ifndef CVM_CAPS_H
#define CVM_CAPS_H

#include <stdint.h>

#include "backend.h"

/*
 * A map of `bytes` failed with err (normally -ENOMEM): log one LOG_ERR line
 * that says why pinning may have failed (CAP_IPC_LOCK, RLIMIT_MEMLOCK, what
 * is locked already) and what to do about it.  Costs nothing without a log
 * callback at LOG_ERR.
 */
void cvm_pin_diagnose(uint64_t bytes, int err);

/*
 * Cut one page out of a mapping (raw kernel result; *unmapped = bytes the
 * kernel reports removed).
 */
typedef int (*cvm_cut_fn)(struct cvm_be *be, uint64_t iova, uint64_t len,
			  uint64_t *unmapped);

/*
 * Probe a cut on be: map three pages of anonymous memory at a scratch IOVA
 * with be->ops->map, cut the middle page with cut, then unmap the whole
 * window with be->ops->unmap.  true only when the cut returned 0 with
 * exactly one page removed and the final unmap removed exactly the two
 * pages that stayed: a cut that works, and leaves its neighbours mapped.
 * Leaves nothing mapped (logs a warning if the kernel refuses the clean-up)
 * and says at LOG_INFO what the kernel answered.  1: the cut works; 0: it
 * does not; -ENOMEM: no memory to tell with (no anonymous memory, or the
 * kernel could not pin the three pages: logged at LOG_ERR), which the
 * caller must not take for "no cut".  Once the pages are pinned, whatever
 * the cut returns, -ENOMEM included, is the kernel's answer: no cut.
 */
int cvm_probe_cut(struct cvm_be *be, cvm_cut_fn cut);

#endif
