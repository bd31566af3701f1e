// SPDX-License-Identifier: MIT
/*
 * minimal-vmm: the smallest honest picture of how a VMM uses libcvmdma.
 *
 *   1. one cvm_region per guest RAM block, all private (a confidential
 *      guest's RAM starts private);
 *   2. a plain listener that gives back the host's shared backing pages once
 *      they turn private (the guest's private memory lives elsewhere, e.g. in
 *      guest_memfd, so the shared copy is garbage);
 *   3. a DMA context that keeps the IOMMU equal to the shared memory, for the
 *      assigned device;
 *   4. the hypercall loop: each KVM_HC_MAP_GPA_RANGE-style request (a batch
 *      of ranges, as an SNP page-state change or a split TDX MapGPA brings)
 *      becomes cvm_convert_batch() calls.
 *
 * It runs on the MODEL backend (no root, no IOMMU) and exits 0 only if what
 * ends up mapped is exactly what is shared.
 */
#define _DEFAULT_SOURCE		/* madvise(), MAP_ANONYMOUS in strict C99 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <cvmdma.h>

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

/* KVM_HC_MAP_GPA_RANGE's attribute bit (Documentation/virt/kvm/x86/hypercalls.rst). */
#define KVM_MAP_GPA_RANGE_ENCRYPTED (1u << 4)

struct ram_block {
	const char *name;
	uint64_t gpa, size;
	unsigned char *hva;
	struct cvm_region *region;
	struct cvm_listener *discard;
	uint64_t discarded;
};

/* q35-like: RAM below the 4 GiB PCI hole and RAM above it. */
static struct ram_block ram[] = {
	{ .name = "ram-below-4g", .gpa = 0, .size = 64 * MiB },
	{ .name = "ram-above-4g", .gpa = 4 * GiB, .size = 64 * MiB },
};
#define NR_RAM (sizeof(ram) / sizeof(ram[0]))

/* What the guest asks for: (gpa, pages) ranges and one attribute. */
struct gpa_range { uint64_t gpa, npages; };
struct map_gpa_req {
	uint64_t attrs;
	unsigned int nranges;
	struct gpa_range r[8];
};

static const struct map_gpa_req boot[] = {
	/* Firmware "accepts" RAM: already private, so nothing happens. */
	{ KVM_MAP_GPA_RANGE_ENCRYPTED, 2, { { 0, 16384 }, { 4 * GiB, 16384 } } },
	/* The swiotlb bounce buffer: 16 MiB shared, in 2 MiB pieces. */
	{ 0, 8, { { 48 * MiB, 512 }, { 50 * MiB, 512 }, { 52 * MiB, 512 }, { 54 * MiB, 512 },
		  { 56 * MiB, 512 }, { 58 * MiB, 512 }, { 60 * MiB, 512 }, { 62 * MiB, 512 } } },
	/* Driver coherent allocations, in both RAM blocks. */
	{ 0, 3, { { 4 * GiB + 1 * MiB, 1 }, { 4 * GiB + 2 * MiB, 4 }, { 8 * MiB, 16 } } },
	/* A driver frees one of them, and a page in the middle of the swiotlb
	 * goes private: the IOMMU must drop exactly those pages. */
	{ KVM_MAP_GPA_RANGE_ENCRYPTED, 2, { { 4 * GiB + 2 * MiB, 4 }, { 55 * MiB, 1 } } },
};

static struct ram_block *block_of(uint64_t gpa, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < NR_RAM; i++)
		if (gpa >= ram[i].gpa && gpa + len <= ram[i].gpa + ram[i].size)
			return &ram[i];
	return NULL;
}

/* ---- the VMM's own listener: discard shared backing once private ---- */

static int backing_to_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque, (void)gpa, (void)len;
	return 0;   /* anonymous memory fills itself in on first touch */
}

/* Runs after the DMA context unmapped these pages (DMA listeners always
 * count as registered last), so no device can reach what we free here;
 * the one exception, two failures in one call, is in cvm_convert_batch(3). */
static void backing_to_private(void *opaque, uint64_t gpa, uint64_t len)
{
	struct ram_block *b = opaque;

	madvise(b->hva + (gpa - b->gpa), len, MADV_DONTNEED);
	b->discarded += len;
}

static const struct cvm_listener_ops discard_ops = {
	.sz = sizeof(discard_ops),
	.to_shared = backing_to_shared,
	.to_private = backing_to_private,
};

/* ---- the hypercall loop ---- */

/*
 * One request, one cvm_convert_batch() per RAM block it touches: a batch is
 * all or nothing within a region, not across regions.  When a block's batch
 * fails, that block is as before, but the blocks converted before it stay
 * converted: the VMM returns an error to the guest (the hypercall's return
 * value), and the guest's retry of the whole request is safe, since
 * converting pages to the state they are in changes nothing.
 */
static int handle_map_gpa(const struct map_gpa_req *req)
{
	enum cvm_state to = req->attrs & KVM_MAP_GPA_RANGE_ENCRYPTED ? CVM_PRIVATE : CVM_SHARED;
	unsigned int i, j;
	int r;

	for (j = 0; j < req->nranges; j++)
		if (!block_of(req->r[j].gpa, req->r[j].npages * 4 * KiB))
			return -EINVAL;   /* not RAM: refuse the whole request */
	for (i = 0; i < NR_RAM; i++) {
		struct cvm_range batch[8];
		size_t n = 0;

		for (j = 0; j < req->nranges; j++) {
			uint64_t gpa = req->r[j].gpa, len = req->r[j].npages * 4 * KiB;

			if (block_of(gpa, len) == &ram[i])
				batch[n++] = (struct cvm_range){ gpa, len };
		}
		if (!n)
			continue;
		r = cvm_convert_batch(ram[i].region, batch, n, to, 0);
		if (r)
			return r;
	}
	return 0;
}

/* ---- mapped == shared ---- */

struct runs {
	struct cvm_range v[64];
	unsigned int n;
};

static int add_run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *rs = opaque;

	if (rs->n && rs->v[rs->n - 1].gpa + rs->v[rs->n - 1].length == gpa) {
		rs->v[rs->n - 1].length += len;   /* compare coverage, not pieces */
		return 0;
	}
	if (rs->n == 64)
		return -E2BIG;
	rs->v[rs->n++] = (struct cvm_range){ gpa, len };
	return 0;
}

static int mappings_equal_shared(struct cvm_dma *dma)
{
	struct runs shared = { .n = 0 }, mapped = { .n = 0 };
	unsigned int i;

	for (i = 0; i < NR_RAM; i++)
		if (cvm_region_for_each_run(ram[i].region, ram[i].gpa, ram[i].size, CVM_SHARED,
					    add_run, &shared))
			return 0;
	if (cvm_dma_for_each_mapping(dma, add_run, &mapped))
		return 0;
	return shared.n == mapped.n &&
	       !memcmp(shared.v, mapped.v, shared.n * sizeof(shared.v[0]));
}

static int setup(struct cvm_dma **dma)
{
	struct cvm_dma_config dc = {
		.sz = sizeof(dc),
		/* A real VMM adopts what it already set up for its device:
		 *   .backend = CVM_BACKEND_TYPE1, .fd = container_fd
		 *     (after VFIO_GROUP_SET_CONTAINER and VFIO_SET_IOMMU), or
		 *   .backend = CVM_BACKEND_IOMMUFD, .fd = iommufd, .ioas_id = ioas
		 *     (or fd -1 / ioas 0 to let the library open and allocate, then
		 *     cvm_dma_info() for its fd and IOAS, VFIO_DEVICE_BIND_IOMMUFD
		 *     of the device to that fd and VFIO_DEVICE_ATTACH_IOMMUFD_PT to
		 *     that IOAS, before cvm_dma_add_region()). */
		.backend = CVM_BACKEND_MODEL,
		.fd = -1,
		.split_granule = 0,   /* auto: unlimited where hitless cuts exist, else 2 MiB */
	};
	unsigned int i;
	int r;

	for (i = 0; i < NR_RAM; i++) {
		struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = ram[i].gpa,
						.length = ram[i].size };

		ram[i].hva = mmap(NULL, ram[i].size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (ram[i].hva == MAP_FAILED)
			return -errno;
		rc.hva = ram[i].hva;
		r = cvm_region_create(&rc, &ram[i].region);
		if (!r)
			r = cvm_listener_add(ram[i].region, &discard_ops, &ram[i], 0,
					     &ram[i].discard);
		if (r)
			return r;
	}
	r = cvm_dma_open(&dc, dma);
	for (i = 0; !r && i < NR_RAM; i++)
		r = cvm_dma_add_region(*dma, ram[i].region);
	return r;
}

int main(void)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_dma *dma = NULL;
	unsigned char *freed;
	unsigned int i;
	int r, ok;

	r = setup(&dma);
	if (r) {
		fprintf(stderr, "minimal-vmm: setup: %s\n", strerror(-r));
		return 1;
	}
	freed = ram[1].hva + 2 * MiB;
	for (i = 0; i < sizeof(boot) / sizeof(boot[0]); i++) {
		if (i == 3)
			freed[0] = 0xaa;   /* the device wrote into that buffer */
		r = handle_map_gpa(&boot[i]);
		printf("request %u: %s\n", i, r ? strerror(-r) : "done");
		if (r)
			return 1;
	}
	cvm_dma_stats(dma, &st);
	ok = mappings_equal_shared(dma);
	printf("%" PRIu64 " mappings for %" PRIu64 " KiB shared, %" PRIu64 " map and %" PRIu64
	       " unmap calls; %" PRIu64 " KiB of backing discarded\n", st.mappings,
	       st.mapped_bytes / KiB, st.map_calls, st.unmap_calls,
	       (ram[0].discarded + ram[1].discarded) / KiB);
	/* The listener gave the freed buffer's page back: it reads zero now. */
	ok = ok && freed[0] == 0;
	printf("mapped == shared: %s\n", ok ? "yes" : "NO");
	/* Teardown: the DMA context first (its mappings go while the memory
	 * is still there), then each block's listener, region and memory. */
	cvm_dma_close(dma);
	for (i = 0; i < NR_RAM; i++) {
		cvm_listener_remove(ram[i].discard, 0);
		cvm_region_destroy(ram[i].region);
		munmap(ram[i].hva, ram[i].size);
	}
	return ok ? 0 : 1;
}
