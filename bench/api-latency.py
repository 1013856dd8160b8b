#!/usr/bin/env python3
"""Latency of POST /v1/sync right after a commit (issue 13): the admin
panel's "save, then ask: is it live?". The daemon runs conf/mapsyncd.conf
with its paths moved into a temporary folder, an [api] socket, a 3 s
debounce (so only the API's forced cycle can answer quickly) and, per
map, the harness's recorder hook (one /bin/sh per changed map); the
database is tools/gendb.py's at --accounts accounts. Each try commits one
change (an account's quota: the passwd map changes) in a writer that
keeps its connection, then times POST /v1/sync on a fresh connection
until its answer (cycle + hooks) arrives.

    MAPSYNCD=build/src/mapsyncd bench/api-latency.py [--accounts 10000] [--tries 200]

Prints p50/p90/p99/max in milliseconds; --json FILE also writes them.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402
from apilib import api_section, request  # noqa: E402


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10000)
    ap.add_argument("--tries", type=int, default=200)
    ap.add_argument("--no-hooks", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    env = harness.Env(accounts=args.accounts)
    sock = os.path.join(env.dir, "api.sock")
    env.write_config(env.shipped_config(hooks=not args.no_hooks,
                                        sync={"debounce_ms": 3000, "max_delay_ms": 6000})
                     + api_section(sock))
    d = harness.Daemon(env)
    try:
        d.wait_ready(120)
        w = harness.Writer(env.db)
        total, commit = [], []
        for i in range(args.tries):
            t0, t1 = w.execute(("UPDATE email_accounts SET quota = ? WHERE id = 1", (50000 + i,)))
            a = request(sock, "POST", "/v1/sync")
            t2 = time.monotonic()
            if a.status != 200 or "storage=%dM" % (50000 + i) not in harness.read(env.output("passwd")):
                raise SystemExit("try %d: %r" % (i, a))
            total.append((t2 - t1) * 1000)
            commit.append((t1 - t0) * 1000)
        w.close()
        res = {"accounts": args.accounts, "tries": args.tries, "hooks": not args.no_hooks,
               "p50_ms": pct(total, 50), "p90_ms": pct(total, 90), "p99_ms": pct(total, 99),
               "min_ms": min(total), "max_ms": max(total), "mean_ms": statistics.mean(total),
               "commit_p50_ms": pct(commit, 50),
               "loadavg": open("/proc/loadavg").read().split()[:3]}
        print("POST /v1/sync after a commit, %d accounts, %d tries, hooks %s: p50 %.1f ms, p90 %.1f ms, "
              "p99 %.1f ms, min %.1f, max %.1f (commit itself p50 %.2f ms; load %s)"
              % (args.accounts, args.tries, "on" if res["hooks"] else "off", res["p50_ms"], res["p90_ms"],
                 res["p99_ms"], res["min_ms"], res["max_ms"], res["commit_p50_ms"], " ".join(res["loadavg"])))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        d.stop()
        env.cleanup()


if __name__ == "__main__":
    main()
