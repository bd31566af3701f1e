// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the trace parser (tools/trace.c) on arbitrary bytes and,
 * when a trace parses, its replay on the MODEL backend through
 * tools/replay.c, as cvmdma-replay does it: trace_load() on a path, then
 * replay_run() per policy.  Built and run by tests/check-fuzz.sh (clang
 * -fsanitize=fuzzer,address,undefined).
 *
 * The input is the trace file itself, so the traces of tests/data and tracegen
 * outputs are seeds as they are.  The model rules, entry limit and the
 * second policy are picked from a hash of the input.  Traces that would
 * take long to replay (many pages or conversions) are only parsed.
 *
 * Aborts on: a parser that returns 0 with an inconsistent struct trace or
 * -errno without a message; a replay whose mapped != shared check fails
 * (FAIL_VERIFY, or a later mismatch appended to a refusal).
 *
 * FUZZ_TRACE_VERBOSE=1 in the environment shows, for each input, the
 * parser's error or each policy's outcome: <fuzzer binary> FILE to triage.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "replay.h"
#include "trace.h"

#define MAX_PAGES  (1u << 20)   /* region pages, all regions */
#define MAX_WORK   (1u << 18)   /* pages mapped per-page: shared regions + every range */
#define MAX_BYTES  (UINT64_C(1) << 40)

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz-trace: %s\n", #c); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;
static char path[64];

/* The trace as a file: a memfd, read through /proc/self/fd like any path. */
static int put_file(const uint8_t *data, size_t size)
{
	if (memfd < 0) {
		memfd = memfd_create("fuzz-trace", 0);
		if (memfd < 0)
			return -1;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) || lseek(memfd, 0, SEEK_SET))
		return -1;
	while (size) {
		ssize_t n = write(memfd, data, size);

		if (n <= 0)
			return -1;
		data += n;
		size -= (size_t)n;
	}
	return 0;
}

static void check_trace(const struct trace *t)
{
	size_t k, sum = 0;

	CHECK(t->name && t->regions && t->nregions >= 1 && t->nregions <= 64);
	for (unsigned int i = 0; i < t->nregions; i++) {
		const struct trace_region *r = &t->regions[i];

		CHECK(r->page_size >= 4096 && !(r->page_size & (r->page_size - 1)));
		CHECK(r->size && !(r->size % r->page_size) && !(r->gpa % r->page_size));
		CHECK(r->gpa + r->size > r->gpa);
	}
	for (k = 0; k < t->nops; k++) {
		const struct trace_op *op = &t->ops[k];
		const struct trace_region *r;

		CHECK(op->region < t->nregions && op->nranges >= 1);
		CHECK(op->first == sum && op->first + op->nranges <= t->nranges);
		r = &t->regions[op->region];
		for (unsigned int j = 0; j < op->nranges; j++) {
			const struct cvm_range *rg = &t->ranges[op->first + j];

			CHECK(rg->length && rg->gpa >= r->gpa &&
			      rg->gpa - r->gpa < r->size && rg->length <= r->size - (rg->gpa - r->gpa));
			CHECK(!((rg->gpa | rg->length) & (r->page_size - 1)));
		}
		sum += op->nranges;
	}
	CHECK(sum == t->nranges);
}

/* Small enough to replay in a few milliseconds under every policy?  The work
 * is counted in pages: per-page maps each page of a region that starts
 * shared, and of every range converted. */
static int cheap(const struct trace *t)
{
	uint64_t pages = 0, bytes = 0, work = 0;

	for (unsigned int i = 0; i < t->nregions; i++) {
		const struct trace_region *r = &t->regions[i];

		pages += r->size / r->page_size;
		bytes += r->size;
		if (r->init == CVM_SHARED)
			work += r->size / r->page_size;
		if (pages > MAX_PAGES || bytes > MAX_BYTES || work > MAX_WORK)
			return 0;
	}
	for (size_t k = 0; k < t->nops; k++) {
		const struct trace_op *op = &t->ops[k];

		for (unsigned int j = 0; j < op->nranges; j++)
			work += t->ranges[op->first + j].length / t->regions[op->region].page_size;
		if (work > MAX_WORK)
			return 0;
	}
	return 1;
}

static uint64_t fnv(const uint8_t *d, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (n--)
		h = (h ^ *d++) * 0x100000001b3ull;
	return h;
}

static void replay_one(const struct trace *t, const struct replay_cfg *cfg, const char *pol)
{
	struct policy p;
	struct result *res = malloc(sizeof(*res));

	CHECK(res && !policy_parse(pol, &p));
	replay_run(t, cfg, &p, res);
	if (getenv("FUZZ_TRACE_VERBOSE"))
		fprintf(stderr, "fuzz-trace: policy %s rules %u limit %u flags %#x: stage %d %s\n",
			pol, cfg->rules, cfg->entry_limit, cfg->flags, res->stage, res->msg);
	if (res->stage == FAIL_VERIFY || strstr(res->msg, "; then ")) {
		fprintf(stderr, "fuzz-trace: policy %s rules %u limit %u flags %#x: %s\n", pol,
			cfg->rules, cfg->entry_limit, cfg->flags, res->msg);
		abort();
	}
	if (res->stage == FAIL_NONE)
		CHECK(res->lines_applied == t->nops);
	else
		CHECK(res->err < 0 && res->msg[0]);
	free(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const pols[] = {
		"per-page", "unbounded", "compact", "granule=64K", "granule=2M",
	};
	static const uint32_t limits[] = { 0, 0, 0, 16, UINT32_MAX };
	struct trace t;
	char err[512];
	uint64_t h;
	int r;

	if (put_file(data, size))
		abort();
	err[0] = '\0';
	r = trace_load(path, &t, err, sizeof(err));
	if (r) {
		if (getenv("FUZZ_TRACE_VERBOSE"))
			fprintf(stderr, "fuzz-trace: %d %s\n", r, err);
		CHECK(r < 0 && err[0]);
		CHECK(!t.name && !t.regions && !t.ops && !t.ranges);
		return 0;
	}
	check_trace(&t);
	if (getenv("FUZZ_TRACE_VERBOSE"))
		fprintf(stderr, "fuzz-trace: parsed, %s\n", cheap(&t) ? "replayed" : "too large to replay");
	if (cheap(&t)) {
		struct replay_cfg cfg = { .backend = CVM_BACKEND_MODEL };

		h = fnv(data, size);
		cfg.rules = (uint32_t)(h % 3);
		cfg.entry_limit = limits[h / 3 % 5];
		cfg.flags = h / 15 % 4 == 0 ? CVM_DMA_NO_CUT : 0;
		replay_one(&t, &cfg, "auto");
		replay_one(&t, &cfg, pols[h / 60 % 5]);
	}
	trace_free(&t);
	return 0;
}
