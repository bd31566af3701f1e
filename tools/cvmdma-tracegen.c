// SPDX-License-Identifier: MIT
/*
 * cvmdma-tracegen: seeded, deterministic conversion traces modelled on Linux
 * confidential guests (doc/trace-format.md explains each workload and why
 * it looks the way it does).  Same workload, seed and options give
 * byte-identical output on every machine: only integer arithmetic and our
 * own PRNG decide anything.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tool-util.h"

#define PAGE		(4 * KiB)
#define HUGE		(2 * MiB)
#define LOWMEM_SPLIT	UINT64_C(0xb0000000)	/* q35: RAM >= 2.75 GiB is split... */
#define LOWMEM		(2 * GiB)		/* ...2 GiB below 4 GiB, the rest above */
#define HIGHMEM_BASE	(4 * GiB)
#define PSC_MAX_ENTRIES	253			/* GHCB page-state-change buffer */
#define SWIOTLB_ALIGN	(256 * KiB)		/* IO_TLB_SEGSIZE * IO_TLB_SIZE */
#define BLOCK		(64 * KiB)		/* largest coherent allocation */
#define CHURN_MAX_OPS	UINT64_C(10000000)	/* ~250 MB of trace; nothing else bounds it */

enum workload { TDX_BOOT, SNP_BOOT, LAZY_ACCEPT, CHURN, ADVERSARIAL, NR_WORKLOADS };

static const char *const workload_names[NR_WORKLOADS] = {
	"tdx-boot", "snp-boot", "lazy-accept", "churn", "adversarial",
};

struct ram {
	uint64_t base, size;
};

struct alloc {
	uint64_t gpa, len;
};

#define ADV_RUNS 9	/* adversarial: the swiotlb and up to 8 large buffers */

struct gen {
	FILE *out;
	struct tool_rng rng;
	enum workload wl;
	uint64_t guest_size, seed, ops, exit_max;
	int initial;                   /* 1 shared, 0 private */
	struct ram ram[2];
	unsigned int nram;
	uint64_t swiotlb_gpa, swiotlb_size;
	uint8_t *used;                 /* one bit per 64 KiB block of RAM */
	struct alloc runs[ADV_RUNS];   /* adversarial: the shared runs */
	unsigned int nruns;
	uint64_t run_pages;            /* adversarial: 4 KiB pages in them */
};

/* While -o FILE is written: the temporary file beside it, renamed over FILE
 * only once the whole trace is written, and removed if anything fails, so
 * that a failed run neither leaves a truncated trace (which would replay as
 * if whole) nor destroys the FILE that was there. */
static char *tmp_path;
/* The same for the handler of the signals that end a run (Ctrl-C, SIGTERM,
 * SIGHUP): set once the file exists. */
static const char *volatile tmp_for_signal;

static void on_fatal_signal(int sig)
{
	const char *p = tmp_for_signal;

	if (p)
		unlink(p);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A run killed by a signal leaves no temporary file either; a signal the
 * caller ignores (a background job's SIGINT) stays ignored. */
static void remove_tmp_on_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	struct sigaction sa = { .sa_handler = on_fatal_signal }, old;

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (!sigaction(sigs[i], NULL, &old) && old.sa_handler != SIG_IGN)
			sigaction(sigs[i], &sa, NULL);
}

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	if (tmp_path)
		unlink(tmp_path);
	fputs("cvmdma-tracegen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* ---- emitting lines ---- */

static void emit_range(struct gen *g, uint64_t gpa, uint64_t len)
{
	char b[32];

	fprintf(g->out, " 0x%" PRIx64 "+%s", gpa, tool_fmt_len(len, b, sizeof(b)));
}

static void emit_one(struct gen *g, int shared, uint64_t gpa, uint64_t len)
{
	fputs(shared ? "shared" : "private", g->out);
	emit_range(g, gpa, len);
	fputc('\n', g->out);
}

/*
 * A TDX MapGPA request as the VMM sees it: KVM hands it to user space in
 * exits of at most exit_max bytes, each starting where the previous ended
 * (not realigned), so a large request becomes a run of lines.
 */
static void emit_mapgpa(struct gen *g, int shared, uint64_t gpa, uint64_t len)
{
	while (len) {
		uint64_t n = g->exit_max && len > g->exit_max ? g->exit_max : len;

		emit_one(g, shared, gpa, n);
		gpa += n;
		len -= n;
	}
}

/*
 * An SNP page-state change as Linux builds it: 2 MiB entries where the
 * address is 2 MiB aligned and 2 MiB remain, 4 KiB entries elsewhere, at
 * most 253 entries per GHCB request (one line, one batch).
 */
static void emit_psc(struct gen *g, int shared, uint64_t gpa, uint64_t len)
{
	unsigned int n = 0;

	while (len) {
		uint64_t e = !(gpa % HUGE) && len >= HUGE ? HUGE : PAGE;

		if (!n)
			fputs(shared ? "shared" : "private", g->out);
		emit_range(g, gpa, e);
		gpa += e;
		len -= e;
		if (++n == PSC_MAX_ENTRIES || !len) {
			fputc('\n', g->out);
			n = 0;
		}
	}
}

/* ---- guest RAM ---- */

static uint64_t ram_total(const struct gen *g)
{
	return g->guest_size;
}

/* Guest-physical address of byte `off` of RAM (counted across the blocks). */
static uint64_t ram_gpa(const struct gen *g, uint64_t off)
{
	return off < g->ram[0].size ? off : g->ram[1].base + (off - g->ram[0].size);
}

static void plan_layout(struct gen *g)
{
	/* QEMU q35: a guest with >= 2.75 GiB gets 2 GiB below 4 GiB (the PCI hole
	 * is above) and the rest from 4 GiB up; a smaller guest is all low. */
	g->ram[0] = (struct ram){ 0, g->guest_size };
	g->nram = 1;
	if (g->guest_size >= LOWMEM_SPLIT) {
		g->ram[0].size = LOWMEM;
		g->ram[1] = (struct ram){ HIGHMEM_BASE, g->guest_size - LOWMEM };
		g->nram = 2;
	}
}

static void layout(struct gen *g)
{
	char a[32], b[32];
	unsigned int i;

	for (i = 0; i < g->nram; i++) {
		fprintf(g->out, "# %s RAM: %s\n", i ? "above-4G" : "below-4G",
			tool_fmt_bytes(g->ram[i].size, a, sizeof(a)));
		fprintf(g->out, "region 0x%" PRIx64 " %s %s page=4K\n", g->ram[i].base,
			tool_fmt_len(g->ram[i].size, b, sizeof(b)),
			g->initial ? "shared" : "private");
	}
}

static void mark_used(struct gen *g, uint64_t off, uint64_t len)
{
	uint64_t b;

	for (b = off / BLOCK; b < (off + len + BLOCK - 1) / BLOCK; b++)
		g->used[b / 8] |= 1u << (b % 8);
}

static int block_used(const struct gen *g, uint64_t b)
{
	return g->used[b / 8] >> (b % 8) & 1;
}

static void clear_block(struct gen *g, uint64_t b)
{
	g->used[b / 8] &= ~(1u << (b % 8));
}

/*
 * swiotlb: 6% of RAM clamped to [64 MiB, 1 GiB] (Linux sizes the bounce
 * buffer so in a CC guest), allocated by memblock top-down below 4 GiB:
 * it ends a little under the top of low RAM, page aligned, not 2 MiB aligned.
 */
static void place_swiotlb(struct gen *g)
{
	uint64_t size = ram_total(g) * 6 / 100;
	uint64_t gap = tool_rng_below(&g->rng, 4096) * PAGE;

	if (size < 64 * MiB)
		size = 64 * MiB;
	if (size > 1 * GiB)
		size = 1 * GiB;
	size = (size + SWIOTLB_ALIGN - 1) / SWIOTLB_ALIGN * SWIOTLB_ALIGN;
	if (size + gap + 16 * MiB > g->ram[0].size)
		gap = 0;
	g->swiotlb_size = size;
	g->swiotlb_gpa = g->ram[0].size - gap - size;
	mark_used(g, g->swiotlb_gpa, size);
}

static void comment_swiotlb(struct gen *g, const char *how)
{
	char a[32];

	fprintf(g->out, "# swiotlb: %s at 0x%" PRIx64 ", converted shared once (%s)\n",
		tool_fmt_bytes(g->swiotlb_size, a, sizeof(a)), g->swiotlb_gpa, how);
}

/* A dma_alloc_coherent() of 4-64 KiB, naturally aligned, in a free 64 KiB block. */
static uint64_t coherent_alloc(struct gen *g, uint64_t *len)
{
	static const unsigned int weights[5] = { 50, 15, 15, 10, 10 };   /* 4K..64K */
	uint64_t nblocks = ram_total(g) / BLOCK, b, w = tool_rng_below(&g->rng, 100);
	unsigned int order = 0, tries;

	while (w >= weights[order])
		w -= weights[order++];
	*len = PAGE << order;
	b = tool_rng_below(&g->rng, nblocks);
	for (tries = 0; block_used(g, b); tries++) {
		if (tries == nblocks)
			die("RAM is full of coherent allocations: use fewer --ops");
		b = (b + 1) % nblocks;
	}
	mark_used(g, b * BLOCK, BLOCK);
	return ram_gpa(g, b * BLOCK + tool_rng_below(&g->rng, BLOCK / *len) * *len);
}

/* ---- workloads ---- */

static void gen_tdx_boot(struct gen *g)
{
	uint64_t i, len, gpa;
	unsigned int r;

	char a[32];

	fprintf(g->out, "# phase 1: the guest declares its RAM private in MapGPA exits of %s;\n"
		"#   a TD's RAM starts private, so these are no-ops to absorb cheaply\n",
		g->exit_max ? tool_fmt_len(g->exit_max, a, sizeof(a)) : "any size");
	for (r = 0; r < g->nram; r++)
		emit_mapgpa(g, 0, g->ram[r].base, g->ram[r].size);
	comment_swiotlb(g, "one MapGPA request, split into exits");
	emit_mapgpa(g, 1, g->swiotlb_gpa, g->swiotlb_size);
	fprintf(g->out, "# phase 3: %" PRIu64 " driver coherent allocations of 4-64 KiB, "
		"one MapGPA each\n", g->ops);
	for (i = 0; i < g->ops; i++) {
		gpa = coherent_alloc(g, &len);
		emit_mapgpa(g, 1, gpa, len);
	}
}

static void gen_snp_boot(struct gen *g)
{
	uint64_t i, len, gpa;
	unsigned int r;

	fputs("# phase 1: firmware validates RAM: page-state changes to private, 2M entries,\n"
	      "#   253 per request; the RAM already reads private, so these are no-ops\n", g->out);
	for (r = 0; r < g->nram; r++)
		emit_psc(g, 0, g->ram[r].base, g->ram[r].size);
	comment_swiotlb(g, "4K entries at the unaligned ends, 2M entries between");
	emit_psc(g, 1, g->swiotlb_gpa, g->swiotlb_size);
	fprintf(g->out, "# phase 3: %" PRIu64 " driver coherent allocations of 4-64 KiB, "
		"one request of 4K entries each\n", g->ops);
	for (i = 0; i < g->ops; i++) {
		gpa = coherent_alloc(g, &len);
		emit_psc(g, 1, gpa, len);
	}
}

static void gen_lazy_accept(struct gen *g)
{
	uint64_t units = ram_total(g) / HUGE, i, j, t;
	uint32_t *perm = malloc(units * sizeof(*perm));

	if (!perm)
		die("out of memory");
	fprintf(g->out, "# %" PRIu64 " of %" PRIu64 " 2 MiB units accepted (turned private) "
		"in the order the guest first touches them\n", g->ops, units);
	for (i = 0; i < units; i++)
		perm[i] = (uint32_t)i;
	/* The first ops entries of a Fisher-Yates shuffle: a random order of
	 * distinct units, as the page allocator hands out unaccepted memory. */
	for (i = 0; i < g->ops; i++) {
		j = i + tool_rng_below(&g->rng, units - i);
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = (uint32_t)t;
		emit_one(g, 0, ram_gpa(g, (uint64_t)perm[i] * HUGE), HUGE);
	}
	free(perm);
}

static uint64_t gpa_to_off(const struct gen *g, uint64_t gpa)
{
	return gpa < g->ram[0].size ? gpa : gpa - g->ram[1].base + g->ram[0].size;
}

static void gen_churn(struct gen *g)
{
	const uint64_t max_live = 1024;
	struct alloc *live = malloc(max_live * sizeof(*live));
	uint64_t nlive = 0, i, k;

	if (!live)
		die("out of memory");
	place_swiotlb(g);
	comment_swiotlb(g, "at boot, one MapGPA request split into exits");
	emit_mapgpa(g, 1, g->swiotlb_gpa, g->swiotlb_size);
	fprintf(g->out, "# %" PRIu64 " dma_alloc_coherent (shared) / dma_free_coherent "
		"(private) of 4-64 KiB, at most %" PRIu64 " live\n", g->ops, max_live);
	for (i = 0; i < g->ops; i++) {
		/* Allocate more often than free while few are live, so the live
		 * set hovers around half the cap (a driver's steady state). */
		int alloc = nlive < max_live &&
			    (!nlive || tool_rng_below(&g->rng, max_live) >= nlive / 2);

		if (alloc) {
			live[nlive].gpa = coherent_alloc(g, &live[nlive].len);
			emit_mapgpa(g, 1, live[nlive].gpa, live[nlive].len);
			nlive++;
			continue;
		}
		k = tool_rng_below(&g->rng, nlive);
		emit_mapgpa(g, 0, live[k].gpa, live[k].len);
		clear_block(g, gpa_to_off(g, live[k].gpa) / BLOCK);
		live[k] = live[--nlive];
	}
	free(live);
}

static int range_free(const struct gen *g, uint64_t off, uint64_t len)
{
	uint64_t b;

	for (b = off / BLOCK; b < (off + len) / BLOCK; b++)
		if (block_used(g, b))
			return 0;
	return 1;
}

/*
 * Shared runs for the adversary: the swiotlb plus up to max - 1 large
 * buffers (64-512 MiB on big guests, scaled down on small ones), each
 * 2 MiB aligned, inside one RAM block, not overlapping.
 */
static unsigned int adversarial_runs(struct gen *g, struct alloc *runs, unsigned int max)
{
	uint64_t lo = ram_total(g) / 64, hi = ram_total(g) / 16, units, off, len;
	unsigned int n = 1, tries;

	lo = lo > 64 * MiB ? 64 * MiB : lo < HUGE ? HUGE : lo / HUGE * HUGE;
	hi = hi > 512 * MiB ? 512 * MiB : hi < lo ? lo : hi / HUGE * HUGE;
	place_swiotlb(g);
	runs[0] = (struct alloc){ g->swiotlb_gpa, g->swiotlb_size };
	units = ram_total(g) / HUGE;
	for (tries = 0; n < max && tries < 1000; tries++) {
		len = lo + tool_rng_below(&g->rng, (hi - lo) / HUGE + 1) * HUGE;
		off = tool_rng_below(&g->rng, units - len / HUGE + 1) * HUGE;
		if (off < g->ram[0].size && off + len > g->ram[0].size)
			continue;
		if (!range_free(g, off, len))
			continue;
		mark_used(g, off, len);
		runs[n++] = (struct alloc){ ram_gpa(g, off), len };
	}
	return n;
}

/* The shared runs and the check of --ops against them, before anything is
 * written: a refused --ops must not leave the header and regions on a pipe,
 * where they would replay as a whole (empty) trace. */
static void plan_adversarial(struct gen *g)
{
	unsigned int i;

	g->nruns = adversarial_runs(g, g->runs, ADV_RUNS);
	g->run_pages = 0;
	for (i = 0; i < g->nruns; i++)
		g->run_pages += g->runs[i].len / PAGE;
	if (g->ops > g->run_pages / 2)
		die("--ops %" PRIu64 " is more than half the %" PRIu64 " shared pages: "
		    "use a larger --guest-size or fewer --ops", g->ops, g->run_pages);
}

static void gen_adversarial(struct gen *g)
{
	const struct alloc *runs = g->runs;
	unsigned int n = g->nruns, i;
	uint64_t pages = g->run_pages, p, k;
	uint8_t *hole;

	hole = calloc(pages / 8 + 1, 1);
	if (!hole)
		die("out of memory");
	fprintf(g->out, "# %u shared runs, each one request (the swiotlb first)\n", n);
	for (i = 0; i < n; i++)
		emit_mapgpa(g, 1, runs[i].gpa, runs[i].len);
	fprintf(g->out, "# %" PRIu64 " random 4 KiB private holes inside them\n", g->ops);
	for (k = 0; k < g->ops; k++) {
		do
			p = tool_rng_below(&g->rng, pages);
		while (hole[p / 8] >> (p % 8) & 1);
		hole[p / 8] |= 1u << (p % 8);
		for (i = 0; p >= runs[i].len / PAGE; i++)
			p -= runs[i].len / PAGE;
		emit_one(g, 0, runs[i].gpa + p * PAGE, PAGE);
	}
	free(hole);
}

/* ---- main ---- */

static const char usage_text[] =
	"usage: cvmdma-tracegen WORKLOAD [OPTION]...\n"
	"Write a seeded conversion trace of a confidential guest to standard output.\n"
	"Workloads: tdx-boot snp-boot lazy-accept churn adversarial\n"
	"  -g, --guest-size SIZE       guest RAM, a multiple of 2M, 256M..16T (default 64G)\n"
	"  -s, --seed N                seed of every random choice (default 1)\n"
	"  -n, --ops N                 allocations (tdx-boot, snp-boot: default 512),\n"
	"                              accepted 2M units (lazy-accept: half of them),\n"
	"                              allocations+frees (churn: 10000), holes\n"
	"                              (adversarial: 10000)\n"
	"      --exit-max SIZE         split MapGPA requests into exits of at most SIZE\n"
	"                              (tdx-boot, churn: default 2M; adversarial: 0,\n"
	"                              no split)\n"
	"      --initial shared|private  override the workload's initial state of RAM\n"
	"  -o, --output FILE           write to FILE, replaced only once complete\n"
	"  -h, --help                  this text\n"
	"  -V, --version               the tool's version\n"
	"See cvmdma-tracegen(1) and doc/trace-format.md.\n";

/* After a usage error's message: where the full text is. */
static void usage(FILE *f)
{
	fputs("Try 'cvmdma-tracegen --help'.\n", f);
}

static uint64_t parse_num(const char *opt, const char *arg)
{
	uint64_t v;
	int r = tool_parse_size(arg, NULL, &v);

	if (r == -ERANGE)
		die("%s: '%s' does not fit in 64 bits", opt, arg);
	if (r)
		die("%s: '%s' is not a size (decimal or 0x hex, optional K/M/G/T)", opt, arg);
	return v;
}

static enum workload parse_workload(const char *name)
{
	int i;

	for (i = 0; i < NR_WORKLOADS; i++)
		if (!strcmp(name, workload_names[i]))
			return (enum workload)i;
	fprintf(stderr, "cvmdma-tracegen: unknown workload '%s'\n", name);
	usage(stderr);
	exit(2);
}

/* Fills in what the options left open: each workload's own defaults. */
static void defaults(struct gen *g, int have_ops, int have_exit, int have_initial)
{
	static const uint64_t ops[NR_WORKLOADS] = { 512, 512, 0, 10000, 10000 };

	if (!have_ops)
		g->ops = g->wl == LAZY_ACCEPT ? g->guest_size / HUGE / 2 : ops[g->wl];
	if (!have_exit)
		g->exit_max = g->wl == ADVERSARIAL ? 0 : HUGE;
	/* lazy-accept: RAM nobody has accepted yet is hypervisor-owned (shared);
	 * everything else: a confidential guest's RAM starts private. */
	if (!have_initial)
		g->initial = g->wl == LAZY_ACCEPT;
	if (g->wl == LAZY_ACCEPT && g->ops > g->guest_size / HUGE)
		die("--ops %" PRIu64 " is more than the %" PRIu64 " 2 MiB units of the guest",
		    g->ops, g->guest_size / HUGE);
	if (g->wl == CHURN && g->ops > CHURN_MAX_OPS)
		die("--ops %" PRIu64 " is more than churn's limit of %" PRIu64, g->ops,
		    CHURN_MAX_OPS);
}

static void check_guest_size(uint64_t size)
{
	if (size < 256 * MiB || size % HUGE)
		die("--guest-size must be a multiple of 2M and at least 256M");
	if (size > 16 * TiB)
		die("--guest-size is limited to 16T (a region holds at most 2^32 pages)");
}

/* Everything that can refuse the options, before the output is opened: a
 * refused --ops must leave an existing -o FILE as it was, even one written
 * in place (a symbolic link, a directory that takes no new file). */
static void plan(struct gen *g)
{
	g->used = calloc(g->guest_size / BLOCK / 8 + 1, 1);
	if (!g->used)
		die("out of memory");
	tool_rng_seed(&g->rng, g->seed);
	plan_layout(g);
	/* tdx-boot and snp-boot never free an allocation: refuse an --ops that
	 * cannot fit before writing anything, not after most of the trace has
	 * gone down a pipe.  (place_swiotlb() is their first random draw.) */
	if (g->wl == TDX_BOOT || g->wl == SNP_BOOT) {
		uint64_t nblocks = ram_total(g) / BLOCK, used;

		place_swiotlb(g);
		used = (g->swiotlb_gpa + g->swiotlb_size + BLOCK - 1) / BLOCK -
		       g->swiotlb_gpa / BLOCK;
		if (g->ops > nblocks - used)
			die("RAM is full of coherent allocations: --ops %" PRIu64 " is more than the "
			    "%" PRIu64 " free 64 KiB blocks "
			    "of the guest", g->ops, nblocks - used);
	}
	if (g->wl == ADVERSARIAL)
		plan_adversarial(g);	/* its first random draws, as before */
}

static void generate(struct gen *g)
{
	static void (*const fn[NR_WORKLOADS])(struct gen *) = {
		gen_tdx_boot, gen_snp_boot, gen_lazy_accept, gen_churn, gen_adversarial,
	};
	char a[32], b[32];

	/* The command that makes this trace again: snp-boot and lazy-accept
	 * refuse --exit-max, so theirs names none. */
	fprintf(g->out, "# cvmdma-tracegen %s --guest-size %s --seed %" PRIu64 " --ops %" PRIu64
		"%s%s --initial %s\n", workload_names[g->wl],
		tool_fmt_len(g->guest_size, a, sizeof(a)), g->seed, g->ops,
		g->wl == SNP_BOOT || g->wl == LAZY_ACCEPT ? "" : " --exit-max ",
		g->wl == SNP_BOOT || g->wl == LAZY_ACCEPT ? "" :
		g->exit_max ? tool_fmt_len(g->exit_max, b, sizeof(b)) : "0",
		g->initial ? "shared" : "private");
	fprintf(g->out, "cvmdma-trace 1\n");
	layout(g);
	fn[g->wl](g);
	free(g->used);
}

/* FILE itself, written in place: the old way, where no temporary file can
 * be made beside it. */
static FILE *open_in_place(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		die("%s: %s", path, strerror(errno));
	return f;
}

/* A temporary file in FILE's directory, with FILE's permissions if it is
 * there, else those a new FILE would get (umask applied, as fopen's).  FILE
 * itself when it is there and not a plain file (a device, a FIFO, a
 * symbolic link: /dev/stdout), or when its directory takes no new file. */
static FILE *open_output(const char *path)
{
	struct stat st;
	bool exists = !lstat(path, &st);
	mode_t mask, mode;
	FILE *f;
	int fd;

	if (exists && !S_ISREG(st.st_mode))
		return open_in_place(path);
	/* Replacing FILE needs only the directory's permission: refuse a FILE
	 * the user could not write, as a shell's > would. */
	if (exists && faccessat(AT_FDCWD, path, W_OK, AT_EACCESS))
		die("%s: %s", path, strerror(errno));
	mask = umask(0);
	umask(mask);
	mode = exists ? st.st_mode & 07777 : 0666 & ~mask;
	/* A short name beside FILE: FILE.tmpXXXXXX can exceed NAME_MAX. */
	if (asprintf(&tmp_path, "%.*s.cvmdma-tracegen.XXXXXX",
		     (int)(strrchr(path, '/') ? strrchr(path, '/') - path + 1 : 0), path) < 0) {
		tmp_path = NULL;
		die("out of memory");
	}
	fd = mkstemp(tmp_path);
	if (fd < 0) {
		int err = errno;

		free(tmp_path);
		tmp_path = NULL;
		if (exists && (err == EACCES || err == EPERM || err == EROFS))
			return open_in_place(path);
		die("%s: %s", path, strerror(err));
	}
	tmp_for_signal = tmp_path;
	remove_tmp_on_signals();
	if (fchmod(fd, mode) || !(f = fdopen(fd, "w"))) {
		int err = errno;

		close(fd);
		die("%s: %s", path, strerror(err));
	}
	return f;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "guest-size", required_argument, NULL, 'g' },
		{ "seed", required_argument, NULL, 's' },
		{ "ops", required_argument, NULL, 'n' },
		{ "exit-max", required_argument, NULL, 'x' },
		{ "initial", required_argument, NULL, 'i' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct gen g = { .guest_size = 64 * GiB, .seed = 1 };
	int have_ops = 0, have_exit = 0, have_initial = 0, c;
	const char *path = NULL;

	while ((c = getopt_long(argc, argv, "g:s:n:o:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'g': g.guest_size = parse_num("--guest-size", optarg); break;
		case 's': g.seed = parse_num("--seed", optarg); break;
		case 'n': g.ops = parse_num("--ops", optarg); have_ops = 1; break;
		case 'x': g.exit_max = parse_num("--exit-max", optarg); have_exit = 1; break;
		case 'o': path = optarg; break;
		case 'i':
			if (strcmp(optarg, "shared") && strcmp(optarg, "private"))
				die("--initial must be shared or private");
			g.initial = !strcmp(optarg, "shared");
			have_initial = 1;
			break;
		case 'h': tool_print_exit("cvmdma-tracegen", usage_text, 1);
		case 'V':
			tool_print_exit("cvmdma-tracegen", "cvmdma-tracegen (libcvmdma) " PACKAGE_VERSION
					"\n", 1);
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		if (optind == argc)
			fputs("cvmdma-tracegen: which WORKLOAD?\n", stderr);
		else
			fprintf(stderr, "cvmdma-tracegen: one WORKLOAD only ('%s' is extra)\n",
				argv[optind + 1]);
		usage(stderr);
		return 2;
	}
	g.wl = parse_workload(argv[optind]);
	check_guest_size(g.guest_size);
	if (have_exit && (g.wl == SNP_BOOT || g.wl == LAZY_ACCEPT))
		die("--exit-max applies to the MapGPA workloads (tdx-boot, churn, adversarial), "
		    "not to %s", workload_names[g.wl]);
	if (have_exit && g.exit_max % PAGE)
		die("--exit-max must be a multiple of 4K (0: requests are not split)");
	defaults(&g, have_ops, have_exit, have_initial);

	if (path && !strcmp(path, "-"))
		path = NULL;
	/* Past a file size limit a write fails (EFBIG) and the run ends with a
	 * write error (exit 2, no temporary file left), not with SIGXFSZ. */
	signal(SIGXFSZ, SIG_IGN);
	plan(&g);
	g.out = path ? open_output(path) : stdout;
	generate(&g);
	if (fflush(g.out) || ferror(g.out))
		die("%s: write error: %s", path ? path : "<stdout>", strerror(errno ? errno : EIO));
	if (path && (fclose(g.out) || (tmp_path && rename(tmp_path, path))))
		die("%s: %s", path, strerror(errno));
	tmp_for_signal = NULL;
	free(tmp_path);
	return 0;
}
