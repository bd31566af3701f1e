// SPDX-License-Identifier: MIT
/*
 * bench-guest: the mapping policies on the real kernel, inside the vIOMMU
 * test guest (run through tests/vm/run-in-guest; edu is bound to vfio-pci).
 * For each backend (a VFIO type1 container, an iommufd IOAS with the edu
 * device attached, and on kernel B iommufd's compat container with type1 v1
 * semantics, whose unmap cuts), each workload and each policy, a fresh 512 MiB region
 * and a fresh container/IOAS; per phase, the ioctls the library issued
 * (counted at the ioctl boundary), its map, unmap and cut calls (from
 * cvm_dma_stats) and the wall time.
 *
 * Under TCG every absolute time is an emulation cost: only ratios measured
 * in the same run mean anything, and bench-report shows them that way.
 *
 * Workloads (seeded, identical for every policy):
 *   swiotlb-256M  one 256 MiB request made shared, then private again;
 *   swiotlb-256M-cold  the same onto memory never touched, in 4 KiB pages
 *                 (a fresh mapping before every run, transparent huge
 *                 pages off): the kernel faults in each page it pins, as
 *                 it does after QEMU discards a range that went private;
 *   tdx-boot      a small TD's boot: RAM declared private in 2 MiB exits
 *                 (no-ops), a 64 MiB swiotlb shared in 2 MiB exits at an
 *                 unaligned place, 300 coherent allocations of 4-64 KiB;
 *   churn         the swiotlb, then 2,000 coherent allocations and frees
 *                 of 4-64 KiB, at most 128 live;
 *   holes         the swiotlb shared in one request, then 256 random 4 KiB
 *                 pages of it private: cut, or unmap and remap the rest.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include <cvmdma.h>

#include "bench-util.h"
#include "guest.h"

#define RAM		(512 * MiB)
#define EXIT_MAX	(2 * MiB)       /* KVM hands TDX MapGPA over in <= 2 MiB exits */
#define BLOCK		(64 * KiB)      /* the largest coherent allocation */
#define SWIOTLB_A	(256 * MiB)
#define SWIOTLB_A_AT	(128 * MiB + 12 * KiB)
#define SWIOTLB_B	(64 * MiB)
#define SWIOTLB_B_AT	(RAM - SWIOTLB_B - 3 * MiB - 12 * KiB)
#define ENTRY_LIMIT	131072          /* per-page needs 65,536 for 256 MiB */
#define MAX_REPS	9
#define MAX_PHASES	4

/*
 * Every ioctl of this program, the library's included, counted where it
 * leaves for the kernel: the library is linked in statically, so this is
 * the ioctl() it calls.  A backend call may be more than one ioctl (an
 * iommufd cut checks the fd's compat IOAS, then unmaps).
 */
static uint64_t nioctl;

int ioctl(int fd, unsigned long req, ...);
int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	nioctl++;
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

/* ---- workloads: a list of conversions, split in phases ---- */

struct op {
	uint64_t gpa, len;
	enum cvm_state to;
};

struct phase {
	const char *name;
	struct op *ops;
	size_t n, cap;
};

struct workload {
	const char *name;
	struct phase ph[4];
	size_t nph;
	bool cold;                      /* fresh 4 KiB pages for every run */
};

static void push(struct phase *p, uint64_t gpa, uint64_t len, enum cvm_state to)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 64;
		p->ops = realloc(p->ops, p->cap * sizeof(*p->ops));
		if (!p->ops)
			die("bench-guest: out of memory");
	}
	p->ops[p->n++] = (struct op){ gpa, len, to };
}

static struct phase *phase(struct workload *w, const char *name)
{
	struct phase *p = &w->ph[w->nph++];

	p->name = name;
	return p;
}

/* A request of len bytes reaching the VMM as <= 2 MiB exits from its start. */
static void push_exits(struct phase *p, uint64_t gpa, uint64_t len, enum cvm_state to)
{
	for (uint64_t off = 0; off < len; off += EXIT_MAX)
		push(p, gpa + off, len - off < EXIT_MAX ? len - off : EXIT_MAX, to);
}

/* Coherent allocations: 4 KiB half the time, else 8-64 KiB, naturally
 * aligned, each in its own free 64 KiB block outside the swiotlb. */
struct blocks {
	uint8_t used[RAM / BLOCK];
	struct bench_rng rng;
};

static uint64_t alloc_size(struct bench_rng *rng)
{
	uint64_t k = rng_below(rng, 8);

	return k < 4 ? 4 * KiB : (8 * KiB) << (k - 4);
}

static uint64_t alloc_at(struct blocks *b, uint64_t size)
{
	for (;;) {
		uint64_t blk = rng_below(&b->rng, RAM / BLOCK);
		uint64_t off = rng_below(&b->rng, BLOCK / size) * size;

		if (b->used[blk])
			continue;
		b->used[blk] = 1;
		return blk * BLOCK + off;
	}
}

static void reserve_swiotlb(struct blocks *b)
{
	for (uint64_t a = SWIOTLB_B_AT / BLOCK; a <= (SWIOTLB_B_AT + SWIOTLB_B - 1) / BLOCK; a++)
		b->used[a] = 1;
}

static void make_swiotlb(struct workload *w)
{
	w->name = "swiotlb-256M";
	push(phase(w, "share"), SWIOTLB_A_AT, SWIOTLB_A, CVM_SHARED);
	push(phase(w, "unshare"), SWIOTLB_A_AT, SWIOTLB_A, CVM_PRIVATE);
}

static void make_swiotlb_cold(struct workload *w)
{
	make_swiotlb(w);
	w->name = "swiotlb-256M-cold";
	w->cold = true;
}

static void make_tdx_boot(struct workload *w, struct blocks *b)
{
	struct phase *p;

	w->name = "tdx-boot";
	push_exits(phase(w, "accept (no-ops)"), 0, RAM, CVM_PRIVATE);
	push_exits(phase(w, "swiotlb"), SWIOTLB_B_AT, SWIOTLB_B, CVM_SHARED);
	p = phase(w, "coherent");
	for (int i = 0; i < 300; i++) {
		uint64_t sz = alloc_size(&b->rng);

		push(p, alloc_at(b, sz), sz, CVM_SHARED);
	}
}

#define CHURN_OPS 2000
#define CHURN_LIVE 128

static void make_churn(struct workload *w, struct blocks *b)
{
	struct op live[CHURN_LIVE];
	struct phase *p;
	size_t nlive = 0;

	w->name = "churn";
	push_exits(phase(w, "swiotlb"), SWIOTLB_B_AT, SWIOTLB_B, CVM_SHARED);
	p = phase(w, "alloc/free");
	for (int i = 0; i < CHURN_OPS; i++) {
		bool do_free = nlive == CHURN_LIVE || (nlive && rng_below(&b->rng, 2));

		if (do_free) {
			size_t k = rng_below(&b->rng, nlive);

			push(p, live[k].gpa, live[k].len, CVM_PRIVATE);
			b->used[live[k].gpa / BLOCK] = 0;
			live[k] = live[--nlive];
		} else {
			uint64_t sz = alloc_size(&b->rng);

			live[nlive] = (struct op){ alloc_at(b, sz), sz, CVM_SHARED };
			push(p, live[nlive].gpa, sz, CVM_SHARED);
			nlive++;
		}
	}
}

#define HOLES 256

/* Private 4 KiB holes punched into a shared run: where a backend that cuts
 * differs from one that must unmap and remap the rest of a mapping. */
static void make_holes(struct workload *w, struct blocks *b)
{
	struct phase *p;
	uint8_t hole[SWIOTLB_B / PAGE] = { 0 };

	w->name = "holes";
	push(phase(w, "share"), SWIOTLB_B_AT, SWIOTLB_B, CVM_SHARED);
	p = phase(w, "punch");
	for (int i = 0; i < HOLES; i++) {
		uint64_t k = rng_below(&b->rng, SWIOTLB_B / PAGE);

		if (hole[k]++) {
			i--;
			continue;
		}
		push(p, SWIOTLB_B_AT + k * PAGE, PAGE, CVM_PRIVATE);
	}
}

static struct workload *make_workloads(size_t *n)
{
	static struct workload w[5];
	static struct blocks b;

	memset(&b, 0, sizeof(b));
	b.rng.s = 1;
	reserve_swiotlb(&b);
	make_swiotlb(&w[0]);
	make_tdx_boot(&w[1], &b);
	memset(b.used, 0, sizeof(b.used));
	reserve_swiotlb(&b);
	make_churn(&w[2], &b);
	make_holes(&w[3], &b);
	make_swiotlb_cold(&w[4]);
	*n = 5;
	return w;
}

/* ---- backends: a fresh IOMMU address space with the edu device in it ---- */

struct space {
	const char *name;
	int fd, device;
	uint32_t ioas;
	struct cvm_dma *dma;
};

static int open_type1_as(struct space *s, const struct cvm_dma_config *base,
			 unsigned long iommu_type)
{
	struct cvm_dma_config dc = *base;
	int err = guest_open_type1(iommu_type, &s->fd, &s->device);

	if (err)
		return err;
	dc.backend = CVM_BACKEND_TYPE1;
	dc.fd = s->fd;
	return cvm_dma_open(&dc, &s->dma);
}

static int open_type1(struct space *s, const struct cvm_dma_config *base)
{
	return open_type1_as(s, base, VFIO_TYPE1v2_IOMMU);
}

/* Type1 v1 semantics: on iommufd's compat container (kernel B) the one
 * container whose unmap cuts hitlessly; the library probes that itself. */
static int open_type1_v1(struct space *s, const struct cvm_dma_config *base)
{
	return open_type1_as(s, base, VFIO_TYPE1_IOMMU);
}

static int open_iommufd(struct space *s, const struct cvm_dma_config *base)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	struct cvm_dma_config dc = *base;
	int err;

	s->fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return -errno;
	if (ioctl(s->fd, IOMMU_IOAS_ALLOC, &a))
		return -errno;
	s->ioas = a.out_ioas_id;
	err = guest_iommufd_bind(s->fd, &s->device);
	if (!err)
		err = guest_iommufd_attach(s->device, s->ioas);
	if (err)
		return err;
	dc.backend = CVM_BACKEND_IOMMUFD;
	dc.fd = s->fd;
	dc.ioas_id = s->ioas;
	return cvm_dma_open(&dc, &s->dma);
}

typedef int (*open_fn)(struct space *s, const struct cvm_dma_config *base);

static void space_close(struct space *s)
{
	cvm_dma_close(s->dma);
	if (s->device >= 0)
		close(s->device);
	if (s->fd >= 0)
		close(s->fd);
	s->dma = NULL;
	s->fd = s->device = -1;
}

struct policy {
	const char *name;
	uint32_t flags;
	uint64_t granule;
};

static const struct policy policies[] = {
	{ "per-page", CVM_DMA_PER_PAGE, 0 },
	{ "auto", 0, 0 },
	{ "unbounded", 0, UINT64_MAX },
	/* Only where the backend cuts: what the cut costs (4 KiB IOPTEs) */
	{ "auto, no cut", CVM_DMA_NO_CUT, 0 },
};
#define NO_CUT_POLICY 3

/* ---- one run ---- */

static uint64_t calls(const struct cvm_dma_stats *st)
{
	return st->map_calls + st->unmap_calls + st->cut_calls;
}

static int run_phase(struct cvm_region *r, const struct phase *p)
{
	for (size_t i = 0; i < p->n; i++) {
		int err = cvm_convert(r, p->ops[i].gpa, p->ops[i].len, p->ops[i].to, 0);

		if (err)
			return err;
	}
	return 0;
}

/* One phase of one policy: the counts of the last repetition (all equal:
 * the workload is deterministic) and the wall and CPU time of each. */
struct phase_res {
	struct cvm_dma_stats a, b;
	uint64_t ioctls;                /* of the last repetition */
	uint64_t wall[MAX_REPS], cpu[MAX_REPS];
	int err;
};

struct run_ctx {
	const char *kernel;
	struct space *s;
	open_fn open_space;
	const struct workload *w;
	const struct policy *pol;
	char *ram;
	int reps;
};

static void print_phase(const struct run_ctx *c, const struct phase *p,
			const struct phase_res *r, int reps)
{
	const struct cvm_dma_stats *a = &r->a, *b = &r->b;
	uint64_t wall[MAX_REPS], cpu[MAX_REPS], wmed, cmed;

	memcpy(wall, r->wall, sizeof(wall));
	memcpy(cpu, r->cpu, sizeof(cpu));
	/* Sorted here, before the min and max are read. */
	wmed = quantile(wall, reps, 0.5);
	cmed = quantile(cpu, reps, 0.5);
	printf("guest\t%s\t%s\t%s\t%s\t%s\t%zu\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
	       "\t%" PRIu64 "\t%" PRIu64 "\t%.2f\t%.2f\t%s\t%" PRIu64 "\t%" PRIu64
	       "\t%.2f\t%.2f\t%d\t", c->kernel, c->s->name, c->w->name, p->name, c->pol->name,
	       p->n, r->ioctls, b->map_calls - a->map_calls,
	       b->unmap_calls - a->unmap_calls, b->cut_calls - a->cut_calls, b->mappings,
	       b->mappings_peak, wmed / 1e6, cmed / 1e6,
	       err_name(r->err), b->disruptive_splits - a->disruptive_splits,
	       b->disrupted_bytes - a->disrupted_bytes, wall[0] / 1e6, wall[reps - 1] / 1e6, reps);
	/* Each run's wall time, in run order: run i of every policy of a
	 * workload ran back to back, so their ratios are free of the drift. */
	for (int i = 0; i < reps; i++)
		printf("%s%.3f", i ? "," : "", r->wall[i] / 1e6);
	printf("\n");
	fflush(stdout);
}

/*
 * A new mapping for the guest RAM.  Cold: in 4 KiB pages, never touched, so
 * that the next pins fault them in page by page.  Else with transparent huge
 * pages allowed again, and every page written now, so that the first run
 * of a workload pins memory as faulted in as the runs after it.  (The test
 * kernel has no madvise(2): CONFIG_ADVISE_SYSCALLS=n.)
 */
static char *map_ram(bool cold)
{
	char *ram;

	/* EINVAL: a kernel without transparent huge pages, 4 KiB either way. */
	if (prctl(PR_SET_THP_DISABLE, cold ? 1 : 0, 0, 0, 0) && errno != EINVAL)
		die("bench-guest: PR_SET_THP_DISABLE failed: %s", strerror(errno));
	ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		die("bench-guest: mmap of the guest RAM failed");
	if (!cold)
		memset(ram, 0, RAM);
	return ram;
}

static void fresh_ram(struct run_ctx *c, bool cold)
{
	if (munmap(c->ram, RAM))
		die("bench-guest: munmap of the guest RAM failed: %s", strerror(errno));
	c->ram = map_ram(cold);
}

/* A fresh region and container, the whole workload; res[i] for phase i. */
static int run_once(const struct run_ctx *c, int rep, struct phase_res *res)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .length = RAM, .hva = c->ram };
	struct cvm_dma_config dc = { .sz = sizeof(dc), .fd = -1, .flags = c->pol->flags,
				     .split_granule = c->pol->granule };
	struct cvm_region *r;
	int err;

	c->s->fd = c->s->device = -1;
	err = cvm_region_create(&rc, &r);
	if (err)
		return err;
	err = c->open_space(c->s, &dc);
	if (!err)
		err = cvm_dma_add_region(c->s->dma, r);
	for (size_t i = 0; i < c->w->nph && !err; i++) {
		struct phase_res *pr = &res[i];
		uint64_t w0, c0, i0;

		pr->a.sz = pr->b.sz = sizeof(pr->a);
		cvm_dma_stats(c->s->dma, &pr->a);
		i0 = nioctl;
		w0 = wall_ns();
		c0 = cpu_ns();
		err = pr->err = run_phase(r, &c->w->ph[i]);
		pr->cpu[rep] = cpu_ns() - c0;
		pr->wall[rep] = wall_ns() - w0;
		pr->ioctls = nioctl - i0;
		cvm_dma_stats(c->s->dma, &pr->b);
		/* Each backend call is one ioctl at least: fewer means the
		 * counter does not see the library's. */
		if (pr->ioctls < calls(&pr->b) - calls(&pr->a))
			die("bench-guest: %" PRIu64 " ioctls counted for %" PRIu64
			    " backend calls: the library's ioctls are not counted",
			    pr->ioctls, calls(&pr->b) - calls(&pr->a));
	}
	space_close(c->s);
	cvm_region_destroy(r);
	return err;
}

#define NPOLICIES (sizeof(policies) / sizeof(policies[0]))

/* One policy's repetitions so far: a failed one ends them. */
struct pol_runs {
	struct phase_res res[MAX_PHASES];
	int err, done;
	bool skip;
};

/* One row per phase with the median times (or the setup that failed). */
static int print_policy(const struct run_ctx *c, const struct pol_runs *pr)
{
	if (pr->err && pr->done == 1 && !pr->res[0].a.sz) {
		static const struct phase setup = { .name = "setup" };
		struct phase_res r = { .err = pr->err };

		print_phase(c, &setup, &r, 1);
		return pr->err;
	}
	for (size_t i = 0; i < c->w->nph && pr->res[i].a.sz; i++)
		print_phase(c, &c->w->ph[i], &pr->res[i], pr->done);
	return pr->err;
}

/*
 * reps repetitions of the workload under every policy, interleaved (run 1
 * of each policy, then run 2, ...), so that a guest that slows down or
 * speeds up meanwhile moves every policy's times alike.
 */
static int run_workload(struct run_ctx *c, bool can_cut)
{
	static struct pol_runs runs[NPOLICIES];
	int failed = 0;

	memset(runs, 0, sizeof(runs));
	for (size_t p = 0; p < NPOLICIES; p++)
		runs[p].skip = p == NO_CUT_POLICY && !can_cut;
	for (int rep = 0; rep < c->reps; rep++)
		for (size_t p = 0; p < NPOLICIES; p++) {
			if (runs[p].skip || runs[p].err)
				continue;
			c->pol = &policies[p];
			if (c->w->cold)
				fresh_ram(c, true);
			progress("bench-guest: %s, %s, %s, run %d of %d ...", c->s->name,
				 c->w->name, policies[p].name, rep + 1, c->reps);
			runs[p].err = run_once(c, rep, runs[p].res);
			runs[p].done++;
		}
	for (size_t p = 0; p < NPOLICIES; p++) {
		if (runs[p].skip)
			continue;
		c->pol = &policies[p];
		if (print_policy(c, &runs[p]))
			failed = 1;
	}
	return failed;
}

static bool info_line(const char *kernel, struct space *s, open_fn open_space)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .fd = -1 };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	int err;

	s->fd = s->device = -1;
	err = open_space(s, &dc);
	if (!err)
		err = cvm_dma_info(s->dma, &info);
	printf("backend\t%s\t%s\t%s\t%u\t%s\t0x%" PRIx64 "\n", kernel, s->name, err_name(err),
	       info.can_cut, info.split_granule == UINT64_MAX ? "unlimited" :
	       info.split_granule == 2 * MiB ? "2 MiB" : "other", info.iova_pgsizes);
	space_close(s);
	return !err && info.can_cut;
}

static int run_space(struct run_ctx *c, const struct workload *w, size_t nw, bool can_cut)
{
	int failed = 0;

	for (size_t i = 0; i < nw; i++) {
		c->w = &w[i];
		if (run_workload(c, can_cut))
			failed = 1;
		if (w[i].cold)
			fresh_ram(c, false);
	}
	return failed;
}

/* bench-guest KERNEL [REPS]: KERNEL names the guest kernel (A or B). */
int main(int argc, char **argv)
{
	const char *kernel = argc > 1 ? argv[1] : "?";
	struct space spaces[] = { { .name = "type1" }, { .name = "iommufd" },
				  { .name = "type1 v1" } };
	open_fn opens[] = { open_type1, open_iommufd, open_type1_v1 };
	/* v1 only where it is iommufd's compat container: never rely on v1 on
	 * the real type1 driver (doc/kernel-facts.md §1). */
	size_t nspaces = !strcmp(kernel, "B") ? 3 : 2, nw;
	struct run_ctx c = { .kernel = kernel, .reps = argc > 2 ? atoi(argv[2]) : 3 };
	struct workload *w = make_workloads(&nw);
	bool can_cut[3];
	unsigned old = 0;
	int failed = 0, lim;

	if (c.reps < 1 || c.reps > MAX_REPS)
		die("bench-guest: REPS must be 1..%d", MAX_REPS);
	c.ram = map_ram(false);
	lim = guest_set_dma_entry_limit(ENTRY_LIMIT, &old);
	printf("# bench-guest %s, libcvmdma %s, kernel %s, median of %d runs\n", PACKAGE_VERSION,
	       cvm_version(), kernel, c.reps);
	printf("limit\t%s\t%u\t%u\t%s\n", kernel, old, lim ? old : ENTRY_LIMIT, err_name(lim));
	printf("#cols backend kernel backend open can_cut auto_granule iova_pgsizes\n");
	for (size_t b = 0; b < nspaces; b++)
		can_cut[b] = info_line(kernel, &spaces[b], opens[b]);
	printf("#cols guest kernel backend workload phase policy conversions ioctls map_calls "
	       "unmap_calls cut_calls live peak wall_ms cpu_ms result disruptive_splits "
	       "disrupted_bytes wall_min_ms wall_max_ms runs wall_ms_of_each_run\n");
	for (size_t b = 0; b < nspaces; b++) {
		c.s = &spaces[b];
		c.open_space = opens[b];
		failed |= run_space(&c, w, nw, can_cut[b]);
	}
	if (!lim)
		guest_set_dma_entry_limit(old, NULL);
	return failed;
}
