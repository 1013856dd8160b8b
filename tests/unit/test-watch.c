/* Unit tests of watch.h on real inotify in a private directory, through a
 * real sd-event loop run for bounded times: what is reported for writes to
 * the database and its -wal, for its -journal, for files that are not its
 * own, for a replacement by rename and by delete and create, for a
 * symlinked path whose link is re-pointed, for a watched directory that is
 * removed or renamed (lost), and for a queue overflow; and watch_resolve's
 * walk of paths (relative, "..", chains of links, loops, missing parts). */
#include "watch.h"

#include <limits.h>

#include "util.h"

#include "loop.h"

static sd_event *event;

/* What the watch reported. */
struct seen {
        unsigned n;       /* calls */
        unsigned any;     /* flags of every call, OR'd */
        unsigned n_zero;  /* calls with flags 0 */
        unsigned n_flags; /* calls with some flag */
};

static void on_watch(void *userdata, unsigned flags) {
        struct seen *s = userdata;

        s->n++;
        s->any |= flags;
        if (flags)
                s->n_flags++;
        else
                s->n_zero++;
}

/* Runs the loop until nothing more is pending: first waiting up to 2 s for
 * one event (when want_one), then as long as events keep coming within
 * 50 ms. Bounded: at most 4 s in all. */
static void settle(struct seen *s, bool want_one) {
        uint64_t end = loop_now_usec() + 4000000;
        unsigned before = s->n;

        if (want_one)
                while (s->n == before && loop_now_usec() < end)
                        if (sd_event_run(event, 10000) < 0)
                                break;
        while (loop_now_usec() < end) {
                int r = sd_event_run(event, 50000);
                if (r <= 0)
                        break;
        }
}

static void append_to(const char *path, const char *data) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

        if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data))
                abort();
        close(fd);
}

struct fixture {
        char *dir, *db, *wal, *journal;
        struct watch *w;
        struct seen s;
};

static bool fixture_init(struct fixture *f) {
        *f = (struct fixture){0};
        f->dir = test_mkdtemp();
        f->db = test_path(f->dir, "admin.sqlite");
        f->wal = test_path(f->dir, "admin.sqlite-wal");
        f->journal = test_path(f->dir, "admin.sqlite-journal");
        if (test_write_file(f->db, "x", 1, 0600) < 0)
                abort();
        if (!CHECK_INT(watch_new(event, f->db, on_watch, &f->s, &f->w), 0))
                return false;
        settle(&f->s, false);
        f->s = (struct seen){0};
        return true;
}

static void fixture_done(struct fixture *f) {
        watch_free(f->w);
        test_rm_rf(f->dir);
        free(f->dir);
        free(f->db);
        free(f->wal);
        free(f->journal);
}

static void test_db_write(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        CHECK_STR(watch_real_path(f.w), f.db);
        CHECK_UINT(watch_n_links(f.w), 0);
        CHECK(watch_is_current(f.w));
        append_to(f.db, "y");
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK(f.s.any & WATCH_DB_WRITE);
        CHECK(!(f.s.any & (WATCH_WAL_WRITE | WATCH_OVERFLOW | WATCH_LOST | WATCH_RELINK)));
out:
        fixture_done(&f);
}

static void test_wal_write(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        /* Creating the -wal is an event without a flag (IN_CREATE); its
         * write says WATCH_WAL_WRITE, never WATCH_DB_WRITE. */
        if (test_write_file(f.wal, "", 0, 0600) < 0)
                abort();
        settle(&f.s, true);
        CHECK(f.s.n_zero >= 1);
        CHECK_UINT(f.s.any, 0);
        f.s = (struct seen){0};
        append_to(f.wal, "frame");
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_WAL_WRITE);
        CHECK(!(f.s.any & WATCH_DB_WRITE));
out:
        fixture_done(&f);
}

static void test_journal(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        /* A rollback journal's life (create, write, delete) is seen, with
         * no flag: only the database's and the -wal's writes have one. */
        append_to(f.journal, "journal");
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK_UINT(f.s.any, 0);
        f.s = (struct seen){0};
        CHECK_INT(unlink(f.journal), 0);
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK_UINT(f.s.any, 0);
out:
        fixture_done(&f);
}

static void test_other_files_ignored(void) {
        struct fixture f;
        const char *names[] = {"admin.sqlite-shm", "admin.sqlitex", "admin.sqlite-wal2", "admin.sqlite-journalx",
                               "admin.sqlit",      "other",         "admin.sqlite.tmp"};

        if (!fixture_init(&f))
                goto out;
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                _cleanup_free_ char *p = test_path(f.dir, names[i]);
                append_to(p, "z");
                append_to(p, "z");
                CHECK_INT(unlink(p), 0);
        }
        /* A directory of its own (IN_CREATE with IN_ISDIR) named unlike the
         * database. */
        {
                _cleanup_free_ char *p = test_path(f.dir, "sub");
                CHECK_INT(mkdir(p, 0700), 0);
                CHECK_INT(rmdir(p), 0);
        }
        /* Then one event of ours, so that the loop has surely read past
         * the others. */
        append_to(f.db, "y");
        settle(&f.s, true);
        /* Its IN_MODIFY (WATCH_DB_WRITE) and IN_CLOSE_WRITE (no flag), and
         * nothing of the others. */
        CHECK_UINT(f.s.n_flags, 1);
        CHECK_UINT(f.s.n_zero, 1);
        CHECK_UINT(f.s.any, WATCH_DB_WRITE);
out:
        fixture_done(&f);
}

static void test_rename_over(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        /* The admin panel's restore: a new file renamed over the database. */
        {
                _cleanup_free_ char *tmp = test_path(f.dir, "admin.sqlite.new");
                CHECK_INT(test_write_file(tmp, "new", 3, 0600), 0);
                settle(&f.s, false);
                CHECK_UINT(f.s.n, 0);
                CHECK_INT(rename(tmp, f.db), 0);
        }
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK(!(f.s.any & (WATCH_LOST | WATCH_OVERFLOW | WATCH_RELINK)));
        /* The watch is on the directory: the new file is watched too. */
        f.s = (struct seen){0};
        append_to(f.db, "y");
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_DB_WRITE);
        CHECK(watch_is_current(f.w));
out:
        fixture_done(&f);
}

static void test_rename_away(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        {
                _cleanup_free_ char *to = test_path(f.dir, "gone");
                CHECK_INT(rename(f.db, to), 0);
        }
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK_UINT(f.s.any, 0);
out:
        fixture_done(&f);
}

static void test_delete_create(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        CHECK_INT(unlink(f.db), 0);
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK_UINT(f.s.any, 0);
        f.s = (struct seen){0};
        CHECK_INT(test_write_file(f.db, "", 0, 0600), 0);
        settle(&f.s, true);
        CHECK(f.s.n >= 1);
        CHECK(!(f.s.any & (WATCH_LOST | WATCH_OVERFLOW | WATCH_RELINK)));
        f.s = (struct seen){0};
        append_to(f.db, "y");
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_DB_WRITE);
out:
        fixture_done(&f);
}

/* A deploy tool's layout: releases/1, releases/2, current -> releases/1;
 * the database named through current. */
static void test_symlink_repointed(void) {
        char *dir = test_mkdtemp();
        _cleanup_free_ char *rel = test_path(dir, "releases"), *r1 = test_path(dir, "releases/1"),
                            *r2 = test_path(dir, "releases/2"), *cur = test_path(dir, "current"),
                            *cur_new = test_path(dir, "current.new"), *via = test_path(dir, "current/admin.sqlite"),
                            *db1 = test_path(dir, "releases/1/admin.sqlite"),
                            *db2 = test_path(dir, "releases/2/admin.sqlite");
        struct watch *w = NULL;
        struct seen s = {0};

        CHECK_INT(mkdir(rel, 0700), 0);
        CHECK_INT(mkdir(r1, 0700), 0);
        CHECK_INT(mkdir(r2, 0700), 0);
        CHECK_INT(test_write_file(db1, "1", 1, 0600), 0);
        CHECK_INT(test_write_file(db2, "2", 1, 0600), 0);
        CHECK_INT(symlink("releases/1", cur), 0);
        if (!CHECK_INT(watch_new(event, via, on_watch, &s, &w), 0))
                goto out;
        CHECK_STR(watch_real_path(w), db1);
        CHECK_UINT(watch_n_links(w), 1);
        settle(&s, false);
        s = (struct seen){0};

        /* The release behind the link is watched. */
        append_to(db1, "y");
        settle(&s, true);
        CHECK_UINT(s.any, WATCH_DB_WRITE);
        s = (struct seen){0};

        /* Another release is not (until the link points to it). */
        append_to(db2, "y");
        settle(&s, false);
        CHECK_UINT(s.n, 0);

        /* Re-pointed atomically, as deploy tools do: ln -s + mv -T. */
        CHECK_INT(symlink("releases/2", cur_new), 0);
        settle(&s, false);
        CHECK_UINT(s.n, 0); /* "current.new" is not the link's name */
        CHECK_INT(rename(cur_new, cur), 0);
        settle(&s, true);
        CHECK(s.n >= 1);
        CHECK_UINT(s.any, WATCH_RELINK);
        /* The watch itself still names releases/1: the caller watches anew. */
        CHECK_STR(watch_real_path(w), db1);
        s = (struct seen){0};

        /* Removing the link is a relink too. */
        CHECK_INT(unlink(cur), 0);
        settle(&s, true);
        CHECK(s.any & WATCH_RELINK);
        CHECK(!(s.any & WATCH_LOST));
        watch_free(w);
        w = NULL;

        /* Watching anew follows the link to where it points now. */
        CHECK_INT(symlink("releases/2", cur), 0);
        s = (struct seen){0};
        if (!CHECK_INT(watch_new(event, via, on_watch, &s, &w), 0))
                goto out;
        CHECK_STR(watch_real_path(w), db2);
        append_to(db2, "y");
        settle(&s, true);
        CHECK(s.any & WATCH_DB_WRITE);
out:
        watch_free(w);
        test_rm_rf(dir);
        free(dir);
}

/* The database itself a symlink in the same directory (admin.sqlite ->
 * data/real.sqlite): the link's name is watched in the outer directory. */
static void test_symlinked_file(void) {
        char *dir = test_mkdtemp();
        _cleanup_free_ char *data = test_path(dir, "data"), *real = test_path(dir, "data/real.sqlite"),
                            *real2 = test_path(dir, "data/other.sqlite"), *link = test_path(dir, "admin.sqlite"),
                            *tmp = test_path(dir, "admin.sqlite.tmp");
        struct watch *w = NULL;
        struct seen s = {0};

        CHECK_INT(mkdir(data, 0700), 0);
        CHECK_INT(test_write_file(real, "1", 1, 0600), 0);
        CHECK_INT(test_write_file(real2, "2", 1, 0600), 0);
        CHECK_INT(symlink("data/real.sqlite", link), 0);
        if (!CHECK_INT(watch_new(event, link, on_watch, &s, &w), 0))
                goto out;
        CHECK_STR(watch_real_path(w), real);
        CHECK_UINT(watch_n_links(w), 1);
        settle(&s, false);
        s = (struct seen){0};
        append_to(real, "y");
        settle(&s, true);
        CHECK_UINT(s.any, WATCH_DB_WRITE);
        s = (struct seen){0};
        /* Writing the link's target's sibling: nothing. */
        append_to(real2, "y");
        settle(&s, false);
        CHECK_UINT(s.n, 0);
        CHECK_INT(symlink("data/other.sqlite", tmp), 0);
        CHECK_INT(rename(tmp, link), 0);
        settle(&s, true);
        CHECK_UINT(s.any, WATCH_RELINK);
out:
        watch_free(w);
        test_rm_rf(dir);
        free(dir);
}

static void test_directory_removed(void) {
        struct fixture f;

        if (!fixture_init(&f))
                goto out;
        CHECK_INT(unlink(f.db), 0);
        CHECK_INT(rmdir(f.dir), 0);
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_LOST);
        CHECK(!watch_is_current(f.w));
        /* (Made anew under the old name, the directory may get the old
         * inode number back, as on ext4, and then looks current again:
         * only the WATCH_LOST above tells.) */
        CHECK_INT(mkdir(f.dir, 0700), 0); /* for fixture_done */
out:
        fixture_done(&f);
}

static void test_directory_renamed(void) {
        struct fixture f;
        _cleanup_free_ char *moved = NULL;

        if (!fixture_init(&f))
                goto out;
        if (asprintf(&moved, "%s.moved", f.dir) < 0)
                abort();
        CHECK_INT(rename(f.dir, moved), 0);
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_LOST);
        CHECK(!watch_is_current(f.w));
        /* Another directory under the old name (the old one lives on, so
         * it cannot share its inode number): not current. */
        CHECK_INT(mkdir(f.dir, 0700), 0);
        CHECK(!watch_is_current(f.w));
        CHECK_INT(rmdir(f.dir), 0);
        CHECK_INT(rename(moved, f.dir), 0);
        /* Renamed back: the same directory again. */
        CHECK(watch_is_current(f.w));
out:
        fixture_done(&f);
}

/* More events than the kernel queues (fs.inotify.max_queued_events, 16384
 * by default) while the loop does not read: the watch reports
 * WATCH_OVERFLOW. Writes alternate between two files so that the kernel
 * cannot merge them. */
static void test_overflow(void) {
        struct fixture f;
        unsigned long max = 16384;
        FILE *p = fopen("/proc/sys/fs/inotify/max_queued_events", "re");
        int fd_db, fd_wal;

        if (p) {
                if (fscanf(p, "%lu", &max) != 1)
                        max = 16384;
                fclose(p);
        }
        if (!fixture_init(&f))
                goto out;
        fd_db = open(f.db, O_WRONLY | O_APPEND | O_CLOEXEC);
        fd_wal = open(f.wal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        REQUIRE(fd_db >= 0 && fd_wal >= 0);
        for (unsigned long i = 0; i < max + 100; i++)
                if (write(i % 2 ? fd_wal : fd_db, "x", 1) != 1)
                        abort();
        close(fd_db);
        close(fd_wal);
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_OVERFLOW);
        /* The watch works on after it. */
        f.s = (struct seen){0};
        append_to(f.db, "y");
        settle(&f.s, true);
        CHECK(f.s.any & WATCH_DB_WRITE);
out:
        fixture_done(&f);
}

static void test_new_errors(void) {
        char *dir = test_mkdtemp();
        _cleanup_free_ char *missing = test_path(dir, "nodir/admin.sqlite"), *file = test_path(dir, "file"),
                            *under_file = test_path(dir, "file/admin.sqlite"), *loop = test_path(dir, "loop"),
                            *via_loop = test_path(dir, "loop/admin.sqlite"), *absent = test_path(dir, "absent.sqlite");
        struct watch *w = NULL;
        struct seen s = {0};

        CHECK_INT(watch_new(event, missing, on_watch, &s, &w), -ENOENT);
        CHECK(!w);
        CHECK_INT(test_write_file(file, "", 0, 0600), 0);
        CHECK_INT(watch_new(event, under_file, on_watch, &s, &w), -ENOTDIR);
        CHECK(!w);
        CHECK_INT(symlink("loop", loop), 0);
        CHECK_INT(watch_new(event, via_loop, on_watch, &s, &w), -ELOOP);
        CHECK(!w);
        /* A database that does not exist yet is watched for (its directory). */
        if (CHECK_INT(watch_new(event, absent, on_watch, &s, &w), 0)) {
                CHECK_STR(watch_real_path(w), absent);
                CHECK_INT(test_write_file(absent, "", 0, 0600), 0);
                settle(&s, true);
                CHECK(s.n >= 1);
        }
        watch_free(w);
        CHECK(watch_free(NULL) == NULL);
        test_rm_rf(dir);
        free(dir);
}

static int record_link(void *userdata, const char *dir, const char *name) {
        struct test_buf *b = userdata;

        test_buf_write(b, dir, strlen(dir));
        test_buf_write(b, " ", 1);
        test_buf_write(b, name, strlen(name));
        test_buf_write(b, "\n", 1);
        return 0;
}

static int refuse_link(void *userdata, const char *dir, const char *name) {
        (void)userdata;
        (void)dir;
        (void)name;
        return -EPERM;
}

static void test_resolve(void) {
        char *dir = test_mkdtemp();
        _cleanup_free_ char *a = test_path(dir, "a"), *b = test_path(dir, "a/b"), *l1 = test_path(dir, "l1"),
                            *l2 = test_path(dir, "a/l2"), *dangling = test_path(dir, "dangling"), *want = NULL,
                            *links = NULL, *cwd = getcwd(NULL, 0);
        struct test_buf rec = {0};
        char *real = NULL;

        REQUIRE(cwd);
        CHECK_INT(mkdir(a, 0700), 0);
        CHECK_INT(mkdir(b, 0700), 0);
        /* l1 -> a/l2 (relative), a/l2 -> <dir>/a/b (absolute). */
        CHECK_INT(symlink("a/l2", l1), 0);
        CHECK_INT(symlink(b, l2), 0);
        CHECK_INT(symlink("nowhere/x", dangling), 0);

        /* Plain, with ".", "..", and repeated slashes. */
        {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s//a/./b/../b/db", dir) < 0)
                        abort();
                CHECK_INT(watch_resolve(p, &real, NULL, NULL), 0);
                want = test_path(dir, "a/b/db");
                CHECK_STR(real, want);
                free(real);
                real = NULL;
        }
        /* Through two links: both recorded, each with its real directory. */
        {
                _cleanup_free_ char *p = test_path(dir, "l1/db");
                CHECK_INT(watch_resolve(p, &real, record_link, &rec), 0);
                CHECK_STR(real, want);
                free(real);
                real = NULL;
                if (asprintf(&links, "%s l1\n%s/a l2\n", dir, dir) < 0)
                        abort();
                CHECK_STR(rec.data, links);
        }
        /* A link_fn's error ends the walk. */
        {
                _cleanup_free_ char *p = test_path(dir, "l1/db");
                CHECK_INT(watch_resolve(p, &real, refuse_link, NULL), -EPERM);
        }
        /* Relative to the working directory. */
        {
                CHECK_INT(chdir(dir), 0);
                CHECK_INT(watch_resolve("l1/db", &real, NULL, NULL), 0);
                CHECK_STR(real, want);
                free(real);
                real = NULL;
                CHECK_INT(chdir(cwd), 0);
        }
        /* ".." above the root stays at the root. */
        CHECK_INT(watch_resolve("/../../", &real, NULL, NULL), 0);
        CHECK_STR(real, "/");
        free(real);
        real = NULL;
        /* A dangling link as a directory on the way: its target's missing
         * directory is an error; a missing middle directory too. */
        {
                _cleanup_free_ char *p = test_path(dir, "dangling/db"), *q = test_path(dir, "nodir/db");
                CHECK_INT(watch_resolve(p, &real, NULL, NULL), -ENOENT);
                CHECK_INT(watch_resolve(q, &real, NULL, NULL), -ENOENT);
        }
        /* The last component a dangling link: its target, which need not
         * exist when its directory does. */
        {
                _cleanup_free_ char *p = test_path(dir, "later"), *t = test_path(dir, "a/later.sqlite");
                CHECK_INT(symlink("a/later.sqlite", p), 0);
                CHECK_INT(watch_resolve(p, &real, NULL, NULL), 0);
                CHECK_STR(real, t);
                free(real);
                real = NULL;
        }
        test_buf_done(&rec);
        test_rm_rf(dir);
        free(dir);
}

int main(void) {
        log_init(LOG_CRIT);
        if (sd_event_new(&event) < 0)
                abort();
        RUN(test_db_write);
        RUN(test_wal_write);
        RUN(test_journal);
        RUN(test_other_files_ignored);
        RUN(test_rename_over);
        RUN(test_rename_away);
        RUN(test_delete_create);
        RUN(test_symlink_repointed);
        RUN(test_symlinked_file);
        RUN(test_directory_removed);
        RUN(test_directory_renamed);
        RUN(test_overflow);
        RUN(test_new_errors);
        RUN(test_resolve);
        sd_event_unref(event);
        return test_end();
}
