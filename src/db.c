/* Read-only access to the admin panel's SQLite database; a connection to
 * PostgreSQL instead (driver = postgresql) hands each call to db-pg.c. */
#include "db.h"

#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>

#include "btree.h"
#include "config.h"
#include "db-pg.h"
#include "util.h"
#include "wal.h"

struct db {
        struct pgdb *pg; /* driver = postgresql: everything goes there */
        sqlite3 *handle;
        char *path;
        uint64_t max_key_bytes, max_value_bytes; /* 0: no bound */
        bool immutable;                          /* opened with immutable=1: validate after reading */
        struct db_state state;                   /* before that open */
        char errmsg[512];
        void *memo;
        void (*free_memo)(void *memo);
};

struct db_query {
        struct pgdb_query *pg;
        struct db *db;
        sqlite3_stmt *stmt;
        /* What preparing it read (SQLITE_READ of the authorizer): tables
         * of main by their names in sqlite_schema; reads_unknown when it
         * reads anything else or calls a function whose result changes
         * without the tables (random(), datetime('now')...). */
        char **reads;
        size_t n_reads;
        bool reads_unknown, reads_oom;
};

static int errno_from_sqlite(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
                return -EBADMSG;
        case SQLITE_IOERR:
        case SQLITE_FULL:
                return -EIO;
        case SQLITE_INTERRUPT:
                return -EINTR;
        default:
                return -EINVAL;
        }
}

static int fail(struct db *db, int rc) {
        snprintf(db->errmsg, sizeof(db->errmsg), "%s", sqlite3_errmsg(db->handle));
        return errno_from_sqlite(rc);
}

/* file: URI for path with ?query; path bytes that mean something in a
 * URI are %-escaped. */
static char *uri_for(const char *path, const char *query) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(path);
        char *uri = malloc(5 + 3 * n + 2 + strlen(query)), *o = uri;

        if (!uri)
                return NULL;
        o = stpcpy(o, "file:");
        for (const unsigned char *s = (const unsigned char *)path; *s; s++) {
                if (*s == '%' || *s == '?' || *s == '#' || *s <= 0x20 || *s >= 0x7f) {
                        *o++ = '%';
                        *o++ = hex[*s >> 4];
                        *o++ = hex[*s & 15];
                } else
                        *o++ = (char)*s;
        }
        *o++ = '?';
        strcpy(o, query);
        return uri;
}

static void cap_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv);

/* SQLite's own open(), for every file it opens (database, -wal, -shm,
 * -journal): never blocks (a FIFO renamed over the database would block
 * an O_RDONLY open until a writer comes), and refuses what is not a
 * regular file or a directory (SQLite opens directories to fsync them). */
typedef int (*open_fn)(const char *path, int flags, int mode);
static open_fn real_open;

static int open_nonblocking(const char *path, int flags, int mode) {
        struct stat st;
        int fd = real_open(path, flags | O_NONBLOCK, mode);

        if (fd >= 0 && (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)))) {
                close(fd);
                errno = ENXIO;
                return -1;
        }
        return fd;
}

static void hook_open(void) {
        static bool done;
        sqlite3_vfs *vfs;

        if (done)
                return;
        done = true;
        vfs = sqlite3_vfs_find(NULL);
        if (!vfs || vfs->iVersion < 3 || !vfs->xSetSystemCall || !vfs->xGetSystemCall)
                return;
        real_open = (open_fn)vfs->xGetSystemCall(vfs, "open");
        if (real_open)
                vfs->xSetSystemCall(vfs, "open", (sqlite3_syscall_ptr)open_nonblocking);
}

static const char *file_type(mode_t m) {
        return S_ISFIFO(m)   ? "a FIFO"
               : S_ISDIR(m)  ? "a directory"
               : S_ISCHR(m)  ? "a character device"
               : S_ISBLK(m)  ? "a block device"
               : S_ISSOCK(m) ? "a socket"
                             : "not a regular file";
}

static void mix(uint64_t *h, const void *data, size_t n) {
        const unsigned char *b = data;

        for (size_t i = 0; i < n; i++) {
                *h ^= b[i];
                *h *= 0x100000001b3ULL; /* FNV-1a */
        }
}

static void mix_stat(uint64_t *h, const struct stat *st) {
        mix(h, &st->st_dev, sizeof(st->st_dev));
        mix(h, &st->st_ino, sizeof(st->st_ino));
        mix(h, &st->st_size, sizeof(st->st_size));
        mix(h, &st->st_mtim, sizeof(st->st_mtim));
        mix(h, &st->st_ctim, sizeof(st->st_ctim));
}

/* The wal-index header in -shm (SQLite's WAL file format: two copies of
 * 48 bytes, isInit at byte 12, mxFrame at 16): 1 and the header when it is
 * consistent and initialised, 0 when there is no usable -shm, -EAGAIN when
 * a writer was changing it each time we looked. */
static int read_wal_index(const char *shm, unsigned char hdr[48]) {
        _cleanup_close_ int fd = open(shm, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        unsigned char buf[96];
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        for (int i = 0; i < 100; i++) {
                if (pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
                        return 0;
                if (memcmp(buf, buf + 48, 48) == 0) {
                        if (buf[12] != 1)
                                return 0;
                        memcpy(hdr, buf, 48);
                        return 1;
                }
        }
        return -EAGAIN;
}

int db_probe(const char *path, struct db_state *ret) {
        _cleanup_free_ char *real = NULL, *wal = NULL, *shm = NULL;
        _cleanup_close_ int fd = -1;
        unsigned char hdr[100] = {0}, wal_index[48];
        struct stat st, wst;
        uint64_t h = 0xcbf29ce484222325ULL;
        ssize_t n;
        int k;

        *ret = (struct db_state){0};
        /* stat() first: open() of a FIFO would not block (O_NONBLOCK), but
         * of a device it may do anything. */
        if (stat(path, &st) < 0)
                return ret->error = -errno;
        if (!S_ISREG(st.st_mode))
                return ret->error = -ENOTSUP;
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return ret->error = -errno;
        if (fstat(fd, &st) < 0)
                return ret->error = -errno;
        if (!S_ISREG(st.st_mode))
                return ret->error = -ENOTSUP;
        n = pread(fd, hdr, sizeof(hdr), 0);
        if (n < 0)
                return ret->error = -errno;
        /* SQLite keeps -wal and -shm next to the real file. */
        real = realpath(path, NULL);
        if (!real)
                return ret->error = -errno;
        if (asprintf(&wal, "%s-wal", real) < 0 || asprintf(&shm, "%s-shm", real) < 0)
                return ret->error = -ENOMEM;

        ret->identity = 0xcbf29ce484222325ULL;
        mix(&ret->identity, &st.st_dev, sizeof(st.st_dev));
        mix(&ret->identity, &st.st_ino, sizeof(st.st_ino));
        ret->wal_format = n >= 20 && hdr[18] == 2 && hdr[19] == 2;
        ret->wal_exists = stat(wal, &wst) == 0;

        /* The main file: which file, its size and times, its header (file
         * change counter at 24, version-valid-for at 92, schema cookie). */
        mix_stat(&h, &st);
        mix(&h, hdr, sizeof(hdr));
        /* What -wal adds: in the wal-index header, the last commit's frame,
         * its checksum and the WAL's salts; with no frames, nothing. With
         * no usable -shm, the -wal file as it is (SQLite recovers from it). */
        k = read_wal_index(shm, wal_index);
        if (k > 0) {
                uint32_t mx_frame;
                memcpy(&mx_frame, wal_index + 16, sizeof(mx_frame));
                if (mx_frame > 0)
                        mix(&h, wal_index, sizeof(wal_index));
        } else if (k < 0) {
                uint64_t now = now_usec(CLOCK_MONOTONIC); /* unknown: call it changed */
                mix(&h, &now, sizeof(now));
        } else if (ret->wal_exists && wst.st_size > 0)
                mix_stat(&h, &wst);
        ret->version = h;
        return 0;
}

const char *db_probe_strerror(int error) {
        return error == -ENOTSUP ? "not a regular file" : strerror(-error);
}

/* Opens uri into db->handle and reads the schema. */
static int open_uri(struct db *db, const char *path, const char *query, uint64_t busy_timeout_ms) {
        _cleanup_free_ char *uri = uri_for(path, query);
        int rc;

        if (!uri)
                return SQLITE_NOMEM;
        sqlite3_close_v2(db->handle);
        db->handle = NULL;
        rc = sqlite3_open_v2(uri, &db->handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db->handle, (int)busy_timeout_ms);
                sqlite3_extended_result_codes(db->handle, 1);
                rc = sqlite3_create_function_v2(db->handle, "mapsyncd_cap", 2,
                                                SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL, cap_fn,
                                                NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK) {
                /* Reading the schema proves the file is a database now,
                 * not at the first map. */
                rc = sqlite3_exec(db->handle, "PRAGMA schema_version", NULL, NULL, NULL);
        }
        return rc;
}

int db_open(const char *path, uint64_t busy_timeout_ms, struct db **ret, const char **errmsg) {
        static __thread char msg[512];
        struct stat st;
        struct db *db;
        int rc, r;

        /* SQLite's memory statistics take a global mutex on every malloc and
         * free: 14% of a cycle's instructions (bench/README.md). Only
         * possible before SQLite initialises; later calls change nothing. */
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        hook_open();

        /* Never hand SQLite what is not a regular file. */
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
                snprintf(msg, sizeof(msg), "not a regular file (%s)", file_type(st.st_mode));
                if (errmsg)
                        *errmsg = msg;
                return -ENOTSUP;
        }

        db = calloc(1, sizeof(*db));
        if (!db || !(db->path = strdup(path))) {
                db_close(db);
                if (errmsg)
                        *errmsg = "out of memory";
                return -ENOMEM;
        }

        rc = open_uri(db, path, "mode=ro", busy_timeout_ms);
        if ((rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_READONLY) {
                /* A WAL database whose directory we cannot write, after its
                 * last writer closed: no -wal, no -shm, and SQLite cannot
                 * create the -shm it wants. The main file alone is then the
                 * whole database: read it as immutable, and db_validate()
                 * proves afterwards that it stayed so (no -wal appeared, the
                 * file and its header unchanged). */
                struct db_state s;
                if (db_probe(path, &s) == 0 && s.wal_format && !s.wal_exists) {
                        rc = open_uri(db, path, "mode=ro&immutable=1", busy_timeout_ms);
                        db->immutable = rc == SQLITE_OK;
                        db->state = s;
                }
        }
        if (rc != SQLITE_OK) {
                r = errno_from_sqlite(rc);
                if (r == -ENOENT && access(path, F_OK) == 0)
                        r = -EACCES;
                snprintf(msg, sizeof(msg), "%s",
                         r == -ENOENT ? "no such file"
                         : db->handle ? sqlite3_errmsg(db->handle)
                                      : sqlite3_errstr(rc));
                if (errmsg)
                        *errmsg = msg;
                db_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

bool db_is_immutable(const struct db *db) {
        return db->immutable;
}

int db_validate(struct db *db) {
        struct db_state now;

        if (!db->immutable)
                return 0;
        if (db_probe(db->path, &now) < 0 || now.wal_exists || now.identity != db->state.identity ||
            now.version != db->state.version) {
                snprintf(db->errmsg, sizeof(db->errmsg),
                         "the database changed while it was read without locks (read-only directory); reading it "
                         "again");
                return -ESTALE;
        }
        return 0;
}

int db_open_config(const struct config *c, struct db **ret, const char **errmsg) {
        struct db *db;
        int r;

        if (c->db_driver == DB_DRIVER_SQLITE)
                return db_open(c->db_path, c->busy_timeout_ms, ret, errmsg);
        db = calloc(1, sizeof(*db));
        if (!db) {
                if (errmsg)
                        *errmsg = "out of memory";
                return -ENOMEM;
        }
        r = pgdb_open(c->pg_conninfo, c->pg_passfile, c->busy_timeout_ms, &db->pg, errmsg);
        if (r < 0) {
                free(db);
                return r;
        }
        *ret = db;
        return 0;
}

struct db *db_close(struct db *db) {
        if (!db)
                return NULL;
        if (db->memo && db->free_memo)
                db->free_memo(db->memo);
        pgdb_close(db->pg);
        sqlite3_close_v2(db->handle);
        free(db->path);
        free(db);
        return NULL;
}

int db_begin(struct db *db) {
        if (db->pg)
                return pgdb_begin(db->pg);
        int rc = sqlite3_exec(db->handle, "BEGIN", NULL, NULL, NULL);

        if (rc != SQLITE_OK)
                return fail(db, rc);
        rc = sqlite3_exec(db->handle, "PRAGMA schema_version", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                int r = fail(db, rc);
                sqlite3_exec(db->handle, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        return 0;
}

void db_end(struct db *db) {
        if (db->pg) {
                pgdb_end(db->pg);
                return;
        }
        if (!sqlite3_get_autocommit(db->handle))
                sqlite3_exec(db->handle, "COMMIT", NULL, NULL, NULL);
}

const char *db_errmsg(struct db *db) {
        if (db->pg)
                return pgdb_errmsg(db->pg);
        return db->errmsg;
}

int db_data_version(struct db *db, int64_t *ret) {
        sqlite3_stmt *stmt = NULL;
        int rc;

        if (db->pg) {
                /* PostgreSQL tells of changes by NOTIFY; nothing to compare. */
                *ret = 0;
                return 0;
        }
        rc = sqlite3_prepare_v2(db->handle, "PRAGMA data_version", -1, &stmt, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(stmt);
        if (rc != SQLITE_ROW) {
                int r = fail(db, rc);
                sqlite3_finalize(stmt);
                return r;
        }
        *ret = sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        return 0;
}

void *db_memo(const struct db *db) {
        return db->memo;
}

void db_set_memo(struct db *db, void *memo, void (*free_memo)(void *memo)) {
        if (db->memo && db->free_memo && db->memo != memo)
                db->free_memo(db->memo);
        db->memo = memo;
        db->free_memo = free_memo;
}

bool db_in_wal_mode(struct db *db) {
        sqlite3_stmt *st = NULL;
        bool wal = false;

        if (db->pg)
                return false;
        if (sqlite3_prepare_v2(db->handle, "PRAGMA main.journal_mode", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
                const char *m = (const char *)sqlite3_column_text(st, 0);
                wal = m && strcasecmp(m, "wal") == 0;
        }
        sqlite3_finalize(st);
        return wal;
}

int db_schema_version(struct db *db, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        if (db->pg)
                return -EOPNOTSUPP;
        rc = sqlite3_prepare_v2(db->handle, "PRAGMA main.schema_version", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                int r = fail(db, rc);
                sqlite3_finalize(st);
                return r;
        }
        *ret = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return 0;
}

int db_wal_pos(struct db *db, struct wal_pos *ret) {
        sqlite3_file *f = NULL;
        volatile void *region = NULL;
        unsigned char h0[WAL_INDEX_HDR_SIZE], h1[WAL_INDEX_HDR_SIZE];

        if (db->pg || sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
            !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
                return -EOPNOTSUPP;
        /* xShmMap() would open (and create) -shm of a database in another
         * journal mode. */
        if (db->immutable || !db_in_wal_mode(db))
                return -ENOENT;
        /* The connection's own mapping of -shm (bExtend 0: nothing is
         * created), read as SQLite reads it: the first copy, a barrier, the
         * second. */
        if (f->pMethods->xShmMap(f, 0, 32768, 0, &region) != SQLITE_OK || !region)
                return -ENOENT;
        memcpy(h0, (const void *)region, sizeof(h0));
        f->pMethods->xShmBarrier(f);
        memcpy(h1, (const unsigned char *)(const void *)region + WAL_INDEX_HDR_SIZE, sizeof(h1));
        return wal_parse_index(h0, h1, ret);
}

static int wal_read(void *userdata, void *buf, size_t n, uint64_t off) {
        sqlite3_file *f = userdata;
        int rc = f->pMethods->xRead(f, buf, (int)n, (sqlite3_int64)off);

        return rc == SQLITE_OK ? 0 : -EIO;
}

int db_wal_pages_between(struct db *db, const struct wal_pos *from, const struct wal_pos *to, size_t max_pages,
                         uint32_t **pages, size_t *n_pages) {
        sqlite3_file *f = NULL;

        /* The connection's handle of -wal, read with its xRead. */
        if (db->pg || sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK || !f ||
            !f->pMethods)
                return -EOPNOTSUPP;
        return wal_pages_between(wal_read, f, from, to, max_pages, pages, n_pages);
}

struct page_reader {
        sqlite3_file *main, *wal;
        const struct wal_frames *frames;
        uint32_t page_size;
};

static int read_page(void *userdata, uint32_t pgno, uint8_t *buf) {
        struct page_reader *pr = userdata;
        uint32_t frame = wal_frames_find(pr->frames, pgno);
        int rc;

        if (pgno == 0)
                return -EINVAL;
        if (frame)
                rc = pr->wal->pMethods->xRead(pr->wal, buf, (int)pr->page_size,
                                              (sqlite3_int64)wal_frame_data_offset(pr->page_size, frame));
        else
                rc = pr->main->pMethods->xRead(pr->main, buf, (int)pr->page_size,
                                               (sqlite3_int64)(pgno - 1) * pr->page_size);
        return rc == SQLITE_OK ? 0 : -EIO;
}

int db_page_owners(struct db *db, struct wal_frames *frames, const struct wal_pos *pos, size_t max_frames,
                   const uint32_t *pages, size_t n_pages, char **owner) {
        struct page_reader pr = {.frames = frames, .page_size = pos->page_size};
        _cleanup_free_ uint8_t *first = NULL;
        _cleanup_free_ uint32_t *roots = NULL;
        char **names = NULL;
        size_t n_roots = 0;
        sqlite3_stmt *st = NULL;
        int r, rc;

        for (size_t i = 0; i < n_pages; i++)
                owner[i] = NULL;
        if (db->pg || sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_FILE_POINTER, &pr.main) != SQLITE_OK ||
            !pr.main || !pr.main->pMethods ||
            sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_JOURNAL_POINTER, &pr.wal) != SQLITE_OK || !pr.wal ||
            !pr.wal->pMethods)
                return -EOPNOTSUPP;
        r = wal_frames_update(frames, wal_read, pr.wal, pos, max_frames);
        if (r < 0)
                return r;
        /* The tables' roots as the snapshot has them; sqlite_schema's is 1. */
        rc = sqlite3_prepare_v2(db->handle,
                                "SELECT name, rootpage FROM main.sqlite_schema WHERE type = 'table' AND rootpage > 0",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return fail(db, rc);
        r = -ENOMEM;
        for (rc = SQLITE_ROW; rc == SQLITE_ROW;) {
                const char *name = n_roots == 0 ? "sqlite_schema" : (const char *)sqlite3_column_text(st, 0);
                uint32_t *nr = reallocarray(roots, n_roots + 1, sizeof(*nr));
                char **nn = nr ? reallocarray(names, n_roots + 1, sizeof(*nn)) : NULL;
                if (nr)
                        roots = nr;
                if (nn)
                        names = nn;
                if (!nr || !nn || !name || !(names[n_roots] = strdup(name)))
                        goto out;
                roots[n_roots] = n_roots == 0 ? 1 : (uint32_t)sqlite3_column_int64(st, 1);
                n_roots++;
                rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE) {
                r = fail(db, rc);
                goto out;
        }
        /* The usable size: the page size less the reserved bytes (byte 20
         * of the database header). */
        first = malloc(pos->page_size);
        if (!first)
                goto out;
        r = read_page(&pr, 1, first);
        if (r < 0)
                goto out;
        {
                struct btree_db b = {.read = read_page,
                                     .userdata = &pr,
                                     .page_size = pos->page_size,
                                     .usable_size = pos->page_size - first[20]};
                for (size_t i = 0; i < n_pages; i++) {
                        long o;
                        r = btree_owner(&b, roots, n_roots, pages[i], &o);
                        if (r < 0)
                                goto out;
                        if (o >= 0 && !(owner[i] = strdup(names[o]))) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
        }
        /* Every page read was of pos's generation. */
        r = wal_frames_check(frames, wal_read, pr.wal);
out:
        sqlite3_finalize(st);
        for (size_t i = 0; i < n_roots; i++)
                free(names[i]);
        free(names);
        if (r < 0)
                for (size_t i = 0; i < n_pages; i++) {
                        free(owner[i]);
                        owner[i] = NULL;
                }
        return r;
}

int db_tables_with_pages(struct db *db, const char *const *tables, size_t n_tables, const uint32_t *pages,
                         size_t n_pages, bool *hit) {
        _cleanup_free_ char *sql = NULL;
        sqlite3_stmt *st = NULL;
        size_t len = 0, cap;
        int rc;

        if (db->pg)
                return -EOPNOTSUPP;
        for (size_t i = 0; i < n_tables; i++)
                hit[i] = false;
        if (n_pages == 0 || n_tables == 0)
                return 0;
        /* dbstat walks the b-tree named by name = ?1 only, and LIMIT 1 stops
         * it at the first page of the list. */
        cap = 96 + 11 * n_pages;
        sql = malloc(cap);
        if (!sql)
                return -ENOMEM;
        len = (size_t)snprintf(sql, cap, "SELECT 1 FROM main.dbstat WHERE name = ?1 AND pageno IN (");
        for (size_t i = 0; i < n_pages; i++)
                len += (size_t)snprintf(sql + len, cap - len, "%s%" PRIu32, i ? "," : "", pages[i]);
        snprintf(sql + len, cap - len, ") LIMIT 1");
        rc = sqlite3_prepare_v2(db->handle, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return fail(db, rc);
        for (size_t i = 0; i < n_tables; i++) {
                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, tables[i], -1, SQLITE_STATIC);
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW)
                        hit[i] = true;
                else if (rc != SQLITE_DONE) {
                        int r = fail(db, rc);
                        sqlite3_finalize(st);
                        return r;
                }
        }
        sqlite3_finalize(st);
        return 0;
}

void *db_take_memo(struct db *db, void (**free_memo)(void *memo)) {
        void *memo = db->memo;

        *free_memo = db->free_memo;
        db->memo = NULL;
        db->free_memo = NULL;
        return memo;
}

bool db_has_moved(struct db *db) {
        int moved = 0;

        if (db->pg)
                return false;
        if (sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
                return false;
        return moved != 0;
}

/* Functions whose value changes without any table changing. */
static const char *const volatile_functions[] = {
        "random",       "randomblob",   "changes",       "total_changes",  "last_insert_rowid", "date",
        "time",         "datetime",     "julianday",     "strftime",       "unixepoch",         "current_timestamp",
        "current_date", "current_time", "sqlite_offset", "load_extension",
};

static int on_authorize(void *userdata, int action, const char *a1, const char *a2, const char *a3, const char *a4) {
        struct db_query *q = userdata;

        switch (action) {
        case SQLITE_SELECT:
        case SQLITE_RECURSIVE:
                break;
        case SQLITE_READ:
                if (!a1 || !a3 || strcmp(a3, "main") != 0) {
                        q->reads_unknown = true;
                        break;
                }
                for (size_t i = 0; i < q->n_reads; i++)
                        if (strcmp(q->reads[i], a1) == 0)
                                return SQLITE_OK;
                {
                        char **r = realloc(q->reads, (q->n_reads + 1) * sizeof(*r));
                        if (!r || !(r[q->n_reads] = strdup(a1))) {
                                if (r)
                                        q->reads = r;
                                q->reads_oom = true;
                                break;
                        }
                        q->reads = r;
                        q->n_reads++;
                }
                break;
        case SQLITE_FUNCTION:
                for (size_t i = 0; a2 && i < ARRAY_SIZE(volatile_functions); i++)
                        if (strcasecmp(a2, volatile_functions[i]) == 0)
                                q->reads_unknown = true;
                if (!a2)
                        q->reads_unknown = true;
                break;
        default:
                q->reads_unknown = true;
        }
        return SQLITE_OK;
}

/* Keeps of the names read the ordinary tables of main, spelt as in
 * sqlite_schema; views go (their tables were read too); anything else
 * (sqlite_schema itself, virtual or eponymous tables) makes the reads
 * unknown. */
static void classify_reads(struct db_query *q) {
        sqlite3_stmt *st = NULL;
        size_t k = 0;

        if (q->reads_oom || sqlite3_prepare_v2(q->db->handle,
                                               "SELECT type, name, sql LIKE 'CREATE VIRTUAL%' FROM main.sqlite_schema "
                                               "WHERE name = ?1 COLLATE NOCASE AND type IN ('table', 'view')",
                                               -1, &st, NULL) != SQLITE_OK) {
                q->reads_unknown = true;
                sqlite3_finalize(st);
                return;
        }
        for (size_t i = 0; i < q->n_reads; i++) {
                char *name = q->reads[i];
                bool keep = false;

                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        const char *type = (const char *)sqlite3_column_text(st, 0);
                        const char *canon = (const char *)sqlite3_column_text(st, 1);
                        if (type && strcmp(type, "table") == 0 && !sqlite3_column_int(st, 2) && canon &&
                            strncasecmp(canon, "sqlite_", 7) != 0) {
                                char *c = strdup(canon);
                                if (c) {
                                        free(name);
                                        q->reads[k++] = c;
                                        keep = true;
                                } else
                                        q->reads_unknown = true;
                        } else if (!(type && strcmp(type, "view") == 0))
                                q->reads_unknown = true;
                } else
                        q->reads_unknown = true;
                if (!keep)
                        free(name);
        }
        q->n_reads = k;
        sqlite3_finalize(st);
}

bool db_query_reads(const struct db_query *q, const char *const **tables, size_t *n_tables) {
        if (q->pg || q->reads_unknown)
                return false;
        *tables = (const char *const *)q->reads;
        *n_tables = q->n_reads;
        return true;
}

int db_query_new(struct db *db, const char *sql, struct db_query **ret) {
        return db_query_new_mode(db, sql, DB_QUERY_SORTED, ret);
}

int db_query_new_mode(struct db *db, const char *sql, enum db_query_mode mode, struct db_query **ret) {
        _cleanup_free_ char *body = strdup(sql), *wrapped = NULL;
        struct db_query *q;
        size_t n;
        int rc;

        if (!body)
                return -ENOMEM;
        if (db->pg) {
                struct pgdb_query *pq = NULL;
                int r = pgdb_query_new(db->pg, sql, &pq);
                if (r < 0)
                        return r;
                q = calloc(1, sizeof(*q));
                if (!q) {
                        pgdb_query_free(pq);
                        return -ENOMEM;
                }
                q->db = db;
                q->pg = pq;
                *ret = q;
                return 0;
        }
        /* A trailing ';' would end the statement inside the wrapper. */
        n = strlen(body);
        while (n > 0 && strchr(" \t\r\n;", body[n - 1]))
                body[--n] = '\0';
        /* mapsyncd_cap() puts a marker in place of a key or value over the
         * row-size bound before the sort: neither the sorter nor anything
         * after it copies the value. The stream's order is the column's
         * own (an index can give it); the sorted one that of the capped
         * columns. */
        if (asprintf(&wrapped,
                     "WITH mapsyncd_q(k, v) AS (\n%s\n)\n"
                     "SELECT mapsyncd_cap(k, %llu) AS mapsyncd_k, mapsyncd_cap(v, %llu) AS mapsyncd_v FROM mapsyncd_q "
                     "ORDER BY %s",
                     body, (unsigned long long)db->max_key_bytes, (unsigned long long)db->max_value_bytes,
                     mode == DB_QUERY_STREAM ? "k COLLATE BINARY"
                                             : "lower(mapsyncd_k) COLLATE BINARY, mapsyncd_v COLLATE BINARY") < 0)
                return -ENOMEM;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->db = db;
        sqlite3_set_authorizer(db->handle, on_authorize, q);
        rc = sqlite3_prepare_v2(db->handle, wrapped, -1, &q->stmt, NULL);
        sqlite3_set_authorizer(db->handle, NULL, NULL);
        if (rc == SQLITE_OK)
                classify_reads(q);
        if (rc != SQLITE_OK) {
                int r = fail(db, rc);
                /* "table mapsyncd_q has 3 values for 2 columns" names our
                 * wrapper; say it in the config's terms. */
                if (strstr(db->errmsg, "values for 2 columns"))
                        snprintf(db->errmsg, sizeof(db->errmsg),
                                 "the query must return exactly two columns (key, value)");
                db_query_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

static enum db_type type_of(int t) {
        switch (t) {
        case SQLITE_INTEGER:
                return DB_INTEGER;
        case SQLITE_FLOAT:
                return DB_REAL;
        case SQLITE_BLOB:
                return DB_BLOB;
        case SQLITE_NULL:
                return DB_NULL;
        default:
                return DB_TEXT;
        }
}

bool db_is_utf8(struct db *db) {
        sqlite3_stmt *stmt = NULL;
        bool utf8 = false;

        if (db->pg)
                return false; /* sorted by PostgreSQL, never streamed */
        if (sqlite3_prepare_v2(db->handle, "PRAGMA encoding", -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW) {
                const unsigned char *e = sqlite3_column_text(stmt, 0);
                utf8 = e && strcmp((const char *)e, "UTF-8") == 0;
        }
        sqlite3_finalize(stmt);
        return utf8;
}

/* The marker mapsyncd_cap() returns for a value over the bound: a blob of
 * CAP_MAGIC and the value's size (8 bytes, little-endian). No valid key or
 * value holds a NUL byte, so the marker cannot be mistaken for one. */
#define CAP_MAGIC     "\0mapsyncd-cap"
#define CAP_MAGIC_LEN (sizeof(CAP_MAGIC) - 1)

static void cap_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
        sqlite3_int64 max = sqlite3_value_int64(argv[1]);
        int type = sqlite3_value_type(argv[0]);
        sqlite3_int64 n;
        unsigned char m[CAP_MAGIC_LEN + 8];

        if (max <= 0 || (type != SQLITE_TEXT && type != SQLITE_BLOB)) {
                sqlite3_result_value(ctx, argv[0]);
                return;
        }
        /* The size as stored: no conversion, no copy. */
        n = sqlite3_value_bytes(argv[0]);
        if (n <= max) {
                sqlite3_result_value(ctx, argv[0]);
                return;
        }
        memcpy(m, CAP_MAGIC, CAP_MAGIC_LEN);
        for (int i = 0; i < 8; i++)
                m[CAP_MAGIC_LEN + i] = (unsigned char)((uint64_t)n >> (8 * i));
        sqlite3_result_blob(ctx, m, sizeof(m), SQLITE_TRANSIENT);
}

static uint64_t cap_marker(const unsigned char *p, size_t n) {
        uint64_t v = 0;

        if (!p || n != CAP_MAGIC_LEN + 8 || memcmp(p, CAP_MAGIC, CAP_MAGIC_LEN) != 0)
                return 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[CAP_MAGIC_LEN + i];
        return v;
}

void db_set_limits(struct db *db, uint64_t max_key_bytes, uint64_t max_value_bytes) {
        db->max_key_bytes = max_key_bytes;
        db->max_value_bytes = max_value_bytes;
}

int db_query_check(struct db *db, const char *sql) {
        sqlite3_stmt *stmt = NULL;
        const char *tail = NULL;
        int rc;

        if (db->pg)
                return 0; /* PostgreSQL: the server's read-only transaction judges */
        rc = sqlite3_prepare_v2(db->handle, sql, -1, &stmt, &tail);
        if (rc != SQLITE_OK)
                return fail(db, rc);
        if (!stmt) {
                snprintf(db->errmsg, sizeof(db->errmsg), "the query is empty");
                return -EINVAL;
        }
        if (!sqlite3_stmt_readonly(stmt)) {
                sqlite3_finalize(stmt);
                snprintf(db->errmsg, sizeof(db->errmsg), "the query is not read-only");
                return -EINVAL;
        }
        sqlite3_finalize(stmt);
        /* Only white space, ';' and comments may follow. */
        while (tail && *tail) {
                rc = sqlite3_prepare_v2(db->handle, tail, -1, &stmt, &tail);
                if (rc != SQLITE_OK)
                        return fail(db, rc);
                if (stmt) {
                        sqlite3_finalize(stmt);
                        snprintf(db->errmsg, sizeof(db->errmsg), "the query holds more than one statement");
                        return -EINVAL;
                }
        }
        return 0;
}

/* PostgreSQL rows come whole from libpq: the bound is applied to them as
 * they arrive, with the same result for the map. */
static void cap_row(const struct db *db, struct db_row *row) {
        if (db->max_key_bytes && row->key && row->key_len > db->max_key_bytes) {
                row->key_too_long = row->key_len;
                row->key = NULL;
                row->key_len = 0;
                row->key_type = DB_NULL;
        }
        if (db->max_value_bytes && row->value && row->value_len > db->max_value_bytes) {
                row->value_too_long = row->value_len;
                row->value = NULL;
                row->value_len = 0;
                row->value_type = DB_NULL;
        }
}

int db_query_next(struct db_query *q, struct db_row *row) {
        if (q->pg) {
                int r = pgdb_query_next(q->pg, row);
                if (r > 0) {
                        row->key_too_long = row->value_too_long = 0;
                        cap_row(q->db, row);
                }
                return r;
        }
        int rc = sqlite3_step(q->stmt);

        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return fail(q->db, rc);

        /* The types before any conversion; the number, then text, then its
         * length: that order keeps the pointers valid. */
        int tk = sqlite3_column_type(q->stmt, 0), tv = sqlite3_column_type(q->stmt, 1);

        row->key_type = type_of(tk);
        row->value_type = type_of(tv);
        if (tv == SQLITE_INTEGER)
                row->value_int = sqlite3_column_int64(q->stmt, 1);
        else if (tv == SQLITE_FLOAT)
                row->value_real = sqlite3_column_double(q->stmt, 1);

        row->key = tk == SQLITE_NULL ? NULL : sqlite3_column_text(q->stmt, 0);
        row->key_len = row->key ? (size_t)sqlite3_column_bytes(q->stmt, 0) : 0;
        row->value = tv == SQLITE_NULL ? NULL : sqlite3_column_text(q->stmt, 1);
        row->value_len = row->value ? (size_t)sqlite3_column_bytes(q->stmt, 1) : 0;
        if ((tk != SQLITE_NULL && !row->key) || (tv != SQLITE_NULL && !row->value))
                return -ENOMEM;
        row->key_too_long = tk == SQLITE_BLOB ? cap_marker(row->key, row->key_len) : 0;
        row->value_too_long = tv == SQLITE_BLOB ? cap_marker(row->value, row->value_len) : 0;
        if (row->key_too_long) {
                row->key = NULL;
                row->key_len = 0;
                row->key_type = DB_NULL;
        }
        if (row->value_too_long) {
                row->value = NULL;
                row->value_len = 0;
                row->value_type = DB_NULL;
        }
        return 1;
}

struct db_query *db_query_free(struct db_query *q) {
        if (!q)
                return NULL;
        pgdb_query_free(q->pg);
        sqlite3_finalize(q->stmt);
        for (size_t i = 0; i < q->n_reads; i++)
                free(q->reads[i]);
        free(q->reads);
        free(q);
        return NULL;
}
