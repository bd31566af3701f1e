// SPDX-License-Identifier: MIT
/*
 * Interval map of live IOVA mappings (contract in maptable.h).
 *
 * A B+-tree: leaves hold up to LEAF_MAX entries (start, last byte, datum)
 * in one sorted array and are chained both ways; inner nodes hold up
 * to INNER_MAX children and the separating keys.  A lookup in a table of
 * 16 k entries touches three nodes instead of the fourteen of a binary
 * tree, and the cache lines it touches within a node are adjacent.
 *
 * Separators are bounds, not copies: every key in kid[i] is below key[i]
 * and every key in kid[i + 1] is at or above it.  Removal keeps that true
 * without touching ancestors, which is why a leaf may begin above the
 * separator that leads to it and lookup_le() sometimes steps to the
 * previous leaf.
 *
 * Appends above the last entry, the shape of a replay, go straight to the
 * rightmost leaf (no descent), and when that leaf is full the split leaves
 * it full and starts a new one: a table built in ascending order is packed
 * (about 25 bytes per entry); one built at random is about 70% full.  Every
 * node but the rightmost of its level is at least half full, so no table
 * needs more than about 50 bytes per entry.
 *
 * maptable_reserve(n) must make n inserts infallible.  An insert needs a
 * new node only when it splits one, so the reservation is a pool of nodes
 * sized by a bound on the splits n inserts can cause (need_for()); nodes
 * freed while a promise is open go back to the pool, because a merge is
 * what lets a later insert split again.
 */
#include <inttypes.h>

#include "internal.h"
#include "maptable.h"

#define LEAF_MAX	32u
#define LEAF_MIN	(LEAF_MAX / 2)
#define INNER_MAX	48u		/* children */
#define INNER_MIN	(INNER_MAX / 2)
#define MAX_HEIGHT	12		/* 16 * 24^10 entries would not fit in memory */
#define POOL_KEEP	16u		/* spare nodes kept with no promise open */

struct mt_ent {
	uint64_t iova;
	uint64_t last;			/* inclusive: an entry may end at 2^64 */
	uint64_t data;
};

struct mt_leaf {
	struct mt_ent e[LEAF_MAX];	/* one cache line has what a search finds */
	struct mt_leaf *prev, *next;
	uint32_t n;
};

struct mt_inner {
	uint64_t key[INNER_MAX];	/* key[i] separates kid[i] and kid[i + 1]; the
					 * last slot only pads count_le()'s last block */
	void *kid[INNER_MAX];
	uint32_t n;			/* children */
};

union mt_node {
	struct mt_leaf leaf;
	struct mt_inner inner;
	union mt_node *free_next;	/* in the pool */
};

struct maptable {
	void *root;			/* NULL when empty */
	struct mt_leaf *tail;		/* the rightmost leaf */
	struct mt_leaf *hint;		/* the leaf used last, or NULL */
	int height;			/* levels: 0 empty, 1 a root leaf */
	uint64_t count;			/* live entries */
	uint64_t nodes[MAX_HEIGHT];	/* nodes per level, 0 = leaves */
	union mt_node *pool;		/* spare nodes */
	uint64_t npool;
	uint64_t resv;			/* inserts still promised by maptable_reserve */
};

/* The path from the root to a leaf: each inner node and the child taken. */
struct mt_path {
	struct mt_inner *node[MAX_HEIGHT];
	uint32_t idx[MAX_HEIGHT];
	int depth;			/* inner levels on the path */
};

/* ---- searching a node ---- */

/*
 * How many of the n ascending keys are <= x.  A binary search is a chain:
 * each step's load waits for the compare before it, about 14 of them from
 * the root of a 16 k-entry table to its leaf.  Two rounds of independent
 * compares instead: every 8th key picks the block of 8 the answer lies in,
 * then the keys of that block are compared at once.
 *
 * Every slot past the last key holds SENTINEL (node_get(), seal_keys(),
 * seal_leaf() keep it so; maptable_validate() checks it), so the array is
 * ascending to its end and no compare needs a mask: a sentinel is above
 * every x but SENTINEL itself, where the answer is all n keys.  That
 * halves the instructions of a descent.
 */
#define SENTINEL UINT64_MAX

static inline uint32_t count_le(const uint64_t *k, uint32_t n, uint64_t x)
{
	uint32_t b = 0, c = 0;

	if (__builtin_expect(x == SENTINEL, 0))
		return n;
	/* k[8m + 7] <= x for exactly m < c / 8: b = c / 8 (at most 5). */
#pragma GCC unroll 8
	for (uint32_t i = 7; i < INNER_MAX - 1; i += 8)
		b += k[i] <= x;
	b *= 8;
#pragma GCC unroll 8
	for (uint32_t j = 0; j < 8; j++)
		c += k[b + j] <= x;
	return b + c;
}

/* The same over a leaf's entries, in blocks of 4. */
static inline uint32_t leaf_count_le(const struct mt_leaf *l, uint64_t x)
{
	const struct mt_ent *e = l->e;
	uint32_t b = 0, c = 0;

	if (__builtin_expect(x == SENTINEL, 0))
		return l->n;
	/* b = c / 4, capped at 7: the last block is e[28..31] either way. */
#pragma GCC unroll 8
	for (uint32_t i = 3; i < LEAF_MAX - 4; i += 4)
		b += e[i].iova <= x;
	b *= 4;
#pragma GCC unroll 4
	for (uint32_t j = 0; j < 4; j++)
		c += e[b + j].iova <= x;
	return b + c;
}

/* After a node gave up several entries at once: its free slots get the
 * sentinel.  (One erase seals its one slot itself.) */
static inline void seal_keys(struct mt_inner *in)
{
	for (uint32_t i = in->n - 1; i < INNER_MAX; i++)
		in->key[i] = SENTINEL;
}

static inline void seal_leaf(struct mt_leaf *l)
{
	for (uint32_t i = l->n; i < LEAF_MAX; i++)
		l->e[i].iova = SENTINEL;
}

static inline void to_entry(const struct mt_leaf *l, uint32_t i, struct mt_entry *e)
{
	e->iova = l->e[i].iova;
	e->len = l->e[i].last - l->e[i].iova + 1;
	e->data = l->e[i].data;
}

/* ---- nodes and the pool ---- */

static union mt_node *node_get(struct maptable *mt, int level)
{
	union mt_node *n = mt->pool;

	if (n) {
		mt->pool = n->free_next;
		mt->npool--;
	} else {
		n = cvm_malloc(sizeof(*n));
		if (!n)
			return NULL;
	}
	/* Callers fill what they use; the links and counts start empty and
	 * every slot sealed (count_le() reads past n). */
	if (level) {
		n->inner.n = 0;
		for (uint32_t i = 0; i < INNER_MAX; i++)
			n->inner.key[i] = SENTINEL;
	} else {
		n->leaf.prev = n->leaf.next = NULL;
		n->leaf.n = 0;
		for (uint32_t i = 0; i < LEAF_MAX; i++)
			n->leaf.e[i].iova = SENTINEL;
	}
	mt->nodes[level]++;
	return n;
}

static void node_put(struct maptable *mt, void *p, int level)
{
	union mt_node *n = p;

	if (p == mt->hint)
		mt->hint = NULL;
	mt->nodes[level]--;
	n->free_next = mt->pool;
	mt->pool = n;
	mt->npool++;
}

/* Give spare nodes back once no promise needs them. */
static void pool_trim(struct maptable *mt)
{
	if (mt->resv)
		return;
	while (mt->npool > POOL_KEEP) {
		union mt_node *n = mt->pool;

		mt->pool = n->free_next;
		mt->npool--;
		cvm_free(n);
	}
}

/* Make the pool hold at least want nodes; on failure it is as before. */
static int pool_fill(struct maptable *mt, uint64_t want)
{
	uint64_t had = mt->npool;

	while (mt->npool < want) {
		union mt_node *n = cvm_calloc(1, sizeof(*n));

		if (!n) {
			while (mt->npool > had) {
				n = mt->pool;
				mt->pool = n->free_next;
				mt->npool--;
				cvm_free(n);
			}
			return -ENOMEM;
		}
		n->free_next = mt->pool;
		mt->pool = n;
		mt->npool++;
	}
	return 0;
}

/*
 * Nodes that n inserts can need, whatever they are and whatever removals
 * come between.  A node splits only when full; a node made by a split is
 * at most half full and needs cap/2 more entries to fill, except the
 * rightmost-append split, which happens once per cap - 1 appends.  So
 * level L splits at most min(s, nodes_L + 3 s / cap + 2) times when s
 * entries arrive, s being the splits below; a merge that refills a node
 * returns a node to the pool first.  Above the root, each new level costs
 * its root plus its own splits.
 */
static uint64_t need_for(const struct maptable *mt, uint64_t n)
{
	uint64_t s = n, need = !mt->height;	/* an empty table needs its root leaf */
	int level, height = mt->height ? mt->height : 1;

	for (level = 0; level < height; level++) {
		uint64_t cap = level ? INNER_MAX : LEAF_MAX;
		uint64_t nodes = mt->height ? mt->nodes[level] : 1;
		uint64_t bound = nodes + 3 * (s / cap) + 2;

		s = s < bound ? s : bound;
		need += s;
	}
	/* New levels above the root. */
	for (; s && level < MAX_HEIGHT; level++) {
		s = 3 * (s / INNER_MAX) + (s > INNER_MAX / 2);
		need += 1 + s;
	}
	return need;
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

static void free_subtree(void *p, int level)
{
	if (level) {
		struct mt_inner *in = p;

		for (uint32_t i = 0; i < in->n; i++)
			free_subtree(in->kid[i], level - 1);
	}
	cvm_free(p);
}

void maptable_destroy(struct maptable *mt)
{
	if (!mt)
		return;
	if (mt->root)
		free_subtree(mt->root, mt->height - 1);
	while (mt->pool) {
		union mt_node *n = mt->pool;

		mt->pool = n->free_next;
		cvm_free(n);
	}
	cvm_free(mt);
}

uint64_t maptable_count(const struct maptable *mt)
{
	return mt ? mt->count : 0;
}

size_t maptable_bytes(const struct maptable *mt)
{
	uint64_t nodes;

	if (!mt)
		return 0;
	nodes = mt->npool;
	for (int i = 0; i < mt->height; i++)
		nodes += mt->nodes[i];
	return sizeof(*mt) + (size_t)nodes * sizeof(union mt_node);
}

int maptable_reserve(struct maptable *mt, uint64_t n)
{
	int rc;

	if (!mt)
		return -EINVAL;
	/* An earlier promise already covers a smaller one. */
	if (n <= mt->resv)
		return 0;
	if (n > ((uint64_t)1 << 31))
		return -ENOMEM;
	/* The usual promise, one or two inserts: each splits at most one node
	 * per level and adds at most one level. */
	if (n <= 2) {
		uint64_t need = n * (uint64_t)(mt->height + 2);

		if (mt->npool < need) {
			if ((rc = pool_fill(mt, need)))
				return rc;
			/* A few spare, so that the next promises find them. */
			pool_fill(mt, POOL_KEEP);
		}
		mt->resv = n;
		return 0;
	}
	rc = pool_fill(mt, need_for(mt, n));
	if (rc)
		return rc;
	mt->resv = n;
	return 0;
}

/* ---- node surgery ---- */

static void leaf_insert_at(struct mt_leaf *l, uint32_t pos, uint64_t iova, uint64_t last,
			   uint64_t data)
{
	memmove(&l->e[pos + 1], &l->e[pos], (l->n - pos) * sizeof(l->e[0]));
	l->e[pos] = (struct mt_ent){ iova, last, data };
	l->n++;
}

static void leaf_erase_at(struct mt_leaf *l, uint32_t pos)
{
	memmove(&l->e[pos], &l->e[pos + 1], (l->n - pos - 1) * sizeof(l->e[0]));
	l->n--;
	l->e[l->n].iova = SENTINEL;
}

/* Move m entries from src[sp] to dst[dp] (the ranges may not overlap). */
static void leaf_move(struct mt_leaf *dst, uint32_t dp, const struct mt_leaf *src, uint32_t sp,
		      uint32_t m)
{
	memcpy(&dst->e[dp], &src->e[sp], m * sizeof(dst->e[0]));
}

/* Put child c right of kid[i], with separator k. */
static void inner_insert_at(struct mt_inner *in, uint32_t i, uint64_t k, void *c)
{
	memmove(&in->key[i + 1], &in->key[i], (in->n - 1 - i) * sizeof(uint64_t));
	memmove(&in->kid[i + 2], &in->kid[i + 1], (in->n - 1 - i) * sizeof(void *));
	in->key[i] = k;
	in->kid[i + 1] = c;
	in->n++;
}

/* Drop kid[i + 1] and the separator key[i] left of it. */
static void inner_erase_after(struct mt_inner *in, uint32_t i)
{
	memmove(&in->key[i], &in->key[i + 1], (in->n - 2 - i) * sizeof(uint64_t));
	memmove(&in->kid[i + 1], &in->kid[i + 2], (in->n - 2 - i) * sizeof(void *));
	in->n--;
	in->key[in->n - 1] = SENTINEL;
}

/* ---- insert ---- */

/*
 * Ask for every cache line of [p, p + bytes) at once.  A binary search in
 * a node touches about one line per step, and each step waits for the one
 * before: requested together, the lines of a leaf (12) arrive in about
 * the time of one.  Measured on conversions with a DMA context (two
 * tables, one descent each per conversion): 10-14% less time.
 */
static inline void prefetch_range(const void *p, size_t bytes)
{
	const char *c = p;

	/* One address in each line: every 64 bytes from p, and the last byte.
	 * bytes is a constant at each call, so this unrolls to bare prefetches. */
#pragma GCC unroll 16
	for (size_t o = 0; o < bytes; o += 64)
		__builtin_prefetch(c + o);
	__builtin_prefetch(c + bytes - 1);
}

static struct mt_leaf *descend(const struct maptable *mt, uint64_t x, struct mt_path *p)
{
	void *cur = mt->root;
	int d = 0;

	for (int level = mt->height - 1; level > 0; level--, d++) {
		struct mt_inner *in = cur;
		uint32_t i = count_le(in->key, in->n - 1, x);

		if (p) {
			p->node[d] = in;
			p->idx[d] = i;
		}
		cur = in->kid[i];
		if (level > 1)
			prefetch_range(((struct mt_inner *)cur)->key, sizeof(in->key));
		else
			prefetch_range(((struct mt_leaf *)cur)->e, sizeof(((struct mt_leaf *)cur)->e));
	}
	if (p)
		p->depth = d;
	return cur;
}

/*
 * The leaf where x belongs without a descent, if the last leaf used (a
 * conversion looks up, walks and removes at the same address) or the
 * rightmost one (a replay appends) is it; else NULL.
 */
static struct mt_leaf *cached_leaf(const struct maptable *mt, uint64_t x)
{
	struct mt_leaf *l = mt->hint;

	if (l && x >= l->e[0].iova && (!l->next || x < l->next->e[0].iova))
		return l;
	l = mt->tail;
	return x >= l->e[0].iova ? l : NULL;
}

/*
 * The same for an insert, which must also stay below the separator right
 * of the leaf: a key below the leaf's own last key is.
 */
static struct mt_leaf *cached_leaf_for_insert(const struct maptable *mt, uint64_t x)
{
	struct mt_leaf *l = mt->hint;

	if (l && x >= l->e[0].iova && (!l->next || x < l->e[l->n - 1].iova))
		return l;
	l = mt->tail;
	return x >= l->e[0].iova ? l : NULL;
}

/* The leaf where x belongs, remembered for the next call. */
static struct mt_leaf *leaf_for(const struct maptable *mt, uint64_t x, struct mt_path *p)
{
	struct mt_leaf *l = p ? NULL : cached_leaf(mt, x);

	if (!l)
		l = descend(mt, x, p);
	((struct maptable *)mt)->hint = l;	/* a cache: not the table's state */
	return l;
}

/* Would [iova, last] overlap the neighbours of position pos of l? */
static bool overlaps(const struct mt_leaf *l, uint32_t pos, uint64_t iova, uint64_t last)
{
	if (pos ? l->e[pos - 1].last >= iova : l->prev && l->prev->e[l->prev->n - 1].last >= iova)
		return true;
	if (pos < l->n)
		return l->e[pos].iova <= last;
	return l->next && l->next->e[0].iova <= last;
}

static void inserted(struct maptable *mt)
{
	mt->count++;
	if (mt->resv && !--mt->resv)
		pool_trim(mt);
}

/* l (full) takes the entry at pos: split it, and its ancestors as needed. */
static __attribute__((noinline)) int
split_insert(struct maptable *mt, const struct mt_path *p, struct mt_leaf *l,
			uint32_t pos, uint64_t iova, uint64_t last, uint64_t data)
{
	uint64_t need = 1, sep;
	bool rightmost[MAX_HEIGHT + 1];
	struct mt_leaf *r;
	uint32_t left;
	void *child;
	int d;

	for (d = p->depth - 1; d >= 0 && p->node[d]->n == INNER_MAX; d--)
		need++;
	need += d < 0;
	if (pool_fill(mt, need))
		return -ENOMEM;
	rightmost[0] = true;
	for (d = 0; d < p->depth; d++)
		rightmost[d + 1] = rightmost[d] && p->idx[d] == p->node[d]->n - 1;

	/* The leaf: an append to the last leaf leaves it full. */
	r = &node_get(mt, 0)->leaf;
	left = pos == LEAF_MAX && !l->next ? LEAF_MAX : (LEAF_MAX + 2) / 2;
	if (pos < left) {
		leaf_move(r, 0, l, left - 1, LEAF_MAX - left + 1);
		l->n = left - 1;
		seal_leaf(l);
		leaf_insert_at(l, pos, iova, last, data);
	} else {
		leaf_move(r, 0, l, left, pos - left);
		r->e[pos - left].iova = iova;
		r->e[pos - left].last = last;
		r->e[pos - left].data = data;
		leaf_move(r, pos - left + 1, l, pos, LEAF_MAX - pos);
		l->n = left;
		seal_leaf(l);
	}
	r->n = LEAF_MAX + 1 - left;
	r->prev = l;
	r->next = l->next;
	if (l->next)
		l->next->prev = r;
	else
		mt->tail = r;
	l->next = r;
	sep = r->e[0].iova;
	child = r;

	/* Inner nodes up the path, while full. */
	for (d = p->depth - 1; d >= 0; d--) {
		struct mt_inner *in = p->node[d], *rn;
		uint64_t tk[INNER_MAX];
		void *tc[INNER_MAX + 1];
		uint32_t i = p->idx[d], kl;

		if (in->n < INNER_MAX) {
			inner_insert_at(in, i, sep, child);
			inserted(mt);
			return 0;
		}
		memcpy(tk, in->key, i * sizeof(uint64_t));
		tk[i] = sep;
		memcpy(&tk[i + 1], &in->key[i], (INNER_MAX - 1 - i) * sizeof(uint64_t));
		memcpy(tc, in->kid, (i + 1) * sizeof(void *));
		tc[i + 1] = child;
		memcpy(&tc[i + 2], &in->kid[i + 1], (INNER_MAX - 1 - i) * sizeof(void *));
		/* Appending to the rightmost node: keep it nearly full. */
		kl = i + 1 == INNER_MAX && rightmost[d] ? INNER_MAX - 1 : (INNER_MAX + 2) / 2;
		rn = &node_get(mt, mt->height - 1 - d)->inner;
		memcpy(in->key, tk, (kl - 1) * sizeof(uint64_t));
		memcpy(in->kid, tc, kl * sizeof(void *));
		in->n = kl;
		seal_keys(in);
		rn->n = INNER_MAX + 1 - kl;
		memcpy(rn->key, &tk[kl], (rn->n - 1) * sizeof(uint64_t));
		memcpy(rn->kid, &tc[kl], rn->n * sizeof(void *));
		sep = tk[kl - 1];
		child = rn;
	}

	/* The root split: a new level. */
	{
		struct mt_inner *nr = &node_get(mt, mt->height)->inner;

		nr->kid[0] = mt->root;
		nr->kid[1] = child;
		nr->key[0] = sep;
		nr->n = 2;
		mt->root = nr;
		mt->height++;
	}
	inserted(mt);
	return 0;
}

static __attribute__((noinline)) int
insert_slow(struct maptable *mt, uint64_t iova, uint64_t last, uint64_t data)
{
	struct mt_path p;
	struct mt_leaf *l;
	uint32_t pos;

	if (!mt->root) {
		union mt_node *n = node_get(mt, 0);	/* from the pool, or allocated */

		if (!n)
			return -ENOMEM;
		l = &n->leaf;
		l->e[0].iova = iova;
		l->e[0].last = last;
		l->e[0].data = data;
		l->n = 1;
		mt->root = mt->tail = l;
		mt->height = 1;
		inserted(mt);
		return 0;
	}
	l = cached_leaf_for_insert(mt, iova);
	if (!l || l->n == LEAF_MAX)
		l = leaf_for(mt, iova, &p);
	/* Above every entry of the leaf, the position needs no search. */
	pos = iova > l->e[l->n - 1].last ? l->n : leaf_count_le(l, iova);
	if (overlaps(l, pos, iova, last))
		return -EEXIST;
	if (l->n < LEAF_MAX) {
		leaf_insert_at(l, pos, iova, last, data);
		inserted(mt);
		return 0;
	}
	return split_insert(mt, &p, l, pos, iova, last, data);
}

int maptable_insert(struct maptable *mt, uint64_t iova, uint64_t len, uint64_t data)
{
	struct mt_leaf *t;
	uint64_t last;

	if (!mt || !len || len - 1 > UINT64_MAX - iova)
		return -EINVAL;
	last = iova + len - 1;
	/* An append above every entry into a last leaf with room (a replay):
	 * nothing to search, nothing to overlap. */
	t = mt->tail;
	if (t && iova > t->e[t->n - 1].last && t->n < LEAF_MAX) {
		t->e[t->n].iova = iova;
		t->e[t->n].last = last;
		t->e[t->n].data = data;
		t->n++;
		inserted(mt);
		return 0;
	}
	return insert_slow(mt, iova, last, data);
}

/* ---- remove ---- */

/* Inner node p->node[d] may have lost a child: restore its fill. */
static void fix_inner(struct maptable *mt, const struct mt_path *p, int d)
{
	struct mt_inner *x = p->node[d], *g, *s;
	int level = mt->height - 1 - d;
	bool rightmost = true;
	uint32_t j;

	if (d == 0) {
		if (x->n == 1) {		/* the root has one child: drop a level */
			mt->root = x->kid[0];
			node_put(mt, x, level);
			mt->height--;
		}
		return;
	}
	for (int k = 0; k < d; k++)
		rightmost = rightmost && p->idx[k] == p->node[k]->n - 1;
	if (x->n >= (rightmost ? 2 : INNER_MIN))
		return;
	g = p->node[d - 1];
	j = p->idx[d - 1];
	if (j > 0) {
		s = g->kid[j - 1];
		if (s->n + x->n <= INNER_MAX) {		/* x joins its left sibling */
			s->key[s->n - 1] = g->key[j - 1];
			memcpy(&s->key[s->n], x->key, (x->n - 1) * sizeof(uint64_t));
			memcpy(&s->kid[s->n], x->kid, x->n * sizeof(void *));
			s->n += x->n;
			inner_erase_after(g, j - 1);
			node_put(mt, x, level);
			fix_inner(mt, p, d - 1);
			return;
		}
		/* Borrow the left sibling's last child. */
		memmove(&x->key[1], &x->key[0], (x->n - 1) * sizeof(uint64_t));
		memmove(&x->kid[1], &x->kid[0], x->n * sizeof(void *));
		x->key[0] = g->key[j - 1];
		x->kid[0] = s->kid[s->n - 1];
		g->key[j - 1] = s->key[s->n - 2];
		x->n++;
		s->n--;
		s->key[s->n - 1] = SENTINEL;
		return;
	}
	s = g->kid[1];
	if (x->n + s->n <= INNER_MAX) {			/* the right sibling joins x */
		x->key[x->n - 1] = g->key[0];
		memcpy(&x->key[x->n], s->key, (s->n - 1) * sizeof(uint64_t));
		memcpy(&x->kid[x->n], s->kid, s->n * sizeof(void *));
		x->n += s->n;
		inner_erase_after(g, 0);
		node_put(mt, s, level);
		fix_inner(mt, p, d - 1);
		return;
	}
	/* Borrow the right sibling's first child. */
	x->key[x->n - 1] = g->key[0];
	x->kid[x->n] = s->kid[0];
	x->n++;
	g->key[0] = s->key[0];
	memmove(&s->key[0], &s->key[1], (s->n - 2) * sizeof(uint64_t));
	memmove(&s->kid[0], &s->kid[1], (s->n - 1) * sizeof(void *));
	s->n--;
	s->key[s->n - 1] = SENTINEL;
}

static void unlink_leaf(struct maptable *mt, struct mt_leaf *l)
{
	if (l->prev)
		l->prev->next = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		mt->tail = l->prev;
	node_put(mt, l, 0);
}

/* Leaf l (under p) lost an entry: restore its fill. */
static void fix_leaf(struct maptable *mt, const struct mt_path *p, struct mt_leaf *l)
{
	struct mt_inner *g = p->node[p->depth - 1];
	uint32_t i = p->idx[p->depth - 1];
	struct mt_leaf *s;

	/* The last leaf may run short (appends refill it), but not empty. */
	if (l->n >= LEAF_MIN || (!l->next && l->n))
		return;
	if (i > 0) {
		s = g->kid[i - 1];
		if (s->n + l->n <= LEAF_MAX) {
			leaf_move(s, s->n, l, 0, l->n);
			s->n += l->n;
			unlink_leaf(mt, l);
			inner_erase_after(g, i - 1);
			fix_inner(mt, p, p->depth - 1);
			return;
		}
		memmove(&l->e[1], &l->e[0], l->n * sizeof(l->e[0]));
		leaf_move(l, 0, s, s->n - 1, 1);
		l->n++;
		s->n--;
		s->e[s->n].iova = SENTINEL;
		g->key[i - 1] = l->e[0].iova;
		return;
	}
	s = g->kid[1];
	if (l->n + s->n <= LEAF_MAX) {
		leaf_move(l, l->n, s, 0, s->n);
		l->n += s->n;
		unlink_leaf(mt, s);
		inner_erase_after(g, 0);
		fix_inner(mt, p, p->depth - 1);
		return;
	}
	leaf_move(l, l->n, s, 0, 1);
	l->n++;
	leaf_erase_at(s, 0);
	g->key[0] = s->e[0].iova;
}

/* The entry starting at iova goes, if it has length len (any if len is 0). */
static int remove_start(struct maptable *mt, uint64_t iova, uint64_t len, struct mt_entry *out)
{
	struct mt_path p;
	struct mt_leaf *l;
	uint32_t pos;

	if (!mt)
		return -EINVAL;
	if (!mt->root)
		return -ENOENT;
	/* Without a descent when the leaf stays full enough to need no fix. */
	l = cached_leaf(mt, iova);
	if (!l || l->n <= (l->next ? LEAF_MIN : 1))
		l = leaf_for(mt, iova, &p);
	else
		p.depth = 0;
	pos = leaf_count_le(l, iova);
	if (!pos || l->e[pos - 1].iova != iova || (len && l->e[pos - 1].last - iova != len - 1))
		return -ENOENT;
	pos--;
	if (out)
		to_entry(l, pos, out);
	leaf_erase_at(l, pos);
	mt->count--;
	if (!p.depth && mt->height > 1) {
		/* still at least half full, or the last leaf and not empty */
	} else if (mt->height == 1) {
		if (!l->n) {
			node_put(mt, l, 0);
			mt->root = mt->tail = NULL;
			mt->height = 0;
		}
	} else {
		fix_leaf(mt, &p, l);
	}
	pool_trim(mt);
	return 0;
}

int maptable_remove(struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	return remove_start(mt, iova, 0, out);
}

int maptable_remove_exact(struct maptable *mt, uint64_t iova, uint64_t len, struct mt_entry *out)
{
	if (!len)
		return -EINVAL;
	return remove_start(mt, iova, len, out);
}

/* ---- queries ---- */

/* The first entry whose last byte is at or above x (lasts ascend, since
 * entries are disjoint): its leaf and *pos, or NULL. */
static struct mt_leaf *first_ending_from(const struct maptable *mt, uint64_t x, uint32_t *pos)
{
	struct mt_leaf *l;
	uint32_t p;

	if (!mt->root || x > mt->tail->e[mt->tail->n - 1].last)
		return NULL;		/* above every entry: the common miss */
	l = leaf_for(mt, x, NULL);
	p = leaf_count_le(l, x);
	if (p ? l->e[p - 1].last >= x : l->prev && l->prev->e[l->prev->n - 1].last >= x) {
		if (p) {
			*pos = p - 1;
			return l;
		}
		*pos = l->prev->n - 1;
		return l->prev;
	}
	if (p < l->n) {
		*pos = p;
		return l;
	}
	*pos = 0;
	return l->next;
}

int maptable_lookup(const struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	struct mt_leaf *l;
	uint32_t pos;

	if (!mt)
		return -EINVAL;
	l = first_ending_from(mt, iova, &pos);
	if (!l)
		return -ENOENT;
	if (out)
		to_entry(l, pos, out);
	return 0;
}

int maptable_lookup_le(const struct maptable *mt, uint64_t iova, struct mt_entry *out)
{
	struct mt_leaf *l;
	uint32_t p;

	if (!mt)
		return -EINVAL;
	if (!mt->root)
		return -ENOENT;
	l = leaf_for(mt, iova, NULL);
	p = leaf_count_le(l, iova);
	if (!p) {
		/* Below the leaf's first entry: the previous leaf's last, if any. */
		l = l->prev;
		if (!l)
			return -ENOENT;
		p = l->n;
	}
	if (out)
		to_entry(l, p - 1, out);
	return 0;
}

int maptable_for_each(const struct maptable *mt, uint64_t iova, uint64_t len,
		      int (*fn)(void *opaque, const struct mt_entry *e), void *opaque)
{
	uint64_t qlast = UINT64_MAX;
	struct mt_leaf *l;
	uint32_t pos = 0;

	if (!mt || !fn)
		return -EINVAL;
	if (len) {
		if (len - 1 > UINT64_MAX - iova)
			return -EINVAL;
		qlast = iova + len - 1;
	}
	for (l = first_ending_from(mt, iova, &pos); l; l = l->next, pos = 0) {
		for (; pos < l->n; pos++) {
			struct mt_entry e;
			int rc;

			if (l->e[pos].iova > qlast)
				return 0;
			to_entry(l, pos, &e);
			rc = fn(opaque, &e);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* ---- validation (tests) ---- */

struct vstate {
	const struct maptable *mt;
	uint64_t entries;
	uint64_t nodes[MAX_HEIGHT];
	const struct mt_leaf *prev_leaf;
	bool have_prev;
	uint64_t prev_last;
};

#define VFAIL(...) do { cvm_err("maptable: " __VA_ARGS__); return -1; } while (0)

/* Check the subtree at node (level), all of whose keys must lie in
 * [lo, hi) (has_lo/has_hi: the bound exists). */
static int vnode(struct vstate *s, const void *node, int level, bool rightmost, bool has_lo,
		 uint64_t lo, bool has_hi, uint64_t hi)
{
	bool root = node == s->mt->root;

	s->nodes[level]++;
	if (!level) {
		const struct mt_leaf *l = node;

		if (!l->n || l->n > LEAF_MAX)
			VFAIL("a leaf holds %u entries", l->n);
		if (!root && !rightmost && l->n < LEAF_MIN)
			VFAIL("a leaf short of half full (%u) is not the last", l->n);
		if (l->prev != s->prev_leaf || (s->prev_leaf && s->prev_leaf->next != l))
			VFAIL("the leaf chain is broken at %#" PRIx64, l->e[0].iova);
		for (uint32_t i = 0; i < l->n; i++) {
			if (l->e[i].last < l->e[i].iova || (s->have_prev && l->e[i].iova <= s->prev_last))
				VFAIL("entry %#" PRIx64 "+%#" PRIx64 " overlaps or is out of order",
				      l->e[i].iova, l->e[i].last - l->e[i].iova + 1);
			if ((has_lo && l->e[i].iova < lo) || (has_hi && l->e[i].iova >= hi))
				VFAIL("entry %#" PRIx64 " lies outside its separators", l->e[i].iova);
			s->have_prev = true;
			s->prev_last = l->e[i].last;
		}
		for (uint32_t i = l->n; i < LEAF_MAX; i++)
			if (l->e[i].iova != SENTINEL)
				VFAIL("a leaf's free slot %u is not sealed", i);
		s->entries += l->n;
		s->prev_leaf = l;
		return 0;
	}
	{
		const struct mt_inner *in = node;

		if (in->n < 2 || in->n > INNER_MAX)
			VFAIL("an inner node has %u children", in->n);
		if (!root && !rightmost && in->n < INNER_MIN)
			VFAIL("an inner node short of half full (%u) is not the last", in->n);
		for (uint32_t i = in->n - 1; i < INNER_MAX; i++)
			if (in->key[i] != SENTINEL)
				VFAIL("an inner node's free key slot %u is not sealed", i);
		for (uint32_t i = 0; i < in->n; i++) {
			bool l_ok = i ? true : has_lo, h_ok = i + 1 < in->n ? true : has_hi;
			uint64_t l_b = i ? in->key[i - 1] : lo, h_b = i + 1 < in->n ? in->key[i] : hi;

			if (i && i + 1 < in->n && in->key[i - 1] >= in->key[i])
				VFAIL("separators out of order at %#" PRIx64, in->key[i]);
			if (vnode(s, in->kid[i], level - 1, rightmost && i + 1 == in->n,
				  l_ok, l_b, h_ok, h_b))
				return -1;
		}
	}
	return 0;
}

int maptable_validate(const struct maptable *mt)
{
	struct vstate s = { .mt = mt };

	if (!mt)
		return -EINVAL;
	if (!mt->root) {
		if (mt->count || mt->height || mt->tail) {
			cvm_err("maptable: empty, but count %" PRIu64 " height %d", mt->count,
				mt->height);
			return -EUCLEAN;
		}
		return 0;
	}
	if (mt->height < 1 || mt->height > MAX_HEIGHT ||
	    vnode(&s, mt->root, mt->height - 1, true, false, 0, false, 0))
		return -EUCLEAN;
	if (s.prev_leaf != mt->tail || mt->tail->next) {
		cvm_err("maptable: the tail is not the last leaf");
		return -EUCLEAN;
	}
	if (s.entries != mt->count) {
		cvm_err("maptable: %" PRIu64 " entries reachable, count %" PRIu64, s.entries,
			mt->count);
		return -EUCLEAN;
	}
	for (int i = 0; i < mt->height; i++) {
		if (s.nodes[i] != mt->nodes[i]) {
			cvm_err("maptable: level %d has %" PRIu64 " nodes, counted %" PRIu64, i,
				s.nodes[i], mt->nodes[i]);
			return -EUCLEAN;
		}
	}
	return 0;
}

/* ---- bulk removal ---- */

static void free_inner_levels(struct maptable *mt, void *p, int level)
{
	struct mt_inner *in = p;

	if (!level)
		return;
	for (uint32_t i = 0; i < in->n; i++)
		free_inner_levels(mt, in->kid[i], level - 1);
	node_put(mt, in, level);
}

/*
 * Build the inner levels over the leaf chain from first: INNER_MAX children
 * to a node, except that a level's last node keeps two.  kids and lo have
 * room for one slot per leaf.  The nodes come from the pool, which
 * free_inner_levels() filled with at least as many: with no more leaves
 * than before, no level needs more nodes than it had.
 */
static void build_inner_levels(struct maptable *mt, struct mt_leaf *first, void **kids,
			       uint64_t *lo)
{
	uint64_t n = 0;
	int level = 0;

	for (struct mt_leaf *l = first; l; l = l->next, n++) {
		kids[n] = l;
		lo[n] = l->e[0].iova;
	}
	while (n > 1) {
		uint64_t out = 0;

		level++;
		for (uint64_t i = 0; i < n; out++) {
			uint64_t take = n - i < INNER_MAX ? n - i : INNER_MAX;
			struct mt_inner *in = &node_get(mt, level)->inner;

			if (n - i - take == 1)
				take--;
			for (uint64_t j = 0; j < take; j++) {
				in->kid[j] = kids[i + j];
				if (j)
					in->key[j - 1] = lo[i + j];
			}
			in->n = (uint32_t)take;
			kids[out] = in;
			lo[out] = lo[i];
			i += take;
		}
		n = out;
	}
	mt->root = kids[0];
	mt->height = level + 1;
}

/* The first entry starting at or above x: its leaf and *pos, or NULL. */
static struct mt_leaf *first_starting_from(const struct maptable *mt, uint64_t x, uint32_t *pos)
{
	struct mt_leaf *l = first_ending_from(mt, x, pos);

	if (l && l->e[*pos].iova < x && ++*pos == l->n) {
		l = l->next;
		*pos = 0;
	}
	return l;
}

uint64_t maptable_remove_range(struct maptable *mt, uint64_t iova, uint64_t len, uint64_t *bytes)
{
	uint64_t qlast = len ? iova + (len - 1) : UINT64_MAX, k = 0, b = 0;
	struct mt_leaf *l, *w, *first, *c;
	uint64_t *lo = NULL;
	void **kids = NULL;
	uint32_t pos, wp;

	if (!mt || (len && len - 1 > UINT64_MAX - iova))
		return 0;
	l = first_starting_from(mt, iova, &pos);
	/* Count (up to an eighth of the table): a few go one by one. */
	for (c = l; c && k <= mt->count / 8; c = c->next, pos = 0) {
		uint32_t i = pos;

		while (i < c->n && c->e[i].iova <= qlast)
			i++;
		k += i - pos;
		if (i < c->n)
			break;		/* past the range */
	}
	if (k > mt->count / 8 && mt->height > 1) {
		kids = cvm_calloc(mt->nodes[0], sizeof(*kids));
		lo = kids ? cvm_calloc(mt->nodes[0], sizeof(*lo)) : NULL;
	}
	if (!lo) {
		/* Few entries, or no memory for the rebuild: one at a time. */
		cvm_free(kids);
		k = 0;
		while ((l = first_starting_from(mt, iova, &pos)) && l->e[pos].iova <= qlast) {
			b += l->e[pos].last - l->e[pos].iova + 1;
			maptable_remove(mt, l->e[pos].iova, NULL);
			k++;
		}
		if (bytes)
			*bytes += b;
		return k;
	}

	/* One pass along the chain keeps what lies outside the range, packed
	 * into the leaves from the first on.  The writer (w, wp) never passes
	 * the reader: it has written no more entries than were read, and a
	 * leaf holds at most LEAF_MAX. */
	free_inner_levels(mt, mt->root, mt->height - 1);
	for (first = mt->tail; first->prev; first = first->prev)
		;
	w = first;
	wp = 0;
	k = 0;
	for (l = first; l; l = l->next) {
		uint32_t n = l->n;

		for (uint32_t i = 0; i < n; i++) {
			if (l->e[i].iova >= iova && l->e[i].iova <= qlast) {
				b += l->e[i].last - l->e[i].iova + 1;
				k++;
				continue;
			}
			if (wp == LEAF_MAX) {
				w->n = wp;	/* full: no slot to seal */
				w = w->next;
				wp = 0;
			}
			w->e[wp].iova = l->e[i].iova;
			w->e[wp].last = l->e[i].last;
			w->e[wp].data = l->e[i].data;
			wp++;
		}
	}
	w->n = wp;
	seal_leaf(w);
	while (w->next) {		/* the leaves past the writer are empty */
		struct mt_leaf *dead = w->next;

		w->next = dead->next;
		node_put(mt, dead, 0);
	}
	mt->tail = w;
	mt->hint = NULL;
	mt->count -= k;
	if (mt->count) {
		build_inner_levels(mt, first, kids, lo);
	} else {
		node_put(mt, first, 0);
		mt->root = mt->tail = NULL;
		mt->height = 0;
	}
	cvm_free(kids);
	cvm_free(lo);
	pool_trim(mt);
	if (bytes)
		*bytes += b;
	return k;
}
