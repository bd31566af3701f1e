/* SPDX-License-Identifier: MIT */
/*
 * TAP output for guest programs (Criterion needs more than the tiny guest
 * has).  The plan is printed last, so a program may decide as it goes how
 * many tests it runs; tests/vm/guest-check.sh turns each line into one
 * make check result.  Include from one file per program.
 */
#ifndef CVM_TESTS_VM_GUEST_TAP_H
#define CVM_TESTS_VM_GUEST_TAP_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "guest.h"

static int tap_count;
static bool tap_failed;

static inline void tap_vline(const char *status, const char *directive, const char *fmt,
			     va_list ap)
{
	printf("%s %d - ", status, ++tap_count);
	vprintf(fmt, ap);
	if (directive)
		printf(" # %s", directive);
	putchar('\n');
	/* Flush every line: a crash must not swallow the results before it. */
	fflush(stdout);
}

/* One test: prints ok / not ok; returns cond. */
__attribute__((format(printf, 2, 3), unused))
static bool tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vline(cond ? "ok" : "not ok", NULL, fmt, ap);
	va_end(ap);
	if (!cond)
		tap_failed = true;
	return cond;
}

/* A test that cannot run here; reason says why. */
__attribute__((format(printf, 2, 3), unused))
static void tap_skip(const char *reason, const char *fmt, ...)
{
	char directive[256];
	va_list ap;

	snprintf(directive, sizeof(directive), "SKIP %s", reason);
	va_start(ap, fmt);
	tap_vline("ok", directive, fmt, ap);
	va_end(ap);
}

/* A diagnostic line (shown in the test log, not as a result). */
__attribute__((format(printf, 1, 2), unused))
static void tap_diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Nothing can run (e.g. not inside the guest): the whole program is a SKIP. */
__attribute__((unused))
static int tap_skip_all(const char *reason)
{
	printf("1..0 # SKIP %s\n", reason);
	fflush(stdout);
	return 0;
}

/* Print the plan; returns the exit status (1 if any test failed). */
__attribute__((unused))
static int tap_done(void)
{
	printf("1..%d\n", tap_count);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

/*
 * After guest_find_edu() returned ret: true if the edu device is usable
 * and the program goes on; else false with the TAP said and *status the
 * exit status.  Without the device (-ENODEV: not in the test guest) every
 * test is a SKIP; a device there but not usable through VFIO (not bound to
 * vfio-pci, no IOMMU group, no cdev) is a broken guest: Bail out!
 */
__attribute__((unused))
static bool tap_edu_usable(int ret, int *status)
{
	if (ret == -ENODEV) {
		*status = tap_skip_all("no edu device (not in the test guest?)");
		return false;
	}
	if (ret) {
		printf("Bail out! the edu device is not usable through VFIO: %s\n", strerror(-ret));
		fflush(stdout);
		*status = 1;
		return false;
	}
	return true;
}

/* The same, finding the device itself (for a program that needs not its
 * address, group or cdev). */
__attribute__((unused))
static bool tap_need_edu(int *status)
{
	char bdf[32], cdev[256];
	int group;

	return tap_edu_usable(guest_find_edu(bdf, sizeof(bdf), &group, cdev, sizeof(cdev)),
			      status);
}

/* guest_target_open(t, name), or a failed test that says why (t closed). */
__attribute__((unused))
static bool tap_target_open(struct guest_target *t, const char *name)
{
	int err = guest_target_open(t, name);

	if (err) {
		tap_ok(false, "%s: open the edu device (%s)", name, strerror(-err));
		guest_target_close(t);
		return false;
	}
	return true;
}

#endif
