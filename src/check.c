/* --check and --dry-run. */
#include "check.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "db.h"
#include "files.h"
#include "log.h"
#include "sync.h"
#include "trust.h"
#include "util.h"
#include "webhook.h"

static unsigned problem(const struct config *c, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static unsigned problem(const struct config *c, unsigned line, const char *fmt, ...) {
        va_list ap;

        if (line)
                fprintf(stderr, "%s:%u: ", c->path, line);
        else /* a default value: no line to name */
                fprintf(stderr, "%s: ", c->path);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return 1;
}

/* A directory this process can create files in, or why not. */
static const char *dir_problem(const char *dir) {
        static char why[PATH_MAX + 400];
        struct trust_problem tp;
        struct stat st;

        if (stat(dir, &st) < 0)
                return strerror(errno);
        if (!S_ISDIR(st.st_mode))
                return "not a directory";
        if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0)
                return strerror(errno);
        if (trust_path(dir, TRUST_LEAF_STICKY_OK, &tp) < 0) {
                snprintf(why, sizeof(why),
                         "%s is %s (it must be owned by root or this user and writable by no one else, unless "
                         "sticky)",
                         tp.path, tp.why);
                return why;
        }
        return NULL;
}

/* ", N file sets" when there are any. */
static const char *files_summary(const struct config *c) {
        static char buf[64];

        if (c->n_files == 0)
                return "";
        snprintf(buf, sizeof(buf), ", %zu file set%s", c->n_files, c->n_files == 1 ? "" : "s");
        return buf;
}

int check_run(const struct config *c) {
        struct db *db = NULL;
        const char *msg = NULL, *why;
        struct stat st;
        unsigned n = 0;
        int r;

        r = db_open_config(c, &db, &msg);
        if (r < 0)
                n += problem(c, c->db_path_line, "database %s: %s", c->db_path, msg);

        for (size_t i = 0; i < c->n_maps; i++) {
                const struct map_config *m = &c->maps[i];
                _cleanup_free_ char *copy = strdup(m->output);
                struct db_query *q = NULL;

                if (db) {
                        /* The query as written first: a statement that writes,
                         * or a second statement, is refused here even though
                         * the read-only connection would stop it at run time. */
                        if (db_query_check(db, m->query) < 0 || db_query_new(db, m->query, &q) < 0)
                                n += problem(c, m->query_line ? m->query_line : m->line, "[map %s] query: %s", m->name,
                                             db_errmsg(db));
                        db_query_free(q);
                }
                if (copy && (why = dir_problem(dirname(copy))))
                        n += problem(c, m->line, "[map %s] cannot write into the directory of %s: %s", m->name,
                                     m->output, why);
        }
        for (size_t i = 0; i < c->n_files; i++) {
                const struct files_config *f = &c->files[i];
                struct db_query *q = NULL;

                if (db) {
                        if (db_query_new(db, f->query, &q) < 0)
                                n += problem(c, f->line, "[files %s] query: %s", f->name, db_errmsg(db));
                        db_query_free(q);
                }
                if ((why = dir_problem(f->directory)))
                        n += problem(c, f->line, "[files %s] cannot write into directory %s: %s", f->name, f->directory,
                                     why);
        }
        for (size_t i = 0; i < c->n_webhooks; i++) {
                const struct webhook_config *w = &c->webhooks[i];
                char *secret = NULL, err[512];
                size_t len = 0;

                if (webhook_read_secret(w->secret_file, &secret, &len, err, sizeof(err)) < 0)
                        n += problem(c, w->line, "[webhook %s] secret_file %s", w->name, err);
                else
                        free(secret);
        }
        if (c->api.line) {
                _cleanup_free_ char *copy = strdup(c->api.listen);
                if (copy && (why = dir_problem(dirname(copy))))
                        n += problem(c, c->api.line, "[api] cannot create %s: %s (unless systemd passes the socket)",
                                     c->api.listen, why);
        }
        if (access(c->state_dir, F_OK) == 0 && (why = dir_problem(c->state_dir)))
                n += problem(c, c->state_dir_line, "state_dir %s: %s", c->state_dir, why);
        else if (stat(c->state_dir, &st) == 0 &&
                 ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH))))
                n += problem(c, c->state_dir_line,
                             "state_dir %s is writable by others than its owner, or not owned by root or this "
                             "user: mapsyncd will not use it",
                             c->state_dir);
        db_close(db);
        if (n == 0)
                printf("%s: OK: %zu maps%s, database %s\n", c->path, c->n_maps, files_summary(c), c->db_path);
        return n ? 1 : 0;
}

int check_dry_run(const struct config *c) {
        struct db *db = NULL;
        struct sync_cycle *cy = NULL;
        const char *msg = NULL;
        int r, status = 0;

        r = db_open_config(c, &db, &msg);
        if (r < 0) {
                log_error("database %s unavailable: %s", c->db_path, msg);
                return 1;
        }
        r = sync_render(db, c, true, &cy);
        if (r >= 0 && db_validate(db) < 0) {
                cy = sync_cycle_free(cy);
                r = -ESTALE;
        }
        if (r < 0) {
                log_error("database %s unreadable: %s", c->db_path, db_errmsg(db));
                db_close(db);
                return 1;
        }
        cy->report_all = true;
        sync_commit(cy);
        for (size_t i = 0; i < c->n_maps; i++) {
                const struct map_result *res = &cy->results[i];
                const char *name = c->maps[i].name;

                switch (res->status) {
                case MAP_UNCHANGED:
                        printf("%s: unchanged (%llu rows)\n", name, (unsigned long long)res->rows);
                        break;
                case MAP_CHANGED:
                        printf("%s: would change: +%llu -%llu lines (%llu rows)\n", name,
                               (unsigned long long)res->added, (unsigned long long)res->removed,
                               (unsigned long long)res->rows);
                        break;
                case MAP_FAILED:
                        if (res->shrink_held)
                                printf("%s: held by the shrink guard: %llu lines instead of %llu\n", name,
                                       (unsigned long long)res->rows, (unsigned long long)res->old_lines);
                        else
                                printf("%s: failed\n", name);
                        status = 1;
                        break;
                case MAP_DEFERRED: /* not without SYNC_PACE */
                        break;
                }
        }
        /* Names and counts only: never a file's content. */
        for (size_t i = 0; i < c->n_files; i++) {
                const struct map_result *res = &cy->set_results[i];
                const char *name = c->files[i].name;

                switch (res->status) {
                case MAP_UNCHANGED:
                        printf("%s: unchanged (%llu files)\n", name, (unsigned long long)res->rows);
                        break;
                case MAP_CHANGED:
                        printf("%s: would change: %llu written, %llu removed (%llu files): %s\n", name,
                               (unsigned long long)res->added, (unsigned long long)res->removed,
                               (unsigned long long)res->rows, files_changed_names(cy->sets[i]));
                        break;
                case MAP_FAILED:
                        printf("%s: failed\n", name);
                        status = 1;
                        break;
                case MAP_DEFERRED: /* maps only */
                        break;
                }
        }
        sync_cycle_free(cy);
        db_close(db);
        return status;
}
