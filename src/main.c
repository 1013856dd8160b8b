/* mapsyncd: keeps Postfix and Dovecot map files in step with the admin
 * panel's SQLite database. parse_argv -> load config -> run. */
#include <getopt.h>
#include <stdio.h>

#include "build-config.h"
#include "check.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "util.h"

#define EXIT_USAGE  2
#define EXIT_CONFIG 78 /* EX_CONFIG */

enum mode {
        MODE_DAEMON,
        MODE_ONCE,
        MODE_DRY_RUN,
        MODE_CHECK,
};

struct args {
        const char *config;
        enum mode mode;
        int verbose;
        bool force;
};

static void usage(FILE *f) {
        fprintf(f, "Usage: mapsyncd [-c FILE] [--once | --dry-run | --check] [-v]\n"
                   "Keeps Postfix and Dovecot map files in step with an SQLite database.\n\n"
                   "  -c, --config FILE  configuration (default " MAPSYNCD_DEFAULT_CONFIG ")\n"
                   "      --once         sync every map once, run the hooks, exit\n"
                   "      --dry-run      show what a sync would change; write nothing\n"
                   "      --check        check the configuration, database, queries and directories\n"
                   "      --force        with --once: publish maps the shrink guard holds back\n"
                   "  -v, --verbose      log debug records too\n"
                   "      --version      print the version\n"
                   "  -h, --help         print this help\n\n"
                   "Without a mode option mapsyncd runs in the foreground, watching the database.\n"
                   "Exit status: 0 ok, 1 failure, 2 usage, 78 bad configuration.\n");
}

/* Returns 0 to go on, or an exit status + 1. */
static int parse_argv(int argc, char **argv, struct args *a) {
        enum { OPT_ONCE = 0x100, OPT_DRY_RUN, OPT_CHECK, OPT_FORCE, OPT_VERSION };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"once", no_argument, NULL, OPT_ONCE},
                {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                {"check", no_argument, NULL, OPT_CHECK},
                {"force", no_argument, NULL, OPT_FORCE},
                {"verbose", no_argument, NULL, 'v'},
                {"version", no_argument, NULL, OPT_VERSION},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        int c, n_modes = 0;

        a->config = MAPSYNCD_DEFAULT_CONFIG;
        a->mode = MODE_DAEMON;
        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        a->config = optarg;
                        break;
                case OPT_ONCE:
                        a->mode = MODE_ONCE;
                        n_modes++;
                        break;
                case OPT_DRY_RUN:
                        a->mode = MODE_DRY_RUN;
                        n_modes++;
                        break;
                case OPT_CHECK:
                        a->mode = MODE_CHECK;
                        n_modes++;
                        break;
                case OPT_FORCE:
                        a->force = true;
                        break;
                case 'v':
                        a->verbose++;
                        break;
                case OPT_VERSION:
                        printf("mapsyncd %s\n", MAPSYNCD_VERSION);
                        return 1;
                case 'h':
                        usage(stdout);
                        return 1;
                default:
                        usage(stderr);
                        return EXIT_USAGE + 1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "mapsyncd: unexpected argument '%s'\n", argv[optind]);
                return EXIT_USAGE + 1;
        }
        if (n_modes > 1) {
                fprintf(stderr, "mapsyncd: --once, --dry-run and --check exclude each other\n");
                return EXIT_USAGE + 1;
        }
        if (a->force && a->mode != MODE_ONCE) {
                fprintf(stderr, "mapsyncd: --force goes with --once (the daemon takes SIGUSR2)\n");
                return EXIT_USAGE + 1;
        }
        return 0;
}

int main(int argc, char **argv) {
        struct config_errors errors = {};
        struct config *config = NULL;
        struct args args = {};
        int r;

        r = parse_argv(argc, argv, &args);
        if (r > 0)
                return r - 1;
        log_init(args.verbose ? LOG_DEBUG : LOG_INFO);

        r = config_load(args.config, &config, &errors);
        for (size_t i = 0; i < errors.n_msgs; i++)
                log_error("%s", errors.msgs[i]);
        config_errors_done(&errors);
        if (r < 0) {
                if (r == -ENOMEM)
                        log_error("%s: out of memory", args.config);
                return EXIT_CONFIG;
        }

        switch (args.mode) {
        case MODE_CHECK:
                r = check_run(config);
                config_free(config);
                return r;
        case MODE_DRY_RUN:
                r = check_dry_run(config);
                config_free(config);
                return r;
        case MODE_ONCE:
                return daemon_run_forced(config, args.config, DAEMON_ONCE, args.force);
        case MODE_DAEMON:
                return daemon_run(config, args.config, DAEMON_WATCH);
        }
        return 1;
}
