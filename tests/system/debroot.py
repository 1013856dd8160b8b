"""Fresh Debian 12 root file systems, made with mmdebstrap and cached.

The package, image and topology tests start from a system that is not the
host: a root made by mmdebstrap from the Debian archive (the host's apt
sources, /etc/apt/sources.list.d/debian.sources, when it has them;
otherwise mmdebstrap's default, deb.debian.org with updates and security).
A root is made once and kept in the build directory
(MAPSYNCD_BUILD_ROOT/debian-12/NAME), so that the suite does not make it
twice; it is made again when its recipe changes or when it is older than
MAX_AGE_DAYS (the archive moves on: old package lists point at files the
mirror no longer has). A lock file serialises tests that want the same
root. Tests never write into a cached root: they mount an overlay over it
(nspawn.Container(lower=...)) or import it into a container engine.

    root = debroot.get("boot")     # a directory
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

SUITE = "bookworm"
MAX_AGE_DAYS = 7

# name: (mmdebstrap --variant, packages added, apt lists kept).
RECIPES = {
    # What the official debian:12 image holds (apt, no init): the base image
    # of the container build.
    "minbase": ("apt", [], False),
    # A system that boots under systemd-nspawn, with apt's package lists so
    # that apt-get can install a local .deb and its dependencies.
    "boot": ("apt", ["systemd", "systemd-sysv", "dbus"], True),
}


def log(msg):
    print(f"[debroot] {msg}", file=sys.stderr, flush=True)


def cache_dir():
    base = os.environ.get("MAPSYNCD_BUILD_ROOT")
    if not base:
        raise RuntimeError("MAPSYNCD_BUILD_ROOT is not set (meson sets it)")
    return os.path.join(base, "debian-12")


def mirrors():
    if os.environ.get("MAPSYNCD_DEBIAN_MIRROR"):
        return os.environ["MAPSYNCD_DEBIAN_MIRROR"].split()
    host = "/etc/apt/sources.list.d/debian.sources"
    return [host] if os.path.exists(host) else []


def mmdebstrap_argv(name, target):
    variant, include, keep_lists = RECIPES[name]
    argv = ["mmdebstrap", "--quiet", f"--variant={variant}", "--mode=root",
            "--format=directory"]
    if include:
        argv.append("--include=" + ",".join(include))
    if keep_lists:
        argv.append("--skip=cleanup/apt/lists")
    return argv + [SUITE, target] + mirrors()


def _recipe(name):
    argv = mmdebstrap_argv(name, "TARGET")
    mirror_text = [open(m).read() if os.path.exists(m) else m for m in mirrors()]
    return {"argv": argv, "mirrors": mirror_text}


def get(name):
    """The path of the cached root NAME (see RECIPES), made if need be."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (tools/install-deps test)")
    top = cache_dir()
    os.makedirs(top, exist_ok=True)
    root = os.path.join(top, name)
    stamp = root + ".json"
    with open(os.path.join(top, f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        want = _recipe(name)
        try:
            with open(stamp) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if (have is not None and have.get("recipe") == want and os.path.isdir(root)
                and time.time() - have.get("made", 0) < MAX_AGE_DAYS * 86400):
            return root
        if os.path.lexists(stamp):
            os.unlink(stamp)
        for d in (root, root + ".new"):
            if os.path.lexists(d):
                shutil.rmtree(d)
        argv = mmdebstrap_argv(name, root + ".new")
        log(" ".join(argv))
        t0 = time.monotonic()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(root + ".new", ignore_errors=True)
            raise RuntimeError(f"mmdebstrap failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        os.rename(root + ".new", root)
        with open(stamp, "w") as f:
            json.dump({"recipe": want, "made": time.time()}, f)
        log(f"made {root} in {time.monotonic() - t0:.0f} s")
        return root


if __name__ == "__main__":
    for n in sys.argv[1:] or list(RECIPES):
        print(get(n))
