// SPDX-License-Identifier: MIT
/*
 * One DMA context serving two regions, converted by several threads at once
 * while another reads stats and mappings.  Run under ThreadSanitizer in CI.
 * At the end the mappings equal the union of the shared sets.
 */
#include <criterion/criterion.h>
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
