/* Logging to the journal with fields, or to stderr as plain lines. */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* Without it, sd_journal_sendv adds CODE_FILE, CODE_LINE and CODE_FUNC of
 * the one call below (journal_send in log.c) to every record: a location
 * that never names the code that logged. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

static int max_level = LOG_INFO;
static int use_journal;

static int stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return 0;
        if (fstat(STDERR_FILENO, &st) < 0)
                return 0;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(int max_priority) {
        max_level = max_priority;
        use_journal = stderr_is_journal();
}

int log_to_journal(void) {
        return use_journal;
}

static const char *prefix(int priority) {
        switch (priority) {
        case LOG_EMERG:
        case LOG_ALERT:
        case LOG_CRIT:
        case LOG_ERR:
                return "error: ";
        case LOG_WARNING:
                return "warning: ";
        case LOG_DEBUG:
                return "debug: ";
        default:
                return "";
        }
}

static void journal_send(int priority, const struct log_fields *f, const char *msg) {
        char b[8][96];
        struct iovec iov[12];
        size_t n = 0, k = 0;
        _Static_assert(sizeof(iov) / sizeof(iov[0]) >= 3 + 8, "iovec room");

#define ADD_STR(name, val)                                                                                             \
        do {                                                                                                           \
                if ((val) && k < 8) {                                                                                  \
                        int l_ = snprintf(b[k], sizeof(b[k]), name "=%s", (val));                                      \
                        if (l_ > 0 && (size_t)l_ < sizeof(b[k]))                                                       \
                                iov[n++] = (struct iovec){b[k], (size_t)l_};                                           \
                        k++;                                                                                           \
                }                                                                                                      \
        } while (0)
#define ADD_NUM(name, val)                                                                                             \
        do {                                                                                                           \
                if ((val) != LOG_FIELD_UNSET && k < 8) {                                                               \
                        int l_ = snprintf(b[k], sizeof(b[k]), name "=%" PRId64, (val));                                \
                        iov[n++] = (struct iovec){b[k], (size_t)l_};                                                   \
                        k++;                                                                                           \
                }                                                                                                      \
        } while (0)

        char prio[16], *m;
        size_t mlen = strlen(msg);

        m = malloc(mlen + 9);
        if (!m)
                return;
        memcpy(m, "MESSAGE=", 8);
        memcpy(m + 8, msg, mlen + 1);
        iov[n++] = (struct iovec){m, mlen + 8};
        iov[n++] = (struct iovec){prio, (size_t)snprintf(prio, sizeof(prio), "PRIORITY=%d", priority)};
        iov[n++] = (struct iovec){(char *)"SYSLOG_IDENTIFIER=mapsyncd", 26};
        if (f) {
                ADD_STR("MESSAGE_ID", f->message_id);
                ADD_STR("MAPSYNCD_MAP", f->map);
                ADD_STR("MAPSYNCD_HOOK", f->hook);
                ADD_STR("MAPSYNCD_SHA256", f->sha256);
                ADD_NUM("MAPSYNCD_ROWS", f->rows);
                ADD_NUM("MAPSYNCD_DURATION_MS", f->duration_ms);
                ADD_NUM("MAPSYNCD_EXIT_STATUS", f->exit_status);
        }
#undef ADD_STR
#undef ADD_NUM
        sd_journal_sendv(iov, (int)n);
        free(m);
}

void log_submit(int priority, const struct log_fields *f, const char *fmt, ...) {
        int saved = errno;
        char buf[2048];
        va_list ap;

        if (priority > max_level) {
                errno = saved;
                return;
        }
        va_start(ap, fmt);
        errno = saved; /* %m refers to the caller's errno */
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);

        if (use_journal)
                journal_send(priority, f, buf);
        else
                fprintf(stderr, "%s%s\n", prefix(priority), buf);
        errno = saved;
}
