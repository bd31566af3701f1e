// SPDX-License-Identifier: MIT
/*
 * Interval map of live IOVA mappings (contract in maptable.h).
 *
 * An AVL tree whose nodes live in a dense, chunked arena and link to each
 * other by 31-bit slot numbers, with the balance factor in the spare top bit
 * of each link: 32 bytes per entry, whatever the insert order.
 *
 * Why not a B+-tree with leaf arrays: maptable_reserve(n) must make n
 * inserts infallible, and in a B+-tree every insert that lands in a full
 * leaf needs a whole new leaf, so an honest reservation costs a leaf per
 * insert.  Here an insert needs exactly one slot, so reserving n inserts
 * costs 32 * n bytes and never more.
 *
 * Live nodes always occupy slots 1..count (slot 0 is the NIL link): a
 * removal moves the last node into the hole.  No free list is needed, and
 * chunks at the end are freed as the table shrinks.  Chunk 0 grows by
 * doubling so that small tables stay small; the others are fixed 2 MiB
 * blocks, so growing a 16 M-entry table never copies it.
 */
#include <inttypes.h>

#include "internal.h"
#include "maptable.h"

#define CHUNK_SHIFT	16
#define CHUNK_NODES	(1u << CHUNK_SHIFT)
#define CHUNK_MASK	(CHUNK_NODES - 1)
#define CHUNK0_MIN	16u
#define IDX_MASK	0x7fffffffu	/* a link: slot number ... */
#define HEAVY		0x80000000u	/* ... and "this side is one level taller" */
#define NIL		0u
/* Slots must fit in a link; slot 0 is NIL. */
#define MAX_SLOTS	((uint64_t)IDX_MASK + 1)
/* An AVL tree of < 2^31 nodes is at most 1.44 * 31 = 45 levels high. */
#define MAX_DEPTH	64

struct mt_node {
	uint64_t iova;
	uint64_t last;		/* inclusive: an entry may end at 2^64 */
	uint64_t data;
	uint32_t kid[2];	/* left, right: slot | HEAVY */
};

struct maptable {
	struct mt_node **chunk;
	uint32_t nchunks;
	uint32_t tab_cap;	/* entries in chunk[] */
	uint32_t cap0;		/* slots in chunk 0 */
	uint32_t root;
	uint64_t count;		/* live entries, in slots 1..count */
	uint64_t resv;		/* inserts still promised by maptable_reserve */
};

/* The path from the root to a node: each ancestor and the side taken. */
struct mt_path {
	int depth;
	uint32_t node[MAX_DEPTH];
	uint8_t dir[MAX_DEPTH];
};

static inline struct mt_node *N(const struct maptable *mt, uint32_t i)
{
	return &mt->chunk[i >> CHUNK_SHIFT][i & CHUNK_MASK];
}

static inline uint32_t kid(const struct maptable *mt, uint32_t i, int d)
{
	return N(mt, i)->kid[d] & IDX_MASK;
}

static inline void set_kid(struct mt_node *n, int d, uint32_t c)
{
	n->kid[d] = (n->kid[d] & HEAVY) | c;
}

/* -1: left side taller, 0: balanced, +1: right side taller. */
static inline int bal(const struct mt_node *n)
{
	return (int)(n->kid[1] >> 31) - (int)(n->kid[0] >> 31);
}

static inline void set_bal(struct mt_node *n, int b)
{
	n->kid[0] = (n->kid[0] & IDX_MASK) | (b < 0 ? HEAVY : 0);
	n->kid[1] = (n->kid[1] & IDX_MASK) | (b > 0 ? HEAVY : 0);
}

static inline void to_entry(const struct mt_node *n, struct mt_entry *e)
{
	e->iova = n->iova;
	e->len = n->last - n->iova + 1;
	e->data = n->data;
}

/* ---- the arena ---- */

static uint64_t capacity(const struct maptable *mt)
{
	if (!mt->nchunks)
		return 0;
	return (uint64_t)(mt->nchunks - 1) * CHUNK_NODES + mt->cap0;
}

static int grow_chunk0(struct maptable *mt, uint64_t need)
{
	uint32_t cap = mt->cap0 ? mt->cap0 : CHUNK0_MIN;
	struct mt_node *c;

	while (cap < need)
		cap *= 2;
	if (!mt->tab_cap) {
		mt->chunk = cvm_calloc(1, sizeof(*mt->chunk));
		if (!mt->chunk)
			return -ENOMEM;
		mt->tab_cap = 1;
	}
	c = cvm_reallocarray(mt->nchunks ? mt->chunk[0] : NULL, cap, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (!mt->nchunks)
		memset(&c[0], 0, sizeof(c[0]));	/* the NIL slot */
	mt->chunk[0] = c;
	mt->nchunks = 1;
	mt->cap0 = cap;
	return 0;
}

static int add_chunk(struct maptable *mt)
{
	struct mt_node *c;

	if (mt->nchunks == mt->tab_cap) {
		uint32_t ncap = mt->tab_cap * 2;
		struct mt_node **t = cvm_reallocarray(mt->chunk, ncap, sizeof(*t));

		if (!t)
			return -ENOMEM;
		mt->chunk = t;
		mt->tab_cap = ncap;
	}
	c = cvm_reallocarray(NULL, CHUNK_NODES, sizeof(*c));
	if (!c)
		return -ENOMEM;
	mt->chunk[mt->nchunks++] = c;
	return 0;
}

/*
 * Make slots 0..need-1 exist.  On failure the chunks added here are freed
 * again; chunk 0 may keep a larger capacity, which holds no entry.
 */
static int ensure_slots(struct maptable *mt, uint64_t need)
{
	uint32_t old = mt->nchunks;
	int rc;

	if (need <= capacity(mt))
		return 0;
	if (need > MAX_SLOTS)
		return -ENOMEM;
	if (mt->nchunks <= 1 && mt->cap0 < CHUNK_NODES) {
		rc = grow_chunk0(mt, min_u64(need, CHUNK_NODES));
		if (rc)
			return rc;
		old = mt->nchunks;
	}
	while (capacity(mt) < need) {
		rc = add_chunk(mt);
		if (rc) {
			while (mt->nchunks > old)
				cvm_free(mt->chunk[--mt->nchunks]);
			return rc;
		}
	}
	return 0;
}

/* Free the last chunk once a chunk and a half stand unused and unpromised. */
static void maybe_shrink(struct maptable *mt)
{
	uint64_t keep = mt->count + 1 + mt->resv + CHUNK_NODES / 2;

	if (mt->nchunks > 1 && keep <= (uint64_t)(mt->nchunks - 1) * CHUNK_NODES)
		cvm_free(mt->chunk[--mt->nchunks]);
}

/* ---- creation ---- */

int maptable_create(struct maptable **out)
{
	struct maptable *mt;

	if (!out)
		return -EINVAL;
	mt = cvm_calloc(1, sizeof(*mt));
	if (!mt)
		return -ENOMEM;
	*out = mt;
	return 0;
}

void maptable_destroy(struct maptable *mt)
{
	if (!mt)
		return;
	for (uint32_t i = 0; i < mt->nchunks; i++)
		cvm_free(mt->chunk[i]);
	cvm_free(mt->chunk);
	cvm_free(mt);
}

uint64_t maptable_count(const struct maptable *mt)
{
	return mt ? mt->count : 0;
}

size_t maptable_bytes(const struct maptable *mt)
{
	size_t b;

	if (!mt)
		return 0;
	b = sizeof(*mt) + (size_t)mt->tab_cap * sizeof(*mt->chunk);
	if (mt->nchunks)
		b += ((size_t)(mt->nchunks - 1) * CHUNK_NODES + mt->cap0) * sizeof(struct mt_node);
	return b;
}

int maptable_reserve(struct maptable *mt, uint64_t n)
{
	int rc;

	if (!mt)
		return -EINVAL;
	/* An earlier promise already covers a smaller one. */
	if (n <= mt->resv)
		return 0;
	if (n > MAX_SLOTS)
		return -ENOMEM;
	rc = ensure_slots(mt, mt->count + 1 + n);
	if (rc)
		return rc;
	mt->resv = n;
	return 0;
}

/* ---- balancing ---- */

/*
 * Node a is two levels taller on side s: rotate.  Returns the subtree's new
 * root; *shrank says whether the subtree lost a level (always after an
 * insert, not when the taller child was balanced, which only a removal
 * can cause).
 */
static uint32_t rebalance(struct maptable *mt, uint32_t a, int s, bool *shrank)
{
	struct mt_node *na = N(mt, a);
	uint32_t c = na->kid[s] & IDX_MASK;
	struct mt_node *nc = N(mt, c);
	int sd = s ? 1 : -1, bc = bal(nc);

	if (bc == -sd) {
		/* c's inner child g rises above both. */
		uint32_t g = nc->kid[!s] & IDX_MASK;
		struct mt_node *ng = N(mt, g);
		int bg = bal(ng);

		set_kid(nc, !s, ng->kid[s] & IDX_MASK);
		set_kid(na, s, ng->kid[!s] & IDX_MASK);
		set_kid(ng, s, c);
		set_kid(ng, !s, a);
		set_bal(na, bg == sd ? -sd : 0);
		set_bal(nc, bg == -sd ? sd : 0);
		set_bal(ng, 0);
		*shrank = true;
		return g;
	}
	set_kid(na, s, nc->kid[!s] & IDX_MASK);
	set_kid(nc, !s, a);
	if (bc == 0) {
		set_bal(na, sd);
		set_bal(nc, -sd);
		*shrank = false;
	} else {
		set_bal(na, 0);
		set_bal(nc, 0);
		*shrank = true;
	}
	return c;
}

/* Hang subtree sub where p->node[i] was. */
static void replace(struct maptable *mt, const struct mt_path *p, int i, uint32_t sub)
{
	if (i == 0)
		mt->root = sub;
	else
		set_kid(N(mt, p->node[i - 1]), p->dir[i - 1], sub);
}

static void push(struct mt_path *p, uint32_t node, int dir)
{
	p->node[p->depth] = node;
	p->dir[p->depth] = (uint8_t)dir;
	p->depth++;
}

/* ---- insert ---- */

int maptable_insert(struct maptable *mt, uint64_t iova, uint64_t len, uint64_t data)
{
	struct mt_path p = { 0 };
	uint64_t last;
	uint32_t cur, n;
	int rc;

	if (!mt || !len || len - 1 > UINT64_MAX - iova)
		return -EINVAL;
	last = iova + len - 1;
	/* The descent passes the nearest entries on both sides. */
	for (cur = mt->root; cur; ) {
		const struct mt_node *c = N(mt, cur);
		int d = iova > c->iova;

		if (c->iova <= last && c->last >= iova)
			return -EEXIST;
		push(&p, cur, d);
		cur = c->kid[d] & IDX_MASK;
	}
	rc = ensure_slots(mt, mt->count + 2);
	if (rc)
		return rc;

	n = (uint32_t)++mt->count;
	*N(mt, n) = (struct mt_node){ .iova = iova, .last = last, .data = data };
	replace(mt, &p, p.depth, n);
	for (int i = p.depth - 1; i >= 0; i--) {
		struct mt_node *a = N(mt, p.node[i]);
		int d = p.dir[i], sd = d ? 1 : -1, b = bal(a);
		bool shrank;

		if (b == 0) {
			set_bal(a, sd);
			continue;
		}
		if (b == -sd)
			set_bal(a, 0);
		else
			replace(mt, &p, i, rebalance(mt, p.node[i], d, &shrank));
		break;
	}
	if (mt->resv)
		mt->resv--;
	return 0;
}

/* ---- remove ---- */

/* Move the node in the last slot into the free slot hole. */
static void fill_hole(struct maptable *mt, uint32_t hole)
{
	uint32_t last = (uint32_t)mt->count, parent = NIL, cur = mt->root;
	uint64_t key;
	int d = 0;

	if (hole == last)
		return;
	key = N(mt, last)->iova;
	while (cur != last) {
		parent = cur;
		d = key > N(mt, cur)->iova;
		cur = kid(mt, cur, d);
	}
	*N(mt, hole) = *N(mt, last);
	if (parent == NIL)
		mt->root = hole;
	else
		set_kid(N(mt, parent), d, hole);
}

static void rebalance_after_remove(struct maptable *mt, struct mt_path *p)
{
	for (int i = p->depth - 1; i >= 0; i--) {
		struct mt_node *a = N(mt, p->node[i]);
		int d = p->dir[i], sd = d ? 1 : -1, b = bal(a);
		bool shrank;

		if (b == sd) {
			set_bal(a, 0);
			continue;
		}
		if (b == 0) {
			set_bal(a, -sd);
			return;
		}
		replace(mt, p, i, rebalance(mt, p->node[i], !d, &shrank));
		if (!shrank)
			return;
	}
}

int maptable_remove(struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	struct mt_path p = { 0 };
	uint32_t cur, victim, child;
	struct mt_node *v;

	if (!mt)
		return -EINVAL;
	for (cur = mt->root; cur && N(mt, cur)->iova != iova; ) {
		int d = iova > N(mt, cur)->iova;

		push(&p, cur, d);
		cur = kid(mt, cur, d);
	}
	if (!cur)
		return -ENOENT;
	if (out)
		to_entry(N(mt, cur), out);

	/* With two children, the successor's entry takes cur's place and the
	 * successor's node (which has no left child) is the one unlinked. */
	victim = cur;
	if (kid(mt, cur, 0) && kid(mt, cur, 1)) {
		struct mt_node *c = N(mt, cur), *s;

		push(&p, cur, 1);
		for (victim = kid(mt, cur, 1); kid(mt, victim, 0); victim = kid(mt, victim, 0))
			push(&p, victim, 0);
		s = N(mt, victim);
		c->iova = s->iova;
		c->last = s->last;
		c->data = s->data;
	}
	v = N(mt, victim);
	child = (v->kid[0] & IDX_MASK) ? v->kid[0] & IDX_MASK : v->kid[1] & IDX_MASK;
	replace(mt, &p, p.depth, child);
	rebalance_after_remove(mt, &p);
	fill_hole(mt, victim);
	mt->count--;
	maybe_shrink(mt);
	return 0;
}

/* ---- queries ---- */

/* The first entry whose last byte is at or above iova (lasts ascend in
 * order, since entries are disjoint). */
static uint32_t first_ending_from(const struct maptable *mt, uint64_t iova)
{
	uint32_t best = NIL, cur = mt->root;

	while (cur) {
		if (N(mt, cur)->last >= iova) {
			best = cur;
			cur = kid(mt, cur, 0);
		} else {
			cur = kid(mt, cur, 1);
		}
	}
	return best;
}

int maptable_lookup(const struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	uint32_t n;

	if (!mt)
		return -EINVAL;
	n = first_ending_from(mt, iova);
	if (!n)
		return -ENOENT;
	if (out)
		to_entry(N(mt, n), out);
	return 0;
}

int maptable_lookup_le(const struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	uint32_t best = NIL, cur;

	if (!mt)
		return -EINVAL;
	for (cur = mt->root; cur; ) {
		if (N(mt, cur)->iova <= iova) {
			best = cur;
			cur = kid(mt, cur, 1);
		} else {
			cur = kid(mt, cur, 0);
		}
	}
	if (!best)
		return -ENOENT;
	if (out)
		to_entry(N(mt, best), out);
	return 0;
}

/*
 * In-order walk from the first entry ending at or after iova.  The stack
 * holds the nodes still to visit on the way down: those where the descent
 * went left.
 */
int maptable_for_each(const struct maptable *mt, uint64_t iova, uint64_t len,
		      int (*fn)(void *opaque, const struct mt_entry *e), void *opaque)
{
	uint32_t stack[MAX_DEPTH], cur;
	uint64_t qlast = UINT64_MAX;
	int top = 0;

	if (!mt || !fn)
		return -EINVAL;
	if (len) {
		if (len - 1 > UINT64_MAX - iova)
			return -EINVAL;
		qlast = iova + len - 1;
	}
	for (cur = mt->root; cur; ) {
		if (N(mt, cur)->last >= iova) {
			stack[top++] = cur;
			cur = kid(mt, cur, 0);
		} else {
			cur = kid(mt, cur, 1);
		}
	}
	while (top) {
		struct mt_entry e;
		int rc;

		cur = stack[--top];
		if (N(mt, cur)->iova > qlast)
			break;
		to_entry(N(mt, cur), &e);
		rc = fn(opaque, &e);
		if (rc)
			return rc;
		for (cur = kid(mt, cur, 1); cur; cur = kid(mt, cur, 0))
			stack[top++] = cur;
	}
	return 0;
}

/* ---- validation (tests) ---- */

struct vstate {
	const struct maptable *mt;
	uint8_t *seen;
	uint64_t visited;
	bool have_prev;
	uint64_t prev_last;
};

/* Height of the subtree at i, or -1 after logging the first violation. */
static int vnode(struct vstate *s, uint32_t i, int depth)
{
	const struct maptable *mt = s->mt;
	const struct mt_node *n;
	int hl, hr;

	if (!i)
		return 0;
	if (depth >= MAX_DEPTH || i > mt->count || s->seen[i]) {
		cvm_err("maptable: slot %u out of range, shared, or too deep (%d)", i, depth);
		return -1;
	}
	s->seen[i] = 1;
	s->visited++;
	n = N(mt, i);
	if ((n->kid[0] & HEAVY) && (n->kid[1] & HEAVY)) {
		cvm_err("maptable: slot %u is heavy on both sides", i);
		return -1;
	}
	hl = vnode(s, n->kid[0] & IDX_MASK, depth + 1);
	if (hl < 0)
		return -1;
	if (n->last < n->iova || (s->have_prev && n->iova <= s->prev_last)) {
		cvm_err("maptable: entry %#" PRIx64 "+%#" PRIx64 " overlaps or is out of order",
			n->iova, n->last - n->iova + 1);
		return -1;
	}
	s->have_prev = true;
	s->prev_last = n->last;
	hr = vnode(s, n->kid[1] & IDX_MASK, depth + 1);
	if (hr < 0)
		return -1;
	if (hr - hl != bal(n)) {
		cvm_err("maptable: slot %u balance %d but heights %d/%d", i, bal(n), hl, hr);
		return -1;
	}
	return 1 + (hl > hr ? hl : hr);
}

int maptable_validate(const struct maptable *mt)
{
	struct vstate s = { .mt = mt };
	int h;

	if (!mt)
		return -EINVAL;
	if (mt->count + 1 + mt->resv > capacity(mt) && (mt->count || mt->resv)) {
		cvm_err("maptable: %" PRIu64 " entries and %" PRIu64 " promised exceed %" PRIu64
			" slots", mt->count, mt->resv, capacity(mt));
		return -EUCLEAN;
	}
	s.seen = cvm_calloc(mt->count + 1, 1);
	if (!s.seen)
		return -ENOMEM;
	h = vnode(&s, mt->root, 0);
	cvm_free(s.seen);
	if (h < 0)
		return -EUCLEAN;
	if (s.visited != mt->count) {
		cvm_err("maptable: %" PRIu64 " nodes reachable, count %" PRIu64,
			s.visited, mt->count);
		return -EUCLEAN;
	}
	return 0;
}
