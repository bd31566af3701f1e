// SPDX-License-Identifier: MIT
/*
 * The type1 and iommufd backends against a fake kernel: this program
 * defines ioctl(), so the backends' calls land here for the fake fds (the
 * real kernel's behaviour is asserted in the guest, tests/vm/conf-guest.c).
 * The fake lets us build what a real kernel rarely hands out: misaligned
 * and malformed capability chains, answers that grow between two calls,
 * refusals at each step of the cut set-up.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "fail-alloc.h"
#include "internal.h"
#include "backend.h"

#define PG 4096ull
#define MAX_MAPS 64
#define MAX_LOG 64

enum fk_unmap_rules {
	FK_V2,          /* real type1 v2: a bisected mapping is -EINVAL */
	FK_V1,          /* real type1 v1: covers the start: whole mapping; else 0 bytes */
	FK_COMPAT_V2,   /* iommufd compat: -ENOENT */
	FK_CUT,         /* iommufd compat with 4 KiB IOPTEs: splits */
};

struct fk_map { uint64_t iova, len; };

static struct fake {
	int fd;
	enum fk_unmap_rules vfio_rules;
	struct fk_map maps[MAX_MAPS];
	int nmaps;
	/* VFIO_IOMMU_GET_INFO: the caps chain as the kernel would copy it out */
	uint8_t caps[8192];
	size_t caps_len;
	uint64_t pgsizes;            /* 0: the IOMMU's page checked is 4 KiB */
	int get_info_calls;
	int get_info_err;            /* forced error for every GET_INFO */
	bool has_avail;              /* the chain has DMA_AVAIL, at caps + avail_off */
	size_t avail_off;
	bool info_keeps_growing;     /* every short GET_INFO: the chain grows too */
	int refuse_unmap_all;        /* -EINVAL for VFIO_DMA_UNMAP_FLAG_ALL */
	int map_err;                 /* forced error for every map */
	int split_err;               /* a cut that must split an area fails first */
	void (*map_hook)(void);      /* called once after a successful map */
	/* iommufd */
	uint32_t next_id, compat_ioas;   /* 0: no compat IOAS */
	bool huge_pages;
	int huge_pages_set_err;
	int vfio_ioas_set_err;       /* forced error for IOMMU_VFIO_IOAS SET */
	struct iommu_iova_range ranges[8];
	uint32_t nranges, ranges_grow_once;
	bool ranges_keep_growing;    /* every sizing call: one range more */
	uint64_t huge_align;         /* IOVA alignment with huge pages on; 0: PG */
	uint32_t destroyed;
	int destroy_err;             /* IOMMU_DESTROY fails (-EBUSY: a device attached) */
	unsigned long log[MAX_LOG];      /* ioctl numbers, in order */
	int nlog;
	/* the process, not the IOMMU */
	int iommu_open_err;          /* open("/dev/iommu") fails with this errno */
	bool serve_dev_iommu;        /* open("/dev/iommu") succeeds: the fake answers there */
	int dev_iommu_fd;            /* what that open returned; -1: none */
	int iommu_opens;
	long host_page;              /* sysconf(_SC_PAGESIZE); 0: the real one */
} fk;

static void fk_reset(void)
{
	memset(&fk, 0, sizeof(fk));
	fk.fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fk.fd, 0);
	fk.pgsizes = 0x40201000;
	fk.next_id = 1;
	fk.huge_pages = true;
	fk.ranges[0] = (struct iommu_iova_range){ 0, UINT64_MAX };
	fk.nranges = 1;
	fk.dev_iommu_fd = -1;
}

static void fk_fini(void)
{
	close(fk.fd);
}

/* ---- the fake address space ---- */

/* Inclusive ends throughout: the scratch window may end at 2^64. */
static uint64_t m_last(const struct fk_map *m)
{
	return m->iova + (m->len - 1);
}

static bool overlaps(const struct fk_map *m, uint64_t iova, uint64_t last)
{
	return m->iova <= last && iova <= m_last(m);
}

static int fk_do_map(uint64_t iova, uint64_t len)
{
	if (fk.map_err)
		return fk.map_err;
	if (!len || (iova | len) & (PG - 1))
		return -EINVAL;
	for (int i = 0; i < fk.nmaps; i++)
		if (overlaps(&fk.maps[i], iova, iova + (len - 1)))
			return -EEXIST;
	cr_assert_lt(fk.nmaps, MAX_MAPS);
	fk.maps[fk.nmaps++] = (struct fk_map){ iova, len };
	if (fk.map_hook) {
		void (*hook)(void) = fk.map_hook;

		fk.map_hook = NULL;
		hook();
	}
	return 0;
}

static void fk_remove(int i)
{
	fk.maps[i] = fk.maps[--fk.nmaps];
}

/* Split the mapping that holds both `last` and `last + 1` between them. */
static void fk_split_after(uint64_t last)
{
	for (int i = 0; i < fk.nmaps; i++) {
		struct fk_map *m = &fk.maps[i];

		if (m->iova <= last && last < m_last(m)) {
			uint64_t end = m_last(m);

			m->len = last - m->iova + 1;
			fk.maps[fk.nmaps++] = (struct fk_map){ last + 1, end - last };
			return;
		}
	}
}

static bool fk_bisected(uint64_t iova, uint64_t last)
{
	for (int i = 0; i < fk.nmaps; i++) {
		const struct fk_map *m = &fk.maps[i];

		if (overlaps(m, iova, last) && (m->iova < iova || m_last(m) > last))
			return true;
	}
	return false;
}

static int fk_do_unmap(enum fk_unmap_rules rules, uint64_t iova, uint64_t last, uint64_t *size)
{
	*size = 0;
	if (rules == FK_CUT) {
		if (iova)
			fk_split_after(iova - 1);
		fk_split_after(last);
	}
	if (rules != FK_V1 && fk_bisected(iova, last))
		return rules == FK_V2 ? -EINVAL : -ENOENT;
	for (int i = fk.nmaps - 1; i >= 0; i--) {
		const struct fk_map *m = &fk.maps[i];
		bool gone = rules == FK_V1 ? m->iova >= iova && m->iova <= last :
			    overlaps(m, iova, last);

		if (gone) {
			*size += m->len;
			fk_remove(i);
		}
	}
	return 0;
}

/* ---- VFIO ---- */

static int fk_get_info(struct vfio_iommu_type1_info *info)
{
	size_t need = sizeof(*info) + fk.caps_len;

	fk.get_info_calls++;
	if (fk.get_info_err)
		return fk.get_info_err;
	info->flags = VFIO_IOMMU_INFO_PGSIZES;
	info->iova_pgsizes = fk.pgsizes;
	info->cap_offset = 0;
	if (!fk.caps_len)
		return 0;
	info->flags |= VFIO_IOMMU_INFO_CAPS;
	if (info->argsz < need) {
		info->argsz = need;
		/* A device attached meanwhile: the next call needs more again. */
		if (fk.info_keeps_growing) {
			cr_assert_leq(fk.caps_len + 16, sizeof(fk.caps));
			fk.caps_len += 16;
		}
		return 0;
	}
	memcpy(info + 1, fk.caps, fk.caps_len);
	info->cap_offset = sizeof(*info);
	return 0;
}

static int fk_vfio_unmap(struct vfio_iommu_type1_dma_unmap *u, bool on_iommufd)
{
	enum fk_unmap_rules rules = fk.vfio_rules;
	uint64_t size;
	int ret;

	if (on_iommufd) {
		if (!fk.compat_ioas)
			return -ENODEV;
		rules = fk.huge_pages ? FK_COMPAT_V2 : FK_CUT;
	}
	if (u->flags & VFIO_DMA_UNMAP_FLAG_ALL) {
		if (fk.refuse_unmap_all)
			return -EINVAL;
		ret = fk_do_unmap(rules, 0, UINT64_MAX, &size);
	} else if (rules == FK_CUT && fk.split_err &&
		   fk_bisected(u->iova, u->iova + (u->size - 1))) {
		/* iommufd_vfio_unmap_dma(): iopt_cut_iova() splits at the
		 * range's end first; when that iopt_area_split() fails
		 * (-ENOMEM), nothing has changed and nothing is copied back. */
		return fk.split_err;
	} else {
		ret = fk_do_unmap(rules, u->iova, u->iova + (u->size - 1), &size);
	}
	u->size = size;
	return ret;
}

/* ---- iommufd ---- */

static int fk_ranges(struct iommu_ioas_iova_ranges *q)
{
	uint32_t n = fk.nranges, room = q->num_iovas;

	q->num_iovas = n;
	/* The kernel's iopt_calculate_iova_alignment(): PAGE_SIZE with huge
	 * pages off, else 1 (a fresh IOAS: no domain) or the domains' page. */
	q->out_iova_alignment = fk.huge_pages && fk.huge_align ? fk.huge_align : PG;
	if (room < n) {
		/* Once, or every time: the list grows between the sizing call
		 * and the next. */
		if (fk.ranges_grow_once) {
			fk.nranges += fk.ranges_grow_once;
			fk.ranges_grow_once = 0;
		} else if (fk.ranges_keep_growing) {
			cr_assert_lt(fk.nranges, ARRAY_SIZE(fk.ranges));
			fk.nranges++;
		}
		return -EMSGSIZE;
	}
	memcpy((void *)(uintptr_t)q->allowed_iovas, fk.ranges, n * sizeof(fk.ranges[0]));
	return 0;
}

static int fk_option(struct iommu_option *o)
{
	if (o->option_id != IOMMU_OPTION_HUGE_PAGES)
		return -EOPNOTSUPP;
	if (o->op == IOMMU_OPTION_OP_GET) {
		o->val64 = fk.huge_pages;
		return 0;
	}
	if (o->val64 == 0 && fk.huge_pages_set_err)
		return fk.huge_pages_set_err;
	fk.huge_pages = o->val64;
	return 0;
}

static int fk_vfio_ioas(struct iommu_vfio_ioas *v)
{
	switch (v->op) {
	case IOMMU_VFIO_IOAS_GET:
		if (!fk.compat_ioas)
			return -ENODEV;
		v->ioas_id = fk.compat_ioas;
		return 0;
	case IOMMU_VFIO_IOAS_SET:
		if (fk.vfio_ioas_set_err)
			return fk.vfio_ioas_set_err;
		fk.compat_ioas = v->ioas_id;
		return 0;
	default:
		fk.compat_ioas = 0;
		return 0;
	}
}

static int fk_ioctl(unsigned long req, void *arg)
{
	uint64_t size;
	int ret;

	switch (req) {
	case VFIO_IOMMU_GET_INFO:
		return fk_get_info(arg);
	case VFIO_IOMMU_MAP_DMA: {
		struct vfio_iommu_type1_dma_map *m = arg;
		uint64_t pgsize = fk.pgsizes ? fk.pgsizes & -fk.pgsizes : PG;

		/* vfio_dma_do_map(): the host address too, to the smallest page. */
		if ((m->iova | m->size | m->vaddr) & (pgsize - 1))
			return -EINVAL;
		return fk_do_map(m->iova, m->size);
	}
	case VFIO_IOMMU_UNMAP_DMA:
		return fk_vfio_unmap(arg, fk.vfio_rules == (enum fk_unmap_rules)-1);
	case IOMMU_IOAS_ALLOC:
		((struct iommu_ioas_alloc *)arg)->out_ioas_id = fk.next_id++;
		return 0;
	case IOMMU_DESTROY:
		if (fk.destroy_err)
			return fk.destroy_err;
		fk.destroyed = ((struct iommu_destroy *)arg)->id;
		return 0;
	case IOMMU_IOAS_MAP: {
		struct iommu_ioas_map *m = arg;

		return fk_do_map(m->iova, m->length);
	}
	case IOMMU_IOAS_UNMAP: {
		struct iommu_ioas_unmap *u = arg;

		/* Native: never splits; nothing unmapped is -ENOENT too. */
		ret = fk_do_unmap(FK_COMPAT_V2, u->iova, u->iova == 0 && u->length == UINT64_MAX ?
				  UINT64_MAX : u->iova + (u->length - 1), &size);
		u->length = size;
		return ret ? ret : size ? 0 : -ENOENT;
	}
	case IOMMU_IOAS_IOVA_RANGES:
		return fk_ranges(arg);
	case IOMMU_OPTION:
		return fk_option(arg);
	case IOMMU_VFIO_IOAS:
		return fk_vfio_ioas(arg);
	default:
		return -ENOTTY;
	}
}

int ioctl(int fd, unsigned long req, ...);
int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;
	int ret;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if ((fd != fk.fd && fd != fk.dev_iommu_fd) || fd <= 0)
		return syscall(SYS_ioctl, fd, req, arg);
	if (fk.nlog < MAX_LOG)
		fk.log[fk.nlog++] = req;
	ret = fk_ioctl(req, arg);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return 0;
}

/*
 * cvm_dma_open(3) with fd -1 opens /dev/iommu itself (open(), O_CLOEXEC):
 * armed with fk.iommu_open_err, an open of it fails as on a kernel without
 * iommufd or for a process that may not open it; with fk.serve_dev_iommu it
 * succeeds, with a new fd (of /dev/null) that the fake kernel answers on as
 * on fk.fd.  Every other open passes through, as does every sysconf() but
 * the host page size fk.host_page fakes (a host with pages larger than
 * 4 KiB).
 */
static int open_as(const char *sym, const char *path, int flags, va_list ap)
{
	int (*real)(const char *, int, ...);
	mode_t mode = 0;

	/* glibc's __OPEN_NEEDS_MODE(): only then is there a mode to pass on
	 * (__O_TMPFILE: O_TMPFILE itself needs _GNU_SOURCE before the first
	 * system header). */
	if (flags & O_CREAT || (flags & __O_TMPFILE) == __O_TMPFILE)
		mode = va_arg(ap, mode_t);
	if (fk.iommu_open_err && !strcmp(path, "/dev/iommu")) {
		fk.iommu_opens++;
		errno = fk.iommu_open_err;
		return -1;
	}
	real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, sym);
	if (fk.serve_dev_iommu && !strcmp(path, "/dev/iommu")) {
		fk.iommu_opens++;
		fk.dev_iommu_fd = real("/dev/null", flags, mode);
		return fk.dev_iommu_fd;
	}
	return real(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	int ret;

	va_start(ap, flags);
	ret = open_as("open", path, flags, ap);
	va_end(ap);
	return ret;
}

int open64(const char *path, int flags, ...);
int open64(const char *path, int flags, ...)
{
	va_list ap;
	int ret;

	va_start(ap, flags);
	ret = open_as("open64", path, flags, ap);
	va_end(ap);
	return ret;
}

long sysconf(int name)
{
	static long (*real)(int);

	if (name == _SC_PAGESIZE && fk.host_page)
		return fk.host_page;
	if (!real)
		real = (long (*)(int))dlsym(RTLD_NEXT, "sysconf");
	return real(name);
}

/* Position of the first req in the ioctl log, or MAX_LOG. */
static int logged_at(unsigned long req)
{
	for (int i = 0; i < fk.nlog; i++)
		if (fk.log[i] == req)
			return i;
	return MAX_LOG;
}

/* ---- capability chains ---- */

/* Appends a capability at the end of fk.caps (no padding: the fake may
 * misalign on purpose) and links it from the previous one. */
static size_t last_cap = SIZE_MAX;

static void add_cap(const void *cap, size_t len)
{
	struct vfio_info_cap_header h;
	size_t off = fk.caps_len;

	cr_assert_leq(off + len, sizeof(fk.caps));
	memcpy(fk.caps + off, cap, len);
	if (last_cap != SIZE_MAX) {
		memcpy(&h, fk.caps + last_cap, sizeof(h));
		h.next = sizeof(struct vfio_iommu_type1_info) + off;
		memcpy(fk.caps + last_cap, &h, sizeof(h));
	}
	last_cap = off;
	fk.caps_len += len;
}

static void add_dma_avail(uint32_t avail)
{
	struct vfio_iommu_type1_info_dma_avail c = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, .version = 1 },
		.avail = avail,
	};

	fk.has_avail = true;
	fk.avail_off = fk.caps_len + offsetof(struct vfio_iommu_type1_info_dma_avail, avail);
	add_cap(&c, sizeof(c));   /* 12 bytes: the next cap is misaligned */
}

/* What DMA_AVAIL says from now on: the kernel's count changed (the
 * context's maps and unmaps, or another user's of the container). */
static void set_dma_avail(uint32_t avail)
{
	cr_assert(fk.has_avail);
	memcpy(fk.caps + fk.avail_off, &avail, sizeof(avail));
}

static void add_iova_ranges(const struct vfio_iova_range *r, uint32_t n)
{
	uint8_t buf[4096];
	struct vfio_iommu_type1_info_cap_iova_range c = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, .version = 1 },
		.nr_iovas = n,
	};

	cr_assert_leq(sizeof(c) + n * sizeof(*r), sizeof(buf));
	memcpy(buf, &c, sizeof(c));
	memcpy(buf + sizeof(c), r, n * sizeof(*r));
	add_cap(buf, sizeof(c) + n * sizeof(*r));
}

static void q35_chain(void)
{
	const struct vfio_iova_range r[] = {
		{ 0xfef00000, 0xffffffffffff }, { 0, 0xfedfffff },   /* out of order */
	};

	last_cap = SIZE_MAX;
	add_dma_avail(65535);
	add_iova_ranges(r, 2);
}

static void setup(void)
{
	fk_reset();
	last_cap = SIZE_MAX;
}

static void teardown(void)
{
	cvm_set_alloc_hooks(NULL);
	fk_fini();
}

/* What *out of a failed cvm_dma_open() still holds: it is never written. */
#define OUT_UNSET ((struct cvm_dma *)&fk)

TestSuite(type1, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(iommufd, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(dma_open, .init = setup, .fini = teardown, .timeout = 60);

/* ---- type1 ---- */

Test(type1, reads_capabilities_through_a_misaligned_chain)
{
	struct cvm_be *be;

	q35_chain();
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->kind, CVM_BACKEND_TYPE1);
	cr_assert_eq(be->pgsizes, 0x40201000);
	cr_assert_eq(be->entries_avail, 65535);
	cr_assert_eq(be->nranges, 2);
	cr_assert_eq(be->ranges[0].start, 0);
	cr_assert_eq(be->ranges[0].last, 0xfedfffff);
	cr_assert_eq(be->ranges[1].start, 0xfef00000);
	cr_assert_eq(be->ranges[1].last, 0xffffffffffff);
	cvm_backend_destroy(be);
}

Test(type1, a_dma_avail_of_uint32_max_means_no_limit)
{
	struct cvm_be *be;

	add_dma_avail(UINT32_MAX);   /* iommufd's compat container */
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->entries_avail, UINT64_MAX);
	cvm_backend_destroy(be);
}

Test(type1, asks_again_with_the_size_the_kernel_wants)
{
	struct vfio_iova_range r[100];
	struct cvm_be *be;

	for (int i = 0; i < 100; i++)
		r[i] = (struct vfio_iova_range){ i * 0x100000ull, i * 0x100000ull + 0xfffff - PG };
	add_iova_ranges(r, 100);
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->nranges, 100);
	cr_assert_eq(be->entries_avail, UINT64_MAX, "no DMA_AVAIL: no limit");
	fk.get_info_calls = 0;
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(fk.get_info_calls, 2, "one short call, one with the right argsz");
	cvm_backend_destroy(be);
}

Test(type1, without_an_iova_range_capability_every_iova_is_valid)
{
	struct cvm_be *be;

	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->nranges, 1);
	cr_assert_eq(be->ranges[0].start, 0);
	cr_assert_eq(be->ranges[0].last, UINT64_MAX);
	cr_assert_eq(be->entries_avail, UINT64_MAX);
	cvm_backend_destroy(be);
}

Test(type1, refuses_a_looping_or_truncated_chain)
{
	struct vfio_info_cap_header h;
	struct cvm_be *be = NULL;

	q35_chain();
	/* Point the second capability back at the first. */
	memcpy(&h, fk.caps + 12, sizeof(h));
	h.next = sizeof(struct vfio_iommu_type1_info);
	memcpy(fk.caps + 12, &h, sizeof(h));
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -EPROTO);
	cr_assert_null(be);

	/* A range count that runs past what the kernel copied out. */
	fk_fini();
	setup();
	q35_chain();
	memset(fk.caps + 12 + 8, 0xff, 4);
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -EPROTO);
	cr_assert_null(be);
}

Test(type1, refuses_overlapping_iova_ranges)
{
	const struct vfio_iova_range r[] = { { 0, 0x1fffff }, { 0x100000, 0x2fffff } };
	struct cvm_be *be = NULL;

	add_iova_ranges(r, 2);
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -EPROTO);
}

/* A range that ends below its start is no range. */
Test(type1, refuses_an_iova_range_that_ends_below_its_start)
{
	const struct vfio_iova_range r[] = { { 0x300000, 0x1fffff } };
	struct cvm_be *be = NULL;

	add_iova_ranges(r, 1);
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -EPROTO);
	cr_assert_null(be);
}

/* Ranges that share one byte overlap too (the kernel's "last" is inclusive). */
Test(type1, refuses_iova_ranges_that_share_their_edge_byte)
{
	const struct vfio_iova_range r[] = { { 0, 0x1fffff }, { 0x1fffff, 0x2fffff } };
	struct cvm_be *be = NULL;

	add_iova_ranges(r, 2);
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -EPROTO);
}

Test(type1, a_failed_refresh_keeps_the_old_capabilities)
{
	struct cvm_be *be;

	q35_chain();
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	fk.caps[0] = 0xff;   /* corrupt the chain: header id only, harmless */
	memset(fk.caps + 12 + 8, 0xff, 4);   /* nr_iovas huge */
	cr_assert_eq(be->ops->refresh(be), -EPROTO);
	cr_assert_eq(be->nranges, 2);
	cr_assert_eq(be->entries_avail, 65535);
	cvm_backend_destroy(be);
}

static void probe_as(enum fk_unmap_rules rules, bool want_cut)
{
	struct cvm_be *be;

	setup();
	q35_chain();
	fk.vfio_rules = rules;
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->can_cut, want_cut, "rules %d", rules);
	cr_assert_eq(be->ops->cut != NULL, want_cut, "rules %d", rules);
	cr_assert_eq(fk.nmaps, 0, "rules %d: the probe left %d mappings", rules, fk.nmaps);
	cvm_backend_destroy(be);
	fk_fini();
}

Test(type1, only_a_kernel_that_cuts_one_page_and_keeps_the_rest_gets_the_cut)
{
	fk_fini();
	probe_as(FK_V2, false);
	probe_as(FK_V1, false);
	probe_as(FK_COMPAT_V2, false);
	probe_as(FK_CUT, true);
	setup();
}

Test(type1, a_taken_scratch_window_means_no_cut_not_a_failed_open)
{
	struct cvm_be *be;

	q35_chain();
	fk.vfio_rules = FK_CUT;
	fk.map_err = -EEXIST;
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_not(be->can_cut);
	cvm_backend_destroy(be);
}

/* A probe the kernel cannot pin tells nothing about the cut: a context
 * opened then would be disruptive for its whole life. */
Test(type1, a_probe_without_memory_fails_the_open)
{
	struct cvm_be *be = NULL;

	q35_chain();
	fk.vfio_rules = FK_CUT;
	fk.map_err = -ENOMEM;
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), -ENOMEM);
	cr_assert_null(be);
	cr_assert_eq(fk.nmaps, 0);
	/* A context that will never cut (NO_CUT, PER_PAGE) does not probe. */
	cr_assert_eq(cvm_backend_type1_open(fk.fd, false, &be), 0);
	cr_assert_not(be->can_cut);
	cvm_backend_destroy(be);
}

/* cvm_dma_open(3) is MT-Safe: a context opened on a container while another
 * one's probe holds the scratch window must not take the window's being in
 * use for the kernel's "no cut" and go without the cut for its whole life. */
static pthread_t other_thread;
static struct cvm_be *other_be;
static int other_ret = 1;
static atomic_bool other_done;

static void *open_other(void *arg)
{
	(void)arg;
	other_ret = cvm_backend_type1_open(fk.fd, true, &other_be);
	atomic_store(&other_done, true);
	return NULL;
}

/* Runs from inside the first probe's map: the second open starts, and gets
 * time to finish while the first one still holds the window. */
static void start_other_open(void)
{
	cr_assert_eq(pthread_create(&other_thread, NULL, open_other, NULL), 0);
	for (int i = 0; i < 100 && !atomic_load(&other_done); i++)
		usleep(2000);
}

Test(type1, a_context_opened_during_another_ones_probe_gets_the_cut_too)
{
	struct cvm_be *be;

	q35_chain();
	fk.vfio_rules = FK_CUT;
	fk.map_hook = start_other_open;
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(pthread_join(other_thread, NULL), 0);
	cr_assert_eq(other_ret, 0);
	cr_assert(be->can_cut);
	cr_assert(other_be->can_cut, "the second context took the first one's probe for \"no cut\"");
	cr_assert_eq(fk.nmaps, 0, "the probes left mappings");
	cvm_backend_destroy(other_be);
	cvm_backend_destroy(be);
}

Test(type1, unmap_all_falls_back_to_one_whole_space_unmap)
{
	struct cvm_be *be;
	uint64_t got;

	q35_chain();
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->ops->map(be, 0x100000, 2 * PG, NULL), 0);
	cr_assert_eq(be->ops->map(be, 0x7ffff000, PG, NULL), 0);
	fk.refuse_unmap_all = -EINVAL;
	cr_assert_eq(be->ops->unmap_all(be), 0);
	cr_assert_eq(fk.nmaps, 0);
	cr_assert_eq(be->ops->unmap(be, 0, PG, &got), 0);
	cr_assert_eq(got, 0);
	cvm_backend_destroy(be);
}

Test(type1, ops_report_the_raw_kernel_answers)
{
	struct cvm_be *be;
	uint64_t got = 1;

	q35_chain();
	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cr_assert_eq(be->ops->map(be, 0x200000, 16 * PG, NULL), 0);
	cr_assert_eq(be->ops->map(be, 0x200000 + PG, PG, NULL), -EEXIST);
	cr_assert_eq(be->ops->unmap(be, 0x200000 + PG, PG, &got), -EINVAL);
	cr_assert_eq(got, 0, "0 bytes reported on error");
	cr_assert_eq(be->ops->unmap(be, 0x100000, PG, &got), 0);
	cr_assert_eq(got, 0);
	cr_assert_eq(be->ops->unmap(be, 0x1ff000, 18 * PG, &got), 0);
	cr_assert_eq(got, 16 * PG);
	cvm_backend_destroy(be);
}

Test(type1, destroy_leaves_the_vmm_container_open)
{
	struct cvm_be *be;

	cr_assert_eq(cvm_backend_type1_open(fk.fd, true, &be), 0);
	cvm_backend_destroy(be);
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0);
}

/* Every line since log_buf was last emptied (LOG_ERR ones, or down to the
 * priority cvm_set_log() was given), one per line: the line a test looks
 * for may not be the last one of a failed call. */
static char log_buf[4096];

static void keep_log(void *opaque, int prio, const char *msg)
{
	size_t used = strlen(log_buf);

	(void)opaque;
	(void)prio;
	snprintf(log_buf + used, sizeof(log_buf) - used, "%s\n", msg);
}

/*
 * An IOMMU whose smallest page (64 KiB) is larger than the host's: type1
 * refuses a map whose host address is not a multiple of it, so the region
 * is refused when it joins, with its reason, not at each conversion with
 * a bare -EINVAL.
 */
Test(type1, a_region_whose_hva_is_not_on_an_iommu_page_is_refused_with_its_reason)
{
	const uint64_t big = 16 * PG;
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd, .flags = CVM_DMA_NO_CUT };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0x100000, .length = 2 * big,
					.page_size = big };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;

	fk.pgsizes = big | 0x200000;
	mem = aligned_alloc(big, 4 * big);
	cr_assert_not_null(mem);
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	rc.hva = mem + PG;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), -EINVAL);
	cr_assert(strstr(log_buf, "hva") && strstr(log_buf, "65536 bytes, the IOMMU's smallest page"),
		  "log: %s", log_buf);
	cvm_region_destroy(r);
	/* On the IOMMU page: it joins and maps. */
	rc.hva = mem + big;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_convert(r, rc.gpa, big, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_stats(d, &st), 0);
	cr_assert_eq(st.mappings, 1);
	cr_assert_eq(fk.nmaps, 1);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/*
 * cvm_dma_add_region(3): the region's pages must be whole IOMMU pages, or
 * every map of them would fail with a bare -EINVAL.  All shared from the
 * start, so a region let in would be mapped at once.  The IOVA half of
 * the check cannot be reached from here: cvm_region_create(3) already
 * wants the IOVA on the region's page, so an IOVA off the IOMMU's page
 * comes with a page size off it too.
 */
Test(type1, a_region_whose_pages_are_not_iommu_pages_is_refused_with_its_reason)
{
	const uint64_t big = 16 * PG;
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd, .flags = CVM_DMA_NO_CUT };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0x100000, .length = 2 * big,
					.flags = CVM_REGION_INIT_SHARED };
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;

	fk.pgsizes = big | 0x200000;
	mem = aligned_alloc(big, 2 * big);
	cr_assert_not_null(mem);
	rc.hva = mem;
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), -EINVAL);
	cr_assert(strstr(log_buf, "page size 4096") &&
		  strstr(log_buf, "the IOMMU's smallest page, 65536 bytes"), "log: %s", log_buf);
	cr_assert_eq(fk.nmaps, 0);
	cvm_region_destroy(r);
	/* 64 KiB pages at an IOVA on a 4 KiB page only: the region's own
	 * check refuses it first. */
	rc.page_size = big;
	rc.flags |= CVM_REGION_IOVA;
	rc.iova = 0x100000 + PG;
	cr_assert_eq(cvm_region_create(&rc, &r), -EINVAL);
	/* On the IOMMU's pages: it joins and maps. */
	rc.iova = 0x100000;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(fk.nmaps, 1);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/* cvm_dma_open(3): GET_INFO is asked again with the size the kernel wants,
 * but not forever: an answer that outgrows every size is -EAGAIN, and the
 * container stays the caller's. */
Test(type1, an_info_that_keeps_growing_is_eagain_and_the_container_stays_open)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd, .flags = CVM_DMA_NO_CUT };
	struct vfio_iova_range r[40];
	struct cvm_dma *d = OUT_UNSET;
	int ret;

	for (int i = 0; i < 40; i++)
		r[i] = (struct vfio_iova_range){ i * 0x100000ull, i * 0x100000ull + 0xfffff - PG };
	add_iova_ranges(r, 40);   /* more than the first call's 512 bytes */
	fk.info_keeps_growing = true;
	ret = cvm_dma_open(&dc, &d);
	cr_assert_eq(ret, -EAGAIN, "open: %d", ret);
	cr_assert_eq(d, OUT_UNSET, "*out written");
	/* Asked again a few times, not forever (the page promises no number). */
	cr_assert(fk.get_info_calls >= 2 && fk.get_info_calls <= 8, "gave up after %d calls",
		  fk.get_info_calls);
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0, "the caller's container was closed");
	/* The same answer, once it stops growing, opens. */
	fk.info_keeps_growing = false;
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_dma_close(d);
}

/* ---- type1 contexts on the fake: counts, refreshes, the log ---- */

/* A context on the fake type1 container; CVM_DMA_NO_CUT: no probe. */
static struct cvm_dma *open_type1(void)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd, .flags = CVM_DMA_NO_CUT };
	struct cvm_dma *d;
	int ret;

	ret = cvm_dma_open(&dc, &d);
	cr_assert_eq(ret, 0, "open: %d", ret);
	return d;
}

/* A region of npages private 4 KiB pages at gpa, on memory *mem of its own. */
static struct cvm_region *type1_region(uint64_t gpa, uint64_t npages, char **mem)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = gpa, .length = npages * PG };
	struct cvm_region *r;

	*mem = aligned_alloc(PG, npages * PG);
	cr_assert_not_null(*mem);
	rc.hva = *mem;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	return r;
}

static uint64_t entries_avail(struct cvm_dma *d)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	cr_assert_eq(cvm_dma_stats(d, &st), 0);
	return st.entries_avail;
}

/*
 * cvm_convert(3), -ENOSPC: a type1 container with no entry left (another
 * user of the container took them all) refuses a share before any map,
 * and the log line names type1's own knob, vfio_iommu_type1's
 * dma_entry_limit in sysfs, not the model backend's stand-in for it.
 */
Test(type1, the_entry_limit_line_names_the_module_parameter_of_vfio_iommu_type1)
{
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;

	add_dma_avail(0);
	d = open_type1();
	r = type1_region(0x100000, 16, &mem);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_convert(r, 0x100000, PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(cvm_region_query(r, 0x100000, 16 * PG), CVM_PRIVATE);
	cr_assert_eq(logged_at(VFIO_IOMMU_MAP_DMA), MAX_LOG, "the kernel was asked to map");
	cr_assert(strstr(log_buf, "type1 backend would exceed its mapping limit: 1 more mapping "
			 "needed, 0 left") &&
		  strstr(log_buf, "raise /sys/module/vfio_iommu_type1/parameters/"
			 "dma_entry_limit") &&
		  !strstr(log_buf, "model_entry_limit"), "log: %s", log_buf);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/*
 * At its entry limit a type1 context asks the kernel for its count again
 * before it refuses (another user may have freed entries).  Where
 * VFIO_IOMMU_GET_INFO fails, it goes by its own count, 0: the share is
 * -ENOSPC with nothing mapped, not made on the strength of the count the
 * kernel gave at open (1, before the context took that entry).  Once the
 * kernel answers again, its count is the one that holds.
 */
Test(type1, at_the_limit_a_failed_get_info_leaves_the_contexts_own_count)
{
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;
	int calls;

	add_dma_avail(1);
	d = open_type1();
	r = type1_region(0x100000, 16, &mem);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_convert(r, 0x100000, PG, CVM_SHARED, 0), 0);
	cr_assert_eq(entries_avail(d), 0);
	set_dma_avail(0);
	fk.get_info_err = -EINVAL;
	calls = fk.get_info_calls;
	cvm_set_log(keep_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_convert(r, 0x100000 + 2 * PG, PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_gt(fk.get_info_calls, calls, "the kernel was not asked");
	cr_assert(strstr(log_buf, "VFIO_IOMMU_GET_INFO on fd") &&
		  strstr(log_buf, "mapping limit: 1 more mapping needed, 0 left"), "log: %s",
		  log_buf);
	cr_assert_eq(cvm_region_query(r, 0x100000 + 2 * PG, PG), CVM_PRIVATE);
	cr_assert_eq(fk.nmaps, 1);
	cr_assert_eq(entries_avail(d), 0);
	/* The kernel answers again: another user freed an entry. */
	fk.get_info_err = 0;
	set_dma_avail(1);
	cr_assert_eq(cvm_convert(r, 0x100000 + 2 * PG, PG, CVM_SHARED, 0), 0);
	cr_assert_eq(fk.nmaps, 2);
	cr_assert_eq(entries_avail(d), 0);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/*
 * cvm_dma_add_region(3) reads the backend's capabilities again and, with
 * nothing mapped, takes the kernel's count of free entries.  Where
 * VFIO_IOMMU_GET_INFO fails, the region still joins (checked against the
 * ranges read before) and the context keeps its own count: 2, where the
 * count the backend read last, while the context held a mapping, is 1.
 */
Test(type1, a_failed_get_info_at_add_region_keeps_the_contexts_own_count)
{
	struct cvm_region *r[3];
	struct cvm_dma *d;
	char *mem[3];

	add_dma_avail(2);
	d = open_type1();
	for (int i = 0; i < 3; i++)
		r[i] = type1_region(0x100000 + i * 0x100000, 16, &mem[i]);
	cr_assert_eq(cvm_dma_add_region(d, r[0]), 0);
	cr_assert_eq(cvm_convert(r[0], 0x100000, PG, CVM_SHARED, 0), 0);
	set_dma_avail(1);
	cr_assert_eq(cvm_dma_add_region(d, r[1]), 0);     /* reads 1, one mapping held */
	cr_assert_eq(cvm_convert(r[0], 0x100000, PG, CVM_PRIVATE, 0), 0);
	set_dma_avail(2);
	cr_assert_eq(entries_avail(d), 2);
	fk.get_info_err = -EINVAL;
	cvm_set_log(keep_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_dma_add_region(d, r[2]), 0);
	cr_assert(strstr(log_buf, "VFIO_IOMMU_GET_INFO on fd"), "log: %s", log_buf);
	cr_assert_eq(entries_avail(d), 2);
	/* Both entries are there to take. */
	cr_assert_eq(cvm_convert(r[2], 0x300000, PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r[2], 0x300000 + 2 * PG, PG, CVM_SHARED, 0), 0);
	cr_assert_eq(fk.nmaps, 2);
	cr_assert_eq(entries_avail(d), 0);
	for (int i = 0; i < 3; i++) {
		cvm_region_destroy(r[i]);
		free(mem[i]);
	}
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
}

/*
 * A type1 kernel that reports no IOMMU page sizes: the context takes
 * 4 KiB, a region's smallest page, for the IOMMU's.  A region of 4 KiB
 * pages whose IOVA and hva lie on 4 KiB but not on 8 KiB joins and maps,
 * and cvm_dma_info(3) passes on the sizes as the backend reported them.
 */
Test(type1, without_page_sizes_the_iommus_page_is_taken_as_4_KiB)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0x101000, .length = 2 * PG,
					.flags = CVM_REGION_INIT_SHARED };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;

	fk.pgsizes = 0;
	d = open_type1();
	cr_assert_eq(cvm_dma_info(d, &info), 0);
	cr_assert_eq(info.iova_pgsizes, 0);
	mem = aligned_alloc(2 * PG, 4 * PG);
	cr_assert_not_null(mem);
	rc.hva = mem + PG;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(fk.nmaps, 1);
	cr_assert_eq(fk.maps[0].iova, 0x101000);
	cr_assert_eq(fk.maps[0].len, 2 * PG);
	cvm_region_destroy(r);
	cr_assert_eq(fk.nmaps, 0);
	cvm_dma_close(d);
	free(mem);
}

/*
 * cvm_dma_add_region(3), -ERANGE: the log line lists the backend's valid
 * IOVA ranges, at most 8 of them, and says how many more there are, so
 * that the line stays short whatever the kernel reports (here 10).
 */
Test(type1, a_region_outside_ten_iova_ranges_logs_eight_and_how_many_more)
{
	struct vfio_iova_range rg[10];
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem, want[64];

	for (int i = 0; i < 10; i++)
		rg[i] = (struct vfio_iova_range){ i * 0x100000ull, i * 0x100000ull + 0x7ffff };
	add_iova_ranges(rg, 10);
	d = open_type1();
	r = type1_region(0x10000000, 16, &mem);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_dma_add_region(d, r), -ERANGE);
	cr_assert(strstr(log_buf, "not inside one of the type1 backend's valid IOVA ranges: "
			 "[0x0, 0x7ffff] [0x100000, 0x17ffff]") &&
		  strstr(log_buf, " [0x700000, 0x77ffff] and 2 more\n"), "log: %s", log_buf);
	for (int i = 8; i < 10; i++) {
		snprintf(want, sizeof(want), "[0x%x00000,", i);
		cr_assert_null(strstr(log_buf, want), "range %d listed: %s", i, log_buf);
	}
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/*
 * open() with allocation k = 1, 2, ... failing, until an open no longer
 * reaches the armed one: each failed open must return -ENOMEM and no
 * backend, and then pass clean(k) (NULL: nothing more to check).  Returns
 * the open that worked; *k (if not NULL) gets the k it was armed with.
 */
static struct cvm_be *open_at_each_allocation(int (*open)(struct cvm_be **be),
					      void (*clean)(int fail_at), int *k)
{
	struct cvm_be *be;
	int fail_at, ret;

	for (fail_at = 1;; fail_at++) {
		be = NULL;
		fail_alloc_arm(fail_at);
		ret = open(&be);
		fail_alloc_disarm();
		if (!ret) {
			cr_assert_gt(fail_alloc_left, 0, "allocation %d failed, yet the open succeeded",
				     fail_at);
			break;
		}
		cr_assert_eq(ret, -ENOMEM, "allocation %d: %d", fail_at, ret);
		cr_assert_null(be);
		if (clean)
			clean(fail_at);
	}
	if (k)
		*k = fail_at;
	return be;
}

static int type1_open_v2(struct cvm_be **be)
{
	return cvm_backend_type1_open(fk.fd, true, be);
}

static void nothing_mapped(int fail_at)
{
	cr_assert_eq(fk.nmaps, 0, "allocation %d: %d mappings left", fail_at, fk.nmaps);
}

Test(type1, open_fails_cleanly_at_every_allocation)
{
	struct cvm_be *be;
	int fail_at;

	q35_chain();
	be = open_at_each_allocation(type1_open_v2, NULL, &fail_at);
	cr_assert_gt(fail_at, 2);
	cvm_backend_destroy(be);
}

/* Before Linux 5.4 there is no IOVA_RANGE capability: the library makes the
 * one range "everything" itself, and memory running out for it is -ENOMEM
 * like any other allocation of the open, with nothing left allocated. */
Test(type1, without_an_iova_range_capability_open_fails_cleanly_at_every_allocation)
{
	struct cvm_be *be;
	int fail_at;

	add_dma_avail(65535);
	be = open_at_each_allocation(type1_open_v2, nothing_mapped, &fail_at);
	cr_assert_gt(fail_at, 3, "the range's own allocation was never failed");
	cr_assert_eq(be->nranges, 1);
	cr_assert_eq(be->ranges[0].start, 0);
	cr_assert_eq(be->ranges[0].last, UINT64_MAX);
	cr_assert_eq(be->entries_avail, 65535);
	cvm_backend_destroy(be);
}

/* A chain longer than the first GET_INFO's 512 bytes of room: the library
 * asks again with the argsz the kernel wants, so its buffer ends exactly
 * where the chain does, and a capability at the end has nothing after it. */
static void long_chain(void)
{
	struct vfio_iova_range r[40];

	last_cap = SIZE_MAX;
	for (int i = 0; i < 40; i++)
		r[i] = (struct vfio_iova_range){ i * 0x100000ull, i * 0x100000ull + 0xfffff - PG };
	add_iova_ranges(r, 40);
	add_dma_avail(65535);
}

/* An open of a type1 context on the fake's chain: -EPROTO and its log line,
 * *out not written, nothing mapped, the container still open. */
static void refused_as_malformed(const char *what)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd };
	struct cvm_dma *d = OUT_UNSET;
	int ret;

	log_buf[0] = '\0';
	cvm_set_log(keep_log, NULL, LOG_ERR);
	ret = cvm_dma_open(&dc, &d);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(ret, -EPROTO, "%s: open: %d", what, ret);
	cr_assert_eq(d, OUT_UNSET, "%s: *out written", what);
	cr_assert(strstr(log_buf, "malformed VFIO_IOMMU_GET_INFO capability chain"), "%s: log: %s",
		  what, log_buf);
	cr_assert_eq(fk.nmaps, 0, "%s", what);
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0, "%s: the container was closed", what);
}

/*
 * cvm_dma_open(3): a capability that runs past the end of the kernel's
 * reply is -EPROTO, not a read past the library's buffer: a DMA_AVAIL or
 * an IOVA_RANGE cut short, and a "next" whose header would straddle the
 * end.  No kernel sends these; the parse must not trust the chain.
 */
Test(type1, a_capability_that_runs_past_the_end_of_the_reply_is_eproto)
{
	struct vfio_iommu_type1_info_dma_avail avail = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, .version = 1 },
		.avail = 100,
	};
	struct vfio_iommu_type1_info_cap_iova_range range = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, .version = 1 },
	};
	struct vfio_info_cap_header h;
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_TYPE1,
				     .fd = fk.fd };
	struct cvm_dma *d;

	/* The chain whole opens: the fake's long chain is a good one. */
	long_chain();
	cr_assert_gt(fk.caps_len, 512);
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_dma_close(d);

	/* DMA_AVAIL's header, without its count. */
	fk_fini();
	setup();
	long_chain();
	add_cap(&avail, sizeof(avail.header));
	refused_as_malformed("DMA_AVAIL cut short");

	/* IOVA_RANGE's header and nr_iovas (0), without its reserved field. */
	fk_fini();
	setup();
	long_chain();
	add_cap(&range, offsetofend(struct vfio_iommu_type1_info_cap_iova_range, nr_iovas));
	refused_as_malformed("IOVA_RANGE cut short");

	/* The last capability's next points 4 bytes before the end. */
	fk_fini();
	setup();
	long_chain();
	memcpy(&h, fk.caps + last_cap, sizeof(h));
	h.next = sizeof(struct vfio_iommu_type1_info) + fk.caps_len - 4;
	memcpy(fk.caps + last_cap, &h, sizeof(h));
	refused_as_malformed("a header across the end");
}

/* ---- iommufd ---- */

static void as_iommufd(void)
{
	fk.vfio_rules = (enum fk_unmap_rules)-1;   /* VFIO ioctls go to the compat IOAS */
}

Test(iommufd, want_cut_sets_small_pages_and_the_compat_ioas_before_the_first_map)
{
	struct cvm_be *be;
	uint64_t got;

	as_iommufd();
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, true, &be), 0);
	cr_assert(be->can_cut);
	cr_assert_not_null(be->ops->cut);
	cr_assert(be->own_ioas);
	cr_assert_not(be->own_fd);
	cr_assert_not(fk.huge_pages);
	cr_assert_eq(fk.compat_ioas, be->ioas_id);
	cr_assert_lt(logged_at(IOMMU_OPTION), logged_at(IOMMU_IOAS_MAP));
	cr_assert_lt(logged_at(IOMMU_VFIO_IOAS), logged_at(IOMMU_IOAS_MAP));
	cr_assert_eq(be->pgsizes, PG, "4 KiB IOPTEs only");
	cr_assert_eq(fk.nmaps, 0, "the probe left mappings");

	/* The cut keeps the neighbours; the native unmap still refuses. */
	cr_assert_eq(be->ops->map(be, 0x100000, 8 * PG, NULL), 0);
	cr_assert_eq(be->ops->unmap(be, 0x100000 + PG, PG, &got), -ENOENT);
	cr_assert_eq(be->ops->cut(be, 0x100000 + PG, PG, &got), 0);
	cr_assert_eq(got, PG);
	cr_assert_eq(be->ops->unmap(be, 0x100000, 8 * PG, &got), 0);
	cr_assert_eq(got, 7 * PG);
	cvm_backend_destroy(be);
	cr_assert_eq(fk.destroyed, 1, "our IOAS is destroyed");
	cr_assert_eq(fk.compat_ioas, 0, "our compat claim is released");
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0, "an adopted fd stays open");
}

Test(iommufd, a_cut_never_lands_in_another_ioas_made_the_compat_one)
{
	struct cvm_be *be;
	uint64_t got = 1;

	as_iommufd();
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, true, &be), 0);
	cr_assert(be->can_cut);
	cr_assert_eq(be->ops->map(be, 0x100000, 8 * PG, NULL), 0);
	fk.compat_ioas = 42;   /* the fd's owner switched it */
	cr_assert_eq(be->ops->cut(be, 0x100000 + PG, PG, &got), -EBUSY);
	cr_assert_eq(got, 0);
	cr_assert_eq(fk.nmaps, 1, "the cut went through");
	cvm_backend_destroy(be);
	cr_assert_eq(fk.compat_ioas, 42, "someone else's compat IOAS was cleared");
}

Test(iommufd, without_want_cut_nothing_is_changed_on_the_ioas)
{
	struct cvm_be *be;

	as_iommufd();
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, false, &be), 0);
	cr_assert_not(be->can_cut);
	cr_assert_null(be->ops->cut);
	cr_assert(fk.huge_pages);
	cr_assert_eq(fk.compat_ioas, 0);
	cr_assert_eq(be->pgsizes, ~(PG - 1));
	cr_assert_eq(be->entries_avail, UINT64_MAX);
	cvm_backend_destroy(be);
}

Test(iommufd, a_refused_huge_pages_switch_means_no_cut_not_a_failed_open)
{
	struct cvm_be *be;

	as_iommufd();
	fk.huge_pages_set_err = -EINVAL;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	cr_assert_not(be->can_cut);
	cr_assert_eq(fk.compat_ioas, 0, "compat claimed although the cut cannot work");
	cr_assert_eq(logged_at(IOMMU_IOAS_MAP), MAX_LOG, "probed anyway");
	cvm_backend_destroy(be);
	cr_assert_eq(fk.destroyed, 0, "an adopted IOAS is not destroyed");
}

Test(iommufd, another_compat_ioas_is_not_taken_over_and_huge_pages_come_back)
{
	struct cvm_be *be;

	as_iommufd();
	fk.compat_ioas = 42;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	cr_assert_not(be->can_cut);
	cr_assert_eq(fk.compat_ioas, 42);
	cr_assert(fk.huge_pages, "HUGE_PAGES left off without a cut to show for it");
	cr_assert_eq(be->pgsizes, ~(PG - 1));
	cvm_backend_destroy(be);
	cr_assert_eq(fk.compat_ioas, 42);
}

/* The VMM made our IOAS the compat one before we came: it stays so when we
 * go (a CLEAR would cut the VMM's VFIO ioctls off it), and the huge pages
 * we turned off on its IOAS come back. */
Test(iommufd, an_adopted_compat_ioas_stays_and_gets_its_huge_pages_back)
{
	struct cvm_be *be;

	as_iommufd();
	fk.compat_ioas = 7;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	cr_assert(be->can_cut);
	cr_assert_not(fk.huge_pages);
	cvm_backend_destroy(be);
	cr_assert_eq(fk.compat_ioas, 7, "the VMM's compat IOAS was cleared");
	cr_assert(fk.huge_pages, "HUGE_PAGES left off on the VMM's IOAS");
	cr_assert_eq(fk.destroyed, 0);
}

/* An open the kernel answered with "no cut": the IOAS as it was (huge
 * pages on, not the fd's compat IOAS); destroys be. */
static void opened_without_cut(struct cvm_be *be)
{
	cr_assert_not(be->can_cut);
	cr_assert(fk.huge_pages);
	cr_assert_eq(fk.compat_ioas, 0);
	cvm_backend_destroy(be);
}

Test(iommufd, a_failed_probe_undoes_the_setup)
{
	struct cvm_be *be;

	as_iommufd();
	fk.map_err = -EINVAL;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	opened_without_cut(be);
}

/* The kernel's own -ENOMEM from the compat switch is its answer: no cut. */
Test(iommufd, a_refused_compat_switch_means_no_cut_not_a_failed_open)
{
	struct cvm_be *be = NULL;

	as_iommufd();
	fk.vfio_ioas_set_err = -ENOMEM;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	opened_without_cut(be);
}

Test(iommufd, a_probe_without_memory_fails_the_open_and_undoes_the_setup)
{
	struct cvm_be *be = NULL;

	as_iommufd();
	fk.map_err = -ENOMEM;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), -ENOMEM);
	cr_assert_null(be);
	cr_assert(fk.huge_pages);
	cr_assert_eq(fk.compat_ioas, 0);
	cr_assert_eq(fk.nmaps, 0);
}

Test(iommufd, an_ioas_already_without_huge_pages_keeps_them_off)
{
	struct cvm_be *be;

	as_iommufd();
	fk.huge_pages = false;
	fk.map_err = -EINVAL;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be), 0);
	cr_assert_not(be->can_cut);
	cr_assert_not(fk.huge_pages, "the owner's setting was changed");
	cvm_backend_destroy(be);
}

/* Until a device is attached an IOAS with huge pages has no domain, and
 * the kernel reports an IOVA alignment of 1 (iopt_init_table()): that is no
 * IOMMU page of 1 byte (cvm_dma_info(3)'s iova_pgsizes), and the library
 * maps 4 KiB at least. */
Test(iommufd, an_alignment_of_one_before_a_device_is_no_one_byte_iommu_page)
{
	const uint64_t least = PG;
	struct cvm_be *be;

	as_iommufd();
	fk.huge_align = 1;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, false, &be), 0);
	cr_assert_eq(be->pgsizes & -be->pgsizes, least, "pgsizes %#llx",
		     (unsigned long long)be->pgsizes);
	cr_assert_eq(be->pgsizes, ~(least - 1));
	cvm_backend_destroy(be);
	/* Nor after a cut that did not work brought the huge pages back. */
	fk.map_err = -EINVAL;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, true, &be), 0);
	cr_assert_not(be->can_cut);
	cr_assert(fk.huge_pages);
	cr_assert_eq(be->pgsizes, ~(least - 1), "pgsizes %#llx", (unsigned long long)be->pgsizes);
	cvm_backend_destroy(be);
	/* A device's page size counts as the kernel reports it. */
	fk.map_err = 0;
	fk.huge_align = 2 * least;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 0, false, &be), 0);
	cr_assert_eq(be->pgsizes, ~(2 * least - 1));
	cvm_backend_destroy(be);
}

/* iommufd checks only the host address's offset in its host page
 * (iopt_insert_area()): an IOVA alignment above the host page does not
 * refuse a region whose hva is on a host page. */
Test(iommufd, a_region_on_a_host_page_joins_under_a_larger_iova_alignment)
{
	const uint64_t big = 16 * PG;
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = fk.fd, .ioas_id = 7, .flags = CVM_DMA_NO_CUT };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0x100000, .length = 2 * big,
					.page_size = big };
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;
	int ret;

	as_iommufd();
	fk.huge_align = big;
	mem = aligned_alloc(big, 4 * big);
	cr_assert_not_null(mem);
	ret = cvm_dma_open(&dc, &d);
	cr_assert_eq(ret, 0, "open: %d", ret);
	rc.hva = mem + (sysconf(_SC_PAGESIZE) < (long)big ? sysconf(_SC_PAGESIZE) : 0);
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_convert(r, rc.gpa, big, CVM_SHARED, 0), 0);
	cr_assert_eq(fk.nmaps, 1);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	free(mem);
}

/*
 * cvm_dma_add_region(3): on iommufd the hva needs to be on the smaller of
 * the IOMMU's page and the host's (iopt_insert_area() checks only its
 * offset in a host page).  A 4 KiB host cannot show it: regions already
 * want their hva on 4 KiB.  So the host here has 16 KiB pages (arm64's),
 * and the IOAS a 64 KiB IOVA alignment.
 */
Test(iommufd, a_region_whose_hva_is_not_on_a_host_page_is_refused_with_its_reason)
{
	const uint64_t big = 16 * PG, host = 4 * PG;
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = fk.fd, .ioas_id = 7, .flags = CVM_DMA_NO_CUT };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = 0x100000, .length = 2 * big,
					.page_size = big, .flags = CVM_REGION_INIT_SHARED };
	struct cvm_region *r;
	struct cvm_dma *d;
	char *mem;

	as_iommufd();
	fk.huge_align = big;
	fk.host_page = host;
	mem = aligned_alloc(big, 4 * big);
	cr_assert_not_null(mem);
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	rc.hva = mem + PG;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), -EINVAL);
	cr_assert(strstr(log_buf, "hva") && strstr(log_buf, "16384 bytes, the host page"),
		  "log: %s", log_buf);
	cr_assert_eq(fk.nmaps, 0);
	cvm_region_destroy(r);
	/* On a host page, though not on the IOMMU's: it joins and maps. */
	rc.hva = mem + host;
	cr_assert_eq(cvm_region_create(&rc, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(fk.nmaps, 1);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
	free(mem);
}

/*
 * A context that cuts, on the fake with a shared run of eight pages mapped
 * as one mapping: the cut's checks of the fd's compat IOAS are what the
 * tests below then break.
 */
#define CUT_GPA 0x100000ull

struct cutting { struct cvm_dma *d; struct cvm_region *r; char *mem; };

static void open_cutting(struct cutting *c)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = fk.fd };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = CUT_GPA, .length = 16 * PG };
	struct cvm_dma_info info = { .sz = sizeof(info) };

	as_iommufd();
	c->mem = aligned_alloc(PG, 16 * PG);
	cr_assert_not_null(c->mem);
	rc.hva = c->mem;
	cr_assert_eq(cvm_dma_open(&dc, &c->d), 0);
	cr_assert_eq(cvm_dma_info(c->d, &info), 0);
	cr_assert(info.can_cut);
	cr_assert_eq(fk.compat_ioas, info.ioas_id);
	cr_assert_eq(cvm_region_create(&rc, &c->r), 0);
	cr_assert_eq(cvm_dma_add_region(c->d, c->r), 0);
	cr_assert_eq(cvm_convert(c->r, CUT_GPA, 8 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(fk.nmaps, 1);
}

static void close_cutting(struct cutting *c)
{
	cvm_region_destroy(c->r);
	cvm_dma_close(c->d);
	cvm_set_log(NULL, NULL, 0);
	free(c->mem);
}

struct seen_maps { int n; struct fk_map m[MAX_MAPS]; };

static int see_mapping(void *opaque, uint64_t iova, uint64_t length)
{
	struct seen_maps *s = opaque;

	cr_assert_lt(s->n, MAX_MAPS);
	s->m[s->n++] = (struct fk_map){ iova, length };
	return 0;
}

/* A conversion to private that needs a cut, alone and in a batch, fails
 * with want and the log line that names why (log; NULL: any), and changes
 * nothing. */
static void refused_cut_changes_nothing(struct cutting *c, int want, const char *log)
{
	const struct cvm_range ranges[] = { { CUT_GPA + 5 * PG, 2 * PG }, { CUT_GPA + PG, PG } };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct seen_maps before = { 0 }, after = { 0 };
	int ret;

	cr_assert_eq(cvm_dma_for_each_mapping(c->d, see_mapping, &before), 0);
	cr_assert_eq(before.n, 1);
	cvm_set_log(keep_log, NULL, LOG_ERR);
	for (int batch = 0; batch < 2; batch++) {
		log_buf[0] = '\0';
		ret = batch ? cvm_convert_batch(c->r, ranges, ARRAY_SIZE(ranges), CVM_PRIVATE, 0) :
		      cvm_convert(c->r, CUT_GPA + 2 * PG, PG, CVM_PRIVATE, 0);
		cr_assert_eq(ret, want, "batch %d: %d", batch, ret);
		cr_assert(!log || (strstr(log_buf, log) && strstr(log_buf, strerror(-want))),
			  "batch %d: log: %s", batch, log_buf);
		cr_assert_eq(cvm_region_query(c->r, CUT_GPA, 8 * PG), CVM_SHARED, "batch %d",
			     batch);
		after.n = 0;
		cr_assert_eq(cvm_dma_for_each_mapping(c->d, see_mapping, &after), 0);
		cr_assert_eq(after.n, before.n, "batch %d", batch);
		cr_assert_arr_eq(after.m, before.m, sizeof(before.m[0]) * before.n, "batch %d",
				 batch);
		cr_assert_eq(fk.nmaps, 1, "batch %d: the IOAS changed", batch);
		cr_assert_eq(fk.maps[0].iova, CUT_GPA);
		cr_assert_eq(fk.maps[0].len, 8 * PG);
		cr_assert_eq(cvm_dma_stats(c->d, &st), 0);
		cr_assert_eq(st.pending_repairs, 0, "batch %d", batch);
	}
}

/* cvm_convert(3), cvm_convert_batch(3): the fd's owner made another IOAS
 * the compat one, so a cut would land there. */
Test(iommufd, a_conversion_that_would_cut_in_another_compat_ioas_is_ebusy_and_changes_nothing)
{
	struct cutting c;

	open_cutting(&c);
	fk.compat_ioas = 42;
	refused_cut_changes_nothing(&c, -EBUSY, "no longer the fd's VFIO-compat IOAS");
	close_cutting(&c);
}

/* The fd has no compat IOAS any more (IOMMU_VFIO_IOAS CLEAR, or the dup(2)
 * copy of the fd whose context closed first took it back): the kernel's
 * -ENODEV is passed on. */
Test(iommufd, a_conversion_that_would_cut_without_a_compat_ioas_is_enodev_and_changes_nothing)
{
	struct cutting c;

	open_cutting(&c);
	fk.compat_ioas = 0;
	refused_cut_changes_nothing(&c, -ENODEV, "no longer the fd's VFIO-compat IOAS");
	close_cutting(&c);
}

/* cvm_convert(3), cvm_convert_batch(3): the kernel refuses the cut itself
 * (its split of the area runs out of memory): the conversion fails with the
 * kernel's errno and changes nothing. */
Test(iommufd, a_conversion_whose_cut_the_kernel_refuses_fails_with_its_errno_and_changes_nothing)
{
	struct cutting c;

	open_cutting(&c);
	fk.split_err = -ENOMEM;
	refused_cut_changes_nothing(&c, -ENOMEM, NULL);
	close_cutting(&c);
}

Test(iommufd, ranges_are_sized_then_read_even_when_they_grow_in_between)
{
	struct cvm_be *be;

	as_iommufd();
	fk.ranges[0] = (struct iommu_iova_range){ 0, 0xfedfffff };
	fk.ranges[1] = (struct iommu_iova_range){ 0xfef00000, 0xffffffffffff };
	fk.ranges[2] = (struct iommu_iova_range){ 0x1000000000000, 0x1ffffffffffff };
	fk.nranges = 2;
	fk.ranges_grow_once = 1;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, false, &be), 0);
	cr_assert_eq(be->nranges, 3);
	cr_assert_eq(be->ranges[1].start, 0xfef00000);
	cr_assert_eq(be->ranges[2].last, 0x1ffffffffffff);
	cvm_backend_destroy(be);
}

/* cvm_dma_open(3): the list is sized and read again a few times, not
 * forever; what the open made is undone and the caller's fd stays open. */
Test(iommufd, ranges_that_keep_growing_are_eagain_and_the_open_is_undone)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = fk.fd };
	struct cvm_dma *d = OUT_UNSET;
	int ret, reads = 0;

	as_iommufd();
	fk.ranges_keep_growing = true;
	ret = cvm_dma_open(&dc, &d);
	cr_assert_eq(ret, -EAGAIN, "open: %d", ret);
	cr_assert_eq(d, OUT_UNSET, "*out written");
	for (int i = 0; i < fk.nlog; i++)
		reads += fk.log[i] == IOMMU_IOAS_IOVA_RANGES;
	cr_assert(reads >= 2 && reads <= 8, "gave up after %d reads", reads);
	cr_assert_eq(fk.next_id, 2);
	cr_assert_eq(fk.destroyed, 1, "the IOAS the open allocated was left");
	cr_assert_eq(fk.compat_ioas, 0);
	cr_assert(fk.huge_pages);
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0, "the caller's fd was closed");
}

/* cvm_dma_open(3): the kernel's IOVA alignment is an IOMMU page size, so a
 * power of two; another one is -EPROTO, logged, whatever the flags. */
Test(iommufd, an_iova_alignment_that_is_no_power_of_two_is_eproto_and_logged)
{
	const uint32_t flags[] = { CVM_DMA_NO_CUT, 0 };
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = fk.fd };
	struct cvm_dma *d = OUT_UNSET;
	int ret;

	as_iommufd();
	fk.huge_align = 3 * PG;
	cvm_set_log(keep_log, NULL, LOG_ERR);
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
		dc.flags = flags[i];
		log_buf[0] = '\0';
		ret = cvm_dma_open(&dc, &d);
		cr_assert_eq(ret, -EPROTO, "flags %#x: %d", flags[i], ret);
		cr_assert_eq(d, OUT_UNSET, "*out written");
		cr_assert(strstr(log_buf, "IOVA alignment 0x3000"), "log: %s", log_buf);
		cr_assert_eq(fk.destroyed, fk.next_id - 1, "flags %#x: IOAS left", flags[i]);
		cr_assert_eq(fk.nmaps, 0);
	}
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0);
	cvm_set_log(NULL, NULL, 0);
}

/* cvm_dma_open(3): overlapping IOVA ranges are -EPROTO, from an IOAS too,
 * and logged. */
Test(iommufd, refuses_overlapping_iova_ranges)
{
	struct cvm_be *be = NULL;

	as_iommufd();
	log_buf[0] = 0;
	cvm_set_log(keep_log, NULL, LOG_ERR);
	fk.ranges[0] = (struct iommu_iova_range){ 0, 0x1fffff };
	fk.ranges[1] = (struct iommu_iova_range){ 0x100000, 0x2fffff };
	fk.nranges = 2;
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, false, &be), -EPROTO);
	cr_assert_null(be);
	cr_assert(strstr(log_buf, "IOAS 7 reports overlapping or inverted IOVA ranges"), "log: %s",
		  log_buf);
	log_buf[0] = 0;
	fk.ranges[1] = (struct iommu_iova_range){ 0x1fffff, 0x2fffff };   /* one byte */
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, false, &be), -EPROTO);
	cr_assert_null(be);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(log_buf, "overlapping or inverted"), "log: %s", log_buf);
}

Test(iommufd, raw_answers_and_unmap_all)
{
	struct cvm_be *be;
	uint64_t got = 1;

	as_iommufd();
	cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, false, &be), 0);
	cr_assert_eq(be->ops->unmap(be, 0x100000, PG, &got), -ENOENT);
	cr_assert_eq(got, 0);
	cr_assert_eq(be->ops->map(be, 0x100000, 4 * PG, NULL), 0);
	cr_assert_eq(be->ops->map(be, 0x900000, PG, NULL), 0);
	cr_assert_eq(be->ops->map(be, 0x100000, PG, NULL), -EEXIST);
	cr_assert_eq(be->ops->unmap_all(be), 0);
	cr_assert_eq(fk.nmaps, 0);
	cvm_backend_destroy(be);
}

static int iommufd_open_own(struct cvm_be **be)
{
	return cvm_backend_iommufd_open(fk.fd, 0, false, be);
}

static void no_ioas_leaked(int fail_at)
{
	cr_assert_eq(fk.destroyed, fk.next_id - 1, "allocation %d: IOAS leaked", fail_at);
}

Test(iommufd, open_fails_cleanly_at_every_allocation)
{
	as_iommufd();
	cvm_backend_destroy(open_at_each_allocation(iommufd_open_own, no_ioas_leaked, NULL));
}

/*
 * cvm_dma_open(3): memory running out anywhere in the set-up of the cut is
 * -ENOMEM with the caller's IOAS as it was (HUGE_PAGES on, not the fd's
 * compat IOAS, nothing mapped), whether the probe found a cut or not, and
 * no share of the set-up stays behind for a later context to join: the
 * open that finally succeeds gives everything back when it closes.  The
 * capabilities an open reports are those of the IOAS as it was left.
 */
static int iommufd_open_cut_7(struct cvm_be **be)
{
	return cvm_backend_iommufd_open(fk.fd, 7, true, be);
}

/* The caller's IOAS as it was: HUGE_PAGES on, not the compat one, empty. */
static void ioas_as_it_was(int fail_at)
{
	cr_assert(fk.huge_pages, "cut %d, allocation %d: HUGE_PAGES left off", !fk.map_err,
		  fail_at);
	cr_assert_eq(fk.compat_ioas, 0, "cut %d, allocation %d: compat IOAS left", !fk.map_err,
		     fail_at);
	nothing_mapped(fail_at);
}

Test(iommufd, an_open_that_would_cut_fails_cleanly_at_every_allocation)
{
	struct cvm_be *be;
	int fail_at;

	as_iommufd();
	for (int cut = 1; cut >= 0; cut--) {
		fk.map_err = cut ? 0 : -EINVAL;   /* the probe's map: no cut */
		be = open_at_each_allocation(iommufd_open_cut_7, ioas_as_it_was, &fail_at);
		cr_assert_geq(fail_at, 4, "cut %d: the set-up's allocations were never failed",
			      cut);
		cr_assert_eq(be->can_cut, cut);
		cr_assert_eq(be->pgsizes, cut ? PG : ~(PG - 1), "cut %d: pgsizes %#llx", cut,
			     (unsigned long long)be->pgsizes);
		cvm_backend_destroy(be);
		cr_assert(fk.huge_pages, "cut %d: HUGE_PAGES left off at close", cut);
		cr_assert_eq(fk.compat_ioas, 0, "cut %d: compat IOAS left at close", cut);
	}
	cr_assert_eq(fk.destroyed, 0, "an adopted IOAS was destroyed");
}

/*
 * cvm_dma_open(3): contexts that cut in one IOAS, given as the same fd,
 * share the changes the first one made (HUGE_PAGES off, the compat IOAS):
 * whichever closes first leaves them, so the other still cuts, and the
 * last to close gives them back.
 */
Test(iommufd, contexts_that_cut_in_one_ioas_share_its_setup_until_the_last_one_closes)
{
	as_iommufd();
	for (int first = 0; first < 2; first++) {
		struct cvm_be *be[2], *other;
		uint64_t got;

		for (int i = 0; i < 2; i++) {
			cr_assert_eq(cvm_backend_iommufd_open(fk.fd, 7, true, &be[i]), 0);
			cr_assert(be[i]->can_cut, "context %d", i);
		}
		cr_assert_not(fk.huge_pages);
		cr_assert_eq(fk.compat_ioas, 7);
		cvm_backend_destroy(be[first]);
		cr_assert_not(fk.huge_pages, "context %d closed first: HUGE_PAGES back on", first);
		cr_assert_eq(fk.compat_ioas, 7, "context %d closed first: compat IOAS cleared",
			     first);
		other = be[!first];
		cr_assert_eq(other->ops->map(other, 0x100000, 8 * PG, NULL), 0);
		cr_assert_eq(other->ops->cut(other, 0x100000 + PG, PG, &got), 0);
		cr_assert_eq(got, PG);
		cr_assert_eq(other->ops->unmap(other, 0x100000, 8 * PG, &got), 0);
		cr_assert_eq(got, 7 * PG);
		cvm_backend_destroy(other);
		cr_assert(fk.huge_pages, "context %d closed last: HUGE_PAGES left off", !first);
		cr_assert_eq(fk.compat_ioas, 0, "context %d closed last: compat IOAS left", !first);
	}
	cr_assert_eq(fk.destroyed, 0);
}

/*
 * cvm_dma_close(3): an IOAS the library allocated that a device is still
 * attached to cannot be destroyed (IOMMU_DESTROY is -EBUSY while anything
 * holds it, iommufd_object_remove()): it stays, without the context's
 * mappings and no longer the fd's compat IOAS, with the huge pages the cut
 * turned off back on (as a new IOAS has them), the caller's fd stays open,
 * and a warning names the IOAS.
 */
Test(iommufd, an_ioas_that_cannot_be_destroyed_at_close_is_left_empty_with_a_warning)
{
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cutting c;
	char want[64];

	open_cutting(&c);
	cr_assert_eq(cvm_dma_info(c.d, &info), 0);
	cr_assert_not(fk.huge_pages, "the cut needs the huge pages off");
	fk.destroy_err = -EBUSY;
	log_buf[0] = '\0';
	cvm_set_log(keep_log, NULL, LOG_WARNING);
	cvm_dma_close(c.d);
	cvm_set_log(NULL, NULL, 0);
	snprintf(want, sizeof(want), "IOAS %u not destroyed: %s", info.ioas_id, strerror(EBUSY));
	cr_assert(strstr(log_buf, want), "log: %s", log_buf);
	cr_assert_eq(fk.destroyed, 0);
	cr_assert_eq(fk.nmaps, 0, "the context's mappings stayed");
	cr_assert_eq(fk.compat_ioas, 0, "the IOAS left behind is still the compat one");
	cr_assert(fk.huge_pages, "the IOAS left behind keeps its huge pages off");
	cr_assert_geq(fcntl(fk.fd, F_GETFD), 0, "the caller's fd was closed");
	cvm_region_destroy(c.r);
	free(c.mem);
}

/* ---- cvm_dma_open(3) of the kernel backends ---- */

/*
 * -ENODEV when /dev/iommu does not exist (the node is missing, or has no
 * driver behind it), the error of open(2) when the process may not open
 * it: for the configurations in which the library opens it itself.
 */
Test(dma_open, an_unopenable_dev_iommu_is_enodev_when_missing_else_the_open_error)
{
	const uint32_t backends[] = { CVM_BACKEND_IOMMUFD, CVM_BACKEND_AUTO };
	const struct { int err, want; } cases[] = {
		{ ENOENT, -ENODEV }, { ENXIO, -ENODEV }, { ENODEV, -ENODEV },
		{ EACCES, -EACCES }, { EPERM, -EPERM },
	};
	struct cvm_dma_config dc = { .sz = sizeof(dc), .fd = -1 };
	struct cvm_dma *d = OUT_UNSET;
	int ret;

	for (size_t b = 0; b < ARRAY_SIZE(backends); b++) {
		for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
			dc.backend = backends[b];
			fk.iommu_open_err = cases[i].err;
			fk.iommu_opens = 0;
			ret = cvm_dma_open(&dc, &d);
			cr_assert_eq(ret, cases[i].want, "backend %u, open(2) %s: %d", backends[b],
				     strerror(cases[i].err), ret);
			cr_assert_eq(fk.iommu_opens, 1, "backend %u: /dev/iommu not opened",
				     backends[b]);
			cr_assert_eq(d, OUT_UNSET, "*out written");
		}
	}
}

/*
 * model_rules, like model_entry_limit, is for CVM_BACKEND_MODEL only: with
 * a kernel backend it is -EINVAL, logged, before any call to the kernel.
 * Here rather than in test-dma.c, next to the fake that tells whether the
 * fd was asked anything.
 */
Test(dma_open, model_rules_with_a_kernel_backend_is_refused_before_any_ioctl)
{
	const uint32_t backends[] = { CVM_BACKEND_TYPE1, CVM_BACKEND_IOMMUFD, CVM_BACKEND_AUTO };
	struct cvm_dma_config dc = { .sz = sizeof(dc), .fd = fk.fd,
				     .model_rules = CVM_MODEL_IOMMUFD };
	struct cvm_dma *d = OUT_UNSET;

	cvm_set_log(keep_log, NULL, LOG_ERR);
	for (size_t b = 0; b < ARRAY_SIZE(backends); b++) {
		dc.backend = backends[b];
		log_buf[0] = '\0';
		cr_assert_eq(cvm_dma_open(&dc, &d), -EINVAL, "backend %u", backends[b]);
		cr_assert_eq(d, OUT_UNSET, "*out written");
		cr_assert(strstr(log_buf, "model_rules"), "log: %s", log_buf);
		cr_assert_eq(fk.nlog, 0, "backend %u: the fd was asked", backends[b]);
	}
	/* The same config without it opens. */
	dc.backend = CVM_BACKEND_TYPE1;
	dc.model_rules = 0;
	cr_assert_eq(cvm_dma_open(&dc, &d), 0);
	cvm_dma_close(d);
	cvm_set_log(NULL, NULL, 0);
}

/* The process's open fds, counted in /proc/self/fd (the count includes the
 * one that reads it: compare counts, not numbers of fds the test opened). */
static int open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(dir);
	while (readdir(dir))
		n++;
	closedir(dir);
	return n;
}

/*
 * cvm_dma_open(3) with fd -1: the /dev/iommu fd the library opens is its
 * own.  cvm_dma_close(3) closes it, and destroys the IOAS it allocated; an
 * open that fails after opening it (here the IOAS reports an IOVA
 * alignment that is no power of two: -EPROTO) closes it too.  No fd is
 * left behind either way, with either backend that opens it.
 */
Test(dma_open, the_dev_iommu_fd_the_library_opens_is_closed_at_close_and_on_a_failed_open)
{
	const uint32_t backends[] = { CVM_BACKEND_IOMMUFD, CVM_BACKEND_AUTO };
	struct cvm_dma_config dc = { .sz = sizeof(dc), .fd = -1 };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	int n0 = open_fds(), own, ret;
	struct cvm_dma *d;

	as_iommufd();
	fk.serve_dev_iommu = true;
	for (size_t b = 0; b < ARRAY_SIZE(backends); b++) {
		dc.backend = backends[b];
		fk.huge_align = 0;
		/* A new IOAS has huge pages on (the fake keeps one flag, which
		 * the last one destroyed left off). */
		fk.huge_pages = true;
		ret = cvm_dma_open(&dc, &d);
		cr_assert_eq(ret, 0, "backend %u: open: %d", backends[b], ret);
		own = fk.dev_iommu_fd;
		cr_assert_eq(cvm_dma_info(d, &info), 0);
		cr_assert_eq(info.fd, own);
		cr_assert(info.can_cut, "backend %u: the probe failed on the library's fd",
			  backends[b]);
		cr_assert_eq(open_fds(), n0 + 1);
		cvm_dma_close(d);
		cr_assert_eq(fk.destroyed, info.ioas_id, "backend %u: the IOAS was left",
			     backends[b]);
		cr_assert_eq(open_fds(), n0, "backend %u: the fd was left open", backends[b]);
		cr_assert(fcntl(own, F_GETFD) == -1 && errno == EBADF);

		fk.huge_align = 3 * PG;
		fk.huge_pages = true;
		d = OUT_UNSET;
		ret = cvm_dma_open(&dc, &d);
		cr_assert_eq(ret, -EPROTO, "backend %u: open: %d", backends[b], ret);
		cr_assert_eq(d, OUT_UNSET, "*out written");
		cr_assert_eq(open_fds(), n0, "backend %u: a failed open left its fd open",
			     backends[b]);
		cr_assert_eq(fk.destroyed, fk.next_id - 1, "backend %u: the IOAS was left",
			     backends[b]);
	}
	cr_assert_eq(fk.iommu_opens, 4);
}
