# SPDX-License-Identifier: MIT
# pagemap: the roaring-style page-state map (lib/pagemap*.c), its tests,
# fuzz smoke and benchmark.
lib_libcvmdma_internal_la_SOURCES += lib/pagemap.h lib/pagemap.c \
	lib/pagemap-ctr.h lib/pagemap-ctr.c

if ENABLE_TESTS
# White-box: the test compiles lib/pagemap.c in (see its header comment).
check_PROGRAMS += tests/test-pagemap
tests_test_pagemap_SOURCES = tests/test-pagemap.c tests/pagemap-diff.h
tests_test_pagemap_CFLAGS = $(TEST_CFLAGS)
tests_test_pagemap_LDADD = $(TEST_LDADD)
TESTS += tests/test-pagemap
endif
