#!/usr/bin/env python3
"""mapsyncd as PID 1 of a new PID namespace, the way the sidecar image
(contrib/container/Containerfile) runs it.

The layout is the container's under a temporary prefix: configuration,
database, state and maps each in a directory of their own (the volumes).
The test checks that mapsyncd
- is PID 1 and logs plain lines on stderr (no journal there);
- syncs at start and after a commit;
- reaps its hooks' grandchildren: each on_change leaves a `sleep` behind,
  orphaned to PID 1, and the namespace must end up holding mapsyncd alone
  (a zombie would stay listed in /proc);
- stops on SIGTERM with exit status 0.
Environment: MAPSYNCD, the binary.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tools"))
import gendb  # noqa: E402

ORPHAN_HOOK = 'sleep 1 & echo "left sleep $! behind"'


def wait_for(what, fn, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stat_of(pid):
    """(state, ppid, comm) of a process, or None when it is gone."""
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    fields = s[s.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), comm


def pid_ns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def ns_members(ns):
    """Host PIDs of the processes (zombies included) in PID namespace ns."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and pid_ns(p) == ns]


def write_config(root):
    conf = f"""[database]
path = {root}/var/lib/mailadmin/database.sqlite

[sync]
state_dir = {root}/var/lib/mapsyncd
debounce_ms = 50
max_delay_ms = 500
hook_timeout_s = 10

[map virtual_domains]
output = {root}/etc/postfix/virtual_domains
query = SELECT domain, 'OK' FROM domains WHERE active = 1
on_change = {ORPHAN_HOOK}

[map virtual_aliases]
output = {root}/etc/postfix/virtual_aliases
query = SELECT source, destination FROM aliases WHERE active = 1
on_change = {ORPHAN_HOOK}
"""
    path = f"{root}/etc/mapsyncd/mapsyncd.conf"
    with open(path, "w") as f:
        f.write(conf)
    os.chmod(path, 0o644)
    return path


class Stderr:
    """Collects the daemon's stderr lines in a thread."""

    def __init__(self, stream):
        self.lines = []
        self.t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.t.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def has(self, text):
        return any(text in line for line in self.lines)


def check_reaped(ns, daemon, label):
    """Waits for an orphan reparented to the daemon, then for the namespace
    to hold the daemon alone."""
    orphans = wait_for(f"{label}: a hook's orphan reparented to PID 1", lambda: [
        p for p in ns_members(ns)
        if p != daemon and (stat_of(p) or ("", 0, ""))[1:] == (daemon, "sleep")], 5)
    print(f"{label}: orphans {orphans} are children of PID 1 ({daemon})")
    wait_for(f"{label}: every orphan reaped", lambda: ns_members(ns) == [daemon], 10)
    print(f"{label}: the namespace holds mapsyncd alone")


def test(binary):
    if os.geteuid() != 0:
        print("SKIP: needs root (unshare --pid --mount-proc)")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="mapsyncd-pid1-") as root:
        for d in ("etc/mapsyncd", "var/lib/mailadmin", "etc/postfix"):
            os.makedirs(os.path.join(root, d))
        os.makedirs(os.path.join(root, "var/lib/mapsyncd"), mode=0o700)
        db = f"{root}/var/lib/mailadmin/database.sqlite"
        gendb.generate(db, accounts=20, journal="wal")
        conf = write_config(root)

        env = {k: v for k, v in os.environ.items()
               if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc",
                              binary, "-c", conf],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
        err = Stderr(p.stderr)
        try:
            daemon = wait_for("mapsyncd under unshare", lambda: [
                int(c) for c in os.listdir("/proc") if c.isdigit()
                and (stat_of(c) or ("", 0, ""))[1:] == (p.pid, "mapsyncd")], 10)[0]
            nspid = [ln for ln in open(f"/proc/{daemon}/status") if ln.startswith("NSpid:")][0]
            assert nspid.split()[-1] == "1", f"mapsyncd is not PID 1: {nspid.strip()}"
            ns = pid_ns(daemon)

            wait_for("the first sync", lambda: err.has("ready: watching"), 15)
            assert os.path.exists(f"{root}/etc/postfix/virtual_aliases")
            check_reaped(ns, daemon, "first sync")

            w = gendb.connect(db)
            w.execute("INSERT INTO aliases (domain_id, source, destination, active) "
                      "VALUES (1, 'pid1-probe@d0001.example', 'x@external.example', 1)")
            w.commit()
            w.close()
            wait_for("the alias in the map", lambda: "pid1-probe@d0001.example" in
                     open(f"{root}/etc/postfix/virtual_aliases").read(), 10)
            check_reaped(ns, daemon, "after a commit")

            os.kill(daemon, signal.SIGTERM)
            status = p.wait(timeout=15)
            err.t.join(timeout=5)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        print("--- mapsyncd's stderr")
        print("\n".join(err.lines))
        assert status == 0, f"exit status {status} after SIGTERM"
        # Plain lines on stderr: the maps, the hooks' output, the stop.
        for text in ("virtual_aliases: replaced", "left sleep", "stopping"):
            assert err.has(text), f"stderr lacks {text!r}"
        assert not any(line.startswith("MESSAGE=") for line in err.lines)


if __name__ == "__main__":
    test(os.environ["MAPSYNCD"])
    print("PASS")
