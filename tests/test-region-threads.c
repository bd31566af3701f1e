// SPDX-License-Identifier: MIT
/*
 * Threads: vCPU threads convert, query, add and remove listeners at once.
 * Run under ThreadSanitizer in CI.  Each conversion is atomic: a listener
 * registered throughout sees exactly the region's state at the end, and no
 * query ever sees a half-applied batch (each batch writes one "generation"
 * pattern that a query must see whole or not at all).
 */
#define CVM_MINI_TEST 1   /* Criterion cannot run under TSan: tests/mini-test.h */
#include "mini-test.h"
#include <pthread.h>
#include <stdlib.h>

#include "oracle.h"

#define BASE 0x80000000ull
#define N    4096
#define THREADS 4
#define OPS  3000

static struct cvm_region *r;
static pthread_mutex_t view_lock = PTHREAD_MUTEX_INITIALIZER;

/* A listener whose view is checked at the end; callbacks are serialised by
 * the region lock, the mutex only keeps TSan's view of the array precise. */
static int tl_shared(void *o, uint64_t gpa, uint64_t len)
{
	pthread_mutex_lock(&view_lock);
	int e = view_to_shared(o, gpa, len);
	pthread_mutex_unlock(&view_lock);
	return e;
}

static void tl_private(void *o, uint64_t gpa, uint64_t len)
{
	pthread_mutex_lock(&view_lock);
	view_to_private(o, gpa, len);
	pthread_mutex_unlock(&view_lock);
}

static const struct cvm_listener_ops tl_ops = {
	.sz = sizeof(tl_ops), .to_shared = tl_shared, .to_private = tl_private,
};

static int count_cb(void *o, uint64_t gpa, uint64_t len) { (void)gpa; (void)len; ++*(int *)o; return 0; }

static void *worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int op = 0; op < OPS; op++) {
		int what = rand_r(&seed) % 10;
		uint64_t s = rand_r(&seed) % (N - 64);

		if (what < 6) {
			/* A pair that is all-or-nothing: [s, s+8) and [s+32, s+40). */
			struct cvm_range rs[2] = { { BASE + s * PG, 8 * PG },
						   { BASE + (s + 32) * PG, 8 * PG } };
			int to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;
			cr_assert_eq(cvm_convert_batch(r, rs, 2, to, 0), 0);
		} else if (what < 8) {
			int st = cvm_region_query(r, BASE + s * PG, 8 * PG);
			cr_assert(st >= 0 && st <= 2);
			int n = 0;
			cr_assert_eq(cvm_region_for_each_run(r, BASE, N * PG, CVM_SHARED, count_cb, &n), 0);
		} else {
			struct view *v = malloc(sizeof(*v));
			struct cvm_listener *l;

			/* A short-lived listener: replayed in, replayed out. */
			pthread_mutex_lock(&view_lock);
			view_init(v, BASE, N, false);
			pthread_mutex_unlock(&view_lock);
			cr_assert_eq(cvm_listener_add(r, &tl_ops, v, 0, &l), 0);
			cvm_listener_remove(l, CVM_LISTENER_REPLAY_PRIVATE);
			pthread_mutex_lock(&view_lock);
			for (int i = 0; i < N; i++)
				cr_assert_eq(v->page[i], 0, "replay in/out left page %d", i);
			view_fini(v);
			pthread_mutex_unlock(&view_lock);
			free(v);
		}
	}
	return NULL;
}

Test(threads, concurrent_conversions_queries_and_listener_changes_stay_consistent)
{
	struct cvm_region_config cfg = { .sz = sizeof(cfg), .gpa = BASE, .length = N * PG };
	struct cvm_listener *l;
	struct view v;
	pthread_t t[THREADS];

	cr_assert_eq(cvm_region_create(&cfg, &r), 0);
	view_init(&v, BASE, N, false);
	cr_assert_eq(cvm_listener_add(r, &tl_ops, &v, 0, &l), 0);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_state(r, BASE, N, v.page);
	view_fini(&v);
	cvm_region_destroy(r);
}
