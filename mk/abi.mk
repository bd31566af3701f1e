# SPDX-License-Identifier: MIT
# ABI checks: exported symbols <-> map <-> header, header self-containment,
# abidiff against the committed baseline.
if ENABLE_TESTS
TESTS += tests/check-symbols.sh tests/check-header.sh tests/check-abi.sh
check_PROGRAMS += tests/test-util
tests_test_util_SOURCES = tests/test-util.c
tests_test_util_CFLAGS = $(TEST_CFLAGS)
tests_test_util_LDADD = $(TEST_LDADD)
TESTS += tests/test-util
endif
EXTRA_DIST += tests/check-symbols.sh tests/check-header.sh tests/check-abi.sh \
	tests/tap.sh abi/libcvmdma.abi

# Regenerate the ABI baseline deliberately (never from make check).
abi-baseline: lib/libcvmdma.la
	$(ABIDW) --no-corpus-path --headers-dir $(top_srcdir)/include \
		--out-file $(top_srcdir)/abi/libcvmdma.abi lib/.libs/libcvmdma.so
	@echo "abi/libcvmdma.abi regenerated: review and commit it with a NEWS entry"
.PHONY: abi-baseline
