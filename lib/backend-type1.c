// SPDX-License-Identifier: MIT
/*
 * VFIO type1 backend: a container fd whose IOMMU the VMM has set
 * (VFIO_SET_IOMMU).  The fd stays the VMM's: we never close it.
 *
 * Three kernels answer these ioctls (doc/kernel-facts.md §1 and §3): the real
 * vfio_iommu_type1 driver (v2 or legacy v1), and iommufd's compatibility
 * container (v2 or v1 semantics).  We do not ask which one it is: the
 * capabilities come from VFIO_IOMMU_GET_INFO and the cut from a probe.
 * Only iommufd's container cuts a page out of a mapping and leaves the
 * rest mapped, and only while its IOAS has huge IOPTEs off (v1 semantics
 * turn them off; so can IOMMU_OPTION on the same fd); the real v1 driver
 * answers "0 bytes" for the same call, v2 says -EINVAL and iommufd's
 * container with huge IOPTEs -ENOENT.
 */
#include <inttypes.h>
#include <sys/ioctl.h>

#include <linux/vfio.h>

#include "internal.h"
#include "backend.h"
#include "caps.h"

/* GET_INFO is retried with the size the kernel asks for; the answer can grow
 * between calls (a device attached meanwhile), so a few rounds at most. */
#define INFO_TRIES 4
/* A sane chain is a handful of capabilities; more means a loop. */
#define MAX_CAPS 64

struct type1_caps {
	uint64_t pgsizes;
	uint64_t avail;
	uint32_t nranges;
	struct cvm_iova_range *ranges;
};

static int vfio_unmap(int fd, uint64_t iova, uint64_t len, uint32_t flags,
		      uint64_t *unmapped)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .flags = flags, .iova = iova, .size = len,
	};

	if (unmapped)
		*unmapped = 0;
	if (ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u))
		return -errno;
	if (unmapped)
		*unmapped = u.size;
	return 0;
}

static int type1_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)vaddr, .iova = iova, .size = len,
	};

	return ioctl(be->fd, VFIO_IOMMU_MAP_DMA, &m) ? -errno : 0;
}

static int type1_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	return vfio_unmap(be->fd, iova, len, 0, unmapped);
}

static int type1_unmap_all(struct cvm_be *be)
{
	uint64_t pg = be->pgsizes ? be->pgsizes & -be->pgsizes : 4096;
	int ret;

	ret = vfio_unmap(be->fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, NULL);
	if (ret != -EINVAL)
		return ret;
	/* Kernels before 5.12 refuse the flag: one unmap over the whole
	 * space does the same (v2 accepts ends that lie in gaps). */
	return vfio_unmap(be->fd, 0, -pg, 0, NULL);
}

static int parse_iova_ranges(const uint8_t *buf, size_t len, size_t off, struct type1_caps *c)
{
	struct vfio_iommu_type1_info_cap_iova_range cap;
	const size_t each = sizeof(struct vfio_iova_range);
	struct cvm_iova_range *r;

	if (len - off < sizeof(cap))
		return -EPROTO;
	memcpy(&cap, buf + off, sizeof(cap));
	if (cap.nr_iovas > (len - off - sizeof(cap)) / each)
		return -EPROTO;
	r = cvm_calloc(cap.nr_iovas ? cap.nr_iovas : 1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (uint32_t i = 0; i < cap.nr_iovas; i++) {
		struct vfio_iova_range v;

		memcpy(&v, buf + off + sizeof(cap) + i * each, each);
		r[i] = (struct cvm_iova_range){ .start = v.start, .last = v.end };
	}
	if (cvm_iova_ranges_sort(r, cap.nr_iovas)) {
		cvm_free(r);
		return -EPROTO;
	}
	cvm_free(c->ranges);
	c->ranges = r;
	c->nranges = cap.nr_iovas;
	return 0;
}

static int parse_one_cap(const uint8_t *buf, size_t len, size_t off, uint16_t id,
			 struct type1_caps *c)
{
	struct vfio_iommu_type1_info_dma_avail avail;

	switch (id) {
	case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
		return parse_iova_ranges(buf, len, off, c);
	case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
		/* 12 bytes: whatever follows may be misaligned, hence memcpy. */
		if (len - off < sizeof(avail))
			return -EPROTO;
		memcpy(&avail, buf + off, sizeof(avail));
		/* iommufd's compat container has no limit and says UINT32_MAX
		 * (doc/kernel-facts.md §3); type1 cannot count past it either. */
		c->avail = avail.avail == UINT32_MAX ? UINT64_MAX : avail.avail;
		return 0;
	default:
		return 0;
	}
}

/* Offsets in the chain count from the start of the info struct. */
static int parse_caps(const uint8_t *buf, size_t len, struct type1_caps *c)
{
	struct vfio_iommu_type1_info info;
	size_t off;
	int ret;

	memcpy(&info, buf, sizeof(info));
	c->pgsizes = info.flags & VFIO_IOMMU_INFO_PGSIZES ? info.iova_pgsizes : 0;
	c->avail = UINT64_MAX;
	off = info.flags & VFIO_IOMMU_INFO_CAPS ? info.cap_offset : 0;
	for (int n = 0; off; n++) {
		struct vfio_info_cap_header h;

		if (n == MAX_CAPS || off < sizeof(info) || off > len - sizeof(h))
			return -EPROTO;
		memcpy(&h, buf + off, sizeof(h));
		ret = parse_one_cap(buf, len, off, h.id, c);
		if (ret)
			return ret;
		if (h.next && h.next <= off)
			return -EPROTO;
		off = h.next;
	}
	return 0;
}

static int read_info(int fd, uint8_t **out, size_t *out_len)
{
	size_t len = sizeof(struct vfio_iommu_type1_info) + 512;

	for (int i = 0; i < INFO_TRIES; i++) {
		struct vfio_iommu_type1_info *info = cvm_calloc(1, len);

		if (!info)
			return -ENOMEM;
		info->argsz = len;
		if (ioctl(fd, VFIO_IOMMU_GET_INFO, info)) {
			int ret = -errno;

			cvm_free(info);
			return ret;
		}
		if (info->argsz <= len) {
			*out = (uint8_t *)info;
			*out_len = len;
			return 0;
		}
		len = info->argsz;
		cvm_free(info);
	}
	return -EAGAIN;
}

static int type1_refresh(struct cvm_be *be)
{
	struct type1_caps c = { 0 };
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret;

	ret = read_info(be->fd, &buf, &len);
	if (ret) {
		cvm_err("type1: VFIO_IOMMU_GET_INFO on fd %d failed: %s%s", be->fd, strerror(-ret),
			ret == -ENOTTY ? " (the fd is no VFIO container)" :
			ret == -EBADF ? " (the fd is not open)" :
			ret == -EINVAL || ret == -ENODEV ?
			" (is a VFIO group in the container and its IOMMU set with VFIO_SET_IOMMU? "
			"An iommufd needs CVM_BACKEND_IOMMUFD)" : "");
		return ret;
	}
	ret = parse_caps(buf, len, &c);
	cvm_free(buf);
	if (ret) {
		cvm_free(c.ranges);
		cvm_err("type1: malformed VFIO_IOMMU_GET_INFO capability chain");
		return ret;
	}
	if (!c.ranges) {
		/* Before Linux 5.4 there is no IOVA_RANGE: the kernel checks
		 * nothing up front, so neither can we. */
		c.ranges = cvm_calloc(1, sizeof(*c.ranges));
		if (!c.ranges)
			return -ENOMEM;
		c.ranges[0] = (struct cvm_iova_range){ 0, UINT64_MAX };
		c.nranges = 1;
	}
	cvm_free(be->ranges);
	be->ranges = c.ranges;
	be->nranges = c.nranges;
	be->pgsizes = c.pgsizes;
	be->entries_avail = c.avail;
	return 0;
}

static void type1_destroy(struct cvm_be *be)
{
	cvm_free(be->ranges);
	cvm_free(be);
}

static const struct cvm_backend_ops type1_ops = {
	.name = "type1",
	.map = type1_map,
	.unmap = type1_unmap,
	.unmap_all = type1_unmap_all,
	.refresh = type1_refresh,
	.destroy = type1_destroy,
};

/* Same table plus the cut: on iommufd's v1 container a plain unmap of part
 * of a mapping is the hitless cut (it keeps 4 KiB IOPTEs,
 * doc/kernel-facts.md §3). */
static const struct cvm_backend_ops type1_cut_ops = {
	.name = "type1",
	.map = type1_map,
	.unmap = type1_unmap,
	.cut = type1_unmap,
	.unmap_all = type1_unmap_all,
	.refresh = type1_refresh,
	.destroy = type1_destroy,
};

int cvm_backend_type1_open(int container_fd, bool want_cut, struct cvm_be **out)
{
	struct cvm_be *be;
	int ret;

	if (container_fd < 0 || !out)
		return -EINVAL;
	be = cvm_calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	*be = (struct cvm_be){
		.ops = &type1_ops, .kind = CVM_BACKEND_TYPE1, .fd = container_fd,
		.entries_avail = UINT64_MAX,
		/* Real type1 unmaps all or nothing; iommufd's compat container
		 * behind the same ioctl stops at the first area it cannot take. */
		.unmap_partial = true,
	};
	ret = type1_refresh(be);
	if (ret) {
		type1_destroy(be);
		return ret;
	}
	ret = want_cut ? cvm_probe_cut(be, type1_unmap) : 0;
	if (ret < 0) {
		type1_destroy(be);
		return ret;
	}
	if (ret) {
		be->can_cut = true;
		be->ops = &type1_cut_ops;
	}
	cvm_dbg("type1: container %d: page sizes %#" PRIx64 ", %u IOVA ranges, %" PRIu64
		" mappings left", container_fd, be->pgsizes, be->nranges, be->entries_avail);
	*out = be;
	return 0;
}
