# SPDX-License-Identifier: MIT
# tools: cvmdma-tracegen and cvmdma-replay (installed), the minimal VMM
# example (built, run by make check), their man pages, the demo, and the
# tests.  The programs are consumers: they link the shared library and use
# only the public header, exactly like a VMM would.
bin_PROGRAMS += tools/cvmdma-tracegen tools/cvmdma-replay
noinst_PROGRAMS += examples/minimal-vmm

TOOLS_COMMON = tools/tool-util.h tools/tool-util.c

tools_cvmdma_tracegen_SOURCES = tools/cvmdma-tracegen.c $(TOOLS_COMMON)
tools_cvmdma_tracegen_CPPFLAGS = -I$(top_srcdir)/include

tools_cvmdma_replay_SOURCES = tools/cvmdma-replay.c tools/replay.c tools/replay.h \
	tools/trace.c tools/trace.h tools/vfio-setup.c tools/vfio-setup.h $(TOOLS_COMMON)
tools_cvmdma_replay_CPPFLAGS = -I$(top_srcdir)/include
tools_cvmdma_replay_LDADD = lib/libcvmdma.la

examples_minimal_vmm_SOURCES = examples/minimal-vmm.c
examples_minimal_vmm_CPPFLAGS = -I$(top_srcdir)/include
examples_minimal_vmm_LDADD = lib/libcvmdma.la

dist_man_MANS += doc/man/cvmdma-replay.1 doc/man/cvmdma-tracegen.1
dist_doc_DATA += doc/trace-format.md
# The VMM-side example, installed beside the documentation.
exampledir = $(docdir)/examples
dist_example_DATA = examples/minimal-vmm.c
EXTRA_DIST += scripts/demo tests/check-tools.sh tests/check-demo.sh tests/data/share-64m.trace \
	tests/data/bad-range.trace tests/data/holes.trace
# The trace parser's and replay engine's fuzz target (tests/check-fuzz.sh
# builds and runs it) and its dictionary.
EXTRA_DIST += tests/fuzz-trace.c tests/fuzz-trace.dict
CLEANFILES += tests/fuzz-trace-crash-* tests/fuzz-trace-leak-* tests/fuzz-trace-timeout-* \
	tests/fuzz-trace-oom-* tests/fuzz-trace-slow-unit-*

if ENABLE_TESTS
TESTS += tests/check-tools.sh tests/check-demo.sh
# The replay's check against the real kernel (its engine, in the guest).
check_PROGRAMS += tests/vm/guest-replay
tests_vm_guest_replay_SOURCES = tests/vm/guest-replay.c $(GUEST_SOURCES) tools/replay.c \
	tools/replay.h tools/trace.c tools/trace.h tools/vfio-setup.c tools/vfio-setup.h \
	$(TOOLS_COMMON)
tests_vm_guest_replay_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/include -I$(top_srcdir)/tools
tests_vm_guest_replay_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_replay_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-replay
VM_TESTS_B += tests/vm/guest-replay
endif
if ENABLE_VM_TESTS
AM_TESTS_ENVIRONMENT += DEMO_VM=yes; export DEMO_VM;
endif
# What scripts/demo leaves in the build tree (make check runs it).
CLEANFILES += tools/demo-*.trace

# The demo the README starts with, from an existing build tree.
demo: tools/cvmdma-tracegen tools/cvmdma-replay
	CVMDMA_BUILD_DIR='$(abs_top_builddir)' $(top_srcdir)/scripts/demo --no-build
demo-vm: tools/cvmdma-tracegen tools/cvmdma-replay
	CVMDMA_BUILD_DIR='$(abs_top_builddir)' $(top_srcdir)/scripts/demo --no-build --vm
.PHONY: demo demo-vm
