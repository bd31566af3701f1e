/* SPDX-License-Identifier: MIT */
/*
 * Under AddressSanitizer, each Criterion test ends with a leak check of its
 * own, so a leak fails the test that made it.  LeakSanitizer's usual check
 * runs when a process exits, and Criterion's worker exits only after it has
 * sent the test's result: a leak reported there failed nothing (and the
 * suppression of Criterion's own leak hid every test's, see lsan.supp).
 *
 * In TAP mode (make check) Criterion drops a worker's stderr, which would
 * lose AddressSanitizer's reports of a test (a leak's, and a use after
 * free's that crashed it): there they go to sanitizer-report.PID in the
 * directory the test ran in, and a leak's failure names the file.
 * UBSan's runtime keeps its own report path: for its reports, run the
 * program on its own (without CRITERION_OUTPUTS).
 *
 * Not covered: what a .fini leaks (it runs after the check), and
 * ParameterizedTest() and Theory(), which keep Criterion's own macros
 * (the tree uses neither).
 *
 * Include after <criterion/criterion.h> (or instead of it), before the
 * first Test().  The check is LeakSanitizer's recoverable one: it reports
 * what nothing points to any more once the test body has returned, so
 * fixtures that a .fini frees are not leaks.
 */
#ifndef CVM_TEST_LEAK_CHECK_H
#define CVM_TEST_LEAK_CHECK_H

#include <criterion/criterion.h>

#if defined(__SANITIZE_ADDRESS__)
#define CVM_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CVM_LEAK_CHECK 1
#endif
#endif

#ifdef CVM_LEAK_CHECK
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>

/* Where this worker's sanitizer reports go: a file in TAP mode. */
static inline const char *cvm_test_report_to(void)
{
	static char where[64];

	if (!getenv("CRITERION_OUTPUTS"))
		return "on stderr";
	__sanitizer_set_report_path("sanitizer-report");
	snprintf(where, sizeof(where), "in sanitizer-report.%d", (int)getpid());
	return where;
}

/* 0 with ASAN_OPTIONS=detect_leaks=0: then nothing is checked. */
#define CVM_TEST_WITH_LEAK_CHECK(Category, Name, ...)                            \
	static void CR_IDENTIFIER_(Category, Name, body)(void);                  \
	CR_TEST_BASE(Category, Name, __VA_ARGS__)                                \
	{                                                                        \
		const char *report = cvm_test_report_to();                       \
									         \
		CR_IDENTIFIER_(Category, Name, body)();                          \
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,              \
			     "the test leaked memory: LeakSanitizer's report is %s", \
			     report);                                            \
	}                                                                        \
	static void CR_IDENTIFIER_(Category, Name, body)(void)

#undef Test
#define Test(...) CR_EXPAND(CVM_TEST_WITH_LEAK_CHECK(__VA_ARGS__, .sentinel_ = 0))
#endif

#endif
