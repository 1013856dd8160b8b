/* Helpers of the unit tests that drive an sd-event loop: run it until a
 * condition holds (or a deadline), and capture what is logged. */
#pragma once

#include <signal.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "log.h"
#include "test.h"

static inline uint64_t loop_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* Runs e until *flag is true or timeout_usec passed; returns *flag. */
static inline bool loop_until(sd_event *e, const bool *flag, uint64_t timeout_usec) {
        uint64_t end = loop_now_usec() + timeout_usec;

        while (!*flag && loop_now_usec() < end)
                if (sd_event_run(e, 10000) < 0)
                        break;
        return *flag;
}

/* Blocks SIGCHLD (the hooks' runner takes it through signalfd). */
static inline void loop_block_sigchld(void) {
        sigset_t s;

        sigemptyset(&s);
        sigaddset(&s, SIGCHLD);
        sigprocmask(SIG_BLOCK, &s, NULL);
}

/* Sends stderr to a file and logs at max_priority until loop_capture_end(),
 * which returns what was logged (to free). */
struct loop_capture {
        char *dir, *path;
        int saved;
};

static inline void loop_capture_begin(struct loop_capture *c, int max_priority) {
        int fd;

        c->dir = test_mkdtemp();
        c->path = test_path(c->dir, "stderr");
        fflush(stderr);
        c->saved = dup(STDERR_FILENO);
        fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || c->saved < 0)
                abort();
        dup2(fd, STDERR_FILENO);
        close(fd);
        log_init(max_priority);
}

static inline char *loop_capture_end(struct loop_capture *c) {
        char *log;

        fflush(stderr);
        dup2(c->saved, STDERR_FILENO);
        close(c->saved);
        log_init(LOG_CRIT);
        log = test_read_file(c->path, NULL);
        test_rm_rf(c->dir);
        free(c->path);
        free(c->dir);
        return log ? log : strdup("");
}

/* Lines of s holding sub. */
static inline unsigned count_lines_with(const char *s, const char *sub) {
        unsigned n = 0;

        for (const char *p = s; p && *p;) {
                const char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
                const char *f = strstr(p, sub);
                if (f && f < end)
                        n++;
                p = nl ? nl + 1 : end;
        }
        return n;
}
