#!/usr/bin/env python3
"""Commit-to-file latency on PostgreSQL next to SQLite's, in one run.

The method of bench/latency.py (whose Watcher, Mapsyncd and percentile it
uses), for both drivers on the same rows: a tools/gendb.py database of N
accounts; for postgresql a private PostgreSQL 15 cluster
(tests/integration/pgcluster.py: initdb as postgres, loopback port, the
panel's schema as Laravel's migrations make it, conf/mapsyncd-notify.sql)
holding a copy of its rows, and conf/mapsyncd-postgresql.conf with mapsyncd
connecting over TCP with a passfile. The writer (this process, one
connection kept open) commits UPDATE email_accounts SET quota = ? WHERE
id = 1 (passwd changes, nothing else); the clock starts when the commit
returns and stops when inotifywait reports the rename of the new passwd.
On PostgreSQL the notice is the trigger's NOTIFY, delivered at COMMIT to
mapsyncd's LISTEN connection; on SQLite it is inotify on the -wal.

Usage:
    python3 bench/latency-pg.py [--accounts 10000] [--samples 200] [--debounce 0,200]
                                [--drivers sqlite,postgresql] [--mapsyncd build/src/mapsyncd] [--json FILE]
Prints one line per driver and debounce: p50, p90, p99, max, mean (ms),
missed samples and the daemon's own cycle p50. Figures are recorded, not
asserted. Needs root (initdb runs as the postgres user), postgresql-15,
python3-psycopg2 and inotify-tools.
"""

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import harness  # noqa: E402
import pgcluster  # noqa: E402

_spec = importlib.util.spec_from_file_location("latency", os.path.join(HERE, "latency.py"))
latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency)


def measure(binary, driver, accounts, samples, debounce_ms, seed):
    env = harness.Env(accounts=accounts)
    cluster = daemon = watcher = conn = None
    sync = {"debounce_ms": debounce_ms, "max_delay_ms": max(2000, debounce_ms)}
    try:
        if driver == "postgresql":
            cluster = pgcluster.Cluster("bench").start()
            cluster.create_panel_db()
            cluster.copy_from_sqlite(env.db)
            cluster.sql("VACUUM ANALYZE")
            passfile = cluster.write_passfile(os.path.join(env.dir, "pgpass"))
            env.write_config(pgcluster.pg_config(env, cluster, passfile=passfile, hooks=False, sync=sync))
            conn = cluster.connect()
            cur = conn.cursor()

            def commit(q):
                cur.execute("UPDATE email_accounts SET quota = %s WHERE id = 1", (q,))
        else:
            env.write_config(hooks=False, sync=sync)
            conn = sqlite3.connect(env.db, isolation_level=None, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")

            def commit(q):
                conn.execute("UPDATE email_accounts SET quota = ? WHERE id = 1", (q,))
        daemon = latency.Mapsyncd(binary, env)
        watcher = latency.Watcher(env.out)
        rng = random.Random(seed)
        time.sleep(3)  # past the start's own cycles
        lat, missed = [], 0
        for i in range(samples):
            watcher.drain()
            commit(10000 + i)
            t0 = time.monotonic()
            t1 = watcher.wait_for("passwd", 30)
            if t1 is None:
                missed += 1
            else:
                lat.append((t1 - t0) * 1000.0)
            time.sleep(rng.uniform(0.1, 0.3))
        with open(env.output("passwd")) as f:
            final_ok = "storage=%dM" % (10000 + samples - 1) in f.read()
        daemon.stop()
        with open(os.path.join(env.dir, "mapsyncd.log")) as f:
            cycles = [int(m.group(1)) for m in re.finditer(r"(?m)^sync: 1 changed, .* in (\d+) ms$", f.read())]
        return lat, missed, final_ok, cycles
    finally:
        if conn:
            conn.close()
        if watcher:
            watcher.stop()
        if daemon:
            daemon.stop()
        if cluster:
            cluster.cleanup()
        env.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--debounce", default="0,200")
    ap.add_argument("--drivers", default="sqlite,postgresql")
    ap.add_argument("--mapsyncd", default=os.environ.get("MAPSYNCD", os.path.join(SRC, "build", "src", "mapsyncd")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()

    print("mapsyncd %s; %d accounts; %d samples; %s, %d CPUs; SQLite %s; PostgreSQL 15"
          % (a.mapsyncd, a.accounts, a.samples, platform.release(), os.cpu_count(), sqlite3.sqlite_version))
    print("load average before: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("%-11s %-12s %8s %8s %8s %8s %8s %7s %10s" % ("driver", "debounce_ms", "p50", "p90", "p99", "max", "mean",
                                                        "missed", "cycle p50"))
    out = {}
    for deb in [int(x) for x in a.debounce.split(",")]:
        for driver in a.drivers.split(","):
            lat, missed, final_ok, cycles = measure(a.mapsyncd, driver, a.accounts, a.samples, deb, a.seed)
            s = sorted(lat)
            p = latency.percentile
            print("%-11s %-12d %8.1f %8.1f %8.1f %8.1f %8.1f %7d %10.0f%s"
                  % (driver, deb, p(s, 50), p(s, 90), p(s, 99), s[-1] if s else float("nan"),
                     statistics.mean(s) if s else float("nan"), missed, p(sorted(cycles), 50),
                     "" if final_ok else "  (final map WRONG)"))
            sys.stdout.flush()
            out["%s-%d" % (driver, deb)] = {"ms": lat, "missed": missed, "final_ok": final_ok, "cycle_ms": cycles}
    print("load average after: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
