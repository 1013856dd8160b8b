"""A throwaway systemd, booted in systemd-nspawn, for the system tests.

The container's root is an overlay of the host's / with its upper and work
directories on a tmpfs, so the host's files are what the container runs and
nothing it writes reaches the host. It gets a fresh machine id and boots to
basic.target, which keeps the host's enabled services down. Commands run
inside with nsenter. Every wait is bounded, and Container.destroy() (run by
the `with` statement, even on failure) powers the container off, unmounts
both file systems and removes the cgroups nspawn made. A run killed before
it could clean up is cleaned up by the next one (clean_stale()).

    with nspawn.Container("mapsyncd-test") as c:
        c.install("/usr/local/bin/mapsyncd", src=binary, mode=0o755)
        c.boot()
        c.run("systemctl", "start", "mapsyncd.service")
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

# Base directories are named PREFIX + PID + "-" + suffix, so that a later run
# can tell a dead run's leftovers from a live one's.
PREFIX = "mapsyncd-nspawn-"
STATE_FILE = "pids.json"
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "TERM": "dumb",
}


class Skip(Exception):
    """The host cannot run the test at all (exit status 77)."""


def log(msg):
    print(f"[nspawn] {msg}", file=sys.stderr, flush=True)


def check_host():
    """Raises Skip unless this host can boot a container."""
    if os.geteuid() != 0:
        raise Skip("needs root (mounts an overlay and runs systemd-nspawn)")
    for tool in ("systemd-nspawn", "nsenter", "mount", "umount"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed (tools/install-deps test)")
    if not os.path.exists("/lib/systemd/systemd"):
        raise Skip("systemd is not installed")


def _proc_start_time(pid):
    """Start time of a process in clock ticks, or None when it is gone (or a
    zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else int(fields[19])


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def _mounts_below(path):
    """Mount points at or below path, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def _own_cgroup_dirs():
    """The directories of this process's cgroup in every mounted hierarchy."""
    lines = open("/proc/self/cgroup").read().splitlines()
    dirs = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.split(" - ", 1)
            fields = pre.split()
            fstype, _, opts = post.split()[:3]
            root, mp = fields[3], fields[4]
            if fstype == "cgroup2":
                want = None
            elif fstype == "cgroup":
                want = {o for o in opts.split(",") if o not in ("rw", "ro")}
            else:
                continue
            for ln in lines:
                _, ctrls, path = ln.split(":", 2)
                if want is None and ctrls != "":
                    continue
                if want is not None and set(ctrls.split(",")) != want:
                    continue
                if path.startswith(root):
                    rel = path[len(root):].lstrip("/")
                    dirs.append(os.path.join(mp, rel))
    return dirs


def _remove_cgroup_tree(path):
    """rmdir a cgroup and its children, deepest first; ignores busy ones."""
    if not os.path.isdir(path):
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _remove_nspawn_cgroups():
    # systemd-nspawn --keep-unit splits the cgroup it runs in into "payload"
    # (the container) and "supervisor" (itself) and leaves both behind.
    for d in _own_cgroup_dirs():
        for sub in ("payload", "supervisor"):
            _remove_cgroup_tree(os.path.join(d, sub))


def _kill_recorded(base):
    """SIGKILLs the container and nspawn recorded in base, if still alive."""
    try:
        with open(os.path.join(base, STATE_FILE)) as f:
            pids = json.load(f)
    except (OSError, ValueError):
        return
    # Killing the container's PID 1 kills its whole PID namespace.
    live = [pids[k] for k in ("init", "nspawn")
            if k in pids and _proc_start_time(pids[k][0]) == pids[k][1]]
    for pid, _ in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while (any(_proc_start_time(pid) == start for pid, start in live)
           and time.monotonic() < deadline):
        time.sleep(0.02)


def _teardown_base(base, machine):
    for mp in _mounts_below(base):
        r = subprocess.run(["umount", mp], capture_output=True, text=True)
        if r.returncode != 0:
            log(f"umount {mp}: {r.stderr.strip()}; detaching it")
            subprocess.run(["umount", "-l", mp], capture_output=True)
    # The tmpfs held everything the container wrote; what is left is the
    # state file, the console log and empty mount points.
    left = _mounts_below(base)
    if left:
        # Never walk into a mounted overlay: its lower layer is the host's /.
        log(f"still mounted, left in place: {', '.join(left)}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    if machine:
        # nspawn leaves its (empty) mount propagation directory behind.
        try:
            os.rmdir(f"/run/systemd/nspawn/propagate/{machine}")
        except OSError:
            pass
    _remove_nspawn_cgroups()


def clean_stale(tmp=None):
    """Tears down what a killed earlier run left (its PID no longer lives)."""
    tmp = tmp or tempfile.gettempdir()
    for entry in os.listdir(tmp):
        if not entry.startswith(PREFIX):
            continue
        owner = entry[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and os.path.exists(f"/proc/{owner}"):
            continue
        base = os.path.join(tmp, entry)
        log(f"cleaning up after a dead run: {base}")
        _kill_recorded(base)
        machine = None
        try:
            with open(os.path.join(base, STATE_FILE)) as f:
                machine = json.load(f).get("machine")
        except (OSError, ValueError):
            pass
        _teardown_base(base, machine)


# Containers not yet destroyed, for main()'s SIGTERM handler.
_live = set()


class Container:
    def __init__(self, name="mapsyncd-test", default_target="basic.target", lower="/"):
        # Machine names are hostnames: short, [a-z0-9-].
        self.machine = f"{name}-{uuid.uuid4().hex[:8]}"
        self.default_target = default_target
        # The overlay's lower layer: the host's / or another system's root
        # (debroot.get()), never written to.
        self.lower = lower
        self.base = None
        self.root = None
        self.nspawn = None
        self.init_pid = None
        self.console_path = None
        self._console = None

    # -- setup ---------------------------------------------------------
    def __enter__(self):
        check_host()
        clean_stale()
        self.base = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        _live.add(self)
        try:
            self._mount()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc):
        self.destroy(fast=exc[0] is not None and not issubclass(exc[0], Exception))
        return False

    def _mount(self):
        # base/ holds the state file and the console log; base/fs is the
        # tmpfs with the overlay's upper, work and merged (root) directories.
        self._save_state()
        fs = os.path.join(self.base, "fs")
        os.mkdir(fs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", fs], check=True)
        for d in ("upper", "work", "root"):
            os.mkdir(os.path.join(fs, d))
        self.root = os.path.join(fs, "root")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={fs}/upper,workdir={fs}/work",
                        self.root], check=True)
        # A fresh identity, and a default target that starts none of the
        # host's services (multi-user.target would start postfix, dovecot...).
        self.install("/etc/machine-id", data=uuid.uuid4().hex + "\n", mode=0o444)
        self.symlink("/etc/systemd/system/default.target",
                     f"/lib/systemd/system/{self.default_target}")

    def path(self, p):
        """The host's path of the container's absolute path p."""
        assert p.startswith("/"), p
        return os.path.join(self.root, p.lstrip("/"))

    def install(self, p, data=None, src=None, mode=0o644, uid=0, gid=0):
        """Writes a file into the container (data: str/bytes, or src: a host file)."""
        host = self.path(p)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        if os.path.lexists(host):
            os.unlink(host)
        if src is not None:
            shutil.copyfile(src, host)
        else:
            with open(host, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        os.chown(host, uid, gid)
        os.chmod(host, mode)

    def symlink(self, p, target):
        host = self.path(p)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        if os.path.lexists(host):
            os.unlink(host)
        os.symlink(target, host)

    def remove(self, *paths):
        for p in paths:
            host = self.path(p)
            if os.path.isdir(host) and not os.path.islink(host):
                shutil.rmtree(host)
            elif os.path.lexists(host):
                os.unlink(host)

    def _save_state(self):
        pids = {"machine": self.machine}
        if self.nspawn:
            pids["nspawn"] = (self.nspawn.pid, _proc_start_time(self.nspawn.pid))
        if self.init_pid:
            pids["init"] = (self.init_pid, _proc_start_time(self.init_pid))
        with open(os.path.join(self.base, STATE_FILE), "w") as f:
            json.dump(pids, f)

    def run_unbooted(self, *argv, timeout=300):
        """Runs argv in the container's root before boot() (systemd-nspawn
        without -b), on the host's network: for downloads, such as apt-get
        fetching packages that the booted container installs offline."""
        assert self.nspawn is None, "run_unbooted() after boot()"
        cmd = ["systemd-nspawn", "-q", "-D", self.root, "-M", self.machine + "-prep",
               "--register=no", "--keep-unit", "--pipe", "--resolv-conf=copy-host",
               "--link-journal=no", "--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=CLEAN_ENV, stdin=subprocess.DEVNULL)
        _remove_nspawn_cgroups()
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} (unbooted): exit {r.returncode}\n"
                               f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    # -- boot ----------------------------------------------------------
    def boot(self, timeout=60):
        """Boots systemd and waits until it is running (or degraded)."""
        self.console_path = os.path.join(self.base, "console.log")
        self._console = open(self.console_path, "wb")
        argv = ["systemd-nspawn", "-D", self.root, "-M", self.machine, "-b",
                "--register=no", "--keep-unit", "--private-network",
                "--link-journal=no", "--console=read-only", "--tmpfs=/tmp"]
        log(" ".join(argv))
        self.nspawn = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._console,
            stderr=subprocess.STDOUT, env=CLEAN_ENV,
            # Its own session: a signal to the test's process group must not
            # reach nspawn before the test has tidied up.
            start_new_session=True)
        self._save_state()
        deadline = time.monotonic() + timeout
        while self.init_pid is None:
            self._check_alive()
            for kid in _children(self.nspawn.pid):
                try:
                    comm = open(f"/proc/{kid}/comm").read().strip()
                except OSError:
                    continue
                if comm == "systemd":
                    self.init_pid = kid
            if time.monotonic() > deadline:
                raise TimeoutError("the container's systemd did not start")
            time.sleep(0.05)
        self._save_state()
        state = ""
        while state not in ("running", "degraded"):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"systemctl is-system-running: {state!r} after {timeout}s")
            time.sleep(0.1)
            state = self.run("systemctl", "is-system-running", check=False,
                             timeout=10).stdout.strip()
        log(f"booted {self.machine}: {state}, PID 1 is {self.init_pid} on the host")
        if state == "degraded":
            log(self.run("systemctl", "--failed", "--no-legend", check=False).stdout)

    def _check_alive(self):
        if self.nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode}:\n"
                               + self.console())

    def console(self):
        """What the container printed on its console so far."""
        try:
            with open(self.console_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    # -- inside --------------------------------------------------------
    def run(self, *argv, check=True, timeout=30, user=None, input=None):
        """Runs argv inside the container (as user, a (uid, gid) pair)."""
        cmd = ["nsenter", "-t", str(self.init_pid), "-a"]
        if user:
            cmd += [f"--setuid={user[0]}", f"--setgid={user[1]}"]
        cmd += ["--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=CLEAN_ENV, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}\n"
                               f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def show(self, unit, *props):
        """systemctl show's properties of a unit, as a dict."""
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args):
        """Journal records (dicts) selected by journalctl arguments."""
        out = self.run("journalctl", "--no-pager", "-o", "json", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    # -- teardown ------------------------------------------------------
    def destroy(self, fast=False):
        """Stops the container and removes every trace; safe to call twice."""
        if self.base is None:
            return
        if self.nspawn is not None and self.nspawn.poll() is None:
            if not fast and self.init_pid:
                try:
                    self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
                    self.nspawn.wait(timeout=30)
                except (subprocess.TimeoutExpired, OSError) as e:
                    log(f"poweroff did not finish ({e}); killing the container")
            if self.nspawn.poll() is None:
                _kill_recorded(self.base)
                try:
                    self.nspawn.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log("systemd-nspawn did not exit")
        if self._console:
            self._console.close()
            self._console = None
        _teardown_base(self.base, self.machine)
        _live.discard(self)
        self.base = None


def main(test):
    """Runs test() with exit statuses meson understands (77: skipped).

    SIGTERM (meson's timeout, which sends SIGKILL half a second later)
    kills the containers at once and becomes an exception, so that the
    `with` blocks unmount what is left; whatever SIGKILL interrupts is
    cleaned up by the next run (clean_stale()).
    """
    def on_term(signum, frame):
        for c in list(_live):
            _kill_recorded(c.base)
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    try:
        test()
    except Skip as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    print("PASS")
