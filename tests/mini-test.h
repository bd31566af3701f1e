/* SPDX-License-Identifier: MIT */
/*
 * A minimal stand-in for the Criterion macros the concurrency tests use,
 * printing TAP itself.  Criterion cannot start under ThreadSanitizer (its
 * fork-server arena collides with TSan's memory layout: "Could not
 * initialize inheritable arena"), and those tests exist to run under TSan.
 * A failed assertion, in any thread, prints "not ok" and exits.
 */
#ifndef CVM_MINI_TEST_H
#define CVM_MINI_TEST_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MINI_MAX_TESTS 16

struct mini_test { const char *name; void (*fn)(void); };
static struct mini_test mini_tests[MINI_MAX_TESTS];
static int mini_ntests, mini_current;

static inline void mini_register(const char *name, void (*fn)(void))
{
	if (mini_ntests < MINI_MAX_TESTS)
		mini_tests[mini_ntests++] = (struct mini_test){ name, fn };
}

__attribute__((format(printf, 4, 5), noreturn, unused))
static void mini_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
	va_list ap;

	printf("not ok %d - %s\n# %s:%d: assertion failed: %s\n# ", mini_current + 1,
	       mini_tests[mini_current].name, file, line, expr);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	_exit(1);
}

#define Test(suite, name)                                                          \
	static void suite##_##name(void);                                          \
	__attribute__((constructor)) static void suite##_##name##_reg(void)        \
	{ mini_register(#suite "::" #name, suite##_##name); }                      \
	static void suite##_##name(void)

#define cr_assert(cond, ...) \
	do { if (!(cond)) mini_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__); } while (0)
#define cr_assert_eq(a, b, ...)  cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...)  cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_null(p, ...)   cr_assert((p) == NULL, __VA_ARGS__)

/* A test still running after this long is stuck (a deadlock, or a lock
 * taken in freed memory): fail it rather than hang the suite. */
#define MINI_TIMEOUT 300

static void mini_timeout(int sig)
{
	char msg[160];
	int n = snprintf(msg, sizeof(msg), "not ok %d - %s\n# no end after %d s: stuck\n",
			 mini_current + 1, mini_tests[mini_current].name, MINI_TIMEOUT);

	(void)sig;
	if (n > 0 && write(1, msg, (size_t)n) < 0)
		_exit(2);
	_exit(1);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, mini_timeout);
	printf("1..%d\n", mini_ntests);
	for (mini_current = 0; mini_current < mini_ntests; mini_current++) {
		alarm(MINI_TIMEOUT);
		mini_tests[mini_current].fn();
		printf("ok %d - %s\n", mini_current + 1, mini_tests[mini_current].name);
	}
	return 0;
}

#endif
