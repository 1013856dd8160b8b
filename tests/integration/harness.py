"""Shared pieces of the integration tests: a private directory with a
generated admin-panel database, a config made from the shipped
conf/mapsyncd.conf with its paths moved there, runs of the real binary, a
daemon with its own NOTIFY_SOCKET, and an independent rendering of the
expected maps straight from the schema's rules."""

import os
import re
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

    def shipped_config(self, hooks=True, sync=None, map_extra=None):
        """conf/mapsyncd.conf with its paths in this directory. With hooks,
        each map's on_change appends "NAME SHA256 ROWS" to hooks.log instead
        of running postmap. sync: {key: value} set in [sync]. map_extra:
        {map: text} appended to that map's section."""
        text = read(os.path.join(SRC, "conf", "mapsyncd.conf"))
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
        return subprocess.run([MAPSYNCD, "-c", self.conf] + list(args), capture_output=True, text=True,
                              timeout=timeout, env=e)

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
        self.proc = subprocess.Popen(list(wrap) + [MAPSYNCD, "-c", env.conf, "-v"] + list(args),
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
