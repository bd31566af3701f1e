// SPDX-License-Identifier: MIT
/*
 * DMA contexts: keep one IOMMU address space (a backend) mapped to exactly
 * the shared pages of the regions added to it, with the fewest mappings and
 * kernel calls the backend's rules allow.
 *
 * The mapping table mirrors what the kernel holds, entry for entry.  Policy
 * (libcvmdma(7), "Mapping policy"): a mapping never crosses a split_granule
 * (G) boundary; a run that becomes shared is mapped as one mapping per
 * G-block it touches; a run that becomes private is removed with the
 * backend's hitless cut where it has one, else whole mappings are unmapped
 * and the still-shared parts of the mappings it bisects are mapped again
 * (counted as disruptive).  Runs of one call that bisect the same mapping,
 * or are separated only by unmapped gaps, share one unmap, so each
 * still-shared page is remapped once.
 *
 * Every backend mutation made for one listener call is recorded in an undo
 * log; if a later step fails, the log is replayed backwards so the IOMMU maps
 * the same pages as before the call (the region then rolls back everyone
 * else).  Where the kernel refuses a step of that replay too, what differs
 * is noted and retried at the start of every later call (repair()).
 * Locking: one mutex per context, always taken after a region's lock
 * (listener callbacks arrive with the region lock held); no user callback
 * runs under it.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend.h"
#include "caps.h"
#include "dma.h"
#include "internal.h"
#include "maptable.h"
#include "region.h"

#define SZ_2M (2ull << 20)
#define G_UNLIMITED UINT64_MAX

/*
 * A region in a context.  Linked into dma->regions while it is there; gone
 * once unlinked.  A thread that finds it under dma->lock and must let go of
 * that lock to take the region's (the lock order is region, then context)
 * pins it first: a pin keeps the dma_region and the region's memory, so a
 * concurrent removal, or the region's destruction, can unlink it meanwhile
 * but not free it.  The last pin of a gone dma_region frees it.
 */
struct dma_region {
	struct cvm_dma *dma;
	struct cvm_region *region;
	struct cvm_listener *listener;  /* once attached; under dma->lock */
	struct region_geom g;
	uint64_t granule;               /* effective for this region */
	struct dma_region *next;
	unsigned pins;                  /* under dma->lock */
	bool gone;                      /* unlinked; under dma->lock */
	/* The undo log of this region's last listener call, kept until the
	 * region settles the conversion (dma_settle()): another context may
	 * still fail it.  held: entries kept free for that undo. */
	struct undo_rec *pend;
	size_t npend, cap_pend;
	uint64_t held;
	/* Repairs the pending call took away (its runs went private): put
	 * back if the conversion is undone. */
	struct fix *untrim;
	size_t nuntrim, cap_untrim;
	/* Repairs that could not even be noted (out of memory): only the
	 * region leaving the context clears them. */
	uint64_t lost;
	uint64_t attach_need;           /* add_region: mappings its runs take */
	/* check_map()'s plan for the call that follows it in the same
	 * conversion: runs that join, entries needed. */
	size_t check_njoin;
	uint64_t check_need;
};

enum undo_kind { UNDO_MAPPED, UNDO_UNMAPPED, UNDO_CUT };

struct undo_rec {
	enum undo_kind kind;
	bool remap;                     /* UNDO_MAPPED: pages mapped before the call too */
	bool stray;                     /* UNDO_UNMAPPED: a mapping waiting to be unmapped */
	uint64_t iova, len, hva;
	const struct dma_region *dr;    /* UNDO_CUT: to split the remap by granule */
};

/*
 * What a rollback that failed left different from the shared set, to be
 * retried on every later call of the context until the kernel takes it.
 * FIX_UNMAP: whole mappings of pages that stayed private (the kernel
 * refused to unmap them), or with dr NULL the IOVA window of a region that
 * left the context while the kernel refused to unmap it; FIX_MAP: shared
 * pages left unmapped, one mapping's worth inside one G-block; FIX_REMAP:
 * a piece of a mapping the table holds that the kernel may have removed
 * in a call that failed, and then refused to map again (put-backs).
 */
enum fix_kind { FIX_UNMAP, FIX_MAP, FIX_REMAP };

struct fix {
	enum fix_kind kind;
	int err;                        /* what the kernel said last */
	uint64_t iova, len, hva;
	const struct dma_region *dr;
};

struct cvm_dma {
	pthread_mutex_t lock;
	struct cvm_be *be;
	uint32_t flags;
	uint64_t granule;               /* UINT64_MAX: unlimited */
	bool auto_granule;              /* split_granule 0: at least each region's page */
	bool use_cut;
	uint64_t avail;                 /* our estimate of the backend's free entries */
	uint64_t held;                  /* of those, kept for pending undos (sum over regions) */
	struct maptable *mt;            /* data = hva of the mapping's first byte */
	struct dma_region *regions;
	struct undo_rec *undo;
	size_t nundo, cap_undo;
	struct fix *fix;
	size_t nfix, cap_fix;
	/* Repairs of regions gone from the context that could not even be
	 * noted (out of memory): nothing clears them but closing it. */
	uint64_t lost;
	/* Where the kernel may have split a mapping the table keeps whole
	 * (a cut it failed after making its splits: no call shows them),
	 * ascending: a put-back maps each piece between them alone. */
	uint64_t *maybe;
	size_t nmaybe, cap_maybe;
	struct cvm_dma_stats st;
};

static uint64_t hva_of(const struct dma_region *dr, uint64_t iova)
{
	return (uint64_t)(uintptr_t)dr->g.hva + (iova - dr->g.iova);
}

static uint64_t iova_of(const struct dma_region *dr, uint64_t gpa)
{
	return dr->g.iova + (gpa - dr->g.gpa);
}

/* End of the G-block holding iova, capped at end. */
static uint64_t block_end(uint64_t iova, uint64_t g, uint64_t end)
{
	uint64_t next;

	if (g == G_UNLIMITED)
		return end;
	next = (iova | (g - 1)) + 1;
	return next && next < end ? next : end;
}

/* G-blocks that [s, e) meets.  G is a power of two (check_dma_config()),
 * so shifts do what two divisions did. */
static uint64_t pieces(uint64_t s, uint64_t e, uint64_t g)
{
	unsigned sh;

	if (g == G_UNLIMITED)
		return 1;
	sh = (unsigned)__builtin_ctzll(g);
	return ((e - 1) >> sh) - (s >> sh) + 1;
}

/* Mappings that runs (GPAs of dr) take when each is mapped on its own. */
static uint64_t runs_pieces(const struct dma_region *dr, const struct cvm_range *runs, size_t n)
{
	uint64_t need = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t s = iova_of(dr, runs[i].gpa);

		need += pieces(s, s + runs[i].length, dr->granule);
	}
	return need;
}

/* ---- undo log ---- */

static int undo_reserve(struct cvm_dma *d, size_t n)
{
	void *p;

	if (d->nundo + n <= d->cap_undo)
		return 0;
	p = cvm_grow_array(d->undo, &d->cap_undo, d->nundo + n, sizeof(*d->undo), 64);
	if (!p)
		return -ENOMEM;
	d->undo = p;
	return 0;
}

static const struct fix *stray_over(const struct cvm_dma *d, uint64_t lo, uint64_t hi);

/* An unmapped mapping that a repair waits to unmap (a failed rollback left
 * it over private pages) is noted as one: see rollback(). */
static void undo_push(struct cvm_dma *d, enum undo_kind kind, uint64_t iova, uint64_t len,
		      uint64_t hva, const struct dma_region *dr)
{
	bool stray = kind == UNDO_UNMAPPED && d->nfix && stray_over(d, iova, iova + len);

	d->undo[d->nundo++] = (struct undo_rec){ kind, false, stray, iova, len, hva, dr };
}

/* ---- entry accounting ---- */

static void refresh_avail(struct cvm_dma *d)
{
	if (d->be->ops->refresh && d->be->ops->refresh(d->be) == 0)
		d->avail = d->be->entries_avail;
}

static void account(struct cvm_dma *d, int64_t entries, int64_t bytes)
{
	d->st.mappings += (uint64_t)entries;
	d->st.mapped_bytes += (uint64_t)bytes;
	if (d->st.mappings > d->st.mappings_peak)
		d->st.mappings_peak = d->st.mappings;
	if (d->avail == UINT64_MAX)
		return;
	if (entries <= 0 || d->avail >= (uint64_t)entries) {
		d->avail -= (uint64_t)entries;
		return;
	}
	/* The kernel took more mappings than we thought it had room for: it
	 * had freed some in a call that failed part way.  Ask it; 0 (which
	 * is what UINT64_MAX, no limit at all, must not become) if it
	 * cannot say. */
	d->avail = 0;
	refresh_avail(d);
}

/* The kernel unmapped other than what the table expected: the table had
 * kept mappings it had removed in a call that failed part way, so the
 * count of free entries is off; ask the kernel again. */
static void unmapped_other(struct cvm_dma *d, const char *what, uint64_t iova, uint64_t done,
			   uint64_t expected)
{
	cvm_warn("dma: kernel %s %llu bytes at 0x%llx, the table expected %llu", what,
		 (unsigned long long)done, (unsigned long long)iova,
		 (unsigned long long)expected);
	refresh_avail(d);
}

/* Free entries a call may take: those not kept for a pending undo. */
static uint64_t room(const struct cvm_dma *d)
{
	return d->avail > d->held ? d->avail - d->held : 0;
}

/* The -ENOSPC line: need more mappings than the limit leaves (0: the kernel
 * said so first, something else in the container having taken entries).
 * Only the remedies that can help this context are named: a larger granule
 * where one is set, merging where the context does not already merge and
 * is not one mapping per page (which merging cannot change). */
static void log_limit(struct cvm_dma *d, uint64_t need)
{
	bool per_page = d->flags & CVM_DMA_PER_PAGE, compact = d->flags & CVM_DMA_COMPACT;
	char what[64];

	if (need)
		snprintf(what, sizeof(what), "%llu more mapping%s needed",
			 (unsigned long long)need, need == 1 ? "" : "s");
	else
		snprintf(what, sizeof(what), "the kernel refused a map");
	cvm_err("dma: %s backend would exceed its mapping limit: %s, %llu left%s.  Remedies: "
		"use the iommufd backend (no mapping limit), raise %s%s%s",
		d->be->ops->name, what, (unsigned long long)room(d),
		need && compact && !per_page ?
		", and merging neighbours would not free enough" : "",
		d->be->kind == CVM_BACKEND_MODEL ? "model_entry_limit (the model's stand-in for "
		"vfio_iommu_type1's dma_entry_limit)" :
		"/sys/module/vfio_iommu_type1/parameters/dma_entry_limit (65535 by default)",
		per_page ? ", or drop CVM_DMA_PER_PAGE (one mapping per page)" :
		d->granule != G_UNLIMITED ? ", or a larger split_granule" : "",
		per_page || compact ? "" : ", or CVM_DMA_COMPACT");
}

/* ---- backend primitives: kernel call + table + undo log ---- */

static int be_map(struct cvm_dma *d, uint64_t iova, uint64_t len, uint64_t hva, bool log)
{
	int err;

	if (log && (err = undo_reserve(d, 1)))
		return err;
	/* The table first: if it cannot take the entry, the kernel is never
	 * asked; if the kernel then says no, the entry goes again (a removal
	 * cannot fail).  Both happen under d->lock, so nobody sees the gap. */
	err = maptable_insert(d->mt, iova, len, hva);
	if (err) {
		if (err == -EEXIST)
			cvm_err("dma: mapping table out of step with the kernel at iova 0x%llx",
				(unsigned long long)iova);
		return err;
	}
	d->st.map_calls++;
	err = d->be->ops->map(d->be, iova, len, (void *)(uintptr_t)hva);
	if (err) {
		maptable_remove(d->mt, iova, NULL);
		if (err == -ENOMEM) {
			cvm_pin_diagnose(len, err);
		} else if (err == -ENOSPC) {
			refresh_avail(d);
			/* Said once, by the call's own map: an undo, a repair or
			 * a merge that fails says so its own way. */
			if (log)
				log_limit(d, 0);
		} else if (err == -EFAULT && log) {
			cvm_err("dma: map of [0x%llx, +0x%llx) from address 0x%llx: %s (the "
				"memory is not mapped, or not writable)", (unsigned long long)iova,
				(unsigned long long)len, (unsigned long long)hva, strerror(-err));
		}
		return err;
	}
	account(d, 1, (int64_t)len);
	if (log)
		undo_push(d, UNDO_MAPPED, iova, len, hva, NULL);
	return 0;
}

struct collect {
	struct cvm_dma *d;
	size_t n;
	uint64_t bytes;
	int err;
};

/* Record an entry about to go (the undo log grows as needed). */
static int collect_entry(void *opaque, const struct mt_entry *e)
{
	struct collect *c = opaque;

	if (undo_reserve(c->d, 1)) {
		c->err = -ENOMEM;
		return 1;
	}
	undo_push(c->d, UNDO_UNMAPPED, e->iova, e->len, e->data, NULL);
	c->n++;
	c->bytes += e->len;
	return 0;
}

/* Count an entry about to go, when no undo record is kept. */
static int count_gone(void *opaque, const struct mt_entry *e)
{
	struct collect *c = opaque;

	c->n++;
	c->bytes += e->len;
	return 0;
}

/* Unmap the mapping [iova, iova + len), known to be one whole entry of the
 * table (the common private conversion): no walk to collect it. */
static int be_unmap_one(struct cvm_dma *d, uint64_t iova, uint64_t len, uint64_t hva, bool log)
{
	uint64_t done = 0;
	int err;

	if (log && (err = undo_reserve(d, 1)))
		return err;
	d->st.unmap_calls++;
	err = d->be->ops->unmap(d->be, iova, len, &done);
	/* iommufd holds none of it: it held it as one area (no point where
	 * it may have split it lies inside), and no area can cross its ends
	 * while it is there.  unmap_each() would only ask the same again. */
	if (err == -ENOENT)
		err = 0;
	if (err)
		return err;
	maptable_remove(d->mt, iova, NULL);
	account(d, -1, -(int64_t)len);
	if (done != len)
		unmapped_other(d, "unmapped", iova, done, len);
	if (log)
		undo_push(d, UNDO_UNMAPPED, iova, len, hva, NULL);
	return 0;
}

/* ---- splits the kernel may have made unseen ---- */

/* The first point where the kernel may have split a mapping inside
 * (s, e), or e. */
static uint64_t next_maybe(const struct cvm_dma *d, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < d->nmaybe; i++)
		if (d->maybe[i] > s)
			return d->maybe[i] < e ? d->maybe[i] : e;
	return e;
}

static bool maybe_inside(const struct cvm_dma *d, uint64_t s, uint64_t e)
{
	return next_maybe(d, s, e) != e;
}

/* Mappings in [s, e) just went, or were cut: where the kernel may have held
 * one as several, it freed as many entries as it held, which the table
 * cannot tell, so the count of free ones is asked again. */
static void recount_if_split(struct cvm_dma *d, uint64_t s, uint64_t e)
{
	if (d->nmaybe && d->avail != UINT64_MAX && maybe_inside(d, s, e))
		refresh_avail(d);
}

/* Room for n more points, asked before a cut so that noting its points
 * after the kernel failed it cannot fail. */
static int maybe_reserve(struct cvm_dma *d, size_t n)
{
	void *v;

	if (d->nmaybe + n <= d->cap_maybe)
		return 0;
	v = cvm_grow_array(d->maybe, &d->cap_maybe, d->nmaybe + n, sizeof(*d->maybe), 8);
	if (!v)
		return -ENOMEM;
	d->maybe = v;
	return 0;
}

/* The kernel may have split the mapping across p at p, and the table keeps
 * it whole.  Points no mapping crosses any more go first (a later cut made
 * them ends, or the mapping went): one left behind only splits a put-back
 * of a mapping made there later into pieces, which is never wrong.  Cannot
 * fail: be_cut() reserved room for the two points a failed cut notes. */
static void maybe_add(struct cvm_dma *d, uint64_t p)
{
	size_t k = 0, at;

	for (size_t i = 0; i < d->nmaybe; i++) {
		struct mt_entry m;
		uint64_t x = d->maybe[i];

		if (x != p && !maptable_lookup_le(d->mt, x, &m) && m.iova < x &&
		    x - m.iova < m.len)
			d->maybe[k++] = x;
	}
	for (at = 0; at < k && d->maybe[at] < p; at++)
		;
	memmove(&d->maybe[at + 1], &d->maybe[at], (k - at) * sizeof(*d->maybe));
	d->maybe[at] = p;
	d->nmaybe = k + 1;
}

/* What a put-back found, piece by piece. */
struct put_back {
	uint64_t back;          /* pieces mapped again: they were gone */
	uint64_t unknown;       /* pieces the kernel refused to map other than with -EEXIST */
	int err;                /* the kernel's last such answer */
	bool note;              /* note those as repairs (FIX_REMAP) */
};

static void note_remap(struct cvm_dma *d, uint64_t x, uint64_t y, uint64_t hva, int err);

/* Map [x, y) of a put-back (hva: of x): counted in pb->back if it came
 * back (it was gone), in pb->unknown if the kernel refused other than with
 * -EEXIST (still there), which proves neither: then, with pb->note, a
 * repair tries again.  Returns the kernel's answer. */
static int map_piece(struct cvm_dma *d, uint64_t x, uint64_t y, uint64_t hva,
		     struct put_back *pb)
{
	int merr;

	d->st.map_calls++;
	merr = d->be->ops->map(d->be, x, y - x, (void *)(uintptr_t)hva);
	if (!merr) {
		pb->back++;
	} else if (merr != -EEXIST) {
		pb->unknown++;
		pb->err = merr;
		if (pb->note)
			note_remap(d, x, y, hva, merr);
	}
	return merr;
}

/*
 * Map [s, e) (hva: of s) back after a call that failed part way, where the
 * kernel may have removed it.  Whole first: it comes back as the one
 * mapping the table holds, or -EEXIST says some of it is there.  Where the
 * kernel may have split it unseen, that may be only some pieces (it
 * removes whole areas): then each piece between those points alone.
 */
static void map_back(struct cvm_dma *d, uint64_t s, uint64_t e, uint64_t hva,
		     struct put_back *pb)
{
	if (map_piece(d, s, e, hva, pb) != -EEXIST || !maybe_inside(d, s, e))
		return;
	for (uint64_t x = s, y; x < e; x = y) {
		y = next_maybe(d, x, e);
		map_piece(d, x, y, hva + (x - s), pb);
	}
}

struct first_inside {
	uint64_t s, e;
	struct mt_entry found;
	bool any;
};

static int stop_at_inside(void *opaque, const struct mt_entry *e)
{
	struct first_inside *f = opaque;

	if (e->iova < f->s || e->iova + e->len > f->e)
		return 0;       /* a mapping a cut only trims: never removed */
	f->found = *e;
	f->any = true;
	return 1;
}

static void log_put_back(uint64_t s, uint64_t e, int err, const struct put_back *pb)
{
	uint64_t back = pb->back, unknown = pb->unknown;

	if (back)
		cvm_warn("dma: the kernel removed %llu mapping%s in [0x%llx, 0x%llx) before it "
			 "failed (%d): mapped back", (unsigned long long)back, back == 1 ? "" : "s",
			 (unsigned long long)s, (unsigned long long)e, err);
	if (unknown)
		cvm_err("dma: after a failed unmap (%d), %llu mapping%s in [0x%llx, 0x%llx) "
			"could not be checked: the kernel refused to map %s again (%d), and may "
			"or may not still hold %s: noted to map", err, (unsigned long long)unknown,
			unknown == 1 ? "" : "s", (unsigned long long)s, (unsigned long long)e,
			unknown == 1 ? "it" : "them", pb->err, unknown == 1 ? "it" : "them");
}

/*
 * An unmap or a cut of [s, e) failed where the kernel may have removed some
 * whole mappings first (be->unmap_partial): map each whole mapping of the
 * table there again (map_back()).  -EEXIST says the kernel still has it; a
 * mapping that comes back was gone, and is back as the failed call must
 * leave it.  Any other answer proves neither: the table keeps the mapping,
 * as before, the log says so, and a repair maps it again (FIX_REMAP).
 * What comes back may have been gone before the call (a put-back refused
 * earlier), taking an entry the context counted free since it last asked
 * the kernel: so it asks again.
 */
static void put_back_inside(struct cvm_dma *d, uint64_t s, uint64_t e, struct put_back *pb)
{
	for (uint64_t x = s; x < e;) {
		struct first_inside f = { x, e, { 0 }, false };

		maptable_for_each(d->mt, x, e - x, stop_at_inside, &f);
		if (!f.any)
			break;
		x = f.found.iova + f.found.len;
		/* A mapping left on private pages, to unmap: never back. */
		if (d->nfix && stray_over(d, f.found.iova, x))
			continue;
		map_back(d, f.found.iova, x, f.found.data, pb);
	}
}

static void put_back_after_failure(struct cvm_dma *d, uint64_t s, uint64_t e, int err)
{
	struct put_back pb = { .note = true };

	put_back_inside(d, s, e, &pb);
	log_put_back(s, e, err, &pb);
	if (pb.back)
		refresh_avail(d);
}

/*
 * iommufd said -ENOENT to an unmap of [s, e), whole mappings of the table:
 * it holds none of them, or the lowest mapping it holds in the range is
 * not all inside it (another user's, mapped where ours had gone), after
 * removing those below.  Ours can be gone in an earlier call that failed
 * part way (a put-back it refused, a mapping left on private pages: no
 * put-back maps one back), or by someone else's unmap.  So each mapping of
 * the table is unmapped alone, and as the kernel may hold it: split at
 * some of the points where a failed cut may have split it, or whole (it
 * may not have split at all).  From p, [p, q) is tried for each later
 * point q up to the mapping's end, until the kernel takes one (an area of
 * it ended at q; any gone before it were gone); -ENOENT up to the end
 * means it holds nothing of ours that starts at p, and the next start is
 * the next point.  So -ENOENT is never read as gone where the kernel
 * holds an area across the piece's end.  As on type1, which answers an
 * unmap of nothing with 0 bytes, the call goes on (unmapped_other() logs
 * it) instead of failing every time.  *done: the bytes it removed.
 */
static int unmap_each(struct cvm_dma *d, uint64_t s, uint64_t e, uint64_t *done)
{
	struct mt_entry m;

	for (uint64_t x = s; x < e && !maptable_lookup(d->mt, x, &m) && m.iova < e;
	     x = m.iova + m.len) {
		uint64_t end = m.iova + m.len;

		for (uint64_t p = m.iova; p != end;) {
			uint64_t q = p, got;
			int err;

			do {
				q = next_maybe(d, q, end);
				got = 0;
				d->st.unmap_calls++;
				err = d->be->ops->unmap(d->be, p, q - p, &got);
			} while (err == -ENOENT && q != end);
			if (err && err != -ENOENT)
				return err;
			*done += got;
			p = err ? next_maybe(d, p, end) : q;
		}
	}
	return 0;
}

/* Unmap [s, e), which holds only whole mappings (at least one).  Never
 * anything else: an iommufd unmap that ends inside a mapping fails with
 * -ENOENT after it has already removed the whole mappings below that point
 * (measured on 6.12), so a partial span would not fail atomically.  log:
 * note the mappings in the undo log.  keep: the pages stay shared if the
 * kernel refuses, so what it removed before refusing is mapped back. */
static int be_unmap_span(struct cvm_dma *d, uint64_t s, uint64_t e, bool log, bool keep)
{
	struct collect c = { d, 0, 0, 0 };
	size_t mark = d->nundo;
	uint64_t done = 0;
	int err;

	/* One walk: the entries go into the undo log as they are found (or
	 * are only counted, when nothing is to be undone). */
	maptable_for_each(d->mt, s, e - s, log ? collect_entry : count_gone, &c);
	if (c.err || !c.n) {
		d->nundo = mark;
		return c.err;
	}
	d->st.unmap_calls++;
	err = d->be->ops->unmap(d->be, s, e - s, &done);
	if (err == -ENOENT)
		err = unmap_each(d, s, e, &done);
	if (err) {
		d->nundo = mark;
		/* Only a call that is undone, or a region that stays in the
		 * context, keeps these pages shared: a rollback, a repair or a
		 * destroyed region unmaps pages that are private or going,
		 * which must not be mapped again. */
		if (keep && d->be->unmap_partial && (c.n > 1 || maybe_inside(d, s, e)))
			put_back_after_failure(d, s, e, err);
		return err;
	}
	maptable_remove_range(d->mt, s, e - s, NULL);
	account(d, -(int64_t)c.n, -(int64_t)c.bytes);
	if (done != c.bytes)
		unmapped_other(d, "unmapped", s, done, c.bytes);
	else
		recount_if_split(d, s, e);
	return 0;
}

/*
 * A cut of [s, e) failed where the kernel may have removed some mappings
 * first (be->unmap_partial).  iommufd_vfio_unmap_dma() splits the mappings
 * across s and e before it unmaps anything, and iopt_unmap_iova_range()
 * then takes the areas inside in ascending order: the first to go is the
 * inside piece [s, l's end) of the mapping l across s, if there is one,
 * which put_back_inside() does not look at (it is no mapping of the
 * table).  Map it back too, and the inside piece [r's start, e) of the
 * mapping r across e, or [s, e) if l holds the whole cut, where the kernel
 * may have split it unseen before (else it is the last area inside, which
 * a call that failed never takes).  l, r: the mappings across s and e
 * (the same one if it holds the whole cut), or NULL.  Then, if anything
 * came back, the context asks the kernel for its count of free entries
 * again, as put_back_after_failure() does.
 *
 * Whether the kernel split l or r no call tells: it may have failed at
 * the first area, or split at e and then refused to split at s, and what
 * came back may have been gone before the call without anything saying so
 * (a mapping the VMM removed), so even a put-back proves no split.  The
 * table keeps them whole and notes that the kernel may have split them at
 * s and e (maybe_add()): a later unmap goes piece by piece where the
 * kernel's answer needs it (unmap_each()), and a later put-back maps
 * their pieces alone.  Splitting the table where the kernel had not split
 * would leave a table end inside one of the kernel's areas, whose
 * IOMMU_IOAS_UNMAP is then -ENOENT with nothing removed (helper-108).
 */
static void put_back_after_cut(struct cvm_dma *d, uint64_t s, uint64_t e, int err,
			       const struct mt_entry *l, const struct mt_entry *r)
{
	bool same = l && r && l->iova == r->iova;
	struct put_back pb = { .note = true };

	if (l && (!same || maybe_inside(d, s, e)))
		map_back(d, s, same ? e : l->iova + l->len, l->data + (s - l->iova), &pb);
	if (!same)
		put_back_inside(d, s, e, &pb);
	if (r && !same && maybe_inside(d, r->iova, e))
		map_back(d, r->iova, e, r->data, &pb);
	log_put_back(s, e, err, &pb);
	if (l)
		maybe_add(d, s);
	if (r)
		maybe_add(d, e);
	if (pb.back)
		refresh_avail(d);
}

/* Hitless cut of [s, e): whole mappings inside go, the (at most two)
 * mappings it bisects shrink without ever being unmapped. */
static int be_cut(struct cvm_dma *d, const struct dma_region *dr, uint64_t s, uint64_t e,
		  bool log)
{
	struct mt_entry l = { 0 }, r = { 0 };
	bool has_l, has_r, same;
	struct collect c = { d, 0, 0, 0 };
	uint64_t done = 0, bytes, before;
	int err;

	has_l = !maptable_lookup_le(d->mt, s, &l) && l.iova < s && l.iova + l.len > s;
	has_r = !maptable_lookup_le(d->mt, e - 1, &r) && r.iova < e && r.iova + r.len > e;
	same = has_l && has_r && l.iova == r.iova;     /* [s, e) strictly inside one mapping */
	if ((log && (err = undo_reserve(d, 1))) || (err = maptable_reserve(d->mt, 2)) ||
	    (d->be->unmap_partial && (err = maybe_reserve(d, 2))))
		return err;
	d->st.cut_calls++;
	err = d->be->ops->cut(d->be, s, e - s, &done);
	if (err) {
		if (log && d->be->unmap_partial)
			put_back_after_cut(d, s, e, err, has_l ? &l : NULL, has_r ? &r : NULL);
		return err;
	}
	/* Whole mappings inside go; bisected ones are re-entered as their parts. */
	if (has_l)
		maptable_remove(d->mt, l.iova, NULL);
	if (has_r && !same)
		maptable_remove(d->mt, r.iova, NULL);
	maptable_for_each(d->mt, s, e - s, count_gone, &c);
	maptable_remove_range(d->mt, s, e - s, NULL);
	before = has_l;
	if (has_l)
		maptable_insert(d->mt, l.iova, s - l.iova, l.data);
	if (has_r)
		maptable_insert(d->mt, e, r.iova + r.len - e, r.data + (e - r.iova));
	if (same) {
		bytes = e - s;
	} else {
		bytes = c.bytes + (has_l ? l.iova + l.len - s : 0) + (has_r ? e - r.iova : 0);
		before += has_r;
	}
	account(d, (int64_t)(has_l + has_r) - (int64_t)(before + c.n), -(int64_t)bytes);
	if (done != bytes)
		unmapped_other(d, "cut", s, done, bytes);
	else
		recount_if_split(d, has_l ? l.iova : s, has_r ? r.iova + r.len : e);
	if (log)
		undo_push(d, UNDO_CUT, s, e - s, hva_of(dr, s), dr);
	return 0;
}

/* Map [s, e) of dr, one mapping per G-block. */
static int map_range(struct cvm_dma *d, const struct dma_region *dr, uint64_t s, uint64_t e,
		     bool log)
{
	for (uint64_t p = s; p < e;) {
		uint64_t pe = block_end(p, dr->granule, e);
		int err = be_map(d, p, pe - p, hva_of(dr, p), log);

		if (err)
			return err;
		p = pe;
	}
	return 0;
}

static struct dma_region *region_at(const struct cvm_dma *d, uint64_t iova)
{
	for (struct dma_region *dr = d->regions; dr; dr = dr->next)
		if (iova >= dr->g.iova && iova - dr->g.iova < dr->g.length)
			return dr;
	return NULL;
}

/* ---- repairs: what a failed rollback left ---- */

static int fix_reserve(struct fix **v, size_t *cap, size_t want)
{
	void *p;

	if (want <= *cap)
		return 0;
	p = cvm_grow_array(*v, cap, want, sizeof(**v), 16);
	if (!p)
		return -ENOMEM;
	*v = p;
	return 0;
}

static void fix_add(struct cvm_dma *d, struct fix f)
{
	struct dma_region *dr;

	if (!fix_reserve(&d->fix, &d->cap_fix, d->nfix + 1)) {
		d->fix[d->nfix++] = f;
		return;
	}
	/* Nothing to retry: say so, and keep pending_repairs above 0. */
	dr = f.dr ? region_at(d, f.iova) : NULL;
	if (dr)
		dr->lost++;
	else
		d->lost++;
	cvm_err("dma: no memory to note that iova 0x%llx+0x%llx needs %s: remove the region "
		"from the context and add it again to map it right",
		(unsigned long long)f.iova, (unsigned long long)f.len,
		f.kind == FIX_UNMAP ? "unmapping" : "mapping");
}

static struct fix fix_piece(const struct fix *f, uint64_t a, uint64_t b)
{
	return (struct fix){ f->kind, f->err, a, b - a, f->hva + (a - f->iova), f->dr };
}

static bool overlaps_table(const struct cvm_dma *d, uint64_t lo, uint64_t hi)
{
	struct mt_entry e;

	return !maptable_lookup(d->mt, lo, &e) && e.iova < hi;
}

/* A repair of dr that maps all of [lo, hi) (FIX_MAP). */
static bool map_fix_covers(const struct cvm_dma *d, const struct dma_region *dr, uint64_t lo,
			   uint64_t hi)
{
	for (size_t i = 0; i < d->nfix; i++)
		if (d->fix[i].kind == FIX_MAP && d->fix[i].dr == dr && d->fix[i].iova <= lo &&
		    hi - d->fix[i].iova <= d->fix[i].len)
			return true;
	return false;
}

/* Shared pages [lo, hi) of dr (hva: of lo) that could not be mapped
 * again: note what the table lacks there, one repair per G-block.  A
 * mapping waiting to be unmapped (it also covers pages that went private:
 * a run joined to its neighbour) counts as lacking: its repair takes it.
 * A block a repair already maps (one the undo of a cut could not split,
 * drop_map_fixes()) is not noted twice: the second would find the first's
 * mapping there, -EEXIST for ever. */
static void note_missing(struct cvm_dma *d, const struct dma_region *dr, uint64_t lo,
			 uint64_t hi, uint64_t hva, int err)
{
	for (uint64_t p = lo; p < hi;) {
		struct mt_entry e;
		uint64_t q = hi;
		bool more = !maptable_lookup(d->mt, p, &e) && e.iova < hi;

		if (more && d->nfix && stray_over(d, e.iova, e.iova + e.len))
			q = e.iova + e.len < hi ? e.iova + e.len : hi;
		else if (more)
			q = e.iova > p ? e.iova : p;
		for (uint64_t x = p; x < q && dr;) {
			uint64_t xe = block_end(x, dr->granule, q);

			if (!map_fix_covers(d, dr, x, xe))
				fix_add(d, (struct fix){ FIX_MAP, err, x, xe - x, hva + (x - lo),
							 dr });
			x = xe;
		}
		if (!more)
			break;
		p = e.iova + e.len;
	}
}

/* A put-back the kernel refused: [x, y) of a mapping the table holds (hva:
 * of x) may be gone from the kernel, so a repair maps it again.  Noted
 * once, however many failed calls find it so. */
static void note_remap(struct cvm_dma *d, uint64_t x, uint64_t y, uint64_t hva, int err)
{
	for (size_t i = 0; i < d->nfix; i++) {
		if (d->fix[i].kind == FIX_REMAP && d->fix[i].iova == x && d->fix[i].len == y - x) {
			d->fix[i].err = err;
			return;
		}
	}
	fix_add(d, (struct fix){ FIX_REMAP, err, x, y - x, hva, region_at(d, x) });
}

/* Map a FIX_REMAP's piece again where the table still holds it: the kernel
 * mapping it, or saying it is there (-EEXIST; where the kernel may have
 * split it unseen, piece by piece), settles it.  Where the table no longer
 * holds it, it went in a later call the kernel took, or that found it
 * gone (an unmap said -ENOENT, a cut removed less): nothing to do there;
 * nor where it lies under a mapping left on private pages, which a repair
 * is to unmap (never mapped back, as in put_back_inside()).  A part of a
 * table mapping that comes back is a mapping of the kernel's own, so the
 * kernel holds that table mapping as several: the part's ends are noted
 * as points where it may be split (the mapping may have been made across
 * an end of the piece since, and lost in turn), so that a later put-back
 * maps it piece by piece.  The table counted the piece's entry all along,
 * but a count the kernel gave since, without it, did not: so one that
 * comes back asks the kernel again. */
static int remap(struct cvm_dma *d, const struct fix *f)
{
	struct put_back pb = { .note = false };
	uint64_t e = f->iova + f->len;
	struct mt_entry m;
	int err = 0;

	for (uint64_t x = f->iova; x < e && !maptable_lookup(d->mt, x, &m) && m.iova < e;
	     x = m.iova + m.len) {
		uint64_t a = m.iova > x ? m.iova : x, me = m.iova + m.len;
		uint64_t b = me < e ? me : e, back = pb.back;
		bool part = a > m.iova || b < me;

		if (stray_over(d, m.iova, me))
			continue;
		if (part && (err = maybe_reserve(d, 2)))
			break;
		map_back(d, a, b, m.data + (a - m.iova), &pb);
		if (part && pb.back > back) {
			if (a > m.iova)
				maybe_add(d, a);
			if (b < me)
				maybe_add(d, b);
		}
	}
	if (pb.back)
		refresh_avail(d);
	return err ? err : pb.unknown ? pb.err : 0;
}

/* [lo, hi) meets what the undo of a conversion still to settle (another
 * context may yet fail it) would map or unmap again. */
static bool pending_over(const struct cvm_dma *d, uint64_t lo, uint64_t hi)
{
	for (const struct dma_region *dr = d->regions; dr; dr = dr->next)
		for (size_t i = 0; i < dr->npend; i++)
			if (lo < dr->pend[i].iova + dr->pend[i].len && dr->pend[i].iova < hi)
				return true;
	return false;
}

/*
 * Unmap the whole mappings of the table in [s, e) (a repair, or closing;
 * e 0: to 2^64), each run of adjacent ones with a call of its own: a call
 * never reaches into a gap between them, where another user may have
 * mapped since (the window of a region gone from the context, its GPA
 * range reused).  type1 would fail a call that bisects such a mapping
 * with -EINVAL every time, and both kernels would take one that lies
 * wholly inside.  A mapping not wholly inside [s, e) is not this call's.
 * Stops at the first run the kernel refuses: the runs before it have left
 * the table, so a retry starts at that one.  (Where iommufd's -ENOENT sent
 * a run mapping by mapping and the kernel refused one, the table keeps the
 * whole run, those it took as well: the retry lets them go.)
 */
static int unmap_left(struct cvm_dma *d, uint64_t s, uint64_t e)
{
	uint64_t last = e - 1;
	struct mt_entry m;

	for (uint64_t p = s; !maptable_lookup(d->mt, p, &m) && m.iova <= last;) {
		uint64_t lo = m.iova, hi = m.iova + m.len;
		int err;

		if (lo >= s && hi - 1 <= last) {
			while (hi - 1 < last && !maptable_lookup(d->mt, hi, &m) && m.iova == hi &&
			       m.iova + m.len - 1 <= last)
				hi = m.iova + m.len;
			err = be_unmap_span(d, lo, hi, false, false);
			if (err)
				return err;
		}
		if (hi - 1 >= last)
			break;
		p = hi;
	}
	return 0;
}

/* One pass of repair(): the unmaps (FIX_UNMAP), or the others. */
static void repair_pass(struct cvm_dma *d, bool unmaps)
{
	size_t k = 0;

	for (size_t i = 0; i < d->nfix; i++) {
		struct fix f = d->fix[i];
		int err;

		if ((f.kind == FIX_UNMAP) != unmaps) {
			d->fix[k++] = f;
			continue;
		}
		if (f.kind == FIX_UNMAP && pending_over(d, f.iova, f.iova + f.len))
			err = f.err;
		else if (f.kind == FIX_UNMAP)
			err = unmap_left(d, f.iova, f.iova + f.len);
		else if (f.kind == FIX_REMAP)
			err = remap(d, &f);
		else if (overlaps_table(d, f.iova, f.iova + f.len) ||
			 stray_over(d, f.iova, f.iova + f.len))
			err = -EEXIST;
		else
			err = room(d) ? be_map(d, f.iova, f.len, f.hva, false) : -ENOSPC;
		if (!err) {
			cvm_info("dma: repaired iova 0x%llx+0x%llx (%s)",
				 (unsigned long long)f.iova, (unsigned long long)f.len,
				 f.kind == FIX_UNMAP ? "unmapped" : "mapped");
			continue;
		}
		f.err = err;
		d->fix[k++] = f;
	}
	d->nfix = k;
}

/* Retry every repair (d->lock held); what the kernel still refuses stays.
 * A mapping left on private pages that a pending conversion unmapped
 * waits for it to settle: its undo would map it back, unnoted. */
static void repair(struct cvm_dma *d)
{
	/* Unmaps first: a map waits while a mapping left on private pages
	 * covers any of its pages (that repair would take it too). */
	for (int pass = 0; pass < 2; pass++)
		repair_pass(d, pass == 0);
}

/* The repair of a mapping left on private pages that overlaps [lo, hi). */
static const struct fix *stray_over(const struct cvm_dma *d, uint64_t lo, uint64_t hi)
{
	for (size_t i = 0; i < d->nfix; i++)
		if (d->fix[i].kind == FIX_UNMAP && lo < d->fix[i].iova + d->fix[i].len &&
		    d->fix[i].iova < hi)
			return &d->fix[i];
	return NULL;
}

/* The error of a page of runs left mapped although private, or 0. */
static int stray_in(const struct cvm_dma *d, const struct dma_region *dr,
		    const struct cvm_range *runs, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		uint64_t a = iova_of(dr, runs[j].gpa);
		const struct fix *f = stray_over(d, a, a + runs[j].length);

		if (f)
			return f->err;
	}
	return 0;
}

/* Split the FIX_MAP f of dr by runs: its parts outside them go to
 * keep[*nk], those inside to cut[*nc]; with NULL arrays, only counted. */
static void split_fix(const struct fix *f, const struct dma_region *dr,
		      const struct cvm_range *runs, size_t n, struct fix *keep, size_t *nk,
		      struct fix *cut, size_t *nc)
{
	uint64_t p = f->iova, y = f->iova + f->len;

	for (size_t j = 0; j < n && p < y; j++) {
		uint64_t a = iova_of(dr, runs[j].gpa), b = a + runs[j].length;

		if (b <= p)
			continue;
		if (a >= y)
			break;
		if (a > p) {
			if (keep)
				keep[*nk] = fix_piece(f, p, a);
			++*nk;
		}
		if (cut)
			cut[*nc] = fix_piece(f, a > p ? a : p, b < y ? b : y);
		++*nc;
		p = b < y ? b : y;
	}
	if (p < y) {
		if (keep)
			keep[*nk] = fix_piece(f, p, y);
		++*nk;
	}
}

static bool is_fix_map_of(const struct fix *f, const struct dma_region *dr)
{
	return f->kind == FIX_MAP && f->dr == dr;
}

/*
 * Runs of dr went private: repairs that would map their pages must not
 * happen any more.  They come back (put_back_fixes()) if another context
 * fails the conversion.  -ENOMEM changes nothing.
 */
static int trim_fixes(struct cvm_dma *d, struct dma_region *dr, const struct cvm_range *runs,
		      size_t n)
{
	size_t nk = 0, nc = 0;
	struct fix *v;

	for (size_t i = 0; i < d->nfix; i++) {
		if (is_fix_map_of(&d->fix[i], dr))
			split_fix(&d->fix[i], dr, runs, n, NULL, &nk, NULL, &nc);
		else
			nk++;
	}
	if (fix_reserve(&dr->untrim, &dr->cap_untrim, dr->nuntrim + nc))
		return -ENOMEM;
	/* Room for the pieces to come back too (put_back_fixes()). */
	v = cvm_reallocarray(NULL, nk + nc ? nk + nc : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	nk = 0;
	for (size_t i = 0; i < d->nfix; i++) {
		if (is_fix_map_of(&d->fix[i], dr))
			split_fix(&d->fix[i], dr, runs, n, v, &nk, dr->untrim, &dr->nuntrim);
		else
			v[nk++] = d->fix[i];
	}
	cvm_free(d->fix);
	d->fix = v;
	d->cap_fix = nk + nc ? nk + nc : 1;
	d->nfix = nk;
	return 0;
}

/* Another context failed the conversion: its pages are shared again.
 * Called before the undo (dma_settle()), as the call's own failure finds
 * them still noted: the undo of a cut drops those over its hole, which it
 * maps back (and notes again, once, where a stray's repair will take it). */
static void put_back_fixes(struct cvm_dma *d, struct dma_region *dr)
{
	for (size_t i = 0; i < dr->nuntrim; i++) {
		const struct fix *f = &dr->untrim[i];

		note_missing(d, dr, f->iova, f->iova + f->len, f->hva, f->err);
	}
	dr->nuntrim = 0;
}

/* The undo of a cut maps [lo, hi) of dr back whole: repairs that would map
 * pages there are moot (what the undo cannot map is noted again).  A
 * repair that reaches past both ends, with no memory to split it, stays
 * whole: the hole then lies in a stray's range (a repair's pages have no
 * other mapping to cut), whose repair unmaps what the undo maps back
 * before that repair maps it all; note_missing() notes nothing again
 * under it. */
static void drop_map_fixes(struct cvm_dma *d, const struct dma_region *dr, uint64_t lo,
			   uint64_t hi)
{
	for (size_t i = 0; i < d->nfix;) {
		struct fix f = d->fix[i];
		uint64_t e = f.iova + f.len;

		if (!is_fix_map_of(&f, dr) || e <= lo || f.iova >= hi) {
			i++;
		} else if (f.iova < lo && e > hi) {
			if (fix_reserve(&d->fix, &d->cap_fix, d->nfix + 1)) {
				i++;
				continue;
			}
			memmove(&d->fix[i + 2], &d->fix[i + 1], (d->nfix - i - 1) * sizeof(f));
			d->fix[i] = fix_piece(&f, f.iova, lo);
			d->fix[i + 1] = fix_piece(&f, hi, e);
			d->nfix++;
			i += 2;
		} else if (f.iova < lo || e > hi) {
			d->fix[i++] = f.iova < lo ? fix_piece(&f, f.iova, lo) : fix_piece(&f, hi, e);
		} else {
			memmove(&d->fix[i], &d->fix[i + 1], (d->nfix - i - 1) * sizeof(f));
			d->nfix--;
		}
	}
}

/* dr leaves the context: its repairs go with it. */
static void drop_fixes(struct cvm_dma *d, const struct dma_region *dr)
{
	size_t k = 0;

	for (size_t i = 0; i < d->nfix; i++)
		if (d->fix[i].dr != dr)
			d->fix[k++] = d->fix[i];
	d->nfix = k;
}

/*
 * [lo, hi) lies in a mapping this call made: a step still to undo (the
 * first d->nundo records) unmaps it anyway.  Restoring it only restores a
 * state of the middle of the call (a run joined step by step, a remainder
 * of a split): if the kernel refuses, nothing is to be repaired there, and
 * a repair would map pages as they were in the middle of the call, some
 * of them private again once the call is undone.
 */
static bool made_by_call(const struct cvm_dma *d, uint64_t lo, uint64_t hi)
{
	for (size_t k = d->nundo; k-- > 0;) {
		const struct undo_rec *u = &d->undo[k];

		if (u->kind == UNDO_MAPPED && u->iova <= lo && hi - u->iova <= u->len)
			return true;
	}
	return false;
}

/*
 * A mapping the call made later over part of [*lo, *hi), whose undo the
 * kernel refused, reaches past it: it stays whole (a repair unmaps it, or
 * it remaps pages that stay shared), and the unmap of what this step
 * mapped keeps off it.  Shrinks [*lo, *hi) to the entries wholly inside.
 */
static void inside_strays(const struct cvm_dma *d, uint64_t *lo, uint64_t *hi)
{
	struct mt_entry e;

	if (!maptable_lookup(d->mt, *lo, &e) && e.iova < *lo && e.iova + e.len > *lo)
		*lo = e.iova + e.len < *hi ? e.iova + e.len : *hi;
	if (*lo < *hi && !maptable_lookup_le(d->mt, *hi - 1, &e) && e.iova >= *lo &&
	    e.iova < *hi && e.iova + e.len > *hi)
		*hi = e.iova;
}

struct strays {
	struct cvm_dma *d;
	uint64_t lo, hi;        /* the contiguous mappings seen last */
	int err;
};

static void stray_flush(struct strays *st)
{
	if (st->lo < st->hi)
		fix_add(st->d, (struct fix){ FIX_UNMAP, st->err, st->lo, st->hi - st->lo, 0,
					     region_at(st->d, st->lo) });
}

static int stray_visit(void *opaque, const struct mt_entry *e)
{
	struct strays *st = opaque;

	if (e->iova != st->hi) {
		stray_flush(st);
		st->lo = e->iova;
	}
	st->hi = e->iova + e->len;
	return 0;
}

/* The kernel refused to unmap [lo, hi), which held only whole mappings:
 * note those it still holds, each contiguous stretch of them, for
 * repair().  Not the gaps between them: a later step of the rollback may
 * map pages that stay shared there. */
static void note_strays(struct cvm_dma *d, uint64_t lo, uint64_t hi, int err)
{
	struct strays st = { d, 0, 0, err };

	maptable_for_each(d->mt, lo, hi - lo, stray_visit, &st);
	stray_flush(&st);
}

/*
 * Where the piece of a hole from p (below hi) ends: at hi, or where the
 * range of a mapping left on private pages (a stray) begins or ends;
 * *inside: the piece lies in a stray's range.
 */
static uint64_t stray_edge(const struct cvm_dma *d, uint64_t p, uint64_t hi, bool *inside)
{
	uint64_t q = hi;

	*inside = false;
	for (size_t i = 0; i < d->nfix; i++) {
		const struct fix *f = &d->fix[i];
		uint64_t fe = f->iova + f->len;

		if (f->kind != FIX_UNMAP)
			continue;
		if (f->iova <= p && p < fe)
			*inside = true;
		if (f->iova > p && f->iova < q)
			q = f->iova;
		if (fe > p && fe < q)
			q = fe;
	}
	return q;
}

/* The entries the undo of a cut of [lo, hi) of dr takes: its hole goes
 * back split where strays' ranges begin and end (undo_cut_by_strays()). */
static uint64_t cut_undo_pieces(const struct cvm_dma *d, const struct dma_region *dr,
				uint64_t lo, uint64_t hi)
{
	uint64_t n = 0;
	bool inside;

	if (!d->nfix)
		return pieces(lo, hi, dr->granule);
	for (uint64_t p = lo, q; p < hi; p = q) {
		q = stray_edge(d, p, hi, &inside);
		n += pieces(p, q, dr->granule);
	}
	return n;
}

/*
 * The undo of a cut whose hole [lo, hi) of dr meets the range of a mapping
 * left on private pages (a stray): the hole goes back piece by piece,
 * split where a stray's range begins or ends.  A piece inside a stray's
 * range goes with that stray's repair (unmap_left() takes every mapping
 * wholly inside), so it is also noted to map again, which repair() does
 * after its unmaps; one outside is a mapping of its own, as the hole would
 * be.  serr: the stray's error, for the notes.  Returns the kernel's last
 * refusal (what it refused is noted), or 0.
 */
static int undo_cut_by_strays(struct cvm_dma *d, const struct dma_region *dr, uint64_t lo,
			      uint64_t hi, uint64_t hva, int serr)
{
	int ret = 0;

	for (uint64_t p = lo, q; p < hi; p = q) {
		bool inside;
		int err;

		q = stray_edge(d, p, hi, &inside);
		err = map_range(d, dr, p, q, false);
		if (err)
			ret = err;
		if (inside || err)
			note_missing(d, dr, p, q, hva + (p - lo), err ? err : serr);
	}
	return ret;
}

/*
 * Replay the undo log backwards: the IOMMU maps what it mapped before.
 * Where the kernel refuses a step, what it left different is noted for
 * repair(): mappings of pages that stay private, to unmap, and shared
 * pages left unmapped, to map.
 */
static void rollback(struct cvm_dma *d)
{
	const struct fix *sf;

	while (d->nundo) {
		struct undo_rec u = d->undo[--d->nundo];
		uint64_t lo = u.iova, hi = u.iova + u.len;
		int err = 0;

		switch (u.kind) {
		case UNDO_MAPPED:
			/* Mappings made in one go are contiguous: one unmap for all. */
			while (d->nundo && d->undo[d->nundo - 1].kind == UNDO_MAPPED &&
			       d->undo[d->nundo - 1].remap == u.remap &&
			       d->undo[d->nundo - 1].iova + d->undo[d->nundo - 1].len == lo)
				lo = d->undo[--d->nundo].iova;
			inside_strays(d, &lo, &hi);
			err = lo < hi ? be_unmap_span(d, lo, hi, false, u.remap) : 0;
			/* A remap of pages that stay shared may stay: restoring
			 * the mapping it came from finds it there, below. */
			if (err && !u.remap)
				note_strays(d, lo, hi, err);
			break;
		case UNDO_UNMAPPED:
			err = overlaps_table(d, lo, hi) ? -EEXIST : be_map(d, lo, u.len, u.hva, false);
			/* A stray that cannot come back lacks nothing: its
			 * shared pages were noted to map when it was left
			 * (note_missing()), and its private ones must not be;
			 * its own repair unmaps what the call left of it. */
			if (err && (u.stray || made_by_call(d, lo, hi)))
				err = 0;
			else if (err)
				note_missing(d, region_at(d, lo), lo, hi, u.hva, err);
			break;
		case UNDO_CUT:
			if (d->nfix)
				drop_map_fixes(d, u.dr, lo, hi);
			/* A hole that meets a mapping left on private pages:
			 * what lies in its range goes with its repair, so it is
			 * noted to map again too. */
			if (d->nfix && (sf = stray_over(d, lo, hi))) {
				err = undo_cut_by_strays(d, u.dr, lo, hi, u.hva, sf->err);
				break;
			}
			/* Unlike the cases above, no step of the call can
			 * have mapped it (made_by_call()): only a private
			 * conversion cuts, and one that cuts logs no map
			 * (span_for_run() cuts every span that is not whole
			 * mappings: no remap_rest()). */
			err = map_range(d, u.dr, lo, hi, false);
			if (err)
				note_missing(d, u.dr, lo, hi, u.hva, err);
			break;
		}
		if (err)
			cvm_err("dma: rollback failed at iova 0x%llx+0x%llx (%d): the IOMMU "
				"no longer matches the shared pages there; the context retries "
				"on its next conversion or add_region, or cvm_dma_repair()", (unsigned long long)lo,
				(unsigned long long)(hi - lo), err);
	}
}

/* ---- the entry limit ---- */

struct merge_scan {
	struct cvm_dma *d;
	struct mt_entry first, last;
	size_t k;
	uint64_t *spans;     /* pairs: start, end of each mergeable sequence */
	size_t nspans, cap;
	uint64_t gain, need;
	int err;
};

/* Notes the sequence scanned so far; stops the scan once it frees enough. */
static int merge_flush(struct merge_scan *m)
{
	if (m->k >= 2) {
		if (m->nspans == m->cap) {
			/* Spans are pairs: start, end. */
			uint64_t *p = cvm_grow_array(m->spans, &m->cap, m->nspans + 1,
						     2 * sizeof(*p), 64);

			if (!p) {
				m->err = -ENOMEM;
				return 1;
			}
			m->spans = p;
		}
		m->spans[2 * m->nspans] = m->first.iova;
		m->spans[2 * m->nspans + 1] = m->last.iova + m->last.len;
		m->nspans++;
		m->gain += m->k - 1;
	}
	m->k = 0;
	return m->gain >= m->need;
}

static int merge_visit(void *opaque, const struct mt_entry *e)
{
	struct merge_scan *m = opaque;
	const struct dma_region *dr;

	if (m->d->nfix && stray_over(m->d, e->iova, e->iova + e->len))
		return merge_flush(m);   /* k is 0 now: nothing merges with it */
	if (m->k && m->last.iova + m->last.len == e->iova &&
	    m->last.data + m->last.len == e->data &&
	    (dr = region_at(m->d, m->first.iova)) && !dr->npend &&
	    e->iova + e->len - dr->g.iova <= dr->g.length &&
	    block_end(m->first.iova, dr->granule, UINT64_MAX) >= e->iova + e->len) {
		m->last = *e;
		m->k++;
		return 0;
	}
	if (merge_flush(m))
		return 1;
	m->first = m->last = *e;
	m->k = 1;
	return 0;
}

/*
 * CVM_DMA_COMPACT: merge runs of adjacent mappings (disruptively) inside
 * their G-block until `need` entries are free.  The whole table is scanned
 * first: when all its merges together would not free enough, none is made
 * (-ENOSPC), so a conversion refused at the limit changes nothing.  (A
 * private conversion may call it twice: its count can grow after merging,
 * and a second call that cannot free enough leaves the first's merges.)
 */
static int compact(struct cvm_dma *d, uint64_t need, bool *refused)
{
	struct merge_scan m = { .d = d, .need = need - room(d) };
	int err;

	if (!maptable_for_each(d->mt, 0, 0, merge_visit, &m))
		merge_flush(&m);
	err = m.err ? m.err : m.gain < m.need ? -ENOSPC : 0;
	for (size_t i = 0; i < m.nspans && !err; i++) {
		uint64_t s = m.spans[2 * i], e = m.spans[2 * i + 1];
		const struct dma_region *dr = region_at(d, s);
		size_t mark = d->nundo;

		err = be_unmap_span(d, s, e, true, true);
		if (!err) {
			err = be_map(d, s, e - s, hva_of(dr, s), false);
			if (err == -ENOSPC) {
				log_limit(d, 0);   /* the kernel's, not our count */
				*refused = true;
			}
		}
		if (err) {
			d->nundo = d->nundo > mark ? d->nundo : mark;
			rollback(d);
			break;
		}
		d->nundo = mark;
		d->st.disruptive_splits++;
		d->st.disrupted_bytes += e - s;
	}
	cvm_free(m.spans);
	return err;
}

/* Room for need more entries?  Our count sees only this context's calls:
 * entries that others in the container gave back since are free too, so
 * the kernel is asked before the answer is no. */
static bool has_room(struct cvm_dma *d, uint64_t need)
{
	if (d->avail == UINT64_MAX || need <= room(d))
		return true;
	refresh_avail(d);
	return need <= room(d);
}

static int make_room(struct cvm_dma *d, uint64_t need)
{
	int err;

	if (has_room(d, need))
		return 0;
	if (d->flags & CVM_DMA_COMPACT) {
		size_t saved = d->nundo;
		bool refused = false;

		/* Compaction keeps the mapped set: it is not part of this call's undo. */
		d->nundo = 0;
		err = compact(d, need, &refused);
		d->nundo = saved;
		if (err != -ENOSPC || refused)
			return err;     /* 0, or compaction could not run (-ENOMEM) */
	}
	log_limit(d, need);
	return -ENOSPC;
}

/* ---- the DMA listener ---- */

/*
 * A listener call that succeeded may still be undone: the region calls
 * every DMA context of a conversion in turn, and a later one can fail.
 * Its undo log therefore moves to dr (the buffers swap, so this cannot
 * fail) until dma_settle(); the entries that undo would take are held
 * back from other regions' calls meanwhile, and compaction leaves the
 * region's mappings alone.  Undoing a cut maps the hole as a mapping of
 * its own, one entry more than before the cut (more where strays' ranges
 * split it: cut_undo_pieces()).
 */
static void keep_pending(struct cvm_dma *d, struct dma_region *dr)
{
	struct undo_rec *v = dr->pend;
	size_t cap = dr->cap_pend;
	int64_t now = 0, want = 0;

	/* The most entries the undo holds at once beyond today's, replayed
	 * backwards as rollback() does: not the net count the call freed, as
	 * a cut's extra entry stays when it is undone while an unmap it
	 * offset comes back. */
	for (size_t i = d->nundo; i-- > 0;) {
		const struct undo_rec *u = &d->undo[i];

		if (u->kind == UNDO_MAPPED)
			now--;
		else if (u->kind == UNDO_UNMAPPED)
			now++;
		else
			now += (int64_t)cut_undo_pieces(d, dr, u->iova, u->iova + u->len);
		if (now > want)
			want = now;
	}
	dr->pend = d->undo;
	dr->npend = d->nundo;
	dr->cap_pend = d->cap_undo;
	d->undo = v;
	d->cap_undo = cap;
	d->nundo = 0;
	if (d->avail != UINT64_MAX) {
		dr->held = (uint64_t)want;
		d->held += (uint64_t)want;
	}
}

/* The conversion is over: forget its undo log (keep) or replay it. */
static void dma_settle(void *opaque, bool keep)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;

	pthread_mutex_lock(&d->lock);
	/* Repairs the call took away come back first, as where it failed
	 * itself: the undo of a cut then finds those over its hole. */
	if (!keep)
		put_back_fixes(d, dr);
	if (!keep && dr->npend) {
		struct undo_rec *v = d->undo;
		size_t cap = d->cap_undo;

		d->undo = dr->pend;
		d->nundo = dr->npend;
		d->cap_undo = dr->cap_pend;
		dr->pend = v;
		dr->cap_pend = cap;
		rollback(d);
	}
	dr->nuntrim = 0;
	dr->npend = 0;
	d->held -= dr->held;
	dr->held = 0;
	pthread_mutex_unlock(&d->lock);
}

/*
 * CVM_DMA_COMPACT at the limit: a run being mapped may join (disruptively)
 * the mapping that ends where it starts, and the one that starts where it
 * ends, each if it lies in the G-block of the run's end it touches, in the
 * same region, and neither waits for a repair nor for a pending undo.
 */
static bool joins(const struct cvm_dma *d, const struct dma_region *dr, const struct mt_entry *x)
{
	return region_at(d, x->iova) == dr && !dr->npend && x->data == hva_of(dr, x->iova) &&
	       !(d->nfix && stray_over(d, x->iova, x->iova + x->len));
}

static bool join_left(const struct cvm_dma *d, const struct dma_region *dr, uint64_t s,
		      struct mt_entry *x)
{
	return s > dr->g.iova && !maptable_lookup(d->mt, s - 1, x) && x->iova + x->len == s &&
	       block_end(x->iova, dr->granule, UINT64_MAX) > s && joins(d, dr, x);
}

static bool join_right(const struct cvm_dma *d, const struct dma_region *dr, uint64_t e,
		       struct mt_entry *x)
{
	return !maptable_lookup(d->mt, e, x) && x->iova == e &&
	       block_end(e - 1, dr->granule, UINT64_MAX) >= x->iova + x->len && joins(d, dr, x);
}

/*
 * Entries runs need when the first *njoin of them join their neighbours:
 * as few as bring the total (need) within room.  A mapping between two
 * runs counts once (joined by both, it saves one entry more than
 * counted).  The runs map in order, each right after unmapping what it
 * joins, so what a later run frees is not free yet when an earlier one
 * maps: the count is the highest along the way, not the total.
 */
static uint64_t join_need(struct cvm_dma *d, const struct dma_region *dr,
			  const struct cvm_range *runs, size_t n, uint64_t need, size_t *njoin)
{
	uint64_t prev = UINT64_MAX;     /* the mapping the last run joins on its right */
	int64_t now = 0, peak = 0, joined = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t s = iova_of(dr, runs[i].gpa), e = s + runs[i].length;
		struct mt_entry x;

		now += (int64_t)pieces(s, e, dr->granule);
		if ((uint64_t)joined < need && need - (uint64_t)joined > room(d)) {
			if (join_left(d, dr, s, &x) && x.iova != prev)
				joined++, now--;
			prev = UINT64_MAX;
			if (join_right(d, dr, e, &x)) {
				joined++, now--;
				prev = x.iova;
			}
			*njoin = i + 1;
		}
		peak = now > peak ? now : peak;
	}
	return (uint64_t)peak;
}

static int unmap_to_join(struct cvm_dma *d, const struct mt_entry *x)
{
	int err = be_unmap_span(d, x->iova, x->iova + x->len, true, true);

	if (!err) {
		d->st.disruptive_splits++;
		d->st.disrupted_bytes += x->len;
	}
	return err;
}

static int map_joined(struct cvm_dma *d, const struct dma_region *dr, uint64_t s, uint64_t e)
{
	struct mt_entry x;
	int err = 0;

	if (join_left(d, dr, s, &x) && !(err = unmap_to_join(d, &x)))
		s = x.iova;
	if (!err && join_right(d, dr, e, &x) && !(err = unmap_to_join(d, &x)))
		e = x.iova + x.len;
	return err ? err : map_range(d, dr, s, e, true);
}

/*
 * What a shared conversion of runs does before it maps, under d->lock:
 * repairs, then, under an entry limit, the room it needs (compacting if
 * allowed); *njoin: how many of the runs join their neighbours, which
 * happens only when they map.
 */
static inline __attribute__((always_inline)) int
map_prologue(struct cvm_dma *d, struct dma_region *dr,
	     const struct cvm_range *runs, size_t n, size_t *njoin, bool checked)
{
	uint64_t need = 0;
	int err;

	d->nundo = 0;
	*njoin = 0;
	if (d->nfix) {
		/* After a check, its repairs were made: one made now could
		 * take the room the check counted (or compacted) for. */
		if (!checked)
			repair(d);
		/* Pages a failed rollback left mapped cannot be mapped again
		 * until the kernel lets go of them. */
		if ((err = stray_in(d, dr, runs, n)))
			return err;
	}
	/* Only an entry limit needs the count of new mappings. */
	if (d->avail == UINT64_MAX)
		return 0;
	/* After a check: its plan, counted before its compaction (a recount
	 * on the compacted table can count fewer joins). */
	if (checked) {
		*njoin = dr->check_njoin;
		return make_room(d, dr->check_need);
	}
	need = runs_pieces(dr, runs, n);
	if (need > room(d) && (d->flags & CVM_DMA_COMPACT))
		need = join_need(d, dr, runs, n, need, njoin);
	dr->check_njoin = *njoin;
	dr->check_need = need;
	return make_room(d, need);
}

static int dma_map_runs(void *opaque, const struct cvm_range *runs, size_t n, bool last,
			bool checked)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	size_t njoin;
	int err;

	pthread_mutex_lock(&d->lock);
	err = map_prologue(d, dr, runs, n, &njoin, checked);
	for (size_t i = 0; i < n && !err; i++) {
		uint64_t s = iova_of(dr, runs[i].gpa), e = s + runs[i].length;

		err = i < njoin ? map_joined(d, dr, s, e) : map_range(d, dr, s, e, true);
	}
	if (err)
		rollback(d);
	else if (!last)
		keep_pending(d, dr);
	d->nundo = 0;
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* One kernel call's worth of a private conversion. */
struct span {
	uint64_t s, e;          /* what the call covers */
	uint64_t ls, rs_end;    /* disruptive: remainders [ls, a) and [b, rs_end) */
				/* (of the first and the last run folded in) */
	uint64_t a, b;
	uint64_t hva;           /* of s, when one */
	bool cut;
	bool split_one;         /* strictly inside one mapping: one entry more after */
	bool one;               /* [s, e) is exactly one whole mapping */
	bool whole;             /* no remainder: nothing to map again */
};

/* Turn run [a, b) into the span that removes it. */
static void span_for_run(struct cvm_dma *d, uint64_t a, uint64_t b, struct span *sp)
{
	struct mt_entry l, r;
	bool has_l = !maptable_lookup_le(d->mt, a, &l), has_r;

	*sp = (struct span){ .s = a, .e = b, .ls = a, .rs_end = b, .a = a, .b = b };
	if (has_l && l.iova < a && l.iova + l.len > a) {
		sp->ls = l.iova;
		sp->split_one = l.iova + l.len > b;
	}
	/* Mappings are disjoint: if the one at or below a reaches b, it is also
	 * the last one starting at or below b - 1.  Spares a tree walk. */
	if (has_l && l.iova + l.len >= b) {
		r = l;
		has_r = true;
	} else {
		has_r = !maptable_lookup_le(d->mt, b - 1, &r);
	}
	if (has_r && r.iova < b && r.iova + r.len > b)
		sp->rs_end = r.iova + r.len;
	if (sp->ls == a && sp->rs_end == b) {
		/* whole mappings only */
		sp->whole = true;
		sp->one = has_l && l.iova == a && l.iova + l.len == b;
		sp->hva = l.data;
		return;
	}
	if (d->use_cut) {
		sp->cut = true;
		return;
	}
	sp->s = sp->ls;
	sp->e = sp->rs_end;
}

static bool gap_is_unmapped(struct cvm_dma *d, uint64_t from, uint64_t to)
{
	struct mt_entry e;

	return maptable_lookup(d->mt, from, &e) || e.iova >= to;
}

/*
 * Map again what the unmap of a disruptive span took that stays shared: the
 * entries it removed (the undo log from `mark` to `end`) less the runs
 * going private.  Each piece lies inside its entry, so inside one G-block.
 * A mapping counts once however many holes the call makes in it, and each
 * still-shared page is remapped once.
 */
static int remap_rest(struct cvm_dma *d, const struct dma_region *dr, size_t mark, size_t end,
		      const struct cvm_range *runs, size_t n)
{
	size_t k = 0;

	for (size_t i = mark; i < end; i++) {
		struct undo_rec u = d->undo[i];  /* be_map() may move the log */
		uint64_t p = u.iova, ue = u.iova + u.len, bytes = 0;

		while (p < ue) {
			uint64_t ra = 0, rb = 0, q;
			int err;

			while (k < n && (ra = iova_of(dr, runs[k].gpa),
					 rb = ra + runs[k].length) <= p)
				k++;
			if (k < n && ra <= p) {         /* inside a run: skip it */
				p = rb < ue ? rb : ue;
				continue;
			}
			q = k < n && ra < ue ? ra : ue;
			err = be_map(d, p, q - p, u.hva + (p - u.iova), true);
			if (err)
				return err;
			d->undo[d->nundo - 1].remap = true;
			bytes += q - p;
			p = q;
		}
		if (bytes) {
			d->st.disruptive_splits++;
			d->st.disrupted_bytes += bytes;
		}
	}
	return 0;
}

/* Remove the span holding runs[0..n). */
static int do_span(struct cvm_dma *d, const struct dma_region *dr, const struct span *sp,
		   const struct cvm_range *runs, size_t n)
{
	size_t mark = d->nundo;
	int err;

	if (sp->cut)
		return be_cut(d, dr, sp->s, sp->e, true);
	/* A mapping the kernel may have split unseen is several areas to it:
	 * an unmap it fails part way may take some. */
	if (sp->one && !maybe_inside(d, sp->s, sp->e))
		return be_unmap_one(d, sp->s, sp->e - sp->s, sp->hva, true);
	err = be_unmap_span(d, sp->s, sp->e, true, true);
	if (err || sp->whole)
		return err;
	return remap_rest(d, dr, mark, d->nundo, runs, n);
}

/* Entries a private conversion of runs needs: one more for each mapping
 * split in two (cut or not), and to undo a cut, one per G-block of the
 * hole (keep_pending()).  *first: the span of runs[0].  *cuts (if not
 * NULL): how many of those are for undoing cuts. */
static uint64_t unmap_need(struct cvm_dma *d, const struct dma_region *dr,
			   const struct cvm_range *runs, size_t n, struct span *first,
			   uint64_t *cuts)
{
	uint64_t need = 0, undo = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t a = iova_of(dr, runs[i].gpa);
		struct span sp;

		span_for_run(d, a, a + runs[i].length, &sp);
		undo += sp.cut ? cut_undo_pieces(d, dr, sp.s, sp.e) : 0;
		need += sp.split_one;
		if (!i)
			*first = sp;
	}
	if (cuts)
		*cuts = undo;
	return need + undo;
}

/* Mappings the runs whose spans are whole mappings remove. */
static uint64_t whole_freed(struct cvm_dma *d, const struct dma_region *dr,
			    const struct cvm_range *runs, size_t n)
{
	struct collect c = { d, 0, 0, 0 };

	for (size_t i = 0; i < n; i++) {
		uint64_t a = iova_of(dr, runs[i].gpa), b = a + runs[i].length;
		struct span sp;

		span_for_run(d, a, b, &sp);
		if (sp.whole)
			maptable_for_each(d->mt, a, b - a, count_gone, &c);
	}
	return c.n;
}

/*
 * What a private conversion of runs does before it unmaps, under d->lock:
 * repairs, then, under an entry limit, the room it needs (compacting if
 * allowed).  *have_first: the table did not change, so *first (the span of
 * runs[0]) still holds.  *whole_first: the runs fit only if those that
 * remove whole mappings go before those that split one (at the limit, a
 * batch that frees entries and takes as many).
 */
static int unmap_prologue(struct cvm_dma *d, const struct dma_region *dr,
			  const struct cvm_range *runs, size_t n, struct span *first,
			  bool *have_first, bool *whole_first, bool checked)
{
	uint64_t need, cuts;
	int err;

	d->nundo = 0;
	if (d->nfix && !checked)
		repair(d);
	*have_first = *whole_first = false;
	if (d->avail == UINT64_MAX)
		return 0;
	need = unmap_need(d, dr, runs, n, first, &cuts);
	/* No compaction (the table stays as it is): the first span holds. */
	*have_first = need <= room(d);
	/* Not with a cut to undo: its hole comes back as mappings of its
	 * own, so the entries the whole mappings free may be needed again
	 * to map them back.  Crediting the whole mappings inside a hole is
	 * not safe either: a cut the kernel refuses part way has removed
	 * only some of them, and the piece mapped back is one entry more
	 * (test-dma-fuzz -s 20762 -k 205 found it). */
	if (!*have_first && n > 1 && !cuts &&
	    need <= room(d) + whole_freed(d, dr, runs, n)) {
		*whole_first = true;
		return 0;
	}
	/* Compaction may join a mapping a run only trims to one it then
	 * splits: count again on the new table until the count holds. */
	while (!(err = make_room(d, need)) && !*have_first &&
	       (need = unmap_need(d, dr, runs, n, first, NULL)) > room(d))
		;
	return err;
}

/* The runs that remove whole mappings, one span each: before the others
 * split mappings into the entries these free. */
static int unmap_whole_spans(struct cvm_dma *d, const struct dma_region *dr,
			     const struct cvm_range *runs, size_t n)
{
	int err = 0;

	for (size_t i = 0; i < n && !err; i++) {
		uint64_t a = iova_of(dr, runs[i].gpa);
		struct span sp;

		span_for_run(d, a, a + runs[i].length, &sp);
		if (sp.whole)
			err = do_span(d, dr, &sp, runs + i, 1);
	}
	return err;
}

static int dma_unmap_runs(void *opaque, const struct cvm_range *runs, size_t n, bool last,
			  bool checked)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	struct span cur, next, first;
	bool have_first, whole_first;
	int err;

	pthread_mutex_lock(&d->lock);
	err = unmap_prologue(d, dr, runs, n, &first, &have_first, &whole_first, checked);
	if (!err && whole_first)
		err = unmap_whole_spans(d, dr, runs, n);
	for (size_t i = 0, i0; i < n && !err;) {
		uint64_t a = iova_of(dr, runs[i].gpa);

		if (!i && have_first)
			cur = first;
		else
			span_for_run(d, a, a + runs[i].length, &cur);
		/* Fold the following runs into one kernel call while they start
		 * inside the mapping this span bisects on its right (one unmap
		 * then, and each page that stays shared is remapped once), or
		 * the gap up to them holds no mapping. */
		for (i0 = i++; i < n && !cur.cut; i++) {
			uint64_t na = iova_of(dr, runs[i].gpa);

			span_for_run(d, na, na + runs[i].length, &next);
			if (next.cut ||
			    (na >= cur.rs_end && !gap_is_unmapped(d, cur.e, next.s)))
				break;
			cur.e = next.e;
			cur.b = next.b;
			cur.rs_end = next.rs_end;
			cur.one = false;
			cur.whole = cur.whole && next.whole;
		}
		/* Whole spans went first, and are empty now. */
		if (whole_first && cur.whole)
			continue;
		err = do_span(d, dr, &cur, runs + i0, i - i0);
	}
	if (!err && d->nfix)
		err = trim_fixes(d, dr, runs, n);
	if (err) {
		rollback(d);
	} else if (!last) {
		keep_pending(d, dr);
	} else {
		dr->nuntrim = 0;
	}
	d->nundo = 0;
	pthread_mutex_unlock(&d->lock);
	return err;
}

/*
 * Would dma_map_runs() be refused before it maps anything (at the entry
 * limit, or by pages a repair still has to unmap)?  Asked of every context
 * of a region before any of them maps: the call's own prologue, so the
 * repairs and compaction it makes stay made (as the call's would), and the
 * joins of runs to their neighbours wait for the call, which an earlier
 * context would otherwise make and undo again, twice disruptive.
 */
static int dma_check_map(void *opaque, const struct cvm_range *runs, size_t n)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	size_t njoin;
	int err;

	pthread_mutex_lock(&d->lock);
	err = map_prologue(d, dr, runs, n, &njoin, false);
	d->nundo = 0;
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* Is dma_map_runs() sure to be refused at the entry limit?  The count of
 * new mappings with no merge, against the room left (asked of the kernel
 * again before saying yes); no opinion where merges or repairs could
 * change the count.  Sure but for what the plain listeners that have yet
 * to hear the conversion might free meanwhile (converting another region
 * of the context, say): a refusal here does not wait for them. */
static int dma_precheck_map(void *opaque, const struct cvm_range *runs, size_t n)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	uint64_t need;
	int err = 0;

	pthread_mutex_lock(&d->lock);
	/* One mapping per page merges nothing, COMPACT or not. */
	if (d->avail == UINT64_MAX || d->nfix ||
	    (d->flags & (CVM_DMA_COMPACT | CVM_DMA_PER_PAGE)) == CVM_DMA_COMPACT)
		goto out;
	need = runs_pieces(dr, runs, n);
	if (!has_room(d, need)) {
		log_limit(d, need);
		err = -ENOSPC;
	}
out:
	pthread_mutex_unlock(&d->lock);
	return err;
}

/*
 * Would dma_unmap_runs() be refused at the entry limit?  Asked of every
 * context of a region before any of them unmaps: the call's own prologue,
 * so the repairs and merges it makes stay made (as the call's would), and
 * the call then finds the room it counted, unless another region of the
 * context took it meanwhile.
 */
static int dma_check_unmap(void *opaque, const struct cvm_range *runs, size_t n)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	struct span first;
	bool have_first, whole_first;
	int err;

	pthread_mutex_lock(&d->lock);
	err = unmap_prologue(d, dr, runs, n, &first, &have_first, &whole_first, false);
	d->nundo = 0;
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* ---- regions ---- */

/* Unmap everything mapped for dr (one call: its mappings are whole and
 * lie inside its IOVA window).  stays: dr stays in d if this fails, its
 * pages still shared, so nothing the kernel removed may stay unmapped. */
static int unmap_region(struct cvm_dma *d, struct dma_region *dr, bool stays)
{
	int err;

	d->nundo = 0;
	err = be_unmap_span(d, dr->g.iova, dr->g.iova + dr->g.length, false, stays);
	d->nundo = 0;
	return err;
}

/*
 * dr leaves d.  unmap_err: what unmap_region() returned; when the kernel
 * refused, the region's mappings stay in the kernel and the table, and
 * its whole window is noted to unmap (a repair with no region): the next
 * call of the context, or cvm_dma_repair(), retries it.
 */
static void unlink_region(struct cvm_dma *d, struct dma_region *dr, int unmap_err)
{
	for (struct dma_region **p = &d->regions; *p; p = &(*p)->next) {
		if (*p == dr) {
			*p = dr->next;
			break;
		}
	}
	drop_fixes(d, dr);
	dr->nuntrim = 0;
	dr->gone = true;
	if (unmap_err)
		fix_add(d, (struct fix){ FIX_UNMAP, unmap_err, dr->g.iova, dr->g.length, 0, NULL });
}

static void dr_free(struct dma_region *dr)
{
	cvm_free(dr->pend);
	cvm_free(dr->untrim);
	cvm_free(dr);
}

/* d->lock held: dr (linked) and its region stay valid after it is dropped. */
static void dr_pin(struct dma_region *dr)
{
	dr->pins++;
	region_get(dr->region);
}

static void dr_unpin(struct cvm_dma *d, struct dma_region *dr)
{
	struct cvm_region *r = dr->region;
	bool last;

	pthread_mutex_lock(&d->lock);
	last = !--dr->pins && dr->gone;
	pthread_mutex_unlock(&d->lock);
	if (last)
		dr_free(dr);
	region_put(r);
}

/* dr leaves d (d->lock held), its mappings unmapped first; what the kernel
 * refuses to unmap stays noted as a repair, and the log says so. */
static void drop_region(struct cvm_dma *d, struct dma_region *dr, const char *what)
{
	int err = unmap_region(d, dr, false);

	if (err)
		cvm_err("dma: %s failed (%d): iova 0x%llx+0x%llx stays mapped until "
			"cvm_dma_repair() or the context's next conversion or add_region unmaps "
			"it", what, err, (unsigned long long)dr->g.iova,
			(unsigned long long)dr->g.length);
	unlink_region(d, dr, err);
}

static void dma_region_gone(void *opaque)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	bool unpinned;

	pthread_mutex_lock(&d->lock);
	drop_region(d, dr, "unmapping a destroyed region");
	unpinned = !dr->pins;
	pthread_mutex_unlock(&d->lock);
	if (unpinned)
		dr_free(dr);
}

/*
 * add_region, under an entry limit: the mappings the region's runs take,
 * counted before any is made, so that a region that cannot fit fails at
 * once (with make_room()'s log line) instead of after mapping part of
 * itself, which other regions' conversions would have seen as fewer free
 * entries.  Other regions may still take entries before the mapping pass.
 */
static int dma_count_runs(void *opaque, const struct cvm_range *runs, size_t n, bool last)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;
	int err = 0;

	dr->attach_need += runs_pieces(dr, runs, n);
	if (last) {
		pthread_mutex_lock(&d->lock);
		if (d->avail != UINT64_MAX)
			err = make_room(d, dr->attach_need);
		pthread_mutex_unlock(&d->lock);
		dr->attach_need = 0;
	}
	return err;
}

/* add_region failed: unmap what its earlier batches mapped, still under the
 * region's lock, so no conversion of the region finds pages it no longer
 * shares mapped by a context it is not in. */
static void dma_attach_failed(void *opaque)
{
	struct dma_region *dr = opaque;
	struct cvm_dma *d = dr->dma;

	pthread_mutex_lock(&d->lock);
	if (!dr->gone)
		drop_region(d, dr, "cleanup after a failed add_region");
	pthread_mutex_unlock(&d->lock);
}

static const struct region_dma_ops dma_listener_ops = {
	.map_runs = dma_map_runs,
	.unmap_runs = dma_unmap_runs,
	.check_map = dma_check_map,
	.precheck_map = dma_precheck_map,
	.check_unmap = dma_check_unmap,
	.settle = dma_settle,
	.region_gone = dma_region_gone,
	.count_runs = dma_count_runs,
	.attach_failed = dma_attach_failed,
};

static struct dma_region *find_region(struct cvm_dma *d, const struct cvm_region *r)
{
	for (struct dma_region *dr = d->regions; dr; dr = dr->next)
		if (dr->region == r)
			return dr;
	return NULL;
}

/* The region's IOVA window fits the backend and no other region. */
static int check_window(struct cvm_dma *d, const struct dma_region *dr)
{
	uint64_t minpg = d->be->pgsizes ? d->be->pgsizes & -d->be->pgsizes : 4096;
	uint64_t s = dr->g.iova, e = dr->g.iova + dr->g.length;
	uint64_t hva_align = minpg;

	if (d->be->kind == CVM_BACKEND_IOMMUFD)
		hva_align = min_u64(minpg, (uint64_t)sysconf(_SC_PAGESIZE));
	/* Each -EINVAL says which of its reasons: the caller's errno cannot. */
	if (!dr->g.hva) {
		cvm_err("dma: the region has no hva: there is no memory to map its pages to");
		return -EINVAL;
	}
	if (dr->g.page_size % minpg || s % minpg) {
		cvm_err("dma: the region's IOVA 0x%llx or page size %u is not a multiple of the "
			"IOMMU's smallest page, %llu bytes", (unsigned long long)s,
			dr->g.page_size, (unsigned long long)minpg);
		return -EINVAL;
	}
	/* The kernel checks the host address too, or it would refuse every
	 * map with a bare -EINVAL: type1 against the IOMMU's smallest page
	 * (vfio_dma_do_map()), iommufd only its offset in a host page
	 * (iopt_insert_area()). */
	if ((uintptr_t)dr->g.hva % hva_align) {
		cvm_err("dma: the region's hva %p is not a multiple of %llu bytes, the %s",
			dr->g.hva, (unsigned long long)hva_align,
			hva_align == minpg ? "IOMMU's smallest page" : "host page");
		return -EINVAL;
	}
	if (dr->granule != G_UNLIMITED && dr->granule < dr->g.page_size) {
		cvm_err("dma: the context's split granule, %llu bytes, is smaller than the "
			"region's pages, %u bytes", (unsigned long long)dr->granule,
			dr->g.page_size);
		return -EINVAL;
	}
	/* The mapping code works on [s, e): a window that ends at 2^64 would
	 * make e 0 and map nothing.  No IOMMU reaches that high, but an IOAS
	 * with no device yet reports every IOVA as valid. */
	if (!e) {
		cvm_err("dma: region IOVA window [0x%llx, 0xffffffffffffffff] ends at 2^64: "
			"the library maps below 2^64 - page size only", (unsigned long long)s);
		return -ERANGE;
	}
	for (const struct dma_region *o = d->regions; o; o = o->next)
		if (s < o->g.iova + o->g.length && o->g.iova < e) {
			cvm_err("dma: region IOVA window [0x%llx, 0x%llx] overlaps that of another "
				"region of the context, [0x%llx, 0x%llx]", (unsigned long long)s,
				(unsigned long long)(e - 1), (unsigned long long)o->g.iova,
				(unsigned long long)(o->g.iova + o->g.length - 1));
			return -EBUSY;
		}
	for (size_t i = 0; i < d->nfix; i++) {
		const struct fix *f = &d->fix[i];

		if (!f->dr && s < f->iova + f->len && f->iova < e) {
			cvm_err("dma: region IOVA window [0x%llx, 0x%llx] overlaps the mappings of a "
				"region that left the context and that the kernel refused to unmap "
				"(%d); cvm_dma_repair() retries", (unsigned long long)s,
				(unsigned long long)(e - 1), f->err);
			return -EBUSY;
		}
	}
	/* The same, where there was no memory to note them (d->lost). */
	if (overlaps_table(d, s, e)) {
		cvm_err("dma: region IOVA window [0x%llx, 0x%llx] holds mappings of a region "
			"that left the context and that the kernel refused to unmap",
			(unsigned long long)s, (unsigned long long)(e - 1));
		return -EBUSY;
	}
	if (!cvm_backend_iova_valid(d->be, s, dr->g.length)) {
		char list[8 * 44 + 32] = "none";
		size_t n = 0;

		/* The ranges, up to 8 (x86 reports 2: the MSI window splits them). */
		for (uint32_t i = 0; i < d->be->nranges && i < 8; i++)
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s[0x%llx, 0x%llx]",
					      i ? " " : "",
					      (unsigned long long)d->be->ranges[i].start,
					      (unsigned long long)d->be->ranges[i].last);
		if (d->be->nranges > 8)
			snprintf(list + n, sizeof(list) - n, " and %u more", d->be->nranges - 8);
		cvm_err("dma: region IOVA window [0x%llx, 0x%llx] is not inside one of the %s "
			"backend's valid IOVA ranges: %s", (unsigned long long)s,
			(unsigned long long)(e - 1), d->be->ops->name, list);
		return -ERANGE;
	}
	return 0;
}

CVM_EXPORT int cvm_dma_add_region(struct cvm_dma *d, struct cvm_region *r)
{
	struct cvm_listener *l;
	struct dma_region *dr;
	bool limited;
	int err;

	if (!d || !r)
		return -EINVAL;
	if (region_in_callback(r))
		return -EDEADLK;
	dr = cvm_calloc(1, sizeof(*dr));
	if (!dr)
		return -ENOMEM;
	dr->dma = d;
	dr->region = r;
	dr->g = *region_geom(r);
	dr->granule = (d->flags & CVM_DMA_PER_PAGE) ? dr->g.page_size : d->granule;
	/* Auto: 2 MiB without a cut, but never below the region's page. */
	if (d->auto_granule && dr->granule < dr->g.page_size)
		dr->granule = dr->g.page_size;
	pthread_mutex_lock(&d->lock);
	/* iommufd reports the real IOVA ranges only once a device is attached. */
	if (d->be->ops->refresh && d->be->ops->refresh(d->be) == 0 && d->st.mappings == 0)
		d->avail = d->be->entries_avail;
	if (d->nfix)
		repair(d);
	err = find_region(d, r) ? -EEXIST : check_window(d, dr);
	if (!err) {
		dr->next = d->regions;
		d->regions = dr;
		dr_pin(dr);		/* this call's, until the listener is in place */
	}
	limited = d->avail != UINT64_MAX;
	pthread_mutex_unlock(&d->lock);
	if (err) {
		cvm_free(dr);
		return err;
	}
	err = region_dma_attach(r, &dma_listener_ops, dr, limited, &l);
	if (!err) {
		pthread_mutex_lock(&d->lock);
		dr->listener = l;
		pthread_mutex_unlock(&d->lock);
	}
	dr_unpin(d, dr);
	return err;
}

/* Under the region's lock: let dr go (unmapping it first if unmap), unless
 * it went already. */
static int leave(struct dma_region *dr, bool unmap)
{
	int err = -ENOENT;

	pthread_mutex_lock(&dr->dma->lock);
	if (!dr->gone) {
		err = unmap ? unmap_region(dr->dma, dr, true) : 0;
		if (!err)
			unlink_region(dr->dma, dr, 0);
	}
	pthread_mutex_unlock(&dr->dma->lock);
	return err;
}

static int detach_before(void *opaque)
{
	return leave(opaque, true);
}

/* The same without the unmap: the mappings stay with the backend. */
static int forget_before(void *opaque)
{
	return leave(opaque, false);
}

/*
 * The first region of d (or of d that is r, if r is not NULL) that has its
 * listener, pinned, with that listener; NULL if none.
 */
static struct dma_region *pin_attached(struct cvm_dma *d, const struct cvm_region *r,
				       struct cvm_listener **l)
{
	struct dma_region *dr;

	pthread_mutex_lock(&d->lock);
	if (r)
		dr = find_region(d, r);
	else
		for (dr = d->regions; dr && !dr->listener; dr = dr->next)
			;
	if (dr && dr->listener) {
		*l = dr->listener;
		dr_pin(dr);
	} else {
		dr = NULL;
	}
	pthread_mutex_unlock(&d->lock);
	return dr;
}

CVM_EXPORT int cvm_dma_remove_region(struct cvm_dma *d, struct cvm_region *r)
{
	struct cvm_listener *l;
	struct dma_region *dr;
	int err;

	if (!d || !r)
		return -EINVAL;
	if (region_in_callback(r))
		return -EDEADLK;
	dr = pin_attached(d, r, &l);
	if (!dr)
		return -ENOENT;
	/* -ENOENT if another thread removed it, or destroyed r, meanwhile. */
	err = region_dma_detach(r, l, detach_before, dr);
	dr_unpin(d, dr);
	return err;
}

/* ---- open / close ---- */

#define DMA_FLAGS (CVM_DMA_PER_PAGE | CVM_DMA_NO_CUT | CVM_DMA_COMPACT)

static int open_backend(const struct cvm_dma_config *cfg, struct cvm_be **be)
{
	/* Per-page mappings are never cut: only the others probe for it. */
	bool want_cut = !(cfg->flags & (CVM_DMA_NO_CUT | CVM_DMA_PER_PAGE));
	uint32_t kind = cfg->backend;
	int err;

	if (kind == CVM_BACKEND_AUTO)
		kind = cfg->fd >= 0 && !cvm_backend_fd_is_iommufd(cfg->fd) ?
			CVM_BACKEND_TYPE1 : CVM_BACKEND_IOMMUFD;
	if (kind == CVM_BACKEND_TYPE1 && cfg->ioas_id) {
		/* A container has none: a mistake, not to be ignored. */
		cvm_err("dma: ioas_id %u names an IOAS of an iommufd, but fd %d is driven "
			"as a VFIO container (type1), which has none", cfg->ioas_id, cfg->fd);
		return -EINVAL;
	}
	switch (kind) {
	case CVM_BACKEND_MODEL:
		if (cfg->model_rules > CVM_MODEL_CUT) {
			cvm_err("dma: unknown model_rules %u", cfg->model_rules);
			return -EINVAL;
		}
		return cvm_backend_model_open(cfg->model_rules, cfg->model_entry_limit, be);
	case CVM_BACKEND_TYPE1:
		if (cfg->fd < 0) {
			/* no group: we cannot set a container up */
			cvm_err("dma: CVM_BACKEND_TYPE1 needs the VMM's container fd, its "
				"groups and IOMMU set; fd -1 is for iommufd");
			return -EINVAL;
		}
		err = cvm_backend_type1_open(cfg->fd, want_cut, be);
		break;
	case CVM_BACKEND_IOMMUFD:
		err = cvm_backend_iommufd_open(cfg->fd, cfg->ioas_id, want_cut, be);
		if (cfg->fd < 0 && (err == -ENOENT || err == -ENXIO || err == -ENODEV))
			err = -ENODEV;
		break;
	default:
		cvm_err("dma: unknown backend %u", cfg->backend);
		return -EINVAL;
	}
	/* A config zeroed whole names standard input. */
	if (err == -ENOTTY && cfg->fd == 0)
		cvm_err("dma: fd 0 (standard input) is neither a VFIO container nor /dev/iommu; %s",
			kind == CVM_BACKEND_TYPE1 ?
			"the type1 backend needs the VMM's container fd (fd -1 lets the library "
			"open /dev/iommu itself with CVM_BACKEND_IOMMUFD or CVM_BACKEND_AUTO)" :
			"fd -1 lets the library open /dev/iommu itself");
	return err;
}

static int check_dma_config(const struct cvm_dma_config *cfg)
{
	uint64_t g = cfg->split_granule;

	if (cfg->flags & ~DMA_FLAGS) {
		cvm_err("dma: unknown flags %#x", cfg->flags & ~DMA_FLAGS);
		return -EINVAL;
	}
	if (g && g != G_UNLIMITED && (!is_pow2_u64(g) || g < 4096)) {
		cvm_err("dma: split_granule %#" PRIx64 " is neither 0 (auto), UINT64_MAX "
			"(never split) nor a power of two of at least 4096", g);
		return -EINVAL;
	}
	if ((cfg->flags & CVM_DMA_PER_PAGE) && g) {
		cvm_err("dma: CVM_DMA_PER_PAGE with split_granule %#" PRIx64 ": per page is "
			"its own granule; leave split_granule 0", g);
		return -EINVAL;
	}
	if (cfg->backend != CVM_BACKEND_MODEL && (cfg->model_rules || cfg->model_entry_limit)) {
		cvm_err("dma: model_rules and model_entry_limit are for CVM_BACKEND_MODEL only");
		return -EINVAL;
	}
	/* An IOAS of an fd the library has yet to open cannot exist. */
	if (cfg->backend != CVM_BACKEND_MODEL && cfg->fd < 0 && cfg->ioas_id) {
		cvm_err("dma: ioas_id %u with fd -1: an IOAS of an fd the library has yet to "
			"open cannot exist", cfg->ioas_id);
		return -EINVAL;
	}
	/* -1 alone asks the library to open /dev/iommu: another negative fd
	 * is a mistake (an error code stored as the fd, say), not that. */
	if (cfg->backend != CVM_BACKEND_MODEL && cfg->fd < -1) {
		cvm_err("dma: fd %d: give an open fd, or -1 for the library to open its own",
			cfg->fd);
		return -EINVAL;
	}
	return 0;
}

CVM_EXPORT int cvm_dma_open(const struct cvm_dma_config *ucfg, struct cvm_dma **out)
{
	struct cvm_dma_config cfg;
	struct cvm_dma *d;
	int err;

	if (!out)
		return -EINVAL;
	err = cvm_copy_sized(&cfg, sizeof(cfg), CVM_DMA_CONFIG_HALF, ucfg,
			     offsetofend(struct cvm_dma_config, fd));
	if (err)
		return cvm_sized_err(err, "dma: struct cvm_dma_config", ucfg, sizeof(cfg),
				     offsetofend(struct cvm_dma_config, fd));
	err = check_dma_config(&cfg);
	if (err)
		return err;
	d = cvm_calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	err = maptable_create(&d->mt);
	if (!err)
		err = open_backend(&cfg, &d->be);
	if (err) {
		maptable_destroy(d->mt);
		cvm_free(d);
		return err;
	}
	d->flags = cfg.flags;
	d->use_cut = d->be->can_cut && d->be->ops->cut &&
		     !(cfg.flags & (CVM_DMA_NO_CUT | CVM_DMA_PER_PAGE));
	d->granule = cfg.split_granule ? cfg.split_granule : d->use_cut ? G_UNLIMITED : SZ_2M;
	d->auto_granule = !cfg.split_granule && !(cfg.flags & CVM_DMA_PER_PAGE);
	d->avail = d->be->entries_avail;
	d->st.sz = sizeof(d->st);
	pthread_mutex_init(&d->lock, NULL);
	if (d->flags & CVM_DMA_PER_PAGE)
		cvm_info("dma: %s backend, %s, one mapping per page", d->be->ops->name,
			 d->use_cut ? "hitless cuts" : "no hitless cut");
	else if (d->granule == G_UNLIMITED)
		cvm_info("dma: %s backend, %s, split granule unlimited", d->be->ops->name,
			 d->use_cut ? "hitless cuts" : "no hitless cut");
	else
		cvm_info("dma: %s backend, %s, split granule %llu%s", d->be->ops->name,
			 d->use_cut ? "hitless cuts" : "no hitless cut",
			 (unsigned long long)d->granule,
			 d->auto_granule ? " (or a region's page size, if larger)" : "");
	*out = d;
	return 0;
}

/* This thread is inside a callback of a region d serves. */
static bool in_callback_of(struct cvm_dma *d)
{
	bool in = false;

	pthread_mutex_lock(&d->lock);
	for (struct dma_region *dr = d->regions; dr && !in; dr = dr->next)
		in = region_in_callback(dr->region);
	pthread_mutex_unlock(&d->lock);
	return in;
}

/*
 * Closing: every region is out, but the kernel may have refused to unmap
 * some (now or earlier: repairs of regions gone).  Try each mapping left
 * once more, alone, so that a caller's container or IOAS, which outlives
 * the context, keeps none the kernel would let go; say what stays.
 */
static void sweep(struct cvm_dma *d)
{
	uint64_t pos = 0, stuck = 0;
	struct mt_entry e;

	pthread_mutex_lock(&d->lock);
	while (!maptable_lookup(d->mt, pos, &e)) {
		pos = e.iova + e.len;
		if (unmap_left(d, e.iova, pos))
			stuck++;
		if (!pos)
			break;      /* it ended at the top of the address space */
	}
	if (stuck)
		cvm_err("dma: close: the kernel refused to unmap %llu mapping%s: %s until the "
			"container or IOAS is released", (unsigned long long)stuck,
			stuck == 1 ? "" : "s", stuck == 1 ? "it stays" : "they stay");
	pthread_mutex_unlock(&d->lock);
}

CVM_EXPORT void cvm_dma_close(struct cvm_dma *d)
{
	struct cvm_listener *l;
	struct dma_region *dr;

	if (!d)
		return;
	if (in_callback_of(d)) {
		cvm_err("cvm_dma_close: refused from inside a callback of a region it serves");
		return;
	}
	while ((dr = pin_attached(d, NULL, &l))) {
		int err = region_dma_detach(dr->region, l, detach_before, dr);

		if (err && err != -ENOENT) {
			/* The kernel refused the unmap: forget the region anyway. */
			cvm_err("dma: close could not unmap a region (%d); its mappings go with "
				"the backend", err);
			region_dma_detach(dr->region, l, forget_before, dr);
		}
		dr_unpin(d, dr);
	}
	sweep(d);
	cvm_backend_destroy(d->be);
	maptable_destroy(d->mt);
	pthread_mutex_destroy(&d->lock);
	cvm_free(d->undo);
	cvm_free(d->fix);
	cvm_free(d->maybe);
	cvm_free(d);
}

CVM_EXPORT int cvm_dma_repair(struct cvm_dma *d)
{
	int err = 0;

	if (!d)
		return -EINVAL;
	if (in_callback_of(d))
		return -EDEADLK;
	pthread_mutex_lock(&d->lock);
	repair(d);
	if (d->nfix) {
		err = d->fix[0].err;
	} else {
		if (d->lost)
			err = -ENOMEM;
		for (const struct dma_region *dr = d->regions; dr && !err; dr = dr->next)
			if (dr->lost)
				err = -ENOMEM;
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* ---- stats and introspection ---- */

CVM_EXPORT int cvm_dma_stats(struct cvm_dma *d, struct cvm_dma_stats *ust)
{
	struct cvm_dma_stats st;
	int err;

	if (!d)
		return -EINVAL;
	err = cvm_copy_sized(&st, sizeof(st), 0, ust, sizeof(size_t));
	if (err)
		return err;
	pthread_mutex_lock(&d->lock);
	st = d->st;
	st.entries_avail = d->avail;
	st.pending_repairs = d->nfix + d->lost;
	for (const struct dma_region *dr = d->regions; dr; dr = dr->next)
		st.pending_repairs += dr->lost;
	pthread_mutex_unlock(&d->lock);
	cvm_copy_out(ust, &st, sizeof(st));
	return 0;
}

CVM_EXPORT int cvm_dma_info(struct cvm_dma *d, struct cvm_dma_info *uinfo)
{
	struct cvm_dma_info info;
	int err;

	if (!d)
		return -EINVAL;
	err = cvm_copy_sized(&info, sizeof(info), CVM_DMA_INFO_HALF, uinfo, sizeof(size_t));
	if (err)
		return err;
	info.backend = d->be->kind;
	info.fd = d->be->fd;
	info.ioas_id = d->be->ioas_id;
	info.can_cut = d->use_cut;
	info.split_granule = (d->flags & CVM_DMA_PER_PAGE) ? 0 : d->granule;
	pthread_mutex_lock(&d->lock);   /* an add's refresh may rewrite it */
	info.iova_pgsizes = d->be->pgsizes;
	pthread_mutex_unlock(&d->lock);
	cvm_copy_out(uinfo, &info, sizeof(info));
	return 0;
}

#define WALK_CHUNK 256

struct chunk {
	struct mt_entry e[WALK_CHUNK];
	size_t n;
};

static int chunk_fill(void *opaque, const struct mt_entry *e)
{
	struct chunk *c = opaque;

	c->e[c->n++] = *e;
	return c->n == WALK_CHUNK;
}

/* Walks in chunks so that fn never runs under the context lock: fn may
 * call anything in the library.  Not atomic against concurrent conversions. */
CVM_EXPORT int cvm_dma_for_each_mapping(struct cvm_dma *d,
					int (*fn)(void *opaque, uint64_t iova, uint64_t length),
					void *opaque)
{
	struct chunk *c;
	uint64_t pos = 0;
	bool more = true;
	int ret = 0;

	if (!d || !fn)
		return -EINVAL;
	c = cvm_malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	while (more && !ret) {
		c->n = 0;
		pthread_mutex_lock(&d->lock);
		maptable_for_each(d->mt, pos, 0, chunk_fill, c);
		pthread_mutex_unlock(&d->lock);
		more = c->n == WALK_CHUNK;
		for (size_t i = 0; i < c->n && !ret; i++) {
			ret = fn(opaque, c->e[i].iova, c->e[i].len);
			pos = c->e[i].iova + c->e[i].len;
		}
		if (more && !pos)
			break;   /* the last mapping ends at 2^64 */
	}
	cvm_free(c);
	return ret;
}

struct cvm_be *cvm_dma_backend(struct cvm_dma *d)
{
	return d->be;
}

bool cvm_dma_may_split_at(struct cvm_dma *d, uint64_t iova)
{
	bool at = false;

	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->nmaybe && !at; i++)
		at = d->maybe[i] == iova;
	pthread_mutex_unlock(&d->lock);
	return at;
}
