# SPDX-License-Identifier: MIT
# pagemap: the roaring-style page-state map (lib/pagemap*.c), its tests,
# fuzz smoke and benchmark.
lib_libcvmdma_internal_la_SOURCES += lib/pagemap.h lib/pagemap.c \
	lib/pagemap-ctr.h lib/pagemap-ctr.c
