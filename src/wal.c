/* Reading a WAL database's -shm header and -wal frame headers (wal.h). */
#include "wal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "util.h"

/* struct WalIndexHdr of SQLite's wal.c, in the host's byte order; two
 * copies at the start of -shm, the second written first. */
#define HDR_CHANGE     8
#define HDR_ISINIT     12
#define HDR_PAGE_SIZE  14
#define HDR_MX_FRAME   16
#define HDR_SALT       32
#define WAL_HDR_SIZE   32
#define FRAME_HDR_SIZE 24

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t get_u32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
}

int wal_parse_index(const void *hdr0, const void *hdr1, struct wal_pos *ret) {
        const uint8_t *h = hdr0;
        uint16_t sz;

        if (memcmp(hdr0, hdr1, WAL_INDEX_HDR_SIZE) != 0 || h[HDR_ISINIT] != 1)
                return -EAGAIN;
        memcpy(&sz, h + HDR_PAGE_SIZE, 2);
        *ret = (struct wal_pos){
                .mx_frame = get_u32(h + HDR_MX_FRAME),
                .change = get_u32(h + HDR_CHANGE),
                /* 65536 is stored as 1. */
                .page_size = (uint32_t)(sz & 0xff00) | ((uint32_t)(sz & 1) << 16),
        };
        memcpy(ret->salt, h + HDR_SALT, 8);
        return 0;
}

bool wal_pos_equal(const struct wal_pos *a, const struct wal_pos *b) {
        return memcmp(a->salt, b->salt, 8) == 0 && a->mx_frame == b->mx_frame && a->change == b->change &&
               a->page_size == b->page_size;
}

/* Reads the WAL header into hdr: 0, -ESTALE when it is not of pos's
 * generation (magic, page size, salts), or read_at's error. */
static int read_wal_header(wal_read_fn read_at, void *userdata, const struct wal_pos *pos, uint8_t hdr[WAL_HDR_SIZE]) {
        uint32_t magic;
        int r = read_at(userdata, hdr, WAL_HDR_SIZE, 0);

        if (r < 0)
                return r;
        magic = get_be32(hdr);
        if ((magic != 0x377f0682 && magic != 0x377f0683) || get_be32(hdr + 8) != pos->page_size ||
            memcmp(hdr + 16, pos->salt, 8) != 0)
                return -ESTALE;
        return 0;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

int wal_pages_between(wal_read_fn read_at, void *userdata, const struct wal_pos *from, const struct wal_pos *to,
                      size_t max_pages, uint32_t **pages, size_t *n_pages) {
        uint8_t hdr[WAL_HDR_SIZE], again[WAL_HDR_SIZE], fh[FRAME_HDR_SIZE];
        _cleanup_free_ uint32_t *list = NULL;
        size_t n = 0, cap = 0;
        int r;

        if (memcmp(from->salt, to->salt, 8) != 0 || from->page_size != to->page_size || from->mx_frame > to->mx_frame ||
            to->page_size < 512)
                return -ESTALE;
        if ((size_t)(to->mx_frame - from->mx_frame) > max_pages)
                return -E2BIG;
        r = read_wal_header(read_at, userdata, to, hdr);
        if (r < 0)
                goto out;
        for (uint32_t f = from->mx_frame + 1; f <= to->mx_frame; f++) {
                off_t off = WAL_HDR_SIZE + (off_t)(f - 1) * (FRAME_HDR_SIZE + (off_t)to->page_size);
                r = read_at(userdata, fh, sizeof(fh), (uint64_t)off);
                if (r < 0)
                        goto out;
                if (memcmp(fh + 8, to->salt, 8) != 0) {
                        r = -ESTALE;
                        goto out;
                }
                if (n == cap) {
                        size_t c = cap ? 2 * cap : 64;
                        uint32_t *l = realloc(list, c * sizeof(*l));
                        if (!l) {
                                r = -ENOMEM;
                                goto out;
                        }
                        list = l;
                        cap = c;
                }
                list[n++] = get_be32(fh);
        }
        /* A reset while we read would have rewritten the header. */
        r = read_at(userdata, again, sizeof(again), 0);
        if (r < 0)
                goto out;
        if (memcmp(hdr, again, sizeof(hdr)) != 0) {
                r = -ESTALE;
                goto out;
        }
        if (n > 1)
                qsort(list, n, sizeof(*list), cmp_u32);
        {
                size_t k = 0;
                for (size_t i = 0; i < n; i++)
                        if (k == 0 || list[k - 1] != list[i])
                                list[k++] = list[i];
                n = k;
        }
        *pages = TAKE_PTR(list);
        *n_pages = n;
        r = 0;
out:
        return r;
}

uint64_t wal_frame_data_offset(uint32_t page_size, uint32_t frame) {
        return WAL_HDR_SIZE + (uint64_t)(frame - 1) * (FRAME_HDR_SIZE + (uint64_t)page_size) + FRAME_HDR_SIZE;
}

void wal_frames_done(struct wal_frames *f) {
        free(f->slots);
        *f = (struct wal_frames){};
}

static size_t slot_of(uint32_t page, size_t cap) {
        /* Fibonacci hashing; cap is a power of 2. */
        return (size_t)((page * 2654435769u) & (uint32_t)(cap - 1));
}

static int frames_put(struct wal_frames *f, uint32_t page, uint32_t frame) {
        size_t i;

        if ((f->n + 1) * 4 > f->cap * 3) {
                size_t cap = f->cap ? 2 * f->cap : 256;
                uint32_t *slots = calloc(cap, 2 * sizeof(uint32_t));
                if (!slots)
                        return -ENOMEM;
                for (size_t k = 0; k < f->cap; k++) {
                        uint32_t p = f->slots[2 * k];
                        if (!p)
                                continue;
                        for (i = slot_of(p, cap); slots[2 * i]; i = (i + 1) & (cap - 1))
                                ;
                        slots[2 * i] = p;
                        slots[2 * i + 1] = f->slots[2 * k + 1];
                }
                free(f->slots);
                f->slots = slots;
                f->cap = cap;
        }
        for (i = slot_of(page, f->cap); f->slots[2 * i] && f->slots[2 * i] != page; i = (i + 1) & (f->cap - 1))
                ;
        if (!f->slots[2 * i])
                f->n++;
        f->slots[2 * i] = page;
        f->slots[2 * i + 1] = frame;
        return 0;
}

uint32_t wal_frames_find(const struct wal_frames *f, uint32_t page) {
        if (!f->cap || !page)
                return 0;
        for (size_t i = slot_of(page, f->cap); f->slots[2 * i]; i = (i + 1) & (f->cap - 1))
                if (f->slots[2 * i] == page)
                        return f->slots[2 * i + 1];
        return 0;
}

int wal_frames_update(struct wal_frames *f, wal_read_fn read_at, void *userdata, const struct wal_pos *pos,
                      size_t max_frames) {
        uint8_t hdr[WAL_HDR_SIZE], fh[FRAME_HDR_SIZE];
        int r;

        if (pos->page_size < 512)
                return -ESTALE;
        if (pos->mx_frame > max_frames) {
                wal_frames_done(f);
                return -E2BIG;
        }
        r = read_wal_header(read_at, userdata, pos, hdr);
        if (r < 0)
                return r;
        /* Another generation, or behind what f holds: from the start. */
        if (memcmp(f->salt, pos->salt, 8) != 0 || f->page_size != pos->page_size || f->mx_frame > pos->mx_frame ||
            memcmp(f->header, hdr, sizeof(hdr)) != 0) {
                wal_frames_done(f);
                memcpy(f->salt, pos->salt, 8);
                f->page_size = pos->page_size;
                memcpy(f->header, hdr, sizeof(hdr));
        }
        for (uint32_t fr = f->mx_frame + 1; fr <= pos->mx_frame; fr++) {
                r = read_at(userdata, fh, sizeof(fh), wal_frame_data_offset(pos->page_size, fr) - FRAME_HDR_SIZE);
                if (r < 0)
                        goto fail;
                if (memcmp(fh + 8, pos->salt, 8) != 0 || get_be32(fh) == 0) {
                        r = -ESTALE;
                        goto fail;
                }
                r = frames_put(f, get_be32(fh), fr);
                if (r < 0)
                        goto fail;
                f->mx_frame = fr;
        }
        return wal_frames_check(f, read_at, userdata);
fail:
        wal_frames_done(f);
        return r;
}

int wal_frames_check(const struct wal_frames *f, wal_read_fn read_at, void *userdata) {
        uint8_t hdr[WAL_HDR_SIZE];
        int r = read_at(userdata, hdr, sizeof(hdr), 0);

        if (r < 0)
                return r;
        return memcmp(hdr, f->header, sizeof(hdr)) == 0 ? 0 : -ESTALE;
}
