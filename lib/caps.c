// SPDX-License-Identifier: MIT
/*
 * Capability probes.  Pinning: VFIO type1 (and iommufd's VFIO-compatible
 * maps) charge pinned pages to the process's locked memory (VmLck) against
 * RLIMIT_MEMLOCK unless it has CAP_IPC_LOCK; a map past the limit fails with
 * a bare -ENOMEM, so we say which of the two is missing.  Cut: see
 * cvm_probe_cut().
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cap-ng.h>

#include "internal.h"
#include "caps.h"

/* The sz that the first release of struct cvm_pin_info had: the least a
 * caller may pass. */
#define PIN_INFO_SZ_0_1 offsetofend(struct cvm_pin_info, locked_bytes)

/* Asks the kernel without disturbing a libcap-ng state the caller (the VMM)
 * may be building: libcap-ng keeps one state per thread. */
static int have_cap_ipc_lock(bool *have)
{
	void *saved = capng_save_state();
	int ret = 0;

	if (capng_get_caps_process() < 0)
		ret = -EIO;
	else
		*have = capng_have_capability(CAPNG_EFFECTIVE, CAP_IPC_LOCK) == 1;
	capng_restore_state(&saved);
	return ret;
}

static int read_vmlck(uint64_t *bytes)
{
	char line[128];
	int ret = -ENODATA;
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kib;

		if (sscanf(line, "VmLck: %llu kB", &kib) == 1) {
			*bytes = (uint64_t)kib * 1024;
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

static int pin_probe(struct cvm_pin_info *pi)
{
	struct rlimit rl;
	bool cap = false;
	int ret;

	ret = have_cap_ipc_lock(&cap);
	if (ret)
		return ret;
	if (getrlimit(RLIMIT_MEMLOCK, &rl))
		return -errno;
	ret = read_vmlck(&pi->locked_bytes);
	if (ret)
		return ret;
	pi->cap_ipc_lock = cap;
	pi->reserved = 0;
	pi->memlock_limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
	return 0;
}

/* 0: the kernel will let these bytes be pinned; -ENOMEM: it will not. */
static int pin_verdict(const struct cvm_pin_info *pi, uint64_t bytes)
{
	if (pi->cap_ipc_lock || pi->memlock_limit == UINT64_MAX)
		return 0;
	if (pi->locked_bytes > pi->memlock_limit ||
	    bytes > pi->memlock_limit - pi->locked_bytes)
		return -ENOMEM;
	return 0;
}

CVM_EXPORT int cvm_pin_check(uint64_t bytes, struct cvm_pin_info *info)
{
	struct cvm_pin_info pi;
	int ret;

	if (info) {
		ret = cvm_copy_sized(&pi, sizeof(pi), CVM_PIN_INFO_HALF, info, PIN_INFO_SZ_0_1);
		if (ret)
			return ret;
	}
	ret = pin_probe(&pi);
	/* -ENOMEM is the answer "no" (and fills *info): a probe that could not
	 * tell because memory ran short (open(2) of /proc/self/status) must
	 * not read as one. */
	if (ret == -ENOMEM)
		ret = -EAGAIN;
	if (ret)
		return ret;
	if (info)
		cvm_copy_out(info, &pi, sizeof(pi));
	return pin_verdict(&pi, bytes);
}

static void fmt_bytes(char *buf, size_t len, uint64_t bytes)
{
	if (bytes == UINT64_MAX)
		snprintf(buf, len, "unlimited");
	else
		snprintf(buf, len, "%" PRIu64 " KiB", bytes / 1024);
}

void cvm_pin_diagnose(uint64_t bytes, int err)
{
	struct cvm_pin_info pi = { .sz = sizeof(pi) };
	char req[32], lim[32], lck[32];
	int ret;

	if (!cvm_log_enabled(LOG_ERR))
		return;
	fmt_bytes(req, sizeof(req), bytes);
	ret = pin_probe(&pi);
	if (ret) {
		cvm_err("pinning %s for DMA failed (%s); could not read the pinning limits (%s)",
			req, strerror(-err), strerror(-ret));
		return;
	}
	fmt_bytes(lim, sizeof(lim), pi.memlock_limit);
	fmt_bytes(lck, sizeof(lck), pi.locked_bytes);
	if (pi.cap_ipc_lock || pi.memlock_limit == UINT64_MAX) {
		cvm_err("pinning %s for DMA failed (%s) although %s (RLIMIT_MEMLOCK %s, %s locked): "
			"the host or the memory cgroup is short of memory",
			req, strerror(-err),
			pi.cap_ipc_lock ? "the process has CAP_IPC_LOCK" : "RLIMIT_MEMLOCK is unlimited",
			lim, lck);
		return;
	}
	cvm_err("pinning %s for DMA failed (%s): no CAP_IPC_LOCK; RLIMIT_MEMLOCK %s, %s locked "
		"already, so the request %s; remedy: raise RLIMIT_MEMLOCK (ulimit -l, systemd "
		"LimitMEMLOCK=) or grant CAP_IPC_LOCK; iommufd charges all of the user's pins "
		"unless IOMMU_OPTION_RLIMIT_MODE=1 selects per-process accounting",
		req, strerror(-err), lim, lck,
		pin_verdict(&pi, bytes) ? "exceeds it" : "fits, but pins charged elsewhere count");
}

static uint64_t probe_page(const struct cvm_be *be)
{
	uint64_t host = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t iommu = be->pgsizes ? be->pgsizes & -be->pgsizes : 0;

	return max_u64(host, iommu);
}

/* As cvm_probe_cut(); cleans up whatever the attempt left. */
static int probe_cut_at(struct cvm_be *be, cvm_cut_fn cut, uint64_t iova,
			uint64_t pg, void *va)
{
	uint64_t cut_bytes = 0, rest = 0;
	int ret, ret_cut, ret_rest;

	ret = be->ops->map(be, iova, 3 * pg, va);
	if (ret == -ENOMEM) {
		cvm_pin_diagnose(3 * pg, ret);
		cvm_err("%s: cut probe: the kernel would not pin its %" PRIu64 " scratch bytes, so "
			"the context does not open: give it that much room to pin (see above), or "
			"open with CVM_DMA_NO_CUT (no probe, and no hitless cut)",
			be->ops->name, 3 * pg);
		return ret;
	}
	if (ret) {
		cvm_info("%s: cut probe: mapping 3 pages at %#" PRIx64 " failed (%s): no cut",
			 be->ops->name, iova, strerror(-ret));
		return 0;
	}
	ret_cut = cut(be, iova + pg, pg, &cut_bytes);
	ret_rest = be->ops->unmap(be, iova, 3 * pg, &rest);
	if (ret_rest)
		cvm_warn("%s: cut probe: could not unmap its scratch window at %#" PRIx64
			 " (%s): %" PRIu64 " bytes may stay mapped",
			 be->ops->name, iova, strerror(-ret_rest), 3 * pg - cut_bytes);
	if (!ret_cut && cut_bytes == pg && !ret_rest && rest == 2 * pg) {
		cvm_info("%s: cut probe: the middle page came out alone: hitless cut available",
			 be->ops->name);
		return 1;
	}
	cvm_info("%s: cut probe: middle-page unmap returned %d (%s) with %" PRIu64
		 " bytes, the rest %" PRIu64 " bytes: no cut",
		 be->ops->name, ret_cut, ret_cut ? strerror(-ret_cut) : "ok", cut_bytes, rest);
	return 0;
}

/*
 * Probes of contexts opened at once on one container (or IOAS) pick the
 * same scratch window: one at a time, or the second would find the window
 * taken and go without the cut for its whole life.  Taken inside
 * claims_lock by the iommufd backend, alone by type1.
 */
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;

int cvm_probe_cut(struct cvm_be *be, cvm_cut_fn cut)
{
	uint64_t pg = probe_page(be), iova;
	void *va;
	int ret;

	ret = cvm_backend_scratch_iova(be, 3 * pg, &iova);
	if (ret) {
		cvm_info("%s: cut probe: no scratch IOVA window (%s): no cut",
			 be->ops->name, strerror(-ret));
		return 0;
	}
	va = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (va == MAP_FAILED) {
		cvm_err("%s: cut probe: no memory to probe with (%s)", be->ops->name,
			strerror(errno));
		return -ENOMEM;
	}
	pthread_mutex_lock(&probe_lock);
	ret = probe_cut_at(be, cut, iova, pg, va);
	pthread_mutex_unlock(&probe_lock);
	munmap(va, 3 * pg);
	return ret;
}
