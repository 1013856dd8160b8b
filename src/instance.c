/* The instance lock and the sweep of leftovers. */
#include "instance.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "files.h"
#include "log.h"
#include "replace.h"
#include "trust.h"
#include "util.h"

pid_t instance_lock_owner(int fd) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        uint64_t pid;

        if (n <= 0)
                return 0;
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (parse_uint(buf, 1, INT32_MAX, &pid) < 0)
                return 0;
        return (pid_t)pid;
}

int instance_lock(const struct config *c) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        struct trust_problem tp;
        char pid[32];
        int r, n;

        if (mkdir(c->state_dir, 0700) < 0 && errno != EEXIST) {
                r = -errno;
                log_error("Could not create state_dir %s: %s; running without an instance lock", c->state_dir,
                          strerror(-r));
                return r;
        }
        r = trust_path(c->state_dir, 0, &tp);
        if (r < 0) {
                log_error("state_dir %s cannot be trusted (%s is %s): running without an instance lock", c->state_dir,
                          tp.path, tp.why);
                return r;
        }
        if (asprintf(&path, "%s/" INSTANCE_LOCK_FILE, c->state_dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0) {
                r = -errno;
                log_error("Could not open the instance lock %s: %s; running without it", path, strerror(-r));
                return r;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                pid_t owner;

                r = -errno;
                if (r != -EWOULDBLOCK) {
                        log_error("Could not take the instance lock %s: %s; running without it", path, strerror(-r));
                        return r;
                }
                owner = instance_lock_owner(fd);
                char api[PATH_MAX + 64] = "";
                if (c->api.line && c->api.listen)
                        snprintf(api, sizeof(api), ", or POST /v1/sync on its control API %s", c->api.listen);
                if (owner > 0)
                        log_error("another mapsyncd (PID %d) runs with state_dir %s (it holds %s): not starting; to "
                                  "make it sync now: kill -USR1 %d (or systemctl kill -s USR1 mapsyncd)%s",
                                  (int)owner, c->state_dir, path, (int)owner, api);
                else
                        log_error("another mapsyncd runs with state_dir %s (it holds %s): not starting; to make it "
                                  "sync now, send it SIGUSR1 (systemctl kill -s USR1 mapsyncd)%s",
                                  c->state_dir, path, api);
                return -EBUSY;
        }
        n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
                log_warning("Could not write the PID into %s: %m", path);
        return TAKE_FD(fd);
}

static unsigned sweep_one(const char *path) {
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dir_fd = -1;
        int n;

        if (!slash || !slash[1])
                return 0;
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (!dir)
                return 0;
        dir_fd = replace_open_dir(dir);
        if (dir_fd < 0)
                return 0;
        n = replace_sweep(dir_fd, slash + 1);
        if (n > 0)
                log_notice("removed %d temporary file%s of %s left by an earlier run", n, n == 1 ? "" : "s", path);
        return n > 0 ? (unsigned)n : 0;
}

/* The state files' temporary files as mapsyncd 0.1 named them, "NAME.XXXXXX"
 * (without the leading dot of replace.h's), in state_dir, which holds no
 * file but mapsyncd's own. */
static unsigned sweep_legacy(const char *state_dir, const char *const *names) {
        _cleanup_close_ int dir_fd = replace_open_dir(state_dir);
        unsigned n = 0;
        struct dirent *de;
        DIR *d;
        int fd;

        if (dir_fd < 0)
                return 0;
        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return 0;
        }
        while ((de = readdir(d))) {
                char dotted[NAME_MAX + 2];
                struct stat st;
                bool match = false;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(dotted, sizeof(dotted), ".%s", de->d_name);
                for (const char *const *nm = names; *nm && !match; nm++)
                        match = replace_is_temp_name(dotted, *nm);
                if (!match || fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                    st.st_uid != geteuid())
                        continue;
                if (unlinkat(dir_fd, de->d_name, 0) == 0) {
                        log_notice("removed %s/%s, a temporary file left by an earlier version's run", state_dir,
                                   de->d_name);
                        n++;
                }
        }
        closedir(d);
        return n;
}

unsigned instance_sweep(const struct config *c) {
        static const char *const state_files[] = {"owed-hooks", "owed-webhooks", NULL};
        unsigned n = 0;

        for (size_t i = 0; i < c->n_maps; i++)
                n += sweep_one(c->maps[i].output);
        if (c->metrics_file)
                n += sweep_one(c->metrics_file);
        for (const char *const *nm = state_files; *nm; nm++) {
                _cleanup_free_ char *state = NULL;
                if (asprintf(&state, "%s/%s", c->state_dir, *nm) >= 0)
                        n += sweep_one(state);
        }
        for (size_t i = 0; i < c->n_files; i++) {
                _cleanup_free_ char *manifest = NULL;
                if (files_manifest_path(c, &c->files[i], &manifest) >= 0)
                        n += sweep_one(manifest);
        }
        return n + sweep_legacy(c->state_dir, state_files);
}
