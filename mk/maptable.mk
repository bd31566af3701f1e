# SPDX-License-Identifier: MIT
# maptable: the interval map of live mappings; the backend helpers and the
# in-process kernel model; the kernel conformance suite run against the model.
lib_libcvmdma_internal_la_SOURCES += lib/maptable.h lib/maptable.c

if ENABLE_TESTS
check_PROGRAMS += tests/test-maptable
tests_test_maptable_SOURCES = tests/test-maptable.c
tests_test_maptable_CFLAGS = $(TEST_CFLAGS)
tests_test_maptable_LDADD = $(TEST_LDADD)
TESTS += tests/test-maptable
endif
