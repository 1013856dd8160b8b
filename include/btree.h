/* Which table b-tree of a SQLite database a page is in, found by descent
 * from the tables' roots (SQLite's file format, fileformat2.html, "B-tree
 * Pages"): the key followed is the page's own first key (the rowid of its
 * first cell), and a page reached from a root through child pointers is in
 * that root's tree. An owner is only ever named for a page so reached, so
 * the answer is exact whatever the page holds; a page of no table b-tree
 * (an index page, an overflow or freelist page) or of a tree that cannot
 * be read gets none, and the caller must find out otherwise. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Reads page pgno (1-based) as the snapshot holds it into buf (page_size
 * bytes): 0 or a negative errno. */
typedef int (*btree_read_fn)(void *userdata, uint32_t pgno, uint8_t *buf);

struct btree_db {
        btree_read_fn read;
        void *userdata;
        uint32_t page_size;   /* 512 .. 65536 */
        uint32_t usable_size; /* page_size less the reserved bytes per page */
};

/* The index in roots[] of the table b-tree that holds page, or -1 when
 * none of them was found to (see above). Returns 0, -ENOMEM or the read
 * function's error for the page itself; errors reading a tree's pages
 * only mean that tree is not named. */
int btree_owner(const struct btree_db *db, const uint32_t *roots, size_t n_roots, uint32_t page, long *owner);
