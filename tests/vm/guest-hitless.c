// SPDX-License-Identifier: MIT
/*
 * Hitlessness and call counts checked AT THE IOCTL BOUNDARY, inside the
 * test guest.
 *
 * This program defines ioctl() itself, so every ioctl the statically linked
 * library makes goes through a tracer first.  The tracer keeps its own copy
 * of the kernel's mapping set, built only from ioctls that the kernel
 * accepted and from the byte counts the kernel reports (VFIO unmap `size`,
 * IOMMU_IOAS_UNMAP `length`); a mismatch with the kernel's report is itself
 * a failure.  It does not read the library's mapping table or statistics to
 * decide what was unmapped.
 *
 * For every conversion it knows which RAM pages are shared before AND after
 * (the "staying" pages).  A kernel unmap (or cut) that removes any staying
 * page is a disruption that happened in the real kernel, however briefly.
 * After each conversion it asserts:
 *   - where the library cuts (cvm_dma_info.can_cut) or maps per page: zero
 *     staying bytes were unmapped by any ioctl;
 *   - everywhere: the staying bytes the kernel really unmapped equal the
 *     library's disrupted_bytes (its hitless claim is honest);
 *   - the map ioctls and unmap/cut ioctls the kernel saw equal map_calls and
 *     unmap_calls + cut_calls (counts from the ioctl boundary);
 *   - the traced kernel set equals the shared set exactly, every page.
 *
 *   guest-hitless [type1|iommufd|compat]
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cvmdma.h"
#include "dma.h"
#include "guest-tap.h"
#include "guest.h"

#define PG      4096ull
#define RAM_GPA 0x40000000ull
#define RAM_PG  4096ull
#define BOUNCE_GPA 0x80000000ull
#define STEPS   64

/* ---- the tracer: the kernel's mapping set, from accepted ioctls ---- */

struct iv { uint64_t s, e, va; };     /* va: the user address of s */
#define MAXIV 200000
static struct iv kset[MAXIV];
static size_t nk;
static int traced_fd = -1;           /* the container or /dev/iommu fd under test */
static uint32_t traced_ioas;         /* iommufd: the IOAS under test */
static uint8_t *ram_hva, *bounce_hva;
static uint8_t staying[RAM_PG];      /* 1: shared before and after this conversion */
static bool in_conversion;
static uint64_t t_maps, t_unmaps, t_disrupted;
static char t_err[256];              /* the first tracker inconsistency */

static void t_fail(const char *fmt, ...)
{
	va_list ap;

	if (t_err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(t_err, sizeof(t_err), fmt, ap);
	va_end(ap);
}

static void kset_add(uint64_t s, uint64_t e, uint64_t va)
{
	uint64_t want;
	size_t i = 0;

	/* Only the two regions, each at its own user address, may be mapped. */
	if (s >= RAM_GPA && e <= RAM_GPA + RAM_PG * PG)
		want = (uintptr_t)ram_hva + (s - RAM_GPA);
	else if (s >= BOUNCE_GPA && e <= BOUNCE_GPA + 2 * PG)
		want = (uintptr_t)bounce_hva + (s - BOUNCE_GPA);
	else
		want = ~va;
	if (va != want) {
		t_fail("map [%#llx,%#llx) of user address %#llx: not the region's memory",
		       (unsigned long long)s, (unsigned long long)e, (unsigned long long)va);
		return;
	}

	while (i < nk && kset[i].s < s)
		i++;
	if ((i > 0 && kset[i - 1].e > s) || (i < nk && kset[i].s < e)) {
		t_fail("kernel accepted a map [%#llx,%#llx) over a traced mapping",
		       (unsigned long long)s, (unsigned long long)e);
		return;
	}
	if (nk == MAXIV) {
		t_fail("tracer full");
		return;
	}
	memmove(&kset[i + 1], &kset[i], (nk - i) * sizeof(kset[0]));
	kset[i] = (struct iv){ s, e, va };
	nk++;
}

/* A staying page inside [s, e) left the kernel: a real disruption. */
static void note_removed(uint64_t s, uint64_t e)
{
	for (uint64_t a = s; a < e; a += PG) {
		if (a < RAM_GPA || a >= RAM_GPA + RAM_PG * PG)
			continue;
		if (in_conversion && staying[(a - RAM_GPA) / PG])
			t_disrupted += PG;
	}
}

/* Remove what the kernel held in [a, b) (every successful unmap or cut
 * removes exactly the mapped pages in its range: a straddle fails); returns
 * the bytes removed. */
static uint64_t kset_remove(uint64_t a, uint64_t b)
{
	uint64_t bytes = 0;

	for (size_t i = 0; i < nk;) {
		struct iv v = kset[i];
		uint64_t x = v.s > a ? v.s : a, y = v.e < b ? v.e : b;

		if (x >= y) {
			i++;
			continue;
		}
		bytes += y - x;
		note_removed(x, y);
		if (v.s < x && v.e > y) {               /* a hole inside: split */
			if (nk == MAXIV) {
				t_fail("tracer full");
				return bytes;
			}
			memmove(&kset[i + 2], &kset[i + 1], (nk - i - 1) * sizeof(kset[0]));
			kset[i] = (struct iv){ v.s, x, v.va };
			kset[i + 1] = (struct iv){ y, v.e, v.va + (y - v.s) };
			nk++;
			i += 2;
		} else if (v.s < x) {
			kset[i].e = x;
			i++;
		} else if (v.e > y) {
			kset[i].s = y;
			kset[i].va = v.va + (y - v.s);
			i++;
		} else {
			memmove(&kset[i], &kset[i + 1], (nk - i - 1) * sizeof(kset[0]));
			nk--;
		}
	}
	return bytes;
}

/* Maps: counted, and added to the set when the kernel took them. */
static void trace_map(int fd, unsigned long req, void *arg, int ret)
{
	uint64_t iova, len, va;

	if (fd != traced_fd)
		return;
	if (req == VFIO_IOMMU_MAP_DMA) {
		iova = ((struct vfio_iommu_type1_dma_map *)arg)->iova;
		len = ((struct vfio_iommu_type1_dma_map *)arg)->size;
		va = ((struct vfio_iommu_type1_dma_map *)arg)->vaddr;
	} else if (req == IOMMU_IOAS_MAP) {
		iova = ((struct iommu_ioas_map *)arg)->iova;
		len = ((struct iommu_ioas_map *)arg)->length;
		va = ((struct iommu_ioas_map *)arg)->user_va;
		if (((struct iommu_ioas_map *)arg)->ioas_id != traced_ioas)
			t_fail("IOMMU_IOAS_MAP into IOAS %u, not %u",
			       ((struct iommu_ioas_map *)arg)->ioas_id, traced_ioas);
	} else {
		return;
	}
	if (in_conversion)
		t_maps++;
	if (!ret)
		kset_add(iova, iova + len, va);
	else
		t_fail("map [%#llx,%#llx) failed (%d)", (unsigned long long)iova,
		       (unsigned long long)(iova + len), ret);
}

/* Pre-call copies of unmap requests (the kernel writes the size back). */
int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;
	long ret;
	uint64_t ra = 0, rb = 0;
	bool unmap = false;
	int saved;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fd == traced_fd && req == VFIO_IOMMU_UNMAP_DMA) {
		struct vfio_iommu_type1_dma_unmap *u = arg;

		unmap = true;
		ra = u->iova;
		rb = (u->flags & VFIO_DMA_UNMAP_FLAG_ALL) ? UINT64_MAX : u->iova + u->size;
	} else if (fd == traced_fd && req == IOMMU_IOAS_UNMAP) {
		struct iommu_ioas_unmap *u = arg;

		unmap = true;
		ra = u->iova;
		rb = u->length == UINT64_MAX ? UINT64_MAX : u->iova + u->length;
		if (u->ioas_id != traced_ioas)
			t_fail("IOMMU_IOAS_UNMAP in IOAS %u, not %u", u->ioas_id, traced_ioas);
	}
	ret = syscall(SYS_ioctl, fd, req, arg);
	saved = errno;
	trace_map(fd, req, arg, ret < 0 ? -errno : 0);
	if (unmap && in_conversion)
		t_unmaps++;
	/* A failed unmap may have removed areas first (iommufd): the tracer
	 * cannot know the kernel's set any more. */
	if (unmap && ret)
		t_fail("unmap [%#llx,%#llx) failed (%d)", (unsigned long long)ra,
		       (unsigned long long)rb, -saved);
	if (unmap && ret == 0) {
		uint64_t reported = req == IOMMU_IOAS_UNMAP ?
				    ((struct iommu_ioas_unmap *)arg)->length :
				    ((struct vfio_iommu_type1_dma_unmap *)arg)->size;
		uint64_t removed = kset_remove(ra, rb);

		/* Both kernels write back what they removed, UNMAP_ALL included. */
		if (removed != reported)
			t_fail("unmap [%#llx,%#llx): kernel removed %#llx, tracer %#llx",
			       (unsigned long long)ra, (unsigned long long)rb,
			       (unsigned long long)reported, (unsigned long long)removed);
	}
	errno = saved;
	return (int)ret;
}

/* ---- the run ---- */

/* Trace t's fd from an empty kernel set on: after cvm_dma_open(), whose
 * probes leave nothing mapped. */
static void trace_start(const struct guest_target *t)
{
	nk = 0;
	t_err[0] = 0;
	traced_fd = t->container >= 0 ? t->container : t->iommufd;
	traced_ioas = t->ioas;
}

static uint8_t state[RAM_PG];

/* Does the traced kernel set hold exactly the shared RAM pages? */
static bool kset_matches(char *why, size_t len)
{
	static uint8_t k[RAM_PG];

	memset(k, 0, sizeof(k));
	for (size_t i = 0; i < nk; i++)
		for (uint64_t a = kset[i].s; a < kset[i].e; a += PG)
			if (a >= RAM_GPA && a < RAM_GPA + RAM_PG * PG)
				k[(a - RAM_GPA) / PG] = 1;
	for (uint64_t p = 0; p < RAM_PG; p++)
		if (k[p] != state[p]) {
			snprintf(why, len, "page %llu: kernel %d, shared %d", (unsigned long long)p,
				 k[p], state[p]);
			return false;
		}
	return true;
}

static void run_policy(struct guest_target *t, const char *policy, uint32_t flags, uint64_t g,
		       unsigned seed)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RAM_PG * PG,
					.hva = ram_hva };
	struct cvm_region_config bc = { .sz = sizeof(bc), .gpa = BOUNCE_GPA, .length = 2 * PG,
					.flags = CVM_REGION_INIT_SHARED, .hva = bounce_hva };
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1, .flags = flags, .split_granule = g };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_region *ram = NULL, *bounce = NULL;
	struct cvm_dma *d = NULL;
	uint64_t hit = 0, lib_disrupted = 0, claimed_bad = 0, count_bad = 0, set_bad = 0;
	char why[160] = "";
	int err;

	guest_target_config(t, &c);
	memset(state, 0, sizeof(state));
	err = cvm_region_create(&rc, &ram) ?: cvm_region_create(&bc, &bounce) ?:
	      cvm_dma_open(&c, &d);
	trace_start(t);
	err = err ?: cvm_dma_add_region(d, bounce) ?: cvm_dma_add_region(d, ram);
	if (!tap_ok(!err, "%s/%s: open (%d)", t->name, policy, err))
		goto out;
	cvm_dma_info(d, &info);
	for (int step = 0; step < STEPS && !err; step++) {
		struct cvm_dma_stats a = { .sz = sizeof(a) }, b = { .sz = sizeof(b) };
		struct cvm_range rs[3];
		uint8_t after[RAM_PG];
		int n = 1 + rand_r(&seed) % 3, to = step < 6 || rand_r(&seed) % 2;

		memcpy(after, state, sizeof(after));
		for (int k = 0; k < n; k++) {
			uint64_t s = rand_r(&seed) % RAM_PG;
			uint64_t len = 1 + rand_r(&seed) % (rand_r(&seed) % 3 ? 16 : 1024);

			if (step < 2) {            /* big runs first, to have something to cut */
				s = rand_r(&seed) % 1024;
				len = 1024 + rand_r(&seed) % 1024;
			}
			if (s + len > RAM_PG)
				len = RAM_PG - s;
			rs[k] = (struct cvm_range){ RAM_GPA + s * PG, len * PG };
			memset(after + s, to, len);
		}
		for (uint64_t p = 0; p < RAM_PG; p++)
			staying[p] = state[p] && after[p];
		cvm_dma_stats(d, &a);
		t_maps = t_unmaps = t_disrupted = 0;
		in_conversion = true;
		err = cvm_convert_batch(ram, rs, (size_t)n, to ? CVM_SHARED : CVM_PRIVATE, 0);
		in_conversion = false;
		cvm_dma_stats(d, &b);
		if (err) {
			tap_ok(false, "%s/%s: step %d convert (%d)", t->name, policy, step, err);
			break;
		}
		memcpy(state, after, sizeof(state));
		hit += t_disrupted;
		lib_disrupted += b.disrupted_bytes - a.disrupted_bytes;
		if (t_disrupted != b.disrupted_bytes - a.disrupted_bytes && !claimed_bad++)
			snprintf(why, sizeof(why), "step %d: kernel unmapped %llu staying bytes, "
				 "library says %llu", step, (unsigned long long)t_disrupted,
				 (unsigned long long)(b.disrupted_bytes - a.disrupted_bytes));
		if ((t_maps != b.map_calls - a.map_calls ||
		     t_unmaps != (b.unmap_calls - a.unmap_calls) + (b.cut_calls - a.cut_calls)) &&
		    !count_bad++)
			tap_diag("%s/%s: step %d: ioctls map %llu unmap/cut %llu; library map %llu "
				 "unmap %llu cut %llu", t->name, policy, step,
				 (unsigned long long)t_maps, (unsigned long long)t_unmaps,
				 (unsigned long long)(b.map_calls - a.map_calls),
				 (unsigned long long)(b.unmap_calls - a.unmap_calls),
				 (unsigned long long)(b.cut_calls - a.cut_calls));
		if (!t_err[0]) {
			char w2[160];

			if (!kset_matches(w2, sizeof(w2)) && !set_bad++)
				tap_diag("%s/%s: step %d: %s", t->name, policy, step, w2);
		}
	}
	if (t_err[0])
		tap_diag("%s/%s: tracer: %s", t->name, policy, t_err);
	if (why[0])
		tap_diag("%s/%s: %s", t->name, policy, why);
	tap_ok(!err && !t_err[0] && !set_bad,
	       "%s/%s: after each of %d conversions the kernel (traced at the ioctl boundary, "
	       "sizes as the kernel reported) maps exactly the shared pages", t->name, policy,
	       STEPS);
	if (info.can_cut || (flags & CVM_DMA_PER_PAGE))
		tap_ok(!err && hit == 0,
		       "%s/%s: hitless at the ioctl boundary: no ioctl unmapped a page that stays "
		       "shared (%llu bytes did)", t->name, policy, (unsigned long long)hit);
	tap_ok(!err && !claimed_bad,
	       "%s/%s: the staying bytes the kernel really unmapped equal the library's "
	       "disrupted_bytes (kernel %llu, library %llu)", t->name, policy,
	       (unsigned long long)hit, (unsigned long long)lib_disrupted);
	tap_ok(!err && !count_bad,
	       "%s/%s: map and unmap/cut ioctls the kernel saw equal the library's counters",
	       t->name, policy);
out:
	traced_fd = -1;
	cvm_dma_close(d);
	cvm_region_destroy(ram);
	cvm_region_destroy(bounce);
}

/* The shape of run_hitless in guest-lib.c, traced: a 512-page run, one hole,
 * then three holes in one batch. */
static void run_holes(struct guest_target *t)
{
	const char *policy = "holes";
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RAM_PG * PG,
					.hva = ram_hva };
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1 };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_region *ram = NULL;
	struct cvm_dma *d = NULL;
	struct cvm_range rs[3];
	uint64_t hit;
	int err;

	guest_target_config(t, &c);
	err = cvm_region_create(&rc, &ram) ?: cvm_dma_open(&c, &d);
	trace_start(t);
	err = err ?: cvm_dma_add_region(d, ram) ?:
	      cvm_convert(ram, RAM_GPA, 512 * PG, CVM_SHARED, 0);
	if (!tap_ok(!err, "%s/%s: setup (%d)", t->name, policy, err))
		goto out;
	cvm_dma_info(d, &info);
	memset(staying, 0, sizeof(staying));
	memset(staying, 1, 512);
	staying[100] = 0;
	t_disrupted = 0;
	in_conversion = true;
	err = cvm_convert(ram, RAM_GPA + 100 * PG, PG, CVM_PRIVATE, 0);
	for (int i = 0; i < 3; i++) {
		rs[i] = (struct cvm_range){ RAM_GPA + (200 + 100 * (uint64_t)i) * PG, PG };
		staying[200 + 100 * i] = 0;
	}
	err = err ?: cvm_convert_batch(ram, rs, 3, CVM_PRIVATE, 0);
	in_conversion = false;
	hit = t_disrupted;
	cvm_dma_stats(d, &st);
	if (t_err[0])
		tap_diag("%s/%s: tracer: %s", t->name, policy, t_err);
	tap_ok(!err && !t_err[0] && hit == st.disrupted_bytes && (!info.can_cut || hit == 0),
	       "%s: one hole, then three in a batch: the kernel unmapped %llu bytes of pages "
	       "that stayed shared (library: %llu disrupted, can_cut %u)", t->name,
	       (unsigned long long)hit, (unsigned long long)st.disrupted_bytes, info.can_cut);
out:
	traced_fd = -1;
	cvm_dma_close(d);
	cvm_region_destroy(ram);
}

static void run_target(const char *name)
{
	const struct { const char *name; uint32_t flags; uint64_t g; } pol[] = {
		{ "per-page", CVM_DMA_PER_PAGE, 0 }, { "auto", 0, 0 },
		{ "granule-64K", 0, 64 * 1024 }, { "unbounded", 0, UINT64_MAX },
	};
	struct guest_target t;

	if (!tap_target_open(&t, name))
		return;
	for (size_t i = 0; i < sizeof(pol) / sizeof(pol[0]); i++)
		run_policy(&t, pol[i].name, pol[i].flags, pol[i].g, 777 + (unsigned)i);
	run_holes(&t);
	guest_target_close(&t);
}

int main(int argc, char **argv)
{
	int st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!tap_need_edu(&st))
		return st;
	ram_hva = mmap(NULL, RAM_PG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	bounce_hva = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	if (ram_hva == MAP_FAILED || bounce_hva == MAP_FAILED) {
		printf("Bail out! mmap: %s\n", strerror(errno));
		return 1;
	}
	memset(ram_hva, 0, RAM_PG * PG);
	memset(bounce_hva, 0, 2 * PG);
	guest_each_target(argc, argv, run_target);
	printf("1..%d\n", tap_count);
	return tap_failed;
}
