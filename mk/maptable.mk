# SPDX-License-Identifier: MIT
# maptable: the interval map of live mappings; the backend helpers and the
# in-process kernel model; the kernel conformance suite run against the model.
lib_libcvmdma_internal_la_SOURCES += lib/maptable.h lib/maptable.c \
	lib/backend.h lib/backend.c lib/backend-model.c

if ENABLE_TESTS
if HAVE_CRITERION
check_PROGRAMS += tests/test-maptable
tests_test_maptable_SOURCES = tests/test-maptable.c
tests_test_maptable_CFLAGS = $(TEST_CFLAGS)
tests_test_maptable_LDADD = $(TEST_LDADD)
TESTS += tests/test-maptable
endif
endif

# What only the model has (fault injection, limits, hooks, errno details,
# a differential test of the rule sets) and the common backend helpers.
if ENABLE_TESTS
if HAVE_CRITERION
check_PROGRAMS += tests/test-model
tests_test_model_SOURCES = tests/test-model.c
tests_test_model_CFLAGS = $(TEST_CFLAGS)
tests_test_model_LDADD = $(TEST_LDADD)
TESTS += tests/test-model
endif
endif

# The kernel conformance suite against the model (plain TAP: the same
# tests/conformance.c runs in the test guest, which has no Criterion).
if ENABLE_TESTS
check_PROGRAMS += tests/conf-model
tests_conf_model_SOURCES = tests/conf-model.c tests/conformance.c tests/conformance.h
tests_conf_model_CFLAGS = $(TEST_CFLAGS)
tests_conf_model_LDADD = $(TEST_LDADD)
TESTS += tests/conf-model
endif
