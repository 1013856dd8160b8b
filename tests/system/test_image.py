#!/usr/bin/env python3
"""The sidecar image, built and run with podman.

engine.Podman builds contrib/container/Containerfile (unchanged: its
debian:12 and debian:12-slim are an mmdebstrap root imported into a private
image store, as no registry is reachable) and the test runs the image the
way contrib/container/README.md says: the configuration directory
read-only, the database directory read-only (rollback-journal mode), a state
directory, and the Postfix and Dovecot configuration directories (here
host directories; the host's postmap reads the .lmdb tables that the
image's postmap builds). It checks that
- the image's entry point is mapsyncd, and `--version` answers 0.1.0;
- the running container's PID 1 is mapsyncd, which writes the four maps
  and runs the postmap hooks; the passwd map gets the numeric group given
  in the configuration (the sidecar has no dovecot group);
- a committed alias reaches virtual_aliases.lmdb, a deleted one leaves it;
- `podman logs` holds the plain stderr lines;
- `podman stop` (SIGTERM) ends it with exit status 0.
Environment (set by meson): MAPSYNCD_BUILD_ROOT.
"""
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tools"))
import engine  # noqa: E402
import gendb  # noqa: E402

DOVECOT_GID = 5000  # any number: the readers' group, as the README says


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


def sidecar_config():
    """The shipped configuration with the Dovecot group as a number."""
    text = open(os.path.join(SRC, "conf", "mapsyncd.conf")).read()
    text, n = re.subn(r"(?m)^group = dovecot$", f"group = {DOVECOT_GID}", text)
    assert n == 1, "the shipped configuration changed: no 'group = dovecot' line"
    return text


def lookup(key, table):
    # The host's postmap, with the main.cf of the mounted directory (the
    # host's Postfix may have none).
    r = subprocess.run(["postmap", "-q", key, f"lmdb:{table}"], capture_output=True, text=True,
                       env=dict(os.environ, MAIL_CONFIG=os.path.dirname(table)))
    return r.stdout.strip() if r.returncode == 0 else None


def commit(db, sql):
    c = sqlite3.connect(db)
    c.execute(sql)
    c.commit()
    c.close()


def test():
    if os.geteuid() != 0:
        print("SKIP: needs root (podman with a private rootful store)")
        sys.exit(77)
    p = engine.Podman()
    image = p.build_image()
    step(f"built {image}")
    cfg = p("image", "inspect", "--format",
            "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", image).stdout.strip()
    assert cfg == '["/usr/sbin/mapsyncd"] ["-c","/etc/mapsyncd/mapsyncd.conf"]', cfg
    v = p("run", "--rm", "--network=none", image, "--version").stdout.strip()
    assert v.split()[-1] == "0.1.0", v
    step(f"entry point mapsyncd, --version: {v!r}")

    name = f"mapsyncd-img-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="mapsyncd-image-") as tmp:
        d = {k: os.path.join(tmp, k) for k in ("conf", "db", "state", "postfix", "dovecot")}
        for k, path in d.items():
            os.mkdir(path, 0o700 if k == "state" else 0o755)
        with open(os.path.join(d["conf"], "mapsyncd.conf"), "w") as f:
            f.write(sidecar_config())
        with open(os.path.join(d["postfix"], "main.cf"), "w") as f:
            f.write("compatibility_level = 3.6\n")
        db = os.path.join(d["db"], "database.sqlite")
        subprocess.run([sys.executable, os.path.join(SRC, "tools", "gendb.py"), "--accounts", "50",
                        "--journal", "delete", db], check=True, capture_output=True)
        try:
            p("run", "-d", "--name", name, "--network=none",
              "-v", f"{d['conf']}:/etc/mapsyncd:ro",
              "-v", f"{d['db']}:/var/lib/mailadmin:ro",
              "-v", f"{d['state']}:/var/lib/mapsyncd",
              "-v", f"{d['postfix']}:/etc/postfix",
              "-v", f"{d['dovecot']}:/etc/dovecot", image)
            pid = int(p("inspect", "--format", "{{.State.Pid}}", name).stdout)
            assert open(f"/proc/{pid}/comm").read().strip() == "mapsyncd", "PID 1 is not mapsyncd"
            got = wait_for("vmailbox.lmdb", lambda: lookup(gendb.ACTIVE_ACCOUNT,
                                                          f"{d['postfix']}/vmailbox"), 60)
            assert got == "d0001.example/u000001/", got
            st = os.stat(os.path.join(d["dovecot"], "passwd"))
            assert (st.st_mode & 0o7777, st.st_gid) == (0o640, DOVECOT_GID), (oct(st.st_mode), st.st_gid)
            step("running: PID 1 is mapsyncd, maps and .lmdb tables written")

            src, dst = "image-probe@d0001.example", "image-target@external.example"
            commit(db, "INSERT INTO aliases (domain_id, source, destination, active) "
                   f"VALUES (1, '{src}', '{dst}', 1)")
            got = wait_for("the new alias", lambda: lookup(src, f"{d['postfix']}/virtual_aliases"), 30)
            assert got == dst, got
            commit(db, f"DELETE FROM aliases WHERE source = '{src}'")
            wait_for("the alias gone",
                     lambda: lookup(src, f"{d['postfix']}/virtual_aliases") is None, 30)
            step("an alias committed on the host reached the table, and left it when deleted")

            logs = p("logs", name).stderr + p("logs", name).stdout
            assert "virtual_aliases" in logs, f"no map in podman logs:\n{logs}"
            p("stop", "--time", "20", name, timeout=60)
            code = p("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            assert code == "0", f"exit status {code} after podman stop\n{logs}"
            step("podman stop: exit status 0")
        except Exception:
            r = p("logs", name, check=False)
            print(f"--- podman logs {name}\n{r.stdout}{r.stderr}", file=sys.stderr)
            raise
        finally:
            p.remove_containers(name)


if __name__ == "__main__":
    test()
    print("PASS")
