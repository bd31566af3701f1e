// SPDX-License-Identifier: MIT
/*
 * guest-inflight [type1|iommufd|compat]: hitlessness as the DEVICE sees it,
 * with its DMA in flight while the library cuts the mapping it goes through.
 *
 * Each round has the edu device copy a fresh pattern from page A of a run
 * into its buffer, then its buffer into page B (poisoned first).  edu
 * performs each transfer at once, when its timer fires 100 ms after it was
 * started, on QEMU's main thread, while the guest's vCPUs go on.  For each
 * transfer the run (16 MiB, or one granule where the context's is smaller)
 * is shared as one conversion, and until the device reports done this
 * thread makes the run's other pages private one by one, from both ends
 * toward the page the device uses: where the library cuts, each one a cut
 * of the very mapping that holds that page.  The peel is paced to last
 * twice as long as a transfer, so the kernel is still cutting when the
 * device reads or writes (each transfer counts whether it was).  A
 * transfer that found its page unmapped, even for a moment, leaves B
 * without the pattern (a read of an unmapped page gives zeros, a write to
 * one is dropped), and the IOMMU logs a DMAR fault.
 *
 * Per target, for auto, per-page and no-cut (CVM_DMA_NO_CUT, skipped where
 * the backend cannot cut: the same as auto):
 *   - where the library cuts or maps per page: every round trip lands, no
 *     DMAR fault, disrupted_bytes 0;
 *   - where it may disrupt (neither, so a 2 MiB granule): each round trip
 *     lost comes with disrupted bytes the library reported during it;
 *   - in both, at least half the transfers happened while the peel was
 *     still going on (else the test proved nothing);
 *   - the control, a VMM that coalesces naively (each change: unmap the
 *     run, map it again, through the same backend): a round trip is lost
 *     within 16, so the probe does see a brief unmap.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cvmdma.h"
#include "dma.h"
#include "guest-tap.h"
#include "guest.h"

#define PG      4096ull
#define RAM_GPA 0x40000000ull          /* 2 MiB aligned, below edu's 4 GiB */
#define RUN_PG  4096ull                /* one 16 MiB run */
#define ROUNDS  8                      /* two transfers each */
#define CONTROL_ROUNDS 16              /* at most; stops at the first lost transfer */
#define FAULT   "DMAR: [DMA"

static uint8_t *ram_hva;
/* The pages of the run a transfer uses: RUN_PG, or one granule where the
 * context's is smaller (so the peel goes on in the mapping of s there too). */
static uint64_t run_pg = RUN_PG;

struct tally {
	struct cvm_dma *d;             /* the policy's context (NULL: the control) */
	unsigned rounds, transfers;
	unsigned lost;                 /* rounds whose B did not get A's pattern */
	unsigned lost_unreported;      /* ... with no disrupted bytes reported during them */
	unsigned long changes;         /* conversions (or naive remaps) during transfers */
	unsigned amid;                 /* transfers done while the peel was still cutting */
	int err;                       /* the first failed call */
	const char *what;              /* which call */
};

static void note(struct tally *t, int err, const char *what)
{
	if (err && !t->err) {
		t->err = err;
		t->what = what;
	}
}

static void fill(uint8_t *p, unsigned round)
{
	for (unsigned i = 0; i < PG; i++)
		p[i] = (uint8_t)(round * 131 + i * 7 + 1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

/*
 * One transfer to or from page s of the run, in flight while the run's
 * other pages go private one by one, from both ends toward s: where the
 * library cuts, each one a cut at the edge of the very mapping that holds
 * s; per page, that page's own unmap; with a granule (the run is one), an
 * unmap of the mapping that holds s and a map of what stays (the
 * disruption the library reports).  The peel is paced to last twice as
 * long as the device's last transfer, so it is still going on when the
 * device reads or writes s, just before it reports done.
 * naive: the control's backend instead (the run mapped whole, unmapped and
 * mapped again at each step).
 */
static void transfer(struct guest_target *tg, struct cvm_region *ram, struct cvm_be *naive,
		     uint64_t s, bool to_ram, struct tally *t)
{
	static uint64_t device_ns = 100000000; /* the last transfer's time */
	const struct timespec nap = { .tv_nsec = 20000 };
	uint64_t lo = 0, hi = run_pg - 1, k = 0, t0, pace, done;
	int err;

	if (!naive)
		note(t, cvm_convert(ram, RAM_GPA, run_pg * PG, CVM_SHARED, 0), "the share");
	err = t->err ?: edu_dma_start(&tg->edu, RAM_GPA + s * PG, to_ram, PG);
	note(t, err, "edu_dma_start");
	if (err)
		return;
	t0 = now_ns();
	pace = run_pg > 1 ? 2 * device_ns / (run_pg - 1) : 0;
	while (edu_dma_busy(&tg->edu) && !t->err) {
		if (now_ns() - t0 > 10000000000ull) {
			note(t, -ETIMEDOUT, "the transfer (the device did not finish in 10 s)");
			break;
		}
		if (naive) {
			note(t, naive->ops->unmap(naive, RAM_GPA, run_pg * PG, &done) ?:
			     naive->ops->map(naive, RAM_GPA, run_pg * PG, ram_hva),
			     "the naive remap");
		} else if (lo < s || hi > s) {
			uint64_t p = (k % 2 && hi > s) || lo == s ? hi-- : lo++;

			while (now_ns() < t0 + k * pace)
				;
			note(t, cvm_convert(ram, RAM_GPA + p * PG, PG, CVM_PRIVATE, 0),
			     "a conversion during a transfer");
			k++;
		} else {
			nanosleep(&nap, NULL);
			continue;
		}
		t->changes++;
	}
	if (!t->err) {
		device_ns = now_ns() - t0;
		t->amid += !naive && k > 0 && (lo < s || hi > s);
	}
	note(t, edu_dma_wait(&tg->edu), "the wait for the device");
	if (!naive)
		note(t, cvm_convert(ram, RAM_GPA, run_pg * PG, CVM_PRIVATE, 0), "the unshare");
	t->transfers++;
}

/* One round: page a's pattern through the device into page b, each
 * transfer with a peel of its own. */
static void round_trip(struct guest_target *tg, struct cvm_region *ram, struct cvm_be *naive,
		       unsigned r, unsigned *seed, struct tally *t)
{
	struct cvm_dma_stats st0 = { .sz = sizeof(st0) }, st1 = { .sz = sizeof(st1) };
	uint64_t a = rand_r(seed) % run_pg, b = rand_r(seed) % run_pg;
	uint8_t want[PG];

	if (t->d)
		cvm_dma_stats(t->d, &st0);
	fill(want, r);
	memcpy(ram_hva + a * PG, want, PG);
	transfer(tg, ram, naive, a, false, t);
	memset(ram_hva + b * PG, 0x5a, PG);
	transfer(tg, ram, naive, b, true, t);
	t->rounds++;
	if (t->d)
		cvm_dma_stats(t->d, &st1);
	if (!t->err && memcmp(ram_hva + b * PG, want, PG)) {
		t->lost++;
		t->lost_unreported += st1.disrupted_bytes == st0.disrupted_bytes;
	}
}

/* The target's auto context could cut (set by its run). */
static bool target_cuts;

static void run_policy(struct guest_target *tg, const char *policy, uint32_t flags,
		       unsigned seed)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_GPA, .length = RUN_PG * PG,
					.hva = ram_hva };
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1, .flags = flags };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_region *ram = NULL;
	struct cvm_dma *d = NULL;
	struct tally t = { 0 };
	int faults0, faults = 0;
	bool hitless;

	if ((flags & CVM_DMA_NO_CUT) && !target_cuts) {
		tap_skip("the backend cannot cut: the same as auto",
			 "%s/%s: a round trip lost only where the library reported disruption "
			 "during it",
			 tg->name, policy);
		return;
	}
	guest_target_config(tg, &c);
	t.err = cvm_region_create(&rc, &ram) ?: cvm_dma_open(&c, &d) ?:
		cvm_dma_add_region(d, ram);
	if (!tap_ok(!t.err, "%s/%s: open (%d)", tg->name, policy, t.err))
		goto out;
	cvm_dma_info(d, &info);
	if (!flags)
		target_cuts = info.can_cut;
	/* Where it can neither cut nor map per page, the library may unmap
	 * pages that stay shared for a moment, and says so. */
	hitless = info.can_cut || (flags & CVM_DMA_PER_PAGE);
	run_pg = info.split_granule && info.split_granule / PG < RUN_PG ?
		 info.split_granule / PG : RUN_PG;
	t.d = d;
	guest_wait_dmar_ratelimit();
	faults0 = guest_dmesg_count(FAULT);
	note(&t, faults0 < 0 ? faults0 : 0, "reading the kernel log");
	for (unsigned r = 0; r < ROUNDS && !t.err; r++)
		round_trip(tg, ram, NULL, r, &seed, &t);
	if (!t.err) {
		faults = guest_dmesg_count(FAULT);
		note(&t, faults < 0 ? faults : 0, "reading the kernel log");
		faults -= faults0;
	}
	cvm_dma_stats(d, &st);
	if (t.err)
		tap_diag("%s/%s: %s failed: %d", tg->name, policy, t.what ? t.what : "setup",
			 t.err);
	tap_diag("%s/%s: %u transfers, %u of them while the peel cut, %lu conversions while "
		 "in flight, %llu cuts, %llu unmaps, %llu bytes disrupted, %u of %u round trips "
		 "lost, %d DMAR faults logged", tg->name, policy, t.transfers, t.amid, t.changes,
		 (unsigned long long)st.cut_calls, (unsigned long long)st.unmap_calls,
		 (unsigned long long)st.disrupted_bytes, t.lost, t.rounds, faults);
	if (hitless)
		tap_ok(!t.err && 2 * t.amid >= t.transfers && !t.lost && !faults &&
		       !st.disrupted_bytes,
		       "%s/%s: every transfer lands while the library unmaps the pages around it: "
		       "%u of %u round trips lost, %d DMAR faults, %llu bytes disrupted (%u of %u "
		       "transfers while the peel cut)", tg->name, policy, t.lost, t.rounds, faults,
		       (unsigned long long)st.disrupted_bytes, t.amid, t.transfers);
	else
		tap_ok(!t.err && 2 * t.amid >= t.transfers && !t.lost_unreported,
		       "%s/%s: a round trip lost only where the library reported disruption "
		       "during it (%u of %u lost, %u of them with nothing reported, %llu bytes "
		       "disrupted in all)", tg->name, policy, t.lost, t.rounds, t.lost_unreported,
		       (unsigned long long)st.disrupted_bytes);
out:
	cvm_dma_close(d);
	cvm_region_destroy(ram);
}

/* The control: a context with no region, its backend driven as a naive VMM. */
static void run_control(struct guest_target *tg, unsigned seed)
{
	struct cvm_dma_config c = { .sz = sizeof(c), .fd = -1 };
	struct cvm_dma *d = NULL;
	struct cvm_be *be;
	struct tally t = { 0 };
	uint64_t done;
	int faults0 = 0, faults = 0;

	guest_target_config(tg, &c);
	t.err = cvm_dma_open(&c, &d);
	if (!tap_ok(!t.err, "%s/naive: open (%d)", tg->name, t.err))
		goto out;
	be = cvm_dma_backend(d);
	run_pg = RUN_PG;
	guest_wait_dmar_ratelimit();
	faults0 = guest_dmesg_count(FAULT);
	t.err = faults0 < 0 ? faults0 : be->ops->map(be, RAM_GPA, RUN_PG * PG, ram_hva);
	for (unsigned r = 0; r < CONTROL_ROUNDS && !t.err && !t.lost; r++)
		round_trip(tg, NULL, be, r, &seed, &t);
	if (!t.err) {
		faults = guest_dmesg_count(FAULT);
		note(&t, faults < 0 ? faults : 0, "reading the kernel log");
		faults -= faults0;
	}
	note(&t, be->ops->unmap(be, RAM_GPA, RUN_PG * PG, &done), "the control's unmap");
	if (t.err)
		tap_diag("%s/naive: %s failed: %d", tg->name, t.what ? t.what : "map", t.err);
	tap_ok(!t.err && t.lost && faults > 0,
	       "%s/naive: the probe sees a brief unmap: a VMM that unmaps and maps the run again "
	       "on each change loses a round trip (%u of %u lost, %d DMAR faults, %lu remaps)",
	       tg->name, t.lost, t.rounds, faults, t.changes);
out:
	cvm_dma_close(d);
}

static void run_target(const char *name)
{
	struct guest_target tg;

	if (!tap_target_open(&tg, name))
		return;
	target_cuts = false;
	run_policy(&tg, "auto", 0, 11);
	run_policy(&tg, "per-page", CVM_DMA_PER_PAGE, 12);
	run_policy(&tg, "no-cut", CVM_DMA_NO_CUT, 13);
	run_control(&tg, 14);
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
	if (ram_hva == MAP_FAILED) {
		printf("Bail out! mmap of %llu bytes: %s\n", RUN_PG * PG, strerror(errno));
		return 1;
	}
	memset(ram_hva, 0, RUN_PG * PG);
	guest_each_target(argc, argv, run_target);
	printf("1..%d\n", tap_count);
	return tap_failed;
}
