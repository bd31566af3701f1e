// SPDX-License-Identifier: MIT
/*
 * The library on a real kernel, inside the test guest: random conversions
 * through the public API with each mapping policy, and after every step
 *   - the kernel agrees with the library's mapping table: a one-page map at
 *     a sampled IOVA fails with -EEXIST exactly where the library says it
 *     mapped (sampled at run edges and at random), and on type1 the number
 *     of entries used (DMA_AVAIL) equals the library's mapping count;
 *   - QEMU's edu device reaches sampled shared pages (a DMA round trip
 *     carries a pattern) and does not reach sampled private ones (it reads
 *     zeros, its writes do not land, and the IOMMU logs a fault).
 * Then the hitless check: DMA on both neighbours of a page before and after
 * that page goes private.
 *
 *   guest-lib [type1|iommufd|compat]
 * Without an argument it runs what the running kernel has: type1 and
 * iommufd on kernel A (legacy container present), the compat container
 * (iommufd's /dev/vfio/vfio with type1 v1 semantics: it cuts) on kernel B.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "cvmdma.h"
#include "dma.h"
#include "guest-tap.h"
#include "guest.h"

#define PG      4096ull
#define RAM_GPA 0x40000000ull      /* 1 GiB */
#define RAM_PG  4096ull            /* 16 MiB of guest RAM under test */
#define BOUNCE_GPA 0x80000000ull   /* 2 GiB: an always-shared page pair for round trips */
#define STEPS   24
#define DMA_LEN 2048

struct world {
	struct guest_target *t;
	struct cvm_dma *dma;
	struct cvm_region *ram, *bounce;
	uint8_t *ram_hva, *bounce_hva;
	uint8_t state[RAM_PG];       /* oracle: 1 = shared */
	const char *policy;
	uint64_t probe_buf;          /* a spare page used as vaddr for probe maps */
	unsigned seed;
	int dmas;
	int faults_checked;          /* fault log lines are rate-limited: count a few */
};

/* ---- kernel probes ---- */

/* Is iova mapped in the kernel?  1, 0 or -errno. */
static int kernel_mapped(struct world *w, uint64_t iova)
{
	return guest_kernel_mapped(w->dma, iova, w->probe_buf);
}

struct count { uint64_t n; };
static int count_fn(void *o, uint64_t iova, uint64_t len) { (void)iova; (void)len; ((struct count *)o)->n++; return 0; }

/* Entries in use before the context mapped anything: the kernel's limit
 * less what it has left, plus what the context holds (0: no limit). */
static uint64_t entries_used(struct world *w)
{
	struct count c = { 0 };

	if (cvm_dma_backend(w->dma)->entries_avail == UINT64_MAX)
		return 0;
	cvm_dma_for_each_mapping(w->dma, count_fn, &c);
	return cvm_dma_backend(w->dma)->entries_avail + c.n;
}

static bool check_kernel(struct world *w, uint64_t used_at_open)
{
	struct cvm_be *be = cvm_dma_backend(w->dma);
	struct count c = { 0 };
	bool ok = true;

	for (int k = 0; k < 48 && ok; k++) {
		uint64_t p = rand_r(&w->seed) % RAM_PG;

		/* Bias towards run edges: the interesting places. */
		if (k % 2) {
			while (p + 1 < RAM_PG && w->state[p] == w->state[p + 1])
				p++;
			p += rand_r(&w->seed) % 2 && p + 1 < RAM_PG;
		}
		int m = kernel_mapped(w, RAM_GPA + p * PG);
		if (m != w->state[p]) {
			printf("# %s/%s: page %llu: kernel says %d, state %d\n", w->t->name, w->policy,
			       (unsigned long long)p, m, w->state[p]);
			ok = false;
		}
	}
	if (ok && be->entries_avail != UINT64_MAX && be->ops->refresh) {
		cvm_dma_for_each_mapping(w->dma, count_fn, &c);
		be->ops->refresh(be);
		if (used_at_open - be->entries_avail != c.n) {
			printf("# %s/%s: kernel holds %llu entries, the library %llu\n", w->t->name,
			       w->policy, (unsigned long long)(used_at_open - be->entries_avail),
			       (unsigned long long)c.n);
			ok = false;
		}
	}
	return ok;
}

/* ---- DMA probes ---- */

static void fill(uint8_t *p, uint8_t seed)
{
	for (size_t i = 0; i < DMA_LEN; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* A shared page: RAM page -> edu -> bounce carries the pattern. */
static bool dma_reaches(struct world *w, uint64_t page)
{
	uint8_t *src = w->ram_hva + page * PG, *dst = w->bounce_hva;
	uint8_t want[DMA_LEN];

	fill(src, (uint8_t)page);
	memcpy(want, src, DMA_LEN);
	memset(dst, 0x5a, DMA_LEN);
	w->dmas += 2;
	if (edu_roundtrip(&w->t->edu, RAM_GPA + page * PG, BOUNCE_GPA, DMA_LEN))
		return false;
	if (memcmp(dst, want, DMA_LEN))
		return false;
	/* And the device can write it: bounce -> edu -> RAM page lands. */
	fill(w->bounce_hva + PG, (uint8_t)(page ^ 0xa5));
	memset(src, 0x11, DMA_LEN);
	w->dmas += 2;
	if (edu_roundtrip(&w->t->edu, BOUNCE_GPA + PG, RAM_GPA + page * PG, DMA_LEN))
		return false;
	return memcmp(src, w->bounce_hva + PG, DMA_LEN) == 0;
}

/*
 * The IOMMU logs a fault for a DMA to a private page.  Under TCG QEMU's
 * vIOMMU drops a fault that arrives while the previous one is still being
 * recorded ("compression of faults") and the kernel rate-limits the log, so
 * one faulting read is retried, after the rate-limit window, up to 3 times.
 */
static bool fault_logged(struct world *w, uint64_t page)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		int before;

		guest_wait_dmar_ratelimit();
		before = guest_dmesg_count("DMAR: [DMA");
		w->dmas++;
		if (edu_dma(&w->t->edu, RAM_GPA + page * PG, false, 64))
			return false;
		/* The fault interrupt's log line: up to 2 s on a busy host. */
		for (int i = 0; i < 100; i++) {
			if (guest_dmesg_count("DMAR: [DMA") > before)
				return true;
			usleep(20 * 1000);
		}
	}
	return false;
}

/* A private page: reading it yields zeros, writing it does not land, and
 * (when count_faults) the IOMMU logs the fault. */
static bool dma_blocked(struct world *w, uint64_t page, bool count_faults)
{
	uint8_t *p = w->ram_hva + page * PG, *bounce = w->bounce_hva;
	bool ok = true;

	fill(p, 0x33);
	memset(bounce, 0x5a, DMA_LEN);
	w->dmas += 2;
	if (edu_roundtrip(&w->t->edu, RAM_GPA + page * PG, BOUNCE_GPA, DMA_LEN))
		return false;
	for (size_t i = 0; i < DMA_LEN; i++)
		ok &= bounce[i] == 0;      /* the device read zeros */
	/* Now write the pattern from the bounce page into the private page. */
	fill(bounce + PG, 0x77);
	memset(p, 0x11, DMA_LEN);
	w->dmas += 2;
	if (edu_roundtrip(&w->t->edu, BOUNCE_GPA + PG, RAM_GPA + page * PG, DMA_LEN))
		return false;
	for (size_t i = 0; i < DMA_LEN; i++)
		ok &= p[i] == 0x11;        /* nothing landed */
	if (count_faults)
		ok &= fault_logged(w, page);
	return ok;
}

/* ---- the random run ---- */

static uint64_t pick_page(struct world *w, uint8_t want)
{
	for (int tries = 0; tries < 64; tries++) {
		uint64_t p = rand_r(&w->seed) % RAM_PG;

		if (w->state[p] == want)
			return p;
	}
	return UINT64_MAX;
}

/* The guest RAM region (all private) and the bounce pages (shared), served
 * by a new context with this policy on the target's container or IOAS. */
static int world_open(struct world *w, const char *policy, uint32_t flags, uint64_t granule)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RAM_PG * PG,
					.hva = w->ram_hva };
	struct cvm_region_config bc = { .sz = sizeof(bc), .gpa = BOUNCE_GPA, .length = 2 * PG,
					.flags = CVM_REGION_INIT_SHARED, .hva = w->bounce_hva };
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1, .flags = flags,
				    .split_granule = granule };
	int err;

	w->policy = policy;
	w->dma = NULL;
	w->ram = w->bounce = NULL;
	memset(w->state, 0, sizeof(w->state));
	guest_target_config(w->t, &c);
	err = cvm_region_create(&rc, &w->ram) ?: cvm_region_create(&bc, &w->bounce) ?:
	      cvm_dma_open(&c, &w->dma);
	if (!err)
		err = cvm_dma_add_region(w->dma, w->bounce);
	if (!err)
		err = cvm_dma_add_region(w->dma, w->ram);
	return err;
}

static void world_close(struct world *w)
{
	cvm_dma_close(w->dma);
	w->dma = NULL;
	cvm_region_destroy(w->ram);
	cvm_region_destroy(w->bounce);
}

/* Take the RAM region out of the context: nothing of it stays mapped; put
 * it back: the replay maps its fragmented shared set exactly again. */
static void remove_and_add(struct world *w, uint64_t used_at_open)
{
	static uint8_t saved[RAM_PG];
	uint64_t s = pick_page(w, 1);
	bool gone, back;
	int err;

	memcpy(saved, w->state, sizeof(saved));
	err = cvm_dma_remove_region(w->dma, w->ram);
	memset(w->state, 0, sizeof(w->state));
	gone = !err && check_kernel(w, used_at_open) && (s == UINT64_MAX || dma_blocked(w, s, false));
	memcpy(w->state, saved, sizeof(saved));
	err = err ?: cvm_dma_add_region(w->dma, w->ram);
	back = !err && check_kernel(w, used_at_open) && (s == UINT64_MAX || dma_reaches(w, s));
	tap_ok(gone && back, "%s/%s: removed from the context the region has nothing mapped; added "
	       "back, its shared runs are mapped exactly again (%d)", w->t->name, w->policy, err);
}

static void run_policy(struct world *w, const char *policy, uint32_t flags, uint64_t granule)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	uint64_t used_at_open;
	bool kern_ok = true, reach_ok = true, block_ok = true;
	int err;

	err = world_open(w, policy, flags, granule);
	if (!tap_ok(!err, "%s/%s: cvm_dma_open + add_region (%d)", w->t->name, policy, err))
		goto out;
	used_at_open = entries_used(w);
	for (int step = 0; step < STEPS; step++) {
		struct cvm_range rs[3];
		int n = 1 + rand_r(&w->seed) % 3, to = step < 4 || rand_r(&w->seed) % 2;

		for (int k = 0; k < n; k++) {
			uint64_t s = rand_r(&w->seed) % RAM_PG;
			uint64_t len = 1 + rand_r(&w->seed) % (rand_r(&w->seed) % 3 ? 16 : 1024);

			if (s + len > RAM_PG)
				len = RAM_PG - s;
			rs[k] = (struct cvm_range){ RAM_GPA + s * PG, len * PG };
			memset(w->state + s, to, len);
		}
		err = cvm_convert_batch(w->ram, rs, (size_t)n, to ? CVM_SHARED : CVM_PRIVATE, 0);
		if (err) {
			tap_ok(false, "%s/%s: step %d convert (%d)", w->t->name, policy, step, err);
			goto out;
		}
		kern_ok &= check_kernel(w, used_at_open);
		if (step % 4 == 3) {
			uint64_t s = pick_page(w, 1), p = pick_page(w, 0);

			if (s != UINT64_MAX)
				reach_ok &= dma_reaches(w, s);
			if (p != UINT64_MAX) {
				block_ok &= dma_blocked(w, p, w->faults_checked < 2);
				w->faults_checked++;
			}
		}
	}
	tap_ok(kern_ok, "%s/%s: after each of %d random conversions the kernel maps exactly the "
	       "library's table", w->t->name, policy, STEPS);
	tap_ok(reach_ok, "%s/%s: edu DMA reaches sampled shared pages", w->t->name, policy);
	tap_ok(block_ok, "%s/%s: edu DMA cannot read or write sampled private pages (DMAR faults "
	       "logged)", w->t->name, policy);
	remove_and_add(w, used_at_open);
	cvm_dma_stats(w->dma, &st);
	printf("# %s/%s: mappings %llu (peak %llu), map %llu unmap %llu cut %llu, disruptive %llu\n",
	       w->t->name, policy, (unsigned long long)st.mappings,
	       (unsigned long long)st.mappings_peak, (unsigned long long)st.map_calls,
	       (unsigned long long)st.unmap_calls, (unsigned long long)st.cut_calls,
	       (unsigned long long)st.disruptive_splits);
out:
	world_close(w);
}

/* Three holes in one call, inside the mapping [101, 512) that the first
 * hole left: each a cut, or else one unmap and each page that stays
 * shared mapped again once. */
static void run_holes(struct world *w, const struct cvm_dma_stats *was, bool can_cut)
{
	struct cvm_range rs[3];
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	bool reach, blocked;
	int err;

	for (int i = 0; i < 3; i++)
		rs[i] = (struct cvm_range){ RAM_GPA + (200 + 100 * (uint64_t)i) * PG, PG };
	err = cvm_convert_batch(w->ram, rs, 3, CVM_PRIVATE, 0);
	cvm_dma_stats(w->dma, &st);
	reach = dma_reaches(w, 199) && dma_reaches(w, 201) && dma_reaches(w, 399) &&
		dma_reaches(w, 511);
	blocked = dma_blocked(w, 300, false);
	tap_ok(!err && reach && blocked,
	       "%s: three holes in one batch: their neighbours stay DMA-reachable, a hole is "
	       "not (%d)", w->t->name, err);
	if (can_cut)
		tap_ok(st.cut_calls - was->cut_calls == 3 &&
		       st.disruptive_splits == was->disruptive_splits,
		       "%s: the three holes are three cuts, nothing disrupted (cut %llu)",
		       w->t->name, (unsigned long long)(st.cut_calls - was->cut_calls));
	else
		tap_ok(st.unmap_calls - was->unmap_calls == 1 &&
		       st.map_calls - was->map_calls == 4 &&
		       st.disruptive_splits - was->disruptive_splits == 1 &&
		       st.disrupted_bytes - was->disrupted_bytes == 408 * PG,
		       "%s: no cut: the three holes take one unmap and four maps, and each page "
		       "that stays shared is mapped again once (unmap %llu, map %llu, %llu bytes)",
		       w->t->name, (unsigned long long)(st.unmap_calls - was->unmap_calls),
		       (unsigned long long)(st.map_calls - was->map_calls),
		       (unsigned long long)(st.disrupted_bytes - was->disrupted_bytes));
}

/* Both neighbours of a page stay DMA-reachable across its conversion. */
static void run_hitless(struct world *w)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	bool before, after, hole;

	if (world_open(w, "auto", 0, 0) || cvm_convert(w->ram, RAM_GPA, 512 * PG, CVM_SHARED, 0)) {
		tap_ok(false, "%s: hitless setup", w->t->name);
		goto out;
	}
	cvm_dma_info(w->dma, &info);
	before = dma_reaches(w, 99) && dma_reaches(w, 101) && dma_reaches(w, 0) &&
		 dma_reaches(w, 511);
	cvm_convert(w->ram, RAM_GPA + 100 * PG, PG, CVM_PRIVATE, 0);
	after = dma_reaches(w, 99) && dma_reaches(w, 101) && dma_reaches(w, 0) &&
		dma_reaches(w, 511);
	hole = dma_blocked(w, 100, true);
	cvm_dma_stats(w->dma, &st);
	tap_ok(before && after && hole, "%s: the neighbours and both ends of a run stay DMA-reachable "
	       "across a cut next to them, and the hole is not", w->t->name);
	if (info.can_cut)
		tap_ok(st.cut_calls == 1 && st.disruptive_splits == 0,
		       "%s: the backend cut: one cut call, nothing disrupted (cut %llu, disruptive "
		       "%llu)", w->t->name, (unsigned long long)st.cut_calls,
		       (unsigned long long)st.disruptive_splits);
	else
		tap_ok(st.disruptive_splits == 1 && st.disrupted_bytes == 2 * 1024 * 1024 - PG,
		       "%s: no cut: the disruption stays inside one 2 MiB block (%llu bytes)",
		       w->t->name, (unsigned long long)st.disrupted_bytes);
	run_holes(w, &st, info.can_cut);
out:
	world_close(w);
}

/* ---- two contexts that cut in one IOAS ---- */

/* IOMMU_OPTION_HUGE_PAGES of IOAS ioas on iommufd fd. */
static int ioas_huge(int fd, uint32_t ioas, uint64_t *val)
{
	struct iommu_option o = { .size = sizeof(o), .option_id = IOMMU_OPTION_HUGE_PAGES,
				  .op = IOMMU_OPTION_OP_GET, .object_id = ioas };

	if (ioctl(fd, IOMMU_OPTION, &o))
		return -errno;
	*val = o.val64;
	return 0;
}

static int ioas_option_huge(struct world *w, uint64_t *val)
{
	return ioas_huge(w->t->iommufd, w->t->ioas, val);
}

static int compat_ioas(struct world *w, uint32_t *id)
{
	return guest_compat_ioas(w->t->iommufd, IOMMU_VFIO_IOAS_GET, id);
}

/* A second context on the target's container or IOAS, with a small shared
 * region of its own beside the world's. */
struct side {
	struct cvm_dma *dma;
	struct cvm_region *region;
	void *hva;
};

#define SIDE_LEN (16 * PG)

static int side_open(struct world *w, struct side *sd, uint32_t flags)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0xc0000000ull,
					.length = SIDE_LEN, .flags = CVM_REGION_INIT_SHARED };
	struct cvm_dma_config c = { .sz = sizeof(c), .flags = flags };

	*sd = (struct side){ .hva = mmap(NULL, SIDE_LEN, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) };
	if (sd->hva == MAP_FAILED)
		return -ENOMEM;
	rc.hva = sd->hva;
	guest_target_config(w->t, &c);
	return cvm_region_create(&rc, &sd->region) ?: cvm_dma_open(&c, &sd->dma) ?:
	       cvm_dma_add_region(sd->dma, sd->region);
}

static void side_close(struct side *sd)
{
	cvm_dma_close(sd->dma);
	cvm_region_destroy(sd->region);
	if (sd->hva != MAP_FAILED)
		munmap(sd->hva, SIDE_LEN);
	sd->dma = NULL;
	sd->region = NULL;
	sd->hva = MAP_FAILED;
}

/*
 * A context opened first on the fd's IOAS makes the cut's changes (small
 * IOPTEs, the compat IOAS); a second one finds them.  When the first
 * closes, the second still cuts hitlessly; when the last closes, the IOAS
 * is as before: no compat IOAS, huge pages back.
 */
static void run_shared_ioas(struct world *w)
{
	struct cvm_dma_info ia = { .sz = sizeof(ia) }, ib = { .sz = sizeof(ib) };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct side first;
	uint64_t huge = 2;
	uint32_t id = 0;
	bool before, after, hole;
	int err, gerr;

	err = side_open(w, &first, 0) ?: world_open(w, "auto", 0, 0) ?:
	      cvm_convert(w->ram, RAM_GPA, 512 * PG, CVM_SHARED, 0);
	if (!tap_ok(!err, "%s: two contexts that cut in one IOAS: setup (%d)", w->t->name, err))
		goto out;
	cvm_dma_info(first.dma, &ia);
	cvm_dma_info(w->dma, &ib);
	if (!ia.can_cut || !ib.can_cut) {
		tap_skip("the IOAS does not cut", "%s: two contexts that cut in one IOAS", w->t->name);
		goto out;
	}
	before = dma_reaches(w, 99) && dma_reaches(w, 101);
	side_close(&first);
	err = cvm_convert(w->ram, RAM_GPA + 100 * PG, PG, CVM_PRIVATE, 0);
	after = dma_reaches(w, 99) && dma_reaches(w, 101) && dma_reaches(w, 0) &&
		dma_reaches(w, 511);
	hole = dma_blocked(w, 100, false);
	cvm_dma_stats(w->dma, &st);
	tap_ok(!err && before && after && hole && st.cut_calls == 1 && !st.disruptive_splits,
	       "%s: the context opened first closes; the other still cuts hitlessly in the "
	       "shared IOAS (%d, cut %llu)", w->t->name, err, (unsigned long long)st.cut_calls);
	world_close(w);
	gerr = compat_ioas(w, &id);
	err = ioas_option_huge(w, &huge);
	tap_ok(gerr == -ENODEV && !err && huge == 1,
	       "%s: when the last of them closes, the fd has no compat IOAS and the IOAS its "
	       "huge pages again (%d, %d, HUGE_PAGES %llu)", w->t->name, gerr, err,
	       (unsigned long long)huge);
	return;
out:
	side_close(&first);
	world_close(w);
}

/* The library's last message that names the fd's VFIO-compat IOAS. */
static char compat_msg[512];

static void keep_compat_msg(void *opaque, int priority, const char *msg)
{
	(void)opaque;
	(void)priority;
	if (strstr(msg, "VFIO-compat IOAS"))
		snprintf(compat_msg, sizeof(compat_msg), "%s", msg);
}

/*
 * Two IOASes of one fd that both want the cut.  The cut goes through the
 * fd's VFIO-compat IOAS, and an fd has one: the first context (on the
 * target's IOAS, the device attached) claims it; a second one, on another
 * IOAS of the same fd, opens without the cut and says why, leaves that
 * IOAS its huge pages, and maps and unmaps there as a context that cannot
 * cut (a 2 MiB granule).  The first still cuts hitlessly, and keeps the
 * compat IOAS when the second closes.
 */
static void run_two_ioas(struct world *w)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0xc0000000ull,
					.length = SIDE_LEN, .flags = CVM_REGION_INIT_SHARED };
	struct cvm_dma_config c = { .sz = sizeof(c), .backend = CVM_BACKEND_IOMMUFD,
				    .fd = w->t->iommufd };
	struct cvm_dma_info ia = { .sz = sizeof(ia) }, ib = { .sz = sizeof(ib) };
	struct cvm_dma_stats sa = { .sz = sizeof(sa) }, sb = { .sz = sizeof(sb) };
	struct cvm_region *r2 = NULL;
	struct cvm_dma *d2 = NULL;
	void *hva = MAP_FAILED;
	uint32_t ioas2 = 0, id = 0;
	uint64_t huge = 2;
	int err, gerr, herr;
	bool reach;

	err = world_open(w, "auto", 0, 0) ?: cvm_convert(w->ram, RAM_GPA, 512 * PG, CVM_SHARED, 0) ?:
	      guest_ioas_alloc(w->t->iommufd, &ioas2);
	hva = mmap(NULL, SIDE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!err && hva == MAP_FAILED)
		err = -ENOMEM;
	if (!tap_ok(!err, "%s: two IOASes of one fd that want the cut: setup (%d)", w->t->name,
		    err))
		goto out;
	cvm_dma_info(w->dma, &ia);
	if (!ia.can_cut) {
		tap_skip("the IOAS does not cut", "%s: two IOASes of one fd that want the cut",
			 w->t->name);
		goto out;
	}
	rc.hva = hva;
	c.ioas_id = ioas2;
	compat_msg[0] = 0;
	cvm_set_log(keep_compat_msg, NULL, LOG_DEBUG);
	err = cvm_region_create(&rc, &r2) ?: cvm_dma_open(&c, &d2) ?: cvm_dma_add_region(d2, r2);
	cvm_set_log(NULL, NULL, 0);
	if (!err)
		cvm_dma_info(d2, &ib);
	herr = ioas_huge(w->t->iommufd, ioas2, &huge);
	gerr = compat_ioas(w, &id);
	tap_diag("%s: %s", w->t->name, compat_msg);
	tap_ok(!err && !ib.can_cut && ib.split_granule == 2 * 1024 * 1024 && !herr && huge == 1 &&
	       !gerr && id == w->t->ioas && strstr(compat_msg, "not ours"),
	       "%s: a second IOAS of the fd opens without the cut (can_cut %u, granule %llu), "
	       "says the compat IOAS is another's, keeps its huge pages (%llu), and the compat "
	       "IOAS stays the first's (%d, %d, %u)", w->t->name, ib.can_cut,
	       (unsigned long long)ib.split_granule, (unsigned long long)huge, err, gerr, id);
	if (err)
		goto out;
	/* The second splits its one mapping the way a context that cannot
	 * cut does; the first cuts. */
	err = cvm_convert(r2, rc.gpa + 5 * PG, PG, CVM_PRIVATE, 0);
	gerr = cvm_convert(w->ram, RAM_GPA + 100 * PG, PG, CVM_PRIVATE, 0);
	reach = dma_reaches(w, 99) && dma_reaches(w, 101) && dma_blocked(w, 100, false);
	cvm_dma_stats(d2, &sb);
	cvm_dma_stats(w->dma, &sa);
	tap_ok(!err && !gerr && sb.mappings == 2 && !sb.cut_calls && sb.disruptive_splits == 1 &&
	       sa.cut_calls == 1 && !sa.disruptive_splits && reach,
	       "%s: both convert: the second remaps around its hole (%llu mappings, %llu remaps), "
	       "the first cuts hitlessly (%llu cuts, %llu remaps, DMA around the hole %s) (%d, %d)",
	       w->t->name, (unsigned long long)sb.mappings,
	       (unsigned long long)sb.disruptive_splits, (unsigned long long)sa.cut_calls,
	       (unsigned long long)sa.disruptive_splits, reach ? "lands" : "fails", err, gerr);
	cvm_dma_close(d2);
	d2 = NULL;
	gerr = compat_ioas(w, &id);
	err = cvm_convert(w->ram, RAM_GPA + 200 * PG, PG, CVM_PRIVATE, 0);
	cvm_dma_stats(w->dma, &sa);
	tap_ok(!gerr && id == w->t->ioas && !err && sa.cut_calls == 2,
	       "%s: when the second closes, the compat IOAS is still the first's, which still "
	       "cuts (%d, %u, %d, %llu cuts)", w->t->name, gerr, id, err,
	       (unsigned long long)sa.cut_calls);
out:
	cvm_dma_close(d2);
	cvm_region_destroy(r2);
	world_close(w);
	if (ioas2) {
		struct iommu_destroy dd = { .size = sizeof(dd), .id = ioas2 };

		if (ioctl(w->t->iommufd, IOMMU_DESTROY, &dd))
			tap_diag("%s: IOMMU_DESTROY of IOAS %u: %s", w->t->name, ioas2,
				 strerror(errno));
	}
	if (hva != MAP_FAILED)
		munmap(hva, SIDE_LEN);
}

static void hung(int sig)
{
	static const char msg[] = "not ok - iommufd: a context whose HUGE_PAGES=0 was refused: "
				  "open or close hung\n";

	(void)sig;
	if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(1);
}

/*
 * An IOAS that already has mappings with a device attached refuses
 * HUGE_PAGES = 0, so a context that wants the cut opens without it.  Its
 * open and close, and those of the next context, must still return (a
 * lock left held hung them).
 */
static void run_small_pages_refused(struct world *w)
{
	struct cvm_dma_config c = { .sz = sizeof(c) };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_dma *d = NULL;
	struct side keep;
	int err, cut = -1;

	err = side_open(w, &keep, CVM_DMA_NO_CUT);
	if (!tap_ok(!err, "%s: a NO_CUT context maps in the IOAS (%d)", w->t->name, err))
		goto out;
	signal(SIGALRM, hung);
	alarm(60);
	guest_target_config(w->t, &c);
	for (int i = 0; i < 2 && !err; i++) {
		err = cvm_dma_open(&c, &d);
		if (!err) {
			cvm_dma_info(d, &info);
			cut = (int)info.can_cut;
			cvm_dma_close(d);
		}
	}
	alarm(0);
	tap_ok(!err && cut == 0, "%s: a context that wants the cut where HUGE_PAGES=0 is refused "
	       "opens without it, and it and the next one close (%d, can_cut %d)", w->t->name,
	       err, cut);
out:
	side_close(&keep);
}

/* ---- a device plugged and unplugged while the guest converts ---- */

#define HOTPLUG_OPS 150
#define HOTPLUG_ROUNDS 12

struct hotplug {
	struct world *w;
	unsigned seed;
	int err, rounds, ops;
	int stop;
};

static void *hp_converter(void *arg)
{
	struct hotplug *h = arg;
	unsigned seed = __atomic_fetch_add(&h->seed, 1, __ATOMIC_RELAXED);

	/* At least HOTPLUG_OPS conversions, and on until the device came and
	 * went HOTPLUG_ROUNDS times. */
	for (int op = 0; (op < HOTPLUG_OPS ||
			  __atomic_load_n(&h->rounds, __ATOMIC_ACQUIRE) < HOTPLUG_ROUNDS) &&
			 !__atomic_load_n(&h->err, __ATOMIC_ACQUIRE); op++) {
		uint64_t s = rand_r(&seed) % (RAM_PG - 64), len = 1 + rand_r(&seed) % 64;
		int to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;
		int err = cvm_convert(h->w->ram, RAM_GPA + s * PG, len * PG, to, 0);

		if (err)
			__atomic_store_n(&h->err, err, __ATOMIC_RELEASE);
		__atomic_add_fetch(&h->ops, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Opens a context, adds both regions, removes RAM and closes it, until
 * told to stop; the last context stays with both regions. */
static void *hp_attacher(void *arg)
{
	struct hotplug *h = arg;
	struct world *w = h->w;
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1 };
	struct cvm_dma *d;
	int err;

	guest_target_config(w->t, &c);
	for (;;) {
		err = cvm_dma_open(&c, &d) ?: cvm_dma_add_region(d, w->bounce) ?:
		      cvm_dma_add_region(d, w->ram);
		if (err) {
			__atomic_store_n(&h->err, err, __ATOMIC_RELEASE);
			return NULL;
		}
		__atomic_add_fetch(&h->rounds, 1, __ATOMIC_RELEASE);
		if (__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&w->dma, d, __ATOMIC_RELEASE);
			return NULL;
		}
		err = cvm_dma_remove_region(d, w->ram);
		cvm_dma_close(d);
		if (err) {
			__atomic_store_n(&h->err, err, __ATOMIC_RELEASE);
			return NULL;
		}
	}
}

/*
 * While two threads convert RAM at random, a third adds the device's DMA
 * context and takes it away again, over and over: each add replays the
 * shared runs of that moment into the real kernel, each remove and close
 * unmaps them.  Every call succeeds, and the context left at the end maps
 * exactly the shared pages: the kernel's table and edu DMA say so.
 */
static void run_hotplug(struct world *w)
{
	struct hotplug h = { .w = w, .seed = 99 };
	pthread_t t[3];
	uint64_t used_at_open, s, p;
	bool reach;

	if (world_open(w, "hotplug", 0, 0)) {
		tap_ok(false, "%s: hotplug setup", w->t->name);
		goto out;
	}
	used_at_open = entries_used(w);
	cvm_dma_close(w->dma);    /* the attacher opens its own */
	w->dma = NULL;
	pthread_create(&t[2], NULL, hp_attacher, &h);
	pthread_create(&t[0], NULL, hp_converter, &h);
	pthread_create(&t[1], NULL, hp_converter, &h);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	__atomic_store_n(&h.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t[2], NULL);
	if (!tap_ok(!h.err && w->dma && h.rounds > HOTPLUG_ROUNDS,
		    "%s: %d contexts added and removed while two threads made %d conversions, every "
		    "call succeeded (%d)", w->t->name, h.rounds - 1, h.ops, h.err))
		goto out;
	for (uint64_t i = 0; i < RAM_PG; i++)
		w->state[i] = cvm_region_query(w->ram, RAM_GPA + i * PG, PG) == CVM_SHARED;
	s = pick_page(w, 1);
	p = pick_page(w, 0);
	reach = (s == UINT64_MAX || dma_reaches(w, s)) && (p == UINT64_MAX || dma_blocked(w, p, false));
	tap_ok(check_kernel(w, used_at_open) && reach,
	       "%s: the context left at the end maps exactly the shared pages (kernel table, "
	       "edu DMA)", w->t->name);
out:
	world_close(w);
}

/* ---- a kernel that accepts some calls, then refuses ----
 * A real kernel will not refuse an undo on demand, so the double-failure
 * test puts this shim between the library and the real backend: the first
 * shim_accept calls from arming go to the kernel, every later one fails with
 * shim_err without reaching it, until disarmed.  What the library then
 * leaves in the kernel, and what its repair does there, is real. */
static const struct cvm_backend_ops *shim_real;
static int shim_accept, shim_err;

static bool shim_refuses(int *err)
{
	if (shim_accept-- > 0)
		return false;
	*err = shim_err;
	return true;
}

static int shim_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	int err;

	return shim_refuses(&err) ? err : shim_real->map(be, iova, len, vaddr);
}

static int shim_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	int err;

	*unmapped = 0;
	return shim_refuses(&err) ? err : shim_real->unmap(be, iova, len, unmapped);
}

static int shim_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	int err;

	*unmapped = 0;
	return shim_refuses(&err) ? err : shim_real->cut(be, iova, len, unmapped);
}

static struct cvm_backend_ops shim_ops;

static void shim_arm(struct cvm_dma *d, int accept, int err)
{
	struct cvm_be *be = cvm_dma_backend(d);

	if (!shim_real) {
		shim_real = be->ops;
		shim_ops = *be->ops;
		shim_ops.map = shim_map;
		shim_ops.unmap = shim_unmap;
		shim_ops.cut = be->ops->cut ? shim_cut : NULL;
	}
	shim_accept = accept;
	shim_err = err;
	be->ops = &shim_ops;
}

static void shim_disarm(struct cvm_dma *d)
{
	cvm_dma_backend(d)->ops = shim_real;
	shim_real = NULL;
}

static uint64_t pending(struct world *w)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	cvm_dma_stats(w->dma, &st);
	return st.pending_repairs;
}

static void set_state(struct world *w, uint64_t first, uint64_t n, uint8_t to)
{
	memset(w->state + first, to, n);
}

/*
 * Double failures on the real kernel: a conversion fails in the kernel and
 * its undo fails too, so the IOMMU is wrong until a repair.  Both kinds:
 *  - a share whose undo cannot unmap leaves private pages mapped: the
 *    device really reaches them (what pending_repairs warns of), until
 *    cvm_dma_repair() unmaps them;
 *  - an unshare whose undo cannot map back leaves shared pages unmapped:
 *    the device loses them until the next conversion repairs the mapping
 *    (where the context cuts, the refused cut's put-back is refused too,
 *    and noted as well: no call tells whether the kernel still holds it).
 * After each repair the kernel maps exactly the library's table again.
 */
static void run_double_failure(struct world *w)
{
	/* Two runs in different 2 MiB blocks: two kernel calls to share. */
	struct cvm_range two[2] = { { RAM_GPA, 16 * PG }, { RAM_GPA + 1024 * PG, 16 * PG } };
	/* Two whole blocks with a shared one between them: two calls to
	 * unshare, each a whole mapping (or a cut of one) and no split. */
	struct cvm_range blocks[2] = { { RAM_GPA, 512 * PG }, { RAM_GPA + 1024 * PG, 512 * PG } };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	uint64_t used_at_open, want;
	bool stray, gone, lost, back;
	int err, rep;

	if (world_open(w, "double-failure", 0, 0) || cvm_dma_info(w->dma, &info)) {
		tap_ok(false, "%s: double-failure setup", w->t->name);
		goto out;
	}
	used_at_open = entries_used(w);

	/* The share: the first run is mapped, the second refused, and the
	 * undo of the first refused too. */
	shim_arm(w->dma, 1, -EFAULT);
	err = cvm_convert_batch(w->ram, two, 2, CVM_SHARED, 0);
	shim_disarm(w->dma);
	stray = dma_reaches(w, 3);
	tap_ok(err == -EFAULT && pending(w) == 1 && stray,
	       "%s: a share refused with its undo refused fails (%d), leaves one repair pending "
	       "(%llu), and the device really reaches the private page still mapped", w->t->name,
	       err, (unsigned long long)pending(w));
	rep = cvm_dma_repair(w->dma);
	gone = dma_blocked(w, 3, false);
	tap_ok(rep == 0 && pending(w) == 0 && gone && check_kernel(w, used_at_open),
	       "%s: cvm_dma_repair() unmaps it (%d): the device no longer reaches it and the "
	       "kernel maps exactly the library's table", w->t->name, rep);

	/* The unshare: three blocks shared, the first and last go private;
	 * the first is unmapped, the last refused, and the first's remap
	 * refused too. */
	err = cvm_convert(w->ram, RAM_GPA, 1536 * PG, CVM_SHARED, 0);
	set_state(w, 0, 1536, 1);
	shim_arm(w->dma, 1, -EFAULT);
	err = err ?: cvm_convert_batch(w->ram, blocks, 2, CVM_PRIVATE, 0);
	shim_disarm(w->dma);
	lost = dma_blocked(w, 3, false) && dma_blocked(w, 511, false) && dma_reaches(w, 600) &&
	       dma_reaches(w, 1030);
	want = info.can_cut ? 2 : 1;
	tap_ok(err == -EFAULT && pending(w) == want && lost,
	       "%s: an unshare refused with its undo refused fails (%d), leaves %llu repair%s "
	       "pending (%llu): the shared pages it unmapped are lost to the device, the others "
	       "are not", w->t->name, err, (unsigned long long)want, want == 1 ? "" : "s",
	       (unsigned long long)pending(w));
	/* The next conversion, anywhere in the context, repairs it first. */
	err = cvm_convert(w->ram, RAM_GPA + 3000 * PG, PG, CVM_SHARED, 0);
	set_state(w, 3000, 1, 1);
	back = dma_reaches(w, 3) && dma_reaches(w, 511) && dma_reaches(w, 3000);
	tap_ok(!err && pending(w) == 0 && back && check_kernel(w, used_at_open),
	       "%s: the next conversion (%d) maps them again first: the device reaches them and "
	       "the kernel maps exactly the library's table", w->t->name, err);
out:
	world_close(w);
}

/*
 * A region leaves the context while the kernel refuses to unmap it (here
 * the shim refuses): its mappings stay in the kernel, and the device really
 * reaches those pages, so the context keeps them as a repair until the
 * kernel takes the unmap.  Both ways a region leaves without a caller to
 * tell: cvm_region_destroy(), and an add whose replay and cleanup both
 * fail.  After the repair the kernel maps exactly the library's table.
 */
static void run_region_gone(struct world *w)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RAM_PG * PG,
					.hva = w->ram_hva };
	uint64_t used_at_open;
	bool stray, gone;
	int err, rep;

	if (world_open(w, "region-gone", 0, 0)) {
		tap_ok(false, "%s: region-gone setup", w->t->name);
		goto out;
	}
	used_at_open = entries_used(w);
	err = cvm_convert(w->ram, RAM_GPA + 5 * PG, 4 * PG, CVM_SHARED, 0) ?:
	      cvm_convert(w->ram, RAM_GPA + 1500 * PG, PG, CVM_SHARED, 0);
	/* Destroyed while the kernel refuses every call. */
	shim_arm(w->dma, 0, -EFAULT);
	cvm_region_destroy(w->ram);
	w->ram = NULL;
	shim_disarm(w->dma);
	stray = dma_reaches(w, 6) && dma_reaches(w, 1500);
	tap_ok(!err && pending(w) == 1 && stray,
	       "%s: a region destroyed while the kernel refuses the unmap leaves one repair "
	       "pending (%llu): the device still reaches its shared pages", w->t->name,
	       (unsigned long long)pending(w));
	rep = cvm_dma_repair(w->dma);
	gone = dma_blocked(w, 6, false) && dma_blocked(w, 1500, false);
	tap_ok(rep == 0 && pending(w) == 0 && gone && check_kernel(w, used_at_open),
	       "%s: cvm_dma_repair() unmaps them (%d): the device no longer reaches them and "
	       "the kernel holds none of the region", w->t->name, rep);

	/* The same pages shared in a new region; its add maps the first run,
	 * the kernel refuses the second, the undo and the cleanup. */
	err = cvm_region_create(&rc, &w->ram) ?:
	      cvm_convert(w->ram, RAM_GPA + 5 * PG, 4 * PG, CVM_SHARED, 0) ?:
	      cvm_convert(w->ram, RAM_GPA + 1500 * PG, PG, CVM_SHARED, 0);
	set_state(w, 5, 4, 1);
	set_state(w, 1500, 1, 1);
	shim_arm(w->dma, 1, -EFAULT);
	err = err ?: cvm_dma_add_region(w->dma, w->ram);
	shim_disarm(w->dma);
	stray = dma_reaches(w, 6) && dma_blocked(w, 1500, false);
	tap_ok(err == -EFAULT && pending(w) == 1 && stray,
	       "%s: an add refused with its cleanup refused fails (%d) and leaves one repair "
	       "pending (%llu): the device reaches the run it mapped", w->t->name, err,
	       (unsigned long long)pending(w));
	/* Added again: the add unmaps what the last one left, then maps all. */
	err = cvm_dma_add_region(w->dma, w->ram);
	tap_ok(!err && pending(w) == 0 && dma_reaches(w, 6) && dma_reaches(w, 1500) &&
	       check_kernel(w, used_at_open),
	       "%s: adding it again (%d) repairs first and maps the shared pages exactly (kernel "
	       "table, edu DMA)", w->t->name, err);
out:
	world_close(w);
}

/*
 * The VMM unmaps two of a per-page context's mappings itself (pages 11 and
 * 20), which it should not.  The private conversions of those pages still
 * go through.  The kernels answer the context's unmap of 10-12 with fewer
 * bytes than asked; that of 20 alone with 0 bytes (type1, the compat
 * container) or -ENOENT (iommufd: the conversion failed, every time,
 * until the context went on mapping by mapping).  Afterwards the kernel
 * maps exactly the library's table.
 */
static void run_vmm_unmapped(struct world *w)
{
	struct cvm_be *be;
	uint64_t used_at_open;
	int err, u11, u20, p10, p20;
	bool gone;

	if (world_open(w, "vmm-unmapped", CVM_DMA_PER_PAGE, 0)) {
		tap_ok(false, "%s: vmm-unmapped setup", w->t->name);
		goto out;
	}
	be = cvm_dma_backend(w->dma);
	used_at_open = entries_used(w);
	err = cvm_convert(w->ram, RAM_GPA + 10 * PG, 3 * PG, CVM_SHARED, 0) ?:
	      cvm_convert(w->ram, RAM_GPA + 20 * PG, PG, CVM_SHARED, 0) ?:
	      cvm_convert(w->ram, RAM_GPA + 30 * PG, PG, CVM_SHARED, 0);
	u11 = be->ops->unmap(be, RAM_GPA + 11 * PG, PG, NULL);
	u20 = be->ops->unmap(be, RAM_GPA + 20 * PG, PG, NULL);
	/* Three whole mappings in one call (11's gone), then one alone. */
	p10 = cvm_convert(w->ram, RAM_GPA + 10 * PG, 3 * PG, CVM_PRIVATE, 0);
	p20 = cvm_convert(w->ram, RAM_GPA + 20 * PG, PG, CVM_PRIVATE, 0);
	set_state(w, 30, 1, 1);
	gone = dma_blocked(w, 10, false) && dma_blocked(w, 12, false) &&
	       kernel_mapped(w, RAM_GPA + 11 * PG) == 0 && kernel_mapped(w, RAM_GPA + 20 * PG) == 0;
	tap_ok(!err && !u11 && !u20 && !p10 && !p20 && pending(w) == 0 && gone &&
	       dma_reaches(w, 30) && check_kernel(w, used_at_open),
	       "%s: private conversions over mappings the VMM unmapped itself go through (%d, %d): "
	       "the kernel maps exactly the library's table", w->t->name, p10, p20);
out:
	world_close(w);
}

/* The library's last error message while a test listens (cvm_set_log). */
static char last_err[512];

static void keep_err(void *opaque, int priority, const char *msg)
{
	(void)opaque;
	if (priority <= LOG_ERR)
		snprintf(last_err, sizeof(last_err), "%s", msg);
}

/*
 * The entry limit on the real kernel (type1's dma_entry_limit, lowered so a
 * few isolated pages reach it): a share that needs one more mapping fails
 * with -ENOSPC and changes nothing; under CVM_DMA_COMPACT the same share
 * joins the mappings on both sides of it, and the kernel then holds one
 * entry less.
 */
#define LIMIT 12

static void run_limit(struct world *w, const char *policy, uint32_t flags)
{
	struct cvm_dma_stats was = { .sz = sizeof(was) }, st = { .sz = sizeof(st) };
	uint64_t used_at_open, n = 0;
	bool reach, kern;
	int err;

	err = world_open(w, policy, flags, 0);
	if (!tap_ok(!err, "%s/%s: open with an entry limit of %d (%d)", w->t->name, policy,
		    LIMIT, err))
		goto out;
	used_at_open = entries_used(w);
	/* Pages 0, 2, 4, ...: one mapping each, until no entry is left. */
	for (err = 0; !err; n++) {
		cvm_dma_stats(w->dma, &was);
		if (!was.entries_avail)
			break;
		err = cvm_convert(w->ram, RAM_GPA + 2 * n * PG, PG, CVM_SHARED, 0);
		set_state(w, 2 * n, 1, 1);
	}
	if (!tap_ok(!err && used_at_open == LIMIT && was.mappings == LIMIT,
		    "%s/%s: %llu isolated pages and the bounce pages fill the kernel's %d entries "
		    "(%d)", w->t->name, policy, (unsigned long long)n, LIMIT, err))
		goto out;
	/* Page 1, between the mappings of pages 0 and 2. */
	last_err[0] = 0;
	cvm_set_log(keep_err, NULL, LOG_ERR);
	err = cvm_convert(w->ram, RAM_GPA + PG, PG, CVM_SHARED, 0);
	cvm_set_log(NULL, NULL, 0);
	cvm_dma_stats(w->dma, &st);
	if (!flags) {
		/* The kernel cannot be probed while it is full: the check of its
		 * table waits until an entry is free. */
		reach = dma_reaches(w, 0) && dma_reaches(w, 2) && dma_blocked(w, 1, false);
		tap_ok(err == -ENOSPC && reach && st.mappings == LIMIT &&
		       st.map_calls == was.map_calls && st.unmap_calls == was.unmap_calls,
		       "%s/%s: one more mapping fails with -ENOSPC (%d) and changes nothing: no "
		       "kernel call, page 1 unreachable, its neighbours reachable", w->t->name,
		       policy, err);
		tap_diag("%s/%s: %s", w->t->name, policy, last_err);
		tap_ok(strstr(last_err, "1 more mapping needed, 0 left") &&
		       strstr(last_err, "dma_entry_limit") && strstr(last_err, "CVM_DMA_COMPACT"),
		       "%s/%s: the library's error message says what is missing and names the "
		       "remedies", w->t->name, policy);
		/* An unshare frees entries (two: the kernel probe needs one): the
		 * same share then succeeds. */
		err = cvm_convert(w->ram, RAM_GPA + 2 * (n - 2) * PG, 3 * PG, CVM_PRIVATE, 0);
		set_state(w, 2 * (n - 2), 3, 0);
		err = err ?: cvm_convert(w->ram, RAM_GPA + PG, PG, CVM_SHARED, 0);
		set_state(w, 1, 1, 1);
		reach = dma_reaches(w, 1) && dma_blocked(w, 2 * (n - 1), false);
		kern = check_kernel(w, used_at_open);
		tap_ok(!err && reach && kern,
		       "%s/%s: once an unshare frees entries the same share succeeds (%d) and the "
		       "kernel maps exactly the library's table", w->t->name, policy, err);
	} else {
		set_state(w, 1, 1, 1);
		reach = dma_reaches(w, 0) && dma_reaches(w, 1) && dma_reaches(w, 2) &&
			dma_blocked(w, 3, false);
		kern = check_kernel(w, used_at_open);
		tap_ok(!err && reach && kern && st.mappings == LIMIT - 1 &&
		       st.disrupted_bytes - was.disrupted_bytes == 2 * PG,
		       "%s/%s: at the limit page 1 joins the mappings of pages 0 and 2 (%d): the "
		       "kernel holds %llu entries, pages 0-2 reachable, %llu bytes disrupted",
		       w->t->name, policy, err, (unsigned long long)st.mappings,
		       (unsigned long long)(st.disrupted_bytes - was.disrupted_bytes));
	}
out:
	world_close(w);
}

/*
 * Another user of the container holds an entry while the context fills the
 * rest, then gives it back: the context's own count said 0 since the
 * kernel's -ENOSPC, and it must ask the kernel (type1's DMA_AVAIL) before
 * it refuses the next share, which the kernel now has room for.
 */
static void run_limit_foreign(struct world *w)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	const uint64_t foreign = 0x100000000ull;   /* 4 GiB: outside both regions */
	struct cvm_be *be;
	uint64_t used_at_open, n = 0, gone = 0;
	void *page = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool reach, kern;
	int err;

	err = page == MAP_FAILED ? -errno : world_open(w, "limit-foreign", 0, 0);
	if (!tap_ok(!err, "%s/limit-foreign: open with an entry limit of %d (%d)", w->t->name,
		    LIMIT, err))
		goto out;
	used_at_open = entries_used(w);
	be = cvm_dma_backend(w->dma);
	err = be->ops->map(be, foreign, PG, page);
	/* Pages 0, 2, 4, ... until the kernel refuses one. */
	for (; !err; n++) {
		err = cvm_convert(w->ram, RAM_GPA + 2 * n * PG, PG, CVM_SHARED, 0);
		if (!err)
			set_state(w, 2 * n, 1, 1);
	}
	cvm_dma_stats(w->dma, &st);
	if (!tap_ok(err == -ENOSPC && st.entries_avail == 0 && st.mappings == LIMIT - 1,
		    "%s/limit-foreign: with another user's entry the kernel refuses the %lluth "
		    "isolated page (%d), the context then counts 0 free", w->t->name,
		    (unsigned long long)n, err))
		goto unmap;
	err = be->ops->unmap(be, foreign, PG, &gone);
	if (!tap_ok(!err && gone == PG, "%s/limit-foreign: the other user gives its entry back "
		    "(%d)", w->t->name, err))
		goto out;
	err = cvm_convert(w->ram, RAM_GPA + 2 * (n - 1) * PG, PG, CVM_SHARED, 0);
	set_state(w, 2 * (n - 1), 1, 1);
	cvm_dma_stats(w->dma, &st);
	reach = dma_reaches(w, 2 * (n - 1)) && dma_reaches(w, 0);
	/* check_kernel() probes with a map of its own: free an entry first. */
	if (!err) {
		err = cvm_convert(w->ram, RAM_GPA, PG, CVM_PRIVATE, 0);
		set_state(w, 0, 1, 0);
	}
	kern = !err && check_kernel(w, used_at_open);
	tap_ok(!err && reach && kern && st.mappings == LIMIT && st.entries_avail == 0,
	       "%s/limit-foreign: the context asks the kernel and maps the next page (%d): "
	       "reachable, %llu mappings, 0 free, the kernel maps exactly the library's table",
	       w->t->name, err, (unsigned long long)st.mappings);
	goto out;
unmap:
	be->ops->unmap(be, foreign, PG, &gone);
out:
	world_close(w);
	if (page != MAP_FAILED)
		munmap(page, PG);
}

/* ---- a real refusal: the kernel cannot pin ---- */

/*
 * Without CAP_IPC_LOCK, pinning past RLIMIT_MEMLOCK fails with -ENOMEM
 * (doc/kernel-facts.md §1, §2): the limit is set so the kernel pins the first
 * run of a batch and refuses the second.  type1 charges every pin to the
 * process's locked_vm (VmLck), so this process's earlier pins count;
 * iommufd charges nothing pinned while CAP_IPC_LOCK was effective (to the
 * user's locked_vm natively, to VmLck through its compat container, as
 * the library's message below shows).  The library must undo the
 * first: the call fails with the kernel's -ENOMEM, the pages stay private
 * and the kernel holds what it held before.  Then, with the limit back,
 * the same batch works.
 */
static void run_pin_limit(struct world *w)
{
	struct cvm_range two[2] = { { RAM_GPA, 16 * PG }, { RAM_GPA + 1024 * PG, 32 * PG } };
	struct cvm_dma_stats was = { .sz = sizeof(was) }, st = { .sz = sizeof(st) };
	struct rlimit old, lim;
	uint64_t used_at_open;
	long locked;
	bool none, reach;
	int err;

	if (world_open(w, "pin-limit", 0, 0)) {
		tap_ok(false, "%s: pin-limit setup", w->t->name);
		goto out;
	}
	used_at_open = entries_used(w);
	locked = strcmp(w->t->name, "type1") ? 0 : guest_locked_pages();
	if (locked < 0 || getrlimit(RLIMIT_MEMLOCK, &old)) {
		tap_skip("cannot read VmLck or RLIMIT_MEMLOCK", "%s: a pin refused", w->t->name);
		goto out;
	}
	lim = old;
	lim.rlim_cur = (rlim_t)(locked + 16) * PG;   /* room for the first run only */
	cvm_dma_stats(w->dma, &was);
	err = guest_ipc_lock_effective(false);
	if (!err && setrlimit(RLIMIT_MEMLOCK, &lim))
		err = -errno;
	last_err[0] = 0;
	cvm_set_log(keep_err, NULL, LOG_ERR);
	if (!err)
		err = cvm_convert_batch(w->ram, two, 2, CVM_SHARED, 0);
	cvm_set_log(NULL, NULL, 0);
	setrlimit(RLIMIT_MEMLOCK, &old);
	guest_ipc_lock_effective(true);
	cvm_dma_stats(w->dma, &st);
	none = kernel_mapped(w, RAM_GPA) == 0 && kernel_mapped(w, RAM_GPA + 1024 * PG) == 0 &&
	       check_kernel(w, used_at_open) && dma_blocked(w, 3, false);
	tap_ok(err == -ENOMEM && none && st.map_calls - was.map_calls == 2 &&
	       st.unmap_calls - was.unmap_calls == 1 && st.mappings == was.mappings,
	       "%s: the kernel pins the first run of a batch and refuses the second (%d): the "
	       "first is unmapped again, the pages stay private, the kernel holds what it held "
	       "(map %llu, unmap %llu)", w->t->name, err,
	       (unsigned long long)(st.map_calls - was.map_calls),
	       (unsigned long long)(st.unmap_calls - was.unmap_calls));
	tap_diag("%s: %s", w->t->name, last_err);
	tap_ok(strstr(last_err, "no CAP_IPC_LOCK") && strstr(last_err, "RLIMIT_MEMLOCK") &&
	       strstr(last_err, "remedy"),
	       "%s: the library's error message names the missing CAP_IPC_LOCK, the limit and "
	       "the remedy", w->t->name);
	err = cvm_convert_batch(w->ram, two, 2, CVM_SHARED, 0);
	set_state(w, 0, 16, 1);
	set_state(w, 1024, 32, 1);
	reach = dma_reaches(w, 3) && dma_reaches(w, 1055);
	tap_ok(!err && reach && check_kernel(w, used_at_open),
	       "%s: with the limit back the same batch works (%d)", w->t->name, err);
out:
	world_close(w);
}

static void run_limit_target(struct world *w)
{
	struct guest_target t;
	unsigned old;
	int err = guest_set_dma_entry_limit(LIMIT, &old);

	if (err) {
		tap_skip(strerror(-err), "type1: lower dma_entry_limit");
		return;
	}
	/* The limit applies to containers created afterwards. */
	err = guest_target_open(&t, "type1");
	guest_set_dma_entry_limit(old, NULL);
	if (!err) {
		w->t = &t;
		run_limit(w, "limit-auto", 0);
		run_limit(w, "limit-compact", CVM_DMA_COMPACT);
		run_limit_foreign(w);
	} else {
		tap_skip(strerror(-err), "type1: open the edu device with an entry limit");
	}
	guest_target_close(&t);
}

static void run_target(struct world *w, const char *name)
{
	const struct { const char *name; uint32_t flags; uint64_t g; } pol[] = {
		{ "per-page", CVM_DMA_PER_PAGE, 0 }, { "auto", 0, 0 },
		{ "granule-64K", 0, 64 * 1024 }, { "unbounded", 0, UINT64_MAX },
	};
	struct guest_target t;

	if (!tap_target_open(&t, name))
		return;
	w->t = &t;
	w->faults_checked = 0;
	for (size_t i = 0; i < sizeof(pol) / sizeof(pol[0]); i++)
		run_policy(w, pol[i].name, pol[i].flags, pol[i].g);
	run_hitless(w);
	if (!strcmp(name, "iommufd")) {
		run_shared_ioas(w);
		run_two_ioas(w);
		run_small_pages_refused(w);
	}
	run_double_failure(w);
	run_region_gone(w);
	run_vmm_unmapped(w);
	run_pin_limit(w);
	run_hotplug(w);
	guest_target_close(&t);
	if (!strcmp(name, "type1"))
		run_limit_target(w);
	printf("# %s: %d edu DMA transfers so far\n", name, w->dmas);
}

int main(int argc, char **argv)
{
	static struct world w;

	if (argc > 2) {
		fprintf(stderr, "usage: %s [type1|iommufd|compat]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	{
		int st;

		if (!tap_need_edu(&st))
			return st;
	}
	w.seed = 4242;
	w.ram_hva = mmap(NULL, RAM_PG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	w.bounce_hva = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	if (w.ram_hva == MAP_FAILED || w.bounce_hva == MAP_FAILED)
		return 1;
	memset(w.ram_hva, 0, RAM_PG * PG);
	w.probe_buf = (uint64_t)(uintptr_t)(w.bounce_hva + 2 * PG);
	if (argc == 2) {
		run_target(&w, argv[1]);
	} else if (guest_kernel_a()) {
		run_target(&w, "type1");       /* kernel A */
		run_target(&w, "iommufd");
	} else {
		run_target(&w, "compat");      /* kernel B */
	}
	printf("1..%d\n", tap_count);
	return tap_failed;
}
