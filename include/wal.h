/* What commits wrote, from a WAL database's own files: the wal-index
 * header in -shm (which frame ends the last commit, and the WAL's salts,
 * new at every reset) and the frame headers of the -wal (the page each
 * frame writes). The layouts are SQLite's file formats (fileformat2.html,
 * "The WAL File Format" and "The WAL-Index Format"). The bytes come from
 * SQLite's own handles (db.h): opening and closing another descriptor of
 * -shm would drop the connection's POSIX locks on it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A point in the WAL: frames 1..mx_frame of the WAL generation salt are
 * committed. */
struct wal_pos {
        uint8_t salt[8]; /* as stored: raw bytes */
        uint32_t mx_frame;
        uint32_t change; /* iChange: bumped by every commit */
        uint32_t page_size;
};

/* The size of one copy of the wal-index header (struct WalIndexHdr); two
 * copies begin the -shm. */
#define WAL_INDEX_HDR_SIZE 48

/* Parses the two copies of the wal-index header, read first and second
 * (a writer writes the second first). 0, or -EAGAIN when they differ or the
 * index is not initialised (a writer was at work: try again). */
int wal_parse_index(const void *hdr0, const void *hdr1, struct wal_pos *ret);

/* Reads n bytes at off of the -wal: 0 or a negative errno (-EIO when
 * short). */
typedef int (*wal_read_fn)(void *userdata, void *buf, size_t n, uint64_t off);

/* Whether a and b are the same point. */
bool wal_pos_equal(const struct wal_pos *a, const struct wal_pos *b);

/* The page numbers written by frames from->mx_frame + 1 .. to->mx_frame
 * of the -wal read by read_at, appended to *pages (malloc'd, *n_pages entries, repeats
 * removed, sorted). -ESTALE when the two points are not of one WAL
 * generation, the WAL's header does not carry to's salt, a frame is of
 * another generation, or the WAL changed while being read; -E2BIG beyond
 * max_pages pages; -EIO, -ENOMEM. */
int wal_pages_between(wal_read_fn read_at, void *userdata, const struct wal_pos *from, const struct wal_pos *to,
                      size_t max_pages, uint32_t **pages, size_t *n_pages);

/* The last frame of each page among frames 1..mx_frame of one WAL
 * generation: where a snapshot pinned at that position finds the pages the
 * WAL holds (the others are in the database file). Frames of a generation
 * are never rewritten, so the index grows with the WAL (wal_frames_update)
 * and starts again at a reset. */
struct wal_frames {
        uint8_t salt[8];
        uint32_t page_size;
        uint32_t mx_frame;  /* frames 1..mx_frame are in the index */
        uint8_t header[32]; /* the WAL header the index was read under */
        uint32_t *slots;    /* open addressing: page, frame pairs */
        size_t cap;         /* slots hold cap pairs; a power of 2 */
        size_t n;
};

/* Brings f to pos: reads the frame headers after f->mx_frame (all of them
 * when f is of another generation or empty). -ESTALE when the WAL is not
 * of pos's generation (header or a frame), -E2BIG beyond max_frames
 * frames (f is emptied), -EIO, -ENOMEM. */
int wal_frames_update(struct wal_frames *f, wal_read_fn read_at, void *userdata, const struct wal_pos *pos,
                      size_t max_frames);

/* The last frame (1-based) that writes page, 0 when none. */
uint32_t wal_frames_find(const struct wal_frames *f, uint32_t page);

/* Offset in -wal of the page data of frame. */
uint64_t wal_frame_data_offset(uint32_t page_size, uint32_t frame);

/* Whether the WAL header is still the one f was read under: a reset
 * rewrites it before any frame is overwritten, so reads of frames made
 * before this returns true were of f's generation. 0, -ESTALE, -EIO. */
int wal_frames_check(const struct wal_frames *f, wal_read_fn read_at, void *userdata);

void wal_frames_done(struct wal_frames *f);
