// SPDX-License-Identifier: MIT
/* Trace parser and validator: the grammar is doc/trace-format.md. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool-util.h"
#include "trace.h"

#define MAX_REGIONS 64
#define MAX_LINE (64u << 20)	/* bytes: 3 M ranges; a longer line is not a trace */

struct parser {
	struct trace *t;
	const char *name;
	unsigned int line;
	int have_header;
	size_t ops_cap, ranges_cap;
	char *err;
	size_t errsz;
	char shown[2][80];	/* words as errors quote them: word() */
	int nshown;
};

/*
 * A word of the trace as an error quotes it: whole up to 64 bytes, else
 * its start and its length, so that the reason after it still fits in the
 * message (a word of megabytes is still one bad word).  Two per message.
 */
static const char *word(struct parser *p, const char *w)
{
	char *s = p->shown[p->nshown++ & 1];
	size_t n = strlen(w);

	if (n <= 64)
		return w;
	snprintf(s, sizeof(p->shown[0]), "%.40s... (%zu bytes)", w, n);
	return s;
}

static int __attribute__((format(printf, 2, 3))) bad(struct parser *p, const char *fmt, ...)
{
	size_t n;
	va_list ap;

	n = (size_t)snprintf(p->err, p->errsz, "%s:%u: ", p->name, p->line);
	if (n < p->errsz) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errsz - n, fmt, ap);
		va_end(ap);
		/* Words of the trace are quoted: no control byte reaches a
		 * terminal, nor any other byte a trace (ASCII) cannot hold. */
		for (char *c = p->err + n; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
	}
	return -EINVAL;
}

/*
 * getline() with a bound: the length of the next line (newline included),
 * -1 at a clean end of file, -2 when the line is longer than max bytes,
 * -3 on a read or allocation error (errno set).  Unlike getline(), which
 * reports ENOMEM like EOF without the stream's error flag, a failure here
 * is never mistaken for the end of a shorter trace.
 */
static ssize_t read_line(FILE *f, char **buf, size_t *cap, size_t max)
{
	size_t len = 0;
	int c;

	for (;;) {
		c = getc_unlocked(f);
		if (c == EOF)
			break;
		if (len + 2 > *cap) {
			/* room for max bytes and the NUL, no more */
			size_t ncap = *cap ? *cap * 2 : 256;
			char *nb;

			if (*cap >= max + 1)
				return -2;
			if (ncap > max + 1)
				ncap = max + 1;
			nb = realloc(*buf, ncap);
			if (!nb)
				return -3;
			*buf = nb;
			*cap = ncap;
		}
		(*buf)[len++] = (char)c;
		if (c == '\n')
			break;
	}
	if (ferror(f))
		return -3;
	if (!len)
		return -1;
	(*buf)[len] = '\0';
	return (ssize_t)len;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 256;
	void *n;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	n = realloc(*arr, ncap * elem);
	if (!n)
		return -ENOMEM;
	*arr = n;
	*cap = ncap;
	return 0;
}

/* Splits a line into whitespace-separated words, stopping at '#'. */
/* The words of s, a comment already cut off: their number, and with w (room
 * for that many) each word NUL-terminated in place. */
static size_t split_words(char *s, char **w)
{
	size_t n = 0;

	for (;;) {
		s += strspn(s, " \t\r\n");
		if (!*s)
			return n;
		if (w)
			w[n] = s;
		n++;
		s += strcspn(s, " \t\r\n");
		if (*s && w)
			*s++ = '\0';
	}
}

static int word_size(struct parser *p, const char *w, const char *what, uint64_t *v)
{
	int r = tool_parse_size(w, NULL, v);

	if (r == -ERANGE)
		return bad(p, "%s '%s' does not fit in 64 bits", what, word(p, w));
	if (r)
		return bad(p, "%s '%s' is not a number (decimal or 0x hex, optional K/M/G/T)",
			   what, word(p, w));
	return 0;
}

static int parse_header(struct parser *p, char **w, int n)
{
	uint64_t v;

	if (n != 2 || word_size(p, w[1], "trace version", &v))
		return bad(p, "expected 'cvmdma-trace %d'", TRACE_VERSION);
	if (v != TRACE_VERSION)
		return bad(p, "trace version %" PRIu64 " is not supported (this tool reads %d)",
			   v, TRACE_VERSION);
	p->have_header = 1;
	return 0;
}

static int check_region(struct parser *p, const struct trace_region *r)
{
	const struct trace *t = p->t;
	unsigned int i;

	if (r->page_size < 4096 || (r->page_size & (r->page_size - 1)))
		return bad(p, "page size %u is not a power of two >= 4096", r->page_size);
	if (!r->size || r->size % r->page_size || r->gpa % r->page_size)
		return bad(p, "region gpa and size must be non-zero multiples of the page size");
	if (r->size / r->page_size > (UINT64_C(1) << 32))
		return bad(p, "region holds more than 2^32 pages");
	if (r->gpa + r->size < r->gpa)
		return bad(p, "region does not end below 2^64");
	for (i = 0; i < t->nregions; i++) {
		const struct trace_region *o = &t->regions[i];

		if (r->gpa < o->gpa + o->size && o->gpa < r->gpa + r->size)
			return bad(p, "region overlaps the region declared on line %u", o->line);
	}
	return 0;
}

static int parse_region(struct parser *p, char **w, int n)
{
	struct trace *t = p->t;
	struct trace_region r = { .page_size = 4096, .line = p->line };
	uint64_t v;
	int i;

	if (t->nops)
		return bad(p, "regions must be declared before the first conversion");
	if (n < 4)
		return bad(p, "expected 'region GPA SIZE shared|private [page=SIZE]'");
	if (word_size(p, w[1], "region gpa", &r.gpa) || word_size(p, w[2], "region size", &r.size))
		return -EINVAL;
	if (!strcmp(w[3], "shared"))
		r.init = CVM_SHARED;
	else if (!strcmp(w[3], "private"))
		r.init = CVM_PRIVATE;
	else
		return bad(p, "initial state '%s' must be 'shared' or 'private'", word(p, w[3]));
	for (i = 4; i < n; i++) {
		if (strncmp(w[i], "page=", 5))
			return bad(p, "unknown region attribute '%s' (known: page=SIZE)", word(p, w[i]));
		if (i > 4)
			return bad(p, "page= given twice");
		if (word_size(p, w[i] + 5, "page size", &v))
			return -EINVAL;
		if (v > UINT32_MAX)
			return bad(p, "page size '%s' is too large", word(p, w[i] + 5));
		r.page_size = (uint32_t)v;
	}
	if (check_region(p, &r))
		return -EINVAL;
	if (t->nregions == MAX_REGIONS)
		return bad(p, "more than %d regions", MAX_REGIONS);
	t->regions[t->nregions++] = r;
	return 0;
}

static int find_region(const struct trace *t, uint64_t gpa, uint64_t len)
{
	unsigned int i;

	for (i = 0; i < t->nregions; i++) {
		const struct trace_region *r = &t->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return (int)i;
	}
	return -1;
}

static int parse_range(struct parser *p, const char *w, struct cvm_range *out, int *region)
{
	const char *plus = strchr(w, '+');
	int r;

	if (!plus)
		return bad(p, "range '%s' must be GPA+LENGTH", word(p, w));
	r = tool_parse_size(w, plus, &out->gpa);
	if (!r)
		r = tool_parse_size(plus + 1, NULL, &out->length);
	if (r == -ERANGE)
		return bad(p, "range '%s': a number does not fit in 64 bits", word(p, w));
	if (r)
		return bad(p, "range '%s' must be GPA+LENGTH (numbers: decimal or 0x hex, "
			   "optional K/M/G/T)", word(p, w));
	if (!out->length)
		return bad(p, "range '%s' has length 0", word(p, w));
	if (out->gpa + out->length < out->gpa)
		return bad(p, "range '%s' does not end below 2^64", word(p, w));
	*region = find_region(p->t, out->gpa, out->length);
	if (*region < 0)
		return bad(p, "range '%s' is not inside one declared region", word(p, w));
	if ((out->gpa | out->length) & (p->t->regions[*region].page_size - 1))
		return bad(p, "range '%s' is not aligned to the region's %u-byte pages", word(p, w),
			   p->t->regions[*region].page_size);
	return 0;
}

static int parse_conversion(struct parser *p, char **w, int n, enum cvm_state to)
{
	struct trace *t = p->t;
	struct trace_op op = { .line = p->line, .to = to, .first = t->nranges };
	int i, reg = -1, reg0 = -1;

	if (!t->nregions)
		return bad(p, "conversion before any region declaration");
	if (n < 2)
		return bad(p, "'%s' needs at least one GPA+LENGTH range", word(p, w[0]));
	if (grow((void **)&t->ranges, &p->ranges_cap, t->nranges + n - 1, sizeof(*t->ranges)) ||
	    grow((void **)&t->ops, &p->ops_cap, t->nops + 1, sizeof(*t->ops)))
		return bad(p, "out of memory");
	for (i = 1; i < n; i++) {
		struct cvm_range *rg = &t->ranges[t->nranges + i - 1];

		if (parse_range(p, w[i], rg, &reg))
			return -EINVAL;
		if (reg0 >= 0 && reg != reg0)
			return bad(p, "a batch must stay inside one region: '%s' is in the region "
				   "of line %u, the first range in the region of line %u", word(p, w[i]),
				   t->regions[reg].line, t->regions[reg0].line);
		reg0 = reg;
		/* Totals for the summary: saturate rather than wrap. */
		uint64_t *sum = to == CVM_SHARED ? &t->bytes_to_shared : &t->bytes_to_private;

		if (__builtin_add_overflow(*sum, rg->length, sum))
			*sum = UINT64_MAX;
	}
	op.region = (unsigned int)reg0;
	op.nranges = (unsigned int)(n - 1);
	t->nranges += op.nranges;
	t->ops[t->nops++] = op;
	return 0;
}

static int parse_line(struct parser *p, char *line)
{
	/* A batch line may hold thousands of ranges: count its words first. */
	char *hash = strchr(line, '#'), **w;
	size_t n;
	int r;

	if (hash)
		*hash = '\0';
	n = split_words(line, NULL);
	if (!n)
		return 0;
	if (n > INT_MAX)
		return bad(p, "more than %d words on a line", INT_MAX);
	w = malloc(n * sizeof(*w));
	if (!w)
		return bad(p, "out of memory");
	split_words(line, w);
	if (!p->have_header && strcmp(w[0], "cvmdma-trace"))
		r = bad(p, "a trace starts with 'cvmdma-trace %d' (got '%s')", TRACE_VERSION, word(p, w[0]));
	else if (!strcmp(w[0], "cvmdma-trace"))
		r = p->have_header ? bad(p, "second 'cvmdma-trace' header") : parse_header(p, w, (int)n);
	else if (!strcmp(w[0], "region"))
		r = parse_region(p, w, (int)n);
	else if (!strcmp(w[0], "shared"))
		r = parse_conversion(p, w, (int)n, CVM_SHARED);
	else if (!strcmp(w[0], "private"))
		r = parse_conversion(p, w, (int)n, CVM_PRIVATE);
	else
		r = bad(p, "unknown statement '%s' (expected region, shared or private)", word(p, w[0]));
	free(w);
	return r;
}

int trace_load(const char *path, struct trace *t, char *err, size_t errsz)
{
	struct parser p = { .t = t, .err = err, .errsz = errsz };
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int r = 0;

	memset(t, 0, sizeof(*t));
	t->name = strdup(strcmp(path, "-") ? path : "<stdin>");
	t->regions = calloc(MAX_REGIONS, sizeof(*t->regions));
	p.name = t->name ? t->name : path;
	if (!f) {
		r = -errno;
		snprintf(err, errsz, "%s: %s", path, strerror(-r));
		goto out;
	}
	if (!t->name || !t->regions) {
		r = -ENOMEM;
		snprintf(err, errsz, "%s: out of memory", path);
		goto out;
	}
	while ((len = read_line(f, &line, &cap, MAX_LINE)) >= 0) {
		p.line++;
		if ((size_t)len != strlen(line)) {
			r = bad(&p, "line contains a NUL byte");
			goto out;
		}
		/* Only the last line can lack its '\n': a trace cut short
		 * (a full disk, a writer killed) would replay as a whole one,
		 * its last batch cut in the middle. */
		if (line[len - 1] != '\n') {
			r = bad(&p, "the last line has no newline: the trace may be cut short");
			goto out;
		}
		r = parse_line(&p, line);
		if (r)
			goto out;
	}
	if (len == -2) {
		p.line++;
		r = bad(&p, "line longer than %u MiB", MAX_LINE >> 20);
	} else if (len == -3) {
		r = errno ? -errno : -EIO;
		snprintf(err, errsz, "%s: read error: %s", p.name, strerror(-r));
	} else if (!p.have_header) {
		r = -EINVAL;
		snprintf(err, errsz, "%s: empty trace (no 'cvmdma-trace %d' header)", p.name,
			 TRACE_VERSION);
	} else if (!t->nregions) {
		r = -EINVAL;
		snprintf(err, errsz, "%s: no region declared", p.name);
	}
out:
	free(line);
	if (f && f != stdin)
		fclose(f);
	if (r)
		trace_free(t);
	return r;
}

void trace_free(struct trace *t)
{
	free(t->name);
	free(t->regions);
	free(t->ops);
	free(t->ranges);
	memset(t, 0, sizeof(*t));
}
