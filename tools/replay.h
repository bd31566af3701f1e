/* SPDX-License-Identifier: MIT */
/* Replaying a parsed trace under one mapping policy on a fresh context. */
#ifndef CVM_TOOL_REPLAY_H
#define CVM_TOOL_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include <cvmdma.h>

#include "trace.h"

struct policy {
	char name[40];
	uint32_t flags;          /* CVM_DMA_* */
	uint64_t granule;        /* split_granule */
};

/* per-page|auto|unbounded|granule=SIZE|compact; 0 or -EINVAL. */
int policy_parse(const char *s, struct policy *p);

struct replay_cfg {
	enum cvm_backend backend;    /* MODEL, TYPE1 or IOMMUFD */
	uint32_t rules;              /* MODEL: enum cvm_model_rules */
	uint32_t entry_limit;        /* MODEL: 0 = the rules' default */
	const char *device;          /* TYPE1/IOMMUFD: PCI address */
	uint32_t flags;              /* added to every policy's (CVM_DMA_NO_CUT) */
	bool progress;               /* progress line on stderr */
};

enum fail_stage { FAIL_NONE, FAIL_SETUP, FAIL_REGION, FAIL_LINE, FAIL_VERIFY };

struct result {
	struct policy pol;
	enum fail_stage stage;
	int err;                     /* -errno when stage != FAIL_NONE */
	unsigned int line;           /* the trace line that failed (REGION/LINE) */
	char msg[512];               /* the whole story, for stderr and JSON */
	size_t lines_applied;
	struct cvm_dma_stats st;
	struct cvm_dma_info info;    /* effective granule, hitless cut (info.sz 0: none) */
	uint64_t wall_ns;            /* region attach + every conversion */
};

/* Runs the whole trace; the outcome (failures included) is in *res. */
void replay_run(const struct trace *t, const struct replay_cfg *cfg,
		const struct policy *pol, struct result *res);

#endif
