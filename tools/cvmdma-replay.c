// SPDX-License-Identifier: MIT
/*
 * cvmdma-replay: replay a conversion trace against a DMA backend under one
 * or several mapping policies and show what each costs, side by side with
 * one-mapping-per-page (what VMMs do today).  See cvmdma-replay(1).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cvmdma.h>

#include "replay.h"
#include "tool-util.h"
#include "trace.h"
#include "vfio-setup.h"

#define TYPE1_DEFAULT_LIMIT 65535
#define MAX_POLICIES 16
#define NCOLS 14

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct opts {
	struct replay_cfg cfg;
	struct policy pols[MAX_POLICIES];
	unsigned int npols;
	bool json, quiet, limit_none;
	int verbose;
	const char *trace;
};

static const char *const rules_names[] = { "type1", "iommufd", "cut" };
static const char *const backend_names[] = { "auto", "type1", "iommufd", "model" };

static void __attribute__((noreturn, format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cvmdma-replay: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'cvmdma-replay --help'.\n", stderr);
	exit(EXIT_USAGE);
}

static void log_cb(void *opaque, int prio, const char *msg)
{
	fprintf(stderr, "libcvmdma: %s\n", msg);
}

/* ---- options ---- */

static const char usage_text[] =
	"usage: cvmdma-replay [OPTIONS] TRACE\n"
	"  -b, --backend model|type1|iommufd  where to map (default model: no root, no IOMMU)\n"
	"  -r, --rules type1|iommufd|cut      model: which kernel's rules (default type1)\n"
	"      --entry-limit N|none           model: mapping limit (default 65535 for type1)\n"
	"  -d, --device BDF                   type1/iommufd: a PCI device bound to vfio-pci\n"
	"  -p, --policy POLICY                per-page|auto|unbounded|granule=SIZE|compact\n"
	"                                     (default auto; repeated: one row each)\n"
	"  -c, --compare[=POLICY,...]         several policies side by side\n"
	"                                     (default set: per-page,auto,unbounded)\n"
	"      --no-cut                       never use a kernel cut (CVM_DMA_NO_CUT)\n"
	"      --json                         machine-readable results on stdout\n"
	"  -q, --quiet                        no progress line, no library messages\n"
	"  -v, --verbose                      more library messages (repeat for debug)\n"
	"  -h, --help                         this text\n"
	"  -V, --version                      the tool's and the library's versions\n"
	"TRACE '-' reads standard input.  See cvmdma-replay(1).\n";

static void __attribute__((noreturn)) version(void)
{
	char s[128];

	snprintf(s, sizeof(s), "cvmdma-replay (libcvmdma) %s\nlibrary: libcvmdma %s\n",
		 PACKAGE_VERSION, cvm_version());
	tool_print_exit("cvmdma-replay", s, EXIT_FAILED);
}

static void add_policy(struct opts *o, const char *name)
{
	int err;

	if (o->npols == MAX_POLICIES)
		usage_error("at most %d policies", MAX_POLICIES);
	err = policy_parse(name, &o->pols[o->npols]);
	/* A name is kept for the table and JSON: one that does not fit is
	 * refused as such, not as a bad granule or an unknown policy. */
	if (err == -ENAMETOOLONG)
		usage_error("policy '%.24s...' is too long: a policy name has at most %zu bytes",
			    name, sizeof(o->pols[0].name) - 1);
	if (err && !strncmp(name, "granule=", 8))
		usage_error("policy '%s': the granule must be a power of two of at least 4K "
			    "(decimal or 0x hex, optional K/M/G/T)", name);
	if (err)
		usage_error("unknown policy '%s' (per-page, auto, unbounded, granule=SIZE with "
			    "SIZE a power of two >= 4K, compact)", name);
	o->npols++;
}

/* "a,b,c": every element a policy; an empty list or element ("--compare=",
 * "auto,,unbounded", "auto,") is a mistake, not the default set. */
static void add_policy_list(struct opts *o, const char *list)
{
	char *copy = strdup(list), *tok, *next;

	if (!copy)
		usage_error("out of memory");
	for (tok = copy; tok; tok = next) {
		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		if (!*tok)
			usage_error("--compare: empty policy name in '%s' (a list is POLICY,POLICY,...; "
				    "--compare alone takes the default set)", list);
		add_policy(o, tok);
	}
	free(copy);
}

static unsigned int pick(const char *opt, const char *arg, const char *const *names,
			 unsigned int n, unsigned int first)
{
	unsigned int i;

	for (i = first; i < n; i++)
		if (!strcmp(arg, names[i]))
			return i;
	usage_error("%s: unknown value '%s'", opt, arg);
}

static void parse_entry_limit(struct opts *o, const char *arg)
{
	uint64_t v;

	if (!strcmp(arg, "none")) {
		o->cfg.entry_limit = UINT32_MAX;
		o->limit_none = true;
		return;
	}
	if (tool_parse_size(arg, NULL, &v) || v > UINT32_MAX)
		usage_error("--entry-limit: '%s' is not a count up to 4294967295 or 'none'", arg);
	o->cfg.entry_limit = (uint32_t)v;
	o->limit_none = false;          /* the last --entry-limit counts */
}

static void parse_options(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "rules", required_argument, NULL, 'r' },
		{ "entry-limit", required_argument, NULL, 'L' },
		{ "device", required_argument, NULL, 'd' },
		{ "policy", required_argument, NULL, 'p' },
		{ "compare", optional_argument, NULL, 'c' },
		{ "no-cut", no_argument, NULL, 'N' },
		{ "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	bool have_rules = false, have_limit = false, compare = false, have_policy = false;
	char *device = NULL;
	int c;

	o->cfg.backend = CVM_BACKEND_MODEL;
	while ((c = getopt_long(argc, argv, "b:r:d:p:c::qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'b': o->cfg.backend = pick("--backend", optarg, backend_names, 4, 1); break;
		case 'r': o->cfg.rules = pick("--rules", optarg, rules_names, 3, 0);
			  have_rules = true; break;
		case 'L': parse_entry_limit(o, optarg); have_limit = true; break;
		case 'd': o->cfg.device = device = optarg; break;
		case 'p': add_policy(o, optarg); have_policy = true; break;
		case 'c': compare = true; if (optarg) add_policy_list(o, optarg); break;
		case 'N': o->cfg.flags |= CVM_DMA_NO_CUT; break;
		case 'J': o->json = true; break;
		case 'q': o->quiet = true; break;
		case 'v': o->verbose++; break;
		case 'h': tool_print_exit("cvmdma-replay", usage_text, EXIT_FAILED);
		case 'V': version();
		default: fputs("Try 'cvmdma-replay --help'.\n", stderr); exit(EXIT_USAGE);
		}
	}
	if (optind + 1 != argc)
		usage_error(optind == argc ? "no trace given" :
			    compare ? "one trace only (a policy list follows -c or --compare= with no space)" :
			    "one trace only");
	o->trace = argv[optind];
	if (compare && have_policy)
		usage_error("--policy and --compare exclude each other (--compare=POLICY,... "
			    "names the policies)");
	if (compare && !o->npols)
		add_policy_list(o, "per-page,auto,unbounded");
	if (!o->npols)
		add_policy(o, "auto");
	if (o->cfg.backend == CVM_BACKEND_MODEL && o->cfg.device)
		usage_error("--device needs --backend type1 or iommufd");
	if (o->cfg.backend != CVM_BACKEND_MODEL && !o->cfg.device)
		usage_error("--backend %s needs --device BDF", backend_names[o->cfg.backend]);
	if (device) {
		/* sysfs names devices in lower case: 0000:00:0A.0 is 0a. */
		for (char *p = device; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!vfio_bdf_valid(device))
			usage_error("--device '%s' is not a PCI address (as 0000:00:03.0)", device);
	}
	if (o->cfg.backend != CVM_BACKEND_MODEL && (have_rules || have_limit))
		usage_error("--rules and --entry-limit apply to the model backend only");
}

/* ---- results ---- */

static uint64_t calls(const struct result *r)
{
	return r->st.map_calls + r->st.unmap_calls + r->st.cut_calls;
}

/* The per-page row the others are compared with, if it completed. */
static const struct result *baseline(const struct result *res, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (res[i].pol.flags & CVM_DMA_PER_PAGE && res[i].stage == FAIL_NONE)
			return &res[i];
	return NULL;
}

/* base / this: "how many times fewer"; < 0 when it cannot be said. */
static double ratio(uint64_t base, uint64_t v)
{
	if (!v)
		return base ? -2 : -1;   /* -2: infinitely fewer; -1: both zero */
	return (double)base / (double)v;
}

static const char *fmt_ratio(const struct result *r, const struct result *base,
			     uint64_t b, uint64_t v, char *buf, size_t sz)
{
	double x = ratio(b, v);

	if (!base || r->stage != FAIL_NONE || x == -1)
		snprintf(buf, sz, "-");
	else if (x == -2)
		snprintf(buf, sz, "all");
	else
		snprintf(buf, sz, x >= 100 ? "%.0fx" : x >= 10 ? "%.1fx" : "%.2fx", x);
	return buf;
}

static const char *fmt_time(uint64_t ns, char *buf, size_t sz)
{
	if (ns >= 10000000000u)
		snprintf(buf, sz, "%.1f s", ns / 1e9);
	else if (ns >= 1000000000u)
		snprintf(buf, sz, "%.2f s", ns / 1e9);
	else if (ns < 1000000)
		snprintf(buf, sz, "%.0f us", ns / 1e3);
	else
		snprintf(buf, sz, "%.1f ms", ns / 1e6);
	return buf;
}

static const char *fmt_result(const struct result *r, char *buf, size_t sz)
{
	switch (r->stage) {
	case FAIL_NONE: snprintf(buf, sz, "ok"); break;
	case FAIL_SETUP: snprintf(buf, sz, "FAILED setup"); break;
	case FAIL_VERIFY: snprintf(buf, sz, "MISMATCH"); break;
	default: snprintf(buf, sz, "FAILED line %u", r->line); break;
	}
	return buf;
}

/* What the policy became on this backend: "page", "2M", "none"; "+cut"
 * when private conversions cut hitlessly. */
static const char *fmt_granule(const struct result *r, char *buf, size_t sz)
{
	char g[32];

	if (!r->info.sz)
		return strcpy(buf, "-");
	if (r->pol.flags & CVM_DMA_PER_PAGE)
		strcpy(g, "page");
	else if (r->info.split_granule == UINT64_MAX)
		strcpy(g, "none");
	else
		tool_fmt_len(r->info.split_granule, g, sizeof(g));
	snprintf(buf, sz, "%s%s", g, r->info.can_cut ? "+cut" : "");
	return buf;
}

static bool over_type1(const struct result *r)
{
	return r->st.mappings_peak > TYPE1_DEFAULT_LIMIT;
}

static void fill_row(char cells[NCOLS][40], const struct result *r, const struct result *base)
{
	char *c[NCOLS];
	int i;

	for (i = 0; i < NCOLS; i++)
		c[i] = cells[i];
	snprintf(c[0], 40, "%.39s", r->pol.name);
	fmt_granule(r, c[1], 40);
	fmt_result(r, c[2], 40);
	tool_fmt_count(r->st.mappings, c[3], 40);
	tool_fmt_count(r->st.mappings_peak, c[4], 38);
	if (over_type1(r))
		strcat(c[4], "!");
	tool_fmt_count(r->st.map_calls, c[5], 40);
	tool_fmt_count(r->st.unmap_calls, c[6], 40);
	tool_fmt_count(r->st.cut_calls, c[7], 40);
	tool_fmt_count(r->st.disruptive_splits, c[8], 40);
	tool_fmt_bytes(r->st.disrupted_bytes, c[9], 40);
	fmt_time(r->wall_ns, c[10], 40);
	fmt_ratio(r, base, base ? base->st.mappings_peak : 0, r->st.mappings_peak, c[11], 40);
	fmt_ratio(r, base, base ? calls(base) : 0, calls(r), c[12], 40);
	fmt_ratio(r, base, base ? base->wall_ns : 0, r->wall_ns, c[13], 40);
}

static void print_header(const struct opts *o, const struct trace *t)
{
	char a[32], b[32], c[32], d[32];
	uint64_t total = 0;
	unsigned int i, shared = 0;

	for (i = 0; i < t->nregions; i++) {
		total += t->regions[i].size;
		shared += t->regions[i].init == CVM_SHARED;
	}
	printf("trace    %s\n         %u region%s, %s (%s); %s line%s: %s to shared, %s to "
	       "private\n", t->name, t->nregions, t->nregions > 1 ? "s" : "",
	       tool_fmt_bytes(total, a, sizeof(a)),
	       !shared ? "starts private" : shared == t->nregions ? "starts shared" :
	       "starts mixed", tool_fmt_count(t->nops, b, sizeof(b)), t->nops == 1 ? "" : "s",
	       tool_fmt_bytes(t->bytes_to_shared, c, sizeof(c)),
	       tool_fmt_bytes(t->bytes_to_private, d, sizeof(d)));
	if (o->cfg.backend != CVM_BACKEND_MODEL) {
		printf("backend  %s, device %s\n\n", backend_names[o->cfg.backend], o->cfg.device);
		return;
	}
	if (o->limit_none || (o->cfg.rules != CVM_MODEL_TYPE1 && !o->cfg.entry_limit))
		snprintf(a, sizeof(a), "no mapping limit");
	else
		snprintf(a, sizeof(a), "mapping limit %s",
			 tool_fmt_count(o->cfg.entry_limit ? o->cfg.entry_limit :
					TYPE1_DEFAULT_LIMIT, b, sizeof(b)));
	printf("backend  model, %s rules, %s\n\n", rules_names[o->cfg.rules], a);
}

/* A centred "--- title ---" over the columns from `first` to the last. */
static void print_group(const size_t *w, unsigned int first, const char *title)
{
	size_t pad = 0, span = 0, t = strlen(title) + 2, i;

	for (i = 0; i < first; i++)
		pad += w[i] + 2;
	for (i = first; i < NCOLS; i++)
		span += w[i] + (i + 1 < NCOLS ? 2 : 0);
	if (span < t + 2)
		span = t + 2;
	printf("%*s", (int)pad, "");
	for (i = 0; i < (span - t) / 2; i++)
		putchar('-');
	printf(" %s ", title);
	for (i = 0; i < span - t - (span - t) / 2; i++)
		putchar('-');
	putchar('\n');
}

static void print_legend(const struct opts *o, const struct result *res, unsigned int n)
{
	bool flagged = false, failed = false;
	unsigned int i;
	char lim[32];

	for (i = 0; i < n; i++) {
		flagged |= over_type1(&res[i]);
		failed |= res[i].stage != FAIL_NONE;
	}
	puts("\ngranule: mappings never cross it (page: one per page; none: unbounded;\n"
	     "  +cut: private conversions cut mappings hitlessly);\n"
	     "live/peak: IOMMU mappings; map/unmap/cut: backend calls (ioctls on a real kernel);\n"
	     "splits/disrupted: still-shared memory unmapped and remapped for a moment;\n"
	     "vs per-page: how many times fewer mappings at peak, calls and time than one\n"
	     "  mapping per 4 KiB page, what VMMs do today.");
	if (o->cfg.backend != CVM_BACKEND_MODEL)
		puts("time: each policy maps memory of its own, never touched before: the kernel\n"
		     "  faults in every page it pins, the same under every policy.");
	if (flagged)
		printf("! peak above %s, VFIO type1's default dma_entry_limit: on a default "
		       "type1 host this\n  policy fails with ENOSPC (iommufd has no such "
		       "limit).\n", tool_fmt_count(TYPE1_DEFAULT_LIMIT, lim, sizeof(lim)));
	if (failed)
		putchar('\n');
	for (i = 0; i < n; i++)
		if (res[i].stage != FAIL_NONE)
			printf("%s: %s\n", res[i].pol.name, res[i].msg);
}

static void print_table(const struct opts *o, const struct trace *t,
			const struct result *res, unsigned int n)
{
	static const char *const head[NCOLS] = {
		"policy", "granule", "result", "live", "peak", "map", "unmap", "cut", "splits",
		"disrupted", "time", "peak", "calls", "time",
	};
	const struct result *base = baseline(res, n);
	char (*cells)[NCOLS][40] = calloc(n, sizeof(*cells));
	size_t w[NCOLS];
	unsigned int i, j;

	if (!cells) {
		fputs("cvmdma-replay: out of memory for the table\n", stderr);
		return;
	}
	for (j = 0; j < NCOLS; j++)
		w[j] = strlen(head[j]);
	for (i = 0; i < n; i++) {
		fill_row(cells[i], &res[i], base);
		for (j = 0; j < NCOLS; j++)
			if (strlen(cells[i][j]) > w[j])
				w[j] = strlen(cells[i][j]);
	}
	print_header(o, t);
	print_group(w, 11, "vs per-page");
	for (j = 0; j < NCOLS; j++)
		printf(j < 3 ? "%-*s  " : j == NCOLS - 1 ? "%*s\n" : "%*s  ", (int)w[j], head[j]);
	for (i = 0; i < n; i++)
		for (j = 0; j < NCOLS; j++)
			printf(j < 3 ? "%-*s  " : j == NCOLS - 1 ? "%*s\n" : "%*s  ", (int)w[j],
			       cells[i][j]);
	free(cells);
	print_legend(o, res, n);
}

/* ---- JSON ---- */

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

/* A JSON string; a byte that is not part of valid UTF-8 (a file name may
 * hold any) becomes U+FFFD, so that the output always parses. */
static void json_str(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	putchar('"');
	while (*u) {
		size_t n;

		if (*u == '"' || *u == '\\') {
			printf("\\%c", *u++);
		} else if (*u < 0x20) {
			printf("\\u%04x", *u++);
		} else if (*u < 0x80) {
			putchar(*u++);
		} else if ((n = utf8_len(u))) {
			fwrite(u, 1, n, stdout);
			u += n;
		} else {
			fputs("\\ufffd", stdout);
			u++;
		}
	}
	putchar('"');
}

static void json_ratio(const char *key, const struct result *r, const struct result *base,
		       uint64_t b, uint64_t v, bool last)
{
	double x = ratio(b, v);

	printf("\"%s\": ", key);
	if (!base || r->stage != FAIL_NONE || x < 0)
		printf("null");
	else
		printf("%.4f", x);
	fputs(last ? "}" : ", ", stdout);
}

/* The effective split granule in bytes; "null" for unlimited or unknown. */
static const char *granule_json(const struct result *r, char *buf, size_t sz)
{
	if (!r->info.sz || r->info.split_granule == UINT64_MAX)
		return "null";
	snprintf(buf, sz, "%" PRIu64, r->info.split_granule);
	return buf;
}

static void json_result(const struct result *r, const struct result *base)
{
	static const char *const stages[] = { "none", "setup", "region", "line", "verify" };
	const struct cvm_dma_stats *s = &r->st;
	char g[32];

	printf("    {\"policy\": ");
	json_str(r->pol.name);
	printf(", \"ok\": %s, \"failed_at\": ", r->stage == FAIL_NONE ? "true" : "false");
	if (r->stage == FAIL_NONE)
		printf("null, \"failed_line\": null, \"errno\": null, \"error\": null, "
		       "\"message\": null");
	else {
		json_str(stages[r->stage]);
		printf(r->line ? ", \"failed_line\": %u" : ", \"failed_line\": null", r->line);
		printf(", \"errno\": %d, \"error\": ", -r->err);
		json_str(tool_errno_name(-r->err));
		printf(", \"message\": ");
		json_str(r->msg);
	}
	printf(",\n     \"lines_applied\": %zu, \"live_mappings\": %" PRIu64
	       ", \"peak_mappings\": %" PRIu64 ", \"mapped_bytes\": %" PRIu64
	       ", \"map_calls\": %" PRIu64 ", \"unmap_calls\": %" PRIu64
	       ", \"cut_calls\": %" PRIu64 ",\n     \"disruptive_splits\": %" PRIu64
	       ", \"disrupted_bytes\": %" PRIu64 ", \"wall_ns\": %" PRIu64
	       ", \"exceeds_type1_default_limit\": %s,\n     \"split_granule\": %s, "
	       "\"can_cut\": %s, \"vs_per_page\": {",
	       r->lines_applied, s->mappings, s->mappings_peak, s->mapped_bytes, s->map_calls,
	       s->unmap_calls, s->cut_calls, s->disruptive_splits, s->disrupted_bytes,
	       r->wall_ns, over_type1(r) ? "true" : "false", granule_json(r, g, sizeof(g)),
	       r->info.sz && r->info.can_cut ? "true" : "false");
	json_ratio("peak", r, base, base ? base->st.mappings_peak : 0, s->mappings_peak, false);
	json_ratio("calls", r, base, base ? calls(base) : 0, calls(r), false);
	json_ratio("time", r, base, base ? base->wall_ns : 0, r->wall_ns, true);
	putchar('}');
}

static void print_json(const struct opts *o, const struct trace *t,
		       const struct result *res, unsigned int n)
{
	const struct result *base = baseline(res, n);
	unsigned int i;

	printf("{\n  \"trace\": ");
	json_str(t->name);
	printf(",\n  \"lines\": %zu, \"ranges\": %zu, \"bytes_to_shared\": %" PRIu64
	       ", \"bytes_to_private\": %" PRIu64 ",\n  \"regions\": [", t->nops, t->nranges,
	       t->bytes_to_shared, t->bytes_to_private);
	for (i = 0; i < t->nregions; i++)
		printf("%s{\"line\": %u, \"gpa\": %" PRIu64 ", \"size\": %" PRIu64
		       ", \"page_size\": %u, \"initial\": \"%s\"}", i ? ", " : "",
		       t->regions[i].line, t->regions[i].gpa, t->regions[i].size,
		       t->regions[i].page_size,
		       t->regions[i].init == CVM_SHARED ? "shared" : "private");
	printf("],\n  \"backend\": \"%s\", ", backend_names[o->cfg.backend]);
	if (o->cfg.backend == CVM_BACKEND_MODEL) {
		printf("\"rules\": \"%s\", \"entry_limit\": ", rules_names[o->cfg.rules]);
		if (o->limit_none || (o->cfg.rules != CVM_MODEL_TYPE1 && !o->cfg.entry_limit))
			printf("null");
		else
			printf("%u", o->cfg.entry_limit ? o->cfg.entry_limit : TYPE1_DEFAULT_LIMIT);
	} else {
		printf("\"device\": ");
		json_str(o->cfg.device);
	}
	printf(",\n  \"results\": [\n");
	for (i = 0; i < n; i++) {
		json_result(&res[i], base);
		puts(i + 1 < n ? "," : "");
	}
	puts("  ]\n}");
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct result res[MAX_POLICIES];
	struct trace t;
	char err[512];
	unsigned int i;
	int status = EXIT_OK;

	parse_options(argc, argv, &o);
	if (trace_load(o.trace, &t, err, sizeof(err))) {
		fprintf(stderr, "cvmdma-replay: %s\nnothing was replayed\n", err);
		return EXIT_USAGE;
	}
	if (!o.quiet)
		cvm_set_log(log_cb, NULL, o.verbose > 1 ? LOG_DEBUG : o.verbose ? LOG_INFO :
			    LOG_WARNING);
	o.cfg.progress = !o.quiet && isatty(STDERR_FILENO) && t.nops >= 10000;
	for (i = 0; i < o.npols; i++) {
		replay_run(&t, &o.cfg, &o.pols[i], &res[i]);
		/* On standard error in either output: a script that keeps only
		 * the exit status and the errors still learns why. */
		if (res[i].stage != FAIL_NONE) {
			status = EXIT_FAILED;
			fprintf(stderr, "cvmdma-replay: %s: %s\n", res[i].pol.name, res[i].msg);
		}
	}
	if (o.json)
		print_json(&o, &t, res, o.npols);
	else
		print_table(&o, &t, res, o.npols);
	trace_free(&t);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "cvmdma-replay: write error: %s\n", strerror(errno ? errno : EIO));
		return EXIT_FAILED;
	}
	return status;
}
