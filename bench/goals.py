#!/usr/bin/env python3
"""The figures of issue 15's goals, side by side in one run.

    nice python3 bench/goals.py [--sizes 10000,100000,1000000] [--rounds 5]
                                [--json bench/results/goals.json]

Builds a release mapsyncd and bench/floor from this tree (bench/work/build)
and, for comparison, mapsyncd as it was before issue 15 (commit
BEFORE_COMMIT, bench/work/build-before); generates the databases with
tools/gendb.py (bench/work/db/accounts-N.sqlite, as many alias rows as
accounts); then per size, in rounds that run every tool one after the
other on its own copy of the database:

- mapsyncd --once into an empty directory (a full write: render, hash,
  write, fsync, rename), and --once again (nothing changed: render, hash,
  compare);
- mapsyncd before issue 15, the same two;
- the floor (bench/floor.c: the four queries of conf/mapsyncd.conf stepped
  in one process, rows read and discarded), and the floor with the sorting
  wrapper (--sorted), and in key order through the index without a sort
  (--key-order: the streaming wrapper, the least an ordered export pays);
- the seed's export (bench/seed-export.sh), plain and durable.

Wall time per run; the median of the rounds is reported. (The peak_rss_kib
that wait4() reports is not mapsyncd's: it counts the Python process
forked before exec; bench/README.md gives /usr/bin/time's figures.) Then, with the watching daemon:

- cycle times at each size: a full cycle (SIGUSR1) against the cycle after
  a commit that changes one alias (UPDATE aliases SET destination), from
  the daemon's own "sync: ... in N ms", medians of --cycles samples;
- idle: voluntary and involuntary context switches of the daemon over 30 s
  without commits (at the smallest size).

The p99 commit-to-map latency is bench/latency.py's (run separately, see
bench/README.md)."""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
BEFORE_COMMIT = "80915b3"  # main before issue 15


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def build():
    b = os.path.join(WORK, "build")
    if not os.path.exists(os.path.join(b, "build.ninja")):
        subprocess.run(["meson", "setup", b, ROOT, "--buildtype=release", "-Dtests=false", "-Dman=false",
                        "-Dsystemd_units=false", "-Dbench=true"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", b], check=True, stdout=subprocess.DEVNULL)
    before_src = os.path.join(WORK, "src-before")
    before = os.path.join(WORK, "build-before")
    if not os.path.exists(before_src):
        # A plain copy of the tree (no worktree: nothing changes in .git).
        os.makedirs(before_src)
        subprocess.run("git -C '%s' archive %s | tar -x -C '%s'" % (ROOT, BEFORE_COMMIT, before_src), shell=True,
                       check=True)
    if not os.path.exists(os.path.join(before, "build.ninja")):
        subprocess.run(["meson", "setup", before, before_src, "--buildtype=release", "-Dtests=false", "-Dman=false",
                        "-Dsystemd_units=false"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", before], check=True, stdout=subprocess.DEVNULL)
    return (os.path.join(b, "src", "mapsyncd"), os.path.join(before, "src", "mapsyncd"),
            os.path.join(b, "bench", "floor"))


def database(n):
    path = os.path.join(WORK, "db", "accounts-%d.sqlite" % n)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log("generating %s" % path)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gendb.py"), "--accounts", str(n), path],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def copy_db(src, dst):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(dst + suffix):
            os.unlink(dst + suffix)
    shutil.copyfile(src, dst)


def config(db, out, extra_sync="", root=ROOT):
    text = open(os.path.join(root, "conf", "mapsyncd.conf")).read()
    text = text.replace("/var/lib/mailadmin/database.sqlite", db)
    text = text.replace("/var/lib/mapsyncd", os.path.join(out, "state"))
    text = re.sub(r"/etc/(postfix|dovecot)/", out + "/", text)
    text = re.sub(r"(?m)^(owner|group|on_change) = .*\n", "", text)
    for line in extra_sync.splitlines():
        key = line.split("=")[0].strip()
        text = re.sub(r"(?m)^%s = .*$" % key, line, text)
    path = os.path.join(out, "mapsyncd.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "state"))
    return path


def run(cmd):
    """Wall seconds and peak RSS (KiB) of cmd."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    t = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("%s failed: %s" % (cmd, err[-2000:]))
    return t, ru.ru_maxrss


def regen(n, rounds, mapsyncd, before, floor):
    src = database(n)
    d = fresh(os.path.join(WORK, "goals", str(n)))
    db = os.path.join(d, "db.sqlite")
    copy_db(src, db)
    times = {}
    rss = {}

    def add(name, t, r=None):
        times.setdefault(name, []).append(t)
        if r is not None:
            rss[name] = max(rss.get(name, 0), r)

    for rnd in range(rounds):
        for name, binary in (("mapsyncd", mapsyncd), ("before", before)):
            out = fresh(os.path.join(d, "out-" + name))
            # Each with its own shipped configuration (the same maps).
            conf = config(db, out, root=ROOT if name == "mapsyncd" else os.path.join(WORK, "src-before"))
            t, r = run([binary, "-c", conf, "--once"])
            add(name + " full", t, r)
            t, r = run([binary, "-c", conf, "--once"])
            add(name + " unchanged", t, r)
        out = fresh(os.path.join(d, "out-floor"))
        conf = config(db, out)
        add("floor", run([floor, conf])[0])
        add("floor sorted", run([floor, "--sorted", conf])[0])
        add("floor key order", run([floor, "--key-order", conf])[0])
        for durable in (False, True):
            out = fresh(os.path.join(d, "out-seed"))
            cmd = [os.path.join(ROOT, "bench", "seed-export.sh")] + (["--durable"] if durable else []) + [db, out]
            add("seed durable" if durable else "seed", run(cmd)[0])
        log("  %d accounts, round %d: %s" % (n, rnd + 1, ", ".join(
            "%s %.3f" % (k, v[-1]) for k, v in times.items())))
    # The files of mapsyncd before and after are the same bytes.
    for m in ("virtual_domains", "vmailbox", "virtual_aliases", "passwd"):
        a = open(os.path.join(d, "out-mapsyncd", m), "rb").read()
        b = open(os.path.join(d, "out-before", m), "rb").read()
        if a != b:
            raise SystemExit("%s differs between mapsyncd and mapsyncd before issue 15 at %d" % (m, n))
    return {k: statistics.median(v) for k, v in times.items()}, {k: v // 1 for k, v in rss.items()}, \
        {k: v for k, v in times.items()}


class Daemon:
    def __init__(self, binary, conf):
        self.proc = subprocess.Popen([binary, "-c", conf, "-v"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        os.set_blocking(self.proc.stderr.fileno(), False)

    def read(self):
        while True:
            chunk = self.proc.stderr.readline()
            if not chunk:
                return
            self.lines.append(chunk.rstrip("\n"))

    def wait(self, pattern, count, timeout):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.read()
                raise SystemExit("mapsyncd exited: %s" % "\n".join(self.lines[-20:]))
            self.read()
            if sum(1 for line in self.lines if rx.search(line)) >= count:
                return
            time.sleep(0.01)
        raise SystemExit("timed out waiting for %r; log tail:\n%s" % (pattern, "\n".join(self.lines[-20:])))

    def count(self, pattern):
        self.read()
        rx = re.compile(pattern)
        return sum(1 for line in self.lines if rx.search(line))

    def last_ms(self):
        for line in reversed(self.lines):
            m = re.search(r"sync: .* in (\d+) ms", line)
            if m:
                return int(m.group(1))
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


SYNC = r"sync: \d+ changed"


def cycles(n, samples, mapsyncd):
    src = database(n)
    d = fresh(os.path.join(WORK, "goals", "cycles-%d" % n))
    db = os.path.join(d, "db.sqlite")
    copy_db(src, db)
    conf = config(db, d, "debounce_ms = 0\n")
    dm = Daemon(mapsyncd, conf)
    dm.wait(SYNC, 1, 600)
    w = sqlite3.connect(db, isolation_level=None)
    w.execute("PRAGMA synchronous = NORMAL")
    full, one, planned = [], [], []
    k = 1
    try:
        def commit(sql, *params):
            c = dm.count(SYNC)
            w.execute(sql, params)
            dm.wait(SYNC, c + 1, 600)
            time.sleep(0.2)

        # The first commit after start resets the WAL: a full cycle.
        commit("UPDATE aliases SET destination = 'warm@external.example' WHERE id = 1")
        for i in range(samples):
            c = dm.count(SYNC)
            dm.proc.send_signal(signal.SIGUSR1)
            dm.wait(SYNC, c + 1, 600)
            full.append(dm.last_ms())
            time.sleep(0.2)
            k += 1
            commit("UPDATE aliases SET destination = ? WHERE id = ?", "x%d@external.example" % i, 1 + 37 * k)
            one.append(dm.last_ms())
            m = [re.search(r"rendering (\d+) of \d+ maps: .*\((\d+) ms\)", line) for line in dm.lines]
            m = [x for x in m if x][-1]
            planned.append((int(m.group(1)), int(m.group(2))))
        idle = None
        if n == min(ARGS.sizes):
            time.sleep(2)
            before = proc_switches(dm.proc.pid)
            time.sleep(30)
            after = proc_switches(dm.proc.pid)
            idle = {"seconds": 30, "voluntary": after[0] - before[0], "involuntary": after[1] - before[1]}
        hwm = proc_hwm(dm.proc.pid)
    finally:
        w.close()
        dm.stop()
    return {"full_ms": full, "one_alias_ms": one, "one_alias_planned": planned,
            "full_median_ms": statistics.median(full), "one_alias_median_ms": statistics.median(one),
            "idle": idle, "daemon_vmhwm_kib": hwm}


def proc_switches(pid):
    v = nv = 0
    for line in open("/proc/%d/status" % pid):
        if line.startswith("voluntary_ctxt_switches"):
            v = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches"):
            nv = int(line.split()[1])
    return v, nv


def proc_hwm(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return None


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "goals.json"))
    ARGS = ap.parse_args()
    ARGS.sizes = [int(x) for x in ARGS.sizes.split(",")]
    mapsyncd, before, floor = build()
    res = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg(),
           "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(), "sizes": {}}
    for n in ARGS.sizes:
        log("regeneration at %d accounts" % n)
        rounds = ARGS.rounds if n < 1000000 else max(3, ARGS.rounds // 2)
        med, rss, allt = regen(n, rounds, mapsyncd, before, floor)
        log("cycles at %d accounts" % n)
        cyc = cycles(n, ARGS.cycles if n < 1000000 else 3, mapsyncd)
        res["sizes"][str(n)] = {"median_s": med, "peak_rss_kib": rss, "runs_s": allt, "cycles": cyc,
                                "rounds": rounds}
        with open(ARGS.json, "w") as f:
            json.dump(res, f, indent=1)
    res["load_after"] = os.getloadavg()
    res["ended"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(ARGS.json, "w") as f:
        json.dump(res, f, indent=1)
    log("written %s" % ARGS.json)


if __name__ == "__main__":
    main()
