/* The queue of owed hooks, their retries and their persistence. */
#include "jobs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "files.h"
#include "log.h"
#include "metrics.h"
#include "replace.h"
#include "util.h"

#define STATE_FILE     "owed-hooks"
#define STATE_VERSION  2
#define RETRY_MIN_USEC (1000000ULL)
#define RETRY_MAX_USEC (300 * 1000000ULL)
/* A hook still running from an earlier process is looked at again this
 * often, for at most its timeout and the kill grace (as long as a hook
 * may run at all). */
#define LOCK_POLL_USEC  (100 * 1000ULL)
#define LOCK_GRACE_USEC (5 * 1000000ULL)
/* MAPSYNCD_CHANGED of a file set's hook is cut (at a name) past this
 * size, below the kernel's limit of one environment string (128 KiB). */
#define CHANGED_ENV_MAX 100000

struct job {
        char *name;  /* map or reload name */
        char *label; /* for the log: "vmailbox" or "reload postfix" */
        bool is_reload;
        bool is_files; /* a [files NAME] set's on_change */
        const char *command;
        const char *output; /* maps: the file; file sets: the directory */
        bool owed;
        unsigned gen;         /* bumped each time it becomes owed */
        unsigned started_gen; /* gen when the running hook started */
        bool running;
        unsigned failures;        /* in a row */
        uint64_t retry_at;        /* CLOCK_MONOTONIC usec; 0: due now */
        uint64_t lock_wait_since; /* waiting for an earlier run since; 0: not */
        bool force;               /* that wait is over: start all the same */
        char sha256[SHA256_HEX_LEN + 1];
        uint64_t rows;
        /* reloads: per map, then per file set (config order), whether its
         * change made it owed */
        bool *causes;
        char *changed; /* file sets: names written or removed while owed */
};

struct jobs {
        sd_event *event;
        struct hooks *hooks;
        const struct config *config;
        bool retry;
        bool hold;
        bool state_warned;
        bool timer_warned;
        bool recorded; /* jobs_prepare() wrote the file */
        struct job *jobs;
        size_t n_jobs;
        size_t n_maps; /* jobs[0..n_maps) are the maps, in config order */
        unsigned failures;
        sd_event_source *retry_timer;
        jobs_idle_fn idle;
        void *userdata;
        struct metrics *metrics;
        jobs_hook_fn on_hook;
        void *on_hook_userdata;
};

static void job_done(struct job *jb) {
        free(jb->name);
        free(jb->label);
        free(jb->causes);
        free(jb->changed);
}

static void jobs_clear(struct job *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                job_done(&v[i]);
        free(v);
}

static struct job *jobs_find_kind(struct jobs *j, bool is_reload, bool is_files, const char *name) {
        for (size_t i = 0; i < j->n_jobs; i++)
                if (j->jobs[i].is_reload == is_reload && j->jobs[i].is_files == is_files &&
                    streq(j->jobs[i].name, name))
                        return &j->jobs[i];
        return NULL;
}

static struct job *jobs_find(struct jobs *j, bool is_reload, const char *name) {
        return jobs_find_kind(j, is_reload, false, name);
}

/* The jobs of file sets come after those of the maps and reloads. */
static struct job *files_job(struct jobs *j, size_t index) {
        return &j->jobs[j->n_maps + j->config->n_reloads + index];
}

/* A reload's causes: the maps (0..n_maps), then the file sets. */
static size_t n_causes(const struct jobs *j) {
        return j->n_maps + j->config->n_files;
}

static const struct job *cause_job(const struct jobs *j, size_t k) {
        return k < j->n_maps ? &j->jobs[k] : &j->jobs[j->n_maps + j->config->n_reloads + (k - j->n_maps)];
}

/* The index among the causes of the map (else file set) called name in
 * c, or -1. */
static ssize_t cause_index(const struct config *c, const char *name) {
        const struct map_config *mc = config_find_map(c, name);

        if (mc)
                return mc - c->maps;
        for (size_t k = 0; k < c->n_files; k++)
                if (streq(c->files[k].name, name))
                        return (ssize_t)(c->n_maps + k);
        return -1;
}

static const char *cause_name(const struct config *c, size_t k) {
        return k < c->n_maps ? c->maps[k].name : c->files[k - c->n_maps].name;
}

/* What a job keeps when a new configuration replaces its section. */
static void job_take_over(struct job *jb, const struct job *old) {
        jb->owed = old->owed && jb->command;
        jb->gen = old->gen;
        jb->started_gen = old->started_gen;
        jb->running = old->running;
        jb->failures = old->failures;
        jb->retry_at = old->retry_at;
        jb->lock_wait_since = old->lock_wait_since;
}

/* Sets up job jb for file set f, taking over an old one's state. */
static int files_job_init(struct jobs *j, struct job *jb, const struct files_config *f) {
        struct job *old = jobs_find_kind(j, false, true, f->name);

        jb->is_files = true;
        jb->name = strdup(f->name);
        if (!jb->name || asprintf(&jb->label, "files %s", f->name) < 0) {
                jb->label = NULL;
                return -ENOMEM;
        }
        jb->command = f->on_change;
        jb->output = f->directory;
        if (old) {
                job_take_over(jb, old);
                jb->changed = old->changed;
                old->changed = NULL;
        }
        return 0;
}

int jobs_set_config(struct jobs *j, const struct config *c) {
        size_t n = c->n_maps + c->n_reloads;
        struct job *v = calloc(n + c->n_files + 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct job *jb = &v[i], *old;
                bool is_reload = i >= c->n_maps;
                const char *name = is_reload ? c->reloads[i - c->n_maps].name : c->maps[i].name;

                jb->is_reload = is_reload;
                jb->name = strdup(name);
                if (is_reload)
                        jb->causes = calloc(c->n_maps + c->n_files + 1, sizeof(*jb->causes));
                if (!jb->name || (is_reload && !jb->causes) ||
                    asprintf(&jb->label, "%s%s", is_reload ? "reload " : "", name) < 0) {
                        jb->label = NULL;
                        jobs_clear(v, n);
                        return -ENOMEM;
                }
                if (is_reload)
                        jb->command = c->reloads[i - c->n_maps].command;
                else {
                        jb->command = c->maps[i].on_change;
                        jb->output = c->maps[i].output;
                }
                old = jobs_find(j, is_reload, name);
                if (old) {
                        job_take_over(jb, old);
                        jb->rows = old->rows;
                        memcpy(jb->sha256, old->sha256, sizeof(jb->sha256));
                        /* Causes by name: maps and sets may have moved or gone. */
                        for (size_t m = 0; is_reload && j->config && m < n_causes(j); m++) {
                                ssize_t k;
                                if (!old->causes[m])
                                        continue;
                                k = cause_index(c, cause_name(j->config, m));
                                if (k >= 0)
                                        jb->causes[k] = true;
                        }
                }
        }
        for (size_t k = 0; k < c->n_files; k++)
                if (files_job_init(j, &v[n + k], &c->files[k]) < 0) {
                        jobs_clear(v, n + k + 1);
                        return -ENOMEM;
                }
        n += c->n_files;
        jobs_clear(j->jobs, j->n_jobs);
        j->jobs = v;
        j->n_jobs = n;
        j->n_maps = c->n_maps;
        j->config = c;
        return 0;
}

int jobs_new(sd_event *event, struct hooks *hooks, const struct config *c, bool retry, jobs_idle_fn idle,
             void *userdata, struct jobs **ret) {
        struct jobs *j = calloc(1, sizeof(*j));
        int r;

        if (!j)
                return -ENOMEM;
        j->event = sd_event_ref(event);
        j->hooks = hooks;
        j->retry = retry;
        j->idle = idle;
        j->userdata = userdata;
        r = jobs_set_config(j, c);
        if (r < 0) {
                jobs_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

struct jobs *jobs_free(struct jobs *j) {
        if (!j)
                return NULL;
        jobs_clear(j->jobs, j->n_jobs);
        sd_event_source_disable_unref(j->retry_timer);
        sd_event_unref(j->event);
        free(j);
        return NULL;
}

/* The state directory must exist and be writable by no one else: the
 * owed hooks it names run as this user. */
static bool state_dir_usable(struct jobs *j) {
        const char *dir = j->config->state_dir;
        struct stat st;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                goto fail;
        if (stat(dir, &st) < 0)
                goto fail;
        if (!S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                goto fail;
        }
        if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
                if (!j->state_warned)
                        log_error("state_dir %s is writable by others than its owner, or not owned by root or this "
                                  "user: refusing to use it; owed hooks will not survive a restart",
                                  dir);
                j->state_warned = true;
                return false;
        }
        return true;
fail:
        if (!j->state_warned)
                log_error("Could not use state_dir %s: %m; owed hooks will not survive a restart", dir);
        j->state_warned = true;
        return false;
}

static int state_path(const struct jobs *j, const char *suffix, char **ret) {
        return asprintf(ret, "%s/" STATE_FILE "%s", j->config->state_dir, suffix) < 0 ? -ENOMEM : 0;
}

/* Whether map i's new file is about to be put in place by cy. */
static bool map_pending(const struct sync_cycle *cy, size_t i) {
        return cy && i < cy->config->n_maps && cy->results[i].status == MAP_CHANGED;
}

/* Whether job jb is owed, or becomes owed when cy's maps are in place. */
static bool job_owed_with(const struct jobs *j, const struct job *jb, const struct sync_cycle *cy) {
        if (!jb->command)
                return false;
        if (jb->owed)
                return true;
        if (jb->is_files)
                return false; /* owed in memory by files_prepare() */
        if (!jb->is_reload)
                return map_pending(cy, (size_t)(jb - j->jobs));
        for (size_t i = 0; i < j->n_maps; i++)
                if (map_pending(cy, i))
                        for (size_t k = 0; k < j->config->maps[i].n_reloads; k++)
                                if (&j->jobs[j->n_maps + j->config->maps[i].reloads[k]] == jb)
                                        return true;
        return false;
}

static bool reload_caused_by(const struct jobs *j, const struct job *rj, size_t map, const struct sync_cycle *cy) {
        if (rj->causes[map])
                return true;
        if (map >= j->n_maps || !map_pending(cy, map))
                return false;
        for (size_t k = 0; k < j->config->maps[map].n_reloads; k++)
                if (&j->jobs[j->n_maps + j->config->maps[map].reloads[k]] == rj)
                        return true;
        return false;
}

/* Writes the owed set, counting as owed too the hooks that cy's maps
 * (NULL: none) owe once their new files are in place. Format (version 2):
 * comment lines, "version 2", then "map NAME", "files NAME [CHANGED...]"
 * and "reload NAME [CAUSE...]" (the maps and file sets that caused it),
 * one a line. Version 1 had no version line and no causes. */
static void jobs_save(struct jobs *j, const struct sync_cycle *cy) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        static const char head[] = "# mapsyncd: hooks owed, run at the next start\nversion 2\n";
        struct replace_meta meta = {.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1};
        const char *step = NULL;
        size_t len = 0;
        bool any = false;
        int r;

        if (!state_dir_usable(j) || state_path(j, "", &path) < 0)
                return;

        if (str_append(&text, &len, head, sizeof(head) - 1) < 0)
                goto oom;
        for (size_t i = 0; i < j->n_jobs; i++) {
                const struct job *jb = &j->jobs[i];
                if (!job_owed_with(j, jb, cy))
                        continue;
                any = true;
                if (jb->is_files) {
                        /* "files NAME CHANGED...": the names are [A-Za-z0-9._-]. */
                        if (str_append(&text, &len, "files ", 6) < 0 ||
                            str_append(&text, &len, jb->name, strlen(jb->name)) < 0 ||
                            (jb->changed && *jb->changed &&
                             (str_append(&text, &len, " ", 1) < 0 ||
                              str_append(&text, &len, jb->changed, strlen(jb->changed)) < 0)) ||
                            str_append(&text, &len, "\n", 1) < 0)
                                goto oom;
                        continue;
                }
                if (str_append(&text, &len, jb->is_reload ? "reload " : "map ", jb->is_reload ? 7 : 4) < 0 ||
                    str_append(&text, &len, jb->name, strlen(jb->name)) < 0)
                        goto oom;
                for (size_t m = 0; jb->is_reload && m < n_causes(j); m++)
                        if (reload_caused_by(j, jb, m, cy) &&
                            (str_append(&text, &len, " ", 1) < 0 ||
                             str_append(&text, &len, cause_name(j->config, m), strlen(cause_name(j->config, m))) < 0))
                                goto oom;
                if (str_append(&text, &len, "\n", 1) < 0)
                        goto oom;
        }
        if (!any) {
                if (unlink(path) < 0 && errno != ENOENT)
                        log_error("Could not remove %s: %m", path);
                return;
        }
        r = replace_file(path, text, len, &meta, &step);
        if (r < 0)
                log_error("Could not record owed hooks in %s (%s): %s", path, step, strerror(-r));
        else if (r > 0) /* in place, but the directory's fsync failed */
                log_error("Could not %s %s: the owed hooks recorded there may not survive a crash", step, path);
        return;
oom:
        log_error("Could not record owed hooks in %s: out of memory", path);
}

/* A loaded reload that names no cause (a version 1 file): the maps that
 * name it and are owed too, else all that name it. */
static void reload_guess_causes(struct jobs *j, struct job *rj) {
        const struct config *c = j->config;
        size_t ri = (size_t)(rj - j->jobs) - j->n_maps;
        bool any = false;

        for (int pass = 0; pass < 2 && !any; pass++) {
                for (size_t i = 0; i < c->n_maps; i++)
                        for (size_t k = 0; k < c->maps[i].n_reloads; k++)
                                if (c->maps[i].reloads[k] == ri && (pass == 1 || j->jobs[i].owed)) {
                                        rj->causes[i] = true;
                                        any = true;
                                }
                for (size_t i = 0; i < c->n_files; i++)
                        for (size_t k = 0; k < c->files[i].n_reloads; k++)
                                if (c->files[i].reloads[k] == ri && (pass == 1 || files_job(j, i)->owed)) {
                                        rj->causes[c->n_maps + i] = true;
                                        any = true;
                                }
        }
}

void jobs_load(struct jobs *j) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;
        unsigned lineno = 0, n = 0, version = 1;
        ssize_t len;

        if (!state_dir_usable(j) || state_path(j, "", &path) < 0)
                return;
        f = fopen(path, "re");
        if (!f) {
                if (errno != ENOENT)
                        log_error("Could not read owed hooks from %s: %m", path);
                return;
        }
        while ((len = getline(&line, &cap, f)) >= 0) {
                struct job *jb = NULL;
                char *name, *rest, *save = NULL;
                bool is_reload = false;

                lineno++;
                if (len > 0 && line[len - 1] == '\n')
                        line[--len] = '\0';
                else
                        log_warning("%s:%u: last line has no newline (a truncated file?)", path, lineno);
                if (strlen(line) != (size_t)len) {
                        log_warning("%s:%u: holds a NUL byte: not an owed hook; ignored", path, lineno);
                        continue;
                }
                if (len == 0 || line[0] == '#')
                        continue;
                if (strncmp(line, "version ", 8) == 0) {
                        char *end = NULL;
                        unsigned long v;
                        errno = 0;
                        v = strtoul(line + 8, &end, 10);
                        if (errno || !end || *end || end == line + 8 || v == 0 || v > 1000)
                                log_warning("%s:%u: not a version: %.64s; ignored", path, lineno, line + 8);
                        else {
                                if (v > STATE_VERSION)
                                        log_warning("%s:%u: written by a newer mapsyncd (version %lu, this one "
                                                    "writes %d); reading the lines it understands",
                                                    path, lineno, v, STATE_VERSION);
                                version = (unsigned)v;
                        }
                        continue;
                }
                if (strncmp(line, "files ", 6) == 0) {
                        char *sp = strchr(line + 6, ' ');

                        if (sp)
                                *sp = '\0';
                        jb = jobs_find_kind(j, false, true, line + 6);
                        if (!jb || !jb->command) {
                                log_warning("%s:%u: owed hook of files %.64s, which the configuration no longer "
                                            "has; ignored",
                                            path, lineno, line + 6);
                                continue;
                        }
                        free(jb->changed);
                        jb->changed = strdup(sp ? sp + 1 : "");
                        if (!jb->owed)
                                n++;
                        jb->owed = true;
                        jb->gen++;
                        continue;
                }
                if (strncmp(line, "map ", 4) == 0)
                        rest = line + 4;
                else if (strncmp(line, "reload ", 7) == 0) {
                        rest = line + 7;
                        is_reload = true;
                } else {
                        log_warning("%s:%u: not an owed hook; ignored", path, lineno);
                        continue;
                }
                name = strtok_r(rest, " ", &save);
                if (!name) {
                        log_warning("%s:%u: owed hook without a name; ignored", path, lineno);
                        continue;
                }
                jb = jobs_find(j, is_reload, name);
                if (!jb || !jb->command) {
                        log_warning("%s:%u: owed hook of %s%.64s, which the configuration no longer has; ignored", path,
                                    lineno, is_reload ? "reload " : "map ", name);
                        continue;
                }
                for (char *cause; (cause = strtok_r(NULL, " ", &save));) {
                        ssize_t k = cause_index(j->config, cause);
                        if (!is_reload)
                                log_warning("%s:%u: text after the map's name; ignored", path, lineno);
                        else if (k < 0)
                                log_warning("%s:%u: reload %s caused by map %.64s, which the configuration no longer "
                                            "has; ignored",
                                            path, lineno, name, cause);
                        else
                                jb->causes[k] = true;
                        if (!is_reload)
                                break;
                }
                if (!jb->owed)
                        n++;
                jb->owed = true;
                jb->gen++;
        }
        if (ferror(f))
                log_error("Could not read owed hooks from %s: %m", path);
        for (size_t i = j->n_maps; i < j->n_jobs; i++) {
                bool none = true;

                if (!j->jobs[i].is_reload)
                        continue;
                for (size_t m = 0; m < n_causes(j); m++)
                        none = none && !j->jobs[i].causes[m];
                if (j->jobs[i].owed && none)
                        reload_guess_causes(j, &j->jobs[i]);
        }
        (void)version;
        if (n > 0)
                log_notice("%u hooks owed by an earlier run will run after the first sync", n);
}

static void job_owe(struct job *jb) {
        jb->owed = true;
        jb->gen++;
        jb->failures = 0;
        jb->retry_at = 0;
        jb->lock_wait_since = 0;
}

static int cmp_name(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* *list becomes the union of its names and those of `more`, sorted, each
 * once, separated by one space. */
static void names_merge(char **list, const char *more) {
        _cleanup_free_ char *all = NULL, *out = NULL;
        _cleanup_free_ char **v = NULL;
        size_t len = 0, n = 0, cap = 0, out_len = 0;
        char *save = NULL;

        if ((*list && (str_append(&all, &len, *list, strlen(*list)) < 0 || str_append(&all, &len, " ", 1) < 0)) ||
            str_append(&all, &len, more, strlen(more)) < 0)
                return;
        for (char *t = strtok_r(all, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                if (n == cap) {
                        char **nv = reallocarray(v, cap ? 2 * cap : 16, sizeof(*v));
                        if (!nv)
                                return;
                        v = nv;
                        cap = cap ? 2 * cap : 16;
                }
                v[n++] = t;
        }
        if (n > 1)
                qsort(v, n, sizeof(*v), cmp_name);
        if (str_append(&out, &out_len, "", 0) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                if (i > 0 && streq(v[i], v[i - 1]))
                        continue;
                if ((out_len && str_append(&out, &out_len, " ", 1) < 0) ||
                    str_append(&out, &out_len, v[i], strlen(v[i])) < 0)
                        return;
        }
        free(*list);
        *list = TAKE_PTR(out);
}

/* File sets: a changed set owes its on_change (with the names) and its
 * reloads at once, before its commit: a commit that fails part-way may
 * have put some of its files in place, so the set's hook stays owed
 * whatever the commit gives. Returns whether any set changed. */
static bool files_prepare(struct jobs *j, const struct sync_cycle *cy) {
        const struct config *c = j->config;
        bool changed = false;

        for (size_t i = 0; i < c->n_files; i++) {
                struct job *jb = files_job(j, i);

                if (cy->set_results[i].status != MAP_CHANGED || !cy->sets[i])
                        continue;
                changed = true;
                if (jb->command) {
                        if (!jb->owed) {
                                free(jb->changed);
                                jb->changed = NULL;
                        }
                        job_owe(jb);
                        names_merge(&jb->changed, files_changed_names(cy->sets[i]));
                }
                for (size_t k = 0; k < c->files[i].n_reloads; k++) {
                        struct job *rj = &j->jobs[j->n_maps + c->files[i].reloads[k]];
                        if (!rj->command)
                                continue;
                        job_owe(rj);
                        rj->causes[c->n_maps + i] = true;
                }
        }
        return changed;
}

void jobs_prepare(struct jobs *j, const struct sync_cycle *cy) {
        j->recorded = false;
        if (files_prepare(j, cy)) {
                jobs_save(j, cy);
                j->recorded = true;
                return;
        }
        for (size_t i = 0; i < j->n_jobs; i++)
                if (job_owed_with(j, &j->jobs[i], cy) && (!j->jobs[i].owed || j->jobs[i].is_reload)) {
                        jobs_save(j, cy);
                        j->recorded = true;
                        return;
                }
}

void jobs_commit(struct jobs *j, const struct sync_cycle *cy) {
        const struct config *c = j->config;
        bool recorded = j->recorded;

        j->recorded = false;
        for (size_t i = 0; i < c->n_maps; i++) {
                const struct map_result *res = &cy->results[i];
                struct job *jb = &j->jobs[i];

                /* A failed replace left the old file, whose hash stays. */
                if (res->status == MAP_FAILED)
                        continue;
                memcpy(jb->sha256, res->sha256, sizeof(jb->sha256));
                jb->rows = res->rows;
                if (res->status != MAP_CHANGED)
                        continue;
                if (jb->command)
                        job_owe(jb);
                for (size_t k = 0; k < c->maps[i].n_reloads; k++) {
                        struct job *rj = &j->jobs[j->n_maps + c->maps[i].reloads[k]];
                        if (!rj->command)
                                continue;
                        job_owe(rj);
                        rj->causes[i] = true;
                }
        }
        /* Recorded as owed, but a replace failed: the file no longer
         * names what was not installed. */
        for (size_t i = 0; recorded && i < c->n_maps; i++)
                if (cy->results[i].status == MAP_FAILED) {
                        jobs_save(j, NULL);
                        break;
                }
}

static int jobs_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        jobs_kick(userdata);
        return 0;
}

/* What a running hook's completion needs: the job is found again by name,
 * since a config reload may have rebuilt the array meanwhile. */
struct job_run {
        struct jobs *jobs;
        bool is_reload;
        bool is_files;
        char name[];
};

static void job_on_done(void *userdata, const struct hook_result *res);
static void job_failed(struct jobs *j, struct job *jb);

/* MAPSYNCD_MAP of a reload: the maps that caused it, in config order,
 * separated by spaces, whole. */
static char *reload_causes_env(const struct jobs *j, const struct job *rj) {
        char *text = NULL;
        size_t len = 0;

        if (str_append(&text, &len, "MAPSYNCD_MAP=", 13) < 0)
                return NULL;
        for (size_t m = 0; m < n_causes(j); m++)
                if (rj->causes[m] &&
                    ((len > 13 && str_append(&text, &len, " ", 1) < 0) ||
                     str_append(&text, &len, cause_job(j, m)->name, strlen(cause_job(j, m)->name)) < 0)) {
                        free(text);
                        return NULL;
                }
        return text;
}

static int job_start(struct jobs *j, struct job *jb) {
        _cleanup_free_ char *e_map = NULL, *e_out = NULL, *e_sha = NULL, *e_rows = NULL, *e_cause = NULL, *lock = NULL;
        const char *env[5];
        size_t n_env = 0;
        int r;

        if (jb->is_files) {
                /* MAPSYNCD_FILES, MAPSYNCD_DIRECTORY, MAPSYNCD_CHANGED (names
                 * only, never contents, cut at a name past CHANGED_ENV_MAX)
                 * and then MAPSYNCD_CHANGED_TRUNCATED=1. */
                const char *names = jb->changed ? jb->changed : "";
                size_t len = strlen(names);
                bool cut = len > CHANGED_ENV_MAX;

                if (cut) {
                        len = CHANGED_ENV_MAX;
                        while (len > 0 && names[len] != ' ')
                                len--;
                }
                if (asprintf(&e_cause, "MAPSYNCD_CHANGED=%.*s", (int)len, names) < 0)
                        e_cause = NULL;
                if (asprintf(&e_map, "MAPSYNCD_FILES=%s", jb->name) < 0)
                        e_map = NULL;
                if (asprintf(&e_out, "MAPSYNCD_DIRECTORY=%s", jb->output) < 0)
                        e_out = NULL;
                env[n_env++] = e_map;
                env[n_env++] = e_out;
                env[n_env++] = e_cause;
                if (cut)
                        env[n_env++] = "MAPSYNCD_CHANGED_TRUNCATED=1";
        } else if (jb->is_reload) {
                e_cause = reload_causes_env(j, jb);
                if (asprintf(&e_map, "MAPSYNCD_RELOAD=%s", jb->name) < 0)
                        e_map = NULL;
                env[n_env++] = e_map;
                env[n_env++] = e_cause;
        } else {
                if (asprintf(&e_map, "MAPSYNCD_MAP=%s", jb->name) < 0)
                        e_map = NULL;
                if (asprintf(&e_out, "MAPSYNCD_OUTPUT=%s", jb->output) < 0)
                        e_out = NULL;
                if (asprintf(&e_sha, "MAPSYNCD_SHA256=%s", jb->sha256) < 0)
                        e_sha = NULL;
                if (asprintf(&e_rows, "MAPSYNCD_ROWS=%llu", (unsigned long long)jb->rows) < 0)
                        e_rows = NULL;
                env[n_env++] = e_map;
                env[n_env++] = e_out;
                env[n_env++] = e_sha;
                env[n_env++] = e_rows;
        }
        for (size_t i = 0; i < n_env; i++)
                if (!env[i])
                        return -ENOMEM;
        /* One record per hook in the state directory: a hook never runs
         * twice at once, not even across a restart. */
        if (state_dir_usable(j) && asprintf(&lock, "%s/hook-%s-%s.pid", j->config->state_dir,
                                            jb->is_files    ? "files"
                                            : jb->is_reload ? "reload"
                                                            : "map",
                                            jb->name) < 0)
                lock = NULL;
        struct hook_spec spec = {
                .name = jb->label,
                .map = jb->is_reload ? NULL : jb->name,
                .command = jb->command,
                .env = env,
                .n_env = n_env,
                .timeout_usec = j->config->hook_timeout_s * 1000000ULL,
                .log_max_lines = j->config->hook_log_lines,
                .log_max_bytes = j->config->hook_log_bytes,
                .running_path = lock,
                .force = jb->force,
        };
        struct job_run *run = malloc(sizeof(*run) + strlen(jb->name) + 1);

        if (!run)
                return -ENOMEM;
        run->jobs = j;
        run->is_reload = jb->is_reload;
        run->is_files = jb->is_files;
        strcpy(run->name, jb->name);
        jb->running = true;
        jb->started_gen = jb->gen;
        r = hooks_start(j->hooks, &spec, job_on_done, run);
        if (r < 0) {
                jb->running = false;
                free(run);
        } else {
                jb->lock_wait_since = 0;
                jb->force = false;
        }
        return r;
}

/* The same hook, started by an earlier process, still runs: wait for its
 * process group to end, at most as long as a hook may run (its timeout and
 * the kill grace); past that it is a runaway that its own mapsyncd would
 * have killed by now, and this run starts all the same. */
static void job_wait_lock(struct jobs *j, struct job *jb, uint64_t now) {
        uint64_t bound = j->config->hook_timeout_s * 1000000ULL + LOCK_GRACE_USEC;

        if (jb->lock_wait_since == 0) {
                jb->lock_wait_since = now;
                log_notice("%s: the same hook started by an earlier run still runs; waiting for it to end (at most "
                           "%llu s)",
                           jb->label, (unsigned long long)(bound / 1000000));
        } else if (now - jb->lock_wait_since >= bound) {
                log_submit(LOG_WARNING, LOG_FIELDS(.map = jb->is_reload ? NULL : jb->name, .hook = jb->label),
                           "%s: the same hook started by an earlier run still runs after %llu s, past its timeout; "
                           "starting it all the same",
                           jb->label, (unsigned long long)(bound / 1000000));
                jb->force = true;
                jb->retry_at = now;
                return;
        }
        jb->retry_at = now + LOCK_POLL_USEC;
}

static void job_failed(struct jobs *j, struct job *jb) {
        j->failures++;
        jb->failures++;
        if (!j->retry) {
                jb->retry_at = UINT64_MAX;
                return;
        }
        uint64_t delay = RETRY_MIN_USEC << (jb->failures - 1 < 16 ? jb->failures - 1 : 16);
        if (delay > RETRY_MAX_USEC)
                delay = RETRY_MAX_USEC;
        jb->retry_at = now_usec(CLOCK_MONOTONIC) + delay;
        log_notice("%s: hook will be retried in %llu s", jb->label, (unsigned long long)(delay / 1000000));
}

static void job_on_done(void *userdata, const struct hook_result *res) {
        struct job_run *run = userdata;
        struct jobs *j = run->jobs;
        struct job *jb = jobs_find_kind(j, run->is_reload, run->is_files, run->name);

        free(run);
        if (j->metrics)
                metrics_hook(j->metrics, jb ? jb->label : "unknown", res->outcome == HOOK_SUCCEEDED);
        if (j->on_hook)
                j->on_hook(j->on_hook_userdata, jb ? jb->label : "unknown", res);
        if (!jb) {
                /* The config lost this hook while it ran. */
                if (res->outcome != HOOK_SUCCEEDED)
                        j->failures++;
                jobs_kick(j);
                return;
        }
        jb->running = false;
        if (res->outcome == HOOK_SUCCEEDED) {
                jb->failures = 0;
                if (jb->gen == jb->started_gen) {
                        jb->owed = false;
                        for (size_t m = 0; jb->is_reload && m < n_causes(j); m++)
                                jb->causes[m] = false;
                        free(jb->changed);
                        jb->changed = NULL;
                        jobs_save(j, NULL);
                }
        } else
                job_failed(j, jb);
        jobs_kick(j);
}

void jobs_set_hook_observer(struct jobs *j, jobs_hook_fn fn, void *userdata) {
        j->on_hook = fn;
        j->on_hook_userdata = userdata;
}

void jobs_set_metrics(struct jobs *j, struct metrics *m) {
        j->metrics = m;
}

void jobs_hold(struct jobs *j, bool hold) {
        j->hold = hold;
        if (hold && j->retry_timer)
                sd_event_source_set_enabled(j->retry_timer, SD_EVENT_OFF);
}

/* A reload waits until every map that caused it has had its on_change
 * succeed for its current content. Returns that map's job, or NULL. */
static const struct job *reload_waits_for(const struct jobs *j, const struct job *rj) {
        for (size_t m = 0; m < n_causes(j); m++) {
                const struct job *cj = cause_job(j, m);
                if (rj->causes[m] && cj->owed && cj->command)
                        return cj;
        }
        return NULL;
}

void jobs_kick(struct jobs *j) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), next = UINT64_MAX;
        bool waiting_lock = false;
        int r;

        if (hooks_running(j->hooks) > 0)
                return;
        if (!j->hold)
                for (size_t i = 0; i < j->n_jobs; i++) {
                        struct job *jb = &j->jobs[i];
                        if (!jb->owed || !jb->command)
                                continue;
                        /* A map's hook waits for a cycle that rendered the
                         * map: its environment names the file's hash. */
                        if (!jb->is_reload && !jb->is_files && !jb->sha256[0])
                                continue;
                        if (jb->is_reload && reload_waits_for(j, jb))
                                continue;
                        if (jb->retry_at <= now) {
                                r = job_start(j, jb);
                                if (r == -EBUSY) {
                                        job_wait_lock(j, jb, now);
                                        if (jb->force)
                                                r = job_start(j, jb);
                                }
                                if (r >= 0)
                                        return;
                                if (r != -EBUSY) {
                                        jb->lock_wait_since = 0;
                                        jb->force = false;
                                        if (j->metrics)
                                                metrics_hook(j->metrics, jb->label, false);
                                        job_failed(j, jb);
                                }
                        }
                        waiting_lock = waiting_lock || jb->lock_wait_since;
                        if (jb->retry_at < next)
                                next = jb->retry_at;
                }
        if (next != UINT64_MAX) {
                if (!j->retry_timer)
                        r = sd_event_add_time(j->event, &j->retry_timer, CLOCK_MONOTONIC, next, 0, jobs_on_retry, j);
                else {
                        r = sd_event_source_set_time(j->retry_timer, next);
                        if (r >= 0)
                                r = sd_event_source_set_enabled(j->retry_timer, SD_EVENT_ONESHOT);
                }
                if (r < 0 && !j->timer_warned) {
                        log_error("Could not arm the timer that retries hooks: %s; owed hooks wait for the next "
                                  "change",
                                  strerror(-r));
                        j->timer_warned = true;
                } else if (r >= 0)
                        j->timer_warned = false;
        } else if (j->retry_timer)
                sd_event_source_set_enabled(j->retry_timer, SD_EVENT_OFF);
        /* Waiting for a lock is not idle: that hook is due. */
        if (j->idle && !waiting_lock)
                j->idle(j->userdata);
}

unsigned jobs_held(const struct jobs *j, char *why, size_t size) {
        unsigned n = 0;

        if (size)
                why[0] = '\0';
        for (size_t i = j->n_maps; i < j->n_jobs; i++) {
                const struct job *rj = &j->jobs[i], *mj;
                if (!rj->is_reload || !rj->owed || !rj->command || !(mj = reload_waits_for(j, rj)) || mj->failures == 0)
                        continue;
                if (n++ == 0 && size)
                        snprintf(why, size, "%s held back: the hook of %s %s failed", rj->label,
                                 mj->is_files ? "files" : "map", mj->name);
        }
        return n;
}

unsigned jobs_owed(const struct jobs *j) {
        unsigned n = 0;

        for (size_t i = 0; i < j->n_jobs; i++)
                n += j->jobs[i].owed && j->jobs[i].command;
        return n;
}

unsigned jobs_running(const struct jobs *j) {
        unsigned n = 0;

        for (size_t i = 0; i < j->n_jobs; i++)
                n += j->jobs[i].running;
        return n;
}

unsigned jobs_failures(const struct jobs *j) {
        return j->failures;
}
