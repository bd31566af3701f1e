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

#include "oracle.h"

#define N 2048
#define OPS 2000
static const uint64_t base[2] = { 0x100000000ull, 0x200000000ull };
static struct cvm_region *reg[2];
static struct cvm_dma *dma;
static volatile int stop;

static void *converter(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int op = 0; op < OPS; op++) {
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

Test(threads, one_context_two_regions_many_threads_mapped_equals_shared)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = CVM_MODEL_TYPE1 };
	pthread_t t[4];

	cr_assert_eq(cvm_dma_open(&dc, &dma), 0);
	for (int i = 0; i < 2; i++) {
		struct cvm_region_config c = { .sz = sizeof(c), .gpa = base[i], .length = N * PG };

		c.hva = mmap(NULL, c.length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			     -1, 0);
		cr_assert_eq(cvm_region_create(&c, &reg[i]), 0);
		cr_assert_eq(cvm_dma_add_region(dma, reg[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, converter, (void *)(uintptr_t)(i + 7));
	pthread_create(&t[3], NULL, reader, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(t[3], NULL);
	for (int i = 0; i < 2; i++) {
		struct cover c = { calloc(N, 1), base[i] };

		cr_assert_eq(cvm_dma_for_each_mapping(dma, cover_fn, &c), 0);
		assert_state(reg[i], base[i], N, c.mapped);
		free(c.mapped);
	}
	cvm_dma_close(dma);
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
