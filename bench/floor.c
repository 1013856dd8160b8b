/* The floor: the least any exporter of mapsyncd's maps can pay. Prepares
 * and steps each [map]'s query of a mapsyncd configuration in one process
 * and one read transaction, reads both columns of every row as text and
 * discards them: no validation, no order, no file, no hash.
 *
 *     floor [--sorted | --key-order] [--runs N] CONFIG
 *
 * --sorted runs each query inside mapsyncd's sorting wrapper (ORDER BY
 * lower(k), v), as mapsyncd did before it streamed. --key-order inside the
 * wrapper mapsyncd streams with (ORDER BY k, which an index on the key
 * column gives without a sort): the least an exporter pays for rows in
 * key order in bounded memory. Prints per map the rows
 * and the time, then the total, in ms (CLOCK_MONOTONIC); with --runs the
 * best of N. SQLite's memory statistics are off, as in mapsyncd. */
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

static double now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

enum mode { PLAIN, SORTED, KEY_ORDER };

static char *wrap(const char *sql, enum mode mode) {
        char *body = strdup(sql), *out = NULL;
        size_t n;

        if (!body)
                return NULL;
        n = strlen(body);
        while (n > 0 && strchr(" \t\r\n;", body[n - 1]))
                body[--n] = '\0';
        if (mode == PLAIN)
                return body;
        if (asprintf(&out, "WITH mapsyncd_q(k, v) AS (\n%s\n)\nSELECT k, v FROM mapsyncd_q ORDER BY %s", body,
                     mode == SORTED ? "lower(k) COLLATE BINARY, v COLLATE BINARY" : "k COLLATE BINARY") < 0)
                out = NULL;
        free(body);
        return out;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"sorted", no_argument, NULL, 's'},
                {"key-order", no_argument, NULL, 'k'},
                {"runs", required_argument, NULL, 'n'},
                {},
        };
        struct config_errors errors = {0};
        struct config *c = NULL;
        sqlite3 *db = NULL;
        enum mode mode = PLAIN;
        int runs = 1, opt;
        double best = 0;

        while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (opt) {
                case 's':
                        mode = SORTED;
                        break;
                case 'k':
                        mode = KEY_ORDER;
                        break;
                case 'n':
                        runs = atoi(optarg);
                        break;
                default:
                        return 2;
                }
        if (optind != argc - 1 || runs < 1) {
                fprintf(stderr, "usage: floor [--sorted | --key-order] [--runs N] CONFIG\n");
                return 2;
        }
        if (config_load(argv[optind], &c, &errors) < 0) {
                for (size_t i = 0; i < errors.n_msgs; i++)
                        fprintf(stderr, "%s\n", errors.msgs[i]);
                return 1;
        }
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        if (sqlite3_open_v2(c->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", c->db_path, sqlite3_errmsg(db));
                return 1;
        }
        for (int run = 0; run < runs; run++) {
                double t0 = now_ms(), total;

                sqlite3_exec(db, "BEGIN; PRAGMA schema_version", NULL, NULL, NULL);
                for (size_t i = 0; i < c->n_maps; i++) {
                        char *sql = wrap(c->maps[i].query, mode);
                        sqlite3_stmt *st = NULL;
                        unsigned long long rows = 0, bytes = 0;
                        double t1 = now_ms();
                        int rc;

                        if (!sql || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                                fprintf(stderr, "%s: %s\n", c->maps[i].name, sqlite3_errmsg(db));
                                return 1;
                        }
                        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                                sqlite3_column_text(st, 0);
                                sqlite3_column_text(st, 1);
                                bytes += (unsigned long long)sqlite3_column_bytes(st, 0) +
                                         (unsigned long long)sqlite3_column_bytes(st, 1);
                                rows++;
                        }
                        if (rc != SQLITE_DONE) {
                                fprintf(stderr, "%s: %s\n", c->maps[i].name, sqlite3_errmsg(db));
                                return 1;
                        }
                        sqlite3_finalize(st);
                        free(sql);
                        if (runs == 1)
                                printf("%s: %llu rows, %llu bytes, %.1f ms\n", c->maps[i].name, rows, bytes,
                                       now_ms() - t1);
                }
                sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
                total = now_ms() - t0;
                if (run == 0 || total < best)
                        best = total;
        }
        printf("total: %.1f ms%s\n", best, runs > 1 ? " (best run)" : "");
        sqlite3_close(db);
        config_free(c);
        return 0;
}
