// SPDX-License-Identifier: MIT
/* Helpers shared by every backend: destruction and IOVA range arithmetic. */
#include <stdlib.h>

#include "internal.h"
#include "backend.h"

void cvm_backend_destroy(struct cvm_be *be)
{
	if (be)
		be->ops->destroy(be);
}

static int cmp_range(const void *a, const void *b)
{
	const struct cvm_iova_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int cvm_iova_ranges_sort(struct cvm_iova_range *r, uint32_t n)
{
	if (n > 1)
		qsort(r, n, sizeof(*r), cmp_range);
	for (uint32_t i = 0; i < n; i++)
		if (r[i].last < r[i].start || (i && r[i].start <= r[i - 1].last))
			return -EPROTO;
	return 0;
}

static bool range_holds(const struct cvm_iova_range *r, uint64_t iova, uint64_t last)
{
	return iova >= r->start && last <= r->last;
}

bool cvm_backend_iova_valid(const struct cvm_be *be, uint64_t iova, uint64_t len)
{
	uint64_t last;

	if (!be || !len || len - 1 > UINT64_MAX - iova)
		return false;
	last = iova + len - 1;
	/* A handful of ranges (two on q35): a linear scan is the fast path. */
	for (uint32_t i = 0; i < be->nranges; i++)
		if (range_holds(&be->ranges[i], iova, last))
			return true;
	return false;
}

/* The largest IOMMU page size that is <= len, or the smallest one. */
static uint64_t scratch_align(uint64_t pgsizes, uint64_t len)
{
	uint64_t align = pgsizes & -pgsizes;

	if (!align)
		return 4096;
	for (uint64_t s = pgsizes; s; s &= s - 1) {
		uint64_t bit = s & -s;

		if (bit <= len)
			align = bit;
	}
	return align;
}

/*
 * Probes map at the top of the highest range because guest RAM regions
 * start low.  The window is aligned to the largest IOMMU page that fits in
 * it: a window large enough could get a huge IOPTE, and a cut probe must
 * work on the hardest layout the kernel can choose, or it would promise
 * too much.  (cvm_probe_cut()'s three pages never do; every cut route
 * turns huge IOPTEs off first.)
 */
int cvm_backend_scratch_iova(const struct cvm_be *be, uint64_t len, uint64_t *iova)
{
	uint64_t align;

	if (!be || !iova || !len)
		return -EINVAL;
	align = scratch_align(be->pgsizes, len);
	for (uint32_t i = be->nranges; i-- > 0; ) {
		const struct cvm_iova_range *r = &be->ranges[i];
		uint64_t start;

		if (r->last - r->start < len - 1)
			continue;
		start = (r->last - (len - 1)) & ~(align - 1);
		if (start < r->start)
			continue;
		*iova = start;
		return 0;
	}
	return -ENOSPC;
}
