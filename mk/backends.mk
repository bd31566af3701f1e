# SPDX-License-Identifier: MIT
# backends: the VFIO type1 and iommufd backends, and the capability probes
# (pinning limits, the hitless-cut probe).  Their kernel behaviour is tested
# in the guest (tests/vm/conf-guest.c); here only what a host can check.
lib_libcvmdma_internal_la_SOURCES += lib/backend-type1.c lib/backend-iommufd.c \
	lib/caps.c lib/caps.h

if ENABLE_TESTS
if HAVE_CRITERION
check_PROGRAMS += tests/test-caps
tests_test_caps_SOURCES = tests/test-caps.c
tests_test_caps_CFLAGS = $(TEST_CFLAGS)
tests_test_caps_LDADD = $(TEST_LDADD)
TESTS += tests/test-caps
# The backends against a fake kernel (the test defines ioctl()).
check_PROGRAMS += tests/test-backends
tests_test_backends_SOURCES = tests/test-backends.c tests/fail-alloc.h
tests_test_backends_CFLAGS = $(TEST_CFLAGS)
tests_test_backends_LDADD = $(TEST_LDADD)
TESTS += tests/test-backends
endif
# The conformance suite against the real kernels, in the guest (mk/vm.mk).
check_PROGRAMS += tests/vm/conf-guest
tests_vm_conf_guest_SOURCES = tests/vm/conf-guest.c tests/conformance.c tests/conformance.h \
	$(GUEST_SOURCES)
tests_vm_conf_guest_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests
tests_vm_conf_guest_CFLAGS = $(GUEST_CFLAGS)
tests_vm_conf_guest_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/conf-guest
VM_TESTS_B += tests/vm/conf-guest
endif
