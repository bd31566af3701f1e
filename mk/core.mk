# SPDX-License-Identifier: MIT
# Regions, conversions and listeners.
lib_libcvmdma_internal_la_SOURCES += lib/region.c lib/region.h

if ENABLE_TESTS
if HAVE_CRITERION
check_PROGRAMS += tests/test-region
tests_test_region_SOURCES = tests/test-region.c tests/oracle.h tests/fail-alloc.h
tests_test_region_CFLAGS = $(TEST_CFLAGS)
tests_test_region_LDADD = $(TEST_LDADD)
TESTS += tests/test-region
endif
check_PROGRAMS += tests/test-region-threads
tests_test_region_threads_SOURCES = tests/test-region-threads.c tests/mini-test.h
tests_test_region_threads_CFLAGS = $(AM_CFLAGS) $(CAPNG_CFLAGS)
tests_test_region_threads_LDADD = lib/libcvmdma-internal.la $(CAPNG_LIBS)
TESTS += tests/test-region-threads
endif
