/* sd_notify messages: READY, RELOADING, STOPPING, STATUS. */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "util.h"

void notify_ready(void) {
        sd_notify(0, "READY=1");
}

void notify_reloading(void) {
        /* MONOTONIC_USEC lets systemd (253+) pair the READY=1 that follows. */
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)now_usec(CLOCK_MONOTONIC));
}

void notify_stopping(void) {
        sd_notify(0, "STOPPING=1");
}

void notify_status(const char *fmt, ...) {
        char buf[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        for (char *p = buf; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        sd_notifyf(0, "STATUS=%s", buf);
}

void notify_watchdog_kick(void) {
        static int enabled = -1;
        static uint64_t interval, last;
        uint64_t now;

        if (enabled < 0)
                enabled = sd_watchdog_enabled(0, &interval) > 0;
        if (!enabled)
                return;
        now = now_usec(CLOCK_MONOTONIC);
        if (now - last < interval / 4)
                return;
        last = now;
        sd_notify(0, "WATCHDOG=1");
}
