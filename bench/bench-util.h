/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the benchmarks (not part of the library): clocks,
 * a seeded PRNG, percentiles, progress lines and the result format that
 * scripts/bench-report turns into doc/performance.md.
 *
 * Result format: tab-separated lines on stdout.  "#cols TABLE COL..." names
 * the columns of TABLE once; each row is "TABLE<TAB>VALUE<TAB>...".  Other
 * lines starting with '#' are comments.  Everything for humans goes to
 * stderr, so stdout can be kept as the run's raw record.
 */
#ifndef CVM_BENCH_UTIL_H
#define CVM_BENCH_UTIL_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)
#define PAGE (4 * KiB)

static inline uint64_t ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

/* Wall clock for single operations: CLOCK_MONOTONIC is read in the vDSO. */
static inline uint64_t wall_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return ts_ns(&t);
}

/* CPU time of this thread: what the library spent, not what others did. */
static inline uint64_t cpu_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return ts_ns(&t);
}

/* splitmix64: seeded, the same sequence everywhere (runs are reproducible). */
struct bench_rng { uint64_t s; };

static inline uint64_t rng_next(struct bench_rng *r)
{
	uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform in [0, n); the modulo bias is below 2^-40 for the n we use. */
static inline uint64_t rng_below(struct bench_rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The q-quantile (0..1) of v[0..n) by nearest rank: the ceil(q n)-th
 * smallest value (the lower middle one of an even count for the median,
 * the 99th of 100 for p99); sorts v.
 */
static inline uint64_t quantile(uint64_t *v, size_t n, double q)
{
	double r = q * (double)n;
	size_t k = (size_t)r;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	if ((double)k < r)
		k++;                    /* ceil(q n) */
	k = k ? k - 1 : 0;
	return v[k < n ? k : n - 1];
}

static inline void __attribute__((format(printf, 1, 2))) progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static inline void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/*
 * Address space for a region the MODEL backend "maps": it never touches the
 * memory, so reserve it without backing (a 1 TiB guest costs nothing).
 */
static inline void *reserve_hva(uint64_t len)
{
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap of %" PRIu64 " bytes (PROT_NONE, MAP_NORESERVE) failed", len);
	return p;
}

/* "ENOSPC" for -ENOSPC, "ok" for 0: the tables name errors, not numbers. */
static inline const char *err_name(int err)
{
	const char *n = err ? strerrorname_np(-err) : "ok";

	return n ? n : "E?";
}

#endif
