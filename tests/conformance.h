/* SPDX-License-Identifier: MIT */
/*
 * The kernel conformance suite: one test per kernel fact the library relies
 * on (doc/kernel-facts.md §1-§3), run against the model backend in make check
 * (tests/conf-model.c) and against the real kernels inside the test guest
 * (tests/vm/conf-guest.c).  Plain C printing TAP lines, no Criterion: it
 * must run in a tiny guest.
 */
#ifndef CVM_TESTS_CONFORMANCE_H
#define CVM_TESTS_CONFORMANCE_H

#include <stdbool.h>
#include <stdint.h>

struct cvm_be;

/* A backend under test and what its kernel is expected to answer. */
struct conf_target {
	const char *name;
	/* ops->unmap of 4 KiB inside a 2 MiB mapping: -EINVAL type1, -ENOENT
	 * iommufd and compat-v2, 0 = the unmap cuts (compat-v1, model-cut). */
	int partial_unmap_err;
	/* ops->unmap of a range with no mapping: 0 type1/compat, -ENOENT iommufd. */
	int unmap_nothing_err;
	bool has_entry_limit;	/* type1's dma_entry_limit applies */
	bool expect_cut;	/* be->can_cut and a working ops->cut */
	bool real;		/* a real kernel (diagnostics only) */
	/* A fresh, empty backend; entry_limit 0 = the kernel's default.  The
	 * suite destroys it with cvm_backend_destroy(). */
	int (*open)(void *ctx, uint32_t entry_limit, struct cvm_be **out);
	void *ctx;
	/* Optional: the mappings the kernel holds (the model can tell), so
	 * the suite checks that each test leaves the backend empty.  NULL:
	 * the target cannot tell. */
	uint64_t (*count)(struct cvm_be *be);
};

/*
 * Runs every test against t, each on a fresh backend from t->open that it
 * leaves empty.  Prints "ok N - <target>: <fact>" (or "not ok", or a SKIP)
 * per test, numbering from ++*test_no, and "# " diagnostics; prints no
 * plan.  Returns the number of failed tests.
 */
int conformance_run(const struct conf_target *t, int *test_no);

#endif
