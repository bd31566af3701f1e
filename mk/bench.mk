# SPDX-License-Identifier: MIT
# Benchmarks (not tests).  `make bench` runs them all and regenerates
# doc/performance.md (scripts/bench-report); make check never runs them and
# nothing anywhere asserts a time.  The programs are noinst and built by
# plain `make`, so an API change that breaks them shows at once.
#
#   make bench                     everything (model, then the vIOMMU guest)
#   make bench BENCH_ARGS=--quick  small sizes: checks the pipeline in ~1 min
#   make bench BENCH_ARGS=--no-vm  skip the real-kernel stage
#   bench/bench-ab OLD NEW         is one build of bench-core faster than another?
noinst_PROGRAMS += bench/bench-core bench/bench-policy

# White-box: it also times the model backend alone (lib/backend.h).
bench_bench_core_SOURCES = bench/bench-core.c bench/bench-util.h
bench_bench_core_LDADD = lib/libcvmdma-internal.la $(CAPNG_LIBS)

# A consumer of the shared library, like a VMM; reads cvmdma-tracegen's traces
# with the tools' own parser.
bench_bench_policy_SOURCES = bench/bench-policy.c bench/bench-util.h \
	tools/trace.c tools/trace.h tools/tool-util.c tools/tool-util.h
bench_bench_policy_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tools
bench_bench_policy_LDADD = lib/libcvmdma.la

# Runs inside the vIOMMU test guest (tests/vm/run-in-guest), statically
# linked to the library like the guest tests.
noinst_PROGRAMS += bench/bench-guest
bench_bench_guest_SOURCES = bench/bench-guest.c bench/bench-util.h $(GUEST_SOURCES)
bench_bench_guest_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/vm
bench_bench_guest_CFLAGS = $(GUEST_CFLAGS)
bench_bench_guest_LDADD = $(GUEST_LDADD)

EXTRA_DIST += bench/run.sh bench/bench-ab bench/check-ab.sh bench/policy.gp bench/guest.gp scripts/bench-report \
	bench/check-report.sh bench/testdata/machine.out bench/testdata/commands.out \
	bench/testdata/policy.out bench/testdata/core.out bench/testdata/guest-A.out \
	doc/performance.md doc/performance-policy.svg doc/performance-guest.svg

# The report's verdicts on fixed, made-up results, and the A/B comparison's
# output on a build against itself: no time is asserted.
if ENABLE_TESTS
TESTS += bench/check-report.sh bench/check-ab.sh
endif

BENCH_ARGS =
# bench-pagemap (mk/pagemap.mk) is run when this tree has it.
bench_deps = bench/bench-core$(EXEEXT) bench/bench-policy$(EXEEXT) \
	bench/bench-guest$(EXEEXT) tools/cvmdma-tracegen$(EXEEXT) \
	$(filter bench/bench-pagemap%, $(noinst_PROGRAMS) $(EXTRA_PROGRAMS) $(check_PROGRAMS))

bench: $(bench_deps)
	top_srcdir='$(abs_top_srcdir)' top_builddir='$(abs_top_builddir)' GNUPLOT='$(GNUPLOT)' \
		CC='$(CC)' $(SHELL) $(top_srcdir)/bench/run.sh $(BENCH_ARGS)
.PHONY: bench
# What make bench leaves in the build tree: its raw results and plot data.
CLEANFILES += bench/*.out bench/*.dat
