# SPDX-License-Identifier: MIT
# DMA contexts: the mapping policy on top of the backends.
lib_libcvmdma_internal_la_SOURCES += lib/dma.c lib/dma.h

if ENABLE_TESTS
if HAVE_CRITERION
check_PROGRAMS += tests/test-dma
tests_test_dma_SOURCES = tests/test-dma.c tests/oracle.h tests/fail-alloc.h
tests_test_dma_CFLAGS = $(TEST_CFLAGS)
tests_test_dma_LDADD = $(TEST_LDADD)
TESTS += tests/test-dma
endif
endif

if ENABLE_TESTS
check_PROGRAMS += tests/test-dma-threads
tests_test_dma_threads_SOURCES = tests/test-dma-threads.c tests/oracle.h tests/mini-test.h
tests_test_dma_threads_CFLAGS = $(AM_CFLAGS) $(CAPNG_CFLAGS)
tests_test_dma_threads_LDADD = lib/libcvmdma-internal.la $(CAPNG_LIBS)
TESTS += tests/test-dma-threads
endif

# Differential fuzz of the DMA layer against the model kernel, with
# injected kernel and allocation failures: a few fixed seeds here; more
# with tests/test-dma-fuzz -s FIRST -n SEEDS or -t SECONDS.
if ENABLE_TESTS
check_PROGRAMS += tests/test-dma-fuzz
tests_test_dma_fuzz_SOURCES = tests/test-dma-fuzz.c tests/fail-alloc.h
tests_test_dma_fuzz_CFLAGS = $(AM_CFLAGS) $(CAPNG_CFLAGS)
tests_test_dma_fuzz_LDADD = lib/libcvmdma-internal.la $(CAPNG_LIBS)
TESTS += tests/test-dma-fuzz
endif

# The library on real kernels, with edu DMA, in the guest (mk/vm.mk).
if ENABLE_TESTS
check_PROGRAMS += tests/vm/guest-lib
tests_vm_guest_lib_SOURCES = tests/vm/guest-lib.c $(GUEST_SOURCES)
tests_vm_guest_lib_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_lib_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-lib
VM_TESTS_B += tests/vm/guest-lib
# Hitlessness and call counts at the ioctl boundary (it defines ioctl()).
check_PROGRAMS += tests/vm/guest-hitless
tests_vm_guest_hitless_SOURCES = tests/vm/guest-hitless.c $(GUEST_SOURCES)
tests_vm_guest_hitless_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_hitless_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-hitless
VM_TESTS_B += tests/vm/guest-hitless
# The device's transfers in flight while the library cuts around them.
check_PROGRAMS += tests/vm/guest-inflight
tests_vm_guest_inflight_SOURCES = tests/vm/guest-inflight.c $(GUEST_SOURCES)
tests_vm_guest_inflight_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_inflight_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-inflight
VM_TESTS_B += tests/vm/guest-inflight
# The same as the virtual IOMMU's IOTLB invalidations show it (guest-tap.awk
# checks its claims against QEMU's trace).
check_PROGRAMS += tests/vm/guest-iotlb
tests_vm_guest_iotlb_SOURCES = tests/vm/guest-iotlb.c $(GUEST_SOURCES)
tests_vm_guest_iotlb_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_iotlb_LDADD = $(GUEST_LDADD)
VM_TRACE_TESTS_A += tests/vm/guest-iotlb
VM_TRACE_TESTS_B += tests/vm/guest-iotlb
check_PROGRAMS += tests/vm/guest-conc
tests_vm_guest_conc_SOURCES = tests/vm/guest-conc.c $(GUEST_SOURCES)
tests_vm_guest_conc_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_conc_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-conc
VM_TESTS_B += tests/vm/guest-conc
# Bad fds, IOAS ids, memory and IOVA windows on the real backends.
check_PROGRAMS += tests/vm/guest-badfd
tests_vm_guest_badfd_SOURCES = tests/vm/guest-badfd.c $(GUEST_SOURCES)
tests_vm_guest_badfd_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_badfd_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-badfd
VM_TESTS_B += tests/vm/guest-badfd
# Out of memory at every allocation of every operation, on the real backends.
check_PROGRAMS += tests/vm/guest-nomem
tests_vm_guest_nomem_SOURCES = tests/vm/guest-nomem.c tests/fail-alloc.h $(GUEST_SOURCES)
tests_vm_guest_nomem_CFLAGS = $(GUEST_CFLAGS)
tests_vm_guest_nomem_LDADD = $(GUEST_LDADD)
VM_TESTS_A += tests/vm/guest-nomem
VM_TESTS_B += tests/vm/guest-nomem
endif
