/* SPDX-License-Identifier: MIT */
/*
 * size zeroed bytes that end where an inaccessible page starts: a call that
 * read past a struct placed there would fault.  The two pages stay mapped
 * for the rest of the test program.
 */
#ifndef CVM_TESTS_GUARD_PAGE_H
#define CVM_TESTS_GUARD_PAGE_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static inline void *before_a_guard_page(size_t size)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(m, MAP_FAILED);
	cr_assert_eq(mprotect(m + pg, pg, PROT_NONE), 0);
	return memset(m + pg - size, 0, size);
}

#endif
