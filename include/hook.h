/* Hook processes: `/bin/sh -c COMMAND` with MAPSYNCD_* in its environment,
 * default signal dispositions and an empty signal mask, its output logged
 * line by line (at most log_max_lines lines and log_max_bytes bytes a run,
 * then one line saying how many more were dropped; at most HOOK_READ_MAX
 * bytes are read per event-loop iteration, so that timers, signals and
 * inotify are served between reads however fast a hook writes), a timeout
 * (SIGTERM to its process group, then SIGKILL), and every child reaped,
 * orphans included, so that mapsyncd can be PID 1 of a container.
 *
 * A hook may be recorded while it runs: its process group (its pid) is
 * written to spec->running_path by the hook process itself before the
 * command starts, and the file is removed when the hook has ended. A hook
 * whose record names a process group that still has a process (a hook an
 * earlier, killed mapsyncd left running, and what it started in its group)
 * is not started: hooks_start() returns -EBUSY. A descendant that left the
 * group (setsid: a daemon it started) does not count, as it escapes the
 * timeout's kill too. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

struct hooks;

enum hook_outcome {
        HOOK_SUCCEEDED,
        HOOK_FAILED,    /* exited with a status other than 0 */
        HOOK_KILLED,    /* died of a signal it was not sent for a timeout */
        HOOK_TIMED_OUT, /* ran past the timeout and was killed */
};

struct hook_result {
        enum hook_outcome outcome;
        int code; /* exit status, or signal number */
        uint64_t duration_ms;
};

/* What to run. env holds "NAME=value" strings added to the environment. */
struct hook_spec {
        const char *name;    /* for the log, e.g. "vmailbox" or "reload postfix" */
        const char *map;     /* MAPSYNCD_MAP of log records, or NULL */
        const char *command; /* given to /bin/sh -c */
        const char *const *env;
        size_t n_env;
        uint64_t timeout_usec;
        uint64_t log_max_lines;   /* lines of output logged; then counted */
        uint64_t log_max_bytes;   /* bytes of output logged; then counted */
        const char *running_path; /* the record of the running hook; NULL: none */
        bool force;               /* start even if the recorded group still runs */
};

#define HOOK_READ_MAX (64 * 1024)

typedef void (*hook_done_fn)(void *userdata, const struct hook_result *result);

/* Creates the runner and its SIGCHLD source (SIGCHLD must be blocked). */
int hooks_new(sd_event *event, struct hooks **ret);

/* Kills what still runs (SIGKILL to each hook's group) and frees;
 * NULL-safe; returns NULL. */
struct hooks *hooks_free(struct hooks *h);

/* Starts a hook; `done` is called once, from the event loop, when it has
 * ended. Returns 0; -EBUSY (not logged) when spec->running_path names a
 * process group that still runs; or another negative errno (logged) when it could not be
 * started. `done` is not called when it did not start. */
int hooks_start(struct hooks *h, const struct hook_spec *spec, hook_done_fn done, void *userdata);

/* Number of hooks running. */
unsigned hooks_running(const struct hooks *h);

/* Asks running hooks to stop (SIGTERM to their groups); SIGKILL follows
 * after grace_usec. */
void hooks_terminate(struct hooks *h, uint64_t grace_usec);
