// SPDX-License-Identifier: MIT
/* Helpers shared by the command-line tools (see tool-util.h). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool-util.h"

static int digit_value(char c, unsigned int base)
{
	unsigned int v;

	if (c >= '0' && c <= '9')
		v = c - '0';
	else if (c >= 'a' && c <= 'f')
		v = c - 'a' + 10;
	else if (c >= 'A' && c <= 'F')
		v = c - 'A' + 10;
	else
		return -1;
	return v < base ? (int)v : -1;
}

static int suffix_shift(char c)
{
	switch (c) {
	case 'k': case 'K': return 10;
	case 'm': case 'M': return 20;
	case 'g': case 'G': return 30;
	case 't': case 'T': return 40;
	default: return -1;
	}
}

void tool_print_exit(const char *prog, const char *s, int fail)
{
	if (fputs(s, stdout) == EOF || fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "%s: write error: %s\n", prog, strerror(errno ? errno : EIO));
		exit(fail);
	}
	exit(0);
}

int tool_parse_size(const char *s, const char *end, uint64_t *out)
{
	unsigned int base = 10;
	uint64_t v = 0;
	const char *p = s;
	int shift = 0, d;

	if (!end)
		end = s + strlen(s);
	if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	if (p == end || digit_value(*p, base) < 0)
		return -EINVAL;
	for (; p < end && (d = digit_value(*p, base)) >= 0; p++) {
		if (v > (UINT64_MAX - d) / base)
			return -ERANGE;
		v = v * base + d;
	}
	if (p < end) {
		shift = suffix_shift(*p++);
		if (shift < 0 || p != end)
			return -EINVAL;
		if (v > (UINT64_MAX >> shift))
			return -ERANGE;
	}
	*out = v << shift;
	return 0;
}

const char *tool_fmt_len(uint64_t v, char *buf, size_t bufsz)
{
	static const char units[] = "TGMK";
	int i;

	for (i = 0; i < 4; i++) {
		int shift = 40 - 10 * i;

		if (v && !(v & ((UINT64_C(1) << shift) - 1))) {
			snprintf(buf, bufsz, "%" PRIu64 "%c", v >> shift, units[i]);
			return buf;
		}
	}
	snprintf(buf, bufsz, "0x%" PRIx64, v);
	return buf;
}

const char *tool_fmt_bytes(uint64_t v, char *buf, size_t bufsz)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	int i;

	if (v < KiB) {
		snprintf(buf, bufsz, "%" PRIu64 " B", v);
		return buf;
	}
	for (i = 3; i > 0 && v < (KiB << (10 * i)); i--)
		;
	snprintf(buf, bufsz, "%.1f %s", (double)v / (double)(KiB << (10 * i)), units[i]);
	return buf;
}

const char *tool_fmt_count(uint64_t v, char *buf, size_t bufsz)
{
	char tmp[32];
	size_t n, i, o = 0;

	n = (size_t)snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	for (i = 0; i < n && o + 2 < bufsz; i++) {
		if (i && (n - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = tmp[i];
	}
	buf[o] = '\0';
	return buf;
}

const char *tool_errno_name(int err)
{
	static __thread char unknown[16];
	const char *name = strerrorname_np(err);

	if (name)
		return name;
	snprintf(unknown, sizeof(unknown), "E%d", err);
	return unknown;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

void tool_rng_seed(struct tool_rng *r, uint64_t seed)
{
	int i;

	for (i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t tool_rng_next(struct tool_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

uint64_t tool_rng_below(struct tool_rng *r, uint64_t n)
{
	/* Reject the top partial block so every value is equally likely. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;

	do
		x = tool_rng_next(r);
	while (x >= limit);
	return x % n;
}
