// SPDX-License-Identifier: MIT
/*
 * iommufd backend: one IOAS on a /dev/iommu fd, mapped with the native
 * IOMMU_IOAS_* ioctls.  The native unmap cannot split an area
 * (doc/kernel-facts.md §2): a range that cuts into one fails with -ENOENT.
 *
 * The hitless cut (doc/kernel-facts.md §2a, verified with real DMA): iommufd
 * serves the VFIO container ioctls on every fd, for the IOAS that
 * IOMMU_VFIO_IOAS names, and its VFIO_IOMMU_UNMAP_DMA splits areas at both
 * ends of the range first when the IOAS keeps 4 KiB IOPTEs (HUGE_PAGES = 0).
 * So with want_cut we turn huge pages off before the first map, make our
 * IOAS the fd's compat IOAS and cut with VFIO_IOMMU_UNMAP_DMA on this fd.
 * The trade-off, paid only when the probe shows the cut works:
 *  - the IOAS is mapped with 4 KiB IOPTEs only (more IOTLB pressure, and on
 *    a caching-mode vIOMMU one invalidation per 4 KiB when mapping);
 *  - an fd has one compat IOAS: we take it only when nobody else has, and
 *    hold it while the backend lives (contexts of this process that cut in
 *    the same IOAS share the claim and the small pages: the last to close
 *    gives them back);
 *  - the iommufd maintainers regard the VFIO-compat split as legacy and
 *    want a native cut ioctl instead.  None exists in the 6.12 uapi; when
 *    linux/iommufd.h grows one, probe it here first (-ENOTTY = absent) and
 *    keep this route only as the fallback.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "internal.h"
#include "backend.h"
#include "caps.h"

/* IOVA_RANGES is retried when the list grows between the sizing call and
 * the real one (a device attached meanwhile). */
#define RANGES_TRIES 4

/*
 * What the cut changed in one IOAS of one iommufd fd, shared by every
 * context of this process that cuts there: the first one made the changes
 * (or found them made), the others found them and rely on them, and only
 * the last to close undoes them.  claims_lock also makes a setup and a
 * release atomic against each other.  The fd is known by its number: two
 * numbers for one open file (dup(2)) are two claims, which cvm_dma_open(3)
 * tells VMMs to avoid (kcmp(2) could tell, but seccomp filters of VMMs
 * may kill a process for calling it).
 */
struct cut_claim {
	struct cut_claim *next;
	int fd;
	uint32_t ioas_id;
	unsigned int refs;
	bool compat_set, restore_huge;	/* as in struct iommufd_be */
};

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cut_claim *claims;

struct iommufd_be {
	struct cvm_be be;
	bool compat_set;            /* we made our IOAS the fd's compat IOAS */
	bool small_pages;           /* the IOAS has HUGE_PAGES = 0 */
	bool restore_huge;          /* we set it: back to 1 if the cut fails, or at close */
	struct cut_claim *claim;    /* when we cut: the changes above, shared */
};

static int iommufd_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE |
			 IOMMU_IOAS_MAP_READABLE,
		.ioas_id = be->ioas_id,
		.user_va = (uintptr_t)vaddr, .length = len, .iova = iova,
	};

	return ioctl(be->fd, IOMMU_IOAS_MAP, &m) ? -errno : 0;
}

static int ioas_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = be->ioas_id, .iova = iova, .length = len,
	};

	if (unmapped)
		*unmapped = 0;
	if (ioctl(be->fd, IOMMU_IOAS_UNMAP, &u))
		return -errno;
	if (unmapped)
		*unmapped = u.length;
	return 0;
}

static int iommufd_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	return ioas_unmap(be, iova, len, unmapped);
}

static int vfio_ioas(struct cvm_be *be, uint16_t op, uint32_t *ioas_id)
{
	struct iommu_vfio_ioas v = { .size = sizeof(v), .op = op, .ioas_id = *ioas_id };

	if (ioctl(be->fd, IOMMU_VFIO_IOAS, &v))
		return -errno;
	*ioas_id = v.ioas_id;
	return 0;
}

/*
 * The VFIO-compat unmap on the same fd acts on whichever IOAS is the fd's
 * compat IOAS when the kernel runs it (get_compat_ioas()).  We claimed it
 * at open, but the fd's owner can switch it (IOMMU_VFIO_IOAS SET): check
 * first, so that a cut does not land in an IOAS switched to before the
 * call.  A switch between the check and the cut cannot be seen (the kernel
 * has no compare-and-set): cvm_dma_open(3) tells the fd's owner not to
 * switch while a context that cuts uses the fd.  Two ioctls per cut: the
 * check, then the unmap.
 */
static int iommufd_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .iova = iova, .size = len,
	};
	uint32_t cur = 0;
	int ret;

	if (unmapped)
		*unmapped = 0;
	ret = vfio_ioas(be, IOMMU_VFIO_IOAS_GET, &cur);
	if (!ret && cur != be->ioas_id)
		ret = -EBUSY;
	if (ret) {
		cvm_err("iommufd: IOAS %u is no longer the fd's VFIO-compat IOAS (%s): "
			"cannot cut", be->ioas_id, strerror(-ret));
		return ret;
	}
	if (ioctl(be->fd, VFIO_IOMMU_UNMAP_DMA, &u))
		return -errno;
	if (unmapped)
		*unmapped = u.size;
	return 0;
}

static int iommufd_unmap_all(struct cvm_be *be)
{
	return ioas_unmap(be, 0, UINT64_MAX, NULL);
}

static int read_ranges(struct cvm_be *be, struct cvm_iova_range **out, uint32_t *n,
		       uint64_t *align)
{
	struct iommu_ioas_iova_ranges q = { .size = sizeof(q), .ioas_id = be->ioas_id };
	struct iommu_iova_range *r = NULL;

	/* First call sizes the list (-EMSGSIZE with num_iovas set), the second
	 * fills it; struct iommu_iova_range is {start, last} like ours. */
	for (int i = 0; i < RANGES_TRIES; i++) {
		uint32_t cap = q.num_iovas;

		q.allowed_iovas = (uintptr_t)r;
		if (!ioctl(be->fd, IOMMU_IOAS_IOVA_RANGES, &q)) {
			*out = (struct cvm_iova_range *)r;
			*n = q.num_iovas;
			*align = q.out_iova_alignment;
			return 0;
		}
		if (errno != EMSGSIZE || q.num_iovas <= cap) {
			int ret = -errno;

			cvm_free(r);
			return ret;
		}
		cvm_free(r);
		r = cvm_calloc(q.num_iovas, sizeof(*r));
		if (!r)
			return -ENOMEM;
	}
	cvm_free(r);
	return -EAGAIN;
}

_Static_assert(sizeof(struct iommu_iova_range) == sizeof(struct cvm_iova_range) &&
	       offsetof(struct iommu_iova_range, last) == offsetof(struct cvm_iova_range, last),
	       "IOVA range layouts differ");

/* What an ioctl's error says about the fd the caller gave, for the log. */
static const char *fd_hint(int err)
{
	if (err == -ENOTTY)
		return " (the fd is no iommufd)";
	return err == -EBADF ? " (the fd is not open)" : "";
}

static int iommufd_refresh(struct cvm_be *be)
{
	struct iommufd_be *ib = container_of(be, struct iommufd_be, be);
	struct cvm_iova_range *r = NULL;
	uint64_t align = 0;
	uint32_t n = 0;
	int ret;

	ret = read_ranges(be, &r, &n, &align);
	if (ret) {
		cvm_err("iommufd: IOMMU_IOAS_IOVA_RANGES on IOAS %u of fd %d failed: %s%s",
			be->ioas_id, be->fd, strerror(-ret),
			ret == -ENOENT ? " (no IOAS of that id on the fd: a HWPT or device id?)" :
			fd_hint(ret));
		return ret;
	}
	if (!is_pow2_u64(align)) {
		cvm_free(r);
		cvm_err("iommufd: IOAS %u reports IOVA alignment %#" PRIx64, be->ioas_id, align);
		return -EPROTO;
	}
	if (cvm_iova_ranges_sort(r, n)) {
		cvm_free(r);
		cvm_err("iommufd: IOAS %u reports overlapping or inverted IOVA ranges",
			be->ioas_id);
		return -EPROTO;
	}
	cvm_free(be->ranges);
	be->ranges = r;
	be->nranges = n;
	/* iommufd names no IOMMU page sizes, only the alignment a map needs;
	 * with huge pages off it uses that size alone.  An IOAS with huge
	 * pages and no device yet has no domain and says 1: no IOMMU has
	 * pages of a byte, and the library maps 4 KiB at least. */
	align = max_u64(align, 4096);
	be->pgsizes = ib->small_pages ? align : ~(align - 1);
	be->entries_avail = UINT64_MAX;
	return 0;
}

/*
 * Asks the fd, not its path: an iommufd opened through a node of another
 * name (a private /dev, an fd passed in from another mount namespace) is
 * one too.  /dev/vfio/vfio (misc 10:196, VFIO_MINOR in the kernel's
 * miscdevice.h) is a container even where iommufd serves it, since its
 * VFIO-compat container answers iommufd's ioctls as well; any other misc
 * device (iommufd is one, with a dynamic minor) that answers the get of
 * the global RLIMIT mode (no object, no privilege, no side effect) is an
 * iommufd.  Other devices get no ioctl: a VFIO device fd, for one, would
 * take a runtime-PM reference to refuse it.
 */
bool cvm_backend_fd_is_iommufd(int fd)
{
	struct iommu_option o = {
		.size = sizeof(o), .option_id = IOMMU_OPTION_RLIMIT_MODE,
		.op = IOMMU_OPTION_OP_GET,
	};
	struct stat st;

	if (fstat(fd, &st) || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 ||
	    minor(st.st_rdev) == 196)
		return false;
	return ioctl(fd, IOMMU_OPTION, &o) == 0;
}

static int set_option(struct cvm_be *be, uint32_t option, uint64_t val)
{
	struct iommu_option o = {
		.size = sizeof(o), .option_id = option, .op = IOMMU_OPTION_OP_SET,
		.object_id = be->ioas_id, .val64 = val,
	};

	return ioctl(be->fd, IOMMU_OPTION, &o) ? -errno : 0;
}

static int get_option(struct cvm_be *be, uint32_t option, uint64_t *val)
{
	struct iommu_option o = {
		.size = sizeof(o), .option_id = option, .op = IOMMU_OPTION_OP_GET,
		.object_id = be->ioas_id,
	};

	if (ioctl(be->fd, IOMMU_OPTION, &o))
		return -errno;
	*val = o.val64;
	return 0;
}

/* Make our IOAS the fd's compat IOAS, unless another one already is: the
 * VMM (or another context) may be using it through the VFIO ioctls. */
static int claim_compat(struct iommufd_be *ib)
{
	uint32_t cur = 0, id = ib->be.ioas_id;
	int ret;

	ret = vfio_ioas(&ib->be, IOMMU_VFIO_IOAS_GET, &cur);
	if (!ret && cur != id) {
		cvm_info("iommufd: the fd's VFIO-compat IOAS is %u, not ours (%u): no cut", cur, id);
		return -EBUSY;
	}
	/* Already it (the fd's owner made it so): not ours to clear at close. */
	if (!ret)
		return 0;
	if (ret != -ENODEV)
		return ret;
	ret = vfio_ioas(&ib->be, IOMMU_VFIO_IOAS_SET, &id);
	if (ret)
		return ret;
	ib->compat_set = true;
	return 0;
}

static void release_compat(struct iommufd_be *ib)
{
	uint32_t cur = 0;

	if (!ib->compat_set)
		return;
	/* Clear only what is still ours: someone may have switched it. */
	if (!vfio_ioas(&ib->be, IOMMU_VFIO_IOAS_GET, &cur) && cur == ib->be.ioas_id)
		vfio_ioas(&ib->be, IOMMU_VFIO_IOAS_CLEAR, &cur);
	ib->compat_set = false;
}

static int huge_pages_off(struct iommufd_be *ib)
{
	uint64_t val = 1;
	int ret;

	if (!get_option(&ib->be, IOMMU_OPTION_HUGE_PAGES, &val) && val == 0) {
		ib->small_pages = true;
		return 0;
	}
	ret = set_option(&ib->be, IOMMU_OPTION_HUGE_PAGES, 0);
	if (ret)
		return ret;
	ib->small_pages = ib->restore_huge = true;
	return 0;
}

/* Under claims_lock: share the claim of an earlier context on our IOAS, or
 * start one that holds what we changed. */
static int claim_join(struct iommufd_be *ib)
{
	struct cut_claim *c;

	for (c = claims; c; c = c->next)
		if (c->ioas_id == ib->be.ioas_id && c->fd == ib->be.fd)
			break;
	if (!c) {
		c = cvm_calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		c->fd = ib->be.fd;
		c->ioas_id = ib->be.ioas_id;
		c->next = claims;
		claims = c;
	}
	c->refs++;
	/* What we changed (the others had undone theirs meanwhile) is the
	 * claim's to undo now. */
	c->compat_set |= ib->compat_set;
	c->restore_huge |= ib->restore_huge;
	ib->compat_set = ib->restore_huge = false;
	ib->claim = c;
	return 0;
}

/* Under claims_lock: leave the claim; the last one out takes back what it
 * holds, for iommufd_destroy() to undo. */
static void claim_leave(struct iommufd_be *ib)
{
	struct cut_claim *c = ib->claim, **pp;

	ib->claim = NULL;
	if (--c->refs)
		return;
	for (pp = &claims; *pp != c; pp = &(*pp)->next)
		;
	*pp = c->next;
	ib->compat_set = c->compat_set;
	ib->restore_huge = c->restore_huge;
	cvm_free(c);
}

/*
 * Sets up the hitless cut if the kernel allows it.  A kernel that does not
 * leaves a context without a cut (can_cut tells); running out of memory on
 * the way is the caller's failure instead (-ENOMEM, with the IOAS as it
 * was): a transient shortage must not make the context disruptive for its
 * whole life.
 */
static int setup_cut(struct iommufd_be *ib)
{
	struct cvm_be *be = &ib->be;
	int ret;

	pthread_mutex_lock(&claims_lock);
	ret = huge_pages_off(ib);
	if (ret) {
		/* -EINVAL: the IOAS already has areas with a device attached. */
		cvm_info("iommufd: HUGE_PAGES=0 on IOAS %u refused (%s): no hitless cut",
			 be->ioas_id, strerror(-ret));
		pthread_mutex_unlock(&claims_lock);
		return 0;
	}
	ret = claim_compat(ib);
	if (ret) {
		if (ret != -EBUSY)
			cvm_info("iommufd: IOMMU_VFIO_IOAS SET %u failed (%s): no hitless cut",
				 be->ioas_id, strerror(-ret));
		ret = 0;	/* the kernel's answer: no cut, not a failed open */
		goto undo;
	}
	ret = iommufd_refresh(be);
	if (!ret)
		ret = cvm_probe_cut(be, iommufd_cut);
	if (ret == 1) {
		ret = claim_join(ib);
		if (!ret) {
			be->can_cut = true;
			pthread_mutex_unlock(&claims_lock);
			return 0;
		}
		cvm_err("iommufd: out of memory for the cut's claim on IOAS %u", be->ioas_id);
	}
undo:
	release_compat(ib);
	if (ib->restore_huge && !set_option(be, IOMMU_OPTION_HUGE_PAGES, 1))
		ib->small_pages = ib->restore_huge = false;
	pthread_mutex_unlock(&claims_lock);
	if (ret == -ENOMEM)
		return ret;
	ret = iommufd_refresh(be);
	return ret == -ENOMEM ? ret : 0;
}

static void iommufd_destroy(struct cvm_be *be)
{
	struct iommufd_be *ib = container_of(be, struct iommufd_be, be);

	pthread_mutex_lock(&claims_lock);
	if (ib->claim)
		claim_leave(ib);
	release_compat(ib);
	/* An IOAS we do not destroy gets back the huge pages we turned off. */
	if (ib->restore_huge && !be->own_ioas && be->fd >= 0) {
		int ret = set_option(be, IOMMU_OPTION_HUGE_PAGES, 1);

		if (ret)
			cvm_warn("iommufd: HUGE_PAGES=1 on IOAS %u not restored: %s",
				 be->ioas_id, strerror(-ret));
	}
	pthread_mutex_unlock(&claims_lock);
	if (be->own_ioas && be->fd >= 0) {
		struct iommu_destroy d = { .size = sizeof(d), .id = be->ioas_id };

		/* -EBUSY: a device is still attached.  The IOAS then lives
		 * on until the device is unbound (its bind holds the fd's
		 * context, even once ours is closed), empty but for what
		 * sweep() could not unmap, with the huge pages a new IOAS
		 * has; on an fd not ours it stays the fd owner's. */
		if (ioctl(be->fd, IOMMU_DESTROY, &d)) {
			int err = errno;

			if (ib->restore_huge)
				set_option(be, IOMMU_OPTION_HUGE_PAGES, 1);
			if (!be->own_fd)
				cvm_warn("iommufd: IOAS %u not destroyed: %s", be->ioas_id,
					 strerror(err));
		}
	}
	if (be->own_fd && be->fd >= 0)
		close(be->fd);
	cvm_free(be->ranges);
	cvm_free(ib);
}

static const struct cvm_backend_ops iommufd_ops = {
	.name = "iommufd",
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.unmap_all = iommufd_unmap_all,
	.refresh = iommufd_refresh,
	.destroy = iommufd_destroy,
};

static const struct cvm_backend_ops iommufd_cut_ops = {
	.name = "iommufd",
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.cut = iommufd_cut,
	.unmap_all = iommufd_unmap_all,
	.refresh = iommufd_refresh,
	.destroy = iommufd_destroy,
};

static int alloc_ioas(int fd, uint32_t *id)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };

	if (ioctl(fd, IOMMU_IOAS_ALLOC, &a))
		return -errno;
	*id = a.out_ioas_id;
	return 0;
}

static int adopt(struct iommufd_be *ib, int fd, uint32_t ioas_id)
{
	struct cvm_be *be = &ib->be;
	int ret;

	if (fd < 0) {
		fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			cvm_err("iommufd: cannot open /dev/iommu: %s", strerror(errno));
			return ret;
		}
		be->own_fd = true;
	}
	be->fd = fd;
	if (!ioas_id) {
		ret = alloc_ioas(fd, &ioas_id);
		if (ret) {
			cvm_err("iommufd: IOMMU_IOAS_ALLOC on fd %d failed: %s%s", fd,
				strerror(-ret), fd_hint(ret));
			return ret;
		}
		be->own_ioas = true;
	}
	be->ioas_id = ioas_id;
	return 0;
}

int cvm_backend_iommufd_open(int fd, uint32_t ioas_id, bool want_cut, struct cvm_be **out)
{
	struct iommufd_be *ib;
	int ret;

	if (!out)
		return -EINVAL;
	ib = cvm_calloc(1, sizeof(*ib));
	if (!ib)
		return -ENOMEM;
	ib->be = (struct cvm_be){
		.ops = &iommufd_ops, .kind = CVM_BACKEND_IOMMUFD, .fd = -1,
		.entries_avail = UINT64_MAX,
		/* iopt_unmap_iova_range() stops at the first area it cannot
		 * take (-EBUSY, -EDEADLOCK, or -ENOENT for one that crosses
		 * an end of the range), after removing those before it. */
		.unmap_partial = true,
	};
	ret = adopt(ib, fd, ioas_id);
	if (!ret)
		ret = iommufd_refresh(&ib->be);
	if (ret) {
		iommufd_destroy(&ib->be);
		return ret;
	}
	if (want_cut) {
		ret = setup_cut(ib);
		if (ret) {
			iommufd_destroy(&ib->be);
			return ret;
		}
	}
	if (ib->be.can_cut)
		ib->be.ops = &iommufd_cut_ops;
	cvm_dbg("iommufd: fd %d%s, IOAS %u%s: alignment %#" PRIx64 ", %u IOVA ranges",
		ib->be.fd, ib->be.own_fd ? " (ours)" : "", ib->be.ioas_id,
		ib->be.own_ioas ? " (ours)" : "", ib->be.pgsizes & -ib->be.pgsizes,
		ib->be.nranges);
	*out = &ib->be;
	return 0;
}
