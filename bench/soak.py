#!/usr/bin/env python3
"""Soak: the watching daemon under a steady stream of commits for a long
time (default one hour), with hooks.

A writer (this process, one connection kept open, as the admin panel keeps
its own) commits 20 transactions a second on a generated database in WAL
mode: random account and alias changes, inserts balanced by deletes so the
database keeps its size. mapsyncd (the real binary, without -v) runs the
shipped configuration with its paths moved into a temporary directory, a
recorder as every map's on_change, and debounce_ms / max_delay_ms of
20 / 200 by default, so that nearly every commit gets a cycle of its own
(--debounce-ms 200 --max-delay-ms 2000 for the shipped timing).

Every --interval seconds it samples the daemon from /proc: RSS, descriptors,
CPU time (user + system), and counts the sync cycles, replaced maps and hooks
in its log. At the end the writer stops; the maps must equal an independent
rendering of the database (harness.expected_maps), every owed hook must have
run (the last run of each map's hook saw the file as it is, owed-hooks is
gone), memory (anonymous RSS: heap and stacks; and RSS) and descriptors
must be flat (last quarter vs. first quarter after warm-up) and CPU time per
cycle steady.

Usage:
    python3 bench/soak.py [--minutes 60] [--rate 20] [--accounts 2000]
                          [--interval 10] [--csv FILE] [--json FILE]
MAPSYNCD in the environment (or --mapsyncd) names the binary (default
build/src/mapsyncd). Exit status 0 when every check held. Prints a summary
and a Markdown table of the curve (one row per --table-every seconds) for
bench/README.md, section "Soak"."""

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    """(VmRSS kB, descriptors, CPU s, RssAnon kB): RSS counts file pages
    too (libraries, the mapped -shm), RssAnon the heap and stacks alone."""
    with open("/proc/%d/status" % pid) as f:
        status = {k: v for k, _, v in (line.partition(":") for line in f)}
    rss, anon = int(status["VmRSS"].split()[0]), int(status["RssAnon"].split()[0])
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(rest[11]) + int(rest[12])) / CLK_TCK
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds, cpu_s, anon


class LogCounter:
    """Reads the daemon's stderr and counts, without keeping it."""

    PATTERNS = {"cycles": re.compile(r"^sync: \d+ changed"), "replaced": re.compile(r": replaced "),
                "hooks_ok": re.compile(r": hook succeeded"), "hooks_failed": re.compile(r"^error: .*hook"),
                "errors": re.compile(r"^error: "), "warnings": re.compile(r"^warning: ")}

    def __init__(self, stream):
        self.counts = {k: 0 for k in self.PATTERNS}
        self.last_errors = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, args=(stream,), daemon=True)
        self.t.start()

    def run(self, stream):
        for line in stream:
            with self.lock:
                for k, rx in self.PATTERNS.items():
                    if rx.search(line):
                        self.counts[k] += 1
                if line.startswith(("error:", "warning:")):
                    self.last_errors = (self.last_errors + [line.rstrip()])[-20:]

    def get(self):
        with self.lock:
            return dict(self.counts)


class Writer:
    """20 commits a second (or --rate), each one transaction of 1-3 random
    changes; inserts and deletes balanced."""

    def __init__(self, db, rate, seed):
        # Used by the writer's thread only, made here for the counts below.
        self.c = sqlite3.connect(db, timeout=5, isolation_level=None, check_same_thread=False)
        self.c.execute("PRAGMA busy_timeout = 5000")
        self.rate = rate
        self.rng = random.Random(seed)
        self.n = 0
        self.stop = threading.Event()
        self.hashes = list(harness.gendb.HASH_OF.values())
        self.n_domains = self.c.execute("SELECT count(*) FROM domains").fetchone()[0]
        self.max_account = self.c.execute("SELECT max(id) FROM email_accounts").fetchone()[0]
        self.extra = []  # ids of accounts this writer inserted
        self.n_inserted = 0
        self.error = None
        self.t = threading.Thread(target=self.run, daemon=True)

    def change(self):
        rng, c = self.rng, self.c
        k = rng.randrange(8)
        aid = rng.randint(1, self.max_account)
        if k == 0:
            c.execute("UPDATE email_accounts SET quota = ? WHERE id = ?", (rng.choice((0, 512, 1024, 2048, 4096)), aid))
        elif k == 1:
            c.execute("UPDATE email_accounts SET active = 1 - active WHERE id = ?", (aid,))
        elif k == 2:
            c.execute("UPDATE email_accounts SET password = ? WHERE id = ?", (rng.choice(self.hashes), aid))
        elif k == 3:
            c.execute("UPDATE aliases SET active = 1 - active WHERE id = ?", (rng.randint(1, self.max_account),))
        elif k == 4:
            c.execute("UPDATE aliases SET destination = ? WHERE id = ?",
                      ("soak%d@external.example" % rng.randrange(100000), rng.randint(1, self.max_account)))
        elif k in (5, 6) and len(self.extra) < 200:
            dom = rng.randint(1, self.n_domains)
            self.n_inserted += 1
            local = "soak%07d" % self.n_inserted
            cur = c.execute("INSERT INTO email_accounts (domain_id, email, username, password, quota) "
                            "VALUES (?, ?, ?, ?, 1024)", (dom, "%s@d%04d.example" % (local, dom), local,
                                                          rng.choice(self.hashes)))
            self.extra.append(cur.lastrowid)
        elif self.extra:
            c.execute("DELETE FROM email_accounts WHERE id = ?", (self.extra.pop(rng.randrange(len(self.extra))),))
        else:
            c.execute("UPDATE email_accounts SET quota = quota + 1 WHERE id = ?", (aid,))

    def run(self):
        t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                due = t0 + self.n / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.c.execute("BEGIN IMMEDIATE")
                for _ in range(self.rng.randint(1, 3)):
                    self.change()
                self.c.execute("COMMIT")
                self.n += 1
        except Exception as e:  # reported by the main thread
            self.error = e


def quarter_stats(values):
    n = len(values)
    q = max(1, n // 4)
    first, last = values[:q], values[-q:]
    return sum(first) / len(first), sum(last) / len(last)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--rate", type=float, default=20, help="commits per second")
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--interval", type=float, default=10, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60, help="seconds left out of the flatness checks")
    p.add_argument("--debounce-ms", type=int, default=20)
    p.add_argument("--max-delay-ms", type=int, default=200)
    p.add_argument("--mapsyncd", default=os.environ.get("MAPSYNCD", os.path.join(SRC, "build", "src", "mapsyncd")))
    p.add_argument("--csv", help="write the samples here")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--table-every", type=float, default=300, help="seconds between rows of the printed table")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    harness.MAPSYNCD = a.mapsyncd
    env = harness.Env(accounts=a.accounts, seed=a.seed)
    env.write_config(sync={"debounce_ms": a.debounce_ms, "max_delay_ms": a.max_delay_ms})
    e = dict(os.environ)
    for v in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
        e.pop(v, None)
    proc = subprocess.Popen([a.mapsyncd, "-c", env.conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=e)
    counter = LogCounter(proc.stderr)
    ok = True
    problems = []
    samples = []
    try:
        harness.wait_for(lambda: counter.get()["cycles"] >= 1 or proc.poll() is not None, 60, what="the first cycle")
        if proc.poll() is not None:
            raise SystemExit("mapsyncd exited with %s" % proc.returncode)
        time.sleep(1)  # the first cycle's hooks
        fds_idle_before = proc_sample(proc.pid)[1]
        writer = Writer(env.db, a.rate, a.seed)
        t0 = time.monotonic()
        writer.t.start()
        end = t0 + a.minutes * 60
        next_sample = t0
        print("soak: %.0f min, %.0f commits/s, %d accounts, debounce %d ms, max_delay %d ms, binary %s"
              % (a.minutes, a.rate, a.accounts, a.debounce_ms, a.max_delay_ms, a.mapsyncd), flush=True)
        while True:
            now = time.monotonic()
            if now >= next_sample:
                rss, fds, cpu, anon = proc_sample(proc.pid)
                c = counter.get()
                samples.append({"t": round(now - t0, 1), "rss_kb": rss, "anon_kb": anon, "fds": fds, "cpu_s": cpu,
                                "commits": writer.n, **c})
                s = samples[-1]
                if len(samples) % max(1, int(60 / a.interval)) == 1:
                    print("  t=%6.0f s rss %6d kB anon %6d kB fds %3d cpu %7.2f s cycles %7d commits %7d hooks %7d "
                          "errors %d" % (s["t"], rss, anon, fds, cpu, s["cycles"], s["commits"], s["hooks_ok"],
                                         s["errors"]),
                          flush=True)
                next_sample += a.interval
            if now >= end or proc.poll() is not None or writer.error:
                break
            time.sleep(min(1.0, max(0.0, min(next_sample, end) - time.monotonic())))
        writer.stop.set()
        writer.t.join(30)
        if writer.error:
            problems.append("writer failed: %r" % writer.error)
        if proc.poll() is not None:
            problems.append("mapsyncd exited with %s" % proc.returncode)
        t_stop = time.monotonic()

        # No missed change: the maps equal the database ...
        def maps_ok():
            want = harness.expected_maps(env.db)
            return all(harness.read(env.output(m)) == want[m] for m in harness.MAPS)
        try:
            harness.wait_for(maps_ok, 60, interval=0.1, what="the maps to equal the database")
            caught_up = time.monotonic() - t_stop
        except AssertionError as ex:
            problems.append(str(ex))
            caught_up = None
        # ... and every owed hook ran.
        state = os.path.join(env.state, "owed-hooks")

        def hooks_ok():
            last = {}
            with open(env.hook_log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3:
                        last[parts[0]] = parts[1]
            import hashlib
            return not os.path.exists(state) and all(
                last.get(m) == hashlib.sha256(harness.read(env.output(m), "rb")).hexdigest() for m in harness.MAPS)
        try:
            harness.wait_for(hooks_ok, 60, interval=0.1, what="every owed hook to run")
        except AssertionError as ex:
            problems.append(str(ex))
        time.sleep(1)
        final = proc_sample(proc.pid)
        counts = counter.get()
        n_hook_lines = sum(1 for _ in open(env.hook_log))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        else:
            code = proc.returncode
        counter.t.join(5)
        env.cleanup()
    if code != 0:
        problems.append("mapsyncd exited with %s at SIGTERM" % code)

    # Flatness after warm-up: the last quarter against the first.
    steady = [s for s in samples if s["t"] >= a.warmup] or samples
    rss_first, rss_last = quarter_stats([s["rss_kb"] for s in steady])
    anon_first, anon_last = quarter_stats([s["anon_kb"] for s in steady])
    fds = [s["fds"] for s in steady]
    per_cycle = []
    for prev, cur in zip(steady, steady[1:]):
        dc = cur["cycles"] - prev["cycles"]
        if dc > 0:
            per_cycle.append((cur["cpu_s"] - prev["cpu_s"]) * 1000 / dc)
    cpu_first, cpu_last = quarter_stats(per_cycle) if per_cycle else (0, 0)
    duration = samples[-1]["t"] if samples else 0
    summary = {
        "minutes": round(duration / 60, 1), "rate": a.rate, "accounts": a.accounts,
        "debounce_ms": a.debounce_ms, "max_delay_ms": a.max_delay_ms,
        "commits": samples[-1]["commits"] if samples else 0, "cycles": counts["cycles"],
        "maps_replaced": counts["replaced"], "hooks_succeeded": counts["hooks_ok"], "hook_lines": n_hook_lines,
        "errors": counts["errors"], "warnings": counts["warnings"],
        "rss_kb": {"start": steady[0]["rss_kb"] if steady else None, "min": min(s["rss_kb"] for s in steady),
                   "max": max(s["rss_kb"] for s in steady), "first_quarter": round(rss_first),
                   "last_quarter": round(rss_last), "end": final[0]},
        "anon_kb": {"min": min(s["anon_kb"] for s in steady), "max": max(s["anon_kb"] for s in steady),
                    "first_quarter": round(anon_first), "last_quarter": round(anon_last), "end": final[3]},
        "fds": {"idle_before": fds_idle_before, "idle_after": final[1], "min": min(fds), "max": max(fds),
                "floor_first_quarter": min(fds[:max(1, len(fds) // 4)]),
                "floor_last_quarter": min(fds[-max(1, len(fds) // 4):])},
        "cpu_ms_per_cycle": {"first_quarter": round(cpu_first, 3), "last_quarter": round(cpu_last, 3),
                             "min": round(min(per_cycle), 3) if per_cycle else None,
                             "max": round(max(per_cycle), 3) if per_cycle else None},
        "cpu_s_total": final[2], "caught_up_s": round(caught_up, 2) if caught_up is not None else None,
        "last_errors": counter.last_errors,
    }
    # The checks.
    if anon_last > anon_first * 1.05 + 256:
        problems.append("anonymous RSS grew: %.0f kB -> %.0f kB" % (anon_first, anon_last))
    if rss_last > rss_first * 1.10 + 1024:
        problems.append("RSS grew: %.0f kB -> %.0f kB" % (rss_first, rss_last))
    # Mid-cycle samples see the cycle's own descriptors (current and
    # temporary files, a hook's pipe): compare the daemon at rest, and the
    # floor of the samples.
    if final[1] != fds_idle_before:
        problems.append("descriptors at rest: %d before, %d after" % (fds_idle_before, final[1]))
    if summary["fds"]["floor_last_quarter"] > summary["fds"]["floor_first_quarter"]:
        problems.append("descriptor floor rose: %d -> %d" % (summary["fds"]["floor_first_quarter"],
                                                            summary["fds"]["floor_last_quarter"]))
    if per_cycle and cpu_last > cpu_first * 1.5 + 0.2:
        problems.append("CPU time per cycle grew: %.3f ms -> %.3f ms" % (cpu_first, cpu_last))
    if counts["errors"]:
        problems.append("%d error records, the last: %s" % (counts["errors"], counter.last_errors[-3:]))
    summary["problems"] = problems
    ok = not problems

    if a.csv:
        with open(a.csv, "w") as f:
            cols = ["t", "rss_kb", "anon_kb", "fds", "cpu_s", "commits", "cycles", "replaced", "hooks_ok", "errors"]
            f.write(",".join(cols) + "\n")
            for s in samples:
                f.write(",".join(str(s[c]) for c in cols) + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "samples": samples}, f, indent=1)

    print(json.dumps(summary, indent=1))
    print()
    print("| t (min) | RSS (kB) | anon (kB) | fds | CPU (s) | commits | cycles | hooks | CPU ms/cycle since previous row |")
    print("|---|---|---|---|---|---|---|---|---|")
    prev = None
    for s in samples:
        if prev is not None and s["t"] - prev["t"] < a.table_every - a.interval / 2 and s is not samples[-1]:
            continue
        ms = ("%.2f" % ((s["cpu_s"] - prev["cpu_s"]) * 1000 / (s["cycles"] - prev["cycles"]))
              if prev and s["cycles"] > prev["cycles"] else "")
        print("| %.0f | %d | %d | %d | %.1f | %d | %d | %d | %s |"
              % (s["t"] / 60, s["rss_kb"], s["anon_kb"], s["fds"], s["cpu_s"], s["commits"], s["cycles"],
                 s["hooks_ok"], ms))
        prev = s
    print()
    print("soak %s" % ("passed" if ok else "FAILED: " + "; ".join(problems)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
