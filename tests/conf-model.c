// SPDX-License-Identifier: MIT
/*
 * The kernel conformance suite against the model backend, one target per
 * rule set, with the expectations doc/kernel-facts.md gives for the kernel
 * each one models.  The same suite runs against the real kernels in the
 * test guest (tests/vm/conf-guest.c).  Prints TAP, plan last.
 */
#include "config.h"

#include <stdio.h>

#include "internal.h"
#include "backend.h"
#include "conformance.h"

static int model_open(void *ctx, uint32_t entry_limit, struct cvm_be **out)
{
	return cvm_backend_model_open(*(const uint32_t *)ctx, entry_limit, out);
}

static const uint32_t rules_type1 = CVM_MODEL_TYPE1;
static const uint32_t rules_iommufd = CVM_MODEL_IOMMUFD;
static const uint32_t rules_cut = CVM_MODEL_CUT;

static const struct conf_target targets[] = {
	/* vfio_iommu_type1 v2 (§1) */
	{ .name = "model-type1", .partial_unmap_err = -EINVAL, .unmap_nothing_err = 0,
	  .has_entry_limit = true, .expect_cut = false, .real = false,
	  .open = model_open, .ctx = (void *)&rules_type1, .count = cvm_model_count },
	/* a native iommufd IOAS (§2) */
	{ .name = "model-iommufd", .partial_unmap_err = -ENOENT, .unmap_nothing_err = -ENOENT,
	  .has_entry_limit = false, .expect_cut = false, .real = false,
	  .open = model_open, .ctx = (void *)&rules_iommufd, .count = cvm_model_count },
	/* compat v1 / the §2a route: unmap cuts, unmapping nothing is 0 (§3) */
	{ .name = "model-cut", .partial_unmap_err = 0, .unmap_nothing_err = 0,
	  .has_entry_limit = false, .expect_cut = true, .real = false,
	  .open = model_open, .ctx = (void *)&rules_cut, .count = cvm_model_count },
};

int main(void)
{
	int n = 0, failures = 0;

	for (size_t i = 0; i < ARRAY_SIZE(targets); i++)
		failures += conformance_run(&targets[i], &n);
	printf("1..%d\n", n);
	return failures ? 1 : 0;
}
