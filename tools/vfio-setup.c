// SPDX-License-Identifier: MIT
/* VFIO device setup for the real backends (see vfio-setup.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "vfio-setup.h"

static int fail(char *err, size_t errsz, int r, const char *what, const char *bdf)
{
	snprintf(err, errsz, "%s: %s: %s", bdf, what, strerror(-r));
	return r;
}

/* Lower-case hex digits at s, as sysfs writes them. */
static size_t hex_run(const char *s)
{
	size_t n = 0;

	while ((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))
		n++;
	return n;
}

bool vfio_bdf_valid(const char *bdf)
{
	size_t d = hex_run(bdf);

	if (d < 4 || d > 8 || bdf[d] != ':')
		return false;
	bdf += d + 1;
	if (hex_run(bdf) != 2 || bdf[2] != ':')
		return false;
	bdf += 3;
	if (hex_run(bdf) != 2 || bdf[2] != '.' || bdf[0] > '1')
		return false;
	return bdf[3] >= '0' && bdf[3] <= '7' && !bdf[4];
}

/* A PCI address this machine has: present in sysfs. */
static int check_bdf(const char *bdf, char *err, size_t errsz)
{
	char dir[PATH_MAX];

	if (!vfio_bdf_valid(bdf))
		return fail(err, errsz, -EINVAL, "not a PCI address (as 0000:00:03.0)", bdf);
	snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s", bdf);
	if (access(dir, F_OK))
		return fail(err, errsz, -ENODEV, "no such PCI device", bdf);
	return 0;
}

static int group_path(const char *bdf, char *path, size_t pathsz, char *err, size_t errsz)
{
	char link[PATH_MAX], target[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return fail(err, errsz, -errno, "no IOMMU group (is the IOMMU on?)", bdf);
	target[n] = '\0';
	snprintf(path, pathsz, "/dev/vfio/%s", basename(target));
	return 0;
}

int vfio_type1_setup(const char *bdf, struct vfio_dev *d, char *err, size_t errsz)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	char path[PATH_MAX];
	int r;

	*d = (struct vfio_dev)VFIO_DEV_INIT;
	r = check_bdf(bdf, err, errsz) ?: group_path(bdf, path, sizeof(path), err, errsz);
	if (r)
		return r;
	d->group = open(path, O_RDWR | O_CLOEXEC);
	if (d->group < 0) {
		r = fail(err, errsz, -errno, "open VFIO group (is it bound to vfio-pci?)", bdf);
		goto out;
	}
	if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &st)) {
		r = fail(err, errsz, -errno, "VFIO_GROUP_GET_STATUS", bdf);
		goto out;
	}
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		r = fail(err, errsz, -EBUSY, "group not viable (bind every device in it to "
			 "vfio-pci)", bdf);
		goto out;
	}
	d->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (d->container < 0) {
		r = fail(err, errsz, -errno, "open /dev/vfio/vfio", bdf);
		goto out;
	}
	if (ioctl(d->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
	    ioctl(d->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
		r = fail(err, errsz, -EOPNOTSUPP, "container lacks VFIO_TYPE1v2_IOMMU", bdf);
		goto out;
	}
	if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container)) {
		r = fail(err, errsz, -errno, "VFIO_GROUP_SET_CONTAINER", bdf);
		goto out;
	}
	if (ioctl(d->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		r = fail(err, errsz, -errno, "VFIO_SET_IOMMU(TYPE1v2)", bdf);
		goto out;
	}
	/* Opening the device is what a VMM does next; some kernels only report
	 * the final IOVA ranges and page sizes once a device is open. */
	d->device = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (d->device < 0) {
		r = fail(err, errsz, -errno, "VFIO_GROUP_GET_DEVICE_FD", bdf);
		goto out;
	}
	return 0;
out:
	vfio_teardown(d);
	return r;
}

static int cdev_path(const char *bdf, char *path, size_t pathsz, char *err, size_t errsz)
{
	char dir[PATH_MAX];
	struct dirent *e;
	DIR *dp;

	snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	dp = opendir(dir);
	if (!dp)
		return fail(err, errsz, -errno, "no vfio-dev cdev (bound to vfio-pci? "
			    "CONFIG_VFIO_DEVICE_CDEV?)", bdf);
	while ((e = readdir(dp)))
		if (!strncmp(e->d_name, "vfio", 4))
			break;
	if (!e) {
		closedir(dp);
		return fail(err, errsz, -ENOENT, "no vfioN in vfio-dev", bdf);
	}
	snprintf(path, pathsz, "/dev/vfio/devices/%s", e->d_name);
	closedir(dp);
	return 0;
}

int vfio_iommufd_attach(const char *bdf, int iommufd, uint32_t ioas, struct vfio_dev *d,
			char *err, size_t errsz)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at), .pt_id = ioas };
	char path[PATH_MAX];
	int r;

	*d = (struct vfio_dev)VFIO_DEV_INIT;
	r = check_bdf(bdf, err, errsz) ?: cdev_path(bdf, path, sizeof(path), err, errsz);
	if (r)
		return r;
	d->device = open(path, O_RDWR | O_CLOEXEC);
	if (d->device < 0)
		return fail(err, errsz, -errno, path, bdf);
	if (ioctl(d->device, VFIO_DEVICE_BIND_IOMMUFD, &bind)) {
		r = -errno;
		r = fail(err, errsz, r, r == -EINVAL || r == -EBUSY ?
			 "VFIO_DEVICE_BIND_IOMMUFD (is the device in use by another process?)" :
			 "VFIO_DEVICE_BIND_IOMMUFD", bdf);
		goto out;
	}
	if (ioctl(d->device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)) {
		r = fail(err, errsz, -errno, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", bdf);
		goto out;
	}
	return 0;
out:
	vfio_teardown(d);
	return r;
}

void vfio_teardown(struct vfio_dev *d)
{
	if (d->device >= 0)
		close(d->device);
	if (d->group >= 0) {
		if (d->container >= 0)
			ioctl(d->group, VFIO_GROUP_UNSET_CONTAINER);
		close(d->group);
	}
	if (d->container >= 0)
		close(d->container);
	*d = (struct vfio_dev)VFIO_DEV_INIT;
}
