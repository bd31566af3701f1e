# SPDX-License-Identifier: MIT
# man: one hand-written page per public function, the overview in
# libcvmdma(7), and a check that they lint clean and match the header.
dist_man_MANS += \
	doc/man/libcvmdma.7 \
	doc/man/cvm_convert.3 \
	doc/man/cvm_convert_batch.3 \
	doc/man/cvm_dma_add_region.3 \
	doc/man/cvm_dma_close.3 \
	doc/man/cvm_dma_for_each_mapping.3 \
	doc/man/cvm_dma_info.3 \
	doc/man/cvm_dma_open.3 \
	doc/man/cvm_dma_remove_region.3 \
	doc/man/cvm_dma_repair.3 \
	doc/man/cvm_dma_stats.3 \
	doc/man/cvm_listener_add.3 \
	doc/man/cvm_listener_remove.3 \
	doc/man/cvm_pin_check.3 \
	doc/man/cvm_region_create.3 \
	doc/man/cvm_region_destroy.3 \
	doc/man/cvm_region_for_each_run.3 \
	doc/man/cvm_region_query.3 \
	doc/man/cvm_region_stats.3 \
	doc/man/cvm_set_log.3 \
	doc/man/cvm_version.3

if ENABLE_TESTS
TESTS += tests/check-man.sh
endif
EXTRA_DIST += tests/check-man.sh
