// SPDX-License-Identifier: MIT
/*
 * Out of memory at every allocation, on the REAL backends, inside the test
 * guest.  For each target (kernel A: the type1 container with edu
 * attached, an iommufd IOAS with and without the hitless cut, a type1
 * container with dma_entry_limit lowered for CVM_DMA_COMPACT; kernel B: the
 * iommufd compat container, with and without the cut) and each operation
 * (cvm_dma_open, cvm_dma_add_region of a fragmented region, cvm_convert and
 * cvm_convert_batch sharing runs that need several mappings and unsharing
 * into mappings, cvm_listener_add with its replay, cvm_dma_remove_region,
 * cvm_dma_repair of a double failure), allocation k = 1, 2, ... fails
 * (cvm_set_alloc_hooks) until the operation no longer reaches allocation
 * k.  After each failure:
 *   - the call returned -ENOMEM;
 *   - page state, a plain listener's net notifications, the region's
 *     listener count, cvm_dma_stats() (mappings, bytes, pending repairs)
 *     and cvm_dma_for_each_mapping() are as before the call;
 *   - the kernel maps what it mapped before (a one-page map probe at every
 *     page of the window: -EEXIST means mapped), which outside the repair
 *     case is exactly the shared pages; on type1 the kernel's entry count
 *     (DMA_AVAIL) equals the library's mapping count;
 *   - on iommufd the IOAS's HUGE_PAGES option and the fd's compat IOAS are
 *     as before (cvm_dma_open);
 *   - no fd leaked (/proc/self/fd);
 *   - the same call without a failure then works and leaves what a call
 *     that never failed leaves;
 * and after each k the whole setup, torn down, gives back every byte
 * (mallinfo2, with glibc's tcache off: the program re-executes itself
 * with GLIBC_TUNABLES set).  A call that succeeds although an allocation
 * failed must leave exactly what the reference call leaves (no silent
 * degradation, e.g. a context opened without its hitless cut).
 * cvm_dma_repair() is the exception to "changes nothing": it keeps what it
 * repaired before memory ran out (cvm_dma_repair(3): each repair is retried
 * once), so there the kernel must map exactly the library's table, which
 * may only have gained shared pages, with repairs still pending.  A case
 * that allocates nothing on a warm context (the maptable's spare nodes, the
 * undo log) gets one line: with allocation 1 armed it works as the
 * reference.
 *
 *   guest-nomem [type1|iommufd|iommufd-nocut|type1-limit|compat|compat-nocut]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "cvmdma.h"
#include "dma.h"
#include "backend.h"
#include "internal.h"
#include "guest-tap.h"
#include "guest.h"
#include "../fail-alloc.h"

#define PG	4096ull
#define NPG	1024ull			/* 4 MiB: pages 0-511 and 512-1023 are two 2 MiB blocks */
#define RAM_GPA	0x40000000ull
#define W_LO	296ull			/* the window every case works in (and probes) */
#define W_HI	816ull
#define KMAX	80			/* no operation here needs more allocations */
#define LIMIT	8			/* type1-limit: dma_entry_limit */

static uint8_t *ram_hva;
static uint64_t probe_va;

static size_t heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- the world of one iteration ---- */

struct target {
	const char *name;		/* as printed */
	struct guest_target t;
	uint32_t flags;			/* CVM_DMA_NO_CUT for the -nocut targets */
	bool limit;			/* type1-limit: singles filling the table */
	uint64_t klimit;		/* type1: the container's dma_entry_limit */
};

struct world {
	struct target *tg;
	const char *policy;
	uint32_t flags;
	struct cvm_region *r;
	struct cvm_dma *d;
	struct cvm_listener *pl, *l2;
	bool added;			/* the region is in the context */
	bool own;			/* open: IOMMUFD with fd -1 (its own fd and IOAS) */
	int net[NPG], net2[NPG];	/* plain listeners: +1 to_shared, -1 to_private */
};

static int on_shared(void *o, uint64_t gpa, uint64_t len)
{
	int *net = o;

	for (uint64_t p = (gpa - RAM_GPA) / PG; p < (gpa - RAM_GPA + len) / PG; p++)
		net[p]++;
	return 0;
}

static void on_private(void *o, uint64_t gpa, uint64_t len)
{
	int *net = o;

	for (uint64_t p = (gpa - RAM_GPA) / PG; p < (gpa - RAM_GPA + len) / PG; p++)
		net[p]--;
}

static const struct cvm_listener_ops lops = { .sz = sizeof(lops), .to_shared = on_shared,
					      .to_private = on_private };

/* ---- snapshots ---- */

struct snap {
	char runs[4096], maps[8192], info[128];
	struct cvm_dma_stats st;
	uint32_t listeners;
	int fds;
	int net[NPG], net2[NPG];
	int8_t kern[W_HI - W_LO + 2];	/* the window, then page 0 */
	int8_t tab[W_HI - W_LO + 2];	/* the same pages: in the library's table? */
	int64_t kused;			/* type1: entries the kernel holds; -1: no limit */
	int64_t huge, compat;		/* iommufd: HUGE_PAGES, compat IOAS (-errno) */
};

struct sbuf { char *p; size_t n, len; };

static int8_t *tab_of(int8_t *tab, uint64_t page)
{
	return page >= W_LO && page < W_HI ? &tab[page - W_LO] : page ? NULL : &tab[W_HI - W_LO];
}

static int mark_table(void *o, uint64_t a, uint64_t len)
{
	for (uint64_t p = (a - RAM_GPA) / PG; p < (a - RAM_GPA + len) / PG; p++) {
		int8_t *t = tab_of(o, p);

		if (t)
			*t = 1;
	}
	return 0;
}

static int put_range(void *o, uint64_t a, uint64_t len)
{
	struct sbuf *b = o;

	if (b->n < b->len)
		b->n += (size_t)snprintf(b->p + b->n, b->len - b->n, "%llu+%llu ",
					 (unsigned long long)((a - RAM_GPA) / PG),
					 (unsigned long long)(len / PG));
	return 0;
}

static int64_t ioas_huge(struct target *tg)
{
	struct iommu_option o = { .size = sizeof(o), .option_id = IOMMU_OPTION_HUGE_PAGES,
				  .op = IOMMU_OPTION_OP_GET, .object_id = tg->t.ioas };

	if (tg->t.iommufd < 0)
		return -1;
	return ioctl(tg->t.iommufd, IOMMU_OPTION, &o) ? -errno : (int64_t)o.val64;
}

static int64_t ioas_compat(struct target *tg)
{
	uint32_t id = 0;
	int ret;

	if (tg->t.iommufd < 0)
		return -1;
	ret = guest_compat_ioas(tg->t.iommufd, IOMMU_VFIO_IOAS_GET, &id);
	return ret ? ret : (int64_t)id;
}

static int probe(struct cvm_dma *d, uint64_t page)
{
	int m = guest_kernel_mapped(d, RAM_GPA + page * PG, probe_va);

	return m == -ENOSPC ? 0 : m;	/* a full type1 table refuses an unmapped page */
}

static void take(struct world *w, struct snap *s)
{
	struct sbuf b = { s->runs, 0, sizeof(s->runs) };
	struct cvm_region_stats rs = { .sz = sizeof(rs) };

	memset(s, 0, sizeof(*s));
	s->runs[0] = s->maps[0] = s->info[0] = 0;
	if (w->r) {
		cvm_region_for_each_run(w->r, RAM_GPA, NPG * PG, CVM_SHARED, put_range, &b);
		cvm_region_stats(w->r, &rs);
		s->listeners = rs.listeners;
	}
	s->kused = -1;
	if (w->d) {
		struct cvm_dma_info in = { .sz = sizeof(in) };
		struct cvm_be *be = cvm_dma_backend(w->d);

		b = (struct sbuf){ s->maps, 0, sizeof(s->maps) };
		cvm_dma_for_each_mapping(w->d, put_range, &b);
		cvm_dma_for_each_mapping(w->d, mark_table, s->tab);
		s->st.sz = sizeof(s->st);
		cvm_dma_stats(w->d, &s->st);
		cvm_dma_info(w->d, &in);
		snprintf(s->info, sizeof(s->info), "backend %u cut %u granule %llu", in.backend,
			 in.can_cut, (unsigned long long)in.split_granule);
		for (uint64_t p = W_LO; p < W_HI; p++)
			s->kern[p - W_LO] = (int8_t)probe(w->d, p);
		s->kern[W_HI - W_LO] = (int8_t)probe(w->d, 0);
		if (be->entries_avail != UINT64_MAX && be->ops->refresh && !be->ops->refresh(be))
			s->kused = (int64_t)(w->tg->klimit - be->entries_avail);
	}
	memcpy(s->net, w->net, sizeof(s->net));
	memcpy(s->net2, w->net2, sizeof(s->net2));
	s->huge = ioas_huge(w->tg);
	s->compat = ioas_compat(w->tg);
	s->fds = count_fds();
}

/* What differs between two snapshots, in words ("" if nothing). */
static void diff2(const struct snap *a, const struct snap *b, char *out, size_t len,
		  bool repairs);

static void diff(const struct snap *a, const struct snap *b, char *out, size_t len)
{
	diff2(a, b, out, len, false);
}

/* With repairs, what a repair may change (table, stats, kernel) is left
 * out: see repaired_rightly(). */
static void diff2(const struct snap *a, const struct snap *b, char *out, size_t len,
		  bool repairs)
{
	size_t n = 0;

#define SAY(...) (n += n < len ? (size_t)snprintf(out + n, len - n, __VA_ARGS__) : 0)
	out[0] = 0;
	if (strcmp(a->runs, b->runs))
		SAY("[shared runs %s-> %s]", a->runs, b->runs);
	if (!repairs && strcmp(a->maps, b->maps))
		SAY("[mappings %s-> %s]", a->maps, b->maps);
	if (strcmp(a->info, b->info))
		SAY("[info %s -> %s]", a->info, b->info);
	if (!repairs &&
	    (a->st.mappings != b->st.mappings || a->st.mapped_bytes != b->st.mapped_bytes))
		SAY("[stats.mappings %llu -> %llu]", (unsigned long long)a->st.mappings,
		    (unsigned long long)b->st.mappings);
	if (!repairs && a->st.pending_repairs != b->st.pending_repairs)
		SAY("[pending_repairs %llu -> %llu]", (unsigned long long)a->st.pending_repairs,
		    (unsigned long long)b->st.pending_repairs);
	if (a->listeners != b->listeners)
		SAY("[listeners %u -> %u]", a->listeners, b->listeners);
	if (a->fds != b->fds)
		SAY("[fds %d -> %d]", a->fds, b->fds);
	if (memcmp(a->net, b->net, sizeof(a->net)))
		SAY("[listener heard a net change]");
	if (memcmp(a->net2, b->net2, sizeof(a->net2)))
		SAY("[added listener heard a net change]");
	for (uint64_t i = 0; i < W_HI - W_LO + 1 && !repairs; i++)
		if (a->kern[i] != b->kern[i]) {
			SAY("[kernel page %llu: %d -> %d]",
			    (unsigned long long)(i < W_HI - W_LO ? W_LO + i : 0), a->kern[i],
			    b->kern[i]);
			break;
		}
	if (!repairs && a->kused != b->kused)
		SAY("[kernel entries %lld -> %lld]", (long long)a->kused, (long long)b->kused);
	if (a->huge != b->huge || a->compat != b->compat)
		SAY("[IOAS huge %lld compat %lld -> huge %lld compat %lld]", (long long)a->huge,
		    (long long)a->compat, (long long)b->huge, (long long)b->compat);
#undef SAY
}

/* Where the kernel counts its entries (type1's DMA_AVAIL), it holds as
 * many as the library's table. */
static bool entries_agree(const struct snap *s, char *why, size_t len)
{
	if (s->kused >= 0 && (uint64_t)s->kused != s->st.mappings) {
		snprintf(why, len, "[kernel holds %lld entries, library %llu]", (long long)s->kused,
			 (unsigned long long)s->st.mappings);
		return false;
	}
	return true;
}

/* The invariant when nothing is pending: the kernel maps exactly the shared
 * pages, and on type1 holds as many entries as the library's table. */
static bool kernel_is_shared(struct world *w, const struct snap *s, char *why, size_t len)
{
	why[0] = 0;
	if (!w->d)
		return true;
	for (uint64_t p = W_LO; p <= W_HI; p++) {
		uint64_t pg = p == W_HI ? 0 : p;
		int want = w->added &&
			   cvm_region_query(w->r, RAM_GPA + pg * PG, PG) == CVM_SHARED;

		if (s->kern[p - W_LO] != want) {
			snprintf(why, len, "[kernel page %llu: %d, state %d]", (unsigned long long)pg,
				 s->kern[p - W_LO], want);
			return false;
		}
	}
	return entries_agree(s, why, len);
}

/*
 * A repair that runs out of memory part way keeps what it repaired (each
 * repair is retried once, in order: cvm_dma_repair(3)); the rest stays
 * pending.  So: the kernel maps exactly the library's table, the table only
 * gained pages, and only shared ones, and some repair is still pending.
 */
static bool repaired_rightly(struct world *w, const struct snap *a, const struct snap *b,
			     char *why, size_t len)
{
	why[0] = 0;
	for (uint64_t i = 0; i < W_HI - W_LO + 1; i++) {
		uint64_t pg = i < W_HI - W_LO ? W_LO + i : 0;
		bool shared = cvm_region_query(w->r, RAM_GPA + pg * PG, PG) == CVM_SHARED;

		if (b->kern[i] != b->tab[i] || b->tab[i] < a->tab[i] || (b->tab[i] && !shared)) {
			snprintf(why, len, "[page %llu: kernel %d, table %d (before %d), shared %d]",
				 (unsigned long long)pg, b->kern[i], b->tab[i], a->tab[i], shared);
			return false;
		}
	}
	if (!b->st.pending_repairs || b->st.pending_repairs > a->st.pending_repairs) {
		snprintf(why, len, "[pending_repairs %llu -> %llu]",
			 (unsigned long long)a->st.pending_repairs,
			 (unsigned long long)b->st.pending_repairs);
		return false;
	}
	return entries_agree(b, why, len);
}

/* ---- setup ---- */

/* The fragmented shared state: eight runs, one across the 2 MiB boundary
 * (page 512), lone pages, and a long run [600,760). */
static const struct cvm_range frag[] = {
	{ RAM_GPA + 482 * PG, 3 * PG }, { RAM_GPA + 490 * PG, PG }, { RAM_GPA + 496 * PG, 4 * PG },
	{ RAM_GPA + 508 * PG, 22 * PG }, { RAM_GPA + 535 * PG, 2 * PG }, { RAM_GPA + 540 * PG, PG },
	{ RAM_GPA + 600 * PG, 160 * PG }, { RAM_GPA + 770 * PG, 10 * PG },
};
/* type1-limit: touching singles, each its own mapping: LIMIT of them. */
static const uint64_t singles[LIMIT] = { 482, 483, 490, 491, 500, 501, 540, 541 };

static int open_dma(struct world *w)
{
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1, .flags = w->flags };

	if (w->own)
		c.backend = CVM_BACKEND_IOMMUFD;
	else
		guest_target_config(&w->tg->t, &c);
	return cvm_dma_open(&c, &w->d);
}

enum { NO_DMA = 1, NO_ADD = 2 };

static int setup(struct world *w, int what)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG,
					.hva = ram_hva };
	int err;

	memset(w->net, 0, sizeof(w->net));
	memset(w->net2, 0, sizeof(w->net2));
	w->d = NULL;
	w->l2 = NULL;
	w->added = false;
	w->own = false;
	err = cvm_region_create(&rc, &w->r) ?: cvm_listener_add(w->r, &lops, w->net, 0, &w->pl);
	if (!err && !w->tg->limit)
		err = cvm_convert_batch(w->r, frag, sizeof(frag) / sizeof(frag[0]), CVM_SHARED, 0);
	if (err || (what & NO_DMA))
		return err;
	err = open_dma(w);
	if (err || (what & NO_ADD))
		return err;
	err = cvm_dma_add_region(w->d, w->r);
	w->added = !err;
	for (int i = 0; !err && w->tg->limit && i < LIMIT; i++)
		err = cvm_convert(w->r, RAM_GPA + singles[i] * PG, PG, CVM_SHARED, 0);
	return err;
}

static void teardown(struct world *w)
{
	cvm_dma_close(w->d);
	w->d = NULL;
	cvm_listener_remove(w->l2, 0);
	w->l2 = NULL;
	cvm_region_destroy(w->r);	/* and its plain listener */
	w->r = NULL;
	w->pl = NULL;
}

/* ---- a shim for the repair case (see guest-lib.c): the first `accept`
 * backend calls reach the kernel, the others fail with -EFAULT ---- */

static const struct cvm_backend_ops *shim_real;
static struct cvm_backend_ops shim_ops;
static int shim_accept;

static int shim_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	return shim_accept-- > 0 ? shim_real->map(be, iova, len, vaddr) : -EFAULT;
}

static int shim_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	*unmapped = 0;
	return shim_accept-- > 0 ? shim_real->unmap(be, iova, len, unmapped) : -EFAULT;
}

static int shim_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	*unmapped = 0;
	return shim_accept-- > 0 ? shim_real->cut(be, iova, len, unmapped) : -EFAULT;
}

/* An unshare whose first kernel call (per page: the 100 mappings of
 * [600,700) in one call) works and whose others, its undo included, are
 * refused: shared pages left unmapped, repairs pending. */
static int make_pending(struct world *w)
{
	static const struct cvm_range two[2] = { { RAM_GPA + 600 * PG, 100 * PG },
						 { RAM_GPA + 770 * PG, 10 * PG } };
	struct cvm_be *be = cvm_dma_backend(w->d);
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	int err;

	shim_real = be->ops;
	shim_ops = *be->ops;
	shim_ops.map = shim_map;
	shim_ops.unmap = shim_unmap;
	shim_ops.cut = be->ops->cut ? shim_cut : NULL;
	shim_accept = 1;
	be->ops = &shim_ops;
	err = cvm_convert_batch(w->r, two, 2, CVM_PRIVATE, 0);
	be->ops = shim_real;
	cvm_dma_stats(w->d, &st);
	/* What the next share could repair first: the unshare is done now. */
	return err == -EFAULT && st.pending_repairs ? 0 : -EPROTO;
}

/* ---- the operations ---- */

static int op_open(struct world *w) { return open_dma(w); }

static int op_open_own(struct world *w)
{
	w->own = true;
	return open_dma(w);
}
static int op_add(struct world *w)
{
	int err = cvm_dma_add_region(w->d, w->r);

	w->added = !err;
	return err;
}

static int op_remove(struct world *w)
{
	int err = cvm_dma_remove_region(w->d, w->r);

	w->added = err != 0;
	return err;
}
static int op_repair(struct world *w) { return cvm_dma_repair(w->d); }

static int op_listener(struct world *w)
{
	return cvm_listener_add(w->r, &lops, w->net2, 0, &w->l2);
}

/* Joins [496,500) and [508,530) across the 2 MiB boundary at 512. */
static int op_share(struct world *w)
{
	return cvm_convert(w->r, RAM_GPA + 485 * PG, 23 * PG, CVM_SHARED, 0);
}

/* Into the middle of the run [508,530): a cut, or a split. */
static int op_unshare(struct world *w)
{
	return cvm_convert(w->r, RAM_GPA + 510 * PG, 3 * PG, CVM_PRIVATE, 0);
}

static int op_batch_share(struct world *w)
{
	static const struct cvm_range rs[] = {
		{ RAM_GPA + 545 * PG, 3 * PG }, { RAM_GPA + 486 * PG, 3 * PG },
		{ RAM_GPA + 500 * PG, 6 * PG }, { RAM_GPA + 503 * PG, 5 * PG },
		{ RAM_GPA + 530 * PG, 2 * PG },
	};

	return cvm_convert_batch(w->r, rs, sizeof(rs) / sizeof(rs[0]), CVM_SHARED, 0);
}

static int op_batch_unshare(struct world *w)
{
	static const struct cvm_range rs[] = {
		{ RAM_GPA + 483 * PG, PG }, { RAM_GPA + 497 * PG, 2 * PG },
		{ RAM_GPA + 511 * PG, 2 * PG }, { RAM_GPA + 520 * PG, PG },
		{ RAM_GPA + 528 * PG, 2 * PG }, { RAM_GPA + 540 * PG, PG },
	};

	return cvm_convert_batch(w->r, rs, sizeof(rs) / sizeof(rs[0]), CVM_PRIVATE, 0);
}

/* 400 pages across the 2 MiB boundary, joining four runs: per page, 400
 * mappings (the table and the undo log grow). */
static int op_share_big(struct world *w)
{
	return cvm_convert(w->r, RAM_GPA + 300 * PG, 400 * PG, CVM_SHARED, 0);
}

/* 48 lone pages (and a longer list than the call keeps on its stack). */
static int op_batch_share_lone(struct world *w)
{
	struct cvm_range rs[48];

	for (int i = 0; i < 48; i++)
		rs[i] = (struct cvm_range){ RAM_GPA + (300 + 4 * i) * PG, PG };
	return cvm_convert_batch(w->r, rs, 48, CVM_SHARED, 0);
}

/* 40 holes in the run [600,760): 41 pieces. */
static int op_batch_unshare_many(struct world *w)
{
	struct cvm_range rs[40];

	for (int i = 0; i < 40; i++)
		rs[i] = (struct cvm_range){ RAM_GPA + (601 + 4 * i) * PG, 2 * PG };
	return cvm_convert_batch(w->r, rs, 40, CVM_PRIVATE, 0);
}

/* type1-limit: the table is full; a lone page needs a merge of a pair. */
static int op_compact_one(struct world *w)
{
	return cvm_convert(w->r, RAM_GPA + 545 * PG, PG, CVM_SHARED, 0);
}

/* Three lone pages: three merges. */
static int op_compact_batch(struct world *w)
{
	static const struct cvm_range rs[] = {
		{ RAM_GPA + 545 * PG, PG }, { RAM_GPA + 520 * PG, PG }, { RAM_GPA + 530 * PG, PG },
	};

	return cvm_convert_batch(w->r, rs, 3, CVM_SHARED, 0);
}

struct op {
	const char *name;
	int (*fn)(struct world *w);
	int what;			/* NO_DMA, NO_ADD */
	bool pending;			/* make_pending() first */
};

static const struct op ops_all[] = {
	{ "cvm_dma_open", op_open, NO_DMA, false },
	{ "cvm_dma_open (IOMMUFD, fd -1: its own /dev/iommu fd and IOAS)", op_open_own, NO_DMA,
	  false },
	{ "cvm_dma_add_region (eight shared runs)", op_add, NO_ADD, false },
	{ "cvm_convert share (a run that joins two, across 2 MiB)", op_share, 0, false },
	{ "cvm_convert unshare (into a mapping)", op_unshare, 0, false },
	{ "cvm_convert_batch share (5 overlapping ranges)", op_batch_share, 0, false },
	{ "cvm_convert_batch unshare (6 holes)", op_batch_unshare, 0, false },
	{ "cvm_convert share (400 pages, joins four runs)", op_share_big, 0, false },
	{ "cvm_convert_batch share (48 lone pages)", op_batch_share_lone, 0, false },
	{ "cvm_convert_batch unshare (40 holes in one run)", op_batch_unshare_many, 0, false },
	{ "cvm_listener_add with replay", op_listener, 0, false },
	{ "cvm_dma_remove_region", op_remove, 0, false },
	{ "cvm_dma_repair (an unshare and its undo refused)", op_repair, 0, true },
};

static const struct op ops_limit[] = {
	{ "cvm_convert share at the limit (one merge)", op_compact_one, 0, false },
	{ "cvm_convert_batch share at the limit (three merges)", op_compact_batch, 0, false },
};

/* ---- the sweep ---- */

static void sweep(struct target *tg, const char *policy, uint32_t flags, const struct op *op)
{
	struct world w = { .tg = tg, .policy = policy, .flags = flags | tg->flags };
	struct snap before, after, ref, again;
	char why[1024], why2[512];
	bool enomem_ok = true, same_ok = true, retry_ok = true, leak_ok = true, setup_ok = true;
	int k, err = -ENOMEM, failures = 0;

	/* The reference: the call without a failure. */
	if (setup(&w, op->what) || (op->pending && make_pending(&w))) {
		tap_ok(false, "%s/%s: %s: setup", tg->name, policy, op->name);
		teardown(&w);
		return;
	}
	err = op->fn(&w);
	take(&w, &ref);
	if (!tap_ok(!err && kernel_is_shared(&w, &ref, why, sizeof(why)),
		    "%s/%s: %s: the call without a failure works (%d) %s", tg->name, policy,
		    op->name, err, why)) {
		teardown(&w);
		return;
	}
	teardown(&w);

	for (k = 1; k <= KMAX; k++) {
		size_t heap0 = heap_used();
		bool reached;

		if (setup(&w, op->what) || (op->pending && make_pending(&w))) {
			setup_ok = false;
			teardown(&w);
			break;
		}
		take(&w, &before);
		if (!op->pending && !kernel_is_shared(&w, &before, why, sizeof(why))) {
			tap_diag("%s/%s: %s: k %d: before the call %s", tg->name, policy, op->name, k,
				 why);
			setup_ok = false;
		}
		fail_alloc_arm(k);
		err = op->fn(&w);
		fail_alloc_disarm();
		reached = fail_alloc_left == 0;
		take(&w, &after);
		if (!reached) {
			/* Allocation k was never tried: the sweep is through. */
			diff(&ref, &after, why, sizeof(why));
			if (err || why[0]) {
				tap_diag("%s/%s: %s: k %d (no failure): %d %s", tg->name, policy,
					 op->name, k, err, why);
				retry_ok = false;
			}
			teardown(&w);
			break;
		}
		failures++;
		if (err == 0) {
			/* It got by without allocation k: fine if it did the same. */
			diff(&ref, &after, why, sizeof(why));
			if (why[0] || !kernel_is_shared(&w, &after, why2, sizeof(why2))) {
				tap_diag("%s/%s: %s: allocation %d failed, the call succeeded but "
					 "differs from the reference: %s%s", tg->name, policy,
					 op->name, k, why, why2);
				same_ok = false;
			}
		} else {
			if (err != -ENOMEM) {
				tap_diag("%s/%s: %s: allocation %d failed: returned %d (%s)", tg->name,
					 policy, op->name, k, err, strerror(-err));
				enomem_ok = false;
			}
			diff2(&before, &after, why, sizeof(why), op->pending);
			why2[0] = 0;
			if (!op->pending)
				kernel_is_shared(&w, &after, why2, sizeof(why2));
			else
				repaired_rightly(&w, &before, &after, why2, sizeof(why2));
			if (why[0] || why2[0]) {
				tap_diag("%s/%s: %s: allocation %d failed (%d) and changed: %s%s",
					 tg->name, policy, op->name, k, err, why, why2);
				same_ok = false;
			}
			/* The same call again, without a failure. */
			if ((op->fn == op_open || op->fn == op_open_own) && w.d) {
				tap_diag("%s/%s: %s: allocation %d failed but *out was set",
					 tg->name, policy, op->name, k);
				same_ok = false;
				w.d = NULL;
			}
			err = op->fn(&w);
			take(&w, &again);
			diff(&ref, &again, why, sizeof(why));
			if (err || why[0] || !kernel_is_shared(&w, &again, why2, sizeof(why2))) {
				tap_diag("%s/%s: %s: after allocation %d failed, the retry: %d %s%s",
					 tg->name, policy, op->name, k, err, why, err ? "" : why2);
				retry_ok = false;
			}
		}
		teardown(&w);
		if (heap_used() != heap0) {
			tap_diag("%s/%s: %s: allocation %d failed: %zd bytes not given back",
				 tg->name, policy, op->name, k, (ssize_t)(heap_used() - heap0));
			leak_ok = false;
		}
	}
	if (setup_ok && failures == 0 && k == 1) {
		/* Nothing to fail here: one line, that it works with the hook armed. */
		tap_ok(retry_ok && leak_ok, "%s/%s: %s: allocates nothing (the warm context has "
		       "room): with allocation 1 armed to fail it works as the reference",
		       tg->name, policy, op->name);
		return;
	}
	tap_ok(setup_ok && k <= KMAX && enomem_ok,
	       "%s/%s: %s: each of its %d allocations failing makes it return -ENOMEM",
	       tg->name, policy, op->name, failures);
	if (op->pending)
		tap_ok(setup_ok && same_ok,
		       "%s/%s: %s: a failure keeps what it repaired, the rest pending: the kernel "
		       "maps exactly the table, which only gained shared pages; state, listeners, "
		       "fds unchanged", tg->name, policy, op->name);
	else
		tap_ok(setup_ok && same_ok,
		       "%s/%s: %s: a failure changes nothing (state, listeners, table, stats, "
		       "kernel, fds%s)", tg->name, policy, op->name,
		       tg->t.iommufd >= 0 ? ", IOAS options" : "");
	tap_ok(setup_ok && retry_ok && leak_ok,
	       "%s/%s: %s: the call again works and leaves what the reference left; nothing "
	       "leaks", tg->name, policy, op->name);
}

/* ---- targets ---- */

static uint64_t read_limit(void)
{
	FILE *f = fopen("/sys/module/vfio_iommu_type1/parameters/dma_entry_limit", "r");
	unsigned long long v = 0;

	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static void run_target(const char *name)
{
	struct target tg = { .name = name };
	const char *kind = name;
	unsigned old = 0;
	int err;

	if (!strcmp(name, "iommufd-nocut")) {
		kind = "iommufd";
		tg.flags = CVM_DMA_NO_CUT;
	} else if (!strcmp(name, "compat-nocut")) {
		kind = "compat";
		tg.flags = CVM_DMA_NO_CUT;
	} else if (!strcmp(name, "type1-limit")) {
		kind = "type1";
		tg.limit = true;
		err = guest_set_dma_entry_limit(LIMIT, &old);
		if (!tap_ok(!err, "%s: lower dma_entry_limit to %d (%d)", name, LIMIT, err))
			return;
	}
	tg.klimit = read_limit();
	err = guest_target_open(&tg.t, kind);
	if (tg.limit)
		guest_set_dma_entry_limit(old, NULL);
	if (!tap_ok(!err, "%s: open the edu device (%s)", name, strerror(-err))) {
		guest_target_close(&tg.t);
		return;
	}
	if (tg.limit) {
		for (size_t i = 0; i < sizeof(ops_limit) / sizeof(ops_limit[0]); i++)
			sweep(&tg, "compact", CVM_DMA_COMPACT, &ops_limit[i]);
	} else {
		/* The library's own /dev/iommu: once per kernel. */
		bool own = !tg.flags && (!strcmp(name, "iommufd") || !strcmp(name, "compat"));

		for (size_t i = 0; i < sizeof(ops_all) / sizeof(ops_all[0]); i++)
			if (ops_all[i].fn != op_open_own || own)
				sweep(&tg, "auto", 0, &ops_all[i]);
		if (!tg.flags)
			for (size_t i = 0; i < sizeof(ops_all) / sizeof(ops_all[0]); i++)
				if (ops_all[i].fn != op_open_own)
					sweep(&tg, "per-page", CVM_DMA_PER_PAGE, &ops_all[i]);
	}
	guest_target_close(&tg.t);
}

int main(int argc, char **argv)
{
	int st;

	if (argc > 2) {
		fprintf(stderr, "usage: %s [type1|iommufd|iommufd-nocut|type1-limit|compat|"
			"compat-nocut]\n", argv[0]);
		return 2;
	}
	/* glibc's tcache keeps freed chunks counted as in use: off, so that
	 * mallinfo2() sees every byte given back. */
	if (!getenv("CVM_NOMEM_REEXEC")) {
		setenv("CVM_NOMEM_REEXEC", "1", 1);
		setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
		execv("/proc/self/exe", argv);
		perror("execv");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!tap_need_edu(&st))
		return st;
	ram_hva = mmap(NULL, (NPG + 1) * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram_hva == MAP_FAILED)
		return 1;
	memset(ram_hva, 0, (NPG + 1) * PG);
	probe_va = (uint64_t)(uintptr_t)(ram_hva + NPG * PG);
	tap_diag("fd count at start %d", count_fds());
	if (argc == 2) {
		run_target(argv[1]);
	} else if (guest_kernel_a()) {
		run_target("type1");           /* kernel A */
		run_target("iommufd");
		run_target("iommufd-nocut");
		run_target("type1-limit");
	} else {
		run_target("compat");          /* kernel B */
		run_target("compat-nocut");
	}
	return tap_done();
}
