# SPDX-License-Identifier: MIT
# pagemap: the roaring-style page-state map (lib/pagemap*.c), its tests,
# fuzz smoke and benchmark.
lib_libcvmdma_internal_la_SOURCES += lib/pagemap.h lib/pagemap-int.h lib/pagemap.c \
	lib/pagemap-query.c lib/pagemap-check.c lib/pagemap-ctr.h lib/pagemap-ctr.c

if ENABLE_TESTS
if HAVE_CRITERION
# White-box: the test reads the map's internals (lib/pagemap-int.h).
check_PROGRAMS += tests/test-pagemap
tests_test_pagemap_SOURCES = tests/test-pagemap.c tests/pagemap-diff.h
tests_test_pagemap_CFLAGS = $(TEST_CFLAGS)
tests_test_pagemap_LDADD = $(TEST_LDADD)
TESTS += tests/test-pagemap
endif
# Fuzz smoke (TAP; SKIPs without clang/libFuzzer or in a sanitizer build).
TESTS += tests/check-fuzz.sh
endif
EXTRA_DIST += tests/check-fuzz.sh tests/fuzz-pagemap.c doc/performance-pagemap.md
CLEANFILES += tests/fuzz-pagemap-crash-* tests/fuzz-pagemap-leak-* tests/fuzz-pagemap-timeout-*

# Benchmark, not a test: `make bench-pagemap` runs it (BENCH_PAGEMAP_ARGS=--quick
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
