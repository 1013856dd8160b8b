/* Descent through SQLite's table b-trees (btree.h). */
#include "btree.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util.h"

#define TYPE_TABLE_INTERIOR 0x05
#define TYPE_TABLE_LEAF     0x0d
/* Deeper than any b-tree of a database SQLite can hold. */
#define MAX_DEPTH 40

static uint32_t get_be16(const uint8_t *p) {
        return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* SQLite's varint at p (at most 9 bytes, not past end): its length, or 0. */
static size_t get_varint(const uint8_t *p, const uint8_t *end, uint64_t *v) {
        uint64_t x = 0;

        for (size_t i = 0; i < 9; i++) {
                if (p + i >= end)
                        return 0;
                if (i == 8) {
                        *v = x << 8 | p[i];
                        return 9;
                }
                x = x << 7 | (p[i] & 0x7f);
                if (!(p[i] & 0x80)) {
                        *v = x;
                        return i + 1;
                }
        }
        return 0;
}

/* One b-tree page: its header and cell pointer array, checked against the
 * page's bounds. */
struct page {
        const uint8_t *data;
        const uint8_t *end; /* data + usable size */
        uint8_t type;
        uint32_t n_cells;
        const uint8_t *cells; /* the cell pointer array */
        uint32_t right;       /* interior: the right-most child */
};

static bool page_parse(const struct btree_db *db, uint32_t pgno, const uint8_t *data, struct page *p) {
        const uint8_t *h = data + (pgno == 1 ? 100 : 0);
        size_t header;

        *p = (struct page){.data = data, .end = data + db->usable_size, .type = h[0]};
        if (p->type != TYPE_TABLE_INTERIOR && p->type != TYPE_TABLE_LEAF)
                return false;
        header = p->type == TYPE_TABLE_INTERIOR ? 12 : 8;
        p->n_cells = get_be16(h + 3);
        p->cells = h + header;
        if (p->cells + 2 * (size_t)p->n_cells > p->end)
                return false;
        if (p->type == TYPE_TABLE_INTERIOR)
                p->right = get_be32(h + 8);
        return true;
}

/* Cell i's start, or NULL when it points outside the page. */
static const uint8_t *page_cell(const struct page *p, uint32_t i) {
        uint32_t off = get_be16(p->cells + 2 * (size_t)i);
        const uint8_t *c = p->data + off;

        return c >= p->cells + 2 * (size_t)p->n_cells && c < p->end ? c : NULL;
}

/* The key of cell i: an interior cell's after its 4-byte child, a leaf
 * cell's after its payload size. */
static bool page_key(const struct page *p, uint32_t i, uint64_t *key, uint32_t *child) {
        const uint8_t *c = page_cell(p, i);
        uint64_t size;
        size_t n;

        if (!c)
                return false;
        if (p->type == TYPE_TABLE_INTERIOR) {
                if (c + 4 > p->end)
                        return false;
                *child = get_be32(c);
                return get_varint(c + 4, p->end, key) > 0;
        }
        n = get_varint(c, p->end, &size);
        return n > 0 && get_varint(c + n, p->end, key) > 0;
}

/* Follows key down the tree rooted at root; whether it passes page. */
static bool tree_reaches(const struct btree_db *db, uint8_t *buf, uint32_t root, uint64_t key, uint32_t page) {
        uint32_t pgno = root;

        for (int depth = 0; depth < MAX_DEPTH; depth++) {
                struct page p;
                uint32_t lo = 0, hi, child = 0;

                if (pgno == page)
                        return true;
                if (pgno == 0 || db->read(db->userdata, pgno, buf) < 0 || !page_parse(db, pgno, buf, &p) ||
                    p.type != TYPE_TABLE_INTERIOR)
                        return false;
                /* The first cell whose key is >= key: its left child holds
                 * the keys up to its own; past the last, the right-most. */
                hi = p.n_cells;
                while (lo < hi) {
                        uint32_t mid = lo + (hi - lo) / 2, c;
                        uint64_t k;
                        if (!page_key(&p, mid, &k, &c))
                                return false;
                        if (k >= key)
                                hi = mid;
                        else
                                lo = mid + 1;
                }
                if (lo == p.n_cells)
                        child = p.right;
                else {
                        uint64_t k;
                        if (!page_key(&p, lo, &k, &child))
                                return false;
                }
                pgno = child;
        }
        return false;
}

int btree_owner(const struct btree_db *db, const uint32_t *roots, size_t n_roots, uint32_t page, long *owner) {
        _cleanup_free_ uint8_t *target = malloc(db->page_size), *buf = malloc(db->page_size);
        struct page p;
        uint64_t key;
        uint32_t child;
        int r;

        *owner = -1;
        if (!target || !buf)
                return -ENOMEM;
        for (size_t i = 0; i < n_roots; i++)
                if (roots[i] == page) {
                        *owner = (long)i;
                        return 0;
                }
        r = db->read(db->userdata, page, target);
        if (r < 0)
                return r;
        if (!page_parse(db, page, target, &p) || p.n_cells == 0 || !page_key(&p, 0, &key, &child))
                return 0;
        for (size_t i = 0; i < n_roots; i++)
                if (tree_reaches(db, buf, roots[i], key, page)) {
                        *owner = (long)i;
                        return 0;
                }
        return 0;
}
