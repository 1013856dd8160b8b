/* The service manager's notification socket (sd_notify). Every call is a
 * no-op when NOTIFY_SOCKET is not set. */
#pragma once

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);

/* STATUS=: one line for `systemctl status`. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1 from inside a long piece of work (a render of a million rows)
 * that keeps the event loop, which otherwise sends it, from running; at
 * most four times per watchdog interval. */
void notify_watchdog_kick(void);
