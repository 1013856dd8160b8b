/* The service manager's notification socket (sd_notify). Every call is a
 * no-op when NOTIFY_SOCKET is not set. */
#pragma once

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);

/* STATUS=: one line for `systemctl status`. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
