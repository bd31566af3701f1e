/* SPDX-License-Identifier: MIT */
/*
 * What a VMM does around libcvmdma on real hardware, and the library leaves
 * to it on purpose: put a PCI device into a VFIO type1 container, or bind
 * and attach its VFIO cdev to an iommufd IOAS.  The device must already be
 * bound to vfio-pci.
 */
#ifndef CVM_TOOL_VFIO_SETUP_H
#define CVM_TOOL_VFIO_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vfio_dev {
	int container;   /* type1 only, else -1 */
	int group;       /* type1 only, else -1 */
	int device;      /* the device fd (group fd or cdev) */
};

/*
 * Type1: open the device's IOMMU group (/sys/bus/pci/devices/BDF/iommu_group),
 * a new container, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(TYPE1v2), and the
 * device fd.  On success d->container is ready for cvm_dma_open().
 * 0 or -errno with a message in err.
 */
int vfio_type1_setup(const char *bdf, struct vfio_dev *d, char *err, size_t errsz);

/*
 * IOMMUFD: open the device's cdev (/sys/bus/pci/devices/BDF/vfio-dev/vfioN),
 * VFIO_DEVICE_BIND_IOMMUFD to iommufd and VFIO_DEVICE_ATTACH_IOMMUFD_PT to
 * ioas.  Only after this are the IOAS's IOVA ranges the device's real ones.
 */
int vfio_iommufd_attach(const char *bdf, int iommufd, uint32_t ioas, struct vfio_dev *d,
			char *err, size_t errsz);

/* Is bdf written as sysfs names a PCI device, DOMAIN:BUS:DEV.FN in lower-case
 * hex (0000:00:03.0; a domain of 4 to 8 digits, a device up to 1f, a
 * function up to 7)?  Syntax only: whether it exists is setup's. */
bool vfio_bdf_valid(const char *bdf);

/* Close what setup opened (detaching the device); safe on a zeroed-to--1 d. */
void vfio_teardown(struct vfio_dev *d);
#define VFIO_DEV_INIT { .container = -1, .group = -1, .device = -1 }

#endif
