// SPDX-License-Identifier: MIT
/*
 * cvmdma-replay's check on a real kernel: after a replay the kernel must
 * map nothing that is private, not only the library's table.  This program
 * links the tool's replay engine and the library statically and defines
 * ioctl(), so it can make one unmap report success without reaching the
 * kernel: the library's table then matches the shared set, the kernel
 * still maps the pages, and the replay must fail its verification.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "guest-tap.h"
#include "guest.h"
#include "replay.h"
#include "trace.h"

#define DROP_IOVA 0x40100000ull	/* the unmap at this IOVA is faked, once */
#define GROW_IOVA 0x40200000ull	/* the map at this IOVA takes a page more, once */
static int drop_unmap, dropped, grow_map, grown;

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (drop_unmap &&
	    ((req == VFIO_IOMMU_UNMAP_DMA &&
	      ((struct vfio_iommu_type1_dma_unmap *)arg)->iova == DROP_IOVA) ||
	     (req == IOMMU_IOAS_UNMAP && ((struct iommu_ioas_unmap *)arg)->iova == DROP_IOVA))) {
		/* Success as the kernel reports it, the mappings left in place. */
		drop_unmap = 0;
		dropped++;
		return 0;
	}
	if (grow_map &&
	    ((req == VFIO_IOMMU_MAP_DMA &&
	      ((struct vfio_iommu_type1_dma_map *)arg)->iova == GROW_IOVA) ||
	     (req == IOMMU_IOAS_MAP && ((struct iommu_ioas_map *)arg)->iova == GROW_IOVA))) {
		/* The kernel maps the private page after the run too. */
		if (req == VFIO_IOMMU_MAP_DMA)
			((struct vfio_iommu_type1_dma_map *)arg)->size += 4096;
		else
			((struct iommu_ioas_map *)arg)->length += 4096;
		grow_map = 0;
		grown++;
	}
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

/* 64 KiB shared then private again: per-page, 16 mappings and one unmap. */
static const char trace_text[] =
	"cvmdma-trace 1\n"
	"region 0x40000000 16M private\n"
	"shared 0x40100000+64K\n"
	"private 0x40100000+64K\n"
	"shared 0x40200000+8K\n";

static void run(const struct trace *t, const char *bdf, enum cvm_backend backend,
		const char *name)
{
	struct replay_cfg cfg = { .backend = backend, .device = bdf };
	struct policy pol;
	struct result res;

	policy_parse("per-page", &pol);
	replay_run(t, &cfg, &pol, &res);
	if (res.stage == FAIL_SETUP) {
		tap_ok(false, "%s: the replay sets up on the real kernel (%s)", name, res.msg);
		return;
	}
	tap_ok(res.stage == FAIL_NONE, "%s: the replay ends with the kernel mapping exactly the "
	       "shared pages (%s)", name, res.stage == FAIL_NONE ? "ok" : res.msg);
	drop_unmap = 1;
	dropped = 0;
	replay_run(t, &cfg, &pol, &res);
	drop_unmap = 0;
	tap_ok(dropped == 1 && res.stage == FAIL_VERIFY && strstr(res.msg, "the kernel maps 64"),
	       "%s: an unmap that never reached the kernel fails the replay's check, though "
	       "the library's table matches (%s)", name, res.msg);
	replay_run(t, &cfg, &pol, &res);
	tap_ok(res.stage == FAIL_NONE, "%s: and the next replay finds nothing left in the "
	       "kernel (%s)", name, res.stage == FAIL_NONE ? "ok" : res.msg);
	/* One mapping for the last share, which the kernel makes a page
	 * longer than the library asked: it reaches into the private gap
	 * after the run without covering the gap. */
	policy_parse("unbounded", &pol);
	grow_map = 1;
	grown = 0;
	replay_run(t, &cfg, &pol, &res);
	grow_map = 0;
	tap_ok(grown == 1 && res.stage == FAIL_VERIFY && strstr(res.msg, "the kernel maps part"),
	       "%s: a kernel mapping that reaches from a shared run into a private page fails "
	       "the check (%s)", name, res.msg);
}

/* A trace that would pin more than the guest has is refused at setup, with
 * the reason: not ended by the OOM killer.  The second one's conversions to
 * shared add up past 2^64 (the total saturates) and a region starts shared:
 * the bound must saturate too, not wrap to that region's size. */
static void run_too_big(const char *bdf, const char *text, const char *what)
{
	char path[] = "/tmp/guest-replay-XXXXXX", err[256] = "";
	struct replay_cfg cfg = { .backend = CVM_BACKEND_TYPE1, .device = bdf };
	struct policy pol;
	struct result res;
	struct trace t;
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, text, strlen(text)) < 0 || close(fd) ||
	    trace_load(path, &t, err, sizeof(err))) {
		tap_ok(false, "replay: the trace of %s loads (%s)", what, err);
		return;
	}
	unlink(path);
	policy_parse("auto", &pol);
	replay_run(&t, &cfg, &pol, &res);
	tap_ok(res.stage == FAIL_SETUP && res.err == -ENOMEM && strstr(res.msg, "may pin up to"),
	       "replay: a trace that would pin %s in a small guest is refused at setup (%s)",
	       what, res.msg);
	trace_free(&t);
}

int main(void)
{
	char bdf[32], cdev[64], path[] = "/tmp/guest-replay-XXXXXX", err[256];
	struct trace t;
	int group, fd, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	ret = guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev));
	if (ret == -ENODEV)
		return tap_skip_all("no edu device: run me in the guest (tests/vm/run-in-guest)");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, trace_text, sizeof(trace_text) - 1) < 0 || close(fd) ||
	    trace_load(path, &t, err, sizeof(err))) {
		tap_ok(false, "replay: the trace loads (%s)", err);
		return tap_done();
	}
	unlink(path);
	run(&t, bdf, CVM_BACKEND_TYPE1, "replay/type1");
	run(&t, bdf, CVM_BACKEND_IOMMUFD, "replay/iommufd");
	trace_free(&t);
	run_too_big(bdf, "cvmdma-trace 1\nregion 0x100000000 64G shared\n", "64 GiB");
	run_too_big(bdf, "cvmdma-trace 1\nregion 0 0x4000000000000000 private page=1G\n"
		    "region 0x4000000000000000 2M shared\n"
		    "shared 0+0x4000000000000000\nshared 0+0x4000000000000000\n"
		    "shared 0+0x4000000000000000\nshared 0+0x4000000000000000\n"
		    "shared 0+0x4000000000000000\n", "4 EiB, and more than 2^64 bytes to shared");
	return tap_done();
}
