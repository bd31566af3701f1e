/* SPDX-License-Identifier: MIT */
/*
 * Under AddressSanitizer, each Criterion test ends with a leak check of its
 * own, so a leak fails the test that made it.  LeakSanitizer's usual check
 * runs when a process exits, and Criterion's worker exits only after it has
 * sent the test's result: a leak reported there failed nothing (and the
 * suppression of Criterion's own leak hid every test's, see lsan.supp).
 *
 * In TAP mode (make check) Criterion drops a worker's stderr, so the
 * report itself shows only when the program runs on its own, e.g.
 * ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=tests/lsan.supp
 * tests/test-dma --filter 'dma/NAME'.
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
#include <sanitizer/lsan_interface.h>

/* 0 with ASAN_OPTIONS=detect_leaks=0: then nothing is checked. */
#define CVM_TEST_WITH_LEAK_CHECK(Category, Name, ...)                            \
	static void CR_IDENTIFIER_(Category, Name, body)(void);                  \
	CR_TEST_BASE(Category, Name, __VA_ARGS__)                                \
	{                                                                        \
		CR_IDENTIFIER_(Category, Name, body)();                          \
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,              \
			     "the test leaked memory: run its program without "   \
			     "CRITERION_OUTPUTS=tap for LeakSanitizer's report"); \
	}                                                                        \
	static void CR_IDENTIFIER_(Category, Name, body)(void)

#undef Test
#define Test(...) CR_EXPAND(CVM_TEST_WITH_LEAK_CHECK(__VA_ARGS__, .sentinel_ = 0))
#endif

#endif
