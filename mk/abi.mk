# SPDX-License-Identifier: MIT
# ABI checks: exported symbols <-> map <-> header, header self-containment,
# abidiff against the committed baseline.
if ENABLE_TESTS
TESTS += tests/check-symbols.sh tests/check-symbols-selftest.sh tests/check-header.sh tests/check-abi.sh
if HAVE_CRITERION
check_PROGRAMS += tests/test-util
tests_test_util_SOURCES = tests/test-util.c
tests_test_util_CFLAGS = $(TEST_CFLAGS)
tests_test_util_LDADD = $(TEST_LDADD)
TESTS += tests/test-util
endif
endif
EXTRA_DIST += tests/check-symbols.sh tests/check-symbols-selftest.sh tests/check-header.sh tests/check-abi.sh \
	tests/tap.sh tests/abi-constants.c abi/libcvmdma.abi

# Regenerate the ABI baseline deliberately (never from make check).
abi-baseline: lib/libcvmdma.la
	@test -n '$(ABIDW)' || { echo "abi-baseline: abidw not found (abigail-tools)" >&2; exit 1; }
	$(ABIDW) --no-corpus-path --headers-dir $(top_srcdir)/include \
		--out-file $(top_srcdir)/abi/libcvmdma.abi lib/.libs/libcvmdma.so
	@echo "abi/libcvmdma.abi regenerated: review and commit it with a NEWS entry"
.PHONY: abi-baseline

# The installed library, through pkg-config, from C and C++ (make distcheck
# runs this against its own installation).
EXTRA_DIST += tests/consumer.c
installcheck-local:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	export PKG_CONFIG_PATH='$(DESTDIR)$(pkgconfigdir)' PKG_CONFIG_SYSROOT_DIR='$(DESTDIR)'; \
	flags=$$($(PKG_CONFIG) --cflags --libs libcvmdma); \
	echo "installcheck: pkg-config libcvmdma: $$flags"; \
	$(PKG_CONFIG) --print-requires-private libcvmdma | grep -qx 'libcap-ng'; \
	$(CC) -std=c11 -Wall -Werror $(srcdir)/tests/consumer.c $$flags -o $$tmp/c; \
	$(CXX) -x c++ -std=c++11 -Wall -Wshadow -Werror $(srcdir)/tests/consumer.c $$flags -o $$tmp/cxx; \
	LD_LIBRARY_PATH='$(DESTDIR)$(libdir)' $$tmp/c; \
	LD_LIBRARY_PATH='$(DESTDIR)$(libdir)' $$tmp/cxx; \
	test -f '$(DESTDIR)$(mandir)/man3/cvm_convert.3'; \
	test -f '$(DESTDIR)$(mandir)/man7/libcvmdma.7'; \
	echo "installcheck: C and C++ consumers build and run against the installed library"
