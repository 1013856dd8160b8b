#!/usr/bin/env python3
"""mapsyncd against its alternatives (issue 6), measured side by side.

Peers, on the same generated databases (tools/gendb.py):
  (a)  bench/sync-config.sh: the seed's cron script, sqlite3 CLI -> map files,
       as is, and durable (--durable: `sync FILE...` after writing);
  (b)  bench/inotify-loop.sh: `inotifywait -m` on the database's directory,
       running (a) on every event;
  floor: the same four queries as (a), sqlite3 CLI into /dev/null.

Parts (each can be chosen with --parts):
  regen    mapsyncd --once (full write into an empty dir; one row changed;
           nothing changed) vs (a) vs durable (a) vs floor: wall, CPU, peak RSS,
           bytes written, at every size.
  noop     daemon: a commit that changes no map (UPDATE of updated_at):
           cycle time, bytes written, hooks run; mapsyncd vs (b).
  latency  commit-to-file p50/p99, mapsyncd debounce 0 and 200 ms, and (b).
  burst    10,000 commits in 10 s: cycles, hook runs, CPU, final maps equal
           to the database? mapsyncd vs (b).
  idle     CPU time and wakeups over 60 s, mapsyncd and (b).

Results: JSON (--json) read by bench/report.py, which writes the tables and
the gnuplot data. Run through bench/run.sh.
"""

import argparse
import atexit
import ctypes
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.dont_write_bytecode = True
import gendb  # noqa: E402

MAPS = ("virtual_domains", "vmailbox", "virtual_aliases", "passwd")
SYNC = os.path.join(HERE, "sync-config.sh")
LOOP = os.path.join(HERE, "inotify-loop.sh")


STARTED = []  # process groups to end if the run stops half-way


@atexit.register
def _cleanup():
    for p in STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def database(work, n):
    """The generated database for n accounts (made once, then copied)."""
    path = os.path.join(work, "db", f"a{n}.sqlite")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log(f"generating {path}")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gendb.py"), "--accounts", str(n),
                        "--force", path], check=True, stdout=subprocess.DEVNULL)
    return path


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def copy_db(src, dstdir):
    """A private copy of a database in its own directory (peer (b) watches
    the whole directory)."""
    fresh_dir(dstdir)
    dst = os.path.join(dstdir, "database.sqlite")
    for suffix in ("", "-wal"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)
    return dst


def make_config(path, db, outdir, statedir, on_change="true", debounce_ms=None):
    """conf/mapsyncd.conf with its paths moved, owners left to the caller,
    on_change replaced."""
    lines = []
    with open(os.path.join(ROOT, "conf", "mapsyncd.conf")) as f:
        for line in f.read().splitlines():
            s = line.strip()
            if re.match(r"^(owner|group)\s*=", s):
                continue
            line = re.sub(r"^path = .*", f"path = {db}", line)
            line = re.sub(r"^state_dir = .*", f"state_dir = {statedir}", line)
            line = re.sub(r"^output = /etc/\w+/(\w+)", rf"output = {outdir}/\1", line)
            line = re.sub(r"^on_change = .*", f"on_change = {on_change}", line)
            if debounce_ms is not None:
                line = re.sub(r"^debounce_ms = .*", f"debounce_ms = {debounce_ms}", line)
            lines.append(line)
    os.makedirs(statedir, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def run_measured(argv, env=None):
    """Runs argv to its end: wall s, CPU s (user+sys, with descendants),
    peak RSS KiB (largest process), bytes written (write_bytes)."""
    # Peak RSS through /usr/bin/time: a child forked by Python inherits
    # Python's RSS high-water mark across exec, one forked by time(1) does
    # not. Wall and CPU are from wait4 here (time's own share is tiny).
    # Bytes written: a shell that runs argv reads its own /proc/PID/io,
    # which by then holds its reaped child's counts too.
    rss = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-rss.{os.getpid()}")
    iof = rss + ".io"
    wrap = ['sh', '-c', '"$@"; s=$?; cat /proc/$$/io >"$IOF"; exit $s', "sh"]
    env = dict(env or os.environ, IOF=iof)
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss] + wrap + argv, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} exited {p.returncode}: {err}")
    with open(rss) as f:
        maxrss = int(f.read().split()[-1])
    io = {}
    with open(iof) as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    os.unlink(rss)
    os.unlink(iof)
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_kib": maxrss,
            "write_bytes": io["write_bytes"] - io["cancelled_write_bytes"],
            "temp_bytes": io["cancelled_write_bytes"]}


def stats(values):
    v = sorted(values)
    return {"min": v[0], "median": statistics.median(v), "max": v[-1], "n": len(v)}


def maps_equal(a, b):
    for m in MAPS:
        try:
            with open(os.path.join(a, m), "rb") as x, open(os.path.join(b, m), "rb") as y:
                if x.read() != y.read():
                    return False
        except FileNotFoundError:
            return False
    return True


def reference_maps(db, outdir):
    """The maps the database should give now, by (a) into a fresh dir."""
    fresh_dir(outdir)
    subprocess.run([SYNC, db, outdir], check=True)
    return outdir


# ---------------------------------------------------------------- /proc

def proc_cpu(pid):
    """utime+stime (s) of pid, with its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tck


def proc_switches(pid):
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
    return n


def proc_write_bytes(pid):
    """write_bytes - cancelled_write_bytes: bytes this process (and its
    reaped children) dirtied in the page cache and did not delete again
    before writeback (SQLite's unlinked temporary files are cancelled)."""
    io = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    return io["write_bytes"] - io["cancelled_write_bytes"]


def usage(pids):
    """CPU s (with reaped children) and write_bytes (with reaped children)
    summed over pids."""
    cpu = wb = 0
    for p in pids:
        try:
            cpu += proc_cpu(p)
            wb += proc_write_bytes(p)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return cpu, wb


def pipe_backlog(pid, fd=0):
    """Bytes not yet read from the pipe on pid's fd (FIONREAD)."""
    import fcntl
    import termios
    try:
        f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buf = fcntl.ioctl(f, termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    finally:
        os.close(f)


def session_pids(sid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                out.append(int(d))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


# ---------------------------------------------------------------- inotify

class Inotify:
    IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80

    def __init__(self, path, mask=IN_CLOSE_WRITE | IN_MOVED_TO):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, path.encode(), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self.pending = []

    def read(self, timeout):
        """Events [(time, name)] within timeout s (the first one waited
        for; then whatever is queued)."""
        if not select.select([self.fd], [], [], max(0, timeout))[0]:
            return []
        t = time.monotonic()
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i < len(buf):
            _, mask, _, n = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode()
            out.append((t, name))
            i += 16 + n
        return out

    def quiet(self, seconds, timeout=120):
        """Waits until no event for `seconds` (at most timeout)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.read(seconds):
                return True
        return False

    def close(self):
        os.close(self.fd)


# ---------------------------------------------------------------- daemons

class Mapsyncd:
    """The daemon, its stderr read through a pipe (so that its log costs no
    write_bytes; in production it goes to the journal)."""

    def __init__(self, binary, conf, logpath):
        self.logpath = logpath
        self.lines = []
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
        self.p = subprocess.Popen([binary, "-c", conf, "-v"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=env, start_new_session=True)
        STARTED.append(self.p)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_log(r"ready: watching", 300)

    def _read(self):
        with open(self.logpath, "w") as f:
            for line in self.p.stderr:
                line = line.decode(errors="replace")
                self.lines.append(line)
                f.write(line)

    def text(self):
        return "".join(self.lines)

    def wait_log(self, pattern, timeout, count=1):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(re.findall(pattern, self.text())) >= count:
                return True
            if self.p.poll() is not None:
                raise RuntimeError("mapsyncd exited: " + self.text()[-2000:])
            time.sleep(0.01)
        raise RuntimeError(f"mapsyncd: no {pattern!r} within {timeout} s")

    def cycles(self):
        return [int(x) for x in re.findall(r"sync: \d+ changed, \d+ unchanged, \d+ failed in (\d+) ms", self.text())]

    def pids(self):
        return session_pids(self.p.pid)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.reader.join(5)
        return ru


class Loop:
    """Peer (b)."""

    def __init__(self, db, outdir, logdir, durable=False):
        self.errpath = os.path.join(logdir, "loop.err")
        self.events = os.path.join(logdir, "events.log")
        self.hooks = os.path.join(logdir, "hooks.log")
        for p in (self.events, self.hooks):
            open(p, "w").close()
        env = dict(os.environ, SYNC_EVENT_LOG=self.events, SYNC_HOOK_LOG=self.hooks)
        self.errf = open(self.errpath, "w")
        argv = ["sh", LOOP] + (["--durable"] if durable else []) + [db, outdir]
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.errf, env=env,
                                  start_new_session=True)
        STARTED.append(self.p)
        end = time.monotonic() + 30
        while "Watches established" not in open(self.errpath).read():
            if time.monotonic() > end or self.p.poll() is not None:
                raise RuntimeError("inotify-loop.sh did not start: " + open(self.errpath).read())
            time.sleep(0.01)

    def n_lines(self, path):
        with open(path) as f:
            return sum(1 for _ in f)

    def runs(self):
        return self.n_lines(self.hooks) // 5

    def hook_runs(self):
        return self.n_lines(self.hooks)

    def n_events(self):
        return self.n_lines(self.events)

    def pids(self):
        return session_pids(self.p.pid)

    def busy(self):
        """Whether a run of (a) is going on."""
        for p in self.pids():
            try:
                if b"sync-config.sh" in open(f"/proc/{p}/cmdline", "rb").read():
                    return True
            except OSError:
                pass
        return False

    def wait_idle(self, quiet=0.5, timeout=120, start_within=0):
        """Waits until no run of (a) has been going on for `quiet` s; returns
        when the last run ended (monotonic). start_within: first wait that
        long for a run to start."""
        now = time.monotonic()
        last, end = now, now + timeout
        while start_within > 0 and time.monotonic() < now + start_within and not self.busy():
            time.sleep(0.005)
        while time.monotonic() < end:
            if self.busy():
                last = time.monotonic()
            elif time.monotonic() - last >= quiet:
                return last
            time.sleep(0.01)
        return None

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _, status, ru = os.wait4(self.p.pid, 0)
        self.errf.close()
        return ru


class Writer:
    """The admin panel: one long-lived connection, WAL, synchronous=NORMAL
    (no fsync per commit, so that 1,000 commits a second are possible)."""

    def __init__(self, db):
        self.c = sqlite3.connect(db, isolation_level=None, timeout=30)
        self.c.execute("PRAGMA synchronous = NORMAL")
        self.n = 0

    def commit(self, sql, args=()):
        self.c.execute("BEGIN IMMEDIATE")
        self.c.execute(sql, args)
        self.c.execute("COMMIT")
        self.n += 1
        return time.monotonic()

    def close(self):
        self.c.close()


# ---------------------------------------------------------------- parts

def part_regen(a, res):
    out = {}
    for n in a.sizes:
        reps = a.reps if n < 1_000_000 else a.reps_1m
        src = database(a.work, n)
        d = fresh_dir(os.path.join(a.work, "regen", str(n)))
        db = copy_db(src, os.path.join(d, "db"))
        dirs = {k: fresh_dir(os.path.join(d, k)) for k in ("m_full", "m_one", "a", "ad")}
        conf_full = make_config(os.path.join(d, "full.conf"), db, dirs["m_full"], os.path.join(d, "st1"))
        conf_one = make_config(os.path.join(d, "one.conf"), db, dirs["m_one"], os.path.join(d, "st2"))
        w = Writer(db)
        # One active account on an active domain: its password changes in
        # the "one row changed" runs (passwd changes, nothing else).
        email = gendb.ACTIVE_ACCOUNT
        pw = [gendb.HASH_OF[p] for p in gendb.ROTATE_PASSWORDS]
        run_measured([a.mapsyncd, "--once", "-c", conf_one])
        floor_sh = open(SYNC).read()
        floor = os.path.join(d, "floor.sh")
        # The floor: (a) with every map written to /dev/null, no sync, no hook.
        with open(floor, "w") as f:
            f.write(floor_sh.replace('>"$1"', '>/dev/null'))
        os.chmod(floor, 0o755)
        r = {k: [] for k in ("mapsyncd_full", "mapsyncd_one", "mapsyncd_same", "a", "a_durable", "floor")}
        log(f"regen {n}: {reps} runs")
        for i in range(reps):
            for m in MAPS:
                try:
                    os.unlink(os.path.join(dirs["m_full"], m))
                except FileNotFoundError:
                    pass
            subprocess.run(["sync"], check=True)  # no dirty pages of the last run left to flush
            r["mapsyncd_full"].append(run_measured([a.mapsyncd, "--once", "-c", conf_full]))
            r["a"].append(run_measured([SYNC, db, dirs["a"]]))
            r["a_durable"].append(run_measured([SYNC, "--durable", db, dirs["ad"]]))
            r["floor"].append(run_measured([floor, db, "/nonexistent"]))
            w.commit("UPDATE email_accounts SET password = ? WHERE email = ?", (pw[i % 2], email))
            r["mapsyncd_one"].append(run_measured([a.mapsyncd, "--once", "-c", conf_one]))
            r["mapsyncd_same"].append(run_measured([a.mapsyncd, "--once", "-c", conf_one]))
            log(f"  {n} run {i + 1}: " + ", ".join(f"{k} {v[-1]['wall']:.3f}s" for k, v in r.items()))
        w.close()
        # The four files of every tool are the same bytes ((a) ran before
        # the last commit: once more).
        run_measured([SYNC, db, dirs["a"]])
        run_measured([SYNC, "--durable", db, dirs["ad"]])
        ref = reference_maps(db, os.path.join(d, "ref"))
        equal = {k: maps_equal(ref, dirs[k]) for k in ("m_one", "a", "ad")}
        sizes = {m: os.path.getsize(os.path.join(ref, m)) for m in MAPS}
        out[str(n)] = {"runs": {k: {f: stats([x[f] for x in v]) for f in v[0]} for k, v in r.items()},
                       "equal_to_reference": equal, "map_bytes": sizes}
        shutil.rmtree(d, ignore_errors=True)
    res["regen"] = out


def part_noop(a, res):
    out = {}
    for n in a.noop_sizes:
        d = fresh_dir(os.path.join(a.work, "noop", str(n)))
        db = copy_db(database(a.work, n), os.path.join(d, "db"))
        r = {}
        for who in ("mapsyncd", "b"):
            outdir = fresh_dir(os.path.join(d, "out-" + who))
            hooks = os.path.join(d, who + "-hooks.log")
            open(hooks, "w").close()
            conf = make_config(os.path.join(d, who + ".conf"), db, outdir, os.path.join(d, "st-" + who),
                               on_change=f'echo "$MAPSYNCD_MAP" >> {hooks}')
            # Maps already in place: the start changes nothing either.
            run_measured([a.mapsyncd, "--once", "-c", conf])
            open(hooks, "w").close()
            ino = Inotify(outdir)
            if who == "mapsyncd":
                proc = Mapsyncd(a.mapsyncd, conf, os.path.join(d, "mapsyncd.log"))
            else:
                proc = Loop(db, outdir, d)
            w = Writer(db)
            time.sleep(2.5)  # the start's rechecks are over
            cpu0, wb0 = usage(proc.pids())
            times = []
            for i in range(a.noop_reps):
                t = w.commit("UPDATE email_accounts SET updated_at = ? WHERE id = 1",
                             (f"2026-01-01 00:00:{i:02d}",))
                if who == "mapsyncd":
                    proc.wait_log(r"sync: 0 changed, 4 unchanged", 30, count=i + 2)
                    times.append(proc.cycles()[-1] / 1000)
                else:
                    # done when the loop has been idle for a while
                    last = proc.wait_idle(quiet=0.5, start_within=2)
                    times.append(last - t)
                time.sleep(0.3)
            w.close()
            if who == "mapsyncd":
                time.sleep(2.5)  # the rechecks are over
            cpu1, wb1 = usage(proc.pids())
            proc.stop()
            ino.close()
            nh = sum(1 for _ in open(hooks if who == "mapsyncd" else proc.hooks))
            r[who] = {"cycle_s": stats(times), "write_bytes_per_commit": (wb1 - wb0) / a.noop_reps,
                      "hook_runs_per_commit": nh / a.noop_reps,
                      "cpu_per_commit_s": (cpu1 - cpu0) / a.noop_reps,
                      "runs_per_commit": (proc.runs() / a.noop_reps) if who == "b" else
                      (len(proc.cycles()) - 1) / a.noop_reps}
            log(f"noop {n} {who}: {r[who]}")
        out[str(n)] = r
        shutil.rmtree(d, ignore_errors=True)
    res["noop"] = out


def part_latency(a, res):
    out = {}
    email = gendb.ACTIVE_ACCOUNT.encode()
    for n in a.latency_sizes:
        d = fresh_dir(os.path.join(a.work, "latency", str(n)))
        src = database(a.work, n)
        r = {}
        for who in ("mapsyncd_0", "mapsyncd_200", "b"):
            db = copy_db(src, os.path.join(d, "db"))
            outdir = fresh_dir(os.path.join(d, "out"))
            conf = make_config(os.path.join(d, "m.conf"), db, outdir, fresh_dir(os.path.join(d, "st")),
                               debounce_ms=who.split("_")[1] if who != "b" else None)
            run_measured([a.mapsyncd, "--once", "-c", conf])
            ino = Inotify(outdir)
            proc = Mapsyncd(a.mapsyncd, conf, os.path.join(d, "m.log")) if who != "b" else Loop(db, outdir, d)
            w = Writer(db)
            lat = []
            tries = a.latency_tries if n <= 10000 else a.latency_tries_big
            for i in range(tries):
                h = gendb.HASH_OF[gendb.ROTATE_PASSWORDS[i % 2]]
                want = b"\n" + email + b":{BLF-CRYPT}" + h.encode() + b"::::::"
                if who == "b":
                    proc.wait_idle(quiet=0.5)
                ino.quiet(0.3)
                time.sleep(random.uniform(0, 0.1))
                t0 = w.commit("UPDATE email_accounts SET password = ? WHERE email = ?", (h, gendb.ACTIVE_ACCOUNT))
                got = None
                end = t0 + 60
                while got is None and time.monotonic() < end:
                    for t, name in ino.read(end - time.monotonic()):
                        if name == "passwd":
                            with open(os.path.join(outdir, "passwd"), "rb") as f:
                                if want in b"\n" + f.read():
                                    got = t
                                    break
                if got is None:
                    raise RuntimeError(f"latency {who} {n}: the change never reached passwd")
                lat.append(got - t0)
            w.close()
            proc.stop()
            ino.close()
            v = sorted(lat)
            r[who] = dict(stats(lat), p50=statistics.median(v), p99=v[min(len(v) - 1, int(0.99 * len(v)))],
                          samples=lat)
            log(f"latency {n} {who}: p50 {r[who]['p50'] * 1000:.1f} ms p99 {r[who]['p99'] * 1000:.1f} ms")
        out[str(n)] = r
        shutil.rmtree(d, ignore_errors=True)
    res["latency"] = out


def part_burst(a, res):
    n = a.burst_size
    d = fresh_dir(os.path.join(a.work, "burst"))
    src = database(a.work, n)
    r = {}
    for who in ("mapsyncd", "b"):
        db = copy_db(src, os.path.join(d, "db"))
        outdir = fresh_dir(os.path.join(d, "out"))
        hooks = os.path.join(d, "hooks.log")
        open(hooks, "w").close()
        conf = make_config(os.path.join(d, "m.conf"), db, outdir, fresh_dir(os.path.join(d, "st")),
                           on_change=f'echo "$MAPSYNCD_MAP" >> {hooks}')
        run_measured([a.mapsyncd, "--once", "-c", conf])
        open(hooks, "w").close()
        proc = Mapsyncd(a.mapsyncd, conf, os.path.join(d, "m.log")) if who == "mapsyncd" else Loop(db, outdir, d)
        ino = Inotify(outdir)
        w = Writer(db)
        time.sleep(2.5)  # the start's rechecks are over
        cpu0, wb0 = usage(proc.pids())
        # Active accounts and aliases of active domains, changed in turn:
        # a password (passwd) and an alias destination (virtual_aliases).
        accounts = [x[0] for x in w.c.execute(
            "SELECT a.id FROM email_accounts a JOIN domains d ON d.id = a.domain_id "
            "WHERE a.active = 1 AND d.active = 1 ORDER BY a.id")]
        aliases = [x[0] for x in w.c.execute(
            "SELECT al.id FROM aliases al JOIN domains d ON d.id = al.domain_id "
            "WHERE al.active = 1 AND d.active = 1 ORDER BY al.id")]
        rnd = random.Random(6)
        t_start = time.monotonic()
        for i in range(a.burst_commits):
            target = t_start + i * a.burst_seconds / a.burst_commits
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i % 2 == 0:
                h = gendb.HASH_OF[gendb.ROTATE_PASSWORDS[(i // 2) % 2]]
                w.commit("UPDATE email_accounts SET password = ? WHERE id = ?", (h, rnd.choice(accounts)))
            else:
                w.commit("UPDATE aliases SET destination = ? WHERE id = ?",
                         (f"burst{i}@external.example", rnd.choice(aliases)))
        t_end = time.monotonic()
        w.close()
        # Wait for it to settle: quiet for 3 s (mapsyncd: max_delay is 2 s),
        # at most drain_s after the burst.
        if who == "b":
            settled = proc.wait_idle(quiet=3.0, timeout=a.burst_drain) is not None
        else:
            settled = ino.quiet(3.0, timeout=a.burst_drain)
        t_settled = time.monotonic()
        ref = reference_maps(db, os.path.join(d, "ref"))
        equal = maps_equal(ref, outdir)
        cpu1, wb1 = usage(proc.pids())
        backlog = None
        if who == "b":
            runs, events = proc.runs(), proc.n_events()
            # The loop's shell reads the events from a pipe, byte by byte:
            # what is still in the pipe was not acted on yet.
            for p in proc.pids():
                try:
                    if p != proc.p.pid and b"inotifywait" not in open(f"/proc/{p}/cmdline", "rb").read() \
                            and os.readlink(f"/proc/{p}/fd/0").startswith("pipe:"):
                        backlog = pipe_backlog(p)
                except OSError:
                    pass
        else:
            runs, events = len(proc.cycles()) - 1, None
        proc.stop()
        nh = sum(1 for _ in open(hooks if who == "mapsyncd" else proc.hooks))
        r[who] = {"commits": a.burst_commits, "burst_s": t_end - t_start, "cycles": runs, "hook_runs": nh,
                  "cpu_s": cpu1 - cpu0, "write_bytes": wb1 - wb0, "settled": settled,
                  "settle_s": t_settled - t_end, "equal": equal, "events_read": events,
                  "pipe_backlog_bytes": backlog}
        log(f"burst {who}: {r[who]}")
        ino.close()
    res["burst"] = {"accounts": n, **r}
    shutil.rmtree(d, ignore_errors=True)


def part_idle(a, res):
    n = a.idle_size
    d = fresh_dir(os.path.join(a.work, "idle"))
    src = database(a.work, n)
    procs = {}
    for who in ("mapsyncd", "b"):
        db = copy_db(src, os.path.join(d, "db-" + who))
        outdir = fresh_dir(os.path.join(d, "out-" + who))
        conf = make_config(os.path.join(d, who + ".conf"), db, outdir, os.path.join(d, "st-" + who))
        run_measured([a.mapsyncd, "--once", "-c", conf])
        procs[who] = Mapsyncd(a.mapsyncd, conf, os.path.join(d, "m.log")) if who == "mapsyncd" \
            else Loop(db, outdir, d)
    time.sleep(3)  # the start's rechecks are over
    before = {k: {p: (proc_cpu(p), proc_switches(p)) for p in v.pids()} for k, v in procs.items()}
    log(f"idle: {a.idle_seconds} s")
    time.sleep(a.idle_seconds)
    r = {}
    for k, v in procs.items():
        cpu = sw = 0
        for p, (c0, s0) in before[k].items():
            cpu += proc_cpu(p) - c0
            sw += proc_switches(p) - s0
        r[k] = {"seconds": a.idle_seconds, "cpu_s": cpu, "wakeups": sw, "processes": len(before[k])}
        v.stop()
    log(f"idle: {r}")
    res["idle"] = {"accounts": n, **r}
    shutil.rmtree(d, ignore_errors=True)


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", HERE], capture_output=True, text=True).stdout.strip()
    sq = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[0]
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {"git": rev, "nproc": os.cpu_count(), "cpu": model, "mem_mib": mem, "kernel": platform.release(), "fs": fs,
            "sqlite3": sq, "load_before": open("/proc/loadavg").read().split()[:3],
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _on_term(signum, frame):
    sys.exit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _on_term)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapsyncd", required=True, help="the (release) binary")
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true", help="1k and 10k accounts, fewer runs, shorter waits")
    ap.add_argument("--parts", default="regen,noop,latency,burst,idle")
    ap.add_argument("--sizes", dest="only_sizes", help="override: accounts for regen, e.g. 1000,10000")
    ap.add_argument("--reps", dest="only_reps", type=int, help="override: runs per size (regen), tries (latency)")
    a = ap.parse_args()
    a.mapsyncd = os.path.abspath(a.mapsyncd)
    a.work = os.path.abspath(a.work)
    if a.quick:
        a.sizes, a.reps, a.reps_1m = [1000, 10000], 3, 1
        a.noop_sizes, a.noop_reps = [10000], 3
        a.latency_sizes, a.latency_tries, a.latency_tries_big = [10000], 10, 10
        a.burst_size, a.burst_commits, a.burst_seconds, a.burst_drain = 1000, 1000, 1.0, 30
        a.idle_size, a.idle_seconds = 1000, 10
    else:
        a.sizes, a.reps, a.reps_1m = [1000, 10000, 100000, 1000000], 7, 3
        a.noop_sizes, a.noop_reps = [10000, 100000], 5
        a.latency_sizes, a.latency_tries, a.latency_tries_big = [10000, 100000], 100, 30
        a.burst_size, a.burst_commits, a.burst_seconds, a.burst_drain = 10000, 10000, 10.0, 120
        a.idle_size, a.idle_seconds = 10000, 60
    if a.only_sizes:
        a.sizes = a.noop_sizes = a.latency_sizes = [int(x) for x in a.only_sizes.split(",")]
    if a.only_reps:
        a.reps = a.reps_1m = a.noop_reps = a.latency_tries = a.latency_tries_big = a.only_reps
    res = {"machine": machine(), "quick": a.quick, "started": time.time()}
    if os.path.exists(a.json):
        with open(a.json) as f:
            old = json.load(f)
        if old.get("quick") == a.quick:
            res = dict(old, machine=res["machine"])
    for part in a.parts.split(","):
        globals()["part_" + part](a, res)
        res.setdefault("wall_s", {})[part] = time.time() - res["started"]
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    log(f"results in {a.json}")


if __name__ == "__main__":
    main()
