#!/usr/bin/env python3
"""Commit-to-file latency of the watching daemon.

For each debounce_ms given, runs mapsyncd (the real binary, no -v) on a
generated admin-panel database in WAL mode and measures, over N samples,
the time from a writer's COMMIT returning to the new map being in place:
the writer (this process, one connection kept open, as the admin panel
keeps its own) commits an UPDATE that changes one map only (--map):
virtual_aliases (one alias row's destination; the default) or passwd (one
account's quota); `inotifywait -m -e moved_to` (inotify-tools) on the
output directory reports the rename that puts the new map in place, and a
thread of this process timestamps each reported line as it arrives. Both
times are CLOCK_MONOTONIC. Each sample covers a whole cycle: notice,
debounce, the change check, deciding which maps to render, rendering them
from one snapshot, write, fsync, rename. No hooks run (on_change removed).

passwd is Dovecot's passwd-file, which mapsyncd replaces at most once per
wall-clock second (Dovecot compares mtimes in whole seconds): with commits
about a second apart, each new passwd waits for the next second, and its
latency shows that rule (up to 1 s more), not the detection.

Between samples the writer waits a random 100-300 ms after the rename, so
that each commit starts from a daemon at rest, not in the middle of a burst.

The last column is the median of the daemon's own "sync: ... in N ms"
figure for those cycles (render all four maps, write, fsync, rename), so
what is left of the latency is the notice, debounce and scheduling.

Usage:
    python3 bench/latency.py [--accounts 10000] [--samples 200] [--debounce 0,200]
                             [--map virtual_aliases|passwd] [--mapsyncd build/src/mapsyncd] [--json FILE]
MAPSYNCD in the environment also names the binary. Needs python3, the
sqlite3 module and inotifywait. Prints one line per debounce: p50, p90,
p99, max and mean in ms. Figures are recorded, not asserted.
"""

import argparse
import json
import os
import platform
import queue
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import harness  # noqa: E402  (Env: generated database + shipped config with moved paths)


def percentile(sorted_values, p):
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


class Watcher:
    """inotifywait -m on a directory; .events is a queue of (monotonic, name)
    for every file moved into it."""

    def __init__(self, directory):
        self.proc = subprocess.Popen(["inotifywait", "-m", "-e", "moved_to", "--format", "%f", directory],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        # Without -q it says so on stderr once the watch is in place.
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("inotifywait exited before watching %s" % directory)
            if "Watches established" in line:
                break
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), line.rstrip("\n")))

    def drain(self):
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def wait_for(self, name, timeout):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                t, n = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if n == name:
                return t

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Mapsyncd:
    """The daemon with a private NOTIFY_SOCKET; waits for READY=1."""

    def __init__(self, binary, env):
        self.sock_path = os.path.join(env.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        e = dict(os.environ)
        for v in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
            e.pop(v, None)
        e["NOTIFY_SOCKET"] = self.sock_path
        self.log = open(os.path.join(env.dir, "mapsyncd.log"), "w")
        self.proc = subprocess.Popen([binary, "-c", env.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=e)
        self.sock.settimeout(1)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                if self.proc.poll() is not None:
                    break
                continue
            if "READY=1" in msg.split("\n"):
                # Keep reading: sd_notify() blocks once the socket's queue
                # is full, and mapsyncd sends STATUS= after every cycle.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise RuntimeError("mapsyncd did not become ready; see %s" % self.log.name)

    def _drain(self):
        while True:
            try:
                self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.sock.close()
            self.log.close()
        return self.proc.returncode


CHANGES = {
    # map: (statement with the sample number as ?, text the final map holds after sample n)
    "virtual_aliases": ("UPDATE aliases SET destination = 'latency' || ? || '@d0001.example' WHERE id = "
                        "(SELECT min(id) FROM aliases WHERE source = '%s')" % harness.gendb.MULTI_ALIAS,
                        lambda n: "latency%d@d0001.example" % n),
    "passwd": ("UPDATE email_accounts SET quota = 10000 + ? WHERE id = 1", lambda n: "storage=%dM" % (10000 + n)),
}


def measure(binary, accounts, samples, debounce_ms, seed, map_name):
    env = harness.Env(accounts=accounts)
    daemon = watcher = conn = None
    try:
        env.write_config(hooks=False, sync={"debounce_ms": debounce_ms,
                                            "max_delay_ms": max(2000, debounce_ms)})
        daemon = Mapsyncd(binary, env)
        watcher = Watcher(env.out)
        conn = sqlite3.connect(env.db, isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rng = random.Random(seed)
        time.sleep(3)  # past the start's own events and rechecks
        lat, missed = [], 0
        for i in range(samples):
            watcher.drain()
            conn.execute(CHANGES[map_name][0], (i,))
            t0 = time.monotonic()  # COMMIT returned (autocommit statement)
            t1 = watcher.wait_for(map_name, 30)
            if t1 is None:
                missed += 1
            else:
                lat.append((t1 - t0) * 1000.0)
            time.sleep(rng.uniform(0.1, 0.3))
        with open(env.output(map_name)) as f:
            final_ok = CHANGES[map_name][1](samples - 1) in f.read()
        daemon.stop()
        # The daemon's own figure for each cycle that replaced the map.
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
        env.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--debounce", default="0,200", help="comma-separated debounce_ms values")
    ap.add_argument("--mapsyncd", default=os.environ.get("MAPSYNCD", os.path.join(SRC, "build", "src", "mapsyncd")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--map", choices=sorted(CHANGES), default="virtual_aliases", help="the map each commit changes")
    ap.add_argument("--json", help="also write the samples here")
    a = ap.parse_args()

    print("mapsyncd %s; %d accounts; %s changed by each commit; %d samples per debounce; %s, %d CPUs, SQLite %s"
          % (a.mapsyncd, a.accounts, a.map, a.samples, platform.release(), os.cpu_count(), sqlite3.sqlite_version))
    print("load average before: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("%-12s %8s %8s %8s %8s %8s %7s %10s" % ("debounce_ms", "p50", "p90", "p99", "max", "mean", "missed",
                                                  "cycle p50"))
    out = {}
    for deb in [int(x) for x in a.debounce.split(",")]:
        lat, missed, final_ok, cycles = measure(a.mapsyncd, a.accounts, a.samples, deb, a.seed, a.map)
        s = sorted(lat)
        print("%-12d %8.1f %8.1f %8.1f %8.1f %8.1f %7d %10.0f%s"
              % (deb, percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1] if s else float("nan"),
                 statistics.mean(s) if s else float("nan"), missed, percentile(sorted(cycles), 50),
                 "" if final_ok else "  (final map WRONG)"))
        sys.stdout.flush()
        out[deb] = {"ms": lat, "missed": missed, "final_ok": final_ok, "cycle_ms": cycles}
    print("load average after: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
