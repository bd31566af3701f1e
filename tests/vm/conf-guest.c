// SPDX-License-Identifier: MIT
/*
 * The kernel conformance suite, run INSIDE the test guest against the real
 * kernel (doc/kernel-facts.md §1-§3): every backend target the running kernel
 * offers goes through conformance_run(), the same suite the model backend
 * passes, plus the facts only a real kernel and device can show (IOVA
 * ranges before and after attach, DMA around a cut, failing safely).
 *
 *   conf-guest [A|B]     (default: whichever kernel this is)
 *
 * Kernel A has the legacy container (real vfio_iommu_type1) and iommufd;
 * kernel B has iommufd's compatibility container at /dev/vfio/vfio.
 * Prints TAP; exits 1 if anything failed.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "internal.h"
#include "backend.h"
#include "conformance.h"
#include "guest.h"
#include "guest-tap.h"

#define PAGE		4096ull
#define SZ_2M		(2ull << 20)
/* Below 4 GiB (edu's DMA mask) and clear of the MSI window at 0xfee00000. */
#define DMA_IOVA	0x40000000ull
/* Short transfers: QEMU 7.2's edu aborts on a full 4096-byte one. */
#define DMA_LEN		2048

/* Failures conformance_run() reported (its lines count in tap_count). */
static int conf_failures;

static void log_to_tap(void *opaque, int prio, const char *msg)
{
	tap_diag("libcvmdma[%d]: %s", prio, msg);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- targets ---- */

/* A VFIO container from guest_open_type1(); the group opens only once, so
 * each open closes what the previous one left (the backend does not own
 * the container fd). */
struct type1_target {
	unsigned long iommu_type;
	int container, device;
};

static uint64_t type1_fresh_avail;   /* entries_avail of the last opened container */

static int type1_target_open(void *opaque, uint32_t entry_limit, struct cvm_be **out)
{
	struct type1_target *t = opaque;
	unsigned old = 0;
	int ret;

	close_fd(&t->device);
	close_fd(&t->container);
	/* The limit applies to containers created afterwards. */
	if (entry_limit) {
		ret = guest_set_dma_entry_limit(entry_limit, &old);
		if (ret)
			return ret;
	}
	ret = guest_open_type1(t->iommu_type, &t->container, &t->device);
	if (entry_limit)
		guest_set_dma_entry_limit(old, NULL);
	if (ret)
		return ret;
	ret = cvm_backend_type1_open(t->container, true, out);
	if (!ret)
		type1_fresh_avail = (*out)->entries_avail;
	return ret;
}

/* Real type1 can say how many mappings it holds: DMA_AVAIL drops by one per
 * map (§1), so a fresh container's count minus what is left.  Lets the suite
 * check that each test leaves the kernel empty. */
static uint64_t type1_count(struct cvm_be *be)
{
	if (be->ops->refresh(be))
		return UINT64_MAX;
	return type1_fresh_avail - be->entries_avail;
}

/* A native iommufd IOAS (the backend opens /dev/iommu and allocates the
 * IOAS) with the edu device bound and attached, so its ranges are real. */
struct iommufd_target {
	bool want_cut;
	int device;
};

static int attach_edu(struct cvm_be *be, int *device)
{
	int ret;

	close_fd(device);
	ret = guest_iommufd_bind(be->fd, device);
	if (!ret)
		ret = guest_iommufd_attach(*device, be->ioas_id);
	if (!ret)
		ret = be->ops->refresh(be);
	return ret;
}

static int iommufd_target_open(void *opaque, uint32_t entry_limit, struct cvm_be **out)
{
	struct iommufd_target *t = opaque;
	struct cvm_be *be;
	int ret;

	close_fd(&t->device);
	ret = cvm_backend_iommufd_open(-1, 0, t->want_cut, &be);
	if (ret)
		return ret;
	ret = attach_edu(be, &t->device);
	if (ret) {
		cvm_backend_destroy(be);
		close_fd(&t->device);
		return ret;
	}
	*out = be;
	return 0;
}

/* ---- memory ---- */

/* len bytes of anonymous memory aligned to 2 MiB, filled with a pattern
 * that differs per page. */
static uint8_t *mem_alloc(size_t len)
{
	size_t span = len + SZ_2M;
	uint8_t *p, *a;

	p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + SZ_2M - 1) & ~(uintptr_t)(SZ_2M - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + len, p + span - (a + len));
	for (size_t i = 0; i < len; i++)
		a[i] = (uint8_t)(i / PAGE * 7 + i + 1);
	return a;
}

static bool bytes_are(const uint8_t *p, uint8_t v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* ---- guest-only facts ---- */

/* The IOAS's IOVA alignment as the kernel reports it (the backend rounds
 * it up to a page, which would hide it); 0 if the call fails. */
static uint64_t ioas_alignment(int fd, uint32_t ioas_id)
{
	struct iommu_iova_range r[16];
	struct iommu_ioas_iova_ranges q = {
		.size = sizeof(q), .ioas_id = ioas_id, .num_iovas = 16,
		.allowed_iovas = (uintptr_t)r,
	};

	return ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &q) ? 0 : q.out_iova_alignment;
}

static void fact_iommufd_ranges_real_only_after_attach(void)
{
	const char *name = "iommufd: IOVA ranges are the full space before attach, "
			   "the real ones (MSI window excluded) after; the kernel's "
			   "alignment is 1 before and 4 KiB after";
	uint64_t align0, align1;
	struct cvm_be *be;
	int device = -1, ret;
	bool before, after;

	ret = cvm_backend_iommufd_open(-1, 0, false, &be);
	if (ret) {
		tap_ok(false, "%s (open: %s)", name, strerror(-ret));
		return;
	}
	align0 = ioas_alignment(be->fd, be->ioas_id);
	before = be->nranges == 1 && be->ranges[0].start == 0 &&
		 be->ranges[0].last == UINT64_MAX && (be->pgsizes & -be->pgsizes) == PAGE &&
		 align0 == 1;
	tap_diag("iommufd before attach: pgsizes %#llx, alignment %#llx",
		 (unsigned long long)be->pgsizes, (unsigned long long)align0);
	ret = attach_edu(be, &device);
	align1 = ret ? 0 : ioas_alignment(be->fd, be->ioas_id);
	tap_diag("iommufd after attach: alignment %#llx", (unsigned long long)align1);
	for (uint32_t i = 0; !ret && i < be->nranges; i++)
		tap_diag("iommufd range %u: [%#llx, %#llx]", i,
		     (unsigned long long)be->ranges[i].start,
		     (unsigned long long)be->ranges[i].last);
	after = !ret && be->nranges >= 2 && cvm_backend_iova_valid(be, DMA_IOVA, SZ_2M) &&
		!cvm_backend_iova_valid(be, 0xfee00000, PAGE) &&
		(be->pgsizes & -be->pgsizes) == PAGE && align1 == PAGE;
	tap_ok(before && after, "%s (before: %u ranges, after: %s)", name,
	       before ? 1 : be->nranges, ret ? strerror(-ret) : "read");
	cvm_backend_destroy(be);
	close_fd(&device);
}

static int compat_cut_raw(int fd, uint64_t iova, uint64_t len, uint64_t *size)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = len };
	int ret = ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u) ? -errno : 0;

	*size = u.size;
	return ret;
}

/* The §2a route without HUGE_PAGES = 0 must refuse, not cut coarsely. */
static void fact_cut_with_huge_pages_fails_safely(void)
{
	const char *name = "iommufd: a VFIO-compat cut with HUGE_PAGES=1 fails with -ENOENT "
			   "and leaves the mapping whole";
	uint64_t size = 1, rest = 0;
	uint32_t id;
	struct cvm_be *be;
	int device = -1, ret, cut;
	uint8_t *mem;

	mem = mem_alloc(SZ_2M);
	ret = mem ? cvm_backend_iommufd_open(-1, 0, false, &be) : -ENOMEM;
	if (ret) {
		tap_ok(false, "%s (setup: %s)", name, strerror(-ret));
		return;
	}
	ret = attach_edu(be, &device);
	if (!ret)
		ret = be->ops->map(be, DMA_IOVA, SZ_2M, mem);
	id = be->ioas_id;
	if (!ret)
		ret = guest_compat_ioas(be->fd, IOMMU_VFIO_IOAS_SET, &id);
	if (ret) {
		tap_ok(false, "%s (setup: %s)", name, strerror(-ret));
	} else {
		cut = compat_cut_raw(be->fd, DMA_IOVA + SZ_2M / 2, PAGE, &size);
		ret = be->ops->unmap(be, DMA_IOVA, SZ_2M, &rest);
		tap_ok(cut == -ENOENT && size == 0 && !ret && rest == SZ_2M,
		       "%s (cut %d size %llu, then whole unmap %d size %#llx)", name, cut,
		       (unsigned long long)size, ret, (unsigned long long)rest);
	}
	cvm_backend_destroy(be);
	close_fd(&device);
	munmap(mem, SZ_2M);
}

/* §2a: an fd has at most one compat IOAS, the last one SET; before any,
 * GET fails with -ENODEV.  The cut asks GET before each call and refuses
 * (-EBUSY) to take an fd whose compat IOAS is another's. */
static void fact_one_compat_ioas_per_fd(void)
{
	const char *name = "iommufd: GET names no compat IOAS (-ENODEV) until one is SET, "
			   "then the last one SET";
	uint32_t a = 0, b = 0, none = 0, got_a = 0, got_b = 0;
	int fd, ret, gnone, ga, gb;

	fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		tap_ok(false, "%s (open /dev/iommu: %s)", name, strerror(errno));
		return;
	}
	ret = guest_ioas_alloc(fd, &a);
	if (!ret)
		ret = guest_ioas_alloc(fd, &b);
	if (ret) {
		tap_ok(false, "%s (IOAS_ALLOC: %s)", name, strerror(-ret));
		close(fd);
		return;
	}
	gnone = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_GET, &none);
	got_a = a;
	ga = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_SET, &got_a);
	if (!ga)
		ga = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_GET, &got_a);
	got_b = b;
	gb = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_SET, &got_b);
	if (!gb)
		gb = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_GET, &got_b);
	tap_ok(gnone == -ENODEV && !ga && got_a == a && !gb && got_b == b,
	       "%s (GET first %d; SET %u then GET %d: %u; SET %u then GET %d: %u)", name, gnone,
	       a, ga, got_a, b, gb, got_b);
	close(fd);
}

/* §2: iommufd has no count of mappings: with the device attached, more 4 KiB
 * maps than type1's default dma_entry_limit (65,535) all succeed.  The
 * backend reports no limit (entries_avail UINT64_MAX) and never asks.  One
 * page of memory is mapped at every IOVA, so little is pinned. */
static void fact_iommufd_has_no_entry_limit(void)
{
	const char *name = "iommufd: 65,600 separate 4 KiB maps with the device attached "
			   "all succeed (no entry limit), and one unmap removes them";
	const uint64_t n = 65600;
	uint64_t done = 0, rest = 0;
	struct cvm_be *be;
	int device = -1, ret;
	uint8_t *mem;

	mem = mem_alloc(SZ_2M);
	ret = mem ? cvm_backend_iommufd_open(-1, 0, false, &be) : -ENOMEM;
	if (ret) {
		tap_ok(false, "%s (setup: %s)", name, strerror(-ret));
		if (mem)
			munmap(mem, SZ_2M);
		return;
	}
	ret = attach_edu(be, &device);
	/* Every other page, so no two maps touch. */
	while (!ret && done < n) {
		ret = be->ops->map(be, DMA_IOVA + 2 * PAGE * done, PAGE, mem);
		done += !ret;
	}
	{
		int uret = be->ops->unmap(be, DMA_IOVA, 2 * PAGE * n, &rest);

		tap_ok(!ret && done == n && be->entries_avail == UINT64_MAX && !uret &&
		       rest == n * PAGE,
		       "%s (%llu maps, the last %d; unmap %d size %#llx)", name,
		       (unsigned long long)done, ret, uret, (unsigned long long)rest);
	}
	cvm_backend_destroy(be);
	close_fd(&device);
	munmap(mem, SZ_2M);
}

/* An IOAS that already has areas with a device attached cannot turn huge
 * pages off: the open must still succeed, without the cut. */
static void fact_busy_ioas_opens_without_cut(void)
{
	const char *name = "iommufd: want_cut on an adopted IOAS with areas and a device "
			   "opens without the cut and leaves its mapping alone";
	struct cvm_be *owner, *be = NULL;
	uint64_t rest = 0;
	int device = -1, ret;
	uint8_t *mem;

	mem = mem_alloc(SZ_2M);
	ret = mem ? cvm_backend_iommufd_open(-1, 0, false, &owner) : -ENOMEM;
	if (ret) {
		tap_ok(false, "%s (setup: %s)", name, strerror(-ret));
		return;
	}
	ret = attach_edu(owner, &device);
	if (!ret)
		ret = owner->ops->map(owner, DMA_IOVA, SZ_2M, mem);
	if (!ret)
		ret = cvm_backend_iommufd_open(owner->fd, owner->ioas_id, true, &be);
	if (ret) {
		tap_ok(false, "%s (%s)", name, strerror(-ret));
	} else {
		bool cut = be->can_cut;

		cvm_backend_destroy(be);
		ret = owner->ops->unmap(owner, DMA_IOVA, SZ_2M, &rest);
		tap_ok(!cut && !ret && rest == SZ_2M, "%s (can_cut %d, unmap %d size %#llx)",
		       name, cut, ret, (unsigned long long)rest);
	}
	cvm_backend_destroy(owner);
	close_fd(&device);
	munmap(mem, SZ_2M);
}

/*
 * The proof that a cut is hitless, with the device: after cutting page 256
 * out of a 512-page mapping, DMA on both sides of the hole and at both ends
 * still works with nothing remapped; the hole reads zeros and a write to it
 * does not land.
 */
static int dma_checks(struct edu *e, uint8_t *mem, uint8_t *out_mem, uint64_t hole)
{
	const uint64_t out = DMA_IOVA + SZ_2M;   /* a second, untouched mapping */
	const uint64_t srcs[] = { hole - PAGE, hole + PAGE, DMA_IOVA, DMA_IOVA + SZ_2M - PAGE };
	uint8_t before[DMA_LEN];
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(srcs); i++) {
		memset(out_mem, 0xee, DMA_LEN);
		ret = edu_roundtrip(e, srcs[i], out, DMA_LEN);
		if (ret)
			return ret;
		if (memcmp(out_mem, mem + (srcs[i] - DMA_IOVA), DMA_LEN)) {
			tap_diag("DMA from %#llx next to the cut read wrong data",
			     (unsigned long long)srcs[i]);
			return -EIO;
		}
	}
	/* The hole: reads give zeros, writes are dropped. */
	memset(out_mem, 0xee, DMA_LEN);
	ret = edu_roundtrip(e, hole, out, DMA_LEN);
	if (ret)
		return ret;
	if (!bytes_are(out_mem, 0, DMA_LEN)) {
		tap_diag("DMA from the cut page did not read zeros");
		return -EIO;
	}
	/* A marker the write cannot carry: mem_alloc()'s pattern repeats every
	 * 256 pages, so page 0 (the source) and the hole (page 256) held the
	 * same bytes and a landed write would have gone unseen. */
	memset(mem + (hole - DMA_IOVA), 0xa5, DMA_LEN);
	memcpy(before, mem + (hole - DMA_IOVA), DMA_LEN);
	if (!memcmp(before, mem, DMA_LEN))
		return -EPROTO;
	ret = edu_roundtrip(e, DMA_IOVA, hole, DMA_LEN);
	if (ret)
		return ret;
	if (memcmp(before, mem + (hole - DMA_IOVA), DMA_LEN)) {
		tap_diag("DMA to the cut page landed");
		return -EIO;
	}
	return 0;
}

static void fact_cut_is_hitless_for_the_device(const char *tname, struct cvm_be *be,
					       int device)
{
	const uint64_t hole = DMA_IOVA + SZ_2M / 2;
	uint64_t got = 0, rest = 0, out_rest = 0;
	struct edu e = { 0 };
	uint8_t *mem, *out_mem;
	int ret, faults0;

	mem = mem_alloc(SZ_2M);
	out_mem = mem_alloc(SZ_2M);
	if (!mem || !out_mem) {
		tap_ok(false, "%s: no memory", tname);
		return;
	}
	faults0 = guest_dmesg_count("DMAR: [DMA");
	ret = edu_open(device, &e);
	if (!ret)
		ret = be->ops->map(be, DMA_IOVA, SZ_2M, mem);
	if (!ret)
		ret = be->ops->map(be, DMA_IOVA + SZ_2M, SZ_2M, out_mem);
	if (!ret)
		ret = be->ops->cut(be, hole, PAGE, &got);
	if (!ret && got != PAGE)
		ret = -EPROTO;
	if (!ret)
		ret = dma_checks(&e, mem, out_mem, hole);
	be->ops->unmap(be, DMA_IOVA, SZ_2M, &rest);
	be->ops->unmap(be, DMA_IOVA + SZ_2M, SZ_2M, &out_rest);
	tap_ok(!ret && rest == SZ_2M - PAGE,
	       "%s: after a cut the device reaches both sides of the hole and both ends, "
	       "not the hole (%s; rest %#llx; DMAR faults %d)", tname,
	       ret ? strerror(-ret) : "ok", (unsigned long long)rest,
	       guest_dmesg_count("DMAR: [DMA") - faults0);
	if (e.bar0)
		edu_close(&e);
	munmap(mem, SZ_2M);
	munmap(out_mem, SZ_2M);
}

static void describe(const char *tname, const struct cvm_be *be)
{
	tap_diag("%s: pgsizes %#llx, %u IOVA ranges, entries_avail %llu, can_cut %d", tname,
	     (unsigned long long)be->pgsizes, be->nranges,
	     (unsigned long long)be->entries_avail, be->can_cut);
	for (uint32_t i = 0; i < be->nranges; i++)
		tap_diag("  [%#llx, %#llx]", (unsigned long long)be->ranges[i].start,
		     (unsigned long long)be->ranges[i].last);
}

/*
 * What the conformance targets do not show for a VFIO container: the real
 * v1 driver (not a target: it must not cut, and never be relied on), the
 * container fd staying the VMM's, and real DMA around a cut.
 */
static void type1_facts(const char *tname, unsigned long type, bool cut)
{
	struct type1_target t = { type, -1, -1 };
	struct cvm_be *be;
	int ret;

	ret = type1_target_open(&t, 0, &be);
	if (ret) {
		tap_ok(false, "%s: open (%s)", tname, strerror(-ret));
		return;
	}
	describe(tname, be);
	tap_ok(be->can_cut == cut, "%s: the cut probe says %s", tname, cut ? "cut" : "no cut");
	if (be->can_cut)
		fact_cut_is_hitless_for_the_device(tname, be, t.device);
	cvm_backend_destroy(be);
	tap_ok(fcntl(t.container, F_GETFD) >= 0, "%s: destroy leaves the VMM's container fd open",
	       tname);
	close_fd(&t.device);
	close_fd(&t.container);
}

/* A VMM may hand over its container before it opens the device: the probe
 * then runs on an IOAS with no domain (compat: full IOVA range) and must give
 * the same answer. */
static void fact_probe_before_device(const char *tname, unsigned long type, bool cut,
				     bool compat)
{
	struct cvm_be *be;
	int container = -1, ret;

	ret = guest_open_type1(type, &container, NULL);
	if (!ret)
		ret = cvm_backend_type1_open(container, true, &be);
	if (ret) {
		tap_ok(false, "%s: open before the device (%s)", tname, strerror(-ret));
		close_fd(&container);
		return;
	}
	describe(tname, be);
	tap_ok(be->can_cut == cut, "%s: the cut probe says %s before the device is opened too",
	       tname, cut ? "cut" : "no cut");
	/* §3: iommufd's container has no domain yet, so it names every page
	 * size from 4 KiB up and the whole IOVA space; the real type1 driver
	 * has its domain once the group is in the container. */
	if (compat)
		tap_ok(be->pgsizes == 0xfffffffffffff000ull && be->nranges == 1 &&
		       be->ranges[0].start == 0 && be->ranges[0].last == UINT64_MAX,
		       "%s: before the device, page sizes %#llx and the whole IOVA space "
		       "(%u ranges)", tname, (unsigned long long)be->pgsizes, be->nranges);
	cvm_backend_destroy(be);
	close_fd(&container);
}

static void iommufd_cut_facts(void)
{
	struct iommufd_target t = { .want_cut = true, .device = -1 };
	struct cvm_be *be;
	int ret;

	ret = iommufd_target_open(&t, 0, &be);
	if (ret) {
		tap_ok(false, "iommufd-cut: open (%s)", strerror(-ret));
		return;
	}
	describe("iommufd-cut", be);
	tap_ok(be->can_cut && be->pgsizes == PAGE,
	       "iommufd-cut: a fresh IOAS gets the hitless cut (HUGE_PAGES=0, 4 KiB IOPTEs)");
	if (be->can_cut)
		fact_cut_is_hitless_for_the_device("iommufd-cut", be, t.device);
	cvm_backend_destroy(be);
	close_fd(&t.device);
}

/* ---- main ---- */

static struct type1_target t_type1 = { VFIO_TYPE1v2_IOMMU, -1, -1 };
static struct type1_target t_compat_v2 = { VFIO_TYPE1v2_IOMMU, -1, -1 };
static struct type1_target t_compat_v1 = { VFIO_TYPE1_IOMMU, -1, -1 };
static struct iommufd_target t_ifd_cut = { true, -1 };
static struct iommufd_target t_ifd = { false, -1 };

static const struct conf_target targets_a[] = {
	{ .name = "type1-v2", .partial_unmap_err = -EINVAL, .unmap_nothing_err = 0,
	  .has_entry_limit = true, .expect_cut = false, .real = true,
	  .open = type1_target_open, .ctx = &t_type1, .count = type1_count },
	{ .name = "iommufd-cut", .partial_unmap_err = -ENOENT, .unmap_nothing_err = -ENOENT,
	  .has_entry_limit = false, .expect_cut = true, .real = true,
	  .open = iommufd_target_open, .ctx = &t_ifd_cut },
	{ .name = "iommufd", .partial_unmap_err = -ENOENT, .unmap_nothing_err = -ENOENT,
	  .has_entry_limit = false, .expect_cut = false, .real = true,
	  .open = iommufd_target_open, .ctx = &t_ifd },
};

/* iommufd's compat container: v2 answers a partial unmap with -ENOENT; with
 * v1 semantics the same unmap is the cut, so it succeeds.  The native IOAS,
 * with and without the cut, is the same code as on kernel A: the §2a cut
 * must not depend on which container the kernel has. */
static const struct conf_target targets_b[] = {
	{ .name = "compat-v2", .partial_unmap_err = -ENOENT, .unmap_nothing_err = 0,
	  .has_entry_limit = false, .expect_cut = false, .real = true,
	  .open = type1_target_open, .ctx = &t_compat_v2 },
	{ .name = "compat-v1", .partial_unmap_err = 0, .unmap_nothing_err = 0,
	  .has_entry_limit = false, .expect_cut = true, .real = true,
	  .open = type1_target_open, .ctx = &t_compat_v1 },
	{ .name = "iommufd-cut", .partial_unmap_err = -ENOENT, .unmap_nothing_err = -ENOENT,
	  .has_entry_limit = false, .expect_cut = true, .real = true,
	  .open = iommufd_target_open, .ctx = &t_ifd_cut },
	{ .name = "iommufd", .partial_unmap_err = -ENOENT, .unmap_nothing_err = -ENOENT,
	  .has_entry_limit = false, .expect_cut = false, .real = true,
	  .open = iommufd_target_open, .ctx = &t_ifd },
};

static void close_targets(void)
{
	close_fd(&t_type1.device);
	close_fd(&t_type1.container);
	close_fd(&t_compat_v2.device);
	close_fd(&t_compat_v2.container);
	close_fd(&t_compat_v1.device);
	close_fd(&t_compat_v1.container);
	close_fd(&t_ifd_cut.device);
	close_fd(&t_ifd.device);
}

static char which_kernel(int argc, char **argv)
{
	if (argc > 1)
		return argv[1][0];
	/* Kernel A's type1 driver is built in: its parameters are in sysfs. */
	return guest_kernel_a() ? 'A' : 'B';
}

static void run_targets(const struct conf_target *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		tap_diag("conformance: %s", t[i].name);
		conf_failures += conformance_run(&t[i], &tap_count);
		close_targets();
	}
}

int main(int argc, char **argv)
{
	char bdf[32], cdev[256];
	char kernel = which_kernel(argc, argv);
	int group, ret;

	if (getenv("CVM_DEBUG"))
		cvm_set_log(log_to_tap, NULL, LOG_DEBUG);
	else
		cvm_set_log(log_to_tap, NULL, LOG_INFO);
	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	if (!tap_edu_usable(ret, &ret))
		return ret;
	tap_diag("kernel %c, edu %s, group %d, cdev %s", kernel, bdf, group, cdev);
	if (kernel == 'A') {
		fact_probe_before_device("type1-v2 (no device)", VFIO_TYPE1v2_IOMMU, false, false);
		run_targets(targets_a, ARRAY_SIZE(targets_a));
		type1_facts("type1-v1", VFIO_TYPE1_IOMMU, false);
	} else {
		fact_probe_before_device("compat-v1 (no device)", VFIO_TYPE1_IOMMU, true, true);
		run_targets(targets_b, ARRAY_SIZE(targets_b));
		type1_facts("compat-v1", VFIO_TYPE1_IOMMU, true);
	}
	if (cdev[0]) {
		/* §2a holds wherever iommufd is, container or not. */
		iommufd_cut_facts();
		fact_iommufd_ranges_real_only_after_attach();
		fact_cut_with_huge_pages_fails_safely();
		fact_busy_ioas_opens_without_cut();
		fact_one_compat_ioas_per_fd();
		if (kernel == 'A')	/* the same iommufd code on B: once is enough */
			fact_iommufd_has_no_entry_limit();
	} else {
		tap_skip("no vfio cdev (VFIO_DEVICE_CDEV off)", "iommufd guest facts");
	}
	close_targets();
	return tap_done() || conf_failures ? 1 : 0;
}
