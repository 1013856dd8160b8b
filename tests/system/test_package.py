#!/usr/bin/env python3
"""The Debian package, built and installed the way an operator installs it.

1. tools/build-deb builds mapsyncd_0.1.0-1 and a second version,
   mapsyncd_0.1.0-2 (same tree, one more changelog entry), each with
   dpkg-buildpackage in a copy of the tree; lintian must report no error
   and no warning on the first (debian/mapsyncd.lintian-overrides explains
   the override kept).
2. A fresh Debian 12 system (mmdebstrap, cached by debroot.py) boots under
   systemd-nspawn with a private network. Before the boot, apt-get fetches
   the package's dependencies from the archive into the system's apt cache;
   inside, apt-get then installs the package offline:
   - `apt-get install ./mapsyncd_0.1.0-1_amd64.deb`: the binary, units,
     man pages, conffile and state directory (0700) are there; the service
     is neither enabled nor started (the shipped configuration names a
     database that does not exist); postfix-lmdb and postfix came as
     Recommends;
   - with dovecot-core installed and a demo database (WAL mode, owned by
     www-data) where the configuration points, `systemctl enable --now
     mapsyncd` starts it: the maps are written, the postmap hooks build
     the .lmdb tables that the installed postfix answers from, and an alias
     committed later reaches them;
   - the operator edits /etc/mapsyncd/mapsyncd.conf; `apt-get install
     ./mapsyncd_0.1.0-2_amd64.deb` keeps the edit, restarts the enabled
     service (a new main PID, the edited setting in force) and leaves it
     enabled;
   - `apt-get remove` stops the service and removes the binary and units;
     the configuration stays (dpkg state "config-files") and so do the maps;
   - `apt-get purge` removes the configuration, the state directory and
     the unit's enablement links.

Environment (set by meson): MAPSYNCD_BUILD_ROOT (the cache of the Debian
root), MAPSYNCD_SOURCE_ROOT.
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tools"))
import debroot  # noqa: E402
import nspawn  # noqa: E402

UNIT = "mapsyncd.service"
CONF = "/etc/mapsyncd/mapsyncd.conf"
DB = "/var/lib/mailadmin/database.sqlite"
WWW = (33, 33)
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                      text=True, check=True).stdout.strip()
V1, V2 = "0.1.0-1", "0.1.0-2"
APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
       "-o", "DPkg::Lock::Timeout=60"]


def step(msg, t0=[time.monotonic()]):
    print(f"[{time.monotonic() - t0[0]:6.1f} s] {msg}", flush=True)


def wait_for(what, fn, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def build(out):
    debs = {}
    for v in (V1, V2):
        argv = [os.path.join(SRC, "tools", "build-deb"), out] + ([] if v == V1 else [v])
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0, f"build-deb {v} failed:\n{r.stdout}{r.stderr}"
        debs[v] = r.stdout.strip().splitlines()[-1]
        assert os.path.basename(debs[v]) == f"mapsyncd_{v}_{ARCH}.deb", debs[v]
        step(f"built {os.path.basename(debs[v])}")
    return debs


def lintian(out):
    changes = os.path.join(out, f"mapsyncd_{V1}_{ARCH}.changes")
    r = subprocess.run(["lintian", "--fail-on", "error,warning", "--no-tag-display-limit",
                        changes], capture_output=True, text=True)
    tags = [ln for ln in r.stdout.splitlines() if ln[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not tags, f"lintian: exit {r.returncode}\n{r.stdout}{r.stderr}"
    step("lintian: no error, no warning" + (f" ({r.stdout.strip()})" if r.stdout.strip() else ""))


def contents(deb):
    out = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1].lstrip(".") for line in out.splitlines()}


def state(c):
    return c.show(UNIT, "ActiveState", "SubState", "MainPID", "UnitFileState", "LoadState")


def dpkg_status(c):
    r = c.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", "mapsyncd",
              check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def panel_write(c, sql):
    """Commits sql to the database as the panel would: one connection,
    commit, close (from the host, through the container's root: the guest
    has no sqlite3 CLI, and the container's base directory is root's only)."""
    script = ("import sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1])\n"
              "c.execute(sys.argv[2])\n"
              "c.commit()\n"
              "c.close()\n")
    subprocess.run([sys.executable, "-c", script, c.path(DB), sql], check=True)


def lookup(c, key, table):
    r = c.run("postmap", "-q", key, f"lmdb:{table}", check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def test_install(c, debs):
    r = c.run("sh", "-c", f"cd /root && {' '.join(APT)} install ./{os.path.basename(debs[V1])}",
              timeout=300)
    step("apt-get install ./" + os.path.basename(debs[V1]))
    assert dpkg_status(c) == f"ii |{V1}", dpkg_status(c)
    for pkg in ("postfix-lmdb", "postfix"):
        assert c.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg,
                     check=False).stdout.startswith("ii"), f"{pkg} (Recommends) not installed"
    assert c.run("mapsyncd", "--version").stdout.split()[-1] == "0.1.0"
    for p in ("/usr/sbin/mapsyncd", "/lib/systemd/system/mapsyncd.service",
              "/lib/systemd/system/mapsyncd@.service", "/usr/share/man/man8/mapsyncd.8.gz",
              "/usr/share/man/man5/mapsyncd.conf.5.gz", CONF,
              "/usr/share/doc/mapsyncd/copyright"):
        assert os.path.exists(c.path(p)), f"{p} not installed"
    conffiles = c.run("dpkg-query", "-W", "-f", "${Conffiles}", "mapsyncd").stdout.split()
    assert CONF in conffiles, f"not a conffile: {conffiles}"
    st = os.stat(c.path("/var/lib/mapsyncd"))
    assert st.st_mode & 0o7777 == 0o700, f"state directory mode {oct(st.st_mode)}"
    s = state(c)
    assert (s["LoadState"], s["UnitFileState"], s["ActiveState"]) == \
        ("loaded", "disabled", "inactive"), f"after install: {s}"
    assert not os.path.exists(c.path("/etc/postfix/vmailbox")), "a map was written at install"
    step(f"installed: disabled, inactive; {CONF} is a conffile; /var/lib/mapsyncd 0700")


def test_enable(c):
    import gendb
    c.run(*APT, "install", "dovecot-core", timeout=300)
    step("apt-get install dovecot-core")
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "database.sqlite")
        subprocess.run([sys.executable, os.path.join(SRC, "tools", "gendb.py"),
                        "--accounts", "50", "--journal", "wal", db], check=True,
                       capture_output=True)
        c.install(DB, src=db, mode=0o644, uid=WWW[0], gid=WWW[1])
    os.chown(c.path(os.path.dirname(DB)), *WWW)
    r = c.run("mapsyncd", "--check", check=False)
    assert r.returncode == 0, f"mapsyncd --check: {r.returncode}\n{r.stdout}{r.stderr}"
    c.run("systemctl", "enable", "--now", UNIT, timeout=60)
    s = wait_for("active", lambda: (lambda s: s if s["ActiveState"] == "active" else None)(state(c)), 30)
    assert s["UnitFileState"] == "enabled", s
    got = wait_for("vmailbox.lmdb", lambda: lookup(c, gendb.ACTIVE_ACCOUNT, "/etc/postfix/vmailbox"), 30)
    assert got == "d0001.example/u000001/", got
    st = os.stat(c.path("/etc/dovecot/passwd"))
    gid = int(c.run("getent", "group", "dovecot").stdout.split(":")[2])
    assert (st.st_mode & 0o7777, st.st_gid) == (0o640, gid), (oct(st.st_mode), st.st_gid)
    src, dst = "pkg-probe@d0001.example", "pkg-target@external.example"
    panel_write(c, "INSERT INTO aliases (domain_id, source, destination, active) "
                f"VALUES (1, '{src}', '{dst}', 1)")
    got = wait_for("the new alias", lambda: lookup(c, src, "/etc/postfix/virtual_aliases"), 30)
    assert got == dst, got
    step("enabled and started: maps written, postmap -q answers, a new alias arrives")
    return s["MainPID"]


def test_upgrade(c, debs, pid):
    text = open(c.path(CONF)).read()
    assert "\ndebounce_ms = 200\n" in text
    edited = text.replace("\ndebounce_ms = 200\n",
                          "\n# Edited by the operator.\ndebounce_ms = 250\n")
    with open(c.path(CONF), "w") as f:
        f.write(edited)
    c.run(*APT, "install", f"/root/{os.path.basename(debs[V2])}", timeout=300)
    step("apt-get install ./" + os.path.basename(debs[V2]))
    assert dpkg_status(c) == f"ii |{V2}", dpkg_status(c)
    assert open(c.path(CONF)).read() == edited, "the upgrade changed the edited configuration"
    for leftover in (".dpkg-new", ".dpkg-dist", ".dpkg-old"):
        assert not os.path.exists(c.path(CONF + leftover)), CONF + leftover
    s = wait_for("active after the upgrade",
                 lambda: (lambda s: s if s["ActiveState"] == "active" else None)(state(c)), 30)
    assert s["UnitFileState"] == "enabled", s
    assert s["MainPID"] != pid, f"the upgrade did not restart the service (MainPID {pid})"
    r = c.run("mapsyncd", "--check", check=False)
    assert r.returncode == 0, f"mapsyncd --check after the upgrade:\n{r.stdout}{r.stderr}"
    src, dst = "pkg-probe2@d0001.example", "pkg-target2@external.example"
    panel_write(c, "INSERT INTO aliases (domain_id, source, destination, active) "
                f"VALUES (1, '{src}', '{dst}', 1)")
    got = wait_for("an alias after the upgrade",
                   lambda: lookup(c, src, "/etc/postfix/virtual_aliases"), 30)
    assert got == dst, got
    step(f"upgraded to {V2}: edited configuration kept, service restarted "
         f"(MainPID {pid} -> {s['MainPID']}) and syncing")


def test_remove(c, files):
    c.run(*APT, "remove", "mapsyncd", timeout=120)
    assert dpkg_status(c) == f"rc |{V2}", dpkg_status(c)
    s = state(c)
    assert s["ActiveState"] in ("inactive", "failed") and s["MainPID"] == "0", s
    for p in files:
        if p.startswith("/etc/") or p.startswith("/var/"):
            continue
        if os.path.isdir(c.path(p)) and not os.path.islink(c.path(p)):
            continue
        assert not os.path.lexists(c.path(p)), f"{p} left after remove"
    assert os.path.exists(c.path(CONF)), "remove deleted the configuration"
    assert os.path.exists(c.path("/etc/postfix/vmailbox")), "remove deleted a map"
    step("removed: service stopped, binary and units gone, configuration and maps kept")


def test_purge(c):
    c.run(*APT, "purge", "mapsyncd", timeout=120)
    assert dpkg_status(c) is None or dpkg_status(c).startswith("un"), dpkg_status(c)
    for p in ("/etc/mapsyncd", "/var/lib/mapsyncd",
              "/etc/systemd/system/multi-user.target.wants/mapsyncd.service",
              "/var/lib/systemd/deb-systemd-helper-enabled/mapsyncd.service.dsh-also"):
        assert not os.path.lexists(c.path(p)), f"{p} left after purge"
    step("purged: configuration, state directory and enablement links gone")


def test():
    nspawn.check_host()
    for tool in ("dpkg-buildpackage", "lintian", "mmdebstrap"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise RuntimeError(f"{tool} is not installed (tools/install-deps test)")
    with tempfile.TemporaryDirectory(prefix="mapsyncd-deb-") as out:
        debs = build(out)
        lintian(out)
        files = contents(debs[V1])
        lower = debroot.get("boot")
        step(f"Debian 12 root: {lower}")
        with nspawn.Container("mapsyncd-pkg", default_target="multi-user.target",
                              lower=lower) as c:
            for v in (V1, V2):
                c.install(f"/root/{os.path.basename(debs[v])}", src=debs[v])
            # The archive is reachable from here, not from the booted
            # container (private network): fetch what the install needs.
            c.run_unbooted("sh", "-c", "apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive "
                           f"apt-get -y -q install --download-only /root/{os.path.basename(debs[V1])} "
                           "dovecot-core >/dev/null")
            step("fetched the dependencies")
            c.boot(timeout=120)
            step("booted")
            try:
                test_install(c, debs)
                pid = test_enable(c)
                test_upgrade(c, debs, pid)
                test_remove(c, files)
                test_purge(c)
            except Exception:
                for argv in (("systemctl", "status", "--no-pager", "-l", UNIT),
                             ("journalctl", "--no-pager", "-n", "80", "-u", UNIT)):
                    r = c.run(*argv, check=False, timeout=15)
                    print(f"--- {' '.join(argv)}\n{r.stdout}{r.stderr}", file=sys.stderr)
                raise


if __name__ == "__main__":
    nspawn.main(test)
