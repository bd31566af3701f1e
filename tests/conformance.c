// SPDX-License-Identifier: MIT
/*
 * The kernel conformance suite (see conformance.h): each test asserts one
 * fact of doc/kernel-facts.md §1-§3 that the library relies on, through the
 * backend ops exactly as the DMA layer calls them, on a fresh backend that
 * it leaves empty.  The same code runs against the model in make check and
 * against the real kernels in the test guest, so the model cannot drift
 * from the kernel unnoticed.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "backend.h"
#include "conformance.h"

#define PAGE		4096ull
#define SZ_2M		(2ull << 20)
#define MEM_LEN		(4ull << 20)
/* Where the tests map: low, in q35's first range, clear of guest RAM
 * regions a VMM might have mapped at 0 (the suite's backends are fresh). */
#define BASE_IOVA	(1ull << 30)
#define WINDOW		(64ull << 20)
#define MSI_START	0xfee00000ull
#define MSI_LAST	0xfeefffffull

struct conf {
	const struct conf_target *t;
	struct cvm_be *be;
	uint8_t *mem;		/* MEM_LEN bytes: the vaddr of every map */
	uint64_t base;		/* BASE_IOVA, or a scratch window if that is invalid */
	char why[256];		/* the first failed check */
};

/* Records the first failed check and fails the test. */
#define CHECK(c, cond, ...) do {						\
	if (!(cond)) {								\
		note(c, __LINE__, __VA_ARGS__);					\
		return false;							\
	}									\
} while (0)

__attribute__((format(printf, 3, 4)))
static void note(struct conf *c, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(c->why, sizeof(c->why), "line %d: ", line);
	va_start(ap, fmt);
	vsnprintf(c->why + n, sizeof(c->why) - n, fmt, ap);
	va_end(ap);
}

static const char *errname(int err)
{
	static char buf[16];

	switch (err) {
	case 0: return "0";
	case -EINVAL: return "-EINVAL";
	case -ENOENT: return "-ENOENT";
	case -EEXIST: return "-EEXIST";
	case -ENOSPC: return "-ENOSPC";
	case -EOVERFLOW: return "-EOVERFLOW";
	case -EFAULT: return "-EFAULT";
	case -ENOMEM: return "-ENOMEM";
	}
	snprintf(buf, sizeof(buf), "%d", err);
	return buf;
}

/* ---- thin wrappers: the ops, with the answers spelled out ---- */

static int map(struct conf *c, uint64_t iova, uint64_t len, uint64_t mem_off)
{
	return c->be->ops->map(c->be, iova, len, c->mem + mem_off % MEM_LEN);
}

static int unmap(struct conf *c, uint64_t iova, uint64_t len, uint64_t *size)
{
	*size = UINT64_MAX;	/* the backend must always write it */
	return c->be->ops->unmap(c->be, iova, len, size);
}

/* Unmap [iova, iova + len) expecting exactly want bytes to go. */
static bool unmap_exact(struct conf *c, uint64_t iova, uint64_t len, uint64_t want, int line)
{
	uint64_t size;
	int ret = unmap(c, iova, len, &size);

	if (ret == 0 && size == want)
		return true;
	note(c, line, "unmap [%#" PRIx64 ", +%#" PRIx64 ") = %s, size %#" PRIx64
	     "; expected 0, size %#" PRIx64, iova, len, errname(ret), size, want);
	return false;
}
#define UNMAP_EXACT(c, iova, len, want) \
	do { if (!unmap_exact(c, iova, len, want, __LINE__)) return false; } while (0)

static int refresh(struct conf *c, uint64_t *avail)
{
	int ret = c->be->ops->refresh(c->be);

	*avail = c->be->entries_avail;
	return ret;
}

/* ---- §1-§3: unmap ---- */

/* Unmap 4 KiB at off inside a 2 MiB mapping: partial_unmap_err, mapping
 * intact; or, where unmap cuts, exactly that page goes. */
static bool partial_unmap(struct conf *c, uint64_t off)
{
	int want = c->t->partial_unmap_err, ret;
	uint64_t b = c->base, size;

	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map 2 MiB: %s", errname(ret));
	ret = unmap(c, b + off, PAGE, &size);
	if (want) {
		CHECK(c, ret == want && size == 0, "partial unmap = %s, size %#" PRIx64
		      "; expected %s, size 0", errname(ret), size, errname(want));
		UNMAP_EXACT(c, b, SZ_2M, SZ_2M);
		return true;
	}
	CHECK(c, ret == 0 && size == PAGE, "cutting unmap = %s, size %#" PRIx64
	      "; expected 0, size 0x1000", errname(ret), size);
	UNMAP_EXACT(c, b, SZ_2M, SZ_2M - PAGE);
	return true;
}

static bool t_partial_middle(struct conf *c)
{
	return partial_unmap(c, SZ_2M / 2);
}

static bool t_partial_first(struct conf *c)
{
	return partial_unmap(c, 0);
}

static bool t_whole_unmap(struct conf *c)
{
	int ret;

	CHECK(c, !(ret = map(c, c->base, SZ_2M, 0)), "map 2 MiB: %s", errname(ret));
	UNMAP_EXACT(c, c->base, SZ_2M, SZ_2M);
	return true;
}

static bool t_unmap_nothing(struct conf *c)
{
	int want = c->t->unmap_nothing_err, ret;
	uint64_t b = c->base, size;

	/* Something mapped elsewhere: the range is empty, the space is not. */
	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map 2 MiB: %s", errname(ret));
	ret = unmap(c, b + 2 * SZ_2M, SZ_2M, &size);
	CHECK(c, ret == want && size == 0, "unmap of nothing = %s, size %#" PRIx64
	      "; expected %s, size 0", errname(ret), size, errname(want));
	UNMAP_EXACT(c, b, SZ_2M, SZ_2M);
	return true;
}

/* 16 whole 4 KiB mappings, every other page, and one unmap from the gap
 * below the first to the gap above the last. */
static bool t_unmap_many_whole(struct conf *c)
{
	uint64_t b = c->base + SZ_2M;
	int ret;

	for (int i = 0; i < 16; i++)
		CHECK(c, !(ret = map(c, b + i * 2 * PAGE, PAGE, i * PAGE)), "map %d: %s", i,
		      errname(ret));
	UNMAP_EXACT(c, b - PAGE, 33 * PAGE, 16 * PAGE);
	/* Nothing is left in the window: it maps again as one piece. */
	CHECK(c, !(ret = map(c, b, 32 * PAGE, 0)), "remap of the emptied window: %s",
	      errname(ret));
	UNMAP_EXACT(c, b, 32 * PAGE, 32 * PAGE);
	return true;
}

/* An unmap that reaches into a mapping after passing whole ones: type1
 * checks both ends first and removes nothing; iommufd removes areas in
 * ascending order and fails at the straddled one, so the whole mappings
 * below it are already gone (iopt_unmap_iova_range()); a cutting unmap
 * cuts. */
static bool t_unmap_straddle_after_whole(struct conf *c)
{
	int want = c->t->partial_unmap_err, ret;
	uint64_t a = c->base, b = c->base + 16 * PAGE, size;

	CHECK(c, !(ret = map(c, a, PAGE, 0)), "map A: %s", errname(ret));
	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map B: %s", errname(ret));
	ret = unmap(c, a, 16 * PAGE + SZ_2M / 2, &size);
	if (want == 0) {
		CHECK(c, ret == 0 && size == PAGE + SZ_2M / 2, "cutting unmap = %s, size %#"
		      PRIx64, errname(ret), size);
		UNMAP_EXACT(c, b, SZ_2M, SZ_2M / 2);
		return true;
	}
	CHECK(c, ret == want && size == 0, "straddling unmap = %s, size %#" PRIx64
	      "; expected %s, size 0", errname(ret), size, errname(want));
	if (want == -EINVAL) {
		UNMAP_EXACT(c, a, PAGE, PAGE);
	} else {
		ret = unmap(c, a, PAGE, &size);
		CHECK(c, ret == c->t->unmap_nothing_err && size == 0,
		      "A was expected gone: unmap = %s, size %#" PRIx64, errname(ret), size);
	}
	UNMAP_EXACT(c, b, SZ_2M, SZ_2M);
	return true;
}

static bool t_unmap_all(struct conf *c)
{
	uint64_t where[3] = { c->base, c->base + 8 * SZ_2M, 0 };
	int ret;

	/* One mapping in the highest range too, where probes map. */
	CHECK(c, !cvm_backend_scratch_iova(c->be, SZ_2M, &where[2]), "no scratch window");
	for (int i = 0; i < 3; i++)
		CHECK(c, !(ret = map(c, where[i], SZ_2M, 0)), "map %#" PRIx64 ": %s", where[i],
		      errname(ret));
	CHECK(c, !(ret = c->be->ops->unmap_all(c->be)), "unmap_all: %s", errname(ret));
	/* Gone: each maps again, and unmaps as exactly what was mapped. */
	for (int i = 0; i < 3; i++) {
		CHECK(c, !(ret = map(c, where[i], PAGE, 0)), "remap %#" PRIx64 ": %s", where[i],
		      errname(ret));
		UNMAP_EXACT(c, where[i], SZ_2M, PAGE);
	}
	return true;
}

/* ---- §1-§3: map ---- */

static bool t_overlap(struct conf *c)
{
	static const struct { int64_t off; uint64_t len; } tries[] = {
		{ 0, SZ_2M },			/* the same range */
		{ SZ_2M / 2, PAGE },		/* inside */
		{ -(int64_t)SZ_2M / 2, SZ_2M },	/* over the start */
		{ SZ_2M - PAGE, 2 * PAGE },	/* over the end */
		{ -(int64_t)PAGE, SZ_2M + 2 * PAGE },	/* around it */
	};
	uint64_t b = c->base + SZ_2M;
	int ret;

	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map 2 MiB: %s", errname(ret));
	for (size_t i = 0; i < ARRAY_SIZE(tries); i++) {
		ret = map(c, b + tries[i].off, tries[i].len, 0);
		CHECK(c, ret == -EEXIST, "overlapping map %zu = %s; expected -EEXIST", i,
		      errname(ret));
	}
	UNMAP_EXACT(c, b - SZ_2M, 3 * SZ_2M, SZ_2M);
	return true;
}

static bool t_adjacent_not_merged(struct conf *c)
{
	uint64_t b = c->base, avail0, avail1;
	int ret;

	CHECK(c, !(ret = refresh(c, &avail0)), "refresh: %s", errname(ret));
	for (int i = 0; i < 4; i++)
		CHECK(c, !(ret = map(c, b + i * PAGE, PAGE, i * PAGE)), "map %d: %s", i,
		      errname(ret));
	CHECK(c, !(ret = refresh(c, &avail1)), "refresh: %s", errname(ret));
	if (c->t->has_entry_limit)
		CHECK(c, avail0 - avail1 == 4, "entries_avail %" PRIu64 " -> %" PRIu64
		      " after 4 maps", avail0, avail1);
	/* Were they merged, unmapping one page would bisect a mapping. */
	UNMAP_EXACT(c, b + PAGE, PAGE, PAGE);
	UNMAP_EXACT(c, b + 3 * PAGE, PAGE, PAGE);
	UNMAP_EXACT(c, b, 4 * PAGE, 2 * PAGE);
	return true;
}

static bool t_entry_limit(struct conf *c)
{
	uint64_t b = c->base, avail;
	int ret;

	CHECK(c, !(ret = refresh(c, &avail)) && avail == 100,
	      "refresh %s, entries_avail %" PRIu64 "; expected 100", errname(ret), avail);
	for (int i = 0; i < 100; i++)
		CHECK(c, !(ret = map(c, b + i * 2 * PAGE, PAGE, i * PAGE)), "map %d: %s", i,
		      errname(ret));
	ret = map(c, b + 200 * PAGE, PAGE, 0);
	CHECK(c, ret == -ENOSPC, "map 101 = %s; expected -ENOSPC", errname(ret));
	CHECK(c, !(ret = refresh(c, &avail)) && avail == 0,
	      "refresh %s, entries_avail %" PRIu64 "; expected 0", errname(ret), avail);
	UNMAP_EXACT(c, b, PAGE, PAGE);
	CHECK(c, !(ret = refresh(c, &avail)) && avail == 1,
	      "refresh %s, entries_avail %" PRIu64 "; expected 1", errname(ret), avail);
	CHECK(c, !(ret = map(c, b + 200 * PAGE, PAGE, 0)), "map after an unmap: %s",
	      errname(ret));
	UNMAP_EXACT(c, b, 202 * PAGE, 100 * PAGE);
	return true;
}

static bool t_no_entry_limit(struct conf *c)
{
	uint64_t b = c->base, avail0, avail1;
	int ret;

	CHECK(c, !(ret = refresh(c, &avail0)), "refresh: %s", errname(ret));
	CHECK(c, avail0 >= UINT32_MAX, "entries_avail %" PRIu64, avail0);
	for (int i = 0; i < 200; i++)
		CHECK(c, !(ret = map(c, b + i * 2 * PAGE, PAGE, i * PAGE)), "map %d: %s", i,
		      errname(ret));
	CHECK(c, !(ret = refresh(c, &avail1)), "refresh: %s", errname(ret));
	CHECK(c, avail1 == avail0, "entries_avail %" PRIu64 " -> %" PRIu64, avail0, avail1);
	UNMAP_EXACT(c, b, 400 * PAGE, 200 * PAGE);
	return true;
}

static bool t_outside_ranges(struct conf *c)
{
	const struct cvm_iova_range *top = &c->be->ranges[c->be->nranges - 1];
	int ret;

	ret = map(c, MSI_START, PAGE, 0);
	CHECK(c, ret == -EINVAL, "map in the MSI window = %s; expected -EINVAL", errname(ret));
	ret = map(c, MSI_START - PAGE, 2 * PAGE, 0);
	CHECK(c, ret == -EINVAL, "map into the MSI window = %s; expected -EINVAL", errname(ret));
	if (top->last < UINT64_MAX - 2 * PAGE) {
		ret = map(c, top->last + 1 - PAGE, 2 * PAGE, 0);
		CHECK(c, ret == -EINVAL, "map across the top = %s; expected -EINVAL",
		      errname(ret));
		ret = map(c, top->last + 1, PAGE, 0);
		CHECK(c, ret == -EINVAL, "map above the top = %s; expected -EINVAL",
		      errname(ret));
	}
	return true;
}

static bool t_unaligned(struct conf *c)
{
	uint64_t b = c->base;
	int ret;

	ret = map(c, b + 512, PAGE, 0);
	CHECK(c, ret == -EINVAL, "unaligned iova = %s; expected -EINVAL", errname(ret));
	ret = map(c, b, PAGE + 512, 0);
	CHECK(c, ret == -EINVAL, "unaligned length = %s; expected -EINVAL", errname(ret));
	ret = map(c, b, PAGE, 512);
	CHECK(c, ret == -EINVAL, "unaligned vaddr = %s; expected -EINVAL", errname(ret));
	ret = map(c, b, 0, 0);
	CHECK(c, ret == -EINVAL, "length 0 = %s; expected -EINVAL", errname(ret));
	return true;
}

static bool t_wrap(struct conf *c)
{
	uint64_t size;
	int ret;

	/* -EINVAL from type1, -EOVERFLOW from iommufd: either way, refused. */
	ret = map(c, UINT64_MAX - PAGE + 1, 2 * PAGE, 0);
	CHECK(c, ret == -EINVAL || ret == -EOVERFLOW, "wrapping map = %s", errname(ret));
	printf("# %s: a wrapping map returns %s\n", c->t->name, errname(ret));
	ret = unmap(c, UINT64_MAX - PAGE + 1, 2 * PAGE, &size);
	CHECK(c, (ret == -EINVAL || ret == -EOVERFLOW) && size == 0,
	      "wrapping unmap = %s, size %#" PRIx64, errname(ret), size);
	return true;
}

/* ---- §2a/§3: the cut ---- */

static bool t_can_cut(struct conf *c)
{
	CHECK(c, c->be->can_cut == c->t->expect_cut, "can_cut %d", c->be->can_cut);
	CHECK(c, !c->be->can_cut || c->be->ops->cut, "can_cut without ops->cut");
	return true;
}

static bool t_cut(struct conf *c)
{
	uint64_t b = c->base, size = UINT64_MAX;
	int ret;

	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map 2 MiB: %s", errname(ret));
	ret = c->be->ops->cut(c->be, b + SZ_2M / 2, PAGE, &size);
	CHECK(c, ret == 0 && size == PAGE, "cut = %s, size %#" PRIx64 "; expected 0, 0x1000",
	      errname(ret), size);
	/* Both sides stay mapped and are whole mappings now. */
	UNMAP_EXACT(c, b, SZ_2M / 2, SZ_2M / 2);
	UNMAP_EXACT(c, b, SZ_2M, SZ_2M / 2 - PAGE);
	return true;
}

/* One cut over the last page of mapping 1, all of 2, a gap page and the
 * first page of 3; then the same cut again, over nothing. */
static bool t_cut_across_mappings(struct conf *c)
{
	uint64_t b = c->base, m3 = b + 2 * SZ_2M + PAGE, size = UINT64_MAX;
	uint64_t from = b + SZ_2M - PAGE, len = m3 + PAGE - from;
	int ret;

	CHECK(c, !(ret = map(c, b, SZ_2M, 0)), "map 1: %s", errname(ret));
	CHECK(c, !(ret = map(c, b + SZ_2M, SZ_2M, SZ_2M)), "map 2: %s", errname(ret));
	CHECK(c, !(ret = map(c, m3, SZ_2M, 0)), "map 3: %s", errname(ret));
	ret = c->be->ops->cut(c->be, from, len, &size);
	CHECK(c, ret == 0 && size == SZ_2M + 2 * PAGE, "cut = %s, size %#" PRIx64
	      "; expected 0, 0x202000", errname(ret), size);
	ret = c->be->ops->cut(c->be, from, len, &size);
	CHECK(c, ret == 0 && size == 0, "cut of nothing = %s, size %#" PRIx64
	      "; expected 0, 0", errname(ret), size);
	UNMAP_EXACT(c, b, 4 * SZ_2M, 2 * SZ_2M - 2 * PAGE);
	return true;
}

/* ---- capabilities ---- */

static bool t_pgsizes(struct conf *c)
{
	uint64_t p = c->be->pgsizes;

	CHECK(c, p && (p & -p) == PAGE, "pgsizes %#" PRIx64, p);
	return true;
}

static bool t_ranges(struct conf *c)
{
	const struct cvm_be *be = c->be;

	CHECK(c, be->nranges && be->ranges, "no IOVA ranges");
	for (uint32_t i = 0; i < be->nranges; i++) {
		const struct cvm_iova_range *r = &be->ranges[i];

		CHECK(c, r->start <= r->last, "range %u [%#" PRIx64 ", %#" PRIx64 "] is empty",
		      i, r->start, r->last);
		CHECK(c, i == 0 || be->ranges[i - 1].last < r->start,
		      "range %u starts at %#" PRIx64 ", not above range %u", i, r->start, i - 1);
		CHECK(c, r->last < MSI_START || r->start > MSI_LAST,
		      "range %u [%#" PRIx64 ", %#" PRIx64 "] holds the MSI window", i,
		      r->start, r->last);
	}
	return true;
}

/* ---- the runner ---- */

enum when { ALWAYS, WITH_LIMIT, WITHOUT_LIMIT, WITH_CUT };

struct conf_test {
	const char *fact;
	/* Optional: what this target must answer, appended to the fact. */
	const char *(*expect)(const struct conf_target *t, char *buf, size_t len);
	enum when when;
	uint32_t entry_limit;
	bool (*run)(struct conf *c);
};

static const char *expect_partial(const struct conf_target *t, char *buf, size_t len)
{
	if (!t->partial_unmap_err)
		return "it cuts out exactly that page";
	snprintf(buf, len, "%s, size 0, the mapping stays whole", errname(t->partial_unmap_err));
	return buf;
}

static const char *expect_nothing(const struct conf_target *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s, size 0", errname(t->unmap_nothing_err));
	return buf;
}

static const char *expect_straddle(const struct conf_target *t, char *buf, size_t len)
{
	switch (t->partial_unmap_err) {
	case 0:
		return "it cuts";
	case -EINVAL:
		return "-EINVAL, nothing removed";
	default:
		snprintf(buf, len, "%s, the whole mappings below already removed",
			 errname(t->partial_unmap_err));
		return buf;
	}
}

static const struct conf_test tests[] = {
	{ "unmapping the middle 4 KiB of a 2 MiB mapping", expect_partial, ALWAYS, 0,
	  t_partial_middle },
	{ "unmapping the first 4 KiB of a 2 MiB mapping", expect_partial, ALWAYS, 0,
	  t_partial_first },
	{ "unmapping a whole 2 MiB mapping returns 0 and size 2 MiB", NULL, ALWAYS, 0,
	  t_whole_unmap },
	{ "unmapping a range with no mapping", expect_nothing, ALWAYS, 0, t_unmap_nothing },
	{ "one unmap with both ends in gaps removes 16 whole 4 KiB mappings, size 64 KiB",
	  NULL, ALWAYS, 0, t_unmap_many_whole },
	{ "an unmap over whole mappings that ends inside another one", expect_straddle,
	  ALWAYS, 0, t_unmap_straddle_after_whole },
	{ "unmap_all removes every mapping, in every range", NULL, ALWAYS, 0, t_unmap_all },
	{ "a map overlapping a mapping in any way returns -EEXIST", NULL, ALWAYS, 0, t_overlap },
	{ "adjacent mappings are not merged (one entry each)", NULL, ALWAYS, 0,
	  t_adjacent_not_merged },
	{ "with an entry limit of 100: 100 maps succeed, the 101st returns -ENOSPC, "
	  "entries_avail reads 0, an unmap frees one", NULL, WITH_LIMIT, 100, t_entry_limit },
	{ "without an entry limit: entries_avail reads at least 2^32-1 and 200 maps "
	  "do not lower it", NULL, WITHOUT_LIMIT, 0, t_no_entry_limit },
	{ "maps in or across the MSI window or above the top range return -EINVAL",
	  NULL, ALWAYS, 0, t_outside_ranges },
	{ "maps with an unaligned iova, length or vaddr, or length 0, return -EINVAL",
	  NULL, ALWAYS, 0, t_unaligned },
	{ "a map or unmap wrapping past 2^64 is refused", NULL, ALWAYS, 0, t_wrap },
	{ "can_cut says whether the target cuts", NULL, ALWAYS, 0, t_can_cut },
	{ "a cut of the middle 4 KiB of a 2 MiB mapping removes that page only, "
	  "leaving two whole mappings", NULL, WITH_CUT, 0, t_cut },
	{ "a cut across mapping ends and gaps removes exactly the mapped pages; "
	  "a cut of nothing returns 0, size 0", NULL, WITH_CUT, 0, t_cut_across_mappings },
	{ "the lowest IOMMU page size is 4 KiB", NULL, ALWAYS, 0, t_pgsizes },
	{ "IOVA ranges are non-empty, sorted, disjoint and exclude the MSI window",
	  NULL, ALWAYS, 0, t_ranges },
};

static const char *skip_reason(const struct conf_target *t, enum when w)
{
	switch (w) {
	case WITH_LIMIT:
		return t->has_entry_limit ? NULL : "no entry limit";
	case WITHOUT_LIMIT:
		return t->has_entry_limit ? "has an entry limit" : NULL;
	case WITH_CUT:
		return t->expect_cut ? NULL : "cannot cut";
	default:
		return NULL;
	}
}

static void result(const struct conf_target *t, int *test_no, bool ok,
		   const struct conf_test *ct, const char *skip)
{
	char buf[96];

	printf("%s %d - %s: %s", ok ? "ok" : "not ok", ++*test_no, t->name, ct->fact);
	if (ct->expect)
		printf(": %s", ct->expect(t, buf, sizeof(buf)));
	if (skip)
		printf(" # SKIP %s", skip);
	putchar('\n');
	/* Line by line: a crash in the guest must not lose earlier results. */
	fflush(stdout);
}

/* Picks the window the tests map in and checks it is free of surprises. */
static bool setup(struct conf *c)
{
	if (cvm_backend_iova_valid(c->be, BASE_IOVA - PAGE, WINDOW + PAGE)) {
		c->base = BASE_IOVA;
		return true;
	}
	if (!cvm_backend_scratch_iova(c->be, WINDOW + 2 * SZ_2M, &c->base)) {
		c->base += SZ_2M;
		return true;
	}
	note(c, __LINE__, "no valid %" PRIu64 " MiB IOVA window", (uint64_t)WINDOW >> 20);
	return false;
}

static bool run_one(struct conf *c, const struct conf_test *ct)
{
	const struct conf_target *t = c->t;
	uint64_t left;
	bool ok;
	int ret;

	c->why[0] = 0;
	ret = t->open(t->ctx, ct->entry_limit, &c->be);
	if (ret) {
		note(c, __LINE__, "open (entry limit %u): %s", ct->entry_limit, errname(ret));
		return false;
	}
	ok = setup(c) && ct->run(c);
	if (t->count && (left = t->count(c->be)) != 0 && ok) {
		note(c, __LINE__, "the test left %" PRIu64 " mappings behind", left);
		ok = false;
	}
	/* Leave nothing mapped even after a failure. */
	c->be->ops->unmap_all(c->be);
	cvm_backend_destroy(c->be);
	c->be = NULL;
	return ok;
}

static void describe(const struct conf_target *t)
{
	struct cvm_be *be;
	int ret = t->open(t->ctx, 0, &be);

	if (ret) {
		printf("# %s: open failed: %s\n", t->name, errname(ret));
		return;
	}
	printf("# %s (%s kernel): ops %s, pgsizes %#" PRIx64 ", entries_avail %" PRIu64
	       ", can_cut %d, %u IOVA ranges\n", t->name, t->real ? "real" : "model",
	       be->ops->name, be->pgsizes, be->entries_avail, be->can_cut, be->nranges);
	for (uint32_t i = 0; i < be->nranges; i++)
		printf("#   [%#" PRIx64 ", %#" PRIx64 "]\n", be->ranges[i].start,
		       be->ranges[i].last);
	cvm_backend_destroy(be);
}

int conformance_run(const struct conf_target *t, int *test_no)
{
	struct conf c = { .t = t };
	int failures = 0;

	c.mem = mmap(NULL, MEM_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c.mem == MAP_FAILED) {
		static const struct conf_test no_mem = { .fact = "memory for the tests" };

		result(t, test_no, false, &no_mem, "mmap failed");
		return 1;
	}
	/* Touch it: the real kernel pins it, the model must not care. */
	memset(c.mem, 0x5a, MEM_LEN);
	describe(t);
	for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
		const char *skip = skip_reason(t, tests[i].when);
		bool ok = true;

		if (!skip)
			ok = run_one(&c, &tests[i]);
		result(t, test_no, ok, &tests[i], skip);
		if (!ok) {
			printf("# %s: %s\n", t->name, c.why);
			failures++;
		}
	}
	munmap(c.mem, MEM_LEN);
	return failures;
}
