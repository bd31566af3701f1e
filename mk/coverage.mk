# ---- coverage: ./configure --enable-coverage CFLAGS='-O0 -g'; make check; make coverage ----
# The library's line and branch coverage, from gcov, per source file and
# in all, over whatever ran since the last make coverage-reset (counts add
# up across runs).  The annotated sources go to coverage/, lines no test
# ran marked #####.  The guest tests run in QEMU, where their counts stay:
# the real backends' coverage is make check's on the host (their fakes).
# CI prints it (.ci/run).
EXTRA_DIST += scripts/coverage-summary

if COVERAGE
coverage:
	$(AM_V_GEN)set -e; \
	if ! ls lib/.libs/libcvmdma_internal_la-*.gcda >/dev/null 2>&1; then \
		echo "make coverage: no coverage data yet: run make check first" >&2; exit 1; \
	fi; \
	rm -rf coverage; mkdir coverage; \
	$(GCOV) -b -o lib/.libs lib/.libs/libcvmdma_internal_la-*.gcda >coverage/gcov.out 2>coverage/gcov.err; \
	mv -f ./*.gcov coverage/; \
	$(AWK) -f $(srcdir)/scripts/coverage-summary coverage/gcov.out | tee coverage/summary.txt

coverage-reset:
	find . -name '*.gcda' -exec rm -f {} +

clean-local:
	rm -rf coverage
	find . \( -name '*.gcda' -o -name '*.gcno' \) -exec rm -f {} +
else
coverage coverage-reset:
	@echo "make $@: configure with --enable-coverage first" >&2; exit 1
endif
.PHONY: coverage coverage-reset
