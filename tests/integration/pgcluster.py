"""Private PostgreSQL 15 clusters for the tests: initdb as the unprivileged
user postgres in a private directory, a free loopback port and a private
unix-socket directory; started and stopped by the test (stop() is always
called from cleanup, and at exit for a cluster a test forgot). The admin
panel's schema as Laravel's PostgreSQL migrations make it
(tests/pg/admin-panel.sql), the trigger file conf/mapsyncd-notify.sql, and
a copy of a generated SQLite database's rows."""

import atexit
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

try:
    import psycopg2
except ImportError:
    # Debian's python3-psycopg2 (tools/install-deps) under another
    # python3 of the same version (a pyenv shim on PATH).
    sys.path.append("/usr/lib/python3/dist-packages")
    import psycopg2
import psycopg2.extras

PG_BIN = os.environ.get("MAPSYNCD_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
SRC = os.environ.get("MAPSYNCD_SOURCE_ROOT",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCHEMA = os.path.join(SRC, "tests", "pg", "admin-panel.sql")
NOTIFY_SQL = os.path.join(SRC, "conf", "mapsyncd-notify.sql")
TABLES = ("domains", "email_accounts", "aliases")
# The role mapsyncd connects as: it may read the three tables, nothing more.
READER_ROLE = "mapsyncd"
READER_PASSWORD = "reader-secret-%d" % os.getpid()

_running = set()


def _stop_all():
    for c in list(_running):
        c.stop()


atexit.register(_stop_all)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv, **kw):
    return subprocess.run(argv, user=PG_USER, group=PG_USER, capture_output=True, text=True, **kw)


class Cluster:
    """One cluster: data/, sock/, log; database 'mail'. Its default
    collation is ICU's en-US (as on a production host: 'a-b' sorts after
    'ab', 'B' between 'a' and 'c') and lower() is locale-aware there (it
    turns 'É' into 'é'): what mapsyncd must not follow."""

    def __init__(self, name="pg", base=None, wal_level="logical"):
        self.base = tempfile.mkdtemp(prefix="mapsyncd-%s-" % name, dir=base)
        self.owns_base = True
        pw = pwd.getpwnam(PG_USER)
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.sock = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgresql.log")
        self.port = None
        self.dbname = "mail"
        self.running = False
        os.mkdir(self.sock)
        os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        r = _as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", PG_USER, "-A", "trust",
                          "-E", "UTF8", "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US", "-N"], cwd=self.base, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout + r.stderr)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# mapsyncd tests\nlisten_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\n" % self.sock +
                    "wal_level = %s\nmax_wal_senders = 10\nmax_replication_slots = 10\n" % wal_level +
                    "max_connections = 40\nshared_buffers = 16MB\nfsync = off\n"
                    "full_page_writes = off\nlog_min_messages = warning\n"
                    "wal_retrieve_retry_interval = 200ms\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all %s 127.0.0.1/32 scram-sha-256\n" % READER_ROLE +
                    "host all all 127.0.0.1/32 trust\n"
                    "host replication all 127.0.0.1/32 trust\n")

    # --- life cycle ---
    def start(self):
        for attempt in range(5):
            if self.port is None or attempt > 0:
                self.port = free_port()
            r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                              "-t", "60", "-o", "-p %d" % self.port, "start"], cwd=self.base, timeout=90)
            if r.returncode == 0:
                self.running = True
                _running.add(self)
                return self
            if "could not bind" not in self.log() and "already in use" not in self.log():
                break
        raise RuntimeError("pg_ctl start failed:\n%s%s\n%s" % (r.stdout, r.stderr, self.log()[-3000:]))

    def restart_same_port(self):
        """start() again on the port it had (clients reconnect to it)."""
        r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                          "-t", "60", "-o", "-p %d" % self.port, "start"], cwd=self.base, timeout=90)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl start failed:\n%s%s" % (r.stdout, r.stderr))
        self.running = True
        _running.add(self)

    def stop(self, mode="fast"):
        if not self.running:
            return
        r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t", "60", "-m", mode,
                          "stop"], cwd=self.base, timeout=90)
        if r.returncode != 0 and mode != "immediate":
            _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-m", "immediate", "stop"],
                         cwd=self.base, timeout=90)
        self.running = False
        _running.discard(self)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # --- clients ---
    def connect(self, dbname=None, autocommit=True, **kw):
        c = psycopg2.connect(host=self.sock, port=self.port, user=PG_USER, dbname=dbname or self.dbname, **kw)
        c.autocommit = autocommit
        return c

    def sql(self, statement, params=None, dbname=None):
        c = self.connect(dbname=dbname)
        try:
            with c.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def conninfo(self, user=READER_ROLE, tcp=True):
        """What [database] conninfo says: TCP on loopback (password from a
        passfile) or the unix socket."""
        if tcp:
            return "host=127.0.0.1 port=%d dbname=%s user=%s" % (self.port, self.dbname, user)
        return "host=%s port=%d dbname=%s user=%s" % (self.sock, self.port, self.dbname, user)

    def write_passfile(self, path):
        with open(path, "w") as f:
            f.write("127.0.0.1:%d:%s:%s:%s\n" % (self.port, self.dbname, READER_ROLE, READER_PASSWORD))
        os.chmod(path, 0o600)
        return path

    # --- the admin panel's database ---
    def create_panel_db(self, triggers=True):
        """Database 'mail' with the panel's tables, the reader role and
        (triggers) conf/mapsyncd-notify.sql."""
        self.sql("CREATE DATABASE %s" % self.dbname, dbname="postgres")
        with open(SCHEMA) as f:
            self.sql(f.read())
        if triggers:
            self.install_triggers()
        exists = self.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,))
        if not exists:
            self.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (READER_ROLE, READER_PASSWORD))
        self.sql("GRANT SELECT ON %s TO %s" % (", ".join(TABLES), READER_ROLE))

    def install_triggers(self):
        with open(NOTIFY_SQL) as f:
            self.sql(f.read())

    def copy_from_sqlite(self, db_path):
        """Copies every row of a generated SQLite database that PostgreSQL
        can hold (no NUL, no BLOB, integer quota); the rows it cannot hold
        are deleted from the SQLite file, so that both hold the same rows.
        Returns the number of rows deleted."""
        lite = sqlite3.connect(db_path, isolation_level=None)
        lite.text_factory = bytes
        dropped = 0
        pg = self.connect(autocommit=False)
        try:
            cur = pg.cursor()
            for table in TABLES:
                cols = [r[1].decode() for r in lite.execute("PRAGMA table_info(%s)" % table)]
                rows, gone = [], []
                query = "SELECT %s, %s FROM %s" % (", ".join("typeof(%s)" % c for c in cols), ", ".join(cols), table)
                for row in lite.execute(query):
                    types, vals = row[:len(cols)], list(row[len(cols):])
                    ok = not any(t == b"blob" for t in types)
                    for i, v in enumerate(vals):
                        if ok and isinstance(v, bytes):
                            try:
                                vals[i] = v.decode("utf-8")
                            except UnicodeDecodeError:
                                ok = False
                            if "\0" in vals[i]:
                                ok = False
                    rec = dict(zip(cols, vals))
                    if ok and "quota" in rec and not isinstance(rec["quota"], int):
                        ok = False
                    if not ok:
                        gone.append(rec["id"])
                        continue
                    rec["active"] = rec["active"] == 1
                    rows.append(rec)
                for i in gone:
                    lite.execute("DELETE FROM %s WHERE id = ?" % table, (i,))
                dropped += len(gone)
                if rows:
                    names = list(rows[0])
                    psycopg2.extras.execute_values(
                        cur, "INSERT INTO %s (%s) VALUES %%s" % (table, ", ".join(names)),
                        [[r[n] for n in names] for r in rows], page_size=2000)
                cur.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                            "coalesce((SELECT max(id) FROM " + table + "), 0) + 1, false)", (table,))
            pg.commit()
        finally:
            pg.close()
            lite.close()
        return dropped


def wait_notify_listeners(cluster, channel="mapsyncd", n=1, timeout=20):
    """Waits until n sessions LISTEN on channel (pg_listening_channels is
    per session, so ask pg_stat_activity for mapsyncd's LISTEN)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mapsyncd' "
                           "AND query ILIKE 'LISTEN%%'", dbname="postgres")
        if rows[0][0] >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no mapsyncd LISTEN session after %.0f s" % timeout)


def pg_config(env, cluster, passfile=None, hooks=True, sync=None, map_extra=None, out=None, conninfo=None):
    """conf/mapsyncd-postgresql.conf with env's paths (as
    harness.Env.shipped_config does for SQLite), conninfo of cluster (the
    reader role over TCP with passfile) and, with out, another map
    directory."""
    import re
    text = env.shipped_config(hooks=hooks, sync=sync, map_extra=map_extra, conf="mapsyncd-postgresql.conf")
    if conninfo is None:
        conninfo = cluster.conninfo()
    text = re.sub(r"(?m)^conninfo = .*$", lambda m: "conninfo = " + conninfo, text)
    if passfile:
        text = re.sub(r"(?m)^#passfile = .*$", "passfile = " + passfile, text)
    if out:
        text = text.replace(env.out + "/", out.rstrip("/") + "/")
    return text


def sqlite_config(env, out):
    """The shipped SQLite configuration writing into out instead of env.out."""
    return env.shipped_config(hooks=False).replace(env.out + "/", out.rstrip("/") + "/")


def expected_maps(cluster, work_dir, dbname=None):
    """harness.expected_maps() of the rows in cluster's database: they are
    copied into a new SQLite file of the panel's schema first (active as
    1/0), so that the maps' rules are written down once."""
    import harness
    path = os.path.join(work_dir, "expected-%d.sqlite" % time.monotonic_ns())
    lite = sqlite3.connect(path, isolation_level=None)
    try:
        with open(os.path.join(SRC, "tools", "admin-panel.sql")) as f:
            lite.executescript(f.read())
        pg = cluster.connect(dbname=dbname, autocommit=False)
        try:
            cur = pg.cursor()
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            lite.execute("BEGIN")
            for table, cols in (("domains", "id, domain, active::int"),
                                ("email_accounts", "id, domain_id, email, username, password, quota, active::int"),
                                ("aliases", "id, domain_id, source, destination, active::int")):
                cur.execute("SELECT %s FROM %s" % (cols, table))
                names = cols.replace("::int", "")
                lite.executemany("INSERT INTO %s (%s) VALUES (%s)" % (table, names, ", ".join("?" * len(cols.split(",")))),
                                 cur.fetchall())
            lite.execute("COMMIT")
            pg.rollback()
        finally:
            pg.close()
    finally:
        lite.close()
    try:
        return harness.expected_maps(path)
    finally:
        os.unlink(path)
