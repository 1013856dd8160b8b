#!/usr/bin/env python3
"""mapsyncd.service under a real systemd (booted with systemd-nspawn).

The shipped unit, configuration and binary go into a throwaway container
whose admin-panel database (WAL mode) belongs to www-data, as the web
panel's would. The test then
- starts the service while the panel holds the database locked: it stays
  `activating` (READY=1 comes only after the first sync) and becomes
  `active` once the lock is gone and the maps are written;
- commits an alias as www-data and finds it in the .lmdb table that the
  map's on_change hook (postmap) builds;
- finds MAPSYNCD_MAP in `journalctl -u mapsyncd -o json`;
- reloads (ExecReload sends SIGHUP and returns at once, so it polls the
  journal for the reload's record) and stops the service, which must exit 0;
- with an [api] section, starts only mapsyncd.socket: the socket has the
  unit's mode and group, a user outside the group cannot connect, and the
  web server's user (curl --unix-socket) starts the service with its first
  POST /v1/sync, whose answer comes once the alias it committed is in the
  .lmdb table; the caller's uid is in the journal.

Environment (set by meson): MAPSYNCD (the binary), MAPSYNCD_UNIT (the
configured mapsyncd.service), MAPSYNCD_SOCKET_UNIT (mapsyncd.socket).
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tools"))
import nspawn  # noqa: E402

UNIT = "mapsyncd.service"
DB = "/var/lib/mailadmin/database.sqlite"
WWW = (33, 33)  # www-data on Debian
# systemd's "Main process exited" record (sd-messages.h).
SD_MESSAGE_UNIT_PROCESS_EXIT = "98e322203f7a4ed290d09fe03c09fe15"
NEW_ALIAS = ("nspawn-probe@d0001.example", "probe-target@external.example")


def message_ids():
    text = open(os.path.join(SRC, "include", "log.h")).read()
    return dict(re.findall(r'#define MSGID_(\w+)\s+"([0-9a-f]{32})"', text))


def exec_start(unit_path):
    """The binary and the -c file of the unit's ExecStart=."""
    for line in open(unit_path):
        if line.startswith("ExecStart="):
            argv = shlex.split(line.split("=", 1)[1])
            return argv[0], argv[argv.index("-c") + 1]
    raise AssertionError(f"{unit_path}: no ExecStart=")


def wait_for(what, fn, timeout, interval=0.1):
    """Polls fn() until it returns something true; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Locker:
    """Holds the database locked as the panel could: WAL, exclusive locking
    mode, an open write transaction. Readers get SQLITE_BUSY until it ends."""

    SCRIPT = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({DB!r}, isolation_level=None)\n"
        "c.execute('PRAGMA locking_mode = EXCLUSIVE')\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute('COMMIT')\n"
        "c.close()\n"
    )

    def __init__(self, c):
        self.p = subprocess.Popen(
            ["nsenter", "-t", str(c.init_pid), "-a", f"--setuid={WWW[0]}",
             f"--setgid={WWW[1]}", "--", "/usr/bin/python3", "-c", self.SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=nspawn.CLEAN_ENV)
        line = self.p.stdout.readline()
        if line.strip() != "locked":
            self.p.kill()
            raise AssertionError(f"could not lock the database: {line!r}")

    def release(self):
        self.p.stdin.write("\n")
        self.p.stdin.close()
        if self.p.wait(timeout=10) != 0:
            raise AssertionError("the lock holder failed")


def prepare(c, binary, config):
    exe, conf = exec_start(os.environ["MAPSYNCD_UNIT"])
    c.install(exe, src=binary, mode=0o755)
    c.install(conf, src=config, mode=0o644)
    c.install(f"/etc/systemd/system/{UNIT}", src=os.environ["MAPSYNCD_UNIT"])
    # Start from nothing the host may have: no maps, no state, a minimal
    # main.cf for postmap.
    for d, names in (("/etc/postfix", ("virtual_domains", "vmailbox", "virtual_aliases")),
                     ("/etc/dovecot", ("passwd",))):
        for n in names:
            c.remove(f"{d}/{n}", f"{d}/{n}.lmdb", f"{d}/{n}.db")
    c.remove("/var/lib/mapsyncd", "/var/lib/mailadmin")
    c.install("/etc/postfix/main.cf", data="compatibility_level = 3.6\n")
    # The panel's database, owned by the web server's user, in WAL mode.
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "database.sqlite")
        subprocess.run([sys.executable, os.path.join(SRC, "tools", "gendb.py"),
                        "--accounts", "50", "--journal", "wal", db], check=True)
        c.install(DB, src=db, mode=0o644, uid=WWW[0], gid=WWW[1])
    os.chown(c.path(os.path.dirname(DB)), *WWW)
    os.chmod(c.path(os.path.dirname(DB)), 0o755)


def state(c):
    return c.show(UNIT, "ActiveState", "SubState", "Result", "MainPID", "ExecMainStatus",
                  "ExecMainCode", "StatusText")


def lookup(c, key, table):
    r = c.run("postmap", "-q", key, f"lmdb:{table}", check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def test_start_until_ready(c):
    import gendb
    locker = Locker(c)
    try:
        c.run("systemctl", "start", "--no-block", UNIT)
        # The first sync waits for the lock (busy_timeout_ms = 5000): the
        # service must stay activating, with no map written.
        wait_for("mapsyncd to start", lambda: state(c)["MainPID"] != "0", 10, 0.05)
        t_end = time.monotonic() + 2.0
        samples = 0
        while time.monotonic() < t_end:
            s = state(c)
            assert s["ActiveState"] == "activating", f"before READY=1: {s}"
            assert not os.path.exists(c.path("/etc/postfix/vmailbox")), "map written while locked"
            samples += 1
            time.sleep(0.1)
        print(f"activating for 2 s while the database was locked ({samples} samples)")
    except BaseException:
        locker.p.kill()
        raise
    locker.release()
    s = wait_for("active", lambda: (lambda s: s if s["ActiveState"] != "activating" else None)(state(c)),
                 15, 0.05)
    assert s["ActiveState"] == "active" and s["SubState"] == "running", s
    print(f"active: {s['StatusText']!r}")
    # READY=1 came after the first sync: the maps are there.
    for p in ("/etc/postfix/virtual_domains", "/etc/postfix/vmailbox",
              "/etc/postfix/virtual_aliases", "/etc/dovecot/passwd"):
        assert os.path.exists(c.path(p)), f"{p} missing after READY=1"
    st = os.stat(c.path("/etc/dovecot/passwd"))
    dovecot_gid = int(c.run("getent", "group", "dovecot").stdout.split(":")[2])
    assert (st.st_mode & 0o7777, st.st_gid) == (0o640, dovecot_gid), (oct(st.st_mode), st.st_gid)
    # The -shm rule: the reader (root, in the sandbox) had to write next to
    # the database.
    assert os.path.exists(c.path(DB + "-shm")), "no -shm: the database was not read in WAL mode"
    got = wait_for("vmailbox.lmdb", lambda: lookup(c, gendb.ACTIVE_ACCOUNT, "/etc/postfix/vmailbox"), 15)
    assert got == "d0001.example/u000001/", got


def test_change_reaches_lmdb(c, ids):
    source, dest = NEW_ALIAS
    assert lookup(c, source, "/etc/postfix/virtual_aliases") is None
    c.run("sqlite3", DB, "INSERT INTO aliases (domain_id, source, destination, active) "
          f"VALUES (1, '{source}', '{dest}', 1)", user=WWW)
    t0 = time.monotonic()
    got = wait_for("the new alias in virtual_aliases.lmdb",
                   lambda: lookup(c, source, "/etc/postfix/virtual_aliases"), 15)
    assert got == dest, got
    print(f"commit -> postmap -q answers after {time.monotonic() - t0:.2f} s")
    records = c.journal("-u", UNIT)
    maps = {r.get("MAPSYNCD_MAP") for r in records if "MAPSYNCD_MAP" in r}
    assert {"virtual_domains", "vmailbox", "virtual_aliases", "passwd"} <= maps, maps
    replaced = [r for r in records if r.get("MESSAGE_ID") == ids["MAP_REPLACED"]
                and r.get("MAPSYNCD_MAP") == "virtual_aliases"]
    assert len(replaced) >= 2, "no MAP_REPLACED record for the alias change"
    last = replaced[-1]
    sha = c.run("sha256sum", "/etc/postfix/virtual_aliases").stdout.split()[0]
    assert last.get("MAPSYNCD_SHA256") == sha, (last, sha)
    print(f"journal: {last['MESSAGE']!r} MAPSYNCD_ROWS={last.get('MAPSYNCD_ROWS')}")


def test_reload(c, ids):
    pid = state(c)["MainPID"]
    before = len(c.journal("-u", UNIT, f"MESSAGE_ID={ids['CONFIG_RELOADED']}"))
    c.run("systemctl", "reload", UNIT, timeout=30)
    wait_for("the reload's journal record",
             lambda: len(c.journal("-u", UNIT, f"MESSAGE_ID={ids['CONFIG_RELOADED']}")) > before,
             15, 0.2)
    s = wait_for("active after the reload",
                 lambda: (lambda s: s if s["ActiveState"] == "active" else None)(state(c)), 15)
    assert s["MainPID"] == pid, f"reload restarted the daemon: {pid} -> {s['MainPID']}"


def test_stop(c, ids):
    # systemd counts death by SIGTERM as a clean stop too, and forgets the
    # exit status when it unloads the stopped unit; at debug level it logs
    # the main process's end with EXIT_CODE and EXIT_STATUS.
    c.run("systemctl", "log-level", "debug")
    c.run("systemctl", "stop", UNIT, timeout=60)
    s = state(c)
    assert (s["ActiveState"], s["Result"]) == ("inactive", "success"), s
    exits = [(r.get("EXIT_CODE"), r.get("EXIT_STATUS"))
             for r in c.journal(f"UNIT={UNIT}", "MESSAGE_ID=" + SD_MESSAGE_UNIT_PROCESS_EXIT)]
    assert exits and exits[-1] == ("exited", "0"), f"main process ended: {exits}"
    assert c.journal("-u", UNIT, f"MESSAGE_ID={ids['STOPPING']}"), "no STOPPING record"


API_SOCK = "/run/mapsyncd/api.sock"
API_ALIAS = ("api-probe@d0001.example", "api-target@external.example")


def curl(c, method, url, user):
    r = c.run("curl", "-sS", "--unix-socket", API_SOCK, "-X", method, "-w", "\n%{http_code}",
              "http://localhost" + url, user=user, check=False, timeout=60)
    if r.returncode != 0:
        return None, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_socket_activation(c, ids, config):
    import json
    exe, conf = exec_start(os.environ["MAPSYNCD_UNIT"])
    c.install(conf, data=open(config).read() + "\n[api]\nlisten = %s\n" % API_SOCK, mode=0o644)
    c.install("/etc/systemd/system/mapsyncd.socket", src=os.environ["MAPSYNCD_SOCKET_UNIT"])
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "start", "mapsyncd.socket")
    assert state(c)["ActiveState"] == "inactive", state(c)
    # (/run is the container's own tmpfs.)
    st = c.run("stat", "-c", "%F %a %g", API_SOCK).stdout.split()
    assert st == ["socket", "660", str(WWW[1])], st
    # Not in the socket's group: no connection, and no start.
    r = c.run("python3", "-c", "import socket; socket.socket(socket.AF_UNIX).connect(%r)" % API_SOCK,
              user=(65534, 65534), check=False)
    assert r.returncode != 0 and "PermissionError" in r.stderr, (r.returncode, r.stderr)
    assert state(c)["ActiveState"] == "inactive", state(c)
    # The web server's user: its request starts the service and is answered
    # once its commit is live.
    source, dest = API_ALIAS
    c.run("sqlite3", DB, "INSERT INTO aliases (domain_id, source, destination, active) "
          f"VALUES (1, '{source}', '{dest}', 1)", user=WWW)
    t0 = time.monotonic()
    code, body = curl(c, "POST", "/v1/sync", user=WWW)
    dt = time.monotonic() - t0
    assert code == 200, (code, body)
    answer = json.loads(body)
    assert answer["ok"], answer
    assert lookup(c, source, "/etc/postfix/virtual_aliases") == dest, "the answer came before postmap"
    print(f"POST /v1/sync started the service and answered in {dt:.2f} s: generation {answer['generation']}")
    assert state(c)["ActiveState"] == "active", state(c)
    pid = state(c)["MainPID"]

    def logged(text):
        msgs = [r.get("MESSAGE", "") for r in c.journal(f"_PID={pid}")]
        logged.last = msgs[-15:]
        return any(text in m for m in msgs)

    try:
        wait_for("the socket passed by systemd in the journal",
                 lambda: logged("api: listening on the socket passed by systemd"), 15, 0.2)
    except AssertionError:
        print("journal:", logged.last, file=sys.stderr)
        print(c.run("journalctl", "--no-pager", "-n", "40", "-o", "short-monotonic", check=False).stdout,
              file=sys.stderr)
        raise
    wait_for("the caller's uid in the journal", lambda: logged(f"api: sync requested by uid {WWW[0]}"), 15, 0.2)
    code, body = curl(c, "GET", "/v1/status", user=WWW)
    assert code == 200 and json.loads(body)["generation"] >= answer["generation"], (code, body)
    # Stopped, the socket stays, and the next request starts it again.
    c.run("systemctl", "stop", UNIT, timeout=60)
    assert c.run("test", "-S", API_SOCK, check=False).returncode == 0, "the socket went with the service"
    code, body = curl(c, "GET", "/v1/status", user=WWW)
    assert code == 200, (code, body)
    c.run("systemctl", "stop", UNIT, "mapsyncd.socket", timeout=60)


def test():
    nspawn.check_host()
    binary = os.environ["MAPSYNCD"]
    ids = message_ids()
    with nspawn.Container("mapsyncd-svc") as c:
        prepare(c, binary, os.path.join(SRC, "conf", "mapsyncd.conf"))
        c.boot()
        try:
            test_start_until_ready(c)
            test_change_reaches_lmdb(c, ids)
            test_reload(c, ids)
            test_stop(c, ids)
            test_socket_activation(c, ids, os.path.join(SRC, "conf", "mapsyncd.conf"))
        except Exception:
            for argv in (("systemctl", "status", "--no-pager", "-l", UNIT, "mapsyncd.socket"),
                         ("journalctl", "--no-pager", "-n", "60", "-u", UNIT)):
                r = c.run(*argv, check=False, timeout=15)
                print(f"--- {' '.join(argv)}\n{r.stdout}{r.stderr}", file=sys.stderr)
            raise


if __name__ == "__main__":
    nspawn.main(test)
