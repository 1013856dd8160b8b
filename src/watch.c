/* inotify on the database's real directory and on the directory of every
 * symlink on its path, through sd-event. */
#include "watch.h"

#include <libgen.h>
#include <limits.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"

#define MAX_LINKS 40 /* as the kernel's ELOOP */

struct watch_dir {
        sd_event_source *source;
        struct watch *w;
        char *path; /* the directory */
        char *name; /* the symlink's name; NULL: the database's own directory */
        dev_t dev;  /* what path named when the watch was added */
        ino_t ino;
};

struct watch {
        struct watch_dir dirs[MAX_LINKS + 1];
        size_t n_dirs;
        char *real;
        char *base; /* file name of the real database */
        size_t base_len;
        watch_fn fn;
        void *userdata;
};

/* Whether name is the database, its -wal or its -journal. */
static bool watch_is_ours(const struct watch *w, const char *name) {
        if (strncmp(name, w->base, w->base_len) != 0)
                return false;
        name += w->base_len;
        return *name == '\0' || streq(name, "-wal") || streq(name, "-journal");
}

static int watch_on_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        struct watch_dir *wd = userdata;
        struct watch *w = wd->w;

        if (ev->mask & IN_Q_OVERFLOW) {
                log_warning("inotify queue overflowed; changes may have been missed: syncing everything");
                w->fn(w->userdata, WATCH_OVERFLOW);
                return 0;
        }
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
                log_warning("a directory on the path of %s went away; watching for it again", w->real);
                w->fn(w->userdata, WATCH_LOST);
                return 0;
        }
        if (ev->len == 0)
                return 0;
        if (wd->name) {
                if (streq(ev->name, wd->name)) {
                        log_submit(LOG_DEBUG, NULL, "inotify: symlink %s 0x%x", ev->name, ev->mask);
                        w->fn(w->userdata, WATCH_RELINK);
                }
                return 0;
        }
        if (watch_is_ours(w, ev->name)) {
                const char *suffix = ev->name + w->base_len;
                unsigned flags = 0;

                log_submit(LOG_DEBUG, NULL, "inotify: %s 0x%x", ev->name, ev->mask);
                if ((ev->mask & IN_MODIFY) && streq(suffix, "-wal"))
                        flags |= WATCH_WAL_WRITE;
                if ((ev->mask & IN_MODIFY) && *suffix == '\0')
                        flags |= WATCH_DB_WRITE;
                w->fn(w->userdata, flags);
        }
        return 0;
}

static int append(char **s, const char *a, const char *b) {
        char *n;

        if (asprintf(&n, "%s/%s", a, b) < 0)
                return -ENOMEM;
        free(*s);
        *s = n;
        return 0;
}

/* Walks path component by component as the kernel does, following every
 * symlink; *real gets the real path of the file (which need not exist),
 * and each symlink passed is recorded as (its real directory, its name). */
int watch_resolve(const char *path, char **real, watch_link_fn link_fn, void *userdata) {
        _cleanup_free_ char *cur = NULL, *pending = NULL;
        unsigned n_links = 0;
        int r;

        if (path[0] == '/')
                cur = strdup("");
        else
                cur = getcwd(NULL, 0);
        pending = strdup(path);
        if (!cur || !pending)
                return -ENOMEM;
        for (;;) {
                char *p = pending, *c, *next = NULL;
                struct stat st;

                while (*p == '/')
                        p++;
                if (!*p)
                        break;
                c = p;
                p = strchr(p, '/');
                if (p) {
                        *p = '\0';
                        next = p + 1;
                }
                if (streq(c, ".")) {
                        memmove(pending, next ? next : "", strlen(next ? next : "") + 1);
                        continue;
                }
                if (streq(c, "..")) {
                        char *slash = strrchr(cur, '/');
                        if (slash)
                                *slash = '\0';
                        memmove(pending, next ? next : "", strlen(next ? next : "") + 1);
                        continue;
                }
                _cleanup_free_ char *candidate = NULL, *comp = strdup(c);
                if (!comp || append(&candidate, cur, comp) < 0)
                        return -ENOMEM;
                if (lstat(candidate, &st) < 0) {
                        bool last = !next || !next[strspn(next, "/")];
                        if (errno == ENOENT && last) {
                                free(cur);
                                cur = TAKE_PTR(candidate);
                                break;
                        }
                        return -errno;
                }
                if (S_ISLNK(st.st_mode)) {
                        char target[PATH_MAX];
                        ssize_t n;
                        _cleanup_free_ char *rest = NULL;

                        if (++n_links > MAX_LINKS)
                                return -ELOOP;
                        n = readlink(candidate, target, sizeof(target) - 1);
                        if (n < 0)
                                return -errno;
                        target[n] = '\0';
                        if (link_fn) {
                                r = link_fn(userdata, cur[0] ? cur : "/", comp);
                                if (r < 0)
                                        return r;
                        }
                        if (asprintf(&rest, "%s/%s", target, next ? next : "") < 0)
                                return -ENOMEM;
                        free(pending);
                        pending = TAKE_PTR(rest);
                        if (target[0] == '/')
                                cur[0] = '\0';
                        continue;
                }
                free(cur);
                cur = TAKE_PTR(candidate);
                memmove(pending, next ? next : "", strlen(next ? next : "") + 1);
        }
        if (!cur[0]) {
                free(cur);
                cur = strdup("/");
                if (!cur)
                        return -ENOMEM;
        }
        *real = TAKE_PTR(cur);
        return 0;
}

#define DIR_MASK                                                                                                       \
        (IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |           \
         IN_MOVE_SELF | IN_ONLYDIR)
#define LINK_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct add_ctx {
        sd_event *event;
        struct watch *w;
};

static int add_dir(struct add_ctx *ctx, const char *dir, const char *name) {
        struct watch *w = ctx->w;
        struct watch_dir *wd;
        struct stat st;
        int r;

        if (w->n_dirs >= ARRAY_SIZE(w->dirs))
                return -ELOOP;
        wd = &w->dirs[w->n_dirs];
        wd->w = w;
        if ((name && !(wd->name = strdup(name))) || !(wd->path = strdup(dir)))
                r = -ENOMEM;
        else if (stat(dir, &st) < 0)
                r = -errno;
        else
                r = sd_event_add_inotify(ctx->event, &wd->source, dir, name ? LINK_MASK : DIR_MASK, watch_on_inotify,
                                         wd);
        if (r < 0) {
                free(wd->name);
                free(wd->path);
                wd->name = wd->path = NULL;
                return r;
        }
        wd->dev = st.st_dev;
        wd->ino = st.st_ino;
        w->n_dirs++;
        return 0;
}

static int add_link(void *userdata, const char *dir, const char *name) {
        return add_dir(userdata, dir, name);
}

int watch_new(sd_event *event, const char *db_path, watch_fn fn, void *userdata, struct watch **ret) {
        _cleanup_free_ char *copy_dir = NULL, *copy_base = NULL;
        struct watch *w;
        struct add_ctx ctx = {event, NULL};
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fn = fn;
        w->userdata = userdata;
        ctx.w = w;
        r = watch_resolve(db_path, &w->real, add_link, &ctx);
        if (r < 0) {
                watch_free(w);
                return r;
        }
        copy_dir = strdup(w->real);
        copy_base = strdup(w->real);
        if (!copy_dir || !copy_base || !(w->base = strdup(basename(copy_base)))) {
                watch_free(w);
                return -ENOMEM;
        }
        w->base_len = strlen(w->base);
        r = add_dir(&ctx, dirname(copy_dir), NULL);
        if (r < 0) {
                watch_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

bool watch_is_current(const struct watch *w) {
        for (size_t i = 0; i < w->n_dirs; i++) {
                struct stat st;
                if (stat(w->dirs[i].path, &st) < 0 || st.st_dev != w->dirs[i].dev || st.st_ino != w->dirs[i].ino)
                        return false;
        }
        return true;
}

const char *watch_real_path(const struct watch *w) {
        return w->real;
}

size_t watch_n_links(const struct watch *w) {
        return w->n_dirs - 1;
}

struct watch *watch_free(struct watch *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < ARRAY_SIZE(w->dirs); i++) {
                sd_event_source_disable_unref(w->dirs[i].source);
                free(w->dirs[i].name);
                free(w->dirs[i].path);
        }
        free(w->real);
        free(w->base);
        free(w);
        return NULL;
}
