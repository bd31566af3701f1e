/* SPDX-License-Identifier: MIT */
/*
 * The conversion trace (doc/trace-format.md), parsed and validated whole
 * before anything is replayed: a bad line is reported with the file name and
 * line number and nothing is applied.
 */
#ifndef CVM_TOOL_TRACE_H
#define CVM_TOOL_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include <cvmdma.h>

#define TRACE_VERSION 1

struct trace_region {
	uint64_t gpa, size;
	uint32_t page_size;
	enum cvm_state init;     /* CVM_SHARED or CVM_PRIVATE */
	unsigned int line;
};

/* One trace line: a single conversion (nranges == 1) or a batch. */
struct trace_op {
	unsigned int line;
	enum cvm_state to;
	unsigned int region;     /* index into trace.regions */
	unsigned int nranges;
	size_t first;            /* index into trace.ranges */
};

struct trace {
	char *name;              /* as given: used in messages */
	struct trace_region *regions;
	unsigned int nregions;
	struct trace_op *ops;
	size_t nops;
	struct cvm_range *ranges;
	size_t nranges;
	uint64_t bytes_to_shared;    /* requested, no-ops included */
	uint64_t bytes_to_private;
};

/*
 * Load and validate path ("-": standard input).  0, or -errno with a
 * message "NAME:LINE: what is wrong" (or "NAME: ..." for I/O errors) in err.
 */
int trace_load(const char *path, struct trace *t, char *err, size_t errsz);
void trace_free(struct trace *t);

#endif
