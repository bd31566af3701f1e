# SPDX-License-Identifier: MIT
# backends: the VFIO type1 and iommufd backends, and the capability probes
# (pinning limits, the hitless-cut probe).  Their kernel behaviour is tested
# in the guest (tests/vm/conf-guest.c); here only what a host can check.
lib_libcvmdma_internal_la_SOURCES += lib/backend-type1.c lib/backend-iommufd.c \
	lib/caps.c lib/caps.h

if ENABLE_TESTS
check_PROGRAMS += tests/test-caps
tests_test_caps_SOURCES = tests/test-caps.c
tests_test_caps_CFLAGS = $(TEST_CFLAGS)
tests_test_caps_LDADD = $(TEST_LDADD)
TESTS += tests/test-caps
# The backends against a fake kernel (the test defines ioctl()).
check_PROGRAMS += tests/test-backends
tests_test_backends_SOURCES = tests/test-backends.c
tests_test_backends_CFLAGS = $(TEST_CFLAGS)
tests_test_backends_LDADD = $(TEST_LDADD)
TESTS += tests/test-backends
endif
