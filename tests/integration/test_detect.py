#!/usr/bin/env python3
"""Change detection (issue 10), the real binary against writers in other
processes: slow WAL commits, PHP-FPM-like writers, read-only bind mounts,
symlinked paths, a FIFO at the database's path, polling where inotify sees
nothing or cannot be set up, journal-mode switches, and a randomized
interleaving of all of it.

No test reads the watched database through SQLite while it waits for the
daemon (that raises the -wal/-shm events a missed change lacks): what the
maps must become is computed beforehand, from a private copy (the shadow)
that gets the same changes, and the wait reads only map files."""

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import harness
from harness import read, sqlite_cli, wait_for

g = harness.gendb
FAST = {"debounce_ms": "50", "max_delay_ms": "1000"}
# How long a PHP-FPM-like run lasts per variant (the issue asks for 60 s;
# CI's budget allows 20).
FPM_SECONDS = float(os.environ.get("DETECT_FPM_SECONDS", "20"))
# Correctness bound for one commit to reach the maps past the debounce (a
# loaded CI machine; the figures are in bench/README.md). In rollback mode a
# reader waits for the writer's locks with SQLite's busy handler, which
# polls with sleeps of up to 100 ms: a writer committing 20 times a second
# kept a cycle waiting up to 3.4 s in a 60 s run (WAL: 2.1 s at worst).
BOUND_S = 3.0
BOUND_ROLLBACK_S = 6.0


def shim_env(mode, **extra):
    return harness.preload_env("NO_INOTIFY_SHIM", NO_INOTIFY=mode, **extra)


def commit(db, sql, params=(), journal=None, timeout=30):
    """One short-lived connection: (journal mode,) one statement, close."""
    c = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    try:
        if journal:
            c.execute("PRAGMA journal_mode = %s" % journal).fetchone()
        c.execute(sql, params)
    finally:
        c.close()


# How long one of mapsyncd's cycles may keep the database open on a loaded
# machine (a correctness bound: a cycle lasts milliseconds, but in rollback
# mode SQLite's busy handler may wait for a writer's lock).
CYCLE_BOUND_S = 30.0


def held_by(pid, db):
    """The files of database db (main, -wal, -shm, -journal) that process
    pid has open: mapsyncd has them open only during a cycle."""
    real = os.path.realpath(db)
    names = {real + s for s in ("", "-wal", "-shm", "-journal")}
    held = []
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return held
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.removesuffix(" (deleted)") in names:
            held.append(target)
    return held


def locks_on(db):
    """The lines of /proc/locks on db's files (pid, range), for messages."""
    inodes = set()
    for s in ("", "-wal", "-shm", "-journal"):
        try:
            inodes.add(os.stat(db + s).st_ino)
        except OSError:
            pass
    lines = []
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            dev_ino = next((p for p in parts if p.count(":") == 2), "")
            if dev_ino and int(dev_ino.rsplit(":", 1)[1]) in inodes:
                lines.append(line.strip())
    return lines


def switch_journal(db, mode, daemon=None):
    """PRAGMA journal_mode = mode as a panel does it: leaving WAL needs the
    only connection, and SQLite does not wait for it (no busy handler), so
    a switch that meets one of mapsyncd's cycles is tried again. With
    daemon, a "locked" try is explained: mapsyncd had the database open (a
    cycle), and the next try comes once it has closed it, which it must do
    within CYCLE_BOUND_S; a switch refused while mapsyncd held nothing is
    tried again at once, but not forever. Without daemon (a file nobody
    watches) every try must succeed."""
    unexplained = []
    tries, end = 0, time.monotonic() + 2 * CYCLE_BOUND_S
    while True:
        tries += 1
        if daemon is not None and time.monotonic() > end:
            raise AssertionError("PRAGMA journal_mode = %s: %d tries in %.0f s met one of mapsyncd's cycles each"
                                 % (mode, tries - 1, 2 * CYCLE_BOUND_S))
        c = sqlite3.connect(db, timeout=5, isolation_level=None)
        try:
            return c.execute("PRAGMA journal_mode = %s" % mode).fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or daemon is None:
                raise
            held = held_by(daemon.pid, db)
            locks = locks_on(db)
        finally:
            c.close()
        if held:
            unexplained = []
            wait_for(lambda: not held_by(daemon.pid, db), CYCLE_BOUND_S, interval=0.002,
                     what="mapsyncd (pid %d) to close the database after its cycle (it must hold nothing "
                     "between cycles); it holds %s; locks: %s" % (daemon.pid, held, locks))
        else:
            # The cycle ended between the try and the look.
            unexplained.append(locks)
            if len(unexplained) >= 20:
                raise sqlite3.OperationalError(
                    "PRAGMA journal_mode = %s: database is locked %d times in a row while mapsyncd (pid %d) held "
                    "none of its files; locks at each: %s" % (mode, len(unexplained), daemon.pid, unexplained))


def account_line(text, email):
    for line in text.splitlines():
        if line.startswith(email + ":"):
            return line
    return None


class Base(harness.DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.mounts = []

    def tearDown(self):
        for w in self.writers:
            w.close()
        self.writers = []
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        for m in reversed(self.mounts):
            if subprocess.run(["umount", m], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True)
        super().tearDown()

    def config(self, db_path=None, out=None, **kw):
        """shipped_config(**kw) reading db_path, writing to out."""
        text = self.env.shipped_config(**kw)
        if db_path:
            text = text.replace(self.env.db, db_path)
        if out:
            text = text.replace(self.env.out + "/", out + "/")
        return text

    def wait_maps(self, want, d=None, timeout=20):
        harness.wait_maps_equal(self, want, timeout=timeout, daemon=d or (self.daemons[-1] if self.daemons else None))

    def fresh_once(self, db_path, out):
        """The maps a fresh --once renders (with its own config and state)."""
        os.makedirs(out, exist_ok=True)
        conf = os.path.join(self.env.dir, "once.conf")
        text = self.config(db_path=db_path, out=out, hooks=False)
        text = text.replace(self.env.state, os.path.join(self.env.dir, "state-once"))
        with open(conf, "w") as f:
            f.write(text)
        r = subprocess.run(harness.WRAPPER + [harness.MAPSYNCD, "-c", conf, "--once"], capture_output=True,
                           text=True, timeout=120)
        harness.check_wrapper_exit(r.returncode, r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        return harness.read_maps(out)

    def ro_view(self):
        """The database's directory bind-mounted read-only at view/."""
        view = os.path.join(self.env.dir, "view")
        os.mkdir(view)
        subprocess.run(["mount", "--bind", self.env.db_dir, view], check=True, timeout=30)
        self.mounts.append(view)
        subprocess.run(["mount", "-o", "remount,bind,ro", view], check=True, timeout=30)
        probe = os.path.join(view, "probe")
        with self.assertRaises(OSError):
            open(probe, "w").close()
        return os.path.join(view, os.path.basename(self.env.db))


class SlowCommits(Base):
    """A WAL commit on a slow disk shows after its fsync, with no event."""

    def burst(self, d, writer, shadow, ids, quota0):
        params = [(quota0 + k, i) for k, i in enumerate(ids)]
        for p in params:
            shadow.sql("UPDATE email_accounts SET quota = ? WHERE id = ?", p)
        want = shadow.expected()
        writer.burst("UPDATE email_accounts SET quota = ? WHERE id = ?", params)
        self.wait_maps(want, d, timeout=20 + len(ids))

    def slow_writer(self, fsync_ms, synchronous=None):
        env = harness.preload_env("SLOW_FSYNC_SHIM", SLOW_FSYNC_MS=fsync_ms) if fsync_ms else {}
        w = harness.Writer(self.env.db, env=env)
        self.writers.append(w)
        if synchronous:
            w.execute("PRAGMA synchronous = %s" % synchronous)
        return w

    def test_two_slow_commits_debounce_200(self):
        # Issue 10, case 1: the second of two back-to-back UPDATEs whose
        # fsync takes 500 ms never reached passwd.
        d = self.start(sync={"debounce_ms": "200"})
        shadow = harness.Shadow(self.env)
        w = self.slow_writer(500)
        t0, t1 = w.execute(("UPDATE email_accounts SET password = ? WHERE email = ?",
                            (g.ROTATE_HASHES[0], g.ACTIVE_ACCOUNT)))
        t2, t3 = w.execute(("UPDATE email_accounts SET password = ? WHERE email = ?",
                            (g.ROTATE_HASHES[1], g.ACTIVE_ACCOUNT)))
        self.assertGreaterEqual(t3 - t2, 0.45, "the shim did not slow the commit")
        shadow.sql("UPDATE email_accounts SET password = ? WHERE email = ?", (g.ROTATE_HASHES[1], g.ACTIVE_ACCOUNT))
        self.wait_maps(shadow.expected(), d, timeout=10)
        self.assertIn(g.ROTATE_HASHES[1], account_line(read(self.env.output("passwd")), g.ACTIVE_ACCOUNT))
        self.assertEqual(d.stop(), 0)

    def test_n_slow_commits(self):
        shadow = harness.Shadow(self.env)
        ids = shadow.active_account_ids(27)
        for debounce in (0, 200, 1000):
            with self.subTest(debounce_ms=debounce):
                d = self.start(sync={"debounce_ms": str(debounce), "max_delay_ms": "5000"})
                w = self.slow_writer(250)
                quota = 7000 + debounce
                for n in (2, 5, 20):
                    self.burst(d, w, shadow, ids[:n], quota)
                    quota += 100
                w.close()
                self.writers.remove(w)
                self.assertEqual(d.stop(), 0)

    def test_synchronous_full_debounce_0(self):
        # With debounce 0 and synchronous = FULL an ordinary fsync is enough
        # to put a commit after its last event.
        d = self.start(sync={"debounce_ms": "0"})
        shadow = harness.Shadow(self.env)
        w = self.slow_writer(0, synchronous="FULL")
        ids = shadow.active_account_ids(20)
        for rnd in range(3):
            self.burst(d, w, shadow, ids, 8000 + rnd * 100)
        self.assertEqual(d.stop(), 0)

    def test_idle_after_follow_window_no_wakeups(self):
        # After a WAL burst the daemon looks again for a while, then sleeps:
        # no wakeups at all once nothing is pending (checked without the
        # window: a burst that did not write -wal gets two quick looks).
        d = self.start(sync=FAST)
        self.wait_quiet(d, 1.0)
        before = harness.voluntary_switches(d.pid)
        time.sleep(3)
        self.assertLessEqual(harness.voluntary_switches(d.pid) - before, 2)
        self.assertEqual(d.stop(), 0)


class FpmWriter:
    """A PHP-FPM-like writer in another process: each request opens a
    connection, sets the journal mode, commits one UPDATE of account 1's
    quota to BASE + i, and closes; `rate` requests a second for `seconds`.
    Prints one JSON line per request: {"i": i, "t": monotonic after close}."""

    CODE = r'''
import json, sqlite3, sys, time
db, journal, rate, seconds, base = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
start = time.monotonic(); i = 0
while time.monotonic() - start < seconds:
    i += 1
    c = sqlite3.connect(db, timeout=30, isolation_level=None)
    c.execute("PRAGMA busy_timeout = 30000")
    c.execute("PRAGMA journal_mode = " + journal).fetchone()
    c.execute("UPDATE email_accounts SET quota = ? WHERE id = 1", (base + i,))
    c.close()
    print(json.dumps({"i": i, "t": time.monotonic()}), flush=True)
    nxt = start + i / rate
    time.sleep(max(0.0, nxt - time.monotonic()))
'''

    def __init__(self, db, journal, rate, seconds, base):
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, db, journal, str(rate), str(seconds),
                                      str(base)], stdout=subprocess.PIPE, text=True)

    def wait(self, timeout):
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError("PHP-FPM-like writer failed (%d)" % self.proc.returncode)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


class MapMonitor(threading.Thread):
    """Reads passwd every 5 ms; records (monotonic, quota of account 1)
    whenever it changes."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.seen = []
        self.stop_flag = False

    def run(self):
        last = None
        rx = re.compile(r"userdb_quota_rule=\*:storage=(\d+)M")
        while not self.stop_flag:
            try:
                line = account_line(read(self.path), g.ACTIVE_ACCOUNT)
            except FileNotFoundError:
                line = None
            m = rx.search(line or "")
            q = int(m.group(1)) if m else None
            if q != last:
                self.seen.append((time.monotonic(), q))
                last = q
            time.sleep(0.005)


class PhpFpm(Base):
    """20 requests a second, each its own connection, for FPM_SECONDS: after
    every commit the map shows it within debounce + BOUND_S; the final maps
    equal a fresh --once."""

    def run_fpm(self, journal="wal", long_lived=False, readonly=False):
        debounce_ms = 100
        if journal != "wal":
            sqlite_cli(self.env.db, "PRAGMA journal_mode = DELETE")
        db_path = self.ro_view() if readonly else self.env.db
        self.env.write_config(self.config(db_path=db_path, sync={"debounce_ms": str(debounce_ms),
                                                                 "max_delay_ms": "1000"}))
        d = self.daemon()
        d.wait_ready()
        mon = MapMonitor(self.env.output("passwd"))
        mon.start()
        other = None
        if long_lived:
            other = self.writer()
            other.execute("PRAGMA journal_mode = WAL")
        base = 100000
        fpm = FpmWriter(self.env.db, journal, 20, FPM_SECONDS, base)
        t_end = time.monotonic() + FPM_SECONDS + 60
        k = 0
        while long_lived and fpm.proc.poll() is None and time.monotonic() < t_end:
            k += 1
            other.execute(("UPDATE email_accounts SET quota = ? WHERE id = ?", (500 + k, 4)))
            time.sleep(0.25)
        commits = fpm.wait(FPM_SECONDS + 120)
        self.assertGreater(len(commits), FPM_SECONDS * 20 * 0.5, "the writer was far too slow")
        final = base + commits[-1]["i"]
        wait_for(lambda: mon.seen and mon.seen[-1][1] == final, 20, what="the last commit in passwd")
        mon.stop_flag = True
        mon.join(5)
        bound = debounce_ms / 1000 + (BOUND_S if journal == "wal" else BOUND_ROLLBACK_S)
        worst = 0.0
        late = []
        for c in commits:
            want = base + c["i"]
            shown = next((t for t, q in mon.seen if q is not None and q >= want and t >= c["t"] - 0.5), None)
            lat = (shown - c["t"]) if shown is not None else float("inf")
            worst = max(worst, lat)
            if lat > bound:
                late.append((c["i"], lat))
        print("\n%s%s%s: %d commits, worst commit-to-map %.3f s, %d map versions seen"
              % (journal, " + long-lived writer" if long_lived else "", " (read-only mount)" if readonly else "",
                 len(commits), worst, len(mon.seen)), file=sys.stderr)
        self.assertEqual(late, [], "commits that reached passwd later than %.1f s" % bound)
        if other:
            other.close()
            self.writers.remove(other)
        self.wait_quiet(d, 1.0)
        have = harness.read_maps(self.env.out)
        once = self.fresh_once(db_path, os.path.join(self.env.dir, "out-once"))
        for m in harness.MAPS:
            self.assertEqual(have[m], once[m], "map %s differs from a fresh --once" % m)
        self.assertEqual(d.stop(), 0)

    def test_wal(self):
        self.run_fpm("wal")

    def test_wal_with_long_lived_writer(self):
        self.run_fpm("wal", long_lived=True)

    def test_wal_read_only_mount(self):
        self.run_fpm("wal", readonly=True)

    def test_wal_read_only_mount_with_long_lived_writer(self):
        self.run_fpm("wal", long_lived=True, readonly=True)

    def test_rollback_read_only_mount(self):
        self.run_fpm("delete", readonly=True)


class ReadOnlyMount(Base):
    """The seed's topology: the database's directory mounted read-only into
    the mail container, the panel writing through the read-write path."""

    def test_wal_writer_gone_once(self):
        # Issue 10, case 2: "--once fails with database ... unavailable:
        # unable to open database file".
        shadow = harness.Shadow(self.env)
        commit(self.env.db, "SELECT 1", journal="wal")  # the last writer closes
        for suffix in ("-wal", "-shm"):
            self.assertFalse(os.path.exists(self.env.db + suffix))
        view_db = self.ro_view()
        once = self.fresh_once(view_db, os.path.join(self.env.dir, "out-once"))
        for m in harness.MAPS:
            self.assertEqual(once[m], shadow.expected()[m])
        for suffix in ("-wal", "-shm"):
            self.assertFalse(os.path.exists(self.env.db + suffix))

    def follow(self, journal, long_lived):
        if journal != "wal":
            sqlite_cli(self.env.db, "PRAGMA journal_mode = DELETE")
        shadow = harness.Shadow(self.env)
        commit(self.env.db, "SELECT 1", journal=journal)  # the last writer closes
        view_db = self.ro_view()
        self.env.write_config(self.config(db_path=view_db, sync=FAST))
        d = self.daemon()
        d.wait_ready()
        self.wait_maps(shadow.expected(), d)
        if long_lived:
            w = self.writer()
            self.assertTrue(os.path.exists(self.env.db + "-wal"))
        for k in range(6):
            sql, p = "UPDATE email_accounts SET quota = ? WHERE id = 1", (3000 + k,)
            shadow.sql(sql, p)
            want = shadow.expected()
            if long_lived:
                w.execute((sql, p))
            else:
                commit(self.env.db, sql, p, journal=journal)
                if journal == "wal":  # the last writer closed: no -wal, no -shm
                    self.assertFalse(os.path.exists(self.env.db + "-wal"))
            self.wait_maps(want, d)
        self.assertEqual(d.count_log(r"unavailable"), 0, "\n".join(d.log()))
        self.assertEqual(d.stop(), 0)

    def test_mount_gone_and_back(self):
        # Issue 10, item 7: every failure of detection said once, and over
        # by itself. The mount goes away (the watch with it), then comes
        # back over the same path (which raises no event there).
        shadow = harness.Shadow(self.env)
        commit(self.env.db, "SELECT 1", journal="wal")
        view_db = self.ro_view()
        view = os.path.dirname(view_db)
        self.env.write_config(self.config(db_path=view_db, sync=FAST))
        d = self.daemon()
        d.wait_ready()
        self.wait_maps(shadow.expected(), d)
        subprocess.run(["umount", view], check=True, timeout=30)
        self.mounts.remove(view)
        # The watch is on the directory's inode, which the read-write path
        # still reaches: the next change is seen, and the path checked.
        commit(self.env.db, "UPDATE email_accounts SET quota = 3400 WHERE id = 1", journal="wal")
        shadow.sql("UPDATE email_accounts SET quota = 3400 WHERE id = 1")
        d.wait_log(r"database .* unavailable: no such file", timeout=15)
        wait_for(lambda: "unavailable" in d.notified("STATUS")[-1], 10, what="STATUS naming the problem")
        time.sleep(3)  # retried meanwhile, said once
        self.assertEqual(d.count_log(r"unavailable"), 1, "\n".join(d.log()))
        subprocess.run(["mount", "--bind", self.env.db_dir, view], check=True, timeout=30)
        self.mounts.append(view)
        subprocess.run(["mount", "-o", "remount,bind,ro", view], check=True, timeout=30)
        d.wait_log(r"is available again", timeout=40)
        sql, p = "UPDATE email_accounts SET quota = ? WHERE id = 1", (3500,)
        shadow.sql(sql, p)
        want = shadow.expected()
        commit(self.env.db, sql, p, journal="wal")
        self.wait_maps(want, d, timeout=10)
        self.assertEqual(d.stop(), 0)

    def test_wal_writer_gone(self):
        self.follow("wal", False)

    def test_wal_long_lived_writer(self):
        self.follow("wal", True)

    def test_rollback(self):
        self.follow("delete", False)


class Symlinks(Base):

    def linked_file(self, journal):
        # Issue 10, case 3: commits through a symlinked file caused no sync.
        real_dir = os.path.join(self.env.dir, "real")
        os.mkdir(real_dir)
        real = os.path.join(real_dir, "panel.sqlite")
        os.rename(self.env.db, real)
        if journal != "wal":
            sqlite_cli(real, "PRAGMA journal_mode = DELETE")
        os.symlink(os.path.relpath(real, self.env.db_dir), self.env.db)
        shadow = harness.Shadow(self.env, real)
        d = self.start(sync=FAST)
        self.wait_maps(shadow.expected(), d)
        w = harness.Writer(real)
        self.writers.append(w)
        for k in range(3):
            sql, p = "UPDATE email_accounts SET quota = ? WHERE id = 1", (4000 + k,)
            shadow.sql(sql, p)
            want = shadow.expected()
            w.execute((sql, p))
            self.wait_maps(want, d)
        self.assertEqual(d.stop(), 0)

    def test_symlinked_file_wal(self):
        self.linked_file("wal")

    def test_symlinked_file_rollback(self):
        self.linked_file("delete")

    def test_symlinked_directory_repointed(self):
        rel = os.path.join(self.env.dir, "releases")
        r1, r2 = os.path.join(rel, "r1"), os.path.join(rel, "r2")
        os.makedirs(r1)
        os.makedirs(r2)
        db1, db2 = os.path.join(r1, "database.sqlite"), os.path.join(r2, "database.sqlite")
        os.rename(self.env.db, db1)
        harness.gendb_process(db2, accounts=70, seed=5)
        current = os.path.join(self.env.dir, "current")
        os.symlink("releases/r1", current)
        s1, s2 = harness.Shadow(self.env, db1, "shadow1"), harness.Shadow(self.env, db2, "shadow2")
        self.env.write_config(self.config(db_path=os.path.join(current, "database.sqlite"), sync=FAST))
        d = self.daemon()
        d.wait_ready()
        self.wait_maps(s1.expected(), d)
        sql = "UPDATE email_accounts SET quota = ? WHERE id = 1"
        s1.sql(sql, (5001,))
        want = s1.expected()
        commit(db1, sql, (5001,))
        self.wait_maps(want, d)
        # A deploy re-points the link (rename over it, as ln -sfn via mv -T).
        os.symlink("releases/r2", current + ".new")
        os.rename(current + ".new", current)
        self.wait_maps(s2.expected(), d)
        s2.sql(sql, (5002,))
        want = s2.expected()
        commit(os.path.join(current, "database.sqlite"), sql, (5002,))
        self.wait_maps(want, d)
        # The old release is not followed any more.
        commit(db1, sql, (5003,))
        time.sleep(1.5)
        self.assertEqual(harness.read_maps(self.env.out), want)
        self.assertEqual(d.stop(), 0)


class Fifo(Base):
    """Issue 10, case 4: a FIFO renamed over the database blocked open();
    SIGTERM did nothing, --once hung."""

    def put_fifo(self):
        fifo = os.path.join(self.env.db_dir, "fifo")
        os.mkfifo(fifo)
        os.rename(fifo, self.env.db)

    def test_fifo_renamed_over_then_database_back(self):
        spare = os.path.join(self.env.dir, "spare.sqlite")
        harness.gendb_process(spare, accounts=40, seed=7)
        shadow = harness.Shadow(self.env, spare)
        d = self.start(sync=FAST)
        before = harness.read_maps(self.env.out)
        self.put_fifo()
        d.wait_log(r"not a regular file \(a FIFO\)", timeout=15)
        wait_for(lambda: "FIFO" in (d.notified("STATUS") or [""])[-1], 10, what="STATUS naming the FIFO")
        self.assertEqual(harness.read_maps(self.env.out), before)
        os.rename(spare, self.env.db)
        self.wait_maps(shadow.expected(), d)
        self.assertEqual(d.stop(timeout=10), 0)

    def test_sigterm_while_fifo(self):
        d = self.start(sync=FAST)
        self.put_fifo()
        d.wait_log(r"not a regular file", timeout=15)
        d.signal(signal.SIGUSR1)
        time.sleep(0.3)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        d.proc.wait(10)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(d.stop(), 0)

    def test_once_with_fifo(self):
        self.put_fifo()
        self.env.write_config()
        r = self.env.run("--once", timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a regular file (a FIFO)", r.stderr)
        r = self.env.run("--check", timeout=20)
        self.assertNotEqual(r.returncode, 0)


class Polling(Base):

    def follow_commits(self, d, shadow, n=3, timeout=10):
        for k in range(n):
            sql, p = "UPDATE email_accounts SET quota = ? WHERE id = 1", (6000 + k,)
            shadow.sql(sql, p)
            want = shadow.expected()
            sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = %d WHERE id = 1" % p)
            self.wait_maps(want, d, timeout=timeout)

    def fallback(self, mode):
        # Issue 10, case 5: no inotify, and still "ready: watching", every
        # change missed, an error every 2 s.
        shadow = harness.Shadow(self.env)
        d = self.start(sync=FAST, extra_env=shim_env(mode))
        self.wait_maps(shadow.expected(), d)
        self.assertEqual(d.count_log(r"ready: watching"), 0)
        d.wait_log(r"cannot watch .*: polling it every 2 s")
        wait_for(lambda: "polling" in d.notified("STATUS")[-1], 10, what="STATUS saying it polls")
        self.follow_commits(d, shadow)
        time.sleep(4.5)  # rewatch tries at 2, 4, 8 s: said once all the same
        self.assertEqual(d.count_log(r"cannot watch .*; watching again later"), 1, "\n".join(d.log()))
        self.assertEqual(d.stop(), 0)

    def test_inotify_init_fails(self):
        self.fallback("init")

    def test_watch_cannot_be_added(self):
        self.fallback("add")

    def test_poll_interval_with_deaf_inotify(self):
        # Issue 10, case 7: poll_interval_s where inotify sees nothing.
        shadow = harness.Shadow(self.env)
        d = self.start(sync=dict(FAST, poll_interval_s="1"), extra_env=shim_env("deaf"))
        self.wait_maps(shadow.expected(), d)
        self.follow_commits(d, shadow, timeout=6)
        self.assertEqual(d.count_log(r"cannot watch"), 0)
        self.assertEqual(d.stop(), 0)

    def test_deaf_inotify_without_poll_misses(self):
        # The control: the shim really silences inotify.
        d = self.start(sync=FAST, extra_env=shim_env("deaf"))
        before = harness.read_maps(self.env.out)
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 6100 WHERE id = 1")
        time.sleep(2)
        self.assertEqual(harness.read_maps(self.env.out), before)
        self.assertEqual(d.stop(), 0)


class JournalSwitch(Base):
    """Issue 10, case 6: the panel's PRAGMA journal_mode = DELETE failed with
    "database is locked" while mapsyncd ran."""

    def switch(self, mode):
        # Between cycles the first try succeeds (before issue 10 every try
        # failed while mapsyncd ran): no retry here.
        c = sqlite3.connect(self.env.db, timeout=5, isolation_level=None)
        try:
            return c.execute("PRAGMA journal_mode = %s" % mode).fetchone()[0]
        finally:
            c.close()

    def test_wal_to_delete_and_back(self):
        shadow = harness.Shadow(self.env)
        d = self.start(sync=FAST)
        sql = "UPDATE email_accounts SET quota = ? WHERE id = 1"
        for k, mode in enumerate(("delete", "wal", "delete", "wal")):
            shadow.sql(sql, (9000 + k,))
            want = shadow.expected()
            commit(self.env.db, sql, (9000 + k,))
            self.wait_maps(want, d)
            self.assertEqual(self.switch(mode), mode)
            shadow.sql(sql, (9100 + k,))
            want = shadow.expected()
            commit(self.env.db, sql, (9100 + k,))
            self.wait_maps(want, d)
        self.assertEqual(d.stop(), 0)


class Randomized(Base):
    """Commits in both journal modes, checkpoints, VACUUM, rename-over
    restores, delete and recreate, readers, slow fsyncs, in an order drawn
    from a seed (printed, and DETECT_RANDOM_SEED=N repeats it); after each
    quiet period the maps equal a rendering of the shadow."""

    STEPS = int(os.environ.get("DETECT_RANDOM_STEPS", "60"))

    def test_random_interleaving(self):
        seed = int(os.environ.get("DETECT_RANDOM_SEED", str(random.SystemRandom().randrange(1 << 30))))
        print("\nDETECT_RANDOM_SEED=%d" % seed, file=sys.stderr)
        rng = random.Random(seed)
        shadow = harness.Shadow(self.env)
        debounce = rng.choice((0, 50, 200))
        d = self.start(sync={"debounce_ms": str(debounce), "max_delay_ms": "1000"})
        db = self.env.db
        ids = shadow.active_account_ids(30)
        journal = "wal"
        log = []

        def update(label, j=None, env=None):
            i, q = rng.choice(ids), rng.randrange(1, 100000)
            sql = "UPDATE email_accounts SET quota = %d WHERE id = %d" % (q, i)
            shadow.sql(sql)
            if env:
                code = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None); "
                        "c.execute('PRAGMA synchronous=FULL'); c.execute(sys.argv[2]); c.close()")
                subprocess.run([sys.executable, "-c", code, db, sql], check=True, timeout=60,
                               env=dict(os.environ, **env))
            else:
                switch_journal(db, j, d)
                commit(db, sql)
            log.append(label)

        def restore(label, by_rename):
            tmp = os.path.join(self.env.db_dir, "restore.tmp")
            i, q = rng.choice(ids), rng.randrange(1, 100000)
            sql = "UPDATE email_accounts SET quota = %d WHERE id = %d" % (q, i)
            shadow.sql(sql)
            harness.copy_db(shadow.path, tmp)
            if rng.random() < 0.5:
                switch_journal(tmp, "wal")
            # A restore procedure: no connection open, nothing in -wal.
            c = sqlite3.connect(db, timeout=30)
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            c.close()
            if by_rename:
                os.rename(tmp, db)
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    try:
                        os.unlink(db + suffix)
                    except FileNotFoundError:
                        pass
                time.sleep(rng.random() * 0.3)
                shutil.copyfile(tmp, db + ".new")
                os.unlink(tmp)
                os.rename(db + ".new", db)
            log.append(label)

        def reader():
            c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
            try:
                c.execute("SELECT count(*) FROM email_accounts").fetchall()
            finally:
                c.close()
            log.append("reader")

        ops = [
            (4, lambda: update("commit " + journal, journal)),
            (1, lambda: update("slow commit", env=harness.preload_env(
                "SLOW_FSYNC_SHIM", SLOW_FSYNC_MS=rng.choice((50, 400, 1200))))),
            (1, lambda: (commit(db, "PRAGMA wal_checkpoint(%s)" % rng.choice(("PASSIVE", "TRUNCATE"))),
                         log.append("checkpoint"))),
            (1, lambda: (commit(db, "VACUUM"), log.append("vacuum"))),
            (1, lambda: restore("rename-over restore", True)),
            (1, lambda: restore("delete and recreate", False)),
            (1, lambda: reader()),
        ]
        weights = [w for w, _ in ops]
        for step in range(self.STEPS):
            if rng.random() < 0.15:
                journal = "delete" if journal == "wal" else "wal"
                try:
                    self.assertEqual(switch_journal(db, journal, d), journal)
                except (sqlite3.OperationalError, AssertionError) as e:
                    raise AssertionError("DETECT_RANDOM_SEED=%d, step %d, switching to %s after: %s: %s\n%s"
                                         % (seed, step, journal, ", ".join(log[-8:]), e, "\n".join(d.log()[-30:])))
                log.append("journal " + journal)
            rng.choices(ops, weights)[0][1]()
            time.sleep(rng.random() * 0.2)
            if rng.random() < 0.3 or step == self.STEPS - 1:
                try:
                    self.wait_maps(shadow.expected(), d, timeout=20)
                except AssertionError as e:
                    raise AssertionError("DETECT_RANDOM_SEED=%d, step %d, after: %s\n%s"
                                         % (seed, step, ", ".join(log[-8:]), e))
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    harness.main()
