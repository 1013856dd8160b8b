/* Hook processes and the reaping of every child. */
#include "hook.h"

#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define HOOK_KILL_GRACE_USEC (5 * 1000000ULL)
#define HOOK_LINE_MAX        1024

extern char **environ;

struct hook {
        struct hooks *owner;
        struct hook *next;
        char *name;
        char *map;
        char *record; /* spec->running_path */
        pid_t pid;
        int out_fd;
        sd_event_source *io;
        sd_event_source *timer;
        bool terminated; /* SIGTERM sent for the timeout */
        bool timed_out;
        uint64_t start_usec;
        char line[HOOK_LINE_MAX];
        size_t line_len;
        uint64_t max_lines, max_bytes;
        uint64_t logged_lines, logged_bytes;
        uint64_t dropped_lines;
        hook_done_fn done;
        void *userdata;
};

struct hooks {
        sd_event *event;
        sd_event_source *sigchld;
        struct hook *running;
        unsigned n_running;
};

static void hook_log_line(struct hook *k) {
        char esc[HOOK_LINE_MAX * 4 + 8];

        if (k->line_len == 0)
                return;
        if (k->logged_lines >= k->max_lines || k->logged_bytes + k->line_len > k->max_bytes) {
                k->dropped_lines++;
                k->logged_lines = k->max_lines; /* nothing more once one is dropped */
                k->line_len = 0;
                return;
        }
        k->logged_lines++;
        k->logged_bytes += k->line_len;
        str_escape(k->line, k->line_len, esc, sizeof(esc));
        log_submit(LOG_INFO, LOG_FIELDS(.map = k->map, .hook = k->name), "%s: hook: %s", k->name, esc);
        k->line_len = 0;
}

static void hook_log_dropped(struct hook *k) {
        if (k->dropped_lines == 0)
                return;
        log_submit(LOG_WARNING, LOG_FIELDS(.map = k->map, .hook = k->name),
                   "%s: hook: %llu more lines of output not logged (at most %llu lines and %llu bytes are logged "
                   "a run)",
                   k->name, (unsigned long long)k->dropped_lines, (unsigned long long)k->max_lines,
                   (unsigned long long)k->max_bytes);
        k->dropped_lines = 0;
}

/* Reads what the hook wrote, at most HOOK_READ_MAX bytes; logs complete
 * lines. Returns 0 at EOF, -EAGAIN when nothing more is there now or the
 * budget of this event-loop iteration is spent. */
static int hook_read_output(struct hook *k) {
        char buf[4096];
        size_t budget = HOOK_READ_MAX;

        for (; budget > 0; budget -= sizeof(buf)) {
                ssize_t n = read(k->out_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR) {
                                budget += sizeof(buf);
                                continue;
                        }
                        return errno == EAGAIN ? -EAGAIN : 0;
                }
                if (n == 0)
                        return 0;
                for (ssize_t i = 0; i < n; i++) {
                        if (buf[i] == '\n' || k->line_len == HOOK_LINE_MAX) {
                                hook_log_line(k);
                                if (buf[i] == '\n')
                                        continue;
                        }
                        k->line[k->line_len++] = buf[i];
                }
        }
        return -EAGAIN;
}

static void hook_close_output(struct hook *k) {
        k->io = sd_event_source_disable_unref(k->io);
        if (k->out_fd >= 0) {
                close(k->out_fd);
                k->out_fd = -1;
        }
}

static int hook_on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct hook *k = userdata;

        if (hook_read_output(k) == 0) {
                hook_log_line(k);
                hook_close_output(k);
        }
        return 0;
}

static int hook_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct hook *k = userdata;

        if (!k->terminated) {
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_HOOK_FAILED, .map = k->map, .hook = k->name),
                           "%s: hook still running after the timeout; sending SIGTERM", k->name);
                k->terminated = k->timed_out = true;
                kill(-k->pid, SIGTERM);
                sd_event_source_set_time_relative(s, HOOK_KILL_GRACE_USEC);
                sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        } else {
                log_submit(LOG_ERR, LOG_FIELDS(.map = k->map, .hook = k->name),
                           "%s: hook ignored SIGTERM; sending SIGKILL", k->name);
                kill(-k->pid, SIGKILL);
        }
        return 0;
}

static void hook_unlink(struct hook *k) {
        struct hooks *h = k->owner;

        for (struct hook **p = &h->running; *p; p = &(*p)->next)
                if (*p == k) {
                        *p = k->next;
                        h->n_running--;
                        break;
                }
}

static void hook_free(struct hook *k) {
        hook_close_output(k);
        sd_event_source_disable_unref(k->timer);
        free(k->name);
        free(k->map);
        free(k->record);
        free(k);
}

static void hook_finish(struct hook *k, int status) {
        struct hook_result res = {.duration_ms = elapsed_ms(k->start_usec)};

        /* What it wrote before exiting is still in the pipe (one budget of
         * it); a grandchild holding the pipe open is not waited for. */
        if (k->out_fd >= 0)
                hook_read_output(k);
        hook_log_line(k);
        hook_log_dropped(k);
        hook_close_output(k);
        if (k->timed_out) {
                /* Whatever the timed-out hook left in its group goes too. */
                kill(-k->pid, SIGKILL);
                res.outcome = HOOK_TIMED_OUT;
                res.code = WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status);
        } else if (WIFEXITED(status)) {
                res.code = WEXITSTATUS(status);
                res.outcome = res.code == 0 ? HOOK_SUCCEEDED : HOOK_FAILED;
        } else {
                res.code = WTERMSIG(status);
                res.outcome = HOOK_KILLED;
        }

        if (res.outcome == HOOK_SUCCEEDED)
                log_submit(LOG_INFO,
                           LOG_FIELDS(.message_id = MSGID_HOOK_DONE, .map = k->map, .hook = k->name, .exit_status = 0,
                                      .duration_ms = (int64_t)res.duration_ms),
                           "%s: hook succeeded in %llu ms", k->name, (unsigned long long)res.duration_ms);
        else
                log_submit(LOG_ERR,
                           LOG_FIELDS(.message_id = MSGID_HOOK_FAILED, .map = k->map, .hook = k->name,
                                      .exit_status = res.outcome == HOOK_FAILED ? res.code : 128 + res.code,
                                      .duration_ms = (int64_t)res.duration_ms),
                           res.outcome == HOOK_FAILED   ? "%s: hook failed with exit status %d"
                           : res.outcome == HOOK_KILLED ? "%s: hook was killed by signal %d"
                                                        : "%s: hook timed out and was killed (signal %d)",
                           k->name, res.code);

        if (k->record)
                (void)unlink(k->record);
        hook_unlink(k);
        k->done(k->userdata, &res);
        hook_free(k);
}

/* Reaps every child that has exited: hooks, and orphans left to us as
 * PID 1 or subreaper. */
static int hooks_on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct hooks *h = userdata;

        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);

                if (pid <= 0)
                        break;
                for (struct hook *k = h->running; k; k = k->next)
                        if (k->pid == pid) {
                                hook_finish(k, status);
                                break;
                        }
        }
        return 0;
}

int hooks_new(sd_event *event, struct hooks **ret) {
        struct hooks *h = calloc(1, sizeof(*h));
        int r;

        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(event);
        r = sd_event_add_signal(event, &h->sigchld, SIGCHLD, hooks_on_sigchld, h);
        if (r < 0) {
                hooks_free(h);
                return r;
        }
        *ret = h;
        return 0;
}

struct hooks *hooks_free(struct hooks *h) {
        if (!h)
                return NULL;
        while (h->running) {
                struct hook *k = h->running;
                h->running = k->next;
                kill(-k->pid, SIGKILL);
                waitpid(k->pid, NULL, 0);
                if (k->record)
                        (void)unlink(k->record);
                hook_free(k);
        }
        sd_event_source_disable_unref(h->sigchld);
        sd_event_unref(h->event);
        free(h);
        return NULL;
}

unsigned hooks_running(const struct hooks *h) {
        return h->n_running;
}

void hooks_terminate(struct hooks *h, uint64_t grace_usec) {
        for (struct hook *k = h->running; k; k = k->next) {
                kill(-k->pid, SIGTERM);
                k->terminated = true;
                sd_event_source_set_time_relative(k->timer, grace_usec);
                sd_event_source_set_enabled(k->timer, SD_EVENT_ONESHOT);
        }
}

static bool env_is_ours(const char *e) {
        static const char *const drop[] = {"NOTIFY_SOCKET=", "WATCHDOG_PID=",   "WATCHDOG_USEC=", "LISTEN_PID=",
                                           "LISTEN_FDS=",    "LISTEN_FDNAMES=", "MAPSYNCD_"};
        for (size_t i = 0; i < ARRAY_SIZE(drop); i++)
                if (strncmp(e, drop[i], strlen(drop[i])) == 0)
                        return true;
        return false;
}

/* The hook's environment: ours without what belongs to mapsyncd alone
 * (NOTIFY_SOCKET: a hook must not speak for the service), plus spec->env. */
static char **hook_env(const struct hook_spec *spec) {
        size_t n = 0, i = 0;
        char **env;

        for (char **e = environ; *e; e++)
                n++;
        env = calloc(n + spec->n_env + 1, sizeof(*env));
        if (!env)
                return NULL;
        for (char **e = environ; *e; e++)
                if (!env_is_ours(*e))
                        env[i++] = *e;
        for (size_t k = 0; k < spec->n_env; k++)
                env[i++] = (char *)spec->env[k];
        return env;
}

static int hook_not_started(const struct hook_spec *spec, int err) {
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_HOOK_FAILED, .map = spec->map, .hook = spec->name),
                   "%s: Could not start hook: %s", spec->name, strerror(err));
        return -err;
}

/* Whether the process group recorded at path (by an earlier hook) still
 * has a process. A record that cannot be read or parsed is stale. */
static bool hook_recorded_group_runs(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        char buf[32], *end = NULL;
        ssize_t n;
        long pid;

        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        errno = 0;
        pid = strtol(buf, &end, 10);
        if (errno || end == buf || (*end && *end != '\n') || pid <= 1 || pid > INT_MAX)
                return false;
        return kill(-(pid_t)pid, 0) == 0 || errno == EPERM;
}

/* In the child: its process group (its pid) into path. Async-signal-safe. */
static void hook_write_record(const char *path) {
        char digits[24];
        size_t i = sizeof(digits);
        unsigned long v = (unsigned long)getpid();
        int fd;

        digits[--i] = '\n';
        do {
                digits[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v && i > 0);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd >= 0) {
                (void)!write(fd, digits + i, sizeof(digits) - i);
                close(fd);
        }
}

int hooks_start(struct hooks *h, const struct hook_spec *spec, hook_done_fn done, void *userdata) {
        _cleanup_free_ char **env = NULL;
        int pipefd[2] = {-1, -1}, devnull, r;
        struct hook *k;
        sigset_t all;
        pid_t pid;

        if (spec->running_path && !spec->force) {
                /* Ours, whose record may not be written yet, or another's. */
                for (struct hook *o = h->running; o; o = o->next)
                        if (o->record && streq(o->record, spec->running_path))
                                return -EBUSY;
                if (hook_recorded_group_runs(spec->running_path))
                        return -EBUSY;
        }

        k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        k->owner = h;
        k->out_fd = -1;
        k->max_lines = spec->log_max_lines;
        k->max_bytes = spec->log_max_bytes;
        k->name = strdup(spec->name);
        k->map = spec->map ? strdup(spec->map) : NULL;
        k->record = spec->running_path ? strdup(spec->running_path) : NULL;
        env = hook_env(spec);
        if (!k->name || (spec->map && !k->map) || (spec->running_path && !k->record) || !env) {
                hook_free(k);
                return hook_not_started(spec, ENOMEM);
        }

        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
                r = errno;
                if (devnull >= 0)
                        close(devnull);
                hook_free(k);
                return hook_not_started(spec, r);
        }

        log_submit(LOG_DEBUG, LOG_FIELDS(.map = spec->map, .hook = spec->name), "%s: running hook: %s", spec->name,
                   spec->command);
        pid = fork();
        if (pid == 0) {
                /* Only async-signal-safe calls from here on. Dispositions
                 * ignored by whoever started mapsyncd (SIGPIPE under
                 * systemd) would survive exec: every one goes back to its
                 * default, and the mask is emptied. */
                struct sigaction dfl = {.sa_handler = SIG_DFL};
                sigemptyset(&dfl.sa_mask);
                for (int sig = 1; sig < NSIG; sig++)
                        (void)sigaction(sig, &dfl, NULL); /* SIGKILL, SIGSTOP, RT: EINVAL, harmless */
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                setpgid(0, 0);
                /* On disk before the command runs: a daemon killed from
                 * now on leaves the record for the next one. */
                if (k->record)
                        hook_write_record(k->record);
                if (dup2(devnull, STDIN_FILENO) < 0 || dup2(pipefd[1], STDOUT_FILENO) < 0 ||
                    dup2(pipefd[1], STDERR_FILENO) < 0)
                        _exit(126);
                close_range(3, ~0U, 0);
                execve("/bin/sh", (char *const[]){(char *)"sh", (char *)"-c", (char *)spec->command, NULL}, env);
                _exit(127);
        }
        r = errno;
        close(devnull);
        close(pipefd[1]);
        if (pid < 0) {
                close(pipefd[0]);
                hook_free(k);
                return hook_not_started(spec, r);
        }
        /* Also here, so that a kill of the group cannot come before the
         * child made it. */
        setpgid(pid, pid);

        k->pid = pid;
        k->start_usec = now_usec(CLOCK_MONOTONIC);
        k->out_fd = pipefd[0];
        k->done = done;
        k->userdata = userdata;
        fcntl(k->out_fd, F_SETFL, O_NONBLOCK);
        k->next = h->running;
        h->running = k;
        h->n_running++;

        r = sd_event_add_io(h->event, &k->io, k->out_fd, EPOLLIN, hook_on_output, k);
        if (r >= 0)
                r = sd_event_add_time_relative(h->event, &k->timer, CLOCK_MONOTONIC, spec->timeout_usec, 0,
                                               hook_on_timeout, k);
        if (r < 0) {
                /* It runs, but cannot be supervised: stop it now. */
                log_submit(LOG_ERR, LOG_FIELDS(.hook = spec->name), "%s: Could not watch hook: %s", spec->name,
                           strerror(-r));
                kill(-pid, SIGKILL);
        }
        return 0;
}
