// SPDX-License-Identifier: MIT
/*
 * guest-conc [FLAGS_A FLAGS_B SEED [NCHURN]]: concurrency stress of the DMA layer on
 * the real kernel.  Three regions, each in two DMA contexts at once: the edu
 * device's container (type1 on kernel A, compat on kernel B) and an own
 * iommufd IOAS.  Three threads convert at random (single and batch), one
 * churns remove/add/stats/for_each_mapping/repair, one adds and removes
 * listeners.  Two churners by default work on the same region/context
 * pairs (each one's remove or add and its note of the membership are
 * serialised per pair; what lands between them is the library's to bear).
 * At the end every context must map exactly the shared pages, probed page
 * by page in the kernel.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "cvmdma.h"
#include "dma.h"
#include "guest-tap.h"
#include "guest.h"

#define PG 4096ull
#define NREG 3
#define NCTX 2
#define NCONV 3
#define OPS 6000

static const struct { uint64_t gpa, pages; uint32_t psz; } rdef[NREG] = {
	{ 0x40000000ull, 512, 4096 },
	{ 0x40200000ull, 512, 16384 },  /* adjacent to region 0 */
	{ 0x50000000ull, 256, 4096 },
};

static struct cvm_region *reg[NREG];
static uint8_t *hva[NREG];
static struct cvm_dma *ctx[NCTX];
static int in_ctx[NCTX][NREG];      /* membership, as the churners changed it */
/* Held across a churner's remove or add and its note in in_ctx: without it
 * two churners' notes can land in the other order than their calls. */
static pthread_mutex_t pair_lock[NCTX][NREG];
static uint64_t probe_buf;
static volatile int stop;
static int nchurn = 1;
static unsigned long n_race;
static int bad_errs;
static unsigned long n_conv, n_batch, n_conv_err, n_rm, n_add, n_stats, n_walk, n_repair,
		     n_repair_err, n_lis_add, n_lis_rm, n_lis_cb;

static void note_err(const char *what, int err)
{
	__atomic_add_fetch(&bad_errs, 1, __ATOMIC_RELAXED);
	printf("# %s returned %d (%s)\n", what, err, strerror(-err));
}

static char lastlog[4][256];
static int nlog;
static void logfn(void *o, int prio, const char *msg)
{
	(void)o;
	int i = __atomic_fetch_add(&nlog, 1, __ATOMIC_RELAXED);
	if (i < 4)
		snprintf(lastlog[i], sizeof(lastlog[i]), "%d %s", prio, msg);
}

/* ---- converters ---- */
static void *converter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int op = 0; op < OPS; op++) {
		int r = rand_r(&seed) % NREG;
		uint64_t ps = rdef[r].psz, np = rdef[r].pages * PG / ps;
		enum cvm_state to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;
		int err;

		if (rand_r(&seed) % 2) {
			uint64_t s = rand_r(&seed) % np, n = 1 + rand_r(&seed) % (np / 8);
			if (s + n > np)
				n = np - s;
			err = cvm_convert(reg[r], rdef[r].gpa + s * ps, n * ps, to, 0);
			__atomic_add_fetch(&n_conv, 1, __ATOMIC_RELAXED);
		} else {
			struct cvm_range rg[6];
			size_t cnt = 1 + rand_r(&seed) % 6;
			for (size_t i = 0; i < cnt; i++) {
				uint64_t s = rand_r(&seed) % np, n = 1 + rand_r(&seed) % 16;
				if (s + n > np)
					n = np - s;
				rg[i].gpa = rdef[r].gpa + s * ps;
				rg[i].length = n * ps;
			}
			err = cvm_convert_batch(reg[r], rg, cnt, to, 0);
			__atomic_add_fetch(&n_batch, 1, __ATOMIC_RELAXED);
		}
		if (err) {
			__atomic_add_fetch(&n_conv_err, 1, __ATOMIC_RELAXED);
			note_err("convert", err);
		}
	}
	return NULL;
}

/* ---- churn ---- */
static int walk_fn(void *o, uint64_t iova, uint64_t len)
{
	uint64_t *last = o;
	if (iova < *last || !len)
		return -EPROTO;
	*last = iova + len;
	return 0;
}

static void *churner(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		int c = rand_r(&seed) % NCTX, r = rand_r(&seed) % NREG, err;
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		uint64_t last = 0;

		pthread_mutex_lock(&pair_lock[c][r]);
		if (__atomic_load_n(&in_ctx[c][r], __ATOMIC_RELAXED) || nchurn > 1) {
			err = cvm_dma_remove_region(ctx[c], reg[r]);
			__atomic_add_fetch(&n_rm, 1, __ATOMIC_RELAXED);
			if (err == -ENOENT && nchurn > 1)
				__atomic_add_fetch(&n_race, 1, __ATOMIC_RELAXED);
			else if (err)
				note_err("remove_region", err);
			else
				__atomic_store_n(&in_ctx[c][r], 0, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&pair_lock[c][r]);
		err = cvm_dma_stats(ctx[c], &st);
		__atomic_add_fetch(&n_stats, 1, __ATOMIC_RELAXED);
		if (err)
			note_err("stats", err);
		err = cvm_dma_for_each_mapping(ctx[c], walk_fn, &last);
		__atomic_add_fetch(&n_walk, 1, __ATOMIC_RELAXED);
		if (err)
			note_err("for_each_mapping", err);
		err = cvm_dma_repair(ctx[c]);
		__atomic_add_fetch(&n_repair, 1, __ATOMIC_RELAXED);
		if (err) {
			__atomic_add_fetch(&n_repair_err, 1, __ATOMIC_RELAXED);
			note_err("repair", err);
		}
		pthread_mutex_lock(&pair_lock[c][r]);
		if ((!__atomic_load_n(&in_ctx[c][r], __ATOMIC_RELAXED) || nchurn > 1) &&
		    rand_r(&seed) % 4) {
			err = cvm_dma_add_region(ctx[c], reg[r]);
			__atomic_add_fetch(&n_add, 1, __ATOMIC_RELAXED);
			if (err == -EEXIST && nchurn > 1)
				__atomic_add_fetch(&n_race, 1, __ATOMIC_RELAXED);
			else if (err)
				note_err("add_region", err);
			else
				__atomic_store_n(&in_ctx[c][r], 1, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&pair_lock[c][r]);
	}
	return NULL;
}

/* ---- listeners ---- */
static pthread_t lister_th;
struct lis {
	int r;
	uint8_t shadow[512 * 4];
	int bad, bad_dup, bad_q, bad_left, bad_rng;
	int qv, removing;
	uint64_t qg, ql; int qvv;
};

static void lmark(struct lis *l, uint64_t gpa, uint64_t len, uint8_t v)
{
	uint64_t s = (gpa - rdef[l->r].gpa) / PG, n = len / PG;

	__atomic_add_fetch(&n_lis_cb, 1, __ATOMIC_RELAXED);
	if (gpa < rdef[l->r].gpa || s + n > rdef[l->r].pages) {
		l->bad++; l->bad_rng++;
		return;
	}
	for (uint64_t i = s; i < s + n; i++) {
		if (l->shadow[i] == v)
			{ l->bad++; l->bad_dup++; }    /* heard a change that was not one */
		l->shadow[i] = v;
	}
	/* Queries of the same region are allowed in a callback and see the new state. */
	int q = cvm_region_query(reg[l->r], gpa, len), want;
	/* A removal's replay leaves the pages shared: it runs on the lister. */
	want = v || (l->removing && pthread_equal(pthread_self(), lister_th)) ? CVM_SHARED
									      : CVM_PRIVATE;
	if (q != want) {
		l->bad++;
		l->bad_q++;
		l->qv = q;
		l->qg = gpa;
		l->ql = len;
		l->qvv = v;
	}
}

static int l_sh(void *o, uint64_t gpa, uint64_t len)
{
	lmark(o, gpa, len, 1);
	return 0;
}

static void l_pr(void *o, uint64_t gpa, uint64_t len)
{
	lmark(o, gpa, len, 0);
}

static const struct cvm_listener_ops lops = {
	.sz = sizeof(lops), .to_shared = l_sh, .to_private = l_pr,
};
static int lis_bad;

static void *lister(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	static struct lis ls[2];

	lister_th = pthread_self();

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		struct cvm_listener *h[2] = { 0 };
		for (int k = 0; k < 2; k++) {
			memset(&ls[k], 0, sizeof(ls[k]));
			ls[k].r = rand_r(&seed) % NREG;
			int err = cvm_listener_add(reg[ls[k].r], &lops, &ls[k], 0, &h[k]);
			__atomic_add_fetch(&n_lis_add, 1, __ATOMIC_RELAXED);
			if (err)
				note_err("listener_add", err);
		}
		usleep(rand_r(&seed) % 2000);
		for (int k = 0; k < 2; k++) {
			if (!h[k])
				continue;
			ls[k].removing = 1;
			cvm_listener_remove(h[k], CVM_LISTENER_REPLAY_PRIVATE);
			__atomic_add_fetch(&n_lis_rm, 1, __ATOMIC_RELAXED);
			for (uint64_t i = 0; i < rdef[ls[k].r].pages; i++)
				if (ls[k].shadow[i]) {
					ls[k].bad++;
					ls[k].bad_left++;
				}
			if (ls[k].bad) {
				if (lis_bad < 6)
					printf("# listener on region %d: %d inconsistencies: dup %d "
					       "query %d (last %d for %llx+%llx to %d) left %d "
					       "range %d\n", ls[k].r, ls[k].bad, ls[k].bad_dup,
					       ls[k].bad_q, ls[k].qv, (unsigned long long)ls[k].qg,
					       (unsigned long long)ls[k].ql, ls[k].qvv,
					       ls[k].bad_left, ls[k].bad_rng);
				lis_bad++;
			}
		}
	}
	return NULL;
}

/* ---- final check ---- */
struct mapset { uint8_t *bm; uint64_t base, n; int outside, overlap; uint64_t count; };
static int map_fn(void *o, uint64_t iova, uint64_t len)
{
	struct mapset *m = o;
	m->count++;
	for (uint64_t a = iova; a < iova + len; a += PG) {
		int found = 0;
		for (int r = 0; r < NREG; r++)
			if (a >= rdef[r].gpa && a < rdef[r].gpa + rdef[r].pages * PG) {
				uint64_t idx = r * 512 + (a - rdef[r].gpa) / PG;
				if (m->bm[idx])
					m->overlap++;
				m->bm[idx] = 1;
				found = 1;
			}
		if (!found)
			m->outside++;
	}
	return 0;
}

static int check_ctx(int c, const char *name)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	static uint8_t bm[NREG * 512];
	struct mapset m = { .bm = bm };
	int err, tbl_bad = 0, kern_bad = 0, probe_err = 0;

	memset(bm, 0, sizeof(bm));
	err = cvm_dma_stats(ctx[c], &st);
	tap_ok(!err && st.pending_repairs == 0, "%s: pending_repairs is 0 (%d, %llu)", name, err,
	       (unsigned long long)st.pending_repairs);
	err = cvm_dma_for_each_mapping(ctx[c], map_fn, &m);
	tap_ok(!err && !m.outside && !m.overlap && m.count == st.mappings,
	       "%s: mapping table walk sane (%d, outside %d, overlap %d, %llu vs stats %llu)", name,
	       err, m.outside, m.overlap, (unsigned long long)m.count,
	       (unsigned long long)st.mappings);
	for (int r = 0; r < NREG; r++)
		for (uint64_t p = 0; p < rdef[r].pages; p++) {
			uint64_t gpa = rdef[r].gpa + p * PG;
			uint64_t ps = rdef[r].psz, pg0 = gpa & ~(ps - 1);
			int q = cvm_region_query(reg[r], pg0, ps);
			int want = in_ctx[c][r] && q == CVM_SHARED;
			if (q < 0 && probe_err++ < 3)
				printf("# query %d\n", q);
			int k = guest_kernel_mapped(ctx[c], gpa, probe_buf);
			if (bm[r * 512 + p] != want) {
				if (tbl_bad++ < 5)
					printf("# %s: region %d page %llu: table %d, want %d\n", name, r,
					       (unsigned long long)p, bm[r * 512 + p], want);
			}
			if (k < 0) {
				if (probe_err++ < 3)
					printf("# %s: probe %llx: %d\n", name, (unsigned long long)gpa, k);
			} else if (k != want) {
				if (kern_bad++ < 5)
					printf("# %s: region %d page %llu: kernel %d, want %d\n", name, r,
					       (unsigned long long)p, k, want);
			}
		}
	tap_ok(!tbl_bad, "%s: library table maps exactly the shared pages (%d wrong)", name, tbl_bad);
	tap_ok(!kern_bad && !probe_err,
	       "%s: kernel maps exactly the shared pages (%d wrong, %d probe errors)", name,
	       kern_bad, probe_err);
	return 0;
}

static void hung(int sig)
{
	static const char msg[] = "not ok - hang: alarm fired\n";
	(void)sig;
	if (write(1, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(1);
}

int main(int argc, char **argv)
{
	struct guest_target t;
	uint32_t fa = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
	uint32_t fb = argc > 2 ? strtoul(argv[2], NULL, 0) : 0;
	unsigned seed = argc > 3 ? strtoul(argv[3], NULL, 0) : 1;
	const char *tname = guest_kernel_a() ? "type1" : "compat";
	pthread_t th[NCONV + 3];
	nchurn = argc > 4 ? atoi(argv[4]) : 2;
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int c = 0; c < NCTX; c++)
		for (int r = 0; r < NREG; r++)
			pthread_mutex_init(&pair_lock[c][r], NULL);
	signal(SIGALRM, hung);
	alarm(240);
	cvm_set_log(logfn, NULL, LOG_ERR);
	err = guest_target_open(&t, tname);
	if (err == -ENODEV) {
		tap_skip_all("no edu device bound to vfio-pci (not in the test guest?)");
		return 0;
	}
	if (err) {
		tap_ok(false, "%s: open the edu device (%s)", tname, strerror(-err));
		return tap_done();
	}
	probe_buf = (uint64_t)(uintptr_t)mmap(NULL, PG, PROT_READ | PROT_WRITE,
					      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	struct cvm_dma_config ca = { .sz = sizeof(ca), .backend = CVM_BACKEND_TYPE1,
				     .fd = t.container, .flags = fa };
	struct cvm_dma_config cb = { .sz = sizeof(cb), .backend = CVM_BACKEND_IOMMUFD,
				     .fd = -1, .flags = fb };
	err = cvm_dma_open(&ca, &ctx[0]) ?: cvm_dma_open(&cb, &ctx[1]);
	for (int r = 0; r < NREG && !err; r++) {
		hva[r] = mmap(NULL, rdef[r].pages * PG, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = rdef[r].gpa,
						.length = rdef[r].pages * PG, .hva = hva[r],
						.page_size = rdef[r].psz,
						.flags = r == 2 ? CVM_REGION_INIT_SHARED : 0 };
		err = cvm_region_create(&rc, &reg[r]);
		for (int c = 0; c < NCTX && !err; c++) {
			err = cvm_dma_add_region(ctx[c], reg[r]);
			in_ctx[c][r] = !err;
		}
	}
	if (!tap_ok(!err, "setup: %s + iommufd contexts, flags %#x/%#x (%d)", tname, fa, fb, err)) {
		for (int i = 0; i < nlog && i < 4; i++)
			printf("# log: %s\n", lastlog[i]);
		printf("1..%d\n", tap_count);
		return 1;
	}
	for (int i = 0; i < NCONV; i++)
		pthread_create(&th[i], NULL, converter, (void *)(uintptr_t)(seed * 100 + i));
	pthread_create(&th[NCONV], NULL, churner, (void *)(uintptr_t)(seed * 100 + 7));
	pthread_create(&th[NCONV + 1], NULL, lister, (void *)(uintptr_t)(seed * 100 + 8));
	if (nchurn > 1)
		pthread_create(&th[NCONV + 2], NULL, churner, (void *)(uintptr_t)(seed * 100 + 9));
	for (int i = 0; i < NCONV; i++)
		pthread_join(th[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(th[NCONV], NULL);
	pthread_join(th[NCONV + 1], NULL);
	if (nchurn > 1)
		pthread_join(th[NCONV + 2], NULL);
	printf("# removes of what was out, adds of what was in (ENOENT/EEXIST): %lu\n", n_race);
	printf("# ops: convert %lu, batch %lu (failed %lu); remove %lu, add %lu, stats %lu, walk %lu, "
	       "repair %lu (failed %lu); listener add %lu, remove %lu, callbacks %lu\n",
	       n_conv, n_batch, n_conv_err, n_rm, n_add, n_stats, n_walk, n_repair, n_repair_err,
	       n_lis_add, n_lis_rm, n_lis_cb);
	tap_ok(!bad_errs, "every call during the run returned 0 (%d did not)", bad_errs);
	tap_ok(!lis_bad, "listeners heard exactly the changes (%d inconsistent)", lis_bad);
	for (int i = 0; i < nlog && i < 4; i++)
		printf("# log: %s\n", lastlog[i]);
	check_ctx(0, tname);
	check_ctx(1, "iommufd");
	/* And with every region back in every context. */
	for (int c = 0; c < NCTX; c++)
		for (int r = 0; r < NREG; r++)
			if (!in_ctx[c][r]) {
				err = cvm_dma_add_region(ctx[c], reg[r]);
				if (err)
					note_err("final add_region", err);
				else
					in_ctx[c][r] = 1;
			}
	check_ctx(0, tname);
	check_ctx(1, "iommufd");
	printf("# nlog %d\n", nlog);
	alarm(0);
	for (int c = 0; c < NCTX; c++)
		cvm_dma_close(ctx[c]);
	for (int r = 0; r < NREG; r++)
		cvm_region_destroy(reg[r]);
	guest_target_close(&t);
	printf("1..%d\n", tap_count);
	return tap_failed;
}
