// SPDX-License-Identifier: MIT
/*
 * Smoke test of the real-kernel harness (guest kernel A), with raw ioctls
 * only: a mapped page is what QEMU's edu device reads and writes, an
 * unmapped page is not (zeros in, nothing out, a DMAR fault each), and its
 * neighbours keep working -- through a VFIO type1 container and through an
 * iommufd IOAS.  If this fails, no other guest test means anything.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "guest.h"
#include "guest-tap.h"

#define PAGE		4096u
#define IOVA_SRC	0x100000u
#define IOVA_DST	0x200000u
#define IOVA_VICTIM	0x300000u	/* the page that gets unmapped */

/* One IOVA space (a type1 container or an iommufd IOAS) behind two calls. */
struct space {
	const char *name;
	int fd;
	uint32_t ioas_id;
	int (*map)(struct space *s, void *va, uint64_t iova, uint64_t len);
	int (*unmap)(struct space *s, uint64_t iova, uint64_t len, uint64_t *unmapped);
};

struct pages {
	uint8_t *src, *dst, *victim;
};

static int type1_map(struct space *s, void *va, uint64_t iova, uint64_t len)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)va, .iova = iova, .size = len,
	};

	return ioctl(s->fd, VFIO_IOMMU_MAP_DMA, &map) ? -errno : 0;
}

static int type1_unmap(struct space *s, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap), .iova = iova, .size = len,
	};

	if (ioctl(s->fd, VFIO_IOMMU_UNMAP_DMA, &unmap))
		return -errno;
	*unmapped = unmap.size;
	return 0;
}

static int ioas_map(struct space *s, void *va, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_map map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = s->ioas_id, .user_va = (uintptr_t)va, .length = len, .iova = iova,
	};

	return ioctl(s->fd, IOMMU_IOAS_MAP, &map) ? -errno : 0;
}

static int ioas_unmap(struct space *s, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct iommu_ioas_unmap unmap = {
		.size = sizeof(unmap), .ioas_id = s->ioas_id, .iova = iova, .length = len,
	};

	if (ioctl(s->fd, IOMMU_IOAS_UNMAP, &unmap))
		return -errno;
	*unmapped = unmap.length;
	return 0;
}

static void fill(uint8_t *p, unsigned seed)
{
	for (unsigned i = 0; i < PAGE; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + 1);
}

static bool all_bytes(const uint8_t *p, uint8_t val)
{
	for (unsigned i = 0; i < PAGE; i++)
		if (p[i] != val)
			return false;
	return true;
}

/* The fault interrupt is asynchronous to the DMA: give the log a moment. */
static bool fault_logged(const char *needle, int before)
{
	for (int i = 0; i < 200 && before >= 0; i++) {
		if (guest_dmesg_count(needle) > before)
			return true;
		usleep(10000);
	}
	return false;
}

static bool check(int ret, bool cond, const char *what, const char *name)
{
	if (!tap_ok(!ret && cond, "%s: %s", name, what) && ret)
		tap_diag("%s: %s", name, strerror(-ret));
	return !ret && cond;
}

/* A read of the unmapped page must deliver zeros, not the buffer's old data. */
static void check_read_fault(struct space *s, struct edu *e, struct pages *pg)
{
	int before = guest_dmesg_count("[DMA Read");
	int ret;

	fill(pg->src, 3);
	memset(pg->dst, 0xaa, PAGE);
	ret = edu_dma(e, IOVA_SRC, false, PAGE);	/* preload the edu buffer */
	if (!ret)
		ret = edu_dma(e, IOVA_VICTIM, false, PAGE);
	if (!ret)
		ret = edu_dma(e, IOVA_DST, true, PAGE);
	check(ret, all_bytes(pg->dst, 0), "a DMA read from an unmapped page gets zeros", s->name);
	check(0, fault_logged("[DMA Read", before),
	      "a DMA read from an unmapped page logs a DMAR read fault", s->name);
}

/* A write to the unmapped page must not reach the memory behind it. */
static void check_write_fault(struct space *s, struct edu *e, struct pages *pg)
{
	int before = guest_dmesg_count("[DMA Write");
	int ret;

	fill(pg->src, 4);
	memset(pg->victim, 0x5a, PAGE);
	ret = edu_dma(e, IOVA_SRC, false, PAGE);
	if (!ret)
		ret = edu_dma(e, IOVA_VICTIM, true, PAGE);
	check(ret, all_bytes(pg->victim, 0x5a),
	      "a DMA write to an unmapped page leaves memory untouched", s->name);
	check(0, fault_logged("[DMA Write", before),
	      "a DMA write to an unmapped page logs a DMAR write fault", s->name);
}

static void check_dma(struct space *s, struct edu *e, struct pages *pg)
{
	uint64_t unmapped = 0;
	int ret;

	ret = s->map(s, pg->src, IOVA_SRC, PAGE);
	if (!ret)
		ret = s->map(s, pg->dst, IOVA_DST, PAGE);
	if (!ret)
		ret = s->map(s, pg->victim, IOVA_VICTIM, PAGE);
	if (!check(ret, true, "three 4 KiB pages map", s->name))
		return;

	fill(pg->src, 1);
	memset(pg->dst, 0, PAGE);
	ret = edu_roundtrip(e, IOVA_SRC, IOVA_DST, PAGE);
	check(ret, !memcmp(pg->dst, pg->src, PAGE),
	      "a DMA round trip through mapped pages delivers the data", s->name);

	/* Proves the zeros below come from the unmap, not a mapping that never worked. */
	fill(pg->victim, 2);
	memset(pg->dst, 0, PAGE);
	ret = edu_roundtrip(e, IOVA_VICTIM, IOVA_DST, PAGE);
	check(ret, !memcmp(pg->dst, pg->victim, PAGE),
	      "the device reads a page while it is mapped", s->name);

	ret = s->unmap(s, IOVA_VICTIM, PAGE, &unmapped);
	check(ret, unmapped == PAGE, "unmapping that page removes 4096 bytes", s->name);

	/* Two faults: make sure the kernel's log rate limit lets both through. */
	guest_wait_dmar_ratelimit();
	check_read_fault(s, e, pg);
	check_write_fault(s, e, pg);

	fill(pg->src, 5);
	memset(pg->dst, 0, PAGE);
	ret = edu_roundtrip(e, IOVA_SRC, IOVA_DST, PAGE);
	check(ret, !memcmp(pg->dst, pg->src, PAGE),
	      "the pages that stay mapped still work after the unmap", s->name);

	s->unmap(s, IOVA_SRC, PAGE, &unmapped);
	s->unmap(s, IOVA_DST, PAGE, &unmapped);
}

static void run_type1(struct pages *pg)
{
	struct space s = { .name = "type1", .map = type1_map, .unmap = type1_unmap };
	struct edu e = { 0 };
	int dev = -1, ret;

	ret = guest_open_type1(VFIO_TYPE1v2_IOMMU, &s.fd, &dev);
	if (!check(ret, true, "a TYPE1v2 container with the edu device opens", s.name))
		return;
	ret = edu_open(dev, &e);
	if (check(ret, true, "edu BAR0 maps and reads id 0x010000ed", s.name))
		check_dma(&s, &e, pg);
	edu_close(&e);
	/* Release the group: the iommufd part needs the device back. */
	close(dev);
	close(s.fd);
}

static void run_iommufd(struct pages *pg)
{
	struct space s = { .name = "iommufd", .map = ioas_map, .unmap = ioas_unmap };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct edu e = { 0 };
	int dev = -1, ret;

	s.fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	ret = s.fd < 0 ? -errno : 0;
	if (!ret && ioctl(s.fd, IOMMU_IOAS_ALLOC, &alloc))
		ret = -errno;
	s.ioas_id = alloc.out_ioas_id;
	if (!ret)
		ret = guest_iommufd_bind(s.fd, &dev);
	if (!ret)
		ret = guest_iommufd_attach(dev, s.ioas_id);
	if (check(ret, true, "the edu cdev binds to iommufd and attaches to an IOAS", s.name)) {
		ret = edu_open(dev, &e);
		if (check(ret, true, "edu BAR0 maps and reads id 0x010000ed", s.name))
			check_dma(&s, &e, pg);
	}
	edu_close(&e);
	if (dev >= 0)
		close(dev);
	if (s.fd >= 0)
		close(s.fd);
}

static uint8_t *page_alloc(void)
{
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int main(void)
{
	char bdf[32], cdev[64];
	struct pages pg;
	int group, ret;

	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	if (ret == -ENODEV)
		return tap_skip_all("no edu device: run me in the guest (tests/vm/run-in-guest)");
	if (!check(ret, true, "the edu device is bound to vfio-pci", "harness"))
		return tap_done();
	tap_diag("edu %s, IOMMU group %d, cdev %s", bdf, group, cdev);

	pg.src = page_alloc();
	pg.dst = page_alloc();
	pg.victim = page_alloc();
	if (!check(0, pg.src && pg.dst && pg.victim, "test pages allocate", "harness"))
		return tap_done();

	run_type1(&pg);
	run_iommufd(&pg);
	return tap_done();
}
