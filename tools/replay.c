// SPDX-License-Identifier: MIT
/*
 * One policy, one fresh world: host memory, regions, a DMA context (and on
 * real backends the device attached to it), the whole trace, the stats, a
 * check that what ended up mapped is exactly what is shared, and teardown.
 * Only the public API is used: this is what a VMM would write.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "replay.h"
#include "tool-util.h"
#include "vfio-setup.h"

#include <linux/iommufd.h>
#include <linux/vfio.h>

struct world {
	const struct trace *t;
	const struct replay_cfg *cfg;
	struct result *res;
	void **hva;
	struct cvm_region **regions;
	struct cvm_dma *dma;
	struct vfio_dev dev;
};

int policy_parse(const char *s, struct policy *p)
{
	uint64_t g;

	memset(p, 0, sizeof(*p));
	if (strlen(s) >= sizeof(p->name))
		return -ENAMETOOLONG;
	strcpy(p->name, s);
	if (!strcmp(s, "per-page"))
		p->flags = CVM_DMA_PER_PAGE;
	else if (!strcmp(s, "auto"))
		p->granule = 0;
	else if (!strcmp(s, "unbounded"))
		p->granule = UINT64_MAX;
	else if (!strcmp(s, "compact"))
		p->flags = CVM_DMA_COMPACT;
	else if (!strncmp(s, "granule=", 8) && !tool_parse_size(s + 8, NULL, &g) &&
		 g >= 4096 && !(g & (g - 1)))
		p->granule = g;
	else
		return -EINVAL;
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void __attribute__((format(printf, 4, 5)))
fail(struct world *w, enum fail_stage stage, int err, const char *fmt, ...)
{
	struct result *res = w->res;
	size_t n = 0;
	va_list ap;

	/* The first failure is the story; a later one (mapped != shared after a
	 * refused conversion: atomicity broken) is appended, never lost. */
	if (res->stage != FAIL_NONE) {
		n = strlen(res->msg);
		n += (size_t)snprintf(res->msg + n, sizeof(res->msg) - n, "; then ");
		if (n >= sizeof(res->msg))
			return;
	} else {
		res->stage = stage;
		res->err = err;
	}
	va_start(ap, fmt);
	vsnprintf(res->msg + n, sizeof(res->msg) - n, fmt, ap);
	va_end(ap);
}

/* MemAvailable from /proc/meminfo in bytes, or UINT64_MAX if unknown. */
static uint64_t mem_available(void)
{
	unsigned long long kb;
	char line[128];
	uint64_t v = UINT64_MAX;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return v;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			v = (uint64_t)kb << 10;
			break;
		}
	fclose(f);
	return v;
}

/* A real IOMMU pins every shared page: at most what starts shared plus all
 * that is ever converted to shared, and never more than the regions.  More
 * than the system has would end in the OOM killer, not in an error. */
static int check_pinnable(struct world *w)
{
	uint64_t total = 0, bound = w->t->bytes_to_shared, avail;
	char a[32], b[32];
	unsigned int i;

	/* Saturating: the trace's total saturates at UINT64_MAX already. */
	for (i = 0; i < w->t->nregions; i++) {
		if (__builtin_add_overflow(total, w->t->regions[i].size, &total))
			total = UINT64_MAX;
		if (w->t->regions[i].init == CVM_SHARED &&
		    __builtin_add_overflow(bound, w->t->regions[i].size, &bound))
			bound = UINT64_MAX;
	}
	if (bound > total)
		bound = total;
	avail = mem_available();
	if (avail == UINT64_MAX || bound <= avail)
		return 0;
	fail(w, FAIL_SETUP, -ENOMEM, "the trace may pin up to %s of memory and only %s is "
	     "available: the kernel would kill the replay; use a smaller guest",
	     tool_fmt_bytes(bound, a, sizeof(a)), tool_fmt_bytes(avail, b, sizeof(b)));
	return -ENOMEM;
}

static int map_memory(struct world *w)
{
	/* The model never touches guest memory: an inaccessible, unreserved
	 * mapping costs nothing even for 1 TiB.  A real IOMMU pins it. */
	int prot = w->cfg->backend == CVM_BACKEND_MODEL ? PROT_NONE : PROT_READ | PROT_WRITE;
	unsigned int i;

	if (w->cfg->backend != CVM_BACKEND_MODEL && check_pinnable(w))
		return -1;
	for (i = 0; i < w->t->nregions; i++) {
		void *p = mmap(NULL, w->t->regions[i].size, prot,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (p == MAP_FAILED) {
			fail(w, FAIL_SETUP, -errno, "mmap of %" PRIu64 " bytes for the region of "
			     "line %u: %s", w->t->regions[i].size, w->t->regions[i].line,
			     strerror(errno));
			return -1;
		}
		w->hva[i] = p;
	}
	return 0;
}

static int create_regions(struct world *w)
{
	unsigned int i;
	int r;

	for (i = 0; i < w->t->nregions; i++) {
		const struct trace_region *tr = &w->t->regions[i];
		struct cvm_region_config rc = {
			.sz = sizeof(rc),
			.gpa = tr->gpa,
			.length = tr->size,
			.hva = w->hva[i],
			.page_size = tr->page_size,
			.flags = tr->init == CVM_SHARED ? CVM_REGION_INIT_SHARED : 0,
		};

		r = cvm_region_create(&rc, &w->regions[i]);
		if (r) {
			fail(w, FAIL_REGION, r, "%s:%u: cvm_region_create: %s (%s)", w->t->name,
			     tr->line, tool_errno_name(-r), strerror(-r));
			w->res->line = tr->line;
			return r;
		}
	}
	return 0;
}

static int open_dma(struct world *w)
{
	const struct replay_cfg *cfg = w->cfg;
	struct cvm_dma_config dc = {
		.sz = sizeof(dc),
		.backend = cfg->backend,
		.fd = -1,
		.flags = w->res->pol.flags | cfg->flags,
		.split_granule = w->res->pol.granule,
	};
	struct cvm_dma_info info = { .sz = sizeof(info) };
	char err[400];
	int r;

	if (cfg->backend == CVM_BACKEND_MODEL) {
		dc.model_rules = cfg->rules;
		dc.model_entry_limit = cfg->entry_limit;
	} else if (cfg->backend == CVM_BACKEND_TYPE1) {
		r = vfio_type1_setup(cfg->device, &w->dev, err, sizeof(err));
		if (r) {
			fail(w, FAIL_SETUP, r, "%s", err);
			return r;
		}
		dc.fd = w->dev.container;
	}
	r = cvm_dma_open(&dc, &w->dma);
	if (r) {
		fail(w, FAIL_SETUP, r, "cvm_dma_open: %s (%s)", tool_errno_name(-r), strerror(-r));
		return r;
	}
	if (cfg->backend != CVM_BACKEND_IOMMUFD)
		return 0;
	/* The library allocated the IOAS; the VMM attaches its device to it
	 * before any region is added, because the IOAS only reports the
	 * device's real IOVA ranges once a device is attached. */
	r = cvm_dma_info(w->dma, &info);
	if (!r)
		r = vfio_iommufd_attach(cfg->device, info.fd, info.ioas_id, &w->dev, err,
					sizeof(err));
	if (r)
		fail(w, FAIL_SETUP, r, "%s", err);
	return r;
}

static void progress(struct world *w, size_t done, uint64_t *next)
{
	char a[32], b[32];
	uint64_t t;

	if (!w->cfg->progress || (done & 1023))
		return;
	t = now_ns();
	if (t < *next)
		return;
	*next = t + 100000000u;
	fprintf(stderr, "\r%-12s %s/%s lines", w->res->pol.name,
		tool_fmt_count(done, a, sizeof(a)), tool_fmt_count(w->t->nops, b, sizeof(b)));
}

static void report_refusal(struct world *w, const struct trace_op *op, int r)
{
	const struct cvm_range *rg = &w->t->ranges[op->first];
	char len[32], batch[64] = "";

	if (op->nranges > 1)
		snprintf(batch, sizeof(batch), " (batch of %u ranges)", op->nranges);
	/* The library's line names the model's limit by its API field. */
	fail(w, FAIL_LINE, r, "%s:%u: %s 0x%" PRIx64 "+%s%s refused: %s (%s)%s", w->t->name,
	     op->line, op->to == CVM_SHARED ? "shared" : "private", rg->gpa,
	     tool_fmt_len(rg->length, len, sizeof(len)), batch, tool_errno_name(-r),
	     strerror(-r), r == -ENOSPC && w->cfg->backend == CVM_BACKEND_MODEL ?
	     "; --entry-limit sets the model's limit" : "");
	w->res->line = op->line;
}

static void run_trace(struct world *w)
{
	const struct trace *t = w->t;
	uint64_t t0 = now_ns(), next = 0;
	unsigned int i;
	size_t k;
	int r;

	for (i = 0; i < t->nregions; i++) {
		r = cvm_dma_add_region(w->dma, w->regions[i]);
		if (r) {
			fail(w, FAIL_REGION, r, "%s:%u: cvm_dma_add_region refused: %s (%s)",
			     t->name, t->regions[i].line, tool_errno_name(-r), strerror(-r));
			w->res->line = t->regions[i].line;
			goto out;
		}
	}
	for (k = 0; k < t->nops; k++) {
		const struct trace_op *op = &t->ops[k];
		struct cvm_region *reg = w->regions[op->region];

		if (op->nranges == 1)
			r = cvm_convert(reg, t->ranges[op->first].gpa, t->ranges[op->first].length,
					op->to, 0);
		else
			r = cvm_convert_batch(reg, &t->ranges[op->first], op->nranges, op->to, 0);
		if (r) {
			report_refusal(w, op, r);
			break;
		}
		w->res->lines_applied++;
		progress(w, k + 1, &next);
	}
out:
	w->res->wall_ns = now_ns() - t0;
	if (w->cfg->progress)
		fputs("\r\033[K", stderr);
}

/* ---- mapped == shared ---- */

struct runs {
	struct cvm_range *v;
	size_t n, cap;
};

/* Appends [gpa, gpa+len), merging with the previous run when they touch, so
 * that mappings and shared runs are compared as sets, not as pieces. */
static int runs_add(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *rs = opaque;
	struct cvm_range *nv;

	if (rs->n && rs->v[rs->n - 1].gpa + rs->v[rs->n - 1].length == gpa) {
		rs->v[rs->n - 1].length += len;
		return 0;
	}
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 1024;
		nv = realloc(rs->v, rs->cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		rs->v = nv;
	}
	rs->v[rs->n++] = (struct cvm_range){ gpa, len };
	return 0;
}

static int cmp_region(const void *a, const void *b, void *arg)
{
	const struct trace *t = arg;
	uint64_t x = t->regions[*(const unsigned int *)a].gpa;
	uint64_t y = t->regions[*(const unsigned int *)b].gpa;

	return x < y ? -1 : x > y;
}

/* Unmap [iova, iova + len) behind the library's back: the bytes the kernel
 * still mapped there, or -errno. */
static int64_t kernel_unmap(struct world *w, uint64_t iova, uint64_t len)
{
	if (w->cfg->backend == CVM_BACKEND_TYPE1) {
		struct vfio_iommu_type1_dma_unmap u = {
			.argsz = sizeof(u), .iova = iova, .size = len,
		};

		if (ioctl(w->dev.container, VFIO_IOMMU_UNMAP_DMA, &u))
			return -errno;
		return (int64_t)u.size;
	} else {
		struct iommu_ioas_unmap u = {
			.size = sizeof(u), .ioas_id = w->res->info.ioas_id, .iova = iova,
			.length = len,
		};

		if (ioctl(w->res->info.fd, IOMMU_IOAS_UNMAP, &u))
			return -errno;
		return (int64_t)u.length;
	}
}

/* Is the page at iova (region ri) mapped?  A fixed-IOVA map of it fails
 * with EEXIST if so; otherwise the probe is undone.  1, 0 or -errno. */
static int kernel_page_mapped(struct world *w, unsigned int ri, uint64_t iova)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t va = (uint64_t)(uintptr_t)w->hva[ri] + (iova - w->t->regions[ri].gpa);
	int r;

	if (w->cfg->backend == CVM_BACKEND_TYPE1) {
		struct vfio_iommu_type1_dma_map m = {
			.argsz = sizeof(m), .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
			.vaddr = va, .iova = iova, .size = pg,
		};

		r = ioctl(w->dev.container, VFIO_IOMMU_MAP_DMA, &m);
	} else {
		struct iommu_ioas_map m = {
			.size = sizeof(m), .flags = IOMMU_IOAS_MAP_FIXED_IOVA |
			IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
			.ioas_id = w->res->info.ioas_id, .user_va = va, .length = pg, .iova = iova,
		};

		r = ioctl(w->res->info.fd, IOMMU_IOAS_MAP, &m);
	}
	if (r)
		return errno == EEXIST ? 1 : -errno;
	r = (int)kernel_unmap(w, iova, pg);
	return r < 0 ? r : 0;
}

/* verify() compares the library's table with the shared pages; the kernel
 * must agree with the table.  Every gap between shared runs is private: an
 * unmap there must find nothing (type1 refuses one that would bisect a
 * mapping: that too is a mapping the table does not know).  shared: the
 * merged shared runs, sorted. */
static void verify_kernel(struct world *w, const struct runs *shared)
{
	unsigned int i;
	size_t k = 0;

	for (i = 0; i < w->t->nregions; i++) {
		const struct trace_region *tr = &w->t->regions[i];
		uint64_t pos = tr->gpa, end = tr->gpa + tr->size;

		k = 0;
		while (pos < end) {
			uint64_t gap_end = end, next = end;
			char len[32];
			int64_t n;

			while (k < shared->n && shared->v[k].gpa + shared->v[k].length <= pos)
				k++;
			if (k < shared->n && shared->v[k].gpa <= pos) {
				pos = shared->v[k].gpa + shared->v[k].length;   /* inside a run */
				continue;
			}
			if (k < shared->n && shared->v[k].gpa < end)
				gap_end = next = shared->v[k].gpa;
			n = kernel_unmap(w, pos, gap_end - pos);
			/* -ENOENT (iommufd, and its type1 compat container): nothing
			 * there, or an area sticking out of the gap, which covers its
			 * first or its last page. */
			if (n == -ENOENT) {
				int a = kernel_page_mapped(w, i, pos), b = 0;

				if (a == 0)
					b = kernel_page_mapped(w, i, gap_end - (uint64_t)sysconf(_SC_PAGESIZE));
				n = a > 0 || b > 0 ? -EINVAL : a < 0 ? a : b;
			}
			if (n > 0 || n == -EINVAL) {
				fail(w, FAIL_VERIFY, -EPROTO, "the kernel maps %s of private memory in "
				     "[0x%" PRIx64 ", 0x%" PRIx64 ") that the library's table does not "
				     "have", n > 0 ? tool_fmt_bytes((uint64_t)n, len, sizeof(len)) :
				     "part", pos, gap_end);
				return;
			}
			if (n < 0) {
				fail(w, FAIL_VERIFY, (int)n, "cannot check the kernel's mappings in "
				     "[0x%" PRIx64 ", 0x%" PRIx64 "): %s", pos, gap_end,
				     strerror((int)-n));
				return;
			}
			pos = next;
		}
	}
}

static void verify(struct world *w)
{
	struct runs shared = { 0 }, mapped = { 0 };
	unsigned int order[64], i;
	size_t k;
	int r = 0;

	for (i = 0; i < w->t->nregions; i++)
		order[i] = i;
	qsort_r(order, w->t->nregions, sizeof(order[0]), cmp_region, (void *)w->t);
	for (i = 0; i < w->t->nregions && !r; i++) {
		const struct trace_region *tr = &w->t->regions[order[i]];

		r = cvm_region_for_each_run(w->regions[order[i]], tr->gpa, tr->size, CVM_SHARED,
					    runs_add, &shared);
	}
	if (!r)
		r = cvm_dma_for_each_mapping(w->dma, runs_add, &mapped);
	if (r) {
		fail(w, FAIL_VERIFY, r, "cannot walk runs or mappings: %s", strerror(-r));
		goto out;
	}
	for (k = 0; k < shared.n && k < mapped.n; k++)
		if (shared.v[k].gpa != mapped.v[k].gpa || shared.v[k].length != mapped.v[k].length)
			break;
	if (k < shared.n || k < mapped.n) {
		uint64_t at = k < shared.n ? shared.v[k].gpa : mapped.v[k].gpa;

		if (k < shared.n && k < mapped.n && mapped.v[k].gpa < at)
			at = mapped.v[k].gpa;
		fail(w, FAIL_VERIFY, -EPROTO, "mapped != shared after the replay: %zu shared runs,"
		     " %zu mapped runs, first difference at 0x%" PRIx64, shared.n, mapped.n, at);
	} else if (w->cfg->backend != CVM_BACKEND_MODEL) {
		verify_kernel(w, &shared);
	}
out:
	free(shared.v);
	free(mapped.v);
}

static void teardown(struct world *w)
{
	unsigned int i;

	/* Unmap while the device is still attached, detach it, then let the
	 * library close what it opened (an IOAS cannot go while attached). */
	for (i = 0; w->dma && i < w->t->nregions; i++)
		if (w->regions[i])
			cvm_dma_remove_region(w->dma, w->regions[i]);
	vfio_teardown(&w->dev);
	cvm_dma_close(w->dma);
	for (i = 0; i < w->t->nregions; i++) {
		cvm_region_destroy(w->regions[i]);
		if (w->hva[i])
			munmap(w->hva[i], w->t->regions[i].size);
	}
}

/* What mappings never cross: cvm_dma_info() reports the context's granule,
 * but under auto (split_granule 0) a region whose pages are larger is
 * mapped in its page size (cvm_dma_info(3)); a larger page is a multiple
 * of every smaller power of two, so the largest one bounds them all. */
static void effective_granule(struct world *w)
{
	struct cvm_dma_info *info = &w->res->info;
	unsigned int i;

	if (w->res->pol.granule || (w->res->pol.flags & CVM_DMA_PER_PAGE) ||
	    info->split_granule == UINT64_MAX)
		return;
	for (i = 0; i < w->t->nregions; i++)
		if (w->t->regions[i].page_size > info->split_granule)
			info->split_granule = w->t->regions[i].page_size;
}

void replay_run(const struct trace *t, const struct replay_cfg *cfg,
		const struct policy *pol, struct result *res)
{
	void *hva[64] = { 0 };
	struct cvm_region *regions[64] = { 0 };
	struct world w = {
		.t = t, .cfg = cfg, .res = res, .hva = hva, .regions = regions,
		.dev = VFIO_DEV_INIT,
	};

	memset(res, 0, sizeof(*res));
	res->pol = *pol;
	res->st.sz = sizeof(res->st);
	if (map_memory(&w) || create_regions(&w) || open_dma(&w))
		goto out;
	res->info.sz = sizeof(res->info);
	if (cvm_dma_info(w.dma, &res->info))
		res->info.sz = 0;
	else
		effective_granule(&w);
	run_trace(&w);
	cvm_dma_stats(w.dma, &res->st);
	if (res->stage == FAIL_NONE || res->stage == FAIL_LINE)
		verify(&w);
out:
	teardown(&w);
}
