"""Shared helpers for mapsyncd's end-to-end tests: the real Postfix and
Dovecot read what the real mapsyncd writes.

Everything runs privately under one temporary folder: the admin-panel
database, conf/mapsyncd.conf with only its paths moved there, the maps, a
Postfix instance (own config, queue and data directories, smtpd on a free
loopback port) and a Dovecot instance (own base_dir, state and log, IMAP on
a free loopback port). Python 3 standard library only. Every service a test
starts is stopped in a finally block, also when the test is killed with
SIGTERM (meson's timeout). Tests never skip: a missing program is a failure.

Environment:
  MAPSYNCD             the mapsyncd binary (required)
  MAPSYNCD_SOURCE_ROOT the source tree (default: two levels above this file)
  MAPSYNCD_CONF        the config to test (default: conf/mapsyncd.conf)
  E2E_KEEP=1           keep the temporary folder for inspection
  E2E_LATENCY_LIMIT_S  the live tests' deadline after COMMIT (default 2)
  E2E_LOCK_WAIT_S      how long to wait for another e2e test on this machine
                       (default 420; the tests take a machine-wide lock)
"""

import contextlib
import ctypes
import fcntl
import grp
import os
import pwd
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
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get("MAPSYNCD_SOURCE_ROOT") or os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(SOURCE_ROOT, "tools")
SHIPPED_CONF = os.environ.get("MAPSYNCD_CONF") or os.path.join(SOURCE_ROOT, "conf", "mapsyncd.conf")
LATENCY_LIMIT_S = float(os.environ.get("E2E_LATENCY_LIMIT_S", "2"))

# The uid/gid that owns the virtual mailboxes, for Postfix's virtual(8)
# delivery agent and Dovecot's mail processes alike. "nobody" exists on every
# Debian system and is above both programs' minimum uid.
VMAIL_UID = pwd.getpwnam("nobody").pw_uid
VMAIL_GID = grp.getgrnam("nogroup").gr_gid

POSTFIX_MAPS = ("virtual_domains", "vmailbox", "virtual_aliases")


class TestFailure(AssertionError):
    """A check failed; the message says what was expected and what was seen."""


def log(msg):
    print(msg, flush=True)


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


# --------------------------------------------------------------------------
# Running a test script


class Checks:
    """Collects named checks so one failure does not hide the others."""

    def __init__(self):
        self.passed = []
        self.failed = []

    def run(self, name, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except TestFailure as e:
            self.failed.append(name)
            log(f"FAIL {name}: {e}")
            return False
        except Exception:  # an unexpected error is a failure too, with its trace
            self.failed.append(name)
            log(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
            return False
        self.passed.append(name)
        log(f"ok   {name}")
        return True

    def expect(self, name, cond, msg):
        return self.run(name, check, cond, msg)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"killed by signal {signum}")


def set_subreaper():
    """Daemonized services (postfix master, dovecot) are re-parented to this
    process rather than to a PID 1 that may not reap them, so their exit can
    be awaited and no zombie is left behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(test_fn):
    """Runs test_fn(checks, tmp) with a fresh temporary folder; exits 0 when
    every check passed, 1 otherwise (never 77: these tests do not skip)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    set_subreaper()
    checks = Checks()
    tmp = make_tmpdir()
    ok = False
    try:
        preflight()
        lock = take_machine_lock()
        test_fn(checks, tmp)
        lock.close()
        ok = not checks.failed and bool(checks.passed)
    except TestFailure as e:
        checks.failed.append("setup")
        log(f"FAIL: {e}")
    except BaseException:
        checks.failed.append("setup")
        log("FAIL: unexpected error\n" + traceback.format_exc())
    finally:
        reap_orphans()
        if os.environ.get("E2E_KEEP") or not ok:
            log(f"kept {tmp} for inspection (logs, maps, configs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    n_ok, n_bad = len(checks.passed), len(checks.failed)
    log(f"{n_ok} passed, {n_bad} failed")
    sys.exit(0 if ok else 1)


LOCK_PATH = "/run/lock/mapsyncd-e2e.lock" if os.path.isdir("/run/lock") else "/tmp/mapsyncd-e2e.lock"
LOCK_WAIT_S = float(os.environ.get("E2E_LOCK_WAIT_S", "420"))


def take_machine_lock():
    """One e2e test at a time on this machine, also across separate meson
    runs: they share /etc/postfix/main.cf and the timing measurements must
    not compete. Returns the open lock file (closing it releases the lock;
    so does the process's death)."""
    f = open(LOCK_PATH, "a")
    start = time.monotonic()
    said = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() - start > LOCK_WAIT_S:
                f.close()
                fail(f"another e2e test held {LOCK_PATH} for {LOCK_WAIT_S:.0f} s")
            if not said:
                log(f"waiting for {LOCK_PATH}: another e2e test runs on this machine")
                said = True
            time.sleep(0.5)


def make_tmpdir():
    tmp = tempfile.mkdtemp(prefix="mapsyncd-e2e-")
    # Dovecot's auth process (user dovecot) and Postfix's daemons (user
    # postfix) must reach files below it.
    os.chmod(tmp, 0o755)
    return tmp


def preflight():
    if os.geteuid() != 0:
        fail("the e2e tests run Postfix and Dovecot instances and must run as root")
    exe = os.environ.get("MAPSYNCD")
    check(exe, "MAPSYNCD is not set: it names the mapsyncd binary under test")
    check(os.access(exe, os.X_OK), f"MAPSYNCD={exe} is not an executable file")
    check(os.path.isfile(SHIPPED_CONF), f"{SHIPPED_CONF} is missing")
    for prog in ("postfix", "postmap", "postconf", "dovecot", "doveadm", "doveconf"):
        check(shutil.which(prog) or os.path.exists(f"/usr/sbin/{prog}"),
              f"{prog} is not installed: run tools/install-deps test as root "
              "(postfix, postfix-lmdb, dovecot-core, dovecot-imapd)")
    check(os.path.exists("/usr/lib/postfix/postfix-lmdb.so"),
          "Postfix has no lmdb support: install postfix-lmdb")
    check(os.path.exists("/usr/lib/dovecot/imap-login"),
          "Dovecot has no IMAP server: install dovecot-imapd")
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.05):
    """Polls pred() until it returns a true value or timeout seconds pass;
    returns (value, seconds waited). Bounded: never loops forever."""
    start = time.monotonic()
    while True:
        v = pred()
        el = time.monotonic() - start
        if v or el >= timeout:
            return v, el
        time.sleep(interval)


def run(argv, timeout=120, check_rc=False, env=None, **kw):
    """Runs a command to completion, returning (rc, stdout, stderr)."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace", timeout=timeout, env=env, **kw)
    if check_rc and p.returncode != 0:
        fail(f"{' '.join(argv)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------
# The shipped config, with only its paths moved


class Conf:
    """conf/mapsyncd.conf rewritten so that the database, state_dir, every
    map output and the paths of those outputs in the hooks live below tmp.
    Queries, formats, modes, owners and hook commands stay as shipped."""

    def __init__(self, tmp, db_path, src=SHIPPED_CONF):
        self.src = src
        self.tmp = tmp
        self.db_path = db_path
        self.root = os.path.join(tmp, "root")  # outputs keep their shipped path below it
        self.state_dir = os.path.join(tmp, "state")
        self.path = os.path.join(tmp, "mapsyncd.conf")
        self.maps = {}  # map name -> {"output", "format", "on_invalid", ...}
        self.hooks = []  # (section, key, command text)
        with open(src) as f:
            self.original = f.read()
        self.text = self._rewrite(self.original)
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.path, "w") as f:
            f.write(self.text)

    _section_re = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]")
    _key_re = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\s*[=:]\s*)(.*?)(\s+;.*)?$")

    def _rewrite(self, text):
        lines = text.split("\n")
        section, key = "", None
        parsed = []  # (section, key, line index, is_continuation)
        for i, line in enumerate(lines):
            st = line.strip()
            if not st or st[0] in ";#":
                continue
            m = self._section_re.match(line)
            if m:
                section, key = m.group(1), None
                kind, _, name = section.partition(" ")
                if kind == "map":
                    self.maps.setdefault(name.strip(), {})
                continue
            if line[0] in " \t" and key is not None:
                parsed.append((section, key, i, True))
                continue
            m = self._key_re.match(line)
            if not m:
                continue
            key = m.group(1)
            parsed.append((section, key, i, False))

        moved = {}  # old absolute output path -> new path
        for section, key, i, cont in parsed:
            if cont:
                continue
            m = self._key_re.match(lines[i])
            name, sep, value, comment = m.group(1), m.group(2), m.group(3), m.group(4) or ""
            new = None
            if section == "database" and key == "path":
                new = self.db_path
            elif section == "sync" and key == "state_dir":
                new = self.state_dir
            elif section.startswith("map ") and key == "output":
                check(value.startswith("/"), f"{self.src}: output {value!r} is not absolute")
                new = self.root + value
                moved[value] = new
                os.makedirs(os.path.dirname(new), exist_ok=True)
            if new is not None:
                lines[i] = f"{name}{sep}{new}{comment}"
            if section.startswith("map "):
                self.maps[section[4:].strip()][key] = new if new is not None else value

        # Hook commands: every shipped output path they name moves with the
        # output (longest first, so /etc/x is not a prefix hit of /etc/x2).
        olds = sorted(moved, key=len, reverse=True)
        pat = re.compile("|".join(r"(?<![\w./-])" + re.escape(o) + r"(?![\w.-])" for o in olds)) if olds else None
        for section, key, i, cont in parsed:
            if key not in ("on_change", "command"):
                continue
            if pat:
                lines[i] = pat.sub(lambda m: moved[m.group(0)], lines[i])
            self.hooks.append((section, key, lines[i].strip()))
        for name, m in self.maps.items():
            if "on_change" in m and pat:
                m["on_change"] = pat.sub(lambda x: moved[x.group(0)], m["on_change"])

        # Nothing outside tmp may be written by the test: no hook may still
        # name a path below /etc or /var.
        for section, key, cmd in self.hooks:
            for tok in re.findall(r"(?:^|[\s:=])(/(?:etc|var|run|srv)/[^\s;'\"]*)", cmd):
                fail(f"{self.src}: [{section}] {key} names {tok}, which is not a map output "
                     "the test can move; it would touch the system")
        return "\n".join(lines)

    def output(self, name):
        try:
            return self.maps[name]["output"]
        except KeyError:
            fail(f"{self.src} has no [map {name}] with an output (maps: {sorted(self.maps)})")

    def maps_of_format(self, fmt):
        return [n for n, m in self.maps.items() if m.get("format", "postfix") == fmt]

    def passwd_map(self):
        names = self.maps_of_format("passwd")
        check(len(names) == 1, f"{self.src}: expected exactly one map with format = passwd, found {names}")
        return names[0]

    def postfix_map(self, hint):
        """The postfix-format map whose name or output mentions hint
        (virtual_domains, vmailbox, virtual_aliases)."""
        for n, m in self.maps.items():
            if m.get("format", "postfix") == "postfix" and (
                    n == hint or os.path.basename(m.get("output", "")) == hint):
                return n
        fail(f"{self.src}: no postfix map named or writing {hint!r} (maps: {sorted(self.maps)})")


# --------------------------------------------------------------------------
# mapsyncd


def mapsyncd_exe():
    return os.environ["MAPSYNCD"]


def mapsyncd_once(conf, timeout=120):
    rc, out, err = run([mapsyncd_exe(), "-c", conf.path, "--once"], timeout=timeout)
    return rc, out + err


class Daemon:
    """mapsyncd in its default mode (foreground, watching the database).
    Readiness: READY=1 on a private NOTIFY_SOCKET (sd_notify), with a
    fallback on every output existing and staying unchanged for a second."""

    def __init__(self, conf):
        self.conf = conf
        self.proc = None
        self.log_path = os.path.join(conf.tmp, "mapsyncd.log")
        self.notify_path = os.path.join(conf.tmp, "notify.sock")
        self.sock = None
        self.logf = None
        self.notifications = []

    def start(self, timeout=60):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        # Drained all the time, as systemd does: with a full socket buffer
        # sd_notify() would block the daemon.
        self.reader = threading.Thread(target=self._read_notify, daemon=True)
        self.reader.start()
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        env.pop("JOURNAL_STREAM", None)  # plain lines on stderr, into our log
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([mapsyncd_exe(), "-c", self.conf.path], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf, env=env)
        start = time.monotonic()
        stable_since, last_sig = None, None
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                fail(f"mapsyncd (daemon mode) exited with status {self.proc.returncode} while starting;"
                     f" its output:\n{self.log()}")
            if self.ready.wait(0.05):
                log(f"mapsyncd ready (READY=1) after {time.monotonic() - start:.2f} s")
                return
            sig = self._outputs_signature()
            if sig is not None and sig == last_sig:
                if stable_since and time.monotonic() - stable_since >= 1.0 and time.monotonic() - start > 3:
                    log("mapsyncd sent no READY=1; its outputs exist and are settled: going on")
                    return
            else:
                stable_since, last_sig = time.monotonic(), sig
        fail(f"mapsyncd did not become ready within {timeout} s; its output:\n{self.log()}")

    def _outputs_signature(self):
        sig = []
        for m in self.conf.maps.values():
            try:
                st = os.stat(m["output"])
            except (FileNotFoundError, KeyError):
                return None
            sig.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def _read_notify(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:  # closed by stop()
                return
            msg = data.decode(errors="replace")
            self.notifications.append(msg)
            if "READY=1" in msg.split("\n"):
                self.ready.set()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return read_text(self.log_path)

    def stop(self, timeout=20):
        """SIGTERM, then SIGKILL; returns the exit status (None if never started)."""
        try:
            if self.proc is None:
                return None
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"mapsyncd ignored SIGTERM for {timeout} s: killing it")
                    self.proc.kill()
                    self.proc.wait(10)
            return self.proc.returncode
        finally:
            if self.logf:
                self.logf.close()
            if self.sock:
                self.sock.close()


# --------------------------------------------------------------------------
# The admin-panel database


_gendb = []


def import_gendb():
    if not _gendb:
        mod = None
        if os.path.isfile(os.path.join(TOOLS, "gendb.py")):
            sys.path.insert(0, TOOLS)
            try:
                import gendb as mod
            finally:
                sys.path.remove(TOOLS)
        _gendb.append(mod)
    return _gendb[0]


def connect(db_path):
    db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def commit(db, statements):
    """Runs the statements in one transaction; returns time.monotonic() at
    the moment COMMIT returned."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, args in statements:
            db.execute(sql, args)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return time.monotonic()


NOW = "2025-01-01 00:00:00"


def add_domain(db, domain, active=1):
    cur = db.execute("INSERT INTO domains (domain, active, created_at, updated_at) VALUES (?, ?, ?, ?)",
                     (domain, active, NOW, NOW))
    return cur.lastrowid


def domain_id(db, domain):
    row = db.execute("SELECT id FROM domains WHERE domain = ?", (domain,)).fetchone()
    check(row, f"no domain {domain} in the database")
    return row[0]


def account_sql(domain_id_, email, password_hash, quota=1024, active=1):
    local = email.split("@", 1)[0]
    return ("INSERT INTO email_accounts (domain_id, email, username, password, quota, active,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (domain_id_, email, local, password_hash, quota, active, NOW, NOW))


def alias_sql(domain_id_, source, destination, active=1):
    return ("INSERT INTO aliases (domain_id, source, destination, active, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (domain_id_, source, destination, active, NOW, NOW))


# --------------------------------------------------------------------------
# What the maps must hold. Regular rows (written by tools/gendb.py without
# --hostile) follow the schema's rules (schema/admin-panel.sql): an inactive
# domain hides its accounts and aliases, inactive rows are absent, keys are
# lower case, the mailbox path is "<domain>/<local part>/", rows sharing a
# source become one line. The hostile rows carry their own expectation
# (gendb.HOSTILE_ROWS[...]["expect"]). Derived here from the database's rows,
# independently of the shipped queries.


def generate_db(db_path, accounts=100, hostile=True, seed=1, journal="wal"):
    """tools/gendb.py's database; returns {"accounts": n, "alias_rows": n}
    (the ids of the regular rows; hostile rows come after them)."""
    gendb = import_gendb()
    check(gendb is not None, f"{TOOLS}/gendb.py is missing")
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    counts = gendb.generate(db_path, accounts=accounts, hostile=hostile, seed=seed, journal=journal)
    n_hostile = {"email_accounts": 0, "aliases": 0}
    if hostile:
        for r in gendb.HOSTILE_ROWS:
            n_hostile[r["table"]] += 1
    return {"accounts": counts["email_accounts"] - n_hostile["email_accounts"],
            "alias_rows": counts["aliases"] - n_hostile["aliases"]}


def expected_maps(db, regular):
    """{"virtual_domains": {key: None}, "vmailbox": {key: path},
    "virtual_aliases": {key: [destinations]}, "passwd": {key: (hash, quota)}}
    for a database made by generate_db (regular: what it returned)."""
    gendb = import_gendb()
    exp = {"virtual_domains": {}, "vmailbox": {}, "virtual_aliases": {}, "passwd": {}}
    for (dom,) in db.execute("SELECT domain FROM domains WHERE active"):
        exp["virtual_domains"][dom.lower()] = None
    rows = db.execute("SELECT a.email, d.domain, a.password, a.quota FROM email_accounts a"
                      " JOIN domains d ON d.id = a.domain_id WHERE a.active AND d.active"
                      " AND a.id <= ? ORDER BY a.id", (regular["accounts"],)).fetchall()
    for email, dom, pw, quota in rows:
        local = email.split("@", 1)[0]
        exp["vmailbox"][email.lower()] = f"{dom}/{local}/".lower()
        exp["passwd"][email.lower()] = (pw, quota)
    for src, dst in db.execute("SELECT a.source, a.destination FROM aliases a JOIN domains d"
                               " ON d.id = a.domain_id WHERE a.active AND d.active AND a.id <= ?"
                               " ORDER BY a.id", (regular["alias_rows"],)):
        dests = exp["virtual_aliases"].setdefault(src.lower(), [])
        if dst not in dests:
            dests.append(dst)
    have_hostile = db.execute("SELECT count(*) FROM email_accounts WHERE id > ?",
                              (regular["accounts"],)).fetchone()[0]
    if not have_hostile:
        return exp
    for r in gendb.HOSTILE_ROWS:
        v = r["values"]
        for m, verdict in r["expect"].items():
            if verdict != "valid":
                continue
            key = r["key"]
            if m == "virtual_aliases":
                dests = exp[m].setdefault(key, [])
                if v["destination"] not in dests:
                    dests.append(v["destination"])
            elif m == "vmailbox":
                exp[m][key] = f"{gendb.ACTIVE_DOMAIN}/{key.split('@', 1)[0]}/"
            elif m == "passwd":
                # The first row by value order wins (DESIGN: ORDER BY 1, 2).
                pw = v.get("password", gendb.TEST_HASHES[0])
                old = exp[m].get(key)
                if old is None or pw < old[0]:
                    exp[m][key] = (pw, v.get("quota", 1024))
    return exp


def hostile_invalid_keys(gendb, map_name):
    """Lookup keys that the invalid hostile rows of a map could inject or
    appear under, in lower case: each line of the key, after stripping, and
    every address-like word in the value."""
    keys = set()
    for r in gendb.HOSTILE_ROWS:
        if r["expect"].get(map_name) != "invalid":
            continue
        for col in ("source", "destination", "email"):
            val = r["values"].get(col)
            if val is None:
                continue
            if isinstance(val, bytes):
                val = val.decode(errors="replace")
            for part in re.split(r"[\s\x00]+", val):
                if "@" in part:
                    keys.add(part.lower())
    return keys


# --------------------------------------------------------------------------
# Postfix


def postmap_q(key, table):
    """(found, value) for postmap -q KEY TABLE."""
    rc, out, err = run(["postmap", "-q", key, table], timeout=60)
    check(rc in (0, 1) and not err.strip(), f"postmap -q {key!r} {table} failed (status {rc}): {err.strip()}")
    return rc == 0, out.rstrip("\n")


def postmap_s(table):
    """The whole table as {key: value}, read back with postmap -s."""
    rc, out, err = run(["postmap", "-s", table], timeout=60)
    check(rc == 0 and not err.strip(), f"postmap -s {table} failed (status {rc}): {err.strip()}")
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition("\t")
        check(k not in res, f"postmap -s {table} lists {k!r} twice")
        res[k] = v
    return res


def age_config(path):
    """Postfix programs wait (300 ms at a time, up to 2 s) while main.cf is
    younger than a second, lest they read a half-edited file: date a file
    just written back, so the first postmap of a test is not slow."""
    t = time.time() - 10
    os.utime(path, (t, t))


class SystemPostfixConfig:
    """The default /etc/postfix/main.cf: postmap (the shipped hooks call it
    without -c) needs it, and it must list a private instance's config
    directory in alternate_config_directories. A "No configuration" install
    has none: it is created from Debian's template and removed afterwards;
    an existing one only gets the private directory added and taken out."""

    MAIN_CF = "/etc/postfix/main.cf"
    TEMPLATES = ("/usr/share/postfix/main.cf.debian", "/usr/share/postfix/main.cf.dist")

    def __init__(self):
        self.created = False
        self.added = []

    def __enter__(self):
        if not os.path.exists(self.MAIN_CF):
            for t in self.TEMPLATES:
                if os.path.exists(t):
                    shutil.copyfile(t, self.MAIN_CF)
                    break
            else:
                with open(self.MAIN_CF, "w") as f:
                    f.write("compatibility_level = 3.6\n")
            os.chmod(self.MAIN_CF, 0o644)
            age_config(self.MAIN_CF)
            self.created = True
            log(f"created {self.MAIN_CF} (Postfix was installed with 'No configuration')")
        return self

    def _alternates(self):
        rc, out, err = run(["postconf", "-h", "alternate_config_directories"], check_rc=True)
        return [d for d in re.split(r"[\s,]+", out.strip()) if d]

    def add_alternate(self, d):
        cur = self._alternates()
        if d not in cur:
            run(["postconf", "-e", "alternate_config_directories=" + ", ".join(cur + [d])], check_rc=True)
            age_config(self.MAIN_CF)
            self.added.append(d)

    def __exit__(self, *exc):
        if self.created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.MAIN_CF)
            return False
        if self.added and os.path.exists(self.MAIN_CF):
            cur = [d for d in self._alternates() if d not in self.added]
            run(["postconf", "-e", "alternate_config_directories=" + ", ".join(cur)])
        return False


MASTER_CF = """\
# Private e2e instance: Debian's services without chroot, smtpd on loopback.
{smtpd_addr} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance below tmp/postfix: its own config, queue
    and data directories, smtpd on 127.0.0.1:port, virtual mailbox delivery
    into tmp/vmail, reading the three generated lmdb: tables."""

    def __init__(self, tmp, sysconf, maps, extra_main=None):
        """maps: {"virtual_domains": path, "vmailbox": path, "virtual_aliases": path}.
        extra_main: more main.cf parameters (milters, SASL...)."""
        self.base = os.path.join(tmp, "postfix")
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "queue")
        self.data_dir = os.path.join(self.base, "data")
        self.log_dir = os.path.join(self.base, "log")
        self.maillog = os.path.join(self.log_dir, "maillog")
        self.vmail = os.path.join(tmp, "vmail")
        self.port = free_port()
        self.sysconf = sysconf
        self.maps = maps
        self.started = False
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.log_dir, self.vmail):
            os.makedirs(d, exist_ok=True)
        os.chown(self.data_dir, pwd.getpwnam("postfix").pw_uid, -1)
        os.chown(self.vmail, VMAIL_UID, VMAIL_GID)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.e2e.test",
            "mydomain": "e2e.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": "",
            "local_transport": "error:local delivery is disabled",
            "default_transport": "error:no outbound mail from the e2e instance",
            "relay_transport": "error:no outbound mail from the e2e instance",
            "alias_maps": "",
            "alias_database": "",
            "virtual_mailbox_domains": "lmdb:" + maps["virtual_domains"],
            "virtual_mailbox_maps": "lmdb:" + maps["vmailbox"],
            "virtual_alias_maps": "lmdb:" + maps["virtual_aliases"],
            "virtual_mailbox_base": self.vmail,
            "virtual_uid_maps": f"static:{VMAIL_UID}",
            "virtual_gid_maps": f"static:{VMAIL_GID}",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            # No /dev/log here: log to a file (postlogd), or errors are silent.
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.log_dir,
        }
        main.update(extra_main or {})
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write("# Private Postfix instance for mapsyncd's e2e tests.\n")
            for k, v in main.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(smtpd_addr=f"127.0.0.1:{self.port}"))
        age_config(os.path.join(self.config_dir, "main.cf"))
        age_config(os.path.join(self.config_dir, "master.cf"))
        sysconf.add_alternate(self.config_dir)

    def postfix(self, *args, timeout=120):
        rc, out, err = run(["postfix", "-c", self.config_dir, *args], timeout=timeout)
        return rc, (out + err).strip()

    def maillog_text(self):
        return read_text(self.maillog)

    def check(self):
        """postfix -c DIR check: (rc, what it printed + what it logged)."""
        before = len(self.maillog_text())
        rc, out = self.postfix("check")
        return rc, (out + "\n" + self.maillog_text()[before:]).strip()

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def start(self):
        self.started = True
        rc, out = self.postfix("start")
        if rc != 0:
            fail(f"postfix -c {self.config_dir} start exited {rc}: {out}\nmaillog:\n{self.maillog_text()}")
        _, waited = wait_for(lambda: self._smtp_banner(), 30, 0.1)
        check(self._smtp_banner(), f"Postfix smtpd does not answer on 127.0.0.1:{self.port} after {waited:.1f} s;"
              f" maillog:\n{self.maillog_text()}")
        log(f"postfix started: config {self.config_dir}, smtpd 127.0.0.1:{self.port}, master pid {self.master_pid()}")

    def _smtp_banner(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        rc, out = self.postfix("stop", timeout=60)
        if pid:
            gone, _ = wait_for(lambda: not _pid_alive(pid), 30, 0.1)
            if not gone:
                log(f"postfix master {pid} still runs after 'postfix stop' ({out}): killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if rc != 0 and pid:
            log(f"postfix stop exited {rc}: {out}")
        self.started = False

    def rcpt(self, address, sender="sender@outside.test"):
        """(code, message) of RCPT TO:<address> in a fresh SMTP session."""
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.ehlo("client.e2e.test")
            code, msg = s.mail(sender)
            check(code == 250, f"MAIL FROM refused: {code} {msg!r}")
            code, msg = s.rcpt(address)
            return code, msg.decode(errors="replace")

    def send(self, address, body_token, sender="sender@outside.test"):
        import smtplib
        msg = (f"From: <{sender}>\r\nTo: <{address}>\r\nSubject: e2e {body_token}\r\n"
               f"Message-ID: <{body_token}@e2e.test>\r\n\r\n{body_token}\r\n")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.ehlo("client.e2e.test")
            refused = s.sendmail(sender, [address], msg)
            check(not refused, f"SMTP refused {address}: {refused}")

    def maildir_has(self, mailbox_path, token):
        """True when a message holding token sits in vmail/<mailbox_path>new/."""
        d = os.path.join(self.vmail, mailbox_path, "new")
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return False
        for n in names:
            if token in read_text(os.path.join(d, n)):
                return True
        return False


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie re-parented to us: reap it.
    try:
        p, _ = os.waitpid(pid, os.WNOHANG)
        if p == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------
# Dovecot


class Dovecot:
    """A private Dovecot below tmp/dovecot: own base_dir, state_dir and log,
    IMAP on 127.0.0.1:port without TLS, passdb and userdb passwd-file on the
    generated file, Maildirs in tmp/vmail as nobody:nogroup."""

    def __init__(self, tmp, passwd_file, auth_socket=None):
        """auth_socket: a path for an auth-client listener (Postfix's
        Dovecot SASL), mode 0666."""
        self.base = os.path.join(tmp, "dovecot")
        self.base_dir = os.path.join(self.base, "run")
        self.state_dir = os.path.join(self.base, "state")
        self.log_path = os.path.join(self.base, "dovecot.log")
        self.conf_path = os.path.join(self.base, "dovecot.conf")
        self.vmail = os.path.join(tmp, "vmail")
        self.port = free_port()
        self.passwd_file = passwd_file
        self.started = False
        for d in (self.base, self.base_dir, self.state_dir, self.vmail):
            os.makedirs(d, exist_ok=True)
        os.chown(self.vmail, VMAIL_UID, VMAIL_GID)
        name = os.path.basename(tmp)
        with open(self.conf_path, "w") as f:
            f.write(f"""\
# Private Dovecot for mapsyncd's e2e tests.
instance_name = {name}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
# Tests log in with wrong passwords on purpose: answer at once.
auth_failure_delay = 0
auth_cache_size = 0
mail_location = maildir:{self.vmail}/%d/%n
mail_uid = {VMAIL_UID}
mail_gid = {VMAIL_GID}
first_valid_uid = 1
mail_plugins = quota
passdb {{
  driver = passwd-file
  args = {passwd_file}
}}
userdb {{
  driver = passwd-file
  args = {passwd_file}
}}
plugin {{
  quota = maildir:User quota
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
{self._auth_listener(auth_socket)}service anvil {{
  # No growing penalty for an address that failed to log in.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
""")

    @staticmethod
    def _auth_listener(path):
        if not path:
            return ""
        return f"service auth {{\n  unix_listener {path} {{\n    mode = 0666\n  }}\n}}\n"

    def doveadm(self, *args, timeout=60):
        return run(["doveadm", "-c", self.conf_path, *args], timeout=timeout)

    def start(self):
        rc, out, err = run(["doveconf", "-c", self.conf_path, "-n"], timeout=60)
        check(rc == 0, f"doveconf rejects {self.conf_path}: {err.strip()}")
        self.started = True
        # dovecot daemonizes; its children inherit stdout/stderr, so they go
        # to a file, never to a pipe that something waits on.
        with open(os.path.join(self.base, "dovecot.stderr"), "ab") as errf:
            p = subprocess.run(["dovecot", "-c", self.conf_path], stdin=subprocess.DEVNULL,
                               stdout=errf, stderr=errf, timeout=60)
        if p.returncode != 0:
            fail(f"dovecot -c {self.conf_path} exited {p.returncode}:\n"
                 f"{read_text(os.path.join(self.base, 'dovecot.stderr'))}\n{read_text(self.log_path)}")
        up, waited = wait_for(self._imap_banner, 30, 0.1)
        check(up, f"Dovecot does not answer IMAP on 127.0.0.1:{self.port} after {waited:.1f} s; log:\n"
              f"{read_text(self.log_path)}")
        log(f"dovecot started: {self.conf_path}, IMAP 127.0.0.1:{self.port}, master pid {self.master_pid()}")

    def _imap_banner(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                return s.recv(512).startswith(b"* OK")
        except OSError:
            return False

    def master_pid(self):
        try:
            with open(os.path.join(self.base_dir, "master.pid")) as f:
                return int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def log_text(self):
        return read_text(self.log_path)

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        rc, out, err = run(["doveadm", "-c", self.conf_path, "stop"], timeout=60)
        if pid:
            gone, _ = wait_for(lambda: not _pid_alive(pid), 30, 0.1)
            if not gone:
                log(f"dovecot master {pid} still runs after 'doveadm stop' ({err.strip()}): killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.started = False

    def auth_test(self, user, password):
        """(ok, output) of doveadm auth test USER PASSWORD."""
        rc, out, err = self.doveadm("auth", "test", user, password)
        # 77 (EX_NOPERM): authentication failed; anything else is an error.
        # A temporary failure (the file unreadable, say) is no answer at all.
        check(rc in (0, 77) and "temp_fail" not in out + err,
              f"doveadm auth test {user!r} exited {rc}: {(out + err).strip()}")
        return rc == 0, (out + err).strip()

    def user(self, user):
        """{field: value} of doveadm user USER, or None when the user is unknown."""
        rc, out, err = self.doveadm("user", user)
        if rc == 67:  # EX_NOUSER
            return None
        check(rc == 0, f"doveadm user {user!r} exited {rc}: {(out + err).strip()}")
        fields = {}
        for line in out.splitlines()[1:]:
            k, _, v = line.partition("\t")
            fields[k.strip()] = v.strip()
        return fields

    def imap_login(self, user, password):
        """True when IMAP LOGIN succeeds (then logs out), False when refused."""
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        try:
            c.login(user, password)
        except imaplib.IMAP4.error:
            return False
        finally:
            with contextlib.suppress(Exception):
                c.logout()
        return True
