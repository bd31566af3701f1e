/* SPDX-License-Identifier: MIT */
/*
 * libcvmdma - keep IOMMU DMA mappings equal to the shared memory of a
 * confidential VM, hitlessly and with few mappings.
 *
 * This is the only installed header.  Every function returns 0 (or a
 * non-negative value where stated) or a negative errno, never aborts, never
 * prints unless a log callback is installed, and changes nothing when it
 * fails.  Structs that cross the ABI start with `size_t sz`: set it to
 * sizeof(the struct); the library reads only what sz covers and rejects
 * non-zero bytes past the fields it knows (-E2BIG).
 */
#ifndef CVMDMA_H
#define CVMDMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CVMDMA_VERSION_MAJOR 0
#define CVMDMA_VERSION_MINOR 1

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
}
#endif
#endif /* CVMDMA_H */
