// SPDX-License-Identifier: MIT
/*
 * guest-iotlb [type1|iommufd|compat]: hitlessness as the virtual IOMMU sees
 * it.  tests/vm/guest-check.sh boots the guest with QEMU's trace of the
 * vIOMMU's IOTLB invalidations on (tests/vm/qemu-run --trace), the record
 * of every change the guest kernel made to a live IOMMU mapping; this
 * program says what each step may have invalidated, and guest-tap.awk
 * checks it against that record once QEMU has exited.
 *
 * A step is bracketed by two marker invalidations: a page at an IOVA of its
 * own, outside the region, mapped and unmapped through the context's own
 * backend just before the step and again just after it.  Each marker
 * unmap is one invalidation of that page in the domain the device is
 * attached to; what the domain saw between them is what the step did.  A
 * result line carries the step's claim as a directive the awk replaces:
 *
 *   ok N - DESCRIPTION # IOTLB BEGIN END LO HI only|none|beyond
 *
 *   only    every page of [LO, HI) invalidated, and nothing outside it:
 *           the pages going private, and nothing that stays shared;
 *   none    no invalidation at all (a share maps; it never unmaps);
 *   beyond  some invalidation outside [LO, HI): the control, a context
 *           that cannot cut and remaps what stays shared (so the check
 *           can tell the difference).
 *
 * Per target, a 2 MiB run shared in one conversion, then three single
 * pages of it made private one at a time, then one of them shared again,
 * then four aligned pages around it made private at once, then a batch
 * share of those four and of two pages the kernel cannot pin (PROT_NONE):
 *   - in every context the failed batch invalidates only what it mapped
 *     before the kernel refused (the rollback), nothing that was shared;
 *   - auto where the backend cuts, and per-page everywhere: each hole
 *     invalidates its pages only, and the share invalidates nothing;
 *   - auto where it cannot cut (a 2 MiB granule), and no-cut where it can:
 *     each hole invalidates pages that stay shared too (the remap the
 *     library counts in disrupted_bytes).
 * Run alone (tests/vm/run-in-guest), nothing checks the directives.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cvmdma.h"
#include "dma.h"
#include "guest-tap.h"
#include "guest.h"

#define PG        4096ull
#define RAM_GPA   0x40000000ull        /* 2 MiB aligned */
#define RUN_PG    512ull               /* one 2 MiB run */
#define MARK_IOVA 0x80000000ull        /* markers: above the region, below 4 GiB */

static const uint64_t holes[] = { 1, 257, 510 };

static uint8_t *ram_hva, *mark_hva;
static uint64_t nmark;                 /* marker pairs used so far (IOVAs never repeat) */

/* One marker invalidation: the page at iova mapped and unmapped again. */
static int marker(struct cvm_be *be, uint64_t iova)
{
	uint64_t done = 0;
	int err = be->ops->map(be, iova, PG, mark_hva);

	if (!err)
		err = be->ops->unmap(be, iova, PG, &done);
	if (!err && done != PG)
		err = -EIO;
	return err;
}

/*
 * Convert the n ranges rs of ram to `to` (one batch) between two markers;
 * the conversion must return want.  Then print the result line that
 * claims `kind` for the IOVAs [lo, hi) (RAM_GPA is the IOVA of the
 * region's first page).
 */
static void step(struct guest_target *tg, const char *policy, struct cvm_dma *d,
		 struct cvm_region *ram, const struct cvm_range *rs, size_t n, enum cvm_state to,
		 int want, uint64_t lo, uint64_t hi, const char *kind, const char *what)
{
	struct cvm_be *be = cvm_dma_backend(d);
	uint64_t b = MARK_IOVA + 2 * nmark * PG, e = b + PG;
	int err_b, err = 0, err_e = 0;

	nmark++;
	err_b = marker(be, b);
	if (!err_b)
		err = cvm_convert_batch(ram, rs, n, to, 0);
	if (!err_b)
		err_e = marker(be, e);
	if (err_b || err != want || err_e) {
		tap_ok(false, "%s/%s: %s (marker %d, conversion %d, marker %d)", tg->name, policy,
		       what, err_b, err, err_e);
		return;
	}
	printf("ok %d - %s/%s: %s # IOTLB 0x%llx 0x%llx 0x%llx 0x%llx %s\n", ++tap_count,
	       tg->name, policy, what, (unsigned long long)b, (unsigned long long)e,
	       (unsigned long long)lo, (unsigned long long)hi, kind);
	fflush(stdout);
}

/* The same for one range [gpa, gpa + len), which must convert, and the
 * claim about it. */
static void step1(struct guest_target *tg, const char *policy, struct cvm_dma *d,
		  struct cvm_region *ram, uint64_t gpa, uint64_t len, enum cvm_state to,
		  const char *kind, const char *what)
{
	struct cvm_range r = { gpa, len };

	step(tg, policy, d, ram, &r, 1, to, 0, gpa, gpa + len, kind, what);
}

/* The target's auto context could cut (set by its run). */
static bool target_cuts;

static void run_policy(struct guest_target *tg, const char *policy, uint32_t flags)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RUN_PG * PG,
					.hva = ram_hva };
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1, .flags = flags };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_region *ram = NULL;
	struct cvm_dma *d = NULL;
	const char *hole_kind;
	char what[160];
	bool hitless;
	int err;

	if ((flags & CVM_DMA_NO_CUT) && !target_cuts) {
		tap_skip("the backend cannot cut: the same as auto",
			 "%s/%s: the vIOMMU saw the remap the library reported", tg->name, policy);
		return;
	}
	guest_target_config(tg, &c);
	err = cvm_region_create(&rc, &ram) ?: cvm_dma_open(&c, &d) ?: cvm_dma_add_region(d, ram) ?:
	      cvm_convert(ram, RAM_GPA, RUN_PG * PG, CVM_SHARED, 0);
	if (!tap_ok(!err, "%s/%s: a 2 MiB run shared in one conversion (%d)", tg->name, policy,
		    err))
		goto out;
	cvm_dma_info(d, &info);
	if (!flags)
		target_cuts = info.can_cut;
	hitless = info.can_cut || (flags & CVM_DMA_PER_PAGE);
	hole_kind = hitless ? "only" : "beyond";
	for (size_t i = 0; i < sizeof(holes) / sizeof(holes[0]); i++) {
		snprintf(what, sizeof(what), "page %llu of the run goes private: the vIOMMU %s",
			 (unsigned long long)holes[i],
			 hitless ? "invalidates that page only" :
				   "invalidates pages that stay shared too (the control)");
		step1(tg, policy, d, ram, RAM_GPA + holes[i] * PG, PG, CVM_PRIVATE, hole_kind, what);
	}
	snprintf(what, sizeof(what), "page %llu is shared again: the vIOMMU invalidates nothing",
		 (unsigned long long)holes[1]);
	step1(tg, policy, d, ram, RAM_GPA + holes[1] * PG, PG, CVM_SHARED, "none", what);
	/* Four pages across that one and the pieces around it: aligned, so
	 * that the kernel's invalidations (a power of two each, aligned to its
	 * size) need not reach past them. */
	snprintf(what, sizeof(what), "pages 256-259 go private in one conversion: the vIOMMU %s",
		 hitless ? "invalidates those pages only" :
			   "invalidates pages that stay shared too (the control)");
	step1(tg, policy, d, ram, RAM_GPA + 256 * PG, 4 * PG, CVM_PRIVATE, hole_kind, what);
	/* A batch share the kernel refuses half way: pages 256-259 map, then
	 * the pin of 480-481 fails (-EFAULT: their memory is PROT_NONE now);
	 * the rollback unmaps what the call mapped and nothing else. */
	err = cvm_convert(ram, RAM_GPA + 480 * PG, 2 * PG, CVM_PRIVATE, 0);
	if (!err && mprotect(ram_hva + 480 * PG, 2 * PG, PROT_NONE))
		err = -errno;
	if (tap_ok(!err, "%s/%s: pages 480-481 private, their memory PROT_NONE (%d)", tg->name,
		   policy, err)) {
		struct cvm_range rs[] = { { RAM_GPA + 256 * PG, 4 * PG },
					  { RAM_GPA + 480 * PG, 2 * PG } };

		step(tg, policy, d, ram, rs, 2, CVM_SHARED, -EFAULT, rs[0].gpa,
		     rs[0].gpa + rs[0].length, "only",
		     "a batch share the kernel refuses in its second run (EFAULT): the rollback "
		     "invalidates the first run's pages only");
		mprotect(ram_hva + 480 * PG, 2 * PG, PROT_READ | PROT_WRITE);
	}
	cvm_dma_stats(d, &st);
	tap_ok(hitless ? !st.disrupted_bytes && !st.disruptive_splits :
			 st.disrupted_bytes > 0,
	       "%s/%s: the library reported %llu bytes disrupted in %llu remaps (%s)", tg->name,
	       policy, (unsigned long long)st.disrupted_bytes,
	       (unsigned long long)st.disruptive_splits,
	       hitless ? "none, as it cuts or maps per page" : "some, as it can do neither");
out:
	cvm_dma_close(d);
	cvm_region_destroy(ram);
}

static void run_target(const char *name)
{
	struct guest_target tg;

	if (!tap_target_open(&tg, name))
		return;
	target_cuts = false;
	run_policy(&tg, "auto", 0);
	run_policy(&tg, "per-page", CVM_DMA_PER_PAGE);
	run_policy(&tg, "no-cut", CVM_DMA_NO_CUT);
	guest_target_close(&tg);
}

int main(int argc, char **argv)
{
	int st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!tap_need_edu(&st))
		return st;
	ram_hva = mmap(NULL, RUN_PG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	mark_hva = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram_hva == MAP_FAILED || mark_hva == MAP_FAILED) {
		printf("Bail out! mmap: %s\n", strerror(errno));
		return 1;
	}
	memset(ram_hva, 0, RUN_PG * PG);
	memset(mark_hva, 0, PG);
	guest_each_target(argc, argv, run_target);
	return tap_done();
}
