// SPDX-License-Identifier: MIT
/*
 * What only the model has: fault injection, entry-limit bookkeeping, the
 * for_each/count hooks, errno details read from the kernel sources that
 * the guest suite does not pin, and a differential test of all three rule
 * sets against a page-by-page reference.  The kernel facts themselves are
 * in the conformance suite (tests/conformance.c, run by tests/conf-model).
 * Also the common helpers of lib/backend.c.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"
#include "backend.h"

#define PAGE	4096ull
#define SZ_2M	(2ull << 20)
#define BASE	(1ull << 30)
/* Any aligned, non-NULL address: the model must never dereference it. */
#define VA(off)	((void *)(uintptr_t)(0x7f0000000000ull + (off)))

static struct cvm_be *open_model(uint32_t rules, uint32_t limit)
{
	struct cvm_be *be = NULL;

	cr_assert_eq(cvm_backend_model_open(rules, limit, &be), 0);
	cr_assert_not_null(be);
	return be;
}

/* ---- snapshots of what the model holds ---- */

struct snap {
	uint64_t n;
	uint64_t iova[256], len[256];
};

static int snap_fn(void *opaque, uint64_t iova, uint64_t len)
{
	struct snap *s = opaque;

	cr_assert_lt(s->n, 256);
	s->iova[s->n] = iova;
	s->len[s->n] = len;
	s->n++;
	return 0;
}

static void take(struct cvm_be *be, struct snap *s)
{
	s->n = 0;
	cr_assert_eq(cvm_model_for_each(be, snap_fn, s), 0);
	cr_assert_eq(s->n, cvm_model_count(be));
}

static void assert_unchanged(struct cvm_be *be, const struct snap *before)
{
	struct snap now;

	take(be, &now);
	cr_assert_eq(now.n, before->n, "%" PRIu64 " mappings, expected %" PRIu64, now.n,
		     before->n);
	for (uint64_t i = 0; i < now.n; i++)
		cr_assert(now.iova[i] == before->iova[i] && now.len[i] == before->len[i],
			  "mapping %" PRIu64 " changed", i);
}

/* Three 2 MiB mappings with gaps between them. */
static void populate(struct cvm_be *be)
{
	for (int i = 0; i < 3; i++)
		cr_assert_eq(be->ops->map(be, BASE + i * 2 * SZ_2M, SZ_2M, VA(0)), 0);
}

/* ---- fault injection ---- */

static const uint32_t all_rules[] = { CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD, CVM_MODEL_CUT };

Test(model_inject, an_injected_failure_returns_err_and_changes_nothing)
{
	for (size_t r = 0; r < ARRAY_SIZE(all_rules); r++) {
		struct cvm_be *be = open_model(all_rules[r], 0);
		uint64_t size = 7;
		struct snap s;

		populate(be);
		take(be, &s);

		cvm_model_inject(be, 1, -EIO);
		cr_assert_eq(be->ops->map(be, BASE + 8 * SZ_2M, SZ_2M, VA(0)), -EIO);
		assert_unchanged(be, &s);

		cvm_model_inject(be, 1, -EFAULT);
		cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M, &size), -EFAULT);
		cr_assert_eq(size, 0);
		assert_unchanged(be, &s);

		if (be->ops->cut) {
			size = 7;
			cvm_model_inject(be, 1, -EBUSY);
			cr_assert_eq(be->ops->cut(be, BASE + PAGE, PAGE, &size), -EBUSY);
			cr_assert_eq(size, 0);
			assert_unchanged(be, &s);
		}

		cvm_model_inject(be, 1, -ENOMEM);
		cr_assert_eq(be->ops->unmap_all(be), -ENOMEM);
		assert_unchanged(be, &s);

		/* Once: the same calls now work. */
		cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M, &size), 0);
		cr_assert_eq(size, SZ_2M);
		cr_assert_eq(be->ops->unmap_all(be), 0);
		cr_assert_eq(cvm_model_count(be), 0);
		cvm_backend_destroy(be);
	}
}

Test(model_inject, the_nth_call_fails_counting_every_kind_of_call)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 0);
	uint64_t size;

	/* map, a refused map, refresh (not a call), cut, then the 4th call. */
	cvm_model_inject(be, 4, -E2BIG);
	cr_assert_eq(be->ops->map(be, BASE, SZ_2M, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, BASE, PAGE, VA(0)), -EEXIST);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->ops->cut(be, BASE, PAGE, &size), 0);
	cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M, &size), -E2BIG);
	cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M, &size), 0);
	cr_assert_eq(size, SZ_2M - PAGE);

	/* nth 0 disarms a pending injection. */
	cvm_model_inject(be, 1, -EIO);
	cvm_model_inject(be, 0, -EIO);
	cr_assert_eq(be->ops->map(be, BASE, PAGE, VA(0)), 0);
	/* A "failure" of 0 would skip the call while reporting success. */
	cvm_model_inject(be, 1, 0);
	cr_assert_eq(be->ops->unmap_all(be), -EIO);
	cr_assert_eq(cvm_model_count(be), 1);
	cvm_backend_destroy(be);
}

/* An injected partial failure of an iommufd unmap whose range starts
 * inside a mapping removes nothing, although two whole ones follow it:
 * iopt_unmap_iova_range() takes areas in ascending order and stops at the
 * first, which sticks out.  (Where the backend cuts, the cut comes first.) */
Test(model_inject, a_partial_unmap_failure_behind_a_mapping_sticking_out_changes_nothing)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);
	uint64_t size = 7;
	struct snap s;

	populate(be);
	take(be, &s);
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(be->ops->unmap(be, BASE + SZ_2M / 2, 5 * SZ_2M, &size), -EBUSY);
	cr_assert_eq(size, 0);
	assert_unchanged(be, &s);
	/* Starting at a whole mapping, the first of the two goes. */
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(be->ops->unmap(be, BASE, 5 * SZ_2M, &size), -EBUSY);
	cr_assert_eq(cvm_model_count(be), 2);
	cvm_backend_destroy(be);
}

/* An injected partial failure of a cut with an end off a page boundary
 * inside a mapping fails before the first cut, where the kernel refuses
 * that end (iopt_area_split()): nothing changes, though a whole mapping
 * lies inside the range and the other end could be cut. */
Test(model_inject, a_partial_cut_failure_at_an_end_that_cannot_be_cut_changes_nothing)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 0);
	uint64_t iova = BASE + SZ_2M / 2 + 100, len = 4 * SZ_2M - 100, size = 7;
	struct snap s;

	populate(be);
	take(be, &s);
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(be->ops->cut(be, iova, len, &size), -EBUSY);
	cr_assert_eq(size, 0);
	assert_unchanged(be, &s);
	/* Without the injection the kernel's own answer. */
	cr_assert_eq(be->ops->cut(be, iova, len, &size), -EINVAL);
	assert_unchanged(be, &s);
	cvm_backend_destroy(be);
}

/* ---- entry limit ---- */

Test(model_limit, type1_defaults_to_65535_entries_read_through_refresh)
{
	struct cvm_be *be = open_model(CVM_MODEL_TYPE1, 0);

	cr_assert_eq(be->entries_avail, 65535);
	for (uint64_t i = 0; i < 65535; i++)
		if (be->ops->map(be, BASE + i * PAGE, PAGE, VA(0)))
			cr_assert_fail("map %" PRIu64, i);
	/* Like DMA_AVAIL: the number is read, not pushed. */
	cr_assert_eq(be->entries_avail, 65535);
	cr_assert_eq(be->ops->map(be, BASE + 65535 * PAGE, PAGE, VA(0)), -ENOSPC);
	/* Overlap is checked before the limit, as in vfio_dma_do_map(). */
	cr_assert_eq(be->ops->map(be, BASE, PAGE, VA(0)), -EEXIST);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->entries_avail, 0);
	cr_assert_eq(be->ops->unmap(be, BASE, PAGE, NULL), 0);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->entries_avail, 1);
	cr_assert_eq(be->ops->unmap_all(be), 0);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->entries_avail, 65535);
	cvm_backend_destroy(be);
}

Test(model_limit, iommufd_rules_take_a_limit_only_when_given)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 10);

	cr_assert_eq(be->entries_avail, 10);
	for (uint64_t i = 0; i < 10; i++)
		cr_assert_eq(be->ops->map(be, BASE + i * PAGE, PAGE, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, BASE + 10 * PAGE, PAGE, VA(0)), -ENOSPC);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->entries_avail, 0);
	cvm_backend_destroy(be);

	be = open_model(CVM_MODEL_IOMMUFD, 0);
	cr_assert_eq(be->entries_avail, UINT64_MAX);
	cvm_backend_destroy(be);
}

Test(model_limit, a_cut_that_adds_an_entry_past_the_limit_fails_and_changes_nothing)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 2);
	uint64_t size = 7;
	struct snap s;

	cr_assert_eq(be->ops->map(be, BASE, SZ_2M, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, BASE + SZ_2M, SZ_2M, VA(0)), 0);
	take(be, &s);
	/* Cutting the middle of one leaves three mappings: over the limit. */
	cr_assert_eq(be->ops->cut(be, BASE + PAGE, PAGE, &size), -ENOSPC);
	cr_assert_eq(size, 0);
	assert_unchanged(be, &s);
	/* Across the boundary: two mappings in, two out. */
	cr_assert_eq(be->ops->cut(be, BASE + SZ_2M - PAGE, 2 * PAGE, &size), 0);
	cr_assert_eq(size, 2 * PAGE);
	cr_assert_eq(cvm_model_count(be), 2);
	cvm_backend_destroy(be);
}

/* ---- hooks ---- */

static int stop_at_second(void *opaque, uint64_t iova, uint64_t len)
{
	int *n = opaque;

	return ++*n == 2 ? 99 : 0;
}

Test(model_hooks, for_each_lists_mappings_ascending_and_stops_on_request)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);
	struct snap s;
	int n = 0;

	cr_assert_eq(be->ops->map(be, BASE + 4 * SZ_2M, PAGE, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, BASE, SZ_2M, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, 0xfef00000ull, 3 * PAGE, VA(0)), 0);
	take(be, &s);
	cr_assert_eq(s.n, 3);
	cr_assert(s.iova[0] == BASE && s.len[0] == SZ_2M);
	cr_assert(s.iova[1] == BASE + 4 * SZ_2M && s.len[1] == PAGE);
	cr_assert(s.iova[2] == 0xfef00000ull && s.len[2] == 3 * PAGE);
	cr_assert_eq(cvm_model_for_each(be, stop_at_second, &n), 99);
	cr_assert_eq(n, 2);
	cvm_backend_destroy(be);
}

Test(model_hooks, hooks_ignore_backends_that_are_not_the_model)
{
	struct cvm_be fake = { .kind = CVM_BACKEND_TYPE1, .fd = -1 };
	int n = 0;

	cvm_model_inject(&fake, 1, -EIO);
	cr_assert_eq(cvm_model_count(&fake), 0);
	cr_assert_eq(cvm_model_for_each(&fake, stop_at_second, &n), -EINVAL);
	cr_assert_eq(cvm_model_count(NULL), 0);
	cvm_backend_destroy(NULL);
}

/* CUT rules with IOMMU_IOAS_UNMAP's unmap: a part of a mapping is -ENOENT,
 * nothing removed; the cut still splits. */
Test(model_hooks, native_unmap_refuses_a_part_and_the_cut_still_splits)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 0);
	struct cvm_be *other = open_model(CVM_MODEL_IOMMUFD, 0);
	uint64_t got = 1;
	struct snap s;

	cr_assert_eq(cvm_model_native_unmap(other), -EINVAL, "only CUT rules");
	cr_assert_eq(cvm_model_native_unmap(be), 0);
	cr_assert_eq(cvm_model_native_unmap(be), -EINVAL, "already");
	cr_assert_eq(be->ops->map(be, BASE, 4 * PAGE, VA(0)), 0);
	cr_assert_eq(be->ops->unmap(be, BASE + PAGE, PAGE, &got), -ENOENT);
	cr_assert_eq(got, 0);
	cr_assert_eq(cvm_model_count(be), 1, "the hooks know the model still");
	cr_assert_eq(be->ops->cut(be, BASE + PAGE, PAGE, &got), 0);
	cr_assert_eq(got, PAGE);
	take(be, &s);
	cr_assert_eq(s.n, 2);
	cr_assert_eq(be->ops->unmap(be, BASE, 4 * PAGE, &got), 0);
	cr_assert_eq(got, 3 * PAGE);
	cvm_backend_destroy(other);
	cvm_backend_destroy(be);
}

/* Another user of the container: no call counted, no failure injected. */
Test(model_hooks, the_vmm_maps_and_unmaps_whole_mappings_past_an_injected_failure)
{
	struct cvm_be *be = open_model(CVM_MODEL_TYPE1, 2);

	cr_assert_eq(be->ops->map(be, BASE, 4 * PAGE, VA(0)), 0);
	cvm_model_inject(be, 1, -EIO);
	cr_assert_eq(cvm_model_vmm_unmap(be, BASE, PAGE), -ENOENT, "a part");
	cr_assert_eq(cvm_model_vmm_unmap(be, BASE, 4 * PAGE), 0);
	cr_assert_eq(cvm_model_count(be), 0);
	cr_assert_eq(cvm_model_vmm_map(be, BASE, PAGE, VA(0)), 0);
	cr_assert_eq(cvm_model_vmm_map(be, BASE, PAGE, VA(0)), -EEXIST);
	cr_assert_eq(cvm_model_vmm_map(be, BASE + PAGE, PAGE, VA(PAGE)), 0);
	cr_assert_eq(cvm_model_vmm_map(be, BASE + 2 * PAGE, PAGE, VA(0)), -ENOSPC);
	cr_assert_eq(be->ops->unmap(be, BASE, PAGE, NULL), -EIO, "the injection waited");
	cvm_backend_destroy(be);
}

/* ---- errno details from the sources (the guest suite pins the facts) ---- */

Test(model_errno, type1_map_checks_in_vfio_dma_do_map_order)
{
	struct cvm_be *be = open_model(CVM_MODEL_TYPE1, 0);

	cr_assert_eq(be->ops->map(be, BASE, PAGE, NULL), -EFAULT);
	cr_assert_eq(be->ops->map(be, BASE, 2 * PAGE, (void *)(uintptr_t)(0 - PAGE)), -EINVAL);
	cr_assert_eq(be->ops->map(be, UINT64_MAX - PAGE + 1, 2 * PAGE, VA(0)), -EINVAL);
	/* Unaligned beats overlap; overlap beats "outside the ranges". */
	cr_assert_eq(be->ops->map(be, 0xfedff000ull, PAGE, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, 0xfedff000ull + 1, PAGE, VA(0)), -EINVAL);
	cr_assert_eq(be->ops->map(be, 0xfedff000ull, 2 * PAGE, VA(0)), -EEXIST);
	cr_assert_eq(be->ops->map(be, 1ull << 48, PAGE, VA(0)), -EINVAL);
	cr_assert_eq(cvm_model_count(be), 1);
	cvm_backend_destroy(be);
}

Test(model_errno, type1_unmap_rejects_unaligned_empty_and_wrapping_ranges)
{
	struct cvm_be *be = open_model(CVM_MODEL_TYPE1, 0);
	uint64_t size = 7;

	populate(be);
	cr_assert_eq(be->ops->unmap(be, BASE + 1, SZ_2M, &size), -EINVAL);
	cr_assert_eq(size, 0);
	cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M + 1, &size), -EINVAL);
	cr_assert_eq(be->ops->unmap(be, BASE, 0, &size), -EINVAL);
	cr_assert_eq(be->ops->unmap(be, UINT64_MAX - PAGE + 1, 2 * PAGE, &size), -EINVAL);
	/* Ends inside the last mapping: nothing goes, not even the first two. */
	cr_assert_eq(be->ops->unmap(be, BASE, 5 * SZ_2M - PAGE, &size), -EINVAL);
	cr_assert_eq(cvm_model_count(be), 3);
	cr_assert_eq(be->ops->unmap(be, 0, 1ull << 48, &size), 0);
	cr_assert_eq(size, 3 * SZ_2M);
	cvm_backend_destroy(be);
}

Test(model_errno, iommufd_map_checks_in_iommufd_order)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);

	cr_assert_eq(be->ops->map(be, UINT64_MAX, PAGE, VA(0)), -EOVERFLOW);
	cr_assert_eq(be->ops->map(be, BASE, UINT64_MAX, VA(0)), -EOVERFLOW);
	cr_assert_eq(be->ops->map(be, BASE, 0, VA(0)), -EINVAL);
	cr_assert_eq(be->ops->map(be, BASE, 2 * PAGE, (void *)(uintptr_t)(0 - PAGE)),
		     -EOVERFLOW);
	cr_assert_eq(be->ops->map(be, UINT64_MAX - PAGE + 1, 2 * PAGE, VA(0)), -EOVERFLOW);
	cr_assert_eq(be->ops->map(be, BASE, PAGE, NULL), -EFAULT);
	/* Reserved ranges are checked before overlap. */
	cr_assert_eq(be->ops->map(be, 0xfedff000ull, PAGE, VA(0)), 0);
	cr_assert_eq(be->ops->map(be, 0xfedff000ull, 2 * PAGE, VA(0)), -EINVAL);
	cr_assert_eq(be->ops->map(be, 0xfedff000ull, PAGE, VA(1)), -EEXIST);
	cr_assert_eq(cvm_model_count(be), 1);
	cvm_backend_destroy(be);
}

Test(model_errno, iommufd_unmap_of_everything_succeeds_even_when_empty)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);
	uint64_t size = 7;

	cr_assert_eq(be->ops->unmap(be, 0, UINT64_MAX, &size), 0);
	cr_assert_eq(size, 0);
	populate(be);
	cr_assert_eq(be->ops->unmap(be, BASE, 0, &size), -EINVAL);
	/* An unaligned range is not refused as such: it straddles. */
	cr_assert_eq(be->ops->unmap(be, BASE + 1, SZ_2M, &size), -ENOENT);
	cr_assert_eq(be->ops->unmap(be, 0, UINT64_MAX, &size), 0);
	cr_assert_eq(size, 3 * SZ_2M);
	cvm_backend_destroy(be);
}

/* iopt_alloc_pages() (6.12) refuses a length within a page of 2^64 with
 * -EINVAL before it checks whether the user range wraps (-EOVERFLOW). */
Test(model_errno, iommufd_map_of_a_length_within_a_page_of_2_64_is_einval)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);

	cr_assert_eq(be->ops->map(be, BASE, UINT64_MAX - PAGE + 1, VA(0)), -EINVAL);
	cr_assert_eq(be->ops->map(be, BASE, UINT64_MAX - 1, VA(0)), -EINVAL);
	cr_assert_eq(cvm_model_count(be), 0);
	cvm_backend_destroy(be);
}

/* iommufd_ioas_unmap(): only iova 0 with length U64_MAX means everything.
 * Another range at iova 0 is an ordinary unmap; an iova or a length of
 * U64_MAX is -EOVERFLOW otherwise, even where the range would not wrap. */
Test(model_errno, iommufd_unmap_means_everything_only_for_iova_0_and_length_u64_max)
{
	struct cvm_be *be = open_model(CVM_MODEL_IOMMUFD, 0);
	uint64_t size = 7;

	cr_assert_eq(be->ops->map(be, 0, SZ_2M, VA(0)), 0);
	populate(be);
	cr_assert_eq(be->ops->unmap(be, 1, UINT64_MAX, &size), -EOVERFLOW);
	cr_assert_eq(size, 0);
	cr_assert_eq(be->ops->unmap(be, UINT64_MAX, 1, &size), -EOVERFLOW);
	cr_assert_eq(cvm_model_count(be), 4);
	cr_assert_eq(be->ops->unmap(be, 0, SZ_2M, &size), 0);
	cr_assert_eq(size, SZ_2M);
	cr_assert_eq(cvm_model_count(be), 3);
	cvm_backend_destroy(be);
}

Test(model_errno, a_cut_point_off_a_page_boundary_inside_a_mapping_is_refused)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 0);
	uint64_t size = 7;
	struct snap s;

	populate(be);
	take(be, &s);
	cr_assert_eq(be->ops->cut(be, BASE + 100, PAGE, &size), -EINVAL);
	cr_assert_eq(be->ops->cut(be, BASE, PAGE + 100, &size), -EINVAL);
	cr_assert_eq(be->ops->cut(be, BASE, 0, &size), -EINVAL);
	cr_assert_eq(be->ops->cut(be, UINT64_MAX - PAGE + 1, 2 * PAGE, &size), -EOVERFLOW);
	assert_unchanged(be, &s);
	/* Off-boundary ends in gaps cut nothing: the whole mapping goes. */
	cr_assert_eq(be->ops->cut(be, BASE + SZ_2M + 100, 2 * SZ_2M, &size), 0);
	cr_assert_eq(size, SZ_2M);
	cvm_backend_destroy(be);
}

Test(model_errno, the_model_never_touches_vaddr_memory)
{
	/* Addresses that are not mapped in this process: any access faults. */
	for (size_t r = 0; r < ARRAY_SIZE(all_rules); r++) {
		struct cvm_be *be = open_model(all_rules[r], 0);
		uint64_t size;

		cr_assert_eq(be->ops->map(be, BASE, SZ_2M, (void *)(uintptr_t)0x1000), 0);
		cr_assert_eq(be->ops->map(be, BASE + SZ_2M, SZ_2M, VA(SZ_2M)), 0);
		cr_assert_eq(be->ops->unmap(be, BASE, 2 * SZ_2M, &size), 0);
		cr_assert_eq(size, 2 * SZ_2M);
		cvm_backend_destroy(be);
	}
}

Test(model_errno, unmapped_may_be_null)
{
	for (size_t r = 0; r < ARRAY_SIZE(all_rules); r++) {
		struct cvm_be *be = open_model(all_rules[r], 0);

		populate(be);
		cr_assert_eq(be->ops->unmap(be, BASE, SZ_2M, NULL), 0);
		cvm_backend_destroy(be);
	}
}

/* ---- allocation failures ---- */

static int64_t allocs_left;

static void *counting_realloc(void *opaque, void *ptr, size_t size)
{
	if (allocs_left == 0)
		return NULL;
	allocs_left--;
	return realloc(ptr, size);
}

static void fail_after(int64_t n)
{
	static const struct cvm_alloc_hooks h = { .realloc = counting_realloc };

	allocs_left = n;
	cvm_set_alloc_hooks(&h);
}

Test(model_alloc, open_fails_cleanly_at_every_allocation)
{
	for (int64_t k = 0; ; k++) {
		struct cvm_be *be = (void *)1;
		int ret;

		fail_after(k);
		ret = cvm_backend_model_open(CVM_MODEL_TYPE1, 0, &be);
		cvm_set_alloc_hooks(NULL);
		if (ret == 0) {
			cr_assert_geq(k, 2);
			cvm_backend_destroy(be);
			break;
		}
		cr_assert_eq(ret, -ENOMEM);
		cr_assert_eq(be, (void *)1);
	}
	cr_assert_eq(cvm_backend_model_open(3, 0, &(struct cvm_be *){ NULL }), -EINVAL);
}

Test(model_alloc, map_and_cut_without_memory_fail_with_enomem_and_change_nothing)
{
	struct cvm_be *be = open_model(CVM_MODEL_CUT, 0);
	uint64_t size = 7;
	struct snap s;
	int i, rc;

	/* The first map allocates the table. */
	fail_after(0);
	cr_assert_eq(be->ops->map(be, BASE, PAGE, VA(0)), -ENOMEM);
	cvm_set_alloc_hooks(NULL);
	cr_assert_eq(cvm_model_count(be), 0);
	cr_assert_eq(be->ops->map(be, BASE, SZ_2M, VA(0)), 0);
	/* Without memory, maps succeed while the table has room, until one
	 * needs a new node: that one fails and changes nothing. */
	for (i = 1; ; i++) {
		cr_assert_lt(i, 200, "no map ever needed memory");
		take(be, &s);
		fail_after(0);
		rc = be->ops->map(be, BASE + i * SZ_2M, SZ_2M, VA(0));
		cvm_set_alloc_hooks(NULL);
		if (rc == -ENOMEM)
			break;
		cr_assert_eq(rc, 0);
	}
	cr_assert_gt(i, 1);
	assert_unchanged(be, &s);
	fail_after(0);
	cr_assert_eq(be->ops->cut(be, BASE + PAGE, PAGE, &size), -ENOMEM);
	cr_assert_eq(size, 0);
	assert_unchanged(be, &s);
	/* Removing never needs memory. */
	cr_assert_eq(be->ops->cut(be, BASE, SZ_2M, &size), 0);
	cr_assert_eq(be->ops->unmap_all(be), 0);
	cvm_set_alloc_hooks(NULL);
	cr_assert_eq(cvm_model_count(be), 0);
	cvm_backend_destroy(be);
}

/* ---- differential: every rule set against a page-by-page reference ---- */

#define NPAGES 48

/* Page p of the window belongs to mapping ref->id[p] (0: unmapped); each
 * mapping has its own id, so adjacent mappings stay distinct. */
struct ref {
	uint32_t rules;
	uint64_t limit;
	uint32_t id[NPAGES];
	uint32_t next_id;
};

static uint64_t ref_count(const struct ref *f)
{
	uint64_t n = 0;

	for (int p = 0; p < NPAGES; p++)
		n += f->id[p] && (p == 0 || f->id[p - 1] != f->id[p]);
	return n;
}

static bool starts(const struct ref *f, int p)
{
	return p == 0 || f->id[p - 1] != f->id[p];
}

static bool ends(const struct ref *f, int p)
{
	return p == NPAGES - 1 || f->id[p + 1] != f->id[p];
}

static int ref_map(struct ref *f, int s, int n)
{
	for (int p = s; p < s + n; p++)
		if (f->id[p])
			return -EEXIST;
	if (ref_count(f) >= f->limit)
		return -ENOSPC;
	f->next_id++;
	for (int p = s; p < s + n; p++)
		f->id[p] = f->next_id;
	return 0;
}

static uint64_t clear(struct ref *f, int s, int e)
{
	uint64_t pages = 0;

	for (int p = s; p < e; p++) {
		pages += f->id[p] != 0;
		f->id[p] = 0;
	}
	return pages * PAGE;
}

static int ref_unmap(struct ref *f, int s, int n, uint64_t *size)
{
	int e = s + n;

	*size = 0;
	switch (f->rules) {
	case CVM_MODEL_TYPE1:
		if ((f->id[s] && !starts(f, s)) || (f->id[e - 1] && !ends(f, e - 1)))
			return -EINVAL;
		*size = clear(f, s, e);
		return 0;
	case CVM_MODEL_IOMMUFD: {
		uint64_t bytes = 0;

		for (int p = s; p < e; p++) {
			int q = p;

			if (!f->id[p])
				continue;
			if (!starts(f, p))
				return -ENOENT;		/* straddles the start */
			while (!ends(f, q))
				q++;
			if (q >= e)
				return -ENOENT;		/* sticks out at the end */
			bytes += clear(f, p, q + 1);
			p = q;
		}
		if (!bytes)
			return -ENOENT;
		*size = bytes;
		return 0;
	}
	default: {
		uint32_t save[NPAGES];

		memcpy(save, f->id, sizeof(save));
		/* A mapping cut at the end leaves a piece above the range: it
		 * becomes a mapping of its own. */
		if (e < NPAGES && f->id[e] && f->id[e - 1] == f->id[e]) {
			uint32_t old = f->id[e];

			f->next_id++;
			for (int p = e; p < NPAGES && f->id[p] == old; p++)
				f->id[p] = f->next_id;
		}
		*size = clear(f, s, e);
		if (ref_count(f) > f->limit) {
			memcpy(f->id, save, sizeof(save));
			*size = 0;
			return -ENOSPC;
		}
		return 0;
	}
	}
}

struct cmp { const struct ref *f; int p; };

/* Walks the reference along the model's mappings: each must match one
 * maximal same-id run, in order. */
static int cmp_fn(void *opaque, uint64_t iova, uint64_t len)
{
	struct cmp *c = opaque;
	int s = (int)((iova - BASE) / PAGE), n = (int)(len / PAGE);

	cr_assert(iova >= BASE && s < NPAGES, "mapping at %#" PRIx64 " outside the window", iova);
	while (c->p < s) {
		cr_assert_eq(c->f->id[c->p], 0, "page %d should be mapped", c->p);
		c->p++;
	}
	cr_assert(c->f->id[s] && starts(c->f, s), "no mapping starts at page %d", s);
	for (int p = s; p < s + n; p++)
		cr_assert_eq(c->f->id[p], c->f->id[s], "page %d: mapping differs", p);
	cr_assert(ends(c->f, s + n - 1), "mapping at page %d is longer in the reference", s);
	c->p = s + n;
	return 0;
}

static void compare(struct cvm_be *be, const struct ref *f)
{
	struct cmp c = { f, 0 };

	cr_assert_eq(cvm_model_for_each(be, cmp_fn, &c), 0);
	for (; c.p < NPAGES; c.p++)
		cr_assert_eq(f->id[c.p], 0, "page %d should be mapped", c.p);
	cr_assert_eq(cvm_model_count(be), ref_count(f));
}

static uint64_t rng = 1;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static void differential(uint32_t rules, uint32_t limit)
{
	struct cvm_be *be = open_model(rules, limit);
	struct ref f = { .rules = rules, .limit = limit ? limit : rules ? UINT64_MAX : 65535 };

	for (int i = 0; i < 20000; i++) {
		int s = rnd(NPAGES), n = 1 + rnd(NPAGES - s < 6 ? NPAGES - s : 6), ra, rb;
		uint64_t iova = BASE + s * PAGE, a = 0, b = 0;

		if (rnd(2)) {
			ra = be->ops->map(be, iova, n * PAGE, VA(0));
			rb = ref_map(&f, s, n);
		} else {
			ra = be->ops->unmap(be, iova, n * PAGE, &a);
			rb = ref_unmap(&f, s, n, &b);
		}
		cr_assert(ra == rb && a == b, "op %d on [%d, +%d): model %d/%#" PRIx64
			  ", reference %d/%#" PRIx64, i, s, n, ra, a, rb, b);
		compare(be, &f);
	}
	cvm_backend_destroy(be);
}

Test(model_differential, type1_rules_match_a_page_reference)
{
	rng = 11;
	differential(CVM_MODEL_TYPE1, 0);
	rng = 12;
	differential(CVM_MODEL_TYPE1, 6);
}

Test(model_differential, iommufd_rules_match_a_page_reference)
{
	rng = 21;
	differential(CVM_MODEL_IOMMUFD, 0);
	rng = 22;
	differential(CVM_MODEL_IOMMUFD, 6);
}

Test(model_differential, cut_rules_match_a_page_reference)
{
	rng = 31;
	differential(CVM_MODEL_CUT, 0);
	rng = 32;
	differential(CVM_MODEL_CUT, 6);
}

/* ---- lib/backend.c ---- */

Test(backend_common, iova_valid_means_inside_one_range)
{
	struct cvm_be *be = open_model(CVM_MODEL_TYPE1, 0);

	cr_assert(cvm_backend_iova_valid(be, 0, PAGE));
	cr_assert(cvm_backend_iova_valid(be, 0, 0xfee00000ull));
	cr_assert_not(cvm_backend_iova_valid(be, 0, 0xfee00000ull + 1));
	cr_assert_not(cvm_backend_iova_valid(be, 0xfedff000ull, 0x102000ull));
	cr_assert(cvm_backend_iova_valid(be, 0xfef00000ull, (1ull << 48) - 0xfef00000ull));
	cr_assert_not(cvm_backend_iova_valid(be, (1ull << 48) - PAGE, 2 * PAGE));
	cr_assert_not(cvm_backend_iova_valid(be, BASE, 0));
	cr_assert_not(cvm_backend_iova_valid(be, UINT64_MAX, 2));
	cr_assert_not(cvm_backend_iova_valid(NULL, BASE, PAGE));
	cvm_backend_destroy(be);
}

Test(backend_common, scratch_window_is_the_aligned_top_of_the_highest_range)
{
	struct cvm_iova_range r[2] = { { 0, 0xfffff }, { 0x100000, 0x12345fffull } };
	struct cvm_be be = { .pgsizes = 0x40201000ull, .nranges = 2, .ranges = r };
	uint64_t iova = 0;

	cr_assert_eq(cvm_backend_scratch_iova(&be, 3 * PAGE, &iova), 0);
	cr_assert_eq(iova, 0x12343000ull);
	/* A 2 MiB window is 2 MiB aligned: it may get a huge IOPTE. */
	cr_assert_eq(cvm_backend_scratch_iova(&be, SZ_2M, &iova), 0);
	cr_assert_eq(iova, 0x12000000ull);
	/* Too big for the top range, fits the lower one. */
	r[1].last = 0x100fff;
	cr_assert_eq(cvm_backend_scratch_iova(&be, 0x10000, &iova), 0);
	cr_assert_eq(iova, 0xf0000ull);
	cr_assert_eq(cvm_backend_scratch_iova(&be, 1ull << 30, &iova), -ENOSPC);
	cr_assert_eq(cvm_backend_scratch_iova(&be, 0, &iova), -EINVAL);
	/* The whole 64-bit space (iommufd before attach). */
	r[0] = (struct cvm_iova_range){ 0, UINT64_MAX };
	be.nranges = 1;
	cr_assert_eq(cvm_backend_scratch_iova(&be, PAGE, &iova), 0);
	cr_assert_eq(iova, UINT64_MAX - PAGE + 1);
}

/* A range that holds len bytes, but not len bytes aligned to the largest
 * page that fits in len, is passed over for the next one down. */
Test(backend_common, scratch_window_skips_a_range_too_small_once_aligned)
{
	struct cvm_iova_range r[2] = { { 0, 0x3fffffull }, { 0x401000ull, 0x600fffull } };
	struct cvm_be be = { .pgsizes = 0x40201000ull, .nranges = 2, .ranges = r };
	uint64_t iova = 0;

	cr_assert_eq(cvm_backend_scratch_iova(&be, SZ_2M, &iova), 0);
	cr_assert_eq(iova, 0x200000ull);
	be.nranges = 1;
	be.ranges = &r[1];
	cr_assert_eq(cvm_backend_scratch_iova(&be, SZ_2M, &iova), -ENOSPC);
}

/* No page sizes (a type1 container without VFIO_IOMMU_INFO_PGSIZES): the
 * window is 4 KiB aligned. */
Test(backend_common, scratch_window_without_page_sizes_is_4k_aligned)
{
	struct cvm_iova_range r = { 0, 0x12345fffull };
	struct cvm_be be = { .pgsizes = 0, .nranges = 1, .ranges = &r };
	uint64_t iova = 0;

	cr_assert_eq(cvm_backend_scratch_iova(&be, 2 * PAGE + 100, &iova), 0);
	cr_assert_eq(iova, 0x12343000ull);
}
