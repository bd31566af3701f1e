// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the page-state map against the naive oracle of
 * tests/pagemap-diff.h, with the operations decoded from the input.
 * Built and run by tests/check-fuzz.sh (clang -fsanitize=fuzzer,address,
 * undefined); any mismatch aborts.
 *
 * Input: one byte picks the map (size, initial state, dense or sparse
 * oracle); then each operation is an opcode byte followed by its operands.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

#define DIFF_FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)
#include "pagemap-diff.h"

#define MAX_OPS 3000

struct input {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct input *in, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes && in->n; i++, in->n--)
		v = v << 8 | *in->p++;
	return v;
}

#define W(a, b) (a), (b)
static const uint64_t win_2p32[] = {
	W(0, 65536 + 3),
	W((1ull << 24) - 5, (1ull << 24) + 5),
	W((1ull << 32) - 65536 - 3, 1ull << 32),
};
static const uint64_t win_odd[] = {
	W(65536 - 7, 65536 + 9),
	W((1ull << 32) - 70000 - 65536 - 9, (1ull << 32) - 70000),
};

/* Boundaries near chunk edges, where forms change and runs must merge. */
struct hot {
	size_t n;
	size_t b[96];
};

static void hot_add(const struct oracle *o, struct hot *h, uint64_t p)
{
	if (h->n < ARRAY_SIZE(h->b) - 1 && p <= o->npages && o_is_boundary(o, p))
		h->b[h->n++] = o_seg(o, p);
}

/* Window ends and the pages around each chunk edge inside the windows. */
static void find_hot(const struct oracle *o, const uint64_t *win, size_t nwin, struct hot *h)
{
	uint64_t whole[2] = { 0, o->npages };

	if (!nwin) {
		win = whole;
		nwin = 1;
	}
	h->n = 0;
	for (size_t w = 0; w < nwin; w++) {
		hot_add(o, h, win[2 * w]);
		hot_add(o, h, win[2 * w + 1]);
		for (uint64_t c = (win[2 * w] + 65535) & ~0xffffull; c <= win[2 * w + 1];
		     c += 65536)
			for (uint64_t p = c >= 2 ? c - 2 : 0; p <= c + 2; p++)
				if (p >= win[2 * w] && p <= win[2 * w + 1])
					hot_add(o, h, p);
	}
	h->b[h->n++] = o->nseg;
}

static size_t boundary(struct input *in, const struct oracle *o, const struct hot *h, bool hot)
{
	uint64_t v = take(in, 3);

	return hot ? h->b[v % h->n] : v % (o->nseg + 1);
}

static void one_assign(struct diff *d, struct input *in, const struct hot *h, uint8_t opc)
{
	const struct oracle *o = &d->o;
	size_t b0 = boundary(in, o, h, opc & 0x10), b1;
	uint64_t len = take(in, opc & 0x20 ? 3 : 1), m = take(in, 1);
	enum assign_mode mode = m % 8 < 5 ? AM_REPORT : (enum assign_mode)(m % 8 - 4);

	if (b0 >= o->nseg)
		b0 = o->nseg - 1;
	b1 = opc & 0x80 ? boundary(in, o, h, opc & 0x08) : b0 + 1 + len;
	if (b1 <= b0)
		b1 = b0 + 1;
	if (b1 > o->nseg)
		b1 = o->nseg;
	diff_assign(d, o_start(o, b0), o_start(o, b1), opc & 0x40, mode,
		    mode == AM_VETO ? 1 + m / 8 % 3 : m / 8 % 4);
}

static void one_query(struct diff *d, struct input *in, const struct hot *h, uint8_t opc)
{
	const struct oracle *o = &d->o;
	size_t b = boundary(in, o, h, opc & 0x10);
	uint64_t off = take(in, 2), len = 1 + take(in, opc & 0x20 ? 3 : 1), pos;

	if (b >= o->nseg)
		b = o->nseg - 1;
	pos = o_start(o, b) + off % (o_start(o, b + 1) - o_start(o, b));
	diff_queries(d, pos, len, opc & 0x40, opc >> 7 ? 1 + off % 3 : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint8_t cfg = take(&in, 1);
	struct diff d;
	struct hot h;

	const uint64_t *win = NULL;
	size_t nwin = 0;

	switch (cfg % 4) {
	case 0:
		diff_init(&d, 1 + take(&in, 3) % (4 * 65536), cfg & 0x80, NULL, 0);
		break;
	case 1:
		diff_init(&d, 3 * 65536 + 12345, cfg & 0x80, NULL, 0);
		break;
	case 2:
		win = win_2p32;
		nwin = ARRAY_SIZE(win_2p32) / 2;
		diff_init(&d, 1ull << 32, cfg & 0x80, win, nwin);
		break;
	default:
		win = win_odd;
		nwin = ARRAY_SIZE(win_odd) / 2;
		diff_init(&d, (1ull << 32) - 70000, cfg & 0x80, win, nwin);
		break;
	}
	find_hot(&d.o, win, nwin, &h);
	for (int ops = 0; in.n && ops < MAX_OPS; ops++) {
		uint8_t opc = take(&in, 1);

		if (d.in_txn && d.ntxn >= 6)
			diff_txn_end(&d, opc & 1);
		switch (opc % 8) {
		case 4:
			diff_txn_begin(&d);
			break;
		case 5:
		case 6:
			diff_txn_end(&d, opc % 8 == 6);
			break;
		case 7:
			one_query(&d, &in, &h, opc);
			break;
		default:
			one_assign(&d, &in, &h, opc);
			break;
		}
	}
	diff_txn_end(&d, true);
	diff_fini(&d);
	diff_hook(-1, false);
	return 0;
}
