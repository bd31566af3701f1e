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

# Benchmark (not a test; `make bench-pagemap` runs it, BENCH_PAGEMAP_ARGS=--quick
# for a short run).  Built by plain `make` so that it never rots.
noinst_PROGRAMS += bench/bench-pagemap
bench_bench_pagemap_SOURCES = bench/bench-pagemap.c bench/flatmap.c bench/flatmap.h
bench_bench_pagemap_LDADD = lib/libcvmdma-internal.la $(CAPNG_LIBS)
if HAVE_ROARING
bench_bench_pagemap_CPPFLAGS = $(AM_CPPFLAGS) -DHAVE_ROARING
bench_bench_pagemap_LDADD += -lroaring
endif
BENCH_PAGEMAP_ARGS =

bench-pagemap: bench/bench-pagemap$(EXEEXT)
	bench/bench-pagemap$(EXEEXT) $(BENCH_PAGEMAP_ARGS)
.PHONY: bench-pagemap
