// SPDX-License-Identifier: MIT
/*
 * One DMA context serving two regions, converted by several threads at once
 * while another reads stats and mappings.  Run under ThreadSanitizer in CI.
 * At the end the mappings equal the union of the shared sets.
 */
#define CVM_MINI_TEST 1   /* Criterion cannot run under TSan: tests/mini-test.h */
#include "mini-test.h"
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include "backend.h"
#include "dma.h"
#include "oracle.h"

#define N 2048
#define OPS 2000
static const uint64_t base[2] = { 0x100000000ull, 0x200000000ull };
static struct cvm_region *reg[2];
static struct cvm_dma *dma;
static volatile int stop;
static long attached, want_attached;  /* contexts the attacher made, and to wait for */

/* OPS conversions, and on until the attacher made want_attached contexts:
 * its rounds overlap the conversions however the threads are scheduled. */
static void *converter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int op = 0; op < OPS || __atomic_load_n(&attached, __ATOMIC_ACQUIRE) <
				     __atomic_load_n(&want_attached, __ATOMIC_ACQUIRE); op++) {
		int w = rand_r(&seed) % 2;
		uint64_t s = rand_r(&seed) % (N - 32), len = 1 + rand_r(&seed) % 32;
		int to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;

		cr_assert_eq(cvm_convert(reg[w], base[w] + s * PG, len * PG, to, 0), 0);
	}
	return NULL;
}

static int count_fn(void *o, uint64_t iova, uint64_t len) { (void)iova; (void)len; ++*(long *)o; return 0; }

static void *reader(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		long n = 0;

		cr_assert_eq(cvm_dma_stats(dma, &st), 0);
		cr_assert_eq(cvm_dma_for_each_mapping(dma, count_fn, &n), 0);
	}
	return NULL;
}

struct cover { uint8_t *mapped; uint64_t base; };

static int cover_fn(void *o, uint64_t iova, uint64_t len)
{
	struct cover *c = o;

	if (iova >= c->base && iova < c->base + N * PG)
		memset(c->mapped + (iova - c->base) / PG, 1, len / PG);
	return 0;
}

/* d maps exactly the shared pages among the first npages of region i. */
static void check_region(struct cvm_dma *d, int i, uint64_t npages)
{
	struct cover c = { calloc(npages, 1), base[i] };

	cr_assert_eq(cvm_dma_for_each_mapping(d, cover_fn, &c), 0);
	assert_state(reg[i], base[i], npages, c.mapped);
	free(c.mapped);
}

/* The same for each region. */
static void check_context(struct cvm_dma *d, uint64_t npages)
{
	for (int i = 0; i < 2; i++)
		check_region(d, i, npages);
}

/* Regions 0 and 1: npages each, the first nshared of them shared. */
static void create_regions(uint64_t npages, uint64_t nshared)
{
	for (int i = 0; i < 2; i++) {
		struct cvm_region_config c = { .sz = sizeof(c), .gpa = base[i],
					       .length = npages * PG };

		c.hva = mmap(NULL, c.length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			     -1, 0);
		cr_assert_eq(cvm_region_create(&c, &reg[i]), 0);
		if (nshared)
			cr_assert_eq(cvm_convert(reg[i], base[i], nshared * PG, CVM_SHARED, 0), 0);
	}
}

Test(threads, one_context_two_regions_many_threads_mapped_equals_shared)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = CVM_MODEL_TYPE1 };
	pthread_t t[4];

	cr_assert_eq(cvm_dma_open(&dc, &dma), 0);
	create_regions(N, 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(cvm_dma_add_region(dma, reg[i]), 0);
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, converter, (void *)(uintptr_t)(i + 7));
	pthread_create(&t[3], NULL, reader, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(t[3], NULL);
	check_context(dma, N);
	cvm_dma_close(dma);
	for (int i = 0; i < 2; i++)
		cvm_region_destroy(reg[i]);
}

/* ---- queries while regions come and go ---- */

static void *adder(void *arg)
{
	(void)arg;
	for (int i = 0; i < 500; i++) {
		cr_assert_eq(cvm_dma_add_region(dma, reg[1]), 0);
		cr_assert_eq(cvm_dma_remove_region(dma, reg[1]), 0);
	}
	return NULL;
}

static void *info_reader(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		struct cvm_dma_info info = { .sz = sizeof(info) };

		cr_assert_eq(cvm_dma_info(dma, &info), 0);
		cr_assert_eq(info.iova_pgsizes & 4096, 4096);
	}
	return NULL;
}

/* cvm_dma_info(), cvm_dma_stats() and cvm_dma_for_each_mapping() are
 * MT-Safe, also while an add asks the backend again what it can do (the
 * model rewrites its page sizes then, as the kernels' backends do). */
Test(threads, queries_run_safely_while_regions_are_added_and_removed)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = CVM_MODEL_CUT };
	pthread_t t[3];

	cr_assert_eq(cvm_dma_open(&dc, &dma), 0);
	create_regions(N, 64);
	cr_assert_eq(cvm_dma_add_region(dma, reg[0]), 0);
	__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
	pthread_create(&t[0], NULL, adder, NULL);
	pthread_create(&t[1], NULL, info_reader, NULL);
	pthread_create(&t[2], NULL, reader, NULL);
	pthread_join(t[0], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(t[1], NULL);
	pthread_join(t[2], NULL);
	cr_assert_eq(cvm_dma_add_region(dma, reg[1]), 0);
	check_context(dma, N);
	cvm_dma_close(dma);
	for (int i = 0; i < 2; i++)
		cvm_region_destroy(reg[i]);
}

/* ---- contexts come and go while the regions convert ---- */

static void *attacher(void *arg)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = (uint32_t)(uintptr_t)arg };
	long n;

	for (;;) {
		cr_assert_eq(cvm_dma_open(&dc, &dma), 0);
		cr_assert_eq(cvm_dma_add_region(dma, reg[0]), 0);
		cr_assert_eq(cvm_dma_add_region(dma, reg[1]), 0);
		n = __atomic_add_fetch(&attached, 1, __ATOMIC_RELEASE);
		if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
			return NULL;       /* the last context stays, serving both */
		/* One region leaves by itself, the other with the context. */
		cr_assert_eq(cvm_dma_remove_region(dma, reg[n % 2]), 0);
		cvm_dma_close(dma);
	}
}

/*
 * A device is plugged and unplugged while the guest converts: one thread
 * opens a context, adds both regions (a replay each), removes one and
 * closes the context, over and over, while three threads convert; they go
 * on until it did so ATTACH_ROUNDS times, however they are scheduled.
 * Every call succeeds, and the context left at the end, which served both
 * regions through the last conversions, maps exactly the shared pages.
 */
#define ATTACH_ROUNDS 50

Test(threads, contexts_added_and_removed_while_regions_convert_stay_exact)
{
	static const uint32_t rules[] = { CVM_MODEL_TYPE1, CVM_MODEL_CUT };

	for (size_t k = 0; k < sizeof(rules) / sizeof(rules[0]); k++) {
		pthread_t t[4];

		create_regions(N, 0);
		__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&attached, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&want_attached, ATTACH_ROUNDS, __ATOMIC_RELEASE);
		pthread_create(&t[3], NULL, attacher, (void *)(uintptr_t)rules[k]);
		for (int i = 0; i < 3; i++)
			pthread_create(&t[i], NULL, converter, (void *)(uintptr_t)(i + 11 + 3 * k));
		for (int i = 0; i < 3; i++)
			pthread_join(t[i], NULL);
		__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
		pthread_join(t[3], NULL);
		cr_assert(attached > ATTACH_ROUNDS, "only %ld contexts came and went", attached);
		printf("# %s rules: %ld contexts\n", k ? "cut" : "type1", attached);
		check_context(dma, N);
		cvm_dma_close(dma);
		for (int i = 0; i < 2; i++)
			cvm_region_destroy(reg[i]);
	}
}

/* ---- repairs on one thread while two others convert ---- */

#define ROUNDS 300
static struct cvm_dma *dmas[2];
static volatile int repairing;

/* 1-3 random runs of 1-16 pages of region w, all to one random state. */
static int random_batch(int w, unsigned *seed)
{
	struct cvm_range rs[3];
	size_t n = 1 + (size_t)(rand_r(seed) % 3);
	int to = rand_r(seed) % 2 ? CVM_SHARED : CVM_PRIVATE;

	for (size_t k = 0; k < n; k++)
		rs[k] = (struct cvm_range){ base[w] + (rand_r(seed) % (N - 16)) * PG,
					    (1 + rand_r(seed) % 16) * PG };
	return cvm_convert_batch(reg[w], rs, n, to, 0);
}

/* One region per thread: failures are expected, and a double failure
 * leaves repairs that the other thread's calls or the repairer run. */
static void *failing_converter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	int w = (int)((uintptr_t)arg % 2);

	for (int op = 0; op < 12; op++)
		(void)random_batch(w, &seed);
	return NULL;
}

static void *repairer(void *arg)
{
	(void)arg;
	while (__atomic_load_n(&repairing, __ATOMIC_ACQUIRE))
		for (int i = 0; i < 2; i++) {
			int err = cvm_dma_repair(dmas[i]);

			cr_assert(err == 0 || err == -EIO || err == -EBUSY || err == -EEXIST,
				  "cvm_dma_repair: %d", err);
		}
	return NULL;
}

#define NR (N + 8)      /* pages [N, N + 4): the double failure of each round */

static uint64_t pending(struct cvm_dma *d)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	cr_assert_eq(cvm_dma_stats(d, &st), 0);
	return st.pending_repairs;
}

/*
 * Two contexts (type1 and iommufd rules) serve two regions.  Each round
 * starts with a repair pending: a share of pages [N, N + 4) that the
 * second context fails and whose undo the first context's kernel refuses,
 * so their mapping stays on private pages.  Then both kernels fail a call
 * at random while one thread per region converts (pages below N) and
 * another calls cvm_dma_repair() in a loop: repairs of one region run while
 * the other region converts, without its lock.  At the end of every round,
 * a last repair leaves nothing pending and each context maps exactly the
 * shared pages.
 */
Test(threads, repairs_run_safely_beside_conversions_of_other_regions)
{
	const uint32_t rules[2] = { CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD };
	unsigned seed = 5;

	for (int i = 0; i < 2; i++) {
		struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL,
					     .fd = -1, .model_rules = rules[i] };

		cr_assert_eq(cvm_dma_open(&dc, &dmas[i]), 0);
	}
	create_regions(NR, 0);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(cvm_dma_add_region(dmas[0], reg[i]), 0);
		cr_assert_eq(cvm_dma_add_region(dmas[1], reg[i]), 0);
	}
	for (int round = 0; round < ROUNDS; round++) {
		int w = round % 2;
		pthread_t t[3];

		/* Set while no thread runs: the model's counter is not locked. */
		cvm_model_inject(cvm_dma_backend(dmas[1]), 1, -EIO);
		cvm_model_inject(cvm_dma_backend(dmas[0]), 2, -EBUSY);
		cr_assert_eq(cvm_convert(reg[w], base[w] + N * PG, 4 * PG, CVM_SHARED, 0), -EIO);
		cr_assert_eq(pending(dmas[0]), 1);
		cvm_model_inject(cvm_dma_backend(dmas[0]), 1 + rand_r(&seed) % 4, -EIO);
		cvm_model_inject(cvm_dma_backend(dmas[1]), 1 + rand_r(&seed) % 4, -EBUSY);
		__atomic_store_n(&repairing, 1, __ATOMIC_RELEASE);
		pthread_create(&t[2], NULL, repairer, NULL);
		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, failing_converter,
				       (void *)(uintptr_t)(2 * round + i + 100));
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
		__atomic_store_n(&repairing, 0, __ATOMIC_RELEASE);
		pthread_join(t[2], NULL);
		for (int i = 0; i < 2; i++) {
			cvm_model_inject(cvm_dma_backend(dmas[i]), 0, 0);
			cr_assert_eq(cvm_dma_repair(dmas[i]), 0);
			cr_assert_eq(pending(dmas[i]), 0);
			check_context(dmas[i], NR);
		}
	}
	for (int i = 0; i < 2; i++)
		cvm_dma_close(dmas[i]);
	for (int i = 0; i < 2; i++)
		cvm_region_destroy(reg[i]);
}

/* ---- lifetimes: a context and a region let go of each other at once ---- */

#define RACES 3000

struct race {
	struct cvm_dma *d;
	struct cvm_region *r;
	pthread_barrier_t *go;
	int ret;
};

static void race_setup(struct race *x, void *hva, pthread_barrier_t *go)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = CVM_MODEL_CUT };
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = base[0], .length = 64 * PG,
					.hva = hva };

	x->go = go;
	cr_assert_eq(cvm_dma_open(&dc, &x->d), 0);
	cr_assert_eq(cvm_region_create(&rc, &x->r), 0);
	cr_assert_eq(cvm_convert(x->r, base[0], 8 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(x->d, x->r), 0);
}

static void *do_close(void *o)
{
	struct race *x = o;

	pthread_barrier_wait(x->go);
	cvm_dma_close(x->d);
	return NULL;
}

static void *do_destroy(void *o)
{
	struct race *x = o;

	pthread_barrier_wait(x->go);
	cvm_region_destroy(x->r);
	return NULL;
}

static void *do_remove(void *o)
{
	struct race *x = o;

	pthread_barrier_wait(x->go);
	x->ret = cvm_dma_remove_region(x->d, x->r);
	return NULL;
}

/* Each owns its own handle: the man pages make the pair MT-Safe. */
Test(threads, close_and_destroy_of_a_region_in_it_race_safely)
{
	void *hva = mmap(NULL, 64 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);
	pthread_barrier_t go;

	pthread_barrier_init(&go, NULL, 2);
	for (int i = 0; i < RACES; i++) {
		struct race x;
		pthread_t t[2];

		race_setup(&x, hva, &go);
		pthread_create(&t[0], NULL, do_close, &x);
		pthread_create(&t[1], NULL, do_destroy, &x);
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
	}
	pthread_barrier_destroy(&go);
	munmap(hva, 64 * PG);
}

/* Two removals of one region: one does it, the other finds it gone. */
Test(threads, two_removals_of_one_region_one_succeeds_one_finds_nothing)
{
	void *hva = mmap(NULL, 64 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);
	pthread_barrier_t go;

	pthread_barrier_init(&go, NULL, 2);
	for (int i = 0; i < RACES; i++) {
		struct race x, y;
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		pthread_t t[2];

		race_setup(&x, hva, &go);
		y = x;
		pthread_create(&t[0], NULL, do_remove, &x);
		pthread_create(&t[1], NULL, do_remove, &y);
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
		cr_assert(x.ret == 0 ? y.ret == -ENOENT : x.ret == -ENOENT && y.ret == 0,
			  "removals returned %d and %d", x.ret, y.ret);
		cr_assert_eq(cvm_dma_stats(x.d, &st), 0);
		cr_assert_eq(st.mappings, 0);
		cvm_dma_close(x.d);
		cvm_region_destroy(x.r);
	}
	pthread_barrier_destroy(&go);
	munmap(hva, 64 * PG);
}

/* ---- an add that fails after mapping part of the region ---- */

#define SPARSE 4096                     /* pages; every other one shared */
static int page_fn(void *o, uint64_t iova, uint64_t len)
{
	uint64_t p = *(uint64_t *)o;

	return p >= iova && p < iova + len;
}

/* Pages of the first batch of runs go private and back while the adds
 * fail: once the conversion returns, a context the region is not in must
 * not map the page (the failed add's cleanup runs under the region lock). */
static void *flipper(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		uint64_t gpa = base[0] + 2 * (rand_r(&seed) % 512) * PG;

		cr_assert_eq(cvm_convert(reg[0], gpa, PG, CVM_PRIVATE, 0), 0);
		cr_assert_eq(cvm_dma_for_each_mapping(dma, page_fn, &gpa), 0,
			     "private page 0x%llx mapped by a context the region is not in",
			     (unsigned long long)gpa);
		cr_assert_eq(cvm_convert(reg[0], gpa, PG, CVM_SHARED, 0), 0);
	}
	return NULL;
}

/* Widens the window a cleanup outside the region lock would leave: a log
 * line written under the context's lock (an add refused for its IOVA
 * window) holds that lock a moment, while the flipper converts. */
static struct cvm_region *clash;
static void slow_log(void *opaque, int prio, const char *msg)
{
	(void)opaque;
	(void)prio;
	(void)msg;
	usleep(200);
}

static void *lock_holder(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
		cr_assert_eq(cvm_dma_add_region(dma, clash), -EBUSY);
	return NULL;
}

/* A region of 2,048 runs against a limit of 1,500: the add is refused
 * before it maps anything; with room, a kernel failure in the second batch
 * of runs makes it unmap the first before the region's lock is let go. */
Test(threads, an_add_that_fails_part_way_never_shows_its_mappings)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = CVM_MODEL_TYPE1, .model_entry_limit = 1500 };
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = base[0], .length = SPARSE * PG };
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	pthread_t t, h;

	c.hva = mmap(NULL, c.length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		     -1, 0);
	cr_assert_eq(cvm_region_create(&c, &reg[0]), 0);
	c.gpa = base[1];                /* in every context, nothing shared */
	cr_assert_eq(cvm_region_create(&c, &reg[1]), 0);
	c.gpa = base[1] + c.length;
	c.flags = CVM_REGION_IOVA;
	c.iova = base[1];               /* reg[1]'s IOVA window: refused */
	cr_assert_eq(cvm_region_create(&c, &clash), 0);
	cvm_set_log(slow_log, NULL, LOG_ERR);
	for (uint64_t p = 0; p < SPARSE; p += 2)
		cr_assert_eq(cvm_convert(reg[0], base[0] + p * PG, PG, CVM_SHARED, 0), 0);
	for (int limited = 1; limited >= 0; limited--) {
		dc.model_entry_limit = limited ? 1500 : 0;
		cr_assert_eq(cvm_dma_open(&dc, &dma), 0);
		cr_assert_eq(cvm_dma_add_region(dma, reg[1]), 0);
		__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
		pthread_create(&t, NULL, flipper, (void *)(uintptr_t)(7 + limited));
		pthread_create(&h, NULL, lock_holder, NULL);
		for (int i = 0; i < 100; i++) {
			if (!limited)   /* the 1,025th map: the second batch */
				cvm_model_inject(cvm_dma_backend(dma), 1025, -EIO);
			cr_assert_eq(cvm_dma_add_region(dma, reg[0]), limited ? -ENOSPC : -EIO);
			cr_assert_eq(cvm_dma_stats(dma, &st), 0);
			cr_assert_eq(st.map_calls, limited ? 0 : 1025 * (uint64_t)(i + 1),
				     "a refused add maps nothing");
		}
		__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
		pthread_join(t, NULL);
		pthread_join(h, NULL);
		cr_assert_eq(cvm_dma_stats(dma, &st), 0);
		cr_assert_eq(st.mappings, 0);
		cvm_dma_close(dma);
	}
	cvm_set_log(NULL, NULL, 0);
	cvm_region_destroy(clash);
	cvm_region_destroy(reg[1]);
	cvm_region_destroy(reg[0]);
	munmap(c.hva, c.length);
}

/* ---- whole lifecycles while the kernel fails at random ---- */

#define LIFE_ROUNDS 60
static const uint64_t base2 = 0x300000000ull;  /* the region destroyed mid-round */
static struct cvm_region *doomed;
static struct cvm_dma *life[2];                /* [0] closed mid-round */
static const struct cvm_backend_ops *real_ops[2];
static struct cvm_backend_ops failing_ops[2];
static uint64_t fail_seq;
static unsigned fail_ppm;                      /* 0 while setting up and checking */

/* About fail_ppm in a million kernel calls fail, from any thread. */
static bool kernel_fails(void)
{
	uint64_t x = __atomic_add_fetch(&fail_seq, 0x9e3779b97f4a7c15ull, __ATOMIC_RELAXED);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return x % 1000000 < __atomic_load_n(&fail_ppm, __ATOMIC_RELAXED);
}

static const struct cvm_backend_ops *real(const struct cvm_be *be)
{
	return real_ops[be->ops == &failing_ops[1]];
}

static int f_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	return kernel_fails() ? -EIO : real(be)->map(be, iova, len, vaddr);
}

static int f_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	*done = 0;
	return kernel_fails() ? -EBUSY : real(be)->unmap(be, iova, len, done);
}

static int f_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	*done = 0;
	return kernel_fails() ? -EBUSY : real(be)->cut(be, iova, len, done);
}

static void *life_converter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	int w = (int)((uintptr_t)arg % 2);

	for (int op = 0; op < 300 || !__atomic_load_n(&stop, __ATOMIC_ACQUIRE); op++) {
		int err = random_batch(w, &seed);

		cr_assert(err == 0 || err == -EIO || err == -EBUSY || err == -EEXIST ||
			  err == -ENOSPC, "cvm_convert_batch: %d", err);
	}
	return NULL;
}

/* Region 1 leaves context 1 and comes back, over and over. */
static void *life_readder(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		int err = cvm_dma_remove_region(life[1], reg[1]);

		cr_assert(err == 0 || err == -EBUSY || err == -ENOENT, "remove: %d", err);
		err = cvm_dma_add_region(life[1], reg[1]);
		cr_assert(err == 0 || err == -EIO || err == -EBUSY || err == -EEXIST ||
			  err == -ENOSPC, "add: %d", err);
	}
	return NULL;
}

static void *life_repairer(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		long n = 0;

		(void)cvm_dma_repair(life[1]);
		cr_assert_eq(cvm_dma_stats(life[1], &st), 0);
		cr_assert_eq(cvm_dma_for_each_mapping(life[1], count_fn, &n), 0);
	}
	return NULL;
}

/* Context 0 closes, and region 2 is destroyed after some conversions,
 * each at a moment of its own (no result depends on when). */
static void *life_closer(void *arg)
{
	usleep((useconds_t)(uintptr_t)arg);
	cvm_dma_close(life[0]);
	return NULL;
}

static void *life_destroyer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (unsigned i = 0; i <= seed % 50; i++)
		(void)cvm_convert(doomed, base2 + (rand_r(&seed) % (N - 16)) * PG, 8 * PG,
				  rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE, 0);
	cvm_region_destroy(doomed);
	return NULL;
}

static bool in_1;       /* region 1 is in context 1 at the end */

/* Mappings of no region the context serves at the end. */
static int outside_fn(void *o, uint64_t iova, uint64_t len)
{
	(void)len;
	if (!(iova >= base[0] && iova < base[0] + N * PG) &&
	    !(in_1 && iova >= base[1] && iova < base[1] + N * PG))
		++*(long *)o;
	return 0;
}

/*
 * Two contexts serve three regions while about 2% of kernel calls fail:
 * two threads convert regions 0 and 1, one takes region 1 out of context 1
 * and puts it back, one repairs and reads context 1, context 0 is closed
 * and region 2 destroyed at random moments (refused unmaps included).
 * Once the kernel stops failing, one repair leaves nothing pending, context
 * 1 maps exactly the shared pages of regions 0 and 1 (or of region 0 and
 * nothing of region 1, when its runs no longer fit the entry limit), and
 * nothing of the destroyed region.
 */
Test(threads, lifecycles_while_the_kernel_fails_at_random_end_exact)
{
	void *hva = mmap(NULL, N * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);
	unsigned seed = 77;

	for (int round = 0; round < LIFE_ROUNDS; round++) {
		const uint64_t gpa[3] = { base[0], base[1], base2 };
		struct cvm_region *r[3];
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		long outside = 0;
		pthread_t t[6];
		int err;

		__atomic_store_n(&fail_ppm, 0, __ATOMIC_RELAXED);
		for (int i = 0; i < 2; i++) {
			struct cvm_dma_config dc = {
				.sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				.model_rules = (i + round) % 2 ? CVM_MODEL_CUT : CVM_MODEL_TYPE1,
				.flags = round % 3 ? 0 : CVM_DMA_COMPACT,
				.model_entry_limit = round % 3 ? 0 : 300,
			};
			struct cvm_be *be;

			cr_assert_eq(cvm_dma_open(&dc, &life[i]), 0);
			be = cvm_dma_backend(life[i]);
			real_ops[i] = be->ops;
			failing_ops[i] = *be->ops;
			failing_ops[i].map = f_map;
			failing_ops[i].unmap = f_unmap;
			failing_ops[i].cut = be->ops->cut ? f_cut : NULL;
			be->ops = &failing_ops[i];
		}
		for (int i = 0; i < 3; i++) {
			struct cvm_region_config c = { .sz = sizeof(c), .gpa = gpa[i],
						       .length = N * PG, .hva = hva };

			cr_assert_eq(cvm_region_create(&c, &r[i]), 0);
			cr_assert_eq(cvm_convert(r[i], gpa[i] + 8 * PG, 64 * PG, CVM_SHARED, 0), 0);
			cr_assert_eq(cvm_dma_add_region(life[0], r[i]), 0);
			cr_assert_eq(cvm_dma_add_region(life[1], r[i]), 0);
		}
		reg[0] = r[0];
		reg[1] = r[1];
		doomed = r[2];
		__atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&fail_ppm, 20000, __ATOMIC_RELAXED);
		pthread_create(&t[0], NULL, life_converter, (void *)(uintptr_t)(10 * round));
		pthread_create(&t[1], NULL, life_converter, (void *)(uintptr_t)(10 * round + 1));
		pthread_create(&t[2], NULL, life_readder, NULL);
		pthread_create(&t[3], NULL, life_repairer, NULL);
		pthread_create(&t[4], NULL, life_closer, (void *)(uintptr_t)(rand_r(&seed) % 20000));
		pthread_create(&t[5], NULL, life_destroyer, (void *)(uintptr_t)rand_r(&seed));
		pthread_join(t[4], NULL);
		pthread_join(t[5], NULL);
		__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		__atomic_store_n(&fail_ppm, 0, __ATOMIC_RELAXED);
		/* Region 1 back in, unless its runs no longer fit the limit
		 * (then the add changed nothing: none of it may be mapped). */
		err = cvm_dma_add_region(life[1], reg[1]);
		cr_assert(err == 0 || err == -EEXIST || err == -ENOSPC, "add: %d", err);
		in_1 = err != -ENOSPC;
		err = cvm_dma_repair(life[1]);
		cr_assert_eq(err, 0, "round %d: repair %d", round, err);
		cr_assert_eq(cvm_dma_stats(life[1], &st), 0);
		cr_assert_eq(st.pending_repairs, 0, "round %d", round);
		check_region(life[1], 0, N);
		if (in_1)
			check_region(life[1], 1, N);
		cr_assert_eq(cvm_dma_for_each_mapping(life[1], outside_fn, &outside), 0);
		cr_assert_eq(outside, 0, "round %d: %ld mappings of regions gone", round, outside);
		cvm_dma_close(life[1]);
		cvm_region_destroy(reg[0]);
		cvm_region_destroy(reg[1]);
	}
	munmap(hva, N * PG);
}
