// SPDX-License-Identifier: MIT
/*
 * Bad input and kernel refusals on the REAL backends, inside the test guest:
 * what cvm_dma_open(), cvm_dma_add_region(), cvm_convert() and
 * cvm_dma_close() do with
 *   - an fd that is not what the backend needs (a regular file, /dev/null,
 *     a closed fd number, an iommufd where a container is wanted and the
 *     other way round, a container with no group or no IOMMU set, a
 *     container set to the real driver's legacy v1 type), an IOAS id that
 *     does not exist or names another kind of object, CVM_BACKEND_AUTO with
 *     an fd;
 *   - a region whose host memory is not mapped or is read-only when it
 *     becomes shared (the kernel refuses the pin), and one whose IOVA range
 *     lies outside the IOMMU's valid ranges.
 * Each case checks the errno the man pages promise, that the caller's fd
 * stays open and usable, that no fd leaked (/proc/self/fd), that the
 * container or IOAS holds nothing the library mapped, and that an error
 * the library reports through the log is logged.
 *
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "cvmdma.h"
#include "dma.h"
#include "backend.h"
#include "guest-tap.h"
#include "guest.h"

#define PG	4096ull
#define NPG	16ull
#define RAM_GPA	0x40000000ull

/* ---- the library's log ---- */

static int log_errs;
static char log_last[1024];

static void log_fn(void *opaque, int prio, const char *msg)
{
	(void)opaque;
	if (prio > LOG_WARNING)
		return;
	if (prio <= LOG_ERR) {
		log_errs++;
		snprintf(log_last, sizeof(log_last), "%s", msg);
	}
	tap_diag("  log[%d]: %s", prio, msg);
}

static void log_reset(void)
{
	log_errs = 0;
	log_last[0] = 0;
}

static bool logged(const char *needle)
{
	return log_errs > 0 && (!needle || strstr(log_last, needle));
}

/* ---- fds ---- */

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static bool fd_open(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

/* The fd still does its own job. */
static bool container_usable(int fd)
{
	return fd_open(fd) && ioctl(fd, VFIO_GET_API_VERSION) == VFIO_API_VERSION;
}

static bool iommufd_usable(int fd)
{
	struct iommu_destroy d = { .size = sizeof(d) };

	if (!fd_open(fd) || guest_ioas_alloc(fd, &d.id))
		return false;
	return ioctl(fd, IOMMU_DESTROY, &d) == 0;
}

static bool any_usable(int fd)
{
	return fd_open(fd);
}

/* What a container (type1 ioctls) holds: bytes removed by an unmap-all. */
static int64_t container_drain(int fd)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .flags = VFIO_DMA_UNMAP_FLAG_ALL,
	};

	return ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u) ? -errno : (int64_t)u.size;
}

static int64_t ioas_drain(int fd, uint32_t ioas)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = ioas, .iova = 0, .length = UINT64_MAX,
	};

	return ioctl(fd, IOMMU_IOAS_UNMAP, &u) ? -errno : (int64_t)u.length;
}

/* What a context may change on an IOAS it does not own and must give back:
 * its HUGE_PAGES option, and whether it is the fd's VFIO-compat IOAS. */
struct ioas_state { int huge; uint32_t compat; int compat_err; };

static struct ioas_state ioas_state(int fd, uint32_t ioas)
{
	struct iommu_option o = {
		.size = sizeof(o), .option_id = IOMMU_OPTION_HUGE_PAGES,
		.op = IOMMU_OPTION_OP_GET, .object_id = ioas,
	};
	struct ioas_state s = { -1, 0, 0 };

	if (!ioctl(fd, IOMMU_OPTION, &o))
		s.huge = (int)o.val64;
	s.compat_err = guest_compat_ioas(fd, IOMMU_VFIO_IOAS_GET, &s.compat);
	return s;
}

static bool ioas_state_eq(struct ioas_state a, struct ioas_state b)
{
	return a.huge == b.huge && a.compat == b.compat && a.compat_err == b.compat_err;
}

/* ---- cvm_dma_open() with a bad (or odd) fd ---- */

static const char *backend_name(uint32_t b)
{
	static const char *n[] = { "AUTO", "TYPE1", "IOMMUFD", "MODEL" };

	return b < 4 ? n[b] : "?";
}

struct open_case {
	const char *what;
	uint32_t backend;
	int fd;
	uint32_t ioas_id;
	int want;                 /* 0 or -errno */
	uint32_t want_backend;    /* when want == 0 */
	const char *log;          /* on failure, a LOG_ERR line with this ("": any); NULL: none */
	bool (*usable)(int fd);   /* the caller's fd afterwards */
};

static int open_case(const struct open_case *c)
{
	struct cvm_dma_config cfg = {
		.sz = sizeof(cfg), .backend = c->backend, .fd = c->fd, .ioas_id = c->ioas_id,
	};
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_dma *dma = NULL;
	int n0, n1, ret, got_backend = -1;
	bool ok, fd_ok;

	log_reset();
	n0 = fd_count();
	ret = cvm_dma_open(&cfg, &dma);
	if (!ret) {
		cvm_dma_info(dma, &info);
		got_backend = (int)info.backend;
		cvm_dma_close(dma);
	}
	n1 = fd_count();
	/* An IOAS the context allocated on the caller's fd is gone again. */
	if (!ret && info.backend == CVM_BACKEND_IOMMUFD && c->fd >= 0 && !c->ioas_id) {
		struct iommu_ioas_iova_ranges q = { .size = sizeof(q), .ioas_id = info.ioas_id };

		if (!ioctl(c->fd, IOMMU_IOAS_IOVA_RANGES, &q) || errno != ENOENT) {
			tap_diag("IOAS %u the context allocated outlives it", info.ioas_id);
			n1 = -1;
		}
	}
	fd_ok = c->fd < 0 || !c->usable || c->usable(c->fd);
	ok = ret == c->want && (ret || (uint32_t)got_backend == c->want_backend) &&
	     (!ret || !c->log || logged(*c->log ? c->log : NULL)) && n0 == n1 && fd_ok;
	if (ret)
		tap_diag("%s %s: %d (%s)%s%s", backend_name(c->backend), c->what, ret,
			 strerror(-ret), log_errs ? ", logged: " : ", nothing logged",
			 log_last);
	tap_ok(ok, "open %s, fd %s%s: %d (want %d)%s%s%s%s, fds %d -> %d, fd %s",
	       backend_name(c->backend), c->what, c->ioas_id ? " + ioas_id" : "", ret,
	       c->want, ret ? (log_errs ? ", logged" : ", not logged") : ", backend ",
	       ret && c->log && *c->log ? (logged(c->log) ? " with " : " without ") : "",
	       ret ? (c->log && *c->log ? c->log : "") : backend_name((uint32_t)got_backend),
	       ret || got_backend == (int)c->want_backend ? "" : " (wrong)",
	       n0, n1, c->fd < 0 || !c->usable ? "n/a" : fd_ok ? "still usable" : "BROKEN");
	return ret;
}

static int oc(const char *what, uint32_t backend, int fd, uint32_t ioas_id, int want,
	      uint32_t want_backend, const char *log, bool (*usable)(int fd))
{
	struct open_case c = { what, backend, fd, ioas_id, want, want_backend, log,
			       usable };

	return open_case(&c);
}

/* ---- regions whose memory the kernel refuses, or whose IOVA is invalid ---- */

struct counts { uint64_t shared, private_; };
static int l_shared(void *o, uint64_t g, uint64_t l)
{
	(void)g;
	((struct counts *)o)->shared += l;
	return 0;
}
static void l_private(void *o, uint64_t g, uint64_t l)
{
	(void)g;
	((struct counts *)o)->private_ += l;
}
static const struct cvm_listener_ops lops = {
	.sz = sizeof(lops), .to_shared = l_shared, .to_private = l_private,
};

struct target {
	const char *name;
	struct cvm_dma_config cfg;
	int fd;                 /* the caller's container or iommufd */
	uint32_t ioas;          /* iommufd */
	bool iommufd;
	uint64_t probe_va;
};

static int64_t drain(const struct target *t)
{
	return t->iommufd ? ioas_drain(t->fd, t->ioas) : container_drain(t->fd);
}

/* Pages of [iova, iova + NPG pages) the kernel maps, as a bit mask. */
static int kernel_mask(struct cvm_dma *dma, const struct target *t, uint64_t iova, uint32_t *mask)
{
	*mask = 0;
	for (unsigned i = 0; i < NPG; i++) {
		int m = guest_kernel_mapped(dma, iova + i * PG, t->probe_va);

		if (m < 0)
			return m;
		if (m)
			*mask |= 1u << i;
	}
	return 0;
}

static int open_target_dma(const struct target *t, struct cvm_dma **dma)
{
	int ret = cvm_dma_open(&t->cfg, dma);

	if (ret)
		tap_diag("%s: cvm_dma_open: %s", t->name, strerror(-ret));
	return ret;
}

static uint64_t dma_mappings(struct cvm_dma *dma)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	return cvm_dma_stats(dma, &st) ? UINT64_MAX : st.mappings;
}

/* [p, p + len) is still not mapped: nothing the test did since its munmap
 * (an allocation of the library's, say) has mapped something there. */
static bool still_unmapped(const void *p, size_t len)
{
	return msync((void *)(uintptr_t)p, len, MS_ASYNC) == -1 && errno == ENOMEM;
}

/*
 * A region with INIT_SHARED whose memory cannot be pinned: add fails.  hole:
 * the part of it that must be unmapped, or NULL.  With a granule of 4
 * pages, the first two mappings succeed and are undone in one call.
 */
static void add_bad_memory(const struct target *t, const char *what, void *hva,
			   const void *hole, size_t hole_len, uint64_t granule)
{
	struct target tg = *t;
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG, .hva = hva,
		.flags = CVM_REGION_INIT_SHARED,
	};
	struct cvm_region *r = NULL;
	struct cvm_dma *dma = NULL;
	uint32_t mask = ~0u;
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	int n0 = fd_count(), ret, rm = 0, mk;
	bool hole_ok;
	int64_t left;

	tg.cfg.split_granule = granule;
	if (open_target_dma(&tg, &dma))
		goto fail;
	if (cvm_region_create(&rc, &r))
		goto fail;
	log_reset();
	hole_ok = !hole || still_unmapped(hole, hole_len);
	ret = cvm_dma_add_region(dma, r);
	cvm_dma_stats(dma, &st);
	mk = kernel_mask(dma, t, RAM_GPA, &mask);
	if (!ret)
		cvm_dma_remove_region(dma, r);
	else
		rm = cvm_dma_remove_region(dma, r);
	tap_diag("%s: add_region(shared, %s): %d (%s)%s%s", t->name, what, ret, strerror(-ret),
		 log_errs ? ", logged: " : ", nothing logged", log_last);
	cvm_dma_close(dma);
	cvm_region_destroy(r);
	left = drain(t);
	tap_ok(hole_ok && ret == -EFAULT && logged("not mapped, or not writable") &&
	       rm == -ENOENT && !mk && !mask && left == 0 && n0 == fd_count() && fd_open(t->fd) &&
	       st.map_calls == (granule ? 3 : 1) && st.unmap_calls == (granule ? 1 : 0),
	       "%s: add_region of a shared region on %s memory: %d (want -EFAULT), logged %d, "
	       "not added (%d), kernel maps %#x after %" PRIu64 " maps and %" PRIu64 " unmaps "
	       "(want %d and %d), left %" PRId64 " bytes, fd ok%s",
	       t->name, what, ret, log_errs, rm, mask, st.map_calls, st.unmap_calls,
	       granule ? 3 : 1, granule ? 1 : 0, left,
	       hole_ok ? "" : "; the hole was mapped again before the test");
	return;
fail:
	tap_ok(false, "%s: add_region of a shared region on %s memory: setup failed", t->name, what);
	cvm_dma_close(dma);
}

/*
 * A private region whose pages [0, 8) are fine and [8, 16) are bad (what):
 * page 2 shared first, then a conversion (batch: pages 4..5 and 9..10)
 * that the kernel refuses for the bad pages: -EFAULT, the state, the
 * listener and the kernel as before (only page 2 mapped), logged; then a
 * single conversion of only bad pages.
 */
static void convert_bad_memory(const struct target *t, const char *what, uint8_t *hva,
			       bool hole)
{
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG, .hva = hva,
	};
	struct cvm_range rg[2] = {
		{ RAM_GPA + 4 * PG, 2 * PG }, { RAM_GPA + 9 * PG, 2 * PG },
	};
	struct cvm_listener *l = NULL;
	struct cvm_region *r = NULL;
	struct cvm_dma *dma = NULL;
	struct counts c = { 0 };
	uint32_t mask1 = ~0u, mask2 = ~0u;
	int n0 = fd_count(), ret1, ret2, q1, q2, mk1, mk2, errs1;
	bool hole_ok1, hole_ok2;
	uint64_t maps1, maps2;
	int64_t left;

	if (open_target_dma(t, &dma) || cvm_region_create(&rc, &r) ||
	    cvm_listener_add(r, &lops, &c, 0, &l) || cvm_dma_add_region(dma, r) ||
	    cvm_convert(r, RAM_GPA + 2 * PG, PG, CVM_SHARED, 0)) {
		tap_ok(false, "%s: conversion of %s memory: setup failed", t->name, what);
		cvm_dma_close(dma);
		cvm_region_destroy(r);
		return;
	}
	c = (struct counts){ 0 };
	log_reset();
	hole_ok1 = !hole || still_unmapped(hva + 8 * PG, 8 * PG);
	ret1 = cvm_convert_batch(r, rg, 2, CVM_SHARED, 0);
	errs1 = log_errs;
	q1 = cvm_region_query(r, RAM_GPA + 3 * PG, NPG * PG - 3 * PG);
	maps1 = dma_mappings(dma);
	mk1 = kernel_mask(dma, t, RAM_GPA, &mask1);
	tap_diag("%s: batch to shared over %s memory: %d (%s)%s%s", t->name, what, ret1,
		 strerror(-ret1), errs1 ? ", logged: " : ", nothing logged", log_last);
	tap_ok(hole_ok1 && ret1 == -EFAULT && errs1 && logged("not mapped, or not writable") &&
	       q1 == CVM_PRIVATE && c.shared == c.private_ && maps1 == 1 && !mk1 &&
	       mask1 == 1u << 2,
	       "%s: batch to shared over good + %s memory: %d (want -EFAULT), logged %d, "
	       "state %d, listener +%" PRIu64 "/-%" PRIu64 ", mappings %" PRIu64
	       ", kernel maps %#x (want 0x4)",
	       t->name, what, ret1, errs1, q1, c.shared, c.private_, maps1, mask1);

	c = (struct counts){ 0 };
	log_reset();
	hole_ok2 = !hole || still_unmapped(hva + 8 * PG, 8 * PG);
	ret2 = cvm_convert(r, RAM_GPA + 8 * PG, 8 * PG, CVM_SHARED, 0);
	q2 = cvm_region_query(r, RAM_GPA + 8 * PG, 8 * PG);
	maps2 = dma_mappings(dma);
	mk2 = kernel_mask(dma, t, RAM_GPA, &mask2);
	cvm_dma_close(dma);
	cvm_listener_remove(l, 0);
	cvm_region_destroy(r);
	left = drain(t);
	tap_ok(hole_ok2 && ret2 == -EFAULT && logged("not mapped, or not writable") &&
	       q2 == CVM_PRIVATE &&
	       c.shared == c.private_ && maps2 == 1 && !mk2 && mask2 == 1u << 2 && left == 0 &&
	       n0 == fd_count() && fd_open(t->fd),
	       "%s: convert %s memory to shared: %d (want -EFAULT), logged %d, state %d, "
	       "listener +%" PRIu64 "/-%" PRIu64 ", kernel maps %#x; after close %" PRId64
	       " bytes left, fds %d -> %d",
	       t->name, what, ret2, log_errs, q2, c.shared, c.private_, mask2, left, n0,
	       fd_count());
}

/* A shared region whose IOVA window is not inside the valid ranges. */
static void add_bad_iova(const struct target *t, const char *what, uint64_t iova, uint8_t *hva)
{
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG, .hva = hva,
		.iova = iova, .flags = CVM_REGION_INIT_SHARED | CVM_REGION_IOVA,
	};
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_region *r = NULL;
	struct cvm_dma *dma = NULL;
	int ret, rm;
	int64_t left;

	if (open_target_dma(t, &dma) || cvm_region_create(&rc, &r)) {
		tap_ok(false, "%s: region at %s: setup failed", t->name, what);
		cvm_dma_close(dma);
		return;
	}
	log_reset();
	ret = cvm_dma_add_region(dma, r);
	rm = cvm_dma_remove_region(dma, r);
	cvm_dma_stats(dma, &st);
	tap_diag("%s: add_region at %s: %d (%s)%s%s", t->name, what, ret, strerror(-ret),
		 log_errs ? ", logged: " : ", nothing logged", log_last);
	cvm_dma_close(dma);
	cvm_region_destroy(r);
	left = drain(t);
	tap_ok(ret == -ERANGE && logged("valid IOVA ranges") && rm == -ENOENT &&
	       st.map_calls == 0 && left == 0,
	       "%s: add_region of a region at %s: %d (want -ERANGE), logged %d, map calls %" PRIu64
	       ", left %" PRId64 " bytes", t->name, what, ret, log_errs, st.map_calls, left);
}

static void region_cases(struct target *t, uint64_t iova_top)
{
	uint8_t *gone, *ro, *mixed;

	/* Unmapped: a reservation given back. */
	gone = mmap(NULL, NPG * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, NPG * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mixed = mmap(NULL, NPG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (gone == MAP_FAILED || ro == MAP_FAILED || mixed == MAP_FAILED) {
		tap_ok(false, "%s: mmap for the region cases", t->name);
		return;
	}
	munmap(gone, NPG * PG);
	memset(mixed, 0x5a, NPG * PG);

	add_bad_memory(t, "unmapped", gone, gone, NPG * PG, 0);
	add_bad_memory(t, "read-only (PROT_READ)", ro, NULL, 0, 0);

	/* Pages 8..15 unmapped, then read-only. */
	munmap(mixed + 8 * PG, 8 * PG);
	/* Four mappings of 4 pages: two map, the third fails, two undone. */
	add_bad_memory(t, "good, then unmapped,", mixed, mixed + 8 * PG, 8 * PG, 4 * PG);
	convert_bad_memory(t, "unmapped", mixed, true);
	if (mmap(mixed + 8 * PG, 8 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) == MAP_FAILED) {
		tap_ok(false, "%s: mmap for the read-only conversion", t->name);
	} else {
		convert_bad_memory(t, "read-only (PROT_READ)", mixed, false);
	}

	add_bad_iova(t, "the MSI window 0xfee00000", 0xfee00000ull, mixed);
	add_bad_iova(t, "the window across 0xfedfffff", 0xfedf8000ull, mixed);
	add_bad_iova(t, "above the top of the IOVA space", iova_top, mixed);
	munmap(ro, NPG * PG);
	munmap(mixed, NPG * PG);
}

/* The top of the highest valid IOVA range (+1) of a context on t, from its backend. */
static uint64_t iova_top(const struct target *t)
{
	struct cvm_dma *dma;
	struct cvm_be *be;
	uint64_t top = 0;

	if (cvm_dma_open(&t->cfg, &dma))
		return 0;
	be = cvm_dma_backend(dma);
	if (be->ops->refresh)
		be->ops->refresh(be);
	if (be->nranges)
		top = be->ranges[be->nranges - 1].last + 1;
	cvm_dma_close(dma);
	return top;
}

/* ---- the targets ---- */

/* /dev/iommu, a new IOAS with edu attached: its device id and HWPT id too. */
static int open_iommufd(int *fd, uint32_t *ioas, int *device, uint32_t *devid, uint32_t *hwpt)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at) };
	char bdf[32], cdev[256];
	int group, ret;

	*fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (*fd < 0)
		return -errno;
	if ((ret = guest_ioas_alloc(*fd, ioas)))
		return ret;
	if (guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev)) || !cdev[0])
		return -ENOENT;
	*device = open(cdev, O_RDWR | O_CLOEXEC);
	if (*device < 0)
		return -errno;
	bind.iommufd = *fd;
	if (ioctl(*device, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		return -errno;
	*devid = bind.out_devid;
	at.pt_id = *ioas;
	if (ioctl(*device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at))
		return -errno;
	*hwpt = at.pt_id;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static uint8_t probe_page[PG] __attribute__((aligned(4096)));

/*
 * No room to pin the cut probe's three pages (CAP_IPC_LOCK off,
 * RLIMIT_MEMLOCK 0: type1 and the compat container count the process's
 * locked pages, iommufd the user's, and 0 leaves no room in either): an
 * open that may cut fails (-ENOMEM, the log names the probe), one that
 * never cuts succeeds, and the fd is as usable as before.  backend/ioas: a
 * container (TYPE1, 0), an iommufd's IOAS, or the compat container's own
 * IOAS driven as IOMMUFD.
 */
static void pin_room_cases(int fd, enum cvm_backend backend, uint32_t ioas, const char *name,
			   bool (*usable)(int))
{
	static const struct { uint32_t flags; int want; const char *what; } k[] = {
		{ 0, -ENOMEM, "0" }, { CVM_DMA_NO_CUT, 0, "NO_CUT" },
		{ CVM_DMA_PER_PAGE, 0, "PER_PAGE" },
	};
	long locked = guest_locked_pages();
	struct rlimit old, lim;
	int err = 0;

	if (locked < 0 || getrlimit(RLIMIT_MEMLOCK, &old))
		err = -EIO;
	lim = old;
	lim.rlim_cur = 0;
	if (!err)
		err = guest_ipc_lock_effective(false);
	if (!err && setrlimit(RLIMIT_MEMLOCK, &lim))
		err = -errno;
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		struct cvm_dma_config cfg = {
			.sz = sizeof(cfg), .backend = backend, .fd = fd, .ioas_id = ioas,
			.flags = k[i].flags,
		};
		struct cvm_dma *dma = NULL;
		int n0 = fd_count(), ret;

		log_reset();
		ret = err ? err : cvm_dma_open(&cfg, &dma);
		cvm_dma_close(dma);
		tap_ok(!err && ret == k[i].want && (!ret || logged("cut probe")) &&
		       n0 == fd_count() && usable(fd),
		       "%s: no room to pin (VmLck %ld pages), flags %s: open %d (want %d)%s",
		       name, locked, k[i].what, ret, k[i].want,
		       !ret ? "" : logged("cut probe") ? ", the log names the cut probe" :
		       ", the log does not name the cut probe");
	}
	setrlimit(RLIMIT_MEMLOCK, &old);
	guest_ipc_lock_effective(true);
}

static void container_cases(bool kernel_a, unsigned long type, const char *name)
{
	int container = -1, device = -1, ret;
	struct target t = { .name = name };
	uint32_t compat_ioas = 0;
	struct ioas_state before = { 0 };

	ret = guest_open_type1(type, &container, &device);
	if (!tap_ok(ret == 0, "%s: open the edu device's container: %d", name, ret))
		return;
	/* The container where a /dev/iommu fd is wanted. */
	{
		uint32_t id = 0;

		/* Kernel B: the container IS an iommufd, whose compat IOAS
		 * holds the device. */
		if (!kernel_a) {
			int err = guest_compat_ioas(container, IOMMU_VFIO_IOAS_GET, &id);

			if (!tap_ok(!err && id, "compat: the container's compat IOAS: %u (%d)",
				    id, err)) {
				close_fd(&device);
				close_fd(&container);
				return;
			}
			compat_ioas = id;
			before = ioas_state(container, compat_ioas);
		}
	}
	if (kernel_a) {
		oc("= VFIO container", CVM_BACKEND_IOMMUFD, container, 0,
			  -ENOTTY, 0, "no iommufd", container_usable);
		oc("= VFIO container", CVM_BACKEND_IOMMUFD, container, 1,
			  -ENOTTY, 0, "no iommufd", container_usable);
	} else {
		/* iommufd's /dev/vfio/vfio is an iommufd: IOMMUFD works on it
		 * (a new IOAS no device is in, or the container's own IOAS). */
		oc("= compat container", CVM_BACKEND_IOMMUFD, container, 0,
			  0, CVM_BACKEND_IOMMUFD, NULL, container_usable);
		oc("= compat container, its own compat IOAS",
			  CVM_BACKEND_IOMMUFD, container, compat_ioas, 0, CVM_BACKEND_IOMMUFD, NULL,
			  container_usable);
	}
	oc("= VFIO container", CVM_BACKEND_AUTO, container, 0,
		  0, CVM_BACKEND_TYPE1, NULL, container_usable);
	/* A container has no IOAS: an ioas_id is a mistake. */
	oc("= VFIO container", CVM_BACKEND_TYPE1, container, 7,
		  -EINVAL, 0, "ioas_id 7", container_usable);
	oc("= VFIO container", CVM_BACKEND_AUTO, container, 7,
		  -EINVAL, 0, "ioas_id 7", container_usable);
	pin_room_cases(container, CVM_BACKEND_TYPE1, 0, name, container_usable);
	if (!kernel_a)
		pin_room_cases(container, CVM_BACKEND_IOMMUFD, compat_ioas,
			       "compat, its own compat IOAS as IOMMUFD", container_usable);
	if (!kernel_a) {
		struct ioas_state now = ioas_state(container, compat_ioas);

		tap_ok(ioas_state_eq(now, before),
		       "compat: after IOMMUFD contexts on the container its IOAS %u is as before: "
		       "HUGE_PAGES %d (was %d), compat IOAS %u/%d (was %u/%d)", compat_ioas,
		       now.huge, before.huge, now.compat, now.compat_err, before.compat,
		       before.compat_err);
	}
	{
		int64_t left = container_drain(container);

		tap_ok(left == 0, "%s: after the open cases the container holds %" PRId64 " bytes",
		       name, left);
	}
	t.fd = container;
	t.cfg = (struct cvm_dma_config){ .sz = sizeof(t.cfg), .backend = CVM_BACKEND_TYPE1,
					 .fd = container };
	t.probe_va = (uint64_t)(uintptr_t)probe_page;
	region_cases(&t, iova_top(&t));
	close_fd(&device);
	close_fd(&container);
}

/*
 * The real driver's legacy v1 type (kernel A): the library expects v2 but
 * must cope: no cut (the probe says so), the kernel maps exactly the shared
 * pages through conversions that trim and split mappings.
 */
static void v1_case(void)
{
	int container = -1, device = -1, ret;
	struct cvm_dma_config cfg = { .sz = sizeof(cfg), .backend = CVM_BACKEND_TYPE1 };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct target t = { .name = "type1-v1" };
	uint8_t *hva;
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG,
		.flags = CVM_REGION_INIT_SHARED,
	};
	struct cvm_region *r = NULL;
	struct cvm_dma *dma = NULL;
	uint32_t mask = ~0u, want = 0xffff;
	int errs = 0, n0 = fd_count(), mk;
	int64_t left;

	ret = guest_open_type1(VFIO_TYPE1_IOMMU, &container, &device);
	if (!tap_ok(ret == 0, "type1-v1: open the edu device's container with VFIO_TYPE1_IOMMU: %d",
		    ret))
		return;
	n0 = fd_count();
	hva = mmap(NULL, NPG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!tap_ok(hva != MAP_FAILED, "type1-v1: mmap the region's memory")) {
		close_fd(&device);
		close_fd(&container);
		return;
	}
	rc.hva = hva;
	cfg.fd = container;
	t.fd = container;
	t.probe_va = (uint64_t)(uintptr_t)probe_page;
	log_reset();
	ret = cvm_dma_open(&cfg, &dma);
	if (!ret)
		cvm_dma_info(dma, &info);
	tap_ok(ret == 0 && !info.can_cut, "type1-v1: open: %d, can_cut %u (want 0: real v1 cannot cut)",
	       ret, info.can_cut);
	if (ret)
		goto out;
	if (cvm_region_create(&rc, &r) || cvm_dma_add_region(dma, r)) {
		tap_ok(false, "type1-v1: add a shared region");
		goto out;
	}
	/* Trim an end, split the middle, unshare across mappings, reshare. */
	static const struct { unsigned p, n; int to; } steps[] = {
		{ 0, 1, CVM_PRIVATE }, { 5, 2, CVM_PRIVATE }, { 15, 1, CVM_PRIVATE },
		{ 5, 1, CVM_SHARED }, { 3, 6, CVM_PRIVATE }, { 0, 16, CVM_SHARED },
		{ 1, 14, CVM_PRIVATE },
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		uint32_t bits = ((1u << steps[i].n) - 1) << steps[i].p;

		if (cvm_convert(r, RAM_GPA + steps[i].p * PG, steps[i].n * PG,
				(enum cvm_state)steps[i].to, 0))
			errs++;
		want = steps[i].to == CVM_SHARED ? want | bits : want & ~bits;
		mk = kernel_mask(dma, &t, RAM_GPA, &mask);
		if (mk || mask != want)
			errs++;
	}
	tap_ok(errs == 0 && log_errs == 0, "type1-v1: 7 conversions: %d errors, kernel maps %#x "
	       "(want %#x), %d error log lines", errs, mask, want, log_errs);
out:
	cvm_dma_close(dma);
	cvm_region_destroy(r);
	left = container_drain(container);
	tap_ok(left == 0 && container_usable(container) && fd_count() == n0,
	       "type1-v1: after close: %" PRId64 " bytes left, container usable, fds kept", left);
	munmap(hva, NPG * PG);
	close_fd(&device);
	close_fd(&container);
}

/*
 * The library's own IOAS, no device attached: iommufd reports the whole
 * 64-bit space as valid and pins nothing (no domain), so unmapped memory
 * maps; a window that ends at 2^64 is still refused.
 */
static void nodevice_cases(void)
{
	struct cvm_dma_config cfg = { .sz = sizeof(cfg), .backend = CVM_BACKEND_IOMMUFD, .fd = -1 };
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = RAM_GPA, .length = NPG * PG,
		.flags = CVM_REGION_INIT_SHARED | CVM_REGION_IOVA,
	};
	struct cvm_region *r1 = NULL, *r2 = NULL;
	struct cvm_dma *dma = NULL;
	int n0 = fd_count(), ret1 = -1, ret2 = -1;
	uint8_t *gone;

	gone = mmap(NULL, NPG * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(gone, NPG * PG);
	rc.hva = gone;
	rc.iova = -(NPG * PG);
	if (!cvm_dma_open(&cfg, &dma) && !cvm_region_create(&rc, &r1)) {
		log_reset();
		ret1 = cvm_dma_add_region(dma, r1);
		tap_ok(ret1 == -ERANGE && logged("ends at 2^64"),
		       "iommufd, no device: a region whose IOVA window ends at 2^64: %d "
		       "(want -ERANGE), logged %d", ret1, log_errs);
		rc.iova = 0xfee00000ull;
		if (!cvm_region_create(&rc, &r2)) {
			log_reset();
			ret2 = cvm_dma_add_region(dma, r2);
			tap_ok(ret2 == 0 && dma_mappings(dma) == 1,
			       "iommufd, no device: unmapped memory at the MSI window maps (nothing "
			       "is pinned or checked before a device attaches): %d", ret2);
		}
	} else {
		tap_ok(false, "iommufd, no device: setup");
	}
	cvm_dma_close(dma);
	cvm_region_destroy(r1);
	cvm_region_destroy(r2);
	tap_ok(fd_count() == n0, "iommufd, no device: the context's own fd closed (%d -> %d)",
	       n0, fd_count());
}

static void iommufd_cases(void)
{
	int fd = -1, device = -1, ret;
	uint32_t ioas = 0, devid = 0, hwpt = 0;
	struct target t = { .name = "iommufd", .iommufd = true };
	struct ioas_state before;

	ret = open_iommufd(&fd, &ioas, &device, &devid, &hwpt);
	if (!tap_ok(ret == 0, "iommufd: /dev/iommu, an IOAS, edu attached: %d (dev %u, hwpt %u)",
		    ret, devid, hwpt)) {
		close_fd(&device);
		close_fd(&fd);
		return;
	}
	before = ioas_state(fd, ioas);
	oc("= iommufd, nonexistent ioas_id", CVM_BACKEND_IOMMUFD, fd,
		  ioas + 1000, -ENOENT, 0, "no IOAS of that id", iommufd_usable);
	oc("= iommufd, ioas_id = the HWPT's id", CVM_BACKEND_IOMMUFD,
		  fd, hwpt, -ENOENT, 0, "no IOAS of that id", iommufd_usable);
	oc("= iommufd, ioas_id = the device's id", CVM_BACKEND_IOMMUFD,
		  fd, devid, -ENOENT, 0, "no IOAS of that id", iommufd_usable);
	oc("= iommufd, its IOAS", CVM_BACKEND_AUTO, fd, ioas,
		  0, CVM_BACKEND_IOMMUFD, NULL, iommufd_usable);
	pin_room_cases(fd, CVM_BACKEND_IOMMUFD, ioas, "iommufd", iommufd_usable);
	{
		struct ioas_state now = ioas_state(fd, ioas);

		tap_ok(ioas_state_eq(now, before),
		       "iommufd: after the open cases IOAS %u is as before: HUGE_PAGES %d (was %d), "
		       "compat IOAS %u/%d (was %u/%d)", ioas, now.huge, before.huge, now.compat,
		       now.compat_err, before.compat, before.compat_err);
	}
	/* The container ioctls on an iommufd with no VFIO-compat IOAS. */
	oc("= iommufd", CVM_BACKEND_TYPE1, fd, 0,
		  -ENODEV, 0, "CVM_BACKEND_IOMMUFD", iommufd_usable);

	t.fd = fd;
	t.ioas = ioas;
	t.cfg = (struct cvm_dma_config){ .sz = sizeof(t.cfg), .backend = CVM_BACKEND_IOMMUFD,
					 .fd = fd, .ioas_id = ioas };
	t.probe_va = (uint64_t)(uintptr_t)probe_page;
	region_cases(&t, iova_top(&t));
	{
		int64_t left = ioas_drain(fd, ioas);

		struct ioas_state now = ioas_state(fd, ioas);

		tap_ok(left == 0 && iommufd_usable(fd) && ioas_state_eq(now, before),
		       "iommufd: after every case the IOAS holds %" PRId64 " bytes, HUGE_PAGES %d "
		       "(was %d), compat IOAS %u/%d (was %u/%d), fd usable", left, now.huge,
		       before.huge, now.compat, now.compat_err, before.compat, before.compat_err);
	}
	close_fd(&device);
	close_fd(&fd);
}

/* A group in a container with no IOMMU set; a container with no group. */
static void unset_container_cases(bool kernel_a)
{
	char bdf[32], cdev[256], path[64];
	int group, gfd = -1, cfd = -1, ret;

	cfd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (!tap_ok(cfd >= 0, "open /dev/vfio/vfio: %d", cfd >= 0 ? 0 : -errno))
		return;
	/* No group: A's container has no driver (-EINVAL); B's has no compat IOAS. */
	oc("= container without a group", CVM_BACKEND_TYPE1, cfd, 0,
		  kernel_a ? -EINVAL : -ENODEV, 0, "VFIO_SET_IOMMU", container_usable);
	oc("= container without a group", CVM_BACKEND_AUTO, cfd, 0,
		  kernel_a ? -EINVAL : -ENODEV, 0, "VFIO_SET_IOMMU", container_usable);
	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	if (!ret)
		gfd = open(path, O_RDWR | O_CLOEXEC);
	if (!tap_ok(gfd >= 0 && !ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &cfd),
		    "the edu group in a container, no VFIO_SET_IOMMU")) {
		close_fd(&gfd);
		close_fd(&cfd);
		return;
	}
	/* The group fd where its container is wanted. */
	oc("= the VFIO group (not its container)", CVM_BACKEND_TYPE1, gfd, 0, -ENOTTY, 0,
	   "no VFIO container", any_usable);
	if (kernel_a) {
		oc("= container whose IOMMU is not set",
			  CVM_BACKEND_TYPE1, cfd, 0, -EINVAL, 0, "VFIO_SET_IOMMU", container_usable);
	} else {
		/* iommufd made the compat IOAS when the group joined: the
		 * container works as a v2 container before VFIO_SET_IOMMU. */
		oc("= compat container whose IOMMU is not set",
			  CVM_BACKEND_TYPE1, cfd, 0, 0, CVM_BACKEND_TYPE1, NULL, container_usable);
	}
	close_fd(&gfd);
	close_fd(&cfd);
}

/* The cases on the fds main() opens; .fd indexes fds[] there. */
enum { F_REGFILE, F_DEVNULL, F_CLOSED, F_IOMMUFD, F_NONE };
static const struct open_case fd_cases[] = {
	/* TYPE1 with what is no container. */
	{ "= regular file", CVM_BACKEND_TYPE1, F_REGFILE, 0, -ENOTTY, 0, "no VFIO container",
	  any_usable },
	{ "= /dev/null", CVM_BACKEND_TYPE1, F_DEVNULL, 0, -ENOTTY, 0, "no VFIO container",
	  any_usable },
	{ "= closed fd", CVM_BACKEND_TYPE1, F_CLOSED, 0, -EBADF, 0, "not open", NULL },
	{ "-1", CVM_BACKEND_TYPE1, F_NONE, 0, -EINVAL, 0, NULL, NULL },
	/* IOMMUFD with what is no iommufd. */
	{ "= regular file", CVM_BACKEND_IOMMUFD, F_REGFILE, 0, -ENOTTY, 0, "no iommufd",
	  any_usable },
	{ "= regular file", CVM_BACKEND_IOMMUFD, F_REGFILE, 1, -ENOTTY, 0, "no iommufd",
	  any_usable },
	{ "= closed fd", CVM_BACKEND_IOMMUFD, F_CLOSED, 0, -EBADF, 0, "not open", NULL },
	{ "= closed fd", CVM_BACKEND_IOMMUFD, F_CLOSED, 1, -EBADF, 0, "not open", NULL },
	{ "-1", CVM_BACKEND_IOMMUFD, F_NONE, 1, -EINVAL, 0, NULL, NULL },
	{ "-1", CVM_BACKEND_IOMMUFD, F_NONE, 0, 0, CVM_BACKEND_IOMMUFD, NULL, NULL },
	/* AUTO with an fd. */
	{ "= regular file", CVM_BACKEND_AUTO, F_REGFILE, 0, -ENOTTY, 0, "no VFIO container",
	  any_usable },
	{ "= closed fd", CVM_BACKEND_AUTO, F_CLOSED, 0, -EBADF, 0, "not open", NULL },
	{ "= /dev/iommu", CVM_BACKEND_AUTO, F_IOMMUFD, 0, 0, CVM_BACKEND_IOMMUFD, NULL,
	  iommufd_usable },
	{ "-1", CVM_BACKEND_AUTO, F_NONE, 0, 0, CVM_BACKEND_IOMMUFD, NULL, NULL },
};

int main(void)
{
	char bdf[32], cdev[256], alias[] = "/tmp/badfd-iommu", file[] = "/tmp/badfd-file";
	int group, regfile, devnull, closed, iommufd, aliasfd = -1;
	bool kernel_a;
	struct stat st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev)) == -ENODEV)
		return tap_skip_all("no edu device bound to vfio-pci (not in the test guest?)");
	kernel_a = guest_kernel_a();
	tap_diag("kernel %s", kernel_a ? "A (legacy type1 container)" : "B (iommufd compat container)");
	cvm_set_log(log_fn, NULL, LOG_DEBUG);

	regfile = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* A number nothing here opens (a freed low one would be reused). */
	closed = 999;
	while (fcntl(closed, F_GETFD) != -1)
		closed--;
	iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (!tap_ok(regfile >= 0 && devnull >= 0 && iommufd >= 0, "fds for the cases"))
		return tap_done();

	int fds[] = { [F_REGFILE] = regfile, [F_DEVNULL] = devnull, [F_CLOSED] = closed,
		      [F_IOMMUFD] = iommufd, [F_NONE] = -1 };
	for (size_t i = 0; i < sizeof(fd_cases) / sizeof(fd_cases[0]); i++) {
		struct open_case c = fd_cases[i];

		c.fd = fds[c.fd];
		open_case(&c);
	}
	/* The same iommufd device through another node (a VMM in a mount
	 * namespace or a jail with its own /dev): still a /dev/iommu fd. */
	if (!stat("/dev/iommu", &st) && !mknod(alias, S_IFCHR | 0600, st.st_rdev))
		aliasfd = open(alias, O_RDWR | O_CLOEXEC);
	if (tap_ok(aliasfd >= 0, "an iommufd opened through %s: %d", alias,
		   aliasfd >= 0 ? 0 : -errno))
		oc("= iommufd opened as /tmp/badfd-iommu",
			  CVM_BACKEND_AUTO, aliasfd, 0, 0, CVM_BACKEND_IOMMUFD, NULL, iommufd_usable);
	close_fd(&aliasfd);
	unlink(alias);

	unset_container_cases(kernel_a);
	if (kernel_a) {
		container_cases(true, VFIO_TYPE1v2_IOMMU, "type1");
		v1_case();
	} else {
		container_cases(false, VFIO_TYPE1_IOMMU, "compat");
	}
	iommufd_cases();
	nodevice_cases();

	close_fd(&iommufd);
	close_fd(&regfile);
	close_fd(&devnull);
	unlink(file);
	return tap_done();
}
