// SPDX-License-Identifier: MIT
/*
 * The MODEL backend: the kernel's IOMMU mapping rules, in process, with the
 * errnos of doc/kernel-facts.md and, where that file is silent, of the Linux
 * 6.12 code it was read from.  The DMA layer's tests run against it, and
 * tests/conformance.c holds it to the same facts as the real kernels.
 *
 * One ops table per rule set:
 *   TYPE1   vfio_iommu_type1 v2: vfio_dma_do_map() / vfio_dma_do_unmap();
 *   IOMMUFD a native IOAS: IOMMU_IOAS_MAP / IOMMU_IOAS_UNMAP;
 *   CUT     an IOAS with large pages off, unmapped through the VFIO
 *           compatibility ioctl (iommufd_vfio_unmap_dma()): unmapping a
 *           sub-range cuts the mappings it touches, the rest stays mapped.
 * The address space looks like q35 with intel-iommu: page sizes 4K|2M|1G
 * and the MSI window [0xfee00000, 0xfeefffff] outside the valid ranges.
 *
 * The model records vaddr but never touches the memory behind it.
 *
 * Where it differs from the kernels (a differential run of random calls
 * against kernels A and B found these, all on calls the DMA layer never
 * makes: it cuts and unmaps page-aligned, non-empty ranges that do not
 * wrap, and unmaps whole mappings only):
 *  - CUT checks both cut points before it changes anything; the kernel
 *    splits at the end of the range before it checks the start or the
 *    length, so a failed cut (length 0, a wrapping range, a start off a
 *    page boundary) may leave a mapping split in two, still mapped;
 *  - CUT refuses with -EINVAL an unaligned end that falls on a mapping's
 *    first byte, where the kernel removes the whole mappings below it and
 *    says -ENOENT; a wrapping cut or map says -EOVERFLOW where the
 *    compatibility code says -EINVAL;
 *  - no rule set is iommufd's compat container with type1 v2 semantics
 *    (unaligned ranges accepted, unmapping nothing is 0) or a native IOAS
 *    whose unmap does not cut but whose VFIO-compat unmap does;
 *  - the page sizes are intel-iommu's for every rule set, where iommufd
 *    reports only its IOVA alignment;
 *  - an injected partial failure of a cut (a test hook) splits and then
 *    takes the first area inside, or changes nothing when there is one
 *    area inside or splits to make under an entry limit (which only the
 *    model puts on these rules); an injected split failure splits and
 *    then removes nothing, as the kernel failing at that first area
 *    (which no call shows: the DMA layer's table keeps the mappings whole
 *    and remembers where they may be split); the kernel can also split at
 *    the end and then refuse the start, which the model never does.
 */
#include <inttypes.h>

#include "internal.h"
#include "backend.h"
#include "maptable.h"

#define MODEL_PAGE		4096ull
#define MODEL_PGSIZES		0x40201000ull	/* 4K | 2M | 1G, as intel-iommu */
#define TYPE1_DEFAULT_LIMIT	65535u		/* vfio_iommu_type1.dma_entry_limit */
#define NO_LIMIT		UINT64_MAX

struct model {
	struct cvm_be be;
	uint32_t rules;			/* enum cvm_model_rules */
	uint64_t limit;			/* mappings allowed; NO_LIMIT: none */
	struct maptable *mt;		/* the kernel's mappings; data = vaddr */
	uint64_t inject_nth;		/* the call that fails, counting down */
	uint64_t inject_count;		/* calls in a row that fail from there */
	int inject_err;
	bool inject_partial;		/* an unmap fails after its first mapping */
	bool inject_split;		/* a cut fails after its splits */
};

/* q35: everything below the MSI window, and above it up to 48 bits. */
static const struct cvm_iova_range q35_ranges[] = {
	{ 0, 0xfedfffffull },
	{ 0xfef00000ull, (1ull << 48) - 1 },
};

static inline struct model *to_model(struct cvm_be *be)
{
	return container_of(be, struct model, be);
}

/* Counts one backend call; true (and *err) if it is the injected failure. */
static bool injected(struct model *m, int *err)
{
	if (!m->inject_nth || --m->inject_nth)
		return false;
	if (--m->inject_count)
		m->inject_nth = 1;	/* the next call fails too */
	*err = m->inject_err;
	return true;
}

static bool unaligned(uint64_t x)
{
	return x & (MODEL_PAGE - 1);
}

/* len - 1 past the end of the 64-bit space from start. */
static bool wraps(uint64_t start, uint64_t len)
{
	return len - 1 > UINT64_MAX - start;
}

struct first_two {
	uint64_t iova, last;
	struct mt_entry e[2];
	int n;
};

/* The whole mappings the range starts with, up to two: the walk stops at
 * the first that sticks out of the range, as the kernel does. */
static int note_inside(void *opaque, const struct mt_entry *e)
{
	struct first_two *f = opaque;

	if (e->iova < f->iova || e->iova + (e->len - 1) > f->last)
		return 1;
	f->e[f->n++] = *e;
	return f->n == 2;
}

/* An injected unmap failure: with inject_partial, when the range starts
 * with several whole mappings, the first goes before the call fails, as in
 * iopt_unmap_iova_range(), which takes areas in ascending order and stops
 * at the first it cannot take (one sticking out first: nothing goes). */
static int failed_unmap(struct model *m, uint64_t iova, uint64_t len, int err)
{
	struct first_two f = { .iova = iova, .last = iova + (len - 1) };

	if (m->inject_partial && len && !wraps(iova, len)) {
		maptable_for_each(m->mt, iova, len, note_inside, &f);
		if (f.n == 2)
			maptable_remove(m->mt, f.e[0].iova, NULL);
	}
	m->inject_partial = m->inject_split = false;
	return err;
}

static bool overlaps(const struct model *m, uint64_t iova, uint64_t len)
{
	struct mt_entry e;

	return !maptable_lookup(m->mt, iova, &e) && e.iova <= iova + (len - 1);
}

static uint64_t entry_last(const struct mt_entry *e)
{
	return e->iova + (e->len - 1);
}

static bool full(const struct model *m)
{
	return maptable_count(m->mt) >= m->limit;
}

/* The mapping containing byte x, if any. */
static bool containing(const struct model *m, uint64_t x, struct mt_entry *e)
{
	return !maptable_lookup(m->mt, x, e) && e->iova <= x;
}

/* Remove the whole mappings inside [iova, last]; the bytes removed. */
static uint64_t remove_inside(struct model *m, uint64_t iova, uint64_t last)
{
	uint64_t bytes = 0;

	/* Callers made sure that no mapping straddles either end. */
	maptable_remove_range(m->mt, iova, iova == 0 && last == UINT64_MAX ? 0 : last - iova + 1,
			      &bytes);
	return bytes;
}

static void report(uint64_t *unmapped, uint64_t bytes)
{
	if (unmapped)
		*unmapped = bytes;
}

/*
 * The common unmap, of exactly one whole mapping, in one search: true if
 * [iova, iova+len) was one (it is gone, *unmapped says so).  No rule of any
 * kernel objects to that once the arguments are valid, and nothing else
 * changes, so callers take this path first and fall back to the general one.
 */
static bool unmap_exact(struct model *m, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	if (maptable_remove_exact(m->mt, iova, len, NULL))
		return false;
	report(unmapped, len);
	return true;
}

/* ---- TYPE1 (v2) ---- */

/* The checks of vfio_dma_do_map(), in its order. */
static int type1_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	struct model *m = to_model(be);
	uint64_t va = (uintptr_t)vaddr;
	int err;

	if (injected(m, &err))
		return err;
	if (!len || unaligned(len | iova | va))
		return -EINVAL;
	if (wraps(iova, len) || wraps(va, len))
		return -EINVAL;
	/* When nothing else objects, the insert's own search finds an overlap
	 * (-EEXIST, which the kernel also checks first): one search, not two. */
	if (!full(m) && cvm_backend_iova_valid(be, iova, len) && vaddr)
		return maptable_insert(m->mt, iova, len, va);
	if (overlaps(m, iova, len))
		return -EEXIST;
	if (full(m))
		return -ENOSPC;
	if (!cvm_backend_iova_valid(be, iova, len))
		return -EINVAL;
	return -EFAULT;			/* pinning page 0 faults */
}

/*
 * vfio_dma_do_unmap() with v2 rules: a mapping that straddles either end
 * fails the whole call before anything is removed; whole mappings inside
 * go; an empty range succeeds with size 0.
 */
static int type1_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct model *m = to_model(be);
	struct mt_entry e;
	uint64_t last;
	int err;

	report(unmapped, 0);
	if (injected(m, &err))
		return err;
	if (unaligned(iova) || !len || unaligned(len) || wraps(iova, len))
		return -EINVAL;
	if (unmap_exact(m, iova, len, unmapped))
		return 0;
	last = iova + len - 1;
	if (containing(m, iova, &e) && e.iova != iova)
		return -EINVAL;
	if (containing(m, last, &e) && entry_last(&e) != last)
		return -EINVAL;
	report(unmapped, remove_inside(m, iova, last));
	return 0;
}

/* ---- IOMMUFD (native IOAS), and the map side of CUT ---- */

/*
 * IOMMU_IOAS_MAP with a fixed IOVA, in the order of iommufd_ioas_map(),
 * iopt_alloc_pages(), iopt_alloc_area_pages(), iopt_check_iova() and
 * iopt_insert_area().  The VFIO compatibility map takes the same path.
 */
static int iommufd_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	struct model *m = to_model(be);
	uint64_t va = (uintptr_t)vaddr;
	int err;

	if (injected(m, &err))
		return err;
	if (iova == UINT64_MAX || len == UINT64_MAX)
		return -EOVERFLOW;
	if (!len || len > UINT64_MAX - MODEL_PAGE)
		return -EINVAL;
	if (len > UINT64_MAX - va)
		return -EOVERFLOW;
	if (unaligned(len) || unaligned(iova))
		return -EINVAL;
	if (wraps(iova, len))
		return -EOVERFLOW;
	if (!cvm_backend_iova_valid(be, iova, len))
		return -EINVAL;		/* intersects a reserved range */
	/* One search, as in type1_map(). */
	if (!unaligned(va) && !full(m) && vaddr)
		return maptable_insert(m->mt, iova, len, va);
	if (overlaps(m, iova, len))
		return -EEXIST;
	if (unaligned(va))
		return -EINVAL;		/* the area's page offset */
	if (full(m))
		return -ENOSPC;		/* only with a model entry limit */
	return -EFAULT;
}

/*
 * IOMMU_IOAS_UNMAP: areas are removed in ascending order until one sticks
 * out of the range, which fails the call with -ENOENT -- after the areas
 * before it are already gone, as in iopt_unmap_iova_range().  Unmapping
 * nothing is -ENOENT too (type1 says 0 there).
 */
static int iommufd_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct model *m = to_model(be);
	uint64_t last, bytes = 0;
	struct mt_entry e;
	int err;

	report(unmapped, 0);
	if (injected(m, &err))
		return failed_unmap(m, iova, len, err);
	if (iova == 0 && len == UINT64_MAX) {
		report(unmapped, remove_inside(m, 0, UINT64_MAX));
		return 0;
	}
	if (iova == UINT64_MAX || len == UINT64_MAX)
		return -EOVERFLOW;
	if (!len)
		return -EINVAL;
	if (wraps(iova, len))
		return -EOVERFLOW;
	if (unmap_exact(m, iova, len, unmapped))
		return 0;
	last = iova + len - 1;
	/* An area sticking out below: nothing goes.  One sticking out above:
	 * the areas before it go, then the call fails. */
	if (containing(m, iova, &e) && e.iova < iova)
		return -ENOENT;
	if (containing(m, last, &e) && entry_last(&e) > last) {
		if (e.iova > iova)
			remove_inside(m, iova, e.iova - 1);
		return -ENOENT;
	}
	bytes = remove_inside(m, iova, last);
	if (!bytes)
		return -ENOENT;
	report(unmapped, bytes);
	return 0;
}

/* ---- CUT ---- */

/* Does cutting after byte p split a mapping?  -EINVAL if it would split it
 * off a page boundary (iopt_area_split()). */
static int cut_point(const struct model *m, uint64_t p, int *splits)
{
	struct mt_entry e;

	if (!containing(m, p, &e) || entry_last(&e) == p)
		return 0;
	if (unaligned(p + 1))
		return -EINVAL;
	(*splits)++;
	return 0;
}

/* Split the mapping containing byte p after p (known to be needed). */
static void split_after(struct model *m, uint64_t p)
{
	struct mt_entry e;
	uint64_t head;

	if (!containing(m, p, &e) || entry_last(&e) == p)
		return;
	head = p - e.iova + 1;
	maptable_remove(m->mt, e.iova, NULL);
	/* Cannot fail: the caller reserved the slots. */
	maptable_insert(m->mt, e.iova, head, e.data);
	maptable_insert(m->mt, p + 1, e.len - head, e.data + head);
}

/* Mappings left after cutting [iova, last] out. */
static uint64_t count_after_cut(struct model *m, uint64_t iova, uint64_t last, int splits)
{
	struct mt_entry e;
	uint64_t gone = 0, x = iova;

	/* Every mapping touching the range loses its inside part; a mapping
	 * that sticks out on a side keeps a piece there. */
	while (!maptable_lookup(m->mt, x, &e) && e.iova <= last) {
		gone++;
		if (entry_last(&e) >= last)
			break;
		x = entry_last(&e) + 1;
	}
	return maptable_count(m->mt) - gone + (uint64_t)splits;
}

/* Both cut points of [iova, last] (see cut_point()). */
static int cut_points(struct model *m, uint64_t iova, uint64_t last, int *splits)
{
	int err = cut_point(m, last, splits);

	if (!err && iova)
		err = cut_point(m, iova - 1, splits);
	return err;
}

/*
 * An injected cut failure: with inject_partial, as the kernel, which cuts
 * at both ends before iopt_unmap_iova_range() takes the areas inside in
 * ascending order: the cuts, then the first of several areas (the inside
 * piece of a mapping across the start, if any) goes before the call fails.
 * With one area inside, or a cut that could not be made, nothing changes
 * (a failure before the first cut).  With inject_split, the kernel fails
 * at the first area inside: the cuts are made, nothing is removed.
 */
static int failed_cut(struct model *m, uint64_t iova, uint64_t len, int err)
{
	struct first_two f = { .iova = iova, .last = iova + (len - 1) };
	bool take = m->inject_partial;
	struct mt_entry e;
	int splits = 0;

	if (!(take || m->inject_split) || !len || wraps(iova, len))
		return failed_unmap(m, iova, len, err);
	m->inject_partial = m->inject_split = false;
	/* Areas inside once cut: every mapping the range touches. */
	for (uint64_t x = iova; f.n < 2 && !maptable_lookup(m->mt, x, &e) && e.iova <= f.last;
	     x = entry_last(&e) + 1) {
		f.n++;
		if (entry_last(&e) >= f.last)
			break;
	}
	if (f.n < (take ? 2 : 1) || cut_points(m, iova, f.last, &splits))
		return err;
	if (splits) {
		/* Only the model limits the mappings of these rules, and its
		 * limit has no room for splits the DMA layer could not plan for
		 * (its rollback, or the piece mapped back, would not fit): there
		 * the failure comes before the first cut. */
		if (m->limit != NO_LIMIT || maptable_reserve(m->mt, 2))
			return err;
		split_after(m, f.last);
		if (iova)
			split_after(m, iova - 1);
	}
	if (!take)
		return err;
	f.n = 0;
	maptable_for_each(m->mt, iova, len, note_inside, &f);
	maptable_remove(m->mt, f.e[0].iova, NULL);
	return err;
}

/*
 * iommufd_vfio_unmap_dma() with large pages disabled: cut at both ends of
 * the range, then unmap the whole areas inside.  The kernel makes the
 * first cut before checking the second; the model checks both first, so
 * a failed call changes nothing (an invisible difference: both halves of
 * a completed cut stay mapped).  Unmapping nothing returns 0, size 0.
 */
static int cut_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct model *m = to_model(be);
	uint64_t last;
	int err, splits = 0;

	report(unmapped, 0);
	if (injected(m, &err))
		return failed_cut(m, iova, len, err);
	if (!len)
		return -EINVAL;
	if (wraps(iova, len))
		return -EOVERFLOW;
	if (unmap_exact(m, iova, len, unmapped))
		return 0;
	last = iova + len - 1;
	err = cut_points(m, iova, last, &splits);
	if (err)
		return err;
	if (splits) {
		if (m->limit != NO_LIMIT && count_after_cut(m, iova, last, splits) > m->limit)
			return -ENOSPC;
		err = maptable_reserve(m->mt, 2);
		if (err)
			return err;
		split_after(m, last);
		if (iova)
			split_after(m, iova - 1);
	}
	report(unmapped, remove_inside(m, iova, last));
	return 0;
}

/* ---- common ---- */

/* VFIO_DMA_UNMAP_FLAG_ALL / IOAS_UNMAP of [0, U64_MAX]: always 0. */
static int model_unmap_all(struct cvm_be *be)
{
	struct model *m = to_model(be);
	int err;

	if (injected(m, &err))
		return err;
	remove_inside(m, 0, UINT64_MAX);
	return 0;
}

/* What GET_INFO would read now: its page sizes and DMA_AVAIL. */
static int model_refresh(struct cvm_be *be)
{
	struct model *m = to_model(be);

	be->pgsizes = MODEL_PGSIZES;
	be->entries_avail = m->limit == NO_LIMIT ? NO_LIMIT : m->limit - maptable_count(m->mt);
	return 0;
}

static void model_destroy(struct cvm_be *be)
{
	struct model *m = to_model(be);

	maptable_destroy(m->mt);
	cvm_free(be->ranges);
	cvm_free(m);
}

static const struct cvm_backend_ops model_type1_ops = {
	.name = "model-type1",
	.map = type1_map,
	.unmap = type1_unmap,
	.unmap_all = model_unmap_all,
	.refresh = model_refresh,
	.destroy = model_destroy,
};

static const struct cvm_backend_ops model_iommufd_ops = {
	.name = "model-iommufd",
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.unmap_all = model_unmap_all,
	.refresh = model_refresh,
	.destroy = model_destroy,
};

static const struct cvm_backend_ops model_cut_ops = {
	.name = "model-cut",
	.map = iommufd_map,
	.unmap = cut_unmap,
	.cut = cut_unmap,
	.unmap_all = model_unmap_all,
	.refresh = model_refresh,
	.destroy = model_destroy,
};

/* CUT rules as the library meets them on an iommufd IOAS that cuts: the
 * VFIO compatibility unmap cuts, IOMMU_IOAS_UNMAP does not (a test hook,
 * cvm_model_native_unmap(), selects it). */
static const struct cvm_backend_ops model_cut_native_ops = {
	.name = "model-cut-native-unmap",
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.cut = cut_unmap,
	.unmap_all = model_unmap_all,
	.refresh = model_refresh,
	.destroy = model_destroy,
};

static const struct cvm_backend_ops *const model_ops[] = {
	[CVM_MODEL_TYPE1] = &model_type1_ops,
	[CVM_MODEL_IOMMUFD] = &model_iommufd_ops,
	[CVM_MODEL_CUT] = &model_cut_ops,
};

int cvm_backend_model_open(uint32_t rules, uint32_t entry_limit, struct cvm_be **out)
{
	struct model *m;

	if (!out || rules >= ARRAY_SIZE(model_ops))
		return -EINVAL;
	m = cvm_calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->be.ranges = cvm_malloc(sizeof(q35_ranges));
	if (!m->be.ranges || maptable_create(&m->mt)) {
		cvm_free(m->be.ranges);
		cvm_free(m);
		return -ENOMEM;
	}
	memcpy(m->be.ranges, q35_ranges, sizeof(q35_ranges));
	m->be.nranges = ARRAY_SIZE(q35_ranges);
	m->rules = rules;
	m->limit = entry_limit ? entry_limit :
		   rules == CVM_MODEL_TYPE1 ? TYPE1_DEFAULT_LIMIT : NO_LIMIT;
	m->be.ops = model_ops[rules];
	m->be.kind = CVM_BACKEND_MODEL;
	m->be.fd = -1;
	m->be.can_cut = rules == CVM_MODEL_CUT;
	m->be.unmap_partial = rules != CVM_MODEL_TYPE1;   /* type1 v2 is all or nothing */
	model_refresh(&m->be);
	if (m->limit == NO_LIMIT)
		cvm_dbg("model backend %s open, no entry limit", m->be.ops->name);
	else
		cvm_dbg("model backend %s open, entry limit %" PRIu64, m->be.ops->name, m->limit);
	*out = &m->be;
	return 0;
}

/* ---- test hooks ---- */

static struct model *as_model(struct cvm_be *be)
{
	if (!be || be->kind != CVM_BACKEND_MODEL)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(model_ops); i++)
		if (be->ops == model_ops[i])
			return to_model(be);
	return be->ops == &model_cut_native_ops ? to_model(be) : NULL;
}

int cvm_model_native_unmap(struct cvm_be *be)
{
	if (!as_model(be) || be->ops != &model_cut_ops)
		return -EINVAL;
	be->ops = &model_cut_native_ops;
	return 0;
}

int cvm_model_vmm_unmap(struct cvm_be *be, uint64_t iova, uint64_t len)
{
	struct model *m = as_model(be);

	if (!m)
		return -EINVAL;
	return maptable_remove_exact(m->mt, iova, len, NULL) ? -ENOENT : 0;
}

int cvm_model_vmm_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	struct model *m = as_model(be);

	if (!m || !vaddr)
		return -EINVAL;
	if (full(m))
		return -ENOSPC;
	return maptable_insert(m->mt, iova, len, (uintptr_t)vaddr);
}

void cvm_model_inject_n(struct cvm_be *be, uint64_t nth, uint64_t count, int err)
{
	struct model *m = as_model(be);

	if (!m)
		return;
	m->inject_nth = count ? nth : 0;
	m->inject_count = count;
	m->inject_partial = m->inject_split = false;
	/* A "failure" that returns success would silently skip the call. */
	m->inject_err = err < 0 ? err : -EIO;
}

void cvm_model_inject_partial_n(struct cvm_be *be, uint64_t nth, uint64_t count, int err)
{
	struct model *m = as_model(be);

	if (!m)
		return;
	cvm_model_inject_n(be, nth, count, err);
	m->inject_partial = nth && count;
}

void cvm_model_inject_partial(struct cvm_be *be, uint64_t nth, int err)
{
	cvm_model_inject_partial_n(be, nth, 1, err);
}

void cvm_model_inject_split(struct cvm_be *be, uint64_t nth, int err)
{
	struct model *m = as_model(be);

	if (!m)
		return;
	cvm_model_inject_n(be, nth, 1, err);
	m->inject_split = nth != 0;
}

void cvm_model_inject(struct cvm_be *be, uint64_t nth, int err)
{
	cvm_model_inject_n(be, nth, 1, err);
}

struct each_ctx {
	int (*fn)(void *opaque, uint64_t iova, uint64_t len);
	void *opaque;
};

static int each_mapping(void *opaque, const struct mt_entry *e)
{
	struct each_ctx *c = opaque;

	return c->fn(c->opaque, e->iova, e->len);
}

int cvm_model_for_each(struct cvm_be *be,
		       int (*fn)(void *opaque, uint64_t iova, uint64_t len), void *opaque)
{
	struct model *m = as_model(be);
	struct each_ctx c = { fn, opaque };

	if (!m || !fn)
		return -EINVAL;
	return maptable_for_each(m->mt, 0, 0, each_mapping, &c);
}

uint64_t cvm_model_count(struct cvm_be *be)
{
	struct model *m = as_model(be);

	return m ? maptable_count(m->mt) : 0;
}
