// SPDX-License-Identifier: MIT
/*
 * A consumer of the installed library, built with pkg-config as C and as C++
 * by `make installcheck` (and so by make distcheck): share 64 MiB of a model
 * guest and check the one mapping it takes.
 */
#define _GNU_SOURCE 1   /* MAP_ANONYMOUS, MAP_NORESERVE under -std=c11 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <cvmdma.h>

int main(void)
{
	struct cvm_region_config rc;
	struct cvm_dma_config dc;
	struct cvm_dma_stats st;
	struct cvm_region *r = NULL;
	struct cvm_dma *d = NULL;
	void *ram = mmap(NULL, 128u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);

	memset(&rc, 0, sizeof(rc));
	memset(&dc, 0, sizeof(dc));
	memset(&st, 0, sizeof(st));
	rc.sz = sizeof(rc);
	rc.gpa = 0x100000000ull;
	rc.length = 128u << 20;
	rc.hva = ram;
	dc.sz = sizeof(dc);
	dc.backend = CVM_BACKEND_MODEL;
	dc.fd = -1;
	dc.split_granule = UINT64_MAX;
	st.sz = sizeof(st);
	if (ram == MAP_FAILED || cvm_region_create(&rc, &r) || cvm_dma_open(&dc, &d) ||
	    cvm_dma_add_region(d, r) || cvm_convert(r, rc.gpa, 64u << 20, CVM_SHARED, 0) ||
	    cvm_dma_stats(d, &st) || st.mappings != 1) {
		fprintf(stderr, "consumer: the installed libcvmdma does not work\n");
		return 1;
	}
	printf("libcvmdma %s: 64 MiB shared in %llu mapping\n", cvm_version(),
	       (unsigned long long)st.mappings);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	return 0;
}
