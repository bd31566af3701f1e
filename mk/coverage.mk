# ---- coverage: ./configure --enable-coverage CFLAGS='-O0 -g'; make check; make coverage ----
# The library's line and branch coverage, from gcov, per source file and
# in all, over whatever ran on the host since the last make coverage-reset
# (counts add up across runs).  The annotated sources go to coverage/,
# lines no test ran marked #####.  The guest tests' counts, which
# tests/vm/guest-check.sh brings out of QEMU into coverage-guest/ (each
# kernel's last run), are added (scripts/coverage-data): the real backends
# on the real kernels.  CI prints it (.ci/run), from the
# host tests only: the guest tests run once per CI run, in the main build.
EXTRA_DIST += scripts/coverage-summary scripts/coverage-data tests/check-coverage-data.sh

if ENABLE_TESTS
# scripts/coverage-data's sum of the host's and the guest's counts, on a
# made-up build directory (in every build: it compiles its own object).
TESTS += tests/check-coverage-data.sh
endif

if COVERAGE
coverage:
	$(AM_V_GEN)set -e; \
	if ! ls lib/.libs/libcvmdma_internal_la-*.gcda >/dev/null 2>&1; then \
		echo "make coverage: no coverage data yet: run make check first" >&2; exit 1; \
	fi; \
	rm -rf coverage; mkdir coverage; \
	from=$$(GCOV_TOOL='$(GCOV_TOOL)' $(SHELL) $(srcdir)/scripts/coverage-data coverage/data); \
	$(GCOV) -b -o coverage/data coverage/data/libcvmdma_internal_la-*.gcda >coverage/gcov.out 2>coverage/gcov.err; \
	mv -f ./*.gcov coverage/; \
	{ echo "coverage of lib/ by the $$from"; \
	  $(AWK) -f $(srcdir)/scripts/coverage-summary coverage/gcov.out; } | tee coverage/summary.txt

coverage-reset:
	find . -name '*.gcda' -exec rm -f {} +
	rm -rf coverage-guest

clean-local:
	rm -rf coverage coverage-guest
	find . \( -name '*.gcda' -o -name '*.gcno' \) -exec rm -f {} +
else
coverage coverage-reset:
	@echo "make $@: configure with --enable-coverage first" >&2; exit 1
endif
.PHONY: coverage coverage-reset
