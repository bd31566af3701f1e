// SPDX-License-Identifier: MIT
/* Guest-side helpers of the real-kernel tests: see guest.h. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cap-ng.h>
#include <linux/iommufd.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include "dma.h"
#include "guest.h"

/* GCC's TSan cannot model the fences around edu's DMA (-Wtsan).  The guest
 * programs never run under TSan, but a --enable-tsan build compiles them. */
#if defined(__SANITIZE_THREAD__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic ignored "-Wtsan"
#endif

#define PCI_DEVICES	"/sys/bus/pci/devices"
#define DMA_ENTRY_LIMIT	"/sys/module/vfio_iommu_type1/parameters/dma_entry_limit"

/* edu registers (QEMU hw/misc/edu.c) */
#define EDU_REG_ID	0x00
#define EDU_REG_SRC	0x80
#define EDU_REG_DST	0x88
#define EDU_REG_CNT	0x90
#define EDU_REG_CMD	0x98
#define EDU_CMD_RUN	0x1
#define EDU_CMD_TO_RAM	0x2
/* qemu-run gives edu dma_mask=0xffffffff: it would clamp a larger address. */
#define EDU_DMA_LIMIT	(1ull << 32)
/* A transfer takes 100 ms of virtual time; this only catches a dead device. */
#define EDU_TIMEOUT_MS	10000

/* The group of the last guest_open_type1() without a device fd (see guest.h). */
static int held_group_fd = -1;

static int read_line(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n < 0)
		return n;
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	return 0;
}

static bool pci_attr_is(const char *bdf, const char *attr, const char *want)
{
	char path[PATH_MAX], val[32];

	snprintf(path, sizeof(path), PCI_DEVICES "/%s/%s", bdf, attr);
	return !read_line(path, val, sizeof(val)) && !strcmp(val, want);
}

/* The last component of the symlink PCI_DEVICES/bdf/link. */
static int pci_link_name(const char *bdf, const char *link, char *out, size_t len)
{
	char path[PATH_MAX], target[PATH_MAX];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), PCI_DEVICES "/%s/%s", bdf, link);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(out, base);
	return 0;
}

/* "/dev/vfio/devices/vfioN" from PCI_DEVICES/bdf/vfio-dev/, or "" without a cdev. */
static int pci_vfio_cdev(const char *bdf, char *out, size_t len)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *dir;
	int ret = 0;

	out[0] = '\0';
	snprintf(path, sizeof(path), PCI_DEVICES "/%s/vfio-dev", bdf);
	dir = opendir(path);
	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(dir))) {
		if (strncmp(de->d_name, "vfio", 4))
			continue;
		if ((size_t)snprintf(out, len, "/dev/vfio/devices/%s", de->d_name) >= len)
			ret = -ENAMETOOLONG;
		break;
	}
	closedir(dir);
	return ret;
}

int guest_find_edu(char *bdf, size_t bdflen, int *group, char *cdev, size_t cdevlen)
{
	char name[NAME_MAX + 1] = "", grp[32], drv[64], dev[PATH_MAX];
	struct dirent *de;
	DIR *dir;
	int ret;

	dir = opendir(PCI_DEVICES);
	if (!dir)
		return -ENODEV;
	while ((de = readdir(dir))) {
		if (de->d_name[0] != '.' && pci_attr_is(de->d_name, "vendor", "0x1234") &&
		    pci_attr_is(de->d_name, "device", "0x11e8")) {
			snprintf(name, sizeof(name), "%s", de->d_name);
			break;
		}
	}
	closedir(dir);
	if (!name[0])
		return -ENODEV;
	if (pci_link_name(name, "iommu_group", grp, sizeof(grp)))
		return -ENOENT;
	if (pci_link_name(name, "driver", drv, sizeof(drv)) || strcmp(drv, "vfio-pci"))
		return -EBUSY;
	ret = pci_vfio_cdev(name, dev, sizeof(dev));
	if (ret)
		return ret;
	if (strlen(name) >= bdflen || strlen(dev) >= cdevlen)
		return -ENAMETOOLONG;
	strcpy(bdf, name);
	strcpy(cdev, dev);
	*group = atoi(grp);
	return 0;
}

static int ioctl_int(int fd, unsigned long req, unsigned long arg)
{
	int ret = ioctl(fd, req, arg);

	return ret < 0 ? -errno : ret;
}

static int ioctl_ptr(int fd, unsigned long req, void *arg)
{
	int ret = ioctl(fd, req, arg);

	return ret < 0 ? -errno : ret;
}

/* Attach the group to a new container with iommu_type; returns the container fd. */
static int type1_container(int group_fd, unsigned long iommu_type)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	int fd, ret;

	ret = ioctl_ptr(group_fd, VFIO_GROUP_GET_STATUS, &st);
	if (ret < 0)
		return ret;
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE))
		return -EBUSY;
	fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = ioctl_int(fd, VFIO_GET_API_VERSION, 0);
	if (ret >= 0 && ret != VFIO_API_VERSION)
		ret = -EPROTO;
	if (ret >= 0 && ioctl_int(fd, VFIO_CHECK_EXTENSION, iommu_type) <= 0)
		ret = -EOPNOTSUPP;
	if (ret >= 0)
		ret = ioctl_ptr(group_fd, VFIO_GROUP_SET_CONTAINER, &fd);
	if (ret >= 0)
		ret = ioctl_int(fd, VFIO_SET_IOMMU, iommu_type);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

int guest_open_type1(unsigned long iommu_type, int *container_fd, int *device_fd)
{
	char bdf[32], cdev[PATH_MAX], path[64];
	int group, group_fd, container, dev = -1, ret;

	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	if (ret)
		return ret;
	if (held_group_fd >= 0) {
		close(held_group_fd);
		held_group_fd = -1;
	}
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	group_fd = open(path, O_RDWR | O_CLOEXEC);
	if (group_fd < 0)
		return -errno;
	container = type1_container(group_fd, iommu_type);
	if (container < 0) {
		close(group_fd);
		return container;
	}
	if (device_fd) {
		dev = ioctl_ptr(group_fd, VFIO_GROUP_GET_DEVICE_FD, bdf);
		if (dev < 0) {
			close(container);
			close(group_fd);
			return dev;
		}
		/* The device fd holds the group (and so the container) from here. */
		close(group_fd);
		*device_fd = dev;
	} else {
		held_group_fd = group_fd;
	}
	*container_fd = container;
	return 0;
}

bool guest_kernel_a(void)
{
	return access("/sys/module/vfio_iommu_type1", F_OK) == 0;
}

void guest_each_target(int argc, char **argv, void (*run)(const char *name))
{
	if (argc == 2) {
		run(argv[1]);
		return;
	}
	run(guest_kernel_a() ? "type1" : "compat");
	run("iommufd");
}

int guest_iommufd_bind(int iommufd, int *device_fd)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	char bdf[32], cdev[PATH_MAX];
	int group, fd, ret;

	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	if (ret)
		return ret;
	if (!cdev[0])
		return -ENOENT;
	fd = open(cdev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = ioctl_ptr(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	*device_fd = fd;
	return 0;
}

int guest_iommufd_attach(int device_fd, uint32_t ioas_id)
{
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = ioas_id };
	int ret = ioctl_ptr(device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at);

	return ret < 0 ? ret : 0;
}

int guest_ioas_alloc(int iommufd, uint32_t *id)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	int ret = ioctl_ptr(iommufd, IOMMU_IOAS_ALLOC, &a);

	if (ret < 0)
		return ret;
	*id = a.out_ioas_id;
	return 0;
}

int guest_compat_ioas(int iommufd, uint32_t op, uint32_t *id)
{
	struct iommu_vfio_ioas v = { .size = sizeof(v), .op = op, .ioas_id = *id };
	int ret = ioctl_ptr(iommufd, IOMMU_VFIO_IOAS, &v);

	if (ret < 0)
		return ret;
	*id = v.ioas_id;
	return 0;
}

int guest_set_dma_entry_limit(unsigned limit, unsigned *old)
{
	char buf[32], *end;
	unsigned long prev;
	int fd, len, ret;

	ret = read_line(DMA_ENTRY_LIMIT, buf, sizeof(buf));
	if (ret)
		return ret;
	errno = 0;
	prev = strtoul(buf, &end, 10);
	if (errno || *end || prev > UINT_MAX)
		return -EPROTO;
	fd = open(DMA_ENTRY_LIMIT, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = snprintf(buf, sizeof(buf), "%u\n", limit);
	errno = 0;
	if (write(fd, buf, len) != len)
		ret = errno ? -errno : -EIO;
	close(fd);
	if (!ret && old)
		*old = prev;
	return ret;
}

/*
 * Scan the kernel log from boot: the number of lines containing needle and
 * the printk timestamp (µs) of the last one.  Each read() of /dev/kmsg
 * returns one record, "prio,seq,usec,flags;text\n" plus continuation lines.
 */
static int kmsg_scan(const char *needle, int *count, uint64_t *last_us)
{
	char rec[8192], *msg, *eol;
	unsigned long long us;
	ssize_t n;
	int fd;

	*count = 0;
	*last_us = 0;
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && (errno == EPIPE || errno == EINTR))
			continue;	/* EPIPE: older records were overwritten */
		if (n < 0)
			break;
		rec[n] = '\0';
		msg = strchr(rec, ';');
		if (!msg || sscanf(rec, "%*u,%*u,%llu", &us) != 1)
			continue;
		eol = strchr(++msg, '\n');
		if (eol)
			*eol = '\0';
		if (strstr(msg, needle)) {
			(*count)++;
			*last_us = us;
		}
	}
	n = errno == EAGAIN ? 0 : -errno;
	close(fd);
	return n;
}

int guest_dmesg_count(const char *needle)
{
	uint64_t last_us;
	int count, ret;

	ret = kmsg_scan(needle, &count, &last_us);
	return ret ? ret : count;
}

int guest_wait_dmar_ratelimit(void)
{
	/* The limiter's window opens with a logged "handling fault status" line. */
	const int64_t window_us = 5000000, margin_us = 500000;
	uint64_t last_us;
	struct timespec ts;
	int64_t wait_us;
	int count, ret;

	ret = kmsg_scan("DRHD: handling fault status", &count, &last_us);
	if (ret || !count)
		return ret;
	/* printk time and CLOCK_MONOTONIC both count from boot; the margin covers their skew. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	wait_us = (int64_t)last_us + window_us + margin_us -
		  (ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	if (wait_us <= 0)
		return 0;
	ts.tv_sec = wait_us / 1000000;
	ts.tv_nsec = wait_us % 1000000 * 1000;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	return 0;
}

static uint64_t edu_read(const struct edu *e, unsigned reg)
{
	return *(volatile uint64_t *)(e->bar0 + reg);
}

static void edu_write(struct edu *e, unsigned reg, uint64_t val)
{
	*(volatile uint64_t *)(e->bar0 + reg) = val;
}

int edu_open(int device_fd, struct edu *e)
{
	struct vfio_region_info bar = { .argsz = sizeof(bar), .index = VFIO_PCI_BAR0_REGION_INDEX };
	struct vfio_region_info cfg = { .argsz = sizeof(cfg),
					.index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t cmd;
	ssize_t n;
	void *p;
	int ret;

	ret = ioctl_ptr(device_fd, VFIO_DEVICE_GET_REGION_INFO, &bar);
	if (ret >= 0)
		ret = ioctl_ptr(device_fd, VFIO_DEVICE_GET_REGION_INFO, &cfg);
	if (ret < 0)
		return ret;
	if (!(bar.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar.size <= EDU_REG_CMD)
		return -ENXIO;
	p = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, device_fd, bar.offset);
	if (p == MAP_FAILED)
		return -errno;
	if (*(volatile uint32_t *)((uint8_t *)p + EDU_REG_ID) != EDU_ID) {
		munmap(p, bar.size);
		return -ENODEV;
	}
	/* vfio-pci leaves bus mastering off: without it every DMA is dropped. */
	n = pread(device_fd, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND);
	if (n == sizeof(cmd)) {
		cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
		n = pwrite(device_fd, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND);
	}
	if (n != sizeof(cmd)) {
		ret = n < 0 ? -errno : -EIO;
		munmap(p, bar.size);
		return ret;
	}
	e->device_fd = device_fd;
	e->bar0 = p;
	e->bar0_size = bar.size;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int edu_wait_idle(const struct edu *e)
{
	const struct timespec nap = { .tv_nsec = 1000000 };
	int64_t deadline = now_ms() + EDU_TIMEOUT_MS;

	while (edu_read(e, EDU_REG_CMD) & EDU_CMD_RUN) {
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		nanosleep(&nap, NULL);
	}
	return 0;
}

int edu_dma_start(struct edu *e, uint64_t iova, bool to_ram, size_t len)
{
	int ret;

	if (!e->bar0 || !len || len > EDU_BUF_SIZE)
		return -EINVAL;
	if (iova >= EDU_DMA_LIMIT || len > EDU_DMA_LIMIT - iova)
		return -ERANGE;
	/* edu ignores register writes while a transfer runs. */
	ret = edu_wait_idle(e);
	if (ret)
		return ret;
	edu_write(e, EDU_REG_SRC, to_ram ? EDU_BUF_ADDR : iova);
	edu_write(e, EDU_REG_DST, to_ram ? iova : EDU_BUF_ADDR);
	edu_write(e, EDU_REG_CNT, len);
	/* The device must see the caller's RAM writes before it starts. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	edu_write(e, EDU_REG_CMD, EDU_CMD_RUN | (to_ram ? EDU_CMD_TO_RAM : 0));
	return 0;
}

bool edu_dma_busy(const struct edu *e)
{
	bool busy = edu_read(e, EDU_REG_CMD) & EDU_CMD_RUN;

	/* The caller's reads of what the device wrote come after this. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return busy;
}

int edu_dma_wait(const struct edu *e)
{
	int ret = edu_wait_idle(e);

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return ret;
}

int edu_dma(struct edu *e, uint64_t iova, bool to_ram, size_t len)
{
	return edu_dma_start(e, iova, to_ram, len) ?: edu_dma_wait(e);
}

int edu_roundtrip(struct edu *e, uint64_t src_iova, uint64_t dst_iova, size_t len)
{
	int ret = edu_dma(e, src_iova, false, len);

	return ret ? ret : edu_dma(e, dst_iova, true, len);
}

void edu_close(struct edu *e)
{
	if (e->bar0)
		munmap((void *)e->bar0, e->bar0_size);
	e->bar0 = NULL;
	e->bar0_size = 0;
}

int guest_target_open(struct guest_target *t, const char *name)
{
	memset(t, 0, sizeof(*t));
	t->edu.device_fd = -1;
	t->name = name;
	t->container = t->device = t->iommufd = -1;
	if (!strcmp(name, "type1"))
		return guest_open_type1(VFIO_TYPE1v2_IOMMU, &t->container, &t->device) ?:
		       edu_open(t->device, &t->edu);
	if (!strcmp(name, "compat"))
		return guest_open_type1(VFIO_TYPE1_IOMMU, &t->container, &t->device) ?:
		       edu_open(t->device, &t->edu);
	if (!strcmp(name, "iommufd")) {
		t->iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
		if (t->iommufd < 0)
			return -errno;
		return guest_ioas_alloc(t->iommufd, &t->ioas) ?:
		       guest_iommufd_bind(t->iommufd, &t->device) ?:
		       guest_iommufd_attach(t->device, t->ioas) ?: edu_open(t->device, &t->edu);
	}
	return -EINVAL;
}

void guest_target_close(struct guest_target *t)
{
	edu_close(&t->edu);
	if (t->device >= 0)
		close(t->device);
	if (t->container >= 0)
		close(t->container);
	if (t->iommufd >= 0)
		close(t->iommufd);
}

int guest_kernel_mapped(struct cvm_dma *dma, uint64_t iova, uint64_t probe_va)
{
	struct cvm_be *be = cvm_dma_backend(dma);
	uint64_t done;
	int err = be->ops->map(be, iova, 4096, (void *)(uintptr_t)probe_va);

	if (err == -EEXIST)
		return 1;
	if (err)
		return err;
	err = be->ops->unmap(be, iova, 4096, &done);
	return err ? err : 0;
}

void guest_target_config(const struct guest_target *t, struct cvm_dma_config *c)
{
	if (t->container >= 0) {
		c->backend = CVM_BACKEND_TYPE1;
		c->fd = t->container;
	} else {
		c->backend = CVM_BACKEND_IOMMUFD;
		c->fd = t->iommufd;
		c->ioas_id = t->ioas;
	}
}

long guest_locked_pages(void)
{
	char line[128];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib < 0 ? -1 : kib / 4;
}

int guest_ipc_lock_effective(bool on)
{
	if (capng_get_caps_process())
		return -EPERM;
	capng_update(on ? CAPNG_ADD : CAPNG_DROP, CAPNG_EFFECTIVE, CAP_IPC_LOCK);
	return capng_apply(CAPNG_SELECT_CAPS) ? -EPERM : 0;
}
