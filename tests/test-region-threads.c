// SPDX-License-Identifier: MIT
/*
 * Threads: vCPU threads convert, query, add and remove listeners at once.
 * Run under ThreadSanitizer in CI.  Each conversion is atomic: a listener
 * registered throughout sees exactly the region's state at the end, and no
 * walk ever sees a half-applied batch, not even one a listener vetoes
 * (its two ranges are seen shared together or not at all).  Different
 * regions convert in parallel: their listeners run at the same time, each
 * on its caller's thread.  cvm_set_log() swaps the callback safely while
 * other threads log.
 */
#define CVM_MINI_TEST 1   /* Criterion cannot run under TSan: tests/mini-test.h */
#include "mini-test.h"
#include <pthread.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>

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

/* ---- a batch is seen whole or not at all ---- */

/* A batch of two ranges with a private gap between them, flipped by one
 * thread while others walk the window: a walk sees one consistent state,
 * so it must find no shared run, or exactly both.  Every third share is
 * vetoed on its second range, after the first is already shared in the
 * page map: the rollback must be as invisible as the conversion. */
#define PAIR_A	8
#define PAIR_B	32
#define PAIR_N	8
#define FLIPS	10000

static struct cvm_region *pr_region;
static int pr_done, pr_shares;

static int veto_third_b(void *o, uint64_t gpa, uint64_t len)
{
	(void)o;
	(void)len;
	if (gpa == BASE + PAIR_B * PG)
		return __atomic_add_fetch(&pr_shares, 1, __ATOMIC_RELAXED) % 3 ? 0 : -EAGAIN;
	return 0;
}

static const struct cvm_listener_ops veto_ops = { .sz = sizeof(veto_ops), .to_shared = veto_third_b };

struct runs_seen { int n; uint64_t gpa[4], len[4]; };

static int collect_runs(void *o, uint64_t gpa, uint64_t len)
{
	struct runs_seen *rs = o;

	if (rs->n < 4) {
		rs->gpa[rs->n] = gpa;
		rs->len[rs->n] = len;
	}
	rs->n++;
	return 0;
}

static void *pair_flipper(void *arg)
{
	struct cvm_range rs[2] = { { BASE + PAIR_A * PG, PAIR_N * PG },
				   { BASE + PAIR_B * PG, PAIR_N * PG } };

	(void)arg;
	for (int i = 0; i < FLIPS; i++) {
		int err = cvm_convert_batch(pr_region, rs, 2, i % 2 ? CVM_PRIVATE : CVM_SHARED, 0);

		cr_assert(err == 0 || (err == -EAGAIN && i % 2 == 0), "flip %d: %d", i, err);
	}
	__atomic_store_n(&pr_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *pair_reader(void *arg)
{
	long walks = 0, whole = 0;

	(void)arg;
	/* At least one walk, however late this thread starts. */
	do {
		struct runs_seen rs = { 0 };

		cr_assert_eq(cvm_region_for_each_run(pr_region, BASE, 64 * PG, CVM_SHARED,
						     collect_runs, &rs), 0);
		cr_assert(rs.n == 0 || (rs.n == 2 && rs.gpa[0] == BASE + PAIR_A * PG &&
					rs.len[0] == PAIR_N * PG &&
					rs.gpa[1] == BASE + PAIR_B * PG && rs.len[1] == PAIR_N * PG),
			  "walk %ld saw %d shared runs, the first at page %lld", walks, rs.n,
			  rs.n ? (long long)((rs.gpa[0] - BASE) / PG) : -1ll);
		whole += rs.n == 2;
		walks++;
	} while (!__atomic_load_n(&pr_done, __ATOMIC_ACQUIRE));
	return (void *)(intptr_t)whole;
}

Test(threads, a_walk_sees_a_batch_whole_or_not_at_all_even_when_it_is_vetoed)
{
	struct cvm_region_config cfg = { .sz = sizeof(cfg), .gpa = BASE, .length = 64 * PG };
	struct cvm_listener *l;
	pthread_t f, rd[2];

	cr_assert_eq(cvm_region_create(&cfg, &pr_region), 0);
	cr_assert_eq(cvm_listener_add(pr_region, &veto_ops, NULL, 0, &l), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&rd[i], NULL, pair_reader, NULL), 0);
	cr_assert_eq(pthread_create(&f, NULL, pair_flipper, NULL), 0);
	pthread_join(f, NULL);
	for (int i = 0; i < 2; i++)
		pthread_join(rd[i], NULL);
	/* The listener was asked for every share; a third were vetoed. */
	cr_assert_eq(__atomic_load_n(&pr_shares, __ATOMIC_RELAXED), FLIPS / 2);
	cr_assert_eq(cvm_region_query(pr_region, BASE, 64 * PG), CVM_PRIVATE);
	cvm_region_destroy(pr_region);
}

/* ---- different regions convert in parallel ---- */

/* Each region's listener waits for the other's to be running: if the two
 * conversions were serialised (one lock for all regions), the first would
 * wait for a listener that cannot start, until its time runs out. */
static int par_in[2];
static struct cvm_region *par_region[2];
static pthread_t par_thread[2];	/* the thread each listener ran on */

static int wait_for_other(void *o, uint64_t gpa, uint64_t len)
{
	int me = (int)(intptr_t)o;
	struct timespec t0, now, nap = { 0, 1000000 };

	(void)gpa;
	(void)len;
	par_thread[me] = pthread_self();
	__atomic_store_n(&par_in[me], 1, __ATOMIC_RELEASE);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!__atomic_load_n(&par_in[!me], __ATOMIC_ACQUIRE)) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > 30)
			return -ETIMEDOUT;
		nanosleep(&nap, NULL);
	}
	return 0;
}

static const struct cvm_listener_ops wait_ops = { .sz = sizeof(wait_ops), .to_shared = wait_for_other };

static void *share_all(void *arg)
{
	struct cvm_region *reg = arg;
	int i = reg == par_region[1], err;

	err = cvm_convert(reg, BASE, 64 * PG, CVM_SHARED, 0);
	/* Callbacks run on the thread that called the mutating function. */
	if (!err && !pthread_equal(par_thread[i], pthread_self()))
		err = -ESRCH;
	return (void *)(intptr_t)err;
}

Test(threads, two_regions_run_their_listeners_at_the_same_time_on_the_callers_threads)
{
	struct cvm_region_config cfg = { .sz = sizeof(cfg), .gpa = BASE, .length = 64 * PG };
	struct cvm_region **reg = par_region;
	struct cvm_listener *l[2];
	pthread_t t[2];
	void *ret;

	for (int i = 0; i < 2; i++) {
		cr_assert_eq(cvm_region_create(&cfg, &reg[i]), 0);
		cr_assert_eq(cvm_listener_add(reg[i], &wait_ops, (void *)(intptr_t)i, 0, &l[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, share_all, reg[i]), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], &ret);
		cr_assert_eq((intptr_t)ret, 0, "region %d's conversion: %d", i, (int)(intptr_t)ret);
		cr_assert_eq(cvm_region_query(reg[i], BASE, 64 * PG), CVM_SHARED);
		cvm_region_destroy(reg[i]);
	}
}

/* ---- cvm_set_log(3) while other threads log ---- */

/* Two threads make the library log (a refused config is one LOG_ERR line)
 * while this one swaps the callback between two and none.  cvm_set_log(3):
 * the callback is never run by two threads at once, and once
 * cvm_set_log() returns the previous one is not running and will not be
 * called again. */
struct log_cb_state { int retired, calls, late; };

static int log_running, log_overlap, log_stop;

static void counting_log(void *opaque, int prio, const char *msg)
{
	struct log_cb_state *st = opaque;

	(void)prio;
	(void)msg;
	if (__atomic_fetch_add(&log_running, 1, __ATOMIC_ACQ_REL))
		__atomic_add_fetch(&log_overlap, 1, __ATOMIC_RELAXED);
	if (__atomic_load_n(&st->retired, __ATOMIC_ACQUIRE))
		__atomic_add_fetch(&st->late, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->calls, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&log_running, 1, __ATOMIC_ACQ_REL);
}

static void *log_maker(void *arg)
{
	struct cvm_region_config bad = { .sz = sizeof(bad), .gpa = 1, .length = PG };
	struct cvm_region *reg;

	(void)arg;
	while (!__atomic_load_n(&log_stop, __ATOMIC_ACQUIRE))
		cr_assert_eq(cvm_region_create(&bad, &reg), -EINVAL);
	return NULL;
}

Test(threads, set_log_swaps_the_callback_safely_while_other_threads_log)
{
	struct log_cb_state st[2] = { { 1, 0, 0 }, { 1, 0, 0 } };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, log_maker, NULL), 0);
	for (int i = 0; i < 3000; i++) {
		struct log_cb_state *on = &st[i % 2], *off = &st[!(i % 2)];
		struct timespec nap = { 0, 20000 };

		__atomic_store_n(&on->retired, 0, __ATOMIC_RELEASE);
		if (i % 7 == 6)
			cvm_set_log(NULL, NULL, 0);
		else
			cvm_set_log(counting_log, on, LOG_ERR);
		/* From here on the other callback must never run. */
		__atomic_store_n(&off->retired, 1, __ATOMIC_RELEASE);
		if (i % 7 == 6)
			__atomic_store_n(&on->retired, 1, __ATOMIC_RELEASE);
		nanosleep(&nap, NULL);
	}
	/* Each callback is called at least once, however the threads were
	 * scheduled: the loggers are still running. */
	for (int i = 0; i < 2; i++) {
		int calls = __atomic_load_n(&st[i].calls, __ATOMIC_RELAXED);
		struct timespec nap = { 0, 1000000 };

		__atomic_store_n(&st[i].retired, 0, __ATOMIC_RELEASE);
		cvm_set_log(counting_log, &st[i], LOG_ERR);
		__atomic_store_n(&st[!i].retired, 1, __ATOMIC_RELEASE);
		for (int ms = 0; ms < 30000 &&
		     __atomic_load_n(&st[i].calls, __ATOMIC_RELAXED) == calls; ms++)
			nanosleep(&nap, NULL);
	}
	__atomic_store_n(&log_stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(log_overlap, 0, "two threads ran the callback at once");
	cr_assert_eq(st[0].late + st[1].late, 0, "a callback ran after cvm_set_log() replaced it");
	cr_assert(st[0].calls > 0 && st[1].calls > 0, "calls %d and %d", st[0].calls, st[1].calls);
}
