"""Shared pieces of the integration tests: a private directory with a
generated admin-panel database, a config made from the shipped
conf/mapsyncd.conf with its paths moved there, runs of the real binary, a
daemon with its own NOTIFY_SOCKET, and an independent rendering of the
expected maps straight from the schema's rules."""

import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SRC = os.environ.get("MAPSYNCD_SOURCE_ROOT",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MAPSYNCD = os.environ.get("MAPSYNCD", os.path.join(SRC, "build", "src", "mapsyncd"))
# MAPSYNCD_WRAPPER: a command line put in front of the binary's in Env.run
# and Daemon, e.g. "valgrind -q --leak-check=full --error-exitcode=99".
# When it holds --error-exitcode=N, a run that exits N fails the test
# whatever exit status the test expected (see check_wrapper_exit).
WRAPPER = shlex.split(os.environ.get("MAPSYNCD_WRAPPER", ""))
_WRAPPER_ERROR_EXIT = next((int(a.split("=", 1)[1]) for a in WRAPPER
                            if re.fullmatch(r"--error-exitcode=\d+", a)), None)


def check_wrapper_exit(returncode, output):
    """Fails when MAPSYNCD_WRAPPER's tool (valgrind) reported errors."""
    if WRAPPER and _WRAPPER_ERROR_EXIT is not None and returncode == _WRAPPER_ERROR_EXIT:
        raise AssertionError("%s reported errors (exit status %d):\n%s"
                             % (WRAPPER[0], returncode, output))


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print
# (the build-asan run of tools/run-tests). UBSan's "halt" exits 1, which
# some tests expect of a failing --once: the report itself fails the test.
_SANITIZER_REPORT = re.compile(r"^(==\d+==ERROR: (Address|Leak)Sanitizer|\S+:\d+:\d+: runtime error: |"
                               r"SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer)", re.M)


def check_sanitizer_report(output):
    """Fails when output (a run's stderr) holds a sanitizer report."""
    m = _SANITIZER_REPORT.search(output or "")
    if m:
        raise AssertionError("sanitizer report in mapsyncd's output:\n%s" % output[max(0, m.start() - 2000):])
sys.path.insert(0, os.path.join(SRC, "tools"))
import gendb  # noqa: E402

MAPS = ("virtual_domains", "vmailbox", "virtual_aliases", "passwd")
POSTFIX_MAPS = ("virtual_domains", "vmailbox", "virtual_aliases")
TEST_GROUP = "mail"  # exists on every Debian system


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred until it returns a true value; fails the test after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def preload_env(variable, **settings):
    """The environment for a mapsyncd (or writer) with the LD_PRELOAD shim
    whose path the build passes in `variable`, with the shim's own settings.
    Under AddressSanitizer the shim comes before the sanitizer's runtime in
    the library list, which the runtime refuses unless told not to check."""
    shim = os.environ.get(variable)
    if not shim or not os.path.exists(shim):
        raise AssertionError("%s not built" % variable)
    env = {"LD_PRELOAD": shim, "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


class Env:
    """A private directory: db/ (the database), out/ (the maps), state/."""

    def __init__(self, accounts=50, aliases=None, domains=None, journal="wal", hostile=False, seed=1):
        self.dir = tempfile.mkdtemp(prefix="mapsyncd-test-")
        self.db_dir = os.path.join(self.dir, "db")
        self.out = os.path.join(self.dir, "out")
        self.state = os.path.join(self.dir, "state")
        for d in (self.db_dir, self.out):
            os.mkdir(d)
        self.db = os.path.join(self.db_dir, "database.sqlite")
        self.hook_log = os.path.join(self.dir, "hooks.log")
        self.conf = os.path.join(self.dir, "mapsyncd.conf")
        gendb.generate(self.db, accounts=accounts, aliases=aliases, domains=domains, seed=seed,
                       journal=journal, hostile=hostile)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self, name):
        return os.path.join(self.out, name)

    def shipped_config(self, hooks=True, sync=None, map_extra=None, conf="mapsyncd.conf"):
        """conf/mapsyncd.conf (or conf/CONF) with its paths in this
        directory. With hooks, each map's on_change appends "NAME SHA256
        ROWS" to hooks.log instead of running postmap. sync: {key: value}
        set in [sync]. map_extra: {map: text} appended to that map's
        section."""
        text = read(os.path.join(SRC, "conf", conf))
        text = text.replace("/var/lib/mailadmin/database.sqlite", self.db)
        text = text.replace("/var/lib/mapsyncd", self.state)
        text = re.sub(r"/etc/(postfix|dovecot)/", self.out + "/", text)
        text = re.sub(r"(?m)^group = dovecot$", "group = " + TEST_GROUP, text)
        recorder = 'echo "$MAPSYNCD_MAP $MAPSYNCD_SHA256 $MAPSYNCD_ROWS" >> ' + self.hook_log
        if hooks:
            text = re.sub(r"(?m)^on_change = .*$", "on_change = " + recorder, text)
            text = text.replace("[map passwd]\n", "[map passwd]\non_change = " + recorder + "\n")
        else:
            text = re.sub(r"(?m)^on_change = .*\n", "", text)
        for key, value in (sync or {}).items():
            text = re.sub(r"(?m)^%s = .*$" % key, "", text)
            text = text.replace("[sync]\n", "[sync]\n%s = %s\n" % (key, value))
        for name, extra in (map_extra or {}).items():
            text = text.replace("[map %s]\n" % name, "[map %s]\n%s\n" % (name, extra.strip()))
        return text

    def write_config(self, text=None, **kw):
        text = self.shipped_config(**kw) if text is None else text
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.conf)
        return self.conf

    def run(self, *args, timeout=60, env=None):
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        e.update(env or {})
        r = subprocess.run(WRAPPER + [MAPSYNCD, "-c", self.conf] + list(args), capture_output=True, text=True,
                           timeout=timeout, env=e)
        check_wrapper_exit(r.returncode, r.stderr)
        check_sanitizer_report(r.stderr)
        return r

    def hooks_run(self):
        """The hook recorder's lines, as (map, sha256, rows) tuples."""
        try:
            return [tuple(line.split()) for line in read(self.hook_log).splitlines()]
        except FileNotFoundError:
            return []

    def connect(self):
        return gendb.connect(self.db)

    def sql(self, statement, params=()):
        c = self.connect()
        try:
            c.execute(statement, params)
        finally:
            c.close()

    def stat_outputs(self):
        return {m: os.stat(self.output(m)) for m in MAPS if os.path.exists(self.output(m))}


class Daemon:
    """mapsyncd running in the foreground, with a private NOTIFY_SOCKET whose
    datagrams are collected in .messages, and stderr collected in .log."""

    def __init__(self, env, args=(), extra_env=None, wrap=()):
        self.env = env
        self.sock_path = os.path.join(env.dir, "notify-%d.sock" % time.monotonic_ns())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.log_lines = []
        self.lock = threading.Lock()
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        e["NOTIFY_SOCKET"] = self.sock_path
        e.update(extra_env or {})
        self.proc = subprocess.Popen(list(wrap) + WRAPPER + [MAPSYNCD, "-c", env.conf, "-v"] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=e)
        self.stop_reading = False
        self.t_sock = threading.Thread(target=self._read_sock, daemon=True)
        self.t_log = threading.Thread(target=self._read_log, daemon=True)
        self.t_sock.start()
        self.t_log.start()

    def _read_sock(self):
        while not self.stop_reading:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(data.decode())

    def _read_log(self):
        for line in self.proc.stderr:
            with self.lock:
                self.log_lines.append(line.rstrip("\n"))

    @property
    def pid(self):
        return self.proc.pid

    def notified(self, field):
        """Every value sent for field (READY, STATUS...), in order."""
        with self.lock:
            out = []
            for m in self.messages:
                for line in m.split("\n"):
                    if line.startswith(field + "="):
                        out.append(line[len(field) + 1:])
            return out

    def log(self):
        with self.lock:
            return list(self.log_lines)

    def count_log(self, pattern):
        rx = re.compile(pattern)
        return sum(1 for line in self.log() if rx.search(line))

    def wait_ready(self, timeout=20):
        wait_for(lambda: self.notified("READY") or self.proc.poll() is not None, timeout, what="READY=1")
        if not self.notified("READY"):
            raise AssertionError("mapsyncd exited with %s before READY=1:\n%s"
                                 % (self.proc.returncode, "\n".join(self.log())))

    def wait_log(self, pattern, count=1, timeout=15):
        return wait_for(lambda: self.count_log(pattern) >= count, timeout, what="log /%s/ x%d; log:\n%s"
                        % (pattern, count, "\n".join(self.log()[-30:])))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.t_log.join(5)
        self.stop_reading = True
        self.t_sock.join(5)
        self.sock.close()
        check_wrapper_exit(code, "\n".join(self.log()))
        check_sanitizer_report("\n".join(self.log()))
        return code

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.stop_reading = True
        self.t_sock.join(5)
        self.sock.close()


def _lines(entries, sep):
    """Canonical bytes: keys sorted by their lower-cased bytes."""
    out = []
    for key in sorted(entries, key=lambda k: k.encode()):
        out.append(key + sep + entries[key])
    return "".join(line + "\n" for line in out)


def expected_maps(db):
    """The four maps as the schema's rules define them, computed from the raw
    tables (for databases without hostile rows)."""
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        domains = {i: (d, a == 1) for i, d, a in c.execute("SELECT id, domain, active FROM domains")}
        vd, vm, va, pw = {}, {}, {}, {}
        for d, active in domains.values():
            if active:
                vd[d.lower()] = "OK"
        for email, dom, passwd, quota, active in c.execute(
                "SELECT email, domain_id, password, quota, active FROM email_accounts"):
            dname, dactive = domains[dom]
            if active != 1 or not dactive:
                continue
            local = email.rsplit("@", 1)[0]
            vm[email.lower()] = (dname + "/" + local + "/").lower()
            pw.setdefault(email.lower(), "{BLF-CRYPT}" + passwd + "::::::"
                          + ("userdb_quota_rule=*:storage=%dM" % quota if quota > 0 else ""))
        dests = {}
        for src, dst, dom, active in c.execute("SELECT source, destination, domain_id, active FROM aliases"):
            if active != 1 or not domains[dom][1]:
                continue
            dests.setdefault(src.lower(), set()).add(dst)
        for src, ds in dests.items():
            va[src] = ", ".join(sorted(ds, key=lambda s: s.encode()))
    finally:
        c.close()
    return {
        "virtual_domains": _lines(vd, "\t"),
        "vmailbox": _lines(vm, "\t"),
        "virtual_aliases": _lines(va, "\t"),
        "passwd": _lines(pw, ":"),
    }


class TestCase(unittest.TestCase):
    """Makes self.env, cleans it up; subclasses set ENV_ARGS."""

    ENV_ARGS = {}

    def setUp(self):
        self.env = Env(**self.ENV_ARGS)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        self.env.cleanup()

    def daemon(self, *args, **kw):
        d = Daemon(self.env, *args, **kw)
        self.daemons.append(d)
        return d

    def assert_maps_match_db(self):
        want = expected_maps(self.env.db)
        for m in MAPS:
            self.assertEqual(read(self.env.output(m)), want[m], "map %s differs from the database" % m)


def main():
    unittest.main(verbosity=2)


# --- Pieces for the watching daemon's tests (test_daemon*.py) ---------------

# A writer in a process of its own that keeps one connection open: each
# request on stdin is a JSON list of [sql, params] pairs run in order (a
# lone statement commits by itself; "BEGIN" ... "COMMIT" make one
# transaction). A request {"burst": sql, "params": [[...], ...]} runs sql
# once per params, each its own commit, as fast as it can. Every answer is
# one JSON line: {"ok": true, "t0": monotonic before the first statement,
# "t1": monotonic after the last COMMIT returned} or {"error": text}.
# CLOCK_MONOTONIC is one clock for every process, so t0/t1 compare with the
# test's time.monotonic().
_WRITER_CODE = r'''
import json, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("PRAGMA busy_timeout = 30000")
mode = c.execute("PRAGMA journal_mode").fetchone()[0]
print(json.dumps({"ok": True, "journal_mode": mode}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        t0 = time.monotonic()
        if isinstance(req, dict):
            for p in req["params"]:
                c.execute(req["burst"], p)
        else:
            for sql, params in req:
                c.execute(sql, params)
        t1 = time.monotonic()
        print(json.dumps({"ok": True, "t0": t0, "t1": t1}), flush=True)
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
'''


class Writer:
    """A SQLite writer in another process (python3 + sqlite3) that keeps its
    connection open between requests."""

    def __init__(self, db, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-c", _WRITER_CODE, db], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=e)
        hello = self._answer(30)
        self.journal_mode = hello.get("journal_mode")

    def _answer(self, timeout):
        import json
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            raise AssertionError("SQLite writer process gave no answer within %.0f s" % timeout)
        ans = json.loads(box[0])
        if "error" in ans:
            raise AssertionError("SQLite writer: " + ans["error"])
        return ans

    def _request(self, req, timeout):
        import json
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def execute(self, *statements, timeout=60):
        """Runs each statement (a string, or (sql, params)) in order; returns
        (t0, t1): monotonic time before the first, after the last returned."""
        req = [[s, []] if isinstance(s, str) else [s[0], list(s[1])] for s in statements]
        a = self._request(req, timeout)
        return a["t0"], a["t1"]

    def burst(self, sql, params_list, timeout=300):
        """One commit per params in params_list, back to back; returns (t0, t1)."""
        a = self._request({"burst": sql, "params": [list(p) for p in params_list]}, timeout)
        return a["t0"], a["t1"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def sqlite_cli(db, sql, timeout=60):
    """Runs sql with the sqlite3 command-line shell, a short-lived writer."""
    r = subprocess.run(["sqlite3", "-bail", "-cmd", ".timeout 30000", db, sql], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("sqlite3 %r failed (%d): %s" % (sql, r.returncode, r.stderr))
    return r.stdout


def gendb_process(path, timeout=300, **kw):
    """tools/gendb.py PATH in another process; kw as gendb.generate's
    (accounts=, seed=, journal=, force=True ...)."""
    args = [sys.executable, os.path.join(SRC, "tools", "gendb.py"), path]
    for k, v in kw.items():
        if v is True:
            args.append("--" + k)
        elif v not in (False, None):
            args += ["--" + k, str(v)]
    subprocess.run(args, check=True, timeout=timeout, capture_output=True)


def recorder_command(env):
    """The on_change command shipped_config(hooks=True) puts in each map."""
    return 'echo "$MAPSYNCD_MAP $MAPSYNCD_SHA256 $MAPSYNCD_ROWS" >> ' + env.hook_log


def write_script(env, name, body):
    """An executable /bin/sh script NAME in env.dir; returns its path (short
    enough for an on_change line)."""
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def config_with_hook(env, command, **kw):
    """shipped_config(**kw) with every map's on_change set to command (in
    place of the recorder)."""
    text = env.shipped_config(hooks=True, **kw)
    return text.replace("on_change = " + recorder_command(env), "on_change = " + command)


def proc_stat(pid):
    """(state, ppid, comm) of pid from /proc, or None when it is gone."""
    try:
        data = read("/proc/%d/stat" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), comm


def children_of(ppid):
    """{pid: (state, comm)} of every process whose parent is ppid."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[1] == ppid:
            out[int(name)] = (st[0], st[2])
    return out


def voluntary_switches(pid):
    """voluntary_ctxt_switches summed over every thread of pid."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        for line in read("/proc/%d/task/%s/status" % (pid, tid)).splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


SYNC_LINE = r"^(debug: )?sync: \d+ changed"


class DaemonTestCase(TestCase):
    """TestCase with helpers for the watching daemon; writers and other
    processes started through it are stopped in tearDown, before the
    daemons."""

    def setUp(self):
        super().setUp()
        self.writers = []
        # (file, comm): a file holding the pid of a process named comm that
        # the test may leave behind (a hung hook); killed with its process
        # group at the end while it still is that process.
        self.pid_files = []

    def tearDown(self):
        for w in self.writers:
            w.close()
        for path, comm in self.pid_files:
            try:
                pid = int(read(path).strip())
            except (OSError, ValueError):
                continue
            st = proc_stat(pid)
            if not st or st[2] != comm or st[0] == "Z":
                continue
            targets = [pid]
            try:
                if os.getpgid(pid) == pid:
                    targets.insert(0, -pid)
            except OSError:
                pass
            for target in targets:
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
        super().tearDown()
        for d in self.daemons:
            d.t_log.join(5)
            if not d.t_log.is_alive():
                d.proc.stderr.close()

    def writer(self, db=None):
        w = Writer(db or self.env.db)
        self.writers.append(w)
        return w

    def start(self, config_text=None, ready=True, **kw):
        """Writes the config (config_text, or shipped_config(**config kw)),
        starts the daemon, waits for READY=1."""
        cfg = {k: kw.pop(k) for k in ("hooks", "sync", "map_extra") if k in kw}
        self.env.write_config(config_text, **cfg)
        d = self.daemon(**kw)
        if ready:
            d.wait_ready()
        return d

    def wait_maps_match_db(self, db=None, timeout=20):
        """Waits until every map equals expected_maps(db)."""
        db = db or self.env.db
        last = {}

        def ok():
            want = expected_maps(db)
            for m in MAPS:
                try:
                    have = read(self.env.output(m))
                except FileNotFoundError:
                    have = None
                if have != want[m]:
                    last["map"] = m
                    return False
            return True

        try:
            wait_for(ok, timeout, interval=0.05, what="maps equal to the database")
        except AssertionError as e:
            logs = "\n".join(d for dm in self.daemons for d in dm.log()[-40:])
            raise AssertionError("%s (map %s differs); last log lines:\n%s" % (e, last.get("map"), logs))

    def sync_lines(self, d, since=0):
        """The daemon's "sync: N changed ..." records after log line since."""
        rx = re.compile(SYNC_LINE)
        return [line for line in d.log()[since:] if rx.search(line)]

    def wait_quiet(self, d, seconds=1.0, timeout=30):
        """Waits until the daemon has logged nothing for seconds."""
        end = time.monotonic() + timeout
        n = len(d.log())
        since = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            m = len(d.log())
            if m != n:
                n, since = m, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
        raise AssertionError("daemon never went quiet for %.1f s" % seconds)


def wait_notified(daemon, field, count=1, timeout=15, value=None):
    """Waits until field= was sent count times (with value, when given)."""
    def n():
        vals = daemon.notified(field)
        return len([v for v in vals if value is None or v == value])
    try:
        wait_for(lambda: n() >= count, timeout, what="%s=%s x%d" % (field, value, count))
    except AssertionError as e:
        raise AssertionError("%s; sd_notify messages: %r; last log lines:\n%s"
                             % (e, daemon.messages, "\n".join(daemon.log()[-30:])))


# --- Expected maps without touching the watched database ---------------------
# Reading the database through SQLite while waiting for the daemon creates
# -wal/-shm events that make it look again, which would hide a missed
# change. These helpers compute what the maps must become from a private
# copy (the shadow), so that the wait reads nothing but map files.

def copy_db(src, dst):
    """A consistent copy of src at dst (SQLite's backup API), in rollback
    mode. Take it before the change under test, never while waiting."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(dst + suffix)
        except FileNotFoundError:
            pass
    s = sqlite3.connect("file:%s?mode=ro" % src, uri=True)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
        d.execute("PRAGMA journal_mode = DELETE")
    finally:
        d.close()
        s.close()


class Shadow:
    """A private copy of a database in its own directory, to which a test
    applies every change it makes to the real one; expected() renders it."""

    def __init__(self, env, src=None, name="shadow"):
        d = os.path.join(env.dir, name)
        os.makedirs(d, exist_ok=True)
        self.path = os.path.join(d, "database.sqlite")
        copy_db(src or env.db, self.path)

    def sql(self, statement, params=()):
        c = sqlite3.connect(self.path, isolation_level=None)
        try:
            c.execute(statement, params)
        finally:
            c.close()

    def query(self, statement, params=()):
        c = sqlite3.connect(self.path)
        try:
            return c.execute(statement, params).fetchall()
        finally:
            c.close()

    def expected(self):
        return expected_maps(self.path)

    def active_account_ids(self, n):
        """Ids of n accounts that are active on active domains."""
        rows = self.query("SELECT a.id FROM email_accounts a JOIN domains d ON d.id = a.domain_id "
                          "WHERE a.active = 1 AND d.active = 1 ORDER BY a.id LIMIT ?", (n,))
        return [r[0] for r in rows]


def read_maps(out_dir):
    """{map: text or None} of the map files in out_dir."""
    have = {}
    for m in MAPS:
        try:
            have[m] = read(os.path.join(out_dir, m))
        except FileNotFoundError:
            have[m] = None
    return have


def wait_maps_equal(test, want, timeout=20, daemon=None, out_dir=None):
    """Waits until every map file equals want[map], reading only map files."""
    out_dir = out_dir or test.env.out
    last = {}

    def ok():
        have = read_maps(out_dir)
        for m in MAPS:
            if have[m] != want[m]:
                last["map"] = m
                return False
        return True

    try:
        wait_for(ok, timeout, interval=0.02, what="maps equal to the expected ones")
    except AssertionError as e:
        logs = "\n".join(daemon.log()[-40:]) if daemon else ""
        raise AssertionError("%s (map %s differs); last log lines:\n%s" % (e, last.get("map"), logs))
