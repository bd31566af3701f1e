/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by cvmdma-tracegen and cvmdma-replay: sizes with
 * binary suffixes, a seeded PRNG whose output is the same on every machine,
 * errno names.  Not part of the library.
 */
#ifndef CVM_TOOL_UTIL_H
#define CVM_TOOL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

/*
 * Parse "<number>[K|M|G|T]" (number: decimal or 0x hex; suffix binary,
 * either case) spanning [s, end) exactly, with overflow checks.
 * 0 or -EINVAL / -ERANGE.  end NULL means up to the terminating NUL.
 */
int tool_parse_size(const char *s, const char *end, uint64_t *out);

/* "4K", "2M", "64G" when the value is an exact multiple, else "0x..." (hex). */
const char *tool_fmt_len(uint64_t v, char *buf, size_t bufsz);
/* Human form for tables: "64.0 GiB", "4.0 KiB", "0 B". */
const char *tool_fmt_bytes(uint64_t v, char *buf, size_t bufsz);
/* Thousands separators: 1,234,567. */
const char *tool_fmt_count(uint64_t v, char *buf, size_t bufsz);

/*
 * Print s on stdout and exit: 0, or fail with a message naming prog when
 * stdout cannot take it (--help and --version into a closed pipe fail).
 */
void tool_print_exit(const char *prog, const char *s, int fail) __attribute__((noreturn));

/* "ENOSPC" (or "E<n>" when unknown). */
const char *tool_errno_name(int err);

/*
 * xoshiro256** seeded through splitmix64: integer-only, so a seed gives the
 * same sequence on every machine and compiler (traces must be byte-identical).
 */
struct tool_rng { uint64_t s[4]; };
void tool_rng_seed(struct tool_rng *r, uint64_t seed);
uint64_t tool_rng_next(struct tool_rng *r);
/* Uniform in [0, n), n > 0, without modulo bias. */
uint64_t tool_rng_below(struct tool_rng *r, uint64_t n);

#endif
