/* SPDX-License-Identifier: MIT */
/*
 * Helpers for programs that run INSIDE the test guest (tests/vm/init has
 * bound QEMU's edu device to vfio-pci): find the device, open it through a
 * VFIO type1 container or an iommufd, read the kernel log, and drive the
 * edu DMA engine, so a test can check what the device really sees.
 *
 * Every int function returns 0 or a negative errno; nothing exits or prints.
 * Not thread-safe (one test thread drives one device).
 */
#ifndef CVM_TESTS_VM_GUEST_H
#define CVM_TESTS_VM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The edu device: its BDF ("0000:00:01.0"), IOMMU group number and vfio
 * cdev path ("/dev/vfio/devices/vfio0", or "" on a kernel without
 * VFIO_DEVICE_CDEV).  -ENODEV: no edu device (e.g. not in the guest);
 * -ENOENT: no IOMMU group (intel_iommu off); -EBUSY: not bound to vfio-pci;
 * -ENAMETOOLONG: a buffer is too small.
 */
int guest_find_edu(char *bdf, size_t bdflen, int *group, char *cdev, size_t cdevlen);

/*
 * A VFIO container with the edu group attached and iommu_type
 * (VFIO_TYPE1v2_IOMMU or VFIO_TYPE1_IOMMU) set; with device_fd, the device
 * too (VFIO_GROUP_GET_DEVICE_FD).  The group stays open as long as the
 * device fd or, without one, until the next call: a group opens only once,
 * so close the previous container and device before calling again.
 */
int guest_open_type1(unsigned long iommu_type, int *container_fd, int *device_fd);

/* Kernel A (the legacy VFIO container, vfio_iommu_type1, is there), or
 * kernel B (iommufd provides /dev/vfio/vfio instead). */
bool guest_kernel_a(void);

/* run(name) for the target argv[1] names (argc 2), or else for this
 * kernel's container ("type1" on A, "compat" on B) and then "iommufd". */
void guest_each_target(int argc, char **argv, void (*run)(const char *name));

/* Open the edu vfio cdev and bind it to iommufd (VFIO_DEVICE_BIND_IOMMUFD). */
int guest_iommufd_bind(int iommufd, int *device_fd);

/* Attach a bound cdev to an IOAS or HWPT (VFIO_DEVICE_ATTACH_IOMMUFD_PT). */
int guest_iommufd_attach(int device_fd, uint32_t ioas_id);

/* A new IOAS on an iommufd (IOMMU_IOAS_ALLOC): 0 and *id, or -errno. */
int guest_ioas_alloc(int iommufd, uint32_t *id);

/* The fd's VFIO-compat IOAS (IOMMU_VFIO_IOAS): op IOMMU_VFIO_IOAS_GET reads
 * it into *id (-ENODEV while there is none), IOMMU_VFIO_IOAS_SET makes *id
 * the one.  0 or -errno. */
int guest_compat_ioas(int iommufd, uint32_t op, uint32_t *id);

/*
 * Set vfio_iommu_type1's dma_entry_limit (applies to containers created
 * afterwards); *old (may be NULL) gets the previous value.
 */
int guest_set_dma_entry_limit(unsigned limit, unsigned *old);

/* The process's locked_vm (VmLck: type1 charges its pins there), in 4 KiB
 * pages, or -1. */
long guest_locked_pages(void);
/* CAP_IPC_LOCK in the effective set on or off (it stays permitted); 0 or
 * -EPERM. */
int guest_ipc_lock_effective(bool on);

/*
 * Kernel log lines logged so far (from boot) that contain needle; compare
 * before and after an action.  Returns the count or a negative errno.
 * DMAR fault lines are rate-limited: see guest_wait_dmar_ratelimit().
 */
int guest_dmesg_count(const char *needle);

/*
 * The intel-iommu fault handler logs through a rate limiter of 10 calls per
 * 5 s and spends three per fault, so only three faults in a row are sure to
 * be logged ("[DMA Read NO_PASID] ..."); a fourth one vanishes.  This waits
 * (up to ~5.5 s, 0 if no fault was logged in the last 5.5 s) until the
 * limiter is sure to be fresh: call it before each group of up to three
 * faults whose log lines a test counts.
 */
int guest_wait_dmar_ratelimit(void);

/* ---- QEMU's edu device (doc/kernel-facts.md §4) ---- */

#define EDU_ID		0x010000edu	/* register 0x00 */
#define EDU_BUF_ADDR	0x40000u	/* the device's own buffer, in device space */
#define EDU_BUF_SIZE	4096u

struct edu {
	int device_fd;			/* not owned: the caller closes it */
	volatile uint8_t *bar0;
	size_t bar0_size;
};

/* Map BAR0, check the id register, turn on bus mastering (vfio-pci leaves it off). */
int edu_open(int device_fd, struct edu *e);

/*
 * One DMA of len bytes (1..EDU_BUF_SIZE) between RAM at iova and the start
 * of the edu buffer: to_ram false reads RAM into the buffer, true writes the
 * buffer to RAM.  Waits for completion (100 ms of virtual time); -ETIMEDOUT
 * if the device does not finish.  An unmapped iova does not fail here: the
 * device reads zeros or its write is dropped, and the IOMMU logs a fault.
 */
int edu_dma(struct edu *e, uint64_t iova, bool to_ram, size_t len);

/*
 * The same, without waiting: the transfer starts and the device performs it
 * when its timer fires, 100 ms of virtual time later, all at once (under the
 * big QEMU lock, on QEMU's main thread: while the guest's vCPUs go on).
 * Poll edu_dma_busy() until it is false, or edu_dma_wait() (-ETIMEDOUT if
 * the device does not finish), before reading what it wrote.
 */
int edu_dma_start(struct edu *e, uint64_t iova, bool to_ram, size_t len);
bool edu_dma_busy(const struct edu *e);
int edu_dma_wait(const struct edu *e);

/* RAM at src_iova -> edu buffer -> RAM at dst_iova (the buffer itself cannot be read). */
int edu_roundtrip(struct edu *e, uint64_t src_iova, uint64_t dst_iova, size_t len);

/* Unmap BAR0; leaves the device fd open. */
void edu_close(struct edu *e);

/* ---- a backend under test, with edu attached ---- */

struct guest_target {
	const char *name;		/* "type1" (v2), "compat" (v1) or "iommufd" */
	int container, device, iommufd;	/* -1 where the backend has none */
	uint32_t ioas;			/* iommufd: a fresh IOAS, the device attached */
	struct edu edu;
};

/* Open the container or IOAS name says, with edu bound to it and open;
 * guest_target_close() undoes what it did, also when it fails. */
int guest_target_open(struct guest_target *t, const char *name);
void guest_target_close(struct guest_target *t);

/* A context on the target's container, or on its IOAS with the device
 * attached (the context adopts it): c's backend, fd and ioas_id. */
struct cvm_dma_config;
void guest_target_config(const struct guest_target *t, struct cvm_dma_config *c);

struct cvm_dma;
/* Does the kernel map the page at iova in dma's container or IOAS?  A
 * one-page map from probe_va there: -EEXIST means yes; a map that works is
 * undone at once.  1, 0 or -errno. */
int guest_kernel_mapped(struct cvm_dma *dma, uint64_t iova, uint64_t probe_va);

#endif
