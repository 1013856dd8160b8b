/* Resolution of configured paths and the guard that keeps outputs off
 * mapsyncd's other files. */
#include "paths.h"

#include <limits.h>
#include <stdarg.h>

#include "util.h"

/* "/a/./b//c/../d" -> "/a/b/d"; path must be absolute. */
static char *normalize(const char *path) {
        size_t n = strlen(path), o = 0;
        char *out = malloc(n + 2);

        if (!out)
                return NULL;
        for (const char *s = path; *s;) {
                const char *e;
                size_t len;

                while (*s == '/')
                        s++;
                if (!*s)
                        break;
                e = strchrnul(s, '/');
                len = (size_t)(e - s);
                if (len == 1 && s[0] == '.') {
                        /* nothing */
                } else if (len == 2 && s[0] == '.' && s[1] == '.') {
                        while (o > 0 && out[o - 1] != '/')
                                o--;
                        if (o > 0)
                                o--;
                } else {
                        out[o++] = '/';
                        memcpy(out + o, s, len);
                        o += len;
                }
                s = e;
        }
        if (o == 0)
                out[o++] = '/';
        out[o] = '\0';
        return out;
}

/* An output's path: its directory resolved, its last component kept as
 * it is (a symlink there is replaced, never followed). */
static char *resolve_output(const char *path) {
        _cleanup_free_ char *norm = normalize(path), *dir = NULL;
        char *slash, *r;

        if (!norm)
                return NULL;
        slash = strrchr(norm, '/');
        if (!slash || slash == norm || !slash[1])
                return TAKE_PTR(norm);
        *slash = '\0';
        dir = paths_resolve(norm);
        if (!dir || asprintf(&r, "%s/%s", streq(dir, "/") ? "" : dir, slash + 1) < 0)
                return NULL;
        return r;
}

char *paths_resolve(const char *path) {
        char real[PATH_MAX];
        _cleanup_free_ char *norm = NULL;
        char *slash, *r;

        if (realpath(path, real))
                return strdup(real);
        norm = path[0] == '/' ? normalize(path) : NULL;
        if (!norm)
                return path[0] == '/' ? NULL : strdup(path);
        slash = strrchr(norm, '/');
        if (slash && slash != norm) {
                *slash = '\0';
                if (realpath(norm, real)) {
                        if (asprintf(&r, "%s/%s", streq(real, "/") ? "" : real, slash + 1) < 0)
                                return NULL;
                        return r;
                }
                *slash = '/';
        }
        return TAKE_PTR(norm);
}

/* One file an output must not be. */
struct protected {
        char *path; /* resolved */
        const char *what;
        unsigned line;      /* of the key that names it; 0: none */
        const char *origin; /* [map NAME] for outputs */
        struct stat st;
        bool exists;
};

struct plist {
        struct protected *v;
        size_t n;
        bool oom;
};

static void plist_add(struct plist *l, const char *path, const char *suffix, const char *what, unsigned line,
                      const char *origin) {
        struct protected *v = reallocarray(l->v, l->n + 1, sizeof(*v)), *p;
        _cleanup_free_ char *joined = NULL;

        if (!v) {
                l->oom = true;
                return;
        }
        l->v = v;
        if (asprintf(&joined, "%s%s", path, suffix) < 0) {
                l->oom = true;
                return;
        }
        p = &v[l->n];
        *p = (struct protected){.what = what, .line = line, .origin = origin};
        /* An output is resolved already, and is what is at its name. */
        p->path = origin ? TAKE_PTR(joined) : paths_resolve(joined);
        if (!p->path) {
                l->oom = true;
                return;
        }
        p->exists = (origin ? lstat(p->path, &p->st) : stat(p->path, &p->st)) == 0;
        l->n++;
}

static void plist_done(struct plist *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i].path);
        free(l->v);
}

/* The files of c that are not outputs. */
static void protected_files(const struct config *c, struct plist *l) {
        if (c->db_path) {
                plist_add(l, c->db_path, "", "the database", c->db_path_line, NULL);
                plist_add(l, c->db_path, "-wal", "the database's write-ahead log", c->db_path_line, NULL);
                plist_add(l, c->db_path, "-shm", "the database's shared-memory file", c->db_path_line, NULL);
                plist_add(l, c->db_path, "-journal", "the database's rollback journal", c->db_path_line, NULL);
        }
        if (c->path && c->path[0])
                plist_add(l, c->path, "", "the configuration file", 0, NULL);
        if (c->metrics_file)
                plist_add(l, c->metrics_file, "", "the metrics file", c->metrics_file_line, NULL);
        if (c->state_dir) {
                plist_add(l, c->state_dir, "/owed-hooks", "a state file", c->state_dir_line, NULL);
                plist_add(l, c->state_dir, "/owed-webhooks", "a state file", c->state_dir_line, NULL);
                plist_add(l, c->state_dir, "/lock", "the instance lock", c->state_dir_line, NULL);
                for (size_t i = 0; i < c->n_files; i++) {
                        _cleanup_free_ char *m = NULL;
                        if (asprintf(&m, "/files-%s.manifest", c->files[i].name) < 0) {
                                l->oom = true;
                                return;
                        }
                        plist_add(l, c->state_dir, m, "a file set's manifest", c->state_dir_line, NULL);
                }
        }
}

bool paths_protected(const struct config *c, const struct stat *st, char *what, size_t n) {
        struct plist l = {};
        bool hit = false;

        protected_files(c, &l);
        for (size_t i = 0; i < l.n && !hit; i++)
                if (l.v[i].exists && l.v[i].st.st_dev == st->st_dev && l.v[i].st.st_ino == st->st_ino) {
                        snprintf(what, n, "%s %s", l.v[i].what, l.v[i].path);
                        hit = true;
                }
        plist_done(&l);
        return hit;
}

static int add_error(struct config_errors *e, const char *file, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int add_error(struct config_errors *e, const char *file, unsigned line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        char *s, **v;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0 || asprintf(&s, "%s:%u: %s", file, line, msg) < 0)
                return -ENOMEM;
        v = realloc(e->msgs, (e->n_msgs + 1) * sizeof(*v));
        if (!v) {
                free(s);
                return -ENOMEM;
        }
        v[e->n_msgs++] = s;
        e->msgs = v;
        return 0;
}

static bool under_dir(const char *path, const char *dir) {
        size_t n = strlen(dir);

        if (streq(dir, "/"))
                return true;
        return strncmp(path, dir, n) == 0 && path[n] == '/';
}

/* Whether path lies directly in directory dir (both resolved). */
static bool in_dir(const char *path, const char *dir) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                return false;
        if (slash == path)
                return streq(dir, "/");
        return strlen(dir) == (size_t)(slash - path) && strncmp(path, dir, (size_t)(slash - path)) == 0;
}

/* [files NAME] sets: a row may name any file in the directory, so it may
 * hold none of the protected files nor any map's output (l holds both by
 * now), be no state_dir, and be no other set's. */
static int check_files(const struct config *c, const struct plist *l, const char *state, struct config_errors *errors) {
        _cleanup_free_ char **dirs = calloc(c->n_files + 1, sizeof(char *));
        int r = 0;

        if (!dirs)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_files && r >= 0; i++) {
                const struct files_config *f = &c->files[i];
                struct stat st;
                bool have_st;

                if (!f->directory)
                        continue;
                dirs[i] = paths_resolve(f->directory);
                if (!dirs[i]) {
                        r = -ENOMEM;
                        break;
                }
                have_st = stat(dirs[i], &st) == 0;
                for (size_t k = 0; k < l->n && r >= 0; k++) {
                        const struct protected *p = &l->v[k];
                        _cleanup_free_ char *pdir = NULL;
                        struct stat pst;
                        bool hit = in_dir(p->path, dirs[i]);

                        /* The same directory under another name (a bind mount). */
                        if (!hit && have_st && (pdir = strdup(p->path)) && strrchr(pdir, '/')) {
                                char *slash = strrchr(pdir, '/');
                                if (slash == pdir)
                                        slash[1] = '\0';
                                else
                                        *slash = '\0';
                                hit = stat(pdir, &pst) == 0 && pst.st_dev == st.st_dev && pst.st_ino == st.st_ino;
                        }
                        if (!hit)
                                continue;
                        if (p->origin)
                                r = add_error(errors, c->path, f->line,
                                              "[files %s] directory = %s holds the output of [map %s]: a row may "
                                              "name any file in it",
                                              f->name, f->directory, p->origin);
                        else
                                r = add_error(errors, c->path, f->line,
                                              "[files %s] directory = %s holds %s %s: a row may name any file in it",
                                              f->name, f->directory, p->what, p->path);
                }
                if (r >= 0 && state &&
                    (streq(dirs[i], state) || under_dir(dirs[i], state) || under_dir(state, dirs[i])))
                        r = add_error(errors, c->path, f->line,
                                      "[files %s] directory = %s and state_dir %s overlap; state_dir holds mapsyncd's "
                                      "own files",
                                      f->name, f->directory, state);
                for (size_t j = 0; j < i && r >= 0; j++)
                        if (dirs[j] && streq(dirs[j], dirs[i]))
                                r = add_error(errors, c->path, f->line,
                                              "[files %s] directory = %s is that of [files %s]", f->name, f->directory,
                                              c->files[j].name);
        }
        for (size_t i = 0; i < c->n_files; i++)
                free(dirs[i]);
        return r;
}

int paths_check_config(struct config *c, struct config_errors *errors) {
        struct plist l = {};
        _cleanup_free_ char *state = NULL;
        size_t n_before = errors->n_msgs;
        int r = 0;

        protected_files(c, &l);
        if (l.oom)
                goto oom;
        state = c->state_dir ? paths_resolve(c->state_dir) : NULL;
        if (c->state_dir && !state)
                goto oom;

        /* The metrics file is written as atomically as a map: the same
         * rule, against the database, the configuration and the state. */
        if (c->metrics_file) {
                const struct protected *mf = NULL;
                for (size_t k = 0; k < l.n; k++)
                        if (streq(l.v[k].what, "the metrics file"))
                                mf = &l.v[k];
                for (size_t k = 0; mf && k < l.n; k++) {
                        const struct protected *p = &l.v[k];
                        if (p == mf)
                                continue;
                        if (streq(p->path, mf->path) ||
                            (p->exists && mf->exists && p->st.st_dev == mf->st.st_dev && p->st.st_ino == mf->st.st_ino))
                                r = add_error(errors, c->path, c->metrics_file_line,
                                              "metrics_file = %s is %s %s: refusing to write it", c->metrics_file,
                                              p->what, p->path);
                        else if (state && under_dir(mf->path, state))
                                r = add_error(errors, c->path, c->metrics_file_line,
                                              "metrics_file = %s is inside state_dir %s, which holds mapsyncd's own "
                                              "files",
                                              c->metrics_file, state);
                        if (r < 0)
                                goto oom;
                        if (errors->n_msgs > n_before)
                                break;
                }
        }

        for (size_t i = 0; i < c->n_maps; i++) {
                struct map_config *m = &c->maps[i];
                unsigned line = m->output_line ? m->output_line : m->line;
                char *resolved;

                if (!m->output)
                        continue;
                resolved = resolve_output(m->output);
                if (!resolved)
                        goto oom;
                for (size_t k = 0; k < l.n; k++) {
                        const struct protected *p = &l.v[k];
                        bool same_path = streq(resolved, p->path), same_file = false;
                        struct stat st;

                        if (!same_path && p->exists && lstat(resolved, &st) == 0)
                                same_file = st.st_dev == p->st.st_dev && st.st_ino == p->st.st_ino;
                        if (!same_path && !same_file)
                                continue;
                        if (p->origin)
                                r = add_error(errors, c->path, line,
                                              "[map %s] output = %s is %s as the output of [map %s] (line %u)%s",
                                              m->name, m->output, same_path ? "the same path" : "the same file",
                                              p->origin, p->line, same_path ? "" : " (a hard link)");
                        else
                                r = add_error(errors, c->path, line, "[map %s] output = %s is %s %s%s", m->name,
                                              m->output, p->what, p->path,
                                              same_path ? "" : " (the same file under another name)");
                        if (r < 0) {
                                free(resolved);
                                goto oom;
                        }
                        break;
                }
                if (state && (under_dir(resolved, state) || streq(resolved, state))) {
                        r = add_error(errors, c->path, line,
                                      "[map %s] output = %s is inside state_dir %s, which holds mapsyncd's own files",
                                      m->name, m->output, state);
                        if (r < 0) {
                                free(resolved);
                                goto oom;
                        }
                }
                /* Later maps are checked against this one too. */
                plist_add(&l, resolved, "", "an output", line, m->name);
                free(m->output);
                m->output = resolved;
                if (l.oom)
                        goto oom;
        }
        if (check_files(c, &l, state, errors) < 0)
                goto oom;
        plist_done(&l);
        return errors->n_msgs > n_before ? -EINVAL : 0;
oom:
        plist_done(&l);
        return -ENOMEM;
}
