/* LD_PRELOAD shim for bench/profile.sh: turns SQLite's memory statistics
 * off before mapsyncd initialises SQLite, to measure what
 * sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) would save (with the
 * statistics on, every sqlite3_malloc and sqlite3_free takes a global
 * mutex and updates counters). Not part of mapsyncd. */
#include <sqlite3.h>

__attribute__((constructor)) static void memstatus_off(void) {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
