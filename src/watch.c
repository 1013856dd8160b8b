/* inotify on the database's directory, through sd-event. */
#include "watch.h"

#include <libgen.h>
#include <sys/inotify.h>

#include "log.h"
#include "util.h"

struct watch {
        sd_event_source *source;
        char *base; /* file name of the database */
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
        struct watch *w = userdata;

        if (ev->mask & IN_Q_OVERFLOW) {
                log_warning("inotify queue overflowed; changes may have been missed: syncing everything");
                w->fn(w->userdata, WATCH_OVERFLOW);
                return 0;
        }
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
                log_warning("the database's directory went away; watching for it again");
                w->fn(w->userdata, WATCH_LOST);
                return 0;
        }
        if (ev->len > 0 && watch_is_ours(w, ev->name)) {
                log_submit(LOG_DEBUG, NULL, "inotify: %s 0x%x", ev->name, ev->mask);
                bool wal = (ev->mask & IN_MODIFY) && streq(ev->name + w->base_len, "-wal");
                w->fn(w->userdata, wal ? WATCH_WAL_WRITE : 0);
        }
        return 0;
}

int watch_new(sd_event *event, const char *db_path, watch_fn fn, void *userdata, struct watch **ret) {
        _cleanup_free_ char *copy_dir = strdup(db_path), *copy_base = strdup(db_path);
        struct watch *w;
        int r;

        if (!copy_dir || !copy_base)
                return -ENOMEM;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fn = fn;
        w->userdata = userdata;
        w->base = strdup(basename(copy_base));
        if (!w->base) {
                watch_free(w);
                return -ENOMEM;
        }
        w->base_len = strlen(w->base);
        r = sd_event_add_inotify(event, &w->source, dirname(copy_dir),
                                 IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                         IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR,
                                 watch_on_inotify, w);
        if (r < 0) {
                watch_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

struct watch *watch_free(struct watch *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->source);
        free(w->base);
        free(w);
        return NULL;
}
